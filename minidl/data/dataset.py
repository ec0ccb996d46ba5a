"""Dataset protocol: ``len(ds)`` and ``ds[i] -> (x, y)`` with numpy arrays or numbers.

A dataset may also define ``get_batch(indices) -> (X, Y)`` returning whole stacked numpy
arrays; DataLoader uses it when present, which avoids a Python loop per sample.
"""
from __future__ import annotations

import bisect
import math
import warnings

import numpy as np


class Dataset:
    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A dataset read as a stream: ``__iter__`` yields the samples (no indexing, no sampler);
    a DataLoader batches them in the order they come. ``a + b`` chains two of them."""

    def __iter__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise TypeError(f"{type(self).__name__} is an IterableDataset: iterate over it, it "
                        "cannot be indexed")

    def __add__(self, other):
        return ChainDataset([self, other])


class ConcatDataset(Dataset):
    """Several datasets one after the other: index i reaches into the dataset it falls in
    (``cumulative_sizes`` holds where each one ends); negative indices count from the end."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for i, d in enumerate(self.datasets):
            if isinstance(d, IterableDataset):
                raise TypeError(f"ConcatDataset does not support IterableDataset (dataset {i}); "
                                "use ChainDataset")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        n = len(self)
        if index < 0:
            if -index > n:
                raise ValueError(f"ConcatDataset: absolute value of index should not exceed "
                                 f"dataset length (index {index}, length {n})")
            index += n
        if index >= n:
            raise IndexError(f"ConcatDataset: index {index} is out of range for length {n}")
        which = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][index - start]


class ChainDataset(IterableDataset):
    """Several IterableDatasets read one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)

    def __iter__(self):
        for i, d in enumerate(self.datasets):
            if not isinstance(d, IterableDataset):
                raise TypeError(f"ChainDataset only supports IterableDataset; dataset {i} is a "
                                f"{type(d).__name__}")
            yield from d

    def __len__(self):
        total = 0
        for i, d in enumerate(self.datasets):
            if not isinstance(d, IterableDataset):
                raise TypeError(f"ChainDataset only supports IterableDataset; dataset {i} is a "
                                f"{type(d).__name__}")
            total += len(d)
        return total


class TensorDataset(Dataset):
    """Wraps arrays (or Tensors) sharing their first dimension."""

    def __init__(self, *arrays):
        from ..tensor import Tensor

        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays = [a.numpy() if isinstance(a, Tensor) else np.asarray(a) for a in arrays]
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if len(a) != n:
                shapes = [tuple(x.shape) for x in self.arrays]
                raise ValueError(f"TensorDataset: arrays differ in their first dimension: {shapes}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        # Tensors, as torch's (``img, label = dataset[0]; model(img.unsqueeze(0).to(device))``):
        # a row is a view of the stored array, as torch's sample is of its tensor
        from ..tensor import Tensor

        return tuple(Tensor(np.asarray(a[index])) for a in self.arrays)

    @property
    def tensors(self):
        """The stored data as Tensors sharing it (torch's ``dataset.tensors``)."""
        from ..tensor import Tensor

        return tuple(Tensor(a) for a in self.arrays)

    def get_batch(self, indices):
        return tuple(a[indices] for a in self.arrays)


class StackDataset(Dataset):
    """Datasets of one length side by side, as torch's: ``StackDataset(images, labels)[i]`` is
    ``(images[i], labels[i])``; with keywords, ``StackDataset(image=a, label=b)[i]`` is
    ``{"image": a[i], "label": b[i]}``."""

    def __init__(self, *args, **kwargs):
        if args and kwargs:
            raise ValueError("StackDataset: give the datasets either positionally (samples are "
                             "tuples) or by keyword (samples are dicts), not both")
        if not args and not kwargs:
            raise ValueError("StackDataset: at least one dataset is needed")
        self.datasets = args if args else dict(kwargs)
        parts = args if args else tuple(kwargs.values())
        names = [str(i) for i in range(len(args))] if args else list(kwargs)
        lengths = [len(d) for d in parts]
        if any(n != lengths[0] for n in lengths):
            raise ValueError("StackDataset: size mismatch between datasets: "
                             + ", ".join(f"{k} has {n}" for k, n in zip(names, lengths)))
        self._length = lengths[0]

    def __len__(self):
        return self._length

    def __getitem__(self, index):
        if isinstance(self.datasets, dict):
            return {k: d[index] for k, d in self.datasets.items()}
        return tuple(d[index] for d in self.datasets)

    def __getitems__(self, indices):
        if isinstance(self.datasets, dict):
            columns = {k: fetch_samples(d, indices) for k, d in self.datasets.items()}
            return [{k: columns[k][j] for k in columns} for j in range(len(indices))]
        columns = [fetch_samples(d, indices) for d in self.datasets]
        return [tuple(c[j] for c in columns) for j in range(len(indices))]


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices):
        """The samples at ``indices`` (a list), as torch's: through the dataset's own
        ``__getitems__`` where it has one."""
        return fetch_samples(self.dataset, [int(self.indices[i]) for i in indices])

    def get_batch(self, indices):
        inner = self.indices[np.asarray(indices)]
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(inner)
        from .collate import collate

        return collate(fetch_samples(self.dataset, [int(i) for i in inner]), indices)


