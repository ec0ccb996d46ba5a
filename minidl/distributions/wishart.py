"""Wishart(df, covariance_matrix=None, precision_matrix=None, scale_tril=None): the law of
sum_i x_i x_i^T over df Gaussian vectors x_i ~ N(0, Sigma) (real df > p - 1 allowed), on
positive-definite matrices. rsample by Bartlett's decomposition: L A A^T L^T, A
lower-triangular with sqrt(chi2(df - i)) on its diagonal and standard normals below."""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from ..creation import randn
from ..ops import stack, where
from ..special import multigammaln
from ..tensor import Tensor
from . import constraints
from ._linalg import cholesky, solve_lower
from ._special import digamma
from .chi2 import Chi2
from .distribution import Distribution
from .exp_family import ExponentialFamily
from .multivariate_normal import _precision_to_scale_tril
from .utils import broadcast_shape, lazy_property

_LOG_2 = math.log(2)


def _mvdigamma(x, p):
    """sum_i digamma(x - i/2), i = 0 .. p - 1."""
    steps = Tensor(np.arange(p, dtype=np.float64).astype(x.dtype) / 2, device=x.device)
    return digamma(x.unsqueeze(-1) - steps).sum(-1)


class Wishart(ExponentialFamily):
    arg_constraints = {"covariance_matrix": constraints.positive_definite,
                       "precision_matrix": constraints.positive_definite,
                       "scale_tril": constraints.lower_cholesky,
                       "df": constraints.greater_than(0)}
    support = constraints.positive_definite
    has_rsample = True
    _mean_carrier_measure = 0

    def __init__(self, df, covariance_matrix=None, precision_matrix=None, scale_tril=None,
                 validate_args=None):
        given = [m is not None for m in (covariance_matrix, precision_matrix, scale_tril)]
        if sum(given) != 1:
            raise ValueError("Exactly one of covariance_matrix or precision_matrix or "
                             "scale_tril may be specified.")
        name, param = next((n, m) for n, m in (("covariance_matrix", covariance_matrix),
                                                ("precision_matrix", precision_matrix),
                                                ("scale_tril", scale_tril)) if m is not None)
        if not isinstance(param, Tensor) or param.ndim < 2:
            raise ValueError("scale_tril must be at least two-dimensional, with optional "
                             "leading batch dimensions")
        p = param.shape[-1]
        if isinstance(df, numbers.Number):
            batch_shape = tuple(param.shape[:-2])
            self.df = Tensor(np.asarray(df, dtype=param.dtype), device=param.device)
        else:
            batch_shape = broadcast_shape("Wishart", param.shape[:-2], df.shape)
            self.df = df.expand(*batch_shape)
        if bool((self.df <= p - 1).any()):
            raise ValueError(f"Value of df={df} expected to be greater than ndim - 1 = {p - 1}.")
        setattr(self, name, param.expand(*batch_shape, p, p))
        if bool((self.df < p).any()):
            warnings.warn("Low df values detected. Singular samples are highly likely to occur "
                          "for ndim - 1 < df < ndim.", stacklevel=2)
        self.arg_constraints = dict(self.arg_constraints, df=constraints.greater_than(p - 1))
        super().__init__(batch_shape, param.shape[-2:], validate_args=validate_args)
        if scale_tril is not None:
            self._unbroadcasted_scale_tril = scale_tril
        elif covariance_matrix is not None:
            self._unbroadcasted_scale_tril = cholesky(covariance_matrix)
        else:
            self._unbroadcasted_scale_tril = _precision_to_scale_tril(precision_matrix)
        self._make_chi2()

    def _make_chi2(self):
        p = self._event_shape[-1]
        steps = Tensor(np.arange(p, dtype=np.float64).astype(self.df.dtype), device=self.df.device)
        self._dist_chi2 = Chi2(self.df.unsqueeze(-1) - steps)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Wishart, _instance)
        batch_shape = tuple(batch_shape)
        shape = batch_shape + self._event_shape
        new._unbroadcasted_scale_tril = self._unbroadcasted_scale_tril.expand(*shape)
        new.df = self.df.expand(*batch_shape)
        for name in ("covariance_matrix", "scale_tril", "precision_matrix"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(*shape))
        new.arg_constraints = self.arg_constraints
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._make_chi2()
        new._validate_args = self._validate_args
        return new

    def _tril(self):
        return self._unbroadcasted_scale_tril.expand(*self._batch_shape, *self._event_shape)

    @lazy_property
    def scale_tril(self):
        return self._tril()

    @lazy_property
    def covariance_matrix(self):
        low = self._unbroadcasted_scale_tril
        return (low @ low.mT).expand(*self._batch_shape, *self._event_shape)

    @lazy_property
    def precision_matrix(self):
        low = self._tril()
        p = self._event_shape[-1]
        identity = Tensor(np.eye(p, dtype=low.dtype), device=low.device)
        inv_low = solve_lower(low, identity)
        return inv_low.mT @ inv_low

    def _df_matrix(self):
        return self.df.reshape(*self._batch_shape, 1, 1)

    @property
    def mean(self):
        return self._df_matrix() * self.covariance_matrix

    @property
    def mode(self):
        p = self._event_shape[-1]
        factor = self.df - p - 1
        factor = where(factor <= 0, math.nan, factor)
        return factor.reshape(*self._batch_shape, 1, 1) * self.covariance_matrix

    @property
    def variance(self):
        v = self.covariance_matrix
        d = v.diagonal(dim1=-2, dim2=-1)
        return self._df_matrix() * (v ** 2 + d.unsqueeze(-1) * d.unsqueeze(-2))

    def _bartlett(self, sample_shape):
        eps = float(np.finfo(self.df.dtype).eps)
        noise = self._dist_chi2.rsample(sample_shape).sqrt().clamp(min=eps).diag_embed()
        # torch's draws: randn for the p (p - 1) / 2 entries below the diagonal, row by row
        p = self._event_shape[-1]
        lead = tuple(sample_shape) + self._batch_shape
        normal = randn(lead + (p * (p - 1) // 2,), dtype=self.df.dtype, device=self.df.device)
        rows, cols = np.tril_indices(p, -1)
        below = np.zeros(lead + (p, p), dtype=normal.data.dtype)
        below[..., rows, cols] = normal.numpy()
        low = self._unbroadcasted_scale_tril @ (noise + Tensor(below, device=self.df.device))
        return low @ low.mT

    def _fails(self, sample, lead):
        """Per sample (over ``lead`` dims): whether some batch entry is not positive-definite."""
        bad = ~self.support.check(sample.detach()).numpy().astype(bool)
        return bad.reshape(lead + (-1,)).any(-1) if self._batch_shape else bad.reshape(lead)

    def rsample(self, sample_shape=(), max_try_correction=None):
        """A sample by Bartlett's decomposition, with torch 2.13's draws: torch tests the first
        draws with the support's check un-negated, so every sample that *is* positive-definite
        is drawn once more (those new ones that are not, again, up to ``max_try_correction``,
        10, times), and a first one that is not is kept. The numbers follow that; the warning
        is given only for a sample that is not positive-definite."""
        tries = 10 if max_try_correction is None else max_try_correction
        shape = tuple(sample_shape)
        sample = self._bartlett(shape)
        n = int(np.prod(shape, dtype=np.int64))
        redo = ~self._fails(sample, shape).reshape(n)
        if self._fails(sample, shape).any():
            warnings.warn("Singular sample detected.", stacklevel=2)
        if not redo.any() or tries <= 0:
            return sample
        event = self._batch_shape + self._event_shape
        rows = list(sample.reshape((n,) + event).unbind(0))
        for _ in range(tries):
            which = np.nonzero(redo)[0]
            new = self._bartlett((which.size,))
            for j, i in enumerate(which.tolist()):
                rows[i] = new[j]
            bad = self._fails(new, (which.size,))
            if bad.any():
                warnings.warn("Singular sample detected.", stacklevel=2)
            redo[which] = bad
            if not redo.any():
                break
        return stack(rows).reshape(shape + event)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        nu, p = self.df, self._event_shape[-1]
        low = self._unbroadcasted_scale_tril
        half_log_det = low.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        value_chol = cholesky(value)
        log_det_value = 2 * value_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        # tr(Sigma^-1 X) = tr(L^-1 X L^-T)
        low_b = low.expand(*np.broadcast_shapes(low.shape, value.shape))
        inner = solve_lower(low_b, solve_lower(low_b, value).mT)
        trace = inner.diagonal(dim1=-2, dim2=-1).sum(-1)
        return (-nu * (p * _LOG_2 / 2 + half_log_det) - multigammaln(nu / 2, p)
                + (nu - p - 1) / 2 * log_det_value - trace / 2)

    def entropy(self):
        nu, p = self.df, self._event_shape[-1]
        half_log_det = self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return ((p + 1) * (p * _LOG_2 / 2 + half_log_det) + multigammaln(nu / 2, p)
                - (nu - p - 1) / 2 * _mvdigamma(nu / 2, p) + nu * p / 2)

    @property
    def _natural_params(self):
        p = self._event_shape[-1]
        return -self.precision_matrix / 2, (self.df - p - 1) / 2

    def _log_normalizer(self, x, y):
        p = self._event_shape[-1]
        log_det = 2 * cholesky(-2 * x).diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return (y + (p + 1) / 2) * (-log_det + _LOG_2 * p) + multigammaln(y + (p + 1) / 2, p)
