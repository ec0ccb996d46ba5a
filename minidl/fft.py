"""Discrete Fourier transforms, as ``torch.fft``: fft, ifft, rfft, irfft, hfft, ihfft and their
2-D and n-D forms, fftshift/ifftshift, fftfreq/rfftfreq, with ``n``/``s``, ``dim`` and ``norm``
("backward", "ortho", "forward") as PyTorch takes them.

The transforms run on the array module of the input (``numpy.fft`` on the host, ``cupy.fft`` on
the GPU); the result has PyTorch's dtype (rfft of float32 is complex64, irfft of complex64
float32), whatever precision the module computed in. Integer and bool inputs are transformed in
the default float dtype.

Gradients follow PyTorch's convention for complex tensors (see complex_ops.py): the gradient of
a transform is its adjoint, the opposite transform with the opposite normalisation ("backward"
and "forward" swap, "ortho" stays) on the zero-padded or trimmed shape; a real input's gradient
is the real part. rfft's gradient pads the half spectrum with zeros before the inverse
transform; irfft's is an rfft of the incoming gradient with the entries that stand for two
conjugate-symmetric ones doubled (PyTorch's treatment of the Hermitian half). The transforms
are differentiable again (their gradients are transforms too).
"""
from __future__ import annotations

import numpy as np

from . import autograd
from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import complex_of, default_float, real_of
from .ops import Cast, Conj, GetItem, GetItemGrad, UnsupportedDtypeError, constant, wrap_dim

_NORMS = ("backward", "ortho", "forward")
_SWAP = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


class FFTDimError(IndexError):
    """A dim given for a 0-d tensor (PyTorch's IndexError)."""


class FFTArgumentError(ValueError, RuntimeError):
    """A bad ``n``, ``s``, ``dim`` or ``norm`` (PyTorch raises RuntimeError; minidl's argument
    errors are ValueErrors; this is both)."""


def _norm(name, norm):
    if norm is None:
        return "backward"
    if norm not in _NORMS:
        raise FFTArgumentError(f"{name}: Invalid normalization mode: {norm!r} (expected "
                               "'backward', 'ortho' or 'forward')")
    return norm


def _resize(a, axes, sizes):
    """``a`` trimmed or zero-padded (at the end) to ``sizes`` along ``axes``, as the transforms
    see their input."""
    xp = get_array_module(a)
    for ax, n in zip(axes, sizes):
        have = a.shape[ax]
        if have > n:
            a = a[(slice(None),) * ax + (slice(0, n),)]
        elif have < n:
            pad = [(0, 0)] * a.ndim
            pad[ax] = (0, n - have)
            a = xp.pad(a, pad)
    return a


def _resize_graph(t, axes, sizes):
    """_resize as recorded ops (a trim is GetItem, a zero-pad GetItemGrad), for
    graph_backward."""
    for ax, n in zip(axes, sizes):
        have = t.shape[ax]
        if have > n:
            t = GetItem.apply(t, index=(slice(None),) * ax + (slice(0, n),))
        elif have < n:
            shape = t.shape[:ax] + (n,) + t.shape[ax + 1:]
            t = GetItemGrad.apply(t, shape=shape, index=(slice(None),) * ax + (slice(0, have),))
    return t


def _fft_module(a):
    return get_array_module(a).fft


class _C2C(Function):
    """The complex transform over ``axes`` (forward: e^-i, else the inverse), the input sized
    to ``sizes`` first."""

    complex_grad = True

    def forward(self, a, axes, sizes, norm, inverse):
        self.axes, self.sizes, self.norm, self.inverse = axes, sizes, norm, inverse
        self.shape = a.shape
        fn = _fft_module(a).ifftn if inverse else _fft_module(a).fftn
        y = fn(a, s=sizes, axes=axes, norm=norm)
        return y.astype(a.dtype, copy=False)

    def backward(self, g):
        fn = _fft_module(g).fftn if self.inverse else _fft_module(g).ifftn
        gx = fn(g, axes=self.axes, norm=_SWAP[self.norm]).astype(g.dtype, copy=False)
        return _resize(gx, self.axes, [self.shape[ax] for ax in self.axes])

    def graph_backward(self, g, out):
        gx = _C2C.apply(g, axes=self.axes, sizes=tuple(g.shape[ax] for ax in self.axes),
                        norm=_SWAP[self.norm], inverse=not self.inverse)
        return _resize_graph(gx, self.axes, [self.shape[ax] for ax in self.axes])


