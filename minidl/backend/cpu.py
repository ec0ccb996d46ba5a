"""numba kernels for the CPU hot loops: im2col/col2im, max pooling, the conv output layout,
ReLU and softmax cross-entropy.

Every kernel is a module-level ``@njit(cache=True)`` function so a second process loads the
machine code from ``__pycache__`` instead of compiling it again; compilation is lazy (on the
first call for each dtype), and this module is only imported by ``backend.kernels`` on the first
op, so ``import minidl`` never pays for numba. Kernels take float32 or float64 (gradient checks
run in float64) and are handed C-contiguous arrays by the Python wrappers at the bottom.

Convolution layout: ``im2col_t`` writes the columns of the whole batch side by side,
``(C*kh*kw, N*OH*OW)``, so the forward pass and the weight gradient are each one large GEMM in
``numpy.matmul`` (BLAS), instead of N small ones. The price is a transpose of the GEMM output
into NCHW, which ``cols_to_nchw`` fuses with the bias add.
"""
from __future__ import annotations

import os
import sys
import threading

import numba
import numpy as np
from numba import njit, prange

from . import generic
from .generic import out_size

# numba's OpenMP layer keeps its threads spinning after each parallel loop, and numpy's BLAS
# (OpenBLAS, its own thread pool) then waits for cores those spinners hold: a 70 us matmul right
# after a kernel took milliseconds. The workqueue layer's threads sleep when idle. It is not
# safe to enter from two Python threads at once, so every parallel kernel runs under _launch.
# A layer the user chose (NUMBA_THREADING_LAYER) is left alone.
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"
_launch = threading.Lock()

# Below this many elements a prange launch costs more than the loop it splits.
_PARALLEL_MIN = 1 << 14


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


@njit(parallel=True, cache=True)
def _im2col_t(x, kh, kw, sh, sw, ph, pw, oh, ow, col):
    n, c, h, w = x.shape
    length = oh * ow
    # One (sample, channel) plane per task: it owns kh*kw rows of one column block, so no two
    # tasks write the same memory. Padding is handled here instead of by a padded copy of x.
    for nc in prange(n * c):
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
def _col2im_t(col, kh, kw, sh, sw, ph, pw, oh, ow, out):
    n, c, h, w = out.shape
    length = oh * ow
    # Each task owns one output plane, so the scatter-add needs no atomics.
    for nc in prange(n * c):
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


# ---- conv output layout --------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _cols_to_nchw(y2, bias, has_bias, out):
    """(Co, N*L) GEMM output -> (N, Co, L), adding the bias on the way."""
    n, co, length = out.shape
    for t in prange(n * co):
        b = t // co
        k = t - b * co
        src = y2[k, b * length:(b + 1) * length]
        dst = out[b, k]
        if has_bias:
            bk = bias[k]
            for p in range(length):
                dst[p] = src[p] + bk
        else:
            dst[:] = src


# reassoc lets the compiler split the bias-gradient sums into vector lanes (a different but
# equally accurate summation order); nothing else in these kernels is reordered.
@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _nchw_to_cols(g, out, gb):
    """(N, Co, L) gradient -> (Co, N*L) for the GEMMs, with the bias gradient summed on the way."""
    n, co, length = g.shape
    for k in prange(co):
        s = 0.0  # float64 accumulator: N*L terms
        for b in range(n):
            src = g[b, k]
            dst = out[k, b * length:(b + 1) * length]
            for p in range(length):
                v = src[p]
                dst[p] = v
                s += v
        gb[k] = s


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _sum_nl(g, gb):
    """Bias gradient of an (N, Co, L) gradient when no (Co, N*L) copy is needed."""
    n, co, length = g.shape
    for k in prange(co):
        s = 0.0
        for b in range(n):
            src = g[b, k]
            for p in range(length):
                s += src[p]
        gb[k] = s


# ---- max pooling ---------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _max_pool_fwd(x, kh, kw, sh, sw, ph, pw, y, arg):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    ninf = -np.inf
    for nc in prange(n * c):
        b = nc // c
        ci = nc - b * c
        src = x[b, ci]
        for oy in range(oh):
            for ox in range(ow):
                # Same winner as argmax over the window with padding read as -inf: the first
                # maximum, and the first NaN if there is one (NaN propagates as in PyTorch).
                best = ninf
                bi = -1
                for i in range(kh):
                    iy = oy * sh - ph + i
                    for j in range(kw):
                        ix = ox * sw - pw + j
                        v = ninf
                        if 0 <= iy < h and 0 <= ix < w:
                            v = src[np.uintp(iy), np.uintp(ix)]
                        if bi < 0 or v > best or (v != v and best == best):
                            best = v
                            bi = i * kw + j
                y[b, ci, oy, ox] = best
                arg[b, ci, oy, ox] = bi


