"""torch.optim.NAdam."""
from __future__ import annotations


from ..backend import get_array_module
from .optimizer import Optimizer, _kernel_options, _as_float32, _check_betas, _check_group_numbers, _lerp_


class NAdam(Optimizer):
    """torch.optim.NAdam: Adam with Nesterov momentum, whose momentum coefficient
    mu_t = beta1 * (1 - 0.96^(t * momentum_decay) / 2) warms up over the first steps;
    decoupled_weight_decay=True shrinks p by lr * weight_decay as AdamW does."""

    _state_keys = ("step", "mu_product", "exp_avg", "exp_avg_sq")
    _scalar_state_keys = ("mu_product",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize,
                                      **_kernel_options(foreach, capturable=capturable,
                                                        differentiable=differentiable)))

    def _check_group(self, group):
        _check_group_numbers("NAdam", group, ("lr", "eps", "weight_decay", "momentum_decay"),
                             ("maximize", "decoupled_weight_decay"))
        _check_betas("NAdam", group["betas"])

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        b1, b2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        if not state:
            state.update(step=0, mu_product=1.0, exp_avg=xp.zeros_like(p.data),
                         exp_avg_sq=xp.zeros_like(p.data))
        state["step"] += 1
        t = state["step"]
        if wd:
            if group["decoupled_weight_decay"]:
                p.data *= 1 - lr * wd
            else:
                g = g + wd * p.data
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * group["momentum_decay"]))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * group["momentum_decay"]))
        mu_product = state["mu_product"] = _as_float32(_as_float32(state["mu_product"])
                                                       * _as_float32(mu))
        m, v = state["exp_avg"], state["exp_avg_sq"]
        _lerp_(m, g, 1 - b1)
        v *= b2
        v += (1 - b2) * g * g
        denom = xp.sqrt(v / (1 - b2 ** t))
        denom += eps
        p.data -= (lr * (1.0 - mu) / (1.0 - mu_product)) * (g / denom)
        p.data -= (lr * mu_next / (1.0 - mu_product * mu_next)) * (m / denom)


