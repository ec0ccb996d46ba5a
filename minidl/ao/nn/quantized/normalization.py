"""Quantized layer, group and instance norm (torch.ao.nn.quantized.LayerNorm, GroupNorm,
InstanceNorm1d/2d), as torch's CPU kernel (one for the three): per row of the normalized
elements (the last dims; a group's channels and positions; a channel's positions), the integers' exact sum and sum of squares give, in float32,
``mean = sum / N`` and ``var = max(sum_sq / N - mean**2, 0)`` (in units of the input's scale:
torch's kernel takes the input scale as 1, so eps is added to the variance of the integers),
``inv_std = float32(1 / sqrt(var + eps))`` (the sum and root in double), and each element
``y = fma(((q - zp) - (mean - zp)) * inv_std, gamma, beta)`` (gamma and beta per element
for layer norm, per channel for group and instance norm), quantized as
``rint(y * float32(1 / scale)) + zero_point``. (torch's scalar loop over the last elements
of a row, or of a channel, rounds the multiply-add twice; that differs at rare ties only.)"""
from __future__ import annotations

import numpy as np

from .... import nn
from ....tensor import Tensor
from ...quantization._qmath import quantize_vec
from ...quantization.qtensor import QTensor
from .activation import _check_input


def normalize_ints(x, rows, eps, gamma, beta, scale, zero_point):
    """The output integers of quantized ``x`` normalized over ``rows`` (x's integers
    reshaped to (M, N)), ``gamma``/``beta`` float32 arrays broadcasting against (M, N)."""
    f = np.float32
    q = x._ints.reshape(rows).astype(np.int64)
    n = q.shape[1]
    zp = int(x._zero_point)
    mean = q.sum(1).astype(f) / f(n)
    mean_minus_zp = (mean - f(zp)).astype(f)
    var = np.maximum((q * q).sum(1).astype(f) / f(n) - mean * mean, f(0))
    inv_std = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(f)
    v = ((q - zp).astype(f) - mean_minus_zp[:, None]) * inv_std[:, None]
    y = (v.astype(np.float64) * np.asarray(gamma, np.float64)
         + np.asarray(beta, np.float64)).astype(f)
    return quantize_vec(y, f(1) / f(scale), zero_point, x.dtype).reshape(x.shape)


def _qparams_buffers(module, scale, zero_point):
    module.register_buffer("scale", Tensor(np.array(scale, np.float32)))
    module.register_buffer("zero_point", Tensor(np.array(zero_point, np.int64)))


def _out_qparams(module):
    return (float(module.scale.numpy().reshape(-1)[0]),
            int(module.zero_point.numpy().reshape(-1)[0]))


def _affine(param, size):
    return np.ones(size, np.float32) if param is None else \
        param.detach().numpy().astype(np.float32).reshape(-1)


def _observed(mod):
    from ...quantization._observed import _check_observed

    scale, zp = _check_observed(mod).calculate_qparams()
    return float(scale.numpy().reshape(-1)[0]), int(zp.numpy().reshape(-1)[0])


