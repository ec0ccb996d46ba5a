"""``make_grid`` and ``save_image``, as ``torchvision.utils``: a batch of images tiled into one
picture (for looking at inputs, reconstructions or samples)."""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from ..backend import get_array_module
from ..backend.dtypes import is_floating
from ..tensor import Tensor

__all__ = ["make_grid", "save_image"]


def _as_array(tensor):
    if isinstance(tensor, Tensor):
        return tensor.data
    if isinstance(tensor, (list, tuple)):
        if not tensor:
            raise ValueError("make_grid: got an empty list of tensors")
        if not all(isinstance(t, Tensor) for t in tensor):
            raise TypeError(f"make_grid: tensor or list of tensors expected, got "
                            f"{[type(t).__name__ for t in tensor]}")
        shapes = {t.shape for t in tensor}
        if len(shapes) != 1:
            raise ValueError(f"make_grid: the tensors of the list differ in shape: "
                             f"{sorted(shapes)}")
        xp = get_array_module(tensor[0].data)
        return xp.stack([t.data for t in tensor])
    raise TypeError(f"make_grid: tensor or list of tensors expected, got {type(tensor).__name__}")


def make_grid(tensor, nrow=8, padding=2, normalize=False, value_range=None, scale_each=False,
              pad_value=0.0):
    """Tile a (B, C, H, W) batch (or a list of (C, H, W) images) into one (C', H', W') image
    with ``nrow`` images per row and ``padding`` pixels of ``pad_value`` around each; one-
    channel images become three. ``normalize`` maps ``value_range`` (default: the min and max,
    of each image with ``scale_each``) to [0, 1]."""
    a = _as_array(tensor)
    xp = get_array_module(a)
    if a.ndim == 2:  # a single image (H, W)
        a = a[None]
    if a.ndim == 3:  # a single image (C, H, W)
        if a.shape[0] == 1:
            a = xp.concatenate([a, a, a], axis=0)
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"make_grid: expected a 2-, 3- or 4-dimensional tensor, got shape "
                         f"{tuple(a.shape)}")
    if a.shape[1] == 1:
        a = xp.concatenate([a, a, a], axis=1)
    if normalize:
        a = a.astype(a.dtype if is_floating(np.dtype(a.dtype)) else np.float32, copy=True)
        if value_range is not None and (not isinstance(value_range, (tuple, list))
                                        or len(value_range) != 2):
            raise TypeError(f"make_grid: value_range has to be a tuple (min, max) if "
                            f"specified, got {value_range!r}")

        def norm(img):
            low, high = (float(img.min()), float(img.max())) if value_range is None \
                else (float(value_range[0]), float(value_range[1]))
            out = (xp.clip(img, low, high) - low) / max(high - low, 1e-5)
            return out.astype(img.dtype, copy=False)  # NumPy's clip makes bfloat16 float32

        if scale_each:
            a = xp.stack([norm(img) for img in a])
        else:
            a = norm(a)
    if a.shape[0] == 1:
        return Tensor(a[0])
    nmaps = a.shape[0]
    xmaps = min(nrow, nmaps)
    ymaps = int(math.ceil(nmaps / xmaps))
    height, width = a.shape[2] + padding, a.shape[3] + padding
    grid = xp.full((a.shape[1], height * ymaps + padding, width * xmaps + padding), pad_value,
                   dtype=a.dtype)
    for k in range(nmaps):
        y, x = divmod(k, xmaps)
        grid[:, y * height + padding:(y + 1) * height, x * width + padding:(x + 1) * width] = a[k]
    return Tensor(grid)


def save_image(tensor, fp, format=None, **kwargs):
    """Write ``make_grid(tensor, **kwargs)`` as an image file: values in [0, 1] become bytes
    (x * 255 + 0.5, clamped), as torchvision's save_image does."""
    if isinstance(fp, (str, os.PathLike)):
        folder = os.path.dirname(os.fspath(fp)) or "."
        if not os.path.isdir(folder):  # checked before any work, as minidl's outputs are
            raise FileNotFoundError(f"save_image: folder {folder} does not exist")
    grid = make_grid(tensor, **kwargs)
    host = grid.numpy().astype(np.float32)
    pixels = np.clip(host * 255 + 0.5, 0, 255).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = pixels.transpose(1, 2, 0)
        if pixels.shape[2] == 1:
            pixels = pixels[..., 0]
    Image.fromarray(np.ascontiguousarray(pixels)).save(fp, format=format)
