"""minidl.distributions: torch parity (values and parameter gradients in float64), rsample
gradients with the noise fixed, sampling statistics on the seeded generator, shapes as
torch's, argument validation, and two tiny end-to-end trainings (REINFORCE, a VAE step)."""
import math

import numpy as np
import pytest

import minidl
import minidl.distributions as D
import minidl.nn as nn
from minidl import Tensor
from minidl.distributions import _special
from minidl.testing import gradcheck
from helpers import KL_CROSS_PAIRS

R = np.random.default_rng(0)


def _torch():
    return pytest.importorskip("torch", reason="torch parity needs torch installed")


def _parity(build, params, quantity, rtol=1e-9, atol=1e-10):
    """``quantity(build(D, *params), T)`` in minidl and in torch on the same float64 parameters:
    the same values, and the same gradients of a random projection w.r.t. every parameter."""
    torch = _torch()
    import torch.distributions as TD

    mp = [Tensor(np.array(p, dtype=np.float64), requires_grad=True) for p in params]
    tp = [torch.tensor(np.array(p, dtype=np.float64), requires_grad=True) for p in params]
    mo = quantity(build(D, *mp), lambda a: Tensor(np.asarray(a)))
    to = quantity(build(TD, *tp), lambda a: torch.as_tensor(np.asarray(a)))
    assert tuple(mo.shape) == tuple(to.shape)
    assert mo.dtype == np.dtype(str(to.dtype).replace("torch.", ""))
    np.testing.assert_allclose(mo.numpy(), to.detach().numpy(), rtol=rtol, atol=atol)
    if not to.requires_grad:
        return
    proj = np.random.default_rng(1).standard_normal(to.shape)
    (to * torch.tensor(proj)).sum().backward()
    (mo * Tensor(proj)).sum().backward()
    for i, (m, t) in enumerate(zip(mp, tp)):
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        mg = np.zeros(m.shape) if m.grad is None else m.grad.numpy()
        np.testing.assert_allclose(mg, tg, rtol=1e-7, atol=1e-9, err_msg=f"gradient of parameter {i}")


LOC, SCALE = R.standard_normal((3, 2)), R.random((3, 2)) + 0.5
NVALUE = R.standard_normal((4, 3, 2)) * 2
U01 = R.random((4, 3, 2)) * 0.98 + 0.01
LOW = R.standard_normal(3)
HIGH = LOW + R.random(3) + 0.5
UVALUE = LOW + np.array([0.1, 0.5, 0.9])[:, None] * (HIGH - LOW)  # (3, 3), inside
PROBS = R.random(4) * 0.8 + 0.1
LOGITS = np.array([-50.0, -3.0, 0.4, 45.0])
BVALUE = np.tile([0.0, 1.0, 1.0, 0.0], (5, 1))
CPROBS = R.random((3, 5)) + 0.1  # unnormalised
CLOGITS = R.standard_normal((3, 5)) * 2
CVALUE = R.integers(0, 5, (6, 3))
ONEHOT = np.eye(5)[CVALUE]
_X = R.standard_normal((2, 3, 3))
MLOC, MCOV = R.standard_normal(3), _X @ _X.transpose(0, 2, 1) + np.eye(3)
MTRIL, MVALUE = np.linalg.cholesky(MCOV), R.standard_normal((4, 2, 3))
GCONC, GRATE = np.array([0.4, 1.0, 2.5, 9.0]), np.array([0.5, 2.0, 1.0, 3.0])
GVALUE = R.random((3, 4)) * 4 + 0.01
BVALUE01 = R.random((3, 4)) * 0.98 + 0.01
DCONC = np.array([[0.5, 2.0, 3.0], [0.3, 0.2, 0.9]])
DVALUE = R.dirichlet([1.0, 1.0, 1.0], size=(5, 2))

normal = lambda D, loc, scale: D.Normal(loc, scale)  # noqa: E731
uniform = lambda D, low, high: D.Uniform(low, high)  # noqa: E731
bern_p = lambda D, p: D.Bernoulli(probs=p)  # noqa: E731
bern_l = lambda D, logit: D.Bernoulli(logits=logit)  # noqa: E731
cat_p = lambda D, p: D.Categorical(probs=p)  # noqa: E731
cat_l = lambda D, logit: D.Categorical(logits=logit)  # noqa: E731
ohc_l = lambda D, logit: D.OneHotCategorical(logits=logit)  # noqa: E731
ind_n = lambda D, loc, scale: D.Independent(D.Normal(loc, scale), 1)  # noqa: E731
gamma = lambda D, c, r: D.Gamma(c, r)  # noqa: E731
beta = lambda D, a, b: D.Beta(a, b)  # noqa: E731
dirichlet = lambda D, c: D.Dirichlet(c)  # noqa: E731
expo = lambda D, r: D.Exponential(r)  # noqa: E731
laplace = lambda D, loc, scale: D.Laplace(loc, scale)  # noqa: E731
poisson = lambda D, r: D.Poisson(r)  # noqa: E731
lognormal = lambda D, loc, scale: D.LogNormal(loc, scale)  # noqa: E731
squashed = lambda D, loc, scale: D.TransformedDistribution(  # noqa: E731
    D.Normal(loc, scale), [D.AffineTransform(0.5, 2.0), D.TanhTransform(), D.SigmoidTransform()])
affine_event = lambda D, loc, scale: D.TransformedDistribution(  # noqa: E731
    D.Normal(loc, scale), D.AffineTransform(loc * 0.5, -1.5, event_dim=1))
cauchy = lambda D, loc, scale: D.Cauchy(loc, scale)  # noqa: E731
half = lambda D, scale: D.HalfNormal(scale)  # noqa: E731
student = lambda D, df, loc, scale: D.StudentT(df, loc, scale)  # noqa: E731
chi2 = lambda D, df: D.Chi2(df)  # noqa: E731
geom_p = lambda D, p: D.Geometric(probs=p)  # noqa: E731
geom_l = lambda D, logit: D.Geometric(logits=logit)  # noqa: E731
binom_p = lambda D, p: D.Binomial(10, probs=p)  # noqa: E731
binom_l = lambda D, logit: D.Binomial(10, logits=logit)  # noqa: E731
relaxed_b = lambda D, temp, logit: D.RelaxedBernoulli(temp, logits=logit)  # noqa: E731
relaxed_c = lambda D, temp, logit: D.RelaxedOneHotCategorical(temp, logits=logit)  # noqa: E731
mixture = lambda D, w, loc, scale: D.MixtureSameFamily(D.Categorical(logits=w), D.Normal(loc, scale))  # noqa: E731
mixture_vec = lambda D, w, loc, scale: D.MixtureSameFamily(  # noqa: E731
    D.Categorical(logits=w), D.Independent(D.Normal(loc, scale), 1))
gumbel = lambda D, loc, scale: D.Gumbel(loc, scale)  # noqa: E731
LRW, LRD = R.standard_normal((3, 2)), R.random(3) + 0.5
lowrank = lambda D, loc, w, d: D.LowRankMultivariateNormal(loc, w, d)  # noqa: E731
MCOUNTS = np.random.default_rng(5).multinomial(10, [0.1, 0.2, 0.3, 0.15, 0.25], size=(4, 3)).astype(float)
multinomial = lambda D, p: D.Multinomial(10, probs=p)  # noqa: E731
multinomial_l = lambda D, logit: D.Multinomial(10, logits=logit)  # noqa: E731
negbin = lambda D, n, logit: D.NegativeBinomial(n, logits=logit)  # noqa: E731
negbin_p = lambda D, n, p: D.NegativeBinomial(n, probs=p)  # noqa: E731
weibull = lambda D, s, k: D.Weibull(s, k)  # noqa: E731
pareto = lambda D, s, a: D.Pareto(s, a)  # noqa: E731
mvn_c = lambda D, loc, cov: D.MultivariateNormal(loc, covariance_matrix=cov)  # noqa: E731
mvn_p = lambda D, loc, prec: D.MultivariateNormal(loc, precision_matrix=prec)  # noqa: E731
mvn_t = lambda D, loc, tril: D.MultivariateNormal(loc, scale_tril=tril)  # noqa: E731

