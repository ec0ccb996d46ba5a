"""GeneralizedPareto(loc, scale, concentration): the law of exceedances over a threshold;
concentration 0 is the exponential, -1 the uniform on [loc, loc + scale]. Sampled by its
quantile function (reparameterised)."""
from __future__ import annotations

import math
import numbers

from ..creation import rand
from ..ops import where
from . import constraints
from ._special import expm1, log1p
from .distribution import Distribution
from .utils import broadcast_all


class GeneralizedPareto(Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive,
                       "concentration": constraints.real}
    has_rsample = True

    def __init__(self, loc, scale, concentration, validate_args=None):
        scalar = all(isinstance(v, numbers.Number) for v in (loc, scale, concentration))
        self.loc, self.scale, self.concentration = broadcast_all(loc, scale, concentration)
        super().__init__(() if scalar else self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(GeneralizedPareto, batch_shape, _instance, "loc", "scale",
                                   "concentration")

    @property
    def support(self):
        upper = where(self.concentration < 0, self.loc - self.scale / self.concentration,
                      math.inf)
        return constraints.interval(self.loc, upper)

    def _zero_and_safe(self):
        c = self.concentration
        # torch.isclose(c, 0): |c| <= 1e-8 (its atol; the rtol term vanishes at 0)
        zero = c.abs() <= 1e-8
        return zero, where(zero, 1.0, c)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return self.icdf(rand(shape, dtype=self.loc.dtype, device=self.loc.device))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        zero, safe = self._zero_and_safe()
        y = 1 / safe + 1
        nonzero = where(y == 0, y, y * log1p(safe * z))
        return -self.scale.log() - where(zero, z, nonzero)

    def log_survival_function(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        zero, safe = self._zero_and_safe()
        return where(zero, -z, -log1p(safe * z) / safe)

    def log_cdf(self, value):
        return log1p(-self.log_survival_function(value).exp())

    def cdf(self, value):
        return self.log_cdf(value).exp()

    def icdf(self, value):
        zero, safe = self._zero_and_safe()
        log_u = log1p(-value)
        nonzero = self.loc + self.scale / safe * expm1(-safe * log_u)
        return where(zero, self.loc - self.scale * log_u, nonzero)

    @property
    def mean(self):
        c = self.concentration
        valid = c < 1
        return where(valid, self.loc + self.scale / (1 - where(valid, c, 0.5)), math.nan)

    @property
    def variance(self):
        c = self.concentration
        valid = c < 0.5
        safe = where(valid, c, 0.25)
        return where(valid, self.scale ** 2 / ((1 - safe) ** 2 * (1 - 2 * safe)), math.nan)

    @property
    def mode(self):
        return self.loc

    def entropy(self):
        h = self.scale.log() + self.concentration + 1
        return h.expand(*self._batch_shape)
