"""The rest of torch.distributions: ContinuousBernoulli, FisherSnedecor, GeneralizedPareto,
HalfCauchy, InverseGamma, Kumaraswamy, VonMises, LogisticNormal, Wishart, LKJCholesky,
ExponentialFamily, the transforms (Abs, Power, Softplus, Softmax, StickBreaking, LowerCholesky,
PositiveDefinite, CorrCholesky, Reshape, Independent, Cat, Stack, CumulativeDistribution,
identity), biject_to / transform_to and the KL divergences torch registers for them.

Values and parameter gradients against torch 2.13 in float64 (torch's GeneralizedPareto only
works in float32: its log_prob compares a float64 parameter with a float32 zero), reparameterised
samples as deterministic functions of the same noise, sampling statistics on the seeded
generator, shapes, and torch's ValueErrors for bad parameters and values."""
import math

import numpy as np
import pytest

import minidl
import minidl.distributions as D
from minidl import Tensor
from minidl.distributions import constraints, transforms as MT
from minidl.testing import gradcheck
from minidl.distributions import transforms as T

R = np.random.default_rng(3)


def _torch():
    return pytest.importorskip("torch", reason="torch parity needs torch installed")


def f64(a, **kw):
    return Tensor(np.asarray(a, dtype=np.float64), dtype=np.float64, **kw)


A, B = R.random(3) * 3 + 0.3, R.random(3) * 3 + 0.3
XPOS = np.abs(R.standard_normal((4, 3))) * 2 + 0.05
U01 = R.random((4, 3)) * 0.98 + 0.01
_X = R.standard_normal((2, 3, 3))
COV = _X @ _X.transpose(0, 2, 1) + np.eye(3)
_W = R.standard_normal((4, 3, 5))
WVALUE = (_W @ _W.transpose(0, 2, 1) / 5 + 0.1 * np.eye(3))[:, None]
CB_PROBS = np.array([0.1, 0.4995, 0.5, 0.7, 0.99])
CB_LOGITS = np.array([-3.0, -0.001, 0.0, 0.5, 4.0])
CB_VALUE = R.random((3, 5))
SIMPLEX4 = R.dirichlet(np.ones(4), size=5)


def _lkj_value():
    torch = _torch()
    torch.manual_seed(0)
    d = torch.distributions.LKJCholesky(4, torch.tensor(1.5, dtype=torch.float64))
    return d.sample((3,)).numpy()[:, None]


# name, build(Dmodule, *params), params, {quantity: argument or None}
CASES = [
    ("half_cauchy", lambda M, s: M.HalfCauchy(s), [A],
     {"log_prob": XPOS, "cdf": XPOS, "icdf": U01, "entropy": None, "mean": None,
      "variance": None, "mode": None}),
    ("inverse_gamma", lambda M, c, r: M.InverseGamma(c, r), [A + 2.5, B],
     {"log_prob": XPOS, "entropy": None, "mean": None, "variance": None, "mode": None}),
    ("inverse_gamma_small", lambda M, c, r: M.InverseGamma(c, r), [np.array([0.5, 1.5, 3.0]), B],
     {"mean": None, "variance": None}),
    ("fisher_snedecor", lambda M, a, b: M.FisherSnedecor(a, b), [A * 3, B * 4],
     {"log_prob": XPOS, "mean": None, "variance": None, "mode": None}),
    ("kumaraswamy", lambda M, a, b: M.Kumaraswamy(a, b), [A, B],
     {"log_prob": U01, "cdf": U01, "icdf": U01, "entropy": None, "mean": None,
      "variance": None, "mode": None}),
    ("von_mises", lambda M, loc, k: M.VonMises(loc, k), [A - 1, B * 3],
     {"log_prob": XPOS * 2, "mean": None, "variance": None, "mode": None}),
    ("logistic_normal", lambda M, loc, s: M.LogisticNormal(loc, s), [R.standard_normal(3), B],
     {"log_prob": SIMPLEX4}),
    ("cb_probs", lambda M, p: M.ContinuousBernoulli(probs=p), [CB_PROBS],
     {"log_prob": CB_VALUE, "cdf": CB_VALUE, "icdf": CB_VALUE, "entropy": None, "mean": None,
      "variance": None}),
    ("cb_logits", lambda M, logit: M.ContinuousBernoulli(logits=logit), [CB_LOGITS],
     {"log_prob": CB_VALUE, "cdf": CB_VALUE, "icdf": CB_VALUE, "entropy": None, "mean": None,
      "variance": None}),
    ("wishart_cov", lambda M, df, c: M.Wishart(df, covariance_matrix=c),
     [np.array([4.5, 7.0]), COV],
     {"log_prob": WVALUE, "entropy": None, "mean": None, "variance": None, "mode": None}),
    ("wishart_prec", lambda M, df, c: M.Wishart(df, precision_matrix=c),
     [np.array([4.5, 7.0]), COV], {"log_prob": WVALUE, "entropy": None, "mean": None}),
    ("wishart_tril", lambda M, df, c: M.Wishart(df, scale_tril=c),
     [np.array([4.5, 2.5]), np.linalg.cholesky(COV)],
     {"log_prob": WVALUE, "entropy": None, "variance": None, "mode": None}),
    ("lkj_cholesky", lambda M, c: M.LKJCholesky(4, c), [np.array([0.5, 1.0, 2.5])],
     {"log_prob": "lkj"}),
    ("gamma_cdf", lambda M, c, r: M.Gamma(c, r), [A, B], {"cdf": XPOS}),
]
ROWS = [(name, build, params, q, arg) for name, build, params, qs in CASES
        for q, arg in qs.items()]
