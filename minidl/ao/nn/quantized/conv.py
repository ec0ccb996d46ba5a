"""Statically quantized convolutions (torch.ao.nn.quantized.Conv1d/Conv2d): a quint8 input,
a qint8 weight (per tensor or per output channel), a float bias and a quint8 output with the
scale and zero point fixed at conversion. The sums of products of the zero-point-shifted
integers are exact; fbgemm's requantization turns them into the output's integers."""
from __future__ import annotations

import numpy as np

from ....nn._functional.convolution import _ntuple
from ....nn.module import Module
from ....tensor import Tensor
from ....nn.module import StateDictKeyError, StateDictValueError
from ...quantization.qtensor import (
    QTensor, keep_layout, per_channel_affine, per_channel_symmetric, qint8, quantize_per_channel,
    quantize_per_tensor, quint8,
)
from ._requant import int_conv, requantize, weight_scales
from ._state import (
    _describe, _host, _owner, as_qtensor, check_scale_zero_point, load_scale_zero_point,
    float_bias, scale_zero_point_state, weight_observer,
)
from .._fused import _FusedModule

_PADDING_MODES = ("zeros", "reflect")


def _qparams(observer):
    scale, zp = observer.calculate_qparams()
    return scale.numpy().astype(np.float64), zp.numpy().astype(np.int64)


def quantize_weight(weight, observer):
    """``weight`` (a float Tensor) as qint8 with the qparams ``observer`` chose (run it on the
    weight first): per channel along its ``ch_axis`` or per tensor."""
    if observer.dtype is not qint8:
        raise NotImplementedError(f"quantized weights are qint8 here; the weight observer's "
                                  f"dtype is {observer.dtype}")
    scale, zp = _qparams(observer)
    if scale.size > 1 or observer.qscheme in (per_channel_affine, per_channel_symmetric):
        return quantize_per_channel(weight, scale, zp, observer.ch_axis, qint8)
    return quantize_per_tensor(weight, float(scale[0]), int(zp[0]), qint8)


