"""``FakeQuantize``: an observer plus fake quantization with the qparams it chose, the module
that quantization-aware training puts on weights and activations."""
from __future__ import annotations

import numpy as np

from ...nn.module import Module
from ...tensor import Tensor
from ._fake_quant_ops import fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine
from .observer import (
    FixedQParamsObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    _WithArgs, default_fixed_qparams_range_0to1_observer,
    default_fixed_qparams_range_neg1to1_observer,
)
from .qtensor import (
    per_channel_affine, per_channel_affine_float_qparams, per_channel_symmetric, per_tensor_affine, per_tensor_symmetric, qint8,
    quint8,
)


class FakeQuantize(_WithArgs, Module):
    """In training: observe the input (``enable_observer``), update ``scale`` and
    ``zero_point`` from the observer, and return the input fake-quantized with them
    (``enable_fake_quant``), as torch.ao.quantization.FakeQuantize."""

    def __init__(self, observer=MovingAverageMinMaxObserver, quant_min=None, quant_max=None,
                 is_dynamic=False, **observer_kwargs):
        super().__init__()
        if quant_min is not None and quant_max is not None and quant_min > quant_max:
            raise ValueError(f"FakeQuantize: quant_min ({quant_min}) must be <= quant_max "
                             f"({quant_max})")
        self.activation_post_process = observer(quant_min=quant_min, quant_max=quant_max,
                                                is_dynamic=is_dynamic, **observer_kwargs)
        obs = self.activation_post_process
        self.quant_min, self.quant_max = obs.quant_min, obs.quant_max
        self.dtype, self.qscheme = obs.dtype, obs.qscheme
        self.ch_axis = getattr(obs, "ch_axis", -1)
        self.is_per_channel = obs.qscheme in (per_channel_affine, per_channel_symmetric,
                                              per_channel_affine_float_qparams)
        # float zero points with float qparams (embeddings), as torch's
        self._zp_dtype = np.float32 if obs.qscheme is per_channel_affine_float_qparams else np.int32
        self.is_dynamic = is_dynamic
        self.register_buffer("fake_quant_enabled", Tensor(np.array([1], np.uint8)))
        self.register_buffer("observer_enabled", Tensor(np.array([1], np.uint8)))
        self.register_buffer("scale", Tensor(np.array([1.0], np.float32)))
        self.register_buffer("zero_point", Tensor(np.array([0], self._zp_dtype)))

    # load_state_dict takes these in the checkpoint's shape (a per-channel one has one entry
    # per channel once it has observed), as torch's FakeQuantize resizes them
    _resizable_buffers = ("scale", "zero_point")

    def enable_fake_quant(self, enabled=True):
        self.fake_quant_enabled = Tensor(np.array([int(enabled)], np.uint8))
        return self

    def disable_fake_quant(self):
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled=True):
        self.observer_enabled = Tensor(np.array([int(enabled)], np.uint8))
        return self

    def disable_observer(self):
        return self.enable_observer(False)

    def calculate_qparams(self):
        return self.activation_post_process.calculate_qparams()

    def forward(self, X):
        if self.observer_enabled.numpy()[0] == 1:
            self.activation_post_process(X.detach())
            scale, zero_point = self.calculate_qparams()
            self.scale = Tensor(scale.numpy().astype(np.float32))
            self.zero_point = Tensor(zero_point.numpy().astype(self._zp_dtype))
        if self.fake_quant_enabled.numpy()[0] == 1:
            if self.is_per_channel:
                X = fake_quantize_per_channel_affine(X, self.scale, self.zero_point, self.ch_axis,
                                                     self.quant_min, self.quant_max)
            else:
                X = fake_quantize_per_tensor_affine(X, float(self.scale.numpy()[0]),
                                                    int(self.zero_point.numpy()[0]),
                                                    self.quant_min, self.quant_max)
        return X

    def extra_repr(self):
        return (f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled="
                f"{self.observer_enabled}, quant_min={self.quant_min}, quant_max={self.quant_max}, "
                f"dtype={self.dtype}, qscheme={self.qscheme}, ch_axis={self.ch_axis}, "
                f"scale={self.scale}, zero_point={self.zero_point}")


def disable_fake_quant(mod):
    """For ``model.apply``: turn fake quantization off on FakeQuantize modules."""
    if isinstance(mod, FakeQuantize):
        mod.disable_fake_quant()


def enable_fake_quant(mod):
    if isinstance(mod, FakeQuantize):
        mod.enable_fake_quant()


def disable_observer(mod):
    if isinstance(mod, FakeQuantize):
        mod.disable_observer()


def enable_observer(mod):
    if isinstance(mod, FakeQuantize):
        mod.enable_observer()


default_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=quint8,
    qscheme=per_tensor_affine, reduce_range=True)
default_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=qint8,
    qscheme=per_tensor_symmetric, reduce_range=False)
default_per_channel_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=qint8,
    qscheme=per_channel_symmetric, reduce_range=False, ch_axis=0)
default_embedding_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, qscheme=per_channel_affine_float_qparams,
    dtype=quint8, quant_min=0, quant_max=255, ch_axis=0, averaging_constant=1)


class FixedQParamsFakeQuantize(FakeQuantize):
    """FakeQuantize with the fixed scale and zero point of a FixedQParamsObserver: what QAT
    puts on the outputs of Sigmoid, Hardsigmoid, Softmax (scale 1/256, zero point 0) and Tanh
    (2/256, 128), as torch's."""

    def __init__(self, observer):
        super().__init__(observer=observer)
        if type(self.activation_post_process) is not FixedQParamsObserver:
            raise AssertionError(f"{type(self).__name__}'s observer must be a "
                                 "FixedQParamsObserver")
        self.scale = self.activation_post_process.scale
        self.zero_point = self.activation_post_process.zero_point

    def calculate_qparams(self):
        return self.scale, self.zero_point


default_fixed_qparams_range_0to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_0to1_observer)
default_fixed_qparams_range_neg1to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_neg1to1_observer)
