"""``Distribution``: the base of every distribution, as ``torch.distributions.Distribution``.

Shapes follow torch: ``sample(sample_shape)`` has shape ``sample_shape + batch_shape +
event_shape``; ``log_prob`` of such a value has ``sample_shape + batch_shape``. Shapes are
tuples. Parameters are checked against ``arg_constraints`` and values against ``support``
unless ``validate_args=False`` (or ``Distribution.set_default_validate_args(False)``), with
torch's ValueErrors that name the parameter, the constraint and the values that broke it.
Samples come from minidl's seeded generator (``minidl.manual_seed``).
"""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor
from . import constraints
from .utils import lazy_property


def _sample_shape(sample_shape):
    if isinstance(sample_shape, (tuple, list)):
        shape = tuple(sample_shape)
        if all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0
               for n in shape):
            return tuple(int(n) for n in shape)
        raise ValueError(f"sample_shape must hold non-negative ints, got {sample_shape!r}")
    raise TypeError(f"sample_shape must be a tuple of ints, as torch.Size, got "
                    f"{type(sample_shape).__name__} (write ({sample_shape!r},))")


def _class_attribute(cls, name):
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


class Distribution:
    has_rsample = False
    has_enumerate_support = False
    _validate_args = True  # torch's default (under __debug__)
    arg_constraints: dict = {}

    @staticmethod
    def set_default_validate_args(value):
        if value not in (True, False):
            raise ValueError(f"set_default_validate_args: value must be True or False, got {value!r}")
        Distribution._validate_args = value

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        self._batch_shape = tuple(batch_shape)
        self._event_shape = tuple(event_shape)
        if validate_args is not None:
            self._validate_args = validate_args
        if self._validate_args:
            for param, constraint in self.arg_constraints.items():
                if constraints.is_dependent(constraint):
                    continue
                # a lazily derived parameter not yet computed: its source is checked; a plain
                # property (Chi2's df) is read and checked, as torch's
                if param not in self.__dict__ and isinstance(
                        _class_attribute(type(self), param), lazy_property):
                    continue
                value = getattr(self, param)
                if not bool(constraint.check(value).all()):
                    raise ValueError(
                        f"Expected parameter {param} ({type(value).__name__} of shape "
                        f"{tuple(value.shape)}) of distribution {self!r} to satisfy the "
                        f"constraint {constraint!r}, but found invalid values:\n{value}")

    @property
    def batch_shape(self):
        return self._batch_shape

    @property
    def event_shape(self):
        return self._event_shape

    @property
    def support(self):
        raise NotImplementedError

    @property
    def mean(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mean")

    @property
    def mode(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mode")

    @property
    def variance(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement variance")

    @property
    def stddev(self):
        return self.variance.sqrt()

    def expand(self, batch_shape, _instance=None):
        raise NotImplementedError(f"{type(self).__name__} does not implement expand")

    def _expand_params(self, cls, batch_shape, _instance, *names):
        """``expand`` for a distribution whose parameters all have its batch shape: each named
        parameter the instance holds (probs or logits only once computed) is expanded to
        ``batch_shape``, and ``_param`` follows the one the instance was built from."""
        new = self._get_checked_instance(cls, _instance)
        batch_shape = tuple(batch_shape)
        for name in names:
            if name in self.__dict__:
                value = self.__dict__[name]
                setattr(new, name, value.expand(*batch_shape))
                if self.__dict__.get("_param") is value:
                    new._param = new.__dict__[name]
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _get_checked_instance(self, cls, _instance=None):
        if _instance is None and type(self).__init__ != cls.__init__:
            raise NotImplementedError(
                f"Subclass {type(self).__name__} of {cls.__name__} that defines a custom "
                "__init__ method must also define a custom .expand() method.")
        return cls.__new__(type(self)) if _instance is None else _instance

    def sample(self, sample_shape=()):
        """A sample of shape sample_shape + batch_shape + event_shape, with no gradient."""
        with no_grad():
            return self.rsample(sample_shape).detach()

    def rsample(self, sample_shape=()):
        """A reparameterised sample: gradients flow back to the parameters."""
        raise NotImplementedError(f"{type(self).__name__} has no rsample (has_rsample is False)")

    def sample_n(self, n):
        return self.sample((n,))

    def log_prob(self, value):
        raise NotImplementedError

    def cdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} does not implement cdf")

    def icdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} does not implement icdf")

    def enumerate_support(self, expand=True):
        raise NotImplementedError(f"{type(self).__name__} does not implement enumerate_support")

    def entropy(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement entropy")

    def perplexity(self):
        return self.entropy().exp()

    def _extended_shape(self, sample_shape=()):
        return _sample_shape(sample_shape) + self._batch_shape + self._event_shape

    def _validate_sample(self, value):
        """torch's checks of a value given to log_prob/cdf: a Tensor, whose shape broadcasts
        with batch_shape + event_shape, inside the support."""
        if not isinstance(value, Tensor):
            raise ValueError("The value argument to log_prob must be a Tensor")
        event_dim_start = value.ndim - len(self._event_shape)
        if value.shape[event_dim_start:] != self._event_shape:
            raise ValueError(f"The right-most size of value must match event_shape: "
                             f"{tuple(value.shape)} vs {self._event_shape}.")
        actual_shape = value.shape
        expected_shape = self._batch_shape + self._event_shape
        for i, j in zip(reversed(actual_shape), reversed(expected_shape)):
            if i != 1 and j != 1 and i != j:
                raise ValueError(f"Value is not broadcastable with batch_shape+event_shape: "
                                 f"{tuple(actual_shape)} vs {expected_shape}.")
        try:
            support = self.support
        except NotImplementedError:
            return
        valid = support.check(value)
        if not bool(valid.all()):
            raise ValueError(
                f"Expected value argument ({type(value).__name__} of shape {tuple(value.shape)}) "
                f"to be within the support ({support!r}) of the distribution {self!r}, but found "
                f"invalid values:\n{value}")

    def __repr__(self):
        names = [k for k in self.arg_constraints if k in self.__dict__]
        parts = []
        for p in names:
            v = self.__dict__[p]
            if v.numel() != 1:
                shown = tuple(v.shape)
            elif v.ndim == 0:
                shown = v.item()
            else:
                shown = v
            parts.append(f"{p}: {shown}")
        return f"{type(self).__name__}({', '.join(parts)})"
