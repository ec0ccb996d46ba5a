"""Products, shape and scatter ops under PyTorch's names that products.py, shape_ops.py and
indexing.py do not have: tensordot, kron, addr, addbmm, vdot; diag_embed, diagflat,
broadcast_tensors, dstack, column_stack, atleast_3d, unique_consecutive,
split_with_sizes, sum_to_size; masked_scatter, fill_diagonal_, index_reduce and the
diagonal/select/slice_scatter family.

The products are compositions of matmul (so autocast runs them in the low dtype, as PyTorch's
tensordot and addbmm), the scatters one Function each (the input's gradient with the written
places zeroed, the source's what reaches those places). Tensor's methods are installed by
tensor.py from ``TENSOR_METHODS``; the in-place ones go through tensor.py's in-place rules.
"""
from __future__ import annotations

import numpy as np

from . import autograd
from .autograd import Function
from .backend import get_array_module
from .indexing import scatter_reduce
from .ops import (
    Cast, GetItem, GetItemGrad, Permute, Reshape, SetItem, _is_number, cat, keep_where,
    refuse_complex, result_type, where, wrap_dim,
)
from .pointwise import DtypeError, OpArgumentError, _check_tensor
from .products import Dot, _scaled_sum, bmm, counted_as, outer
from .shape_ops import _diagonal_positions, diag


# ---- products --------------------------------------------------------------------------------
def _dim_list(name, dims, ndim):
    if isinstance(dims, autograd.Tensor):
        dims = dims.tolist()
    if isinstance(dims, autograd.Tensor):
        dims = dims.tolist()  # a 0-d tensor is an int, a 2-row one a pair of lists
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        dims = [dims]
    if not isinstance(dims, (list, tuple)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"tensordot: dims must be an int or a pair of lists of ints, got "
                        f"{dims!r}")
    return [wrap_dim(d, ndim, name) for d in dims]


def tensordot(a, b, dims=2, out=None):
    """The sum of products over ``dims``: an int n (a's last n dims with b's first n) or a pair
    of lists (a's dims, b's dims); the result has a's remaining dims, then b's."""
    _check_tensor("tensordot", "a", a)
    _check_tensor("tensordot", "b", b)
    if out is not None:
        raise TypeError("tensordot: out= is not supported; use the returned tensor")
    if a.dtype != b.dtype:
        raise DtypeError(f"tensordot: both inputs should have the same dtype, got {a.dtype} "
                         f"and {b.dtype}")
    if isinstance(dims, autograd.Tensor):
        dims = dims.tolist()  # a 0-d tensor is an int, a 2-row one a pair of lists
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        if dims < 0:
            raise OpArgumentError(f"tensordot expects dims >= 0, but got dims={dims}")
        if dims > min(a.ndim, b.ndim):
            raise OpArgumentError(f"tensordot expects dims < ndim_a or ndim_b, but got "
                                  f"dims={dims}")
        da, db = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        if not isinstance(dims, (list, tuple)) or len(dims) != 2:
            raise TypeError(f"tensordot: dims must be an int or a pair of lists, got {dims!r}")
        da, db = _dim_list("tensordot", dims[0], a.ndim), _dim_list("tensordot", dims[1], b.ndim)
        if len(da) != len(db):
            raise OpArgumentError(f"tensordot: both dim lists should have the same length, got "
                                  f"{len(da)} and {len(db)}")
    for i, j in zip(da, db):
        if a.shape[i] != b.shape[j]:
            raise OpArgumentError(f"tensordot: contracted dimensions need to match, but first "
                                  f"has size {a.shape[i]} in dim {i} and second has size "
                                  f"{b.shape[j]} in dim {j}")
    free_a = [i for i in range(a.ndim) if i not in da]
    free_b = [j for j in range(b.ndim) if j not in db]
    k = int(np.prod([a.shape[i] for i in da], dtype=np.int64))
    left = a.permute(*(free_a + da)).reshape(-1, k)
    right = b.permute(*(db + free_b)).reshape(k, -1)
    shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[j] for j in free_b)
    return left.matmul(right).reshape(shape)


