"""Fractional max pooling (Graham, 2014), PyTorch's: every output cell takes the max of a
kernel-sized window whose start steps through the input by a pseudo-random non-integer
stride. Per (n, c) plane, one sample u in [0, 1) per spatial dim fixes the starts:
``int((i + u) * alpha) - int(u * alpha)`` with ``alpha = (size - kernel) / (out - 1)``, the
last start being ``size - kernel``. torch computes these in the input's float type, and so
does this (float32 rounding changes a start now and then).

The winners' flat indices are found on the arrays; the op itself is GatherPlanes (its
gradient adds back at the winners, and that again is an op, for double backward)."""
from __future__ import annotations

import math

import numpy as np

from ... import functional as _F
from ...backend import generator_rng, get_array_module
from ...functional import GatherPlanes, _float_input, _whole
from ...tensor import Tensor

_AXES = {2: ("height", "width"), 3: ("time", "height", "width")}


def _tuple(name, v, dims, what):
    if isinstance(v, (tuple, list)):
        if len(v) != dims:
            raise RuntimeError(f"{name}: {what} must either be a single Int or tuple of Ints")
        return tuple(v)
    return (v,) * dims


def _starts(samples, size, out, pool):
    """(P,) samples -> (P, out) window starts along one dim, in the samples' float type."""
    starts = np.empty((samples.shape[0], out), dtype=np.int64)
    if out > 1:
        ft = samples.dtype.type
        alpha = ft(size - pool) / ft(out - 1)
        i = np.arange(out - 1).astype(samples.dtype)
        scaled = (i[None, :] + samples[:, None]) * alpha
        starts[:, :-1] = scaled.astype(np.int64) - (samples * alpha).astype(np.int64)[:, None]
    if out > 0:
        starts[:, -1] = size - pool
    return starts


