"""Learning-rate schedules with torch.optim.lr_scheduler's names and chainable forms."""
from __future__ import annotations

import bisect
import copy
import functools
import math
import numbers
import types
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from .optimizer import Optimizer, _check_finite


_EPOCH_DEPRECATION = ("The epoch parameter in `scheduler.step()` was not necessary and is being "
                      "deprecated where possible. Please use `scheduler.step()` to step the "
                      "scheduler.")


_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and "
    "later, you should call them in the opposite order: `optimizer.step()` before "
    "`lr_scheduler.step()`.  Failure to do this will result in PyTorch skipping the first "
    "value of the learning rate schedule. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate")


def _warn_outside_step(get_lr):
    """get_lr called from outside step() warns as PyTorch's does (it computes the next lrs,
    which is rarely what the caller wants)."""
    @functools.wraps(get_lr)
    def checked(self):
        if not self.__dict__.get("_get_lr_called_within_step", False):
            warnings.warn("To get the last learning rate computed by the scheduler, please use "
                          "`get_last_lr()`.", UserWarning, stacklevel=2)
        return get_lr(self)
    return checked


class _within_step:
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def __enter__(self):
        self.scheduler._get_lr_called_within_step = True

    def __exit__(self, *exc):
        self.scheduler._get_lr_called_within_step = False


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

    _is_initial = False
    _get_lr_called_within_step = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_lr" in cls.__dict__:
            cls.get_lr = _warn_outside_step(cls.__dict__["get_lr"])

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
        self._initial_step()

    def _initial_step(self):
        """Take the schedule's step 0 (or the step after last_epoch) as construction does."""
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

    def step(self, epoch=None):
        """Advance one epoch (call it after optimizer.step()) and set the groups' lrs.
        ``epoch`` (deprecated in PyTorch, which warns as here) jumps to that epoch, by the
        schedule's closed form where it has one."""
        if self._step_count == 1 and not getattr(self.optimizer, "_opt_called", False):
            warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        if epoch is not None:  # after the one above, as PyTorch warns them
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
            epoch = _check_count(f"{type(self).__name__}.step", "epoch", epoch, 0)
        self._step_count += 1
        try:
            self._update_lr(epoch)
        except _GroupCountError:
            self._step_count -= 1
            raise

    def _update_lr(self, epoch=None):
        """Set the groups' lrs for the next epoch, or (``epoch`` given, as SequentialLR does at a
        milestone) for that epoch, from the closed form where the schedule has one."""
        before = self.last_epoch
        with _within_step(self):
            if epoch is None:
                self.last_epoch += 1
                lrs = self.get_lr()
            else:
                self.last_epoch = epoch
                closed = getattr(self, "_get_closed_form_lr", None)
                lrs = closed() if closed is not None else self.get_lr()
        groups = len(self.optimizer.param_groups)
        if len(lrs) != groups:  # a group added after the scheduler: it would go unscheduled
            self.last_epoch = before
            raise _GroupCountError(
                f"{type(self).__name__}: the optimizer has {groups} parameter groups, but this "
                f"scheduler computes lrs for {len(lrs)} (it was made before add_param_group "
                "added the others); make the scheduler after adding every group")
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
                     _step_count=self._step_count, _is_initial=False,
                     _get_lr_called_within_step=False, _last_lr=list(self._last_lr))
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
        # PyTorch takes any positive period, an int or a float (the text classification
        # tutorial's StepLR(optimizer, 1.0, ...)): it decays where last_epoch % step_size is 0
        if (isinstance(step_size, bool) or not isinstance(step_size, numbers.Real)
                or not step_size > 0):
            raise ValueError(f"{cls.__name__}: step_size must be a number > 0, got {step_size!r}")
        step_size = int(step_size) if isinstance(step_size, numbers.Integral) else float(step_size)
        return dict(step_size=step_size, gamma=_check_factor(cls.__name__, "gamma", gamma))

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


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

    def _get_closed_form_lr(self):
        passed = bisect.bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base * self.gamma ** passed for base in self.base_lrs]


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

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


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

    def _get_closed_form_lr(self):
        low = self.eta_min
        return [low + (base - low) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """Set each group's lr to its base lr times lr_lambda(epoch) (one function, or one per
    group). As in PyTorch, state_dict() leaves plain functions and lambdas out (None) and keeps
    the attributes of callable objects."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 0
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"{type(self).__name__}: {len(lr_lambda)} lr_lambdas for {n} parameter "
                                 "groups")
            lambdas = list(lr_lambda)
        else:
            lambdas = [lr_lambda] * n
        for i, fn in enumerate(lambdas):
            if not callable(fn):
                raise TypeError(f"{type(self).__name__}: lr_lambda {i} is a {type(fn).__name__}, not a "
                                "function of the epoch")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lrs = []
        for i, (fn, base) in enumerate(zip(self.lr_lambdas, self.base_lrs)):
            factor = fn(self.last_epoch)
            _check_finite(f"{type(self).__name__}: lr_lambda {i} at epoch {self.last_epoch}",
                          factor=factor)
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

    def _get_closed_form_lr(self):
        factor = self.start_factor + ((self.end_factor - self.start_factor)
                                      * min(self.total_iters, self.last_epoch) / self.total_iters)
        return [base * factor for base in self.base_lrs]


# ``minidl.optim.lr_scheduler.StepLR`` and ``from minidl.optim.lr_scheduler import StepLR``, as


class ConstantLR(LRScheduler):
    """Scale each group's lr by factor until epoch total_iters, then restore it."""

    _hyper = ("factor", "total_iters")

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self._set_hyper(factor=factor, total_iters=total_iters)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, factor, total_iters):
        name = cls.__name__
        return dict(factor=_check_factor(name, "factor", factor, 0.0, 1.0),
                    total_iters=_check_count(name, "total_iters", total_iters, 0))

    def get_lr(self):
        lrs, e = self._group_lrs(), self.last_epoch
        if e == 0:
            return [lr * self.factor for lr in lrs]
        if e != self.total_iters:
            return lrs
        return [lr * (1.0 / self.factor) for lr in lrs]

    def _get_closed_form_lr(self):
        factor = self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)
        return [base * factor for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Decay each group's lr as base_lr * (1 - epoch / total_iters)^power, then keep it."""

    _hyper = ("total_iters", "power")

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self._set_hyper(total_iters=total_iters, power=power)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, total_iters, power):
        name = cls.__name__
        return dict(total_iters=_check_count(name, "total_iters", total_iters, 1),
                    power=_check_factor(name, "power", power))

    def get_lr(self):
        e, t = self.last_epoch, self.total_iters
        if self._is_initial or e > t:
            return self._group_lrs()
        factor = ((1.0 - e / t) / (1.0 - (e - 1) / t)) ** self.power
        return [lr * factor for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        t = self.total_iters
        return [base * (1.0 - min(t, self.last_epoch) / t) ** self.power for base in self.base_lrs]


class MultiplicativeLR(LambdaLR):
    """Multiply each group's lr by lr_lambda(epoch) every epoch (one function, or one per
    group); the state dict keeps lr_lambdas as LambdaLR's does."""

    def get_lr(self):
        if self._is_initial:
            return self._group_lrs()
        lrs = []
        for i, (fn, lr) in enumerate(zip(self.lr_lambdas, self._group_lrs())):
            factor = fn(self.last_epoch)
            _check_finite(f"MultiplicativeLR: lr_lambda {i} at epoch {self.last_epoch}",
                          factor=factor)
            lrs.append(lr * factor)
        return lrs


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: half a cosine from base lr to eta_min over T_i epochs, then a restart at base lr
    with T_i multiplied by T_mult. step(epoch) takes a fractional epoch (epoch + i / iters)
    to anneal within an epoch, as PyTorch's does."""

    _hyper = ("T_0", "T_mult", "eta_min")

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):  # noqa: N803
        self._set_hyper(T_0=T_0, T_mult=T_mult, eta_min=eta_min)
        self.T_i = self.T_0
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, T_0, T_mult, eta_min):  # noqa: N803
        name = cls.__name__
        return dict(T_0=_check_count(name, "T_0", T_0, 1),
                    T_mult=_check_count(name, "T_mult", T_mult, 1),
                    eta_min=_check_factor(name, "eta_min", eta_min))

    def get_lr(self):
        cos = (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        return [self.eta_min + (base - self.eta_min) * cos for base in self.base_lrs]

    def step(self, epoch=None):
        """The next epoch, or ``epoch`` (a float within an epoch, or a jump)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur -= self.T_i
                self.T_i *= self.T_mult
        else:
            _check_finite(f"{type(self).__name__}.step", epoch=epoch)
            if epoch < 0:
                raise ValueError(f"{type(self).__name__}.step: epoch must be >= 0, got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:  # which restart this epoch falls in: T_0 (T_mult^n - 1) / (T_mult - 1)
                    n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        with _within_step(self):
            lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = self._group_lrs()

    def state_dict(self):
        return {**super().state_dict(), "T_i": self.T_i, "T_cur": self.T_cur}

    def _extra_keys(self):
        return ("T_i", "T_cur")

    def _load_extra(self, state_dict):
        name = f"{type(self).__name__}.load_state_dict"
        t_i = _check_count(name, "T_i", state_dict.get("T_i", self.T_i), 1)
        t_cur = state_dict.get("T_cur", self.T_cur)
        _check_finite(name, T_cur=t_cur)

        def apply():
            self.T_i, self.T_cur = t_i, t_cur
        return apply


def _per_group(name, key, value, optimizer):
    """One value per parameter group: a list of as many, or one value for all."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name}: {key} must have the same length as "
                             f"optimizer.param_groups. {key} has {len(value)} values, "
                             f"param_groups has {n}")
        values = list(value)
    else:
        values = [value] * n
    for i, v in enumerate(values):
        _check_finite(name, **{f"{key}[{i}]" if isinstance(value, (list, tuple)) else key: v})
    return values


