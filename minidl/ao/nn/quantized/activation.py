"""Quantized activations and dropout (torch.ao.nn.quantized.LeakyReLU, Sigmoid, ELU,
Softmax, Dropout): quint8 (or qint8) in, requantized to the output's scale and zero point, as torch's
vectorized CPU kernels compute it, in float32:

- LeakyReLU: the input dequantized as ``fma(q, s, -s * zp)``, times 1 or the slope,
  quantized as ``rint(y * float32(1 / scale)) + zero_point``;
- Sigmoid: ``(q - zp) * s``, ``1 / (1 + exp(-x))``, the same quantization (1 / scale taken
  in double, as torch's);
- ELU: the fma dequantization, ``alpha * expm1(x)`` below 0, the same quantization.

The elementwise float steps are those of torch's kernels; exp and expm1 are NumPy's, which
may differ from torch's vectorized ones in the last bit, so an output exactly at a rounding
tie can land one step away (tests/test_quantization_models.py measures it). Dropout is the
identity on quantized tensors, as torch's."""
from __future__ import annotations

import numpy as np

from .... import nn
from ....tensor import Tensor
from ...quantization._qmath import dequantize_fma, dequantize_mul, quantize_vec  # noqa: F401
from ...quantization.qtensor import QTensor, qint8, quint8


def _check_input(name, x):
    if not isinstance(x, QTensor) or x._axis is not None or x.dtype not in (quint8, qint8):
        raise TypeError(f"quantized {name}: expected a quint8 or qint8 per-tensor quantized "
                        f"input, got {getattr(x, 'dtype', type(x).__name__)} (put a QuantStub "
                        "before it)")


def _observed_qparams(mod):
    from ...quantization._observed import _check_observed

    scale, zp = _check_observed(mod).calculate_qparams()
    return float(scale.numpy().reshape(-1)[0]), int(zp.numpy().reshape(-1)[0])


class LeakyReLU(nn.LeakyReLU):
    """leaky_relu on a quantized tensor, requantized with the output's scale and zero point
    (buffers, as torch's)."""

    _resizable_buffers = ("scale", "zero_point")

    def __init__(self, scale, zero_point, negative_slope=1e-2, inplace=False, device=None,
                 dtype=None):
        super().__init__(negative_slope, inplace)
        self.register_buffer("scale", Tensor(np.array(scale, np.float32)))
        self.register_buffer("zero_point", Tensor(np.array(zero_point, np.int64)))

    def forward(self, input):
        _check_input("LeakyReLU", input)
        v = dequantize_fma(input)
        y = v * np.where(v > 0, np.float32(1), np.float32(self.negative_slope))
        scale = float(self.scale.numpy().reshape(-1)[0])
        zp = int(self.zero_point.numpy().reshape(-1)[0])
        ints = quantize_vec(y, np.float32(1) / np.float32(scale), zp, input.dtype)
        return QTensor(ints, input.dtype, scale, zp)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        scale, zp = _observed_qparams(mod)
        return cls(scale, zp, mod.negative_slope, mod.inplace)

    def __repr__(self):
        return f"QuantizedLeakyReLU(negative_slope={self.negative_slope})"


class Sigmoid(nn.Sigmoid):
    """sigmoid on a quantized tensor, with the output's scale and zero point (torch's: not
    state-dict entries)."""

    def __init__(self, output_scale, output_zero_point):
        super().__init__()
        self.output_scale, self.output_zero_point = float(output_scale), int(output_zero_point)

    def forward(self, input):
        from ...quantization._qops import sigmoid

        _check_input("Sigmoid", input)
        return sigmoid(input, self.output_scale, self.output_zero_point)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        return cls(*_observed_qparams(mod))

    def __repr__(self):
        return "Sigmoid()"


class ELU(nn.ELU):
    """elu on a quantized tensor, with the output's scale and zero point (attributes, as
    torch's)."""

    def __init__(self, scale, zero_point, alpha=1.0):
        super().__init__(alpha)
        self.scale, self.zero_point = float(scale), int(zero_point)

    def forward(self, input):
        _check_input("ELU", input)
        v = dequantize_fma(input)
        alpha = np.float32(self.alpha)
        y = np.where(v > 0, v, np.expm1(v) * alpha).astype(np.float32)
        inv = np.float32(1) / np.float32(self.scale)
        return QTensor(quantize_vec(y, inv, self.zero_point, input.dtype), input.dtype,
                       self.scale, self.zero_point)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        scale, zp = _observed_qparams(mod)
        return cls(scale, zp, mod.alpha)

    def __repr__(self):
        return f"QuantizedELU(alpha={self.alpha})"


class Softmax(nn.Softmax):
    """softmax on a quantized tensor, as torch's (x86): dequantized, the float softmax, and
    quantized with the output's scale and zero point. The float exp and sums are minidl's,
    which can differ from torch's in the last bit: a rare tie lands one step away."""

    def __init__(self, dim=None, scale=1.0, zero_point=0):
        super().__init__(dim)
        self.scale, self.zero_point = float(scale), int(zero_point)

    def forward(self, input):
        from ....nn import functional as F
        from ...quantization.qtensor import quantize_per_tensor

        _check_input("Softmax", input)
        dim = self.dim
        if dim is None:  # torch's implicit choice
            dim = 0 if input.ndim in (0, 1, 3) else 1
        y = F.softmax(input.dequantize(), dim)
        return quantize_per_tensor(y, self.scale, self.zero_point, input.dtype)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        scale, zp = _observed_qparams(mod)
        return cls(mod.dim, scale, zp)

    def __repr__(self):
        return f"QuantizedSoftmax(dim={self.dim})"


class Dropout(nn.Dropout):
    """The identity on quantized tensors, in training mode too (torch's placeholder, so that a
    model with dropout converts)."""

    def forward(self, input):
        return input

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        return cls(mod.p, mod.inplace)

    def __repr__(self):
        return f"QuantizedDropout(p={self.p}, inplace={self.inplace})"


__all__ = ["Dropout", "ELU", "LeakyReLU", "Sigmoid", "Softmax"]
