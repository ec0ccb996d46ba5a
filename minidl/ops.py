"""Elementwise, activation, reduction and shape ops: the Functions behind Tensor's operators and
methods (``x + y``, ``x.sum()``, ``x.relu()``, ``x.reshape(...)``), plus the functions
minidl exports under PyTorch's names (``cat``, ``stack``, ``where``, ``maximum``, ``clamp``...).

Each op is one Function: forward and backward side by side, on the array module of its inputs.
Tensor's methods, in tensor.py, call them; this module imports only ``backend`` and
``autograd`` (see autograd/__init__.py for the direction of the imports).
"""
from __future__ import annotations

import functools
import warnings
from collections import namedtuple

import numpy as np

from . import autograd, backend
from .autograd import DimError, Function, unbroadcast
from .backend import get_array_module
from .backend.generic import ACT_SIGMOID
from .backend.dtypes import (combine_dtypes, is_floating, is_real_number,
                             promote_types, scalar_dtype, torch_scalar_name)


# minidl.library's operator namespaces (``minidl.ops.mylib.name``, as ``torch.ops.mylib``): the
# library registers them here, so that this module never imports it
custom_namespaces = {}


def __getattr__(name):
    space = custom_namespaces.get(name)
    if space is None:
        raise AttributeError(f"module 'minidl.ops' has no attribute {name!r}")
    return space


class UnsupportedDtypeError(TypeError, RuntimeError):
    """An op PyTorch refuses for an operand's dtype (``-bool_tensor``, topk of bools): a
    RuntimeError there, and a TypeError as minidl's other dtype errors."""


class UnsignedKernelError(NotImplementedError, TypeError):
    """An op torch has no kernel of for uint16/uint32/uint64 (``a + b``, ``a < b``, ``-a``; and
    cumsum/cumprod with dtype=bool):
    torch's NotImplementedError, and a TypeError as minidl's other dtype errors."""


def refuse_unsigned(dtype, kernel):
    """uint16/32/64 operands of an op torch has no CPU kernel of (``kernel``, as its error
    names it) are refused, as there."""
    if dtype.kind == "u" and dtype.itemsize > 1:  # (no set look-up: this runs on every add)
        raise UnsignedKernelError(f'"{kernel}" not implemented for '
                                  f"'{torch_scalar_name(dtype)}'")


class BadArgumentError(ValueError, RuntimeError):
    """An argument PyTorch refuses with a RuntimeError (topk's k out of range, searchsorted's
    side='left' with right=True): a ValueError as minidl's other argument errors."""


class EmptyReductionError(IndexError, ValueError, RuntimeError):
    """max/min/argmax/argmin over an empty dim, which has no identity: PyTorch raises an
    IndexError (argmax, or a dim given) or a RuntimeError (max() over everything)."""


def refuse_empty_reduction(name, shape, dim):
    """Refuse ``name`` (max, amin, argmax...) over ``dim`` of a tensor of ``shape`` where a
    reduced dim is empty, with PyTorch's message."""
    if dim is None or (isinstance(dim, (tuple, list)) and not dim):
        if 0 in shape:
            raise EmptyReductionError(
                f"{name}(): Expected reduction dim to be specified for input.numel() == 0. "
                "Specify the reduction dim with the 'dim' argument.")
        return
    for ax in reduction_axes(dim, len(shape)):
        if shape and shape[ax] == 0:
            raise EmptyReductionError(f"{name}(): Expected reduction dim {ax} to have non-zero "
                                      "size.")


class ComplexDtypeError(UnsupportedDtypeError, NotImplementedError):
    """An op that orders values (or is not written for complex numbers yet) given a complex
    tensor: PyTorch raises NotImplementedError or RuntimeError there (both are caught)."""


_ORDERING = ("lt", "le", "gt", "ge", "max", "min", "argmax", "argmin", "maximum", "minimum",
             "clamp", "relu", "sort", "argsort", "topk", "cummax", "cummin", "searchsorted")


def refuse_complex(name, a):
    """Refuse a complex array in an op that does not take one, naming the op and dtype (NumPy
    would order complex numbers lexicographically, silently)."""
    if a.dtype.kind == "c":
        why = "; complex numbers have no order" if name in _ORDERING else ""
        raise ComplexDtypeError(f"{name}: not implemented for complex tensors (got dtype "
                                f"{a.dtype}){why}")


def refuse_bool(name, x, hint="convert with .int() or .float() first"):
    """PyTorch's refusal of ``name`` for a bool tensor."""
    if x.data.dtype == np.bool_:
        raise UnsupportedDtypeError(f"{name}: not implemented for bool tensors (PyTorch refuses "
                                    f"them too); {hint}")


def refuse_bool_sub(a, b):
    """PyTorch refuses a subtraction with a bool on either side (a tensor or a Python bool)."""
    def is_bool(x):
        return isinstance(x, (bool, np.bool_)) or (_is_tensor(x) and x.data.dtype == np.bool_)

    if is_bool(a) or is_bool(b):
        raise UnsupportedDtypeError(
            "Subtraction, the `-` operator, with two bool tensors is not supported. Use the "
            "`^` or `logical_xor()` operator instead." if is_bool(a) and is_bool(b) else
            "Subtraction, the `-` operator, with a bool tensor is not supported. If you are "
            "trying to invert a mask, use the `~` or `logical_not()` operator instead.")


def refuse_mixed_matmul(a, b):
    """PyTorch's matmul takes two tensors of one dtype (outside autocast, which casts them)."""
    if (_is_tensor(a) and _is_tensor(b) and a.data.dtype != b.data.dtype
            and autograd.autocast_hook() is None):
        raise UnsupportedDtypeError(f"matmul: expected both operands to have the same dtype, "
                                    f"got {a.data.dtype} and {b.data.dtype}")


def accumulation_dtype(a):
    """float32 for 16-bit floats, whose sums NumPy would add up in 16 bits (a bfloat16 sum of
    4096 ones is 256): PyTorch's kernels accumulate them in float32. None otherwise."""
    dt = a.dtype
    return np.float32 if dt.itemsize == 2 and is_floating(dt) else None

# ---- arithmetic -------------------------------------------------------------------------
# inf and NaN results come silently, as in PyTorch (NumPy would warn of overflow, 0 * inf, log 0)
_QUIET = {"divide": "ignore", "invalid": "ignore", "over": "ignore"}


# ---- for graph_backward: gradients as recorded ops (backward with create_graph=True) -------
def constant(a):
    """An array as a Tensor that takes no gradient (a mask, a share of a gradient)."""
    return autograd.Tensor(a, dtype=a.dtype)


def keep_where(mask, g):
    """``g`` where the bool array ``mask`` holds, 0 elsewhere, as a recorded op (0, not
    g * 0, where g is inf or NaN)."""
    zero = get_array_module(g.data).zeros((), dtype=g.data.dtype)
    return Where.apply(constant(mask), g, constant(zero))


def conj_inputs(g, *tensors):
    """``tensors`` conjugated (as recorded ops) where the gradient ``g`` is complex: a
    holomorphic op's input gradient is g times the conjugate of its derivative, PyTorch's
    convention; real tensors are returned as they are."""
    if g.data.dtype.kind != "c":
        return tensors
    return tuple(Conj.apply(t) if t.data.dtype.kind == "c" else t for t in tensors)


def swap_last_dims(t):
    """A Tensor with its last two dims swapped, as a recorded op."""
    axes = list(range(t.ndim))
    axes[-2:] = axes[-1], axes[-2]
    return Permute.apply(t, axes=tuple(axes))


def expand_reduced(g, shape, axes, keepdim):
    """The gradient of a reduction over ``axes`` of a tensor of ``shape``, spread back over
    the reduced axes, as recorded ops."""
    if not keepdim:
        g = Reshape.apply(g, shape=_reduced_shape(shape, axes, True))
    return Expand.apply(g, shape=shape) if g.shape != tuple(shape) else g


class Add(Function):
    complex_grad = True
    def forward(self, a, b):
        with np.errstate(**_QUIET):
            return a + b

    def backward(self, g):
        return g, g

    def graph_backward(self, g, out):
        return g, g


class Conj(Function):
    """The complex conjugate (a copy: minidl has no lazy conjugate bit); its gradient is the
    conjugate of the incoming one."""

    complex_grad = True

    def forward(self, a):
        return a.conj()

    def backward(self, g):
        return g.conj()

    def graph_backward(self, g, out):
        return Conj.apply(g)


class Sub(Function):
    complex_grad = True
    def forward(self, a, b):
        with np.errstate(**_QUIET):
            return a - b

    def backward(self, g):
        return g, -g

    def graph_backward(self, g, out):
        return g, -g


class Mul(Function):
    complex_grad = True

    def forward(self, a, b):
        self.save_for_backward(a, b)
        with np.errstate(**_QUIET):
            return a * b

    def backward(self, g):
        a, b = self.saved
        if g.dtype.kind == "c":  # PyTorch's convention: g times the conjugate derivative
            a, b = a.conj(), b.conj()
        return g * b, g * a

    def graph_backward(self, g, out):
        a, b = conj_inputs(g, *self.inputs)
        ga = g * b if self.inputs[0].requires_grad else None
        return ga, (g * a if self.inputs[1].requires_grad else None)


class Div(Function):
    complex_grad = True

    def forward(self, a, b):
        self.save_for_backward(a, b)
        with np.errstate(**_QUIET):  # x / 0 is inf or NaN, silently
            return a / b

    def backward(self, g):
        a, b = self.saved
        if g.dtype.kind == "c":
            a, b = a.conj(), b.conj()
        with np.errstate(**_QUIET):
            ga = g / b
            return ga, -ga * a / b

    def graph_backward(self, g, out):
        a, b = conj_inputs(g, *self.inputs)
        ga = g / b
        return ga, (-ga * a / b if self.inputs[1].requires_grad else None)