PARITY = [
    ("normal.log_prob", normal, [LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE))),
    ("normal.cdf", normal, [LOC, SCALE], lambda d, T: d.cdf(T(NVALUE))),
    ("normal.icdf", normal, [LOC, SCALE], lambda d, T: d.icdf(T(U01))),
    ("normal.entropy", normal, [LOC, SCALE], lambda d, T: d.entropy()),
    ("normal.mean", normal, [LOC, SCALE], lambda d, T: d.mean),
    ("normal.variance", normal, [LOC, SCALE], lambda d, T: d.variance),
    ("normal.stddev", normal, [LOC, SCALE], lambda d, T: d.stddev),
    ("normal.number_scale", lambda D, loc: D.Normal(loc, 2.5), [LOC],
     lambda d, T: d.log_prob(T(NVALUE))),
    ("uniform.log_prob", uniform, [LOW, HIGH], lambda d, T: d.log_prob(T(UVALUE))),
    ("uniform.cdf", uniform, [LOW, HIGH], lambda d, T: d.cdf(T(UVALUE))),
    ("uniform.icdf", uniform, [LOW, HIGH], lambda d, T: d.icdf(T(U01[0, :, :1]))),
    ("uniform.entropy", uniform, [LOW, HIGH], lambda d, T: d.entropy()),
    ("uniform.mean", uniform, [LOW, HIGH], lambda d, T: d.mean),
    ("uniform.variance", uniform, [LOW, HIGH], lambda d, T: d.variance),
    ("uniform.stddev", uniform, [LOW, HIGH], lambda d, T: d.stddev),
    ("bernoulli_probs.log_prob", bern_p, [PROBS], lambda d, T: d.log_prob(T(BVALUE))),
    ("bernoulli_probs.entropy", bern_p, [PROBS], lambda d, T: d.entropy()),
    ("bernoulli_probs.logits", bern_p, [PROBS], lambda d, T: d.logits),
    ("bernoulli_probs.variance", bern_p, [PROBS], lambda d, T: d.variance),
    ("bernoulli_edge_probs.log_prob", bern_p, [np.array([0.0, 1.0, 0.5, 1e-20])],
     lambda d, T: d.log_prob(T(BVALUE))),
    ("bernoulli_edge_probs.entropy", bern_p, [np.array([0.0, 1.0, 0.5, 1e-20])], lambda d, T: d.entropy()),
    ("categorical_zero_probs.entropy", cat_p, [np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])],
     lambda d, T: d.entropy()),
    ("categorical_zero_probs.log_prob", cat_p, [np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])],
     lambda d, T: d.log_prob(T(np.array([[1, 0], [2, 0]])))),
    ("bernoulli_logits.log_prob", bern_l, [LOGITS], lambda d, T: d.log_prob(T(BVALUE))),
    ("bernoulli_logits.entropy", bern_l, [LOGITS], lambda d, T: d.entropy()),
    ("bernoulli_logits.mean", bern_l, [LOGITS], lambda d, T: d.mean),
    ("categorical_probs.log_prob", cat_p, [CPROBS], lambda d, T: d.log_prob(T(CVALUE))),
    ("categorical_probs.entropy", cat_p, [CPROBS], lambda d, T: d.entropy()),
    ("categorical_probs.probs", cat_p, [CPROBS], lambda d, T: d.probs),
    ("categorical_probs.logits", cat_p, [CPROBS], lambda d, T: d.logits),
    ("categorical_logits.log_prob", cat_l, [CLOGITS], lambda d, T: d.log_prob(T(CVALUE))),
    ("categorical_logits.entropy", cat_l, [CLOGITS], lambda d, T: d.entropy()),
    ("categorical_logits.probs", cat_l, [CLOGITS], lambda d, T: d.probs),
    ("categorical_logits.broadcast_value", cat_l, [CLOGITS],
     lambda d, T: d.log_prob(T(CVALUE[:1, :1]))),
    ("onehot.log_prob", ohc_l, [CLOGITS], lambda d, T: d.log_prob(T(ONEHOT))),
    ("onehot.entropy", ohc_l, [CLOGITS], lambda d, T: d.entropy()),
    ("onehot.mean", ohc_l, [CLOGITS], lambda d, T: d.mean),
    ("onehot.variance", ohc_l, [CLOGITS], lambda d, T: d.variance),
    ("independent.log_prob", ind_n, [LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE))),
    ("independent.entropy", ind_n, [LOC, SCALE], lambda d, T: d.entropy()),
    ("independent.variance", ind_n, [LOC, SCALE], lambda d, T: d.variance),
    ("gamma.log_prob", gamma, [GCONC, GRATE], lambda d, T: d.log_prob(T(GVALUE))),
    ("gamma.entropy", gamma, [GCONC, GRATE], lambda d, T: d.entropy()),
    ("gamma.mean", gamma, [GCONC, GRATE], lambda d, T: d.mean),
    ("gamma.mode", gamma, [GCONC, GRATE], lambda d, T: d.mode),
    ("gamma.variance", gamma, [GCONC, GRATE], lambda d, T: d.variance),
    ("beta.log_prob", beta, [GCONC, GRATE], lambda d, T: d.log_prob(T(BVALUE01))),
    ("beta.entropy", beta, [GCONC, GRATE], lambda d, T: d.entropy()),
    ("beta.mean", beta, [GCONC, GRATE], lambda d, T: d.mean),
    ("beta.mode", beta, [GCONC + 1, GRATE + 1], lambda d, T: d.mode),
    ("beta.variance", beta, [GCONC, GRATE], lambda d, T: d.variance),
    ("dirichlet.log_prob", dirichlet, [DCONC], lambda d, T: d.log_prob(T(DVALUE))),
    ("dirichlet.entropy", dirichlet, [DCONC], lambda d, T: d.entropy()),
    ("dirichlet.mean", dirichlet, [DCONC], lambda d, T: d.mean),
    ("dirichlet.mode", dirichlet, [DCONC], lambda d, T: d.mode),
    ("dirichlet.variance", dirichlet, [DCONC], lambda d, T: d.variance),
    ("exponential.log_prob", expo, [GRATE], lambda d, T: d.log_prob(T(GVALUE))),
    ("exponential.cdf", expo, [GRATE], lambda d, T: d.cdf(T(GVALUE))),
    ("exponential.icdf", expo, [GRATE], lambda d, T: d.icdf(T(BVALUE01))),
    ("exponential.entropy", expo, [GRATE], lambda d, T: d.entropy()),
    ("exponential.moments", expo, [GRATE], lambda d, T: d.mean + d.variance * 2 + d.stddev * 3),
    ("laplace.log_prob", laplace, [LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE))),
    ("laplace.cdf", laplace, [LOC, SCALE], lambda d, T: d.cdf(T(NVALUE))),
    ("laplace.icdf", laplace, [LOC, SCALE], lambda d, T: d.icdf(T(U01))),
    ("laplace.entropy", laplace, [LOC, SCALE], lambda d, T: d.entropy()),
    ("laplace.moments", laplace, [LOC, SCALE], lambda d, T: d.mean + d.variance * 2 + d.stddev * 3),
    ("poisson.log_prob", poisson, [GRATE * 3], lambda d, T: d.log_prob(T(np.floor(GVALUE * 3)))),
    ("poisson.moments", poisson, [GRATE * 3], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("normal.mode", normal, [LOC, SCALE], lambda d, T: d.mode),
    ("bernoulli.mode", bern_p, [np.array([0.2, 0.7, 0.5])], lambda d, T: d.mode),
    ("categorical.mode", cat_l, [CLOGITS], lambda d, T: d.mode),
    ("categorical.perplexity", cat_l, [CLOGITS], lambda d, T: d.perplexity()),
    ("lognormal.log_prob", lognormal, [LOC, SCALE], lambda d, T: d.log_prob(T(np.exp(NVALUE)))),
    ("lognormal.cdf", lognormal, [LOC, SCALE], lambda d, T: d.cdf(T(np.exp(NVALUE)))),
    ("lognormal.icdf", lognormal, [LOC, SCALE], lambda d, T: d.icdf(T(U01))),
    ("lognormal.entropy", lognormal, [LOC, SCALE], lambda d, T: d.entropy()),
    ("lognormal.moments", lognormal, [LOC, SCALE], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("squashed.log_prob", squashed, [LOC, SCALE], lambda d, T: d.log_prob(T(U01 * 0.5 + 0.25))),
    ("affine_event.log_prob", affine_event, [LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE))),
    ("cauchy.log_prob", cauchy, [LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE))),
    ("cauchy.cdf", cauchy, [LOC, SCALE], lambda d, T: d.cdf(T(NVALUE))),
    ("cauchy.icdf", cauchy, [LOC, SCALE], lambda d, T: d.icdf(T(U01))),
    ("cauchy.entropy", cauchy, [LOC, SCALE], lambda d, T: d.entropy()),
    ("halfnormal.log_prob", half, [SCALE], lambda d, T: d.log_prob(T(np.abs(NVALUE)))),
    ("halfnormal.cdf", half, [SCALE], lambda d, T: d.cdf(T(np.abs(NVALUE)))),
    ("halfnormal.icdf", half, [SCALE], lambda d, T: d.icdf(T(U01))),
    ("halfnormal.entropy", half, [SCALE], lambda d, T: d.entropy()),
    ("halfnormal.moments", half, [SCALE], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("studentT.log_prob", student, [SCALE * 5, LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE))),
    ("studentT.entropy", student, [SCALE * 5, LOC, SCALE], lambda d, T: d.entropy()),
    ("studentT.moments", student, [SCALE * 5, LOC, SCALE], lambda d, T: d.mean + d.variance * 2),
    ("chi2.log_prob", chi2, [GRATE * 3], lambda d, T: d.log_prob(T(GVALUE))),
    ("chi2.entropy", chi2, [GRATE * 3], lambda d, T: d.entropy()),
    ("geometric_probs.log_prob", geom_p, [PROBS], lambda d, T: d.log_prob(T(np.floor(GVALUE * 2)))),
    ("geometric_probs.entropy", geom_p, [PROBS], lambda d, T: d.entropy()),
    ("geometric_logits.log_prob", geom_l, [LOGITS * 0.1], lambda d, T: d.log_prob(T(np.floor(GVALUE * 2)))),
    ("geometric.moments", geom_p, [PROBS], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("binomial_probs.log_prob", binom_p, [PROBS], lambda d, T: d.log_prob(T(np.floor(GVALUE * 2.5)))),
    ("binomial_probs.entropy", binom_p, [PROBS], lambda d, T: d.entropy()),
    ("binomial_logits.log_prob", binom_l, [LOGITS], lambda d, T: d.log_prob(T(np.floor(GVALUE * 2.5)))),
    ("binomial.moments", binom_p, [PROBS], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("relaxed_bernoulli.log_prob", relaxed_b, [np.array(0.7), CLOGITS],
     lambda d, T: d.log_prob(T(np.random.default_rng(4).random((4, 3, 5)) * 0.9 + 0.05))),
    ("relaxed_onehot.log_prob", relaxed_c, [np.array(0.6), CLOGITS],
     lambda d, T: d.log_prob(T(np.random.default_rng(3).dirichlet(np.ones(5), size=(4, 3))))),
    ("mixture.log_prob", mixture, [CLOGITS[0, :3], LOC[:, 0], SCALE[:, 0]], lambda d, T: d.log_prob(T(NVALUE[:, :, 0]))),
    ("mixture.cdf", mixture, [CLOGITS[:, :2], LOC, SCALE], lambda d, T: d.cdf(T(NVALUE[:, :, 0]))),
    ("mixture.mean", mixture, [CLOGITS[0, :2], LOC, SCALE], lambda d, T: d.mean),
    ("mixture.variance", mixture, [CLOGITS[0, :2], LOC, SCALE], lambda d, T: d.variance),
    ("mixture_vec.log_prob", mixture_vec, [CLOGITS[0, :3], LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE[:, 0]))),
    ("mixture_vec.variance", mixture_vec, [CLOGITS[0, :3], LOC, SCALE], lambda d, T: d.variance),
    ("gumbel.log_prob", gumbel, [LOC, SCALE], lambda d, T: d.log_prob(T(NVALUE))),
    ("gumbel.cdf", gumbel, [LOC, SCALE], lambda d, T: d.cdf(T(NVALUE))),
    ("gumbel.icdf", gumbel, [LOC, SCALE], lambda d, T: d.icdf(T(U01))),
    ("gumbel.entropy", gumbel, [LOC, SCALE], lambda d, T: d.entropy()),
    ("gumbel.moments", gumbel, [LOC, SCALE], lambda d, T: d.mean + d.variance * 2 + d.stddev * 3 + d.mode),
    ("lowrank.log_prob", lowrank, [LOC.T, LRW, LRD], lambda d, T: d.log_prob(T(NVALUE.transpose(0, 2, 1)))),
    ("lowrank.entropy", lowrank, [LOC.T, LRW, LRD], lambda d, T: d.entropy()),
    ("lowrank.variance", lowrank, [LOC.T, LRW, LRD], lambda d, T: d.variance),
    ("lowrank.covariance", lowrank, [LOC.T, LRW, LRD], lambda d, T: d.covariance_matrix),
    ("lowrank.precision", lowrank, [LOC.T, LRW, LRD], lambda d, T: d.precision_matrix),
    ("lowrank.scale_tril", lowrank, [LOC.T, LRW, LRD], lambda d, T: d.scale_tril),
    ("multinomial.log_prob", multinomial, [CPROBS], lambda d, T: d.log_prob(T(MCOUNTS))),
    ("multinomial_logits.log_prob", multinomial_l, [CLOGITS], lambda d, T: d.log_prob(T(MCOUNTS))),
    ("multinomial.moments", multinomial, [CPROBS], lambda d, T: d.mean + d.variance * 2),
    ("negative_binomial.log_prob", negbin, [GCONC * 3, LOGITS * 0.1], lambda d, T: d.log_prob(T(np.floor(GVALUE * 3)))),
    ("negative_binomial_probs.log_prob", negbin_p, [GCONC * 3, PROBS * 0.9], lambda d, T: d.log_prob(T(np.floor(GVALUE * 3)))),
    ("negative_binomial.moments", negbin, [GCONC * 3, LOGITS * 0.1], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("weibull.log_prob", weibull, [GRATE, GCONC + 0.8], lambda d, T: d.log_prob(T(GVALUE))),
    ("weibull.cdf", weibull, [GRATE, GCONC + 0.8], lambda d, T: d.cdf(T(GVALUE))),
    ("weibull.icdf", weibull, [GRATE, GCONC + 0.8], lambda d, T: d.icdf(T(BVALUE01))),
    ("weibull.entropy", weibull, [GRATE, GCONC + 0.8], lambda d, T: d.entropy()),
    ("weibull.moments", weibull, [GRATE, GCONC + 0.8], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("pareto.log_prob", pareto, [GRATE, GCONC + 2.5], lambda d, T: d.log_prob(T(GRATE + GVALUE))),
    ("pareto.cdf", pareto, [GRATE, GCONC + 2.5], lambda d, T: d.cdf(T(GRATE + GVALUE))),
    ("pareto.icdf", pareto, [GRATE, GCONC + 2.5], lambda d, T: d.icdf(T(BVALUE01))),
    ("pareto.entropy", pareto, [GRATE, GCONC + 2.5], lambda d, T: d.entropy()),
    ("pareto.moments", pareto, [GRATE, GCONC + 2.5], lambda d, T: d.mean + d.variance * 2 + d.mode * 3),
    ("mvn_cov.log_prob", mvn_c, [MLOC, MCOV], lambda d, T: d.log_prob(T(MVALUE))),
    ("mvn_cov.entropy", mvn_c, [MLOC, MCOV], lambda d, T: d.entropy()),
    ("mvn_cov.scale_tril", mvn_c, [MLOC, MCOV], lambda d, T: d.scale_tril),
    ("mvn_cov.variance", mvn_c, [MLOC, MCOV], lambda d, T: d.variance),
    ("mvn_prec.log_prob", mvn_p, [MLOC, MCOV], lambda d, T: d.log_prob(T(MVALUE))),
    ("mvn_prec.covariance", mvn_p, [MLOC, MCOV], lambda d, T: d.covariance_matrix),
    ("mvn_tril.log_prob", mvn_t, [MLOC, MTRIL], lambda d, T: d.log_prob(T(MVALUE))),
    ("mvn_tril.entropy", mvn_t, [MLOC, MTRIL], lambda d, T: d.entropy()),
    # torch's cholesky_inverse also sends gradients to the (zero) upper triangle of scale_tril,
    # minidl's triangular solve reads the lower one only: compared through tril()
    ("mvn_tril.precision", lambda D, loc, t: D.MultivariateNormal(loc, scale_tril=t.tril()),
     [MLOC, MTRIL], lambda d, T: d.precision_matrix),
    ("mvn_tril.mean", mvn_t, [MLOC, MTRIL], lambda d, T: d.mean),
]


@pytest.mark.parametrize("name,build,params,quantity", PARITY, ids=[p[0] for p in PARITY])
def test_torch_parity_values_and_parameter_gradients(name, build, params, quantity):
    _parity(build, params, quantity)


def _kl(make_p, make_q):
    return lambda D, *ps: (make_p(D, *ps[:len(ps) // 2]), make_q(D, *ps[len(ps) // 2:]))


KL_CASES = [
    ("normal", normal, normal, [LOC, SCALE, LOC[::-1], SCALE[::-1] + 0.2]),
    ("normal_broadcast", normal, normal, [LOC, SCALE, LOC[:1], SCALE[:1]]),
    ("bernoulli_probs", bern_p, bern_p, [PROBS, PROBS[::-1]]),
    ("bernoulli_logits", bern_l, bern_l, [LOGITS, LOGITS[::-1] * 0.1]),
    ("categorical", cat_p, cat_l, [CPROBS, CLOGITS]),
    ("onehot", ohc_l, ohc_l, [CLOGITS, CLOGITS[::-1]]),
    ("uniform_inside", uniform, uniform, [LOW, HIGH, LOW - 0.3, HIGH + 1.0]),
    ("uniform_not_inside", uniform, uniform, [LOW, HIGH, LOW + 0.1, HIGH + 1.0]),
    ("independent", ind_n, ind_n, [LOC, SCALE, LOC * 0.5, SCALE * 2]),
    ("mvn", mvn_c, mvn_t, [MLOC, MCOV, MLOC[::-1], MTRIL[:1] * 1.5]),
    ("gamma", gamma, gamma, [GCONC, GRATE, GRATE, GCONC]),
    ("beta", beta, beta, [GCONC, GRATE, GRATE * 2, GCONC]),
    ("dirichlet", dirichlet, dirichlet, [DCONC, DCONC[::-1] * 2]),
    ("exponential", expo, expo, [GRATE, GCONC]),
    ("laplace", laplace, laplace, [LOC, SCALE, LOC[::-1], SCALE + 1]),
    ("poisson", poisson, poisson, [GRATE, GCONC]),
    ("lognormal", lognormal, lognormal, [LOC, SCALE, LOC[::-1], SCALE + 1]),
    ("halfnormal", half, half, [SCALE, SCALE[::-1] * 2]),
    ("geometric", geom_p, geom_l, [PROBS, LOGITS * 0.1]),
    ("gumbel", gumbel, gumbel, [LOC, SCALE, LOC[::-1], SCALE + 0.5]),
]


@pytest.mark.parametrize("name,make_p,make_q,params", KL_CASES, ids=[k[0] for k in KL_CASES])
def test_kl_divergence_matches_torch(name, make_p, make_q, params):
    half = len(params) // 2

    def build(lib, *ps):
        return (make_p(lib, *ps[:half]), make_q(lib, *ps[half:]))

    _parity(build, params, lambda pq, T: _kl_of(pq))


def _kl_of(pq):
    p, q = pq
    if isinstance(p, D.Distribution):
        return D.kl_divergence(p, q)
    import torch.distributions as TD

    return TD.kl_divergence(p, q)


def test_kl_of_impossible_events_is_inf_as_torch():
    torch = _torch()
    import torch.distributions as TD

    pp, qp = np.array([0.0, 0.3, 1.0, 0.5]), np.array([0.5, 0.0, 0.4, 1.0])
    ours = D.kl_divergence(D.Bernoulli(Tensor(pp)), D.Bernoulli(Tensor(qp))).numpy()
    theirs = TD.kl_divergence(TD.Bernoulli(torch.tensor(pp)), TD.Bernoulli(torch.tensor(qp)))
    np.testing.assert_allclose(ours, theirs.numpy())
    cp, cq = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]), np.array([[0.4, 0.6, 0.0], [0.0, 0.5, 0.5]])
    ours = D.kl_divergence(D.Categorical(Tensor(cp)), D.Categorical(Tensor(cq))).numpy()
    theirs = TD.kl_divergence(TD.Categorical(torch.tensor(cp)), TD.Categorical(torch.tensor(cq)))
    np.testing.assert_allclose(ours, theirs.numpy())
    assert np.isinf(ours[1]) and np.isfinite(ours[0])


def test_kl_registry_dispatch_and_unknown_pairs():
    with pytest.raises(NotImplementedError, match="p type Cauchy and q type Bernoulli"):
        D.kl_divergence(D.Cauchy(0.0, 1.0), D.Bernoulli(0.3))
    # two exponential families: the Bregman rule matches, and refuses different families
    with pytest.raises(NotImplementedError, match="between different exponential families"):
        D.kl_divergence(D.Normal(0.0, 1.0), D.Bernoulli(0.3))

    class Wide(D.Normal):
        pass

    # a subclass uses its parent's rule until it registers its own
    p, q = Wide(0.0, 2.0), D.Normal(1.0, 1.0)
    expected = D.kl_divergence(D.Normal(0.0, 2.0), q).item()
    assert D.kl_divergence(p, q).item() == pytest.approx(expected)

    @D.register_kl(Wide, D.Normal)
    def _kl_wide_normal(p, q):
        return minidl.tensor(-1.0)

    try:
        assert D.kl_divergence(p, q).item() == -1.0
        assert D.kl_divergence(q, q).item() == 0.0
    finally:
        from minidl.distributions import kl

        del kl._KL_REGISTRY[Wide, D.Normal]
        kl._KL_MEMOIZE.clear()
    with pytest.raises(NotImplementedError, match="reinterpreted_batch_ndims"):
        base = D.Normal(minidl.zeros(2, 3), 1.0)
        D.kl_divergence(D.Independent(base, 1), D.Independent(base, 2))
    with pytest.raises(TypeError, match="subclasses of Distribution"):
        D.register_kl(int, D.Normal)


# ---- the special functions behind cdf, icdf and softplus --------------------------------
SPECIAL = [
    ("log1p", _special.log1p, "log1p", R.random(7) * 3 - 0.9),
    ("expm1", _special.expm1, "expm1", R.standard_normal(7) * 3),
    ("softplus", _special.softplus, "nn.functional.softplus", R.standard_normal(7) * 10),
    ("erf", _special.erf, "erf", R.standard_normal(7) * 1.5),
    ("erfinv", _special.erfinv, "erfinv", R.random(7) * 1.98 - 0.99),
    ("lgamma", _special.lgamma, "lgamma", np.array([-2.5, -0.3, 0.02, 0.5, 1.7, 6.3, 40.0])),
    ("digamma", _special.digamma, "digamma", np.array([-2.5, -0.3, 0.02, 0.5, 1.7, 6.3, 40.0])),
]


@pytest.mark.parametrize("name,fn,torch_name,x", SPECIAL, ids=[s[0] for s in SPECIAL])
def test_special_functions_gradcheck_and_torch_parity(name, fn, torch_name, x):
    assert gradcheck(fn, [Tensor(x, requires_grad=True)], atol=1e-6, rtol=1e-6)
    torch = _torch()
    tfn = torch
    for part in torch_name.split("."):
        tfn = getattr(tfn, part)
    tx, mx = torch.tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    ty, my = tfn(tx), fn(mx)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    ty.sum().backward()
    my.sum().backward()
    # torch's trigamma (the gradient of digamma) is good to ~1e-9 only
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-8)
    x32 = x.astype(np.float32)
    assert fn(Tensor(x32)).dtype == np.float32
    np.testing.assert_allclose(fn(Tensor(x32)).numpy(), tfn(torch.tensor(x32)).numpy(), rtol=2e-6, atol=1e-6)


def test_xlogy_gradchecks_and_matches_torch_with_its_zero_case():
    x = np.array([0.0, 0.5, -1.5, 2.0])
    y = np.array([3.0, 0.2, 1.5, 4.0])
    assert gradcheck(_special.xlogy, [Tensor(x, requires_grad=True), Tensor(y, requires_grad=True)])
    torch = _torch()
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    mx, my = Tensor(x, requires_grad=True), Tensor(y, requires_grad=True)
    torch.xlogy(tx, ty).sum().backward()
    out = _special.xlogy(mx, my)
    out.sum().backward()
    np.testing.assert_allclose(out.numpy(), torch.xlogy(tx, ty).detach().numpy())
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy())
    np.testing.assert_allclose(my.grad.numpy(), ty.grad.numpy())
    assert _special.xlogy(Tensor(np.zeros(1)), Tensor(np.zeros(1))).item() == 0.0


def test_special_functions_at_their_edges_match_torch():
    torch = _torch()
    y = np.array([-1.0, 1.0, 1.5, 0.0, 1 - 1e-12, -(1 - 1e-12)])
    np.testing.assert_allclose(_special.erfinv(Tensor(y)).numpy(),
                               torch.erfinv(torch.tensor(y)).numpy(), rtol=1e-7)
    x = np.array([0.0, -1.0, -3.0, np.inf])
    np.testing.assert_array_equal(_special.lgamma(Tensor(x)).numpy(), torch.lgamma(torch.tensor(x)).numpy())
    big = np.array([-800.0, 800.0])
    np.testing.assert_allclose(_special.softplus(Tensor(big)).numpy(), [0.0, 800.0])
    assert _special.softplus(Tensor(np.array([-40.0]))).item() == pytest.approx(math.exp(-40), rel=1e-12)


# ---- rsample: the gradient flows to the parameters ----------------------------------------
def _with_noise(make, shape=(5,)):
    def fn(*params):
        minidl.manual_seed(7)  # the same noise at every call of gradcheck
        return make(*params).rsample(shape)
    return fn


def test_normal_rsample_is_loc_plus_scale_times_noise_and_gradchecks():
    loc = Tensor(LOC.copy(), requires_grad=True)
    scale = Tensor(SCALE.copy(), requires_grad=True)
    minidl.manual_seed(7)
    eps = minidl.randn((5, 3, 2), dtype="float64").numpy()
    x = _with_noise(D.Normal)(loc, scale)
    np.testing.assert_allclose(x.numpy(), LOC + SCALE * eps, rtol=1e-12)
    x.sum().backward()
    np.testing.assert_allclose(loc.grad.numpy(), np.full(LOC.shape, 5.0))
    np.testing.assert_allclose(scale.grad.numpy(), eps.sum(0), rtol=1e-12)
    assert gradcheck(_with_noise(D.Normal), [loc, scale])
    assert D.Normal(loc, scale).has_rsample
    assert not D.Normal(loc, scale).sample((2,)).requires_grad


def test_uniform_and_independent_rsample_gradchecks():
    low = Tensor(LOW.copy(), requires_grad=True)
    high = Tensor(HIGH.copy(), requires_grad=True)
    assert gradcheck(_with_noise(D.Uniform), [low, high])
    loc, scale = Tensor(LOC.copy(), requires_grad=True), Tensor(SCALE.copy(), requires_grad=True)
    assert gradcheck(_with_noise(lambda m, s: D.Independent(D.Normal(m, s), 2)), [loc, scale])
    # a VAE's loss: log-density of its own reparameterised sample
    assert gradcheck(lambda m, s: (lambda d: d.log_prob(_with_noise(lambda: d)()))(
        D.Normal(m, s)), [loc, scale])


def test_multivariate_normal_rsample_gradchecks_and_matches_loc_plus_L_eps():
    loc, tril = Tensor(MLOC.copy(), requires_grad=True), Tensor(MTRIL.copy(), requires_grad=True)
    make = lambda m, t: D.MultivariateNormal(m, scale_tril=t.tril())  # noqa: E731
    assert gradcheck(_with_noise(make), [loc, tril])
    minidl.manual_seed(7)
    eps = minidl.randn((5, 2, 3), dtype="float64").numpy()
    np.testing.assert_allclose(_with_noise(make)(loc, tril).numpy(),
                               MLOC + np.einsum("bij,sbj->sbi", MTRIL, eps), rtol=1e-12)
    cov = Tensor(MCOV[0].copy(), requires_grad=True)
    # through the Cholesky factor of a covariance (kept symmetric by its construction)
    assert gradcheck(lambda c: _with_noise(lambda m, s: D.MultivariateNormal(m, s))(
        loc, (c + c.transpose(0, 1)) * 0.5), [cov])


def test_lowrank_multivariate_normal_rsample_gradchecks_and_statistics():
    loc = Tensor(LOC.T.copy(), requires_grad=True)
    w, d = Tensor(LRW.copy(), requires_grad=True), Tensor(LRD.copy(), requires_grad=True)
    assert gradcheck(_with_noise(D.LowRankMultivariateNormal), [loc, w, d])
    minidl.manual_seed(0)
    lr = D.LowRankMultivariateNormal(minidl.zeros(3, dtype="float64"), Tensor(LRW), Tensor(LRD))
    s = lr.sample((20000,)).numpy()
    np.testing.assert_allclose(np.cov(s.T), LRW @ LRW.T + np.diag(LRD), atol=0.08)
    with pytest.raises(ValueError, match="cov_factor must be a batch of matrices with shape 3 x m"):
        D.LowRankMultivariateNormal(minidl.zeros(3), minidl.zeros(2, 2), minidl.ones(3))
    with pytest.raises(ValueError, match=r"cov_diag must be a batch of vectors with shape \(3,\)"):
        D.LowRankMultivariateNormal(minidl.zeros(3), minidl.zeros(3, 2), minidl.ones(2))
    with pytest.raises(ValueError, match="parameter cov_diag"):
        D.LowRankMultivariateNormal(minidl.zeros(3), minidl.zeros(3, 2), -minidl.ones(3))
    with pytest.raises(ValueError, match="Incompatible batch shapes"):
        D.LowRankMultivariateNormal(minidl.zeros(2, 3), minidl.zeros(4, 3, 2), minidl.ones(3))


def test_private_linalg_gradchecks():
    from minidl.distributions._linalg import cholesky, solve_lower

    x = Tensor(R.standard_normal((2, 3, 3)), requires_grad=True)
    assert gradcheck(lambda a: cholesky(a @ a.transpose(-2, -1) + minidl.eye(3, dtype="float64")), [x])
    L = Tensor(np.tril(R.random((2, 3, 3))) + np.eye(3), requires_grad=True)
    b = Tensor(R.standard_normal((3, 2)), requires_grad=True)
    assert gradcheck(solve_lower, [L, b])
    with pytest.raises(ValueError, match="not positive-definite"):
        cholesky(Tensor(-np.eye(2)))


def test_multivariate_normal_sample_statistics():
    minidl.manual_seed(0)
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    s = D.MultivariateNormal(minidl.tensor([1.0, -1.0]), minidl.tensor(cov)).sample((20000,)).numpy()
    np.testing.assert_allclose(s.mean(0), [1.0, -1.0], atol=0.05)
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.06)