def _momentum_kind(name, optimizer):
    """'betas' (Adam-like: beta1 cycles) or 'momentum' (SGD-like), as cycle_momentum needs."""
    if "betas" in optimizer.defaults:
        return True
    if "momentum" in optimizer.defaults:
        return False
    raise ValueError(f"{name}: optimizer must support momentum or beta1 with `cycle_momentum` "
                     f"option enabled ({type(optimizer).__name__} has neither); pass "
                     "cycle_momentum=False")


def _set_momentum(group, use_beta1, momentum):
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


class CyclicLR(LRScheduler):
    """Cyclical learning rates (Smith): each group's lr goes from base_lr up to max_lr over
    step_size_up steps and back over step_size_down, the amplitude scaled per cycle
    (triangular2 halves it, exp_range multiplies it by gamma^step) or by scale_fn; with
    cycle_momentum the momentum (or Adam's beta1) moves the opposite way between max_momentum
    and base_momentum. Step it after every batch."""

    _hyper = ("max_lrs", "total_size", "step_ratio", "mode", "gamma", "scale_mode",
              "cycle_momentum", "use_beta1", "base_momentums", "max_momentums")
    _modes = ("triangular", "triangular2", "exp_range")

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not an Optimizer")
        base_lrs = _per_group(name, "base_lr", base_lr, optimizer)
        max_lrs = _per_group(name, "max_lr", max_lr, optimizer)
        up = _check_factor(name, "step_size_up", step_size_up, low_open=True)
        down = up if step_size_down is None else _check_factor(name, "step_size_down",
                                                               step_size_down, low_open=True)
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"{name}: scale_fn must be a function of the cycle or step, got "
                            f"{scale_fn!r}")
        if mode not in self._modes and scale_fn is None:
            raise ValueError(f"{name}: mode is invalid and scale_fn is None (mode must be one of "
                             f"{list(self._modes)}, got {mode!r})")
        use_beta1, base_momentums, max_momentums = False, None, None
        if cycle_momentum:
            use_beta1 = _momentum_kind(name, optimizer)
            base_momentums = _per_group(name, "base_momentum", base_momentum, optimizer)
            max_momentums = _per_group(name, "max_momentum", max_momentum, optimizer)
        self._set_hyper(max_lrs=max_lrs, total_size=up + down, step_ratio=up / (up + down),
                        mode=mode, gamma=gamma, scale_mode=scale_mode,
                        cycle_momentum=cycle_momentum, use_beta1=use_beta1,
                        base_momentums=base_momentums, max_momentums=max_momentums)
        self._scale_fn_custom = scale_fn
        self._init_scale_fn()
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
            if cycle_momentum:
                for high, low, group in zip(max_momentums, base_momentums,
                                            optimizer.param_groups):
                    _set_momentum(group, use_beta1, high)
                    group["max_momentum"], group["base_momentum"] = high, low
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    @classmethod
    def _validate(cls, max_lrs, total_size, step_ratio, mode, gamma, scale_mode, cycle_momentum,
                  use_beta1, base_momentums, max_momentums):
        name = cls.__name__
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"{name}: scale_mode must be 'cycle' or 'iterations', got "
                             f"{scale_mode!r}")
        if not isinstance(mode, str):
            raise TypeError(f"{name}: mode must be a string, got {mode!r}")
        lists = {}
        for key, values in (("max_lrs", max_lrs), ("base_momentums", base_momentums),
                            ("max_momentums", max_momentums)):
            if values is None and key != "max_lrs" and not cycle_momentum:
                lists[key] = None
                continue
            lists[key] = [float(_check_factor(name, key, v, -math.inf)) for v in values]
        return dict(total_size=_check_factor(name, "total_size", total_size, low_open=True),
                    step_ratio=_check_factor(name, "step_ratio", step_ratio, 0.0, 1.0,
                                             low_open=True),
                    mode=mode, gamma=_check_factor(name, "gamma", gamma), scale_mode=scale_mode,
                    cycle_momentum=bool(cycle_momentum), use_beta1=bool(use_beta1), **lists)

    def _init_scale_fn(self):
        if self._scale_fn_custom is not None:
            return
        # the built-in modes fix their scale mode, as PyTorch's do
        self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def scale_fn(self, x):
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        if self.mode == "exp_range":
            return self.gamma ** x
        return 1.0

    def get_lr(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            rise = x / self.step_ratio
        else:
            rise = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base + (high - base) * rise * scale
               for base, high in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            for low, high, group in zip(self.base_momentums, self.max_momentums,
                                        self.optimizer.param_groups):
                _set_momentum(group, self.use_beta1, high - (high - low) * rise * scale)
        return lrs

    def state_dict(self):
        state = super().state_dict()
        fn = self._scale_fn_custom
        state["_scale_fn_custom"] = (None if fn is None or isinstance(fn, types.FunctionType)
                                     or not hasattr(fn, "__dict__") else dict(vars(fn)))
        return state

    def _extra_keys(self):
        return ("_scale_fn_custom", "_scale_fn_ref")

    def _load_extra(self, state_dict):
        attrs = state_dict.get("_scale_fn_custom")
        if attrs is not None and not (isinstance(attrs, dict)
                                      and hasattr(self._scale_fn_custom, "__dict__")):
            raise ValueError(f"{type(self).__name__}.load_state_dict: _scale_fn_custom holds "
                             f"{type(attrs).__name__}, and this scheduler's scale_fn keeps no "
                             "attributes to restore")

        def apply():
            if attrs is not None:
                vars(self._scale_fn_custom).update(attrs)
            self._init_scale_fn()
        return apply


class OneCycleLR(LRScheduler):
    """The 1cycle policy: each group's lr rises from max_lr / div_factor to max_lr over the
    first pct_start of total_steps, then anneals (cos or linear) to
    max_lr / (div_factor * final_div_factor); three_phase comes back down to the starting lr
    symmetrically before the final anneal. Momentum (or Adam's beta1) moves the opposite way.
    Step it after every batch; stepping past total_steps is an error."""

    _hyper = ("total_steps", "_schedule_phases", "_anneal_func_type", "cycle_momentum",
              "use_beta1")

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not an Optimizer")
        if total_steps is not None:
            total = _check_count(name, "total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            total = (_check_count(name, "epochs", epochs, 1)
                     * _check_count(name, "steps_per_epoch", steps_per_epoch, 1))
        else:
            raise ValueError(f"{name}: You must define either total_steps OR (epochs AND "
                             "steps_per_epoch)")
        pct = _check_factor(name, "pct_start", pct_start, 0.0, 1.0)
        if three_phase:
            phases = [dict(end_step=float(pct * total) - 1, start_lr="initial_lr",
                           end_lr="max_lr", start_momentum="max_momentum",
                           end_momentum="base_momentum"),
                      dict(end_step=float(2 * pct * total) - 2, start_lr="max_lr",
                           end_lr="initial_lr", start_momentum="base_momentum",
                           end_momentum="max_momentum"),
                      dict(end_step=total - 1, start_lr="initial_lr", end_lr="min_lr",
                           start_momentum="max_momentum", end_momentum="max_momentum")]
        else:
            phases = [dict(end_step=float(pct * total) - 1, start_lr="initial_lr",
                           end_lr="max_lr", start_momentum="max_momentum",
                           end_momentum="base_momentum"),
                      dict(end_step=total - 1, start_lr="max_lr", end_lr="min_lr",
                           start_momentum="base_momentum", end_momentum="max_momentum")]
        max_lrs = _per_group(name, "max_lr", max_lr, optimizer)
        div = _check_factor(name, "div_factor", div_factor, low_open=True)
        final_div = _check_factor(name, "final_div_factor", final_div_factor, low_open=True)
        use_beta1 = _momentum_kind(name, optimizer) if cycle_momentum else False
        self._set_hyper(total_steps=total, _schedule_phases=phases,
                        _anneal_func_type=anneal_strategy, cycle_momentum=cycle_momentum,
                        use_beta1=use_beta1)
        if last_epoch == -1:
            for high, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = high / div
                group["max_lr"] = high
                group["min_lr"] = group["initial_lr"] / final_div
            if cycle_momentum:
                highs = _per_group(name, "max_momentum", max_momentum, optimizer)
                lows = _per_group(name, "base_momentum", base_momentum, optimizer)
                for high, low, group in zip(highs, lows, optimizer.param_groups):
                    _set_momentum(group, use_beta1, high)
                    group["max_momentum"], group["base_momentum"] = high, low
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, total_steps, _schedule_phases, _anneal_func_type, cycle_momentum,
                  use_beta1):
        name = cls.__name__
        if _anneal_func_type not in ("cos", "linear"):
            raise ValueError(f"{name}: anneal_strategy must be one of 'cos' or 'linear', "
                             f"instead got {_anneal_func_type!r}")
        phases = list(_schedule_phases)
        keys = {"end_step", "start_lr", "end_lr", "start_momentum", "end_momentum"}
        if not phases or any(not isinstance(p, dict) or set(p) != keys for p in phases):
            raise ValueError(f"{name}: _schedule_phases must be a list of dicts with keys "
                             f"{sorted(keys)}")
        return dict(total_steps=_check_count(name, "total_steps", total_steps, 1),
                    _schedule_phases=[dict(p) for p in phases],
                    _anneal_func_type=_anneal_func_type, cycle_momentum=bool(cycle_momentum),
                    use_beta1=bool(use_beta1))

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: Tried to step {step} times. The specified number of "
                             f"total steps is {self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if step <= end or i == len(self._schedule_phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]],
                                            pct))
                    if self.cycle_momentum:
                        _set_momentum(group, self.use_beta1,
                                      self._anneal(group[phase["start_momentum"]],
                                                   group[phase["end_momentum"]], pct))
                    break
                start = end
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply each group's lr by factor (not below its min_lr) once the metric passed to
    step(metric) has not improved for more than patience epochs, then wait cooldown epochs.
    Improving means beating the best value by threshold: relatively (best * (1 - threshold)
    in min mode) or absolutely (best - threshold); mode="max" for metrics that should grow.
    Changes smaller than eps are skipped."""

    _keys = ("factor", "default_min_lr", "min_lrs", "patience", "cooldown", "eps", "last_epoch",
             "_last_lr", "mode_worse", "mode", "threshold", "threshold_mode", "best",
             "cooldown_counter", "num_bad_epochs")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not an Optimizer")
        factor = _check_factor(name, "factor", factor)
        if factor >= 1.0:
            raise ValueError(f"{name}: Factor should be < 1.0, got {factor}")
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group(name, "min_lr", min_lr, optimizer)
        else:
            _check_finite(name, min_lr=min_lr)
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = _check_count(name, "patience", patience, 0)
        self.cooldown = _check_count(name, "cooldown", cooldown, 0)
        self.eps = _check_factor(name, "eps", eps)
        self.last_epoch = 0
        self._last_lr = self._group_lrs()
        self._init_is_better(mode, threshold, threshold_mode)
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode, threshold, threshold_mode):
        name = type(self).__name__
        if mode not in ("min", "max"):
            raise ValueError(f"{name}: mode {mode!r} is unknown! (use 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{name}: threshold mode {threshold_mode!r} is unknown! (use 'rel' "
                             "or 'abs')")
        _check_finite(name, threshold=threshold)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return a < best * (1.0 - self.threshold)
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics, epoch=None):
        """Note the epoch's metric (a number or a one-element Tensor) and reduce the lrs once
        it has stopped improving. ``epoch`` is deprecated, as in PyTorch."""
        if hasattr(metrics, "item"):
            metrics = metrics.item()
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(f"ReduceLROnPlateau.step: metrics must be a number, got "
                            f"{metrics!r}") from None
        if epoch is None:
            self.last_epoch += 1
        else:
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
            self.last_epoch = _check_count("ReduceLROnPlateau.step", "epoch", epoch, 0)
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._group_lrs()

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"ReduceLROnPlateau: the optimizer has {len(groups)} "
                                   f"parameter groups, min_lrs {len(self.min_lrs)} (a group "
                                   "was added?): set min_lrs to one per group")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, low in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, low)
            if old - new > self.eps:
                group["lr"] = new

    def state_dict(self):
        return {k: copy.copy(getattr(self, k)) for k in self._keys}

    def load_state_dict(self, state_dict):
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}: expected a dict, got {type(state_dict).__name__}")
        unknown = sorted(set(state_dict) - set(self._keys) - set(self._internal_keys))
        if unknown:
            raise ValueError(f"{name}: the state dict holds {unknown}, which a "
                             "ReduceLROnPlateau does not keep")
        probe = object.__new__(type(self))
        probe.__dict__.update(self.__dict__)
        probe.__dict__.update(state_dict)
        probe._init_is_better(probe.mode, probe.threshold, probe.threshold_mode)
        factor = _check_factor(name, "factor", probe.factor)
        for key in ("patience", "cooldown", "cooldown_counter", "num_bad_epochs", "last_epoch"):
            _check_count(name, key, getattr(probe, key), 0)
        self.__dict__.update(probe.__dict__)
        self.factor = factor


def _check_schedulers(name, schedulers, optimizer):
    if isinstance(schedulers, LRScheduler) or not isinstance(schedulers, Iterable):
        raise TypeError(f"{name}: schedulers must be a list of schedulers, got {schedulers!r}")
    schedulers = list(schedulers)
    if not schedulers:
        raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
    optimizer = optimizer if optimizer is not None else getattr(schedulers[0], "optimizer", None)
    for i, s in enumerate(schedulers):
        if not hasattr(s, "optimizer"):
            raise TypeError(f"{name}: the scheduler at index {i} should have `optimizer` as its "
                            f"attribute (got a {type(s).__name__})")
        if isinstance(s, ReduceLROnPlateau):
            raise ValueError(f"{name} does not support `ReduceLROnPlateau` scheduler as it "
                             "requires additional kwargs to be specified when calling `step`, "
                             f"but got one at index {i} in the given schedulers sequence.")
        if s.optimizer is not optimizer:
            raise ValueError(f"{name} expects all schedulers to belong to the same optimizer, "
                             f"but the {type(s).__name__} at index {i} has another one")
    return schedulers, optimizer


class _Composite(LRScheduler):
    """What SequentialLR and ChainedScheduler share: their state dicts nest the schedulers'."""

    _own_keys = ()

    def state_dict(self):
        state = {k: copy.copy(getattr(self, k)) for k in self._own_keys}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}: expected a dict, got {type(state_dict).__name__}")
        unknown = sorted(set(state_dict) - {*self._own_keys, "_schedulers"})
        if unknown:
            raise ValueError(f"{name}: the state dict holds {unknown}, which a "
                             f"{type(self).__name__} does not keep")
        saved = state_dict.get("_schedulers")
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self._schedulers):
            raise ValueError(f"{name}: _schedulers must hold one state dict for each of the "
                             f"{len(self._schedulers)} schedulers")
        own = self._check_own(state_dict)
        before = [s.state_dict() for s in self._schedulers]
        try:
            for s, sd in zip(self._schedulers, saved):
                s.load_state_dict(sd)
        except Exception:
            for s, sd in zip(self._schedulers, before):  # nothing changes on a refusal
                s.load_state_dict(sd)
            raise
        self.__dict__.update(own)

    def _check_own(self, state_dict):
        name = f"{type(self).__name__}.load_state_dict"
        own = {}
        if "_last_lr" in state_dict:
            lrs = list(state_dict["_last_lr"])
            for i, v in enumerate(lrs):
                _check_factor(name, f"_last_lr[{i}]", v)
            own["_last_lr"] = [float(v) for v in lrs]
        return own


