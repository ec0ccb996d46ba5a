"""Exponential(rate): density rate e^(-rate x) on x >= 0; rsample is E / rate, E a standard
exponential draw."""
from __future__ import annotations

import numpy as np

from ..backend import default_generator, torch_random
from ..creation import zeros_like
from ..tensor import Tensor
from . import constraints
from ._special import expm1, log1p
from .exp_family import ExponentialFamily
from .utils import broadcast_all


class Exponential(ExponentialFamily):
    _mean_carrier_measure = 0
    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, rate, validate_args=None):
        (self.rate,) = broadcast_all(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Exponential, batch_shape, _instance, "rate")

    @property
    def mean(self):
        return 1.0 / self.rate

    @property
    def mode(self):
        return zeros_like(self.rate.detach())

    @property
    def stddev(self):
        return 1.0 / self.rate

    @property
    def variance(self):
        return self.rate ** -2

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        # torch's: new(shape).exponential_() / rate (its numbers)
        e = torch_random.exponential(default_generator, int(np.prod(shape, dtype=np.int64)),
                                     _draw(self.rate.dtype)).reshape(shape)
        return Tensor(np.asarray(e), device=self.rate.device) / self.rate

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self.rate.log() - self.rate * value

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return -expm1(-self.rate * value)

    def icdf(self, value):
        return -log1p(-value) / self.rate

    def entropy(self):
        return 1.0 - self.rate.log()

    @property
    def _natural_params(self):
        return (-self.rate,)

    def _log_normalizer(self, x):
        return -(-x).log()


def _draw(dtype):
    """The dtype torch's exponential_ fills for a rate of ``dtype`` (float32 for a narrower one)."""
    return torch_random.draw_dtype(dtype) if np.dtype(dtype).itemsize >= 4 else np.float32
