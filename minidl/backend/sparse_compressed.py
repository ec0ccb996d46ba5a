"""Sparse compressed arrays: the ``.data`` of a CSR, CSC, BSR or BSC tensor.

A ``SparseCompressed`` holds, as torch's compressed layouts do, ``compressed`` indices
(``crow_indices`` of CSR/BSR, ``ccol_indices`` of CSC/BSC; shape (*batch, n + 1), where n
counts the rows, or columns, or blocks of them), ``plain`` indices (``col_indices`` /
``row_indices``; (*batch, nnz)), ``values`` ((*batch, nnz, *block, *dense): a block of
(r, c) for BSR/BSC) and the full ``shape`` (*batch, rows, cols, *dense). Every batch holds
the same nnz. Like SparseCOO it answers the few array questions the generic ops ask (shape,
dtype, copy, astype, negation, ``+`` of two of one layout, the transpose of the two sparse
dims) and refuses the rest, naming its layout.

The conversions all go through one form: the *elements* of a tensor (its batch, row and
column of every stored scalar, and where that scalar sits in the flat values), from which
any layout is assembled again; the same map (``src`` -> ``dst``) carries a gradient back.
"""
from __future__ import annotations

import numpy as np

from . import get_array_module
from .sparse import SparseArray, SparseCOO, SparseLayoutError, coalesce, scatter_add

LAYOUTS = ("sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc")
NAMES = {"sparse_csr": ("crow_indices", "col_indices"),
         "sparse_bsr": ("crow_indices", "col_indices"),
         "sparse_csc": ("ccol_indices", "row_indices"),
         "sparse_bsc": ("ccol_indices", "row_indices")}


def row_compressed(layout):
    return layout in ("sparse_csr", "sparse_bsr")


def blocked(layout):
    return layout in ("sparse_bsr", "sparse_bsc")


def torch_layout_name(layout):
    """torch's names in its errors: SparseCsr, SparseBsc, Sparse (COO), Strided."""
    return {"sparse_coo": "Sparse", "strided": "Strided"}.get(
        layout, "Sparse" + layout[len("sparse_"):].capitalize())


class SparseCompressed(SparseArray):
    """compressed (*batch, n + 1), plain (*batch, nnz), values (*batch, nnz, *block, *dense),
    the shape and the layout's name; see the module."""

    __slots__ = ("layout", "compressed", "plain", "values", "shape")

    def __init__(self, layout, compressed, plain, values, shape):
        self.layout, self.compressed, self.plain, self.values = layout, compressed, plain, values
        self.shape = tuple(int(n) for n in shape)

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
    def batch_dim(self):
        return self.compressed.ndim - 1

    @property
    def sparse_dim(self):
        return 2

    @property
    def dense_dim(self):
        return self.ndim - self.batch_dim - 2

    @property
    def nnz(self):
        return int(self.plain.shape[-1])

    @property
    def blocksize(self):
        b = self.batch_dim
        return tuple(int(n) for n in self.values.shape[b + 1:b + 3]) if blocked(self.layout) \
            else (1, 1)

    @property
    def coalesced(self):  # what SparseCOO's readers ask; a compressed tensor has no repeats
        return True

    def copy(self, order=None):
        return SparseCompressed(self.layout, self.compressed.copy(), self.plain.copy(),
                                self.values.copy(), self.shape)

    def astype(self, dtype, copy=True):
        if not copy and self.values.dtype == dtype:
            return self
        return self.with_values(self.values.astype(dtype))

    def map_arrays(self, fn):
        """The same tensor with ``fn`` applied to each of its arrays (a move to another
        device)."""
        return SparseCompressed(self.layout, fn(self.compressed), fn(self.plain),
                                fn(self.values), self.shape)

    def with_values(self, values):
        """The same pattern (the index arrays shared) with other values."""
        return SparseCompressed(self.layout, self.compressed, self.plain, values, self.shape)

    def same_pattern(self, other):
        return (type(other) is SparseCompressed and other.layout == self.layout
                and other.shape == self.shape and other.values.shape == self.values.shape
                and (other.plain is self.plain or bool(
                    (other.plain == self.plain).all() and (other.compressed == self.compressed)
                    .all())))

    def __neg__(self):
        return self.with_values(-self.values)

    def __add__(self, other):
        if type(other) is not SparseCompressed:
            raise SparseLayoutError("add of a sparse compressed and a dense tensor", self.layout)
        return add(self, other)

    def __iadd__(self, other):
        both = self + other
        self.compressed, self.plain, self.values = both.compressed, both.plain, both.values
        return self

    def transpose(self, axes=None):
        """The two sparse dims swapped: CSR <-> CSC (and BSR <-> BSC) on the same index
        arrays, as torch's transpose; any other permutation is refused as torch refuses it."""
        n, b = self.ndim, self.batch_dim
        axes = tuple(reversed(range(n))) if axes is None else tuple(axes)
        if axes == tuple(range(n)):
            return self
        swapped = list(range(n))
        swapped[b], swapped[b + 1] = b + 1, b
        if axes != tuple(swapped):
            moved = [d for d in range(n) if axes[d] != d]
            kinds = ["Batch" if d < b else "Sparse" if d < b + 2 else "Dense" for d in moved]
            raise RuntimeError(f"transpose(): can only transpose dimensions of the same type "
                               f"(Batch, Sparse, Dense), got {moved[0]}({kinds[0]}) and "
                               f"{moved[-1]}({kinds[-1]})")
        layout = {"sparse_csr": "sparse_csc", "sparse_csc": "sparse_csr",
                  "sparse_bsr": "sparse_bsc", "sparse_bsc": "sparse_bsr"}[self.layout]
        values = self.values
        if blocked(self.layout):
            values = values.swapaxes(b + 1, b + 2)
        shape = list(self.shape)
        shape[b], shape[b + 1] = shape[b + 1], shape[b]
        return SparseCompressed(layout, self.compressed, self.plain, values, shape)


