"""torch.optim.ASGD."""
from __future__ import annotations

from ..backend import get_array_module
from .optimizer import Optimizer, _kernel_options, _as_float32, _check_group_numbers


class ASGD(Optimizer):
    """torch.optim.ASGD, averaged SGD: p = p * (1 - lambd * eta) - eta * g with
    eta = lr / (1 + lambd * lr * t)^alpha, and ax the running average of p from step t0 on
    (mu = 1 / max(1, t - t0)). As in PyTorch, eta and mu are float32 numbers."""

    _state_keys = ("step", "eta", "mu", "ax")
    _scalar_state_keys = ("eta", "mu")

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False):
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0,
                                      weight_decay=weight_decay, maximize=maximize,
                                      **_kernel_options(foreach, differentiable=differentiable,
                                                        capturable=capturable)))

    def _check_group(self, group):
        _check_group_numbers("ASGD", group, ("lr", "lambd", "alpha", "t0", "weight_decay"))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        lr, lambd = group["lr"], group["lambd"]
        if not state:
            state.update(step=0, eta=_as_float32(lr), mu=1.0, ax=xp.zeros_like(p.data))
        state["step"] += 1
        t = state["step"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        eta = state["eta"]
        p.data *= 1 - lambd * eta
        p.data -= eta * g
        ax = state["ax"]
        if state["mu"] != 1:
            ax += (p.data - ax) * state["mu"]
        else:
            ax[...] = p.data
        state["eta"] = _as_float32(lr / ((1 + lambd * lr * t) ** group["alpha"]))
        state["mu"] = _as_float32(1 / max(1, t - group["t0"]))
