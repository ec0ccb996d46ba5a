"""The functions behind the transform classes, as ``torchvision.transforms.functional``.

Each takes a ``PIL.Image`` or a minidl ``Tensor`` image of shape ``(..., C, H, W)`` (a batch
too, where torchvision allows one) and returns the same kind. PIL images go through Pillow's
own operations, as torchvision's do, so results match torchvision's PIL path; tensors are
computed on their array module (numpy or cupy) with torchvision's tensor formulas.
"""
from __future__ import annotations

import math
import numbers
from enum import Enum

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ...backend import get_array_module
from ...backend.dtypes import is_floating
from ...tensor import Tensor, is_grad_enabled

__all__ = ["InterpolationMode", "get_dimensions", "get_image_size", "get_image_num_channels",
           "to_tensor", "pil_to_tensor", "to_pil_image", "normalize", "resize", "crop",
           "center_crop", "resized_crop", "pad", "hflip", "vflip", "rgb_to_grayscale",
           "to_grayscale", "adjust_brightness", "adjust_contrast", "adjust_saturation",
           "adjust_hue", "rotate", "erase", "affine", "gaussian_blur", "five_crop", "ten_crop",
           "convert_image_dtype", "invert", "posterize", "solarize", "autocontrast",
           "adjust_sharpness", "equalize", "adjust_gamma"]


class InterpolationMode(Enum):
    """Interpolation filters by torchvision's names (the values are its strings)."""
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_PIL_FILTER = {
    InterpolationMode.NEAREST: Image.NEAREST, InterpolationMode.NEAREST_EXACT: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR, InterpolationMode.BICUBIC: Image.BICUBIC,
    InterpolationMode.BOX: Image.BOX, InterpolationMode.HAMMING: Image.HAMMING,
    InterpolationMode.LANCZOS: Image.LANCZOS,
}
_PIL_CODE_TO_MODE = {Image.NEAREST: InterpolationMode.NEAREST,
                     Image.BILINEAR: InterpolationMode.BILINEAR,
                     Image.BICUBIC: InterpolationMode.BICUBIC, Image.BOX: InterpolationMode.BOX,
                     Image.HAMMING: InterpolationMode.HAMMING,
                     Image.LANCZOS: InterpolationMode.LANCZOS}


def _interpolation(mode, name="interpolation"):
    if isinstance(mode, InterpolationMode):
        return mode
    if isinstance(mode, str):
        try:
            return InterpolationMode(mode)
        except ValueError:
            pass
    elif isinstance(mode, int) and not isinstance(mode, bool) and mode in _PIL_CODE_TO_MODE:
        return _PIL_CODE_TO_MODE[mode]  # Pillow's constants, which torchvision still takes
    raise TypeError(f"{name} should be an InterpolationMode (or one of "
                    f"{[m.value for m in InterpolationMode]}), got {mode!r}")


# ---- what kind of image -------------------------------------------------------------------
def _is_pil(img):
    return isinstance(img, Image.Image)


def _check_image(img, name):
    if _is_pil(img):
        return
    if not isinstance(img, Tensor):
        raise TypeError(f"{name}: img should be PIL Image or Tensor, got {type(img).__name__}")
    if img.data.ndim < 2:
        raise TypeError(f"{name}: a tensor image needs at least 2 dimensions (..., H, W), "
                        f"got shape {img.shape}")
    _check_no_grad(img, name)


def _check_no_grad(img, name):
    # the image operations work on the arrays, outside the graph: refuse rather than return
    # a result that gradients silently do not flow through
    if img.requires_grad and is_grad_enabled():
        raise RuntimeError(f"{name}: this transform is not differentiable in minidl, and the "
                           "tensor requires grad; detach() it, or run under minidl.no_grad()")


def _is_float(a):
    return is_floating(np.dtype(a.dtype))


def _max_value(a):
    return 1.0 if _is_float(a) else float(np.iinfo(a.dtype).max)


def get_dimensions(img):
    """[channels, height, width]."""
    _check_image(img, "get_dimensions")
    if _is_pil(img):
        return [len(img.getbands()), img.size[1], img.size[0]]
    shape = img.shape
    return [1 if len(shape) == 2 else shape[-3], shape[-2], shape[-1]]


def get_image_size(img):
    """[width, height]."""
    _, h, w = get_dimensions(img)
    return [w, h]


def get_image_num_channels(img):
    return get_dimensions(img)[0]


# ---- conversions ------------------------------------------------------------------------------
def _pil_array(pic, scaled):
    if pic.mode == "I":
        a = np.array(pic, np.int32)
    elif pic.mode == "I;16":
        a = np.array(pic, np.int16)
    elif pic.mode == "F":
        a = np.array(pic, np.float32)
    else:
        a = np.array(pic, np.uint8 if scaled else None)
        if pic.mode == "1" and scaled:
            a = a * np.uint8(255)
    return a.reshape(pic.size[1], pic.size[0], len(pic.getbands()))


