"""Sparse COO tensors, the part of torch.sparse that graph networks and sparse embeddings use.

A sparse tensor is a ``Tensor`` whose ``.data`` is a ``backend.sparse.SparseCOO`` (indices,
values, shape), made by ``minidl.sparse_coo_tensor``, ``Tensor.to_sparse()`` or a sparse
gradient (``nn.Embedding(sparse=True)``, the sparse input of ``sparse.mm``). The ops that
have a sparse form (Clone, Cast, Neg, Add of two sparse tensors, Mul/Div by a number, t()
of a 2-D one, ``@``/``mm`` with a sparse first operand) run on it; every other op refuses it
with an error naming the op (autograd.sparse_forms).

Gradients follow torch's layouts: ``sparse.mm``, ``sparse.addmm``, ``to_dense``,
``sparse.sum`` and ``sparse.softmax`` give a sparse input a sparse gradient on its coalesced
pattern; ``mm``/``@`` give it a dense one; ``to_sparse`` gives its dense input a dense one.

This sits above ``tensor`` and sets its methods on Tensor (``to_dense``, ``coalesce``,
``indices``, ...), as ``_torch_namespace`` does.
"""
from __future__ import annotations

import numpy as np

from . import autograd
from .autograd import Function, input_needed
from .backend import get_array_module, normalize_device
from .backend.dtypes import default_float, is_floating
from .backend import sparse as _k
from .backend.sparse import SparseArray, SparseCOO
from .backend.sparse_compressed import SparseCompressed, torch_layout_name
from .ops import BadArgumentError, Clone, Div, MatMul, Mul
from .products import _scaled_sum
from .tensor import Tensor

__all__ = ["mm", "addmm", "sum", "softmax", "log_softmax", "smm", "hspmm", "sampled_addmm",
           "check_sparse_tensor_invariants"]

# the compressed layouts (minidl.sparse_compressed, which builds on this module) register
# their forms of mm, addmm and sampled_addmm here
compressed_forms = {}


