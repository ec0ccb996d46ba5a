"""``torch.cuda``'s everyday functions: ``minidl.cuda.is_available()``, ``device_count()``,
``synchronize()``, ``manual_seed()``, memory figures from CuPy's pool (the peak of what was in
use too, ``max_memory_allocated``; ``memory_stats()``, ``memory_summary()``), ``empty_cache()``,
``is_bf16_supported()``, the device's properties, streams and events (``Stream``, ``Event``,
``stream()``) on CuPy's, the random state, ``nvtx`` ranges, ``OutOfMemoryError``, and
``minidl.cuda.amp``, the deprecated names of ``minidl.autocast("cuda")`` and ``GradScaler``.

minidl runs one GPU per process (``minidl.distributed`` picks it from the local rank), so the
functions that take a device accept one for PyTorch's signatures and use this process's GPU.
None of them imports CuPy unless asked about the GPU; ``is_available()`` is False, not an
error, where CuPy or a GPU is missing.
"""
from __future__ import annotations

import collections
import sys
import types
import warnings

import numpy as np

from . import backend
from .backend import OutOfMemoryError  # noqa: F401  (torch.cuda.OutOfMemoryError)


def is_available() -> bool:
    """Whether CuPy imports and sees at least one GPU."""
    return backend.cuda_available()


def device_count() -> int:
    """How many GPUs CuPy sees (0 without CuPy or a GPU)."""
    cp = backend._load_cupy()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def current_device() -> int:
    """The index of this process's GPU."""
    return int(backend.require_cuda().cuda.Device().id)


def set_device(device) -> None:
    """Run this process's CUDA work on GPU ``device`` (an index, ``"cuda:1"`` or a
    ``minidl.device``)."""
    if isinstance(device, (str, backend.device)):
        device = backend.device(device)
        if device.type != "cuda":
            raise ValueError(f"set_device: expected a CUDA device, got {device}")
        device = device.index or 0
    if isinstance(device, bool) or not isinstance(device, (int, np.integer)):
        raise TypeError(f"set_device: expected a device index, a device name or a "
                        f"minidl.device, got {type(device).__name__}")
    if device < 0:  # torch's no-op
        return
    _checked_index(int(device), "set_device")  # as torch's "invalid device ordinal"
    backend.use_device(int(device))


def is_initialized() -> bool:
    """Whether minidl has started using the GPU (False until the first CUDA tensor, ``init()``
    or another call that needs the GPU)."""
    return bool(backend._cuda_ready)


def init() -> None:
    """Start using the GPU now (torch does it lazily too); raises where CuPy or a GPU is
    missing."""
    backend.require_cuda()


def _device_index(device, name, cp=None):
    """The GPU index a ``device`` argument names (None, -1, an int, "cuda:1", a
    minidl.device): this process's GPU where it names none."""
    if isinstance(device, (str, backend.device)):
        d = backend.device(device)
        if d.type != "cuda":
            raise ValueError(f"{name}: Expected a cuda device, but got: {d}")
        device = d.index
    cp = cp or backend.require_cuda()
    if device is None or (isinstance(device, int) and device < 0):
        return int(cp.cuda.Device().id)
    if isinstance(device, bool) or not isinstance(device, (int, np.integer)):
        raise TypeError(f"{name}: expected a device index, a device name or a minidl.device, "
                        f"got {type(device).__name__}")
    count = int(cp.cuda.runtime.getDeviceCount())
    if not 0 <= device < count:
        raise ValueError(f"{name}: invalid device id {device}: this machine has {count} "
                         f"GPU{'s' if count != 1 else ''}")
    return int(device)


def _checked_index(device, name):
    """Refuse a ``device`` argument that names no GPU of this machine (where there is a GPU to
    ask: without one these functions answer as torch's CPU-only build)."""
    if is_available():  # CuPy's module, without starting CUDA (memory_stats is empty before)
        _device_index(device, name, backend._load_cupy())


def _text(value):
    return value.decode(errors="replace").rstrip("\x00") if isinstance(value, bytes) \
        else str(value)