def to_tensor(pic):
    """PIL image or HWC ndarray -> CHW float32 Tensor; uint8 values are divided by 255."""
    if _is_pil(pic):
        a = _pil_array(pic, scaled=True)
    elif isinstance(pic, np.ndarray):
        if pic.ndim not in (2, 3):
            raise ValueError(f"to_tensor: pic should be 2 or 3 dimensional, got {pic.ndim} "
                             "dimensions")
        a = pic[:, :, None] if pic.ndim == 2 else pic
    else:
        raise TypeError(f"to_tensor: pic should be PIL Image or ndarray, got {type(pic).__name__}")
    a = np.ascontiguousarray(a.transpose(2, 0, 1))
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / np.float32(255)
    return Tensor(a)


def pil_to_tensor(pic):
    """PIL image -> CHW Tensor of its own dtype (uint8 for most modes), not scaled."""
    if not _is_pil(pic):
        raise TypeError(f"pil_to_tensor: pic should be PIL Image, got {type(pic).__name__}")
    return Tensor(np.ascontiguousarray(_pil_array(pic, scaled=False).transpose(2, 0, 1)))


def to_pil_image(pic, mode=None):
    """CHW Tensor or HWC ndarray -> PIL image; float tensors are taken as values in [0, 1]."""
    if isinstance(pic, Tensor):
        a = pic.numpy()
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ValueError(f"to_pil_image: pic should be 2 or 3 dimensional, got shape "
                             f"{pic.shape}")
        if _is_float(a) and mode != "F":
            # torch's mul(255).byte(): truncated (clipped first, where torch's cast is undefined)
            a = np.clip(a * 255, 0, 255).astype(np.uint8)
        a = a.transpose(1, 2, 0)
    elif isinstance(pic, np.ndarray):
        a = pic
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise ValueError(f"to_pil_image: pic should be 2 or 3 dimensional, got {a.ndim} "
                             "dimensions")
    else:
        raise TypeError(f"to_pil_image: pic should be Tensor or ndarray, got {type(pic).__name__}")
    channels = a.shape[2]
    if channels > 4:
        raise ValueError(f"to_pil_image: pic should not have > 4 channels, got {channels} "
                         "channels")
    if channels == 1:
        a = a[:, :, 0]
        default = {np.dtype(np.uint8): "L", np.dtype(np.int16): "I;16",
                   np.dtype(np.int32): "I", np.dtype(np.float32): "F"}.get(a.dtype)
        if default is None:
            raise TypeError(f"to_pil_image: input type {a.dtype} is not supported")
        if mode is not None and mode != default:
            raise ValueError(f"to_pil_image: incorrect mode {mode!r} supplied for input type "
                             f"{a.dtype}; should be {default}")
        mode = default
        return _fromarray(a.astype(np.int32) if mode == "I" else a, mode)
    allowed = {2: ["LA"], 3: ["RGB", "YCbCr", "HSV"], 4: ["RGBA", "CMYK", "RGBX"]}[channels]
    if mode is not None and mode not in allowed:
        raise ValueError(f"to_pil_image: only modes {allowed} are supported for "
                         f"{channels}-channel inputs, got {mode!r}")
    if a.dtype != np.uint8:
        raise TypeError(f"to_pil_image: input type {a.dtype} is not supported for "
                        f"{channels} channels (needs uint8)")
    return _fromarray(np.ascontiguousarray(a), mode or allowed[0])


def normalize(tensor, mean, std, inplace=False):
    """(x - mean) / std per channel of a float tensor image (..., C, H, W)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"normalize: img should be Tensor Image, got {type(tensor).__name__}")
    a = tensor.data
    if not _is_float(a):
        raise TypeError(f"normalize: input tensor should be a float tensor, got {a.dtype}")
    if a.ndim < 3:
        raise ValueError(f"normalize: expected a tensor image of size (..., C, H, W), got "
                         f"shape {tensor.shape}")
    if tensor.requires_grad and is_grad_enabled() and inplace:
        raise RuntimeError("normalize: inplace=True on a tensor that requires grad")
    xp = get_array_module(a)
    mean_a = xp.asarray(np.asarray(mean, dtype=a.dtype).reshape(-1))
    std_host = np.asarray(std, dtype=a.dtype).reshape(-1)  # checked here, not read back
    std_a = xp.asarray(std_host)
    if bool((std_host == 0).any()):
        raise ValueError(f"normalize: std evaluated to zero after conversion to {a.dtype}, "
                         "leading to division by zero")
    channels = a.shape[-3]
    for name, v in (("mean", mean_a), ("std", std_a)):
        if v.size not in (1, channels):
            raise ValueError(f"normalize: {name} has {v.size} values for an image of "
                             f"{channels} channels")
    if tensor.requires_grad and is_grad_enabled():  # inside a model: minidl's ops, with grads
        return (tensor - Tensor(mean_a[:, None, None])) / Tensor(std_a[:, None, None])
    out = (a - mean_a[:, None, None]) / std_a[:, None, None]
    if inplace:
        a[...] = out
        return tensor
    return Tensor(out)


# ---- geometry ---------------------------------------------------------------------------------
def _output_size(h, w, size, max_size):
    """torchvision's rule: [int] sets the shorter side (the longer one truncated), [h, w] both."""
    if len(size) == 1:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size[0], int(size[0] * long / short)
        if max_size is not None:
            if max_size <= size[0]:
                raise ValueError(f"resize: max_size = {max_size} must be strictly greater than "
                                 f"the requested size for the smaller edge size = {size}")
            if new_long > max_size:
                new_short, new_long = int(max_size * new_short / new_long), max_size
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        return [new_h, new_w]
    if max_size is not None:
        raise ValueError("resize: max_size should only be passed if size specifies the length of "
                         "the smaller edge, i.e. size should be an int or a sequence of length 1")
    return [int(size[0]), int(size[1])]


