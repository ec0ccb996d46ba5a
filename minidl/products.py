"""Matrix and tensor products under PyTorch's names: mm, bmm, mv, dot, outer (ger), einsum.
mm, bmm, mv and dot are ``matmul`` (ops.MatMul, so autocast runs them in the low dtype) after
checks that name the shapes that do not fit; einsum is one Function whose gradient for each
operand is the einsum of the incoming gradient with the other operands.

Imports only ``backend``, ``autograd`` and ``ops``.
"""
from __future__ import annotations

import string

import numpy as np

from . import autograd
from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import is_floating, is_real_number
from .pointwise import OpArgumentError
from .ops import (
    BadArgumentError, Cast, Expand, MatMul, Mul, Reshape, Sum, UnsupportedDtypeError, Where,
    conj_inputs, constant, keep_where, refuse_unsigned, result_type, stack, wrap_dim,
)
from .shape_ops import select


def _tensor(name, what, x):
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")


def _same_dtype(name, a, b, autocast=False):
    """PyTorch's products take two tensors of one dtype; mm and bmm (``autocast=True``) also
    take a mix under autocast, which casts them (as matmul, ops.refuse_mixed_matmul)."""
    if a.data.dtype != b.data.dtype and not (autocast and autograd.autocast_hook() is not None):
        raise UnsupportedDtypeError(f"{name}: expected both operands to have the same dtype, "
                                    f"got {a.data.dtype} and {b.data.dtype}")


class Dot(MatMul):
    """matmul of 1-d operands (dot) or of a matrix and a vector (mv): its own name, because
    PyTorch's CPU autocast leaves dot and mv in the input dtype, while matmul runs low."""


def mm(input, mat2):
    """The matrix product of two 2-d tensors."""
    _tensor("mm", "input", input), _tensor("mm", "mat2", mat2)
    if input.ndim != 2 or mat2.ndim != 2:
        raise ValueError(f"mm: both operands must be 2-d matrices, got shapes {input.shape} and "
                         f"{mat2.shape}")
    if input.shape[1] != mat2.shape[0]:
        raise ValueError(f"mm: shapes {input.shape} and {mat2.shape} cannot be multiplied "
                         f"({input.shape[1]} columns, {mat2.shape[0]} rows)")
    _same_dtype("mm", input, mat2, autocast=True)
    return MatMul.apply(input, mat2)


def bmm(input, mat2):
    """Batched matrix products of two 3-d tensors with the same batch size (no broadcast)."""
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("bmm", input, mat2)
    _tensor("bmm", "input", input), _tensor("bmm", "mat2", mat2)
    if input.ndim != 3 or mat2.ndim != 3:
        raise ValueError(f"bmm: both operands must be 3-d (batch, n, m), got shapes "
                         f"{input.shape} and {mat2.shape}")
    if input.shape[0] != mat2.shape[0]:
        raise ValueError(f"bmm: batch sizes differ: shapes {input.shape} and {mat2.shape}")
    if input.shape[2] != mat2.shape[1]:
        raise ValueError(f"bmm: shapes {input.shape} and {mat2.shape} cannot be multiplied "
                         f"({input.shape[2]} columns, {mat2.shape[1]} rows)")
    _same_dtype("bmm", input, mat2, autocast=True)
    return MatMul.apply(input, mat2)


def mv(input, vec):
    """A matrix (2-d) times a vector (1-d)."""
    _tensor("mv", "input", input), _tensor("mv", "vec", vec)
    if input.ndim != 2 or vec.ndim != 1:
        raise ValueError(f"mv: needs a 2-d matrix and a 1-d vector, got shapes {input.shape} "
                         f"and {vec.shape}")
    if input.shape[1] != vec.shape[0]:
        raise ValueError(f"mv: shapes {input.shape} and {vec.shape} cannot be multiplied")
    _same_dtype("mv", input, vec)
    return Dot.apply(input, vec)


def dot(input, tensor):
    """The dot product of two 1-d tensors of the same size."""
    _tensor("dot", "input", input), _tensor("dot", "tensor", tensor)
    if input.ndim != 1 or tensor.ndim != 1:
        raise BadArgumentError(f"dot: both operands must be 1-d, got shapes {input.shape} and "
                         f"{tensor.shape}")
    if input.shape != tensor.shape:
        raise ValueError(f"dot: sizes differ: {input.shape[0]} and {tensor.shape[0]}")
    _same_dtype("dot", input, tensor)
    return Dot.apply(input, tensor)