# torch's von Mises uses a polynomial fit of log I0 (~1e-7); minidl's is exact
RTOL = {"von_mises": 1e-5}


def _quantity(dist, q, arg, make):
    if q in ("log_prob", "cdf", "icdf"):
        return getattr(dist, q)(make(arg))
    if q == "entropy":
        return dist.entropy()
    return getattr(dist, q)


@pytest.mark.filterwarnings("ignore:Low df values", "ignore:Singular sample")
@pytest.mark.parametrize("name,build,params,quantity,arg", ROWS,
                         ids=[f"{r[0]}-{r[3]}" for r in ROWS])
def test_values_and_gradients_match_torch(name, build, params, quantity, arg):
    torch = _torch()
    import torch.distributions as TD

    if isinstance(arg, str):
        arg = _lkj_value()
    mp = [f64(p, requires_grad=True) for p in params]
    tp = [torch.tensor(np.asarray(p, dtype=np.float64), requires_grad=True) for p in params]
    mo = _quantity(build(D, *mp), quantity, arg, f64)
    to = _quantity(build(TD, *tp), quantity, arg,
                   lambda a: torch.tensor(np.asarray(a, dtype=np.float64)))
    assert tuple(mo.shape) == tuple(to.shape)
    assert mo.dtype == np.float64
    rtol = RTOL.get(name, 1e-9)
    np.testing.assert_allclose(mo.numpy(), to.detach().numpy(), rtol=rtol, atol=1e-12)
    assert mo.requires_grad == to.requires_grad
    if not to.requires_grad:
        return
    proj = np.random.default_rng(1).standard_normal(tuple(to.shape))
    if name == "gamma_cdf":  # neither has a derivative in the concentration
        for out, w in ((to, torch.tensor(proj)), (mo, f64(proj))):
            with pytest.raises(NotImplementedError, match="derivative for 'igamma: input'"):
                (out * w).sum().backward()
        return
    (to * torch.tensor(proj)).sum().backward()
    (mo * f64(proj)).sum().backward()
    for i, (m, t) in enumerate(zip(mp, tp)):
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        mg = np.zeros(m.shape) if m.grad is None else m.grad.numpy()
        if name == "wishart_tril" and i == 1:  # only the lower triangle is a parameter
            tg, mg = np.tril(tg), np.tril(mg)
        np.testing.assert_allclose(mg, tg, rtol=max(rtol, 1e-7), atol=1e-9,
                                   err_msg=f"gradient of parameter {i}")


def test_generalized_pareto_matches_torch_in_float32():
    torch = _torch()
    import torch.distributions as TD

    loc, scale = np.float32([0.0, 0.5, -1.0]), np.float32([1.5, 0.7, 2.0])
    conc = np.float32([0.3, 0.0, -0.2])
    value = (XPOS[:, :3] * 0.5).astype(np.float32)
    u = U01.astype(np.float32)
    m = D.GeneralizedPareto(Tensor(loc), Tensor(scale), Tensor(conc))
    t = TD.GeneralizedPareto(torch.tensor(loc), torch.tensor(scale), torch.tensor(conc))
    value = value + loc  # inside the support
    for q, arg in (("log_prob", value), ("cdf", value), ("icdf", u),
                   ("log_survival_function", value)):
        mv = getattr(m, q)(Tensor(arg)).numpy()
        tv = getattr(t, q)(torch.tensor(arg)).numpy()
        assert mv.dtype == np.float32
        np.testing.assert_allclose(mv, tv, rtol=2e-5, atol=1e-6, err_msg=q)
    for q in ("mean", "variance", "mode"):
        np.testing.assert_allclose(getattr(m, q).numpy(), getattr(t, q).numpy(), rtol=2e-6)
    np.testing.assert_allclose(m.entropy().numpy(), t.entropy().numpy(), rtol=2e-6)
    # the support's upper end for a negative concentration
    assert not bool(m.support.check(Tensor(np.float32([1.0, 1.0, 9.5]))).numpy()[2])


def test_generalized_pareto_float64_gradients():
    loc, scale = f64([0.0, 0.5], requires_grad=True), f64([1.5, 0.7], requires_grad=True)
    conc = f64([0.3, -0.2], requires_grad=True)
    value = f64([[0.7, 1.0], [2.0, 0.6]])
    assert gradcheck(lambda a, b, c: D.GeneralizedPareto(a, b, c).log_prob(value),
                     [loc, scale, conc])
    u = f64([[0.2, 0.9]])
    assert gradcheck(lambda a, b, c: D.GeneralizedPareto(a, b, c).icdf(u), [loc, scale, conc])
    # concentration 0 is the exponential distribution
    g = D.GeneralizedPareto(0.0, 2.0, 0.0)
    e = D.Exponential(0.5)
    x = f64([0.1, 1.0, 7.0])
    np.testing.assert_allclose(g.log_prob(x).numpy(), e.log_prob(x).numpy(), rtol=1e-6)