def kron(input, other):
    """The Kronecker product: block (i, j, ...) is ``input[i, j, ...] * other``."""
    _check_tensor("kron", "input", input)
    _check_tensor("kron", "other", other)
    nd = max(input.ndim, other.ndim)
    sa = (1,) * (nd - input.ndim) + input.shape
    sb = (1,) * (nd - other.ndim) + other.shape
    a = input.reshape(tuple(x for n in sa for x in (n, 1)))
    b = other.reshape(tuple(x for n in sb for x in (1, n)))
    return (a * b).reshape(tuple(m * n for m, n in zip(sa, sb)))


def addr(input, vec1, vec2, *, beta=1, alpha=1):
    """``beta * input + alpha * outer(vec1, vec2)`` (input broadcast)."""
    for what, v in (("vec1", vec1), ("vec2", vec2)):
        _check_tensor("addr", what, v)
        if v.ndim != 1:
            raise OpArgumentError(f"addr: {what} must be a 1-d vector, got shape {v.shape}")
    if isinstance(input, autograd.Tensor) and result_type(input, vec1, vec2).kind in "biu":
        for what, n in (("beta", beta), ("alpha", alpha)):
            if isinstance(n, float):
                raise OpArgumentError(f"addr: for integral input tensors, argument {what} must "
                                      f"not be a floating point number, got {n}")
    return _scaled_sum(input, outer(vec1, vec2), beta, alpha)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """``beta * input + alpha * sum_b batch1[b] @ batch2[b]``."""
    # torch has no FLOP formula for addbmm's forward (its backward runs bmm)
    return _scaled_sum(input, counted_as(None, True, bmm, batch1, batch2).sum(0), beta, alpha)


def vdot(input, other):
    """The dot product of two 1-d tensors, the first conjugated (for real tensors,
    torch.vdot is torch.dot)."""
    _check_tensor("vdot", "input", input)
    _check_tensor("vdot", "other", other)
    if input.ndim != 1 or other.ndim != 1:
        raise OpArgumentError(f"vdot: 1D tensors expected, but got {input.ndim}D and "
                              f"{other.ndim}D tensors")
    if input.shape != other.shape:
        raise OpArgumentError(f"vdot: sizes differ: {input.shape[0]} and {other.shape[0]}")
    if input.dtype != other.dtype:
        raise DtypeError(f"vdot: expected both vectors to have the same dtype, but found "
                         f"{input.dtype} and {other.dtype}")
    if input.dtype.kind == "c":  # the first vector conjugated
        from .complex_ops import conj

        input = conj(input)
    return Dot.apply(input, other)


# ---- diagonals -------------------------------------------------------------------------------
class DiagEmbedDims(Function):
    """Matrices in dims (dim1, dim2) of the output with ``a``'s last dim on diagonal
    ``offset``; the other dims are a's leading ones."""

    complex_grad = True

    def forward(self, a, offset, dim1, dim2):
        xp = get_array_module(a)
        n = a.shape[-1] + abs(offset)
        out = xp.zeros(a.shape[:-1] + (n, n), dtype=a.dtype)
        self.where = _diagonal_positions(xp, n, n, offset)
        self.dims = (dim1, dim2)
        out[(Ellipsis,) + self.where] = a
        return xp.moveaxis(out, (-2, -1), self.dims)

    def backward(self, g):
        xp = get_array_module(g)
        return xp.moveaxis(g, self.dims, (-2, -1))[(Ellipsis,) + self.where]

    def graph_backward(self, g, out):
        # the matrix dims moved last (moveaxis keeps the others in order), then the diagonal
        axes = tuple(i for i in range(g.ndim) if i not in self.dims) + self.dims
        return GetItem.apply(Permute.apply(g, axes=axes), index=(Ellipsis,) + self.where)


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """Matrices (in dims dim1, dim2 of the result) with the last dim of ``input`` on their
    diagonal ``offset``."""
    _check_tensor("diag_embed", "input", input)
    x = input
    d1, d2 = wrap_dim(dim1, x.ndim + 1, "diag_embed"), wrap_dim(dim2, x.ndim + 1, "diag_embed")
    if d1 == d2:
        raise OpArgumentError(f"diag_embed: diagonal dimensions cannot be identical {dim1}, "
                              f"{dim2}")
    return DiagEmbedDims.apply(x, offset=int(offset), dim1=d1, dim2=d2)


