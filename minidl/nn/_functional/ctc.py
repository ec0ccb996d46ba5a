"""Connectionist temporal classification loss, as PyTorch's ctc_loss: the negative log
likelihood of every alignment of a target with the input frames, by the forward-backward
recursions in log space over the blank-extended target (blank, l1, blank, l2, ..., blank).

The gradient is PyTorch's: exp(log_probs) minus the posterior of each class at each frame,
which is the gradient with respect to the logits of a log_softmax (the usual input) and
passes unchanged through its backward; frames past an input's length get zero.
"""
from __future__ import annotations

import numpy as np

from ... import functional as _F
from ...backend import get_array_module
from ...functional import _check_reduction, _float_input, _needs_grad
from ...tensor import Function, Tensor


def _logaddexp(xp, *terms):
    m = terms[0]
    for t in terms[1:]:
        m = xp.maximum(m, t)
    finite = xp.where(xp.isfinite(m), m, 0)
    total = 0
    for t in terms:
        total = total + xp.exp(t - finite)
    with np.errstate(divide="ignore"):
        return xp.where(xp.isfinite(m), xp.log(total) + finite, m)


class CTCLoss(Function):
    """log_probs (T, N, C), the extended targets (N, 2S+1), lengths (N,) -> nll (N,)."""

    def forward(self, log_probs, ext, input_lengths, target_lengths, blank, zero_infinity):
        xp = get_array_module(log_probs)
        t_max, n, _ = log_probs.shape
        width = ext.shape[1]
        neg = xp.asarray(-np.inf, dtype=log_probs.dtype)
        batch = xp.arange(n)[:, None]
        emit = log_probs[:, batch, ext]                  # (T, N, 2S+1): lp of each label
        s_idx = xp.arange(width)[None, :]
        in_target = s_idx <= 2 * target_lengths[:, None]
        # a skip s-2 -> s is allowed onto a non-blank label that differs from label s-2
        skip = xp.zeros((n, width), dtype=bool)
        skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
        alpha = xp.full((t_max, n, width), neg, dtype=log_probs.dtype)
        alpha[0, :, 0] = emit[0, :, 0]
        if width > 1:
            alpha[0, :, 1] = xp.where(target_lengths > 0, emit[0, :, 1], neg)
        for t in range(1, t_max):
            prev = alpha[t - 1]
            one = xp.concatenate([xp.full((n, 1), neg, dtype=prev.dtype), prev[:, :-1]], axis=1)
            two = xp.concatenate([xp.full((n, 2), neg, dtype=prev.dtype), prev[:, :-2]], axis=1)
            two = xp.where(skip, two, neg)
            alpha[t] = xp.where(in_target, _logaddexp(xp, prev, one, two) + emit[t], neg)
        last = input_lengths - 1
        end = alpha[last, xp.arange(n)]                  # (N, 2S+1) at each input's last frame
        tail = 2 * target_lengths
        a_end = xp.take_along_axis(end, tail[:, None], axis=1)[:, 0]
        a_end1 = xp.where(target_lengths > 0,
                          xp.take_along_axis(end, xp.maximum(tail - 1, 0)[:, None], axis=1)[:, 0],
                          neg)
        nll = -_logaddexp(xp, a_end, a_end1)
        self.state = (alpha, ext, emit, skip, in_target, input_lengths, target_lengths, nll,
                      zero_infinity, log_probs.shape)
        self.save_for_backward(log_probs)
        if zero_infinity:
            nll = xp.where(xp.isinf(nll), 0, nll).astype(log_probs.dtype)
        return nll

    def backward(self, g):
        (log_probs,) = self.saved
        if not _needs_grad(self, 0):
            return (None,)
        xp = get_array_module(log_probs)
        alpha, ext, emit, skip, in_target, input_lengths, target_lengths, nll, zero_inf, \
            (t_max, n, c) = self.state
        width = ext.shape[1]
        neg = xp.asarray(-np.inf, dtype=log_probs.dtype)
        beta = xp.full((t_max, n, width), neg, dtype=log_probs.dtype)
        rows = xp.arange(n)
        tail = 2 * target_lengths
        s_idx = xp.arange(width)[None, :]
        # skip s+2 -> s (backwards) is allowed when label s+2 may be reached from s
        skip_back = xp.zeros((n, width), dtype=bool)
        skip_back[:, :-2] = skip[:, 2:]
        for t in range(t_max - 1, -1, -1):
            start = (input_lengths - 1) == t
            init = xp.where((s_idx == tail[:, None]) | ((s_idx == tail[:, None] - 1)
                                                          & (target_lengths[:, None] > 0)),
                            emit[t], neg)
            if t + 1 < t_max:
                nxt = beta[t + 1]
                one = xp.concatenate([nxt[:, 1:], xp.full((n, 1), neg, dtype=nxt.dtype)], axis=1)
                two = xp.concatenate([nxt[:, 2:], xp.full((n, 2), neg, dtype=nxt.dtype)], axis=1)
                two = xp.where(skip_back, two, neg)
                rec = _logaddexp(xp, nxt, one, two) + emit[t]
            else:
                rec = xp.full((n, width), neg, dtype=log_probs.dtype)
            live = (t < input_lengths - 1)[:, None] & in_target
            beta[t] = xp.where(start[:, None], init, xp.where(live, rec, neg))
        ab = alpha + beta                                 # (T, N, 2S+1)
        m = ab.max(axis=2, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        acc = xp.zeros((t_max, n, c), dtype=log_probs.dtype)
        weights = xp.exp(ab - m)
        for s in range(width):  # add each label's share into its class
            acc[:, rows, ext[:, s]] += weights[:, :, s]
        with np.errstate(divide="ignore", invalid="ignore"):
            lcab = xp.log(acc) + m
            grad = xp.exp(log_probs) - xp.exp(lcab + nll[None, :, None] - log_probs)
        valid = (xp.arange(t_max)[:, None] < input_lengths[None, :])[:, :, None]
        grad = xp.where(valid, grad, 0)
        if zero_inf:
            grad = xp.where(xp.isinf(nll)[None, :, None], 0, grad)
        return (grad * g[None, :, None]).astype(log_probs.dtype, copy=False)


def _lengths(name, what, value, n):
    if isinstance(value, Tensor):
        if value.data.dtype.kind not in "iu":
            raise TypeError(f"{name}: {what} must hold integers, got {value.dtype}")
        arr = np.asarray(value.numpy()).reshape(-1)
    else:
        arr = np.asarray(value).reshape(-1)
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: {what} must be integers, got {value!r}")
    if arr.size != n:
        raise ValueError(f"{name}: {what} has {arr.size} entries for a batch of {n}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name}: {what} must not be negative, got {arr.tolist()}")
    return arr.astype(np.int64)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False):
    """CTC loss of log_probs (T, N, C) (or unbatched (T, C)) against targets (N, S) padded, or
    1-D concatenated (sum(target_lengths),); lengths as Tensors or sequences of ints. 'mean'
    divides each loss by its target length, then averages over the batch, as PyTorch;
    zero_infinity turns impossible alignments' infinite losses (and their gradients) to 0."""
    name = "ctc_loss"
    _check_reduction(name, reduction)
    _float_input(name, log_probs)
    if not isinstance(targets, Tensor):
        raise TypeError(f"{name}: targets must be a Tensor, got {type(targets).__name__}")
    if targets.data.dtype.kind not in "iu":
        raise TypeError(f"{name}: targets must hold integer class indices, got {targets.dtype}")
    unbatched = log_probs.ndim == 2
    lp = log_probs.unsqueeze(1) if unbatched else log_probs
    if lp.ndim != 3:
        raise ValueError(f"{name}: log_probs must be (T, N, C) or (T, C), got shape "
                         f"{log_probs.shape}")
    t_max, n, c = lp.shape
    if not 0 <= blank < c:
        raise ValueError(f"{name}: blank must be in label range [0, {c}), got {blank}")
    in_len = _lengths(name, "input_lengths", input_lengths, n)
    tg_len = _lengths(name, "target_lengths", target_lengths, n)
    if in_len.size and in_len.max() > t_max:
        raise ValueError(f"{name}: input_lengths {in_len.tolist()} exceed the {t_max} frames "
                         f"of log_probs")
    if in_len.size and in_len.min() < 1:
        raise ValueError(f"{name}: input_lengths must be at least 1, got {in_len.tolist()}")
    tg = np.asarray(targets.numpy())
    if unbatched:
        tg = tg.reshape(1, -1)
    if tg.ndim == 1:  # concatenated targets
        if tg.size != tg_len.sum():
            raise ValueError(f"{name}: concatenated targets hold {tg.size} labels, "
                             f"target_lengths sum to {int(tg_len.sum())}")
        ends = np.cumsum(tg_len)
        padded = np.zeros((n, max(int(tg_len.max(initial=0)), 0)), dtype=np.int64)
        for k in range(n):
            padded[k, :tg_len[k]] = tg[ends[k] - tg_len[k]:ends[k]]
        tg = padded
    elif tg.ndim != 2 or tg.shape[0] != n:
        raise ValueError(f"{name}: targets must be (N, S) with N = {n} or 1-D concatenated, got "
                         f"shape {targets.shape}")
    if tg_len.size and tg_len.max() > tg.shape[1]:
        raise ValueError(f"{name}: target_lengths {tg_len.tolist()} exceed the targets' "
                         f"{tg.shape[1]} columns")
    s_max = int(tg_len.max(initial=0))
    used = np.concatenate([tg[k, :tg_len[k]] for k in range(n)]) if n else np.zeros(0)
    if used.size and (used.min() < 0 or used.max() >= c):
        raise IndexError(f"{name}: target labels must be in [0, {c}), got {used.min()} .. "
                         f"{used.max()}")
    if used.size and (used == blank).any():
        raise ValueError(f"{name}: targets must not contain the blank label {blank}")
    ext = np.full((n, 2 * s_max + 1), blank, dtype=np.int64)
    ext[:, 1::2] = tg[:, :s_max]
    (lp,) = _F._autocast_inputs(name, lp)
    xp = get_array_module(lp.data)
    nll = CTCLoss.apply(lp, ext=xp.asarray(ext), input_lengths=xp.asarray(in_len),
                        target_lengths=xp.asarray(tg_len), blank=int(blank),
                        zero_infinity=bool(zero_infinity))
    if reduction == "none":
        return nll.squeeze(0) if unbatched else nll
    if reduction == "sum":
        return nll.sum()
    divisor = Tensor(xp.asarray(np.maximum(tg_len, 1), dtype=nll.data.dtype))
    return (nll / divisor).mean()


__all__ = ["ctc_loss"]
