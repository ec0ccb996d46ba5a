"""Tensor creation, as PyTorch's factory functions: zeros, ones, full, arange, linspace, eye,
the ``*_like`` forms, and the random ones (randn, rand, randint) on minidl's seeded generator
(``minidl.manual_seed``). float32 by default; integer ranges and fills are int64, as in torch."""
from __future__ import annotations

import numpy as np

from .backend import rng
from .backend.dtypes import as_dtype, is_floating, scalar_dtype
from .tensor import Tensor


def zeros(*shape, dtype="float32", requires_grad=False, device="cpu"):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def ones(*shape, dtype="float32", requires_grad=False, device="cpu"):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def randn(*shape, dtype="float32", requires_grad=False, device="cpu"):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    values = rng().standard_normal(shape).astype(dtype)
    return Tensor(values, requires_grad=requires_grad, device=device)


def _number(name, what, x):
    """A Python number from an int, a float or a one-element tensor (as torch takes them)."""
    if isinstance(x, Tensor):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: {what} must be a number, got {type(x).__name__}")
    return x.item() if isinstance(x, np.generic) else x


def _creation_dtype(dtype, default):
    return as_dtype(default if dtype is None else dtype)


def arange(start, end=None, step=1, *, dtype=None, requires_grad=False, device="cpu"):
    """``start, start + step, ...`` up to ``end`` (excluded); ``arange(n)`` is 0 .. n-1.
    int64 where start, end and step are all integers, float32 otherwise, as in PyTorch."""
    if end is None:
        start, end = 0, start
    start, end, step = (_number("arange", what, v)
                        for what, v in (("start", start), ("end", end), ("step", step)))
    target = None if dtype is None else as_dtype(dtype)
    if target is not None and target.kind in "iu":  # PyTorch counts in the integer type
        start, end, step = int(start), end, int(step)
    if step == 0:
        raise ValueError("arange: step must be nonzero (an integer dtype truncates it)")
    if (end - start) * step < 0:
        raise ValueError(f"arange: end {end} cannot be reached from start {start} by step {step}")
    integral = all(isinstance(v, int) for v in (start, end, step))
    values = np.arange(start, end, step, dtype=np.int64 if integral else np.float64)
    dtype = _creation_dtype(dtype, np.int64 if integral else np.float32)
    return Tensor(values.astype(dtype), requires_grad=requires_grad, device=device)


def full(size, fill_value, *, dtype=None, requires_grad=False, device="cpu"):
    """A tensor of ``size`` (a tuple) filled with ``fill_value``; the dtype follows the value
    (bool, int64 or float32) unless given."""
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"full: size must be a tuple of ints, got {type(size).__name__}")
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    dtype = _creation_dtype(dtype, scalar_dtype(fill_value))
    return Tensor(np.full(tuple(size), fill_value, dtype=dtype), requires_grad=requires_grad,
                  device=device)


def full_like(input, fill_value, *, dtype=None, requires_grad=False, device=None):
    """``full(input.shape, fill_value)`` in input's dtype and on its device unless given."""
    return full(input.shape, fill_value, dtype=input.dtype if dtype is None else dtype,
                requires_grad=requires_grad, device=input.device if device is None else device)


def zeros_like(input, *, dtype=None, requires_grad=False, device=None):
    return full_like(input, 0, dtype=dtype, requires_grad=requires_grad, device=device)


def ones_like(input, *, dtype=None, requires_grad=False, device=None):
    return full_like(input, 1, dtype=dtype, requires_grad=requires_grad, device=device)


def rand(*shape, dtype=None, requires_grad=False, device="cpu"):
    """Uniform on [0, 1), from minidl's seeded generator (minidl.manual_seed)."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    dtype = _creation_dtype(dtype, "float32")
    if not is_floating(dtype):
        raise TypeError(f"rand: dtype must be a floating-point type, got {dtype}")
    return Tensor(rng().random(shape).astype(dtype), requires_grad=requires_grad, device=device)


def randint(low=0, high=None, size=None, *, dtype=None, requires_grad=False, device="cpu"):
    """Integers uniform on [low, high), int64 unless dtype is given: ``randint(high, size)``
    or ``randint(low, high, size)``, from minidl's seeded generator."""
    if size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high  # randint(high, size)
    elif high is None and size is not None:
        low, high = 0, low  # randint(high, size=size)
    if high is None or size is None:
        raise TypeError("randint: pass high and size, as randint(high, size) or "
                        "randint(low, high, size)")
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"randint: size must be a tuple of ints, got {type(size).__name__}")
    low, high = _number("randint", "low", low), _number("randint", "high", high)
    if low >= high:
        raise ValueError(f"randint: low ({low}) must be less than high ({high})")
    values = rng().integers(low, high, size=tuple(size), dtype="int64")
    return Tensor(values.astype(_creation_dtype(dtype, "int64")), requires_grad=requires_grad,
                  device=device)


def linspace(start, end, steps, *, dtype=None, requires_grad=False, device="cpu"):
    """``steps`` evenly spaced values from start to end, both included (float32 by default)."""
    start, end = _number("linspace", "start", start), _number("linspace", "end", end)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"linspace: steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"linspace: steps must be >= 0, got {steps}")
    values = np.linspace(start, end, int(steps), dtype=np.float64)
    return Tensor(values.astype(_creation_dtype(dtype, "float32")), requires_grad=requires_grad,
                  device=device)


def eye(n, m=None, *, dtype=None, requires_grad=False, device="cpu"):
    """The n x m (n x n) identity matrix, float32 by default."""
    m = n if m is None else m
    for what, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"eye: {what} must be an int, got {type(v).__name__}")
        if v < 0:
            raise ValueError(f"eye: {what} must be >= 0, got {v}")
    return Tensor(np.eye(n, m, dtype=_creation_dtype(dtype, "float32")),
                  requires_grad=requires_grad, device=device)


def from_numpy(array):
    return Tensor(array)
