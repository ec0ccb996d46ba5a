"""``minidl.utils.hooks``, as ``torch.utils.hooks``: the handle every ``register_*_hook``
returns (``handle.remove()``, or ``with handle:`` to remove it on leaving the block)."""
from __future__ import annotations

from ..nn.module import RemovableHandle

__all__ = ["RemovableHandle"]
