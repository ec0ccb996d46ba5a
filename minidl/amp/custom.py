"""``torch.amp``'s helpers for custom autograd Functions under autocast: ``custom_fwd`` and
``custom_bwd`` decorate a PyTorch-style Function's ``forward(ctx, ...)`` and
``backward(ctx, ...)`` so that backward runs with the autocast state forward ran with, and
forward may run in one dtype of its own (``cast_inputs``) with autocast off inside; and
``is_autocast_available``."""
from __future__ import annotations

import functools

from ..backend.dtypes import as_dtype, float64, is_floating
from ..tensor import Tensor
from .autocast import DEVICES, autocast, get_autocast_dtype, is_autocast_enabled

__all__ = ["custom_fwd", "custom_bwd", "is_autocast_available"]

# device types torch knows that have no autocast in minidl (is_autocast_available: False)
_OTHER_DEVICE_TYPES = ("mps", "xpu", "meta", "hip", "ipu", "mkldnn", "opengl", "opencl",
                       "ideep", "ve", "fpga", "maia", "xla", "lazy", "vulkan", "hpu", "mtia",
                       "privateuseone")


def is_autocast_available(device_type: str) -> bool:
    """Whether autocast runs on ``device_type``: "cpu" and "cuda" (even without a GPU, as
    torch's CPU build answers)."""
    if not isinstance(device_type, str):
        raise TypeError(f"is_autocast_available: device_type must be a str, got "
                        f"{type(device_type).__name__}")
    name = device_type.split(":")[0].lower()
    if name in DEVICES:
        return True
    if name in _OTHER_DEVICE_TYPES:
        return False
    raise RuntimeError(f"Expected one of {', '.join(DEVICES + _OTHER_DEVICE_TYPES)} device "
                       f"type at start of device string: {device_type}")


def _check_device_type(device_type):
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    return device_type


def _cast(value, device_type, dtype):
    """``value`` with each floating Tensor on ``device_type`` (float64 aside, as autocast
    leaves it) cast to ``dtype``, through lists, tuples and dicts."""
    if isinstance(value, Tensor):
        eligible = (value.device == device_type and is_floating(value.dtype)
                    and value.dtype != float64 and value.dtype != dtype)
        return value.to(dtype=dtype) if eligible else value
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, dict):
        return {k: _cast(v, device_type, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        cast = [_cast(v, device_type, dtype) for v in value]
        return type(value)(cast) if not hasattr(value, "_fields") else type(value)(*cast)
    return value


def custom_fwd(fwd=None, *, device_type, cast_inputs=None):
    """Decorate a custom Function's ``forward(ctx, ...)`` (``@custom_fwd(device_type="cuda")``).
    It notes on ``ctx`` whether autocast was on, and its dtype, for ``custom_bwd``. With
    ``cast_inputs`` (a dtype) and autocast on for ``device_type``, forward instead runs with
    autocast off, on its floating inputs on that device cast to ``cast_inputs`` (and backward
    then runs without autocast)."""
    _check_device_type(device_type)
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)
    dtype = None if cast_inputs is None else as_dtype(cast_inputs)

    @functools.wraps(fwd)
    def decorate_fwd(*args, **kwargs):
        ctx = args[0]
        ctx._dtype = get_autocast_dtype(device_type)
        enabled = is_autocast_enabled(device_type)
        if dtype is None:
            ctx._fwd_used_autocast = enabled
            return fwd(*args, **kwargs)
        ctx._fwd_used_autocast = False
        if not enabled:
            return fwd(*args, **kwargs)
        with autocast(device_type, enabled=False):
            return fwd(*_cast(args, device_type, dtype), **_cast(kwargs, device_type, dtype))

    return decorate_fwd


def custom_bwd(bwd=None, *, device_type):
    """Decorate a custom Function's ``backward(ctx, ...)``: it runs with the autocast state
    (on or off, and the dtype) its forward, decorated with ``custom_fwd``, ran with."""
    _check_device_type(device_type)
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(*args, **kwargs):
        ctx = args[0]
        if not hasattr(ctx, "_fwd_used_autocast"):
            raise AttributeError("custom_bwd: the forward of this Function was not decorated "
                                 "with custom_fwd, so the autocast state it ran with is unknown")
        with autocast(device_type, enabled=ctx._fwd_used_autocast, dtype=ctx._dtype):
            return bwd(*args, **kwargs)

    return decorate_bwd
