"""Channel and alpha dropout layers, and Bilinear, with PyTorch's arguments, init and repr."""
from __future__ import annotations

import math

import numpy as np

from ..backend.dtypes import default_float
from ._functional import bilinear as B
from ._functional import dropout as D
from . import init
from .module import Module, Parameter


class _DropoutNd(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return self._fn(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(_DropoutNd):
    _fn = staticmethod(D.dropout1d)


class Dropout2d(_DropoutNd):
    _fn = staticmethod(D.dropout2d)


class Dropout3d(_DropoutNd):
    _fn = staticmethod(D.dropout3d)


class AlphaDropout(_DropoutNd):
    _fn = staticmethod(D.alpha_dropout)


class FeatureAlphaDropout(_DropoutNd):
    _fn = staticmethod(D.feature_alpha_dropout)


class Bilinear(Module):
    """y = x1^T A x2 + b: weight (out_features, in1_features, in2_features) and bias drawn
    from U(-1/sqrt(in1_features), 1/sqrt(in1_features)), as in PyTorch."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, in1_features, in2_features, out_features, bias=True, device=None,
                 dtype=None):
        super().__init__()
        self.in1_features, self.in2_features = in1_features, in2_features
        self.out_features = out_features
        self.weight = Parameter(np.empty((out_features, in1_features, in2_features),
                                         dtype=default_float()))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=default_float()))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(*(a for a in (device, dtype) if a is not None))

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.weight.shape[1])
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        return B.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
