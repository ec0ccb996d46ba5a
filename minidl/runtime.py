"""What PyTorch code asks of the framework around its tensors: ``as_tensor``, the random state
(``seed``, ``initial_seed``, ``get_rng_state``, ``set_rng_state``), dtype promotion
(``promote_types``, ``result_type``, ``can_cast``), ``Size``, ``get_num_threads``,
``set_printoptions``, ``compile``, the float32 matmul precision and the deterministic-algorithms
switch."""
from __future__ import annotations

import functools
import warnings

import numpy as np

from . import backend
from .backend.compile_args import COMPILE_BACKENDS, COMPILE_MODES  # noqa: F401  (re-exported)
from .backend.compile_args import check_compile_arguments
from .backend.dtypes import as_dtype, category
from .tensor import Size, Tensor  # noqa: F401  (Size is re-exported)

__all__ = ["as_tensor", "seed", "initial_seed", "get_rng_state", "set_rng_state",
           "promote_types", "result_type", "can_cast", "Size", "get_num_threads",
           "set_printoptions", "compile", "set_float32_matmul_precision",
           "get_float32_matmul_precision", "use_deterministic_algorithms",
           "are_deterministic_algorithms_enabled",
           "is_deterministic_algorithms_warn_only_enabled"]


def as_tensor(data, dtype=None, device=None):
    """``data`` as a Tensor, sharing its memory where it can, as ``torch.as_tensor``: a Tensor
    of the asked dtype and device is returned as it is; a NumPy array on the CPU of that dtype
    is wrapped without a copy (so a change to one shows in the other); anything else (lists,
    numbers, another dtype or device) is copied as ``minidl.tensor`` copies."""
    from .backend import device_of, normalize_device

    want_device = None if device is None else normalize_device(device)
    if isinstance(data, Tensor):
        out = data
        if dtype is not None and np.dtype(out.dtype) != as_dtype(dtype):
            out = out.to(dtype=dtype)
        if want_device is not None and out.device != want_device:
            out = out.to(want_device)
        return out
    on = device_of(data)  # "cuda" for a CuPy array (by the backend's own test)
    if on == "cuda" and want_device in (None, "cuda") and (
            dtype is None or as_dtype(dtype) == data.dtype):
        return Tensor(data)  # a CuPy array stays where it is, shared
    if on == "cpu" and isinstance(data, np.ndarray) and (want_device in (None, "cpu")) and (
            dtype is None or as_dtype(dtype) == data.dtype) and data.dtype.kind in "biuf":
        from .creation import from_numpy

        return from_numpy(data)
    from .tensor import tensor

    if dtype is None and (isinstance(data, np.ndarray) or on == "cuda"):
        dtype = data.dtype  # as torch: a float64 array stays float64 (another device: a copy)
    # a CuPy array converted to another dtype stays on the GPU unless a device is asked for
    return tensor(data, dtype=dtype, device=want_device or on)


# ---- the random state ------------------------------------------------------------------------
def seed():
    """Seed minidl's generators from the operating system's entropy and return that seed."""
    value = int(np.random.SeedSequence().entropy % 2**63)
    backend.manual_seed(value)
    return value


def initial_seed():
    """The seed of the last ``manual_seed`` or ``seed`` call (one drawn at import if none)."""
    return backend.initial_seed()


def get_rng_state():
    """The state of minidl's CPU generator (``default_generator.get_state()``) as a uint8
    Tensor (opaque, as PyTorch's ByteTensor): ``set_rng_state`` of it makes the draws that
    followed repeat. It survives ``minidl.save``."""
    return backend.default_generator.get_state()


def set_rng_state(new_state):
    """Put back a state ``get_rng_state`` returned."""
    if not isinstance(new_state, Tensor) or np.dtype(new_state.dtype) != np.uint8 \
            or new_state.ndim != 1:
        raise TypeError(f"set_rng_state: expected the uint8 Tensor get_rng_state returned, got "
                        f"{type(new_state).__name__}")
    try:
        backend.default_generator.set_state(new_state)
    except backend.GeneratorStateError as e:
        raise backend.GeneratorStateError(
            f"set_rng_state: not a state get_rng_state returned ({e})") from None


def _generator_get_state(self):
    """The generator's state as a uint8 Tensor (opaque, as torch's ByteTensor)."""
    return Tensor(self._state_array())


def _generator_set_state(self, new_state):
    """Put back a state ``get_state`` returned (of this or another generator); returns the
    generator."""
    if not isinstance(new_state, Tensor):
        raise TypeError(f"set_state: expected a uint8 Tensor (the state get_state returned), got "
                        f"{type(new_state).__name__}")
    if np.dtype(new_state.dtype) != np.uint8 or new_state.ndim != 1:
        raise TypeError(f"set_state: the RNG state must be the 1-D uint8 Tensor get_state "
                        f"returned, got dtype {new_state.dtype} and shape "
                        f"{tuple(new_state.shape)}")
    return self._load_state_array(new_state.numpy())


backend.Generator.get_state = _generator_get_state
backend.Generator.set_state = _generator_set_state


# ---- dtypes ----------------------------------------------------------------------------------
def promote_types(type1, type2):
    """The dtype two tensors of these dtypes combine to, as ``torch.promote_types``."""
    from .backend.dtypes import promote_types as promote

    return promote(as_dtype(type1), as_dtype(type2))


