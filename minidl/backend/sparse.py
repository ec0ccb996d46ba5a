"""Sparse COO arrays: the ``.data`` of a sparse tensor (``minidl.sparse_coo`` layout).

A ``SparseCOO`` holds ``indices`` (int64, sparse_dim x nnz), ``values`` (nnz x the dense
dims) and the full ``shape``, as torch's sparse COO tensors do; entries whose indices repeat
add up (an uncoalesced array), ``coalesce()`` sorts them and sums the repeats. It answers the
small part of the array protocol that the generic ops and the backward engine use on it
(shape, dtype, copy, astype, negation, scaling by a number, ``+`` of two of one shape, the
transpose of a 2-D one), so that Clone, Cast, Neg, Mul by a number, Add and Permute run on it
as they are. Everything else a dense array does (ufuncs, numpy functions, indexing,
``__array__``) raises ``SparseLayoutError``, which ``Function.apply`` turns into an error
naming the op: a dense-only op never computes on the wrong thing. The kernels take the array
module from the arrays (numpy or cupy).
"""
from __future__ import annotations

import numpy as np

from . import get_array_module


class SparseLayoutError(NotImplementedError):
    """A dense-array operation was asked of a sparse array (COO, or a compressed one)."""

    def __init__(self, what, layout="sparse_coo"):
        self.what, self.layout = what, layout
        super().__init__(f"{what}: not supported for {layout_words(layout)}; convert with "
                         ".to_dense() first")


def layout_words(layout):
    """``sparse COO tensors (layout minidl.sparse_coo)``, for the errors that name a layout."""
    return f"sparse {layout[len('sparse_'):].upper()} tensors (layout minidl.{layout})"


class SparseArray:
    """What a sparse array (SparseCOO, backend.sparse_compressed.SparseCompressed) refuses:
    every dense-array operation it does not define raises SparseLayoutError naming it."""

    __slots__ = ()
    layout = "sparse_coo"
    base = None  # never a view of another array (the backward engine asks)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise SparseLayoutError(name, self.layout)

    def __array__(self, dtype=None, copy=None):
        raise SparseLayoutError("conversion to a numpy array", self.layout)

    def __array_ufunc__(self, ufunc, method, *args, **kwargs):
        raise SparseLayoutError(ufunc.__name__, self.layout)

    def __array_function__(self, func, types, args, kwargs):
        raise SparseLayoutError(func.__name__, self.layout)

    def __len__(self):  # len() of a sparse tensor: its first dim, as torch's
        return self.shape[0]

    __hash__ = object.__hash__  # __eq__ is refused below; identity still hashes


class SparseCOO(SparseArray):
    """indices (sparse_dim, nnz) int64, values (nnz, *dense dims), the shape; see the module."""

    __slots__ = ("indices", "values", "shape", "coalesced")

    def __init__(self, indices, values, shape, coalesced=False):
        self.indices, self.values = indices, values
        self.shape = tuple(int(n) for n in shape)
        self.coalesced = bool(coalesced)

    # ---- what the generic code reads ----------------------------------------------------
    @property
    def dtype(self):
        return self.values.dtype

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def sparse_dim(self):
        return int(self.indices.shape[0])

    @property
    def dense_dim(self):
        return self.values.ndim - 1

    @property
    def nnz(self):
        return int(self.indices.shape[1])

    def copy(self, order=None):
        return SparseCOO(self.indices.copy(), self.values.copy(), self.shape, self.coalesced)

    def astype(self, dtype, copy=True):
        if not copy and self.values.dtype == dtype:
            return self
        return SparseCOO(self.indices, self.values.astype(dtype), self.shape, self.coalesced)

    def map_arrays(self, fn):
        """The same tensor with ``fn`` applied to each of its arrays (a move to another
        device)."""
        return SparseCOO(fn(self.indices), fn(self.values), self.shape, self.coalesced)

    def with_values(self, values):
        """The same pattern with other values (the indices are shared, as torch's
        ``_values`` changes keep them)."""
        return SparseCOO(self.indices, values, self.shape, self.coalesced)

    def __neg__(self):
        return self.with_values(-self.values)

    def __add__(self, other):
        if type(other) is not SparseCOO:
            raise SparseLayoutError("add of a sparse and a dense tensor")
        return add(self, other)

    def __iadd__(self, other):
        """In place, as torch's accumulation of a sparse gradient: the entries appended."""
        if type(other) is not SparseCOO:
            raise SparseLayoutError("add of a sparse and a dense tensor")
        both = add(self, other)
        self.indices, self.values, self.coalesced = both.indices, both.values, both.coalesced
        return self

    def transpose(self, axes=None):
        if self.dense_dim or self.ndim != 2 or tuple(axes) not in ((1, 0), (0, 1)):
            raise SparseLayoutError("permute of a sparse tensor (only t() of a 2-D one)")
        if tuple(axes) == (0, 1):
            return self
        return SparseCOO(self.indices[::-1].copy(), self.values, self.shape[::-1])


