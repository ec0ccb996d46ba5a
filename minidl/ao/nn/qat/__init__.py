"""Modules for quantization-aware training (torch.ao.nn.qat): float modules whose weights go
through a FakeQuantize on every forward, so that training sees their int8 rounding."""
from __future__ import annotations

from .... import nn
from ....nn import functional as F
from .._fused import _FusedModule


def _take_qconfig(module, qconfig):
    """A QAT module's qconfig, and its weight's FakeQuantize made from it."""
    if qconfig is None:
        raise ValueError(f"qat.{type(module).__name__}: qconfig must be provided for a QAT module")
    module.qconfig = qconfig
    module.weight_fake_quant = qconfig.weight()


class Linear(nn.Linear):
    """nn.Linear with ``weight_fake_quant`` (from ``qconfig.weight``) applied to the weight."""

    def __init__(self, in_features, out_features, bias=True, qconfig=None):
        super().__init__(in_features, out_features, bias=bias)
        _take_qconfig(self, qconfig)

    def forward(self, x):
        return F.linear(x, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod):
        """A qat.Linear sharing ``mod``'s weight and bias Parameters, with mod's qconfig."""
        qconfig = getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ValueError("qat.Linear.from_float: the float module must have a qconfig "
                             "(set it on the model or the module, or use prepare_qat)")
        out = cls(mod.in_features, mod.out_features, bias=mod.bias is not None, qconfig=qconfig)
        out.weight = mod.weight
        out.bias = mod.bias
        return out


def _qconfig_of(cls, mod):
    qconfig = getattr(mod, "qconfig", None)
    if qconfig is None:
        raise ValueError(f"qat.{cls.__name__}.from_float: the float module must have a qconfig "
                         "(set it on the model or the module, or use prepare_qat)")
    return qconfig


class _ConvNd:
    """The convolution part of the QAT convolutions: the float convolution with the weight
    (and bias) it is given, as nn.Conv's forward, padding modes included."""

    def _conv_with(self, x, weight, bias):
        from ....nn._functional import convolution as C

        conv = C.conv1d if self._dims == 1 else C.conv2d
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        return self._conv_with(x, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """A QAT convolution sharing the float conv's weight and bias Parameters (the conv of
        a fused ConvReLU), with the module's qconfig."""
        qconfig = _qconfig_of(cls, mod)
        conv = mod[0] if isinstance(mod, _FusedModule) else mod
        out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode, qconfig=qconfig)
        out.weight = conv.weight
        if conv.bias is not None:
            out.bias = conv.bias
        return out


class Conv1d(_ConvNd, nn.Conv1d):
    """nn.Conv1d whose weight goes through ``weight_fake_quant`` (from ``qconfig.weight``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", qconfig=None, device=None,
                 dtype=None):
        nn.Conv1d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, padding_mode, device, dtype)
        _take_qconfig(self, qconfig)


class Conv2d(_ConvNd, nn.Conv2d):
    """nn.Conv2d whose weight goes through ``weight_fake_quant`` (from ``qconfig.weight``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", qconfig=None, device=None,
                 dtype=None):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, padding_mode, device, dtype)
        _take_qconfig(self, qconfig)
