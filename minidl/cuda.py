"""``torch.cuda``'s everyday functions: ``minidl.cuda.is_available()``, ``device_count()``,
``synchronize()``, ``manual_seed()``, memory figures from CuPy's pool (the peak of what was in
use too, ``max_memory_allocated``), ``empty_cache()``, ``is_bf16_supported()``, and
``minidl.cuda.amp``, the deprecated names of ``minidl.autocast("cuda")`` and ``GradScaler``.

minidl runs one GPU per process (``minidl.distributed`` picks it from the local rank), so the
functions that take a device accept one for PyTorch's signatures and use this process's GPU.
None of them imports CuPy unless asked about the GPU; ``is_available()`` is False, not an
error, where CuPy or a GPU is missing.
"""
from __future__ import annotations

from . import backend


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
    backend.use_device(int(device))


def get_device_name(device=None) -> str:
    cp = backend.require_cuda()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def synchronize(device=None) -> None:
    """Wait until the GPU has finished the work queued so far (for timing)."""
    if backend.cuda_available():
        backend.require_cuda().cuda.Device().synchronize()


def manual_seed(seed: int) -> None:
    """Seed the random sources (minidl has one seed for all devices, ``minidl.manual_seed``)."""
    backend.manual_seed(seed)


manual_seed_all = manual_seed


def _pool():
    return backend.require_cuda().get_default_memory_pool()


def memory_allocated(device=None) -> int:
    """Bytes of GPU memory held by arrays now (CuPy's pool: in use)."""
    return int(_pool().used_bytes()) if is_available() else 0


def memory_reserved(device=None) -> int:
    """Bytes of GPU memory the pool holds, in use or cached for reuse."""
    return int(_pool().total_bytes()) if is_available() else 0


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
    _track_peaks()
    return max(_peak["allocated"], memory_allocated())


def max_memory_reserved(device=None) -> int:
    """The most GPU memory the pool held at once (in use or cached), as ``max_memory_allocated``."""
    if not is_available():
        return 0
    _track_peaks()
    return max(_peak["reserved"], memory_reserved())


def reset_peak_memory_stats(device=None) -> None:
    """Start the peaks again from what is held now."""
    if not is_available():
        return
    if not _tracking:
        _track_peaks()
        return
    _peak["allocated"], _peak["reserved"] = memory_allocated(), memory_reserved()


reset_max_memory_allocated = reset_peak_memory_stats


def is_bf16_supported(including_emulation=True) -> bool:
    """Whether this GPU computes in bfloat16 (compute capability 8.0, Ampere, or newer)."""
    if not is_available():
        return False
    cp = backend.require_cuda()
    major = int(cp.cuda.Device().compute_capability[:-1] or 0)
    return major >= 8


class _Amp:
    """``torch.cuda.amp``'s deprecated names: ``autocast(...)`` is ``minidl.autocast("cuda",
    ...)`` and ``GradScaler(...)`` is ``minidl.amp.GradScaler("cuda", ...)``, each with torch's
    FutureWarning."""

    @staticmethod
    def autocast(enabled=True, dtype=None, cache_enabled=True):
        import warnings

        from .amp import autocast

        warnings.warn("`minidl.cuda.amp.autocast(args...)` is deprecated. Please use "
                      "`minidl.amp.autocast('cuda', args...)` instead.", FutureWarning,
                      stacklevel=2)
        return autocast("cuda", dtype=dtype, enabled=enabled)

    @staticmethod
    def GradScaler(init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,  # noqa: N802
                   growth_interval=2000, enabled=True):
        import warnings

        from .amp import GradScaler

        warnings.warn("`minidl.cuda.amp.GradScaler(args...)` is deprecated. Please use "
                      "`minidl.amp.GradScaler('cuda', args...)` instead.", FutureWarning,
                      stacklevel=2)
        return GradScaler("cuda", init_scale, growth_factor, backoff_factor, growth_interval,
                          enabled)


amp = _Amp()
