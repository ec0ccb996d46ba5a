"""``nn.utils.rnn``: pad_sequence and unpad_sequence, and packed sequences (PackedSequence,
pack_padded_sequence, pad_packed_sequence, pack_sequence, unpack_sequence) in PyTorch's layout,
which nn.RNN, nn.LSTM and nn.GRU take."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import functional as F
from ..autograd import Function
from ..backend import get_array_module, to_device
from ..ops import cat, stack, traces_untracked
from ..tensor import Tensor

__all__ = ["pad_sequence", "unpad_sequence", "PackedSequence", "pack_padded_sequence",
           "pad_packed_sequence", "pack_sequence", "unpack_sequence"]


class PackingError(ValueError, RuntimeError):
    """Lengths that do not fit the batch (too few or many, not positive, not sorted where
    enforce_sorted): PyTorch raises RuntimeError for these, minidl's argument errors are
    ValueErrors; this is both."""


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack tensors of shape (L_i, *) into (L_max, B, *) (``batch_first``: (B, L_max, *)),
    filling each past its length (``padding_side="left"``: before it) with padding_value."""
    name = "pad_sequence"
    if isinstance(sequences, Tensor):
        sequences = list(sequences.unbind(0)) if hasattr(sequences, "unbind") else [
            sequences[i] for i in range(sequences.shape[0])]
    sequences = list(sequences)
    if not sequences:
        raise ValueError(f"{name}: received an empty list of sequences")
    if padding_side not in ("left", "right"):
        raise ValueError(f"{name}: padding_side must be 'left' or 'right', got {padding_side!r}")
    for i, s in enumerate(sequences):
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}: sequence {i} is a {type(s).__name__}, not a Tensor")
        if s.ndim == 0:
            raise ValueError(f"{name}: sequence {i} is 0-d; each needs a length dim first")
    trailing = sequences[0].shape[1:]
    for i, s in enumerate(sequences):
        if s.shape[1:] != trailing:
            raise ValueError(f"{name}: sequence {i} has shape {s.shape}, whose dims after the "
                             f"first do not match sequence 0's {trailing}")
        if s.dtype != sequences[0].dtype:
            raise TypeError(f"{name}: sequence {i} is {s.dtype}, sequence 0 {sequences[0].dtype}")
    longest = max(s.shape[0] for s in sequences)
    padded = []
    for s in sequences:
        extra = longest - s.shape[0]
        widths = (0, 0) * (s.ndim - 1) + ((0, extra) if padding_side == "right" else (extra, 0))
        padded.append(F.pad(s, widths, value=padding_value) if extra else s)
    return stack(padded, dim=0 if batch_first else 1)


class PackedSequence(NamedTuple):
    """A batch of sequences of different lengths, PyTorch's layout: ``data`` holds step 0 of
    every sequence, then step 1 of those that have one, ...; ``batch_sizes[t]`` (int64, on
    the CPU) says how many sequences have step t. The sequences are ordered by decreasing
    length; ``sorted_indices`` (None when the caller sorted them) gives that order and
    ``unsorted_indices`` undoes it. Made by pack_padded_sequence or pack_sequence, taken by
    nn.RNN/LSTM/GRU, undone by pad_packed_sequence."""

    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor | None = None
    unsorted_indices: Tensor | None = None

    def to(self, *args, **kwargs):
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        move = (lambda t: None if t is None else t.to(data.device))
        return PackedSequence(data, self.batch_sizes, move(self.sorted_indices),
                              move(self.unsorted_indices))

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    @property
    def is_cuda(self):
        return self.data.device != "cpu"


class TracedPackedSequence(PackedSequence):
    """A PackedSequence made while the ONNX exporter traces. Its fields are the eager ones
    (``data`` made outside the graph: its layout depends on the lengths' values, which a
    graph cannot follow), and it also holds ``padded``, the padded batch (L, B, *) in the
    caller's order, and ``lengths``, a Tensor: nn.RNN/LSTM/GRU run on those (ONNX's
    sequence_lens) and pad_packed_sequence gives them back, so that the graph follows the
    lengths as an input."""


def _traced(fields, padded, lengths):
    seq = TracedPackedSequence(*fields)
    seq.padded, seq.lengths = padded, lengths
    return seq


