"""HalfCauchy(scale): |x| for x from Cauchy(0, scale)."""
from __future__ import annotations

import math

from ..ops import where
from . import constraints
from .cauchy import Cauchy
from .distribution import Distribution
from .utils import broadcast_all


class HalfCauchy(Distribution):
    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, scale, validate_args=None):
        (scale,) = broadcast_all(scale)
        self.base_dist = Cauchy(scale * 0.0, scale, validate_args=validate_args)
        super().__init__(scale.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HalfCauchy, _instance)
        batch_shape = tuple(batch_shape)
        new.base_dist = self.base_dist.expand(batch_shape)
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def scale(self):
        return self.base_dist.scale

    @property
    def mean(self):
        return self.scale.detach() * 0.0 + math.inf

    @property
    def mode(self):
        return self.scale.detach() * 0.0

    @property
    def variance(self):
        return self.scale.detach() * 0.0 + math.inf

    def sample(self, sample_shape=()):
        return self.base_dist.sample(sample_shape).abs()

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape).abs()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_prob = self.base_dist.log_prob(value) + math.log(2)
        return where(value >= 0, log_prob, -math.inf)

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return 2 * self.base_dist.cdf(value) - 1

    def icdf(self, prob):
        return self.base_dist.icdf((prob + 1) / 2)

    def entropy(self):
        return self.base_dist.entropy() - math.log(2)
