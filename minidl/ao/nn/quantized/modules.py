"""Statically quantized modules (torch.ao.nn.quantized): they take and give quantized
tensors, with the output's scale and zero point fixed at conversion (from the observer or
FakeQuantize that watched that output while preparing or training)."""
from __future__ import annotations

import numpy as np

from ....nn.module import Module
from ....tensor import Tensor
from ...quantization.qtensor import (
    QTensor, keep_layout, qint8, quantize_ints, quantize_per_tensor, quint8,
)
from ._requant import requantize, weight_scales
from ._state import (
    OutputQParamsState, check_packed, check_scale_zero_point, load_packed, load_scale_zero_point,
    packed_metadata, scale_zero_point_state, weight_observer,
)
from .._fused import _FusedModule


def _qparams(fake_quant):
    scale, zp = fake_quant.calculate_qparams()
    return scale.numpy().astype(np.float64), zp.numpy().astype(np.int64)


class Quantize(OutputQParamsState, Module):
    """float -> quint8 with a fixed scale and zero point, clamped to the dtype's full range
    as torch's (not to the observer's [quant_min, quant_max]: [0, 127] with reduce_range)."""

    def __init__(self, scale, zero_point, dtype, factory_kwargs=None):
        super().__init__()
        self.scale, self.zero_point, self.dtype = float(scale), int(zero_point), dtype

    _qparams_shape = (1,)  # torch's buffers: float32 (1,), int64 (1,)

    @property
    def _qparams_dtype(self):
        return self.dtype

    def forward(self, x):
        return quantize_per_tensor(x, self.scale, self.zero_point, self.dtype)

    @classmethod
    def from_float(cls, mod):
        fq = mod.activation_post_process
        scale, zp = _qparams(fq)
        return cls(scale[0], zp[0], fq.dtype)

    def extra_repr(self):
        return f"scale=tensor([{self.scale:.4f}]), zero_point=tensor([{self.zero_point}]), dtype={self.dtype}"


class DeQuantize(Module):
    """quantized -> float."""

    def forward(self, x):
        return x.dequantize()

    @classmethod
    def from_float(cls, mod):
        return cls()


class ReLU(Module):
    """max(x, 0) on a quantized tensor: max(q, zero_point), same scale and zero point (exact:
    0.0 is a point of the grid)."""

    def forward(self, x):
        if not isinstance(x, QTensor):
            raise TypeError(f"quantized ReLU: expected a quantized tensor, got "
                            f"{type(x).__name__} (put a QuantStub before it)")
        if x._axis is not None:
            raise NotImplementedError("quantized ReLU: per-tensor quantized input only")
        ints = np.maximum(x._ints, x._ints.dtype.type(x._zero_point))
        return keep_layout(QTensor(ints, x.dtype, x._scale, x._zero_point), x)

    @classmethod
    def from_float(cls, mod):
        return cls()


