"""Optimizers (SGD, Adam) with PyTorch's update rules, and learning-rate schedules."""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .backend import device_of, get_array_module, to_device
from .tensor import Tensor, no_grad


def _follow_device(state, param):
    """model.to(device) after some steps moves the parameters but not the optimizer's buffers
    (momentum, Adam's moments): move them after their parameter, once."""
    dev = device_of(param)
    for key, value in state.items():
        if hasattr(value, "shape") and device_of(value) != dev:
            state[key] = to_device(value, dev)


def _fused(name, p, g, *buffers):
    """The backend's one-pass update ``name`` for this parameter, or None (then the numpy
    expressions run: a GPU would pay a kernel launch for each, the CPU a pass over memory). The
    kernel writes ``p`` and its state ``buffers`` (None: not made yet) in place as flat arrays,
    so all of them must be C-contiguous, and of a dtype the kernel set compiles for."""
    ks = backend.kernels(get_array_module(p))
    fast = getattr(ks, name, None)
    if fast is None or g.shape != p.shape:
        return None
    dtypes = getattr(ks, "fused_update_dtypes", None)
    if dtypes is not None and p.dtype not in dtypes:
        return None
    if not all(a.flags.c_contiguous for a in (p, *buffers) if a is not None):
        return None
    return fast


def _as_param_list(params, where, groups_allowed=False):
    """A list of Tensors (or of group dicts) from an iterable of them; PyTorch's TypeErrors for
    the usual mistakes (a single Tensor iterates its rows, a set has no stable order)."""
    if isinstance(params, Tensor):
        raise TypeError(f"{where} should be an iterable of Tensors or dicts, but got a Tensor "
                        f"of shape {params.shape}; pass [tensor] or model.parameters()")
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{where} must be an ordered collection (a list, model.parameters()), "
                        "not a set: a set's order changes between runs")
    params = list(params)
    if groups_allowed and params and all(isinstance(p, dict) for p in params):
        return params
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: item {i} is a {type(p).__name__}; an optimizer can only "
                            "optimize Tensors")
        if not p.is_leaf:
            raise ValueError(f"{where}: item {i} (shape {p.shape}) is not a leaf tensor (it was "
                             "computed from others); an optimizer can only optimize leaves")
    return params


def _check_finite(name, **values):
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name}: {key} must be a finite number, got {value}")


def _state_value(value, param, key, index):
    """A saved state entry as this parameter's array: same dtype (floats), device and shape."""
    if isinstance(value, Tensor):
        value = value.data
    elif not hasattr(value, "__array__") and not isinstance(value, (int, float)):
        raise TypeError(f"load_state_dict: state {index} {key!r} is a {type(value).__name__}, "
                        "not an array")
    if device_of(value) != "cuda":
        value = np.asarray(value)  # numpy, a number, or anything with __array__ (torch tensors)
    if key == "step":
        step = float(to_device(value, "cpu").reshape(-1)[0]) if value.size == 1 else -1.0
        if not (step >= 0 and step == int(step)):
            raise ValueError(f"load_state_dict: state {index} 'step' must be a count, got {value}")
        return int(step)
    if tuple(value.shape) != tuple(param.shape):
        raise ValueError(f"load_state_dict: state {index} {key!r} has shape {tuple(value.shape)}, "
                         f"its parameter has shape {tuple(param.shape)}")
    value = to_device(value, device_of(param.data))
    xp = get_array_module(value)
    return xp.array(value, dtype=param.data.dtype if value.dtype.kind == "f" else value.dtype)


class Optimizer:
    _state_keys = ()  # the per-parameter state entries an optimizer of this kind keeps

    def __init__(self, params, defaults):
        params = _as_param_list(params, "optimizer params", groups_allowed=True)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if isinstance(params[0], dict):
            groups = [dict(g) for g in params]
        else:
            groups = [{"params": params}]
        self.param_groups = []
        seen = set()
        for i, g in enumerate(groups):
            if "params" not in g:
                raise ValueError(f"optimizer: parameter group {i} has no 'params'")
            if isinstance(g["params"], Tensor):
                g["params"] = [g["params"]]  # as PyTorch does for a group's single tensor
            g["params"] = _as_param_list(g["params"], f"parameter group {i}'s params")
            for p in g["params"]:
                if id(p) in seen:
                    raise ValueError(f"optimizer: a parameter of shape {p.shape} is listed more "
                                     "than once (it would be stepped twice); list each once")
                seen.add(id(p))
            group = {**defaults, **g}
            self._check_group(group)
            self.param_groups.append(group)
        self.state = {}

    def _check_group(self, group):
        pass

    def zero_grad(self, set_to_none=True):
        """Drop the gradients (set_to_none=True, PyTorch's default) or zero them in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.zero_()

    def step(self):
        with no_grad():
            for group in self.param_groups:
                self._step_group(group)

    def _step_group(self, group):
        for p in group["params"]:
            if p.grad is not None:
                state = self.state.setdefault(id(p), {})
                if state:
                    _follow_device(state, p.data)
                self._update(p, p.grad.data, group, state)

    def _update(self, p, g, group, state):
        raise NotImplementedError

    def state_dict(self):
        """PyTorch's structure: ``state`` keyed by the parameter's index (counted across groups,
        in order; parameters without state yet are left out) and ``param_groups`` holding the
        hyperparameters with ``params`` as those indices. Arrays are copies, as Tensors."""
        from .tensor import Tensor

        state, groups, index = {}, [], 0
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                if id(p) in self.state:
                    state[index] = {k: Tensor(v.copy()) if hasattr(v, "shape") else v
                                    for k, v in self.state[id(p)].items()}
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict()`` returned (or PyTorch's optimizer state_dict for the same
        parameters): hyperparameters per group and each parameter's state, cast to the
        parameter's dtype and moved to its device. Everything is checked before anything
        changes."""
        name = type(self).__name__
        if not (isinstance(state_dict, dict) and "state" in state_dict
                and "param_groups" in state_dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             "'param_groups', as state_dict() returns")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} "
                             f"parameter groups, this optimizer {len(self.param_groups)}")
        by_index, new_groups = {}, []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            ids = list(saved.get("params", ()))
            if len(ids) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} holds {len(ids)} "
                                 f"parameters in the state dict, {len(group['params'])} here")
            by_index.update(zip((int(k) for k in ids), group["params"]))
            new_group = dict(group)
            for k, v in saved.items():
                if (k in group and k != "params") or k == "initial_lr":
                    new_group[k] = v  # initial_lr: what PyTorch's schedulers note in a group
                elif k not in group and v not in (None, False):
                    # PyTorch-only options (maximize, amsgrad, foreach, ...) are fine when off
                    raise ValueError(f"{name}.load_state_dict: option {k}={v!r} of group {i} "
                                     "is not supported here")
            if "betas" in new_group:
                new_group["betas"] = tuple(new_group["betas"])  # a JSON round trip makes a list
            self._check_group(new_group)
            new_groups.append(new_group)
        new_state = {}
        for key, entries in state_dict["state"].items():
            try:
                param = by_index[int(key)]
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"{name}.load_state_dict: state for parameter {key!r}, which "
                                 "no parameter group lists") from None
            unknown = set(entries) - set(self._state_keys)
            if unknown:
                raise ValueError(f"{name}.load_state_dict: state {key} holds {sorted(unknown)}; "
                                 f"a {name} keeps {list(self._state_keys)}")
            new_state[id(param)] = {k: _state_value(v, param, k, key) for k, v in entries.items()}
        for group, new_group in zip(self.param_groups, new_groups):
            group.update(new_group)
        self.state = new_state