class layout:
    """A tensor layout, as torch.layout: ``minidl.strided`` (dense) or ``minidl.sparse_coo``."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"minidl.{self.name}"

    def __reduce__(self):  # one object per layout, also after a copy or a pickle
        return self.name


strided = layout("strided")
sparse_coo = layout("sparse_coo")
jagged = layout("jagged")  # minidl.nested's ragged layout


def _is_sparse(t):
    return isinstance(t, Tensor) and type(t.data) is SparseCOO


def _is_compressed(t):
    return isinstance(t, Tensor) and type(t.data) is SparseCompressed


def sampled_addmm(input, mat1, mat2, *, beta=1.0, alpha=1.0, out=None):
    """torch.sparse.sampled_addmm: beta * input + alpha * (mat1 @ mat2) at the pattern of
    input, a CSR tensor (minidl.sparse_compressed)."""
    return compressed_forms["sampled_addmm"](input, mat1, mat2, beta=beta, alpha=alpha,
                                             out=out)


class check_sparse_tensor_invariants:  # noqa: N801  (torch's name)
    """torch.sparse.check_sparse_tensor_invariants: a context manager (and decorator) that
    asks sparse constructors to check their invariants. minidl checks them always (no sparse
    tensor of minidl is unchecked), so this only keeps the flag that ``is_enabled`` reads."""

    _enabled = False

    def __init__(self, enable=True):
        self.state = bool(enable)
        self.saved = None

    @staticmethod
    def is_enabled():
        return check_sparse_tensor_invariants._enabled

    @staticmethod
    def enable():
        check_sparse_tensor_invariants._enabled = True

    @staticmethod
    def disable():
        check_sparse_tensor_invariants._enabled = False

    def __enter__(self):
        self.saved = check_sparse_tensor_invariants._enabled
        check_sparse_tensor_invariants._enabled = self.state
        return self

    def __exit__(self, *exc):
        check_sparse_tensor_invariants._enabled = self.saved
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            with check_sparse_tensor_invariants(self.state):
                return fn(*args, **kwargs)
        return checked


def _need_sparse(name, t):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    if type(t.data) is SparseCompressed:  # torch's words for a compressed one
        raise BadArgumentError(f"{name}: expected sparse coordinate tensor layout but got "
                               f"{torch_layout_name(t.data.layout)}")
    if type(t.data) is not SparseCOO:
        raise BadArgumentError(f"{name}: expected a sparse COO tensor (layout "
                               f"minidl.sparse_coo), got a strided one of shape {t.shape}")
    return t.data


# ---- construction -----------------------------------------------------------------------
class FromValues(Function):
    """values -> the sparse tensor of those values at fixed indices; the gradient of each
    value is the output's gradient at its indices (a repeated index: each of its values gets
    it)."""

    def forward(self, values, indices, shape, coalesced):
        self.pattern = SparseCOO(indices, values, shape, coalesced)
        return self.pattern

    def backward(self, g):
        return _k.lookup(g, self.pattern)

    def graph_backward(self, g, out):
        return Lookup.apply(g, pattern=self.pattern)

    def name(self):
        return "SparseCooTensorWithDimsAndTensorsBackward"


class Lookup(Function):
    """g (dense or sparse) at a pattern's indices (FromValues' gradient, as an op); its own
    gradient puts h back at those indices."""

    def forward(self, g, pattern):
        self.pattern, self.sparse_g = pattern, type(g) is SparseCOO
        return _k.lookup(g, pattern)

    def backward(self, h):
        p = self.pattern
        out = SparseCOO(p.indices, h, p.shape, p.coalesced)
        return out if self.sparse_g else _k.to_dense(out)

    def graph_backward(self, h, out):
        p = self.pattern
        back = FromValues.apply(h, indices=p.indices, shape=p.shape, coalesced=p.coalesced)
        return back if self.sparse_g else back.to_dense()


class MaskLike(Function):
    """A dense g at a pattern's coalesced entries, as a sparse tensor (ToDense's gradient, as
    an op); its own gradient is the dense form of h."""

    def forward(self, g, pattern):
        self.pattern = pattern
        return _k.mask_like(g, pattern)

    def backward(self, h):
        return _k.to_dense(_k.mask_like(h, self.pattern))

    def graph_backward(self, h, out):
        return MaskLike.apply(h, pattern=self.pattern).to_dense()


def _as_array(x, xp):
    if isinstance(x, Tensor):
        x = x.data
        if type(x) is SparseCOO:
            raise TypeError("sparse_coo_tensor: indices must be a dense integer tensor, got "
                            "a sparse one")
    return xp.asarray(x)


def sparse_coo_tensor(indices, values, size=None, *, dtype=None, device=None,
                      requires_grad=False, check_invariants=None, is_coalesced=None):
    """A sparse COO tensor with ``values[k]`` at ``indices[:, k]`` (torch.sparse_coo_tensor).

    indices: integers, sparse_dim x nnz; values: nnz x the dense dims (a hybrid tensor has
    dense dims); size: the full shape (by default each sparse dim one past its largest
    index). Repeated indices are kept (an uncoalesced tensor) and add up. The invariants are
    checked always (whatever ``check_invariants`` says): an error names the index, the dim
    or the count that does not fit. Where ``values`` requires grad (and ``requires_grad`` is
    not given) the result takes part in the graph and its gradient reaches ``values``."""
    name = "sparse_coo_tensor"
    if isinstance(values, Tensor) and values.is_sparse:
        raise TypeError(f"{name}: values must be a dense tensor, got a sparse one")
    if isinstance(values, Tensor):
        vals = values
        if device is not None and normalize_device(device) != vals.device:
            vals = vals.to(normalize_device(device))
        if dtype is not None and vals.dtype != np.dtype(dtype):
            vals = vals.to(dtype)
    else:
        vals = Tensor(values, dtype=dtype, device=device or "cpu")
    xp = get_array_module(vals.data)
    idx = _as_array(indices, xp)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name}: indices must be an integer tensor (int64), got dtype "
                        f"{idx.dtype}")
    if idx.ndim != 2:
        raise BadArgumentError(f"{name}: indices must be sparse_dim x nnz, but got shape "
                               f"{tuple(idx.shape)}")
    if vals.ndim == 0:
        raise BadArgumentError(f"{name}: values must have a first dim of length nnz, got a "
                               "0-d tensor")
    nnz, n_values = int(idx.shape[1]), int(vals.shape[0])
    if nnz != n_values:
        raise BadArgumentError(f"{name}: indices and values must have same nnz, but got nnz "
                               f"from indices: {nnz}, nnz from values: {n_values}")
    idx = idx.astype(xp.int64)
    sparse_dim, dense_shape = int(idx.shape[0]), tuple(vals.shape[1:])
    if nnz and sparse_dim:
        low = idx.min(axis=1)
        if bool((low < 0).any()):
            d = int(xp.argmax(low < 0))
            raise BadArgumentError(f"{name}: found negative index {int(low[d])} for dim {d}")
    if size is None:
        top = idx.max(axis=1) + 1 if nnz else xp.zeros(sparse_dim, xp.int64)
        shape = tuple(int(n) for n in top.tolist()) + dense_shape
    else:
        shape = tuple(int(n) for n in (size.shape if isinstance(size, Tensor) else size))
        if len(shape) != sparse_dim + len(dense_shape):
            raise BadArgumentError(
                f"{name}: number of dimensions must be sparse_dim ({sparse_dim}) + dense_dim "
                f"({len(dense_shape)}), but got {len(shape)} (size {shape})")
        if shape[sparse_dim:] != dense_shape:
            raise BadArgumentError(f"{name}: values has incorrect size, expected "
                                   f"{[n_values, *shape[sparse_dim:]]}, got {list(vals.shape)}")
        if nnz and sparse_dim:
            top = idx.max(axis=1)
            for d, (i, n) in enumerate(zip(top.tolist(), shape)):
                if i >= n:
                    raise BadArgumentError(f"{name}: size is inconsistent with indices: for dim "
                                           f"{d}, size is {n} but found index {i}")
    if is_coalesced:
        lin = _k.linear_index(idx, shape[:sparse_dim])
        if nnz > 1 and not bool((lin[1:] > lin[:-1]).all()):
            raise BadArgumentError(f"{name}: is_coalesced=True, but the indices are not sorted "
                                   "and unique")
    coalesced = bool(is_coalesced) or nnz <= 1
    if vals.requires_grad and autograd.is_grad_enabled() and not requires_grad:
        return FromValues.apply(vals, indices=idx, shape=shape, coalesced=coalesced)
    out = Tensor(SparseCOO(idx, vals.data, shape, coalesced))
    if requires_grad:
        out.requires_grad_(True)
    return out


# ---- conversions and parts --------------------------------------------------------------
class ToDense(Function):
    def forward(self, x):
        self.pattern = x
        return _k.to_dense(x)

    def backward(self, g):
        return _k.mask_like(g, self.pattern)

    def graph_backward(self, g, out):
        return MaskLike.apply(g, pattern=self.pattern)


class ToSparse(Function):
    def forward(self, x, sparse_dim):
        return _k.from_dense(x, sparse_dim)

    def backward(self, g):
        return _k.to_dense(g) if type(g) is SparseCOO else g

    def graph_backward(self, g, out):
        return g.to_dense()

    def name(self):
        return "ToSparseBackward"


class Coalesce(Function):
    def forward(self, x):
        return _k.coalesce(x)

    def backward(self, g):
        return g

    def graph_backward(self, g, out):
        return g


class Values(Function):
    def forward(self, x):
        self.pattern = x
        return x.values

    def backward(self, g):
        p = self.pattern
        return SparseCOO(p.indices, g, p.shape, p.coalesced)

    def graph_backward(self, g, out):
        p = self.pattern
        return FromValues.apply(g, indices=p.indices, shape=p.shape, coalesced=p.coalesced)


class SparseClone(Function):
    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return g

    def graph_backward(self, g, out):
        return g

    def name(self):
        return "CloneBackward"


class Scale(Function):
    """A sparse tensor times a number, or divided by one (``divide``: a true division, as
    torch's, not a product with the reciprocal; an integer tensor divided, or times a float,
    gives the default float dtype)."""

    def forward(self, x, factor, divide=False):
        self.factor, self.divide = factor, divide
        values = x.values
        if values.dtype.kind in "biu" and (divide or isinstance(factor, float) or (
                getattr(factor, "dtype", None) is not None and factor.dtype.kind == "f")):
            values = values.astype(default_float())
        with np.errstate(divide="ignore", invalid="ignore"):  # x / 0: inf and nan, as torch's
            return x.with_values(values / factor if divide else values * factor)

    def _scaled(self, g):
        with np.errstate(divide="ignore", invalid="ignore"):
            return g / self.factor if self.divide else g * self.factor

    def backward(self, g):
        if isinstance(g, SparseArray):
            return g.with_values(self._scaled(g.values))
        return self._scaled(g)

    def graph_backward(self, g, out):
        return g / self.factor if self.divide else g * self.factor


def to_dense(self, dtype=None, *, masked_grad=None):
    """The dense tensor of the same values (a dense tensor: itself); the gradient of a sparse
    input is sparse, on its coalesced pattern, as torch's."""
    if type(self.data) is not SparseCOO:
        return self if dtype is None else self.to(dtype)
    out = ToDense.apply(self)
    return out if dtype is None else out.to(dtype)


