"""Tensor creation, as PyTorch's factory functions: zeros, ones, full, arange, linspace, eye,
the ``*_like`` forms, and the random ones (randn, rand, randint, ...) on minidl's seeded generator
(``minidl.manual_seed``), or on ``generator=`` (a minidl.Generator of the result's device, as
torch's). Floats in the default dtype (``minidl.set_default_dtype``, float32 unless changed) on
the default device (``minidl.set_default_device``); integer ranges and fills are int64, as in
torch. ``memory_format=`` is taken where torch takes it and lays the memory out as torch's (a
``*_like`` of a channels-last tensor is channels-last too); every op takes any layout."""
from __future__ import annotations

import numpy as np

from .backend import generator_of, torch_random
from . import backend
from .backend.dtypes import as_dtype, default_float, is_floating, is_real_number, scalar_dtype
from .ops import refuse_unsigned
from .tensor import Tensor


def _shape(name, shape, size):
    """The size from ``f(2, 3)``, ``f((2, 3))`` or ``f(size=(2, 3))``, as torch takes them."""
    if size is not None:
        if shape:
            raise TypeError(f"{name}: pass the size either positionally or as size=, not both")
        shape = (size,)
    return shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _in_format(t, memory_format, like=None):
    """``t`` with its memory laid out as ``memory_format`` asks; for a ``*_like`` (``like``)
    preserve_format (the default) keeps like's memory order where like is dense, as torch's."""
    from . import shape_ops
    from .ops import memory_order

    if memory_format is None or memory_format is shape_ops.preserve_format:
        order = None if like is None else memory_order(like.data)
    else:
        order = shape_ops._channels_last_order(t.ndim, memory_format)
    if order is not None:
        t.data = shape_ops._Relayout().forward(t.data, order)
    return t


def _device(device):
    """``device``, or the default device (``minidl.set_default_device``) for None."""
    return backend.default_device() if device is None else device


def zeros(*shape, size=None, dtype=None, requires_grad=False, device=None):
    shape = _shape("zeros", shape, size)
    return Tensor(np.zeros(shape, dtype=_creation_dtype(dtype, default_float())),
                  requires_grad=requires_grad, device=_device(device))


def ones(*shape, size=None, dtype=None, requires_grad=False, device=None):
    shape = _shape("ones", shape, size)
    return Tensor(np.ones(shape, dtype=_creation_dtype(dtype, default_float())),
                  requires_grad=requires_grad, device=_device(device))


def randn(*shape, size=None, generator=None, dtype=None, requires_grad=False, device=None):
    shape = _shape("randn", shape, size)
    dtype, device = _creation_dtype(dtype, default_float()), _device(device)
    gen = generator_of(generator, device, "randn")
    if dtype.kind != "c" and not is_floating(dtype):  # samples cast to ints would be mostly 0
        raise TypeError(f"randn: dtype must be a floating-point type, got {as_dtype(dtype)}")
    # torch's numbers (a complex dtype: variance 1 in all, half of it in each part)
    values = torch_random.normal_array(gen, _tuple_shape(shape), dtype)
    return Tensor(values, requires_grad=requires_grad, device=device)


def _tuple_shape(shape):
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)


def _number(name, what, x, complex_too=False):
    """A Python number from an int, a float or a one-element tensor (as torch takes them);
    a complex number too where ``complex_too``."""
    if isinstance(x, Tensor):
        x = x.item()
    if isinstance(x, bool) or not (is_real_number(x) or complex_too and isinstance(
            x, (complex, np.complexfloating))):
        raise TypeError(f"{name}: {what} must be a number, got {type(x).__name__}")
    return x.item() if isinstance(x, np.generic) else x


def _creation_dtype(dtype, default):
    return as_dtype(default if dtype is None else dtype)


class RangeError(ValueError, RuntimeError):
    """arange's impossible ranges: PyTorch raises RuntimeError, minidl's argument errors are
    ValueErrors; this is both."""


