"""Stochastic weight averaging and exponential moving averages, as torch.optim.swa_utils:
AveragedModel, the averaging functions (get_ema_multi_avg_fn, get_ema_avg_fn,
get_swa_multi_avg_fn, get_swa_avg_fn), the SWALR schedule and update_bn.

An AveragedModel keeps a deep copy of the model and an ``n_averaged`` buffer (int64, 0-d), so
its state_dict keys are ``n_averaged`` and ``module.<name>``, as PyTorch's. The first
``update_parameters`` copies the model's weights; later ones average into them in place."""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from ..backend import device_of, get_array_module, normalize_device, to_device
from ..backend.dtypes import is_floating
from ..nn.layers import _BatchNorm
from ..nn.module import Module
from ..tensor import Tensor, no_grad
from .lr_scheduler import LRScheduler, _per_group

__all__ = ["AveragedModel", "SWALR", "update_bn", "get_ema_multi_avg_fn", "get_ema_avg_fn",
           "get_swa_multi_avg_fn", "get_swa_avg_fn"]


def _check_decay(decay):
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) \
            or not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in "
                         "[0,1] range.")
    return float(decay)


def _lerp_into(avg, cur, weight):
    """avg <- avg + weight * (cur - avg) in place (arrays), in the two halves PyTorch's lerp
    uses so that weight 1 lands exactly on ``cur``."""
    xp = get_array_module(avg)
    cur = cur.astype(avg.dtype, copy=False)
    diff = cur - avg
    if weight < 0.5:
        avg += avg.dtype.type(weight) * diff
    else:
        xp.copyto(avg, cur - avg.dtype.type(1 - weight) * diff)


def get_ema_multi_avg_fn(decay=0.999):
    """``update(ema_params, current_params, num_averaged)``: ema <- decay * ema + (1 - decay)
    * current, in place on every tensor of the lists (a lerp for float tensors, as PyTorch)."""
    decay = _check_decay(decay)

    def ema_update(ema_param_list, current_param_list, _):
        with no_grad():
            for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
                a, c = p_ema.data, p_model.data
                if is_floating(a.dtype):
                    _lerp_into(a, c, 1 - decay)
                else:  # as PyTorch: integer * float is the default float dtype, truncated back
                    p_ema.copy_(p_ema * decay + p_model * (1 - decay))
    return ema_update


def get_swa_multi_avg_fn():
    """``update(averaged_params, current_params, num_averaged)``: the running mean, averaged
    <- averaged + (current - averaged) / (num_averaged + 1), in place."""

    def swa_update(averaged_param_list, current_param_list, num_averaged):
        n = int(num_averaged.item() if isinstance(num_averaged, Tensor) else num_averaged)
        with no_grad():
            for p_avg, p_model in zip(averaged_param_list, current_param_list, strict=True):
                a, c = p_avg.data, p_model.data
                if is_floating(a.dtype):
                    _lerp_into(a, c, 1 / (n + 1))
                else:
                    a[...] = (a + (c - a) / (n + 1)).astype(a.dtype)
    return swa_update


def get_ema_avg_fn(decay=0.999):
    """``avg_fn(ema, current, num_averaged)`` returning decay * ema + (1 - decay) * current."""
    decay = _check_decay(decay)

    def ema_update(ema_param, current_param, num_averaged):
        return decay * ema_param + (1 - decay) * current_param
    return ema_update


def get_swa_avg_fn():
    """``avg_fn(averaged, current, num_averaged)`` returning the running mean's next value."""

    def swa_update(averaged_param, current_param, num_averaged):
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)
    return swa_update


def _copy_into(target, value):
    """Write ``value`` (a Tensor or an array) into ``target``'s own array, in its dtype."""
    arr = value.data if isinstance(value, Tensor) else value
    arr = to_device(arr, device_of(target.data))
    xp = get_array_module(target.data)
    if tuple(arr.shape) != tuple(target.shape):
        arr = xp.broadcast_to(arr, target.shape)
    xp.copyto(target.data, arr, casting="unsafe")