@njit(parallel=True, cache=True)
def _max_pool_fwd_2x2(x, y, arg):
    """2x2 windows, stride 2, no padding: the common case, with the window unrolled."""
    n, c = x.shape[0], x.shape[1]
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n * c):
        b = nc // c
        ci = nc - b * c
        src = x[b, ci]
        dst = y[b, ci]
        am = arg[b, ci]
        for oy in range(oh):
            r0 = src[2 * oy]
            r1 = src[2 * oy + 1]
            for ox in range(ow):
                best = r0[2 * ox]
                bi = 0
                v = r0[2 * ox + 1]
                if v > best or (v != v and best == best):
                    best = v
                    bi = 1
                v = r1[2 * ox]
                if v > best or (v != v and best == best):
                    best = v
                    bi = 2
                v = r1[2 * ox + 1]
                if v > best or (v != v and best == best):
                    best = v
                    bi = 3
                dst[oy, ox] = best
                am[oy, ox] = bi


@njit(parallel=True, cache=True)
def _max_pool_bwd(gy, arg, kw, sh, sw, ph, pw, gx):
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    for nc in prange(n * c):
        b = nc // c
        ci = nc - b * c
        dst = gx[b, ci]
        dst[:, :] = 0
        g = gy[b, ci]
        a = arg[b, ci]
        for oy in range(oh):
            for ox in range(ow):
                k = a[oy, ox]
                iy = oy * sh - ph + k // kw
                ix = ox * sw - pw + k % kw
                if 0 <= iy < h and 0 <= ix < w:  # a winner in the padding gets no gradient
                    dst[np.uintp(iy), np.uintp(ix)] += g[oy, ox]


# ---- ReLU ----------------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _relu_fwd(x, y):
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for i in prange(xf.size):
        v = xf[i]
        if v > 0 or v != v:  # NaN passes through, as in np.maximum
            yf[i] = v
        else:
            yf[i] = 0


@njit(parallel=True, cache=True)
def _relu_bwd(g, y, gx):
    gf = g.reshape(-1)
    yf = y.reshape(-1)
    gxf = gx.reshape(-1)
    for i in prange(gf.size):
        if yf[i] > 0:
            gxf[i] = gf[i]
        else:
            gxf[i] = 0


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


# ---- Python wrappers (the kernel set ``backend.kernels(numpy)`` returns) --------------------
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _c(a):
    return np.ascontiguousarray(a)


def _run(kernel, *args):
    with _launch:
        kernel(*args)