def _weights(in_size, out_size, mode, antialias):
    """(out_size, in_size) matrix of one axis's resampling weights, as torch computes them."""
    scale = in_size / out_size
    w = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if mode in (InterpolationMode.NEAREST, InterpolationMode.NEAREST_EXACT):
        offset = 0.5 if mode is InterpolationMode.NEAREST_EXACT else 0.0
        src = np.minimum(np.floor((rows + offset) * scale).astype(np.int64), in_size - 1)
        w[rows, src] = 1.0
        return w
    cubic = mode is InterpolationMode.BICUBIC
    if antialias:
        # PIL's (and torch's antialias) filter, normalised over the taps inside the image, and
        # widened by the scale when shrinking
        stretch = max(scale, 1.0)
        support = (2.0 if cubic else 1.0) * stretch
        centers = (rows + 0.5) * scale
        x = (np.arange(in_size)[None, :] + 0.5 - centers[:, None]) / stretch
        w = _cubic(np.abs(x), -0.5) if cubic else np.maximum(0.0, 1.0 - np.abs(x))
        lo = np.maximum((centers - support + 0.5).astype(np.int64), 0)
        hi = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
        cols = np.arange(in_size)[None, :]
        w = np.where((cols >= lo[:, None]) & (cols < hi[:, None]), w, 0.0)
        return w / w.sum(axis=1, keepdims=True)
    src = (rows + 0.5) * scale - 0.5
    if not cubic:
        src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    if cubic:
        a = -0.75  # torch's bicubic without antialias (with it, -0.5 as PIL)
        taps = [(i0 - 1, _cubic(t + 1, a)), (i0, _cubic(t, a)), (i0 + 1, _cubic(1 - t, a)),
                (i0 + 2, _cubic(2 - t, a))]
    else:
        taps = [(i0, 1.0 - t), (i0 + 1, t)]
    for idx, wt in taps:
        np.add.at(w, (rows, np.clip(idx, 0, in_size - 1)), wt)
    return w


def _cubic(x, a):
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    """Resize to ``size``: an int (or [int]) sets the shorter side, keeping the aspect ratio;
    (h, w) sets both. PIL images use Pillow's filter (always antialiased)."""
    _check_image(img, "resize")
    interpolation = _interpolation(interpolation)
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = [int(size)]
    elif isinstance(size, (list, tuple)) and len(size) in (1, 2) \
            and all(isinstance(s, numbers.Integral) for s in size):
        size = [int(s) for s in size]
    else:
        raise TypeError(f"resize: size should be an int or a sequence of 1 or 2 ints, got {size!r}")
    if any(s <= 0 for s in size):
        raise ValueError(f"resize: size must be positive, got {size}")
    _, h, w = get_dimensions(img)
    out_h, out_w = _output_size(h, w, size, max_size)
    if (out_h, out_w) == (h, w):
        return img
    if _is_pil(img):
        return img.resize((out_w, out_h), _PIL_FILTER[interpolation])
    if interpolation not in (InterpolationMode.NEAREST, InterpolationMode.NEAREST_EXACT,
                             InterpolationMode.BILINEAR, InterpolationMode.BICUBIC):
        raise ValueError(f"resize: tensors support nearest, nearest-exact, bilinear and bicubic "
                         f"interpolation, got {interpolation.value}")
    a = img.data
    xp = get_array_module(a)
    work = a if _is_float(a) else a.astype(np.float32)
    wh = xp.asarray(_weights(h, out_h, interpolation, antialias).astype(work.dtype))
    ww = xp.asarray(_weights(w, out_w, interpolation, antialias).astype(work.dtype))
    out = xp.matmul(xp.matmul(wh, work), ww.T)
    if not _is_float(a):
        out = xp.clip(xp.rint(out), 0, _max_value(a)).astype(a.dtype)
    return Tensor(out)


def crop(img, top, left, height, width):
    """The box at (top, left) of size (height, width); outside the image is zero."""
    _check_image(img, "crop")
    top, left, height, width = int(top), int(left), int(height), int(width)
    if _is_pil(img):
        return img.crop((left, top, left + width, top + height))
    a = img.data
    h, w = a.shape[-2:]
    pad_t, pad_l = max(-top, 0), max(-left, 0)
    pad_b, pad_r = max(top + height - h, 0), max(left + width - w, 0)
    out = a[..., max(top, 0):min(top + height, h), max(left, 0):min(left + width, w)]
    if pad_t or pad_l or pad_b or pad_r:
        xp = get_array_module(a)
        out = xp.pad(out, [(0, 0)] * (a.ndim - 2) + [(pad_t, pad_b), (pad_l, pad_r)])
    return Tensor(out.copy())


def _setup_size(size, name):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size), int(size)
    if isinstance(size, (list, tuple)) and len(size) == 1:
        return int(size[0]), int(size[0])
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ValueError(f"{name}: please provide only two dimensions (h, w) for size, got {size!r}")


