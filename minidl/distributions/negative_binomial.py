"""NegativeBinomial(total_count, probs=None, logits=None): the number of successes before
total_count failures of Bernoulli(probs) trials (a Gamma-Poisson mixture)."""
from __future__ import annotations

import numpy as np

from ..backend import default_generator, torch_random
from ..ops import where
from ..tensor import Tensor
from . import constraints
from ._special import lgamma, softplus
from .distribution import Distribution
from .utils import broadcast_all, lazy_property, logits_to_probs, probs_to_logits


class NegativeBinomial(Distribution):
    arg_constraints = {"total_count": constraints.greater_than_eq(0),
                       "probs": constraints.half_open_interval(0.0, 1.0),
                       "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, total_count, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            self.total_count, self.probs = broadcast_all(total_count, probs)
            self.total_count = self.total_count.type_as(self.probs)
            param = self.probs
        else:
            self.total_count, self.logits = broadcast_all(total_count, logits)
            self.total_count = self.total_count.type_as(self.logits)
            param = self.logits
        self._param = param
        super().__init__(param.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(NegativeBinomial, batch_shape, _instance, "total_count", "probs", "logits")

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits, is_binary=True)

    @property
    def mean(self):
        return self.total_count * self.logits.exp()

    @property
    def mode(self):
        return ((self.total_count - 1) * self.logits.exp()).floor().clamp(min=0)

    @property
    def variance(self):
        return self.mean / (-self.logits).sigmoid()

    def sample(self, sample_shape=()):
        """Gamma(total_count, odds) rates, then Poisson counts, in the parameters' dtype."""
        from .gamma import Gamma

        # torch's: Gamma(total_count, exp(-logits)) draws, then torch.poisson's (its numbers)
        gamma = Gamma(self.total_count.detach(), (-self.logits.detach()).exp(),
                      validate_args=False)
        rate = gamma.sample(sample_shape).numpy()
        draws = torch_random.poisson(default_generator, rate.astype(np.float64))
        return Tensor(draws.astype(self._param.dtype), device=self._param.device)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        n, logits = self.total_count, self.logits
        # n log(1 - p) + k log p, with log sigmoid(x) = -softplus(-x)
        log_unnormalized = -n * softplus(logits) - value * softplus(-logits)
        log_norm = -lgamma(n + value) + lgamma(1.0 + value) + lgamma(n)
        log_norm = where(n + value == 0, 0.0, log_norm)
        return log_unnormalized - log_norm
