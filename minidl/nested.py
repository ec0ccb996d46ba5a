"""Nested (ragged) tensors, as ``torch.nested``: a batch of tensors whose lengths differ.

Two layouts, as torch's:

- ``minidl.jagged`` (the one to use): one flat ``values`` Tensor holding every component one
  after another along the ragged dim, plus ``offsets`` (B + 1 int64 boundaries) and, for a
  narrowed view with gaps, ``lengths``. ``values`` has the nested tensor's shape without the
  batch dim, the ragged dim holding the total length; ``transpose(1, 2)`` of (B, j, H, D)
  transposes ``values`` and moves the ragged dim, as torch's ``_ragged_idx``.
- ``minidl.strided``: a list of component Tensors of one ndim, any dim ragged.

Design: ``NestedTensor`` subclasses ``Tensor`` (so ``isinstance(nt, Tensor)`` holds and Python
tries ``NestedTensor.__radd__`` before ``Tensor.__add__`` in ``dense + nt``), but it owns no
array of its own: every op it supports is written as ordinary minidl ops on ``values`` (one
call for the pointwise ops, ``linear``, ``layer_norm``, softmax over a regular dim), on a padded
view of it (one ``index_select`` out to (B, ..., L, ...), the op, one ``index_select`` back:
``to_padded_tensor``, softmax and sums over the ragged dim, attention with the padded keys
masked out), or on the components (``narrow`` per sequence, then ``cat``: the strided layout
and the rarer cases). So the autograd graph is minidl's own, with no new ``Function``: gradients reach ``values`` (jagged) or the components (strided), and double
backward works wherever the underlying ops have it. The ``nn.functional`` ops that take nested
input check ``getattr(x, "is_nested", False)`` and hand it to ``x._nested_op`` (no import of
this module from below, as ``is_quantized`` does for ``minidl.ao``). Any other Tensor method
raises ``NotImplementedError`` naming the op, and an op that reaches for the dense array
(``.data``) does the same, so nothing computes on a wrong layout silently.

Two jagged nested tensors share a structure when they share the ``offsets`` tensor (torch's
nested int ``j1``): ``nt + nt.exp()`` works, two tensors built apart do not add, as in torch.
"""
from __future__ import annotations

import itertools
import numbers
import os
import sys

import numpy as np

from . import functional as _F
from .backend.dtypes import as_dtype, is_differentiable
from .nn import attention as _attention
from .ops import cat as _cat, stack as _stack, where as _dense_where
from .sparse import jagged, strided
from .tensor import Tensor, is_grad_enabled, tensor as _tensor

__all__ = ["NestedTensor", "nested_tensor", "as_nested_tensor", "nested_tensor_from_jagged",
           "narrow", "to_padded_tensor", "masked_select", "jagged", "strided"]

_counter = itertools.count(1)
# torch's refusal of an op that reads the sizes of a strided nested tensor
_NO_SIZES = ("Internal error: NestedTensorImpl doesn't support sizes (the strided layout has no "
             "shape; use the jagged layout)")
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class RaggedSize:
    """The size of a jagged dim (torch's nested int, printed ``j1``): one per offsets tensor."""

    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return f"j{self.n}"

    def __eq__(self, other):
        return isinstance(other, RaggedSize) and other.n == self.n

    def __hash__(self):
        return hash(("j", self.n))


def _ragged_size(offsets):
    size = offsets.__dict__.get("_nested_int")
    if size is None:
        size = offsets._nested_int = RaggedSize(next(_counter))
    return size


def _is_nt(x):
    return isinstance(x, NestedTensor)


def _int_list(t):
    return [int(v) for v in np.asarray(t.numpy()).reshape(-1)]


def _cached_ints(t):
    """The entries of an offsets or lengths tensor, kept on it: every op's result shares it."""
    found = t.__dict__.get("_nested_ints")
    if found is None:
        found = t._nested_ints = _int_list(t)
    return found


