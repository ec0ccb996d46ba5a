"""torch.nn.utils' names: gradient clipping (clip_grad_norm_, clip_grad_value_) and
parameters_to_vector / vector_to_parameters."""
from __future__ import annotations

import math

import numpy as np

from ..backend import device_of, get_array_module, to_device
from ..ops import cat
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def _grads(parameters, where):
    """The gradients (Tensors) of a Tensor or an iterable of them; those without one are skipped."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    try:
        parameters = list(parameters)
    except TypeError:
        raise TypeError(f"{where}: parameters must be a Tensor or an iterable of Tensors, got "
                        f"a {type(parameters).__name__}") from None
    for i, p in enumerate(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: parameter {i} is a {type(p).__name__}, not a Tensor")
    return [p.grad for p in parameters if p.grad is not None]


def _number(where, key, value):
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {key} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{where}: {key} must be >= 0, got {value}")
    return value


def _vector_norm(a, p):
    """The p-norm of all of ``a`` as a 0-d array of float32 (float64 for float64 input). The
    entries are divided by the largest magnitude before the powers, so that neither overflows
    (float32 gradients of 1e20 square to inf) nor underflows; inf and NaN come through."""
    xp = get_array_module(a)
    dtype = np.float64 if a.dtype == np.float64 else np.float32
    if a.size == 0:
        return xp.zeros((), dtype)
    a = xp.abs(a.astype(dtype, copy=False)).reshape(-1)  # a fresh array, worked on in place
    top = a.max()
    if p == math.inf:
        return xp.asarray(top)
    scale = xp.where(top > 0, top, xp.ones((), dtype))  # 0 (all zero) or NaN: divide by 1
    a /= scale
    if p == 1:
        total = a.sum()
    else:
        if p == 2:
            a *= a
        else:
            xp.power(a, p, out=a)
        total = a.sum() ** (1 / p)
    # an inf gradient made inf / inf = NaN above; its norm is inf, as PyTorch gives
    return xp.where(xp.isinf(top), top, scale * total).astype(dtype, copy=False)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients in place so that their norm_type-norm, taken over all of them as one
    vector, is at most max_norm: each is multiplied by min(1, max_norm / (total + 1e-6)).
    Parameters without a gradient are skipped. Returns the norm before clipping as a Tensor
    (float32, or float64 for float64 gradients), on the gradients' device. A non-finite norm
    raises RuntimeError if error_if_nonfinite, else scales the gradients by NaN as PyTorch
    does. ``foreach`` is accepted for PyTorch's signature and has no effect."""
    where = "clip_grad_norm_"
    grads = _grads(parameters, where)
    max_norm = _number(where, "max_norm", max_norm)
    try:
        p = float(norm_type)  # PyTorch takes "inf" too
    except (TypeError, ValueError):
        raise TypeError(f"{where}: norm_type must be a number or 'inf', got {norm_type!r}") from None
    if not p > 0:
        raise ValueError(f"{where}: norm_type must be > 0 or inf, got {norm_type!r}")
    if not grads:
        return Tensor(np.zeros((), np.float32))
    device = device_of(grads[0].data)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN pass through, as in torch
        norms = [to_device(_vector_norm(g.data, p), device) for g in grads]
        xp = get_array_module(norms[0])
        total = norms[0] if len(norms) == 1 else _vector_norm(xp.stack(norms), p)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"{where}: the total norm of order {norm_type} of the gradients is "
                           f"{float(total)}, so it cannot be clipped; to scale the gradients by "
                           "the non-finite norm anyway, pass error_if_nonfinite=False")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0).astype(total.dtype, copy=False)
    if xp is not np or not coef >= 1:  # on the CPU, skip the pass that would multiply by 1
        with np.errstate(invalid="ignore"):  # inf * 0 = NaN, as in torch
            for g in grads:
                g.data *= to_device(coef, device_of(g.data)).astype(g.dtype, copy=False)
    return Tensor(total)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient in place to [-clip_value, clip_value]; parameters without a
    gradient are skipped. ``foreach`` is accepted for PyTorch's signature."""
    where = "clip_grad_value_"
    grads = _grads(parameters, where)
    clip_value = _number(where, "clip_value", clip_value)
    for g in grads:
        xp = get_array_module(g.data)
        xp.clip(g.data, -clip_value, clip_value, out=g.data)


def parameters_to_vector(parameters):
    """The parameters flattened and concatenated into one 1-D tensor (differentiable), as
    torch.nn.utils.parameters_to_vector; all on one device."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"parameters_to_vector: parameter {i} is a {type(p).__name__}, "
                            "not a Tensor")
        if p.device != params[0].device:
            raise TypeError(f"parameters_to_vector: found two parameters on different devices "
                            f"({params[0].device} and {p.device})")
    return cat([p.reshape(-1) for p in params])


def vector_to_parameters(vec, parameters):
    """Write consecutive slices of the 1-D ``vec`` into the parameters (in place, so
    optimizers holding them see the values), as torch.nn.utils.vector_to_parameters."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"vector_to_parameters: expected a Tensor, but got {type(vec).__name__}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"vector_to_parameters: vec of shape {vec.shape} does not hold the "
                         f"parameters' {total} elements")
    at = 0
    for p in params:
        if p.device != vec.device:
            raise TypeError(f"vector_to_parameters: vec is on {vec.device}, a parameter on "
                            f"{p.device}")
        n = p.numel()
        p.data[...] = vec.data[at:at + n].reshape(p.shape).astype(p.data.dtype, copy=False)
        at += n


# nn.utils.rnn (pad_sequence), importable as ``minidl.nn.utils.rnn`` too
import sys as _sys  # noqa: E402

from . import _rnn_utils as rnn  # noqa: E402

_sys.modules[__name__ + ".rnn"] = rnn
