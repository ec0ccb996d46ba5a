"""Normalisations and distances: group_norm, instance_norm, local_response_norm, normalize,
cosine_similarity, pairwise_distance, as PyTorch's.

group_norm and instance_norm normalise rows of a reshaped input with ``functional.LayerNorm``
(its numerically careful mean and variance), then scale and shift per channel; the p-norm is
one op (``VectorNorm``) whose gradient at a zero vector is 0, as PyTorch's, not NaN.
"""
from __future__ import annotations

import numpy as np

from ... import functional as _F
from ...backend import get_array_module
from ...functional import LayerNorm, _float_input, _opmath, _whole
from ...ops import constant, keep_where, reduction_axes
from ...tensor import Function, Tensor, no_grad


def _channel_view(t, ndim):
    """A per-channel (C,) tensor shaped to broadcast over (N, C, *)."""
    return t.reshape(*((1, -1) + (1,) * (ndim - 2)))


def _check_channel_param(name, what, t, c):
    if t is not None and tuple(t.shape) != (c,):
        raise ValueError(f"{name}: {what} has shape {tuple(t.shape)}, expected ({c},) for an "
                         f"input with {c} channels")


def _affine(y, weight, bias):
    # 16-bit activations beside float32 parameters stay 16-bit (PyTorch's mixed-type kernels)
    low = y.data.dtype.itemsize == 2
    weight, bias = ((t.astype(y.dtype) if low and t is not None and t.dtype != y.dtype else t)
                    for t in (weight, bias))
    if weight is not None:
        y = y * _channel_view(weight, y.ndim)
    if bias is not None:
        y = y + _channel_view(bias, y.ndim)
    return y


def _own_result(y):
    """``y``, the reshape of the op's internal normalised rows, as the op's own result: no
    caller can reach the tensor it views, so an in-place op on it in the graph (an
    ``nn.ReLU(True)`` after an ``InstanceNorm2d`` or a ``GroupNorm`` without affine, as
    CycleGAN's generators) is the whole-tensor case, as in PyTorch. The version count stays
    shared with the rows (an untracked write into the memory is still seen by backward)."""
    y._is_view = False
    return y


