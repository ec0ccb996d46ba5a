"""DataLoader: minibatches of Tensors from a Dataset, shuffled as PyTorch shuffles (or by
minidl's per-epoch seed)."""
from __future__ import annotations

import operator

import numpy as np

from ..profiler import _recorder
from ._workers import get_worker_info  # noqa: F401  (minidl.data.get_worker_info)
from .collate import collate, default_convert
from .dataset import IterableDataset, fetch_samples


def _to_device(sample, device):
    """The Tensors in a converted sample moved to ``device``, its structure kept."""
    from ..tensor import Tensor

    if isinstance(sample, Tensor):
        return sample.to(device)
    if isinstance(sample, dict):
        moved = {k: _to_device(v, device) for k, v in sample.items()}
        try:
            return type(sample)(moved)
        except TypeError:  # a mapping type that cannot be built from a dict
            return moved
    if isinstance(sample, list):
        return [_to_device(v, device) for v in sample]
    if isinstance(sample, tuple) and hasattr(sample, "_fields"):
        return type(sample)(*(_to_device(v, device) for v in sample))
    return sample


def _indices(items, what):
    """The indices a sampler gave, as int64; a float or other non-integer index is refused
    (an int64 cast would silently floor 0.5 to 0)."""
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"DataLoader: {what} gave {type(items).__name__} {items!r}, not "
                        f"{'a list of indices' if what == 'batch_sampler' else 'indices'}") from None
    try:
        idx = np.asarray(items)
    except (TypeError, ValueError):  # e.g. 0-d Tensors: taken one by one below
        idx = None
    if idx is not None and (idx.size == 0 or idx.dtype.kind in "iu"):
        return idx.astype(np.int64, copy=False).reshape(-1)
    out = np.empty(len(items), dtype=np.int64)
    for i, v in enumerate(items):
        try:
            if isinstance(v, (bool, np.bool_)):
                raise TypeError
            out[i] = operator.index(v)
        except TypeError:
            raise TypeError(f"DataLoader: {what} gave the index {v!r} ({type(v).__name__}); "
                            f"dataset indices must be integers") from None
    return out


def _to_tensors(batch, device):
    from ..tensor import Tensor

    if isinstance(batch, dict):  # the samples' mapping type (OrderedDict, defaultdict) kept
        converted = {k: _to_tensors(v, device) for k, v in batch.items()}
        if type(batch) is dict:
            return converted
        from .collate import _same_mapping

        return _same_mapping(batch, converted)
    if isinstance(batch, tuple):
        items = [_to_tensors(v, device) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):  # strings stay a list; a list of fields is converted
        return [v if isinstance(v, (str, bytes)) else _to_tensors(v, device) for v in batch]
    return Tensor(batch, device=device)


