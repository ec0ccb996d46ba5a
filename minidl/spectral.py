"""The short-time Fourier transform and its inverse, as ``torch.stft`` and ``torch.istft``.

Both are built from recorded ops, so they differentiate (twice) through their input and their
window: the padding of a centred transform and the cutting into frames are one gather
(``GetItem`` with an index array: each frame's samples, reflected or repeated at the edges as
``pad_mode`` says), the inverse's overlap-add is that gather's adjoint (``GetItemGrad``,
which adds where frames overlap), and the transforms are minidl.fft's. ``window`` is a tensor
of ``win_length`` values (None: ones, a rectangular window), padded with zeros on both sides to
``n_fft`` as torch does.
"""
from __future__ import annotations

import numpy as np

from . import autograd, fft
from .backend import get_array_module
from .ops import GetItem, GetItemGrad, UnsupportedDtypeError

_PAD_MODES = {"reflect": "reflect", "constant": "constant", "replicate": "edge",
              "circular": "wrap"}


class STFTArgumentError(ValueError, RuntimeError):
    """A bad n_fft, hop_length, win_length, window or length (PyTorch raises RuntimeError;
    minidl's argument errors are ValueErrors; this is both)."""


def _tensor(name, what, x):
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}(): argument '{what}' must be a Tensor, not {type(x).__name__}")
    return x


def _lengths(name, n_fft, hop_length, win_length):
    for what, v in (("n_fft", n_fft), ("hop_length", hop_length), ("win_length", win_length)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise TypeError(f"{name}: {what} must be an int, got {type(v).__name__}")
    hop = n_fft // 4 if hop_length is None else int(hop_length)
    win = n_fft if win_length is None else int(win_length)
    if n_fft <= 0:
        raise STFTArgumentError(f"{name}: expected 0 < n_fft, but got n_fft={n_fft}")
    if hop <= 0:
        raise STFTArgumentError(f"{name}: expected hop_length > 0, but got hop_length={hop}")
    if not 0 < win <= n_fft:
        raise STFTArgumentError(f"{name}: expected 0 < win_length <= n_fft, but got "
                                f"win_length={win}")
    return int(n_fft), hop, win


def _full_window(name, window, n_fft, win, like):
    """The window as a tensor of n_fft values (zeros around a shorter one, centred)."""
    from .creation import ones

    if window is None:
        window = ones(win, dtype=like.data.dtype if like.data.dtype.kind == "f" else None,
                      device=like.device)
    _tensor(name, "window", window)
    if window.ndim != 1 or window.shape[0] != win:
        raise STFTArgumentError(f"{name}: expected a 1D window tensor of size equal to "
                                f"win_length={win}, but got window with size {window.shape}")
    if win < n_fft:
        left = (n_fft - win) // 2
        window = GetItemGrad.apply(window, shape=(n_fft,), index=slice(left, left + win))
    return window


def _frame_index(n_frames, n_fft, hop):
    return np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]


def stft(input, n_fft, hop_length=None, win_length=None, window=None, center=True,
         pad_mode="reflect", normalized=False, onesided=None, return_complex=None):
    """The STFT of a 1-D signal or a batch of them (B, L): a complex tensor (..., n_freq,
    n_frames), n_freq = n_fft // 2 + 1 where ``onesided`` (the default for real input and
    window), n_fft otherwise; ``return_complex=False`` gives its real pairs (..., 2)."""
    _tensor("stft", "input", input)
    n_fft, hop, win = _lengths("stft", n_fft, hop_length, win_length)
    if input.ndim not in (1, 2):
        raise STFTArgumentError(f"stft: expected a 1D or 2D tensor, got shape {input.shape}")
    real_window = window is None or window.data.dtype.kind != "c"
    real_input = input.data.dtype.kind != "c"
    if return_complex is None:
        if real_input and real_window:
            raise STFTArgumentError(
                "stft requires the return_complex parameter be given for real inputs, and "
                "will further require that return_complex=True in a future PyTorch release.")
        return_complex = True
    if input.data.dtype.kind in "biu" or input.data.dtype.itemsize == 2:
        raise UnsupportedDtypeError(f"stft: expected a float or complex input, got "
                                    f"{input.data.dtype}")
    onesided = (real_input and real_window) if onesided is None else bool(onesided)
    if onesided and not (real_input and real_window):
        raise STFTArgumentError("stft: Cannot have onesided output if window or input is "
                                "complex")
    if pad_mode not in _PAD_MODES:
        raise STFTArgumentError(f"stft: pad_mode must be one of {sorted(_PAD_MODES)}, got "
                                f"{pad_mode!r}")
    length = input.shape[-1]
    source = np.arange(length)
    if center:
        half = n_fft // 2
        if pad_mode == "reflect" and half >= length:
            raise STFTArgumentError(f"stft: reflect padding of {half} needs an input longer "
                                    f"than that, got length {length}")
        if pad_mode == "constant":
            source = np.concatenate([np.full(half, -1), source, np.full(half, -1)])
        else:
            source = np.pad(source, half, mode=_PAD_MODES[pad_mode])
    if n_fft > len(source):
        raise STFTArgumentError(f"stft: expected 0 < n_fft <= {len(source)} (the padded "
                                f"length), but got n_fft={n_fft}")
    n_frames = 1 + (len(source) - n_fft) // hop
    index = source[_frame_index(n_frames, n_fft, hop)]
    x = input
    if (index < 0).any():  # constant padding: gather from the signal with a zero after it
        zero_padded = GetItemGrad.apply(x, shape=x.shape[:-1] + (length + 1,),
                                        index=(Ellipsis, slice(0, length)))
        x, index = zero_padded, np.where(index < 0, length, index)
    xp = get_array_module(input.data)
    frames = GetItem.apply(x, index=(Ellipsis, xp.asarray(index)))
    frames = frames * _full_window("stft", window, n_fft, win, input)
    norm = "ortho" if normalized else "backward"
    spec = fft.rfft(frames, dim=-1, norm=norm) if onesided else fft.fft(frames, dim=-1, norm=norm)
    spec = spec.transpose(-1, -2)
    if not return_complex:
        import warnings

        from .complex_ops import view_as_real

        warnings.warn("stft with return_complex=False is deprecated. In a future pytorch "
                      "release, stft will return complex tensors for all inputs, and "
                      "return_complex=False will raise an error.", UserWarning, stacklevel=2)
        return view_as_real(spec)
    return spec


