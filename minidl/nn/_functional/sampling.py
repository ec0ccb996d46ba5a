"""Spatial transformers, as PyTorch's: affine_grid (a grid of normalised sampling positions from
a batch of affine matrices) and grid_sample (the input read at those positions: bilinear /
trilinear, nearest or bicubic taps, zeros / border / reflection padding).

grid_sample is one Function over any array module. Each output position reads a small box of
input elements (2 per dim for linear, 1 for nearest, 4 for bicubic); the box is walked one tap
combination at a time, each a gather of (N, C, L) values with a weight per position. Backward
scatters the weighted gradient back to those elements (the input's gradient) and, for the
grid, sums the weights' derivatives times the values read, through PyTorch's chain of
unnormalisation and padding (whose derivative is 0 where a coordinate is clipped and -1 where
it is reflected).
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np

from ... import functional as _F
from ...backend import get_array_module
from ...backend.dtypes import is_floating
from ...functional import GatherPlanes, ScatterPlanes, _float_input, _needs_grad
from ...ops import constant, stack
from ...tensor import Function, Tensor

_ALIGN_WARNING = ("Default grid_sample and affine_grid behavior has changed to "
                  "align_corners=False since 1.3.0. Please specify align_corners=True if the old "
                  "behavior is desired. See the documentation of grid_sample for details.")


def _linspace(xp, n, align_corners, dtype):
    """PyTorch's normalised pixel positions: -1..1, or the pixel centres without
    align_corners; a single pixel is at 0."""
    if n <= 1:
        return xp.zeros(max(n, 0), dtype=dtype)
    pos = xp.linspace(-1.0, 1.0, n, dtype=np.float64)
    if not align_corners:
        pos = pos * ((n - 1) / n)
    return pos.astype(dtype)


def affine_grid(theta, size, align_corners=None):
    """Sampling grid (N, H, W, 2) (or (N, D, H, W, 3)) of theta (N, 2, 3) (or (N, 3, 4)) applied
    to the normalised positions of an output of ``size`` (N, C, H, W) (or (N, C, D, H, W));
    the last dim holds (x, y[, z]) as grid_sample reads them."""
    name = "affine_grid"
    if align_corners is None:
        warnings.warn(_ALIGN_WARNING, stacklevel=2)
        align_corners = False
    if not isinstance(theta, Tensor):
        raise TypeError(f"{name}: theta must be a Tensor, got {type(theta).__name__}")
    if not is_floating(theta.data.dtype):
        raise ValueError(f"Expected theta to have floating point type, but got {theta.dtype}")
    size = tuple(int(s) for s in size)
    if len(size) == 4:
        if theta.ndim != 3 or tuple(theta.shape[-2:]) != (2, 3):
            raise ValueError(f"Expected a batch of 2D affine matrices of shape Nx2x3 for size "
                             f"{size}. Got {tuple(theta.shape)}.")
    elif len(size) == 5:
        if theta.ndim != 3 or tuple(theta.shape[-2:]) != (3, 4):
            raise ValueError(f"Expected a batch of 3D affine matrices of shape Nx3x4 for size "
                             f"{size}. Got {tuple(theta.shape)}.")
    else:
        raise NotImplementedError(f"affine_grid only supports 4D and 5D sizes, for 2D and 3D "
                                  f"affine transforms, respectively. Got size {size}.")
    spatial = size[2:]
    if align_corners and min(spatial) == 1:
        warnings.warn("Since version 1.3.0, affine_grid behavior has changed for unit-size "
                      "grids when align_corners=True. This is not an intended use case of "
                      "affine_grid. See the documentation of affine_grid for details.",
                      stacklevel=2)
    elif min(size) <= 0:
        raise ValueError(f"Expected non-zero, positive output size. Got {size}")
    if theta.shape[0] != size[0]:
        raise ValueError(f"{name}: theta holds {theta.shape[0]} matrices, size asks for a "
                         f"batch of {size[0]}")
    xp = get_array_module(theta.data)
    dtype = theta.data.dtype
    dims = len(spatial)
    # base (*spatial, dims + 1): (x, y[, z], 1), x along the last spatial dim
    axes = [_linspace(xp, n, align_corners, dtype) for n in spatial]
    mesh = xp.meshgrid(*axes, indexing="ij")
    base = xp.stack([mesh[dims - 1 - k] for k in range(dims)] + [xp.ones_like(mesh[0])],
                    axis=-1)
    base = Tensor(base.reshape(1, -1, dims + 1))
    grid = base @ theta.transpose(1, 2)                   # (N, prod(spatial), dims)
    return grid.reshape(size[0], *spatial, dims)


# ---- grid_sample ------------------------------------------------------------------------------
def _unnormalize(xp, coord, size, align_corners):
    """Normalised -1..1 to pixel coordinates, and d(pixel)/d(normalised)."""
    if align_corners:
        return (coord + 1) / 2 * (size - 1), (size - 1) / 2
    return ((coord + 1) * size - 1) / 2, size / 2


def _clip(xp, coord, size):
    grad = ((coord > 0) & (coord < size - 1)).astype(coord.dtype)
    return xp.clip(coord, 0, size - 1), grad


def _reflect(xp, coord, twice_low, twice_high):
    """PyTorch's reflect_coordinates: coord mirrored into [twice_low/2, twice_high/2], and
    its derivative (+1 or -1)."""
    if twice_low == twice_high:
        return xp.zeros_like(coord), xp.zeros_like(coord)
    low = twice_low / 2
    span = (twice_high - twice_low) / 2
    sign = xp.where(coord < low, -1.0, 1.0).astype(coord.dtype)
    dist = xp.abs(coord - low)
    extra = xp.fmod(dist, span)
    flips = xp.floor(dist / span)
    even = (flips % 2) == 0
    out = xp.where(even, extra + low, span - extra + low)
    return out, xp.where(even, sign, -sign)


def _pad_coordinates(xp, coord, size, padding_mode, align_corners):
    """PyTorch's compute_coordinates with its derivative."""
    if padding_mode == "border":
        return _clip(xp, coord, size)
    if padding_mode == "reflection":
        if align_corners:
            coord, g1 = _reflect(xp, coord, 0, 2 * (size - 1))
        else:
            coord, g1 = _reflect(xp, coord, -1, 2 * size - 1)
        coord, g2 = _clip(xp, coord, size)
        return coord, g1 * g2
    return coord, xp.ones_like(coord)


