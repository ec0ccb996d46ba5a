"""Quantized tensors: an integer array plus the affine map back to real numbers,
``real = (q - zero_point) * scale``, as torch's ``quint8``/``qint8``/``qint32`` tensors.

Quantizing rounds half to even (``nearbyint``) after adding the zero point, and clamps to the
dtype's range. The arithmetic follows PyTorch's CPU kernels to the bit: the scale is taken as a
float32, its reciprocal ``inv = 1 / scale`` is taken in float32, and per tensor (quint8, qint8)
``zero_point + x * inv`` is one fused multiply-add (fbgemm's AVX2 kernel, a single rounding)
while per channel and for qint32 it is a float32 multiply then a float32 add (two roundings).
The difference shows only on values within an ulp of a .5 tie; tests/test_quantization.py
checks both against torch."""
from __future__ import annotations

import sys

import numpy as np

from ...backend import CPU_DEVICE
from ...ops import wrap_dim
from ...tensor import Tensor
from ._qmath import quantize_ints  # noqa: F401  (imported from here by the modules)


class QDtype:
    """A quantized dtype: its name, the integer dtype that stores it and that dtype's range."""

    is_floating_point = False
    is_complex = False

    def __init__(self, name, storage):
        self.name, self.storage = name, np.dtype(storage)
        info = np.iinfo(self.storage)
        self.qmin, self.qmax = int(info.min), int(info.max)
        self.itemsize = self.storage.itemsize
        self.is_signed = info.min < 0

    def __repr__(self):
        return f"minidl.{self.name}"

    __str__ = __repr__

    def __reduce__(self):  # pickles as the one object of its name
        return (_dtype_by_name, (self.name,))

    def __deepcopy__(self, memo):
        return self


quint8 = QDtype("quint8", np.uint8)
qint8 = QDtype("qint8", np.int8)
qint32 = QDtype("qint32", np.int32)
QDTYPES = {"quint8": quint8, "qint8": qint8, "qint32": qint32}


def _dtype_by_name(name):
    return QDTYPES[name]