class DataLoader:
    """Iterates over a dataset in minibatches of Tensors.

    With ``seed`` and ``generator`` None, shuffle=True gives PyTorch's order and takes PyTorch's
    draws: each pass draws the workers' ``base_seed`` (an int64) from minidl's global generator
    as it starts (even with no workers; persistent workers draw it once), then, at its first
    batch, the int64 seed of a generator of its own whose randperm is the order, as
    torch's RandomSampler does; so after ``minidl.manual_seed(s)`` the batches, and the global
    generator's state after each epoch (the dropout masks drawn next), are torch's after
    ``torch.manual_seed(s)``. ``generator`` (a CPU minidl.Generator, as torch.Generator; not
    with ``seed``) is drawn from instead of the global generator, as PyTorch draws from it.
    ``seed`` (minidl's own; a non-negative int) gives epoch ``e`` the order
    ``np.random.default_rng([seed, e]).permutation(n)`` instead, drawing nothing from the
    global generator: each epoch's order depends only on the seed and the epoch number.
    Every pass over the loader is the next epoch; ``set_epoch(e)`` says which epoch the next
    pass is, as for PyTorch's samplers, so a run resumed after epoch ``e`` calls
    ``loader.set_epoch(e)`` and sees the batches an unbroken run would have seen.
    ``device`` moves each batch once, as it is made. ``sampler`` (a DistributedSampler, or any
    iterable of indices with a length) decides which items come, in which order, instead;
    ``set_epoch`` is passed on to it. ``batch_sampler`` (a BatchSampler, or any iterable of
    lists of indices) decides whole batches instead, and excludes batch_size, shuffle,
    sampler and drop_last, as in PyTorch. Over an IterableDataset the samples are batched in
    the order its iterator yields them (no shuffle, sampler or batch_sampler).
    The first five arguments are PyTorch's positional ones (dataset, batch_size, shuffle,
    sampler, batch_sampler); the others are taken by keyword only.
    ``collate_fn(list_of_samples)`` replaces the default batching (its result is yielded as
    it is). ``batch_size=None`` turns batching off, as in PyTorch: each sample comes alone,
    its numpy arrays and numbers made Tensors by ``default_convert`` (no batch dimension; a
    tuple sample comes as a list), or passed to ``collate_fn`` when one is given; the sampler
    or shuffle still picks the order, and drop_last is refused.
    ``num_workers=0`` (the default) loads the items in this process. ``num_workers=k`` loads
    them in k worker processes, as PyTorch does, and gives the same batches in the same order
    (``in_order=True``): each worker collates whole batches, ``prefetch_factor`` (default 2)
    batches per worker are requested ahead, and ``persistent_workers=True`` keeps the workers
    from one pass to the next. A worker is seeded with ``base_seed + worker_id`` (minidl's,
    Python's and NumPy's global generators; ``base_seed`` is drawn as above, or with ``seed``
    follows from it and the epoch),
    then runs ``worker_init_fn(worker_id)``; ``get_worker_info()`` in a worker says which it
    is, so an IterableDataset can read only its share (each worker iterates its own copy, and
    the batches come round-robin from the workers).
    An error in a worker is raised here with the worker's traceback; a worker that dies is
    reported within a second; ``timeout`` > 0 bounds the wait for a batch. ``multiprocessing_context`` ("fork", "spawn", "forkserver" or
    a context) picks how workers start (default: Python's). ``pin_memory`` is accepted and has
    no effect.
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, *,
                 drop_last=False, seed=None, device="cpu", collate_fn=None, num_workers=0,
                 pin_memory=False, persistent_workers=False, worker_init_fn=None, timeout=0,
                 prefetch_factor=None, multiprocessing_context=None, in_order=True,
                 pin_memory_device="", generator=None):
        # the first five in PyTorch's positional order; the rest by keyword only.
        del pin_memory, pin_memory_device  # no pinned host memory here: batches are made as
        # they are used (on CUDA, copied once by the device= move)
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) \
                or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers should be a non-negative integer, "
                             f"got {num_workers!r}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("DataLoader: prefetch_factor option could only be specified in "
                             "multiprocessing. Let num_workers > 0 to enable multiprocessing, "
                             "otherwise set prefetch_factor to None.")
        if prefetch_factor is not None and (isinstance(prefetch_factor, bool) or not isinstance(
                prefetch_factor, (int, np.integer)) or prefetch_factor < 1):
            raise ValueError(f"DataLoader: prefetch_factor should be a positive integer, "
                             f"got {prefetch_factor!r}")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.number)) \
                or not timeout >= 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got {timeout!r}")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"DataLoader: worker_init_fn must be callable, got {worker_init_fn!r}")
        if multiprocessing_context is not None and num_workers == 0:
            raise ValueError(f"DataLoader: multiprocessing_context can only be used with "
                             f"multi-process loading (num_workers > 0), but got num_workers="
                             f"{num_workers}")
        if isinstance(multiprocessing_context, str):
            import multiprocessing

            valid = multiprocessing.get_all_start_methods()
            if multiprocessing_context not in valid:
                raise ValueError(f"DataLoader: multiprocessing_context option should specify a "
                                 f"valid start method in {valid!r}, but got "
                                 f"multiprocessing_context={multiprocessing_context!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {collate_fn!r}")
        self.collate_fn = collate_fn
        if batch_size is None:  # no automatic batching: one sample at a time
            if drop_last:
                raise ValueError("DataLoader: batch_size=None option disables auto-batching and "
                                 "is mutually exclusive with drop_last")
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size should be a positive integer or None, "
                             f"got {batch_size!r}")
        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable:  # a stream has its own order: PyTorch refuses these three
            for key, value in (("shuffle", shuffle), ("sampler", sampler),
                               ("batch_sampler", batch_sampler)):
                if value not in (None, False):
                    raise ValueError(f"DataLoader with IterableDataset: expected unspecified "
                                     f"{key} option, but got {key}={value!r}")
        if not isinstance(drop_last, (bool, np.bool_)):  # as torch's BatchSampler
            raise ValueError(f"DataLoader: drop_last should be a boolean value, but got "
                             f"drop_last={drop_last!r}")
        if sampler is not None and not hasattr(sampler, "__iter__") \
                and not hasattr(sampler, "__getitem__"):
            raise TypeError(f"DataLoader: sampler must be an iterable of indices (a Sampler or a "
                            f"list), got {type(sampler).__name__}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle (the "
                             "sampler decides the order; DistributedSampler shuffles itself)")
        if batch_sampler is not None:
            if not hasattr(batch_sampler, "__iter__"):  # e.g. drop_last passed by position
                raise TypeError(f"DataLoader: batch_sampler must be an iterable of lists of "
                                f"indices, got {type(batch_sampler).__name__}")
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler option is mutually exclusive with "
                                 "batch_size, shuffle, sampler, and drop_last")
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.dataset = dataset
        self.batch_size = None if batch_sampler is not None or batch_size is None \
            else int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = drop_last
        self.device = device
        self.num_workers = int(num_workers)
        self.prefetch_factor = (2 if prefetch_factor is None else int(prefetch_factor)) \
            if num_workers else None
        self.persistent_workers = bool(persistent_workers)
        self.worker_init_fn = worker_init_fn
        self.timeout = float(timeout)
        self.multiprocessing_context = multiprocessing_context
        self.in_order = bool(in_order)
        self._pool = None  # the persistent workers, once started
        self.generator = generator
        if generator is not None:  # no seed: each pass draws from the generator
            from ..backend import generator_of

            generator_of(generator, "cpu", "DataLoader")  # a CPU minidl.Generator, as torch's
            if seed is not None:
                raise ValueError("DataLoader: pass seed or generator, not both")
        elif seed is not None and (isinstance(seed, bool) or
                                   not isinstance(seed, (int, np.integer)) or seed < 0):
            # (seed None: torch's draws from the global generator at each pass)
            raise ValueError(f"DataLoader: seed should be a non-negative integer, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        """The epoch number of the next pass (0 for the first), which picks its shuffle order."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch should be a non-negative integer, "
                             f"got {epoch!r}")
        self.epoch = int(epoch)
        for sampler in (self.sampler, self.batch_sampler,
                        getattr(self.batch_sampler, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        if self._iterable:
            try:
                n = len(self.dataset)
            except (TypeError, NotImplementedError):
                raise TypeError(f"DataLoader: the IterableDataset {type(self.dataset).__name__} "
                                "has no len()") from None
        else:
            n = len(self.dataset) if self.sampler is None else len(self.sampler)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        it = self._iter()
        if _recorder.session is not None:  # a profiler is open: each batch is a range
            it = _recorder.profile_iterator(it, self.num_workers)
        return it

    def _iter(self):
        # the epoch advances when the pass starts, not at its first batch
        epoch, self.epoch = self.epoch, self.epoch + 1
        draw = base_seed = None
        if self.seed is None:  # as torch: from the generator, or from the global one
            from ..backend import generator_of, torch_random

            gen = generator_of(self.generator, "cpu", "DataLoader")
            # each pass's iterator draws the workers' base seed as it starts (even with no
            # workers); persistent workers keep their iterator and draw it once
            if not (self.persistent_workers and self._pool is not None and not self._pool.closed):
                base_seed = int(torch_random.random_full(gen, 1, np.int64)[0])
            if self.shuffle and self.sampler is None and self.batch_sampler is None \
                    and not self._iterable:
                draw = self._torch_order  # drawn at the first batch, as torch's sampler does
        elif self.num_workers:
            base_seed = int(np.random.default_rng([self.seed, epoch, 1]).integers(0, 2**62))
        if self.num_workers:
            return self._worker_iter(epoch, base_seed, draw)
        if self.batch_sampler is None and self.batch_size is None:
            return self._samples(epoch, draw)
        if self._iterable:
            return self._stream()
        return (self._batch(idx) for idx in self._index_batches(epoch, draw))

    def _torch_order(self):
        """A pass of torch's RandomSampler: the generator's randperm (and the one more it draws
        when the pass runs out, the empty ``count % n`` leftover, so the next pass is torch's),
        or with no generator, the randperm of a generator of the pass's own seeded by an int64
        draw of the global one."""
        from .sampler import _rng_for_pass

        n = len(self.dataset)
        rng = _rng_for_pass(self.generator)
        order = rng.permutation(n)
        if self.generator is not None:
            rng.permutation(n)
        return order

    def _index_batches(self, epoch, draw=None):
        """The indices of each batch of epoch ``epoch`` (a map-style dataset); ``draw``: a
        function giving the order torch's sampler draws, called at the first batch."""
        if self.batch_sampler is not None:
            return (_indices(idx, "batch_sampler") for idx in self.batch_sampler)
        if draw is not None:
            return self._drawn_batches(draw)
        return self._split(self._order(epoch))

    def _drawn_batches(self, draw):
        yield from self._split(draw())

    def _split(self, order):
        if self.batch_size is None:  # unbatched: one index per "batch"
            return (order[i:i + 1] for i in range(len(order)))
        return self._batches(order)

    def _order(self, epoch):
        if self.sampler is not None:
            return _indices(iter(self.sampler), "sampler")
        n = len(self.dataset)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle \
            and self.seed is not None else np.arange(n)

    def _samples(self, epoch, draw=None):
        """batch_size=None: each sample alone, converted (or given to collate_fn)."""
        order = draw if draw is not None or self._iterable else self._order(epoch)
        return self._each_sample(order)

    def _each_sample(self, order):
        if callable(order):  # torch's order, drawn at the first sample
            order = order()
        samples = iter(self.dataset) if self._iterable else \
            (self.dataset[int(i)] for i in order)
        for sample in samples:
            if self.collate_fn is not None:
                yield self.collate_fn(sample)
            else:
                converted = default_convert(sample)
                yield converted if self.device in (None, "cpu") else \
                    _to_device(converted, self.device)

    def _batches(self, order):
        n = len(order)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            yield idx

    def _worker_iter(self, epoch, base_seed, draw=None):
        from ._workers import MultiProcessIter, WorkerPool

        if self.persistent_workers:
            if self._pool is None or self._pool.closed:
                self._pool = WorkerPool(self, base_seed)
            pool, own = self._pool, False
        else:
            pool, own = WorkerPool(self, base_seed), True
        batches = None if self._iterable else self._index_batches(epoch, draw)
        if self.collate_fn is not None:
            def convert(b):
                return b
        elif self.batch_size is None and self.batch_sampler is None:
            def convert(b):  # a sample the worker ran default_convert on
                return b if self.device in (None, "cpu") else _to_device(b, self.device)
        else:
            def convert(b):
                return _to_tensors(b, self.device)
        return MultiProcessIter(self, pool, epoch, batches, convert, own)

    def __del__(self):
        pool = self.__dict__.get("_pool")
        if pool is not None:
            pool.close()

    def __getstate__(self):  # the loader travels to spawned workers without its workers
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def _batch(self, idx):
        if self.collate_fn is not None:  # the caller's batching, returned as it is
            return self.collate_fn(fetch_samples(self.dataset, idx))
        if hasattr(self.dataset, "get_batch"):
            arrays = self.dataset.get_batch(idx)
        else:
            arrays = collate(fetch_samples(self.dataset, idx), idx)
        return _to_tensors(arrays, self.device)

    def _stream(self):
        """An IterableDataset's samples in the order they come, batch_size at a time."""
        samples = []
        for sample in self.dataset:
            samples.append(sample)
            if len(samples) == self.batch_size:
                yield self._collate_samples(samples)
                samples = []
        if samples and not self.drop_last:
            yield self._collate_samples(samples)

    def _collate_samples(self, samples):
        if self.collate_fn is not None:
            return self.collate_fn(samples)
        return _to_tensors(collate(samples), self.device)


