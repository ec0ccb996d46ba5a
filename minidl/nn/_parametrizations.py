"""torch.nn.utils.parametrizations: weight_norm, spectral_norm and orthogonal, built on
``nn.utils.parametrize`` with PyTorch's state_dict keys (``parametrizations.weight.original0``
and ``original1`` for weight_norm; ``original`` and ``0._u``, ``0._v`` for spectral_norm;
``original`` and ``0.base`` for orthogonal).

orthogonal's maps: "matrix_exp" (the default for square matrices), "cayley" and "householder"
(the default for the others), as PyTorch chooses; with ``use_trivialization`` (the default) the
weight is ``base @ map(original)`` and ``original`` starts at -Id, so that the map starts at the
identity. The matrix exponential and the Householder product are minidl.linalg's."""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, rng, to_device, to_numpy
from ..linalg import MatrixExp, householder_product, solve
from ..ops import cat
from ..tensor import Tensor
from . import _parametrize as parametrize
from ._functional.normalization import normalize
from ._norm_hooks import _as_matrix, _norm_except_dim, _normal_draw, _normalize as _unit
from .module import Module

__all__ = ["weight_norm", "spectral_norm", "orthogonal"]


# ---- weight_norm ---------------------------------------------------------------------------
class _WeightNorm(Module):
    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight):
        return _norm_except_dim(weight, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """``module.<name>`` as ``g * v / ||v||`` (the norm over every dim but ``dim``; over all of
    it for dim None): ``parametrizations.<name>.original0`` is g, ``original1`` is v."""
    weight = getattr(module, name, None)
    if isinstance(weight, Tensor) and dim is not None and dim != -1:
        if not -weight.ndim <= dim < weight.ndim:
            raise IndexError(f"weight_norm: dim {dim} is out of range for a {weight.ndim}-D "
                             f"{name}")
        dim %= weight.ndim
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)

    def _old_keys(module, state_dict, prefix, *rest):
        # a checkpoint of the hook-based nn.utils.weight_norm (name_g, name_v) loads, as in torch
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{name}.original1"] = state_dict.pop(v_key)
    module.register_load_state_dict_pre_hook(_old_keys)
    return module


