"""gumbel_softmax (with the straight-through estimator for ``hard=True``), rrelu, and the
in-place functional forms torch.nn.functional has (relu_, elu_, leaky_relu_, hardtanh_, selu_,
celu_, threshold_, rrelu_): each is its out-of-place op with inplace=True, under minidl's
in-place rules (refused on a leaf that requires grad, as PyTorch refuses it)."""
from __future__ import annotations

import warnings

import numpy as np

from ... import backend
from ...backend import get_array_module
from ...functional import _float_input, elu, leaky_relu, relu, softmax
from ...tensor import Function, Tensor, apply_in_place
from .activations import celu, hardtanh, selu, threshold

__all__ = ["gumbel_softmax", "rrelu", "relu_", "elu_", "leaky_relu_", "hardtanh_", "selu_",
           "celu_", "threshold_", "rrelu_"]


def _uniform01(xp, shape):
    """U[0, 1) float64 samples on the array module's device (minidl's generator on the CPU)."""
    if xp is np:
        return backend.rng().random(shape)
    return xp.random.random_sample(shape, dtype=xp.float64)


def gumbel_softmax(logits, tau=1, hard=False, eps=1e-10, dim=-1):
    """softmax((logits + g) / tau) along ``dim`` with g standard Gumbel noise, as PyTorch's;
    ``hard=True`` returns the one-hot of its argmax whose gradient is the soft sample's
    (straight-through: y_hard - y_soft.detach() + y_soft). ``eps`` is deprecated (warns)."""
    if eps != 1e-10:
        warnings.warn("`eps` parameter is deprecated and has no effect.", UserWarning,
                      stacklevel=2)
    _float_input("gumbel_softmax", logits)
    xp = get_array_module(logits.data)
    dtype = logits.data.dtype
    e = -xp.log1p(-_uniform01(xp, logits.shape))  # Exp(1) samples
    gumbels = Tensor((-xp.log(e)).astype(dtype))
    y_soft = softmax((logits + gumbels) / tau, dim)
    if not hard:
        return y_soft
    axis = dim % max(logits.ndim, 1)
    index = xp.expand_dims(xp.argmax(y_soft.data, axis=axis), axis)
    y_hard = xp.zeros(logits.shape, dtype=y_soft.data.dtype)
    xp.put_along_axis(y_hard, index, 1.0, axis=axis)
    return Tensor(y_hard) - y_soft.detach() + y_soft


class RReLU(Function):
    """Leaky relu with a slope drawn from U(lower, upper) for each negative element (training
    mode); the slopes drawn are the gradient's too."""

    def forward(self, x, lower, upper):
        xp = get_array_module(x)
        slopes = (lower + (upper - lower) * _uniform01(xp, x.shape)).astype(x.dtype)
        self.noise = xp.where(x >= 0, x.dtype.type(1), slopes)
        return x * self.noise

    def backward(self, g):
        return g * self.noise


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    """Randomized leaky relu, as torch.nn.functional.rrelu: in training each negative element
    is scaled by a slope from U(lower, upper); otherwise by (lower + upper) / 2."""
    _float_input("rrelu", input)
    if not lower <= upper:
        raise ValueError(f"rrelu: lower bound must be less than or equal to upper bound, got "
                         f"lower={lower}, upper={upper}")
    if not training:
        return leaky_relu(input, (lower + upper) / 2, inplace)

    def fn(t):
        return RReLU.apply(t, lower=float(lower), upper=float(upper))
    return apply_in_place(input, fn, "rrelu") if inplace else fn(input)


def relu_(input):
    return relu(input, inplace=True)


def elu_(input, alpha=1.0):
    return elu(input, alpha, inplace=True)


def leaky_relu_(input, negative_slope=0.01):
    return leaky_relu(input, negative_slope, inplace=True)


def hardtanh_(input, min_val=-1.0, max_val=1.0):
    return hardtanh(input, min_val, max_val, inplace=True)


def selu_(input):
    return selu(input, inplace=True)


def celu_(input, alpha=1.0):
    return celu(input, alpha, inplace=True)


def threshold_(input, threshold, value):
    return _threshold(input, threshold, value, inplace=True)


def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False):
    return rrelu(input, lower, upper, training, inplace=True)


_threshold = threshold
