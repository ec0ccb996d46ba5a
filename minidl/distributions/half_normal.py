"""HalfNormal(scale): |x| for x from Normal(0, scale); and the folding it is made of, which
HalfCauchy shares: |x| of a zero-centred base distribution, whose density doubles on x >= 0."""
from __future__ import annotations

import math

from ..creation import zeros_like
from ..ops import where
from . import constraints
from .distribution import Distribution
from .normal import Normal
from .utils import broadcast_all


class _Folded(Distribution):
    """|x| for x from ``_base(0, scale)``, a distribution symmetric about 0 (HalfNormal,
    HalfCauchy): sampling, log_prob, cdf, icdf and entropy from the base; each subclass gives
    its base and its moments. Not registered for KL itself, so a KL pair never mixes two
    foldings."""
    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    _base = None  # (loc, scale) -> the zero-centred distribution folded at 0

    def __init__(self, scale, validate_args=None):
        (scale,) = broadcast_all(scale)
        # a zero loc, not scale * 0 (NaN for an infinite scale, which torch accepts)
        self.base_dist = self._base(zeros_like(scale.detach()), scale, validate_args=validate_args)
        super().__init__(scale.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = tuple(batch_shape)
        new.base_dist = self.base_dist.expand(batch_shape)
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def scale(self):
        return self.base_dist.scale

    def sample(self, sample_shape=()):
        return self.base_dist.sample(sample_shape).abs()

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape).abs()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_prob = self.base_dist.log_prob(value) + math.log(2)
        return where(value >= 0, log_prob, float("-inf"))

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return 2 * self.base_dist.cdf(value) - 1

    def icdf(self, prob):
        return self.base_dist.icdf((prob + 1) / 2)

    def entropy(self):
        return self.base_dist.entropy() - math.log(2)


class HalfNormal(_Folded):
    _base = Normal

    @property
    def mean(self):
        return self.scale * math.sqrt(2 / math.pi)

    @property
    def mode(self):
        return zeros_like(self.scale.detach())

    @property
    def variance(self):
        return self.scale ** 2 * (1 - 2 / math.pi)
