"""Fake quantization: quantize and dequantize in one float op, so that a float model trained
with it sees the rounding and clamping its int8 version will do (quantization-aware training).

Its gradient is the straight-through estimator, as PyTorch's: the rounding is treated as the
identity (its true derivative is zero almost everywhere), the clamp is not, so the gradient
passes unchanged where ``zero_point + nearbyint(x / scale)`` lands inside
[quant_min, quant_max] and is zero outside."""
from __future__ import annotations

import numpy as np

from ...backend import get_array_module
from ...backend.dtypes import is_floating
from ...tensor import Function, Tensor


def _fake_quant(x, scale, zero_point, quant_min, quant_max, per_channel=False):
    """(fake-quantized x, mask of where the gradient passes), in x's float dtype, with the
    arithmetic of torch's kernels: zero_point + nearbyint(x * (1/scale)), 1/scale in float32
    and the product in float32, or in float64 for a float64 x (where half a quantum rounds
    as the exact product says); then (q - zero_point) * scale rounded to float32, except for
    a float64 x quantized per channel, whose product stays float64."""
    xp = get_array_module(x)  # scale and zero point: numbers or host arrays, moved to x's device
    scale = xp.asarray(np.asarray(scale, dtype=np.float32))
    zp = xp.asarray(np.asarray(zero_point, dtype=np.int64))
    inv_scale = np.float32(1) / scale
    wide = x.dtype == np.float64
    if wide:
        q = xp.rint(x * inv_scale.astype(np.float64)) + zp
    else:
        q = xp.rint(x.astype(np.float32) * inv_scale).astype(np.float64) + zp
    mask = (q >= quant_min) & (q <= quant_max)
    if wide and per_channel:
        out = (xp.clip(q, quant_min, quant_max) - zp) * scale.astype(np.float64)
    else:
        out = ((xp.clip(q, quant_min, quant_max) - zp).astype(np.float32) * scale).astype(
            x.dtype)
    return out, mask


def _fake_quant_float_zp(x, scale, zero_point, quant_min, quant_max):
    """The same with a float zero point (torch's per-channel kernel for float zero points):
    ``nearbyint(x * (1/scale) + zero_point)`` in float32, and ``(q - zero_point) * scale``
    rounded once to float32."""
    xp = get_array_module(x)
    scale = xp.asarray(np.asarray(scale, dtype=np.float32))
    zp = xp.asarray(np.asarray(zero_point, dtype=np.float32))
    q = xp.rint(x.astype(np.float32) * (np.float32(1) / scale) + zp)
    mask = (q >= quant_min) & (q <= quant_max)
    out = ((xp.clip(q, quant_min, quant_max).astype(np.float64) - zp) * scale).astype(x.dtype)
    return out, mask


class FakeQuantizeAffine(Function):
    """x -> (clamp(zp + nearbyint(x / scale), qmin, qmax) - zp) * scale; gradient g * mask
    (straight through). ``scale``/``zero_point`` arrays broadcast against x."""

    def forward(self, x, scale, zero_point, quant_min, quant_max, float_zp=False,
                per_channel=False):
        if float_zp:
            out, self.mask = _fake_quant_float_zp(x, scale, zero_point, quant_min, quant_max)
        else:
            out, self.mask = _fake_quant(x, scale, zero_point, quant_min, quant_max,
                                         per_channel=per_channel)
        return out

    def backward(self, g):
        return g * self.mask.astype(g.dtype)

    def graph_backward(self, g, out):
        return g * Tensor(self.mask.astype(g.data.dtype))


def _on_cpu(name, x):
    """The learnable fake quantizations run on the CPU only (their per-tensor scale and zero
    point are read on the host)."""
    if x.device != "cpu":
        raise RuntimeError(f"{name}: minidl's learnable fake quantization runs on the CPU; got a "
                           f"tensor on {x.device} (move it with .cpu())")


def _check_range(name, quant_min, quant_max):
    if quant_min > quant_max:
        raise RuntimeError(f"{name}: `quant_min` ({quant_min}) should be less than or equal to "
                           f"`quant_max` ({quant_max})")


def _check_zero_point(name, zp, quant_min, quant_max):
    zp = np.asarray(zp)
    if np.any(zp < quant_min) or np.any(zp > quant_max):
        raise RuntimeError(f"{name}: `zero_point` {zp.tolist()} must be between `quant_min` "
                           f"({quant_min}) and `quant_max` ({quant_max})")


def _number(v):
    return v.item() if isinstance(v, Tensor) else v


def _float(name, x):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    if not is_floating(x.data.dtype):  # bfloat16 too, whose numpy kind is 'V'
        raise RuntimeError(f"{name}: expected a floating tensor, got dtype {x.dtype}")


