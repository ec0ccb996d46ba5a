"""``minidl.special``: torch.special's functions (erf, erfc, erfcx, erfinv, ndtr, ndtri,
log_ndtr, gammaln/lgamma, digamma/psi, polygamma, multigammaln, logit, expit, xlogy, xlog1py,
entr, sinc, i0, i0e, i1, i1e, logsumexp, softmax, log_softmax, ...), also under torch's
top-level and Tensor names (minidl.erf, x.lgamma(), x.polygamma(n)...). The Bessel, Airy,
orthogonal-polynomial, zeta and incomplete-gamma functions compute in _special_more.py; like
torch's, the first two families and the polynomials give outputs without a gradient, and zeta
and gammainc/gammaincc (igamma/igammac) differentiate in their second argument only.

No SciPy: each function is written on the array module (NumPy or CuPy) of its input.
float64 is accurate to a few ulps: erf and erfc by the series
``erf x = 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1} / (2n+1)!!`` (no cancellation) for |x| < 1 and
the continued fraction of erfc above; erfinv by Halley steps on erf from Winitzki's first guess
(on erfc near +-1, so that the tails keep their digits); lgamma by Lanczos (g = 7) with the
reflection formula below 1/2; digamma by the recurrence and the asymptotic series; polygamma
(n >= 1) by the Hurwitz zeta function with Euler-Maclaurin. float32 and float16 inputs are
computed in float64 and rounded, except erf of float32 (and GELU's erfc), which take a
Chebyshev fit with a relative error under 1.2e-7 away from the far tail. Integer inputs
compute in float32, as torch's.

Imports only ``backend``, ``autograd``, ``ops`` and ``math_ops``.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import _special_more as _more
from . import autograd
from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import is_floating
from .math_ops import _binary_operands, _float_input, _float_op, _unary, expm1, exp2, log1p
from .math_ops import write_out
from .math_ops import logsumexp, round, xlogy  # noqa: A004  (torch.special's names)
from .ops import constant, where

_SQRT_PI = math.sqrt(math.pi)
_2_OVER_SQRT_PI = 2 / _SQRT_PI
_SQRT_HALF = math.sqrt(0.5)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _wide(a):
    """a as float64 (the dtype the float64-accurate algorithms run in)."""
    return a if a.dtype == np.float64 else a.astype(np.float64)


# ---- erf, erfc, erfcx ---------------------------------------------------------------------
# Numerical Recipes' Chebyshev fit of erfc: erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z/2),
# for z >= 0, with a relative error under 1.2e-7 everywhere, the tail included
_ERFC_FIT = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
             -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _erfc_fit(xp, x):
    z = abs(x)
    t = 1 / (1 + 0.5 * z)
    p = xp.full_like(t, _ERFC_FIT[-1])
    for c in _ERFC_FIT[-2::-1]:
        p *= t
        p += c
    tail = t * xp.exp(p - z * z)
    return xp.where(x >= 0, tail, 2 - tail)


def _erf_series(xp, x, terms):
    """erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (2n+1)!!: positive terms only."""
    x2 = x * x
    term = x.copy()
    total = x.copy()
    for n in range(1, terms):
        term = term * (2 * x2 / (2 * n + 1))
        total = total + term
    return _2_OVER_SQRT_PI * xp.exp(-x2) * total


def _erfcx_cf(x):
    """exp(x^2) erfc(x) for x >= 1 from erfc's continued fraction
    ``1 / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))`` / sqrt(pi), evaluated bottom-up;
    200 levels keep x near 1 exact to the last digits, 60 suffice from 2 up."""
    depth = 60 if x.size == 0 or float(x.min()) >= 2 else 200
    k = x.copy()
    for level in range(depth, 0, -1):
        k = x + (level / 2) / k
    return 1 / (_SQRT_PI * k)


def _erf_erfc64(xp, x, want):
    """erf(x) or erfc(x) (``want``) in float64."""
    ax = xp.abs(x)
    small = ax < 1
    out = xp.empty_like(x)
    if bool(small.any()):
        e = _erf_series(xp, x[small], 30)
        out[small] = e if want == "erf" else 1 - e
    big = ~small & ~xp.isnan(x)
    if bool(big.any()):
        xb = x[big]
        axb = xp.abs(xb)
        tail = xp.exp(-axb * axb) * _erfcx_cf(axb)  # erfc(|x|)
        if want == "erf":
            out[big] = xp.where(xb > 0, 1 - tail, tail - 1)
        else:
            out[big] = xp.where(xb > 0, tail, 2 - tail)
    out[xp.isnan(x)] = xp.nan
    return out


_more._erfc64 = lambda xp, x: _erf_erfc64(xp, x, "erfc")  # for the incomplete gamma's tail


def erf_array(x):
    """erf on an array of any float dtype (in its dtype)."""
    xp = get_array_module(x)
    if x.dtype == np.float32:
        small = xp.abs(x) < 1
        series = _erf_series(xp, xp.where(small, x, 0), 14)  # exact relative to erf near 0
        return xp.where(small, series, 1 - _erfc_fit(xp, x)).astype(x.dtype, copy=False)
    return _erf_erfc64(xp, _wide(x), "erf").astype(x.dtype, copy=False)


def erfc_array(x):
    """erfc on an array of any float dtype: the Chebyshev fit for float32 (GELU's), float64
    to a few ulps."""
    xp = get_array_module(x)
    if x.dtype == np.float32:
        return _erfc_fit(xp, x)
    return _erf_erfc64(xp, _wide(x), "erfc").astype(x.dtype, copy=False)


def _erfcx64(xp, x):
    out = xp.empty_like(x)
    big = x >= 1
    if bool(big.any()):
        out[big] = _erfcx_cf(x[big])
    rest = ~big
    if bool(rest.any()):
        xr = x[rest]
        # x < 1: erfc itself is accurate; below -26 exp(x^2) overflows to inf, as erfcx does
        with np.errstate(over="ignore"):
            out[rest] = xp.exp(xr * xr) * _erf_erfc64(xp, xr, "erfc")
    return out


Erf = _unary("Erf", lambda xp, a: erf_array(a),
             lambda xp, a: _2_OVER_SQRT_PI * xp.exp(-a * a),
             graph_derivative=lambda x, y: (-(x * x)).exp() * _2_OVER_SQRT_PI)
# float64 for every float dtype: the float32 fit (GELU's) loses ~5e-6 relatively in the tail,
# where exp(-x^2) of a rounded x^2 carries the rounding
Erfc = _unary("Erfc", lambda xp, a: _erf_erfc64(xp, _wide(a), "erfc"),
              lambda xp, a: -_2_OVER_SQRT_PI * xp.exp(-a * a),
              graph_derivative=lambda x, y: (-(x * x)).exp() * -_2_OVER_SQRT_PI)
Erfcx = _unary("Erfcx", lambda xp, a: _erfcx64(xp, _wide(a)),
               lambda xp, a: 2 * a * _erfcx64(xp, _wide(a)).astype(a.dtype) - _2_OVER_SQRT_PI,
               graph_derivative=lambda x, y: x * y * 2 - _2_OVER_SQRT_PI)


# ---- erfinv and ndtri ---------------------------------------------------------------------
def _erfinv64(xp, y, tail=None):
    """x with erf(x) = y; ``tail`` = 1 - |y| when the caller knows it more exactly (ndtri of
    a tiny p). Halley steps on f(x) = (1 - |y|) - erfc(x) from Winitzki's guess."""
    ay = xp.abs(y)
    om = 1 - ay if tail is None else tail
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = xp.log(om) + xp.log(2 - om)  # log(1 - y^2)
        a = 0.147
        b = 2 / (math.pi * a) + 0.5 * log_term
        x = xp.sqrt(xp.sqrt(b * b - log_term / a) - b)
        inside = (om > 0) & (om <= 1)
        x = xp.where(inside, x, 0)
        for _ in range(4):
            f = xp.where(om < 0.5, om - _erf_erfc64(xp, x, "erfc"),
                         _erf_erfc64(xp, x, "erf") - ay)
            d = _2_OVER_SQRT_PI * xp.exp(-x * x)
            step = f / d
            x = x - step / (1 + x * step)
        x = xp.where(inside, x, xp.where(om == 0, xp.inf, xp.nan))
        return xp.where(y < 0, -x, x)


Erfinv = _unary("Erfinv", lambda xp, a: _erfinv64(xp, _wide(a)),
                lambda xp, y: (_SQRT_PI / 2) * xp.exp(y * y), save_output=True,
                graph_derivative=lambda x, y: (y * y).exp() * (_SQRT_PI / 2))


def _ndtri64(xp, p):
    # p < 1/2: x = -sqrt(2) erfcinv(2p), with 1 - |2p - 1| = 2p exactly
    with np.errstate(invalid="ignore"):
        low = -math.sqrt(2) * _erfinv64(xp, 1 - 2 * p, tail=2 * p)
        high = math.sqrt(2) * _erfinv64(xp, 2 * p - 1)
    return xp.where(p < 0.5, low, high)


Ndtri = _unary("Ndtri", lambda xp, a: _ndtri64(xp, _wide(a)),
               lambda xp, y: math.sqrt(2 * math.pi) * xp.exp(0.5 * y * y), save_output=True,
               graph_derivative=lambda x, y: (y * y * 0.5).exp() * math.sqrt(2 * math.pi))


# ---- normal distribution ------------------------------------------------------------------
def _ndtr64(xp, x):
    return 0.5 * _erf_erfc64(xp, -x * _SQRT_HALF, "erfc")


def _log_ndtr64(xp, x):
    """log Phi(x): log1p(-Phi(-x)) above 0; below, log(erfc(z)/2) = -z^2 + log(erfcx(z)/2)
    with z = -x/sqrt(2), which never underflows."""
    z = -x * _SQRT_HALF
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        upper = xp.log1p(-0.5 * _erf_erfc64(xp, -z, "erfc"))
        lower = -z * z + xp.log(0.5 * _erfcx64(xp, z))
    return xp.where(x > 0, upper, lower)


Ndtr = _unary("Ndtr", lambda xp, a: _ndtr64(xp, _wide(a)),
              lambda xp, a: xp.exp(-0.5 * a * a - _LOG_SQRT_2PI),
              graph_derivative=lambda x, y: (x * x * -0.5 - _LOG_SQRT_2PI).exp())
LogNdtr = _unary("LogNdtr", lambda xp, a: _log_ndtr64(xp, _wide(a)),
                 lambda xp, a: xp.exp(-0.5 * a * a - _LOG_SQRT_2PI
                                      - _log_ndtr64(xp, _wide(a)).astype(a.dtype)),
                 graph_derivative=lambda x, y: (x * x * -0.5 - _LOG_SQRT_2PI - y).exp())


# ---- gamma family -------------------------------------------------------------------------
_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012,
            9.9843695780195716e-6, 1.5056327351493116e-7)


