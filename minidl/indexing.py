"""Ops that pick or place elements by integer index or mask, under PyTorch's names: gather,
scatter, scatter_add, index_select, index_add, take_along_dim, masked_select, nonzero,
argwhere. One Function per differentiable op, forward and backward side by side, on the array
module of the inputs; the index arrays are checked on the host before any op runs, so a bad
index raises an IndexError that names it and the size it does not fit.

Tensor's methods (``x.gather(...)``, ``x.scatter_(...)``) are installed by tensor.py from
``TENSOR_METHODS``; this module imports only ``backend``, ``autograd`` and ``ops``.
"""
from __future__ import annotations

import numpy as np

from . import autograd
from .autograd import Function, unbroadcast
from .backend import get_array_module, to_numpy
from .autograd import first_order_only
from .ops import (
    BadArgumentError, Expand, GetItem, GetItemGrad, NonZero, UnsupportedDtypeError, Where,
    _is_number, constant, fill_value, keep_where, nonzero_columns, traces_untracked, wrap_dim,
)


class IndexArgumentError(IndexError, ValueError, RuntimeError):
    """An index out of bounds, or of the wrong shape: PyTorch raises a RuntimeError or an
    IndexError (depending on the op), minidl's older checks a ValueError or an IndexError."""


class IndexDtypeError(IndexError, UnsupportedDtypeError):
    """An index of a dtype the op does not take: a RuntimeError or an IndexError in PyTorch
    (index_fill's), a TypeError as minidl's other dtype errors."""


def add_at(out, index, values):
    """``out[index] += values`` where ``index`` may repeat (the gradient of a gather)."""
    xp = get_array_module(out)
    if xp is np or hasattr(xp.add, "at"):  # CuPy >= 12 has ufunc.at
        xp.add.at(out, index, values)
    else:
        import cupyx

        cupyx.scatter_add(out, index, values)


def _grid(index, dim):
    """The full fancy index that ``index`` (an integer array along ``dim``) stands for: every
    other dim takes its own position, so ``a[_grid(index, dim)]`` is torch.gather."""
    xp = get_array_module(index)
    nd = index.ndim
    where = [xp.arange(n).reshape((-1,) + (1,) * (nd - i - 1)) for i, n in enumerate(index.shape)]
    where[dim] = index
    return tuple(where)


def _tensor(x, name, what):
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")
    return x


def _index_array(name, index, size, dim, int64_only=True, device=None, negative=False):
    """The index as an array with negatives refused (as PyTorch's gather/scatter; ``take`` and
    ``negative=True`` allow them from -size) and every value checked against ``size``: an
    IndexError naming the first bad one. int64, or int32 too where not ``int64_only``."""
    _tensor(index, name, "index")
    if device is not None and index.device != device:
        raise ValueError(f"{name}: index is on {index.device}, input on {device}; move the "
                         f"index with .to('{device}') first")
    dt = index.data.dtype
    if dt != np.int64 and (int64_only or dt != np.int32):
        wanted = "int64" if int64_only else "int32 or int64"
        raise IndexDtypeError(f"{name}: index must be an {wanted} tensor, got dtype {dt}")
    data = index.data
    low = -size if name == "take" or negative else 0
    if data.size and type(data) is not np.ndarray:
        # on the GPU: the range measured on the host where the index came from there (no
        # read-back), else one flag read back instead of the whole index
        known = getattr(index, "_host_range", None)
        if known is not None and known[0] is data:
            if low <= known[1] and known[2] < size:
                return data
        elif not bool(((data < low) | (data >= size)).any()):
            return data
    if data.size:
        host = to_numpy(data)
        bad = (host < low) | (host >= size)
        if bad.any():
            value = int(host[bad].reshape(-1)[0])
            raise IndexArgumentError(f"{name}: index {value} is out of bounds for dimension "
                                     f"{dim} with size {size}")
    return data


