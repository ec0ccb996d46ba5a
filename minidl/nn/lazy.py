"""Lazy modules, as PyTorch's: LazyLinear, LazyConv1d/2d/3d, LazyConvTranspose1d/2d/3d,
LazyBatchNorm1d/2d/3d, LazyInstanceNorm1d/2d/3d leave their input size open (in_features, in_channels, num_features) and take it from the first input.
Until then their parameters (and BatchNorm's running statistics) are
``UninitializedParameter``/``UninitializedBuffer`` placeholders: asking one its shape or values
raises, as in PyTorch. The first forward call (or a load_state_dict, which takes the shapes
from the checkpoint) materialises them and runs the layer's own initialisation; from the
first call on, the module is its ordinary class (``type(m) is nn.Linear``)."""
from __future__ import annotations

import sys

import numpy as np

from ..backend import get_array_module
from ..backend.dtypes import default_float
from ..tensor import Function, Tensor
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .layers import BatchNorm1d, BatchNorm2d, BatchNorm3d, Linear, _BatchNorm
from .module import Module, Parameter
from .normalization import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, _InstanceNorm

_UNINITIALIZED = ("Can't access the shape of an uninitialized parameter or buffer. This error "
                  "usually happens in `load_state_dict` when trying to load an uninitialized "
                  "parameter into an initialized one. Call `forward` to initialize the "
                  "parameters before accessing their attributes.")


class UninitializedError(ValueError, RuntimeError):
    """Asking a placeholder its shape (PyTorch's RuntimeError), or computing with it (PyTorch's
    ValueError, which an op that reads the shape first, such as linear, raises here too)."""


def _use_error(what, kind="UninitializedParameter"):
    # the op's name where a Function's forward is what touched the array (an error path only)
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Function):
            what = type(owner).__name__.lower()
            break
        frame = frame.f_back
    return UninitializedError(
        f"Attempted to use an uninitialized parameter in {what}. This error happens when you "
        f"are using a `LazyModule` or explicitly manipulating `minidl.nn.parameter.{kind}` "
        "objects. When using LazyModules Call `forward` with a dummy batch to initialize the "
        "parameters before calling minidl functions")


