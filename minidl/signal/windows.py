"""Window functions: torch.signal.windows (bartlett, blackman, cosine, exponential, gaussian,
general_cosine, general_hamming, hamming, hann, kaiser, nuttall; ``sym=False`` gives the
periodic window) and the top-level torch.hann_window, hamming_window, blackman_window,
bartlett_window, kaiser_window (``periodic=True`` by default). Computed in float64, then
cast to the dtype asked for (the default float dtype)."""
from __future__ import annotations

import math

import numpy as np

from ..backend.dtypes import as_dtype, default_float, is_floating, is_low_precision
from ..tensor import Tensor

__all__ = ["bartlett", "blackman", "cosine", "exponential", "gaussian", "general_cosine",
           "general_hamming", "hamming", "hann", "kaiser", "nuttall"]


def _dtype(name, dtype, allowed=(np.float32, np.float64)):
    dt = default_float() if dtype is None else as_dtype(dtype)
    if dt not in [np.dtype(a) for a in allowed]:
        raise ValueError(f"{name} expects float32 or float64 dtypes, got: {dt}")
    return dt


def _check_length(name, M):
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)):
        raise TypeError(f"{name}: the window length must be an int, got {M!r}")
    if M < 0:
        raise ValueError(f"{name} requires non-negative window length, got M={M}")


def _out(values, dt, device, requires_grad):
    return Tensor(np.asarray(values, dtype=np.float64).astype(dt), requires_grad=requires_grad,
                  device=device)


def _cosine_sum(M, a, sym):
    """sum_i (-1)^i a_i cos(2 pi i n / N), N = M - 1 (sym) or M."""
    if M == 1:
        return np.ones(1)
    k = np.arange(M) * (2 * math.pi / (M - 1 if sym else M))
    return sum((-1) ** i * w * np.cos(i * k) for i, w in enumerate(a))


def general_cosine(M, *, a, sym=True, dtype=None, layout=None, device=None,
                   requires_grad=False):
    dt = _dtype("general_cosine", dtype)
    _check_length("general_cosine", M)
    if M == 0:
        return _out(np.empty(0), dt, device, requires_grad)
    if not isinstance(a, (list, tuple, np.ndarray)):
        raise TypeError("Coefficients must be a list/tuple")
    if len(a) == 0:
        raise ValueError("Coefficients cannot be empty")
    return _out(_cosine_sum(M, a, sym), dt, device, requires_grad)


def general_hamming(M, *, alpha=0.54, sym=True, dtype=None, layout=None, device=None,
                    requires_grad=False):
    return general_cosine(M, a=[alpha, 1.0 - alpha], sym=sym, dtype=dtype, device=device,
                          requires_grad=requires_grad)


