"""More activations, as PyTorch's: relu6, hardtanh, softplus, softsign, mish, hardswish,
hardsigmoid, prelu, selu, celu, glu, tanhshrink, threshold, softmin, logsigmoid, hardshrink,
softshrink.

Each elementwise one is a Function whose ``f`` and derivative ``df`` are written side by side
on the array module; 16-bit inputs are computed in float32 and rounded (PyTorch's CPU
kernels do the same). Only x is kept for backward. The derivatives at the kinks are
PyTorch's (hardtanh's is 0 at its bounds, hardswish's 0 at -3 and 1 at 3).

For double backward each states its derivative again as recorded ops on the input Tensor
(``graph_df``), or says that it is piecewise constant (``constant_df``: its ``df`` array then
serves as a constant factor, exact wherever the derivative exists).
"""
from __future__ import annotations

import functools

import numpy as np

from ...backend import get_array_module
from ...functional import Softplus as _SoftplusOp
from ...functional import _float_input, _clip_like_kernels, _opmath, _softmax_dim, softmax
from ...ops import Sigmoid, Where, constant, keep_where, reduction_axes, stable_sigmoid
from ...tensor import Function, Tensor, apply_in_place


class Pointwise(Function):
    """y = f(x, **params) elementwise; backward g * df(x, **params). For double backward a
    subclass gives ``graph_df(x, **params)`` (the derivative as recorded ops on the Tensor x)
    or sets ``constant_df`` (df piecewise constant); otherwise it is first-order only."""

    constant_df = False
    graph_df = None

    def forward(self, x, **params):
        self.params = params
        self.save_for_backward(x)
        xp = get_array_module(x)
        return self.f(xp, _opmath(x), **params).astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved
        xp = get_array_module(g)
        d = self.df(xp, _opmath(x), **self.params)
        if not self.constant_df:
            return (_opmath(g) * d).astype(g.dtype, copy=False)
        with np.errstate(invalid="ignore"):  # a select, as torch's kernels: 0 (not g * 0)
            gx = _opmath(g) * d                # where df is 0, for an inf or NaN g too
        return xp.where(d == 0, xp.zeros((), gx.dtype), gx).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        if self.constant_df:
            xp = get_array_module(x.data)
            d = self.df(xp, _opmath(x.data), **self.params)
            return keep_where(d != 0, g * constant(d.astype(g.data.dtype, copy=False)))
        if self.graph_df is None:
            return super().graph_backward(g, out)
        return g * self.graph_df(x, **self.params)


def _full_like_scalar(x, value):
    """A 0-d constant Tensor of x's dtype on x's device."""
    return constant(get_array_module(x.data).full((), value, dtype=x.data.dtype))


def _softplus(xp, z):
    """log(1 + e^z) without overflow."""
    return xp.maximum(z, 0) + xp.log1p(xp.exp(-abs(z)))


class Hardtanh(Pointwise):
    constant_df = True

    def forward(self, x, min_val, max_val):
        k = _clip_like_kernels(x)
        if k is None:
            return super().forward(x, min_val=min_val, max_val=max_val)
        self.params = dict(min_val=min_val, max_val=max_val)
        self.save_for_backward(x)
        return k.hardtanh_forward(x, min_val, max_val)  # one pass (ReLU6 in MobileNets)

    def backward(self, g):
        (x,) = self.saved
        k = _clip_like_kernels(g, x)
        if k is None:
            return super().backward(g)
        return k.hardtanh_backward(g, x, self.params["min_val"], self.params["max_val"])

    @staticmethod
    def f(xp, x, min_val, max_val):
        return xp.clip(x, min_val, max_val)

    @staticmethod
    def df(xp, x, min_val, max_val):
        return ((x > min_val) & (x < max_val)).astype(x.dtype)  # 0 at NaN, as torch's


class Softplus(Pointwise):
    @staticmethod
    def f(xp, x, beta, threshold):
        z = x * beta
        return xp.where(z > threshold, x, _softplus(xp, z) / beta)

    @staticmethod
    def df(xp, x, beta, threshold):
        z = x * beta
        return xp.where(z > threshold, 1, stable_sigmoid(z)).astype(x.dtype, copy=False)

    @staticmethod
    def graph_df(x, beta, threshold):
        z = x * beta
        return Where.apply(constant(z.data > threshold), _full_like_scalar(x, 1),
                           Sigmoid.apply(z))


