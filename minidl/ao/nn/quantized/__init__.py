"""Quantized modules, as torch.ao.nn.quantized: ``Quantize``, ``DeQuantize``, ``Linear``,
``ReLU`` (static: quantized tensors in and out) and ``dynamic.Linear`` (float in and out,
int8 weights, activations quantized per batch at run time)."""
from . import dynamic  # noqa: F401
from .modules import DeQuantize, Linear, Quantize, ReLU  # noqa: F401
