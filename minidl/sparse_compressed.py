"""Sparse compressed tensors: torch's CSR, CSC, BSR and BSC layouts.

A compressed tensor is a ``Tensor`` whose ``.data`` is a
``backend.sparse_compressed.SparseCompressed``, made by ``minidl.sparse_csr_tensor`` (and
``_csc``, ``_bsr``, ``_bsc``, ``sparse_compressed_tensor``) or a conversion
(``to_sparse_csr()``, ``to_sparse(layout=...)``, ...). Batch dims (before the two sparse
ones) and dense dims (after them) are kept as torch keeps them. Its values are what a
gradient reaches: every op here is linear in them or reads them through a map of places.

Gradients follow torch's layouts: ``sparse.mm``, ``sparse.addmm``, ``sparse.sampled_addmm``,
``to_dense``, ``values`` and the conversions give a compressed input a gradient of its own
layout and pattern; ``mm``/``@``/``addmm``/``F.linear``/``sum`` give it a dense one.

This sits above ``sparse`` (the COO layout) and sets the compressed forms of its Tensor
methods, wrapping the COO ones.
"""
from __future__ import annotations

import numpy as np

from . import autograd
from . import sparse as _coo
from .autograd import Function, input_needed
from .backend import get_array_module, normalize_device
from .backend import sparse_compressed as _c
from .backend.sparse import SparseArray, SparseCOO
from .backend.sparse_compressed import SparseCompressed, torch_layout_name
from .functional import Linear
from .math_ops import Asin, Atan, Ceil, Expm1, Floor, Log1p, Round, Sign, Sin, Sinh, Tan, Trunc
from .pointwise import Asinh, Atanh, Deg2Rad, Rad2Deg
from .special import Erf, Erfinv
from .ops import Abs, Add, BadArgumentError, Clone, Div, MatMul, Mul, ReLU, Sqrt, Sum, Tanh
from .products import _scaled_sum
from .tensor import Tensor

__all__ = ["sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "sparse_csr_tensor",
           "sparse_csc_tensor", "sparse_bsr_tensor", "sparse_bsc_tensor",
           "sparse_compressed_tensor"]

sparse_csr = _coo.layout("sparse_csr")
sparse_csc = _coo.layout("sparse_csc")
sparse_bsr = _coo.layout("sparse_bsr")
sparse_bsc = _coo.layout("sparse_bsc")
_LAYOUTS = {lay.name: lay for lay in (sparse_csr, sparse_csc, sparse_bsr, sparse_bsc)}


def _is_compressed(t):
    return isinstance(t, Tensor) and type(t.data) is SparseCompressed


def _layout_name(t):
    data = t.data
    if type(data) is SparseCompressed:
        return torch_layout_name(data.layout)
    return "Sparse" if type(data) is SparseCOO else "Strided"


# ---- construction ---------------------------------------------------------------------------
class CompressedFromValues(Function):
    """values -> the compressed tensor of those values on a fixed pattern; the gradient of
    the values is the output's gradient at the pattern's places."""

    def forward(self, values, pattern):
        self.pattern = pattern.with_values(values)
        return self.pattern

    def backward(self, g):
        return _c.gather(g, self.pattern)

    def graph_backward(self, g, out):
        return CompressedGather.apply(g, pattern=self.pattern)

    def name(self):
        return "SparseCompressedTensorBackward"


class CompressedGather(Function):
    """g (dense or sparse) at a pattern's stored places (CompressedFromValues' gradient, as
    an op); its own gradient puts h back on the pattern (dense where g was)."""

    def forward(self, g, pattern):
        self.pattern, self.dense_g = pattern, type(g) not in (SparseCOO, SparseCompressed)
        return _c.gather(g, pattern)

    def backward(self, h):
        back = self.pattern.with_values(h)
        return _c.to_dense(back) if self.dense_g else back

    def graph_backward(self, h, out):
        back = CompressedFromValues.apply(h, pattern=self.pattern)
        return back.to_dense() if self.dense_g else back


def _index_array(x, xp, what):
    if isinstance(x, Tensor):
        if isinstance(x.data, SparseArray):
            raise TypeError(f"{what} must be a strided (dense) tensor, got layout "
                            f"{_layout_name(x)}")
        x = x.data
    return xp.asarray(x)


def _fail(condition):
    raise BadArgumentError(f"`{condition}` is not satisfied.")