class Softsign(Pointwise):
    @staticmethod
    def f(xp, x):
        return x / (1 + abs(x))

    @staticmethod
    def df(xp, x):
        return 1 / (1 + abs(x)) ** 2

    @staticmethod
    def graph_df(x):
        return (1 + x.abs()) ** -2


class Mish(Pointwise):
    @staticmethod
    def f(xp, x):
        return x * xp.tanh(_softplus(xp, x))

    @staticmethod
    def df(xp, x):
        t = xp.tanh(_softplus(xp, x))
        return t + x * stable_sigmoid(x) * (1 - t * t)

    @staticmethod
    def graph_df(x):
        t = _SoftplusOp.apply(x).tanh()
        return t + x * Sigmoid.apply(x) * (1 - t * t)


class Hardswish(Pointwise):
    @staticmethod
    def f(xp, x):
        return x * xp.clip(x + 3, 0, 6) / 6

    @staticmethod
    def df(xp, x):
        # torch 2.13's: 0 up to -3 and 1 from 3 on, both bounds included
        return xp.where(x <= -3, 0, xp.where(x < 3, x / 3 + 0.5, 1)).astype(x.dtype, copy=False)

    @staticmethod
    def graph_df(x):
        outer = constant((x.data >= 3).astype(x.data.dtype))
        return Where.apply(constant((x.data > -3) & (x.data < 3)), x / 3 + 0.5, outer)


class Hardsigmoid(Pointwise):
    constant_df = True

    @staticmethod
    def f(xp, x):
        return xp.clip(x + 3, 0, 6) / 6

    @staticmethod
    def df(xp, x):
        return ((x > -3) & (x < 3)).astype(x.dtype) / 6


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class CELU(Pointwise):
    """scale * (max(0, x) + min(0, alpha (exp(x / inner) - 1))): CELU with inner = alpha and
    scale = 1, SELU with inner = 1 and PyTorch's alpha and scale."""

    @staticmethod
    def f(xp, x, alpha, scale, inner):
        return scale * xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0) / inner))

    @staticmethod
    def df(xp, x, alpha, scale, inner):
        # NaN takes the positive side, as in PyTorch's elu_backward (x <= 0 picks the other)
        return scale * xp.where(x <= 0, (alpha / inner) * xp.exp(xp.minimum(x, 0) / inner), 1)

    @staticmethod
    def graph_df(x, alpha, scale, inner):
        below = (x.clamp(max=0) / inner).exp() * (scale * alpha / inner)
        return Where.apply(constant(~(x.data <= 0)), _full_like_scalar(x, scale), below)


class Tanhshrink(Pointwise):
    @staticmethod
    def f(xp, x):
        return x - xp.tanh(x)

    @staticmethod
    def df(xp, x):
        return xp.tanh(x) ** 2

    @staticmethod
    def graph_df(x):
        t = x.tanh()
        return t * t


class Threshold(Pointwise):
    constant_df = True

    @staticmethod
    def f(xp, x, threshold, value):
        return xp.where(x <= threshold, value, x)  # NaN stays NaN, as in PyTorch

    @staticmethod
    def df(xp, x, threshold, value):
        return (~(x <= threshold)).astype(x.dtype)


class LogSigmoid(Pointwise):
    @staticmethod
    def f(xp, x):
        return xp.minimum(x, 0) - xp.log1p(xp.exp(-abs(x)))

    @staticmethod
    def df(xp, x):
        return stable_sigmoid(-x)

    @staticmethod
    def graph_df(x):
        return Sigmoid.apply(-x)


class Hardshrink(Pointwise):
    constant_df = True

    @staticmethod
    def f(xp, x, lambd):
        return xp.where(abs(x) <= lambd, 0, x)  # NaN stays NaN, as in PyTorch

    @staticmethod
    def df(xp, x, lambd):
        return (abs(x) > lambd).astype(x.dtype)  # 0 at NaN, as PyTorch's


class Softshrink(Pointwise):
    constant_df = True

    @staticmethod
    def f(xp, x, lambd):
        return xp.where(x > lambd, x - lambd, xp.where(x >= -lambd, 0, x + lambd))  # NaN: NaN

    @staticmethod
    def df(xp, x, lambd):
        return (abs(x) > lambd).astype(x.dtype)  # 0 at NaN, as PyTorch's


