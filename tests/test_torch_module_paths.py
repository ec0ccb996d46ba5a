"""torch's module paths that scripts import, answering for minidl: ``torch.backends.*``
(``import minidl.backends.cudnn as cudnn``), ``torch.utils.data.distributed``,
``torch.utils.model_zoo``, ``torch.autograd.profiler``, ``torch.multiprocessing`` (spawn) and
``python -m torch.utils.collect_env``."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl


# ---- torch.backends ------------------------------------------------------------------------
def test_backends_import_as_modules_and_answer_for_minidl():
    import minidl.backends.cuda as cuda_backend
    import minidl.backends.cudnn as cudnn
    from minidl.backends import mkldnn, opt_einsum

    assert cudnn is minidl.backends.cudnn and cuda_backend is minidl.backends.cuda
    saved = cudnn.benchmark
    cudnn.benchmark = True  # the training-script idiom
    assert minidl.backends.cudnn.benchmark is True
    cudnn.benchmark = saved
    assert mkldnn.is_available() is False and minidl.backends.mkl.is_available() is False
    with mkldnn.flags(enabled=True):
        assert mkldnn.enabled is True
    assert mkldnn.enabled is False
    try:
        import opt_einsum as oe  # noqa: F401
        have = True
    except ImportError:
        have = False
    assert opt_einsum.is_available() is have and opt_einsum.strategy == "auto"
    assert minidl.backends.mha.get_fastpath_enabled() is True


def test_cpu_capability_and_openmp_as_torch_on_this_machine():
    torch = pytest.importorskip("torch")
    assert minidl.backends.cpu.get_cpu_capability() == torch.backends.cpu.get_cpu_capability()
    assert isinstance(minidl.backends.openmp.is_available(), bool)


def test_cpu_capability_follows_aten_cpu_capability_as_torch(monkeypatch):
    """torch reads ATEN_CPU_CAPABILITY (avx512, avx2, default; lower case) in place of the
    CPU's own level, and warns and ignores any other value; minidl says the same."""
    cpu = minidl.backends.cpu
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    own = cpu.get_cpu_capability()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert cpu.get_cpu_capability() == "DEFAULT"
    if "avx2" in minidl.cpu.get_capabilities():  # x86-64
        for name in ("avx2", "avx512"):
            monkeypatch.setenv("ATEN_CPU_CAPABILITY", name)
            assert cpu.get_cpu_capability() == name.upper()
    for bad in ("AVX2", "sse", ""):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", bad)
        with pytest.warns(UserWarning, match=f"invalid value for ATEN_CPU_CAPABILITY: {bad}$"):
            assert cpu.get_cpu_capability() == own


# ---- torch.utils paths ---------------------------------------------------------------------
def test_distributed_sampler_path_and_model_zoo(tmp_path, monkeypatch):
    from minidl.utils.data.distributed import DistributedSampler
    from minidl.utils.model_zoo import load_url

    assert DistributedSampler is minidl.data.DistributedSampler
    sampler = DistributedSampler(list(range(10)), num_replicas=2, rank=1, shuffle=False)
    assert list(sampler) == [1, 3, 5, 7, 9]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    os.makedirs(tmp_path / "hub" / "checkpoints")
    model = minidl.nn.Linear(2, 2)
    np.savez(tmp_path / "hub" / "checkpoints" / "lin.npz",
             **{k: v.numpy() for k, v in model.state_dict().items()})
    state = load_url("https://example.invalid/lin.npz")
    np.testing.assert_array_equal(state["weight"].numpy(), model.weight.numpy())
    with pytest.raises(Exception, match="example.invalid/other.npz|other.npz"):
        load_url("https://example.invalid/other.npz")  # not cached: never downloaded