class _CudaDeviceProperties:
    """What ``get_device_properties`` returns: torch's field names, read from CUDA's
    cudaDeviceProp (through CuPy); a field CuPy does not report is None."""

    _FIELDS = (  # torch's name, cudaDeviceProp's
        ("name", "name"), ("major", "major"), ("minor", "minor"),
        ("total_memory", "totalGlobalMem"), ("multi_processor_count", "multiProcessorCount"),
        ("is_integrated", "integrated"), ("is_multi_gpu_board", "isMultiGpuBoard"),
        ("max_threads_per_multi_processor", "maxThreadsPerMultiProcessor"),
        ("warp_size", "warpSize"), ("regs_per_multiprocessor", "regsPerMultiprocessor"),
        ("shared_memory_per_block", "sharedMemPerBlock"),
        ("shared_memory_per_multiprocessor", "sharedMemPerMultiprocessor"),
        ("L2_cache_size", "l2CacheSize"), ("clock_rate", "clockRate"),
        ("memory_clock_rate", "memoryClockRate"), ("memory_bus_width", "memoryBusWidth"),
        ("pci_bus_id", "pciBusID"), ("pci_device_id", "pciDeviceID"),
        ("pci_domain_id", "pciDomainID"), ("uuid", "uuid"))

    def __init__(self, props):
        for field, key in self._FIELDS:
            value = props.get(key)
            if field == "name":
                value = _text(value)
            elif field == "uuid" and value is not None:
                value = _uuid_text(value)
            elif field in ("is_integrated", "is_multi_gpu_board") and value is not None:
                value = bool(value)
            elif value is not None:
                value = int(value)
            setattr(self, field, value)

    def __repr__(self):
        mem = (self.total_memory or 0) // 2**20
        l2 = (self.L2_cache_size or 0) // 2**20
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, "
                f"minor={self.minor}, total_memory={mem}MB, "
                f"multi_processor_count={self.multi_processor_count}, uuid={self.uuid}, "
                f"pci_bus_id={self.pci_bus_id}, pci_device_id={self.pci_device_id}, "
                f"pci_domain_id={self.pci_domain_id}, L2_cache_size={l2}MB)")


def _uuid_text(raw):
    """cudaDeviceProp.uuid (16 bytes) as torch prints it: 8-4-4-4-12 hex digits."""
    if isinstance(raw, str):
        return raw
    h = bytes(raw).hex() if not isinstance(raw, (bytes, bytearray)) else raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def get_device_properties(device=None) -> _CudaDeviceProperties:
    """The properties of GPU ``device`` (this process's GPU by default): ``name``,
    ``total_memory`` (bytes), ``major``/``minor`` (compute capability),
    ``multi_processor_count`` and torch's other fields."""
    cp = backend.require_cuda()
    index = _device_index(device, "get_device_properties", cp)
    return _CudaDeviceProperties(dict(cp.cuda.runtime.getDeviceProperties(index)))


def get_device_capability(device=None) -> tuple:
    """The compute capability (major, minor) of GPU ``device``: (8, 0) for an A100."""
    props = get_device_properties(device)
    return props.major, props.minor


def get_device_name(device=None) -> str:
    """The name of GPU ``device`` (this process's GPU by default)."""
    return get_device_properties(device).name


def get_arch_list() -> list:
    """The CUDA architectures minidl's kernels are built for: CuPy compiles them when first
    run, for the GPU at hand, so its ``sm_XY`` ([] without CUDA, as torch's)."""
    if not is_available():
        return []
    major, minor = get_device_capability()
    return [f"sm_{major}{minor}"]


def synchronize(device=None) -> None:
    """Wait until the GPU has finished the work queued so far (for timing)."""
    _checked_index(device, "synchronize")
    if backend.cuda_available():
        backend.require_cuda().cuda.Device().synchronize()


def is_current_stream_capturing() -> bool:
    """False: minidl records no CUDA graphs."""
    return False


# ---- the random state ----------------------------------------------------------------------
# minidl has one generator for all devices: the random functions draw a CUDA tensor's values
# on the host, from minidl.default_generator, and only GPU dropout draws on the GPU, from
# CuPy's global generator. So the CUDA generator's seed is minidl's seed, and the CUDA random
# state is both of those: putting it back makes the CUDA draws that followed repeat.
def manual_seed(seed: int) -> None:
    """Seed the random sources (minidl has one seed for all devices, ``minidl.manual_seed``)."""
    backend.manual_seed(seed)


manual_seed_all = manual_seed


