"""Fused float modules (torch.ao.nn.intrinsic): a Sequential of the modules that
``fuse_modules`` merged, run as they were, but marked so that ``prepare``/``prepare_qat``
observe only the fused output and ``convert`` turns them into one quantized module
(``intrinsic.quantized``: the ReLU folded into the requantization's clamp), and QAT trains
them as one (``intrinsic.qat``: the batch norm folded into the fake-quantized weight)."""
from __future__ import annotations

from .... import nn
from .._fused import _FusedModule  # the base, in a module of its own


class ConvReLU1d(_FusedModule):
    _PARTS = (nn.Conv1d, nn.ReLU)


class ConvReLU2d(_FusedModule):
    _PARTS = (nn.Conv2d, nn.ReLU)


class ConvBn1d(_FusedModule):
    _PARTS = (nn.Conv1d, nn.BatchNorm1d)


class ConvBn2d(_FusedModule):
    _PARTS = (nn.Conv2d, nn.BatchNorm2d)


class ConvBnReLU1d(_FusedModule):
    _PARTS = (nn.Conv1d, nn.BatchNorm1d, nn.ReLU)


class ConvBnReLU2d(_FusedModule):
    _PARTS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)


class LinearReLU(_FusedModule):
    _PARTS = (nn.Linear, nn.ReLU)


class LinearBn1d(_FusedModule):
    _PARTS = (nn.Linear, nn.BatchNorm1d)


class BNReLU2d(_FusedModule):
    _PARTS = (nn.BatchNorm2d, nn.ReLU)


from . import qat, quantized  # noqa: E402,F401  (they use the classes above)

__all__ = ["BNReLU2d", "ConvBn1d", "ConvBn2d", "ConvBnReLU1d", "ConvBnReLU2d", "ConvReLU1d",
           "ConvReLU2d", "LinearBn1d", "LinearReLU"]
