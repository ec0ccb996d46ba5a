"""Quantized modules, as torch.ao.nn.quantized: ``dynamic.Linear`` (int8 weights, activations
quantized per batch at run time), ``Quantize`` and ``DeQuantize``."""
from . import dynamic  # noqa: F401