class _UnusableArray(np.ndarray):
    """The empty array a placeholder holds (its dtype, for .to() and the materialised array):
    any computation on it (a ufunc, operator or reduction, a NumPy function) raises the
    uninitialised-use error, so an op on an uninitialised parameter fails instead of computing
    on an empty array, and ops on ordinary tensors check nothing."""

    kind = "UninitializedParameter"

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise _use_error(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")

    def __array_function__(self, func, types, args, kwargs):
        raise _use_error(func.__name__)

    # ops that read the shape first (matmul's check, mean's empty case) refuse it there
    @property
    def shape(self):
        raise _use_error("shape")

    @property
    def size(self):
        raise _use_error("size")

    @property
    def ndim(self):
        raise _use_error("ndim")


class _Uninitialized:
    """A placeholder with no shape yet: it keeps the device and dtype it should have (an
    empty array of them, so .to() before the first call applies), nothing else. Its array
    refuses computation (_UnusableArray), whatever stores a new one there (Module.to)."""

    cls_to_become = None

    @property
    def data(self):
        return self.__dict__["data"]

    @data.setter
    def data(self, value):
        if type(value) is np.ndarray:  # the GPU's arrays stay as they are
            value = value.view(_UnusableArray)
        self.__dict__["data"] = value

    @property
    def shape(self):
        raise UninitializedError(_UNINITIALIZED)

    @property
    def ndim(self):
        raise UninitializedError(_UNINITIALIZED)

    def size(self, dim=None):
        raise UninitializedError(_UNINITIALIZED)

    def dim(self):
        raise _use_error("dim", type(self).__name__)

    def numel(self):
        raise _use_error("numel", type(self).__name__)

    def item(self):
        raise _use_error("item", type(self).__name__)

    def numpy(self, *, force=False):
        raise _use_error("numpy", type(self).__name__)

    def tolist(self):
        raise _use_error("tolist", type(self).__name__)

    def __len__(self):
        raise _use_error("__len__", type(self).__name__)

    def __repr__(self):
        return f"<{type(self).__name__}>"

    def materialize(self, shape):
        """Give the placeholder its shape (uninitialised values) and its ordinary class."""
        old = self.data
        xp = get_array_module(old)
        self.__class__ = self.cls_to_become
        self.data = xp.empty(tuple(shape), dtype=old.dtype)


class UninitializedParameter(_Uninitialized, Parameter):
    cls_to_become = Parameter

    def __init__(self, requires_grad=True, like=None):
        xp = get_array_module(like.data) if like is not None else None
        empty = like.data[:0].reshape(0) if xp is not None else None
        super().__init__(empty if empty is not None else _empty_f32(), requires_grad)


class UninitializedBuffer(_Uninitialized, Tensor):
    cls_to_become = Tensor

    def __init__(self, requires_grad=False, like=None):
        empty = like.data[:0].reshape(0) if like is not None else _empty_f32()
        super().__init__(empty, requires_grad=requires_grad)


def _empty_f32():
    return np.empty(0, dtype=default_float())


def is_lazy(t):
    return isinstance(t, _Uninitialized)


class LazyModuleMixin:
    """What the lazy classes share: the placeholders, materialising them from the first input
    (``initialize_parameters``) or from a state dict, and turning into ``cls_to_become``."""

    cls_to_become = None

    def has_uninitialized_params(self):
        return any(is_lazy(t) for t in list(self._parameters.values())
                   + list(self._buffers.values()))

    def _lazy_placeholders(self, names):
        for name in names:
            if name in self._parameters and self._parameters[name] is not None:
                self._parameters[name] = UninitializedParameter(
                    self._parameters[name].requires_grad, like=self._parameters[name])
            elif name in self._buffers and self._buffers[name] is not None:
                self._buffers[name] = UninitializedBuffer(like=self._buffers[name])

    def reset_parameters(self):
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def __call__(self, *args, **kwargs):
        if self.has_uninitialized_params():
            if not args or not isinstance(args[0], Tensor):
                raise TypeError(f"{type(self).__name__}: the first call needs a Tensor input "
                                f"to infer the parameters' shapes")
            self.initialize_parameters(args[0])
        self.__class__ = type(self).cls_to_become
        return Module.__call__(self, *args, **kwargs)

    def _materialize_from(self, state_dict, prefix):
        """Module.load_state_dict asks every lazy module first: placeholders named in the
        state dict take its shapes (the values are then copied as for any module)."""
        for name in list(self._parameters) + list(self._buffers):
            t = self._parameters.get(name, self._buffers.get(name))
            if is_lazy(t) and prefix + name in state_dict:
                t.materialize(tuple(state_dict[prefix + name].shape))
        self._infer_from_weights()


class LazyLinear(LazyModuleMixin, Linear):
    """Linear whose in_features comes from the first input's last dim."""

    cls_to_become = Linear
    _factory_kwargs = False

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        Linear.__init__(self, 1, out_features, bias)
        if device is not None or dtype is not None:
            self.to(*(a for a in (device, dtype) if a is not None))
        self.in_features = 0
        self._lazy_placeholders(("weight", "bias"))

    def initialize_parameters(self, input):
        self.in_features = input.shape[-1]
        self.weight.materialize((self.out_features, self.in_features))
        if self.bias is not None:
            self.bias.materialize((self.out_features,))
        self.reset_parameters()

    def _infer_from_weights(self):
        if not is_lazy(self.weight):
            self.in_features = self.weight.shape[1]


class _LazyConvXdMixin(LazyModuleMixin):
    """The lazy convolutions' common base (torch's name), transposed ones included."""


class _LazyConvMixin(_LazyConvXdMixin):
    _factory_kwargs = False

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        self.cls_to_become.__init__(self, groups, out_channels, kernel_size, stride, padding,
                                    dilation, groups, bias, padding_mode, device, dtype)
        self.in_channels = 0
        self._lazy_placeholders(("weight", "bias"))

    def initialize_parameters(self, input):
        batched = input.ndim == self._dims + 2
        self.in_channels = input.shape[1 if batched else 0]
        if self.in_channels % self.groups:
            raise ValueError(f"{type(self).__name__}: in_channels ({self.in_channels}) must be "
                             f"divisible by groups ({self.groups})")
        self.weight.materialize((self.out_channels, self.in_channels // self.groups)
                                + self.kernel_size)
        if self.bias is not None:
            self.bias.materialize((self.out_channels,))
        self.reset_parameters()

    def _infer_from_weights(self):
        if not is_lazy(self.weight):
            self.in_channels = self.weight.shape[1] * self.groups


class LazyConv1d(_LazyConvMixin, Conv1d):
    """Conv1d whose in_channels comes from the first input."""

    cls_to_become = Conv1d


class LazyConv2d(_LazyConvMixin, Conv2d):
    """Conv2d whose in_channels comes from the first input."""

    cls_to_become = Conv2d


class LazyConv3d(_LazyConvMixin, Conv3d):
    """Conv3d whose in_channels comes from the first input."""

    cls_to_become = Conv3d


class _LazyConvTransposeMixin(_LazyConvXdMixin):
    _factory_kwargs = False

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", device=None,
                 dtype=None):
        self.cls_to_become.__init__(self, groups, out_channels, kernel_size, stride, padding,
                                    output_padding, groups, bias, dilation, padding_mode, device,
                                    dtype)
        self.in_channels = 0
        self._lazy_placeholders(("weight", "bias"))

    def initialize_parameters(self, input):
        batched = input.ndim == self._dims + 2
        self.in_channels = input.shape[1 if batched else 0]
        if self.in_channels % self.groups:
            raise ValueError(f"{type(self).__name__}: in_channels ({self.in_channels}) must be "
                             f"divisible by groups ({self.groups})")
        self.weight.materialize((self.in_channels, self.out_channels // self.groups)
                                + self.kernel_size)
        if self.bias is not None:
            self.bias.materialize((self.out_channels,))
        self.reset_parameters()

    def _infer_from_weights(self):
        if not is_lazy(self.weight):
            self.in_channels = self.weight.shape[0]


class LazyConvTranspose1d(_LazyConvTransposeMixin, ConvTranspose1d):
    cls_to_become = ConvTranspose1d


class LazyConvTranspose2d(_LazyConvTransposeMixin, ConvTranspose2d):
    cls_to_become = ConvTranspose2d


class LazyConvTranspose3d(_LazyConvTransposeMixin, ConvTranspose3d):
    cls_to_become = ConvTranspose3d


class _LazyBatchNormMixin(LazyModuleMixin):
    _factory_kwargs = False

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        _BatchNorm.__init__(self, 1, eps, momentum, affine, track_running_stats, device, dtype,
                            bias=bias)
        self.num_features = 0
        self._lazy_placeholders(("weight", "bias", "running_mean", "running_var"))

    def initialize_parameters(self, input):
        self.num_features = input.shape[1] if input.ndim > 1 else input.shape[0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(self, name)
            if is_lazy(t):
                t.materialize((self.num_features,))
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def _infer_from_weights(self):
        for name in ("weight", "running_mean"):
            t = getattr(self, name)
            if t is not None and not is_lazy(t):
                self.num_features = t.shape[0]


class LazyBatchNorm1d(_LazyBatchNormMixin, BatchNorm1d):
    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyBatchNormMixin, BatchNorm2d):
    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyBatchNormMixin, BatchNorm3d):
    cls_to_become = BatchNorm3d


class _LazyInstanceNormMixin(_LazyBatchNormMixin):
    """Note PyTorch's lazy defaults: affine=True and track_running_stats=True (the plain
    InstanceNorm's are False)."""

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        _InstanceNorm.__init__(self, 1, eps, momentum, affine, track_running_stats, device,
                               dtype, bias=bias)
        self.num_features = 0
        self._lazy_placeholders(("weight", "bias", "running_mean", "running_var"))

    def initialize_parameters(self, input):
        batched = input.ndim == self._dims + 2
        self.num_features = input.shape[1 if batched else 0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(self, name)
            if is_lazy(t):
                t.materialize((self.num_features,))
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1


class LazyInstanceNorm1d(_LazyInstanceNormMixin, InstanceNorm1d):
    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyInstanceNormMixin, InstanceNorm2d):
    cls_to_become = InstanceNorm2d


class LazyInstanceNorm3d(_LazyInstanceNormMixin, InstanceNorm3d):
    cls_to_become = InstanceNorm3d
