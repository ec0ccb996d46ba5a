"""Helpers shared by the distributions: broadcasting parameters, probabilities to logits and
back, lazily computed attributes, sums over the rightmost dims."""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..backend.dtypes import is_floating
from ..tensor import Tensor
from ..tensor_functions import get_default_dtype


def broadcast_all(*values):
    """Tensors of one broadcast shape from Tensors and numbers: numbers take the dtype and
    device of the first Tensor (the default dtype when there is none); gradients flow back
    through the broadcast."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    for v in values:
        if not isinstance(v, (Tensor, numbers.Number)):
            raise ValueError("Input arguments must all be instances of numbers.Number or "
                             f"minidl.Tensor, got {type(v).__name__}")
    if tensors:
        first = tensors[0]
        dtype = first.dtype if is_floating(first.dtype) else get_default_dtype()
        device = first.device
    else:
        dtype, device = get_default_dtype(), "cpu"
    out = [v if isinstance(v, Tensor) else Tensor(np.asarray(v, dtype=dtype), device=device)
           for v in values]
    shape = np.broadcast_shapes(*(t.shape for t in out))
    return tuple(t if t.shape == shape else t.expand(*shape) for t in out)


def broadcast_shape(name, *shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"{name}: shapes {' and '.join(str(tuple(s)) for s in shapes)} do not "
                         "broadcast") from None


def clamp_probs(probs):
    """Probabilities clamped to [eps, 1 - eps] of their dtype, so that their logs are finite."""
    eps = float(np.finfo(probs.dtype).eps)
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs, is_binary=False):
    """log(p) (log-probabilities of categories), or log(p) - log(1 - p) for is_binary."""
    ps = clamp_probs(probs)
    return ps.log() - (1 - ps).log() if is_binary else ps.log()


def logits_to_probs(logits, is_binary=False):
    return logits.sigmoid() if is_binary else logits.softmax(-1)


def sum_rightmost(value, dim):
    """``value`` summed over its ``dim`` rightmost dims."""
    if dim == 0:
        return value
    return value.reshape(*value.shape[:value.ndim - dim], -1).sum(-1)


class lazy_property:
    """An attribute computed on first access and then stored on the instance (Bernoulli's
    logits from probs, or probs from logits): set once, it is a plain attribute."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.__doc__ = wrapped.__doc__
        self.__name__ = wrapped.__name__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = self.wrapped(instance)
        instance.__dict__[self.wrapped.__name__] = value
        return value


def logsumexp(x, dim, keepdim=False):
    """log(sum(exp(x))) along dim with the max subtracted (no overflow); the max is a constant
    for the gradient, which is softmax(x) either way."""
    m = x.detach().amax(dim, keepdim=True)
    m = m.masked_fill(~(m == m) | (m.abs() == float("inf")), 0.0)  # all -inf rows: no NaN
    out = (x - m).exp().sum(dim, keepdim=True).log() + m
    return out if keepdim else out.squeeze(dim)


euler_constant = 0.57721566490153286060  # Euler-Mascheroni, as torch.distributions.utils


def is_tensor_like(x):
    return isinstance(x, Tensor)


def _tril_map(n, diag, dtype):
    """The 0/1 matrix taking the entries of an n x n matrix's lower triangle (below ``diag``,
    row by row, as torch.tril_indices) to a vector: vec = flat @ M."""
    rows, cols = np.tril_indices(n, diag)
    m = np.zeros((n * n, rows.size), dtype=dtype)
    m[rows * n + cols, np.arange(rows.size)] = 1
    return m


def tril_matrix_to_vec(mat, diag=0):
    """The entries of ``mat``'s lower triangle on and below ``diag`` (row by row), as
    torch.distributions.utils.tril_matrix_to_vec."""
    n = mat.shape[-1]
    if not -n <= diag < n:
        raise ValueError(f"diag ({diag}) provided is outside [{-n}, {n - 1}].")
    m = Tensor(_tril_map(n, diag, mat.dtype), device=mat.device)
    return mat.reshape(*mat.shape[:-2], n * n) @ m


def vec_to_tril_matrix(vec, diag=0):
    """The inverse of tril_matrix_to_vec, n from the vector's length (n (n + 1) / 2 entries
    on and below the diagonal, n (n - 1) / 2 strictly below, ...)."""
    m = vec.shape[-1]
    c = 1 + 2 * diag
    n = (-c + math.sqrt(c * c + 8 * m + 4 * abs(diag) * (diag + 1))) / 2
    if abs(round(n) - n) > 1e-9:
        raise ValueError(f"The size of last dimension is {m} which cannot be expressed as "
                         "the lower triangular part of a square D x D matrix.")
    n = round(n)
    mat = Tensor(_tril_map(n, diag, vec.dtype).T.copy(), device=vec.device)
    return (vec @ mat).reshape(*vec.shape[:-1], n, n)
