"""Tensor queries (retains_grad, is_nonzero, is_same_size, is_signed, nbytes, itemsize, is_cpu,
is_inference) and the in-place samplers under PyTorch's names (random_, exponential_,
geometric_, cauchy_, log_normal_), with the Tensor.bernoulli and Tensor.multinomial methods.

The samplers draw from minidl's seeded generator (``backend.rng()``, as uniform_ and normal_
do), or from ``generator`` (a minidl.Generator of the tensor's device), on the host and write
the draws in place under copy_'s rules, so ``manual_seed`` repeats them on either device;
PyTorch's argument checks and dtypes. Installed on Tensor by tensor.py from
``TENSOR_METHODS``.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .backend import device_of, get_array_module, torch_random
from .backend.dtypes import is_floating, is_real_number
from .pointwise import DtypeError, OpArgumentError


# ---- queries ---------------------------------------------------------------------------------
def _retains_grad(self):
    """True for a non-leaf tensor whose gradient ``retain_grad()`` keeps (never for a leaf)."""
    return bool(self._retain_grad) and self._ctx is not None


def is_nonzero(self):
    """The truth of a one-element tensor; more or fewer elements are ambiguous, as torch says."""
    n = self.numel()
    if n == 0:
        raise OpArgumentError("Boolean value of Tensor with no values is ambiguous")
    if n > 1:
        raise OpArgumentError("Boolean value of Tensor with more than one value is ambiguous")
    return bool(self.data.reshape(-1)[0] != 0)


def is_same_size(self, other):
    return tuple(self.shape) == tuple(other.shape)


def is_signed(self):
    """Whether the dtype holds negative numbers (floats and signed integers; not uint8, bool)."""
    dt = self.data.dtype
    return is_floating(dt) or dt.kind == "i"


def is_inference(self):
    """False: minidl's inference_mode is no_grad, without a tensor kind of its own."""
    return False


# ---- in-place samplers -----------------------------------------------------------------------
def _fill(t, values, name):
    from .tensor import _random_fill

    values = np.asarray(values).astype(t.data.dtype, copy=False)
    if device_of(t.data) != "cpu":  # drawn on the host (one seeded stream), moved once
        values = get_array_module(t.data).asarray(values)
    return _random_fill(t, values, name)


def _refuse_complex_draws(name, t):
    """torch has no integer-valued draws into a complex tensor (they would fill only the real
    part)."""
    if t.data.dtype.kind == "c":
        raise DtypeError(f"{name}: not implemented for complex tensors (got dtype "
                         f"{t.data.dtype})")


def _rng(t, generator, name):
    """The NumPy generator a draw for ``t`` takes: ``generator``'s (of t's device) or the
    process-wide one."""
    return backend.generator_rng(generator, device_of(t.data), name)


def _number(name, what, x):
    if isinstance(x, bool) or not is_real_number(x):
        raise TypeError(f"{name}: {what} must be a number, got {type(x).__name__}")
    return x


def _floating_only(name, t, what):
    if not is_floating(t.data.dtype):
        raise DtypeError(f"{name}: {what} is a continuous probability distribution; the tensor's "
                         f"dtype must be floating point, got {t.data.dtype}")


def _integer_limits(dt):
    """[low, high] of the integers a dtype holds exactly (floats: +-2**mantissa digits)."""
    if dt.kind == "b":
        return 0, 1
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return int(info.min), int(info.max)
    digits = {2: 11 if dt == np.float16 else 8, 4: 24, 8: 53}[dt.itemsize]
    return -(2 ** digits), 2 ** digits


_UNSET = object()


def _count(t):
    return int(np.prod(t.shape, dtype=np.int64))


def random_(self, from_=0, to=_UNSET, *, generator=None, **kwargs):
    """Integers drawn uniformly from [from, to) (``random_(to)``: [0, to); ``to=None``: up to
    the largest integer the dtype holds exactly, also ``random_()``), as torch's ``random_``."""
    _refuse_complex_draws("random_", self)
    if "from" in kwargs:  # random_(from=..., to=...), PyTorch's keyword
        from_ = kwargs.pop("from")
        if to is _UNSET:
            to = None
    if kwargs:
        raise TypeError(f"random_: unexpected arguments {sorted(kwargs)}")
    dt = self.data.dtype
    low, high = _integer_limits(dt)
    lo = int(_number("random_", "from", from_))
    full = to is _UNSET and lo == 0
    if to is _UNSET:  # random_() or random_(to)
        lo, hi = (0, lo) if lo != 0 else (0, high + 1)
    elif to is None:
        hi = high + 1
    else:
        hi = int(_number("random_", "to", to))
    if lo >= hi:
        raise OpArgumentError(f"random_ expects 'from' to be less than 'to', but got from={lo} "
                              f">= to={hi}")
    if dt.kind in "iub":
        if lo < low:
            raise OpArgumentError(f"random_: from is out of bounds for {dt}")
        if hi - 1 > high:
            raise OpArgumentError(f"random_: to - 1 is out of bounds for {dt}")
    gen = backend.generator_of(generator, device_of(self.data), "random_")
    count = int(np.prod(self.shape, dtype=np.int64))
    if full:  # random_(): torch's own recipe over the dtype's range
        values = torch_random.random_full(gen, count, dt)
    else:  # torch's random_(from, to)
        values = torch_random.integers(gen, count, lo, hi)
    return _fill(self, values.reshape(self.shape), "random_")


