"""More activation layers, with PyTorch's arguments and repr: ReLU6, Hardtanh, Softplus,
Softsign, Mish, Hardswish, Hardsigmoid, PReLU, SELU, CELU, GLU, Tanhshrink, Threshold,
Softmin, LogSigmoid, Hardshrink, Softshrink."""
from __future__ import annotations

import warnings

import numpy as np

from ..backend.dtypes import default_float
from ._functional import activations as A
from .module import Module, Parameter


def _inplace(inplace, lead=True):
    if not inplace:
        return ""
    return ", inplace=True" if lead else "inplace=True"


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, min_value=None,
                 max_value=None):
        super().__init__()
        for old, new in (("min_value", "min_val"), ("max_value", "max_val")):
            if locals()[old] is not None:  # torch's deprecated names, warned as torch does
                warnings.warn(f"keyword argument `{old}` is deprecated and renamed to `{new}`",
                              FutureWarning, stacklevel=2)
        min_val = min_val if min_value is None else min_value
        max_val = max_val if max_value is None else max_value
        if not max_val > min_val:  # torch's assertion: an equal pair is refused too
            raise ValueError(f"Hardtanh: min_val ({min_val}) cannot be greater than max_val "
                             f"({max_val}) nor equal to it")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, input):
        return A.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}{_inplace(self.inplace)}"


class ReLU6(Hardtanh):
    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return _inplace(self.inplace, lead=False)


class _InplaceOnly(Module):
    """Activations whose only argument is ``inplace``."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return self._fn(input, inplace=self.inplace)

    def extra_repr(self):
        return _inplace(self.inplace, lead=False)


class Mish(_InplaceOnly):
    _fn = staticmethod(A.mish)


class SELU(_InplaceOnly):
    _fn = staticmethod(A.selu)


class Hardswish(_InplaceOnly):
    _fn = staticmethod(A.hardswish)

    def extra_repr(self):
        return ""


class Hardsigmoid(_InplaceOnly):
    _fn = staticmethod(A.hardsigmoid)

    def extra_repr(self):
        return ""


class _NoArgs(Module):
    def forward(self, input):
        return self._fn(input)


class Softsign(_NoArgs):
    _fn = staticmethod(A.softsign)


class Tanhshrink(_NoArgs):
    _fn = staticmethod(A.tanhshrink)


class LogSigmoid(_NoArgs):
    _fn = staticmethod(A.logsigmoid)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input):
        return A.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class CELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        return A.celu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}{_inplace(self.inplace)}"


class GLU(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return A.glu(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Threshold(Module):
    def __init__(self, threshold, value, inplace=False):
        super().__init__()
        self.threshold, self.value, self.inplace = threshold, value, inplace

    def forward(self, input):
        return A.threshold(input, self.threshold, self.value, self.inplace)

    def extra_repr(self):
        return f"threshold={self.threshold}, value={self.value}{_inplace(self.inplace)}"


class Softmin(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return A.softmin(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class _Shrink(Module):
    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def extra_repr(self):
        return f"{self.lambd}"


class Hardshrink(_Shrink):
    def forward(self, input):
        return A.hardshrink(input, self.lambd)


class Softshrink(_Shrink):
    def forward(self, input):
        return A.softshrink(input, self.lambd)


class PReLU(Module):
    """max(0, x) + weight * min(0, x) with a learnt weight: one for all channels
    (num_parameters=1) or one per channel (dim 1), each starting at ``init``."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters, self.init = num_parameters, init
        self.weight = Parameter(np.full(num_parameters, init, dtype=default_float()))
        if device is not None or dtype is not None:
            self.to(*(a for a in (device, dtype) if a is not None))

    def reset_parameters(self):
        self.weight.data[...] = self.init

    def forward(self, input):
        return A.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class Softmax2d(Module):
    """Softmax over the channels (dim -3) of (N, C, H, W) or (C, H, W) input."""

    def forward(self, input):
        if input.ndim not in (3, 4):
            raise ValueError(f"Softmax2d: expected a 3-D or 4-D input, got shape {input.shape}")
        return A.softmax(input, -3)


class RReLU(Module):
    """Randomised leaky ReLU: random slopes in U(lower, upper) for non-positive inputs while
    training, their mean (lower + upper) / 2 in eval mode."""

    def __init__(self, lower=1.0 / 8, upper=1.0 / 3, inplace=False):
        super().__init__()
        self.lower, self.upper, self.inplace = lower, upper, inplace

    def forward(self, input):
        return A.rrelu(input, self.lower, self.upper, self.training, self.inplace)

    def extra_repr(self):
        return f"lower={self.lower}, upper={self.upper}{_inplace(self.inplace)}"
