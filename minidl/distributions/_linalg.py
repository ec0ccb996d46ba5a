"""The two linear-algebra ops MultivariateNormal needs, as private Functions with batched
(broadcasting) forward and backward: the Cholesky factor and the lower-triangular solve."""
from __future__ import annotations

import numpy as np

from ..autograd import Function, unbroadcast
from ..backend import get_array_module
from ..linalg import Solve, cholesky_gradient
from ..ops import swap_last_dims


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
        return cholesky_gradient(out, g)


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
        gb = Solve.apply(swap_last_dims(self.inputs[0].tril()), g)
        return -(gb @ swap_last_dims(out)).tril(), gb  # the engine sums broadcast dims back


def cholesky(a):
    return Cholesky.apply(a)


def solve_lower(L, b):
    return SolveLower.apply(L, b)
