"""``minidl.linalg``: torch.linalg's norms (vector_norm, matrix_norm, norm), cross, and the
decompositions, inverses and solvers (inv, det, slogdet, solve, cholesky, qr, svd, svdvals,
eigh, eigvalsh, pinv, lstsq, matrix_rank, matrix_power, multi_dot, cond) on batches of matrices
(..., m, n) through the array module's linalg (numpy.linalg or cupy.linalg); and what that
linalg lacks, written here on the array module: solve_triangular, LU with LAPACK's pivots
(lu_factor, lu, lu_solve, lu_unpack), cholesky_solve / cholesky_inverse, the *_ex forms with
info tensors, LDL^T (ldl_factor, ldl_solve), Householder products (householder_product, geqrf,
orgqr, ormqr), matrix_exp, vecdot, vander, tensorinv and tensorsolve; eig and eigvals
(complex results).

Imports only ``backend``, ``autograd``, ``ops``, ``math_ops`` and ``products``."""
from __future__ import annotations

import functools
from collections import namedtuple

import numpy as np

from . import autograd
from .autograd import Function, first_order_only
from .backend import get_array_module
from .backend.dtypes import complex_of, is_differentiable, is_floating
from .math_ops import amin, vector_norm
from .ops import (
    BadArgumentError, Conj, Reshape, Where, cat, constant, keep_where, stack, swap_last_dims, where,
    wrap_dim,
)
from .products import cross as _cross

_INF = float("inf")


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """The ``ord`` norm of the matrices in ``dim``: 'fro', or 1 / -1 (the largest / smallest
    column sum of |A|), inf / -inf (row sums), 2 / -2 (the largest / smallest singular value)
    and 'nuc' (their sum)."""
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
    if ord in (2, -2, "nuc"):
        A = A.movedim((d0, d1), (-2, -1))
        s = svdvals(A)
        out = s.sum(-1) if ord == "nuc" else s[..., 0] if ord == 2 else s[..., -1]
        return out.unsqueeze(-1).unsqueeze(-1).movedim((-2, -1), (d0, d1)) if keepdim else out
    raise ValueError(f"matrix_norm: ord must be 'fro', 'nuc', 2, -2, 1, -1, inf or -inf, got "
                     f"{ord!r}")


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


# ---- decompositions, inverses and solvers ---------------------------------------------------
# One Function per op on batches (..., m, n) through the array module's linalg (numpy.linalg,
# cupy.linalg). Ops with several differentiable outputs (qr, svd, eigh) return them raveled and
# joined in one array, split again by _unpack, so that one backward sees every output's
# gradient (zeros for outputs that were not used).

def _float32_under_autocast(name):
    """PyTorch's CPU autocast runs these ops in float32 (``name`` in amp's FLOAT32 table): in
    a region, 16-bit tensor arguments are cast to float32 and the op's own steps (a matmul in
    lstsq) run outside the region. Elsewhere the op runs as it is."""
    def wrap(fn):
        @functools.wraps(fn)
        def op(*args, **kwargs):
            hook = autograd.autocast_hook()
            tensors = [a for a in args if isinstance(a, autograd.Tensor)]
            if hook is None or not tensors or not hook.runs_in_float32(name, tensors[0].device):
                return fn(*args, **kwargs)
            cast = iter(hook.inputs(name, tensors))
            args = [next(cast) if isinstance(a, autograd.Tensor) else a for a in args]
            autograd.set_autocast_hook(None)
            try:
                return fn(*args, **kwargs)
            finally:
                autograd.set_autocast_hook(hook)
        return op
    return wrap


class LinAlgError(RuntimeError):
    """A matrix that the op cannot handle (singular, not positive-definite), as
    torch.linalg.LinAlgError: a RuntimeError that names the batch element."""


def _mT(a):
    return a.swapaxes(-1, -2)


def _xmT(xp, a):
    return xp.swapaxes(a, -1, -2)


def _matrix_input(name, A, square=False, what="A"):
    if not isinstance(A, autograd.Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(A).__name__}")
    if not is_floating(A.data.dtype) or A.data.dtype.itemsize < 4:
        kind = "a 16-bit float" if is_floating(A.data.dtype) else str(A.data.dtype)
        raise TypeError(f"{name}: expected a float32 or float64 tensor as {what}, got {kind}")
    if A.ndim < 2:
        raise ValueError(f"{name}: {what} must have at least 2 dimensions, got shape {A.shape}")
    if square and A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name}: {what} must be batches of square matrices, but they are "
                         f"{A.shape[-2]} by {A.shape[-1]} matrices")


def _fail(name, a, fails, message):
    """Raise LinAlgError for the first matrix of the batch ``a`` where ``fails(xp, matrix)``
    is true (torch's flat batch index, named only for batched input)."""
    xp = get_array_module(a)
    flat = a.reshape((-1,) + a.shape[-2:])
    for k in range(flat.shape[0]):
        detail = fails(xp, flat[k])
        if detail:
            where = f"(Batch element {k}): " if a.ndim > 2 else ""
            raise LinAlgError(f"{name}: {where}{message(detail)}")
    raise LinAlgError(f"{name}: the computation failed")


def _singular_pivot(xp, m):
    """1 + the index of the first zero pivot of m's LU factorisation (0: none), as LAPACK's
    getrf reports it (the LU with pivots written below)."""
    return int(_lu_arrays(np, _host(m))[2])


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _checked(name, xp, compute, a, fails, message):
    """``compute()``; a LinAlgError (NumPy) or non-finite output from finite input (CuPy does
    not raise) becomes the torch-style error naming the batch element."""
    try:
        with np.errstate(all="ignore"):
            out = compute()
    except np.linalg.LinAlgError:
        _fail(name, a, fails, message)
    first = out[0] if isinstance(out, tuple) else out
    if xp is not np and not bool(xp.isfinite(first).all()) and bool(xp.isfinite(a).all()):
        _fail(name, a, fails, message)
    return out


def _singular_message(detail):
    return (f"The diagonal element {detail} is zero, the inversion could not be completed "
            "because the input matrix is singular.")


class Inv(Function):
    def forward(self, a, inverse=None):
        xp = get_array_module(a)
        if inverse is not None:  # computed by the caller (inv_ex)
            y = inverse
        else:
            y = _checked("linalg.inv", xp, lambda: xp.linalg.inv(a), a, _singular_pivot,
                         _singular_message)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        yt = _xmT(get_array_module(g), y)
        return -(yt @ g @ yt)

    def graph_backward(self, g, out):
        yt = swap_last_dims(out)
        return -(yt @ g @ yt)


@_float32_under_autocast("linalg_inv")
def inv(A):
    """The inverse of each square matrix of A (..., n, n); a singular one raises LinAlgError
    naming its batch element."""
    _matrix_input("linalg.inv", A, square=True)
    return Inv.apply(A)


