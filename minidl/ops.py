"""Elementwise, activation, reduction and shape ops: the Functions behind Tensor's operators and
methods (``x + y``, ``x.sum()``, ``x.relu()``, ``x.reshape(...)``), plus ``cat`` and ``stack``.

Each op is one Function: forward and backward side by side, on the array module of its inputs.
Tensor's methods, in tensor.py, call them; this module imports only ``backend`` and
``autograd`` (see autograd.py for the direction of the imports).
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import backend
from .autograd import Function, unbroadcast
from .backend import get_array_module

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
    """a ** b with both sides tensors (b's gradient needs a > 0)."""

    def forward(self, a, b):
        y = a ** b
        self.save_for_backward(a, b, y)
        return y

    def backward(self, g):
        a, b, y = self.saved
        xp = get_array_module(a)
        return g * b * a ** (b - 1), g * y * xp.log(xp.where(a > 0, a, 1))


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


class Abs(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return abs(a)

    def backward(self, g):
        (a,) = self.saved
        return g * get_array_module(a).sign(a)


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
        e = xp.exp(x - x.max(axis=dim, keepdims=True))  # max subtracted: no overflow
        y = e / e.sum(axis=dim, keepdims=True)
        self.dim = dim
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
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
        return a @ b

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
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    out = []
    for d in dim:
        if not -ndim <= d < max(ndim, 1):
            raise ValueError(f"dimension {d} out of range for a tensor of {ndim} dimensions")
        out.append(d % ndim if ndim else 0)
    return tuple(sorted(out))


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
        return a.sum(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return _expand_reduced(g, self.shape, self.axes, self.keepdim)


class Mean(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.shape = a.shape
        self.axes = reduction_axes(dim, a.ndim)
        self.keepdim = keepdim
        self.count = int(np.prod([a.shape[ax] for ax in self.axes]))
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
        mask = (a == y).astype(a.dtype)
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
    return Concat.apply(*tensors, dim=dim)


def stack(tensors, dim=0):
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)
