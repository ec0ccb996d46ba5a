"""The ``torch.X(tensor, ...)`` forms of Tensor methods (``minidl.exp(x)``,
``minidl.flatten(x, 1)``, ``minidl.sum(x, dim=0)``, ``minidl.max(x, dim=1)``), and the small
queries PyTorch code asks of tensors and dtypes (``is_tensor``, ``numel``,
``get_default_dtype``, ``finfo``, ``iinfo``).

Each function form calls the method of the same name, so the two cannot differ.
"""
from __future__ import annotations

import functools

import numpy as np

from .backend import get_array_module
from .backend.dtypes import as_dtype, is_floating
from .math_ops import write_out as _into_out
from .tensor import Function, Tensor, is_grad_enabled

# Tensor methods that PyTorch also offers as torch.<name>(input, ...)
METHOD_FORMS = (
    "abs", "add", "all", "amax", "any", "argmax", "argmin", "chunk", "clone", "detach", "div",
    "exp", "flatten", "log", "log_softmax", "masked_fill", "matmul", "mean", "mul", "permute",
    "pow", "relu", "reshape", "sigmoid", "softmax", "split", "sqrt", "squeeze", "std", "sub",
    "sum", "t", "tanh", "topk", "transpose", "unsqueeze", "var", "remainder", "argsort", "sort",
    "gather", "index_select", "cumsum", "cumprod", "flip", "roll", "tril", "triu", "prod",
    "logsumexp", "norm", "amin", "sin", "cos", "log1p", "expm1", "log2", "log10", "sign",
    "floor", "ceil", "round", "trunc", "reciprocal", "rsqrt", "square", "neg", "narrow",
    "unbind", "movedim", "swapaxes", "tile", "masked_select", "nonzero", "take_along_dim",
    "mm", "bmm", "outer", "dot", "eq", "ne", "lt", "le", "gt", "ge", "isnan", "isinf",
    "isfinite", "logical_and", "logical_or", "logical_not", "logical_xor", "allclose", "equal",
    "diag", "diagonal", "lerp", "addcmul", "addcdiv", "scatter", "scatter_add", "index_add",
    "argwhere", "cummax", "cummin", "median", "unflatten", "swapdims", "frac",
)


def _method_form(name):
    method = getattr(Tensor, name)

    @functools.wraps(method)
    def form(input, *args, **kwargs):
        if name == "pow" and not isinstance(input, Tensor) and args and \
                isinstance(args[0], Tensor) and isinstance(input, (bool, int, float, complex)):
            # torch.pow(self: Number, exponent: Tensor): the number raised to each element
            exponent = args[0]
            out = kwargs.pop("out", None)
            if args[1:] or kwargs:
                raise TypeError("pow(): a number base takes only the exponent tensor and out")
            if out is not None:
                return _into_out(name, out, lambda: exponent.__rpow__(input), [exponent])
            return exponent.__rpow__(input)
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}(): argument 'input' must be a Tensor, got "
                            f"{type(input).__name__}")
        if "out" in kwargs:
            out = kwargs.pop("out")
            if out is not None:
                _check_out_dtype(name, out, input, args, kwargs)
                if name in _SUMS_IN_OUT_DTYPE and isinstance(out, Tensor):
                    kwargs.setdefault("dtype", out.dtype)  # as torch: summed in out's dtype
                return _into_out(name, out, lambda: getattr(input, name)(*args, **kwargs),
                                 [input, *args, *kwargs.values()])
        return getattr(input, name)(*args, **kwargs)

    form.__name__ = form.__qualname__ = name
    form.__doc__ = f"``minidl.{name}(input, ...)`` is ``input.{name}(...)``.\n\n" + (
        method.__doc__ or "")
    return form


# out= of these sets the dtype the input is summed in (torch: sum(x, 0, out=int64_tensor) of
# [1.5, 2.0] is 3); a dtype= given too must be out's
_SUMS_IN_OUT_DTYPE = ("sum", "prod", "cumsum", "cumprod", "nansum")
_INDEX_RESULTS = ("argmax", "argmin")
_PRODUCTS = ("matmul", "mm", "bmm", "dot", "outer", "vdot")


def _check_out_dtype(name, out, input, args, kwargs):
    """torch's out= dtype rules that the result's cast does not cover: an index result needs an
    int64 out, a matrix product an out of its own dtype, a sum's dtype= must be out's."""
    if not isinstance(out, Tensor):
        return
    want = np.dtype(out.dtype)
    if name in _INDEX_RESULTS and want != np.int64:
        raise RuntimeError(f"Expected out tensor to have dtype long int (int64), but got {want} "
                           "instead")
    if name in _PRODUCTS:
        others = [a for a in args if isinstance(a, Tensor)]
        have = np.dtype(input.dtype) if not others else np.result_type(
            input.data.dtype, *(a.data.dtype for a in others))
        if have != want:
            raise RuntimeError(f"{name}(): expected out tensor to have dtype {have}, but got "
                               f"{want} instead")
    if name in _SUMS_IN_OUT_DTYPE and kwargs.get("dtype") is not None and \
            np.dtype(kwargs["dtype"]) != want:
        raise RuntimeError(f"Expected out tensor to have dtype {np.dtype(kwargs['dtype'])}, but "
                           f"got {want} instead")


