"""DataLoader worker processes (``num_workers > 0``), as PyTorch's.

Each worker is a process that holds the dataset (inherited by fork, or pickled under spawn and
forkserver), is seeded with ``base_seed + worker_id`` (minidl's generator, Python's ``random``
and NumPy's legacy global one, so random transforms differ between workers and repeat between
runs), runs ``worker_init_fn(worker_id)`` and then answers requests from the main process:

- map-style datasets: ``("map", epoch, task, indices)``, answered with the collated batch
  (``dataset.get_batch(indices)`` where the dataset has one, else the samples collated);
- an IterableDataset: ``("next", epoch, task)``, answered with the next batch of the worker's
  own copy of the stream (``get_worker_info()`` lets the dataset read only its share) or, once
  the stream ends, with ``_Exhausted``; ``("reset", epoch)`` starts a new pass.

Batches come back through one result queue as ``(epoch, task, batch)``. Arrays of 64 KB and more
in a batch travel as files in /dev/shm (``_SharedArray``: one copy in the worker, none in the
main process, which maps the file and removes its name), as PyTorch's tensors travel in shared
memory; a 16-image batch at 224x224 is 9.6 MB, which the queue's pickling and pipe copied
several times. The main process puts
them back in task order (``in_order=True``), turns arrays into Tensors on the loader's device,
and keeps ``prefetch_factor`` requests per worker outstanding. An exception in a worker comes
back as ``_WorkerError`` and is raised in the main process with the worker's id and traceback,
as the same type where that type can be rebuilt from a message. A worker that dies (killed, out
of memory) is noticed within a second and named in a RuntimeError; ``timeout`` > 0 bounds the
wait for any one batch. Workers are daemonic: they never outlive the main process.
"""
from __future__ import annotations

import collections
import itertools
import os
import queue
import random
import signal
import time
import traceback

import numpy as np

from .collate import collate, default_convert
from .dataset import fetch_samples

_worker_info = None  # set in a worker process only
_POLL = 1.0  # seconds between checks that the workers are alive


class WorkerInfo:
    """What ``get_worker_info()`` tells code running in a DataLoader worker: ``id`` (0 to
    num_workers - 1), ``num_workers``, ``seed`` (this worker's) and ``dataset`` (its copy)."""

    def __init__(self, id, num_workers, seed, dataset):
        self.id, self.num_workers, self.seed, self.dataset = id, num_workers, seed, dataset

    def __repr__(self):
        return (f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed}, "
                f"dataset={type(self.dataset).__name__})")


def get_worker_info():
    """In a DataLoader worker process, its ``WorkerInfo``; in the main process (or with
    ``num_workers=0``) None. An IterableDataset uses it to read only its worker's share."""
    return _worker_info


# ---- arrays through shared memory --------------------------------------------------------------
_SHM_DIR = "/dev/shm"
_SHM_MIN = 1 << 16  # arrays from this many bytes go through a shared-memory file


def shared_memory_prefix(owner):
    """The file-name prefix of one worker pool's shared arrays (None where /dev/shm cannot be
    used: the arrays are then pickled through the queue)."""
    if not (os.path.isdir(_SHM_DIR) and os.access(_SHM_DIR, os.W_OK)):
        return None
    _remove_orphans()
    return os.path.join(_SHM_DIR, f"minidl-loader-{os.getpid()}-{id(owner):x}-")


def _remove_orphans():
    """Remove the shared-memory files of loaders whose process is gone (killed before its
    workers were closed): the file names carry the owning process's id."""
    import glob

    for path in glob.glob(os.path.join(_SHM_DIR, "minidl-loader-*")):
        try:
            pid = int(os.path.basename(path).split("-")[2])
            os.kill(pid, 0)  # raises if no such process
        except ProcessLookupError:
            try:
                os.unlink(path)
            except OSError:
                pass
        except (ValueError, IndexError, PermissionError):  # not ours, or another user's
            continue


