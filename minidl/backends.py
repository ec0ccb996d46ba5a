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
instructions. Each is importable as a module (``import minidl.backends.cudnn as cudnn``), as
in torch.
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


class _Cuda:
    matmul = _TF32Flag()


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
        """"AVX512", "AVX2" or "DEFAULT" on x86-64 (torch's names), from ``minidl.cpu``."""
        from . import cpu

        caps = cpu.get_capabilities()
        if caps.get("avx512_f") and caps.get("avx512_bw") and caps.get("avx512_vl"):
            return "AVX512"
        return "AVX2" if caps.get("avx2") else "DEFAULT"


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