def max(input, dim=None, keepdim=False, *, other=None):  # noqa: A001  (PyTorch's name)
    """``max(x)``, ``max(x, dim)`` (values and indices) or ``max(x, other)``, the elementwise
    maximum, as PyTorch overloads it."""
    if isinstance(dim, Tensor):
        dim, other = None, dim
    if other is not None:
        return input.maximum(other)
    return input.max() if dim is None else input.max(dim, keepdim)


def min(input, dim=None, keepdim=False, *, other=None):  # noqa: A001
    """``min(x)``, ``min(x, dim)`` or ``min(x, other)``, as PyTorch overloads it."""
    if isinstance(dim, Tensor):
        dim, other = None, dim
    if other is not None:
        return input.minimum(other)
    return input.min() if dim is None else input.min(dim, keepdim)


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def numel(input) -> int:
    if not isinstance(input, Tensor):
        raise TypeError(f"numel(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(input).__name__}")
    return input.numel()


def get_default_dtype():
    """The default floating dtype, float32 unless ``set_default_dtype`` changed it: what
    ``minidl.tensor`` makes of Python floats, what float factories and layers create."""
    from .backend.dtypes import default_float

    return default_float()


def set_default_dtype(d):
    """Make ``d`` (float32, float64, float16 or bfloat16) the default floating dtype, as
    ``torch.set_default_dtype``: Python floats, float factories (zeros, rand, arange with
    float arguments, ...), layers' parameters and integer-to-float promotion use it. Any other
    dtype raises TypeError."""
    from .backend.dtypes import set_default_float

    set_default_float(d)


def get_default_device():
    """Where factory functions create tensors (``minidl.device("cpu")`` unless changed)."""
    from .backend import default_device, device

    return device(default_device())


def set_default_device(device):
    """Factory functions (zeros, ones, rand, arange, tensor of a list or array, ...) create on
    ``device`` ("cpu" or "cuda"; None: back to the CPU), as ``torch.set_default_device``;
    layers' parameters are created on the CPU still (move them with ``.to``)."""
    from .backend import set_default_device as set_device

    set_device(device)


def finfo(dtype=None):
    """Limits of a floating-point dtype (the default dtype unless given): ``.eps``, ``.max``,
    ``.tiny``... bfloat16 through ml_dtypes."""
    dtype = get_default_dtype() if dtype is None else as_dtype(dtype)
    if dtype.kind == "c":  # a complex dtype's parts, as torch.finfo
        dtype = np.dtype(np.float64 if dtype == np.complex128 else np.float32)
    if not is_floating(dtype):
        raise TypeError(f"finfo: {dtype} is not a floating-point dtype")
    if dtype.kind == "f":
        return np.finfo(dtype)
    import ml_dtypes

    return ml_dtypes.finfo(dtype)


def iinfo(dtype):
    """Limits of an integer dtype: ``.min``, ``.max``, ``.bits``."""
    dtype = as_dtype(dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"iinfo: {dtype} is not an integer dtype")
    return np.iinfo(dtype)


def _install(namespace):
    """Put the method forms Tensor has into ``namespace`` (minidl's), leaving names it already
    defines as they are."""
    for name in METHOD_FORMS:
        if hasattr(Tensor, name) and name not in namespace:
            namespace[name] = _method_form(name)


# ---- structure.py (tensordot, kron, *_scatter, masked_scatter_, ...) and sampling.py (tensor
# queries such as nbytes, and the in-place samplers random_, exponential_, ...): a layer above
# tensor.py, since their in-place methods go through its in-place machinery
from . import sampling as _sampling, structure as _structure  # noqa: E402

for _methods in (_structure.TENSOR_METHODS, _sampling.TENSOR_METHODS):
    for _name, _fn in _methods.items():
        setattr(Tensor, _name, _fn)


# ---- the in-place forms of elementwise methods: x.erf_(), x.ge_(0), x.lerp_(y, 0.5) ---------
# Each is the method of the same name, written back into the tensor under the in-place rules
# (tensor.py's _inplace_by: recorded as the tensor itself where the graph takes part, written
# into the array, which views see, where it does not). As in PyTorch, the result must keep the
# tensor's shape and be castable to its dtype (a float result does not go into an int tensor).
INPLACE_FORMS = (
    "acos", "arccos", "acosh", "arccosh", "asin", "arcsin", "asinh", "arcsinh", "atan", "arctan",
    "atanh", "arctanh", "atan2", "arctan2", "cosh", "sinh", "tan", "sinc", "exp2", "log10",
    "log2", "logit", "erf", "erfc", "erfinv", "lgamma", "digamma", "polygamma", "mvlgamma", "i0",
    "igamma", "igammac",
    "deg2rad", "rad2deg", "fix", "sgn", "negative", "absolute", "nan_to_num", "xlogy",
    "copysign", "heaviside", "hypot", "ldexp", "nextafter", "float_power", "gcd", "lcm", "fmod",
    "remainder", "floor_divide", "divide", "true_divide", "multiply", "subtract", "lerp",
    "addcmul", "addcdiv", "addmm", "addmv", "addr", "addbmm", "baddbmm", "cumsum", "cumprod",
    "tril", "triu", "renorm", "eq", "ne", "lt", "le", "gt", "ge", "greater", "greater_equal",
    "less", "less_equal", "not_equal", "logical_and", "logical_or", "logical_xor",
    "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
    "bitwise_left_shift", "bitwise_right_shift", "masked_scatter",
)


