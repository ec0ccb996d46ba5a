"""im2col/col2im and the layouts around the convolution GEMM, and the chunked im2col + GEMM
convolution used for inference.

Training convolutions use ``im2col_t``: the columns of the whole batch side by side,
``(C*kh*kw, N*OH*OW)``, so the forward pass, the weight gradient and the column gradient are one
large GEMM each in ``numpy.matmul`` (BLAS) instead of N small ones; the price is a transpose of
the GEMM output into NCHW, which ``cols_to_nchw`` fuses with the bias add.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import generic
from ..generic import out_size
from .launch import FLOATS, Drivers, contiguous, launch, parallel
from .scratch import pool

# ---- im2col / col2im ----------------------------------------------------------------------
# Indices that the compiler cannot prove non-negative (they subtract the padding) are cast to
# np.uintp: numba then skips its negative-index wraparound branch, which otherwise stops LLVM
# from vectorising the inner loops (3-5x slower). Every such index is in range by construction.
@njit(cache=True, inline="always")
def _valid_range(k, size, stride, pad, out):
    """Output positions [lo, hi) whose input position o*stride - pad + k lies in [0, size)."""
    lo = 0
    if pad > k:
        lo = (pad - k + stride - 1) // stride
    hi = (size - 1 + pad - k) // stride + 1
    if hi > out:
        hi = out
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True)
def _im2col_task(x, kh, kw, sh, sw, ph, pw, oh, ow, col, nc):
    """One (sample, channel) plane: it owns kh*kw rows of one column block, so tasks never
    write the same memory. Padding is handled here instead of by a padded copy of x."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    length = oh * ow
    b = nc // c
    ci = nc - b * c
    src = x[b, ci].reshape(-1)
    for i in range(kh):
        y0, y1 = _valid_range(i, h, sh, ph, oh)
        for j in range(kw):
            x0, x1 = _valid_range(j, w, sw, pw, ow)
            dst = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            dst[:y0 * ow] = 0
            dst[y1 * ow:] = 0
            for y in range(y0, y1):
                ob = y * ow
                ib = (y * sh - ph + i) * w + j - pw
                for xx in range(x0):
                    dst[ob + xx] = 0
                if sw == 1:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx)] = src[np.uintp(ib + xx)]
                else:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx)] = src[np.uintp(ib + xx * sw)]
                for xx in range(x1, ow):
                    dst[ob + xx] = 0


@njit(parallel=True, cache=True)
def _im2col_par(x, kh, kw, sh, sw, ph, pw, oh, ow, col):
    for nc in prange(x.shape[0] * x.shape[1]):
        _im2col_task(x, kh, kw, sh, sw, ph, pw, oh, ow, col, nc)


@njit(cache=True)
def _im2col_ser(x, kh, kw, sh, sw, ph, pw, oh, ow, col):
    for nc in range(x.shape[0] * x.shape[1]):
        _im2col_task(x, kh, kw, sh, sw, ph, pw, oh, ow, col, nc)


@njit(cache=True)
def _col2im_task(col, kh, kw, sh, sw, ph, pw, oh, ow, out, nc):
    """One output plane per task, so the scatter-add needs no atomics."""
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    length = oh * ow
    b = nc // c
    ci = nc - b * c
    dst = out[b, ci].reshape(-1)
    dst[:] = 0
    for i in range(kh):
        y0, y1 = _valid_range(i, h, sh, ph, oh)
        for j in range(kw):
            x0, x1 = _valid_range(j, w, sw, pw, ow)
            src = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            for y in range(y0, y1):
                ib = y * ow
                ob = (y * sh - ph + i) * w + j - pw
                if sw == 1:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx)] += src[np.uintp(ib + xx)]
                else:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx * sw)] += src[np.uintp(ib + xx)]


@njit(parallel=True, cache=True)
def _col2im_par(col, kh, kw, sh, sw, ph, pw, oh, ow, out):
    for nc in prange(out.shape[0] * out.shape[1]):
        _col2im_task(col, kh, kw, sh, sw, ph, pw, oh, ow, out, nc)


