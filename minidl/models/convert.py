"""Read PyTorch checkpoints without torch, and convert them to minidl's ``.npz`` weights.

    python -m minidl.models.convert resnet50-0676ba61.pth resnet50.npz [--arch NAME|none]
    python -m minidl.models.convert --to-torch model.npz model.pt [--arch NAME]

The second form goes the other way: a minidl checkpoint (``minidl.save``'s .npz, or this
converter's) becomes a file ``torch.load`` reads, written without torch (``save_torch``).

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. So the
reader here never hands the pickle to ``pickle.load``: a restricted ``Unpickler`` resolves only
the handful of globals that rebuild tensors and plain containers, maps each to a NumPy
stand-in, and refuses every other global (``os.system``, ``builtins.eval``, ...) by name.

torch's zip layout (``torch.save`` since 1.6)::

    <prefix>/data.pkl        the object tree; tensors point at storages by persistent id
    <prefix>/data/<key>      one raw storage per key, all of its elements
    <prefix>/byteorder       "little" or "big" (absent in old files: little)

Only the legacy pre-1.6 format needs torch itself (``torch.load(weights_only=True)``).
At top level this module imports only the standard library, NumPy and minidl's .npz writer
(``minidl.serialization``); the model used for the shape check is imported when asked for.
"""

from __future__ import annotations

import argparse
import collections
import math
import operator
import os
import pickle
import sys
import tarfile
import types
import zipfile
from typing import NamedTuple

import numpy as np

# the one .npz writer (atomic, any key, umask mode) and torch.save's format, written the same way
from ..serialization import TREE, check_save_path, save_npz, save_torch

__all__ = ["load_torch_checkpoint", "load_safetensors", "check_state_dict", "convert", "to_torch",
           "save_npz", "save_torch", "main"]

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
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")  # wrappers training scripts use
# What a checkpoint may make us allocate, checked against the sizes its zip directory declares
# before anything is inflated: in all (convert() sets it from the model's expected shapes), and
# per compressed member relative to its compressed size (torch.save stores members
# uncompressed; a deflated 1 MB of zeros can declare 1 GB).
DEFAULT_MAX_BYTES = 8 << 30
MAX_INFLATE_RATIO = 50
_CHUNK = 1 << 20


class _Budget:
    """Bytes a checkpoint may still make us allocate; every storage is charged before it is read."""

    def __init__(self, path, max_bytes):
        self.path, self.left = path, DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
        self.file_bytes = os.path.getsize(path)

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


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor_v2: a strided view of the storage, copied."""
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
    out = out.astype(out.dtype.newbyteorder("="), copy=False)  # big-endian files -> native order
    return _widen_bfloat16(out) if code == "bf16" else out


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_ignored):
    raw, _, byteorder = storage  # an UntypedStorage: bytes, to be viewed as `dtype`
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v3: expected a torch dtype, got {dtype!r}")
    dt = _numpy_dtype(dtype.code, byteorder)
    if raw.size % dt.itemsize:
        raise pickle.UnpicklingError(f"storage of {raw.size} bytes is not a whole number of {dtype.name}")
    return _rebuild_tensor((raw.view(dt), dtype.code), offset, size, stride)


def _rebuild_parameter(data, *_ignored):  # requires_grad, hooks and python state do not matter here
    return data


def _rebuild_from_type_v2(func, _new_type, args, _state):  # tensor subclasses: keep the plain data
    return func(*args)


def _allowed_globals():
    """Fresh objects for each load: BUILD can set attributes, even __defaults__, on a function
    that find_class returned, and nothing one file does may carry over to the next."""
    fresh = lambda f: types.FunctionType(f.__code__, f.__globals__, f.__name__)  # noqa: E731
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
    }
    for name, code in _STORAGE_DTYPES.items():
        allowed["torch", name] = _Storage(name, code)
    allowed["torch.storage", "UntypedStorage"] = allowed["torch", "UntypedStorage"]
    for name, code in _TORCH_DTYPES.items():
        allowed["torch", name] = _DType(name, code)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch ``data.pkl`` into numpy arrays; calls nothing outside _allowed_globals()."""

    def __init__(self, file, archive, prefix, path, budget):
        super().__init__(file)
        self.archive, self.prefix, self.path, self.budget = archive, prefix, path, budget
        self.byteorder = "<"
        if f"{prefix}/byteorder" in archive.namelist():
            order = archive.read(f"{prefix}/byteorder").strip()
            if order not in (b"little", b"big"):
                raise ValueError(f"checkpoint {path}: unknown byteorder {order!r}")
            self.byteorder = "<" if order == b"little" else ">"
        self.storages = {}  # key -> array: tensors that share a storage read it once
        self.allowed = _allowed_globals()

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[module, name]
        hint = ""
        if module.startswith("__torch__"):
            hint = " (this looks like a TorchScript archive; save the model's state_dict instead)"
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
        return self.storages[key], storage_type.code, self.byteorder


