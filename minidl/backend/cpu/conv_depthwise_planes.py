"""Depthwise convolution plane by plane in NCHW order, by a polyphase split of each padded plane.

A depthwise layer convolves each (sample, channel) plane with its own small filter. On planes
of a network's early stages (MobileNetV2's 48x48 and 24x24 at 96x96 input) this is faster than
the channels-last kernels of ``conv_depthwise``, which pay two layout copies per pass and run
their inner loop over the channels, a few dozen long at those stages.

The trick that makes every filter tap one long contiguous multiply-add: the zero-padded plane
is split into ``sh * sw`` phase planes, phase (rp, cp) holding the padded rows rp, rp + sh, ...
and columns cp, cp + sw, ... (one phase, the padded plane itself, at stride 1). Output (oy, ox)
reads padded position (oy*sh + i*dh, ox*sw + j*dw) for tap (i, j), which is row oy + ri and
column ox + ci of phase ((i*dh) % sh, (j*dw) % sw), where ri = (i*dh) // sh and
ci = (j*dw) // sw. Computing the outputs at the phases' width ``wph`` (a few wasted columns per
row), output index oy*wph + ox reads phase index oy*wph + ox + (ri*wph + ci): one offset per
tap over the whole plane, which vectorises. A valid output never reads across a row end (the
last one reads at most column wph - 1), the wasted ones are dropped.

- forward: per plane, the output at width wph, taps taken three at a time (one pass over the
  output per three taps), then the valid columns copied out;
- input gradient: the same in gather form: per phase, each position sums the output gradient
  (laid out at width wph, zero in the wasted columns and around) at minus each tap's offset
  that lands on that phase; the phases are then merged back into the plane, crop included;
- weight gradient: per output channel (no two tasks write the same filter), over the samples,
  each tap a dot product of the output gradient (at width wph, zeros in the wasted columns)
  with the phase at the tap's offset; each plane's sums in the data's dtype, added in float64.

Any stride, padding, dilation and channel multiplier (output channel o reads input channel
o // mult). float32 and float64; the wrappers hand the kernels C-contiguous arrays.
"""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
from numba import njit, prange

from .launch import contiguous, parallel