class NestedTensor(Tensor):
    """A nested tensor (``is_nested``): see the module's docstring for its two layouts."""

    is_nested = True
    __hash__ = Tensor.__hash__

    def __init__(self, *, components=None, values=None, offsets=None, lengths=None,
                 ragged_idx=1, leaf=False):
        d = self.__dict__
        d["_leaf"] = leaf  # made by nested_tensor(): its gradient is read as nt.grad
        if components is not None:
            d["_layout"] = strided
            d["_components"] = list(components)
        else:
            d["_layout"] = jagged
            d["_values"] = values
            d["_offsets"] = offsets
            d["_lengths"] = lengths
            d["_ragged_idx"] = ragged_idx
            starts = _cached_ints(offsets)  # read once per offsets tensor (no sync per op)
            d["_starts"] = starts[:-1]
            d["_lens"] = (_cached_ints(lengths) if lengths is not None
                          else [b - a for a, b in zip(starts[:-1], starts[1:])])

    # ---- what a dense op must not use ------------------------------------------------------
    @property
    def data(self):
        # name the op: the outermost public minidl function on the way here (the one called)
        op, frame = "this op", sys._getframe(1)
        for _ in range(12):
            if frame is None or not frame.f_code.co_filename.startswith(_PACKAGE):
                break
            name = frame.f_code.co_name
            kind = frame.f_locals.get("cls") if name == "apply" else None
            if isinstance(kind, type):
                op = kind.__name__
            elif not name.startswith(("_", "<")) and name not in ("op", "form", "wrapper",
                                                                   "forward", "apply"):
                op = name
            frame = frame.f_back
        raise NotImplementedError(f"{op}: not supported for nested tensors (layout "
                                  f"{self._layout}); it has no single dense array")

    @data.setter
    def data(self, value):
        raise NotImplementedError("setting .data of a nested tensor is not supported")

    # ---- properties ------------------------------------------------------------------------
    @property
    def layout(self):
        return self._layout

    @property
    def is_jagged(self):
        return self._layout is jagged

    def _parts(self):
        """The dense tensors holding the values: [values] or the components."""
        return [self._values] if self.is_jagged else self._components

    @property
    def dtype(self):
        parts = self._parts()
        return parts[0].dtype if parts else np.dtype(np.float32)

    @property
    def device(self):
        parts = self._parts()
        return parts[0].device if parts else "cpu"

    @property
    def is_cuda(self):
        return str(self.device).startswith("cuda")

    @property
    def is_cpu(self):
        return not self.is_cuda

    is_sparse = is_sparse_csr = is_quantized = False

    @property
    def itemsize(self):
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self):
        return sum(p.nbytes for p in self._parts())

    @property
    def mT(self):
        return self.transpose(-2, -1)

    @property
    def requires_grad(self):
        return any(p.requires_grad for p in self._parts())

    @requires_grad.setter
    def requires_grad(self, flag):
        self.requires_grad_(flag)

    @property
    def is_leaf(self):
        return self._leaf or not self.requires_grad

    @property
    def grad_fn(self):
        if self.is_leaf:
            return None
        for p in self._parts():
            if p.grad_fn is not None:
                return p.grad_fn
        return None

    @property
    def grad(self):
        if not (self._leaf or self.__dict__.get("_retains")):
            return None
        grads = [p.grad for p in self._parts()]
        if any(g is None for g in grads) or not grads:
            return None
        if self.is_jagged:
            return self._with_values(grads[0])
        return NestedTensor(components=grads)

    @grad.setter
    def grad(self, value):
        if value is None:
            for p in self._parts():
                p.grad = None
            return
        if not _is_nt(value):
            raise TypeError("the gradient of a nested tensor must be a nested tensor")
        for p, g in zip(self._parts(), value._parts()):
            p.grad = g

    @property
    def _ctx(self):
        fn = self.grad_fn
        return None if fn is None else fn

    def dim(self):
        if self.is_jagged:
            return self._values.ndim + 1
        comps = self._components
        return comps[0].ndim + 1 if comps else 1

    ndim = property(dim)

    def __len__(self):
        return self._batch()

    def _batch(self):
        return len(self._lens) if self.is_jagged else len(self._components)

    def _ragged_dims(self):
        if self.is_jagged:
            return {self._ragged_idx}
        comps = self._components
        return {d + 1 for d in range(comps[0].ndim if comps else 0)
                if len({c.shape[d] for c in comps}) > 1}

    @property
    def shape(self):
        if not self.is_jagged:
            raise RuntimeError("Internal error: NestedTensorImpl doesn't support sizes (the "
                               "strided layout has no shape; ask size(dim) of a regular dim, "
                               "or use the jagged layout)")
        vs = list(self._values.shape)
        vs[self._ragged_idx - 1] = _ragged_size(self._offsets)
        return (self._batch(), *vs)

    def size(self, dim=None):
        if dim is None:
            return self.shape
        nd = self.dim()
        d = _wrap(dim, nd, "size")
        if d == 0:
            return self._batch()
        if self.is_jagged:
            return self.shape[d]
        if d in self._ragged_dims():
            raise RuntimeError(f"Given dimension {dim} is irregular and does not have a size.")
        return self._components[0].shape[d - 1]

    def numel(self):
        return sum(c.numel() for c in self.unbind())

    def values(self):
        if not self.is_jagged:  # torch's flat buffer of the components (here a copy in the graph)
            comps = self._components
            return _cat([c.reshape(-1) for c in comps]) if comps else _tensor([])
        return self._values

    def offsets(self):
        if not self.is_jagged:
            raise AttributeError("'NestedTensor' with the strided layout has no offsets()")
        return self._offsets

    def lengths(self):
        if not self.is_jagged:
            raise AttributeError("'NestedTensor' with the strided layout has no lengths()")
        return self._lengths

    def is_contiguous(self, memory_format=None):
        if not self.is_jagged:
            return True
        return self._lengths is None and self._ragged_idx == 1

    # ---- components ------------------------------------------------------------------------
    def unbind(self, dim=0):
        if _wrap(dim, self.dim(), "unbind") != 0:
            raise RuntimeError(f"unbind(): only dim=0 is supported for nested tensors, got {dim}")
        if not self.is_jagged:
            return tuple(self._components)
        r = self._ragged_idx - 1
        return tuple(self._values.narrow(r, s, n) for s, n in zip(self._starts, self._lens))

    def __iter__(self):
        return iter(self.unbind())

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            return self.unbind()[index]
        if isinstance(index, tuple) and index and index[0] is Ellipsis and len(index) == 2 \
                and isinstance(index[1], numbers.Integral):
            return self.select(-1, index[1])
        if isinstance(index, tuple) and len(index) == 2 and index[0] is Ellipsis \
                and isinstance(index[1], slice):  # nt[..., a:b]: a slice of the last dim
            if not self.is_jagged:
                raise RuntimeError(_NO_SIZES)
            if self.dim() - 1 in self._ragged_dims():
                raise RuntimeError("slice(): not supported for NestedTensor on the ragged dim")
            sl = index[1]
            return self._map(lambda t: t[..., sl])
        if isinstance(index, slice) or (isinstance(index, tuple) and index
                                         and isinstance(index[0], slice)):
            if not self.is_jagged:
                raise RuntimeError(_NO_SIZES)
            raise RuntimeError("slice(): not supported for NestedTensor on dim=0")
        raise NotImplementedError(f"__getitem__: indexing a nested tensor with {index!r} is not "
                                  f"supported (an int picks a component; [..., i] a last-dim "
                                  f"entry)")

    def narrow(self, dim, start, length):
        d = _wrap(dim, self.dim(), "narrow")
        if not self.is_jagged:
            if d != 0:
                raise RuntimeError(f"narrow(): only dim=0 supported for nested tensors, but "
                                   f"got: {dim}")
            return NestedTensor(components=self._components[start:start + length])
        if d == 0:
            raise RuntimeError("narrow(): not supported for NestedTensor on dim=0")
        if d in self._ragged_dims():
            raise RuntimeError("narrow(): not supported for NestedTensor on the ragged dim")
        return self._map(lambda t: t.narrow(d - 1, start, length))

    def flatten(self, start_dim=0, end_dim=-1):
        if not self.is_jagged:
            raise RuntimeError(_NO_SIZES)
        nd = self.dim()
        a, b = _wrap(start_dim, nd, "flatten"), _wrap(end_dim, nd, "flatten")
        if a > b:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        if a == b:
            return self
        if a == 0:
            raise RuntimeError("flatten(): not supported for NestedTensor on dim=0")
        if a <= self._ragged_idx <= b:
            raise RuntimeError("flatten(): not supported for NestedTensor on ragged dim")
        out = self._map(lambda t: t.flatten(a - 1, b - 1))
        if b < self._ragged_idx:
            out.__dict__["_ragged_idx"] -= b - a
        return out

    def select(self, dim, index):
        d = _wrap(dim, self.dim(), "select")
        if d == 0:
            return self.unbind()[index]
        if d in self._ragged_dims():
            raise RuntimeError("select(): not supported for NestedTensor on the ragged dim")
        if self.is_jagged and d < self._ragged_idx:
            return _rebuild_like(self, [c.select(d - 1, index) for c in self.unbind()],
                                 self._ragged_idx - 1)
        return self._map(lambda t: t.select(d - 1, index))

    def _with_values(self, values, ragged_idx=None):
        return NestedTensor(values=values, offsets=self._offsets, lengths=self._lengths,
                            ragged_idx=self._ragged_idx if ragged_idx is None else ragged_idx)

    def _map(self, fn):
        if self.is_jagged:
            return self._with_values(fn(self._values))
        return NestedTensor(components=[fn(c) for c in self._components])

    # ---- conversions -----------------------------------------------------------------------
    def to(self, *args, **kwargs):
        return self._map(lambda t: t.to(*args, **kwargs))

    def float(self):
        return self._map(lambda t: t.float())

    def double(self):
        return self._map(lambda t: t.double())

    def half(self):
        return self._map(lambda t: t.half())

    def cpu(self):
        return self._map(lambda t: t.cpu())

    def cuda(self, *args, **kwargs):
        return self._map(lambda t: t.cuda(*args, **kwargs))

    def type_as(self, other):
        return self.to(other.dtype)

    def detach(self):
        out = self._map(lambda t: t.detach())
        out.__dict__["_leaf"] = True
        return out

    def clone(self, *, memory_format=None):
        return self._map(lambda t: t.clone())

    def contiguous(self, memory_format=None):
        if self.is_contiguous():
            return self
        return _rebuild(list(self.unbind()), self._ragged_idx)

    def requires_grad_(self, flag=True):
        if flag and not is_differentiable(self.dtype):
            raise RuntimeError("Only Tensors of floating point and complex dtype can require "
                               "gradients")
        for p in self._parts():
            if not p.is_leaf:
                raise RuntimeError("requires_grad_(): only a leaf nested tensor (from "
                                   "nested_tensor(), detach()) can change requires_grad; this "
                                   "one is computed from its values")
            p.requires_grad_(flag)
        self.__dict__["_leaf"] = True
        return self

    def retain_grad(self):
        """Keep the gradient of a non-leaf nested tensor (read as ``nt.grad``), as torch."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if not self._leaf:
            for p in self._parts():
                p.retain_grad()
            self.__dict__["_retains"] = True
        return None

    @property
    def retains_grad(self):
        return bool(self.__dict__.get("_retains")) and not self._leaf

    def is_inference(self):
        return any(p.is_inference() for p in self._parts())

    # ---- in place (torch's kernels: the strided layout has fewer) --------------------------
    def _inplace(self, name, fn, other=None, jagged_only=False):
        if jagged_only and not self.is_jagged:
            raise NotImplementedError(f"{name}: not supported for nested tensors with the "
                                      f"strided layout (torch has no strided kernel for it)")
        if _is_nt(other):
            _check_same_structure(name, self, other)
            for p, q in zip(self._parts(), other._parts()):
                fn(p, q)
        elif other is None or isinstance(other, numbers.Number) or (
                isinstance(other, Tensor) and other.ndim == 0):
            for p in self._parts():
                fn(p, other)
        elif isinstance(other, Tensor):
            fn(self._values, _dense_for_values(name, self, other))
        else:
            raise NotImplementedError(f"{name}: a nested tensor takes a number, a tensor or a "
                                      f"nested tensor of its structure in place, got "
                                      f"{type(other).__name__}")
        return self

    def add_(self, other, *, alpha=1):
        return self._inplace("add_", lambda p, q: p.add_(q, alpha=alpha), other)

    def mul_(self, other):
        return self._inplace("mul_", lambda p, q: p.mul_(q), other)

    def sub_(self, other, *, alpha=1):
        return self._inplace("sub_", lambda p, q: p.sub_(q, alpha=alpha), other, True)

    def div_(self, other):
        return self._inplace("div_", lambda p, q: p.div_(q), other, True)

    def copy_(self, src, non_blocking=False):
        if not _is_nt(src):
            raise NotImplementedError("copy_: a nested tensor copies from a nested tensor of "
                                      f"its structure, got {type(src).__name__}")
        return self._inplace("copy_", lambda p, q: p.copy_(q), src)

    def fill_(self, value):
        # torch: a number for both layouts, a 0-d tensor for the strided one only
        if not (isinstance(value, numbers.Number) or (
                not self.is_jagged and isinstance(value, Tensor) and value.ndim == 0)):
            raise NotImplementedError(f"fill_: a nested tensor of layout {self._layout} is "
                                      f"filled with a number, got {type(value).__name__}")
        return self._inplace("fill_", lambda p, q: p.fill_(q), value)

    def zero_(self):
        return self._inplace("zero_", lambda p, q: p.zero_())

    def relu_(self):
        return self._inplace("relu_", lambda p, q: p.relu_())

    def clamp_(self, min=None, max=None):
        return self._inplace("clamp_", lambda p, q: p.clamp_(min, max), None, True)

    def __iadd__(self, other):
        return self.add_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        if gradient is None or not _is_nt(gradient):
            raise RuntimeError("backward(): a nested tensor needs gradient= as a nested tensor "
                               "of the same structure (grad can be implicitly created only for "
                               "scalar outputs)")
        _check_same_structure("backward", self, gradient)
        # one scalar whose gradient with respect to each part is that part's gradient
        total = sum((p * (g if create_graph else g.detach())).sum()
                    for p, g in zip(self._parts(), gradient._parts()))
        total.backward(retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)

    def to_padded_tensor(self, padding, output_size=None):
        return to_padded_tensor(self, padding, output_size)

    def __deepcopy__(self, memo):
        import copy
        if self.is_jagged:
            offsets = copy.deepcopy(self._offsets, memo)
            lengths = None if self._lengths is None else copy.deepcopy(self._lengths, memo)
            return NestedTensor(values=copy.deepcopy(self._values, memo), offsets=offsets,
                                lengths=lengths, ragged_idx=self._ragged_idx, leaf=self._leaf)
        return NestedTensor(components=[copy.deepcopy(c, memo) for c in self._components],
                            leaf=self._leaf)

    def numpy(self, *args, **kwargs):
        raise NotImplementedError("numpy: not supported for nested tensors; unbind() first or "
                                  "call to_padded_tensor()")

    def tolist(self):
        return [c.tolist() for c in self.unbind()]

    def __repr__(self):
        if self.is_jagged:
            size = "(" + ", ".join(str(s) for s in self.shape) + ")"
            extra = ""
            if self.requires_grad:
                fn = self.grad_fn
                extra = (", requires_grad=True" if fn is None
                         else f", grad_fn=<{fn.name() if hasattr(fn, 'name') else fn}>")
            return (f"NestedTensor(size={size}, offsets={self._offsets!r}{extra}, "
                    f"contiguous={self.is_contiguous()})")
        body = ",\n".join("  " + repr(c).replace("\n", "\n  ") for c in self._components)
        extra = ", requires_grad=True" if self.requires_grad else ""
        return "nested_tensor([\n" + body + ("\n" if body else "") + "]" + extra + ")"

    __str__ = __repr__

    def __format__(self, spec):
        if spec:
            raise NotImplementedError(f"format: a nested tensor takes no format spec, got "
                                      f"{spec!r}")
        return repr(self)

    # ---- pointwise -------------------------------------------------------------------------
    def __add__(self, other):
        return _binary("add", self, other, lambda a, b: a + b)

    def __radd__(self, other):
        return _binary("add", other, self, lambda a, b: a + b)

    def __sub__(self, other):
        return _binary("sub", self, other, lambda a, b: a - b)

    def __rsub__(self, other):
        return _binary("sub", other, self, lambda a, b: a - b)

    def __mul__(self, other):
        return _binary("mul", self, other, lambda a, b: a * b)

    def __rmul__(self, other):
        return _binary("mul", other, self, lambda a, b: a * b)

    def __truediv__(self, other):
        return _binary("div", self, other, lambda a, b: a / b)

    def __rtruediv__(self, other):
        return _binary("div", other, self, lambda a, b: a / b)

    def __pow__(self, other):
        return _binary("pow", self, other, lambda a, b: a ** b)

    def __rpow__(self, other):
        return _binary("pow", other, self, lambda a, b: a ** b)

    def __gt__(self, other):
        return _binary("gt", self, other, lambda a, b: a > b)

    def __ge__(self, other):
        return _binary("ge", self, other, lambda a, b: a >= b)

    def __lt__(self, other):
        return _binary("lt", self, other, lambda a, b: a < b)

    def __le__(self, other):
        return _binary("le", self, other, lambda a, b: a <= b)

    def __eq__(self, other):
        return _binary("eq", self, other, lambda a, b: a == b)

    def __ne__(self, other):
        return _binary("ne", self, other, lambda a, b: a != b)

    add, sub, mul, div, pow = __add__, __sub__, __mul__, __truediv__, __pow__
    gt, ge, lt, le, eq, ne = __gt__, __ge__, __lt__, __le__, __eq__, __ne__

    def __neg__(self):
        return self._map(lambda t: -t)

    def __abs__(self):
        return self._map(lambda t: abs(t))

    neg, abs = __neg__, __abs__

    def masked_fill(self, mask, value):
        if _is_nt(mask):
            _check_same_structure("masked_fill", self, mask)
            if self.is_jagged:
                return self._with_values(self._values.masked_fill(mask._values, value))
            return NestedTensor(components=[c.masked_fill(m, value) for c, m in
                                            zip(self._components, mask._components)])
        return self._map(lambda t: t.masked_fill(mask, value))

    def clamp(self, min=None, max=None):
        return self._map(lambda t: t.clamp(min, max))

    # ---- reductions and softmax ------------------------------------------------------------
    def softmax(self, dim, dtype=None):
        return _softmax("softmax", self, dim, dtype)

    def log_softmax(self, dim, dtype=None):
        return _softmax("log_softmax", self, dim, dtype)

    def sum(self, dim=None, keepdim=False, dtype=None):
        return _reduce("sum", self, dim, keepdim, dtype)

    def mean(self, dim=None, keepdim=False, dtype=None):
        return _reduce("mean", self, dim, keepdim, dtype)

    def amax(self, dim, keepdim=False):
        return _reduce("amax", self, dim, keepdim, None)

    # ---- shapes ----------------------------------------------------------------------------
    def transpose(self, dim0, dim1):
        nd = self.dim()
        d0, d1 = _wrap(dim0, nd, "transpose"), _wrap(dim1, nd, "transpose")
        if 0 in (d0, d1) and d0 != d1:
            if self.is_jagged:
                raise ValueError("Transpose is not supported on the batch dimension for jagged NT")
            raise RuntimeError("Nested tensor dimension 0 cannot be transposed")
        if not self.is_jagged:
            return self._map(lambda t: t.transpose(d0 - 1, d1 - 1))
        r = self._ragged_idx
        r = d1 if r == d0 else d0 if r == d1 else r
        return self._with_values(self._values.transpose(d0 - 1, d1 - 1), ragged_idx=r)

    def unsqueeze(self, dim):
        d = _wrap(dim, self.dim() + 1, "unsqueeze")
        if d == 0:
            raise RuntimeError("unsqueeze(): not supported for NestedTensor on dim=0")
        if not self.is_jagged:
            return self._map(lambda t: t.unsqueeze(d - 1))
        r = self._ragged_idx + (1 if d <= self._ragged_idx else 0)
        return self._with_values(self._values.unsqueeze(d - 1), ragged_idx=r)

    def squeeze(self, dim):
        d = _wrap(dim, self.dim(), "squeeze")
        if d == 0 or d in self._ragged_dims():
            raise RuntimeError("squeeze(): not supported for NestedTensor on the batch or ragged "
                               "dim")
        if not self.is_jagged:
            return self._map(lambda t: t.squeeze(d - 1))
        if self._values.shape[d - 1] != 1:
            return self
        r = self._ragged_idx - (1 if d < self._ragged_idx else 0)
        return self._with_values(self._values.squeeze(d - 1), ragged_idx=r)

    def chunk(self, chunks, dim=0):
        d = _wrap(dim, self.dim(), "chunk")
        if not self.is_jagged:
            if d != self.dim() - 1:
                raise RuntimeError("Chunk for nested tensors is currently only supported for the "
                                   "last dimension.")
            pieces = [c.chunk(chunks, d - 1) for c in self._components]
            return tuple(NestedTensor(components=list(p)) for p in zip(*pieces))
        if d == self._ragged_idx:
            raise RuntimeError("chunk(): not supported for NestedTensor on ragged dim")
        if d == 0:
            comps = list(self.unbind())
            step = -(-len(comps) // chunks)
            return tuple(_rebuild(comps[i:i + step], self._ragged_idx)
                         for i in range(0, len(comps), step))
        return tuple(self._with_values(v) for v in self._values.chunk(chunks, d - 1))

    def split(self, split_size, dim=0):
        d = _wrap(dim, self.dim(), "split")
        if not self.is_jagged:
            if d != self.dim() - 1 or isinstance(split_size, numbers.Integral):
                raise NotImplementedError("split: not supported for strided nested tensors "
                                          "except split_with_sizes (a list) on the last dim")
            pieces = [c.split(split_size, d - 1) for c in self._components]
            return tuple(NestedTensor(components=list(p)) for p in zip(*pieces))
        if d == 0:
            raise RuntimeError("split(): not supported for NestedTensor on dim=0")
        if d == self._ragged_idx:
            raise RuntimeError("split(): not supported for NestedTensor on ragged dim")
        return tuple(self._with_values(v) for v in self._values.split(split_size, d - 1))

    def reshape(self, *shape):
        return self._reshape("reshape", shape)

    def view(self, *shape):
        return self._reshape("view", shape)

    def _reshape(self, name, shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) \
            else shape
        if len(shape) < 2 or shape[0] not in (-1, self._batch()):
            raise RuntimeError(f"{name}(): the batch dim of a nested tensor cannot change, got "
                               f"{shape}")
        rag = sorted(self._ragged_dims())
        keep = max(rag) if rag else 0  # the dims up to the last ragged one stay as they are
        for i, s in enumerate(shape[1:keep + 1], 1):  # -1 or the size there (j1 included)
            if not (isinstance(s, numbers.Integral) and s == -1) and (
                    (i in rag and not self.is_jagged) or s != self.size(i)):
                raise RuntimeError(f"{name}(): only the dims after the ragged one can change, "
                                   f"got {shape} for {_shape_str(self)}")
        tail = shape[keep + 1:]
        if not self.is_jagged:
            return self._map(lambda t: t.reshape(*t.shape[:keep], *tail))
        v = self._values
        return self._with_values(v.reshape(*v.shape[:keep], *tail))

    def unflatten(self, dim, sizes):
        d = _wrap(dim, self.dim(), "unflatten")
        if d == 0 or d in self._ragged_dims():
            raise RuntimeError("unflatten(): not supported for NestedTensor on the batch or "
                               "ragged dim")
        out = self._map(lambda t: t.unflatten(d - 1, sizes))
        if self.is_jagged and d < self._ragged_idx:
            out.__dict__["_ragged_idx"] += len(sizes) - 1
        return out

    def permute(self, *dims):
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        nd = self.dim()
        ds = [_wrap(x, nd, "permute") for x in dims]
        if sorted(ds) != list(range(nd)) or ds[0] != 0:
            raise RuntimeError(f"permute(): the batch dim of a nested tensor must stay first, "
                               f"got {dims}")
        perm = [x - 1 for x in ds[1:]]
        if not self.is_jagged:
            return self._map(lambda t: t.permute(*perm))
        return self._with_values(self._values.permute(*perm),
                                 ragged_idx=ds.index(self._ragged_idx))

    # ---- matrix products -------------------------------------------------------------------
    def matmul(self, other):
        return _matmul("matmul", self, other)

    def __matmul__(self, other):
        return _matmul("matmul", self, other)

    def __rmatmul__(self, other):
        raise RuntimeError(f"matmul(): not supported between a dense tensor of shape "
                           f"{tuple(other.shape)} and a nested tensor on the right")

    def bmm(self, mat2):
        return _matmul("bmm", self, mat2)

    # ---- the nn.functional ops, reached through their is_nested check ----------------------
    def _nested_op(self, name, *args, **kwargs):
        impl = _FUNCTIONAL.get(name)
        if impl is None:
            raise NotImplementedError(f"{name}: not supported for nested tensors")
        return impl(*args, **kwargs)


def _unary(name):
    def method(self, *args, **kwargs):
        return self._map(lambda t: getattr(t, name)(*args, **kwargs))
    method.__name__ = name
    return method


_UNARY = ("exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "sigmoid", "sqrt", "rsqrt",
          "relu", "reciprocal", "square", "sign", "floor", "ceil", "round", "trunc", "erf",
          "logical_not", "isnan", "isinf", "isfinite", "bool", "long", "int")
for _name in _UNARY:
    setattr(NestedTensor, _name, _unary(_name))


def _refuse(name):
    def method(self, *args, **kwargs):
        raise NotImplementedError(f"{name}: not supported for nested tensors (layout "
                                  f"{self._layout})")
    method.__name__ = name
    return method


# every other Tensor method would reach for a dense array: refuse it by name
_KEEP = {"is_nested", "is_floating_point", "is_complex", "element_size",
         "type", "get_device", "new_tensor", "new_zeros", "new_ones", "new_empty", "new_full"}
for _name, _member in list(vars(Tensor).items()):
    if _name in NestedTensor.__dict__ or _name in _KEEP or not callable(_member):
        continue
    if _name.startswith("__") and _name not in (
            "__setitem__", "__and__", "__or__", "__xor__", "__invert__", "__mod__",
            "__floordiv__", "__float__", "__int__", "__bool__", "__index__", "__array__",
            "__lshift__", "__rshift__",
            "__rfloordiv__", "__rmod__", "__and__", "__rand__", "__ror__", "__rxor__"):
        continue
    if _name.startswith("_") and not _name.startswith("__"):
        continue
    setattr(NestedTensor, _name, _refuse(_name.strip("_") or _name))
del _name, _member


# ---- helpers --------------------------------------------------------------------------------
def _wrap(dim, ndim, name):
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{name}(): dim must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise IndexError(f"{name}(): Dimension out of range (expected to be in range of "
                         f"[{-ndim}, {ndim - 1}], but got {dim})")
    return dim % ndim


def _shape_str(nt):
    if nt.is_jagged:
        return "(" + ", ".join(str(s) for s in nt.shape) + ")"
    return f"nested[{', '.join(str(tuple(c.shape)) for c in nt._components)}]"


def _check_same_structure(name, a, b):
    if a.layout is not b.layout:
        raise RuntimeError(f"{name}: nested tensors of layouts {a.layout} and {b.layout} do not "
                           f"mix")
    if a.is_jagged:
        if a._offsets is not b._offsets or a._ragged_idx != b._ragged_idx or \
                a._values.ndim != b._values.ndim or \
                (a._lengths is not b._lengths):
            raise RuntimeError(f"cannot call binary pointwise function {name} with inputs of "
                               f"shapes {_shape_str(a)} and {_shape_str(b)} (jagged nested "
                               f"tensors share a structure only when they share offsets)")
        return
    if len(a._components) != len(b._components) or any(
            x.shape != y.shape for x, y in zip(a._components, b._components)):
        raise RuntimeError(f"{name} does not support broadcasting when given a NestedTensor: "
                           f"{_shape_str(a)} and {_shape_str(b)}")


def _binary(name, a, b, fn):
    if _is_nt(a) and _is_nt(b):
        _check_same_structure(name, a, b)
        if a.is_jagged:
            return a._with_values(fn(a._values, b._values))
        return NestedTensor(components=[fn(x, y) for x, y in zip(a._components, b._components)])
    nt, other, left = (a, b, True) if _is_nt(a) else (b, a, False)
    call = (lambda t, o: fn(t, o)) if left else (lambda t, o: fn(o, t))
    if not isinstance(other, Tensor):
        if not isinstance(other, (numbers.Number, np.generic)):
            return NotImplemented
        return nt._map(lambda t: call(t, other))
    if other.ndim == 0:
        return nt._map(lambda t: call(t, other))
    other, per_component = _check_dense_operand(name, nt, other, left)
    if per_component:  # one slice of other per component
        comps = [call(c, o) for c, o in zip(nt.unbind(), other.unbind(0))]
        return _rebuild_like(nt, comps, nt._ragged_idx)
    return nt._with_values(call(nt._values, other))


def _check_dense_operand(name, nt, other, left=True):
    """A dense tensor beside a nested one in a binary pointwise op, checked as torch does: it
    broadcasts over the regular dims after the ragged one (returned as it is, squeezed of a
    leading 1), or it is a (B, ..., 1, ...) tensor with one slice per component (returned with
    ``True``). Strided nested tensors take no dense operand."""
    if not nt.is_jagged:
        sides = ("a nested self and non-nested other" if left
                 else "a non-nested self and nested other")
        raise RuntimeError(f"Expected both self and other to be nested, but got {sides} "
                           f"({name} of a strided nested tensor takes a nested tensor or a "
                           f"scalar, got a dense tensor of shape {tuple(other.shape)})")
    nd, r = nt.dim(), nt._ragged_idx
    bad = RuntimeError(f"cannot call binary pointwise function {name} with inputs of shapes "
                       f"{_shape_str(nt)} and {tuple(other.shape)}")
    if other.ndim > nd:
        raise bad
    if other.ndim == nd:
        if other.shape[r] != 1 or other.shape[0] not in (1, nt._batch()):
            raise bad
        if other.shape[0] != 1:
            return other, True
        other = other.squeeze(0)
    pos = r - (nd - other.ndim)
    if pos >= 0 and other.shape[pos] != 1:
        raise bad
    return other, False


def _dense_for_values(name, nt, other):
    """A dense operand of an in-place op on a nested tensor, as one that broadcasts against its
    ``values``: the rules of ``_binary`` (over the regular dims after the ragged one, or one
    (B, ..., 1, ...) slice per component, gathered out to each component's tokens)."""
    other, per_component = _check_dense_operand(name, nt, other)
    if not per_component:
        return other
    r = nt._ragged_idx  # each token gets its component's slice
    total = nt._values.shape[r - 1]
    owner = np.zeros(total, dtype=np.int64)  # tokens in a gap: any slice
    for b, (start, n) in enumerate(zip(nt._starts, nt._lens)):
        owner[start:start + n] = b
    picked = other.index_select(0, _tensor(owner, device=other.device)).squeeze(r)
    return picked.movedim(0, r - 1)


def _where(condition, input, other):
    """where() with nested operands of one structure, numbers, or (jagged) dense tensors that
    broadcast over the regular dims."""
    if input is None or other is None:
        raise NotImplementedError("where(condition) alone (nonzero): not supported for nested "
                                  "tensors")
    args = (condition, input, other)
    first = next(a for a in args if _is_nt(a))
    if not first.is_jagged and not all(_is_nt(a) for a in args):
        raise RuntimeError("where(): condition, input and other must be nested for the strided "
                           "layout (other must be nested)")
    for a in args:
        if _is_nt(a):
            _check_same_structure("where", first, a)
        elif isinstance(a, Tensor) and a.ndim > 0:
            nd, r = first.dim(), first._ragged_idx if first.is_jagged else None
            pos = None if r is None else r - (nd - a.ndim)
            if r is None or a.ndim >= nd or (pos >= 0 and a.shape[pos] != 1):
                raise RuntimeError(f"where(): a dense operand of shape {tuple(a.shape)} does not "
                                   f"broadcast over the nested tensor {_shape_str(first)}")

    def part(a, i):
        return a._parts()[i] if _is_nt(a) else a

    if first.is_jagged:
        return first._with_values(_dense_where(*(part(a, 0) for a in args)))
    return NestedTensor(components=[_dense_where(*(part(a, i) for a in args))
                                    for i in range(first._batch())])


def _rebuild(comps, ragged_idx, like=None):
    """A jagged nested tensor of these components, ragged along dim ragged_idx - 1 of each:
    one cat, so the gradient reaches each component. It shares like's offsets when the
    lengths are like's, so the result adds to like."""
    if not comps:
        raise RuntimeError("Cannot construct a nested tensor from an empty tensor list")
    r = ragged_idx - 1
    lens = [c.shape[r] for c in comps]
    values = _cat(comps, r) if len(comps) > 1 else comps[0].narrow(r, 0, lens[0])
    if like is not None and like._lengths is None and like._lens == lens:
        offsets = like._offsets
    else:
        offsets = _tensor(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                          device=values.device)
    return NestedTensor(values=values, offsets=offsets, ragged_idx=ragged_idx)


def _rebuild_like(nt, comps, ragged_idx):
    if nt.is_jagged:
        return _rebuild(comps, ragged_idx, like=nt)
    return NestedTensor(components=comps)


# ---- the ragged dim as a padded one: one gather out, one gather back ---------------------------
def _pad_plan(nt, length=None):
    """Where each padded position comes from along values' ragged axis (``total``: the fill),
    the padded length, and where each kept token sits in the (B * length) padded rows."""
    lens = np.asarray(nt._lens, dtype=np.int64)
    starts = np.asarray(nt._starts, dtype=np.int64)
    total = nt._values.shape[nt._ragged_idx - 1]
    size = int(lens.max(initial=0)) if length is None else int(length)
    pos = np.arange(size, dtype=np.int64)
    source = np.where(pos[None, :] < lens[:, None], starts[:, None] + pos[None, :], total)
    kept = np.minimum(lens, size)
    rows = np.concatenate([b * size + np.arange(n, dtype=np.int64) for b, n in enumerate(kept)]
                          + [np.zeros(0, dtype=np.int64)])
    return source.reshape(-1), size, rows, kept


def _padded(nt, fill, length=None):
    """The dense (B, ..., L, ...) tensor of a jagged one, ``fill`` past each end: values
    gathered once (index_select), so the gradient flows back in one scatter."""
    v, a = nt._values, nt._ragged_idx - 1
    source, size, _, _ = _pad_plan(nt, length)
    filler = v.new_full(tuple(1 if i == a else s for i, s in enumerate(v.shape)), fill)
    gathered = _cat([v, filler], a).index_select(a, _tensor(source, device=v.device))
    gathered = gathered.reshape(*v.shape[:a], len(nt._lens), size, *v.shape[a + 1:])
    return gathered.movedim(a, 0)


def _unpadded(like, padded, length=None):
    """The jagged tensor of ``padded``'s rows that ``like`` has (its lengths, cut at the
    padded length), sharing like's offsets when nothing was cut."""
    a = like._ragged_idx - 1
    size = padded.shape[like._ragged_idx]
    _, _, rows, kept = _pad_plan(like, size if length is None else length)
    moved = padded.movedim(0, a)
    moved = moved.reshape(*moved.shape[:a], -1, *moved.shape[a + 2:])
    values = moved.index_select(a, _tensor(rows, device=padded.device))
    if like._lengths is None and list(kept) == like._lens:
        offsets = like._offsets
    else:
        offsets = _tensor(np.concatenate([[0], np.cumsum(kept)]).astype(np.int64),
                          device=values.device)
    return NestedTensor(values=values, offsets=offsets, ragged_idx=like._ragged_idx)


def _softmax(name, nt, dim, dtype):
    d = _wrap(dim, nt.dim(), name)
    if d == 0:
        raise RuntimeError(f"{name}(): not supported when reducing across the batch dimension "
                           f"for NestedTensor")
    fn = (lambda t: getattr(t, name)(d - 1, dtype=dtype))
    if not nt.is_jagged:
        if name == "log_softmax":
            raise NotImplementedError("log_softmax: not supported for strided nested tensors "
                                      "(torch has no kernel for it); use the jagged layout")
        return nt._map(fn)
    if d != nt._ragged_idx:
        return nt._map(fn)
    if name == "log_softmax":
        raise RuntimeError("log_softmax(): not supported when reducing along the ragged "
                           "dimension for NestedTensor")
    if nt._ragged_idx > 1:
        raise RuntimeError("softmax(): not supported when reducing along the ragged dimension "
                           "for ragged_idx > 1 for NestedTensor")
    if min(nt._lens, default=0) == 0:  # an empty sequence: no row to take a maximum of
        return _rebuild_like(nt, [fn(c) for c in nt.unbind()], nt._ragged_idx)
    padded = _padded(nt if dtype is None else nt.to(as_dtype(dtype)), float("-inf"))
    return _unpadded(nt, padded.softmax(d))


def _dims(dim, nd, name):
    if dim is None:
        return None
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    return sorted({_wrap(x, nd, name) for x in dims})


def _reduce(name, nt, dim, keepdim, dtype):
    nd = nt.dim()
    if dtype is not None:
        nt = nt.to(as_dtype(dtype))
    dims = _dims(dim, nd, name)

    def op(t, axis, keep):
        if name == "amax":
            return t.amax(axis, keepdim=keep)
        return getattr(t, name)(axis, keepdim=keep)

    if not nt.is_jagged:
        if name == "mean":
            raise NotImplementedError("mean: not supported for strided nested tensors; use the "
                                      "jagged layout")
        if dims is None:
            raise NotImplementedError(f"{name}: a full reduction is not supported for strided "
                                      f"nested tensors")
        if len(dims) != 1:
            raise RuntimeError("NestedTensor only allows reduction of a single dimension for now.")
        if dims[0] != nd - 1:
            raise RuntimeError(f"NestedTensor can only be reduced across the last dimension for "
                               f"now got dimension {dims[0]} instead.")
        if not keepdim and name == "sum":
            raise RuntimeError("NestedTensor always requires keepdim=True for now.")
        return nt._map(lambda t: op(t, nd - 2, keepdim))
    r = nt._ragged_idx
    if dims is None or dims == list(range(nd)):
        if name == "amax":
            return _stack([c.amax() for c in nt.unbind()]).amax()
        if nt._lengths is None:
            return getattr(nt._values, name)()
        total = sum(c.sum() for c in nt.unbind())
        return total if name == "sum" else total / nt.numel()
    if r not in dims:
        if 0 in dims:
            raise RuntimeError(f"{name}(): reducing along the batch dimension but not the ragged "
                               f"dimension is not supported for nested tensors")
        axes = tuple(x - 1 for x in dims)
        out = op(nt._values, axes if len(axes) > 1 else axes[0], keepdim)
        if keepdim:
            return nt._with_values(out)
        return nt._with_values(out, ragged_idx=r - sum(1 for x in dims if x < r))
    if any(x not in (0, r) for x in dims):
        raise RuntimeError(f"{name}(): reducing along a ragged and non-batch dimension is not "
                           f"supported for nested tensors")
    # the ragged dim (and perhaps the batch dim): one dense row per component, summed (or
    # maximised) over the padded ragged dim
    if name == "amax":
        if min(nt._lens, default=0) == 0:
            raise RuntimeError("amax(): an empty sequence has no maximum along the ragged dim")
        per = _padded(nt, float("-inf")).amax(r, keepdim=keepdim)
        return per.amax(0, keepdim=keepdim) if 0 in dims else per
    sums = _padded(nt, 0).sum(r, keepdim=keepdim)
    if 0 in dims:
        sums = sums.sum(0, keepdim=keepdim)
        return sums if name == "sum" else sums / float(sum(nt._lens))
    if name == "sum":
        return sums
    counts = _tensor(np.asarray(nt._lens, dtype=np.dtype(sums.dtype)), device=sums.device)
    return sums / counts.reshape(-1, *([1] * (sums.ndim - 1)))


def _matmul(name, a, b):
    if not a.is_jagged:
        if _is_nt(b):
            if b.is_jagged or len(b._components) != len(a._components):
                raise RuntimeError(f"{name}(): nested tensors of different layouts or batch "
                                   f"sizes, {_shape_str(a)} and {_shape_str(b)}")
            return NestedTensor(components=[x @ y for x, y in zip(a._components, b._components)])
        if name == "bmm" and isinstance(b, Tensor) and b.ndim == 3 and b.shape[0] == a._batch():
            return NestedTensor(components=[x @ y for x, y in zip(a._components, b.unbind(0))])
        raise RuntimeError("Expected both to be nested, but got a nested self and non-nested "
                           f"other ({name} of a strided nested tensor)")
    r, nd = a._ragged_idx, a.dim()
    if _is_nt(b):
        if b.is_jagged and b._offsets is a._offsets and b._ragged_idx == r and r < nd - 2 \
                and b.dim() == nd and b._lengths is a._lengths:
            return a._with_values(a._values @ b._values)
        raise RuntimeError(f"{name}(): not supported between inputs of shapes {_shape_str(a)} "
                           f"and {_shape_str(b)}")
    if not isinstance(b, Tensor):
        raise TypeError(f"{name}(): expected a tensor, got {type(b).__name__}")
    if r == nd - 1:
        raise RuntimeError(f"{name}(): not supported between inputs of shapes {_shape_str(a)} "
                           f"and {tuple(b.shape)} (the ragged dim is the contracted one)")
    if b.ndim == nd and b.shape[0] == a._batch() and b.ndim >= 3:  # one matrix per component
        return _rebuild_like(a, [x @ y for x, y in zip(a.unbind(), b.unbind(0))], r)
    if b.ndim <= 2 or b.ndim < nd:
        return a._with_values(a._values @ b)
    raise RuntimeError(f"{name}(): not supported between inputs of shapes {_shape_str(a)} and "
                       f"{tuple(b.shape)}")


# ---- the nn.functional forms ----------------------------------------------------------------
def _check_last_dims_regular(name, nt, count):
    nd = nt.dim()
    rag = nt._ragged_dims()
    if any(d in rag for d in range(nd - count, nd)) or count >= nd:
        raise RuntimeError(f"{name}(): not supported for NestedTensor on the ragged or batch dim "
                           f"(its last {count} dim(s) must be regular)")


def _linear(input, weight, bias=None):
    _check_last_dims_regular("linear", input, 1)
    return input._map(lambda t: _F.linear(t, weight, bias))


def _embedding(input, weight, *args):
    """Rows of weight for each index: a trailing embedding dim, the ragged dim where it was."""
    return input._map(lambda t: _F.embedding(t, weight, *args))


def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
        else tuple(normalized_shape)
    _check_last_dims_regular("layer_norm", input, len(shape))
    if not input.is_jagged and (weight is None or bias is None):
        raise ValueError("NestedTensor layer_norm requires weight and bias")
    return input._map(lambda t: _F.layer_norm(t, shape, weight, bias, eps))


def _dropout(input, p=0.5, training=True, inplace=False):
    if inplace:
        raise NotImplementedError("dropout: inplace=True is not supported for nested tensors")
    return input._map(lambda t: _F.dropout(t, p, training))


def _pointwise(fn):
    def impl(input, *args, **kwargs):
        kwargs.pop("inplace", None)
        return input._map(lambda t: fn(t, *args, **kwargs))
    return impl


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    if not (_is_nt(query) and _is_nt(key) and _is_nt(value)):
        raise ValueError(f"Expected query, key, and value to be nested tensors, but got "
                         f"query.is_nested: {_is_nt(query)}, key.is_nested: {_is_nt(key)}, and "
                         f"value.is_nested: {_is_nt(value)} instead.")
    if attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: Masks are not yet supported for nested "
                         "tensors!")
    if is_causal:
        raise RuntimeError("scaled_dot_product_attention: No viable backend for nested tensors "
                           "with is_causal=True (torch has none either)")
    if not (query.layout is key.layout is value.layout):
        raise RuntimeError("scaled_dot_product_attention: query, key and value must have one "
                           "nested layout")
    if not (query._batch() == key._batch() == value._batch()):
        raise RuntimeError(f"scaled_dot_product_attention: batch sizes differ: "
                           f"{query._batch()}, {key._batch()}, {value._batch()}")
    nd = query.dim()
    if query.is_jagged and all(t._ragged_idx == nd - 2 and t.dim() == nd
                               for t in (query, key, value)) \
            and key._lens == value._lens and min(key._lens, default=0) > 0:
        # (B, ..., L, E) padded, the padded keys masked out: one attention for the batch
        keys = _padded(key, 0)
        attend = _tensor(np.arange(keys.shape[-2])[None, :] < np.asarray(key._lens)[:, None],
                         device=keys.device).reshape(len(key._lens), *([1] * (nd - 2)), -1)
        out = _attention.scaled_dot_product_attention(
            _padded(query, 0), keys, _padded(value, 0), attend, dropout_p, False, scale,
            enable_gqa)
        return _unpadded(query, out)
    outs = [_attention.scaled_dot_product_attention(q, k, v, None, dropout_p, False, scale,
                                                    enable_gqa)
            for q, k, v in zip(query.unbind(), key.unbind(), value.unbind())]
    if query.is_jagged:
        return _rebuild(outs, query._ragged_idx, like=query)
    return NestedTensor(components=outs)