# ---- torch.autograd.profiler ---------------------------------------------------------------
def test_autograd_profiler_records_ops_and_ranges():
    from minidl.autograd import profiler

    x = minidl.tensor(np.ones((4, 4), np.float32), requires_grad=True)
    with profiler.profile(record_shapes=True) as prof:
        with profiler.record_function("block"):
            (x @ x).sum().backward()
    names = {e.name for e in prof.function_events}
    assert "block" in names and len(prof.function_events) >= 3
    assert "block" in prof.key_averages().table(sort_by="self_cpu_time_total")
    assert prof.self_cpu_time_total > 0 and "block" in str(prof)
    with profiler.profile(enabled=False) as off:
        (x * 2).sum()
    with pytest.raises(RuntimeError, match="not enabled"):
        off.key_averages()
    with pytest.warns(FutureWarning, match="use_cuda"):
        profiler.profile(use_cuda=True)
    with pytest.raises(ValueError, match="use_cpu=False needs use_device"):
        profiler.profile(use_cpu=False)


def test_autograd_profiler_signature_is_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    from minidl.autograd import profiler

    ours = list(inspect.signature(profiler.profile.__init__).parameters)
    theirs = list(inspect.signature(torch.autograd.profiler.profile.__init__).parameters)
    assert ours == theirs


# ---- torch.multiprocessing -----------------------------------------------------------------
def _write_rank(i, folder, scale):
    x = minidl.tensor(np.full(3, float(i * scale)))
    np.save(os.path.join(folder, f"rank{i}.npy"), (x * 2).numpy())


def _fail_on_one(i):
    if i == 1:
        raise ValueError("rank one refuses")


def _exit_with_three(i):
    os._exit(3)


def test_spawn_runs_each_rank_and_raises_what_a_child_raised(tmp_path):
    mp = minidl.multiprocessing
    mp.spawn(_write_rank, args=(str(tmp_path), 10), nprocs=2)
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{i}.npy"), np.full(3, 20.0 * i))
    with pytest.raises(mp.ProcessRaisedException, match="ValueError: rank one refuses") as e:
        mp.spawn(_fail_on_one, nprocs=2)
    assert e.value.error_index == 1
    with pytest.raises(mp.ProcessExitedException, match="exit code 3") as e:
        mp.start_processes(_exit_with_three, nprocs=1, start_method="spawn")
    assert e.value.exit_code == 3
    ctx = mp.start_processes(_write_rank, args=(str(tmp_path), 1), nprocs=1, join=False)
    assert len(ctx.pids()) == 1
    while not ctx.join():
        pass
    with pytest.raises(ValueError, match="nprocs must be a positive int"):
        mp.spawn(_write_rank, nprocs=0)


def test_multiprocessing_names_as_torchs():
    mp = minidl.multiprocessing
    assert mp.get_sharing_strategy() == "file_descriptor"
    assert mp.get_all_sharing_strategies() == {"file_descriptor", "file_system"}
    mp.set_sharing_strategy("file_system")
    assert mp.get_sharing_strategy() == "file_system"
    mp.set_sharing_strategy("file_descriptor")
    with pytest.raises(ValueError, match="expected one of"):
        mp.set_sharing_strategy("shm")
    assert mp.Queue is not None and mp.cpu_count() >= 1
    pytest.importorskip("torch")
    import torch.multiprocessing as tmp

    assert set(tmp.__all__) <= set(mp.__all__) | {"reductions"}


# ---- collect_env -----------------------------------------------------------------------------
def test_collect_env_prints_the_report():
    done = subprocess.run([sys.executable, "-m", "minidl.utils.collect_env"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for field in ("minidl:", "Python:", "NumPy:", "BLAS:", "numba threads:", "GPU:", "CPU:"):
        assert field in done.stdout, field
    from minidl.utils.collect_env import get_env_info

    assert get_env_info()["minidl"] == minidl.__version__


# ---- the cuDNN and MPS flags a script sets ----------------------------------------------------

def test_backend_flags_a_script_sets():
    minidl.backends.cudnn.benchmark = True  # torch scripts set it; minidl takes it
    try:
        assert minidl.backends.cudnn.benchmark is True
    finally:
        minidl.backends.cudnn.benchmark = False
    assert minidl.backends.mps.is_available() is False and minidl.backends.mps.is_built() is False
    device = ("cuda" if minidl.cuda.is_available() else
              "mps" if minidl.backends.mps.is_available() else "cpu")
    assert minidl.ones(2, device=device).device == device
