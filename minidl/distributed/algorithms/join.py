"""Training on uneven inputs (``torch.distributed.algorithms.join``): ranks whose data runs out
first keep answering the collectives of the ranks still training, so nobody waits forever.

    with model.join():                 # model: a DistributedDataParallel
        for x, y in my_loader:         # the ranks may hold different numbers of batches
            loss_fn(model(x), y).backward()
            opt.step()

Each training forward inside the context first gathers, from every rank, whether it is still
training and whether it will average gradients this step (one small all-gather). A rank that
has left the loop answers that gather with "done", then shadows what the training ranks do
that step (the buffer broadcast, the gradient all-reduces with zeros), until every rank is
done. Then the model of the last rank to finish is copied to all ranks (the ones that finished
early skipped optimizer steps). With ``throw_on_early_termination=True`` every rank raises as
soon as one runs out of data instead.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Join", "Joinable", "JoinHook"]


class JoinHook:
    """What a Joinable does while joined: ``main_hook()`` once per step of the ranks still
    training, ``post_hook(is_last_joiner)`` once all ranks are done."""

    def main_hook(self):
        pass

    def post_hook(self, is_last_joiner: bool):
        pass


class Joinable:
    """A class that takes part in Join: ``join_hook()``, ``join_device``,
    ``join_process_group``; it calls ``Join.notify_join_context(self)`` once per step."""

    def join_hook(self, **kwargs) -> JoinHook:
        raise NotImplementedError

    @property
    def join_device(self):
        return "cpu"

    @property
    def join_process_group(self):
        return None


class _Step:
    """What the per-step gather told every rank: which ranks still train, and whether any of
    them averages gradients this step."""

    def __init__(self, table):
        self.active = [int(r) for r in np.flatnonzero(table[:, 0])]
        self.sync = bool(table[:, 1].any())


class Join:
    def __init__(self, joinables, enable=True, throw_on_early_termination=False, **kwargs):
        joinables = list(joinables)
        if not joinables:
            raise ValueError("The join context manager requires at least one joinable")
        for j in joinables:
            if not isinstance(j, Joinable):
                raise TypeError(f"Join: {type(j).__name__} is not a Joinable")
        self._joinables = joinables
        self._hooks = [j.join_hook(**kwargs) for j in joinables]
        self._enable = enable
        self._throw = throw_on_early_termination
        self._group = joinables[0].join_process_group
        self.step = None  # the latest _Step (hooks read it)

    def __enter__(self):
        for j in self._joinables:
            j._join_context = self if self._enable else None
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if not self._enable or exc_type is not None:
                return False
            is_last_joiner = None
            while True:
                step = self._gather(active=False, sync=False)
                if is_last_joiner is None:
                    is_last_joiner = not step.active
                if not step.active:
                    break
                if self._throw:
                    raise RuntimeError("Detected at least one rank that exhausted inputs. "
                                       "Throwing across all ranks.")
                for h in self._hooks:
                    h.main_hook()
            for h in self._hooks:
                h.post_hook(is_last_joiner)
            return False
        finally:
            for j in self._joinables:
                j._join_context = None

    def _gather(self, active, sync):
        from ... import distributed as dist

        mine = np.array([int(active), int(sync)], dtype=np.int64)
        table = np.empty((dist.get_world_size(self._group), 2), dtype=np.int64)
        dist.all_gather_into_tensor(table, mine, group=self._group)
        self.step = _Step(table)
        return self.step

    @staticmethod
    def notify_join_context(joinable, sync=True):
        """Called by a training rank once per step (DDP's forward does): the all-gather that
        the joined ranks answer. Returns the step's _Step, or None outside a Join context."""
        ctx = getattr(joinable, "_join_context", None)
        if ctx is None or joinable is not ctx._joinables[0]:
            return None
        from ... import distributed as dist

        step = ctx._gather(active=True, sync=sync)
        if ctx._throw and len(step.active) < dist.get_world_size(ctx._group):
            raise RuntimeError("Detected at least one rank that exhausted inputs. Throwing "
                               "across all ranks.")
        return step
