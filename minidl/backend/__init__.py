"""Which array module runs an op, and moving arrays between devices.

Every op asks ``get_array_module(*arrays)`` for numpy or cupy instead of naming numpy, so the
CUDA backend is the same code running on another array module.
"""
from __future__ import annotations

import os

import numpy as np

from . import torch_random  # torch's random engine and recipes (imports only NumPy here)

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


class DeviceName(str):
    """What ``Tensor.device`` returns: the device's name as a string ("cpu" or "cuda"), so
    that ``x.device == "cuda"``, ``f"{x.device}"`` and dict lookups work as they always have,
    with torch.device's ``.type`` and ``.index`` (``x.device.type`` in device-agnostic code:
    ``minidl.autocast(x.device.type)``). It equals ``minidl.device`` of the same type."""

    __slots__ = ()

    @property
    def type(self):  # noqa: A003  (torch.device's name)
        return str(self)

    @property
    def index(self):
        """None on the CPU; the process's GPU on CUDA (as torch's ``cuda:0``)."""
        if self != "cuda" or _cupy is None:
            return None
        return int(_cupy.cuda.Device().id)

    def __repr__(self):
        index = self.index
        return f"device(type='{self}'" + ("" if index is None else f", index={index}") + ")"

    def __reduce__(self):  # a copy, deepcopy or unpickled one keeps .type and .index
        return DeviceName, (str(self),)


CPU_DEVICE, CUDA_DEVICE = DeviceName("cpu"), DeviceName("cuda")


def device_of(array) -> str:
    cp = _cupy
    if cp is not None:
        if isinstance(array, cp.ndarray):
            return CUDA_DEVICE
        if isinstance(array, _SparseArray):  # a sparse tensor's: where its values are
            return device_of(array.values)
    return CPU_DEVICE


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

    def __enter__(self):
        """``with minidl.device("cuda"):`` factory functions create there inside the block,
        as torch's (the device before it comes back at the end, nested blocks too)."""
        _DEVICE_BLOCKS.append(_default_device)
        set_default_device(self.type)
        return self

    def __exit__(self, *exc_info):
        set_default_device(_DEVICE_BLOCKS.pop())
        return False


_DEVICE_BLOCKS = []  # the default device outside each ``with device(...)`` block entered


def normalize_device(device) -> str:
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name == "cpu" or (name.startswith("cpu:") and name[4:].isdigit()):  # torch's cpu:0
        return "cpu"
    if name == "cuda" or name.startswith("cuda:") or name == "gpu":
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


_default_device = "cpu"  # where factory functions put tensors (minidl.set_default_device)


def default_device() -> str:
    return _default_device


def set_default_device(device) -> None:
    """Factory functions (zeros, tensor of a list, ...) create on ``device`` (None: the CPU)."""
    global _default_device
    _default_device = normalize_device(device)


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


class OutOfMemoryError(RuntimeError, MemoryError):
    """The GPU ran out of memory (``torch.OutOfMemoryError``, also ``minidl.cuda.
    OutOfMemoryError``): a RuntimeError, as torch's, and a MemoryError, as the CuPy error it
    stands for, so code written for either catches it. minidl raises it from an op, a backward
    pass, or a tensor made on or moved to the GPU, where CuPy raised
    ``cupy.cuda.memory.OutOfMemoryError``."""


_oom_count = [0]  # how many CuPy allocations failed (memory_stats()["num_ooms"])


def translated_oom(exc):
    """``exc`` as a minidl OutOfMemoryError where it is CuPy's out-of-memory error, else None
    (a host MemoryError stays what it is, as torch's CPU allocator raises its own)."""
    if isinstance(exc, OutOfMemoryError):
        return None
    cp = _cupy
    memory = getattr(getattr(cp, "cuda", None), "memory", None)
    cupy_oom = getattr(memory, "OutOfMemoryError", None)
    if not (isinstance(cupy_oom, type) and isinstance(exc, cupy_oom)):
        return None
    _oom_count[0] += 1
    return OutOfMemoryError(f"CUDA out of memory. {exc} (free the pool's cached blocks with "
                            "minidl.cuda.empty_cache(), or use smaller batches)")