def _pointwise(name, fn_class, input, inplace=False, **params):
    _float_input(name, input)
    fn = functools.partial(fn_class.apply, **params)
    return apply_in_place(input, fn, name) if inplace else fn(input)


def _number(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise TypeError(f"{what} must be a number, got {v!r}")
    return float(v)


def relu6(input, inplace=False):
    """min(max(0, x), 6)."""
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op("hardtanh", 0.0, 6.0)
    return _pointwise("relu6", Hardtanh, input, inplace, min_val=0.0, max_val=6.0)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """x clipped to [min_val, max_val]."""
    lo, hi = _number(min_val, "hardtanh: min_val"), _number(max_val, "hardtanh: max_val")
    if lo > hi:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val "
                         f"({max_val})")
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op("hardtanh", lo, hi)
    return _pointwise("hardtanh", Hardtanh, input, inplace, min_val=lo, max_val=hi)


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold."""
    return _pointwise("softplus", Softplus, input, beta=_number(beta, "softplus: beta"),
                      threshold=_number(threshold, "softplus: threshold"))


def softsign(input):
    return _pointwise("softsign", Softsign, input)


def mish(input, inplace=False):
    """x * tanh(softplus(x))."""
    return _pointwise("mish", Mish, input, inplace)


def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6."""
    return _pointwise("hardswish", Hardswish, input, inplace)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6."""
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op("hardsigmoid")
    return _pointwise("hardsigmoid", Hardsigmoid, input, inplace)


def selu(input, inplace=False):
    """scale * (max(0, x) + min(0, alpha (exp(x) - 1))) with PyTorch's alpha and scale."""
    return _pointwise("selu", CELU, input, inplace, alpha=_SELU_ALPHA, scale=_SELU_SCALE,
                      inner=1.0)


def celu(input, alpha=1.0, inplace=False):
    """max(0, x) + min(0, alpha (exp(x / alpha) - 1))."""
    alpha = _number(alpha, "celu: alpha")
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0 (ZeroDivisionError in PyTorch)")
    return _pointwise("celu", CELU, input, inplace, alpha=alpha, scale=1.0, inner=alpha)


def tanhshrink(input):
    return _pointwise("tanhshrink", Tanhshrink, input)


def threshold(input, threshold, value, inplace=False):
    """x where x > threshold, ``value`` elsewhere."""
    return _pointwise("threshold", Threshold, input, inplace,
                      threshold=_number(threshold, "threshold: threshold"),
                      value=_number(value, "threshold: value"))


def logsigmoid(input):
    """log(sigmoid(x)), without overflow for any x."""
    return _pointwise("logsigmoid", LogSigmoid, input)


def hardshrink(input, lambd=0.5):
    return _pointwise("hardshrink", Hardshrink, input, lambd=_number(lambd, "hardshrink: lambd"))


def softshrink(input, lambd=0.5):
    lambd = _number(lambd, "softshrink: lambd")
    if lambd < 0:
        raise ValueError(f"softshrink: lambd must be non-negative, got {lambd}")
    return _pointwise("softshrink", Softshrink, input, lambd=lambd)


def glu(input, dim=-1):
    """a * sigmoid(b), a and b the two halves of ``input`` along ``dim``."""
    _float_input("glu", input)
    if input.ndim == 0:
        raise ValueError("glu: does not support scalars (0-D tensors)")
    d = reduction_axes(dim, input.ndim)[0]
    if input.shape[d] % 2:
        raise ValueError(f"glu: halving dimension {dim} must be even, got size "
                         f"{input.shape[d]} (input shape {input.shape})")
    a, b = input.chunk(2, dim=d)
    return a * b.sigmoid()


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """softmax(-input, dim)."""
    if dtype is not None:
        input = input.to(dtype)
    _float_input("softmin", input)
    return softmax(-input, _softmax_dim("softmin", input, dim) if dim is None else dim)


