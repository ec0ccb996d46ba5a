"""torch.cuda's surface on CuPy (minidl/cuda.py): streams, events, device properties, memory
statistics, the CUDA random state, NVTX ranges and OutOfMemoryError, on the fake GPU
(tests/_fake_gpu.py) with a stand-in for the parts of ``cupy.cuda`` they use; and their answers
without CuPy, as torch's CPU-only build gives them."""
import types
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl import backend

import _fake_gpu


# ---- a stand-in for cupy.cuda's streams, events, runtime and memory pool ----------------------
class _FakeStream:
    """cupy.cuda.Stream: ``ptr`` names it; ``use()`` makes it current; it logs what it did."""

    next_ptr = 0x1000
    current = None  # set by the fixture to the null stream
    log: list = []

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None, ptr=None):
        if null:
            self.ptr = 0
        elif ptr is not None:
            self.ptr = ptr
        else:
            _FakeStream.next_ptr += 0x10
            self.ptr = _FakeStream.next_ptr
        self.non_blocking, self.priority = non_blocking, priority
        self.done = True

    def use(self):
        _FakeStream.current = self
        return self

    def synchronize(self):
        _FakeStream.log.append(("synchronize", self.ptr))

    def wait_event(self, event):
        _FakeStream.log.append(("wait_event", self.ptr, event))


class _FakeEvent(_fake_gpu.FakeEvent):
    """The fake's cupy.cuda.Event (``done``, as CuPy's) with the options it was made with;
    record notes the stream it was recorded on."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        super().__init__(block, disable_timing, interprocess)
        self.options = (block, disable_timing, interprocess)
        self.ptr, self.stream = id(self), "unrecorded"

    def record(self, stream=None):
        super().record(stream)
        self.stream = stream


class _FakePool:
    def __init__(self):
        self.used, self.total, self.limit = 100, 300, 0

    def used_bytes(self):
        return self.used

    def total_bytes(self):
        return self.total

    def malloc(self, size):
        self.used += size
        self.total = max(self.total, self.used)
        return size

    def set_limit(self, size=None, fraction=None):
        self.limit = int(fraction * TOTAL) if fraction is not None else int(size)

    def get_limit(self):
        return self.limit

    def free_all_blocks(self):
        self.total = self.used


class FakeOOM(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError (a MemoryError, as CuPy's)."""


TOTAL = 80 * 2**30
PROPS = {"name": b"NVIDIA Fake H100", "totalGlobalMem": TOTAL, "major": 9, "minor": 0,
         "multiProcessorCount": 132, "warpSize": 32, "l2CacheSize": 50 * 2**20,
         "integrated": 0, "isMultiGpuBoard": 0, "maxThreadsPerMultiProcessor": 2048,
         "uuid": bytes(range(16)), "pciBusID": 1, "pciDeviceID": 0, "pciDomainID": 0}


@pytest.fixture
def gpu(monkeypatch, host_kernels):
    fake = _fake_gpu.FakeCuPy()
    _fake_gpu.install(monkeypatch, host_kernels, fake)
    null = _FakeStream(null=True)
    _FakeStream.current, _FakeStream.log = null, []
    _FakeStream.null = null
    pool = _FakePool()
    nvtx_log = []
    fake.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                      getDeviceProperties=lambda i: dict(PROPS),
                                      memGetInfo=lambda: (TOTAL - pool.total, TOTAL)),
        Device=lambda *a: types.SimpleNamespace(id=0, synchronize=lambda: None,
                                                compute_capability="90", use=lambda: None),
        Event=_FakeEvent, get_elapsed_time=lambda a, b: 1.5 if a.done and b.done else None,
        Stream=_FakeStream, get_current_stream=lambda: _FakeStream.current,
        ExternalStream=lambda ptr, device_id=-1: _FakeStream(ptr=ptr),
        memory=types.SimpleNamespace(OutOfMemoryError=FakeOOM),
        nvtx=types.SimpleNamespace(available=True, RangePush=lambda m: nvtx_log.append(("push", m)),
                                   RangePop=lambda: nvtx_log.append(("pop",)),
                                   Mark=lambda m: nvtx_log.append(("mark", m))),
        set_allocator=lambda malloc: setattr(fake, "malloc", malloc))
    fake.get_default_memory_pool = lambda: pool
    monkeypatch.setattr(minidl.cuda, "_tracking", [])
    monkeypatch.setattr(minidl.cuda, "_peak", {"allocated": 0, "reserved": 0})
    monkeypatch.setattr(backend, "_oom_count", [0])
    fake.pool, fake.nvtx_log = pool, nvtx_log
    return fake


