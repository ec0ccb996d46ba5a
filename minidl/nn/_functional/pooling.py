"""Pooling and resampling with PyTorch's options: max/avg pooling in 1-D and 2-D (dilation,
ceil_mode, return_indices, count_include_pad, divisor_override), adaptive average and max
pooling, interpolate (nearest, nearest-exact, linear, bilinear, bicubic, area),
pixel_shuffle/pixel_unshuffle.

The default 2-D cases stay on ``functional``'s kernels; the others take the windows of a
padded array (``convolution.unfold_array``), reduce them, and in backward send the gradient
back through the adjoint ``fold_array``. 1-D pooling is 2-D pooling on a height of 1.
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np

from ... import functional as _F
from ...backend import get_array_module
from ...functional import (
    GatherPlanes, ScatterPlanes, _float_input, _whole, accumulation_dtype, linear_graph_backward,
)
from ...tensor import Function, Tensor
from .convolution import _batched, _ntuple, fold_array, unfold_array


# ---- window geometry ----------------------------------------------------------------------------
def _pool_geometry(name, x, dims, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = _ntuple(kernel_size, dims, f"{name}: kernel_size")
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        stride = kernel
    stride = _ntuple(stride, dims, f"{name}: stride")
    padding = _ntuple(padding, dims, f"{name}: padding")
    dilation = _ntuple(dilation, dims, f"{name}: dilation")
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"{name}: kernel_size {kernel}, stride {stride} and dilation "
                         f"{dilation} must be positive")
    if min(padding) < 0 or any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{name}: padding {padding} must be non-negative and at most half "
                         f"the kernel size {kernel}")
    out, extra = [], []
    for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation):
        span = size + 2 * p - d * (k - 1) - 1
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= size + p:  # the last window must start inside
            o -= 1
        if o < 1:
            raise ValueError(f"{name}: output size {o} is too small: kernel {kernel} "
                             f"(dilation {dilation}) on input {x.shape} with padding {padding}")
        out.append(o)
        extra.append(max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p)))
    return kernel, stride, padding, dilation, tuple(out), tuple(extra)


def _lift(t, dims, fill):
    return (fill,) + tuple(t) if dims == 1 else tuple(t)


def _padded(x, padding, extra, fill):
    """x padded with ``fill``: padding[d] before each spatial dim, padding[d] + extra[d]
    after it (any number of spatial dims)."""
    xp = get_array_module(x)
    sizes = x.shape[2:]
    out = xp.full(x.shape[:2] + tuple(s + 2 * p + e for s, p, e in zip(sizes, padding, extra)),
                  fill, dtype=x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(padding, sizes))] = x
    return out


def _fold_back(gcol, x_shape, padding, extra, stride, dilation):
    sizes = x_shape[2:]
    full = fold_array(gcol, tuple(s + 2 * p + e for s, p, e in zip(sizes, padding, extra)),
                      stride, dilation)
    index = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(padding, sizes))
    return get_array_module(gcol).ascontiguousarray(full[index])


class MaxPoolWindows(Function):
    """Max over (dilated) windows of a -inf-padded array (2-D or 3-D); the winner's position
    is kept, and backward sends each output's gradient to it."""

    def forward(self, x, kernel, stride, padding, dilation, out_hw, extra, keep=None):
        if keep is not None:  # the caller asked for the indices (return_indices=True)
            keep.append(self)
        xp = get_array_module(x)
        n, c = x.shape[:2]
        kk = math.prod(kernel)
        col = unfold_array(_padded(x, padding, extra, -np.inf), kernel, stride, dilation, out_hw)
        col = col.reshape((n, c, kk) + tuple(out_hw))
        arg = col.argmax(axis=2)
        self.arg, self.geom = arg, (x.shape, kernel, stride, padding, dilation, extra)
        return xp.take_along_axis(col, arg[:, :, None], axis=2)[:, :, 0]

    def backward(self, g):
        xp = get_array_module(g)
        x_shape, kernel, stride, padding, dilation, extra = self.geom
        n, c = g.shape[:2]
        dims = g.ndim - 2
        kk = xp.arange(math.prod(kernel)).reshape((1, 1, -1) + (1,) * dims)
        gcol = (kk == self.arg[:, :, None]) * g[:, :, None]
        gcol = gcol.astype(g.dtype, copy=False).reshape((n, c) + tuple(kernel) + g.shape[2:])
        return _fold_back(gcol, x_shape, padding, extra, stride, dilation)

    def graph_backward(self, g, out):
        # the winners fixed, the gradient is a scatter to their positions (linear in g)
        return ScatterPlanes.apply(g, index=self.indices(), shape=self.geom[0])

    def indices(self):
        """The winners as flat indices into each input plane (H * W, or D * H * W), as
        PyTorch returns them."""
        xp = get_array_module(self.arg)
        x_shape, kernel, stride, padding, dilation, _ = self.geom
        sizes, out = x_shape[2:], self.arg.shape[2:]
        dims = len(sizes)
        flat = 0
        for d in range(dims):
            offset = (self.arg // math.prod(kernel[d + 1:])) % kernel[d]
            start = xp.arange(out[d]).reshape((-1,) + (1,) * (dims - 1 - d))
            coord = start * stride[d] - padding[d] + offset * dilation[d]
            flat = flat + coord * math.prod(sizes[d + 1:])
        return flat.astype(np.int64)


class AvgPoolWindows(Function):
    """Sum over windows of a zero-padded array divided by PyTorch's divisor per window (the
    window clipped to the padded input, or to the input itself without count_include_pad)."""

    def forward(self, x, kernel, stride, padding, out_hw, extra, divisor):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        ones = (1,) * len(kernel)
        col = unfold_array(_padded(x, padding, extra, 0), kernel, stride, ones, out_hw)
        total = col.reshape((n, c, -1) + tuple(out_hw)).sum(axis=2,
                                                            dtype=accumulation_dtype(x))
        self.divisor = xp.asarray(divisor, dtype=total.dtype)
        self.geom = (x.shape, kernel, stride, padding, extra)
        return (total / self.divisor).astype(x.dtype, copy=False)

    def backward(self, g):
        xp = get_array_module(g)
        x_shape, kernel, stride, padding, extra = self.geom
        share = (g / self.divisor).astype(g.dtype, copy=False)
        dims = len(kernel)
        gcol = xp.broadcast_to(share[(slice(None), slice(None)) + (None,) * dims],
                               share.shape[:2] + tuple(kernel) + share.shape[2:])
        return _fold_back(gcol, x_shape, padding, extra, stride, (1,) * dims)

    def graph_backward(self, g, out):
        _, kernel, stride, padding, extra = self.geom
        return linear_graph_backward(self, g, kernel=kernel, stride=stride, padding=padding,
                                     out_hw=tuple(g.shape[2:]), extra=extra,
                                     divisor=self.divisor)


def _avg_divisor(sizes, kernel, stride, padding, out, count_include_pad, divisor_override):
    if divisor_override is not None:
        return np.full(out, float(divisor_override))
    per_dim = []
    for size, k, s, p, o in zip(sizes, kernel, stride, padding, out):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        pool = end - start
        inside = np.minimum(end, size) - np.maximum(start, 0)
        per_dim.append(pool if count_include_pad else inside)
    divisor = per_dim[0].astype(np.float64)
    for more in per_dim[1:]:
        divisor = np.multiply.outer(divisor, more)
    return divisor


# ---- max and average pooling -------------------------------------------------------------------
def _max_pool(name, dims, input, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices):
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op(name, kernel_size, stride, padding, dilation, ceil_mode,
                                     return_indices, dims=dims)
    _float_input(name, input)
    if dims == 3:
        (input,) = _F._autocast_inputs(name, input)
    x, unbatched = _batched(name, input, dims)
    kernel, stride, padding, dilation, out, extra = _pool_geometry(
        name, x, dims, kernel_size, stride, padding, dilation, ceil_mode)
    x2 = x.unsqueeze(2) if dims == 1 else x
    geom = dict(kernel=_lift(kernel, dims, 1), stride=_lift(stride, dims, 1),
                padding=_lift(padding, dims, 0), dilation=_lift(dilation, dims, 1))
    if dims == 2 and not return_indices and max(dilation) == 1 and not any(extra):
        y = _F.max_pool2d(x2, kernel, stride, padding)  # the tuned kernels
        idx = None
    else:
        keep = [] if return_indices else None  # (a list: onnx.export sees indices asked)
        y = MaxPoolWindows.apply(x2, out_hw=_lift(out, dims, 1), extra=_lift(extra, dims, 0),
                                 keep=keep, **geom)
        idx = Tensor(keep[0].indices()) if return_indices else None
    if dims == 1:
        y = y.squeeze(2)
        idx = None if idx is None else idx.squeeze(2)
    if unbatched:
        y = y.squeeze(0)
        idx = None if idx is None else idx.squeeze(0)
    return (y, idx) if return_indices else y


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of (N, C, L) or (C, L) input; stride defaults to kernel_size and
    padding counts as -inf. With return_indices, also the winners' positions in L."""
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of (N, C, H, W) or (C, H, W) input, with PyTorch's dilation,
    ceil_mode and return_indices (flat indices into H * W)."""
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_pool(name, dims, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op(name, kernel_size, stride, padding, ceil_mode,
                                   count_include_pad, divisor_override)
    _float_input(name, input)
    if dims == 3:
        (input,) = _F._autocast_inputs(name, input)
    x, unbatched = _batched(name, input, dims)
    kernel, stride, padding, _, out, extra = _pool_geometry(
        name, x, dims, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None:
        divisor_override = _whole(divisor_override, f"{name}: divisor_override")
        if divisor_override == 0:
            raise ValueError(f"{name}: divisor_override must not be zero")
    x2 = x.unsqueeze(2) if dims == 1 else x
    if (dims == 2 and count_include_pad and divisor_override is None and not any(extra)):
        y = _F.avg_pool2d(x2, kernel, stride, padding)
    else:
        divisor = _avg_divisor(x.shape[2:], kernel, stride, padding, out, count_include_pad,
                               divisor_override)
        y = AvgPoolWindows.apply(x2, kernel=_lift(kernel, dims, 1), stride=_lift(stride, dims, 1),
                                 padding=_lift(padding, dims, 0), out_hw=_lift(out, dims, 1),
                                 extra=_lift(extra, dims, 0),
                                 divisor=divisor.reshape(_lift(out, dims, 1)))
    if dims == 1:
        y = y.squeeze(2)
    return y.squeeze(0) if unbatched else y


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """Mean over windows of (N, C, L) or (C, L) input; padding counts as zeros unless
    count_include_pad=False."""
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, None)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over windows of (N, C, H, W) or (C, H, W) input, with PyTorch's ceil_mode,
    count_include_pad and divisor_override."""
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of (N, C, D, H, W) or (C, D, H, W) input, with PyTorch's dilation,
    ceil_mode and return_indices (flat indices into D * H * W)."""
    return _max_pool("max_pool3d", 3, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over windows of (N, C, D, H, W) or (C, D, H, W) input, with PyTorch's ceil_mode,
    count_include_pad and divisor_override."""
    return _avg_pool("avg_pool3d", 3, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


# ---- adaptive pooling ----------------------------------------------------------------------------
def _adaptive_size(name, x, dims, output_size):
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != dims:
            raise ValueError(f"{name}: output_size must have {dims} elements, got "
                             f"{output_size!r}")
        sizes = output_size
    else:
        sizes = (output_size,) * dims
    out = tuple(x.shape[2 + d] if s is None else _whole(s, f"{name}: output_size", output_size)
                for d, s in enumerate(sizes))
    if min(out) < 1 and x.numel():
        raise ValueError(f"{name}: output_size {out} must be positive")
    spatial = tuple(x.shape[2:])
    if min(spatial) < 1:  # no element to pool from: torch refuses it
        raise ValueError(f"{name}: expected input to have non-zero size for non-batch "
                         f"dimensions, but its spatial size is {spatial} (shape {tuple(x.shape)})")
    return out


def _bins(size, out):
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool1d(input, output_size):
    """Average (N, C, L) or (C, L) input into output_size bins (PyTorch's floor/ceil bins)."""
    name = "adaptive_avg_pool1d"
    _float_input(name, input)
    x, unbatched = _batched(name, input, 1)
    (o,) = _adaptive_size(name, x, 1, output_size)
    y = _F.adaptive_avg_pool2d(x.unsqueeze(2), (1, o)).squeeze(2)
    return y.squeeze(0) if unbatched else y


def adaptive_avg_pool2d(input, output_size):
    """Average (N, C, H, W) or (C, H, W) input into an output_size grid; None in output_size
    keeps that dim's size."""
    name = "adaptive_avg_pool2d"
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op("adaptive_avg_pool2d", output_size)
    _float_input(name, input)
    x, unbatched = _batched(name, input, 2)
    y = _F.adaptive_avg_pool2d(x, _adaptive_size(name, x, 2, output_size))
    return y.squeeze(0) if unbatched else y


def _adaptive_max_gathered(xp, x, out_hw):
    """Adaptive max pooling on a GPU: every bin's window gathered at once, each dim's window
    padded to the longest bin by repeating the bin's last position (a repeat comes after its
    original, so the first maximum argmax finds, and its index, are the CPU loop's)."""
    n, c = x.shape[:2]
    sizes, dims = x.shape[2:], len(out_hw)
    picks = []  # per dim: (out, longest) input positions of each bin's window
    for size, out in zip(sizes, out_hw):
        bins = _bins(size, out)
        longest = max(b - a for a, b in bins)
        pos = np.array([[min(a + k, b - 1) for k in range(longest)] for a, b in bins])
        picks.append(pos)
    # index arrays broadcasting to (out_0, k_0, out_1, k_1, ...)
    index = []
    for d, pos in enumerate(picks):
        shape = [1] * (2 * dims)
        shape[2 * d], shape[2 * d + 1] = pos.shape
        index.append(xp.asarray(pos.reshape(shape)))
    block = x[(slice(None), slice(None)) + tuple(index)]  # (n, c, o_0, k_0, o_1, k_1, ...)
    order = [0, 1] + [2 + 2 * d for d in range(dims)] + [3 + 2 * d for d in range(dims)]
    block = block.transpose(order).reshape((n, c) + tuple(out_hw) + (-1,))
    a = block.argmax(axis=-1)
    y = xp.take_along_axis(block, a[..., None], axis=-1)[..., 0]
    flat = 0
    rest = a
    longest = [p.shape[1] for p in picks]
    for d in range(dims):
        k = (rest // math.prod(longest[d + 1:])) % longest[d]
        shape = [1] * dims
        shape[d] = out_hw[d]
        rows = xp.arange(out_hw[d]).reshape(shape)
        coord = xp.asarray(picks[d])[rows, k]
        flat = flat + coord * math.prod(sizes[d + 1:])
    return y, flat.astype(np.int64)


class AdaptiveMaxPool2d(Function):
    """Max over PyTorch's adaptive bins (which may overlap), 2-D or 3-D; the winners' flat
    indices are kept and backward adds each output's gradient at its winner."""

    def forward(self, x, out_hw, keep=None):
        if keep is not None:
            keep.append(self)
        xp = get_array_module(x)
        n, c = x.shape[:2]
        sizes = x.shape[2:]
        if xp is not np:  # one gather and one argmax, not a kernel launch per output cell
            y, self.idx = _adaptive_max_gathered(xp, x, out_hw)
            self.in_shape = x.shape
            return y
        y = xp.empty((n, c) + tuple(out_hw), dtype=x.dtype)
        idx = xp.empty((n, c) + tuple(out_hw), dtype=np.int64)
        bins = [list(enumerate(_bins(s, o))) for s, o in zip(sizes, out_hw)]
        for cell in itertools.product(*bins):
            where = tuple(i for i, _ in cell)
            lo = [b[0] for _, b in cell]
            extent = [b[1] - b[0] for _, b in cell]
            window = x[(slice(None), slice(None)) + tuple(slice(a, b) for _, (a, b) in cell)]
            a = window.reshape(n, c, -1).argmax(axis=2)
            y[(slice(None), slice(None)) + where] = xp.take_along_axis(
                window.reshape(n, c, -1), a[:, :, None], axis=2)[:, :, 0]
            flat = 0
            for d in range(len(sizes)):
                coord = lo[d] + (a // math.prod(extent[d + 1:])) % extent[d]
                flat = flat + coord * math.prod(sizes[d + 1:])
            idx[(slice(None), slice(None)) + where] = flat
        self.idx, self.in_shape = idx, x.shape
        return y

    def backward(self, g):
        xp = get_array_module(g)
        n, c = self.in_shape[:2]
        gx = xp.zeros((n * c, math.prod(self.in_shape[2:])), dtype=g.dtype)
        rows = xp.arange(n * c).reshape(-1, 1)
        index = (rows, self.idx.reshape(n * c, -1))
        if hasattr(xp.add, "at"):
            xp.add.at(gx, index, g.reshape(n * c, -1))
        else:  # CuPy before 12
            import cupyx

            cupyx.scatter_add(gx, index, g.reshape(n * c, -1))
        return gx.reshape(self.in_shape)

    def graph_backward(self, g, out):
        return ScatterPlanes.apply(g, index=self.idx, shape=self.in_shape)


def _bin_matrix(size, out):
    """(out, size): row i averages PyTorch's adaptive bin i."""
    m = np.zeros((out, size))
    for i, (a, b) in enumerate(_bins(size, out)):
        m[i, a:b] = 1.0 / (b - a)
    return m


class AdaptiveAvgPoolNd(Function):
    """Adaptive average pooling as one (out, size) averaging matrix per spatial dim: the mean
    over a box of bins is the mean over each dim in turn. Backward applies the transposes."""

    def forward(self, x, out_sizes):
        xp = get_array_module(x)
        self.mats = [xp.asarray(_bin_matrix(s, o), dtype=accumulation_dtype(x))
                     for s, o in zip(x.shape[2:], out_sizes)]
        y = x.astype(accumulation_dtype(x), copy=False)
        for d, m in enumerate(self.mats):
            y = xp.moveaxis(xp.moveaxis(y, 2 + d, -1) @ m.T, -1, 2 + d)
        return xp.ascontiguousarray(y.astype(x.dtype, copy=False))

    def backward(self, g):
        xp = get_array_module(g)
        gx = g.astype(self.mats[0].dtype, copy=False)
        for d, m in enumerate(self.mats):
            gx = xp.moveaxis(xp.moveaxis(gx, 2 + d, -1) @ m, -1, 2 + d)
        return xp.ascontiguousarray(gx.astype(g.dtype, copy=False))

    def graph_backward(self, g, out):
        return linear_graph_backward(self, g, out_sizes=tuple(g.shape[2:]))


def adaptive_avg_pool3d(input, output_size):
    """Average (N, C, D, H, W) or (C, D, H, W) input into an output_size grid of PyTorch's
    adaptive bins; None in output_size keeps that dim's size."""
    name = "adaptive_avg_pool3d"
    _float_input(name, input)
    (input,) = _F._autocast_inputs(name, input)
    x, unbatched = _batched(name, input, 3)
    y = AdaptiveAvgPoolNd.apply(x, out_sizes=_adaptive_size(name, x, 3, output_size))
    return y.squeeze(0) if unbatched else y


def _adaptive_max(name, dims, input, output_size, return_indices):
    _float_input(name, input)
    if dims == 3:
        (input,) = _F._autocast_inputs(name, input)
    x, unbatched = _batched(name, input, dims)
    out = _adaptive_size(name, x, dims, output_size)
    x2 = x.unsqueeze(2) if dims == 1 else x
    if x2.numel() == 0:  # an empty batch (or no channels): an empty result, as torch's
        y = _F.adaptive_avg_pool2d(x2, _lift(out, dims, 1)) if dims < 3 else \
            AdaptiveAvgPoolNd.apply(x2, out_sizes=out)
        xp = get_array_module(x2.data)
        idx = Tensor(xp.zeros(y.shape, dtype=np.int64)) if return_indices else None
    else:
        keep = [] if return_indices else None
        y = AdaptiveMaxPool2d.apply(x2, out_hw=_lift(out, dims, 1), keep=keep)
        idx = Tensor(keep[0].idx) if return_indices else None
    if dims == 1:
        y = y.squeeze(2)
        idx = idx.squeeze(2) if return_indices else None
    if unbatched:
        y = y.squeeze(0)
        idx = idx.squeeze(0) if return_indices else None
    return (y, idx) if return_indices else y


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return _adaptive_max("adaptive_max_pool1d", 1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max of (N, C, H, W) or (C, H, W) input over an output_size grid of adaptive bins;
    with return_indices, also the winners' flat indices into H * W."""
    return _adaptive_max("adaptive_max_pool2d", 2, input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    """Max of (N, C, D, H, W) or (C, D, H, W) input over an output_size grid of adaptive bins;
    with return_indices, also the winners' flat indices into D * H * W."""
    return _adaptive_max("adaptive_max_pool3d", 3, input, output_size, return_indices)


# ---- resampling ------------------------------------------------------------------------------------
class Resample(Function):
    """Separable resampling: along each resized dim, output i = sum_k w_k[i] * x[idx_k[i]]
    (one tap for nearest, two for linear, four for cubic); backward adds the weighted gradient
    back."""

    def forward(self, x, taps):
        xp = get_array_module(x)
        self.taps, self.in_shape = taps, x.shape
        for d, index, weights in taps:
            shape = [1] * x.ndim
            shape[d] = -1
            y = None
            for idx, wt in zip(index, weights):
                part = xp.take(x, xp.asarray(idx), axis=d)
                if wt is not None:
                    part = part * xp.asarray(wt, dtype=x.dtype).reshape(shape)
                y = part if y is None else y + part
            x = y
        return x

    def backward(self, g):
        xp = get_array_module(g)
        shape = list(g.shape)
        for d, index, weights in reversed(self.taps):
            moved = xp.moveaxis(g, d, 0)
            out = xp.zeros((self.in_shape[d],) + moved.shape[1:], dtype=g.dtype)
            for idx, wt in zip(index, weights):
                part = moved if wt is None else \
                    moved * xp.asarray(wt, dtype=g.dtype).reshape((-1,) + (1,) * (g.ndim - 1))
                _F._add_rows(out, xp.asarray(idx), part)
            g = xp.moveaxis(out, 0, d)
            shape[d] = self.in_shape[d]
        return g

    def graph_backward(self, g, out):
        return linear_graph_backward(self, g, taps=self.taps)


_MODES = {"nearest": None, "nearest-exact": None, "area": None, "linear": 1, "bilinear": 2,
          "bicubic": 2, "trilinear": 3}


# The modes whose PyTorch kernels copy a dim whose size does not change, whatever the
# scale_factor (1-D nearest, nearest-exact and bicubic still sample at the scaled positions).
_COPIES_SAME_SIZE = {1: ("linear",), 2: ("nearest", "bilinear"), 3: ("nearest", "trilinear")}


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of (N, C, L), (N, C, H, W) or (N, C, D, H, W) input to ``size``
    or by ``scale_factor``: mode 'nearest', 'nearest-exact', 'area' (adaptive average pooling),
    'linear' (3-D), 'bilinear' or 'bicubic' (4-D), 'trilinear' (5-D), with PyTorch's source-index rules
    (align_corners for the interpolating modes; bicubic's A = -0.75 kernel with its taps
    clamped to the border). ``antialias=True`` (bilinear and bicubic) widens the filter when
    shrinking, as torch's (and PIL's)."""
    name = "interpolate"
    if not (isinstance(input, Tensor) and input.dtype == np.uint8
            and mode in ("nearest", "nearest-exact")):  # uint8 images and masks, as PyTorch
        _float_input(name, input)
    if mode not in _MODES:
        raise ValueError(f"{name}: mode {mode!r} is not supported; minidl has "
                         f"{', '.join(map(repr, _MODES))}")
    dims = input.ndim - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"{name}: expected a 3-D (N, C, L), 4-D (N, C, H, W) or 5-D "
                         f"(N, C, D, H, W) input, got shape {input.shape}")
    if _MODES[mode] is not None and _MODES[mode] != dims:
        raise ValueError(f"{name}: mode {mode!r} expects a {_MODES[mode] + 2}-D input, got "
                         f"shape {input.shape}")
    if mode in ("nearest", "nearest-exact", "area") and align_corners is not None:
        raise ValueError(f"{name}: align_corners option can only be set with the interpolating "
                         f"modes: linear | bilinear | bicubic | trilinear")
    if antialias and (mode not in ("bilinear", "bicubic") or dims != 2):
        raise ValueError(f"{name}: anti-alias option is restricted to bilinear and bicubic "
                         f"modes and requires a 4-D tensor as input (got mode {mode!r}, input "
                         f"shape {input.shape})")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{name}: exactly one of size or scale_factor must be given")
    if recompute_scale_factor and size is not None:
        raise ValueError(f"{name}: recompute_scale_factor is not meaningful with an explicit "
                         f"size")
    in_sizes = input.shape[2:]
    if size is not None:
        out = _ntuple(size, dims, f"{name}: size")
        scales = [None] * dims
    else:
        if isinstance(scale_factor, (tuple, list)):
            if len(scale_factor) != dims:
                raise ValueError(f"{name}: scale_factor must have {dims} elements, got "
                                 f"{scale_factor!r}")
            factors = [float(f) for f in scale_factor]
        else:
            factors = [float(scale_factor)] * dims
        if min(factors) <= 0:
            raise ValueError(f"{name}: scale_factor must be positive, got {scale_factor!r}")
        out = tuple(int(math.floor(s * f)) for s, f in zip(in_sizes, factors))
        scales = [None] * dims if recompute_scale_factor else factors
    if min(out) < 1:
        raise ValueError(f"{name}: output size {out} must be positive (input {input.shape})")
    if mode == "area":  # PyTorch's area mode is adaptive average pooling to the output size
        return (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d)[dims - 1](input,
                                                                                     out)
    taps = []
    for d, (n_in, n_out, factor) in enumerate(zip(in_sizes, out, scales)):
        if antialias:  # torch's separable antialiased kernel leaves a dim of unchanged size
            if n_in != n_out:
                taps.append((2 + d,) + _antialias_taps(mode, n_in, n_out, factor,
                                                       bool(align_corners)))
            continue
        if n_in == n_out and (factor in (None, 1.0) or mode in _COPIES_SAME_SIZE[dims]):
            continue
        if mode == "nearest" and dims == 2 and n_out == 2 * n_in:
            factor = None  # PyTorch's 2-D nearest takes index // 2 whatever the scale_factor
        taps.append((2 + d,) + _taps(mode, n_in, n_out, factor, bool(align_corners)))
    if not taps:
        return input.clone()
    return Resample.apply(input, taps=tuple(taps))


def _cubic_weights(t, a=-0.75):
    """PyTorch's cubic convolution weights for the taps at floor(pos) - 1 .. floor(pos) + 2,
    t = pos - floor(pos)."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def _antialias_taps(mode, n_in, n_out, factor, align_corners):
    """torch's antialiased weights (the filter widened by the scale when shrinking, as PIL's):
    output i reads the inputs within ``support`` of its centre scale * (i + 0.5), weighted by
    the triangle (bilinear) or Keys' a = -0.5 cubic (bicubic) filter and normalised to sum 1;
    given as taps (index, weight) for Resample, a weight 0 past each row's last input."""
    if align_corners:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        scale = (1.0 / factor) if factor is not None else n_in / n_out
    reach = 2.0 if mode == "bicubic" else 1.0  # half the filter's width
    support = reach * scale if scale >= 1.0 else reach
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(n_out, dtype=np.float64) + 0.5)
    lo = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), n_in)
    count = np.maximum(hi - lo, 0)
    index, weights = [], []
    for j in range(max(int(count.max()), 1)):
        x = np.abs((lo + j - center + 0.5) * inv)
        if mode == "bicubic":
            a = -0.5
            w = np.where(x < 1.0, ((a + 2) * x - (a + 3)) * x * x + 1,
                         np.where(x < 2.0, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))
        else:
            w = np.maximum(1.0 - x, 0.0)
        weights.append(np.where(j < count, w, 0.0))
        index.append(np.minimum(lo + j, n_in - 1))
    total = np.sum(weights, axis=0)
    total = np.where(total != 0.0, total, 1.0)
    return tuple(index), tuple(w / total for w in weights)


def _taps(mode, n_in, n_out, factor, align_corners):
    dst = np.arange(n_out, dtype=np.float64)
    scale = (1.0 / factor) if factor is not None else n_in / n_out
    if mode == "nearest":
        src = np.minimum(np.floor(dst * scale).astype(np.int64), n_in - 1)
        return (src,), (None,)
    if mode == "nearest-exact":
        src = np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), n_in - 1)
        return (src,), (None,)
    if align_corners:
        pos = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        pos = (dst + 0.5) * scale - 0.5
    if mode == "bicubic":  # positions left of the first pixel are not clamped, the taps are
        i0 = np.floor(pos).astype(np.int64)
        index = tuple(np.clip(i0 + k, 0, n_in - 1) for k in (-1, 0, 1, 2))
        return index, _cubic_weights(pos - i0)
    pos = np.maximum(pos, 0.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = pos - i0
    return (i0, i1), (1.0 - lam, lam)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated alias of interpolate (warns as PyTorch's)."""
    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` "
                  "instead.", stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """Deprecated: interpolate(mode='nearest') (warns as PyTorch's)."""
    warnings.warn("`nn.functional.upsample_nearest` is deprecated. Use "
                  "`nn.functional.interpolate` instead.", stacklevel=2)
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """Deprecated: interpolate(mode='bilinear', align_corners=True) (warns as PyTorch's)."""
    warnings.warn("`nn.functional.upsample_bilinear` is deprecated. Use "
                  "`nn.functional.interpolate` instead.", stacklevel=2)
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# ---- pixel shuffle ---------------------------------------------------------------------------------
def pixel_shuffle(input, upscale_factor):
    """(*, C * r^2, H, W) -> (*, C, H * r, W * r), as PyTorch's (a reshape and a permute)."""
    name = "pixel_shuffle"
    r = _whole(upscale_factor, f"{name}: upscale_factor")
    if not isinstance(input, Tensor) or input.ndim < 3:
        raise ValueError(f"{name}: expected an input of at least 3 dims, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    if r < 1:
        raise ValueError(f"{name}: upscale_factor must be positive, got {r}")
    *lead, c, h, w = input.shape
    if c % (r * r):
        raise ValueError(f"{name}: the channels ({c}) must be divisible by upscale_factor "
                         f"squared ({r * r})")
    k = len(lead)
    y = input.reshape(*lead, c // (r * r), r, r, h, w)
    y = y.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H * r, W * r) -> (*, C * r^2, H, W), the inverse of pixel_shuffle."""
    name = "pixel_unshuffle"
    r = _whole(downscale_factor, f"{name}: downscale_factor")
    if not isinstance(input, Tensor) or input.ndim < 3:
        raise ValueError(f"{name}: expected an input of at least 3 dims, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    if r < 1:
        raise ValueError(f"{name}: downscale_factor must be positive, got {r}")
    *lead, c, h, w = input.shape
    if h % r or w % r:
        raise ValueError(f"{name}: height {h} and width {w} must be divisible by "
                         f"downscale_factor {r}")
    k = len(lead)
    y = input.reshape(*lead, c, h // r, r, w // r, r)
    y = y.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


def channel_shuffle(input, groups):
    """(N, C, *) with its channels regrouped: channel g * (C / groups) + k goes to
    k * groups + g, as PyTorch's (a reshape, a transpose and a reshape)."""
    name = "channel_shuffle"
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    groups = _whole(groups, f"{name}: groups")
    if input.ndim < 3:
        raise ValueError(f"channel_shuffle expects input to have at least 3 dimensions, but got "
                         f"input with {input.ndim} dimension(s)")
    if groups <= 0:
        raise ValueError(f"Number of groups to divide channels in must be positive. Value of "
                         f"groups:{groups}")
    n, c, *rest = input.shape
    if c % groups:
        raise ValueError(f"Number of channels must be divisible by groups. Got {c} channels and "
                         f"{groups} groups.")
    y = input.reshape(n, groups, c // groups, *rest).transpose(1, 2)
    return y.reshape(n, c, *rest)


# ---- max_pool*_with_indices, max_unpool, lp_pool ---------------------------------------------
def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=False):
    """max_pool1d and the winners' positions, always (PyTorch's *_with_indices)."""
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=False):
    """max_pool2d and the winners' flat indices into H * W, always."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=False):
    """max_pool3d and the winners' flat indices into D * H * W, always."""
    return max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=False):
    """adaptive_max_pool1d and the winners' positions, always."""
    return adaptive_max_pool1d(input, output_size, True)


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=False):
    """adaptive_max_pool2d and the winners' flat indices, always."""
    return adaptive_max_pool2d(input, output_size, True)


def adaptive_max_pool3d_with_indices(input, output_size, return_indices=False):
    """adaptive_max_pool3d and the winners' flat indices, always."""
    return adaptive_max_pool3d(input, output_size, True)


class MaxUnpool(Function):
    """Each input value placed at its flat index in a zero (N, C, prod(out_sizes)) output;
    backward reads the gradient back from there."""

    def forward(self, x, indices, out_sizes):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        out = xp.zeros((n, c, math.prod(out_sizes)), dtype=x.dtype)
        idx = indices.reshape(n, c, -1)
        out[xp.arange(n)[:, None, None], xp.arange(c)[None, :, None], idx] = x.reshape(n, c, -1)
        self.idx, self.in_shape = idx, x.shape
        return out.reshape((n, c) + tuple(out_sizes))

    def backward(self, g):
        xp = get_array_module(g)
        n, c = g.shape[:2]
        return xp.take_along_axis(g.reshape(n, c, -1), self.idx, axis=2).reshape(self.in_shape)

    def graph_backward(self, g, out):
        return GatherPlanes.apply(g, index=self.idx.reshape(self.in_shape))


def _max_unpool(name, dims, input, indices, kernel_size, stride, padding, output_size):
    _float_input(name, input)
    if not isinstance(indices, Tensor) or indices.data.dtype.kind not in "iu":
        raise TypeError(f"{name}: indices must be an integer Tensor (as max_pool's "
                        f"return_indices gives), got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if tuple(indices.shape) != tuple(input.shape):
        raise ValueError(f"{name}: Expected shape of indices to be same as that of the input "
                         f"tensor ({tuple(input.shape)}) but got indices tensor with shape: "
                         f"{tuple(indices.shape)}")
    x, unbatched = _batched(name, input, dims)
    idx = indices.unsqueeze(0) if unbatched else indices
    kernel = _ntuple(kernel_size, dims, f"{name}: kernel_size")
    stride = kernel if stride is None else _ntuple(stride, dims, f"{name}: stride")
    padding = _ntuple(padding, dims, f"{name}: padding")
    default = [(x.shape[2 + d] - 1) * stride[d] + kernel[d] - 2 * padding[d]
               for d in range(dims)]
    if output_size is None:
        out = tuple(default)
    else:
        size = tuple(output_size)
        if len(size) == dims + 2:
            size = size[2:]
        if len(size) != dims:
            raise ValueError(f"output_size should be a sequence containing {dims} or {dims + 2} "
                             f"elements, but it has a length of '{len(size)}'")
        for d in range(dims):
            lo, hi = default[d] - stride[d], default[d] + stride[d]
            if not lo < size[d] < hi:
                raise ValueError(f'invalid output_size "{tuple(size)}" (dim {d} must be between '
                                 f'{lo} and {hi})')
        out = tuple(int(v) for v in size)
    total = math.prod(out)
    data = idx.data
    xp = get_array_module(data)
    low, high = xp.stack([data.min(), data.max()]).tolist() if data.size else (0, 0)  # 1 copy
    if low < 0 or high >= total:
        bad = low if low < 0 else high
        raise IndexError(f"{name}: Found an invalid max index: {bad} (output volumes are of "
                         f"size {'x'.join(map(str, out))})")
    (x,) = _F._autocast_inputs(name, x)
    y = MaxUnpool.apply(x, indices=data.astype(np.int64, copy=False), out_sizes=out)
    return y.squeeze(0) if unbatched else y


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool1d: each value put back at its index (from
    return_indices) in a zero output of length (L - 1) * stride - 2 * padding + kernel_size
    (or output_size)."""
    return _max_unpool("max_unpool1d", 1, input, indices, kernel_size, stride, padding,
                       output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool2d: each value put back at its flat index into
    H_out * W_out, the rest zero."""
    return _max_unpool("max_unpool2d", 2, input, indices, kernel_size, stride, padding,
                       output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool3d."""
    return _max_unpool("max_unpool3d", 3, input, indices, kernel_size, stride, padding,
                       output_size)


def _lp_pool(name, dims, input, norm_type, kernel_size, stride, ceil_mode):
    _float_input(name, input)
    kernel = _ntuple(kernel_size, dims, f"{name}: kernel_size")
    maxp, avgp = {1: (max_pool1d, avg_pool1d), 2: (max_pool2d, avg_pool2d),
                  3: (max_pool3d, avg_pool3d)}[dims]
    if norm_type == float("inf"):
        return maxp(input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == -float("inf"):
        return -maxp(-input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    out = avgp(input.pow(norm_type), kernel_size, stride, 0, ceil_mode)
    # PyTorch's: sign(out) * relu(|out|), times the window size, to the power 1/p. The sign
    # is a constant (its derivative is 0): through the op, an all-zero window's infinite
    # power gradient times sign's 0 made its gradient NaN where torch's is 0
    xp = get_array_module(out.data)
    dtype = out.data.dtype
    factor = Tensor((xp.sign(out.data) * math.prod(kernel)).astype(dtype, copy=False))
    r = out.abs().relu() * factor
    # an all-zero window: 0, with a 0 gradient (1 ** (1/p) times 0, no inf * 0 on the way)
    zero = r.data == 0
    return (r + Tensor(zero.astype(dtype))).pow(1.0 / norm_type) * Tensor((~zero).astype(dtype))


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling: (sum over each window of x^p)^(1/p) over (N, C, L) input
    (max of |x| for p = inf), as PyTorch's."""
    return _lp_pool("lp_pool1d", 1, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, H, W) input, as PyTorch's."""
    return _lp_pool("lp_pool2d", 2, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, D, H, W) input, as PyTorch's."""
    return _lp_pool("lp_pool3d", 3, input, norm_type, kernel_size, stride, ceil_mode)