class PReLU(Function):
    """x where x > 0, weight * x elsewhere; one weight per channel (dim 1) or one for all."""

    def forward(self, x, w):
        xp = get_array_module(x)
        shape = (1, -1) + (1,) * (x.ndim - 2) if w.size > 1 else (1,) * max(x.ndim, 1)
        self.shape = shape
        self.save_for_backward(x, w)
        wb = w.reshape(shape) if x.ndim else w.reshape(())
        return xp.where(x > 0, x, wb * x).astype(x.dtype, copy=False)

    def backward(self, g):
        xp = get_array_module(g)
        x, w = self.saved
        wb = w.reshape(self.shape) if x.ndim else w.reshape(())
        gx = xp.where(x > 0, g, wb * g).astype(x.dtype, copy=False)
        neg = xp.where(x > 0, 0, g * x)
        if w.size > 1:
            axes = (0,) + tuple(range(2, x.ndim))
            gw = neg.sum(axis=axes, dtype=_opmath(w).dtype)
        else:
            gw = neg.sum(dtype=_opmath(w).dtype).reshape(w.shape)
        return gx, gw.astype(w.dtype, copy=False)

    def graph_backward(self, g, out):
        x, w = self.inputs
        wb = w.reshape(self.shape) if x.ndim else w.reshape(())
        positive = x.data > 0
        gx = Where.apply(constant(positive), g, g * wb)
        neg = keep_where(~positive, g * x)
        if w.numel() > 1:
            gw = neg.sum(dim=(0,) + tuple(range(2, x.ndim)))
        else:
            gw = neg.sum().reshape(w.shape)
        return gx, gw


def prelu(input, weight):
    """max(0, x) + weight * min(0, x), weight (C,) per channel of dim 1, or one value."""
    _float_input("prelu", input)
    if not isinstance(weight, Tensor):
        raise TypeError(f"prelu: weight must be a Tensor, got {type(weight).__name__}")
    n = weight.numel()
    channels = input.shape[1] if input.ndim >= 2 else 1
    if n != 1 and n != channels:
        if input.ndim < 2:  # torch's: a 0-D or 1-D input is one channel
            raise ValueError(f"prelu: weight has {n} parameters, but a {input.ndim}-D input "
                             f"(shape {input.shape}) has a single channel (dim 1 holds the "
                             f"channels): give one parameter")
        raise ValueError(f"prelu: weight has {n} parameters, the input (shape {input.shape}) "
                         f"has {channels} channels: give 1 or {channels}")
    if weight.ndim > 1:
        raise ValueError(f"prelu: weight must be 0-D or 1-D, got shape {weight.shape}")
    return PReLU.apply(input, weight)


__all__ = ["relu6", "hardtanh", "softplus", "softsign", "mish", "hardswish", "hardsigmoid",
           "prelu", "selu", "celu", "glu", "tanhshrink", "threshold", "softmin", "logsigmoid",
           "hardshrink", "softshrink"]


class RReLU(Function):
    """x where x > 0, else x * slope; the slopes (one per element) are given."""

    def forward(self, x, slopes):
        xp = get_array_module(x)
        self.factor = xp.where(x > 0, 1, slopes).astype(x.dtype, copy=False)
        return x * self.factor

    def backward(self, g):
        return g * self.factor

    def graph_backward(self, g, out):
        return g * constant(self.factor)


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    """Randomised leaky ReLU: in training each non-positive element gets its own slope drawn
    from U(lower, upper) (minidl's generator, as dropout); otherwise the fixed slope
    (lower + upper) / 2. Note training=False by default, as in PyTorch's function."""
    name = "rrelu"
    _float_input(name, input)
    lower, upper = _number(lower, f"{name}: lower"), _number(upper, f"{name}: upper")
    if lower > upper:
        raise ValueError(f"{name}: Lower bound should be less than or equal to the upper bound "
                         f"(lower={lower}, upper={upper})")
    xp = get_array_module(input.data)
    if training:
        if xp is np:  # torch's: a float64 uniform for each element <= 0 (the rest keep 1)
            from ...backend import default_generator, torch_random

            draw = np.ones(input.shape)
            negative = input.data <= 0
            draw[negative] = torch_random.uniform(default_generator, int(negative.sum()),
                                                  np.float64, lower, upper)
        else:
            draw = xp.random.uniform(lower, upper, input.shape)
        slopes = draw.astype(input.data.dtype)
    else:
        slopes = xp.asarray((lower + upper) / 2, dtype=input.data.dtype)
    return _pointwise(name, RReLU, input, inplace, slopes=slopes)


def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False):
    """In-place rrelu."""
    return rrelu(input, lower, upper, training, inplace=True)