# ---- streams and events ------------------------------------------------------------------------
def test_streams_switch_and_come_back(gpu):
    cuda = minidl.cuda
    default = cuda.default_stream()
    assert default.cuda_stream == 0 and cuda.current_stream() == default
    s = cuda.Stream(priority=-1)
    assert s._stream.non_blocking and s._stream.priority == -1 and s.priority == -1
    assert s != default and s.device == minidl.device("cuda:0")
    with cuda.stream(s) as entered:
        assert entered is s and cuda.current_stream() == s
        with cuda.stream(None):  # None: no change, as torch's
            assert cuda.current_stream() == s
        inner = cuda.Stream()
        with inner:
            assert cuda.current_stream() == inner
        assert cuda.current_stream() == s
    assert cuda.current_stream() == default
    cuda.set_stream(s)
    assert cuda.current_stream() == s
    cuda.set_stream(None)
    assert cuda.current_stream() == s
    cuda.set_stream(default)
    assert isinstance(cuda.StreamContext(s), cuda.StreamContext)
    assert "cuda_stream=0x" in repr(s)
    ext = cuda.ExternalStream(0xBEEF)
    assert ext.cuda_stream == 0xBEEF and isinstance(ext, cuda.Stream)
    assert s.query() is True
    s.synchronize()
    assert ("synchronize", s.cuda_stream) in _FakeStream.log
    with pytest.raises(TypeError, match="minidl.cuda.Stream"):
        cuda.set_stream("cuda")
    with pytest.raises(TypeError, match="priority"):
        cuda.Stream(priority=0.5)


def test_events_record_wait_and_time(gpu):
    cuda = minidl.cuda
    start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True, blocking=True)
    assert start._event.options == (False, False, False) and end._event.options[0] is True
    assert cuda.Event()._event.options == (False, True, False)  # timing off by default
    assert repr(start) == "<minidl.cuda.Event uninitialized>"
    assert start.query() is True  # never recorded: nothing to wait for, as CUDA's
    start.synchronize()  # never recorded: returns at once, as torch's
    with pytest.raises(RuntimeError, match="must be recorded"):
        start.elapsed_time(end)
    start.record()
    assert start._event.stream is _FakeStream.current  # the current stream by default
    s = cuda.Stream()
    end.record(s)
    assert end._event.stream is s._stream
    assert start.elapsed_time(end) == 1.5
    end.wait()  # the current stream waits for it
    assert _FakeStream.log[-1] == ("wait_event", 0, end._event)
    s.wait_event(start)
    assert _FakeStream.log[-1] == ("wait_event", s.cuda_stream, start._event)
    other = cuda.Stream()
    s.wait_stream(other)  # records an event on other, and s waits for it
    kind, ptr, event = _FakeStream.log[-1]
    assert (kind, ptr) == ("wait_event", s.cuda_stream) and event.stream is other._stream
    recorded = s.record_event()
    assert isinstance(recorded, cuda.Event) and recorded._event.stream is s._stream
    with pytest.raises(RuntimeError, match="enable_timing=True"):  # torch's error type
        start.elapsed_time(recorded)
    with pytest.raises(TypeError, match="minidl.cuda.Event"):
        s.wait_event(object())