def _read_npz(archive, path, budget):
    """{name: array} of an .npz whose members are charged against ``budget`` before reading;
    each array's header must agree with its member's size (no allocation the file cannot fill)."""
    out = {}
    fmt = np.lib.format
    for info in archive.infolist():
        budget.charge(info)
        with archive.open(info) as member:
            version = fmt.read_magic(member)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read_header(member)
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise ValueError(f"checkpoint {path}: array {info.filename} declares shape {shape} "
                                 f"of {dtype}, more than its {info.file_size} bytes")
        with archive.open(info) as member:
            out[info.filename[:-4]] = fmt.read_array(member, allow_pickle=False)
    return out


def _read_minidl_save(path, archive, budget):
    """What minidl.save wrote (its members charged against ``budget`` first), Tensors as numpy
    arrays and bfloat16 as float32, as for torch's files."""
    from ..serialization import load
    from ..tensor import Tensor

    for info in archive.infolist():
        budget.charge(info)

    def plain(obj):
        if isinstance(obj, Tensor):
            obj = obj.numpy()
        if isinstance(obj, np.ndarray) and obj.dtype.name == "bfloat16":
            return obj.astype(np.float32)
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        return obj

    return plain(load(path))


def _load_zip(path, archive, budget):
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"checkpoint {path}: expected one <prefix>/data.pkl in the zip, found {pickles}")
    prefix = pickles[0].split("/")[0]
    with archive.open(pickles[0]) as f:
        return _RestrictedUnpickler(f, archive, prefix, path, budget).load()


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


