"""Optimizers (SGD, Adam) with PyTorch's update rules, and learning-rate schedules."""
from __future__ import annotations

import math

from . import backend
from .backend import device_of, get_array_module, to_device
from .tensor import no_grad


def _follow_device(state, param):
    """model.to(device) after some steps moves the parameters but not the optimizer's buffers
    (momentum, Adam's moments): move them after their parameter, once."""
    dev = device_of(param)
    for key, value in state.items():
        if hasattr(value, "shape") and device_of(value) != dev:
            state[key] = to_device(value, dev)


def _fused(name, p, g, *buffers):
    """The backend's one-launch update ``name`` for this parameter, or None (the CPU has none:
    there numpy's in-place ops are already cheap next to a step; a GPU pays a kernel launch for
    each of them). The kernel writes ``p`` and its state ``buffers`` (None: not made yet) in
    place as flat arrays, so all of them must be C-contiguous."""
    fast = getattr(backend.kernels(get_array_module(p)), name, None)
    if fast is None or g.shape != p.shape:
        return None
    if not all(a.flags.c_contiguous for a in (p, *buffers) if a is not None):
        return None
    return fast


class Optimizer:
    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if isinstance(params[0], dict):
            self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in params]
        else:
            self.param_groups = [dict(defaults, params=params)]
        self.state = {}

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        state = self.state.setdefault(id(p), {})
                        if state:
                            _follow_device(state, p.data)
                        self._update(p, p.grad.data, group, state)

    def _update(self, p, g, group, state):
        raise NotImplementedError

    def state_dict(self):
        return {"state": {i: dict(s) for i, s in enumerate(self.state.values())},
                "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                 for g in self.param_groups]}


class SGD(Optimizer):
    """p -= lr * v, with v = momentum * v + (1 - dampening) * (grad + weight_decay * p)
    (the first step takes v = grad), and Nesterov's look-ahead g + momentum * v."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr {lr}, momentum {momentum}, weight_decay {weight_decay} "
                             "must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, p, g, group, state):
        wd, mom = group["weight_decay"], group["momentum"]
        buf = state.get("momentum_buffer")
        fast = _fused("sgd_update", p.data, g, buf)
        if fast is not None:
            fast(p.data, g, state, group["lr"], mom, group["dampening"], wd, group["nesterov"])
            return
        if wd:
            g = g + wd * p.data
        if mom:
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= mom
                buf += (1 - group["dampening"]) * g
            g = g + mom * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g


class Adam(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam: invalid lr {lr}, betas {betas} or eps {eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        b1, b2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        step_size = group["lr"] / (1 - b1 ** t)
        c2 = math.sqrt(1 - b2 ** t)
        fast = _fused("adam_update", p.data, g, m, v)
        if fast is not None:
            fast(p.data, g, m, v, step_size, b1, b2, c2, group["eps"], group["weight_decay"])
            return
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        denom = xp.sqrt(v) / c2 + group["eps"]
        p.data -= (step_size * m / denom).astype(p.data.dtype, copy=False)


class StepLR:
    """Multiply every group's lr by gamma once every step_size calls of step() (per epoch)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = 0

    def step(self):
        self.last_epoch += 1
        factor = self.gamma ** (self.last_epoch // self.step_size)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * factor

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]


class lr_scheduler:  # noqa: N801  (namespace mirroring torch.optim.lr_scheduler)
    StepLR = StepLR
