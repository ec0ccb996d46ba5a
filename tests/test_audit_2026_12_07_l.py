"""Audit of 2026-12-07 (l): differential checks of minidl.distributions, minidl.fft,
minidl.special and minidl.signal against torch 2.13 (float64 and float32, empty and 0-d
shapes, broadcast parameters, edge values), and the regressions they found."""
import math

import numpy as np
import pytest

import minidl
import minidl.distributions as D
from minidl.testing import gradcheck

INF, NAN = float("inf"), float("nan")


def f64(x, requires_grad=False):
    return minidl.tensor(np.asarray(x, dtype=np.float64), dtype=minidl.float64,
                         requires_grad=requires_grad)


# ---- distributions: parameters, moments, dtypes ---------------------------------------------
@pytest.mark.parametrize("df", [0.0, -1.0, NAN, -INF])
def test_chi2_validates_df(df):
    with pytest.raises(ValueError, match="Expected parameter df"):
        D.Chi2(f64(df))
    D.Chi2(f64(df), validate_args=False)  # and builds without the check


@pytest.mark.parametrize("cls", [D.HalfNormal, D.HalfCauchy])
def test_half_distributions_take_an_infinite_scale(cls):
    d = cls(f64([INF, 2.0]))
    np.testing.assert_array_equal(d.mode.numpy(), [0.0, 0.0])
    lp = d.log_prob(f64([1.0, 1.0])).numpy()
    assert lp[0] == -INF and np.isfinite(lp[1])
    assert d.cdf(f64([1.0, 1.0])).numpy()[0] == 0.0
    assert d.icdf(f64([0.3, 0.3])).numpy()[0] == INF


def test_half_cauchy_moments_and_exponential_mode_at_infinite_parameters():
    d = D.HalfCauchy(f64(INF))
    assert d.mean.item() == INF and d.variance.item() == INF
    assert D.Exponential(f64([INF, 1.0])).mode.numpy().tolist() == [0.0, 0.0]


def test_log_normal_variance_of_a_small_scale_does_not_cancel():
    d = D.LogNormal(f64(0.5), f64(1e-8))
    # exp(2 mu + s^2) (exp(s^2) - 1) ~ e * 1e-16
    assert d.variance.item() == pytest.approx(math.e * 1e-16, rel=1e-6)
    assert d.stddev.item() == pytest.approx(math.exp(0.5) * 1e-8, rel=1e-6)


def test_uniform_log_prob_keeps_float64_with_a_broadcast_value():
    d = D.Uniform(f64(0.0), f64(2.0), validate_args=False)
    lp = d.log_prob(f64([0.5, 1.0, 3.0]))
    assert lp.dtype == minidl.float64
    np.testing.assert_array_equal(lp.numpy(), [-math.log(2), -math.log(2), -INF])
    assert lp.numpy()[0] == -math.log(2)  # exact, not float32-rounded


@pytest.mark.parametrize("make", [
    lambda r: D.Poisson(r),
    lambda r: D.Binomial(f64([5.0, 5.0]), probs=r / 4),
    lambda r: D.NegativeBinomial(r, probs=f64([0.3, 0.5])),
])
def test_discrete_modes_are_recorded_with_a_zero_gradient(make):
    r = f64([1.5, 2.7], requires_grad=True)
    mode = make(r).mode
    assert mode.requires_grad
    mode.sum().backward()
    np.testing.assert_array_equal(r.grad.numpy(), [0.0, 0.0])


def _multinomial_entropy_by_enumeration(n, p):
    total = 0.0
    for a in range(n + 1):
        for b in range(n + 1 - a):
            c = n - a - b
            log_p = (math.lgamma(n + 1) - math.lgamma(a + 1) - math.lgamma(b + 1)
                     - math.lgamma(c + 1))
            if any(k and not q for k, q in zip((a, b, c), p)):
                continue  # an impossible outcome
            log_p += sum(k * math.log(q) for k, q in zip((a, b, c), p) if k)
            total -= math.exp(log_p) * log_p
    return total


@pytest.mark.parametrize("n", [0, 1, 5])
def test_multinomial_entropy(n):
    p = np.array([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
    h = D.Multinomial(n, probs=f64(p)).entropy()
    assert h.shape == (2,) and h.dtype == minidl.float64
    want = [_multinomial_entropy_by_enumeration(n, row) for row in p]
    np.testing.assert_allclose(h.numpy(), want, rtol=1e-12, atol=1e-14)
    probs = f64([0.2, 0.3, 0.5], requires_grad=True)
    assert gradcheck(lambda q: D.Multinomial(4, probs=q / q.sum()).entropy(), (probs,))