class _ScratchPool:
    """Reuses large work buffers (im2col columns, their gradients) between steps of the same
    shape instead of asking the allocator for fresh pages each time.

    A buffer is handed out again only when nothing outside the pool refers to it any more
    (checked with the reference count, which views of the buffer also raise), so a column
    matrix saved for a pending backward pass is never overwritten.
    """

    def __init__(self, max_bytes=256 << 20):
        self.buffers = []
        self.max_bytes = max_bytes
        self.lock = threading.Lock()

    def get(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        with self.lock:
            best = None
            for buf in self.buffers:
                # 3 references: the list, the loop variable and getrefcount's argument
                if buf.nbytes >= nbytes and sys.getrefcount(buf) <= 3:
                    if best is None or buf.nbytes < best.nbytes:
                        best = buf
            if best is None:
                best = np.empty(nbytes, dtype=np.uint8)
                self.buffers.append(best)
                self._trim()
            return best[:nbytes].view(dtype).reshape(shape)

    def _trim(self):
        total = sum(b.nbytes for b in self.buffers)
        for buf in list(self.buffers):
            if total <= self.max_bytes:
                break
            if sys.getrefcount(buf) <= 3:
                self.buffers.remove(buf)
                total -= buf.nbytes


_pool = _ScratchPool()


def im2col_t(x, kh, kw, sh, sw, ph, pw):
    """(N, C, H, W) -> (C*kh*kw, N*OH*OW): every sample's columns side by side, ready for one
    GEMM with the (C_out, C*kh*kw) weight."""
    if x.dtype not in _FLOATS:
        col = generic.im2col(x, kh, kw, sh, sw, ph, pw)
        return col.transpose(1, 0, 2).reshape(col.shape[1], -1)
    x = _c(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = _pool.get((c * kh * kw, n * oh * ow), x.dtype)
    _run(_im2col_t, x, kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def col2im_t(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of ``im2col_t``: (C*kh*kw, N*OH*OW) -> (N, C, H, W)."""
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    if col.dtype not in _FLOATS:
        col = col.reshape(col.shape[0], n, -1).transpose(1, 0, 2)
        return generic.col2im(col, x_shape, kh, kw, sh, sw, ph, pw)
    out = np.empty((n, c, h, w), dtype=col.dtype)
    _run(_col2im_t, _c(col), kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def im2col(x, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.im2col``: (N, C, H, W) -> (N, C*kh*kw, OH*OW)."""
    n = x.shape[0]
    col = im2col_t(x, kh, kw, sh, sw, ph, pw)
    return np.ascontiguousarray(col.reshape(col.shape[0], n, -1).transpose(1, 0, 2))


def col2im(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.col2im``."""
    n, k, length = col.shape
    return col2im_t(col.transpose(1, 0, 2).reshape(k, n * length), x_shape, kh, kw, sh, sw, ph, pw)


def cols_to_nchw(y2, bias, n, oh, ow):
    """(C_out, N*OH*OW) -> (N, C_out, OH, OW) plus the bias (None for none)."""
    co = y2.shape[0]
    if y2.dtype not in _FLOATS:
        y = np.ascontiguousarray(y2.reshape(co, n, -1).transpose(1, 0, 2))
        if bias is not None:
            y += bias[:, None]
        return y.reshape(n, co, oh, ow)
    out = np.empty((n, co, oh * ow), dtype=y2.dtype)
    if bias is None:
        _run(_cols_to_nchw, _c(y2), np.zeros(1, y2.dtype), False, out)
    else:
        _run(_cols_to_nchw, _c(y2), _c(bias).astype(y2.dtype, copy=False), True, out)
    return out.reshape(n, co, oh, ow)


def nchw_to_cols(g):
    """(N, C_out, OH, OW) -> ((C_out, N*OH*OW), bias gradient (C_out,))."""
    n, co = g.shape[:2]
    if g.dtype not in _FLOATS:
        g2 = g.reshape(n, co, -1).transpose(1, 0, 2).reshape(co, -1)
        return g2, g2.sum(axis=1)
    g3 = _c(g).reshape(n, co, -1)
    out = _pool.get((co, n * g3.shape[2]), g.dtype)
    gb = np.empty(co, dtype=g.dtype)
    _run(_nchw_to_cols, g3, out, gb)
    return out, gb


def bias_grad_nchw(g):
    """Sum of an (N, C, ...) gradient over every dim but the channel dim."""
    n, co = g.shape[:2]
    if g.dtype not in _FLOATS:
        return g.reshape(n, co, -1).sum(axis=(0, 2))
    gb = np.empty(co, dtype=g.dtype)
    _run(_sum_nl, _c(g).reshape(n, co, -1), gb)
    return gb


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Returns (y, argmax) with argmax the flat index i*kw+j of the winner (int32), as generic."""
    if x.dtype not in _FLOATS:
        return generic.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
    x = _c(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        _run(_max_pool_fwd_2x2, x, y, arg)
    else:
        _run(_max_pool_fwd, x, kh, kw, sh, sw, ph, pw, y, arg)
    return y, arg


def max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    if gy.dtype not in _FLOATS:
        return generic.max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw)
    gx = np.empty(x_shape, dtype=gy.dtype)
    _run(_max_pool_bwd, _c(gy), _c(arg).astype(np.int32, copy=False), kw, sh, sw, ph, pw, gx)
    return gx


def relu_forward(x):
    if x.size < _PARALLEL_MIN or x.dtype not in _FLOATS:
        return np.maximum(x, 0)
    x = _c(x)
    y = np.empty_like(x)
    _run(_relu_fwd, x, y)
    return y


def relu_backward(g, y):
    """Gradient of ReLU from its output: y > 0 exactly where the input was > 0."""
    if g.size < _PARALLEL_MIN or g.dtype not in _FLOATS or g.dtype != y.dtype:
        return g * (y > 0)
    g, y = _c(g), _c(y)
    gx = np.empty_like(g)
    _run(_relu_bwd, g, y, gx)
    return gx


def softmax_cross_entropy(logits, target):
    """(per-row losses, softmax probabilities) of logits (N, C) against class indices (N,)."""
    if logits.dtype not in _FLOATS:
        logits = logits.astype(np.float64)
    logits = _c(logits)
    prob = np.empty_like(logits)
    losses = np.empty(logits.shape[0], dtype=logits.dtype)
    _softmax_xent(logits, _c(target), prob, losses)
    return losses, prob


def softmax_cross_entropy_backward(prob, target, scale):
    """(softmax - one_hot(target)) * scale, with scale a scalar or one value per row."""
    scale = np.ascontiguousarray(np.asarray(scale, dtype=prob.dtype).reshape(-1))
    grad = np.empty_like(prob)
    _softmax_xent_bwd(prob, _c(target), scale, grad)
    return grad
