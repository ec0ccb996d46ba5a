"""LowRankMultivariateNormal(loc, cov_factor, cov_diag): the Gaussian over vectors with
covariance W W^T + diag(D), W of shape (n, m): densities through the m x m capacitance
matrix I + W^T D^-1 W (Woodbury), never an n x n factorisation."""
from __future__ import annotations

import math

from ..creation import eye, randn
from ..tensor import Tensor
from . import constraints
from ._linalg import cholesky, solve_lower
from .distribution import Distribution
from .multivariate_normal import _batch_mahalanobis, _batch_mv
from .utils import broadcast_shape, lazy_property


def _capacitance_tril(W, D):
    m = W.shape[-1]
    wt_dinv = W.transpose(-2, -1) / D.unsqueeze(-2)
    k = wt_dinv @ W + eye(m, dtype=W.dtype, device=W.device)
    return cholesky(k)


def _lowrank_logdet(D, cap_tril):
    return 2 * cap_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1) + D.log().sum(-1)


def _lowrank_mahalanobis(W, D, x, cap_tril):
    wt_dinv = W.transpose(-2, -1) / D.unsqueeze(-2)
    term1 = (x ** 2 / D).sum(-1)
    term2 = _batch_mahalanobis(cap_tril, _batch_mv(wt_dinv, x))
    return term1 - term2


class LowRankMultivariateNormal(Distribution):
    arg_constraints = {"loc": constraints.real_vector,
                       "cov_factor": constraints.independent(constraints.real, 2),
                       "cov_diag": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, cov_factor, cov_diag, validate_args=None):
        if not isinstance(loc, Tensor) or loc.ndim < 1:
            raise ValueError("loc must be at least one-dimensional.")
        n = loc.shape[-1]
        if not isinstance(cov_factor, Tensor) or cov_factor.ndim < 2:
            raise ValueError("cov_factor must be at least two-dimensional, with optional "
                             "leading batch dimensions")
        if cov_factor.shape[-2] != n:
            raise ValueError(f"cov_factor must be a batch of matrices with shape {n} x m, got "
                             f"{tuple(cov_factor.shape)}")
        if not isinstance(cov_diag, Tensor) or cov_diag.shape[-1:] != (n,):
            raise ValueError(f"cov_diag must be a batch of vectors with shape ({n},), got "
                             f"{tuple(getattr(cov_diag, 'shape', ()))}")
        m = cov_factor.shape[-1]
        try:
            batch_shape = broadcast_shape("LowRankMultivariateNormal", loc.shape[:-1],
                                          cov_factor.shape[:-2], cov_diag.shape[:-1])
        except ValueError:
            raise ValueError(f"Incompatible batch shapes: loc {tuple(loc.shape)}, cov_factor "
                             f"{tuple(cov_factor.shape)}, cov_diag {tuple(cov_diag.shape)}") from None
        self.loc = loc.expand(*batch_shape, n)
        self.cov_factor = cov_factor.expand(*batch_shape, n, m)
        self.cov_diag = cov_diag.expand(*batch_shape, n)
        self._unbroadcasted_cov_factor = cov_factor
        self._unbroadcasted_cov_diag = cov_diag
        super().__init__(batch_shape, (n,), validate_args=validate_args)
        self._capacitance_tril = _capacitance_tril(cov_factor, cov_diag)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LowRankMultivariateNormal, _instance)
        batch_shape = tuple(batch_shape)
        n, m = self.cov_factor.shape[-2:]
        new.loc = self.loc.expand(*batch_shape, n)
        new.cov_factor = self.cov_factor.expand(*batch_shape, n, m)
        new.cov_diag = self.cov_diag.expand(*batch_shape, n)
        new._unbroadcasted_cov_factor = self._unbroadcasted_cov_factor
        new._unbroadcasted_cov_diag = self._unbroadcasted_cov_diag
        new._capacitance_tril = self._capacitance_tril
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _matrix_shape(self):
        return self._batch_shape + self._event_shape + self._event_shape

    def _diag_embed(self, d):
        n = self._event_shape[0]
        return d.unsqueeze(-1) * eye(n, dtype=d.dtype, device=d.device)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @lazy_property
    def variance(self):
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        return ((W ** 2).sum(-1) + D).expand(*self._batch_shape, *self._event_shape)

    @lazy_property
    def scale_tril(self):
        # D^1/2 chol(I + D^-1/2 W W^T D^-1/2): the n x n factor, only when asked for
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        sqrt_d = D.sqrt().unsqueeze(-1)
        w = W / sqrt_d
        k = w @ w.transpose(-2, -1) + eye(W.shape[-2], dtype=W.dtype, device=W.device)
        return (sqrt_d * cholesky(k)).expand(*self._matrix_shape())

    @lazy_property
    def covariance_matrix(self):
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        return (W @ W.transpose(-2, -1) + self._diag_embed(D)).expand(*self._matrix_shape())

    @lazy_property
    def precision_matrix(self):
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        wt_dinv = W.transpose(-2, -1) / D.unsqueeze(-2)
        a = solve_lower(self._capacitance_tril, wt_dinv)
        return (self._diag_embed(1 / D) - a.transpose(-2, -1) @ a).expand(*self._matrix_shape())

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        eps_w = randn(shape[:-1] + W.shape[-1:], dtype=self.loc.dtype, device=self.loc.device)
        eps_d = randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + _batch_mv(W, eps_w) + D.sqrt() * eps_d

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        diff = value - self.loc
        m = _lowrank_mahalanobis(W, D, diff, self._capacitance_tril)
        log_det = _lowrank_logdet(D, self._capacitance_tril)
        return -0.5 * (self._event_shape[0] * math.log(2 * math.pi) + log_det + m)

    def entropy(self):
        log_det = _lowrank_logdet(self._unbroadcasted_cov_diag, self._capacitance_tril)
        h = 0.5 * (self._event_shape[0] * (1.0 + math.log(2 * math.pi)) + log_det)
        return h if not self._batch_shape else h.expand(*self._batch_shape)