class Neg(Function):
    complex_grad = True

    def forward(self, a):
        if a.dtype == np.bool_:
            raise UnsupportedDtypeError(
                "Negation, the `-` operator, on a bool tensor is not supported. If you are "
                "trying to invert a mask, use the `~` or `logical_not()` operator instead.")
        return -a

    def backward(self, g):
        return -g

    def graph_backward(self, g, out):
        return -g


class ScaleBy(Function):
    """``a * factor`` for a Python number ``factor`` that takes no gradient (``add``'s and
    ``sub``'s alpha): nothing saved, as torch's AddBackward keeps only the number, so a second
    backward goes through it."""

    def forward(self, a, factor):
        self.factor = factor
        return a * factor

    def backward(self, g):
        return g * self.factor

    def graph_backward(self, g, out):
        return ScaleBy.apply(g, factor=self.factor)


class Pow(Function):
    """x ** p for a constant exponent p."""

    complex_grad = True

    def forward(self, a, exponent):
        self.exponent = exponent
        self.save_for_backward(a)
        with np.errstate(**_QUIET):  # 0 ** -1 is inf, (-8) ** 0.5 NaN, 10 ** 100 inf
            return a ** exponent

    def backward(self, g):
        (a,) = self.saved
        p = self.exponent
        if p == 0:  # d(x^0)/dx = 0 everywhere, also at x = 0 where p * a^(p-1) is 0 * inf
            return get_array_module(g).zeros_like(g)
        if g.dtype.kind == "c":
            a, p = a.conj(), p.conjugate()
        with np.errstate(**_QUIET):
            return g * (p * a ** (p - 1))

    def graph_backward(self, g, out):
        (a,) = conj_inputs(g, self.inputs[0])
        p = self.exponent.conjugate() if g.data.dtype.kind == "c" else self.exponent
        if p == 0:
            return Fill.apply(g, value=0)
        return g * (Pow.apply(a, exponent=p - 1) * p)


