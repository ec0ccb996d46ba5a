"""minidl.ao: as torch.ao, the home of quantization (``minidl.ao.quantization``) and its
quantized modules (``minidl.ao.nn.quantized``)."""
from . import nn, quantization  # noqa: F401