def _nested_cat(tensors, dim=0):
    tensors = list(tensors)
    first = tensors[0]
    if not all(_is_nt(t) for t in tensors):
        raise RuntimeError("cat(): expected all nested tensors, or none")
    d = _wrap(dim, first.dim(), "cat")
    if not first.is_jagged:
        if d == 0:
            return NestedTensor(components=[c for t in tensors for c in t._components])
        if d != first.dim() - 1:
            raise RuntimeError("cat(): only dim=0 and the last dim are supported for strided "
                               "nested tensors")
        for t in tensors[1:]:
            if t.is_jagged or len(t._components) != len(first._components):
                raise RuntimeError("cat(): nested tensors of different layouts or batch sizes")
        return NestedTensor(components=[_cat(list(cs), d - 1) for cs in
                                        zip(*(t._components for t in tensors))])
    if d == 0:
        raise RuntimeError("cat(): not supported for NestedTensor on dim=0")
    if d == first._ragged_idx:
        raise RuntimeError("cat(): not supported for NestedTensor on ragged dim")
    for t in tensors[1:]:
        if t.dim() != first.dim():
            continue  # (the values' cat names the mismatch)
        if not (t.is_jagged and t._ragged_idx == first._ragged_idx and t._lengths is None
                and first._lengths is None and t._starts == first._starts
                and t._lens == first._lens):
            _check_same_structure("cat", first, t)  # equal offsets from two constructions
    return first._with_values(_cat([t._values for t in tensors], d - 1))  # join, as torch's