@njit(cache=True)
def _col2im_ser(col, kh, kw, sh, sw, ph, pw, oh, ow, out):
    for nc in range(out.shape[0] * out.shape[1]):
        _col2im_task(col, kh, kw, sh, sw, ph, pw, oh, ow, out, nc)


# Short output rows (LeNet's second layer: 10 wide) leave the row loops above mostly loop
# overhead and scalar remainders. There, each (i, j) row of a plane is instead one loop over
# the whole OH*OW window through a table of input offsets (y*sh*w + x*sw): a gather for im2col,
# a scatter-add for col2im (distinct targets within a row). 25-35% faster at OW=10, slower for
# wide rows, so the wrappers use it only below _SHORT_ROW. With padding, the task first copies
# its plane into a zero-padded one (col2im adds into a padded plane and keeps its inside):
# ResNet's 3x3 layers at 4x4-8x8 gathered 1.8-2.4x faster; col2im gained at 4x4 and 7x7 only
# and lost 35% at 14x14, hence its shorter limit.
_SHORT_ROW = 16
_SHORT_PADDED_ROW = 8


@njit(cache=True)
def _padded_plane(x, b, ci, ph, pw):
    """Plane (b, ci) of x, flat: itself where there is no padding, else a zero-padded copy."""
    if ph == 0 and pw == 0:
        return x[b, ci].reshape(-1)
    h, w = x.shape[2], x.shape[3]
    wp = w + 2 * pw
    xp = np.zeros((h + 2 * ph) * wp, x.dtype)
    for y in range(h):
        row = x[b, ci, y]
        ob = (y + ph) * wp + pw
        for xx in range(w):
            xp[np.uintp(ob + xx)] = row[xx]
    return xp


@njit(cache=True)
def _im2col_off_task(x, kh, kw, ph, pw, off, col, nc):
    c, w = x.shape[1], x.shape[3]
    wp = w + 2 * pw
    length = off.size
    b = nc // c
    ci = nc - b * c
    src = _padded_plane(x, b, ci, ph, pw)
    for i in range(kh):
        for j in range(kw):
            dst = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            base = i * wp + j
            for p in range(length):
                dst[p] = src[np.uintp(base + off[p])]


@njit(parallel=True, cache=True)
def _im2col_off_par(x, kh, kw, ph, pw, off, col):
    for nc in prange(x.shape[0] * x.shape[1]):
        _im2col_off_task(x, kh, kw, ph, pw, off, col, nc)


@njit(cache=True)
def _im2col_off_ser(x, kh, kw, ph, pw, off, col):
    for nc in range(x.shape[0] * x.shape[1]):
        _im2col_off_task(x, kh, kw, ph, pw, off, col, nc)


@njit(cache=True)
def _col2im_off_task(col, kh, kw, ph, pw, off, out, nc):
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    wp = w + 2 * pw
    length = off.size
    b = nc // c
    ci = nc - b * c
    padded = ph > 0 or pw > 0
    if padded:  # add into a padded plane, then keep its inside
        dst = np.zeros((h + 2 * ph) * wp, out.dtype)
    else:
        dst = out[b, ci].reshape(-1)
        dst[:] = 0
    for i in range(kh):
        for j in range(kw):
            src = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            base = i * wp + j
            for p in range(length):
                dst[np.uintp(base + off[p])] += src[p]
    if padded:
        for y in range(h):
            row = out[b, ci, y]
            ib = (y + ph) * wp + pw
            for xx in range(w):
                row[xx] = dst[np.uintp(ib + xx)]


@njit(parallel=True, cache=True)
def _col2im_off_par(col, kh, kw, ph, pw, off, out):
    for nc in prange(out.shape[0] * out.shape[1]):
        _col2im_off_task(col, kh, kw, ph, pw, off, out, nc)


@njit(cache=True)
def _col2im_off_ser(col, kh, kw, ph, pw, off, out):
    for nc in range(out.shape[0] * out.shape[1]):
        _col2im_off_task(col, kh, kw, ph, pw, off, out, nc)


def _offsets(w, sh, sw, oh, ow):
    return (np.arange(oh)[:, None] * (sh * w) + np.arange(ow)[None, :] * sw).reshape(-1)


