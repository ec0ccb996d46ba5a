"""nn.RMSNorm: root-mean-square normalisation over the last dims, with PyTorch 2.13's signature
(no bias), parameter and repr."""
from __future__ import annotations

import numpy as np

from ..backend.dtypes import default_float
from . import init
from ._functional.rms_norm import rms_norm
from ..functional import _shape_tuple
from .module import Module, Parameter


class RMSNorm(Module):
    """``y = x / sqrt(mean(x^2) + eps) * weight`` over the last dims (``normalized_shape``);
    weight starts at ones. ``eps=None`` is the machine epsilon of the compute dtype."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        self.normalized_shape = _shape_tuple("RMSNorm", "normalized_shape", normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=default_float()))
        else:
            self.register_parameter("weight", None)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, x):
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
