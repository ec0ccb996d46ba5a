"""The float32 steps torch's quantized CPU kernels take, shared by the quantized tensors and
modules: quantizing (``quantize_ints``: the affine map with fbgemm's fused multiply-add, or
two roundings), the vectorized dequantize (``fma(q, s, -s * zp)`` or ``(q - zp) * s``) and the
vectorized quantize (``rint(y * inv_scale) + zp``). Plain NumPy, below everything else in
``ao`` (no quantized tensor needed)."""
from __future__ import annotations

import numpy as np


def quantize_ints(x, scale, zero_point, qmin, qmax, fused):
    """The integers that float32 ``x`` quantizes to: nearbyint(zero_point + x / scale) clamped
    to [qmin, qmax] (as int64), with ``1/scale`` in float32; ``fused``: one fused multiply-add
    (fbgemm's per-tensor kernel), else a float32 multiply then add (see qtensor.py).
    ``scale``/``zero_point``: numbers, or arrays broadcasting against x."""
    inv = np.float32(1) / np.asarray(scale, dtype=np.float32)
    if fused:  # x * inv is exact in float64 (24-bit by 24-bit mantissas), so one rounding
        t = (x.astype(np.float64) * inv.astype(np.float64) + zero_point).astype(np.float32)
    else:
        t = x * inv + np.asarray(zero_point, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return np.clip(np.rint(t), qmin, qmax).astype(np.int64)



def dequantize_fma(x):
    """float32 ``fma(q, scale, -scale * zero_point)`` (torch's vectorized dequantize)."""
    scale = np.float32(x._scale)
    premul = np.float32(scale * np.float32(-x._zero_point))
    return (x._ints.astype(np.float64) * np.float64(scale) + np.float64(premul)).astype(np.float32)


def dequantize_mul(x):
    """float32 ``(q - zero_point) * scale`` (torch's two-argument vectorized dequantize)."""
    return (x._ints.astype(np.int64) - int(x._zero_point)).astype(np.float32) * np.float32(x._scale)


def quantize_vec(y, inv_scale, zero_point, dtype):
    """``rint(y * inv_scale) + zero_point`` clamped to the dtype (torch's Vec::quantize)."""
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.minimum(y * np.float32(inv_scale), np.float32(2 ** 31 - 128))
        ints = np.rint(t).astype(np.int64) + int(zero_point)
    return np.clip(ints, dtype.qmin, dtype.qmax).astype(dtype.storage)