# ---- spectral_norm -------------------------------------------------------------------------
class _SpectralNorm(Module):
    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError("Dimension out of range (expected to be in range of "
                             f"[-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps, self.n_power_iterations = eps, n_power_iterations
        if ndim > 1:
            w = self._matrix(weight.data)
            xp = get_array_module(w)
            h, wd = w.shape
            # torch's normal_ draws for u, then v
            u = _unit(xp.asarray(_normal_draw(h, w.dtype)), eps)
            v = _unit(xp.asarray(_normal_draw(wd, w.dtype)), eps)
            self.register_buffer("_u", Tensor(u))
            self.register_buffer("_v", Tensor(v))
            self._power_method(w, 15)

    def _matrix(self, weight):
        return _as_matrix(weight, self.dim)

    def _power_method(self, w, n):
        # u and v are updated in place; the weight's gradient treats them as constants
        for _ in range(n):
            self._u.data[...] = _unit(w @ self._v.data, self.eps)
            self._v.data[...] = _unit(w.T @ self._u.data, self.eps)

    def forward(self, weight):
        if weight.ndim == 1:
            return normalize(weight, dim=0, eps=self.eps)
        if self.training:
            self._power_method(self._matrix(weight.data), self.n_power_iterations)
        u, v = Tensor(self._u.data.copy()), Tensor(self._v.data.copy())
        sigma = (u * (self._matrix(weight) @ v)).sum()
        return weight / sigma

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """``module.<name>`` divided by its largest singular value, estimated by power iteration
    (15 steps at registration, ``n_power_iterations`` per read in training mode, none in eval
    mode); a 1-D tensor is divided by its norm. ``dim`` defaults to 1 for transposed
    convolutions, else 0."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if type(module).__name__.startswith("ConvTranspose") else 0
    parametrize.register_parametrization(
        module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


# ---- orthogonal ----------------------------------------------------------------------------
def _matrix_exp(a):
    return MatrixExp.apply(a)


def _householder_product(a, tau):
    """The first k columns of H_1 ... H_k (LAPACK's orgqr), by differentiable ops."""
    return householder_product(a, tau)


def _make_orthogonal(a):
    """Q of a's QR decomposition with diag(R) >= 0 (as an array)."""
    xp = get_array_module(a)
    q, r = xp.linalg.qr(a)
    signs = xp.sign(xp.diagonal(r, axis1=-2, axis2=-1))
    signs = xp.where(signs == 0, 1, signs).astype(a.dtype)
    return q * signs[..., None, :]


def _is_orthogonal(q):
    xp = get_array_module(q)
    n, k = q.shape[-2], q.shape[-1]
    eps = 10 * n * float(np.finfo(q.dtype).eps)
    return bool(xp.allclose(xp.swapaxes(q, -1, -2) @ q, xp.eye(k, dtype=q.dtype), atol=eps))


def _geqrf(a):
    """LAPACK geqrf of a batch of matrices (reflectors below the diagonal, R on and above
    it) and tau, on the host."""
    host = to_numpy(a)
    flat = host.reshape((-1,) + host.shape[-2:])
    hs, taus = [], []
    for m in flat:
        h, tau = np.linalg.qr(m, mode="raw")
        hs.append(h.T)
        taus.append(tau)
    shape = host.shape
    return (np.stack(hs).reshape(shape).astype(host.dtype),
            np.stack(taus).reshape(shape[:-2] + (-1,)).astype(host.dtype))


class _Orthogonal(Module):
    def __init__(self, weight, orthogonal_map, *, use_trivialization=True):
        super().__init__()
        self.shape = tuple(weight.shape)
        self.orthogonal_map = orthogonal_map
        if use_trivialization:
            self.register_buffer("base", None)

    def forward(self, X):
        n, k = X.shape[-2], X.shape[-1]
        transposed = n < k
        if transposed:
            X = X.mT
            n, k = k, n
        xp = get_array_module(X.data)
        if self.orthogonal_map in ("matrix_exp", "cayley"):
            X = X.tril()
            if n != k:
                zeros = Tensor(xp.zeros(X.shape[:-1] + (n - k,), dtype=X.data.dtype))
                X = cat([X, zeros], dim=-1)
            A = X - X.mT
            if self.orthogonal_map == "matrix_exp":
                Q = _matrix_exp(A)
            else:
                eye = Tensor(xp.eye(n, dtype=X.data.dtype))
                Q = solve(eye - A * 0.5, eye + A * 0.5)
            if n != k:
                Q = Q[..., :k]
        else:
            A = X.tril(-1)
            tau = 2.0 / (1.0 + (A * A).sum(dim=-2))
            Q = _householder_product(A, tau)
            diag = xp.trunc(xp.diagonal(X.data, axis1=-2, axis2=-1))
            Q = Q * Tensor(diag[..., None, :].astype(X.data.dtype))
        if "base" in self._buffers:
            Q = self.base @ Q
        if transposed:
            Q = Q.mT
        return Q

    def right_inverse(self, Q):
        if tuple(Q.shape) != self.shape:
            raise ValueError(f"Expected a matrix or batch of matrices of shape {self.shape}. "
                             f"Got a tensor of shape {tuple(Q.shape)}.")
        q_init = Q
        q = Q.data
        xp = get_array_module(q)
        n, k = q.shape[-2], q.shape[-1]
        transpose = n < k
        if transpose:
            q = xp.swapaxes(q, -1, -2)
            n, k = k, n
        if "base" not in self._buffers:
            if self.orthogonal_map in ("matrix_exp", "cayley"):
                raise NotImplementedError("It is not possible to assign to the matrix "
                                          "exponential or the Cayley parametrizations when "
                                          "use_trivialization=False.")
            a, tau = _geqrf(q)
            d = np.einsum("...ii->...i", a[..., :k, :k])
            d[...] = np.sign(d)
            d[tau == 0.0] *= -1
            a = to_device(a, Q.device)
            return Tensor(xp.swapaxes(a, -1, -2) if transpose else a)
        if n == k:
            q = _make_orthogonal(q) if not _is_orthogonal(q) else q.copy()
        else:
            extra = xp.asarray(rng().standard_normal(q.shape[:-2] + (n, n - k))).astype(q.dtype)
            q = _make_orthogonal(xp.concatenate([q, extra], axis=-1))
        self.base = Tensor(q)
        neg_id = xp.zeros(q_init.shape, dtype=q_init.data.dtype)
        m = min(q_init.shape[-2], q_init.shape[-1])
        idx = xp.arange(m)
        neg_id[..., idx, idx] = -1
        return Tensor(neg_id)


def orthogonal(module, name="weight", orthogonal_map=None, *, use_trivialization=True):
    """``module.<name>`` (a matrix or a batch of them) constrained to have orthonormal columns
    (or rows, when wide), through ``orthogonal_map``: "matrix_exp" (default for square),
    "cayley", or "householder" (default for rectangular)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if weight.ndim < 2:
        raise ValueError("Expected a matrix or batch of matrices. Got a tensor of "
                         f"{weight.ndim} dimensions.")
    if orthogonal_map is None:
        orthogonal_map = "matrix_exp" if weight.shape[-2] == weight.shape[-1] else "householder"
    if orthogonal_map not in ("matrix_exp", "cayley", "householder"):
        raise ValueError('orthogonal_map has to be one of "matrix_exp", "cayley", '
                         f'"householder". Got: {orthogonal_map}')
    orth = _Orthogonal(weight, orthogonal_map, use_trivialization=use_trivialization)
    parametrize.register_parametrization(module, name, orth, unsafe=True)
    return module
