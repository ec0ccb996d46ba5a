"""What PyTorch training scripts set and ask around the model, as torch answers: cuDNN and MPS
flags, the float32 matmul precision, deterministic algorithms, torch.cuda.amp's deprecated
names, peak GPU memory, and nn.DataParallel on one device."""
import warnings

import numpy as np
import pytest

import minidl


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


def test_float32_matmul_precision_drives_tf32_as_torch():
    torch = pytest.importorskip("torch")
    before = minidl.backends.cuda.matmul.allow_tf32
    precisions = minidl.get_float32_matmul_precision(), torch.get_float32_matmul_precision()
    try:
        for p in ("high", "medium", "highest"):
            minidl.set_float32_matmul_precision(p)
            torch.set_float32_matmul_precision(p)
            assert minidl.get_float32_matmul_precision() == torch.get_float32_matmul_precision()
            assert minidl.backends.cuda.matmul.allow_tf32 == (p != "highest")
        with pytest.raises(RuntimeError, match="Invalid precision"):
            minidl.set_float32_matmul_precision("fast")
    finally:  # both libraries as the test found them, even when an assertion failed
        minidl.set_float32_matmul_precision(precisions[0])
        torch.set_float32_matmul_precision(precisions[1])
        minidl.backends.cuda.matmul.allow_tf32 = before


def test_deterministic_algorithms_switch():
    assert not minidl.are_deterministic_algorithms_enabled()
    minidl.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert minidl.are_deterministic_algorithms_enabled()
        assert minidl.is_deterministic_algorithms_warn_only_enabled()
        assert minidl.backends.cudnn.deterministic is True
    finally:
        minidl.use_deterministic_algorithms(False)
    assert not minidl.backends.cudnn.deterministic
    with pytest.raises(TypeError, match="bool"):
        minidl.use_deterministic_algorithms("yes")


def test_cuda_amp_names_warn_as_deprecated():
    with pytest.warns(FutureWarning, match=r"minidl.amp.autocast\('cuda'"):
        region = minidl.cuda.amp.autocast(dtype=minidl.bfloat16)
    assert region.device == "cuda" and region.dtype == minidl.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CUDA is not available. Disabling."
        with pytest.warns(FutureWarning, match=r"minidl.amp.GradScaler\('cuda'"):
            scaler = minidl.cuda.amp.GradScaler(init_scale=1024.0)
    assert isinstance(scaler, minidl.amp.GradScaler)


def test_peak_memory_follows_the_pool(monkeypatch, host_kernels):
    """max_memory_allocated watches the pool's allocations once asked: a fake pool stands in
    for CuPy's, and the allocator minidl installs is called as CuPy would call it."""
    import _fake_gpu

    fake = _fake_gpu.FakeCuPy()
    _fake_gpu.install(monkeypatch, host_kernels, fake)

    class Pool:
        used = total = 0

        def used_bytes(self):
            return self.used

        def total_bytes(self):
            return self.total

        def malloc(self, size):
            self.used += size
            self.total = max(self.total, self.used)
            return size

    pool = Pool()
    installed = []
    fake.get_default_memory_pool = lambda: pool
    fake.cuda.set_allocator = installed.append
    monkeypatch.setattr(minidl.cuda, "_tracking", [])
    monkeypatch.setattr(minidl.cuda, "_peak", {"allocated": 0, "reserved": 0})
    pool.used = pool.total = 100
    assert minidl.cuda.max_memory_allocated() == 100  # watching starts from what is held
    (malloc,) = installed
    malloc(400)
    pool.used -= 400  # freed again
    assert minidl.cuda.memory_allocated() == 100
    assert minidl.cuda.max_memory_allocated() == 500
    assert minidl.cuda.max_memory_reserved() == 500
    minidl.cuda.reset_peak_memory_stats()
    assert minidl.cuda.max_memory_allocated() == 100
    assert len(installed) == 1  # the allocator goes in once


def test_no_gpu_no_peak():
    if minidl.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU answers do not apply")
    assert minidl.cuda.max_memory_allocated() == 0
    assert minidl.cuda.is_bf16_supported() is False


def test_data_parallel_on_one_device_matches_torch():
    torch = pytest.importorskip("torch")
    minidl.manual_seed(0)
    ours = minidl.nn.DataParallel(minidl.nn.Linear(3, 2))
    theirs = torch.nn.DataParallel(torch.nn.Linear(3, 2))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["module.weight",
                                                                    "module.bias"]
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(minidl.tensor(x)).detach().numpy(),
                               theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)
    assert isinstance(ours.module, minidl.nn.Linear)
    with pytest.raises(ValueError, match="one GPU per process"):
        minidl.nn.DataParallel(minidl.nn.Linear(3, 2), device_ids=[0, 1])
