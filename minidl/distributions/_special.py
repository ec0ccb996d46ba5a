"""What the distributions need beyond minidl's public ops: softplus without overflow (the
functional module's op), and the Gamma sampler with its implicit reparameterisation gradient. The special functions they use
(erf, erfinv, lgamma, digamma, xlogy, log1p, expm1, atan, tan) are minidl.special's and
math_ops', re-exported here under the names the distribution modules import.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from ..functional import Softplus
from ..math_ops import atan, expm1, log1p, tan, xlogy  # noqa: F401  (re-exported)
from ..special import _digamma64, _lgamma64, digamma, erf, erfinv, lgamma  # noqa: F401


def softplus(x):
    return Softplus.apply(x)



def _np_standard_gamma_grad(x, alpha):
    """d x / d alpha of a Gamma(alpha, 1) sample x at a fixed quantile (the implicit
    reparameterisation gradient): -(dP(alpha, x)/d alpha) / density(x), P the regularised lower
    incomplete gamma. dP/d alpha from the series P = sum_n t_n, t_n = x^(alpha+n) e^-x /
    Gamma(alpha+n+1), whose terms differentiate to t_n (log x - digamma(alpha+n+1))."""
    x = np.asarray(x, dtype=np.float64)
    a = np.asarray(alpha, dtype=np.float64)
    x, a = np.broadcast_arrays(x, a)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        logx = np.log(x)
        term = np.exp(a * logx - x - _lgamma64(np, a + 1))
        psi = _digamma64(np, a + 1)
        total = term * (logx - psi)
        n = 0
        # the terms peak near n = x - alpha and then fall faster than geometrically
        limit = int(min(np.nanmax(x, initial=0.0) + 12 * np.sqrt(np.nanmax(x, initial=0.0)) + 60,
                        100000))
        while n < limit:
            psi = psi + 1 / (a + n + 1)
            term = term * x / (a + n + 1)
            n += 1
            part = term * (logx - psi)
            total = total + part
            if n > 8 and not (np.abs(part) > 1e-17 * np.abs(total)).any() and \
                    (term < 1e-17).all():
                break
        log_density = (a - 1) * logx - x - _lgamma64(np, a)
        grad = -total / np.exp(log_density)
        grad = np.where(x > 0, grad, 0.0)
    return grad


def standard_gamma_grad_array(x, alpha):
    xp = get_array_module(x, alpha)
    if xp is np:
        return _np_standard_gamma_grad(x, alpha).astype(x.dtype, copy=False)
    return xp.asarray(_np_standard_gamma_grad(xp.asnumpy(x), xp.asnumpy(alpha))).astype(x.dtype)


class StandardGamma(Function):
    """Draws of Gamma(alpha, 1) from minidl's seeded generator; the gradient w.r.t. alpha is
    the implicit one (the sample moves with alpha at a fixed quantile), as torch's rsample."""

    def forward(self, alpha, generator=None):
        from ..backend import default_generator, torch_random

        xp = get_array_module(alpha)
        host = alpha if xp is np else xp.asnumpy(alpha)
        # torch's sampler and draws (a draw that underflows clamped to tiny, as torch's)
        gen = default_generator if generator is None else generator
        draws = torch_random.standard_gamma(gen, host, alpha.dtype)
        x = xp.asarray(draws.astype(alpha.dtype))
        self.save_for_backward(x, alpha)
        return x

    def backward(self, g):
        x, alpha = self.saved
        return g * standard_gamma_grad_array(x, alpha)


def standard_gamma(alpha):
    return StandardGamma.apply(alpha)
