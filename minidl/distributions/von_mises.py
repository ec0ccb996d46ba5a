"""VonMises(loc, concentration): the circular normal law on angles, density
exp(k cos(x - loc)) / (2 pi I0(k)). Sampled by Best and Fisher's rejection method (1979), in
float64 on the host, as torch's (no rsample)."""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from ..special import i0e, i1e
from ..tensor import Tensor
from . import constraints
from .distribution import Distribution
from .utils import broadcast_all


def _log_i0(k):
    """log I0(k) = log(I0(k) e^-k) + k, without overflow for large k."""
    return i0e(k).log() + k


def _best_fisher(kappa, draw):
    """Draws of VonMises(0, kappa) for a float64 array kappa (one per entry); ``draw(shape)``
    gives float64 uniforms. torch's rounds: three uniforms per entry each round, every entry
    accepted in a round (done or not) taking that round's value."""
    tau = 1 + np.sqrt(1 + 4 * kappa * kappa)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (tau - np.sqrt(2 * tau)) / (2 * kappa)
        r = np.where(kappa < 1e-5, 1 / kappa + kappa, (1 + rho * rho) / (2 * rho))
    out = np.zeros(kappa.shape)
    todo = np.ones(kappa.shape, bool)
    while todo.any():
        u1, u2, u3 = draw((3,) + kappa.shape)
        z = np.cos(math.pi * u1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (1 + r * z) / (r + z)
            c = kappa * (r - f)
            accept = (c * (2 - c) - u2 > 0) | (np.log(c / u2) + 1 - c >= 0)
        out = np.where(accept, np.sign(u3 - 0.5) * np.arccos(np.clip(f, -1, 1)), out)
        todo &= ~accept
    return out


class VonMises(Distribution):
    arg_constraints = {"loc": constraints.real, "concentration": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, loc, concentration, validate_args=None):
        self.loc, self.concentration = broadcast_all(loc, concentration)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return self._expand_params(VonMises, batch_shape, _instance, "loc", "concentration")

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        k = self.concentration
        return k * (value - self.loc).cos() - math.log(2 * math.pi) - _log_i0(k)

    def sample(self, sample_shape=()):
        from ..backend import default_generator, torch_random

        shape = self._extended_shape(sample_shape)
        kappa = np.broadcast_to(self.concentration.numpy().astype(np.float64), shape)
        loc = np.broadcast_to(self.loc.numpy().astype(np.float64), shape)
        def draw(shape):  # torch's rand(shape, dtype=float64)
            n = int(np.prod(shape, dtype=np.int64))
            return torch_random.uniform(default_generator, n, np.float64).reshape(shape)

        x = _best_fisher(np.array(kappa), draw)
        x = np.mod(x + math.pi + loc, 2 * math.pi) - math.pi
        xp = get_array_module(self.loc.data)
        data = np.asarray(x).astype(self.loc.dtype)
        return Tensor(data if xp is np else xp.asarray(data), device=self.loc.device)

    @property
    def mean(self):
        """The circular mean."""
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        """The circular variance 1 - I1(k) / I0(k)."""
        k = self.concentration
        return 1 - i1e(k) / i0e(k)
