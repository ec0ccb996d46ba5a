"""``torch.accelerator``: the device-agnostic questions PyTorch's current tutorials ask
(``device = torch.accelerator.current_accelerator().type if torch.accelerator.is_available()
else "cpu"``). minidl's one accelerator is a CUDA GPU through CuPy, so each answer is
``minidl.cuda``'s; without CuPy or a GPU there is none, and the CPU is used."""
from __future__ import annotations

from . import backend, cuda


def is_available() -> bool:
    """Whether an accelerator (a CUDA GPU that CuPy sees) can be used."""
    return cuda.is_available()


def current_accelerator(check_available: bool = False):
    """The accelerator's device type as a ``minidl.device`` ("cuda"), or None where there is
    none (with ``check_available``, also where it is not available: minidl knows no other)."""
    if check_available and not is_available():
        return None
    return backend.device("cuda") if backend._load_cupy() is not None else None


def device_count() -> int:
    """How many accelerators there are (0 without one)."""
    return cuda.device_count()


def current_device_index() -> int:
    """The index of the accelerator this process uses."""
    return cuda.current_device()


def set_device_index(device) -> None:
    """Use accelerator ``device`` (an index, "cuda:1" or a ``minidl.device``)."""
    cuda.set_device(device)


current_device_idx = current_device_index  # torch 2.6's names, kept by torch as aliases
set_device_idx = set_device_index


def synchronize(device=None) -> None:
    """Wait for the accelerator's queued work to finish."""
    cuda.synchronize(device)