def _check_same_dims(name, input, index, dim, others=()):
    """gather/scatter: index has input's number of dims, and no dim larger than input's
    (than src's, for scatter), except along ``dim`` for input."""
    if index.ndim != max(input.ndim, 1) and not (index.ndim == 0 and input.ndim == 0):
        raise BadArgumentError(f"{name}: index has {index.ndim} dims, input {input.ndim}; they must "
                         f"have the same number of dims (index {index.shape}, input "
                         f"{input.shape})")
    for i in range(index.ndim):
        if i != dim and input.ndim and index.shape[i] > input.shape[i]:
            raise BadArgumentError(f"{name}: index {index.shape} is larger than input {input.shape} "
                             f"in dim {i}")
        for what, t in others:
            if t.ndim and index.shape[i] > t.shape[i]:
                raise BadArgumentError(f"{name}: index {index.shape} is larger than {what} "
                                 f"{t.shape} in dim {i}")


class Gather(Function):
    """``out[i][j] = a[index[i][j]][j]`` along ``dim`` (torch.gather); the gradient adds each
    output's back where it came from (repeats add up)."""

    complex_grad = True

    def forward(self, a, index, dim):
        self.shape, self.where = a.shape, _grid(index, dim)
        return a[self.where]

    def backward(self, g):
        out = get_array_module(g).zeros(self.shape, dtype=g.dtype)
        add_at(out, self.where, g)
        return out

    def graph_backward(self, g, out):
        return GetItemGrad.apply(g, shape=self.shape, index=self.where)


def _written_elsewhere(g, where):
    """A bool array of ``g``'s shape, False at ``where`` (the places a scatter wrote)."""
    keep = get_array_module(g.data).ones(g.shape, dtype=bool)
    keep[where] = False
    return keep


def _into_source(gv, shape, part):
    """``gv`` (index's shape) placed at ``part`` of zeros of the source's ``shape``."""
    return gv if gv.shape == tuple(shape) else GetItemGrad.apply(gv, shape=shape, index=part)


class Scatter(Function):
    """A copy of ``a`` with ``src``'s values written (or, with ``add``, added) at ``index``
    along ``dim``. Written positions take no gradient from ``a``; ``src``'s gradient is the
    incoming one gathered at the same positions (PyTorch's rule, repeats included)."""

    complex_grad = True

    def forward(self, a, src, index, dim, add):
        self.where, self.add = _grid(index, dim), add
        self.src_shape, self.part = src.shape, tuple(slice(0, n) for n in index.shape)
        out = a.copy()
        values = src[self.part]
        if add:
            add_at(out, self.where, values.astype(a.dtype, copy=False))
        else:
            out[self.where] = values
        return out

    def backward(self, g):
        xp = get_array_module(g)
        ga = g
        if not self.add:
            ga = g.copy()
            ga[self.where] = 0
        gs = xp.zeros(self.src_shape, dtype=g.dtype)
        gs[self.part] = g[self.where]
        return ga, gs

    def graph_backward(self, g, out):
        ga = g if self.add else keep_where(_written_elsewhere(g, self.where), g)
        gs = _into_source(GetItem.apply(g, index=self.where), self.src_shape, self.part)
        return ga, gs


def gather(input, dim, index, *, sparse_grad=False):
    """``input``'s values at ``index`` along ``dim`` (int64, same number of dims as input)."""
    _tensor(input, "gather", "input")
    d = wrap_dim(dim, input.ndim, "gather")
    _tensor(index, "gather", "index")
    _check_same_dims("gather", input, index, d)
    idx = _index_array("gather", index, input.shape[d] if input.ndim else 1, d,
                       int64_only=False, device=input.device)
    if input.ndim == 0:
        return Gather.apply(input.reshape(1), index=idx.reshape(1), dim=0).reshape(())
    return Gather.apply(input, index=idx, dim=d)


