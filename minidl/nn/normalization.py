"""Normalisation and distance layers: GroupNorm, InstanceNorm1d/2d, LocalResponseNorm,
CosineSimilarity, PairwiseDistance, with PyTorch's arguments, parameters, buffers and repr."""
from __future__ import annotations

import numpy as np

from ..backend.dtypes import default_float
from ._functional import normalization as N
from . import init
from ..tensor import Tensor
from .layers import _NormBase
from .module import Module, Parameter


def _to(module, device, dtype):
    if device is not None or dtype is not None:
        module.to(*(a for a in (device, dtype) if a is not None))


class GroupNorm(Module):
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = eps, affine
        if affine:
            self.weight = Parameter(np.ones(num_channels, dtype=default_float()))
            if bias:
                self.bias = Parameter(np.zeros(num_channels, dtype=default_float()))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        _to(self, device, dtype)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        return N.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")


class _InstanceNorm(_NormBase):
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    _dims = 1

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=default_float()))
            if bias:
                self.bias = Parameter(np.zeros(num_features, dtype=default_float()))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=default_float()))
            self.register_buffer("running_var", np.ones(num_features, dtype=default_float()))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        _to(self, device, dtype)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        name, n = type(self).__name__, self._dims
        if input.ndim not in (n + 1, n + 2):
            raise ValueError(f"{name}: expected a {n + 1}-D (unbatched) or {n + 2}-D input, "
                             f"got shape {input.shape}")
        unbatched = input.ndim == n + 1
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[1] != self.num_features and self.affine:
            raise ValueError(f"{name}: expected input with {self.num_features} channels, got "
                             f"shape {input.shape}")
        # as PyTorch: the batch count stays at 0, and momentum=None means 0 here
        y = N.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            self.momentum if self.momentum is not None else 0.0, self.eps)
        return y.squeeze(0) if unbatched else y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    """Per-sample, per-channel normalisation of (N, C, L) or (C, L) input."""

    _dims = 1


class InstanceNorm2d(_InstanceNorm):
    """Per-sample, per-channel normalisation of (N, C, H, W) or (C, H, W) input."""

    _dims = 2


class InstanceNorm3d(_InstanceNorm):
    """Per-sample, per-channel normalisation of (N, C, D, H, W) or (C, D, H, W) input."""

    _dims = 3


class LocalResponseNorm(Module):
    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        return N.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def _cross_map_window(channels, size):
    """(C, C) 0/1 matrix: row c marks the channels torch's CrossMapLRN2d sums for channel c,
    those within (size - 1) // 2 + 1 - 1 of c and, as its running sum never drops it,
    channel 0 as well."""
    half = int((size - 1) / 2 + 1) - 1
    m = np.zeros((channels, channels))
    for c in range(channels):
        m[c, max(0, c - half):min(channels, c + half + 1)] = 1
        m[c, 0] = 1
    return m


class CrossMapLRN2d(Module):
    """torch.nn.CrossMapLRN2d, the legacy (Lua Torch) local response norm of 4-D input:
    x / (k + alpha / size * sum of x**2 over neighbouring channels) ** beta. Its window is
    torch's, channel 0 included in every sum; the gradient is this function's own
    (torch's hand-written backward does not match its forward)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        if input.ndim != 4:
            raise ValueError(f"CrossMapLRN2d: Expected input to be 4D, got {input.ndim}D "
                             "instead.")
        window = _cross_map_window(input.shape[1], self.size).astype(input.data.dtype)
        sums = ((input * input).movedim(1, -1) @ Tensor(window.T, device=input.device)
                ).movedim(-1, 1)
        return input * (sums * (self.alpha / self.size) + self.k) ** (-self.beta)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class CosineSimilarity(Module):
    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1, x2):
        return N.cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    def __init__(self, p=2.0, eps=1e-6, keepdim=False):
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1, x2):
        return N.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)