# ---- reparameterised samples ----------------------------------------------------------------
def test_inverse_cdf_samplers_are_their_icdf_of_the_same_uniforms():
    # Kumaraswamy pushes the uniform through its transforms, which decrease: icdf(1 - u)
    k = D.Kumaraswamy(f64(A, requires_grad=True), f64(B, requires_grad=True))
    minidl.manual_seed(4)
    s = k.rsample((6,))
    minidl.manual_seed(4)
    u = minidl.rand(s.shape, dtype=np.float64)
    np.testing.assert_allclose(s.detach().numpy(), k.icdf(1 - u).detach().numpy(), rtol=1e-10)
    for make in (lambda: D.ContinuousBernoulli(probs=f64(CB_PROBS, requires_grad=True)),
                 lambda: D.GeneralizedPareto(f64([0.0, 1.0]), f64([1.0, 2.0]),
                                             f64([0.2, -0.3], requires_grad=True))):
        d = make()
        minidl.manual_seed(5)
        s = d.rsample((6,))
        minidl.manual_seed(5)
        u = minidl.rand(s.shape, dtype=np.float64)
        np.testing.assert_allclose(s.detach().numpy(), d.icdf(u).detach().numpy(), rtol=1e-12)
        assert s.requires_grad
        s.sum().backward()


def test_rsample_gradients_by_finite_differences():
    def draw(make):
        def f(*params):
            minidl.manual_seed(11)
            return make(*params).rsample((5,))
        return f

    a, b = f64(A, requires_grad=True), f64(B, requires_grad=True)
    assert gradcheck(draw(lambda x, y: D.Kumaraswamy(x, y)), [a, b])
    assert gradcheck(draw(lambda s: D.HalfCauchy(s)), [b])
    assert gradcheck(draw(lambda x, y: D.LogisticNormal(x, y)), [a, b])
    assert gradcheck(draw(lambda p: D.ContinuousBernoulli(probs=p)),
                     [f64([0.2, 0.45, 0.8], requires_grad=True)])
    # the gamma-based ones carry the implicit gradient: check it moves the sample the right way
    f = D.FisherSnedecor(a * 3, b * 4)
    s = f.rsample((50,))
    s.sum().backward()
    assert a.grad is not None and np.isfinite(a.grad.numpy()).all()
    c = f64([3.0, 4.0], requires_grad=True)
    x = D.InverseGamma(c, f64([1.0, 2.0])).rsample((200,))
    x.sum().backward()
    assert (c.grad.numpy() < 0).all()  # a larger concentration shrinks 1/Gamma


def test_sampling_statistics():
    minidl.manual_seed(0)
    n = 40000
    checks = [
        # InverseGamma(5, 2): mean 2/4, variance 4 / (16 * 3)
        (D.InverseGamma(f64([5.0, 6.0]), f64([2.0, 1.0])), [0.5, 0.2], [1 / 12, 0.01]),
        (D.FisherSnedecor(f64([5.0]), f64([12.0])), [1.2], [2 * 144 * 15 / (5 * 100 * 8)]),
        (D.Kumaraswamy(f64([2.0]), f64([3.0])), None, None),
        (D.ContinuousBernoulli(probs=f64([0.2, 0.5, 0.9])), None, None),
        (D.GeneralizedPareto(f64([0.0]), f64([1.0]), f64([0.2])), [1.25], [1 / (0.64 * 0.6)]),
    ]
    for d, mean, var in checks:
        s = d.sample((n,)).numpy()
        mean = d.mean.detach().numpy() if mean is None else np.array(mean)
        var = d.variance.detach().numpy() if var is None else np.array(var)
        np.testing.assert_allclose(s.mean(0), mean, rtol=0.03, atol=0.005, err_msg=repr(d))
        np.testing.assert_allclose(s.var(0), var, rtol=0.1, atol=0.002, err_msg=repr(d))
    # half-Cauchy: the median is the scale
    s = D.HalfCauchy(f64([2.0])).sample((n,)).numpy()
    assert abs(np.median(s) - 2.0) < 0.08 and (s >= 0).all()


def test_von_mises_samples():
    minidl.manual_seed(1)
    d = D.VonMises(f64([0.5, -2.5, 3.0]), f64([4.0, 1.5, 1e-6]))
    s = d.sample((30000,)).numpy()
    assert s.shape == (30000, 3) and (np.abs(s) <= math.pi).all()
    circ_mean = np.angle(np.exp(1j * s).mean(0))
    resultant = np.abs(np.exp(1j * s).mean(0))
    np.testing.assert_allclose(circ_mean[:2], [0.5, -2.5], atol=0.04)
    np.testing.assert_allclose(1 - resultant, d.variance.numpy(), atol=0.015)
    assert D.VonMises(f64(0.0), f64(1.0)).sample().shape == ()


def test_wishart_and_lkj_samples():
    minidl.manual_seed(2)
    w = D.Wishart(f64(6.0), covariance_matrix=f64(COV[0]))
    s = w.sample((8000,))
    assert s.shape == (8000, 3, 3)
    assert bool(constraints.positive_definite.check(s).all())
    np.testing.assert_allclose(s.numpy().mean(0), 6 * COV[0], rtol=0.06, atol=0.3)
    scale = f64(COV[0], requires_grad=True)
    D.Wishart(f64(5.0), covariance_matrix=scale).rsample((3,)).sum().backward()
    assert scale.grad is not None
    for eta in (0.5, 2.0):
        lkj = D.LKJCholesky(3, f64(eta))
        low = lkj.sample((20000,))
        assert bool(constraints.corr_cholesky.check(low).all())
        corr = (low @ low.mT).numpy()
        off = corr[:, 1, 0]
        # the marginal of a correlation: Beta(eta - 1 + d/2, same) on (-1, 1)
        np.testing.assert_allclose(off.var(), 1 / (2 * eta + 3 - 1), rtol=0.06)
        assert abs(off.mean()) < 0.02


