"""``_LearnableFakeQuantize`` (torch.ao.quantization._learnable_fake_quantize): fake
quantization whose scale and zero point are Parameters learnt by backpropagation (LSQ+),
per tensor or per channel. While ``static_enabled`` the observer sets them from the data, as
a FakeQuantize; ``enable_param_learning()`` stops that and lets the optimizer move them (the
scale clamped to at least eps). The gradients are those of
``_fake_quantize_learnable_per_tensor_affine`` / ``..._per_channel_affine``, times
``1 / sqrt(numel * quant_max)`` with ``use_grad_scaling``."""
from __future__ import annotations

import numpy as np

from ...nn.module import Module, Parameter
from ...tensor import Tensor
from ._fake_quant_ops import (
    _fake_quantize_learnable_per_channel_affine, _fake_quantize_learnable_per_tensor_affine,
)
from .observer import _WithArgs
from .qtensor import per_channel_affine, per_channel_symmetric, per_tensor_symmetric


def _flag(value):
    return Tensor(np.array([int(value)], np.uint8))


class _LearnableFakeQuantize(_WithArgs, Module):
    """See the module's docstring; the state dict is torch's (scale, zero_point, the
    fake_quant / observer / static / learning flags, eps, the observer's)."""

    def __init__(self, observer, quant_min=0, quant_max=255, scale=1.0, zero_point=0.0,
                 channel_len=-1, use_grad_scaling=False, **observer_kwargs):
        super().__init__()
        if quant_min >= quant_max:
            raise AssertionError("quant_min must be strictly less than quant_max.")
        self.quant_min, self.quant_max = quant_min, quant_max
        self.use_grad_scaling = use_grad_scaling
        if channel_len == -1:
            shape = 1
        elif isinstance(channel_len, int) and channel_len > 0:
            shape = channel_len
        else:
            raise AssertionError("Channel size must be a positive integer.")
        self.scale = Parameter(Tensor(np.full(shape, scale, np.float32)))
        self.zero_point = Parameter(Tensor(np.full(shape, zero_point, np.float32)))
        observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = observer(**observer_kwargs)
        obs = self.activation_post_process
        if obs.dtype.qmin > quant_min:
            raise AssertionError("quant_min out of bound")
        if quant_max > obs.dtype.qmax:
            raise AssertionError("quant_max out of bound")
        self.dtype, self.qscheme = obs.dtype, obs.qscheme
        self.ch_axis = getattr(obs, "ch_axis", -1)
        self.register_buffer("fake_quant_enabled", _flag(1))
        self.register_buffer("observer_enabled", _flag(1))
        self.register_buffer("static_enabled", _flag(1))
        self.register_buffer("learning_enabled", _flag(0))
        self.bitwidth = int(np.log2(quant_max - quant_min + 1))
        self.register_buffer("eps", Tensor(np.array([np.finfo(np.float32).eps], np.float32)))

    # ---- the switches (torch's names) ----------------------------------------------------
    def enable_param_learning(self):
        """Learn scale and zero point; the observer stops updating them."""
        return self.toggle_qparam_learning(True).toggle_fake_quant(True) \
            .toggle_observer_update(False)

    def enable_static_estimate(self):
        """The observer sets scale and zero point; no learning."""
        self.toggle_qparam_learning(False).toggle_fake_quant(True).toggle_observer_update(True)

    def enable_static_observation(self):
        """The observer gathers statistics without updating the qparams; no fake quant."""
        self.toggle_qparam_learning(False).toggle_fake_quant(False).toggle_observer_update(True)

    def toggle_observer_update(self, enabled=True):
        self.static_enabled = _flag(enabled)
        return self

    def enable_observer(self, enabled=True):
        self.toggle_observer_update(enabled)

    def disable_observer(self):
        self.toggle_observer_update(False)

    def toggle_qparam_learning(self, enabled=True):
        self.learning_enabled = _flag(enabled)
        self.scale.requires_grad = bool(enabled)
        self.zero_point.requires_grad = bool(enabled)
        return self

    def toggle_fake_quant(self, enabled=True):
        self.fake_quant_enabled = _flag(enabled)
        return self

    def enable_fake_quant(self, enabled=True):
        return self.toggle_fake_quant(enabled)

    def disable_fake_quant(self):
        return self.toggle_fake_quant(False)

    def _clamp_scale(self):
        eps = np.float32(self.eps.numpy()[0])
        self.scale.data[...] = np.maximum(self.scale.data, eps)

    def calculate_qparams(self):
        """(scale, zero point rounded and clamped to the range, int64), as torch's."""
        self._clamp_scale()
        zp = np.clip(np.rint(self.zero_point.numpy()), self.quant_min, self.quant_max)
        return Tensor(self.scale.numpy().copy()), Tensor(zp.astype(np.int64))

    def forward(self, X):
        if self.static_enabled.numpy()[0] == 1:
            self.activation_post_process(X.detach())
            scale, zp = self.activation_post_process.calculate_qparams()
            self.scale.data[...] = scale.numpy().astype(np.float32).reshape(self.scale.shape)
            self.zero_point.data[...] = zp.numpy().astype(np.float32).reshape(
                self.zero_point.shape)
        else:
            self._clamp_scale()
        if self.fake_quant_enabled.numpy()[0] == 1:
            if self.qscheme in (per_channel_symmetric, per_tensor_symmetric):
                self.zero_point.data[...] = 0
            factor = (1.0 / (X.numel() * self.quant_max) ** 0.5 if self.use_grad_scaling
                      else 1.0)
            if self.qscheme in (per_channel_symmetric, per_channel_affine):
                X = _fake_quantize_learnable_per_channel_affine(
                    X, self.scale, self.zero_point, self.ch_axis, self.quant_min, self.quant_max,
                    factor)
            else:
                X = _fake_quantize_learnable_per_tensor_affine(
                    X, self.scale, self.zero_point, self.quant_min, self.quant_max, factor)
        return X


__all__: list[str] = []
