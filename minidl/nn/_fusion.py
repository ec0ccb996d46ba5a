"""Folding an eval-mode BatchNorm into the convolution or linear layer before it, as
torch.nn.utils.fusion: fuse_conv_bn_eval / fuse_conv_bn_weights and fuse_linear_bn_eval /
fuse_linear_bn_weights. The fused weights are new Parameters in the layer's dtypes."""
from __future__ import annotations

import copy

from ..backend import get_array_module
from ..tensor import Tensor
from .module import Parameter


def _arr(t):
    return t.data if isinstance(t, Tensor) else t


def _check_eval(layer, bn):
    if layer.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("fuse: the batch norm keeps no running statistics "
                             "(track_running_stats=False), so there is nothing to fold in")


def _bn_terms(bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    rm, rv = _arr(bn_rm), _arr(bn_rv)
    xp = get_array_module(rm)
    w = xp.ones_like(rm) if bn_w is None else _arr(bn_w)
    b = xp.zeros_like(rm) if bn_b is None else _arr(bn_b)
    return xp, rm, w, b, 1 / xp.sqrt(rv + rv.dtype.type(bn_eps))


def fuse_conv_bn_weights(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """(weight, bias) of the convolution that computes bn(conv(x)) with the bn's running
    statistics: the weight scaled per output channel (dim 1 when ``transpose``)."""
    xp, rm, w, b, rsqrt = _bn_terms(bn_rm, bn_rv, bn_eps, bn_w, bn_b)
    cw = _arr(conv_w)
    cb = xp.zeros_like(rm) if conv_b is None else _arr(conv_b)
    w_dtype = cw.dtype
    b_dtype = w_dtype if conv_b is None else cb.dtype
    shape = ((1, -1) if transpose else (-1, 1)) + (1,) * (cw.ndim - 2)
    fused_w = (cw * (w * rsqrt).reshape(shape)).astype(w_dtype, copy=False)
    fused_b = ((cb - rm) * rsqrt * w + b).astype(b_dtype, copy=False)
    return (Parameter(fused_w, requires_grad=conv_w.requires_grad),
            Parameter(fused_b, requires_grad=conv_b is not None and conv_b.requires_grad))


def fuse_conv_bn_eval(conv, bn, transpose=False):
    """A copy of ``conv`` (eval mode) whose output is ``bn(conv(x))`` for the eval-mode bn."""
    _check_eval(conv, bn)
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        fused.weight, fused.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias,
        transpose)
    return fused


def fuse_linear_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    """(weight, bias) of the linear layer that computes bn(linear(x)) (eval statistics)."""
    xp, rm, w, b, rsqrt = _bn_terms(bn_rm, bn_rv, bn_eps, bn_w, bn_b)
    lw = _arr(linear_w)
    lb = xp.zeros_like(rm) if linear_b is None else _arr(linear_b)
    w_dtype = lw.dtype
    b_dtype = w_dtype if linear_b is None else lb.dtype
    scale = w * rsqrt
    fused_w = (lw * scale[:, None].astype(w_dtype, copy=False)).astype(w_dtype, copy=False)
    fused_b = ((lb - rm) * scale + b).astype(b_dtype, copy=False)
    return (Parameter(fused_w, requires_grad=linear_w.requires_grad),
            Parameter(fused_b, requires_grad=linear_b is not None and linear_b.requires_grad))


def fuse_linear_bn_eval(linear, bn):
    """A copy of ``linear`` (eval mode) whose output is ``bn(linear(x))``; bn.num_features
    must be linear.out_features or 1."""
    _check_eval(linear, bn)
    if not (linear.out_features == bn.num_features or bn.num_features == 1):
        raise AssertionError("To fuse, linear.out_features must equal bn.num_features or "
                             "bn.num_features must be 1")
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(
        fused.weight, fused.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return fused


__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval",
           "fuse_linear_bn_weights"]
