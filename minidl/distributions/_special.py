"""The special functions the distributions need and minidl's ops lack: softplus, erf, erfinv,
lgamma and digamma, each one private Function (forward and backward side by side).

On NumPy the values are float64-accurate: erf and lgamma come from Python's ``math`` (exact
to the last bits), erfinv is a rational first guess polished by Newton steps on erf, digamma
and trigamma are recurrences up to x >= 12 and then their asymptotic series. On CuPy they come
from ``cupyx.scipy.special``; any other array module (the tests' fake GPU) computes on the
host and moves the result back. 16-bit inputs are computed in float32.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Function, unbroadcast
from ..backend import get_array_module
from ..ops import stable_sigmoid


def _wide(x):
    return x.astype(np.float32) if x.dtype.itemsize == 2 else x


def _on_host(xp, name, x, numpy_fn):
    """``numpy_fn`` of an array of any module: cupyx's own where there is one."""
    if xp is np:
        return numpy_fn(x)
    try:  # a real CuPy
        import cupyx.scipy.special as special

        return getattr(special, name)(x)
    except ImportError:
        return xp.asarray(numpy_fn(xp.asnumpy(x)))


def _elementwise(fn, x):
    out = np.frompyfunc(fn, 1, 1)(np.asarray(x, dtype=np.float64))
    return np.asarray(out, dtype=np.float64).astype(x.dtype, copy=False)


def _lgamma_scalar(v):
    if v <= 0 and v == math.floor(v):  # poles: torch gives inf
        return math.inf
    if math.isinf(v):
        return math.inf
    if math.isnan(v):
        return math.nan
    return math.lgamma(v)


def _np_erf(x):
    return _elementwise(math.erf, x)


def _np_lgamma(x):
    return _elementwise(_lgamma_scalar, x)


# Giles' single-precision erfinv ("Approximating the erfinv function", 2010) as a first guess
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                   0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844,
                0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def _np_erfinv(x):
    y = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = -np.log((1.0 - y) * (1.0 + y))
        central, tail = w - 2.5, np.sqrt(np.maximum(w, 0)) - 3.0
        p1 = np.full_like(y, _ERFINV_CENTRAL[0])
        p2 = np.full_like(y, _ERFINV_TAIL[0])
        for a, b in zip(_ERFINV_CENTRAL[1:], _ERFINV_TAIL[1:]):
            p1 = p1 * central + a
            p2 = p2 * tail + b
        r = np.where(w < 5.0, p1, p2) * y
        finite = np.isfinite(r) & (np.abs(y) < 1)
        r = np.where(finite, r, 0.0)
        # Newton on erf(r) = y, quadratic convergence to float64; near |y| = 1 on
        # erfc(|r|) = 1 - |y| instead, whose right side keeps its digits there
        a, tail_side = np.abs(r), np.abs(y) >= 0.5
        for _ in range(3):
            err = np.where(tail_side, (1 - np.abs(y)) - _elementwise(math.erfc, a),
                           _elementwise(math.erf, a) - np.abs(y))
            a = a - np.where(finite, err / (2 / math.sqrt(math.pi) * np.exp(-a * a)), 0.0)
        r = np.copysign(a, y)
        r = np.where(np.abs(y) == 1, np.copysign(np.inf, y), r)
        r = np.where((np.abs(y) > 1) | np.isnan(y), np.nan, r)
    return r.astype(x.dtype, copy=False)


