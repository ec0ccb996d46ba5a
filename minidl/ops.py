"""Elementwise, reduction and shape ops, and the Tensor operators that call them.

Each op is one Function: forward and backward side by side, on the array module of its inputs.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .backend import get_array_module
from .backend.dtypes import is_floating
from .tensor import Function, Tensor, unbroadcast


def _operand(x, like: Tensor):
    """Python scalars and arrays take the dtype and device of the tensor they meet, so
    ``x * 2.0`` stays float32 and never upcasts."""
    if isinstance(x, Tensor):
        return x
    xp = get_array_module(like.data)
    if xp is not np and isinstance(x, (bool, int, float)):
        # a GPU fill kernel takes the number by value; asarray would copy it from the host,
        # and a copy from pageable memory can wait for the GPU to finish its queue
        kind = np.asarray(x).dtype
        dtype = like.dtype if kind.kind in "biuf" and (is_floating(like.dtype) or kind.kind != "f") \
            else kind
        return Tensor(xp.full((), x, dtype=dtype))
    arr = xp.asarray(x)
    if arr.dtype.kind in "biuf" and (is_floating(like.dtype) or arr.dtype.kind != "f"):
        arr = arr.astype(like.dtype)
    return Tensor(arr)


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
def _axes(dim, ndim):
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
        self.axes = _axes(dim, a.ndim)
        self.keepdim = keepdim
        return a.sum(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return _expand_reduced(g, self.shape, self.axes, self.keepdim)


class Mean(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.shape = a.shape
        self.axes = _axes(dim, a.ndim)
        self.keepdim = keepdim
        self.count = int(np.prod([a.shape[ax] for ax in self.axes]))
        return a.mean(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return _expand_reduced(g / self.count, self.shape, self.axes, self.keepdim)


class Max(Function):
    """Max over axes; ties share the gradient equally (as torch.amax does)."""

    def forward(self, a, dim=None, keepdim=False, take_min=False):
        self.axes = _axes(dim, a.ndim)
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


def _index(index):
    """Tensors inside an index become their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


# ---- Tensor methods ---------------------------------------------------------------------
def _binary(fn, swap=False):
    def method(self, other):
        other = _operand(other, self)
        return fn.apply(other, self) if swap else fn.apply(self, other)
    return method


def _pow(self, exponent):
    if isinstance(exponent, Tensor):
        return PowTensor.apply(self, exponent)
    return Pow.apply(self, exponent=exponent)


def _rpow(self, base):
    return PowTensor.apply(_operand(base, self), self)


