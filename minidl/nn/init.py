"""Weight initialisers, drawing from minidl's seeded generator (minidl.manual_seed)."""
from __future__ import annotations

import math

import numpy as np

from ..backend import rng, to_device


def _fans(shape):
    fan_in = shape[1] * int(np.prod(shape[2:])) if len(shape) > 1 else shape[0]
    fan_out = shape[0] * int(np.prod(shape[2:])) if len(shape) > 1 else shape[0]
    return fan_in, fan_out


def _write(t, values):
    """Write ``values`` into ``t``'s own array (as PyTorch's init functions do in place), so a
    view, or a tensor taken earlier from state_dict(), sees them."""
    arr = to_device(values.astype(t.dtype), t.device)
    own = t.data
    if isinstance(own, np.ndarray) and not own.flags.writeable:
        t.data = arr
    else:
        own[...] = arr
    return t


def uniform_(t, a=0.0, b=1.0):
    return _write(t, rng().uniform(a, b, t.shape))


def normal_(t, mean=0.0, std=1.0):
    return _write(t, rng().standard_normal(t.shape) * std + mean)


def zeros_(t):
    t.data[...] = 0
    return t


def ones_(t):
    t.data[...] = 1
    return t


def constant_(t, value):
    t.data[...] = value
    return t


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """PyTorch's default for Linear and Conv2d weights is this with a = sqrt(5)."""
    fan_in, fan_out = _fans(t.shape)
    fan = fan_in if mode == "fan_in" else fan_out
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else math.sqrt(2.0)
    bound = gain * math.sqrt(3.0 / fan)
    return uniform_(t, -bound, bound)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="relu"):
    fan_in, fan_out = _fans(t.shape)
    fan = fan_in if mode == "fan_in" else fan_out
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else math.sqrt(2.0)
    return normal_(t, 0.0, gain / math.sqrt(fan))


def xavier_uniform_(t, gain=1.0):
    fan_in, fan_out = _fans(t.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)
