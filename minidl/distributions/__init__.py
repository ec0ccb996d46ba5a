"""Probability distributions, as ``torch.distributions``: sampling (from minidl's seeded
generator), reparameterised sampling with gradients, log-densities, entropies and KL
divergences for policies (REINFORCE), VAEs and Bayesian layers::

    import minidl.distributions as D
    dist = D.Categorical(logits=policy(obs))
    action = dist.sample()
    loss = -(dist.log_prob(action) * advantage).mean()
"""
from . import constraints, transforms  # noqa: F401  (D.transforms, as torch)
from .bernoulli import Bernoulli
from .beta import Beta
from .binomial import Binomial
from .categorical import Categorical
from .cauchy import Cauchy
from .chi2 import Chi2
from .dirichlet import Dirichlet
from .distribution import Distribution
from .exponential import Exponential
from .gamma import Gamma
from .geometric import Geometric
from .gumbel import Gumbel
from .half_normal import HalfNormal
from .independent import Independent
from .kl import kl_divergence, register_kl
from .laplace import Laplace
from .log_normal import LogNormal
from .lowrank_multivariate_normal import LowRankMultivariateNormal
from .multivariate_normal import MultivariateNormal
from .negative_binomial import NegativeBinomial
from .normal import Normal
from .mixture_same_family import MixtureSameFamily
from .multinomial import Multinomial
from .pareto import Pareto
from .one_hot_categorical import OneHotCategorical, OneHotCategoricalStraightThrough
from .poisson import Poisson
from .relaxed_bernoulli import LogitRelaxedBernoulli, RelaxedBernoulli
from .relaxed_categorical import ExpRelaxedCategorical, RelaxedOneHotCategorical
from .studentT import StudentT
from .transformed_distribution import TransformedDistribution
from .transforms import (
    AffineTransform, ComposeTransform, ExpTransform, SigmoidTransform, TanhTransform, Transform,
)
from .uniform import Uniform
from .weibull import Weibull

__all__ = ["Distribution", "Normal", "Uniform", "Bernoulli", "Categorical", "OneHotCategorical",
           "Independent", "MultivariateNormal", "Gamma", "Beta", "Dirichlet", "Exponential",
           "Laplace", "Poisson", "LogNormal", "TransformedDistribution", "Transform",
           "ComposeTransform", "ExpTransform", "AffineTransform", "SigmoidTransform",
           "TanhTransform", "Binomial", "Cauchy", "Chi2", "Geometric", "HalfNormal", "StudentT",
           "Gumbel", "LowRankMultivariateNormal", "Multinomial",
           "NegativeBinomial", "Weibull", "Pareto",            "OneHotCategoricalStraightThrough", "RelaxedBernoulli", "LogitRelaxedBernoulli",
           "RelaxedOneHotCategorical", "ExpRelaxedCategorical", "MixtureSameFamily",
           "kl_divergence", "register_kl", "constraints"]