def _cubic(t, a=-0.75):
    """The cubic convolution coefficients of the taps at floor - 1 .. floor + 2 and their
    derivatives in t (PyTorch's A = -0.75)."""
    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def near_d(x):
        return (3 * (a + 2) * x - 2 * (a + 3)) * x

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    def far_d(x):
        return (3 * a * x - 10 * a) * x + 8 * a

    coeffs = (far(t + 1), near(t), near(1 - t), far(2 - t))
    derivs = (far_d(t + 1), near_d(t), -near_d(1 - t), -far_d(2 - t))
    return coeffs, derivs


def _taps(xp, coord, size, mode, padding_mode, align_corners):
    """Per spatial dim: a list of (integer position, weight, d weight / d normalised coord)."""
    pix, unnorm = _unnormalize(xp, coord, size, align_corners)
    if mode == "bicubic":  # the taps are padded, not the coordinate
        i0 = xp.floor(pix)
        coeffs, derivs = _cubic(pix - i0)
        taps = []
        for k in range(4):
            pos = i0 - 1 + k
            if padding_mode != "zeros":
                pos, _ = _pad_coordinates(xp, pos, size, padding_mode, align_corners)
            taps.append((pos.astype(np.int64), coeffs[k], derivs[k] * unnorm))
        return taps
    pix, pad_grad = _pad_coordinates(xp, pix, size, padding_mode, align_corners)
    chain = pad_grad * unnorm
    if mode == "nearest":
        return [(xp.rint(pix).astype(np.int64), xp.ones_like(pix), xp.zeros_like(pix))]
    i0 = xp.floor(pix)
    t = pix - i0
    i0 = i0.astype(np.int64)
    return [(i0, 1 - t, -chain), (i0 + 1, t, chain)]