def _sinpi(xp, x):
    """sin(pi x) with x reduced exactly to [-1/2, 1/2] first (sin(pi r) = sin(pi (1 - r))),
    so that it keeps its relative accuracy near the integers, where it is exactly 0."""
    r = x - 2 * xp.round(x / 2)  # [-1, 1]
    r = xp.where(r > 0.5, 1 - r, xp.where(r < -0.5, -1 - r, r))
    return xp.where(r == 0, 0.0, xp.sin(math.pi * r))


def _lgamma_lanczos(xp, x):  # x >= 1/2
    z = x - 1
    a = xp.full_like(z, _LANCZOS[0])
    for i, c in enumerate(_LANCZOS[1:], 1):
        a = a + c / (z + i)
    t = z + 7.5
    return _LOG_SQRT_2PI + (z + 0.5) * xp.log(t) - t + xp.log(a)


def _lgamma_stirling(xp, x):  # x >= 1000: Lanczos' two large terms would cancel digits away
    r = 1 / (x * x)
    return (x - 0.5) * xp.log(x) - x + _LOG_SQRT_2PI + (1 / 12 - r * (1 / 360 - r / 1260)) / x


def _lgamma64(xp, x):
    """log|Gamma(x)|: Lanczos from 1/2 up (Stirling's series from 1000, exact 0 at 1 and 2),
    the reflection formula below; inf at 0 and the negative integers."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = xp.where(x >= 0.5, x, 1 - x)
        up = xp.where(y >= 1000, _lgamma_stirling(xp, xp.where(y >= 1000, y, 1000.0)),
                      _lgamma_lanczos(xp, xp.where(y >= 1000, 1.0, y)))
        up = xp.where((y == 1) | (y == 2), 0.0, up)
        s = xp.abs(_sinpi(xp, x))
        reflected = math.log(math.pi) - xp.log(s) - up
        # near 0, lgamma(1 + x) - log|x|: sin(pi x) of a subnormal x loses its digits
        tiny = xp.abs(x) < 1e-8
        near_zero = _lgamma_lanczos(xp, xp.where(tiny, 1 + x, 1.0)) - xp.log(xp.abs(x))
        out = xp.where(x >= 0.5, up, xp.where(tiny, near_zero, reflected))
        return xp.where(xp.isinf(x), xp.inf, out)


def _digamma_pos(xp, x):
    """psi(x) for x > 0: psi(x) = psi(x + k) - sum 1/(x + j) up to 10, then the asymptotic
    series in 1/x^2."""
    y = x.copy()
    acc = xp.zeros_like(x)
    for _ in range(10):
        m = y < 10
        acc = xp.where(m, acc - 1 / y, acc)
        y = xp.where(m, y + 1, y)
    r = 1 / (y * y)
    s = r * (1 / 12 - r * (1 / 120 - r * (1 / 252 - r * (1 / 240 - r * (
        1 / 132 - r * (691 / 32760 - r / 12))))))
    return acc + xp.log(y) - 0.5 / y - s


def _digamma64(xp, x):
    """psi(x); psi(1 - x) - pi / tan(pi x) below 1/2; -inf at 0 (+inf at -0.0, the limit
    from below) and NaN at the negative integers, as torch.digamma."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = _digamma_pos(xp, xp.where(x > 0, x, 1 - x))
        cot = xp.cos(math.pi * (x - 2 * xp.round(x / 2))) / _sinpi(xp, x)
        out = xp.where(x > 0, pos, pos - math.pi * cot)
        out = xp.where(x == 0, xp.copysign(xp.inf, -x), out)
        return xp.where((x < 0) & (x == xp.floor(x)), xp.nan, out)


