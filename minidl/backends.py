"""Backend switches with PyTorch's names: ``minidl.backends.cuda.matmul.allow_tf32 = True``.

``minidl.backends.cudnn.benchmark`` and ``.deterministic`` take what a PyTorch script sets:
minidl picks one cuDNN algorithm per convolution shape without timing candidates, whatever
``benchmark`` says, and ``deterministic`` is kept for ``use_deterministic_algorithms`` to
read. ``minidl.backends.mps.is_available()`` is False: minidl has no Apple-GPU backend.

float32 matrix products and convolutions share one TF32 switch (``minidl.backends.cuda.matmul``
and ``minidl.backends.cudnn`` are the same flag), off by default. ``minidl.backends.cudnn``
also says whether cuDNN was found (``is_available()``, ``version()``) and turns its
convolutions off or on (``enabled``; see ``minidl/backend/cudnn.py``).

The CPU's switches answer for what minidl runs on: ``mkldnn`` and ``mkl`` are not used (NumPy's
OpenBLAS and minidl's numba kernels are), ``openmp`` says whether numba can run its parallel
loops on OpenMP, ``opt_einsum`` whether that package is there (``minidl.einsum`` lets NumPy
choose the contraction order either way), ``cpu.get_cpu_capability()`` the widest vector
instructions (or, as torch's, the level that ``ATEN_CPU_CAPABILITY`` names). Each is
importable as a module (``import minidl.backends.cudnn as cudnn``), as in torch.
"""
from __future__ import annotations

import contextlib
import sys

from . import backend
from .backend import cudnn as _cudnn


class _TF32Flag:
    @property
    def allow_tf32(self) -> bool:
        return backend.allow_tf32()

    @allow_tf32.setter
    def allow_tf32(self, flag):
        backend.allow_tf32(bool(flag))


class _Matmul(_TF32Flag):
    """``backends.cuda.matmul``: the TF32 switch, and the reduced-precision reductions minidl's
    cuBLAS calls leave to cuBLAS (kept as set). A name it does not have is refused, as torch
    refuses it, so a misspelt switch is not silently ignored."""
    _names = ("allow_tf32", "allow_fp16_reduced_precision_reduction",
              "allow_bf16_reduced_precision_reduction", "fp32_precision")

    def __init__(self):
        object.__setattr__(self, "_kept", {"allow_fp16_reduced_precision_reduction": True,
                                           "allow_bf16_reduced_precision_reduction": True,
                                           "fp32_precision": "none"})

    def __getattr__(self, name):
        kept = object.__getattribute__(self, "_kept")
        if name in kept:
            return kept[name]
        raise AttributeError(f"Unknown attribute {name}")

    def __setattr__(self, name, value):
        if name not in self._names:
            raise AttributeError(f"Unknown attribute {name} (backends.cuda.matmul has "
                                 f"{', '.join(self._names)})")
        if name == "allow_tf32":
            object.__setattr__(self, name, value)
        else:
            self._kept[name] = value


class _Cuda:
    """``backends.cuda``: the matmul switches and the scaled-dot-product-attention backend
    switches, which minidl keeps as set (its attention has one path on every device)."""
    matmul = _Matmul()

    def __init__(self):
        self._sdp = {"flash": True, "mem_efficient": True, "math": True, "cudnn": True}

    @staticmethod
    def is_built() -> bool:
        """Whether minidl can run on CUDA here (CuPy imports), torch's "built with CUDA"."""
        return backend._load_cupy() is not None

    def flash_sdp_enabled(self):
        return self._sdp["flash"]

    def enable_flash_sdp(self, enabled):
        self._sdp["flash"] = bool(enabled)

    def mem_efficient_sdp_enabled(self):
        return self._sdp["mem_efficient"]

    def enable_mem_efficient_sdp(self, enabled):
        self._sdp["mem_efficient"] = bool(enabled)

    def math_sdp_enabled(self):
        return self._sdp["math"]

    def enable_math_sdp(self, enabled):
        self._sdp["math"] = bool(enabled)

    def cudnn_sdp_enabled(self):
        return self._sdp["cudnn"]

    def enable_cudnn_sdp(self, enabled):
        self._sdp["cudnn"] = bool(enabled)


