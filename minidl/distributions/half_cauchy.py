"""HalfCauchy(scale): |x| for x from Cauchy(0, scale)."""
from __future__ import annotations

import math

from ..creation import full_like, zeros_like
from .cauchy import Cauchy
from .half_normal import _Folded


class HalfCauchy(_Folded):
    _base = Cauchy

    @property
    def mean(self):
        return full_like(self.scale.detach(), math.inf)

    @property
    def mode(self):
        return zeros_like(self.scale.detach())

    @property
    def variance(self):
        return full_like(self.scale.detach(), math.inf)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        # in scale's dtype, as torch's HalfCauchy (HalfNormal keeps the value's)
        return super().log_prob(value.to(self.scale.dtype))