def to_sparse(self, sparse_dim=None, *, layout=None, blocksize=None, dense_dim=None):
    """The nonzero entries of this dense tensor as a coalesced sparse COO tensor; the first
    ``sparse_dim`` dims are sparse (all by default), the rest dense (a hybrid tensor)."""
    if layout not in (None, sparse_coo) or blocksize is not None:
        raise NotImplementedError(f"to_sparse: only layout=minidl.sparse_coo is supported, got "
                                  f"layout={layout}, blocksize={blocksize}")
    if type(self.data) is SparseCOO:
        if sparse_dim not in (None, self.data.sparse_dim):
            raise NotImplementedError("to_sparse: changing the sparse_dim of a sparse tensor is "
                                      "not supported")
        return self
    n = self.ndim
    if dense_dim is not None:
        sparse_dim = n - int(dense_dim) if sparse_dim is None else sparse_dim
    sparse_dim = n if sparse_dim is None else int(sparse_dim)
    if not 1 <= sparse_dim <= n:
        raise BadArgumentError(f"to_sparse: sparse_dim must be in 1..{n} for a tensor of "
                               f"shape {self.shape}, got {sparse_dim}")
    return ToSparse.apply(self, sparse_dim=sparse_dim)


def to_sparse_coo(self):
    return to_sparse(self)


