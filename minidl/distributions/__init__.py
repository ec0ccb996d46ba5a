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
from .constraint_registry import biject_to, transform_to
from .continuous_bernoulli import ContinuousBernoulli
from .cauchy import Cauchy
from .chi2 import Chi2
from .dirichlet import Dirichlet
from .distribution import Distribution
from .exp_family import ExponentialFamily
from .exponential import Exponential
from .fishersnedecor import FisherSnedecor
from .gamma import Gamma
from .generalized_pareto import GeneralizedPareto
from .geometric import Geometric
from .gumbel import Gumbel
from .half_cauchy import HalfCauchy
from .half_normal import HalfNormal
from .independent import Independent
from .inverse_gamma import InverseGamma
from .kl import kl_divergence, register_kl
from .kumaraswamy import Kumaraswamy
from .laplace import Laplace
from .lkj_cholesky import LKJCholesky
from .log_normal import LogNormal
from .logistic_normal import LogisticNormal
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
    AbsTransform, AffineTransform, CatTransform, ComposeTransform, CorrCholeskyTransform,
    CumulativeDistributionTransform, ExpTransform, IndependentTransform, LowerCholeskyTransform,
    PositiveDefiniteTransform, PowerTransform, ReshapeTransform, SigmoidTransform,
    SoftmaxTransform, SoftplusTransform, StackTransform, StickBreakingTransform, TanhTransform,
    Transform, identity_transform,
)
from .uniform import Uniform
from .von_mises import VonMises
from .weibull import Weibull
from .wishart import Wishart

__all__ = ["Distribution", "Normal", "Uniform", "Bernoulli", "Categorical", "OneHotCategorical",
           "Independent", "MultivariateNormal", "Gamma", "Beta", "Dirichlet", "Exponential",
           "Laplace", "Poisson", "LogNormal", "TransformedDistribution", "Transform",
           "ComposeTransform", "ExpTransform", "AffineTransform", "SigmoidTransform",
           "TanhTransform", "Binomial", "Cauchy", "Chi2", "Geometric", "HalfNormal", "StudentT",
           "Gumbel", "LowRankMultivariateNormal", "Multinomial",
           "NegativeBinomial", "Weibull", "Pareto", "OneHotCategoricalStraightThrough", "RelaxedBernoulli", "LogitRelaxedBernoulli",
           "RelaxedOneHotCategorical", "ExpRelaxedCategorical", "MixtureSameFamily",
           "kl_divergence", "register_kl", "constraints", "ContinuousBernoulli",
           "ExponentialFamily", "FisherSnedecor", "GeneralizedPareto", "HalfCauchy",
           "InverseGamma", "Kumaraswamy", "LKJCholesky", "LogisticNormal", "VonMises", "Wishart",
           "AbsTransform", "CatTransform", "CorrCholeskyTransform",
           "CumulativeDistributionTransform", "IndependentTransform", "LowerCholeskyTransform",
           "PositiveDefiniteTransform", "PowerTransform", "ReshapeTransform", "SoftmaxTransform",
           "SoftplusTransform", "StackTransform", "StickBreakingTransform", "identity_transform",
           "biject_to", "transform_to"]