class QScheme:
    """How a quantized tensor maps integers to reals (torch.qscheme)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"minidl.{self.name}"

    __str__ = __repr__

    def __reduce__(self):
        return (_qscheme_by_name, (self.name,))

    def __deepcopy__(self, memo):
        return self


per_tensor_affine = QScheme("per_tensor_affine")
per_channel_affine = QScheme("per_channel_affine")
per_tensor_symmetric = QScheme("per_tensor_symmetric")
per_channel_symmetric = QScheme("per_channel_symmetric")
per_channel_affine_float_qparams = QScheme("per_channel_affine_float_qparams")


def _qscheme_by_name(name):
    return getattr(sys.modules[__name__], name)


QSCHEMES = ("per_tensor_affine", "per_channel_affine", "per_tensor_symmetric",
            "per_channel_symmetric", "per_channel_affine_float_qparams")

_SUPPORTED = ("int_repr(), dequantize(), item(), stride(), q_scale(), q_zero_point(), "
              "q_per_channel_scales(), q_per_channel_zero_points(), q_per_channel_axis(), qscheme(), shape, size(), dim(), "
              "numel(), dtype, clone(), detach(), and per tensor reshape/view/flatten/transpose/"
              "t/permute/squeeze/unsqueeze/contiguous/indexing/chunk/mean/relu/sigmoid/tanh, max, "
              "average and adaptive average pooling, relu6, hardtanh, leaky_relu, hardsigmoid "
              "and cat")


class QTensor(Tensor):
    """A quantized tensor: ``int_repr()`` gives its integers, ``dequantize()`` the reals they
    stand for. Other ops refuse, as most of torch's do on QuantizedCPU tensors: the integers
    alone mean nothing without the scale and zero point, so an op on them would give nonsense
    quietly. Dequantize first, or use the quantized modules."""

    is_quantized = True
    # torch's quantized convolutions (fbgemm) give channels-last tensors, and the ops after
    # them keep that layout; it changes only how torch's quantized mean sums (see _qops.mean)
    _channels_last = False

    def __init__(self, ints, dtype, scale, zero_point, axis=None):
        self._ints, self._qdtype = ints, dtype
        self._scale, self._zero_point, self._axis = scale, zero_point, axis
        self.requires_grad = False
        self.grad = None
        self._ctx = None
        self._retain_grad = False

    @property
    def data(self):
        raise NotImplementedError(
            f"this op is not supported on a quantized tensor ({self._qdtype}); quantized tensors "
            f"support only {_SUPPORTED}. Call .dequantize() for a float tensor first")

    @data.setter
    def data(self, value):
        raise NotImplementedError("a quantized tensor's values cannot be replaced; make a new one "
                                  "with minidl.quantize_per_tensor")

    # ---- what a quantized tensor answers ---------------------------------------------
    @property
    def shape(self):
        return tuple(self._ints.shape)

    @property
    def dtype(self):
        return self._qdtype

    @property
    def device(self):
        return CPU_DEVICE  # a DeviceName, as every Tensor's: .type, .index

    @property
    def ndim(self):
        return self._ints.ndim

    def dim(self):
        return self._ints.ndim

    def numel(self):
        return int(self._ints.size)

    def __len__(self):
        return len(self._ints)

    def element_size(self):
        return self._qdtype.itemsize

    def stride(self, dim=None):
        """Steps between neighbours of the stored integers, in elements (as torch's)."""
        steps = tuple(s // self._ints.itemsize for s in self._ints.strides)
        return steps if dim is None else steps[wrap_dim(dim, self._ints.ndim, "stride")]

    def item(self):
        """The one element's real value (dequantized), as torch's."""
        if self._ints.size != 1:
            raise RuntimeError(f"a Tensor with {self._ints.size} elements cannot be converted "
                               "to Scalar")
        return float(self.dequantize().numpy().reshape(()))

    def int_repr(self):
        """The stored integers, as a uint8/int8/int32 tensor (a copy)."""
        return Tensor(self._ints.copy())

    def qscheme(self):
        if self._axis is None:
            return per_tensor_affine
        return per_channel_affine_float_qparams if self._float_qparams else per_channel_affine

    @property
    def _float_qparams(self):
        """Float zero points (embedding weights): ``real = (q - zero_point) * scale`` with a
        float zero point, as torch's per_channel_affine_float_qparams."""
        return self._axis is not None and np.asarray(self._zero_point).dtype.kind == "f"

    def _per_tensor(self, what):
        if self._axis is not None:
            raise RuntimeError(f"{what}: expected a per-tensor quantized tensor, got one quantized "
                               f"{self.qscheme()} (use q_per_channel_{what[2:]}s())")

    def _per_channel(self, what):
        if self._axis is None:
            raise RuntimeError(f"{what}: expected a per-channel quantized tensor, got one quantized "
                               f"{self.qscheme()}")

    def q_scale(self):
        self._per_tensor("q_scale")
        return float(self._scale)

    def q_zero_point(self):
        self._per_tensor("q_zero_point")
        return int(self._zero_point)

    def q_per_channel_scales(self):
        self._per_channel("q_per_channel_scales")
        return Tensor(self._scale.copy())

    def q_per_channel_zero_points(self):
        self._per_channel("q_per_channel_zero_points")
        return Tensor(self._zero_point.copy())

    def q_per_channel_axis(self):
        self._per_channel("q_per_channel_axis")
        return self._axis

    def dequantize(self):
        """``(q - zero_point) * scale``, as torch's kernels compute it: in float32 per tensor,
        in float64 (the scales' dtype) rounded to float32 per channel."""
        scale, zp = np.float32(self._scale), self._zero_point
        if self._float_qparams:  # float32 throughout, as torch's kernel
            shape = [1] * self._ints.ndim
            shape[self._axis] = -1
            diff = self._ints.astype(np.float32) - self._zero_point.astype(np.float32).reshape(shape)
            return Tensor(diff * self._scale.astype(np.float32).reshape(shape))
        if self._axis is not None:
            shape = [1] * self._ints.ndim
            shape[self._axis] = -1
            scale = self._scale.reshape(shape)
            zp = self._zero_point.reshape(shape)
        diff = (self._ints.astype(np.int64) - zp).astype(scale.dtype)
        return Tensor((diff * scale).astype(np.float32))

    def clone(self, memory_format=None):
        out = QTensor(self._ints.copy(), self._qdtype, self._scale, self._zero_point, self._axis)
        out._channels_last = self._channels_last
        return out

    def detach(self):
        return self

    # ---- shape ops (per tensor: every element keeps the one scale and zero point) ----------
    def _reshaped(self, what, ints):
        if self._axis is not None:
            raise RuntimeError(f"{what}: only per-tensor quantized tensors can be reshaped or "
                               "indexed here (a per-channel one would lose track of its axis)")
        return QTensor(ints, self._qdtype, self._scale, self._zero_point)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._reshaped("reshape", self._ints.reshape(shape))

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape
        if not shape:
            return self._reshaped("flatten", self._ints.reshape(1))
        start, end = start_dim % len(shape), end_dim % len(shape)
        merged = int(np.prod(shape[start:end + 1]))
        return self.reshape(shape[:start] + (merged,) + shape[end + 1:])

    def transpose(self, dim0, dim1):
        return self._reshaped("transpose", np.swapaxes(self._ints, dim0, dim1))

    def t(self):
        if self._ints.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                               f"{self._ints.ndim}D")
        return self._reshaped("t", self._ints.T)

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return self._reshaped("permute", np.transpose(self._ints, dims))

    def squeeze(self, dim=None):
        if dim is None:
            return self._reshaped("squeeze", np.squeeze(self._ints))
        dim %= max(self._ints.ndim, 1)
        ints = self._ints if self._ints.shape[dim] != 1 else np.squeeze(self._ints, dim)
        return self._reshaped("squeeze", ints)

    def unsqueeze(self, dim):
        return self._reshaped("unsqueeze", np.expand_dims(self._ints, dim % (self._ints.ndim + 1)))

    def contiguous(self, memory_format=None):
        return self._reshaped("contiguous", np.ascontiguousarray(self._ints))

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.numpy()
        return self._reshaped("indexing", self._ints[index])

    # ---- the float ops with a quantized kernel (_qops.py) ----------------------------------
    def _quantized_op(self, name, *args, **kwargs):
        """What ``F.max_pool1d/2d/3d``, ``F.avg_pool2d``, ``F.adaptive_avg_pool2d``, ``F.relu``,
        ``F.relu6``, ``F.hardtanh``, ``F.leaky_relu``, ``F.sigmoid``, ``F.hardsigmoid`` and
        ``minidl.cat`` call for a quantized input: the quantized kernel of that name
        (_qops.py)."""
        from . import _qops

        return _qops.run(name, self, *args, **kwargs)

    def mean(self, dim=None, keepdim=False, dtype=None):
        from . import _qops

        return _qops.mean(self, dim, keepdim, dtype)

    def chunk(self, chunks, dim=0):
        from . import _qops

        return _qops.chunk(self, chunks, dim)

    def relu(self):
        from . import _qops

        return _qops.relu(self)

    def tanh(self):
        from . import _qops

        return _qops.tanh(self)

    def sigmoid(self):
        from . import _qops

        return _qops.sigmoid(self)

    def __repr__(self):
        body = repr(self.dequantize())[:-1]
        pad = " " * len("tensor(")
        if self._axis is None:
            params = f"scale={float(self._scale)!r}, zero_point={int(self._zero_point)})"
        else:
            params = (f"\n{pad}scale={Tensor(self._scale)!r},\n{pad}"
                      f"zero_point={Tensor(self._zero_point)!r}, axis={self._axis})")
        return (f"{body}, size={self.shape}, dtype={self._qdtype},\n{pad}"
                f"quantization_scheme={self.qscheme()},{'' if self._axis is not None else ' '}{params}")

    __str__ = __repr__


# ---- making them ------------------------------------------------------------------------
def _qdtype(name, dtype):
    if not isinstance(dtype, QDtype):
        raise RuntimeError(f"{name}: dtype must be minidl.quint8, minidl.qint8 or minidl.qint32, "
                           f"got {dtype}")
    return dtype


def _float_input(name, x):
    if not isinstance(x, Tensor) or isinstance(x, QTensor):
        raise TypeError(f"{name}: expected a float Tensor, got {type(x).__name__}")
    if x.device != "cpu":  # not a silent copy to the host: the result would leave the device
        raise NotImplementedError(
            f"{name}: quantized tensors and their kernels are CPU-only (as torch's quantized "
            f"ops, which do not run on the QuantizedCUDA backend), got a tensor on {x.device}; "
            "move the input and the quantized model to the CPU with .cpu()")
    if x.data.dtype != np.float32:  # torch's kernels take float32 only, refusing the rest
        raise RuntimeError(f"{name}: quantizing needs a floating tensor of dtype float32 (as "
                           f"torch's), got dtype {x.dtype}; convert it with .float() first")
    return np.asarray(x.numpy(), dtype=np.float32)


def _check_scale(name, scale):
    scale = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"{name}: scale must be positive and finite, got {scale.tolist()}")
    return scale