def to_device(array, device: str):
    """Copy an array to 'cpu' (numpy) or 'cuda' (cupy); no copy when it is already there."""
    device = normalize_device(device)
    if isinstance(array, _SparseArray):  # each of its index and value arrays
        return array.map_arrays(lambda a: to_device(a, device))
    if device == "cpu":
        if device_of(array) == "cuda":
            return _cupy.asnumpy(array)
        return np.asarray(array)
    cp = require_cuda()
    try:
        return cp.asarray(array)
    except MemoryError as exc:
        oom = translated_oom(exc)
        if oom is None:
            raise
        raise oom from exc


def to_numpy(array) -> np.ndarray:
    if isinstance(array, _SparseArray):  # no numpy array of a sparse one: refused, naming it
        return np.asarray(array)
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


# ---- random generators -----------------------------------------------------------------------
# The random functions draw from a Generator's mt19937 (torch's engine, torch_random.py), on the host (a draw for a CUDA
# tensor is copied there once), so one seed gives the same numbers on either device; only GPU
# dropout draws on the GPU, from CuPy's global generator, which manual_seed seeds too.
# ``default_generator`` is the process-wide one that manual_seed seeds and ``rng()`` returns.
_DEFAULT_SEED = 67280421310721  # torch.Generator().initial_seed(): a fresh Generator's seed


