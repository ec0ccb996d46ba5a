"""embedding_bag, as PyTorch's: the rows of an embedding table for each bag of indices (the
rows of a 2-D input, or the runs of a 1-D input that ``offsets`` start), reduced by sum
(optionally weighted per index), mean or max, without the (bags, length, dim) intermediate.

The bag structure (which bag each index falls in, which are padding) is worked out on the
host from the indices; the rows and their reductions run on the weight's array module.
"""
from __future__ import annotations

import numpy as np

from ...autograd import first_order_only
from ...backend import get_array_module, to_numpy
from ...backend.sparse import SparseCOO
from ...functional import IndexRangeError, _index_tensor, _needs_grad, _whole
from ...ops import GetItem, GetItemGrad
from ...tensor import Function, Tensor


def _scatter_add(xp, target, index, values):
    if hasattr(xp.add, "at"):
        xp.add.at(target, index, values)
    else:  # CuPy before 12
        import cupyx

        cupyx.scatter_add(target, index, values)


def _bag_max_padded(xp, rows, seg, keep, counts, bags):
    """mode='max' on a GPU: the bags' rows gathered into a (bags, longest bag, D) block padded
    with -inf, so one argmax finds every bag's maximum with no per-bag host copy. The result and
    the winners (the position in the input of each bag's maximum, -1 for an empty bag) are the
    CPU loop's: argmax takes the first of equal maxima in both."""
    live = np.flatnonzero(keep)
    bag_of = seg[live]  # ascending: bags are consecutive runs of the input
    rank = np.arange(live.size) - np.searchsorted(bag_of, bag_of, side="left")
    longest = int(counts.max()) if bags else 0
    pos = np.full((bags, max(longest, 1)), -1, dtype=np.int64)
    pos[bag_of, rank] = live
    pos = xp.asarray(pos)
    block = rows[xp.maximum(pos, 0)]  # (bags, longest, D)
    block = xp.where((pos >= 0)[..., None], block, xp.asarray(-xp.inf, dtype=rows.dtype))
    a = block.argmax(axis=1)  # (bags, D)
    full = xp.asarray(counts > 0)[:, None]
    winners = xp.where(full, xp.take_along_axis(pos, a, axis=1), -1)
    out = xp.where(full, xp.take_along_axis(block, a[:, None, :], axis=1)[:, 0, :],
                   xp.zeros((), rows.dtype))
    return out.astype(rows.dtype, copy=False), winners