def _excluded_products(xp, s):
    """prod_{j != i} s_j for each i, with prefix and suffix products (exact with zeros)."""
    ones = xp.ones(s.shape[:-1] + (1,), s.dtype)
    pre = xp.cumprod(xp.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    suf = xp.flip(xp.cumprod(xp.flip(xp.concatenate([s[..., 1:], ones], axis=-1), axis=-1),
                             axis=-1), axis=-1)
    return pre * suf


class Det(Function):
    """The gradient through the SVD A = U S V^T: sign(det U det V) U diag(prod_{j!=i} s_j) V^T,
    which is the cofactor matrix, exact for singular matrices too."""

    def forward(self, a):
        xp = get_array_module(a)
        self.save_for_backward(a)
        return xp.linalg.det(a).astype(a.dtype, copy=False)

    def backward(self, g):
        (a,) = self.saved
        xp = get_array_module(g)
        if a.shape[-1] == 0:
            return xp.zeros_like(a)
        u, s, vh = xp.linalg.svd(a)
        sign = xp.linalg.det(u) * xp.linalg.det(vh)
        cof = (u * _excluded_products(xp, s)[..., None, :]) @ vh
        return ((g * sign)[..., None, None] * cof).astype(a.dtype, copy=False)

    def graph_backward(self, g, out):
        # det(A) A^{-T}: the cofactor matrix where A is invertible; a singular matrix's
        # second derivative (through the SVD) is not written
        if self.inputs[0].shape[-1] == 0 or not get_array_module(out.data).all(out.data):
            return first_order_only(self, g)
        scale = Reshape.apply(g * out, shape=g.shape + (1, 1))
        return scale * swap_last_dims(Inv.apply(self.inputs[0]))


def det(A):
    """The determinant of each square matrix of A (..., n, n)."""
    _matrix_input("linalg.det", A, square=True)
    return Det.apply(A)


class LogAbsDet(Function):
    def forward(self, a):
        xp = get_array_module(a)
        sign, logabs = xp.linalg.slogdet(a)
        self.save_for_backward(a)
        self.sign = sign
        return logabs.astype(a.dtype, copy=False)

    def backward(self, g):
        (a,) = self.saved
        xp = get_array_module(g)
        with np.errstate(all="ignore"):
            return g[..., None, None] * _xmT(xp, xp.linalg.inv(a))

    def graph_backward(self, g, out):
        (a,) = self.inputs
        if a.shape[-1] == 0:
            return first_order_only(self, g)
        return Reshape.apply(g, shape=g.shape + (1, 1)) * swap_last_dims(Inv.apply(a))


SlogdetResult = namedtuple("SlogdetResult", ["sign", "logabsdet"])  # torch.return_types


def slogdet(A):
    """(sign, log|det|) of each square matrix of A; the gradient flows through logabsdet."""
    _matrix_input("linalg.slogdet", A, square=True)
    xp = get_array_module(A.data)
    logabs = LogAbsDet.apply(A)
    sign = xp.sign(xp.linalg.det(A.data)).astype(A.data.dtype, copy=False)
    return SlogdetResult(autograd.Tensor(sign), logabs)


def logdet(input):
    """log(det A): NaN where det A < 0, -inf where it is 0 (torch.logdet)."""
    _matrix_input("logdet", input, square=True)
    sign, logabs = slogdet(input)
    nan = autograd.Tensor(get_array_module(sign.data).full(sign.shape, np.nan,
                                                           sign.data.dtype))
    return where(sign < 0, nan, logabs)


def _sum_to(xp, g, shape):
    """g summed over the leading batch dims that broadcasting added or stretched."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


class Solve(Function):
    """X = A^{-1} B for batches (broadcast) of matrices B; gB = A^{-T} G, gA = -gB X^T."""

    def forward(self, a, b):
        xp = get_array_module(a)
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        aa = xp.broadcast_to(a, batch + a.shape[-2:])
        bb = xp.broadcast_to(b, batch + b.shape[-2:])
        x = _checked("torch.linalg.solve", xp, lambda: xp.linalg.solve(aa, bb), aa,
                     _singular_pivot,
                     lambda d: "The solver failed because the input matrix is singular.")
        self.save_for_backward(aa, x)
        self.shapes = a.shape, b.shape
        return x

    def backward(self, g):
        aa, x = self.saved
        xp = get_array_module(g)
        gb = xp.linalg.solve(_xmT(xp, aa), g)
        ga = -(gb @ _xmT(xp, x))
        return _sum_to(xp, ga, self.shapes[0]), _sum_to(xp, gb, self.shapes[1])

    def graph_backward(self, g, out):
        gb = Solve.apply(swap_last_dims(self.inputs[0]), g)
        return -(gb @ swap_last_dims(out)), gb  # the engine sums broadcast batch dims back


@_float32_under_autocast("linalg_solve")
def solve(A, B, *, left=True):
    """X with A X = B (``left=False``: X A = B) for square A (..., n, n) and B (..., n, k)
    or a (batch of) vector(s) B (..., n) when B.shape == A.shape[:-1] (or B is 1-d); batch
    dims broadcast."""
    name = "torch.linalg.solve"
    _matrix_input(name, A, square=True)
    if not isinstance(B, autograd.Tensor):
        raise TypeError(f"{name}: B must be a Tensor, got {type(B).__name__}")
    if A.data.dtype != B.data.dtype:
        raise TypeError(f"{name}: A and B must have the same dtype, got {A.data.dtype} and "
                        f"{B.data.dtype}")
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))
    if not left:
        if vector:
            raise ValueError(f"{name}: left=False needs B to be a matrix, got shape {B.shape}")
        return _mT(solve(_mT(A), _mT(B)))
    Bm = B.unsqueeze(-1) if vector else B
    if Bm.ndim < 2 or Bm.shape[-2] != A.shape[-1]:
        raise ValueError(f"{name}: incompatible shapes of A and B for the equation AX = B "
                         f"({A.shape[-2]}x{A.shape[-1]} and {tuple(B.shape)})")
    try:
        np.broadcast_shapes(tuple(A.shape[:-2]), tuple(Bm.shape[:-2]))
    except ValueError:
        raise ValueError(f"{name}: the batch dims of A {tuple(A.shape)} and B {tuple(B.shape)} "
                         "do not broadcast") from None
    X = Solve.apply(A, Bm)
    return X.squeeze(-1) if vector else X


def _phi(xp, x):
    """The lower triangle of x with its diagonal halved."""
    y = xp.tril(x)
    d = xp.arange(x.shape[-1])
    y[..., d, d] *= 0.5
    return y


class Cholesky(Function):
    """L with A = L L^T (A's lower triangle read). gA = sym(L^{-T} phi(L^T gL) L^{-1}), the
    symmetric gradient PyTorch gives."""

    def forward(self, a, factor=None):
        if factor is not None:  # computed by the caller (cholesky_ex)
            self.save_for_backward(factor)
            return factor
        xp = get_array_module(a)

        def not_pd(xp_, m):
            for k in range(1, m.shape[-1] + 1):
                try:
                    np.linalg.cholesky(_host(m[:k, :k]))
                except np.linalg.LinAlgError:
                    return k
            return 0

        msg = ("The factorization could not be completed because the input is not "
               "positive-definite (the leading minor of order {} is not positive-definite).")
        L = _checked("linalg.cholesky", xp, lambda: xp.linalg.cholesky(a), a, not_pd,
                     msg.format)
        self.save_for_backward(L)
        return L

    def backward(self, g):
        (L,) = self.saved
        xp = get_array_module(g)
        P = _phi(xp, _xmT(xp, L) @ g)
        Linv = xp.linalg.inv(L)
        ga = _xmT(xp, Linv) @ P @ Linv
        return 0.5 * (ga + _xmT(xp, ga))

    def graph_backward(self, g, out):
        return cholesky_gradient(out, g)


def cholesky_gradient(L, g):
    """Cholesky's input gradient, sym(L^{-T} phi(L^T gL) L^{-1}), as recorded ops of the factor
    ``L`` and its gradient ``g`` (so that it can be differentiated again)."""
    xp = get_array_module(L.data)
    x = swap_last_dims(L) @ g
    P = x.tril() - x * constant(xp.eye(L.shape[-1], dtype=L.data.dtype) * 0.5)
    Linv = Inv.apply(L)
    ga = swap_last_dims(Linv) @ P @ Linv
    return (ga + swap_last_dims(ga)) * 0.5


@_float32_under_autocast("linalg_cholesky")
def cholesky(A, *, upper=False):
    """The Cholesky factor of each symmetric positive-definite matrix of A: lower L with
    A = L L^T, or upper U = L^T with ``upper=True``."""
    _matrix_input("linalg.cholesky", A, square=True)
    L = Cholesky.apply(A)
    return _mT(L) if upper else L


def _unpack(packed, shapes):
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(packed[start:start + size].reshape(shape))
        start += size
    return out


def _pack(xp, *arrays):
    return xp.concatenate([a.ravel() for a in arrays])


def _split(g, shapes):
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(g[start:start + size].reshape(shape))
        start += size
    return out


def _copyltu(xp, m):
    """The lower triangle of m mirrored onto the upper one (a symmetric matrix)."""
    return xp.tril(m, -1) + _xmT(xp, xp.tril(m))


class QR(Function):
    """A = Q R. Gradient (m >= n, reduced, or square complete): gA = [gQ + Q copyltu(M)] R^{-T},
    M = R gR^T - gQ^T Q. For m < n, A = [X | Y] with X = Q U square: the square rule on X with
    gQ + Y gV^T, and gY = Q gV."""

    def forward(self, a, mode):
        xp = get_array_module(a)
        q, r = xp.linalg.qr(a, mode="complete" if mode == "complete" else "reduced")
        self.mode = mode
        self.save_for_backward(a, q, r)
        self.shapes = q.shape, r.shape
        return _pack(xp, q, r)

    def backward(self, g):
        a, q, r = self.saved
        xp = get_array_module(g)
        m, n = a.shape[-2:]
        if self.mode == "complete" and m > n:
            raise RuntimeError("The QR decomposition is not differentiable when "
                               "mode='complete' and nrows > ncols.")
        gq, gr = _split(g, self.shapes)
        if m >= n:
            return self._square_or_tall(xp, q, r, gq, gr)
        y = a[..., :, m:]
        gu, gv = gr[..., :, :m], gr[..., :, m:]
        gx = self._square_or_tall(xp, q, r[..., :, :m], gq + y @ _xmT(xp, gv), gu)
        return xp.concatenate([gx, q @ gv], axis=-1)

    def graph_backward(self, g, out):
        a = self.inputs[0]
        m, n = a.shape[-2:]
        if self.mode == "complete" and m > n:
            return first_order_only(self, g)  # raises, as backward does
        (q, r), (gq, gr) = _unpack(out, self.shapes), _unpack(g, self.shapes)
        if m >= n:
            return self._square_or_tall_graph(q, r, gq, gr)
        gu, gv = gr[..., :, :m], gr[..., :, m:]
        gx = self._square_or_tall_graph(q, r[..., :, :m], gq + a[..., :, m:] @ swap_last_dims(gv),
                                        gu)
        return cat([gx, q @ gv], dim=-1)

    @staticmethod
    def _square_or_tall_graph(q, r, gq, gr):
        M = r @ swap_last_dims(gr) - swap_last_dims(gq) @ q
        b = gq + q @ (M.tril(-1) + swap_last_dims(M.tril()))
        return swap_last_dims(Solve.apply(r, swap_last_dims(b)))  # b R^{-T}

    @staticmethod
    def _square_or_tall(xp, q, r, gq, gr):
        M = r @ _xmT(xp, gr) - _xmT(xp, gq) @ q
        b = gq + q @ _copyltu(xp, M)
        # b R^{-T}: solve R X^T = b^T
        return _xmT(xp, xp.linalg.solve(r, _xmT(xp, b)))


QRResult = namedtuple("QRResult", ["Q", "R"])


@_float32_under_autocast("linalg_qr")
def qr(A, mode="reduced"):
    """(Q, R) of A (..., m, n): mode 'reduced' (Q m x k, R k x n, k = min(m, n)), 'complete'
    (Q m x m, R m x n) or 'r' (Q empty, R only)."""
    _matrix_input("linalg.qr", A)
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(f"linalg.qr: mode must be 'reduced', 'complete' or 'r', got {mode!r}")
    m, n = A.shape[-2:]
    k = m if mode == "complete" else min(m, n)
    batch = tuple(A.shape[:-2])
    q, r = _unpack(QR.apply(A, mode=mode), [batch + (m, k), batch + (k, n)])
    if mode == "r":
        xp = get_array_module(A.data)
        q = autograd.Tensor(xp.zeros((0,), A.data.dtype))
    return QRResult(q, r)


class SVD(Function):
    """A = U diag(S) Vh, distinct singular values. With k = min(m, n):
    gA = U [(skew(U^T gU) / E) S + S (skew(V^T gV) / E) + diag(gS)] V^T
         + (I - U U^T) gU S^{-1} V^T + U S^{-1} gV^T (I - V V^T),  E_ij = s_j^2 - s_i^2;
    with full_matrices=True only the first k columns of U and rows of Vh take gradients."""

    def forward(self, a, full_matrices, compute_uv=True):
        xp = get_array_module(a)
        if not compute_uv:
            s = xp.linalg.svd(a, compute_uv=False)
            self.save_for_backward(a)
            self.shapes = None
            return s
        u, s, vh = xp.linalg.svd(a, full_matrices=full_matrices)
        self.save_for_backward(u, s, vh)
        self.shapes = u.shape, s.shape, vh.shape
        return _pack(xp, u, s, vh)

    def backward(self, g):
        xp = get_array_module(g)
        if self.shapes is None:
            (a,) = self.saved
            u, _, vh = xp.linalg.svd(a, full_matrices=False)
            return (u * g[..., None, :]) @ vh
        u, s, vh = self.saved
        gu, gs, gvh = _split(g, self.shapes)
        k = s.shape[-1]
        u, gu, vh, gvh = u[..., :, :k], gu[..., :, :k], vh[..., :k, :], gvh[..., :k, :]
        v, gv = _xmT(xp, vh), _xmT(xp, gvh)
        m, n = u.shape[-2], v.shape[-2]
        uhgu, vhgv = _xmT(xp, u) @ gu, vh @ gv
        s2 = s * s
        E = s2[..., None, :] - s2[..., :, None]
        eye = xp.eye(k, dtype=bool)
        E = xp.where(eye, 1, E)
        with np.errstate(all="ignore"):
            inner = ((uhgu - _xmT(xp, uhgu)) / E) * s[..., None, :] \
                + s[..., :, None] * ((vhgv - _xmT(xp, vhgv)) / E)
        inner = xp.where(eye, 0, inner)
        inner = inner + gs[..., None, :] * eye
        ga = u @ inner @ vh
        with np.errstate(all="ignore"):
            if m > k:
                gus = gu / s[..., None, :]
                ga = ga + (gus - u @ (_xmT(xp, u) @ gus)) @ vh
            if n > k:
                gvs = gv / s[..., None, :]
                ga = ga + u @ _xmT(xp, gvs - v @ (vh @ gvs))
        return ga

    def graph_backward(self, g, out):
        a = self.inputs[0]
        xp = get_array_module(g.data)
        if self.shapes is None:  # U and V as functions of A: the decomposition again
            m, n = a.shape[-2:]
            k, batch = min(m, n), tuple(a.shape[:-2])
            u, _, vh = _unpack(SVD.apply(a, full_matrices=False),
                               [batch + (m, k), batch + (k,), batch + (k, n)])
            return (u * g.unsqueeze(-2)) @ vh
        u, s, vh = _unpack(out, self.shapes)
        gu, gs, gvh = _unpack(g, self.shapes)
        k = s.shape[-1]
        u, gu, vh, gvh = u[..., :, :k], gu[..., :, :k], vh[..., :k, :], gvh[..., :k, :]
        v, gv = swap_last_dims(vh), swap_last_dims(gvh)
        m, n = u.shape[-2], v.shape[-2]
        uhgu, vhgv = swap_last_dims(u) @ gu, vh @ gv
        s2 = s * s
        eye = xp.eye(k, dtype=bool)
        one = constant(xp.ones((), dtype=g.data.dtype))
        E = Where.apply(constant(eye), one, s2.unsqueeze(-2) - s2.unsqueeze(-1))
        inner = ((uhgu - swap_last_dims(uhgu)) / E) * s.unsqueeze(-2) \
            + s.unsqueeze(-1) * ((vhgv - swap_last_dims(vhgv)) / E)
        inner = keep_where(~eye, inner) + gs.unsqueeze(-2) * constant(eye.astype(g.data.dtype))
        ga = u @ inner @ vh
        if m > k:
            gus = gu / s.unsqueeze(-2)
            ga = ga + (gus - u @ (swap_last_dims(u) @ gus)) @ vh
        if n > k:
            gvs = gv / s.unsqueeze(-2)
            ga = ga + u @ swap_last_dims(gvs - v @ (vh @ gvs))
        return ga


SVDResult = namedtuple("SVDResult", ["U", "S", "Vh"])


@_float32_under_autocast("linalg_svd")
def svd(A, full_matrices=True, *, driver=None):
    """(U, S, Vh) of A (..., m, n), S descending; ``full_matrices=False`` gives the reduced
    U (m x k) and Vh (k x n), k = min(m, n). Gradients need distinct singular values."""
    _matrix_input("linalg.svd", A)
    m, n = A.shape[-2:]
    k = min(m, n)
    batch = tuple(A.shape[:-2])
    shapes = ([batch + (m, m), batch + (k,), batch + (n, n)] if full_matrices else
              [batch + (m, k), batch + (k,), batch + (k, n)])
    return SVDResult(*_unpack(SVD.apply(A, full_matrices=full_matrices), shapes))


@_float32_under_autocast("linalg_svdvals")
def svdvals(A, *, driver=None):
    """The singular values of A (..., m, n), descending."""
    _matrix_input("linalg.svdvals", A)
    return SVD.apply(A, full_matrices=False, compute_uv=False)


class Eigh(Function):
    """A = V diag(L) V^T from A's UPLO triangle, L ascending; distinct eigenvalues:
    gA = V (diag(gL) + (V^T gV) / E) V^T, E_ij = L_j - L_i."""

    def forward(self, a, UPLO, vectors=True):
        xp = get_array_module(a)
        w, v = xp.linalg.eigh(a, UPLO=UPLO)
        self.save_for_backward(w, v)
        self.vectors, self.uplo = vectors, UPLO
        return _pack(xp, w, v) if vectors else w

    def backward(self, g):
        w, v = self.saved
        xp = get_array_module(g)
        if not self.vectors:
            return (v * g[..., None, :]) @ _xmT(xp, v)
        gw, gv = _split(g, (w.shape, v.shape))
        n = w.shape[-1]
        eye = xp.eye(n, dtype=bool)
        E = xp.where(eye, 1, w[..., None, :] - w[..., :, None])
        with np.errstate(all="ignore"):
            inner = xp.where(eye, 0, (_xmT(xp, v) @ gv) / E)
        inner = inner + gw[..., None, :] * eye
        return v @ inner @ _xmT(xp, v)

    def graph_backward(self, g, out):
        w0, v0 = self.saved
        shapes = (w0.shape, v0.shape)
        if not self.vectors:  # the eigenvectors, as functions of A: the decomposition again
            v = _unpack(Eigh.apply(self.inputs[0], UPLO=self.uplo), shapes)[1]
            return (v * g.unsqueeze(-2)) @ swap_last_dims(v)
        (w, v), (gw, gv) = _unpack(out, shapes), _unpack(g, shapes)
        eye = get_array_module(g.data).eye(w.shape[-1], dtype=bool)
        one = constant(get_array_module(g.data).ones((), dtype=g.data.dtype))
        E = Where.apply(constant(eye), one, w.unsqueeze(-2) - w.unsqueeze(-1))
        inner = keep_where(~eye, (swap_last_dims(v) @ gv) / E) \
            + gw.unsqueeze(-2) * constant(eye.astype(g.data.dtype))
        return v @ inner @ swap_last_dims(v)


EighResult = namedtuple("EighResult", ["eigenvalues", "eigenvectors"])


def _uplo(name, UPLO):
    if UPLO not in ("L", "U"):
        raise ValueError(f"{name}: UPLO must be 'L' or 'U', got {UPLO!r}")


@_float32_under_autocast("linalg_eigh")
def eigh(A, UPLO="L"):
    """(eigenvalues ascending, eigenvectors as columns) of the symmetric matrices of A, read
    from their lower (``UPLO='L'``) or upper triangle."""
    _matrix_input("linalg.eigh", A, square=True)
    _uplo("linalg.eigh", UPLO)
    batch, n = tuple(A.shape[:-2]), A.shape[-1]
    return EighResult(*_unpack(Eigh.apply(A, UPLO=UPLO), [batch + (n,), batch + (n, n)]))


@_float32_under_autocast("linalg_eigvalsh")
def eigvalsh(A, UPLO="L"):
    """The eigenvalues (ascending) of the symmetric matrices of A."""
    _matrix_input("linalg.eigvalsh", A, square=True)
    _uplo("linalg.eigvalsh", UPLO)
    return Eigh.apply(A, UPLO=UPLO, vectors=False)


def _tolerance(name, s, atol, rtol, m, n):
    """max(atol, rtol * s_max) per matrix (an array of the batch shape, keepdim)."""
    xp = get_array_module(s)
    eps = float(np.finfo(s.dtype).eps)
    if rtol is None:
        rtol = eps * max(m, n) if atol is None or (not isinstance(atol, autograd.Tensor)
                                                   and atol <= 0) else 0.0
    atol = 0.0 if atol is None else atol
    atol = atol.data if isinstance(atol, autograd.Tensor) else atol
    rtol = rtol.data if isinstance(rtol, autograd.Tensor) else rtol
    smax = s[..., :1] if s.shape[-1] else xp.zeros(s.shape[:-1] + (1,), s.dtype)
    return xp.maximum(xp.asarray(atol, dtype=s.dtype)[..., None] if xp.ndim(atol) else atol,
                      (xp.asarray(rtol, dtype=s.dtype)[..., None] if xp.ndim(rtol) else rtol)
                      * smax)


class Pinv(Function):
    """The pseudo-inverse P from the SVD (singular values at or below the tolerance dropped).
    Gradient at constant rank: -P^T G P^T + (I - A P) G^T P P^T + P^T P G^T (I - P A)."""

    def forward(self, a, atol, rtol):
        xp = get_array_module(a)
        u, s, vh = xp.linalg.svd(a, full_matrices=False)
        keep = s > _tolerance("linalg.pinv", s, atol, rtol, *a.shape[-2:])
        with np.errstate(all="ignore"):
            sinv = xp.where(keep, 1 / xp.where(keep, s, 1), 0)
        p = (_xmT(xp, vh) * sinv[..., None, :]) @ _xmT(xp, u)
        self.save_for_backward(a, p)
        return p.astype(a.dtype, copy=False)

    def backward(self, g):
        a, p = self.saved
        xp = get_array_module(g)
        pt, gt = _xmT(xp, p), _xmT(xp, g)
        ap, pa = a @ p, p @ a
        return (-(pt @ g @ pt) + (gt @ p @ pt - ap @ gt @ p @ pt)
                + (pt @ p @ gt - pt @ p @ gt @ pa))

    def graph_backward(self, g, out):
        # backward's formula with P the output (differentiable at constant rank)
        a, p = self.inputs[0], out
        pt, gt = swap_last_dims(p), swap_last_dims(g)
        ap, pa = a @ p, p @ a
        return (-(pt @ g @ pt) + (gt @ p @ pt - ap @ gt @ p @ pt)
                + (pt @ p @ gt - pt @ p @ gt @ pa))


def pinv(A, *, atol=None, rtol=None, hermitian=False):
    """The Moore-Penrose pseudo-inverse of A (..., m, n); singular values at or below
    max(atol, rtol * s_max) count as zero (default rtol: eps * max(m, n)). ``hermitian``
    reads A's lower triangle as a symmetric matrix."""
    hook = autograd.autocast_hook()
    low = None if hook is None or not isinstance(A, autograd.Tensor) else \
        hook.low_output_dtype("linalg_pinv", A.device)
    if low is not None:  # computed in float32 outside the region, the result rounded to low
        if is_floating(A.data.dtype) and A.data.dtype.itemsize == 2:
            A = A.float()  # (PyTorch refuses 16-bit input here)
        autograd.set_autocast_hook(None)
        try:
            P = pinv(A, atol=atol, rtol=rtol, hermitian=hermitian)
        finally:
            autograd.set_autocast_hook(hook)
        return P if P.data.dtype == np.float64 else P.to(low)
    _matrix_input("linalg.pinv", A)
    if hermitian:
        _matrix_input("linalg.pinv", A, square=True)
        A = A.tril() + _mT(A.tril(-1))
    return Pinv.apply(A, atol=atol, rtol=rtol)


@_float32_under_autocast("pinverse")
def pinverse(input, rcond=1e-15):
    """torch.pinverse: the pseudo-inverse with singular values <= rcond * s_max dropped."""
    return pinv(input, rtol=rcond)


@_float32_under_autocast("linalg_matrix_rank")
def matrix_rank(A, *, atol=None, rtol=None, hermitian=False):
    """The number of singular values above max(atol, rtol * s_max) (int64)."""
    _matrix_input("linalg.matrix_rank", A)
    xp = get_array_module(A.data)
    a = A.data
    if hermitian:
        s = xp.abs(xp.linalg.eigvalsh(a, UPLO="L"))
        s = xp.flip(xp.sort(s, axis=-1), axis=-1)
    else:
        s = xp.linalg.svd(a, compute_uv=False)
    tol = _tolerance("linalg.matrix_rank", s, atol, rtol, *a.shape[-2:])
    return autograd.Tensor((s > tol).sum(axis=-1).astype(np.int64))


LstsqResult = namedtuple("LstsqResult", ["solution", "residuals", "rank", "singular_values"])


@_float32_under_autocast("linalg_lstsq")
def lstsq(A, B, rcond=None, *, driver=None):
    """The least-squares solution X of A X = B (A (..., m, n), B (..., m, k) or (m,)) through
    the pseudo-inverse (differentiable); rank as the default driver 'gelsy' gives it;
    residuals (m > n, full rank) and singular values for 'gelsd' and 'gelss', as torch's CPU
    drivers."""
    name = "torch.linalg.lstsq"
    _matrix_input(name, A)
    if not isinstance(B, autograd.Tensor):
        raise TypeError(f"{name}: B must be a Tensor, got {type(B).__name__}")
    if driver not in (None, "gels", "gelsy", "gelsd", "gelss"):
        raise ValueError(f"{name}: driver must be one of 'gels', 'gelsy', 'gelsd', 'gelss', "
                         f"got {driver!r}")
    vector = B.ndim == A.ndim - 1
    Bm = B.unsqueeze(-1) if vector else B
    if Bm.shape[-2] != A.shape[-2]:
        raise ValueError(f"{name}: A {tuple(A.shape)} and B {tuple(B.shape)} must have the "
                         "same number of rows")
    m, n = A.shape[-2:]
    X = pinv(A, rtol=rcond) @ Bm
    xp = get_array_module(A.data)
    empty = autograd.Tensor(xp.zeros((0,), A.data.dtype))
    rank = matrix_rank(A, rtol=rcond) if driver != "gels" else \
        autograd.Tensor(xp.zeros((0,), np.int64))
    svals = svdvals(A).detach() if driver in ("gelsd", "gelss") else empty
    residuals = empty
    if m > n and driver not in (None, "gelsy") and bool((rank.data == n).all()):
        residuals = ((A @ X - Bm) ** 2).sum(dim=-2)
    return LstsqResult(X.squeeze(-1) if vector else X, residuals, rank, svals)


def matrix_power(A, n):
    """A^n for square matrices by repeated squaring; n = 0 gives the identity, n < 0 the
    power of the inverse."""
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"linalg.matrix_power: A must be batches of square matrices, got shape "
                         f"{tuple(A.shape)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"linalg.matrix_power: n must be an int, got {type(n).__name__}")
    xp = get_array_module(A.data)
    if n == 0:  # the identity, still in the graph (a zero gradient), as PyTorch's
        return A * 0 + autograd.Tensor(xp.eye(A.shape[-1], dtype=A.data.dtype))
    if n < 0:
        A, n = inv(A), -n
    result, base = None, A
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return result


def multi_dot(tensors):
    """The product of a chain of matrices, the first may be a 1-d row vector and the last a
    1-d column vector (multiplied left to right)."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise ValueError(f"multi_dot: expected at least 2 tensors, got {len(tensors)}")
    for i, t in enumerate(tensors):
        wanted = (1, 2) if i in (0, len(tensors) - 1) else (2,)
        if t.ndim not in wanted:
            raise ValueError(f"multi_dot: tensor {i} must be "
                             f"{' or '.join(f'{w}-d' for w in wanted)}, got shape "
                             f"{tuple(t.shape)}")
    first_vec, last_vec = tensors[0].ndim == 1, tensors[-1].ndim == 1
    if first_vec:
        tensors[0] = tensors[0].unsqueeze(0)
    if last_vec:
        tensors[-1] = tensors[-1].unsqueeze(-1)
    out = tensors[0]
    for i, t in enumerate(tensors[1:], 1):
        if out.shape[-1] != t.shape[0]:
            raise ValueError(f"multi_dot: tensor {i - 1} ... and tensor {i} cannot be "
                             f"multiplied: {out.shape[-1]} columns and shape {tuple(t.shape)}")
        out = out @ t
    if first_vec:
        out = out.squeeze(0)
    if last_vec:
        out = out.squeeze(-1)
    return out


def chain_matmul(*matrices):
    """torch.chain_matmul: the product of 2-d matrices."""
    return multi_dot(matrices) if len(matrices) > 1 else matrices[0]


@_float32_under_autocast("linalg_cond")
def cond(A, p=None):
    """The condition number of A in the ``p`` norm (None: the 2-norm, s_max / s_min)."""
    _matrix_input("linalg.cond", A)
    if p is None or p in (2, -2):
        s = svdvals(A)
        ratio = s[..., 0] / s[..., -1]
        return ratio if p != -2 else 1 / ratio
    _matrix_input("linalg.cond", A, square=True)
    return matrix_norm(A, p) * matrix_norm(inv(A), p)


def inverse(input):
    """torch.inverse: linalg.inv."""
    return inv(input)


def _svd_compat(input, some=True, compute_uv=True):
    """torch.svd: (U, S, V) with V = Vh^T; ``some`` the reduced form."""
    U, S, Vh = svd(input, full_matrices=not some)
    if not compute_uv:
        xp = get_array_module(input.data)
        return (autograd.Tensor(xp.zeros(U.shape, U.data.dtype)), S,
                autograd.Tensor(xp.zeros(Vh.shape[:-2] + Vh.shape[-1:] + Vh.shape[-2:-1],
                                         Vh.data.dtype)))
    return SVDCompat(U, S, _mT(Vh))


SVDCompat = namedtuple("SVDCompat", ["U", "S", "V"])


def _qr_compat(input, some=True):
    """torch.qr: linalg.qr with mode 'reduced' (``some``) or 'complete'."""
    return qr(input, "reduced" if some else "complete")


def _cholesky_compat(input, upper=False):
    """torch.cholesky (deprecated in torch): linalg.cholesky."""
    return cholesky(input, upper=upper)


__all__ += ["inv", "det", "slogdet", "solve", "cholesky", "qr", "svd", "svdvals", "eigh",
            "eigvalsh", "pinv", "lstsq", "matrix_rank", "matrix_power", "multi_dot", "cond",
            "LinAlgError"]

# torch's top-level names and Tensor methods for them (minidl/__init__.py, tensor.py)
TENSOR_METHODS = {
    "det": det, "logdet": logdet, "slogdet": slogdet, "inverse": inverse,
    "cholesky": _cholesky_compat, "qr": _qr_compat, "svd": _svd_compat, "pinverse": pinverse,
    "matrix_power": matrix_power,
}
# A.mT / A.mH: the last two dims swapped; mH (and H, of a matrix) conjugates a complex tensor
_MATRIX_T = property(_mT, doc="The last two dims swapped, as torch.Tensor.mT.")


def _mH(a):  # noqa: N802  (torch's name)
    return Conj.apply(_mT(a)) if a.data.dtype.kind == "c" else _mT(a)


def _H(a):  # noqa: N802  (torch's name)
    if a.ndim not in (0, 2):
        raise _bad(f"tensor.H is only supported on matrices (2-D tensors). Got {a.ndim}-D "
                   "tensor.")
    return _mH(a) if a.ndim == 2 else a


TENSOR_METHODS.update({"mT": _MATRIX_T, "mH": property(
    _mH, doc="The conjugate transpose of the last two dims, as torch.Tensor.mH."),
    "H": property(_H, doc="The conjugate transpose of a matrix, as torch.Tensor.H.")})
FUNCTIONS = {k: v for k, v in TENSOR_METHODS.items() if k not in ("mT", "mH", "H")}
FUNCTIONS["chain_matmul"] = chain_matmul


# ---- triangular solves, LU, solves from factors, the *_ex forms -----------------------------
# NumPy has no triangular solve nor LU with its pivots: both are written here on the array
# module (a loop over the n rows or columns, each step vectorised over the batch), so that they
# run on CuPy too and give LAPACK's answers: trtrs's inf/nan for a zero on the diagonal, and
# getrf's pivots (the first largest |entry| of the column) and info (the first zero pivot).

def _bad(message):
    return BadArgumentError(message)


def _same_float_dtype(name, a, b, what=("A", "B")):
    if not isinstance(b, autograd.Tensor):
        raise TypeError(f"{name}: {what[1]} must be a Tensor, got {type(b).__name__}")
    if a.data.dtype != b.data.dtype:
        raise TypeError(f"{name}: {what[0]} and {what[1]} must have the same dtype, got "
                        f"{a.data.dtype} and {b.data.dtype}")


def _batch_of(name, A, B, what=("A", "B")):
    """The broadcast batch shape of A (..., n, n) and B (..., n, k)."""
    try:
        return np.broadcast_shapes(tuple(A.shape[:-2]), tuple(B.shape[:-2]))
    except ValueError:
        raise _bad(f"{name}: the batch dims of {what[0]} {tuple(A.shape)} and {what[1]} "
                   f"{tuple(B.shape)} do not broadcast") from None


_BLOCK = 64  # rows (columns) per block of the triangular solve and the LU


def _tri_solve(xp, a, b, upper, unit=False):
    """X with T X = B, T the upper or lower triangle of a (``unit``: ones on its diagonal,
    which is not read); batch dims broadcast. Substitution, as LAPACK's trtrs (a zero on the
    diagonal gives inf/nan, not an error), row by row inside blocks of _BLOCK rows, and one
    matrix product per block for the rows below (above) it."""
    n = a.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    x = xp.array(xp.broadcast_to(b, batch + b.shape[-2:]),
                 dtype=np.result_type(a.dtype, b.dtype))
    d = xp.diagonal(a, axis1=-2, axis2=-1)[..., :, None]
    starts = range(0, n, _BLOCK)
    with np.errstate(all="ignore"):
        for s0 in (reversed(starts) if upper else starts):
            s1 = min(s0 + _BLOCK, n)
            for i in (range(s1 - 1, s0 - 1, -1) if upper else range(s0, s1)):
                rest = slice(i + 1, s1) if upper else slice(s0, i)
                if rest.stop > rest.start:
                    x[..., i, :] -= (a[..., i:i + 1, rest] @ x[..., rest, :])[..., 0, :]
                if not unit:
                    x[..., i, :] /= d[..., i, :]
            later = slice(0, s0) if upper else slice(s1, n)
            if later.stop > later.start:
                x[..., later, :] -= a[..., later, s0:s1] @ x[..., s0:s1, :]
    return x


def _tri_mask(xp, g, upper, unit):
    k = 1 if unit else 0
    return xp.triu(g, k) if upper else xp.tril(g, -k)


class SolveTriangular(Function):
    """X = T^{-1} B, T the triangle of A that ``upper`` names. gB = T^{-T} G, gA = -gB X^T on
    the triangle read (without the diagonal where ``unit``)."""

    def forward(self, a, b, upper, unit):
        xp = get_array_module(a)
        x = _tri_solve(xp, a, b, upper, unit)
        self.save_for_backward(a, x)
        self.upper, self.unit, self.shapes = upper, unit, (a.shape, b.shape)
        return x

    def backward(self, g):
        a, x = self.saved
        xp = get_array_module(g)
        gb = _tri_solve(xp, _xmT(xp, a), g, not self.upper, self.unit)
        ga = _tri_mask(xp, -(gb @ _xmT(xp, x)), self.upper, self.unit)
        return _sum_to(xp, ga, self.shapes[0]), _sum_to(xp, gb, self.shapes[1])

    def graph_backward(self, g, out):
        gb = SolveTriangular.apply(swap_last_dims(self.inputs[0]), g, upper=not self.upper,
                                   unit=self.unit)
        ga = -(gb @ swap_last_dims(out))
        k = 1 if self.unit else 0
        return (ga.triu(k) if self.upper else ga.tril(-k)), gb


def _solve_triangular(name, A, B, upper, unit, equation="AX = B"):
    _matrix_input(name, A, square=True)
    _same_float_dtype(name, A, B)
    if B.ndim < 2:
        raise _bad(f"{name}: The input tensor B must have at least 2 dimensions.")
    if B.shape[-2] != A.shape[-1]:
        raise _bad(f"{name}: Incompatible shapes of A and B for the equation {equation} "
                   f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-2]}x{B.shape[-1]})")
    _batch_of(name, A, B)
    return SolveTriangular.apply(A, B, upper=bool(upper), unit=bool(unit))


def solve_triangular(A, B, *, upper, left=True, unitriangular=False):
    """X with A X = B (``left=False``: X A = B) for triangular A (..., n, n), read from its
    upper or lower triangle (``unitriangular``: its diagonal taken as ones); batch dims
    broadcast. A zero on the diagonal gives inf/nan, as torch's."""
    name = "linalg.solve_triangular"
    if left:
        return _solve_triangular(name, A, B, upper, unitriangular)
    _matrix_input(name, A, square=True)
    if isinstance(B, autograd.Tensor) and B.ndim >= 2 and B.shape[-1] != A.shape[-1]:
        raise _bad(f"{name}: Incompatible shapes of A and B for the equation XA = B "
                   f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-2]}x{B.shape[-1]})")
    if isinstance(B, autograd.Tensor) and B.ndim >= 2:
        B = _mT(B)
    return _mT(_solve_triangular(name, _mT(A), B, not upper, unitriangular))


