"""Observers: modules that watch the values flowing through a point of a float model (their
forward returns its input unchanged) and then choose the scale and zero point to quantize them
with (``calculate_qparams``), with PyTorch's formulas.

Affine: the observed range [min, max], widened to contain 0 (so that 0 is exact: zero padding
and ReLU outputs), is spread over [quant_min, quant_max]:
``scale = (max - min) / (quant_max - quant_min)``, ``zero_point = quant_min - round(min / scale)``.
Symmetric: ``scale = max(|min|, |max|) / ((quant_max - quant_min) / 2)`` and the zero point is
the middle of the range (0 for qint8, 128 for quint8). ``reduce_range`` drops one bit (qint8
[-64, 63], quint8 [0, 127]): fbgemm's x86 kernels add pairs of uint8 x int8 products in int16,
which can overflow with the full range."""
from __future__ import annotations

import warnings

import numpy as np

from ...nn.module import Module
from ...tensor import Tensor
from .qtensor import (
    QDtype, per_channel_affine, per_channel_symmetric, per_tensor_affine, per_tensor_symmetric,
    qint8, qint32, quint8,
)

EPS = float(np.finfo(np.float32).eps)


class _PartialWrapper:
    """``Observer.with_args(...)``: a constructor with some arguments fixed, as torch's."""

    def __init__(self, cls, kwargs):
        self.cls, self.kwargs = cls, kwargs

    def __call__(self, **kwargs):
        return self.cls(**{**self.kwargs, **kwargs})

    def with_args(self, **kwargs):
        return _PartialWrapper(self.cls, {**self.kwargs, **kwargs})

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"functools.partial(<class '{self.cls.__module__}.{self.cls.__name__}'>, {args}){{}}"


class _WithArgs:
    @classmethod
    def with_args(cls, **kwargs):
        return _PartialWrapper(cls, kwargs)