# ---- the device ---------------------------------------------------------------------------
def test_device_properties(gpu):
    cuda = minidl.cuda
    p = cuda.get_device_properties(0)
    assert (p.name, p.major, p.minor, p.total_memory, p.multi_processor_count) == \
        ("NVIDIA Fake H100", 9, 0, TOTAL, 132)
    assert p.is_integrated is False and p.warp_size == 32 and p.L2_cache_size == 50 * 2**20
    assert p.uuid == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert repr(p).startswith("_CudaDeviceProperties(name='NVIDIA Fake H100', major=9, minor=0, "
                              "total_memory=81920MB, multi_processor_count=132")
    assert cuda.get_device_properties("cuda:0").name == p.name
    assert cuda.get_device_properties(minidl.device("cuda")).major == 9
    assert cuda.get_device_capability() == (9, 0)
    assert cuda.get_device_name(0) == "NVIDIA Fake H100"
    assert cuda.get_arch_list() == ["sm_90"]
    assert cuda.is_initialized() is True
    cuda.init()
    with pytest.raises(ValueError, match="invalid device id 1: this machine has 1 GPU"):
        cuda.get_device_properties(1)
    with pytest.raises(ValueError, match="Expected a cuda device"):
        cuda.get_device_properties("cpu")
    with cuda.device(0), cuda.device(None):
        assert cuda.current_device() == 0
    with cuda.device_of(minidl.ones(2, device="cuda")):
        pass
    assert cuda.is_current_stream_capturing() is False


# ---- memory ---------------------------------------------------------------------------------
def test_memory_figures(gpu):
    cuda, pool = minidl.cuda, gpu.pool
    assert cuda.mem_get_info() == (TOTAL - 300, TOTAL)
    stats = cuda.memory_stats()
    assert stats["allocated_bytes.all.current"] == 100 and stats["reserved_bytes.all.current"] == 300
    assert stats["inactive_split_bytes.all.current"] == 200 and stats["num_ooms"] == 0
    gpu.malloc(900)  # through the allocator minidl installed to watch the peaks
    assert cuda.memory_stats()["allocated_bytes.all.peak"] == 1000
    pool.used, pool.total = 10, 1200  # freed, and the pool grew
    stats = cuda.memory_stats()
    assert stats["allocated_bytes.all.current"] == 10 and stats["allocated_bytes.all.peak"] == 1000
    assert stats["active_bytes.all.peak"] == 1000 and stats["reserved_bytes.all.peak"] == 1200
    assert list(stats) == sorted(stats)
    summary = cuda.memory_summary()
    assert "Allocated memory" in summary and "1000 B" in summary and "1.2 KiB" in summary
    with pytest.warns(FutureWarning, match="renamed to `minidl.cuda.memory_reserved`"):
        assert cuda.memory_cached() == 1200
    with pytest.warns(FutureWarning, match="max_memory_reserved"):
        assert cuda.max_memory_cached() == 1200
    with pytest.warns(FutureWarning, match="reset_peak_memory_stats"):
        cuda.reset_max_memory_cached()
    assert cuda.max_memory_allocated() == 10
    cuda.set_per_process_memory_fraction(0.25)
    assert pool.limit == TOTAL // 4
    assert cuda.get_per_process_memory_fraction() == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(ValueError, match="Invalid fraction value: 1.5. Allowed range: 0~1"):
        cuda.set_per_process_memory_fraction(1.5)
    with pytest.raises(TypeError, match="must be float"):
        cuda.set_per_process_memory_fraction("half")
    assert isinstance(cuda.list_gpu_processes(), str)


