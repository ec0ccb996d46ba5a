"""``minidl.linalg``: torch.linalg's norms (vector_norm, matrix_norm, norm) and cross, built
on minidl's differentiable ops."""
from __future__ import annotations

from .math_ops import amin, vector_norm
from .ops import wrap_dim
from .products import cross as _cross

_INF = float("inf")


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """The ``ord`` norm of the matrices in ``dim``: 'fro', or 1 / -1 (the largest / smallest
    column sum of |A|) and inf / -inf (row sums). 2, -2 and 'nuc' need singular values, which
    minidl does not have."""
    if dtype is not None:
        A = A.to(dtype)
    if A.ndim < 2:
        raise ValueError(f"matrix_norm: needs at least 2 dims, got shape {A.shape}")
    d0, d1 = (wrap_dim(d, A.ndim, "matrix_norm") for d in dim)
    if d0 == d1:
        raise ValueError(f"matrix_norm: dim must name two different dims, got {tuple(dim)}")
    if ord == "fro":
        return vector_norm(A, 2, (d0, d1), keepdim)
    if ord in (1, -1, _INF, -_INF):
        # 1: sum over rows (dim d0), then the extreme over columns; inf: the other way round
        inner, outer = (d0, d1) if ord in (1, -1) else (d1, d0)
        sums = A.abs().sum(dim=inner, keepdim=True)
        out = sums.amax(dim=outer, keepdim=True) if ord > 0 else amin(sums, outer, True)
        return out if keepdim else out.squeeze((d0, d1))
    raise NotImplementedError(f"matrix_norm: ord={ord!r} needs singular values; minidl has "
                              "'fro', 1, -1, inf and -inf")


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.norm: with ``ord`` None, the 2-norm of all elements (of ``dim``); a number
    with a 1-d input or an int ``dim`` is a vector norm, with a 2-d input or two dims a matrix
    norm."""
    if isinstance(dim, int):
        dim = (dim,)
    if ord is None:
        return vector_norm(A, 2, dim, keepdim, dtype=dtype)
    if (dim is not None and len(dim) == 2) or (dim is None and A.ndim == 2):
        return matrix_norm(A, ord, dim if dim is not None else (-2, -1), keepdim, dtype=dtype)
    if dim is None and A.ndim != 1:
        raise ValueError(f"norm: ord={ord!r} needs a 1-d or 2-d input or dim, got shape "
                         f"{A.shape}")
    if isinstance(ord, str):
        raise ValueError(f"norm: ord={ord!r} is a matrix norm; pass a 2-d input or two dims")
    return vector_norm(A, ord, dim, keepdim, dtype=dtype)


def cross(input, other, *, dim=-1):
    """The cross product along ``dim`` (the last by default), as torch.linalg.cross."""
    return _cross(input, other, dim=dim)


__all__ = ["vector_norm", "matrix_norm", "norm", "cross"]