def _check_zero_point(name, zero_point, dtype):
    zp = np.asarray(zero_point)
    if zp.dtype.kind not in "iub":
        raise TypeError(f"{name}: zero_point must be an integer, got {zp.tolist()} ({zp.dtype})")
    zp = zp.astype(np.int64)
    for bound, bad, word in ((dtype.qmin, zp < dtype.qmin, "below lower"),
                             (dtype.qmax, zp > dtype.qmax, "above upper")):
        if np.any(bad):
            raise RuntimeError(f"{name}: zero_point {zp[bad].ravel()[0]} is {word} bound {bound} of "
                               f"{dtype}")
    return zp


def _scalar(value):
    return value.item() if isinstance(value, Tensor) else value


def keep_layout(out, like, channels_last=None):
    """``out`` marked channels-last as ``like`` is (or as given), for a 4-D result."""
    flag = getattr(like, "_channels_last", False) if channels_last is None else channels_last
    out._channels_last = bool(flag) and out.ndim == 4
    return out


def quantize_per_tensor(input, scale, zero_point, dtype):
    """``input`` (float) as a quantized tensor of ``dtype`` with one scale and zero point."""
    name = "quantize_per_tensor"
    dtype = _qdtype(name, dtype)
    x = _float_input(name, input)
    scale = float(_check_scale(name, _scalar(scale)))
    zp = int(_check_zero_point(name, _scalar(zero_point), dtype))
    ints = quantize_ints(x, scale, zp, dtype.qmin, dtype.qmax, fused=dtype is not qint32)
    return QTensor(ints.astype(dtype.storage), dtype, scale, zp)