def traced_packed(padded, lengths, sorted_order):
    """A TracedPackedSequence of ``padded`` (L, B, *), the caller's order, whose sequence b
    has lengths[b] steps (``lengths`` a Tensor; ``sorted_order`` the host order by decreasing
    length, None where the caller sorted them)."""
    host = lengths.numpy().astype(np.int64)
    order = np.arange(len(host)) if sorted_order is None else sorted_order
    t_idx, b_idx, batch_sizes = packing_index(host[order])
    data = Tensor(padded.data[:, _device_index(order, padded)][_device_index(t_idx, padded),
                                                                  _device_index(b_idx, padded)])
    sorted_indices = unsorted_indices = None
    if sorted_order is not None:
        sorted_indices = Tensor(_device_index(order.astype(np.int64), padded))
        unsorted_indices = Tensor(_device_index(np.argsort(order).astype(np.int64), padded))
    return _traced((data, Tensor(batch_sizes), sorted_indices, unsorted_indices), padded,
                   lengths)


class PadPacked(Function):
    """pad_packed_sequence of a TracedPackedSequence as a recorded op: ``padded`` (L, B, *)
    with ``padding_value`` past each sequence's length, cut to the longest length (or
    ``total_length``)."""

    def forward(self, padded, lengths, padding_value, total_length):
        xp = get_array_module(padded)
        steps = int(lengths.max()) if total_length is None else int(total_length)
        valid = xp.arange(padded.shape[0])[:, None] < xp.asarray(lengths)[None, :]
        self.valid = valid.reshape(valid.shape + (1,) * (padded.ndim - 2))
        self.shape, self.steps = padded.shape, steps
        out = xp.where(self.valid, padded, xp.asarray(padding_value, padded.dtype))
        return out[:steps]

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        out[:self.steps] = g
        return xp.where(self.valid, out, 0), None


def _host_ints(name, what, values):
    if isinstance(values, Tensor):
        values = values.numpy()
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"{name}: {what} must be a 1-D list or tensor of ints, got {values!r}")
    return arr.astype(np.int64)


def _device_index(array, like):
    return to_device(array, like.device) if like.device != "cpu" else array


