"""Multinomial(total_count=1, probs=None, logits=None): counts of total_count Categorical
draws, one count per category along the last dim (the event)."""
from __future__ import annotations

import math

import numpy as np

from ..ops import where
from ..tensor import Tensor
from . import constraints
from ._special import lgamma
from .binomial import Binomial
from .categorical import Categorical
from .distribution import Distribution
from .utils import broadcast_all


class _MultinomialSupport(constraints.Constraint):
    is_discrete = True
    event_dim = 1

    def __init__(self, upper_bound):
        self.upper_bound = upper_bound

    def check(self, value):
        return (value >= 0).all(-1) & (value.sum(-1) <= self.upper_bound)

    def __repr__(self):
        return f"Multinomial(upper_bound={self.upper_bound})"


class Multinomial(Distribution):
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        if isinstance(total_count, bool) or not isinstance(total_count, (int, np.integer)):
            raise NotImplementedError("inhomogeneous total_count is not supported")
        self.total_count = int(total_count)
        self._categorical = Categorical(probs=probs, logits=logits, validate_args=validate_args)
        super().__init__(self._categorical.batch_shape, self._categorical.param_shape[-1:],
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Multinomial, _instance)
        batch_shape = tuple(batch_shape)
        new.total_count = self.total_count
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def support(self):
        return _MultinomialSupport(self.total_count)

    @property
    def logits(self):
        return self._categorical.logits

    @property
    def probs(self):
        return self._categorical.probs

    @property
    def param_shape(self):
        return self._categorical.param_shape

    @property
    def mean(self):
        return self.probs * self.total_count

    @property
    def variance(self):
        return self.total_count * self.probs * (1 - self.probs)

    def entropy(self):
        """-log n! + n H(categorical) + sum over categories of E[log k!], k ~ Binomial(n, p_i)
        (the counts' marginals), as torch's."""
        n = self.total_count
        marginal = Binomial(n, probs=self.probs, validate_args=False)
        counts = marginal.enumerate_support(expand=False)
        weights = marginal.log_prob(counts).exp() * lgamma(counts + 1)
        return (n * self._categorical.entropy() - math.lgamma(n + 1)
                + weights.sum(0).sum(-1))

    def sample(self, sample_shape=()):
        # torch's: total_count Categorical draws (its numbers), counted per category
        sample_shape = tuple(sample_shape)
        draws = self._categorical.sample((self.total_count,) + sample_shape).numpy()
        draws = np.moveaxis(draws, 0, -1)
        k = self._categorical._num_events
        counts = (draws[..., None] == np.arange(k)).sum(-2)
        counts = counts.reshape(self._extended_shape(sample_shape))
        return Tensor(counts.astype(self.probs.dtype), device=self.probs.device)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        # a count of 0 of a category of probability 0 contributes nothing (not 0 * -inf)
        logits = where((value == 0) & (logits == float("-inf")), 0.0, logits)
        log_factorial_n = lgamma(value.sum(-1) + 1)
        log_factorial_xs = lgamma(value + 1).sum(-1)
        return log_factorial_n - log_factorial_xs + (logits * value).sum(-1)