class _SharedArray:
    """An array a worker wrote to a shared-memory file: its path, shape and dtype."""

    __slots__ = ("path", "shape", "dtype")

    def __init__(self, path, shape, dtype):
        self.path, self.shape, self.dtype = path, shape, dtype

    def attach(self):
        """The array, mapped from the file (writable, no copy); the file's name is removed, so
        the memory goes back when the array does."""
        import mmap

        size = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        fd = os.open(self.path, os.O_RDWR)
        try:
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
            os.unlink(self.path)
        return np.frombuffer(mapped, dtype=self.dtype).reshape(self.shape)

    def release(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _write_shared(array, path):
    array = np.ascontiguousarray(array)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(array.reshape(-1).view(np.uint8))
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return _SharedArray(path, array.shape, array.dtype)


def _map_leaves(obj, fn):
    """obj with fn applied to each value that is not a dict, list or tuple (namedtuples kept):
    the containers a collated batch is made of."""
    if type(obj) is dict:
        return {k: _map_leaves(v, fn) for k, v in obj.items()}
    if type(obj) is list:
        return [_map_leaves(v, fn) for v in obj]
    if type(obj) is tuple or (isinstance(obj, tuple) and hasattr(obj, "_fields")):
        items = [_map_leaves(v, fn) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return fn(obj)


def _share(obj, prefix, counter):
    """obj with its large arrays written to shared-memory files and replaced by
    ``_SharedArray`` handles; everything else as it is."""
    def leaf(v):
        if type(v) is not np.ndarray or v.nbytes < _SHM_MIN or v.dtype.hasobject:
            return v
        return _write_shared(v, f"{prefix}{next(counter)}")
    return _map_leaves(obj, leaf)


def _walk_shared(obj, fn):
    """obj with fn applied to each ``_SharedArray`` in it."""
    return _map_leaves(obj, lambda v: fn(v) if type(v) is _SharedArray else v)


def unshare(batch):
    """A received batch with its shared arrays mapped in."""
    return _walk_shared(batch, _SharedArray.attach)


def release(batch):
    """Remove the shared-memory files of a batch that will not be used."""
    _walk_shared(batch, _SharedArray.release)


class _Exhausted:
    """A worker's answer once its copy of an IterableDataset has no more batches."""


class _WorkerError:
    """An exception raised in a worker, carried to the main process (the exception object
    itself may not pickle, so its type, message and formatted traceback travel instead)."""

    def __init__(self, worker_id, exc):
        self.worker_id = worker_id
        self.exc_type = type(exc)
        self.message = str(exc)
        self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def reraise(self):
        text = (f"Caught {self.exc_type.__name__} in DataLoader worker process "
                f"{self.worker_id}.\nOriginal {self.traceback}")
        if self.exc_type is KeyError:  # KeyError's str() is its argument's repr: keep it readable
            text = _PlainMessage(text)
        try:
            err = self.exc_type(text)
        except Exception:  # a type that takes other arguments
            err = RuntimeError(text)
        raise err


class _PlainMessage(str):
    def __repr__(self):
        return str(self)


def _seed_worker(seed):
    from ..backend import manual_seed

    manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _fetch_map(dataset, indices, collate_fn, batch_size):
    if batch_size is None:  # unbatched (DataLoader(batch_size=None)): one sample, converted
        sample = dataset[int(indices[0])]
        return collate_fn(sample) if collate_fn is not None else default_convert(sample)
    if collate_fn is not None:
        return collate_fn(fetch_samples(dataset, indices))
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(np.asarray(indices, dtype=np.int64))
    return collate(fetch_samples(dataset, indices), indices)


def _next_stream_batch(iterator, batch_size, drop_last, collate_fn):
    if batch_size is None:
        for sample in iterator:
            return collate_fn(sample) if collate_fn is not None else default_convert(sample)
        return _Exhausted
    samples = list(itertools.islice(iterator, batch_size))
    if not samples or (drop_last and len(samples) < batch_size):
        return _Exhausted
    return collate_fn(samples) if collate_fn is not None else collate(samples)


def _worker_loop(dataset, worker_id, num_workers, seed, worker_init_fn, collate_fn, batch_size,
                 drop_last, index_queue, result_queue, done, shm_prefix=None):
    """The body of a worker process (see the module docstring for the messages)."""
    global _worker_info
    counter = itertools.count()
    shm_prefix = None if shm_prefix is None else f"{shm_prefix}{worker_id}-"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    try:
        _seed_worker(seed)
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
    except Exception as exc:  # reported on the first request, as PyTorch does
        init_error = _WorkerError(worker_id, exc)
    else:
        init_error = None
    stream = None
    while True:
        try:
            message = index_queue.get(timeout=_POLL)
        except queue.Empty:
            if os.getppid() == 1:  # the main process is gone (its daemon clean-up did not run)
                return
            continue
        if message is None or done.is_set():  # closing: the requests still queued are dropped
            return
        kind, epoch = message[0], message[1]
        if kind == "reset":
            stream = None
            continue
        task = message[2]
        try:
            if init_error is not None:
                batch = init_error
            elif kind == "map":
                batch = _fetch_map(dataset, message[3], collate_fn, batch_size)
            else:
                if stream is None:
                    stream = iter(dataset)
                batch = _next_stream_batch(stream, batch_size, drop_last, collate_fn)
        except Exception as exc:
            batch = _WorkerError(worker_id, exc)
        if shm_prefix is not None and not isinstance(batch, _WorkerError) and batch is not _Exhausted:
            try:
                batch = _share(batch, shm_prefix, counter)
            except OSError:  # /dev/shm full: this batch goes through the queue
                pass
        result_queue.put((epoch, task, batch))


class WorkerPool:
    """The worker processes of one DataLoader, their request queues and the result queue.
    Persistent workers keep one pool for every epoch; otherwise each pass makes its own."""

    def __init__(self, loader, base_seed):
        import multiprocessing as mp

        context = loader.multiprocessing_context
        if context is None or isinstance(context, str):
            context = mp.get_context(context)
        self.num_workers = loader.num_workers
        self.result_queue = context.Queue()
        self.done = context.Event()  # set on close: workers stop after the item in hand
        self.index_queues, self.processes = [], []
        # None: unbatched (batch_size=None); a batch_sampler's batches come as index lists
        unbatched = loader.batch_size is None and loader.batch_sampler is None
        batch_size = None if unbatched else (loader.batch_size or 0)
        self.shm_prefix = shared_memory_prefix(self)
        for worker_id in range(self.num_workers):
            index_queue = context.Queue()
            process = context.Process(
                target=_worker_loop, daemon=True,
                args=(loader.dataset, worker_id, self.num_workers, base_seed + worker_id,
                      loader.worker_init_fn, loader.collate_fn, batch_size,
                      loader.drop_last, index_queue, self.result_queue, self.done,
                      self.shm_prefix))
            process.start()
            self.index_queues.append(index_queue)
            self.processes.append(process)
        self.closed = False

    def check_alive(self):
        for worker_id, process in enumerate(self.processes):
            if not process.is_alive():
                code = process.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                self.close(force=True)
                raise RuntimeError(f"DataLoader worker {worker_id} (pid {process.pid}) exited "
                                   f"unexpectedly ({how}); if it was killed for memory, lower "
                                   "num_workers or batch_size")

    def close(self, force=False):
        """Stop the workers: asked to finish (``force``: terminated, for a pass that failed or
        timed out, whose workers may be stuck in the dataset)."""
        if self.closed:
            return
        self.closed = True
        self.done.set()
        for index_queue in self.index_queues:
            try:
                index_queue.put(None)
            except (OSError, ValueError):
                pass
        for process in self.processes:
            if force and process.is_alive():
                process.terminate()
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=1)
        for q in [*self.index_queues, self.result_queue]:
            q.cancel_join_thread()
            q.close()
        if self.shm_prefix is not None:
            # the files of batches still queued (a queue a worker may have left mid-message
            # cannot be read safely) or of a worker that died mid-write: the workers are gone
            import glob

            for path in glob.glob(self.shm_prefix + "*"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class MultiProcessIter:
    """One pass over a DataLoader whose batches come from worker processes."""

    def __init__(self, loader, pool, epoch, index_batches, convert, own_pool):
        self.loader, self.pool, self.epoch = loader, pool, epoch
        self.convert, self.own_pool = convert, own_pool
        self.stream = index_batches is None  # an IterableDataset: workers make the batches
        self.tasks = iter(index_batches) if not self.stream else None
        self.next_task = 0
        self.pending = collections.OrderedDict()  # task -> worker, in the order handed out
        self.ready = {}  # task -> batch received
        self.active = list(range(pool.num_workers))  # workers whose stream has not ended
        self.turn = 0
        self.done = False
        if self.stream:
            for q in pool.index_queues:
                q.put(("reset", epoch))
        for _ in range(loader.prefetch_factor * pool.num_workers):
            if not self._request():
                break

    def __iter__(self):
        return self

    def __len__(self):
        return len(self.loader)

    def _request(self):
        """Hand the next task to the next worker in turn; False when there is none."""
        if not self.active:
            return False
        worker = self.active[self.turn % len(self.active)]
        self.turn += 1
        if self.stream:
            message = ("next", self.epoch, self.next_task)
        else:
            indices = next(self.tasks, None)
            if indices is None:
                return False
            message = ("map", self.epoch, self.next_task, np.asarray(indices, dtype=np.int64))
        self.pool.index_queues[worker].put(message)
        self.pending[self.next_task] = worker
        self.next_task += 1
        return True

    def _receive(self):
        """Wait for one result of this pass into ``ready``."""
        timeout = self.loader.timeout
        start = time.monotonic()
        while True:
            wait = _POLL if timeout <= 0 else \
                min(_POLL, max(timeout - (time.monotonic() - start), 0.001))
            try:
                epoch, task, batch = self.pool.result_queue.get(timeout=wait)
            except queue.Empty:
                try:
                    self.pool.check_alive()
                except RuntimeError:
                    self._finish(force=True)
                    raise
                if 0 < timeout <= time.monotonic() - start:
                    self._finish(force=True)
                    raise RuntimeError(f"DataLoader timed out after {timeout} seconds") from None
                continue
            if epoch == self.epoch and task in self.pending:
                self.ready[task] = batch
                return
            release(batch)  # an abandoned pass's

    def __next__(self):
        while not self.done and self.pending:
            if self.loader.in_order:
                task = next(iter(self.pending))
                while task not in self.ready:
                    self._receive()
            else:
                if not self.ready:
                    self._receive()
                task = next(iter(self.ready))
            batch = self.ready.pop(task)
            worker = self.pending.pop(task)
            if batch is _Exhausted:  # this worker's stream has ended; the others go on
                if worker in self.active:
                    self.active.remove(worker)
                self._request()
                continue
            if isinstance(batch, _WorkerError):
                self._finish(force=True)
                batch.reraise()
            self._request()
            return self.convert(unshare(batch))
        self._finish()
        raise StopIteration

    def _finish(self, force=False):
        if self.done:
            return
        self.done = True
        for batch in self.ready.values():  # received, never handed out
            release(batch)
        self.ready.clear()
        if self.own_pool:
            self.pool.close(force)
        elif force:  # persistent workers that failed: the next pass starts new ones
            self.pool.close(force)

    def __del__(self):
        try:
            self._finish()
        except Exception:
            pass