TriangularSolveResult = namedtuple("TriangularSolveResult", ["solution", "cloned_coefficient"])


@_float32_under_autocast("triangular_solve")
def triangular_solve(input, A, upper=True, transpose=False, unitriangular=False):
    """torch.triangular_solve (deprecated there): X with A X = input (A^T X = input where
    ``transpose``), and a copy of A (broadcast to X's batch dims)."""
    name = "triangular_solve"
    _matrix_input(name, A, square=True)
    T = _mT(A) if transpose else A
    X = _solve_triangular(name, T, input, upper != bool(transpose), unitriangular)
    return TriangularSolveResult(X, A.expand(*X.shape[:-2], *A.shape[-2:]).clone())


# -- LU --
def _count(batch):
    return int(np.prod(batch, dtype=np.int64))


def _lu_arrays(xp, a, pivot=True):
    """(LU, pivots, info) of the batch ``a`` (..., m, n) as LAPACK's getrf: LU holds L's
    strict lower triangle (unit diagonal) and U; pivots 1-based int32 (row i was swapped with
    row pivots[i]); info the first zero pivot (1-based), 0 where none. Right-looking, one
    column at a time, vectorised over the batch."""
    m, n = a.shape[-2:]
    k = min(m, n)
    batch = a.shape[:-2]
    flat = a.reshape((_count(batch), m, n)).copy()
    count = flat.shape[0]
    rows = xp.arange(count)
    piv = xp.zeros((count, k), dtype=np.int32)
    info = xp.zeros((count,), dtype=np.int32)
    with np.errstate(all="ignore"):
        for j0 in range(0, k, _BLOCK):  # blocked as getrf: a panel, then one product
            j1 = min(j0 + _BLOCK, k)
            for j in range(j0, j1):
                if pivot:  # whole rows are exchanged: L's columns and the deferred ones too
                    p = j + xp.argmax(xp.abs(flat[:, j:, j]), axis=1)
                    pivot_rows, top = flat[rows, p], flat[:, j].copy()
                    flat[:, j], flat[rows, p] = pivot_rows, top
                    piv[:, j] = p + 1
                else:
                    piv[:, j] = j + 1
                d = flat[:, j, j]
                zero = d == 0
                info = xp.where((info == 0) & zero, j + 1, info).astype(np.int32)
                # a zero pivot leaves its column as it is (all zeros below it when pivoting)
                flat[:, j + 1:, j] /= xp.where(zero, 1, d)[:, None] if pivot else d[:, None]
                flat[:, j + 1:, j + 1:j1] -= flat[:, j + 1:, j:j + 1] * flat[:, j:j + 1, j + 1:j1]
            if j1 < n:  # U12 = L11^{-1} A12, then the trailing Schur complement
                flat[:, j0:j1, j1:] = _tri_solve(xp, flat[:, j0:j1, j0:j1], flat[:, j0:j1, j1:],
                                                 False, True)
                flat[:, j1:, j1:] -= flat[:, j1:, j0:j1] @ flat[:, j0:j1, j1:]
    return (flat.reshape(batch + (m, n)), piv.reshape(batch + (k,)),
            info.reshape(batch))