def diagflat(input, offset=0):
    """The square matrix with the flattened ``input`` on its diagonal ``offset``."""
    _check_tensor("diagflat", "input", input)
    return diag(input.reshape(-1), offset)


def _scatter_into(name, input, src, index, target_shape):
    _check_tensor(name, "input", input)
    _check_tensor(name, "src", src)
    if tuple(src.shape) != tuple(target_shape):
        raise OpArgumentError(f"{name}: expected src to have a size equal to the slice of self. "
                              f"src size = {list(src.shape)}, slice size = {list(target_shape)}")
    if src.dtype != input.dtype:
        src = Cast.apply(src, dtype=input.dtype)
    return SetItem.apply(input, src, index=index)


def diagonal_scatter(input, src, offset=0, dim1=0, dim2=1):
    """A copy of ``input`` with ``src`` as its diagonal ``offset`` of dims (dim1, dim2) (src is
    shaped as ``input.diagonal(offset, dim1, dim2)``)."""
    _check_tensor("diagonal_scatter", "input", input)
    if input.ndim < 2:
        raise OpArgumentError(f"diagonal_scatter: needs at least 2 dims, got shape "
                              f"{input.shape}")
    d1 = wrap_dim(dim1, input.ndim, "diagonal_scatter")
    d2 = wrap_dim(dim2, input.ndim, "diagonal_scatter")
    if d1 == d2:
        raise OpArgumentError(f"diagonal_scatter: dim1 and dim2 are the same dim ({dim1}, "
                              f"{dim2})")
    xp = get_array_module(input.data)
    rows, cols = _diagonal_positions(xp, input.shape[d1], input.shape[d2], int(offset))
    index = [slice(None)] * input.ndim
    index[d1], index[d2] = rows, cols
    rest = [n for i, n in enumerate(input.shape) if i not in (d1, d2)]
    _check_tensor("diagonal_scatter", "src", src)
    if tuple(src.shape) != tuple(rest + [len(rows)]):
        raise OpArgumentError(f"diagonal_scatter: expected src to have a size equal to the slice "
                              f"of self. src size = {list(src.shape)}, slice size = "
                              f"{rest + [len(rows)]}")
    # NumPy puts the diagonal's dim where the two indexed dims were when they are neighbours,
    # first otherwise
    where_diag = min(d1, d2) if abs(d1 - d2) == 1 else 0
    moved = src.movedim(-1, where_diag)
    return _scatter_into("diagonal_scatter", input, moved, tuple(index), moved.shape)


def select_scatter(input, src, dim, index):
    """A copy of ``input`` with ``src`` as its slice at ``index`` along ``dim``."""
    _check_tensor("select_scatter", "input", input)
    d = wrap_dim(dim, input.ndim, "select_scatter")
    n = input.shape[d]
    if not -n <= index < n:
        raise IndexError(f"select_scatter: index {index} out of range for dimension {dim} of "
                         f"size {n}")
    where = (slice(None),) * d + (int(index) % n,)
    shape = input.shape[:d] + input.shape[d + 1:]
    return _scatter_into("select_scatter", input, src, where, shape)


def slice_scatter(input, src, dim=0, start=None, end=None, step=1):
    """A copy of ``input`` with ``src`` as its slice ``start:end:step`` along ``dim``."""
    _check_tensor("slice_scatter", "input", input)
    d = wrap_dim(dim, input.ndim, "slice_scatter")
    if step is None:
        step = 1
    if step <= 0:
        raise OpArgumentError(f"slice_scatter: step must be positive, got {step}")
    where = (slice(None),) * d + (slice(start, end, step),)
    shape = np.empty(input.shape, dtype=np.uint8)[where].shape
    return _scatter_into("slice_scatter", input, src, where, shape)


