"""QConfig: which observer (or FakeQuantize) to put on a module's activations and on its
weights, and the defaults of PyTorch's x86/fbgemm and qnnpack backends."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .fake_quantize import (
    FakeQuantize, default_embedding_fake_quant, default_per_channel_weight_fake_quant,
    default_weight_fake_quant,
)
from .observer import (
    HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, PlaceholderObserver,
    default_dynamic_quant_observer, default_float_qparams_observer,
    default_per_channel_weight_observer, default_placeholder_observer, default_weight_observer,
)


class QConfig(namedtuple("QConfig", ["activation", "weight"])):
    """(activation, weight): constructors (``Observer.with_args(...)``), not instances, since
    each module quantized gets its own."""

    __slots__ = ()

    def __new__(cls, activation, weight):
        from ...nn.module import Module

        if isinstance(activation, Module) or isinstance(weight, Module):
            raise ValueError("QConfig received observer instance, please pass observer class "
                             "instead. Use MyObserver.with_args(x=1) to override arguments to "
                             "constructor if needed")
        return super().__new__(cls, activation, weight)


_BACKENDS = ("fbgemm", "x86", "qnnpack", "onednn")


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise AssertionError(f"backend: {backend} not supported. backend must be one of "
                             f"{list(_BACKENDS)}")


def get_default_qconfig(backend="x86", version=0):
    """Post-training quantization's defaults, as torch's: activations observed with a
    HistogramObserver (uint8; reduce_range on x86/fbgemm), weights int8 symmetric per output
    channel (per tensor on qnnpack)."""
    _check_backend(backend)
    reduce = backend in ("fbgemm", "x86")
    weight = default_weight_observer if backend == "qnnpack" else default_per_channel_weight_observer
    return QConfig(activation=HistogramObserver.with_args(reduce_range=reduce), weight=weight)


def get_default_qat_qconfig(backend="x86", version=1):
    """Quantization-aware training's defaults: FakeQuantize with moving-average min/max
    observers, uint8 activations (reduce_range on x86/fbgemm) and int8 symmetric weights per
    output channel (per tensor on qnnpack), as PyTorch's version 0 (FakeQuantize modules).
    PyTorch's default, version 1, fuses observer and fake quant into one op
    (FusedMovingAvgObsFakeQuantize) whose symmetric scale is max|w| / 127 rather than
    max|w| / 127.5; ``version`` is accepted and version 0's modules are returned."""
    _check_backend(backend)
    reduce = backend in ("fbgemm", "x86")
    weight = (default_weight_fake_quant if backend == "qnnpack"
              else default_per_channel_weight_fake_quant)
    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0,
                                        quant_max=255, reduce_range=reduce)
    return QConfig(activation=activation, weight=weight)


default_qconfig = QConfig(activation=MinMaxObserver.with_args(quant_min=0, quant_max=127),
                          weight=default_weight_observer)
default_dynamic_qconfig = QConfig(activation=default_dynamic_quant_observer,
                                  weight=default_weight_observer)
# embeddings: weight-only, quint8 per row with float scale and zero point
float_qparams_weight_only_qconfig = QConfig(activation=default_placeholder_observer,
                                            weight=default_float_qparams_observer)
default_embedding_qat_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(dtype=np.dtype(np.float32)),
    weight=default_embedding_fake_quant)
