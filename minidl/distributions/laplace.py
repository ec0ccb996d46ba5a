"""Laplace(loc, scale): density exp(-|x - loc| / scale) / (2 scale); rsample by the inverse
CDF of a uniform draw."""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from ..tensor import Tensor
from . import constraints
from ._special import expm1, log1p
from .distribution import Distribution
from .utils import broadcast_all


def _sign(t):
    """sign(t) as a constant (its gradient is 0 almost everywhere)."""
    return Tensor(get_array_module(t.data).sign(t.data))


class Laplace(Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Laplace, batch_shape, _instance, "loc", "scale")

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return 2 * self.scale ** 2

    @property
    def stddev(self):
        return math.sqrt(2) * self.scale

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        eps = float(np.finfo(self.loc.dtype).eps)
        # torch's recipe and draws: uniform_ open at -1 (log1p(-|u|) stays finite)
        u = self.loc.detach().new_empty(shape).uniform_(eps - 1, 1)
        return self.loc - self.scale * _sign(u) * log1p(-u.abs())

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return -(2 * self.scale).log() - (value - self.loc).abs() / self.scale

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        d = value - self.loc
        return 0.5 - 0.5 * _sign(d) * expm1(-d.abs() / self.scale)

    def icdf(self, value):
        term = value - 0.5
        return self.loc - self.scale * _sign(term) * log1p(-2 * term.abs())

    def entropy(self):
        return 1 + (2 * self.scale).log()
