"""torch's deprecated per-device names ``torch.cuda.amp.autocast``/``GradScaler`` and
``torch.cpu.amp.autocast``/``GradScaler``: one implementation for both devices, each call
warning as torch's does and returning ``minidl.amp``'s object for that device."""
from __future__ import annotations

import warnings

from .autocast import autocast as _autocast
from .grad_scaler import GradScaler as _GradScaler


def device_autocast(device, enabled=True, dtype=None):
    warnings.warn(f"`minidl.{device}.amp.autocast(args...)` is deprecated. Please use "
                  f"`minidl.amp.autocast('{device}', args...)` instead.", FutureWarning,
                  stacklevel=3)
    return _autocast(device, dtype=dtype, enabled=enabled)


def device_grad_scaler(device, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                       growth_interval=2000, enabled=True):
    warnings.warn(f"`minidl.{device}.amp.GradScaler(args...)` is deprecated. Please use "
                  f"`minidl.amp.GradScaler('{device}', args...)` instead.", FutureWarning,
                  stacklevel=3)
    return _GradScaler(device, init_scale, growth_factor, backoff_factor, growth_interval,
                       enabled)