_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)


def _hurwitz_zeta64(xp, s, q):
    """zeta(s, q) = sum_k (q + k)^-s for an integer s >= 2: the terms up to q + k >= 12 + s
    summed, the rest by Euler-Maclaurin. NaN at -inf (no sum starts there), as PyTorch."""
    limit = 12.0 + s
    acc = xp.zeros_like(q)
    w = xp.where(q == -xp.inf, xp.nan, q)
    finite = w[xp.isfinite(w)]
    steps = 0 if finite.size == 0 else max(0, int(math.ceil(limit - float(finite.min()))))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(steps):
            m = w < limit
            acc = xp.where(m, acc + w ** -s, acc)
            w = xp.where(m, w + 1, w)
        tail = w ** (1 - s) / (s - 1) + 0.5 * w ** -s
        rise, fact, power = float(s), 2.0, w ** (-s - 1)
        for j, b in enumerate(_BERNOULLI, 1):
            tail = tail + b / fact * rise * power
            rise *= (s + 2 * j - 1) * (s + 2 * j)
            fact *= (2 * j + 1) * (2 * j + 2)
            power = power / (w * w)
        return acc + tail


def _polygamma64(xp, n, x):
    if n == 0:
        return _digamma64(xp, x)
    zeta = _hurwitz_zeta64(xp, n + 1, x)
    return (-1) ** (n + 1) * math.factorial(n) * zeta