def _permutation(xp, piv, m, dtype):
    """The permutation matrices P (..., m, m) with A = P L U from getrf's 1-based pivots."""
    batch, k = piv.shape[:-1], piv.shape[-1]
    flat = piv.reshape((_count(batch), k)).astype(np.int64) - 1
    count = flat.shape[0]
    rows = xp.arange(count)
    perm = xp.broadcast_to(xp.arange(m), (count, m)).copy()
    for i in range(k):
        j = flat[:, i]
        at_i, at_j = perm[:, i].copy(), perm[rows, j]
        perm[:, i], perm[rows, j] = at_j, at_i
    # row i of P^T A is row perm[i] of A: P[perm[i], i] = 1
    P = xp.zeros((count, m, m), dtype=dtype)
    P[rows[:, None], perm, xp.arange(m)[None, :]] = 1
    return P.reshape(batch + (m, m))


def _unit_lower(LU, k):
    """L (..., m, k) of a packed LU, as recorded ops (its diagonal ones are constants)."""
    xp = get_array_module(LU.data)
    m = LU.shape[-2]
    return LU[..., :, :k].tril(-1) + constant(xp.eye(m, k, dtype=LU.data.dtype))


def _lu_gradient(P, L, U, gL, gU):
    """The gradient of A = P L U from those of L (unit lower, m x k) and U (upper, k x n), as
    recorded ops: with X = tril(L^T gL, -1) + triu(gU U^T), gA = P L^{-T} X U^{-T} for square
    A; a wide A = P L [U1 U2] adds -gU2 U2^T to X's lower part and gA2 = P L^{-T} gU2; a tall
    A = P [L1; L2] U adds -L2^T gL2 to X's upper part and gA2 = P gL2 U^{-T}."""
    m, n = L.shape[-2], U.shape[-1]

    def left_lt(Lsq, Y):  # Lsq^{-T} Y
        return SolveTriangular.apply(swap_last_dims(Lsq), Y, upper=True, unit=True)

    def right_ut(Y, Usq):  # Y Usq^{-T}
        return swap_last_dims(SolveTriangular.apply(Usq, swap_last_dims(Y), upper=True,
                                                    unit=False))
    Lt = swap_last_dims
    if m == n:
        X = (Lt(L) @ gL).tril(-1) + (gU @ Lt(U)).triu()
        gA = right_ut(left_lt(L, X), U)
    elif m < n:
        U1, U2, gU1, gU2 = U[..., :, :m], U[..., :, m:], gU[..., :, :m], gU[..., :, m:]
        X = (Lt(L) @ gL - gU2 @ Lt(U2)).tril(-1) + (gU1 @ Lt(U1)).triu()
        gA = cat([right_ut(left_lt(L, X), U1), left_lt(L, gU2)], dim=-1)
    else:
        L1, L2, gL1, gL2 = L[..., :n, :], L[..., n:, :], gL[..., :n, :], gL[..., n:, :]
        X = (Lt(L1) @ gL1).tril(-1) + (gU @ Lt(U) - Lt(L2) @ gL2).triu()
        gA = cat([right_ut(left_lt(L1, X), U), right_ut(gL2, U)], dim=-2)
    return gA if P is None else P @ gA


