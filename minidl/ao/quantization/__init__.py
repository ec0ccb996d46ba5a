"""Int8 quantization, as torch.ao.quantization: quantized tensors (qtensor.py), fake
quantization and its straight-through gradient (_fake_quant_ops.py, fake_quantize.py),
observers that choose scales and zero points (observer.py), QConfig and the backends'
defaults (qconfig.py), module fusion (fuse_modules.py), and the whole-model flows:
dynamic quantization, prepare / prepare_qat / convert (quantize.py). See
docs/quantization.md for the arithmetic."""
from ...tensor import Tensor as _Tensor
from ._fake_quant_ops import (  # noqa: F401
    _fake_quantize_learnable_per_channel_affine, _fake_quantize_learnable_per_tensor_affine,
    fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine,
)
from ._learnable_fake_quantize import _LearnableFakeQuantize  # noqa: F401
from .fake_quantize import (  # noqa: F401
    FakeQuantize, FixedQParamsFakeQuantize, default_embedding_fake_quant, default_fake_quant,
    default_fixed_qparams_range_0to1_fake_quant, default_fixed_qparams_range_neg1to1_fake_quant,
    default_per_channel_weight_fake_quant,
    default_weight_fake_quant, disable_fake_quant, disable_observer, enable_fake_quant,
    enable_observer,
)
from .fuse_modules import (  # noqa: F401
    fuse_conv_bn, fuse_conv_bn_relu, fuse_convtranspose_bn, fuse_linear_bn, fuse_modules,
    fuse_modules_qat,
)
from .observer import (  # noqa: F401
    FixedQParamsObserver, HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    ObserverBase, PerChannelMinMaxObserver, PlaceholderObserver, default_dynamic_quant_observer,
    default_float_qparams_observer, default_histogram_observer, default_observer,
    default_per_channel_weight_observer, default_placeholder_observer, default_weight_observer,
)
from .qconfig import (  # noqa: F401
    QConfig, default_dynamic_qconfig, default_embedding_qat_qconfig, default_qconfig,
    float_qparams_weight_only_qconfig, get_default_qat_qconfig, get_default_qconfig,
)
from .qtensor import (  # noqa: F401
    QDtype, QScheme, QTensor, _make_per_tensor_quantized_tensor, dequantize, per_channel_affine, per_channel_affine_float_qparams,
    per_channel_symmetric, per_tensor_affine, per_tensor_symmetric, qint8, qint32,
    quantize_per_channel, quantize_per_tensor, quint8,
)
from .quantize import (  # noqa: F401
    DeQuantStub, QuantStub, convert, prepare, prepare_qat, propagate_qconfig_, quantize,
    quantize_dynamic,
)

# what minidl's top level takes from here, as torch's does
TOP_LEVEL = ("quint8", "qint8", "qint32", "per_tensor_affine", "per_channel_affine",
             "per_tensor_symmetric", "per_channel_symmetric", "per_channel_affine_float_qparams",
             "quantize_per_tensor", "quantize_per_channel", "dequantize",
             "fake_quantize_per_tensor_affine", "fake_quantize_per_channel_affine",
             "_fake_quantize_learnable_per_tensor_affine",
             "_fake_quantize_learnable_per_channel_affine", "_make_per_tensor_quantized_tensor")


def _float_dequantize(self):
    """A float tensor's ``dequantize()`` is itself, as torch's."""
    if self.is_quantized:
        return type(self).dequantize(self)
    return self


if not hasattr(_Tensor, "dequantize"):
    _Tensor.dequantize = _float_dequantize
