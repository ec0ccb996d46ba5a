"""Optimizers (SGD, Adam, AdamW, RMSprop) with PyTorch's update rules, and learning-rate
schedules (torch.optim.lr_scheduler's chainable forms)."""
from __future__ import annotations

import copy
import math
import sys
import types
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from . import backend
from .backend import device_of, get_array_module, to_device
from .tensor import Tensor, bump_version, no_grad


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


def _count_changes(group):
    """The parameters were updated in place: a graph recorded before the step that saved one
    of them refuses its backward (PyTorch's version check), instead of using the new values."""
    for p in group["params"]:
        if p.grad is not None:
            bump_version(p)


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
                _count_changes(group)

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
                _count_changes(group)

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


def _check_betas(name, betas):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        _check_finite(name, **{f"betas[{i}]": beta})
        if not 0 <= beta < 1:
            raise ValueError(f"{name}: betas[{i}] must be in [0, 1), got {beta}")


def _check_flags(name, **flags):
    for key, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: {key} must be True or False, got {value!r}")


def _check_non_negative(name, group, keys):
    for key in keys:
        if group[key] < 0:
            raise ValueError(f"{name}: {key} must be >= 0, got {group[key]}")


def _lerp_(a, b, weight):
    """a += weight * (b - a) in place, in the form torch.lerp_ takes on each side of weight 0.5
    (starting from the nearer end loses less to rounding). PyTorch's CPU kernel fuses the
    multiply-add that numpy rounds twice: in float32 the two agree to an ulp or so a step."""
    if weight < 0.5:
        a += weight * (b - a)
    else:
        a[...] = b - (b - a) * (1 - weight)


class Adam(Optimizer):
    """torch.optim.Adam. weight_decay adds weight_decay * p to the gradient (L2), or, with
    decoupled_weight_decay=True (AdamW), shrinks p by lr * weight_decay before the step;
    amsgrad divides by the running maximum of the second moment instead of the moment."""

    _state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, decoupled_weight_decay=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group):
        name = type(self).__name__
        _check_finite(name, lr=group["lr"], eps=group["eps"], weight_decay=group["weight_decay"])
        _check_betas(name, group["betas"])
        _check_non_negative(name, group, ("lr", "eps", "weight_decay"))
        _check_flags(name, amsgrad=group.get("amsgrad", False),
                     decoupled_weight_decay=group.get("decoupled_weight_decay", False))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        b1, b2 = group["betas"]
        lr, wd, amsgrad = group["lr"], group["weight_decay"], group.get("amsgrad", False)
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


