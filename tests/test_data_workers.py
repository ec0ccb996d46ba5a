"""DataLoader(num_workers=k): batches loaded in worker processes, as PyTorch's, and the same
batches in the same order as loading in this process."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import minidl
from minidl.data import (BatchSampler, DataLoader, Dataset, IterableDataset, SequentialSampler,
                         TensorDataset, get_worker_info)


class Numbers(Dataset):
    """Item i is (i as float32, the id of the worker that loaded it or -1, a string)."""

    def __init__(self, n=23):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        info = get_worker_info()
        return np.float32(i), (info.id if info is not None else -1), f"item{i}"


class Range(IterableDataset):
    """range(lo, hi), split between the workers as PyTorch's documentation does it."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def __iter__(self):
        info = get_worker_info()
        lo, hi = self.lo, self.hi
        if info is not None:
            per = -(-(hi - lo) // info.num_workers)
            lo = lo + info.id * per
            hi = min(lo + per, hi)
        return iter(range(lo, hi))


class Failing(Dataset):
    def __init__(self, how, at=5):
        self.how, self.at = how, at

    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == self.at:
            if self.how == "value":
                raise ValueError(f"item {i} is broken")
            if self.how == "key":
                raise KeyError("missing")
            if self.how == "exit":
                os._exit(3)
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "sleep":
                time.sleep(60)
        return np.float32(i)


class Pid(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return np.int64(os.getpid())


class Draws(Dataset):
    """Item i: a draw from minidl's generator, NumPy's global one and Python's random."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import random

        from minidl.backend import rng
        return np.array([rng().random(), np.random.random(), random.random()])


def _values(loader, field=None):
    out = []
    for batch in loader:
        b = batch if field is None else batch[field]
        out.append(b.numpy().tolist() if isinstance(b, minidl.Tensor) else b)
    return out


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("kwargs", [dict(batch_size=4, shuffle=True, seed=3),
                                    dict(batch_size=5, drop_last=True),
                                    dict(batch_size=4, sampler=SequentialSampler(range(23))),
                                    dict(batch_sampler=BatchSampler(range(23), 6, False))])
def test_workers_give_the_batches_of_one_process(workers, kwargs):
    ours = DataLoader(Numbers(), num_workers=workers, **kwargs)
    base = DataLoader(Numbers(), **kwargs)
    assert len(ours) == len(base)
    for epoch in range(2):  # the shuffle order moves on with the epoch in both
        a, b = list(ours), list(base)
        assert len(a) == len(b)
        for (xa, _, sa), (xb, _, sb) in zip(a, b):
            np.testing.assert_array_equal(xa.numpy(), xb.numpy(), err_msg=f"epoch {epoch}")
            assert sa == sb


def test_each_batch_is_loaded_by_one_worker_in_turn():
    ids = _values(DataLoader(Numbers(), batch_size=4, num_workers=2), 1)
    assert ids == [[0] * 4, [1] * 4, [0] * 4, [1] * 4, [0] * 4, [1] * 3]
    assert get_worker_info() is None  # in the main process
    assert _values(DataLoader(Numbers(8), batch_size=4), 1) == [[-1] * 4] * 2


def test_a_dataset_with_get_batch_is_batched_in_the_workers():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20)
    ours = list(DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True, seed=1, num_workers=2))
    base = list(DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True, seed=1))
    for (xa, ya), (xb, yb) in zip(ours, base, strict=True):
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        assert ya.dtype == yb.dtype


def test_collate_fn_runs_in_the_workers_and_its_result_comes_as_it_is():
    def pair_sums(samples):
        return minidl.tensor([float(s[0]) for s in samples]).sum(), [s[2] for s in samples]

    out = list(DataLoader(Numbers(10), batch_size=4, num_workers=2, collate_fn=pair_sums))
    assert [float(t) for t, _ in out] == [6.0, 22.0, 17.0]
    assert out[2][1] == ["item8", "item9"]


@pytest.mark.parametrize("batch_size, drop_last", [(3, False), (3, True), (4, False)])
def test_iterable_dataset_batches_come_round_robin_as_in_pytorch(batch_size, drop_last):
    torch = pytest.importorskip("torch", reason="the reference order is torch's DataLoader")

    class TorchRange(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            per = -(-(11 - 0) // info.num_workers)
            lo = info.id * per
            return iter(range(lo, min(lo + per, 11)))

    ours = _values(DataLoader(Range(0, 11), batch_size=batch_size, num_workers=2,
                              drop_last=drop_last))
    theirs = [b.tolist() for b in torch.utils.data.DataLoader(
        TorchRange(), batch_size=batch_size, num_workers=2, drop_last=drop_last)]
    assert ours == theirs and ours  # e.g. [[0, 1, 2], [6, 7, 8], [3, 4, 5], [9, 10]]
    again = _values(DataLoader(Range(0, 11), batch_size=batch_size, num_workers=2,
                               drop_last=drop_last, persistent_workers=True))
    assert again == theirs


def test_workers_are_seeded_apart_and_the_same_from_run_to_run():
    def draws(seed):
        return np.concatenate([b.numpy() for b in DataLoader(Draws(), batch_size=2, num_workers=2,
                                                             seed=seed)])
    a, b, c = draws(7), draws(7), draws(8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for column in range(3):  # worker 0 made rows 0-1 and 4-5, worker 1 rows 2-3 and 6-7
        assert a[0, column] != a[2, column]


def test_worker_init_fn_runs_in_each_worker_with_its_id():
    seen = []

    def init(worker_id):
        info = get_worker_info()
        assert info.id == worker_id and info.num_workers == 3
        assert type(info.dataset).__name__ == "InitSeed"
        seen.append(worker_id)
        np.random.seed(1000 + worker_id)  # what such a function is used for

    class InitSeed(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return np.random.randint(0, 2**31)

    out = _values(DataLoader(InitSeed(), batch_size=2, num_workers=3, worker_init_fn=init))
    expected = [np.random.RandomState(1000 + w).randint(0, 2**31, size=2).tolist()
                for w in range(3)]
    assert out == expected
    assert seen == []  # the function ran in the workers, not here


@pytest.mark.parametrize("how, kind, words", [
    ("value", ValueError, "item 5 is broken"),
    ("key", KeyError, "missing"),
])
def test_an_error_in_a_worker_is_raised_here_with_its_traceback(how, kind, words):
    loader = DataLoader(Failing(how), batch_size=2, num_workers=2)
    with pytest.raises(kind) as info:
        list(loader)
    text = str(info.value)
    assert "DataLoader worker process 0" in text and words in text
    assert "__getitem__" in text  # the worker's traceback


@pytest.mark.parametrize("how, words", [("exit", "exit code 3"), ("kill", "signal 9")])
def test_a_worker_that_dies_is_named(how, words):
    loader = DataLoader(Failing(how), batch_size=2, num_workers=2)
    with pytest.raises(RuntimeError, match=f"DataLoader worker 0 .*exited unexpectedly.*{words}"):
        list(loader)


def test_timeout_bounds_the_wait_for_a_batch():
    loader = DataLoader(Failing("sleep", at=0), batch_size=2, num_workers=1, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out after 0.5 seconds"):
        next(iter(loader))
    assert time.monotonic() - start < 30  # the stuck worker was stopped, not waited for


def test_an_error_in_worker_init_fn_is_raised_at_the_first_batch():
    def init(worker_id):
        raise RuntimeError(f"no config for worker {worker_id}")

    with pytest.raises(RuntimeError, match="no config for worker"):
        list(DataLoader(Numbers(4), batch_size=2, num_workers=1, worker_init_fn=init))


def test_persistent_workers_serve_every_epoch_and_survive_a_broken_pass():
    loader = DataLoader(Pid(), batch_size=2, num_workers=2, persistent_workers=True)
    first = {int(p) for b in loader for p in b.numpy()}
    it = iter(loader)
    next(it)
    del it  # a pass left after one batch
    pools = loader._pool.processes
    second = {int(p) for b in loader for p in b.numpy()}
    assert first == second == {p.pid for p in pools} and os.getpid() not in first
    assert len(list(loader)) == 4
    numbers = DataLoader(Numbers(), batch_size=4, num_workers=2, persistent_workers=True)
    it = iter(numbers)
    next(it), next(it), next(it)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in numbers]), np.arange(23))


def test_workers_of_a_pass_are_gone_when_it_ends():
    from minidl.data import _workers

    made = []
    original = _workers.WorkerPool.__init__

    def spy(self, loader, base_seed):
        original(self, loader, base_seed)
        made.append(self)

    try:
        _workers.WorkerPool.__init__ = spy
        list(DataLoader(Numbers(8), batch_size=4, num_workers=2))
        it = iter(DataLoader(Numbers(8), batch_size=4, num_workers=2))
        next(it)
        del it
    finally:
        _workers.WorkerPool.__init__ = original
    assert len(made) == 2
    for pool in made:
        assert pool.closed and not any(p.is_alive() for p in pool.processes)


def test_in_order_false_gives_every_batch():
    out = _values(DataLoader(Numbers(), batch_size=4, num_workers=3, in_order=False), 0)
    assert sorted(v for batch in out for v in batch) == list(range(23))


def test_spawned_workers_load_the_same_batches():
    loader = DataLoader(Numbers(10), batch_size=4, num_workers=2,
                        multiprocessing_context="spawn")
    assert _values(loader, 0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("kwargs, words", [
    (dict(prefetch_factor=2), "prefetch_factor option could only be specified"),
    (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
    (dict(num_workers=1, timeout=-1), "timeout option should be non-negative"),
    (dict(num_workers=1, prefetch_factor=0), "prefetch_factor should be a positive integer"),
    (dict(multiprocessing_context="spawn"), "num_workers > 0"),
    (dict(num_workers=1, multiprocessing_context="threads"), "valid start method"),
    (dict(num_workers=-1), "num_workers should be a non-negative integer"),
])
def test_bad_worker_options_are_refused_as_in_pytorch(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DataLoader(Numbers(), **kwargs)


def test_worker_init_fn_must_be_callable():
    with pytest.raises(TypeError, match="worker_init_fn must be callable"):
        DataLoader(Numbers(), num_workers=1, worker_init_fn=3)


def test_unbatched_loading_in_workers_gives_the_samples_of_one_process():
    """batch_size=None: each sample alone, converted by default_convert, in workers too."""
    kwargs = dict(batch_size=None, shuffle=True, seed=4)
    ours = list(DataLoader(Numbers(9), num_workers=2, **kwargs))
    base = list(DataLoader(Numbers(9), **kwargs))
    assert len(ours) == len(base) == 9
    for a, b in zip(ours, base):
        assert type(a) is type(b)
        np.testing.assert_array_equal(np.asarray(a[0].numpy()), np.asarray(b[0].numpy()))
        assert a[2] == b[2]
    stream = [int(x) for x in DataLoader(Range(0, 7), batch_size=None, num_workers=2)]
    assert sorted(stream) == list(range(7)) and stream[:2] == [0, 4]  # round-robin


class Slow(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        time.sleep(0.3)
        return np.float32(i)


def test_leaving_a_pass_early_does_not_wait_for_the_requests_queued_ahead():
    """A break after the first batch: the workers stop after the item in hand instead of
    loading the prefetched batches nobody will read (8 items of 0.3 s each here)."""
    loader = DataLoader(Slow(), batch_size=4, num_workers=2, prefetch_factor=4)
    it = iter(loader)
    next(it)
    start = time.monotonic()
    del it
    assert time.monotonic() - start < 5  # the 16 queued batches would take 9.6 s per worker


# ---- large arrays through shared memory -----------------------------------------------------
class _Images(Dataset):
    """Image-sized samples (3x64x64 float32: 48 KB each, so a batch of 4 is past the 64 KB
    from which arrays travel through /dev/shm) with a label and a dict field."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        image = np.random.default_rng(i).standard_normal((3, 64, 64)).astype(np.float32)
        return image, i, {"mask": image > 0}


def _our_files():
    import glob

    return glob.glob(f"/dev/shm/minidl-loader-{os.getpid()}-*")


@pytest.mark.skipif(not os.access("/dev/shm", os.W_OK), reason="no writable /dev/shm here: "
                    "batches then go through the queue, which the other tests cover")
def test_large_arrays_come_through_shared_memory_and_leave_no_files():
    import mmap

    from minidl.data import _workers

    want = list(DataLoader(_Images(), batch_size=4))
    got = list(DataLoader(_Images(), batch_size=4, num_workers=2))
    assert len(got) == len(want) == 3
    for (gi, gl, gd), (wi, wl, wd) in zip(got, want):
        np.testing.assert_array_equal(gi.numpy(), wi.numpy())
        np.testing.assert_array_equal(gl.numpy(), wl.numpy())
        np.testing.assert_array_equal(gd["mask"].numpy(), wd["mask"].numpy())
    assert _our_files() == []
    # the worker side: a big array becomes a handle, a small one stays; the handle maps back
    # (writable, on the file's memory) and the file's name is gone once mapped
    prefix = _workers.shared_memory_prefix(object()) + "t-"
    counter = iter(range(100))
    big, small = np.arange(20000, dtype=np.float64).reshape(100, 200), np.arange(3)
    shared = _workers._share({"a": (big, small), "b": [big.T]}, prefix, counter)
    assert type(shared["a"][0]) is _workers._SharedArray and shared["a"][1] is small
    back = _workers.unshare(shared)
    owner = back["a"][0]
    while isinstance(owner, (np.ndarray, memoryview)):
        owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
    assert isinstance(owner, mmap.mmap) and back["a"][0].flags.writeable
    np.testing.assert_array_equal(back["a"][0], big)
    np.testing.assert_array_equal(back["b"][0], big.T)
    assert _our_files() == [] and not any(p.startswith(prefix) for p in
                                          os.listdir("/dev/shm"))


@pytest.mark.skipif(not os.access("/dev/shm", os.W_OK), reason="no writable /dev/shm here")
def test_files_of_a_loader_whose_process_is_gone_are_removed():
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = f"/dev/shm/minidl-loader-{dead}-abc-0-0"
    open(orphan, "wb").close()
    list(DataLoader(_Images(), batch_size=4, num_workers=1))
    assert not os.path.exists(orphan)


def test_batches_left_behind_by_an_early_exit_or_an_error_leave_no_files():
    loader = DataLoader(_Images(), batch_size=2, num_workers=2, prefetch_factor=2)
    for _ in loader:
        break  # the other requested batches are abandoned
    import gc

    gc.collect()
    deadline = time.monotonic() + 10
    while _our_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _our_files() == []
