"""torch.optim.Adafactor (Shazeer and Stern, 2018, as torch 2.13 implements it): the second
moment of a matrix (any tensor of 2+ dims) kept as its row and column means, a relative step
size min(lr, 1 / sqrt(t)) scaled by the parameter's RMS, and the update clipped to RMS d."""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from .optimizer import Optimizer, _check_finite, _check_flags, _kernel_options, _lerp_


class Adafactor(Optimizer):
    """beta2_t = 1 - t ** beta2_decay; eps = (eps1, eps2): eps1 (the dtype's machine epsilon
    when None) floors the variance estimate, eps2 the parameter's RMS; weight_decay shrinks p
    by lr * weight_decay first."""

    _state_keys = ("step", "row_var", "col_var", "variance")

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False):
        eps = tuple(eps) if isinstance(eps, list) else eps
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                                      weight_decay=weight_decay, maximize=maximize,
                                      **_kernel_options(foreach)))

    def _check_group(self, group):
        name = "Adafactor"
        _check_finite(name, lr=group["lr"], beta2_decay=group["beta2_decay"], d=group["d"],
                      weight_decay=group["weight_decay"])
        eps = group["eps"]
        if not (isinstance(eps, tuple) and len(eps) == 2):
            raise TypeError(f"{name}: eps must be a pair (eps1 or None, eps2), got {eps!r}")
        if eps[0] is not None:
            _check_finite(name, **{"eps[0]": eps[0]})
        _check_finite(name, **{"eps[1]": eps[1]})
        _check_flags(name, maximize=group.get("maximize", False))
        if not 0.0 <= group["lr"]:
            raise ValueError(f"Learning rate should be >= 0 but is: {group['lr']}")
        if not 0.0 >= group["beta2_decay"]:
            raise ValueError(f"beta2_decay should be <= 0 but is: {group['beta2_decay']}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= group["d"]:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {group['d']}")
        if not 0.0 <= group["weight_decay"]:
            raise ValueError(f"weight_decay should be >= 0 but is: {group['weight_decay']}")

    def _state_shape(self, key, param):
        shape = list(param.shape)
        if key == "row_var":
            shape[-1] = 1
        elif key == "col_var":
            shape[-2] = 1
        return tuple(shape)

    def _step_group(self, group):
        # torch fills a missing eps1 from the first stepped parameter's dtype and keeps it for
        # the rest of the group
        self._eps1 = group["eps"][0]
        super()._step_group(group)

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        x = p.data
        g = g.astype(x.dtype, copy=False)
        if not state:
            state["step"] = 0
            if g.ndim > 1:
                state["row_var"] = xp.zeros(self._state_shape("row_var", x), dtype=x.dtype)
                state["col_var"] = xp.zeros(self._state_shape("col_var", x), dtype=x.dtype)
            else:
                state["variance"] = xp.zeros_like(x)
        if self._eps1 is None:
            self._eps1 = float(np.finfo(x.dtype).eps)
        eps1, eps2 = self._eps1, group["eps"][1]
        lr, wd = group["lr"], group["weight_decay"]
        state["step"] += 1
        t = float(np.float32(state["step"]))  # torch counts in a float32 tensor
        weight = t ** group["beta2_decay"]
        rho = min(lr, 1 / t ** 0.5)
        rms = float(xp.sqrt(xp.sum(x * x))) / math.sqrt(x.size) if x.size else 0.0
        alpha = max(eps2, rms) * rho
        if wd:
            x *= 1 - lr * wd
        if g.ndim > 1:
            row, col = state["row_var"], state["col_var"]
            _lerp_(row, (g * g).sum(axis=-1, keepdims=True) / g.shape[-1], weight)
            _lerp_(col, (g * g).sum(axis=-2, keepdims=True) / g.shape[-2], weight)
            var = row @ col
            var /= xp.maximum(row.mean(axis=-2, keepdims=True), eps1)
        else:
            v = state["variance"]
            _lerp_(v, g * g, weight)
            var = v.copy()
        update = 1 / xp.sqrt(xp.maximum(var, eps1 * eps1))
        update *= g
        norm = float(xp.sqrt(xp.sum(update * update))) if update.size else 0.0
        denom = max(1.0, norm / (math.sqrt(update.size) * group["d"])) if update.size else 1.0
        x -= (alpha / denom) * update