class AdamW(Adam):
    """torch.optim.AdamW: Adam whose weight decay shrinks the parameter directly,
    p *= 1 - lr * weight_decay, instead of entering the gradient and the moments."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # as PyTorch's AdamW: an Adam state dict loads decoupled
            group["decoupled_weight_decay"] = True


class RMSprop(Optimizer):
    """torch.optim.RMSprop: s = alpha * s + (1 - alpha) * g^2, p -= lr * g / (sqrt(s) + eps);
    centered subtracts the square of the running mean of g from s, momentum keeps
    buf = momentum * buf + g / (sqrt(s) + eps) and steps by lr * buf."""

    _state_keys = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay))

    def _check_group(self, group):
        keys = ("lr", "alpha", "eps", "weight_decay", "momentum")
        _check_finite("RMSprop", **{k: group[k] for k in keys})
        _check_non_negative("RMSprop", group, keys)
        if group["alpha"] > 1:
            raise ValueError(f"RMSprop: alpha must be in [0, 1], got {group['alpha']}")
        _check_flags("RMSprop", centered=group["centered"])

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        g = g.astype(p.data.dtype, copy=False)
        alpha, lr, momentum = group["alpha"], group["lr"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * g * g
        if group["centered"]:
            grad_avg = state.get("grad_avg")
            if grad_avg is None:
                grad_avg = state["grad_avg"] = xp.zeros_like(p.data)
            _lerp_(grad_avg, g, 1 - alpha)
            avg = square_avg - grad_avg * grad_avg
            avg = xp.sqrt(avg, out=avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += group["eps"]
        if momentum > 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp.zeros_like(p.data)
            buf *= momentum
            buf += g / avg
            p.data -= lr * buf
        else:
            p.data -= lr * (g / avg)


# ---- learning-rate schedules ------------------------------------------------------------------
def _check_count(name, key, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_factor(name, key, value, low=0.0, high=math.inf, low_open=False):
    _check_finite(name, **{key: value})
    if value < low or (low_open and value == low) or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if high < math.inf else ')'}"
        raise ValueError(f"{name}: {key} must be in {interval}, got {value}")
    return float(value)


class LRScheduler:
    """PyTorch's chainable schedules: each step() sets every group's lr from its current lr
    (so an lr changed by hand is kept and scheduled on from), and the first lr each group had
    is noted in the group as ``initial_lr`` and in ``base_lrs``. Construction takes the
    schedule's step 0, as PyTorch does (LinearLR starts at start_factor * lr there).

    A subclass lists its hyperparameters in ``_hyper``, checks and normalizes them in
    ``_validate`` (the constructor and load_state_dict both go through it) and returns the next
    lrs from ``get_lr`` once ``last_epoch`` has been advanced."""

    _hyper = ()
    _internal_keys = ("_step_count", "_last_lr", "_is_initial", "_get_lr_called_within_step",
                      "verbose")  # PyTorch's bookkeeping, which its state dicts carry

    def __init__(self, optimizer, last_epoch=-1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not an Optimizer")
        last_epoch = _check_count(name, "last_epoch", last_epoch, -1)
        groups = optimizer.param_groups
        if last_epoch == -1:
            for g in groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            missing = [i for i, g in enumerate(groups) if "initial_lr" not in g]
            if missing:
                raise ValueError(f"{name}: last_epoch={last_epoch} resumes a schedule, but "
                                 f"parameter groups {missing} have no 'initial_lr'; load the "
                                 "optimizer's state_dict first, or leave last_epoch at -1")
        self.optimizer = optimizer
        self.base_lrs = [g["initial_lr"] for g in groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def _set_hyper(self, **values):
        for key, value in self._validate(**values).items():
            setattr(self, key, value)

    @classmethod
    def _validate(cls, **values):
        return values

    def get_lr(self):
        """The lrs of the step being taken (use get_last_lr() to read the current ones)."""
        raise NotImplementedError

    def step(self):
        """Advance one epoch (call it after optimizer.step()) and set the groups' lrs."""
        self._step_count += 1
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def _group_lrs(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        """PyTorch's keys: the hyperparameters, base_lrs, last_epoch and the step count, but
        not the optimizer (whose own state_dict holds the lrs)."""
        state = {key: copy.copy(getattr(self, key)) for key in self._hyper}
        state.update(base_lrs=list(self.base_lrs), last_epoch=self.last_epoch,
                     _step_count=self._step_count, _last_lr=list(self._last_lr))
        return state

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned, or PyTorch's state dict of the same scheduler;
        everything is checked before anything changes."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}: expected a dict, got {type(state_dict).__name__}")
        required = (*self._hyper, "base_lrs", "last_epoch")
        missing = [k for k in required if k not in state_dict]
        if missing:
            raise ValueError(f"{name}: missing {missing}")
        unknown = sorted(set(state_dict) - set(required) - set(self._internal_keys)
                         - set(self._extra_keys()))
        if unknown:
            raise ValueError(f"{name}: the state dict holds {unknown}, which a "
                             f"{type(self).__name__} does not keep (a state dict of another "
                             "schedule?)")
        hyper = self._validate(**{k: state_dict[k] for k in self._hyper})
        n = len(self.optimizer.param_groups)
        lists = {}
        for key in ("base_lrs", "_last_lr"):
            if key not in state_dict:
                continue
            values = list(state_dict[key])
            if len(values) != n:
                raise ValueError(f"{name}: {len(values)} {key} for {n} parameter groups")
            for i, v in enumerate(values):
                _check_factor(name, f"{key}[{i}]", v)
            lists[key] = [float(v) for v in values]
        last_epoch = _check_count(name, "last_epoch", state_dict["last_epoch"], -1)
        step_count = state_dict.get("_step_count", self._step_count)
        step_count = _check_count(name, "_step_count", step_count, 0)
        extra = self._load_extra(state_dict)
        for key, value in hyper.items():
            setattr(self, key, value)
        self.base_lrs = lists["base_lrs"]
        if "_last_lr" in lists:
            self._last_lr = lists["_last_lr"]
        self.last_epoch, self._step_count = last_epoch, step_count
        extra()

    def _extra_keys(self):
        return ()

    def _load_extra(self, state_dict):
        """Check what a subclass keeps beyond its hyperparameters; return what applies it."""
        return lambda: None


