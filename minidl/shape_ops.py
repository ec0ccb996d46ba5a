"""Ordering and shape ops under PyTorch's names: sort, argsort, flip, roll, tril, triu, diag,
diagonal, narrow, unbind, movedim, swapaxes/swapdims, unflatten, view_as, reshape_as,
contiguous, tile, and the ``new_*`` factories (a tensor of ``self``'s dtype and device).

One Function per differentiable op (forward and backward side by side); ops that are a
reshape, a permute or a slice reuse those of ops.py, so they share their gradients. Tensor's
methods are installed by tensor.py from ``TENSOR_METHODS``; this module imports only
``backend``, ``autograd``, ``ops`` and ``indexing``.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import autograd
from .autograd import DimError, Function
from .backend import device_of, get_array_module, to_numpy
from .backend.dtypes import as_dtype, default_float, is_floating
from .ops import (
    BadArgumentError, Cast, GetItem, Repeat, Reshape, TakeAlongDim, UnsupportedDtypeError,
    _sizes, _tied, constant, repeat_sizes, result_type, sizes_or_keyword, stack, torch_order,
    Untracked, refuse_complex, refuse_unsigned, traces_untracked, wrap_dim,
)
from .ops import fill_value as _fill_value
from .ops import mark_multi_view

SortResult = namedtuple("SortResult", ["values", "indices"])  # as torch.return_types.sort


def _argsort(data, d, descending, stable):
    """Indices that sort ``data`` along ``d``. NaN sorts as the largest, as in PyTorch; a
    stable descending sort keeps equal values in their order (sorting the reversed array
    ascending, then reversing the result). Not ``stable``, equal values come in the order
    PyTorch's CPU sort (std::sort) leaves them, which differs from the stable one in slices
    longer than 16 (shorter ones it insertion-sorts)."""
    xp = get_array_module(data)
    kind = {"kind": "stable"} if xp is np else {}
    if not descending:
        order = xp.argsort(data, axis=d, **kind)
    else:
        n = data.shape[d]
        order = n - 1 - xp.flip(xp.argsort(xp.flip(data, axis=d), axis=d, **kind), axis=d)
    if not stable and xp is np and data.ndim and data.shape[d] > 16:
        tied = _tied(np.take_along_axis(data, order, axis=d), d)
        if tied.any():
            order = np.array(order, dtype=np.int64)
            torch_order("sort", order, data, d, tied, bool(descending))
    return order


def sort(input, dim=-1, descending=False, stable=False):
    """(values, indices) of ``input`` sorted along ``dim``; values keep the gradient. The sort
    is always stable (``stable`` is accepted)."""
    refuse_complex("sort", input.data)
    d = wrap_dim(dim, input.ndim, "sort")
    if input.ndim == 0:
        xp = get_array_module(input.data)
        return SortResult(Reshape.apply(input, shape=()), autograd.Tensor(xp.zeros((), np.int64)))
    if traces_untracked():  # the indices a recorded op, so that the exporter sees them
        indices = SortIndices.apply(input, dim=d, descending=bool(descending), stable=bool(stable))
        return SortResult(TakeAlongDim.apply(input, index=indices.data, dim=d), indices)
    order = _argsort(input.data, d, descending, stable).astype(np.int64, copy=False)
    return SortResult(TakeAlongDim.apply(input, index=order, dim=d), autograd.Tensor(order))


class SortIndices(Untracked):
    """sort's and argsort's int64 indices as a recorded op, for a tracer that asks for it (the
    ONNX exporter's; see ops.Compare)."""

    def forward(self, x, dim, descending, stable):
        return _argsort(x, dim, descending, stable).astype(np.int64)


def argsort(input, dim=-1, descending=False, stable=False):
    """The int64 indices that sort ``input`` along ``dim``."""
    refuse_complex("argsort", input.data)
    d = wrap_dim(dim, input.ndim, "argsort")
    xp = get_array_module(input.data)
    if input.ndim == 0:
        return autograd.Tensor(xp.zeros((), np.int64))
    if traces_untracked():
        return SortIndices.apply(input, dim=d, descending=bool(descending), stable=bool(stable))
    return autograd.Tensor(_argsort(input.data, d, descending, stable).astype(np.int64,
                                                                              copy=False))


def _dims(name, dims, ndim):
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        dims = (dims,)
    if not isinstance(dims, (tuple, list)):
        raise TypeError(f"{name}: dims must be an int or a tuple of ints, got "
                        f"{type(dims).__name__}")
    out = tuple(wrap_dim(d, ndim, name) for d in dims)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: dim appears more than once in {tuple(dims)}")
    return out


class Flip(Function):
    complex_grad = True

    def forward(self, a, axes):
        self.axes = axes
        return get_array_module(a).flip(a, axis=axes).copy()

    def backward(self, g):
        return get_array_module(g).flip(g, axis=self.axes)

    def graph_backward(self, g, out):
        return Flip.apply(g, axes=self.axes)


def flip(input, *dims, **by_name):
    """``input`` reversed along each of ``dims`` (a copy, as PyTorch's): ``flip(x, (0, 1))``,
    ``x.flip(0, 1)``, ``flip(x, dims=(0,))``."""
    dims = sizes_or_keyword("flip", dims, by_name, "dims")
    if len(dims) == 1:
        dims = dims[0]
    axes = _dims("flip", dims, input.ndim)
    if input.ndim == 0 or not axes:
        return Reshape.apply(input, shape=input.shape)
    return Flip.apply(input, axes=axes)


def fliplr(input):
    if input.ndim < 2:
        raise ValueError(f"fliplr: needs at least 2 dims, got shape {input.shape}")
    return flip(input, (1,))


def flipud(input):
    if input.ndim < 1:
        raise ValueError("flipud: needs at least 1 dim, got a 0-d tensor")
    return flip(input, (0,))


class Roll(Function):
    complex_grad = True

    def forward(self, a, shifts, axes):
        self.shifts, self.axes = shifts, axes
        return get_array_module(a).roll(a, shifts, axis=axes)

    def backward(self, g):
        return get_array_module(g).roll(g, tuple(-s for s in self.shifts), axis=self.axes)

    def graph_backward(self, g, out):
        return Roll.apply(g, shifts=tuple(-s for s in self.shifts), axes=self.axes)


def roll(input, shifts, dims=None):
    """``input`` shifted circularly by ``shifts`` along ``dims`` (flattened when dims is None)."""
    shifts = _sizes("roll", (shifts,) if not isinstance(shifts, (tuple, list)) else (shifts,))
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"roll: {len(shifts)} shifts {shifts} without dims; pass one shift "
                             "to roll the flattened tensor, or dims")
        flat = Reshape.apply(input, shape=(-1,))
        return Reshape.apply(Roll.apply(flat, shifts=shifts, axes=(0,)), shape=input.shape)
    axes = tuple(wrap_dim(d, input.ndim, "roll") for d in
                 (dims if isinstance(dims, (tuple, list)) else (dims,)))
    if len(axes) != len(shifts):
        raise ValueError(f"roll: shifts {shifts} and dims {tuple(axes)} must have the same length")
    if input.ndim == 0:
        return Reshape.apply(input, shape=())
    return Roll.apply(input, shifts=shifts, axes=axes)