# ---- stacking, broadcasting, splitting -------------------------------------------------------
def broadcast_shapes(*shapes):
    """The shape that tensors of ``shapes`` broadcast to (an int n is the shape (n,)), as
    torch.broadcast_shapes; shapes that do not broadcast raise."""
    dims = []
    for s in shapes:
        s = (s,) if isinstance(s, (int, np.integer)) and not isinstance(s, bool) else s
        if not isinstance(s, (tuple, list)) or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in s):
            raise TypeError(f"broadcast_shapes: expected shapes (tuples of ints) or ints, got "
                            f"{s!r}")
        if any(n < 0 for n in s):
            raise OpArgumentError(f"broadcast_shapes: trying to create a shape with a negative "
                                  f"dimension: {tuple(s)}")
        dims.append(tuple(int(n) for n in s))
    try:
        return tuple(np.broadcast_shapes(*dims))
    except ValueError:
        raise OpArgumentError(f"broadcast_shapes: shapes {dims} do not broadcast") from None


def broadcast_tensors(*tensors):
    """The tensors expanded to their common broadcast shape (views, as torch's)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    for i, t in enumerate(tensors):
        _check_tensor("broadcast_tensors", f"tensors[{i}]", t)
    try:
        shape = np.broadcast_shapes(*[t.shape for t in tensors])
    except ValueError:
        raise OpArgumentError(f"broadcast_tensors: shapes {[t.shape for t in tensors]} do not "
                              "broadcast") from None
    return tuple(t if t.shape == shape else t.expand(shape) for t in tensors)


def atleast_3d(*tensors):
    """Each tensor with at least 3 dims: () -> (1, 1, 1), (n,) -> (1, n, 1), (m, n) ->
    (m, n, 1)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        return tuple(atleast_3d(t) for t in tensors[0])
    if len(tensors) > 1:
        return tuple(atleast_3d(t) for t in tensors)
    (t,) = tensors
    _check_tensor("atleast_3d", "input", t)
    if t.ndim == 0:
        return t.reshape(1, 1, 1)
    if t.ndim == 1:
        return t.reshape(1, -1, 1)
    if t.ndim == 2:
        return t.unsqueeze(-1)
    return t


def _tensor_list(name, tensors):
    if isinstance(tensors, autograd.Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{name}(): argument 'tensors' must be a sequence of Tensors, got "
                        f"{type(tensors).__name__}")
    if not tensors:
        raise OpArgumentError(f"{name}(): expects a non-empty sequence of tensors")
    for i, t in enumerate(tensors):
        _check_tensor(name, f"tensors[{i}]", t)
    return list(tensors)


def dstack(tensors):
    """Tensors stacked depth-wise: along dim 2 after atleast_3d."""
    return cat([atleast_3d(t) for t in _tensor_list("dstack", tensors)], 2)


def column_stack(tensors):
    """Tensors side by side as columns: 0-d and 1-d ones become (n, 1) columns, then dim 1."""
    ts = _tensor_list("column_stack", tensors)
    return cat([t.reshape(-1, 1) if t.ndim <= 1 else t for t in ts], 1)


def split_with_sizes(input, split_sizes, dim=0):
    """Pieces of the sizes listed (which must add up to the size of ``dim``)."""
    _check_tensor("split_with_sizes", "input", input)
    if input.ndim == 0:
        raise OpArgumentError("split_with_sizes: split expects at least a 1-dimensional tensor")
    d = wrap_dim(dim, input.ndim, "split_with_sizes")
    sizes = [int(s) for s in split_sizes]
    if any(s < 0 for s in sizes) or sum(sizes) != input.shape[d]:
        raise OpArgumentError(f"split_with_sizes expects split_sizes to sum exactly to "
                              f"{input.shape[d]} (input tensor's size at dimension {dim}), but "
                              f"got split_sizes={sizes}")
    out, start = [], 0
    for s in sizes:
        out.append(input.narrow(d, start, s))
        start += s
    return tuple(out)


