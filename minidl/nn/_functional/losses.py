"""More losses, as PyTorch's: kl_div, huber_loss, margin_ranking_loss, hinge_embedding_loss,
soft_margin_loss, multilabel_soft_margin_loss, cosine_embedding_loss, triplet_margin_loss,
poisson_nll_loss, gaussian_nll_loss.

Each is written with differentiable ops (autograd takes the gradient) and the stable pieces
of ``activations`` (softplus, logsigmoid); the legacy ``size_average``/``reduce`` arguments
map to ``reduction`` as in PyTorch. Under autocast they run in float32 where PyTorch's policy
lists them (``amp/autocast.py``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ... import functional as _F
from ...backend import get_array_module
from ...functional import _check_reduction
from ...indexing import gather
from ...ops import minimum, refuse_complex, where
from ...tensor import Tensor
from .activations import logsigmoid, softplus
from .normalization import pairwise_distance


def _legacy_reduction(size_average, reduce, reduction):
    """PyTorch's mapping of the deprecated size_average/reduce to a reduction."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _tensors(name, **named):
    for what, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")


def _same_shape(name, **named):
    _tensors(name, **named)
    (first, a), *rest = named.items()
    for what, t in rest:
        if t.shape != a.shape:
            raise ValueError(f"{name}: {what} shape {t.shape} differs from {first} shape "
                             f"{a.shape}; they must be the same")


def _broadcastable(name, **named):
    """Shapes that broadcast together (torch's elementwise losses take them), else an error
    naming each operand's shape."""
    _tensors(name, **named)
    try:
        np.broadcast_shapes(*(tuple(t.shape) for t in named.values()))
    except ValueError:
        shapes = ", ".join(f"{what} {tuple(t.shape)}" for what, t in named.items())
        raise ValueError(f"{name}: the shapes of {shapes} do not broadcast together") from None


def _floats(name, *tensors):
    return _F._autocast_inputs(name, *tensors)


def _const(t, like):
    """A number or array as a constant Tensor on ``like``'s device and dtype."""
    xp = get_array_module(like.data)
    return Tensor(xp.asarray(t, dtype=like.data.dtype))


def _no_grad_lift(t, low):
    """t raised to at least ``low`` with the gradient of t itself (PyTorch clamps such
    values in place under no_grad: the clamp does not stop the gradient)."""
    xp = get_array_module(t.data)
    return t + Tensor(xp.maximum(t.data, low) - t.data)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise KL divergence target * (log target - input), input holding log-probabilities
    (target too with log_target=True); reduction 'batchmean' divides the sum by the batch
    size, the true KL divergence (PyTorch's 'mean' averages over every element)."""
    name = "kl_div"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("mean", "batchmean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'batchmean', 'sum' or 'none', got "
                         f"{reduction!r}")
    if reduction == "mean":
        warnings.warn("kl_div: reduction='mean' divides the total loss by both the batch size "
                      "and the support size, as PyTorch's; 'batchmean' divides by the batch "
                      "size only, which is the KL divergence", stacklevel=2)
    _broadcastable(name, input=input, target=target)
    for t in (input, target):  # as torch's: its log-probabilities are real
        refuse_complex(name, t.data)
    input, target = _floats(name, input, target)
    if log_target:
        loss = target.exp() * (target - input)
    elif target.requires_grad:  # xlogy through ops: 0 where the target is 0
        positive = Tensor(target.data > 0)
        safe = where(positive, target, _const(1.0, target))
        loss = where(positive, target * safe.log(), target * 0.0) - target * input
    else:  # xlogy: 0 where the target is 0
        xp = get_array_module(target.data)
        t = target.data
        with np.errstate(divide="ignore", invalid="ignore"):
            tlogt = xp.where(t > 0, t * xp.log(xp.where(t > 0, t, 1)), 0)
        loss = Tensor(tlogt.astype(t.dtype, copy=False)) - target * input
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)


