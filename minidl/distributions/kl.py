"""``kl_divergence(p, q)``: KL(p || q) by the most specific rule registered for the pair of
types (``@register_kl(P, Q)``), as torch.distributions.kl."""
from __future__ import annotations

import math
import warnings

from ..autograd import grad as autograd_grad
from ..ops import where
from ._special import digamma, erf, expm1, lgamma, log1p, softplus, xlogy
from .beta import Beta
from .bernoulli import Bernoulli
from .binomial import Binomial
from .categorical import Categorical
from .cauchy import Cauchy
from .continuous_bernoulli import ContinuousBernoulli
from .exp_family import ExponentialFamily
from .dirichlet import Dirichlet
from .distribution import Distribution
from .exponential import Exponential
from .geometric import Geometric
from .gumbel import EULER_GAMMA, Gumbel
from .gamma import Gamma
from .half_cauchy import HalfCauchy
from ._linalg import solve_lower
from .half_normal import HalfNormal
from .independent import Independent
from .laplace import Laplace
from .lowrank_multivariate_normal import LowRankMultivariateNormal
from .multivariate_normal import MultivariateNormal, _batch_mahalanobis, _half_log_det
from .normal import Normal
from .one_hot_categorical import OneHotCategorical
from .pareto import Pareto
from .poisson import Poisson
from .transformed_distribution import TransformedDistribution
from .uniform import Uniform
from .utils import sum_rightmost

_KL_REGISTRY: dict = {}
_KL_MEMOIZE: dict = {}

_INF = float("inf")


def register_kl(type_p, type_q):
    """Decorator: ``@register_kl(Normal, Normal) def kl(p, q): ...`` registers the rule used
    when p and q are (subclasses of) these types."""
    for t in (type_p, type_q):
        if not (isinstance(t, type) and issubclass(t, Distribution)):
            raise TypeError(f"register_kl: expected subclasses of Distribution, got {t!r}")

    def decorator(fun):
        _KL_REGISTRY[type_p, type_q] = fun
        _KL_MEMOIZE.clear()
        return fun

    return decorator


def _dispatch_kl(type_p, type_q):
    matches = [(sp, sq) for sp, sq in _KL_REGISTRY
               if issubclass(type_p, sp) and issubclass(type_q, sq)]
    if not matches:
        return None
    # the most specific: nearest in p's class hierarchy, then in q's
    ranked = sorted(matches, key=lambda m: (type_p.__mro__.index(m[0]), type_q.__mro__.index(m[1])))
    best = ranked[0]
    swapped = sorted(matches, key=lambda m: (type_q.__mro__.index(m[1]), type_p.__mro__.index(m[0])))
    if swapped[0] != best:
        warnings.warn(f"Ambiguous kl_divergence({type_p.__name__}, {type_q.__name__}). Please "
                      f"register_kl({best[0].__name__}, {swapped[0][1].__name__})", RuntimeWarning,
                      stacklevel=3)
    return _KL_REGISTRY[best]


def kl_divergence(p, q):
    """KL(p || q), one value per batch element (batch_shape)."""
    key = (type(p), type(q))
    if key not in _KL_MEMOIZE:
        _KL_MEMOIZE[key] = _dispatch_kl(*key)
    fun = _KL_MEMOIZE[key]
    if fun is None:
        raise NotImplementedError(f"No KL(p || q) is implemented for p type {type(p).__name__} "
                                  f"and q type {type(q).__name__}")
    return fun(p, q)


@register_kl(Normal, Normal)
def _kl_normal_normal(p, q):
    var_ratio = (p.scale / q.scale) ** 2
    t1 = ((p.loc - q.loc) / q.scale) ** 2
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p, q):
    t1 = p.probs * (softplus(-q.logits) - softplus(-p.logits))
    t1 = where(p.probs == 0, 0.0, where(q.probs == 0, _INF, t1))
    t2 = (1 - p.probs) * (softplus(q.logits) - softplus(p.logits))
    t2 = where(p.probs == 1, 0.0, where(q.probs == 1, _INF, t2))
    return t1 + t2


