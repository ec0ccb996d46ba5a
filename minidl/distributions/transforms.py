"""Invertible maps y = f(x) with log|det df/dx|, as torch.distributions.transforms: what
TransformedDistribution pushes a base distribution through (LogNormal = exp of a Normal, a
tanh-squashed Gaussian policy = tanh of a Normal)."""
from __future__ import annotations

import math
import numbers
import weakref

import numpy as np

from ..backend.dtypes import is_floating
from ..functional import pad
from ..ops import cat, stack
from ..tensor import Tensor
from . import constraints
from ._linalg import cholesky
from ._special import log1p, softplus
from .utils import broadcast_all, sum_rightmost, tril_matrix_to_vec, vec_to_tril_matrix


class Transform:
    """Subclasses define ``_call`` (x -> y), ``_inverse`` (y -> x) and
    ``log_abs_det_jacobian(x, y)``. ``cache_size=1`` remembers the last pair, so that the
    inverse of a value just produced is the exact x it came from (no atanh of 1.0)."""

    bijective = True
    domain = constraints.real
    codomain = constraints.real

    @property
    def sign(self):
        """+1 or -1 for a monotone increasing or decreasing transform (what a transformed
        cdf needs); a transform that is neither has none, as torch's."""
        raise NotImplementedError(f"{type(self).__name__} has no sign: it is not a monotone "
                                  "elementwise map")

    def __init__(self, cache_size=0):
        if cache_size not in (0, 1):
            raise ValueError(f"cache_size must be 0 or 1, got {cache_size!r}")
        self._cache_size = cache_size
        self._cached = None

    @property
    def event_dim(self):
        if self.domain.event_dim != self.codomain.event_dim:  # ambiguous, as torch's
            raise ValueError("Please use either .domain.event_dim or .codomain.event_dim")
        return self.domain.event_dim

    @property
    def inv(self):
        # one inverse object while it lives, so t.inv is t.inv and t.inv.inv is t, as torch's
        inv = _cached_inverse(self)
        if inv is None:
            inv = _InverseTransform(self)
            self._inv_ref = weakref.ref(inv)
        return inv

    def __getstate__(self):  # the inverse's weak reference does not pickle
        state = self.__dict__.copy()
        state.pop("_inv_ref", None)
        return state

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        if type(self).__init__ is Transform.__init__:
            return type(self)(cache_size=cache_size)
        raise NotImplementedError(f"{type(self).__name__}.with_cache is not implemented")

    def __call__(self, x):
        if self._cache_size and self._cached is not None and self._cached[0] is x:
            return self._cached[1]
        y = self._call(x)
        if self._cache_size:
            self._cached = (x, y)
        return y

    def _inv_call(self, y):
        if self._cache_size and self._cached is not None and self._cached[1] is y:
            return self._cached[0]
        x = self._inverse(y)
        if self._cache_size:
            self._cached = (x, y)
        return x

    def _call(self, x):
        raise NotImplementedError

    def _inverse(self, y):
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def log_abs_det_jacobian(self, x, y):
        raise NotImplementedError

    def forward_shape(self, shape):
        return shape

    def inverse_shape(self, shape):
        return shape

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return type(self).__name__ + "()"


def _cached_inverse(t):
    ref = t.__dict__.get("_inv_ref")
    return None if ref is None else ref()


class _InverseTransform(Transform):
    def __init__(self, transform):
        super().__init__(cache_size=transform._cache_size)
        self._inv = transform

    @property
    def domain(self):
        return self._inv.codomain

    @property
    def codomain(self):
        return self._inv.domain

    @property
    def sign(self):
        return self._inv.sign

    @property
    def bijective(self):
        return self._inv.bijective

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return self._inv.with_cache(cache_size).inv

    @property
    def inv(self):
        return self._inv

    def forward_shape(self, shape):
        return self._inv.inverse_shape(shape)

    def inverse_shape(self, shape):
        return self._inv.forward_shape(shape)

    def __call__(self, x):
        return self._inv._inv_call(x)

    def _inv_call(self, y):
        return self._inv(y)

    def log_abs_det_jacobian(self, x, y):
        return -self._inv.log_abs_det_jacobian(y, x)

    def __eq__(self, other):
        return isinstance(other, _InverseTransform) and self._inv == other._inv

    def __hash__(self):
        return hash(("inv", self._inv))

    def __repr__(self):
        return f"_InverseTransform({self._inv!r})"


