"""In-place ops while the exporter traces: ``ReLU(inplace=True)`` or ``y.add_(1)`` write into an
array an earlier op made, which a graph of values cannot follow (the ONNX graph would silently
leave the op out). While tracing, the in-place helpers of ``minidl.tensor`` are swapped for ones
that run the op out of place (the tracer records it) and make its result the tensor's array, so
later ops read the new value as the model did. A view (its base would not see the change) and
``copy_`` keep the real in-place path, which the exporter then refuses (``autograd.changes``
moved). The swap covers every module that imported the helpers by name, and is undone after."""
from __future__ import annotations

import contextlib
import sys

import importlib

_tensor = importlib.import_module("minidl.tensor")  # (minidl.tensor is also a function)


def _rebind(t, result):
    if tuple(result.shape) != tuple(t.shape) or t._is_view:
        return False
    data = result.data
    if data.dtype != t.data.dtype:
        if _tensor.category(data.dtype) > _tensor.category(t.data.dtype):
            return False  # the real path raises torch's error for it
        data = result.to(t.data.dtype).data
    t.data = data
    return True


@contextlib.contextmanager
def recorded_in_place():
    real_inplace, real_apply = _tensor._inplace, _tensor.apply_in_place

    def inplace(t, other, ufunc, out_of_place):
        if out_of_place is not None and not t._is_view:
            if _rebind(t, out_of_place(t, other)):
                return t
        return real_inplace(t, other, ufunc, out_of_place)

    def apply_in_place(t, fn, name):
        if not t._is_view and _rebind(t, fn(t)):
            return t
        return real_apply(t, fn, name)

    patched = []
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("minidl"):
            continue
        for name, value in list(vars(module).items()):
            # by identity: a module may hold unhashable objects
            if value is real_inplace or value is real_apply:
                patched.append((module, name, value))
                setattr(module, name, inplace if value is real_inplace else apply_in_place)
    try:
        yield
    finally:
        for module, name, value in patched:
            setattr(module, name, value)