def seed() -> None:
    """Seed the random sources from the operating system's entropy (as ``minidl.seed()``:
    minidl's one generator serves every device)."""
    backend.manual_seed(backend._fresh_seed())


seed_all = seed


def initial_seed() -> int:
    """The seed of the generator CUDA draws come from (``minidl.initial_seed()``)."""
    backend.require_cuda()
    return backend.initial_seed()


def _fork_cupy_generator(cp):
    """A seed drawn from CuPy's global generator, which then restarts from that seed: CuPy's
    generator state cannot be read, but from here on its draws are a function of the seed (and
    of its draws before, so two reads do not give the same seed)."""
    draw = cp.asnumpy(cp.random.get_random_state().random_sample((2,), dtype=np.float64))
    value = (int(draw[0] * 2**53) << 10 ^ int(draw[1] * 2**53)) % 2**63
    cp.random.set_random_state(cp.random.RandomState(value))
    return value


def get_rng_state(device="cuda"):
    """The CUDA random state as a uint8 Tensor (on the CPU, opaque, as torch's ByteTensor):
    ``set_rng_state`` of it makes the CUDA draws that followed repeat. It holds minidl's
    generator, which CUDA draws come from, and a seed CuPy's generator restarts from here."""
    import json

    from .tensor import Tensor

    cp = backend.require_cuda()
    _device_index(device, "get_rng_state", cp)
    host = backend.default_generator._state_array().tolist()  # torch's CPU layout, as bytes
    text = json.dumps({"cuda": 1, "generator": host,
                       "cupy": _fork_cupy_generator(cp)})
    return Tensor(np.frombuffer(text.encode("ascii"), dtype=np.uint8).copy())


def set_rng_state(new_state, device="cuda") -> None:
    """Put back a state ``get_rng_state`` returned. Without CUDA it does nothing, as torch's
    (which would apply it when CUDA starts)."""
    import json

    from .tensor import Tensor

    if not isinstance(new_state, Tensor) or np.dtype(new_state.dtype) != np.uint8 \
            or new_state.ndim != 1:
        raise TypeError("set_rng_state: expected the uint8 Tensor get_rng_state returned, got "
                        + (f"a {new_state.dtype} Tensor of shape {tuple(new_state.shape)}"
                           if isinstance(new_state, Tensor) else type(new_state).__name__))
    if not is_available():
        return
    cp = backend.require_cuda()
    _device_index(device, "set_rng_state", cp)
    try:
        state = json.loads(new_state.numpy().tobytes().decode("ascii"))
        host = np.asarray(state["generator"], dtype=np.uint8)
        cupy_seed = int(state["cupy"])
    except (ValueError, TypeError, KeyError) as e:
        raise backend.GeneratorStateError(
            f"set_rng_state: not a state minidl.cuda.get_rng_state returned ({e})") from None
    backend.default_generator._load_state_array(host)
    cp.random.set_random_state(cp.random.RandomState(cupy_seed))


def get_rng_state_all() -> list:
    """One CUDA random state per GPU ([] without CUDA): minidl's one generator serves them
    all, so they are alike."""
    count = device_count()
    if count == 0:
        return []
    state = get_rng_state()
    return [state.clone() for _ in range(count)]


def set_rng_state_all(new_states) -> None:
    """Put back what ``get_rng_state_all`` returned: this process's GPU takes its entry."""
    new_states = list(new_states)
    if not new_states or not is_available():
        return
    index = current_device()
    set_rng_state(new_states[index if index < len(new_states) else 0])


def _pool():
    return backend.require_cuda().get_default_memory_pool()


def memory_allocated(device=None) -> int:
    """Bytes of GPU memory held by arrays now (CuPy's pool: in use)."""
    _checked_index(device, "memory_allocated")
    return int(_pool().used_bytes()) if is_available() else 0


def memory_reserved(device=None) -> int:
    """Bytes of GPU memory the pool holds, in use or cached for reuse."""
    _checked_index(device, "memory_reserved")
    return int(_pool().total_bytes()) if is_available() else 0


def memory_cached(device=None) -> int:
    """Deprecated name of ``memory_reserved``."""
    warnings.warn("`minidl.cuda.memory_cached` has been renamed to `minidl.cuda.memory_reserved`",
                  FutureWarning, stacklevel=2)
    return memory_reserved(device)