class EmbeddingBag(Function):
    """weight (V, D) [, per_sample_weights (M,)] -> (B, D)."""

    def forward(self, weight, psw=None, idx=None, seg=None, keep=None, bags=0, mode="mean"):
        xp = get_array_module(weight)
        d = weight.shape[1]
        rows = weight[xp.asarray(idx)]
        if psw is not None:
            rows = rows * psw[:, None]
        out = xp.zeros((bags, d), dtype=weight.dtype)
        counts = np.bincount(seg[keep], minlength=bags)
        self.geom = (idx, seg, keep, bags, mode, counts)
        if mode == "max":
            if xp is np:
                winners = np.full((bags, d), -1, dtype=np.int64)
                for b in np.flatnonzero(counts):
                    sel = np.flatnonzero((seg == b) & keep)
                    a = rows[xp.asarray(sel)].argmax(axis=0)
                    winners[b] = sel[to_numpy(a)]
                    out[b] = rows[xp.asarray(winners[b]), xp.arange(d)]
            else:
                out, winners = _bag_max_padded(xp, rows, seg, keep, counts, bags)
            self.winners = winners
        else:
            live = xp.asarray(np.flatnonzero(keep))
            _scatter_add(xp, out, xp.asarray(seg)[live], rows[live])
            if mode == "mean":
                out /= xp.asarray(np.maximum(counts, 1), dtype=weight.dtype)[:, None]
        self.save_for_backward(weight, psw)
        return out

    def backward(self, g):
        xp = get_array_module(g)
        weight, psw = self.saved
        idx, seg, keep, bags, mode, counts = self.geom
        d = weight.shape[1]
        gw = gpsw = None
        if mode == "max":
            if _needs_grad(self, 0):
                gw = xp.zeros_like(weight)
                full = xp.asarray(np.flatnonzero(counts))  # the bags that have a maximum
                if full.size:
                    # one scatter for all bags: each winner's row and column gets its bag's g
                    winner_rows = xp.asarray(idx)[self.winners[full]]  # (bags with rows, D)
                    _scatter_add(xp, gw, (winner_rows, xp.arange(d)[None, :]), g[full])
            return gw, None
        live = np.flatnonzero(keep)
        gm = g[xp.asarray(seg[live])]                     # (M_live, D)
        if mode == "mean":
            gm = gm / xp.asarray(counts[seg[live]], dtype=g.dtype)[:, None]
        if _needs_grad(self, 0):
            gw = xp.zeros_like(weight)
            part = gm if psw is None else gm * psw[xp.asarray(live)][:, None]
            _scatter_add(xp, gw, xp.asarray(idx[live]), part)
        if psw is not None and _needs_grad(self, 1):
            gpsw = xp.zeros(psw.shape, dtype=g.dtype)
            gpsw[xp.asarray(live)] = (gm * weight[xp.asarray(idx[live])]).sum(axis=1)
        return gw, gpsw

    def graph_backward(self, g, out):
        # the same scatters and gathers as recorded index ops (GetItem and its adjoint)
        xp = get_array_module(g.data)
        weight = self.inputs[0]
        psw = self.inputs[1] if len(self.inputs) > 1 else None
        idx, seg, keep, bags, mode, counts = self.geom
        d = weight.shape[1]
        gw = gpsw = None
        if mode == "max":
            full = xp.asarray(np.flatnonzero(counts))
            if weight.requires_grad and full.size:
                where = (xp.asarray(idx)[self.winners[full]], xp.arange(d)[None, :])
                gw = GetItemGrad.apply(GetItem.apply(g, index=full), shape=weight.shape,
                                       index=where)
            return gw, None
        live = np.flatnonzero(keep)
        gm = GetItem.apply(g, index=xp.asarray(seg[live]))
        if mode == "mean":
            gm = gm / Tensor(xp.asarray(counts[seg[live]], dtype=g.data.dtype)[:, None])
        rows = xp.asarray(idx[live])
        if weight.requires_grad:
            part = gm
            if psw is not None:
                part = gm * GetItem.apply(psw, index=xp.asarray(live)).reshape(-1, 1)
            gw = GetItemGrad.apply(part, shape=weight.shape, index=rows)
        if psw is not None and psw.requires_grad:
            picked = (gm * GetItem.apply(weight, index=rows)).sum(dim=1)
            gpsw = GetItemGrad.apply(picked, shape=psw.shape, index=xp.asarray(live))
        return gw, gpsw


class SparseEmbeddingBag(EmbeddingBag):
    """EmbeddingBag (mode sum or mean) whose weight gradient is sparse, as torch's: one entry
    per index that falls in a bag (repeats kept, in input order, the padding ones left out,
    uncoalesced), its bag's row of the output's gradient as values (divided by the bag's
    count for a mean, times the index's per_sample_weight)."""

    def backward(self, g):
        xp = get_array_module(g)
        weight, psw = self.saved
        idx, seg, keep, bags, mode, counts = self.geom
        live = np.flatnonzero(keep)
        gm = g[xp.asarray(seg[live])]                     # (M_live, D), a copy
        if mode == "mean":
            gm = gm / xp.asarray(counts[seg[live]], dtype=g.dtype)[:, None]
        gw = gpsw = None
        if _needs_grad(self, 0):
            values = gm if psw is None else gm * psw[xp.asarray(live)][:, None]
            gw = SparseCOO(xp.asarray(idx[live], dtype=xp.int64)[None], values, weight.shape)
        if psw is not None and _needs_grad(self, 1):
            gpsw = xp.zeros(psw.shape, dtype=g.dtype)
            gpsw[xp.asarray(live)] = (gm * weight[xp.asarray(idx[live])]).sum(axis=1)
        return gw, gpsw

    def graph_backward(self, g, out):
        return first_order_only(self, g)  # as torch's sparse embedding gradients

    def name(self):
        return "EmbeddingBagBackward"