# ---- shapes, expand, errors -------------------------------------------------------------------
SHAPE_CASES = [
    ("half_cauchy", lambda M, t: M.HalfCauchy(t(B))),
    ("inverse_gamma", lambda M, t: M.InverseGamma(t(A), t(B))),
    ("fisher_snedecor", lambda M, t: M.FisherSnedecor(t(A), t(B))),
    ("kumaraswamy", lambda M, t: M.Kumaraswamy(t(A), t(B))),
    ("von_mises", lambda M, t: M.VonMises(t(A), t(B))),
    ("logistic_normal", lambda M, t: M.LogisticNormal(t(np.zeros((2, 3))), t(np.ones((2, 3))))),
    ("cb", lambda M, t: M.ContinuousBernoulli(probs=t(CB_PROBS))),
    ("wishart", lambda M, t: M.Wishart(t(np.array([4.0, 5.0])), covariance_matrix=t(COV))),
    ("lkj", lambda M, t: M.LKJCholesky(3, t(np.array([1.0, 2.0])))),
]


# torch's Wishart.rsample warns of a singular sample where its check found a regular one
@pytest.mark.filterwarnings("ignore:Singular sample detected")
@pytest.mark.parametrize("name,make", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_shapes_and_expand_as_torch(name, make):
    torch = _torch()
    import torch.distributions as TD

    m = make(D, f64)
    t = make(TD, lambda a: torch.tensor(np.asarray(a, dtype=np.float64)))
    assert m.batch_shape == tuple(t.batch_shape) and m.event_shape == tuple(t.event_shape)
    assert tuple(m.sample((2,)).shape) == tuple(t.sample((2,)).shape)
    big = (4,) + m.batch_shape
    me, te = m.expand(big), t.expand(torch.Size(big))
    assert me.batch_shape == tuple(te.batch_shape) and me.event_shape == tuple(te.event_shape)
    assert tuple(me.sample().shape) == tuple(te.sample().shape)


def test_bad_parameters_and_values_raise_as_torch():
    with pytest.raises(ValueError, match="Expected parameter scale"):
        D.HalfCauchy(f64([-1.0]))
    with pytest.raises(ValueError, match="Expected parameter concentration"):
        D.VonMises(f64([0.0]), f64([0.0]))
    # as torch, the Gamma inside checks it first
    with pytest.raises(ValueError, match="Expected parameter concentration .* Gamma"):
        D.FisherSnedecor(f64([-1.0]), f64([1.0]))
    with pytest.raises(ValueError, match="Expected parameter concentration1"):
        D.Kumaraswamy(f64([0.0]), f64([1.0]))
    with pytest.raises(ValueError, match=r"Value of df=2.0 expected to be greater than ndim - 1"):
        D.Wishart(2.0, covariance_matrix=f64(COV[0]))
    with pytest.warns(UserWarning, match="Low df values detected"):
        D.Wishart(2.5, covariance_matrix=f64(COV[0]))
    with pytest.raises(ValueError, match="Exactly one of covariance_matrix"):
        D.Wishart(5.0)
    with pytest.raises(ValueError, match="Expected dim to be an integer greater than or equal to 2"):
        D.LKJCholesky(1)
    with pytest.raises(ValueError, match="Either `probs` or `logits` must be specified"):
        D.ContinuousBernoulli()
    with pytest.raises(ValueError, match="The parameter probs has invalid values"):
        D.ContinuousBernoulli(probs=f64([1.5]), validate_args=True)
    with pytest.raises(ValueError, match="within the support"):
        D.HalfCauchy(f64([1.0])).log_prob(f64([-1.0]))
    with pytest.raises(ValueError, match="within the support"):
        D.Kumaraswamy(f64([1.0]), f64([1.0])).log_prob(f64([1.5]))
    with pytest.raises(ValueError, match="within the support"):
        D.LKJCholesky(2).log_prob(f64([[1.0, 0.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="within the support"):
        D.GeneralizedPareto(0.0, 1.0, -0.5).log_prob(f64([3.0]))


def test_exponential_family_entropy_and_kl_by_bregman():
    torch = _torch()
    import torch.distributions as TD
    from minidl.distributions.exp_family import ExponentialFamily
    from minidl.distributions.kl import _kl_expfamily_expfamily

    p = D.ContinuousBernoulli(logits=f64(CB_LOGITS, requires_grad=True))
    np.testing.assert_allclose(ExponentialFamily.entropy(p).detach().numpy(),
                               p.entropy().detach().numpy(), rtol=1e-7, atol=1e-12)
    tp = TD.ContinuousBernoulli(logits=torch.tensor(CB_LOGITS))
    np.testing.assert_allclose(ExponentialFamily.entropy(p).detach().numpy(),
                               TD.ExponentialFamily.entropy(tp).detach().numpy(), rtol=1e-10)
    q_logits = CB_LOGITS[::-1].copy() * 0.7
    q = D.ContinuousBernoulli(logits=f64(q_logits))
    tq = TD.ContinuousBernoulli(logits=torch.tensor(q_logits))
    breg = _kl_expfamily_expfamily(p, q)
    np.testing.assert_allclose(breg.detach().numpy(),
                               torch.distributions.kl._kl_expfamily_expfamily(tp, tq).detach().numpy(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(breg.detach().numpy(), D.kl_divergence(p, q).detach().numpy(),
                               rtol=1e-6, atol=1e-9)
    assert isinstance(p, D.ExponentialFamily)
    with pytest.raises(NotImplementedError, match="different exponential families"):
        _kl_expfamily_expfamily(p, _OtherFamily())


class _OtherFamily(D.ExponentialFamily):
    def __init__(self):
        super().__init__(())


KL_CASES = [
    ("cb_cb", lambda M, t: (M.ContinuousBernoulli(probs=t(CB_PROBS)),
                            M.ContinuousBernoulli(logits=t(CB_LOGITS)))),
    ("beta_cb", lambda M, t: (M.Beta(t(A[:1]), t(B[:1])), M.ContinuousBernoulli(probs=t([0.3])))),
    ("uniform_cb", lambda M, t: (M.Uniform(t([0.1, -0.1]), t([0.8, 0.5])),
                                 M.ContinuousBernoulli(probs=t([0.3, 0.6])))),
    ("cb_exponential", lambda M, t: (M.ContinuousBernoulli(probs=t(CB_PROBS)),
                                     M.Exponential(t(np.full(5, 1.5))))),
    ("cb_normal", lambda M, t: (M.ContinuousBernoulli(probs=t(CB_PROBS)),
                                M.Normal(t(np.full(5, 0.3)), t(np.full(5, 2.0))))),
    ("cb_uniform", lambda M, t: (M.ContinuousBernoulli(probs=t([0.3, 0.6])),
                                 M.Uniform(t([-0.1, 0.2]), t([1.2, 1.1])))),
    ("cb_pareto", lambda M, t: (M.ContinuousBernoulli(probs=t([0.3])), M.Pareto(t([1.0]), t([2.0])))),
    ("normal_cb", lambda M, t: (M.Normal(t([0.0]), t([1.0])), M.ContinuousBernoulli(probs=t([0.3])))),
    ("gamma_cb", lambda M, t: (M.Gamma(t([2.0]), t([1.0])), M.ContinuousBernoulli(probs=t([0.3])))),
]


@pytest.mark.parametrize("name,make", KL_CASES, ids=[c[0] for c in KL_CASES])
def test_kl_divergences_match_torch(name, make):
    torch = _torch()
    import torch.distributions as TD

    mp, mq = make(D, f64)
    tp, tq = make(TD, lambda a: torch.tensor(np.asarray(a, dtype=np.float64)))
    np.testing.assert_allclose(D.kl_divergence(mp, mq).numpy(),
                               TD.kl_divergence(tp, tq).numpy(), rtol=1e-9, atol=1e-12)


# ---- transforms and the constraint registry ---------------------------------------------------
TRANSFORMS = [
    ("abs", lambda T: T.AbsTransform(), (4, 3), False),
    ("power", lambda T: T.PowerTransform(2.5), "pos", True),
    ("softplus", lambda T: T.SoftplusTransform(), (4, 3), True),
    ("softmax", lambda T: T.SoftmaxTransform(), (4, 3), False),
    ("stick_breaking", lambda T: T.StickBreakingTransform(), (4, 3), True),
    ("lower_cholesky", lambda T: T.LowerCholeskyTransform(), (2, 3, 3), False),
    ("positive_definite", lambda T: T.PositiveDefiniteTransform(), (2, 3, 3), False),
    ("corr_cholesky", lambda T: T.CorrCholeskyTransform(), (5, 6), True),
    ("reshape", lambda T: T.ReshapeTransform((2, 3), (3, 2)), (4, 2, 3), True),
    ("independent", lambda T: T.IndependentTransform(T.ExpTransform(), 1), (4, 3), True),
    ("cat", lambda T: T.CatTransform([T.ExpTransform(), T.identity_transform,
                                      T.SoftplusTransform()], dim=1), (4, 3), True),
    ("cat_rows", lambda T: T.CatTransform([T.ExpTransform(), T.identity_transform], dim=0,
                                          lengths=[2, 2]), (4, 3), True),
    ("stack", lambda T: T.StackTransform([T.ExpTransform(), T.identity_transform,
                                          T.SoftplusTransform()], dim=1), (4, 3), True),
    ("identity", lambda T: T.identity_transform, (4, 3), True),
    ("compose_vector", lambda T: T.ComposeTransform([T.StickBreakingTransform(),
                                                     T.AffineTransform(0.0, 2.0)]), (4, 3), True),
]


@pytest.mark.parametrize("name,make,shape,has_logdet", TRANSFORMS, ids=[t[0] for t in TRANSFORMS])
def test_transforms_match_torch(name, make, shape, has_logdet):
    torch = _torch()
    import torch.distributions.transforms as TT

    x = np.abs(R.standard_normal((4, 3))) + 0.1 if shape == "pos" else R.standard_normal(shape)
    tm, tt = make(MT), make(TT)
    xm, xt = f64(x), torch.tensor(x)
    ym, yt = tm(xm), tt(xt)
    np.testing.assert_allclose(ym.numpy(), yt.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tm.inv(ym).numpy(), tt.inv(yt).numpy(), rtol=1e-10, atol=1e-12)
    if has_logdet:
        np.testing.assert_allclose(tm.log_abs_det_jacobian(xm, ym).numpy(),
                                   tt.log_abs_det_jacobian(xt, yt).numpy(), rtol=1e-11,
                                   atol=1e-12)
    assert tuple(tm.forward_shape(x.shape)) == tuple(tt.forward_shape(torch.Size(x.shape)))
    assert tuple(tm.inverse_shape(ym.shape)) == tuple(tt.inverse_shape(yt.shape))
    assert tm.domain.event_dim == tt.domain.event_dim
    assert tm.codomain.event_dim == tt.codomain.event_dim
    assert tm.bijective == tt.bijective
    assert bool(tm.codomain.check(ym).all())


@pytest.mark.parametrize("make", [lambda: MT.StickBreakingTransform(),
                                  lambda: MT.CorrCholeskyTransform(),
                                  lambda: MT.SoftplusTransform(),
                                  lambda: MT.PowerTransform(f64([1.5, 0.5, 2.0]))])
def test_transform_gradients(make):
    t = make()
    x = f64(np.abs(R.standard_normal((2, 3))) + 0.2, requires_grad=True)
    assert gradcheck(lambda v: t(v), [x])
    assert gradcheck(lambda v: t.log_abs_det_jacobian(v, t(v)), [x])
    y = t(x).detach().requires_grad_()
    assert gradcheck(lambda v: t.inv(v), [y])


def test_log_abs_det_jacobian_is_the_log_determinant():
    """For the bijections onto manifolds, the log-det against the Jacobian of the map onto
    independent coordinates (all but the last simplex entry; the strict lower triangle)."""
    x = R.standard_normal(3)
    t = MT.StickBreakingTransform()

    def coords(v):
        return t(f64(v)).numpy()[:-1]
    jac = np.array([(coords(x + h) - coords(x - h)) / 2e-6 for h in np.eye(3) * 1e-6]).T
    want = np.log(abs(np.linalg.det(jac)))
    got = t.log_abs_det_jacobian(f64(x), t(f64(x))).item()
    assert abs(got - want) < 1e-6


def test_cumulative_distribution_transform():
    torch = _torch()
    import torch.distributions as TD

    x = R.standard_normal(5)
    tm = MT.CumulativeDistributionTransform(D.Normal(f64(0.5), f64(2.0)))
    tt = TD.transforms.CumulativeDistributionTransform(
        TD.Normal(torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)))
    y = tm(f64(x))
    np.testing.assert_allclose(y.numpy(), tt(torch.tensor(x)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(tm.inv(y).numpy(), x, rtol=1e-9)
    np.testing.assert_allclose(tm.log_abs_det_jacobian(f64(x), y).numpy(),
                               tt.log_abs_det_jacobian(torch.tensor(x), None).numpy(), rtol=1e-12)
    assert tm.codomain is constraints.unit_interval


REGISTRY = [
    ("positive", constraints.positive), ("nonnegative", constraints.nonnegative),
    ("greater_than", constraints.greater_than(2.0)), ("less_than", constraints.less_than(1.0)),
    ("unit_interval", constraints.unit_interval), ("interval", constraints.interval(-1.0, 3.0)),
    ("half_open", constraints.half_open_interval(0.0, 1.0)), ("simplex", constraints.simplex),
    ("real_vector", constraints.real_vector), ("corr_cholesky", constraints.corr_cholesky),
    ("lower_cholesky", constraints.lower_cholesky), ("real", constraints.real),
    ("positive_definite", constraints.positive_definite),
    ("cat", constraints.cat([constraints.positive, constraints.real], dim=-1, lengths=[1, 2])),
    ("stack", constraints.stack([constraints.positive, constraints.unit_interval, constraints.real],
                                dim=-1)),
]


@pytest.mark.parametrize("name,constraint", REGISTRY, ids=[r[0] for r in REGISTRY])
def test_biject_to_and_transform_to_as_torch(name, constraint):
    torch = _torch()
    from torch.distributions import constraints as TC

    tc = {"positive": TC.positive, "nonnegative": TC.nonnegative,
          "greater_than": TC.greater_than(2.0), "less_than": TC.less_than(1.0),
          "unit_interval": TC.unit_interval, "interval": TC.interval(-1.0, 3.0),
          "half_open": TC.half_open_interval(0.0, 1.0), "simplex": TC.simplex,
          "real_vector": TC.real_vector, "corr_cholesky": TC.corr_cholesky,
          "lower_cholesky": TC.lower_cholesky, "real": TC.real,
          "positive_definite": TC.positive_definite,
          "cat": TC.cat([TC.positive, TC.real], dim=-1, lengths=[1, 2]),
          "stack": TC.stack([TC.positive, TC.unit_interval, TC.real], dim=-1)}[name]
    x = R.standard_normal({"corr_cholesky": (2, 6), "lower_cholesky": (2, 3, 3),
                           "positive_definite": (2, 3, 3)}.get(name, (2, 3)))
    for registry, torch_registry in ((D.biject_to, torch.distributions.biject_to),
                                     (D.transform_to, torch.distributions.transform_to)):
        try:
            want = torch_registry(tc)
        except NotImplementedError:
            with pytest.raises(NotImplementedError, match="Cannot transform"):
                registry(constraint)
            continue
        got = registry(constraint)
        assert type(got).__name__ == type(want).__name__
        y = got(f64(x))
        np.testing.assert_allclose(y.numpy(), want(torch.tensor(x)).numpy(), rtol=1e-12,
                                   atol=1e-14)
        assert bool(constraint.check(y).all())
        if got.bijective:
            np.testing.assert_allclose(got.inv(y).numpy(), x, rtol=1e-8, atol=1e-10)


def test_registry_register_and_errors():
    class Positive2(constraints.Constraint):
        def check(self, value):
            return value > 2

    with pytest.raises(NotImplementedError, match="Cannot transform Positive2 constraints"):
        D.transform_to(Positive2())
    D.transform_to.register(Positive2, lambda c: MT.ComposeTransform(
        [MT.ExpTransform(), MT.AffineTransform(2.0, 1.0)]))
    y = D.transform_to(Positive2())(f64([-3.0, 0.0, 4.0]))
    assert bool((y > 2).all())
    with pytest.raises(TypeError, match="Constraint subclass or instance"):
        D.biject_to.register(int, lambda c: None)


def test_transformed_distribution_of_new_transforms():
    torch = _torch()
    import torch.distributions as TD

    loc = R.standard_normal(6)
    m = D.TransformedDistribution(D.Normal(f64(loc), f64(np.ones(6))), MT.CorrCholeskyTransform())
    t = TD.TransformedDistribution(TD.Normal(torch.tensor(loc), torch.ones(6, dtype=torch.float64)),
                                   TD.transforms.CorrCholeskyTransform())
    assert m.event_shape == tuple(t.event_shape) == (4, 4)
    value = t.sample((3,))
    np.testing.assert_allclose(m.log_prob(f64(value.numpy())).numpy(),
                               t.log_prob(value).numpy(), rtol=1e-9)


def test_names_match_torch():
    _torch()
    import torch.distributions as TD

    wanted = ["ContinuousBernoulli", "FisherSnedecor", "GeneralizedPareto", "HalfCauchy",
              "InverseGamma", "Kumaraswamy", "VonMises", "LogisticNormal", "Wishart",
              "LKJCholesky", "ExponentialFamily", "biject_to", "transform_to"]
    for name in wanted:
        assert hasattr(TD, name) and hasattr(D, name), name
    for name in [n for n in dir(TD.transforms) if n.endswith("Transform")] + ["identity_transform"]:
        assert hasattr(MT, name), name
    for name in dir(TD.constraints):
        if not name.startswith("_") and name not in ("Any", "Callable", "torch",
                                                     "MixtureSameFamilyConstraint",
                                                     "multinomial"):
            assert hasattr(constraints, name), name


EXP_FAMILIES = [
    ("normal", lambda M, t: M.Normal(t(A - 1), t(B))),
    ("bernoulli", lambda M, t: M.Bernoulli(logits=t(A - 2))),
    ("beta", lambda M, t: M.Beta(t(A), t(B))),
    ("dirichlet", lambda M, t: M.Dirichlet(t(np.stack([A, B])))),
    ("exponential", lambda M, t: M.Exponential(t(B))),
    ("gamma", lambda M, t: M.Gamma(t(A), t(B))),
    ("poisson", lambda M, t: M.Poisson(t(B))),
    ("wishart", lambda M, t: M.Wishart(t(np.array([4.5, 7.0])), covariance_matrix=t(COV))),
]


@pytest.mark.parametrize("name,make", EXP_FAMILIES, ids=[c[0] for c in EXP_FAMILIES])
def test_torchs_exponential_families_give_their_natural_parameters(name, make):
    torch = _torch()
    import torch.distributions as TD

    m = make(D, f64)
    t = make(TD, lambda a: torch.tensor(np.asarray(a, dtype=np.float64)))
    assert isinstance(m, D.ExponentialFamily)
    for mp, tp in zip(m._natural_params, t._natural_params):
        np.testing.assert_allclose(np.asarray(mp.detach().numpy()), np.asarray(tp.detach()),
                                   rtol=1e-12)
    lm = m._log_normalizer(*m._natural_params).detach().numpy()
    lt = t._log_normalizer(*t._natural_params).detach().numpy()
    np.testing.assert_allclose(lm, lt, rtol=1e-10)
    if name in ("normal", "bernoulli", "exponential", "gamma", "wishart"):
        # the entropy by Bregman equals the closed form
        np.testing.assert_allclose(D.ExponentialFamily.entropy(m).detach().numpy(),
                                   m.entropy().detach().numpy(), rtol=1e-9, atol=1e-12)


def test_on_the_fake_gpu_match_cpu(monkeypatch, tmp_path):
    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    _fake_gpu.install(monkeypatch, lib)
    results = {}
    for device in ("cpu", "cuda"):
        minidl.manual_seed(3)
        a = minidl.tensor(A, dtype="float64", device=device, requires_grad=True)
        b = minidl.tensor(B, dtype="float64", device=device)
        parts = []
        for d in (D.Kumaraswamy(a, b), D.InverseGamma(a + 2, b), D.HalfCauchy(a),
                  D.ContinuousBernoulli(logits=a - 1), D.LogisticNormal(a, b)):
            x = d.rsample((2,))
            assert x.device == device
            parts.append(d.log_prob(x).sum())
        v = D.VonMises(a, b)
        s = v.sample((3,))
        assert s.device == device
        parts.append(v.log_prob(s).sum())
        cov = minidl.tensor(COV[0], dtype="float64", device=device)
        w = D.Wishart(a[:1] + 3, covariance_matrix=cov)
        parts.append(w.log_prob(w.rsample()).sum() + w.entropy().sum())
        lkj = D.LKJCholesky(3, a[:1])
        parts.append(lkj.log_prob(lkj.sample()).sum())
        corr = MT.CorrCholeskyTransform()
        parts.append(corr.log_abs_det_jacobian(a, corr(a)))
        out = sum(parts[1:], parts[0])
        out.backward()
        assert out.device == device and a.grad.device == device
        results[device] = (out.item(), a.grad.numpy())
    np.testing.assert_allclose(results["cpu"][0], results["cuda"][0], rtol=1e-12)
    np.testing.assert_allclose(results["cpu"][1], results["cuda"][1], rtol=1e-10)


# ---- transforms: event_dim where domain and codomain differ -----------------------------------

def test_transform_event_dim_is_refused_where_domain_and_codomain_differ():
    for t in (D.CorrCholeskyTransform(), D.ReshapeTransform((6,), (2, 3))):
        with pytest.raises(ValueError, match="domain.event_dim or .codomain.event_dim"):
            t.event_dim
        assert t.domain.event_dim != t.codomain.event_dim
    assert D.StickBreakingTransform().event_dim == 1
    assert D.ExpTransform().event_dim == 0


# ---- distributions: transforms and TransformedDistribution ------------------------------------

rng = np.random.default_rng(20261207)


def t64(a, grad=False):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=np.float64, requires_grad=grad)


def test_inverse_transform_swaps_forward_and_inverse_shapes():
    """The inverse of a transform kept its forward_shape/inverse_shape instead of swapping
    them, so TransformedDistribution(Dirichlet(...), StickBreakingTransform().inv) had events of
    K entries (not K - 1) and its log_prob refused its own samples. Its ``bijective`` was
    always True (SoftmaxTransform().inv is not)."""
    inv = T.StickBreakingTransform().inv
    assert tuple(inv.forward_shape((3, 4))) == (3, 3)
    assert tuple(inv.inverse_shape((3, 4))) == (3, 5)
    assert T.SoftmaxTransform().inv.bijective is False
    d = D.TransformedDistribution(D.Dirichlet(t64(np.ones((2, 4)))), [inv])
    assert tuple(d.batch_shape) == (2,) and tuple(d.event_shape) == (3,)
    x = d.sample((5,))
    assert tuple(x.shape) == (5, 2, 3)
    lp = d.log_prob(x)
    assert tuple(lp.shape) == (5, 2) and np.isfinite(lp.numpy()).all()


def test_affine_transform_broadcasts_the_base_distribution():
    """AffineTransform's forward_shape ignored loc's and scale's shapes, so
    TransformedDistribution(Normal(0, 1), AffineTransform(loc of shape (3,), 2)) had batch shape
    () and sample((2,)) failed to broadcast (2,) with (3,); torch expands the base to (3,)."""
    loc = t64([1.0, 2.0, 3.0])
    d = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)), [T.AffineTransform(loc, 2.0)])
    assert tuple(d.batch_shape) == (3,)
    assert tuple(d.base_dist.batch_shape) == (3,)
    assert tuple(d.sample((2,)).shape) == (2, 3)
    value = t64([[0.0, 1.0, 2.0]])
    want = -0.5 * ((value.numpy() - loc.numpy()) / 2) ** 2 - math.log(2) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(d.log_prob(value).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("transform", [T.AbsTransform(), T.StickBreakingTransform(),
                                       T.SoftmaxTransform(), T.ReshapeTransform((2,), (2, 1)),
                                       T.CatTransform([T.ExpTransform(), T.AbsTransform()],
                                                      dim=-1)])
def test_sign_of_non_monotone_transforms_is_refused(transform):
    """Every transform had sign = 1, so TransformedDistribution(Normal, AbsTransform()).cdf
    returned the Normal's cdf at the non-negative preimage (a wrong number) instead of refusing
    as torch does (NotImplementedError: the transform is not monotone)."""
    with pytest.raises(NotImplementedError):
        transform.sign


def test_transformed_cdf_refuses_a_non_monotone_transform():
    """The cdf/icdf half of the sign problem above: a folded Normal's cdf at 0.5 came out as
    Phi(0.5) = 0.69 (its true value is 0.38); torch raises."""
    d = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)), [T.AbsTransform()])
    with pytest.raises(NotImplementedError):
        d.cdf(t64(0.5))
    with pytest.raises(NotImplementedError):
        d.icdf(t64(0.5))
    # monotone ones still have their sign (and cdf)
    assert T.ComposeTransform([T.ExpTransform(), T.AffineTransform(0.0, -2.0)]).sign == -1
    e = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)),
                                  [T.ExpTransform(), T.AffineTransform(0.0, -1.0)])
    np.testing.assert_allclose(e.cdf(t64(-1.0)).numpy(), 0.5, rtol=1e-12)


