"""Image loading and ImageNet preprocessing, shared by datasets, models and examples, and
torchvision's transform classes (``Compose``, ``ToTensor``, ``Normalize``, ``RandomCrop``, ...,
defined in ``transforms.transforms``; the functions behind them in ``transforms.functional``).

``load_image`` opens any file Pillow reads as an upright RGB image; ``preprocess`` reproduces torchvision's ``Resize(256), CenterCrop(224), ToTensor(),
Normalize(mean, std)`` on Pillow images, so weights converted from torchvision see the inputs
they were trained for.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

from . import functional
from .transforms import *  # noqa: F403  (torchvision's classes, by their names)
from .transforms import __all__ as _classes

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageReadError", "load_image", "preprocess",
           "preprocess_batch", "functional"] + _classes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(OSError, ValueError):
    """A file that Pillow cannot read as an image. Both an OSError (what Pillow raises) and a
    ValueError (minidl's rule for bad input), so either ``except`` catches it."""


def _to_rgb(img):
    """Any Pillow mode -> RGB, upright."""
    img = ImageOps.exif_transpose(img)  # phones store pictures sideways plus an orientation tag
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        # Pillow's own convert() clips these to 0..255 instead of scaling them.
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":  # float images: taken as 0..1 when they fit, else as 0..255
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        else:  # 16-bit greyscale (mode "I" is what 16-bit PNGs opened as in older Pillow)
            a = a / 257.0  # 65535 -> 255
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # transparent pixels have arbitrary colour underneath: put them on white, like a viewer
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(path):
    """Open an image file as an upright RGB ``PIL.Image``; unreadable files name themselves."""
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            img.load()  # Image.open is lazy: decode now so truncated data fails here, with the name
            return _to_rgb(img)
    except FileNotFoundError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageReadError(f"cannot read image {path}: {e}") from e


def _resize_shorter_side(img, size):
    """torchvision's Resize(int): the shorter side becomes `size`, the longer one is truncated."""
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    # Pillow's BILINEAR widens its filter when shrinking (antialiasing), as torchvision's PIL path does
    return img.resize((new_w, new_h), Image.BILINEAR)


def _center_crop(img, size):
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))  # torchvision's rounding
    return img.crop((left, top, left + size, top + size))


def preprocess(image_or_path, resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Image or path -> normalised float32 array (3, crop, crop), as for torchvision's ImageNet models.

    A PIL image is made RGB and upright like a file: its EXIF orientation tag is applied (and
    dropped, so an image from ``load_image`` is not turned twice).
    """
    if crop > resize:
        raise ValueError(f"preprocess: crop {crop} is larger than the resized shorter side {resize}")
    if isinstance(image_or_path, Image.Image):
        img = _to_rgb(image_or_path)
    else:
        img = load_image(image_or_path)
    img = _center_crop(_resize_shorter_side(img, resize), crop)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # HWC -> CHW


def preprocess_batch(paths, **kwargs):
    """Several images -> one float32 batch (N, 3, crop, crop); keyword arguments as preprocess."""
    return np.stack([preprocess(p, **kwargs) for p in paths])
