"""PyTorch's legacy tensor types, which older scripts still use: ``minidl.FloatTensor(2, 3)``
(an uninitialised 2x3 float32 tensor), ``minidl.LongTensor([1, 2])`` (int64 from data),
``isinstance(x, minidl.FloatTensor)`` (a float32 tensor on the CPU), ``x.type(minidl.LongTensor)``,
and ``minidl.cuda.FloatTensor`` for tensors on the GPU. They are not classes of their own
objects: constructing one gives a plain ``minidl.Tensor``, as in PyTorch, where every tensor
is a ``torch.Tensor`` and these names are checks and constructors."""
from __future__ import annotations

import numbers

import numpy as np

from .backend.dtypes import as_dtype
from .tensor import _TYPE_NAMES, Tensor

__all__ = list(_TYPE_NAMES.values())


class _LegacyType(type):
    """The metaclass of the legacy names: isinstance checks dtype and device; calling makes a
    Tensor (sizes give an uninitialised one, data a copy in this dtype)."""

    def __instancecheck__(cls, obj):
        return (isinstance(obj, Tensor) and np.dtype(obj.dtype) == cls.dtype
                and (obj.device != "cpu") == cls.is_cuda)

    def __subclasscheck__(cls, sub):
        return sub is cls

    def __call__(cls, *args, device=None):
        device = "cuda" if cls.is_cuda else (device or "cpu")
        if len(args) == 1 and not isinstance(args[0], numbers.Integral):
            data = args[0]
            if isinstance(data, Tensor):
                if np.dtype(data.dtype) != cls.dtype:
                    raise TypeError(f"{cls.__name__}(tensor): expected a {cls.dtype} tensor, got "
                                    f"{data.dtype} (use tensor.type({cls.__name__}) to convert)")
                return data
            if isinstance(data, tuple) and data and all(isinstance(s, numbers.Integral)
                                                         for s in data) and type(data) is not tuple:
                return cls(*data, device=device)  # a minidl.Size: sizes
            if data is None or isinstance(data, numbers.Number) or isinstance(data, (str, bytes)):
                raise TypeError(f"{cls.__name__}(): data must be a sequence (got "
                                f"{type(data).__name__})")
            return Tensor(np.asarray(data.numpy() if hasattr(data, "numpy") else data,
                                     dtype=cls.dtype), device=device)
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in args):
            raise TypeError(f"{cls.__name__}(): expected sizes (ints) or one sequence of data, got "
                            f"{', '.join(type(a).__name__ for a in args)}")
        if any(s < 0 for s in args):
            raise ValueError(f"{cls.__name__}(): negative size in {tuple(args)}")
        shape = tuple(int(s) for s in args) if args else (0,)
        return Tensor(np.empty(shape, dtype=cls.dtype), device=device)

    @property
    def dtype(cls):
        return as_dtype(cls._dtype_name)  # bfloat16 loads ml_dtypes only when asked

    def __repr__(cls):
        return f"<class '{cls.__module__.split('.')[0]}.{'cuda.' if cls.is_cuda else ''}{cls.__name__}'>"


def _make(name, dtype_name, cuda):
    return _LegacyType(name, (), {"_dtype_name": dtype_name, "is_cuda": cuda,
                                  "__module__": __name__,
                                  "__doc__": f"{'GPU ' if cuda else ''}{dtype_name} tensors "
                                             "(legacy name): a check and a constructor."})


CPU = {name: _make(name, dtype, False) for dtype, name in _TYPE_NAMES.items()}
CUDA = {name: _make(name, dtype, True) for dtype, name in _TYPE_NAMES.items()}
globals().update(CPU)
