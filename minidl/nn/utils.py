"""torch.nn.utils' names: gradient clipping (clip_grad_norm_, clip_grad_value_) and
parameters_to_vector / vector_to_parameters."""
from __future__ import annotations

import functools
import math

import numpy as np

from ..backend import device_of, get_array_module, to_device
from ..backend.dtypes import (default_float, is_floating, is_real_number, promote_types,
                              real_of)
from ..backend.sparse import SparseCOO, coalesce
from ..ops import cat, refuse_complex
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def _tensor_list(items, where, what="parameters", each="parameter"):
    """A Tensor or an iterable of Tensors as a list, refused with a TypeError naming ``where``
    otherwise."""
    if isinstance(items, Tensor):
        items = [items]
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"{where}: {what} must be a Tensor or an iterable of Tensors, got "
                        f"a {type(items).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {each} {i} is a {type(t).__name__}, not a Tensor")
    return items


def _grads(parameters, where):
    """The gradients (Tensors) of a Tensor or an iterable of them; those without one are skipped."""
    return [p.grad for p in _tensor_list(parameters, where) if p.grad is not None]


def _number(where, key, value):
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not is_real_number(value):
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
    dtype = np.float64 if a.dtype in (np.float64, np.complex128) else np.float32
    if a.size == 0:
        return xp.zeros((), dtype)
    if a.dtype.kind == "c":  # the magnitudes (a cast first would drop the imaginary parts)
        a = xp.abs(a).astype(dtype, copy=False).reshape(-1)
    else:
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


def _norm_dtype(tensors):
    """The dtype torch gives a total norm of ``tensors``: their real dtypes promoted (each
    tensor's norm has its own dtype, and the norms are stacked)."""
    return functools.reduce(promote_types, (real_of(t.data.dtype) for t in tensors))


def _norm_values(g):
    """The array whose norm is the gradient's: a sparse one's coalesced values (its repeated
    entries add up first)."""
    return coalesce(g).values if type(g) is SparseCOO else g


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients in place so that their norm_type-norm, taken over all of them as one
    vector, is at most max_norm: each is multiplied by min(1, max_norm / (total + 1e-6)).
    Parameters without a gradient are skipped. Returns the norm before clipping as a Tensor
    of the gradients' promoted dtype (bfloat16 for bfloat16 ones, summed in float32 first, as
    torch's), on the gradients' device. A non-finite norm
    raises RuntimeError if error_if_nonfinite, else scales the gradients by NaN as PyTorch
    does. ``foreach`` is accepted for PyTorch's signature and has no effect. A sparse gradient
    (nn.Embedding(sparse=True)) counts with its coalesced values and has its values scaled
    (torch 2.13 refuses it: its norm kernel has no sparse form)."""
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
        return Tensor(np.zeros((), default_float()))
    device = device_of(grads[0].data)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN pass through, as in torch
        norms = [to_device(_vector_norm(_norm_values(g.data), p), device) for g in grads]
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
                target = g.data.values if type(g.data) is SparseCOO else g.data
                target *= to_device(coef, device_of(target)).astype(g.dtype, copy=False)
    return Tensor(total.astype(_norm_dtype(grads), copy=False))


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient in place to [-clip_value, clip_value]; parameters without a
    gradient are skipped. ``foreach`` is accepted for PyTorch's signature. A sparse gradient
    (nn.Embedding(sparse=True)) is coalesced (its repeated entries summed, as the dense
    gradient they stand for) and its values clamped, as clip_grad_norm_ takes one (torch 2.13
    refuses it part way, after clamping the gradients before it)."""
    where = "clip_grad_value_"
    grads = _grads(parameters, where)
    clip_value = _number(where, "clip_value", clip_value)
    for g in grads:
        refuse_complex("clamp", g.data)  # as torch's (NumPy would clip the real parts)
    for g in grads:
        if type(g.data) is SparseCOO:
            summed = coalesce(g.data)
            xp = get_array_module(summed.values)
            g.data = summed.with_values(xp.clip(summed.values, -clip_value, clip_value))
            continue
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