def _reshape(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        np.empty(self.shape, dtype=np.uint8).reshape(shape)  # validates cheaply on host
    except ValueError:
        raise ValueError(f"reshape: cannot view shape {self.shape} ({self.numel()} elements) "
                         f"as {shape}") from None
    return Reshape.apply(self, shape=shape)


def _permute(self, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    if sorted(a % self.ndim for a in axes) != list(range(self.ndim)):
        raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} dims")
    return Permute.apply(self, axes=tuple(a % self.ndim for a in axes))


def _transpose(self, dim0=None, dim1=None):
    if dim0 is None:
        return _permute(self, tuple(reversed(range(self.ndim))))
    axes = list(range(self.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return _permute(self, tuple(axes))


def _flatten(self, start_dim=0, end_dim=-1):
    if self.ndim == 0:
        return _reshape(self, 1)
    start, end = start_dim % self.ndim, end_dim % self.ndim
    shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
    return Reshape.apply(self, shape=shape)


def _unsqueeze(self, dim):
    d = dim % (self.ndim + 1)
    return Reshape.apply(self, shape=self.shape[:d] + (1,) + self.shape[d:])


def _squeeze(self, dim=None):
    if dim is None:
        shape = tuple(n for n in self.shape if n != 1)
    else:
        d = dim % self.ndim
        shape = self.shape if self.shape[d] != 1 else self.shape[:d] + self.shape[d + 1:]
    return Reshape.apply(self, shape=shape)


def _sum(self, dim=None, keepdim=False, axis=None, keepdims=None):
    dim = axis if dim is None else dim
    keepdim = keepdims if keepdims is not None else keepdim
    return Sum.apply(self, dim=dim, keepdim=keepdim)


def _mean(self, dim=None, keepdim=False, axis=None, keepdims=None):
    dim = axis if dim is None else dim
    keepdim = keepdims if keepdims is not None else keepdim
    return Mean.apply(self, dim=dim, keepdim=keepdim)


MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _max_like(take_min):
    def method(self, dim=None, keepdim=False, axis=None, keepdims=None):
        """Over everything: the largest value. Over one dim: (values, indices), as PyTorch."""
        dim = axis if dim is None else dim
        keepdim = keepdims if keepdims is not None else keepdim
        if dim is None or not isinstance(dim, int) or self.ndim == 0:
            return Max.apply(self, dim=dim, keepdim=keepdim, take_min=take_min)
        _axes(dim, self.ndim)  # a clear error for a dim out of range
        arg = self.data.argmin(axis=dim) if take_min else self.data.argmax(axis=dim)
        arg = get_array_module(arg).expand_dims(arg, dim)
        values = MaxDim.apply(self, dim=dim, keepdim=keepdim, arg=arg)
        indices = arg if keepdim else arg.squeeze(axis=dim)
        return MaxResult(values, Tensor(indices.astype(np.int64)))
    return method


def _amax(self, dim=None, keepdim=False):
    return Max.apply(self, dim=dim, keepdim=keepdim, take_min=False)


def _argmax(self, dim=None, keepdim=False):
    if dim is None:
        return Tensor(np.int64(self.data.argmax()) if self.device == "cpu" else self.data.argmax())
    arg = self.data.argmax(axis=dim)
    if keepdim:
        arg = get_array_module(arg).expand_dims(arg, dim)
    return Tensor(arg.astype(np.int64))


def _compare(op):
    def method(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(op(self.data, other))
    return method


def _attach():
    T = Tensor
    T.__add__ = _binary(Add)
    T.__radd__ = _binary(Add, swap=True)
    T.__sub__ = _binary(Sub)
    T.__rsub__ = _binary(Sub, swap=True)
    T.__mul__ = _binary(Mul)
    T.__rmul__ = _binary(Mul, swap=True)
    T.__truediv__ = _binary(Div)
    T.__rtruediv__ = _binary(Div, swap=True)
    T.__matmul__ = _binary(MatMul)
    T.__rmatmul__ = _binary(MatMul, swap=True)
    T.__neg__ = lambda self: Neg.apply(self)
    T.__pos__ = lambda self: self
    T.__pow__ = _pow
    T.__rpow__ = _rpow
    T.__getitem__ = lambda self, index: GetItem.apply(self, index=_index(index))
    T.__abs__ = lambda self: Abs.apply(self)
    T.__lt__ = _compare(lambda a, b: a < b)
    T.__le__ = _compare(lambda a, b: a <= b)
    T.__gt__ = _compare(lambda a, b: a > b)
    T.__ge__ = _compare(lambda a, b: a >= b)
    T.__eq__ = _compare(lambda a, b: a == b)
    T.__ne__ = _compare(lambda a, b: a != b)
    T.exp = lambda self: Exp.apply(self)
    T.log = lambda self: Log.apply(self)
    T.sqrt = lambda self: Sqrt.apply(self)
    T.tanh = lambda self: Tanh.apply(self)
    T.abs = lambda self: Abs.apply(self)
    T.matmul = T.__matmul__
    T.sum = _sum
    T.mean = _mean
    T.max = _max_like(False)
    T.min = _max_like(True)
    T.amax = _amax
    T.argmax = _argmax
    T.reshape = _reshape
    T.view = _reshape
    T.permute = _permute
    T.transpose = _transpose
    T.T = property(lambda self: _transpose(self))
    T.flatten = _flatten
    T.unsqueeze = _unsqueeze
    T.squeeze = _squeeze
    T.relu = lambda self: __import__("minidl.functional", fromlist=["relu"]).relu(self)
    T.sigmoid = lambda self: __import__("minidl.functional", fromlist=["sigmoid"]).sigmoid(self)
    T.softmax = lambda self, dim: __import__("minidl.functional", fromlist=["softmax"]).softmax(self, dim)


_attach()
