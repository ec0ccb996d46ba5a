"""Elementwise, activation, reduction and shape ops: the Functions behind Tensor's operators and
methods (``x + y``, ``x.sum()``, ``x.relu()``, ``x.reshape(...)``), plus ``cat`` and ``stack``.

Each op is one Function: forward and backward side by side, on the array module of its inputs.
Tensor's methods, in tensor.py, call them; this module imports only ``backend`` and
``autograd`` (see autograd.py for the direction of the imports).
"""
from __future__ import annotations

import functools
from collections import namedtuple

import numpy as np

from . import backend
from .autograd import DimError, Function, unbroadcast
from .backend import get_array_module
from .backend.dtypes import is_floating, promote_types


def accumulation_dtype(a):
    """float32 for 16-bit floats, whose sums NumPy would add up in 16 bits (a bfloat16 sum of
    4096 ones is 256): PyTorch's kernels accumulate them in float32. None otherwise."""
    dt = a.dtype
    return np.float32 if dt.itemsize == 2 and is_floating(dt) else None

# ---- arithmetic -------------------------------------------------------------------------
class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, -g


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        return g * b, g * a


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved
        ga = g / b
        return ga, -ga * a / b


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    """x ** p for a constant exponent p."""

    def forward(self, a, exponent):
        self.exponent = exponent
        self.save_for_backward(a)
        return a ** exponent

    def backward(self, g):
        (a,) = self.saved
        p = self.exponent
        if p == 0:  # d(x^0)/dx = 0 everywhere, also at x = 0 where p * a^(p-1) is 0 * inf
            return get_array_module(g).zeros_like(g)
        return g * (p * a ** (p - 1))


