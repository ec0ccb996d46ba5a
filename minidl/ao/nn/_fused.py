"""The base of the fused float modules (``intrinsic``), in a module of its own so that the QAT
and quantized modules can recognise a fused module without importing ``intrinsic``, which
imports them."""
from __future__ import annotations

from ... import nn


class _FusedModule(nn.Sequential):
    """The fused modules' base: a Sequential whose parts must be of the listed types."""

    _PARTS = ()

    def __init__(self, *modules):
        got = tuple(type(m) for m in modules)
        if len(got) != len(self._PARTS) or any(g is not p for g, p in zip(got, self._PARTS)):
            raise AssertionError(
                f"{type(self).__name__}: incorrect types for input modules: expected "
                f"({', '.join(p.__name__ for p in self._PARTS)}), got "
                f"({', '.join(g.__name__ for g in got)})")
        super().__init__(*modules)
