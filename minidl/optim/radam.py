"""torch.optim.RAdam."""
from __future__ import annotations

import math

from ..backend import get_array_module
from .optimizer import Optimizer, _kernel_options, _check_betas, _check_group_numbers, _lerp_


class RAdam(Optimizer):
    """torch.optim.RAdam: Adam whose adaptive step is rectified by the variance of the second
    moment's estimate; while that is intractable (rho_t <= 5, the first steps) it steps by the
    bias-corrected momentum alone."""

    _state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize,
                                      **_kernel_options(foreach, capturable=capturable,
                                                        differentiable=differentiable)))

    def _check_group(self, group):
        _check_group_numbers("RAdam", group, ("lr", "eps", "weight_decay"),
                             ("maximize", "decoupled_weight_decay"))
        _check_betas("RAdam", group["betas"])

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        b1, b2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
        state["step"] += 1
        t = state["step"]
        if wd:
            if group["decoupled_weight_decay"]:
                p.data *= 1 - lr * wd
            else:
                g = g + wd * p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        _lerp_(m, g, 1 - b1)
        v *= b2
        v += (1 - b2) * g * g
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        step = (m / c1) * lr
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2 ** t) / c2
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                             / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            denom = xp.sqrt(v)
            denom += group["eps"]
            step *= math.sqrt(c2) / denom
            step *= rect
        p.data -= step
