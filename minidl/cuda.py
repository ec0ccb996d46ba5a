"""``torch.cuda``'s everyday functions: ``minidl.cuda.is_available()``, ``device_count()``,
``synchronize()``, ``manual_seed()``, memory figures from CuPy's pool, ``empty_cache()``.

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