def _check_seed(name, seed):
    """A seed as torch takes it: an integer in [-2**63, 2**64), a negative one modulo 2**64."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}: seed must be an integer, got {seed!r}")
    seed = int(seed)
    if not -2**63 <= seed < 2**64:
        raise ValueError(f"{name}: seed {seed} is out of range: a seed must lie in "
                         f"[-2**63, 2**64)")
    return seed % 2**64


def _fresh_seed():
    return int(np.random.SeedSequence().entropy % 2**63)


class GeneratorStateError(ValueError, RuntimeError):
    """A state that is not one ``get_state`` returned: torch raises RuntimeError, minidl's
    argument errors are ValueErrors; this is both."""


class Generator:
    """A random generator of its own, as ``torch.Generator(device="cpu")``: the random functions
    and samplers that take ``generator=`` draw from it instead of the process-wide generator
    (``minidl.default_generator``), which it leaves untouched. ``manual_seed(seed)`` (returns
    the generator), ``seed()``, ``initial_seed()``, ``get_state()``/``set_state(state)`` (a
    uint8 Tensor, opaque as torch's ByteTensor, that replays the draws that followed it),
    ``clone_state()`` and ``device`` as torch's. A fresh one is seeded with torch's default
    seed, 67280421310721. Its engine is torch's: mt19937 seeded as torch's, and rand, randn,
    randint, randperm, uniform_, normal_ and nn.init draw from it with torch's recipes, so after
    the same seed they give torch's numbers (docs/from-pytorch.md lists which do). The draws
    that have no torch recipe here use a NumPy Generator over the same mt19937 (``rng()``).
    A CUDA generator (which needs a GPU, as torch's) draws on the host and its draws are
    copied to the GPU, as every minidl draw for a CUDA tensor is; the random functions refuse
    a generator of another device than the tensor they make, as torch does."""

    def __init__(self, device="cpu"):
        if not isinstance(device, (str, _device_class)):
            raise TypeError(f"Generator(): device must be a string or a minidl.device, got "
                            f"{type(device).__name__}")
        self.device = _device_class(device)  # as torch's: Generator("cuda:0").device has index 0
        if self.device.type == "cuda":
            require_cuda()
        self._set_seed(_DEFAULT_SEED)

    def _set_seed(self, seed):
        """Seed as torch's CPU generator: mt19937 from the seed's low 32 bits, no cached normal
        sample. The NumPy Generator over that mt19937 is kept (and reseeded in place), so
        whoever holds it (``rng()``) draws from the same stream."""
        self._initial_seed = seed
        if getattr(self, "_gen", None) is None:
            self._gen = np.random.Generator(np.random.MT19937())
        self._gen.bit_generator.state = torch_random.seeded_state(seed)
        self._normal_double = None  # torch's cached second Box-Muller sample (double)
        self._normal_float = None  # and its float one (kept in the state, as torch's)

    def manual_seed(self, seed):
        """Seed this generator (any integer in [-2**63, 2**64)); returns the generator."""
        self._set_seed(_check_seed("manual_seed", seed))
        return self

    def seed(self):
        """Seed from the operating system's entropy; returns that seed."""
        seed = _fresh_seed()
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        """The seed of the last manual_seed or seed (the default seed if none)."""
        return self._initial_seed

    # get_state() and set_state(state) take and give a uint8 Tensor, as torch's; they are
    # installed by minidl/runtime.py (the layer above tensor.py) around these two
    def _state_array(self):
        """The generator's state as uint8 bytes in torch's CPU layout (5056 bytes): a state
        moves between minidl and torch both ways."""
        return torch_random.state_bytes(self)

    def _load_state_array(self, array):
        """Put back what ``_state_array`` (or torch's ``get_rng_state``) gave."""
        try:
            torch_random.load_state_bytes(self, np.asarray(array, dtype=np.uint8))
        except ValueError as e:
            raise GeneratorStateError(f"set_state: not a state get_state returned ({e})") \
                from None
        return self

    def clone_state(self):
        """A new generator of the same device in this one's state (they then draw alike)."""
        twin = Generator.__new__(Generator)
        twin.device = self.device
        twin._gen = None
        twin._set_seed(self._initial_seed)
        twin._load_state_array(self._state_array())
        return twin

    def __repr__(self):
        return f"<minidl.Generator device='{self.device}' initial_seed={self._initial_seed}>"


_device_class = device  # Generator's argument is named device, as torch's


class _DefaultGenerator(Generator):
    """``minidl.default_generator``: the process-wide Generator (CPU). Seeding it also seeds
    CuPy's global generator, which GPU dropout draws from."""

    def manual_seed(self, seed):
        return manual_seed(seed)

    def __reduce__(self):  # a copy of the loader that holds it (spawned workers) gets this one
        return "default_generator"

    def __repr__(self):
        return f"<minidl.default_generator initial_seed={self._initial_seed}>"


default_generator = _DefaultGenerator.__new__(_DefaultGenerator)
default_generator.device = device("cpu")
default_generator._set_seed(int(np.random.SeedSequence().entropy) % 2**64)


def manual_seed(seed: int):
    """Seed every random source minidl uses (initialisation, dropout, shuffling). Any integer
    in [-2**63, 2**64), as in PyTorch (a negative one is taken modulo 2**64). Returns the
    default generator (``minidl.default_generator``), as torch.manual_seed does."""
    global _pending_seed
    seed = _check_seed("manual_seed", seed)
    default_generator._set_seed(seed)
    if _cuda_ready:
        _cupy.random.seed(seed)
    else:
        _pending_seed = seed  # CuPy's generator is seeded when the GPU is first used
    return default_generator


def initial_seed() -> int:
    """The seed of the default generator (the last manual_seed, or the one drawn at import)."""
    return default_generator._initial_seed


def rng() -> np.random.Generator:
    """The NumPy generator of the process-wide generator (``minidl.default_generator``)."""
    return default_generator._gen


def generator_rng(generator, device="cpu", name="random") -> np.random.Generator:
    """The NumPy generator a draw for a tensor on ``device`` takes: ``generator``'s (a
    minidl.Generator of that device type, as torch requires) or the process-wide one."""
    return generator_of(generator, device, name)._gen


def generator_of(generator, device="cpu", name="random") -> Generator:
    """The minidl Generator a draw for a tensor on ``device`` takes (``generator`` checked as
    ``generator_rng`` does, or the process-wide one); torch_random's draws take it."""
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        kind = type(generator)
        raise TypeError(f"{name}: generator must be a minidl.Generator, got "
                        f"{kind.__module__}.{kind.__qualname__}".replace("builtins.", ""))
    want = normalize_device(device)
    if generator.device.type != want:
        raise RuntimeError(f"{name}: Expected a '{want}' device type for generator but found "
                           f"'{generator.device.type}'")
    return generator


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

from .sparse import SparseArray as _SparseArray  # noqa: E402  (sparse arrays, for device_of)