def packing_index(lengths):
    """For lengths sorted in decreasing order: the (step, sequence) of each row of a packed
    ``data``, and the batch sizes."""
    steps = int(lengths[0]) if len(lengths) else 0
    batch_sizes = (lengths[None, :] > np.arange(steps)[:, None]).sum(axis=1).astype(np.int64)
    t_idx = np.repeat(np.arange(steps), batch_sizes)
    b_idx = np.concatenate([np.arange(n) for n in batch_sizes]) if steps else np.zeros(0, int)
    return t_idx, b_idx.astype(np.int64), batch_sizes


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (L, B, *) (``batch_first``: (B, L, *)) whose sequence b has
    lengths[b] valid steps. With enforce_sorted the lengths must be in decreasing order;
    otherwise the batch is sorted here and the order kept in the result."""
    name = "pack_padded_sequence"
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"{name}: input must have a length and a batch dim, got shape "
                         f"{input.shape}")
    input_lengths, lengths = lengths, _host_ints(name, "lengths", lengths)
    x = input.transpose(0, 1) if batch_first else input
    if len(lengths) != x.shape[1]:
        raise PackingError(f"{name}: {len(lengths)} lengths for a batch of {x.shape[1]} "
                         f"sequences (input shape {input.shape}, batch_first={batch_first})")
    if len(lengths) and lengths.min() <= 0:
        raise PackingError(f"{name}: Length of all samples has to be greater than 0, but found "
                         f"an element in 'lengths' that is <= 0: {lengths.tolist()}")
    if len(lengths) and lengths.max() > x.shape[0]:
        raise ValueError(f"{name}: a length of {lengths.max()} is longer than the input's "
                         f"{x.shape[0]} steps")
    if traces_untracked():
        # the ONNX exporter traces: the lengths stay a graph value, and the sequences keep
        # the caller's order (each is computed on its own); the exporter's second run on
        # shuffled inputs gives unsorted lengths, which the graph handles, so enforce_sorted
        # is not checked here
        order = None if enforce_sorted else np.argsort(-lengths, kind="stable")
        given = input_lengths if isinstance(input_lengths, Tensor) else Tensor(lengths)
        return traced_packed(x, given, order)
    sorted_indices = unsorted_indices = None
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise PackingError(f"{name}: `lengths` array must be sorted in decreasing order when "
                             "`enforce_sorted` is True (got "
                             f"{lengths.tolist()}). You can pass `enforce_sorted=False` to "
                             "pack_padded_sequence and/or pack_sequence to sidestep this "
                             "requirement if you do not need ONNX exportability.")
    else:
        order = np.argsort(-lengths, kind="stable")
        lengths = lengths[order]
        sorted_indices = Tensor(_device_index(order.astype(np.int64), x))
        unsorted_indices = Tensor(_device_index(np.argsort(order).astype(np.int64), x))
        x = x[:, _device_index(order, x)]
    t_idx, b_idx, batch_sizes = packing_index(lengths)
    data = x[_device_index(t_idx, x), _device_index(b_idx, x)]
    return PackedSequence(data, Tensor(batch_sizes), sorted_indices, unsorted_indices)


def unpack_sorted(sequence, padding_value=0.0, total_length=None):
    """A PackedSequence as (padded (L, B, *) in its sorted order, lengths on the host)."""
    data = sequence.data
    batch_sizes = _host_ints("pad_packed_sequence", "batch_sizes", sequence.batch_sizes)
    steps = len(batch_sizes)
    batch = int(batch_sizes[0]) if steps else 0
    lengths = (batch_sizes[None, :] > np.arange(batch)[:, None]).sum(axis=1).astype(np.int64)
    total = steps if total_length is None else total_length
    if total < steps:
        raise ValueError(f"pad_packed_sequence: Expected total_length to be at least {steps}, "
                         f"but got {total_length}")
    rows = data.shape[0]
    offsets = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]]).astype(np.int64)
    where = np.full((total, batch), rows, dtype=np.int64)  # row ``rows``: the padding
    for t in range(steps):
        where[t, :batch_sizes[t]] = offsets[t] + np.arange(batch_sizes[t])
    xp = get_array_module(data.data)
    pad_row = Tensor(xp.full((1,) + data.shape[1:], padding_value, dtype=data.dtype))
    padded = cat([data, pad_row])[_device_index(where, data)]
    return padded, lengths


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Undo pack_padded_sequence: (padded batch, lengths), in the batch's original order."""
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"pad_packed_sequence: expected a PackedSequence, got "
                        f"{type(sequence).__name__}")
    if isinstance(sequence, TracedPackedSequence) and traces_untracked():
        lengths = sequence.lengths
        if total_length is not None and total_length < int(lengths.numpy().max()):
            unpack_sorted(sequence, padding_value, total_length)  # its error
        if total_length is not None and total_length > sequence.padded.shape[0]:
            raise NotImplementedError(
                f"pad_packed_sequence: while the ONNX exporter traces, total_length "
                f"({total_length}) cannot exceed the packed input's {sequence.padded.shape[0]} "
                "steps")
        padded = PadPacked.apply(sequence.padded, lengths, padding_value=padding_value,
                                 total_length=total_length)
        return (padded.transpose(0, 1) if batch_first else padded), lengths
    padded, lengths = unpack_sorted(sequence, padding_value, total_length)
    if sequence.unsorted_indices is not None:
        unsorted = sequence.unsorted_indices
        padded = padded[:, unsorted.data]
        lengths = lengths[unsorted.numpy()]
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, Tensor(lengths)


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of tensors (L_i, *): pad_sequence then pack_padded_sequence."""
    sequences = list(sequences)
    lengths = [s.shape[0] if isinstance(s, Tensor) and s.ndim else 0 for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """The list of tensors a PackedSequence holds, in its original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The list of sequences a padded batch holds: sequence i is its first lengths[i] steps."""
    x = padded_sequences if batch_first else padded_sequences.transpose(0, 1)
    lengths = [int(n) for n in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
    if len(lengths) != x.shape[0]:
        raise ValueError(f"unpad_sequence: {len(lengths)} lengths for a batch of {x.shape[0]}")
    return [x[i, :n] for i, n in enumerate(lengths)]
