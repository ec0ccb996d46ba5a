"""gumbel_softmax (with the straight-through estimator for ``hard=True``) and the in-place
functional forms torch.nn.functional has (relu_, elu_, leaky_relu_, hardtanh_, selu_, celu_,
threshold_; rrelu and rrelu_ are in activations.py): each is its out-of-place op with inplace=True, under minidl's
in-place rules (refused on a leaf that requires grad, as PyTorch refuses it)."""
from __future__ import annotations

import warnings

import numpy as np

from ... import backend
from ...backend import get_array_module
from ...functional import _float_input, elu, leaky_relu, relu, softmax
from ...tensor import Tensor
from .activations import celu, hardtanh, selu, threshold

__all__ = ["gumbel_softmax", "relu_", "elu_", "leaky_relu_", "hardtanh_", "selu_", "celu_",
           "threshold_"]


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
    if xp is np:  # torch's: -exponential_().log() in the logits' dtype
        e = backend.torch_random.exponential(
            backend.default_generator, int(np.prod(logits.shape, dtype=np.int64)),
            dtype if dtype in (np.float32, np.float64) else np.float32).reshape(logits.shape)
    else:
        e = -xp.log1p(-_uniform01(xp, logits.shape))  # Exp(1) samples
    gumbels = Tensor((-xp.log(e)).astype(dtype))
    y_soft = softmax((logits + gumbels) / tau, dim)
    if not hard:
        return y_soft
    axis = dim % max(logits.ndim, 1)
    index = xp.expand_dims(xp.argmax(y_soft.data, axis=axis), axis)
    # the one-hot by comparing positions (put_along_axis is missing from older CuPy)
    shape = [-1 if i == axis else 1 for i in range(y_soft.ndim)]
    positions = xp.arange(y_soft.shape[axis] if y_soft.ndim else 1).reshape(shape or ())
    y_hard = (positions == index).astype(y_soft.data.dtype).reshape(logits.shape)
    return Tensor(y_hard) - y_soft.detach() + y_soft


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


_threshold = threshold
