"""Backend switches with PyTorch's names: ``minidl.backends.cuda.matmul.allow_tf32 = True``.

``minidl.backends.cudnn.benchmark`` and ``.deterministic`` take what a PyTorch script sets:
minidl picks one cuDNN algorithm per convolution shape without timing candidates, whatever
``benchmark`` says, and ``deterministic`` is kept for ``use_deterministic_algorithms`` to
read. ``minidl.backends.mps.is_available()`` is False: minidl has no Apple-GPU backend.

float32 matrix products and convolutions share one TF32 switch (``minidl.backends.cuda.matmul``
and ``minidl.backends.cudnn`` are the same flag), off by default. ``minidl.backends.cudnn``
also says whether cuDNN was found (``is_available()``, ``version()``) and turns its
convolutions off or on (``enabled``; see ``minidl/backend/cudnn.py``).
"""
from __future__ import annotations

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
