"""``nn.utils.rnn``: pad_sequence. Packed sequences are not implemented: their functions raise
NotImplementedError naming themselves and the alternative (pad, and mask or pick the steps)."""
from __future__ import annotations

from .. import functional as F
from ..ops import stack
from ..tensor import Tensor

__all__ = ["pad_sequence", "pack_padded_sequence", "pad_packed_sequence", "pack_sequence",
           "unpad_sequence", "PackedSequence"]


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


def _not_implemented(what):
    raise NotImplementedError(
        f"nn.utils.rnn.{what}: packed sequences are not implemented in minidl; pad the batch "
        "with pad_sequence, run the RNN on it and pick each sequence's last valid step (or "
        "mask the padded steps) instead")


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    _not_implemented("pack_padded_sequence")


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    _not_implemented("pad_packed_sequence")


def pack_sequence(sequences, enforce_sorted=True):
    _not_implemented("pack_sequence")


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The list of sequences a padded batch holds: sequence i is its first lengths[i] steps."""
    x = padded_sequences if batch_first else padded_sequences.transpose(0, 1)
    lengths = [int(n) for n in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
    if len(lengths) != x.shape[0]:
        raise ValueError(f"unpad_sequence: {len(lengths)} lengths for a batch of {x.shape[0]}")
    return [x[i, :n] for i, n in enumerate(lengths)]


class PackedSequence:
    def __init__(self, *args, **kwargs):
        _not_implemented("PackedSequence")
