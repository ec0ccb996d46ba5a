"""PyTorch's ``torch._foreach_*`` ops: one op applied to every tensor of a list (PyTorch fuses
them into few kernels; here each is the tensor's own op, so each result, and its gradient, is
the one ``Tensor`` op gives). Model-EMA code uses them (``torch._foreach_lerp_(ema, params,
1 - decay)``, ``_foreach_mul_`` then ``_foreach_add_``), as do hand-written optimizers.

The second argument is, as in PyTorch, a list of tensors (one per tensor), a list of numbers
(one per tensor), or one number or tensor for all of them. The out-of-place forms return a new
list; the in-place forms (a trailing underscore) change each tensor under the in-place rules
of its own op and return the list of them. Lists that do not fit are refused with PyTorch's
words, before any tensor is changed."""
from __future__ import annotations

import numbers

from .tensor import Tensor

__all__ = []  # the names start with an underscore: minidl.__init__ sets them one by one

UNARY = ("abs", "acos", "asin", "atan", "ceil", "cos", "cosh", "erf", "erfc", "exp", "expm1",
         "floor", "frac", "lgamma", "log", "log10", "log1p", "log2", "neg", "reciprocal",
         "round", "rsqrt", "sigmoid", "sign", "sin", "sinh", "sqrt", "tan", "tanh", "trunc")
BINARY = ("add", "sub", "mul", "div", "pow", "clamp_min", "clamp_max", "maximum", "minimum")


def _tensors(name, tensors, what="self"):
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"_foreach_{name}(): argument '{what}' must be a list or tuple of "
                        f"Tensors, not {type(tensors).__name__}")
    if len(tensors) == 0:
        raise RuntimeError("Tensor list must have at least one tensor.")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"_foreach_{name}(): argument '{what}' must hold Tensors; item {i} "
                            f"is {type(t).__name__}")
    return list(tensors)


def _paired(name, tensors, other, what):
    """``other``, a second list of tensors, checked to hold one tensor per tensor."""
    other = _tensors(name, other, what)
    _same_count(tensors, other)
    return other


def _same_count(tensors, other):
    if len(other) != len(tensors):
        raise RuntimeError("Tensor lists must have the same number of tensors, got "
                           f"{len(tensors)} and {len(other)}")


def _per_tensor(name, tensors, other, what="other"):
    """``other`` spread to one value per tensor (a list of tensors or of numbers, or one)."""
    if isinstance(other, (list, tuple)):
        if all(isinstance(o, Tensor) for o in other):
            _same_count(tensors, other)
        else:
            if not all(isinstance(o, numbers.Number) for o in other):
                raise TypeError(f"_foreach_{name}(): argument '{what}' must be Tensors or "
                                "numbers, not a mix of them or of other things")
            if len(other) != len(tensors):
                raise RuntimeError("Tensor list must have same number of elements as scalar "
                                   "list.")
        return list(other)
    if not isinstance(other, (Tensor, numbers.Number)):
        raise TypeError(f"_foreach_{name}(): argument '{what}' must be a Tensor, a number, or "
                        f"a list of them, not {type(other).__name__}")
    return [other] * len(tensors)


def _binary_op(t, name, o, in_place, alpha):
    if name in ("add", "sub"):
        kw = {} if alpha == 1 else {"alpha": alpha}
        return getattr(t, name + ("_" if in_place else ""))(o, **kw)
    if name in ("maximum", "minimum"):
        if in_place:  # torch has no Tensor.maximum_: the same values, kept in t
            return t.clamp_(**{"min" if name == "maximum" else "max": o})
        if not isinstance(o, Tensor):
            return t.clamp_min(o) if name == "maximum" else t.clamp_max(o)
        return getattr(t, name)(o)
    return getattr(t, name + ("_" if in_place else ""))(o)