Lgamma = _unary("Lgamma", lambda xp, a: _lgamma64(xp, _wide(a)),
                lambda xp, a: _digamma64(xp, _wide(a)).astype(a.dtype),
                graph_derivative=lambda x, y: Polygamma.apply(x, n=0))


class Polygamma(Function):
    """The n-th derivative of digamma (n = 0: digamma); its gradient is polygamma(n + 1)."""

    def forward(self, a, n):
        xp = get_array_module(a)
        self.n = n
        self.save_for_backward(a)
        return _polygamma64(xp, n, _wide(a)).astype(a.dtype, copy=False)

    def backward(self, g):
        (a,) = self.saved
        xp = get_array_module(g)
        with np.errstate(all="ignore"):
            return (g * _polygamma64(xp, self.n + 1, _wide(a))).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        return g * Polygamma.apply(self.inputs[0], n=self.n + 1)


# ---- Bessel functions I0, I1 --------------------------------------------------------------
def _bessel_i64(xp, nu, x, scaled):
    """I_nu(|x|) (nu 0 or 1), times e^-|x| when ``scaled``: the power series (positive terms)
    up to 30, the asymptotic series e^x / sqrt(2 pi x) sum_k prod (4 nu^2 - (2j-1)^2) /
    (k! (-8x)^k) above, where its smallest term is below e^-60."""
    ax = xp.abs(x)
    small = ax <= 30
    xs = xp.where(small, ax, 0)
    q = xs * xs / 4
    term = xp.ones_like(xs) if nu == 0 else xs / 2
    total = term.copy()
    for k in range(1, 90):
        term = term * q / (k * (k + nu))
        total = total + term
    if scaled:
        total = total * xp.exp(-xs)
    xl = xp.where(small, 31.0, ax)
    mu = 4.0 * nu * nu
    term = xp.ones_like(xl)
    asym = term.copy()
    for k in range(1, 25):
        term = term * -(mu - (2 * k - 1) ** 2) / (k * 8 * xl)
        asym = asym + term
    with np.errstate(over="ignore"):
        asym = asym / xp.sqrt(2 * math.pi * xl) * (1.0 if scaled else xp.exp(xl))
    return xp.where(small, total, asym)


def _odd(xp, x, v):
    return xp.where(x < 0, -v, v)


def _i0(xp, a):
    return _bessel_i64(xp, 0, _wide(a), False).astype(a.dtype)


def _i1(xp, a):
    return _odd(xp, a, _bessel_i64(xp, 1, _wide(a), False).astype(a.dtype))


def _i0e(xp, a):
    return _bessel_i64(xp, 0, _wide(a), True).astype(a.dtype)


def _i1e(xp, a):
    return _odd(xp, a, _bessel_i64(xp, 1, _wide(a), True).astype(a.dtype))


def _i1_over_x(xp, a, v):
    """I1(x)/x with its limit 1/2 at 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.where(a == 0, 0.5, v / a)


def _sign_of(x):
    return constant(get_array_module(x.data).sign(x.data))


def _i1_over_x_graph(x, v):
    """I1(x)/x (or I1e(x)/x for v = I1e(x)) as recorded ops; at 0 its series 1/2 + x^2/16,
    whose first two derivatives there are I1(x)/x's."""
    zero = constant(x.data == 0)
    safe = where(zero, 1.0, x)
    return where(zero, x * x / 16 + 0.5, v / safe)


# d/dx I0 = I1, d/dx I1 = I0 - I1/x; the scaled ones (e^-|x| I) take -sign(x) times themselves
I0 = _unary("I0", _i0, _i1, graph_derivative=lambda x, y: I1.apply(x))
I0e = _unary("I0e", _i0e, lambda xp, a: _i1e(xp, a) - xp.sign(a) * _i0e(xp, a),
             graph_derivative=lambda x, y: I1e.apply(x) - _sign_of(x) * y)