def test_gamma_rsample_gradient_is_the_implicit_one():
    """d sample / d concentration at a fixed quantile: float64-exact against mpmath, within
    torch's own approximation of it, and right on average (d E[x] / d c = 1 / rate)."""
    from minidl.distributions._special import _np_standard_gamma_grad

    a = np.array([0.3, 0.5, 1.0, 2.0, 5.0, 30.0, 100.0, 50.0])
    x = np.array([5.0, 0.3, 1.0, 4.0, 2.0, 28.0, 130.0, 20.0])
    ours = _np_standard_gamma_grad(x, a)
    torch = _torch()
    np.testing.assert_allclose(ours, torch._standard_gamma_grad(torch.tensor(a), torch.tensor(x)).numpy(),
                               rtol=1e-3)
    mp = pytest.importorskip("mpmath", reason="the exact implicit gradient needs mpmath")
    mp.mp.dps = 30
    for ai, xi, gi in zip(a, x, ours):
        dp = mp.diff(lambda s: mp.gammainc(s, 0, xi, regularized=True), ai)
        exact = -dp / (mp.mpf(xi) ** (ai - 1) * mp.exp(-xi) / mp.gamma(ai))
        assert gi == pytest.approx(float(exact), rel=1e-10)
    minidl.manual_seed(0)
    conc = Tensor(np.array([0.7, 3.0]), requires_grad=True)
    rate = Tensor(np.array([2.0, 0.5]), requires_grad=True)
    sample = D.Gamma(conc, rate).rsample((20000,))
    sample.mean(0).sum().backward()
    np.testing.assert_allclose(conc.grad.numpy(), 1 / np.array([2.0, 0.5]), rtol=0.03)
    # d (g / rate) / d rate = -x / rate, exactly
    np.testing.assert_allclose(rate.grad.numpy(), -sample.detach().numpy().mean(0) / rate.numpy(),
                               rtol=1e-12)


