"""Reductions and statistics under PyTorch's names that math_ops.py and shape_ops.py do not
have: aminmax, nanmedian, quantile/nanquantile, mode, dist, cov and corrcoef.

Most are compositions of differentiable ops (sort, gather, lerp, matmul), which carry their
gradients as PyTorch's do: a quantile's gradient goes to the one or two sorted neighbours it
interpolates, a tie in aminmax shares the gradient evenly, nanmedian() over everything shares
it among the elements equal to the median. Tensor's methods are installed by tensor.py from
``TENSOR_METHODS``; this module imports only ``backend``, ``autograd``, ``ops`` and the op
modules beside it.
"""
from __future__ import annotations

import warnings
from collections import namedtuple

import numpy as np

from . import autograd
from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import default_float, is_floating, is_real_number
from .indexing import Gather
from .math_ops import vector_norm
from .ops import (Cast, TakeAlongDim, constant, refuse_complex, refuse_unsigned, where,
                  wrap_dim)
from .pointwise import DtypeError, OpArgumentError, _check_tensor
from .shape_ops import _argsort, median_ties, sort

AminmaxResult = namedtuple("AminmaxResult", ["min", "max"])  # torch.return_types.aminmax
NanmedianResult = namedtuple("NanmedianResult", ["values", "indices"])
ModeResult = namedtuple("ModeResult", ["values", "indices"])  # torch.return_types.mode


class EmptyDimError(IndexError, ValueError):
    """A reduction over an empty dim: the IndexError PyTorch raises, a ValueError as minidl's."""


def aminmax(input, *, dim=None, keepdim=False):
    """(min, max) over ``dim`` (all elements when None); ties share each gradient evenly."""
    _check_tensor("aminmax", "input", input)
    if dim is None:
        if input.numel() == 0:
            raise OpArgumentError("aminmax(): cannot compute aminmax over an empty tensor: the "
                                  "operation has no identity")
        lo, hi = input.amin(), input.amax()
        if keepdim:
            ones = (1,) * input.ndim
            lo, hi = lo.reshape(ones), hi.reshape(ones)
        return AminmaxResult(lo, hi)
    d = wrap_dim(dim, max(input.ndim, 1), "aminmax")
    if input.ndim and input.shape[d] == 0:
        raise EmptyDimError(f"aminmax(): cannot compute aminmax over the empty dim {dim} (size "
                            "0): the operation has no identity")
    if input.ndim == 0:
        return AminmaxResult(input.amin(), input.amax())
    return AminmaxResult(input.amin(d, keepdim), input.amax(d, keepdim))


