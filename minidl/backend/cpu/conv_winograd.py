"""Winograd F(2x2, 3x3) convolution, for inference.

A 3x3 stride-1 convolution computed on 2x2 output tiles: each 4x4 input tile d becomes
V = B^T d B, each filter g becomes U = G g G^T, and the 16 elementwise products U * V (summed
over input channels) are 16 GEMMs (C_out x C_in) @ (C_in x tiles) that BLAS runs in one batched
matmul. That is 16 multiplies per 4 outputs instead of 36: the GEMM work drops 2.25x, for
ResNet-50's 3x3 layers the bulk of the time. B, G and A hold only 0, +-1 and 1/2, so the
transforms are exact in binary except for rounding of the sums (PyTorch's oneDNN offers the same
algorithm). Used when no gradient is needed: training keeps im2col, whose column matrix the
weight gradient reuses.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .launch import Drivers, contiguous, launch, parallel
from .scratch import pool

@njit(cache=True)
def _g_times(a0, a1, a2, d0, d1, d2, d3, nb):
    """(d0, d1, d2, d3) = G (a0, a1, a2) for nb filters at once: G's rows are (1, 0, 0),
    (1/2, 1/2, 1/2), (1/2, -1/2, 1/2) and (0, 0, 1)."""
    half = d0.dtype.type(0.5)
    for i in range(nb):
        k = np.uintp(i)
        d0[k] = a0[k]
        d1[k] = half * (a0[k] + a1[k] + a2[k])
        d2[k] = half * (a0[k] - a1[k] + a2[k])
        d3[k] = a2[k]


@njit(cache=True)
def _wino_filter(w, u):
    """U = G g G^T for every 3x3 filter g of w (C_out, C_in, 3, 3), into u (16, C_out * C_in).
    Filters go 512 at a time: gathered tap by tap into a (9, 512) block, so that every step of
    the transform is a loop over 512 filters that LLVM vectorises and every row of u is written
    512 values at a time (0.83 -> 0.29-0.43 ms for 256x256 filters; one filter at a time, with
    each filter's 16 values written to 16 rows far apart, ran 7x slower still)."""
    wf = w.reshape(-1, 9)
    nf = wf.shape[0]
    nblk = 512
    g = np.empty((9, nblk), dtype=u.dtype)
    t = np.empty((12, nblk), dtype=u.dtype)  # G g: row r of it is t[3*r], t[3*r + 1], t[3*r + 2]
    for f0 in range(0, nf, nblk):
        nb = min(nblk, nf - f0)
        for i in range(nb):
            for j in range(9):
                g[j, i] = wf[f0 + i, j]
        for j in range(3):  # G down tap column j (taps j, 3 + j, 6 + j)
            _g_times(g[j], g[3 + j], g[6 + j], t[j], t[3 + j], t[6 + j], t[9 + j], nb)
        for r in range(4):  # then each row of G g times G^T
            _g_times(t[3 * r], t[3 * r + 1], t[3 * r + 2], u[4 * r, f0:f0 + nb],
                     u[4 * r + 1, f0:f0 + nb], u[4 * r + 2, f0:f0 + nb], u[4 * r + 3, f0:f0 + nb],
                     nb)


@njit(cache=True)
def _wino_in_task(x, ph, pw, th, tw, v, b0, t, nblk):
    """Input tiles of sample b0 + t // nblk, for its t % nblk-th block of channels."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    bl = t // nblk
    blk = t - bl * nblk
    b = b0 + bl
    hp, wp = 2 * th + 2, 2 * tw + 2
    plane = np.zeros(hp * wp, dtype=x.dtype)  # zero padding around the image, and past it
    rows = np.empty((4, wp), dtype=x.dtype)
    r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
    p0 = bl * th * tw
    for ci in range(blk * c // nblk, (blk + 1) * c // nblk):
        src = x[b, ci]
        for yy in range(h):
            o = (yy + ph) * wp + pw
            for xx in range(w):
                plane[np.uintp(o + xx)] = src[yy, xx]
        for ty in range(th):
            o = 2 * ty * wp
            for xx in range(wp):  # B^T on the four input rows of this band
                d0 = plane[np.uintp(o + xx)]
                d1 = plane[np.uintp(o + wp + xx)]
                d2 = plane[np.uintp(o + 2 * wp + xx)]
                d3 = plane[np.uintp(o + 3 * wp + xx)]
                r0[xx] = d0 - d2
                r1[xx] = d1 + d2
                r2[xx] = d2 - d1
                r3[xx] = d1 - d3
            base = p0 + ty * tw
            for a in range(4):  # then B on each tile's four columns
                r = rows[a]
                for tx in range(tw):
                    e0 = r[2 * tx]
                    e1 = r[2 * tx + 1]
                    e2 = r[2 * tx + 2]
                    e3 = r[2 * tx + 3]
                    q = np.uintp(base + tx)
                    v[4 * a, ci, q] = e0 - e2
                    v[4 * a + 1, ci, q] = e1 + e2
                    v[4 * a + 2, ci, q] = e2 - e1
                    v[4 * a + 3, ci, q] = e1 - e3


@njit(cache=True)
def _wino_out_task(m, bias, has_bias, out, th, tw, b0, t, nblk):
    """Output tiles of sample b0 + t // nblk, for its t % nblk-th block of channels."""
    co, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    bl = t // nblk
    blk = t - bl * nblk
    b = b0 + bl
    u = np.empty((4, 2, tw), dtype=out.dtype)
    row0 = np.empty(2 * tw, dtype=out.dtype)
    row1 = np.empty(2 * tw, dtype=out.dtype)
    p0 = bl * th * tw
    for k in range(blk * co // nblk, (blk + 1) * co // nblk):
        bk = bias[k] if has_bias else 0.0
        dst = out[b, k]
        for ty in range(th):
            base = p0 + ty * tw
            for a in range(4):  # A^T along each tile row...
                for tx in range(tw):
                    q = np.uintp(base + tx)
                    m0 = m[4 * a, k, q]
                    m1 = m[4 * a + 1, k, q]
                    m2 = m[4 * a + 2, k, q]
                    m3 = m[4 * a + 3, k, q]
                    u[a, 0, tx] = m0 + m1 + m2
                    u[a, 1, tx] = m1 - m2 - m3
            for tx in range(tw):  # ...then down the columns: the 2x2 outputs of each tile
                row0[2 * tx] = u[0, 0, tx] + u[1, 0, tx] + u[2, 0, tx] + bk
                row0[2 * tx + 1] = u[0, 1, tx] + u[1, 1, tx] + u[2, 1, tx] + bk
                row1[2 * tx] = u[1, 0, tx] - u[2, 0, tx] - u[3, 0, tx] + bk
                row1[2 * tx + 1] = u[1, 1, tx] - u[2, 1, tx] - u[3, 1, tx] + bk
            y = 2 * ty
            dst[y, :] = row0[:ow]
            if y + 1 < oh:  # an odd output height leaves the last tile half outside
                dst[y + 1, :] = row1[:ow]


@njit(parallel=True, cache=True)
def _wino_in_par(x, ph, pw, th, tw, v, b0, nb, nblk):
    for t in prange(nb * nblk):
        _wino_in_task(x, ph, pw, th, tw, v, b0, t, nblk)


@njit(cache=True)
def _wino_in_ser(x, ph, pw, th, tw, v, b0, nb, nblk):
    for t in range(nb * nblk):
        _wino_in_task(x, ph, pw, th, tw, v, b0, t, nblk)


@njit(parallel=True, cache=True)
def _wino_out_par(m, bias, has_bias, out, th, tw, b0, nb, nblk):
    for t in prange(nb * nblk):
        _wino_out_task(m, bias, has_bias, out, th, tw, b0, t, nblk)


@njit(cache=True)
def _wino_out_ser(m, bias, has_bias, out, th, tw, b0, nb, nblk):
    for t in range(nb * nblk):
        _wino_out_task(m, bias, has_bias, out, th, tw, b0, t, nblk)


_WINO_IN = Drivers(_wino_in_par, _wino_in_ser)
_WINO_OUT = Drivers(_wino_out_par, _wino_out_ser)

# Samples go through the three Winograd stages in chunks of at least this many tiles: enough
# columns for BLAS to run at full speed, few enough that V and M stay in the caches.
WINO_TILES = 768


def conv2d_winograd(x, w, bias, ph, pw):
    """3x3 stride-1 convolution by Winograd F(2x2, 3x3)."""
    x = contiguous(x)
    dt = x.dtype
    n, c, h, wd = x.shape
    co = w.shape[0]
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    u = np.empty((16, co, c), dtype=dt)
    _wino_filter(contiguous(w).astype(dt, copy=False), u.reshape(16, -1))
    has_bias = bias is not None
    b = contiguous(bias).astype(dt, copy=False) if has_bias else np.zeros(1, dt)
    out = np.empty((n, co, oh, ow), dtype=dt)
    chunk = min(n, -(-WINO_TILES // (th * tw)))
    for b0 in range(0, n, chunk):
        nb = min(chunk, n - b0)
        tiles = nb * th * tw
        v = pool.take((16, c, tiles), dt)
        m = pool.take((16, co, tiles), dt)
        par = parallel(16 * c * tiles, "winograd")
        nblk = 4 if par else 1  # channel blocks per sample: work for both threads at batch 1
        launch(_WINO_IN, par, x, ph, pw, th, tw, v, b0, nb, nblk)
        np.matmul(u, v, out=m)
        launch(_WINO_OUT, par, m, b, has_bias, out, th, tw, b0, nb, nblk)
        pool.give_back(v)
        pool.give_back(m)
    return out
