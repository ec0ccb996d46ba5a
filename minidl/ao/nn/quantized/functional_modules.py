"""Arithmetic between activations (torch.ao.nn.quantized.FloatFunctional / QFunctional):
a residual ``add`` cannot be a plain ``+`` in a model that will be quantized, since its
output needs an observer while preparing and a scale and zero point after conversion. The
float model calls ``self.skip_add.add(x, y)`` on a FloatFunctional (whose
``activation_post_process`` is an Identity until ``prepare`` puts an observer there);
``convert`` turns it into a QFunctional that computes on quint8 tensors, as torch's kernels:

- add / add_relu: each input dequantized as ``fma(q, scale, -scale * zero_point)`` in float32,
  summed in float32 (then max(., 0)), and quantized as ``rint(sum * (1 / scale)) + zero_point``;
- mul: ``rint(float32((qa - za) * (qb - zb)) * (sa * sb / s)) + zero_point``;
- cat: each input dequantized and the concatenation quantized with the output's parameters;
- matmul: both dequantized, multiplied in float32, quantized with the output's parameters;
- add_scalar / mul_scalar: not observed; the output's scale and zero point follow from the
  input's and the number, as torch's (see ``add_scalar`` and ``mul_scalar`` below).
"""
from __future__ import annotations

import warnings

import numpy as np

from .... import nn
from ....nn import functional as F
from ....nn.module import Module
from ...quantization._qmath import dequantize_fma as _dequantize_fma
from ...quantization.qtensor import QTensor, keep_layout, qint8, quantize_ints, quint8
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

    def matmul(self, x, y):
        from .... import matmul

        return self.activation_post_process(matmul(x, y))


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