def mem_get_info(device=None) -> tuple:
    """(free, total) bytes of the GPU's memory, as the driver reports them (memory the pool
    caches counts as used)."""
    cp = backend.require_cuda()
    _device_index(device, "mem_get_info", cp)
    free, total = cp.cuda.runtime.memGetInfo()
    return int(free), int(total)


def set_per_process_memory_fraction(fraction, device=None) -> None:
    """Cap the pool at ``fraction`` (0 to 1) of the GPU's memory: an allocation beyond it
    raises OutOfMemoryError (CuPy's ``MemoryPool.set_limit(fraction=...)``)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (float, int)):
        raise TypeError(f"set_per_process_memory_fraction: invalid type for fraction "
                        f"argument, must be float, got {type(fraction).__name__}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
    cp = backend.require_cuda()
    _device_index(device, "set_per_process_memory_fraction", cp)
    _pool().set_limit(fraction=float(fraction))


def get_per_process_memory_fraction(device=None) -> float:
    """The pool's cap as a fraction of the GPU's memory (1.0 where none is set)."""
    cp = backend.require_cuda()
    _device_index(device, "get_per_process_memory_fraction", cp)
    limit = int(_pool().get_limit())
    if limit == 0:
        return 1.0
    return limit / mem_get_info()[1]


def empty_cache() -> None:
    """Give the pool's cached, unused blocks back to the driver."""
    if is_available():
        _pool().free_all_blocks()
        backend.require_cuda().get_default_pinned_memory_pool().free_all_blocks()


# ---- peaks: CuPy's pool keeps no high-water mark, so minidl's allocator notes one ----------
_peak = {"allocated": 0, "reserved": 0}
_tracking = []  # the pool whose allocations are being watched, once a peak was asked for


def _track_peaks():
    """From now on, every allocation from CuPy's pool updates the peaks (a Python call per
    allocation: installed only once a program asks for a peak, as a benchmark does)."""
    if _tracking or not is_available():
        return
    cp = backend.require_cuda()
    pool = _pool()

    def malloc(size):
        memory = pool.malloc(size)
        used, held = pool.used_bytes(), pool.total_bytes()
        if used > _peak["allocated"]:
            _peak["allocated"] = used
        if held > _peak["reserved"]:
            _peak["reserved"] = held
        return memory

    cp.cuda.set_allocator(malloc)
    _tracking.append(pool)
    reset_peak_memory_stats()


def max_memory_allocated(device=None) -> int:
    """The most GPU memory held by arrays at once since ``reset_peak_memory_stats()`` (or since
    the first call of this or that function: watching the pool starts then)."""
    if not is_available():
        return 0
    _checked_index(device, "max_memory_allocated")
    _track_peaks()
    return max(_peak["allocated"], memory_allocated())


def max_memory_reserved(device=None) -> int:
    """The most GPU memory the pool held at once (in use or cached), as ``max_memory_allocated``."""
    if not is_available():
        return 0
    _checked_index(device, "max_memory_reserved")
    _track_peaks()
    return max(_peak["reserved"], memory_reserved())


def reset_peak_memory_stats(device=None) -> None:
    """Start the peaks again from what is held now."""
    if not is_available():
        return
    _checked_index(device, "reset_peak_memory_stats")
    if not _tracking:
        _track_peaks()
        return
    _peak["allocated"], _peak["reserved"] = memory_allocated(), memory_reserved()


reset_max_memory_allocated = reset_peak_memory_stats


def reset_accumulated_memory_stats(device=None) -> None:
    """Zero the accumulated counters of ``memory_stats()`` (``num_ooms``: CuPy's pool counts
    no allocations or frees for minidl to reset)."""
    if not is_available():
        return
    _checked_index(device, "reset_accumulated_memory_stats")
    backend._oom_count[0] = 0


def max_memory_cached(device=None) -> int:
    """Deprecated name of ``max_memory_reserved``."""
    warnings.warn("`minidl.cuda.max_memory_cached` has been renamed to "
                  "`minidl.cuda.max_memory_reserved`", FutureWarning, stacklevel=2)
    return max_memory_reserved(device)