def quantize_per_channel(input, scales, zero_points, axis, dtype):
    """``input`` as a quantized tensor with one scale and zero point per index of ``axis``."""
    name = "quantize_per_channel"
    dtype = _qdtype(name, dtype)
    x = _float_input(name, input)
    axis = int(axis)
    if not 0 <= axis < x.ndim:  # torch takes no negative axis here
        raise IndexError(f"{name}: axis {axis} is out of range for a tensor of {x.ndim} dims "
                         f"(expected [0, {x.ndim}))")
    scales = _check_scale(name, scales.numpy() if isinstance(scales, Tensor) else scales).ravel()
    zps = np.asarray(zero_points.numpy() if isinstance(zero_points, Tensor) else zero_points)
    if zps.dtype.kind == "f":  # per_channel_affine_float_qparams (torch: float32 qparams)
        return _quantize_float_qparams(x, scales, zps.ravel(), axis, dtype)
    zps = _check_zero_point(name, zps, dtype).ravel()
    if len(scales) != x.shape[axis] or len(zps) != x.shape[axis]:
        raise RuntimeError(f"{name}: expected {x.shape[axis]} scales and zero points (the size of "
                           f"axis {axis} of shape {x.shape}), got {len(scales)} and {len(zps)}")
    shape = [1] * x.ndim
    shape[axis] = -1
    ints = quantize_ints(x, scales.reshape(shape), zps.reshape(shape), dtype.qmin, dtype.qmax,
                         fused=False)
    return QTensor(ints.astype(dtype.storage), dtype, scales, zps, axis)