class AveragedModel(Module):
    """A running average (SWA by default, or EMA with ``multi_avg_fn=get_ema_multi_avg_fn()``)
    of a model's parameters, and its buffers too with ``use_buffers=True`` (otherwise the
    buffers are copied from the model at each update). ``forward`` runs the averaged copy."""

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        if not isinstance(model, Module):
            raise TypeError(f"AveragedModel: model must be a Module, got {type(model).__name__}")
        self.module = copy.deepcopy(model)
        if device is not None:
            device = normalize_device(device)
            self.module = self.module.to(device)
        n = Tensor(np.zeros((), np.int64))
        self.register_buffer("n_averaged", n if device is None else n.to(device))
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def update_parameters(self, model):
        """Average ``model``'s current parameters (and buffers, with use_buffers) in."""
        if self.use_buffers:
            mine = list(self.module.parameters()) + list(self.module.buffers())
            theirs = list(model.parameters()) + list(model.buffers())
        else:
            mine, theirs = list(self.parameters()), list(model.parameters())
        if len(mine) != len(theirs):  # PyTorch zips silently: the tail would not be averaged
            what = "parameters and buffers" if self.use_buffers else "parameters"
            raise ValueError(f"AveragedModel.update_parameters: the model has {len(theirs)} "
                             f"{what}, the averaged copy {len(mine)}; pass the model it "
                             f"was made from")
        if not self.use_buffers:
            mine_b, theirs_b = list(self.module.named_buffers()), list(model.buffers())
            if len(mine_b) != len(theirs_b):
                raise ValueError(f"AveragedModel.update_parameters: the model has "
                                 f"{len(theirs_b)} buffers, the averaged copy {len(mine_b)}")
            for (name, b_avg), b_model in zip(mine_b, theirs_b):
                if tuple(b_avg.shape) != tuple(b_model.shape):
                    raise ValueError(f"AveragedModel.update_parameters: buffer {name} has shape "
                                     f"{tuple(b_model.shape)} in the model, "
                                     f"{tuple(b_avg.shape)} in the averaged copy")
        pairs = []
        for i, (p_avg, p_model) in enumerate(zip(mine, theirs)):
            if tuple(p_avg.shape) != tuple(p_model.shape):
                names = [n for n, _ in self.module.named_parameters()]
                if self.use_buffers:
                    names += [n for n, _ in self.module.named_buffers()]
                name = names[i] if i < len(names) else f"#{i}"
                raise ValueError(f"AveragedModel.update_parameters: {name} has shape "
                                 f"{tuple(p_model.shape)} in the model, "
                                 f"{tuple(p_avg.shape)} in the averaged copy")
            current = Tensor(to_device(p_model.data, device_of(p_avg.data)))
            pairs.append((p_avg.detach(), current))
        n = int(self.n_averaged.item())
        with no_grad():
            if n == 0:
                for avg, current in pairs:
                    _copy_into(avg, current)
            elif self.multi_avg_fn is not None or self.avg_fn is None:
                groups = {}  # (device, dtype) -> (averaged, current), in first-seen order
                for avg, current in pairs:
                    key = (avg.device, np.dtype(avg.data.dtype))
                    groups.setdefault(key, ([], []))
                    groups[key][0].append(avg)
                    groups[key][1].append(current)
                for (device, _), (avgs, currents) in groups.items():
                    count = self.n_averaged.to(device)
                    if self.multi_avg_fn is not None:
                        self.multi_avg_fn(avgs, currents, count)
                    else:
                        swa = get_swa_avg_fn()
                        for avg, current in zip(avgs, currents):
                            _copy_into(avg, swa(avg, current, count))
            else:
                for avg, current in pairs:
                    _copy_into(avg, self.avg_fn(avg, current, self.n_averaged.to(avg.device)))
            if not self.use_buffers:  # checked above, before anything was written
                for b_avg, b_model in zip(self.module.buffers(), model.buffers()):
                    _copy_into(b_avg, b_model)
        self.n_averaged.data[...] += 1


def update_bn(loader, model, device=None):
    """One pass over ``loader`` in training mode to recompute the BatchNorm running statistics
    as plain averages over the batches (momentum None); each batch is a tensor or a
    list/tuple whose first item is the input. Other modules' state is untouched."""
    momenta = {}
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            if module.track_running_stats:
                module.running_mean.data[...] = 0
                module.running_var.data[...] = 1
                module.num_batches_tracked.data[...] = 0
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    try:
        with no_grad():
            for batch in loader:
                if isinstance(batch, (list, tuple)):
                    batch = batch[0]
                if device is not None:
                    batch = batch.to(device)
                model(batch)
    finally:
        for module, momentum in momenta.items():
            module.momentum = momentum
        model.train(was_training)


class SWALR(LRScheduler):
    """Anneal each group's lr to its ``swa_lr`` over ``anneal_epochs`` epochs ("cos" or
    "linear"), then hold it there; chainable as PyTorch's (it works from the current lr)."""

    _hyper = ("_anneal_strategy", "anneal_epochs")

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos",
                 last_epoch=-1):
        swa_lrs = _per_group("SWALR", "swa_lr", swa_lr, optimizer)
        self._set_hyper(_anneal_strategy=anneal_strategy, anneal_epochs=anneal_epochs)
        for lr, group in zip(swa_lrs, optimizer.param_groups):
            group["swa_lr"] = lr
        super().__init__(optimizer, last_epoch)

    @classmethod
    def _validate(cls, _anneal_strategy, anneal_epochs):
        if _anneal_strategy not in ("cos", "linear"):
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{_anneal_strategy}")
        if isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, int) \
                or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got "
                             f"{anneal_epochs}")
        return dict(_anneal_strategy=_anneal_strategy, anneal_epochs=anneal_epochs)

    def anneal_func(self, t):
        if self._anneal_strategy == "linear":
            return t
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        return swa_lr if alpha == 1 else (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self):
        # from the current lr, the lr the schedule started from (undoing the last step's
        # mix), then this step's mix of it and swa_lr
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        span = max(1, self.anneal_epochs)
        prev_alpha = self.anneal_func(max(0, min(1, (step - 1) / span)))
        alpha = self.anneal_func(max(0, min(1, step / span)))
        groups = self.optimizer.param_groups
        starts = [self._get_initial_lr(g["lr"], g["swa_lr"], prev_alpha) for g in groups]
        return [g["swa_lr"] * alpha + lr * (1 - alpha) for g, lr in zip(groups, starts)]
