"""``torch.compiler``'s names: minidl runs eagerly (no graph compiler), so ``compile`` is
``minidl.compile`` (which returns the model), ``disable`` and the other decorators leave
functions as they are, and ``is_compiling()`` is False."""
from __future__ import annotations

from .runtime import compile  # noqa: F401

__all__ = ["compile", "disable", "is_compiling", "is_dynamo_compiling", "reset",
           "allow_in_graph", "assume_constant_result", "cudagraph_mark_step_begin"]


def disable(fn=None, recursive=True, *, reason=None):
    """``@torch.compiler.disable``: the function stays as it is (it runs eagerly anyway)."""
    if fn is None:
        return lambda f: f
    return fn


def is_compiling() -> bool:
    return False


is_dynamo_compiling = is_compiling


def reset():
    """Nothing compiled, nothing to forget."""


def allow_in_graph(fn):
    return fn


def assume_constant_result(fn):
    return fn


def cudagraph_mark_step_begin():
    """No CUDA graphs here: nothing to mark."""
