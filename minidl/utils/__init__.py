"""PyTorch's ``torch.utils`` paths: ``minidl.utils.data`` is ``minidl.data`` (the same module
object), so ``from minidl.utils.data import DataLoader`` works as in PyTorch code, and
``minidl.utils.checkpoint`` is activation checkpointing."""
import sys

from .. import data

sys.modules[__name__ + ".data"] = data

from . import checkpoint  # noqa: E402  (after data: it imports the nn layer lazily)
from . import flop_counter  # noqa: E402,F401

__all__ = ["data", "checkpoint"]