def exponential_(self, lambd=1.0, *, generator=None):
    """Draws of the exponential distribution of rate ``lambd``."""
    lambd = _number("exponential_", "lambd", lambd)
    _floating_only("exponential_", self, "the exponential distribution")
    if not lambd > 0:
        raise OpArgumentError(f"exponential_ expects lambda > 0.0, but found lambda={lambd}")
    gen = backend.generator_of(generator, device_of(self.data), "exponential_")
    n = int(np.prod(self.shape, dtype=np.int64))
    dtype = self.data.dtype if self.data.dtype in (np.float32, np.float64) else np.float32
    values = torch_random.exponential(gen, n, dtype, lambd).reshape(self.shape)
    return _fill(self, values, "exponential_")  # torch's numbers


def geometric_(self, p, *, generator=None):
    """Draws of the geometric distribution: the number of trials (1, 2, ...) up to the first
    success of probability ``p``."""
    p = _number("geometric_", "p", p)
    _refuse_complex_draws("geometric_", self)
    if self.data.dtype == np.bool_:
        raise DtypeError("geometric_: not implemented for bool tensors")
    if not 0 < p < 1:
        raise OpArgumentError(f"geometric_ expects p to be in (0, 1), but got p={p}")
    gen = backend.generator_of(generator, device_of(self.data), "geometric_")
    values = torch_random.geometric(gen, _count(self), p).reshape(self.shape)
    return _fill(self, values, "geometric_")  # torch's numbers


def cauchy_(self, median=0.0, sigma=1.0, *, generator=None):
    """Draws of the Cauchy distribution centred on ``median`` with scale ``sigma``."""
    median, sigma = _number("cauchy_", "median", median), _number("cauchy_", "sigma", sigma)
    _floating_only("cauchy_", self, "the Cauchy distribution")
    if not sigma > 0:
        raise OpArgumentError(f"cauchy_ expects sigma > 0.0, but found sigma={sigma}")
    gen = backend.generator_of(generator, device_of(self.data), "cauchy_")
    values = torch_random.cauchy(gen, _count(self), median, sigma).reshape(self.shape)
    return _fill(self, values, "cauchy_")  # torch's numbers


def log_normal_(self, mean=1.0, std=2.0, *, generator=None):
    """Draws ``exp(N(mean, std**2))``."""
    mean, std = _number("log_normal_", "mean", mean), _number("log_normal_", "std", std)
    _floating_only("log_normal_", self, "the log-normal distribution")
    if not std > 0:
        raise OpArgumentError(f"log_normal_ expects std > 0.0, but found std={std}")
    gen = backend.generator_of(generator, device_of(self.data), "log_normal_")
    values = torch_random.log_normal(gen, _count(self), mean, std).reshape(self.shape)
    return _fill(self, values, "log_normal_")  # torch's numbers


def bernoulli(self, p=None, *, generator=None):
    """0 or 1 in this tensor's dtype: 1 with the probabilities in this tensor (or the number
    ``p``), as ``torch.bernoulli``."""
    from .creation import bernoulli as draw

    return draw(self, p, generator=generator)


def multinomial(self, num_samples, replacement=False, *, generator=None):
    """Category indices drawn with this tensor's last dim as the weights (see
    ``minidl.multinomial``)."""
    from .creation import multinomial as draw

    return draw(self, num_samples, replacement, generator=generator)


TENSOR_METHODS = {
    "retains_grad": property(_retains_grad), "is_nonzero": is_nonzero,
    "is_same_size": is_same_size, "is_signed": is_signed,
    "nbytes": property(lambda self: int(self.data.nbytes)),
    "itemsize": property(lambda self: int(self.data.dtype.itemsize)),
    "is_cpu": property(lambda self: device_of(self.data) == "cpu"),
    "is_inference": is_inference,
    "random_": random_, "exponential_": exponential_, "geometric_": geometric_,
    "cauchy_": cauchy_, "log_normal_": log_normal_, "bernoulli": bernoulli,
    "multinomial": multinomial,
}
FUNCTIONS = {"is_nonzero": is_nonzero, "is_same_size": is_same_size,
             "is_signed": is_signed, "is_inference": is_inference}
