"""Complex tensors' own ops, as PyTorch's: ``real``/``imag`` (views), ``conj`` and its kin,
``angle``, ``sgn``, ``complex``, ``polar``, ``view_as_real``/``view_as_complex``.

Gradients follow PyTorch's convention: what reaches a complex tensor for a real loss L is
dL/dRe + i dL/dIm (twice the conjugate Wirtinger derivative), and what reaches a real tensor
from a complex result is the real part of that. minidl has no lazy conjugate or negative bit:
``conj`` makes a copy and ``is_conj`` is always False.
"""
from __future__ import annotations

import numpy as np

from . import autograd
from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import complex_of, real_of
from .ops import Abs, Conj, UnsupportedDtypeError, keep_where, sgn as _sgn_array


def _tensor(x, name):
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(x).__name__}")
    return x


def _as_complex(g):
    """A real gradient array as complex (imaginary part 0), for a complex input."""
    return g.astype(complex_of(g.dtype))


class Real(Function):
    """The real parts, a view of the complex array; the gradient enters as the real part."""

    complex_grad = True

    def forward(self, a):
        return a.real

    def backward(self, g):
        return _as_complex(g)

    def graph_backward(self, g, out):
        return g.to(complex_of(g.dtype))


class Imag(Function):
    """The imaginary parts, a view; the gradient g enters as i g."""

    complex_grad = True

    def forward(self, a):
        return a.imag

    def backward(self, g):
        return _as_complex(g) * 1j

    def graph_backward(self, g, out):
        return g.to(complex_of(g.dtype)) * 1j


class Angle(Function):
    """atan2(Im z, Re z); its gradient is g i z / |z|^2 (0 at z = 0), PyTorch's."""

    complex_grad = True

    def forward(self, a):
        self.save_for_backward(a)
        return get_array_module(a).angle(a).astype(real_of(a.dtype), copy=False)

    def backward(self, g):
        (a,) = self.saved
        xp = get_array_module(a)
        size2 = (a * a.conj()).real
        with np.errstate(invalid="ignore", divide="ignore"):
            out = xp.where(size2 == 0, 0, g * a * 1j / size2)
        return out.astype(a.dtype, copy=False)

    def graph_backward(self, g, out):
        a = self.inputs[0]
        size = Abs.apply(a)
        return keep_where(a.data != 0, g * a * 1j / (size * size))


class Sgn(Function):
    """z / |z| (0 at 0), torch.sgn of a complex tensor. Its gradient for a real loss is
    (g - Re(g conj(sgn z)) sgn z) / |z|, 0 at z = 0."""

    complex_grad = True

    def forward(self, a):
        self.save_for_backward(a)
        y = _sgn_array(a)
        self.y = y
        return y

    def backward(self, g):
        (a,) = self.saved
        y = self.y
        xp = get_array_module(a)
        size = abs(a)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = xp.where(size == 0, 0, (g - (g * y.conj()).real * y) / size)
        return out.astype(a.dtype, copy=False)

    def graph_backward(self, g, out):
        a = self.inputs[0]
        along = Real.apply(g * Conj.apply(out)) * out
        return keep_where(a.data != 0, (g - along) / Abs.apply(a))


class MakeComplex(Function):
    """real + i imag (torch.complex); each part takes its share of the gradient."""

    complex_grad = True

    def forward(self, re, im):
        xp = get_array_module(re, im)
        out = xp.empty(np.broadcast_shapes(re.shape, im.shape), dtype=complex_of(re.dtype))
        out.real, out.imag = re, im
        return out

    def backward(self, g):
        return g.real, g.imag

    def graph_backward(self, g, out):
        return Real.apply(g), Imag.apply(g)


class ViewAsReal(Function):
    """A complex array as real pairs (..., 2): a view where the memory allows."""

    complex_grad = True

    def forward(self, a):
        b = a.reshape(1) if a.ndim == 0 else a
        try:
            pairs = b.view(real_of(a.dtype))
        except ValueError:  # the last dim is not dense: a copy
            pairs = get_array_module(a).ascontiguousarray(b).view(real_of(a.dtype))
        return pairs.reshape(a.shape + (2,))

    def backward(self, g):
        return (g[..., 0] + 1j * g[..., 1]).astype(complex_of(g.dtype), copy=False)

    def graph_backward(self, g, out):
        return ViewAsComplex.apply(g)


class ViewAsComplex(Function):
    """Real pairs (..., 2) as complex numbers, a view of a dense array."""

    complex_grad = True

    def forward(self, a):
        xp = get_array_module(a)
        dense = xp.ascontiguousarray(a)
        return dense.view(complex_of(a.dtype)).reshape(a.shape[:-1])

    def backward(self, g):
        xp = get_array_module(g)
        return xp.stack([g.real, g.imag], axis=-1)

    def graph_backward(self, g, out):
        return ViewAsReal.apply(g)


# ---- the functions ------------------------------------------------------------------------
def is_complex(input):
    """Whether ``input``'s dtype is complex (complex64 or complex128)."""
    return _tensor(input, "is_complex").data.dtype.kind == "c"


