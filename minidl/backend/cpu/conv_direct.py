"""Direct convolution for thin inputs (few input values per output, stride 1): no im2col matrix.

With few input values per output (C_in*kh*kw small, LeNet's first layer: 1*5*5) the im2col
matrix is 25x the input and the GEMM has too little depth to run at BLAS speed: the layer is
bound by memory traffic. These kernels compute it from a padded copy of one sample instead.
Output rows are computed at the padded width Wp (a few wasted columns) so that each filter tap
is one long contiguous multiply-add over the flattened plane, which vectorises.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .launch import Drivers, contiguous, launch, parallel

@njit(cache=True)
def _pad_sample(x, b, ph, pw, kw, xp):
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = h + 2 * ph, w + 2 * pw
    xp[:] = 0
    for ci in range(c):
        for yy in range(h):
            o = ci * hp * wp + (yy + ph) * wp + pw
            for xx in range(w):
                xp[np.uintp(o + xx)] = x[b, ci, yy, xx]


@njit(cache=True)
def _direct_fwd_task(x, w, bias, has_bias, ph, pw, out, b):
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    co, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    hp, wp = h + 2 * ph, wd + 2 * pw
    q = oh * wp
    xp = np.empty(c * hp * wp + kw, dtype=x.dtype)
    _pad_sample(x, b, ph, pw, kw, xp)
    acc = np.empty(2 * q, dtype=x.dtype)
    # two output channels per pass: each load of the input feeds two multiply-adds (+13%)
    for k0 in range(0, co, 2):
        k1 = min(k0 + 1, co - 1)  # an odd last channel is computed twice, harmlessly
        b0 = bias[k0] if has_bias else 0.0
        b1 = bias[k1] if has_bias else 0.0
        for p in range(q):
            acc[p] = b0
            acc[np.uintp(q + p)] = b1
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    w0 = w[k0, ci, i, j]
                    w1 = w[k1, ci, i, j]
                    base = ci * hp * wp + i * wp + j
                    for p in range(q):
                        v = xp[np.uintp(base + p)]
                        acc[p] += w0 * v
                        acc[np.uintp(q + p)] += w1 * v
        d0 = out[b, k0]
        d1 = out[b, k1]
        for y in range(oh):
            for xx in range(ow):
                d0[y, xx] = acc[y * wp + xx]
                d1[y, xx] = acc[q + y * wp + xx]


@njit(parallel=True, cache=True)
def _direct_fwd_par(x, w, bias, has_bias, ph, pw, out):
    for b in prange(x.shape[0]):
        _direct_fwd_task(x, w, bias, has_bias, ph, pw, out, b)


@njit(cache=True)
def _direct_fwd_ser(x, w, bias, has_bias, ph, pw, out):
    for b in range(x.shape[0]):
        _direct_fwd_task(x, w, bias, has_bias, ph, pw, out, b)


@njit(cache=True, fastmath={"reassoc"})
def _direct_wgrad_task(x, g, ph, pw, kh, kw, gw, gb, b0, b1):
    """Weight and bias gradients summed over samples [b0, b1) into float64 gw, gb."""
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    co, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    hp, wp = h + 2 * ph, wd + 2 * pw
    q = oh * wp
    xp = np.empty(c * hp * wp + kw, dtype=x.dtype)
    gf = np.zeros(q, dtype=g.dtype)  # gradient at the padded width, zero in the extra columns
    zero = np.zeros(1, dtype=g.dtype)[0]
    for b in range(b0, b1):
        _pad_sample(x, b, ph, pw, kw, xp)
        for k in range(co):
            src = g[b, k]
            sb = 0.0
            for y in range(oh):
                for xx in range(ow):
                    v = src[y, xx]
                    gf[y * wp + xx] = v
                    sb += v
            gb[k] += sb
            for ci in range(c):
                for i in range(kh):
                    for j in range(kw):
                        base = ci * hp * wp + i * wp + j
                        s = zero  # of the data's dtype: float32 products stay
                        for p in range(q):  # float32 and vectorise; samples add up in float64
                            s += gf[p] * xp[np.uintp(base + p)]
                        gw[k, ci, i, j] += s


@njit(parallel=True, cache=True)
def _direct_wgrad_par(x, g, ph, pw, kh, kw, gw_parts, gb_parts):
    nt = gw_parts.shape[0]
    n = x.shape[0]
    for t in prange(nt):
        _direct_wgrad_task(x, g, ph, pw, kh, kw, gw_parts[t], gb_parts[t],
                           t * n // nt, (t + 1) * n // nt)


@njit(cache=True)
def _direct_wgrad_ser(x, g, ph, pw, kh, kw, gw_parts, gb_parts):
    _direct_wgrad_task(x, g, ph, pw, kh, kw, gw_parts[0], gb_parts[0], 0, x.shape[0])


_DIRECT_FWD = Drivers(_direct_fwd_par, _direct_fwd_ser)
_DIRECT_WGRAD = Drivers(_direct_wgrad_par, _direct_wgrad_ser)


def forward_args(x, w, bias):
    """x, w and the bias as the direct kernels take them: C-contiguous, in x's dtype, and a
    one-element placeholder with ``has_bias`` False when there is no bias."""
    x = contiguous(x)
    has_bias = bias is not None
    b = contiguous(bias).astype(x.dtype, copy=False) if has_bias else np.zeros(1, x.dtype)
    return x, contiguous(w).astype(x.dtype, copy=False), b, has_bias


def conv2d_direct(x, w, bias, ph, pw):
    """Stride-1 convolution computed without an im2col matrix."""
    x, w, b, has_bias = forward_args(x, w, bias)
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    out = np.empty((n, co, h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1), dtype=x.dtype)
    macs = n * co * out.shape[2] * (wd + 2 * pw) * c * kh * kw
    launch(_DIRECT_FWD, n > 1 and parallel(macs, "macs"), x, w, b, has_bias, ph, pw, out)
    return out


def wgrad_in_parts(x, g, kh, kw, pw, run):
    """The frame of the direct weight-gradient kernels (these loops, and ``conv_tiles``'):
    one task per thread when the work pays for it, each summing its samples into float64
    gradients of its own, added up here. ``run(in_parallel, x, g, gw_parts, gb_parts)``
    launches the kernel; returns (weight gradient, bias gradient) in x's dtype."""
    x, g = contiguous(x), contiguous(g)
    n, c = x.shape[:2]
    co = g.shape[1]
    macs = n * co * g.shape[2] * (x.shape[3] + 2 * pw) * c * kh * kw
    parts = min(numba.get_num_threads(), n) if parallel(macs, "macs") else 1
    gw = np.zeros((parts, co, c, kh, kw), dtype=np.float64)
    gb = np.zeros((parts, co), dtype=np.float64)
    run(parts > 1, x, g, gw, gb)
    return gw.sum(axis=0).astype(x.dtype), gb.sum(axis=0).astype(x.dtype)


def conv2d_direct_wgrad(x, g, kh, kw, ph, pw):
    """(weight gradient, bias gradient) of ``conv2d_direct``, summed in float64 per thread."""
    return wgrad_in_parts(x, g, kh, kw, pw, lambda par, x, g, gw, gb: launch(
        _DIRECT_WGRAD, par, x, g, ph, pw, kh, kw, gw, gb))
