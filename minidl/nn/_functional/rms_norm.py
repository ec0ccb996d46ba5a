"""rms_norm: root-mean-square normalisation over the last dims, as torch.nn.functional.rms_norm.

One ``Function`` with forward and backward side by side (as ``functional.LayerNorm``): only the
input and one number per row (1 / rms) are kept for backward. 16-bit input is computed in float32
and rounded, as PyTorch's CPU kernel does; ``eps=None`` is the machine epsilon of that compute
dtype (float32's for 16-bit and float32 input, float64's for float64), which is what PyTorch
uses. The output has the input's dtype, whatever the weight's (PyTorch's rule too).
"""
from __future__ import annotations

import numpy as np

from ...backend import get_array_module
from ...backend.dtypes import is_floating, is_real_number
from ...functional import _float_input, _needs_grad, _opmath, _shape_tuple
from ...tensor import Function


class RMSNorm(Function):
    def forward(self, x, *weight, ndim, eps):
        xp = get_array_module(x)
        axes = tuple(range(x.ndim - ndim, x.ndim))
        xw = _opmath(x)
        if eps is None:
            eps = float(np.finfo(xw.dtype).eps)
        rstd = 1 / xp.sqrt((xw * xw).mean(axis=axes, keepdims=True) + eps)
        y = xw * rstd
        w = weight[0] if weight else None
        if w is not None:
            y = y * w.astype(y.dtype, copy=False)
        self.axes, self.eps = axes, eps
        self.save_for_backward(x, rstd, w)
        return y.astype(x.dtype, copy=False)

    def backward(self, g):
        x, rstd, w = self.saved
        axes = self.axes
        xhat = _opmath(x) * rstd
        gw_ = _opmath(g)
        gxhat = gw_ * w.astype(gw_.dtype, copy=False) if w is not None else gw_
        gx = None
        if _needs_grad(self, 0):
            # d/dx of x * rstd(x): rstd * (gxhat - xhat * mean(gxhat * xhat))
            gx = rstd * (gxhat - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
            gx = gx.astype(x.dtype, copy=False)
        if w is None:
            return (gx,)
        lead = tuple(range(x.ndim - len(axes)))
        gw = None
        if _needs_grad(self, 1):
            gw = (gw_ * xhat).sum(axis=lead).astype(w.dtype, copy=False)
        return gx, gw

    def graph_backward(self, g, out):
        x = self.inputs[0]
        w = self.inputs[1] if len(self.inputs) > 1 else None
        axes = self.axes
        rstd = ((x * x).mean(dim=axes, keepdim=True) + self.eps) ** -0.5
        xhat = x * rstd
        gxhat = g * w if w is not None else g
        gx = None
        if x.requires_grad:
            gx = rstd * (gxhat - xhat * (gxhat * xhat).mean(dim=axes, keepdim=True))
        if w is None:
            return (gx,)
        lead = tuple(range(x.ndim - len(axes)))
        return gx, ((g * xhat).sum(dim=lead) if w.requires_grad else None)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """y = input / sqrt(mean(input^2 over the last len(normalized_shape) dims) + eps) * weight,
    as torch.nn.functional.rms_norm; ``eps=None`` is the machine epsilon of the compute dtype."""
    name = "rms_norm"
    _float_input(name, input)
    shape = _shape_tuple(name, "normalized_shape", normalized_shape)
    if not shape or len(shape) > input.ndim or tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise ValueError(f"{name}: normalized_shape {list(shape)} must be the last dims of the "
                         f"input, got input of shape {tuple(input.shape)}")
    if eps is not None:
        if isinstance(eps, bool) or not is_real_number(eps):
            raise TypeError(f"{name}: eps must be a float or None, got {eps!r}")
        eps = float(eps)
    if weight is None:
        return RMSNorm.apply(input, ndim=len(shape), eps=eps)
    if tuple(weight.shape) != shape:
        raise ValueError(f"{name}: weight has shape {tuple(weight.shape)}, expected "
                         f"normalized_shape {list(shape)}")
    if weight.device != input.device:
        raise ValueError(f"{name}: weight is on {weight.device}, input on {input.device}")
    if not is_floating(weight.data.dtype):
        raise TypeError(f"{name}: weight must be a floating-point tensor, got {weight.dtype}")
    return RMSNorm.apply(input, weight, ndim=len(shape), eps=eps)
