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

from ...backend import get_array_module, to_numpy
from ...nn.module import Module
from ...tensor import Tensor
from .qtensor import (
    QDtype, per_channel_affine, per_channel_affine_float_qparams, per_channel_symmetric,
    per_tensor_affine, per_tensor_symmetric, qint8, qint32, quint8,
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
        # a buffer, as torch's (its state_dict holds it first): checkpoints load both ways
        self.register_buffer("eps", Tensor(np.array([eps], np.float32)))
        self.has_customized_qrange = quant_min is not None and quant_max is not None
        self.quant_min, self.quant_max = calculate_qmin_qmax(quant_min, quant_max, dtype,
                                                             reduce_range)
        self._symmetric = qscheme in (per_tensor_symmetric, per_channel_symmetric)

    def _calculate_qparams(self, min_val, max_val):
        """(scale float32, zero_point int64) arrays for the observed min/max arrays."""
        qmin, qmax = self.quant_min, self.quant_max
        min_val, max_val = np.asarray(min_val, np.float32), np.asarray(max_val, np.float32)
        # unobserved: min inf and max -inf (or no channels yet), as torch's check; a NaN or
        # an infinity that was observed goes through to the qparams, as torch's does
        if min_val.size == 0 or max_val.size == 0 or (
                min_val.ndim == 0 and min_val == np.inf and max_val == -np.inf):
            warnings.warn("must run observer before calling calculate_qparams. Returning "
                          "default values.")
            return Tensor(np.array([1.0], np.float32)), Tensor(np.array([0], np.int64))
        if self.qscheme is per_channel_affine_float_qparams:  # the range as seen, float zps
            scale = (max_val - min_val) / np.float32(qmax - qmin)
            scale = np.where(scale > np.float32(self.eps.numpy().reshape(-1)[0]), scale,
                             np.float32(1)).astype(np.float32)
            zp = (np.float32(-1) * min_val / scale).astype(np.float32)
            return Tensor(scale.reshape(-1)), Tensor(zp.reshape(-1))
        min_neg = np.minimum(min_val, 0).astype(np.float32)
        max_pos = np.maximum(max_val, 0).astype(np.float32)
        eps = np.float32(self.eps.numpy().reshape(-1)[0])
        if self._symmetric:
            max_pos = np.maximum(-min_neg, max_pos)
            scale = np.maximum(max_pos / np.float32((qmax - qmin) / 2), eps)
            mid = ((qmin + qmax) // 2 if self.has_customized_qrange else 128) if self.dtype is quint8 else 0
            zp = np.full(scale.shape, mid, np.int64)
        else:
            scale = np.maximum((max_pos - min_neg) / np.float32(qmax - qmin), eps)
            with np.errstate(invalid="ignore", over="ignore"):  # NaN: clamped, as torch's
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
        x = x_orig.detach().data
        if type(x) is np.ndarray:
            self._observe(x.min(), x.max())
        else:  # on the GPU: reduced there, two numbers read back (not the whole input)
            lo, hi = to_numpy(get_array_module(x).stack([x.min(), x.max()]))
            self._observe(lo, hi)
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
        if qscheme not in (per_channel_affine, per_channel_symmetric,
                           per_channel_affine_float_qparams):
            raise NotImplementedError(f"PerChannelMinMaxObserver: qscheme {qscheme} is not "
                                      "per-channel; use MinMaxObserver")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.ch_axis = ch_axis
        self.register_buffer("min_val", Tensor(np.zeros(0, np.float32)))
        self.register_buffer("max_val", Tensor(np.zeros(0, np.float32)))

    # load_state_dict takes these in the checkpoint's shape (one entry per channel it had
    # seen; none before the first batch), as torch's observer resizes them
    _resizable_buffers = ("min_val", "max_val")

    def _new(self, old, batch, pick):
        return batch if old.size == 0 else pick(old, batch)

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        name = type(self).__name__
        if not -x_orig.ndim <= self.ch_axis < x_orig.ndim:
            raise IndexError(f"{name}: ch_axis {self.ch_axis} is out of range for an input of "
                             f"shape {tuple(x_orig.shape)}")
        channels, seen = x_orig.shape[self.ch_axis], self.min_val.numel()
        if seen and channels != seen:
            raise RuntimeError(f"{name}: the input has {channels} channels along ch_axis "
                               f"{self.ch_axis} (shape {tuple(x_orig.shape)}), but the observer "
                               f"has seen {seen}")
        data = x_orig.detach().data
        xp = get_array_module(data)
        x = xp.moveaxis(data, self.ch_axis, 0).reshape(channels, -1)
        lo, hi = x.min(axis=1), x.max(axis=1)
        if xp is not np:  # reduced on the GPU, one row per channel read back
            lo, hi = to_numpy(xp.stack([lo, hi]))
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

    def reset_min_max_vals(self):
        """Forget what was observed (no channels yet), as torch's."""
        self.min_val = Tensor(np.zeros(0, np.float32))
        self.max_val = Tensor(np.zeros(0, np.float32))


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


def _linspace32(start, end, steps):
    """torch.linspace in float32 as its CPU kernel computes it: the first half stepped up
    from ``start``, the second half stepped down from ``end``."""
    start, end = np.float32(start), np.float32(end)
    step = (end - start) / np.float32(steps - 1) if steps > 1 else np.float32(0)
    i = np.arange(steps)
    half = steps // 2
    # a fused multiply-add per element (one rounding): float64 holds step * i exactly
    step, start64, end64 = float(step), float(start), float(end)
    up = start64 + step * i[:half]
    down = end64 - step * (steps - i[half:] - 1)
    return np.concatenate([up, down]).astype(np.float32)


def _histc(x, bins, lo, hi):
    """torch.histc(x, bins, lo, hi) in float32: values outside [lo, hi] are left out; a
    value's bin is (x - lo) * bins / (hi - lo) rounded down (the last bin takes hi), by
    interpolation alone, as torch's histc (no correction against the bin edges)."""
    lo, hi = np.float32(lo), np.float32(hi)
    if lo == hi:
        lo, hi = lo - np.float32(1), hi + np.float32(1)
    x = x[(x >= lo) & (x <= hi)].astype(np.float32)
    pos = ((x - lo) * np.float32(bins) / (hi - lo)).astype(np.int64)
    return np.bincount(np.clip(pos, 0, bins - 1), minlength=bins).astype(np.float32)


class HistogramObserver(ObserverBase):
    """Keeps a histogram (``bins`` bins over the running [min, max]) and chooses the range
    that minimises the L2 error of quantizing it (a greedy search that trims bins from
    whichever end holds less mass, as torch's and caffe2's NormMinimization), so that a few
    outliers do not stretch the scale. The histogram is re-binned (each bin split into 16)
    when a new batch widens the range."""

    def __init__(self, bins=2048, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False,
                 **kwargs):
        if qscheme not in (per_tensor_affine, per_tensor_symmetric):
            raise NotImplementedError("HistogramObserver's qscheme only support "
                                      "per_tensor_symmetric and per_tensor_affine.")
        if is_dynamic:
            raise NotImplementedError("HistogramObserver doesn't support dynamic quantization")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.bins = bins
        self.register_buffer("histogram", Tensor(np.zeros(bins, np.float32)))
        self.register_buffer("min_val", Tensor(np.array(np.inf, np.float32)))
        self.register_buffer("max_val", Tensor(np.array(-np.inf, np.float32)))
        self.dst_nbins = 2 ** (8 * dtype.itemsize)
        self.upsample_rate = 16

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().numpy().astype(np.float32).ravel()
        if np.isinf(x).any():
            warnings.warn("inf detected in input tensor, ignoring input", stacklevel=2)
            x = x[~np.isinf(x)]
            if x.size == 0:
                return x_orig
        if np.isnan(x).any():  # refused before the histogram or the range changes, as torch's
            raise RuntimeError("HistogramObserver: the input holds NaN, so its range "
                               "[nan, nan] is not finite")
        x_min, x_max = np.float32(x.min()), np.float32(x.max())
        cur_min, cur_max = np.float32(self.min_val.numpy()), np.float32(self.max_val.numpy())
        if np.isinf(cur_min) or np.isinf(cur_max):
            hist, new_min, new_max = _histc(x, self.bins, x_min, x_max), x_min, x_max
        else:
            new_min, new_max = min(cur_min, x_min), max(cur_max, x_max)
            update = _histc(x, self.bins, new_min, new_max)
            old = self.histogram.numpy()
            if new_min == cur_min and new_max == cur_max:
                hist = old + update
            elif cur_min == cur_max:
                hist = _histc(np.array([cur_min]), self.bins, new_min, new_max) * old.sum() + update
            else:
                hist = update + self._upscale(old, cur_min, cur_max, new_min, new_max)
        self.histogram = Tensor(hist.astype(np.float32))
        self.min_val = Tensor(np.array(new_min, np.float32))
        self.max_val = Tensor(np.array(new_max, np.float32))
        return x_orig

    def _upscale(self, hist, orig_min, orig_max, new_min, new_max):
        """``hist`` over [orig_min, orig_max] moved into bins over [new_min, new_max]: each
        bin split into upsample_rate parts, each part put where its mid point falls."""
        n = self.bins * self.upsample_rate
        fine = np.repeat(hist, self.upsample_rate) / np.float32(self.upsample_rate)
        bin_size = (orig_max - orig_min) / np.float32(n)
        mids = _linspace32(orig_min, orig_max, n + 1)[:-1] + np.float32(0.5) * bin_size
        edges = _linspace32(new_min, new_max, self.bins + 1)
        where = np.clip(np.searchsorted(edges, mids, side="right") - 1, 0, self.bins - 1)
        return np.bincount(where, weights=fine, minlength=self.bins).astype(np.float32)

    def _quantization_error(self, start_bin, end_bin):
        """The L2 error of quantizing the histogram with bins start..end as the range
        (uniform density within each source bin), in float32 as torch's."""
        hist = self.histogram.numpy()
        bin_width = (float(self.max_val.numpy()) - float(self.min_val.numpy())) / self.bins
        dst_width = bin_width * (end_bin - start_bin + 1) / self.dst_nbins
        if dst_width == 0.0:
            return 0.0
        f = np.float32
        src = np.arange(self.bins)
        begin = ((src - start_bin) * bin_width).astype(f)
        end = begin + f(bin_width)
        dst_begin = np.clip(np.floor(begin / f(dst_width)), 0, self.dst_nbins - 1).astype(f)
        dst_end = np.clip(np.floor(end / f(dst_width)), 0, self.dst_nbins - 1).astype(f)
        density = hist / f(bin_width)
        half = f(dst_width / 2)

        def norm(lo, hi):
            return density * ((hi * hi * hi - lo * lo * lo) / f(3))

        total = norm(begin - (dst_begin + f(0.5)) * f(dst_width), np.full(self.bins, half, f))
        total = total + (dst_end - dst_begin - f(1)) * norm(-half, half)
        total = total + norm(-half, end - (dst_end * f(dst_width) + half))
        return float(total.astype(f).sum(dtype=f))

    def _non_linear_param_search(self):
        hist = self.histogram.numpy()
        lo, hi = np.float32(self.min_val.numpy()), np.float32(self.max_val.numpy())
        bin_width = (hi - lo) / np.float32(self.bins)
        total = float(hist.sum(dtype=np.float32))
        csum = np.cumsum(hist, dtype=np.float32)
        stepsize, alpha, beta = 1e-5, 0.0, 1.0
        start_bin, end_bin = 0, self.bins - 1
        norm_min = float("inf")
        while alpha < beta:
            next_alpha, next_beta = alpha + stepsize, beta - stepsize
            left, right = start_bin, end_bin
            while left < end_bin and csum[left] < np.float32(next_alpha * total):
                left += 1
            while right > start_bin and csum[right] > np.float32(next_beta * total):
                right -= 1
            next_start, next_end = start_bin, end_bin
            if (left - start_bin) > (end_bin - right):
                next_start, alpha = left, next_alpha
            else:
                next_end, beta = right, next_beta
            if next_start == start_bin and next_end == end_bin:
                continue
            norm = self._quantization_error(next_start, next_end)
            if norm > norm_min:
                break
            norm_min, start_bin, end_bin = norm, next_start, next_end
        return (lo + bin_width * np.float32(start_bin),
                lo + bin_width * np.float32(end_bin + 1))

    def calculate_qparams(self):
        if np.isinf(self.min_val.numpy()) and np.isinf(self.max_val.numpy()):
            return self._calculate_qparams(np.array(np.inf), np.array(-np.inf))
        new_min, new_max = self._non_linear_param_search()
        return self._calculate_qparams(np.asarray(new_min), np.asarray(new_max))

    def extra_repr(self):
        return f"min_val={self.min_val.item()}, max_val={self.max_val.item()}"


default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)
default_placeholder_observer = PlaceholderObserver
default_float_qparams_observer = PerChannelMinMaxObserver.with_args(
    dtype=quint8, qscheme=per_channel_affine_float_qparams, ch_axis=0)


class FixedQParamsObserver(ObserverBase):
    """Observes nothing; its qparams are fixed (the outputs of sigmoid-like functions, whose
    range is known), as torch's."""

    def __init__(self, scale, zero_point, dtype=quint8, qscheme=per_tensor_affine, quant_min=0,
                 quant_max=255, is_dynamic=False, **kwargs):
        super().__init__(dtype=dtype, qscheme=qscheme, is_dynamic=is_dynamic)
        del self._buffers["eps"]  # torch's keeps only its scale and zero point
        # (a FakeQuantize passes None for the range it was not given)
        self.quant_min = 0 if quant_min is None else quant_min
        self.quant_max = 255 if quant_max is None else quant_max
        self.register_buffer("scale", Tensor(np.array([scale], np.float32)))
        self.register_buffer("zero_point", Tensor(np.array([zero_point], np.int32)))

    def forward(self, X):
        return X

    def calculate_qparams(self):
        return self.scale, self.zero_point


default_fixed_qparams_range_0to1_observer = FixedQParamsObserver.with_args(
    scale=1.0 / 256.0, zero_point=0, dtype=quint8, quant_min=0, quant_max=255)
default_fixed_qparams_range_neg1to1_observer = FixedQParamsObserver.with_args(
    scale=2.0 / 256.0, zero_point=128, dtype=quint8, quant_min=0, quant_max=255)