def arange(start, end=None, step=1, *, dtype=None, requires_grad=False, device=None):
    """``start, start + step, ...`` up to ``end`` (excluded); ``arange(n)`` is 0 .. n-1.
    int64 where start, end and step are all integers, the default dtype otherwise, as in
    PyTorch."""
    device = _device(device)
    if end is None:
        start, end = 0, start
    start, end, step = (_number("arange", what, v)
                        for what, v in (("start", start), ("end", end), ("step", step)))
    target = None if dtype is None else as_dtype(dtype)
    if target is not None:
        refuse_unsigned(target, "arange_cpu")  # uint16/32/64: no kernel in torch
    if target is not None and target.kind in "iu":  # PyTorch counts in the integer type
        start, end, step = int(start), end, int(step)
    if step == 0:
        raise RangeError("arange: step must be nonzero (an integer dtype truncates it)")
    if (end - start) * step < 0:
        raise RangeError(f"arange: upper bound and lower bound inconsistent with step sign: "
                         f"end {end} cannot be reached from start {start} by step {step}")
    integral = all(isinstance(v, int) for v in (start, end, step))
    values = np.arange(start, end, step, dtype=np.int64 if integral else np.float64)
    dtype = _creation_dtype(dtype, np.int64 if integral else default_float())
    return Tensor(values.astype(dtype), requires_grad=requires_grad, device=device)


def full(size, fill_value, *, dtype=None, requires_grad=False, device=None):
    """A tensor of ``size`` (a tuple) filled with ``fill_value``; the dtype follows the value
    (bool, int64 or the default float dtype) unless given."""
    device = _device(device)
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"full: size must be a tuple of ints, got {type(size).__name__}")
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    dtype = _creation_dtype(dtype, scalar_dtype(fill_value))
    if not isinstance(fill_value, (bool, np.bool_)):
        from .ops import fill_value as checked  # an imaginary part, a number beyond the
        # dtype's range (300 into int8, 1e5 into float16, NaN into int32) refused, as torch's;
        # -1 into uint8 wraps to 255 as there
        fill_value = checked(fill_value, dtype, "full")
    return Tensor(np.full(tuple(size), fill_value, dtype=dtype), requires_grad=requires_grad,
                  device=device)


def _sparse_like(name, input, fill_value, dtype, requires_grad, device):
    """A ``*_like`` of a sparse ``input``, as torch's: zeros (and empty) give the layout with
    no stored entries; a compressed layout keeps its pattern for ones/full (its values
    filled); COO cannot be filled (torch has no fill_ for it) and random draws fit neither."""
    from .backend.sparse import SparseCOO
    from .backend.sparse_compressed import SparseCompressed

    a = input.data
    layout = str(input.layout)
    if fill_value is None:  # rand_like & co
        raise NotImplementedError(f"{name}: not supported for sparse tensors (layout "
                                  f"{layout}); draw a dense tensor and convert it")
    if device is not None and _device(device) != input.device:
        raise NotImplementedError(f"{name}: device= is not supported for a sparse input "
                                  f"(layout {layout}); use .to(device) on the result")
    dtype = a.dtype if dtype is None else as_dtype(dtype)
    if type(a) is SparseCOO:
        if name not in ("zeros_like", "empty_like"):
            raise NotImplementedError(f"{name}: not supported for sparse COO tensors (torch "
                                      f"has no fill for them); use zeros_like, or "
                                      f".to_dense() first")
        xp = backend.get_array_module(a.values)
        out = SparseCOO(xp.zeros((a.indices.shape[0], 0), dtype=a.indices.dtype),
                        xp.zeros((0,) + tuple(a.values.shape[1:]), dtype=dtype), a.shape,
                        coalesced=True)
    else:
        xp = backend.get_array_module(a.values)
        if name == "zeros_like":  # no stored entries, as torch's
            cut = (slice(None),) * a.batch_dim + (slice(0, 0),)
            out = SparseCompressed(a.layout, xp.zeros_like(a.compressed), a.plain[cut].copy(),
                                   a.values[cut].astype(dtype), a.shape)
        else:
            values = xp.full(a.values.shape, 0 if name == "empty_like" else fill_value,
                             dtype=dtype)
            out = SparseCompressed(a.layout, a.compressed.copy(), a.plain.copy(), values,
                                   a.shape)
    return Tensor(out, requires_grad=requires_grad)


