"""Elementwise ops under PyTorch's names that math_ops.py does not have: the inverse
hyperbolic functions, angle conversions, copysign/signbit/heaviside, fmax/fmin (NaN-ignoring),
float_power, ldexp/frexp, gcd/lcm, nextafter, the isposinf family, and PyTorch's aliases
(multiply, subtract, true_divide, positive, absolute, fix, sgn).

One Function per differentiable op, on the array module of its inputs; the gradients at the
edges are PyTorch's (copysign's is 0 where the input is 0, fmax's goes to the input on a tie,
nextafter's passes where the two differ). Tensor's methods are installed by tensor.py from
``TENSOR_METHODS``; this module imports only ``backend``, ``autograd``, ``ops`` and
``math_ops``.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from . import autograd
from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import default_float, is_floating
from .math_ops import _float_op, _unary, div, sign, trunc
from .ops import (
    Cast, Fill, UnsupportedDtypeError, _array_module, _broadcast_shapes, _is_number, _operand,
    constant, keep_where, refuse_bool_sub, refuse_complex, refuse_unsigned, result_type,
)


class DtypeError(TypeError, NotImplementedError):
    """An op given a dtype it has no kernel for: a TypeError as minidl's other argument errors,
    and the NotImplementedError (a RuntimeError) PyTorch raises."""


class OpArgumentError(ValueError, RuntimeError):
    """An argument out of its range: a ValueError as minidl's, the RuntimeError PyTorch raises."""


def _check_tensor(name, what, x):
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}(): argument '{what}' must be a Tensor, got {type(x).__name__}")


def _pair(name, input, other, *, floating=False, numbers=True):
    """Two tensors (numbers as 0-d ones) at PyTorch's result type; ``floating``: integer and
    bool results computed in float32, as PyTorch's float-only binary ops."""
    _check_tensor(name, "input", input)
    if not (isinstance(other, autograd.Tensor) or (numbers and _is_number(other))):
        raise TypeError(f"{name}(): argument 'other' must be a Tensor, got "
                        f"{type(other).__name__}")
    dtype = result_type(input, other)
    if dtype.kind == "c":
        refuse_complex(name, np.empty(0, dtype))
    if floating and not is_floating(dtype):
        dtype = default_float()
    xp = _array_module(input, other)
    a, b = _operand(input, dtype, xp), _operand(other, dtype, xp)
    _broadcast_shapes(name, input=a.shape, other=b.shape)
    return a, b


# ---- inverse hyperbolic functions, angle conversions -----------------------------------------
Asinh = _unary("Asinh", lambda xp, a: xp.arcsinh(a), lambda xp, a: 1 / xp.sqrt(a * a + 1),
               graph_derivative=lambda x, y: (x * x + 1).rsqrt())
Acosh = _unary("Acosh", lambda xp, a: xp.arccosh(a),  # derivative (x^2 - 1)^-1/2, as torch's
               lambda xp, a: 1 / xp.sqrt(a * a - 1),  # (finite outside the domain as there)
               graph_derivative=lambda x, y: (x * x - 1).rsqrt())
Atanh = _unary("Atanh", lambda xp, a: xp.arctanh(a), lambda xp, a: 1 / (1 - a * a),
               graph_derivative=lambda x, y: 1 / (1 - x * x))
_DEG = math.pi / 180.0


def _wide16(a):
    """16-bit floats computed in float32 and rounded once, as PyTorch's kernels do."""
    return a.astype(np.float32) if a.dtype.itemsize == 2 else a


Deg2Rad = _unary("Deg2Rad", lambda xp, a: _wide16(a) * _DEG, lambda xp, a: xp.full_like(a, _DEG),
                 graph_derivative=lambda x, y: _DEG)
Rad2Deg = _unary("Rad2Deg", lambda xp, a: _wide16(a) * (1 / _DEG),
                 lambda xp, a: xp.full_like(a, 1 / _DEG), graph_derivative=lambda x, y: 1 / _DEG)
asinh, acosh, atanh, deg2rad, rad2deg = (_float_op(f) for f in (Asinh, Acosh, Atanh, Deg2Rad,
                                                                    Rad2Deg))


