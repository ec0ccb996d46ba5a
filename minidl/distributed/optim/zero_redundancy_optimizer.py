"""ZeroRedundancyOptimizer (ZeRO stage 1, as torch's): each rank keeps the optimizer state of
its own share of the parameters only, so the state's memory is divided by the number of ranks.

    opt = ZeroRedundancyOptimizer(ddp_model.parameters(), optimizer_class=optim.Adam, lr=1e-3)
    loss.backward()          # DDP has averaged the gradients on every rank
    opt.step()               # each rank steps its share, then broadcasts it to the others

The parameters are shared out group by group, largest first within a group, each to the rank
holding the fewest elements so far over all groups (torch's greedy partition), so the shares
are even whatever the sizes.
``param_groups`` holds every parameter with the group's hyperparameters: a learning-rate
scheduler changes them there, and each step passes them on to the local optimizer.
``state_dict()`` needs ``consolidate_state_dict(to=r)`` on every rank first, and is then
available on rank r in the wrapped optimizer's own format, over all parameters.
"""
from __future__ import annotations

import numpy as np

from ... import distributed as dist
from ...backend import device_of, get_array_module
from ...optim.optimizer import Optimizer

__all__ = ["ZeroRedundancyOptimizer"]


class ZeroRedundancyOptimizer(Optimizer):
    def __init__(self, params, optimizer_class, process_group=None,
                 parameters_as_bucket_view=False, overlap_with_ddp=False, **defaults):
        if not isinstance(optimizer_class, type) or not issubclass(optimizer_class, Optimizer):
            raise TypeError(f"ZeroRedundancyOptimizer: optimizer_class must be a minidl "
                            f"Optimizer class (optim.Adam, optim.SGD, ...), got "
                            f"{optimizer_class!r}")
        if overlap_with_ddp:
            raise ValueError("ZeroRedundancyOptimizer: overlap_with_ddp needs DDP's "
                             "communication hook machinery in torch; minidl steps after "
                             "backward, so leave it False")
        if process_group is dist.GroupMember.NON_GROUP_MEMBER:
            raise ValueError("ZeroRedundancyOptimizer: this rank is not part of process_group")
        dist._pg(process_group, "ZeroRedundancyOptimizer")
        self.process_group = process_group
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        self._optimizer_class = optimizer_class
        self.parameters_as_bucket_view = parameters_as_bucket_view
        self._consolidated = None
        super().__init__(params, defaults)
        self._build_local()

    # ---- the partition ----------------------------------------------------------------------
    def _partition(self):
        """owner[i][j]: the rank that steps parameter j of group i. The ranks' totals carry
        over from group to group (as torch's), so many small groups still spread out."""
        owners = []
        sizes = np.zeros(self.world_size, dtype=np.int64)
        for group in self.param_groups:
            owner = [0] * len(group["params"])
            order = sorted(range(len(group["params"])),
                           key=lambda j: -group["params"][j].data.size)
            for j in order:
                r = int(np.argmin(sizes))
                owner[j] = r
                sizes[r] += group["params"][j].data.size
            owners.append(owner)
        return owners

    def _build_local(self):
        self._owners = self._partition()
        local_groups, self._local_index = [], []
        for gi, (group, owner) in enumerate(zip(self.param_groups, self._owners)):
            mine = [p for p, r in zip(group["params"], owner) if r == self.rank]
            if mine:
                local_groups.append({**{k: v for k, v in group.items()
                                        if k not in ("params", "param_names")},
                                     "params": mine})
                self._local_index.append(gi)
        self.optim = self._optimizer_class(local_groups, **self.defaults) if local_groups \
            else None

    def add_param_group(self, param_group):
        """Add a group (every rank must); its parameters are shared out like the others', and
        the groups already there keep their shares and state."""
        super().add_param_group(param_group)
        if not hasattr(self, "_owners"):
            return  # during construction: _build_local shares everything out
        self._owners = self._partition()  # group by group: the earlier shares do not move
        gi = len(self.param_groups) - 1
        group = self.param_groups[gi]
        mine = [p for p, r in zip(group["params"], self._owners[gi]) if r == self.rank]
        if not mine:
            return
        local = {**{k: v for k, v in group.items() if k not in ("params", "param_names")},
                 "params": mine}
        if self.optim is None:
            self.optim = self._optimizer_class([local], **self.defaults)
        else:
            self.optim.add_param_group(local)
        self._local_index.append(gi)

    @property
    def state(self):
        """The optimizer state of this rank's share of the parameters."""
        return self.optim.state if getattr(self, "optim", None) is not None else self._state

    @state.setter
    def state(self, value):
        Optimizer.state.fset(self, value)

    # ---- the step ---------------------------------------------------------------------------
    def step(self, closure=None):
        """Step this rank's share (with the hyperparameters of ``param_groups``), then every
        rank broadcasts its updated share to the others."""
        if self.optim is not None:
            for local, gi in zip(self.optim.param_groups, self._local_index):
                for k, v in self.param_groups[gi].items():
                    if k not in ("params", "param_names"):
                        local[k] = v
            loss = self.optim.step(closure)
        else:
            loss = closure() if closure is not None else None
        self._broadcast_shares()
        return loss

    def _broadcast_shares(self):
        for r in range(self.world_size):
            coalesced = {}
            for group, owner in zip(self.param_groups, self._owners):
                for p, o in zip(group["params"], owner):
                    if o == r:
                        coalesced.setdefault((device_of(p.data), p.data.dtype), []).append(p)
            for ps in coalesced.values():
                xp = get_array_module(ps[0].data)
                flat = xp.concatenate([p.data.reshape(-1) for p in ps])
                dist.broadcast(flat, group=self.process_group, group_src=r)
                if r != self.rank:
                    off = 0
                    for p in ps:
                        p.data[...] = flat[off:off + p.data.size].reshape(p.data.shape)
                        off += p.data.size

    # ---- state dicts ------------------------------------------------------------------------
    def _global_indices(self):
        """For each local group, the global state-dict index of each of its parameters."""
        out, base = [], 0
        starts = []
        for group in self.param_groups:
            starts.append(base)
            base += len(group["params"])
        for gi in self._local_index:
            owner = self._owners[gi]
            out.append([starts[gi] + j for j, o in enumerate(owner) if o == self.rank])
        return out

    def consolidate_state_dict(self, to=0):
        """Gather every rank's share of the state on rank ``to`` (every rank must call it)."""
        local = self.optim.state_dict() if self.optim is not None else \
            {"state": {}, "param_groups": []}
        mapping = self._global_indices()
        flat_map = [i for g in mapping for i in g]
        shifted = {flat_map[int(k)]: v for k, v in local["state"].items()}
        shifted = {k: {n: (x.numpy() if hasattr(x, "numpy") else x) for n, x in v.items()}
                   for k, v in shifted.items()}
        gathered = [None] * self.world_size if self.rank == to else None
        dist.gather_object(shifted, gathered, group=self.process_group, group_dst=to)
        self._consolidated = None
        if self.rank == to:
            from ...tensor import Tensor

            state = {}
            for part in gathered:
                for k, v in part.items():
                    state[k] = {n: Tensor(x) if isinstance(x, np.ndarray) else x
                                for n, x in v.items()}
            self._consolidated = dict(sorted(state.items()))

    def state_dict(self):
        """The whole optimizer state (after ``consolidate_state_dict(to=this rank)``)."""
        if self._consolidated is None:
            raise RuntimeError(f"Optimizer state has not been consolidated on this rank. Please "
                               f"call `consolidate_state_dict(to={self.rank})` on all ranks "
                               "beforehand if you meant to save the global state.")
        groups, index = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(index, index + n))})
            index += n
        return {"state": dict(self._consolidated), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a state dict of every parameter (from ``state_dict()``): the
        hyperparameters of every group, and this rank's share of the state."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"ZeroRedundancyOptimizer.load_state_dict: the state dict has "
                             f"{len(saved_groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        for saved, group in zip(saved_groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("ZeroRedundancyOptimizer.load_state_dict: a parameter group "
                                 "holds a different number of parameters")
            for k, v in saved.items():
                if k not in ("params", "param_names"):
                    group[k] = v
        if self.optim is None:
            return
        mapping = self._global_indices()
        local_state, local_groups, li = {}, [], 0
        for gi, ids in zip(self._local_index, mapping):
            for g_index in ids:
                if g_index in state_dict["state"] or str(g_index) in state_dict["state"]:
                    local_state[li] = state_dict["state"].get(g_index,
                                                              state_dict["state"].get(str(g_index)))
                li += 1
            hyper = {k: v for k, v in self.param_groups[gi].items()
                     if k not in ("params", "param_names")}
            start = li - len(ids)
            local_groups.append({**hyper, "params": list(range(start, li))})
        self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
