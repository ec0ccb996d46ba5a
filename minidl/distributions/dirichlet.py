"""Dirichlet(concentration): a distribution over the probability simplex of the last dim;
rsample normalises Gamma draws, so gradients flow through their implicit reparameterisation."""
from __future__ import annotations

import numpy as np

from ..creation import zeros
from ..functional import one_hot
from ..ops import where
from ..tensor import Tensor
from . import constraints
from ._special import digamma, lgamma, standard_gamma, xlogy
from .distribution import Distribution
from .exp_family import ExponentialFamily


def _first_index(c):
    return zeros(c.shape[:-1], dtype="int64", device=c.device)


class Dirichlet(ExponentialFamily):
    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration, validate_args=None):
        if not isinstance(concentration, Tensor) or concentration.ndim < 1:
            raise ValueError("`concentration` parameter must be at least one-dimensional.")
        self.concentration = concentration
        shape = concentration.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Dirichlet, _instance)
        batch_shape = tuple(batch_shape)
        new.concentration = self.concentration.expand(*batch_shape, *self._event_shape)
        Distribution.__init__(new, batch_shape, self._event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    @property
    def mode(self):
        # where every concentration is below 1 the density is unbounded at every corner;
        # torch takes the first (the argmax of its row of 0/0), and so does this
        c = self.concentration
        cm1 = (c - 1).clamp(min=0.0)
        # the clamp keeps rows of all-zero cm1 (taken from the corner below) from 0 / 0
        mode = cm1 / cm1.sum(-1, keepdim=True).clamp(min=float(np.finfo(c.dtype).tiny))
        first = _first_index(c)
        corner = one_hot(first, c.shape[-1]).type_as(c)
        # every concentration <= 1 with some == 1 (Beta(1, 1), Beta(1, 0.5)): torch's 0 / 0,
        # NaN, not the 0 the clamp would leave (no unique interior mode)
        flat = (cm1.sum(-1, keepdim=True) == 0) & ~(c < 1).all(-1, keepdim=True)
        mode = where(flat, float("nan"), mode)
        return where((c < 1).all(-1, keepdim=True), corner, mode)

    @property
    def variance(self):
        c = self.concentration
        c0 = c.sum(-1, keepdim=True)
        return c * (c0 - c) / (c0 ** 2 * (c0 + 1))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        dtype = self.concentration.dtype
        # torch's _sample_dirichlet: Gamma draws in double (alpha as a double), normalised in
        # double, cast, kept in [tiny, the float below 1]
        g = standard_gamma(self.concentration.expand(*shape).double())
        x = (g / g.sum(-1, keepdim=True)).to(dtype)
        finfo = np.finfo(dtype)
        top = float(np.nextafter(finfo.dtype.type(1), finfo.dtype.type(0)))
        return x.clamp(min=float(finfo.tiny), max=top)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        c = self.concentration
        return xlogy(c - 1.0, value).sum(-1) + lgamma(c.sum(-1)) - lgamma(c).sum(-1)

    def entropy(self):
        c = self.concentration
        k = c.shape[-1]
        a0 = c.sum(-1)
        return (lgamma(c).sum(-1) - lgamma(a0) - (k - a0) * digamma(a0)
                - ((c - 1.0) * digamma(c)).sum(-1))

    @property
    def _natural_params(self):
        return (self.concentration,)

    def _log_normalizer(self, x):
        return lgamma(x).sum(-1) - lgamma(x.sum(-1))
