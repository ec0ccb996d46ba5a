"""Depthwise convolution (groups = input channels, one filter per output channel over one input
channel: MobileNet, EfficientNet, ConvNeXt) computed directly, without an im2col matrix.

A depthwise layer does C_in*kh*kw multiply-adds per output, so as a GEMM it is a batch of
(1 x kh*kw) by (kh*kw x L) products: all the cost is in building the kh*kw-times larger column
matrix and in NumPy's loop over thousands of tiny GEMMs. Here each task is one (sample,
channel) plane: for each filter tap, the rows of output it reaches get one multiply-add per
output element, over a contiguous run of the input row where the stride is 1 (so it
vectorises). The input gradient is the same walk writing into the input plane, one task per
(sample, input channel), so no two tasks write the same memory; the weight gradient is one task
per output channel, summing over samples in float64.

Any stride, padding and dilation; a channel multiplier (C_out = m * C_in) too. float32 and
float64 (gradient checks); the wrappers hand the kernels C-contiguous arrays.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .launch import Drivers, contiguous, launch, parallel


@njit(cache=True)
def _span(size_in, offset, stride, n_out):
    """The output positions [a, b) whose input position o * stride + offset lies in
    [0, size_in)."""
    a = 0
    if offset < 0:
        a = (-offset + stride - 1) // stride
    last = size_in - 1 - offset  # o * stride <= last
    if last < 0:
        return 0, 0
    b = min(n_out, last // stride + 1)
    return a, max(a, b)


@njit(cache=True)
def _fwd_task(x, w, bias, has_bias, sh, sw, ph, pw, dh, dw, mult, out, t):
    co_n = out.shape[1]
    n, co = t // co_n, t % co_n
    ci = co // mult
    h, wd = x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    dst = out[n, co]
    src = x[n, ci]
    b0 = bias[co] if has_bias else 0.0
    for y in range(oh):
        for xx in range(ow):
            dst[y, xx] = b0
    for i in range(kh):
        y0, y1 = _span(h, i * dh - ph, sh, oh)
        for j in range(kw):
            x0, x1 = _span(wd, j * dw - pw, sw, ow)
            wv = w[co, 0, i, j]
            for y in range(y0, y1):
                row = src[y * sh + i * dh - ph]
                drow = dst[y]
                base = j * dw - pw
                for xx in range(x0, x1):
                    drow[xx] += wv * row[xx * sw + base]


@njit(parallel=True, cache=True)
def _fwd_par(x, w, bias, has_bias, sh, sw, ph, pw, dh, dw, mult, out):
    for t in prange(out.shape[0] * out.shape[1]):
        _fwd_task(x, w, bias, has_bias, sh, sw, ph, pw, dh, dw, mult, out, t)


@njit(cache=True)
def _fwd_ser(x, w, bias, has_bias, sh, sw, ph, pw, dh, dw, mult, out):
    for t in range(out.shape[0] * out.shape[1]):
        _fwd_task(x, w, bias, has_bias, sh, sw, ph, pw, dh, dw, mult, out, t)


@njit(cache=True)
def _dgrad_task(g, w, sh, sw, ph, pw, dh, dw, mult, gx, t):
    c = gx.shape[1]
    n, ci = t // c, t % c
    h, wd = gx.shape[2], gx.shape[3]
    oh, ow = g.shape[2], g.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    dst = gx[n, ci]
    for y in range(h):
        for xx in range(wd):
            dst[y, xx] = 0.0
    for co in range(ci * mult, ci * mult + mult):
        src = g[n, co]
        for i in range(kh):
            y0, y1 = _span(h, i * dh - ph, sh, oh)
            for j in range(kw):
                x0, x1 = _span(wd, j * dw - pw, sw, ow)
                wv = w[co, 0, i, j]
                base = j * dw - pw
                for y in range(y0, y1):
                    drow = dst[y * sh + i * dh - ph]
                    srow = src[y]
                    for xx in range(x0, x1):
                        drow[xx * sw + base] += wv * srow[xx]


@njit(parallel=True, cache=True)
def _dgrad_par(g, w, sh, sw, ph, pw, dh, dw, mult, gx):
    for t in prange(gx.shape[0] * gx.shape[1]):
        _dgrad_task(g, w, sh, sw, ph, pw, dh, dw, mult, gx, t)


@njit(cache=True)
def _dgrad_ser(g, w, sh, sw, ph, pw, dh, dw, mult, gx):
    for t in range(gx.shape[0] * gx.shape[1]):
        _dgrad_task(g, w, sh, sw, ph, pw, dh, dw, mult, gx, t)


@njit(cache=True, fastmath={"reassoc"})
def _wgrad_task(x, g, sh, sw, ph, pw, dh, dw, mult, gw, co):
    ci = co // mult
    h, wd = x.shape[2], x.shape[3]
    oh, ow = g.shape[2], g.shape[3]
    kh, kw = gw.shape[2], gw.shape[3]
    zero = np.zeros(1, dtype=g.dtype)[0]
    for i in range(kh):
        y0, y1 = _span(h, i * dh - ph, sh, oh)
        for j in range(kw):
            x0, x1 = _span(wd, j * dw - pw, sw, ow)
            base = j * dw - pw
            total = 0.0  # float64 across rows and samples; each row's sum in the data's dtype
            for n in range(x.shape[0]):
                src = x[n, ci]
                gp = g[n, co]
                for y in range(y0, y1):
                    row = src[y * sh + i * dh - ph]
                    grow = gp[y]
                    s = zero
                    for xx in range(x0, x1):
                        s += grow[xx] * row[xx * sw + base]
                    total += s
            gw[co, 0, i, j] = total


@njit(parallel=True, cache=True)
def _wgrad_par(x, g, sh, sw, ph, pw, dh, dw, mult, gw):
    for co in prange(gw.shape[0]):
        _wgrad_task(x, g, sh, sw, ph, pw, dh, dw, mult, gw, co)


@njit(cache=True)
def _wgrad_ser(x, g, sh, sw, ph, pw, dh, dw, mult, gw):
    for co in range(gw.shape[0]):
        _wgrad_task(x, g, sh, sw, ph, pw, dh, dw, mult, gw, co)


_FWD = Drivers(_fwd_par, _fwd_ser)
_DGRAD = Drivers(_dgrad_par, _dgrad_ser)
_WGRAD = Drivers(_wgrad_par, _wgrad_ser)


def depthwise_fits(x, w, groups):
    """Whether these kernels take a 2-D convolution of x (N, C, H, W) by w with ``groups``: a
    depthwise one (groups = C, one input channel per filter) of float32 or float64 arrays."""
    return (type(x) is np.ndarray and x.ndim == 4 and x.dtype in (np.float32, np.float64)
            and w.dtype == x.dtype and groups == x.shape[1] and w.shape[1] == 1
            and w.shape[0] % groups == 0)


def _macs(out_shape, w):
    return int(np.prod(out_shape)) * w.shape[2] * w.shape[3]


def depthwise_forward(x, w, bias, stride, padding, dilation, out_hw):
    x, w = contiguous(x), contiguous(w)
    has_bias = bias is not None
    b = contiguous(bias).astype(x.dtype, copy=False) if has_bias else np.zeros(1, x.dtype)
    out = np.empty((x.shape[0], w.shape[0]) + tuple(out_hw), dtype=x.dtype)
    mult = w.shape[0] // x.shape[1]
    launch(_FWD, parallel(_macs(out.shape, w), "macs"), x, w, b, has_bias, stride[0],
           stride[1], padding[0], padding[1], dilation[0], dilation[1], mult, out)
    return out


def depthwise_input_grad(g, w, x_shape, stride, padding, dilation):
    g, w = contiguous(g), contiguous(w)
    gx = np.empty(tuple(x_shape), dtype=g.dtype)
    mult = w.shape[0] // x_shape[1]
    launch(_DGRAD, parallel(_macs(g.shape, w), "macs"), g, w, stride[0], stride[1],
           padding[0], padding[1], dilation[0], dilation[1], mult, gx)
    return gx


def depthwise_weight_grad(x, g, kernel, stride, padding, dilation):
    x, g = contiguous(x), contiguous(g)
    gw = np.empty((g.shape[1], 1) + tuple(kernel), dtype=np.float64)
    mult = g.shape[1] // x.shape[1]
    launch(_WGRAD, parallel(int(np.prod(g.shape)) * kernel[0] * kernel[1], "macs"), x, g,
           stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], mult, gw)
    return gw.astype(x.dtype)