# ---- added 2026-12-06: torch.nn.utils' newer clipping helpers, the hook-based
# reparametrisations, batch-norm fusion and skip_init ----------------------------------------
import warnings as _warnings  # noqa: E402

from ._fusion import (  # noqa: E402,F401
    fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval, fuse_linear_bn_weights,
)
from ._norm_hooks import (  # noqa: E402,F401
    remove_spectral_norm, remove_weight_norm, spectral_norm, weight_norm,
)


def _norm_type(where, norm_type):
    try:
        p = float(norm_type)  # PyTorch takes "inf" too
    except (TypeError, ValueError):
        raise TypeError(f"{where}: norm_type must be a number or 'inf', got {norm_type!r}") from None
    if not p > 0:
        raise ValueError(f"{where}: norm_type must be > 0 or inf, got {norm_type!r}")
    return p


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm_type-norm of ``tensors`` taken together as one vector (usually the gradients:
    ``get_total_norm([p.grad for p in model.parameters()])``), as a 0-d Tensor of the tensors'
    promoted (real) dtype, as torch's: bfloat16 for bfloat16 gradients (summed in float32
    first), float32 beside float32 ones; 0. for none). Not differentiable (PyTorch computes it under
    no_grad too). A non-finite norm raises RuntimeError if error_if_nonfinite."""
    where = "get_total_norm"
    tensors = _tensor_list(tensors, where, "tensors", "item")
    p = _norm_type(where, norm_type)
    if not tensors:
        return Tensor(np.zeros((), default_float()))
    device = device_of(tensors[0].data)
    with np.errstate(invalid="ignore", over="ignore"):
        norms = [to_device(_vector_norm(t.data, p), device) for t in tensors]
        xp = get_array_module(norms[0])
        total = norms[0] if len(norms) == 1 else _vector_norm(xp.stack(norms), p)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {float(p)} for gradients from `parameters` "
                           "is non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    return Tensor(total.astype(_norm_dtype(tensors), copy=False))


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale the gradients in place by min(max_norm / (total_norm + 1e-6), 1), with a total
    norm computed beforehand (get_total_norm), as torch.nn.utils.clip_grads_with_norm_."""
    where = "clip_grads_with_norm_"
    grads = _grads(parameters, where)
    max_norm = _number(where, "max_norm", max_norm)
    if not grads:
        return
    total = total_norm.data if isinstance(total_norm, Tensor) else np.asarray(float(total_norm))
    xp = get_array_module(total)
    dtype = total.dtype if is_floating(total.dtype) else np.float32
    with np.errstate(invalid="ignore", divide="ignore"):
        coef = xp.minimum(max_norm / (total.astype(dtype) + 1e-6), 1.0).astype(dtype)
        for g in grads:
            g.data *= to_device(coef, device_of(g.data)).astype(g.dtype, copy=False)


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Deprecated alias of clip_grad_norm_ (warns FutureWarning, as PyTorch)."""
    _warnings.warn("`torch.nn.utils.clip_grad_norm` is now deprecated in favor of "
                   "`torch.nn.utils.clip_grad_norm_`.", FutureWarning, stacklevel=2)
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def skip_init(module_cls, *args, **kwargs):
    """``module_cls(*args, **kwargs)`` with its parameters and buffers left uninitialised
    (``to_empty``), on ``device`` (default "cpu"). PyTorch builds the module on the meta device
    so that the initialisation never runs; minidl has no meta device, so it runs and is then
    discarded: the result is the same, the time spent is not saved."""
    import inspect

    from .module import Module
    if not (isinstance(module_cls, type) and issubclass(module_cls, Module)):
        raise RuntimeError(f"Expected a Module; got {module_cls}")
    if "device" not in inspect.signature(module_cls).parameters:
        raise RuntimeError("Module must support a 'device' arg to skip initialization")
    device = kwargs.pop("device", "cpu")
    return module_cls(*args, **kwargs).to_empty(device=device)


__all__ += ["get_total_norm", "clip_grads_with_norm_", "clip_grad_norm", "weight_norm",
            "remove_weight_norm", "spectral_norm", "remove_spectral_norm", "fuse_conv_bn_eval",
            "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights", "skip_init"]

from . import _parametrize as parametrize  # noqa: E402

_sys.modules[__name__ + ".parametrize"] = parametrize
from . import _parametrizations as parametrizations  # noqa: E402

_sys.modules[__name__ + ".parametrizations"] = parametrizations
from . import _prune as prune  # noqa: E402

_sys.modules[__name__ + ".prune"] = prune

import types as _types  # noqa: E402

from ._stateless import _deprecated_functional_call  # noqa: E402

stateless = _types.ModuleType(__name__ + ".stateless",
                              "torch.nn.utils.stateless: the deprecated functional_call")
stateless.functional_call = _deprecated_functional_call
_sys.modules[__name__ + ".stateless"] = stateless


# ---- torch.nn.utils.memory_format and the submodules users import by name --------------------
def _convert_weight_memory_format(module, memory_format, classes):
    if isinstance(module, classes):
        w = module.weight
        w.data = w.detach().clone(memory_format=memory_format).data
    for child in module.children():
        _convert_weight_memory_format(child, memory_format, classes)
    return module


def convert_conv2d_weight_memory_format(module, memory_format):
    """Every Conv2d/ConvTranspose2d weight in ``module`` (recursively) laid out in
    ``memory_format`` (e.g. minidl.channels_last); values and shapes unchanged. Returns
    ``module``."""
    from .conv import Conv2d, ConvTranspose2d

    return _convert_weight_memory_format(module, memory_format, (Conv2d, ConvTranspose2d))


def convert_conv3d_weight_memory_format(module, memory_format):
    """As convert_conv2d_weight_memory_format, for Conv3d/ConvTranspose3d weights
    (minidl.channels_last_3d)."""
    from .conv import Conv3d, ConvTranspose3d

    return _convert_weight_memory_format(module, memory_format, (Conv3d, ConvTranspose3d))


def _submodule(name, doc, **members):
    module = _types.ModuleType(f"{__name__}.{name}", doc)
    for key, value in members.items():
        setattr(module, key, value)
    module.__all__ = list(members)
    _sys.modules[module.__name__] = module
    return module


memory_format = _submodule(
    "memory_format", "torch.nn.utils.memory_format",
    convert_conv2d_weight_memory_format=convert_conv2d_weight_memory_format,
    convert_conv3d_weight_memory_format=convert_conv3d_weight_memory_format)
clip_grad = _submodule(
    "clip_grad", "torch.nn.utils.clip_grad: gradient clipping",
    clip_grad_norm_=clip_grad_norm_, clip_grad_norm=clip_grad_norm,
    clip_grad_value_=clip_grad_value_, get_total_norm=get_total_norm,
    clip_grads_with_norm_=clip_grads_with_norm_)
convert_parameters = _submodule(
    "convert_parameters", "torch.nn.utils.convert_parameters",
    parameters_to_vector=parameters_to_vector, vector_to_parameters=vector_to_parameters)
fusion = _submodule(
    "fusion", "torch.nn.utils.fusion: batch norm folded into the layer before it",
    fuse_conv_bn_eval=fuse_conv_bn_eval, fuse_conv_bn_weights=fuse_conv_bn_weights,
    fuse_linear_bn_eval=fuse_linear_bn_eval, fuse_linear_bn_weights=fuse_linear_bn_weights)
init = _submodule("init", "torch.nn.utils.init", skip_init=skip_init)

__all__ += ["convert_conv2d_weight_memory_format", "convert_conv3d_weight_memory_format"]
