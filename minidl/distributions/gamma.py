"""Gamma(concentration, rate): density rate^c x^(c-1) e^(-rate x) / Gamma(c) on x > 0, with
torch's implicitly reparameterised rsample (the sample moves with the parameters at a fixed
quantile)."""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..tensor import Tensor
from . import constraints
from ..special import gammainc
from ._special import digamma, lgamma, standard_gamma, xlogy
from .exp_family import ExponentialFamily
from .utils import broadcast_all


def _as_param_dtype(value, param):
    if isinstance(value, Tensor):
        return value if value.dtype == param.dtype else value.to(param.dtype)
    return Tensor(np.asarray(value, dtype=param.dtype), device=param.device)


class Gamma(ExponentialFamily):
    _mean_carrier_measure = 0
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, concentration, rate, validate_args=None):
        self.concentration, self.rate = broadcast_all(concentration, rate)
        super().__init__(self.concentration.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(Gamma, batch_shape, _instance, "concentration", "rate")

    @property
    def mean(self):
        return self.concentration / self.rate

    @property
    def mode(self):
        return ((self.concentration - 1) / self.rate).clamp(min=0)

    @property
    def variance(self):
        return self.concentration / self.rate ** 2

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        value = standard_gamma(self.concentration.expand(*shape)) / self.rate.expand(*shape)
        # torch's value.detach().clamp_(min=tiny): the values only, the graph as it is
        xp = get_array_module(value.data)
        value.data[...] = xp.maximum(value.data, np.finfo(value.data.dtype).tiny)
        return value

    def log_prob(self, value):
        # in rate's dtype (a number taken too), as torch's
        value = _as_param_dtype(value, self.rate)
        if self._validate_args:
            self._validate_sample(value)
        c, r = self.concentration, self.rate
        return xlogy(c, r) + xlogy(c - 1, value) - r * value - lgamma(c)

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return gammainc(self.concentration, self.rate * value)

    def entropy(self):
        c = self.concentration
        return c - self.rate.log() + lgamma(c) + (1.0 - c) * digamma(c)

    @property
    def _natural_params(self):
        return (self.concentration - 1, -self.rate)

    def _log_normalizer(self, x, y):
        return lgamma(x + 1) + (x + 1) * (-y.reciprocal()).log()
