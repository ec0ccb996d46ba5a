"""Which array module runs an op, and moving arrays between devices.

Every op asks ``get_array_module(*arrays)`` for numpy or cupy instead of naming numpy, so the
CUDA backend is the same code running on another array module.
"""
from __future__ import annotations

import os

import numpy as np

_cupy = None
_cupy_error: str | None = None
_cupy_checked = False


def _load_cupy():
    """Import CuPy lazily: importing minidl must stay fast and must not touch the GPU."""
    global _cupy, _cupy_error, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy  # noqa: F401

            _cupy = cupy
        except Exception as exc:  # ImportError, or a broken CUDA install
            _cupy_error = f"{type(exc).__name__}: {exc}"
    return _cupy


def cupy_module():
    """CuPy if it is already imported by someone (cheap check used on hot paths)."""
    return _cupy


def get_array_module(*arrays):
    """numpy or cupy, whichever holds the arrays (numpy for Python scalars)."""
    cp = _cupy
    if cp is not None:
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return cp
    return np


def device_of(array) -> str:
    cp = _cupy
    if cp is not None and isinstance(array, cp.ndarray):
        return "cuda"
    return "cpu"


class device:
    """A device by PyTorch's name: ``minidl.device("cuda")``, ``device("cuda:0")``,
    ``device("cpu")``. ``.type`` and ``.index`` as torch's; it compares equal to its name and to
    its type (``device("cuda:0") == "cuda"``), and every ``device=`` argument and ``.to()``
    takes it. minidl runs one GPU per process, so a CUDA device means this process's GPU."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):  # noqa: A002  (PyTorch's argument name)
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        if not isinstance(type, str):
            raise TypeError(f"device(): expected a string such as 'cuda' or 'cpu', got {type!r}")
        name, _, number = type.strip().lower().partition(":")
        if number:
            if index is not None:
                raise ValueError(f"device(): type {type!r} already names an index")
            if not number.isdigit():
                raise ValueError(f"device(): invalid device index in {type!r}")
            index = int(number)
        if name not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {type!r}: expected 'cpu' or 'cuda'")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise ValueError(f"device(): index must be a non-negative integer, got {index!r}")
        self.type, self.index = name, index

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        if not isinstance(other, device):
            return NotImplemented
        if self.type != other.type:
            return False
        return self.index is None or other.index is None or self.index == other.index

    def __hash__(self):
        return hash(self.type)


def normalize_device(device) -> str:
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:") or name == "gpu":
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def cuda_available() -> bool:
    cp = _load_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


_cuda_ready = False
_pending_seed: int | None = None
_device_index: int | None = None  # the GPU of this process (minidl.distributed: the local rank)


def use_device(index: int) -> None:
    """Run this process's CUDA work on GPU ``index`` (modulo the GPU count, so ranks may share
    one). Takes effect when CUDA is first used, or at once if it already is."""
    global _device_index
    _device_index = int(index)
    if _cuda_ready:
        _select_device(_cupy)


def _select_device(cp):
    if _device_index is not None:
        cp.cuda.Device(_device_index % cp.cuda.runtime.getDeviceCount()).use()


def require_cuda():
    """Return cupy, or raise one RuntimeError saying what is missing and how to get it."""
    global _cuda_ready, _pending_seed
    if _cuda_ready:
        return _cupy
    cp = _load_cupy()
    if cp is None:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed or failed to import "
            f"({_cupy_error}); install it with `pip install minidl[cuda13]` "
            "(or `minidl[cuda12]` for CUDA 12)"
        )
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(
            f"device 'cuda' needs an NVIDIA GPU with a working driver; CuPy found none ({exc})"
        ) from None
    if count == 0:
        raise RuntimeError("device 'cuda' needs an NVIDIA GPU; CuPy found none")
    _select_device(cp)
    if _pending_seed is not None:  # manual_seed ran before the GPU was first used
        cp.random.seed(_pending_seed)
        _pending_seed = None
    _apply_tf32(cp)
    _cuda_ready = True
    return cp


def to_device(array, device: str):
    """Copy an array to 'cpu' (numpy) or 'cuda' (cupy); no copy when it is already there."""
    device = normalize_device(device)
    if device == "cpu":
        if device_of(array) == "cuda":
            return _cupy.asnumpy(array)
        return np.asarray(array)
    cp = require_cuda()
    return cp.asarray(array)


def to_numpy(array) -> np.ndarray:
    return to_device(array, "cpu")


# TF32 for float32 matrix products on CUDA (and so for convs, which are GEMMs here): off by
# default, as torch.backends.cuda.matmul.allow_tf32, unless CuPy's own CUPY_TF32=1 is set.
# float16/bfloat16 GEMMs need no switch: CuPy runs them with cuBLAS compute type 32F.
_allow_tf32 = os.environ.get("CUPY_TF32", "0") not in ("", "0")


def allow_tf32(flag=None) -> bool:
    """Read, or with ``flag`` set, whether float32 CUDA GEMMs may use TF32 tensor cores."""
    global _allow_tf32
    if flag is not None:
        _allow_tf32 = bool(flag)
        if _cuda_ready:
            _apply_tf32(_cupy)
    return _allow_tf32


def _apply_tf32(cp):
    linalg = getattr(getattr(cp, "_core", None), "_routines_linalg", None)
    if linalg is None or not hasattr(linalg, "set_compute_type"):
        return  # not CuPy's cublas path (a test stand-in)
    mode = getattr(linalg, "COMPUTE_TYPE_TF32", 7) if _allow_tf32 else \
        getattr(linalg, "COMPUTE_TYPE_DEFAULT", 1)
    linalg.set_compute_type(np.float32, mode)


# One random generator per process, seeded by minidl.manual_seed.
_initial_seed = int(np.random.SeedSequence().entropy) % 2**64
_rng = np.random.default_rng(_initial_seed)


def manual_seed(seed: int):
    """Seed every random source minidl uses (initialisation, dropout, shuffling). Any
    integer, as in PyTorch (a negative one is taken modulo 2**64). Returns the default
    generator (``minidl.default_generator``), as torch.manual_seed does."""
    global _rng, _pending_seed, _initial_seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: seed must be an integer, got {seed!r}")
    seed = int(seed) % 2**64
    _initial_seed = seed
    _rng = np.random.default_rng(seed)
    if _cuda_ready:
        _cupy.random.seed(seed)
    else:
        _pending_seed = seed  # CuPy's generator is seeded when the GPU is first used
    return default_generator


def initial_seed() -> int:
    """The seed of the default generator (the last manual_seed, or the one drawn at import)."""
    return _initial_seed


class DefaultGenerator:
    """What torch.manual_seed returns: a handle on minidl's process-wide generator
    (``minidl.default_generator``), with torch.Generator's seed methods. Its state is
    NumPy's bit-generator state (a dict), not a ByteTensor. Not torch.Generator: it makes no
    independent generators (minidl.data takes numpy Generators for those)."""

    device = "cpu"

    def manual_seed(self, seed):
        return manual_seed(seed)

    def initial_seed(self):
        return initial_seed()

    def seed(self):
        """Reseed from fresh entropy; returns the new seed."""
        seed = int(np.random.SeedSequence().entropy) % 2**64
        manual_seed(seed)
        return seed

    def get_state(self):
        return _rng.bit_generator.state

    def set_state(self, state):
        _rng.bit_generator.state = state
        return self

    def __repr__(self):
        return f"<minidl.default_generator initial_seed={initial_seed()}>"


default_generator = DefaultGenerator()


def rng() -> np.random.Generator:
    return _rng


_kernel_sets: dict = {}


def kernels(xp):
    """The kernel set for an array module: numba on the CPU, CuPy raw kernels on CUDA, with the
    generic whole-array versions as the fallback.

    The numba module is imported on the first op, not with minidl, so ``import minidl`` stays
    cheap; if numba is missing or broken the generic kernels run instead, with one warning.
    """
    ks = _kernel_sets.get(xp)
    if ks is not None:
        return ks
    import os
    import warnings

    from . import generic

    ks = generic
    if xp is np:
        if os.environ.get("MINIDL_DISABLE_NUMBA", "") not in ("", "0"):
            ks = generic
        else:
            try:
                from . import cpu as ks
            except Exception as exc:  # ImportError, or a numba/llvmlite that fails to load
                warnings.warn(f"minidl: numba kernels unavailable ({type(exc).__name__}: {exc}); "
                              "using the slower generic NumPy kernels", RuntimeWarning, stacklevel=2)
                ks = generic
    else:
        try:
            from . import cuda as ks
        except ImportError:
            ks = generic
    _kernel_sets[xp] = ks
    return ks
