"""Math ops under PyTorch's names that ops.py does not have: cumulative sums and products,
elementwise functions (trigonometric, logarithms, rounding), products and norms over dims,
logsumexp, lerp/addcmul/addcdiv, comparisons and logical ops as methods.

One Function per differentiable op (forward and backward side by side, on the array module of
the inputs); numerically stable forms where it matters (logsumexp subtracts the max, log1p and
expm1 keep small arguments exact, cumprod's and prod's gradients are exact with zeros). Tensor's
methods are installed by tensor.py from ``TENSOR_METHODS``; this module imports only
``backend``, ``autograd`` and ``ops``.
"""
from __future__ import annotations


import numpy as np

from . import autograd
from .autograd import Function, first_order_only
from .backend import get_array_module
from .backend.dtypes import as_dtype, category, default_float, is_floating, is_real_number
from .ops import (
    Abs, Cast, Compare, ComplexDtypeError, Conj, Exp, Fill, GetItem, Max, Sigmoid,
    UnsupportedDtypeError,
    _array_module,
    _is_number, _operand, accumulation_dtype, clamp, conj_inputs, constant, expand_reduced,
    keep_where,
    reduction_axes, refuse_bool, refuse_empty_reduction, result_type, where, wrap_dim,
)
from .ops import UnsignedKernelError, refuse_unsigned, sgn as _sgn, var as _var


def _cumulative_input(name, input, dim, dtype):
    """(input cast as PyTorch casts it, wrapped dim): ``dtype=`` casts first; integer and
    bool inputs accumulate in int64."""
    if dtype is not None and as_dtype(dtype) == np.bool_:  # torch has no bool running sum
        raise UnsignedKernelError(f"\"{name}_out_cpu\" not implemented for 'Bool'")
    input = _accumulation_input(input, dtype, f"{name}_out_cpu")
    return input, wrap_dim(dim, input.ndim, name)


def _accumulation_input(input, dtype, kernel):
    if dtype is not None:
        dtype = as_dtype(dtype)
        refuse_unsigned(dtype, kernel)  # torch accumulates in no uint16/32/64
    elif input.data.dtype.kind in "biu":
        dtype = np.dtype(np.int64)
    if dtype is not None and dtype != input.data.dtype:
        input = Cast.apply(input, dtype=dtype)
    return input


def _reverse_cumsum(xp, a, d):
    return xp.flip(xp.cumsum(xp.flip(a, axis=d), axis=d), axis=d)


def _flip_graph(t, d):
    """``t`` reversed along dim d, as a recorded op (a basic slice, so GetItem's gradient)."""
    return GetItem.apply(t, index=(slice(None),) * d + (slice(None, None, -1),))


def _reverse_cumsum_graph(t, d):
    return _flip_graph(CumSum.apply(_flip_graph(t, d), dim=d), d)


class CumSum(Function):
    complex_grad = True

    def forward(self, a, dim):
        self.dim = dim
        wide = accumulation_dtype(a)
        return a.cumsum(axis=dim, dtype=wide).astype(a.dtype, copy=False)

    def backward(self, g):
        return _reverse_cumsum(get_array_module(g), g, self.dim)

    def graph_backward(self, g, out):
        return _reverse_cumsum_graph(g, self.dim)


class CumProd(Function):
    """Running products. The gradient is exact with zeros present: before a slice's first
    zero it is ``sum_{j>=k} g_j y_j / x_k``; at the first zero, the products with that zero
    left out; after it, 0. Complex: the same with x and y conjugated (PyTorch's convention)."""

    complex_grad = True

    def forward(self, a, dim):
        self.dim = dim
        wide = accumulation_dtype(a)
        y = a.cumprod(axis=dim, dtype=wide).astype(a.dtype, copy=False)
        self.save_for_backward(a, y)
        return y

    def backward(self, g):
        a, y = self.saved
        if a.dtype.kind == "c":  # every term is a product of them: conjugate once
            a, y = a.conj(), y.conj()
        xp = get_array_module(g)
        d = self.dim
        if a.ndim == 0 or a.shape[d] <= 1:  # y = x: g itself (y / x would be NaN at inf)
            return g
        zero = a == 0
        zeros_so_far = xp.cumsum(zero, axis=d)
        before = zeros_so_far == 0
        first_zero = zero & (zeros_so_far == 1)
        safe = xp.where(before, a, 1)
        grad = xp.where(before, _reverse_cumsum(xp, g * y, d) / safe, 0)
        if first_zero.any():
            y_without = xp.cumprod(xp.where(first_zero, 1, a), axis=d)
            grad = xp.where(first_zero, _reverse_cumsum(xp, g * y_without, d), grad)
        return grad.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        if x.ndim == 0 or x.shape[self.dim] <= 1:
            return g
        if bool((x.data == 0).any()):  # the exact gradient at zeros: first order only
            return first_order_only(self, g)
        if x.data.dtype.kind == "c":
            x, out = Conj.apply(x), Conj.apply(out)
        return _reverse_cumsum_graph(g * out, self.dim) / x


def _cumulative(fn, input, d):
    if input.ndim == 0:
        return fn.apply(input.reshape(1), dim=0).reshape(())
    return fn.apply(input, dim=d)


def cumsum(input, dim, *, dtype=None):
    """Running sums along ``dim``; integer and bool inputs give int64, as in PyTorch."""
    x, d = _cumulative_input("cumsum", input, dim, dtype)
    return _cumulative(CumSum, x, d)


def cumprod(input, dim, *, dtype=None):
    """Running products along ``dim``; integer and bool inputs give int64, as in PyTorch."""
    x, d = _cumulative_input("cumprod", input, dim, dtype)
    return _cumulative(CumProd, x, d)


TENSOR_METHODS = {"cumsum": cumsum, "cumprod": cumprod}


# ---- elementwise functions ----------------------------------------------------------------
# the elementwise functions (their Function's name) defined here for complex numbers, whose
# gradient is g times the conjugate derivative (PyTorch's convention)
HOLOMORPHIC = {"Reciprocal", "Rsqrt", "Square", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
               "Sinh", "Cosh", "Log1p", "Expm1", "Log2", "Log10", "Exp2"}


def _float_input(x, name="this op"):
    """Integer and bool tensors enter floating-point math in the default dtype (PyTorch's).
    Complex tensors pass into the ``HOLOMORPHIC`` ops, and are refused, naming the op,
    elsewhere."""
    if not isinstance(x, autograd.Tensor):  # a number or array: torch's TypeError
        raise TypeError(f"{name.lower()}(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(x).__name__}")
    dtype = x.data.dtype
    if is_floating(dtype):
        return x
    if dtype.kind == "c":
        if name not in HOLOMORPHIC:
            raise ComplexDtypeError(f"{name.lower()}: not implemented for complex tensors "
                                    f"(got dtype {dtype})")
        return x
    return Cast.apply(x, dtype=default_float())


def _unary(name, forward, derivative, save_output=False, graph_derivative=None):
    """A Function class ``name`` for ``y = forward(xp, x)`` whose gradient is
    ``g * derivative(xp, saved)`` (saved: x, or y with ``save_output``); it saves only what the
    derivative reads. ``graph_derivative(x, y)`` states the same derivative with recorded ops
    on the input and output Tensors (a Tensor or a number), for double backward; a
    piecewise-constant op (``derivative`` None) has a zero gradient in both passes."""

    def fwd(self, a):
        xp = get_array_module(a)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = forward(xp, a)
        y = y.astype(a.dtype, copy=False)
        if derivative is not None:  # (a step function saves nothing: a second backward works)
            self.save_for_backward(y if save_output else a)
        return y

    def bwd(self, g):
        xp = get_array_module(g)
        if derivative is None:  # exact zeros, as PyTorch's: 0 * inf or 0 * nan would be NaN
            return xp.zeros_like(g)
        (saved,) = self.saved
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = derivative(xp, saved)
        if g.dtype.kind == "c":  # holomorphic: g times the conjugate derivative (PyTorch's)
            d = d.conj()
        return (g * d).astype(g.dtype, copy=False)

    def graph_bwd(self, g, out):
        if derivative is None:  # exact: the gradient of a step function is 0, whatever x
            return Fill.apply(g, value=0)
        d = graph_derivative(self.inputs[0], out)
        if g.data.dtype.kind == "c" and isinstance(d, autograd.Tensor):
            d = Conj.apply(d)
        return g * d

    attrs = {"forward": fwd, "backward": bwd, "__doc__": name.lower(),
             "complex_grad": derivative is not None and name in HOLOMORPHIC}
    if derivative is None or graph_derivative is not None:
        attrs["graph_backward"] = graph_bwd
    return type(name, (Function,), attrs)