def is_compressed(array):
    return type(array) is SparseCompressed


# ---- elements: every stored scalar's place ---------------------------------------------------
class Elements:
    """The stored scalars of a tensor: ``batch`` (the flat batch index), ``rows``, ``cols``
    (element units) and ``src`` (each one's row in ``flat``, the values as
    (scalars, *dense)); ``batch_shape``, ``shape2`` (rows, cols) and ``dense_shape``."""

    __slots__ = ("batch", "rows", "cols", "src", "flat", "batch_shape", "shape2", "dense_shape")

    def __init__(self, batch, rows, cols, src, flat, batch_shape, shape2, dense_shape):
        self.batch, self.rows, self.cols, self.src, self.flat = batch, rows, cols, src, flat
        self.batch_shape, self.shape2 = tuple(batch_shape), tuple(shape2)
        self.dense_shape = tuple(dense_shape)


def entry_places(a):
    """(batch, compressed index, plain index) of each stored entry (blocks count as one), all
    flat over the batch; the entries in their stored order."""
    xp = get_array_module(a.values)
    n_batch = int(np.prod(a.compressed.shape[:-1], dtype=np.int64))
    ncomp, nnz = int(a.compressed.shape[-1]) - 1, a.nnz
    # each batch's row pointers shifted past the batches before it: one sorted array, so
    # that a search finds every entry's row (no repeat by counts, which CuPy lacks)
    ends = a.compressed.reshape(n_batch, ncomp + 1)[:, 1:].astype(xp.int64)
    ends = (ends + xp.arange(n_batch, dtype=xp.int64)[:, None] * nnz).reshape(-1)
    k = xp.arange(n_batch * nnz, dtype=xp.int64)
    comp = xp.searchsorted(ends, k, side="right") % max(ncomp, 1)
    batch = k // max(nnz, 1)
    return batch, comp, a.plain.reshape(-1).astype(xp.int64, copy=False)