def _refusing(op):
    def refuse(self, *args, **kwargs):
        raise SparseLayoutError(op, self.layout)
    refuse.__name__ = op
    return refuse


for _dunder, _op in {
        "__getitem__": "indexing", "__setitem__": "index assignment", "__iter__": "iteration",
        "__bool__": "bool()", "__float__": "float()", "__int__": "int()",
        "__eq__": "==", "__ne__": "!=", "__lt__": "<", "__le__": "<=", "__gt__": ">",
        "__ge__": ">=", "__abs__": "abs", "__sub__": "-", "__rsub__": "-", "__radd__": "+",
        "__mul__": "*", "__rmul__": "*", "__truediv__": "/", "__rtruediv__": "/",
        "__pow__": "**", "__matmul__": "@", "__rmatmul__": "@"}.items():
    setattr(SparseArray, _dunder, _refusing(_op))


def is_sparse(array):
    return type(array) is SparseCOO


# ---- kernels ----------------------------------------------------------------------------
def linear_index(indices, shape):
    """Each entry's row-major position among the sparse dims (int64)."""
    xp = get_array_module(indices)
    lin = xp.zeros(indices.shape[1], dtype=xp.int64)
    for d, n in enumerate(shape[:indices.shape[0]]):
        lin = lin * n + indices[d]
    return lin


def unravel(lin, shape):
    """The inverse of linear_index: a (len(shape), n) int64 array."""
    xp = get_array_module(lin)
    rows = []
    for n in reversed(shape):
        rows.append(lin % n)
        lin = lin // n
    if not rows:
        return xp.zeros((0, len(lin)), dtype=xp.int64)
    return xp.stack(rows[::-1]).astype(xp.int64)


def coalesce(a):
    """Entries sorted by their indices (row-major), repeats summed, as torch's coalesce()."""
    if a.coalesced:
        return a
    xp = get_array_module(a.values)
    sparse_shape = a.shape[:a.sparse_dim]
    lin = linear_index(a.indices, sparse_shape)
    keys, inverse = xp.unique(lin, return_inverse=True)
    values = xp.zeros((len(keys),) + a.values.shape[1:], dtype=a.values.dtype)
    scatter_add(values, inverse.reshape(-1), a.values)
    return SparseCOO(unravel(keys, sparse_shape), values, a.shape, coalesced=True)


def scatter_add(out, rows, values):
    """out[rows[i]] += values[i], repeats adding up."""
    xp = get_array_module(out)
    if (xp is np and out.ndim == 2 and values.ndim == 2 and not isinstance(rows, tuple)
            and out.dtype in (np.float32, np.float64) and values.dtype == out.dtype):
        from . import kernels

        fast = getattr(kernels(np), "add_rows", None)
        if fast is not None:  # numba: ufunc.at is several times slower on rows
            fast(out, rows, values)
            return
    if xp is np or hasattr(xp.add, "at"):
        xp.add.at(out, rows, values)
    else:  # CuPy before 12: its scatter_add is the unbuffered add
        import cupyx

        cupyx.scatter_add(out, rows, values)


def scatter_max(out, rows, values):
    """out[rows[i]] = max(out[rows[i]], values[i])."""
    xp = get_array_module(out)
    if xp is np or hasattr(xp.maximum, "at"):
        xp.maximum.at(out, rows, values)
    else:  # CuPy before 12
        import cupyx

        cupyx.scatter_max(out, rows, values)


def add(a, b):
    """a + b of one shape: the entries of both (coalesced where both were, as torch's)."""
    if a.shape != b.shape:
        raise ValueError(f"add: expected sizes of the two sparse tensors to match, but "
                         f"{list(a.shape)} != {list(b.shape)}")
    if a.sparse_dim != b.sparse_dim:
        raise ValueError(f"add: the two sparse tensors have {a.sparse_dim} and {b.sparse_dim} "
                         "sparse dims")
    xp = get_array_module(a.values)
    dtype = np.result_type(a.values.dtype, b.values.dtype)
    out = SparseCOO(xp.concatenate([a.indices, b.indices], axis=1),
                    xp.concatenate([a.values.astype(dtype, copy=False),
                                    b.values.astype(dtype, copy=False)]), a.shape)
    return coalesce(out) if a.coalesced and b.coalesced else out


