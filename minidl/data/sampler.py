"""DistributedSampler: each rank's share of a dataset's indices, as in PyTorch."""
from __future__ import annotations

import math

import numpy as np


class DistributedSampler:
    """The indices rank ``rank`` of ``num_replicas`` reads in one epoch.

    Every rank draws the same permutation (seeded by ``seed + epoch``: call ``set_epoch`` at
    the start of each epoch for a new order) and takes every ``num_replicas``-th index from
    position ``rank``. The shards have equal length: the list is padded with indices from its
    start (so a few samples are seen twice per epoch), or with ``drop_last`` cut to a multiple
    of ``num_replicas``. ``num_replicas`` and ``rank`` default to the process group's.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        if num_replicas is None or rank is None:
            from .. import distributed as dist

            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler: pass num_replicas and rank, or call "
                                   "minidl.distributed.init_process_group() first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if int(num_replicas) < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"DistributedSampler: invalid rank {rank}, rank should be in the "
                             f"interval [0, {int(num_replicas) - 1}]")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last and n % self.num_replicas:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        """Shuffle differently (but identically on every rank) in each epoch."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            indices = np.arange(n)
        if self.drop_last:
            indices = indices[:self.total_size]
        elif self.total_size > n:  # wrap around (repeatedly, for a dataset smaller than N)
            indices = np.resize(indices, self.total_size)
        return iter(indices[self.rank:self.total_size:self.num_replicas].tolist())
