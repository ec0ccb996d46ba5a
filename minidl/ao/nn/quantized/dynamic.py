"""Dynamically quantized modules: int8 weights quantized once, activations quantized to uint8
per batch from that batch's own min and max; the products are added in int32 and the result
scaled back to float (torch.ao.nn.quantized.dynamic)."""
from __future__ import annotations

import numpy as np

from ....nn.module import Module
from ....tensor import Tensor
from ...quantization.qtensor import QTensor, qint8, quantize_ints, quantize_per_tensor
from ._state import check_packed, packed_metadata, load_packed

# fbgemm's smallest scale (quant_utils.h): a smaller one would make 1/scale overflow float32
SMALL_SCALE_THRESHOLD = 6.1e-5


def choose_qparams(x_min, x_max, qmin, qmax):
    """(scale, zero_point) for values in [x_min, x_max], as fbgemm's ChooseQuantizationParams
    (what torch's dynamic Linear uses per batch): the range widened to hold 0, scale =
    range / (qmax - qmin) in float64 then float32, and the zero point taken from whichever end
    (min or max) loses less to rounding, nudged to an integer in [qmin, qmax]."""
    lo, hi = min(float(x_min), 0.0), max(float(x_max), 0.0)
    scale = (hi - lo) / (qmax - qmin)
    if np.float32(scale) == 0 or np.isinf(np.float32(1) / np.float32(scale)):
        scale = 0.1
    if scale < SMALL_SCALE_THRESHOLD:  # widen the range so that the scale is the threshold
        org = scale
        scale = SMALL_SCALE_THRESHOLD
        if lo == 0:
            hi = scale * (qmax - qmin)
        elif hi == 0:
            lo = -scale * (qmax - qmin)
        else:
            amplifier = SMALL_SCALE_THRESHOLD / org
            lo *= amplifier
            hi *= amplifier
    zp_from_min = qmin - lo / scale
    zp_from_max = qmax - hi / scale
    err_min = abs(qmin) - abs(lo / scale)
    err_max = abs(qmax) - abs(hi / scale)
    zp = zp_from_min if err_min < err_max else zp_from_max
    zp = qmin if zp < qmin else qmax if zp > qmax else int(np.rint(zp))
    return float(np.float32(scale)), int(zp)


class Linear(Module):
    """y = x W^T + b with W stored as qint8 (per tensor): each forward quantizes x to uint8
    with its own min/max (7 bits with ``reduce_range``, as on x86: fbgemm adds pairs of
    uint8*int8 products in int16, which 8 bits could overflow), multiplies the integers with
    int32 sums, and scales the sums back by ``x_scale * w_scale``."""

    _version = 4

    def __init__(self, in_features, out_features, bias_=True, dtype=qint8):
        super().__init__()
        if dtype is not qint8:
            raise NotImplementedError(f"dynamic Linear: only qint8 weights are supported, got "
                                      f"{dtype}")
        self.in_features, self.out_features = in_features, out_features
        self._weight = quantize_per_tensor(Tensor(np.zeros((out_features, in_features),
                                                           np.float32)), 1.0, 0, qint8)
        self._bias = Tensor(np.zeros(out_features, np.float32)) if bias_ else None
        self.reduce_range = True

    def weight(self):
        return self._weight

    def bias(self):
        return self._bias

    def set_weight_bias(self, w, b):
        if not isinstance(w, QTensor) or w.dtype is not qint8:
            raise TypeError(f"dynamic Linear: the weight must be a qint8 quantized tensor, got "
                            f"{getattr(w, 'dtype', type(w).__name__)}")
        if w.shape != (self.out_features, self.in_features):
            raise ValueError(f"dynamic Linear: weight of shape {w.shape}, expected "
                             f"{(self.out_features, self.in_features)}")
        self._weight, self._bias = w, b

    def forward(self, x):
        if not isinstance(x, Tensor) or x.data.dtype != np.float32:
            raise TypeError(f"dynamic Linear: expected a float32 input, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"dynamic Linear: input has {x.shape[-1]} features, the layer "
                             f"expects {self.in_features}")
        a = x.numpy().reshape(-1, self.in_features)
        qmax = 127 if self.reduce_range else 255
        if a.size:
            x_scale, x_zp = choose_qparams(a.min(), a.max(), 0, qmax)
        else:
            x_scale, x_zp = choose_qparams(0.0, 0.0, 0, qmax)
        xq = quantize_ints(a, x_scale, x_zp, 0, qmax, fused=True).astype(np.int32)
        w = self._weight
        wq = w._ints.astype(np.int32) - np.int32(w._zero_point)
        # each product fits 16 bits; their sum over in_features needs up to 32 (no overflow
        # below 2**31 / (255 * 128), about 65000 features)
        acc = (xq - np.int32(x_zp)) @ wq.T
        # fbgemm's epilogue: float(acc) * (x_scale * w_scale) + bias as one fused multiply-add
        # (float64 holds the float32 product exactly, so only the final rounding remains)
        y = acc.astype(np.float32).astype(np.float64) * np.float64(
            np.float32(x_scale) * np.float32(w._scale))
        if self._bias is not None:
            y = y + self._bias.numpy().astype(np.float32)
        return Tensor(y.astype(np.float32).reshape(*x.shape[:-1], self.out_features))

    @classmethod
    def from_float(cls, mod, weight_observer=None):
        """The dynamic Linear of float ``mod``: its weight quantized with ``weight_observer``
        (or its qconfig's weight observer, else int8 symmetric per tensor)."""
        from ...quantization.qconfig import default_dynamic_qconfig

        if weight_observer is None:
            qconfig = getattr(mod, "qconfig", None) or default_dynamic_qconfig
            weight_observer = qconfig.weight()
        if weight_observer.dtype is not qint8:
            raise NotImplementedError(f"dynamic Linear: weight observer dtype {weight_observer.dtype} "
                                      "is not supported (qint8 only)")
        weight = mod.weight.detach()
        weight_observer(weight)
        scale, zp = weight_observer.calculate_qparams()
        if scale.numel() != 1:
            raise NotImplementedError("dynamic Linear: per-channel weight quantization is not "
                                      "supported here (per-tensor only)")
        qweight = quantize_per_tensor(weight, float(scale.item()), int(zp.item()), qint8)
        out = cls(mod.in_features, mod.out_features, bias_=mod.bias is not None)
        bias = None if mod.bias is None else Tensor(mod.bias.detach().numpy().astype(np.float32))
        out.set_weight_bias(qweight, bias)
        return out

    def __repr__(self):
        return f"DynamicQuantizedLinear({self.extra_repr()})"  # torch's name for it

    def _own_state(self, prefix, keep_vars):
        # torch keeps an output scale and zero point (unused by the dynamic forward) too
        yield prefix + "scale", Tensor(np.array(1.0, np.float32))
        yield prefix + "zero_point", Tensor(np.array(0, np.int64))
        yield prefix + "_packed_params.dtype", qint8
        yield prefix + "_packed_params._packed_params", (self._weight, self._bias)

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        return packed_metadata(super().state_dict(destination, prefix, keep_vars), prefix)

    def _check_own_state(self, given, prefix):
        return check_packed(self, given, prefix, per_tensor_only=True)

    def _load_own_state(self, given, prefix):  # scale and zero_point: unused, as in torch
        load_packed(self, given, prefix)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={qint8}, qscheme={self._weight.qscheme()}")
