"""Quantized modules, as torch.ao.nn.quantized: ``Quantize``, ``DeQuantize``, ``Linear``,
``Conv1d``, ``Conv2d``, ``Conv3d``, ``ConvTranspose1d``, ``ConvTranspose2d``,
``BatchNorm2d``, ``BatchNorm3d``, ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d``,
``InstanceNorm2d``, ``ReLU``, ``ReLU6``, ``Hardswish``, ``LeakyReLU``, ``ELU``, ``Sigmoid``,
``Softmax``, ``Dropout``, ``QFunctional`` (static: quantized tensors in and out),
``FloatFunctional`` (its float counterpart), the weight-only ``Embedding`` and
``EmbeddingBag`` (float rows out) and ``dynamic.Linear`` (float in and out, int8 weights,
activations quantized per batch at run time)."""
from . import dynamic  # noqa: F401
from .activation import ELU, Dropout, LeakyReLU, Sigmoid, Softmax  # noqa: F401
from .batchnorm import BatchNorm2d, BatchNorm3d  # noqa: F401
from .embedding_ops import Embedding, EmbeddingBag  # noqa: F401
from .normalization import GroupNorm, InstanceNorm1d, InstanceNorm2d, LayerNorm  # noqa: F401
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d  # noqa: F401
from .functional_modules import FloatFunctional, QFunctional  # noqa: F401
from .modules import DeQuantize, Hardswish, Linear, Quantize, ReLU, ReLU6  # noqa: F401