class Linear(Module):
    """quint8 input, qint8 weight (per tensor or per output channel), float bias, quint8
    output: ``acc = sum_k (qx - zx) (qw - zw)`` (exact integers), requantized as fbgemm's
    (``_requant.requantize``: the bias divided by ``sx * sw``, added in float32, times
    ``sx * sw / scale``) to the output's grid, clamped to quint8's full [0, 255] as torch's
    (only the scale and zero point come from the observer or FakeQuantize that watched it)."""

    def __init__(self, in_features, out_features, bias_=True, dtype=qint8):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._weight = quantize_per_tensor(Tensor(np.zeros((out_features, in_features),
                                                           np.float32)), 1.0, 0, qint8)
        self._bias = Tensor(np.zeros(out_features, np.float32)) if bias_ else None
        self.scale, self.zero_point = 1.0, 0

    _version = 3  # torch's: the weight and bias packed in _packed_params
    _relu = False
    _NAME = "QuantizedLinear"

    def _own_state(self, prefix, keep_vars):  # torch's keys
        yield from scale_zero_point_state(self, prefix)
        yield prefix + "_packed_params.dtype", qint8
        yield prefix + "_packed_params._packed_params", (self._weight, self._bias)

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        return packed_metadata(super().state_dict(destination, prefix, keep_vars), prefix)

    def _check_own_state(self, given, prefix):
        problems = check_packed(self, given, prefix)
        check_scale_zero_point(given, prefix, quint8)
        return problems

    def _load_own_state(self, given, prefix):
        """The output's scale and zero point, the weight and the bias, from the checked
        entries."""
        load_packed(self, given, prefix)
        load_scale_zero_point(self, given, prefix)

    def weight(self):
        return self._weight

    def bias(self):
        return self._bias

    def forward(self, x):
        if not isinstance(x, QTensor) or x.dtype is not quint8 or x._axis is not None:
            raise TypeError(f"quantized Linear: expected a quint8 per-tensor quantized input, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} (put a QuantStub before it)")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"quantized Linear: input has {x.shape[-1]} features, the layer "
                             f"expects {self.in_features}")
        w = self._weight
        qx = x._ints.reshape(-1, self.in_features).astype(np.int64) - int(x._zero_point)
        w_scale, w_zp = weight_scales(w, self.out_features)
        acc = qx @ (w._ints.astype(np.int64) - w_zp.reshape(-1, 1)).T  # exact integer sums
        bias = None if self._bias is None else self._bias.numpy()
        ints = requantize(acc, x._scale, w_scale, bias, self.scale, self.zero_point,
                          self._relu)
        ints = ints.astype(np.uint8).reshape(*x.shape[:-1], self.out_features)
        return QTensor(ints, quint8, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, mod):
        """From a qat.Linear (its ``weight_fake_quant``) or a prepared nn.Linear (a weight
        observer from its qconfig, run on the weight now), and the FakeQuantize or observer
        that watched its output (``activation_post_process``)."""
        from ...quantization._observed import _check_observed
        from .conv import quantize_weight

        act = _check_observed(mod)
        linear = mod[0] if isinstance(mod, _FusedModule) else mod
        weight_fq = weight_observer(cls, mod)
        weight, bias = linear.weight, linear.bias
        bn = getattr(mod, "bn", None)
        if bn is not None and hasattr(mod, "weight_fake_quant"):  # a QAT LinearBn1d
            from ....nn._fusion import fuse_linear_bn_weights

            weight, bias = fuse_linear_bn_weights(weight, bias, bn.running_mean, bn.running_var,
                                                  bn.eps, bn.weight, bn.bias)
        weight = weight.detach()
        weight_fq(weight)
        out = cls(linear.in_features, linear.out_features, bias_=bias is not None)
        out._weight = quantize_weight(weight, weight_fq)
        out._bias = None if bias is None else Tensor(bias.detach().numpy().astype(np.float32))
        scale, zp = _qparams(act)
        out.scale, out.zero_point = float(scale[0]), int(zp[0])
        return out

    def __repr__(self):
        return (f"{self._NAME}(in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, zero_point={self.zero_point}, qscheme={self._weight.qscheme()})")


def _quantize_val(scale, zero_point, value):
    return int(quantize_ints(np.float32(value), scale, zero_point, quint8.qmin, quint8.qmax,
                             fused=True))


class ReLU6(Module):
    """min(max(x, 0), 6) on a quint8 tensor: its integers clamped to [zero_point, q(6.0)]
    (torch's quantized hardtanh), the same scale and zero point."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        if not isinstance(x, QTensor) or x._axis is not None:
            raise TypeError(f"quantized ReLU6: expected a per-tensor quantized tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} (put a QuantStub before it)")
        six = _quantize_val(x._scale, x._zero_point, 6.0)
        ints = np.clip(x._ints, x._ints.dtype.type(x._zero_point), x._ints.dtype.type(six))
        return keep_layout(QTensor(ints, x.dtype, x._scale, x._zero_point), x)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        return cls(getattr(mod, "inplace", False))

    def __repr__(self):
        return "QuantizedReLU6()"


class Hardswish(OutputQParamsState, Module):
    """x * relu6(x + 3) / 6 on a quint8 tensor, requantized with the output's scale and zero
    point, as torch's kernel: the input dequantized as fma(q, s, -s * zp) in float32, the
    formula in float32, and ``rint(y * float32(1 / scale)) + zero_point`` clamped to quint8's
    full [0, 255]."""

    def __init__(self, scale, zero_point, device=None, dtype=None):
        super().__init__()
        self.scale, self.zero_point = float(scale), int(zero_point)

    def forward(self, x):
        from .functional_modules import _dequantize_fma

        if not isinstance(x, QTensor) or x.dtype is not quint8 or x._axis is not None:
            raise TypeError(f"quantized Hardswish: expected a quint8 per-tensor quantized input, "
                            f"got {getattr(x, 'dtype', type(x).__name__)}")
        v = _dequantize_fma(x)
        f = np.float32
        y = v * np.minimum(np.maximum(v + f(3), f(0)), f(6)) / f(6)
        inv = np.float32(1.0 / self.scale)  # torch takes 1 / scale in double here
        ints = np.rint(y * inv).astype(np.int64) + self.zero_point
        ints = np.clip(ints, quint8.qmin, quint8.qmax).astype(np.uint8)
        return keep_layout(QTensor(ints, quint8, self.scale, self.zero_point), x)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        from ...quantization._observed import _check_observed

        act = _check_observed(mod)
        scale, zp = _qparams(act)
        return cls(scale[0], zp[0])

    def __repr__(self):
        return "QuantizedHardswish()"
