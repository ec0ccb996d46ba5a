"""Collectives as ops with gradients, as ``torch.distributed.nn.functional``: each returns a new
Tensor (the input is not changed), and its backward runs the adjoint collective, so every rank
of the group must run the backward pass too.

    feats = dist_nn.all_gather(local_feats)          # a tuple: one Tensor per rank
    logits = local_feats @ minidl.cat(feats).T       # e.g. a contrastive loss over all ranks
    loss.backward()                                  # gradients flow back to every rank's input

Adjoints: all_reduce(sum) <-> all_reduce(sum); all_gather <-> reduce_scatter(sum);
broadcast(src) <-> reduce to src; gather to dst <-> scatter from dst; all_to_all(_single) <->
all_to_all(_single) with the splits swapped; reduce to dst -> broadcast from dst (as torch's:
the non-destination ranks' outputs are their inputs, and their gradients are not summed). The
second derivative is the same collective again (they are linear).
"""
from __future__ import annotations

import numpy as np

from ... import distributed as dist
from ...backend import get_array_module
from ...tensor import Function, Tensor

__all__ = ["all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_to_all_single",
           "gather", "scatter", "reduce", "all_to_all"]


def _check(x, what):
    if not isinstance(x, Tensor):
        raise TypeError(f"distributed.nn.{what}: expected a Tensor, got {type(x).__name__}")
    dist._pg(None, f"nn.{what}")  # the default group must be up


class _AllReduce(Function):
    def forward(self, x, *, op, group):
        self.op, self.group = op, group
        y = x.copy()
        dist.all_reduce(y, op=op, group=group)
        return y

    def backward(self, g):
        if self.op not in ("sum", "avg"):
            raise NotImplementedError(f"distributed.nn.all_reduce: no gradient for op "
                                      f"{self.op!r} (sum and avg have one)")
        g = g.copy()
        dist.all_reduce(g, op=self.op, group=self.group)
        return g

    def graph_backward(self, g, out):
        if self.op not in ("sum", "avg"):
            return self.backward(g.data)  # raises: no gradient for this op
        return _AllReduce.apply(g, op=self.op, group=self.group)


def all_reduce(tensor, op="sum", group=None):
    """The reduction of ``tensor`` over the ranks of ``group``, as a new Tensor. Gradients:
    sum and avg (the gradient is reduced the same way)."""
    _check(tensor, "all_reduce")
    return _AllReduce.apply(tensor, op=str(op).lower(), group=group)


def _size(group):
    return dist.get_world_size(group)


class _AllGather(Function):
    """Forward: (world, *x.shape), every rank's x; backward: the sum over ranks of the slices
    for this rank (a reduce_scatter)."""

    def forward(self, x, *, group):
        self.group = group
        xp = get_array_module(x)
        out = xp.empty((_size(group),) + x.shape, dtype=x.dtype)
        dist.all_gather_into_tensor(out, xp.ascontiguousarray(x), group=group)
        return out

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.empty(g.shape[1:], dtype=g.dtype)
        dist.reduce_scatter_tensor(out, xp.ascontiguousarray(g), group=self.group)
        return out

    def graph_backward(self, g, out):
        return _ReduceScatter.apply(g, op="sum", group=self.group)


class _ReduceScatter(Function):
    """Forward: stacked (world, *shape) -> this rank's slice of the reduction; backward: every
    rank's gradient stacked (an all_gather)."""

    def forward(self, stacked, *, op, group):
        if op not in ("sum", "avg"):
            raise ValueError(f"distributed.nn.reduce_scatter: op {op!r} has no gradient; use "
                             "sum or avg")
        self.op, self.group = op, group
        xp = get_array_module(stacked)
        out = xp.empty(stacked.shape[1:], dtype=stacked.dtype)
        dist.reduce_scatter_tensor(out, xp.ascontiguousarray(stacked), op=op, group=group)
        return out

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.empty((_size(self.group),) + g.shape, dtype=g.dtype)
        dist.all_gather_into_tensor(out, xp.ascontiguousarray(g), group=self.group)
        if self.op == "avg":
            out *= out.dtype.type(1.0 / _size(self.group))
        return out

    def graph_backward(self, g, out):
        res = _AllGather.apply(g, group=self.group)
        return res * (1.0 / _size(self.group)) if self.op == "avg" else res


def all_gather(tensor, group=None):
    """Every rank's ``tensor`` (all of one shape), as a tuple indexed by rank. The gradient of
    this rank's input is the sum over ranks of the gradients of its entry."""
    _check(tensor, "all_gather")
    stacked = _AllGather.apply(tensor, group=group)
    return tuple(stacked[r] for r in range(stacked.shape[0]))


