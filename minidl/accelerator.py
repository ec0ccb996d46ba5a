"""``minidl.accelerator``: torch.accelerator's device-agnostic API. minidl's one accelerator is
CUDA through CuPy, so every function here is the ``minidl.cuda`` one, reached without naming
the device type; with no GPU, the ones that need a device raise as torch's do.

    device = minidl.accelerator.current_accelerator(check_available=True) or "cpu"
    model.to(device)
"""
from __future__ import annotations

import collections
import warnings

from . import backend, cuda

__all__ = ["current_accelerator", "current_device_idx", "current_device_index",
           "current_stream", "device_count", "device_index", "empty_cache",
           "get_device_capability", "get_memory_info", "is_available", "max_memory_allocated",
           "max_memory_reserved", "memory_allocated", "memory_reserved", "memory_stats",
           "reset_accumulated_memory_stats", "reset_peak_memory_stats", "set_device_idx",
           "set_device_index", "set_stream", "synchronize", "empty_host_cache"]

_NONE = "Cannot access accelerator device when none is available."


def _installed() -> bool:
    """torch's "available at compilation time": CuPy imports."""
    return backend._load_cupy() is not None


def current_accelerator(check_available: bool = False):
    """``minidl.device("cuda")`` where CuPy is installed (and, with ``check_available``, a GPU
    is there), else None. The device carries no index, as torch's."""
    if not _installed() or (check_available and not is_available()):
        return None
    return backend.device("cuda")


def is_available() -> bool:
    """Whether an accelerator (a CUDA GPU through CuPy) can be used now."""
    return _installed() and cuda.is_available()


def device_count() -> int:
    """How many accelerator devices there are (0 without one)."""
    return cuda.device_count() if _installed() else 0


def _index(device, optional=True, name="accelerator"):
    """A device index from None (the current one, where ``optional``), an int, a name such as
    "cuda:1" or a ``minidl.device`` of the accelerator's type."""
    if not is_available():
        raise RuntimeError(_NONE)
    if device is None:
        if not optional:
            raise ValueError(f"{name}: a device is needed (an index, 'cuda:N' or a device)")
        return cuda.current_device()
    if isinstance(device, (str, backend.device)):
        dev = backend.device(device)
        if dev.type != "cuda":
            raise ValueError(f"{name}: {dev} doesn't match the current accelerator cuda")
        return cuda.current_device() if dev.index is None else dev.index
    if isinstance(device, bool) or not isinstance(device, int):
        raise TypeError(f"{name}: expected an index, a device name or a minidl.device, got "
                        f"{type(device).__name__}")
    return device


def current_device_index() -> int:
    """The index of the accelerator device in use."""
    return _index(None)


def current_device_idx() -> int:
    """Deprecated name of ``current_device_index`` (torch's FutureWarning)."""
    warnings.warn("Use `current_device_index` instead.", FutureWarning, stacklevel=2)
    return current_device_index()


def set_device_index(device, /) -> None:
    """Use accelerator device ``device`` from now on (a negative index is a no-op)."""
    cuda.set_device(_index(device, optional=False, name="set_device_index"))


def set_device_idx(device, /) -> None:
    """Deprecated name of ``set_device_index`` (torch's FutureWarning)."""
    warnings.warn("Use `set_device_index` instead.", FutureWarning, stacklevel=2)
    set_device_index(device)


class device_index:  # noqa: N801  (torch's name)
    """``with minidl.accelerator.device_index(i):`` runs its body on device ``i`` and restores
    the previous device after; ``None`` switches nothing."""

    def __init__(self, device, /):
        self.idx, self.prev_idx = device, None

    def __enter__(self):
        if self.idx is not None:
            self.prev_idx = current_device_index()
            set_device_index(self.idx)

    def __exit__(self, *exc_info):
        if self.idx is not None:
            cuda.set_device(self.prev_idx)


def current_stream(device=None, /):
    """The stream in use on ``device`` (a ``minidl.cuda.Stream``)."""
    return cuda.current_stream(_index(device))


def set_stream(stream) -> None:
    """Make ``stream`` the current one on its device."""
    if not is_available():
        raise RuntimeError(_NONE)
    cuda.set_stream(stream)


def synchronize(device=None, /) -> None:
    """Wait for the work queued on ``device`` to finish."""
    cuda.synchronize(_index(device))


def get_device_capability(device=None, /) -> dict:
    """``{"supported_dtypes": {...}}``: the dtypes tensors on the device can hold."""
    _index(device)
    names = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128", "int8",
             "uint8", "int16", "int32", "int64", "bool")
    import minidl

    return {"supported_dtypes": {getattr(minidl, n) for n in names if hasattr(minidl, n)}}


def _memory(fn, device):
    """``minidl.cuda``'s ``fn`` on the device (raises as torch's where there is none)."""
    return fn(_index(device))


def empty_cache() -> None:
    """Return the memory pool's unused blocks to the device."""
    if not is_available():
        raise RuntimeError(_NONE)
    cuda.empty_cache()


def empty_host_cache() -> None:
    """Return the pinned host memory pool's unused blocks (CuPy's pinned pool)."""
    if not is_available():
        raise RuntimeError(_NONE)
    backend.require_cuda().get_default_pinned_memory_pool().free_all_blocks()


def memory_stats(device_index=None, /) -> collections.OrderedDict:
    """torch's allocator statistics that CuPy's pool can give (``minidl.cuda.memory_stats``)."""
    return _memory(cuda.memory_stats, device_index)


def memory_allocated(device_index=None, /) -> int:
    """Bytes held by tensors on the device."""
    return _memory(cuda.memory_allocated, device_index)


def max_memory_allocated(device_index=None, /) -> int:
    """The most bytes held by tensors at once since the last reset."""
    return _memory(cuda.max_memory_allocated, device_index)


def memory_reserved(device_index=None, /) -> int:
    """Bytes held by the memory pool (in use or cached)."""
    return _memory(cuda.memory_reserved, device_index)


def max_memory_reserved(device_index=None, /) -> int:
    """The most bytes the pool held at once since the last reset."""
    return _memory(cuda.max_memory_reserved, device_index)


def reset_peak_memory_stats(device_index=None, /) -> None:
    """Start the peaks again from what is held now."""
    _memory(cuda.reset_peak_memory_stats, device_index)


def reset_accumulated_memory_stats(device_index=None, /) -> None:
    """Zero the accumulated counters (``num_ooms``)."""
    _memory(cuda.reset_accumulated_memory_stats, device_index)


def get_memory_info(device_index=None, /) -> tuple:
    """(free, total) bytes of the device."""
    return _memory(cuda.mem_get_info, device_index)