def sum_to_size(input, *size):
    """``input`` summed down to ``size`` (a shape it broadcasts from), as autograd reduces a
    broadcast gradient."""
    _check_tensor("sum_to_size", "input", input)
    if len(size) == 1 and isinstance(size[0], (list, tuple)):
        size = tuple(size[0])
    size = tuple(int(n) for n in size)
    lead = input.ndim - len(size)
    if lead < 0 or any(n != 1 and n != m for n, m in zip(size, input.shape[lead:])):
        raise OpArgumentError(f"sum_to_size: size {list(size)} is not expandable to size "
                              f"{list(input.shape)}")
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(size)
                                      if n == 1 and input.shape[lead + i] != 1)
    if not axes:
        return input
    return input.sum(dim=axes, keepdim=True).reshape(size)


# ---- unique_consecutive ----------------------------------------------------------------------
def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """Each run of equal consecutive elements (slices along ``dim``) kept once; optionally the
    run each element belongs to (inverse) and the runs' lengths (counts), as torch's."""
    if isinstance(input, autograd.Tensor):
        refuse_complex("unique_consecutive", input.data)
    _check_tensor("unique_consecutive", "input", input)
    xp = get_array_module(input.data)
    if dim is None:
        rows = input.data.reshape(-1, 1)
        d = 0
    else:
        d = wrap_dim(dim, input.ndim, "unique_consecutive")
        if input.numel() == 0 and input.shape[d] != 0:
            raise OpArgumentError(f"unique_consecutive: there are 0 sized dimensions in shape "
                                  f"{tuple(input.shape)} and they aren't selected (dim={dim}), "
                                  "so unique cannot be applied")
        rows = xp.moveaxis(input.data, d, 0)
        rows = rows.reshape(rows.shape[0], int(np.prod(rows.shape[1:], dtype=np.int64)))
    n = rows.shape[0]
    starts = xp.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = (rows[1:] != rows[:-1]).any(axis=1) if rows.shape[1] else False
    if dim is None:
        values = input.data.reshape(-1)[starts]
    else:
        values = xp.moveaxis(xp.moveaxis(input.data, d, 0)[starts], 0, d)
    out = [autograd.Tensor(xp.ascontiguousarray(values))]
    if return_inverse:
        inverse = (xp.cumsum(starts) - 1).astype(np.int64)
        out.append(autograd.Tensor(inverse.reshape(input.shape) if dim is None else inverse))
    if return_counts:
        first = xp.nonzero(starts)[0]
        ends = xp.concatenate([first[1:], xp.asarray([n], dtype=first.dtype)])
        out.append(autograd.Tensor((ends - first).astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


# ---- masked_scatter, fill_diagonal_, index_reduce --------------------------------------------
class MaskedScatter(Function):
    """A copy of ``a`` with ``source``'s first elements, in order, where ``mask`` holds. The
    gradient: ``a``'s with those places zeroed, ``source``'s what reaches its used elements."""

    complex_grad = True

    def forward(self, a, source, mask, k):
        self.mask, self.source_shape, self.k = mask, source.shape, k
        xp = get_array_module(a)
        flat = source.reshape(-1)
        if flat.size == 0:
            return a.copy()
        # each True takes the source element of its rank among the Trues: positions from a
        # cumulative sum, so the GPU needs no host copy of the mask
        pos = xp.minimum(xp.cumsum(mask.reshape(-1)) - 1, flat.size - 1).reshape(mask.shape)
        return xp.where(mask, flat[xp.maximum(pos, 0)], a)

    def backward(self, g):
        xp = get_array_module(g)
        ga = xp.where(self.mask, xp.zeros((), g.dtype), g)
        gs = xp.zeros(int(np.prod(self.source_shape, dtype=np.int64)), dtype=g.dtype)
        gs[:self.k] = g.reshape(-1)[self.mask.reshape(-1)]
        return ga, gs.reshape(self.source_shape)

    def graph_backward(self, g, out):
        ga = keep_where(~self.mask, g)
        used = GetItem.apply(Reshape.apply(g, shape=(-1,)), index=self.mask.reshape(-1))
        size = int(np.prod(self.source_shape, dtype=np.int64))
        if size != self.k:
            used = GetItemGrad.apply(used, shape=(size,), index=(slice(0, self.k),))
        return ga, Reshape.apply(used, shape=self.source_shape)


def masked_scatter(input, mask, source):
    """``input`` with the elements of ``source``, in order, written where ``mask`` (a bool
    tensor broadcast to input's shape) holds."""
    _check_tensor("masked_scatter", "input", input)
    _check_tensor("masked_scatter", "mask", mask)
    _check_tensor("masked_scatter", "source", source)
    if mask.dtype != np.bool_:
        raise DtypeError(f"masked_scatter: only supports boolean masks, but got mask with dtype "
                         f"{mask.dtype}")
    if source.dtype != input.dtype:
        raise DtypeError(f"masked_scatter: expected self and source to have the same dtype, but "
                         f"got {input.dtype} and {source.dtype}")
    try:
        shape = np.broadcast_shapes(input.shape, mask.shape)
    except ValueError:
        raise OpArgumentError(f"masked_scatter: mask of shape {mask.shape} does not broadcast "
                              f"with input of shape {input.shape}") from None
    xp = get_array_module(input.data)
    m = xp.broadcast_to(mask.data, shape)
    k = int(m.sum())  # the one host copy: checked here as PyTorch does
    if k > source.numel():
        raise OpArgumentError(f"masked_scatter: number of elements of source ({source.numel()}) "
                              f"< number of ones in mask ({k})")
    x = input if input.shape == shape else input.expand(shape)
    return MaskedScatter.apply(x, source, mask=xp.array(m), k=k)  # a copy, 0-d stays 0-d


def _masked_scatter_(self, mask, source):
    from .tensor import _inplace_by

    return _inplace_by(self, "masked_scatter_", lambda t, s: masked_scatter(t, mask, s), source)


def _diagonal_mask(name, shape, wrap, xp):
    if len(shape) < 2:
        raise OpArgumentError(f"{name}: dimensions must be larger than 1, got shape {shape}")
    if len(shape) > 2 and len(set(shape)) != 1:
        raise OpArgumentError(f"{name}: all dimensions of input must be of equal length, got "
                              f"shape {shape}")
    size = int(np.prod(shape, dtype=np.int64))
    mask = np.zeros(size, dtype=bool)
    if len(shape) == 2:
        rows, cols = shape
        end = size if wrap else min(rows, cols) * cols
        mask[:end:cols + 1] = True
    else:
        n = shape[0]
        step = sum(n ** k for k in range(len(shape)))
        mask[::step] = True
    mask = mask.reshape(shape)
    return mask if xp is np else xp.asarray(mask)


def _fill_diagonal_(self, fill_value, wrap=False):
    """The main diagonal set to ``fill_value`` in place; a tall matrix with ``wrap`` starts
    the diagonal again every ``columns + 1`` rows, as torch's."""
    from .tensor import _inplace_by

    if not _is_number(fill_value):
        raise TypeError(f"fill_diagonal_: fill_value must be a number, got "
                        f"{type(fill_value).__name__}")
    mask = autograd.Tensor(_diagonal_mask("fill_diagonal_", self.shape, bool(wrap),
                                          get_array_module(self.data)))

    def fill(t, _):
        value = fill_value
        if t.dtype.kind in "iub":
            value = t.dtype.type(int(value) if t.dtype.kind != "b" else bool(value))
        return where(mask, autograd.Tensor(get_array_module(t.data).asarray(value, t.dtype)), t)
    return _inplace_by(self, "fill_diagonal_", fill)


_REDUCTIONS = ("prod", "mean", "amax", "amin")


def index_reduce(input, dim, index, source, reduce, *, include_self=True):
    """A copy of ``input`` with the slices of ``source`` reduced ('prod', 'mean', 'amax',
    'amin') into the slices at ``index`` along ``dim``."""
    _check_tensor("index_reduce", "input", input)
    _check_tensor("index_reduce", "index", index)
    _check_tensor("index_reduce", "source", source)
    if reduce not in _REDUCTIONS:
        raise OpArgumentError(f"index_reduce: reduce argument must be either prod, mean, amax or "
                              f"amin, got {reduce!r}")
    if index.ndim > 1 or index.dtype.kind not in "iu":
        raise OpArgumentError(f"index_reduce: index must be a 1-d integer tensor, got shape "
                              f"{index.shape} and dtype {index.dtype}")
    d = wrap_dim(dim, input.ndim, "index_reduce")
    if source.ndim != input.ndim and not (input.ndim == 0 and source.ndim <= 1):
        raise OpArgumentError(f"index_reduce: source has {source.ndim} dims, input "
                              f"{input.ndim}; they must match")
    expected = input.shape[:d] + (index.numel(),) + input.shape[d + 1:] if input.ndim else None
    if expected is not None and source.shape != expected:
        raise OpArgumentError(f"index_reduce: source of shape {source.shape} does not fit index "
                              f"of {index.numel()} elements into input {input.shape} along dim "
                              f"{dim} (expected {expected})")
    xp = get_array_module(input.data)
    idx = index.data.reshape(-1).astype(np.int64)
    shape = [1] * max(input.ndim, 1)
    shape[d] = -1
    grid = xp.broadcast_to(idx.reshape(shape), source.shape if source.ndim else (1,))
    return scatter_reduce(input, d, autograd.Tensor(xp.ascontiguousarray(grid)),
                          source if source.ndim else source.reshape(1), reduce,
                          include_self=include_self)


def _index_reduce_(self, dim, index, source, reduce, *, include_self=True):
    from .tensor import _inplace_by

    return _inplace_by(self, "index_reduce_", lambda t, s: index_reduce(
        t, dim, index, s, reduce, include_self=include_self), source)


def _addr_(self, vec1, vec2, *, beta=1, alpha=1):
    from .tensor import _inplace_by

    return _inplace_by(self, "addr_", lambda t, _: addr(t, vec1, vec2, beta=beta, alpha=alpha),
                       vec1 if vec1.requires_grad else vec2)


def _addbmm_(self, batch1, batch2, *, beta=1, alpha=1):
    from .tensor import _inplace_by

    return _inplace_by(self, "addbmm_", lambda t, _: addbmm(t, batch1, batch2, beta=beta,
                                                            alpha=alpha),
                       batch1 if batch1.requires_grad else batch2)


TENSOR_METHODS = {
    "addr_": _addr_, "addbmm_": _addbmm_,
    "kron": kron, "addr": addr, "addbmm": addbmm, "vdot": vdot,
    "diag_embed": diag_embed, "diagflat": diagflat, "diagonal_scatter": diagonal_scatter,
    "select_scatter": select_scatter, "slice_scatter": slice_scatter,
    "unique_consecutive": unique_consecutive, "split_with_sizes": split_with_sizes,
    "sum_to_size": sum_to_size, "masked_scatter": masked_scatter,
    "masked_scatter_": _masked_scatter_, "fill_diagonal_": _fill_diagonal_,
    "index_reduce": index_reduce, "index_reduce_": _index_reduce_,
}
FUNCTIONS = {name: fn for name, fn in TENSOR_METHODS.items()
             if name not in ("sum_to_size", "masked_scatter_", "fill_diagonal_",
                             "index_reduce_", "addr_", "addbmm_")}
FUNCTIONS.update({"broadcast_shapes": broadcast_shapes})
FUNCTIONS.update({"tensordot": tensordot, "broadcast_tensors": broadcast_tensors, "atleast_3d": atleast_3d,
                  "dstack": dstack, "column_stack": column_stack})
