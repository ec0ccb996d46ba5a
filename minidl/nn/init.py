"""Weight initialisers, drawing from minidl's seeded generator (minidl.manual_seed), or from
``generator`` (a minidl.Generator of the tensor's device) where torch takes one."""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..backend import device_of, generator_of, to_device, torch_random


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


def _gen(t, generator, name):
    return generator_of(generator, device_of(t.data), name)


def _dtype(t):
    """The dtype torch's recipe draws in for ``t`` (its own; float32 for a low-precision one)."""
    dtype = np.dtype(t.data.dtype)
    return dtype if dtype.kind in "fc" and dtype.itemsize >= 4 else np.dtype(np.float32)


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """U(a, b), torch's numbers after the same seed."""
    gen = _gen(tensor, generator, "uniform_")
    return _write(tensor, torch_random.uniform_array(
        gen, tuple(tensor.shape), torch_random.draw_dtype(tensor.data.dtype), a, b,
        like=tensor.data))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """N(mean, std**2) (a complex tensor: half the variance in each part), torch's numbers."""
    gen = _gen(tensor, generator, "normal_")
    return _write(tensor, torch_random.normal_array(
        gen, tuple(tensor.shape), torch_random.draw_dtype(tensor.data.dtype), mean, std,
        like=tensor.data))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def constant_(tensor, val):
    return _write(tensor, np.full(tensor.shape, val, dtype=np.float64))


def calculate_gain(nonlinearity, param=None):
    """PyTorch's recommended gain for a nonlinearity: 1 for linear, conv and sigmoid, 5/3 for
    tanh, sqrt(2) for relu, sqrt(2 / (1 + slope**2)) for leaky_relu (slope 0.01 by default),
    3/4 for selu."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fan(t, mode, name):
    if len(t.shape) < 2:
        raise ValueError(f"{name}: fan in and fan out can not be computed for a tensor with fewer "
                         f"than 2 dimensions (shape {tuple(t.shape)})")
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{name}: mode {mode!r} is not supported, use 'fan_in' or 'fan_out'")
    fan_in, fan_out = _fans(t.shape)
    return fan_in if mode == "fan_in" else fan_out


def _empty(t):
    """A tensor with a 0 in its shape: Kaiming initialisation warns and leaves it, as torch's
    (a layer with 0 features, e.g. AdaptiveLogSoftmaxWithLoss's smallest cluster)."""
    if 0 not in tuple(t.shape):
        return False
    warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
    return True


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-bound, bound), bound = gain * sqrt(3 / fan); PyTorch's default for Linear and Conv2d
    weights is this with a = sqrt(5)."""
    if _empty(tensor):
        return tensor
    gain = calculate_gain(nonlinearity, a)
    std = gain / math.sqrt(_fan(tensor, mode, "kaiming_uniform_"))
    bound = math.sqrt(3.0) * std  # torch's order of operations, so its bound to the last bit
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std**2), std = gain / sqrt(fan)."""
    if _empty(tensor):
        return tensor
    gain = calculate_gain(nonlinearity, a)
    return normal_(tensor, 0.0, gain / math.sqrt(_fan(tensor, mode, "kaiming_normal_")), generator)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    _fan(tensor, "fan_in", "xavier_uniform_")
    fan_in, fan_out = _fans(tensor.shape)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std  # torch's order of operations, so its bound to the last bit
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    _fan(tensor, "fan_in", "xavier_normal_")
    fan_in, fan_out = _fans(tensor.shape)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std**2) restricted to [a, b] (absolute bounds), by torch's rejection sampling,
    so torch's numbers after the same seed: where the interval holds more than 0.3 of the
    probability, normal draws redrawn (all of them, kept where out of bounds) until every value
    falls inside; else uniform draws on [a, b] accepted against the normal density."""
    if not a < b:
        raise ValueError(f"trunc_normal_: a ({a}) must be less than b ({b})")
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. The "
                      "distribution of values may be incorrect.", stacklevel=2)
    gen = _gen(tensor, generator, "trunc_normal_")
    dtype, shape = _dtype(tensor), tuple(tensor.shape)

    def cdf(x):
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    if cdf((b - mean) / std) - cdf((a - mean) / std) > 0.3:
        lo, hi = dtype.type(a), dtype.type(b)
        result = torch_random.normal_array(gen, shape, dtype, mean, std)
        while True:
            out = (result < lo) | (result > hi)
            if not out.any():
                return _write(tensor, result)
            result = np.where(out, torch_random.normal_array(gen, shape, dtype, mean, std),
                              result)
    f = dtype.type
    log_peak = f(-0.5 * ((max(a, min(mean, b)) - mean) / std) ** 2)

    def log_pdf(x):  # torch's in-place steps, in the tensor's dtype
        x = (x - f(mean)) / f(std)
        return x * x * f(-0.5) - log_peak

    def accept(log_density):
        with np.errstate(divide="ignore"):
            return np.log(torch_random.uniform_array(gen, shape, dtype)) > log_density

    result = torch_random.uniform_array(gen, shape, dtype, a, b)
    pending = accept(log_pdf(result))
    while pending.any():
        candidates = torch_random.uniform_array(gen, shape, dtype, a, b)
        result = np.where(pending, candidates, result)
        pending = np.where(pending, accept(log_pdf(candidates)), pending)
    return _write(tensor, result)


def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix over the first dim and the rest flattened, from the QR of a
    Gaussian matrix with the signs fixed so the result is uniformly distributed, times gain."""
    if len(tensor.shape) < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dimensions are supported, got "
                         f"shape {tuple(tensor.shape)}")
    gen = _gen(tensor, generator, "orthogonal_")
    rows = tensor.shape[0]
    cols = int(np.prod(tensor.shape[1:])) if rows else 0
    if rows == 0 or cols == 0:
        return tensor
    # torch's draw (the QR that follows is LAPACK's in float64, so close to torch's, not equal)
    flat = torch_random.normal_array(gen, (rows, cols), _dtype(tensor)).astype(np.float64)
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _write(tensor, gain * q.reshape(tensor.shape))


