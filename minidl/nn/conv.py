"""Convolution layers: Conv1d, Conv2d, Conv3d, ConvTranspose1d/2d/3d, with PyTorch's
constructor arguments, initialisation, parameter shapes and repr."""
from __future__ import annotations

import math

import numpy as np

from ..backend.dtypes import default_float
from ._functional import convolution as C
from .. import functional as F
from . import init
from .module import Module, Parameter

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    _dims = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None,
                 output_padding=0):
        super().__init__()
        name, n = type(self).__name__, self._dims
        groups = F._whole(groups, f"{name}: groups")
        if groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer, got {groups}")
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) must be divisible by groups "
                             f"({groups})")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels ({out_channels}) must be divisible by "
                             f"groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PADDING_MODES}, got "
                             f"{padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = C._ntuple(kernel_size, n, f"{name}: kernel_size")
        self.stride = C._ntuple(stride, n, f"{name}: stride")
        self.dilation = C._ntuple(dilation, n, f"{name}: dilation")
        if isinstance(padding, str):
            if self._transposed or padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be ints"
                                 + ("" if self._transposed else " or 'same'/'valid'")
                                 + f", got {padding!r}")
            if padding == "same" and max(self.stride) > 1:
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 "convolutions")
            self.padding = padding
        else:
            self.padding = C._ntuple(padding, n, f"{name}: padding")
        self.output_padding = C._ntuple(output_padding, n, f"{name}: output_padding")
        self.groups, self.padding_mode = groups, padding_mode
        self.transposed = self._transposed
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {name}')
        # F.pad's order for the non-zeros modes: the last dim's (left, right) first
        if self.padding == "same":
            pads = []
            for k, d in zip(reversed(self.kernel_size), reversed(self.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
        elif self.padding == "valid":
            pads = [0, 0] * n
        else:
            pads = [p for p in reversed(self.padding) for _ in (0, 1)]
        self._reversed_padding_repeated_twice = pads
        shape = ((in_channels, out_channels // groups) if self._transposed
                 else (out_channels, in_channels // groups)) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype=default_float()))
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=default_float()))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(*(a for a in (device, dtype) if a is not None))

    def reset_parameters(self):
        # PyTorch's: Kaiming-uniform(a=sqrt(5)), bias U(-1/sqrt(fan_in), ..), fan_in from the
        # weight's dim 1 (out_channels/groups for a transposed convolution)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * int(np.prod(self.kernel_size))
            if fan_in:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def _conv_forward(self, input, fn):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return fn(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                  self.groups)


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L) (or (C_in, L)); weight (C_out, C_in/groups, k)."""

    _dims = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)

    def forward(self, input):
        return self._conv_forward(input, C.conv1d)


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W) (or (C_in, H, W)); weight
    (C_out, C_in/groups, kH, kW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)

    def forward(self, input):
        if self._plain and getattr(input, "ndim", None) == 4:  # the hot path: the tuned kernels
            return F.conv2d(input, self.weight, self.bias, self.stride, self.padding)
        return self._conv_forward(input, C.conv2d)

    @property
    def _plain(self):
        return (self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and not isinstance(self.padding, str))


class Conv3d(_ConvNd):
    """3-D convolution over (N, C_in, D, H, W) (or (C_in, D, H, W)); weight
    (C_out, C_in/groups, kD, kH, kW)."""

    _dims = 3

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)

    def forward(self, input):
        return self._conv_forward(input, C.conv3d)


class _ConvTransposeNd(_ConvNd):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype, output_padding)

    def _output_padding(self, input, output_size):
        """The output_padding that makes the output ``output_size`` (PyTorch's rule)."""
        if output_size is None:
            return self.output_padding
        n, name = self._dims, type(self).__name__
        size = tuple(output_size)
        if len(size) == n + 2 or (len(size) == n + 1 and input.ndim == n + 1):
            size = size[-n:]
        if len(size) != n:
            raise ValueError(f"{name}: output_size must have {n} or {n + 2} elements, got "
                             f"{tuple(output_size)}")
        out = []
        for d in range(n):
            smallest = ((input.shape[input.ndim - n + d] - 1) * self.stride[d]
                        - 2 * self.padding[d] + self.dilation[d] * (self.kernel_size[d] - 1) + 1)
            largest = smallest + self.stride[d] - 1
            if not smallest <= size[d] <= largest:
                raise ValueError(f"{name}: requested an output size of {tuple(size)}, but "
                                 f"valid sizes of dim {d} range from {smallest} to {largest} "
                                 f"(for an input of {tuple(input.shape[-n:])})")
            out.append(size[d] - smallest)
        return tuple(out)


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution; weight (C_in, C_out/groups, k)."""

    _dims = 1

    def forward(self, input, output_size=None):
        op = self._output_padding(input, output_size)
        return C.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding, op,
                                  self.groups, self.dilation)


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution; weight (C_in, C_out/groups, kH, kW)."""

    def forward(self, input, output_size=None):
        op = self._output_padding(input, output_size)
        return C.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, op,
                                  self.groups, self.dilation)


class ConvTranspose3d(_ConvTransposeNd):
    """Transposed 3-D convolution; weight (C_in, C_out/groups, kD, kH, kW)."""

    _dims = 3

    def forward(self, input, output_size=None):
        op = self._output_padding(input, output_size)
        return C.conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding, op,
                                  self.groups, self.dilation)
