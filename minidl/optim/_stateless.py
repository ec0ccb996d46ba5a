"""torch.optim.swap_in_optimizer_params_and_state: run an optimizer on other parameters and
state for the length of a ``with`` block, the live ones restored after it."""
from __future__ import annotations

import contextlib

from ..tensor import Tensor


def _state_entry(key, value):
    """A state_dict entry as the optimizer keeps it: arrays shared with the given Tensors (so
    in-place updates reach them), ``step`` as a count."""
    if key == "step":
        return int(value.item() if hasattr(value, "item") else value)
    return value.data if isinstance(value, Tensor) else value


@contextlib.contextmanager
def swap_in_optimizer_params_and_state(optimizer, swapin_parameters, swapin_optim_state):
    """Inside the block the optimizer's groups hold ``swapin_parameters`` (a dict name ->
    tensor, or a sequence, in the order of the optimizer's parameters) and its state is
    ``swapin_optim_state`` (a ``state_dict()``-shaped dict: its per-group hyperparameters and
    per-parameter state, whose arrays the steps update in place); on exit both are the live
    ones again."""
    params = list(swapin_parameters.values() if isinstance(swapin_parameters, dict)
                  else swapin_parameters)
    groups = swapin_optim_state.get("param_groups") if isinstance(swapin_optim_state, dict) \
        else None
    if groups is None or "state" not in swapin_optim_state:
        raise ValueError("swap_in_optimizer_params_and_state: swapin_optim_state must be a dict "
                         "with 'state' and 'param_groups', as optimizer.state_dict() returns")
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(f"swap_in_optimizer_params_and_state: {len(groups)} parameter groups "
                         f"to swap in, the optimizer has {len(optimizer.param_groups)}")
    wanted = sum(len(g["params"]) for g in groups)
    if wanted != len(params):
        raise ValueError(f"swap_in_optimizer_params_and_state: the state lists {wanted} "
                         f"parameters, {len(params)} were given")
    original_state = optimizer.state
    snapshots = [dict(g) for g in optimizer.param_groups]
    saved_state = swapin_optim_state["state"]
    try:
        new_state, at = {}, 0
        for live, group in zip(optimizer.param_groups, groups):
            ids = list(group["params"])
            swapped = params[at:at + len(ids)]
            at += len(ids)
            live["params"] = swapped
            for key, value in group.items():
                if key != "params":
                    live[key] = value
            for p, pid in zip(swapped, ids):
                entry = saved_state.get(pid, saved_state.get(str(pid), {}))
                new_state[id(p)] = {k: _state_entry(k, v) for k, v in entry.items()}
        optimizer.state = new_state
        yield
    finally:
        for group, snapshot in zip(optimizer.param_groups, snapshots):
            group.clear()
            group.update(snapshot)
        optimizer.state = original_state