def eye_(tensor):
    """The identity matrix (2-D tensors only)."""
    if len(tensor.shape) != 2:
        raise ValueError(f"eye_: only 2-D tensors are supported, got shape {tuple(tensor.shape)}")
    return _write(tensor, np.eye(*tensor.shape))


def dirac_(tensor, groups=1):
    """The identity of a convolution (3-, 4- or 5-D weights): each output channel copies its
    input channel at the kernel's centre, in ``groups`` blocks."""
    if len(tensor.shape) not in (3, 4, 5):
        raise ValueError(f"dirac_: only 3, 4 or 5-D tensors are supported, got {tuple(tensor.shape)}")
    out_per_group = tensor.shape[0] // groups
    if tensor.shape[0] % groups:
        raise ValueError(f"dirac_: dim 0 ({tensor.shape[0]}) is not divisible by groups ({groups})")
    values = np.zeros(tensor.shape)
    centre = tuple(k // 2 for k in tensor.shape[2:])
    for g in range(groups):
        for d in range(min(out_per_group, tensor.shape[1])):
            values[(g * out_per_group + d, d) + centre] = 1
    return _write(tensor, values)


def sparse_(tensor, sparsity, std=0.01, generator=None):
    """A 2-D matrix of N(0, std**2) entries with a ``sparsity`` fraction of each column zero."""
    if len(tensor.shape) != 2:
        raise ValueError(f"sparse_: only 2-D tensors are supported, got shape {tuple(tensor.shape)}")
    gen = _gen(tensor, generator, "sparse_")
    rows, cols = tensor.shape
    values = torch_random.normal_array(gen, (rows, cols), _dtype(tensor), 0.0, std)
    zeros = int(math.ceil(sparsity * rows))
    perms = generator_of(None, "cpu", "sparse_")  # torch's randperm(rows) takes no generator
    for c in range(cols):
        values[torch_random.permutation(perms, rows)[:zeros], c] = 0
    return _write(tensor, values)


def _deprecated(new):
    """The old name without the underscore (nn.init.normal): warns FutureWarning and calls
    the in-place function, as torch's does."""
    old = new.__name__[:-1]

    def deprecated_init(*args, **kwargs):
        import warnings

        warnings.warn(f"`nn.init.{old}` is now deprecated in favor of `nn.init.{new.__name__}`.",
                      FutureWarning, stacklevel=2)
        return new(*args, **kwargs)
    deprecated_init.__name__ = deprecated_init.__qualname__ = old
    deprecated_init.__doc__ = f"{old}(...): deprecated, use nn.init.{new.__name__}."
    return deprecated_init


uniform = _deprecated(uniform_)
normal = _deprecated(normal_)
constant = _deprecated(constant_)
eye = _deprecated(eye_)
dirac = _deprecated(dirac_)
xavier_uniform = _deprecated(xavier_uniform_)
xavier_normal = _deprecated(xavier_normal_)
kaiming_uniform = _deprecated(kaiming_uniform_)
kaiming_normal = _deprecated(kaiming_normal_)
orthogonal = _deprecated(orthogonal_)
sparse = _deprecated(sparse_)
