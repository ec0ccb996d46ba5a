"""torch.optim.Muon: momentum SGD whose update, a 2-D matrix, is orthogonalised by a quintic
Newton-Schulz iteration run in bfloat16, as torch runs it (Jordan et al.'s coefficients)."""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from ..backend.dtypes import bfloat16_dtype
from .optimizer import Optimizer, _check_finite, _check_flags, _lerp_

EPS = 1e-7
DEFAULT_A, DEFAULT_B, DEFAULT_C = 3.4445, -4.7750, 2.0315
DEFAULT_NS_STEPS = 5


def _bf16(xp, a):
    """a rounded to bfloat16 and held in float32 (what torch's bfloat16 CPU ops round each
    result to; their products accumulate in float32)."""
    return a.astype(bfloat16_dtype()).astype(np.float32)


def zeropower_via_newtonschulz(grad, ns_coefficients, ns_steps, eps):
    """An approximate U V^T of grad = U S V^T (singular values driven into about [0.5, 1.5]):
    ns_steps of X <- a X + (b X X^T + c (X X^T)^2) X from X = grad / |grad|, in bfloat16."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    xp = get_array_module(grad)
    a, b, c = ns_coefficients
    x = _bf16(xp, grad)
    tall = grad.shape[0] > grad.shape[1]
    if tall:
        x = x.T
    norm = _bf16(xp, xp.sqrt(xp.sum(x * x, dtype=np.float32)))
    x = _bf16(xp, x / xp.maximum(norm, _bf16(xp, xp.float32(eps))))
    for _ in range(ns_steps):
        gram = _bf16(xp, x @ x.T)
        gram_update = _bf16(xp, b * gram + c * (gram @ gram))
        x = _bf16(xp, a * x + gram_update @ x)
    return x.T if tall else x


def _adjust_lr(lr, adjust_lr_fn, shape):
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


class Muon(Optimizer):
    """For 2-D parameters (hidden layers' weights): B = momentum * B + (1 - momentum) * g,
    the update (g lerped toward B by momentum with nesterov, else B) orthogonalised, p shrunk
    by lr * weight_decay, then p -= adjusted lr * update; ``adjust_lr_fn`` "original" (lr *
    sqrt(max(1, rows / cols))) or "match_rms_adamw" (0.2 * lr * sqrt(max(rows, cols)))."""

    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(DEFAULT_A, DEFAULT_B, DEFAULT_C), eps=EPS,
                 ns_steps=DEFAULT_NS_STEPS, adjust_lr_fn=None):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov, ns_coefficients=tuple(ns_coefficients),
                                      eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError("Muon only supports 2D parameters whereas we found a "
                                     f"parameter with size: {tuple(p.shape)}")

    def _check_group(self, group):
        name = "Muon"
        _check_finite(name, lr=group["lr"], weight_decay=group["weight_decay"],
                      momentum=group["momentum"], eps=group["eps"])
        _check_flags(name, nesterov=group["nesterov"])
        if not 0.0 <= group["lr"]:
            raise ValueError(f"Learning rate should be >= 0 but is: {group['lr']}")
        if not 0.0 <= group["momentum"]:
            raise ValueError(f"momentum should be >= 0 but is: {group['momentum']}")
        if not 0.0 <= group["weight_decay"]:
            raise ValueError(f"weight decay should be >= 0 but is: {group['weight_decay']}")
        if group["adjust_lr_fn"] not in (None, "original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {group['adjust_lr_fn']} is not "
                             "supported")

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        if g.ndim != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = xp.zeros_like(p.data)
        buf = state["momentum_buffer"]
        mu = group["momentum"]
        _lerp_(buf, g, 1 - mu)
        if group["nesterov"]:
            update = g.copy()
            _lerp_(update, buf, mu)
        else:
            update = buf
        update = zeropower_via_newtonschulz(update, group["ns_coefficients"], group["ns_steps"],
                                            group["eps"])
        lr = group["lr"]
        p.data *= 1 - lr * group["weight_decay"]
        p.data -= (_adjust_lr(lr, group["adjust_lr_fn"], p.shape) * update).astype(
            p.data.dtype, copy=False)