def test_beta_and_dirichlet_rsample_carry_gradients_and_statistics():
    minidl.manual_seed(0)
    a = Tensor(np.array([2.0, 0.5]), requires_grad=True)
    b = Tensor(np.array([3.0, 0.5]), requires_grad=True)
    x = D.Beta(a, b).rsample((20000,))
    np.testing.assert_allclose(x.detach().numpy().mean(0), [0.4, 0.5], atol=0.01)
    x.mean(0).sum().backward()
    # d E[x] / d a = b / (a + b)^2
    np.testing.assert_allclose(a.grad.numpy(), [3 / 25, 0.5], rtol=0.06)
    c = Tensor(np.array([1.0, 2.0, 5.0]), requires_grad=True)
    y = D.Dirichlet(c).rsample((20000,))
    np.testing.assert_allclose(y.detach().numpy().mean(0), [0.125, 0.25, 0.625], atol=0.01)
    np.testing.assert_allclose(y.detach().numpy().sum(-1), 1.0, rtol=1e-12)
    (y[:, 0].mean()).backward()
    # d E[y_0] / d c = (e_0 * c0 - c_0) / c0^2 with c0 = 8
    np.testing.assert_allclose(c.grad.numpy(), [7 / 64, -1 / 64, -1 / 64], rtol=0.1, atol=3e-3)
    g = D.Gamma(minidl.tensor([0.5, 4.0]), minidl.tensor([1.0, 2.0])).sample((20000,)).numpy()
    np.testing.assert_allclose(g.mean(0), [0.5, 2.0], rtol=0.04)
    np.testing.assert_allclose(g.var(0), [0.5, 1.0], rtol=0.08)
    assert (g > 0).all()


def test_exponential_and_laplace_rsample_gradcheck_and_statistics():
    rate = Tensor(GRATE.copy(), requires_grad=True)
    assert gradcheck(_with_noise(D.Exponential), [rate])
    loc, scale = Tensor(LOC.copy(), requires_grad=True), Tensor(SCALE.copy(), requires_grad=True)
    assert gradcheck(_with_noise(D.Laplace), [loc, scale])
    minidl.manual_seed(0)
    e = D.Exponential(minidl.tensor([0.5, 4.0])).sample((20000,)).numpy()
    np.testing.assert_allclose(e.mean(0), [2.0, 0.25], rtol=0.04)
    np.testing.assert_allclose(e.var(0), [4.0, 1 / 16], rtol=0.08)
    lp = D.Laplace(minidl.tensor([1.0, -2.0]), minidl.tensor([0.5, 2.0])).sample((20000,)).numpy()
    np.testing.assert_allclose(lp.mean(0), [1.0, -2.0], atol=0.06)
    np.testing.assert_allclose(lp.var(0), [0.5, 8.0], rtol=0.08)
    p = D.Poisson(minidl.tensor([0.5, 7.0])).sample((20000,)).numpy()
    assert p.dtype == np.float32 and (p == np.floor(p)).all() and (p >= 0).all()
    np.testing.assert_allclose(p.mean(0), [0.5, 7.0], rtol=0.04)
    np.testing.assert_allclose(p.var(0), [0.5, 7.0], rtol=0.08)


TRANSFORMS = [
    ("exp", lambda: D.ExpTransform(), R.standard_normal(6)),
    ("affine", lambda: D.AffineTransform(0.5, -2.0), R.standard_normal(6)),
    ("affine_tensor", lambda: D.AffineTransform(Tensor(np.ones(6)), Tensor(np.arange(1.0, 7.0))),
     R.standard_normal(6)),
    ("sigmoid", lambda: D.SigmoidTransform(), R.standard_normal(6) * 3),
    ("tanh", lambda: D.TanhTransform(), R.standard_normal(6) * 2),
    ("compose", lambda: D.ComposeTransform([D.AffineTransform(1.0, 3.0), D.TanhTransform()]),
     R.standard_normal(6) * 0.3),
]


@pytest.mark.parametrize("name,make,x", TRANSFORMS, ids=[t[0] for t in TRANSFORMS])
def test_transforms_invert_and_their_log_det_is_the_log_derivative(name, make, x):
    t = make()
    xt = Tensor(x, requires_grad=True)
    y = t(xt)
    np.testing.assert_allclose(t.inv(y).numpy(), x, rtol=1e-9, atol=1e-12)
    # elementwise maps: log|dy/dx| from autograd
    y.sum().backward()
    np.testing.assert_allclose(t.log_abs_det_jacobian(xt, y).numpy(), np.log(np.abs(xt.grad.numpy())),
                               rtol=1e-9, atol=1e-12)
    # (+ v: a constant log-det, as an affine map's, still gives a graph to check)
    assert gradcheck(lambda v: t.log_abs_det_jacobian(v, t(v)) + v, [Tensor(x, requires_grad=True)])
    assert t.inv.inv is t or t.inv.inv == t
    assert t.inv.log_abs_det_jacobian(y, xt).numpy() == pytest.approx(
        -t.log_abs_det_jacobian(xt, y).numpy())


def test_tanh_squashed_policy_uses_the_cached_preimage():
    """SAC's policy: tanh(Normal) with cache_size=1, so log_prob of its own saturated sample
    needs no atanh(1.0); rsample gradchecks through the squashing."""
    base = D.Normal(minidl.tensor([0.0, 30.0], dtype="float64"), minidl.tensor([1.0, 1.0], dtype="float64"))
    pi = D.TransformedDistribution(base, [D.TanhTransform(cache_size=1)])
    minidl.manual_seed(0)
    a = pi.rsample()
    assert a.numpy()[1] == 1.0  # saturated
    lp = pi.log_prob(a)
    assert np.isfinite(lp.numpy()).all()
    minidl.manual_seed(0)
    x = base.rsample()
    expected = base.log_prob(x) - 2 * (math.log(2) - x - _special.softplus(-2 * x))
    np.testing.assert_allclose(lp.numpy(), expected.numpy(), rtol=1e-12)
    without_cache = D.TransformedDistribution(base, [D.TanhTransform()])
    with np.errstate(divide="ignore", invalid="ignore"):
        assert not np.isfinite(without_cache.log_prob(a).numpy()[1])  # atanh(1): why the cache
    loc = Tensor(LOC.copy(), requires_grad=True)
    scale = Tensor(SCALE.copy(), requires_grad=True)
    assert gradcheck(_with_noise(lambda m, s: D.TransformedDistribution(
        D.Normal(m, s), [D.TanhTransform(), D.AffineTransform(1.0, 2.0)])), [loc, scale])
    assert gradcheck(_with_noise(D.LogNormal), [loc, scale])


def test_cauchy_halfnormal_studentt_rsample_and_statistics():
    loc, scale = Tensor(LOC.copy(), requires_grad=True), Tensor(SCALE.copy(), requires_grad=True)
    assert gradcheck(_with_noise(D.Cauchy), [loc, scale])
    assert gradcheck(_with_noise(D.HalfNormal), [scale])
    assert gradcheck(_with_noise(D.Gumbel), [loc, scale])
    minidl.manual_seed(0)
    gm = D.Gumbel(minidl.tensor([1.0]), minidl.tensor([2.0])).sample((20000,)).numpy()
    assert gm.mean() == pytest.approx(1 + 2 * 0.5772156649, abs=0.06)
    assert gm.var() == pytest.approx(math.pi ** 2 / 6 * 4, rel=0.06)
    minidl.manual_seed(0)
    c = D.Cauchy(minidl.tensor([1.0]), minidl.tensor([2.0])).sample((20000,)).numpy()
    assert np.median(c) == pytest.approx(1.0, abs=0.1)
    assert np.mean(np.abs(c - 1) < 2) == pytest.approx(0.5, abs=0.02)  # the quartiles at loc -+ scale
    h = D.HalfNormal(minidl.tensor([2.0])).sample((20000,)).numpy()
    assert (h >= 0).all() and h.mean() == pytest.approx(2 * math.sqrt(2 / math.pi), rel=0.03)
    df = Tensor(np.array([6.0]), requires_grad=True)
    t = D.StudentT(df, 1.0, 2.0).rsample((20000,))
    assert t.detach().numpy().mean() == pytest.approx(1.0, abs=0.06)
    assert t.detach().numpy().var() == pytest.approx(4 * 6 / 4, rel=0.1)
    t.abs().mean().backward()
    assert df.grad is not None and df.grad.item() < 0  # heavier tails for smaller df
    g = D.Geometric(minidl.tensor([0.3, 1.0])).sample((20000,)).numpy()
    assert (g == np.floor(g)).all() and (g[:, 1] == 0).all()
    assert g[:, 0].mean() == pytest.approx(1 / 0.3 - 1, rel=0.05)
    b = D.Binomial(minidl.tensor([5.0, 20.0]), minidl.tensor([0.3, 0.9])).sample((20000,)).numpy()
    np.testing.assert_allclose(b.mean(0), [1.5, 18.0], rtol=0.02)
    np.testing.assert_allclose(b.var(0), [1.05, 1.8], rtol=0.08)


