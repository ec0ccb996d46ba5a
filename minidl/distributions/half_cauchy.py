"""HalfCauchy(scale): |x| for x from Cauchy(0, scale)."""
from __future__ import annotations

import math

from .cauchy import Cauchy
from .half_normal import _Folded


class HalfCauchy(_Folded):
    _base = Cauchy

    @property
    def mean(self):
        return self.scale.detach() * 0.0 + math.inf

    @property
    def mode(self):
        return self.scale.detach() * 0.0

    @property
    def variance(self):
        return self.scale.detach() * 0.0 + math.inf