def center_crop(img, output_size):
    """The centre box of ``output_size``; an image smaller than it is padded with zeros first."""
    th, tw = _setup_size(output_size, "center_crop")
    _, h, w = get_dimensions(img)
    if tw > w or th > h:
        img = pad(img, [(tw - w) // 2 if tw > w else 0, (th - h) // 2 if th > h else 0,
                        (tw - w + 1) // 2 if tw > w else 0, (th - h + 1) // 2 if th > h else 0])
        _, h, w = get_dimensions(img)
        if (h, w) == (th, tw):
            return img
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return crop(img, top, left, th, tw)


def resized_crop(img, top, left, height, width, size, interpolation=InterpolationMode.BILINEAR,
                 antialias=True):
    return resize(crop(img, top, left, height, width), size, interpolation, antialias=antialias)


def _parse_padding(padding):
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        return [int(padding)] * 4
    if isinstance(padding, (list, tuple)) and len(padding) in (1, 2, 4) \
            and all(isinstance(p, numbers.Integral) for p in padding):
        p = [int(x) for x in padding]
        if len(p) == 1:
            return p * 4
        return [p[0], p[1], p[0], p[1]] if len(p) == 2 else p
    raise ValueError(f"pad: padding must be an int or a sequence of 1, 2 or 4 ints, got "
                     f"{padding!r}")


_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


def pad(img, padding, fill=0, padding_mode="constant"):
    """Pad the borders: padding is int (all sides), (left/right, top/bottom) or (left, top,
    right, bottom); negative values crop. Modes: constant (``fill``), edge, reflect, symmetric."""
    _check_image(img, "pad")
    left, top, right, bottom = _parse_padding(padding)
    if padding_mode not in _PAD_MODES:
        raise ValueError(f"pad: padding_mode should be one of {_PAD_MODES}, got {padding_mode!r}")
    if _is_pil(img):
        if img.mode == "P" and padding_mode == "constant":  # keep the palette
            a = pad(pil_to_tensor(img), [left, top, right, bottom], fill if
                    isinstance(fill, numbers.Number) else 0).numpy()[0]
            out = Image.fromarray(a, "P")
            out.putpalette(img.getpalette())
            return out
        a = np.asarray(img)
        out = _pad_array(a if a.ndim == 3 else a[..., None], left, top, right, bottom, fill,
                         padding_mode, channel_last=True)
        return _fromarray(out if a.ndim == 3 else out[..., 0], img.mode)
    if not isinstance(fill, numbers.Number) and not (isinstance(fill, (list, tuple))
                                                     and len(fill) == 1):
        raise TypeError(f"pad: fill for a tensor must be a number, got {fill!r}")
    a = img.data
    out = _pad_array(a if a.ndim > 2 else a[None], left, top, right, bottom,
                     fill if isinstance(fill, numbers.Number) else fill[0], padding_mode,
                     channel_last=False)
    return Tensor(out if a.ndim > 2 else out[0])


def _pad_array(a, left, top, right, bottom, fill, mode, channel_last):
    """Pad the H and W axes of (..., C, H, W) or (H, W, C); negative amounts crop."""
    xp = get_array_module(a)
    hax, wax = (0, 1) if channel_last else (a.ndim - 2, a.ndim - 1)
    sl = [slice(None)] * a.ndim
    sl[hax] = slice(max(-top, 0), a.shape[hax] - max(-bottom, 0))
    sl[wax] = slice(max(-left, 0), a.shape[wax] - max(-right, 0))
    a = a[tuple(sl)]
    widths = [(0, 0)] * a.ndim
    widths[hax], widths[wax] = (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))
    if mode != "constant":
        if mode == "reflect" and (max(top, bottom) >= a.shape[hax]
                                  or max(left, right) >= a.shape[wax]):
            raise ValueError(f"pad: reflect padding of {[left, top, right, bottom]} needs each "
                             f"amount smaller than the image side ({a.shape[hax]}x{a.shape[wax]})")
        return xp.pad(a, widths, mode=mode)
    if isinstance(fill, (list, tuple)):
        channels = a.shape[-1] if channel_last else a.shape[-3]
        if len(fill) != channels:
            raise ValueError(f"pad: fill {fill} has {len(fill)} values for an image of "
                             f"{channels} channels")
        out = xp.pad(a, widths)
        mask = xp.ones(out.shape[hax:wax + 1] if not channel_last else out.shape[:2], dtype=bool)
        mask[widths[hax][0]:out.shape[hax] - widths[hax][1],
             widths[wax][0]:out.shape[wax] - widths[wax][1]] = False
        for c, v in enumerate(fill):
            ch = out[..., c] if channel_last else out[..., c, :, :]
            ch[mask] = v
        return out
    return xp.pad(a, widths, constant_values=fill)


def hflip(img):
    _check_image(img, "hflip")
    if _is_pil(img):
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    return Tensor(img.data[..., ::-1].copy())


def vflip(img):
    _check_image(img, "vflip")
    if _is_pil(img):
        return img.transpose(Image.FLIP_TOP_BOTTOM)
    return Tensor(img.data[..., ::-1, :].copy())


# ---- colour -------------------------------------------------------------------------------------
def _gray(a):
    """torchvision's luma on a (..., 3, H, W) array, in the array's dtype (integers truncated)."""
    x = a if _is_float(a) else a.astype(np.float32)  # torch computes integer images in float32
    r, g, b = x[..., 0, :, :], x[..., 1, :, :], x[..., 2, :, :]
    gray = 0.2989 * r + 0.587 * g + 0.114 * b
    return gray.astype(a.dtype)[..., None, :, :]


def rgb_to_grayscale(img, num_output_channels=1):
    _check_image(img, "rgb_to_grayscale")
    if num_output_channels not in (1, 3):
        raise ValueError(f"rgb_to_grayscale: num_output_channels should be either 1 or 3, got "
                         f"{num_output_channels}")
    if _is_pil(img):
        gray = img.convert("L")
        if num_output_channels == 3:
            return Image.fromarray(np.dstack([np.asarray(gray)] * 3), "RGB")
        return gray
    a = img.data
    c = get_dimensions(img)[0]
    if c not in (1, 3):
        raise TypeError(f"rgb_to_grayscale: input image tensor should have 1 or 3 channels, "
                        f"got {c}")
    g = _gray(a) if c == 3 else (a if a.ndim > 2 else a[None]).copy()
    if num_output_channels == 3:
        xp = get_array_module(a)
        g = xp.concatenate([g] * 3, axis=-3)
    return Tensor(g)


to_grayscale = rgb_to_grayscale


def _blend(a, b, ratio):
    if not _is_float(a):  # as torch: integer images in float32
        a32 = a.astype(np.float32)
        b = b.astype(np.float32) if hasattr(b, "astype") else b
    else:
        a32 = a
    out = ratio * a32 + (1.0 - ratio) * b
    xp = get_array_module(out)
    out = xp.clip(out, 0, _max_value(a))
    return out.astype(a.dtype)


def _check_factor(factor, name):
    if factor < 0:
        raise ValueError(f"{name}: factor ({factor}) is not non-negative")


def adjust_brightness(img, brightness_factor):
    _check_image(img, "adjust_brightness")
    _check_factor(brightness_factor, "adjust_brightness")
    if _is_pil(img):
        return ImageEnhance.Brightness(img).enhance(brightness_factor)
    a = img.data
    return Tensor(_blend(a, 0, float(brightness_factor)))


def adjust_contrast(img, contrast_factor):
    _check_image(img, "adjust_contrast")
    _check_factor(contrast_factor, "adjust_contrast")
    if _is_pil(img):
        return ImageEnhance.Contrast(img).enhance(contrast_factor)
    a = img.data
    c = get_dimensions(img)[0]
    if c not in (1, 3):
        raise TypeError(f"adjust_contrast: input image tensor should have 1 or 3 channels, "
                        f"got {c}")
    dtype = a.dtype if _is_float(a) else np.float32
    gray = _gray(a).astype(dtype) if c == 3 else a.astype(dtype)
    mean = gray.mean(axis=(-3, -2, -1) if gray.ndim > 2 else (-2, -1), keepdims=True)
    return Tensor(_blend(a, mean, float(contrast_factor)))


def adjust_saturation(img, saturation_factor):
    _check_image(img, "adjust_saturation")
    _check_factor(saturation_factor, "adjust_saturation")
    if _is_pil(img):
        return ImageEnhance.Color(img).enhance(saturation_factor)
    c = get_dimensions(img)[0]
    if c == 1:
        return img
    if c != 3:
        raise TypeError(f"adjust_saturation: input image tensor should have 1 or 3 channels, "
                        f"got {c}")
    a = img.data
    return Tensor(_blend(a, _gray(a), float(saturation_factor)))


def _rgb_to_hsv(a, xp):
    r, g, b = a[..., 0, :, :], a[..., 1, :, :], a[..., 2, :, :]
    maxc, minc = xp.maximum(xp.maximum(r, g), b), xp.minimum(xp.minimum(r, g), b)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / xp.where(eqc, 1.0, maxc)
    div = xp.where(eqc, 1.0, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = xp.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _hsv_to_rgb(h, s, v, xp):
    i = xp.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(np.int64) % 6
    p = xp.clip(v * (1.0 - s), 0.0, 1.0)
    q = xp.clip(v * (1.0 - s * f), 0.0, 1.0)
    t = xp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    pick = [xp.stack(c)[..., None] for c in ((v, q, p, p, t, v), (t, v, v, q, p, p),
                                              (p, p, t, v, v, q))]
    idx = i[None, ..., None]
    return xp.stack([xp.take_along_axis(c, idx, axis=0)[0, ..., 0] for c in pick], axis=-3)


def adjust_hue(img, hue_factor):
    """Shift the hue by ``hue_factor`` (in [-0.5, 0.5]) of a full turn."""
    _check_image(img, "adjust_hue")
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"adjust_hue: hue_factor ({hue_factor}) is not in [-0.5, 0.5]")
    if _is_pil(img):
        if img.mode in ("L", "1", "I", "F"):
            return img
        h, s, v = img.convert("HSV").split()
        # hue is a byte: the shift wraps around, as torchvision's uint8 overflow does
        shifted = (np.asarray(h).astype(np.int16) + int(hue_factor * 255)) % 256
        h = Image.fromarray(shifted.astype(np.uint8), "L")
        return Image.merge("HSV", (h, s, v)).convert(img.mode)
    c = get_dimensions(img)[0]
    if c == 1:
        return img
    if c != 3:
        raise TypeError(f"adjust_hue: input image tensor should have 1 or 3 channels, got {c}")
    a = img.data
    xp = get_array_module(a)
    x = a if _is_float(a) else a.astype(np.float32) / np.float32(_max_value(a))
    h, s, v = _rgb_to_hsv(x, xp)
    out = _hsv_to_rgb(xp.fmod(h + hue_factor, 1.0) % 1.0, s, v, xp).astype(x.dtype)
    if not _is_float(a):  # torchvision's convert_image_dtype: truncated x * (max + 1 - 1e-3)
        out = (out * (_max_value(a) + 1.0 - 1e-3)).astype(a.dtype)
    return Tensor(out)


def rotate(img, angle, interpolation=InterpolationMode.NEAREST, expand=False, center=None,
           fill=None):
    """Rotate counter-clockwise by ``angle`` degrees with Pillow (tensors: channel by channel)."""
    _check_image(img, "rotate")
    interpolation = _interpolation(interpolation)
    if interpolation not in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR,
                             InterpolationMode.BICUBIC):
        raise ValueError(f"rotate: interpolation {interpolation.value} is not supported "
                         "(nearest, bilinear or bicubic)")
    resample = _PIL_FILTER[interpolation]
    if _is_pil(img):
        if isinstance(fill, (list, tuple)) and len(fill) == 1:
            fill = fill[0]
        if isinstance(fill, list):
            fill = tuple(fill)
        return img.rotate(angle, resample, expand=expand, center=center, fillcolor=fill)
    return _per_channel(img, fill, "rotate", lambda plane, f: plane.rotate(
        angle, resample, expand=expand, center=center, fillcolor=f))