class _GroupCountError(ValueError):
    """The optimizer's parameter groups and a scheduler's lrs differ in number (torch's zip
    of unequal lengths, a ValueError)."""


def _check_increasing(name, milestones):
    """SequentialLR's milestones are searched by bisection: out of order, the schedulers would
    switch at the wrong epochs (or never)."""
    if any(b < a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"{name}: milestones must be in increasing order, got {milestones}")


class SequentialLR(_Composite):
    """Run the schedulers one after the other, switching at the milestones (epochs): at a
    milestone the next scheduler starts from its epoch 0 (its closed form, from the base lrs)."""

    _own_keys = ("_milestones", "last_epoch", "_last_lr")

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        name = type(self).__name__
        schedulers, optimizer = _check_schedulers(name, schedulers, optimizer)
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
            raise TypeError(f"{name}: milestones must be a list of epochs, got {milestones!r}")
        milestones = [_check_count(name, "a milestone", m, 0) for m in milestones]
        _check_increasing(name, milestones)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{name}: Sequential Schedulers expects number of schedulers "
                             "provided to be one more than the number of milestone points, but "
                             f"got number of schedulers {len(schedulers)} and the number of "
                             f"milestones to be equal to {len(milestones)}")
        self._schedulers, self._milestones = schedulers, milestones
        self.last_epoch = _check_count(name, "last_epoch", last_epoch, -1) + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._undo(self)  # the schedulers' construction took their step 0: take it back
        first = self._schedulers[bisect.bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @classmethod
    def _undo(cls, sched):
        if hasattr(sched, "_schedulers"):
            for s in sched._schedulers:
                cls._undo(s)
        elif hasattr(sched, "last_epoch"):
            sched.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def _check_own(self, state_dict):
        name = f"{type(self).__name__}.load_state_dict"
        own = super()._check_own(state_dict)
        if "_milestones" in state_dict:
            ms = [_check_count(name, "a milestone", m, 0) for m in state_dict["_milestones"]]
            _check_increasing(name, ms)
            if len(ms) != len(self._schedulers) - 1:
                raise ValueError(f"{name}: {len(ms)} milestones for {len(self._schedulers)} "
                                 "schedulers")
            own["_milestones"] = ms
        if "last_epoch" in state_dict:
            own["last_epoch"] = _check_count(name, "last_epoch", state_dict["last_epoch"], -1)
        return own


class ChainedScheduler(_Composite):
    """Step every scheduler at each step, one after the other, so their factors compound
    (e.g. a ConstantLR warm-up times an ExponentialLR decay)."""

    _own_keys = ("_last_lr",)

    def __init__(self, schedulers, optimizer=None):
        schedulers, optimizer = _check_schedulers(type(self).__name__, schedulers, optimizer)
        self._schedulers, self.optimizer = schedulers, optimizer
        self._last_lr = [g["lr"] for g in schedulers[-1].optimizer.param_groups]

    def step(self):
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = [g["lr"] for g in self._schedulers[-1].optimizer.param_groups]


__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LambdaLR",
           "LinearLR", "ConstantLR", "PolynomialLR", "MultiplicativeLR",
           "CosineAnnealingWarmRestarts", "CyclicLR", "OneCycleLR", "ReduceLROnPlateau",
           "SequentialLR", "ChainedScheduler"]
