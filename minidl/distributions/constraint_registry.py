"""``biject_to(constraint)`` and ``transform_to(constraint)``: a Transform from the real numbers
onto a constraint's set, as torch.distributions.constraint_registry. biject_to's are
bijective (for HMC-style samplers, which need log-dets); transform_to's need not be (for
optimisers, which only need an unconstrained parameterisation). Both are looked up by the
constraint's class, and ``register`` adds rules for new ones::

    @transform_to.register(MyConstraint)
    def _(constraint):
        return MyTransform(constraint.param)
"""
from __future__ import annotations

import numbers

from . import constraints, transforms


class ConstraintRegistry:
    """Constraint classes to the factories that build their transforms."""

    def __init__(self):
        self._registry = {}

    def register(self, constraint, factory=None):
        if factory is None:  # as a decorator
            return lambda factory: self.register(constraint, factory)
        if isinstance(constraint, constraints.Constraint):
            constraint = type(constraint)
        if not isinstance(constraint, type) or not issubclass(constraint, constraints.Constraint):
            raise TypeError(f"Expected constraint to be either a Constraint subclass or "
                            f"instance, but got {constraint}")
        self._registry[constraint] = factory
        return factory

    def __call__(self, constraint):
        try:
            factory = self._registry[type(constraint)]
        except KeyError:
            raise NotImplementedError(
                f"Cannot transform {type(constraint).__name__} constraints") from None
        return factory(constraint)


biject_to = ConstraintRegistry()
transform_to = ConstraintRegistry()


def _is_unit(value, target):
    return isinstance(value, numbers.Number) and value == target


def _real(constraint):
    return transforms.identity_transform


def _independent_biject(constraint):
    return transforms.IndependentTransform(biject_to(constraint.base_constraint),
                                           constraint.reinterpreted_batch_ndims)


def _independent_transform(constraint):
    return transforms.IndependentTransform(transform_to(constraint.base_constraint),
                                           constraint.reinterpreted_batch_ndims)


def _greater_than(constraint):
    return transforms.ComposeTransform([transforms.ExpTransform(),
                                        transforms.AffineTransform(constraint.lower_bound, 1)])


def _less_than(constraint):
    return transforms.ComposeTransform([transforms.ExpTransform(),
                                        transforms.AffineTransform(constraint.upper_bound, -1)])


def _interval(constraint):
    if _is_unit(constraint.lower_bound, 0) and _is_unit(constraint.upper_bound, 1):
        return transforms.SigmoidTransform()
    loc, scale = constraint.lower_bound, constraint.upper_bound - constraint.lower_bound
    return transforms.ComposeTransform([transforms.SigmoidTransform(),
                                        transforms.AffineTransform(loc, scale)])


def _cat(registry):
    return lambda c: transforms.CatTransform([registry(p) for p in c.cseq], c.dim, c.lengths)


def _stack(registry):
    return lambda c: transforms.StackTransform([registry(p) for p in c.cseq], c.dim)


for _registry in (biject_to, transform_to):
    _registry.register(constraints.real, _real)
    for _c in (constraints.greater_than, constraints.greater_than_eq):
        _registry.register(_c, _greater_than)
    _registry.register(constraints.less_than, _less_than)
    for _c in (constraints.interval, constraints.half_open_interval):
        _registry.register(_c, _interval)
    _registry.register(constraints.corr_cholesky, lambda c: transforms.CorrCholeskyTransform())
    _registry.register(constraints.cat, _cat(_registry))
    _registry.register(constraints.stack, _stack(_registry))
biject_to.register(constraints.independent, _independent_biject)
transform_to.register(constraints.independent, _independent_transform)
biject_to.register(constraints.simplex, lambda c: transforms.StickBreakingTransform())
transform_to.register(constraints.simplex, lambda c: transforms.SoftmaxTransform())
transform_to.register(constraints.lower_cholesky, lambda c: transforms.LowerCholeskyTransform())
transform_to.register(constraints.positive_definite,
                      lambda c: transforms.PositiveDefiniteTransform())
# a positive-definite matrix is also semidefinite: torch maps onto both the same way
transform_to.register(constraints.positive_semidefinite,
                      lambda c: transforms.PositiveDefiniteTransform())
del _registry, _c
