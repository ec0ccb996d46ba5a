"""DataLoader: minibatches of Tensors from a Dataset, shuffled with its own seeded generator."""
from __future__ import annotations

import numpy as np


def collate(samples):
    """Stack a list of (x, y, ...) samples into a tuple of arrays."""
    first = samples[0]
    if isinstance(first, tuple) or isinstance(first, list):
        return tuple(np.stack([np.asarray(s[i]) for s in samples]) for i in range(len(first)))
    return np.stack([np.asarray(s) for s in samples])


class DataLoader:
    """Iterates over a dataset in minibatches of Tensors.

    shuffle=True draws a fresh permutation every epoch from a generator seeded by ``seed``
    (or by minidl's global seed when ``seed`` is None), so the same seed gives the same batches.
    ``device`` moves each batch once, as it is made.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 device="cpu"):
        if int(batch_size) < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = device
        if seed is None:
            from ..backend import rng

            seed = int(rng().integers(0, 2**63 - 1))
        self._gen = np.random.default_rng(seed)

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        from ..tensor import Tensor

        n = len(self.dataset)
        order = self._gen.permutation(n) if self.shuffle else np.arange(n)
        batched = hasattr(self.dataset, "get_batch")
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            if batched:
                arrays = self.dataset.get_batch(idx)
            else:
                arrays = collate([self.dataset[int(i)] for i in idx])
            if isinstance(arrays, tuple):
                yield tuple(Tensor(a, device=self.device) for a in arrays)
            else:
                yield Tensor(arrays, device=self.device)
