"""Samplers, as torch.utils.data's: which indices a DataLoader reads, in which order
(Sequential, Random, SubsetRandom, WeightedRandom), grouped into batches (BatchSampler), or
each rank's share of them (DistributedSampler).

Random samplers take ``generator``: None draws a fresh seed from minidl's global generator
(``minidl.manual_seed``) at each pass, as PyTorch draws one from its global generator; a
``minidl.Generator`` (CPU, as torch's randperm needs) is drawn from at each pass, as
torch.Generator is; an int seeds a generator of the sampler's own; a
``numpy.random.Generator`` is used as it is. With None or a minidl.Generator the orders
are PyTorch's (torch's draws, in torch's order); an int seed or a NumPy generator gives
NumPy's."""
from __future__ import annotations

import math
from collections.abc import Sized

import numpy as np


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _positive_int(name, key, value):
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: {key} should be a positive integer value, but got "
                         f"{key}={value!r}")
    return int(value)


def _generator(name, generator):
    """What a sampler keeps of ``generator``: None (a seed drawn at each pass), a
    minidl.Generator (drawn from at each pass), or a numpy Generator (an int seeds one)."""
    from ..backend import Generator, generator_rng

    if isinstance(generator, Generator):
        generator_rng(generator, "cpu", name)  # a CUDA generator is refused, as torch does
        return generator
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    if not _is_bool(generator) and isinstance(generator, (int, np.integer)):
        return np.random.default_rng(int(generator))
    raise TypeError(f"{name}: generator must be None, a minidl.Generator, an integer seed or "
                    f"a numpy.random.Generator, got {type(generator).__name__}")


class _TorchDraws:
    """A minidl.Generator's draws for a pass, as torch's samplers take them: ``permutation``
    is torch's randperm and ``integers`` its randint (so a sampler's order after a seed is
    torch's); ``choice`` (WeightedRandomSampler) is NumPy's over the same stream."""

    def __init__(self, generator):
        self.generator = generator

    def permutation(self, n):
        from ..backend import torch_random

        return torch_random.permutation(self.generator, int(n))

    def integers(self, low, high, size):
        from ..backend import torch_random

        return torch_random.integers(self.generator, int(size), int(low), int(high))

    def choice(self, *args, **kwargs):
        return self.generator._gen.choice(*args, **kwargs)


def _rng_for_pass(generator, seeded=True):
    """The draws of a pass: a minidl.Generator's (torch's numbers), a NumPy generator's, or
    with none, as torch's samplers: a generator of the pass's own seeded by an int64 draw of
    the global one (``seeded``), or the global one itself."""
    from ..backend import Generator, default_generator, torch_random

    if isinstance(generator, Generator):
        return _TorchDraws(generator)  # looked up at each pass: manual_seed may reseed it
    if generator is not None:
        return generator
    if not seeded:
        return _TorchDraws(default_generator)
    # as torch: a generator of the pass's own, seeded by an int64 draw of the global one
    seed = int(torch_random.random_full(default_generator, 1, np.int64)[0])
    return _TorchDraws(Generator().manual_seed(seed))


class Sampler:
    """The base of samplers: ``__iter__`` yields dataset indices (or lists of them, for a batch
    sampler); ``__len__`` where the count is known."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random order of the indices (replacement=False: each once per permutation; asking
    for num_samples > len gives whole permutations back to back), or num_samples indices drawn
    uniformly with replacement."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        name = type(self).__name__
        if not _is_bool(replacement):
            raise TypeError(f"{name}: replacement should be a boolean value, but got "
                            f"replacement={replacement!r}")
        self.data_source = data_source
        self.replacement = bool(replacement)
        self._num_samples = num_samples
        self.generator = _generator(name, generator)
        _positive_int(name, "num_samples", self.num_samples)

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n, count = len(self.data_source), self.num_samples
        rng = _rng_for_pass(self.generator)
        if self.replacement:
            yield from rng.integers(0, n, size=count).tolist()
            return
        for _ in range(count // n):
            yield from rng.permutation(n).tolist()
        yield from rng.permutation(n)[:count % n].tolist()

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order, each once."""

    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = _generator(type(self).__name__, generator)

    def __iter__(self):
        # torch's: randperm of the generator (the global one itself when none)
        for i in _rng_for_pass(self.generator, seeded=False).permutation(len(self.indices)) \
                .tolist():
            yield self.indices[i]

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """num_samples indices 0..len(weights)-1 drawn with probability proportional to weights
    (with replacement by default; without, each index at most once)."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        name = type(self).__name__
        num_samples = _positive_int(name, "num_samples", num_samples)
        if not _is_bool(replacement):
            raise ValueError(f"{name}: replacement should be a boolean value, but got "
                             f"replacement={replacement!r}")
        if hasattr(weights, "numpy"):
            weights = weights.numpy()
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"{name}: weights should be a 1d sequence but given weights have "
                             f"shape {tuple(w.shape)}")
        if not np.all(np.isfinite(w)) or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"{name}: weights must be finite, >= 0 and not all 0, got {w}")
        if not replacement and num_samples > np.count_nonzero(w):
            raise ValueError(f"{name}: cannot draw {num_samples} samples without replacement "
                             f"from {np.count_nonzero(w)} non-zero weights")
        self.weights, self.num_samples, self.replacement = w, num_samples, bool(replacement)
        self.generator = _generator(name, generator)

    def __iter__(self):
        rng = _rng_for_pass(self.generator, seeded=False)
        if isinstance(rng, _TorchDraws):  # torch's: multinomial of the float64 weights
            from ..backend import torch_random

            yield from torch_random.multinomial(
                rng.generator, np.asarray(self.weights, dtype=np.float64)[None], np.float64,
                self.num_samples, self.replacement)[0].tolist()
            return
        p = self.weights / self.weights.sum()
        yield from rng.choice(len(p), size=self.num_samples, replace=self.replacement,
                              p=p).tolist()

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Lists of batch_size indices from another sampler (or any iterable of indices); the last
    one shorter, or dropped with drop_last."""

    def __init__(self, sampler, batch_size, drop_last):
        name = type(self).__name__
        self.batch_size = _positive_int(name, "batch_size", batch_size)
        if not _is_bool(drop_last):
            raise ValueError(f"{name}: drop_last should be a boolean value, but got "
                             f"drop_last={drop_last!r}")
        self.sampler, self.drop_last = sampler, bool(drop_last)

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        if not isinstance(self.sampler, Sized):
            raise TypeError(f"BatchSampler: its sampler ({type(self.sampler).__name__}) has no "
                            "len()")
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class DistributedSampler(Sampler):
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