def fake_quantize_per_tensor_affine(input, scale, zero_point, quant_min, quant_max):
    """Quantize then dequantize ``input`` with one scale and zero point (float in, float out),
    differentiable with the straight-through gradient (see the module's docstring)."""
    name = "fake_quantize_per_tensor_affine"
    _float(name, input)
    quant_min, quant_max = int(quant_min), int(quant_max)
    _check_range(name, quant_min, quant_max)
    zero_point = int(_number(zero_point))
    _check_zero_point(name, zero_point, quant_min, quant_max)
    return FakeQuantizeAffine.apply(input, scale=float(_number(scale)), zero_point=zero_point,
                                    quant_min=quant_min, quant_max=quant_max)


def fake_quantize_per_channel_affine(input, scale, zero_point, axis, quant_min, quant_max):
    """``fake_quantize_per_tensor_affine`` with one scale (float tensor) and zero point per
    index of ``axis``: an int tensor (within [quant_min, quant_max]), or, as torch allows, a
    float one (added before rounding: ``nearbyint(x / scale + zero_point)``; not range
    checked, as torch's)."""
    name = "fake_quantize_per_channel_affine"
    _float(name, input)
    quant_min, quant_max = int(quant_min), int(quant_max)
    _check_range(name, quant_min, quant_max)
    scale = np.asarray(scale.numpy() if isinstance(scale, Tensor) else scale).ravel()
    zp = np.asarray(zero_point.numpy() if isinstance(zero_point, Tensor) else zero_point).ravel()
    if zp.dtype.kind not in "iuf":
        raise RuntimeError(f"{name}: zero_point must be an integer or float tensor, got "
                           f"{zp.dtype}")
    float_zp = zp.dtype.kind == "f"
    ndim = input.ndim
    if not -ndim <= axis < ndim:
        raise IndexError(f"{name}: axis {axis} is out of range for a tensor of {ndim} dims")
    axis %= ndim
    size = input.shape[axis]
    if scale.size != size or zp.size != size:
        raise RuntimeError(f"{name}: expected {size} scales and zero points (the size of axis "
                           f"{axis} of shape {input.shape}), got {scale.size} and {zp.size}")
    if not float_zp:
        _check_zero_point(name, zp, quant_min, quant_max)
    shape = [1] * ndim
    shape[axis] = -1
    return FakeQuantizeAffine.apply(input, scale=scale.reshape(shape),
                                    zero_point=zp.reshape(shape), quant_min=quant_min,
                                    quant_max=quant_max, float_zp=float_zp, per_channel=True)


class FakeQuantizeLearnable(Function):
    """Fake quantization with ``scale`` and ``zero_point`` as differentiable inputs (LSQ+,
    as torch's _fake_quantize_learnable_per_tensor_affine). The zero point is rounded (and
    clamped to the range) for the forward. Gradients, each times ``grad_factor`` for scale
    and zero point, with q = zero_point + nearbyint(x / scale):
    inside [quant_min, quant_max]: dx = g, dscale = g * (fq(x) - x) / scale, dzp = 0;
    below (above): dx = 0, dscale = g * (quant_min (quant_max) - zp), dzp = -g * scale."""

    def forward(self, x, scale, zero_point, quant_min, quant_max, grad_factor):
        s = np.float32(scale.reshape(-1)[0])
        zp = float(np.clip(np.rint(np.float32(zero_point.reshape(-1)[0])), quant_min, quant_max))
        out, _ = _fake_quant(x, s, int(zp), quant_min, quant_max)
        # torch's backward takes the zero point as clamp(zp + 0.5) cast to an integer (round
        # half up) where its forward rounded half to even: at an exact .5 the two differ
        zp_b = float(np.trunc(np.clip(np.float32(zero_point.reshape(-1)[0]) + np.float32(0.5),
                                      quant_min, quant_max)))
        fq_b, mask = _fake_quant(x, s, int(zp_b), quant_min, quant_max)
        q = np.rint(x.astype(np.float32) * (np.float32(1) / s)) + zp_b
        self.parts = (x, fq_b, mask, q < quant_min, s, zp_b, quant_min, quant_max, grad_factor,
                      scale.shape, zero_point.shape, zero_point.dtype)
        return out

    def backward(self, g):
        x, out, mask, below, s, zp, qmin, qmax, factor, s_shape, z_shape, z_dtype = self.parts
        g32 = g.astype(np.float32)
        inside = (out.astype(np.float32) - x.astype(np.float32)) / s
        dscale = np.where(mask, g32 * inside, g32 * np.where(below, np.float32(qmin - zp),
                                                             np.float32(qmax - zp)))
        dzp = np.where(mask, np.float32(0), -g32 * s)
        return (g * mask.astype(g.dtype),
                (np.float32(dscale.sum()) * np.float32(factor)).astype(g.dtype).reshape(s_shape),
                (np.float32(dzp.sum()) * np.float32(factor)).astype(z_dtype).reshape(z_shape))