class PowTensor(Function):
    """a ** b with both sides tensors. At the edges the gradients are PyTorch's: d/da is 0
    where b = 0 (also at a = 0), d/db is 0 where a = 0 and b >= 0, and NaN where a < 0."""

    def forward(self, a, b):
        y = a ** b
        self.save_for_backward(a, b, y)
        return y

    def backward(self, g):
        a, b, y = self.saved
        xp = get_array_module(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            ga = xp.where(b == 0, 0, g * b * a ** (b - 1))
            gb = xp.where((a == 0) & (b >= 0), 0, g * y * xp.log(a))
        return ga.astype(g.dtype, copy=False), gb.astype(g.dtype, copy=False)


class Exp(Function):
    def forward(self, a):
        y = get_array_module(a).exp(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return g * y


class Log(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return get_array_module(a).log(a)

    def backward(self, g):
        (a,) = self.saved
        return g / a


class Sqrt(Function):
    def forward(self, a):
        y = get_array_module(a).sqrt(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return g / (2 * y)


class Tanh(Function):
    def forward(self, a):
        y = get_array_module(a).tanh(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return g * (1 - y * y)


class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


class Maximum(Function):
    """Elementwise max (min) of two tensors; on a tie each side gets half the gradient."""

    def forward(self, a, b, take_min=False):
        xp = get_array_module(a)
        self.save_for_backward(a, b)
        self.take_min = take_min
        return xp.minimum(a, b) if take_min else xp.maximum(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(a)
        wins = (a < b) if self.take_min else (a > b)
        share = xp.where(wins, 1, xp.where(a == b, 0.5, 0)).astype(g.dtype, copy=False)
        return g * share, g * (1 - share)


class Abs(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return abs(a)

    def backward(self, g):
        (a,) = self.saved
        return g * get_array_module(a).sign(a)


def astype(a, dtype):
    """``a.astype(dtype)``, through the kernel set's own cast where it has one (CUDA: one launch
    of minidl's kernel, cheaper on the host than CuPy's astype)."""
    fast = getattr(backend.kernels(get_array_module(a)), "astype", None)
    return fast(a, dtype) if fast is not None else a.astype(dtype)


class Cast(Function):
    def forward(self, x, dtype):
        self.source = x.dtype
        return astype(x, dtype)

    def backward(self, g):
        return astype(g, self.source)


# ---- activations ------------------------------------------------------------------------
class ReLU(Function):
    # The output is saved instead of a mask: y > 0 exactly where x > 0, and it already exists.
    def forward(self, x):
        fast = getattr(backend.kernels(get_array_module(x)), "relu_forward", None)
        y = fast(x) if fast is not None else get_array_module(x).maximum(x, 0)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        fast = getattr(backend.kernels(get_array_module(g)), "relu_backward", None)
        return fast(g, y) if fast is not None else g * (y > 0)


def stable_sigmoid(x):
    """1 / (1 + e^-x) without overflow: exp is only ever taken of -|x|."""
    xp = get_array_module(x)
    e = xp.exp(-abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Function):
    def forward(self, x):
        y = stable_sigmoid(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return g * y * (1 - y)


class Softmax(Function):
    def forward(self, x, dim):
        xp = get_array_module(x)
        wide = accumulation_dtype(x)  # 16-bit inputs: computed in float32 and rounded
        xw = x if wide is None else x.astype(wide)
        e = xp.exp(xw - xw.max(axis=dim, keepdims=True))  # max subtracted: no overflow
        y = (e / e.sum(axis=dim, keepdims=True)).astype(x.dtype, copy=False)
        self.dim = dim
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        wide = accumulation_dtype(g)
        if wide is not None:
            yw, gw = y.astype(wide), g.astype(wide)
            return (yw * (gw - (gw * yw).sum(axis=self.dim, keepdims=True))).astype(g.dtype)
        return y * (g - (g * y).sum(axis=self.dim, keepdims=True))


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands need at least one dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit: inner "
                             f"dimensions {k_a} and {k_b} differ")
        self.save_for_backward(a, b)
        y = a @ b
        if y.dtype != a.dtype and a.dtype == b.dtype:  # ml_dtypes' bfloat16 product is float32
            y = y.astype(a.dtype)
        return y

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(a)
        if a.ndim == 1 and b.ndim == 1:  # dot product: g is 0-d
            return g * b, g * a
        # 1-D operands act as a row (left) or a column (right) vector, as in numpy.matmul.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = g2 @ xp.swapaxes(b2, -1, -2)
        gb = xp.swapaxes(a2, -1, -2) @ g2
        if a.ndim == 1:
            ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])
        if b.ndim == 1:
            gb = gb.reshape(gb.shape[:-1])
        # batch dims broadcast (also size-1 dims in the middle, e.g. (2,1,m,k) @ (5,k,n)):
        # sum back to each operand's shape
        return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)


# ---- reductions -------------------------------------------------------------------------
def reduction_axes(dim, ndim):
    """The axes a reduction over ``dim`` runs on: all of them for None or an empty list (as in
    PyTorch), none for a 0-d tensor (whose dims 0 and -1 are accepted)."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (int, np.integer)):
        dim = (dim,)
    if len(dim) == 0:
        return tuple(range(ndim))
    n = max(ndim, 1)
    out = []
    for d in dim:
        if not -n <= d < n:
            raise DimError(f"dimension {d} out of range for a tensor of {ndim} dimensions "
                           f"(expected to be in range of [{-n}, {n - 1}])")
        out.append(d % n)
    if len(set(out)) != len(out):
        raise ValueError(f"dimension {dim}: a dim appears more than once")
    return tuple(sorted(out)) if ndim else ()


def _expand_reduced(g, shape, axes, keepdim):
    xp = get_array_module(g)
    if not keepdim:
        for ax in axes:
            g = xp.expand_dims(g, ax)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.shape = a.shape
        self.axes = reduction_axes(dim, a.ndim)
        self.keepdim = keepdim
        wide = accumulation_dtype(a)
        if wide is not None:
            return a.sum(axis=self.axes, keepdims=keepdim, dtype=wide).astype(a.dtype)
        return a.sum(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return _expand_reduced(g, self.shape, self.axes, self.keepdim)


class Mean(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.shape = a.shape
        self.axes = reduction_axes(dim, a.ndim)
        self.keepdim = keepdim
        self.count = int(np.prod([a.shape[ax] for ax in self.axes]))
        wide = accumulation_dtype(a)
        if wide is not None:
            return a.mean(axis=self.axes, keepdims=keepdim, dtype=wide).astype(a.dtype)
        return a.mean(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return _expand_reduced(g / self.count, self.shape, self.axes, self.keepdim)


class Max(Function):
    """Max over axes; ties share the gradient equally (as torch.amax does)."""

    def forward(self, a, dim=None, keepdim=False, take_min=False):
        self.axes = reduction_axes(dim, a.ndim)
        self.keepdim = keepdim
        y = a.min(axis=self.axes, keepdims=True) if take_min else a.max(axis=self.axes, keepdims=True)
        self.save_for_backward(a, y)
        return y if keepdim else y.squeeze(axis=self.axes)

    def backward(self, g):
        a, y = self.saved
        # a NaN is the max (min) where there is one: the gradient goes to it, as in PyTorch
        mask = ((a == y) | ((a != a) & (y != y))).astype(a.dtype)
        mask /= mask.sum(axis=self.axes, keepdims=True)
        xp = get_array_module(a)
        if not self.keepdim:
            for ax in self.axes:
                g = xp.expand_dims(g, ax)
        return g * mask


MaxResult = namedtuple("MaxResult", ["values", "indices"])  # x.max(dim), as torch.return_types


class MaxDim(Function):
    """max/min over one dim that also returns indices, as torch.max(x, dim): the gradient goes
    to the returned index alone (ties do not split it, unlike amax)."""

    def forward(self, a, dim, keepdim, arg):
        self.dim, self.keepdim, self.arg, self.n = dim % a.ndim, keepdim, arg, a.shape[dim]
        y = get_array_module(a).take_along_axis(a, arg, axis=dim)  # arg has dim kept
        return y if keepdim else y.squeeze(axis=dim)

    def backward(self, g):
        xp = get_array_module(g)
        if not self.keepdim:
            g = xp.expand_dims(g, self.dim)
        positions = xp.arange(self.n).reshape((-1,) + (1,) * (self.arg.ndim - self.dim - 1))
        return g * (positions == self.arg)


# ---- shape ------------------------------------------------------------------------------
class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


class Permute(Function):
    def forward(self, a, axes):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(tuple(int(a) for a in np.argsort(self.axes)))


class GetItem(Function):
    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        return a[index]

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        items = self.index if isinstance(self.index, tuple) else (self.index,)
        if all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items):
            out[self.index] = g  # basic indexing reaches each element at most once
        elif xp is np:
            np.add.at(out, self.index, g)  # accumulates where an integer index repeats
        elif hasattr(xp.add, "at"):
            xp.add.at(out, self.index, g)  # CuPy >= 12
        else:
            import cupyx

            cupyx.scatter_add(out, self.index, g)
        return out


class Concat(Function):
    def forward(self, *arrays, dim=0):
        self.dim = dim
        self.sizes = [a.shape[dim] for a in arrays]
        return get_array_module(*arrays).concatenate(arrays, axis=dim)

    def backward(self, g):
        xp = get_array_module(g)
        splits = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(xp.split(g, splits, axis=self.dim))


def cat(tensors, dim=0):
    """Concatenate along ``dim``; mixed dtypes meet at PyTorch's result type."""
    tensors = list(tensors)
    dtypes = {t.data.dtype for t in tensors}
    if len(dtypes) > 1:
        dtype = functools.reduce(promote_types, dtypes)
        tensors = [t if t.data.dtype == dtype else Cast.apply(t, dtype=dtype) for t in tensors]
    return Concat.apply(*tensors, dim=dim)


def stack(tensors, dim=0):
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)