class LUFactor(Function):
    """The packed LU of A (computed by the caller, with its pivots): the gradient through
    A = P L U (_lu_gradient), L and U read off the packed output and its gradient."""

    def forward(self, a, lu, piv):
        self.save_for_backward(lu)
        self.piv = piv
        return lu

    def _gradient(self, LU, g):
        m, n = LU.shape[-2:]
        k = min(m, n)
        xp = get_array_module(LU.data)
        P = None if self.piv is None else constant(_permutation(xp, self.piv, m,
                                                                LU.data.dtype))
        L, U = _unit_lower(LU, k), LU[..., :k, :].triu()
        return _lu_gradient(P, L, U, g[..., :, :k].tril(-1), g[..., :k, :].triu())

    def backward(self, g):
        (lu,) = self.saved
        with autograd.no_grad():
            return self._gradient(autograd.Tensor(lu), autograd.Tensor(g)).data

    def graph_backward(self, g, out):
        return self._gradient(out, g)


LUFactorResult = namedtuple("LUFactorResult", ["LU", "pivots"])
LUFactorExResult = namedtuple("LUFactorExResult", ["LU", "pivots", "info"])
LUResult = namedtuple("LUResult", ["P", "L", "U"])


def _info_error(name, info, batched, message):
    """LinAlgError for the first batch element with info > 0 (none: nothing raised)."""
    flat = _host(info).reshape(-1)
    bad = np.flatnonzero(flat)
    if bad.size:
        k = int(bad[0])
        where = f"(Batch element {k}): " if batched else ""
        raise LinAlgError(f"{name}: {where}{message(int(flat[k]))}")


def _lu_singular_message(i):
    return (f"U[{i},{i}] is zero and using it on lu_solve would result in a division by "
            "zero. If you still want to perform the factorization, consider calling "
            "linalg.lu(A, pivot) or linalg.lu_factor_ex(A, pivot)")


def _lu_factor(name, A, pivot):
    _matrix_input(name, A)
    xp = get_array_module(A.data)
    lu, piv, info = _lu_arrays(xp, A.data, pivot)
    LU = LUFactor.apply(A, lu=lu, piv=piv if pivot else None)
    return LU, autograd.Tensor(piv), autograd.Tensor(info)


def lu_factor_ex(A, *, pivot=True, check_errors=False):
    """(LU, pivots, info) of A (..., m, n) as LAPACK's getrf: L's strict lower triangle and U
    packed in LU, 1-based int32 pivots, info > 0 where U has a zero on its diagonal (raised
    as LinAlgError with ``check_errors``). ``pivot=False`` (torch: CUDA only) factors
    without row exchanges."""
    name = "torch.linalg.lu_factor_ex"
    LU, piv, info = _lu_factor(name, A, pivot)
    if check_errors:
        _info_error(name, info.data, A.ndim > 2, _lu_singular_message)
    return LUFactorExResult(LU, piv, info)


def lu_factor(A, *, pivot=True):
    """(LU, pivots) of A, as lu_factor_ex; a zero on U's diagonal raises LinAlgError naming
    the batch element."""
    name = "torch.linalg.lu_factor"
    LU, piv, info = _lu_factor(name, A, pivot)
    _info_error(name, info.data, A.ndim > 2, _lu_singular_message)
    return LUFactorResult(LU, piv)


def _unpack_lu(LU, pivots, unpack_data=True, unpack_pivots=True, name="torch.lu_unpack",
               checked=False):
    """(P, L, U); ``checked``: the pivots are lu_factor's own (no host copy to check them)."""
    xp = get_array_module(LU.data)
    m, n = LU.shape[-2:]
    k = min(m, n)
    empty = autograd.Tensor(xp.zeros((0,), LU.data.dtype))
    P = L = U = empty
    if unpack_pivots and pivots is not None:
        if not isinstance(pivots, autograd.Tensor) or pivots.data.dtype != np.int32:
            got = type(pivots).__name__ if not isinstance(pivots, autograd.Tensor) else \
                str(pivots.data.dtype)
            raise TypeError(f"{name}: LU_pivots is expected to be a tensor of int32 dtype (as "
                            f"linalg.lu_factor gives it), got {got}")
        if tuple(pivots.shape) != tuple(LU.shape[:-2]) + (k,):
            raise _bad(f"{name}: LU_pivots of shape {tuple(pivots.shape)} do not fit LU of "
                       f"shape {tuple(LU.shape)} (expected {tuple(LU.shape[:-2]) + (k,)})")
        if not checked and pivots.numel() and bool(((pivots.data < 1)
                                                    | (pivots.data > m)).any()):
            raise _bad(f"{name}: pivots passed to lu_unpack must be between 1 and "
                       f"LU.size(-2) = {m} inclusive. Did you properly pass the result of "
                       "lu_factor?")
        P = autograd.Tensor(_permutation(xp, pivots.data, m, LU.data.dtype))
    if unpack_data:
        L, U = _unit_lower(LU, k), LU[..., :k, :].triu()
    return LUResult(P, L, U)


def lu_unpack(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True):  # noqa: N803
    """(P, L, U) from lu_factor's packed LU and pivots; L and U take gradients (P is a
    constant). Empty tensors for the parts not unpacked."""
    _matrix_input("torch.lu_unpack", LU_data, what="LU_data")
    return _unpack_lu(LU_data, LU_pivots, unpack_data, unpack_pivots)


def lu(A, *, pivot=True):
    """(P, L, U) with A = P L U for A (..., m, n): L (m x k) unit lower, U (k x n) upper,
    k = min(m, n); singular matrices factor too. ``pivot=False`` gives an empty P."""
    LU, piv, _ = _lu_factor("torch.linalg.lu", A, pivot)
    P, L, U = _unpack_lu(LU, piv if pivot else None, checked=True)
    return LUResult(P, L, U)


def _check_pivots(name, LU, pivots):
    if not isinstance(pivots, autograd.Tensor) or pivots.data.dtype != np.int32:
        got = type(pivots).__name__ if not isinstance(pivots, autograd.Tensor) else \
            str(pivots.data.dtype)
        raise TypeError(f"{name}: pivots must be an int32 tensor (as linalg.lu_factor gives "
                        f"them), got {got}")
    if tuple(pivots.shape) != tuple(LU.shape[:-1]):
        raise _bad(f"{name}: Expected LU.shape[:-1] and pivots.shape to be the same, but got "
                   f"pivots with shape {tuple(pivots.shape)} for LU of shape "
                   f"{tuple(LU.shape)}")
    if pivots.numel() and get_array_module(pivots.data) is np:
        # out-of-range pivots would index past (or wrap around) the rows; checked on the CPU
        # only, as torch's (on a GPU it would cost a sync)
        piv = pivots.data
        m = LU.shape[-2]
        if bool((piv < 1).any()):
            raise _bad(f"{name}: Pivots given to lu_solve must all be greater or equal to 1. "
                       "Did you properly pass the result of lu_factor?")
        if bool((piv > m).any()):
            raise _bad(f"{name}: Pivots given to lu_solve must all be smaller or equal to "
                       f"LU.size(-2) = {m}. Did you properly pass the result of lu_factor?")


def lu_solve(LU, pivots, B, *, left=True, adjoint=False):
    """X with A X = B from A's lu_factor (``adjoint``: A^T X = B; ``left=False``: X A = B),
    batch dims broadcast; differentiable in LU and B, twice."""
    name = "linalg.lu_solve"
    _matrix_input(name, LU, square=True, what="LU")
    _same_float_dtype(name, LU, B, ("LU", "B"))
    _check_pivots(name, LU, pivots)
    if B.ndim < 2:
        raise _bad(f"{name}: The input tensor B must have at least 2 dimensions.")
    n = LU.shape[-1]
    if not left:
        if B.shape[-1] != n:
            raise _bad(f"{name}: Incompatible shapes of A and B for the equation XA = B "
                       f"({n}x{n} and {B.shape[-2]}x{B.shape[-1]})")
        return _mT(lu_solve(LU, pivots, _mT(B), adjoint=not adjoint))
    if B.shape[-2] != n:
        raise _bad(f"{name}: Incompatible shapes of A and B for the equation AX = B "
                   f"({n}x{n} and {B.shape[-2]}x{B.shape[-1]})")
    _batch_of(name, LU, B, ("LU", "B"))
    P = autograd.Tensor(_permutation(get_array_module(LU.data), pivots.data, n, LU.data.dtype))
    if not adjoint:  # X = U^{-1} L^{-1} P^T B
        Y = SolveTriangular.apply(LU, _mT(P) @ B, upper=False, unit=True)
        return SolveTriangular.apply(LU, Y, upper=True, unit=False)
    # A^T = U^T L^T P^T: X = P L^{-T} U^{-T} B
    LUt = _mT(LU)
    Y = SolveTriangular.apply(LUt, B, upper=False, unit=False)
    return P @ SolveTriangular.apply(LUt, Y, upper=True, unit=True)


@_float32_under_autocast("lu_solve")
def _lu_solve_compat(input, LU_data, LU_pivots):  # noqa: N803
    """torch.lu_solve(b, LU_data, LU_pivots) (deprecated there): linalg.lu_solve."""
    return lu_solve(LU_data, LU_pivots, input)


_LUWithInfo = namedtuple("_LUWithInfo", ["LU", "pivots", "info"])


def _lu_compat(A, pivot=True, get_infos=False):
    """torch.lu (deprecated there): (LU, pivots), and info with ``get_infos`` (without it, a
    singular matrix raises)."""
    LU, piv, info = lu_factor_ex(A, pivot=pivot, check_errors=not get_infos)
    return _LUWithInfo(LU, piv, info) if get_infos else (LU, piv)


# -- solves and inverses from a Cholesky factor --
def _cholesky_solve_arrays(xp, b, l, upper):
    """(L L^T)^{-1} B (U^T U for ``upper``) from the triangle of l that ``upper`` names."""
    lt = _xmT(xp, l)
    if upper:
        return _tri_solve(xp, l, _tri_solve(xp, lt, b, False), True)
    return _tri_solve(xp, lt, _tri_solve(xp, l, b, False), True)


class CholeskySolve(Function):
    """X = (L L^T)^{-1} B. PyTorch's gradient: gB = (L L^T)^{-1} G and, with
    C = gB X^T + X gB^T, gL = -C L (lower) or -L C (upper) over the whole of L (its unread
    triangle included, as torch's)."""

    def forward(self, b, l, upper):
        xp = get_array_module(b)
        x = _cholesky_solve_arrays(xp, b, l, upper)
        self.save_for_backward(l, x)
        self.upper, self.shapes = upper, (b.shape, l.shape)
        return x

    def backward(self, g):
        l, x = self.saved
        xp = get_array_module(g)
        gb = _cholesky_solve_arrays(xp, g, l, self.upper)
        c = gb @ _xmT(xp, x)
        c = c + _xmT(xp, c)
        gl = -(l @ c) if self.upper else -(c @ l)
        return _sum_to(xp, gb, self.shapes[0]), _sum_to(xp, gl, self.shapes[1])

    def graph_backward(self, g, out):
        l = self.inputs[1]
        gb = CholeskySolve.apply(g, l, upper=self.upper)
        c = gb @ swap_last_dims(out)
        c = c + swap_last_dims(c)
        return gb, -(l @ c) if self.upper else -(c @ l)


@_float32_under_autocast("cholesky_solve")
def cholesky_solve(input, input2, upper=False):
    """torch.cholesky_solve: X with A X = input, A = L L^T from its Cholesky factor
    ``input2`` (lower, or upper U with A = U^T U); batch dims broadcast."""
    name = "cholesky_solve"
    _matrix_input(name, input2, square=True, what="input2")
    _same_float_dtype(name, input2, input, ("input2", "input"))
    if input.ndim < 2:
        raise _bad(f"{name}: input must have at least 2 dimensions, got shape "
                   f"{tuple(input.shape)}")
    n = input2.shape[-1]
    if input.shape[-2] != n:
        raise _bad(f"{name}: Incompatible matrix sizes for cholesky_solve: each A matrix is "
                   f"{n} by {n} but each b matrix is {input.shape[-2]} by {input.shape[-1]}")
    _batch_of(name, input2, input, ("input2", "input"))
    return CholeskySolve.apply(input, input2, upper=bool(upper))


