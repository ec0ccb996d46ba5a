"""``minidl.accelerator`` (torch.accelerator) and ``minidl.cpu`` (torch.cpu): device-agnostic
code. Without a GPU the accelerator's device calls raise torch's error; on the fake GPU of
tests/test_cuda_api.py they answer what ``minidl.cuda`` answers; ``minidl.cpu`` reports what
torch.cpu reports on this machine."""
import inspect
import types
import warnings

import numpy as np
import pytest

import minidl
from minidl import backend

from test_cuda_api import TOTAL, gpu  # noqa: F401  (the fake GPU fixture)


def _no_cupy(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(backend, "_cupy_error", "ModuleNotFoundError: No module named 'cupy'")
    monkeypatch.setattr(backend, "_cuda_ready", False)


# ---- minidl.accelerator ------------------------------------------------------------------------
def test_accelerator_without_cupy(monkeypatch):
    _no_cupy(monkeypatch)
    acc = minidl.accelerator
    assert acc.current_accelerator() is None and acc.current_accelerator(True) is None
    assert acc.is_available() is False and acc.device_count() == 0
    for call in (acc.current_device_index, acc.synchronize, acc.empty_cache, acc.memory_allocated,
                 acc.max_memory_allocated, acc.memory_stats, acc.get_memory_info,
                 acc.current_stream, lambda: acc.set_device_index(0),
                 acc.reset_peak_memory_stats, acc.get_device_capability):
        with pytest.raises(RuntimeError, match="Cannot access accelerator device when none is "
                                               "available."):
            call()
    with acc.device_index(None):  # switches nothing, so needs no device
        pass
    # the idiom of torch's tutorials
    device = acc.current_accelerator().type if acc.is_available() else "cpu"
    assert minidl.ones(2, device=device).device.type == "cpu"


def test_accelerator_with_cupy_but_no_gpu(monkeypatch):
    """torch's "compiled with an accelerator, none present": the type is known, not usable."""
    monkeypatch.setattr(backend, "_cupy", object())
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(minidl.cuda, "is_available", lambda: False)
    acc = minidl.accelerator
    assert acc.current_accelerator() == minidl.device("cuda")
    assert acc.current_accelerator(check_available=True) is None
    assert acc.is_available() is False


def test_accelerator_on_the_fake_gpu(gpu):  # noqa: F811
    acc, cuda = minidl.accelerator, minidl.cuda
    dev = acc.current_accelerator(check_available=True)
    assert dev == minidl.device("cuda") and dev.index is None
    assert acc.is_available() and acc.device_count() == 1 and acc.current_device_index() == 0
    with pytest.warns(FutureWarning, match="current_device_index"):
        assert acc.current_device_idx() == 0
    acc.synchronize()
    acc.synchronize("cuda:0")
    assert acc.current_stream() == cuda.current_stream()
    assert acc.memory_allocated() == cuda.memory_allocated() == 100
    assert acc.memory_reserved() == 300 and acc.get_memory_info() == (TOTAL - 300, TOTAL)
    assert acc.max_memory_allocated() == 100  # starts watching the pool's peaks
    gpu.malloc(900)
    assert acc.max_memory_allocated() == 1000 and acc.memory_stats() == cuda.memory_stats()
    acc.reset_peak_memory_stats()
    assert acc.max_memory_allocated() == 1000  # still held
    backend._oom_count[0] = 3
    acc.reset_accumulated_memory_stats()
    assert acc.memory_stats()["num_ooms"] == 0
    pinned = []
    gpu.get_default_pinned_memory_pool = lambda: types.SimpleNamespace(
        free_all_blocks=lambda: pinned.append("freed"))
    acc.empty_cache()
    assert gpu.pool.total == gpu.pool.used and pinned == ["freed"]
    acc.empty_host_cache()
    assert pinned == ["freed", "freed"]
    caps = acc.get_device_capability()
    assert {minidl.float32, minidl.float16, minidl.int64} <= caps["supported_dtypes"]
    with acc.device_index(0):
        assert acc.current_device_index() == 0
    acc.set_device_index("cuda:0")
    with pytest.raises(ValueError, match="cpu doesn't match the current accelerator cuda"):
        acc.set_device_index("cpu")
    with pytest.raises(TypeError, match="expected an index"):
        acc.set_device_index(1.5)
    model = minidl.nn.Linear(2, 2).to(dev)
    assert model.weight.device.type == "cuda"


def test_accelerator_names_and_signatures_match_torch():
    torch = pytest.importorskip("torch")
    ours = set(minidl.accelerator.__all__)
    theirs = {n for n in dir(torch.accelerator) if not n.startswith("_")
              and callable(getattr(torch.accelerator, n))}
    # CUDA graphs (Graph) are not in minidl; the rest are torch's module's imports
    assert theirs - ours == {"Any", "Graph", "cache", "deprecated"}
    for name in ours:
        mine = list(inspect.signature(getattr(minidl.accelerator, name)).parameters)
        want = list(inspect.signature(getattr(torch.accelerator, name)).parameters)
        assert mine == want, name
    assert torch.accelerator.current_accelerator() is None  # torch's CPU build
    with pytest.raises(RuntimeError, match="Cannot access accelerator device when none"):
        torch.accelerator.synchronize()


# ---- minidl.cpu --------------------------------------------------------------------------------
def test_cpu_module_answers_as_torch_cpu():
    cpu = minidl.cpu
    assert cpu.is_available() and cpu.is_initialized() and cpu.device_count() == 1
    assert cpu.current_device() == "cpu"
    cpu.synchronize()
    cpu.synchronize("cpu")
    cpu.set_device("cpu")
    with pytest.raises(ValueError, match="expected a CPU device"):
        cpu.synchronize("cuda")
    s = cpu.Stream()
    assert cpu.current_stream() is not s
    with cpu.stream(s):
        assert cpu.current_stream() is s
    assert cpu.current_stream() is not s
    e = cpu.Event()
    e.record()
    e.synchronize()
    assert e.query() is True
    # device-agnostic code: getattr(minidl, device.type)
    assert getattr(minidl, minidl.device("cpu").type) is cpu


def test_cpu_capabilities_equal_torchs_on_this_machine():
    torch = pytest.importorskip("torch")
    ours, theirs = dict(minidl.cpu.get_capabilities()), dict(torch.cpu.get_capabilities())
    if not ours:
        pytest.skip("this machine's /proc/cpuinfo could not be read")
    common = set(ours) & set(theirs)
    flags = {k for k in common if isinstance(theirs[k], bool)}
    assert len(flags) >= 20
    assert {k: ours[k] for k in flags} == {k: theirs[k] for k in flags}
    for key in ("architecture", "num_logical_cores", "num_physical_cores", "num_sockets"):
        assert ours[key] == theirs[key], key
    with pytest.raises(TypeError):
        minidl.cpu.get_capabilities()["avx2"] = False  # read-only, as torch's


def test_cpu_amp_names_are_deprecated_aliases():
    with pytest.warns(FutureWarning, match="minidl.amp.autocast\\('cpu'"):
        ctx = minidl.cpu.amp.autocast()
    with ctx:
        x = minidl.tensor(np.ones((2, 3), np.float32))
        y = x @ minidl.tensor(np.ones((3, 2), np.float32))
    assert y.dtype == minidl.bfloat16
    with pytest.warns(FutureWarning, match="GradScaler\\('cpu'"):
        scaler = minidl.cpu.amp.GradScaler(init_scale=8.0)
    assert scaler.get_scale() == 8.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minidl.cpu.is_available()


# ---- Tensor.device: a name with torch.device's attributes ---------------------------------------
def test_tensor_device_has_torch_devices_type_index_and_repr():
    import pickle

    d = minidl.ones(2).device
    assert d == "cpu" and f"{d}" == "cpu" and {"cpu": 1}[d] == 1  # the name, as before
    assert d.type == "cpu" and d.index is None and repr(d) == "device(type='cpu')"
    assert d == minidl.device("cpu") and minidl.device("cpu") == d and d != minidl.device("cuda")
    assert pickle.loads(pickle.dumps(d)) == "cpu"
    with minidl.autocast(d.type, dtype=minidl.bfloat16):  # device-agnostic autocast
        y = minidl.ones(2, 3) @ minidl.ones(3, 2)
    assert y.dtype == minidl.bfloat16
    torch = pytest.importorskip("torch")
    theirs = torch.ones(2).device
    assert (repr(d), str(d), d.type, d.index) == (repr(theirs), str(theirs), theirs.type,
                                                  theirs.index)


def test_tensor_device_on_the_fake_gpu(gpu):  # noqa: F811
    x = minidl.ones(2, device="cuda")
    assert x.device == "cuda" and x.device.type == "cuda" and x.device.index == 0
    assert repr(x.device) == "device(type='cuda', index=0)"  # torch's repr of cuda:0
    assert x.device == minidl.device("cuda:0") and x.to(x.device).device == "cuda"
    assert minidl.zeros(1, device=x.device).device.type == "cuda"
