"""The rest of torch.special on arrays: Bessel functions J0, J1, Y0, Y1, K0, K1 (and e^x K),
Airy Ai, the spherical j0, the orthogonal polynomials (Chebyshev T/U/V/W and their shifted
forms, Hermite H and He, Laguerre L, Legendre P), the Hurwitz zeta function and the
regularized incomplete gamma functions P(a, x), Q(a, x).

Each is written on the array module of its input, in float64 (the polynomials run in their
input's dtype, step for step as torch's recurrences, so that float32 rounds as there):

- J and Y: the power series (with its logarithmic part for Y) up to |x| = 2, Miller's backward
  recurrence normalised by (x/2)^nu = sum_k (nu + 2k) Gamma(nu + k) / k! J_{nu+2k}(x) up to 25
  (the Neumann series of Y0 and Y1 summed in the same pass), Hankel's asymptotic expansion
  above, its phase taken from sin x and cos x (exact argument reduction) rather than x - pi/4.
- K: the series up to 2; above, the trapezoidal rule on e^x K_nu(x) = int_0^inf
  exp(-2x sinh^2(t/2)) cosh(nu t) dt, which converges geometrically fast for this entire
  integrand (the step scales with its width, so one rule serves every x > 2).
- Ai: Maclaurin's series for |x| <= 1 (and -2 <= x < 0), sqrt(x/3)/pi K_{1/3}(2/3 x^{3/2})
  above, (sqrt|x|/3) (J_{1/3} + J_{-1/3})(2/3 |x|^{3/2}) below.
- zeta(s, q): the first terms summed until q + k > 9, the rest by Euler-Maclaurin with 12
  Bernoulli terms.
- P and Q: the series of P below x = a + 1 (of Q itself for a < 1, where 1 - P would lose Q's
  digits), Legendre's continued fraction of Q above; the factor x^a e^-x / Gamma(a) from
  Stirling's series for a >= 20, so that a log x - x - lgamma(a) keeps its digits; above
  a = 1e6, Temme's uniform asymptotic expansion (two terms, error O(a^-2)).
"""
from __future__ import annotations

import functools
import math

import numpy as np

_EULER = 0.57721566490153286061
_TWO_OVER_PI = 2 / math.pi


# ---- Bessel J and Y ------------------------------------------------------------------------
def _jy_series(xp, x):
    """J0, J1, Y0, Y1 for 0 < x <= 2 by their power series (A&S 9.1.10-11)."""
    q = -x * x / 4
    t0 = xp.ones_like(x)  # (-x^2/4)^k / (k!)^2
    t1 = xp.ones_like(x)  # (-x^2/4)^k / (k! (k+1)!)
    j0, j1s = t0.copy(), t1.copy()
    y0s = xp.zeros_like(x)
    y1s = (1 - 2 * _EULER) * t1  # (psi(1) + psi(2)) t1
    harmonic = 0.0
    for k in range(1, 26):
        t0 = t0 * q / (k * k)
        t1 = t1 * q / (k * (k + 1))
        harmonic += 1 / k
        j0 = j0 + t0
        j1s = j1s + t1
        y0s = y0s + harmonic * t0
        y1s = y1s + (2 * (harmonic - _EULER) + 1 / (k + 1)) * t1
    j1 = x / 2 * j1s
    log_half = xp.log(x) - math.log(2)  # not log(x / 2): x / 2 underflows at 5e-324
    y0 = _TWO_OVER_PI * ((log_half + _EULER) * j0 - y0s)
    y1 = -_TWO_OVER_PI / x + _TWO_OVER_PI * log_half * j1 - x / (2 * math.pi) * y1s
    return j0, j1, y0, y1

# erfc in float64, from minidl.special (which imports this module and sets it: one arrow)
_erfc64 = None


