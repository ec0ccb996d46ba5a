"""LKJCholesky(dim, concentration): the Cholesky factor L of a dim x dim correlation matrix
whose density is proportional to det(L L^T)^(concentration - 1) (Lewandowski, Kurowicka and
Joe, 2009), sampled by the onion method (one Beta draw per row, a direction uniform on the
sphere), as torch's."""
from __future__ import annotations

import math

import numpy as np

from ..creation import randn
from ..special import multigammaln
from ..tensor import Tensor
from . import constraints
from ._special import lgamma
from .beta import Beta
from .distribution import Distribution
from .utils import broadcast_all


class LKJCholesky(Distribution):
    arg_constraints = {"concentration": constraints.positive}
    support = constraints.corr_cholesky

    def __init__(self, dim, concentration=1.0, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
            raise ValueError(f"Expected dim to be an integer greater than or equal to 2. "
                             f"Found dim={dim}.")
        self.dim = int(dim)
        (self.concentration,) = broadcast_all(concentration)
        super().__init__(self.concentration.shape, (self.dim, self.dim),
                         validate_args=validate_args)
        self._make_beta()

    def _make_beta(self):
        c = self.concentration
        marginal = c + 0.5 * (self.dim - 2)
        offset = np.concatenate([[0.0], np.arange(self.dim - 1, dtype=np.float64)])
        offset = Tensor(offset.astype(c.dtype), device=c.device)
        self._beta = Beta(offset + 0.5, marginal.unsqueeze(-1) - 0.5 * offset)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LKJCholesky, _instance)
        batch_shape = tuple(batch_shape)
        new.dim = self.dim
        new.concentration = self.concentration.expand(*batch_shape)
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._make_beta()
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=()):
        y = self._beta.sample(sample_shape).unsqueeze(-1)
        normal = randn(self._extended_shape(sample_shape), dtype=y.dtype,
                       device=y.device).tril(-1)
        direction = normal / (normal * normal).sum(-1, keepdim=True).sqrt()
        # the first row has no entries below the diagonal: 0, not 0/0
        first_row = Tensor(np.arange(self.dim) == 0, device=y.device).unsqueeze(-1)
        direction = direction.masked_fill(first_row, 0.0)
        w = y.sqrt() * direction
        tiny = float(np.finfo(w.dtype).tiny)
        diag = (1 - (w * w).sum(-1)).clamp(min=tiny).sqrt()
        return (w + diag.diag_embed()).detach()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        dm1 = self.dim - 1
        alpha = self.concentration + 0.5 * dm1
        normalize = (0.5 * dm1 * math.log(math.pi) + multigammaln(alpha - 0.5, dm1)
                     - lgamma(alpha) * dm1)
        diag = value.diagonal(dim1=-1, dim2=-2)[..., 1:]
        order = Tensor(np.arange(2, self.dim + 1, dtype=np.float64).astype(value.dtype),
                       device=value.device)
        order = 2 * (self.concentration - 1).unsqueeze(-1) + self.dim - order
        return (order * diag.log()).sum(-1) - normalize