def _why_not_fast_path(mha, query, key, value, masks):
    """torch's reason for not taking MultiheadAttention's inference fast path, the one place
    where it takes nested input, or None."""
    if query.is_jagged:
        return ("the jagged layout is not supported here (torch: some Tensor argument "
                "has_torch_function); use the strided layout")
    if mha.training:
        return "training is enabled"
    if not mha.batch_first:
        return "batch_first was not True"
    if is_grad_enabled() and (query.requires_grad or any(
            p.requires_grad for p in mha.parameters())):
        return ("grad is enabled and at least one of query or the input/output projection "
                "weights or biases requires_grad")
    if not (query is key is value):
        return "non-self attention was used (query, key, and value are not the same Tensor)"
    if any(m is not None for m in masks):
        return "a mask was given, which is not supported with NestedTensor input"
    return None


def _refuse_slow_path(mha, query, key, value, masks):
    why = _why_not_fast_path(mha, query, key, value, masks)
    if why is not None:
        raise AssertionError("MultiheadAttention does not support NestedTensor outside of its "
                             "fast path. The fast path was not hit because " + why)


def _multi_head_attention(mha, query, key, value, key_padding_mask=None, need_weights=True,
                          attn_mask=None, average_attn_weights=True):
    """Inference only, as torch: each component attends to itself alone (no padding). The
    attention weights (``need_weights``), as torch's fast path returns them: one dense
    (B, L, L) tensor ((B, H, L, L) without averaging over heads), L the longest component,
    zeros where a component has no token."""
    _refuse_slow_path(mha, query, key, value, (key_padding_mask, attn_mask))
    outs, weights = [], []
    for c in query.unbind():
        c = c.unsqueeze(0)
        out, w = mha(c, c, c, need_weights=need_weights,
                     average_attn_weights=average_attn_weights)
        outs.append(out[0])
        weights.append(w)
    if not need_weights:
        return NestedTensor(components=outs), None
    longest = max((w.shape[-1] for w in weights), default=0)
    padded = [_F.pad(w[0], (0, longest - w.shape[-1], 0, longest - w.shape[-1]))
              for w in weights]
    return NestedTensor(components=outs), _stack(padded)


