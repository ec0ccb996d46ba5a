"""Backend switches with PyTorch's names: ``minidl.backends.cuda.matmul.allow_tf32 = True``.

minidl's convolutions are GEMMs, so the one switch covers ``torch.backends.cudnn.allow_tf32``
too (``minidl.backends.cudnn.allow_tf32`` is the same flag).
"""
from __future__ import annotations

from . import backend


class _TF32Flag:
    @property
    def allow_tf32(self) -> bool:
        return backend.allow_tf32()

    @allow_tf32.setter
    def allow_tf32(self, flag):
        backend.allow_tf32(bool(flag))


class _Cuda:
    matmul = _TF32Flag()


cuda = _Cuda()
cudnn = _TF32Flag()