def _check_invariants(layout, compressed, plain, values, shape):
    """torch's checks of a compressed tensor's parts (_validate_sparse_compressed_tensor_args),
    with its messages; all of them always run (minidl has no unchecked tensors, as its COO)."""
    comp_name, plain_name = _c.NAMES[layout]
    xp = get_array_module(values)
    nb = compressed.ndim - 1
    if compressed.ndim < 1:
        raise BadArgumentError(f"{comp_name} must have dim >= 1 but got {comp_name}.dim() = 0")
    if plain.ndim != compressed.ndim:
        raise BadArgumentError(f"{comp_name} and {plain_name} dimensions must be equal, got "
                               f"{compressed.ndim} and {plain.ndim}")
    block_nd = 2 if _c.blocked(layout) else 0
    if values.ndim < nb + 1 + block_nd:
        raise BadArgumentError(f"values must have dim >= {nb + 1 + block_nd} (the batch dims, "
                               f"nnz{' and the block' if block_nd else ''}) but got "
                               f"values.dim() = {values.ndim}")
    dense_dim = values.ndim - nb - 1 - block_nd
    if len(shape) != nb + 2 + dense_dim:
        raise BadArgumentError(f"tensor dimensionality must be sum of batch, base, and dense "
                               f"dimensionalities (={nb} + 2 + {dense_dim}) but got "
                               f"{len(shape)}")
    batch = tuple(shape[:nb])
    for name, arr in ((comp_name, compressed), (plain_name, plain), ("values", values)):
        if tuple(arr.shape[:nb]) != batch:
            raise BadArgumentError(f"all batch dimensions of {comp_name}, {plain_name} and "
                                   f"values must be equal to the tensor's batch shape {batch}, "
                                   f"got {name} of shape {tuple(arr.shape)}")
    r, c = (int(values.shape[nb + 1]), int(values.shape[nb + 2])) if block_nd else (1, 1)
    for d, (n, b) in enumerate(zip(shape[nb:nb + 2], (r, c))):
        if b == 0 or n % b:
            raise BadArgumentError(f"tensor shape[{nb + d}] (={n}) must be divisible with "
                                   f"blocksize[{d}] (={b}) as defined by values shape")
    if tuple(values.shape[nb + 1 + block_nd:]) != tuple(shape[nb + 2:]):
        raise BadArgumentError(f"values.shape[{nb + 1 + block_nd}:] (the dense dims) must be "
                               f"{tuple(shape[nb + 2:])} as the size's, got "
                               f"{tuple(values.shape[nb + 1 + block_nd:])}")
    rows, cols = shape[nb] // r, shape[nb + 1] // c
    ncomp, nplain = (rows, cols) if _c.row_compressed(layout) else (cols, rows)
    comp_dim, plain_dim = ("row", "column") if _c.row_compressed(layout) else ("column", "row")
    nnz = int(values.shape[nb])
    if compressed.shape[-1] != ncomp + 1:
        raise BadArgumentError(f"{comp_name}.shape[-1] must be equal to the number of "
                               f"{comp_dim}s + 1 (={ncomp + 1}), but got "
                               f"{compressed.shape[-1]}")
    if plain.shape[-1] != nnz:
        raise BadArgumentError(f"{plain_name}.shape[-1] must be equal to nnz (={nnz}) as "
                               f"defined by values.shape[{nb}], but got {plain.shape[-1]}")
    if bool((compressed[..., 0] != 0).any()):
        _fail(f"{comp_name}[..., 0] == 0")
    if bool((compressed[..., -1] != nnz).any()):
        _fail(f"{comp_name}[..., -1] == nnz")
    steps = xp.diff(compressed, axis=-1)
    if bool(((steps < 0) | (steps > nplain)).any()):
        _fail(f"0 <= {comp_name}[..., 1:] - {comp_name}[..., :-1] <= n{plain_dim[:3]}s")
    if bool(((plain < 0) | (plain >= nplain)).any()):
        _fail(f"0 <= {plain_name} < n{plain_dim[:3]}s")
    if nnz > 1:
        _, comp_of, plain_flat = _c.entry_places(
            SparseCompressed(layout, compressed, plain, values, shape))
        same = comp_of[1:] == comp_of[:-1]
        same = same & ((xp.arange(1, len(comp_of)) % nnz) != 0)  # not across two batches
        if bool((same & (plain_flat[1:] <= plain_flat[:-1])).any()):
            _fail(f"{plain_name}[..., {comp_name}[..., i - 1]:{comp_name}[..., i]] for all i = "
                  f"1, ..., n{comp_dim[:3]}s are sorted and distinct along the last dimension "
                  "values")


def sparse_compressed_tensor(compressed_indices, plain_indices, values, size=None, *,
                             dtype=None, layout=None, device=None, pin_memory=False,
                             requires_grad=False, check_invariants=None):
    """A sparse compressed tensor of ``layout`` (torch.sparse_compressed_tensor): the
    compressed indices (crow_indices / ccol_indices, (*batch, n + 1)), the plain ones
    (col_indices / row_indices, (*batch, nnz)) and the values ((*batch, nnz, *block,
    *dense)). ``size`` by default: the rows (or columns) the compressed indices count, the
    other dim one past the largest plain index. torch's invariants are checked always
    (whatever ``check_invariants`` says), with its messages. Where ``values`` requires grad
    (and ``requires_grad`` is not given) the result takes part in the graph."""
    name = "sparse_compressed_tensor"
    if layout not in _LAYOUTS.values():
        raise BadArgumentError(f"{name} expected sparse compressed tensor layout but got "
                               f"{'none' if layout is None else layout}")
    lay = layout.name
    if isinstance(values, Tensor) and type(values.data) in (SparseCOO, SparseCompressed):
        raise TypeError(f"{name}: values must be a strided (dense) tensor, got layout "
                        f"{_layout_name(values)}")
    if isinstance(values, Tensor):
        vals = values
        if device is not None and normalize_device(device) != vals.device:
            vals = vals.to(normalize_device(device))
        if dtype is not None and vals.dtype != np.dtype(dtype):
            vals = vals.to(dtype)
    else:
        vals = Tensor(values, dtype=dtype, device=device or "cpu")
    xp = get_array_module(vals.data)
    comp_name, plain_name = _c.NAMES[lay]
    comp = _index_array(compressed_indices, xp, comp_name)
    plain = _index_array(plain_indices, xp, plain_name)
    for arr, what in ((comp, comp_name), (plain, plain_name)):
        if arr.dtype not in (np.int32, np.int64):
            raise BadArgumentError(f"{what} must be an int32 or int64 tensor, but got "
                                   f"{arr.dtype}")
    index_dtype = np.int32 if comp.dtype == plain.dtype == np.int32 else np.int64
    comp, plain = comp.astype(index_dtype), plain.astype(index_dtype)
    nb = comp.ndim - 1
    if size is None:
        block = tuple(vals.shape[nb + 1:nb + 3]) if _c.blocked(lay) else (1, 1)
        dense = tuple(vals.shape[nb + 1 + (2 if _c.blocked(lay) else 0):])
        ncomp = int(comp.shape[-1]) - 1 if comp.ndim else 0
        nplain = int(plain.max()) + 1 if plain.size else 0
        two = (ncomp * block[0], nplain * block[1]) if _c.row_compressed(lay) \
            else (nplain * block[0], ncomp * block[1])
        shape = tuple(comp.shape[:-1]) + two + dense
    else:
        shape = tuple(int(n) for n in (size.shape if isinstance(size, Tensor) else size))
    _check_invariants(lay, comp, plain, vals.data, shape)
    pattern = SparseCompressed(lay, comp, plain, vals.data, shape)
    if vals.requires_grad and autograd.is_grad_enabled() and not requires_grad:
        return CompressedFromValues.apply(vals, pattern=pattern)
    out = Tensor(pattern)
    if requires_grad:
        out.requires_grad_(True)
    return out


