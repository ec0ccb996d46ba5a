"""PyTorch's ``torch.utils`` paths for what minidl keeps elsewhere: ``minidl.utils.data`` is
``minidl.data`` (the same module object), so ``from minidl.utils.data import DataLoader``
works as in PyTorch code."""
import sys

from .. import data

sys.modules[__name__ + ".data"] = data

__all__ = ["data"]
