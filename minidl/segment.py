"""``minidl.segment_reduce``: torch.segment_reduce, a reduction over contiguous segments of one
axis (the segments of a graph's nodes, of variable-length sequences packed end to end).

``lengths`` (the size of each segment) or ``offsets`` (their boundaries, ``lengths`` being
their differences) have the data's leading dims before ``axis``, as torch's (one row of
segments per leading index), and ``axis`` must be their last dim. The segments, padded to the
longest with the reduction's identity, are reduced at once, so the op runs on NumPy and CuPy
arrays alike. An empty segment gives ``initial`` where it is given, and otherwise the
identity: 0 for sum, 1 for prod, -inf for max, +inf for min, NaN for mean. With ``initial``,
sum adds it, prod multiplies by it, max/min compare with it, mean is (sum + initial) / length.

Gradients are torch's: max/min share a segment's gradient evenly among the elements equal to
its result (none where ``initial`` won), prod's is the product of the other elements (exact
with zeros present). As torch's, the gradient is first order only.
"""
from __future__ import annotations

import numpy as np

from .autograd import Function
from .backend import get_array_module
from .tensor import Tensor

__all__ = ["segment_reduce"]

_REDUCTIONS = {"sum": "sum", "mean": "mean", "max": "max", "amax": "max", "min": "min",
               "amin": "min", "prod": "prod"}


class SegmentReduceUnsupported(TypeError, NotImplementedError):
    """A dtype torch's segment_reduce has no kernel for (integer data, float lengths): a
    NotImplementedError there, a TypeError as minidl's other dtype errors."""


