"""Quantized modules (``minidl.ao.nn.quantized``, ``minidl.ao.nn.quantized.dynamic``)."""
from . import quantized  # noqa: F401
