"""``ExponentialFamily``: the base of distributions of the form
p(x; theta) = h(x) exp(<t(x), theta> - F(theta)), as torch.distributions.ExponentialFamily.
A subclass gives its natural parameters theta (``_natural_params``), its log-normaliser F
(``_log_normalizer``) and E[log h(x)] (``_mean_carrier_measure``); the entropy then follows
from the Bregman divergence of F: H = F(theta) - <theta, grad F(theta)> - E[log h]."""
from __future__ import annotations

from ..autograd import grad
from .distribution import Distribution


class ExponentialFamily(Distribution):
    @property
    def _natural_params(self):
        raise NotImplementedError(f"{type(self).__name__} does not define _natural_params")

    def _log_normalizer(self, *natural_params):
        raise NotImplementedError(f"{type(self).__name__} does not define _log_normalizer")

    @property
    def _mean_carrier_measure(self):
        raise NotImplementedError(f"{type(self).__name__} does not define "
                                  "_mean_carrier_measure")

    def entropy(self):
        result = -self._mean_carrier_measure
        params = [p.detach().requires_grad_() for p in self._natural_params]
        log_norm = self._log_normalizer(*params)
        grads = grad(log_norm.sum(), params, create_graph=True)
        result = result + log_norm
        for p, g in zip(params, grads):
            result = result - (p * g).reshape(*self._batch_shape, -1).sum(-1)
        return result