def _constructor(lay):
    comp_name, plain_name = _c.NAMES[lay.name]

    def make(compressed_indices, plain_indices, values, size=None, *, dtype=None, device=None,
             pin_memory=False, requires_grad=False, check_invariants=None):
        return sparse_compressed_tensor(compressed_indices, plain_indices, values, size,
                                        dtype=dtype, layout=lay, device=device,
                                        requires_grad=requires_grad,
                                        check_invariants=check_invariants)
    make.__name__ = f"{lay.name}_tensor"
    make.__doc__ = (f"torch.{lay.name}_tensor({comp_name}, {plain_name}, values, size=None): "
                    f"sparse_compressed_tensor with layout=minidl.{lay.name}.")
    return make


sparse_csr_tensor = _constructor(sparse_csr)
sparse_csc_tensor = _constructor(sparse_csc)
sparse_bsr_tensor = _constructor(sparse_bsr)
sparse_bsc_tensor = _constructor(sparse_bsc)


# ---- conversions ------------------------------------------------------------------------------
class Restructure(Function):
    """A tensor (dense, COO or compressed) in another layout: its stored scalars placed anew
    (``dst``) from where they were (``src``). The gradient is converted back to the input's
    layout, as torch's: a dense input gets a dense one, a sparse input one of its layout
    (its own pattern where the gradient has the output's, else the gradient's nonzeros)."""

    def forward(self, x, target, blocksize=None, dense_dim=None):
        self.x, self.target = x, target
        if isinstance(x, (SparseCOO, SparseCompressed)):
            el = _c.elements(x)
        else:
            el = _c.nonzero_elements(x, dense_dim or 0, _block(target, blocksize))
        self.src, self.in_flat_shape = el.src, el.flat.shape
        if target == "strided":
            out, self.dst = _c.assemble_dense(el)
        elif target == "sparse_coo":
            row_sorted = type(x) is SparseCompressed and x.layout == "sparse_csr"
            out, self.dst = _c.assemble_coo(el, coalesced=row_sorted)
        else:
            index_dtype = x.compressed.dtype if type(x) is SparseCompressed else np.int64
            out, self.dst = _c.assemble(el, target, _block(target, blocksize), index_dtype)
        self.out = out
        return out

    def backward(self, g):
        out, x = self.out, self.x
        if type(x) not in (SparseCOO, SparseCompressed):  # a dense input: a dense gradient
            return _dense_of(g)
        from .backend.sparse import coalesce

        pattern = coalesce(x) if type(x) is SparseCOO else x
        dense_out = type(out) not in (SparseCOO, SparseCompressed)
        if dense_out or type(out) is SparseCompressed and out.same_pattern(g) \
                or type(out) is SparseCOO and type(g) is SparseCOO and _coo_same(out, g):
            # the output's own pattern (to_dense: any dense gradient, masked as torch's)
            gv = (_dense_of(g) if dense_out else g.values).reshape(
                (-1,) + self.in_flat_shape[1:])
            gin = get_array_module(gv).zeros(self.in_flat_shape, dtype=gv.dtype)
            gin[self.src] = gv[self.dst]
            return pattern.with_values(gin.reshape(pattern.values.shape))
        if type(g) in (SparseCOO, SparseCompressed):
            el = _c.elements(g)
        else:
            el = _c.nonzero_elements(g, pattern.dense_dim, _block(
                getattr(pattern, "layout", "sparse_coo"), getattr(pattern, "blocksize", None)))
        if type(pattern) is SparseCOO:
            return _c.assemble_coo(el, coalesced=False)[0]
        return _c.assemble(el, pattern.layout, pattern.blocksize, pattern.compressed.dtype)[0]

    def graph_backward(self, g, out):
        x = self.inputs[0]
        xd = x.data
        if type(xd) not in (SparseCOO, SparseCompressed):
            return g.to_dense() if type(g.data) in (SparseCOO, SparseCompressed) else g
        if self.target == "strided":  # to_dense: g at x's places, in x's layout
            if type(xd) is SparseCOO:
                return _coo.MaskLike.apply(g, pattern=xd)
            return CompressedFromValues.apply(CompressedGather.apply(g, pattern=xd),
                                              pattern=xd)
        if type(xd) is SparseCOO:
            return g.to_sparse()
        return _convert(g, xd.layout, xd.blocksize if _c.blocked(xd.layout) else None,
                        None if type(g.data) is SparseCompressed else xd.dense_dim)

    def name(self):
        names = {"strided": "ToDense", "sparse_coo": "ToSparse"}
        if self.target in names:
            return names[self.target] + "Backward"
        return "ToSparse" + self.target[len("sparse_"):].capitalize() + "Backward"


def _coo_same(out, g):
    return g.shape == out.shape and g.nnz == out.nnz and (
        g.indices is out.indices or bool((g.indices == out.indices).all()))


def _dense_of(g):
    if type(g) is SparseCompressed:
        return _c.to_dense(g)
    if type(g) is SparseCOO:
        from .backend.sparse import to_dense as coo_dense

        return coo_dense(g)
    return g


def _block(target, blocksize):
    if not _c.blocked(target):
        return (1, 1)
    if isinstance(blocksize, int):
        return (blocksize, blocksize)
    return tuple(int(n) for n in blocksize)