class StepLR(LRScheduler):
    """Multiply every group's lr by gamma once every step_size epochs."""

    _hyper = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self._set_hyper(step_size=step_size, gamma=gamma)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, step_size, gamma):
        return dict(step_size=_check_count(cls.__name__, "step_size", step_size, 1),
                    gamma=_check_factor(cls.__name__, "gamma", gamma))

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]


class MultiStepLR(LRScheduler):
    """Multiply every group's lr by gamma at each epoch listed in milestones (by gamma^k at a
    milestone listed k times)."""

    _hyper = ("milestones", "gamma")

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self._set_hyper(milestones=milestones, gamma=gamma)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, milestones, gamma):
        name = cls.__name__
        if isinstance(milestones, Mapping):  # PyTorch keeps a Counter: epoch -> how many times
            counts = {e: _check_count(name, f"milestones[{e!r}]", c, 1)
                      for e, c in milestones.items()}
            listed = sorted(counts)
        else:
            if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
                raise TypeError(f"{name}: milestones must be a list of epochs, got "
                                f"{milestones!r}")
            listed = list(milestones)
            if any(b < a for a, b in zip(listed, listed[1:])):
                raise ValueError(f"{name}: milestones must be in increasing order, got "
                                 f"{listed}")
            counts = Counter(listed)
        for e in listed:
            _check_count(name, "a milestone", e, 0)
        return dict(milestones=Counter({int(e): counts[e] for e in listed}),
                    gamma=_check_factor(name, "gamma", gamma))

    def get_lr(self):
        times = self.milestones.get(self.last_epoch, 0)
        if not times:
            return self._group_lrs()
        return [lr * self.gamma ** times for lr in self._group_lrs()]


class ExponentialLR(LRScheduler):
    """Multiply every group's lr by gamma every epoch."""

    _hyper = ("gamma",)

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self._set_hyper(gamma=gamma)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, gamma):
        return dict(gamma=_check_factor(cls.__name__, "gamma", gamma))

    def get_lr(self):
        if self._is_initial:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]


