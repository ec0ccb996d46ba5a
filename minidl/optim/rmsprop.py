"""torch.optim.RMSprop."""
from __future__ import annotations

from ..backend import get_array_module
from .optimizer import Optimizer, _check_finite, _check_flags, _check_non_negative, _lerp_


class RMSprop(Optimizer):
    """torch.optim.RMSprop: s = alpha * s + (1 - alpha) * g^2, p -= lr * g / (sqrt(s) + eps);
    centered subtracts the square of the running mean of g from s, momentum keeps
    buf = momentum * buf + g / (sqrt(s) + eps) and steps by lr * buf."""

    _state_keys = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay,
                                      capturable=capturable, foreach=foreach, maximize=maximize,
                                      differentiable=differentiable))

    def _check_group(self, group):
        keys = ("lr", "alpha", "eps", "weight_decay", "momentum")
        _check_finite("RMSprop", **{k: group[k] for k in keys})
        _check_non_negative("RMSprop", group, keys)
        if group["alpha"] > 1:
            raise ValueError(f"RMSprop: alpha must be in [0, 1], got {group['alpha']}")
        _check_flags("RMSprop", centered=group["centered"], maximize=group.get("maximize", False))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        alpha, lr, momentum = group["alpha"], group["lr"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * g * g
        if group["centered"]:
            grad_avg = state.get("grad_avg")
            if grad_avg is None:
                grad_avg = state["grad_avg"] = xp.zeros_like(p.data)
            _lerp_(grad_avg, g, 1 - alpha)
            avg = square_avg - grad_avg * grad_avg
            avg = xp.sqrt(avg, out=avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += group["eps"]
        if momentum > 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp.zeros_like(p.data)
            buf *= momentum
            buf += g / avg
            p.data -= lr * buf
        else:
            p.data -= lr * (g / avg)