# ---- torch's signatures around minidl.functional's core losses ------------------------------
def _weighted_mean(name, errors, weight, input, reduction):
    """torch's weighted l1/mse: errors * weight (input's shape), and for 'mean' their sum over
    the weights' sum."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name}: weight must be a Tensor, got {type(weight).__name__}")
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError(f"{name}: Weights and input must have the same size (weight "
                         f"{tuple(weight.shape)}, input {tuple(input.shape)})")
    loss = errors * weight
    if reduction == "mean":
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Squared error; the legacy ``size_average``/``reduce`` and ``weight`` as torch's."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if weight is None:
        return _F.mse_loss(input, target, reduction=reduction)
    _check_reduction("mse_loss", reduction)
    return _weighted_mean("mse_loss", _F.mse_loss(input, target, reduction="none"), weight,
                          input, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Absolute error; the legacy ``size_average``/``reduce`` and ``weight`` as torch's."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if weight is None:
        return _F.l1_loss(input, target, reduction=reduction)
    _check_reduction("l1_loss", reduction)
    return _weighted_mean("l1_loss", _F.l1_loss(input, target, reduction="none"), weight,
                          input, reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    return _F.smooth_l1_loss(input, target, reduction=_legacy_reduction(size_average, reduce,
                                                                        reduction), beta=beta)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    return _F.binary_cross_entropy(input, target, weight,
                                   reduction=_legacy_reduction(size_average, reduce, reduction))


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    return _F.binary_cross_entropy_with_logits(
        input, target, weight, reduction=_legacy_reduction(size_average, reduce, reduction),
        pos_weight=pos_weight)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere (d = input - target)."""
    name = "huber_loss"
    _check_reduction(name, reduction)
    input, target = _F.broadcast_loss_operands(name, input, target)
    if delta <= 0:
        raise ValueError(f"{name}: delta must be positive, got {delta}")
    for t in (input, target):  # its |d| < delta test orders magnitudes, not complex errors
        refuse_complex(name, t.data)
    input, target = _floats(name, input, target)
    d = input - target
    ad = abs(d)
    loss = where(ad < delta, d * d * 0.5, (ad - 0.5 * delta) * delta)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                        reduction="mean"):
    """max(0, -target * (input1 - input2) + margin), target 1 or -1."""
    name = "margin_ranking_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _tensors(name, input1=input1, input2=input2, target=target)
    if not (input1.ndim == input2.ndim == target.ndim):
        raise ValueError(f"{name}: input1 {input1.shape}, input2 {input2.shape} and target "
                         f"{target.shape} must have the same number of dims")
    _broadcastable(name, input1=input1, input2=input2, target=target)
    input1, input2, target = _floats(name, input1, input2, target)
    return _reduce((-target * (input1 - input2) + margin).clamp(min=0), reduction)


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None,
                         reduction="mean"):
    """input where target is 1, max(0, margin - input) where it is -1."""
    name = "hinge_embedding_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _broadcastable(name, input=input, target=target)
    (input,) = _floats(name, input)
    t = target.data
    zero = input * 0.0
    loss = where(Tensor(t != 1), (margin - input).clamp(min=0), zero) + \
        where(Tensor(t != -1), input, zero)
    return _reduce(loss, reduction)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """log(1 + exp(-target * input)), target 1 or -1."""
    name = "soft_margin_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _same_shape(name, input=input, target=target)
    input, target = _floats(name, input, target)
    return _reduce(softplus(-target * input), reduction)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None,
                                reduction="mean"):
    """Per sample, the mean over classes (the last dim) of the binary cross-entropy of
    sigmoid(input) against 0/1 targets, each class scaled by ``weight``."""
    name = "multilabel_soft_margin_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _same_shape(name, input=input, target=target)
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * (weight if isinstance(weight, Tensor) else _const(weight, loss))
    c = input.shape[-1] if input.ndim else 1
    loss = loss.sum(dim=-1) / c if input.ndim else loss
    return _reduce(loss, reduction)