def _miller(xp, nu, x, neumann=False):
    """J_nu(x) and J_{nu+1}(x) for 1 < x < 30 by the backward recurrence
    f_{m-1} = 2 (nu + m) / x f_m - f_{m+1} from far above, normalised by (A&S 9.1.87)
    (x/2)^nu = sum_k c_k J_{nu+2k}; with ``neumann`` (nu = 0) also the sums
    S0 = sum_k>=1 (-1)^k J_2k / k and S1 = sum_k>=1 (-1)^(k+1) (2k+1)/(k(k+1)) J_2k+1 of
    the Neumann series of Y0 and Y1."""
    top = 0.0 if x.size == 0 else float(xp.max(x))
    n = 2 * ((int(1.2 * top) + 40) // 2)
    f_up = xp.zeros_like(x)
    f = xp.full_like(x, 1e-30)
    norm = xp.zeros_like(x)
    s0 = xp.zeros_like(x)
    s1 = xp.zeros_like(x)
    f1 = f0 = None
    for m in range(n, -1, -1):
        if m % 2 == 0:
            k = m // 2
            c = math.gamma(nu + 1) if k == 0 else (nu + 2 * k) * math.gamma(nu + k) / math.factorial(k)
            norm = norm + c * f
            if neumann and k >= 1:
                s0 = s0 + (-1) ** k / k * f
        elif neumann and m >= 3:
            k = (m - 1) // 2
            s1 = s1 + (-1) ** (k + 1) * (2 * k + 1) / (k * (k + 1)) * f
        if m == 1:
            f1 = f
        if m == 0:
            f0 = f
            break
        f, f_up = 2 * (nu + m) / x * f - f_up, f
        big = xp.abs(f) > 1e200
        if bool(big.any()):
            scale = xp.where(big, 1e-200, 1.0)
            f, f_up, norm, s0, s1 = f * scale, f_up * scale, norm * scale, s0 * scale, s1 * scale
            if f1 is not None:
                f1 = f1 * scale
    unit = (x / 2) ** nu / norm
    return f0 * unit, f1 * unit, s0 * unit, s1 * unit


def _hankel(xp, nu, x, terms=30):
    """sqrt(2 / (pi x)) (P, Q) and the phase's cos and sin for J_nu and Y_nu at x >= 25
    (A&S 9.2.5-10): J = amp (P cos chi - Q sin chi), Y = amp (P sin chi + Q cos chi)."""
    mu = 4.0 * nu * nu
    t = xp.ones_like(x)
    p, q = t.copy(), xp.zeros_like(x)
    for k in range(1, terms):
        t = t * (mu - (2 * k - 1) ** 2) / (8 * k * x)
        sign = 1 if (k // 2) % 2 == 0 else -1
        if k % 2 == 0:
            p = p + sign * t
        else:
            q = q + sign * t
    phi = (nu / 2 + 0.25) * math.pi  # chi = x - phi, from sin x and cos x reduced exactly
    c, s = xp.cos(x), xp.sin(x)
    cos_chi = c * math.cos(phi) + s * math.sin(phi)
    sin_chi = s * math.cos(phi) - c * math.sin(phi)
    amp = xp.sqrt(_TWO_OVER_PI / x)
    return amp * (p * cos_chi - q * sin_chi), amp * (p * sin_chi + q * cos_chi)


def bessel_jy(xp, x, which):
    """J0, J1, Y0 or Y1 (``which``) of a float64 array."""
    ax = xp.abs(x)
    out = xp.full_like(x, xp.nan)
    small = (ax > 0) & (ax <= 2)
    mid = (ax > 2) & (ax < 25)
    big = (ax >= 25) & xp.isfinite(ax)
    nu = 0 if which in ("j0", "y0") else 1
    is_j = which[0] == "j"
    with np.errstate(all="ignore"):
        if bool(small.any()):
            vals = _jy_series(xp, ax[small])
            out[small] = vals[(0, 1, 2, 3)[nu + (0 if is_j else 2)]]
        if bool(mid.any()):
            j0, j1, s0, s1 = _miller(xp, 0.0, ax[mid], neumann=True)
            a = ax[mid]
            log_term = xp.log(a / 2) + _EULER
            if which == "j0":
                out[mid] = j0
            elif which == "j1":
                out[mid] = j1
            elif which == "y0":
                out[mid] = _TWO_OVER_PI * (log_term * j0 - 2 * s0)
            else:
                out[mid] = _TWO_OVER_PI * (-j0 / a + (log_term - 1) * j1 + s1)
        if bool(big.any()):
            j, y = _hankel(xp, float(nu), ax[big])
            out[big] = j if is_j else y
    # NaN at +-inf (the phase is undefined there), as torch's
    if is_j:
        out = xp.where(ax == 0, 1.0 if nu == 0 else 0.0, out)
        if nu == 1:  # J1 is odd (J1(-0) = -0)
            out = xp.where(xp.signbit(x), -out, out)
    else:  # Y is real only for x > 0: -inf at 0, NaN below, as torch
        out = xp.where(ax == 0, -xp.inf, xp.where(x < 0, xp.nan, out))
    return out


# ---- modified Bessel K ---------------------------------------------------------------------
def _ik_series(xp, x):
    """K0 and K1 for 0 < x <= 2 by their series (A&S 9.6.13, 9.6.11)."""
    q = x * x / 4
    t0 = xp.ones_like(x)  # (x^2/4)^k / (k!)^2
    t1 = xp.ones_like(x)  # (x^2/4)^k / (k! (k+1)!)
    i0, i1s = t0.copy(), t1.copy()
    k0s = xp.zeros_like(x)
    k1s = (1 - 2 * _EULER) * t1
    harmonic = 0.0
    for k in range(1, 26):
        t0 = t0 * q / (k * k)
        t1 = t1 * q / (k * (k + 1))
        harmonic += 1 / k
        i0 = i0 + t0
        i1s = i1s + t1
        k0s = k0s + harmonic * t0
        k1s = k1s + (2 * (harmonic - _EULER) + 1 / (k + 1)) * t1
    log_half = xp.log(x) - math.log(2)  # not log(x / 2): x / 2 underflows at 5e-324
    k0 = -(log_half + _EULER) * i0 + k0s
    k1 = 1 / x + log_half * x / 2 * i1s - x / 4 * k1s
    return k0, k1


def scaled_k_integral(xp, nu, x, nodes=40):
    """e^x K_nu(x) for x > ~0.5 by the trapezoidal rule on
    int_0^inf exp(-2x sinh^2(t/2)) cosh(nu t) dt, cut where the integrand is below e^-45;
    above 1e8, where the nodes would crowd into underflow, the asymptotic series
    sqrt(pi / 2x) (1 + (4 nu^2 - 1) / 8x + (4 nu^2 - 1)(4 nu^2 - 9) / (2 (8x)^2))."""
    huge = x > 1e8
    xs = xp.where(huge, 1.0, x)
    u = 45 / xs
    h = xp.log1p(u + xp.sqrt(u * (2 + u))) / nodes  # arccosh(1 + u), exact for small u
    total = 0.5 * xp.ones_like(xs)
    for j in range(1, nodes + 1):
        t = j * h
        total = total + xp.exp(-2 * xs * xp.sinh(t / 2) ** 2) * (xp.cosh(nu * t) if nu else 1.0)
    mu = 4 * nu * nu
    xl = xp.where(huge, x, 1e8)
    series = 1 + (mu - 1) / (8 * xl) * (1 + (mu - 9) / (16 * xl))
    return xp.where(huge, xp.sqrt(math.pi / 2 / xl) * series, h * total)


def bessel_k(xp, x, nu, scaled):
    """K0 or K1 (nu) of a float64 array, times e^x when ``scaled``: inf at 0, NaN below."""
    out = xp.full_like(x, xp.nan)
    small = (x > 0) & (x <= 2)
    big = (x > 2) & xp.isfinite(x)
    with np.errstate(all="ignore"):
        if bool(small.any()):
            xs = x[small]
            v = _ik_series(xp, xs)[nu]
            out[small] = v * xp.exp(xs) if scaled else v
        if bool(big.any()):
            xb = x[big]
            v = scaled_k_integral(xp, float(nu), xb)
            out[big] = v if scaled else v * xp.exp(-xb)
    out = xp.where(x == 0, xp.inf, out)
    out = xp.where(x == xp.inf, 0.0, out)
    return xp.where(x < 0, xp.nan, out)


# ---- Airy Ai --------------------------------------------------------------------------------
_AI0 = 1 / (3 ** (2 / 3) * math.gamma(2 / 3))  # Ai(0)
_AIP0 = 1 / (3 ** (1 / 3) * math.gamma(1 / 3))  # -Ai'(0)


def _airy_maclaurin(xp, x):
    x3 = x * x * x
    tf = xp.ones_like(x)
    tg = x.copy()
    f, g = tf.copy(), tg.copy()
    for k in range(1, 40):
        tf = tf * x3 / ((3 * k - 1) * (3 * k))
        tg = tg * x3 / ((3 * k) * (3 * k + 1))
        f = f + tf
        g = g + tg
    return _AI0 * f - _AIP0 * g


def airy_ai(xp, x):
    out = xp.full_like(x, xp.nan)
    series = (x >= -2) & (x <= 1)
    right = (x > 1) & xp.isfinite(x)
    left_mid = (x < -2) & (x > -8.5)
    left_far = (x <= -8.5) & xp.isfinite(x)
    with np.errstate(all="ignore"):
        if bool(series.any()):
            out[series] = _airy_maclaurin(xp, x[series])
        if bool(right.any()):
            xr = x[right]
            zeta = 2 / 3 * xr * xp.sqrt(xr)
            out[right] = (xp.sqrt(xr / 3) / math.pi * xp.exp(-zeta)
                          * scaled_k_integral(xp, 1 / 3, zeta))
        if bool(left_mid.any()):
            a = -x[left_mid]
            zeta = 2 / 3 * a * xp.sqrt(a)
            jp = _miller(xp, 1 / 3, zeta)[0]
            jm = _miller(xp, -1 / 3, zeta)[0]
            out[left_mid] = xp.sqrt(a) / 3 * (jp + jm)
        if bool(left_far.any()):
            a = -x[left_far]
            zeta = 2 / 3 * a * xp.sqrt(a)
            jp = _hankel(xp, 1 / 3, zeta)[0]
            jm = _hankel(xp, -1 / 3, zeta)[0]
            out[left_far] = xp.sqrt(a) / 3 * (jp + jm)
    # e^-zeta underflows long before: 0, not 0 * inf (torch's 0; NaN at +-inf)
    return xp.where((x > 110) & xp.isfinite(x), 0.0, out)


def spherical_bessel_j0(xp, x):
    """sin(x) / x, by its Taylor polynomial below 1/2 (exact 1 at 0), 0 at +-inf."""
    x2 = x * x
    poly = 1 + x2 * (-1 / 6 + x2 * (1 / 120 + x2 * (-1 / 5040 + x2 * (
        1 / 362880 + x2 * (-1 / 39916800 + x2 / 6227020800)))))
    with np.errstate(all="ignore"):
        out = xp.where(xp.abs(x) < 0.5, poly, xp.sin(x) / x)
    return xp.where(xp.isinf(x), 0.0, out)


# ---- orthogonal polynomials -----------------------------------------------------------------
def _degree(xp, n, nan_is_negative=True):
    """torch's static_cast<int64_t>(n): truncation; NaN and inf (out of range) become
    negative, whose polynomial is 0."""
    if n.dtype.kind in "iub":
        return n.astype(np.int64)
    bad = ~xp.isfinite(n) | (xp.abs(n) >= 2.0 ** 63)
    return xp.where(bad, -1, xp.trunc(xp.where(bad, 0, n))).astype(np.int64)


def _three_term(xp, n, p, q, step):
    """The value after n - 1 steps (p, q) -> (q, step(j, q, p)), j = 1 .. n - 1, for each
    element's own n (n >= 2); elements that turned NaN stay NaN, and the loop ends once all
    have, as torch's loops stop."""
    for j in range(1, int(n.max()) if n.size else 0):
        go = j < n
        if not bool((go & ~xp.isnan(q)).any()):
            break
        new = step(j, q, p)
        p, q = xp.where(go, q, p), xp.where(go, new, q)
    return q


def _prepared(xp, x, n):
    shape = np.broadcast_shapes(x.shape, n.shape)
    return xp.broadcast_to(x, shape), xp.broadcast_to(n, shape)


def chebyshev(xp, kind, x, n, shifted):
    """torch.special.(shifted_)chebyshev_polynomial_{t,u,v,w} in x's dtype: the recurrence
    r = 2y r1 - r2 (y = x, or 2x - 1 shifted), torch's closed forms in acos(y) for high
    degrees inside (-1, 1), and its values at the ends y = +-1."""
    x, n = _prepared(xp, x, n)
    one, half = x.dtype.type(1), x.dtype.type(0.5)
    nf = n.astype(x.dtype)
    y = (x + x - one) if shifted else x
    even = n % 2 == 0
    up = (x == one) if shifted else (xp.abs(x) == one) & (x > 0)
    down = (x == 0) if shifted else (xp.abs(x) == one) & ~(x > 0)
    two_n1 = nf + nf + one
    sign = xp.where(even, one, -one)
    at_up, at_down = {"t": (one + 0 * nf, sign), "u": (nf + one, sign * (nf + one)),
                      "v": (one + 0 * nf, sign * two_n1), "w": (two_n1, sign)}[kind]
    cut = (4 if kind == "w" else 6) if shifted else (6 if kind == "t" else 8)
    closed = ~(up | down) & (n > cut) & (xp.abs(y) < one)
    two_y = y + y
    first = {"t": y, "u": two_y, "v": two_y - one, "w": two_y + one}[kind]
    with np.errstate(all="ignore"):
        out = xp.where(n == 0, one, first)
        rec = ~(up | down) & ~closed & (n >= 2)
        if bool(rec.any()):
            ty = two_y[rec]
            out[rec] = _three_term(xp, n[rec], xp.ones_like(ty), first[rec],
                                   lambda j, q, p: ty * q - p)
        if bool(closed.any()):
            theta = xp.arccos(y)
            if kind == "t":
                form = xp.cos(nf * theta)
            elif kind == "u":
                s = xp.sin(theta)
                form = xp.where(s != 0, xp.sin((nf + one) * theta) / s,
                                (nf + one) * xp.cos((nf + one) * theta) / y)
            elif kind == "v":
                form = xp.where(xp.sin(theta / 2) != one,
                                xp.cos((nf + half) * theta) / xp.cos(theta / 2), at_down)
            else:
                edge = at_down if shifted else xp.where(x > 0, two_n1, at_down)
                form = xp.where(xp.cos(theta / 2) != one,
                                xp.sin((nf + half) * theta) / xp.sin(theta / 2), edge)
            out = xp.where(closed, form, out)
    out = xp.where(up, at_up, xp.where(down, at_down, out))
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def hermite(xp, x, n, physicists):
    """H_n (physicists') or He_n: NaN above degree 512 (128 in float32), as torch."""
    x, n = _prepared(xp, x, n)
    limit = 128 if x.dtype == np.float32 else 512
    first = x + x if physicists else x.copy()
    with np.errstate(all="ignore"):
        out = xp.where(n == 0, x.dtype.type(1), first)
        rec = (n >= 2) & (n <= limit)
        if bool(rec.any()):
            xs = x[rec]
            if physicists:
                def step(j, q, p):
                    return (xs + xs) * q - (2 * j) * p
            else:
                def step(j, q, p):
                    return xs * q - j * p
            out[rec] = _three_term(xp, n[rec], xp.ones_like(xs), first[rec], step)
    out = xp.where(n > limit, xp.nan, out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def laguerre(xp, x, n):
    x, n = _prepared(xp, x, n)
    one = x.dtype.type(1)
    with np.errstate(all="ignore"):
        out = xp.where(n == 0, one, one - x)
        rec = (n >= 2) & (x != 0)
        if bool(rec.any()):
            om = one - x[rec]
            out[rec] = _three_term(xp, n[rec], xp.ones_like(om), om.copy(),
                                   lambda j, q, p: (((j + j) + om) * q - j * p) / (j + 1))
    out = xp.where(x == 0, one, out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def legendre(xp, x, n):
    x, n = _prepared(xp, x, n)
    one = x.dtype.type(1)
    with np.errstate(all="ignore"):
        out = xp.where(n == 0, one, x)
        ends = xp.abs(x) == one
        rec = (n >= 2) & ~ends
        if bool(rec.any()):
            xs = x[rec]
            out[rec] = _three_term(xp, n[rec], xp.ones_like(xs), xs.copy(),
                                   lambda j, q, p: ((j + j + 1) * xs * q - j * p) / (j + 1))
    out = xp.where(ends, xp.where((x > 0) | (n % 2 == 0), one, -one), out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


# ---- Hurwitz zeta ---------------------------------------------------------------------------
# B_2j / (2j)! for j = 1 .. 12 (the Euler-Maclaurin corrections)
_EM = tuple(b / math.factorial(2 * j) for j, b in enumerate(
    (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798,
     -174611 / 330, 854513 / 138, -236364091 / 2730), 1))
_EPS = 2.0 ** -53


def zeta(xp, s, q):
    """sum_k (q + k)^-s elementwise (float64 arrays of one shape): inf at s = 1 and at the
    non-positive integers q, NaN for s < 1 and for a negative q with a fractional s."""
    s, q = np.broadcast_arrays(s, q) if xp is np else xp.broadcast_arrays(s, q)
    s, q = s.copy(), q.copy()
    below = s < 1
    pole = (s == 1) | (~below & (q <= 0) & (q == xp.floor(q)))
    bad = below | xp.isnan(s) | xp.isnan(q) | ((q <= 0) & (s != xp.floor(s)))
    ok = ~pole & ~bad
    out = xp.where(pole, xp.inf, xp.nan)
    if not bool(ok.any()):
        return out
    sv, qv = s[ok], q[ok]
    with np.errstate(all="ignore"):
        total = qv ** -sv
        w = qv.copy()
        b = xp.zeros_like(qv)
        done = xp.zeros(qv.shape, bool)
        steps = max(9, int(math.ceil(9 - float(qv.min()))) + 1)
        for i in range(1, steps + 1):
            go = ~done & ((i <= 9) | (w <= 9))
            if not bool(go.any()):
                break
            w = xp.where(go, w + 1, w)
            b = xp.where(go, w ** -sv, b)
            total = xp.where(go, total + b, total)
            # converged: the rest is below the last digit
            done = done | (go & (xp.abs(b) < _EPS * xp.abs(total)))
        tail = b * w / (sv - 1) - 0.5 * b
        rising = xp.ones_like(sv)
        power = b / w
        for j, c in enumerate(_EM):
            rising = rising * (sv + 2 * j) if j == 0 else rising * (sv + 2 * j - 1) * (sv + 2 * j)
            tail = tail + c * rising * power
            power = power / (w * w)
        total = xp.where(done, total, total + tail)
    out[ok] = total
    return out


# ---- regularized incomplete gamma ------------------------------------------------------------
@functools.cache
def _zeta_ints(count=60):
    """zeta(2), ..., zeta(count + 1) in float64 (computed once, on first use)."""
    ks = np.arange(2, count + 2, dtype=np.float64)
    return tuple(float(v) for v in zeta(np, ks, np.ones_like(ks)))


def lgamma1p(xp, a, lgamma64):
    """lgamma(1 + a), exact in relative terms for small |a| (log Gamma(1 + a) = -gamma a +
    sum_k>=2 (-1)^k zeta(k) a^k / k), lgamma(1 + a) elsewhere."""
    small = xp.abs(a) < 0.2
    av = xp.where(small, a, 0.0)
    series = xp.zeros_like(av)
    power = -av
    for k, z in enumerate(_zeta_ints(), 2):
        power = power * -av
        series = series + z * power / k
    return xp.where(small, -_EULER * av + series, lgamma64(xp, 1 + a))


def _log1p_minus(xp, t):
    """log(1 + t) - t, by its series for |t| < 0.3 (no cancellation)."""
    small = xp.abs(t) < 0.3
    ts = xp.where(small, t, 0.0)
    power = ts * ts
    series = -power / 2
    for k in range(3, 50):
        power = power * -ts
        series = series - power / k
    with np.errstate(all="ignore"):
        return xp.where(small, series, xp.log1p(t) - t)


def igam_log_factor(xp, a, x, lgamma64):
    """log(x^a e^-x / Gamma(a)); from Stirling's series for a >= 20, where a log x, x and
    lgamma(a) would be three large numbers whose difference lost its digits."""
    with np.errstate(all="ignore"):
        direct = a * xp.log(x) - x - lgamma64(xp, a)
        big = a >= 20
        ab = xp.where(big, a, 20.0)
        r = 1 / (ab * ab)
        corr = (1 / 12 - r * (1 / 360 - r * (1 / 1260 - r * (1 / 1680 - r * (
            1 / 1188 - r * 691 / 360360))))) / ab
        t = (x - ab) / ab
        # a (log(1 + t) - t): by its series near x = a, directly where nothing cancels
        main = xp.where(xp.abs(t) < 0.3, ab * _log1p_minus(xp, t), ab * xp.log(x / ab) + ab - x)
        stirling = main + 0.5 * xp.log(ab / (2 * math.pi)) - corr
        return xp.where(big, stirling, direct)


def _p_series(xp, a, x, logf):
    """P(a, x) = x^a e^-x / Gamma(a + 1) sum_k x^k / ((a + 1) ... (a + k))."""
    term = xp.ones_like(a)
    total = term.copy()
    k = 0
    while True:
        k += 1
        term = term * x / (a + k)
        total = total + term
        if not bool((term > _EPS * total).any()) or k > 100000:
            break
    return xp.exp(logf) / a * total


def _q_fraction(xp, a, x, logf):
    """Q(a, x) = x^a e^-x / Gamma(a) / (x + 1 - a - 1 (1 - a) / (x + 3 - a - ...)), by
    Lentz's method."""
    tiny = 1e-300
    b = x + 1 - a
    c = xp.full_like(x, 1 / tiny)
    d = 1 / b
    h = d.copy()
    done = xp.zeros(x.shape, bool)
    for i in range(1, 100000):
        an = -i * (i - a)
        b = b + 2
        d = an * d + b
        d = xp.where(xp.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = xp.where(xp.abs(c) < tiny, tiny, c)
        d = 1 / d
        delta = d * c
        h = xp.where(done, h, h * delta)  # a converged element stops (no drift of rounding)
        done = done | (xp.abs(delta - 1) <= _EPS) | xp.isnan(delta)
        if bool(done.all()):
            break
    return xp.exp(logf) * h


def _q_small(xp, a, x, lgamma64):
    """Q(a, x) for a < 1, x < 2 from P's alternating series, with its first term
    1 - x^a / Gamma(a + 1) = -expm1(a log x - lgamma(1 + a)) taken whole."""
    with np.errstate(all="ignore"):
        u = a * xp.log(x) - lgamma1p(xp, a, lgamma64)
        head = -xp.expm1(u)
        term = xp.ones_like(x)
        total = xp.zeros_like(x)
        for n in range(1, 60):
            term = term * -x / n
            total = total + term / (a + n)
        return head - a * xp.exp(u) * total


def _temme(xp, a, x, upper):
    """P(a, x) (or Q) for a > 1e6 by Temme's uniform asymptotic expansion (DLMF 8.12):
    Q = erfc(eta sqrt(a/2)) / 2 + e^(-a eta^2/2) / sqrt(2 pi a) (C0(eta) + C1(eta) / a), with
    eta^2 / 2 = lambda - 1 - log(lambda), lambda = x / a; its error is O(a^-2)."""
    t = (x - a) / a
    eta = xp.sign(t) * xp.sqrt(-2 * _log1p_minus(xp, t))
    near = xp.abs(eta) < 1e-2
    # the closed forms lose digits to cancellation near eta = 0: their Taylor series there
    e = xp.where(near, eta, 0.0)
    c0_series = -1 / 3 + e * (1 / 12 + e * (-2 / 135 + e * (1 / 864 + e / 2835)))
    c1_series = -1 / 540 + e * (-1 / 288 + e / 378)
    safe_t, safe_eta = xp.where(near, 1.0, t), xp.where(near, 1.0, eta)
    c0 = 1 / safe_t - 1 / safe_eta
    c1 = 1 / safe_eta ** 3 - 1 / safe_t ** 3 - 1 / safe_t ** 2 - 1 / (12 * safe_t)
    c0, c1 = xp.where(near, c0_series, c0), xp.where(near, c1_series, c1)
    r = xp.exp(-a * eta * eta / 2) / xp.sqrt(2 * math.pi * a) * (c0 + c1 / a)
    z = eta * math.sqrt(0.5) * xp.sqrt(a)
    if upper:
        return 0.5 * _erfc64(xp, z) + r
    return 0.5 * _erfc64(xp, -z) - r


def igamma(xp, a, x, upper, lgamma64):
    """P(a, x) (Q(a, x) with ``upper``) of float64 arrays, with torch's values at the edges
    (NaN for a < 0 or x < 0, P = 1 at a = 0 < x, P = 0 at x = 0, ...)."""
    a, x = np.broadcast_arrays(a, x) if xp is np else xp.broadcast_arrays(a, x)
    lo, hi = (1.0, 0.0) if upper else (0.0, 1.0)  # the values at x = 0 and x = inf
    # torch's cascade of edge cases, first match wins (NaN fails every comparison)
    cases = [((x < 0) | (a < 0), xp.nan), (a == 0, xp.where(x > 0, hi, xp.nan)),
             (x == 0, lo), (xp.isinf(a), xp.where(xp.isinf(x), xp.nan, lo)),
             (xp.isinf(x), hi)]
    out = xp.full(a.shape, xp.nan)
    decided = xp.zeros(a.shape, bool)
    for cond, value in cases:
        out = xp.where(cond & ~decided, value, out)
        decided = decided | cond
    ok = ~decided & ~xp.isnan(a) & ~xp.isnan(x)
    if not bool(ok.any()):
        return out
    huge = ok & (a > 1e6)
    if bool(huge.any()):  # the series and the fraction would need ~10 sqrt(a) terms
        with np.errstate(all="ignore"):
            out[huge] = _temme(xp, a[huge], x[huge], upper)
        ok = ok & ~huge
        if not bool(ok.any()):
            return out
    av, xv = a[ok], x[ok]
    res = xp.empty_like(av)
    with np.errstate(all="ignore"):
        logf = igam_log_factor(xp, av, xv, lgamma64)
        lower = xv < av + 1
        if bool(lower.any()):
            al, xl = av[lower], xv[lower]
            p = _p_series(xp, al, xl, logf[lower])
            if upper:
                small = al < 1
                q = 1 - p
                if bool(small.any()):
                    q[small] = _q_small(xp, al[small], xl[small], lgamma64)
                res[lower] = q
            else:
                res[lower] = p
        higher = ~lower
        if bool(higher.any()):
            q = _q_fraction(xp, av[higher], xv[higher], logf[higher])
            res[higher] = q if upper else 1 - q
    out[ok] = res
    return out