def _normalize_rows(x2, eps):
    """Each row of a 2-D or 3-D tensor normalised over its last dim (no affine)."""
    return LayerNorm.apply(x2, ndim=1, eps=float(eps), has_weight=False, has_bias=False)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise (N, C, *) input over each group of C / num_groups channels (and all of its
    spatial positions), then scale by ``weight`` and shift by ``bias`` per channel."""
    name = "group_norm"
    _float_input(name, input)
    if input.ndim < 2:
        raise ValueError(f"{name}: expected an input of at least 2 dims (N, C, *), got shape "
                         f"{input.shape}")
    num_groups = _whole(num_groups, f"{name}: num_groups")
    n, c = input.shape[:2]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"{name}: the {c} channels of the input (shape {input.shape}) are "
                         f"not divisible into num_groups={num_groups} groups")
    _check_channel_param(name, "weight", weight, c)
    _check_channel_param(name, "bias", bias, c)
    (input,) = _F._autocast_inputs("group_norm", input)
    if input.numel() == 0:  # an empty batch or no positions: an empty result, as torch's
        return _affine(input * 1.0, weight, bias)
    y = _own_result(_normalize_rows(input.reshape(n, num_groups, -1), eps).reshape(*input.shape))
    return _affine(y, weight, bias)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Normalise each channel of each sample of (N, C, *) input over its spatial positions.
    With use_input_stats, the running statistics (if given) follow the instance statistics
    averaged over the batch (the variance unbiased), as in PyTorch; without it they are used
    to normalise (eval mode of a layer that tracks them)."""
    name = "instance_norm"
    _float_input(name, input)
    if input.ndim < 3:
        raise ValueError(f"{name}: expected an input of at least 3 dims (N, C, *), got shape "
                         f"{input.shape}")
    n, c = input.shape[:2]
    for what, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _check_channel_param(name, what, t, c)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError(f"{name}: use_input_stats=False needs running_mean and running_var")
        return _F.batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    spatial = int(np.prod(input.shape[2:]))
    if spatial <= 1:
        raise ValueError(f"{name}: expected more than 1 spatial element per channel, got input "
                         f"of shape {input.shape}")
    if input.numel() == 0:  # an empty batch: an empty result, the running statistics stay
        return _affine(input * 1.0, weight, bias)
    x3 = input.reshape(n, c, -1)
    if running_mean is not None or running_var is not None:
        with no_grad():
            xd = _opmath(x3.data)
            mean = xd.mean(axis=2)
            var = xd.var(axis=2, ddof=1)
            for stat, value in ((running_mean, mean), (running_var, var)):
                if stat is not None:
                    arr = stat.data if isinstance(stat, Tensor) else stat
                    arr *= 1 - momentum
                    arr += (momentum * value.mean(axis=0)).astype(arr.dtype, copy=False)
    y = _own_result(_normalize_rows(x3, eps).reshape(*input.shape))
    return _affine(y, weight, bias)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha / size * sum of x^2 over ``size`` neighbouring channels) ** beta, the
    window centred as PyTorch's (size // 2 before, (size - 1) // 2 after)."""
    name = "local_response_norm"
    _float_input(name, input)
    if input.ndim < 3:
        raise ValueError(f"{name}: expected an input of at least 3 dims (N, C, *), got shape "
                         f"{input.shape}")
    size = _whole(size, f"{name}: size")
    if size < 1:
        raise ValueError(f"{name}: size must be positive, got {size}")
    c = input.shape[1]
    (input,) = _F._autocast_inputs("local_response_norm", input)
    sq = input * input
    widths = [0, 0] * (input.ndim - 2) + [size // 2, (size - 1) // 2]
    padded = _F.pad(sq, widths)
    total = padded[:, 0:c]
    for i in range(1, size):
        total = total + padded[:, i:i + c]
    div = (total * (alpha / size) + k) ** beta
    return input / div


# ---- norms and distances -------------------------------------------------------------------------
class VectorNorm(Function):
    """(sum |x|^p)^(1/p) over ``axes``; the gradient sign(x) |x|^(p-1) / norm^(p-1) is 0
    where the norm is 0 (PyTorch's subgradient)."""

    def forward(self, x, p, axes, keepdim):
        xp = get_array_module(x)
        xw = _opmath(x)
        a = abs(xw)
        if p == 2:
            norm = xp.sqrt((xw * xw).sum(axis=axes, keepdims=True))
        elif p == 1:
            norm = a.sum(axis=axes, keepdims=True)
        else:
            norm = (a ** p).sum(axis=axes, keepdims=True) ** (1.0 / p)
        self.p, self.axes, self.keepdim = p, axes, keepdim
        self.save_for_backward(x, norm)
        out = norm if keepdim else norm.squeeze(axis=axes)
        return out.astype(x.dtype, copy=False)

    def backward(self, g):
        xp = get_array_module(g)
        x, norm = self.saved
        xw = _opmath(x)
        gw = _opmath(g)
        if not self.keepdim:
            gw = xp.expand_dims(gw, self.axes)
        safe = xp.where(norm == 0, 1, norm)
        if self.p == 2:
            d = xw / safe
        elif self.p == 1:
            d = xp.sign(xw)
        else:
            d = xp.sign(xw) * abs(xw) ** (self.p - 1) / safe ** (self.p - 1)
        d = xp.where(norm == 0, 0, d)
        return (gw * d).astype(x.dtype, copy=False)

    def graph_backward(self, g, out):
        (x,) = self.inputs
        xp = get_array_module(x.data)
        kept = tuple(1 if i in self.axes else n for i, n in enumerate(x.shape))
        g, norm = g.reshape(kept), out.reshape(kept)
        if self.p == 1:  # sign(x): constant where it is differentiable
            return g * constant(xp.sign(x.data))
        zero = norm.data == 0
        safe = norm + constant(zero.astype(norm.data.dtype))  # 0 -> 1: no inf, even unused
        if self.p == 2:
            d = x / safe
        else:
            d = constant(xp.sign(x.data)) * x.abs() ** (self.p - 1) / safe ** (self.p - 1)
        return keep_where(~zero, g * d)


def _vector_norm(name, x, p, dim, keepdim):
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: p must be a number, got {p!r}") from None
    if np.isnan(p):
        raise ValueError(f"{name}: p must be a number, got nan")
    axes = reduction_axes(dim, x.ndim) if x.ndim else ()
    if not np.isfinite(p) or p <= 0:
        # 0 (count of non-zeros), +-inf (max / min of |x|) and negative p: PyTorch takes them
        from ...math_ops import vector_norm
        return vector_norm(x, p, dim=tuple(axes), keepdim=keepdim)
    return VectorNorm.apply(x, p=p, axes=tuple(axes), keepdim=keepdim)


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """input / max(||input||_p over ``dim``, eps), as PyTorch's F.normalize."""
    name = "normalize"
    _float_input(name, input)
    if out is not None:
        raise ValueError(f"{name}: out= is not supported in minidl")
    norm = _vector_norm(name, input, p, dim, keepdim=True)
    return input / norm.clamp(min=eps)


def _broadcast_pair(name, x1, x2):
    for what, t in (("x1", x1), ("x2", x2)):
        _float_input(f"{name}: {what}", t)
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError:
        raise ValueError(f"{name}: x1 of shape {x1.shape} and x2 of shape {x2.shape} do not "
                         "broadcast") from None
    return (x1 if x1.shape == shape else x1.expand(*shape),
            x2 if x2.shape == shape else x2.expand(*shape))


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """Sum over ``dim`` of (x1 / ||x1||) * (x2 / ||x2||), each norm at least eps, as
    PyTorch computes it (the clamp does not stop the gradient)."""
    name = "cosine_similarity"
    x1, x2 = _broadcast_pair(name, x1, x2)
    (x1, x2) = _F._autocast_inputs("cosine_similarity", x1, x2)
    xp = get_array_module(x1.data)
    unit = []
    for t in (x1, x2):
        norm = _vector_norm(name, t, 2.0, dim, keepdim=True)
        lift = xp.maximum(norm.data, eps) - norm.data  # eps where the norm is smaller: no grad
        unit.append(t / (norm + Tensor(lift)))
    return (unit[0] * unit[1]).sum(dim=dim)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """||x1 - x2 + eps||_p over the last dim, as PyTorch's."""
    name = "pairwise_distance"
    x1, x2 = _broadcast_pair(name, x1, x2)
    (x1, x2) = _F._autocast_inputs("pairwise_distance", x1, x2)
    return _vector_norm(name, x1 - x2 + eps, p, -1, keepdim)