_LN2, _LN10 = float(np.log(2.0)), float(np.log(10.0))
Reciprocal = _unary("Reciprocal", lambda xp, a: 1 / a, lambda xp, y: -y * y, save_output=True,
                    graph_derivative=lambda x, y: -(y * y))
Rsqrt = _unary("Rsqrt", lambda xp, a: 1 / xp.sqrt(a), lambda xp, y: -0.5 * y * y * y,
               save_output=True, graph_derivative=lambda x, y: y * y * y * -0.5)
Square = _unary("Square", lambda xp, a: a * a, lambda xp, a: 2 * a,
                graph_derivative=lambda x, y: x * 2)
Sin = _unary("Sin", lambda xp, a: xp.sin(a), lambda xp, a: xp.cos(a),
             graph_derivative=lambda x, y: Cos.apply(x))
Cos = _unary("Cos", lambda xp, a: xp.cos(a), lambda xp, a: -xp.sin(a),
             graph_derivative=lambda x, y: -Sin.apply(x))
Tan = _unary("Tan", lambda xp, a: xp.tan(a), lambda xp, y: 1 + y * y, save_output=True,
             graph_derivative=lambda x, y: 1 + y * y)
Asin = _unary("Asin", lambda xp, a: xp.arcsin(a), lambda xp, a: 1 / xp.sqrt(1 - a * a),
              graph_derivative=lambda x, y: Rsqrt.apply(1 - x * x))
Acos = _unary("Acos", lambda xp, a: xp.arccos(a), lambda xp, a: -1 / xp.sqrt(1 - a * a),
              graph_derivative=lambda x, y: -Rsqrt.apply(1 - x * x))
Atan = _unary("Atan", lambda xp, a: xp.arctan(a), lambda xp, a: 1 / (1 + a * a),
              graph_derivative=lambda x, y: 1 / (1 + x * x))
Sinh = _unary("Sinh", lambda xp, a: xp.sinh(a), lambda xp, a: xp.cosh(a),
              graph_derivative=lambda x, y: Cosh.apply(x))
Cosh = _unary("Cosh", lambda xp, a: xp.cosh(a), lambda xp, a: xp.sinh(a),
              graph_derivative=lambda x, y: Sinh.apply(x))
Log1p = _unary("Log1p", lambda xp, a: xp.log1p(a), lambda xp, a: 1 / (1 + a),
               graph_derivative=lambda x, y: 1 / (1 + x))
Expm1 = _unary("Expm1", lambda xp, a: xp.expm1(a), lambda xp, y: y + 1, save_output=True,
               graph_derivative=lambda x, y: y + 1)
Log2 = _unary("Log2", lambda xp, a: xp.log2(a), lambda xp, a: 1 / (a * _LN2),
              graph_derivative=lambda x, y: 1 / (x * _LN2))
Log10 = _unary("Log10", lambda xp, a: xp.log10(a), lambda xp, a: 1 / (a * _LN10),
               graph_derivative=lambda x, y: 1 / (x * _LN10))
Exp2 = _unary("Exp2", lambda xp, a: xp.exp2(a), lambda xp, y: y * _LN2, save_output=True,
              graph_derivative=lambda x, y: y * _LN2)
# piecewise constant: a zero gradient everywhere, as PyTorch's
# (a > 0) - (a < 0): the sign of NaN is 0, as PyTorch's (xp.sign gives NaN)
Sign = _unary("Sign", lambda xp, a: (a > 0).astype(a.dtype) - (a < 0).astype(a.dtype), None)
Floor = _unary("Floor", lambda xp, a: xp.floor(a), None)
Ceil = _unary("Ceil", lambda xp, a: xp.ceil(a), None)
Trunc = _unary("Trunc", lambda xp, a: xp.trunc(a), None)
Round = _unary("Round", lambda xp, a: xp.round(a), None)  # half to even, as torch.round
Frac = _unary("Frac", lambda xp, a: a - xp.trunc(a), lambda xp, a: xp.ones_like(a),
              graph_derivative=lambda x, y: 1)


def _float_op(fn):
    def op(input):
        if getattr(input, "is_nested", False) is True:  # minidl.nested: per values array
            return input._nested_op("pointwise", op, input)
        if not isinstance(input, autograd.Tensor):  # named as public (log_ndtr, not logndtr)
            _float_input(input, op.__name__)
        return fn.apply(_float_input(input, fn.__name__))
    op.__name__ = op.__qualname__ = fn.__name__.lower()
    op.__doc__ = f"Elementwise {op.__name__}; integer input computes in float32, as PyTorch."
    return op


def _same_dtype_op(fn, integer=None, bool_ok=True):
    """An op whose integer input stays integer: ``integer(x)`` (None: x itself); bool input
    refused unless ``bool_ok`` (PyTorch's floor, ceil, trunc, round)."""
    def op(input):
        if getattr(input, "is_nested", False) is True:  # minidl.nested: per values array
            return input._nested_op("pointwise", op, input)
        if not bool_ok:
            refuse_bool(op.__name__, input)
        if input.data.dtype.kind == "c":
            if fn is Square:
                return fn.apply(input)
            hint = "; use minidl.sgn for z / |z|" if fn is Sign else ""
            raise UnsupportedDtypeError(f"{op.__name__}: not implemented for complex tensors "
                                        f"(dtype {input.data.dtype}){hint}")
        if not is_floating(input.data.dtype):
            if integer is None:
                return autograd.Tensor(input.data.copy())
            return autograd.Tensor(integer(get_array_module(input.data), input.data))
        return fn.apply(input)
    op.__name__ = op.__qualname__ = fn.__name__.lower()
    op.__doc__ = f"Elementwise {op.__name__}, in the input's dtype."
    return op


reciprocal, rsqrt, sin, cos, tan = (_float_op(f) for f in (Reciprocal, Rsqrt, Sin, Cos, Tan))
asin, acos, atan, sinh, cosh = (_float_op(f) for f in (Asin, Acos, Atan, Sinh, Cosh))
log1p, expm1, log2, log10, exp2 = (_float_op(f) for f in (Log1p, Expm1, Log2, Log10, Exp2))
square = _same_dtype_op(Square, lambda xp, a: (a * a) if a.dtype != np.bool_ else
                        a.astype(np.int64))
sign = _same_dtype_op(Sign, lambda xp, a: xp.sign(a) if a.dtype != np.bool_ else a.copy())
floor, ceil, trunc = (_same_dtype_op(f, bool_ok=False) for f in (Floor, Ceil, Trunc))
def frac(input):
    """The fractional part ``x - trunc(x)``, with the sign of x (floating-point input only,
    as in PyTorch)."""
    if not is_floating(input.data.dtype):
        raise UnsupportedDtypeError(f"frac: needs a floating-point tensor, got dtype "
                                    f"{input.data.dtype}")
    return Frac.apply(input)
arcsin, arccos, arctan = asin, acos, atan


def round(input, *, decimals=0):  # noqa: A001  (PyTorch's name)
    """Elementwise rounding, half to even; ``decimals`` as torch.round's (zero gradient)."""
    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"round(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(input).__name__}")
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)):
        raise TypeError(f"round(): argument 'decimals' must be int, not "
                        f"{type(decimals).__name__}")  # not 1.5 digits
    if not decimals:
        return _same_dtype_op(Round, bool_ok=False)(input)
    if not is_floating(input.data.dtype):
        raise UnsupportedDtypeError(f"round: decimals= needs a floating-point tensor, got dtype "
                                    f"{input.data.dtype}")
    scale = 10.0 ** decimals
    return _same_dtype_op(Round, bool_ok=False)(input * scale) / scale


def neg(input):
    return -input


negative = neg


def lerp(input, end, weight):
    """``input + weight * (end - input)`` where |weight| < 1/2, ``end - (end - input) * (1 -
    weight)`` elsewhere (PyTorch's two forms: exact at weight 1, and the same infinities and
    NaNs); weight a number or a tensor (broadcast). As in PyTorch, input is floating-point and
    end (and a weight tensor with dims) of its dtype."""
    dtype = input.data.dtype
    if not (is_floating(dtype) or dtype.kind == "c"):
        raise UnsupportedDtypeError(f"lerp: needs a floating-point input, got dtype {dtype}")
    for what, x in (("end", end), ("weight", weight)):
        if isinstance(x, autograd.Tensor) and x.data.dtype != dtype and (
                what == "end" or x.ndim):
            raise UnsupportedDtypeError(f"lerp: expected dtype {dtype} for `{what}` but got "
                                        f"dtype {x.data.dtype}")
    if not isinstance(weight, autograd.Tensor):
        low = abs(weight) < 0.5
        return input + weight * (end - input) if low else end - (end - input) * (1 - weight)
    return where(weight.abs() < 0.5, input + weight * (end - input),
                 end - (end - input) * (1 - weight))


