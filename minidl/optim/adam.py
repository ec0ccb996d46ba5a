"""torch.optim.Adam and AdamW."""
from __future__ import annotations

import math

from ..backend import get_array_module
from ..tensor import Tensor
from .optimizer import (Optimizer, _check_betas, _check_finite, _check_flags, _check_non_negative,
                        _fused, _kernel_options, _lerp_)


class Adam(Optimizer):
    """torch.optim.Adam. weight_decay adds weight_decay * p to the gradient (L2), or, with
    decoupled_weight_decay=True (AdamW), shrinks p by lr * weight_decay before the step;
    amsgrad divides by the running maximum of the second moment instead of the moment."""

    _state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      **_kernel_options(foreach, capturable=capturable,
                                                        differentiable=differentiable,
                                                        fused=fused),
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group):
        name = type(self).__name__
        betas = group["betas"]
        lr = _scalar_tensor(name, "lr", group["lr"], group)
        _check_finite(name, lr=lr, eps=group["eps"], weight_decay=group["weight_decay"])
        if isinstance(betas, (tuple, list)) and len(betas) == 2:
            if not (all(isinstance(beta, float) for beta in betas)
                    or all(isinstance(beta, Tensor) for beta in betas)):
                # torch's Adam and AdamW (not its other Adam variants) refuse betas=(0, 0.99)
                raise ValueError(f"{name}: betas must be either both floats or both Tensors, "
                                 f"got {betas!r}")
            betas = tuple(_scalar_tensor(name, f"betas[{i}]", beta, group)
                          for i, beta in enumerate(betas))
        _check_betas(name, betas)
        _check_non_negative(name, dict(group, lr=lr), ("lr", "eps", "weight_decay"))
        _check_flags(name, amsgrad=group.get("amsgrad", False),
                     maximize=group.get("maximize", False),
                     decoupled_weight_decay=group.get("decoupled_weight_decay", False))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        b1, b2 = (_value(beta) for beta in group["betas"])
        lr, wd, amsgrad = _value(group["lr"]), group["weight_decay"], group.get("amsgrad", False)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        if amsgrad and "max_exp_avg_sq" not in state:  # also when amsgrad was turned on later
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        if wd and group.get("decoupled_weight_decay", False):
            p.data *= 1 - lr * wd  # AdamW: the decay stays out of the moments
            wd = 0.0
        step_size = lr / (1 - b1 ** t)
        c2 = math.sqrt(1 - b2 ** t)
        fast = None if amsgrad else _fused("adam_update", p.data, g, m, v)
        if fast is not None:
            fast(p.data, g, m, v, step_size, b1, b2, c2, group["eps"], wd)
            return
        if wd:
            g = g + wd * p.data
        _lerp_(m, g, 1 - b1)
        v *= b2
        v += (1 - b2) * g * g
        if amsgrad:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = xp.sqrt(v)
        denom /= c2
        denom += group["eps"]
        p.data -= step_size * (m / denom)


def _scalar_tensor(name, key, value, group):
    """torch's Adam and AdamW take lr and betas as 1-element Tensors (read at each step), but
    not with foreach=True unless capturable (which minidl refuses): the value as a number."""
    if not isinstance(value, Tensor):
        return value
    if group.get("foreach") and not group.get("capturable"):
        raise ValueError(f"{name}: {key} as a Tensor is not supported for capturable=False and "
                         f"foreach=True")
    if value.numel() != 1:
        raise ValueError(f"{name}: Tensor {key} must be 1-element, got shape "
                         f"{tuple(value.shape)}")
    return _value(value)


def _value(value):
    return float(value.data.reshape(-1)[0]) if isinstance(value, Tensor) else value


class AdamW(Adam):
    """torch.optim.AdamW: Adam whose weight decay shrinks the parameter directly,
    p *= 1 - lr * weight_decay, instead of entering the gradient and the moments."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         foreach=foreach, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # as PyTorch's AdamW: an Adam state dict loads decoupled
            group["decoupled_weight_decay"] = True
