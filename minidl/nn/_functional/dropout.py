"""Channel dropout (dropout1d, dropout2d, dropout3d, feature_alpha_dropout) and alpha dropout, as
PyTorch's: a random keep mask (whole channels for the feature variants), the kept values
scaled so the expectation (and for alpha dropout, the variance of SELU activations) stays."""
from __future__ import annotations

import warnings

import numpy as np

from ... import backend
from ...backend import get_array_module
from ...functional import _float_input
from ...tensor import Tensor, apply_in_place

# -SELU's alpha * scale: the value SELU saturates to, which alpha dropout drops to
_ALPHA = 1.7580993408473766


def _keep_mask(x, shape, p):
    """1.0 with probability 1 - p, else 0.0, in x's dtype and on its device."""
    xp = get_array_module(x.data)
    if xp is np:  # torch's bernoulli_(1 - p) draws
        keep = backend.torch_random.bernoulli(backend.default_generator, tuple(shape), 1 - p)
    else:
        keep = xp.random.random_sample(shape, dtype=xp.float32) >= p
    return keep.astype(x.data.dtype)


def _check(name, input, p):
    _float_input(name, input)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")


def _feature_shape(x, batched):
    """(N, C, 1, ...) for a batched input, (C, 1, ...) for an unbatched one."""
    lead = 2 if batched else 1
    return tuple(x.shape[:lead]) + (1,) * (x.ndim - lead)


def _apply(input, inplace, name, fn):
    return apply_in_place(input, fn, name) if inplace else fn(input)


def _channel_dropout(name, input, p, training, inplace, dims):
    _check(name, input, p)
    if input.ndim not in (dims + 1, dims + 2):
        raise ValueError(f"{name}: expected a {dims + 1}-D (unbatched) or {dims + 2}-D "
                         f"(batched) input, got shape {input.shape}")
    if not training or p == 0:
        return input
    mask = _keep_mask(input, _feature_shape(input, input.ndim == dims + 2), p)
    scale = 0.0 if p == 1 else 1.0 / (1 - p)
    return _apply(input, inplace, name, lambda x: x * Tensor(mask * scale))


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, L) or (C, L) input with probability p, scaling the rest
    by 1 / (1 - p) (training only)."""
    return _channel_dropout("dropout1d", input, p, training, inplace, 1)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, H, W) or (C, H, W) input with probability p. As in
    PyTorch, a 3-D input is taken as (N, C, L) (1-D channel dropout), with its warning."""
    if isinstance(input, Tensor) and input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
                      "1D dropout behavior is desired - input is interpreted as shape (N, C, L), "
                      "where C is the channel dim, as PyTorch does", stacklevel=2)
        return _channel_dropout("dropout2d", input, p, training, inplace, 1)
    return _channel_dropout("dropout2d", input, p, training, inplace, 2)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) input with probability p,
    scaling the rest by 1 / (1 - p). As in PyTorch, other ranks warn (deprecated) and are
    taken as unbatched: dim 0 is the channel dim."""
    name = "dropout3d"
    _check(name, input, p)
    if input.ndim not in (4, 5):
        warnings.warn(f"dropout3d: Received a {input.ndim}-D input to dropout3d, which is "
                      "deprecated and will result in an error in a future release. To retain "
                      "the behavior and silence this warning, please use dropout instead. Note "
                      "that dropout3d exists to provide channel-wise dropout on inputs with 3 "
                      "spatial dimensions, a channel dimension, and an optional batch dimension "
                      "(i.e. 4D or 5D inputs).", stacklevel=2)
    if not training or p == 0:
        return input
    mask = _keep_mask(input, _feature_shape(input, input.ndim == 5), p)
    scale = 0.0 if p == 1 else 1.0 / (1 - p)
    return _apply(input, inplace, name, lambda x: x * Tensor(mask * scale))


def _alpha(name, input, p, training, inplace, shape):
    _check(name, input, p)
    if not training or p == 0:
        return input
    if p == 1:
        return _apply(input, inplace, name, lambda x: x * 0.0)
    keep = _keep_mask(input, shape, p)
    a = 1.0 / np.sqrt((_ALPHA * _ALPHA * p + 1) * (1 - p))
    scale = keep * a
    shift = (keep - 1) * (_ALPHA * a) + _ALPHA * a * p
    return _apply(input, inplace, name, lambda x: x * Tensor(scale) + Tensor(shift))


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Dropout for SELU networks: dropped values go to SELU's saturation value and an affine
    map keeps the mean and variance (PyTorch's constants). Note training=False by default, as
    in PyTorch's function."""
    return _alpha("alpha_dropout", input, p, training, inplace, tuple(input.shape))


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """alpha_dropout of whole channels (dim 1) of (N, C, *) input."""
    if not isinstance(input, Tensor) or input.ndim < 2:
        raise ValueError(f"feature_alpha_dropout: expected an input of at least 2 dims, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    return _alpha("feature_alpha_dropout", input, p, training, inplace,
                  _feature_shape(input, True))
