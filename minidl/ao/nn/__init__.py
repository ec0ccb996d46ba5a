"""Quantized modules (``minidl.ao.nn.quantized``, ``minidl.ao.nn.quantized.dynamic``), the
modules of quantization-aware training (``minidl.ao.nn.qat``) and fused modules
(``minidl.ao.nn.intrinsic``, with its ``qat`` and ``quantized`` forms)."""
from . import qat, quantized  # noqa: F401
from . import intrinsic  # noqa: F401,E402  (after qat and quantized, which it builds on)