class Triangle(Function):
    """The lower (upper) triangle of the last two dims, from ``diagonal`` on; the gradient
    is the incoming one's same triangle."""

    complex_grad = True

    def forward(self, a, diagonal, upper):
        self.diagonal, self.upper = diagonal, upper
        xp = get_array_module(a)
        return xp.triu(a, diagonal) if upper else xp.tril(a, diagonal)

    def backward(self, g):
        xp = get_array_module(g)
        return xp.triu(g, self.diagonal) if self.upper else xp.tril(g, self.diagonal)

    def graph_backward(self, g, out):
        return Triangle.apply(g, diagonal=self.diagonal, upper=self.upper)


def _triangle(name, input, diagonal, upper):
    refuse_unsigned(input.data.dtype, name)  # uint16/32/64: no kernel in torch
    if input.ndim < 2:
        raise BadArgumentError(f"{name}: needs a tensor of at least 2 dims (a matrix or a batch of "
                         f"them), got shape {input.shape}")
    if isinstance(diagonal, bool) or not isinstance(diagonal, (int, np.integer)):
        raise TypeError(f"{name}: diagonal must be an int, got {type(diagonal).__name__}")
    return Triangle.apply(input, diagonal=int(diagonal), upper=upper)


def tril(input, diagonal=0):
    """The lower triangle (elements on and below ``diagonal``) of the last two dims."""
    return _triangle("tril", input, diagonal, upper=False)


def triu(input, diagonal=0):
    """The upper triangle (elements on and above ``diagonal``) of the last two dims."""
    return _triangle("triu", input, diagonal, upper=True)


def _diagonal_positions(xp, rows, cols, offset):
    n = max(0, min(rows + min(offset, 0), cols - max(offset, 0)))
    i = xp.arange(n)
    return i - min(offset, 0), i + max(offset, 0)


class Diagonal(Function):
    """The elements ``a[..., i, i + offset]`` of dims (dim1, dim2), as a new last dim."""

    complex_grad = True

    def forward(self, a, offset, dim1, dim2, view=False):
        self.shape, self.args = a.shape, (offset, dim1, dim2)
        out = get_array_module(a).diagonal(a, offset, dim1, dim2)
        if not view:
            return out.copy()
        if type(out) is np.ndarray and a.flags.writeable:
            out.flags.writeable = True  # NumPy's diagonal is a read-only view; torch's writes
        return out

    def backward(self, g):
        return DiagonalGrad().forward(g, self.shape, self.args)

    def graph_backward(self, g, out):
        return DiagonalGrad.apply(g, shape=self.shape, args=self.args)


class DiagonalGrad(Function):
    """Diagonal's gradient as an op (for double backward): ``g`` written on the diagonal of
    zeros of ``shape``; its own gradient takes that diagonal back."""

    complex_grad = True

    def forward(self, g, shape, args):
        self.args = args
        xp = get_array_module(g)
        offset, dim1, dim2 = args
        out = xp.zeros(shape, dtype=g.dtype)
        moved = xp.moveaxis(out, (dim1, dim2), (-2, -1))  # a view: writes reach ``out``
        rows, cols = _diagonal_positions(xp, moved.shape[-2], moved.shape[-1], offset)
        moved[..., rows, cols] = g
        return out

    def backward(self, h):
        return get_array_module(h).diagonal(h, *self.args).copy()

    def graph_backward(self, h, out):
        offset, dim1, dim2 = self.args
        return Diagonal.apply(h, offset=offset, dim1=dim1, dim2=dim2)


class DiagEmbed(Function):
    """A square matrix with the vector ``a`` on diagonal ``offset`` (torch.diag of a 1-d)."""

    complex_grad = True

    def forward(self, a, offset):
        xp = get_array_module(a)
        n = a.shape[0] + abs(offset)
        out = xp.zeros((n, n), dtype=a.dtype)
        self.where = _diagonal_positions(xp, n, n, offset)
        out[self.where] = a
        return out

    def backward(self, g):
        return g[self.where]

    def graph_backward(self, g, out):
        return GetItem.apply(g, index=self.where)


def diagonal(input, offset=0, dim1=0, dim2=1):
    """The diagonal ``offset`` of the matrices in dims (dim1, dim2), as a new last dim."""
    if input.ndim < 2:
        raise ValueError(f"diagonal: needs at least 2 dims, got shape {input.shape}")
    d1, d2 = wrap_dim(dim1, input.ndim, "diagonal"), wrap_dim(dim2, input.ndim, "diagonal")
    if d1 == d2:
        raise ValueError(f"diagonal: dim1 and dim2 are the same dim ({dim1}, {dim2})")
    return autograd.share_version(  # a view of the input, as PyTorch's
        Diagonal.apply(input, offset=int(offset), dim1=d1, dim2=d2, view=True), input)


def diag(input, diagonal=0):
    """A 1-d input: the square matrix with it on ``diagonal``; a 2-d input: that diagonal."""
    if input.ndim == 1:
        return DiagEmbed.apply(input, offset=int(diagonal))
    if input.ndim == 2:
        return Diagonal.apply(input, offset=int(diagonal), dim1=0, dim2=1)
    raise BadArgumentError(f"diag: needs a 1-d or 2-d tensor, got shape {input.shape}")


def narrow(input, dim, start, length):
    """The ``length`` elements from ``start`` along ``dim`` (a slice, sharing the gradient)."""
    if input.ndim == 0:
        raise BadArgumentError("narrow: cannot narrow a 0-d tensor")
    d = wrap_dim(dim, input.ndim, "narrow")
    if isinstance(start, autograd.Tensor):
        start = int(start.item())
    n = input.shape[d]
    if not -n <= start <= n:
        raise IndexError(f"narrow: start {start} out of range for dimension {dim} of size {n} "
                         f"(expected to be in range of [{-n}, {n}])")
    start = start % n if start < 0 else start
    if length < 0 or start + length > n:
        raise ValueError(f"narrow: start ({start}) + length ({length}) exceeds dimension {dim} "
                         f"of size {n}")
    return input[(slice(None),) * d + (slice(start, start + length),)]


def unbind(input, dim=0):
    """The slices of ``input`` along ``dim``, as a tuple (each keeps its gradient path)."""
    if input.ndim == 0:
        raise DimError("unbind: needs a tensor with at least one dim, got a 0-d tensor")
    d = wrap_dim(dim, input.ndim, "unbind")
    return mark_multi_view(tuple(input[(slice(None),) * d + (i,)] for i in range(input.shape[d])),
                           "Unbind")