def _is_sparse(input):
    return isinstance(input, Tensor) and str(input.layout) != "minidl.strided"


def full_like(input, fill_value, *, dtype=None, requires_grad=False, device=None,
                memory_format=None, _name="full_like"):
    """``full(input.shape, fill_value)`` in input's dtype and on its device unless given."""
    if _is_sparse(input):
        return _sparse_like(_name, input, fill_value, dtype, requires_grad, device)
    out = full(input.shape, fill_value, dtype=input.dtype if dtype is None else dtype,
               requires_grad=requires_grad, device=input.device if device is None else device)
    return _in_format(out, memory_format, input)


def zeros_like(input, *, dtype=None, requires_grad=False, device=None,
                memory_format=None):
    return full_like(input, 0, dtype=dtype, requires_grad=requires_grad, device=device,
                     memory_format=memory_format, _name="zeros_like")


def ones_like(input, *, dtype=None, requires_grad=False, device=None,
                memory_format=None):
    return full_like(input, 1, dtype=dtype, requires_grad=requires_grad, device=device,
                     memory_format=memory_format, _name="ones_like")


def rand(*shape, size=None, generator=None, dtype=None, requires_grad=False, device=None):
    """Uniform on [0, 1), from minidl's seeded generator (minidl.manual_seed)."""
    device = _device(device)
    shape = _shape("rand", shape, size)
    dtype = _creation_dtype(dtype, default_float())
    gen = generator_of(generator, device, "rand")
    if dtype.kind != "c" and not is_floating(dtype):
        raise TypeError(f"rand: dtype must be a floating-point type, got {dtype}")
    # torch's numbers (a complex dtype: both parts uniform on [0, 1))
    values = torch_random.uniform_array(gen, _tuple_shape(shape), dtype)
    return Tensor(values, requires_grad=requires_grad, device=device)


def randint(low=0, high=None, size=None, *, generator=None, dtype=None, requires_grad=False,
            device=None):
    """Integers uniform on [low, high), int64 unless dtype is given: ``randint(high, size)``
    or ``randint(low, high, size)``, from minidl's seeded generator."""
    device = _device(device)
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
    gen = generator_of(generator, device, "randint")
    size = tuple(int(d) for d in size)
    values = torch_random.integers(gen, int(np.prod(size, dtype=np.int64)), int(low), int(high))
    return Tensor(values.reshape(size).astype(_creation_dtype(dtype, "int64")),
                  requires_grad=requires_grad, device=device)


def linspace(start, end, steps, *, dtype=None, requires_grad=False, device=None):
    """``steps`` evenly spaced values from start to end, both included (the default dtype unless given)."""
    device = _device(device)
    start = _number("linspace", "start", start, complex_too=True)
    end = _number("linspace", "end", end, complex_too=True)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"linspace: steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"linspace: steps must be >= 0, got {steps}")
    default = default_float()
    if dtype is not None:
        refuse_unsigned(as_dtype(dtype), "linspace_cpu")  # uint16/32/64: no kernel in torch
    if isinstance(start, complex) or isinstance(end, complex):  # complex ends: complex values
        default = scalar_dtype(1j)
        if dtype is not None and as_dtype(dtype).kind != "c":
            raise TypeError(f"linspace: inferred dtype {default} can't be safely cast to passed "
                            f"dtype {as_dtype(dtype)}")
    values = np.linspace(start, end, int(steps),
                         dtype=np.complex128 if default.kind == "c" else np.float64)
    return Tensor(values.astype(_creation_dtype(dtype, default)), requires_grad=requires_grad,
                  device=device)


def eye(n, m=None, *, dtype=None, requires_grad=False, device=None):
    """The n x m (n x n) identity matrix, in the default dtype unless given."""
    device = _device(device)
    m = n if m is None else m
    for what, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"eye: {what} must be an int, got {type(v).__name__}")
        if v < 0:
            raise ValueError(f"eye: {what} must be >= 0, got {v}")
    dtype = _creation_dtype(dtype, default_float())
    refuse_unsigned(dtype, "eye")  # uint16/32/64: no kernel in torch
    return Tensor(np.eye(n, m, dtype=dtype),
                  requires_grad=requires_grad, device=device)