class _R2C(Function):
    """The transform of a real input over ``axes``, only the first half (n // 2 + 1) of the
    last axis kept."""

    complex_grad = True

    def forward(self, a, axes, sizes, norm):
        self.axes, self.sizes, self.norm, self.shape = axes, sizes, norm, a.shape
        y = _fft_module(a).rfftn(a, s=sizes, axes=axes, norm=norm)
        return y.astype(complex_of(a.dtype), copy=False)

    def backward(self, g):
        xp = get_array_module(g)
        last = self.axes[-1]
        full = list(g.shape)
        full[last] = self.sizes[-1]
        padded = xp.zeros(full, dtype=g.dtype)
        padded[(slice(None),) * last + (slice(0, g.shape[last]),)] = g
        gx = _fft_module(g).ifftn(padded, axes=self.axes, norm=_SWAP[self.norm]).real
        gx = gx.astype(real_of(g.dtype), copy=False)
        return _resize(gx, self.axes, [self.shape[ax] for ax in self.axes])

    def graph_backward(self, g, out):
        from .complex_ops import Real

        padded = _resize_graph(g, self.axes[-1:], self.sizes[-1:])
        gx = _C2C.apply(padded, axes=self.axes, sizes=tuple(padded.shape[ax] for ax in self.axes),
                        norm=_SWAP[self.norm], inverse=True)
        return _resize_graph(Real.apply(gx), self.axes, [self.shape[ax] for ax in self.axes])


