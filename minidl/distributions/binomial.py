"""Binomial(total_count=1, probs=None, logits=None): successes in total_count Bernoulli
trials."""
from __future__ import annotations

import numpy as np

from ..backend import default_generator, torch_random
from ..ops import minimum
from ..tensor import Tensor
from . import constraints
from ._special import lgamma, softplus
from .distribution import Distribution
from .utils import broadcast_all, lazy_property, logits_to_probs, probs_to_logits


class Binomial(Distribution):
    arg_constraints = {"total_count": constraints.nonnegative_integer,
                       "probs": constraints.unit_interval, "logits": constraints.real}
    has_enumerate_support = True

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
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
        return self._expand_params(Binomial, batch_shape, _instance, "total_count", "probs", "logits")

    @property
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits, is_binary=True)

    @property
    def mean(self):
        return self.total_count * self.probs

    @property
    def mode(self):
        # recorded ops (a zero gradient, as torch's)
        return minimum(((self.total_count + 1) * self.probs).floor(), self.total_count)

    @property
    def variance(self):
        return self.total_count * self.probs * (1 - self.probs)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        dtype = self._param.dtype
        n = np.broadcast_to(self.total_count.detach().numpy().astype(dtype), shape)
        p = np.broadcast_to(self.probs.detach().numpy().astype(dtype), shape)
        # torch's: torch.binomial(total_count.expand, probs.expand), its sampler and numbers
        draws = torch_random.binomial(default_generator, n, p, dtype)
        return Tensor(draws, device=self._param.device)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        n = self.total_count
        # k logit - n softplus(logit): log p^k (1-p)^(n-k), stable for any logit
        log_norm = lgamma(n + 1) - lgamma(value + 1) - lgamma(n - value + 1)
        return log_norm + value * self.logits - n * softplus(self.logits)

    def entropy(self):
        n = self.total_count.numpy()
        if n.size and not (n == n.flat[0]).all():
            raise NotImplementedError("Inhomogeneous total count not supported by `entropy`.")
        values = self.enumerate_support(expand=False)
        log_prob = self.log_prob(values)
        return -(log_prob.exp() * log_prob).sum(0)

    def enumerate_support(self, expand=True):
        n = int(self.total_count.numpy().max()) if self.total_count.numel() else 0
        if not (self.total_count.numpy() == n).all():
            raise NotImplementedError("Inhomogeneous total count not supported by "
                                      "`enumerate_support`.")
        values = Tensor(np.arange(n + 1, dtype=self._param.dtype), device=self._param.device)
        values = values.reshape((-1,) + (1,) * len(self._batch_shape))
        return values.expand(-1, *self._batch_shape) if expand else values
