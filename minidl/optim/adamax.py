"""torch.optim.Adamax."""
from __future__ import annotations

from ..backend import get_array_module
from .optimizer import Optimizer, _kernel_options, _check_betas, _check_group_numbers, _lerp_


class Adamax(Optimizer):
    """torch.optim.Adamax: Adam with the infinity norm, u = max(beta2 * u, |g| + eps),
    p -= lr / (1 - beta1^t) * m / u."""

    _state_keys = ("step", "exp_avg", "exp_inf")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize,
                                      **_kernel_options(foreach, differentiable=differentiable,
                                                        capturable=capturable)))

    def _check_group(self, group):
        _check_group_numbers("Adamax", group, ("lr", "eps", "weight_decay"))
        _check_betas("Adamax", group["betas"])

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        b1, b2 = group["betas"]
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_inf=xp.zeros_like(p.data))
        state["step"] += 1
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        _lerp_(state["exp_avg"], g, 1 - b1)
        exp_inf = state["exp_inf"]
        exp_inf *= b2
        xp.maximum(exp_inf, xp.abs(g) + group["eps"], out=exp_inf)
        clr = group["lr"] / (1 - b1 ** state["step"])
        p.data -= clr * (state["exp_avg"] / exp_inf)