# ---- nanmedian -------------------------------------------------------------------------------
class NanMedianAll(Function):
    """The lower median of the elements that are not NaN (NaN when all are); its gradient is
    shared among the elements equal to it, as torch.nanmedian()'s."""

    def forward(self, a):
        xp = get_array_module(a)
        order = _argsort(a, 0, False, True)
        if not is_floating(a.dtype):
            y = a[order[(a.size - 1) // 2]]
        else:
            # the count stays on the device: no host copy on a GPU (NaN sorts last)
            count = (~xp.isnan(a)).sum()
            y = xp.where(count > 0, a[order[xp.maximum(count - 1, 0) // 2]], xp.nan)
        y = xp.asarray(y, dtype=a.dtype).reshape(())
        self.save_for_backward(a, y)
        return y

    def backward(self, g):
        a, y = self.saved
        mask = median_ties(a, y, g.dtype)
        return g * mask / mask.sum()

    def graph_backward(self, g, out):
        a, y = self.saved
        mask = median_ties(a, y, g.data.dtype)
        return g * constant(mask / mask.sum())  # piecewise linear: a constant share


def _all_nan_median_index(n):
    """The index torch.nanmedian gives for a slice of n NaNs: std::nth_element at position 0
    with a comparison that never holds (NaN is not less than NaN) leaves it to the
    partitioning steps (backend/ordering.py redoes them)."""
    from .backend import ordering

    ordering.rows_kernels()
    ix = np.arange(n)
    ordering._nth_element(np.full(n, np.nan), ix, 0, n, False)
    return int(ix[0])


def nanmedian(input, dim=None, keepdim=False):
    """The median ignoring NaNs (the lower of the two middle values; NaN where a slice is all
    NaN). Over ``dim``: (values, indices), the index of the median's element in its slice."""
    if isinstance(input, autograd.Tensor):
        refuse_complex("nanmedian", input.data)
        refuse_unsigned(input.data.dtype, "median_cpu")  # torch's name for it too
    _check_tensor("nanmedian", "input", input)
    if input.dtype == np.bool_:
        raise DtypeError("nanmedian: not implemented for bool tensors (as in PyTorch)")
    xp = get_array_module(input.data)
    if dim is None:
        if input.numel() == 0:
            if not is_floating(input.dtype):
                raise IndexError("nanmedian(): an empty tensor of an integer dtype has no median")
            return autograd.Tensor(xp.full((), xp.nan, dtype=input.dtype))
        return NanMedianAll.apply(input.reshape(-1))
    d = wrap_dim(dim, max(input.ndim, 1), "nanmedian")
    x = input if input.ndim else input.reshape(1)
    n = x.shape[d]
    if n == 0:
        raise IndexError(f"nanmedian(): Expected reduction dim {d} to have non-zero size.")
    order = _argsort(x.data, d, False, True).astype(np.int64, copy=False)
    if is_floating(x.dtype):
        count = (~xp.isnan(x.data)).sum(axis=d, keepdims=True)
    else:
        count = xp.full((1,) * x.ndim, n)
    pos = xp.maximum(count - 1, 0) // 2
    index = xp.take_along_axis(order, pos.astype(np.int64), axis=d)
    if is_floating(x.dtype):  # an all-NaN slice: the index PyTorch's nth_element leaves there
        index = xp.where(count == 0, _all_nan_median_index(n), index)  # (no host check)
    values = TakeAlongDim.apply(x, index=index, dim=d)
    if not keepdim or input.ndim == 0:
        values = values.squeeze(d)
        index = index.squeeze(axis=d)
    return NanmedianResult(values, autograd.Tensor(index))


# ---- quantile --------------------------------------------------------------------------------
_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile(name, input, q, dim, keepdim, interpolation, ignore_nan):
    if isinstance(input, autograd.Tensor):
        refuse_complex(name, input.data)
    _check_tensor(name, "input", input)
    hook = autograd.autocast_hook()
    if hook is not None:  # quantile runs in float32 under PyTorch's CPU autocast policy
        (input,) = hook.inputs(name, (input,))
        if isinstance(q, autograd.Tensor) and q.dtype != input.dtype and is_floating(q.dtype):
            q = Cast.apply(q, dtype=input.dtype)
    if input.dtype not in (np.float32, np.float64):
        raise OpArgumentError(f"{name}() input tensor must be either float or double dtype, got "
                              f"{input.dtype}")
    if input.numel() == 0:
        raise OpArgumentError(f"{name}() input tensor must be non-empty")
    if interpolation not in _INTERPOLATIONS:
        raise OpArgumentError(f"{name}() interpolation must be one of linear, lower, higher, "
                              f"midpoint or nearest, but got {interpolation!r}")
    xp = get_array_module(input.data)
    if isinstance(q, autograd.Tensor):
        if q.ndim > 1:
            raise OpArgumentError(f"{name}() q must be a scalar or 1D tensor, got shape "
                                  f"{q.shape}")
        if q.dtype != input.dtype:
            raise OpArgumentError(f"{name}() q tensor must be same dtype as the input tensor "
                                  f"({q.dtype} and {input.dtype})")
        scalar_q = q.ndim == 0
        qs = xp.asarray(q.data, dtype=input.dtype).reshape(-1)
    else:
        if isinstance(q, bool) or not is_real_number(q):
            raise TypeError(f"{name}(): q must be a float or a tensor, got {type(q).__name__}")
        scalar_q = True
        qs = xp.asarray([q], dtype=input.dtype)
    if isinstance(q, autograd.Tensor):  # one host copy for a tensor q (as torch's check)
        bad = bool(((qs < 0) | (qs > 1) | xp.isnan(qs)).any())
    else:
        bad = not 0 <= q <= 1  # NaN fails too
    if bad:
        raise OpArgumentError(f"{name}() q values must be in the range [0, 1], got "
                              f"{q.data.tolist() if isinstance(q, autograd.Tensor) else q}")
    if dim is None:
        x, d = input.reshape(-1), 0
    else:
        d = wrap_dim(dim, max(input.ndim, 1), name)
        x = input if input.ndim else input.reshape(1)
    s = sort(x, d).values.movedim(d, -1)  # NaN sorts last
    n = s.shape[-1]
    nan = xp.isnan(s.data)
    if ignore_nan:
        count = (~nan).sum(axis=-1, keepdims=True)
    else:
        count = xp.full(s.shape[:-1] + (1,), n)
    scale = xp.maximum(count - 1, 0).astype(input.dtype)
    ranks = qs * scale
    if not ignore_nan:  # a slice holding a NaN has the NaN (sorted last) as its quantiles
        ranks = xp.where(nan[..., -1:], n - 1, ranks).astype(input.dtype, copy=False)
    ranks = xp.broadcast_to(ranks, s.shape[:-1] + (qs.shape[0],))
    if interpolation == "lower":
        lo = hi = xp.floor(ranks)
    elif interpolation == "higher":
        lo = hi = xp.ceil(ranks)
    elif interpolation == "nearest":
        lo = hi = xp.round(ranks)  # half to even, as torch.round
    else:
        lo, hi = xp.floor(ranks), xp.ceil(ranks)
    # the ranks are in range by construction: Gather without gather()'s host-side index check
    last = s.ndim - 1
    below = Gather.apply(s, index=lo.astype(np.int64), dim=last)
    if interpolation in ("linear", "midpoint"):
        above = Gather.apply(s, index=hi.astype(np.int64), dim=last)
        if interpolation == "midpoint":
            w = autograd.Tensor(xp.full(ranks.shape, 0.5, dtype=input.dtype))
        elif isinstance(q, autograd.Tensor) and q.requires_grad:
            # the weights carry q's gradient, as PyTorch's (none where a NaN fixed the rank)
            w = q.reshape(-1) * autograd.Tensor(scale) - autograd.Tensor(lo)
            fixed = (count == 0) if ignore_nan else nan[..., -1:]
            w = where(autograd.Tensor(xp.broadcast_to(fixed, w.shape)), 0.0, w)
        else:
            w = autograd.Tensor((ranks - lo).astype(input.dtype, copy=False))
        # torch.lerp's two forms, so that the ends are exact
        small = autograd.Tensor(w.data < 0.5)
        out = where(small, below + w * (above - below), above - (above - below) * (1 - w))
    else:
        out = below
    out = out.movedim(-1, 0)  # (len(q), the other dims)
    if keepdim:
        if dim is None:
            out = out.reshape((qs.shape[0],) + (1,) * input.ndim)
        elif input.ndim:
            out = out.unsqueeze(d + 1)
    return out[0] if scalar_q else out


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """The ``q``-th quantiles (q a number or a 1-d tensor; its dim comes first) over ``dim``
    (all elements when None), interpolated as ``interpolation`` says; NaN where a slice has a
    NaN."""
    return _quantile("quantile", input, q, dim, keepdim, interpolation, ignore_nan=False)


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """quantile ignoring NaNs (NaN where a slice is all NaN)."""
    return _quantile("nanquantile", input, q, dim, keepdim, interpolation, ignore_nan=True)


# ---- mode ------------------------------------------------------------------------------------
def mode(input, dim=-1, keepdim=False):
    """(the most frequent value along ``dim``, its index). Among equally frequent values the
    smallest; its index is the one at the end of its run in the order std::sort leaves the
    slice, as PyTorch picks on the CPU (the last occurrence in slices of up to 16)."""
    if isinstance(input, autograd.Tensor):
        refuse_complex("mode", input.data)
        refuse_unsigned(input.data.dtype, "mode_cpu")
    _check_tensor("mode", "input", input)
    d = wrap_dim(dim, max(input.ndim, 1), "mode")
    x = input if input.ndim else input.reshape(1)
    n = x.shape[d]
    if n == 0:
        raise IndexError(f"mode(): Expected reduction dim {d} to have non-zero size.")
    xp = get_array_module(x.data)
    rows = xp.moveaxis(x.data, d, -1)
    lead = rows.shape[:-1]
    rows = rows.reshape(-1, n)
    m = rows.shape[0]
    order = _argsort(rows, 1, False, False)  # std::sort's order among equal values
    s = xp.take_along_axis(rows, order, axis=1)
    starts = xp.ones(s.shape, dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    run = xp.cumsum(starts.reshape(-1)) - 1  # one id per run of equal values, over all rows
    # run ids ascend, so each run's length is where it ends minus where it starts (no host
    # copy of the number of runs, as bincount would need on a GPU)
    counts = (xp.searchsorted(run, run, side="right")
              - xp.searchsorted(run, run, side="left")).reshape(m, n)
    best = counts.max(axis=1, keepdims=True)
    first = xp.argmax(counts == best, axis=1)[:, None]  # the smallest of the most frequent
    last = first + best - 1  # the end of its run
    index = xp.take_along_axis(order, last, axis=1).astype(np.int64)
    index = xp.moveaxis(index.reshape(lead + (1,)), -1, d)
    values = TakeAlongDim.apply(x, index=index, dim=d)
    if not keepdim or input.ndim == 0:
        values = values.squeeze(d)
        index = index.squeeze(axis=d)
    return ModeResult(values, autograd.Tensor(index))


# ---- dist, cov, corrcoef ---------------------------------------------------------------------
def dist(input, other, p=2):
    """The ``p``-norm of ``input - other`` (broadcast), as torch.dist."""
    _check_tensor("dist", "input", input)
    _check_tensor("dist", "other", other)
    hook = autograd.autocast_hook()
    if hook is not None:
        input, other = hook.inputs("dist", (input, other))
    return vector_norm(input - other, p)


def _weights(name, w, n, integral):
    _check_tensor("cov", name, w)
    if w.ndim > 1:
        raise OpArgumentError(f"cov(): expected {name} to have one or fewer dimensions but got "
                              f"{name} with {w.ndim} dimensions")
    if w.numel() != n:
        raise OpArgumentError(f"cov(): expected {name} to have the same numel as there are "
                              f"observations in the input but got {w.numel()} != {n}")
    if integral and w.dtype.kind not in "iu":
        raise TypeError(f"cov(): expected fweights to have integral dtype but got fweights with "
                        f"{w.dtype} dtype")
    if not integral and not is_floating(w.dtype):
        raise TypeError(f"cov(): expected aweights to have floating point dtype but got aweights "
                        f"with {w.dtype} dtype")
    if bool((w.data < 0).any()):
        raise OpArgumentError(f"cov(): {name} cannot be negative")
    return w


def cov(input, *, correction=1, fweights=None, aweights=None):
    """The covariance matrix of the variables in ``input``'s rows (observations in columns; a
    1-d input is one variable, giving a 0-d result), with frequency and/or importance weights,
    as torch.cov."""
    if isinstance(input, autograd.Tensor):
        refuse_complex("cov", input.data)
    _check_tensor("cov", "input", input)
    if input.ndim > 2:
        raise OpArgumentError(f"cov(): expected input to have two or fewer dimensions but got "
                              f"an input with {input.ndim} dimensions")
    x = input if input.ndim == 2 else input.reshape(1, -1)
    if not is_floating(x.dtype):
        x = Cast.apply(x, dtype=default_float())
    n = x.shape[1]
    w = None
    if fweights is not None:
        w = _weights("fweights", fweights, n, integral=True)
    if aweights is not None:
        aw = _weights("aweights", aweights, n, integral=False)
        w = aw if w is None else w * aw
    if w is None:
        avg = x.mean(1, keepdim=True)
        w_sum = float(n)
        norm = w_sum - correction
    else:
        if not is_floating(w.dtype):
            w = Cast.apply(w, dtype=x.dtype)
        w_sum = w.sum()
        avg = (x * w).sum(1, keepdim=True) / w_sum
        if aweights is None or correction == 0:
            norm = w_sum - correction
        else:
            norm = w_sum - correction * (w * aweights).sum() / w_sum
    xm = x - avg
    c = (xm if w is None else xm * w).matmul(xm.t())
    if float(norm.item() if isinstance(norm, autograd.Tensor) else norm) <= 0:
        warnings.warn("cov(): degrees of freedom is <= 0. Correction should be strictly less "
                      "than the number of observations.", UserWarning, stacklevel=2)
        c = _divide_by_zero(c)
    else:
        c = c / norm
    return c.squeeze()


def _divide_by_zero(c):
    """``c / 0`` with IEEE's results (inf, or NaN for 0 / 0), as PyTorch's cov gives them."""
    zero = autograd.Tensor(get_array_module(c.data).zeros((), dtype=c.dtype))
    with np.errstate(divide="ignore", invalid="ignore"):
        return c / zero


def corrcoef(input):
    """Pearson's correlation coefficients of the variables in ``input``'s rows, clipped to
    [-1, 1], as torch.corrcoef."""
    c = cov(input)
    if c.ndim == 0:
        return c / c
    std = c.diagonal().sqrt()
    c = c / std.unsqueeze(1)
    c = c / std.unsqueeze(0)
    return c.clamp(-1, 1)


TENSOR_METHODS = {
    "aminmax": aminmax, "nanmedian": nanmedian, "quantile": quantile,
    "nanquantile": nanquantile, "mode": mode, "dist": dist, "cov": cov, "corrcoef": corrcoef,
}
FUNCTIONS = dict(TENSOR_METHODS)