def from_numpy(array):
    """A tensor on the numpy array's memory (writes show through both ways), in its dtype."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray (got {type(array).__name__})")
    if array.dtype.kind not in "biufc":
        raise TypeError(f"from_numpy: can't convert np.ndarray of type {array.dtype}; the "
                        "supported types are floats, ints, uint8 and bool")
    return Tensor(array)


def logspace(start, end, steps, base=10.0, *, dtype=None, requires_grad=False, device=None):
    """``base ** linspace(start, end, steps)``: ``steps`` values spaced evenly on a log scale
    from base**start to base**end (the default dtype unless given; an integer dtype rounds toward zero,
    as PyTorch's does)."""
    device = _device(device)
    start, end = _number("logspace", "start", start), _number("logspace", "end", end)
    base = _number("logspace", "base", base)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"logspace: steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"logspace: number of steps must be non-negative, got {steps}")
    values = np.power(float(base), np.linspace(start, end, int(steps), dtype=np.float64))
    return Tensor(values.astype(_creation_dtype(dtype, default_float())), requires_grad=requires_grad,
                  device=device)


def empty(*shape, size=None, dtype=None, requires_grad=False, device=None,
                memory_format=None):
    """A tensor of ``shape`` whose values are to be overwritten (zeros here: NumPy's
    uninitialised memory would make runs differ)."""
    out = zeros(*shape, size=size, dtype=_creation_dtype(dtype, default_float()),
                requires_grad=requires_grad, device=device)
    return _in_format(out, memory_format)


def empty_like(input, *, dtype=None, requires_grad=False, device=None,
                memory_format=None):
    return full_like(input, 0, dtype=dtype, requires_grad=requires_grad, device=device,
                     memory_format=memory_format, _name="empty_like")


def _like(input, dtype, device, name="rand_like"):
    if _is_sparse(input):
        _sparse_like(name, input, None, dtype, False, device)
    return (input.shape, input.dtype if dtype is None else as_dtype(dtype),
            input.device if device is None else device)


def rand_like(input, *, generator=None, dtype=None, requires_grad=False, device=None,
                memory_format=None):
    shape, dtype, device = _like(input, dtype, device)
    out = rand(shape, generator=generator, dtype=dtype, requires_grad=requires_grad, device=device)
    return _in_format(out, memory_format, input)


def randn_like(input, *, generator=None, dtype=None, requires_grad=False, device=None,
                memory_format=None):
    shape, dtype, device = _like(input, dtype, device, "randn_like")
    if not (is_floating(dtype) or dtype.kind == "c"):
        raise TypeError(f"randn_like: dtype must be a floating-point or complex type, got "
                        f"{dtype}")
    out = randn(shape, generator=generator, dtype=dtype, requires_grad=requires_grad,
                device=device)
    return _in_format(out, memory_format, input)


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, requires_grad=False,
                 device=None, memory_format=None):
    """``randint(low, high, input.shape)`` in input's dtype; ``randint_like(x, high)`` too."""
    if high is None:
        low, high = 0, low
    shape, dtype, device = _like(input, dtype, device, "randint_like")
    out = randint(low, high, shape, generator=generator, dtype=dtype,
                  requires_grad=requires_grad, device=device)
    return _in_format(out, memory_format, input)


