"""minidl.distributed, DistributedDataParallel and DistributedSampler.

The multi-process tests start ``mpiexec -n 2`` (the mpiexec of this interpreter's environment,
as the mpich wheel installs it, else the one on PATH), each bounded by a timeout; they skip
only where mpi4py or mpiexec is missing (`pip install minidl[distributed]` brings both).
The rest runs in this process, without MPI.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minidl
import minidl.distributed as dist
import minidl.nn as nn
from minidl.data import DataLoader, DistributedSampler, TensorDataset
from minidl.nn.parallel import DistributedDataParallel

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "_dist_worker.py"
sys.path.insert(0, str(REPO / "tests"))
import _dist_worker as worker  # noqa: E402


def find_mpiexec():
    """The mpiexec beside this interpreter (a venv's bin, where the mpich wheel puts it), else
    the one on PATH; None if there is none."""
    here = Path(sys.executable).parent / "mpiexec"  # not resolved: a venv's python is a link
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec")


def mpiexec_command(n, mpiexec):
    """``mpiexec -n n``, plus what Open MPI needs to run as root or with more ranks than cores."""
    cmd = [mpiexec, "-n", str(n)]
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, check=False,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" in version or "OpenRTE" in version:
        cmd[1:1] = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return cmd


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(
    not dist.is_available() or MPIEXEC is None,
    reason="needs mpi4py and an mpiexec (pip install 'minidl[distributed]': mpi4py and the "
           "mpich wheel)")


def run_mpi(args, n=2, timeout=120, cwd=None, threads=1):
    """Run ``python args...`` on n ranks; the whole process group is killed at the timeout so
    no rank outlives the test. Returns (returncode, stdout, stderr, seconds)."""
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    for key in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if threads:
            env[key] = str(threads)
        else:  # minidl.distributed picks the count: the node's cores shared between the ranks
            env.pop(key, None)
    cmd = mpiexec_command(n, MPIEXEC) + [sys.executable] + [str(a) for a in args]
    with _one_job_at_a_time():
        start = time.monotonic()
        before = _mpich_segments()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=cwd or REPO, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # where was each rank? SIGABRT makes Python's faulthandler (PYTHONFAULTHANDLER, set
            # above) print every thread's stack on the rank's stderr, which mpiexec passes on
            for pid in _descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGABRT)
                except OSError:
                    pass
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            try:  # a rank that outlived mpiexec
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            pytest.fail(f"mpiexec did not finish within {timeout} s:\n{out}\n{err}")
        finally:
            # MPICH's shared-memory segments of a job whose rank was killed stay in /dev/shm
            # (2 MB each, one per such run): the job is over, so what it left there goes. No
            # other test's job runs meanwhile (the lock), so none of its live segments goes too.
            for path in _mpich_segments() - before:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        return proc.returncode, out, err, time.monotonic() - start


@contextlib.contextmanager
def _one_job_at_a_time():
    """Hold a lock, shared by every pytest process on this machine (the suite runs in parallel
    workers), while an mpiexec job runs. Two jobs at once would take each other's cores, and
    each one's clean-up of /dev/shm could take a segment the other is still attaching to (the
    likely cause of a CI run's job that reached its timeout with nothing printed)."""
    import fcntl
    import tempfile

    lock = Path(tempfile.gettempdir()) / "minidl-tests-mpiexec.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _descendants(pid):
    """The Python processes below ``pid`` (mpiexec's ranks, under its proxy)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                if "python" in os.readlink(f"/proc/{child}/exe"):
                    found.append(child)
            except OSError:
                pass
    return found


def _mpich_segments():
    import glob

    return set(glob.glob("/dev/shm/mpich_shm_*"))


@pytest.fixture(scope="module")
def collectives(tmp_path_factory):
    out = tmp_path_factory.mktemp("collectives")
    rc, so, se, _ = run_mpi([WORKER, "collectives", out], threads=None)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return [json.loads((out / f"collectives.rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    rc, so, se, _ = run_mpi([WORKER, "train", out])
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return out, [json.loads((out / f"train.rank{r}.json").read_text()) for r in range(2)]


# ---- collectives on 2 ranks ---------------------------------------------------------------------
@needs_mpi
def test_all_reduce_values(collectives):
    for r in collectives:
        assert r["world"] == 2 and r["backend"] == "mpi"
        assert r["sum"] == [[10.0, 12.0, 14.0], [16.0, 18.0, 20.0]]  # (a) + (a + 10)
        assert r["avg_tensor"] == [1.5] * 4
        assert r["max_int"] == [1, 0] and r["min_int"] == [1, 0]
        assert r["half"] == [1.5] * 3
        # only the strided column was reduced, in place; the rest is this rank's own
        own = float(r["rank"] + 1)
        assert r["strided"] == [[own, 3.0, own, own]] * 3


@needs_mpi
def test_ranks_share_the_cores(collectives):
    """Without a thread count from the user, each of the 2 ranks on this node takes its share
    of the cores (or the one core the launcher bound it to), not all of them."""
    cores = os.cpu_count() or 1
    for r in collectives:
        assert 1 <= r["threads"] <= max(1, cores // 2)


@needs_mpi
def test_broadcast_and_all_gather_values(collectives):
    for r in collectives:
        assert r["broadcast"] == [1.0] * 5  # from the last rank
        assert r["all_gather"] == [[0.0, 0.0], [1.0, 10.0]]
        assert "rank 2 is out of range for world size 2" in r["bad_src"]


@needs_mpi
def test_distributed_sampler_covers_every_index_once_per_epoch(collectives):
    r0, r1 = collectives
    assert r0["sampler_epochs"] == r1["sampler_epochs"]
    assert r0["sampler_len"] == 6  # ceil(11 / 2): one index is repeated to even the shards
    orders = []
    for shards in r0["sampler_epochs"]:
        assert [len(s) for s in shards] == [6, 6]
        both = shards[0] + shards[1]
        assert sorted(set(both)) == list(range(11))  # every index, and 12 - 11 = 1 repeat
        orders.append(both)
    assert orders[0] != orders[1]  # set_epoch reshuffles


# ---- DistributedDataParallel on 2 ranks ---------------------------------------------------------
@needs_mpi
def test_ddp_two_ranks_match_one_process_with_twice_the_batch(trained):
    """2 ranks x batch 32, different initial weights on each rank, 20 SGD+momentum steps ==
    1 process x batch 64 on the same samples."""
    out, results = trained
    ref = worker.train_reference(world=2)
    for rank in range(2):
        got = np.load(out / f"train.rank{rank}.npz")
        assert sorted(got.files) == sorted(ref)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-5, err_msg=f"rank {rank} {k}")
    assert results[0]["buckets_after_first_sync"] > 1  # the tiny bucket cap split the gradients
    assert all(r["passes_through"] for r in results)  # .module, parameters(), eval()


@needs_mpi
def test_ddp_no_sync_accumulates_locally_then_averages(trained):
    out, results = trained
    assert results[0]["no_sync_local_differs"]  # inside no_sync no averaging happened
    ref = worker.no_sync_reference(world=2)
    for rank in range(2):
        got = np.load(out / f"nosync.rank{rank}.npz")
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-6, err_msg=k)


@needs_mpi
def test_ddp_refuses_parameters_whose_shapes_differ_between_ranks(trained):
    _, results = trained
    for r in results:  # every rank raised, so none hangs waiting for the others
        assert r["mismatch"] is not None
        assert "'2.weight'" in r["mismatch"] and "(3, 16)" in r["mismatch"]
        assert "(4, 16)" in r["mismatch"] and "rank 1" in r["mismatch"]


# ---- failure ------------------------------------------------------------------------------------
@needs_mpi
def test_a_failing_rank_aborts_the_job_within_seconds(tmp_path):
    rc, _, se, seconds = run_mpi([WORKER, "crash", tmp_path], timeout=60)
    assert rc != 0
    assert "rank 1 of 2 failed" in se and "ZeroDivisionError: rank 1 fails on purpose" in se
    assert not list(tmp_path.glob("crash.rank*.json"))  # rank 0 never got past its all_reduce
    assert seconds < 30, f"took {seconds:.1f} s"


@needs_mpi
def test_a_rank_that_exits_mid_run_ends_the_job(tmp_path):
    """sys.exit(3) on rank 1 raises no exception (no excepthook); rank 0, waiting in a
    collective, learns that rank 1 left and aborts instead of waiting for the timeout."""
    rc, _, se, seconds = run_mpi([WORKER, "exit", tmp_path], timeout=60)
    assert rc != 0
    assert "rank 1 left the job while this rank waited in all_reduce" in se
    assert not list(tmp_path.glob("exit.rank*.json"))
    assert seconds < 30, f"took {seconds:.1f} s"


# ---- the MNIST example under mpiexec -------------------------------------------------------------
def write_idx(path, array):
    dims = array.shape
    header = (0x800 | len(dims)).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@needs_mpi
def test_mnist_example_data_parallel(tmp_path):
    from minidl.datasets import mnist as mnist_module

    sample = np.load(mnist_module.SAMPLE_PATH)
    data = tmp_path / "mnist"
    data.mkdir()
    write_idx(data / "train-images-idx3-ubyte", sample["train_images"][:640])
    write_idx(data / "train-labels-idx1-ubyte", sample["train_labels"][:640])
    write_idx(data / "t10k-images-idx3-ubyte", sample["test_images"][:301])  # shards 150, 151
    write_idx(data / "t10k-labels-idx1-ubyte", sample["test_labels"][:301])
    ckpt, metrics = tmp_path / "ck.npz", tmp_path / "m.json"
    rc, so, se, _ = run_mpi(["-m", "minidl.examples.mnist", "--model", "mlp", "--epochs", "2",
                             "--data", data, "--no-progress", "--save", ckpt,
                             "--metrics-json", metrics], timeout=180)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    lines = so.strip().splitlines()
    # only rank 0 prints: each line once
    assert sum("test accuracy:" in line for line in lines) == 1, so
    assert any("data-parallel over 2 ranks (mpi): effective batch 128 (2 x 64), lr 0.1 "
               "(0.05 x 2 ranks" in line for line in lines), so
    m = json.loads(metrics.read_text())
    assert m["world_size"] == 2 and m["effective_batch_size"] == 128 and m["lr"] == 0.1
    # evaluation combined both ranks' counts: the accuracy is a multiple of 1/301
    final = float([line for line in lines if line.startswith("test accuracy:")][-1].split()[2])
    assert abs(final * 301 - round(final * 301)) < 0.02 and final == round(m["test_accuracy"], 4)
    assert minidl.load(ckpt)["epoch"] == 2


# ---- in this process: no MPI needed --------------------------------------------------------------
def test_collectives_before_init_raise_runtime_error():
    assert not dist.is_initialized()
    x = np.ones(3, dtype=np.float32)
    for call in (lambda: dist.all_reduce(x), lambda: dist.broadcast(x, 0),
                 lambda: dist.all_gather([x, x], x), dist.barrier, dist.get_rank,
                 dist.get_world_size, dist.destroy_process_group):
        with pytest.raises(RuntimeError, match="init_process_group"):
            call()
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedDataParallel(nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(TensorDataset(np.arange(4)))


def test_init_process_group_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'ucc'"):
        dist.init_process_group(backend="ucc")
    with pytest.raises(ValueError, match="unknown backend 'xla'"):
        dist.init_process_group(backend="cpu:gloo,cuda:xla")
    with pytest.raises(ValueError, match="init_method 'tcp://10.0.0.1:23456' is not supported"):
        dist.init_process_group(backend="gloo", init_method="tcp://10.0.0.1:23456")
    assert not dist.is_initialized()


def test_launched_world_size_reads_the_launchers_environment(monkeypatch):
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE",
                "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    assert dist.launched_world_size() is None
    monkeypatch.setenv("PMI_SIZE", "4")  # MPICH's hydra
    assert dist.launched_world_size() == 4
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # Open MPI
    assert dist.launched_world_size() == 2


@pytest.mark.parametrize("n,replicas,drop_last", [(10, 3, False), (10, 3, True), (2, 4, False),
                                                  (12, 4, False), (12, 4, True), (7, 1, False)])
def test_distributed_sampler_shards_like_pytorch(n, replicas, drop_last):
    ds = TensorDataset(np.arange(n))
    shards = []
    for rank in range(replicas):
        s = DistributedSampler(ds, num_replicas=replicas, rank=rank, shuffle=True, seed=5,
                               drop_last=drop_last)
        s.set_epoch(2)
        shards.append(list(s))
        assert len(shards[-1]) == len(s)
    lengths = {len(x) for x in shards}
    assert len(lengths) == 1  # equal shards
    per = lengths.pop()
    expect = (n // replicas) if drop_last else -(-n // replicas)
    assert per == expect
    flat = [i for shard in shards for i in shard]
    if drop_last:
        assert len(set(flat)) == len(flat) == per * replicas  # no index twice, the rest dropped
    else:
        assert set(flat) == set(range(n))  # every index, the padding repeats some
    # no shuffle: rank r takes r, r + N, r + 2N ... (PyTorch's interleaving)
    plain = DistributedSampler(ds, num_replicas=replicas, rank=replicas - 1, shuffle=False,
                               drop_last=drop_last)
    assert list(plain)[:2] == [replicas - 1, 2 * replicas - 1][:len(plain)] or n < 2 * replicas


def test_distributed_sampler_bad_rank():
    with pytest.raises(ValueError, match=r"invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(TensorDataset(np.arange(4)), num_replicas=2, rank=2)


def test_dataloader_with_sampler():
    ds = TensorDataset(np.arange(10), np.arange(10) * 2)
    s = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(ds, batch_size=2, sampler=s)
    assert len(loader) == 3
    xs = [x.numpy().tolist() for x, _ in loader]
    assert xs == [[1, 3], [5, 7], [9]]
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, batch_size=2, sampler=s, shuffle=True)


def test_after_backward_runs_once_per_backward_after_every_gradient():
    """The hook DistributedDataParallel uses: once per backward pass, with every leaf's gradient
    already accumulated."""
    from minidl.tensor import Function

    class Mark(Function):
        def forward(self, x):
            return x

        def backward(self, g):
            return g

    w = minidl.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    y = Mark.apply(w * 3)
    y._ctx.after_backward = lambda: seen.append(w.grad.numpy().tolist())
    z = Mark.apply(w * 2)
    z._ctx.after_backward = y._ctx.after_backward  # the same callback twice in one graph
    (y.sum() + z.sum()).backward()
    assert seen == [[5.0, 5.0]]


# ---- the nccl backend's plumbing, on a fake CuPy and a fake NCCL ---------------------------------
class _FakeNccl:
    """cupy.cuda.nccl for a world of 2 ranks whose peer holds the same values as this one:
    reads and writes the buffers through the pointers it is given, as NCCL does."""

    def __init__(self, has_avg=True):
        for name in ("int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32",
                     "float64"):
            setattr(self, f"NCCL_{name.upper()}", name)  # the constant names its dtype
        self.NCCL_SUM, self.NCCL_MAX, self.NCCL_MIN = "sum", "max", "min"
        if has_avg:
            self.NCCL_AVG = "avg"
        self.made = []
        fake = self

        class Comm:
            def __init__(self, n, uid, rank):
                fake.made.append((n, uid, rank))

            @staticmethod
            def _view(ptr, count, dtype):
                import ctypes

                size = count * np.dtype(dtype).itemsize
                raw = (ctypes.c_char * size).from_address(ptr)
                return np.frombuffer(raw, dtype=dtype)

            def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802
                x = self._view(send, count, dtype)
                self._view(recv, count, dtype)[...] = x * 2 if op == "sum" else x

            def bcast(self, buf, count, dtype, root, stream):
                if root != 1:  # the peer (rank 0) sends its values: here, 7s
                    self._view(buf, count, dtype)[...] = 7

            def reduce(self, send, recv, count, dtype, op, root, stream):
                x = self._view(send, count, dtype)
                self._view(recv, count, dtype)[...] = x * 2 if op == "sum" else x

            def reduceScatter(self, send, recv, count, dtype, op, stream):  # noqa: N802
                x = self._view(send, 2 * count, dtype)  # this rank (1) gets the second slice
                self._view(recv, count, dtype)[...] = x[count:] * 2 if op == "sum" else x[count:]

            def allGather(self, send, recv, count, dtype, stream):  # noqa: N802
                x = self._view(send, count, dtype)
                out = self._view(recv, 2 * count, dtype)
                out[:count], out[count:] = x, x

            def destroy(self):
                pass

            def abort(self):
                pass

        self.NcclCommunicator = Comm
        self.get_unique_id = lambda: b"made-on-rank-0"


@pytest.mark.parametrize("has_avg", [True, False])
def test_nccl_group_plumbing_on_fake_cupy(monkeypatch, has_avg):
    import types

    import _fake_gpu

    from minidl import backend
    from minidl.distributed.mpi import Done
    from minidl.distributed.nccl import NCCLGroup

    fake = _fake_gpu.install(monkeypatch, lib=None)
    used = []
    fake.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 2),
        Device=lambda i=0: types.SimpleNamespace(use=lambda: used.append(i)),
        get_current_stream=lambda: types.SimpleNamespace(ptr=0, synchronize=lambda: None))
    nccl = _FakeNccl(has_avg)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(nccl=nccl)))
    monkeypatch.setitem(sys.modules, "cupy.cuda", types.SimpleNamespace(nccl=nccl))
    monkeypatch.setattr(NCCLGroup, "_ptr", staticmethod(lambda a: a.ctypes.data))
    host_calls = []
    mpi = types.SimpleNamespace(
        rank=1, size=2, local_rank=1, local_size=2, timeout=30.0,
        comm=types.SimpleNamespace(bcast=lambda obj, root: b"made-on-rank-0"),
        all_reduce=lambda arr, op: host_calls.append(("all_reduce", op)),
        barrier_async=lambda: host_calls.append(("barrier",)) or Done(), close=lambda: None)

    group = NCCLGroup(mpi)
    assert used == [1]  # the GPU of local rank 1, chosen before the communicator
    assert nccl.made == [(2, b"made-on-rank-0", 1)]  # rank 0's unique id, over MPI

    x = backend.to_device(np.arange(4, dtype=np.float32), "cuda")
    group.all_reduce(x, "sum")
    np.testing.assert_array_equal(backend.to_numpy(x), [0, 2, 4, 6])
    group.all_reduce(x, "avg")  # NCCL's avg, or a sum scaled by 1/2 where NCCL lacks it
    np.testing.assert_array_equal(backend.to_numpy(x), [0, 2, 4, 6])
    grid = backend.to_device(np.ones((3, 4), dtype=np.float64), "cuda")
    group.all_reduce(grid[:, 1], "sum")  # not contiguous: reduced in a copy, written back
    np.testing.assert_array_equal(backend.to_numpy(grid)[:, 1], [2, 2, 2])
    assert backend.to_numpy(grid).sum() == 15
    b = backend.to_device(np.zeros(3, dtype=np.int64), "cuda")
    group.broadcast(b, 0)
    np.testing.assert_array_equal(backend.to_numpy(b), [7, 7, 7])
    g = group.all_gather(backend.to_device(np.array([1.5, 2.5], dtype=np.float32),
                                           "cuda")).wait()
    assert backend.device_of(g) == "cuda" and backend.to_numpy(g).tolist() == [[1.5, 2.5]] * 2

    r = backend.to_device(np.array([1.0, 2.0], dtype=np.float32), "cuda")
    group.reduce(r, "sum", 1)  # this rank (1) is the destination
    np.testing.assert_array_equal(backend.to_numpy(r), [2, 4])
    group.reduce(r, "sum", 0)  # not the destination: its values stay
    np.testing.assert_array_equal(backend.to_numpy(r), [2, 4])
    rs = backend.to_device(np.zeros(2, dtype=np.float32), "cuda")
    group.reduce_scatter(rs, backend.to_device(np.arange(4, dtype=np.float32).reshape(2, 2),
                                               "cuda"), "sum")
    np.testing.assert_array_equal(backend.to_numpy(rs), [4, 6])
    with pytest.raises(TypeError, match="backend 'nccl' has no 'band' reduction"):
        group.all_reduce(backend.to_device(np.ones(2, dtype=np.int32), "cuda"), "band")
    group.all_reduce(np.ones(2, dtype=np.float32), "sum")  # a host array goes through MPI
    group.barrier()
    assert host_calls == [("all_reduce", "sum"), ("barrier",)]

    mpi.local_size = 3  # more ranks on the node than GPUs: NCCL cannot, and says what to do
    with pytest.raises(RuntimeError, match="one GPU per rank.*backend='mpi'"):
        NCCLGroup(mpi)