def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False,
                  mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False,
                  padding_idx=None):
    """Sums, means or maxima of bags of embedding rows: input (B, L) is B bags of L indices;
    a 1-D input is split into bags at ``offsets`` (the start of each; with include_last_offset
    the end of the last one too). per_sample_weights (the input's shape, mode 'sum' only)
    weighs each row; indices equal to padding_idx are left out (and out of a mean's count).
    An empty bag gives zeros. max_norm renormalises the rows looked up (in place, as PyTorch).
    ``sparse=True`` (modes sum and mean; torch refuses it with max) makes the weight's gradient
    a sparse COO tensor (see SparseEmbeddingBag), for SparseAdam or SGD as Embedding's;
    scale_grad_by_freq is not supported."""
    name = "embedding_bag"
    _index_tensor(name, input)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"weight has to be a 2D Tensor, but got Tensor of dimension "
                         f"{getattr(weight, 'ndim', type(weight).__name__)}")
    if per_sample_weights is not None and tuple(per_sample_weights.shape) != tuple(input.shape):
        raise ValueError(f"embedding_bag: If per_sample_weights ({per_sample_weights.shape}) is "
                         f"not None, then it must have the same shape as the input "
                         f"({input.shape})")
    if mode not in ("sum", "mean", "max"):
        raise ValueError("mode has to be one of sum, mean or max")
    if mode == "max" and scale_grad_by_freq:
        raise ValueError("max mode does not support scaling the gradient by the frequency")
    if mode == "max" and sparse:
        raise ValueError("max mode does not support sparse weights")
    if scale_grad_by_freq:
        raise ValueError(f"{name}: scale_grad_by_freq is not supported in minidl (got "
                         f"scale_grad_by_freq={scale_grad_by_freq})")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(f"embedding_bag: per_sample_weights was not None. "
                                  f"per_sample_weights is only supported for mode='sum' "
                                  f"(got mode='{mode}'). Please open a feature request on "
                                  f"GitHub.")
    flat = np.asarray(input.numpy()).reshape(-1).astype(np.int64)
    m = flat.size
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError(f"if input is 2D, then offsets has to be None, as input is treated "
                             f"is a mini-batch of fixed length sequences. However, found offsets "
                             f"of type {type(offsets)}")
        length = input.shape[1]
        starts = np.arange(0, m, length) if length else np.zeros(input.shape[0], np.int64)
        ends = starts + length
    elif input.ndim == 1:
        if offsets is None:
            raise ValueError("offsets has to be a 1D Tensor but got None")
        _index_tensor(name, offsets, "offsets")
        if offsets.ndim != 1:
            raise ValueError("offsets has to be a 1D Tensor")
        off = np.asarray(offsets.numpy()).astype(np.int64)
        if off.size and off[0] != 0:
            raise ValueError(f"{name}: offsets[0] has to be 0, i.e., the first sequence in the "
                             f"mini-batch has to start from position 0. However, got {off[0]}")
        if off.size and (off.max() > m or np.any(np.diff(off) < 0)):
            raise ValueError(f"{name}: offsets {off.tolist()} must be non-decreasing and at most "
                             f"the input's length {m}")
        if include_last_offset:
            if off.size < 1:
                raise ValueError(f"{name}: include_last_offset needs at least one offset")
            starts, ends = off[:-1], off[1:]
        else:
            starts, ends = off, np.append(off[1:], m).astype(np.int64)
    else:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension "
                         f"{input.ndim}")
    v = weight.shape[0]
    if m and (flat.min() < 0 or flat.max() >= v):
        bad = flat.min() if flat.min() < 0 else flat.max()
        raise IndexRangeError(f"{name}: index {bad} is out of range for {v} embeddings (weight "
                              f"shape {weight.shape})")
    if padding_idx is not None:  # checked before max_norm changes the weight
        padding_idx = _whole(padding_idx, f"{name}: padding_idx")
        if not -v <= padding_idx < v:
            raise ValueError(f"{name}: padding_idx {padding_idx} is out of range for {v} "
                             f"embeddings")
    if max_norm is not None:
        _renorm_rows(weight, np.unique(flat), float(max_norm), float(norm_type))
    bags = len(starts)
    seg = np.full(m, -1, dtype=np.int64)
    if bags:  # the bags are consecutive runs from starts[0]: no Python loop over them
        seg[starts[0]:ends[-1]] = np.repeat(np.arange(bags), ends - starts)
    keep = seg >= 0
    if padding_idx is not None:
        keep &= flat != padding_idx % v
    seg = np.where(keep, seg, 0)
    args = (weight,) if per_sample_weights is None else (
        weight, per_sample_weights.reshape(-1).astype(weight.dtype))
    op = SparseEmbeddingBag if sparse else EmbeddingBag
    return op.apply(*args, idx=flat, seg=seg, keep=keep, bags=bags, mode=mode)


def _renorm_rows(weight, rows, max_norm, norm_type):
    """PyTorch's embedding_renorm_: the looked-up rows whose norm exceeds max_norm are scaled
    down to it in place, outside the graph."""
    xp = get_array_module(weight.data)
    rows = xp.asarray(rows)
    sel = weight.data[rows]
    norms = (xp.abs(sel) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(sel.dtype)
    weight.data[rows] = sel * scale[:, None]


__all__ = ["embedding_bag"]
