"""torch.optim.Adagrad."""
from __future__ import annotations

from ..backend import get_array_module
from ..backend import sparse as _sparse
from .optimizer import Optimizer, _kernel_options, _check_group_numbers


class Adagrad(Optimizer):
    """torch.optim.Adagrad: sum += g^2, p -= clr * g / (sqrt(sum) + eps) with
    clr = lr / (1 + (step - 1) * lr_decay). As in PyTorch, every parameter's state (sum filled
    with initial_accumulator_value) is made at construction."""

    _state_keys = ("step", "sum")

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      maximize=maximize,
                                      **_kernel_options(foreach, differentiable=differentiable,
                                                        fused=fused)))
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p, group):
        xp = get_array_module(p.data)
        value = group["initial_accumulator_value"]
        if p.data.dtype.kind == "c":  # both parts start there, as torch's
            value = complex(value, value)
        self.state[id(p)] = {"step": 0, "sum": xp.full_like(p.data, value)}

    def _check_group(self, group):
        _check_group_numbers("Adagrad", group, ("lr", "lr_decay", "eps", "weight_decay",
                                                "initial_accumulator_value"))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        if not state:  # a group added after construction
            self._init_state(p, group)
            state.update(self.state[id(p)])
            self.state[id(p)] = state
        state["step"] += 1
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] += g * g
        std = xp.sqrt(state["sum"])
        std += group["eps"]
        p.data -= clr * (g / std)

    def _check_grad_layout(self, p, sparse, group):
        if sparse and group["weight_decay"]:
            raise RuntimeError(f"weight_decay option is not compatible with sparse gradients "
                               f"(Adagrad: parameter of shape {tuple(p.shape)})")

    def _update_sparse(self, p, g, group, state):
        """A sparse gradient, as torch's Adagrad takes one: coalesced, its squares added to the
        sum at its entries, p changed there; weight decay refused, as torch's."""
        self._check_grad_layout(p, True, group)
        xp = get_array_module(p.data)
        if not state:
            self._init_state(p, group)
            state.update(self.state[id(p)])
            self.state[id(p)] = state
        state["step"] += 1
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        g = _sparse.coalesce(g)
        if not g.nnz:
            return
        at = tuple(g.indices)
        values = g.values.astype(p.data.dtype, copy=False)
        total = state["sum"]
        total[at] += values * values
        std = xp.sqrt(total[at]) + group["eps"]
        p.data[at] += -clr * (values / std)
