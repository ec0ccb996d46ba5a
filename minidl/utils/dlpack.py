"""DLPack, the protocol array libraries share memory through, as ``torch.utils.dlpack``:
``from_dlpack(x)`` makes a Tensor on the memory of any object that exports it (a torch tensor,
a NumPy or CuPy array, a JAX array) or of a DLPack capsule, and ``to_dlpack(t)`` gives a
capsule of a Tensor's memory. ``Tensor.__dlpack__`` and ``__dlpack_device__`` (installed
here) let the others import minidl's tensors the same way: no copy, so a write through one
shows in the other. NumPy carries the CPU side (its arrays are minidl's) and CuPy the GPU's.
"""
from __future__ import annotations

import ctypes

import numpy as np

from .. import backend
from ..tensor import Tensor

__all__ = ["from_dlpack", "to_dlpack"]

# DLDeviceType values (dlpack.h)
_CPU, _CUDA, _CUDA_HOST, _CUDA_MANAGED = 1, 2, 3, 13
_HOST_READABLE = (_CPU, _CUDA_HOST)  # NumPy imports these
_ON_GPU = (_CUDA, _CUDA_MANAGED)


def _tensor_dlpack(self, *, stream=None, max_version=None, dl_device=None, copy=None):
    """A DLPack capsule of this tensor's memory (``torch.Tensor.__dlpack__``): no copy unless
    ``copy=True``. A tensor that requires grad is refused, as torch refuses it."""
    if self.requires_grad:
        raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
    options = {}
    if backend.device_of(self.data) == "cuda" and stream is not None and stream != -1:
        options["stream"] = stream  # the consumer's stream, which CuPy orders the export on
    for name, value in (("max_version", max_version), ("dl_device", dl_device),
                        ("copy", copy)):
        if value is not None:
            options[name] = value
    try:
        return self.data.__dlpack__(**options)
    except (BufferError, TypeError) as e:
        raise BufferError(f"__dlpack__: a {self.dtype} tensor of shape {tuple(self.shape)} on "
                          f"{self.device} cannot be exported through DLPack ({e})") from None


def _tensor_dlpack_device(self):
    """(DLPack device type, device index) of this tensor's memory: (1, 0) on the CPU, (2, i)
    on GPU i."""
    return tuple(int(v) for v in self.data.__dlpack_device__())


Tensor.__dlpack__ = _tensor_dlpack
Tensor.__dlpack_device__ = _tensor_dlpack_device


class _Capsule:
    """A bare DLPack capsule (what ``to_dlpack`` returns) dressed as an exporter, so NumPy or
    CuPy can take it: its device is read from the DLTensor the capsule holds."""

    def __init__(self, capsule):
        self.capsule = capsule
        self.device = _capsule_device(capsule)

    def __dlpack__(self, **options):
        return self.capsule

    def __dlpack_device__(self):
        return self.device


def _capsule_device(capsule):
    """The (device_type, device_id) of the DLTensor in an unused "dltensor" capsule: DLTensor
    starts with its data pointer, then the device (two int32s)."""
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.restype, is_valid.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]
    if not is_valid(capsule, b"dltensor"):
        raise RuntimeError("from_dlpack received an invalid capsule. Note that DLTensor capsules "
                           "can be consumed only once, so you might have already constructed "
                           "a tensor from it once.")
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get(capsule, b"dltensor")
    device = (ctypes.c_int32 * 2).from_address(address + ctypes.sizeof(ctypes.c_void_p))
    return int(device[0]), int(device[1])


def _is_capsule(obj):
    return type(obj).__name__ == "PyCapsule"


def from_dlpack(ext_tensor, *, device=None, copy=None) -> Tensor:
    """A Tensor on the memory of ``ext_tensor``: an object with ``__dlpack__`` (a torch tensor,
    a NumPy or CuPy array, a minidl Tensor) or a DLPack capsule (``to_dlpack``'s; it can be
    used once). Writes through either show in the other. ``device`` asks for the result on
    a device (a copy where the data is elsewhere, which ``copy=False`` refuses); ``copy=True``
    always copies."""
    if _is_capsule(ext_tensor):
        source = _Capsule(ext_tensor)
    elif hasattr(ext_tensor, "__dlpack__") and hasattr(ext_tensor, "__dlpack_device__"):
        source = ext_tensor
    else:
        raise TypeError(f"from_dlpack: expected an object with __dlpack__ (a tensor or an "
                        f"array) or a DLPack capsule, got {type(ext_tensor).__name__}")
    kind = int(source.__dlpack_device__()[0])
    if kind in _HOST_READABLE:
        try:
            array = np.from_dlpack(source, copy=copy)
        except TypeError:  # NumPy before 2.1 takes no copy=
            array = np.from_dlpack(source)
            array = array.copy() if copy else array
    elif kind in _ON_GPU:
        cp = backend.require_cuda()
        array = cp.from_dlpack(source)
        array = array.copy() if copy else array
    else:
        raise BufferError(f"from_dlpack: the data is on DLPack device type {kind}; minidl "
                          "takes CPU (1), CUDA (2), pinned host (3) and managed (13) memory")
    out = Tensor(array)
    if device is not None:
        want = backend.normalize_device(device)
        if out.device != want:
            if copy is False:
                raise BufferError(f"from_dlpack: the data is on {out.device} and "
                                  f"device={device!r} was asked, which needs a copy, but "
                                  "copy=False")
            out = out.to(want)
    return out


def to_dlpack(tensor) -> object:
    """A DLPack capsule of ``tensor``'s memory (no copy), for a library that takes capsules;
    it can be imported once."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dlpack: expected a minidl.Tensor, got {type(tensor).__name__}")
    return tensor.__dlpack__()