def reset_max_memory_cached(device=None) -> None:
    """Deprecated name of ``reset_peak_memory_stats``."""
    warnings.warn("minidl.cuda.reset_max_memory_cached now calls "
                  "minidl.cuda.reset_peak_memory_stats, which resets all peak memory stats.",
                  FutureWarning, stacklevel=2)
    reset_peak_memory_stats(device)


def memory_stats(device=None) -> collections.OrderedDict:
    """torch's statistics, those CuPy's pool can give: ``allocated_bytes.all.current`` and
    ``.peak`` (held by arrays), ``reserved_bytes.all.*`` (held by the pool, in use or cached),
    ``active_bytes.all.*`` (as allocated: CuPy frees a block when its array goes),
    ``inactive_split_bytes.all.current`` (cached, unused) and ``num_ooms``. Empty before CUDA
    is first used, as torch's. Asking starts the peak watch (see max_memory_allocated)."""
    _checked_index(device, "memory_stats")
    if not is_initialized():
        return collections.OrderedDict()
    allocated, reserved = memory_allocated(device), memory_reserved(device)
    peak_allocated, peak_reserved = max_memory_allocated(device), max_memory_reserved(device)
    stats = {
        "active_bytes.all.current": allocated, "active_bytes.all.peak": peak_allocated,
        "allocated_bytes.all.current": allocated, "allocated_bytes.all.peak": peak_allocated,
        "inactive_split_bytes.all.current": reserved - allocated,
        "num_ooms": backend._oom_count[0],
        "reserved_bytes.all.current": reserved, "reserved_bytes.all.peak": peak_reserved,
    }
    return collections.OrderedDict(sorted(stats.items()))


def _size_text(n):
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def memory_summary(device=None, abbreviated=False) -> str:
    """A table of ``memory_stats()``: current and peak bytes held by arrays and by the pool,
    and the count of failed allocations (zeros before CUDA is first used)."""
    stats = memory_stats(device)
    get = stats.get
    rows = [
        ("Allocated memory", get("allocated_bytes.all.current", 0),
         get("allocated_bytes.all.peak", 0)),
        ("Active memory", get("active_bytes.all.current", 0), get("active_bytes.all.peak", 0)),
        ("GPU reserved memory", get("reserved_bytes.all.current", 0),
         get("reserved_bytes.all.peak", 0)),
        ("Non-releasable memory", get("inactive_split_bytes.all.current", 0), None),
    ]

    def row(*cells):
        return "| " + " | ".join(cells) + " |"

    head = row(f"{'Metric':<22}", f"{'Cur Usage':>11}", f"{'Peak Usage':>11}")
    width = len(head) - 2
    rule = "|" + "=" * width + "|"

    def line(text):
        return "|" + f" {text}".ljust(width) + "|"

    lines = [rule, line("minidl CUDA memory summary (CuPy's memory pool)"),
             line(f"CUDA OOMs: {get('num_ooms', 0)}"), rule, head, "|" + "-" * width + "|"]
    for label, current, peak in rows:
        lines.append(row(f"{label:<22}", f"{_size_text(current):>11}",
                         f"{'' if peak is None else _size_text(peak):>11}"))
    lines.append(rule)
    return "\n".join(lines) + "\n"


def list_gpu_processes(device=None) -> str:
    """The processes using GPU ``device`` and their memory, from NVML (the ``nvidia-ml-py``
    package), as torch prints them; without it, a line that says so, as torch's."""
    try:
        import pynvml
    except ImportError:
        return "pynvml module not found, please install nvidia-ml-py"
    index = _device_index(device, "list_gpu_processes")
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError as e:
        return f"pynvml: {e}"
    lines = [f"GPU:{index}"]
    if not procs:
        lines.append("no processes are running")
    for p in procs:
        used = (p.usedGpuMemory or 0) / 2**20
        lines.append(f"process {p.pid:>10d} uses {used:>12.3f} MB GPU memory")
    return "\n".join(lines)


def is_bf16_supported(including_emulation=True) -> bool:
    """Whether this GPU computes in bfloat16 (compute capability 8.0, Ampere, or newer)."""
    if not is_available():
        return False
    cp = backend.require_cuda()
    major = int(cp.cuda.Device().compute_capability[:-1] or 0)
    return major >= 8