@register_kl(Categorical, Categorical)
def _kl_categorical_categorical(p, q):
    t = p.probs * (p.logits - q.logits)
    t = where(p.probs == 0, 0.0, where(q.probs == 0, _INF, t))
    return t.sum(-1)


@register_kl(OneHotCategorical, OneHotCategorical)
def _kl_onehotcategorical_onehotcategorical(p, q):
    return _kl_categorical_categorical(p._categorical, q._categorical)


@register_kl(Uniform, Uniform)
def _kl_uniform_uniform(p, q):
    result = ((q.high - q.low) / (p.high - p.low)).log()
    return where((q.low > p.low) | (q.high < p.high), _INF, result)


@register_kl(Independent, Independent)
def _kl_independent_independent(p, q):
    if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
        raise NotImplementedError("KL between Independent distributions with different "
                                  "reinterpreted_batch_ndims is not implemented")
    result = kl_divergence(p.base_dist, q.base_dist)
    return sum_rightmost(result, p.reinterpreted_batch_ndims)


@register_kl(MultivariateNormal, MultivariateNormal)
def _kl_multivariatenormal_multivariatenormal(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError("KL-divergence between two Multivariate Normals with different event "
                         f"shapes cannot be computed: {p.event_shape} and {q.event_shape}")
    lp, lq = p._unbroadcasted_scale_tril, q._unbroadcasted_scale_tril
    half_term1 = _half_log_det(lq) - _half_log_det(lp)
    term2 = (solve_lower(lq, lp) ** 2).sum((-2, -1))  # tr(Sigma_q^-1 Sigma_p)
    term3 = _batch_mahalanobis(lq, q.loc - p.loc)
    return half_term1 + 0.5 * (term2 + term3 - p.event_shape[0])


@register_kl(Gamma, Gamma)
def _kl_gamma_gamma(p, q):
    t1 = q.concentration * (p.rate / q.rate).log()
    t2 = lgamma(q.concentration) - lgamma(p.concentration)
    t3 = (p.concentration - q.concentration) * digamma(p.concentration)
    t4 = (q.rate - p.rate) * (p.concentration / p.rate)
    return t1 + t2 + t3 + t4


@register_kl(Beta, Beta)
def _kl_beta_beta(p, q):
    sum_p = p.concentration1 + p.concentration0
    sum_q = q.concentration1 + q.concentration0
    t1 = lgamma(q.concentration1) + lgamma(q.concentration0) + lgamma(sum_p)
    t2 = lgamma(p.concentration1) + lgamma(p.concentration0) + lgamma(sum_q)
    t3 = (p.concentration1 - q.concentration1) * digamma(p.concentration1)
    t4 = (p.concentration0 - q.concentration0) * digamma(p.concentration0)
    t5 = (sum_q - sum_p) * digamma(sum_p)
    return t1 - t2 + t3 + t4 + t5


@register_kl(Dirichlet, Dirichlet)
def _kl_dirichlet_dirichlet(p, q):
    sum_p = p.concentration.sum(-1)
    sum_q = q.concentration.sum(-1)
    t1 = lgamma(sum_p) - lgamma(sum_q)
    t2 = (lgamma(p.concentration) - lgamma(q.concentration)).sum(-1)
    t3 = p.concentration - q.concentration
    t4 = digamma(p.concentration) - digamma(sum_p).unsqueeze(-1)
    return t1 - t2 + (t3 * t4).sum(-1)


@register_kl(Exponential, Exponential)
def _kl_exponential_exponential(p, q):
    rate_ratio = q.rate / p.rate
    return rate_ratio - 1 - rate_ratio.log()


@register_kl(Laplace, Laplace)
def _kl_laplace_laplace(p, q):
    scale_ratio = p.scale / q.scale
    loc_abs_diff = (p.loc - q.loc).abs()
    t1 = -scale_ratio.log()
    t2 = loc_abs_diff / q.scale
    t3 = scale_ratio * (-loc_abs_diff / p.scale).exp()
    return t1 + t2 + t3 - 1


@register_kl(Poisson, Poisson)
def _kl_poisson_poisson(p, q):
    return p.rate * (p.rate.log() - q.rate.log()) - (p.rate - q.rate)


@register_kl(TransformedDistribution, TransformedDistribution)
def _kl_transformed_transformed(p, q):
    if p.transforms != q.transforms:
        raise NotImplementedError("KL between TransformedDistributions with different "
                                  "transforms is not implemented")
    if p.event_shape != q.event_shape:
        raise NotImplementedError("KL between TransformedDistributions of different event "
                                  "shapes is not implemented")
    return kl_divergence(p.base_dist, q.base_dist)


@register_kl(Cauchy, Cauchy)
def _kl_cauchy_cauchy(p, q):
    # closed form (Chyzak and Nielsen, 2019): log(((s_p + s_q)^2 + (m_p - m_q)^2) / (4 s_p s_q))
    spread = (p.scale + q.scale) ** 2 + (p.loc - q.loc) ** 2
    return spread.log() - (4 * p.scale * q.scale).log()


@register_kl(HalfCauchy, HalfCauchy)
def _kl_halfcauchy_halfcauchy(p, q):
    # folding both at 0 keeps the divergence (torch: through their Cauchy bases)
    return _kl_cauchy_cauchy(p.base_dist, q.base_dist)


@register_kl(HalfNormal, HalfNormal)
def _kl_halfnormal_halfnormal(p, q):
    return _kl_normal_normal(p.base_dist, q.base_dist)


@register_kl(Geometric, Geometric)
def _kl_geometric_geometric(p, q):
    return -p.entropy() - log1p(-q.probs) / p.probs - q.logits


@register_kl(Gumbel, Gumbel)
def _kl_gumbel_gumbel(p, q):
    ct1 = p.scale / q.scale
    ct2 = q.loc / q.scale
    ct3 = p.loc / q.scale
    t1 = -ct1.log() - ct2 + ct3
    t2 = ct1 * EULER_GAMMA
    t3 = (ct2 + lgamma(1 + ct1) - ct3).exp()
    return t1 + t2 + t3 - (1 + EULER_GAMMA)


# ---- the exponential families (Bregman divergence) and the continuous Bernoulli -------------
def _infinite_like(t):
    return t * 0.0 + _INF


@register_kl(ExponentialFamily, ExponentialFamily)
def _kl_expfamily_expfamily(p, q):
    """KL as the Bregman divergence of the log-normaliser F:
    F(theta_q) - F(theta_p) - <theta_q - theta_p, grad F(theta_p)>."""
    if type(p) is not type(q):
        raise NotImplementedError("The cross KL-divergence between different exponential "
                                  "families cannot be computed using Bregman divergences")
    p_params = [t.detach().requires_grad_() for t in p._natural_params]
    q_params = q._natural_params
    log_norm = p._log_normalizer(*p_params)
    grads = autograd_grad(log_norm.sum(), p_params, create_graph=True)
    result = q._log_normalizer(*q_params) - log_norm
    for pp, qp, g in zip(p_params, q_params, grads):
        result = result - sum_rightmost((qp - pp) * g, len(q.event_shape))
    return result


@register_kl(ContinuousBernoulli, ContinuousBernoulli)
def _kl_cb_cb(p, q):
    return (p.mean * (p.logits - q.logits) + p._cont_bern_log_norm() + log1p(-p.probs)
            - q._cont_bern_log_norm() - log1p(-q.probs))


def _kl_to_cb(p, q):
    """KL(p || CB) for a p on [0, 1] (its entropy and mean)."""
    return -p.entropy() - p.mean * q.logits - log1p(-q.probs) - q._cont_bern_log_norm()


@register_kl(Beta, ContinuousBernoulli)
def _kl_beta_cb(p, q):
    return _kl_to_cb(p, q)


@register_kl(Uniform, ContinuousBernoulli)
def _kl_uniform_cb(p, q):
    outside = (p.high >= q.support.upper_bound) | (p.low <= q.support.lower_bound)
    return where(outside, _INF, _kl_to_cb(p, q))


@register_kl(ContinuousBernoulli, Exponential)
def _kl_cb_exponential(p, q):
    return -p.entropy() - q.rate.log() + q.rate * p.mean


@register_kl(ContinuousBernoulli, Normal)
def _kl_cb_normal(p, q):
    t2 = 0.5 * (math.log(2.0 * math.pi) + (q.loc / q.scale) ** 2) + q.scale.log()
    t3 = (p.variance + p.mean ** 2 - 2.0 * q.loc * p.mean) / (2.0 * q.scale ** 2)
    return -p.entropy() + t2 + t3


@register_kl(ContinuousBernoulli, Uniform)
def _kl_cb_uniform(p, q):
    result = -p.entropy() + (q.high - q.low).log()
    outside = (q.low >= p.support.lower_bound) | (q.high <= p.support.upper_bound)
    return where(outside, _INF, result)


@register_kl(ContinuousBernoulli, Pareto)
def _kl_cb_pareto(p, q):
    return _infinite_like(p.probs)


def _register_infinite(type_p, first):
    register_kl(type_p, ContinuousBernoulli)(lambda p, q: _infinite_like(first(p)))


for _type, _first in ((Exponential, lambda p: p.rate), (Gamma, lambda p: p.concentration),
                      (Gumbel, lambda p: p.loc), (Laplace, lambda p: p.loc),
                      (Normal, lambda p: p.loc), (Pareto, lambda p: p.scale)):
    _register_infinite(_type, _first)
del _type, _first


# ---- cross-family pairs: KL(p || q) = -H(p) - E_p[log q(x)], with the expectation from p's
# moments; infinite where p has mass outside q's support ----------------------------------
def _always_infinite(first):
    return lambda p, q: _infinite_like(first(p))


def _e_log_normal(q, mean, var):
    """E_p[log N(x; q.loc, q.scale)] from p's mean and variance."""
    return (-q.scale.log() - 0.5 * math.log(2 * math.pi)
            - (var + (mean - q.loc) ** 2) / (2 * q.scale ** 2))


def _e_log_gamma(q, mean, mean_log):
    """E_p[log Gamma(x; q.concentration, q.rate)] from E_p[x] and E_p[log x]."""
    a, b = q.concentration, q.rate
    return a * b.log() - lgamma(a) + (a - 1) * mean_log - b * mean


def _e_log_exponential(q, mean):
    return q.rate.log() - q.rate * mean


def _e_log_gumbel(q, mean, log_mgf):
    """E_p[log Gumbel(x; q.loc, q.scale)] from E_p[x] and log E_p[exp((q.loc - x) / q.scale)]."""
    return -q.scale.log() - (mean - q.loc) / q.scale - log_mgf.exp()


def _pareto_mean_log(p):
    return p.scale.log() + 1 / p.alpha


def _uniform_mean_xlogx(low, high):
    """E[log x] for x ~ Uniform(low, high), low >= 0 (0 log 0 = 0)."""
    return (xlogy(high, high) - xlogy(low, low)) / (high - low) - 1


@register_kl(Bernoulli, Poisson)
def _kl_bernoulli_poisson(p, q):
    return -p.entropy() - p.probs * q.rate.log() + q.rate


@register_kl(Beta, Exponential)
def _kl_beta_exponential(p, q):
    return -p.entropy() - _e_log_exponential(q, p.mean)


@register_kl(Beta, Gamma)
def _kl_beta_gamma(p, q):
    a, b = p.concentration1, p.concentration0
    return -p.entropy() - _e_log_gamma(q, p.mean, digamma(a) - digamma(a + b))


@register_kl(Beta, Normal)
def _kl_beta_normal(p, q):
    return -p.entropy() - _e_log_normal(q, p.mean, p.variance)


@register_kl(Beta, Uniform)
def _kl_beta_uniform(p, q):
    result = -p.entropy() + (q.high - q.low).log()
    return where((q.low > 0) | (q.high < 1), _INF, result)


@register_kl(Binomial, Binomial)
def _kl_binomial_binomial(p, q):
    if bool((p.total_count < q.total_count).any()):
        raise NotImplementedError("KL between Binomials where q.total_count > p.total_count "
                                  "is not implemented")
    result = p.total_count * _kl_bernoulli_bernoulli(p, q)
    return where(p.total_count > q.total_count, _INF, result)


@register_kl(Exponential, Gamma)
def _kl_exponential_gamma(p, q):
    mean_log = -EULER_GAMMA - p.rate.log()
    return -p.entropy() - _e_log_gamma(q, 1 / p.rate, mean_log)


@register_kl(Exponential, Gumbel)
def _kl_exponential_gumbel(p, q):
    log_mgf = q.loc / q.scale + p.rate.log() - (p.rate + 1 / q.scale).log()
    return -p.entropy() - _e_log_gumbel(q, 1 / p.rate, log_mgf)


@register_kl(Exponential, Normal)
def _kl_exponential_normal(p, q):
    return -p.entropy() - _e_log_normal(q, 1 / p.rate, p.rate ** -2)


@register_kl(Gamma, Exponential)
def _kl_gamma_exponential(p, q):
    return -p.entropy() - _e_log_exponential(q, p.mean)


@register_kl(Gamma, Gumbel)
def _kl_gamma_gumbel(p, q):
    a, b = p.concentration, p.rate
    log_mgf = q.loc / q.scale + a * (b.log() - (b + 1 / q.scale).log())
    return -p.entropy() - _e_log_gumbel(q, p.mean, log_mgf)


@register_kl(Gamma, Normal)
def _kl_gamma_normal(p, q):
    return -p.entropy() - _e_log_normal(q, p.mean, p.variance)


@register_kl(Gumbel, Normal)
def _kl_gumbel_normal(p, q):
    return -p.entropy() - _e_log_normal(q, p.mean, p.variance)


@register_kl(Laplace, Normal)
def _kl_laplace_normal(p, q):
    return -p.entropy() - _e_log_normal(q, p.loc, 2 * p.scale ** 2)


@register_kl(Normal, Gumbel)
def _kl_normal_gumbel(p, q):
    log_mgf = (q.loc - p.loc) / q.scale + (p.scale / q.scale) ** 2 / 2
    return -p.entropy() - _e_log_gumbel(q, p.loc, log_mgf)


@register_kl(Normal, Laplace)
def _kl_normal_laplace(p, q):
    d, s = p.loc - q.loc, p.scale
    # E|x - q.loc| for x ~ N(p.loc, s): the mean of a folded normal
    mean_abs = (s * math.sqrt(2 / math.pi) * (-(d / s) ** 2 / 2).exp()
                + d * erf(d / (s * math.sqrt(2))))
    return -p.entropy() + (2 * q.scale).log() + mean_abs / q.scale


@register_kl(Pareto, Exponential)
def _kl_pareto_exponential(p, q):
    result = -p.entropy() - _e_log_exponential(q, p.mean)
    return where(p.alpha <= 1, _INF, result)


@register_kl(Pareto, Gamma)
def _kl_pareto_gamma(p, q):
    result = -p.entropy() - _e_log_gamma(q, p.mean, _pareto_mean_log(p))
    return where(p.alpha <= 1, _INF, result)


@register_kl(Pareto, Normal)
def _kl_pareto_normal(p, q):
    result = -p.entropy() - _e_log_normal(q, p.mean, p.variance)
    return where(p.alpha <= 2, _INF, result)


@register_kl(Pareto, Pareto)
def _kl_pareto_pareto(p, q):
    a_p, a_q = p.alpha, q.alpha
    result = (a_p / a_q).log() + a_q * (p.scale / q.scale).log() + a_q / a_p - 1
    return where(p.scale < q.scale, _INF, result)


@register_kl(Uniform, Beta)
def _kl_uniform_beta(p, q):
    lo, hi = p.low, p.high
    a, b = q.concentration1, q.concentration0
    mean_log = _uniform_mean_xlogx(lo, hi)
    mean_log1m = _uniform_mean_xlogx(1 - hi, 1 - lo)
    e_log_q = ((a - 1) * mean_log + (b - 1) * mean_log1m
               - (lgamma(a) + lgamma(b) - lgamma(a + b)))
    result = -(hi - lo).log() - e_log_q
    return where((lo < 0) | (hi > 1), _INF, result)


@register_kl(Uniform, Exponential)
def _kl_uniform_exponential(p, q):
    result = -(p.high - p.low).log() - _e_log_exponential(q, p.mean)
    return where(p.low < 0, _INF, result)


@register_kl(Uniform, Gamma)
def _kl_uniform_gamma(p, q):
    e_log_q = _e_log_gamma(q, p.mean, _uniform_mean_xlogx(p.low, p.high))
    return where(p.low < 0, _INF, -(p.high - p.low).log() - e_log_q)


@register_kl(Uniform, Gumbel)
def _kl_uniform_gumbel(p, q):
    width = p.high - p.low
    log_mgf = (q.scale.log() - width.log() + (q.loc - p.low) / q.scale
               + (-expm1(-width / q.scale)).log())
    return -width.log() - _e_log_gumbel(q, p.mean, log_mgf)


@register_kl(Uniform, Normal)
def _kl_uniform_normal(p, q):
    return -(p.high - p.low).log() - _e_log_normal(q, p.mean, p.variance)


@register_kl(Uniform, Pareto)
def _kl_uniform_pareto(p, q):
    a, s = q.alpha, q.scale
    e_log_q = a.log() + a * s.log() - (a + 1) * _uniform_mean_xlogx(p.low, p.high)
    return where(p.low < s, _INF, -(p.high - p.low).log() - e_log_q)


def _as_full_rank(d):
    return MultivariateNormal(d.loc, scale_tril=d.scale_tril, validate_args=False)


@register_kl(LowRankMultivariateNormal, LowRankMultivariateNormal)
@register_kl(LowRankMultivariateNormal, MultivariateNormal)
@register_kl(MultivariateNormal, LowRankMultivariateNormal)
def _kl_with_lowrank(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError("KL-divergence between two (Low Rank) Multivariate Normals with "
                         f"different event shapes cannot be computed: {p.event_shape} and "
                         f"{q.event_shape}")
    p = p if isinstance(p, MultivariateNormal) else _as_full_rank(p)
    q = q if isinstance(q, MultivariateNormal) else _as_full_rank(q)
    return _kl_multivariatenormal_multivariatenormal(p, q)


# p's support reaches outside q's (negative values into Exponential or Gamma, values above 1
# into Beta, an unbounded support into Uniform, values below Pareto's scale, counts above 1
# or above any n): infinite, shaped as p's first parameter, as torch's
_INFINITE_PAIRS = {
    Beta: (lambda p: p.concentration1, (Pareto,)),
    Exponential: (lambda p: p.rate, (Beta, Pareto, Uniform)),
    Gamma: (lambda p: p.concentration, (Beta, Pareto, Uniform)),
    Gumbel: (lambda p: p.loc, (Beta, Exponential, Gamma, Pareto, Uniform)),
    Laplace: (lambda p: p.loc, (Beta, Exponential, Gamma, Pareto, Uniform)),
    Normal: (lambda p: p.loc, (Beta, Exponential, Gamma, Pareto, Uniform)),
    Pareto: (lambda p: p.scale, (Beta, Uniform)),
    Poisson: (lambda p: p.rate, (Bernoulli, Binomial)),
}
for _p_type, (_first, _q_types) in _INFINITE_PAIRS.items():
    for _q_type in _q_types:
        register_kl(_p_type, _q_type)(_always_infinite(_first))
del _p_type, _q_type, _first, _q_types