# ---- sign manipulation -----------------------------------------------------------------------
class CopySign(Function):
    """``|a|`` with the sign of ``b``; PyTorch's gradients: ``g * result / a`` for a (0 where a
    is 0), none for b."""

    def forward(self, a, b):
        y = get_array_module(a).copysign(a, b)
        self.save_for_backward(a, y)
        return y

    def backward(self, g):
        a, y = self.saved
        xp = get_array_module(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = xp.where(a == 0, 0, y / a)
        return (g * ratio).astype(g.dtype, copy=False), xp.zeros_like(g)

    def graph_backward(self, g, out):
        a = self.inputs[0].data
        xp = get_array_module(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = xp.where(a == 0, 0, out.data / a)  # +-1: piecewise constant
        return g * constant(ratio.astype(g.data.dtype, copy=False)), Fill.apply(g, value=0)


def copysign(input, other):
    """``|input|`` with the sign of ``other`` (a tensor or a number); floating-point result."""
    a, b = _pair("copysign", input, other, floating=True)
    return CopySign.apply(a, b)


def signbit(input):
    """Whether the sign bit is set (True for -0.0 and negative numbers), as a bool tensor."""
    _check_tensor("signbit", "input", input)
    a = input.data
    xp = get_array_module(a)
    refuse_complex("signbit", a)  # NumPy would test the real part's sign
    if a.dtype.kind == "b" or a.dtype.kind == "u":
        return autograd.Tensor(xp.zeros(a.shape, dtype=bool))
    if a.dtype.kind == "i":
        return autograd.Tensor(a < 0)
    if a.dtype.kind != "f":  # bfloat16 (ml_dtypes): through float32, which keeps the sign
        a = a.astype(np.float32)
    return autograd.Tensor(xp.signbit(a))


class Heaviside(Function):
    """The step function: 0 below zero, 1 above, ``values`` at zero. PyTorch has no derivative
    for it: backward raises, as there."""

    def forward(self, a, v):
        xp = get_array_module(a)
        one, zero = xp.ones((), a.dtype), xp.zeros((), a.dtype)
        return xp.where(a == 0, v, xp.where(a > 0, one, zero)).astype(a.dtype, copy=False)

    def backward(self, g):
        raise RuntimeError("derivative for heaviside is not implemented (as in PyTorch)")


def heaviside(input, values):
    """0 where ``input < 0``, 1 where ``> 0``, ``values`` where it is 0 (same dtypes, as torch)."""
    if isinstance(input, autograd.Tensor):
        refuse_complex("heaviside", input.data)
    _check_tensor("heaviside", "input", input)
    _check_tensor("heaviside", "values", values)
    if input.dtype != values.dtype:
        raise DtypeError(f"heaviside: input ({input.dtype}) and values ({values.dtype}) must "
                         "have the same dtype, as in PyTorch")
    _broadcast_shapes("heaviside", input=input.shape, values=values.shape)
    return Heaviside.apply(input, values)


# ---- fmax / fmin -----------------------------------------------------------------------------
class FMax(Function):
    """The larger (smaller) of two, NaN only where both are NaN. PyTorch's gradients: a gets it
    where it won or tied or b is NaN, b where a lost."""

    def forward(self, a, b, take_min):
        xp = get_array_module(a)
        self.take_min = take_min
        self.save_for_backward(a, b)
        if a.dtype.kind == "V":  # bfloat16 (ml_dtypes): through float32, which holds it exactly
            wide = a.astype(np.float32), b.astype(np.float32)
            return (xp.fmin(*wide) if take_min else xp.fmax(*wide)).astype(a.dtype)
        return xp.fmin(a, b) if take_min else xp.fmax(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(g)
        a_side = ((a <= b) if self.take_min else (a >= b)) | (b != b)
        zero = xp.zeros((), g.dtype)
        return xp.where(a_side, g, zero), xp.where(a_side, zero, g)

    def graph_backward(self, g, out):
        a, b = (t.data for t in self.inputs)
        a_side = ((a <= b) if self.take_min else (a >= b)) | (b != b)
        return keep_where(a_side, g), keep_where(~a_side, g)


def fmax(input, other):
    """The elementwise maximum that ignores NaN (NaN only where both are NaN)."""
    a, b = _pair("fmax", input, other, numbers=False)
    return FMax.apply(a, b, take_min=False)


def fmin(input, other):
    """The elementwise minimum that ignores NaN (NaN only where both are NaN)."""
    a, b = _pair("fmin", input, other, numbers=False)
    return FMax.apply(a, b, take_min=True)


# ---- powers of two, float_power --------------------------------------------------------------
def float_power(input, exponent):
    """``input ** exponent`` in float64, whatever the dtypes (either may be a number); in
    complex128 where either is complex, as PyTorch."""
    for what, v in (("input", input), ("exponent", exponent)):
        if not isinstance(v, autograd.Tensor) and not (_is_number(v) or isinstance(v, complex)):
            raise TypeError(f"float_power(): argument '{what}' must be a Tensor or a number, "
                            f"got {type(v).__name__}")
    if not isinstance(input, autograd.Tensor):
        _check_tensor("float_power", "exponent", exponent)
    is_complex = any(v.data.dtype.kind == "c" if isinstance(v, autograd.Tensor)
                     else isinstance(v, complex) for v in (input, exponent))
    wide = np.dtype(np.complex128 if is_complex else np.float64)
    number = complex if is_complex else float
    if not isinstance(input, autograd.Tensor):
        e = exponent if exponent.dtype == wide else Cast.apply(exponent, dtype=wide)
        base = autograd.Tensor(get_array_module(e.data).full((), number(input), dtype=wide))
        return base ** e
    x = input if input.dtype == wide else Cast.apply(input, dtype=wide)
    if isinstance(exponent, autograd.Tensor):
        e = exponent if exponent.dtype == wide else Cast.apply(exponent, dtype=wide)
        _broadcast_shapes("float_power", input=x.shape, exponent=e.shape)
        return x ** e
    return x ** number(exponent)


class Ldexp(Function):
    """``a * 2**b``: gradients ``g * 2**b`` and ``g * a * 2**b * ln 2``."""

    def forward(self, a, b):
        xp = get_array_module(a)
        scale = xp.exp2(b).astype(a.dtype, copy=False)
        self.save_for_backward(a, scale)
        return a * scale

    def backward(self, g):
        a, scale = self.saved
        return g * scale, (g * a * scale * math.log(2.0)).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        b = self.inputs[1]
        return g * b.exp2(), g * out * math.log(2.0)


def ldexp(input, other):
    """``input * 2 ** other`` (other a tensor); integer inputs give float32."""
    _check_tensor("ldexp", "other", other)
    a, b = _pair("ldexp", input, other, floating=True)
    return Ldexp.apply(a, b)


FrexpResult = namedtuple("FrexpResult", ["mantissa", "exponent"])  # torch.return_types.frexp


class Frexp(Function):
    """The mantissa of ``frexp``, taken from the array module's frexp (``input * 2**-e`` would
    overflow for subnormals); its gradient ``g / 2**e`` as PyTorch's (inf there, as in PyTorch)."""

    def forward(self, a, *, scale):
        xp = get_array_module(a)
        wide = a if a.dtype.kind == "f" else a.astype(np.float32)
        self.save_for_backward(scale)
        return xp.frexp(wide)[0].astype(a.dtype, copy=False)

    def backward(self, g):
        (scale,) = self.saved
        return g * scale

    def graph_backward(self, g, out):
        (scale,) = self.saved  # 2^-exponent: piecewise constant
        return g * constant(scale)


def frexp(input):
    """(mantissa, exponent) with ``input = mantissa * 2 ** exponent``, |mantissa| in [0.5, 1):
    the mantissa in input's dtype (its gradient ``g / 2**exponent``), the exponent int32."""
    _check_tensor("frexp", "input", input)
    if not is_floating(input.dtype):
        raise DtypeError(f"frexp: only supports floating-point dtypes, got {input.dtype}")
    a = input.data
    xp = get_array_module(a)
    wide = a if a.dtype.kind == "f" else a.astype(np.float32)
    _, e = xp.frexp(wide)
    e = e.astype(np.int32)
    with np.errstate(over="ignore"):
        scale = xp.exp2(-e.astype(wide.dtype)).astype(a.dtype)
    return FrexpResult(Frexp.apply(input, scale=scale), autograd.Tensor(e))


# ---- integer ops, nextafter ------------------------------------------------------------------
def _integer_pair(name, input, other):
    a, b = _pair(name, input, other, numbers=False)
    if a.dtype.kind not in "iu":
        raise DtypeError(f"{name}: needs integer tensors, got {a.dtype} (as in PyTorch, "
                         "floating-point and bool tensors have no kernel)")
    return a.data, b.data


def gcd(input, other):
    """The greatest common divisor (non-negative; gcd(0, 0) = 0), of integer tensors."""
    a, b = _integer_pair("gcd", input, other)
    return autograd.Tensor(get_array_module(a).gcd(a, b))


def lcm(input, other):
    """The least common multiple (non-negative; 0 where either is 0), of integer tensors."""
    a, b = _integer_pair("lcm", input, other)
    return autograd.Tensor(get_array_module(a).lcm(a, b))


class NextAfter(Function):
    """The next floating-point value after a toward b. PyTorch's gradient: g for a where the
    two differ, none for b."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return get_array_module(a).nextafter(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(g)
        return xp.where(a != b, g, xp.zeros((), g.dtype)), xp.zeros_like(g)

    def graph_backward(self, g, out):
        a, b = (t.data for t in self.inputs)
        return keep_where(a != b, g), Fill.apply(g, value=0)


def nextafter(input, other):
    """The next representable value after ``input`` toward ``other``, of float tensors."""
    a, b = _pair("nextafter", input, other, numbers=False)
    if not is_floating(a.dtype):
        raise DtypeError(f"nextafter: needs floating-point tensors, got {a.dtype}")
    return NextAfter.apply(a, b)


# ---- queries ---------------------------------------------------------------------------------
def _float_query(name, fn, default):
    def op(input):
        _check_tensor(name, "input", input)
        a = input.data
        xp = get_array_module(a)
        if a.dtype.kind == "c":  # isreal: no imaginary part; isposinf/isneginf refuse, as torch
            if name == "isreal":
                return autograd.Tensor(a.imag == 0)
            refuse_complex(name, a)
        if not is_floating(a.dtype):
            return autograd.Tensor(xp.full(a.shape, default, dtype=bool))
        if a.dtype.kind != "f":
            a = a.astype(np.float32)
        return autograd.Tensor(fn(xp, a))
    op.__name__ = op.__qualname__ = name
    return op


# isinf and a sign test: CuPy has no isposinf/isneginf
isposinf = _float_query("isposinf", lambda xp, a: xp.isinf(a) & (a > 0), False)
isneginf = _float_query("isneginf", lambda xp, a: xp.isinf(a) & (a < 0), False)
isreal = _float_query("isreal", lambda xp, a: xp.ones(a.shape, dtype=bool), True)


# ---- aliases ---------------------------------------------------------------------------------
def multiply(input, other):
    """``input * other`` (torch.multiply, an alias of mul; input may be a number, as there)."""
    if _is_number(input) and isinstance(other, autograd.Tensor):
        input, other = other, input  # a product is the same either way round
    _check_tensor("multiply", "input", input)
    return input.mul(other)


def subtract(input, other, *, alpha=1):
    """``input - alpha * other`` (torch.subtract, an alias of sub)."""
    _check_tensor("subtract", "input", input)
    refuse_bool_sub(input, other)  # PyTorch's RuntimeError and message, as the - operator's
    return input.sub(other, alpha=alpha)


def true_divide(input, other):
    """``input / other``, always true division (integers give float32); input may be a
    number, as in PyTorch."""
    if _is_number(input) and isinstance(other, autograd.Tensor):
        return div(input, other)
    _check_tensor("true_divide", "input", input)
    return input.div(other)


def positive(input):
    """``input`` itself (torch.positive; bool tensors are refused, as there)."""
    _check_tensor("positive", "input", input)
    if input.dtype == np.bool_:
        raise UnsupportedDtypeError("positive: the + operator on a bool tensor is not supported")
    return input


def _no_bool(name, input):
    _check_tensor(name, "input", input)
    if input.dtype == np.bool_:
        raise DtypeError(f"{name}: not implemented for bool tensors (as in PyTorch)")


def absolute(input):
    """``abs(input)`` (torch.absolute; bool tensors are refused, as there)."""
    _no_bool("absolute", input)
    return input.abs()


def fix(input):
    """Rounding toward zero (torch.fix, an alias of trunc; not for bool tensors)."""
    _no_bool("fix", input)
    return trunc(input)


def sgn(input):
    """The sign of each element: z / |z| (0 at 0) for complex tensors; for real ones
    torch.sgn is torch.sign."""
    if isinstance(input, autograd.Tensor) and input.data.dtype.kind == "c":
        from .complex_ops import complex_sgn

        return complex_sgn(input)
    return sign(input)


def _shift(name, input, other, left):
    """``input << other`` or ``>>`` at PyTorch's result type, with its rules at the edges: a
    shift by a negative amount or by the width or more gives 0 (left) or the sign (right)."""
    if _is_number(input) and isinstance(other, autograd.Tensor):
        xp = get_array_module(other.data)
        input = autograd.Tensor(xp.asarray(input))
    a, b = _pair(name, input, other)
    if a.dtype.kind not in "iu":
        raise DtypeError(f"{name}: not implemented for {a.dtype} tensors (integers only, as in "
                         "PyTorch)")
    refuse_unsigned(a.dtype, "lshift_cpu" if left else "rshift_cpu")
    a, b = a.data, b.data
    xp = get_array_module(a)
    bits = a.dtype.itemsize * 8
    out_of_range = (b < 0) | (b >= bits)
    amount = xp.clip(b, 0, bits - 1).astype(a.dtype)
    if left:
        out = xp.where(out_of_range, xp.zeros((), a.dtype), xp.left_shift(a, amount))
    else:
        sign = xp.where(a < 0, -1, 0).astype(a.dtype) if a.dtype.kind == "i" else \
            xp.zeros((), a.dtype)
        out = xp.where(out_of_range, sign, xp.right_shift(a, amount))
    return autograd.Tensor(xp.asarray(out, dtype=a.dtype))


def bitwise_left_shift(input, other):
    """``input << other`` of integer tensors (or numbers), as torch.bitwise_left_shift."""
    return _shift("bitwise_left_shift", input, other, True)


def bitwise_right_shift(input, other):
    """``input >> other`` (arithmetic for signed integers), as torch.bitwise_right_shift."""
    return _shift("bitwise_right_shift", input, other, False)


def renorm(input, p, dim, maxnorm):
    """Each slice of ``input`` along ``dim`` whose ``p``-norm (over the other dims) exceeds
    ``maxnorm`` scaled down to norm ``maxnorm`` (``maxnorm / (norm + 1e-7)``, as PyTorch);
    differentiable through the norm, as torch.renorm."""
    _check_tensor("renorm", "input", input)
    if not is_floating(input.dtype):
        raise DtypeError(f"renorm: needs a floating-point tensor, got {input.dtype}")
    if input.ndim < 2:
        raise OpArgumentError(f"renorm: input needs at least 2 dimensions, got {input.ndim} "
                              "dimensions")
    if not _is_number(p) or not p > 0:
        raise OpArgumentError(f"renorm: non-positive-norm not supported, got p={p}")
    if not _is_number(maxnorm) or not maxnorm >= 0:
        raise OpArgumentError(f"renorm: expected maxnorm to be >= 0 but got {maxnorm}")
    from .ops import wrap_dim
    from .math_ops import vector_norm, where

    d = wrap_dim(dim, input.ndim, "renorm")
    norm = vector_norm(input, p, dim=[i for i in range(input.ndim) if i != d], keepdim=True)
    scale = where(norm > maxnorm, maxnorm / (norm + 1e-7), 1.0)
    return input * scale.to(input.dtype)


TENSOR_METHODS = {
    "renorm": renorm, "bitwise_left_shift": bitwise_left_shift,
    "bitwise_right_shift": bitwise_right_shift, "__lshift__": bitwise_left_shift,
    "__rshift__": bitwise_right_shift,
    "__rlshift__": lambda self, other: bitwise_left_shift(other, self),
    "__rrshift__": lambda self, other: bitwise_right_shift(other, self),
    "__ilshift__": lambda self, other: self.bitwise_left_shift_(other),
    "__irshift__": lambda self, other: self.bitwise_right_shift_(other),
    "asinh": asinh, "acosh": acosh, "atanh": atanh, "arcsinh": asinh, "arccosh": acosh,
    "arctanh": atanh, "deg2rad": deg2rad, "rad2deg": rad2deg, "copysign": copysign,
    "signbit": signbit, "heaviside": heaviside, "fmax": fmax, "fmin": fmin,
    "float_power": float_power, "ldexp": ldexp, "frexp": frexp, "gcd": gcd, "lcm": lcm,
    "nextafter": nextafter, "isposinf": isposinf, "isneginf": isneginf, "isreal": isreal,
    "multiply": multiply, "subtract": subtract, "true_divide": true_divide,
    "positive": positive, "absolute": absolute, "fix": fix, "sgn": sgn,
}
# minidl.X for each (minidl/__init__.py)
FUNCTIONS = {k: v for k, v in TENSOR_METHODS.items() if not k.startswith("__")}