class _Cudnn(_TF32Flag):
    benchmark = False  # accepted; minidl chooses cuDNN algorithms without timing them
    deterministic = False

    @property
    def enabled(self) -> bool:
        """Whether CUDA convolutions use cuDNN where it is available (else im2col + cuBLAS)."""
        return _cudnn.enabled()

    @enabled.setter
    def enabled(self, flag):
        _cudnn.enabled(bool(flag))

    @staticmethod
    def is_available() -> bool:
        return _cudnn.is_available()

    @staticmethod
    def version():
        return _cudnn.version()

    @contextlib.contextmanager
    def flags(self, enabled=False, benchmark=False, benchmark_limit=10, deterministic=False,
              allow_tf32=True, fp32_precision="none", depthwise_kernel="auto"):
        """Set ``enabled``, ``benchmark``, ``deterministic`` and ``allow_tf32`` inside the block,
        as torch's ``cudnn.flags`` (its defaults too), and put them back after it."""
        saved = self.enabled, self.benchmark, self.deterministic, self.allow_tf32
        self.enabled, self.benchmark, self.deterministic = enabled, benchmark, deterministic
        self.allow_tf32 = allow_tf32
        try:
            yield
        finally:
            self.enabled, self.benchmark, self.deterministic, self.allow_tf32 = saved


cuda = _Cuda()
cudnn = _Cudnn()


class _Mps:
    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def is_built() -> bool:
        return False


mps = _Mps()


class _Mkldnn:
    """oneDNN is not part of minidl: ``is_available()`` is False; ``enabled`` and
    ``deterministic`` keep what a script sets."""
    enabled = False
    deterministic = False

    @staticmethod
    def is_available() -> bool:
        return False

    @contextlib.contextmanager
    def flags(self, enabled=False, deterministic=False):
        saved = self.enabled, self.deterministic
        self.enabled, self.deterministic = enabled, deterministic
        try:
            yield
        finally:
            self.enabled, self.deterministic = saved


class _Mkl:
    @staticmethod
    def is_available() -> bool:
        return False  # NumPy's BLAS is OpenBLAS in its wheels


class _OpenMP:
    @staticmethod
    def is_available() -> bool:
        """Whether numba's OpenMP threading layer loads (its parallel loops may use it)."""
        try:
            from numba.np.ufunc import omppool  # noqa: F401
        except ImportError:
            return False
        return True


class _OptEinsum:
    """``opt_einsum``'s presence; ``enabled``/``strategy`` keep what a script sets (NumPy's
    einsum path search runs either way)."""
    enabled = True
    strategy = "auto"

    @staticmethod
    def get_opt_einsum():
        try:
            import opt_einsum
        except ImportError:
            return None
        return opt_einsum

    def is_available(self) -> bool:
        return self.get_opt_einsum() is not None


class _Cpu:
    @staticmethod
    def get_cpu_capability() -> str:
        """"AVX512", "AVX2" or "DEFAULT" on x86-64 (torch's names), from ``minidl.cpu``; or
        the level the environment variable ``ATEN_CPU_CAPABILITY`` names ("avx512", "avx2" or
        "default", lower case, taken as given, as torch takes it), warning and ignoring any
        other value as torch does."""
        from .backend.capabilities import cpu_capability

        return cpu_capability()


class _Mha:
    _fastpath = True

    def get_fastpath_enabled(self) -> bool:
        return self._fastpath

    def set_fastpath_enabled(self, value: bool) -> None:
        self._fastpath = bool(value)  # one attention path serves all in minidl


mkldnn, mkl, openmp, opt_einsum, cpu, mha = _Mkldnn(), _Mkl(), _OpenMP(), _OptEinsum(), _Cpu(), \
    _Mha()
for _name in ("cuda", "cudnn", "mps", "mkldnn", "mkl", "openmp", "opt_einsum", "cpu", "mha"):
    sys.modules[f"{__name__}.{_name}"] = globals()[_name]  # import minidl.backends.cudnn
del _name
