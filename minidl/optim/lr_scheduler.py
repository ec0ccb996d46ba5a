"""Learning-rate schedules with torch.optim.lr_scheduler's names and chainable forms."""
from __future__ import annotations

import copy
import math
import types
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from .optimizer import Optimizer, _check_finite


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
