"""F.cross_entropy and F.nll_loss with torch's signatures and all its input forms: (N, C)
logits with (N,) class indices (functional's fused ops, as before), unbatched (C,) logits
with a 0-d target, K-dimensional (N, C, d_1, ..., d_K) logits with (N, d_1, ..., d_K)
targets (each position a row: the same loss), and, for cross_entropy, class probabilities
(a float target shaped as the logits), with class weights and label smoothing as torch
applies them."""
from __future__ import annotations

from ... import functional as _F
from ...backend.dtypes import is_floating
from ...ops import refuse_complex
from ...tensor import Tensor
from .losses import _legacy_reduction


def _rows(name, input, target):
    """(input as (rows, C), target as (rows,), the shape of an unreduced loss)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if not isinstance(target, Tensor):
        target = Tensor(target)
    if input.ndim == 1:
        if target.ndim != 0:
            raise ValueError(f"{name}: unbatched logits of shape {tuple(input.shape)} take a 0-d "
                             f"target, got shape {tuple(target.shape)}")
        return input.unsqueeze(0), target.reshape(1), ()
    if input.ndim == 2 or input.ndim == 0:
        return input, target, None  # (N, C): functional's checks and messages
    n, c = input.shape[:2]
    expected = (n,) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"{name}: logits of more than 2-D (N, C, d1, ...) such as "
                         f"{tuple(input.shape)} take a target of shape {expected}, got "
                         f"{tuple(target.shape)}")
    return input.movedim(1, -1).reshape(-1, c), target.reshape(-1), expected


def _probability_loss(input, target, weight, reduction, label_smoothing):
    """-sum_c w_c * t_c * log_softmax(input)_c per position, t smoothed toward 1/C; the mean
    divides by the number of positions (torch's, for probability targets)."""
    refuse_complex("cross_entropy", input.data)
    dim = 0 if input.ndim == 1 else 1
    classes = input.shape[dim]
    if not is_floating(target.data.dtype):
        raise TypeError(f"cross_entropy: class-probability targets must be floating point, got "
                        f"{target.dtype}")
    logp = _F.log_softmax(input, dim=dim)
    t = target
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / classes
    per_class = logp * t
    if weight is not None:
        if tuple(weight.shape) != (classes,):
            raise ValueError(f"cross_entropy: weight must have one value per class, shape "
                             f"({classes},), got {tuple(weight.shape)}")
        per_class = per_class * weight.reshape((classes,) + (1,) * (input.ndim - dim - 1))
    losses = -per_class.sum(dim=dim)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.mean() if losses.ndim else losses


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy: logits (N, C), (C,) or (N, C, d1, ...) against class
    indices (N,), () or (N, d1, ...), or against class probabilities of the logits' shape."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if (isinstance(input, Tensor) and isinstance(target, Tensor) and input.ndim >= 1
            and tuple(target.shape) == tuple(input.shape)):
        _F._check_loss_options("cross_entropy", reduction, label_smoothing)
        if ignore_index != -100 and is_floating(target.data.dtype):
            raise RuntimeError(f"cross_entropy: ignore_index is not supported for floating point "
                               f"target (class probabilities), got ignore_index={ignore_index}")
        return _probability_loss(input, target, weight, reduction, float(label_smoothing))
    logits, rows, shape = _rows("cross_entropy", input, target)
    loss = _F.cross_entropy(logits, rows, weight, ignore_index, reduction, label_smoothing)
    if reduction == "none" and shape is not None:
        loss = loss.reshape(shape)
    return loss


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """torch.nn.functional.nll_loss: log-probabilities (N, C), (C,) or (N, C, d1, ...) against
    class indices (N,), () or (N, d1, ...)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    log_probs, rows, shape = _rows("nll_loss", input, target)
    loss = _F.nll_loss(log_probs, rows, weight, ignore_index, reduction)
    if reduction == "none" and shape is not None:
        loss = loss.reshape(shape)
    return loss