def _quantize_float_qparams(x, scales, zps, axis, dtype):
    """torch's float-qparams quantization: ``lrintf(x * float32(1 / scale) + zero_point)``
    clamped to the dtype, the scales and zero points kept as float32."""
    name = "quantize_per_channel"
    if len(scales) != x.shape[axis] or len(zps) != x.shape[axis]:
        raise RuntimeError(f"{name}: expected {x.shape[axis]} scales and zero points (the size of "
                           f"axis {axis} of shape {x.shape}), got {len(scales)} and {len(zps)}")
    if not np.all(np.isfinite(zps)):
        raise ValueError(f"{name}: float zero points must be finite, got {zps.tolist()}")
    shape = [1] * x.ndim
    shape[axis] = -1
    s32, z32 = scales.astype(np.float32), zps.astype(np.float32)
    inv = (np.float32(1) / s32).reshape(shape)
    with np.errstate(invalid="ignore", over="ignore"):
        ints = np.clip(np.rint(x * inv + z32.reshape(shape)), dtype.qmin, dtype.qmax)
    return QTensor(ints.astype(dtype.storage), dtype, s32, z32, axis)


def dequantize(tensor):
    """``tensor.dequantize()``; a float tensor comes back as it is."""
    return tensor.dequantize() if isinstance(tensor, QTensor) else tensor


def _make_per_tensor_quantized_tensor(input, scale, zero_point):
    """A quantized tensor over the integers of ``input`` (uint8 -> quint8, int8 -> qint8,
    int32 -> qint32), as torch's."""
    ints = input.numpy()
    dtype = {np.dtype(d.storage): d for d in QDTYPES.values()}.get(ints.dtype)
    if dtype is None:
        raise RuntimeError("_make_per_tensor_quantized_tensor: expected a uint8, int8 or int32 "
                           f"tensor, got {input.dtype}")
    name = "_make_per_tensor_quantized_tensor"
    return QTensor(ints.copy(), dtype, float(_check_scale(name, _scalar(scale))),
                   int(_check_zero_point(name, _scalar(zero_point), dtype)))


def qtensor_from_parts(ints, dtype_name, scale, zero_point, axis=None, where="a quantized tensor"):
    """A quantized tensor read from a checkpoint: its integers (of the dtype's storage type),
    dtype name and scale/zero point (numbers per tensor; float64 and int64 arrays along
    ``axis`` per channel), each checked; ValueError naming ``where`` for anything that does
    not fit."""
    dtype = QDTYPES.get(dtype_name)
    ints = np.asarray(ints)
    if dtype is None:
        raise ValueError(f"{where}: unknown quantized dtype {dtype_name!r} (expected one of "
                         f"{sorted(QDTYPES)})")
    if ints.dtype != dtype.storage:
        raise ValueError(f"{where}: {dtype} stores {dtype.storage}, the file holds {ints.dtype}")
    if axis is not None and np.asarray(zero_point).dtype.kind == "f":  # float qparams
        try:
            float_zp = np.asarray(zero_point, np.float32).reshape(-1)
            x = QTensor(ints.copy(), dtype, _check_scale(where, scale).astype(np.float32).reshape(-1),
                        float_zp, int(axis))
        except (RuntimeError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        if not 0 <= x._axis < ints.ndim or x._scale.shape != (ints.shape[x._axis],) \
                or float_zp.shape != x._scale.shape or not np.all(np.isfinite(float_zp)):
            raise ValueError(f"{where}: float-qparams scales and zero points do not fit shape "
                             f"{ints.shape} along axis {axis}")
        return x
    try:
        scale = _check_scale(where, scale)
        zero_point = _check_zero_point(where, zero_point, dtype)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    if axis is None:
        if scale.size != 1 or zero_point.size != 1:
            raise ValueError(f"{where}: a per-tensor quantized tensor takes one scale and zero "
                             f"point, got {scale.size} and {zero_point.size}")
        return QTensor(ints.copy(), dtype, float(scale.reshape(())), int(zero_point.reshape(())))
    axis = int(axis)
    if not 0 <= axis < ints.ndim:
        raise ValueError(f"{where}: per-channel axis {axis} is out of range for shape {ints.shape}")
    if scale.shape != (ints.shape[axis],) or zero_point.shape != (ints.shape[axis],):
        raise ValueError(f"{where}: expected {ints.shape[axis]} scales and zero points (axis "
                         f"{axis} of shape {ints.shape}), got {scale.shape} and {zero_point.shape}")
    return QTensor(ints.copy(), dtype, scale.copy(), zero_point.copy(), axis)
