"""Padding layers, as PyTorch's: ZeroPad, ConstantPad, ReflectionPad, ReplicationPad and
CircularPad in 1-D, 2-D and 3-D, each F.pad with its mode (``padding`` an int for every side
or a tuple (left, right[, top, bottom[, front, back]]))."""
from __future__ import annotations

from .. import functional as F
from .module import Module


class _PadNd(Module):
    _dims = 1
    _mode = "constant"

    def __init__(self, padding, value=0.0):
        super().__init__()
        n = 2 * self._dims
        name = type(self).__name__
        if isinstance(padding, (tuple, list)):
            if len(padding) != n:
                raise ValueError(f"{name}: padding must be an int or a tuple of {n} ints, got "
                                 f"{padding!r}")
            self.padding = tuple(F._whole(p, f"{name}: padding", padding) for p in padding)
        else:
            self.padding = (F._whole(padding, f"{name}: padding"),) * n
        self.value = value

    def forward(self, input):
        value = self.value if self._mode == "constant" else None
        return F.pad(input, self.padding, self._mode, value)

    def extra_repr(self):
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding, value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    _dims = 1


class ConstantPad2d(_ConstantPadNd):
    _dims = 2


class ConstantPad3d(_ConstantPadNd):
    _dims = 3


class _ZeroPad:
    """ZeroPadNd is ConstantPadNd with value 0, as in torch (a subclass), printed without it."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ZeroPad1d(_ZeroPad, ConstantPad1d):
    """Zeros on both sides of the last dim."""


class ZeroPad2d(_ZeroPad, ConstantPad2d):
    """Zeros around the last two dims (left, right, top, bottom)."""


class ZeroPad3d(_ZeroPad, ConstantPad3d):
    pass


class _ModePadNd(_PadNd):
    """Padding by a mode of F.pad (``_mode``): the shared body of the reflection,
    replication and circular layers, whose torch base classes are kept apart below."""
    _mode = "reflect"

    def __init__(self, padding):
        super().__init__(padding)


class _ReflectionPadNd(_ModePadNd):
    _mode = "reflect"


class _ReplicationPadNd(_ModePadNd):
    _mode = "replicate"


class _CircularPadNd(_ModePadNd):
    _mode = "circular"


class ReflectionPad1d(_ReflectionPadNd):
    _dims = 1


class ReflectionPad2d(_ReflectionPadNd):
    _dims = 2


class ReflectionPad3d(_ReflectionPadNd):
    _dims = 3


class ReplicationPad1d(_ReplicationPadNd):
    _dims = 1


class ReplicationPad2d(_ReplicationPadNd):
    _dims = 2


class ReplicationPad3d(_ReplicationPadNd):
    _dims = 3


class CircularPad1d(_CircularPadNd):
    _dims = 1


class CircularPad2d(_CircularPadNd):
    _dims = 2


class CircularPad3d(_CircularPadNd):
    _dims = 3