# ---- streams and events: CuPy's, with torch's interface -----------------------------------
class Stream:
    """A CUDA stream (``torch.cuda.Stream``): a queue of GPU work that runs in order,
    independent of other streams. ``priority`` 0 is the default, negative numbers run first.
    minidl's ops queue on the current stream (CuPy's): ``with minidl.cuda.stream(s):``."""

    def __init__(self, device=None, priority=0, **kwargs):
        cp = backend.require_cuda()
        self.device_index = _device_index(device, "Stream", cp)
        if isinstance(priority, bool) or not isinstance(priority, (int, np.integer)):
            raise TypeError(f"Stream: priority must be an integer, got {priority!r}")
        # as torch's pool streams: no implicit synchronisation with the legacy default stream
        options = {"non_blocking": True}
        if priority:
            options["priority"] = int(priority)
        self._stream = cp.cuda.Stream(**options)
        self.priority = int(priority)

    @classmethod
    def _wrap(cls, cupy_stream, device_index=None, priority=0):
        self = cls.__new__(cls)
        self._stream = cupy_stream
        self.device_index = device_index if device_index is not None else current_device()
        self.priority = priority
        return self

    @property
    def device(self):
        return backend.device("cuda", self.device_index)

    device_type = 1  # torch's DeviceType.CUDA

    @property
    def cuda_stream(self) -> int:
        """The raw cudaStream_t, as an integer (0 for the legacy default stream)."""
        return int(self._stream.ptr)

    @property
    def stream_id(self) -> int:
        return self.cuda_stream

    def query(self) -> bool:
        """Whether all the work queued on this stream has finished."""
        return bool(self._stream.done)

    def synchronize(self) -> None:
        """Wait until all the work queued on this stream has finished."""
        self._stream.synchronize()

    def record_event(self, event=None):
        """Record ``event`` (a new one where None) on this stream; returns it."""
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event) -> None:
        """Work queued on this stream from now on waits for ``event``'s (not the host)."""
        if not isinstance(event, Event):
            raise TypeError(f"wait_event: expected a minidl.cuda.Event, got "
                            f"{type(event).__name__}")
        event.wait(self)

    def wait_stream(self, stream) -> None:
        """Work queued on this stream from now on waits for what ``stream`` has queued."""
        if not isinstance(stream, Stream):
            raise TypeError(f"wait_stream: expected a minidl.cuda.Stream, got "
                            f"{type(stream).__name__}")
        self.wait_event(stream.record_event())

    def __eq__(self, other):
        if not isinstance(other, Stream):
            return NotImplemented
        return self.cuda_stream == other.cuda_stream and self.device_index == other.device_index

    def __hash__(self):
        return hash((self.cuda_stream, self.device_index))

    def __enter__(self):
        self._context = StreamContext(self)
        return self._context.__enter__()

    def __exit__(self, *exc):
        self._context.__exit__(*exc)

    def __repr__(self):
        return (f"<minidl.cuda.{type(self).__name__} device=cuda:{self.device_index} "
                f"cuda_stream={hex(self.cuda_stream)}>")


class ExternalStream(Stream):
    """A stream made elsewhere (another library), wrapped from its raw cudaStream_t; minidl
    neither owns nor destroys it (CuPy's ExternalStream)."""

    def __init__(self, stream_ptr, device=None, **kwargs):
        cp = backend.require_cuda()
        if isinstance(stream_ptr, bool) or not isinstance(stream_ptr, (int, np.integer)):
            raise TypeError(f"ExternalStream: stream_ptr must be an integer (a cudaStream_t), "
                            f"got {type(stream_ptr).__name__}")
        self.device_index = _device_index(device, "ExternalStream", cp)
        self._stream = cp.cuda.ExternalStream(int(stream_ptr), self.device_index)
        self.priority = 0


def current_stream(device=None) -> Stream:
    """The stream minidl's work is queued on now."""
    cp = backend.require_cuda()
    index = _device_index(device, "current_stream", cp)
    return Stream._wrap(cp.cuda.get_current_stream(), index)


def default_stream(device=None) -> Stream:
    """The default stream (CUDA's legacy default stream, raw handle 0)."""
    cp = backend.require_cuda()
    index = _device_index(device, "default_stream", cp)
    return Stream._wrap(cp.cuda.Stream.null, index)


def set_stream(stream) -> None:
    """Queue minidl's work on ``stream`` from now on (None: no change, as torch's)."""
    if stream is None:
        return
    if not isinstance(stream, Stream):
        raise TypeError(f"set_stream: expected a minidl.cuda.Stream, got {type(stream).__name__}")
    stream._stream.use()


