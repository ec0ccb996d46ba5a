"""Arithmetic between activations (torch.ao.nn.quantized.FloatFunctional / QFunctional):
a residual ``add`` cannot be a plain ``+`` in a model that will be quantized, since its
output needs an observer while preparing and a scale and zero point after conversion. The
float model calls ``self.skip_add.add(x, y)`` on a FloatFunctional (whose
``activation_post_process`` is an Identity until ``prepare`` puts an observer there);
``convert`` turns it into a QFunctional that computes on quint8 tensors, as torch's kernels:

- add / add_relu: each input dequantized as ``fma(q, scale, -scale * zero_point)`` in float32,
  summed in float32 (then max(., 0)), and quantized as ``rint(sum * (1 / scale)) + zero_point``;
- mul: ``rint(float32((qa - za) * (qb - zb)) * (sa * sb / s)) + zero_point``;
- cat: each input dequantized and the concatenation quantized with the output's parameters.
"""
from __future__ import annotations

import numpy as np

from .... import nn
from ....nn import functional as F
from ....nn.module import Module
from ...quantization.qtensor import QTensor, quantize_ints, quint8
from ._state import OutputQParamsState


class FloatFunctional(Module):
    """The float model's add, mul, cat and add_relu, each output observed (after prepare)."""

    def __init__(self):
        super().__init__()
        self.activation_post_process = nn.Identity()

    def forward(self, x):
        raise RuntimeError("FloatFunctional is not intended to use the 'forward'. Please use the "
                           "underlying operation")

    def add(self, x, y):
        return self.activation_post_process(x + y)

    def add_scalar(self, x, y):  # not observed: its quantized form shifts the zero point
        return x + y

    def mul(self, x, y):
        return self.activation_post_process(x * y)

    def mul_scalar(self, x, y):
        return x * y

    def cat(self, x, dim=0):
        from .... import cat

        return self.activation_post_process(cat(list(x), dim=dim))

    def add_relu(self, x, y):
        return self.activation_post_process(F.relu(x + y))


def _quantized(name, *xs):
    for x in xs:
        if not isinstance(x, QTensor) or x.dtype is not quint8 or x._axis is not None:
            raise TypeError(f"QFunctional.{name}: expected quint8 per-tensor quantized inputs, "
                            f"got {getattr(x, 'dtype', type(x).__name__)} (quantize the inputs "
                            "first: a QuantStub, or the outputs of quantized modules)")


def _broadcast(name, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise RuntimeError(f"QFunctional.{name}: the shapes {a.shape} and {b.shape} do not "
                           "broadcast") from None


def _dequantize_fma(x):
    """float32 ``fma(q, scale, -scale * zero_point)`` (torch's vectorized dequantize): the
    product of an 8-bit integer and a float32 is exact in float64, and so is its sum with the
    premultiplied zero point (their exponents are close), so one rounding remains."""
    scale = np.float32(x._scale)
    premul = np.float32(scale * np.float32(-x._zero_point))
    return (x._ints.astype(np.float64) * np.float64(scale) + np.float64(premul)).astype(np.float32)


class QFunctional(OutputQParamsState, Module):  # state: torch's scale, zero_point
    """FloatFunctional's operations on quint8 tensors, with the output's scale and zero point
    (see the module's docstring for the arithmetic)."""

    def __init__(self):
        super().__init__()
        self.scale, self.zero_point = 1.0, 0
        self.activation_post_process = nn.Identity()

    def forward(self, x):
        raise RuntimeError("Functional is not intended to use the 'forward'. Please use the "
                           "underlying operation")

    def _out(self, ints, relu=False):
        """quint8's full [0, 255] as torch's kernels (not the observer's range)."""
        lo = max(quint8.qmin, self.zero_point) if relu else quint8.qmin
        ints = np.clip(ints, lo, quint8.qmax).astype(np.uint8)
        return QTensor(ints, quint8, float(self.scale), int(self.zero_point))

    def _quantize_vec(self, y):
        inv = np.float32(1) / np.float32(self.scale)
        with np.errstate(invalid="ignore", over="ignore"):
            return np.rint(y * inv).astype(np.int64) + int(self.zero_point)

    def add(self, x, y):
        _quantized("add", x, y)
        _broadcast("add", x, y)
        return self._out(self._quantize_vec(_dequantize_fma(x) + _dequantize_fma(y)))

    def add_relu(self, x, y):
        _quantized("add_relu", x, y)
        _broadcast("add_relu", x, y)
        s = np.maximum(_dequantize_fma(x) + _dequantize_fma(y), np.float32(0))
        return self._out(self._quantize_vec(s), relu=True)

    def mul(self, x, y):
        _quantized("mul", x, y)
        _broadcast("mul", x, y)
        prod = ((x._ints.astype(np.int64) - x._zero_point)
                * (y._ints.astype(np.int64) - y._zero_point))
        multiplier = (np.float32(x._scale) * np.float32(y._scale)
                      * (np.float32(1) / np.float32(self.scale)))
        ints = np.rint(prod.astype(np.float32) * multiplier).astype(np.int64) + self.zero_point
        return self._out(ints)

    def cat(self, x, dim=0):
        xs = list(x)
        if not xs:
            raise ValueError("QFunctional.cat: expected a non-empty list of quantized tensors")
        _quantized("cat", *xs)
        ndim = xs[0].ndim
        if not -ndim <= dim < ndim:
            raise IndexError(f"QFunctional.cat: dim {dim} is out of range for {ndim}-D inputs")
        rest = [x.shape[:dim % ndim] + x.shape[dim % ndim + 1:] for x in xs]
        if any(r != rest[0] for r in rest):
            raise RuntimeError(f"QFunctional.cat: the shapes {[x.shape for x in xs]} differ "
                               f"outside dim {dim}")
        y = np.concatenate([x.dequantize().numpy() for x in xs], axis=dim)
        return self._out(quantize_ints(y, self.scale, self.zero_point, quint8.qmin,
                                       quint8.qmax, fused=True))

    def add_scalar(self, x, y):
        raise NotImplementedError("QFunctional.add_scalar is not supported here")

    def mul_scalar(self, x, y):
        raise NotImplementedError("QFunctional.mul_scalar is not supported here")

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        from ...quantization._observed import _check_observed

        act = _check_observed(mod)
        scale, zp = act.calculate_qparams()
        out = cls()
        out.scale, out.zero_point = float(scale.numpy().reshape(-1)[0]), int(zp.numpy().reshape(-1)[0])
        return out

    def extra_repr(self):
        return f"scale={self.scale}, zero_point={self.zero_point}"

    def __repr__(self):
        return f"QFunctional(scale={self.scale}, zero_point={self.zero_point})"


__all__ = ["FloatFunctional", "QFunctional"]