class CholeskyInverse(Function):
    """(L L^T)^{-1} from L's triangle. PyTorch's gradient over the whole of L: with
    C = Y (G + G^T) Y, gL = -C L (lower) or -L C (upper)."""

    def forward(self, l, upper):
        xp = get_array_module(l)
        eye = xp.eye(l.shape[-1], dtype=l.dtype)
        y = _cholesky_solve_arrays(xp, xp.broadcast_to(eye, l.shape), l, upper)
        y = 0.5 * (y + _xmT(xp, y))  # exactly symmetric, as potri's
        self.save_for_backward(l, y)
        self.upper = upper
        return y

    def backward(self, g):
        l, y = self.saved
        xp = get_array_module(g)
        c = y @ (g + _xmT(xp, g)) @ y
        return -(l @ c) if self.upper else -(c @ l)

    def graph_backward(self, g, out):
        l = self.inputs[0]
        c = out @ (g + swap_last_dims(g)) @ out
        return -(l @ c) if self.upper else -(c @ l)


@_float32_under_autocast("cholesky_inverse")
def cholesky_inverse(input, upper=False):
    """torch.cholesky_inverse: A^{-1} of A = L L^T (U^T U for ``upper``) from its Cholesky
    factor."""
    _matrix_input("cholesky_inverse", input, square=True, what="input")
    return CholeskyInverse.apply(input, upper=bool(upper))


# -- the *_ex forms: an info tensor (int32, the batch shape) instead of an error --
CholeskyExResult = namedtuple("CholeskyExResult", ["L", "info"])
InvExResult = namedtuple("InvExResult", ["inverse", "info"])
SolveExResult = namedtuple("SolveExResult", ["result", "info"])


def _cholesky_arrays(xp, a):
    """(L, info) as LAPACK's potrf on the lower triangle: where the leading minor of order k
    is not positive-definite, info = k, L's first k-1 columns are computed, L[k-1, k-1] holds
    the non-positive value met and the columns after it are a's."""
    n = a.shape[-1]
    batch = a.shape[:-2]
    L = xp.tril(a.reshape((_count(batch), n, n)))
    info = xp.zeros((L.shape[0],), dtype=np.int32)
    with np.errstate(all="ignore"):
        for j in range(n):
            live = info == 0
            row = L[:, j, :j]
            d = L[:, j, j] - (row * row).sum(axis=-1)
            bad = live & ~(d > 0)
            info = xp.where(bad, j + 1, info).astype(np.int32)
            root = xp.sqrt(xp.where(bad, 1, d))
            L[:, j, j] = xp.where(live, xp.where(bad, d, root), L[:, j, j])
            col = (L[:, j + 1:, j] - (L[:, j + 1:, :j] @ row[:, :, None])[..., 0]) \
                / root[:, None]
            keep = (live & ~bad)[:, None]
            L[:, j + 1:, j] = xp.where(keep, col, L[:, j + 1:, j])
    return L.reshape(batch + (n, n)), info.reshape(batch)


def _not_pd_message(k):
    return ("The factorization could not be completed because the input is not "
            f"positive-definite (the leading minor of order {k} is not positive-definite).")


@_float32_under_autocast("linalg_cholesky_ex")
def cholesky_ex(A, *, upper=False, check_errors=False):
    """(L, info) of A as linalg.cholesky, info = the order of the first leading minor that
    is not positive-definite (0: none), raised as LinAlgError with ``check_errors``."""
    name = "linalg.cholesky_ex"
    _matrix_input(name, A, square=True)
    xp = get_array_module(A.data)
    try:
        out = cholesky(A)
        if bool(xp.isnan(xp.diagonal(out.data, axis1=-2, axis2=-1)).any()):
            # a NaN met on the diagonal: potrf stops there and reports it (NumPy does not)
            raise LinAlgError("NaN in the factor")
        info = xp.zeros(A.shape[:-2], dtype=np.int32)
    except LinAlgError:
        L, info = _cholesky_arrays(xp, A.data)
        good = info == 0
        if bool(good.any()):  # LAPACK's factor for the matrices that have one
            L[good] = xp.linalg.cholesky(A.data[good])
        if check_errors:
            _info_error(name, info, A.ndim > 2, _not_pd_message)
        out = Cholesky.apply(A, factor=L)
    return CholeskyExResult(_mT(out) if upper else out, autograd.Tensor(info))


def _lu_inverse_arrays(xp, a):
    """A^{-1} and getrf's info through the LU here (inf/nan for singular matrices)."""
    lu, piv, info = _lu_arrays(xp, a)
    n = a.shape[-1]
    pt = _xmT(xp, _permutation(xp, piv, n, a.dtype))
    return _tri_solve(xp, lu, _tri_solve(xp, lu, pt, False, True), True), lu, piv, info


@_float32_under_autocast("linalg_inv_ex")
def inv_ex(A, *, check_errors=False):
    """(inverse, info) of A as linalg.inv, info > 0 for a singular matrix (getrf's first zero
    pivot; its inverse is then inf/nan), raised as LinAlgError with ``check_errors``."""
    name = "linalg.inv_ex"
    _matrix_input(name, A, square=True)
    xp = get_array_module(A.data)
    try:
        return InvExResult(inv(A), autograd.Tensor(xp.zeros(A.shape[:-2], dtype=np.int32)))
    except LinAlgError:
        y, _, _, info = _lu_inverse_arrays(xp, A.data)
    if check_errors:
        _info_error(name, info, A.ndim > 2, _singular_message)
    return InvExResult(Inv.apply(A, inverse=y), autograd.Tensor(info))


def solve_ex(A, B, *, left=True, check_errors=False):
    """(result, info) of linalg.solve, info > 0 for a singular A (getrf's first zero pivot;
    its solution is then inf/nan), raised as LinAlgError with ``check_errors``."""
    name = "torch.linalg.solve_ex"
    _matrix_input(name, A, square=True)
    xp = get_array_module(A.data)
    try:
        X = solve(A, B, left=left)
        return SolveExResult(X, autograd.Tensor(xp.zeros(A.shape[:-2], dtype=np.int32)))
    except LinAlgError:
        pass
    LU, piv, info = _lu_factor(name, A, True)
    if check_errors:
        _info_error(name, info.data, A.ndim > 2,
                    lambda i: "The solver failed because the input matrix is singular.")
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))
    if vector:
        X = lu_solve(LU, piv, B.unsqueeze(-1)).squeeze(-1)
    else:
        X = lu_solve(LU, piv, B, left=left)
    return SolveExResult(X, info)


# ---- products, Householder products, the matrix exponential and aliases ---------------------
def vecdot(x, y, *, dim=-1):
    """The dot product of x and y along ``dim`` (batch dims broadcast)."""
    name = "linalg.vecdot"
    if not isinstance(x, autograd.Tensor) or not isinstance(y, autograd.Tensor):
        raise TypeError(f"{name}: x and y must be Tensors, got {type(x).__name__} and "
                        f"{type(y).__name__}")
    if not is_differentiable(x.data.dtype):  # floating (bfloat16 too) or complex
        raise TypeError(f"{name}: Expected a floating point or complex tensor as input. Got "
                        f"{x.data.dtype}")
    if x.data.dtype != y.data.dtype:
        raise TypeError(f"{name}: Expected x and y to have the same dtype, but found x of type "
                        f"{x.data.dtype} and y of type {y.data.dtype} instead")
    try:
        shape = np.broadcast_shapes(tuple(x.shape), tuple(y.shape))
    except ValueError:
        raise _bad(f"{name}: the shapes of x {tuple(x.shape)} and y {tuple(y.shape)} do not "
                   "broadcast") from None
    if x.data.dtype.kind == "c":  # torch's vecdot conjugates x: sum(conj(x) * y)
        x = Conj.apply(x)
    return (x * y).sum(dim=wrap_dim(dim, len(shape), name))


def vander(x, *, N=None):  # noqa: N803  (PyTorch's name)
    """The Vandermonde matrices of x (..., n): (..., n, N) with columns x^0, x^1, ...,
    x^(N-1) (N defaults to n)."""
    name = "linalg.vander"
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}: x must be a Tensor, got {type(x).__name__}")
    if x.data.dtype == np.bool_ or x.data.dtype.kind not in "fiu":
        raise TypeError(f"{name} supports floating point and integer tensors, but got "
                        f"{x.data.dtype}")
    if x.ndim < 1:
        raise _bad(f"{name}: x must have at least one dimension, got shape {tuple(x.shape)}")
    n = x.shape[-1] if N is None else N
    if n <= 1:
        raise _bad(f"{name}: N must be greater than 1, got {n}.")
    xp = get_array_module(x.data)
    dtype = np.int64 if x.data.dtype.kind in "iu" else x.data.dtype
    base = x if x.data.dtype == dtype else x.to(dtype)
    # repeated products, not x ** p: x ** 0's gradient would be 0 * x ** -1 (nan) at x = 0
    columns = [autograd.Tensor(xp.ones(x.shape, dtype)), base]
    while len(columns) < n:
        columns.append(columns[-1] * base)
    return stack(columns, -1)


def _expm(a):
    """exp of a batch of square matrices: scaling and squaring with a degree-18 Taylor
    polynomial (in float64, whose error is then far below float32's)."""
    xp = get_array_module(a)
    a64 = a.astype(np.float64)
    n = a.shape[-1]
    norm = float(xp.abs(a64).sum(axis=-1).max()) if a64.size else 0.0
    if not np.isfinite(norm):  # inf or NaN entries: the squarings cannot be counted
        finite = xp.isfinite(a64).all(axis=(-2, -1))
        if not bool(finite.any()):
            return xp.full(a.shape, np.nan, dtype=a.dtype)
        out = xp.full(a64.shape, np.nan)
        out[finite] = _expm(a64[finite])
        return out.astype(a.dtype, copy=False)
    s = max(0, int(np.ceil(np.log2(norm / 0.5)))) if norm > 0.5 else 0
    x = a64 / (2.0 ** s)
    eye = xp.eye(n, dtype=np.float64)
    result = eye + x / 18.0
    for k in range(17, 0, -1):  # Horner: I + x/1 (I + x/2 (I + ...))
        result = eye + (x @ result) / k
    for _ in range(s):
        result = result @ result
    return result.astype(a.dtype, copy=False)


class MatrixExp(Function):
    """exp(A); its gradient (the Fréchet derivative at A^T applied to G) is the top-right
    block of exp([[A^T, G], [0, A^T]])."""

    def forward(self, a):
        self.save_for_backward(a)
        return _expm(a)

    def backward(self, g):
        (a,) = self.saved
        xp = get_array_module(a)
        n = a.shape[-1]
        at = xp.swapaxes(a, -1, -2)
        block = xp.zeros(a.shape[:-2] + (2 * n, 2 * n), dtype=a.dtype)
        block[..., :n, :n] = at
        block[..., n:, n:] = at
        block[..., :n, n:] = g
        return _expm(block)[..., :n, n:]

    def graph_backward(self, g, out):
        # the same block matrix from recorded ops: its exponential is this op again, so the
        # gradient is differentiable as often as needed
        (a,) = self.inputs
        n, at = a.shape[-1], swap_last_dims(a)
        zeros = autograd.Tensor(get_array_module(g.data).zeros(g.shape, dtype=g.data.dtype))
        block = cat([cat([at, g], dim=-1), cat([zeros, at], dim=-1)], dim=-2)
        return MatrixExp.apply(block)[..., :n, n:]


def matrix_exp(A):
    """The matrix exponential of each square matrix of A (..., n, n); 16-bit floats too
    (computed in float64), as torch's."""
    name = "linalg.matrix_exp"
    if isinstance(A, autograd.Tensor) and is_floating(A.data.dtype) and A.data.dtype.itemsize < 4:
        if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
            _matrix_input(name, A.float(), square=True)
    else:
        _matrix_input(name, A, square=True)
    return MatrixExp.apply(A)


def _householder_vectors(A):
    """The Householder vectors of geqrf's packed A (m x k): its columns below the diagonal,
    with a one on it (recorded ops)."""
    xp = get_array_module(A.data)
    return A.tril(-1) + constant(xp.eye(A.shape[-2], A.shape[-1], dtype=A.data.dtype))


def _check_householder(name, A, tau, what="input"):
    _matrix_input(name, A, what=what)
    _same_float_dtype(name, A, tau, (what, "tau"))
    if tuple(tau.shape[:-1]) != tuple(A.shape[:-2]) or tau.ndim < 1:
        raise _bad(f"{name}: Expected batch dimensions of tau to be equal to "
                   f"{what}.shape[:-2] = {tuple(A.shape[:-2])}, but got {tuple(tau.shape[:-1])}"
                   f" (tau of shape {tuple(tau.shape)})")