def test_inverse_of_a_transform_is_one_object():
    """Transform.inv and ComposeTransform.inv made a new object on each call, so t.inv.inv was
    not t (torch keeps each inverse while it lives: t.inv is t.inv, t.inv.inv is t); the
    cached inverse must not stop a transform from pickling."""
    import copy
    import pickle

    for t in (T.ExpTransform(), T.AffineTransform(1.0, 2.0),
              T.ComposeTransform([T.ExpTransform(), T.AffineTransform(0.0, -1.0)])):
        assert t.inv is t.inv
        assert t.inv.inv is t
        again = pickle.loads(pickle.dumps(t))
        assert again == t and again.inv.inv is again
        assert copy.deepcopy(t) == t
    d = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)), [T.ExpTransform()])
    d.log_prob(t64(2.0))
    np.testing.assert_allclose(pickle.loads(pickle.dumps(d)).log_prob(t64(2.0)).numpy(),
                               d.log_prob(t64(2.0)).numpy())


def test_transform_to_positive_semidefinite():
    """transform_to(constraints.positive_semidefinite) raised NotImplementedError; torch maps it
    with PositiveDefiniteTransform, as for positive_definite."""
    t = D.transform_to(constraints.positive_semidefinite)
    assert isinstance(t, T.PositiveDefiniteTransform)
    y = t(t64(rng.standard_normal((2, 3, 3))))
    assert bool(constraints.positive_semidefinite.check(y).numpy().all())


def test_with_cache_of_compose_and_inverse_transforms():
    """ComposeTransform(...).with_cache() and SomeTransform().inv.with_cache() raised
    NotImplementedError (torch caches through both), so a cached tanh-squashed chain could not
    give back the exact x of its own sample."""
    x = t64([0.3, 2.0])
    for t in (T.ComposeTransform([T.ExpTransform(), T.TanhTransform()]), T.ExpTransform().inv,
              T.ComposeTransform([T.SigmoidTransform(), T.AffineTransform(0.0, 2.0)]).inv):
        cached = t.with_cache(1)
        assert cached._cache_size == 1 and cached == t
        y = cached(x)
        assert cached.inv(y) is x
        assert cached.with_cache(1) is cached
