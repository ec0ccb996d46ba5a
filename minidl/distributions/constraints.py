"""What a parameter or a sample must satisfy, as ``torch.distributions.constraints``: each
constraint's ``check(value)`` is a bool Tensor (one entry per event), and its repr is torch's
(``GreaterThan(lower_bound=0.0)``), which the validation errors quote."""
from __future__ import annotations

import numpy as np

from ..ops import cat as _cat_tensors, stack as _stack_tensors
from ..tensor import Tensor


def _t(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _bound(b):
    return b.item() if isinstance(b, Tensor) and b.numel() == 1 else b


class Constraint:
    is_discrete = False
    event_dim = 0

    def check(self, value):
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__.lstrip("_") + "()"


class _Dependent(Constraint):
    """A constraint that depends on other parameters (Uniform's support): not checked alone."""

    def __init__(self, *, is_discrete=False, event_dim=0):
        self.is_discrete, self.event_dim = is_discrete, event_dim

    def __call__(self, *, is_discrete=False, event_dim=0):
        return _Dependent(is_discrete=is_discrete, event_dim=event_dim)

    def check(self, value):
        raise ValueError("Cannot determine validity of dependent constraint")


def is_dependent(constraint):
    return isinstance(constraint, _Dependent)


class _Real(Constraint):
    def check(self, value):
        value = _t(value)
        return value == value  # False only at NaN


class _Boolean(Constraint):
    is_discrete = True

    def check(self, value):
        value = _t(value)
        return (value == 0) | (value == 1)


class _GreaterThan(Constraint):
    def __init__(self, lower_bound):
        self.lower_bound = lower_bound

    def check(self, value):
        return _t(value) > self.lower_bound

    def __repr__(self):
        return f"GreaterThan(lower_bound={_bound(self.lower_bound)})"


class _GreaterThanEq(_GreaterThan):
    def check(self, value):
        return _t(value) >= self.lower_bound

    def __repr__(self):
        return f"GreaterThanEq(lower_bound={_bound(self.lower_bound)})"


class _LessThan(Constraint):
    def __init__(self, upper_bound):
        self.upper_bound = upper_bound

    def check(self, value):
        return _t(value) < self.upper_bound

    def __repr__(self):
        return f"LessThan(upper_bound={_bound(self.upper_bound)})"


class _Interval(Constraint):
    def __init__(self, lower_bound, upper_bound):
        self.lower_bound, self.upper_bound = lower_bound, upper_bound

    def check(self, value):
        value = _t(value)
        return (value >= self.lower_bound) & (value <= self.upper_bound)

    def __repr__(self):
        return (f"{type(self).__name__.lstrip('_')}(lower_bound={_bound(self.lower_bound)}, "
                f"upper_bound={_bound(self.upper_bound)})")


class _HalfOpenInterval(_Interval):
    def check(self, value):
        value = _t(value)
        return (value >= self.lower_bound) & (value < self.upper_bound)


class _IntegerInterval(_Interval):
    is_discrete = True

    def check(self, value):
        value = _t(value)
        return (value % 1 == 0) & (value >= self.lower_bound) & (value <= self.upper_bound)


class _NonNegativeInteger(Constraint):
    is_discrete = True

    def check(self, value):
        value = _t(value)
        return (value % 1 == 0) & (value >= 0)


class _Simplex(Constraint):
    """Non-negative entries along the last dim that sum to 1 (to 1e-6, as torch)."""
    event_dim = 1

    def check(self, value):
        value = _t(value)
        return (value >= 0).all(-1) & ((value.sum(-1) - 1).abs() < 1e-6)


class _OneHot(Constraint):
    is_discrete = True
    event_dim = 1

    def check(self, value):
        value = _t(value)
        return ((value == 0) | (value == 1)).all(-1) & (value.sum(-1) == 1)


class _LowerCholesky(Constraint):
    event_dim = 2

    def check(self, value):
        value = _t(value)
        lower = (value.tril() == value).flatten(-2).all(-1)
        return lower & (value.diagonal(dim1=-2, dim2=-1) > 0).all(-1)


class _PositiveDefinite(Constraint):
    event_dim = 2

    def check(self, value):
        import numpy as np

        a = value.numpy()
        symmetric = np.isclose(a, np.swapaxes(a, -1, -2), atol=1e-6).all((-1, -2))
        with np.errstate(invalid="ignore"):
            positive = np.linalg.eigvalsh(a).min(-1) > 0 if a.size else np.ones(a.shape[:-2], bool)
        return Tensor(symmetric & positive, device=value.device)


class _Independent(Constraint):
    """``base_constraint`` with its rightmost ``reinterpreted_batch_ndims`` dims taken as one
    event (checked with all())."""

    def __init__(self, base_constraint, reinterpreted_batch_ndims):
        self.base_constraint = base_constraint
        self.reinterpreted_batch_ndims = reinterpreted_batch_ndims

    @property
    def is_discrete(self):
        return self.base_constraint.is_discrete

    @property
    def event_dim(self):
        return self.base_constraint.event_dim + self.reinterpreted_batch_ndims

    def check(self, value):
        result = self.base_constraint.check(value)
        for _ in range(self.reinterpreted_batch_ndims):
            result = result.all(-1)
        return result

    def __repr__(self):
        return f"IndependentConstraint({self.base_constraint!r}, {self.reinterpreted_batch_ndims})"


class _MixtureSameFamily(Constraint):
    """A MixtureSameFamily's support: ``base_constraint`` (its components') checked with the
    mixture dim added back to the value, and true where every component's support holds the
    value (all() over the mixture dim, as torch's)."""

    def __init__(self, base_constraint):
        if not isinstance(base_constraint, Constraint):
            raise TypeError(f"base_constraint must be a Constraint, got "
                            f"{type(base_constraint).__name__}")
        self.base_constraint = base_constraint

    @property
    def is_discrete(self):
        return self.base_constraint.is_discrete

    @property
    def event_dim(self):
        return self.base_constraint.event_dim

    def check(self, value):
        if value.ndim < self.event_dim:
            raise ValueError(f"Expected value.dim() >= {self.event_dim} but got {value.ndim}")
        result = self.base_constraint.check(value.unsqueeze(-1 - self.event_dim))
        keep = value.ndim - self.event_dim
        return result.reshape(tuple(result.shape[:keep]) + (-1,)).all(-1)

    def __repr__(self):
        return f"MixtureSameFamilyConstraint({self.base_constraint!r})"


class _LowerTriangular(Constraint):
    event_dim = 2

    def check(self, value):
        value = _t(value)
        return (value.tril() == value).flatten(-2).all(-1)


class _CorrCholesky(Constraint):
    """Lower-triangular with a positive diagonal and rows of unit norm (to 1e-4 per entry of
    the norm, as torch): the Cholesky factors of correlation matrices."""
    event_dim = 2

    def check(self, value):
        value = _t(value)
        tol = float(np.finfo(value.dtype).eps) * value.shape[-1] * 10
        row_norm = (value * value).sum(-1).sqrt()
        unit = ((row_norm - 1).abs() <= tol).all(-1)
        return _LowerCholesky().check(value) & unit


class _Square(Constraint):
    event_dim = 2

    def check(self, value):
        value = _t(value)
        return Tensor(np.full(value.shape[:-2], value.shape[-1] == value.shape[-2]),
                      device=value.device)


class _Symmetric(_Square):
    def check(self, value):
        a = _t(value).numpy()
        if a.shape[-1] != a.shape[-2]:
            return super().check(value)
        return Tensor(np.isclose(a, np.swapaxes(a, -1, -2), atol=1e-6).all((-1, -2)),
                      device=_t(value).device)


class _PositiveSemidefinite(_Symmetric):
    def check(self, value):
        sym = super().check(value)
        a = _t(value).numpy()
        with np.errstate(invalid="ignore"):
            nonneg = (np.linalg.eigvalsh(a).min(-1) >= 0 if a.size
                      else np.ones(a.shape[:-2], bool))
        return sym & Tensor(nonneg, device=_t(value).device)


class _Cat(Constraint):
    """``cseq[i]`` on the i-th piece (of ``lengths[i]``, 1 each by default) along ``dim``."""

    def __init__(self, cseq, dim=0, lengths=None):
        self.cseq = list(cseq)
        self.lengths = [1] * len(self.cseq) if lengths is None else list(lengths)
        if len(self.lengths) != len(self.cseq):
            raise ValueError(f"cat: {len(self.cseq)} constraints but {len(self.lengths)} lengths")
        self.dim = dim

    @property
    def is_discrete(self):
        return any(c.is_discrete for c in self.cseq)

    @property
    def event_dim(self):
        return max(c.event_dim for c in self.cseq)

    def check(self, value):
        value = _t(value)
        checks, start = [], 0
        for c, n in zip(self.cseq, self.lengths):
            checks.append(c.check(value.narrow(self.dim, start, n)))
            start += n
        return _cat_tensors(checks, self.dim)


class _Stack(Constraint):
    """``cseq[i]`` on ``value.select(dim, i)``."""

    def __init__(self, cseq, dim=0):
        self.cseq = list(cseq)
        self.dim = dim

    @property
    def is_discrete(self):
        return any(c.is_discrete for c in self.cseq)

    @property
    def event_dim(self):
        dim = max(c.event_dim for c in self.cseq)
        if self.dim + dim < 0:
            dim += 1
        return dim

    def check(self, value):
        value = _t(value)
        return _stack_tensors([c.check(value.select(self.dim, i)) for i, c in enumerate(self.cseq)],
                     self.dim)


dependent = _Dependent()
real = _Real()
real_vector = _Independent(real, 1)
boolean = _Boolean()
positive = _GreaterThan(0.0)
nonnegative = _GreaterThanEq(0.0)
unit_interval = _Interval(0.0, 1.0)
simplex = _Simplex()
one_hot = _OneHot()
nonnegative_integer = _NonNegativeInteger()
lower_cholesky = _LowerCholesky()
positive_definite = _PositiveDefinite()
lower_triangular = _LowerTriangular()
corr_cholesky = _CorrCholesky()
square = _Square()
symmetric = _Symmetric()
positive_semidefinite = _PositiveSemidefinite()
positive_integer = _IntegerInterval(1, float("inf"))
cat = _Cat
stack = _Stack
greater_than = _GreaterThan
greater_than_eq = _GreaterThanEq
less_than = _LessThan
interval = _Interval
half_open_interval = _HalfOpenInterval
integer_interval = _IntegerInterval
independent = _Independent
mixture_same_family = _MixtureSameFamily


def dependent_property(fn=None, *, is_discrete=False, event_dim=0):
    """A property that is also a dependent constraint (Uniform.support)."""
    def wrap(f):
        return property(f)
    return wrap(fn) if fn is not None else wrap
