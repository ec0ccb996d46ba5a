"""Quantized fused modules (torch.ao.nn.intrinsic.quantized): the ReLU folded into the
requantization, whose clamp starts at the output's zero point."""
from __future__ import annotations

from ..quantized.batchnorm import BatchNorm2d
from ..quantized.conv import Conv1d, Conv2d
from ..quantized.modules import Linear


class ConvReLU1d(Conv1d):
    """relu(conv1d) on quint8 tensors, in one requantization."""

    _relu = True
    _NAME = "QuantizedConvReLU1d"


class ConvReLU2d(Conv2d):
    """relu(conv2d) on quint8 tensors, in one requantization."""

    _relu = True
    _NAME = "QuantizedConvReLU2d"


class LinearReLU(Linear):
    """relu(linear) on quint8 tensors, in one requantization."""

    _relu = True
    _NAME = "QuantizedLinearReLU"


class BNReLU2d(BatchNorm2d):
    """relu(batch_norm) on a quantized tensor, in one requantization (from a fused
    BNReLU2d)."""

    _relu = True
    _NAME = "QuantizedBNReLU2d"


__all__ = ["BNReLU2d", "ConvReLU1d", "ConvReLU2d", "LinearReLU"]