def calculate_qmin_qmax(quant_min, quant_max, dtype, reduce_range):
    """The integer range an observer quantizes to: the custom one given (halved with
    reduce_range) or the dtype's 8-bit (7-bit with reduce_range) or 32-bit range."""
    if quant_min is not None or quant_max is not None:
        if quant_min is None or quant_max is None:
            raise ValueError("quant_min and quant_max must be given together")
        if not quant_min <= 0 <= quant_max:
            raise ValueError(f"used-specified quantization range must include 0, got "
                             f"[{quant_min}, {quant_max}]")
        if quant_min >= quant_max:
            raise ValueError(f"qmin must be strictly less than qmax, got [{quant_min}, {quant_max}]")
        if quant_max - quant_min + 1 > (2 ** 32 if dtype is qint32 else 256):
            raise ValueError(f"quantization range [{quant_min}, {quant_max}] is wider than {dtype}")
        return (quant_min // 2, quant_max // 2) if reduce_range else (quant_min, quant_max)
    if dtype is qint8:
        return (-64, 63) if reduce_range else (-128, 127)
    if dtype is quint8:
        return (0, 127) if reduce_range else (0, 255)
    return -(2 ** 31), 2 ** 31 - 1


class ObserverBase(_WithArgs, Module):
    def __init__(self, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False,
                 quant_min=None, quant_max=None, eps=EPS, is_dynamic=False):
        super().__init__()
        if not isinstance(dtype, QDtype):
            raise ValueError(f"{type(self).__name__}: default observer only works for qint8, "
                             f"quint8 and qint32 dtypes, got {dtype}")
        self.dtype, self.qscheme, self.reduce_range = dtype, qscheme, reduce_range
        self.is_dynamic = is_dynamic
        self.eps = eps
        self.has_customized_qrange = quant_min is not None and quant_max is not None
        self.quant_min, self.quant_max = calculate_qmin_qmax(quant_min, quant_max, dtype,
                                                             reduce_range)
        self._symmetric = qscheme in (per_tensor_symmetric, per_channel_symmetric)

    def _calculate_qparams(self, min_val, max_val):
        """(scale float32, zero_point int64) arrays for the observed min/max arrays."""
        qmin, qmax = self.quant_min, self.quant_max
        if not np.all(np.isfinite(min_val)) or not np.all(np.isfinite(max_val)):
            warnings.warn("must run observer before calling calculate_qparams. Returning "
                          "default values.")
            return Tensor(np.array([1.0], np.float32)), Tensor(np.array([0], np.int64))
        min_neg = np.minimum(min_val, 0).astype(np.float32)
        max_pos = np.maximum(max_val, 0).astype(np.float32)
        eps = np.float32(self.eps)
        if self._symmetric:
            max_pos = np.maximum(-min_neg, max_pos)
            scale = np.maximum(max_pos / np.float32((qmax - qmin) / 2), eps)
            mid = ((qmin + qmax) // 2 if self.has_customized_qrange else 128) if self.dtype is quint8 else 0
            zp = np.full(scale.shape, mid, np.int64)
        else:
            scale = np.maximum((max_pos - min_neg) / np.float32(qmax - qmin), eps)
            zp = qmin - np.rint(min_neg / scale).astype(np.int64)
            zp = np.clip(zp, qmin, qmax)
        scale, zp = np.asarray(scale, np.float32), np.asarray(zp, np.int64)
        if scale.ndim == 0:
            scale, zp = scale.reshape(1), zp.reshape(1)
        return Tensor(scale), Tensor(zp)

    def extra_repr(self):
        return ""


class MinMaxObserver(ObserverBase):
    """Keeps the running min and max of everything it sees."""

    def __init__(self, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False):
        if qscheme not in (per_tensor_affine, per_tensor_symmetric):
            raise NotImplementedError(f"MinMaxObserver: qscheme {qscheme} is not per-tensor; "
                                      "use PerChannelMinMaxObserver")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.register_buffer("min_val", Tensor(np.array(np.inf, np.float32)))
        self.register_buffer("max_val", Tensor(np.array(-np.inf, np.float32)))

    def _observe(self, lo, hi):
        self.min_val = Tensor(np.minimum(self.min_val.numpy(), lo).astype(np.float32))
        self.max_val = Tensor(np.maximum(self.max_val.numpy(), hi).astype(np.float32))

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().numpy()
        self._observe(x.min(), x.max())
        return x_orig

    def calculate_qparams(self):
        return self._calculate_qparams(self.min_val.numpy(), self.max_val.numpy())

    def extra_repr(self):
        return f"min_val={self.min_val.item()}, max_val={self.max_val.item()}"

    def reset_min_max_vals(self):
        self.min_val = Tensor(np.array(np.inf, np.float32))
        self.max_val = Tensor(np.array(-np.inf, np.float32))


class MovingAverageMinMaxObserver(MinMaxObserver):
    """min/max as exponential moving averages: ``min += c * (batch_min - min)``, c =
    ``averaging_constant`` (the first batch is taken as it is)."""

    def __init__(self, averaging_constant=0.01, dtype=quint8, qscheme=per_tensor_affine,
                 reduce_range=False, quant_min=None, quant_max=None, eps=EPS, is_dynamic=False,
                 **kwargs):
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                         quant_min=quant_min, quant_max=quant_max, eps=eps, is_dynamic=is_dynamic)
        self.averaging_constant = averaging_constant

    def _observe(self, lo, hi):
        old_lo, old_hi = self.min_val.numpy(), self.max_val.numpy()
        c = np.float32(self.averaging_constant)
        if np.isinf(old_lo) and np.isinf(old_hi) and old_lo > old_hi:
            new_lo, new_hi = lo, hi
        else:
            new_lo, new_hi = old_lo + c * (lo - old_lo), old_hi + c * (hi - old_hi)
        self.min_val = Tensor(np.asarray(new_lo, np.float32))
        self.max_val = Tensor(np.asarray(new_hi, np.float32))


class PerChannelMinMaxObserver(ObserverBase):
    """Running min and max per index of ``ch_axis`` (weights: one scale per output channel)."""

    def __init__(self, ch_axis=0, dtype=quint8, qscheme=per_channel_affine, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False):
        if qscheme not in (per_channel_affine, per_channel_symmetric):
            raise NotImplementedError(f"PerChannelMinMaxObserver: qscheme {qscheme} is not "
                                      "per-channel; use MinMaxObserver")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.ch_axis = ch_axis
        self.register_buffer("min_val", Tensor(np.zeros(0, np.float32)))
        self.register_buffer("max_val", Tensor(np.zeros(0, np.float32)))

    def _new(self, old, batch, pick):
        return batch if old.size == 0 else pick(old, batch)

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        x = np.moveaxis(x_orig.detach().numpy(), self.ch_axis, 0).reshape(x_orig.shape[self.ch_axis], -1)
        lo, hi = x.min(axis=1), x.max(axis=1)
        self.min_val = Tensor(self._new(self.min_val.numpy(), lo, np.minimum).astype(np.float32))
        self.max_val = Tensor(self._new(self.max_val.numpy(), hi, np.maximum).astype(np.float32))
        return x_orig

    def calculate_qparams(self):
        lo, hi = self.min_val.numpy(), self.max_val.numpy()
        if lo.size == 0:
            lo, hi = np.array(np.inf), np.array(-np.inf)
        return self._calculate_qparams(lo, hi)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class PlaceholderObserver(ObserverBase):
    """Observes nothing: it only carries a dtype (and quant range) for the conversion, as the
    activations of dynamic quantization, whose qparams are chosen per batch at run time."""

    def __init__(self, dtype=np.dtype(np.float32), custom_op_name="", compute_dtype=None,
                 quant_min=None, quant_max=None, qscheme=None, eps=None, is_dynamic=False):
        Module.__init__(self)
        self.dtype, self.quant_min, self.quant_max = dtype, quant_min, quant_max
        self.qscheme, self.eps, self.is_dynamic = qscheme, eps, is_dynamic

    def forward(self, x):
        return x

    def calculate_qparams(self):
        raise Exception("calculate_qparams should not be called for PlaceholderObserver")

    def extra_repr(self):
        return f"dtype={self.dtype}, is_dynamic={self.is_dynamic}"


default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
default_weight_observer = MinMaxObserver.with_args(dtype=qint8, qscheme=per_tensor_symmetric)
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(
    dtype=qint8, qscheme=per_channel_symmetric)
default_dynamic_quant_observer = PlaceholderObserver.with_args(
    dtype=quint8, quant_min=0, quant_max=255, is_dynamic=True)


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """PerChannelMinMaxObserver with moving averages (``averaging_constant``) per channel."""

    def __init__(self, averaging_constant=0.01, ch_axis=0, dtype=quint8,
                 qscheme=per_channel_affine, reduce_range=False, quant_min=None, quant_max=None,
                 eps=EPS, is_dynamic=False, **kwargs):
        super().__init__(ch_axis=ch_axis, dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                         quant_min=quant_min, quant_max=quant_max, eps=eps, is_dynamic=is_dynamic)
        self.averaging_constant = averaging_constant

    def _new(self, old, batch, pick):
        c = np.float32(self.averaging_constant)
        return batch if old.size == 0 else old + c * (batch - old)