def _per_channel(img, fill, name, op):
    """Run ``op(PIL float image, fill value)`` on each channel of a tensor image, as Pillow
    float ("F") images, and stack the results in the tensor's dtype and device."""
    a = img.data
    xp = get_array_module(a)
    host = np.asarray(img.numpy(), dtype=np.float32)
    lead = host.shape[:-2]
    planes = host.reshape((-1,) + host.shape[-2:])
    c = 1 if a.ndim == 2 else a.shape[-3]
    fills = [0.0] * c if fill is None else (
        [float(fill)] * c if isinstance(fill, numbers.Number) else [float(f) for f in fill])
    if len(fills) == 1:
        fills = fills * c
    if len(fills) != c:
        raise ValueError(f"{name}: fill {fill} has {len(fills)} values for an image of {c} "
                         "channels")
    out = [np.asarray(op(Image.fromarray(p, "F"), fills[k % c])) for k, p in enumerate(planes)]
    out = np.stack(out).reshape(lead + out[0].shape)
    if not _is_float(a):
        out = np.clip(np.rint(out), 0, _max_value(a))
    return Tensor(xp.asarray(out.astype(a.dtype)))


def erase(img, i, j, h, w, v, inplace=False):
    """Set the box (i, j, h, w) of a tensor image to ``v`` (a number or an array that
    broadcasts to the box)."""
    if not isinstance(img, Tensor):
        raise TypeError(f"erase: img should be Tensor Image, got {type(img).__name__}")
    _check_no_grad(img, "erase")
    a = img.data if inplace else img.data.copy()
    xp = get_array_module(a)
    value = v.data if isinstance(v, Tensor) else v
    a[..., i:i + h, j:j + w] = xp.asarray(value, dtype=a.dtype) \
        if not isinstance(value, numbers.Number) else value
    if inplace:
        return img
    return Tensor(a)