def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                          reduction="mean"):
    """1 - cos(input1, input2) where target is 1, max(0, cos - margin) where it is -1 (the
    cosine over the last dim, each squared norm + 1e-12, as PyTorch's)."""
    name = "cosine_embedding_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _tensors(name, input1=input1, input2=input2, target=target)
    if input1.shape != input2.shape or input1.ndim not in (1, 2) or \
            target.ndim != input1.ndim - 1:
        raise ValueError(f"{name}: expected input1 and input2 of the same 1-D or 2-D shape and "
                         f"a target with one dim fewer, got {input1.shape}, {input2.shape} and "
                         f"{target.shape}")
    try:
        np.broadcast_shapes(tuple(input1.shape[:-1]), tuple(target.shape))
    except ValueError:
        raise ValueError(f"{name}: target of shape {tuple(target.shape)} does not fit the "
                         f"{tuple(input1.shape[:-1])} rows of input1 {tuple(input1.shape)}") from None
    input1, input2 = _floats(name, input1, input2)
    eps = 1e-12
    dot = (input1 * input2).sum(dim=-1)
    mag = ((input1 * input1).sum(dim=-1) + eps) * ((input2 * input2).sum(dim=-1) + eps)
    cos = dot / mag.sqrt()
    t = target.data
    zero = cos * 0.0
    loss = where(Tensor(t == 1), 1 - cos, zero) + \
        where(Tensor(t == -1), (cos - margin).clamp(min=0), zero)
    return _reduce(loss, reduction)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                        size_average=None, reduce=None, reduction="mean"):
    """max(0, d(anchor, positive) - d(anchor, negative) + margin), d the p-norm distance
    (pairwise_distance); swap uses the smaller of d(a, n) and d(p, n)."""
    name = "triplet_margin_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _tensors(name, anchor=anchor, positive=positive, negative=negative)
    if not (anchor.ndim == positive.ndim == negative.ndim) or anchor.ndim not in (1, 2):
        raise ValueError(f"{name}: anchor {anchor.shape}, positive {positive.shape} and negative "
                         f"{negative.shape} must all be 1-D or all 2-D")
    if margin <= 0:
        raise ValueError(f"{name}: margin must be greater than 0, got {margin}")
    anchor, positive, negative = _floats(name, anchor, positive, negative)
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce((d_pos - d_neg + margin).clamp(min=0), reduction)


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8,
                     reduce=None, reduction="mean"):
    """exp(input) - target * input (log_input), or input - target * log(input + eps); full
    adds Stirling's approximation of log(target!) where target > 1."""
    name = "poisson_nll_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _broadcastable(name, input=input, target=target)
    input, target = _floats(name, input, target)
    if log_input:
        loss = input.exp() - target * input
    else:
        loss = input - target * (input + eps).log()
    if full:
        xp = get_array_module(target.data)
        t = target.data
        safe = xp.where(t > 1, t, 2)
        stirling = xp.where(t > 1, safe * xp.log(safe) - safe + 0.5 * xp.log(2 * math.pi * safe),
                            0)
        if target.requires_grad:
            tt = where(Tensor(t > 1), target, _const(2.0, target))
            stirling_t = where(Tensor(t > 1), tt * tt.log() - tt + (tt * (2 * math.pi)).log()
                               * 0.5, target * 0.0)
            loss = loss + stirling_t
        else:
            loss = loss + Tensor(stirling.astype(t.dtype, copy=False))
    return _reduce(loss, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 (log(var) + (input - target)^2 / var) (+ 0.5 log(2 pi) with full), var at least
    eps; var has the input's shape, or one dim fewer / a last dim of 1 (homoscedastic)."""
    name = "gaussian_nll_loss"
    _check_reduction(name, reduction)
    _tensors(name, input=input, target=target)
    if not isinstance(var, Tensor):
        var = _const(float(var), input).expand(*input.shape)
    if var.shape != input.shape:
        if input.shape[:-1] == var.shape:
            var = var.unsqueeze(-1)
        elif input.shape[:-1] == var.shape[:-1] and var.shape[-1] == 1:
            pass
        else:
            raise ValueError(f"{name}: var of shape {var.shape} does not fit the input's "
                             f"shape {input.shape}")
    if bool((var.data < 0).any()):
        raise ValueError(f"{name}: var has negative entries")
    d = input - target
    var = _no_grad_lift(var, eps)
    loss = (var.log() + d * d / var) * 0.5
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


def _class_targets(name, input, target):
    """(N, C) input and (N,) integer targets (an unbatched (C,) input with a 0-d target gets a
    batch dim); whether it was unbatched."""
    _tensors(name, input=input, target=target)
    if target.data.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got {target.dtype}")
    if input.ndim == 1 and target.ndim in (0, 1) and target.numel() == 1:
        return input.unsqueeze(0), target.reshape(1), True
    if input.ndim != 2 or target.ndim != 1 or target.shape[0] != input.shape[0]:
        raise ValueError(f"{name}: expected input (N, C) and target (N,) (or (C,) and a 0-d "
                         f"target), got {input.shape} and {target.shape}")
    c = input.shape[1]
    if target.data.size:
        low, high = _F._class_range(target)  # measured on the host where the labels came from
        if low < 0 or high >= c:
            raise IndexError(f"{name}: target {low} .. {high} out of bounds for {c} classes")
    return input, target, False


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None,
                      reduce=None, reduction="mean"):
    """Multi-class hinge loss: sum over classes i != y of max(0, margin - x[y] + x[i])^p
    (times weight[y]) divided by the number of classes; p is 1 or 2, as in PyTorch."""
    name = "multi_margin_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    if p not in (1, 2):
        raise ValueError("only p == 1 and p == 2 supported")
    if weight is not None and (not isinstance(weight, Tensor) or weight.ndim != 1):
        raise ValueError("weight must be one-dimensional")
    x, y, unbatched = _class_targets(name, input, target)
    c = x.shape[1]
    if weight is not None and weight.shape[0] != c:
        raise ValueError(f"{name}: weight has {weight.shape[0]} entries for {c} classes")
    (x,) = _floats(name, x)
    xp = get_array_module(x.data)
    picked = gather(x, 1, y.reshape(-1, 1))              # x[y], (N, 1)
    z = (x - picked + margin).relu()  # torch's kernel: no gradient where the hinge is at 0
    if p == 2:
        z = z * z
    if weight is not None:
        z = z * gather(weight.astype(z.dtype), 0, y).reshape(-1, 1)
    others = Tensor((xp.arange(c)[None, :] != y.data[:, None]).astype(z.data.dtype))
    loss = (z * others).sum(dim=1) / c
    if unbatched:
        loss = loss.reshape(())
    return _reduce(loss, reduction)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Multi-label hinge loss: target (N, C) lists each sample's classes, ended by the first
    -1; sum over listed j and unlisted i of max(0, 1 - (x[j] - x[i])), over C."""
    name = "multilabel_margin_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _tensors(name, input=input, target=target)
    if target.data.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got {target.dtype}")
    if input.shape != target.shape or input.ndim not in (1, 2):
        raise ValueError(f"{name}: inconsistent target size: {target.shape} for input of size "
                         f"{input.shape}")
    unbatched = input.ndim == 1
    x = input.unsqueeze(0) if unbatched else input
    t = np.asarray(target.numpy()).reshape(x.shape)
    n, c = x.shape
    if t.size and (t.min() < -1 or t.max() >= c):
        raise IndexError(f"{name}: target values must be in [-1, {c}), got {t.min()} .. "
                         f"{t.max()}")
    listed = np.cumprod(t != -1, axis=1).astype(bool)     # before the first -1
    is_target = np.zeros((n, c), dtype=bool)
    rows = np.repeat(np.arange(n)[:, None], c, axis=1)
    is_target[rows[listed], t[listed]] = True
    (x,) = _floats(name, x)
    xp = get_array_module(x.data)
    safe = np.where(listed, t, 0)
    xj = gather(x, 1, Tensor(xp.asarray(safe)))           # (N, K): x at each listed class
    z = (xj.unsqueeze(2) * -1 + x.unsqueeze(1) + 1.0).relu()  # (N, K, C); none at 0, as torch
    mask = listed[:, :, None] & ~is_target[:, None, :]
    loss = (z * Tensor(xp.asarray(mask, dtype=x.data.dtype))).sum(dim=(1, 2)) / c
    if unbatched:
        loss = loss.reshape(())
    return _reduce(loss, reduction)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None,
                                      margin=1.0, swap=False, reduction="mean"):
    """max(0, margin + d(anchor, positive) - d(anchor, negative)) with any distance function
    (pairwise_distance by default); swap takes the smaller of d(a, n) and d(p, n)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    _tensors("triplet_margin_with_distance_loss", anchor=anchor, positive=positive,
             negative=negative)
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise ValueError(f"The anchor, positive, and negative tensors are expected to have the "
                         f"same number of dimensions, but got: anchor {anchor.ndim}D, positive "
                         f"{positive.ndim}D, and negative {negative.ndim}D inputs")
    distance = distance_function if distance_function is not None else pairwise_distance
    d_pos = distance(anchor, positive)
    d_neg = distance(anchor, negative)
    if swap:
        d_neg = minimum(d_neg, distance(positive, negative))
    return _reduce((d_pos - d_neg + margin).clamp(min=0), reduction)


__all__ = ["mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "kl_div", "huber_loss", "margin_ranking_loss",
           "hinge_embedding_loss",
           "soft_margin_loss", "multilabel_soft_margin_loss", "cosine_embedding_loss",
           "triplet_margin_loss", "poisson_nll_loss", "gaussian_nll_loss", "multi_margin_loss",
           "multilabel_margin_loss", "triplet_margin_with_distance_loss"]
