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
    # the mean rounded to x's dtype (x - mu_r is exact for x near it), its rounding put back
    # in the constant term: b*(x - mu) = b*(x - mu_r) + b*(mu_r - mu)
    mut = t(mu)
    b = -a * inv * inv * q / count
    at, bt, ct = t(a), t(b), t(-a * s / count + b * (np.float64(mut) - mu))
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


# ---- short rows: blocks of channels ----------------------------------------------------
# Where a channel's rows are short (ResNet-50's last stages: 4x4 to 8x8 planes), a loop over one
# row of 16-64 values runs mostly in its scalar remainder, and the per-channel loops above took
# 6x PyTorch's time. There, a task is a block of whole channels [c0, c1): in sample i they are
# one contiguous run of (c1 - c0) * hw values, so every pass is one long vectorised loop per
# sample, with per-position float64 sums (added up per channel once at the end) and the
# per-channel coefficients spread out to per-position arrays.
SHORT_ROWS = 100  # planes below this many values (up to 9x9) take the channel-block kernels
BLOCK_VALUES = 2048  # values per sample in a block of channels


@njit(cache=True)
def _spread(values, hw, out):
    """out[k*hw + p] = values[k] for the channels of a block."""
    for k in range(values.size):
        v = values[k]
        for p in range(hw):
            out[np.uintp(k * hw + p)] = v


@njit(cache=True, fastmath=_REASSOC)
def _segment_sums(a, hw, k):
    s = 0.0
    for p in range(k * hw, (k + 1) * hw):
        s += a[np.uintp(p)]
    return s