def _convert(self, target, blocksize=None, dense_dim=None):
    """``self`` in layout ``target`` (a layout's name), by torch's rules of what converts."""
    data = self.data
    name = {"sparse_csr": "to_sparse_csr", "sparse_csc": "to_sparse_csc",
            "sparse_bsr": "to_sparse_bsr", "sparse_bsc": "to_sparse_bsc"}.get(target, "to_sparse")
    if _c.blocked(target):
        if blocksize is None:
            raise BadArgumentError(f"{name}: conversion from {_layout_name(self)} to "
                                   f"{torch_layout_name(target)} without blocksize argument "
                                   "given is not supported")
        block = _block(target, blocksize)
        if len(block) != 2 or min(block) < 1:
            raise BadArgumentError(f"{name}: blocksize must be two positive ints, got "
                                   f"{blocksize}")
    elif blocksize is not None and target != "sparse_coo":
        raise BadArgumentError(f"{name}: blocksize is only for a blocked layout (sparse_bsr, "
                               f"sparse_bsc), got blocksize={blocksize} for "
                               f"{torch_layout_name(target)}")
    if type(data) is SparseCompressed:
        if dense_dim is not None and dense_dim != data.dense_dim:
            raise BadArgumentError(f"{name}: conversion from {_layout_name(self)} to "
                                   f"{torch_layout_name(target)} with dense_dim argument given "
                                   "is not supported")
        if data.layout == target and (not _c.blocked(target)
                                      or data.blocksize == _block(target, blocksize)):
            return self
        if not _c.blocked(target) and target != "sparse_coo" and _c.blocked(data.layout):
            raise BadArgumentError(
                f"sparse_compressed_{name}: expected SparseCsr or SparseCsc layout but got "
                f"{torch_layout_name(data.layout)}")
        return Restructure.apply(self, target=target, blocksize=blocksize)
    if type(data) is SparseCOO:
        if data.sparse_dim != 2:
            raise BadArgumentError(
                f"coo_{name}: conversion from Sparse to {torch_layout_name(target)} for input "
                "tensors with sparse_dim()!=2 is not supported")
        src = _coo.coalesce(self)
        return Restructure.apply(src, target=target, blocksize=blocksize)
    dense_dim = 0 if dense_dim is None else int(dense_dim)
    if self.ndim < 2 + dense_dim:
        raise BadArgumentError(f"{name}: expected a tensor of at least {2 + dense_dim} dims "
                               f"(2 sparse{f' + {dense_dim} dense' if dense_dim else ''}), got "
                               f"shape {self.shape}")
    if _c.blocked(target):
        rows, cols = self.shape[self.ndim - dense_dim - 2:self.ndim - dense_dim]
        block = _block(target, blocksize)
        if rows % block[0] or cols % block[1]:
            raise BadArgumentError(f"dense_{name}: tensor sparse size ({rows},{cols}) must be "
                                   f"divisible by given blocksize ({block[0]},{block[1]})")
    return Restructure.apply(self, target=target, blocksize=blocksize, dense_dim=dense_dim)


def to_sparse_csr(self, dense_dim=None):
    """This tensor as CSR (a dense one's nonzero entries; a COO one with two sparse dims; a
    CSC one); the gradient comes back in this tensor's layout."""
    return _convert(self, "sparse_csr", dense_dim=dense_dim)


def to_sparse_csc(self, dense_dim=None):
    return _convert(self, "sparse_csc", dense_dim=dense_dim)


def to_sparse_bsr(self, blocksize, dense_dim=None):
    """As BSR with ``blocksize`` (rows, cols) blocks: every block holding a nonzero entry is
    stored whole."""
    return _convert(self, "sparse_bsr", blocksize, dense_dim)


def to_sparse_bsc(self, blocksize, dense_dim=None):
    return _convert(self, "sparse_bsc", blocksize, dense_dim)


_coo_to_sparse = Tensor.to_sparse
_coo_to_dense = Tensor.to_dense


def to_sparse(self, sparse_dim=None, *, layout=None, blocksize=None, dense_dim=None):
    """torch's to_sparse: COO by default (``sparse_dim`` sparse dims), or ``layout``
    (minidl.sparse_csr, ..., with ``blocksize`` for BSR/BSC)."""
    if layout in _LAYOUTS.values():
        if sparse_dim is not None:
            raise BadArgumentError(f"to_sparse: sparse_dim is not supported for layout "
                                   f"{layout}, got sparse_dim={sparse_dim}")
        return _convert(self, layout.name, blocksize, dense_dim)
    if _is_compressed(self):
        if layout not in (None, _coo.sparse_coo):
            raise BadArgumentError(f"to_sparse: unknown layout {layout}")
        if sparse_dim is not None and sparse_dim != self.data.batch_dim + 2:
            raise BadArgumentError(f"to_sparse: sparse_dim must be {self.data.batch_dim + 2} "
                                   f"for a {_layout_name(self)} tensor, got {sparse_dim}")
        return Restructure.apply(self, target="sparse_coo")
    return _coo_to_sparse(self, sparse_dim, layout=layout, blocksize=blocksize,
                          dense_dim=dense_dim)


def to_dense(self, dtype=None, *, masked_grad=None):
    """The dense tensor of the same values; a compressed input's gradient is of its own
    layout and pattern, as torch's."""
    if _is_compressed(self):
        if dtype is not None:
            raise BadArgumentError("dtype argument is not supported by "
                                   f"sparse_{self.data.layout[len('sparse_'):]}_to_dense")
        return Restructure.apply(self, target="strided")
    return _coo_to_dense(self, dtype, masked_grad=masked_grad)


# ---- parts ----------------------------------------------------------------------------------
class CompressedValues(Function):
    def forward(self, x):
        self.pattern = x
        return x.values

    def backward(self, g):
        return self.pattern.with_values(g)

    def graph_backward(self, g, out):
        return CompressedFromValues.apply(g, pattern=self.pattern)

    def name(self):
        return "ValuesBackward"


def _need_compressed(name, t, kinds, what):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    if type(t.data) is not SparseCompressed or t.data.layout not in kinds:
        raise BadArgumentError(f"{name} expected {what} tensor layout but got "
                               f"{_layout_name(t)}")
    return t.data


_ROW = ("sparse_csr", "sparse_bsr")
_COL = ("sparse_csc", "sparse_bsc")


def crow_indices(self):
    return Tensor(_need_compressed("crow_indices", self, _ROW, "sparse row compressed")
                  .compressed)


def col_indices(self):
    return Tensor(_need_compressed("col_indices", self, _ROW, "sparse row compressed").plain)


def ccol_indices(self):
    return Tensor(_need_compressed("ccol_indices", self, _COL, "sparse column compressed")
                  .compressed)


def row_indices(self):
    return Tensor(_need_compressed("row_indices", self, _COL, "sparse column compressed")
                  .plain)


