"""DefaultSavePlanner / DefaultLoadPlanner: the options of torch's default planners that
minidl's save and load follow (custom planners are not supported)."""
from __future__ import annotations

__all__ = ["DefaultSavePlanner", "DefaultLoadPlanner", "SavePlanner", "LoadPlanner"]


class SavePlanner:
    pass


class LoadPlanner:
    pass


class DefaultSavePlanner(SavePlanner):
    """``dedup_replicated_tensors``: a tensor (or the same piece of one) that several ranks
    hold is written once, by the lowest rank holding it (minidl always does this)."""

    def __init__(self, flatten_state_dict=True, flatten_sharded_tensors=True,
                 dedup_replicated_tensors=None, dedup_save_to_lowest_rank=False,
                 enable_plan_caching=False):
        self.flatten_state_dict = flatten_state_dict


class DefaultLoadPlanner(LoadPlanner):
    """``allow_partial_load``: keys of the state dict that the checkpoint lacks are left as
    they are instead of raising."""

    def __init__(self, flatten_state_dict=True, flatten_sharded_tensors=True,
                 allow_partial_load=False):
        self.flatten_state_dict = flatten_state_dict
        self.allow_partial_load = bool(allow_partial_load)