class GridSample(Function):
    """input (N, C, *S) read at grid (N, *O, dims) -> (N, C, *O)."""

    def forward(self, x, grid, mode, padding_mode, align_corners):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        sizes = x.shape[2:]
        dims = len(sizes)
        out_sizes = grid.shape[1:-1]
        g = grid.reshape(n, -1, dims)
        # spatial dim d (0 = the first after C) reads the grid's component dims - 1 - d
        per_dim = [_taps(xp, g[:, :, dims - 1 - d], sizes[d], mode, padding_mode, align_corners)
                   for d in range(dims)]
        flat_x = x.reshape(n, c, -1)
        y = xp.zeros((n, c, g.shape[1]), dtype=x.dtype)
        combos = []
        for combo in itertools.product(*per_dim):
            valid = xp.ones(g.shape[:2], dtype=bool)
            index = xp.zeros(g.shape[:2], dtype=np.int64)
            weight = xp.ones(g.shape[:2], dtype=x.dtype)
            for d, (pos, w, _) in enumerate(combo):
                valid &= (pos >= 0) & (pos < sizes[d])
                index += xp.clip(pos, 0, sizes[d] - 1) * math.prod(sizes[d + 1:])
                weight = weight * w
            weight = xp.where(valid, weight, 0).astype(x.dtype, copy=False)
            full_index = xp.broadcast_to(index[:, None], (n, c, index.shape[1]))
            values = xp.take_along_axis(flat_x, full_index, axis=2)
            y += weight[:, None] * values
            combos.append((combo, valid, index))
        self.combos, self.shapes = combos, (x.shape, grid.shape)
        self.options = (mode, padding_mode, align_corners)
        self.save_for_backward(x)
        return y.reshape((n, c) + tuple(out_sizes))

    def backward(self, gy):
        xp = get_array_module(gy)
        (x,) = self.saved
        x_shape, grid_shape = self.shapes
        n, c = x_shape[:2]
        dims = len(x_shape) - 2
        gy = gy.reshape(n, c, -1)
        want_x, want_grid = _needs_grad(self, 0), _needs_grad(self, 1)
        flat_x = x.reshape(n, c, -1)
        gx = xp.zeros((n * c, flat_x.shape[2]), dtype=gy.dtype) if want_x else None
        ggrid = xp.zeros((n, gy.shape[2], dims), dtype=gy.dtype) if want_grid else None
        rows = xp.arange(n * c).reshape(-1, 1)
        for combo, valid, index in self.combos:
            weights = [w for _, w, _ in combo]
            weight = xp.where(valid, math.prod(weights) if dims else 1, 0).astype(gy.dtype)
            full_index = xp.broadcast_to(index[:, None], (n, c, index.shape[1]))
            if want_x:
                part = (weight[:, None] * gy).reshape(n * c, -1)
                _scatter_add(xp, gx, (rows, full_index.reshape(n * c, -1)), part)
            if want_grid:
                values = xp.take_along_axis(flat_x, full_index, axis=2)
                seen = xp.where(valid, (values * gy).sum(axis=1), 0)
                for d in range(dims):
                    dw = combo[d][2]
                    others = math.prod(weights[:d] + weights[d + 1:]) if dims > 1 else 1
                    ggrid[:, :, dims - 1 - d] += (dw * others * seen).astype(gy.dtype)
        gx = None if gx is None else gx.reshape(x_shape)
        ggrid = None if ggrid is None else ggrid.reshape(grid_shape)
        return gx, ggrid

    def graph_backward(self, g, out):
        # backward's sums as recorded ops: the taps' positions are constants, their weights
        # (and the weights' derivatives) functions of the grid, the values read gathers of x
        x, grid = self.inputs
        xp = get_array_module(g.data)
        x_shape, grid_shape = self.shapes
        n, c = x_shape[:2]
        sizes = x_shape[2:]
        dims = len(sizes)
        coords = grid.reshape(n, -1, dims)
        length = coords.shape[1]
        per_dim = [_graph_taps(xp, coords[:, :, dims - 1 - d], sizes[d], *self.options)
                   for d in range(dims)]
        g3 = g.reshape(n, c, length)
        flat_x = x.reshape(n, c, -1)
        gx, parts = None, [None] * dims
        for combo in itertools.product(*per_dim):
            valid = xp.ones((n, length), dtype=bool)
            index = xp.zeros((n, length), dtype=np.int64)
            for d, (pos, _, _) in enumerate(combo):
                valid &= (pos >= 0) & (pos < sizes[d])
                index += xp.clip(pos, 0, sizes[d] - 1) * math.prod(sizes[d + 1:])
            full_index = xp.ascontiguousarray(xp.broadcast_to(index[:, None], (n, c, length)))
            mask = constant(valid.astype(g.data.dtype))
            weights = [w for _, w, _ in combo]
            if x.requires_grad:
                weight = _product(weights) * mask
                part = ScatterPlanes.apply(weight.reshape(n, 1, length) * g3, index=full_index,
                                           shape=flat_x.shape)
                gx = part if gx is None else gx + part
            if grid.requires_grad and self.options[0] != "nearest":
                seen = (GatherPlanes.apply(flat_x, index=full_index) * g3).sum(dim=1) * mask
                for d in range(dims):
                    term = combo[d][2] * _product(weights[:d] + weights[d + 1:]) * seen
                    parts[d] = term if parts[d] is None else parts[d] + term
        ggrid = None
        if grid.requires_grad:
            if parts[0] is None:  # nearest: the weights do not move with the grid
                ggrid = constant(xp.zeros(grid_shape, dtype=g.data.dtype))
            else:
                ggrid = stack([parts[dims - 1 - k] for k in range(dims)], dim=-1)
                ggrid = ggrid.reshape(grid_shape)
        return (None if gx is None else gx.reshape(x_shape)), ggrid