def _make_binary(name, in_place):
    def op(self, other, *, alpha=1):
        tensors = _tensors(name, self)
        others = _per_tensor(name, tensors, other)
        out = [_binary_op(t, name, o, in_place, alpha) for t, o in zip(tensors, others)]
        return tensors if in_place else out
    op.__name__ = f"_foreach_{name}{'_' if in_place else ''}"
    op.__doc__ = f"``Tensor.{name}`` on each tensor of ``self`` (with the matching ``other``)."
    return op


def _make_unary(name, in_place):
    def op(self):
        tensors = _tensors(name, self)
        out = [getattr(t, name + ("_" if in_place else ""))() for t in tensors]
        return tensors if in_place else out
    op.__name__ = f"_foreach_{name}{'_' if in_place else ''}"
    op.__doc__ = f"``Tensor.{name}`` on each tensor of ``self``."
    return op


def _make_lerp(in_place):
    def op(self, tensors1, weight):
        tensors = _tensors("lerp", self)
        ends = _paired("lerp", tensors, tensors1, "tensors1")
        weights = _per_tensor("lerp", tensors, weight, "weight")
        out = [(t.lerp_ if in_place else t.lerp)(e, w) for t, e, w in zip(tensors, ends, weights)]
        return tensors if in_place else out
    op.__name__ = "_foreach_lerp_" if in_place else "_foreach_lerp"
    op.__doc__ = "``self[i] + weight * (tensors1[i] - self[i])`` for each i."
    return op


def _make_addc(name, in_place):
    def op(self, tensor1, tensor2, value=1):
        tensors = _tensors(name, self)
        firsts = _paired(name, tensors, tensor1, "tensor1")
        seconds = _paired(name, tensors, tensor2, "tensor2")
        if isinstance(value, Tensor) and value.ndim == 1:  # one value per tensor, as a tensor
            if value.numel() != len(tensors):
                raise RuntimeError("Tensor list must have same number of elements as scalar "
                                   "list.")
            value = value.tolist()
        values = _per_tensor(name, tensors, value, "value")
        method = name + ("_" if in_place else "")
        out = [getattr(t, method)(a, b, value=v.item() if isinstance(v, Tensor) else v)
               for t, a, b, v in zip(tensors, firsts, seconds, values)]
        return tensors if in_place else out
    op.__name__ = f"_foreach_{name}{'_' if in_place else ''}"
    op.__doc__ = f"``Tensor.{name}`` on each tensor of ``self``."
    return op


def _foreach_norm(self, ord=2, dtype=None):
    """The vector norm of each tensor (a list of 0-d tensors)."""
    from .linalg import vector_norm

    return [vector_norm(t, ord, dtype=dtype) for t in _tensors("norm", self)]


def _foreach_max(self):
    """The largest element of each tensor (a list of 0-d tensors)."""
    return [t.max() for t in _tensors("max", self)]


def _foreach_zero_(self):
    tensors = _tensors("zero_", self)
    for t in tensors:
        t.zero_()
    return tensors


def _foreach_copy_(self, src, non_blocking=False):
    tensors = _tensors("copy_", self)
    sources = _paired("copy_", tensors, src, "src")
    for t, s in zip(tensors, sources):
        t.copy_(s, non_blocking=non_blocking)
    return tensors


def functions():
    """Every ``_foreach_*`` op by name."""
    out = {"_foreach_norm": _foreach_norm, "_foreach_max": _foreach_max,
           "_foreach_zero_": _foreach_zero_, "_foreach_copy_": _foreach_copy_}
    for in_place in (False, True):
        suffix = "_" if in_place else ""
        for name in UNARY:
            out[f"_foreach_{name}{suffix}"] = _make_unary(name, in_place)
        for name in BINARY:
            out[f"_foreach_{name}{suffix}"] = _make_binary(name, in_place)
        for name in ("addcmul", "addcdiv"):
            out[f"_foreach_{name}{suffix}"] = _make_addc(name, in_place)
        out[f"_foreach_lerp{suffix}"] = _make_lerp(in_place)
    return out