I1 = _unary("I1", _i1, lambda xp, a: _i0(xp, a) - _i1_over_x(xp, a, _i1(xp, a)),
            graph_derivative=lambda x, y: I0.apply(x) - _i1_over_x_graph(x, y))
I1e = _unary("I1e", _i1e, lambda xp, a: _i0e(xp, a) - _i1e(xp, a) * xp.sign(a)
             - _i1_over_x(xp, a, _i1e(xp, a)),
             graph_derivative=lambda x, y: I0e.apply(x) - y * _sign_of(x)
             - _i1_over_x_graph(x, y))


# ---- logit, entr, sinc, xlog1py -----------------------------------------------------------
class Logit(Function):
    """log(x / (1 - x)), x clamped to [eps, 1 - eps] when eps is given (a zero gradient
    outside); without eps the gradient is NaN outside [0, 1], as torch's."""

    def forward(self, a, eps):
        xp = get_array_module(a)
        self.eps = eps
        self.save_for_backward(a)
        z = a if eps is None else xp.clip(a, eps, 1 - eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.log(z / (1 - z)).astype(a.dtype, copy=False)

    def backward(self, g):
        (a,) = self.saved
        xp = get_array_module(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = g / (a * (1 - a))
        if self.eps is None:
            return xp.where((a < 0) | (a > 1), xp.nan, d).astype(g.dtype, copy=False)
        return xp.where((a < self.eps) | (a > 1 - self.eps), 0, d).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        a = x.data
        if self.eps is None:
            inside, outside = (a >= 0) & (a <= 1), float("nan")
        else:
            inside, outside = (a >= self.eps) & (a <= 1 - self.eps), 0.0
        keep = constant(inside)
        safe = where(keep, x, 0.5)  # no 0/0 in the gradient of the branch not taken
        return g * where(keep, 1 / (safe * (1 - safe)), outside)


def _entr(xp, a):
    with np.errstate(divide="ignore", invalid="ignore"):
        y = xp.where(a > 0, -a * xp.log(xp.where(a > 0, a, 1)), 0)
    return xp.where(a < 0, -xp.inf, xp.where(xp.isnan(a), a, y))


Entr = _unary("Entr", _entr, lambda xp, a: -(xp.log(a) + 1),
              graph_derivative=lambda x, y: -(x.log() + 1))


def _sinc(xp, a):
    with np.errstate(divide="ignore", invalid="ignore"):
        px = math.pi * a
        return xp.where(a == 0, 1.0, xp.sin(px) / px)


def _sinc_derivative(xp, a):
    """pi (u cos u - sin u) / u^2 at u = pi x; near 0 its series pi (-u/3 + u^3/30 - u^5/840)
    (the quotient cancels there, and at x = 1e-300 would be 0 / 0)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        px = math.pi * a
        u2 = px * px
        series = math.pi * px * (-1 / 3 + u2 * (1 / 30 - u2 / 840))
        return xp.where(abs(px) < 1e-3, series, (px * xp.cos(px) - xp.sin(px)) / (px * a))


def _sinc_graph_derivative(x, y):
    """(cos(pi x) - sinc(x)) / x as recorded ops; at 0, -pi^2 x / 3: the value 0 and the
    first two derivatives of sinc' there."""
    zero = constant(x.data == 0)
    safe = where(zero, 1.0, x)
    return where(zero, x * (-math.pi ** 2 / 3), ((safe * math.pi).cos() - y) / safe)


Sinc = _unary("Sinc", _sinc, _sinc_derivative, graph_derivative=_sinc_graph_derivative)

# their backward reads the saved input, their graph_derivative the output too: a create_graph
# pass refuses an output changed in place after the forward
for _op in (Erfcx, LogNdtr, I0e, I1, I1e, Sinc):
    _op.graph_reads_all = True
del _op


class XLog1pY(Function):
    """``x * log1p(y)``, 0 where x == 0 (unless y is NaN); the gradient for x is 0 there too,
    as torch.special.xlog1py's."""

    def forward(self, x, y):
        xp = get_array_module(x)
        self.save_for_backward(x, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.where((x == 0) & ~xp.isnan(y), 0, x * xp.log1p(y)).astype(x.dtype)

    def backward(self, g):
        x, y = self.saved
        xp = get_array_module(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            # xlog1py(g, y), and 0 where x == 0 and y <= -1, as torch's derivative (log1p(y)
            # at x == 0 too, where it is finite)
            skip = ((g == 0) & ~xp.isnan(y)) | ((x == 0) & (y <= -1))
            gx = xp.where(skip, 0, g * xp.log1p(y))
            gy = g * x / (1 + y)
        return gx.astype(g.dtype, copy=False), gy.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x, y = self.inputs
        skip = constant((x.data == 0) & (y.data <= -1))
        return where(skip, 0.0, g * y.log1p()), g * x / (1 + y)


# ---- Bessel, Airy, orthogonal polynomials: no derivative in torch -------------------------
def _check_tensor(name, what, x):
    if not isinstance(x, autograd.Tensor):
        raise TypeError(f"{name}: argument '{what}' must be a Tensor, not {type(x).__name__}")


def _constant_unary(name, compute):
    """torch.special.``name``, which torch defines without a derivative: its output takes no
    gradient (requires_grad False, as torch's), whatever its input's."""
    def op(input):
        _check_tensor(name, "input", input)
        x = _float_input(input).data
        xp = get_array_module(x)
        with np.errstate(all="ignore"):  # the cast too: a float32 result may overflow to inf
            y = compute(xp, _wide(x)).astype(x.dtype, copy=False)
        return autograd.Tensor(y)
    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"torch.special.{name} (elementwise; no gradient, as in torch)."
    return op


def _k(nu, scaled):
    return lambda xp, x: _more.bessel_k(xp, x, nu, scaled)


def _i_nan_at_inf(nu):
    def compute(xp, x):
        v = _bessel_i64(xp, nu, x, False)
        v = xp.where(xp.isnan(v) & xp.isfinite(x), xp.inf, v)  # e^x / sqrt(x): inf / inf
        v = _odd(xp, x, v) if nu else v
        return xp.where(xp.isinf(x), xp.nan, v)
    return compute


bessel_j0, bessel_j1, bessel_y0, bessel_y1 = (
    _constant_unary(f"bessel_{w}", lambda xp, x, w=w: _more.bessel_jy(xp, x, w))
    for w in ("j0", "j1", "y0", "y1"))
modified_bessel_i0 = _constant_unary("modified_bessel_i0", _i_nan_at_inf(0))
modified_bessel_i1 = _constant_unary("modified_bessel_i1", _i_nan_at_inf(1))
modified_bessel_k0 = _constant_unary("modified_bessel_k0", _k(0, False))
modified_bessel_k1 = _constant_unary("modified_bessel_k1", _k(1, False))
scaled_modified_bessel_k0 = _constant_unary("scaled_modified_bessel_k0", _k(0, True))
scaled_modified_bessel_k1 = _constant_unary("scaled_modified_bessel_k1", _k(1, True))
airy_ai = _constant_unary("airy_ai", _more.airy_ai)
spherical_bessel_j0 = _constant_unary("spherical_bessel_j0", _more.spherical_bessel_j0)


def _pair(name, input, other):
    """Two operands (at most one a number) at their result type; integers compute in the
    default float dtype, as torch's."""
    tensors = [isinstance(v, autograd.Tensor) for v in (input, other)]
    if not any(tensors):
        raise TypeError(f"{name}: needs at least one Tensor, got {type(input).__name__} and "
                        f"{type(other).__name__}")
    a, b = _binary_operands(name, input, other)
    if not is_floating(a.data.dtype):
        a, b = _float_input(a), _float_input(b)
    return a, b


def _constant_polynomial(name, compute):
    def op(input, n):
        x, deg = _pair(name, input, n)
        xp = get_array_module(x.data)
        degree = _more._degree(xp, deg.data)
        with np.errstate(all="ignore"):
            y = compute(xp, x.data, degree)
        return autograd.Tensor(xp.array(y))  # a fresh array (0-d stays 0-d)
    op.__name__ = op.__qualname__ = name
    op.__doc__ = (f"torch.special.{name}(input, n): the polynomial of degree n (a tensor or a "
                  "number, truncated to an integer) at input; no gradient, as in torch.")
    return op


def _cheb(kind, shifted):
    return lambda xp, x, n: _more.chebyshev(xp, kind, x, n, shifted)


chebyshev_polynomial_t, chebyshev_polynomial_u, chebyshev_polynomial_v, \
    chebyshev_polynomial_w = (_constant_polynomial(f"chebyshev_polynomial_{k}",
                                                   _cheb(k, False)) for k in "tuvw")
shifted_chebyshev_polynomial_t, shifted_chebyshev_polynomial_u, \
    shifted_chebyshev_polynomial_v, shifted_chebyshev_polynomial_w = (
        _constant_polynomial(f"shifted_chebyshev_polynomial_{k}", _cheb(k, True))
        for k in "tuvw")
hermite_polynomial_h = _constant_polynomial(
    "hermite_polynomial_h", lambda xp, x, n: _more.hermite(xp, x, n, True))
hermite_polynomial_he = _constant_polynomial(
    "hermite_polynomial_he", lambda xp, x, n: _more.hermite(xp, x, n, False))
laguerre_polynomial_l = _constant_polynomial("laguerre_polynomial_l", _more.laguerre)
legendre_polynomial_p = _constant_polynomial("legendre_polynomial_p", _more.legendre)


# ---- zeta and the incomplete gamma functions: derivatives for the second argument only ----
def _refuse_first(fn, what):
    if fn.inputs and autograd.input_needed(fn, 0):  # not where only the other one is asked
        raise NotImplementedError(f"the derivative for '{what}' is not implemented.")


class Zeta(Function):
    """The Hurwitz zeta function sum_k (q + k)^-x; d/dq = -x zeta(x + 1, q). torch has no
    derivative in x: backward refuses one, as there."""

    def forward(self, x, q):
        xp = get_array_module(x)
        self.save_for_backward(x, q)
        return _more.zeta(xp, _wide(x), _wide(q)).astype(x.dtype, copy=False)

    def backward(self, g):
        _refuse_first(self, "zeta")
        x, q = self.saved
        xp = get_array_module(g)
        with np.errstate(all="ignore"):
            d = -_wide(x) * _more.zeta(xp, _wide(x) + 1, _wide(q))
        return None, (g * d).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        _refuse_first(self, "zeta")
        x, q = self.inputs
        return None, g * -x * Zeta.apply(x + 1, q)


def _igamma_derivative(xp, a, x):
    """d/dx P(a, x) = x^(a-1) e^-x / Gamma(a). For a >= 100 the exponent is a sum of terms of
    size a log a that cancel: there Stirling's series is taken out of lgamma by hand, leaving
    a (log1p(u) - u) - log x + log(a) / 2 - log(2 pi) / 2 - (its tail), u = (x - a) / a."""
    with np.errstate(all="ignore"):
        direct = (a - 1) * xp.log(x) - x - _lgamma64(xp, a)
        big = xp.where(a >= 100, a, 100.0)
        u = (x - big) / big  # x - a is exact where they are close
        r = 1 / (big * big)
        tail = (1 / 12 - r * (1 / 360 - r * (1 / 1260 - r / 1680))) / big
        # log1p(u) - u: its series where the difference would cancel (|u| < 0.1)
        small = xp.where(xp.abs(u) < 0.1, u, 0.0)
        series = xp.zeros_like(small)
        for k in range(21, 1, -1):
            series = small * ((1 if k % 2 else -1) / k + series)
        log1pmx = xp.where(xp.abs(u) < 0.1, small * series, xp.log1p(u) - u)
        stirling = big * log1pmx - xp.log(x) + 0.5 * xp.log(big) - _LOG_SQRT_2PI - tail
        return xp.exp(xp.where(a >= 100, stirling, direct))


class IGamma(Function):
    """The regularized incomplete gamma functions P(a, x) (``upper`` False: gammainc, igamma)
    and Q(a, x) = 1 - P (gammaincc, igammac); d/dx P = x^(a-1) e^-x / Gamma(a). torch has no
    derivative in a: backward refuses one, as there."""

    def forward(self, a, x, upper):
        xp = get_array_module(a)
        self.upper = upper
        self.save_for_backward(a, x)
        with np.errstate(all="ignore"):
            return _more.igamma(xp, _wide(a), _wide(x), upper, _lgamma64).astype(a.dtype,
                                                                                 copy=False)

    def _what(self):
        return f"{'igammac' if self.upper else 'igamma'}: input"

    def backward(self, g):
        _refuse_first(self, self._what())
        a, x = self.saved
        xp = get_array_module(g)
        d = _igamma_derivative(xp, _wide(a), _wide(x))
        return None, (g * (-d if self.upper else d)).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        _refuse_first(self, self._what())
        a, x = self.inputs
        d = ((a - 1) * x.log() - x - lgamma(a)).exp()
        return None, g * (-d if self.upper else d)


def zeta(input, other):
    """The Hurwitz zeta function sum_k (other + k)^-input (torch.special.zeta)."""
    x, q = _pair("zeta", input, other)
    return Zeta.apply(x, q)


def _igamma_operands(name, input, other):
    for what, v in (("input", input), ("other", other)):
        _check_tensor(name, what, v)
    a, x = _binary_operands(name, input, other)
    if not is_floating(a.data.dtype):
        raise TypeError(f"{name}: not implemented for integer tensors ({a.data.dtype}), as "
                        "in torch; convert them to a floating-point dtype")
    return a, x


def gammainc(input, other):
    """The regularized lower incomplete gamma function P(input, other)."""
    return IGamma.apply(*_igamma_operands("gammainc", input, other), upper=False)


def gammaincc(input, other):
    """The regularized upper incomplete gamma function Q(input, other) = 1 - P."""
    return IGamma.apply(*_igamma_operands("gammaincc", input, other), upper=True)


igamma, igammac = gammainc, gammaincc


# ---- the public functions -----------------------------------------------------------------
erf, erfc, erfcx, erfinv = (_float_op(f) for f in (Erf, Erfc, Erfcx, Erfinv))
ndtr, ndtri, log_ndtr = (_float_op(f) for f in (Ndtr, Ndtri, LogNdtr))
lgamma, i0, i0e, i1, i1e = (_float_op(f) for f in (Lgamma, I0, I0e, I1, I1e))
entr, sinc = _float_op(Entr), _float_op(Sinc)
for _f, _n in ((ndtr, "ndtr"), (ndtri, "ndtri"), (log_ndtr, "log_ndtr"), (i0e, "i0e"),
               (i1e, "i1e")):
    _f.__name__ = _f.__qualname__ = _n
gammaln = lgamma


def polygamma(n, input):
    """The n-th derivative of digamma (n >= 0) of ``input``."""
    if isinstance(n, autograd.Tensor) and n.ndim == 0 and n.data.dtype.kind in "iu":
        n = int(n.item())  # a 0-d integer tensor, as torch takes
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"polygamma: n must be a non-negative int, got {n!r}")
    return Polygamma.apply(_float_input(input, "polygamma"), n=int(n))


def digamma(input):
    """The logarithmic derivative of the gamma function."""
    return Polygamma.apply(_float_input(input, "digamma"), n=0)


psi = digamma


def multigammaln(input, p):
    """The multivariate log-gamma function of dimension p: sum_j lgamma(x - j/2) +
    p (p - 1) / 4 log(pi); every element must be greater than (p - 1) / 2."""
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"multigammaln: p must be an int >= 1, got {p!r}")
    x = _float_input(input, "multigammaln")
    if bool((x.data <= (p - 1) / 2).any()):
        raise ValueError(f"multigammaln: all elements must be greater than (p-1)/2 = "
                         f"{(p - 1) / 2}")
    total = sum(lgamma(x - j / 2) for j in range(p))
    return total + p * (p - 1) / 4 * math.log(math.pi)


mvlgamma = multigammaln


def logit(input, eps=None):
    """log(x / (1 - x)); with ``eps``, x is clamped to [eps, 1 - eps] first."""
    return Logit.apply(_float_input(input, "logit"), eps=None if eps is None else float(eps))


def expit(input):
    """The logistic sigmoid 1 / (1 + e^-x)."""
    return _float_input(input, "expit").sigmoid()


def xlog1py(input, other):
    """``input * log1p(other)``, 0 where input is 0 (unless other is NaN)."""
    a, b = _binary_operands("xlog1py", input, other)
    if not is_floating(a.data.dtype):
        a, b = _float_input(a, "xlog1py"), _float_input(b, "xlog1py")
    return XLog1pY.apply(a, b)


def softmax(input, dim, *, dtype=None):
    """Softmax over ``dim`` (computed in ``dtype`` when given)."""
    _check_tensor("softmax", "input", input)
    return (input if dtype is None else input.to(dtype)).softmax(dim)


def log_softmax(input, dim, *, dtype=None):
    """log(softmax) over ``dim`` (computed in ``dtype`` when given)."""
    _check_tensor("log_softmax", "input", input)
    return (input if dtype is None else input.to(dtype)).log_softmax(dim)


__all__ = ["erf", "erfc", "erfcx", "erfinv", "ndtr", "ndtri", "log_ndtr", "gammaln",
           "digamma", "psi", "polygamma", "multigammaln", "logit", "expit", "xlogy", "xlog1py",
           "entr", "sinc", "i0", "i0e", "i1", "i1e", "logsumexp", "softmax", "log_softmax",
           "expm1", "exp2", "log1p", "round", "airy_ai", "bessel_j0", "bessel_j1", "bessel_y0",
           "bessel_y1", "modified_bessel_i0", "modified_bessel_i1", "modified_bessel_k0",
           "modified_bessel_k1", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1",
           "spherical_bessel_j0", "chebyshev_polynomial_t", "chebyshev_polynomial_u",
           "chebyshev_polynomial_v", "chebyshev_polynomial_w", "shifted_chebyshev_polynomial_t",
           "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
           "shifted_chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he",
           "laguerre_polynomial_l", "legendre_polynomial_p", "zeta", "gammainc", "gammaincc"]

# torch's top-level functions and Tensor methods of these (minidl/__init__.py, tensor.py)
TENSOR_METHODS = {"erf": erf, "erfc": erfc, "erfinv": erfinv, "lgamma": lgamma,
                  "digamma": digamma, "polygamma": lambda self, n: polygamma(n, self),
                  "logit": logit, "i0": i0, "sinc": sinc, "mvlgamma": mvlgamma,
                  "igamma": igamma, "igammac": igammac}
FUNCTIONS = dict(TENSOR_METHODS, polygamma=polygamma)


def _out_form(fn):
    """``fn`` taking torch's ``out=``: the result written into ``out`` (resized and cast as
    torch's rules allow), refused where autograd would have to see through it."""
    @functools.wraps(fn)
    def form(*args, out=None, **kwargs):
        if out is None:
            return fn(*args, **kwargs)
        return write_out(fn.__name__, out, lambda: fn(*args, **kwargs),
                         [*args, *kwargs.values()])
    return form


# torch.special's functions take out= (all but softmax and log_softmax), and so do the
# top-level forms (minidl.erf(x, out=y), as torch.erf)
for _name in __all__:
    if _name not in ("softmax", "log_softmax"):
        globals()[_name] = _out_form(globals()[_name])
lgamma, mvlgamma, igamma, igammac = gammaln, multigammaln, gammainc, gammaincc
FUNCTIONS = {name: _out_form(fn) for name, fn in FUNCTIONS.items()}
del _name
