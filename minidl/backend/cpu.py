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

import sys

import numpy as np
from numba import njit, prange

from .generic import out_size

# Below this many elements a prange launch costs more than the loop it splits.
_PARALLEL_MIN = 1 << 14


# ---- im2col / col2im ----------------------------------------------------------------------
@njit(cache=True, inline="always")
def _valid_cols(j, w, sw, pw, ow):
    """Output columns [x0, x1) whose input column xx*sw - pw + j lies inside [0, w)."""
    x0 = 0
    if pw > j:
        x0 = (pw - j + sw - 1) // sw
    x1 = (w - 1 + pw - j) // sw + 1
    if x1 > ow:
        x1 = ow
    if x1 < x0:
        x1 = x0
    return x0, x1


@njit(parallel=True, cache=True)
def _im2col_t(x, kh, kw, sh, sw, ph, pw, oh, ow, col):
    n, c, h, w = x.shape
    length = oh * ow
    # One (sample, channel) plane per task: it owns kh*kw rows of one column block, so no two
    # tasks write the same memory. Padding is handled here instead of by a padded copy of x.
    for nc in prange(n * c):
        b = nc // c
        ci = nc - b * c
        for i in range(kh):
            for j in range(kw):
                r = (ci * kh + i) * kw + j
                x0, x1 = _valid_cols(j, w, sw, pw, ow)
                for y in range(oh):
                    iy = y * sh - ph + i
                    o = b * length + y * ow
                    if iy < 0 or iy >= h:
                        for xx in range(ow):
                            col[r, o + xx] = 0
                    else:
                        for xx in range(x0):
                            col[r, o + xx] = 0
                        for xx in range(x0, x1):
                            col[r, o + xx] = x[b, ci, iy, xx * sw - pw + j]
                        for xx in range(x1, ow):
                            col[r, o + xx] = 0


@njit(parallel=True, cache=True)
def _col2im_t(col, kh, kw, sh, sw, ph, pw, oh, ow, out):
    n, c, h, w = out.shape
    length = oh * ow
    # Each task owns one output plane, so the scatter-add needs no atomics.
    for nc in prange(n * c):
        b = nc // c
        ci = nc - b * c
        plane = out[b, ci]
        plane[:, :] = 0
        for i in range(kh):
            for j in range(kw):
                r = (ci * kh + i) * kw + j
                x0, x1 = _valid_cols(j, w, sw, pw, ow)
                for y in range(oh):
                    iy = y * sh - ph + i
                    if iy < 0 or iy >= h:
                        continue
                    o = b * length + y * ow
                    for xx in range(x0, x1):
                        plane[iy, xx * sw - pw + j] += col[r, o + xx]


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


@njit(parallel=True, cache=True)
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


@njit(parallel=True, cache=True)
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
                            v = src[iy, ix]
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
                    dst[iy, ix] += g[oy, ox]


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
def _c(a):
    return np.ascontiguousarray(a)


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

    def get(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
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


def im2col_t(x, kh, kw, sh, sw, ph, pw, out=None):
    """(N, C, H, W) -> (C*kh*kw, N*OH*OW): every sample's columns side by side, ready for one
    GEMM with the (C_out, C*kh*kw) weight."""
    x = _c(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    if out is None:
        out = _pool.get((c * kh * kw, n * oh * ow), x.dtype)
    _im2col_t(x, kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def col2im_t(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of ``im2col_t``: (C*kh*kw, N*OH*OW) -> (N, C, H, W)."""
    col = _c(col)
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = np.empty((n, c, h, w), dtype=col.dtype)
    _col2im_t(col, kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def im2col(x, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.im2col``: (N, C, H, W) -> (N, C*kh*kw, OH*OW)."""
    n = x.shape[0]
    col = im2col_t(x, kh, kw, sh, sw, ph, pw, out=None)
    k = col.shape[0]
    return np.ascontiguousarray(col.reshape(k, n, -1).transpose(1, 0, 2))


def col2im(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.col2im``."""
    n, k, length = col.shape
    return col2im_t(col.transpose(1, 0, 2).reshape(k, n * length), x_shape, kh, kw, sh, sw, ph, pw)


def cols_to_nchw(y2, bias, n, oh, ow):
    """(C_out, N*OH*OW) -> (N, C_out, OH, OW) plus the bias (None for none)."""
    co = y2.shape[0]
    out = np.empty((n, co, oh * ow), dtype=y2.dtype)
    if bias is None:
        _cols_to_nchw(_c(y2), np.zeros(1, y2.dtype), False, out)
    else:
        _cols_to_nchw(_c(y2), _c(bias).astype(y2.dtype, copy=False), True, out)
    return out.reshape(n, co, oh, ow)


def nchw_to_cols(g):
    """(N, C_out, OH, OW) -> ((C_out, N*OH*OW), bias gradient (C_out,))."""
    n, co = g.shape[:2]
    g3 = _c(g).reshape(n, co, -1)
    out = _pool.get((co, n * g3.shape[2]), g.dtype)
    gb = np.empty(co, dtype=g.dtype)
    _nchw_to_cols(g3, out, gb)
    return out, gb


def bias_grad_nchw(g):
    """Sum of an (N, C, ...) gradient over every dim but the channel dim."""
    n, co = g.shape[:2]
    gb = np.empty(co, dtype=g.dtype)
    _sum_nl(_c(g).reshape(n, co, -1), gb)
    return gb


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Returns (y, argmax) with argmax the flat index i*kw+j of the winner (int32), as generic."""
    x = _c(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        _max_pool_fwd_2x2(x, y, arg)
    else:
        _max_pool_fwd(x, kh, kw, sh, sw, ph, pw, y, arg)
    return y, arg


def max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    gx = np.empty(x_shape, dtype=gy.dtype)
    _max_pool_bwd(_c(gy), _c(arg), kw, sh, sw, ph, pw, gx)
    return gx


def relu_forward(x):
    if x.size < _PARALLEL_MIN:
        return np.maximum(x, 0)
    x = _c(x)
    y = np.empty_like(x)
    _relu_fwd(x, y)
    return y


def relu_backward(g, y):
    """Gradient of ReLU from its output: y > 0 exactly where the input was > 0."""
    if g.size < _PARALLEL_MIN:
        return g * (y > 0)
    g, y = _c(g), _c(y)
    gx = np.empty_like(g)
    _relu_bwd(g, y, gx)
    return gx


def softmax_cross_entropy(logits, target):
    """(per-row losses, softmax probabilities) of logits (N, C) against class indices (N,)."""
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