def test_relaxed_and_straight_through_rsample_gradients():
    logits = Tensor(CLOGITS.copy(), requires_grad=True)
    temp = Tensor(np.array(0.5), requires_grad=True)
    assert gradcheck(_with_noise(lambda t, w: D.RelaxedOneHotCategorical(t, logits=w)), [temp, logits])
    assert gradcheck(_with_noise(lambda t, w: D.RelaxedBernoulli(t, logits=w)), [temp, logits])
    minidl.manual_seed(0)
    y = D.RelaxedOneHotCategorical(0.1, logits=minidl.tensor([0.0, 2.0])).sample((20000,)).numpy()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    # at a low temperature the argmax frequencies are the probabilities
    np.testing.assert_allclose(np.bincount(y.argmax(-1)) / 20000, [1 / (1 + np.e ** 2), 1 / (1 + np.e ** -2)],
                               atol=0.015)
    b = D.RelaxedBernoulli(0.05, probs=minidl.tensor([0.3])).sample((20000,)).numpy()
    assert ((b > 0) & (b < 1)).all() and (b > 0.5).mean() == pytest.approx(0.3, abs=0.015)
    # straight-through: one-hot forward, the probabilities' gradient backward
    logits = Tensor(CLOGITS.copy(), requires_grad=True)
    st = D.OneHotCategoricalStraightThrough(logits=logits)
    minidl.manual_seed(1)
    s = st.rsample((4,))
    assert set(np.unique(s.numpy())) <= {0.0, 1.0} and (s.numpy().sum(-1) == 1).all()
    w = R.standard_normal(5)
    (s * Tensor(w)).sum().backward()
    p = np.exp(CLOGITS) / np.exp(CLOGITS).sum(-1, keepdims=True)
    expected = 4 * p * (w - (p * w).sum(-1, keepdims=True))  # softmax's vector-Jacobian product
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-10)


def test_mixture_weights_broadcast_over_the_component_batch_when_sampling():
    # torch's gather fails here (one set of weights, components batched over 2)
    minidl.manual_seed(0)
    mix = D.MixtureSameFamily(D.Categorical(logits=minidl.zeros(3)),
                              D.Independent(D.Normal(minidl.zeros(2, 3, 4), 1.0), 1))
    assert mix.batch_shape == (2,) and mix.event_shape == (4,)
    assert mix.sample().shape == (2, 4) and mix.sample((5, 6)).shape == (5, 6, 2, 4)
    assert mix.log_prob(mix.sample((5,))).shape == (5, 2)
    two = D.MixtureSameFamily(D.Categorical(logits=minidl.zeros(2)),
                              D.Normal(minidl.tensor([[-10.0, 10.0]] * 2), 0.1))
    s = two.sample((4000,)).numpy()
    assert (np.sign(s[:, 0]) != np.sign(s[:, 1])).mean() == pytest.approx(0.5, abs=0.04)  # independent


def test_mixture_sampling_statistics_and_errors():
    minidl.manual_seed(0)
    mix = D.MixtureSameFamily(D.Categorical(probs=minidl.tensor([0.3, 0.7])),
                              D.Normal(minidl.tensor([-5.0, 5.0]), minidl.tensor([1.0, 0.5])))
    x = mix.sample((20000,)).numpy()
    assert x.shape == (20000,)
    assert (x > 0).mean() == pytest.approx(0.7, abs=0.015)
    assert x.mean() == pytest.approx(mix.mean.item(), abs=0.1)
    assert x.var() == pytest.approx(mix.variance.item(), rel=0.05)
    with pytest.raises(ValueError, match="needs to be an instance of minidl.distributions.Categorical"):
        D.MixtureSameFamily(D.Normal(0.0, 1.0), D.Normal(minidl.zeros(2), 1.0))
    with pytest.raises(ValueError, match=r"`mixture_distribution component` \(3\) does not equal"):
        D.MixtureSameFamily(D.Categorical(logits=minidl.zeros(3)), D.Normal(minidl.zeros(2), 1.0))
    with pytest.raises(ValueError, match="is not compatible"):
        D.MixtureSameFamily(D.Categorical(logits=minidl.zeros(3, 2)), D.Normal(minidl.zeros(4, 2), 1.0))


def test_mixture_density_network_trains():
    """A mixture of two Gaussians fitted by log-likelihood to bimodal data finds both modes."""
    minidl.manual_seed(0)
    data = minidl.tensor(np.concatenate([np.random.default_rng(0).normal(-2, 0.3, 300),
                                         np.random.default_rng(1).normal(3, 0.5, 700)]))
    w = minidl.zeros(2, requires_grad=True)
    mu = minidl.tensor([-0.5, 0.5], requires_grad=True)
    log_sigma = minidl.zeros(2, requires_grad=True)
    opt = minidl.optim.Adam([w, mu, log_sigma], lr=0.05)
    for _ in range(300):
        mix = D.MixtureSameFamily(D.Categorical(logits=w), D.Normal(mu, log_sigma.exp()))
        loss = -mix.log_prob(data).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(np.sort(mu.detach().numpy()), [-2.0, 3.0], atol=0.1)
    weights = np.exp(w.detach().numpy()) / np.exp(w.detach().numpy()).sum()
    np.testing.assert_allclose(weights[np.argsort(mu.detach().numpy())], [0.3, 0.7], atol=0.05)


def test_count_and_tail_distributions_sample_statistics():
    minidl.manual_seed(0)
    m = D.Multinomial(10, probs=minidl.tensor([0.2, 0.3, 0.5])).sample((20000,)).numpy()
    assert (m.sum(-1) == 10).all()
    np.testing.assert_allclose(m.mean(0), [2.0, 3.0, 5.0], rtol=0.02)
    nb = D.NegativeBinomial(minidl.tensor([3.0]), probs=minidl.tensor([0.4])).sample((20000,)).numpy()
    assert nb.mean() == pytest.approx(3 * 0.4 / 0.6, rel=0.04)
    assert nb.var() == pytest.approx(3 * 0.4 / 0.36, rel=0.08)
    w = D.Weibull(minidl.tensor([2.0]), minidl.tensor([1.5])).sample((20000,)).numpy()
    assert w.mean() == pytest.approx(2 * math.gamma(1 + 1 / 1.5), rel=0.03)
    pa = D.Pareto(minidl.tensor([1.0]), minidl.tensor([4.0])).sample((20000,)).numpy()
    assert pa.min() >= 1.0 and pa.mean() == pytest.approx(4 / 3, rel=0.03)
    s, k = Tensor(GRATE.copy(), requires_grad=True), Tensor(GCONC + 0.8, requires_grad=True)
    assert gradcheck(_with_noise(D.Weibull), [s, k])
    assert gradcheck(_with_noise(D.Pareto), [s, k])
    with pytest.raises(NotImplementedError, match="inhomogeneous total_count"):
        D.Multinomial(minidl.tensor([3.0, 4.0]), probs=minidl.ones(2, 2))
    with pytest.raises(ValueError, match="Multinomial"):
        D.Multinomial(3, probs=minidl.ones(2)).log_prob(minidl.tensor([-1.0, 2.0]))


def test_discrete_distributions_have_no_rsample():
    for d in (D.Bernoulli(0.3), D.Poisson(2.0), D.Geometric(0.3), D.Binomial(3, 0.4),
              D.Multinomial(3, probs=minidl.ones(2)), D.NegativeBinomial(2.0, 0.5), D.Categorical(logits=minidl.zeros(3)),
              D.OneHotCategorical(probs=minidl.ones(3)), D.Independent(D.Bernoulli(minidl.ones(2) * 0.5), 1)):
        assert not d.has_rsample
        with pytest.raises(NotImplementedError):
            d.rsample()


# ---- sampling statistics and determinism --------------------------------------------------
def test_normal_and_uniform_sample_statistics():
    minidl.manual_seed(0)
    n = D.Normal(minidl.tensor([-1.0, 3.0]), minidl.tensor([0.5, 2.0])).sample((20000,)).numpy()
    np.testing.assert_allclose(n.mean(0), [-1.0, 3.0], atol=0.05)
    np.testing.assert_allclose(n.var(0), [0.25, 4.0], rtol=0.05)
    u = D.Uniform(minidl.tensor([0.0, -2.0]), minidl.tensor([1.0, 4.0])).sample((20000,)).numpy()
    np.testing.assert_allclose(u.mean(0), [0.5, 1.0], atol=0.05)
    np.testing.assert_allclose(u.var(0), [1 / 12, 3.0], rtol=0.05)
    assert u.min(0)[0] >= 0 and u.max(0)[0] < 1 and u.min(0)[1] >= -2


