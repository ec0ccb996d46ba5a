"""torch.optim.Rprop."""
from __future__ import annotations

from ..backend import get_array_module
from .optimizer import Optimizer, _kernel_options, _check_finite, _check_group_numbers


class Rprop(Optimizer):
    """torch.optim.Rprop: each element's step size grows by etaplus while its gradient keeps
    its sign and shrinks by etaminus when it flips (clamped to step_sizes); p moves by the step
    size against the gradient's sign, and not at all in the step after a flip."""

    _state_keys = ("step", "prev", "step_size")

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        etas = tuple(etas) if isinstance(etas, list) else etas
        step_sizes = tuple(step_sizes) if isinstance(step_sizes, list) else step_sizes
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes,
                                      maximize=maximize,
                                      **_kernel_options(foreach, capturable=capturable,
                                                        differentiable=differentiable)))

    def _check_group(self, group):
        _check_group_numbers("Rprop", group, ("lr",))
        for key in ("etas", "step_sizes"):
            pair = group[key]
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"Rprop: {key} must be a pair, got {pair!r}")
            _check_finite("Rprop", **{f"{key}[0]": pair[0], f"{key}[1]": pair[1]})
        etaminus, etaplus = group["etas"]
        if not 0.0 < etaminus < 1.0 < etaplus:
            raise ValueError(f"Rprop: etas must satisfy 0 < etaminus < 1 < etaplus, got "
                             f"{group['etas']}")
        low, high = group["step_sizes"]
        if not 0 <= low <= high:
            raise ValueError(f"Rprop: step_sizes must satisfy 0 <= min <= max, got "
                             f"{group['step_sizes']}")

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        etaminus, etaplus = group["etas"]
        low, high = group["step_sizes"]
        if not state:
            state.update(step=0, prev=xp.zeros_like(p.data),
                         step_size=xp.full_like(p.data, group["lr"]))
        state["step"] += 1
        sign = xp.sign(g * state["prev"])
        factor = xp.where(sign > 0, etaplus, xp.where(sign < 0, etaminus, 1.0))
        step_size = state["step_size"]
        step_size *= factor.astype(p.data.dtype, copy=False)
        xp.clip(step_size, low, high, out=step_size)
        g = xp.where(sign < 0, 0, g).astype(p.data.dtype, copy=False)
        p.data -= xp.sign(g) * step_size
        state["prev"][...] = g