# ---- conv output layout --------------------------------------------------------------------
@njit(cache=True)
def _to_nchw_task(y2, bias, has_bias, out, t):
    """(Co, N*L) GEMM output -> (N, Co, L) for one (sample, channel), adding the bias."""
    co, length = out.shape[1], out.shape[2]
    b = t // co
    k = t - b * co
    src = y2[k, b * length:(b + 1) * length]
    dst = out[b, k]
    if has_bias:
        bk = bias[k]
        for p in range(length):
            dst[p] = src[p] + bk
    else:
        for p in range(length):
            dst[p] = src[p]


@njit(parallel=True, cache=True)
def _to_nchw_par(y2, bias, has_bias, out):
    for t in prange(out.shape[0] * out.shape[1]):
        _to_nchw_task(y2, bias, has_bias, out, t)


@njit(cache=True)
def _to_nchw_ser(y2, bias, has_bias, out):
    for t in range(out.shape[0] * out.shape[1]):
        _to_nchw_task(y2, bias, has_bias, out, t)


# reassoc lets the compiler split the bias-gradient sums into vector lanes (a different but
# equally accurate summation order); nothing else in these kernels is reordered.
@njit(cache=True, fastmath={"reassoc"})
def _to_cols_task(g, out, gb, k):
    """(N, Co, L) gradient -> row k of (Co, N*L), and the bias gradient of channel k."""
    n, length = g.shape[0], g.shape[2]
    s = 0.0  # float64 accumulator over N*L terms
    for b in range(n):
        src = g[b, k]
        if out.shape[0] > 0:
            dst = out[k, b * length:(b + 1) * length]
            for p in range(length):
                dst[p] = src[p]
        for p in range(length):
            s += src[p]
    gb[k] = s


@njit(parallel=True, cache=True)
def _to_cols_par(g, out, gb):
    for k in prange(g.shape[1]):
        _to_cols_task(g, out, gb, k)


@njit(cache=True)
def _to_cols_ser(g, out, gb):
    for k in range(g.shape[1]):
        _to_cols_task(g, out, gb, k)


_IM2COL = Drivers(_im2col_par, _im2col_ser)
_IM2COL_OFF = Drivers(_im2col_off_par, _im2col_off_ser)
_COL2IM = Drivers(_col2im_par, _col2im_ser)
_COL2IM_OFF = Drivers(_col2im_off_par, _col2im_off_ser)
_TO_NCHW = Drivers(_to_nchw_par, _to_nchw_ser)
_TO_COLS = Drivers(_to_cols_par, _to_cols_ser)