def reduce_scatter(output, input_list, op="sum", group=None):
    """The reduction over ranks of their ``input_list[r]``, on rank r, as a new Tensor (torch's
    signature; ``output`` gives the shape and is filled too)."""
    from ... import stack

    _check(output, "reduce_scatter")
    n = _size(group)
    if len(input_list) != n:
        raise ValueError(f"distributed.nn.reduce_scatter: input_list has {len(input_list)} "
                         f"entries, the group has {n} ranks")
    for i, t in enumerate(input_list):
        if tuple(t.shape) != tuple(output.shape):
            raise ValueError(f"distributed.nn.reduce_scatter: input_list[{i}] has shape "
                             f"{tuple(t.shape)}, the output {tuple(output.shape)}")
    res = _ReduceScatter.apply(stack(list(input_list)), op=str(op).lower(), group=group)
    output.data[...] = res.data
    return res


class _Broadcast(Function):
    def forward(self, x, *, src, group):
        self.src, self.group = src, group
        y = x.copy()
        dist.broadcast(y, src=src, group=group)
        return y

    def backward(self, g):
        g = g.copy()
        dist.reduce(g, dst=self.src, group=self.group)
        if dist.get_rank() != self.src:
            g[...] = 0  # only the source's value reached the output
        return g

    def graph_backward(self, g, out):
        return _ReduceTo.apply(g, dst=self.src, group=self.group)


class _ReduceTo(Function):
    """Rank dst: the sum over ranks; the others: zeros (broadcast's adjoint)."""

    def forward(self, x, *, dst, group):
        self.dst, self.group = dst, group
        y = x.copy()
        dist.reduce(y, dst=dst, group=group)
        if dist.get_rank() != dst:
            y[...] = 0
        return y

    def backward(self, g):
        g = g.copy()
        dist.broadcast(g, src=self.dst, group=self.group)
        return g

    def graph_backward(self, g, out):
        return _Broadcast.apply(g, src=self.dst, group=self.group)


def broadcast(tensor, src, group=None):
    """Rank ``src``'s ``tensor`` on every rank, as a new Tensor; the gradient of ``src``'s input
    is the sum of every rank's gradient, the other ranks' inputs get zeros."""
    _check(tensor, "broadcast")
    return _Broadcast.apply(tensor, src=int(src), group=group)


class _AllToAllSingle(Function):
    def forward(self, x, *, out_rows, out_splits, in_splits, group):
        self.out_splits, self.in_splits, self.group = out_splits, in_splits, group
        xp = get_array_module(x)
        out = xp.empty((out_rows,) + x.shape[1:], dtype=x.dtype)
        dist.all_to_all_single(out, xp.ascontiguousarray(x), out_splits, in_splits, group=group)
        self.in_rows = x.shape[0]
        return out

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.empty((self.in_rows,) + g.shape[1:], dtype=g.dtype)
        dist.all_to_all_single(out, xp.ascontiguousarray(g), self.in_splits, self.out_splits,
                               group=self.group)
        return out

    def graph_backward(self, g, out):
        return _AllToAllSingle.apply(g, out_rows=self.in_rows, out_splits=self.in_splits,
                                     in_splits=self.out_splits, group=self.group)


def all_to_all_single(output, input, output_split_sizes=None,  # noqa: A002
                      input_split_sizes=None, group=None):
    """As ``minidl.distributed.all_to_all_single``, returning the result as a new Tensor (of
    ``output``'s shape, which is filled too) with a gradient."""
    _check(input, "all_to_all_single")
    res = _AllToAllSingle.apply(input, out_rows=int(output.shape[0]),
                                out_splits=output_split_sizes, in_splits=input_split_sizes,
                                group=group)
    output.data[...] = res.data
    return res


def _gathered(x, dst, group):
    """(world, *x.shape): every rank's ``x`` on rank ``dst``, zeros on the others."""
    xp = get_array_module(x)
    out = xp.zeros((_size(group),) + x.shape, dtype=x.dtype)
    here = dist.get_rank() == dst
    dist.gather(xp.ascontiguousarray(x), list(out) if here else None, dst=dst, group=group)
    return out


class _Gather(Function):
    """Forward: (world, *x.shape), every rank's x on rank dst and zeros elsewhere; backward:
    rank dst's gradient slice r to rank r (a scatter)."""

    def forward(self, x, *, dst, group):
        self.dst, self.group = dst, group
        return _gathered(x, dst, group)

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.empty(g.shape[1:], dtype=g.dtype)
        here = dist.get_rank() == self.dst
        dist.scatter(out, [xp.ascontiguousarray(p) for p in g] if here else None, src=self.dst,
                     group=self.group)
        return out

    def graph_backward(self, g, out):
        return _Scatter.apply(g, src=self.dst, group=self.group)