def _as_state_dict(obj, path):
    """Unwrap {'state_dict': {...}, 'epoch': ...} and DataParallel's 'module.' prefix."""
    while isinstance(obj, dict) and not all(isinstance(v, np.ndarray) for v in obj.values()):
        inner = [k for k in _STATE_DICT_KEYS if isinstance(obj.get(k), dict)]
        if not inner:
            break
        obj = obj[inner[0]]
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of tensors")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad or not obj:
        raise ValueError(f"checkpoint {path} is not a state_dict: entries that are not tensors: "
                         f"{', '.join(bad) or 'none, it is empty'}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_safetensors(path):
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'."""
    if path.lower().endswith(".safetensors"):
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return (len(head) == 9 and head[8:9] == b"{"
            and 2 <= int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8)


def load_safetensors(path):
    """Read a ``.safetensors`` file with the safetensors package's NumPy API -> {name: ndarray}.

    safetensors holds no code, only a JSON header and raw arrays. bfloat16 arrays become float32
    (exactly), as in ``.pth`` files.
    """
    path = os.fspath(path)
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError as e:
        raise RuntimeError(f"reading {path} needs the safetensors package, which is not installed: "
                           f"pip install 'minidl[safetensors]' (or pip install safetensors)") from e
    try:
        import ml_dtypes  # noqa: F401  (registers numpy's name for bfloat16, which safetensors asks for)
    except ImportError:
        pass
    try:
        state = load_file(path)
    except (SafetensorError, TypeError, ValueError, OSError) as e:
        raise ValueError(f"checkpoint {path} is not a readable .safetensors file: {e}") from e
    out = {}
    for k, v in state.items():
        if v.dtype.name == "bfloat16":
            v = v.astype(np.float32)
        out[k] = v
    return _as_state_dict(out, path)


def load_torch_checkpoint(path, max_bytes=None):
    """Read a PyTorch checkpoint (zip format, legacy format, ``.npz`` or ``.safetensors``)
    -> {name: ndarray}.

    The zip format is read without torch and without running code from the file. Arrays keep
    their dtype, except bfloat16, which becomes float32. Memory follows what the file holds,
    never what it declares: a zip's storages (and an .npz's arrays) are charged against
    ``max_bytes`` (default ``DEFAULT_MAX_BYTES``) and a compressed one may not inflate more than
    ``MAX_INFLATE_RATIO`` times, both checked before it is read; each is streamed into one
    buffer of its size.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if _is_safetensors(path):
        return load_safetensors(path)
    return _as_state_dict(read_torch_file(path, max_bytes), path)


def read_torch_file(path, max_bytes=None):
    """What a torch.save file holds, nesting kept (dicts, lists, numbers, strings), with each
    tensor as a NumPy array: ``minidl.load`` of a PyTorch file. Read as load_torch_checkpoint
    reads (no torch, no code from the file, the same memory budget); an .npz gives its dict."""
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                budget = _Budget(path, max_bytes)
                if names and all(n.endswith(".npy") for n in names):
                    return _read_npz(archive, path, budget)
                if TREE in names and all(n.endswith(".npy") for n in names if n != TREE):
                    obj = _read_minidl_save(path, archive, budget)
                else:
                    obj = _load_zip(path, archive, budget)
        except (pickle.UnpicklingError, ValueError) as e:
            if path in str(e):
                raise
            kind = pickle.UnpicklingError if isinstance(e, pickle.UnpicklingError) else ValueError
            raise kind(f"checkpoint {path}: {e}") from e
        except (zipfile.BadZipFile, EOFError, OSError, TypeError, IndexError, AttributeError, KeyError) as e:
            # a hostile or damaged data.pkl can call the stand-ins with nonsense arguments
            raise ValueError(f"checkpoint {path} is corrupt or truncated: {e!r}") from e
    else:
        obj = _load_legacy(path)
    return obj


def check_state_dict(expected, got):
    """Compare {name: shape} with {name: array}; return readable problems, empty when they fit."""
    problems = [f"missing: {k} {tuple(s)}" for k, s in expected.items() if k not in got]
    problems += [f"unexpected: {k} {tuple(np.shape(v))}" for k, v in got.items() if k not in expected]
    problems += [f"shape mismatch: {k}: checkpoint has {tuple(np.shape(got[k]))}, model expects {tuple(s)}"
                 for k, s in expected.items() if k in got and tuple(np.shape(got[k])) != tuple(s)]
    return problems


def _expected_shapes(arch):
    from minidl.models import list_models  # imported late: the converter must not need the models

    if arch not in list_models():
        raise ValueError(f"unknown arch {arch!r}; choose one of {list_models() + ['none']}")
    from minidl.models import get_model

    import warnings

    with warnings.catch_warnings():  # GoogLeNet/Inception's FutureWarning about init_weights
        warnings.simplefilter("ignore", FutureWarning)
        model_state = get_model(arch, weights=None, num_classes=1000).state_dict()
    return {k: tuple(v.shape) for k, v in model_state.items()
            if not k.endswith("num_batches_tracked")}


def _remap(arch, state, expected):
    """Old key spellings of torchvision's published files -> today's (DenseNet's); old layouts
    a model rebuilds itself for (MNASNet's version-1 stem) -> that model's shapes."""
    if arch.startswith("densenet"):
        from minidl.models import DenseNet  # through the package, as list_models above

        return DenseNet.remap_state_dict(state), expected
    if arch.startswith("mnasnet"):
        from minidl.models import get_model

        model = get_model(arch, weights=None, num_classes=1000)
        state = model.remap_state_dict(state)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                    if not k.endswith("num_batches_tracked")}
    return state, expected


def _same_file(a, b):
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def convert(in_path, out_path, arch="resnet50"):
    """Checkpoint -> .npz. With an arch, names and shapes must match that minidl model exactly,
    and the checkpoint may not make the reader allocate more than 4 x float64 of those shapes
    (room for a training checkpoint's optimizer state beside the weights)."""
    if _same_file(in_path, out_path):
        raise ValueError(f"output {out_path} is the input checkpoint itself; writing it would "
                         "destroy the source: choose another output path")
    check_save_path(out_path, make_folders=True)  # before the read, not after it
    expected = _expected_shapes(arch) if arch != "none" else None
    max_bytes = None if expected is None else \
        4 * 8 * sum(math.prod(s) for s in expected.values()) + (1 << 20)
    state = {k: v for k, v in load_torch_checkpoint(in_path, max_bytes=max_bytes).items()
             if not k.endswith("num_batches_tracked")}  # minidl's BatchNorm keeps no step counter
    if expected is not None:
        state, expected = _remap(arch, state, expected)
        problems = check_state_dict(expected, state)
        if problems:
            raise ValueError(f"checkpoint {in_path} does not fit minidl's {arch} "
                             f"({len(problems)} problems):\n  " + "\n  ".join(problems))
    save_npz(state, out_path)
    return state


def to_torch(in_path, out_path, arch="none"):
    """minidl checkpoint (what ``minidl.save`` or ``convert`` wrote) -> ``out_path`` in
    torch.save's format, holding the same object (``save_torch``); returns that object. With
    an arch, its state dict (the checkpoint itself, or its "model"/"state_dict" entry) must
    match that minidl model's names and shapes, which are torchvision's."""
    from ..serialization import load

    if _same_file(in_path, out_path):
        raise ValueError(f"output {out_path} is the input checkpoint itself; writing it would "
                         "destroy the source: choose another output path")
    check_save_path(out_path, make_folders=True)  # before the read, not after it
    expected = _expected_shapes(arch) if arch != "none" else None
    obj = load(in_path)
    if expected is not None:
        state = obj
        while isinstance(state, dict) and any(isinstance(state.get(k), dict) for k in _STATE_DICT_KEYS):
            state = next(state[k] for k in _STATE_DICT_KEYS if isinstance(state.get(k), dict))
        if not isinstance(state, dict):
            raise ValueError(f"checkpoint {in_path} holds a {type(state).__name__}, not a state dict")
        problems = check_state_dict(expected, {k: v for k, v in state.items()
                                               if not str(k).endswith("num_batches_tracked")})
        if problems:
            raise ValueError(f"checkpoint {in_path} does not fit minidl's {arch} "
                             f"({len(problems)} problems):\n  " + "\n  ".join(problems))
    save_torch(obj, out_path, make_folders=True)
    return obj


def _arrays_in(obj):
    """The arrays and Tensors in a checkpoint's nesting, for the summary line."""
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _arrays_in(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in _arrays_in(v)]
    return [obj] if hasattr(obj, "shape") and hasattr(obj, "dtype") else []


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minidl.models.convert",
        description="Convert a PyTorch checkpoint (.pth/.pt, zip or legacy format, "
                    ".safetensors, or .npz) to minidl .npz weights; with --to-torch, a minidl "
                    "checkpoint to a file torch.load reads.")
    parser.add_argument("input", help="PyTorch checkpoint (with --to-torch: minidl's .npz)")
    parser.add_argument("output", help="where to write the .npz (with --to-torch: the .pt)")
    parser.add_argument("--arch", default=None, metavar="NAME",
                        help="check names and shapes against this minidl model: one of "
                             "minidl.models.list_models(), or none (default: resnet50; none "
                             "with --to-torch)")
    parser.add_argument("--to-torch", action="store_true",
                        help="write torch.save's format (read by torch.load, weights_only=True "
                             "too) from a checkpoint minidl.save or this converter wrote")
    args = parser.parse_args(argv)
    arch = args.arch or ("none" if args.to_torch else "resnet50")
    try:
        if args.to_torch:
            arrays = _arrays_in(to_torch(args.input, args.output, arch=arch))
        else:
            arrays = list(convert(args.input, args.output, arch=arch).values())
    except (OSError, ValueError, TypeError, pickle.UnpicklingError, ImportError, RuntimeError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    total = sum(math.prod(a.shape) for a in arrays)
    print(f"wrote {len(arrays)} tensors ({total:,} values) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