# ---- Python wrappers ------------------------------------------------------------------------
def im2col_t(x, kh, kw, sh, sw, ph, pw, kind="columns"):
    """(N, C, H, W) -> (C*kh*kw, N*OH*OW): every sample's columns side by side, ready for one
    GEMM with the (C_out, C*kh*kw) weight. The result comes from the scratch pool and belongs
    to the caller, who may give it back (``scratch.pool.give_back``) when done with it.
    ``kind``: the ``launch.THRESHOLDS`` entry that decides whether it runs in parallel."""
    if x.dtype not in FLOATS:
        col = generic.im2col(x, kh, kw, sh, sw, ph, pw)
        return col.transpose(1, 0, 2).reshape(col.shape[1], -1)
    x = contiguous(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = pool.take((c * kh * kw, n * oh * ow), x.dtype)
    par = parallel(out.size, kind)
    if ow < _SHORT_ROW:
        launch(_IM2COL_OFF, par, x, kh, kw, ph, pw, _offsets(w + 2 * pw, sh, sw, oh, ow), out)
    else:
        launch(_IM2COL, par, x, kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def col2im_t(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of ``im2col_t``: (C*kh*kw, N*OH*OW) -> (N, C, H, W)."""
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    if col.dtype not in FLOATS:
        col = col.reshape(col.shape[0], n, -1).transpose(1, 0, 2)
        return generic.col2im(col, x_shape, kh, kw, sh, sw, ph, pw)
    col = contiguous(col)
    out = np.empty((n, c, h, w), dtype=col.dtype)
    par = parallel(col.size, "columns")
    if ow < (_SHORT_ROW if ph == pw == 0 else _SHORT_PADDED_ROW):
        launch(_COL2IM_OFF, par, col, kh, kw, ph, pw, _offsets(w + 2 * pw, sh, sw, oh, ow), out)
    else:
        launch(_COL2IM, par, col, kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def im2col(x, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.im2col``: (N, C, H, W) -> (N, C*kh*kw, OH*OW)."""
    n = x.shape[0]
    col = im2col_t(x, kh, kw, sh, sw, ph, pw)
    out = col.reshape(col.shape[0], n, -1).transpose(1, 0, 2).copy()  # a copy: col goes back
    pool.give_back(col)
    return out


def col2im(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.col2im``."""
    n, k, length = col.shape
    return col2im_t(col.transpose(1, 0, 2).reshape(k, n * length), x_shape, kh, kw, sh, sw, ph, pw)


def cols_to_nchw(y2, bias, n, oh, ow, out=None):
    """(C_out, N*OH*OW) -> (N, C_out, OH, OW) plus the bias (None for none), into ``out`` (a
    C-contiguous array of that shape) when given."""
    co = y2.shape[0]
    if y2.dtype not in FLOATS:
        y = np.ascontiguousarray(y2.reshape(co, n, -1).transpose(1, 0, 2))
        if bias is not None:
            y += bias[:, None]
        if out is not None:
            out[...] = y.reshape(out.shape)
            return out
        return y.reshape(n, co, oh, ow)
    out = np.empty((n, co, oh * ow), dtype=y2.dtype) if out is None else out.reshape(n, co, -1)
    has_bias = bias is not None
    b = contiguous(bias).astype(y2.dtype, copy=False) if has_bias else np.zeros(1, y2.dtype)
    launch(_TO_NCHW, parallel(out.size, "columns"), contiguous(y2), b, has_bias, out)
    return out.reshape(n, co, oh, ow)


def nchw_to_cols(g, with_cols=True):
    """(N, C_out, OH, OW) -> ((C_out, N*OH*OW) or None, bias gradient (C_out,)). The columns come
    from the scratch pool and belong to the caller, as ``im2col_t``'s do."""
    n, co = g.shape[:2]
    if g.dtype not in FLOATS:
        g2 = g.reshape(n, co, -1).transpose(1, 0, 2).reshape(co, -1)
        return (g2 if with_cols else None), g2.sum(axis=1)
    g3 = contiguous(g).reshape(n, co, -1)
    out = pool.take((co, n * g3.shape[2]), g.dtype) if with_cols else np.empty((0, 0), g.dtype)
    gb = np.empty(co, dtype=g.dtype)
    launch(_TO_COLS, parallel(g3.size, "columns"), g3, out, gb)
    return (out if with_cols else None), gb


def bias_grad_nchw(g):
    """Sum of an (N, C, ...) gradient over every dim but the channel dim."""
    return nchw_to_cols(g, with_cols=False)[1]


# Inference runs im2col + GEMM over chunks of samples whose column matrix stays about this size
# (elements): in the caches, instead of one matrix for the batch that is written to memory and
# read back (LeNet-5 at batch 1000: 60 MB; ResNet-50's stem at batch 8: 59 MB).
INFER_CHUNK = 1 << 20


def conv2d_inference(x, w, bias, stride, padding):
    """im2col + GEMM convolution that keeps nothing for a backward pass, chunked over samples.
    A chunk of one sample multiplies straight into its NCHW output; larger chunks go through
    ``cols_to_nchw``."""
    (sh, sw), (ph, pw) = stride, padding
    x = contiguous(x)
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    w2 = contiguous(w).astype(x.dtype, copy=False).reshape(co, -1)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    chunk = max(1, INFER_CHUNK // (c * kh * kw * oh * ow))
    for s0 in range(0, n, chunk):
        xs = x[s0:s0 + chunk]
        col = im2col_t(xs, kh, kw, sh, sw, ph, pw, "chunk_columns")
        if xs.shape[0] == 1:
            y = out[s0].reshape(co, -1)
            np.matmul(w2, col, out=y)
            if bias is not None:
                y += bias[:, None]
        else:
            cols_to_nchw(w2 @ col, bias, xs.shape[0], oh, ow, out=out[s0:s0 + xs.shape[0]])
        pool.give_back(col)
    return out
