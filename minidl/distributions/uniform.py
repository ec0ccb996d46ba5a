"""Uniform(low, high): constant density on [low, high), reparameterised as low + u (high - low)."""
from __future__ import annotations

from ..creation import rand
from ..ops import where
from . import constraints
from .distribution import Distribution
from .utils import broadcast_all


class Uniform(Distribution):
    has_rsample = True

    @property
    def arg_constraints(self):
        # low must lie below high (torch 2.13's LessThan(upper_bound=high)); high only
        # depends on low
        return {"low": constraints.less_than(self.high), "high": constraints.dependent}

    def __init__(self, low, high, validate_args=None):
        self.low, self.high = broadcast_all(low, high)
        super().__init__(self.low.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Uniform, batch_shape, _instance, "low", "high")

    @property
    def support(self):
        return constraints.interval(self.low, self.high)

    @property
    def mean(self):
        return (self.high + self.low) / 2

    @property
    def mode(self):
        return self.high * float("nan")

    @property
    def stddev(self):
        return (self.high - self.low) / 12 ** 0.5

    @property
    def variance(self):
        return (self.high - self.low) ** 2 / 12

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        u = rand(shape, dtype=self.low.dtype, device=self.low.device)
        return self.low + u * (self.high - self.low)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        # -log(width) everywhere (its gradient too, as torch), -inf outside [low, high)
        inside = (value >= self.low) & (value < self.high)
        # in low's dtype, as torch's (a float32 0/-inf would pull a float64 result down)
        bound = where(inside, 0.0, float("-inf")).to(self.low.dtype)
        return bound - (self.high - self.low).log()

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return ((value - self.low) / (self.high - self.low)).clamp(min=0, max=1)

    def icdf(self, value):
        return value * (self.high - self.low) + self.low

    def entropy(self):
        return (self.high - self.low).log()
