"""Weibull(scale, concentration): density (k / s) (x / s)^(k-1) exp(-(x / s)^k) on x > 0;
rsample is s E^(1/k), E a standard exponential."""
from __future__ import annotations


from . import constraints
from ._special import expm1, lgamma, log1p
from .distribution import Distribution
from .gumbel import EULER_GAMMA
from .utils import broadcast_all


class Weibull(Distribution):
    arg_constraints = {"scale": constraints.positive, "concentration": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, scale, concentration, validate_args=None):
        self.scale, self.concentration = broadcast_all(scale, concentration)
        super().__init__(self.scale.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Weibull, batch_shape, _instance, "scale", "concentration")

    @property
    def mean(self):
        return self.scale * lgamma(1 + 1 / self.concentration).exp()

    @property
    def mode(self):
        k = self.concentration
        return self.scale * ((k - 1) / k) ** (1 / k)

    @property
    def variance(self):
        k = self.concentration
        return self.scale ** 2 * (lgamma(1 + 2 / k).exp() - (2 * lgamma(1 + 1 / k)).exp())

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        e = self.scale.detach().new_empty(shape).exponential_()  # torch's draws
        return self.scale * e ** (1 / self.concentration)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        k, s = self.concentration, self.scale
        z = value / s
        return (k / s).log() + (k - 1) * z.log() - z ** k

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return -expm1(-(value / self.scale) ** self.concentration)

    def icdf(self, value):
        return self.scale * (-log1p(-value)) ** (1 / self.concentration)

    def entropy(self):
        k = self.concentration
        return EULER_GAMMA * (1 - 1 / k) + (self.scale / k).log() + 1