def _identity(reduce):
    return {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": -np.inf, "min": np.inf}[reduce]


class SegmentReduce(Function):
    def forward(self, data, lengths, starts, axis, reduce, initial):
        xp = get_array_module(data)
        self.axis, self.reduce, self.initial = axis, reduce, initial
        shape = data.shape
        lead, n = int(np.prod(shape[:axis], dtype=np.int64)), shape[axis]
        trail = int(np.prod(shape[axis + 1:], dtype=np.int64))
        self.shape = shape
        x = data.reshape(lead, n, trail)
        s = lengths.shape[-1]
        lengths = xp.broadcast_to(lengths.reshape(-1, s), (lead, s))
        starts = xp.broadcast_to(starts.reshape(-1, s), (lead, s))
        longest = int(lengths.max()) if lengths.size else 0
        steps = xp.arange(longest)
        idx = starts[:, :, None] + steps  # (lead, S, longest)
        valid = (steps < lengths[:, :, None]) & (idx < n)  # (unsafe lengths past the end)
        idx = xp.where(valid, idx, 0) if n else xp.zeros_like(idx)
        rows = xp.arange(lead)[:, None, None]
        if n:
            gathered = x[rows, idx]  # (lead, S, longest, trail)
        else:
            gathered = xp.zeros(idx.shape + (trail,), data.dtype)
        fill = xp.asarray(_identity(reduce), dtype=data.dtype)
        padded = xp.where(valid[..., None], gathered, fill)
        counts = lengths[:, :, None].astype(data.dtype)
        if reduce in ("sum", "mean"):
            out = padded.sum(axis=2)
        elif reduce == "prod":
            out = padded.prod(axis=2)
        elif reduce == "max":
            out = padded.max(axis=2) if longest else xp.full((lead, s, trail), -np.inf,
                                                                data.dtype)
        else:
            out = padded.min(axis=2) if longest else xp.full((lead, s, trail), np.inf,
                                                                data.dtype)
        if initial is not None:
            init = xp.asarray(initial, dtype=data.dtype)
            if reduce in ("sum", "mean"):
                out = out + init
            elif reduce == "prod":
                out = out * init
            elif reduce == "max":
                out = xp.maximum(out, init)
            else:
                out = xp.minimum(out, init)
        if reduce == "mean":
            empty = counts == 0
            with np.errstate(invalid="ignore", divide="ignore"):
                out = out / xp.where(empty, 1, counts)
            out = xp.where(empty, init if initial is not None else xp.asarray(
                np.nan, dtype=data.dtype), out)
        out = out.astype(data.dtype, copy=False)
        self.idx, self.valid, self.counts, self.lead, self.trail = idx, valid, counts, lead, trail
        if reduce in ("max", "min", "prod"):
            self.padded, self.out = padded, out
        return out.reshape(shape[:axis] + (s,) + shape[axis + 1:])

    def backward(self, g):
        xp = get_array_module(g)
        lead, trail, valid, idx = self.lead, self.trail, self.valid, self.idx
        s = idx.shape[1]
        g = g.reshape(lead, s, 1, trail)
        reduce = self.reduce
        if reduce == "sum":
            share = xp.broadcast_to(g, idx.shape + (trail,))
        elif reduce == "mean":
            counts = self.counts[..., None]
            share = xp.broadcast_to(g / xp.where(counts == 0, 1, counts), idx.shape + (trail,))
        elif reduce in ("max", "min"):
            hit = (self.padded == self.out[:, :, None, :]) & valid[..., None]
            ties = hit.sum(axis=2, keepdims=True)
            share = xp.where(hit, g / xp.maximum(ties, 1), 0)
        else:
            x = self.padded  # invalid places hold 1
            zero = x == 0
            zeros = zero.sum(axis=2, keepdims=True)
            rest = xp.where(zero, 1, x).prod(axis=2, keepdims=True)
            if self.initial is not None:
                rest = rest * xp.asarray(self.initial, dtype=x.dtype)
            with np.errstate(invalid="ignore", divide="ignore"):
                others = xp.where(zeros == 0, rest / xp.where(zero, 1, x),
                                  xp.where((zeros == 1) & zero, rest, 0))
            share = g * others
        grad = xp.zeros((lead, self.shape[self.axis], trail), g.dtype)
        rows = xp.broadcast_to(xp.arange(lead)[:, None, None], idx.shape)
        grad[rows[valid], idx[valid]] = share[valid]  # segments are disjoint
        return grad.reshape(self.shape), None, None


def _int_tensor(value, what):
    if not isinstance(value, Tensor):
        raise TypeError(f"segment_reduce(): argument '{what}' must be Tensor, not "
                        f"{type(value).__name__}")
    if value.dtype.kind not in "iu":
        raise SegmentReduceUnsupported(f"segment_reduce(): {what} must be an integer tensor "
                                       f"(int32 or int64), got {value.dtype}")
    return value.data


def _last_axis(axis, data_ndim, ndim, what):
    """``axis`` (made non-negative), which must be the last dim of ``what`` (of ``ndim`` dims)."""
    axis = axis + data_ndim if axis < 0 else axis
    if axis != ndim - 1:
        raise RuntimeError(f"segment_reduce(): Expected axis to be the last dimension of {what} "
                           f"but got {axis}.")
    return axis


def segment_reduce(data, reduce, *, lengths=None, indices=None, offsets=None, axis=0,
                   unsafe=False, initial=None):
    """torch.segment_reduce: ``reduce`` ("sum", "mean", "max", "min", "prod"; "amax"/"amin")
    over the segments of ``data`` along ``axis`` given by ``lengths`` or ``offsets``. See the
    module docstring."""
    if not isinstance(data, Tensor):
        raise TypeError(f"segment_reduce(): argument 'data' must be Tensor, not "
                        f"{type(data).__name__}")
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce argument must be either sum, prod, mean, amax or amin, got "
                         f"{reduce}")
    if indices is not None:
        raise NotImplementedError("segment_reduce(): indices is not supported yet (nor in "
                                  "torch); give lengths or offsets")
    if data.dtype.kind != "f" and str(data.dtype) != "bfloat16":
        raise SegmentReduceUnsupported(f"segment_reduce(): not implemented for {data.dtype} "
                                       "data (floating-point only, as torch's)")
    if lengths is None and offsets is None:
        raise RuntimeError("segment_reduce(): Either lengths or offsets must be defined.")
    xp = get_array_module(data.data)
    nd = max(data.ndim, 1)
    if not -nd <= axis < nd:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-nd}, {nd - 1}], "
                         f"but got {axis})")
    if lengths is not None:
        lens = _int_tensor(lengths, "lengths").astype(np.int64)
        if lens.ndim == 0:
            raise RuntimeError("segment_reduce(): lengths must have at least one dim")
        axis = _last_axis(axis, data.ndim, lens.ndim, "lengths")
        if bool((lens < 0).any()):
            raise RuntimeError("lengths contains negative value!")
        zero = xp.zeros(lens.shape[:-1] + (1,), np.int64)
        starts = xp.concatenate([zero, xp.cumsum(lens, axis=-1)[..., :-1]], axis=-1)
        total = lens.sum(axis=-1)
    else:
        offs = _int_tensor(offsets, "offsets").astype(np.int64)
        if offs.ndim == 0 or offs.shape[-1] < 1:
            raise RuntimeError("segment_reduce(): offsets must have at least one dim and one "
                               "boundary")
        axis = _last_axis(axis, data.ndim, offs.ndim, "offsets")
        starts, lens = offs[..., :-1], xp.diff(offs, axis=-1)
        if bool((lens < 0).any()):
            raise RuntimeError("segment_reduce(): offsets must not decrease (a segment of "
                               "negative length)")
        total = None
    if tuple(lens.shape[:-1]) != tuple(data.shape[:axis]):
        raise RuntimeError(f"segment_reduce(): lengths/offsets of shape {tuple(lens.shape)} do "
                           f"not fit data of shape {tuple(data.shape)} at axis {axis}: their "
                           f"leading dims must be the data's before it")
    n = data.shape[axis]
    if total is not None and not unsafe and bool((total != n).any()):
        raise RuntimeError("segment_reduce(): Expected all rows of lengths along axis to sum "
                           "to data.size(lengths.dim()-1) when !unsafe.")
    if total is None and lens.size and bool((starts + lens > n).any() | (starts < 0).any()):
        raise RuntimeError(f"segment_reduce(): offsets go past the {n} elements of data along "
                           f"axis {axis}")
    if initial is not None:
        initial = float(initial)
    if xp is not np:  # lengths/offsets given on the host for data on the GPU
        lens, starts = xp.asarray(lens), xp.asarray(starts)
    return SegmentReduce.apply(data, Tensor(lens), Tensor(starts), axis=axis,
                               reduce=_REDUCTIONS[reduce], initial=initial)