_coo_values = Tensor.values
_coo_nnz = Tensor._nnz
_coo_sparse_dim = Tensor.sparse_dim
_coo_dense_dim = Tensor.dense_dim
_coo_layout = Tensor.layout
_coo_is_sparse = Tensor.is_sparse


def values(self):
    """The values (*batch, nnz, *block, *dense); their gradient reaches this tensor as one
    of its own layout and pattern."""
    if _is_compressed(self):
        return CompressedValues.apply(self)
    return _coo_values(self)


def _nnz(self):
    return self.data.nnz if _is_compressed(self) else _coo_nnz(self)


def sparse_dim(self):
    return 2 if _is_compressed(self) else _coo_sparse_dim(self)


def dense_dim(self):
    return self.data.dense_dim if _is_compressed(self) else _coo_dense_dim(self)


def _coo_only(method):
    original = getattr(Tensor, method)

    def only_coo(self, *args, **kwargs):
        if _is_compressed(self):
            raise BadArgumentError(f"{method} expected sparse coordinate tensor layout but got "
                                   f"{_layout_name(self)}")
        return original(self, *args, **kwargs)
    only_coo.__name__, only_coo.__doc__ = method, original.__doc__
    return only_coo


def _layout_property(self):
    if _is_compressed(self):
        return _LAYOUTS[self.data.layout]
    return _coo_layout.fget(self)


def _is_sparse_csr_property(self):
    return _is_compressed(self) and self.data.layout == "sparse_csr"