def _scalar_input(name, x, y):
    if not isinstance(x, QTensor) or x._axis is not None or x.dtype not in (quint8, qint8):
        raise TypeError(f"QFunctional.{name}: expected a quint8 or qint8 per-tensor quantized "
                        f"tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if hasattr(y, "item") and not isinstance(y, (int, float)):
        y = y.item()
    if isinstance(y, bool) or not isinstance(y, (int, float, np.integer, np.floating)):
        raise TypeError(f"QFunctional.{name}: the scalar must be a number, got "
                        f"{type(y).__name__}")
    if not np.isfinite(y):
        raise ValueError(f"QFunctional.{name}: the scalar must be finite, got {y}")
    return float(y)


def add_scalar(x, c):
    """torch's ``quantized::add_scalar``: with ``c_q = nearbyint(c / s)``, the integers stay
    and the zero point moves to ``z - c_q`` while that fits the dtype; past either end the
    zero point sticks there and the scale widens to hold the shifted range,
    ``s' = (qmax - (z - c_q)) / (qmax - qmin) * s`` (or ``(z - c_q - qmin) / ...``), and the
    integers are requantized as ``rint(float32(q - z + c_q) * float32(s / s')) + z'``."""
    c = _scalar_input("add_scalar", x, c)
    dtype, s, z = x.dtype, float(x._scale), int(x._zero_point)
    qmin, qmax = dtype.qmin, dtype.qmax
    c_q = int(np.rint(c / s))
    if qmin <= z - c_q <= qmax:
        return QTensor(x._ints.copy(), dtype, s, z - c_q)
    if z - c_q < qmin:
        s_out, z_out = (qmax - (z - c_q)) / (qmax - qmin) * s, qmin
    else:
        s_out, z_out = ((z - c_q) - qmin) / (qmax - qmin) * s, qmax
    multiplier = np.float32(s) * (np.float32(1) / np.float32(s_out))
    shifted = (x._ints.astype(np.int64) - z + c_q).astype(np.float32)
    ints = np.rint(shifted * multiplier).astype(np.int64) + z_out
    return QTensor(np.clip(ints, qmin, qmax).astype(dtype.storage), dtype, s_out, z_out)


def mul_scalar(x, c):
    """torch's ``quantized::mul_scalar``: only the quantization parameters change, exactly:
    ``c > 0`` scales the scale (``s * c``, the integers kept); ``c == 0`` gives zeros with
    scale 1.0 and zero point 0; ``c < 0`` mirrors the integers (``qmax + qmin - q``) with
    scale ``s * |c|`` and zero point ``qmax + qmin - z``."""
    c = _scalar_input("mul_scalar", x, c)
    dtype, s, z = x.dtype, float(x._scale), int(x._zero_point)
    if c > 0:
        return QTensor(x._ints.copy(), dtype, c * s, z)
    if c == 0:
        return QTensor(np.zeros_like(x._ints), dtype, 1.0, 0)
    mirrored = (dtype.qmax + dtype.qmin - x._ints.astype(np.int64)).astype(dtype.storage)
    return QTensor(mirrored, dtype, abs(c) * s, dtype.qmax + dtype.qmin - z)


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
        return keep_layout(self._out(self._quantize_vec(_dequantize_fma(x) + _dequantize_fma(y))),
                           x)

    def add_relu(self, x, y):
        _quantized("add_relu", x, y)
        _broadcast("add_relu", x, y)
        s = np.maximum(_dequantize_fma(x) + _dequantize_fma(y), np.float32(0))
        return keep_layout(self._out(self._quantize_vec(s), relu=True), x)

    def mul(self, x, y):
        _quantized("mul", x, y)
        _broadcast("mul", x, y)
        prod = ((x._ints.astype(np.int64) - x._zero_point)
                * (y._ints.astype(np.int64) - y._zero_point))
        multiplier = (np.float32(x._scale) * np.float32(y._scale)
                      * (np.float32(1) / np.float32(self.scale)))
        ints = np.rint(prod.astype(np.float32) * multiplier).astype(np.int64) + self.zero_point
        return keep_layout(self._out(ints), x)

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
        return keep_layout(self._out(quantize_ints(y, self.scale, self.zero_point, quint8.qmin,
                                                   quint8.qmax, fused=True)), xs[0])

    def matmul(self, x, y):
        """``x @ y`` of two quantized tensors of one dtype, as torch's ``quantized::matmul``:
        both dequantized, multiplied in float32, and quantized with the output's scale and
        zero point (in their dtype). The float products' sums are NumPy's, in another order
        than torch's: a rare tie can land one step away."""
        for t in (x, y):
            if not isinstance(t, QTensor) or t._axis is not None or t.dtype is not x.dtype \
                    or x.dtype not in (quint8, qint8):
                raise TypeError("QFunctional.matmul: expected two per-tensor quantized tensors "
                                "of one dtype (quint8 or qint8), got "
                                f"{getattr(x, 'dtype', type(x).__name__)} and "
                                f"{getattr(y, 'dtype', type(y).__name__)}")
        a, b = x.dequantize().numpy(), y.dequantize().numpy()
        try:
            prod = np.matmul(a, b).astype(np.float32)
        except ValueError:
            raise RuntimeError(f"QFunctional.matmul: the shapes {x.shape} and {y.shape} cannot "
                               "be multiplied") from None
        dtype = x.dtype
        ints = quantize_ints(prod, self.scale, self.zero_point, dtype.qmin, dtype.qmax,
                             fused=True)
        return QTensor(ints.astype(dtype.storage), dtype, float(self.scale), int(self.zero_point))

    def add_scalar(self, x, y):
        """``x + y`` for a number ``y``, as torch's ``quantized::add_scalar``: not observed,
        the output's scale and zero point are chosen from x's (see ``add_scalar``)."""
        return add_scalar(x, y)

    def mul_scalar(self, x, y):
        """``x * y`` for a number ``y``, as torch's ``quantized::mul_scalar`` (see
        ``mul_scalar``)."""
        return mul_scalar(x, y)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        from ...quantization._observed import _check_observed, _unused_functional

        out = cls()
        if _unused_functional(mod):  # torch's defaults, with its warning
            warnings.warn("must run observer before calling calculate_qparams. Returning default "
                          "scale and zero point (the FloatFunctional was never called while "
                          "the model was calibrated or trained)", stacklevel=2)
            return out
        act = _check_observed(mod)
        scale, zp = act.calculate_qparams()
        out.scale, out.zero_point = float(scale.numpy().reshape(-1)[0]), int(zp.numpy().reshape(-1)[0])
        return out

    def extra_repr(self):
        return f"scale={self.scale}, zero_point={self.zero_point}"

    def __repr__(self):
        return f"QFunctional(scale={self.scale}, zero_point={self.zero_point})"


__all__ = ["FloatFunctional", "QFunctional", "add_scalar", "mul_scalar"]