class PowTensor(Function):
    """a ** b with both sides tensors. At the edges the gradients are PyTorch's: d/da is 0
    where b = 0 (also at a = 0), d/db is 0 where a = 0 and b >= 0, and NaN where a < 0."""

    def forward(self, a, b):
        if a.dtype == np.bool_:
            raise UnsupportedDtypeError("pow: not implemented for bool tensors (PyTorch refuses "
                                        "them too); convert with .int() or .float() first")
        if a.dtype.kind in "iu" and bool((b < 0).any()):
            y = integer_power(a, b)
        else:
            with np.errstate(**_QUIET):
                y = a ** b
        self.save_for_backward(a, b, y)
        return y

    complex_grad = True  # g times the conjugate derivatives; the edges by the real part of b

    def backward(self, g):
        a, b, y = self.saved
        xp = get_array_module(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            da = b * a ** (b - 1)
            db = y * xp.log(a)
            if a.dtype.kind == "c":
                da, db = da.conj(), db.conj()
            ga = xp.where(b == 0, 0, g * da)
            gb = xp.where((a == 0) & (b.real >= 0), 0, g * db)
        return ga.astype(g.dtype, copy=False), gb.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        a, b = self.inputs
        ga = gb = None
        if a.requires_grad:
            da = b * PowTensor.apply(a, b - 1)
            da = Conj.apply(da) if da.data.dtype.kind == "c" else da
            ga = keep_where(b.data != 0, g * da)
        if b.requires_grad:
            db = out * Log.apply(a)
            db = Conj.apply(db) if db.data.dtype.kind == "c" else db
            gb = keep_where(~((a.data == 0) & (b.data.real >= 0)), g * db)
        return ga, gb


def integer_power(a, b):
    """``a ** b`` for integer arrays where some of ``b`` is negative, as PyTorch computes it
    (NumPy refuses): 1 for a base of 1, +-1 for -1 (by the exponent's parity), else 0."""
    xp = get_array_module(a, b)
    negative = b < 0
    y = a ** xp.where(negative, 0, b).astype(b.dtype, copy=False)
    one = xp.ones((), a.dtype)
    small = xp.where(a == 1, one, 0)
    if a.dtype.kind == "i":
        small = xp.where(a == -1, xp.where(b % 2 == 0, one, -one), small)
    return xp.where(negative, small, y).astype(y.dtype, copy=False)


def check_integer_exponent(dtype, exponent):
    """Refuse what PyTorch refuses for an integer or bool tensor raised to a Python integer:
    a negative exponent, or one outside the tensor's dtype."""
    if exponent < 0:
        raise BadArgumentError("Integers to negative integer powers are not allowed.")
    if dtype != np.bool_ and np.iinfo(dtype).max < exponent <= np.iinfo(np.int64).max:
        raise BadArgumentError(f"pow: exponent {exponent} cannot be converted to {dtype} "
                               "without overflow")


class Exp(Function):
    complex_grad = True

    def forward(self, a):
        with np.errstate(**_QUIET):
            y = get_array_module(a).exp(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return g * (y.conj() if g.dtype.kind == "c" else y)

    def graph_backward(self, g, out):
        return g * conj_inputs(g, out)[0]


class Log(Function):
    complex_grad = True

    def forward(self, a):
        self.save_for_backward(a)
        with np.errstate(**_QUIET):
            return get_array_module(a).log(a)

    def backward(self, g):
        (a,) = self.saved
        with np.errstate(**_QUIET):
            return g / (a.conj() if g.dtype.kind == "c" else a)

    def graph_backward(self, g, out):
        return g / conj_inputs(g, self.inputs[0])[0]


class Sqrt(Function):
    complex_grad = True

    def forward(self, a):
        with np.errstate(**_QUIET):
            y = get_array_module(a).sqrt(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        with np.errstate(**_QUIET):
            return g / (2 * (y.conj() if g.dtype.kind == "c" else y))

    def graph_backward(self, g, out):
        return g / (conj_inputs(g, out)[0] * 2)


class Tanh(Function):
    complex_grad = True

    def forward(self, a):
        y = get_array_module(a).tanh(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        if g.dtype.kind == "c":
            y = y.conj()
        return g * (1 - y * y)

    def graph_backward(self, g, out):
        (y,) = conj_inputs(g, out)
        return g * (1 - y * y)


class Fill(Function):
    complex_grad = True
    """Every element set to ``value`` (zero_ and fill_ inside the graph): no gradient flows
    back to the tensor that was overwritten."""

    def forward(self, a, value):
        return get_array_module(a).full_like(a, value)

    def backward(self, g):
        return get_array_module(g).zeros_like(g)

    def graph_backward(self, g, out):
        return Fill.apply(g, value=0)


def memory_order(a):
    """The axis order of ``a``'s memory where it is a dense block in an order other than
    row-major (channels-last, a transposed matrix), else None: what torch's preserve_format
    keeps."""
    if a.flags.c_contiguous or not a.size:
        return None
    order = tuple(int(i) for i in np.argsort(a.strides, kind="stable")[::-1])
    return order if a.transpose(order).flags.c_contiguous else None


class Clone(Function):
    complex_grad = True
    """A copy; ``keep_layout`` (Tensor.clone's preserve_format) keeps the memory order of a
    dense permuted input, as torch's; others are copied row-major."""

    def forward(self, a, keep_layout=False):
        if keep_layout and memory_order(a) is not None:
            return a.copy(order="K")
        return a.copy()

    def backward(self, g):
        return g

    def graph_backward(self, g, out):
        return g


class Maximum(Function):
    """Elementwise max (min) of two tensors; on a tie each side gets half the gradient."""

    def forward(self, a, b, take_min=False):
        if a.dtype.kind == "c":
            refuse_complex("minimum" if take_min else "maximum", a)
        xp = get_array_module(a)
        self.save_for_backward(a, b)
        self.take_min = take_min
        return xp.minimum(a, b) if take_min else xp.maximum(a, b)

    def shares(self, dtype):
        """The share of the gradient each side gets, per element."""
        a, b = self.saved
        xp = get_array_module(a)
        a_wins, b_wins = ((a < b), (a > b)) if self.take_min else ((a > b), (a < b))
        tie = a == b
        # PyTorch's rule: a side gets the gradient unless the other side wins (so with a NaN,
        # where nothing compares, both sides get all of it), half each on a tie
        share_a = xp.where(tie, 0.5, xp.where(b_wins, 0, 1)).astype(dtype, copy=False)
        share_b = xp.where(tie, 0.5, xp.where(a_wins, 0, 1)).astype(dtype, copy=False)
        return share_a, share_b

    def backward(self, g):
        share_a, share_b = self.shares(g.dtype)
        return g * share_a, g * share_b

    def graph_backward(self, g, out):
        share_a, share_b = self.shares(g.data.dtype)
        return g * constant(share_a), g * constant(share_b)


class Abs(Function):
    complex_grad = True

    def forward(self, a):
        if a.dtype == np.bool_:
            raise UnsupportedDtypeError("abs: not implemented for bool tensors (PyTorch refuses "
                                        "them too)")
        self.save_for_backward(a)
        return abs(a)

    def backward(self, g):
        (a,) = self.saved
        return g * sgn(a)

    def graph_backward(self, g, out):
        a = self.inputs[0]
        if a.data.dtype.kind == "c":  # g * z / |z|, 0 at 0, as recorded ops
            return keep_where(a.data != 0, g * a / Abs.apply(a))
        return g * constant(sgn(a.data))


def sgn(a):
    """The sign of an array: -1, 0 or 1 for real values (0 at NaN), z / |z| (0 at 0) for
    complex ones, as torch.sgn (so |x|'s gradient at NaN is 0, as PyTorch's)."""
    xp = get_array_module(a)
    if a.dtype.kind != "c":
        s = xp.sign(a)
        return xp.where(a != a, 0, s).astype(s.dtype, copy=False) if is_floating(a.dtype) else s
    size = abs(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return xp.where(size == 0, 0, a / size).astype(a.dtype, copy=False)


def astype(a, dtype):
    """``a.astype(dtype)``, through the kernel set's own cast where it has one (CUDA: one launch
    of minidl's kernel, cheaper on the host than CuPy's astype). A value beyond the new
    dtype's range comes as torch gives it (inf, or the integer cast's), without NumPy's
    warning."""
    fast = getattr(backend.kernels(get_array_module(a)), "astype", None)
    if fast is not None:
        return fast(a, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(dtype)


class Cast(Function):
    complex_grad = True

    def forward(self, x, dtype):
        self.source = x.dtype
        if x.dtype.kind == "c" and dtype.kind != "c":
            x = complex_to_real(x, dtype)
        return astype(x, dtype)

    def backward(self, g):
        if g.dtype.kind == "c" and self.source.kind != "c":
            g = g.real  # a real input's share of a complex gradient, as PyTorch's
        return astype(g, self.source)

    def graph_backward(self, g, out):
        if g.data.dtype.kind == "c" and self.source.kind != "c":
            g = g.real  # (complex_ops builds on this module: through the Tensor's property)
        return Cast.apply(g, dtype=self.source)


def complex_to_real(x, dtype):
    """Complex values cast to the real ``dtype``: the real parts, with PyTorch's warning (bool
    keeps NumPy's rule: True where either part is nonzero)."""
    if dtype.kind == "b":
        return x
    import warnings

    warnings.warn("Casting complex values to real discards the imaginary part", UserWarning,
                  stacklevel=4)
    return x.real


# ---- where, maximum/minimum, clamp, masked_fill: ops on several tensors and numbers --------
def _is_tensor(x):
    return isinstance(x, autograd.Tensor)


def _is_number(x):
    return isinstance(x, np.bool_) or is_real_number(x)  # a bfloat16 NumPy scalar too


def _describe(x):
    return f"a {x.dtype} tensor" if _is_tensor(x) else type(x).__name__


def result_type(*operands):
    """PyTorch's result dtype of tensors and Python numbers (None where absent): each tier
    (tensors with dims, 0-d tensors, numbers) promotes within itself, and a lower tier counts
    only where its category is higher (``int64 tensor + 2.5`` is float32, ``float16 tensor +
    float64 0-d tensor`` float16)."""
    tiers = [None, None, None]
    for x in operands:
        if x is None:
            continue
        if _is_tensor(x):
            dtype, tier = x.data.dtype, 0 if x.data.ndim else 1
        else:
            dtype, tier = scalar_dtype(x), 2
        tiers[tier] = dtype if tiers[tier] is None else promote_types(tiers[tier], dtype)
    result = None
    for dtype in tiers:
        if dtype is not None:
            result = dtype if result is None else combine_dtypes(result, dtype)
    return result


def wrap_integer(x, dtype):
    """A Python integer outside an integer dtype's range wrapped into it (two's complement),
    as PyTorch takes it: ``uint8_tensor - 1`` subtracts 1 mod 256. Anything else as it is."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and dtype is not None:
        dt = np.dtype(dtype)
        if dt.kind in "iu":
            info, bits = np.iinfo(dt), 8 * dt.itemsize
            if not info.min <= x <= info.max:
                x = int(x) % (1 << bits)
                return dt.type(x - (1 << bits) if x > info.max else x)
    return x


def fill_value(value, dtype, name="fill_"):
    """A Python number as ``fill_`` writes it into a tensor of ``dtype``, checked as PyTorch
    checks it: an integer dtype refuses NaN, infinity and numbers outside its range (an
    unsigned one takes integers down to -max, wrapped: ``uint8.fill_(-1)`` is 255), a float
    dtype a finite number beyond its range."""
    if isinstance(value, np.generic):
        value = value.item()
    dt = np.dtype(dtype)
    if isinstance(value, complex) and dt.kind != "c":  # torch's checked conversion
        if value.imag != 0:
            raise BadArgumentError(f"{name}: value {value} cannot be converted to type {dt} "
                                   "without overflow")
        value = value.real
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
            is_floating(dt) or dt.kind in "iu"):
        return value
    if is_floating(dt):
        fits = dt == np.float64 or not abs(value) > float(np.finfo(dt).max) or \
            abs(value) == float("inf")
    else:
        info = np.iinfo(dt)
        low = info.min if dt.kind == "i" else (-int(info.max) if isinstance(value, int) else 0)
        fits = value == value and low <= value <= info.max
    if not fits:
        raise BadArgumentError(f"{name}: value {value} cannot be converted to type {dt} without "
                               "overflow")
    return wrap_integer(value, dt)


class InPlaceCastError(TypeError, RuntimeError):
    """An in-place op whose result a tensor cannot hold (``int_tensor += 2.5``): PyTorch's
    RuntimeError "result type Float can't be cast to the desired output type Long"."""


def _operand(x, dtype, xp):
    """``x`` (a tensor or a number) as a tensor of ``dtype``; a number goes to xp's device."""
    if _is_tensor(x):
        return x if x.data.dtype == dtype else Cast.apply(x, dtype=dtype)
    return autograd.Tensor(xp.full((), wrap_integer(x, dtype), dtype=dtype))


def _broadcast_shapes(name, **shapes):
    try:
        return np.broadcast_shapes(*shapes.values())
    except ValueError:
        listed = ", ".join(f"{what} {shape}" for what, shape in shapes.items())
        raise ValueError(f"{name}: shapes do not broadcast: {listed}") from None


def _check_bool_tensor(name, what, x):
    if not _is_tensor(x):
        raise TypeError(f"{name}: {what} must be a bool tensor, got {_describe(x)}")
    if x.data.dtype != np.bool_:
        raise UnsupportedDtypeError(f"{name}: {what} must be a bool tensor, got {_describe(x)}")


def _array_module(*operands):
    return get_array_module(*[x.data for x in operands if _is_tensor(x)])


class Untracked(Function):
    """A result with no gradient (booleans, indices) as a recorded op, made only while a tracer
    that asks to see such results is installed (the ONNX exporter's: see traces_untracked);
    the ordinary path computes them outside the graph. Its subclasses write ``forward`` only."""

    def backward(self, g):
        return (None,) * len(self.inputs)


class Compare(Untracked):
    """A comparison or logical op on bool/number arrays (``op``: a ufunc name: less, equal,
    logical_and, invert, ...) as a recorded op. The Tensor operators compute these outside
    the graph; they run through here only while a tracer that asks for them (the ONNX
    exporter's) is installed, so that it sees them. Not differentiable."""

    def forward(self, *arrays, op):
        return getattr(get_array_module(arrays[0]), op)(*arrays)


class ArgMaxMin(Untracked):
    """``argmax``/``argmin`` as a recorded op, for a tracer that asks for it (see Compare):
    int64 indices of the first extreme over ``dim`` (None: over the flattened array)."""

    def forward(self, x, dim, keepdim, take_min):
        xp = get_array_module(x)
        arg = x.argmin(axis=dim) if take_min else x.argmax(axis=dim)
        if keepdim:
            arg = xp.reshape(arg, (1,) * x.ndim) if dim is None else xp.expand_dims(arg, dim)
        return xp.asarray(arg).astype(np.int64)


class Where(Function):
    complex_grad = True
    def forward(self, condition, a, b):
        self.save_for_backward(condition)
        return get_array_module(a).where(condition, a, b)

    def backward(self, g):
        (condition,) = self.saved
        xp = get_array_module(g)
        zero = xp.zeros((), dtype=g.dtype)
        _, a, b = self.inputs
        return (None, xp.where(condition, g, zero) if a.requires_grad else None,
                xp.where(condition, zero, g) if b.requires_grad else None)

    def graph_backward(self, g, out):
        (condition,) = self.saved
        _, a, b = self.inputs
        return (None, keep_where(condition, g) if a.requires_grad else None,
                keep_where(~condition, g) if b.requires_grad else None)


def where(condition, input=None, other=None):
    """``input`` where ``condition`` holds, ``other`` elsewhere: tensors or numbers, broadcast,
    at PyTorch's result dtype; the gradient goes to the side each element came from.
    ``where(condition)`` alone is ``nonzero(condition, as_tuple=True)``, as in PyTorch."""
    for x in (condition, input, other):
        if getattr(x, "is_nested", False) is True:  # minidl.nested
            return x._nested_op("where", condition, input, other)
    if input is None and other is None and _is_tensor(condition):
        if condition.ndim and traces_untracked():
            return nonzero_columns(condition)
        data = condition.data
        xp = get_array_module(data)
        found = xp.nonzero(data.reshape(1) if data.ndim == 0 else data)
        return tuple(autograd.Tensor(i.astype(np.int64)) for i in found)
    _check_bool_tensor("where", "condition", condition)
    for what, x in (("input", input), ("other", other)):
        if not (_is_tensor(x) or _is_number(x) or isinstance(x, complex)):
            raise TypeError(f"where: {what} must be a tensor or a number, got {_describe(x)}")
    dtype = result_type(input, other)
    # a number beyond the result dtype's range refused, as torch (whose 16-bit floats take
    # anything in float32's range, rounding 1e5 to inf in float16)
    limit = np.dtype(np.float32) if is_floating(dtype) and dtype.itemsize == 2 else dtype
    for x in (input, other):
        if _is_number(x) and not isinstance(x, (bool, np.bool_)):
            fill_value(x.item() if isinstance(x, np.generic) else x, limit, "where")
    xp = _array_module(condition, input, other)
    a, b = _operand(input, dtype, xp), _operand(other, dtype, xp)
    _broadcast_shapes("where", condition=condition.shape, input=a.shape, other=b.shape)
    return Where.apply(condition, a, b)


def _elementwise_extreme(name, input, other, take_min):
    for what, x in (("input", input), ("other", other)):
        if not _is_tensor(x):
            raise TypeError(f"{name}: {what} must be a tensor, got {_describe(x)} (for a number, "
                            f"use clamp({'max' if take_min else 'min'}=...))")
    dtype = result_type(input, other)
    if dtype.kind == "u":  # (no kernel name formatted on the common path)
        refuse_unsigned(dtype, f"{name}_cpu")
    xp = _array_module(input, other)
    a, b = _operand(input, dtype, xp), _operand(other, dtype, xp)
    _broadcast_shapes(name, input=a.shape, other=b.shape)
    return Maximum.apply(a, b, take_min=take_min)


def maximum(input, other):
    """The elementwise larger of two tensors (NaN wins); on a tie each gets half the gradient."""
    return _elementwise_extreme("maximum", input, other, take_min=False)


def minimum(input, other):
    """The elementwise smaller of two tensors (NaN wins); on a tie each gets half the gradient."""
    return _elementwise_extreme("minimum", input, other, take_min=True)


class Clamp(Function):
    """``min(max(x, lo), hi)`` for bounds that are tensors (0-d ones for numbers). As in
    PyTorch, x's gradient passes where ``lo <= x <= hi`` (a value on a bound keeps it); a bound
    gets the gradient where it is the result, and where ``lo > hi`` the result is hi."""

    def forward(self, x, *bounds, has_min, has_max):
        if x.dtype.kind == "c":
            refuse_complex("clamp", x)
        if x.dtype == np.bool_:
            raise UnsupportedDtypeError("clamp: not implemented for bool tensors (PyTorch "
                                        "refuses them too); convert with .int() first")
        xp = get_array_module(x)
        self.has_min, self.has_max = has_min, has_max
        lo = bounds[0] if has_min else None
        hi = bounds[-1] if has_max else None
        y = x if lo is None else xp.maximum(x, lo)
        if hi is not None:
            y = xp.minimum(y, hi)
        self.save_for_backward(x, *bounds)
        return y

    def masks(self):
        """Where each input (x, then the bounds given) gets the gradient: a bool array per
        input, None for one that needs no gradient."""
        x, *bounds = self.saved
        lo = bounds[0] if self.has_min else None
        hi = bounds[-1] if self.has_max else None
        if lo is not None and hi is not None:
            keep = (x >= lo) & (x <= hi)
        else:
            keep = x >= lo if lo is not None else x <= hi
        inputs = self.inputs
        masks = [keep if inputs[0].requires_grad else None]
        if lo is not None:
            below = x < lo if hi is None else (x < lo) & (lo < hi)
            masks.append(below if inputs[1].requires_grad else None)
        if hi is not None:
            above = x > hi if lo is None else (x > hi) | (hi < lo)
            masks.append(above if inputs[-1].requires_grad else None)
        return masks

    def backward(self, g):
        zero = get_array_module(g).zeros((), dtype=g.dtype)
        return tuple(None if m is None else get_array_module(g).where(m, g, zero)
                     for m in self.masks())

    def graph_backward(self, g, out):
        return tuple(None if m is None else keep_where(m, g) for m in self.masks())


def clamp(input, min=None, max=None):
    """Each element of ``input`` limited to [min, max]; a bound is a number or a tensor (which
    broadcasts), and either may be None, not both."""
    if not _is_tensor(input):
        raise TypeError(f"clamp: input must be a tensor, got {_describe(input)}")
    if min is None and max is None:
        raise ValueError("clamp: pass min, max or both (both are None)")
    for what, x in (("min", min), ("max", max)):
        if x is not None and not (_is_tensor(x) or _is_number(x)):
            raise TypeError(f"clamp: {what} must be a number or a tensor, got {_describe(x)}")
    dtype = result_type(input, min, max)
    refuse_unsigned(dtype, "clamp_cpu")
    xp = _array_module(input, min, max)
    x = _operand(input, dtype, xp)
    bounds = {what: _operand(fill_value(b, dtype, "clamp") if _is_number(b) else b, dtype, xp)
              for what, b in (("min", min), ("max", max)) if b is not None}
    _broadcast_shapes("clamp", input=x.shape, **{what: b.shape for what, b in bounds.items()})
    return Clamp.apply(x, *bounds.values(), has_min="min" in bounds, has_max="max" in bounds)


clip = clamp


class MaskedFill(Function):
    complex_grad = True

    def forward(self, a, mask, value):
        self.save_for_backward(mask)
        return get_array_module(a).where(mask, value, a)

    def backward(self, g):
        (mask,) = self.saved
        xp = get_array_module(g)
        zero = xp.zeros((), dtype=g.dtype)
        a, _, value = self.inputs
        gv = None
        if value.requires_grad:
            gv = xp.where(mask, g, zero).sum(keepdims=True, dtype=accumulation_dtype(g))
            gv = gv.reshape(()).astype(g.dtype, copy=False)
        return (xp.where(mask, zero, g) if a.requires_grad else None), None, gv

    def graph_backward(self, g, out):
        (mask,) = self.saved
        a, _, value = self.inputs
        gv = Sum.apply(keep_where(mask, g)) if value.requires_grad else None
        return (keep_where(~mask, g) if a.requires_grad else None), None, gv


def masked_fill(input, mask, value):
    """``input`` with ``value`` (a number or a 0-d tensor, cast to input's dtype) where the
    bool ``mask`` (broadcast) holds."""
    _check_bool_tensor("masked_fill", "mask", mask)
    if _is_tensor(input):
        refuse_unsigned(input.data.dtype, "masked_fill")
    if _is_tensor(value):
        if value.ndim != 0:
            raise ValueError("masked_fill: value must be a number or a 0-d tensor, got a tensor "
                             f"of shape {value.shape}")
        if value.data.dtype.kind == "c" and input.data.dtype.kind != "c":
            raise BadArgumentError(f"masked_fill: a complex value cannot be written into a "
                                   f"{input.data.dtype} tensor (its imaginary part would be "
                                   "lost)")
    elif _is_number(value) or isinstance(value, complex):
        value = fill_value(value, input.data.dtype, "masked_fill")
    else:
        raise TypeError(f"masked_fill: value must be a number or a 0-d tensor, got "
                        f"{_describe(value)}")
    xp = _array_module(input, mask, value)
    v = _operand(value, input.data.dtype, xp)
    _broadcast_shapes("masked_fill", input=input.shape, mask=mask.shape)
    return MaskedFill.apply(input, mask, v)


# ---- activations ------------------------------------------------------------------------
class ReLU(Function):
    # The output is saved instead of a mask: y > 0 exactly where x > 0, and it already exists.
    def forward(self, x):
        if x.dtype.kind == "c":
            refuse_complex("relu", x)
        if x.dtype == np.bool_:
            raise UnsupportedDtypeError("Boolean inputs not supported for relu")
        fast = getattr(backend.kernels(get_array_module(x)), "relu_forward", None)
        y = fast(x) if fast is not None else get_array_module(x).maximum(x, 0)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        fast = getattr(backend.kernels(get_array_module(g)), "relu_backward", None)
        return fast(g, y) if fast is not None else g * ~(y <= 0)

    def graph_backward(self, g, out):  # a NaN passes the gradient on, as torch's
        return g * constant((~(out.data <= 0)).astype(g.data.dtype))


def stable_sigmoid(x):
    """1 / (1 + e^-x) without overflow: exp is only ever taken of -|x|."""
    xp = get_array_module(x)
    e = xp.exp(-abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def pointwise_kernels(x):
    """The kernel set whose ``activation_forward``/``activation_backward`` take ``x`` (the
    sigmoid, SiLU and GELU in one pass: numba's for float32 NumPy arrays, CUDA's for float32 and
    float64 CuPy arrays), else None."""
    if type(x) is np.ndarray:
        if x.dtype != np.float32:
            return None
        ks = backend.kernels(np)
    else:
        cp = backend.cupy_module()
        if cp is None or not isinstance(x, cp.ndarray) or x.dtype not in (np.float32, np.float64):
            return None
        ks = backend.kernels(cp)
    return ks if hasattr(ks, "activation_forward") else None


class Sigmoid(Function):
    def forward(self, x):
        if x.dtype.kind == "c":
            refuse_complex("sigmoid", x)
        ks = self.fast = pointwise_kernels(x)
        y = stable_sigmoid(x) if ks is None else ks.activation_forward(x, ACT_SIGMOID)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        if self.fast is not None and g.dtype == y.dtype and type(g) is type(y):
            return self.fast.activation_backward(g, y, ACT_SIGMOID)  # from the output y
        return g * y * (1 - y)

    def graph_backward(self, g, out):
        return g * out * (1 - out)


def row_kernels(x, dim):
    """The CPU kernel set when its row kernels take softmax of x over ``dim`` (the last dim of
    a float32/float64 array with elements), else None."""
    if type(x) is not np.ndarray or x.size == 0 or dim not in (-1, x.ndim - 1):
        return None
    ks = backend.kernels(np)
    return ks if getattr(ks, "rows_fit", None) is not None and ks.rows_fit(x) else None


def softmax_backward_array(g, y, dim):
    """The gradient of softmax over ``dim`` from its output y: y * (g - sum(g * y)), by the
    CPU's row kernel where it takes them; 16-bit gradients computed in float32 and rounded."""
    ks = row_kernels(y, dim)
    if ks is not None and g.dtype == y.dtype and type(g) is np.ndarray:
        return ks.softmax_last_backward(g, y)
    wide = accumulation_dtype(g)
    if wide is not None:
        yw, gw = y.astype(wide), g.astype(wide)
        return (yw * (gw - (gw * yw).sum(axis=dim, keepdims=True))).astype(g.dtype)
    return y * (g - (g * y).sum(axis=dim, keepdims=True))


class Softmax(Function):
    def forward(self, x, dim):
        if x.dtype.kind == "c":
            refuse_complex("softmax", x)
        self.dim = dim
        ks = row_kernels(x, dim)
        if ks is not None:
            y = ks.softmax_last(x)
            self.save_for_backward(y)
            return y
        xp = get_array_module(x)
        wide = accumulation_dtype(x)  # 16-bit inputs: computed in float32 and rounded
        xw = x if wide is None else x.astype(wide)
        if x.size == 0:  # an empty dim has no max: the result is empty too
            y = x.copy()
        else:
            with np.errstate(invalid="ignore"):  # a slice of -inf only: NaN, as in PyTorch
                e = xp.exp(xw - xw.max(axis=dim, keepdims=True))  # max subtracted: no overflow
                y = (e / e.sum(axis=dim, keepdims=True)).astype(x.dtype, copy=False)
        self.dim = dim
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return softmax_backward_array(g, y, self.dim)

    def graph_backward(self, g, out):
        return out * (g - Sum.apply(g * out, dim=self.dim, keepdim=True))


def log_softmax_array(x, dim):
    """log(softmax(x)) on an array; 16-bit inputs computed in float32 and rounded."""
    xp = get_array_module(x)
    wide = accumulation_dtype(x)
    xw = x if wide is None else x.astype(wide)
    if x.size == 0:
        return x.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = xw - xw.max(axis=dim, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
    return y.astype(x.dtype, copy=False)


class LogSoftmax(Function):
    """log(softmax(x)) along ``dim`` (None for a 0-d x) as ``x - max - log(sum(exp(x - max)))``:
    no overflow, and no log of an underflowed 0."""

    def forward(self, x, dim):
        if x.dtype.kind == "c":
            refuse_complex("log_softmax", x)
        y = log_softmax_array(x, dim)
        self.dim = dim
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        xp = get_array_module(y)
        wide = accumulation_dtype(g)
        yw, gw = (y, g) if wide is None else (y.astype(wide), g.astype(wide))
        return (gw - xp.exp(yw) * gw.sum(axis=self.dim, keepdims=True)).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        return g - Exp.apply(out) * Sum.apply(g, dim=self.dim, keepdim=True)


class MatMul(Function):
    complex_grad = True

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise BadArgumentError("matmul: both operands need at least one dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        if a.dtype == np.bool_:
            raise UnsupportedDtypeError("matmul: not implemented for bool tensors (PyTorch "
                                        "refuses them too); convert with .int() or .float()")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit: inner "
                             f"dimensions {k_a} and {k_b} differ")
        self.save_for_backward(a, b)
        y = a @ b
        if y.dtype != a.dtype and a.dtype == b.dtype:  # ml_dtypes' bfloat16 product is float32
            y = y.astype(a.dtype)
        return y

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(a)
        if g.dtype.kind == "c":
            a, b = a.conj(), b.conj()
        if a.ndim == 1 and b.ndim == 1:  # dot product: g is 0-d
            return g * b, g * a
        # 1-D operands act as a row (left) or a column (right) vector, as in numpy.matmul.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = g2 @ xp.swapaxes(b2, -1, -2)
        gb = xp.swapaxes(a2, -1, -2) @ g2
        if a.ndim == 1:
            ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])
        if b.ndim == 1:
            gb = gb.reshape(gb.shape[:-1])
        # batch dims broadcast (also size-1 dims in the middle, e.g. (2,1,m,k) @ (5,k,n)):
        # sum back to each operand's shape
        return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)

    def graph_backward(self, g, out):
        a, b = self.inputs
        need_a, need_b = a.requires_grad, b.requires_grad
        a, b = conj_inputs(g, a, b)
        if a.ndim == 1 and b.ndim == 1:
            return (g * b if need_a else None), (g * a if need_b else None)
        a2 = Reshape.apply(a, shape=(1,) + a.shape) if a.ndim == 1 else a
        b2 = Reshape.apply(b, shape=b.shape + (1,)) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = Reshape.apply(g2, shape=g2.shape[:-1] + (1,) + g2.shape[-1:])
        if b.ndim == 1:
            g2 = Reshape.apply(g2, shape=g2.shape + (1,))
        ga = gb = None
        if need_a:
            ga = MatMul.apply(g2, swap_last_dims(b2))
            if a.ndim == 1:
                ga = Reshape.apply(ga, shape=ga.shape[:-2] + ga.shape[-1:])
        if need_b:
            gb = MatMul.apply(swap_last_dims(a2), g2)
            if b.ndim == 1:
                gb = Reshape.apply(gb, shape=gb.shape[:-1])
        return ga, gb  # broadcast batch dims: the engine sums them back (sum_to_size)


# ---- reductions -------------------------------------------------------------------------
def reduction_axes(dim, ndim):
    """The axes a reduction over ``dim`` runs on: all of them for None or an empty list (as in
    PyTorch), none for a 0-d tensor (whose dims 0 and -1 are accepted)."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (int, np.integer)):
        dim = (dim,)
    if len(dim) == 0:
        return tuple(range(ndim))
    n = max(ndim, 1)
    out = []
    for d in dim:
        if not -n <= d < n:
            raise DimError(f"dimension {d} out of range for a tensor of {ndim} dimensions "
                           f"(expected to be in range of [{-n}, {n - 1}])")
        out.append(d % n)
    if len(set(out)) != len(out):
        raise ValueError(f"dimension {dim}: a dim appears more than once")
    return tuple(sorted(out)) if ndim else ()


def _reduced_shape(shape, axes, keepdim):
    return tuple(1 if i in axes else n for i, n in enumerate(shape) if keepdim or i not in axes)


def _expand_reduced(g, shape, axes, keepdim):
    xp = get_array_module(g)
    if not keepdim:
        for ax in axes:
            g = xp.expand_dims(g, ax)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    complex_grad = True
    def forward(self, a, dim=None, keepdim=False):
        self.shape = a.shape
        self.axes = reduction_axes(dim, a.ndim)
        self.keepdim = keepdim
        wide = accumulation_dtype(a)
        if wide is not None:
            return a.sum(axis=self.axes, keepdims=keepdim, dtype=wide).astype(a.dtype)
        if a.dtype.kind in "biu":  # every integer sums to int64, as PyTorch (uint8, uint64
            return a.sum(axis=self.axes, keepdims=keepdim, dtype=np.int64)  # too: wrapping)
        return a.sum(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return _expand_reduced(g, self.shape, self.axes, self.keepdim)

    def graph_backward(self, g, out):
        return expand_reduced(g, self.shape, self.axes, self.keepdim)


class Mean(Function):
    complex_grad = True
    def forward(self, a, dim=None, keepdim=False):
        self.shape = a.shape
        self.axes = reduction_axes(dim, a.ndim)
        self.keepdim = keepdim
        self.count = int(np.prod([a.shape[ax] for ax in self.axes]))
        wide = accumulation_dtype(a)
        if self.count == 0:  # NaN, as PyTorch, without NumPy's warning
            return get_array_module(a).full(_reduced_shape(a.shape, self.axes, keepdim), np.nan,
                                            dtype=a.dtype)
        if wide is not None:
            return a.mean(axis=self.axes, keepdims=keepdim, dtype=wide).astype(a.dtype)
        return a.mean(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return _expand_reduced(g / self.count, self.shape, self.axes, self.keepdim)

    def graph_backward(self, g, out):
        return expand_reduced(g / self.count, self.shape, self.axes, self.keepdim)


class Max(Function):
    """Max over axes; ties share the gradient equally (as torch.amax does). Where the result
    is NaN, max()/min() share it among the NaNs; amax/amin (``nan_spread=False``) give the
    whole slice a NaN gradient, as PyTorch's do."""

    def forward(self, a, dim=None, keepdim=False, take_min=False, nan_spread=True):
        if a.dtype.kind == "c":
            refuse_complex("min" if take_min else "max", a)
        self.axes = reduction_axes(dim, a.ndim)
        self.keepdim, self.nan_spread = keepdim, nan_spread
        y = a.min(axis=self.axes, keepdims=True) if take_min else a.max(axis=self.axes, keepdims=True)
        self.save_for_backward(a, y)
        return y if keepdim else y.squeeze(axis=self.axes)

    def shares(self):
        """The share of its slice's gradient each element gets (ties split it)."""
        a, y = self.saved
        # a NaN is the max (min) where there is one: the gradient goes to it, as in PyTorch
        mask = ((a == y) | ((a != a) & (y != y))) if self.nan_spread else (a == y)
        mask = mask.astype(a.dtype)
        with np.errstate(**_QUIET):  # no element equals a NaN result: 0 / 0 in that slice
            mask /= mask.sum(axis=self.axes, keepdims=True)
        return mask

    def backward(self, g):
        xp = get_array_module(g)
        if not self.keepdim:
            for ax in self.axes:
                g = xp.expand_dims(g, ax)
        return g * self.shares()

    def graph_backward(self, g, out):
        a = self.inputs[0]
        g = expand_reduced(g, a.shape, self.axes, self.keepdim)
        return g * constant(self.shares())


MaxResult = namedtuple("MaxResult", ["values", "indices"])  # x.max(dim), as torch.return_types


class MaxDim(Function):
    """max/min over one dim that also returns indices, as torch.max(x, dim): the gradient goes
    to the returned index alone (ties do not split it, unlike amax)."""

    def forward(self, a, dim, keepdim, arg):
        self.dim, self.keepdim, self.arg, self.n = dim % a.ndim, keepdim, arg, a.shape[dim]
        y = get_array_module(a).take_along_axis(a, arg, axis=dim)  # arg has dim kept
        return y if keepdim else y.squeeze(axis=dim)

    def mask(self, dtype):
        """1 at the returned index of each slice, 0 elsewhere."""
        xp = get_array_module(self.arg)
        positions = xp.arange(self.n).reshape((-1,) + (1,) * (self.arg.ndim - self.dim - 1))
        return (positions == self.arg).astype(dtype)

    def backward(self, g):
        if not self.keepdim:
            g = get_array_module(g).expand_dims(g, self.dim)
        return g * self.mask(g.dtype)

    def graph_backward(self, g, out):
        a = self.inputs[0]
        g = expand_reduced(g, a.shape, (self.dim,), self.keepdim)
        return g * constant(self.mask(g.data.dtype))


class Var(Function):
    """Variance over axes, ``sum((x - mean)^2) / (N - correction)`` (correction 1: Bessel's),
    from the deviations of a first pass over the mean (no cancellation of E[x^2] - E[x]^2).
    On the CPU in float64 whatever the floating dtype, as PyTorch's CPU kernel accumulates (the
    std of float32 [1e30, 1] is finite there though its square is not); on a GPU 16-bit inputs
    in float32."""

    def forward(self, a, axes, correction, keepdim):
        self.axes, self.keepdim, self.dtype = axes, keepdim, a.dtype
        xp = get_array_module(a)
        wide = np.float64 if xp is np and a.dtype != np.float64 else accumulation_dtype(a)
        aw = a if wide is None else a.astype(wide)
        count = int(np.prod([a.shape[ax] for ax in axes]))
        self.dof = max(count - correction, 0)  # 0: inf or nan, as in PyTorch
        d = aw - aw.mean(axis=axes, keepdims=True) if count else aw
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = self.reduce(d)
        # a: not needed here, but graph_backward reads the input Tensor, so an in-place change
        # of it must stop a backward (as PyTorch's, which saves it)
        self.save_for_backward(d, y, a)
        with np.errstate(over="ignore"):  # a variance beyond the dtype's range is inf
            return (y if keepdim else y.squeeze(axis=axes)).astype(a.dtype, copy=False)

    def reduce(self, d):
        return (d * d).sum(axis=self.axes, keepdims=True) / self.dof

    def var_gradient(self, g, y):
        """The gradient of the variance, from ``g``, the gradient of this op's output."""
        return g

    def backward(self, g):
        d, y, _ = self.saved
        xp = get_array_module(g)
        g = g.astype(d.dtype, copy=False)
        if not self.keepdim:
            for ax in self.axes:
                g = xp.expand_dims(g, ax)
        scale = 2 / self.dof if self.dof else np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.var_gradient(g, y) * scale * d).astype(self.dtype, copy=False)

    def graph_backward(self, g, out):
        (x,) = self.inputs
        d = x - Mean.apply(x, dim=self.axes, keepdim=True)
        if not self.keepdim:
            g = Reshape.apply(g, shape=_reduced_shape(x.shape, self.axes, True))
            out = Reshape.apply(out, shape=g.shape)
        scale = 2 / self.dof if self.dof else np.inf
        return self.var_gradient_graph(g, out) * d * scale

    def var_gradient_graph(self, g, y):
        return g


class Std(Var):
    """The square root of Var; where it is 0 (a constant input) the gradient is 0, as in
    PyTorch, instead of 0 * inf."""

    def reduce(self, d):
        return get_array_module(d).sqrt(super().reduce(d))

    def var_gradient(self, g, y):
        return get_array_module(g).where(y == 0, 0, g / (2 * y)).astype(g.dtype, copy=False)

    def var_gradient_graph(self, g, y):
        return keep_where(y.data != 0, g / (y * 2))


def var(x, dim=None, unbiased=None, keepdim=False, correction=None, name="var"):
    """``x.var(...)`` and ``x.std(...)`` (name "std") with PyTorch's arguments: ``unbiased``
    (True: correction 1) or ``correction``, not both; ``x.var(False)`` is unbiased=False."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise TypeError(f"{name}: pass unbiased or correction, not both")
    if x.data.dtype.kind == "c":  # the mean |z - mean|^2: the two parts' variances added
        total = var(x.real, dim, unbiased, keepdim, correction) + \
            var(x.imag, dim, unbiased, keepdim, correction)
        return total.sqrt() if name.startswith("std") else total
    if not is_floating(x.data.dtype):
        raise UnsupportedDtypeError(f"{name}: needs a floating-point tensor, got dtype "
                                    f"{x.data.dtype}")
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    elif isinstance(correction, bool) or not (isinstance(correction, np.number) or
                                              is_real_number(correction)):
        raise TypeError(f"{name}: correction must be a number, got {type(correction).__name__}")
    axes = reduction_axes(dim, x.ndim)
    count = int(np.prod([x.shape[ax] for ax in axes])) if x.data.size else 0
    if count - correction <= 0:  # PyTorch counts numel / output numel: 0 for an empty input
        warnings.warn(f"{name}(): degrees of freedom is <= 0. Correction should be strictly less "
                      "than the reduction factor (input numel divided by output numel).",
                      UserWarning, stacklevel=3)
    return (Std if name.startswith("std") else Var).apply(x, axes=axes, correction=correction,
                                                          keepdim=bool(keepdim))


class TakeAlongDim(Function):
    """The values at ``index`` along ``dim`` (torch.gather), for indices that do not repeat
    along dim (topk's): each value's gradient goes back to where it came from."""

    complex_grad = True

    def forward(self, a, index, dim):
        self.shape, self.index, self.dim = a.shape, index, dim
        return get_array_module(a).take_along_axis(a, index, axis=dim)

    def backward(self, g):
        return TakeAlongDimGrad().forward(g, self.shape, self.index, self.dim)

    def graph_backward(self, g, out):
        return TakeAlongDimGrad.apply(g, shape=self.shape, index=self.index, dim=self.dim)


class TakeAlongDimGrad(Function):
    """TakeAlongDim's gradient as an op (for double backward): ``g`` written into zeros of
    ``shape`` at ``index`` along ``dim``; its own gradient takes those elements back."""

    complex_grad = True

    def forward(self, g, shape, index, dim):
        self.index, self.dim = index, dim
        xp = get_array_module(g)
        out = xp.zeros(shape, dtype=g.dtype)
        where = [xp.arange(n).reshape((-1,) + (1,) * (g.ndim - i - 1))
                 for i, n in enumerate(g.shape)]
        where[dim] = index
        out[tuple(where)] = g
        return out

    def backward(self, h):
        return get_array_module(h).take_along_axis(h, self.index, axis=self.dim)

    def graph_backward(self, h, out):
        return TakeAlongDim.apply(h, index=self.index, dim=self.dim)


TopkResult = namedtuple("TopkResult", ["values", "indices"])  # as torch.return_types.topk


def topk(x, k, dim=-1, largest=True, sorted=True):
    """The k largest (smallest) values along ``dim`` in order, and their int64 indices; NaN
    counts as the largest, as in PyTorch. Among equal values the indices are those PyTorch
    returns on the CPU (and the gradient goes to them). ``sorted=False`` selects the same
    elements as PyTorch but returns them sorted (PyTorch leaves their order unspecified)."""
    if x.data.dtype.kind == "c":
        refuse_complex("topk", x.data)
    refuse_unsigned(x.data.dtype, "topk_cpu")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"topk: k must be an int, got {type(k).__name__}")
    if x.data.dtype == np.bool_:
        raise UnsupportedDtypeError("topk: bool tensors are not supported (PyTorch refuses "
                                    "them too); convert with .int() or .float() first")
    axes = reduction_axes(dim, x.ndim)  # checks dim; () for a 0-d tensor
    data = x.data if x.ndim else x.data.reshape(1)
    d = axes[0] if axes else 0
    n = data.shape[d]
    if not 0 <= k <= n:
        raise BadArgumentError(f"topk: k = {k} is out of range for dim {dim} of size {n}")
    if not x.ndim:
        k = 1  # a 0-d tensor gives itself and index 0, for k = 0 too (as PyTorch)
    if x.ndim and traces_untracked():  # the indices a recorded op, so that they are exported
        indices = TopkIndices.apply(x, k=int(k), dim=d, largest=bool(largest))
        return TopkResult(TakeAlongDim.apply(x, index=indices.data, dim=d), indices)
    index = _topk_index(data, k, d, largest)
    source = x if x.ndim else Reshape.apply(x, shape=(1,))
    values = TakeAlongDim.apply(source, index=index, dim=d)
    if not x.ndim:
        values, index = Reshape.apply(values, shape=()), index.reshape(())
    return TopkResult(values, autograd.Tensor(index.astype(np.int64, copy=False)))


def _topk_index(data, k, d, largest):
    """The positions of the k largest (smallest) along ``d``, in order, ties as PyTorch's CPU
    topk orders them."""
    xp = get_array_module(data)
    n = data.shape[d]
    order = xp.argsort(data, axis=d, kind="stable") if xp is np else xp.argsort(data, axis=d)
    if largest:
        order = xp.flip(order, axis=d)
    index = order[(slice(None),) * d + (slice(0, k),)]
    if xp is np and k and n > 1:  # ties among the first k + 1: PyTorch's CPU order decides
        first = xp.take_along_axis(data, order[(slice(None),) * d + (slice(0, k + 1),)], axis=d)
        tied = _tied(first, d)
        if tied.any():
            index = index.copy()
            torch_order("topk", index, data, d, tied, k, bool(largest))
    return index


def traces_untracked():
    """Whether the installed hook (the ONNX exporter's tracer) asks to see the results minidl
    computes outside the graph (comparisons, logical ops, indices) as recorded ops. Hot paths
    test ``autograd._profiler_hook is not None`` first, so that without a hook this is not
    even called."""
    hook = autograd._profiler_hook
    return hook is not None and getattr(hook, "traces_untracked_ops", False)


class TopkIndices(Untracked):
    """topk's int64 indices as a recorded op, for a tracer that asks for it (see Compare)."""

    def forward(self, x, k, dim, largest):
        return _topk_index(x, k, dim, largest).astype(np.int64)


def any_all(a, op, axes, keepdim):
    """``a.any()``/``a.all()`` (``op``) over ``axes`` (none: each element on its own): bool, or
    uint8 (0 or 1) for a uint8 input, as in PyTorch."""
    dtype = np.uint8 if a.dtype == np.uint8 else np.bool_
    if axes == ():
        return a.astype(np.bool_).astype(dtype, copy=False)
    found = getattr(a, op)(axis=axes, keepdims=keepdim)
    return get_array_module(a).asarray(found).astype(dtype, copy=False)


class AnyAll(Untracked):
    """``any``/``all`` (``op``) over ``axes`` as a recorded op, for a tracer that asks for it
    (see Compare)."""

    def forward(self, x, op, axes, keepdim):
        return any_all(x, op, axes, keepdim)


class NonZero(Untracked):
    """``nonzero``'s (n, ndim) int64 positions as a recorded op, for a tracer that asks for it
    (see Compare)."""

    def forward(self, x):
        return get_array_module(x).argwhere(x).astype(np.int64).reshape(-1, x.ndim)


def nonzero_columns(condition):
    """``nonzero(condition, as_tuple=True)`` of a tensor of at least one dim while the ONNX
    exporter traces: the recorded NonZero's columns."""
    found = NonZero.apply(condition)
    return tuple(GetItem.apply(found, index=(slice(None), i)) for i in range(condition.ndim))


# ---- PyTorch's CPU order among tied values (see backend/ordering.py) ------------------------
def _tied(values, axis):
    """Per slice along ``axis`` of values in order: whether two neighbours are equal (NaNs
    count as equal to each other)."""
    xp = get_array_module(values)
    n = values.shape[axis]
    a = values.take(xp.arange(1, n), axis=axis)
    b = values.take(xp.arange(n - 1), axis=axis)
    same = (a == b) | ((a != a) & (b != b))
    return same.any(axis=axis)


def torch_order(kind, index, data, d, slices, *args):
    """Overwrite ``index`` (int64, along ``d``) with PyTorch's CPU indices for the slices of
    the NumPy array ``data`` along ``d`` where ``slices`` (data's shape without d) holds:
    ``kind`` is "topk" (args k, largest), "sort" (descending) or "kth" (k, from 0)."""
    from .backend import ordering

    topk_rows, sort_rows, kth_rows = ordering.rows_kernels()
    rows = np.ascontiguousarray(ordering.keys(np.moveaxis(data, d, -1)[slices]))
    target = np.moveaxis(index, d, -1)
    out = np.empty((rows.shape[0], target.shape[-1]), np.int64)
    if kind == "kth":
        kth_rows(rows, args[0], out.reshape(-1))
    else:
        (topk_rows if kind == "topk" else sort_rows)(rows, *args, out)
    target[slices] = out


# ---- shape ------------------------------------------------------------------------------
class Reshape(Function):
    complex_grad = True
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)

    def graph_backward(self, g, out):
        return Reshape.apply(g, shape=self.shape)


class Permute(Function):
    complex_grad = True
    def forward(self, a, axes):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(tuple(int(a) for a in np.argsort(self.axes)))

    def graph_backward(self, g, out):
        return Permute.apply(g, axes=tuple(int(a) for a in np.argsort(self.axes)))


class GetItem(Function):
    complex_grad = True
    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        out = a[index]
        if isinstance(out, np.generic):
            # NumPy gives a scalar copy for x[i, j]; with an Ellipsis added it gives a 0-d view,
            # so x[i, j].add_(1) writes into x as in PyTorch
            out = a[(index if isinstance(index, tuple) else (index,)) + (Ellipsis,)]
        return out

    def backward(self, g):
        return GetItemGrad().forward(g, self.shape, self.index)

    def graph_backward(self, g, out):
        return GetItemGrad.apply(g, shape=self.shape, index=self.index)


class GetItemGrad(Function):
    """GetItem's gradient as an op (for double backward): ``g`` added into zeros of ``shape``
    at ``index``; its own gradient is the same indexing again."""

    complex_grad = True

    def forward(self, g, shape, index):
        self.index = index
        xp = get_array_module(g)
        out = xp.zeros(shape, dtype=g.dtype)
        items = index if isinstance(index, tuple) else (index,)
        if all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items):
            out[index] = g  # basic indexing reaches each element at most once
        elif xp is np:
            np.add.at(out, index, g)  # accumulates where an integer index repeats
        elif hasattr(xp.add, "at"):
            xp.add.at(out, index, g)  # CuPy >= 12
        else:
            import cupyx

            cupyx.scatter_add(out, index, g)
        return out

    def backward(self, h):
        return h[self.index]

    def graph_backward(self, h, out):
        return GetItem.apply(h, index=self.index)


class SetItem(Function):
    complex_grad = True
    """``x[index] = value`` as an op of the graph: a copy of ``x`` with the selected elements
    replaced. ``x``'s gradient is the incoming one with those elements zeroed (they no longer
    come from ``x``); ``value``'s is what reaches them, summed back to its shape."""

    def forward(self, a, value, index):
        self.index, self.value_shape = index, value.shape
        out = a.copy()
        out[index] = value
        return out

    def backward(self, g):
        ga = g.copy()
        ga[self.index] = 0
        return ga, unbroadcast(g[self.index], self.value_shape)

    def graph_backward(self, g, out):
        keep = get_array_module(g.data).ones(g.shape, dtype=bool)
        keep[self.index] = False
        return keep_where(keep, g), GetItem.apply(g, index=self.index)


def strided_positions(xp, shape, strides, offset):
    """The flat indices ``offset + sum_d i_d * strides[d]`` over ``shape`` (an int64 array of
    that shape): where each element of an as_strided view lies in its 1-d base."""
    pos = xp.full(shape, offset, dtype=np.int64)
    for d, (n, step) in enumerate(zip(shape, strides)):
        pos = pos + (xp.arange(n, dtype=np.int64) * step).reshape(
            (1,) * d + (n,) + (1,) * (len(shape) - d - 1))
    return pos


def _scatter_add(out, pos, g):
    xp = get_array_module(out)
    if xp is np:
        np.add.at(out, pos, g)  # accumulates where a place repeats (an expand()ed view)
    elif hasattr(xp.add, "at"):
        xp.add.at(out, pos, g)  # CuPy >= 12
    else:
        import cupyx

        cupyx.scatter_add(out, pos, g)
    return out


class AsStrided(Function):
    """torch's as_strided on a 1-d input, as a copy: the elements at ``offset + sum_d i_d *
    strides[d]`` (strides in elements) over ``shape``. It stands for a view of a base in the
    graph (the views an in-place op re-records, as torch's AsStridedBackward) and saves only
    those sizes, so a second backward goes through it; the places are recomputed there."""

    complex_grad = True

    def forward(self, a, shape, strides, offset):
        self.n, self.shape, self.strides, self.offset = a.shape[0], shape, strides, offset
        return a[strided_positions(get_array_module(a), shape, strides, offset)]

    def backward(self, g):
        return AsStridedGrad().forward(g, self.n, self.shape, self.strides, self.offset)

    def graph_backward(self, g, out):
        return AsStridedGrad.apply(g, n=self.n, shape=self.shape, strides=self.strides,
                                   offset=self.offset)


class AsStridedGrad(Function):
    """AsStrided's gradient as an op (for double backward): ``g`` added into zeros of length
    ``n`` at the strided places; its own gradient is AsStrided again."""

    complex_grad = True

    def forward(self, g, n, shape, strides, offset):
        self.shape, self.strides, self.offset = shape, strides, offset
        xp = get_array_module(g)
        return _scatter_add(xp.zeros(n, dtype=g.dtype),
                            strided_positions(xp, shape, strides, offset), g)

    def backward(self, h):
        return h[strided_positions(get_array_module(h), self.shape, self.strides, self.offset)]

    def graph_backward(self, h, out):
        return AsStrided.apply(h, shape=self.shape, strides=self.strides, offset=self.offset)


class AsStridedScatter(Function):
    """``a`` (1-d) with the elements at AsStrided's places replaced by ``value`` (of ``shape``),
    as a copy: an in-place op on a view, recorded into its base's value (torch's CopySlices),
    saving only the sizes. ``a``'s gradient is the incoming one with those places zeroed;
    ``value``'s is what reaches them."""

    complex_grad = True

    def forward(self, a, value, shape, strides, offset):
        self.shape, self.strides, self.offset = shape, strides, offset
        out = a.copy()
        out[strided_positions(get_array_module(a), shape, strides, offset)] = value
        return out

    def backward(self, g):
        pos = strided_positions(get_array_module(g), self.shape, self.strides, self.offset)
        ga = g.copy()
        ga[pos] = 0
        return ga, g[pos]

    def graph_backward(self, g, out):
        xp = get_array_module(g.data)
        keep = xp.ones(g.shape, dtype=bool)
        keep[strided_positions(xp, self.shape, self.strides, self.offset)] = False
        return keep_where(keep, g), AsStrided.apply(g, shape=self.shape, strides=self.strides,
                                                    offset=self.offset)


def wrap_dim(dim, ndim, name):
    """``dim`` in [0, ndim) from [-ndim, ndim); a 0-d tensor takes 0 and -1, as in PyTorch."""
    n = max(ndim, 1)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{name}: dim must be an int, got {type(dim).__name__}")
    if not -n <= dim < n:
        raise DimError(f"{name}: dimension out of range (expected to be in range of "
                       f"[{-n}, {n - 1}], but got {dim})")
    return int(dim) % n


def sizes_or_keyword(name, args, by_name, keyword):
    """The sizes or dims of ``f(*args)``, or of ``f(keyword=...)`` as PyTorch's names them
    (``reshape(shape=...)``, ``permute(dims=...)``): one tuple, as ``args`` would hold it."""
    if not by_name:
        return args
    unknown = set(by_name) - {keyword}
    if unknown or args:
        raise TypeError(f"{name}() got an unexpected keyword argument "
                        f"{sorted(unknown)[0]!r}" if unknown else
                        f"{name}(): pass {keyword} positionally or by name, not both")
    return (by_name[keyword],)


def _sizes(name, sizes):
    """``f(2, 3)`` and ``f((2, 3))`` both as the tuple (2, 3), each an int."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"{name}: sizes must be ints, got {sizes!r}")
    return tuple(int(s) for s in sizes)


def expand_shape(shape, sizes):
    """The shape ``x.expand(*sizes)`` makes of ``shape``: -1 keeps a dim, a size-1 dim grows to
    any size, and new dims go in front."""
    sizes = _sizes("expand", sizes)
    lead = len(sizes) - len(shape)
    if lead < 0:
        raise ValueError(f"expand: {len(sizes)} sizes {sizes} for a tensor of {len(shape)} dims "
                         f"{shape}; pass at least one size per dim")
    out = []
    for i, s in enumerate(sizes):
        n = shape[i - lead] if i >= lead else None
        if n is None and s < 0:
            raise ValueError(f"expand: size {s} in the new leading dim {i} of {sizes} (-1 keeps "
                             "an existing dim only)")
        if s == -1 and n is not None:
            s = n
        if s < 0 or (n is not None and n != 1 and n != s):
            raise ValueError(f"expand: cannot expand shape {shape} to {sizes}: dim {i} has size "
                             f"{n}, and only a size-1 dim can change")
        out.append(s)
    return tuple(out)


class Expand(Function):
    complex_grad = True
    """A broadcast view (read-only, as NumPy makes it); the gradient sums over the copies."""

    def forward(self, a, shape):
        self.shape = a.shape
        return get_array_module(a).broadcast_to(a, shape)

    def backward(self, g):
        return unbroadcast(g, self.shape)

    def graph_backward(self, g, out):
        return g.sum_to_size(self.shape)


def repeat_sizes(shape, sizes):
    sizes = _sizes("repeat", sizes)
    if len(sizes) < len(shape):
        raise ValueError(f"repeat: {len(sizes)} repeat counts {sizes} for a tensor of "
                         f"{len(shape)} dims {shape}; pass at least one per dim")
    if any(s < 0 for s in sizes):
        raise ValueError(f"repeat: repeat counts must be >= 0, got {sizes}")
    return sizes


class Repeat(Function):
    complex_grad = True
    """``x.repeat(*sizes)`` (NumPy's tile): dim i of the result is sizes[i] copies of x's."""

    def forward(self, a, sizes):
        self.shape = a.shape
        full = (1,) * (len(sizes) - a.ndim) + a.shape
        self.pairs = tuple(x for r, n in zip(sizes, full) for x in (r, n))
        return get_array_module(a).tile(a.reshape(full), sizes)

    def backward(self, g):
        # element r * n + j of a dim of the result is element j of the copy r: split each dim
        # into (copies, n) and sum over the copies
        copies = tuple(range(0, len(self.pairs), 2))
        g = g.reshape(self.pairs).sum(axis=copies, dtype=accumulation_dtype(g))
        return g.reshape(self.shape)

    def graph_backward(self, g, out):
        copies = tuple(range(0, len(self.pairs), 2))
        g = Sum.apply(Reshape.apply(g, shape=self.pairs), dim=copies)
        return Reshape.apply(g, shape=self.shape)


def _narrow(x, dim, start, length):
    return autograd.share_version(  # a view of x, as PyTorch's split gives
        GetItem.apply(x, index=(slice(None),) * dim + (slice(start, start + length),)), x)


def split(x, split_size_or_sections, dim=0):
    """Pieces of ``split_size`` along ``dim`` (the last one smaller), or of each size in a
    list that sums to the dim's size; each piece keeps its gradient path to x."""
    if x.ndim == 0:
        raise BadArgumentError("split: needs a tensor with at least one dim, got a 0-d tensor")
    d = wrap_dim(dim, x.ndim, "split")
    n = x.shape[d]
    sections = split_size_or_sections
    if isinstance(sections, (int, np.integer)) and not isinstance(sections, bool):
        size = int(sections)
        if size < 0 or (size == 0 and n):
            raise ValueError(f"split: split_size must be > 0 (0 only for an empty dim), got "
                             f"{size} for dim {dim} of size {n}")
        sizes = [size] * (n // size) + ([n % size] if n % size else []) if n else [0]
    elif isinstance(sections, (tuple, list)):
        sizes = list(_sizes("split", (tuple(sections),)))
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} must be >= 0 and sum to the size {n} of "
                             f"dim {dim}")
    else:
        raise TypeError("split: split_size_or_sections must be an int or a list of ints, got "
                        f"{type(sections).__name__}")
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    return mark_multi_view(tuple(_narrow(x, d, start, size) for start, size in zip(starts, sizes)),
                           "Split")


def mark_multi_view(pieces, name):
    """The views of a function that returns several (split, unbind): PyTorch refuses an
    in-place change of one inside the graph, which minidl's in-place ops on views check."""
    for p in pieces:
        if p.__dict__.get("_view_base") is not None:
            p._multi_view = name
    return pieces


def chunk(x, chunks, dim=0):
    """At most ``chunks`` pieces of ceil(n / chunks) along ``dim`` (fewer where n is small,
    ``chunks`` empty ones for an empty dim), as PyTorch."""
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)):
        raise TypeError(f"chunk: chunks must be an int, got {type(chunks).__name__}")
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be > 0, got {chunks}")
    if x.ndim == 0:
        raise BadArgumentError("chunk: needs a tensor with at least one dim, got a 0-d tensor")
    n = x.shape[wrap_dim(dim, x.ndim, "chunk")]
    if n == 0:
        return split(x, [0] * int(chunks), dim)
    return split(x, -(-n // int(chunks)), dim)


class Concat(Function):
    complex_grad = True
    """Arrays joined along ``dim``; 1-d empty arrays among others of more dims are left out, as
    PyTorch's cat does (its legacy rule), and get an empty gradient."""

    def forward(self, *arrays, dim=0):
        self.dim = dim
        ndim = max(a.ndim for a in arrays)
        self.skip = [ndim > 1 and a.shape == (0,) for a in arrays]
        kept = [a for a, s in zip(arrays, self.skip) if not s]
        self.sizes = [a.shape[dim] for a in kept]
        return get_array_module(*arrays).concatenate(kept, axis=dim)

    def backward(self, g):
        xp = get_array_module(g)
        splits = np.cumsum(self.sizes)[:-1].tolist()
        parts = iter(xp.split(g, splits, axis=self.dim))
        return tuple(xp.zeros((0,), g.dtype) if s else next(parts) for s in self.skip)

    def graph_backward(self, g, out):
        parts, start, lead = [], 0, (slice(None),) * self.dim
        for size in self.sizes:
            parts.append(GetItem.apply(g, index=lead + (slice(start, start + size),)))
            start += size
        parts = iter(parts)
        return tuple(constant(get_array_module(g.data).zeros((0,), g.data.dtype)) if s
                     else next(parts) for s in self.skip)


def cat(tensors, dim=0):
    """Concatenate along ``dim``; mixed dtypes meet at PyTorch's result type."""
    if _is_tensor(tensors):
        raise TypeError("cat: expected a sequence of tensors, got a single tensor")
    tensors = list(tensors)
    if not tensors:
        raise BadArgumentError("cat: expected a non-empty list of tensors")
    if getattr(tensors[0], "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return tensors[0]._quantized_op("cat", tensors, dim)
    if getattr(tensors[0], "is_nested", False) is True:  # minidl.nested
        return tensors[0]._nested_op("cat", tensors, dim)
    for i, t in enumerate(tensors):
        if not _is_tensor(t):
            raise TypeError(f"cat: expected tensors, got {_describe(t)} at position {i}")
        if t.ndim == 0:
            raise BadArgumentError(f"cat: zero-dimensional tensor (at position {i}) cannot be "
                                   "concatenated")
    dtypes = {t.data.dtype for t in tensors}
    if len(dtypes) > 1:
        dtype = functools.reduce(promote_types, dtypes)
        tensors = [t if t.data.dtype == dtype else Cast.apply(t, dtype=dtype) for t in tensors]
    ndim = max(t.ndim for t in tensors)
    return Concat.apply(*tensors, dim=wrap_dim(dim, ndim, "cat"))


def stack(tensors, dim=0):
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)