class Geometry:
    """The polyphase layout of one plane: phases of ``rows`` x ``wph`` each, and per tap its
    phase's start in the scratch buffer plus its offset inside the phase (``offsets``)."""

    def __init__(self, h, w, kh, kw, stride, padding, dilation, oh, ow):
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        hp, wp = h + 2 * ph, w + 2 * pw
        self.wph = -(-wp // sw)
        max_ri = (kh - 1) * dh // sh
        # rows a phase needs: every padded row, and every read of the (wasted) last columns
        self.rows = max(-(-hp // sh), oh + max_ri) + 1
        self.phase = self.rows * self.wph
        starts, offsets = [], []  # per tap (i, j), row-major
        for i in range(kh):
            ri, rp = divmod(i * dh, sh)
            for j in range(kw):
                ci, cp = divmod(j * dw, sw)
                starts.append((rp * sw + cp) * self.phase)
                offsets.append(ri * self.wph + ci)
        self.size = sh * sw * self.phase
        self.length = oh * self.wph  # outputs computed per plane, wasted columns included
        # The weight gradient takes taps three at a time, so its list is padded to a multiple
        # of 3 by taps of weight zero (id -1) reading a valid position. The forward pass and
        # the weight gradient read the phases at start + offset, tap by tap in (i, j) order:
        self.taps = _pad3(list(range(kh * kw)))
        self.bases = np.array([starts[t] + offsets[t] if t >= 0 else 0 for t in self.taps],
                              dtype=np.int64)
        # the input gradient gathers phase by phase, each phase from the taps that land on it,
        # reading the laid-out output gradient at shift - offset (shift: the largest offset)
        shift = max(offsets)
        ids, self.bounds = [], [0]
        for q in range(sh * sw):
            ids += [t for t in range(kh * kw) if starts[t] == q * self.phase]
            self.bounds.append(len(ids))
        self.dgrad_taps = ids
        self.dgrad_bases = np.array([shift - offsets[t] if t >= 0 else 0 for t in ids],
                                    dtype=np.int64)
        self.bounds = np.array(self.bounds, dtype=np.int64)
        self.shift = shift
        self.plane = (h, w, oh, ow, sh, sw, ph, self.wph, self.phase, _columns(w, pw, sw))


def _pad3(ids):
    return ids + [-1] * (-len(ids) % 3)


def _columns(w, pw, sw):
    """Per column phase cp: the phase columns [q0, q1) that hold input columns (q*sw + cp - pw
    inside [0, w)), and the input column of q0; an (sw, 3) array."""
    cols = np.zeros((sw, 3), dtype=np.int64)
    for cp in range(sw):
        q0 = max(0, -((cp - pw) // sw))  # smallest q with q*sw + cp - pw >= 0
        cols[cp] = q0, max(q0, (w - 1 - cp + pw) // sw + 1), q0 * sw + cp - pw
    return cols


# ---- the phases of a plane -----------------------------------------------------------------
# Every kernel works on flat arrays with offsets: slicing an array inside a kernel counts a
# reference (an atomic operation) per slice, which cost more than a small plane's arithmetic.
# Indices are cast to unsigned (np.uintp) so that numba leaves out its negative-index
# wraparound, which keeps the loops from vectorising. The helpers are inlined into the kernels,
# whose fastmath flags they then take (a helper's own would be lost): multiply-adds contracted
# to FMAs, and in the weight gradient's dot products reassociation, to vectorise the sums.
@njit(cache=True, inline="always")
def _split(src, at, h, w, sh, sw, ph, wph, phase, cols, buf):
    """The plane src[np.uintp(at:at + h*w)] written into its positions in the sh*sw phases of the padded
    plane in ``buf``, whose other (padding) positions the caller keeps at zero. No division in
    the loops: integer division costs more than copying a row."""
    r, rp = ph // sh, ph % sh
    pw = cols[0, 0] * sw - cols[0, 2]  # the left padding
    for yy in range(h):
        s0 = at + yy * w
        d0 = rp * sw * phase + r * wph
        if sw == 1:
            d0 += cols[0, 0]
            for xx in range(w):
                buf[np.uintp(d0 + xx)] = src[np.uintp(s0 + xx)]
        elif sw == 2:
            # even and odd input columns in one loop: the compiler vectorises the pair as
            # interleaved loads (separate strided loops compile to slow gathers)
            ev = (rp * 2 + pw % 2) * phase + r * wph + pw // 2
            od = (rp * 2 + (pw + 1) % 2) * phase + r * wph + (pw + 1) // 2
            for k in range(w // 2):
                buf[np.uintp(ev + k)] = src[np.uintp(s0 + 2 * k)]
                buf[np.uintp(od + k)] = src[np.uintp(s0 + 2 * k + 1)]
            if w % 2:
                buf[np.uintp(ev + w // 2)] = src[np.uintp(s0 + w - 1)]
        else:
            for cp in range(sw):
                q0, q1, x0 = cols[cp, 0], cols[cp, 1], cols[cp, 2]
                d1, s1 = d0 + cp * phase + q0, s0 + x0
                for q in range(q1 - q0):
                    buf[np.uintp(d1 + q)] = src[np.uintp(s1 + q * sw)]
        rp += 1
        if rp == sh:
            rp, r = 0, r + 1


@njit(cache=True, inline="always")
def _merge(buf, h, w, sh, sw, ph, wph, phase, cols, dst, at):
    """The inverse of ``_split``: the positions of the unpadded plane into dst[np.uintp(at:at + h*w)]."""
    r, rp = ph // sh, ph % sh
    pw = cols[0, 0] * sw - cols[0, 2]  # the left padding
    for yy in range(h):
        d0 = at + yy * w
        s0 = rp * sw * phase + r * wph
        if sw == 1:
            s0 += cols[0, 0]
            for xx in range(w):
                dst[np.uintp(d0 + xx)] = buf[np.uintp(s0 + xx)]
        elif sw == 2:
            ev = (rp * 2 + pw % 2) * phase + r * wph + pw // 2
            od = (rp * 2 + (pw + 1) % 2) * phase + r * wph + (pw + 1) // 2
            for k in range(w // 2):
                dst[np.uintp(d0 + 2 * k)] = buf[np.uintp(ev + k)]
                dst[np.uintp(d0 + 2 * k + 1)] = buf[np.uintp(od + k)]
            if w % 2:
                dst[np.uintp(d0 + w - 1)] = buf[np.uintp(ev + w // 2)]
        else:
            for cp in range(sw):
                q0, q1, x0 = cols[cp, 0], cols[cp, 1], cols[cp, 2]
                s1, d1 = s0 + cp * phase + q0, d0 + x0
                for q in range(q1 - q0):
                    dst[np.uintp(d1 + q * sw)] = buf[np.uintp(s1 + q)]
        rp += 1
        if rp == sh:
            rp, r = 0, r + 1


@njit(cache=True, inline="always")
def _spread(src, at, oh, ow, wph, dst, to):
    """The output-sized plane src[np.uintp(at:at + oh*ow)] laid out at width wph from dst[to], zeros in
    the wasted columns (dst is zero elsewhere already or made so by the caller)."""
    for y in range(oh):
        d0, s0 = to + y * wph, at + y * ow
        for x in range(ow):
            dst[np.uintp(d0 + x)] = src[np.uintp(s0 + x)]
        for x in range(ow, wph):
            dst[np.uintp(d0 + x)] = 0.0


# ---- forward -------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _three(acc, at, n, a, w0, b0, w1, b1, w2, b2, first, bias):
    """acc[np.uintp(at+p)] (+)= w0*a[np.uintp(b0+p)] + w1*a[np.uintp(b1+p)] + w2*a[np.uintp(b2+p)] for p < n (= starts from bias)."""
    if first:
        for p in range(n):
            acc[np.uintp(at + p)] = bias + w0 * a[np.uintp(b0 + p)] + w1 * a[np.uintp(b1 + p)] + w2 * a[np.uintp(b2 + p)]
    else:
        for p in range(n):
            acc[np.uintp(at + p)] += w0 * a[np.uintp(b0 + p)] + w1 * a[np.uintp(b1 + p)] + w2 * a[np.uintp(b2 + p)]


@njit(cache=True, inline="always")
def _one(acc, at, n, a, w0, b0, first, bias):
    if first:
        for p in range(n):
            acc[np.uintp(at + p)] = bias + w0 * a[np.uintp(b0 + p)]
    else:
        for p in range(n):
            acc[np.uintp(at + p)] += w0 * a[np.uintp(b0 + p)]


@njit(cache=True, inline="always")
def _taps(acc, at, n, a, wv, wo, bases, t0, t1, bias, accumulate):
    """acc[np.uintp(at+p)] = bias + sum over taps t in [t0, t1) of wv[np.uintp(wo+t)] * a[bases[t] + p] for p < n
    (with ``accumulate``, added instead): three taps per pass, the last one or two alone."""
    k = t0
    while k + 3 <= t1:
        _three(acc, at, n, a, wv[np.uintp(wo + k)], bases[k], wv[np.uintp(wo + k + 1)], bases[np.uintp(k + 1)],
               wv[np.uintp(wo + k + 2)], bases[np.uintp(k + 2)], k == t0 and not accumulate, bias)
        k += 3
    while k < t1:
        _one(acc, at, n, a, wv[np.uintp(wo + k)], bases[k], k == t0 and not accumulate, bias)
        k += 1
    if t1 <= t0 and not accumulate:
        for p in range(n):
            acc[np.uintp(at + p)] = bias


@njit(cache=True, fastmath={"contract"})
def _fwd_planes(x, w, bias, dims, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, size, length,
                bases, mult, out, p0, p1):
    """Planes [p0, p1) of the output; x, w, out flat, dims = (C_in, C_out, slots)."""
    c, co, ns = dims[0], dims[1], dims[2]
    buf = np.zeros(size, dtype=x.dtype)
    acc = np.empty(length, dtype=x.dtype)
    last = -1
    for t in range(p0, p1):
        b, o = t // co, t % co
        src = b * c + o // mult
        if src != last:
            _split(x, src * h * wd, h, wd, sh, sw, ph, wph, phase, cols, buf)
            last = src
        _taps(acc, 0, length, buf, w, o * ns, bases, 0, ns, bias[o], False)
        d0 = t * oh * ow
        for y in range(oh):
            for xx in range(ow):
                out[np.uintp(d0 + y * ow + xx)] = acc[np.uintp(y * wph + xx)]


@njit(parallel=True, cache=True)
def _fwd_par(x, w, bias, dims, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, size, length, bases,
             mult, out, chunks):
    total = out.shape[0] // (oh * ow)
    for k in prange(chunks):
        _fwd_planes(x, w, bias, dims, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, size, length,
                    bases, mult, out, k * total // chunks, (k + 1) * total // chunks)


# ---- input gradient ------------------------------------------------------------------------
@njit(cache=True, fastmath={"contract"})
def _dgrad_planes(g, w, dims, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, bounds, bases,
                  shift, mult, gx, p0, p1):
    """Planes [p0, p1) of the input gradient; g, w, gx flat, w's slots in the order of
    ``bases``, phase q's in [bounds[q], bounds[q+1]); each phase position gathers from the
    output gradient laid out in gl."""
    c, ns = dims[0], dims[2]
    nphase = sh * sw
    # the output gradient at width wph from gl[shift], zeros before and after it
    gl = np.zeros(shift + phase, dtype=g.dtype)
    buf = np.empty(nphase * phase, dtype=g.dtype)
    zero = np.zeros(1, dtype=g.dtype)[0]
    for t in range(p0, p1):
        ci = t % c
        b = t // c
        for k in range(mult):
            o = ci * mult + k
            _spread(g, (b * c * mult + o) * oh * ow, oh, ow, wph, gl, shift)
            for q in range(nphase):
                _taps(buf, q * phase, phase, gl, w, o * ns, bases, bounds[q], bounds[q + 1],
                      zero, k > 0)
        _merge(buf, h, wd, sh, sw, ph, wph, phase, cols, gx, t * h * wd)


@njit(parallel=True, cache=True)
def _dgrad_par(g, w, dims, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, bounds, bases, shift,
               mult, gx, chunks):
    total = gx.shape[0] // (h * wd)
    for k in prange(chunks):
        _dgrad_planes(g, w, dims, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, bounds, bases,
                      shift, mult, gx, k * total // chunks, (k + 1) * total // chunks)


# ---- weight gradient -----------------------------------------------------------------------
@njit(cache=True, inline="always")
def _dots3(gl, a, n, b0, b1, b2, zero):
    s0 = s1 = s2 = zero
    for p in range(n):
        v = gl[p]
        s0 += v * a[np.uintp(b0 + p)]
        s1 += v * a[np.uintp(b1 + p)]
        s2 += v * a[np.uintp(b2 + p)]
    return s0, s1, s2


@njit(cache=True, fastmath={"reassoc", "contract"})
def _wgrad_channels(x, g, dims, n, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, size, length,
                    bases, mult, gw, o0, o1):
    """gw[o, slot] for the output channels o in [o0, o1): per sample, one dot product per tap
    in the data's dtype, summed over the samples in float64."""
    c, co = dims[0], dims[1]
    ns = bases.shape[0]
    buf = np.zeros(size, dtype=x.dtype)
    gl = np.empty(length, dtype=g.dtype)
    zero = np.zeros(1, dtype=g.dtype)[0]
    for o in range(o0, o1):
        for t in range(ns):
            gw[o, t] = 0.0
        for b in range(n):
            _split(x, (b * c + o // mult) * h * wd, h, wd, sh, sw, ph, wph, phase, cols, buf)
            _spread(g, (b * co + o) * oh * ow, oh, ow, wph, gl, 0)
            for t in range(0, ns, 3):
                s0, s1, s2 = _dots3(gl, buf, length, bases[t], bases[np.uintp(t + 1)], bases[np.uintp(t + 2)],
                                    zero)
                gw[o, t] += s0
                gw[o, t + 1] += s1
                gw[o, t + 2] += s2


@njit(parallel=True, cache=True)
def _wgrad_par(x, g, dims, n, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, size, length, bases,
               mult, gw, chunks):
    co = dims[1]
    for k in prange(chunks):
        _wgrad_channels(x, g, dims, n, h, wd, oh, ow, sh, sw, ph, wph, phase, cols, size,
                        length, bases, mult, gw, k * co // chunks, (k + 1) * co // chunks)


# ---- wrappers ------------------------------------------------------------------------------
def _chunks(tasks, work):
    """How many parallel chunks of planes (or channels) to run, 0 for the serial loop."""
    if not parallel(work, "depthwise"):
        return 0
    return min(tasks, 4 * numba.get_num_threads())


@lru_cache(maxsize=256)
def _geometry(*args):
    """Geometry(*args), kept per layer shape: a network asks for the same few every step."""
    geo = Geometry(*args)
    geo.taps = np.array(geo.taps, dtype=np.int64)
    geo.dgrad_taps = np.array(geo.dgrad_taps, dtype=np.int64)
    return geo


def _filters(w, dtype, taps):
    """The filters (C_out, 1, kh, kw) as (C_out, slots): slot s holds tap taps[s], 0 for -1."""
    out = w.reshape(w.shape[0], -1).astype(dtype)[:, np.maximum(taps, 0)]
    out[:, taps < 0] = 0
    return out


def _flat(a):
    return contiguous(a).reshape(-1)


def depthwise_forward(x, w, bias, stride, padding, dilation, out_hw):
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    geo = _geometry(h, wd, kh, kw, tuple(stride), tuple(padding), tuple(dilation),
                    *out_hw)
    b = (np.ascontiguousarray(bias, dtype=x.dtype) if bias is not None
         else np.zeros(co, x.dtype))
    out = np.empty((n, co) + tuple(out_hw), dtype=x.dtype)
    wf = _filters(w, x.dtype, geo.taps)
    dims = np.array([c, co, wf.shape[1]], dtype=np.int64)
    args = (_flat(x), wf.reshape(-1), b, dims, *geo.plane, geo.size, geo.length, geo.bases,
            co // c, out.reshape(-1))
    chunks = _chunks(n * co, out.size * kh * kw)
    if chunks:
        _fwd_par(*args, chunks)
    else:
        _fwd_planes(*args, 0, n * co)
    return out


def depthwise_input_grad(g, w, x_shape, stride, padding, dilation):
    n, c, h, wd = x_shape
    co, _, kh, kw = w.shape
    geo = _geometry(h, wd, kh, kw, tuple(stride), tuple(padding), tuple(dilation),
                    *g.shape[2:])
    gx = np.empty(x_shape, dtype=g.dtype)
    wf = _filters(w, g.dtype, geo.dgrad_taps)
    dims = np.array([c, co, wf.shape[1]], dtype=np.int64)
    args = (_flat(g), wf.reshape(-1), dims, *geo.plane, geo.bounds, geo.dgrad_bases, geo.shift,
            co // c, gx.reshape(-1))
    chunks = _chunks(n * c, g.size * kh * kw)
    if chunks:
        _dgrad_par(*args, chunks)
    else:
        _dgrad_planes(*args, 0, n * c)
    return gx


def depthwise_weight_grad(x, g, kernel, stride, padding, dilation):
    n, c, h, wd = x.shape
    co = g.shape[1]
    kh, kw = kernel
    geo = _geometry(h, wd, kh, kw, tuple(stride), tuple(padding), tuple(dilation),
                    *g.shape[2:])
    gw = np.empty((co, len(geo.taps)), dtype=np.float64)
    dims = np.array([c, co, len(geo.taps)], dtype=np.int64)
    args = (_flat(x), _flat(g), dims, n, *geo.plane, geo.size, geo.length, geo.bases, co // c,
            gw)
    chunks = _chunks(co, g.size * kh * kw)
    if chunks:
        _wgrad_par(*args, chunks)
    else:
        _wgrad_channels(*args, 0, co)
    return gw[:, :kh * kw].reshape(co, 1, kh, kw).astype(x.dtype)
