"""Fused modules for quantization-aware training (torch.ao.nn.intrinsic.qat).

ConvBn: the batch norm is folded into the convolution's weight before its fake quantization,
so that training sees the int8 rounding of the weight the converted model will use, as
torch's ``_ConvBnNd``: with ``s = bn.weight / sqrt(bn.running_var + eps)`` per channel,
``y = bn(conv(x, fq(w * s)) / s + b)``. In training mode the batch norm still normalises with
the batch's own statistics and updates its running ones, unless ``freeze_bn_stats`` froze
them (then it uses the running ones, as in eval). ``convert`` folds the running statistics
into the weight and bias (``fuse_conv_bn_weights``) and quantizes that."""
from __future__ import annotations

from .... import nn
from ....nn import functional as F
from .. import qat as nnqat
from . import (
    ConvBn1d as _FConvBn1d, ConvBn2d as _FConvBn2d, ConvBnReLU1d as _FConvBnReLU1d,
    ConvBnReLU2d as _FConvBnReLU2d, LinearBn1d as _FLinearBn1d,
)


class ConvReLU1d(nnqat.Conv1d):
    """qat.Conv1d followed by ReLU (from a fused ConvReLU1d)."""

    def forward(self, x):
        return F.relu(super().forward(x))


class ConvReLU2d(nnqat.Conv2d):
    """qat.Conv2d followed by ReLU (from a fused ConvReLU2d)."""

    def forward(self, x):
        return F.relu(super().forward(x))


class LinearReLU(nnqat.Linear):
    """qat.Linear followed by ReLU (from a fused LinearReLU)."""

    def forward(self, x):
        return F.relu(super().forward(x))

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        qconfig = nnqat._qconfig_of(cls, mod)
        linear = mod[0]
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  qconfig=qconfig)
        out.weight, out.bias = linear.weight, linear.bias
        return out


def _bn_forward(module, y):
    """The batch norm after the folded weight: the batch's statistics in training mode
    (updating the running ones), the running ones once ``freeze_bn_stats`` froze them, a
    later ``model.train()`` included (torch's modules override ``train`` for that)."""
    bn = module.bn
    if module.freeze_bn and bn.training:
        bn.training = False
        try:
            return bn(y)
        finally:
            bn.training = True
    return bn(y)


class _ConvBnNd(nnqat._ConvNd):
    _BN = nn.BatchNorm2d
    _FLOAT = None
    _relu = False

    def _init_bn(self, out_channels, eps, momentum, freeze_bn, qconfig):
        if qconfig is None:
            raise ValueError(f"qat.{type(self).__name__}: qconfig must be provided for a QAT "
                             "module")
        self.qconfig = qconfig
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = self._BN(out_channels, eps, momentum, True, True)
        self.weight_fake_quant = qconfig.weight()

    def freeze_bn_stats(self):
        """From now on the batch norm uses (and keeps) its running statistics, in training
        mode too."""
        self.freeze_bn = True
        self.bn.training = False
        return self

    def update_bn_stats(self):
        self.freeze_bn = False
        self.bn.training = True
        return self

    def forward(self, x):
        bn = self.bn
        running_std = (bn.running_var + bn.eps).sqrt()
        scale_factor = bn.weight / running_std
        ones = (1,) * (self.weight.ndim - 1)
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape((-1,) + ones))
        conv = self._conv_with(x, scaled_weight, None)
        channel = (1, -1) + ones[1:]
        y = conv / scale_factor.reshape(channel)
        if self.bias is not None:
            y = y + self.bias.reshape(channel)
        y = _bn_forward(self, y)
        return F.relu(y) if self._relu else y

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """From a fused ConvBn / ConvBnReLU: the conv's and the batch norm's Parameters and
        buffers shared, the module's qconfig."""
        qconfig = getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ValueError(f"qat.{cls.__name__}.from_float: the float module must have a "
                             "qconfig (set it on the model or the module, or use prepare_qat)")
        if type(mod) is not cls._FLOAT:
            raise TypeError(f"qat.{cls.__name__}.from_float: expected a fused "
                            f"{cls._FLOAT.__name__}, got {type(mod).__name__}")
        conv, bn = mod[0], mod[1]
        out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, bn.eps, bn.momentum, False, qconfig)
        out.weight = conv.weight
        if conv.bias is not None:
            out.bias = conv.bias
        out.bn.weight, out.bn.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(out.bn, name, getattr(bn, name))
        out.train(mod.training)
        return out


