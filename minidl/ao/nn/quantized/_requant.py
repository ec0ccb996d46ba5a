"""The integer arithmetic shared by the statically quantized layers: convolution and matrix
products of zero-point-shifted integers (exact), and fbgemm's requantization of their int32
sums to the output's quint8 grid, step for step as its ``ReQuantizeOutput`` (what torch's
quantized Linear and Conv call on x86), so that the outputs equal torch's bit for bit."""
from __future__ import annotations

import numpy as np

from ....nn._functional.convolution import unfold_array
from ...quantization.qtensor import quint8


def weight_scales(w, channels):
    """A qint8 weight's scales and zero points, one per output channel (float32, int64)."""
    if w._axis is None:
        return (np.full(channels, np.float32(w._scale), np.float32),
                np.full(channels, int(w._zero_point), np.int64))
    return np.asarray(w._scale, np.float32).reshape(-1), np.asarray(w._zero_point, np.int64)


def requantize(acc, x_scale, w_scale, bias, out_scale, out_zero_point, relu, axis=1):
    """int32 sums ``acc`` (channels along ``axis``) -> output integers, as fbgemm: with
    ``s = float32(x_scale * w_scale[c])`` per channel, ``y = (float32(acc) + bias / s) *
    (s / out_scale)`` in float32, rounded half to even, plus the zero point, clamped to
    quint8's full [0, 255] (its lower end raised to the zero point when ``relu`` is fused),
    as torch: not to the narrower range the activation observer used (reduce_range)."""
    shape = [1] * acc.ndim
    shape[axis] = -1
    act_times_w = np.float32(x_scale) * w_scale.astype(np.float32)
    multiplier = (act_times_w / np.float32(out_scale)).reshape(shape)
    y = acc.astype(np.float32)
    if bias is not None:
        y = y + (np.asarray(bias, np.float32) / act_times_w).reshape(shape)
    q = np.rint(y * multiplier).astype(np.int64) + int(out_zero_point)
    lo = max(quint8.qmin, int(out_zero_point)) if relu else quint8.qmin
    return np.clip(q, lo, quint8.qmax)


def int_conv(x, w, stride, padding, dilation, groups, padded=False):
    """The exact integer convolution of ``x`` (N, C, *S) and ``w`` (O, C/groups, *k), both
    already shifted by their zero points (so zero padding is the input's zero point), as int64.
    The products are summed in float64, exact below 2**53."""
    if not padded and any(padding):
        x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    sizes = [(s - d * (k - 1) - 1) // st + 1
             for s, k, st, d in zip(x.shape[2:], w.shape[2:], stride, dilation)]
    col = unfold_array(x.astype(np.float64), w.shape[2:], stride, dilation, sizes)
    n, c = x.shape[:2]
    o = w.shape[0]
    cg, og = c // groups, o // groups
    col = col.reshape(n, groups, cg * int(np.prod(w.shape[2:])), -1)
    wf = w.astype(np.float64).reshape(groups, og, -1)
    out = np.einsum("gok,ngkp->ngop", wf, col, optimize=True)
    return np.rint(out).astype(np.int64).reshape(n, o, *sizes)
