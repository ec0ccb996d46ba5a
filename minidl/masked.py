"""``minidl.masked``: torch.masked's reductions and normalizations with a ``mask=`` argument
(strided tensors; MaskedTensor is not here).

Each op replaces the masked-out elements (``mask`` False; a mask of fewer dims broadcasts,
one of a non-bool dtype is read as bool) by the identity of its reduction, as torch's: 0 for
sum/cumsum/norm/normalize, 1 for prod/cumprod, -inf (the dtype's minimum for integers) for
amax/argmax/logsumexp/softmax/log_softmax, +inf (the maximum) for amin/argmin/softmin, NaN for
median; then runs the plain op. So a fully masked-out slice gives that identity (-inf for
amax, 0 for sum), NaN for mean/var/std/median and a row of NaN for softmax, as torch gives.
The replacement is a ``where``, so masked-out elements get a zero gradient.

dtype rules are torch's: sum and prod of bool and integers narrower than int64 give int64;
amax/amin/argmax/argmin/logsumexp cast the result to ``dtype`` (the input's by default, so
argmax of a float tensor is float, as torch.masked's); mean needs a floating or complex dtype;
var/std of integers compute in float32.
"""
from __future__ import annotations

import math

import numpy as np

from . import linalg as _linalg
from .backend import get_array_module
from .backend.dtypes import as_dtype
from .nn import functional as _F
from .ops import where as _where
from .tensor import Tensor

__all__ = ["sum", "prod", "cumsum", "cumprod", "amax", "amin", "argmax", "argmin", "mean",
           "median", "logsumexp", "logaddexp", "norm", "var", "std", "softmax", "log_softmax",
           "softmin", "normalize"]

_PROMOTED = {np.dtype(np.bool_), np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16),
             np.dtype(np.int32)}


def _is_float(dtype):
    return np.dtype(dtype).kind == "f" or str(dtype) == "bfloat16"


def _is_complex(dtype):
    return np.dtype(dtype).kind == "c"


def _dtype_name(dtype):
    return f"minidl.{np.dtype(dtype).name}"


def _identity(op, input, ord=None):
    """The identity of ``op`` on ``input``'s dtype, as torch.masked's _reduction_identity."""
    dtype = input.dtype
    kind = np.dtype(dtype).kind
    if op in ("sum", "cumsum"):
        return 0
    if op in ("prod", "cumprod"):
        return 1
    if op in ("amax", "argmax", "logaddexp", "logsumexp"):
        if _is_float(dtype) or (op == "logsumexp" and kind == "c"):
            return -math.inf
        if kind == "i" or np.dtype(dtype) == np.uint8:
            return int(np.iinfo(dtype).min)
    elif op in ("amin", "argmin"):
        if _is_float(dtype):
            return math.inf
        if kind == "i" or np.dtype(dtype) == np.uint8:
            return int(np.iinfo(dtype).max)
    elif op == "norm":
        if ord == -math.inf:
            if not _is_float(dtype):
                raise AssertionError(f"input must be floating point, got {_dtype_name(dtype)}")
            return math.inf
        return 0
    elif op == "median":
        return math.nan
    raise NotImplementedError(f"identity of {op} on {_dtype_name(dtype)} input")


def _canonical_dim(dim, ndim):
    """``dim`` as a sorted tuple of non-negative dims (None or () for every dim)."""
    if dim is None or dim == ():
        return tuple(range(ndim))
    ndim = max(ndim, 1)
    dims = []
    for d in (dim,) if isinstance(dim, (int, np.integer)) else dim:
        d = int(d)
        if d % ndim in dims:
            raise RuntimeError(f"dim={d} appears multiple times in the list of dims")
        if d >= ndim or d < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-ndim}, "
                             f"{ndim - 1}], but got {d})")
        dims.append(d % ndim)
    return tuple(sorted(dims))


def _input_mask(input, mask):
    """``mask`` broadcast to ``input``'s shape, as bool."""
    if not isinstance(mask, Tensor):
        mask = Tensor(np.asarray(mask))
    if tuple(mask.shape) != tuple(input.shape):
        if mask.ndim > input.ndim:
            raise IndexError("_input_mask expected broadcastable mask (got mask dimensionality "
                             "higher than of the input)")
        mask = mask.expand(*input.shape)
    return mask if mask.dtype == np.bool_ else mask.to(np.bool_)


def _combine(op, input, mask, ord=None):
    if not isinstance(input, Tensor):
        raise TypeError(f"masked {op}: input must be a Tensor, got {type(input).__name__}")
    if mask is None:
        return input
    fill = _identity(op, input, ord)
    filler = Tensor(get_array_module(input.data).asarray(fill, dtype=input.dtype),
                    dtype=input.dtype)
    return _where(_input_mask(input, mask), input, filler)