class StreamContext:
    """Inside, minidl's work is queued on ``stream``; the stream before comes back on exit.
    ``None`` makes it do nothing, as torch's."""

    def __init__(self, stream):
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError(f"stream: expected a minidl.cuda.Stream or None, got "
                            f"{type(stream).__name__}")
        self.stream = stream
        self._before = []

    def __enter__(self):
        if self.stream is not None:
            cp = backend.require_cuda()
            self._before.append(cp.cuda.get_current_stream())
            self.stream._stream.use()
        return self.stream

    def __exit__(self, *exc):
        if self.stream is not None:
            self._before.pop().use()


def stream(stream) -> StreamContext:
    """``with minidl.cuda.stream(s):`` queues the work inside on ``s``."""
    return StreamContext(stream)


class Event:
    """A CUDA event (``torch.cuda.Event``): a mark in a stream's queue, to wait for or to time
    GPU work with (``enable_timing=True``, then ``start.elapsed_time(end)`` in ms)."""

    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        cp = backend.require_cuda()
        self.enable_timing = bool(enable_timing)
        self._event = cp.cuda.Event(block=bool(blocking), disable_timing=not enable_timing,
                                    interprocess=bool(interprocess))
        self._recorded = False

    @property
    def cuda_event(self) -> int:
        return int(getattr(self._event, "ptr", 0))

    def record(self, stream=None) -> None:
        """Mark the work queued so far on ``stream`` (the current stream by default)."""
        stream = current_stream() if stream is None else stream
        if not isinstance(stream, Stream):
            raise TypeError(f"record: expected a minidl.cuda.Stream, got {type(stream).__name__}")
        self._event.record(stream._stream)
        self._recorded = True

    def wait(self, stream=None) -> None:
        """Work queued on ``stream`` (the current one) from now on waits for this event."""
        stream = current_stream() if stream is None else stream
        if not isinstance(stream, Stream):
            raise TypeError(f"wait: expected a minidl.cuda.Stream, got {type(stream).__name__}")
        if self._recorded:  # as CUDA: waiting for an event never recorded waits for nothing
            stream._stream.wait_event(self._event)

    def query(self) -> bool:
        """Whether the work the event marks has finished (True if never recorded)."""
        return True if not self._recorded else bool(self._event.done)

    def synchronize(self) -> None:
        """Wait (on the host) until the work the event marks has finished."""
        if self._recorded:
            self._event.synchronize()

    def elapsed_time(self, end_event) -> float:
        """Milliseconds between this event and ``end_event`` (both recorded, with timing)."""
        if not isinstance(end_event, Event):
            raise TypeError(f"elapsed_time: expected a minidl.cuda.Event, got "
                            f"{type(end_event).__name__}")
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("elapsed_time: both events must be created with argument "
                               "'enable_timing=True'")
        if not (self._recorded and end_event._recorded):
            raise RuntimeError("elapsed_time: both events must be recorded before calculating "
                               "elapsed time")
        end_event.synchronize()  # CUDA refuses the span of an event still pending
        return float(backend.require_cuda().cuda.get_elapsed_time(self._event, end_event._event))

    def __repr__(self):
        if not self._recorded:
            return "<minidl.cuda.Event uninitialized>"
        return f"<minidl.cuda.Event {hex(self.cuda_event)}>"


class device:
    """``with minidl.cuda.device(i):`` runs the CUDA work inside on GPU ``i`` (None or a
    negative index: no change); the GPU before comes back on exit."""

    def __init__(self, device):
        self.idx = device
        self._before = []

    def __enter__(self):
        idx = self.idx
        if idx is None or (isinstance(idx, int) and idx < 0):
            return self
        cp = backend.require_cuda()
        self._before.append(int(cp.cuda.Device().id))
        set_device(_device_index(idx, "device", cp))
        return self

    def __exit__(self, *exc):
        if self._before:
            set_device(self._before.pop())


class device_of(device):
    """``with minidl.cuda.device_of(t):`` runs on the GPU of tensor ``t`` (no change for a
    CPU tensor)."""

    def __init__(self, obj):
        on_cuda = str(getattr(obj, "device", "cpu")).startswith("cuda")
        super().__init__(current_device() if on_cuda else None)


