"""Pareto(scale, alpha): density alpha scale^alpha / x^(alpha+1) on x >= scale; rsample is
scale e^E with E from Exponential(alpha)."""
from __future__ import annotations


from . import constraints
from ._special import expm1, log1p
from .distribution import Distribution
from .utils import broadcast_all


class Pareto(Distribution):
    arg_constraints = {"alpha": constraints.positive, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, scale, alpha, validate_args=None):
        self.scale, self.alpha = broadcast_all(scale, alpha)
        super().__init__(self.scale.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Pareto, batch_shape, _instance, "scale", "alpha")

    @property
    def support(self):
        return constraints.greater_than_eq(self.scale)

    @property
    def mean(self):
        a = self.alpha.clamp(min=1)  # infinite where alpha <= 1
        return a * self.scale / (a - 1)

    @property
    def mode(self):
        return self.scale

    @property
    def variance(self):
        a = self.alpha.clamp(min=2)  # infinite where alpha <= 2
        return self.scale ** 2 * a / ((a - 1) ** 2 * (a - 2))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        # torch's: Exponential(alpha) draws (exponential_() / alpha), exp, times scale
        e = self.alpha.detach().new_empty(shape).exponential_()
        return self.scale * (e / self.alpha).exp()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        a, s = self.alpha, self.scale
        return a.log() + a * s.log() - (a + 1) * value.log()

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return -expm1(-self.alpha * (value / self.scale).log())

    def icdf(self, value):
        return self.scale * (-log1p(-value) / self.alpha).exp()

    def entropy(self):
        return (self.scale / self.alpha).log() + (1 + 1 / self.alpha)