# ---- products ---------------------------------------------------------------------------------
class CompressedMM(Function):
    """compressed (n, k) @ dense (k, m). The compressed input's gradient is of its own layout
    and pattern (``masked``: torch.sparse.mm's) or dense (torch.mm's); the dense one's is
    a.T @ g."""

    def forward(self, a, b, masked):
        self.a, self.b, self.masked = a, b, masked
        return _c.mm(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        if input_needed(self, 0):
            ga = a.with_values(_c.sampled(a, g, b.T)) if self.masked else g @ b.T
        if input_needed(self, 1):
            gb = _c.mm_t(a, g)
        return ga, gb

    def graph_backward(self, g, out):
        a, b = self.inputs
        ga = gb = None
        if input_needed(self, 0):
            if self.masked:
                ga = SampledAddmm.apply(g, b.t(), beta=0.0, alpha=1.0, pattern=a.data)
            else:
                ga = g @ b.t()
        if input_needed(self, 1):
            gb = CompressedMM.apply(a.t(), g, masked=self.masked)
        return ga, gb

    def name(self):
        return "SparseAddmmBackward" if self.masked else "MmBackward"


class SampledAddmm(Function):
    """beta * input + alpha * (m1 @ m2) at input's pattern (torch.sparse.sampled_addmm); the
    gradient of input is beta * g on its pattern, m1's alpha * G @ m2.T, m2's alpha * m1.T @ G
    (G: g at the pattern). ``input`` None: the pattern alone (beta unused)."""

    def forward(self, *arrays, beta, alpha, pattern):
        if len(arrays) == 3:
            inp, m1, m2 = arrays
        else:
            inp, (m1, m2) = None, arrays
        self.m1, self.m2, self.pattern = m1, m2, pattern
        self.beta, self.alpha, self.has_input = beta, alpha, inp is not None
        vals = alpha * _c.sampled(pattern, m1, m2)
        if inp is not None and beta != 0:
            vals = vals + beta * inp.values
        return pattern.with_values(vals.astype(m1.dtype, copy=False))

    def backward(self, g):
        gv = _c.gather(g, self.pattern)
        G = self.pattern.with_values(gv)  # noqa: N806  (the sampled gradient, a matrix)
        out = []
        if self.has_input:
            out.append(self.pattern.with_values(gv * self.beta) if input_needed(self, 0)
                       else None)
        k = len(out)
        out.append(self.alpha * _c.mm(G, self.m2.T) if input_needed(self, k) else None)
        out.append(self.alpha * _c.mm_t(G, self.m1).T if input_needed(self, k + 1) else None)
        return tuple(out)

    def graph_backward(self, g, out):
        m1, m2 = self.inputs[-2:]
        p = self.pattern
        G = CompressedFromValues.apply(CompressedGather.apply(g, pattern=p),  # noqa: N806
                                       pattern=p)
        grads = [G * self.beta if input_needed(self, 0) else None] if self.has_input else []
        k = len(grads)
        grads.append(CompressedMM.apply(G, m2.t(), masked=True) * self.alpha
                     if input_needed(self, k) else None)
        grads.append((CompressedMM.apply(G.t(), m1, masked=True) * self.alpha).t()
                     if input_needed(self, k + 1) else None)
        return tuple(grads)

    def name(self):
        return "SparseSampledAddmmBackward"


def _check_mm(name, a, b, masked_name=None):
    if not isinstance(b, Tensor) or type(b.data) in (SparseCOO, SparseCompressed):
        raise NotImplementedError(f"{name}: of a {_layout_name(a)} first operand only a "
                                  f"strided (dense) second operand is supported, got "
                                  f"{_layout_name(b) if isinstance(b, Tensor) else type(b)}")
    data = a.data
    if data.ndim != 2 or b.ndim not in (1, 2):
        raise BadArgumentError(f"{name}: expects a 2-D {_layout_name(a)} matrix (no batch or "
                               f"dense dims) and a 1-D or 2-D dense one, got shapes "
                               f"{data.shape} and {b.shape}")
    if data.shape[1] != b.shape[0]:
        rhs = f"{b.shape[0]}x{b.shape[1]}" if b.ndim == 2 else f"{b.shape[0]}"
        raise BadArgumentError(f"{name}: mat1 and mat2 shapes cannot be multiplied "
                               f"({data.shape[0]}x{data.shape[1]} and {rhs})")
    if data.dtype != b.dtype:
        raise TypeError(f"{name}: expected mat1 and mat2 to have the same dtype, but got: "
                        f"{data.dtype} != {b.dtype}")
    if data.dtype.kind not in "fc":
        raise NotImplementedError(f"{name}: not implemented for {data.dtype} sparse "
                                  "compressed tensors (floating-point only, as torch's)")


def _compressed_mm(a, b, masked, name):
    _check_mm(name, a, b)
    if b.ndim == 1:
        return CompressedMM.apply(a, b.unsqueeze(1), masked=masked).squeeze(1)
    return CompressedMM.apply(a, b, masked=masked)


class SparseMMReduce(Function):
    """CSR (n, k) @ dense (k, m) with each output's stored products reduced by "mean",
    "amax" or "amin" instead of summed (torch.sparse.mm's reduce=; a row with no entry gives
    0). mean's gradient is sum's over the row's count; amax/amin's goes to the entry that
    won (the first of equals), for each output column."""

    def forward(self, a, b, reduce):
        xp = get_array_module(b)
        el = _c.elements(a)
        vals, rows, cols = el.flat[el.src], el.rows, el.cols
        self.a, self.b, self.reduce, self.rows, self.cols, self.vals = a, b, reduce, rows, \
            cols, vals
        n, m = a.shape[0], b.shape[1]
        prods = vals[:, None] * b[cols]
        if reduce == "mean":
            count = xp.bincount(rows, minlength=n).astype(b.dtype)
            self.scale = 1 / xp.maximum(count, 1)
            out = xp.zeros((n, m), dtype=b.dtype)
            _c.scatter_add(out, rows, prods)
            return out * self.scale[:, None]
        from .backend.sparse import scatter_max

        sign = 1 if reduce == "amax" else -1
        best = xp.full((n, m), -xp.inf, dtype=b.dtype)
        scatter_max(best, rows, sign * prods)
        nnz = len(vals)
        won = (sign * prods == best[rows])
        first = xp.full((n, m), nnz, dtype=xp.int64)
        candidates = xp.where(won, xp.arange(nnz, dtype=xp.int64)[:, None], nnz)
        if xp is np:
            np.minimum.at(first, rows, candidates)
        else:  # CuPy: the smallest index as the negated maximum
            neg = -first
            scatter_max(neg, rows, -candidates)
            first = -neg
        self.winner = first[rows] == xp.arange(nnz, dtype=xp.int64)[:, None]  # (nnz, m)
        return xp.where(xp.isinf(best), xp.zeros((), b.dtype), sign * best)

    def backward(self, g):
        a, b, rows, cols, vals = self.a, self.b, self.rows, self.cols, self.vals
        xp = get_array_module(g)
        weight = g[rows] * (self.scale[rows][:, None] if self.reduce == "mean"
                            else self.winner)  # (nnz, m): each product's share of g
        ga = gb = None
        if input_needed(self, 0):
            gv = (weight * b[cols]).sum(axis=-1)
            ga = a.with_values(gv.reshape(a.values.shape))
        if input_needed(self, 1):
            gb = xp.zeros_like(b)
            _c.scatter_add(gb, cols, vals[:, None] * weight)
        return ga, gb

    def name(self):
        return "SparseMmReduceImplBackward"


def sparse_mm(mat1, mat2, reduce="sum"):
    """torch.sparse.mm of a compressed mat1: dense; mat1's gradient of its own layout. With
    ``reduce`` ("sum", "mean", "amax", "amin"; a CSR mat1 only, as torch's) each output
    reduces its row's products so."""
    if reduce not in ("sum", "mean", "amax", "amin"):
        raise BadArgumentError(f"sparse_mm_reduce: reduce type of {reduce} has not been "
                               "enabled.")
    if reduce != "sum":
        _check_mm("sparse.mm", mat1, mat2)
        if mat1.data.layout != "sparse_csr":
            raise BadArgumentError(f"sparse_mm_reduce: expect self to be SparseCsr, got "
                                   f"{_layout_name(mat1)}")
        if mat2.ndim != 2:
            raise BadArgumentError(f"sparse_mm_reduce: expect other to be 2-D, got "
                                   f"{mat2.ndim}-D")
        return SparseMMReduce.apply(mat1, mat2, reduce=reduce)
    return _compressed_mm(mat1, mat2, True, "sparse.mm")


def sparse_addmm(mat, mat1, mat2, *, beta=1.0, alpha=1.0):
    return _scaled_sum(mat, _compressed_mm(mat1, mat2, True, "sparse.addmm"), beta, alpha)


def sampled_addmm(input, mat1, mat2, *, beta=1.0, alpha=1.0, out=None):
    """torch.sparse.sampled_addmm: beta * input + alpha * (mat1 @ mat2) computed only at
    input's (a 2-D CSR tensor's) pattern, as a CSR tensor of that pattern."""
    if out is not None:
        raise NotImplementedError("sparse.sampled_addmm: out= is not supported")
    data = _need_compressed("sampled_addmm", input, ("sparse_csr",),
                            "sparse row compressed (CSR)")
    for name, m in (("mat1", mat1), ("mat2", mat2)):
        if not isinstance(m, Tensor) or type(m.data) in (SparseCOO, SparseCompressed):
            raise BadArgumentError(f"sampled_addmm: Expected {name} to have strided layout")
        if m.ndim != 2:
            raise BadArgumentError(f"sampled_addmm: Expected {name} to be a matrix, got "
                                   f"{m.ndim}-D tensor")
    if data.ndim != 2:
        raise BadArgumentError(f"sampled_addmm: Expected input to be a 2-D CSR matrix (no "
                               f"batch or dense dims), got shape {data.shape}")
    if mat1.shape[1] != mat2.shape[0]:
        raise BadArgumentError(f"sampled_addmm: mat1 and mat2 shapes cannot be multiplied "
                               f"({mat1.shape[0]}x{mat1.shape[1]} and "
                               f"{mat2.shape[0]}x{mat2.shape[1]})")
    if (mat1.shape[0], mat2.shape[1]) != data.shape:
        raise BadArgumentError(f"sampled_addmm: Expected input to have shape "
                               f"{[mat1.shape[0], mat2.shape[1]]}, but got {list(data.shape)}")
    if not data.dtype == mat1.dtype == mat2.dtype:
        raise TypeError(f"sampled_addmm: Expected input, mat1 and mat2 to have the same dtype, "
                        f"got {data.dtype}, {mat1.dtype} and {mat2.dtype}")
    return SampledAddmm.apply(input, mat1, mat2, beta=float(beta), alpha=float(alpha),
                              pattern=data)


# ---- the ops with a compressed form (Function.apply calls these on a compressed input) ------
class CompressedScale(_coo.Scale):
    def name(self):
        return "MulBackward"


class CompressedSum(Function):
    """The sum of all values: a dense 0-d tensor whose gradient is dense, as torch's."""

    def forward(self, x):
        self.shape = x.shape
        total = x.values.sum()
        return get_array_module(x.values).asarray(total)

    def backward(self, g):
        return get_array_module(g).broadcast_to(g, self.shape)

    def graph_backward(self, g, out):
        return g.reshape((1,) * len(self.shape)).expand(*self.shape)

    def name(self):
        return "SumBackward"


class CompressedSumDims(Function):
    """The sum of a 2-D CSR tensor over ``dims`` with keepdim: a CSR tensor whose places are
    those that hold an entry (torch's sum.dim_IntList of CSR); the gradient of each input
    value is the output's gradient at its place, in the input's layout."""

    def forward(self, x, dims):
        xp = get_array_module(x.values)
        el = _c.elements(x)
        zero = xp.zeros_like(el.rows)
        shape2 = tuple(1 if d in dims else n for d, n in enumerate(x.shape))
        moved = _c.Elements(el.batch, zero if 0 in dims else el.rows,
                            zero if 1 in dims else el.cols, el.src, el.flat, (), shape2,
                            el.dense_shape)
        merged, self.inverse = _c.merge(moved)
        self.x = x
        self.out = _c.assemble(merged, "sparse_csr", index_dtype=x.compressed.dtype)[0]
        return self.out

    def backward(self, g):
        return self.x.with_values(_c.gather(g, self.out)[self.inverse])

    def graph_backward(self, g, out):
        taken = CompressedGather.apply(g, pattern=self.out)[Tensor(self.inverse)]
        return CompressedFromValues.apply(taken, pattern=self.x)

    def name(self):
        return "SumBackward"


def _sum_form(x, dim=None, keepdim=False):
    if dim is None or tuple(sorted(d % x.ndim for d in np.atleast_1d(dim))) == tuple(
            range(x.ndim)) and not keepdim:
        return CompressedSum.apply(x)
    if not keepdim:
        raise BadArgumentError(f"reduction operations on {_layout_name(x)} tensors with "
                               "keepdim=False is unsupported")
    if x.data.layout != "sparse_csr":
        raise BadArgumentError("Currently the only compressed sparse format supported for "
                               f"sum.dim_IntList is CSR, but got layout {_layout_name(x)}")
    if x.ndim != 2:
        raise BadArgumentError(f"sum: over dims of a CSR tensor with batch or dense dims is "
                               f"not supported, got shape {x.shape}")
    dims = {int(d) % 2 for d in np.atleast_1d(dim)}
    return CompressedSumDims.apply(x, dims=frozenset(dims))


class CompressedAsDense(Function):
    """The dense form of a compressed tensor whose gradient is the dense gradient itself (not
    masked): the compressed operand of ``compressed + dense``, as torch's AddBackward."""

    def forward(self, x):
        return _c.to_dense(x)

    def backward(self, g):
        return g

    def graph_backward(self, g, out):
        return g

    def name(self):
        return "AddBackward"


def _is_plain_dense(t):
    return isinstance(t, Tensor) and type(t.data) not in (SparseCOO, SparseCompressed)


def _scalar_form(op):
    def form(a, b):
        if op is Mul:
            if _is_compressed(b) and not _is_compressed(a):
                a, b = b, a
            if _is_compressed(a) and _is_plain_dense(b) and b.ndim == 0 \
                    and not b.requires_grad:
                # on the GPU the number stays there (a 0-d array), not read back
                factor = b.data.item() if type(b.data) is np.ndarray else b.data
                return CompressedScale.apply(a, factor=factor)
            if _is_compressed(a) and _is_plain_dense(b) and b.shape == a.shape:
                # times a dense tensor of its shape: its values times b at its places, a
                # tensor of a's pattern (as torch's forward; a's gradient of its layout)
                vals = CompressedValues.apply(a) * CompressedGather.apply(b, pattern=a.data)
                return CompressedFromValues.apply(vals, pattern=a.data)
        raise NotImplementedError(
            f"{op.__name__}: of a {_layout_name(a if _is_compressed(a) else b)} tensor only the "
            "product with a number or with a dense tensor of its shape is supported; convert "
            "with .to_dense() first")
    return form


def _add_form(a, b):
    """compressed + compressed of one layout (the union of their patterns, Add's own
    forward), or compressed + dense of one shape: dense, each operand's gradient the dense
    one, as torch's."""
    for x, y in ((a, b), (b, a)):
        if _is_compressed(x) and _is_plain_dense(y):
            if x.shape != y.shape:
                raise BadArgumentError(
                    f"add: expected 'self' and 'other' to have same size, but self has size "
                    f"{list(a.shape)} while other has size {list(b.shape)} (FYI: op2-sparse "
                    "addition does not currently support broadcasting)")
            return CompressedAsDense.apply(a) + b if x is a else a + CompressedAsDense.apply(b)
    raise NotImplementedError(f"add: of {_layout_name(a)} and {_layout_name(b)} operands only "
                              "two of one compressed layout, or one and a dense tensor of its "
                              "shape, are supported")


class SparseSparseMM(Function):
    """CSR (n, k) @ CSR (k, m) -> CSR on the structural pattern (torch's mm of two CSR
    tensors). The gradients are the structural products G @ b.T and a.T @ G, CSR tensors of
    their own patterns (not a's or b's), G being the gradient at the result's places: as
    torch's."""

    def forward(self, a, b):
        self.a, self.b, self.out = a, b, _c.spgemm(a, b)[0]
        return self.out

    def backward(self, g):
        G = self.out.with_values(_c.gather(g, self.out))  # noqa: N806

        def as_csr(x):  # the transpose (CSC) of a CSR operand, as CSR
            return _c.assemble(_c.elements(x.transpose((1, 0))), "sparse_csr",
                               index_dtype=x.compressed.dtype)[0]
        ga = _c.spgemm(G, as_csr(self.b))[0] if input_needed(self, 0) else None
        gb = _c.spgemm(as_csr(self.a), G)[0] if input_needed(self, 1) else None
        return ga, gb

    def graph_backward(self, g, out):
        a, b = self.inputs
        G = CompressedFromValues.apply(CompressedGather.apply(g, pattern=self.out),  # noqa: N806
                                       pattern=self.out)
        ga = gb = None
        if input_needed(self, 0):
            ga = SparseSparseMM.apply(G, b.t().to_sparse_csr())
        if input_needed(self, 1):
            gb = SparseSparseMM.apply(a.t().to_sparse_csr(), G)
        return ga, gb

    def name(self):
        return "MmBackward"


def _sparse_sparse_mm(a, b, name):
    for t in (a, b):
        if t.data.layout != "sparse_csr" or t.ndim != 2:
            raise NotImplementedError(f"{name}: of two sparse compressed tensors only 2-D CSR "
                                      f"@ CSR is supported, got {_layout_name(a)} "
                                      f"{tuple(a.shape)} and {_layout_name(b)} {tuple(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise BadArgumentError(f"{name}: mat1 and mat2 shapes cannot be multiplied "
                               f"({a.shape[0]}x{a.shape[1]} and {b.shape[0]}x{b.shape[1]})")
    if a.dtype != b.dtype:
        raise TypeError(f"{name}: expected mat1 and mat2 to have the same dtype, but got: "
                        f"{a.dtype} != {b.dtype}")
    return SparseSparseMM.apply(a, b)


def _matmul_form(a, b):
    if _is_compressed(a) and _is_compressed(b):
        return _sparse_sparse_mm(a, b, "mm")
    if _is_compressed(a) and not _is_compressed(b) and type(b.data) is not SparseCOO:
        return _compressed_mm(a, b, False, "mm")
    if _is_compressed(b) and not _is_compressed(a) and type(a.data) is not SparseCOO:
        if a.ndim == 1:
            return _compressed_mm(b.t(), a, False, "mm")
        if a.ndim != 2:
            raise BadArgumentError(f"mm: a {a.ndim}-D dense operand times a "
                                   f"{_layout_name(b)} matrix is not supported")
        return _compressed_mm(b.t(), a.t(), False, "mm").t()
    raise NotImplementedError(f"matmul: of {_layout_name(a)} and {_layout_name(b)} operands "
                              "only a compressed matrix times a dense one (or dense times "
                              "compressed) is supported")


def _linear_form(x, w, b=None):
    if _is_compressed(w) and not _is_compressed(x):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        y = _compressed_mm(w, x2.t(), False, "linear").t()
        y = y.reshape(*lead, w.shape[0])
    elif _is_compressed(x) and not _is_compressed(w):
        y = _compressed_mm(x, w.t(), False, "linear")
    else:
        raise NotImplementedError("linear: of compressed operands only one (input or weight) "
                                  "may be sparse")
    return y if b is None else y + b


def _dispatch(cls, compressed_form):
    coo_form = autograd.sparse_forms.get(cls)

    def form(*tensors, **kwargs):
        if any(_is_compressed(t) for t in tensors if isinstance(t, Tensor)):
            return compressed_form(*tensors, **kwargs)
        if coo_form is None:
            raise NotImplementedError(f"{cls.__name__}: not supported for sparse COO tensors "
                                      "(layout minidl.sparse_coo); convert with .to_dense() "
                                      "first")
        return coo_form(*tensors, **kwargs)
    return form


def _values_form(cls):
    """A zero-preserving pointwise op (f(0) = 0: abs, relu, sin, sqrt, ...) on the stored
    values, the pattern kept, as torch runs it on a compressed tensor; built of the values'
    op between CompressedValues and CompressedFromValues, so that its gradient (of the
    input's layout and pattern) and double backward are theirs."""
    def form(x, **kwargs):
        y = cls.apply(CompressedValues.apply(x), **kwargs)
        return CompressedFromValues.apply(y, pattern=x.data)
    return form


# the pointwise ops torch 2.13 runs on a compressed tensor (those with f(0) = 0)
_ZERO_PRESERVING = (Abs, ReLU, Sqrt, Tanh, Sin, Sinh, Tan, Asin, Asinh, Atan, Atanh, Erf,
                    Erfinv, Expm1, Log1p, Sign, Floor, Ceil, Trunc, Round, Deg2Rad, Rad2Deg)


def _clone_form(x, keep_layout=False):
    return _coo.SparseClone.apply(x)


for _cls, _form in {MatMul: _matmul_form, Mul: _scalar_form(Mul), Div: _scalar_form(Div),
                    Sum: _sum_form, Linear: _linear_form, Clone: _clone_form,
                    **{cls: _values_form(cls) for cls in _ZERO_PRESERVING}}.items():
    autograd.sparse_forms[_cls] = _dispatch(_cls, _form)
autograd.sparse_forms[Add] = _dispatch(Add, _add_form)

_coo.compressed_forms.update({"mm": sparse_mm, "addmm": sparse_addmm,
                              "sampled_addmm": sampled_addmm})

for _name, _fn in {"to_sparse_csr": to_sparse_csr, "to_sparse_csc": to_sparse_csc,
                   "to_sparse_bsr": to_sparse_bsr, "to_sparse_bsc": to_sparse_bsc,
                   "to_sparse": to_sparse, "to_dense": to_dense, "crow_indices": crow_indices,
                   "col_indices": col_indices, "ccol_indices": ccol_indices,
                   "row_indices": row_indices, "values": values, "_nnz": _nnz,
                   "sparse_dim": sparse_dim, "dense_dim": dense_dim}.items():
    setattr(Tensor, _name, _fn)
for _name in ("indices", "_indices", "_values", "coalesce", "is_coalesced"):
    setattr(Tensor, _name, _coo_only(_name))
Tensor.layout = property(_layout_property)
Tensor.is_sparse_csr = property(_is_sparse_csr_property)