@_float32_under_autocast("linalg_householder_product")
def householder_product(A, tau):
    """The first n columns of H_1 ... H_k, H_i = I - tau_i v_i v_i^T with v_i the i-th column
    of A (..., m, n) below the diagonal and a one on it (LAPACK's orgqr); k = tau.shape[-1].
    Differentiable in A and tau, twice."""
    name = "torch.linalg.householder_product"
    _check_householder(name, A, tau)
    m, n = A.shape[-2:]
    if m < n:
        raise _bad(f"{name}: input.shape[-2] must be greater than or equal to input.shape[-1]"
                   f", got {m} and {n}")
    if tau.shape[-1] > n:
        raise _bad(f"{name}: input.shape[-1] must be greater than or equal to tau.shape[-1], "
                   f"got {n} and {tau.shape[-1]}")
    xp = get_array_module(A.data)
    vs = _householder_vectors(A)
    q = autograd.Tensor(xp.broadcast_to(xp.eye(m, n, dtype=A.data.dtype), A.shape).copy())
    if tau.shape[-1] == 0:  # no reflector: still a function of A and tau (zero gradients)
        q = q + A * 0.0 + tau.sum(-1, keepdim=True).unsqueeze(-1) * 0.0
    for i in range(tau.shape[-1] - 1, -1, -1):
        v = vs[..., :, i:i + 1]
        q = q - tau[..., i:i + 1].unsqueeze(-1) * (v @ (_mT(v) @ q))
    return q


@_float32_under_autocast("orgqr")
def orgqr(input, tau):
    """torch.orgqr: linalg.householder_product."""
    return householder_product(input, tau)


@_float32_under_autocast("ormqr")
def ormqr(input, tau, other, left=True, transpose=False):
    """torch.ormqr: Q @ other (Q^T with ``transpose``; other @ Q with ``left=False``), Q the
    product of geqrf's Householder reflectors in ``input`` and ``tau``, without forming Q."""
    name = "torch.ormqr"
    _check_householder(name, input, tau)
    _same_float_dtype(name, input, other, ("input", "other"))
    if other.ndim < 2:
        raise _bad(f"{name}: other must have at least 2 dimensions, got shape "
                   f"{tuple(other.shape)}")
    if tuple(other.shape[:-2]) != tuple(input.shape[:-2]):
        raise _bad(f"{name}: Expected batch dimensions of other to be equal to "
                   f"input.shape[:-2] = {tuple(input.shape[:-2])}, but got "
                   f"{tuple(other.shape[:-2])}")
    side = -2 if left else -1
    m = input.shape[-2]
    if other.shape[side] != m:
        raise _bad(f"{name}: other.shape[{side}] must be equal to input.shape[-2], got "
                   f"{other.shape[side]} and {m}")
    k = tau.shape[-1]
    if k != min(other.shape[side], input.shape[-1]):
        raise _bad(f"{name}: tau.shape[-1] must be equal to min(other.shape[{side}], "
                   f"input.shape[-1]) = {min(other.shape[side], input.shape[-1])}, got {k}")
    vs = _householder_vectors(input)
    c = other
    # Q = H_1 ... H_k: Q C applies H_k first, Q^T C H_1 first; C Q and C Q^T the other way
    order = range(k - 1, -1, -1) if left != bool(transpose) else range(k)
    for i in order:
        v, t = vs[..., :, i:i + 1], tau[..., i:i + 1].unsqueeze(-1)
        c = c - t * (v @ (_mT(v) @ c)) if left else c - t * ((c @ v) @ _mT(v))
    return c


class _NoDerivative(Function):
    """The output of an op PyTorch has no derivative for (computed by the caller): it is in
    the graph, as torch's, and its backward raises naming the op."""

    def forward(self, *arrays, value, op):
        self.op = op
        return value

    def backward(self, g):
        if not any(autograd.input_needed(self, i) for i in range(len(self.inputs))):
            return (None,) * len(self.inputs)  # a pass for other inputs (autograd.grad)
        raise NotImplementedError(f"the derivative for '{self.op}' is not implemented.")


GeqrfResult = namedtuple("GeqrfResult", ["a", "tau"])


@_float32_under_autocast("geqrf")
def geqrf(input):
    """torch.geqrf: A's QR in LAPACK's form, R on and above the diagonal of ``a`` and the
    Householder vectors below it, with their scales ``tau`` (not differentiable, as torch)."""
    _matrix_input("geqrf", input, what="input")
    xp = get_array_module(input.data)
    m, n = input.shape[-2:]
    if input.numel():
        h, tau = xp.linalg.qr(input.data, mode="raw")
        a = _xmT(xp, h).astype(input.data.dtype, copy=True)
        tau = tau.astype(input.data.dtype, copy=False)
    else:
        a = input.data.copy()
        tau = xp.zeros(input.shape[:-2] + (min(m, n),), input.data.dtype)
    return GeqrfResult(_NoDerivative.apply(input, value=a, op="geqrf"),
                       autograd.Tensor(tau))


@_float32_under_autocast("linalg_tensorinv")
def tensorinv(A, ind=2):
    """The inverse of A seen as a linear map from its first ``ind`` dims to the rest:
    shape A.shape[ind:] + A.shape[:ind]."""
    name = "linalg.tensorinv"
    if isinstance(ind, bool) or not isinstance(ind, (int, np.integer)) or ind <= 0:
        raise _bad(f"{name}: Expected a strictly positive integer for 'ind', but got {ind!r}")
    if not isinstance(A, autograd.Tensor):
        raise TypeError(f"{name}: A must be a Tensor, got {type(A).__name__}")
    rows, cols = int(np.prod(A.shape[:ind])), int(np.prod(A.shape[ind:]))
    if rows != cols:
        raise _bad(f"{name}: Expected self to satisfy the requirement prod(self.shape[ind:]) "
                   f"== prod(self.shape[:ind]), but got {cols} != {rows} (shape "
                   f"{tuple(A.shape)}, ind={ind})")
    return inv(A.reshape(rows, cols)).reshape(*A.shape[ind:], *A.shape[:ind])


@_float32_under_autocast("linalg_tensorsolve")
def tensorsolve(A, B, dims=None):
    """X with tensordot(A, X, X.ndim) = B; ``dims`` (of A) are moved to the end first. X has
    shape A.shape[B.ndim:]."""
    name = "linalg.tensorsolve"
    if not isinstance(A, autograd.Tensor) or not isinstance(B, autograd.Tensor):
        raise TypeError(f"{name}: A and B must be Tensors, got {type(A).__name__} and "
                        f"{type(B).__name__}")
    if dims is not None:
        dims = [wrap_dim(d, A.ndim, name) for d in dims]
        A = A.movedim(dims, list(range(A.ndim - len(dims), A.ndim)))
    rows, cols = int(np.prod(A.shape[:B.ndim])), int(np.prod(A.shape[B.ndim:]))
    if rows != cols or B.numel() != rows:
        raise _bad(f"{name}: Expected self to satisfy the requirement prod(self.shape[other."
                   f"ndim:]) == prod(self.shape[:other.ndim]) == other.numel(), but got {cols}"
                   f", {rows} and {B.numel()} (A of shape {tuple(A.shape)}, B of shape "
                   f"{tuple(B.shape)})")
    return solve(A.reshape(rows, cols), B.reshape(rows)).reshape(*A.shape[B.ndim:])


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    """The diagonals of the matrices of A (torch.diagonal with the last two dims)."""
    return A.diagonal(offset, dim1, dim2)


def matmul(input, other):
    """input @ other (torch.matmul)."""
    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"linalg.matmul: input must be a Tensor, got {type(input).__name__}")
    return input @ other


def adjoint(input):
    """The conjugate transpose of the matrices of input (real tensors: mT)."""
    if not isinstance(input, autograd.Tensor):
        raise TypeError(f"adjoint: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise _bad("tensor.adjoint() is only supported on matrices or batches of matrices. "
                   f"Got {input.ndim}-D tensor.")
    return _mH(input)


__all__ += ["solve_triangular", "lu_factor", "lu_factor_ex", "lu", "lu_solve", "cholesky_ex",
            "inv_ex", "solve_ex", "vecdot", "vander", "matrix_exp", "householder_product",
            "tensorinv", "tensorsolve", "diagonal", "matmul"]
TENSOR_METHODS.update({
    "cholesky_solve": cholesky_solve, "cholesky_inverse": cholesky_inverse, "lu": _lu_compat,
    "lu_solve": _lu_solve_compat, "triangular_solve": triangular_solve,
    "matrix_exp": matrix_exp, "geqrf": geqrf, "orgqr": orgqr, "ormqr": ormqr,
    "adjoint": adjoint,
})
FUNCTIONS.update({k: v for k, v in TENSOR_METHODS.items() if k not in ("mT", "mH", "H")})
FUNCTIONS["lu_unpack"] = lu_unpack


# ---- LDL^T (Bunch-Kaufman), as LAPACK's sytrf / sytrs on the lower triangle -------------------
# Each matrix picks its own 1x1 and 2x2 pivots, so the batch is a loop; the factorisation runs
# on the host (its pivot choices are scalar decisions) and comes back to the data's device.
_BK_ALPHA = (1 + 17 ** 0.5) / 8


def _ldl_host(a):
    """(LD, pivots, info) of one symmetric matrix from its lower triangle, as sytf2: pivots
    1-based, both entries of a 2x2 block -kp; info the first zero pivot column."""
    a = np.tril(np.array(a, dtype=a.dtype, copy=True))
    n = a.shape[-1]
    piv = np.zeros(n, dtype=np.int32)
    info, k = 0, 0
    while k < n:
        step, absakk = 1, abs(a[k, k])
        imax = k + 1 + int(np.argmax(np.abs(a[k + 1:, k]))) if k < n - 1 else k
        colmax = abs(a[imax, k]) if k < n - 1 else 0.0
        if max(absakk, colmax) == 0 or np.isnan(absakk):
            info = info or k + 1
            kp = k
        else:
            if absakk >= _BK_ALPHA * colmax:
                kp = k
            else:
                rowmax = np.abs(a[imax, k:imax]).max()
                if imax < n - 1:
                    rowmax = max(rowmax, np.abs(a[imax + 1:, imax]).max())
                if absakk >= _BK_ALPHA * colmax * (colmax / rowmax):
                    kp = k
                elif abs(a[imax, imax]) >= _BK_ALPHA * rowmax:
                    kp = imax
                else:
                    kp, step = imax, 2
            kk = k + step - 1
            if kp != kk:  # symmetric interchange of kk and kp in the trailing lower triangle
                a[kp + 1:, [kk, kp]] = a[kp + 1:, [kp, kk]]
                seg = slice(kk + 1, kp)
                a[seg, kk], a[kp, seg] = a[kp, seg].copy(), a[seg, kk].copy()
                a[kk, kk], a[kp, kp] = a[kp, kp], a[kk, kk]
                if step == 2:
                    a[k + 1, k], a[kp, k] = a[kp, k], a[k + 1, k]
            if step == 1 and k < n - 1:
                x = a[k + 1:, k] / a[k, k]
                a[k + 1:, k + 1:] -= np.tril(np.outer(a[k + 1:, k], x))
                a[k + 1:, k] = x
            elif step == 2 and k < n - 2:
                d21 = a[k + 1, k]
                d11, d22 = a[k + 1, k + 1] / d21, a[k, k] / d21
                t = 1 / (d11 * d22 - 1)
                d21 = t / d21
                wk = d21 * (d11 * a[k + 2:, k] - a[k + 2:, k + 1])
                wkp1 = d21 * (d22 * a[k + 2:, k + 1] - a[k + 2:, k])
                a[k + 2:, k + 2:] -= np.tril(np.outer(a[k + 2:, k], wk)
                                             + np.outer(a[k + 2:, k + 1], wkp1))
                a[k + 2:, k], a[k + 2:, k + 1] = wk, wkp1
        piv[k:k + step] = kp + 1 if step == 1 else -(kp + 1)
        k += step
    return a, piv, info


def _ldl_solve_host(ld, piv, b):
    """X with A X = B from one matrix's LD and pivots, as sytrs (lower)."""
    b = np.array(b, dtype=ld.dtype, copy=True)
    n = ld.shape[-1]
    k = 0
    while k < n:  # L D Y = P^T B
        if piv[k] > 0:
            kp = piv[k] - 1
            b[[k, kp]] = b[[kp, k]]
            b[k + 1:] -= np.outer(ld[k + 1:, k], b[k])
            b[k] /= ld[k, k]
            k += 1
        else:
            kp = -piv[k] - 1
            b[[k + 1, kp]] = b[[kp, k + 1]]
            b[k + 2:] -= np.outer(ld[k + 2:, k], b[k]) + np.outer(ld[k + 2:, k + 1], b[k + 1])
            akm1k = ld[k + 1, k]
            akm1, ak = ld[k, k] / akm1k, ld[k + 1, k + 1] / akm1k
            denom = akm1 * ak - 1
            bkm1, bk = b[k] / akm1k, b[k + 1] / akm1k
            b[k], b[k + 1] = (ak * bkm1 - bk) / denom, (akm1 * bk - bkm1) / denom
            k += 2
    k = n - 1
    while k >= 0:  # L^T P^T X = Y
        if piv[k] > 0:
            b[k] -= ld[k + 1:, k] @ b[k + 1:]
            kp = piv[k] - 1
            b[[k, kp]] = b[[kp, k]]
            k -= 1
        else:
            b[k] -= ld[k + 1:, k] @ b[k + 1:]
            b[k - 1] -= ld[k + 1:, k - 1] @ b[k + 1:]
            kp = -piv[k] - 1
            b[[k, kp]] = b[[kp, k]]
            k -= 2
    return b


