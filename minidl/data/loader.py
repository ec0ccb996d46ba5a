"""DataLoader: minibatches of Tensors from a Dataset, shuffled by a per-epoch seed."""
from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np


def collate(samples):
    """Batch a list of samples as PyTorch's default_collate does: (x, y, ...) tuples or lists
    into a tuple of stacked arrays, dicts into a dict of them (by key), strings into a list."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(_collate_field([s[i] for s in samples]) for i in range(len(first)))
    return _collate_field(samples)


def _collate_field(values):
    first = values[0]
    if isinstance(first, Mapping):
        return {k: _collate_field([v[k] for v in values]) for k in first}
    if isinstance(first, (str, bytes)):
        return list(values)
    pil = sys.modules.get("PIL.Image")  # only loaded when images are in use
    if pil is not None and isinstance(first, pil.Image):
        # np.asarray would silently batch HWC pixels; torch refuses, and so does minidl
        raise TypeError("default_collate: batch must contain tensors, numpy arrays, numbers, "
                        "dicts or lists; found <class 'PIL.Image.Image'> (add "
                        "minidl.vision.transforms.ToTensor() to the dataset's transform)")
    return np.stack([np.asarray(v) for v in values])


def _to_tensors(batch, device):
    from ..tensor import Tensor

    if isinstance(batch, dict):
        return {k: _to_tensors(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_to_tensors(v, device) for v in batch)
    if isinstance(batch, list):  # strings stay a list
        return batch
    return Tensor(batch, device=device)


class DataLoader:
    """Iterates over a dataset in minibatches of Tensors.

    shuffle=True gives epoch ``e`` the order ``np.random.default_rng([seed, e]).permutation(n)``:
    the same seed gives the same batches, and each epoch's order depends only on the seed and
    the epoch number (``seed`` None: one drawn from minidl's global seed). Every pass over the
    loader is the next epoch; ``set_epoch(e)`` says which epoch the next pass is, as for
    PyTorch's samplers, so a run resumed after epoch ``e`` calls ``loader.set_epoch(e)`` and
    sees the batches an unbroken run would have seen.
    ``device`` moves each batch once, as it is made. ``sampler`` (a DistributedSampler, or any
    iterable of indices with a length) decides which items come, in which order, instead;
    ``set_epoch`` is passed on to it. The first four arguments are PyTorch's positional
    ones (dataset, batch_size, shuffle, sampler); the others are taken by keyword only.
    ``collate_fn(list_of_samples)`` replaces the default batching (its result is yielded as
    it is). Items load in this process (PyTorch's ``num_workers=0``); ``num_workers``,
    ``pin_memory``, ``persistent_workers`` and ``worker_init_fn`` are accepted, so PyTorch code
    runs unchanged, and give the same batches.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, *, drop_last=False,
                 seed=None, device="cpu", collate_fn=None, num_workers=0, pin_memory=False,
                 persistent_workers=False, worker_init_fn=None):
        # the first four in PyTorch's positional order; the rest by keyword only.
        # Batches are loaded in this process, as PyTorch's num_workers=0 does: num_workers and
        # the worker options are taken (so PyTorch code runs as it is) and give the same batches.
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) \
                or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers should be a non-negative integer, "
                             f"got {num_workers!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {collate_fn!r}")
        self.collate_fn = collate_fn
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size should be a positive integer, "
                             f"got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True are mutually exclusive (the "
                             "sampler decides the order; DistributedSampler shuffles itself)")
        self.sampler = sampler
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = device
        if seed is None:
            from ..backend import rng

            seed = int(rng().integers(0, 2**63 - 1))
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"DataLoader: seed should be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        """The epoch number of the next pass (0 for the first), which picks its shuffle order."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch should be a non-negative integer, "
                             f"got {epoch!r}")
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)

    def __len__(self):
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        # the epoch advances when the pass starts, not at its first batch
        n = len(self.dataset)
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.sampler is not None:
            return self._batches(np.fromiter(iter(self.sampler), dtype=np.int64))
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle \
            else np.arange(n)
        return self._batches(order)

    def _batches(self, order):
        n = len(order)
        batched = hasattr(self.dataset, "get_batch") and self.collate_fn is None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            if self.collate_fn is not None:  # the caller's batching, returned as it is
                yield self.collate_fn([self.dataset[int(i)] for i in idx])
                continue
            if batched:
                arrays = self.dataset.get_batch(idx)
            else:
                arrays = collate([self.dataset[int(i)] for i in idx])
            yield _to_tensors(arrays, self.device)