def _transformer_encoder_layer(layer, src, src_mask=None, src_key_padding_mask=None):
    _refuse_slow_path(layer.self_attn, src, src, src, (src_mask, src_key_padding_mask))
    return NestedTensor(components=[layer(c.unsqueeze(0))[0] for c in src.unbind()])


_FUNCTIONAL = {
    "linear": _linear,
    "layer_norm": _layer_norm,
    "embedding": _embedding,
    "dropout": _dropout,
    "relu": _pointwise(_F.relu),
    "gelu": _pointwise(_F.gelu),
    "silu": _pointwise(_F.silu),
    "softmax": lambda input, dim=None, _stacklevel=3, dtype=None: input.softmax(dim, dtype),
    "log_softmax": lambda input, dim=None, _stacklevel=3, dtype=None:
        input.log_softmax(dim, dtype),
    "scaled_dot_product_attention": _sdpa,
    "cat": _nested_cat,
    "bmm": lambda input, mat2: input.bmm(mat2),
    "multi_head_attention": _multi_head_attention,
    "where": _where,
    "pointwise": lambda fn, input: input._map(fn),
    "transformer_encoder_layer": _transformer_encoder_layer,
}


# ---- construction -------------------------------------------------------------------------
def _layout_of(layout):
    if layout is None or layout is strided:
        return strided
    if layout is jagged:
        return jagged
    raise RuntimeError(f"nested tensors take layout=minidl.strided or minidl.jagged, got "
                       f"{layout!r}")


