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
from .autograd import Function, unbroadcast
from .backend import get_array_module
from .ops import (
    BadArgumentError, Cast, MatMul, Mul, Reshape, UnsupportedDtypeError, result_type, stack,
    wrap_dim,
)
from .shape_ops import select


def _tensor(name, what, x):
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")


def _same_dtype(name, a, b):
    if a.data.dtype != b.data.dtype:
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
    _same_dtype("mm", input, mat2)
    return MatMul.apply(input, mat2)


def bmm(input, mat2):
    """Batched matrix products of two 3-d tensors with the same batch size (no broadcast)."""
    _tensor("bmm", "input", input), _tensor("bmm", "mat2", mat2)
    if input.ndim != 3 or mat2.ndim != 3:
        raise ValueError(f"bmm: both operands must be 3-d (batch, n, m), got shapes "
                         f"{input.shape} and {mat2.shape}")
    if input.shape[0] != mat2.shape[0]:
        raise ValueError(f"bmm: batch sizes differ: shapes {input.shape} and {mat2.shape}")
    if input.shape[2] != mat2.shape[1]:
        raise ValueError(f"bmm: shapes {input.shape} and {mat2.shape} cannot be multiplied "
                         f"({input.shape[2]} columns, {mat2.shape[1]} rows)")
    _same_dtype("bmm", input, mat2)
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
    appear only in k (summed away in the forward pass)."""

    def forward(self, *arrays, terms, out):
        self.terms, self.out = terms, out
        self.save_for_backward(*arrays)
        xp = get_array_module(*arrays)
        y = xp.einsum(",".join(terms) + "->" + out, *arrays, optimize=len(arrays) > 2)
        return y.astype(arrays[0].dtype, copy=False)

    def backward(self, g):
        arrays = self.saved
        xp = get_array_module(g)
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
    if input.ndim != 2:
        raise ValueError(f"trace: needs a 2-d matrix, got shape {input.shape}")
    return input.diagonal().sum()


def _scaled_sum(input, product, beta, alpha):
    out = product if alpha == 1 else product * alpha
    if beta == 0:  # input is ignored (a NaN in it does not spread), as in PyTorch
        return out
    if autograd.autocast_hook() is not None and input.data.dtype != out.data.dtype:
        # autocast runs addmm/baddbmm as one op in the low dtype: input is cast to it too
        input = Cast.apply(input, dtype=out.data.dtype)
    return out + (input if beta == 1 else input * beta)


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """``beta * input + alpha * (mat1 @ mat2)`` (input broadcast)."""
    return _scaled_sum(input, mm(mat1, mat2), beta, alpha)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """``beta * input + alpha * bmm(batch1, batch2)``."""
    return _scaled_sum(input, bmm(batch1, batch2), beta, alpha)


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


# ---- tensordot, kron, vdot ------------------------------------------------------------------
def tensordot(a, b, dims=2):
    """The sum over ``dims`` pairs of dims: an int n (a's last n with b's first n) or two lists
    of dims (a's, b's); both of one dtype, as PyTorch asks."""
    _tensor("tensordot", "a", a)
    _tensor("tensordot", "b", b)
    _same_dtype("tensordot", a, b)
    if isinstance(dims, autograd.Tensor):
        dims = dims.tolist()
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        if dims < 0 or dims > min(a.ndim, b.ndim):
            raise BadArgumentError(f"tensordot expects dims >= 0 and <= the smaller number of "
                                   f"dims, got {dims} for shapes {a.shape} and {b.shape}")
        da, db = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        da, db = ([d] if isinstance(d, (int, np.integer)) else list(d) for d in dims)
        da = [wrap_dim(d, a.ndim, "tensordot") for d in da]
        db = [wrap_dim(d, b.ndim, "tensordot") for d in db]
    if len(da) != len(db) or any(a.shape[i] != b.shape[j] for i, j in zip(da, db)):
        raise BadArgumentError(f"tensordot: dims {da} of {a.shape} and {db} of {b.shape} do "
                               "not match")
    free_a = [i for i in range(a.ndim) if i not in da]
    free_b = [j for j in range(b.ndim) if j not in db]
    k = int(np.prod([a.shape[i] for i in da]))
    left = a.permute(free_a + da).reshape(-1, k)
    right = b.permute(db + free_b).reshape(k, -1)
    return (left @ right).reshape(tuple(a.shape[i] for i in free_a)
                                  + tuple(b.shape[j] for j in free_b))


def kron(input, other):
    """The Kronecker product: each element of input times the whole of other, laid out in
    blocks (dims matched from the right)."""
    n = max(input.ndim, other.ndim)
    sa = (1,) * (n - input.ndim) + tuple(input.shape)
    sb = (1,) * (n - other.ndim) + tuple(other.shape)
    a = input.reshape(tuple(x for s in sa for x in (s, 1)))
    b = other.reshape(tuple(x for s in sb for x in (1, s)))
    return (a * b).reshape(tuple(x * y for x, y in zip(sa, sb)))


def vdot(input, other):
    """The dot product of two 1-d tensors (real: torch.dot)."""
    return dot(input, other)


TENSOR_METHODS.update({"tensordot": tensordot, "kron": kron, "vdot": vdot})
FUNCTIONS += ["tensordot", "kron", "vdot"]


# ---- cdist, cov, corrcoef ------------------------------------------------------------------
class Cdist(Function):
    """The p-norm distance of every row of x1 to every row of x2 (batch dims broadcast), with
    PyTorch's gradients: 0 for p = 0; sign(d) for p = 1; d / dist for p = 2 (0 at dist 0);
    sign(d) at each coordinate that reaches the max for p = inf (every tied one)."""

    def forward(self, x1, x2, p):
        xp = get_array_module(x1)
        diff = x1[..., :, None, :] - x2[..., None, :, :]
        self.p = p
        a = xp.abs(diff)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if p == 0:
                dist = (a != 0).sum(axis=-1).astype(x1.dtype)
            elif p == 1:
                dist = a.sum(axis=-1)
            elif p == 2:
                dist = xp.sqrt((diff * diff).sum(axis=-1))
            elif p == np.inf:
                dist = a.max(axis=-1) if a.shape[-1] else xp.zeros(a.shape[:-1], x1.dtype)
            else:
                dist = (a ** p).sum(axis=-1) ** (1 / p)
        self.save_for_backward(diff, dist)
        self.shapes = x1.shape, x2.shape
        return dist.astype(x1.dtype, copy=False)

    def backward(self, g):
        diff, dist = self.saved
        xp = get_array_module(g)
        p, gd, d = self.p, g[..., None], dist[..., None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if p == 0:
                each = xp.zeros_like(diff)
            elif p == 1:
                each = gd * xp.sign(diff)
            elif p == 2:
                each = xp.where(d == 0, 0, gd * diff / d)
            elif p == np.inf:
                each = gd * xp.sign(diff) * (xp.abs(diff) == d)
            else:
                each = xp.where(d == 0, 0, gd * diff * xp.abs(diff) ** (p - 2) / d ** (p - 1))
        each = each.astype(g.dtype, copy=False)
        g1 = unbroadcast(each.sum(axis=-2), self.shapes[0])
        g2 = unbroadcast(-each.sum(axis=-3), self.shapes[1])
        return g1, g2


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """Distances between the rows of x1 (..., P, M) and of x2 (..., R, M): (..., P, R)."""
    _tensor("cdist", "x1", x1)
    _tensor("cdist", "x2", x2)
    for t in (x1, x2):
        if not t.data.dtype.kind == "f" and t.data.dtype.name != "bfloat16":
            raise UnsupportedDtypeError(f"cdist only supports floating-point dtypes, got "
                                        f"{t.data.dtype}")
    if x1.ndim < 2 or x2.ndim < 2:
        raise BadArgumentError(f"cdist only supports at least 2D tensors, got {x1.ndim}D and "
                               f"{x2.ndim}D")
    if x1.shape[-1] != x2.shape[-1]:
        raise BadArgumentError(f"X1 and X2 must have the same number of columns. X1: "
                               f"{x1.shape[-1]} X2: {x2.shape[-1]}")
    if p < 0:
        raise BadArgumentError(f"cdist only supports non-negative p values, got {p}")
    _same_dtype("cdist", x1, x2)
    return Cdist.apply(x1, x2, p=float(p))


def cov(input, *, correction=1, fweights=None, aweights=None):
    """The covariance of the variables in the rows of ``input`` (observations in columns; a
    1-d input is one variable), optionally weighted by integer ``fweights`` (frequencies)
    and ``aweights`` (importance), as torch.cov. No degrees of freedom left: a warning, and
    inf/NaN."""
    if input.ndim > 2:
        raise BadArgumentError(f"cov(): expected input to have two or fewer dimensions but got "
                               f"an input with {input.ndim} dimensions")
    x = input.reshape(1, -1) if input.ndim < 2 else input
    if not x.data.dtype.kind == "f":
        x = x.to(np.dtype(np.float32))
    n = x.shape[1]
    w = None
    for name, weights in (("fweights", fweights), ("aweights", aweights)):
        if weights is None:
            continue
        if weights.ndim > 1 or weights.numel() != n:
            raise BadArgumentError(f"cov(): expected {name} to have one dimension and {n} "
                                   f"elements, got shape {tuple(weights.shape)}")
        if name == "fweights" and weights.data.dtype.kind not in "iu":
            raise UnsupportedDtypeError("cov(): expected fweights to have integral dtype")
        if bool((weights.data < 0).any()):
            raise BadArgumentError(f"cov(): {name} cannot be negative")
        weights = weights.to(x.data.dtype)
        w = weights if w is None else w * weights
    if w is None:
        w_sum = float(n)
        mean = x.mean(1, keepdim=True)
        norm = w_sum - correction
    else:
        w_sum = w.sum()
        mean = (x * w).sum(1, keepdim=True) / w_sum
        norm = w_sum - (correction if aweights is None else
                        correction * (w * aweights.to(x.data.dtype)).sum() / w_sum)
    norm_value = float(norm.item() if isinstance(norm, autograd.Tensor) else norm)
    if norm_value <= 0:
        import warnings

        warnings.warn("cov(): degrees of freedom is <= 0. Correction should be strictly less "
                      "than the number of observations.", UserWarning, stacklevel=2)
        norm = 0.0
    centred = x - mean
    weighted = centred if w is None else centred * w
    c = (centred @ weighted.transpose(0, 1)) / norm
    return c.reshape(()) if c.shape == (1, 1) else c  # one variable: 0-d, as torch


def corrcoef(input):
    """Pearson's correlation coefficients of the rows of ``input`` (clipped to [-1, 1])."""
    c = cov(input)
    if c.ndim == 0:
        return c / c
    d = c.diagonal()
    std = d.sqrt()
    c = c / std.reshape(-1, 1) / std.reshape(1, -1)
    return c.clamp(-1, 1)


TENSOR_METHODS.update({"cov": cov, "corrcoef": corrcoef})
FUNCTIONS += ["cdist", "cov", "corrcoef"]


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """``beta * input + alpha * sum_b batch1[b] @ batch2[b]``."""
    return _scaled_sum(input, bmm(batch1, batch2).sum(0), beta, alpha)


def addr(input, vec1, vec2, *, beta=1, alpha=1):
    """``beta * input + alpha * outer(vec1, vec2)``."""
    return _scaled_sum(input, outer(vec1, vec2), beta, alpha)


TENSOR_METHODS.update({"addbmm": addbmm, "addr": addr})
FUNCTIONS += ["addbmm", "addr"]