def _uncoalesced_error(what):
    return RuntimeError(f"Cannot get {what} on an uncoalesced tensor, please call .coalesce() "
                        "first")


def indices(self):
    """The indices (sparse_dim x nnz) of a coalesced sparse tensor."""
    data = _need_sparse("indices", self)
    if not data.coalesced:
        raise _uncoalesced_error("indices")
    return Tensor(data.indices)


def values(self):
    """The values (nnz x dense dims) of a coalesced sparse tensor; their gradient reaches
    the sparse tensor (as a sparse gradient of its pattern)."""
    data = _need_sparse("values", self)
    if not data.coalesced:
        raise _uncoalesced_error("values")
    return Values.apply(self)


def _indices(self):
    """The indices as they are stored, coalesced or not."""
    return Tensor(_need_sparse("_indices", self).indices)


def _values(self):
    """The values as they are stored (not recorded in the graph)."""
    return Tensor(_need_sparse("_values", self).values)


def coalesce(self):
    """Entries sorted by index with repeats summed (this tensor where it is coalesced)."""
    data = _need_sparse("coalesce", self)
    if data.coalesced:
        return self
    return Coalesce.apply(self)


def is_coalesced(self):
    return _need_sparse("is_coalesced", self).coalesced


def _nnz(self):
    return _need_sparse("_nnz", self).nnz


def sparse_dim(self):
    return self.data.sparse_dim if type(self.data) is SparseCOO else 0


def dense_dim(self):
    return self.data.dense_dim if type(self.data) is SparseCOO else self.ndim


def _is_sparse_property(self):
    return type(self.data) is SparseCOO


def _layout_property(self):
    return sparse_coo if type(self.data) is SparseCOO else strided