def _component(x, dtype, device):
    if isinstance(x, NestedTensor):
        raise TypeError("nested_tensor(): a component cannot itself be a nested tensor")
    if isinstance(x, Tensor):
        out = x
        if dtype is not None or device is not None:
            out = out.to(**{k: v for k, v in (("dtype", dtype), ("device", device))
                            if v is not None})
        return out
    return _tensor(x, dtype=dtype, device=device)


def _check_components(comps, layout):
    for i, c in enumerate(comps[1:], 1):
        if c.ndim != comps[0].ndim:
            raise RuntimeError(f"All Tensors given to nested_tensor must have the same dimension. "
                               f"Found dimension {c.ndim} for Tensor at index {i} and dimension "
                               f"{comps[0].ndim} for Tensor at index 0.")
        if c.dtype != comps[0].dtype:
            raise RuntimeError(f"nested_tensor(): components must have one dtype, got "
                               f"{comps[0].dtype} at index 0 and {c.dtype} at index {i}")
    if layout is jagged:
        if not comps:
            raise RuntimeError("Cannot construct a nested tensor from an empty tensor list")
        if comps[0].ndim == 0 or any(c.shape[1:] != comps[0].shape[1:] for c in comps):
            raise RuntimeError(
                "Cannot represent given tensor list as a nested tensor with the jagged layout. "
                "Note that the jagged layout only allows for a single ragged dimension. For "
                "example: (B, *, D_0, D_1, ..., D_N), with ragged * dim. Got component shapes "
                f"{[tuple(c.shape) for c in comps]}")