class _Scatter(Function):
    """Forward: rank src's slice r of ``stacked`` on rank r; backward: every rank's gradient
    gathered on rank src (zeros elsewhere)."""

    def forward(self, stacked, *, src, group):
        self.src, self.group = src, group
        xp = get_array_module(stacked)
        out = xp.empty(stacked.shape[1:], dtype=stacked.dtype)
        here = dist.get_rank() == src
        dist.scatter(out, [xp.ascontiguousarray(p) for p in stacked] if here else None, src=src,
                     group=group)
        return out

    def backward(self, g):
        return _gathered(g, self.src, self.group)

    def graph_backward(self, g, out):
        return _Gather.apply(g, dst=self.src, group=self.group)


def gather(tensor, dst=0, group=None):
    """Every rank's ``tensor`` on rank ``dst`` (a world rank), as a tuple indexed by rank
    (zeros on the other ranks, as torch's). Gradient: rank dst's gradient of entry r goes to
    rank r's input."""
    _check(tensor, "gather")
    stacked = _Gather.apply(tensor, dst=int(dst), group=group)
    return tuple(stacked[r] for r in range(stacked.shape[0]))


def scatter(tensors, src=0, group=None):
    """Rank ``src``'s ``tensors[r]`` on rank r, as a new Tensor (every rank passes a list of one
    shape per rank; only rank src's values are sent). Gradient: every rank's gradient reaches
    rank src's ``tensors[r]``."""
    from ... import stack

    tensors = list(tensors)
    for t in tensors:
        _check(t, "scatter")
    n = _size(group)
    if len(tensors) != n or any(tuple(t.shape) != tuple(tensors[0].shape) for t in tensors):
        raise ValueError(f"distributed.nn.scatter: expected {n} tensors of one shape, got "
                         f"shapes {[tuple(t.shape) for t in tensors]}")
    return _Scatter.apply(stack(tensors), src=int(src), group=group)


class _Reduce(Function):
    """torch.distributed.nn's reduce: rank dst gets the sum, the other ranks their own input;
    the gradient of every rank's input is rank dst's gradient (a broadcast)."""

    def forward(self, x, *, dst, op, group):
        self.dst, self.op, self.group = dst, op, group
        y = x.copy()
        dist.reduce(y, dst=dst, op=op, group=group)
        return y

    def backward(self, g):
        if self.op not in ("sum", "avg"):
            raise NotImplementedError(f"distributed.nn.reduce: no gradient for op {self.op!r} "
                                      "(sum and avg have one)")
        g = g.copy()
        dist.broadcast(g, src=self.dst, group=self.group)
        if self.op == "avg":
            g *= g.dtype.type(1.0 / _size(self.group))
        return g

    def graph_backward(self, g, out):
        if self.op not in ("sum", "avg"):
            return self.backward(g.data)  # raises: no gradient for this op
        res = _Broadcast.apply(g, src=self.dst, group=self.group)
        return res * (1.0 / _size(self.group)) if self.op == "avg" else res


def reduce(tensor, dst, op="sum", group=None):
    """The reduction of ``tensor`` over the ranks on rank ``dst`` (a world rank), as a new
    Tensor; the other ranks get their own input back (as torch's)."""
    _check(tensor, "reduce")
    return _Reduce.apply(tensor, dst=int(dst), op=str(op).lower(), group=group)


def all_to_all(output_tensor_list, input_tensor_list, group=None):
    """Rank r's ``input_tensor_list[j]`` into rank j's entry r, as a tuple of new Tensors of the
    shapes of ``output_tensor_list`` (which is filled too). Gradient: the gradients go back
    the same way (an all-to-all with the sizes swapped)."""
    from ... import cat

    ins, outs = list(input_tensor_list), list(output_tensor_list)
    for t in ins:
        _check(t, "all_to_all")
    n = _size(group)
    if len(ins) != n or len(outs) != n:
        raise ValueError(f"distributed.nn.all_to_all: expected {n} input and {n} output "
                         f"tensors, got {len(ins)} and {len(outs)}")
    flat = cat([t.reshape(-1) for t in ins])
    out_sizes = [int(np.prod(o.shape, dtype=np.int64)) for o in outs]
    res = _AllToAllSingle.apply(flat, out_rows=sum(out_sizes), out_splits=out_sizes,
                                in_splits=[int(t.numel()) for t in ins], group=group)
    pieces, off = [], 0
    for o, size in zip(outs, out_sizes):
        piece = res[off:off + size].reshape(tuple(o.shape))
        off += size
        o.data[...] = piece.data
        pieces.append(piece)
    return tuple(pieces)
