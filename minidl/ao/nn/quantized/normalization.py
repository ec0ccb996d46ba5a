"""Quantized layer norm (torch.ao.nn.quantized.LayerNorm), as torch's CPU kernel: per row of
the normalized dims, the integers' exact sum and sum of squares give, in float32,
``mean = sum / N`` and ``var = max(sum_sq / N - mean**2, 0)`` (in units of the input's scale:
torch's kernel takes the input scale as 1, so eps is added to the variance of the integers),
``inv_std = float32(1 / sqrt(var + eps))`` (the sum and root in double), and each element
``y = fma(((q - zp) - (mean - zp)) * inv_std, gamma, beta)``, quantized as
``rint(y * float32(1 / scale)) + zero_point``. (torch's scalar loop over the row's last
elements rounds the multiply-add twice; that differs at rare ties only.)"""
from __future__ import annotations

import numpy as np

from .... import nn
from ....tensor import Tensor
from ...quantization._qmath import quantize_vec
from ...quantization.qtensor import QTensor
from .activation import _check_input


class LayerNorm(nn.LayerNorm):
    """Layer norm of a quantized tensor, requantized with the output's scale and zero point
    (buffers, as torch's)."""

    def __init__(self, normalized_shape, weight, bias, scale, zero_point, eps=1e-5,
                 elementwise_affine=True, device=None, dtype=None):
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)
        if elementwise_affine:
            self.weight, self.bias = weight, bias
        self.register_buffer("scale", Tensor(np.array(scale, np.float32)))
        self.register_buffer("zero_point", Tensor(np.array(zero_point, np.int64)))

    _resizable_buffers = ("scale", "zero_point")

    def forward(self, input):
        _check_input("LayerNorm", input)
        dims = len(self.normalized_shape)
        if tuple(input.shape[input.ndim - dims:]) != tuple(self.normalized_shape):
            raise ValueError(f"quantized LayerNorm: expected an input whose last dims are "
                             f"{tuple(self.normalized_shape)}, got shape {input.shape}")
        f = np.float32
        n = int(np.prod(self.normalized_shape))
        q = input._ints.reshape(-1, n).astype(np.int64)
        zp = int(input._zero_point)
        mean = q.sum(1).astype(f) / f(n)
        mean_minus_zp = (mean - f(zp)).astype(f)
        var = np.maximum((q * q).sum(1).astype(f) / f(n) - mean * mean, f(0))
        inv_std = (1.0 / np.sqrt(var.astype(np.float64) + self.eps)).astype(f)
        v = ((q - zp).astype(f) - mean_minus_zp[:, None]) * inv_std[:, None]
        gamma = np.ones(n, f) if self.weight is None else self.weight.detach().numpy().reshape(-1)
        beta = np.zeros(n, f) if self.bias is None else self.bias.detach().numpy().reshape(-1)
        y = (v.astype(np.float64) * gamma.astype(np.float64) + beta.astype(np.float64)).astype(f)
        scale = float(self.scale.numpy().reshape(-1)[0])
        out_zp = int(self.zero_point.numpy().reshape(-1)[0])
        ints = quantize_vec(y, f(1) / f(scale), out_zp, input.dtype).reshape(input.shape)
        return QTensor(ints, input.dtype, scale, out_zp)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        from ...quantization._observed import _check_observed

        scale, zp = _check_observed(mod).calculate_qparams()
        return cls(mod.normalized_shape, mod.weight, mod.bias, float(scale.numpy().reshape(-1)[0]),
                   int(zp.numpy().reshape(-1)[0]), mod.eps, mod.elementwise_affine)

    def __repr__(self):
        return (f"QuantizedLayerNorm({tuple(self.normalized_shape)}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


__all__ = ["LayerNorm"]
