"""Mixed precision: ``autocast`` (PyTorch's per-op policy), ``GradScaler`` (loss scaling), and
``custom_fwd``/``custom_bwd`` for custom Functions under autocast."""
from .autocast import (
    autocast, get_autocast_dtype, is_autocast_enabled, set_autocast_dtype, set_autocast_enabled,
)
from .custom import custom_bwd, custom_fwd, is_autocast_available
from .grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "is_autocast_enabled", "get_autocast_dtype", "custom_fwd",
           "custom_bwd", "is_autocast_available", "set_autocast_enabled", "set_autocast_dtype"]