# comparisons written in place: in the graph, PyTorch records them (EqBackward0, ...) with a
# zero gradient for the tensor and a tensor argument, so the tensor keeps requires_grad
_COMPARISONS = {"eq": "Eq", "ne": "Ne", "lt": "Lt", "le": "Le", "gt": "Gt", "ge": "Ge",
                "greater": "Gt", "greater_equal": "Ge", "less": "Lt", "less_equal": "Le",
                "not_equal": "Ne",
                # PyTorch writes these values without recording them (the old node's gradient
                # flows on, and a leaf is not refused): here they count as comparisons
                "logical_and": "LogicalAnd", "logical_or": "LogicalOr",
                "logical_xor": "LogicalXor", "logical_not": "LogicalNot"}


class _ComparisonResult(Function):
    """The values of a comparison (``value``, an array) in the first input's dtype, with a
    zero gradient for every input."""

    def forward(self, *inputs, value):
        self.like = [(x.shape, x.dtype) for x in inputs]
        self.xp = get_array_module(value)
        return value.astype(inputs[0].dtype)

    def backward(self, g):
        grads = tuple(self.xp.zeros(shape, dtype) for shape, dtype in self.like)
        return grads if len(grads) > 1 else grads[0]

    def graph_backward(self, g, out):
        # zeros whatever the inputs: constants, so a second backward passes through
        grads = tuple(Tensor(self.xp.zeros(shape, dtype), dtype=dtype) for shape, dtype in self.like)
        return grads if len(grads) > 1 else grads[0]


def _inplace_form(name):
    from .backend.dtypes import category
    from .tensor import _inplace_by, refuse_complex_abs_

    method = getattr(Tensor, name)
    inplace = name + "_"
    if name in _COMPARISONS:  # grad_fn=<EqBackward>, as PyTorch names it
        result_op = type(_COMPARISONS[name], (_ComparisonResult,), {})

    def form(self, *args, **kwargs):
        if name == "absolute":
            refuse_complex_abs_(self)
        if name == "float_power" and self.dtype != np.float64:
            raise RuntimeError(f"the base given to float_power_ has dtype {self.dtype} but the "
                               "operation's result requires dtype float64")

        def compute(t, _):
            # t is self, or (where the graph records the change) self's old node: an argument
            # that is self itself (x.mul_(x)) reads the old value too
            y = method(t, *[t if a is self else a for a in args], **kwargs)
            if tuple(y.shape) != tuple(t.shape):
                raise RuntimeError(f"{inplace}: output with shape {list(t.shape)} doesn't match "
                                   f"the broadcast shape {list(y.shape)}")
            have, want = np.dtype(y.dtype), np.dtype(t.dtype)
            if category(have) > category(want) or (want.kind == "b" and have.kind != "b"):
                raise RuntimeError(f"{inplace}: result type {have} can't be cast to the desired "
                                   f"output type {want}")
            if name in _COMPARISONS and is_floating(t.data.dtype) and (
                    t.requires_grad or grad_arg is not None) and is_grad_enabled():
                extra = [] if grad_arg is None else [t if grad_arg is self else grad_arg]
                y = result_op.apply(t, *extra, value=y.data)
            return y
        grad_arg = next((a for a in args if isinstance(a, Tensor) and a.requires_grad), None)
        return _inplace_by(self, inplace, compute, grad_arg)

    form.__name__ = form.__qualname__ = inplace
    form.__doc__ = f"``x.{inplace}(...)``: ``x.{name}(...)`` written into ``x``."
    return form


def _install_inplace_forms():
    for name in INPLACE_FORMS:
        if hasattr(Tensor, name) and not hasattr(Tensor, name + "_"):
            setattr(Tensor, name + "_", _inplace_form(name))
    # tensor.py's atan2_/hypot_ wrote a float result into an integer tensor: these check the
    # result's dtype and shape as PyTorch does
    for name in ("atan2", "arctan2", "hypot"):
        setattr(Tensor, name + "_", _inplace_form(name))


# the named bitwise methods beside the operators & | ^ ~ << >>
def _bitwise(op):
    return lambda self, other: op(self, other)


for _name, _op in (("bitwise_and", lambda a, b: a & b), ("bitwise_or", lambda a, b: a | b),
                   ("bitwise_xor", lambda a, b: a ^ b)):
    if not hasattr(Tensor, _name):
        setattr(Tensor, _name, _bitwise(_op))
if not hasattr(Tensor, "bitwise_not"):
    Tensor.bitwise_not = lambda self: ~self
_install_inplace_forms()