def movedim(input, source, destination):
    """``input`` with dims ``source`` moved to positions ``destination`` (the rest in order)."""
    src = source if isinstance(source, (tuple, list)) else (source,)
    dst = destination if isinstance(destination, (tuple, list)) else (destination,)
    if len(src) != len(dst):
        raise ValueError(f"movedim: source {tuple(src)} and destination {tuple(dst)} must have "
                         "the same number of dims")
    src, dst = _dims("movedim", src, input.ndim), _dims("movedim", dst, input.ndim)
    if input.ndim == 0:
        return input
    order = [None] * input.ndim
    for s, t in zip(src, dst):
        order[t] = s
    rest = iter(i for i in range(input.ndim) if i not in src)
    order = [next(rest) if o is None else o for o in order]
    return input.permute(order)


def swapaxes(input, axis0, axis1):
    return input.transpose(axis0, axis1)


def swapdims(input, dim0, dim1):
    return input.transpose(dim0, dim1)


def unflatten(input, dim, sizes):
    """Dim ``dim`` split into ``sizes`` (one of them may be -1)."""
    d = wrap_dim(dim, input.ndim, "unflatten")
    sizes = _sizes("unflatten", (tuple(sizes),))
    n = input.shape[d]
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) > 1 or (-1 not in sizes and known != n) or (
            -1 in sizes and (known == 0 or n % known)):
        raise ValueError(f"unflatten: sizes {sizes} do not fill dim {dim} of size {n} "
                         f"(shape {input.shape})")
    sizes = tuple(n // known if s == -1 else s for s in sizes)  # (-1 is ambiguous when empty)
    return input.reshape(input.shape[:d] + sizes + input.shape[d + 1:])


def view_as(input, other):
    return input.view(other.shape)


def reshape_as(input, other):
    return input.reshape(other.shape)


class memory_format:
    """A memory layout, as torch's: ``minidl.contiguous_format`` (row-major NCHW),
    ``channels_last`` (NHWC memory behind an NCHW tensor), ``channels_last_3d`` (NDHWC) and
    ``preserve_format``. minidl's kernels work in row-major order; a channels-last tensor holds
    the same values in another order, and they take it (copying it back where they need)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"minidl.{self.name}"

    def __reduce__(self):
        return self.name  # pickles as the module attribute of that name


contiguous_format = memory_format("contiguous_format")
channels_last = memory_format("channels_last")
channels_last_3d = memory_format("channels_last_3d")
preserve_format = memory_format("preserve_format")
MEMORY_FORMATS = {"contiguous_format": contiguous_format, "channels_last": channels_last,
                  "channels_last_3d": channels_last_3d, "preserve_format": preserve_format}


def _channels_last_order(ndim, fmt):
    """The axis order of the memory of a channels-last tensor of ``ndim`` dims (None where the
    format is not a channels-last one); refuses a format that does not fit the rank."""
    if fmt is None or fmt is contiguous_format or fmt is preserve_format:
        return None
    if not isinstance(fmt, memory_format):
        raise TypeError(f"memory_format must be a minidl memory format (minidl.channels_last, "
                        f"...), got {fmt!r}")
    want = 4 if fmt is channels_last else 5
    if ndim != want:
        raise RuntimeError(f"required rank {want} tensor to use {fmt.name} format, got a tensor "
                           f"of {ndim} dims")
    return (0,) + tuple(range(2, ndim)) + (1,)


class _Relayout(Function):
    """The same values in another memory order (contiguous, or channels-last): the gradient
    passes through unchanged."""

    complex_grad = True

    def forward(self, a, order):
        xp = get_array_module(a)
        if order is None:
            return xp.ascontiguousarray(a)
        inverse = tuple(int(i) for i in np.argsort(order))
        return xp.ascontiguousarray(a.transpose(order)).transpose(inverse)

    def backward(self, g):
        return g

    def graph_backward(self, g, out):
        return g


def in_memory_format(input, fmt):
    """``input`` with its memory laid out as ``fmt`` asks (itself where it already is)."""
    order = _channels_last_order(input.ndim, fmt)
    if fmt is preserve_format or fmt is None:
        return input
    if is_contiguous(input, fmt):
        return input
    return _Relayout.apply(input, order=order)


def is_contiguous(input, memory_format=contiguous_format):
    """Whether ``input``'s memory is laid out as ``memory_format`` (row-major by default);
    False for a channels-last format of another rank, as torch answers."""
    want = {channels_last: 4, channels_last_3d: 5}.get(memory_format)
    if want is not None and input.ndim != want:
        return False
    order = _channels_last_order(input.ndim, memory_format)
    data = input.data
    if order is None:
        return bool(data.flags.c_contiguous)
    return bool(data.transpose(order).flags.c_contiguous)


def contiguous(input, memory_format=contiguous_format):
    """``input`` with row-major memory (itself where it has it; a copy in the graph where it
    is a strided view), or channels-last memory with ``memory_format``."""
    return in_memory_format(input, memory_format)


def tile(input, *dims, **by_name):
    """``input`` repeated ``dims[i]`` times along dim i; fewer dims than ``input`` has are
    padded with 1s in front (unlike repeat). ``tile(x, (2, 3))`` or ``x.tile(2, 3)``."""
    dims = _sizes("tile", sizes_or_keyword("tile", dims, by_name, "dims"))
    dims = (1,) * (input.ndim - len(dims)) + dims
    return Repeat.apply(input, sizes=repeat_sizes(input.shape, dims))


# ---- new_* factories: self's dtype and device unless given ---------------------------------
def _new(self, make, size, dtype, device, requires_grad):
    dtype = self.data.dtype if dtype is None else as_dtype(dtype)
    if device is not None and device != self.device:
        data = make(np, _sizes("new", size), dtype)
        return autograd.Tensor(data, requires_grad=requires_grad, device=device)
    data = make(get_array_module(self.data), _sizes("new", size), dtype)
    return autograd.Tensor(data, requires_grad=requires_grad)


def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
    return _new(self, lambda xp, s, dt: xp.zeros(s, dtype=dt), size, dtype, device, requires_grad)


def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
    return _new(self, lambda xp, s, dt: xp.ones(s, dtype=dt), size, dtype, device, requires_grad)


def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
    return _new(self, lambda xp, s, dt: xp.empty(s, dtype=dt), size, dtype, device, requires_grad)


def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False):
    if isinstance(fill_value, (complex, np.complexfloating)):  # an imaginary part refused
        fill_value = _fill_value(fill_value, self.data.dtype if dtype is None else
                                 as_dtype(dtype), "new_full")
    return _new(self, lambda xp, s, dt: xp.full(s, fill_value, dtype=dt), (size,), dtype, device,
                requires_grad)


def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False):
    """A copy of ``data`` as a tensor of self's dtype and device (unless given)."""
    if isinstance(data, autograd.Tensor):
        data = data.data
    dtype = self.data.dtype if dtype is None else as_dtype(dtype)
    xp = get_array_module(self.data)
    if device_of(data) == "cuda" and (self.device == "cpu" or (
            device is not None and device != self.device)):
        data = to_numpy(data)  # np.array() of a CuPy array raises: an explicit copy instead
    if device is not None and device != self.device:
        return autograd.Tensor(np.array(data, dtype=dtype), requires_grad=requires_grad,
                               device=device)
    return autograd.Tensor(xp.array(data, dtype=dtype), requires_grad=requires_grad)


TENSOR_METHODS = {
    "sort": sort, "argsort": argsort, "flip": flip, "fliplr": fliplr, "flipud": flipud,
    "roll": roll, "tril": tril, "triu": triu, "diag": diag, "diagonal": diagonal,
    "narrow": narrow, "unbind": unbind, "movedim": movedim, "moveaxis": movedim,
    "swapaxes": swapaxes, "swapdims": swapdims, "unflatten": unflatten, "view_as": view_as,
    "reshape_as": reshape_as, "contiguous": contiguous, "tile": tile,
    "is_contiguous": is_contiguous,
    "new_zeros": new_zeros, "new_ones": new_ones, "new_empty": new_empty, "new_full": new_full,
    "new_tensor": new_tensor,
}

FUNCTIONS = ["sort", "argsort", "flip", "fliplr", "flipud", "roll", "tril", "triu", "diag",
             "diagonal", "narrow", "unbind", "movedim", "moveaxis", "swapaxes", "swapdims",
             "unflatten", "tile"]
moveaxis = movedim


# ---- more shape ops: select, broadcast_to, ravel, stacking, repeat_interleave, meshgrid,
# rot90, diff (compositions of the ops above, which carry their gradients) -----------------
def select(input, dim, index):
    """The slice at ``index`` along ``dim`` (that dim removed); a negative index counts from
    the end."""
    if input.ndim == 0:
        raise IndexError("select: cannot select from a 0-d tensor")
    d = wrap_dim(dim, input.ndim, "select")
    n = input.shape[d]
    if isinstance(index, autograd.Tensor):
        index = int(index.item())
    if not -n <= index < n:
        raise IndexError(f"select: index {index} out of range for dimension {dim} of size {n}")
    return input[(slice(None),) * d + (int(index) % n,)]


def broadcast_to(input, size):
    return input.expand(size)


def ravel(input):
    return input.reshape(-1)


def atleast_1d(input):
    return input.reshape(1) if input.ndim == 0 else input


def atleast_2d(input):
    return input.reshape(1, -1) if input.ndim < 2 else input


def concat(tensors, dim=0):
    from .ops import cat

    return cat(tensors, dim)


concatenate = concat


def hstack(tensors):
    """Tensors side by side: along dim 1, or dim 0 for 1-d ones (as torch.hstack)."""
    ts = [atleast_1d(t) for t in tensors]
    return concat(ts, 0 if ts and ts[0].ndim == 1 else 1)


def vstack(tensors):
    """Tensors one above the other: along dim 0, 1-d ones as rows (as torch.vstack)."""
    return concat([atleast_2d(t) for t in tensors], 0)


row_stack = vstack


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Each element (slice along ``dim``; of the flattened input when dim is None) repeated
    ``repeats`` times (an int, or a 1-d tensor of counts). ``repeat_interleave(counts)`` alone
    gives each position repeated by its count."""
    from .indexing import IndexSelect

    xp = get_array_module(input.data)
    if repeats is None:  # torch.repeat_interleave(repeats): positions repeated
        counts = input.data
        # CuPy's repeat takes counts as a list, not as an array (the output size needs them
        # on the host anyway)
        host = counts if xp is np else to_numpy(counts).tolist()
        return autograd.Tensor(xp.repeat(xp.arange(counts.shape[0]), host).astype(np.int64))
    if dim is None:
        input, d = input.reshape(-1), 0
    else:
        d = wrap_dim(dim, input.ndim, "repeat_interleave")
    n = input.shape[d] if input.ndim else 1
    if isinstance(repeats, autograd.Tensor):
        counts = repeats.data.reshape(-1)
        if counts.shape[0] not in (1, n):
            raise ValueError(f"repeat_interleave: {counts.shape[0]} repeat counts for a dim of "
                             f"size {n}")
    else:
        counts = int(repeats)
    host = to_numpy(counts) if not isinstance(counts, int) else np.asarray(counts)
    if (host < 0).any():
        raise ValueError("repeat_interleave: repeats must be >= 0")
    # CuPy's repeat takes an int or a list of counts, not an array
    if xp is np or isinstance(counts, int):
        index = xp.repeat(xp.arange(n), counts)
    else:
        index = xp.repeat(xp.arange(n), int(host[0]) if host.size == 1 else host.tolist())
    if input.ndim == 0:
        input = input.reshape(1)
    # the index is in range by construction: IndexSelect without index_select()'s host check
    return IndexSelect.apply(input, index=index.astype(np.int64), dim=d)


def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids from 1-d tensors; ``indexing`` 'ij' (matrix, the default) or 'xy'
    (Cartesian: the first two dims swapped)."""
    if len(tensors) == 1 and isinstance(tensors[0], (tuple, list)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    for t in tensors:
        if t.ndim > 1:
            raise ValueError(f"meshgrid: expects 0-d or 1-d tensors, got shape {t.shape}")
    ts = [atleast_1d(t) for t in tensors]
    swap = indexing == "xy" and len(ts) >= 2
    if swap:
        ts[0], ts[1] = ts[1], ts[0]
    shape = tuple(t.shape[0] for t in ts)
    out = []
    for i, t in enumerate(ts):
        view = [1] * len(ts)
        view[i] = -1
        out.append(t.reshape(view).expand(shape))
    if swap:
        out[0], out[1] = out[1], out[0]
    return tuple(out)


def rot90(input, k=1, dims=(0, 1)):
    """``input`` rotated by 90 degrees ``k`` times in the plane of ``dims`` (from the first
    towards the second), as torch.rot90."""
    if len(dims) != 2:
        raise ValueError(f"rot90: dims must name two dims, got {tuple(dims)}")
    d0, d1 = (wrap_dim(d, input.ndim, "rot90") for d in dims)
    if d0 == d1:
        raise ValueError(f"rot90: the two dims are the same ({dims[0]}, {dims[1]})")
    k %= 4
    if k == 1:
        return flip(input, (d1,)).transpose(d0, d1)
    if k == 2:
        return flip(input, (d0, d1))
    if k == 3:
        return flip(input, (d0,)).transpose(d0, d1)
    return Reshape.apply(input, shape=input.shape)


def diff(input, n=1, dim=-1, prepend=None, append=None):
    """The ``n``-th forward difference along ``dim``, after prepending/appending tensors."""
    if input.ndim == 0:
        raise BadArgumentError("diff expects input to be at least one-dimensional")
    d = wrap_dim(dim, input.ndim, "diff")
    parts = [p for p in (prepend, input, append) if p is not None]
    x = concat(parts, d) if len(parts) > 1 else input
    for _ in range(n):
        m = x.shape[d]
        if m == 0:
            break
        later, earlier = narrow(x, d, 1, m - 1), narrow(x, d, 0, m - 1)
        # bools differ where they are not equal (PyTorch's diff of bools; - refuses them)
        x = later ^ earlier if x.data.dtype == np.bool_ else later - earlier
    return x


TENSOR_METHODS.update({
    "select": select, "broadcast_to": broadcast_to, "ravel": ravel,
    "repeat_interleave": repeat_interleave, "rot90": rot90, "diff": diff,
})
FUNCTIONS += ["select", "broadcast_to", "ravel", "atleast_1d", "atleast_2d", "concat",
              "concatenate", "hstack", "vstack", "row_stack", "repeat_interleave", "meshgrid",
              "rot90", "diff"]


# ---- more ordering: cummax/cummin, median, kthvalue, msort, unique, searchsorted ------------
CumResult = namedtuple("CumResult", ["values", "indices"])  # torch.return_types.cummax/cummin


def _cumulative_extreme(name, input, dim, take_min):
    from .indexing import Gather

    refuse_complex(name, input.data)  # NumPy would order complex numbers lexicographically
    if input.data.dtype.kind == "u":  # (no kernel name formatted per call)
        refuse_unsigned(input.data.dtype, f"{name}_cpu")
    d = wrap_dim(dim, input.ndim, name)
    if input.ndim == 0:
        xp = get_array_module(input.data)
        return CumResult(Reshape.apply(input, shape=()), autograd.Tensor(xp.zeros((), np.int64)))
    a = input.data
    xp = get_array_module(a)
    ufunc = xp.minimum if take_min else xp.maximum
    run = _running(xp, ufunc, a, d) if a.shape[d] else a
    positions = xp.arange(a.shape[d]).reshape((-1,) + (1,) * (a.ndim - d - 1))
    # the latest position that holds the running extreme (a NaN holds it from there on), as
    # PyTorch's indices on ties
    holds = (a == run) | (a != a)
    index = _running(xp, xp.maximum, xp.where(holds, positions, 0), d) if a.shape[d] else \
        xp.zeros(a.shape, np.int64)
    index = index.astype(np.int64, copy=False)
    # the indices are in range by construction: Gather without gather()'s host-side check
    return CumResult(Gather.apply(input, index=index, dim=d), autograd.Tensor(index))


def _running(xp, ufunc, a, d):
    """``ufunc.accumulate(a, axis=d)`` for maximum/minimum. CuPy accumulates only add, so
    there: log2(n) whole-array steps, each combining every element with the one 2**k before it
    (exact, as max and min are)."""
    if xp is np:
        return ufunc.accumulate(a, axis=d)
    out = a.copy()
    n, step = a.shape[d], 1
    while step < n:
        later = (slice(None),) * d + (slice(step, None),)
        earlier = (slice(None),) * d + (slice(None, n - step),)
        out[later] = ufunc(out[later], out[earlier])  # the right side is read before the write
        step *= 2
    return out


def cummax(input, dim):
    """(running maxima, their int64 indices) along ``dim``; the gradient goes to the index."""
    return _cumulative_extreme("cummax", input, dim, take_min=False)


def cummin(input, dim):
    """(running minima, their int64 indices) along ``dim``."""
    return _cumulative_extreme("cummin", input, dim, take_min=True)


KthResult = namedtuple("KthResult", ["values", "indices"])  # torch.return_types.kthvalue


def _kth(input, k, dim, keepdim, name="kthvalue", torch_ties=True):
    if isinstance(input, autograd.Tensor):
        refuse_complex(name, input.data)
        if input.data.dtype.kind == "u":  # (no kernel name formatted per call)
            refuse_unsigned(input.data.dtype, f"{name}_cpu")
    d = wrap_dim(dim, input.ndim, name)
    if input.data.dtype == np.bool_:
        raise UnsupportedDtypeError(f"{name}: bool tensors are not supported (PyTorch refuses "
                                    "them too); convert with .int() or .float() first")
    x = input if input.ndim else input.reshape(1)
    n = x.shape[d]
    if n == 0:
        raise IndexError(f"{name}(): Expected reduction dim {d} to have non-zero size.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: k must be an int, got {type(k).__name__}")
    if not 1 <= k <= n:
        raise IndexError(f"{name}: k = {k} out of range for dimension {dim} of size {n}")
    order = _argsort(x.data, d, False, True).astype(np.int64, copy=False)
    index = order[(slice(None),) * d + (slice(k - 1, k),)]
    data = x.data
    if torch_ties and get_array_module(data) is np and n > 1:
        # the k-th value held by several elements: which of them is PyTorch's CPU quickselect's
        kth = np.take_along_axis(data, index, axis=d)
        same = (data == kth) | ((data != data) & (kth != kth))
        tied = same.sum(axis=d) > 1
        if tied.any():
            index = index.copy()
            torch_order("kth", index, data, d, tied, k - 1)
    values = TakeAlongDim.apply(x, index=index, dim=d)
    if not keepdim or input.ndim == 0:
        values = values.squeeze(d)
        index = index.squeeze(axis=d)
    return KthResult(values, autograd.Tensor(index))


def kthvalue(input, k, dim=-1, keepdim=False):
    """(the k-th smallest value along ``dim``, its index); k counts from 1. Among equal values
    the index is the one PyTorch returns on the CPU; the gradient goes to it."""
    return _kth(input, k, dim, keepdim)


def median_ties(a, y, dtype):
    """1 where ``a`` equals its median ``y`` (NaN matching NaN), 0 elsewhere."""
    return ((a == y) | ((a != a) & (y != y))).astype(dtype)


class MedianAll(Function):
    """The median of a flat tensor (the lower middle value; NaN where there is a NaN, as
    PyTorch): the gradient is shared among the elements equal to it, as torch.median()'s."""

    def forward(self, a, k):
        xp = get_array_module(a)
        y = a[_argsort(a, 0, False, True)[k - 1]]
        if is_floating(a.dtype):  # NaN if there is one, decided on the device (no host copy)
            y = xp.where(xp.isnan(a).any(), xp.asarray(xp.nan, dtype=a.dtype), y)
        self.save_for_backward(a, y)
        return xp.asarray(y, dtype=a.dtype).reshape(())

    def backward(self, g):
        a, y = self.saved
        mask = median_ties(a, y, g.dtype)
        return g * mask / mask.sum()

    def graph_backward(self, g, out):
        a, y = self.saved
        mask = median_ties(a, y, g.data.dtype)
        return g * constant(mask / mask.sum())  # piecewise linear: a constant share


def median(input, dim=None, keepdim=False):
    """Over everything: the lower of the two middle values (NaN if there is a NaN, NaN of an
    empty float tensor). Over ``dim``: (values, indices); a slice holding a NaN gives NaN and
    the index of its first NaN, as PyTorch."""
    if isinstance(input, autograd.Tensor):
        refuse_complex("median", input.data)
        refuse_unsigned(input.data.dtype, "median_cpu")
    xp = get_array_module(input.data)
    if input.data.dtype == np.bool_:
        raise UnsupportedDtypeError("median: bool tensors are not supported (PyTorch refuses "
                                    "them too); convert with .int() or .float() first")
    if dim is None:
        flat = input.reshape(-1)
        n = flat.shape[0]
        if n == 0:
            if not is_floating(input.dtype):
                raise IndexError("median(): an empty tensor of an integer dtype has no median")
            return autograd.Tensor(xp.full((), xp.nan, dtype=input.dtype))
        return MedianAll.apply(flat, k=(n + 1) // 2)
    d = wrap_dim(dim, input.ndim, "median")
    if input.ndim == 0:
        r = _kth(input, 1, d, keepdim, "median", torch_ties=False)
        return KthResult(r.values, r.indices)
    n = input.shape[d]
    if n == 0:
        raise IndexError(f"median(): Expected reduction dim {d} to have non-zero size.")
    r = _kth(input, (n + 1) // 2, d, True, "median", torch_ties=False)
    index = r.indices.data
    if is_floating(input.dtype):
        nan = xp.isnan(input.data)
        has_nan = nan.any(axis=d, keepdims=True)
        # always taken (no host copy to decide): where no slice has a NaN it changes nothing
        first_nan = xp.argmax(nan, axis=d, keepdims=True).astype(np.int64)
        index = xp.where(has_nan, first_nan, index)
    values = TakeAlongDim.apply(input, index=index, dim=d)
    if not keepdim:
        values = values.squeeze(d)
        index = index.squeeze(axis=d)
    return KthResult(values, autograd.Tensor(index))


def msort(input):
    return sort(input, 0).values


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values, sorted (no gradient), and optionally the inverse indices and
    the counts, as torch.unique without ``dim``."""
    if isinstance(input, autograd.Tensor):
        refuse_complex("unique", input.data)
    if dim is not None:
        return _unique_dim(input, dim, return_inverse, return_counts)
    xp = get_array_module(input.data)
    data = input.data.reshape(-1)
    # every NaN is a value of its own in PyTorch's unique (NumPy merges them by default)
    each_nan = {"equal_nan": False} if is_floating(data.dtype) and bool(xp.isnan(data).any()) else {}
    values, inverse, counts = xp.unique(data, return_inverse=True, return_counts=True, **each_nan)
    out = [autograd.Tensor(values)]
    if return_inverse:
        out.append(autograd.Tensor(inverse.reshape(input.shape).astype(np.int64)))
    if return_counts:
        out.append(autograd.Tensor(counts.astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


def _unique_dim(input, dim, return_inverse, return_counts):
    """torch.unique(dim=...): the distinct slices along ``dim``, in lexicographic order of
    their elements; the inverse maps each slice to its unique one."""
    if input.ndim == 0:
        raise DimError(f"unique: dimension specified as {dim} but tensor has no dimensions")
    d = wrap_dim(dim, input.ndim, "unique")
    data = input.data
    xp = get_array_module(data)
    if data.size == 0 and data.shape[d] != 0:
        raise BadArgumentError("unique: there are 0 sized dimensions, and they aren't selected "
                               f"(dim={dim}, shape {tuple(input.shape)}), so unique cannot be "
                               "applied")
    moved = xp.moveaxis(data, d, 0)
    n = moved.shape[0]
    rows = moved.reshape(n, int(np.prod(moved.shape[1:], dtype=np.int64)))
    if n == 0:
        keep = xp.zeros(0, dtype=np.int64)
        inverse = xp.zeros(0, dtype=np.int64)
        counts = xp.zeros(0, dtype=np.int64)
    else:
        keys = rows.astype(np.float32) if str(rows.dtype) == "bfloat16" else rows
        order = xp.lexsort(keys.T[::-1]) if rows.shape[1] else xp.arange(n)
        ordered = keys[order]
        starts = xp.ones(n, dtype=bool)
        if rows.shape[1]:
            starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
        else:
            starts[1:] = False
        group = xp.cumsum(starts) - 1
        keep = order[starts]
        inverse = xp.empty(n, dtype=np.int64)
        inverse[order] = group
        counts = xp.bincount(group).astype(np.int64)
    values = xp.moveaxis(moved[keep], 0, d)
    out = [autograd.Tensor(xp.ascontiguousarray(values))]
    if return_inverse:
        out.append(autograd.Tensor(inverse.astype(np.int64)))
    if return_counts:
        out.append(autograd.Tensor(counts))
    return out[0] if len(out) == 1 else tuple(out)


def _binary_search(seq, values, right):
    """PyTorch's lower (upper) bound, all values at once: the binary search steps right past
    ``mid`` unless ``seq[mid] >= value`` (``>``), so a comparison with NaN (always False) steps
    right, which is where torch puts NaN and what it returns for a sequence holding NaN."""
    xp = get_array_module(seq)
    n = seq.shape[-1]
    start = xp.zeros(values.shape, np.int64)
    end = xp.full(values.shape, n, np.int64)
    for _ in range(n.bit_length() + 1):
        active = start < end
        mid = start + (end - start) // 2
        at = xp.minimum(mid, n - 1)
        pivot = seq[at] if seq.ndim == 1 else xp.take_along_axis(seq, at, axis=-1)
        step = ~(pivot > values) if right else ~(pivot >= values)
        start = xp.where(active & step, mid + 1, start)
        end = xp.where(active & ~step, mid, end)
    return start


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None,
                 sorter=None):
    """Where each value of ``input`` would go in ``sorted_sequence`` (1-d, or sorted along its
    last dim with matching leading dims) to keep it sorted: the first such place, or the last
    with ``right=True`` / ``side='right'``. With NaN in either, the places are PyTorch's (NaN
    goes last). ``sorter``: int64 indices that sort ``sorted_sequence`` along its last dim (the
    places are then in that sorted order, as NumPy's)."""
    if sorter is not None:
        if not isinstance(sorter, autograd.Tensor) or sorter.data.dtype != np.int64:
            raise RuntimeError(f"torch.searchsorted(): sorter must be a tensor of long dtype but "
                               f"got dtype {getattr(sorter, 'dtype', type(sorter).__name__)}")
        if tuple(sorter.shape) != tuple(sorted_sequence.shape):
            raise RuntimeError(f"torch.searchsorted(): boundary and sorter must have the same "
                               f"size, but got boundary tensor {list(sorted_sequence.shape)} and "
                               f"got sorter tensor {list(sorter.shape)}")
        order = sorter.data
        n = sorted_sequence.shape[-1] if sorted_sequence.ndim else 0
        if order.size and (bool((order < 0).any()) or bool((order >= n).any())):
            raise RuntimeError("torch.searchsorted(): sorter index out of range")
        sorted_sequence = autograd.Tensor(get_array_module(order).take_along_axis(
            sorted_sequence.data, order, axis=-1))
    if side is not None:
        if side not in ("left", "right"):
            raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
        if right and side == "left":
            raise BadArgumentError("searchsorted: side='left' and right=True contradict each "
                                   "other")
        right = side == "right"
    seq = sorted_sequence.data
    values = input.data if isinstance(input, autograd.Tensor) else np.asarray(input)
    xp = get_array_module(seq)
    values = xp.asarray(values)
    if seq.dtype == np.bool_:  # (bool values are compared as numbers, as in PyTorch)
        raise UnsupportedDtypeError("searchsorted: a bool sorted_sequence is not supported "
                                    "(PyTorch refuses it too)")
    if values.dtype == np.bool_:
        values = values.astype(seq.dtype)
    refuse_complex("searchsorted", seq)  # complex numbers have no order
    refuse_complex("searchsorted", values)
    if seq.ndim == 0 or (seq.ndim > 1 and values.ndim == 0):
        raise BadArgumentError(f"searchsorted: a scalar value needs a 1-d sorted_sequence, "
                                 f"got one of shape {tuple(seq.shape)}")
    if seq.ndim > 1 and seq.shape[:-1] != values.shape[:-1]:
        raise BadArgumentError(f"searchsorted: sorted_sequence {tuple(seq.shape)} and input "
                                 f"{tuple(values.shape)} must match in every dim but the last")
    dtype = np.int32 if out_int32 else np.int64
    common = np.result_type(seq.dtype, values.dtype)
    if seq.shape[-1] == 0:
        out = xp.zeros(values.shape, dtype)
    elif seq.ndim == 1 and not (is_floating(common) and bool(xp.isnan(seq).any() |
                                                             xp.isnan(values).any())):
        out = xp.searchsorted(seq, values, side="right" if right else "left")
    else:
        out = _binary_search(seq.astype(common, copy=False), values.astype(common, copy=False),
                             right)
    return autograd.Tensor(xp.asarray(out).astype(dtype))


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """The bucket of each value among the 1-d ``boundaries``: as searchsorted(boundaries,
    input, right=right)."""
    if boundaries.ndim != 1:
        raise ValueError(f"bucketize: boundaries must be 1-d, got shape {boundaries.shape}")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


TENSOR_METHODS.update({
    "cummax": cummax, "cummin": cummin, "kthvalue": kthvalue, "median": median,
    "msort": msort, "unique": unique,
})
FUNCTIONS += ["cummax", "cummin", "kthvalue", "median", "msort", "unique", "searchsorted",
              "bucketize"]


# ---- tensor_split, hsplit/vsplit/dsplit, block_diag, cartesian_prod -------------------------
class ArgumentError(ValueError, RuntimeError):
    """An argument value PyTorch refuses with a RuntimeError (``tensor_split(x, 0)``): a
    ValueError, as minidl's other argument errors, and a RuntimeError, as PyTorch's."""


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _split_points(name, indices_or_sections, n):
    """The start of each piece (the first is 0) for an int of sections or a list of indices
    (a 0-d or 1-d int64 tensor is taken as one or the other)."""
    spec = indices_or_sections
    if isinstance(spec, autograd.Tensor):
        if spec.ndim > 1:
            raise ArgumentError(f"{name}: expected tensor_indices_or_sections to be a "
                                f"zero-dimensional or one-dimensional tensor, but got a tensor "
                                f"with {spec.ndim} dims")
        if spec.data.dtype != np.int64:
            raise TypeError(f"{name}: expected tensor_indices_or_sections to have dtype int64, "
                            f"but got {spec.data.dtype}")
        spec = int(spec.item()) if spec.ndim == 0 else [int(i) for i in spec.tolist()]
    if _is_int(spec):
        sections = int(spec)
        if sections <= 0:
            raise ArgumentError(f"{name}: number of sections must be larger than 0, got "
                                f"{sections}")
        size, extra = divmod(n, sections)
        sizes = [size + 1] * extra + [size] * (sections - extra)
        return np.cumsum([0] + sizes[:-1]).tolist(), sizes
    if isinstance(spec, (tuple, list)) and all(_is_int(i) for i in spec):
        return [None] + [int(i) for i in spec], None
    raise TypeError(f"{name}: indices_or_sections must be an int, a list of ints or an int64 "
                    f"tensor, got {type(indices_or_sections).__name__}")


def tensor_split(input, indices_or_sections=None, dim=0, *, sections=None, indices=None,
                 tensor_indices_or_sections=None):
    """Views of ``input`` along ``dim``: ``sections`` pieces as even as can be (the first
    ``n % sections`` one longer), or the pieces between ``indices`` (as Python slices, so an
    index past the end gives empty pieces), as torch.tensor_split."""
    given = [s for s in (indices_or_sections, sections, indices, tensor_indices_or_sections)
             if s is not None]
    if len(given) != 1:
        raise TypeError("tensor_split: pass one of indices_or_sections, sections, indices or "
                        "tensor_indices_or_sections")
    if input.ndim == 0:
        raise ArgumentError("tensor_split: expected at least a 1-dimensional tensor, but got a "
                            "tensor with 0 dims")
    d = wrap_dim(dim, input.ndim, "tensor_split")
    starts, sizes = _split_points("tensor_split", given[0], input.shape[d])
    lead = (slice(None),) * d
    if sizes is not None:  # sections: consecutive pieces of the given sizes
        return tuple(GetItem.apply(input, index=lead + (slice(s, s + k),))
                     for s, k in zip(starts, sizes))
    stops = starts[1:] + [None]
    return tuple(GetItem.apply(input, index=lead + (slice(a, b),)) for a, b in zip(starts, stops))


def _split_along(name, input, indices_or_sections, dim, min_ndim):
    if input.ndim < min_ndim:
        raise ArgumentError(f"{name}: requires a tensor with at least {min_ndim} dimension"
                            f"{'s' if min_ndim > 1 else ''}, but got a tensor with {input.ndim} "
                            "dimensions")
    if _is_int(indices_or_sections):
        n, k = input.shape[dim], int(indices_or_sections)
        if k <= 0 or n % k:
            raise ArgumentError(f"{name}: cannot split dimension {dim} of size {n} into {k} "
                                "equal pieces (it must be divisible by the number of sections)")
    return tensor_split(input, indices_or_sections, dim)


def hsplit(input, indices_or_sections):
    """tensor_split along dim 1 (dim 0 of a 1-d tensor); an int must divide the size."""
    return _split_along("hsplit", input, indices_or_sections, 1 if input.ndim > 1 else 0, 1)


def vsplit(input, indices_or_sections):
    """tensor_split along dim 0 of a tensor with at least 2 dims; an int must divide it."""
    return _split_along("vsplit", input, indices_or_sections, 0, 2)


def dsplit(input, indices_or_sections):
    """tensor_split along dim 2 of a tensor with at least 3 dims; an int must divide it."""
    return _split_along("dsplit", input, indices_or_sections, 2, 3)


class BlockDiag(Function):
    """The matrices on the diagonal of a zero matrix; each one's gradient is its block."""

    complex_grad = True

    def forward(self, *blocks):
        xp = get_array_module(*blocks)
        rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
        out = xp.zeros((rows, cols), dtype=blocks[0].dtype)
        self.places, i, j = [], 0, 0
        for b in blocks:
            place = (slice(i, i + b.shape[0]), slice(j, j + b.shape[1]))
            out[place] = b
            self.places.append(place)
            i, j = i + b.shape[0], j + b.shape[1]
        return out

    def backward(self, g):
        return tuple(g[place] for place in self.places)

    def graph_backward(self, g, out):
        return tuple(GetItem.apply(g, index=place) for place in self.places)


def block_diag(*tensors):
    """A block-diagonal matrix of the tensors (0-d ones are 1x1, 1-d ones a row), at their
    promoted dtype, as torch.block_diag."""
    blocks = []
    for k, t in enumerate(tensors):
        if not isinstance(t, autograd.Tensor):
            raise TypeError(f"block_diag: input {k} must be a Tensor, got {type(t).__name__}")
        if t.ndim > 2:
            raise ArgumentError(f"block_diag: input tensors must have 2 or fewer dimensions. "
                                f"Input {k} has {t.ndim} dimensions")
        blocks.append(t.reshape(1, -1) if t.ndim < 2 else t)
    if not blocks:
        return autograd.Tensor(np.zeros((1, 0), default_float()))
    dtype = result_type(*blocks)
    blocks = [b if b.data.dtype == dtype else Cast.apply(b, dtype=dtype) for b in blocks]
    return BlockDiag.apply(*blocks)


def cartesian_prod(*tensors):
    """Every combination of one element from each 1-d tensor, one per row (the last tensor's
    element changes fastest); one tensor comes back as it is, as in PyTorch."""
    if not tensors:
        raise ArgumentError("cartesian_prod: expects at least one tensor")
    for t in tensors:
        if not isinstance(t, autograd.Tensor) or t.ndim != 1:
            raise ArgumentError(f"cartesian_prod: expects 1-d tensors, but got shape "
                                f"{tuple(getattr(t, 'shape', ()))}")
    if len({t.data.dtype for t in tensors}) > 1:
        raise TypeError("cartesian_prod: expects all tensors to have the same dtype, got "
                        + ", ".join(str(t.data.dtype) for t in tensors))
    if len(tensors) == 1:
        return tensors[0]
    return stack([g.reshape(-1) for g in meshgrid(*tensors, indexing="ij")], dim=1)


TENSOR_METHODS.update({"tensor_split": tensor_split, "hsplit": hsplit, "vsplit": vsplit,
                       "dsplit": dsplit})
FUNCTIONS += ["tensor_split", "hsplit", "vsplit", "dsplit", "block_diag", "cartesian_prod"]


# ---- tril/triu_indices, narrow_copy, unravel_index, vander, combinations ----
def _triangle_indices(name, row, col, offset, dtype, device, upper):
    xp = np if str(device).split(":")[0] == "cpu" else get_array_module(
        autograd.Tensor(np.zeros(0)).to(device).data)
    r, c = np.indices((row, col)).reshape(2, -1)
    keep = (c - r >= offset) if upper else (c - r <= offset)
    out = np.stack([r[keep], c[keep]]).astype(as_dtype(dtype))
    return autograd.Tensor(xp.asarray(out))


def tril_indices(row, col, offset=0, *, dtype=np.int64, device="cpu"):
    """The (2, N) row and column indices of the lower triangle of a row x col matrix."""
    return _triangle_indices("tril_indices", row, col, offset, dtype, device, upper=False)


def triu_indices(row, col, offset=0, *, dtype=np.int64, device="cpu"):
    """The (2, N) row and column indices of the upper triangle of a row x col matrix."""
    return _triangle_indices("triu_indices", row, col, offset, dtype, device, upper=True)


def narrow_copy(input, dim, start, length):
    """narrow as a copy."""
    return narrow(input, dim, start, length).clone()


def unravel_index(indices, shape):
    """The coordinates in ``shape`` of flat ``indices``: a tuple of int64 tensors."""
    data = indices.data if isinstance(indices, autograd.Tensor) else np.asarray(indices)
    if data.dtype.kind not in "iu":
        raise UnsupportedDtypeError(f"expected 'indices' to be integer dtype, but got "
                                    f"{data.dtype}")
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    total = int(np.prod(shape))
    xp = get_array_module(data)
    if data.size and (bool((data < -total).any()) or bool((data >= total).any())):
        raise BadArgumentError("'indices' must be in range [-prod(shape), prod(shape) - 1]")
    coords = xp.unravel_index(data % max(total, 1), shape)
    return tuple(autograd.Tensor(c.astype(np.int64)) for c in coords)


def vander(x, N=None, increasing=False):  # noqa: N803  (PyTorch's name)
    """The Vandermonde matrix of the 1-d ``x``: columns x**(N-1) ... x**0 (or increasing)."""
    if x.ndim != 1:
        raise BadArgumentError("x must be a one-dimensional tensor.")
    n = x.shape[0] if N is None else int(N)
    if n < 0:
        raise BadArgumentError("N must be non-negative.")
    from .ops import stack

    dtype = np.dtype(np.int64) if x.data.dtype.kind in "biu" else x.data.dtype
    base = x if x.data.dtype == dtype else x.to(dtype)
    powers = range(n) if increasing else range(n - 1, -1, -1)
    columns = [base ** p if p else base * 0 + 1 for p in powers]
    if not columns:
        return autograd.Tensor(get_array_module(x.data).zeros((x.shape[0], 0), dtype))
    return stack(columns, 1)


def combinations(input, r=2, with_replacement=False):
    """The length-``r`` combinations of the 1-d ``input``'s elements, one per row (itertools'
    order)."""
    import itertools

    if input.ndim != 1:
        raise BadArgumentError(f"Expect a 1D vector, but got shape {tuple(input.shape)}")
    pick = itertools.combinations_with_replacement if with_replacement else \
        itertools.combinations
    rows = list(pick(range(input.shape[0]), r)) if r else []
    if not r:
        return autograd.Tensor(get_array_module(input.data).zeros((0,), input.data.dtype))
    if not rows:
        return autograd.Tensor(get_array_module(input.data).zeros((0, r), input.data.dtype))
    from .indexing import index_select

    index = autograd.Tensor(get_array_module(input.data).asarray(
        np.asarray(rows, np.int64).reshape(-1)))
    return index_select(input, 0, index).reshape(len(rows), r)


TENSOR_METHODS.update({"narrow_copy": narrow_copy})
FUNCTIONS += ["tril_indices", "triu_indices", "narrow_copy", "unravel_index",
              "vander", "combinations"]