def elements(a, dense_dim=None):
    """The Elements of a dense array (``dense_dim`` trailing dense dims: every scalar is
    stored), a SparseCOO with two sparse dims, or a SparseCompressed."""
    if type(a) is SparseCompressed:
        xp = get_array_module(a.values)
        b = a.batch_dim
        batch, comp, plain = entry_places(a)
        rows, cols = (comp, plain) if row_compressed(a.layout) else (plain, comp)
        r, c = a.blocksize
        dense_shape = a.shape[b + 2:]
        flat = a.values.reshape((-1,) + dense_shape)
        if (r, c) != (1, 1):
            i = xp.arange(r, dtype=xp.int64)[:, None]
            j = xp.arange(c, dtype=xp.int64)[None, :]
            shape3 = (len(rows), r, c)
            rows = xp.broadcast_to(rows[:, None, None] * r + i, shape3).reshape(-1)
            cols = xp.broadcast_to(cols[:, None, None] * c + j, shape3).reshape(-1)
            batch = xp.repeat(batch, r * c)
        src = xp.arange(len(rows), dtype=xp.int64)
        return Elements(batch, rows, cols, src, flat, a.shape[:b], a.shape[b:b + 2], dense_shape)
    if type(a) is SparseCOO:
        a = coalesce(a)
        xp = get_array_module(a.values)
        rows, cols = a.indices
        batch = xp.zeros(a.nnz, dtype=xp.int64)
        return Elements(batch, rows, cols, xp.arange(a.nnz, dtype=xp.int64), a.values, (),
                        a.shape[:2], a.shape[2:])
    xp = get_array_module(a)
    dense_dim = int(dense_dim or 0)
    nb = a.ndim - 2 - dense_dim
    batch_shape, shape2, dense_shape = a.shape[:nb], a.shape[nb:nb + 2], a.shape[nb + 2:]
    n_batch = int(np.prod(batch_shape, dtype=np.int64))
    flat = a.reshape((-1,) + dense_shape)
    lin = xp.arange(flat.shape[0], dtype=xp.int64)
    cols = lin % shape2[1]
    rows = (lin // shape2[1]) % shape2[0]
    batch = lin // (shape2[0] * shape2[1]) if n_batch else lin
    return Elements(batch, rows, cols, lin, flat, batch_shape, shape2, dense_shape)


def nonzero_elements(x, dense_dim, blocksize):
    """The Elements of a dense array that a sparse form keeps: the scalars where any of
    their dense values is nonzero, and with a blocksize every scalar of a block that holds
    one."""
    xp = get_array_module(x)
    every = elements(x, dense_dim)
    nz = x != 0
    if dense_dim:
        nz = nz.reshape(x.shape[:x.ndim - dense_dim] + (-1,)).any(axis=-1)
    r, c = blocksize
    if (r, c) != (1, 1):
        lead = nz.shape[:-2]
        rows, cols = nz.shape[-2:]
        blocks = nz.reshape(lead + (rows // r, r, cols // c, c)).any(axis=(-3, -1))
        nz = xp.broadcast_to(blocks[..., :, None, :, None], lead + (rows // r, r, cols // c, c))
        nz = nz.reshape(lead + (rows, cols))
    keep = nz.reshape(-1)
    return Elements(every.batch[keep], every.rows[keep], every.cols[keep], every.src[keep],
                    every.flat, every.batch_shape, every.shape2, every.dense_shape)


def assemble(el, layout, blocksize=(1, 1), index_dtype=np.int64):
    """``el``'s scalars as a SparseCompressed of ``layout`` (BSR/BSC: blocks of
    ``blocksize``) and ``dst``, each scalar's row in the new flat values."""
    xp = get_array_module(el.flat)
    r, c = (int(n) for n in blocksize) if blocked(layout) else (1, 1)
    rows_n, cols_n = el.shape2
    if rows_n % r or cols_n % c:
        raise RuntimeError(f"tensor sparse size ({rows_n},{cols_n}) must be divisible by "
                           f"given blocksize ({r},{c})")
    n_batch = int(np.prod(el.batch_shape, dtype=np.int64))
    br, bc = el.rows // r, el.cols // c
    comp, plain = (br, bc) if row_compressed(layout) else (bc, br)
    ncomp, nplain = (rows_n // r, cols_n // c) if row_compressed(layout) \
        else (cols_n // c, rows_n // r)
    key = (el.batch * ncomp + comp) * nplain + plain
    keys, inverse = xp.unique(key, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_batch = xp.bincount(keys // max(ncomp * nplain, 1), minlength=n_batch) \
        if n_batch else xp.zeros(0, xp.int64)
    nnz = int(per_batch[0]) if n_batch else 0
    if n_batch and bool((per_batch != nnz).any()):
        raise RuntimeError("Expect the same number of specified elements per batch.")
    ucomp = (keys // max(nplain, 1)) % max(ncomp, 1)
    counts = xp.bincount((keys // max(ncomp * nplain, 1)) * ncomp + ucomp,
                         minlength=n_batch * ncomp).reshape(n_batch, ncomp)
    compressed = xp.zeros((n_batch, ncomp + 1), dtype=index_dtype)
    compressed[:, 1:] = xp.cumsum(counts, axis=1)
    plain_idx = (keys % max(nplain, 1)).astype(index_dtype)
    block = (r, c) if blocked(layout) else ()
    values = xp.zeros((n_batch * nnz * r * c,) + el.dense_shape, dtype=el.flat.dtype)
    dst = inverse * (r * c) + (el.rows % r) * c + el.cols % c
    values[dst] = el.flat[el.src]
    values = values.reshape(el.batch_shape + (nnz,) + block + el.dense_shape)
    shape = el.batch_shape + el.shape2 + el.dense_shape
    out = SparseCompressed(layout, compressed.reshape(el.batch_shape + (ncomp + 1,)),
                           plain_idx.reshape(el.batch_shape + (nnz,)), values, shape)
    return out, dst


def assemble_coo(el, coalesced):
    """``el``'s scalars as a SparseCOO: the batch dims become sparse dims, as torch's
    to_sparse() of a batched compressed tensor; entries in stored order, flagged coalesced
    where ``coalesced`` (a CSR source, as torch flags it) and they are in order."""
    xp = get_array_module(el.flat)
    parts = []
    if el.batch_shape:
        from .sparse import unravel

        parts.extend(unravel(el.batch, el.batch_shape))
    parts += [el.rows, el.cols]
    indices = xp.stack(parts).astype(xp.int64) if parts else xp.zeros((0, 0), xp.int64)
    values = el.flat[el.src]
    shape = el.batch_shape + el.shape2 + el.dense_shape
    from .sparse import linear_index

    lin = linear_index(indices, shape[:indices.shape[0]])
    ordered = coalesced and (len(lin) < 2 or bool((lin[1:] > lin[:-1]).all()))
    return SparseCOO(indices, values, shape, coalesced=ordered), \
        xp.arange(len(values), dtype=xp.int64)


def assemble_dense(el):
    xp = get_array_module(el.flat)
    shape = el.batch_shape + el.shape2 + el.dense_shape
    out = xp.zeros((int(np.prod(shape[:-len(el.dense_shape)] if el.dense_shape else shape,
                                dtype=np.int64)),) + el.dense_shape, dtype=el.flat.dtype)
    dst = (el.batch * el.shape2[0] + el.rows) * el.shape2[1] + el.cols
    out[dst] = el.flat[el.src]
    return out.reshape(shape), dst


def to_dense(a):
    return assemble_dense(elements(a))[0]


def gather(g, pattern):
    """The gradient ``g`` (dense, or sparse of any layout) at ``pattern``'s stored scalars,
    in the shape of pattern.values (0 where a sparse ``g`` stores nothing)."""
    if type(g) is SparseCompressed and pattern.same_pattern(g):
        return g.values
    if type(g) is SparseCompressed:
        g = to_dense(g)
    elif type(g) is SparseCOO:
        from .sparse import to_dense as coo_dense

        g = coo_dense(g)
    el = elements(pattern)
    b, n = el.batch_shape, pattern.dense_dim
    lead = g.reshape((-1,) + el.shape2 + g.shape[g.ndim - n:]) if b else g[None]
    return lead[el.batch, el.rows, el.cols].reshape(pattern.values.shape)


def add(a, b):
    """a + b of one layout and shape: the union of their patterns, values summed."""
    if a.shape != b.shape:
        raise RuntimeError(f"add: expected sizes of the two sparse tensors to match, but "
                           f"{list(a.shape)} != {list(b.shape)}")
    if a.layout != b.layout:
        raise RuntimeError(f"add: expected both operands to have the same layout, got "
                           f"{torch_layout_name(a.layout)} and {torch_layout_name(b.layout)}")
    if a.same_pattern(b):
        dtype = np.result_type(a.values.dtype, b.values.dtype)
        return a.with_values(a.values.astype(dtype, copy=False) + b.values.astype(dtype,
                                                                                 copy=False))
    xp = get_array_module(a.values)
    ea, eb = elements(a), elements(b)
    dtype = np.result_type(a.values.dtype, b.values.dtype)
    flat = xp.concatenate([ea.flat[ea.src].astype(dtype, copy=False),
                           eb.flat[eb.src].astype(dtype, copy=False)])
    both = Elements(xp.concatenate([ea.batch, eb.batch]), xp.concatenate([ea.rows, eb.rows]),
                    xp.concatenate([ea.cols, eb.cols]), xp.arange(len(flat), dtype=xp.int64),
                    flat, ea.batch_shape, ea.shape2, ea.dense_shape)
    return assemble(merge(both)[0], a.layout, a.blocksize)[0]


def merge(el):
    """``el`` with the scalars of one place summed (assemble writes each place once) and
    ``inverse``, each scalar's row in the merged ones."""
    xp = get_array_module(el.flat)
    rows_n, cols_n = el.shape2
    keys = (el.batch * rows_n + el.rows) * cols_n + el.cols
    uniq, inverse = xp.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    summed = xp.zeros((len(uniq),) + el.flat.shape[1:], dtype=el.flat.dtype)
    scatter_add(summed, inverse, el.flat[el.src])
    merged = Elements(uniq // max(rows_n * cols_n, 1), (uniq // max(cols_n, 1)) % max(rows_n, 1),
                      uniq % max(cols_n, 1), xp.arange(len(uniq), dtype=xp.int64), summed,
                      el.batch_shape, el.shape2, el.dense_shape)
    return merged, inverse


def mm(a, b):
    """compressed (n, k) @ dense (k, *m) -> dense (n, *m)."""
    xp = get_array_module(b)
    el = elements(a)
    vals = el.flat[el.src]
    dtype = np.result_type(vals.dtype, b.dtype)
    out = xp.zeros((a.shape[0],) + b.shape[1:], dtype=dtype)
    if len(vals):
        scatter_add(out, el.rows, vals.reshape((-1,) + (1,) * (b.ndim - 1)) * b[el.cols])
    return out


def mm_t(a, g):
    """a.T @ g: mm's gradient for its dense operand."""
    xp = get_array_module(g)
    el = elements(a)
    vals = el.flat[el.src]
    out = xp.zeros((a.shape[1],) + g.shape[1:], dtype=g.dtype)
    if len(vals):
        scatter_add(out, el.cols, vals.reshape((-1,) + (1,) * (g.ndim - 1)) * g[el.rows])
    return out


def sampled(a, m1, m2):
    """(m1 @ m2) at a's stored scalars, in the shape of a.values."""
    el = elements(a)
    return (m1[el.rows] * m2[:, el.cols].T).sum(axis=-1).reshape(a.values.shape)


def spgemm(a, b):
    """CSR (n, k) @ CSR (k, m) -> CSR (n, m) on the structural pattern (every (i, k) that
    some a[i, j] * b[j, k] reaches, explicit zeros kept; columns sorted in each row), and
    the map of the products: ``a_entry``, ``b_entry`` of each product and ``inverse``, its
    place in the result (the products found by a search of a sorted array, not repeated by
    counts: CuPy has no such repeat)."""
    xp = get_array_module(a.values)
    ea = elements(a)
    j = ea.cols
    crow = b.compressed.astype(xp.int64)
    start, count = crow[j], crow[j + 1] - crow[j]
    ends = xp.cumsum(count)
    total = int(ends[-1]) if len(ends) else 0
    p = xp.arange(total, dtype=xp.int64)
    a_entry = xp.searchsorted(ends, p, side="right")
    b_entry = start[a_entry] + p - (ends[a_entry] - count[a_entry])
    va = ea.flat[ea.src]
    prods = va[a_entry] * b.values[b_entry]
    cols = b.plain.astype(xp.int64)[b_entry]
    el = Elements(xp.zeros(total, dtype=xp.int64), ea.rows[a_entry], cols,
                  xp.arange(total, dtype=xp.int64), prods, (), (a.shape[0], b.shape[1]), ())
    merged, inverse = merge(el)
    out = assemble(merged, "sparse_csr", index_dtype=a.compressed.dtype)[0]
    return out, a_entry, b_entry, inverse