def _shifted_series(x, order):
    """digamma (order 0) or trigamma (order 1) of float64 ``x`` (NumPy): shift up to x >= 6 by
    the recurrence, then the asymptotic series; reflection for negative x."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        neg = x < 0
        z = np.where(neg, 1 - x, x)
        acc = np.zeros_like(z)
        for _ in range(12):
            small = z < 12
            acc = acc + np.where(small, 1 / z if order == 0 else 1 / (z * z), 0.0)
            z = np.where(small, z + 1, z)
        inv, inv2 = 1 / z, 1 / (z * z)
        if order == 0:
            series = np.log(z) - 0.5 * inv - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (
                1 / 252 - inv2 * (1 / 240 - inv2 * (1 / 132)))))
            out = series - acc
            # psi(1 - x) - psi(x) = pi cot(pi x)
            out = np.where(neg, out - math.pi / np.tan(math.pi * x), out)
        else:
            series = inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 * (
                1 / 42 - inv2 * (1 / 30))))
            out = series + acc
            # psi'(1 - x) + psi'(x) = pi^2 / sin^2(pi x)
            out = np.where(neg, -out + (math.pi / np.sin(math.pi * x)) ** 2, out)
        pole = (x <= 0) & (x == np.floor(x))
        out = np.where(pole, np.nan if order == 0 else np.inf, out)
    return out


def _np_digamma(x):
    return _shifted_series(x, 0).astype(x.dtype, copy=False)


def _np_trigamma(x):
    return _shifted_series(x, 1).astype(x.dtype, copy=False)


def erf_array(x):
    xp = get_array_module(x)
    return _on_host(xp, "erf", _wide(x), _np_erf).astype(x.dtype, copy=False)


def erfinv_array(x):
    xp = get_array_module(x)
    return _on_host(xp, "erfinv", _wide(x), _np_erfinv).astype(x.dtype, copy=False)


def lgamma_array(x):
    xp = get_array_module(x)
    return _on_host(xp, "gammaln", _wide(x), _np_lgamma).astype(x.dtype, copy=False)


def digamma_array(x):
    xp = get_array_module(x)
    return _on_host(xp, "digamma", _wide(x), _np_digamma).astype(x.dtype, copy=False)


def trigamma_array(x):
    xp = get_array_module(x)
    if xp is not np:
        try:
            import cupyx.scipy.special as special

            return special.polygamma(1, _wide(x)).astype(x.dtype, copy=False)
        except ImportError:
            return xp.asarray(_np_trigamma(xp.asnumpy(_wide(x)))).astype(x.dtype, copy=False)
    return _np_trigamma(_wide(x)).astype(x.dtype, copy=False)


class Softplus(Function):
    """log(1 + e^x) as max(x, 0) + log1p(e^-|x|): no overflow, and all its digits for x << 0."""

    def forward(self, x):
        xp = get_array_module(x)
        self.save_for_backward(x)
        return (xp.maximum(x, 0) + xp.log1p(xp.exp(-abs(x)))).astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved
        return g * stable_sigmoid(x)


class Log1p(Function):
    """log(1 + x), all its digits for small |x|."""

    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).log1p(x)

    def backward(self, g):
        (x,) = self.saved
        return g / (1 + x)


class Expm1(Function):
    """e^x - 1, all its digits for small |x|."""

    def forward(self, x):
        y = get_array_module(x).expm1(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return g * (y + 1)


class Atan(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).arctan(x)

    def backward(self, g):
        (x,) = self.saved
        return g / (1 + x * x)


class Tan(Function):
    def forward(self, x):
        y = get_array_module(x).tan(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return g * (1 + y * y)


def atan(x):
    return Atan.apply(x)


def tan(x):
    return Tan.apply(x)


def log1p(x):
    return Log1p.apply(x)


def expm1(x):
    return Expm1.apply(x)


class Erf(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return erf_array(x)

    def backward(self, g):
        (x,) = self.saved
        xp = get_array_module(x)
        return g * (2 / math.sqrt(math.pi)) * xp.exp(-x * x)


class Erfinv(Function):
    def forward(self, x):
        y = erfinv_array(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        xp = get_array_module(y)
        return g * (math.sqrt(math.pi) / 2) * xp.exp(y * y)


class Lgamma(Function):
    """log|Gamma(x)|; its derivative is digamma."""

    def forward(self, x):
        self.save_for_backward(x)
        return lgamma_array(x)

    def backward(self, g):
        (x,) = self.saved
        return g * digamma_array(x)


class Digamma(Function):
    """d/dx log Gamma(x); its derivative is trigamma."""

    def forward(self, x):
        self.save_for_backward(x)
        return digamma_array(x)

    def backward(self, g):
        (x,) = self.saved
        return g * trigamma_array(x)


class Xlogy(Function):
    """x log(y), 0 where x is 0 (also at y = 0), as torch.xlogy; d/dx is log(y) everywhere."""

    def forward(self, x, y):
        xp = get_array_module(x, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            logy = xp.log(y)
            out = xp.where(x == 0, 0, x * logy)
        self.save_for_backward(x, y)
        self.shapes = (x.shape, y.shape)
        return out.astype(xp.result_type(x, y), copy=False)

    def backward(self, g):
        x, y = self.saved
        xp = get_array_module(x, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            gx = g * xp.log(y)
            gy = xp.where(x == 0, 0, g * x / y)
        return unbroadcast(gx, self.shapes[0]), unbroadcast(gy, self.shapes[1])


def xlogy(x, y):
    return Xlogy.apply(x, y)


def softplus(x):
    return Softplus.apply(x)


def erf(x):
    return Erf.apply(x)


def erfinv(x):
    return Erfinv.apply(x)


def lgamma(x):
    return Lgamma.apply(x)


def digamma(x):
    return Digamma.apply(x)


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
        term = np.exp(a * logx - x - _np_lgamma(a + 1))
        psi = _np_digamma(a + 1)
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
        log_density = (a - 1) * logx - x - _np_lgamma(a)
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

    def forward(self, alpha):
        from ..backend import rng

        xp = get_array_module(alpha)
        host = alpha if xp is np else xp.asnumpy(alpha)
        draws = rng().standard_gamma(np.asarray(host, dtype=np.float64))
        tiny = np.finfo(alpha.dtype).tiny  # torch clamps a draw that underflows to tiny
        x = xp.asarray(np.maximum(draws, tiny).astype(alpha.dtype))
        self.save_for_backward(x, alpha)
        return x

    def backward(self, g):
        x, alpha = self.saved
        return g * standard_gamma_grad_array(x, alpha)


def standard_gamma(alpha):
    return StandardGamma.apply(alpha)
