"""Mixed precision: ``autocast`` (PyTorch's per-op policy) and ``GradScaler`` (loss scaling)."""
from .autocast import (
    autocast, get_autocast_dtype, is_autocast_enabled, set_autocast_dtype, set_autocast_enabled,
)
from .grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "is_autocast_enabled", "get_autocast_dtype",
           "set_autocast_enabled", "set_autocast_dtype"]
