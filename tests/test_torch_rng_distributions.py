"""minidl.distributions sample torch's numbers: after ``minidl.manual_seed(s)`` and
``torch.manual_seed(s)`` each distribution's ``sample``/``rsample`` gives torch 2.13's draws
(the same primitives - uniform_, normal_, exponential_, cauchy_, _standard_gamma, binomial,
poisson, multinomial - in the same order, then the same arithmetic), and the engine is left
where torch's is. EXACT ones are bit for bit in float32 and float64; the others end in
vectorised math in torch (log, exp, pow, cholesky products) that is not libm's, and are
checked within a few ulps of the sample's largest magnitude."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.distributions as md

torch = pytest.importorskip("torch")
td = torch.distributions

SEEDS = [0, 3, 12345]
SHAPES = [(), (4,), (40, 2)]

A = [0.5, -1.0, 2.0, 0.25]
B = [1.0, 2.0, 0.5, 3.0]
C = [1.5, 3.0, 0.7, 0.05]  # concentrations below 1 too (torch's boosted gamma)
P = [0.3, 0.7, 0.05, 0.5]
COV = [[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.5]]

# name -> (builder taking (distributions module, tensor maker), ulps for float64, for float32)
CASES = {
    "Cauchy": (lambda D, T: D.Cauchy(T(A), T(B)), 0, 0),
    "HalfCauchy": (lambda D, T: D.HalfCauchy(T(B)), 0, 0),
    "Geometric": (lambda D, T: D.Geometric(T(P)), 0, 0),
    "Uniform": (lambda D, T: D.Uniform(T(A), T([2.5, 0.0, 3.5, 0.5])), 0, 0),
    "Exponential": (lambda D, T: D.Exponential(T(B)), 0, 0),
    "Gamma": (lambda D, T: D.Gamma(T(C), T(B)), 0, 0),
    "Chi2": (lambda D, T: D.Chi2(T([1.0, 2.0, 5.5, 0.3])), 0, 0),
    "Beta": (lambda D, T: D.Beta(T(C), T(B)), 0, 0),
    "Dirichlet": (lambda D, T: D.Dirichlet(T([[1.0, 2.0, 0.5], [0.1, 4.0, 30.0]])), 0, 0),
    "FisherSnedecor": (lambda D, T: D.FisherSnedecor(T(C), T(B)), 0, 0),
    # torch's cos/acos are vectorised (an ulp off libm's now and then)
    "VonMises": (lambda D, T: D.VonMises(T(A), T([1.0, 2.0, 0.5, 1e-6])), 4, 4),
    "Binomial": (lambda D, T: D.Binomial(T([10.0, 20.0, 5.0, 100.0]), T(P)), 0, 0),
    "NegativeBinomial": (lambda D, T: D.NegativeBinomial(T([1.0, 2.0, 5.5, 0.5]), T(P)), 0, 0),
    "Multinomial": (lambda D, T: D.Multinomial(7, T([0.3, 0.5, 0.2])), 0, 0),
    "Poisson": (lambda D, T: D.Poisson(T([1.0, 20.0, 0.5, 11.0])), 0, 0),
    "Normal": (lambda D, T: D.Normal(T(A), T(B)), 0, 4),
    "HalfNormal": (lambda D, T: D.HalfNormal(T(B)), 0, 4),
    "LowRankMultivariateNormal": (
        lambda D, T: D.LowRankMultivariateNormal(T(A[:3]), T([[1.0], [0.5], [0.2]]),
                                                 T(B[:3])), 4, 4),
    "Laplace": (lambda D, T: D.Laplace(T(A), T(B)), 4, 4),
    "Pareto": (lambda D, T: D.Pareto(T(B), T(C)), 4, 4),
    "Weibull": (lambda D, T: D.Weibull(T(B), T(C)), 4, 4),
    "LogNormal": (lambda D, T: D.LogNormal(T(A), T(B)), 4, 4),
    "Gumbel": (lambda D, T: D.Gumbel(T(A), T(B)), 4, 4),
    "StudentT": (lambda D, T: D.StudentT(T([1.0, 2.0, 5.5, 30.0])), 4, 4),
    "InverseGamma": (lambda D, T: D.InverseGamma(T(C), T(B)), 4, 4),
    # 1 - u**a near 1 loses the leading bits: a one-ulp pow difference shows as tens of ulps
    "Kumaraswamy": (lambda D, T: D.Kumaraswamy(T(B), T(C)), 64, 64),
    "RelaxedBernoulli": (lambda D, T: D.RelaxedBernoulli(T([0.5]), probs=T(P)), 4, 4),
    # softmax((log p - log(-log u)) / t) in float32: two logs and an exp in each library, each
    # within an ulp but not the same ulp (torch's vectorised code; NumPy's own, which it picks
    # by the CPU's instruction sets), then a sum and a division. Measured: 3 ulps of the
    # largest with NumPy's AVX2 code, 6 with its baseline code (NPY_DISABLE_CPU_FEATURES=X86_V3)
    "RelaxedOneHotCategorical": (
        lambda D, T: D.RelaxedOneHotCategorical(T([0.5]), probs=T([0.3, 0.5, 0.2])), 4, 8),
    "MultivariateNormal": (lambda D, T: D.MultivariateNormal(T(A[:3]), T(COV)), 8, 8),
    "LKJCholesky": (lambda D, T: D.LKJCholesky(3, T(1.5)), 4, 4),
    # torch redraws every positive-definite sample once more (its check is un-negated)
    "Wishart": (lambda D, T: D.Wishart(T([4.0, 7.5]), T(COV)), 8, 8),
    "LogisticNormal": (lambda D, T: D.LogisticNormal(T(A), T(B)), 4, 4),
    # icdf = (log1p(a) - log1p(b)) / (log p - log1p(-p)): the difference cancels leading
    # bits, so an ulp of torch's vectorised log1p (its AVX2 and AVX-512 code round a little
    # differently) reads as about 10 ulps of the result
    "ContinuousBernoulli": (lambda D, T: D.ContinuousBernoulli(T(P)), 4, 16),
    "GeneralizedPareto": (lambda D, T: D.GeneralizedPareto(T(A), T(B), T([0.2, -0.1, 0.0, 0.5])),
                          4, 4),
}


def _makers(dtype):
    return (lambda x: torch.tensor(x, dtype=getattr(torch, dtype)),
            lambda x: minidl.tensor(np.asarray(x, dtype=dtype), dtype=getattr(minidl, dtype)))


def _close(mine, theirs, ulps):
    assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
    if ulps == 0:
        np.testing.assert_array_equal(mine, theirs)
        return
    finite = np.isfinite(theirs)
    np.testing.assert_array_equal(mine[~finite], theirs[~finite])  # overflows: the same inf
    mine, theirs = mine[finite], theirs[finite]
    biggest = np.abs(theirs).max()
    unit = float(np.spacing(biggest))  # an ulp of the largest magnitude, in their dtype
    diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
    assert diff.max() <= ulps * unit, f"{diff.max() / unit} ulps of {biggest}"


def _draw(name, dtype, seed, shape, method="sample"):
    build, ulps64, ulps32 = CASES[name]
    tt, mt = _makers(dtype)
    torch.manual_seed(seed)
    theirs = getattr(build(td, tt), method)(shape).numpy()
    state = torch.get_rng_state().numpy()
    minidl.manual_seed(seed)
    mine = np.asarray(getattr(build(md, mt), method)(shape).numpy())
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), state)
    return mine, theirs, (ulps64 if dtype == "float64" else ulps32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_is_torchs(name, dtype, seed, shape):
    mine, theirs, ulps = _draw(name, dtype, seed, shape)
    if mine.dtype != theirs.dtype:  # integer-valued samples come back in the params' dtype
        mine = mine.astype(theirs.dtype)
    _close(mine, theirs, ulps)


RSAMPLED = sorted(n for n in CASES if n not in (
    "Geometric", "Binomial", "NegativeBinomial", "Multinomial", "Poisson", "VonMises",
    "LKJCholesky"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", RSAMPLED)
def test_rsample_is_torchs(name, dtype):
    mine, theirs, ulps = _draw(name, dtype, 7, (3, 5), method="rsample")
    _close(mine, theirs, ulps)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_draws_in_a_row_keep_torchs_stream(dtype):
    """Several distributions one after the other (the cached double normal of the gamma
    sampler carried from one to the next), and plain draws between them."""
    tt, mt = _makers(dtype)

    def run(lib, D, T):
        out = [D.Gamma(T(C), T(B)).sample((5,)), lib.rand(3, dtype=getattr(lib, dtype)),
               D.StudentT(T([2.0, 3.0])).sample((7,)), D.Beta(T(C), T(B)).sample((2,)),
               lib.randn(1, dtype=getattr(lib, dtype)), D.Binomial(T([30.0]), T([0.4])).sample((9,)),
               D.Dirichlet(T([0.5, 1.5])).sample((4,)), D.Cauchy(T(A), T(B)).sample()]
        return [np.asarray(o.numpy()) for o in out]

    torch.manual_seed(11)
    theirs = run(torch, td, tt)
    state = torch.get_rng_state().numpy()
    minidl.manual_seed(11)
    mine = run(minidl, md, mt)
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), state)
    for m, t in zip(mine, theirs):
        _close(m.astype(t.dtype), t, 4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binomial_function_is_torchs(seed, dtype):
    """torch.binomial: BTRS from a mean of 10 on (of the smaller side), inversion below, and
    the edges (count <= 0, p <= 0, p >= 1, a NaN p, a count that is not whole) without draws."""
    count = np.tile([0.0, 1.0, 5.0, 10.0, 20.0, 37.0, 100.0, 1000.0, 50.0, 12.5, -3.0, 7.0], 20)
    prob = np.tile([0.3, 0.5, 0.05, 0.99, 0.7, 0.45, 0.2, 0.01, 0.5, 0.9, 0.5, np.nan], 20)
    torch.manual_seed(seed)
    theirs = torch.binomial(torch.tensor(count, dtype=getattr(torch, dtype)),
                            torch.tensor(prob, dtype=getattr(torch, dtype))).numpy()
    state = torch.get_rng_state().numpy()
    minidl.manual_seed(seed)
    mine = minidl.binomial(minidl.tensor(count, dtype=getattr(minidl, dtype)),
                           minidl.tensor(prob, dtype=getattr(minidl, dtype))).numpy()
    np.testing.assert_array_equal(mine, theirs)  # NaN where torch's is NaN
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), state)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gamma_rsample_gradient_is_torchs(dtype):
    """The draws are torch's, so the implicit reparameterisation gradient is compared on the
    same samples."""
    tt, mt = _makers(dtype)
    torch.manual_seed(5)
    ct, rt = tt(C).requires_grad_(), tt(B).requires_grad_()
    td.Gamma(ct, rt).rsample((6,)).sum().backward()
    minidl.manual_seed(5)
    cm, rm = mt(C).requires_grad_(), mt(B).requires_grad_()
    md.Gamma(cm, rm).rsample((6,)).sum().backward()
    # torch's d sample / d alpha is an approximation (good to ~1e-5); the rate's is exact
    np.testing.assert_allclose(cm.grad.numpy(), ct.grad.numpy(), rtol=1e-4)
    tol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(rm.grad.numpy(), rt.grad.numpy(), rtol=tol)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_standard_gamma_and_sample_dirichlet_are_torchs(seed, dtype):
    alpha = np.array([[0.3, 1.0, 2.5, 1e-3], [7.0, 0.05, 1.2, 40.0]], dtype=dtype)
    torch.manual_seed(seed)
    g_t = torch._standard_gamma(torch.tensor(alpha))
    d_t = torch._sample_dirichlet(torch.tensor(alpha))
    state = torch.get_rng_state().numpy()
    minidl.manual_seed(seed)
    g_m = minidl._standard_gamma(minidl.tensor(alpha, dtype=getattr(minidl, dtype)))
    d_m = minidl._sample_dirichlet(minidl.tensor(alpha, dtype=getattr(minidl, dtype)))
    np.testing.assert_array_equal(g_m.numpy(), g_t.numpy())
    np.testing.assert_array_equal(d_m.numpy(), d_t.numpy())
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), state)


def test_standard_gamma_takes_a_generator():
    mine, theirs = minidl.Generator(), torch.Generator()
    mine.manual_seed(4)
    theirs.manual_seed(4)
    alpha = np.array([0.5, 2.0, 9.0])
    np.testing.assert_array_equal(
        minidl._standard_gamma(minidl.tensor(alpha, dtype=minidl.float64), generator=mine).numpy(),
        torch._standard_gamma(torch.tensor(alpha), generator=theirs).numpy())
    np.testing.assert_array_equal(mine.get_state().numpy(), theirs.get_state().numpy())


def test_sample_dirichlet_refuses_a_0d_tensor():
    with pytest.raises(ValueError, match="0-d"):
        minidl._sample_dirichlet(minidl.tensor(1.0))
