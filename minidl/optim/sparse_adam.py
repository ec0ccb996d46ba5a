"""torch.optim.SparseAdam: Adam for sparse gradients (nn.Embedding(sparse=True)): the moments
and the parameter change only at the rows (entries) the gradient holds; a dense gradient is
refused, as torch's."""
from __future__ import annotations

import math

from ..backend import get_array_module
from ..backend import sparse as _sparse
from .optimizer import Optimizer, _check_betas, _check_finite, _check_flags


class SparseAdam(Optimizer):
    _state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))

    def _check_group(self, group):
        _check_finite("SparseAdam", lr=group["lr"], eps=group["eps"])
        _check_betas("SparseAdam", group["betas"])
        _check_flags("SparseAdam", maximize=group.get("maximize", False))
        if not 0.0 < group["lr"]:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 < group["eps"]:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")

    def _check_grad_layout(self, p, sparse, group):
        if not sparse:
            raise RuntimeError(f"SparseAdam does not support dense gradients, please consider "
                               f"Adam instead (parameter of shape {tuple(p.shape)})")

    def _update(self, p, g, group, state):
        self._check_grad_layout(p, False, group)

    def _update_sparse(self, p, g, group, state):
        """torch's sparse_adam: the gradient coalesced (the update is not linear), the moments
        moved towards it at its entries only, p changed there by the bias-corrected step."""
        xp = get_array_module(p.data)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        g = _sparse.coalesce(g)
        if not g.nnz:
            return
        at = tuple(g.indices)
        values = g.values.astype(p.data.dtype, copy=False)
        b1, b2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        old_m, old_v = m[at], v[at]
        step_m = (values - old_m) * (1 - b1)
        step_v = (values * values - old_v) * (1 - b2)
        m[at] += step_m  # the entries of a coalesced gradient are unique
        v[at] += step_v
        denom = xp.sqrt(step_v + old_v) + group["eps"]
        t = state["step"]
        step_size = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p.data[at] += -step_size * ((step_m + old_m) / denom)