def test_out_of_memory_is_torchs_error(gpu):
    class Grows(minidl.autograd.Function):
        def forward(self, x):
            raise FakeOOM("Out of memory allocating 1,024 bytes (allocated so far: 0 bytes).")

    x = minidl.ones(3, device="cuda")
    with pytest.raises(minidl.cuda.OutOfMemoryError, match="CUDA out of memory. Out of memory "
                       "allocating 1,024 bytes") as info:
        Grows.apply(x)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value.__cause__, FakeOOM)
    assert minidl.OutOfMemoryError is minidl.cuda.OutOfMemoryError

    class BackwardGrows(minidl.autograd.Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            raise FakeOOM("Out of memory allocating 2,048 bytes")

    y = BackwardGrows.apply(minidl.ones(3, device="cuda", requires_grad=True))
    with pytest.raises(minidl.OutOfMemoryError, match="2,048 bytes"):
        y.sum().backward()

    def refuse(a, dtype=None):
        raise FakeOOM("Out of memory allocating 4,096 bytes")

    gpu.asarray = refuse
    with pytest.raises(minidl.OutOfMemoryError, match="4,096 bytes"):
        minidl.ones(3).to("cuda")
    with pytest.raises(minidl.OutOfMemoryError, match="4,096 bytes"):
        minidl.zeros(3, device="cuda")
    assert minidl.cuda.memory_stats()["num_ooms"] == 4

    class HostFull(minidl.autograd.Function):  # a host MemoryError stays what it is
        def forward(self, x):
            raise MemoryError("host")

    with pytest.raises(MemoryError) as info:
        HostFull.apply(minidl.ones(2))
    assert not isinstance(info.value, RuntimeError)


# ---- the random state -----------------------------------------------------------------------
def test_rng_state_replays_cuda_draws(gpu):
    cuda = minidl.cuda
    minidl.manual_seed(7)
    assert cuda.initial_seed() == 7
    x = minidl.ones(1000, device="cuda")
    state = cuda.get_rng_state()
    assert state.dtype == minidl.uint8 and state.device == "cpu" and state.ndim == 1

    def draws():
        return (minidl.randn(5, device="cuda").numpy(),
                F.dropout(x, 0.5, training=True).numpy())

    first = draws()
    second = draws()
    assert not np.array_equal(first[1], second[1])
    cuda.set_rng_state(state)
    again = draws()
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    states = cuda.get_rng_state_all()
    assert len(states) == 1
    after = draws()
    cuda.set_rng_state_all(states)
    np.testing.assert_array_equal(after[1], draws()[1])
    cuda.seed()
    cuda.seed_all()
    assert cuda.initial_seed() != 7
    with pytest.raises(TypeError, match="uint8 Tensor"):
        cuda.set_rng_state(minidl.zeros(3))
    with pytest.raises(ValueError, match="not a state minidl.cuda.get_rng_state returned"):
        cuda.set_rng_state(minidl.get_rng_state()[:5])


# ---- NVTX -----------------------------------------------------------------------------------
def test_nvtx_ranges_reach_cupy(gpu):
    from minidl.cuda import nvtx

    assert nvtx.range_push("step") == 0
    assert nvtx.range_push("forward") == 1
    assert nvtx.range_pop() == 1 and nvtx.range_pop() == 0
    assert nvtx.range_pop() == -1  # nothing open
    nvtx.mark("here")
    with nvtx.range("epoch {}", 3):
        pass
    assert gpu.nvtx_log == [("push", "step"), ("push", "forward"), ("pop",), ("pop",),
                            ("mark", "here"), ("push", "epoch 3"), ("pop",)]
    rid = nvtx.range_start("free")
    nvtx.range_end(rid)
    import minidl.cuda.nvtx as imported

    assert imported is nvtx


# ---- without CuPy: torch's CPU-only answers, or minidl's one CUDA error ---------------------
def test_without_cuda(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(backend, "_cupy_error", "ModuleNotFoundError: No module named 'cupy'")
    monkeypatch.setattr(backend, "_cuda_ready", False)
    cuda = minidl.cuda
    assert cuda.is_initialized() is False and cuda.device_count() == 0
    assert cuda.get_arch_list() == [] and cuda.memory_stats() == {}
    assert cuda.get_rng_state_all() == [] and cuda.memory_reserved() == 0
    assert cuda.max_memory_reserved() == 0
    assert "Allocated memory" in cuda.memory_summary()
    cuda.set_rng_state(minidl.get_rng_state())  # does nothing, as torch's
    cuda.set_rng_state_all([])
    with cuda.stream(None), cuda.device(None):
        cuda.set_stream(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cuda.nvtx.range_push("a") == 0 and cuda.nvtx.range_pop() == 0
    for call in (cuda.init, cuda.Stream, cuda.Event, cuda.current_stream, cuda.default_stream,
                 cuda.get_device_properties, cuda.get_device_capability, cuda.get_device_name,
                 cuda.mem_get_info, cuda.get_rng_state, cuda.initial_seed,
                 lambda: cuda.set_per_process_memory_fraction(0.5),
                 lambda: cuda.ExternalStream(0)):
        with pytest.raises(RuntimeError, match="device 'cuda' needs CuPy"):
            call()


def test_names_match_torch():
    """Every name of torch.cuda this module provides has torch's signature (parameter names)."""
    torch = pytest.importorskip("torch")
    import inspect

    pairs = [(minidl.cuda.Event.__init__, torch.cuda.Event.__new__),
             (minidl.cuda.Stream.__init__, torch.cuda.Stream.__new__)]
    for name in ("get_device_properties", "get_device_capability", "mem_get_info",
                 "memory_stats", "memory_summary", "set_per_process_memory_fraction",
                 "get_rng_state", "set_rng_state", "set_rng_state_all", "list_gpu_processes",
                 "stream", "set_stream", "current_stream", "default_stream"):
        pairs.append((getattr(minidl.cuda, name), getattr(torch.cuda, name)))
    for ours, theirs in pairs:
        mine = [p for p in inspect.signature(ours).parameters if p not in ("self", "cls")]
        want = [p for p in inspect.signature(theirs).parameters if p not in ("self", "cls")]
        want = [p for p in want if p != "external"]  # torch's private flag
        assert mine == want, (ours, mine, want)
    for name in ("range_push", "range_pop", "mark", "range", "range_start", "range_end"):
        assert hasattr(minidl.cuda.nvtx, name)
    assert issubclass(minidl.cuda.OutOfMemoryError, RuntimeError)
    assert torch.cuda.is_initialized() is False and torch.cuda.get_arch_list() == []
    assert torch.cuda.memory_stats() == {} and torch.cuda.get_rng_state_all() == []


# ---- compat: minidl.cuda ----------------------------------------------------------------------

def test_cuda_functions_refuse_a_gpu_that_is_not_there(gpu):  # noqa: F811
    """On a one-GPU machine, cuda.set_device(3), synchronize(3), memory_stats(2),
    memory_allocated("cuda:2"), max_memory_*/reset_peak_memory_stats(5) were accepted silently
    (set_device even took GPU 3 mod 1 = 0), while mem_get_info(2) and get_device_properties(5)
    refused them; torch raises for all. set_device(-1) is torch's no-op."""
    cuda = minidl.cuda
    calls = [lambda: cuda.set_device(3), lambda: cuda.synchronize(3),
             lambda: cuda.memory_stats(2), lambda: cuda.memory_allocated("cuda:2"),
             lambda: cuda.memory_reserved(2), lambda: cuda.max_memory_allocated(5),
             lambda: cuda.max_memory_reserved(5), lambda: cuda.reset_peak_memory_stats(5)]
    for call in calls:
        with pytest.raises(ValueError, match="invalid device id"):
            call()
    cuda.set_device(-1)
    cuda.set_device(0)
    cuda.synchronize(0)
    assert cuda.memory_allocated("cuda:0") == cuda.memory_allocated()
    with pytest.raises(TypeError, match="set_device"):
        cuda.set_device(1.5)


# ---- peak GPU memory (max_memory_allocated) follows the pool ----------------------------------

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