def randperm(n, *, generator=None, dtype=None, requires_grad=False, device=None):
    """A random permutation of 0 .. n-1 (int64), from minidl's seeded generator."""
    device = _device(device)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"randperm: n must be a non-negative int, got {n!r}")
    values = torch_random.permutation(generator_of(generator, device, "randperm"), int(n)).astype(
        _creation_dtype(dtype, "int64"))
    return Tensor(values, requires_grad=requires_grad, device=device)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, requires_grad=False,
           device=None):
    """Samples of N(mean, std**2): numbers with ``size``, or tensors of means and/or standard
    deviations (broadcast together; the result takes their shape, dtype and device)."""
    tensors = [v for v in (mean, std) if isinstance(v, Tensor)]
    mu = mean.numpy() if isinstance(mean, Tensor) else _number("normal", "mean", mean)
    sigma = std.numpy() if isinstance(std, Tensor) else _number("normal", "std", std)
    if np.any(np.asarray(sigma) < 0):
        raise ValueError("normal: std must be >= 0")
    if tensors:
        if size is not None:
            raise TypeError("normal: size is only for a number mean and std")
        shape = np.broadcast_shapes(*(t.shape for t in tensors))
        dtype = _creation_dtype(dtype, tensors[0].dtype)
        device = tensors[0].device if device is None else device
    else:
        if size is None:
            raise TypeError("normal: pass size when mean and std are numbers")
        shape, dtype = tuple(size), _creation_dtype(dtype, default_float())
        device = _device(device)
    if not is_floating(dtype):
        raise TypeError(f"normal: dtype must be a floating-point type, got {dtype}")
    gen = generator_of(generator, device, "normal")
    dtype = np.dtype(dtype)
    if not tensors:
        values = torch_random.normal_array(gen, tuple(shape), dtype, mu, sigma)
    elif not isinstance(std, Tensor):  # torch: normal_(0, std), then + mean
        values = torch_random.normal_array(gen, tuple(shape), dtype, 0.0, sigma) \
            + np.asarray(mu, dtype=dtype)
    else:  # torch: normal_(0, 1), then * std + mean
        values = torch_random.normal_array(gen, tuple(shape), dtype) * np.asarray(sigma, dtype) \
            + np.asarray(mu, dtype=dtype)
    return Tensor(np.asarray(values).astype(dtype), requires_grad=requires_grad, device=device)


def bernoulli(input, p=None, *, generator=None):
    """0 or 1 with the probabilities in ``input`` (or the number ``p``), in input's dtype and on
    its device; no gradient flows through the draw."""
    probs = input.numpy() if p is None else np.full(input.shape, _number("bernoulli", "p", p))
    if not is_floating(input.dtype):
        raise TypeError(f"bernoulli: input must be floating point, got {input.dtype}")
    if probs.size and (np.nanmin(probs) < 0 or np.nanmax(probs) > 1 or np.isnan(probs).any()):
        raise ValueError("bernoulli: probabilities must lie in [0, 1]")
    gen = generator_of(generator, input.device, "bernoulli")
    # torch's draws: a number p against float64 uniforms, a tensor against its precision's
    draws = torch_random.bernoulli(gen, tuple(input.shape), probs if p is None else float(p))
    return Tensor(draws.astype(input.dtype), device=input.device)


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Indices drawn from the categories whose (unnormalised, non-negative) weights are the
    last dim of ``input`` (a vector, or one row per draw set): int64, ``num_samples`` per row;
    without replacement each category at most once, as PyTorch."""
    if input.dtype.kind != "f" and str(input.dtype) != "bfloat16":
        raise TypeError(f"multinomial only supports floating-point dtypes for input, got "
                        f"{input.dtype}")
    weights = np.asarray(input.numpy(), dtype=np.float64)
    if weights.ndim not in (1, 2):
        raise ValueError(f"multinomial: input must be 1-D or 2-D, got shape {input.shape}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples <= 0:
        raise ValueError(f"multinomial: num_samples must be a positive int, got {num_samples!r}")
    rows = weights.reshape(-1, weights.shape[-1])
    if not np.isfinite(rows).all() or (rows < 0).any():
        raise ValueError("multinomial: weights must be finite and non-negative")
    if (rows.sum(1) <= 0).any():
        raise ValueError("multinomial: every row of weights must have a positive sum")
    if not replacement and num_samples > (rows > 0).sum(1).min():
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement "
                         f"from {int((rows > 0).sum(1).min())} categories of non-zero weight")
    gen = generator_of(generator, input.device, "multinomial")
    # torch's recipes (with the weights in their own dtype)
    draw_dtype = np.float64 if str(input.dtype) == "float64" else np.float32
    out = torch_random.multinomial(gen, rows, draw_dtype, int(num_samples), bool(replacement))
    return Tensor(out.reshape(weights.shape[:-1] + (int(num_samples),)), device=input.device)
