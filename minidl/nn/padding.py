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


class _ZeroPadNd(_PadNd):
    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ZeroPad1d(_ZeroPadNd):
    """Zeros on both sides of the last dim."""

    _dims = 1


class ZeroPad2d(_ZeroPadNd):
    """Zeros around the last two dims (left, right, top, bottom)."""

    _dims = 2


class ZeroPad3d(_ZeroPadNd):
    _dims = 3


class ConstantPad1d(_ConstantPadNd):
    _dims = 1


class ConstantPad2d(_ConstantPadNd):
    _dims = 2


class ConstantPad3d(_ConstantPadNd):
    _dims = 3


class _ReflectionPadNd(_PadNd):
    _mode = "reflect"

    def __init__(self, padding):
        super().__init__(padding)


class ReflectionPad1d(_ReflectionPadNd):
    _dims = 1


class ReflectionPad2d(_ReflectionPadNd):
    _dims = 2


class ReflectionPad3d(_ReflectionPadNd):
    _dims = 3


class ReplicationPad1d(_ReflectionPadNd):
    _dims, _mode = 1, "replicate"


class ReplicationPad2d(_ReflectionPadNd):
    _dims, _mode = 2, "replicate"


class ReplicationPad3d(_ReflectionPadNd):
    _dims, _mode = 3, "replicate"


class CircularPad1d(_ReflectionPadNd):
    _dims, _mode = 1, "circular"


class CircularPad2d(_ReflectionPadNd):
    _dims, _mode = 2, "circular"


class CircularPad3d(_ReflectionPadNd):
    _dims, _mode = 3, "circular"
