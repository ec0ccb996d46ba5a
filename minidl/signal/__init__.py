"""torch.signal: window functions (minidl.signal.windows)."""
from . import windows  # noqa: F401

__all__ = ["windows"]