def nested_tensor(tensor_list, *, dtype=None, layout=None, device=None, requires_grad=False,
                  pin_memory=False):
    """A nested tensor of copies of the tensors (or lists) in ``tensor_list``: a leaf, no
    gradient flows back to the inputs (``as_nested_tensor`` keeps it)."""
    layout = _layout_of(layout)
    if isinstance(tensor_list, Tensor):
        raise TypeError("nested_tensor(): expected a list of tensors, got a tensor (use "
                        "as_nested_tensor for a dense tensor)")
    comps = [_component(x, as_dtype(dtype) if dtype is not None else None, device).detach()
             for x in tensor_list]
    _check_components(comps, layout)
    if requires_grad and comps and not is_differentiable(comps[0].dtype):
        raise RuntimeError("Only Tensors of floating point and complex dtype can require "
                           "gradients")
    if layout is jagged:
        return _rebuild([c for c in comps], 1).detach().requires_grad_(requires_grad)
    return NestedTensor(components=[c.clone().requires_grad_(requires_grad) for c in comps],
                        leaf=True)


def as_nested_tensor(ts, dtype=None, device=None, layout=None):
    """A nested tensor of ``ts`` (a list of tensors, a dense tensor of B components along dim 0,
    or a nested tensor) that keeps the autograd graph: gradients flow back to ``ts``."""
    if _is_nt(ts):
        if layout is not None and _layout_of(layout) is not ts.layout:
            raise RuntimeError("as_nested_tensor(): Converting between nested tensor layouts is "
                               "not supported")
        if dtype is None and device is None:
            return ts
        return ts.to(**{k: v for k, v in (("dtype", dtype), ("device", device)) if v is not None})
    layout = _layout_of(layout)
    if isinstance(ts, Tensor):
        if ts.ndim < 2:
            raise RuntimeError(f"as_nested_tensor(): a dense tensor must have at least 2 dims "
                               f"(B, ...), got shape {tuple(ts.shape)}")
        ts = _component(ts, as_dtype(dtype) if dtype is not None else None, device)
        if layout is jagged:
            b, n = ts.shape[0], ts.shape[1]
            offsets = _tensor(np.arange(b + 1, dtype=np.int64) * n, device=ts.device)
            return NestedTensor(values=ts.reshape(b * n, *ts.shape[2:]), offsets=offsets)
        return NestedTensor(components=list(ts.unbind(0)))
    comps = [_component(x, as_dtype(dtype) if dtype is not None else None, device)
             for x in ts]
    _check_components(comps, layout)
    if layout is jagged:
        return _rebuild(comps, 1)
    return NestedTensor(components=comps)


