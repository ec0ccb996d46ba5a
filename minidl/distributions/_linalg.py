"""The two linear-algebra ops MultivariateNormal needs, as private Functions with batched
(broadcasting) forward and backward: the Cholesky factor and the lower-triangular solve."""
from __future__ import annotations

import numpy as np

from ..autograd import Function, unbroadcast
from ..backend import get_array_module
from ..ops import constant, swap_last_dims
from ..shape_ops import Flip


def _mT(a):
    return a.swapaxes(-1, -2)


class Cholesky(Function):
    """L lower-triangular with L L^T = A (A symmetric positive-definite, batched)."""

    def forward(self, a):
        xp = get_array_module(a)
        try:
            L = xp.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            L = None
        # CuPy does not raise by default: a failed factorisation is NaN there
        if L is None or (xp is not np and bool(xp.isnan(L).any())):
            raise ValueError("cholesky: the input is not positive-definite")
        self.save_for_backward(L)
        return L

    def backward(self, g):
        # A-bar = L^-T Phi(L^T L-bar) L^-1, symmetrised (the gradient of a symmetric input),
        # Phi taking the lower triangle with its diagonal halved
        (L,) = self.saved
        xp = get_array_module(L)
        phi = xp.tril(_mT(L) @ xp.tril(g))
        phi = phi - 0.5 * xp.tril(xp.triu(phi))
        y = xp.linalg.solve(_mT(L), phi)            # L^-T Phi
        s = _mT(xp.linalg.solve(_mT(L), _mT(y)))    # L^-T Phi L^-1
        return 0.5 * (s + _mT(s))

    def graph_backward(self, g, out):
        # backward's formula as recorded ops; L^-1 by a lower solve against the identity
        eye = get_array_module(g.data).eye(out.shape[-1], dtype=g.data.dtype)
        x = swap_last_dims(out) @ g
        phi = x.tril() - x * constant(eye * 0.5)
        inv = SolveLower.apply(out, constant(eye))
        s = swap_last_dims(inv) @ phi @ inv
        return (s + swap_last_dims(s)) * 0.5


class SolveLower(Function):
    """X = L^-1 B for lower-triangular L (..., n, n) and B (..., n, k), batch dims broadcast."""

    def forward(self, L, b):
        xp = get_array_module(L, b)
        L = xp.tril(L)  # only the lower triangle is read, as a triangular solve
        x = xp.linalg.solve(L, b)
        self.save_for_backward(L, x)
        self.shapes = (L.shape, b.shape)
        return x

    def backward(self, g):
        L, x = self.saved
        xp = get_array_module(L)
        gb = xp.linalg.solve(_mT(L), g)
        gL = -xp.tril(gb @ _mT(x))
        return unbroadcast(gL, self.shapes[0]), unbroadcast(gb, self.shapes[1])

    def graph_backward(self, g, out):
        gb = _solve_upper(swap_last_dims(self.inputs[0].tril()), g)
        return -(gb @ swap_last_dims(out)).tril(), gb  # the engine sums broadcast dims back


def _solve_upper(U, b):
    """U^-1 b for upper-triangular U, as recorded ops: reversing the rows and columns of U
    makes it lower-triangular (J U J, J the reversal), so U^-1 b = J (J U J)^-1 J b."""
    lower = Flip.apply(U, axes=(-2, -1))
    return Flip.apply(SolveLower.apply(lower, Flip.apply(b, axes=(-2,))), axes=(-2,))


def cholesky(a):
    return Cholesky.apply(a)


def solve_lower(L, b):
    return SolveLower.apply(L, b)