# ---- products -----------------------------------------------------------------------------
class SparseMM(Function):
    """sparse (n, k) @ dense (k, m). The sparse input's gradient is sparse on its coalesced
    pattern (``masked``, torch.sparse.mm's) or dense (torch.mm's); the dense input's is
    a.T @ g."""

    def forward(self, a, b, masked):
        self.a, self.b, self.masked = a, b, masked
        return _k.mm(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        if input_needed(self, 0):
            if self.masked:
                p = _k.coalesce(a)
                rows, cols = p.indices
                ga = SparseCOO(p.indices, (g[rows] * b[cols]).sum(axis=-1), a.shape)
            else:
                ga = g @ b.T
        if input_needed(self, 1):
            gb = _k.mm_t(a, g)
        return ga, gb

    def graph_backward(self, g, out):
        a, b = self.inputs
        ga = gb = None
        if input_needed(self, 0):
            if self.masked:
                ga = SampledProduct.apply(g, b, pattern=_k.coalesce(a.data))
            else:
                ga = g @ b.t()
        if input_needed(self, 1):
            gb = SparseMM.apply(a.t(), g, masked=self.masked)
        return ga, gb


class SampledProduct(Function):
    """(g @ b.T) at a pattern's entries, as a sparse tensor: sparse.mm's gradient for its
    sparse input, as an op (for double backward)."""

    def forward(self, g, b, pattern):
        self.g, self.b, self.pattern = g, b, pattern
        rows, cols = pattern.indices
        return SparseCOO(pattern.indices, (g[rows] * b[cols]).sum(axis=-1), pattern.shape)

    def backward(self, h):
        g, b, p = self.g, self.b, self.pattern
        xp = get_array_module(g)
        hv = _k.lookup(h, p)[:, None]
        rows, cols = p.indices
        gg, gb = xp.zeros_like(g), xp.zeros_like(b)
        _k.scatter_add(gg, rows, hv * b[cols])
        _k.scatter_add(gb, cols, hv * g[rows])
        return gg, gb

    def graph_backward(self, h, out):
        g, b = self.inputs
        p = self.pattern
        hv = Lookup.apply(h, pattern=p)
        sampled = FromValues.apply(hv, indices=p.indices, shape=p.shape, coalesced=p.coalesced)
        return (SparseMM.apply(sampled, b, masked=True),
                SparseMM.apply(sampled.t(), g, masked=True))


def _check_mm(name, a, b):
    data = _need_sparse(name, a)
    if not isinstance(b, Tensor) or type(b.data) is SparseCOO:
        raise NotImplementedError(f"{name}: the second operand must be a dense tensor, got "
                                  f"{'a sparse one' if isinstance(b, Tensor) else type(b)}")
    if data.ndim != 2 or data.dense_dim or b.ndim != 2:
        raise BadArgumentError(f"{name}: expects a 2-D sparse matrix (no dense dims) and a "
                               f"2-D dense one, got shapes {data.shape} (dense_dim "
                               f"{data.dense_dim}) and {b.shape}")
    if data.shape[1] != b.shape[0]:
        raise BadArgumentError(f"{name}: shapes {data.shape} and {b.shape} cannot be "
                               f"multiplied ({data.shape[1]} columns, {b.shape[0]} rows)")
    if data.dtype != b.dtype:
        raise TypeError(f"{name}: expected both operands to have the same dtype, got "
                        f"{data.dtype} and {b.dtype}")


def mm(mat1, mat2, reduce="sum"):
    """torch.sparse.mm: sparse (n, k) @ dense (k, m) -> dense (n, m); mat1's gradient is
    sparse, on its coalesced pattern."""
    if _is_compressed(mat1):
        return compressed_forms["mm"](mat1, mat2, reduce)
    if reduce != "sum":
        raise NotImplementedError(f"sparse.mm: only reduce='sum' is supported, got {reduce!r}")
    _check_mm("sparse.mm", mat1, mat2)
    return SparseMM.apply(mat1, mat2, masked=True)


def addmm(mat, mat1, mat2, *, beta=1.0, alpha=1.0):
    """torch.sparse.addmm: beta * mat + alpha * (mat1 @ mat2), mat1 sparse (gradient as
    sparse.mm's)."""
    if _is_compressed(mat1):
        return compressed_forms["addmm"](mat, mat1, mat2, beta=beta, alpha=alpha)
    _check_mm("sparse.addmm", mat1, mat2)
    # beta = 0: mat is not read (its NaN does not reach the result), as torch's addmm
    return _scaled_sum(mat, SparseMM.apply(mat1, mat2, masked=True), beta, alpha)


def _matmul_form(a, b):
    """``a @ b`` / minidl.mm with a sparse first operand: dense, with a dense gradient for
    the sparse operand, as torch.mm's."""
    if not _is_sparse(a) or _is_sparse(b):
        raise NotImplementedError("matmul: of sparse operands only sparse @ dense (a 2-D "
                                  "sparse matrix times a 2-D dense one) is supported")
    _check_mm("mm", a, b)
    return SparseMM.apply(a, b, masked=False)


def smm(input, mat):
    """torch.smm: sparse @ dense, as a sparse tensor (its nonzero entries)."""
    out = to_sparse(mm(input, mat))
    out.data.coalesced = False  # sorted and unique, but flagged as torch flags it
    return out


def hspmm(mat1, mat2):
    """torch.hspmm: sparse @ dense as a hybrid sparse tensor whose rows are the rows of mat1
    that hold an entry (not differentiable)."""
    _check_mm("hspmm", mat1, mat2)
    if autograd.is_grad_enabled() and (mat1.requires_grad or mat2.requires_grad):
        raise NotImplementedError("hspmm: its gradient is not implemented in minidl; use "
                                  "sparse.mm")
    data = mat1.data
    xp = get_array_module(data.values)
    rows = xp.unique(data.indices[0])
    out = _k.mm(data, mat2.data)
    return Tensor(SparseCOO(rows[None].astype(xp.int64), out[rows],
                            (data.shape[0], mat2.shape[1])))  # flagged as torch flags it


# ---- reductions -----------------------------------------------------------------------------
def _dims(name, dim, n):
    if dim is None:
        return tuple(range(n))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -n <= d < n:
            raise autograd.DimError(f"{name}: dim {d} is out of range for a tensor of {n} dims")
        out.append(d % n)
    if len(set(out)) != len(out):
        raise BadArgumentError(f"{name}: dim {dims} names a dim more than once")
    return tuple(sorted(out))


class SparseSum(Function):
    """The sum over ``dims``: sparse where sparse dims remain, dense otherwise."""

    def forward(self, x, dims, whole):
        sd = x.sparse_dim
        self.whole = whole
        self.x = x
        self.keep = [d for d in range(sd) if d not in dims]
        self.dense_axes = tuple(d - sd + 1 for d in dims if d >= sd)
        values = x.values.sum(axis=self.dense_axes) if self.dense_axes else x.values
        self.shape = tuple(n for d, n in enumerate(x.shape) if d not in dims)
        if not self.keep:
            return values.sum(axis=0)
        return _k.coalesce(SparseCOO(x.indices[self.keep], values, self.shape))

    def backward(self, g):
        xp = get_array_module(self.x.values)
        p = _k.coalesce(self.x)
        if self.keep:
            at = SparseCOO(p.indices[self.keep], p.values, self.shape)
            gv = _k.lookup(g, at)
        else:
            gv = g[None]
        for axis in self.dense_axes:
            gv = xp.expand_dims(gv, axis)
        gv = xp.broadcast_to(gv, p.values.shape).astype(p.values.dtype)
        return SparseCOO(p.indices, gv, p.shape, coalesced=self.whole)  # torch's flags

    def graph_backward(self, g, out):
        p = _k.coalesce(self.x)
        if self.keep:
            gv = Lookup.apply(g, pattern=SparseCOO(p.indices[self.keep], p.values, self.shape))
        else:
            gv = g.reshape((1,) + tuple(g.shape))
        for axis in self.dense_axes:
            gv = gv.unsqueeze(axis)
        gv = gv.expand(*p.values.shape)
        return FromValues.apply(gv, indices=p.indices, shape=p.shape, coalesced=self.whole)

    def name(self):
        return "SparseSumBackward"


def sum(input, dim=None, dtype=None):  # noqa: A001  (torch.sparse.sum's name)
    """torch.sparse.sum: the sum of all elements (a dense 0-d tensor) or over ``dim`` (sparse
    where sparse dims remain); the gradient is sparse on the input's coalesced pattern."""
    data = _need_sparse("sparse.sum", input)
    if data.dtype == np.bool_ and not data.coalesced:
        # repeated entries of a bool tensor combine as True (or), not as a count: coalesced
        # first, as torch's sum of a bool sparse tensor
        input = coalesce(input)
    if dtype is not None:
        input = input.to(dtype)
    return SparseSum.apply(input, dims=_dims("sparse.sum", dim, data.ndim), whole=dim is None)


class SparseSoftmax(Function):
    """softmax (or log_softmax) over the specified entries along ``dim``: the entries that
    share every other sparse index form one group; a dense dim is taken as in dense softmax."""

    def forward(self, x, dim, log):
        p = _k.coalesce(x)
        xp = get_array_module(p.values)
        v, sd = p.values, p.sparse_dim
        self.log, self.pattern = log, p
        if dim >= sd:  # a dense dim of a hybrid tensor
            axis = dim - sd + 1
            self.segment = lambda a: a.sum(axis=axis, keepdims=True)
            shifted = v - v.max(axis=axis, keepdims=True)
        else:
            other = [d for d in range(sd) if d != dim]
            shape = [p.shape[d] for d in other]
            lin = _k.linear_index(p.indices[other], shape)
            _, group = xp.unique(lin, return_inverse=True)
            group = group.reshape(-1)
            count = int(group.max()) + 1 if len(group) else 0

            def segment(a):
                out = xp.zeros((count,) + a.shape[1:], dtype=a.dtype)
                _k.scatter_add(out, group, a)
                return out[group]
            self.segment = segment
            top = xp.full((count,) + v.shape[1:], -xp.inf, dtype=v.dtype)
            _k.scatter_max(top, group, v)
            shifted = v - top[group]
        e = xp.exp(shifted)
        total = self.segment(e)
        y = shifted - xp.log(total) if log else e / total
        self.y = y
        return SparseCOO(p.indices, y, p.shape, True)

    def backward(self, g):
        xp = get_array_module(self.y)
        gv = _k.lookup(g, self.pattern)
        y = self.y
        if self.log:
            gx = gv - xp.exp(y) * self.segment(gv)
        else:
            gx = y * (gv - self.segment(gv * y))
        return SparseCOO(self.pattern.indices, gx, self.pattern.shape)  # uncoalesced: torch's

    def name(self):
        return "SparseLogSoftmaxBackward" if self.log else "SparseSoftmaxBackward"


def _softmax(name, input, dim, dtype, log):
    if _is_compressed(input):  # torch has none for a compressed layout
        raise NotImplementedError(f"{name}: not supported for layout "
                                  f"{torch_layout_name(input.data.layout)} (torch has no "
                                  "softmax of a compressed sparse tensor); convert with "
                                  ".to_sparse() or .to_dense() first")
    data = _need_sparse(name, input)
    (d,) = _dims(name, dim, data.ndim)
    if dtype is not None:
        input = input.to(dtype)
    if not is_floating(input.dtype):
        raise TypeError(f"{name}: expected a floating-point tensor, got {input.dtype}")
    return SparseSoftmax.apply(input, dim=d, log=log)


def softmax(input, dim, dtype=None):
    """torch.sparse.softmax: softmax along ``dim`` over the specified entries only (an
    unspecified one counts as -inf, not 0); the result has the input's coalesced pattern."""
    return _softmax("sparse.softmax", input, dim, dtype, log=False)


def log_softmax(input, dim, dtype=None):
    """torch.sparse.log_softmax, over the specified entries as sparse.softmax."""
    return _softmax("sparse.log_softmax", input, dim, dtype, log=True)


# ---- the ops with a sparse form (Function.apply calls these on a sparse input) -------------
def _scalar_form(op):
    def form(a, b):
        if _is_sparse(a) and not _is_sparse(b) and b.ndim == 0 and not b.requires_grad:
            return Scale.apply(a, factor=b.data.item(), divide=op is Div)
        if op is Mul and _is_sparse(b) and not _is_sparse(a) and a.ndim == 0 \
                and not a.requires_grad:
            return Scale.apply(b, factor=a.data.item())
        raise NotImplementedError(
            f"{op.__name__}: of a sparse COO tensor only the product with (or division by) a "
            "number is supported; convert with .to_dense() first")
    return form


autograd.sparse_forms.update({MatMul: _matmul_form, Mul: _scalar_form(Mul),
                              Div: _scalar_form(Div),
                              Clone: lambda x, keep_layout=False: SparseClone.apply(x)})

for _name, _fn in {"to_dense": to_dense, "to_sparse": to_sparse, "to_sparse_coo": to_sparse_coo,
                   "indices": indices, "values": values, "_indices": _indices,
                   "_values": _values, "coalesce": coalesce, "is_coalesced": is_coalesced,
                   "_nnz": _nnz, "sparse_dim": sparse_dim, "dense_dim": dense_dim}.items():
    setattr(Tensor, _name, _fn)
_dense_zero_ = Tensor.zero_


def _zero_(self):
    """Zero in place; a sparse tensor keeps its shape and drops its entries, as torch's (an
    optimizer's zero_grad(set_to_none=False) of a sparse gradient)."""
    if type(self.data) is SparseCOO:
        self.data = _k.empty_like(self.data)
        return self
    return _dense_zero_(self)


_zero_.__doc__ = _dense_zero_.__doc__ or _zero_.__doc__
Tensor.zero_ = _zero_
Tensor.is_sparse = property(_is_sparse_property)
Tensor.layout = property(_layout_property)
