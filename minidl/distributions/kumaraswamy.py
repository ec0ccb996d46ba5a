"""Kumaraswamy(concentration1, concentration0): density a b x^(a-1) (1 - x^a)^(b-1) on (0, 1),
a Beta-like law with a closed-form quantile: (1 - (1 - u)^(1/b))^(1/a) of a uniform u."""
from __future__ import annotations

import math

from ..ops import where
from . import constraints
from ._special import digamma, lgamma, log1p
from .gumbel import EULER_GAMMA
from .transformed_distribution import TransformedDistribution
from .transforms import AffineTransform, PowerTransform
from .uniform import Uniform
from .utils import broadcast_all


def _moment(a, b, n):
    """E[x^n] = b B(1 + n/a, b)."""
    arg = 1 + n / a
    return b * (lgamma(arg) + lgamma(b) - lgamma(arg + b)).exp()


class Kumaraswamy(TransformedDistribution):
    arg_constraints = {"concentration1": constraints.positive,
                       "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, concentration1, concentration0, validate_args=None):
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        zero = self.concentration0 * 0.0
        base = Uniform(zero.detach(), zero.detach() + 1, validate_args=validate_args)
        parts = [PowerTransform(self.concentration0.reciprocal()),
                 AffineTransform(1.0, -1.0),
                 PowerTransform(self.concentration1.reciprocal())]
        super().__init__(base, parts, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Kumaraswamy, _instance)
        new.concentration1 = self.concentration1.expand(*batch_shape)
        new.concentration0 = self.concentration0.expand(*batch_shape)
        return super().expand(batch_shape, _instance=new)

    @property
    def mean(self):
        return _moment(self.concentration1, self.concentration0, 1)

    @property
    def mode(self):
        a, b = self.concentration1, self.concentration0
        log_mode = b.reciprocal() * log1p(-b) - log1p(-b * a)
        return where((b < 1) | (a < 1), math.nan, log_mode).exp()

    @property
    def variance(self):
        return _moment(self.concentration1, self.concentration0, 2) - self.mean ** 2

    def entropy(self):
        a, b = self.concentration1, self.concentration0
        harmonic = digamma(b + 1) + EULER_GAMMA
        return (1 - b.reciprocal()) + (1 - a.reciprocal()) * harmonic - a.log() - b.log()
