"""Max pooling, forward and backward; the winner of each window is kept as its flat index
i*kw + j (int32), as in the generic kernels."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import generic
from ..dtypes import is_low_precision
from ..generic import out_size
from .bits import keep
from .launch import FLOATS, Drivers, contiguous, launch, parallel

@njit(cache=True)
def _max_pool_task(x, kh, kw, sh, sw, ph, pw, y, arg, nc):
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    b = nc // c
    ci = nc - b * c
    src = x[b, ci]
    ninf = -np.inf
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


@njit(cache=True)
def _max_pool_edge(src, h, w, iy0, ix0, kh, kw):
    """The winner of a window that reaches into the padding (padding reads as -inf)."""
    ninf = -np.inf
    best = ninf
    bi = -1
    for i in range(kh):
        iy = iy0 + i
        for j in range(kw):
            ix = ix0 + j
            v = ninf
            if 0 <= iy < h and 0 <= ix < w:
                v = src[np.uintp(iy), np.uintp(ix)]
            if bi < 0 or v > best or (v != v and best == best):
                best = v
                bi = i * kw + j
    return best, bi


@njit(cache=True)
def _max_pool_3x3_task(x, sh, sw, ph, pw, y, arg, nc):
    """3x3 windows (ResNet's stem: stride 2, padding 1): the windows inside the plane take
    the nine taps unrolled, with selects instead of branches and no bounds checks, and NaNs by
    the row check of ``_max_pool_2x2_task``; the windows that reach into the padding take
    ``_max_pool_edge``. Same winners as ``_max_pool_task``."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    b = nc // c
    ci = nc - b * c
    src = x[b, ci]
    dst = y[b, ci]
    am = arg[b, ci]
    ox0 = (pw + sw - 1) // sw                    # first window whose columns are all inside
    ox1 = max(ox0, min(ow, (w - 3 + pw) // sw + 1))  # one past the last such window
    for oy in range(oh):
        iy = oy * sh - ph
        if iy < 0 or iy + 3 > h:
            for ox in range(ow):
                dst[oy, ox], am[oy, ox] = _max_pool_edge(src, h, w, iy, ox * sw - pw, 3, 3)
            continue
        for ox in range(ox0):
            dst[oy, ox], am[oy, ox] = _max_pool_edge(src, h, w, iy, ox * sw - pw, 3, 3)
        r0 = src[iy]
        r1 = src[iy + 1]
        r2 = src[iy + 2]
        drow = dst[oy]
        arow = am[oy]
        bad = np.int32(0)
        for ox in range(ox0, ox1):
            ix = np.uintp(ox * sw - pw)
            best = r0[ix]
            bi = 0
            z = best - best
            for t in range(1, 9):  # unrolled by LLVM: t is a constant range
                row = r0 if t < 3 else (r1 if t < 6 else r2)
                v = row[ix + np.uintp(t % 3)]
                take = v > best  # one comparison: no branches (see _max_pool_2x2_task)
                best = v if take else best
                bi = t if take else bi
                z += v - v
            bad |= np.int32(z != z)
            drow[ox] = best
            arow[ox] = bi
        if bad:  # a NaN or an infinity in the row: the exact rule, window by window
            for ox in range(ox0, ox1):
                dst[oy, ox], am[oy, ox] = _max_pool_edge(src, h, w, iy, ox * sw - pw, 3, 3)
        for ox in range(ox1, ow):
            dst[oy, ox], am[oy, ox] = _max_pool_edge(src, h, w, iy, ox * sw - pw, 3, 3)


@njit(cache=True)
def _max_pool_2x2_task(x, y, arg, nc):
    """2x2 windows, stride 2, no padding: the common case, with the window unrolled.

    Each tap is taken on one comparison, ``v > best``: the first maximum wins, and a NaN in the
    first tap stays. A NaN in a later tap must win too, but testing for it in every window
    (``v > best or (v != v and best == best)``) makes LLVM branch on AVX2 machines, where
    mispredictions on random data made this loop 5x slower than on AVX-512. So the row also
    sums ``v - v``, which is NaN only if some tap is NaN or infinite; such a row (rare) is done
    again window by window with the exact rule of ``_max_pool_edge``."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    b = nc // c
    ci = nc - b * c
    src = x[b, ci]
    dst = y[b, ci]
    am = arg[b, ci]
    one = np.uintp(1)
    for oy in range(oh):
        r0 = src[2 * oy]
        r1 = src[2 * oy + 1]
        drow = dst[oy]
        arow = am[oy]
        bad = np.int32(0)
        for ox in range(ow):
            ix = np.uintp(2 * ox)
            x1, x2, x3 = r0[ix + one], r1[ix], r1[ix + one]
            best = r0[ix]
            bi = np.int32(0)
            take = x1 > best
            best = x1 if take else best
            bi = np.int32(1) if take else bi
            take = x2 > best
            best = x2 if take else best
            bi = np.int32(2) if take else bi
            take = x3 > best
            best = x3 if take else best
            bi = np.int32(3) if take else bi
            z = (x1 - x1) + (x2 - x2) + (x3 - x3)
            bad |= np.int32(z != z)
            drow[ox] = best
            arow[ox] = bi
        if bad:
            for ox in range(ow):
                drow[ox], arow[ox] = _max_pool_edge(src, h, w, 2 * oy, 2 * ox, 2, 2)


@njit(cache=True)
def _max_pool_plane(x, kh, kw, sh, sw, ph, pw, y, arg, nc):
    """One (sample, channel) plane, by the task for its window: 2x2/2 and 3x3 windows have
    their own (3x3/2 with padding 1, ResNet's stem, is passed its geometry as constants, which
    LLVM folds into 2.5x faster code)."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        _max_pool_2x2_task(x, y, arg, nc)
    elif kh == 3 and kw == 3 and sh == 2 and sw == 2 and ph == 1 and pw == 1:
        _max_pool_3x3_task(x, 2, 2, 1, 1, y, arg, nc)
    elif kh == 3 and kw == 3:
        _max_pool_3x3_task(x, sh, sw, ph, pw, y, arg, nc)
    else:
        _max_pool_task(x, kh, kw, sh, sw, ph, pw, y, arg, nc)


@njit(parallel=True, cache=True)
def _max_pool_par(x, kh, kw, sh, sw, ph, pw, y, arg):
    for nc in prange(x.shape[0] * x.shape[1]):
        _max_pool_plane(x, kh, kw, sh, sw, ph, pw, y, arg, nc)


@njit(cache=True)
def _max_pool_ser(x, kh, kw, sh, sw, ph, pw, y, arg):
    for nc in range(x.shape[0] * x.shape[1]):
        _max_pool_plane(x, kh, kw, sh, sw, ph, pw, y, arg, nc)


@njit(cache=True)
def _max_pool_bwd_task(gy, arg, kw, sh, sw, ph, pw, gx, nc):
    c, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    oh, ow = gy.shape[2], gy.shape[3]
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


@njit(cache=True)
def _max_pool_bwd_2x2_task(gy, arg, gx, nc):
    """2x2 stride 2: windows tile the plane, so each input is written once (no zero-fill and
    no read-modify-write); rows/columns past the last window get zeros.

    Each input takes the gradient kept or zeroed on its bits (``bits.keep``: an AND with an
    all-ones or all-zeros mask), exact for every value (NaN and infinity included) and free of
    the data-dependent branches that float selects compile to on AVX2 (4x slower there on
    random winners)."""
    c, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    oh, ow = gy.shape[2], gy.shape[3]
    b = nc // c
    ci = nc - b * c
    dst = gx[b, ci]
    g = gy[b, ci]
    a = arg[b, ci]
    one = np.uintp(1)
    for oy in range(oh):
        r0 = dst[2 * oy]
        r1 = dst[2 * oy + 1]
        grow = g[oy]
        arow = a[oy]
        for ox in range(ow):
            k = arow[ox]
            v = grow[ox]
            ix = np.uintp(2 * ox)
            r0[ix] = keep(v, k == 0)
            r0[ix + one] = keep(v, k == 1)
            r1[ix] = keep(v, k == 2)
            r1[ix + one] = keep(v, k == 3)
        if w > 2 * ow:
            r0[2 * ow:] = 0
            r1[2 * ow:] = 0
    if h > 2 * oh:
        dst[2 * oh:, :] = 0


@njit(cache=True)
def _gather_3x3s2_row(dst, ga, aa, ta, gb, ab, tb, two, ow):
    """One input row of the 3x3 stride-2 pad-1 backward from window row(s) a (and b where
    ``two``), whose filter row over this input row is ta (tb): the even column 2*ox takes tap
    column 1 of window ox; the odd column 2*ox + 1 takes tap column 2 of window ox and tap
    column 0 of window ox + 1. Each value is kept or zeroed on its bits (``keep``), and the
    terms add in the order the windows come (row a before b, then by column), each on top of
    +0.0, as a zero-filled scatter would add them. The loops have no branch inside, so LLVM
    vectorises them; the last window column, whose odd column may lie past the plane or has
    no right neighbour, is done apart."""
    zero = dst.dtype.type(0)
    ea, eb = 3 * ta, 3 * tb
    one = np.uintp(1)
    last = ow - 1
    if two:
        for ox in range(last):
            k = np.uintp(ox)
            va, ka, vb, kb = ga[k], aa[k], gb[k], ab[k]
            dst[2 * k] = zero + keep(va, ka == ea + 1) + keep(vb, kb == eb + 1)
            dst[2 * k + one] = (zero + keep(va, ka == ea + 2) + keep(ga[k + one], aa[k + one] == ea)
                                + keep(vb, kb == eb + 2) + keep(gb[k + one], ab[k + one] == eb))
    else:
        for ox in range(last):
            k = np.uintp(ox)
            va, ka = ga[k], aa[k]
            dst[2 * k] = zero + keep(va, ka == ea + 1)
            dst[2 * k + one] = zero + keep(va, ka == ea + 2) + keep(ga[k + one], aa[k + one] == ea)
    k = np.uintp(last)
    even = zero + keep(ga[k], aa[k] == ea + 1)
    odd = zero + keep(ga[k], aa[k] == ea + 2)
    if two:
        even += keep(gb[k], ab[k] == eb + 1)
        odd += keep(gb[k], ab[k] == eb + 2)
    dst[2 * k] = even
    if 2 * last + 1 < dst.size:
        dst[2 * k + one] = odd


@njit(cache=True)
def _max_pool_bwd_3x3s2_task(gy, arg, gx, nc):
    """3x3 stride 2 padding 1 (ResNet's stem): each input gathers the gradients of the (at
    most four) windows over it, so it is written once, with no zero-fill and no read-modify-
    write. Input row 2*m lies under filter row 1 of window row m; row 2*m + 1 under filter row
    2 of window row m and filter row 0 of window row m + 1."""
    c, h = gx.shape[1], gx.shape[2]
    oh, ow = gy.shape[2], gy.shape[3]
    b = nc // c
    ci = nc - b * c
    dst, g, a = gx[b, ci], gy[b, ci], arg[b, ci]
    for iy in range(h):
        m = iy // 2
        if iy % 2 == 0:
            _gather_3x3s2_row(dst[iy], g[m], a[m], 1, g[m], a[m], 1, False, ow)
        elif m + 1 < oh:
            _gather_3x3s2_row(dst[iy], g[m], a[m], 2, g[m + 1], a[m + 1], 0, True, ow)
        else:
            _gather_3x3s2_row(dst[iy], g[m], a[m], 2, g[m], a[m], 2, False, ow)


@njit(parallel=True, cache=True)
def _max_pool_bwd_3x3s2_par(gy, arg, gx):
    for nc in prange(gx.shape[0] * gx.shape[1]):
        _max_pool_bwd_3x3s2_task(gy, arg, gx, nc)


@njit(cache=True)
def _max_pool_bwd_3x3s2_ser(gy, arg, gx):
    for nc in range(gx.shape[0] * gx.shape[1]):
        _max_pool_bwd_3x3s2_task(gy, arg, gx, nc)


@njit(parallel=True, cache=True)
def _max_pool_bwd_2x2_par(gy, arg, gx):
    for nc in prange(gx.shape[0] * gx.shape[1]):
        _max_pool_bwd_2x2_task(gy, arg, gx, nc)


@njit(cache=True)
def _max_pool_bwd_2x2_ser(gy, arg, gx):
    for nc in range(gx.shape[0] * gx.shape[1]):
        _max_pool_bwd_2x2_task(gy, arg, gx, nc)


@njit(parallel=True, cache=True)
def _max_pool_bwd_par(gy, arg, kw, sh, sw, ph, pw, gx):
    for nc in prange(gx.shape[0] * gx.shape[1]):
        _max_pool_bwd_task(gy, arg, kw, sh, sw, ph, pw, gx, nc)


@njit(cache=True)
def _max_pool_bwd_ser(gy, arg, kw, sh, sw, ph, pw, gx):
    for nc in range(gx.shape[0] * gx.shape[1]):
        _max_pool_bwd_task(gy, arg, kw, sh, sw, ph, pw, gx, nc)


_MAX_POOL = Drivers(_max_pool_par, _max_pool_ser)
_MAX_POOL_BWD = Drivers(_max_pool_bwd_par, _max_pool_bwd_ser)
_MAX_POOL_BWD_2X2 = Drivers(_max_pool_bwd_2x2_par, _max_pool_bwd_2x2_ser)
_MAX_POOL_BWD_3X3S2 = Drivers(_max_pool_bwd_3x3s2_par, _max_pool_bwd_3x3s2_ser)


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Returns (y, argmax) with argmax the flat index i*kw+j of the winner (int32), as generic.
    float16 and bfloat16 run the float32 kernels: the maxima convert back exactly (NumPy's
    half-precision arithmetic is emulated, 10-50x slower)."""
    if is_low_precision(x.dtype):
        y, arg = max_pool2d_forward(x.astype(np.float32), kh, kw, sh, sw, ph, pw)
        return y.astype(x.dtype), arg
    if x.dtype not in FLOATS:
        return generic.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
    x = contiguous(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)
    launch(_MAX_POOL, parallel(x.size, "pool"), x, kh, kw, sh, sw, ph, pw, y, arg)
    return y, arg


def max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    if is_low_precision(gy.dtype):  # summed in float32 where windows overlap, rounded once
        gx = max_pool2d_backward(gy.astype(np.float32), arg, x_shape, kh, kw, sh, sw, ph, pw)
        return gx.astype(gy.dtype)
    if gy.dtype not in FLOATS:
        return generic.max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw)
    gx = np.empty(x_shape, dtype=gy.dtype)
    gy, arg = contiguous(gy), contiguous(arg).astype(np.int32, copy=False)
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        launch(_MAX_POOL_BWD_2X2, parallel(gx.size, "pool"), gy, arg, gx)
    elif (kh, kw, sh, sw, ph, pw) == (3, 3, 2, 2, 1, 1):
        launch(_MAX_POOL_BWD_3X3S2, parallel(gx.size, "pool"), gy, arg, gx)
    else:
        launch(_MAX_POOL_BWD, parallel(gx.size, "pool"), gy, arg, kw, sh, sw, ph, pw, gx)
    return gx