LDLFactorResult = namedtuple("LDLFactorResult", ["LD", "pivots"])
LDLFactorExResult = namedtuple("LDLFactorExResult", ["LD", "pivots", "info"])


def _ldl_factor(name, A):
    _matrix_input(name, A, square=True)
    xp = get_array_module(A.data)
    a = _host(A.data)
    n = a.shape[-1]
    flat = a.reshape((_count(a.shape[:-2]), n, n))
    parts = [_ldl_host(m) for m in flat]
    ld = np.stack([p[0] for p in parts]).reshape(a.shape) if parts else a.copy()
    piv = np.stack([p[1] for p in parts]).reshape(a.shape[:-1]) if parts else \
        np.zeros(a.shape[:-1], np.int32)
    info = np.array([p[2] for p in parts], dtype=np.int32).reshape(a.shape[:-2])
    LD = _NoDerivative.apply(A, value=xp.asarray(ld), op="linalg_ldl_factor_ex")
    return LD, autograd.Tensor(xp.asarray(piv)), info, xp


def _ldl_message(i):
    return (f"The factorization could not be completed: D's diagonal block at column {i} is "
            "exactly zero, so D is singular.")


def ldl_factor_ex(A, *, hermitian=False, check_errors=False):
    """(LD, pivots, info) of the symmetric matrices of A (read from the lower triangle) as
    LAPACK's sytrf: A = P L D L^T P^T with D block diagonal (1x1 and 2x2 blocks, Bunch-Kaufman
    pivots), L's strict lower part and D's lower triangle packed in LD; pivots 1-based int32,
    negative for a 2x2 block; info > 0 where D has a zero block. No gradient, as torch's."""
    name = "torch.linalg.ldl_factor_ex"
    LD, piv, info, xp = _ldl_factor(name, A)
    if check_errors:
        _info_error(name, info, A.ndim > 2, _ldl_message)
    return LDLFactorExResult(LD, piv, autograd.Tensor(xp.asarray(info)))


def ldl_factor(A, *, hermitian=False):
    """(LD, pivots) as ldl_factor_ex; a singular D raises LinAlgError naming the batch
    element."""
    name = "torch.linalg.ldl_factor"
    LD, piv, info, _ = _ldl_factor(name, A)
    _info_error(name, info, A.ndim > 2, _ldl_message)
    return LDLFactorResult(LD, piv)


def ldl_solve(LD, pivots, B, *, hermitian=False):
    """X with A X = B from A's ldl_factor (as LAPACK's sytrs); batch dims broadcast. No
    gradient, as torch's."""
    name = "torch.linalg.ldl_solve"
    _matrix_input(name, LD, square=True, what="LD")
    _same_float_dtype(name, LD, B, ("LD", "B"))
    if not isinstance(pivots, autograd.Tensor) or pivots.data.dtype.kind not in "iu":
        got = type(pivots).__name__ if not isinstance(pivots, autograd.Tensor) else \
            str(pivots.data.dtype)
        raise TypeError(f"{name}: pivots must be an integer tensor (as linalg.ldl_factor gives "
                        f"them), got {got}")
    n = LD.shape[-1]
    if tuple(pivots.shape) != tuple(LD.shape[:-1]):
        raise _bad(f"{name}: pivots of shape {tuple(pivots.shape)} do not fit LD of shape "
                   f"{tuple(LD.shape)}")
    if B.ndim < 2:
        raise _bad(f"{name}: The input tensor B must have at least 2 dimensions.")
    if B.shape[-2] != n:
        raise _bad(f"Incompatible matrix sizes for {name}: each A matrix is {n} by {n} but "
                   f"each b matrix is {B.shape[-2]} by {B.shape[-1]}")
    batch = _batch_of(name, LD, B, ("LD", "B"))
    xp = get_array_module(LD.data)
    count = _count(batch)
    ld = np.broadcast_to(_host(LD.data), batch + (n, n)).reshape((count, n, n))
    piv = np.broadcast_to(_host(pivots.data), batch + (n,)).reshape((count, n))
    b = np.broadcast_to(_host(B.data), batch + B.shape[-2:]).reshape((count,) + B.shape[-2:])
    bad = (np.abs(piv) < 1) | (np.abs(piv) > n)
    if bad.any():
        raise _bad(f"{name}: pivots must be between 1 and {n} in absolute value (as "
                   "linalg.ldl_factor gives them)")
    with np.errstate(all="ignore"):
        x = np.stack([_ldl_solve_host(*args) for args in zip(ld, piv, b)]) if b.shape[0] else \
            np.zeros(b.shape, LD.data.dtype)
    x = xp.asarray(x.reshape(batch + B.shape[-2:]))
    return _NoDerivative.apply(LD, B, value=x, op="linalg_ldl_solve")


__all__ += ["ldl_factor", "ldl_factor_ex", "ldl_solve"]


# ---- eig / eigvals: complex eigenvalues and eigenvectors of general square matrices ---------
EigResult = namedtuple("EigResult", ["eigenvalues", "eigenvectors"])


def _geev(xp, a):
    """(w, v) as LAPACK's geev gives them (unit eigenvectors, largest component real); on the
    host where the array module has no eig (CuPy)."""
    try:
        if hasattr(xp.linalg, "eig"):
            return xp.linalg.eig(a)
        return (xp.asarray(t) for t in np.linalg.eig(_host(a)))
    except np.linalg.LinAlgError:
        raise LinAlgError("linalg.eig: The algorithm failed to converge because the input "
                          "matrix is ill-conditioned or has too many repeated eigenvalues"
                          ) from None


def _eig_arrays(xp, a, vectors=True):
    """geev's (w, v), always complex. A matrix with an inf or a NaN: eig refuses it and
    eigvals gives NaN eigenvalues for it, as torch's."""
    cdtype = complex_of(a.dtype)
    finite = xp.isfinite(a).all(axis=(-2, -1))
    # on the host a check is free; on a GPU, where it would be a sync, the non-finite matrices
    # are swapped for zeros and their results made NaN instead
    all_finite = xp is np and bool(finite.all())
    if xp is np and vectors and not all_finite:
        raise LinAlgError("torch.linalg.eig: input tensor should not contain infs or NaNs.")
    w, v = _geev(xp, a if all_finite else xp.where(finite[..., None, None], a, 0))
    w, v = w.astype(cdtype, copy=False), v.astype(cdtype, copy=False)
    if not all_finite:
        nan = np.array(np.nan, dtype=cdtype)
        w = xp.where(finite[..., None], w, nan)
        v = xp.where(finite[..., None, None], v, nan)
    return w, v


class Eig(Function):
    """A V = V diag(L), complex. PyTorch's gradient: with gV projected to keep each column's
    phase (gV^H V's diagonal made real), gA = V^{-H} (V^H gV / E* + diag(gL)) V^H,
    E*_ij = conj(L_j - L_i); its real part for a real A. A loss that depends on the phases of
    the eigenvectors is refused, as torch's. Twice differentiable (the same formula as recorded
    ops), as torch's."""

    complex_grad = True

    def forward(self, a, vectors=True):
        xp = get_array_module(a)
        w, v = _eig_arrays(xp, a, vectors)
        self.save_for_backward(w, v)
        self.vectors, self.real_input = vectors, a.dtype.kind == "f"
        self.dtype = a.dtype
        return _pack(xp, w, v) if vectors else w

    def backward(self, g):
        w, v = self.saved
        xp = get_array_module(g)
        n = w.shape[-1]
        vh = xp.conj(_xmT(xp, v))
        eye = xp.eye(n, dtype=bool)
        if self.vectors:
            gw, gv = _split(g, (w.shape, v.shape))
            vhgv = vh @ gv
            d = xp.diagonal(vhgv, axis1=-2, axis2=-1)
            if not bool(xp.allclose(d.imag, 0, rtol=1e-2, atol=1e-2)):
                raise RuntimeError(
                    "linalg_eig_backward: The eigenvectors in the complex case are specified "
                    "up to multiplication by e^{i phi}. The specified loss function depends on "
                    "this quantity, so it is ill-defined.")
            vhgv = vhgv - vh @ (v * d.real[..., None, :])
            wc = xp.conj(w)
            econj = xp.where(eye, 1, wc[..., None, :] - wc[..., :, None])
            with np.errstate(all="ignore"):
                inner = vhgv / econj
            inner = inner + gw[..., None, :] * eye
        else:
            inner = g[..., None, :] * eye
        ga = xp.linalg.solve(vh, inner @ vh)
        return ga.real.astype(self.dtype, copy=False) if self.real_input else \
            ga.astype(self.dtype, copy=False)

    def graph_backward(self, g, out):
        from .complex_ops import Real

        w0, v0 = self.saved
        shapes = (w0.shape, v0.shape)
        xp = get_array_module(g.data)
        n = w0.shape[-1]
        eye = xp.eye(n, dtype=bool)
        eye_c = constant(eye.astype(g.data.dtype))
        if self.vectors:
            (w, v), (gw, gv) = _unpack(out, shapes), _unpack(g, shapes)
            vh = _adjoint_graph(v)
            vhgv = vh @ gv
            d = Real.apply(vhgv.diagonal(0, -2, -1))
            vhgv = vhgv - vh @ (v * d.unsqueeze(-2).to(g.data.dtype))
            wc = Conj.apply(w)
            one = constant(xp.ones((), dtype=g.data.dtype))
            econj = Where.apply(constant(eye), one, wc.unsqueeze(-2) - wc.unsqueeze(-1))
            inner = vhgv / econj + gw.unsqueeze(-2) * eye_c
        else:  # the eigenvectors, as functions of A: the decomposition again
            v = _unpack(Eig.apply(self.inputs[0]), shapes)[1]
            vh = _adjoint_graph(v)
            inner = g.unsqueeze(-2) * eye_c
        ga = _EigSolve.apply(vh, inner @ vh)
        return Real.apply(ga) if self.real_input else ga


def _adjoint_graph(t):
    """t^H as a recorded op."""
    return swap_last_dims(Conj.apply(t) if t.data.dtype.kind == "c" else t)


class _EigSolve(Function):
    """X = A^{-1} B for the complex matrices of eig's gradient (same batch dims): gB = A^{-H} G,
    gA = -gB X^H, in PyTorch's convention for complex tensors."""

    complex_grad = True

    def forward(self, a, b):
        xp = get_array_module(a)
        x = xp.linalg.solve(a, b)
        self.save_for_backward(a, x)
        return x

    def backward(self, g):
        a, x = self.saved
        xp = get_array_module(g)
        gb = xp.linalg.solve(xp.conj(_xmT(xp, a)), g)
        return -(gb @ xp.conj(_xmT(xp, x))), gb

    def graph_backward(self, g, out):
        gb = _EigSolve.apply(_adjoint_graph(self.inputs[0]), g)
        return -(gb @ _adjoint_graph(out)), gb


def _eig_input(name, A):
    if not isinstance(A, autograd.Tensor):
        raise TypeError(f"{name}: A must be a Tensor, got {type(A).__name__}")
    if A.data.dtype.kind == "c":
        if A.data.dtype.itemsize < 8:
            raise TypeError(f"{name}: expected a float or complex tensor of 32 or 64-bit parts, "
                            f"got {A.data.dtype}")
        if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
            _matrix_input(name, A.real, square=True)
        return
    _matrix_input(name, A, square=True)


def eig(A):
    """(eigenvalues, eigenvectors) of the square matrices of A (..., n, n), real or complex:
    complex results (complex64 for float32), unit eigenvectors as columns with their largest
    component real, as LAPACK's geev. Differentiable (twice), as torch's."""
    _eig_input("linalg.eig", A)
    batch, n = tuple(A.shape[:-2]), A.shape[-1]
    return EigResult(*_unpack(Eig.apply(A), [batch + (n,), batch + (n, n)]))


def eigvals(A):
    """The (complex) eigenvalues of the square matrices of A, as linalg.eig's."""
    _eig_input("linalg.eigvals", A)
    return Eig.apply(A, vectors=False)


__all__ += ["eig", "eigvals"]