def _scatter(name, input, dim, index, src, value, add, reduce=None):
    _tensor(input, name, "input")
    if reduce is not None and reduce not in ("add", "multiply"):
        raise ValueError(f"{name}: reduce must be 'add' or 'multiply', got {reduce!r}")
    if src is None and value is None:
        raise TypeError(f"{name}: pass src (a tensor) or value (a number)")
    if src is not None and value is not None:
        raise TypeError(f"{name}: pass src or value, not both")
    if src is not None and not isinstance(src, autograd.Tensor):
        if _is_number(src) or isinstance(src, complex):
            src, value = None, src
        else:
            raise TypeError(f"{name}: src must be a Tensor, got {type(src).__name__}")
    d = wrap_dim(dim, input.ndim, name)
    _tensor(index, name, "index")
    xp = get_array_module(input.data)
    if src is None:  # an imaginary part, a number beyond the dtype's range refused, as torch
        if not isinstance(value, (bool, np.bool_)):
            value = fill_value(value, input.data.dtype, name)
        if traces_untracked() and index.ndim:  # expanded in the graph, at the index's size
            src = Expand.apply(autograd.Tensor(xp.asarray(value, dtype=input.data.dtype)),
                               shape=tuple(index.shape))
        else:
            src = autograd.Tensor(xp.full(index.shape, value, dtype=input.data.dtype))
    if src.ndim != index.ndim:
        raise ValueError(f"{name}: src has {src.ndim} dims, index {index.ndim}; they must have "
                         "the same number of dims")
    _check_same_dims(name, input, index, d, others=(("src", src),))
    idx = _index_array(name, index, input.shape[d] if input.ndim else 1, d, int64_only=False,
                       device=input.device)
    if src.data.dtype != input.data.dtype:  # PyTorch refuses it (a number was made at its dtype)
        raise UnsupportedDtypeError(f"{name}: src has dtype {src.data.dtype}, input "
                                    f"{input.data.dtype}; they must match")
    if reduce is not None:  # the older API: scatter_reduce's sum or prod, input included
        return scatter_reduce(input, dim, index, src, "sum" if reduce == "add" else "prod")
    if input.ndim == 0:
        out = Scatter.apply(input.reshape(1), src.reshape(1), index=idx.reshape(1), dim=0, add=add)
        return out.reshape(())
    return Scatter.apply(input, src, index=idx, dim=d, add=add)


def scatter(input, dim, index, src=None, *, value=None, reduce=None):
    """A copy of ``input`` with ``src`` (a tensor, or a number) written at ``index`` along dim."""
    return _scatter("scatter", input, dim, index, src, value, add=False, reduce=reduce)


def scatter_add(input, dim, index, src):
    """A copy of ``input`` with ``src`` added at ``index`` along ``dim`` (repeats add up)."""
    return _scatter("scatter_add", input, dim, index, src, None, add=True)


def _ufunc_at(xp, name, out, where, values):
    ufunc = getattr(xp, name)
    if xp is not np and name not in ("add", "maximum", "minimum"):
        # CuPy's ufunc.at runs only where it has an atomic scatter (add, max, min, ...):
        # multiply (scatter_reduce's prod) goes through the host
        host = to_numpy(out)
        grid = tuple(to_numpy(w) for w in where) if isinstance(where, tuple) else to_numpy(where)
        getattr(np, name).at(host, grid, to_numpy(values))
        out[...] = xp.asarray(host)
        return
    if xp is np or hasattr(ufunc, "at"):
        ufunc.at(out, where, values)
    elif name == "add":
        add_at(out, where, values)
    else:  # CuPy without ufunc.at: cupyx's scatter kernels
        import cupyx

        getattr(cupyx, {"maximum": "scatter_max", "minimum": "scatter_min"}[name])(
            out, where, values)


