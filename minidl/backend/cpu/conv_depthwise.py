"""Depthwise convolution (groups = input channels, one filter per output channel over one input
channel: MobileNet, EfficientNet, ConvNeXt) computed directly, without an im2col matrix.

A depthwise layer does only kh*kw multiply-adds per output, so as a GEMM it is a batch of
(1 x kh*kw) by (kh*kw x L) products: all the cost is in building the kh*kw-times larger column
matrix and in NumPy's loop over thousands of tiny GEMMs. In NCHW order a direct kernel fares
little better: its inner loops run along one image row, a few to a few dozen elements at the
small resolutions of a network's later stages (0.5-2.7 GMAC/s measured). So these kernels work
in channels-last order (N, H, W, C): the inner loop runs over the channels, contiguous and
long (32-960), and vectorises; the input and the output are transposed on the way in and out
(a copy each, cheaper than the convolution they speed up 3-15x).

- forward: one task per output row (sample, y), bias then each tap's multiply-add over the
  channels;
- input gradient: gathered, one task per input row: each input element sums the output
  gradients of the taps that read it, so no two tasks write the same memory;
- weight gradient: one task per thread over a share of the rows, each summing into a float64
  gradient of its own (a row's sum in the data's dtype first), added up at the end.

Any stride, padding and dilation, and a channel multiplier (C_out = m * C_in, output channel
c*m + k reading input channel c). float32 and float64 (gradient checks); the wrappers hand the
kernels C-contiguous arrays.

These channels-last kernels take the small planes of a network's last stages. Output planes of
``PLANES_FROM`` values or more (``PLANES_FROM_THREADED`` with more than one thread) go to
``conv_depthwise_planes``, which works plane by plane in NCHW order with no layout copies. On
MobileNetV2's layers at batch 8 (forward + both gradients, 2-vCPU Zen 4), one thread: 32x48x48
took 1.06 ms there against 6.3 here, 144x24x24 1.40 against 3.8, 192x8x8 0.50 against 0.60,
but 384x6x6 0.81 against 0.63 here and 960x3x3 1.24 against 0.60 (each plane's loops too short
there); two threads: 384x6x6 0.46 there against 0.62 here, 576x6x6 0.65 against 1.03, 960x3x3
still 0.70 against 0.60.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from . import conv_depthwise_planes as planes
from .launch import Drivers, contiguous, launch, parallel

# output planes from this many values (oh * ow) take conv_depthwise_planes (see above)
PLANES_FROM = 64
PLANES_FROM_THREADED = 32


# ---- layout --------------------------------------------------------------------------------
@njit(cache=True)
def _nhwc_task(x, out, t):
    h, w, c = out.shape[1], out.shape[2], out.shape[3]
    b, y = t // h, t % h
    for xx in range(w):
        dst = out[b, y, xx]
        for ch in range(c):
            dst[ch] = x[b, ch, y, xx]


@njit(parallel=True, cache=True)
def _nhwc_par(x, out):
    for t in prange(out.shape[0] * out.shape[1]):
        _nhwc_task(x, out, t)


@njit(cache=True)
def _nhwc_ser(x, out):
    for t in range(out.shape[0] * out.shape[1]):
        _nhwc_task(x, out, t)


@njit(cache=True)
def _nchw_task(x, out, t):
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    b, ch = t // c, t % c
    for y in range(h):
        for xx in range(w):
            out[b, ch, y, xx] = x[b, y, xx, ch]


@njit(parallel=True, cache=True)
def _nchw_par(x, out):
    for t in prange(out.shape[0] * out.shape[1]):
        _nchw_task(x, out, t)


@njit(cache=True)
def _nchw_ser(x, out):
    for t in range(out.shape[0] * out.shape[1]):
        _nchw_task(x, out, t)


# ---- forward -------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _madd(acc, a, src, c, mult):
    """acc[o] += a[o] * src[o // mult] over the C * mult output channels o: one tap of the
    forward pass (a: the tap's filters) or of the weight gradient (a: the output gradient)."""
    if mult == 1:
        for ch in range(c):
            acc[ch] += a[ch] * src[ch]
    else:
        for ch in range(c):
            v = src[ch]
            for k in range(mult):
                acc[ch * mult + k] += a[ch * mult + k] * v


@njit(cache=True)
def _fwd_task(xt, wt, bias, sh, sw, ph, pw, dh, dw, mult, out, t):
    h, wd, c = xt.shape[1], xt.shape[2], xt.shape[3]
    oh, ow, co = out.shape[1], out.shape[2], out.shape[3]
    kh, kw = wt.shape[0], wt.shape[1]
    b, oy = t // oh, t % oh
    for ox in range(ow):
        acc = out[b, oy, ox]
        for ch in range(co):
            acc[ch] = bias[ch]
        for i in range(kh):
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= h:
                continue
            for j in range(kw):
                ix = ox * sw - pw + j * dw
                if ix < 0 or ix >= wd:
                    continue
                _madd(acc, wt[i, j], xt[b, iy, ix], c, mult)


@njit(parallel=True, cache=True)
def _fwd_par(xt, wt, bias, sh, sw, ph, pw, dh, dw, mult, out):
    for t in prange(out.shape[0] * out.shape[1]):
        _fwd_task(xt, wt, bias, sh, sw, ph, pw, dh, dw, mult, out, t)


@njit(cache=True)
def _fwd_ser(xt, wt, bias, sh, sw, ph, pw, dh, dw, mult, out):
    for t in range(out.shape[0] * out.shape[1]):
        _fwd_task(xt, wt, bias, sh, sw, ph, pw, dh, dw, mult, out, t)


# ---- input gradient ------------------------------------------------------------------------
@njit(cache=True)
def _dgrad_task(gt, wt, sh, sw, ph, pw, dh, dw, mult, gx, t):
    h, wd, c = gx.shape[1], gx.shape[2], gx.shape[3]
    oh, ow = gt.shape[1], gt.shape[2]
    kh, kw = wt.shape[0], wt.shape[1]
    b, iy = t // h, t % h
    for ix in range(wd):
        acc = gx[b, iy, ix]
        for ch in range(c):
            acc[ch] = 0.0
        for i in range(kh):
            ty = iy + ph - i * dh
            if ty < 0 or ty % sh:
                continue
            oy = ty // sh
            if oy >= oh:
                continue
            for j in range(kw):
                tx = ix + pw - j * dw
                if tx < 0 or tx % sw:
                    continue
                ox = tx // sw
                if ox >= ow:
                    continue
                src = gt[b, oy, ox]
                wv = wt[i, j]
                if mult == 1:
                    for ch in range(c):
                        acc[ch] += wv[ch] * src[ch]
                else:
                    for ch in range(c):
                        s = acc[ch]
                        for k in range(mult):
                            s += wv[ch * mult + k] * src[ch * mult + k]
                        acc[ch] = s


@njit(parallel=True, cache=True)
def _dgrad_par(gt, wt, sh, sw, ph, pw, dh, dw, mult, gx):
    for t in prange(gx.shape[0] * gx.shape[1]):
        _dgrad_task(gt, wt, sh, sw, ph, pw, dh, dw, mult, gx, t)


@njit(cache=True)
def _dgrad_ser(gt, wt, sh, sw, ph, pw, dh, dw, mult, gx):
    for t in range(gx.shape[0] * gx.shape[1]):
        _dgrad_task(gt, wt, sh, sw, ph, pw, dh, dw, mult, gx, t)


# ---- weight gradient -----------------------------------------------------------------------
@njit(cache=True)
def _wgrad_task(xt, gt, sh, sw, ph, pw, dh, dw, mult, part, row, r0, r1):
    """Rows [r0, r1) of (sample, output row) summed into the float64 ``part`` (kh, kw, Co);
    ``row`` is a scratch (kh, kw, Co) in the data's dtype for one row's sums."""
    h, wd, c = xt.shape[1], xt.shape[2], xt.shape[3]
    oh, ow, co = gt.shape[1], gt.shape[2], gt.shape[3]
    kh, kw = part.shape[0], part.shape[1]
    for t in range(r0, r1):
        b, oy = t // oh, t % oh
        row[:] = 0.0
        for ox in range(ow):
            gv = gt[b, oy, ox]
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= h:
                    continue
                for j in range(kw):
                    ix = ox * sw - pw + j * dw
                    if ix < 0 or ix >= wd:
                        continue
                    _madd(row[i, j], gv, xt[b, iy, ix], c, mult)
        for i in range(kh):
            for j in range(kw):
                for ch in range(co):
                    part[i, j, ch] += row[i, j, ch]


@njit(parallel=True, cache=True)
def _wgrad_par(xt, gt, sh, sw, ph, pw, dh, dw, mult, parts, rows):
    nt = parts.shape[0]
    n = gt.shape[0] * gt.shape[1]
    for p in prange(nt):
        _wgrad_task(xt, gt, sh, sw, ph, pw, dh, dw, mult, parts[p], rows[p],
                    p * n // nt, (p + 1) * n // nt)


@njit(cache=True)
def _wgrad_ser(xt, gt, sh, sw, ph, pw, dh, dw, mult, parts, rows):
    _wgrad_task(xt, gt, sh, sw, ph, pw, dh, dw, mult, parts[0], rows[0], 0,
                gt.shape[0] * gt.shape[1])


_NHWC = Drivers(_nhwc_par, _nhwc_ser)
_NCHW = Drivers(_nchw_par, _nchw_ser)
_FWD = Drivers(_fwd_par, _fwd_ser)
_DGRAD = Drivers(_dgrad_par, _dgrad_ser)
_WGRAD = Drivers(_wgrad_par, _wgrad_ser)


def depthwise_fits(x, w, groups):
    """Whether these kernels take a 2-D convolution of x (N, C, H, W) by w with ``groups``: a
    depthwise one (groups = C, one input channel per filter) of float32 or float64 arrays."""
    return (type(x) is np.ndarray and x.ndim == 4 and x.dtype in (np.float32, np.float64)
            and w.dtype == x.dtype and groups == x.shape[1] and w.shape[1] == 1
            and w.shape[0] % groups == 0)


def _to_nhwc(a):
    out = np.empty((a.shape[0], a.shape[2], a.shape[3], a.shape[1]), dtype=a.dtype)
    launch(_NHWC, parallel(a.size, "columns"), contiguous(a), out)
    return out


def _to_nchw(a):
    out = np.empty((a.shape[0], a.shape[3], a.shape[1], a.shape[2]), dtype=a.dtype)
    launch(_NCHW, parallel(a.size, "columns"), a, out)
    return out


def _taps_last(w):
    """(C_out, 1, kh, kw) weights as (kh, kw, C_out): a tap's filters side by side."""
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))


def _work(out_shape, w):
    return int(np.prod(out_shape)) * w.shape[2] * w.shape[3]


def _by_planes(out_hw):
    limit = PLANES_FROM if numba.get_num_threads() == 1 else PLANES_FROM_THREADED
    return out_hw[0] * out_hw[1] >= limit


def depthwise_forward(x, w, bias, stride, padding, dilation, out_hw):
    if _by_planes(out_hw):
        return planes.depthwise_forward(x, w, bias, stride, padding, dilation, out_hw)
    n, c = x.shape[:2]
    co = w.shape[0]
    b = (contiguous(bias).astype(x.dtype, copy=False) if bias is not None
         else np.zeros(co, x.dtype))
    out = np.empty((n,) + tuple(out_hw) + (co,), dtype=x.dtype)
    launch(_FWD, parallel(_work(out.shape, w), "macs"), _to_nhwc(x),
           _taps_last(w).astype(x.dtype, copy=False), b, stride[0], stride[1], padding[0],
           padding[1], dilation[0], dilation[1], co // c, out)
    return _to_nchw(out)


def depthwise_input_grad(g, w, x_shape, stride, padding, dilation):
    if _by_planes(g.shape[2:]):
        return planes.depthwise_input_grad(g, w, x_shape, stride, padding, dilation)
    n, c, h, wd = x_shape
    gx = np.empty((n, h, wd, c), dtype=g.dtype)
    launch(_DGRAD, parallel(_work(g.shape, w), "macs"), _to_nhwc(g),
           _taps_last(w).astype(g.dtype, copy=False), stride[0], stride[1], padding[0],
           padding[1], dilation[0], dilation[1], w.shape[0] // c, gx)
    return _to_nchw(gx)


def depthwise_weight_grad(x, g, kernel, stride, padding, dilation):
    if _by_planes(g.shape[2:]):
        return planes.depthwise_weight_grad(x, g, kernel, stride, padding, dilation)
    kh, kw = kernel
    co = g.shape[1]
    rows = g.shape[0] * g.shape[2]
    work = int(np.prod(g.shape)) * kh * kw
    parts = min(numba.get_num_threads(), rows) if parallel(work, "macs") else 1
    part = np.zeros((parts, kh, kw, co), dtype=np.float64)
    scratch = np.empty((parts, kh, kw, co), dtype=x.dtype)
    launch(_WGRAD, parts > 1, _to_nhwc(x), _to_nhwc(g), stride[0], stride[1], padding[0],
           padding[1], dilation[0], dilation[1], co // x.shape[1], part, scratch)
    return part.sum(axis=0).transpose(2, 0, 1)[:, None].astype(x.dtype)