def outer(input, vec2):
    """The outer product ``input[i] * vec2[j]`` of two 1-d tensors."""
    _tensor("outer", "input", input), _tensor("outer", "vec2", vec2)
    if input.ndim != 1 or vec2.ndim != 1:
        raise BadArgumentError(f"outer: both operands must be 1-d, got shapes {input.shape} and "
                         f"{vec2.shape}")
    a, b = input, vec2
    dtype = result_type(a, b)
    a = a if a.data.dtype == dtype else Cast.apply(a, dtype=dtype)
    b = b if b.data.dtype == dtype else Cast.apply(b, dtype=dtype)
    return Mul.apply(Reshape.apply(a, shape=(-1, 1)), Reshape.apply(b, shape=(1, -1)))


ger = outer


# ---- einsum --------------------------------------------------------------------------------
def _parse(equation, shapes):
    """(input subscripts, output subscripts) with every ellipsis spelled out in letters that
    the equation does not use; the output is NumPy's implicit one where '->' is absent."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: the equation {equation!r} has {len(terms)} operands, "
                         f"{len(shapes)} were given")
    for ch in eq:
        if not (ch.isalpha() or ch in ",.->"):
            raise ValueError(f"einsum: invalid subscript {ch!r} in {equation!r}")
    spare = [c for c in string.ascii_letters if c not in eq]
    ell = 0
    out_terms = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            n = len(shape) - (len(term) - 3)
            if n < 0:
                raise ValueError(f"einsum: operand of shape {shape} has fewer dims than "
                                 f"subscripts {term!r}")
            ell = max(ell, n)
    lead = "".join(spare[:ell])
    for term, shape in zip(terms, shapes):
        if "..." in term:
            n = len(shape) - (len(term) - 3)
            term = term.replace("...", lead[ell - n:])
        if len(term) != len(shape):
            raise ValueError(f"einsum: subscripts {term!r} name {len(term)} dims, the operand "
                             f"has {len(shape)} (shape {shape})")
        out_terms.append(term)
    if arrow:
        out = rhs.replace("...", lead)
    else:
        counts = {}
        for c in "".join(out_terms):
            counts[c] = counts.get(c, 0) + 1
        out = lead + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in lead))
    for c in out:
        if not any(c in t for t in out_terms):
            raise ValueError(f"einsum: output subscript {c!r} of {equation!r} appears in no "
                             "operand")
    return out_terms, out


class Einsum(Function):
    """``xp.einsum`` over explicit subscripts. Operand k's gradient is the einsum of the
    incoming gradient with the other operands onto k's subscripts, broadcast over letters that
    appear only in k (summed away in the forward pass). For complex operands the others enter
    conjugated (PyTorch's convention)."""

    complex_grad = True

    def forward(self, *arrays, terms, out):
        self.terms, self.out = terms, out
        self.save_for_backward(*arrays)
        xp = get_array_module(*arrays)
        y = xp.einsum(",".join(terms) + "->" + out, *arrays, optimize=len(arrays) > 2)
        return y.astype(arrays[0].dtype, copy=False)

    def backward(self, g):
        arrays = self.saved
        xp = get_array_module(g)
        if g.dtype.kind == "c":
            arrays = [a.conj() for a in arrays]
        grads = []
        for k, (term, a) in enumerate(zip(self.terms, arrays)):
            if not self.inputs[k].requires_grad:
                grads.append(None)
                continue
            others = [(t, x) for j, (t, x) in enumerate(zip(self.terms, arrays)) if j != k]
            known = set(self.out).union(*[set(t) for t, _ in others])
            unique = "".join(dict.fromkeys(term))
            present = "".join(c for c in unique if c in known)
            spec = ",".join([self.out] + [t for t, _ in others]) + "->" + present
            gk = xp.einsum(spec, g, *[x for _, x in others], optimize=len(others) > 1)
            size = {c: n for c, n in zip(term, a.shape)}
            gk = gk.reshape(tuple(gk.shape[present.index(c)] if c in present else 1
                                  for c in unique))
            # a size-1 dim of k that broadcast against the others: sum its gradient back
            ones = tuple(i for i, c in enumerate(unique) if size[c] == 1 and gk.shape[i] != 1)
            if ones:
                gk = gk.sum(axis=ones, keepdims=True)
            gk = xp.broadcast_to(gk, tuple(size[c] for c in unique))
            if len(unique) != len(term):  # a letter repeated in k: onto its diagonal
                full = xp.zeros(a.shape, dtype=g.dtype)
                n = len(unique)
                where = {c: xp.arange(size[c]).reshape((-1,) + (1,) * (n - i - 1))
                         for i, c in enumerate(unique)}
                full[tuple(where[c] for c in term)] = gk
                gk = full
            grads.append(gk.astype(a.dtype, copy=False))
        return tuple(grads)

    def graph_backward(self, g, out):
        xp = get_array_module(g.data)
        spare = [c for c in string.ascii_letters
                 if c not in set(self.out).union(*[set(t) for t in self.terms])]
        grads = []
        inputs = conj_inputs(g, *self.inputs)
        for k, (term, a) in enumerate(zip(self.terms, inputs)):
            if not self.inputs[k].requires_grad:
                grads.append(None)
                continue
            others = [(t, x) for j, (t, x) in enumerate(zip(self.terms, inputs)) if j != k]
            known = set(self.out).union(*[set(t) for t, _ in others])
            unique = "".join(dict.fromkeys(term))
            present = "".join(c for c in unique if c in known)
            gk = Einsum.apply(g, *[x for _, x in others], out=present,
                              terms=(self.out,) + tuple(t for t, _ in others))
            size = {c: n for c, n in zip(term, a.shape)}
            gk = Reshape.apply(gk, shape=tuple(gk.shape[present.index(c)] if c in present else 1
                                               for c in unique))
            ones = tuple(i for i, c in enumerate(unique) if size[c] == 1 and gk.shape[i] != 1)
            if ones:
                gk = Sum.apply(gk, dim=ones, keepdim=True)
            full = tuple(size[c] for c in unique)
            if gk.shape != full:
                gk = Expand.apply(gk, shape=full)
            if len(unique) != len(term):
                # a letter repeated in k: onto its diagonal, an einsum with identity matrices
                # (each repeat spelled with a fresh letter)
                fresh, seen, spelled, eyes, eye_terms = iter(spare), set(), "", [], []
                for c in term:
                    if c in seen:
                        d = next(fresh)
                        eyes.append(constant(xp.eye(size[c], dtype=g.data.dtype)))
                        eye_terms.append(c + d)
                        spelled += d
                    else:
                        seen.add(c)
                        spelled += c
                gk = Einsum.apply(gk, *eyes, terms=(unique,) + tuple(eye_terms), out=spelled)
            grads.append(gk)
        return tuple(grads)


def einsum(equation, *operands):
    """Einstein summation as torch.einsum (ellipsis, implicit output, size-1 broadcasting);
    operands as separate arguments or one list, all of one dtype."""
    if len(operands) == 1 and isinstance(operands[0], (tuple, list)):
        operands = tuple(operands[0])
    if not isinstance(equation, str):
        raise TypeError(f"einsum: the equation must be a string, got {type(equation).__name__}")
    for i, x in enumerate(operands):
        _tensor("einsum", f"operand {i}", x)
    terms, out = _parse(equation, [x.shape for x in operands])
    sizes = {}
    for term, x in zip(terms, operands):
        for c, n in zip(term, x.shape):
            if c in sizes and n != sizes[c] and 1 not in (n, sizes[c]):
                raise ValueError(f"einsum: subscript {c!r} has size {sizes[c]} in one operand "
                                 f"and {n} in another (shapes {[x.shape for x in operands]})")
            sizes[c] = n if c not in sizes or sizes[c] == 1 else sizes[c]
    dtypes = {x.data.dtype for x in operands}
    if len(dtypes) > 1:
        raise TypeError(f"einsum: operands have different dtypes {sorted(map(str, dtypes))}; "
                        "cast them to one dtype first (as PyTorch asks)")
    return Einsum.apply(*operands, terms=tuple(terms), out=out)



TENSOR_METHODS = {"mm": mm, "bmm": bmm, "mv": mv, "dot": dot, "outer": outer, "ger": ger}


def trace(input):
    """The sum of a matrix's main diagonal."""
    if input.data.dtype.kind == "u":
        refuse_unsigned(input.data.dtype, "trace")
    if input.ndim != 2:
        raise ValueError(f"trace: needs a 2-d matrix, got shape {input.shape}")
    hook = autograd.autocast_hook()
    if hook is not None:  # PyTorch's CPU autocast sums 16-bit input in float32, to float32
        (input,) = hook.inputs("trace", [input])
    return input.diagonal().sum()


class _Ignored(Function):
    """Zeros in place of an input that ``beta=0`` ignores: a NaN in it does not spread, its
    shape must still broadcast, and its gradient is zeros (not None), as in PyTorch."""

    def forward(self, a):
        return get_array_module(a).zeros_like(a)

    def backward(self, g):
        return get_array_module(g).zeros_like(g)

    def graph_backward(self, g, out):
        return constant(get_array_module(g.data).zeros_like(g.data))  # zero, whatever the input


def _scaled_sum(input, product, beta, alpha):
    out = product if alpha == 1 else product * alpha
    shape = tuple(getattr(input, "shape", ()))
    if len(shape) > out.ndim or any(n not in (1, m) for n, m in zip(shape[::-1], out.shape[::-1])):
        raise OpArgumentError(f"the input of shape {shape} does not broadcast to the product's shape "
                         f"{tuple(out.shape)}")
    if beta == 0:
        input, beta = _Ignored.apply(input), 1
    if autograd.autocast_hook() is not None and input.data.dtype != out.data.dtype:
        # autocast runs addmm/baddbmm as one op in the low dtype: input is cast to it too
        input = Cast.apply(input, dtype=out.data.dtype)
    return out + (input if beta == 1 else input * beta)


def counted_as(forward, backward, op, *args):
    """``op(*args)``, whose products a running FlopCounterMode counts as torch counts the one
    op torch has for them: ``forward`` its name for the forward (None: uncounted),
    ``backward`` whether the backward's products count (see autograd._flop_alias)."""
    if autograd._profiler_hook is None:
        return op(*args)
    previous, autograd._flop_alias = autograd._flop_alias, (forward, backward)
    try:
        return op(*args)
    finally:
        autograd._flop_alias = previous


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """``beta * input + alpha * (mat1 @ mat2)`` (input broadcast)."""
    return _scaled_sum(input, counted_as("addmm", True, mm, mat1, mat2), beta, alpha)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """``beta * input + alpha * bmm(batch1, batch2)``."""
    return _scaled_sum(input, counted_as("baddbmm", True, bmm, batch1, batch2), beta, alpha)


def addmv(input, mat, vec, *, beta=1, alpha=1):
    """``beta * input + alpha * (mat @ vec)``."""
    return _scaled_sum(input, mv(mat, vec), beta, alpha)


def inner(input, other):
    """The sum over the last dims of both: shape ``input.shape[:-1] + other.shape[:-1]``."""
    if input.ndim == 0 or other.ndim == 0:
        return input * other
    if input.shape[-1] != other.shape[-1]:
        raise ValueError(f"inner: last dims differ: shapes {input.shape} and {other.shape}")
    k = input.shape[-1]
    flat = other.reshape(-1, k)
    out = input.reshape(-1, k) @ flat.transpose(0, 1)
    return out.reshape(input.shape[:-1] + other.shape[:-1])


def cross(input, other, dim=None):
    """The cross product of 3-vectors along ``dim`` (the first dim of size 3 when None, as
    torch.cross; torch.linalg.cross uses -1)."""
    shape = np.broadcast_shapes(input.shape, other.shape)
    if dim is None:
        dim = next((i for i, n in enumerate(shape) if n == 3), None)
        if dim is None:
            raise ValueError(f"cross: no dim of size 3 in shapes {input.shape} and "
                             f"{other.shape}")
    a, b = input.expand(shape), other.expand(shape)
    d = wrap_dim(dim, len(shape), "cross")
    if shape[d] != 3:
        raise ValueError(f"cross: dim {dim} has size {shape[d]}, not 3 (shapes {input.shape} "
                         f"and {other.shape})")
    a0, a1, a2 = (select(a, d, i) for i in range(3))
    b0, b1, b2 = (select(b, d, i) for i in range(3))
    return stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=d)