class SGD(Optimizer):
    """p -= lr * v, with v = momentum * v + (1 - dampening) * (grad + weight_decay * p)
    (the first step takes v = grad), and Nesterov's look-ahead g + momentum * v."""

    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, group):
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        _check_finite("SGD", lr=lr, momentum=momentum, dampening=group["dampening"],
                      weight_decay=wd)
        if lr < 0 or momentum < 0 or wd < 0:
            raise ValueError(f"SGD: lr {lr}, momentum {momentum}, weight_decay {wd} "
                             "must be >= 0")
        if group["nesterov"] and (momentum <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")

    def step(self):
        with no_grad():
            for group in self.param_groups:
                if not self._step_at_once(group):
                    self._step_group(group)

    def _step_at_once(self, group):
        """The whole group in one launch where the backend has a multi-tensor update (CUDA) and
        every parameter with a gradient already has its momentum buffer on its device; False
        (nothing changed) otherwise."""
        if not group["momentum"] or not group["params"]:
            return False
        first = group["params"][0].data
        many = getattr(backend.kernels(get_array_module(first)), "sgd_update_many", None)
        if many is None:
            return False
        params, grads, bufs = [], [], []
        array_type = type(first)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.get(id(p))
            buf = state.get("momentum_buffer") if state else None
            if buf is None or type(buf) is not array_type or type(p.data) is not array_type:
                return False
            params.append(p.data)
            grads.append(p.grad.data)
            bufs.append(buf)
        if not params:
            return True
        return many(params, grads, bufs, group["lr"], group["momentum"], group["dampening"],
                    group["weight_decay"], group["nesterov"])

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
    _state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_group(self, group):
        lr, betas, eps = group["lr"], group["betas"], group["eps"]
        _check_finite("Adam", lr=lr, eps=eps, weight_decay=group["weight_decay"])
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam: invalid lr {lr}, betas {betas} or eps {eps}")

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
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"StepLR: {type(optimizer).__name__} is not an Optimizer")
        self._check(step_size, gamma)
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])  # as PyTorch's schedulers do
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = 0

    @staticmethod
    def _check(step_size, gamma):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an integer >= 1, got {step_size!r}")
        _check_finite("StepLR", gamma=gamma)

    def state_dict(self):
        """PyTorch's keys: everything but the optimizer (whose own state_dict holds the lr)."""
        return {"step_size": self.step_size, "gamma": self.gamma,
                "base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch,
                "_last_lr": self.get_last_lr()}

    def load_state_dict(self, state_dict):
        missing = [k for k in ("step_size", "gamma", "base_lrs", "last_epoch")
                   if k not in state_dict]
        if missing:
            raise ValueError(f"StepLR.load_state_dict: missing {missing}")
        step_size, gamma = int(state_dict["step_size"]), float(state_dict["gamma"])
        self._check(step_size, gamma)
        base_lrs = [float(x) for x in state_dict["base_lrs"]]
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"StepLR.load_state_dict: {len(base_lrs)} base_lrs for "
                             f"{len(self.optimizer.param_groups)} parameter groups")
        self.step_size, self.gamma, self.base_lrs = step_size, gamma, base_lrs
        self.last_epoch = int(state_dict["last_epoch"])

    def step(self):
        """PyTorch's chainable form: every step_size-th call multiplies each group's current
        lr by gamma, so an lr changed by hand in between is kept and decayed from."""
        self.last_epoch += 1
        if self.last_epoch % self.step_size == 0:
            for g in self.optimizer.param_groups:
                g["lr"] = g["lr"] * self.gamma

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]


class lr_scheduler:  # noqa: N801  (namespace mirroring torch.optim.lr_scheduler)
    StepLR = StepLR