def _conv_bn_init(base):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=None, padding_mode="zeros", eps=1e-05, momentum=0.1,
                 freeze_bn=False, qconfig=None):
        base.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                      groups, bool(bias), padding_mode)
        self._init_bn(out_channels, eps, momentum, freeze_bn, qconfig)
        if freeze_bn:
            self.freeze_bn_stats()
    return __init__


class ConvBn1d(_ConvBnNd, nn.Conv1d):
    """Conv1d + BatchNorm1d for QAT (see the module's docstring)."""

    _BN, _FLOAT = nn.BatchNorm1d, _FConvBn1d
    __init__ = _conv_bn_init(nn.Conv1d)


class ConvBn2d(_ConvBnNd, nn.Conv2d):
    """Conv2d + BatchNorm2d for QAT (see the module's docstring)."""

    _FLOAT = _FConvBn2d
    __init__ = _conv_bn_init(nn.Conv2d)


class ConvBnReLU1d(ConvBn1d):
    _FLOAT, _relu = _FConvBnReLU1d, True


class ConvBnReLU2d(ConvBn2d):
    _FLOAT, _relu = _FConvBnReLU2d, True


class LinearBn1d(nn.Linear):
    """Linear + BatchNorm1d for QAT, as torch's: with ``s = bn.weight / sqrt(running_var +
    eps)``, ``y = bn(linear(x, fq(w * s)) / s + b)``; the batch norm in training mode uses
    the batch's statistics unless ``freeze_bn_stats`` froze them. ``convert`` folds the
    running statistics into the weight and bias and quantizes that (a quantized Linear)."""

    def __init__(self, in_features, out_features, bias=True, eps=1e-05, momentum=0.1,
                 freeze_bn=False, qconfig=None):
        super().__init__(in_features, out_features, bias=bias)
        if qconfig is None:
            raise ValueError("qat.LinearBn1d: qconfig must be provided for a QAT module")
        self.qconfig = qconfig
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = nn.BatchNorm1d(out_features, eps, momentum, True, True)
        self.weight_fake_quant = qconfig.weight()
        if freeze_bn or not self.training:
            self.freeze_bn_stats()

    freeze_bn_stats = _ConvBnNd.freeze_bn_stats
    update_bn_stats = _ConvBnNd.update_bn_stats

    def reset_running_stats(self):
        self.bn.reset_running_stats()

    def forward(self, x):
        bn = self.bn
        scale_factor = bn.weight / (bn.running_var + bn.eps).sqrt()
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(-1, 1))
        y = F.linear(x, scaled_weight) / scale_factor.reshape(1, -1)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1)
        return _bn_forward(self, y)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """From a fused LinearBn1d (fuse_modules_qat): the Linear's and the batch norm's
        Parameters and buffers shared, the module's qconfig."""
        if type(mod) is not _FLinearBn1d:
            raise TypeError(f"qat.LinearBn1d.from_float: expected a fused LinearBn1d, got "
                            f"{type(mod).__name__}")
        qconfig = getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ValueError("qat.LinearBn1d.from_float: the float module must have a qconfig "
                             "(set it on the model or the module, or use prepare_qat)")
        linear, bn = mod[0], mod[1]
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, bn.eps,
                  bn.momentum, False, qconfig)
        out.weight, out.bias = linear.weight, linear.bias
        out.bn.weight, out.bn.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(out.bn, name, getattr(bn, name))
        out.train(mod.training)
        return out

    def to_float(self):
        """The nn.Linear with the running statistics folded in."""
        from ....nn._fusion import fuse_linear_bn_weights

        bn = self.bn
        linear = nn.Linear(self.in_features, self.out_features)
        linear.weight, linear.bias = fuse_linear_bn_weights(
            self.weight, self.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        return linear


_CONV_BN = (ConvBn1d, ConvBn2d, ConvBnReLU1d, ConvBnReLU2d, LinearBn1d)


def freeze_bn_stats(mod):
    """For ``model.apply``: freeze the batch-norm statistics of the QAT ConvBn modules."""
    if type(mod) in _CONV_BN:
        mod.freeze_bn_stats()


def update_bn_stats(mod):
    if type(mod) in _CONV_BN:
        mod.update_bn_stats()


__all__ = ["ConvBn1d", "ConvBn2d", "ConvBnReLU1d", "ConvBnReLU2d", "ConvReLU1d", "ConvReLU2d",
           "LinearBn1d", "LinearReLU", "freeze_bn_stats", "update_bn_stats"]