def _view(out, src):
    return autograd.share_version(out, src)


def real(input):
    """The real parts, a view (writes go through); a real tensor is returned as it is."""
    _tensor(input, "real")
    if input.data.dtype.kind != "c":
        return input
    return _view(Real.apply(input), input)


def imag(input):
    """The imaginary parts, a view (writes go through); refused for a real tensor, as torch."""
    _tensor(input, "imag")
    if input.data.dtype.kind != "c":
        raise UnsupportedDtypeError(f"imag is not implemented for tensors with non-complex "
                                    f"dtypes (got {input.data.dtype})")
    return _view(Imag.apply(input), input)


def conj(input):
    """The complex conjugate (a copy); a real tensor is returned as it is."""
    _tensor(input, "conj")
    return Conj.apply(input) if input.data.dtype.kind == "c" else input


def conj_physical(input):
    """The complex conjugate, computed (as conj here); a copy of a real tensor."""
    _tensor(input, "conj_physical")
    return Conj.apply(input) if input.data.dtype.kind == "c" else input.clone()


def resolve_conj(input):
    """``input``: minidl's conjugates are always computed, never a pending bit."""
    return _tensor(input, "resolve_conj")


def resolve_neg(input):
    """``input``: minidl has no pending negation bit."""
    return _tensor(input, "resolve_neg")


def is_conj(input):
    """False: a conjugate in minidl is a computed copy (see conj)."""
    _tensor(input, "is_conj")
    return False


def is_neg(input):
    """False: minidl has no pending negation bit."""
    _tensor(input, "is_neg")
    return False


def complex_angle(input):
    """The angle (argument) of each complex element, in the real dtype of its parts."""
    return Angle.apply(input)


def complex_sgn(input):
    """z / |z|, 0 where z is 0."""
    return Sgn.apply(input)


def complex(real, imag):  # noqa: A001  (torch.complex)
    """``real + i imag`` from two real tensors of one dtype (float32 gives complex64, float64
    complex128), broadcast together, as torch.complex."""
    for what, t in (("real", real), ("imag", imag)):
        if not isinstance(t, autograd.Tensor):
            raise TypeError(f"complex(): argument '{what}' must be a Tensor, not "
                            f"{type(t).__name__}")
    dr, di = real.data.dtype, imag.data.dtype
    if dr not in (np.float32, np.float64) or di not in (np.float32, np.float64):
        raise UnsupportedDtypeError(f"complex: expected both inputs to be float32 or float64 "
                                    f"tensors, got {dr} and {di}")
    if dr != di:
        raise UnsupportedDtypeError(f"complex: expected object of scalar type {dr} but got "
                                    f"scalar type {di} for second argument")
    return MakeComplex.apply(real, imag)


def polar(abs, angle):  # noqa: A002  (torch.polar's argument names)
    """``abs * (cos(angle) + i sin(angle))`` from real tensors of one dtype, as torch.polar."""
    for what, t in (("abs", abs), ("angle", angle)):
        if not isinstance(t, autograd.Tensor):
            raise TypeError(f"polar(): argument '{what}' must be a Tensor, not "
                            f"{type(t).__name__}")
    if abs.data.dtype != angle.data.dtype or abs.data.dtype not in (np.float32, np.float64):
        raise UnsupportedDtypeError(f"polar: expected abs and angle of one dtype, float32 or "
                                    f"float64, got {abs.data.dtype} and {angle.data.dtype}")
    return complex(abs * angle.cos(), abs * angle.sin())


def view_as_real(input):
    """A complex tensor as real pairs along a new last dim of size 2 (a view where the memory
    is dense), as torch.view_as_real."""
    _tensor(input, "view_as_real")
    if input.data.dtype.kind != "c":
        raise UnsupportedDtypeError(f"view_as_real is only supported for complex tensors, got "
                                    f"{input.data.dtype}")
    return _view(ViewAsReal.apply(input), input)


def view_as_complex(input):
    """Real pairs along a last dim of size 2 as complex numbers, as torch.view_as_complex."""
    _tensor(input, "view_as_complex")
    if input.data.dtype not in (np.float32, np.float64):
        raise UnsupportedDtypeError(f"view_as_complex is only supported for float32 and float64 "
                                    f"tensors, but got a tensor of scalar type: "
                                    f"{input.data.dtype}")
    if input.ndim == 0 or input.shape[-1] != 2:
        raise ValueError(f"view_as_complex: Tensor must have a last dimension of size 2, got "
                         f"shape {input.shape}")
    out = ViewAsComplex.apply(input)
    return _view(out, input) if input.data.flags.c_contiguous else out


FUNCTIONS = {
    "is_complex": is_complex, "real": real, "imag": imag, "conj": conj,
    "conj_physical": conj_physical, "resolve_conj": resolve_conj, "resolve_neg": resolve_neg,
    "is_conj": is_conj, "is_neg": is_neg, "complex": complex, "polar": polar,
    "view_as_real": view_as_real, "view_as_complex": view_as_complex,
}
