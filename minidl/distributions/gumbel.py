"""Gumbel(loc, scale): the distribution of a maximum (Gumbel-max sampling of categories);
rsample is loc - scale log(-log u)."""
from __future__ import annotations

import math

import numpy as np

from ..creation import full, rand
from . import constraints
from .distribution import Distribution
from .utils import broadcast_all

EULER_GAMMA = 0.57721566490153286060


class Gumbel(Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Gumbel, batch_shape, _instance, "loc", "scale")

    @property
    def mean(self):
        return self.loc + self.scale * EULER_GAMMA

    @property
    def mode(self):
        return self.loc

    @property
    def stddev(self):
        return (math.pi / math.sqrt(6)) * self.scale

    @property
    def variance(self):
        return self.stddev ** 2

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        finfo = np.finfo(self.loc.dtype)
        # torch's: Uniform(tiny, 1 - eps) draws (low + rand * (high - low)), then the transforms
        low = full((), float(finfo.tiny), dtype=self.loc.dtype, device=self.loc.device)
        high = full((), 1 - float(finfo.eps), dtype=self.loc.dtype, device=self.loc.device)
        u = low + rand(shape, dtype=self.loc.dtype, device=self.loc.device) * (high - low)
        return self.loc - self.scale * (-u.log()).log()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return -(self.scale.log() + z + (-z).exp())

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return (-(-(value - self.loc) / self.scale).exp()).exp()

    def icdf(self, value):
        return self.loc - self.scale * (-value.log()).log()

    def entropy(self):
        return self.scale.log() + (1 + EULER_GAMMA)
