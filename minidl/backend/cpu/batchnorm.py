"""Batch norm on the CPU in numba: one statistics pass and one normalise pass forward, one
reduction pass and one elementwise pass backward (the whole-array version in generic.py makes
about ten passes over the activation).

Channel c of the input, seen as (N, C, HW), is N contiguous runs of HW values. The statistics
are sums of x - x[0, c, 0], a shift close to the mean, kept in float64, so the variance does not
cancel at a large offset. Running statistics follow PyTorch (unbiased variance, ``momentum``).
Channels run in parallel when the activation is large enough to pay for the thread launch.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .launch import Drivers, launch, parallel


# The loops run over one contiguous (sample, channel) row at a time with unsigned indices, and
# the ReLU test is hoisted out of them, so LLVM vectorises each loop. The float64 sums may be
# reassociated (and only that: NaN and inf keep their IEEE meaning), which lets LLVM split them
# over vector lanes instead of one serial chain of dependent adds.
_REASSOC = {"reassoc"}
@njit(cache=True, fastmath=_REASSOC)
def _stats_channel(x3, c):
    n, _, hw = x3.shape
    shift = np.float64(x3[0, c, 0])
    s = 0.0
    q = 0.0
    for i in range(n):
        row = x3[i, c]
        for p in range(hw):
            d = np.float64(row[np.uintp(p)]) - shift
            s += d
            q += d * d
    count = n * hw
    d = s / count
    var = max(q / count - d * d, 0.0)
    return shift + d, var


@njit(cache=True)
def _affine_row(src, dst, a, b, relu):
    if relu:
        for p in range(src.size):
            k = np.uintp(p)
            v = src[k] * a + b
            dst[k] = 0 if v < 0 else v  # NaN passes through, as in relu
    else:
        for p in range(src.size):
            k = np.uintp(p)
            dst[k] = src[k] * a + b


@njit(cache=True)
def _forward_channel(x3, y3, c, w, b, has_w, has_b, eps, relu, mean, invstd, bvar):
    mu, var = _stats_channel(x3, c)
    inv = 1.0 / np.sqrt(var + eps)
    a = inv * w[c] if has_w else inv
    sh = (b[c] if has_b else 0.0) - mu * a
    mean[c], invstd[c], bvar[c] = mu, inv, var
    at, sht = x3.dtype.type(a), x3.dtype.type(sh)
    for i in range(x3.shape[0]):
        _affine_row(x3[i, c], y3[i, c], at, sht, relu)


@njit(parallel=True, cache=True)
def _forward_par(x3, y3, w, b, has_w, has_b, eps, relu, mean, invstd, bvar):
    for c in prange(x3.shape[1]):
        _forward_channel(x3, y3, c, w, b, has_w, has_b, eps, relu, mean, invstd, bvar)


@njit(cache=True)
def _forward_ser(x3, y3, w, b, has_w, has_b, eps, relu, mean, invstd, bvar):
    for c in range(x3.shape[1]):
        _forward_channel(x3, y3, c, w, b, has_w, has_b, eps, relu, mean, invstd, bvar)


@njit(cache=True, fastmath=_REASSOC)
def _grad_sums_row(g, x, y, mu, relu):
    s = 0.0
    q = 0.0
    if relu:
        for p in range(g.size):
            k = np.uintp(p)
            gi = np.float64(g[k]) if y[k] > 0 else 0.0
            s += gi
            q += gi * (np.float64(x[k]) - mu)
    else:
        for p in range(g.size):
            k = np.uintp(p)
            gi = np.float64(g[k])
            s += gi
            q += gi * (np.float64(x[k]) - mu)
    return s, q


@njit(cache=True)
def _input_grad_row(g, x, y, gx, a, b, c, mu, relu):
    if relu:
        for p in range(g.size):
            k = np.uintp(p)
            gi = g[k] if y[k] > 0 else 0
            gx[k] = a * gi + b * (x[k] - mu) + c
    else:
        for p in range(g.size):
            k = np.uintp(p)
            gx[k] = a * g[k] + b * (x[k] - mu) + c


@njit(cache=True)
def _backward_channel(g3, x3, y3, c, mean, invstd, w, has_w, relu, gx3, gw, gb):
    n, _, hw = x3.shape
    mu = np.float64(mean[c])
    s = 0.0
    q = 0.0
    for i in range(n):
        si, qi = _grad_sums_row(g3[i, c], x3[i, c], y3[i, c], mu, relu)
        s += si
        q += qi
    count = n * hw
    inv = np.float64(invstd[c])
    a = inv * w[c] if has_w else inv
    gw[c], gb[c] = q * inv, s
    t = x3.dtype.type
    at, bt, ct, mut = t(a), t(-a * inv * inv * q / count), t(-a * s / count), t(mu)
    for i in range(n):
        _input_grad_row(g3[i, c], x3[i, c], y3[i, c], gx3[i, c], at, bt, ct, mut, relu)


@njit(parallel=True, cache=True)
def _backward_par(g3, x3, y3, mean, invstd, w, has_w, relu, gx3, gw, gb):
    for c in prange(x3.shape[1]):
        _backward_channel(g3, x3, y3, c, mean, invstd, w, has_w, relu, gx3, gw, gb)


@njit(cache=True)
def _backward_ser(g3, x3, y3, mean, invstd, w, has_w, relu, gx3, gw, gb):
    for c in range(x3.shape[1]):
        _backward_channel(g3, x3, y3, c, mean, invstd, w, has_w, relu, gx3, gw, gb)


_FORWARD = Drivers(_forward_par, _forward_ser)
_BACKWARD = Drivers(_backward_par, _backward_ser)


def _as3(a):
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], -1)


def _per_channel(v, c, dtype):
    return np.ones(c, dtype) if v is None else np.ascontiguousarray(v, dtype=dtype)


def batch_norm_train(x, weight, bias, running_mean, running_var, momentum, eps, relu=False):
    """Same contract as ``generic.batch_norm_train``: (y, batch mean, invstd), running
    statistics updated in place."""
    x3 = _as3(x)
    c = x3.shape[1]
    y3 = np.empty_like(x3)
    mean, invstd, bvar = (np.empty(c, np.float64) for _ in range(3))
    w, b = _per_channel(weight, c, np.float64), _per_channel(bias, c, np.float64)
    launch(_FORWARD, c > 1 and parallel(x3.size, "batchnorm"), x3, y3, w, b, weight is not None,
           bias is not None, float(eps), bool(relu), mean, invstd, bvar)
    if running_mean is not None:
        count = x3.shape[0] * x3.shape[2]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * bvar * (count / max(count - 1, 1))
    # the statistics stay float64 for the backward pass: (x - mean) needs the mean's low bits
    return y3.reshape(x.shape), mean, invstd


def batch_norm_backward(g, x, y, mean, invstd, weight, relu=False):
    """Same contract as ``generic.batch_norm_backward``."""
    x3, g3 = _as3(x), _as3(g)
    y3 = _as3(y) if relu else x3
    c = x3.shape[1]
    gx3 = np.empty_like(x3)
    gw, gb = np.empty(c, np.float64), np.empty(c, np.float64)
    w = _per_channel(weight, c, np.float64)
    launch(_BACKWARD, c > 1 and parallel(x3.size, "batchnorm"), g3, x3, y3,
           np.asarray(mean, np.float64), np.asarray(invstd, np.float64), w, weight is not None,
           bool(relu), gx3, gw, gb)
    return gx3.reshape(x.shape), gw.astype(x.dtype), gb.astype(x.dtype)


@njit(cache=True)
def _affine_plane(x3, y3, scale, shift, relu, k):
    i, c = k // x3.shape[1], k % x3.shape[1]
    _affine_row(x3[i, c], y3[i, c], scale[c], shift[c], relu)


@njit(parallel=True, cache=True)
def _affine_par(x3, y3, scale, shift, relu):
    for k in prange(x3.shape[0] * x3.shape[1]):
        _affine_plane(x3, y3, scale, shift, relu, k)


@njit(cache=True)
def _affine_ser(x3, y3, scale, shift, relu):
    for k in range(x3.shape[0] * x3.shape[1]):
        _affine_plane(x3, y3, scale, shift, relu, k)


_AFFINE = Drivers(_affine_par, _affine_ser)


def channel_affine(x, scale, shift, relu=False):
    """y = x * scale[c] + shift[c] per channel (dim 1), then max(y, 0) when ``relu``: eval-mode
    batch norm (with the following ReLU) in one pass."""
    x3 = _as3(x)
    y3 = np.empty_like(x3)
    scale = np.ascontiguousarray(scale, dtype=x3.dtype)
    shift = np.ascontiguousarray(shift, dtype=x3.dtype)
    launch(_AFFINE, x3.shape[0] * x3.shape[1] > 1 and parallel(x3.size, "batchnorm"),
           x3, y3, scale, shift, bool(relu))
    return y3.reshape(x.shape)
