"""Math ops under PyTorch's names that ops.py does not have: cumulative sums and products,
elementwise functions (trigonometric, logarithms, rounding), products and norms over dims,
logsumexp, lerp/addcmul/addcdiv, comparisons and logical ops as methods.

One Function per differentiable op (forward and backward side by side, on the array module of
the inputs); numerically stable forms where it matters (logsumexp subtracts the max, log1p and
expm1 keep small arguments exact, cumprod's and prod's gradients are exact with zeros). Tensor's
methods are installed by tensor.py from ``TENSOR_METHODS``; this module imports only
``backend``, ``autograd`` and ``ops``.
"""
from __future__ import annotations

import numpy as np

from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import as_dtype, is_floating
from .ops import Cast, accumulation_dtype, wrap_dim


def _cumulative_input(name, input, dim, dtype):
    """(input cast as PyTorch casts it, wrapped dim): ``dtype=`` casts first; integer and
    bool inputs accumulate in int64."""
    if dtype is not None:
        dtype = as_dtype(dtype)
    elif not is_floating(input.data.dtype):
        dtype = np.dtype(np.int64)
    if dtype is not None and dtype != input.data.dtype:
        input = Cast.apply(input, dtype=dtype)
    return input, wrap_dim(dim, input.ndim, name)


def _reverse_cumsum(xp, a, d):
    return xp.flip(xp.cumsum(xp.flip(a, axis=d), axis=d), axis=d)


class CumSum(Function):
    def forward(self, a, dim):
        self.dim = dim
        wide = accumulation_dtype(a)
        return a.cumsum(axis=dim, dtype=wide).astype(a.dtype, copy=False)

    def backward(self, g):
        return _reverse_cumsum(get_array_module(g), g, self.dim)


class CumProd(Function):
    """Running products. The gradient is exact with zeros present: before a slice's first
    zero it is ``sum_{j>=k} g_j y_j / x_k``; at the first zero, the products with that zero
    left out; after it, 0."""

    def forward(self, a, dim):
        self.dim = dim
        wide = accumulation_dtype(a)
        y = a.cumprod(axis=dim, dtype=wide).astype(a.dtype, copy=False)
        self.save_for_backward(a, y)
        return y

    def backward(self, g):
        a, y = self.saved
        xp = get_array_module(g)
        d = self.dim
        zero = a == 0
        zeros_so_far = xp.cumsum(zero, axis=d)
        before = zeros_so_far == 0
        first_zero = zero & (zeros_so_far == 1)
        safe = xp.where(before, a, 1)
        grad = xp.where(before, _reverse_cumsum(xp, g * y, d) / safe, 0)
        if first_zero.any():
            y_without = xp.cumprod(xp.where(first_zero, 1, a), axis=d)
            grad = xp.where(first_zero, _reverse_cumsum(xp, g * y_without, d), grad)
        return grad.astype(g.dtype, copy=False)


def _cumulative(fn, input, d):
    if input.ndim == 0:
        return fn.apply(input.reshape(1), dim=0).reshape(())
    return fn.apply(input, dim=d)


def cumsum(input, dim, *, dtype=None):
    """Running sums along ``dim``; integer and bool inputs give int64, as in PyTorch."""
    x, d = _cumulative_input("cumsum", input, dim, dtype)
    return _cumulative(CumSum, x, d)


def cumprod(input, dim, *, dtype=None):
    """Running products along ``dim``; integer and bool inputs give int64, as in PyTorch."""
    x, d = _cumulative_input("cumprod", input, dim, dtype)
    return _cumulative(CumProd, x, d)


TENSOR_METHODS = {"cumsum": cumsum, "cumprod": cumprod}
FUNCTIONS = ["cumsum", "cumprod"]
