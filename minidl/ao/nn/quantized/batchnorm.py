"""Quantized batch norm (torch.ao.nn.quantized.BatchNorm2d/3d, and the fused BNReLU2d of
ao.nn.intrinsic.quantized): the running statistics, weight and bias fold into one float32
multiplier and offset per channel, as torch's ``compute_fused_params``:

    inv_sigma = float32(1.0 / sqrt(float32(var + eps)))
    alpha = float32(inv_sigma * weight * (in_scale / out_scale))
    beta  = float32((bias - mean * inv_sigma * weight) / out_scale)

and each output integer is ``rint(fma(alpha, q - in_zp, beta)) + out_zp`` (torch's kernel
runs over channels-last data: channels in vectors of 8, where the multiply-add is fused;
the last ``C % 8`` channels take its scalar loop, a float32 product then a float32 sum),
clamped to the dtype (from the zero point up with the ReLU fused)."""
from __future__ import annotations

import numpy as np

from .... import nn
from ....tensor import Tensor
from ...quantization.qtensor import QTensor, keep_layout
from .activation import _check_input


def fused_params(weight, bias, mean, var, eps, in_scale, out_scale):
    f = np.float32
    var, mean = np.asarray(var, f), np.asarray(mean, f)
    weight = np.ones_like(var) if weight is None else np.asarray(weight, f)
    bias = np.zeros_like(var) if bias is None else np.asarray(bias, f)
    inv_sigma = (1.0 / np.sqrt(var + f(eps)).astype(np.float64)).astype(f)
    alpha = ((inv_sigma * weight).astype(np.float64) * (in_scale / out_scale)).astype(f)
    beta = ((bias - mean * inv_sigma * weight).astype(np.float64) / out_scale).astype(f)
    return alpha, beta


def batch_norm_ints(x, alpha, beta, out_zero_point, relu):
    """The output integers of x (N, C, ...) quantized, as torch's kernel."""
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    diff = x._ints.astype(np.int64) - int(x._zero_point)
    a, b = alpha.reshape(shape), beta.reshape(shape)
    fused = (diff.astype(np.float64) * a.astype(np.float64) + b.astype(np.float64)).astype(
        np.float32)
    scalar = (diff.astype(np.float32) * a) + b  # two float32 roundings
    vec_channels = c - c % 8
    y = np.concatenate([fused[:, :vec_channels], scalar[:, vec_channels:]], axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        ints = np.rint(np.minimum(y, np.float32(2 ** 31 - 128))).astype(np.int64)
    ints += int(out_zero_point)
    lo = max(x.dtype.qmin, int(out_zero_point)) if relu else x.dtype.qmin
    return np.clip(ints, lo, x.dtype.qmax).astype(x.dtype.storage)


class _QuantizedBatchNorm:
    """Batch norm with the running statistics on a quantized (N, C, H, W) or (N, C, D, H, W)
    tensor, requantized to the output's scale and zero point (buffers, as torch's)."""

    _resizable_buffers = ("scale", "zero_point")
    _relu = False
    _ndim = 4

    def _init_qparams(self):
        self.register_buffer("scale", Tensor(np.array(1.0, np.float32)))
        self.register_buffer("zero_point", Tensor(np.array(0, np.int64)))

    def forward(self, input):
        name = type(self).__name__
        _check_input(name, input)
        if input.ndim != self._ndim:
            raise ValueError(f"quantized {name}: input shape must be "
                             f"{'(N, C, H, W)' if self._ndim == 4 else '(N, C, D, H, W)'}, got "
                             f"{input.shape}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"quantized {name}: input has {input.shape[1]} channels, the "
                             f"layer expects {self.num_features}")
        scale = float(self.scale.numpy().reshape(-1)[0])
        zp = int(self.zero_point.numpy().reshape(-1)[0])
        alpha, beta = fused_params(self.weight.detach().numpy(), self.bias.detach().numpy(),
                                   self.running_mean.numpy(), self.running_var.numpy(),
                                   self.eps, float(input._scale), scale)
        return keep_layout(QTensor(batch_norm_ints(input, alpha, beta, zp, self._relu),
                                   input.dtype, scale, zp), None, self._ndim == 4)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """From a prepared nn.BatchNorm2d (or a fused BNReLU2d): its parameters and running
        statistics shared, the output's scale and zero point from its observer."""
        from ...quantization._observed import _check_observed

        scale, zp = _check_observed(mod).calculate_qparams()
        bn = mod[0] if isinstance(mod, nn.Sequential) else mod  # a fused BNReLU2d's
        out = cls(bn.num_features, bn.eps)
        out.weight, out.bias = bn.weight, bn.bias
        out.running_mean, out.running_var = bn.running_mean, bn.running_var
        out.scale = Tensor(np.asarray(scale.numpy(), np.float32).reshape(1))
        out.zero_point = Tensor(np.asarray(zp.numpy(), np.int64).reshape(1))
        return out

    def __repr__(self):
        return f"{self._NAME}({self.num_features}, eps={self.eps}, momentum={self.momentum}, " \
               "affine=True, track_running_stats=True)"


class BatchNorm2d(_QuantizedBatchNorm, nn.BatchNorm2d):
    """Quantized batch norm over (N, C, H, W) (see the module's docstring)."""

    _NAME = "QuantizedBatchNorm2d"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, device=None, dtype=None):
        nn.BatchNorm2d.__init__(self, num_features, eps, momentum, True, True)
        self._init_qparams()


class BatchNorm3d(_QuantizedBatchNorm, nn.BatchNorm3d):
    """Quantized batch norm over (N, C, D, H, W) (see the module's docstring)."""

    _NAME = "QuantizedBatchNorm3d"
    _ndim = 5

    def __init__(self, num_features, eps=1e-5, momentum=0.1, device=None, dtype=None):
        nn.BatchNorm3d.__init__(self, num_features, eps, momentum, True, True)
        self._init_qparams()


__all__ = ["BatchNorm2d", "BatchNorm3d"]