def hamming(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_hamming(M, sym=sym, dtype=dtype, device=device, requires_grad=requires_grad)


def hann(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_hamming(M, alpha=0.5, sym=sym, dtype=dtype, device=device,
                           requires_grad=requires_grad)


def blackman(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_cosine(M, a=[0.42, 0.5, 0.08], sym=sym, dtype=dtype, device=device,
                          requires_grad=requires_grad)


def nuttall(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_cosine(M, a=[0.3635819, 0.4891775, 0.1365995, 0.0106411], sym=sym,
                          dtype=dtype, device=device, requires_grad=requires_grad)


def bartlett(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dt = _dtype("bartlett", dtype)
    _check_length("bartlett", M)
    if M <= 1:
        return _out(np.ones(M), dt, device, requires_grad)
    k = -1 + np.arange(M) * (2 / (M - 1 if sym else M))
    return _out(1 - np.abs(k), dt, device, requires_grad)


def cosine(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    dt = _dtype("cosine", dtype)
    _check_length("cosine", M)
    step = math.pi / (M + 1 if not sym and M > 1 else M) if M else 0.0
    return _out(np.sin((0.5 + np.arange(M)) * step), dt, device, requires_grad)


def exponential(M, *, center=None, tau=1.0, sym=True, dtype=None, layout=None, device=None,
                requires_grad=False):
    dt = _dtype("exponential", dtype)
    _check_length("exponential", M)
    if tau <= 0:
        raise ValueError(f"Tau must be positive, got: {tau} instead.")
    if sym and center is not None:
        raise ValueError("Center must be None for symmetric windows")
    if center is None:
        center = (M if not sym and M > 1 else M - 1) / 2.0
    return _out(np.exp(-np.abs(np.arange(M) - center) / tau), dt, device, requires_grad)


def gaussian(M, *, std=1.0, sym=True, dtype=None, layout=None, device=None,
             requires_grad=False):
    dt = _dtype("gaussian", dtype)
    _check_length("gaussian", M)
    if std <= 0:
        raise ValueError(f"Standard deviation must be positive, got: {std} instead.")
    start = -(M if not sym and M > 1 else M - 1) / 2.0
    k = (start + np.arange(M)) / (std * math.sqrt(2))
    return _out(np.exp(-k ** 2), dt, device, requires_grad)


def kaiser(M, *, beta=12.0, sym=True, dtype=None, layout=None, device=None,
           requires_grad=False):
    dt = _dtype("kaiser", dtype)
    _check_length("kaiser", M)
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got: {beta} instead.")
    if M <= 1:
        return _out(np.ones(M), dt, device, requires_grad)
    k = np.minimum(beta, -beta + np.arange(M) * (2.0 * beta / (M - 1 if sym else M)))
    return _out(np.i0(np.sqrt(np.maximum(beta * beta - k * k, 0.0))) / np.i0(beta), dt, device,
                requires_grad)


# ---- the top-level forms: torch.hann_window(N, periodic=True) ---------------------------------
def _top(name, M, periodic, dtype, fn, **kw):
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)):
        raise TypeError(f"{name}(): argument 'window_length' must be int, not "
                        f"{type(M).__name__}")
    if M < 0:
        raise RuntimeError(f"{name} requires non-negative window_length, got "
                           f"window_length={M}")
    dt = default_float() if dtype is None else as_dtype(dtype)
    if not is_floating(dt):
        raise RuntimeError(f"{name} expects floating point dtypes, got: {dt}")
    if is_low_precision(dt):  # float16, bfloat16: the float64 window, rounded once
        wide = fn(M, sym=not periodic, dtype=np.float64, **{**kw, "requires_grad": False})
        return Tensor(wide.data.astype(dt), requires_grad=kw.get("requires_grad", False))
    return fn(M, sym=not periodic, dtype=dt, **kw)


def hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                pin_memory=False, requires_grad=False):
    return _top("hann_window", window_length, periodic, dtype, hann, device=device,
                requires_grad=requires_grad)


def hamming_window(window_length, periodic=True, alpha=0.54, beta=0.46, *, dtype=None,
                   layout=None, device=None, pin_memory=False, requires_grad=False):
    """alpha - beta * cos(2 pi n / N)."""
    def fn(M, sym, dtype, device, requires_grad):
        dt = _dtype("hamming_window", dtype, (np.float16, np.float32, np.float64))
        if M == 0:
            return _out(np.empty(0), dt, device, requires_grad)
        if M == 1:
            return _out(np.ones(1), dt, device, requires_grad)
        k = np.arange(M) * (2 * math.pi / (M - 1 if sym else M))
        return _out(alpha - beta * np.cos(k), dt, device, requires_grad)
    return _top("hamming_window", window_length, periodic, dtype, fn, device=device,
                requires_grad=requires_grad)


def blackman_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                    pin_memory=False, requires_grad=False):
    return _top("blackman_window", window_length, periodic, dtype, blackman, device=device,
                requires_grad=requires_grad)


def bartlett_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                    pin_memory=False, requires_grad=False):
    return _top("bartlett_window", window_length, periodic, dtype, bartlett, device=device,
                requires_grad=requires_grad)


def kaiser_window(window_length, periodic=True, beta=12.0, *, dtype=None, layout=None,
                  device=None, pin_memory=False, requires_grad=False):
    return _top("kaiser_window", window_length, periodic, dtype, kaiser, beta=beta,
                device=device, requires_grad=requires_grad)


TOP_LEVEL = {"hann_window": hann_window, "hamming_window": hamming_window,
             "blackman_window": blackman_window, "bartlett_window": bartlett_window,
             "kaiser_window": kaiser_window}
