"""Row-wise kernels: layer norm and softmax over the last dim, forward and backward, and the
scatter-add of rows that an embedding's weight gradient is.

The NumPy versions of these ops make four to eight passes over the activation, each through a
temporary; here each row (a few hundred values, in L1) is read two or three times and written
once, and rows run in parallel. A Transformer block calls each several times per step; in a
small encoder's training step on one core they were a fifth of the time.

Sums run in float64 (``fastmath`` reassociation only, so LLVM spreads them over vector lanes);
layer norm's variance is the mean of squares about the mean, two passes, so a large offset does
not cancel it. float32 softmax uses ``activations.exp_f32`` (vectorised); float64 uses libm.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activations import exp_f32
from .launch import FLOATS, Drivers, contiguous, launch, parallel

_REASSOC = {"reassoc"}
_CHUNKS = 64  # row chunks of the parallel drivers (each accumulates its own weight gradients)


# ---- layer norm -----------------------------------------------------------------------------
# The weight and bias arrive as arrays always (ones and zeros where the op has none), and each
# loop stores to one array, so LLVM vectorises every loop without branches or many aliasing
# checks.
@njit(cache=True, fastmath=_REASSOC, error_model="numpy")
def _ln_fwd_rows(x, w, b, eps, y, mean, rstd, lo, hi):
    c = x.shape[1]
    for r in range(lo, hi):
        row, out = x[r], y[r]
        s = 0.0
        for j in range(c):
            s += np.float64(row[np.uintp(j)])
        mu = s / c
        q = 0.0
        for j in range(c):
            d = np.float64(row[np.uintp(j)]) - mu
            q += d * d
        inv = 1.0 / np.sqrt(q / c + eps)
        mean[r], rstd[r] = mu, inv
        m, a = row.dtype.type(mu), row.dtype.type(inv)
        for j in range(c):
            k = np.uintp(j)
            out[k] = (row[k] - m) * a * w[k] + b[k]


@njit(parallel=True, cache=True)
def _ln_fwd_par(x, w, b, eps, y, mean, rstd):
    n = x.shape[0]
    nt = min(n, _CHUNKS)
    for t in prange(nt):
        _ln_fwd_rows(x, w, b, eps, y, mean, rstd, t * n // nt, (t + 1) * n // nt)


@njit(cache=True)
def _ln_fwd_ser(x, w, b, eps, y, mean, rstd):
    _ln_fwd_rows(x, w, b, eps, y, mean, rstd, 0, x.shape[0])


@njit(cache=True, fastmath=_REASSOC, error_model="numpy")
def _ln_bwd_rows(g, x, w, mean, rstd, gx, want_gx, pw, pb, lo, hi):
    """Rows lo..hi: gx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)) with
    gxhat = g * w, and the rows' sums of g * xhat and of g added into pw and pb (float64)."""
    c = x.shape[1]
    for r in range(lo, hi):
        gr, xr = g[r], x[r]
        m, a = xr.dtype.type(mean[r]), xr.dtype.type(rstd[r])
        s1 = 0.0
        s2 = 0.0
        for j in range(c):
            k = np.uintp(j)
            gh = gr[k] * w[k]
            s1 += np.float64(gh)
            s2 += np.float64(gh * ((xr[k] - m) * a))
        for j in range(c):
            k = np.uintp(j)
            pw[k] += np.float64(gr[k] * ((xr[k] - m) * a))
        for j in range(c):
            k = np.uintp(j)
            pb[k] += np.float64(gr[k])
        if want_gx:
            out = gx[r]
            c1, c2 = xr.dtype.type(s1 / c), xr.dtype.type(s2 / c)
            for j in range(c):
                k = np.uintp(j)
                out[k] = a * (gr[k] * w[k] - c1 - (xr[k] - m) * a * c2)