def _product(factors):
    out = None
    for f in factors:
        out = f if out is None else out * f
    return out if out is not None else 1.0


def _graph_taps(xp, coord, size, mode, padding_mode, align_corners):
    """_taps with the weights and their derivatives as recorded ops of ``coord`` (a Tensor):
    the pixel coordinate is piecewise linear in it (unnormalisation, clipping, reflection),
    so locally it is its value plus its slope times (coord - its value)."""
    taps = _taps(xp, coord.data, size, mode, padding_mode, align_corners)
    if mode == "nearest":
        return [(pos, constant(w), None) for pos, w, _ in taps]
    value = coord.data
    if mode == "bicubic":
        _, unnorm = _unnormalize(xp, value, size, align_corners)
        pix = _unnormalize(xp, value, size, align_corners)[0]
        t0 = pix - xp.floor(pix)
        t = coord * unnorm + constant(t0 - unnorm * value)
        coeffs, derivs = _cubic(t)
        return [(pos, w, dw * unnorm) for (pos, _, _), w, dw in zip(taps, coeffs, derivs)]
    (i0, w0, dw0), (i1, w1, dw1) = taps
    slope = dw1  # d t / d coord: the chain of unnormalisation and padding
    t = coord * constant(slope) + constant(w1 - slope * value)
    return [(i0, 1 - t, constant(dw0)), (i1, t, constant(dw1))]


def _scatter_add(xp, target, index, values):
    if hasattr(xp.add, "at"):
        xp.add.at(target, index, values)
    else:  # CuPy before 12
        import cupyx

        cupyx.scatter_add(target, index, values)


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """input (N, C, H, W) read at grid (N, H_out, W_out, 2) of normalised (x, y) positions
    (-1..1; -1 the left/top edge, or pixel centre with align_corners) -> (N, C, H_out, W_out);
    5-D input with a (N, D_out, H_out, W_out, 3) grid for 'bilinear' (trilinear) and
    'nearest'. Gradients flow to both input and grid, as in PyTorch."""
    name = "grid_sample"
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(f"nn.functional.grid_sample(): expected mode to be 'bilinear', "
                         f"'nearest' or 'bicubic', but got: '{mode}'")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"nn.functional.grid_sample(): expected padding_mode to be 'zeros', "
                         f"'border', or 'reflection', but got: '{padding_mode}'")
    if align_corners is None:
        warnings.warn(_ALIGN_WARNING, stacklevel=2)
        align_corners = False
    _float_input(name, input)
    _float_input(name, grid)
    if input.ndim not in (4, 5):
        raise ValueError(f"{name}: expected a 4-D or 5-D input, got shape {input.shape}")
    dims = input.ndim - 2
    if grid.ndim != input.ndim or grid.shape[-1] != dims or grid.shape[0] != input.shape[0]:
        raise ValueError(f"{name}: grid of shape {grid.shape} does not fit input of shape "
                         f"{input.shape}: expected (N, {'D_out, ' if dims == 3 else ''}H_out, "
                         f"W_out, {dims}) with N = {input.shape[0]}")
    if mode == "bicubic" and dims != 2:
        raise ValueError(f"{name}: bicubic interpolation only supports 4D input")
    if input.data.dtype != grid.data.dtype:
        raise TypeError(f"{name}: expected input and grid to have the same dtype, but input "
                        f"has {input.dtype} and grid has {grid.dtype}")
    if input.device != grid.device:
        raise ValueError(f"{name}: input is on {input.device}, grid on {grid.device}")
    input, grid = _F._autocast_inputs(name, input, grid)
    return GridSample.apply(input, grid, mode=mode, padding_mode=padding_mode,
                            align_corners=bool(align_corners))


__all__ = ["affine_grid", "grid_sample"]