def _fromarray(a, mode):
    """Image.fromarray in ``mode``, for the modes whose dtype Pillow infers differently."""
    try:
        return Image.fromarray(a, mode)
    except (TypeError, ValueError):
        img = Image.fromarray(a)
        return img if img.mode == mode else img.convert(mode)


def _inverse_affine_matrix(center, angle, translate, scale, shear):
    """torchvision's inverse of (translate . centre . rotate-scale-shear . centre^-1), the
    matrix Pillow's Image.transform takes (output pixel -> input pixel)."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [x / scale for x in (d, -b, 0.0, -c, a, 0.0)]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


def affine(img, angle, translate, scale, shear, interpolation=InterpolationMode.NEAREST,
           fill=None, center=None):
    """Rotate by ``angle`` degrees (clockwise), ``translate`` by (dx, dy) pixels, ``scale``
    and ``shear`` (degrees, a number or (x, y)) about ``center`` (the image's by default),
    keeping the size; with Pillow (tensors: channel by channel)."""
    _check_image(img, "affine")
    interpolation = _interpolation(interpolation)
    if interpolation not in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR,
                             InterpolationMode.BICUBIC):
        raise ValueError(f"affine: interpolation {interpolation.value} is not supported")
    if not isinstance(translate, (list, tuple)) or len(translate) != 2:
        raise ValueError(f"affine: translate should be a sequence of length 2, got {translate!r}")
    if scale <= 0.0:
        raise ValueError(f"affine: scale should be positive, got {scale}")
    if isinstance(shear, numbers.Number):
        shear = [float(shear), 0.0]
    elif isinstance(shear, (list, tuple)) and len(shear) in (1, 2):
        shear = [float(shear[0]), float(shear[1]) if len(shear) == 2 else 0.0]
    else:
        raise ValueError(f"affine: shear should be a number or a sequence of 1 or 2, got "
                         f"{shear!r}")
    _, h, w = get_dimensions(img)
    if center is None:
        center = [w * 0.5, h * 0.5]
    matrix = _inverse_affine_matrix(center, float(angle), [float(t) for t in translate],
                                    float(scale), shear)
    resample = _PIL_FILTER[interpolation]
    if _is_pil(img):
        if isinstance(fill, (list, tuple)):
            fill = fill[0] if len(fill) == 1 else tuple(fill)
        return img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor=fill)
    return _per_channel(img, fill, "affine", lambda plane, f: plane.transform(
        plane.size, Image.AFFINE, matrix, resample, fillcolor=f))


def _gaussian_kernel1d(size, sigma):
    half = (size - 1) * 0.5
    pdf = np.exp(-0.5 * (np.linspace(-half, half, size) / sigma) ** 2)
    return pdf / pdf.sum()


def gaussian_blur(img, kernel_size, sigma=None):
    """Blur with a Gaussian of odd ``kernel_size`` ((kx, ky) or int) and ``sigma`` ((sx, sy),
    default 0.3 * ((k - 1) * 0.5 - 1) + 0.8), reflect-padded, as torchvision."""
    _check_image(img, "gaussian_blur")
    if isinstance(kernel_size, numbers.Integral):
        kernel_size = [int(kernel_size)] * 2
    if len(kernel_size) != 2 or any(k <= 0 or k % 2 == 0 for k in kernel_size):
        raise ValueError(f"gaussian_blur: kernel size should be odd and positive, got "
                         f"{kernel_size}")
    if sigma is None:
        sigma = [k * 0.15 + 0.35 for k in kernel_size]
    elif isinstance(sigma, numbers.Number):
        sigma = [float(sigma)] * 2
    elif len(sigma) == 1:
        sigma = [float(sigma[0])] * 2
    if any(s <= 0 for s in sigma):
        raise ValueError(f"gaussian_blur: sigma should be positive, got {sigma}")
    if _is_pil(img):
        return to_pil_image(gaussian_blur(pil_to_tensor(img), kernel_size, sigma), img.mode)
    a = img.data
    xp = get_array_module(a)
    dtype = a.dtype if _is_float(a) else np.float32
    kx = xp.asarray(_gaussian_kernel1d(kernel_size[0], sigma[0]).astype(dtype))
    ky = xp.asarray(_gaussian_kernel1d(kernel_size[1], sigma[1]).astype(dtype))
    x = a.astype(dtype)
    px, py = kernel_size[0] // 2, kernel_size[1] // 2
    widths = [(0, 0)] * (x.ndim - 2)
    x = xp.pad(x, widths + [(py, py), (px, px)], mode="reflect")
    h, w = a.shape[-2:]
    x = sum(ky[i] * x[..., i:i + h, :] for i in range(kernel_size[1]))
    x = sum(kx[i] * x[..., :, i:i + w] for i in range(kernel_size[0]))
    if not _is_float(a):
        x = xp.clip(xp.rint(x), 0, _max_value(a))
    return Tensor(x.astype(a.dtype))


def five_crop(img, size):
    """The four corner crops and the centre crop of ``size``."""
    th, tw = _setup_size(size, "five_crop")
    _, h, w = get_dimensions(img)
    if tw > w or th > h:
        raise ValueError(f"Requested crop size {(th, tw)} is bigger than input size {(h, w)}")
    return (crop(img, 0, 0, th, tw), crop(img, 0, w - tw, th, tw), crop(img, h - th, 0, th, tw),
            crop(img, h - th, w - tw, th, tw), center_crop(img, [th, tw]))


def ten_crop(img, size, vertical_flip=False):
    """five_crop of the image and of its mirror image (horizontal, or vertical)."""
    return five_crop(img, size) + five_crop(vflip(img) if vertical_flip else hflip(img), size)


def convert_image_dtype(image, dtype=np.float32):
    """A tensor image in another dtype, values rescaled: integers span 0..max, floats 0..1."""
    if not isinstance(image, Tensor):
        raise TypeError(f"convert_image_dtype: input img should be Tensor Image, got "
                        f"{type(image).__name__}")
    _check_no_grad(image, "convert_image_dtype")
    a, dtype = image.data, np.dtype(dtype)
    if a.dtype == dtype:
        return image
    if _is_float(a):
        if is_floating(dtype):
            return Tensor(a.astype(dtype))
        if (a.dtype == np.float32 and dtype in (np.int32, np.int64)) or \
                (a.dtype == np.float64 and dtype == np.int64):
            raise RuntimeError(f"convert_image_dtype: the cast from {a.dtype} to {dtype} cannot "
                               "be performed safely")
        return Tensor((a * (np.iinfo(dtype).max + 1.0 - 1e-3)).astype(dtype))
    in_max = int(np.iinfo(a.dtype).max)
    if is_floating(dtype):
        return Tensor(a.astype(dtype) / dtype.type(in_max))
    out_max = int(np.iinfo(dtype).max)
    if in_max > out_max:
        return Tensor((a // ((in_max + 1) // (out_max + 1))).astype(dtype))
    return Tensor(a.astype(dtype) * ((out_max + 1) // (in_max + 1)))


def _pil_op(img, name, op, modes=None):
    if modes is not None and img.mode not in modes:
        raise TypeError(f"{name}: Pillow supports modes {modes} here, got {img.mode!r}")
    return op(img)


def invert(img):
    _check_image(img, "invert")
    if _is_pil(img):
        return _pil_op(img, "invert", ImageOps.invert, ("L", "RGB"))
    a = img.data
    return Tensor((_max_value(a) - a).astype(a.dtype) if _is_float(a) else ~a)


def posterize(img, bits):
    """Keep the top ``bits`` bits of each channel (uint8 images)."""
    _check_image(img, "posterize")
    if not 0 <= int(bits) <= 8:
        raise ValueError(f"posterize: the number of bits should be between 0 and 8, got {bits}")
    if _is_pil(img):
        return _pil_op(img, "posterize", lambda im: ImageOps.posterize(im, int(bits)),
                       ("L", "RGB"))
    a = img.data
    if a.dtype != np.uint8:
        raise TypeError(f"posterize: only uint8 tensors are supported, got {a.dtype}")
    return Tensor(a & np.uint8((0xFF << (8 - int(bits))) & 0xFF))


def solarize(img, threshold):
    """Invert the values at or above ``threshold``."""
    _check_image(img, "solarize")
    if _is_pil(img):
        return _pil_op(img, "solarize", lambda im: ImageOps.solarize(im, threshold),
                       ("L", "RGB"))
    a = img.data
    if threshold > _max_value(a):
        raise TypeError("solarize: threshold should be less than bound of img")
    xp = get_array_module(a)
    return Tensor(xp.where(a >= threshold, invert(img).data, a))


def autocontrast(img):
    """Stretch each channel to the full range (its darkest value to 0, its brightest to max)."""
    _check_image(img, "autocontrast")
    if _is_pil(img):
        return ImageOps.autocontrast(img)
    a = img.data
    xp = get_array_module(a)
    bound = _max_value(a)
    dtype = a.dtype if _is_float(a) else np.float32
    x = a.astype(dtype)
    lo, hi = x.min(axis=(-2, -1), keepdims=True), x.max(axis=(-2, -1), keepdims=True)
    flat = hi == lo
    scale = bound / xp.where(flat, 1, hi - lo)
    lo, scale = xp.where(flat, 0, lo), xp.where(flat, 1, scale)
    return Tensor(xp.clip((x - lo) * scale, 0, bound).astype(a.dtype))


def adjust_sharpness(img, sharpness_factor):
    """Blend with a smoothed copy (factor 0: smooth, 1: the image, 2: sharper)."""
    _check_image(img, "adjust_sharpness")
    _check_factor(sharpness_factor, "adjust_sharpness")
    if _is_pil(img):
        return ImageEnhance.Sharpness(img).enhance(sharpness_factor)
    a = img.data
    if a.shape[-1] <= 2 or a.shape[-2] <= 2:
        return img
    dtype = a.dtype if _is_float(a) else np.float32
    x = a.astype(dtype)
    h, w = a.shape[-2:]
    # Pillow's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on the inside; edges kept
    inner = sum(x[..., i:i + h - 2, j:j + w - 2] for i in range(3) for j in range(3)) \
        + 4 * x[..., 1:-1, 1:-1]
    inner = inner / 13
    if not _is_float(a):
        inner = get_array_module(a).rint(inner)
    smooth = x.copy()
    smooth[..., 1:-1, 1:-1] = inner
    return Tensor(_blend(a, smooth.astype(a.dtype), float(sharpness_factor)))


def equalize(img):
    """Histogram equalisation per channel, Pillow's (tensors: uint8, through Pillow)."""
    _check_image(img, "equalize")
    if _is_pil(img):
        return ImageOps.equalize(img)
    a = img.data
    if a.dtype != np.uint8:
        raise TypeError(f"equalize: only uint8 tensors are supported, got {a.dtype}")
    host = img.numpy()
    planes = host.reshape((-1,) + host.shape[-2:])
    out = np.stack([np.asarray(ImageOps.equalize(Image.fromarray(p, "L"))) for p in planes])
    return Tensor(get_array_module(a).asarray(out.reshape(host.shape)))


def adjust_gamma(img, gamma, gain=1.0):
    """gain * x ** gamma on values in [0, 1] (uint8 images through a lookup table)."""
    _check_image(img, "adjust_gamma")
    if gamma < 0:
        raise ValueError(f"adjust_gamma: gamma should be a non-negative real number, got "
                         f"{gamma}")
    if _is_pil(img):
        mode = img.mode
        rgb = img.convert("RGB")
        table = [int((255 + 1 - 1e-3) * gain * pow(v / 255.0, gamma)) for v in range(256)]
        return rgb.point(table * 3).convert(mode)
    a = img.data
    xp = get_array_module(a)
    x = a if _is_float(a) else convert_image_dtype(img, np.float32).data
    out = xp.clip(gain * x ** gamma, 0, 1).astype(x.dtype)
    if _is_float(a):
        return Tensor(out)
    return convert_image_dtype(Tensor(out), a.dtype)