def nested_tensor_from_jagged(values, offsets=None, lengths=None, jagged_dim=None,
                              min_seqlen=None, max_seqlen=None):
    """A jagged nested tensor that views ``values``: component i is ``values`` narrowed along
    dim ``jagged_dim - 1`` to [offsets[i], offsets[i] + lengths[i]) (lengths default to the
    gaps between offsets). Gradients flow back to ``values``."""
    if offsets is None and lengths is None:
        raise RuntimeError("nested_tensor_from_jagged(): At least one of offsets or lengths is "
                           "required.")
    if not isinstance(values, Tensor) or _is_nt(values):
        raise TypeError(f"nested_tensor_from_jagged(): values must be a dense tensor, got "
                        f"{type(values).__name__}")
    jagged_dim = 1 if jagged_dim is None else jagged_dim
    if not 1 <= jagged_dim <= values.ndim:
        raise RuntimeError(f"nested_tensor_from_jagged(): jagged_dim {jagged_dim} must be in "
                           f"[1, {values.ndim}] for values of shape {tuple(values.shape)}")
    if offsets is None:
        lens = _int_list(lengths)
        offsets = _tensor(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                          device=values.device)
        lengths = None
    total = values.shape[jagged_dim - 1]
    for what, t in (("offsets", offsets), ("lengths", lengths)):
        if t is not None and (not isinstance(t, Tensor) or t.ndim != 1
                              or np.dtype(t.dtype).kind not in "iu"):
            raise RuntimeError(f"nested_tensor_from_jagged(): {what} must be a 1-d integer tensor")
    offs = _int_list(offsets)
    if not offs or offs[0] < 0 or any(b < a for a, b in zip(offs, offs[1:])) or offs[-1] > total:
        raise RuntimeError(f"nested_tensor_from_jagged(): offsets {offs} must start at 0 or "
                           f"more, never decrease and end at most at the jagged dim's size "
                           f"{total}")
    if lengths is not None:
        lens = _int_list(lengths)
        if len(lens) != len(offs) - 1 or any(
                n < 0 or s + n > total for s, n in zip(offs, lens)):
            raise RuntimeError(f"nested_tensor_from_jagged(): lengths {lens} do not fit offsets "
                               f"{offs} in a jagged dim of size {total}")
    return NestedTensor(values=values, offsets=offsets, lengths=lengths, ragged_idx=jagged_dim)


def narrow(tensor, dim, start, length, layout=strided):
    """A nested tensor of ``tensor[i].narrow(dim - 1, start[i], length[i])`` for each i:
    ``start`` and ``length`` ints or 1-d tensors (jagged layout, dim=1 only), a view of
    ``tensor`` whose gradient flows back to it."""
    layout = _layout_of(layout)
    if not isinstance(tensor, Tensor) or _is_nt(tensor):
        raise TypeError(f"narrow(): expected a dense tensor, got {type(tensor).__name__}")
    if layout is strided:
        if isinstance(start, Tensor) or isinstance(length, Tensor):
            raise RuntimeError("start and length must be integers for the strided layout NT impl")
        if dim != 0:
            raise RuntimeError(f"narrow(): only dim=0 supported for nested tensors, but got: "
                               f"{dim}")
        return NestedTensor(components=list(tensor.narrow(0, start, length).unbind(0)))
    if dim != 1:
        raise RuntimeError(f"jagged layout only supports dim=1, got dim={dim}")
    if tensor.ndim < 2:
        raise RuntimeError(f"narrow(): tensor must have at least 2 dims, got shape "
                           f"{tuple(tensor.shape)}")
    b, n = tensor.shape[0], tensor.shape[1]
    starts = _int_list(start) if isinstance(start, Tensor) else [int(start)] * b
    lens = _int_list(length) if isinstance(length, Tensor) else [int(length)] * b
    if len(starts) != b or len(lens) != b:
        raise RuntimeError(f"narrow(): start and length need one entry per batch element ({b}), "
                           f"got {len(starts)} and {len(lens)}")
    for i, (s, m) in enumerate(zip(starts, lens)):
        if s < 0 or m < 0 or s + m > n:
            raise RuntimeError(f"narrow(): component {i}: start {s} + length {m} exceeds the "
                               f"dim's size {n}")
    values = tensor.reshape(b * n, *tensor.shape[2:])
    ends = (b - 1) * n + starts[-1] + lens[-1] if b else 0
    offsets = _tensor(np.array([i * n + s for i, s in enumerate(starts)] + [ends],
                               dtype=np.int64), device=tensor.device)
    lengths = _tensor(np.array(lens, dtype=np.int64), device=tensor.device)
    return NestedTensor(values=values, offsets=offsets, lengths=lengths)


# ---- conversions ----------------------------------------------------------------------------
def to_padded_tensor(input, padding, output_size=None):
    """A dense (B, max sizes...) tensor of the components, ``padding`` where a component ends;
    ``output_size`` pads further (strided: every dim, never smaller) or, for jagged, sets the
    padded length of the ragged dim (truncating, as torch). The gradient flows back."""
    if not _is_nt(input):
        raise TypeError(f"to_padded_tensor(): expected a nested tensor, got "
                        f"{type(input).__name__}")
    nd = input.dim()
    if input.is_jagged:
        length = None
        if output_size is not None:
            output_size = tuple(int(s) for s in output_size)
            if len(output_size) != nd:
                raise RuntimeError(f"to_padded_tensor(): output_size {output_size} must have "
                                   f"{nd} entries")
            length = output_size[input._ragged_idx]  # torch reads only the ragged dim's entry
        return _padded(input, padding, length)
    comps = list(input.unbind())
    if not comps:
        return _tensor(np.zeros((0,)), dtype=input.dtype)
    target = [max(c.shape[d] for c in comps) for d in range(nd - 1)]
    if output_size is not None:
        output_size = tuple(int(s) for s in output_size)
        if len(output_size) != nd:
            raise RuntimeError(f"to_padded_tensor(): output_size {output_size} must have "
                               f"{nd} entries")
        if input.is_jagged:
            r = input._ragged_idx - 1
            target[r] = output_size[input._ragged_idx]
            comps = [c.narrow(r, 0, min(c.shape[r], target[r])) for c in comps]
        else:
            if output_size[0] < len(comps) or any(
                    o < t for o, t in zip(output_size[1:], target)):
                raise RuntimeError("Value in output_size is less than NestedTensor padded size. "
                                   "Truncation is not supported.")
            target = list(output_size[1:])
            # a larger batch entry pads whole rows, as torch's
            comps += [_F.pad(comps[0][tuple(slice(0, 0) for _ in range(nd - 1))],
                             tuple(p for t in reversed(target) for p in (0, t)), value=padding)
                      for _ in range(output_size[0] - len(comps))]
    out = []
    for c in comps:
        pad = []
        for d in reversed(range(nd - 1)):
            pad += [0, target[d] - c.shape[d]]
        out.append(_F.pad(c, tuple(pad), value=padding) if any(pad) else c)
    return _stack(out)


def masked_select(tensor, mask):
    """The elements of ``tensor`` where ``mask`` holds, one 1-d component per batch row (dim 0),
    as a jagged nested tensor: the inverse of ``to_padded_tensor`` for a padding mask."""
    if not isinstance(tensor, Tensor) or not isinstance(mask, Tensor):
        raise TypeError("masked_select(): tensor and mask must be tensors")
    if np.dtype(mask.dtype) != np.bool_:
        raise RuntimeError(f"masked_select(): mask must be a bool tensor, got {mask.dtype}")
    if tensor.ndim < 1 or tuple(mask.shape) != tuple(tensor.shape):
        raise RuntimeError(f"masked_select(): mask of shape {tuple(mask.shape)} must have "
                           f"tensor's shape {tuple(tensor.shape)}")
    values = tensor.masked_select(mask)
    m = np.asarray(mask.numpy()).reshape(tensor.shape[0], -1)
    lens = m.sum(1)
    offsets = _tensor(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                      device=tensor.device)
    return NestedTensor(values=values, offsets=offsets)