class ScatterReduce(Function):
    """``src``'s values reduced (sum, prod, mean, amax, amin) into a copy of ``a`` at
    ``index`` along ``dim``, ``a``'s own value taking part where ``include_self``. Gradients as
    PyTorch's: prod's exact with zeros (the product of the other contributors), amax/amin's
    shared evenly among the contributors equal to the result."""

    IDENTITY = {"sum": 0, "mean": 0, "prod": 1, "amax": -np.inf, "amin": np.inf}

    def forward(self, a, src, index, dim, reduce, include_self):
        xp = get_array_module(a)
        self.where, self.reduce, self.include_self = _grid(index, dim), reduce, include_self
        self.index, self.dim = index, dim
        self.part = tuple(slice(0, n) for n in index.shape)
        self.src_shape = src.shape
        values = src[self.part]
        hit = xp.zeros(a.shape, dtype=bool)
        hit[self.where] = True
        out = a.copy()
        if not include_self:
            identity = self.IDENTITY[reduce]
            if a.dtype.kind in "iub" and reduce in ("amax", "amin"):
                info = np.iinfo(a.dtype) if a.dtype.kind != "b" else None
                identity = (info.min if reduce == "amax" else info.max) if info else reduce == "amin"
            out[hit] = identity
        name = {"sum": "add", "mean": "add", "prod": "multiply", "amax": "maximum",
                "amin": "minimum"}[reduce]
        _ufunc_at(xp, name, out, self.where, values)
        if reduce == "mean":
            count = xp.zeros(a.shape, dtype=a.dtype)
            add_at(count, self.where, xp.ones(values.shape, dtype=a.dtype))
            if include_self:
                count = count + 1
            count = xp.where(hit, count, 1)
            out = out // count if a.dtype.kind in "iub" else out / count
            self.count = count
        self.hit = hit
        self.save_for_backward(a, values, out)
        return out.astype(a.dtype, copy=False)

    def backward(self, g):
        a, values, out = self.saved
        xp = get_array_module(g)
        where, hit = self.where, self.hit
        reduce = self.reduce
        zero = xp.zeros((), dtype=g.dtype)
        if reduce in ("sum", "mean"):
            g2 = g / self.count if reduce == "mean" else g
            ga = g2 if self.include_self else xp.where(hit, zero, g2)
            gv = g2[where]
        elif reduce == "prod":
            # per position: the contributors' product without their zeros, and the zero count
            nonzero = xp.ones(a.shape, dtype=a.dtype)
            zeros = xp.zeros(a.shape, dtype=np.int64)
            if self.include_self:
                nonzero = xp.where(a == 0, 1, a).astype(a.dtype)
                zeros = (a == 0).astype(np.int64)
            _ufunc_at(xp, "multiply", nonzero, where, xp.where(values == 0, 1, values))
            add_at(zeros, where, (values == 0).astype(np.int64))

            def others(c, n_zero, prod_nz, y):
                with np.errstate(divide="ignore", invalid="ignore"):
                    return xp.where(n_zero == 0, y / xp.where(c == 0, 1, c),
                                    xp.where((n_zero == 1) & (c == 0), prod_nz, 0))
            ga = g * others(a, zeros, nonzero, out)
            if not self.include_self:
                ga = xp.where(hit, zero, g)
            ga = xp.where(hit, ga, g)
            gv = g[where] * others(values, zeros[where], nonzero[where], out[where])
        else:  # amax / amin: shared among the contributors equal to the result
            ties = xp.zeros(a.shape, dtype=g.dtype)
            add_at(ties, where, (values == out[where]).astype(g.dtype))
            self_tie = (a == out) & hit if self.include_self else xp.zeros(a.shape, bool)
            ties = ties + self_tie
            with np.errstate(divide="ignore", invalid="ignore"):
                share = g / xp.where(ties == 0, 1, ties)
            ga = xp.where(hit, xp.where(self_tie, share, zero), g)
            gv = xp.where(values == out[where], share[where], zero)
        gs = xp.zeros(self.src_shape, dtype=g.dtype)
        gs[self.part] = gv
        return ga.astype(g.dtype, copy=False), gs

    def graph_backward(self, g, out):
        a, src = self.inputs
        xp = get_array_module(g.data)
        where, reduce = self.where, self.reduce
        values = src if src.shape == self.index.shape else GetItem.apply(src, index=self.part)
        if reduce in ("sum", "mean"):
            g2 = g / constant(self.count) if reduce == "mean" else g
            ga = g2 if self.include_self else keep_where(~self.hit, g2)
            gv = GetItem.apply(g2, index=where)
        elif reduce == "prod":
            # each contributor's gradient is the product of the others: the same scatter with
            # its own value replaced by 1 (PyTorch's form), differentiable where at most one
            # of src's values at a place is 0
            zero_src = values.data == 0
            zeros = xp.zeros(a.shape, dtype=np.int64)
            add_at(zeros, where, zero_src.astype(np.int64))
            if (zeros > 1).any():
                return first_order_only(self, g)
            one = constant(xp.ones((), dtype=g.data.dtype))
            if self.include_self:
                a_one = Where.apply(constant(a.data == 0), one, a)
                others = ScatterReduce.apply(a_one, values, index=self.index, dim=self.dim,
                                             reduce="prod", include_self=True)
                ga = g * others / a_one
            else:
                ga = keep_where(~self.hit, g)
            v_one = Where.apply(constant(zero_src), one, values)
            at_zero = ScatterReduce.apply(a, v_one, index=self.index, dim=self.dim,
                                          reduce="prod", include_self=self.include_self)
            gv = GetItem.apply(g, index=where) * Where.apply(
                constant(zero_src), GetItem.apply(at_zero, index=where),
                GetItem.apply(out, index=where) / v_one)
        else:  # amax / amin: piecewise linear, shares that are constants (backward's on ones)
            share_a, share_src = self.backward(xp.ones(g.shape, dtype=g.data.dtype))
            ga = g * constant(share_a)
            gv = GetItem.apply(g, index=where) * constant(share_src[self.part])
        return ga, _into_source(gv, self.src_shape, self.part)


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    """``src`` reduced into a copy of ``input`` at ``index`` along ``dim``: reduce is 'sum',
    'prod', 'mean', 'amax' or 'amin'; ``include_self`` lets input's value take part."""
    if reduce not in ScatterReduce.IDENTITY:
        raise ValueError(f"scatter_reduce: reduce must be one of 'sum', 'prod', 'mean', "
                         f"'amax', 'amin', got {reduce!r}")
    _tensor(input, "scatter_reduce", "input")
    _tensor(src, "scatter_reduce", "src")
    d = wrap_dim(dim, input.ndim, "scatter_reduce")
    _tensor(index, "scatter_reduce", "index")
    if src.ndim != index.ndim:
        raise ValueError(f"scatter_reduce: src has {src.ndim} dims, index {index.ndim}; they "
                         "must have the same number of dims")
    _check_same_dims("scatter_reduce", input, index, d, others=(("src", src),))
    idx = _index_array("scatter_reduce", index, input.shape[d] if input.ndim else 1, d,
                       int64_only=False, device=input.device)
    if src.data.dtype != input.data.dtype:
        raise UnsupportedDtypeError(f"scatter_reduce: src has dtype {src.data.dtype}, input "
                        f"{input.data.dtype}; they must match")
    kind = input.data.dtype.kind
    if (kind == "b" and reduce == "mean") or (kind == "c" and reduce in ("amax", "amin")):
        raise UnsupportedDtypeError(f"scatter_reduce: reduce='{reduce}' is not implemented for "
                                    f"{input.data.dtype} tensors (PyTorch refuses it too)")
    if input.ndim == 0:
        return ScatterReduce.apply(input.reshape(1), src.reshape(1), index=idx.reshape(1), dim=0,
                                   reduce=reduce, include_self=include_self).reshape(())
    return ScatterReduce.apply(input, src, index=idx, dim=d, reduce=reduce,
                               include_self=bool(include_self))