TENSOR_METHODS.update({"trace": trace, "addmm": addmm, "baddbmm": baddbmm, "addmv": addmv,
                       "inner": inner, "cross": cross})
FUNCTIONS = ["mm", "bmm", "mv", "dot", "outer", "ger", "einsum", "trace", "addmm", "baddbmm",
             "addmv", "inner", "cross"]


# ---- cdist ---------------------------------------------------------------------------------
class CdistArgumentError(ValueError, RuntimeError):
    """An argument of cdist PyTorch refuses with a RuntimeError (p < 0, too few dims, column
    counts that differ): a ValueError as minidl's other argument errors, a RuntimeError as
    PyTorch's."""


def _pairwise_difference(x1, x2):
    return x1[..., :, None, :] - x2[..., None, :, :]


# rows of x1 per step, so that one step's (..., rows, R, M) differences stay near this many
# elements (the memory of a step, not of the whole (..., P, R, M) at once)
_CDIST_STEP_ELEMENTS = 1 << 22


def _row_steps(a, b):
    batch = int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])))
    per_row = max(1, batch * b.shape[-2] * b.shape[-1])
    rows = max(1, _CDIST_STEP_ELEMENTS // per_row)
    return [(i, min(i + rows, a.shape[-2])) for i in range(0, a.shape[-2], rows)] or [(0, 0)]


class Cdist(Function):
    """The p-norm distance of every row of x1 to every row of x2 (batch dims broadcast), from
    the differences, a block of x1's rows at a time. Gradients are PyTorch's: 0 where a
    distance is 0, and for p < 1 where a coordinate difference is 0; for p = inf every
    coordinate that attains the max gets the gradient."""

    def forward(self, x1, x2, p):
        xp = get_array_module(x1)
        self.p, self.dtype = p, x1.dtype
        wide = np.float32 if x1.dtype.itemsize == 2 else None
        a, b = (x1, x2) if wide is None else (x1.astype(wide), x2.astype(wide))
        parts = []
        for i, j in _row_steps(a, b):
            diff = _pairwise_difference(a[..., i:j, :], b)
            m = abs(diff)
            if p == 0:
                y = (m != 0).sum(axis=-1).astype(a.dtype)
            elif p == 1:
                y = m.sum(axis=-1)
            elif p == 2:
                y = xp.sqrt((diff * diff).sum(axis=-1))
            elif p == float("inf"):
                y = m.max(axis=-1) if m.shape[-1] else xp.zeros(m.shape[:-1], a.dtype)
            else:
                y = (m ** p).sum(axis=-1) ** (1.0 / p)
            parts.append(y)
        y = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=-2)
        self.save_for_backward(a, b, y)
        return y.astype(x1.dtype, copy=False)

    def _derivative(self, xp, diff, dist):
        """d dist / d diff for one block, where ``dist`` has a trailing 1."""
        p = self.p
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if p == 0:
                return xp.zeros_like(diff)
            if p == 1:
                return xp.sign(diff)
            if p == 2:
                return xp.where(dist == 0, 0, diff / dist)
            if p == float("inf"):
                return xp.sign(diff) * (abs(diff) == dist)
            m = abs(diff)
            d = xp.sign(diff) * m ** (p - 1) / dist ** (p - 1)
            zero = (dist == 0) | ((m == 0) if p < 1 else False)
            return xp.where(zero, 0, d)

    def backward(self, g):
        a, b, y = self.saved
        xp = get_array_module(g)
        g = g.astype(a.dtype, copy=False)  # 16-bit input: its gradient computed in float32
        g1_parts, g2 = [], None
        for i, j in _row_steps(a, b):
            diff = _pairwise_difference(a[..., i:j, :], b)
            gd = g[..., i:j, :, None] * self._derivative(xp, diff, y[..., i:j, :, None])
            g1_parts.append(gd.sum(axis=-2))
            step = gd.sum(axis=-3)
            g2 = -step if g2 is None else g2 - step
        g1 = g1_parts[0] if len(g1_parts) == 1 else xp.concatenate(g1_parts, axis=-2)
        return g1.astype(self.dtype, copy=False), g2.astype(self.dtype, copy=False)

    def graph_backward(self, g, out):
        # backward's derivative as recorded ops, on all rows at once (no steps)
        x1, x2 = self.inputs
        xp = get_array_module(g.data)
        p = self.p
        if p == 0:
            return (constant(xp.zeros(x1.shape, g.data.dtype)),
                    constant(xp.zeros(x2.shape, g.data.dtype)))
        diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
        sign = xp.sign(diff.data)
        dist = out.unsqueeze(-1)
        one = constant(xp.ones((), dtype=g.data.dtype))
        if p == 1:
            d = constant(sign)
        elif p == float("inf"):
            d = constant(sign * (abs(diff.data) == dist.data))
        else:
            # the zero cases of backward masked out, with their denominators made 1 so that
            # no 0/0 reaches the second derivative either
            zero = dist.data == 0
            safe = Where.apply(constant(zero), one, dist)
            if p == 2:
                d = keep_where(~zero, diff / safe)
            else:
                m = abs(diff.data)
                zero = zero | (m == 0)
                m_safe = Where.apply(constant(m == 0), one, diff * constant(sign))
                d = keep_where(~zero, constant(sign) * m_safe ** (p - 1) / safe ** (p - 1))
        gd = g.unsqueeze(-1) * d
        return gd.sum(-2), -gd.sum(-3)  # broadcast batch dims: the engine sums them back