@njit(parallel=True, cache=True)
def _ln_bwd_par(g, x, w, mean, rstd, gx, want_gx, pw, pb):
    n = x.shape[0]
    nt = pw.shape[0]
    for t in prange(nt):
        _ln_bwd_rows(g, x, w, mean, rstd, gx, want_gx, pw[t], pb[t], t * n // nt,
                     (t + 1) * n // nt)


@njit(cache=True)
def _ln_bwd_ser(g, x, w, mean, rstd, gx, want_gx, pw, pb):
    _ln_bwd_rows(g, x, w, mean, rstd, gx, want_gx, pw[0], pb[0], 0, x.shape[0])


_LN_FWD = Drivers(_ln_fwd_par, _ln_fwd_ser)
_LN_BWD = Drivers(_ln_bwd_par, _ln_bwd_ser)


def rows_fit(x, *params):
    """Whether the row kernels (layer norm, softmax) take x and the parameters given (None
    where absent): one float dtype they are compiled for."""
    return x.dtype in FLOATS and all(p is None or p.dtype == x.dtype for p in params)


def _param(p, c, dtype, fill):
    return np.full(c, fill, dtype) if p is None else contiguous(p.reshape(-1))


def layer_norm_forward(x2, w, b, eps):
    """Layer norm of each row of x2 (R, C), then * w + b (each of C values, or None):
    (y, mean, rstd), mean and rstd (R,) float64."""
    x2 = contiguous(x2)
    rows, c = x2.shape
    y = np.empty_like(x2)
    mean, rstd = np.empty(rows), np.empty(rows)
    launch(_LN_FWD, parallel(x2.size, "rows"), x2, _param(w, c, x2.dtype, 1),
           _param(b, c, x2.dtype, 0), float(eps), y, mean, rstd)
    return y, mean, rstd


def layer_norm_backward(g2, x2, w, mean, rstd, want_gx=True):
    """(gx or None, sum over rows of g * xhat, sum over rows of g) for layer_norm_forward's
    rows; the two sums are the weight's and the bias's gradients (C,), in x2's dtype."""
    g2, x2 = contiguous(g2), contiguous(x2)
    rows, c = x2.shape
    par = parallel(x2.size, "rows")
    chunks = max(min(rows, _CHUNKS), 1) if par else 1
    pw, pb = np.zeros((chunks, c)), np.zeros((chunks, c))
    gx = np.empty_like(x2) if want_gx else np.empty((0, c), x2.dtype)
    launch(_LN_BWD, par, g2, x2, _param(w, c, x2.dtype, 1), mean, rstd, gx, want_gx, pw, pb)
    return (gx if want_gx else None, pw.sum(axis=0).astype(x2.dtype),
            pb.sum(axis=0).astype(x2.dtype))


# ---- softmax over the last dim --------------------------------------------------------------
@njit(cache=True)
def _row_max(row):
    m = row[0]
    for j in range(1, row.shape[0]):
        v = row[np.uintp(j)]
        m = v if v > m else m  # NaN is skipped here, and makes its row NaN through exp
    return m


@njit(cache=True, fastmath=_REASSOC, error_model="numpy")
def _scale_row(out, s):
    inv = out.dtype.type(1.0 / s)
    for j in range(out.shape[0]):
        out[np.uintp(j)] *= inv


@njit(cache=True, fastmath=_REASSOC, error_model="numpy")
def _softmax_rows_f32(x, y, safe, lo, hi):
    for r in range(lo, hi):
        row, out = x[r], y[r]
        m = _row_max(row)
        if safe and m == -np.inf:  # every entry masked: zeros (scaled_dot_product_attention)
            out[:] = 0
            continue
        s = 0.0
        for j in range(row.shape[0]):
            k = np.uintp(j)
            e = exp_f32(row[k] - m)
            out[k] = e
            s += np.float64(e)
        _scale_row(out, s)


@njit(cache=True, fastmath=_REASSOC, error_model="numpy")
def _softmax_rows_f64(x, y, safe, lo, hi):
    for r in range(lo, hi):
        row, out = x[r], y[r]
        m = _row_max(row)
        if safe and m == -np.inf:
            out[:] = 0
            continue
        s = 0.0
        for j in range(row.shape[0]):
            k = np.uintp(j)
            e = np.exp(row[k] - m)
            out[k] = e
            s += e
        _scale_row(out, s)


@njit(parallel=True, cache=True)
def _softmax_f32_par(x, y, safe):
    n = x.shape[0]
    nt = min(n, _CHUNKS)
    for t in prange(nt):
        _softmax_rows_f32(x, y, safe, t * n // nt, (t + 1) * n // nt)


@njit(cache=True)
def _softmax_f32_ser(x, y, safe):
    _softmax_rows_f32(x, y, safe, 0, x.shape[0])


@njit(parallel=True, cache=True)
def _softmax_f64_par(x, y, safe):
    n = x.shape[0]
    nt = min(n, _CHUNKS)
    for t in prange(nt):
        _softmax_rows_f64(x, y, safe, t * n // nt, (t + 1) * n // nt)


@njit(cache=True)
def _softmax_f64_ser(x, y, safe):
    _softmax_rows_f64(x, y, safe, 0, x.shape[0])


@njit(cache=True, fastmath=_REASSOC, error_model="numpy")
def _softmax_bwd_rows(g, y, gx, lo, hi):
    c = y.shape[1]
    for r in range(lo, hi):
        gr, yr, out = g[r], y[r], gx[r]
        s = 0.0
        for j in range(c):
            k = np.uintp(j)
            s += np.float64(gr[k] * yr[k])
        st = yr.dtype.type(s)
        for j in range(c):
            k = np.uintp(j)
            out[k] = yr[k] * (gr[k] - st)


@njit(parallel=True, cache=True)
def _softmax_bwd_par(g, y, gx):
    n = y.shape[0]
    nt = min(n, _CHUNKS)
    for t in prange(nt):
        _softmax_bwd_rows(g, y, gx, t * n // nt, (t + 1) * n // nt)


@njit(cache=True)
def _softmax_bwd_ser(g, y, gx):
    _softmax_bwd_rows(g, y, gx, 0, y.shape[0])


_SOFTMAX = {np.dtype(np.float32): Drivers(_softmax_f32_par, _softmax_f32_ser),
            np.dtype(np.float64): Drivers(_softmax_f64_par, _softmax_f64_ser)}
_SOFTMAX_BWD = Drivers(_softmax_bwd_par, _softmax_bwd_ser)


def softmax_last(x, safe=False):
    """softmax over the last dim of a float32/float64 x with at least one element per row;
    ``safe``: a row of only -inf gives zeros instead of NaN."""
    x = contiguous(x)
    y = np.empty_like(x)
    c = x.shape[-1]
    launch(_SOFTMAX[x.dtype], parallel(x.size, "rows"), x.reshape(-1, c), y.reshape(-1, c),
           safe)
    return y


def softmax_last_backward(g, y):
    """The gradient of softmax over the last dim from its output y: y * (g - sum(g * y))."""
    g, y = contiguous(g), contiguous(y)
    gx = np.empty_like(y)
    c = y.shape[-1]
    launch(_SOFTMAX_BWD, parallel(y.size, "rows"), g.reshape(-1, c), y.reshape(-1, c),
           gx.reshape(-1, c))
    return gx


# ---- rows added at indices --------------------------------------------------------------------
@njit(cache=True)
def _add_rows(out, index, rows):
    c = rows.shape[1]
    for i in range(index.shape[0]):
        dst, src = out[index[i]], rows[i]
        for j in range(c):
            k = np.uintp(j)
            dst[k] += src[k]


def add_rows(out, index, rows):
    """out[index[i]] += rows[i] for each i (repeated indices summed, in order), out (V, C) and
    rows (N, C) of one float dtype, index (N,) integers within [-V, V)."""
    index = np.asarray(index)
    v = out.shape[0]
    if index.size and (index.min() < -v or index.max() >= v):
        raise IndexError(f"index out of range for {v} rows")
    if index.size and index.min() < 0:
        index = np.where(index < 0, index + v, index)
    _add_rows(out, contiguous(index.astype(np.int64, copy=False)), contiguous(rows))