def to_dense(a):
    xp = get_array_module(a.values)
    out = xp.zeros(a.shape, dtype=a.values.dtype)
    if a.nnz:
        if a.sparse_dim == 0:
            out += a.values.sum(axis=0)
        else:
            flat = out.reshape((-1,) + a.shape[a.sparse_dim:])
            scatter_add(flat, linear_index(a.indices, a.shape), a.values)
    return out


def from_dense(x, sparse_dim=None):
    """The nonzero entries of a dense array over its first ``sparse_dim`` dims (all by
    default), coalesced; a hybrid entry is kept where any of its dense values is nonzero."""
    xp = get_array_module(x)
    sparse_dim = x.ndim if sparse_dim is None else sparse_dim
    nonzero = x != 0
    if sparse_dim < x.ndim:
        nonzero = nonzero.reshape(x.shape[:sparse_dim] + (-1,)).any(axis=-1)
    found = xp.nonzero(nonzero)
    if sparse_dim == 0:
        indices = xp.zeros((0, 1), dtype=xp.int64)
        return SparseCOO(indices, x[None].copy(), x.shape, coalesced=True)
    indices = xp.stack(found).astype(xp.int64) if found else xp.zeros((0, 0), xp.int64)
    return SparseCOO(indices, x[found], x.shape, coalesced=True)


def lookup(g, pattern):
    """The gradient ``g`` (dense, or sparse of the same shape) at the entries of
    ``pattern``'s indices: an array of pattern.values' shape (0 where a sparse ``g`` has no
    entry)."""
    if type(g) is not SparseCOO:
        return g[tuple(pattern.indices)]
    xp = get_array_module(g.values)
    g = coalesce(g)
    sparse_shape = g.shape[:g.sparse_dim]
    keys = linear_index(g.indices, sparse_shape)
    wanted = linear_index(pattern.indices, sparse_shape)
    if not g.nnz:
        return xp.zeros((pattern.nnz,) + g.values.shape[1:], dtype=g.values.dtype)
    at = xp.minimum(xp.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[at] == wanted
    out = g.values[at]
    mask = found.reshape((-1,) + (1,) * (out.ndim - 1))
    return xp.where(mask, out, xp.zeros((), out.dtype))


def mask_like(g, pattern):
    """``g`` (dense or sparse) restricted to ``pattern``'s entries in their sorted order:
    torch's sparse_mask, the gradient of an op on a sparse input (flagged uncoalesced, as
    torch flags it)."""
    pattern = coalesce(pattern)
    return SparseCOO(pattern.indices, lookup(g, pattern), pattern.shape)


def mm(a, b):
    """sparse (n, k) @ dense (k, m) -> dense (n, m)."""
    xp = get_array_module(b)
    dtype = np.result_type(a.values.dtype, b.dtype)
    out = xp.zeros((a.shape[0],) + b.shape[1:], dtype=dtype)
    if a.nnz:
        rows, cols = a.indices
        scatter_add(out, rows, a.values.reshape((-1,) + (1,) * (b.ndim - 1)) * b[cols])
    return out


def mm_t(a, g):
    """a.T @ g for sparse a (n, k) and dense g (n, m): the gradient of mm for its dense
    input."""
    xp = get_array_module(g)
    out = xp.zeros((a.shape[1],) + g.shape[1:], dtype=g.dtype)
    if a.nnz:
        rows, cols = a.indices
        scatter_add(out, cols, a.values.reshape((-1,) + (1,) * (g.ndim - 1)) * g[rows])
    return out


def add_into(out, a, alpha=1.0):
    """out += alpha * a, in place, for a dense ``out`` and a sparse ``a`` of its shape."""
    if a.nnz:
        values = a.values if alpha == 1 else a.values * alpha
        scatter_add(out, tuple(a.indices), values.astype(out.dtype, copy=False))


def empty_like(a):
    """No entries, a's shape, sparse and dense dims (torch's zero_() of a sparse tensor)."""
    xp = get_array_module(a.values)
    return SparseCOO(xp.zeros((a.sparse_dim, 0), dtype=xp.int64),
                     xp.zeros((0,) + a.values.shape[1:], dtype=a.values.dtype), a.shape,
                     coalesced=True)