def _fake_quantize_learnable_per_tensor_affine(input, scale, zero_point, quant_min, quant_max,
                                               grad_factor=1.0):
    """Fake quantization whose ``scale`` and ``zero_point`` (one-element float tensors) learn
    too; see FakeQuantizeLearnable for the gradients."""
    name = "_fake_quantize_learnable_per_tensor_affine"
    _float(name, input)
    _on_cpu(name, input)
    for what, t in (("scale", scale), ("zero_point", zero_point)):
        if not isinstance(t, Tensor) or t.numel() != 1 or t.data.dtype.kind != "f":
            raise RuntimeError(f"{name}: {what} must be a one-element float tensor")
    quant_min, quant_max = int(quant_min), int(quant_max)
    _check_range(name, quant_min, quant_max)
    if not scale.item() > 0:
        raise RuntimeError(f"{name}: scale must be positive, got {scale.item()}")
    return FakeQuantizeLearnable.apply(input, scale, zero_point, quant_min=quant_min,
                                       quant_max=quant_max, grad_factor=float(grad_factor))


class FakeQuantizeLearnablePerChannel(Function):
    """``_fake_quantize_learnable_per_tensor_affine`` with one scale and zero point per index
    of ``axis`` (torch's ``_fake_quantize_learnable_per_channel_affine``): the zero points
    rounded half to even and clamped to the range, then the per-channel fake quantization;
    the gradients of FakeQuantizeLearnable element by element (with that rounded zero point),
    summed over every dim but ``axis``."""

    def forward(self, x, scale, zero_point, axis, quant_min, quant_max, grad_factor):
        shape = [1] * x.ndim
        shape[axis] = -1
        s = scale.astype(np.float32).reshape(shape)
        zp = np.clip(np.rint(zero_point.astype(np.float32)), quant_min, quant_max).reshape(shape)
        out, mask = _fake_quant(x, s, zp.astype(np.int64), quant_min, quant_max)
        q = np.rint(x.astype(np.float32) * (np.float32(1) / s)) + zp
        self.parts = (x, out, mask, q < quant_min, s, zp, axis, quant_min, quant_max,
                      grad_factor, scale.dtype, zero_point.dtype)
        return out

    def backward(self, g):
        x, out, mask, below, s, zp, axis, qmin, qmax, factor, s_dtype, z_dtype = self.parts
        g32 = g.astype(np.float32)
        inside = (out.astype(np.float32) - x.astype(np.float32)) * (np.float32(1) / s)
        dscale = np.where(mask, g32 * inside,
                          g32 * np.where(below, np.float32(qmin) - zp, np.float32(qmax) - zp))
        dzp = np.where(mask, np.float32(0), -g32 * s)
        dims = tuple(d for d in range(x.ndim) if d != axis)
        f = np.float32(factor)
        return (g * mask.astype(g.dtype), (dscale * f).sum(axis=dims).astype(s_dtype),
                (dzp * f).sum(axis=dims).astype(z_dtype))


def _fake_quantize_learnable_per_channel_affine(input, scale, zero_point, axis, quant_min,
                                                quant_max, grad_factor=1.0):
    """Fake quantization with learnable per-channel ``scale`` and ``zero_point`` (float
    tensors of the size of ``input``'s ``axis``); see FakeQuantizeLearnablePerChannel."""
    name = "_fake_quantize_learnable_per_channel_affine"
    _float(name, input)
    _on_cpu(name, input)
    for what, t in (("scale", scale), ("zero_point", zero_point)):
        if not isinstance(t, Tensor) or t.ndim != 1 or t.data.dtype.kind != "f":
            raise RuntimeError(f"{name}: {what} must be a 1-D float tensor")
    quant_min, quant_max = int(quant_min), int(quant_max)
    _check_range(name, quant_min, quant_max)
    ndim = input.ndim
    if not -ndim <= axis < ndim:
        raise IndexError(f"{name}: axis {axis} is out of range for a tensor of {ndim} dims")
    axis %= ndim
    size = input.shape[axis]
    if scale.numel() != size or zero_point.numel() != size:
        raise RuntimeError(f"{name}: expected {size} scales and zero points (the size of axis "
                           f"{axis} of shape {input.shape}), got {scale.numel()} and "
                           f"{zero_point.numel()}")
    if not np.all(scale.numpy() > 0):
        raise RuntimeError(f"{name}: scales must be positive, got {scale.numpy().tolist()}")
    return FakeQuantizeLearnablePerChannel.apply(input, scale, zero_point, axis=axis,
                                                 quant_min=quant_min, quant_max=quant_max,
                                                 grad_factor=float(grad_factor))
