"""torch.optim.SparseAdam: Adam for sparse gradients (nn.Embedding(sparse=True)). minidl has
no sparse tensors, so every gradient is dense and, as torch does with a dense gradient, step()
refuses it: constructing one (code that builds its optimizers up front) works."""
from __future__ import annotations

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

    def _update(self, p, g, group, state):
        raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam "
                           "instead")