class CosineAnnealingLR(LRScheduler):
    """Half a cosine from each group's base lr down to eta_min over T_max epochs (and back up
    over the next T_max), in PyTorch's recursive form: each step rescales the current lr, so
    an lr changed by hand is annealed from."""

    _hyper = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):  # noqa: N803 (torch's name)
        self._set_hyper(T_max=T_max, eta_min=eta_min)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, T_max, eta_min):  # noqa: N803
        return dict(T_max=_check_count(cls.__name__, "T_max", T_max, 1),
                    eta_min=_check_factor(cls.__name__, "eta_min", eta_min))

    def get_lr(self):
        e, t, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._group_lrs()
        if (e - 1 - t) % (2 * t) == 0:  # leaving the bottom, where the ratio below is 0 / 0
            return [lr + (base - low) * (1 - math.cos(math.pi / t)) / 2
                    for lr, base in zip(self._group_lrs(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
        return [ratio * (lr - low) + low for lr in self._group_lrs()]


class LambdaLR(LRScheduler):
    """Set each group's lr to its base lr times lr_lambda(epoch) (one function, or one per
    group). As in PyTorch, state_dict() leaves plain functions and lambdas out (None) and keeps
    the attributes of callable objects."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 0
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: {len(lr_lambda)} lr_lambdas for {n} parameter "
                                 "groups")
            lambdas = list(lr_lambda)
        else:
            lambdas = [lr_lambda] * n
        for i, fn in enumerate(lambdas):
            if not callable(fn):
                raise TypeError(f"LambdaLR: lr_lambda {i} is a {type(fn).__name__}, not a "
                                "function of the epoch")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lrs = []
        for i, (fn, base) in enumerate(zip(self.lr_lambdas, self.base_lrs)):
            factor = fn(self.last_epoch)
            _check_finite(f"LambdaLR: lr_lambda {i} at epoch {self.last_epoch}", factor=factor)
            lrs.append(base * factor)
        return lrs

    def state_dict(self):
        state = super().state_dict()
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType)
                               or not hasattr(fn, "__dict__") else dict(vars(fn))
                               for fn in self.lr_lambdas]
        return state

    def _extra_keys(self):
        return ("lr_lambdas",)

    def _load_extra(self, state_dict):
        saved = list(state_dict.get("lr_lambdas") or [None] * len(self.lr_lambdas))
        if len(saved) != len(self.lr_lambdas):
            raise ValueError(f"LambdaLR.load_state_dict: {len(saved)} lr_lambdas for "
                             f"{len(self.lr_lambdas)} parameter groups")
        for i, (attrs, fn) in enumerate(zip(saved, self.lr_lambdas)):
            if attrs is not None and not (isinstance(attrs, dict) and hasattr(fn, "__dict__")):
                raise ValueError(f"LambdaLR.load_state_dict: lr_lambdas[{i}] holds "
                                 f"{type(attrs).__name__}, and this lr_lambda keeps no "
                                 "attributes to restore")

        def apply():
            for attrs, fn in zip(saved, self.lr_lambdas):
                if attrs is not None:
                    vars(fn).update(attrs)
        return apply


class LinearLR(LRScheduler):
    """Scale each group's lr by a factor that goes linearly from start_factor (at epoch 0) to
    end_factor (at total_iters), then stays."""

    _hyper = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        self._set_hyper(start_factor=start_factor, end_factor=end_factor,
                        total_iters=total_iters)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, start_factor, end_factor, total_iters):
        name = cls.__name__
        return dict(start_factor=_check_factor(name, "start_factor", start_factor, 0.0, 1.0,
                                               low_open=True),
                    end_factor=_check_factor(name, "end_factor", end_factor, 0.0, 1.0),
                    total_iters=_check_count(name, "total_iters", total_iters, 1))

    def get_lr(self):
        lrs, e = self._group_lrs(), self.last_epoch
        if e == 0:
            return [lr * self.start_factor for lr in lrs]
        if self._is_initial or e > self.total_iters:
            return lrs
        span = self.end_factor - self.start_factor
        # the ratio of this epoch's factor to the last one's, so that the form is chainable
        ratio = 1.0 + span / (self.total_iters * self.start_factor + (e - 1) * span)
        return [lr * ratio for lr in lrs]


# ``minidl.optim.lr_scheduler.StepLR`` and ``from minidl.optim.lr_scheduler import StepLR``, as
# in torch.optim: a module object registered under its dotted name
lr_scheduler = types.ModuleType(__name__ + ".lr_scheduler",
                                "Learning-rate schedules with torch.optim.lr_scheduler's names.")
for _cls in (LRScheduler, StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LambdaLR,
             LinearLR):
    setattr(lr_scheduler, _cls.__name__, _cls)
lr_scheduler.__all__ = [c for c in vars(lr_scheduler) if not c.startswith("_")]
sys.modules[lr_scheduler.__name__] = lr_scheduler
del _cls