def _to(t, dtype):
    return t if dtype is None or t.dtype == as_dtype(dtype) else t.to(as_dtype(dtype))


def _sum_dtype(input, dtype):
    if dtype is not None:
        return as_dtype(dtype)
    return np.dtype(np.int64) if np.dtype(input.dtype) in _PROMOTED else input.dtype


def sum(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Sum over ``dim`` of the elements ``mask`` keeps (0 where none is kept)."""
    dtype = _sum_dtype(input, dtype)
    dims = _canonical_dim(dim, input.ndim)
    x = _combine("sum", input, mask)
    if not dims:
        return _to(x, dtype)
    return x.sum(dim=dims, keepdim=bool(keepdim), dtype=dtype)


def prod(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Product over ``dim`` of the elements ``mask`` keeps (1 where none is kept)."""
    dtype = _sum_dtype(input, dtype)
    dims = _canonical_dim(dim, input.ndim)
    result = _to(_combine("prod", input, mask), dtype)
    for d in reversed(dims):
        result = result.prod(dim=d, keepdim=bool(keepdim))
    return result


def cumsum(input, dim, *, dtype=None, mask=None):
    dtype = input.dtype if dtype is None else as_dtype(dtype)
    d = _canonical_dim(dim, input.ndim)[0]
    return _to(_combine("cumsum", input, mask).cumsum(d, dtype=dtype), dtype)


def cumprod(input, dim, *, dtype=None, mask=None):
    dtype = input.dtype if dtype is None else as_dtype(dtype)
    d = _canonical_dim(dim, input.ndim)[0]
    return _to(_combine("cumprod", input, mask).cumprod(d, dtype=dtype), dtype)


def amax(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Largest kept element over ``dim`` (-inf, or the dtype's minimum, where none is)."""
    dtype = input.dtype if dtype is None else dtype
    x = _combine("amax", input, mask)
    dims = _canonical_dim(dim, x.ndim)
    return _to(x.amax(dims, bool(keepdim)) if dims else x, dtype)


def amin(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Smallest kept element over ``dim`` (+inf, or the dtype's maximum, where none is)."""
    dtype = input.dtype if dtype is None else dtype
    x = _combine("amin", input, mask)
    dims = _canonical_dim(dim, x.ndim)
    return _to(x.amin(dims, bool(keepdim)) if dims else x, dtype)


def argmax(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Index of the largest kept element, in ``dtype`` (the input's by default, as torch's)."""
    dtype = input.dtype if dtype is None else dtype
    return _to(_combine("argmax", input, mask).argmax(dim, bool(keepdim)), dtype)


def argmin(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    dtype = input.dtype if dtype is None else dtype
    return _to(_combine("argmin", input, mask).argmin(dim, bool(keepdim)), dtype)


def mean(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Mean of the kept elements over ``dim``; NaN where none is kept."""
    source = "Optional"
    if dtype is None:
        dtype, source = input.dtype, "Input"
    dtype = as_dtype(dtype)
    if not (_is_float(dtype) or _is_complex(dtype)):
        raise ValueError(f"mean(): Could not infer output dtype. {source} dtype must be either "
                         f"a floating point or complex dtype. Got: {_dtype_name(dtype)}")
    if mask is None:
        ones = Tensor(np.ones(tuple(input.shape), np.int64))
        count = sum(ones.to(input.device) if str(input.device) != "cpu" else ones, dim,
                    keepdim=keepdim)
        total = sum(input, dim, keepdim=keepdim, dtype=dtype)
    else:
        inmask = _input_mask(input, mask)
        count = sum(inmask, dim, keepdim=bool(keepdim))
        total = sum(input, dim, keepdim=keepdim, dtype=dtype, mask=inmask)
    return total / count


def median(input, dim=-1, *, keepdim=False, dtype=None, mask=None):
    """Median of the kept elements along ``dim`` (one dim; NaN where none is kept)."""
    dtype = input.dtype if dtype is None else as_dtype(dtype)
    d = _canonical_dim(dim, input.ndim)[0]
    is_float = _is_float(input.dtype)
    if not is_float:
        input = input.to(np.float32)
    x = _combine("median", input, mask)
    out = x.nanmedian(d, keepdim).values if x.ndim else x.nanmedian()
    if is_float:
        return out
    if not bool(out.isnan().any()):
        return out.to(dtype)
    raise ValueError("masked median expects no fully masked out rows if dtype is not floating "
                     "point")


def logsumexp(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """log(sum(exp)) of the kept elements over ``dim`` (-inf where none is kept)."""
    dtype = input.dtype if dtype is None else dtype
    dims = _canonical_dim(dim, input.ndim)
    x = _combine("logsumexp", input, mask)
    return _to(x.logsumexp(dims, keepdim=keepdim) if dims else x, dtype)


def logaddexp(input, other, *, dtype=None, input_mask=None, other_mask=None):
    """logaddexp of ``input`` and ``other``, each with its masked-out elements as -inf."""
    dtype = input.dtype if dtype is None else dtype
    a = _combine("logaddexp", input, input_mask)
    b = _combine("logaddexp", other, other_mask)
    return _to(a.logaddexp(b), dtype)


def norm(input, ord=2.0, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Vector norm of the kept elements over ``dim`` (0 where none is kept; +inf for
    ord=-inf)."""
    dtype = input.dtype if dtype is None else dtype
    x = _combine("norm", input, mask, ord)
    dims = _canonical_dim(dim, input.ndim)
    return _linalg.vector_norm(x, ord, dims, bool(keepdim), dtype=dtype)


def _std_var(input, dim, unbiased, correction_opt, keepdim, dtype, mask, take_sqrt):
    if unbiased is not None and correction_opt is not None:
        raise ValueError("Only one of unbiased and correction may be given")
    correction = 1.0
    if unbiased is not None:
        correction = 1.0 if unbiased else 0.0
    if correction_opt is not None:
        correction = float(correction_opt)
    if dtype is None:
        dtype = input.dtype
        if not (_is_float(dtype) or _is_complex(dtype)):
            dtype = np.dtype(np.float32)
    dtype = as_dtype(dtype)
    compute = dtype if (_is_float(dtype) or _is_complex(dtype)) else np.dtype(np.float32)
    if mask is None:
        ones = Tensor(np.ones(tuple(input.shape), np.int64))
        count = sum(ones.to(input.device) if str(input.device) != "cpu" else ones, dim,
                    keepdim=True)
        total = sum(input, dim, keepdim=True, dtype=dtype)
        inmask = None
    else:
        inmask = _input_mask(input, mask)
        count = sum(inmask, dim, keepdim=True)
        total = sum(input, dim, keepdim=True, dtype=dtype, mask=inmask)
    x = input - total / count
    total = sum(x * x.conj() if _is_complex(x.dtype) else x * x, dim, keepdim=keepdim,
                dtype=compute, mask=inmask)
    if not keepdim:
        count = count.reshape(tuple(total.shape))
    if correction != 0:
        real = np.dtype(np.float32 if compute == np.complex64 else np.float64) \
            if _is_complex(compute) else compute
        count = (count.to(real) - correction).clamp(min=0)
    out = _to(total / count, dtype)
    return out.sqrt() if take_sqrt else out


def var(input, dim=None, unbiased=None, *, correction=None, keepdim=False, dtype=None,
        mask=None):
    """Variance of the kept elements over ``dim`` (``correction`` 1 by default); NaN where
    none (or too few) is kept."""
    return _std_var(input, dim, unbiased, correction, keepdim, dtype, mask, False)


def std(input, dim=None, unbiased=None, *, correction=None, keepdim=False, dtype=None,
        mask=None):
    return _std_var(input, dim, unbiased, correction, keepdim, dtype, mask, True)


def softmax(input, dim, *, dtype=None, mask=None):
    """Softmax along ``dim`` over the kept elements: 0 at masked-out ones, NaN along a slice
    with none kept."""
    dtype = input.dtype if dtype is None else dtype
    d = _canonical_dim(dim, input.ndim)[0]
    return _F.softmax(_combine("amax", input, mask), d, dtype=dtype)


def log_softmax(input, dim, *, dtype=None, mask=None):
    dtype = input.dtype if dtype is None else dtype
    d = _canonical_dim(dim, input.ndim)[0]
    return _F.log_softmax(_combine("amax", input, mask), d, dtype=dtype)


def softmin(input, dim, *, dtype=None, mask=None):
    dtype = input.dtype if dtype is None else dtype
    d = _canonical_dim(dim, input.ndim)[0]
    return _F.softmin(_combine("amin", input, mask), d, dtype=dtype)


def normalize(input, ord, dim, *, eps=1e-12, dtype=None, mask=None):
    """``input`` (its masked-out elements 0) divided by its masked norm along ``dim``, at least
    ``eps``."""
    dtype = input.dtype if dtype is None else dtype
    x = _combine("sum", input, mask)
    nrm = norm(input, ord, dim, keepdim=True, dtype=dtype, mask=mask)
    return x / nrm.clamp(min=eps)