def result_type(tensor1, tensor2):
    """The dtype of an arithmetic op on ``tensor1`` and ``tensor2`` (Tensors or Python
    numbers), as ``torch.result_type``: dimensioned tensors first, then 0-d ones, then
    numbers, a lower tier counting only where its kind is higher."""
    from .ops import result_type as rule

    for x in (tensor1, tensor2):
        if not isinstance(x, (Tensor, bool, int, float, complex)):
            raise TypeError(f"result_type: expected Tensors or numbers, got {type(x).__name__}")
    return rule(tensor1, tensor2)


def can_cast(from_, to):
    """Whether PyTorch's type promotion allows the cast (``torch.can_cast``): never floating
    point to integer or bool, nor integer to bool; narrowing within a kind is allowed."""
    a, b = as_dtype(from_), as_dtype(to)
    if b.kind == "b":
        return a.kind == "b"
    return category(a) <= category(b)


# ---- threads, printing, compile ---------------------------------------------------------------
def get_num_threads():
    """Threads minidl's CPU kernels use (``set_num_threads`` changes it)."""
    from .backend.cpu import tuning

    tuning.configure()
    import numba

    return numba.get_num_threads()


_PRINT_PROFILES = {"default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
                   "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
                   "full": dict(precision=4, threshold=np.inf, edgeitems=3, linewidth=80)}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None,
                     profile=None, sci_mode=None):
    """How Tensors print, as ``torch.set_printoptions``: ``precision`` (decimals),
    ``threshold`` (more elements than this are summarised), ``edgeitems``, ``linewidth``,
    ``profile`` ("default", "short", "full"), ``sci_mode`` (True: always scientific, False:
    never, None, also when not given: PyTorch's choice from the values)."""
    from .tensor import PRINT_OPTIONS as options

    if profile is not None:
        if profile not in _PRINT_PROFILES:
            raise ValueError(f"set_printoptions: profile must be one of "
                             f"{sorted(_PRINT_PROFILES)}, got {profile!r}")
        options.update(_PRINT_PROFILES[profile])
    for name, value in (("precision", precision), ("threshold", threshold),
                        ("edgeitems", edgeitems), ("linewidth", linewidth)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"set_printoptions: {name} must be a non-negative number, "
                                 f"got {value!r}")
            options[name] = value
    options["sci_mode"] = sci_mode  # as torch's: every call sets it (None unless given)


_compile_warned = False


def compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None,
            options=None, disable=False):
    """``torch.compile``'s place: minidl has no graph compiler, so ``model`` runs eagerly, with
    one warning per process saying so. A function is returned as it is; a Module comes back
    wrapped as torch's is, in an ``OptimizedModule`` that runs it and whose state_dict keys
    carry the ``_orig_mod.`` prefix (``disable=True`` returns the module itself, as torch).
    As a decorator with options (``@minidl.compile(mode="max-autotune")``) it does the same.
    The arguments are checked as torch's: an unknown ``mode`` or ``backend`` name, or ``mode``
    and ``options`` together, raise at once (a typo would otherwise pass silently)."""
    check_compile_arguments(backend, mode, options)
    del fullgraph, dynamic, options

    def passthrough(fn):
        global _compile_warned
        if not callable(fn):
            raise TypeError(f"compile: expected a Module or a function, got {type(fn).__name__}")
        if not disable and not _compile_warned:
            _compile_warned = True
            warnings.warn("minidl.compile: minidl has no graph compiler; the model runs eagerly, "
                          "as it is (its CPU kernels are already compiled by numba)",
                          UserWarning, stacklevel=3)
        from .nn import Module
        from .nn._compiled import OptimizedModule

        if isinstance(fn, Module) and not disable:
            return OptimizedModule(fn)
        return fn

    if model is None:
        return functools.partial(_decorate, passthrough)
    return passthrough(model)


def _decorate(passthrough, fn):
    return passthrough(fn)


# ---- float32 matmul precision, deterministic algorithms ----------------------------------------
_PRECISIONS = ("highest", "high", "medium")


def set_float32_matmul_precision(precision):
    """torch's switch for float32 products on the GPU: "highest" computes in float32, "high"
    and "medium" allow TF32 (minidl.backends.cuda.matmul.allow_tf32; CUDA only, as in torch;
    the CPU always computes in float32)."""
    if precision not in _PRECISIONS:
        raise RuntimeError(f"Invalid precision {precision!r}: expected one of {_PRECISIONS}")
    backend.allow_tf32(precision != "highest")
    _precision[0] = precision


_precision = ["highest"]


def get_float32_matmul_precision():
    """"highest" unless TF32 is allowed (then what set_float32_matmul_precision was given, or
    "high" where TF32 was switched on through minidl.backends)."""
    if not backend.allow_tf32():
        return "highest"
    return _precision[0] if _precision[0] != "highest" else "high"


_deterministic = {"on": False, "warn_only": False}


def use_deterministic_algorithms(mode, *, warn_only=False):
    """Record torch's deterministic-algorithms switch (also read as
    ``minidl.backends.cudnn.deterministic``). minidl's CPU kernels give the same result on
    every run with the same thread count (their parallel sums are split by thread, not by
    race), and its cuDNN convolutions use one fixed algorithm per shape; CUDA index_add,
    scatter_add and embedding gradients add with atomics, whose order may vary in the last
    bits. The switch is recorded, not enforced: those ops do not raise under it."""
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms: mode must be a bool, got "
                        f"{type(mode).__name__}")
    from . import backends

    _deterministic["on"], _deterministic["warn_only"] = mode, bool(warn_only)
    backends.cudnn.deterministic = mode


def are_deterministic_algorithms_enabled():
    return _deterministic["on"]


def is_deterministic_algorithms_warn_only_enabled():
    return _deterministic["warn_only"]
