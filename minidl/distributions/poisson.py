"""Poisson(rate): counts k >= 0 with probability rate^k e^-rate / k!."""
from __future__ import annotations

import numpy as np

from ..backend import default_generator, torch_random
from ..tensor import Tensor
from . import constraints
from ._special import lgamma, xlogy
from .exp_family import ExponentialFamily
from .utils import broadcast_all


class Poisson(ExponentialFamily):
    arg_constraints = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer

    def __init__(self, rate, validate_args=None):
        (self.rate,) = broadcast_all(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Poisson, batch_shape, _instance, "rate")

    @property
    def mean(self):
        return self.rate

    @property
    def mode(self):
        return self.rate.floor()  # a zero gradient, as torch's

    @property
    def variance(self):
        return self.rate

    def sample(self, sample_shape=()):
        """Counts in the rate's (floating) dtype, as torch."""
        shape = self._extended_shape(sample_shape)
        rate = np.broadcast_to(self.rate.detach().numpy(), shape)
        counts = torch_random.poisson(default_generator, rate).astype(self.rate.dtype)  # torch's
        return Tensor(counts, device=self.rate.device)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        rate, value = broadcast_all(self.rate, value)
        return xlogy(value, rate) - rate - lgamma(value + 1)

    @property
    def _natural_params(self):
        return (self.rate.log(),)

    def _log_normalizer(self, x):
        return x.exp()