class LayerNorm(nn.LayerNorm):
    """Layer norm of a quantized tensor, requantized with the output's scale and zero point
    (buffers, as torch's)."""

    _resizable_buffers = ("scale", "zero_point")

    def __init__(self, normalized_shape, weight, bias, scale, zero_point, eps=1e-5,
                 elementwise_affine=True, device=None, dtype=None):
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)
        if elementwise_affine:
            self.weight, self.bias = weight, bias
        _qparams_buffers(self, scale, zero_point)

    def forward(self, input):
        _check_input("LayerNorm", input)
        dims = len(self.normalized_shape)
        if tuple(input.shape[input.ndim - dims:]) != tuple(self.normalized_shape):
            raise ValueError(f"quantized LayerNorm: expected an input whose last dims are "
                             f"{tuple(self.normalized_shape)}, got shape {input.shape}")
        n = int(np.prod(self.normalized_shape))
        scale, zp = _out_qparams(self)
        beta = np.zeros(n, np.float32) if self.bias is None else _affine(self.bias, n)
        ints = normalize_ints(input, (-1, n), self.eps, _affine(self.weight, n), beta, scale, zp)
        return QTensor(ints, input.dtype, scale, zp)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        scale, zp = _observed(mod)
        return cls(mod.normalized_shape, mod.weight, mod.bias, scale, zp, mod.eps,
                   mod.elementwise_affine)

    def __repr__(self):
        return (f"QuantizedLayerNorm({tuple(self.normalized_shape)}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


def _per_channel_norm(module, input, groups, name):
    """Group norm of (N, C, *) quantized ``input`` with ``groups`` groups (instance norm:
    one a channel), the affine parameters per channel."""
    _check_input(name, input)
    if input.ndim < 2 or input.shape[1] != module._channels:
        raise ValueError(f"quantized {name}: expected an input of shape (N, "
                         f"{module._channels}, ...), got {input.shape}")
    n, c = input.shape[:2]
    positions = int(np.prod(input.shape[2:]))
    gamma = np.repeat(_affine(module.weight, c), positions).reshape(groups, -1)
    beta = np.repeat(np.zeros(c, np.float32) if module.bias is None
                     else _affine(module.bias, c), positions).reshape(groups, -1)
    rows = (n * groups, -1)
    gamma, beta = np.tile(gamma, (n, 1)), np.tile(beta, (n, 1))
    scale, zp = _out_qparams(module)
    ints = normalize_ints(input, rows, module.eps, gamma, beta, scale, zp)
    return QTensor(ints, input.dtype, scale, zp)


class GroupNorm(nn.GroupNorm):
    """Group norm of a quantized (N, C, *) tensor, as torch's quantized GroupNorm."""

    _resizable_buffers = ("scale", "zero_point")

    def __init__(self, num_groups, num_channels, weight, bias, scale, zero_point, eps=1e-5,
                 affine=True, device=None, dtype=None):
        super().__init__(num_groups, num_channels, eps, affine)
        self.weight, self.bias = weight, bias
        _qparams_buffers(self, scale, zero_point)

    @property
    def _channels(self):
        return self.num_channels

    def forward(self, input):
        return _per_channel_norm(self, input, self.num_groups, "GroupNorm")

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        scale, zp = _observed(mod)
        return cls(mod.num_groups, mod.num_channels, mod.weight, mod.bias, scale, zp, mod.eps,
                   mod.affine)

    def __repr__(self):
        return (f"QuantizedGroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine})")


def _instance_norm(base, dims):
    class InstanceNorm(base):
        __doc__ = f"Instance norm of a quantized (N, C, *) tensor ({dims}-D), as torch's."
        _resizable_buffers = ("scale", "zero_point")

        def __init__(self, num_features, weight, bias, scale, zero_point, eps=1e-5,
                     momentum=0.1, affine=False, track_running_stats=False, device=None,
                     dtype=None):
            base.__init__(self, num_features, eps, momentum, affine, track_running_stats)
            self.weight, self.bias = weight, bias
            _qparams_buffers(self, scale, zero_point)

        @property
        def _channels(self):
            return self.num_features

        def forward(self, input):
            return _per_channel_norm(self, input, self.num_features, type(self).__name__)

        @classmethod
        def from_float(cls, mod, use_precomputed_fake_quant=False):
            scale, zp = _observed(mod)
            return cls(mod.num_features, mod.weight, mod.bias, scale, zp, mod.eps,
                       affine=mod.affine)

        def __repr__(self):
            return f"QuantizedInstanceNorm{dims}d({self.num_features}, eps={self.eps})"

    InstanceNorm.__name__ = InstanceNorm.__qualname__ = f"InstanceNorm{dims}d"
    return InstanceNorm


InstanceNorm1d = _instance_norm(nn.InstanceNorm1d, 1)
InstanceNorm2d = _instance_norm(nn.InstanceNorm2d, 2)

__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "LayerNorm"]