def istft(input, n_fft, hop_length=None, win_length=None, window=None, center=True,
          normalized=False, onesided=None, length=None, return_complex=False):
    """The inverse of stft: the signal (..., length) from a complex (..., n_freq, n_frames)
    spectrogram, by overlap-add of the windowed inverse transforms divided by the overlap-added
    squared window (which must not vanish), as torch.istft."""
    _tensor("istft", "input", input)
    n_fft, hop, win = _lengths("istft", n_fft, hop_length, win_length)
    if input.data.dtype.kind != "c":
        raise UnsupportedDtypeError(f"istft requires a complex-valued input tensor, got "
                                    f"{input.data.dtype}")
    if input.ndim not in (2, 3):
        raise STFTArgumentError(f"istft: expected a 2D or 3D complex tensor (..., n_freq, "
                                f"n_frames), got shape {input.shape}")
    n_freq, n_frames = input.shape[-2], input.shape[-1]
    onesided = n_freq != n_fft if onesided is None else bool(onesided)
    want = n_fft // 2 + 1 if onesided else n_fft
    if n_freq != want:
        raise STFTArgumentError(f"istft: expected the frequency dim (-2) of size {want} for "
                                f"n_fft={n_fft} and onesided={onesided}, got {n_freq}")
    if onesided and return_complex:
        raise STFTArgumentError("istft: cannot have onesided output if return_complex=True")
    norm = "ortho" if normalized else "backward"
    spec = input.transpose(-1, -2)  # (..., n_frames, n_freq)
    if onesided:
        frames = fft.irfft(spec, n=n_fft, dim=-1, norm=norm)
    else:
        frames = fft.ifft(spec, n=n_fft, dim=-1, norm=norm)
        if not return_complex:
            frames = frames.real
    full = _full_window("istft", window, n_fft, win, frames if frames.data.dtype.kind == "f"
                        else frames.real)
    frames = frames * full
    total = n_fft + hop * (n_frames - 1)
    xp = get_array_module(input.data)
    index = xp.asarray(_frame_index(n_frames, n_fft, hop))
    y = GetItemGrad.apply(frames, shape=frames.shape[:-2] + (total,), index=(Ellipsis, index))
    square = (full * full).reshape(1, n_fft).expand(n_frames, n_fft)
    envelope = GetItemGrad.apply(square, shape=(total,), index=index)
    start = n_fft // 2 if center else 0
    end = total - n_fft // 2 if center else total
    if length is not None:
        end = start + int(length)
    keep = min(end, total)
    y = y[..., start:keep]
    envelope = envelope[start:keep]
    if bool((abs(envelope.data) < 1e-11).any()):
        raise STFTArgumentError("istft: window overlap add min: the squared window summed "
                                "over the frames vanishes somewhere (NOLA fails)")
    y = y / envelope
    if end > keep:  # a length past the frames: zeros after them, as torch
        import warnings

        warnings.warn("The length of signal is shorter than the length parameter. Result is "
                      "being padded with zeros in the tail. Please check your center and "
                      "hop_length settings.", UserWarning, stacklevel=2)
        y = GetItemGrad.apply(y, shape=y.shape[:-1] + (end - start,),
                              index=(Ellipsis, slice(0, keep - start)))
    return y


def _tensor_stft(self, n_fft, hop_length=None, win_length=None, window=None, center=True,
                 pad_mode="reflect", normalized=False, onesided=None, return_complex=None):
    return stft(self, n_fft, hop_length, win_length, window, center, pad_mode, normalized,
                onesided, return_complex)


def _tensor_istft(self, n_fft, hop_length=None, win_length=None, window=None, center=True,
                  normalized=False, onesided=None, length=None, return_complex=False):
    return istft(self, n_fft, hop_length, win_length, window, center, normalized, onesided,
                 length, return_complex)


FUNCTIONS = {"stft": stft, "istft": istft}
TENSOR_METHODS = {"stft": _tensor_stft, "istft": _tensor_istft}