class IndexAdd(Function):
    """A copy of ``a`` with ``alpha * source`` added at ``index`` along ``dim``."""

    complex_grad = True

    def forward(self, a, source, index, dim, alpha):
        self.where, self.dim, self.alpha = (slice(None),) * dim + (index,), dim, alpha
        out = a.copy()
        add_at(out, self.where, (source * alpha if alpha != 1 else source).astype(a.dtype))
        return out

    def backward(self, g):
        gs = g[self.where]
        return g, (gs * self.alpha if self.alpha != 1 else gs)

    def graph_backward(self, g, out):
        gs = GetItem.apply(g, index=self.where)
        return g, (gs * self.alpha if self.alpha != 1 else gs)


class IndexSelect(Function):
    complex_grad = True

    def forward(self, a, index, dim):
        self.shape, self.where = a.shape, (slice(None),) * dim + (index,)
        return a[self.where]

    def backward(self, g):
        out = get_array_module(g).zeros(self.shape, dtype=g.dtype)
        add_at(out, self.where, g)
        return out

    def graph_backward(self, g, out):
        return GetItemGrad.apply(g, shape=self.shape, index=self.where)


def _vector_index(name, index, size, dim, device=None, int64_only=False, negative=False):
    _tensor(index, name, "index")
    if index.ndim > 1:
        raise IndexArgumentError(f"{name}: index must be 0-d or 1-d, got shape {index.shape}")
    idx = _index_array(name, index, size, dim, int64_only=int64_only, device=device,
                       negative=negative)
    return idx if idx.ndim == 1 else idx.reshape(-1)  # the index's own array: the ONNX
    # exporter follows it by identity