def test_discrete_sample_frequencies():
    minidl.manual_seed(0)
    probs = np.array([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    s = D.Categorical(probs=Tensor(probs)).sample((20000,)).numpy()
    assert s.dtype == np.int64 and s.shape == (20000, 2)
    freq = np.stack([np.bincount(s[:, i], minlength=4) / 20000 for i in range(2)])
    np.testing.assert_allclose(freq, probs, atol=0.015)
    assert (s[:, 0] != 1).all()  # a category of probability 0 is never drawn
    b = D.Bernoulli(logits=minidl.tensor([-1.0, 2.0])).sample((20000,)).numpy()
    np.testing.assert_allclose(b.mean(0), 1 / (1 + np.exp([1.0, -2.0])), atol=0.015)
    assert set(np.unique(b)) <= {0.0, 1.0}
    o = D.OneHotCategorical(probs=minidl.tensor([0.2, 0.8])).sample((20000,)).numpy()
    assert (o.sum(-1) == 1).all()
    np.testing.assert_allclose(o.mean(0), [0.2, 0.8], atol=0.015)


@pytest.mark.parametrize("make", [
    lambda: D.Normal(minidl.zeros(3), 1.0), lambda: D.Uniform(0.0, minidl.ones(3)),
    lambda: D.Bernoulli(minidl.ones(3) * 0.4), lambda: D.Categorical(logits=minidl.zeros(3, 4)),
], ids=["normal", "uniform", "bernoulli", "categorical"])
def test_manual_seed_makes_samples_repeat(make):
    minidl.manual_seed(123)
    a = make().sample((50,)).numpy()
    minidl.manual_seed(123)
    b = make().sample((50,)).numpy()
    c = make().sample((50,)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


# ---- shapes as torch's -------------------------------------------------------------------
SHAPE_CASES = [
    ("normal_scalar", lambda D, T: D.Normal(0.0, 1.0)),
    ("normal_batch", lambda D, T: D.Normal(T(np.zeros((2, 3))), 1.0)),
    ("uniform", lambda D, T: D.Uniform(T(np.zeros(3)), 2.0)),
    ("bernoulli", lambda D, T: D.Bernoulli(logits=T(np.zeros((4, 1))))),
    ("categorical_1d", lambda D, T: D.Categorical(logits=T(np.zeros(5)))),
    ("categorical_batch", lambda D, T: D.Categorical(probs=T(np.ones((2, 3, 5))))),
    ("onehot", lambda D, T: D.OneHotCategorical(probs=T(np.ones((2, 5))))),
    ("independent", lambda D, T: D.Independent(D.Normal(T(np.zeros((2, 3, 4))), 1.0), 2)),
    ("mvn", lambda D, T: D.MultivariateNormal(T(np.zeros((2, 1, 3))), scale_tril=T(np.eye(3) * 2))),
    ("gamma", lambda D, T: D.Gamma(T(np.ones((2, 3))), 2.0)),
    ("beta_scalar", lambda D, T: D.Beta(0.5, 2.0)),
    ("beta", lambda D, T: D.Beta(T(np.ones(3)), 2.0)),
    ("dirichlet", lambda D, T: D.Dirichlet(T(np.ones((2, 4))))),
    ("exponential", lambda D, T: D.Exponential(T(np.ones((3, 1))))),
    ("laplace", lambda D, T: D.Laplace(T(np.zeros(2)), 1.0)),
    ("poisson", lambda D, T: D.Poisson(T(np.ones(2) * 3))),
    ("lognormal", lambda D, T: D.LogNormal(T(np.zeros((2, 3))), 1.0)),
    ("cauchy", lambda D, T: D.Cauchy(T(np.zeros((2, 1))), T(np.ones(3)))),
    ("halfnormal", lambda D, T: D.HalfNormal(T(np.ones(3)))),
    ("studentT", lambda D, T: D.StudentT(T(np.ones(3) * 4))),
    ("chi2", lambda D, T: D.Chi2(T(np.ones(2) * 3))),
    ("geometric", lambda D, T: D.Geometric(T(np.ones(2) * 0.3))),
    ("binomial", lambda D, T: D.Binomial(7, T(np.ones((2, 2)) * 0.3))),
    ("relaxed_bernoulli", lambda D, T: D.RelaxedBernoulli(T(np.array(0.5)), logits=T(np.zeros((2, 3))))),
    ("relaxed_onehot", lambda D, T: D.RelaxedOneHotCategorical(T(np.array(0.5)), logits=T(np.zeros((2, 3))))),
    ("straight_through", lambda D, T: D.OneHotCategoricalStraightThrough(logits=T(np.zeros((2, 3))))),
    ("mixture", lambda D, T: D.MixtureSameFamily(D.Categorical(logits=T(np.zeros((2, 3)))),
                                                 D.Normal(T(np.zeros((2, 3))), 1.0))),
    ("mixture_vec", lambda D, T: D.MixtureSameFamily(D.Categorical(logits=T(np.zeros((2, 3)))),
                                                     D.Independent(D.Normal(T(np.zeros((2, 3, 4))), 1.0), 1))),
    ("gumbel", lambda D, T: D.Gumbel(T(np.zeros((2, 1))), T(np.ones(3)))),
    ("multinomial", lambda D, T: D.Multinomial(6, probs=T(np.ones((2, 4))))),
    ("negative_binomial", lambda D, T: D.NegativeBinomial(T(np.ones(3) * 2), logits=T(np.zeros((2, 3))))),
    ("weibull", lambda D, T: D.Weibull(T(np.ones(3)), 2.0)),
    ("pareto", lambda D, T: D.Pareto(1.0, T(np.ones((2, 1)) * 3))),
    ("lowrank", lambda D, T: D.LowRankMultivariateNormal(T(np.zeros((2, 1, 3))), T(np.ones((3, 2))), T(np.ones(3)))),
    ("affine_event", lambda D, T: D.TransformedDistribution(
        D.Normal(T(np.zeros((2, 3))), 1.0), D.AffineTransform(0.0, 2.0, event_dim=1))),
]


@pytest.mark.parametrize("sample_shape", [(), (7,), (2, 3)], ids=["none", "7", "2x3"])
@pytest.mark.parametrize("name,make", SHAPE_CASES, ids=[s[0] for s in SHAPE_CASES])
def test_shapes_as_torch(name, make, sample_shape):
    torch = _torch()
    import torch.distributions as TD

    ours = make(D, lambda a: Tensor(a))
    theirs = make(TD, lambda a: torch.tensor(a))
    assert ours.batch_shape == tuple(theirs.batch_shape)
    assert ours.event_shape == tuple(theirs.event_shape)
    s, ts = ours.sample(sample_shape), theirs.sample(sample_shape)
    assert tuple(s.shape) == tuple(ts.shape)
    assert s.dtype == np.dtype(str(ts.dtype).replace("torch.", ""))
    lp, tlp = ours.log_prob(s), theirs.log_prob(torch.as_tensor(s.numpy()))
    assert tuple(lp.shape) == tuple(tlp.shape)
    if name not in ("poisson", "affine_event", "multinomial", "negative_binomial", "relaxed_bernoulli", "relaxed_onehot", "mixture",
                    "mixture_vec"):  # torch has no entropy for these either
        assert tuple(ours.entropy().shape) == tuple(theirs.entropy().shape)
    e, te = ours.expand((6,) + ours.batch_shape), theirs.expand((6,) + tuple(theirs.batch_shape))
    assert e.batch_shape == tuple(te.batch_shape) and e.event_shape == tuple(te.event_shape)
    assert tuple(e.sample((2,)).shape) == tuple(te.sample((2,)).shape)
    if ours.has_enumerate_support:
        assert tuple(ours.enumerate_support().shape) == tuple(theirs.enumerate_support().shape)
        np.testing.assert_array_equal(ours.enumerate_support(False).numpy(),
                                      theirs.enumerate_support(False).numpy())


def test_parameters_broadcast_and_keep_dtype():
    d = D.Normal(minidl.zeros(3, 1, dtype="float64"), minidl.ones(4, dtype="float64"))
    assert d.batch_shape == (3, 4) and d.loc.dtype == np.float64
    assert d.sample().dtype == np.float64
    assert D.Normal(0.0, 1.0).sample().dtype == np.float32
    assert D.Normal(minidl.zeros(2, dtype="float64"), 2).scale.dtype == np.float64
    assert D.Bernoulli(0.3).batch_shape == () and D.Bernoulli(minidl.tensor([0.3])).batch_shape == (1,)


# ---- argument validation, with torch's errors -------------------------------------------
def test_bad_parameters_raise_valueerrors_naming_them():
    with pytest.raises(ValueError, match=r"Expected parameter scale \(Tensor of shape \(2,\)\) of "
                       r"distribution Normal\(loc: \(2,\), scale: \(2,\)\) to satisfy the constraint "
                       r"GreaterThan\(lower_bound=0.0\)"):
        D.Normal(minidl.zeros(2), minidl.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="parameter loc .* Real"):
        D.Normal(minidl.tensor([float("nan")]), 1.0)
    with pytest.raises(ValueError, match=r"parameter low .* LessThan\(upper_bound=0.0\)"):
        D.Uniform(1.0, 0.0)
    with pytest.raises(ValueError, match="parameter probs .* Interval"):
        D.Bernoulli(probs=minidl.tensor([1.5]))
    with pytest.raises(ValueError, match="parameter probs .* Simplex"):
        D.Categorical(probs=minidl.tensor([-1.0, 2.0]))
    with pytest.raises(ValueError, match="Either `probs` or `logits` must be specified, but not both"):
        D.Bernoulli(probs=0.5, logits=1.0)
    with pytest.raises(ValueError, match="Either `probs` or `logits`"):
        D.Categorical()
    with pytest.raises(ValueError, match="`probs` parameter must be at least one-dimensional"):
        D.Categorical(minidl.tensor(1.0))
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims <= len"):
        D.Independent(D.Normal(minidl.zeros(2), 1.0), 2)
    with pytest.raises(ValueError, match="Input arguments must all be"):
        D.Normal([0.0], 1.0)
    with pytest.raises(ValueError, match="parameter covariance_matrix .* PositiveDefinite"):
        D.MultivariateNormal(minidl.zeros(2), covariance_matrix=minidl.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="parameter scale_tril .* LowerCholesky"):
        D.MultivariateNormal(minidl.zeros(2), scale_tril=minidl.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="Exactly one of covariance_matrix or precision_matrix"):
        D.MultivariateNormal(minidl.zeros(2), minidl.eye(2), scale_tril=minidl.eye(2))
    with pytest.raises(ValueError, match="loc must be at least one-dimensional"):
        D.MultivariateNormal(minidl.tensor(0.0), minidl.eye(2))
    with pytest.raises(ValueError, match=r"covariance_matrix has shape \(3, 3\), expected"):
        D.MultivariateNormal(minidl.zeros(2), minidl.eye(3))
    with pytest.raises(ValueError, match="parameter concentration .* GreaterThan"):
        D.Gamma(minidl.tensor([1.0, -1.0]), 1.0)
    with pytest.raises(ValueError, match="parameter rate"):
        D.Gamma(1.0, 0.0)
    with pytest.raises(ValueError, match="parameter concentration .* IndependentConstraint"):
        D.Dirichlet(minidl.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="`concentration` parameter must be at least one-dimensional"):
        D.Dirichlet(minidl.tensor(1.0))
    with pytest.raises(ValueError, match="parameter concentration"):
        D.Beta(-1.0, 1.0)
    with pytest.raises(ValueError, match="parameter probs .* Interval"):
        D.Geometric(minidl.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="parameter total_count .* NonNegativeInteger"):
        D.Binomial(minidl.tensor([2.5]), minidl.tensor([0.5]))
    with pytest.raises(ValueError, match="parameter df"):
        D.StudentT(minidl.tensor([-1.0]))
    # validate_args=False skips the checks, as in torch
    assert D.Normal(0.0, -1.0, validate_args=False).scale.item() == -1.0
    D.Distribution.set_default_validate_args(False)
    try:
        D.Normal(0.0, -1.0)
    finally:
        D.Distribution.set_default_validate_args(True)
    with pytest.raises(ValueError):
        D.Normal(0.0, -1.0)


def test_bad_values_raise_valueerrors_as_torch():
    with pytest.raises(ValueError, match=r"Expected value argument \(Tensor of shape \(1,\)\) to be "
                       r"within the support \(Boolean\(\)\) of the distribution Bernoulli"):
        D.Bernoulli(probs=minidl.tensor([0.5])).log_prob(minidl.tensor([0.3]))
    with pytest.raises(ValueError, match="The value argument to log_prob must be a Tensor"):
        D.Normal(0.0, 1.0).log_prob(1.0)
    with pytest.raises(ValueError, match=r"not broadcastable with batch_shape\+event_shape: \(3,\) vs \(2,\)"):
        D.Normal(minidl.zeros(2), 1.0).log_prob(minidl.zeros(3))
    with pytest.raises(ValueError, match="IntegerInterval"):
        D.Categorical(logits=minidl.zeros(3)).log_prob(minidl.tensor([3]))
    with pytest.raises(ValueError, match="OneHot"):
        D.OneHotCategorical(logits=minidl.zeros(3)).log_prob(minidl.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="must match event_shape"):
        D.OneHotCategorical(logits=minidl.zeros(3)).log_prob(minidl.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="Simplex"):
        D.Dirichlet(minidl.ones(3)).log_prob(minidl.tensor([0.5, 0.6, 0.1]))
    with pytest.raises(ValueError, match="GreaterThanEq"):
        D.Gamma(1.0, 1.0).log_prob(minidl.tensor(-0.5))
    with pytest.raises(TypeError, match="sample_shape must be a tuple"):
        D.Normal(0.0, 1.0).sample(5)
    # without validation a number is taken, as torch does
    assert D.Normal(0.0, 1.0, validate_args=False).log_prob(0.0).item() == pytest.approx(
        -0.5 * math.log(2 * math.pi))


def test_repr_as_torch():
    assert repr(D.Normal(0.0, 1.0)) == "Normal(loc: 0.0, scale: 1.0)"
    assert repr(D.Normal(minidl.zeros(2), 1.0)) == "Normal(loc: (2,), scale: (2,))"
    assert repr(D.Categorical(logits=minidl.zeros(3))) == "Categorical(logits: (3,))"


# ---- end to end ------------------------------------------------------------------------
def test_reinforce_policy_gradient_learns_a_contextual_bandit():
    """Categorical(logits=net(x)).log_prob(a) * advantage: the policy learns to pick, in each
    context, the arm that pays."""
    minidl.manual_seed(0)
    net = nn.Linear(2, 3)
    opt = minidl.optim.Adam(net.parameters(), lr=0.05)
    contexts = minidl.tensor(np.eye(2))
    best = np.array([2, 0])  # the arm that pays 1 in each context; the others pay 0

    def expected_reward():
        with minidl.no_grad():
            p = D.Categorical(logits=net(contexts)).probs.numpy()
        return p[np.arange(2), best].mean()

    before = expected_reward()
    for _ in range(150):
        dist = D.Categorical(logits=net(contexts))
        actions = dist.sample((16,))  # (16, 2)
        rewards = (actions.numpy() == best).astype(np.float32)
        advantage = minidl.tensor(rewards - rewards.mean(0))
        loss = -(dist.log_prob(actions) * advantage).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.5 and expected_reward() > 0.9


def test_vae_reparameterised_step_trains_a_tiny_model():
    """Encoder to (mu, log sigma), rsample, decoder, loss = reconstruction + KL to N(0, 1)."""
    minidl.manual_seed(0)
    data = minidl.tensor(np.random.default_rng(0).standard_normal((64, 4)) @ np.diag([2.0, 1.0, 0.5, 0.1]),
                         dtype="float32")
    enc, dec = nn.Linear(4, 4), nn.Linear(2, 4)
    opt = minidl.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=0.02)
    prior = D.Normal(minidl.zeros(2), minidl.ones(2))

    def step():
        h = enc(data)
        q = D.Normal(h[:, :2], h[:, 2:].exp())
        z = q.rsample()
        recon = D.Independent(D.Normal(dec(z), 1.0), 1).log_prob(data)
        kl = D.kl_divergence(D.Independent(q, 1), D.Independent(prior, 1))
        return (kl - recon).mean()

    first = step().item()
    for _ in range(200):
        loss = step()
        opt.zero_grad()
        loss.backward()
        assert enc.weight.grad is not None and np.isfinite(enc.weight.grad.numpy()).all()
        opt.step()
    with minidl.no_grad():
        last = np.mean([step().item() for _ in range(10)])
    assert last < first - 1.0, (first, last)


# ---- the fake GPU ---------------------------------------------------------------------
def test_distributions_on_the_fake_gpu_match_cpu(monkeypatch, tmp_path):
    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    _fake_gpu.install(monkeypatch, lib)
    results = {}
    for device in ("cpu", "cuda"):
        minidl.manual_seed(3)
        loc = minidl.tensor(LOC, dtype="float64", device=device, requires_grad=True)
        scale = minidl.tensor(SCALE, dtype="float64", device=device)
        n = D.Normal(loc, scale)
        x = n.rsample((4,))
        c = D.Categorical(logits=minidl.tensor(CLOGITS, device=device))
        s = c.sample((5,))
        out = n.log_prob(x).sum() + n.cdf(x).sum() + n.icdf(minidl.tensor(U01, device=device)).sum()
        out = out + D.kl_divergence(n, D.Normal(0.0, scale)).sum()
        tril = minidl.tensor(MTRIL, dtype="float64", device=device)
        mvn = D.MultivariateNormal(loc[:, 0], scale_tril=tril)
        out = out + mvn.log_prob(mvn.rsample((3,))).sum() + mvn.entropy().sum()
        out = out + D.MultivariateNormal(loc[:, 0], minidl.tensor(MCOV, dtype="float64", device=device)).log_prob(
            minidl.tensor(MVALUE, dtype="float64", device=device)).sum()
        g = D.Gamma(scale * 2, 1.5)
        out = out + g.log_prob(g.rsample()).sum() + g.entropy().sum()
        dr = D.Dirichlet(scale.exp())
        out = out + dr.log_prob(dr.rsample()).sum()
        squash = D.TransformedDistribution(D.Normal(loc, scale), [D.TanhTransform(cache_size=1)])
        out = out + squash.log_prob(squash.rsample()).sum()
        b = D.Bernoulli(logits=loc)
        out = out + b.log_prob(b.sample()).sum() + b.entropy().sum()
        out = out + D.Uniform(loc - 1, loc + scale).rsample((2,)).sum()
        out.backward()
        for t in (mvn.rsample(), g.rsample(), dr.sample(), squash.sample(), b.sample(), out, loc.grad):
            assert t.device == device
        assert x.device == device and s.device == device and c.log_prob(s).device == device
        # Categorical draws on the CPU are torch's multinomial; on a GPU they are the device's
        # own (as torch's CUDA draws differ from its CPU ones): compared by their range only
        assert s.dtype == minidl.int64 and 0 <= int(s.min()) and int(s.max()) < len(CLOGITS[-1])
        fixed = minidl.tensor(np.arange(s.numel()).reshape(s.shape) % len(CLOGITS[-1]), device=device)
        results[device] = (x.numpy(), c.log_prob(fixed).numpy(), out.item(), loc.grad.numpy())
    for a, b in zip(results["cpu"], results["cuda"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_distributions_import_only_the_layers_below_nn():
    """minidl.distributions sits beside nn: it builds on the ops, tensor, functional and
    creation modules and never imports nn, optim, data or the models."""
    import ast
    import os

    folder = os.path.dirname(D.__file__)
    allowed = {"backend", "autograd", "ops", "indexing", "shape_ops", "math_ops", "special", "tensor",
               "functional", "creation", "tensor_functions", "distributions"}
    for name in os.listdir(folder):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                top = (node.module or "").split(".")[0]
                assert top in allowed, f"distributions/{name} imports minidl.{top}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("minidl") for a in node.names), name


FLOAT32_CASES = [
    ("normal", lambda t: D.Normal(t(LOC), t(SCALE))),
    ("uniform", lambda t: D.Uniform(t(LOW), t(HIGH))),
    ("bernoulli", lambda t: D.Bernoulli(logits=t(LOGITS))),
    ("categorical", lambda t: D.Categorical(logits=t(CLOGITS))),
    ("onehot", lambda t: D.OneHotCategorical(probs=t(CPROBS))),
    ("mvn", lambda t: D.MultivariateNormal(t(MLOC), t(MCOV))),
    ("gamma", lambda t: D.Gamma(t(GCONC), t(GRATE))),
    ("beta", lambda t: D.Beta(t(GCONC), t(GRATE))),
    ("dirichlet", lambda t: D.Dirichlet(t(DCONC))),
    ("exponential", lambda t: D.Exponential(t(GRATE))),
    ("laplace", lambda t: D.Laplace(t(LOC), t(SCALE))),
    ("poisson", lambda t: D.Poisson(t(GRATE))),
    ("lognormal", lambda t: D.LogNormal(t(LOC), t(SCALE))),
    ("cauchy", lambda t: D.Cauchy(t(LOC), t(SCALE))),
    ("halfnormal", lambda t: D.HalfNormal(t(SCALE))),
    ("studentT", lambda t: D.StudentT(t(SCALE * 5), t(LOC), t(SCALE))),
    ("geometric", lambda t: D.Geometric(t(PROBS))),
    ("binomial", lambda t: D.Binomial(10, t(PROBS))),
    ("relaxed_onehot", lambda t: D.RelaxedOneHotCategorical(0.5, logits=t(CLOGITS))),
    ("gumbel", lambda t: D.Gumbel(t(LOC), t(SCALE))),
    ("multinomial", lambda t: D.Multinomial(10, probs=t(CPROBS))),
    ("negative_binomial", lambda t: D.NegativeBinomial(t(GCONC * 3), logits=t(LOGITS * 0.1))),
    ("weibull", lambda t: D.Weibull(t(GRATE), t(GCONC + 0.8))),
    ("pareto", lambda t: D.Pareto(t(GRATE), t(GCONC + 2.5))),
    ("mixture", lambda t: D.MixtureSameFamily(D.Categorical(logits=t(CLOGITS[:, :2])), D.Normal(t(LOC), t(SCALE)))),
]


@pytest.mark.parametrize("name,make", FLOAT32_CASES, ids=[c[0] for c in FLOAT32_CASES])
def test_float32_parameters_stay_float32_and_agree_with_float64(name, make):
    """No silent upcast: float32 parameters give float32 samples, log-densities and entropies,
    equal to the float64 ones to float32 precision."""
    d32 = make(lambda a: Tensor(np.asarray(a, dtype=np.float32)))
    d64 = make(lambda a: Tensor(np.asarray(a, dtype=np.float64)))
    minidl.manual_seed(5)
    x = d32.sample((3,))
    assert x.dtype == (np.int64 if name == "categorical" else np.float32)
    lp32 = d32.log_prob(x)
    lp64 = d64.log_prob(x if name == "categorical" else x.double())
    assert lp32.dtype == np.float32
    np.testing.assert_allclose(lp32.numpy(), lp64.numpy(), rtol=2e-4, atol=2e-4)
    try:
        h32, h64 = d32.entropy(), d64.entropy()
    except NotImplementedError:
        return
    assert h32.dtype == np.float32
    np.testing.assert_allclose(h32.numpy(), h64.numpy(), rtol=1e-4, atol=1e-4)


# ---- distributions: parameters, moments, dtypes -----------------------------------------------

INF, NAN = float("inf"), float("nan")


def f64(x, requires_grad=False):
    return minidl.tensor(np.asarray(x, dtype=np.float64), dtype=minidl.float64,
                         requires_grad=requires_grad)


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


def _kl_dists():
    """name -> (builder from float64 arrays, parameters): batch shape (3,)."""
    return {
        "Bernoulli": (D.Bernoulli, dict(probs=[0.2, 0.5, 0.7])),
        "Beta": (D.Beta, dict(concentration1=[0.8, 1.5, 3.0], concentration0=[2.0, 1.2, 0.7])),
        "Binomial": (D.Binomial, dict(total_count=[5.0, 5.0, 5.0], probs=[0.2, 0.5, 0.7])),
        "Exponential": (D.Exponential, dict(rate=[0.7, 1.5, 2.5])),
        "Gamma": (D.Gamma, dict(concentration=[0.8, 1.5, 3.0], rate=[0.7, 1.5, 2.5])),
        "Gumbel": (D.Gumbel, dict(loc=[-0.5, 0.0, 1.0], scale=[0.7, 1.5, 2.5])),
        "Laplace": (D.Laplace, dict(loc=[-0.5, 0.0, 1.0], scale=[0.7, 1.5, 2.5])),
        "Normal": (D.Normal, dict(loc=[-0.5, 0.0, 1.0], scale=[0.7, 1.5, 2.5])),
        "Pareto": (D.Pareto, dict(scale=[0.3, 0.5, 0.8], alpha=[0.8, 1.5, 2.5])),
        "Poisson": (D.Poisson, dict(rate=[0.7, 1.5, 2.5])),
        "Uniform": (D.Uniform, dict(low=[-0.5, 0.1, 0.6], high=[0.9, 0.8, 1.7])),
    }


def _kl_by_quadrature(p, q, lo, hi, n=400001):
    """KL(p || q) of two univariate densities by the trapezoid rule on [lo, hi] (float64)."""
    x = np.linspace(lo, hi, n)[1:-1]
    lp = p.log_prob(f64(x)).numpy()
    lq = q.log_prob(f64(x)).numpy()
    integrand = np.where(np.isfinite(lp), np.exp(lp) * (lp - lq), 0.0)
    return float(np.trapezoid(integrand, x))


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


@pytest.mark.parametrize("n", [0, 1, 5])
def test_multinomial_entropy(n):
    p = np.array([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
    h = D.Multinomial(n, probs=f64(p)).entropy()
    assert h.shape == (2,) and h.dtype == minidl.float64
    want = [_multinomial_entropy_by_enumeration(n, row) for row in p]
    np.testing.assert_allclose(h.numpy(), want, rtol=1e-12, atol=1e-14)
    probs = f64([0.2, 0.3, 0.5], requires_grad=True)
    assert gradcheck(lambda q: D.Multinomial(4, probs=q / q.sum()).entropy(), (probs,))


# ---- kl_divergence: every pair torch 2.13 registers -------------------------------------------

@pytest.mark.parametrize("p_name,q_name", KL_CROSS_PAIRS)
def test_kl_cross_pairs_are_registered_and_finite_where_supports_allow(p_name, q_name):
    dists = _kl_dists()
    (pc, pk), (qc, qk) = dists[p_name], dists[q_name]
    p = pc(**{k: f64(v) for k, v in pk.items()})
    q = qc(**{k: f64(v) for k, v in qk.items()})
    kl = D.kl_divergence(p, q)
    assert kl.shape == (3,) and kl.dtype == minidl.float64
    values = kl.numpy()
    assert not np.isnan(values).any()
    assert (values >= -1e-12).all()


@pytest.mark.parametrize("p_name,q_name,i,lo,hi", [
    ("Beta", "Normal", 1, 0.0, 1.0), ("Beta", "Gamma", 2, 0.0, 1.0),
    ("Beta", "Exponential", 1, 0.0, 1.0), ("Exponential", "Gumbel", 2, 0.0, 40.0),
    ("Gamma", "Normal", 2, 0.0, 40.0), ("Gumbel", "Normal", 0, -6.0, 30.0),
    ("Laplace", "Normal", 1, -40.0, 40.0), ("Normal", "Laplace", 2, -30.0, 30.0),
    ("Normal", "Gumbel", 1, -20.0, 20.0), ("Uniform", "Beta", 1, 0.1, 0.8),
    ("Uniform", "Gumbel", 0, -0.5, 0.9), ("Uniform", "Exponential", 2, 0.6, 1.7),
    ("Gamma", "Exponential", 1, 0.0, 40.0),
])
def test_kl_cross_pairs_match_numerical_integration(p_name, q_name, i, lo, hi):
    dists = _kl_dists()
    (pc, pk), (qc, qk) = dists[p_name], dists[q_name]
    p = pc(**{k: f64(v[i]) for k, v in pk.items()}, validate_args=False)
    q = qc(**{k: f64(v[i]) for k, v in qk.items()}, validate_args=False)
    want = _kl_by_quadrature(p, q, lo, hi)
    assert D.kl_divergence(p, q).item() == pytest.approx(want, rel=2e-3, abs=2e-4)


def test_kl_cross_pairs_infinite_where_p_leaves_qs_support():
    d = _kl_dists()
    unif = D.Uniform(f64([-0.5, 0.1, 0.6]), f64([0.9, 0.8, 1.7]))
    beta = D.Beta(f64([1.5, 1.5, 1.5]), f64([2.0, 2.0, 2.0]))
    assert np.isinf(D.kl_divergence(unif, beta).numpy()).tolist() == [True, False, True]
    assert np.isinf(D.kl_divergence(unif, D.Exponential(f64(1.0))).numpy()).tolist() == \
        [True, False, False]
    pareto = D.Pareto(f64(d["Pareto"][1]["scale"]), f64(d["Pareto"][1]["alpha"]))
    assert np.isinf(D.kl_divergence(pareto, D.Normal(f64(0.0), f64(1.0))).numpy()).tolist() \
        == [True, True, False]  # no second moment for alpha <= 2
    assert np.isinf(D.kl_divergence(D.Normal(f64(0.0), f64(1.0)), D.Exponential(f64(1.0))).item())
    u, par = D.Uniform(f64(0.9), f64(1.7)), D.Pareto(f64(0.8), f64(2.5))
    want = _kl_by_quadrature(u, par, 0.9, 1.7)
    assert D.kl_divergence(u, par).item() == pytest.approx(want, rel=1e-4)
    assert D.kl_divergence(D.Uniform(f64(0.7), f64(1.7)), par).item() == INF


def test_kl_binomial_binomial():
    p = D.Binomial(f64([5.0, 6.0]), probs=f64([0.3, 0.4]))
    q = D.Binomial(f64([5.0, 5.0]), probs=f64([0.5, 0.5]))
    kl = D.kl_divergence(p, q).numpy()
    bern = D.kl_divergence(D.Bernoulli(f64(0.3)), D.Bernoulli(f64(0.5))).item()
    assert kl[0] == pytest.approx(5 * bern, rel=1e-12) and kl[1] == INF
    with pytest.raises(NotImplementedError, match="q.total_count > p.total_count"):
        D.kl_divergence(q, p)


def test_kl_lowrank_pairs_match_the_full_rank_formula():
    rng = np.random.default_rng(0)
    loc, w, diag = rng.normal(size=(2, 3)), rng.normal(size=(2, 3, 2)), rng.uniform(0.5, 2, (2, 3))
    a = rng.normal(size=(2, 3, 3))
    cov = a @ np.swapaxes(a, -1, -2) + 3 * np.eye(3)
    lr = D.LowRankMultivariateNormal(f64(loc), f64(w), f64(diag))
    full = D.MultivariateNormal(f64(loc[::-1].copy()), covariance_matrix=f64(cov))
    lr_as_full = D.MultivariateNormal(f64(loc), covariance_matrix=lr.covariance_matrix)
    for p, q, p_full, q_full in ((lr, full, lr_as_full, full), (full, lr, full, lr_as_full),
                                 (lr, lr, lr_as_full, lr_as_full)):
        np.testing.assert_allclose(D.kl_divergence(p, q).numpy(),
                                   D.kl_divergence(p_full, q_full).numpy(), rtol=1e-10)
    other = D.LowRankMultivariateNormal(f64(np.zeros(2)), f64(np.ones((2, 1))), f64(np.ones(2)))
    with pytest.raises(ValueError, match="different event shapes"):
        D.kl_divergence(lr, other)


def test_kl_cross_pair_gradients():
    rates = f64([0.7, 1.5], requires_grad=True)
    loc, scale = f64([0.3, -0.2], requires_grad=True), f64([1.2, 0.8], requires_grad=True)
    assert gradcheck(lambda r, m, s: D.kl_divergence(D.Exponential(r), D.Gumbel(m, s)),
                     (rates, loc, scale))
    assert gradcheck(lambda m, s, r: D.kl_divergence(D.Normal(m, s), D.Laplace(r, s)),
                     (loc, scale, rates))


def test_kl_cross_pairs_parity():
    torch = pytest.importorskip("torch")
    TD = torch.distributions
    for p_name, q_name in KL_CROSS_PAIRS:
        dists = _kl_dists()
        (pc, pk), (qc, qk) = dists[p_name], dists[q_name]
        mine = D.kl_divergence(pc(**{k: f64(v, requires_grad=True) for k, v in pk.items()}),
                               qc(**{k: f64(v) for k, v in qk.items()}))
        tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in pk.items()}
        theirs = TD.kl_divergence(getattr(TD, p_name)(**tp), getattr(TD, q_name)(
            **{k: torch.tensor(v, dtype=torch.float64) for k, v in qk.items()}))
        np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), rtol=1e-9,
                                   err_msg=f"{p_name} -> {q_name}")


# ---- distributions: modes, supports, log_prob dtypes, utils -----------------------------------

def test_dirichlet_and_beta_mode_nan_where_no_concentration_exceeds_one_and_not_all_below():
    c = [[1.0, 1.0], [1.0, 0.5], [0.5, 0.5], [2.0, 1.0], [1.0, 3.0]]
    mode = D.Dirichlet(f64(c)).mode.numpy()
    assert np.isnan(mode[:2]).all()
    np.testing.assert_array_equal(mode[2:], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    beta = D.Beta(f64([1.0, 1.0, 2.0]), f64([1.0, 0.5, 1.0])).mode.numpy()
    assert np.isnan(beta[:2]).all() and beta[2] == 1.0


def test_mixture_same_family_support_adds_back_the_mixture_dim():
    probs = f64([[0.5, 0.5]] * 3)
    mix = D.MixtureSameFamily(D.Categorical(probs=probs),
                              D.Uniform(f64([[0.0, 1.0]] * 3), f64([[1.0, 3.0]] * 3)))
    support = mix.support
    assert repr(support).startswith("MixtureSameFamilyConstraint(Interval(")
    # was a broadcast error of (3,) against the components' (3, 2); every component's support
    # must hold the value, as torch's
    np.testing.assert_array_equal(support.check(f64([0.5, 2.0, 0.9])).numpy(), [False] * 3)
    with pytest.raises(ValueError, match="to be within the support"):
        mix.log_prob(f64([0.5, 2.0, 5.0]))
    vec = D.MixtureSameFamily(D.Categorical(probs=f64([0.5, 0.5])),
                              D.Independent(D.Normal(f64(np.zeros((2, 2))), f64(np.ones((2, 2)))), 1))
    assert vec.support.event_dim == 1
    np.testing.assert_array_equal(vec.support.check(f64([[0.5, 2.0], [0.0, NAN]])).numpy(),
                                  [True, False])
    counts = D.MixtureSameFamily(D.Categorical(probs=f64([0.5, 0.5])), D.Poisson(f64([1.0, 2.0])))
    assert counts.support.is_discrete
    np.testing.assert_array_equal(counts.support.check(f64([1.0, 0.5])).numpy(), [True, False])


@pytest.mark.parametrize("make", [
    lambda: D.Gamma(minidl.tensor([2.0, 3.0]), minidl.tensor([1.0, 0.5])),
    lambda: D.Chi2(minidl.tensor([2.0, 3.0])),
    lambda: D.HalfCauchy(minidl.tensor([2.0, 3.0])),
])
def test_gamma_and_half_cauchy_log_prob_in_the_parameters_dtype(make):
    d = make()
    lp = d.log_prob(f64([[1.5], [0.5]]))
    assert lp.dtype == minidl.float32 and lp.shape == (2, 2)  # as torch's: cast to the params'
    want = d.log_prob(minidl.tensor([[1.5], [0.5]]))
    np.testing.assert_array_equal(lp.numpy(), want.numpy())


def test_gamma_log_prob_takes_a_number_as_torch():
    d = D.Gamma(f64([2.0, 3.0]), f64([1.0, 0.5]))
    np.testing.assert_allclose(d.log_prob(1.5).numpy(), d.log_prob(f64(1.5)).numpy())
    value = f64([1.5, 2.0], requires_grad=True)
    D.Gamma(minidl.tensor([2.0, 3.0]), minidl.tensor([1.0, 0.5])).log_prob(value).sum().backward()
    assert value.grad.dtype == minidl.float64  # the cast is recorded
    np.testing.assert_allclose(value.grad.numpy(), [1 / 1.5 - 1, 2 / 2.0 - 0.5], rtol=1e-6)


def test_distributions_utils_tril_helpers_and_constants():
    from minidl.distributions import utils as U
    mat = f64(np.arange(9.0).reshape(3, 3), requires_grad=True)
    np.testing.assert_array_equal(U.tril_matrix_to_vec(mat).numpy(), [0, 3, 4, 6, 7, 8])
    np.testing.assert_array_equal(U.tril_matrix_to_vec(mat, diag=-1).numpy(), [3, 6, 7])
    for diag in (3, -4):
        with pytest.raises(ValueError, match=rf"diag \({diag}\) provided is outside \[-3, 2\]"):
            U.tril_matrix_to_vec(mat, diag=diag)
    back = U.vec_to_tril_matrix(f64(np.arange(6.0)))
    np.testing.assert_array_equal(back.numpy(), [[0, 0, 0], [1, 2, 0], [3, 4, 5]])
    with pytest.raises(ValueError, match="cannot be expressed as the lower triangular part"):
        U.vec_to_tril_matrix(f64(np.arange(4.0)))
    assert gradcheck(lambda m: U.tril_matrix_to_vec(m, diag=-1), (mat,))
    assert U.euler_constant == pytest.approx(0.5772156649015329)
    assert U.is_tensor_like(mat) and not U.is_tensor_like(1.0)


def test_relaxed_bernoulli_log_prob_of_an_integer_value_names_the_dtype():
    d = D.RelaxedBernoulli(minidl.tensor(0.5), probs=minidl.tensor([0.3]))
    for value in (minidl.tensor([1]), minidl.tensor([True])):  # was NumPy's "not inexact"
        with pytest.raises(TypeError, match="requires a floating point input type, got"):
            d.log_prob(value)
    assert D.SigmoidTransform()(minidl.tensor([0.5], dtype=minidl.bfloat16)).dtype == \
        minidl.bfloat16


# ---- kl_divergence of HalfCauchy and Cauchy ---------------------------------------------------

def t64(a, grad=False):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=np.float64, requires_grad=grad)


def test_kl_halfcauchy_and_cauchy():
    """kl_divergence(HalfCauchy, HalfCauchy) (and Cauchy, Cauchy) raised NotImplementedError;
    torch has the closed form log(((s1 + s2)^2 + (m1 - m2)^2) / (4 s1 s2))."""
    p, q = D.Cauchy(t64([0.0, 2.0]), t64([1.0, 0.5])), D.Cauchy(t64([1.0, -1.0]), t64([3.0, 2.0]))
    want = np.log(((np.array([1.0, 0.5]) + [3.0, 2.0]) ** 2 + np.array([-1.0, 3.0]) ** 2)
                  / (4 * np.array([1.0, 0.5]) * [3.0, 2.0]))
    np.testing.assert_allclose(D.kl_divergence(p, q).numpy(), want, rtol=1e-12)
    h = D.kl_divergence(D.HalfCauchy(t64([1.0, 2.0])), D.HalfCauchy(t64([3.0, 0.5])))
    np.testing.assert_allclose(h.numpy(), np.log(np.array([16.0, 6.25]) / [12.0, 4.0]),
                               rtol=1e-12)
    np.testing.assert_allclose(D.kl_divergence(p, p).numpy(), 0.0, atol=1e-15)