def _integer_value(value, *tensors):
    """``value`` as PyTorch applies it to integer tensors: a float one truncated to an int."""
    if isinstance(value, float) and result_type(*tensors).kind in "biu":
        return int(value)
    return value


def addcmul(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 * tensor2``."""
    return input + _integer_value(value, input, tensor1, tensor2) * (tensor1 * tensor2)


def addcdiv(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 / tensor2``; two integer tensors are refused, as in PyTorch
    (its integer division here was removed)."""
    if not any(is_floating(t.data.dtype) or t.data.dtype.kind == "c" for t in (tensor1, tensor2)):
        raise UnsupportedDtypeError("Integer division with addcdiv is no longer supported; "
                                    "use tensor1 / tensor2 or a floating-point tensor")
    return input + value * (tensor1 / tensor2)


# ---- reductions ----------------------------------------------------------------------------
def _axes(dim, ndim, name):
    if isinstance(dim, (tuple, list)) and not dim:
        return tuple(range(ndim))
    return reduction_axes(dim, ndim)


def _keep(g, axes, keepdim, xp):
    if not keepdim:
        for ax in axes:
            g = xp.expand_dims(g, ax)
    return g


def _products_of_the_others(a, axes, xp):
    """For each element, the product of the other elements of its slice over ``axes``: the
    product of those before it times the product of those after it (no division, so zeros,
    infs and NaNs give what multiplying them out gives)."""
    keep = [i for i in range(a.ndim) if i not in axes]
    perm = keep + list(axes)
    t = xp.transpose(a, perm)
    lead, reduced = t.shape[:len(keep)], t.shape[len(keep):]
    t = t.reshape(lead + (-1,))
    ones = xp.ones(lead + (1,), a.dtype)
    before = xp.cumprod(xp.concatenate([ones, t[..., :-1]], axis=-1), axis=-1)
    after = xp.cumprod(xp.concatenate([ones, t[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return xp.transpose((before * after).reshape(lead + reduced), tuple(int(i) for i in np.argsort(perm)))


class Prod(Function):
    """The product over ``axes`` (all of them for ``whole``, torch's ``prod()``). Its gradient
    is torch's: y / x where the input holds no zero; otherwise each element's product of the
    others in its slice, multiplied out (from the products before and after it), so 0 beside a
    zero unless an inf or NaN among the others makes it NaN; and zeros for a whole product with
    two zeros or more."""

    complex_grad = True  # the conjugate of the product of the others, PyTorch's convention

    def forward(self, a, axes, keepdim, whole=False):
        self.axes, self.keepdim, self.whole = axes, keepdim, whole
        wide = accumulation_dtype(a)
        y = a.prod(axis=axes, keepdims=True, dtype=wide).astype(a.dtype, copy=False)
        self.save_for_backward(a, y)
        return y if keepdim else y.reshape(tuple(n for i, n in enumerate(y.shape)
                                                 if i not in axes))

    def backward(self, g):
        a, y = self.saved
        xp = get_array_module(g)
        g = _keep(g, self.axes, self.keepdim, xp)
        zeros = int((a == 0).sum())
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if zeros == 0:
                grad = y / a
            elif self.whole and zeros > 1:  # every product of the others holds a zero
                grad = xp.zeros_like(a)
            else:  # torch's choice: with a zero anywhere, the products of the others for all
                grad = _products_of_the_others(a, self.axes, xp)
        if grad.dtype.kind == "c":
            grad = grad.conj()
        return (g * grad).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        if bool((x.data == 0).any()):  # the exact gradient at zeros: first order only
            return first_order_only(self, g)
        others = expand_reduced(out, x.shape, self.axes, self.keepdim) / x
        if others.data.dtype.kind == "c":
            others = Conj.apply(others)
        return expand_reduced(g, x.shape, self.axes, self.keepdim) * others


def prod(input, dim=None, keepdim=False, *, dtype=None):
    """The product of all elements, or over ``dim``; integer and bool input gives int64."""
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer))):
        raise TypeError(f"prod: dim must be an int, got {type(dim).__name__}")
    x = _accumulation_input(input, dtype, "prod_out_cpu")
    axes = _axes(dim, x.ndim, "prod")
    return Prod.apply(x, axes=axes, keepdim=bool(keepdim) and dim is not None, whole=dim is None)


class LogSumExp(Function):
    """``log(sum(exp(x)))`` over ``axes`` with the max subtracted (no overflow); all -inf gives
    -inf, and +inf anywhere gives +inf. Complex: the largest real part is subtracted (the
    imaginary part is then the principal log's, as torch's), and the gradient is
    ``g * conj(softmax)``, the holomorphic convention."""

    complex_grad = True

    def forward(self, a, axes, keepdim):
        xp = get_array_module(a)
        self.axes, self.keepdim = axes, keepdim
        wide = accumulation_dtype(a)
        aw = a if wide is None else a.astype(wide)
        ar = aw.real if aw.dtype.kind == "c" else aw
        m = ar.max(axis=axes, keepdims=True) if ar.size else xp.zeros((1,) * ar.ndim, ar.dtype)
        m = xp.where(xp.isfinite(m), m, 0)
        with np.errstate(divide="ignore"):
            y = xp.log(xp.exp(aw - m).sum(axis=axes, keepdims=True)) + m
        self.save_for_backward(aw, y)
        out = y if keepdim else y.reshape(tuple(n for i, n in enumerate(y.shape)
                                                if i not in axes))
        return out.astype(a.dtype, copy=False)

    def backward(self, g):
        a, y = self.saved
        xp = get_array_module(g)
        gw = _keep(g, self.axes, self.keepdim, xp).astype(a.dtype, copy=False)
        with np.errstate(invalid="ignore"):
            d = xp.exp(a - y)
            return (gw * (d.conj() if d.dtype.kind == "c" else d)).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        spread = [expand_reduced(t, x.shape, self.axes, self.keepdim) for t in (g, out)]
        return spread[0] * conj_inputs(g, Exp.apply(x - spread[1]))[0]


def logsumexp(input, dim, keepdim=False):
    """``log(sum(exp(input)))`` over ``dim`` (an int or a tuple), computed stably."""
    complex_input = isinstance(input, autograd.Tensor) and input.data.dtype.kind == "c"
    x = input if complex_input else _float_input(input, "logsumexp")
    return LogSumExp.apply(x, axes=_axes(dim, x.ndim, "logsumexp"), keepdim=bool(keepdim))


class VectorNorm(Function):
    """``sum(|x|^p)^(1/p)`` over ``axes``; p = inf (-inf) is the largest (smallest) |x|, with
    ties sharing the gradient, p = 0 the count of nonzeros. Where the norm is 0 the gradient
    is 0 (PyTorch's subgradient)."""

    def forward(self, a, ord, axes, keepdim):
        xp = get_array_module(a)
        self.ord, self.axes, self.keepdim = ord, axes, keepdim
        wide = accumulation_dtype(a)
        aw = a if wide is None else a.astype(wide)
        m = abs(aw)
        if ord == float("inf"):
            y = m.max(axis=axes, keepdims=True)
        elif ord == float("-inf"):
            y = m.min(axis=axes, keepdims=True)
        elif ord == 0:
            y = (m != 0).sum(axis=axes, keepdims=True).astype(aw.dtype)
        elif ord == 1:
            y = m.sum(axis=axes, keepdims=True)
        elif ord == 2:
            y = xp.sqrt((aw * aw).sum(axis=axes, keepdims=True))
        else:
            y = ((m ** ord).sum(axis=axes, keepdims=True)) ** (1.0 / ord)
        self.save_for_backward(aw, y)
        out = y if keepdim else y.reshape(tuple(n for i, n in enumerate(y.shape)
                                                if i not in axes))
        return out.astype(a.dtype, copy=False)

    def backward(self, g):
        a, y = self.saved
        xp = get_array_module(g)
        gw = _keep(g, self.axes, self.keepdim, xp).astype(a.dtype, copy=False)
        p, m = self.ord, abs(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            if p in (float("inf"), float("-inf")):
                hit = (m == y).astype(a.dtype)
                d = _sgn(a) * hit / xp.maximum(hit.sum(axis=self.axes, keepdims=True), 1)
            elif p == 0:
                d = xp.zeros_like(a)
            elif p == 1:
                d = _sgn(a)
            elif p == 2:
                d = xp.where(y == 0, 0, a / y)
            else:
                d = xp.where(y == 0, 0, _sgn(a) * m ** (p - 1) / y ** (p - 1))
        return (gw * d).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        p, a = self.ord, x.data
        xp = get_array_module(a)
        gx = expand_reduced(g, x.shape, self.axes, self.keepdim)
        if p == 0:
            return Fill.apply(gx, value=0)
        if p in (1, float("inf"), float("-inf")):  # piecewise linear: a constant factor
            if p == 1:
                d = _sgn(a)
            else:
                y = _keep(out.data, self.axes, self.keepdim, xp)
                hit = (abs(a) == y).astype(a.dtype)
                d = _sgn(a) * hit / xp.maximum(hit.sum(axis=self.axes, keepdims=True), 1)
            return gx * constant(d.astype(g.data.dtype, copy=False))
        y = expand_reduced(out, x.shape, self.axes, self.keepdim)
        zero = constant(y.data == 0)  # the norm's subgradient 0 there, as in backward
        safe = where(zero, 1.0, y)
        if p == 2:
            d = x / safe
        else:
            d = constant(_sgn(a)) * x.abs() ** (p - 1) / safe ** (p - 1)
        return gx * where(zero, 0.0, d)


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.vector_norm: the ``ord``-norm of ``x`` over ``dim`` (all dims when None);
    of a complex tensor, the norm of its elements' absolute values."""
    if dtype is not None:
        x = Cast.apply(x, dtype=as_dtype(dtype))
    if x.data.dtype.kind == "c":
        x = Abs.apply(x)
    if not is_floating(x.data.dtype):
        raise TypeError(f"vector_norm: needs a floating-point tensor, got dtype {x.data.dtype}")
    if isinstance(ord, bool) or not (isinstance(ord, np.number) or is_real_number(ord)):
        raise TypeError(f"vector_norm: ord must be a number, got {ord!r}")
    axes = _axes(dim, x.ndim, "vector_norm")
    if (ord < 0 or ord == float("inf")) and any(x.shape[a] == 0 for a in axes):
        empty = next(a for a in axes if x.shape[a] == 0)  # max/min of nothing: no identity
        raise RuntimeError(f"linalg.vector_norm cannot compute the {ord} norm on the dimension "
                           f"{empty} because this dimension is empty and the operation does not "
                           "have an identity")
    return VectorNorm.apply(x, ord=float(ord), axes=axes, keepdim=bool(keepdim))


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """torch.norm: 'fro' (the 2-norm of the elements over ``dim``) or a number ``p``."""
    if p == "fro" or p is None:
        p = 2
    elif isinstance(p, str):
        raise ValueError(f"norm: p={p!r} is not supported; use 'fro' or a number")
    return vector_norm(input, p, dim, keepdim, dtype=dtype)


def amin(input, dim=(), keepdim=False):
    refuse_unsigned(input.data.dtype, "min_values_cpu")
    refuse_empty_reduction("amin", input.shape, dim)
    """The smallest values over ``dim`` (all dims by default); ties share the gradient."""
    return Max.apply(input, dim=None if dim == () else dim, keepdim=keepdim, take_min=True,
                     nan_spread=False)


# ---- comparisons and logical ops: bool tensors outside the graph ---------------------------
def eq(input, other):
    return input == other


def ne(input, other):
    return input != other


def lt(input, other):
    return input < other


def le(input, other):
    return input <= other


def gt(input, other):
    return input > other


def ge(input, other):
    return input >= other


def _bool(name, fn, kinds=""):
    """A bool-valued op outside the graph; on an input of one of ``kinds`` (dtype kinds) it
    runs as a recorded ops.Compare while the ONNX exporter's tracer is installed ("f" takes
    bfloat16 in too, whose NumPy kind is "V")."""
    def op(input):
        dt = input.data.dtype
        if autograd._profiler_hook is not None and (
                dt.kind in kinds or "f" in kinds and is_floating(dt)) and \
                getattr(autograd._profiler_hook, "traces_untracked_ops", False):
            return Compare.apply(input, op=name)
        return autograd.Tensor(fn(get_array_module(input.data), input.data))
    op.__name__ = op.__qualname__ = name
    return op


isnan = _bool("isnan", lambda xp, a: xp.isnan(a) if a.dtype.kind in "fcV" else xp.zeros(a.shape, bool),
              kinds="f")
isinf = _bool("isinf", lambda xp, a: xp.isinf(a) if a.dtype.kind in "fcV" else xp.zeros(a.shape, bool),
              kinds="f")
isfinite = _bool("isfinite", lambda xp, a: xp.isfinite(a) if a.dtype.kind in "fcV" else
                 xp.ones(a.shape, bool), kinds="f")
logical_not = _bool("logical_not", lambda xp, a: xp.logical_not(a), kinds="biuf")


def _logical(name, ufunc):
    def op(input, other):
        if autograd._profiler_hook is not None and isinstance(other, autograd.Tensor) and \
                getattr(autograd._profiler_hook, "traces_untracked_ops", False):
            return Compare.apply(input, other, op=ufunc)  # seen by the ONNX exporter's tracer
        a = input.data
        b = other.data if isinstance(other, autograd.Tensor) else other
        return autograd.Tensor(getattr(get_array_module(a), ufunc)(a, b))
    op.__name__ = op.__qualname__ = name
    return op


logical_and = _logical("logical_and", "logical_and")
logical_or = _logical("logical_or", "logical_or")
logical_xor = _logical("logical_xor", "logical_xor")


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether each element of ``input`` is within ``atol + rtol * |other|`` of ``other``'s;
    as in PyTorch, two tensors must have the same dtype."""
    if isinstance(other, autograd.Tensor) and other.data.dtype != input.data.dtype:
        raise RuntimeError(f"isclose: {input.data.dtype} did not match {other.data.dtype} (the "
                           "two tensors must have the same dtype)")
    xp = get_array_module(input.data)
    b = other.data if isinstance(other, autograd.Tensor) else other
    return autograd.Tensor(xp.isclose(input.data, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether every element of ``input`` is close to ``other``'s (a Python bool)."""
    return bool(isclose(input, other, rtol, atol, equal_nan).data.all())


def equal(input, other):
    """True when both have the same shape and the same values (a Python bool)."""
    if tuple(input.shape) != tuple(other.shape):
        return False
    return bool((input == other).data.all())


def write_out(name, out, compute, operands):
    """``torch.<name>(..., out=out)`` (the Tensors tutorial's ``torch.matmul(a, b, out=y)``):
    the result written into ``out``, which is returned. As torch: refused where autograd would
    have to see through it, ``out`` resized (with torch's warning when it held elements) to
    the result's shape, and a result that cannot be cast to ``out``'s dtype refused."""
    import warnings

    if not isinstance(out, autograd.Tensor):
        raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}")
    if autograd.is_grad_enabled() and (out.requires_grad or any(
            isinstance(t, autograd.Tensor) and t.requires_grad for t in operands)):
        raise RuntimeError(f"{name}(): functions with out=... arguments don't support automatic "
                           "differentiation, but one of the arguments requires grad.")
    result = compute()
    if not isinstance(result, autograd.Tensor):
        raise TypeError(f"{name}(): out= is supported for a single tensor result only; use the "
                        "returned value")
    if result.device != out.device:
        raise RuntimeError(f"{name}(): expected out on {result.device}, like the result, but "
                           f"got out on {out.device}")
    have, want = result.data.dtype, out.data.dtype  # torch's canCast: no complex -> real,
    # float -> integer or number -> bool (int16 -> uint8 is allowed: both integers)
    if category(have) > category(want) or (want.kind == "b" and have.kind != "b"):
        raise RuntimeError(f"result type {result.dtype} can't be cast to the desired output "
                           f"type {out.dtype}")
    if out.shape != result.shape:
        if out.numel():
            warnings.warn(f"An output with one or more elements was resized since it had shape "
                          f"{list(out.shape)}, which does not match the required output shape "
                          f"{list(result.shape)}. This behavior is deprecated, and in a future "
                          "PyTorch release outputs will not be resized unless they have zero "
                          "elements. You can explicitly reuse an out tensor t by resizing it, "
                          "inplace, to zero elements with t.resize_(0).", UserWarning,
                          stacklevel=3)
        xp = get_array_module(out.data)
        out.data = xp.empty(result.shape, dtype=out.data.dtype)
    with autograd.no_grad():
        out.copy_(result)
    return out


TENSOR_METHODS.update({
    "reciprocal": reciprocal, "rsqrt": rsqrt, "square": square, "sin": sin, "cos": cos,
    "tan": tan, "asin": asin, "acos": acos, "atan": atan, "arcsin": asin, "arccos": acos,
    "arctan": atan, "sinh": sinh, "cosh": cosh, "log1p": log1p, "expm1": expm1, "log2": log2,
    "log10": log10, "exp2": exp2, "sign": sign, "floor": floor, "ceil": ceil, "round": round,
    "trunc": trunc, "frac": frac, "neg": neg, "negative": negative, "lerp": lerp,
    "addcmul": addcmul, "addcdiv": addcdiv, "prod": prod, "logsumexp": logsumexp, "norm": norm,
    "amin": amin, "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge,
    "greater": gt, "greater_equal": ge, "less": lt, "less_equal": le, "not_equal": ne,
    "isnan": isnan, "isinf": isinf, "isfinite": isfinite, "logical_not": logical_not,
    "logical_and": logical_and, "logical_or": logical_or, "logical_xor": logical_xor,
    "isclose": isclose, "allclose": allclose, "equal": equal,
})
# minidl.X for each (minidl/__init__.py): the same names as functions, as in torch
FUNCTIONS = dict(TENSOR_METHODS)


# ---- remainders and rounded division (%, //, fmod, div(rounding_mode=...)) ------------------
def _binary_operands(name, input, other):
    """Two tensors (a number becomes a 0-d one) at PyTorch's result type."""
    for what, x in (("input", input), ("other", other)):
        if not (isinstance(x, autograd.Tensor) or _is_number(x)):
            raise TypeError(f"{name}: {what} must be a tensor or a number, got "
                            f"{type(x).__name__}")
    dtype = result_type(input, other)
    if dtype.kind == "c":
        raise ComplexDtypeError(f"{name}: not implemented for complex tensors (got {dtype})")
    xp = _array_module(input, other)
    return _operand(input, dtype, xp), _operand(other, dtype, xp)


class IntegerDivisionByZero(ZeroDivisionError, RuntimeError):
    """An integer ``//``, ``%`` or fmod by zero: PyTorch raises it (as a RuntimeError whose
    message is 'ZeroDivisionError'); NumPy would give 0 with a warning."""


def _check_integer_divisor(name, a, b):
    """A zero divisor is refused where it divides something: an empty result (``x // 0`` of
    an empty tensor, a zero broadcast against an empty dim) divides nothing, as in PyTorch."""
    if b.dtype.kind in "iub" and np.prod(np.broadcast_shapes(a.shape, b.shape)) and \
            bool((b == 0).any()):
        raise IntegerDivisionByZero(f"{name}: integer division by zero (ZeroDivisionError)")


class Remainder(Function):
    """``a - b * floor(a / b)`` (remainder, the sign of b, as Python's %) or ``a - b *
    trunc(a / b)`` (fmod, the sign of a). Gradients: g for a, ``-g * floor(a / b)`` (trunc)
    for b, as PyTorch's."""

    def forward(self, a, b, trunc):
        xp = get_array_module(a)
        if a.dtype == np.bool_:
            raise UnsupportedDtypeError(f"{'fmod' if trunc else 'remainder'}: not implemented "
                                        "for bool tensors (PyTorch refuses them too)")
        _check_integer_divisor("fmod" if trunc else "remainder", a, b)
        self.trunc = trunc
        self.save_for_backward(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.fmod(a, b) if trunc else xp.mod(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(g)
        with np.errstate(divide="ignore", invalid="ignore"):  # floor: PyTorch's a // b
            q = xp.trunc(a / b) if self.trunc else _floor_divide_float(xp, a, b)
        return g, (-g * q).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        a, b = (t.data for t in self.inputs)
        xp = get_array_module(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = xp.trunc(a / b) if self.trunc else _floor_divide_float(xp, a, b)  # constant
        return g, -g * constant(q.astype(g.data.dtype, copy=False))


def _floor_divide_float(xp, a, b):
    """PyTorch's float floor division, from fmod as Python's ``//``: ``inf // 2`` is NaN and
    ``-1 // inf`` is -1 (floor(a / b) would give inf and -0); by zero, IEEE's a / b."""
    mod = xp.fmod(a, b)
    div = (a - mod) / b
    div = xp.where((mod != 0) & ((b < 0) != (mod < 0)), div - 1, div)
    floordiv = xp.floor(div)
    floordiv = xp.where(div - floordiv > 0.5, floordiv + 1, floordiv)
    quotient = a / b
    floordiv = xp.where(div == 0, xp.copysign(xp.zeros_like(div), quotient), floordiv)
    return xp.where(b == 0, quotient, floordiv).astype(a.dtype, copy=False)


class DivRounded(Function):
    """``a / b`` rounded down (floor) or toward zero (trunc); a zero gradient, as PyTorch's
    div with a rounding mode."""

    def forward(self, a, b, trunc):
        xp = get_array_module(a)
        if a.dtype == np.bool_:
            raise UnsupportedDtypeError("div with a rounding mode (//): not implemented for "
                                        "bool tensors (PyTorch refuses them too)")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # int8 -128 // -1
            if a.dtype.kind in "iub":
                _check_integer_divisor("div", a, b)
                q = xp.floor_divide(a, b)
                if trunc:  # floor and trunc differ where the signs differ and it is not exact
                    q = xp.where((xp.mod(a, b) != 0) & ((a < 0) != (b < 0)), q + 1, q)
                return q
            return xp.trunc(a / b) if trunc else _floor_divide_float(xp, a, b)

    def backward(self, g):
        zero = get_array_module(g).zeros_like(g)
        return zero, zero

    def graph_backward(self, g, out):
        zero = Fill.apply(g, value=0)
        return zero, zero


def _in_opmath(input, other, compute):
    """``compute(input, other)`` in float32, rounded back, where a float16/bfloat16 tensor
    meets a Python number that its dtype cannot hold exactly (as PyTorch's division kernels
    take the number as a float32: bfloat16 3008 // 0.3 is 10026 rounded, not 3008 // 0.30078;
    its remainder takes the number in the tensor's dtype); None where that is not the case."""
    for t, n in ((input, other), (other, input)):
        if isinstance(t, autograd.Tensor) and type(n) in (int, float) and \
                t.data.dtype.itemsize == 2 and is_floating(t.data.dtype):
            with np.errstate(over="ignore"):
                held = float(t.data.dtype.type(n))
            if held != n and n == n:
                wide = Cast.apply(t, dtype=np.dtype(np.float32))
                out = compute(wide, n) if t is input else compute(n, wide)
                return Cast.apply(out, dtype=t.data.dtype)
    return None


def remainder(input, other):
    """Python's modulus (the result has the sign of ``other``): ``input % other``."""
    a, b = _binary_operands("remainder", input, other)
    refuse_unsigned(a.data.dtype, "remainder_cpu")
    return Remainder.apply(a, b, trunc=False)


def fmod(input, other):
    """C's fmod (the result has the sign of ``input``)."""
    a, b = _binary_operands("fmod", input, other)
    refuse_unsigned(a.data.dtype, "fmod_cpu")
    return Remainder.apply(a, b, trunc=True)


def div(input, other, *, rounding_mode=None):
    """``input / other``; ``rounding_mode`` 'floor' or 'trunc' rounds the quotient (integers
    stay integers), None is true division."""
    if rounding_mode is None:
        return input / other if isinstance(input, autograd.Tensor) else other.__rtruediv__(input)
    if rounding_mode not in ("floor", "trunc"):
        raise ValueError(f"div: rounding_mode must be None, 'floor' or 'trunc', got "
                         f"{rounding_mode!r}")
    wide = _in_opmath(input, other, lambda x, y: div(x, y, rounding_mode=rounding_mode))
    if wide is not None:
        return wide
    a, b = _binary_operands("div", input, other)
    if a.data.dtype.kind == "u":  # (the kernel's name formatted only then, not per call)
        refuse_unsigned(a.data.dtype, f"div_{rounding_mode}_cpu")
    return DivRounded.apply(a, b, trunc=rounding_mode == "trunc")


def floor_divide(input, other):
    """``input // other``: the quotient rounded down (zero gradient)."""
    return div(input, other, rounding_mode="floor")


def _reflected(fn):
    def op(self, other):
        return fn(other, self)
    return op


TENSOR_METHODS.update({
    "remainder": remainder, "fmod": fmod, "div": div, "divide": div,
    "floor_divide": floor_divide,
    "__mod__": remainder, "__rmod__": _reflected(remainder),
    "__floordiv__": floor_divide, "__rfloordiv__": _reflected(floor_divide),
})
FUNCTIONS.update({"remainder": remainder, "fmod": fmod, "div": div, "divide": div,
                  "floor_divide": floor_divide})


# ---- more reductions and elementwise ops ---------------------------------------------------
def clamp_min(input, min):  # noqa: A002  (PyTorch's argument name)
    return clamp(input, min=min)


def clamp_max(input, max):  # noqa: A002
    return clamp(input, max=max)


def count_nonzero(input, dim=None):
    """The number of nonzero elements (int64), over all dims or over ``dim``."""
    refuse_unsigned(input.data.dtype, "nonzero_count_cpu")
    return autograd.Tensor(input.data != 0).sum(dim=dim)


class NanToNum(Function):
    """NaN, +inf and -inf replaced by numbers; the gradient passes where x was finite."""

    def forward(self, a, nan, posinf, neginf):
        xp = get_array_module(a)
        self.save_for_backward(a)
        if a.dtype.kind != "f":  # bfloat16 (ml_dtypes), which NumPy's nan_to_num leaves alone
            with np.errstate(over="ignore"):
                return xp.where(a != a, a.dtype.type(nan), xp.where(
                    a == xp.inf, a.dtype.type(posinf), xp.where(
                        a == -xp.inf, a.dtype.type(neginf), a))).astype(a.dtype, copy=False)
        return xp.nan_to_num(a, nan=nan, posinf=posinf, neginf=neginf)

    def backward(self, g):
        (a,) = self.saved
        xp = get_array_module(g)
        return xp.where(xp.isfinite(a), g, 0).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        return keep_where(get_array_module(g.data).isfinite(self.inputs[0].data), g)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    """NaN as ``nan``, infinities as ``posinf``/``neginf`` (the dtype's largest and smallest
    finite numbers when None); a complex tensor's parts each, as torch's (which, as here, has
    no gradient for it)."""
    a = input.data
    if a.dtype.kind == "c":
        if input.requires_grad and autograd._grad_enabled:
            raise autograd.ComplexGradError("nan_to_num does not support automatic "
                                            "differentiation for outputs with complex dtype.")
        info = np.finfo(a.dtype)
        out = get_array_module(a).nan_to_num(
            a, nan=nan, posinf=float(info.max) if posinf is None else posinf,
            neginf=float(info.min) if neginf is None else neginf)
        return autograd.Tensor(out.astype(a.dtype, copy=False))
    if not is_floating(input.data.dtype):
        return autograd.Tensor(input.data.copy())
    if input.data.dtype.kind != "f":  # bfloat16: its own largest finite number, 0x7F7F
        largest = float(np.array(0x7F7F, np.uint16).view(input.data.dtype))
    else:
        largest = float(np.finfo(input.data.dtype).max)
    posinf = largest if posinf is None else posinf
    neginf = -largest if neginf is None else neginf
    return NanToNum.apply(input, nan=nan, posinf=posinf, neginf=neginf)


def nansum(input, dim=None, keepdim=False, *, dtype=None):
    """The sum with NaNs counted as 0 (their gradient is 0)."""
    x = input if dtype is None else input.to(as_dtype(dtype))
    if x.data.dtype.kind == "c":  # as torch's (its NaNs would be summed, not skipped)
        raise ComplexDtypeError(f"nansum: not implemented for complex tensors (got dtype "
                                f"{x.data.dtype})")
    if is_floating(x.data.dtype):
        x = where(isnan(x), 0.0, x)
    return x.sum(dim=dim, keepdim=keepdim)


def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    """The mean of the elements that are not NaN."""
    x = input if dtype is None else input.to(as_dtype(dtype))
    if not is_floating(x.data.dtype):
        raise TypeError(f"nanmean: needs a floating-point tensor, got dtype {x.data.dtype}")
    count = logical_not(isnan(x)).sum(dim=dim, keepdim=keepdim)
    return nansum(x, dim, keepdim) / count.to(x.data.dtype)


class XLogY(Function):
    """``x * log(y)``, 0 where x == 0 (unless y is NaN), as torch.xlogy."""

    def forward(self, x, y):
        xp = get_array_module(x)
        self.save_for_backward(x, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.where((x == 0) & ~xp.isnan(y), 0, x * xp.log(y)).astype(x.dtype)

    def backward(self, g):
        x, y = self.saved
        xp = get_array_module(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            # xlogy(g, y), and 0 where x == 0 and y <= 0 (log y is -inf or NaN there), as
            # torch's derivative
            gx = xp.where(((g == 0) & ~xp.isnan(y)) | ((x == 0) & (y <= 0)), 0, g * xp.log(y))
            gy = g * x / y
        return gx.astype(g.dtype, copy=False), gy.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x, y = self.inputs
        skip = constant((x.data == 0) & (y.data <= 0))
        return where(skip, 0.0, g * y.log()), g * x / y


def xlogy(input, other):
    for what, x in (("input", input), ("other", other)):
        if not (isinstance(x, autograd.Tensor) or _is_number(x)):
            raise TypeError(f"xlogy: {what} must be a tensor or a number, got {type(x).__name__}")
    dtype = result_type(input, other)
    if dtype.kind == "c":
        raise ComplexDtypeError(f"xlogy: not implemented for complex tensors (got {dtype})")
    if not is_floating(dtype):  # integers computed in the default dtype (a number not wrapped)
        dtype = default_float()
    xp = _array_module(input, other)
    a, b = _operand(input, dtype, xp), _operand(other, dtype, xp)
    return XLogY.apply(a, b)


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(std, mean) over ``dim``, as torch.std_mean: with ``correction``, or torch's older
    overloads ``std_mean(x, dim, unbiased, keepdim)`` and ``std_mean(x, unbiased)``."""
    return _spread_and_mean("std_mean", input, dim, unbiased, keepdim, correction)


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(var, mean) over ``dim``, as torch.var_mean (the overloads of std_mean)."""
    return _spread_and_mean("var_mean", input, dim, unbiased, keepdim, correction)


def _spread_and_mean(name, input, dim, unbiased, keepdim, correction):
    if isinstance(dim, bool):  # var_mean(x, False): the unbiased overload
        dim, unbiased = None, dim
    return (_var(input, dim, unbiased, keepdim, correction, name=name),
            input.mean(dim, keepdim=keepdim))


TENSOR_METHODS.update({
    "clamp_min": clamp_min, "clamp_max": clamp_max, "count_nonzero": count_nonzero,
    "nan_to_num": nan_to_num, "nansum": nansum, "nanmean": nanmean, "xlogy": xlogy,
    "is_floating_point": lambda self: is_floating(self.data.dtype),
})
FUNCTIONS.update({
    "clamp_min": clamp_min, "clamp_max": clamp_max, "count_nonzero": count_nonzero,
    "nan_to_num": nan_to_num, "nansum": nansum, "nanmean": nanmean, "xlogy": xlogy,
    "std_mean": std_mean, "var_mean": var_mean,
    "is_floating_point": TENSOR_METHODS["is_floating_point"],
})


# ---- two-argument elementwise functions: atan2, hypot, logaddexp, logaddexp2 ----------------
class DtypeNotImplemented(NotImplementedError, TypeError):
    """An op PyTorch has no kernel for at this dtype (hypot of int64 tensors): a
    NotImplementedError as PyTorch raises it, and a TypeError as minidl's other dtype errors."""


def _wide(a):
    """16-bit floats compute in float32 (NumPy has no bfloat16 hypot or log1p)."""
    wide = accumulation_dtype(a)
    return a if wide is None else a.astype(wide)


def _logaddexp_arrays(xp, a, b):
    """``log(exp(a) + exp(b))`` without overflow; equal infinities give themselves (the
    difference of two -inf would be NaN)."""
    m = xp.maximum(a, b)
    with np.errstate(invalid="ignore", over="ignore"):
        out = m + xp.log1p(xp.exp(-abs(a - b)))
        return xp.where((a == b) & xp.isinf(a), a, out)


class Atan2(Function):
    """The angle of (b, a): ``atan2(a, b)``. Gradients ``b / r2`` and ``-a / r2`` with
    r2 = a^2 + b^2, 0 at the origin (PyTorch's)."""

    def forward(self, a, b):
        xp = get_array_module(a)
        self.save_for_backward(a, b)
        return xp.arctan2(_wide(a), _wide(b)).astype(a.dtype, copy=False)

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(g)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r2 = a * a + b * b
            inv = xp.where(r2 == 0, 0, 1 / r2)
            ga, gb = g * b * inv, g * -a * inv
        return ga.astype(g.dtype, copy=False), gb.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        a, b = self.inputs
        r2 = a * a + b * b
        zero = constant(r2.data == 0)
        inv = where(zero, 0.0, 1 / where(zero, 1.0, r2))
        return g * b * inv, -g * a * inv


class Hypot(Function):
    """``sqrt(a^2 + b^2)`` without overflow; gradients ``a / y`` and ``b / y`` (NaN at the
    origin, as PyTorch's)."""

    def forward(self, a, b):
        xp = get_array_module(a)
        y = xp.hypot(_wide(a), _wide(b)).astype(a.dtype, copy=False)
        self.save_for_backward(a, b, y)
        return y

    def backward(self, g):
        a, b, y = self.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            return (g * a / y).astype(g.dtype, copy=False), (g * b / y).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        a, b = self.inputs
        return g * a / out, g * b / out


class LogAddExp(Function):
    """``log(exp(a) + exp(b))`` (base 2 with ``base2``: ``log2(2^a + 2^b)``), stable; the
    gradients ``1 / (1 + e^(b - a))`` and ``1 / (1 + e^(a - b))``."""

    def forward(self, a, b, base2):
        xp = get_array_module(a)
        self.base2 = base2
        self.save_for_backward(a, b)
        aw, bw = _wide(a), _wide(b)
        if base2:
            y = _logaddexp_arrays(xp, aw * _LN2, bw * _LN2) / _LN2
        else:
            y = _logaddexp_arrays(xp, aw, bw)
        return y.astype(a.dtype, copy=False)

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(g)
        power = xp.exp2 if self.base2 else xp.exp
        with np.errstate(invalid="ignore", over="ignore"):
            ga = g / (1 + power(b - a))
            gb = g / (1 + power(a - b))
        return ga.astype(g.dtype, copy=False), gb.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        # 1 / (1 + e^(b - a)) = sigmoid(a - b), which never overflows (2^x: e^(x ln 2))
        a, b = self.inputs
        diff = (a - b) * _LN2 if self.base2 else a - b
        return g * Sigmoid.apply(diff), g * Sigmoid.apply(-diff)


def _two_tensors(name, input, other, integers_in_float32):
    """Both tensors at PyTorch's result type; other must be a tensor, as PyTorch's signature
    has it. Integers compute in float32 (atan2) or are refused (hypot, logaddexp)."""
    for what, x in (("input", input), ("other", other)):
        if not isinstance(x, autograd.Tensor):
            raise TypeError(f"{name}(): argument '{what}' must be a Tensor, not "
                            f"{type(x).__name__}")
    if input.device != other.device:
        raise ValueError(f"{name}: tensors on different devices, {input.device} and "
                         f"{other.device}; move them with .to('{input.device}') first")
    dtype = result_type(input, other)
    if dtype.kind == "c":
        raise ComplexDtypeError(f"{name}: not implemented for complex tensors (got {dtype})")
    if not is_floating(dtype):
        if not integers_in_float32:
            raise DtypeNotImplemented(f"{name}: not implemented for {dtype} tensors (PyTorch "
                                      "has no kernel for them either); pass floating-point ones")
        dtype = default_float()
    try:
        np.broadcast_shapes(input.shape, other.shape)
    except ValueError:
        raise ValueError(f"{name}: shapes do not broadcast: input {tuple(input.shape)}, other "
                         f"{tuple(other.shape)}") from None
    xp = _array_module(input, other)
    return _operand(input, dtype, xp), _operand(other, dtype, xp)


def atan2(input, other):
    """The elementwise angle of the point (other, input) in radians, in [-pi, pi]; integer
    tensors compute in float32, as PyTorch."""
    return Atan2.apply(*_two_tensors("atan2", input, other, True))


def hypot(input, other):
    """``sqrt(input^2 + other^2)`` elementwise, without overflow (floating-point tensors)."""
    return Hypot.apply(*_two_tensors("hypot", input, other, False))


def logaddexp(input, other):
    """``log(exp(input) + exp(other))``, computed stably (floating-point tensors)."""
    return LogAddExp.apply(*_two_tensors("logaddexp", input, other, False), base2=False)


def logaddexp2(input, other):
    """``log2(2^input + 2^other)``, computed stably (floating-point tensors)."""
    return LogAddExp.apply(*_two_tensors("logaddexp2", input, other, False), base2=True)


arctan2 = atan2


# ---- logcumsumexp ----------------------------------------------------------------------------
def _along(d, ndim, start, stop):
    return (slice(None),) * d + (slice(start, stop),) + (slice(None),) * (ndim - d - 1)


def _logcumsumexp_array(xp, a, d):
    """Running log-sum-exp along axis d by doubling (Hillis-Steele): log2(n) steps, each a
    stable logaddexp of the array and itself shifted by 2^k, so no sum under- or overflows."""
    y = a.copy()
    n, shift = a.shape[d], 1
    while shift < n:
        hi, lo = _along(d, a.ndim, shift, None), _along(d, a.ndim, 0, n - shift)
        y[hi] = _logaddexp_arrays(xp, y[hi], y[lo])
        shift *= 2
    return y


class LogCumSumExp(Function):
    """``log(cumsum(exp(x)))`` along ``dim``, stable. The gradient ``exp(x_j) * sum_{k>=j}
    g_k exp(-y_k)`` is summed in log space, separately for the positive and the negative g
    (so neither part over- or underflows); -inf and +inf give PyTorch's values."""

    def forward(self, a, dim):
        xp = get_array_module(a)
        self.dim = dim
        aw = _wide(a)
        y = _logcumsumexp_array(xp, aw, dim)
        self.save_for_backward(aw, y)
        return y.astype(a.dtype, copy=False)

    def backward(self, g):
        a, y = self.saved
        xp = get_array_module(g)
        d = self.dim
        gw = g.astype(a.dtype, copy=False)
        lowest = float(np.finfo(a.dtype).min)

        def part(mask):
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                log_g = xp.where(mask, xp.log(abs(gw)), lowest)
                rev = xp.flip(_logcumsumexp_array(xp, xp.flip(log_g - y, axis=d), d), axis=d)
                return xp.exp(rev + a)

        return (part(gw > 0) - part(gw < 0)).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        # exp(x_j) sum_{k >= j} g_k exp(-y_k), shifted by the largest y (a constant that
        # cancels): exp(x - c) <= 1, and exp(c - y) overflows only where the running sums
        # span more than the dtype's exponent range (backward's log-space sums do not)
        x, d = self.inputs[0], self.dim
        c = constant(out.data.max(axis=d, keepdims=True)) if out.numel() else 0.0
        return Exp.apply(x - c) * _reverse_cumsum_graph(g * Exp.apply(c - out), d)


def logcumsumexp(input, dim):
    """``log(cumsum(exp(input), dim))`` computed stably (floating-point tensors)."""
    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"logcumsumexp(): argument 'input' must be a Tensor, not "
                        f"{type(input).__name__}")
    d = wrap_dim(dim, input.ndim, "logcumsumexp")
    if input.data.dtype.kind == "c":  # torch has a kernel for these; minidl not yet
        raise ComplexDtypeError(f"logcumsumexp: not implemented for complex tensors (got dtype "
                                f"{input.data.dtype})")
    if not is_floating(input.data.dtype):
        raise DtypeNotImplemented(f"logcumsumexp: not implemented for {input.data.dtype} "
                                  "tensors (PyTorch has no kernel for them either)")
    return _cumulative(LogCumSumExp, input, d)


TENSOR_METHODS.update({"atan2": atan2, "arctan2": arctan2, "hypot": hypot,
                       "logaddexp": logaddexp, "logaddexp2": logaddexp2,
                       "logcumsumexp": logcumsumexp})
FUNCTIONS.update({"atan2": atan2, "arctan2": arctan2, "hypot": hypot, "logaddexp": logaddexp,
                  "logaddexp2": logaddexp2, "logcumsumexp": logcumsumexp})


# ---- counting: bincount, histc (outside the graph) ----------------------------------------------
class CountArgumentError(ValueError, RuntimeError):
    """An argument value PyTorch refuses with a RuntimeError (negative bins, a minlength < 0):
    a ValueError, as minidl's other argument errors, and a RuntimeError, as PyTorch's."""


def bincount(input, weights=None, minlength=0):
    """How often each value 0, 1, ... occurs in a 1-d tensor of non-negative integers (int64),
    or the sum of ``weights`` per value: float32 weights give float32 sums, other weights
    float64, as in PyTorch. At least ``minlength`` bins. Not differentiable."""
    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"bincount(): argument 'input' must be a Tensor, not "
                        f"{type(input).__name__}")
    data = input.data
    if data.dtype.kind not in "iu":
        raise DtypeNotImplemented(f"bincount: not implemented for {data.dtype} tensors; it "
                                  "counts integers")
    if isinstance(minlength, bool) or not isinstance(minlength, (int, np.integer)):
        raise TypeError(f"bincount: minlength must be an int, got {type(minlength).__name__}")
    if minlength < 0:
        raise CountArgumentError(f"bincount: minlength should be >= 0, got {minlength}")
    xp = get_array_module(data)
    if data.ndim != 1 or (data.size and bool((data < 0).any())):
        raise CountArgumentError(f"bincount: only supports 1-d non-negative integral inputs, "
                                 f"got shape {tuple(data.shape)}"
                                 + ("" if data.ndim != 1 else " with negative values"))
    w = None
    if weights is not None:
        if not isinstance(weights, autograd.Tensor):
            raise TypeError(f"bincount: weights must be a Tensor, got {type(weights).__name__}")
        if weights.ndim != 1 or weights.shape[0] != data.shape[0]:
            raise CountArgumentError(f"bincount: weights should be 1-d and have the same length "
                                     f"as input, got shapes {tuple(weights.shape)} and "
                                     f"{tuple(data.shape)}")
        out_dtype = np.dtype(np.float32 if weights.data.dtype == np.float32 else np.float64)
        w = weights.data.astype(np.float64 if out_dtype == np.float64 else np.float32)
    counts = xp.bincount(data.astype(np.int64, copy=False), weights=w, minlength=int(minlength))
    if w is None or data.size == 0:  # PyTorch counts an empty input in int64, weights or not
        return autograd.Tensor(counts.astype(np.int64, copy=False))
    return autograd.Tensor(counts.astype(out_dtype, copy=False))


def histc(input, bins=100, min=0, max=0):  # noqa: A002  (PyTorch's argument names)
    """A histogram of ``bins`` equal-width bins over [min, max] (the last bin includes max;
    values outside are left out). min == max takes the data's range (one unit either side
    when that is a single value). In the input's dtype; not differentiable."""
    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"histc(): argument 'input' must be a Tensor, not {type(input).__name__}")
    if not is_floating(input.data.dtype):
        raise DtypeNotImplemented(f"histc: not implemented for {input.data.dtype} tensors; pass "
                                  "a floating-point one")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
        raise TypeError(f"histc(): argument 'bins' must be int, not {type(bins).__name__}")
    if bins <= 0:
        raise CountArgumentError(f"histc: bins must be > 0, but got {bins}")
    lo, hi = float(min), float(max)
    if lo > hi:
        raise CountArgumentError(f"histc: max must be larger than min, got min={min}, max={max}")
    data = input.data.reshape(-1)
    xp = get_array_module(data)
    wide = _wide(data)
    if lo == hi:
        if data.size:
            lo, hi = (float(v) for v in xp.stack([wide.min(), wide.max()]).tolist())
        if lo == hi:
            lo, hi = lo - 1, hi + 1
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise CountArgumentError(f"histc: range of [{lo}, {hi}] is not finite")
    keep = (wide >= lo) & (wide <= hi)  # NaN falls outside
    inside = wide[keep]
    with np.errstate(invalid="ignore", over="ignore"):
        pos = ((inside - wide.dtype.type(lo)) * bins / wide.dtype.type(hi - lo)).astype(np.int64)
    pos = xp.minimum(xp.maximum(pos, 0), bins - 1)  # max itself goes in the last bin
    counts = xp.bincount(pos, minlength=int(bins))
    return autograd.Tensor(counts.astype(input.data.dtype))


# ---- trapezoid: the trapezoidal rule (differentiable) ------------------------------------------
def _slices(y, d):
    n = y.shape[d]
    lead = (slice(None),) * d
    return y[lead + (slice(1, None),)], y[lead + (slice(0, n - 1),)]


def _trapezoid_parts(name, y, x, dx, dim):
    if not isinstance(y, autograd.Tensor):
        raise TypeError(f"{name}(): argument 'y' must be a Tensor, not {type(y).__name__}")
    if y.ndim == 0:
        raise autograd.DimError(f"{name}: dimension specified as {dim} but tensor has no "
                                "dimensions")
    d = wrap_dim(dim, y.ndim, name)
    if x is not None and dx is not None:
        raise TypeError(f"{name}: pass x or dx, not both")
    y = _float_input(y, name)
    if x is None:
        return y, d, (1.0 if dx is None else dx), None
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}: x must be a Tensor, got {type(x).__name__}")
    x = _float_input(x, name)
    if x.ndim == 1:
        if x.shape[0] != y.shape[d]:
            raise CountArgumentError(f"{name}: there must be one `x` value for each sample "
                                     f"point: x has {x.shape[0]}, y has {y.shape[d]} along dim "
                                     f"{dim}")
        shape = [1] * y.ndim
        shape[d] = -1
        x = x.reshape(shape)
    elif x.ndim < y.ndim:  # x's shape padded with leading 1s, as PyTorch's
        x = x.reshape((1,) * (y.ndim - x.ndim) + tuple(x.shape))
    hi, lo = _slices(x, d)
    return y, d, None, hi - lo


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """The integral of ``y`` along ``dim`` by the trapezoidal rule, at the points ``x`` (a 1-d
    tensor or one that broadcasts with y) or spaced ``dx`` apart (1 by default)."""
    y, d, dx, widths = _trapezoid_parts("trapezoid", y, x, dx, dim)
    if y.shape[d] == 0:
        return y.sum(dim=d)
    hi, lo = _slices(y, d)
    if widths is None:
        return (hi + lo).sum(dim=d) * (dx / 2)
    return (widths * (hi + lo)).sum(dim=d) / 2


def trapz(y, x=None, *, dx=None, dim=-1):
    """The old name of trapezoid."""
    return trapezoid(y, x, dx=dx, dim=dim)


def cumulative_trapezoid(y, x=None, *, dx=None, dim=-1):
    """The running trapezoidal integral along ``dim`` (one fewer element there)."""
    y, d, dx, widths = _trapezoid_parts("cumulative_trapezoid", y, x, dx, dim)
    hi, lo = _slices(y, d) if y.shape[d] else (y, y)
    pieces = (hi + lo) * (dx / 2) if widths is None else widths * (hi + lo) / 2
    return cumsum(pieces, d)


TENSOR_METHODS.update({"bincount": bincount, "histc": histc})
FUNCTIONS.update({"bincount": bincount, "histc": histc, "trapezoid": trapezoid, "trapz": trapz,
                  "cumulative_trapezoid": cumulative_trapezoid})


# ---- isin, angle, and the bitwise_* function forms (shifts and renorm: pointwise.py) ------------------------------------
def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """Whether each element of ``elements`` is in ``test_elements`` (tensors or numbers)."""
    a = elements.data if isinstance(elements, autograd.Tensor) else np.asarray(elements)
    b = test_elements.data if isinstance(test_elements, autograd.Tensor) else \
        np.asarray(test_elements)
    xp = get_array_module(a, b)
    return autograd.Tensor(xp.isin(a, b, assume_unique=assume_unique, invert=invert))


def angle(input):
    """The angle of each element: of a complex number its argument (complex_ops.Angle), of a
    real one pi for negatives, 0 otherwise (+inf included), NaN kept (float result); no
    gradient flows through a real angle."""
    if input.data.dtype.kind == "c":
        from .complex_ops import complex_angle

        return complex_angle(input)
    x = _float_input(input)
    return where(x < 0, np.pi, x.clamp(-1, 1) * 0)  # (clamped: inf * 0 would be NaN)


TENSOR_METHODS.update({"isin": isin, "angle": angle})
FUNCTIONS.update({
    "isin": isin, "angle": angle,
    "bitwise_and": lambda input, other: input & other,
    "bitwise_or": lambda input, other: input | other,
    "bitwise_xor": lambda input, other: input ^ other,
    "bitwise_not": lambda input: ~input,
})
