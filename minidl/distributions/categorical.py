"""Categorical(probs=None, logits=None): an index in 0 .. K-1 drawn with the (normalised)
probabilities of the last dim."""
from __future__ import annotations

import numpy as np

from ..backend import default_generator, get_array_module, rng, to_numpy, torch_random
from ..creation import arange, full
from ..tensor import Tensor
from . import constraints
from .distribution import Distribution, _sample_shape
from .utils import broadcast_shape, lazy_property, logits_to_probs, probs_to_logits


class Categorical(Distribution):
    arg_constraints = {"probs": constraints.simplex,
                       "logits": constraints.independent(constraints.real, 1)}
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            if not isinstance(probs, Tensor) or probs.ndim < 1:
                raise ValueError("`probs` parameter must be at least one-dimensional.")
            self.probs = probs / probs.sum(-1, keepdim=True)
        else:
            if not isinstance(logits, Tensor) or logits.ndim < 1:
                raise ValueError("`logits` parameter must be at least one-dimensional.")
            # normalised: log-probabilities (the max is subtracted inside log_softmax)
            self.logits = logits.log_softmax(-1)
        self._param = self.probs if probs is not None else self.logits
        self._num_events = self._param.shape[-1]
        batch_shape = self._param.shape[:-1] if self._param.ndim > 1 else ()
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Categorical, _instance)
        batch_shape = tuple(batch_shape)
        param_shape = batch_shape + (self._num_events,)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(*param_shape)
            new._param = new.probs
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(*param_shape)
            new._param = new.logits
        new._num_events = self._num_events
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits)

    @property
    def param_shape(self):
        return self._param.shape

    @property
    def mean(self):
        return full(self._extended_shape(), float("nan"), dtype=self.probs.dtype,
                    device=self.probs.device)

    @property
    def mode(self):
        return self.probs.argmax(-1)

    @property
    def variance(self):
        return self.mean

    def sample(self, sample_shape=()):
        """Inverse-CDF draws from minidl's seeded generator: int64 indices of shape
        sample_shape + batch_shape; a category of probability 0 is never drawn."""
        shape = _sample_shape(sample_shape)
        p = self.probs.detach().data
        xp = get_array_module(p)
        rows = p.reshape(-1, self._num_events)
        cdf = xp.cumsum(rows.astype(np.float64), axis=-1)
        cdf = cdf / cdf[:, -1:]
        n = int(np.prod(shape))
        if n and xp is np:  # torch's CPU draws: multinomial(probs, n, replacement=True).T
            weights = np.asarray(to_numpy(rows), dtype=np.float64)
            dtype = np.float64 if p.dtype == np.float64 else np.float32
            idx = torch_random.multinomial(default_generator, weights, dtype, n, True).T
            return Tensor(np.ascontiguousarray(idx).reshape(shape + self._batch_shape),
                          device=self.probs.device)
        # on a GPU (or for no draws): inverse-CDF draws on the device, without copying the
        # probabilities to the host
        u = xp.asarray(rng().random((n, rows.shape[0])))
        idx = (cdf[None] <= u[..., None]).sum(-1)
        idx = xp.minimum(idx, self._num_events - 1).astype(np.int64)
        return Tensor(idx.reshape(shape + self._batch_shape), device=self.probs.device)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = value.long().unsqueeze(-1)
        shape = broadcast_shape("Categorical.log_prob", value.shape, self.logits.shape)
        value = value.expand(*shape)[..., :1]
        return self.logits.expand(*shape).gather(-1, value).squeeze(-1)

    def entropy(self):
        # logits of -inf (probability 0) clamped so that 0 * logit is 0, not NaN
        min_real = float(np.finfo(self.logits.dtype).min)
        p_log_p = self.logits.clamp(min=min_real) * self.probs
        return -p_log_p.sum(-1)

    def enumerate_support(self, expand=True):
        values = arange(self._num_events, device=self._param.device)
        values = values.reshape((-1,) + (1,) * len(self._batch_shape))
        return values.expand(-1, *self._batch_shape) if expand else values