class _ConvNd(Module):
    _dims = 2
    _relu = False
    _NAME = "QuantizedConv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        name, n = type(self).__name__, self._dims
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"quantized {name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        if isinstance(padding, str):
            raise ValueError(f"quantized {name}: padding must be ints, got {padding!r}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"quantized {name}: padding_mode must be one of {_PADDING_MODES} "
                             f"(as torch's quantized convolutions), got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _ntuple(kernel_size, n, f"{name}: kernel_size")
        self.stride = _ntuple(stride, n, f"{name}: stride")
        self.padding = _ntuple(padding, n, f"{name}: padding")
        self.dilation = _ntuple(dilation, n, f"{name}: dilation")
        self.transposed, self.output_padding = False, (0,) * n
        self.groups, self.padding_mode = groups, padding_mode
        self._weight = quantize_per_tensor(Tensor(np.zeros(self._weight_shape(), np.float32)),
                                           1.0, 0, qint8)
        self._bias = Tensor(np.zeros(out_channels, np.float32)) if bias else None
        self.scale, self.zero_point = 1.0, 0

    def _weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    # ---- torch's accessors --------------------------------------------------------------
    def weight(self):
        return self._weight

    def bias(self):
        return self._bias

    def _weight_bias(self):
        return self._weight, self._bias

    def set_weight_bias(self, w, b):
        name = type(self).__name__
        if not isinstance(w, QTensor) or w.dtype is not qint8:
            raise TypeError(f"quantized {name}: the weight must be a qint8 quantized tensor, got "
                            f"{getattr(w, 'dtype', type(w).__name__)}")
        expected = self._weight_shape()
        if w.shape != expected:
            raise ValueError(f"quantized {name}: weight of shape {w.shape}, expected {expected}")
        if w._axis not in (None, 0):
            raise ValueError(f"quantized {name}: a per-channel weight must be quantized along "
                             f"axis 0 (output channels), got axis {w._axis}")
        if b is not None:
            b = b if isinstance(b, Tensor) else Tensor(np.asarray(b, np.float32))
            if b.shape != (self.out_channels,):
                raise ValueError(f"quantized {name}: bias of shape {b.shape}, expected "
                                 f"{(self.out_channels,)}")
            b = Tensor(np.array(b.numpy(), np.float32))
        self._weight, self._bias = w, b

    # ---- forward ------------------------------------------------------------------------
    def _check_input(self, x):
        """A quint8 per-tensor quantized input of this layer's rank and channels."""
        name = type(self).__name__
        if not isinstance(x, QTensor) or x.dtype is not quint8 or x._axis is not None:
            raise TypeError(f"quantized {name}: expected a quint8 per-tensor quantized input, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} (put a QuantStub before it)")
        if x.ndim != self._dims + 2:
            raise ValueError(f"quantized {name}: expected a {self._dims + 2}-D input (N, C, ...), "
                             f"got shape {x.shape}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"quantized {name}: input has {x.shape[1]} channels, the layer "
                             f"expects {self.in_channels}")

    def forward(self, x):
        self._check_input(x)
        ints = x._ints.astype(np.int64)
        padding = self.padding
        if self.padding_mode == "reflect" and any(padding):
            ints = np.pad(ints, [(0, 0), (0, 0)] + [(p, p) for p in padding], mode="reflect")
            padding = (0,) * self._dims
        for size, k, p, d in zip(ints.shape[2:], self.kernel_size, padding, self.dilation):
            if size + 2 * p < d * (k - 1) + 1:
                raise ValueError(f"quantized {type(self).__name__}: input of shape {x.shape} (padded by "
                                 f"{self.padding}) is smaller than the kernel {self.kernel_size} "
                                 f"(dilation {self.dilation})")
        w = self._weight
        w_scale, w_zp = weight_scales(w, self.out_channels)
        wi = w._ints.astype(np.int64) - w_zp.reshape((-1,) + (1,) * (self._dims + 1))
        acc = int_conv(ints - int(x._zero_point), wi, self.stride, padding, self.dilation,
                       self.groups)
        bias = None if self._bias is None else self._bias.numpy()
        out = requantize(acc, x._scale, w_scale, bias, self.scale, self.zero_point,
                         self._relu)
        return keep_layout(QTensor(out.astype(np.uint8), quint8, float(self.scale),
                                   int(self.zero_point)), None, self._dims == 2)

    # ---- from a float, QAT or fused module ----------------------------------------------
    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """From a prepared nn.Conv (a weight observer from its qconfig, run on the weight
        now), a qat.Conv (its ``weight_fake_quant``), a fused ConvReLU, or a QAT ConvBn
        (the batch norm's running statistics folded into the weight and bias first), with
        the observer or FakeQuantize that watched its output."""
        from ...quantization._observed import _check_observed

        conv, weight, bias = _float_parts(mod)
        act = _check_observed(mod)
        weight_fq = weight_observer(cls, mod)
        weight_fq(weight)
        out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, bias is not None, conv.padding_mode)
        out.set_weight_bias(quantize_weight(weight, weight_fq), bias)
        scale, zp = _qparams(act)
        out.scale, out.zero_point = float(scale[0]), int(zp[0])
        return out

    # ---- state dict: torch's keys (weight, bias, scale, zero_point) ---------------------
    def _own_state(self, prefix, keep_vars):
        yield prefix + "weight", self._weight
        yield prefix + "bias", self._bias
        yield from scale_zero_point_state(self, prefix)

    def _check_own_state(self, given, prefix):
        key = prefix + "weight"
        problems = []
        if key in given:
            qweight = as_qtensor(given[key])
            if qweight is None:
                what = _describe(given[key])
                if getattr(given[key], "is_quantized", False) is not True:
                    raise StateDictKeyError(
                        f"load_state_dict: {key} is a float weight ({what}), but "
                        f"{_owner(prefix)} is a quantized {type(self).__name__} (it expects a "
                        "qint8 quantized weight): load the float state_dict into the float model "
                        "and quantize that, or load a state_dict saved from a model quantized "
                        "the same way")
                raise StateDictValueError(f"load_state_dict: {key!r} must be a qint8 quantized "
                                          f"tensor, got {what}")
            if qweight.dtype is not qint8:
                raise StateDictValueError(f"load_state_dict: {key!r} must be a qint8 quantized "
                                          f"tensor, got one of dtype {qweight.dtype}")
            if qweight._axis not in (None, 0):
                raise StateDictValueError(f"load_state_dict: {key!r} is quantized per channel "
                                          f"along axis {qweight._axis}; {_owner(prefix)} takes "
                                          "axis 0 (output channels)")
            expected = self._weight_shape()
            if qweight.shape != expected:
                problems.append(f"{key}: checkpoint {qweight.shape}, model {expected}")
        key = prefix + "bias"
        if key in given and given[key] is not None:
            arr = float_bias(given[key], repr(key))
            if self._bias is None or arr.shape != (self.out_channels,):
                model = None if self._bias is None else (self.out_channels,)
                problems.append(f"{key}: checkpoint {arr.shape}, model {model}")
        elif key in given and self._bias is not None:
            problems.append(f"{key}: checkpoint None, model {(self.out_channels,)}")
        check_scale_zero_point(given, prefix, quint8)
        return problems

    def _load_own_state(self, given, prefix):
        if prefix + "weight" in given:
            self._weight = as_qtensor(given[prefix + "weight"])
        if prefix + "bias" in given:
            b = given[prefix + "bias"]
            self._bias = None if b is None else Tensor(np.array(_host(b), np.float32))
        load_scale_zero_point(self, given, prefix)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, scale={self.scale}, zero_point={self.zero_point}")
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self._bias is None:
            s += ", bias=False"
        return s

    def __repr__(self):
        return f"{self._NAME}({self.extra_repr()})"