# ---- NVTX ranges (for Nsight): CuPy's where it has them, else they only count depth ---------
def _nvtx_module():
    def cupy_nvtx():
        cp = backend.cupy_module() if backend._cuda_ready else None
        nvtx = getattr(getattr(cp, "cuda", None), "nvtx", None)
        if nvtx is None or not getattr(nvtx, "available", True):
            return None
        return nvtx

    depth = [0]
    module = types.ModuleType(__name__ + ".nvtx", "NVTX ranges and marks, shown in Nsight "
                              "Systems (CuPy's cupy.cuda.nvtx; they do nothing without it).")

    def range_push(msg):
        """Open a nested range named ``msg``; returns its zero-based depth."""
        nvtx = cupy_nvtx()
        if nvtx is not None:
            nvtx.RangePush(str(msg))
        depth[0] += 1
        return depth[0] - 1

    def range_pop():
        """Close the innermost range; returns its depth (-1 where none is open)."""
        if depth[0] == 0:
            return -1
        nvtx = cupy_nvtx()
        if nvtx is not None:
            nvtx.RangePop()
        depth[0] -= 1
        return depth[0]

    def mark(msg):
        """An instant event named ``msg``."""
        nvtx = cupy_nvtx()
        if nvtx is not None:
            nvtx.Mark(str(msg))

    ids = [0]

    def range_start(msg):
        """Open a range named ``msg`` that need not nest (closed by ``range_end(its id)``);
        returns its id. CuPy has no such ranges, so this one is not shown in Nsight."""
        ids[0] += 1
        return ids[0]

    def range_end(range_id):
        """Close the range ``range_start`` returned ``range_id`` for."""

    import contextlib

    @contextlib.contextmanager
    def range(msg, *args, **kwargs):  # noqa: A001  (torch's name)
        """``with nvtx.range("step {}", i):`` a range around the block (``msg.format(...)``)."""
        range_push(msg.format(*args, **kwargs))
        try:
            yield
        finally:
            range_pop()

    for fn in (range_push, range_pop, mark, range, range_start, range_end):
        fn.__module__ = module.__name__
        setattr(module, fn.__name__, fn)
    return module


nvtx = _nvtx_module()
sys.modules[nvtx.__name__] = nvtx


class _Amp:
    """``torch.cuda.amp``'s deprecated names: ``autocast(...)`` is ``minidl.autocast("cuda",
    ...)``, ``GradScaler(...)`` is ``minidl.amp.GradScaler("cuda", ...)`` and ``custom_fwd``/
    ``custom_bwd`` are ``minidl.amp``'s with ``device_type="cuda"``, each with torch's
    FutureWarning."""

    @staticmethod
    def autocast(enabled=True, dtype=None, cache_enabled=True):
        from .amp.deprecated import device_autocast

        return device_autocast("cuda", enabled, dtype)

    @staticmethod
    def GradScaler(init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,  # noqa: N802
                   growth_interval=2000, enabled=True):
        from .amp.deprecated import device_grad_scaler

        return device_grad_scaler("cuda", init_scale, growth_factor, backoff_factor,
                                  growth_interval, enabled)

    @staticmethod
    def custom_fwd(fwd=None, *, cast_inputs=None):
        from .amp import custom_fwd

        warnings.warn("`minidl.cuda.amp.custom_fwd(args...)` is deprecated. Please use "
                      "`minidl.amp.custom_fwd(args..., device_type='cuda')` instead.",
                      FutureWarning, stacklevel=2)
        return custom_fwd(fwd, device_type="cuda", cast_inputs=cast_inputs)

    @staticmethod
    def custom_bwd(bwd=None):
        from .amp import custom_bwd

        warnings.warn("`minidl.cuda.amp.custom_bwd(args...)` is deprecated. Please use "
                      "`minidl.amp.custom_bwd(args..., device_type='cuda')` instead.",
                      FutureWarning, stacklevel=2)
        return custom_bwd(bwd, device_type="cuda")


amp = _Amp()


# torch.cuda.FloatTensor and the other legacy GPU tensor types (minidl.legacy_types)
from .legacy_types import CUDA as _LEGACY_TYPES  # noqa: E402

globals().update(_LEGACY_TYPES)
