"""Reading ``torch.save`` files without torch and without running code from them: the
restricted unpickler that ``minidl.load`` (for a PyTorch file) and ``minidl.models.convert``
(``load_torch_checkpoint``) share.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. So the
reader here never hands the pickle to ``pickle.load``: a restricted ``Unpickler`` resolves only
the handful of globals that rebuild tensors and plain containers, maps each to a NumPy
stand-in, and refuses every other global (``os.system``, ``builtins.eval``, ...) by name.
Memory follows what the file holds, never what it declares (``_Budget``).

torch's zip layout (``torch.save`` since 1.6)::

    <prefix>/data.pkl        the object tree; tensors point at storages by persistent id
    <prefix>/data/<key>      one raw storage per key, all of its elements
    <prefix>/byteorder       "little" or "big" (absent in old files: little)

Only the legacy pre-1.6 format needs torch itself (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import collections
import contextlib
import io
import math
import operator
import os
import pickle
import re
import tarfile
import types
import zipfile
from typing import NamedTuple

import numpy as np


# torch storage class name -> numpy dtype code of its elements in the file.
# bfloat16 has no numpy dtype: it is read as uint16 and widened to float32 (exactly).
_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
    "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",  # raw bytes; _rebuild_tensor_v3 says which dtype to view them as
}
# torch dtypes that may appear as globals (arguments of _rebuild_tensor_v3, new in torch 2.x).
_TORCH_DTYPES = {
    "float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "bf16",
    "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1",
    "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8", "bool": "?",
    "complex64": "c8", "complex128": "c16",
}
# torch dtypes without a minidl (NumPy) dtype: a tensor of one is named as such, not as "not a
# tensor"
_UNSUPPORTED_DTYPE = re.compile(r"float8_\w+|float4_\w+|complex32|chalf|u?int[1-7]|bits\w+|"
                                r"quint4x2|quint2x4")
_UNSUPPORTED_REBUILDS = {
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): "a meta tensor (one without data)",
    ("torch._utils", "_rebuild_nested_tensor"): "a nested tensor",
    ("torch._utils", "_rebuild_wrapper_subclass"): "a tensor subclass without storage",
    ("torch._utils", "_rebuild_sparse_csr_tensor"): "a sparse CSR tensor",
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): "a tensor on a device minidl lacks",
}
# What a checkpoint may make us allocate, checked against the sizes its zip directory declares
# before anything is inflated: in all (convert() sets it from the model's expected shapes), and
# per compressed member relative to its compressed size (torch.save stores members
# uncompressed; a deflated 1 MB of zeros can declare 1 GB).
DEFAULT_MAX_BYTES = 8 << 30
MAX_INFLATE_RATIO = 50
_CHUNK = 1 << 20


class _Budget:
    """Bytes a checkpoint may still make us allocate; every storage is charged before it is read."""

    def __init__(self, path, max_bytes, file_bytes=None):
        self.path, self.left = path, DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
        self.file_bytes = os.path.getsize(path) if file_bytes is None else file_bytes

    def charge(self, info):
        """Refuse a member before it is read when its declared size is out of bounds."""
        size = info.file_size
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != size or size > self.file_bytes:
                raise ValueError(f"checkpoint {self.path}: member {info.filename} declares {size} "
                                 f"bytes, more than the file holds (truncated or corrupt file?)")
        elif size > max(_CHUNK, MAX_INFLATE_RATIO * info.compress_size):
            raise ValueError(f"checkpoint {self.path}: member {info.filename} would inflate "
                             f"{info.compress_size} compressed bytes to {size}; refusing a ratio "
                             f"over {MAX_INFLATE_RATIO} (torch.save writes members uncompressed)")
        if size > self.left:
            raise ValueError(f"checkpoint {self.path}: member {info.filename} declares {size} bytes, "
                             f"over the {self.left} bytes left of the limit for this load (a model's "
                             f"expected shapes, or max_bytes)")
        self.left -= size

    def read(self, archive, info):
        """The member's bytes as a uint8 array, streamed into one buffer of its declared size."""
        self.charge(info)
        size = info.file_size
        out = np.empty(size, dtype=np.uint8)
        done = 0
        with archive.open(info) as member:  # zipfile checks the CRC as it streams
            while done < size:
                chunk = member.read(min(_CHUNK, size - done))
                if not chunk:
                    raise ValueError(f"checkpoint {self.path}: member {info.filename} is truncated")
                out[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
        return out


# Markers are NamedTuples, not plain objects: pickle's BUILD opcode can set attributes on
# anything find_class returns, and a tuple has none to set.
class _Storage(NamedTuple):
    """A storage type named in the pickle (``torch.FloatStorage``), resolved to a numpy dtype."""
    name: str
    code: str


class _DType(NamedTuple):
    """A torch dtype object (``torch.float32``), only ever an argument of _rebuild_tensor_v3."""
    name: str
    code: str


def _numpy_dtype(code, byteorder):
    if code == "bf16":
        return np.dtype(byteorder + "u2")
    return np.dtype(code).newbyteorder(byteorder)


def _widen_bfloat16(a):
    """bfloat16 is the top half of a float32: shift the bits up and reinterpret."""
    return (a.astype(np.uint32) << 16).view(np.float32)


class LoadedTensor(NamedTuple):
    """A tensor of the file as ``read(..., tensors=True)`` gives it: its array (bfloat16 kept),
    whether it requires grad, and whether it was an nn.Parameter."""
    array: np.ndarray
    requires_grad: bool
    parameter: bool


def _with_metadata(out, metadata):
    """The values a tensor's metadata says it holds: torch saves a conjugate view (``x.conj()``)
    or a negative view (``x.conj().imag``) as its storage plus {"conj": True} / {"neg": True},
    which torch.load applies as the tensor's conj and neg bits."""
    if not metadata:
        return out
    if not isinstance(metadata, dict):
        raise pickle.UnpicklingError(f"tensor metadata must be a dict, got {type(metadata)}")
    if metadata.get("neg"):
        out = -out
    if metadata.get("conj"):
        out = np.conj(out)
    return out


def _rebuild_tensor(storage, offset, size, stride, *rest):
    """Stand-in for torch._utils._rebuild_tensor_v2: a strided view of the storage, copied;
    ``rest``: requires_grad, backward hooks, metadata (see _with_metadata)."""
    out, code = _strided_copy(storage, offset, size, stride)
    metadata = rest[2] if len(rest) > 2 else None
    return _with_metadata(_widen_bfloat16(out) if code == "bf16" else out, metadata)


def _as_bfloat16(out, code):
    if code != "bf16":
        return out
    from .backend.dtypes import bfloat16_dtype

    return out.view(bfloat16_dtype())


def _rebuild_tensor_kept(storage, offset, size, stride, requires_grad=False, *rest):
    """_rebuild_tensor_v2 for ``read(..., tensors=True)``: bfloat16 and requires_grad kept;
    ``rest``: backward hooks, metadata."""
    out, code = _strided_copy(storage, offset, size, stride)
    metadata = rest[1] if len(rest) > 1 else None
    return LoadedTensor(_with_metadata(_as_bfloat16(out, code), metadata), requires_grad is True,
                        False)


def _rebuild_tensor_v3_kept(storage, offset, size, stride, requires_grad, hooks, dtype, *rest):
    out, code = _strided_copy(_v3_storage(storage, dtype), offset, size, stride)
    metadata = rest[0] if rest else None
    return LoadedTensor(_with_metadata(_as_bfloat16(out, code), metadata), requires_grad is True,
                        False)


def _rebuild_parameter_kept(data, requires_grad=True, *_ignored):
    if not isinstance(data, LoadedTensor):
        raise pickle.UnpicklingError(f"_rebuild_parameter: expected a tensor, got {type(data)}")
    return LoadedTensor(data.array, requires_grad is True, True)


class LoadedSparse(NamedTuple):
    """A sparse COO tensor of the file as ``read(..., tensors=True)`` gives it (its invariants
    are checked where it becomes a Tensor)."""
    indices: np.ndarray
    values: np.ndarray
    shape: tuple
    coalesced: bool


class LoadedCompressed(NamedTuple):
    """A sparse compressed (CSR, CSC, BSR, BSC) tensor of the file: its layout's name and
    parts (its invariants are checked where it becomes a Tensor)."""
    layout: str
    compressed: np.ndarray
    plain: np.ndarray
    values: np.ndarray
    shape: tuple


class _Layout(NamedTuple):
    name: str


_COMPRESSED = ("torch.sparse_csr", "torch.sparse_csc", "torch.sparse_bsr", "torch.sparse_bsc")


def _get_layout(name):
    """Stand-in for torch.serialization._get_layout: the sparse layouts are read."""
    if name != "torch.sparse_coo" and name not in _COMPRESSED:
        raise pickle.UnpicklingError(f"tensors of layout {name!r} are not supported (sparse COO, "
                                     "CSR, CSC, BSR, BSC and dense ones are)")
    return _Layout(name)


def _rebuild_size(dims=()):  # torch.Size: a tuple of ints
    return tuple(operator.index(d) for d in dims)


def _rebuild_device(type, index=None):  # noqa: A002  (torch.device's pickle: ("cuda", 1))
    """torch.device as a value (``torch.save({"device": x.device})``): minidl.device."""
    from .backend import device

    try:
        return device(type, index)
    except (TypeError, ValueError) as exc:
        raise pickle.UnpicklingError(f"torch.device: {exc}") from None


def _rebuild_sparse_kept(layout, data):
    """Stand-in for torch._utils._rebuild_sparse_tensor (layout, (indices, values, size[,
    is_coalesced]))."""
    if isinstance(layout, _Layout) and layout.name in _COMPRESSED:
        if not isinstance(data, tuple) or len(data) != 4 or not all(
                isinstance(t, LoadedTensor) for t in data[:3]):
            raise pickle.UnpicklingError("_rebuild_sparse_tensor: expected (compressed_indices, "
                                         "plain_indices, values, size) for a compressed layout")
        return LoadedCompressed(layout.name[len("torch."):], data[0].array, data[1].array,
                                data[2].array, _rebuild_size(data[3]))
    if not isinstance(layout, _Layout) or not isinstance(data, tuple) or len(data) not in (3, 4):
        raise pickle.UnpicklingError("_rebuild_sparse_tensor: expected the sparse COO layout and "
                                     "(indices, values, size[, is_coalesced])")
    indices, values, size = data[:3]
    if not (isinstance(indices, LoadedTensor) and isinstance(values, LoadedTensor)):
        raise pickle.UnpicklingError("_rebuild_sparse_tensor: indices and values must be tensors")
    coalesced = len(data) == 4 and data[3] is True
    return LoadedSparse(indices.array, values.array, _rebuild_size(size), coalesced)


# quantized storages (torch.save of a quantized tensor): their integers, and the dtype they
# mean; read only by minidl.load (``read(..., tensors=True)``)
_QUANTIZED_STORAGES = {"QInt8Storage": ("i1", "qint8"), "QUInt8Storage": ("u1", "quint8"),
                       "QInt32Storage": ("i4", "qint32")}
_QSCHEMES = ("per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams")


class _QScheme(NamedTuple):
    """torch.per_tensor_affine / torch.per_channel_affine, as a quantized tensor's scheme."""
    name: str


class LoadedQTensor(NamedTuple):
    """A quantized tensor of the file (``read(..., tensors=True)``): its integers, dtype name,
    scale and zero point (numbers per tensor, arrays per channel) and axis (None per tensor);
    checked where it becomes a minidl quantized tensor."""
    ints: np.ndarray
    dtype: str
    scale: object
    zero_point: object
    axis: object


def _rebuild_qtensor_kept(storage, offset, size, stride, quantizer_params, *_ignored):
    """Stand-in for torch._utils._rebuild_qtensor(storage, offset, size, stride,
    (qscheme, scale, zero_point) or (qscheme, scales, zero_points, axis), requires_grad,
    hooks)."""
    name = storage[3] if isinstance(storage, tuple) and len(storage) == 4 else None
    if name not in _QUANTIZED_STORAGES:
        raise pickle.UnpicklingError(f"_rebuild_qtensor: expected a quantized storage "
                                     f"({', '.join(_QUANTIZED_STORAGES)}), got {name!r}")
    ints, _ = _strided_copy(storage, offset, size, stride)
    if not isinstance(quantizer_params, tuple) or not quantizer_params \
            or not isinstance(quantizer_params[0], _QScheme):
        raise pickle.UnpicklingError("_rebuild_qtensor: expected (qscheme, ...) quantizer params")
    scheme, rest = quantizer_params[0].name, quantizer_params[1:]
    dtype = _QUANTIZED_STORAGES[name][1]
    if scheme == "per_tensor_affine" and len(rest) == 2:
        scale, zero_point = rest
        if not isinstance(scale, float) or isinstance(zero_point, bool) \
                or not isinstance(zero_point, int):
            raise pickle.UnpicklingError("_rebuild_qtensor: a per-tensor scale must be a float "
                                         "and its zero point an int")
        return LoadedQTensor(ints, dtype, scale, zero_point, None)
    if scheme == "per_channel_affine" and len(rest) == 3:
        scales, zero_points, axis = rest
        scales, zero_points = (np.asarray(v.array if isinstance(v, LoadedTensor) else v)
                               for v in (scales, zero_points))
        if zero_points.dtype.kind == "f":  # torch writes float-qparams (embedding) tensors so
            scheme = "per_channel_affine_float_qparams"
    if scheme == "per_channel_affine" and len(rest) == 3:
        if scales.dtype.kind != "f" or zero_points.dtype.kind not in "iu" \
                or isinstance(axis, bool) or not isinstance(axis, int):
            raise pickle.UnpicklingError("_rebuild_qtensor: per-channel scales must be floats, "
                                         "zero points integers and the axis an int")
        return LoadedQTensor(ints, dtype, scales.astype(np.float64),
                             zero_points.astype(np.int64), axis)
    if scheme == "per_channel_affine_float_qparams" and len(rest) == 3:  # embeddings
        scales, zero_points, axis = rest
        scales, zero_points = (np.asarray(v.array if isinstance(v, LoadedTensor) else v)
                               for v in (scales, zero_points))
        if scales.dtype.kind != "f" or zero_points.dtype.kind != "f" \
                or isinstance(axis, bool) or not isinstance(axis, int):
            raise pickle.UnpicklingError("_rebuild_qtensor: float-qparams scales and zero points "
                                         "must be floats and the axis an int")
        return LoadedQTensor(ints, dtype, scales.astype(np.float32),
                             zero_points.astype(np.float32), axis)
    raise pickle.UnpicklingError(f"_rebuild_qtensor: quantization scheme {scheme} with "
                                 f"{len(rest)} parameters is not supported (per-tensor and "
                                 "per-channel affine are)")


def _strided_copy(storage, offset, size, stride):
    """The tensor's elements (size, stride, offset in the storage) as a C-order array, and the
    storage's dtype code."""
    raw, code = storage[:2]
    # The pickle can hand any object it built as `storage`; as_strided below is only memory-safe
    # on a flat, contiguous, non-object array with the bounds checked.
    if not (isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.flags.c_contiguous
            and not raw.dtype.hasobject):
        raise pickle.UnpicklingError(f"tensor storage is not a storage of this checkpoint: {type(raw)}")
    offset = operator.index(offset)
    size, stride = tuple(map(operator.index, size)), tuple(map(operator.index, stride))
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
        raise pickle.UnpicklingError(f"bad tensor geometry: size {size}, stride {stride}, offset {offset}")
    if 0 in size:
        out = np.empty(size, dtype=raw.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= raw.size:
            raise pickle.UnpicklingError(f"tensor of size {size}, stride {stride}, offset {offset} "
                                         f"overruns its storage of {raw.size} elements")
        # only overlapping (stride-0) views have more elements than their storage; copying one
        # that a hostile file made huge would exhaust memory
        if math.prod(size) > raw.size:
            raise pickle.UnpicklingError(
                f"tensor of size {size} has more elements than its storage ({raw.size}): expanded "
                f"(stride-0) tensors are not supported, save tensor.contiguous() instead")
        view = np.lib.stride_tricks.as_strided(
            raw[offset:], shape=size, strides=[s * raw.itemsize for s in stride], writeable=False)
        out = view.copy()  # C order (np.ascontiguousarray would make a 0-d tensor 1-d)
    return out.astype(out.dtype.newbyteorder("="), copy=False), code  # big-endian -> native


def _v3_storage(storage, dtype):
    raw, _, byteorder = storage[:3]  # an UntypedStorage: bytes, to be viewed as `dtype`
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v3: expected a torch dtype, got {dtype!r}")
    dt = _numpy_dtype(dtype.code, byteorder)
    if raw.size % dt.itemsize:
        raise pickle.UnpicklingError(f"storage of {raw.size} bytes is not a whole number of {dtype.name}")
    return raw.view(dt), dtype.code


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *rest):
    return _rebuild_tensor(_v3_storage(storage, dtype), offset, size, stride, requires_grad,
                           hooks, rest[0] if rest else None)


def _rebuild_parameter(data, *_ignored):  # requires_grad, hooks and python state do not matter here
    return data


def _rebuild_from_type_v2(func, _new_type, args, _state):  # tensor subclasses: keep the plain data
    return func(*args)


class LoadedNested(NamedTuple):
    """A nested tensor of the file (``read(..., tensors=True)``): "jagged" with parts (values,
    offsets, lengths or None), its ragged dim and requires_grad, or "strided" with parts (the
    components); checked where it becomes a minidl nested tensor."""
    layout: str
    parts: tuple
    ragged_idx: int
    requires_grad: bool


class _NestedMarker(NamedTuple):
    """torch.nested's NestedTensor class or its _rebuild_njt, as _rebuild_from_type_v2's
    arguments."""
    name: str


class _Ignored:
    """torch._dynamo's dim markers on a saved jagged tensor's parts: read and dropped."""

    def __setstate__(self, state):
        pass


def _kept_array(t, what):
    if not isinstance(t, LoadedTensor):
        raise pickle.UnpicklingError(f"nested tensor: {what} must be a tensor, got {type(t)}")
    return t.array


def _rebuild_from_type_kept(func, new_type, args, _state):
    """torch._tensor._rebuild_from_type_v2 for ``read(..., tensors=True)``: torch.nested's
    jagged NestedTensor (``_rebuild_njt(kwargs)``) becomes a LoadedNested; any other subclass
    keeps its plain data, its Python attributes (``_state``) dropped."""
    if new_type != _NestedMarker("NestedTensor"):
        if isinstance(func, _NestedMarker):
            raise pickle.UnpicklingError("_rebuild_njt: expected the NestedTensor class")
        return func(*args)
    if func != _NestedMarker("_rebuild_njt") or not isinstance(args, tuple) or len(args) != 1 \
            or not isinstance(args[0], dict):
        raise pickle.UnpicklingError("a jagged NestedTensor must be rebuilt by _rebuild_njt("
                                     "constructor kwargs)")
    kw = args[0]
    lengths = kw.get("lengths")
    ragged_idx = kw.get("_ragged_idx", 1)
    if isinstance(ragged_idx, bool) or not isinstance(ragged_idx, int):
        raise pickle.UnpicklingError("a jagged NestedTensor's _ragged_idx must be an int")
    parts = (_kept_array(kw.get("values"), "values"), _kept_array(kw.get("offsets"), "offsets"),
             None if lengths is None else _kept_array(lengths, "lengths"))
    return LoadedNested("jagged", parts, ragged_idx, kw.get("requires_grad") is True)


def _rebuild_nested_kept(buffer, sizes, strides, offsets):
    """torch._utils._rebuild_nested_tensor(buffer, sizes, strides, storage_offsets): the
    strided layout's components, each a strided view of the flat buffer, copied."""
    buf = _kept_array(buffer, "the buffer")
    sizes, strides, offsets = (_kept_array(t, w) for t, w in ((sizes, "sizes"),
                                                               (strides, "strides"),
                                                               (offsets, "storage offsets")))
    if sizes.ndim != 2 or strides.shape != sizes.shape or offsets.shape != sizes.shape[:1] \
            or buf.ndim != 1 or sizes.dtype.kind not in "iu" or strides.dtype.kind not in "iu" \
            or offsets.dtype.kind not in "iu":
        raise pickle.UnpicklingError("_rebuild_nested_tensor: expected a flat buffer, (B, ndim) "
                                     "integer sizes and strides and B storage offsets")
    flat = np.ascontiguousarray(buf)
    comps = tuple(_strided_copy((flat, "nested"), int(o), tuple(int(v) for v in n),
                                tuple(int(v) for v in st))[0]
                  for n, st, o in zip(sizes, strides, offsets))
    return LoadedNested("strided", comps, 1, buffer.requires_grad)


def _allowed_globals(tensors=False):
    """Fresh objects for each load: BUILD can set attributes, even __defaults__, on a function
    that find_class returned, and nothing one file does may carry over to the next.
    ``tensors``: each tensor rebuilt as a LoadedTensor (see ``read``)."""
    def fresh(f):
        return types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__)

    if tensors:
        return _allowed_globals() | {
            ("torch._utils", "_rebuild_tensor_v2"): fresh(_rebuild_tensor_kept),
            ("torch._utils", "_rebuild_tensor_v3"): fresh(_rebuild_tensor_v3_kept),
            ("torch._utils", "_rebuild_parameter"): fresh(_rebuild_parameter_kept),
            ("torch._utils", "_rebuild_parameter_with_state"): fresh(_rebuild_parameter_kept),
            ("torch._utils", "_rebuild_sparse_tensor"): fresh(_rebuild_sparse_kept),
            ("torch.serialization", "_get_layout"): fresh(_get_layout),
            ("torch", "Size"): fresh(_rebuild_size),
            ("torch._utils", "_rebuild_qtensor"): fresh(_rebuild_qtensor_kept),
            ("torch._tensor", "_rebuild_from_type_v2"): fresh(_rebuild_from_type_kept),
            ("torch._utils", "_rebuild_nested_tensor"): fresh(_rebuild_nested_kept),
            ("torch.nested._internal.nested_tensor", "_rebuild_njt"): _NestedMarker(
                "_rebuild_njt"),
            ("torch.nested._internal.nested_tensor", "NestedTensor"): _NestedMarker(
                "NestedTensor"),
            ("__builtin__", "set"): set,  # torch's dim markers on a jagged tensor's parts
            ("torch._dynamo.decorators", "_DimRange"): type("_DimRange", (_Ignored,), {})} | {
            ("torch", name): _Storage(name, code)
            for name, (code, _) in _QUANTIZED_STORAGES.items()} | {
            ("torch", dtype): _DType(dtype, code) for code, dtype in _QUANTIZED_STORAGES.values()
        } | {("torch", name): _QScheme(name) for name in _QSCHEMES}
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): fresh(_rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v3"): fresh(_rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): fresh(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): fresh(_rebuild_parameter),
        ("torch._tensor", "_rebuild_from_type_v2"): fresh(_rebuild_from_type_v2),
        ("torch", "Tensor"): None,
        ("torch.nn.parameter", "Parameter"): None,
        ("torch", "device"): fresh(_rebuild_device),
    }
    for name, code in _STORAGE_DTYPES.items():
        allowed["torch", name] = _Storage(name, code)
    allowed["torch.storage", "UntypedStorage"] = allowed["torch", "UntypedStorage"]
    for name, code in _TORCH_DTYPES.items():
        allowed["torch", name] = _DType(name, code)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch ``data.pkl`` into numpy arrays; calls nothing outside _allowed_globals()."""

    def __init__(self, file, archive, prefix, path, budget, tensors=False):
        super().__init__(file)
        self.archive, self.prefix, self.path, self.budget = archive, prefix, path, budget
        self.byteorder = "<"
        if f"{prefix}/byteorder" in archive.namelist():
            order = archive.read(f"{prefix}/byteorder").strip()
            if order not in (b"little", b"big"):
                raise ValueError(f"checkpoint {path}: unknown byteorder {order!r}")
            self.byteorder = "<" if order == b"little" else ">"
        self.storages = {}  # key -> array: tensors that share a storage read it once
        self.allowed = _allowed_globals(tensors)

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[module, name]
        hint = ""
        if module.startswith("__torch__"):
            hint = " (this looks like a TorchScript archive; save the model's state_dict instead)"
        elif module == "torch" and _UNSUPPORTED_DTYPE.fullmatch(name):
            raise pickle.UnpicklingError(
                f"checkpoint {self.path} holds a tensor of dtype torch.{name}, which minidl does "
                f"not have (it reads {', '.join(sorted(_TORCH_DTYPES))}); convert it in torch "
                "first, e.g. tensor.float(), and save again")
        elif (module, name) in _UNSUPPORTED_REBUILDS:
            raise pickle.UnpicklingError(
                f"checkpoint {self.path} holds {_UNSUPPORTED_REBUILDS[module, name]}, which "
                "minidl cannot load; save dense (or sparse COO) tensors with data instead")
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from checkpoint {self.path}: only tensors and plain "
            f"containers are allowed{hint}; re-save just the weights with "
            f"torch.save(model.state_dict(), path)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"checkpoint {self.path}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _Storage):
            raise pickle.UnpicklingError(f"checkpoint {self.path}: {storage_type!r} is not a storage type")
        if key not in self.storages:
            entry = f"{self.prefix}/data/{key}"
            try:
                info = self.archive.getinfo(entry)
            except KeyError:
                raise ValueError(f"checkpoint {self.path} is missing storage {entry}") from None
            dtype = _numpy_dtype(storage_type.code, self.byteorder)
            if info.file_size != operator.index(numel) * dtype.itemsize:  # checked before reading it
                raise ValueError(f"checkpoint {self.path}: storage {entry} holds {info.file_size} bytes, "
                                 f"expected {numel} x {dtype.itemsize} (truncated or corrupt file?)")
            self.storages[key] = self.budget.read(self.archive, info).view(dtype)
        return self.storages[key], storage_type.code, self.byteorder, storage_type.name


def _load_zip(path, archive, budget, tensors=False):
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"checkpoint {path}: expected one <prefix>/data.pkl in the zip, found {pickles}")
    prefix = pickles[0].split("/")[0]
    with archive.open(pickles[0]) as f:
        return _RestrictedUnpickler(f, archive, prefix, path, budget, tensors).load()


def _load_legacy(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"PK":  # a zip whose central directory (at the end) is gone
        raise ValueError(f"checkpoint {path} is a truncated or corrupt zip archive")
    # legacy files are a bare pickle (protocol 2: b"\x80\x02"), or a tar before torch 0.4
    if magic[:1] != b"\x80" and not tarfile.is_tarfile(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        import torch  # optional: only the pre-1.6 (non-zip) format needs it
    except ImportError:
        raise ValueError(
            f"checkpoint {path} is in PyTorch's legacy (pre-1.6, non-zip) format, which needs torch "
            f"to read; install torch, or re-save it with a current torch: "
            f"torch.save(torch.load(path), new_path)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's errors do not always name the file
        raise ValueError(f"checkpoint {path}: torch.load(weights_only=True) failed: {e}") from e

    def to_numpy(x):
        if isinstance(x, torch.Tensor):
            x = x.detach()
            return (x.float() if x.dtype == torch.bfloat16 else x).numpy().copy()
        if isinstance(x, dict):
            return {k: to_numpy(v) for k, v in x.items()}
        return x
    return to_numpy(obj)


@contextlib.contextmanager
def read_errors(path):
    """Errors met while reading checkpoint ``path`` as ValueError or UnpicklingError naming it:
    a hostile or damaged data.pkl can call the stand-ins with nonsense arguments."""
    try:
        yield
    except (pickle.UnpicklingError, ValueError) as e:
        if path in str(e):
            raise
        kind = pickle.UnpicklingError if isinstance(e, pickle.UnpicklingError) else ValueError
        raise kind(f"checkpoint {path}: {e}") from e
    except (zipfile.BadZipFile, EOFError, OSError, TypeError, IndexError, AttributeError,
            KeyError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or truncated: {e!r}") from e


def read(path, max_bytes=None, *, tensors=False):
    """What a torch.save file at ``path`` holds (a zip with one data.pkl, or the legacy
    pickle), nesting kept, each tensor a NumPy array (bfloat16 widened to float32).
    ``tensors`` (minidl.load's reading): each tensor of a zip file a LoadedTensor instead, its
    bfloat16 kept and whether it requires grad (or was a Parameter) said; a torch dtype object
    is a _DType either way."""
    if isinstance(path, io.BytesIO):  # minidl.load of a file object (torch.load(buffer))
        name, size = "<file object>", len(path.getbuffer())
        if not zipfile.is_zipfile(path):
            raise ValueError(f"checkpoint {name}: not torch.save's zip format (a legacy "
                             "checkpoint loads from a path only)")
        with read_errors(name), zipfile.ZipFile(path) as archive:
            return _load_zip(name, archive, _Budget(name, max_bytes, size), tensors)
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        with read_errors(path), zipfile.ZipFile(path) as archive:
            return _load_zip(path, archive, _Budget(path, max_bytes), tensors)
    return _load_legacy(path)
