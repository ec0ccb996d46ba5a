"""Quantized modules (``minidl.ao.nn.quantized``, ``minidl.ao.nn.quantized.dynamic``) and the
modules of quantization-aware training (``minidl.ao.nn.qat``)."""
from . import qat, quantized  # noqa: F401
