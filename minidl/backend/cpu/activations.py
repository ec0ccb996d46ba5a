"""Activations and losses: ReLU forward and backward, and softmax cross-entropy."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .launch import FLOATS, Drivers, contiguous, launch, parallel

# ---- ReLU ----------------------------------------------------------------------------------
@njit(cache=True)
def _relu_fwd_range(xf, yf, lo, hi):
    for i in range(lo, hi):
        k = np.uintp(i)  # lo >= 0: skip the wraparound check that blocks vectorisation
        v = xf[k]
        if v > 0 or v != v:  # NaN passes through, as in np.maximum
            yf[k] = v
        else:
            yf[k] = 0


@njit(cache=True)
def _relu_bwd_range(gf, yf, gxf, lo, hi):
    for i in range(lo, hi):
        k = np.uintp(i)
        if yf[k] > 0:
            gxf[k] = gf[k]
        else:
            gxf[k] = 0


@njit(parallel=True, cache=True)
def _relu_fwd_par(xf, yf):
    nt = 64
    for t in prange(nt):
        _relu_fwd_range(xf, yf, t * xf.size // nt, (t + 1) * xf.size // nt)


@njit(cache=True)
def _relu_fwd_ser(xf, yf):
    _relu_fwd_range(xf, yf, 0, xf.size)


@njit(parallel=True, cache=True)
def _relu_bwd_par(gf, yf, gxf):
    nt = 64
    for t in prange(nt):
        _relu_bwd_range(gf, yf, gxf, t * gf.size // nt, (t + 1) * gf.size // nt)


@njit(cache=True)
def _relu_bwd_ser(gf, yf, gxf):
    _relu_bwd_range(gf, yf, gxf, 0, gf.size)


# ---- softmax cross-entropy -----------------------------------------------------------------
@njit(cache=True)
def _softmax_xent(logits, target, prob, losses):
    """Per-row loss -log softmax(logits)[target], keeping the softmax for the backward pass."""
    n, c = logits.shape
    for r in range(n):
        row = logits[r]
        m = row[0]
        for k in range(1, c):
            if row[k] > m:
                m = row[k]
        s = 0.0
        for k in range(c):
            e = np.exp(row[k] - m)  # max subtracted: no overflow
            prob[r, k] = e
            s += e
        inv = 1.0 / s
        for k in range(c):
            prob[r, k] *= inv
        losses[r] = np.log(s) - (row[target[r]] - m)


@njit(cache=True)
def _softmax_xent_bwd(prob, target, scale, grad):
    n, c = prob.shape
    for r in range(n):
        sr = scale[r] if scale.size > 1 else scale[0]
        for k in range(c):
            grad[r, k] = prob[r, k] * sr
        grad[r, target[r]] -= sr


_RELU_FWD = Drivers(_relu_fwd_par, _relu_fwd_ser)
_RELU_BWD = Drivers(_relu_bwd_par, _relu_bwd_ser)


def relu_forward(x):
    if x.dtype not in FLOATS:
        return np.maximum(x, 0)
    x = contiguous(x)
    y = np.empty_like(x)
    launch(_RELU_FWD, parallel(x.size, "relu"), x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(g, y):
    """Gradient of ReLU from its output: y > 0 exactly where the input was > 0."""
    if g.dtype not in FLOATS or g.dtype != y.dtype or g.shape != y.shape:
        return g * (y > 0)
    g, y = contiguous(g), contiguous(y)
    gx = np.empty_like(g)
    launch(_RELU_BWD, parallel(g.size, "relu"), g.reshape(-1), y.reshape(-1), gx.reshape(-1))
    return gx


def softmax_cross_entropy(logits, target):
    """(per-row losses, softmax probabilities) of logits (N, C) against class indices (N,)."""
    if logits.dtype not in FLOATS:
        logits = logits.astype(np.float64)
    logits = contiguous(logits)
    if logits.size > 8192:
        # numba's exp is scalar (no vector math library): past a few thousand elements numpy's
        # vectorised exp wins over the fused loop (1000 classes x 256: 0.3 ms against 1.1 ms)
        m = logits.max(axis=1, keepdims=True)
        prob = logits - m
        np.exp(prob, out=prob)
        s = prob.sum(axis=1, keepdims=True)
        prob /= s
        rows = np.arange(logits.shape[0])
        losses = (np.log(s[:, 0]) - (logits[rows, target] - m[:, 0])).astype(logits.dtype, copy=False)
        return losses, prob
    prob = np.empty_like(logits)
    losses = np.empty(logits.shape[0], dtype=logits.dtype)
    _softmax_xent(logits, contiguous(target), prob, losses)
    return losses, prob


def softmax_cross_entropy_backward(prob, target, scale, divisor=1):
    """(softmax - one_hot(target)) * (scale / divisor), with scale a scalar or one per row."""
    scale = np.asarray(scale, dtype=prob.dtype)
    if divisor != 1:
        scale = scale / divisor
    scale = np.ascontiguousarray(scale.reshape(-1))
    grad = np.empty_like(prob)
    _softmax_xent_bwd(prob, contiguous(target), scale, grad)
    return grad