_COMPUTE_MODES = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist",
                  "donot_use_mm_for_euclid_dist")


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """Distances between the rows of ``x1`` (..., P, M) and ``x2`` (..., R, M): (..., P, R),
    batch dims broadcast, as torch.cdist. ``compute_mode`` is checked and otherwise ignored:
    the distances are always computed from the differences (never through a matrix product,
    which loses digits for close points)."""
    for what, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, autograd.Tensor):
            raise TypeError(f"cdist(): argument '{what}' must be a Tensor, not "
                            f"{type(x).__name__}")
        if x.ndim < 2:
            raise CdistArgumentError(f"cdist: only supports at least 2D tensors, {what} got: "
                                     f"{x.ndim}D")
        if not is_floating(x.data.dtype):
            raise UnsupportedDtypeError(f"cdist: only supports floating-point dtypes, {what} "
                                        f"got: {x.data.dtype}")
    if x1.data.dtype != x2.data.dtype:
        raise UnsupportedDtypeError(f"cdist: x1 and x2 must have the same dtype, got "
                                    f"{x1.data.dtype} and {x2.data.dtype}")
    if x1.shape[-1] != x2.shape[-1]:
        raise CdistArgumentError(f"cdist: X1 and X2 must have the same number of columns. X1: "
                                 f"{x1.shape[-1]} X2: {x2.shape[-1]}")
    if isinstance(p, bool) or not is_real_number(p):
        raise TypeError(f"cdist: p must be a number, got {type(p).__name__}")
    if not p >= 0:
        raise CdistArgumentError(f"cdist: only supports non-negative p values, got {p}")
    if compute_mode not in _COMPUTE_MODES:
        raise ValueError(f"{compute_mode} is not a valid value for compute_mode")
    try:
        np.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
    except ValueError:
        raise CdistArgumentError(f"cdist: batch dims do not broadcast: x1 {tuple(x1.shape)}, "
                                 f"x2 {tuple(x2.shape)}") from None
    return Cdist.apply(x1, x2, p=float(p))


FUNCTIONS.append("cdist")


def pdist(input, p=2.0):
    """The p-norm distance between each pair of rows i < j of a 2-d tensor (n, M): a 1-d
    tensor of n (n - 1) / 2 distances in row-major order, as torch.pdist."""
    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"pdist(): argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.ndim != 2:
        raise CdistArgumentError(f"pdist: only supports 2D tensors, got: {input.ndim}D")
    if not is_floating(input.data.dtype):
        raise TypeError(f"pdist: only supports floating-point dtypes, got {input.data.dtype}")
    n = input.shape[0]
    rows, cols = np.triu_indices(n, 1)
    xp = get_array_module(input.data)
    index = (xp.asarray(rows.astype(np.int64)), xp.asarray(cols.astype(np.int64)))
    return cdist(input, input, p)[autograd.Tensor(index[0]), autograd.Tensor(index[1])]


FUNCTIONS += ["pdist"]  # dist: statistics.py