def _float_parts(mod):
    """(the conv module, its float weight, its float bias) of a float, QAT or fused module;
    a QAT ConvBn's batch norm is folded in with its running statistics, as torch's convert."""
    from ....nn._fusion import fuse_conv_bn_weights

    conv = mod[0] if _is_fused_float(mod) else mod
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    bn = getattr(mod, "bn", None)
    if bn is not None and hasattr(mod, "weight_fake_quant"):
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                    bn.eps, bn.weight, bn.bias)
        weight, bias = w.detach(), b.detach()
    return conv, weight, bias


def _is_fused_float(mod):
    return isinstance(mod, _FusedModule)


class Conv1d(_ConvNd):
    """Quantized 1-D convolution over (N, C, L) quint8 inputs."""

    _dims = 1
    _NAME = "QuantizedConv1d"


class Conv2d(_ConvNd):
    """Quantized 2-D convolution over (N, C, H, W) quint8 inputs."""

    _NAME = "QuantizedConv2d"


class Conv3d(_ConvNd):
    """Quantized 3-D convolution over (N, C, D, H, W) quint8 inputs."""

    _dims = 3
    _NAME = "QuantizedConv3d"


class _ConvTransposeNd(_ConvNd):
    """Quantized transposed convolution (torch.ao.nn.quantized.ConvTranspose1d/2d): a qint8
    weight of shape (in_channels, out_channels / groups, *kernel) quantized per tensor (as
    torch's: its x86 backend takes no per-channel weight here), the exact integer sums of
    the zero-point-shifted values over the taps that reach each output (a convolution of the
    input spread out by the stride, with the kernel flipped), requantized as the
    convolutions' (fbgemm's ReQuantizeOutput)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        name = type(self).__name__
        if padding_mode != "zeros":
            raise ValueError(f'quantized {name}: only "zeros" padding_mode is supported, got '
                             f"{padding_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        self.transposed = True
        self.output_padding = _ntuple(output_padding, self._dims, f"{name}: output_padding")
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ValueError(f"quantized {name}: output_padding {self.output_padding} must "
                                 f"be smaller than stride {self.stride} or dilation "
                                 f"{self.dilation}")

    def _weight_shape(self):
        return (self.in_channels, self.out_channels // self.groups) + self.kernel_size

    def set_weight_bias(self, w, b):
        if isinstance(w, QTensor) and w._axis is not None:
            raise ValueError(f"quantized {type(self).__name__}: the weight must be quantized per "
                             "tensor (torch's x86 backend takes no per-channel weight for "
                             "transposed convolutions)")
        super().set_weight_bias(w, b)

    def forward(self, x):
        self._check_input(x)
        n, dims, g = x.shape[0], self._dims, self.groups
        shifted = x._ints.astype(np.int64) - int(x._zero_point)
        # spread the input by the stride (zeros between: the shifted zero point)
        spread_shape = [(s - 1) * st + 1 for s, st in zip(x.shape[2:], self.stride)]
        spread = np.zeros((n, self.in_channels, *spread_shape), np.int64)
        spread[(slice(None), slice(None)) + tuple(slice(None, None, st) for st in self.stride)] \
            = shifted
        # pad by dilation * (kernel - 1) - padding (crop where that is negative), and
        # output_padding at the end
        pads = []
        for k, d, p, op in zip(self.kernel_size, self.dilation, self.padding,
                               self.output_padding):
            edge = d * (k - 1) - p
            pads.append((edge, edge + op))
        lo = [max(0, -a) for a, _ in pads]
        hi = [max(0, -b) for _, b in pads]
        spread = np.pad(spread, [(0, 0), (0, 0)] + [(max(a, 0), max(b, 0)) for a, b in pads])
        spread = spread[(slice(None), slice(None)) + tuple(
            slice(a, s - b) for a, b, s in zip(lo, hi, spread.shape[2:]))]
        for size, k, d in zip(spread.shape[2:], self.kernel_size, self.dilation):
            if size < d * (k - 1) + 1:
                raise ValueError(f"quantized {type(self).__name__}: input of shape {x.shape} gives an empty "
                                 "output")
        w = self._weight
        wi = w._ints.astype(np.int64) - int(w._zero_point)
        cin_g, cout_g = self.in_channels // g, self.out_channels // g
        wi = wi.reshape((g, cin_g, cout_g) + self.kernel_size)
        wi = np.swapaxes(wi, 1, 2).reshape((self.out_channels, cin_g) + self.kernel_size)
        wi = np.flip(wi, axis=tuple(range(2, 2 + dims)))
        acc = int_conv(spread, wi, (1,) * dims, (0,) * dims, self.dilation, g, padded=True)
        w_scale, _ = weight_scales(w, self.out_channels)
        bias = None if self._bias is None else self._bias.numpy()
        out = requantize(acc, x._scale, w_scale, bias, self.scale, self.zero_point, self._relu)
        return keep_layout(QTensor(out.astype(np.uint8), quint8, float(self.scale),
                                   int(self.zero_point)), None, self._dims == 2)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """From a prepared nn.ConvTranspose1d/2d (a per-tensor weight observer from its
        qconfig) and the observer that watched its output."""
        from ...quantization._observed import _check_observed

        act = _check_observed(mod)
        weight_fq = weight_observer(cls, mod)
        weight = mod.weight.detach()
        weight_fq(weight)
        out = cls(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                  mod.output_padding, mod.groups, mod.bias is not None, mod.dilation,
                  mod.padding_mode)
        out.set_weight_bias(quantize_weight(weight, weight_fq),
                            None if mod.bias is None else mod.bias.detach())
        scale, zp = _qparams(act)
        out.scale, out.zero_point = float(scale[0]), int(zp[0])
        return out

    def extra_repr(self):
        s = super().extra_repr()
        if self.output_padding != (0,) * self._dims:
            s = s.replace(", groups=", f", output_padding={self.output_padding}, groups=") \
                if ", groups=" in s else s + f", output_padding={self.output_padding}"
        return s


class ConvTranspose1d(_ConvTransposeNd):
    """Quantized 1-D transposed convolution over (N, C, L) quint8 inputs."""

    _dims = 1
    _NAME = "QuantizedConvTranspose1d"


class ConvTranspose2d(_ConvTransposeNd):
    """Quantized 2-D transposed convolution over (N, C, H, W) quint8 inputs."""

    _NAME = "QuantizedConvTranspose2d"


__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d"]