def index_select(input, dim, index):
    """The slices of ``input`` at ``index`` (1-d) along ``dim``."""
    _tensor(input, "index_select", "input")
    d = wrap_dim(dim, input.ndim, "index_select")
    if input.ndim == 0:
        idx = _vector_index("index_select", index, 1, d, input.device)
        if idx.size != 1:
            raise IndexError(f"index_select: the index of a 0-d tensor can have only 1 value, "
                             f"got {idx.size}")
        return IndexSelect.apply(input.reshape(1), index=idx, dim=0).reshape(())
    idx = _vector_index("index_select", index, input.shape[d], d, input.device)
    return IndexSelect.apply(input, index=idx, dim=d)


def index_add(input, dim, index, source, *, alpha=1):
    """A copy of ``input`` with ``alpha * source[i]`` added to slice ``index[i]`` along dim."""
    _tensor(input, "index_add", "input")
    _tensor(source, "index_add", "source")
    d = wrap_dim(dim, input.ndim, "index_add")
    size = input.shape[d] if input.ndim else 1
    idx = _vector_index("index_add", index, size, d, input.device)
    expected = input.shape[:d] + (idx.size,) + input.shape[d + 1:] if input.ndim else (idx.size,)
    got = source.shape if source.ndim else (1,)
    if input.ndim and tuple(got) != tuple(expected):
        raise ValueError(f"index_add: source has shape {source.shape}; for input {input.shape}, "
                         f"dim {dim} and {idx.size} indices it must be {expected}")
    if source.data.dtype != input.data.dtype:
        raise UnsupportedDtypeError(f"index_add: source has dtype {source.data.dtype}, input "
                        f"{input.data.dtype}; they must match")
    if input.ndim == 0:
        return IndexAdd.apply(input.reshape(1), source.reshape(1), index=idx, dim=0,
                              alpha=alpha).reshape(())
    return IndexAdd.apply(input, source, index=idx, dim=d, alpha=alpha)


def take_along_dim(input, indices, dim=None):
    """``input``'s values at ``indices`` along ``dim``, the two broadcast against each other in
    the other dims; with ``dim=None`` both are flattened first."""
    _tensor(input, "take_along_dim", "input")
    _tensor(indices, "take_along_dim", "indices")
    if indices.data.dtype != np.int64:
        raise UnsupportedDtypeError(f"take_along_dim: indices must be an int64 tensor, got dtype "
                                    f"{indices.data.dtype}")
    if dim is None:
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    d = wrap_dim(dim, input.ndim, "take_along_dim")
    if input.ndim != indices.ndim:
        raise ValueError(f"take_along_dim: input {input.shape} and indices {indices.shape} "
                         "must have the same number of dims")
    a_shape, i_shape = list(input.shape), list(indices.shape)
    a_shape[d] = i_shape[d] = 1
    try:
        common = list(np.broadcast_shapes(tuple(a_shape), tuple(i_shape)))
    except ValueError:
        raise ValueError(f"take_along_dim: input {input.shape} and indices {indices.shape} do "
                         f"not broadcast outside dim {dim}") from None
    a_target = common.copy()
    a_target[d] = input.shape[d]
    i_target = common.copy()
    i_target[d] = indices.shape[d]
    a = input if tuple(a_target) == input.shape else Expand.apply(input, shape=tuple(a_target))
    idx = indices.data
    xp = get_array_module(idx)
    n = input.shape[d]
    if idx.size and bool((idx < 0).any()):  # over a dim, -1 is the last (torch takes it)
        idx = xp.where((idx < 0) & (idx >= -n), idx + n, idx)
    if tuple(i_target) != indices.shape:
        idx = xp.broadcast_to(idx, tuple(i_target))
    return gather(a, d, autograd.Tensor(idx))


def masked_select(input, mask):
    """The elements of ``input`` where the bool ``mask`` holds (both broadcast), as 1-d."""
    _tensor(input, "masked_select", "input")
    _tensor(mask, "masked_select", "mask")
    if mask.data.dtype != np.bool_:
        raise UnsupportedDtypeError(f"masked_select: mask must be a bool tensor, got dtype {mask.data.dtype}")
    try:
        shape = np.broadcast_shapes(input.shape, mask.shape)
    except ValueError:
        raise ValueError(f"masked_select: input {input.shape} and mask {mask.shape} do not "
                         "broadcast") from None
    a = input if input.shape == shape else Expand.apply(input, shape=shape)
    m = mask.data
    if m.shape != shape:
        m = get_array_module(m).broadcast_to(m, shape)
    if not shape:
        return GetItem.apply(a.reshape(1), index=m.reshape(1))
    return GetItem.apply(a, index=m)


