"""Quantized fused modules (torch.ao.nn.intrinsic.quantized): the ReLU folded into the
requantization, whose clamp starts at the output's zero point."""
from __future__ import annotations

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


__all__ = ["ConvReLU1d", "ConvReLU2d", "LinearReLU"]