def fetch_samples(dataset, indices):
    """``dataset.__getitems__(indices)`` where the dataset defines it (torch's batched
    fetch, which a DataLoader calls instead of indexing one sample at a time), else
    ``[dataset[i] for i in indices]``."""
    many = getattr(dataset, "__getitems__", None)
    if many:
        samples = many(list(indices))
        if len(samples) != len(indices):
            raise ValueError(f"{type(dataset).__name__}.__getitems__ returned {len(samples)} "
                             f"samples for {len(indices)} indices")
        return samples
    return [dataset[int(i)] for i in indices]


def _warn_empty(sizes):
    for i, size in enumerate(sizes):  # as PyTorch, for splits by fractions only
        if size == 0:
            warnings.warn(f"Length of split at index {i} is 0. This might result in an empty "
                          f"dataset.", UserWarning, stacklevel=4)


def _split_sizes(lengths, n):
    """PyTorch's rule: lengths summing to 1 (to within math.isclose, and not above it) are
    fractions, each floored, the remainder handed out one by one from the first split;
    otherwise they are sizes, which must sum to len(dataset)."""
    total = sum(lengths)
    if math.isclose(total, 1) and total <= 1:
        for i, frac in enumerate(lengths):
            if not 0 <= frac <= 1:
                raise ValueError(f"random_split: fraction at index {i} ({frac}) is not between "
                                 f"0 and 1")
        sizes = [int(math.floor(n * frac)) for frac in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        _warn_empty(sizes)
        return sizes
    if total != n:
        raise ValueError(f"random_split: sum of input lengths {lengths} ({total}) does not equal "
                         f"the length of the input dataset ({n})")
    for i, size in enumerate(lengths):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"random_split: lengths {lengths} are neither fractions summing to "
                            f"1 nor integer sizes (index {i}: {size!r})")
        if size < 0:  # PyTorch gives overlapping subsets here; refused instead
            raise ValueError(f"random_split: length at index {i} is negative ({size})")
    return [int(size) for size in lengths]


def random_split(dataset, lengths, seed=None, *, generator=None):
    """Split into non-overlapping subsets.

    ``lengths`` is a list of sizes or fractions summing to 1 (PyTorch's sizes: each fraction
    of len(dataset) floored, the remainder given one each from the first split on; a split of
    size 0 warns), or a single fraction ``f`` (``random_split(ds, 0.8, seed=2)`` gives a
    (train, test) pair of 80% and 20%, as the list [f, 1 - f] would but with each product
    rounded to 6 decimals before the floor, so that 200 * (1 - 0.8) gives 40).
    ``generator`` (a CPU ``minidl.Generator``, as torch's, or a ``numpy.random.Generator``;
    also taken in seed's place, where PyTorch's third argument is its generator) draws the
    permutation instead of ``seed``; with neither, minidl's global generator draws it, so
    that ``minidl.manual_seed(s)`` makes the split reproducible, as torch.manual_seed does.
    """
    from ..backend import Generator, generator_of, torch_random

    if isinstance(seed, (np.random.Generator, Generator)):
        seed, generator = None, seed
    if isinstance(generator, Generator):
        generator = generator_of(generator, "cpu", "random_split")
    if generator is not None and not isinstance(generator, (np.random.Generator, Generator)):
        raise TypeError(f"random_split: generator must be a minidl.Generator or a "
                        f"numpy.random.Generator, got {type(generator).__name__}")
    n = len(dataset)
    if isinstance(lengths, float):  # minidl's (train, test) pair, exact where f * n is whole
        if not 0.0 <= lengths <= 1.0:
            raise ValueError(f"random_split: the fraction {lengths} is not between 0 and 1")
        # rounded first: 1.0 - 0.8 is 0.19999999999999996, and 200 of it must give 40, not 39
        sizes = [int(math.floor(round(f * n, 6))) for f in (lengths, 1.0 - lengths)]
        for i in range(n - sum(sizes)):
            sizes[i % 2] += 1
        _warn_empty(sizes)
    else:
        sizes = _split_sizes(list(lengths), n)
    if generator is None:  # no seed either: minidl's global generator, as torch's
        generator = generator_of(None) if seed is None else np.random.default_rng(seed)
    if isinstance(generator, Generator):  # torch's randperm (manual_seed(s): torch's split)
        perm = torch_random.permutation(generator, n)
    else:
        perm = generator.permutation(n)
    out, start = [], 0
    for size in sizes:
        out.append(Subset(dataset, perm[start:start + size]))
        start += size
    return out