def nonzero(input, *, as_tuple=False):
    """The int64 positions of nonzero elements: an (n, ndim) tensor, or with ``as_tuple`` one
    1-d tensor per dim (a 0-d input counts as 1-d)."""
    _tensor(input, "nonzero", "input")
    xp = get_array_module(input.data)
    data = input.data
    if data.ndim and traces_untracked():  # recorded, so that the ONNX exporter sees them
        return nonzero_columns(input) if as_tuple else NonZero.apply(input)
    if as_tuple:
        found = xp.nonzero(data.reshape(1) if data.ndim == 0 else data)
        return tuple(autograd.Tensor(i.astype(np.int64)) for i in found)
    if data.ndim == 0:
        return autograd.Tensor(xp.zeros((int(bool(data)), 0), dtype=np.int64))
    return autograd.Tensor(xp.argwhere(data).astype(np.int64).reshape(-1, data.ndim))


def take(input, index):
    """``input`` flattened, at ``index`` (any shape, int64): a tensor of index's shape."""
    _tensor(input, "take", "input")
    _tensor(index, "take", "index")
    flat = input.reshape(-1)
    idx = _index_array("take", index, flat.shape[0], 0, device=input.device)
    # negative positions count from the end, as torch.take
    if idx.size and (idx < 0).any():
        idx = idx % max(flat.shape[0], 1)
    return Gather.apply(flat, index=idx.reshape(-1), dim=0).reshape(index.shape)


def index_fill(input, dim, index, value):
    """A copy of ``input`` with the slices at ``index`` along ``dim`` set to ``value`` (a
    number or a 0-d tensor); those slices take no gradient from input."""
    _tensor(input, "index_fill", "input")
    d = wrap_dim(dim, input.ndim, "index_fill")
    size = input.shape[d] if input.ndim else 1
    # negative positions count from the end, as in PyTorch's index_fill
    idx = _vector_index("index_fill", index, size, d, input.device, int64_only=True,
                        negative=True)
    xp = get_array_module(input.data)
    mask_shape = [1] * max(input.ndim, 1)
    mask_shape[d if input.ndim else 0] = size
    mask = xp.zeros(size, dtype=bool)
    mask[idx] = True
    mask = autograd.Tensor(mask.reshape(mask_shape if input.ndim else ()))
    return input.masked_fill(mask, value)


class IndexPut(Function):
    """A copy of ``a`` with ``values`` written (added, with ``accumulate``) at the advanced
    index ``index``; gradients as SetItem's (accumulate: ``a`` keeps all of its gradient)."""

    complex_grad = True

    def forward(self, a, values, index, accumulate):
        self.index, self.accumulate, self.value_shape = index, accumulate, values.shape
        out = a.copy()
        if accumulate:
            target_shape = out[index].shape
            add_at(out, index, get_array_module(a).broadcast_to(values, target_shape))
        else:
            out[index] = values
        return out

    def backward(self, g):
        ga = g
        if not self.accumulate:
            ga = g.copy()
            ga[self.index] = 0
        return ga, unbroadcast(g[self.index], self.value_shape)

    def graph_backward(self, g, out):
        ga = g if self.accumulate else keep_where(_written_elsewhere(g, self.index), g)
        return ga, GetItem.apply(g, index=self.index)  # the engine sums a broadcast value back