class ComposeTransform(Transform):
    """parts[0] first, then parts[1], ..."""

    def __init__(self, parts, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.parts = list(parts) if cache_size == 0 else [p.with_cache(cache_size) for p in parts]

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return ComposeTransform(self.parts, cache_size=cache_size)

    @property
    def domain(self):
        if not self.parts:
            return constraints.real
        # the event dims the first part needs, grown by what later parts consume
        domain = self.parts[0].domain
        event_dim = self.parts[-1].codomain.event_dim
        for p in reversed(self.parts):
            event_dim += p.domain.event_dim - p.codomain.event_dim
            event_dim = max(event_dim, p.domain.event_dim)
        if event_dim > domain.event_dim:
            domain = constraints.independent(domain, event_dim - domain.event_dim)
        return domain

    @property
    def codomain(self):
        if not self.parts:
            return constraints.real
        codomain = self.parts[-1].codomain
        event_dim = self.parts[0].domain.event_dim
        for p in self.parts:
            event_dim += p.codomain.event_dim - p.domain.event_dim
            event_dim = max(event_dim, p.codomain.event_dim)
        if event_dim > codomain.event_dim:
            codomain = constraints.independent(codomain, event_dim - codomain.event_dim)
        return codomain

    @property
    def bijective(self):
        return all(p.bijective for p in self.parts)

    @property
    def sign(self):
        s = 1
        for p in self.parts:
            s = s * p.sign
        return s

    @property
    def inv(self):
        inv = _cached_inverse(self)
        if inv is None:  # kept both ways, so that t.inv.inv is t, as torch's
            inv = ComposeTransform([p.inv for p in reversed(self.parts)],
                                   cache_size=self._cache_size)
            self._inv_ref, inv._inv_ref = weakref.ref(inv), weakref.ref(self)
        return inv

    def _call(self, x):
        for p in self.parts:
            x = p(x)
        return x

    def _inverse(self, y):
        for p in reversed(self.parts):
            y = p.inv(y)
        return y

    def log_abs_det_jacobian(self, x, y):
        if not self.parts:
            return x * 0.0
        xs = [x]
        for p in self.parts[:-1]:
            xs.append(p(xs[-1]))
        xs.append(y)
        total = 0.0
        event_dim = self.domain.event_dim
        for p, a, b in zip(self.parts, xs[:-1], xs[1:]):
            term = p.log_abs_det_jacobian(a, b)
            total = total + sum_rightmost(term, event_dim - p.domain.event_dim)
            event_dim += p.codomain.event_dim - p.domain.event_dim
        return total

    def forward_shape(self, shape):
        for p in self.parts:
            shape = p.forward_shape(shape)
        return shape

    def inverse_shape(self, shape):
        for p in reversed(self.parts):
            shape = p.inverse_shape(shape)
        return shape

    def __eq__(self, other):
        return isinstance(other, ComposeTransform) and self.parts == other.parts

    def __hash__(self):
        return hash(tuple(self.parts))

    def __repr__(self):
        return "ComposeTransform(\n    " + ",\n    ".join(repr(p) for p in self.parts) + "\n)"


class ExpTransform(Transform):
    sign = 1
    codomain = constraints.positive

    def _call(self, x):
        return x.exp()

    def _inverse(self, y):
        return y.log()

    def log_abs_det_jacobian(self, x, y):
        return x


class AffineTransform(Transform):
    """y = loc + scale * x; ``event_dim`` rightmost dims form one event (their log-det summed)."""

    def __init__(self, loc, scale, event_dim=0, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.loc, self.scale, self._event_dim = loc, scale, event_dim

    @property
    def domain(self):
        return constraints.real if self._event_dim == 0 else \
            constraints.independent(constraints.real, self._event_dim)

    codomain = domain

    @property
    def sign(self):
        if isinstance(self.scale, numbers.Real):
            return 1 if float(self.scale) > 0 else -1 if float(self.scale) < 0 else 0
        return Tensor(np.sign(self.scale.numpy()))

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return AffineTransform(self.loc, self.scale, self._event_dim, cache_size=cache_size)

    def _call(self, x):
        return self.loc + self.scale * x

    def _inverse(self, y):
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x, y):
        scale = self.scale
        if isinstance(scale, numbers.Real):
            result = x * 0.0 + math.log(abs(scale))
        else:
            result = scale.abs().log()
            if result.shape != x.shape:
                result = result.expand(*np.broadcast_shapes(result.shape, x.shape))
        return sum_rightmost(result, self._event_dim)

    def forward_shape(self, shape):
        # a loc or scale with more entries broadcasts the value, as torch's
        return tuple(np.broadcast_shapes(tuple(shape), tuple(getattr(self.loc, "shape", ())),
                                         tuple(getattr(self.scale, "shape", ()))))

    inverse_shape = forward_shape

    def __eq__(self, other):
        if not isinstance(other, AffineTransform) or self._event_dim != other._event_dim:
            return False
        for a, b in ((self.loc, other.loc), (self.scale, other.scale)):
            if a is b:
                continue
            if isinstance(a, Tensor) or isinstance(b, Tensor):
                a_np = a.numpy() if isinstance(a, Tensor) else np.asarray(a)
                b_np = b.numpy() if isinstance(b, Tensor) else np.asarray(b)
                if a_np.shape != b_np.shape or not (a_np == b_np).all():
                    return False
            elif a != b:
                return False
        return True

    def __hash__(self):
        return hash((AffineTransform, self._event_dim))


def _finfo(name, x):
    """np.finfo of a floating tensor; an integer or bool one refused with torch's TypeError
    (not NumPy's "data type not inexact")."""
    if not is_floating(np.dtype(x.dtype)):
        raise TypeError(f"{name}: finfo() requires a floating point input type, got {x.dtype}")
    return np.finfo(x.dtype)


class SigmoidTransform(Transform):
    sign = 1
    codomain = constraints.unit_interval

    def _call(self, x):
        finfo = _finfo("SigmoidTransform", x)
        return x.sigmoid().clamp(min=float(finfo.tiny), max=1 - float(finfo.eps))

    def _inverse(self, y):
        finfo = _finfo("SigmoidTransform", y)
        y = y.clamp(min=float(finfo.tiny), max=1 - float(finfo.eps))
        return y.log() - log1p(-y)

    def log_abs_det_jacobian(self, x, y):
        return -softplus(-x) - softplus(x)


class TanhTransform(Transform):
    """y = tanh(x); log|dy/dx| = 2 (log 2 - x - softplus(-2x)), stable for any x. Use
    ``cache_size=1`` for squashed policies, so log_prob of a sample does not take atanh(+-1)."""

    sign = 1

    codomain = constraints.interval(-1.0, 1.0)

    def _call(self, x):
        return x.tanh()

    def _inverse(self, y):
        return 0.5 * (log1p(y) - log1p(-y))

    def log_abs_det_jacobian(self, x, y):
        return 2.0 * (math.log(2.0) - x - softplus(-2.0 * x))


identity_transform = ComposeTransform([])


class AbsTransform(Transform):
    """y = |x| (not bijective: the inverse gives the non-negative preimage)."""

    codomain = constraints.positive
    bijective = False

    def _call(self, x):
        return x.abs()

    def _inverse(self, y):
        return y


class PowerTransform(Transform):
    """y = x^exponent on the positive reals."""

    domain = constraints.positive
    codomain = constraints.positive

    def __init__(self, exponent, cache_size=0):
        super().__init__(cache_size=cache_size)
        (self.exponent,) = broadcast_all(exponent)

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return PowerTransform(self.exponent, cache_size=cache_size)

    @property
    def sign(self):
        return self.exponent.sign()

    def _call(self, x):
        return x.pow(self.exponent)

    def _inverse(self, y):
        return y.pow(1 / self.exponent)

    def log_abs_det_jacobian(self, x, y):
        return (self.exponent * y / x).abs().log()

    def forward_shape(self, shape):
        return tuple(np.broadcast_shapes(shape, self.exponent.shape))

    inverse_shape = forward_shape

    def __eq__(self, other):
        return isinstance(other, PowerTransform) and bool((self.exponent == other.exponent).all())

    def __hash__(self):
        return hash(PowerTransform)


class SoftplusTransform(Transform):
    """y = log(1 + e^x); log|dy/dx| = -softplus(-x)."""

    sign = 1

    codomain = constraints.positive

    def _call(self, x):
        return softplus(x)

    def _inverse(self, y):
        return (-y).expm1().neg().log() + y

    def log_abs_det_jacobian(self, x, y):
        return -softplus(-x)


class SoftmaxTransform(Transform):
    """Real vectors to the simplex by softmax (not bijective: the inverse is log y)."""

    domain = constraints.real_vector
    codomain = constraints.simplex
    bijective = False

    def _call(self, x):
        probs = (x - x.detach().amax(-1, keepdim=True)).exp()
        return probs / probs.sum(-1, keepdim=True)

    def _inverse(self, y):
        return y.log()


class StickBreakingTransform(Transform):
    """Real vectors of K - 1 entries to the K-simplex, bijectively, by stick breaking: piece i
    takes the fraction sigmoid(x_i - log(K - 1 - i)) of what is left (x = 0 gives the centre)."""

    domain = constraints.real_vector
    codomain = constraints.simplex

    @staticmethod
    def _offset(n, like):
        return Tensor(np.log(np.arange(n, 0, -1, dtype=np.float64)).astype(like.dtype),
                      device=like.device)

    def _call(self, x):
        z = (x - self._offset(x.shape[-1], x)).sigmoid()
        left = (1 - z).cumprod(-1)
        return pad(z, (0, 1), value=1.0) * pad(left, (1, 0), value=1.0)

    def _inverse(self, y):
        crop = y[..., :-1]
        tiny = float(np.finfo(y.dtype).tiny)
        rest = (1 - crop.cumsum(-1)).clamp(min=tiny)
        return crop.log() - rest.log() + self._offset(crop.shape[-1], y)

    def log_abs_det_jacobian(self, x, y):
        shifted = x - self._offset(x.shape[-1], x)
        return (-shifted - softplus(-shifted) + y[..., :-1].log()).sum(-1)

    def forward_shape(self, shape):
        if len(shape) < 1:
            raise ValueError("StickBreakingTransform: too few dimensions on input")
        return tuple(shape[:-1]) + (shape[-1] + 1,)

    def inverse_shape(self, shape):
        if len(shape) < 1:
            raise ValueError("StickBreakingTransform: too few dimensions on input")
        return tuple(shape[:-1]) + (shape[-1] - 1,)


class LowerCholeskyTransform(Transform):
    """Unconstrained square matrices to lower-triangular ones with a positive diagonal: the
    strict lower triangle kept, the diagonal exponentiated."""

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.lower_cholesky
    bijective = False

    def _call(self, x):
        return x.tril(-1) + x.diagonal(dim1=-2, dim2=-1).exp().diag_embed()

    def _inverse(self, y):
        return y.tril(-1) + y.diagonal(dim1=-2, dim2=-1).log().diag_embed()


class PositiveDefiniteTransform(Transform):
    """Unconstrained square matrices to positive-definite ones: L L^T with L from
    LowerCholeskyTransform."""

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.positive_definite
    bijective = False

    def _call(self, x):
        low = LowerCholeskyTransform()(x)
        return low @ low.mT

    def _inverse(self, y):
        return LowerCholeskyTransform().inv(cholesky(y))


class CorrCholeskyTransform(Transform):
    """Real vectors of D (D - 1) / 2 entries to Cholesky factors of D x D correlation matrices:
    tanh to (-1, 1), then each row's stick broken so that it has unit norm."""

    domain = constraints.real_vector
    codomain = constraints.corr_cholesky

    def _call(self, x):
        x = x.tanh()
        eps = float(np.finfo(x.dtype).eps)
        x = x.clamp(min=-1 + eps, max=1 - eps)
        r = vec_to_tril_matrix(x, diag=-1)
        left = (1 - r * r).sqrt().cumprod(-1)
        n = r.shape[-1]
        r = r + Tensor(np.eye(n, dtype=x.dtype), device=x.device)
        return r * pad(left[..., :-1], (1, 0), value=1.0)

    def _inverse(self, y):
        left = 1 - (y * y).cumsum(-1)
        left_shifted = pad(left[..., :-1], (1, 0), value=1.0)
        t = tril_matrix_to_vec(y, diag=-1) / tril_matrix_to_vec(left_shifted, diag=-1).sqrt()
        return 0.5 * (log1p(t) - log1p(-t))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        left = 1 - (y * y).cumsum(-1)
        stick = 0.5 * tril_matrix_to_vec(left, diag=-2).log().sum(-1)
        tanh = -2 * (x + softplus(-2 * x) - math.log(2.0)).sum(-1)
        return stick + tanh

    def forward_shape(self, shape):
        if len(shape) < 1:
            raise ValueError("CorrCholeskyTransform: too few dimensions on input")
        n = shape[-1]
        d = round((0.25 + 2 * n) ** 0.5 + 0.5)
        if d * (d - 1) // 2 != n:
            raise ValueError("CorrCholeskyTransform: input is not a flattened lower-diagonal "
                             "number")
        return tuple(shape[:-1]) + (d, d)

    def inverse_shape(self, shape):
        if len(shape) < 2 or shape[-2] != shape[-1]:
            raise ValueError("CorrCholeskyTransform: input must be square matrices")
        n = shape[-1]
        return tuple(shape[:-2]) + (n * (n - 1) // 2,)


class ReshapeTransform(Transform):
    """A reshape of the rightmost dims (the event) from ``in_shape`` to ``out_shape``; its
    Jacobian is a permutation (log-det 0)."""

    def __init__(self, in_shape, out_shape, cache_size=0):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if int(np.prod(self.in_shape)) != int(np.prod(self.out_shape)):
            raise ValueError("in_shape, out_shape have different numbers of elements")
        super().__init__(cache_size=cache_size)

    @property
    def domain(self):
        return constraints.independent(constraints.real, len(self.in_shape))

    @property
    def codomain(self):
        return constraints.independent(constraints.real, len(self.out_shape))

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return ReshapeTransform(self.in_shape, self.out_shape, cache_size=cache_size)

    def _call(self, x):
        batch = x.shape[:x.ndim - len(self.in_shape)]
        return x.reshape(*(batch + self.out_shape))

    def _inverse(self, y):
        batch = y.shape[:y.ndim - len(self.out_shape)]
        return y.reshape(*(batch + self.in_shape))

    def log_abs_det_jacobian(self, x, y):
        batch = x.shape[:x.ndim - len(self.in_shape)]
        return x.new_zeros(batch)

    def _reshaped(self, shape, src, dst, name):
        if len(shape) < len(src):
            raise ValueError(f"ReshapeTransform {name}: too few dimensions on input")
        cut = len(shape) - len(src)
        if tuple(shape[cut:]) != src:
            raise ValueError(f"Shape mismatch: expected {tuple(shape[cut:])} but got {src}")
        return tuple(shape[:cut]) + dst

    def forward_shape(self, shape):
        return self._reshaped(shape, self.in_shape, self.out_shape, "forward")

    def inverse_shape(self, shape):
        return self._reshaped(shape, self.out_shape, self.in_shape, "inverse")

    def __eq__(self, other):
        return (isinstance(other, ReshapeTransform) and self.in_shape == other.in_shape
                and self.out_shape == other.out_shape)

    def __hash__(self):
        return hash((ReshapeTransform, self.in_shape, self.out_shape))


class IndependentTransform(Transform):
    """``base_transform`` with its rightmost ``reinterpreted_batch_ndims`` dims taken as part of
    the event: the log-dets summed over them."""

    def __init__(self, base_transform, reinterpreted_batch_ndims, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.base_transform = base_transform.with_cache(cache_size)
        self.reinterpreted_batch_ndims = reinterpreted_batch_ndims

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return IndependentTransform(self.base_transform, self.reinterpreted_batch_ndims,
                                    cache_size=cache_size)

    @property
    def domain(self):
        return constraints.independent(self.base_transform.domain,
                                       self.reinterpreted_batch_ndims)

    @property
    def codomain(self):
        return constraints.independent(self.base_transform.codomain,
                                       self.reinterpreted_batch_ndims)

    @property
    def bijective(self):
        return self.base_transform.bijective

    @property
    def sign(self):
        return self.base_transform.sign

    def _call(self, x):
        if x.ndim < self.domain.event_dim:
            raise ValueError("Too few dimensions on input")
        return self.base_transform(x)

    def _inverse(self, y):
        if y.ndim < self.codomain.event_dim:
            raise ValueError("Too few dimensions on input")
        return self.base_transform.inv(y)

    def log_abs_det_jacobian(self, x, y):
        return sum_rightmost(self.base_transform.log_abs_det_jacobian(x, y),
                             self.reinterpreted_batch_ndims)

    def forward_shape(self, shape):
        return self.base_transform.forward_shape(shape)

    def inverse_shape(self, shape):
        return self.base_transform.inverse_shape(shape)

    def __eq__(self, other):
        return (isinstance(other, IndependentTransform)
                and self.base_transform == other.base_transform
                and self.reinterpreted_batch_ndims == other.reinterpreted_batch_ndims)

    def __hash__(self):
        return hash((IndependentTransform, self.base_transform, self.reinterpreted_batch_ndims))

    def __repr__(self):
        return f"IndependentTransform({self.base_transform!r}, {self.reinterpreted_batch_ndims})"


class CatTransform(Transform):
    """``tseq[i]`` on the i-th piece (``lengths[i]`` long, 1 by default) along ``dim``."""

    def __init__(self, tseq, dim=0, lengths=None, cache_size=0):
        if not all(isinstance(t, Transform) for t in tseq):
            raise TypeError("CatTransform: tseq must hold Transforms")
        super().__init__(cache_size=cache_size)
        self.transforms = [t.with_cache(cache_size) for t in tseq]
        self.lengths = [1] * len(self.transforms) if lengths is None else list(lengths)
        if len(self.lengths) != len(self.transforms):
            raise ValueError(f"CatTransform: {len(self.transforms)} transforms but "
                             f"{len(self.lengths)} lengths")
        self.dim = dim

    @property
    def event_dim(self):
        return max(t.event_dim for t in self.transforms)

    @property
    def length(self):
        return sum(self.lengths)

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return CatTransform(self.transforms, self.dim, self.lengths, cache_size)

    def _pieces(self, v):
        if not -v.ndim <= self.dim < v.ndim:
            raise ValueError(f"CatTransform: dim {self.dim} out of range for {v.ndim} dims")
        if v.shape[self.dim] != self.length:
            raise ValueError(f"CatTransform: size {v.shape[self.dim]} along dim {self.dim}, "
                             f"the lengths sum to {self.length}")
        start = 0
        for t, n in zip(self.transforms, self.lengths):
            yield t, v.narrow(self.dim, start, n)
            start += n

    def _call(self, x):
        return cat([t(piece) for t, piece in self._pieces(x)], self.dim)

    def _inverse(self, y):
        return cat([t.inv(piece) for t, piece in self._pieces(y)], self.dim)

    def log_abs_det_jacobian(self, x, y):
        parts = []
        for (t, xs), (_, ys) in zip(self._pieces(x), self._pieces(y)):
            part = t.log_abs_det_jacobian(xs, ys)
            if t.event_dim < self.event_dim:
                part = sum_rightmost(part, self.event_dim - t.event_dim)
            parts.append(part)
        dim = self.dim - x.ndim if self.dim >= 0 else self.dim
        dim += self.event_dim
        if dim < 0:
            return cat(parts, dim)
        return sum(parts[1:], parts[0])

    @property
    def bijective(self):
        return all(t.bijective for t in self.transforms)

    @property
    def domain(self):
        return constraints.cat([t.domain for t in self.transforms], self.dim, self.lengths)

    @property
    def codomain(self):
        return constraints.cat([t.codomain for t in self.transforms], self.dim, self.lengths)

    def __eq__(self, other):
        return (isinstance(other, CatTransform) and self.transforms == other.transforms
                and self.dim == other.dim and self.lengths == other.lengths)

    def __hash__(self):
        return hash((CatTransform, tuple(self.transforms), self.dim))


class StackTransform(Transform):
    """``tseq[i]`` on ``x.select(dim, i)``, the results stacked along ``dim``."""

    def __init__(self, tseq, dim=0, cache_size=0):
        if not all(isinstance(t, Transform) for t in tseq):
            raise TypeError("StackTransform: tseq must hold Transforms")
        super().__init__(cache_size=cache_size)
        self.transforms = [t.with_cache(cache_size) for t in tseq]
        self.dim = dim

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return StackTransform(self.transforms, self.dim, cache_size)

    def _slices(self, v):
        if not -v.ndim <= self.dim < v.ndim:
            raise ValueError(f"StackTransform: dim {self.dim} out of range for {v.ndim} dims")
        if v.shape[self.dim] != len(self.transforms):
            raise ValueError(f"StackTransform: size {v.shape[self.dim]} along dim {self.dim}, "
                             f"but {len(self.transforms)} transforms")
        return [v.select(self.dim, i) for i in range(len(self.transforms))]

    def _call(self, x):
        return stack([t(s) for t, s in zip(self.transforms, self._slices(x))], self.dim)

    def _inverse(self, y):
        return stack([t.inv(s) for t, s in zip(self.transforms, self._slices(y))], self.dim)

    def log_abs_det_jacobian(self, x, y):
        return stack([t.log_abs_det_jacobian(xs, ys) for t, xs, ys in
                      zip(self.transforms, self._slices(x), self._slices(y))], self.dim)

    @property
    def bijective(self):
        return all(t.bijective for t in self.transforms)

    @property
    def domain(self):
        return constraints.stack([t.domain for t in self.transforms], self.dim)

    @property
    def codomain(self):
        return constraints.stack([t.codomain for t in self.transforms], self.dim)

    def __eq__(self, other):
        return (isinstance(other, StackTransform) and self.transforms == other.transforms
                and self.dim == other.dim)

    def __hash__(self):
        return hash((StackTransform, tuple(self.transforms), self.dim))


class CumulativeDistributionTransform(Transform):
    """y = F(x), the CDF of ``distribution`` (a univariate one), onto [0, 1]; its log-det is the
    log-density (a copula's building block)."""

    bijective = True
    codomain = constraints.unit_interval
    sign = 1

    def __init__(self, distribution, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.distribution = distribution

    @property
    def domain(self):
        return self.distribution.support

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return CumulativeDistributionTransform(self.distribution, cache_size=cache_size)

    def _call(self, x):
        return self.distribution.cdf(x)

    def _inverse(self, y):
        return self.distribution.icdf(y)

    def log_abs_det_jacobian(self, x, y):
        return self.distribution.log_prob(x)

    def __eq__(self, other):
        return isinstance(other, CumulativeDistributionTransform) and \
            self.distribution is other.distribution

    def __hash__(self):
        return hash((CumulativeDistributionTransform, id(self.distribution)))