def _winners(x, samples, kernel, out):
    """Flat indices (N, C, *out) of each window's max in its (n, c) plane, as torch picks
    them: the first maximum, or the last NaN where a window holds one."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    dims = len(sizes)
    planes = n * c
    # torch's sample order: (width, height) in 2-D, (time, height, width) in 3-D
    order = (1, 0) if dims == 2 else (0, 1, 2)
    smp = samples.reshape(planes, dims)
    flat = np.zeros((planes,) + tuple(out) + tuple(kernel), dtype=np.int64)
    for d in range(dims):
        st = _starts(smp[:, order[d]], sizes[d], out[d], kernel[d])  # (P, out_d)
        coord = st[:, :, None] + np.arange(kernel[d])[None, None, :]  # (P, out_d, k_d)
        shape = [planes] + [1] * (2 * dims)
        shape[1 + d], shape[1 + dims + d] = out[d], kernel[d]
        flat = flat + coord.reshape(shape) * math.prod(sizes[d + 1:])
    k = math.prod(kernel)
    flat = xp.asarray(flat.reshape(planes, -1, k))
    vals = xp.take_along_axis(x.reshape(planes, -1), flat.reshape(planes, -1), axis=1)
    vals = vals.reshape(flat.shape)
    pick = vals.argmax(axis=-1)
    nan = xp.isnan(vals)
    if bool(nan.any()):
        last_nan = k - 1 - nan[..., ::-1].argmax(axis=-1)
        pick = xp.where(nan.any(axis=-1), last_nan, pick)
    won = xp.take_along_axis(flat, pick[..., None], axis=-1)[..., 0]
    return won.reshape((n, c) + tuple(out))


def _fractional_max_pool(dims, input, kernel_size, output_size, output_ratio, return_indices,
                         _random_samples):
    name = f"fractional_max_pool{dims}d"
    _float_input(name, input)
    if output_size is None and output_ratio is None:
        raise ValueError(f"{name} requires specifying either an output_size or an output_ratio")
    if input.ndim not in (dims + 1, dims + 2):
        raise RuntimeError(f"{name}(): Expected {dims + 1}D or {dims + 2}D tensor, but got: "
                           f"{list(input.shape)}")
    if output_size is None:
        if isinstance(output_ratio, (tuple, list)) and len(output_ratio) > dims:
            raise ValueError(f"{name} requires output_ratio to either be a single Int or tuple "
                             "of Ints.")
        ratio = _tuple(name, output_ratio, dims, "output_ratio")
        output_size = [int(input.shape[-dims + d] * float(ratio[d])) for d in range(dims)]
    kernel = tuple(_whole(k, f"{name}: kernel_size") for k in
                   _tuple(name, kernel_size, dims, "kernel_size"))
    out = tuple(_whole(o, f"{name}: output_size") for o in
                _tuple(name, output_size, dims, "output_size"))
    if min(kernel) < 1 or min(out) < 0:
        raise ValueError(f"{name}: kernel_size must be positive and output_size non-negative, "
                         f"got {kernel} and {out}")
    unbatched = input.ndim == dims + 1
    x = input.unsqueeze(0) if unbatched else input
    for d in range(1, x.ndim):
        if x.shape[d] == 0:
            raise RuntimeError(f"{name}(): Expected input to have non-zero size for non-batch "
                               f"dimensions, but got{list(input.shape)} with dimension "
                               f"{d - unbatched} being empty.")
    sizes = x.shape[2:]
    for d, axis in enumerate(_AXES[dims]):
        if out[d] + kernel[d] - 1 > sizes[d]:
            raise RuntimeError(f"{name}(): pool {axis} {kernel[d]} too large relative to input "
                               f"{axis} {sizes[d]}")
    n, c = x.shape[:2]
    if _random_samples is None:
        draw = generator_rng(None, x.device, name).random((n, c, dims))
        _random_samples = Tensor(draw.astype(x.data.dtype))
    if not isinstance(_random_samples, Tensor):
        raise TypeError(f"{name}: _random_samples must be a Tensor, got "
                        f"{type(_random_samples).__name__}")
    rs = _random_samples
    if rs.ndim != 3 or rs.shape[2] != dims or rs.shape[1] != c:
        raise RuntimeError(f"Expect _random_samples of shape ({n}, {c}, {dims}); got "
                           f"{tuple(rs.shape)}.")
    if rs.shape[0] < n:
        raise RuntimeError("Expect _random_samples.size(0) no less then input batch size.")
    if rs.dtype != x.dtype:
        raise RuntimeError("Expect _random_samples to have the same dtype as input")
    samples = np.asarray(rs.numpy()[:n])
    (x,) = _F._autocast_inputs(name, x)
    idx = _winners(x.data, samples, kernel, out)
    y = GatherPlanes.apply(x, index=idx)
    indices = Tensor(idx)
    if unbatched:
        y, indices = y.squeeze(0), indices.squeeze(0)
    return (y, indices) if return_indices else y


def fractional_max_pool2d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=False, _random_samples=None):
    """fractional_max_pool2d and the winners' flat indices into H * W, always."""
    return _fractional_max_pool(2, input, kernel_size, output_size, output_ratio, True,
                                _random_samples)


def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None,
                          return_indices=False, _random_samples=None):
    """Fractional max pooling of (N, C, H, W) or (C, H, W) input to output_size (or
    output_ratio of the input's size); ``_random_samples`` (N, C, 2) fixes the windows."""
    return _fractional_max_pool(2, input, kernel_size, output_size, output_ratio,
                                return_indices, _random_samples)


def fractional_max_pool3d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=False, _random_samples=None):
    """fractional_max_pool3d and the winners' flat indices into T * H * W, always."""
    return _fractional_max_pool(3, input, kernel_size, output_size, output_ratio, True,
                                _random_samples)


def fractional_max_pool3d(input, kernel_size, output_size=None, output_ratio=None,
                          return_indices=False, _random_samples=None):
    """Fractional max pooling of (N, C, T, H, W) or (C, T, H, W) input; ``_random_samples``
    (N, C, 3) fixes the windows."""
    return _fractional_max_pool(3, input, kernel_size, output_size, output_ratio,
                                return_indices, _random_samples)