def index_put(input, indices, values, accumulate=False):
    """A copy of ``input`` with ``values`` (broadcast) at ``input[indices]``, ``indices`` a
    tuple of integer (or bool) tensors; ``accumulate=True`` adds, repeats adding up."""
    _tensor(input, "index_put", "input")
    _tensor(values, "index_put", "values")
    if not isinstance(indices, (tuple, list)):
        raise TypeError(f"index_put: indices must be a tuple of tensors, got "
                        f"{type(indices).__name__}")
    index = []
    for k, i in enumerate(indices):
        if i is None:
            index.append(slice(None))
            continue
        _tensor(i, "index_put", f"indices[{k}]")
        if i.data.dtype.kind not in "iub":
            raise TypeError(f"index_put: indices[{k}] must be an integer or bool tensor, got "
                            f"dtype {i.data.dtype}")
        if i.device != input.device:
            raise ValueError(f"index_put: indices[{k}] is on {i.device}, input on "
                             f"{input.device}")
        index.append(i.data)
    index = tuple(index)
    try:
        target = np.empty(input.shape, dtype=np.uint8)[tuple(
            to_numpy(i) if not isinstance(i, slice) else i for i in index)].shape
    except IndexError as e:
        raise IndexError(f"index_put: {e} (input of shape {input.shape})") from None
    try:
        np.broadcast_shapes(values.shape, target)
    except ValueError:
        raise ValueError(f"index_put: values of shape {values.shape} do not fit the {target} "
                         "elements selected") from None
    if values.data.dtype != input.data.dtype:
        raise UnsupportedDtypeError(f"index_put: values have dtype {values.data.dtype}, input "
                                    f"{input.data.dtype}; they must match")
    return IndexPut.apply(input, values, index=index, accumulate=bool(accumulate))


def index_copy(input, dim, index, source):
    """A copy of ``input`` with slice ``index[i]`` along ``dim`` replaced by ``source``'s
    slice i."""
    _tensor(input, "index_copy", "input")
    d = wrap_dim(dim, input.ndim, "index_copy")
    idx = _vector_index("index_copy", index, input.shape[d] if input.ndim else 1, d,
                        input.device, int64_only=True)
    expected = input.shape[:d] + (idx.size,) + input.shape[d + 1:]
    if tuple(source.shape) != tuple(expected):
        raise ValueError(f"index_copy: source has shape {source.shape}; for input "
                         f"{input.shape}, dim {dim} and {idx.size} indices it must be {expected}")
    if source.data.dtype != input.data.dtype:
        raise UnsupportedDtypeError(f"index_copy: source has dtype {source.data.dtype}, input "
                                    f"{input.data.dtype}; they must match")
    where = (slice(None),) * d + (idx,)
    return IndexPut.apply(input, source, index=where, accumulate=False)


def unfold(input, dimension, size, step):
    """Every window of ``size`` elements along ``dimension``, ``step`` apart: that dim becomes
    the number of windows and a new last dim of ``size`` holds each (Tensor.unfold)."""
    d = wrap_dim(dimension, input.ndim, "unfold")
    n = input.shape[d] if input.ndim else 1
    if size > n or size < 0:
        raise ValueError(f"unfold: size {size} does not fit dimension {dimension} of size {n}")
    if step <= 0:
        raise ValueError(f"unfold: step must be > 0, got {step}")
    x = input if input.ndim else input.reshape(1)
    windows = (n - size) // step + 1
    xp = get_array_module(x.data)
    idx = (xp.arange(windows)[:, None] * step + xp.arange(size)[None, :]).reshape(-1)
    picked = IndexSelect.apply(x, index=idx, dim=d)
    shaped = picked.reshape(x.shape[:d] + (windows, size) + x.shape[d + 1:])
    return shaped.movedim(d + 1, -1) if input.ndim else shaped.reshape(size)


def argwhere(input):
    """``nonzero(input)``: an (n, ndim) tensor of positions."""
    return nonzero(input)


# Tensor methods, as PyTorch's: tensor.py installs each under its name
TENSOR_METHODS = {
    "gather": gather,
    "scatter": scatter,
    "scatter_add": scatter_add,
    "scatter_reduce": scatter_reduce,
    "index_select": index_select,
    "index_add": index_add,
    "take_along_dim": take_along_dim,
    "masked_select": masked_select,
    "nonzero": nonzero,
    "argwhere": argwhere,
    "take": take,
    "index_fill": index_fill,
    "index_put": index_put,
    "index_copy": index_copy,
    "unfold": unfold,
}

__all__ = ["gather", "scatter", "scatter_add", "scatter_reduce", "index_select", "index_add", "take_along_dim",
           "masked_select", "nonzero", "argwhere", "take", "index_fill", "index_put",
           "index_copy"]