class _C2R(Function):
    """The inverse of _R2C: a Hermitian half spectrum to a real signal of ``sizes`` (the last
    axis of the input sized to sizes[-1] // 2 + 1 first)."""

    complex_grad = True

    def forward(self, a, axes, sizes, norm):
        self.axes, self.sizes, self.norm, self.shape = axes, sizes, norm, a.shape
        # trimmed and zero-padded here: NumPy's irfftn reads past an empty input's end (garbage
        # where torch gives zeros)
        a = _resize(a, axes, list(sizes[:-1]) + [sizes[-1] // 2 + 1])
        y = _fft_module(a).irfftn(a, s=sizes, axes=axes, norm=norm)
        return y.astype(real_of(a.dtype), copy=False)

    def backward(self, g):
        gx = _fft_module(g).rfftn(g, axes=self.axes, norm=_SWAP[self.norm])
        gx = gx.astype(complex_of(g.dtype), copy=False)
        last, n = self.axes[-1], self.sizes[-1]
        half = n // 2 + 1
        twice = n - half  # entries 1 .. n - half stand for themselves and their conjugates
        if twice > 0:
            gx[(slice(None),) * last + (slice(1, 1 + twice),)] *= 2
        sizes = [self.shape[ax] for ax in self.axes]
        return _resize(gx, self.axes, sizes)

    def graph_backward(self, g, out):
        gx = _R2C.apply(g, axes=self.axes, sizes=tuple(g.shape[ax] for ax in self.axes),
                        norm=_SWAP[self.norm])
        last, n = self.axes[-1], self.sizes[-1]
        half = n // 2 + 1
        weight = np.ones(half, dtype=real_of(g.data.dtype))
        weight[1:1 + n - half] = 2
        weight = weight.reshape((half,) + (1,) * (g.ndim - 1 - last))
        weight = get_array_module(g.data).asarray(weight)
        gx = gx * constant(weight.astype(gx.data.dtype))
        return _resize_graph(gx, self.axes, [self.shape[ax] for ax in self.axes])


# ---- argument handling, as torch.fft's ---------------------------------------------------
def _input(name, x, want):
    """``x`` as the transform takes it: ``want`` "complex" (c2c: a real input becomes complex,
    its gradient the real part), "real" (r2c: complex refused) or "any" (c2r)."""
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(x).__name__}")
    dtype = x.data.dtype
    if dtype.kind in "biu":
        x = Cast.apply(x, dtype=default_float())
        dtype = x.data.dtype
    elif dtype.itemsize == 2 or dtype.kind not in "fc":
        raise UnsupportedDtypeError(f"{name}: Unsupported dtype {dtype} (float32, float64, "
                                    "complex64 and complex128 are)")
    if want == "real" and dtype.kind == "c":
        raise UnsupportedDtypeError(f"{name} expects a real input tensor, but got {dtype}")
    if want != "real" and dtype.kind != "c":
        x = Cast.apply(x, dtype=complex_of(dtype))
    return x


def _axes_and_sizes(name, x, s, dim, allow_none=False, one_d=False):
    """(axes, sizes or None) from torch's ``s`` and ``dim``: dim None with s given means the
    last len(s) dims; both None all dims (or, for the 2-D forms, the caller's default)."""
    ndim = x.ndim
    if s is not None and not (isinstance(s, (tuple, list)) and all(_is_int(n) for n in s)):
        raise TypeError(f"{name}(): argument 's' must be tuple of ints, not "
                        f"{type(s).__name__} {s!r}")
    if dim is not None and not (_is_int(dim) or isinstance(dim, (tuple, list))):
        raise TypeError(f"{name}(): argument 'dim' must be int or tuple of ints, not "
                        f"{type(dim).__name__}")
    if dim is None:
        if s is None:
            axes = list(range(ndim))
        else:
            axes = list(range(ndim - len(s), ndim))
            if len(s) > ndim:
                raise FFTArgumentError(f"{name}: Got shape with {len(s)} values but input "
                                       f"tensor only has {ndim} dimensions.")
    else:
        dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
        if ndim == 0 and dims:  # wrap_dim lets a 0-d tensor take dim 0 or -1; a transform not
            raise FFTDimError(f"{name}: Dimension specified as {dims[0]} but tensor has no "
                              "dimensions")
        axes = [wrap_dim(d, ndim, name) for d in dims]
        if len(set(axes)) != len(axes):
            raise FFTArgumentError(f"{name}: dims must be unique, got {tuple(dims)}")
        if s is not None and len(s) != len(axes):
            raise FFTArgumentError(f"{name}: When given, dim and shape arguments must have the "
                                   f"same length, got s={tuple(s)} and dim={tuple(dims)}")
    if not axes and not allow_none:
        raise FFTArgumentError(f"{name} must transform at least one axis")
    sizes = None
    if s is not None:
        sizes = [int(n) for n in s]
        for n in sizes:  # a 1-D transform's n cannot be -1 (an n-D transform's s can)
            if n < -1 or n == 0 or (one_d and n == -1):
                raise FFTArgumentError(f"{name}: Invalid number of data points ({n}) specified")
    return axes, sizes


def _c2c(name, x, s, dim, norm, inverse, one_d=False):
    # torch's order: the input's dtype, then dims and sizes, then norm
    x = _input(name, x, "complex")
    axes, sizes = _axes_and_sizes(name, x, s, dim, allow_none=True, one_d=one_d)
    norm = _norm(name, norm)
    if not axes:  # no dims (dim=(), s=(), a 0-d fftn): the input as complex, as torch's
        return x.clone()
    sizes = [x.shape[ax] if sizes is None or sizes[i] == -1 else sizes[i]
             for i, ax in enumerate(axes)]
    for ax, n in zip(axes, sizes):
        if n < 1:
            raise FFTArgumentError(f"{name}: Invalid number of data points ({n}) specified")
    return _C2C.apply(x, axes=tuple(axes), sizes=tuple(sizes), norm=norm, inverse=inverse)


def _r2c(name, x, s, dim, norm, one_d=False):
    x = _input(name, x, "real")
    axes, sizes = _axes_and_sizes(name, x, s, dim, one_d=one_d)
    norm = _norm(name, norm)
    sizes = [x.shape[ax] if sizes is None or sizes[i] == -1 else sizes[i]
             for i, ax in enumerate(axes)]
    for n in sizes:
        if n < 1:
            raise FFTArgumentError(f"{name}: Invalid number of data points ({n}) specified")
    return _R2C.apply(x, axes=tuple(axes), sizes=tuple(sizes), norm=norm)


def _c2r(name, x, s, dim, norm, one_d=False):
    x = _input(name, x, "any")
    axes, sizes = _axes_and_sizes(name, x, s, dim, one_d=one_d)
    norm = _norm(name, norm)
    full = []
    for i, ax in enumerate(axes):
        given = None if sizes is None or sizes[i] == -1 else sizes[i]
        if i == len(axes) - 1:
            n = 2 * (x.shape[ax] - 1) if given is None else given
        else:
            n = x.shape[ax] if given is None else given
        if n < 1:
            raise FFTArgumentError(f"{name}: Invalid number of data points ({n}) specified")
        full.append(n)
    return _C2R.apply(x, axes=tuple(axes), sizes=tuple(full), norm=norm)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _one(name, n, dim):
    """(s, dim) of a 1-D transform; its n, unlike an n-D transform's s, cannot be -1."""
    if n is not None and not _is_int(n):  # not truncated (3.7) nor read as 1 (True)
        raise TypeError(f"{name}(): argument 'n' must be int, not {type(n).__name__}")
    return (None if n is None else (n,)), (dim,)  # n < 1 refused after the dim is checked


# ---- the transforms -------------------------------------------------------------------------
def fft(input, n=None, dim=-1, norm=None):
    """The 1-D discrete Fourier transform along ``dim`` (the input trimmed or zero-padded to
    ``n``)."""
    s, d = _one("fft", n, dim)
    return _c2c("fft", input, s, d, norm, inverse=False, one_d=True)


def ifft(input, n=None, dim=-1, norm=None):
    """The inverse of fft."""
    s, d = _one("ifft", n, dim)
    return _c2c("ifft", input, s, d, norm, inverse=True, one_d=True)


def fft2(input, s=None, dim=(-2, -1), norm=None):
    return _c2c("fft2", input, s, dim, norm, inverse=False)


def ifft2(input, s=None, dim=(-2, -1), norm=None):
    return _c2c("ifft2", input, s, dim, norm, inverse=True)


def fftn(input, s=None, dim=None, norm=None):
    return _c2c("fftn", input, s, dim, norm, inverse=False)


def ifftn(input, s=None, dim=None, norm=None):
    return _c2c("ifftn", input, s, dim, norm, inverse=True)


def rfft(input, n=None, dim=-1, norm=None):
    """The fft of a real input: the n // 2 + 1 non-negative frequencies."""
    s, d = _one("rfft", n, dim)
    return _r2c("rfft", input, s, d, norm, one_d=True)


def irfft(input, n=None, dim=-1, norm=None):
    """The inverse of rfft: a real signal of ``n`` (default 2 * (m - 1)) from a half
    spectrum of m entries."""
    s, d = _one("irfft", n, dim)
    return _c2r("irfft", input, s, d, norm, one_d=True)


def rfft2(input, s=None, dim=(-2, -1), norm=None):
    return _r2c("rfft2", input, s, dim, norm)


def irfft2(input, s=None, dim=(-2, -1), norm=None):
    return _c2r("irfft2", input, s, dim, norm)


def rfftn(input, s=None, dim=None, norm=None):
    return _r2c("rfftn", input, s, dim, norm)


def irfftn(input, s=None, dim=None, norm=None):
    return _c2r("irfftn", input, s, dim, norm)


def hfft(input, n=None, dim=-1, norm=None):
    """The fft of a Hermitian-symmetric signal given by its first half: a real spectrum of
    ``n`` (default 2 * (m - 1)) entries; the inverse of ihfft."""
    s, d = _one("hfft", n, dim)
    return hfftn(input, s, d, norm, _name="hfft", _one_d=True)


def ihfft(input, n=None, dim=-1, norm=None):
    """The inverse of hfft: the first n // 2 + 1 entries of ifft of a real signal."""
    s, d = _one("ihfft", n, dim)
    return ihfftn(input, s, d, norm, _name="ihfft", _one_d=True)


def hfft2(input, s=None, dim=(-2, -1), norm=None):
    return hfftn(input, s, dim, norm, _name="hfft2")


def ihfft2(input, s=None, dim=(-2, -1), norm=None):
    return ihfftn(input, s, dim, norm, _name="ihfft2")


def hfftn(input, s=None, dim=None, norm=None, *, _name="hfftn", _one_d=False):
    """The n-D hfft: irfftn of the conjugate with the opposite normalisation."""
    x = _input(_name, input, "any")
    _axes_and_sizes(_name, x, s, dim, one_d=_one_d)  # dims and sizes checked before norm
    norm = _norm(_name, norm)
    return _c2r(_name, Conj.apply(x), s, dim, _SWAP[norm], one_d=_one_d)


def ihfftn(input, s=None, dim=None, norm=None, *, _name="ihfftn", _one_d=False):
    """The n-D ihfft: the conjugate of rfftn with the opposite normalisation."""
    x = _input(_name, input, "real")
    _axes_and_sizes(_name, x, s, dim, one_d=_one_d)  # dims and sizes checked before norm
    norm = _norm(_name, norm)
    return Conj.apply(_r2c(_name, x, s, dim, _SWAP[norm], one_d=_one_d))


# ---- helpers ----------------------------------------------------------------------------------
def _shift(name, input, dim, sign):
    from .shape_ops import roll

    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"{name}(): argument 'input' must be a Tensor, not "
                        f"{type(input).__name__}")
    if dim is None:
        axes = list(range(input.ndim))
    else:
        dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
        axes = [wrap_dim(d, input.ndim, name) for d in dims]
    if not axes:
        return input.clone()
    shifts = tuple(sign * (input.shape[ax] // 2) for ax in axes)
    return roll(input, shifts, tuple(axes))


def fftshift(input, dim=None):
    """The zero frequency moved to the middle of each dim in ``dim`` (all by default)."""
    return _shift("fftshift", input, dim, 1)


def ifftshift(input, dim=None):
    """The inverse of fftshift."""
    return _shift("ifftshift", input, dim, -1)


def _freq_tensor(name, values, dtype, device, requires_grad):
    from .tensor import Tensor
    from .backend.dtypes import as_dtype

    dtype = default_float() if dtype is None else as_dtype(dtype)
    if dtype.kind not in "fc":
        raise FFTArgumentError(f"{name} requires a floating point or complex dtype, got {dtype}")
    return Tensor(values.astype(dtype), requires_grad=requires_grad,
                  device="cpu" if device is None else device)


def _freq_args(name, n, d):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise FFTArgumentError(f"{name}: n must be a non-negative int, got {n!r}")
    return int(n), float(d)


def fftfreq(n, d=1.0, *, dtype=None, device=None, requires_grad=False, layout=None):
    """The sample frequencies of an fft of length n with spacing d: [0, 1, ..., -1] / (d n)."""
    n, d = _freq_args("fftfreq", n, d)
    k = np.concatenate([np.arange((n + 1) // 2), np.arange(-(n // 2), 0)])
    with np.errstate(all="ignore"):  # d = 0: [nan, inf, ..., -inf], as torch's
        values = k * (np.float64(1.0) / np.float64(n * d)) if n else np.zeros(0)
    return _freq_tensor("fftfreq", values, dtype, device, requires_grad)


def rfftfreq(n, d=1.0, *, dtype=None, device=None, requires_grad=False, layout=None):
    """The sample frequencies of an rfft of length n: [0, 1, ..., n // 2] / (d n)."""
    n, d = _freq_args("rfftfreq", n, d)
    with np.errstate(all="ignore"):  # n = 0 or d = 0: [nan, inf, ...], as torch's
        values = np.arange(n // 2 + 1) * (np.float64(1.0) / np.float64(n * d))
    return _freq_tensor("rfftfreq", values, dtype, device, requires_grad)


__all__ = ["fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2",
           "rfftn", "irfftn", "hfft", "ihfft", "hfft2", "ihfft2", "hfftn", "ihfftn", "fftshift",
           "ifftshift", "fftfreq", "rfftfreq"]