@njit(cache=True)
def _block_bounds(x2, hw, blk, cb):
    """Channels [c0, c1) of block ``blk`` (of ``cb`` channels), and where they start in a row
    of x2 (samples by C*hw) and how many values they take there."""
    c0 = blk * cb
    c1 = min(c0 + cb, x2.shape[1] // hw)
    return c0, c1, c0 * hw, (c1 - c0) * hw


@njit(cache=True)
def _block_count(x2, hw, cb):
    return (x2.shape[1] // hw + cb - 1) // cb


@njit(cache=True, fastmath=_REASSOC)
def _forward_block(x2, y2, hw, blk, cb, w, b, has_w, has_b, eps, relu, mean, invstd, bvar):
    n = x2.shape[0]
    c0, c1, base, size = _block_bounds(x2, hw, blk, cb)
    shifts = np.empty(c1 - c0, np.float64)
    for k in range(c1 - c0):
        shifts[k] = x2[0, (c0 + k) * hw]
    shift = np.empty(size, np.float64)
    _spread(shifts, hw, shift)
    s = np.zeros(size, np.float64)
    q = np.zeros(size, np.float64)
    for i in range(n):
        row = x2[i, base:base + size]
        for j in range(size):
            k = np.uintp(j)
            d = np.float64(row[k]) - shift[k]
            s[k] += d
            q[k] += d * d
    count = n * hw
    a_c = np.empty(c1 - c0, x2.dtype)
    b_c = np.empty(c1 - c0, x2.dtype)
    for k in range(c1 - c0):
        ch = c0 + k
        d = _segment_sums(s, hw, k) / count
        var = max(_segment_sums(q, hw, k) / count - d * d, 0.0)
        mu = shifts[k] + d
        inv = 1.0 / np.sqrt(var + eps)
        a = inv * w[ch] if has_w else inv
        mean[ch], invstd[ch], bvar[ch] = mu, inv, var
        a_c[k] = a
        b_c[k] = (b[ch] if has_b else 0.0) - mu * a
    a_rep = np.empty(size, x2.dtype)
    b_rep = np.empty(size, x2.dtype)
    _spread(a_c, hw, a_rep)
    _spread(b_c, hw, b_rep)
    for i in range(n):
        _affine_rows(x2[i, base:base + size], y2[i, base:base + size], a_rep, b_rep, relu)


@njit(cache=True)
def _affine_rows(src, dst, a, b, relu):
    """dst = src * a + b elementwise (a, b per position), then the ReLU where asked."""
    if relu:
        for p in range(src.size):
            k = np.uintp(p)
            v = src[k] * a[k] + b[k]
            dst[k] = 0 if v < 0 else v
    else:
        for p in range(src.size):
            k = np.uintp(p)
            dst[k] = src[k] * a[k] + b[k]


@njit(parallel=True, cache=True)
def _forward_block_par(x2, y2, hw, cb, w, b, has_w, has_b, eps, relu, mean, invstd, bvar):
    for blk in prange(_block_count(x2, hw, cb)):
        _forward_block(x2, y2, hw, blk, cb, w, b, has_w, has_b, eps, relu, mean, invstd, bvar)


@njit(cache=True)
def _forward_block_ser(x2, y2, hw, cb, w, b, has_w, has_b, eps, relu, mean, invstd, bvar):
    for blk in range(_block_count(x2, hw, cb)):
        _forward_block(x2, y2, hw, blk, cb, w, b, has_w, has_b, eps, relu, mean, invstd, bvar)


@njit(cache=True, fastmath=_REASSOC)
def _backward_block(g2, x2, y2, hw, blk, cb, mean, invstd, w, has_w, relu, gx2, gw, gb):
    n = x2.shape[0]
    t = x2.dtype.type
    c0, c1, base, size = _block_bounds(x2, hw, blk, cb)
    # The per-position sums run in the activation's dtype, over the batch only (n values
    # each), and are added up per channel in float64. They are taken about the mean rounded to
    # that dtype (m_r), where x - m_r is exact for x near the mean; the rounding of the mean
    # (e = m_r - mean) is put back exactly per channel: sum g*(x - mean) = sum g*(x - m_r)
    # + e*sum g, and in the input gradient b*(x - mean) = b*(x - m_r) + b*e.
    mean_r = np.empty(c1 - c0, x2.dtype)
    for k in range(c1 - c0):
        mean_r[k] = t(mean[c0 + k])
    mu = np.empty(size, x2.dtype)
    _spread(mean_r, hw, mu)
    s = np.zeros(size, x2.dtype)
    q = np.zeros(size, x2.dtype)
    for i in range(n):
        g = g2[i, base:base + size]
        x = x2[i, base:base + size]
        if relu:
            y = y2[i, base:base + size]
            for j in range(size):
                k = np.uintp(j)
                gi = g[k] if y[k] > 0 else t(0)
                s[k] += gi
                q[k] += gi * (x[k] - mu[k])
        else:
            for j in range(size):
                k = np.uintp(j)
                gi = g[k]
                s[k] += gi
                q[k] += gi * (x[k] - mu[k])
    count = n * hw
    coef = np.empty((4, c1 - c0), x2.dtype)
    for k in range(c1 - c0):
        ch = c0 + k
        e = np.float64(mean_r[k]) - mean[ch]
        sk = _segment_sums(s, hw, k)
        qk = _segment_sums(q, hw, k) + e * sk
        inv = np.float64(invstd[ch])
        a = inv * w[ch] if has_w else inv
        gw[ch], gb[ch] = qk * inv, sk
        b = -a * inv * inv * qk / count
        coef[0, k], coef[1, k] = a, b
        coef[2, k], coef[3, k] = -a * sk / count + b * e, mean_r[k]
    reps = np.empty((4, size), x2.dtype)
    for r in range(4):
        _spread(coef[r], hw, reps[r])
    for i in range(n):
        _input_grad_rows(g2[i, base:base + size], x2[i, base:base + size],
                         y2[i, base:base + size], gx2[i, base:base + size], reps, relu)


@njit(cache=True)
def _input_grad_rows(g, x, y, gx, reps, relu):
    a, b, c, mu = reps[0], reps[1], reps[2], reps[3]
    if relu:
        for p in range(g.size):
            k = np.uintp(p)
            gi = g[k] if y[k] > 0 else 0
            gx[k] = a[k] * gi + b[k] * (x[k] - mu[k]) + c[k]
    else:
        for p in range(g.size):
            k = np.uintp(p)
            gx[k] = a[k] * g[k] + b[k] * (x[k] - mu[k]) + c[k]


@njit(parallel=True, cache=True)
def _backward_block_par(g2, x2, y2, hw, cb, mean, invstd, w, has_w, relu, gx2, gw, gb):
    for blk in prange(_block_count(x2, hw, cb)):
        _backward_block(g2, x2, y2, hw, blk, cb, mean, invstd, w, has_w, relu, gx2, gw, gb)


@njit(cache=True)
def _backward_block_ser(g2, x2, y2, hw, cb, mean, invstd, w, has_w, relu, gx2, gw, gb):
    for blk in range(_block_count(x2, hw, cb)):
        _backward_block(g2, x2, y2, hw, blk, cb, mean, invstd, w, has_w, relu, gx2, gw, gb)


_FORWARD = Drivers(_forward_par, _forward_ser)
_BACKWARD = Drivers(_backward_par, _backward_ser)
_FORWARD_BLOCKS = Drivers(_forward_block_par, _forward_block_ser)
_BACKWARD_BLOCKS = Drivers(_backward_block_par, _backward_block_ser)


def _channel_block(c, hw):
    """Channels per block for planes of hw values (short rows only)."""
    return max(1, min(c, BLOCK_VALUES // hw))


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
    hw = x3.shape[2]
    if hw < SHORT_ROWS:
        cb = _channel_block(c, hw)
        launch(_FORWARD_BLOCKS, c > cb and parallel(x3.size, "batchnorm"),
               x3.reshape(x3.shape[0], -1), y3.reshape(x3.shape[0], -1), hw, cb, w, b,
               weight is not None, bias is not None, float(eps), bool(relu), mean, invstd, bvar)
    else:
        launch(_FORWARD, c > 1 and parallel(x3.size, "batchnorm"), x3, y3, w, b,
               weight is not None, bias is not None, float(eps), bool(relu), mean, invstd, bvar)
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
    mean, invstd = np.asarray(mean, np.float64), np.asarray(invstd, np.float64)
    hw = x3.shape[2]
    if hw < SHORT_ROWS:
        cb = _channel_block(c, hw)
        n = x3.shape[0]
        launch(_BACKWARD_BLOCKS, c > cb and parallel(x3.size, "batchnorm_grad"), g3.reshape(n, -1),
               x3.reshape(n, -1), y3.reshape(n, -1), hw, cb, mean, invstd, w, weight is not None,
               bool(relu), gx3.reshape(n, -1), gw, gb)
    else:
        launch(_BACKWARD, c > 1 and parallel(x3.size, "batchnorm_grad"), g3, x3, y3, mean, invstd, w,
               weight is not None, bool(relu), gx3, gw, gb)
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


@njit(cache=True)
def _affine_block(x2, y2, hw, blk, cb, scale, shift, relu):
    c0, c1, base, size = _block_bounds(x2, hw, blk, cb)
    a_rep = np.empty(size, x2.dtype)
    b_rep = np.empty(size, x2.dtype)
    _spread(scale[c0:c1], hw, a_rep)
    _spread(shift[c0:c1], hw, b_rep)
    for i in range(x2.shape[0]):
        _affine_rows(x2[i, base:base + size], y2[i, base:base + size], a_rep, b_rep, relu)


@njit(parallel=True, cache=True)
def _affine_block_par(x2, y2, hw, cb, scale, shift, relu):
    for blk in prange(_block_count(x2, hw, cb)):
        _affine_block(x2, y2, hw, blk, cb, scale, shift, relu)


@njit(cache=True)
def _affine_block_ser(x2, y2, hw, cb, scale, shift, relu):
    for blk in range(_block_count(x2, hw, cb)):
        _affine_block(x2, y2, hw, blk, cb, scale, shift, relu)


_AFFINE = Drivers(_affine_par, _affine_ser)
_AFFINE_BLOCKS = Drivers(_affine_block_par, _affine_block_ser)


def channel_affine(x, scale, shift, relu=False):
    """y = x * scale[c] + shift[c] per channel (dim 1), then max(y, 0) when ``relu``: eval-mode
    batch norm (with the following ReLU) in one pass."""
    x3 = _as3(x)
    y3 = np.empty_like(x3)
    scale = np.ascontiguousarray(scale, dtype=x3.dtype)
    shift = np.ascontiguousarray(shift, dtype=x3.dtype)
    n, c, hw = x3.shape
    if hw < SHORT_ROWS:
        cb = _channel_block(c, hw)
        launch(_AFFINE_BLOCKS, c > cb and parallel(x3.size, "batchnorm"), x3.reshape(n, -1),
               y3.reshape(n, -1), hw, cb, scale, shift, bool(relu))
    else:
        launch(_AFFINE, n * c > 1 and parallel(x3.size, "batchnorm"), x3, y3, scale, shift,
               bool(relu))
    return y3.reshape(x.shape)
