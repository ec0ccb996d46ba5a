"""torch.optim.Adadelta."""
from __future__ import annotations

from ..backend import get_array_module
from .optimizer import Optimizer, _kernel_options, _check_group_numbers


class Adadelta(Optimizer):
    """torch.optim.Adadelta: s = rho * s + (1 - rho) g^2,
    delta = sqrt(acc + eps) / sqrt(s + eps) * g, acc = rho * acc + (1 - rho) delta^2,
    p -= lr * delta."""

    _state_keys = ("step", "square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize,
                                      **_kernel_options(foreach, capturable=capturable,
                                                        differentiable=differentiable)))

    def _check_group(self, group):
        _check_group_numbers("Adadelta", group, ("lr", "rho", "eps", "weight_decay"))
        if group["rho"] > 1:
            raise ValueError(f"Adadelta: rho must be in [0, 1], got {group['rho']}")

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        rho, eps = group["rho"], group["eps"]
        if not state:
            state.update(step=0, square_avg=xp.zeros_like(p.data),
                         acc_delta=xp.zeros_like(p.data))
        state["step"] += 1
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg *= rho
        square_avg += (1 - rho) * g * g
        std = xp.sqrt(square_avg + eps)
        delta = xp.sqrt(acc_delta + eps)
        delta /= std
        delta *= g
        acc_delta *= rho
        acc_delta += (1 - rho) * delta * delta
        p.data -= group["lr"] * delta
