"""save/load as .npz, written to a temporary file and renamed into place.

``minidl.save(obj, path)`` takes what ``torch.save`` is given in practice (a state dict, a
Tensor, a checkpoint dict nesting state dicts, numbers and lists) without pickle: each array is
one .npy member, named by its path in ``obj``, and one JSON member (``TREE``) records the
structure and which arrays were Tensors, so ``load`` gives back the same object. The PyTorch
converter writes flat {name: array} files through ``save_npz``; ``load`` reads those (and
np.savez files) as {name: numpy array}.

One atomic writer (``_write_members``) serves both. It
writes the zip members itself instead of calling ``np.savez(path, **arrays)``, whose own keyword
arguments (``file``, ``allow_pickle``) collide with keys of those names. ``load`` reads the
members back by their exact names, so any string key round-trips (``"a/b"``, ``"x.npy"``,
non-ASCII). Every value is checked before the temporary file is created: a bad value raises
and leaves the previous checkpoint untouched.

``save(obj, path, format="torch")`` (``save_torch``) writes torch.save's zip instead, for a
PyTorch user: its data.pkl is written opcode by opcode, naming torch's rebuild functions without
importing torch, and torch.load(weights_only=True) reads it. The same atomic writer serves it.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import secrets
import struct
import zipfile

import numpy as np

_SUFFIX = ".npy"


class SaveFolderError(FileNotFoundError, RuntimeError):
    """``save`` to a path whose folder does not exist (PyTorch's RuntimeError "Parent directory
    ... does not exist"); raised before anything is written."""


def _host_array(name, value, raw_bfloat16=False):
    """``value`` as a numpy array that .npz stores and reads back unchanged, or a TypeError
    naming the key. ``raw_bfloat16``: let ml_dtypes' bfloat16 through (``save`` records it by
    name and stores its bits)."""
    from .backend import to_numpy
    from .tensor import Tensor

    if not isinstance(name, str):
        raise TypeError(f"save: keys must be strings, got {name!r} ({type(name).__name__})")
    if "\0" in name:
        raise ValueError(f"save: key {name!r} contains a NUL character, which a zip name cannot hold")
    if isinstance(value, Tensor):
        array = value.numpy()
    elif isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("cupy"):
        array = to_numpy(value)  # host arrays whatever device the value is on
    else:
        raise TypeError(f"save: value of {name!r} is a {type(value).__name__}, not an array or "
                        "Tensor (wrap numbers with numpy.asarray)")
    if array.dtype.hasobject:
        raise TypeError(f"save: value of {name!r} holds Python objects (dtype {array.dtype}); "
                        "only numeric, bool and string arrays can be saved")
    if array.dtype.kind == "V" and not (raw_bfloat16 and array.dtype.name == "bfloat16"):
        # e.g. ml_dtypes' bfloat16: the .npy header records it as raw bytes ('|V2'); a
        # structured (record) dtype is written but not read back without pickle
        raise TypeError(f"save: value of {name!r} has dtype {array.dtype}, which .npz cannot "
                        "record; cast it (e.g. .astype('float32')) first")
    return array


def _is_sparse(t):
    from .backend.sparse import SparseCOO

    return type(t.data) is SparseCOO


def _is_compressed(t):
    from .backend.sparse_compressed import SparseCompressed

    return type(t.data) is SparseCompressed


def _compressed_tensor(layout, compressed, plain, values, shape):
    """A sparse compressed tensor read from a file, its invariants checked (the
    constructor's checks: a damaged file cannot make an index point outside the shape)."""
    from . import sparse_compressed
    from .tensor import Tensor

    lay = getattr(sparse_compressed, str(layout), None)
    if str(layout) not in ("sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc"):
        raise ValueError(f"unknown sparse layout {layout!r}")
    return sparse_compressed.sparse_compressed_tensor(
        Tensor(np.asarray(compressed)), Tensor(np.asarray(plain)), Tensor(np.asarray(values)),
        tuple(int(n) for n in shape), layout=lay)


def _is_quantized(value):
    """A minidl quantized tensor (ao.quantization.QTensor)."""
    from .ao.quantization.qtensor import QTensor

    return isinstance(value, QTensor)


def _is_qdtype(value):
    from .ao.quantization.qtensor import QDtype

    return isinstance(value, QDtype)


def _is_dtype(value, where):
    """Whether ``value`` is a dtype object (minidl.float32 & co: numpy dtypes) saved as a
    value; one torch has no name for is refused, naming where it is."""
    if not isinstance(value, np.dtype):
        return False
    if value.name not in _TORCH_STORAGES:
        raise TypeError(f"save: {where} is the dtype {value}, which torch has no dtype for; "
                        f"dtypes saved as values must be one of {sorted(_TORCH_STORAGES)}")
    return True


def _is_device(value):
    """minidl.device, or Tensor.device (a DeviceName: a str that is a device too)."""
    from .backend import DeviceName, device

    return isinstance(value, (device, DeviceName))


def _sparse_tensor(indices, values, shape, coalesced):
    """A sparse COO tensor read from a file, its invariants checked (sparse_coo_tensor's
    checks: a damaged file cannot make an index point outside the shape)."""
    from .sparse import sparse_coo_tensor
    from .tensor import Tensor

    t = sparse_coo_tensor(Tensor(np.asarray(indices)), Tensor(np.asarray(values)),
                          tuple(int(n) for n in shape))
    t.data.coalesced = bool(coalesced) and _sorted(t.data)
    return t


def _sorted(data):
    from .backend.sparse import linear_index

    lin = linear_index(data.indices, data.shape[:data.sparse_dim])
    return data.nnz <= 1 or bool((lin[1:] > lin[:-1]).all())


def _tmp_prefix(path):
    return f".{os.path.basename(path)}.tmp-"


def _remove_stale_temporaries(path):
    """Temporaries of this checkpoint left by a process that died mid-write (kill -9). Each
    carries the writer's process id; only those whose process is gone are removed, so a
    concurrent writer's file is left alone."""
    directory, prefix = os.path.dirname(path), _tmp_prefix(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".npz")):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (owned by someone else), or we cannot tell: keep its file
    return True


def new_temporary(directory, prefix, suffix, binary=True):
    """(path, open file) of a new file in ``directory`` to write and then rename over its
    destination. Its mode follows the umask, like any file the user writes: tempfile.mkstemp's
    0600 would stay on the result and keep other users from reading it."""
    path = os.path.join(os.fspath(directory),
                        f"{prefix}{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    return path, (open(path, "xb") if binary else open(path, "x", encoding="utf-8"))


def save_npz(arrays, path):
    """Write {name: array or Tensor} to ``path`` (.npz) atomically: a crash mid-write leaves the
    previous file intact. The file's mode follows the umask, like any file the user writes.
    Missing folders on the way to ``path`` are created (the converter's output)."""
    checked = {name: _host_array(name, value) for name, value in arrays.items()}
    _write_members(checked, path, make_folders=True)


def check_save_path(path, make_folders=False):
    """The absolute ``path`` a checkpoint may be written to, or an error naming it: a
    directory, a parent that is a file, or (``make_folders`` False, as torch.save) a parent
    folder that does not exist. Nothing is written here."""
    if _is_writable_file(path):
        return path  # torch.save(obj, buffer): written straight into it, as torch does
    try:
        path = os.path.abspath(os.fspath(path))
    except TypeError:
        raise TypeError(f"save: the path must be a str, os.PathLike or a binary file object, got "
                        f"{type(path).__name__}") from None
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: {path} is a directory; give a file path (e.g. model.npz)")
    parent = os.path.dirname(path)
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            raise NotADirectoryError(f"save: cannot write {path}: {parent} is a file, not a "
                                     "folder")
        if not make_folders:
            raise SaveFolderError(f"save: cannot write {path}: its folder {parent} does not "
                                  "exist (create it first, e.g. os.makedirs)")
        parent = os.path.dirname(parent)
    return path


def _write_members(checked, path, extra=None, make_folders=False):
    """The atomic write: {name: numpy array} as name.npy members (and ``extra`` {member name:
    bytes}) into a temporary beside ``path``, fsynced, then renamed over it."""
    def fill(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in checked.items():
                with zf.open(name + _SUFFIX, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
            for name, data in (extra or {}).items():
                zf.writestr(name, data)

    _write_atomically(path, fill, make_folders)


def _write_atomically(path, fill, make_folders=False):
    """``fill(file)`` writes the checkpoint into a temporary beside ``path``; it is fsynced and
    renamed over ``path``. Anything that goes wrong on the way removes the temporary and leaves
    whatever was at ``path`` as it was."""
    path = check_save_path(path, make_folders)
    if _is_writable_file(path):  # no rename to make atomic: the caller owns the file object
        fill(path)
        return
    directory = os.path.dirname(path)
    if make_folders:
        os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(path)
    # not tempfile.mkstemp: its 0600 mode would stay on the result; open(.., "x") honours umask
    tmp = os.path.join(directory, f"{_tmp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}.npz")
    try:
        with open(tmp, "xb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _is_writable_file(f):
    """A binary file object ``save`` writes into (io.BytesIO, open(path, "wb")), as torch.save
    takes one: it writes and can tell its position (the zip writer needs it)."""
    return not isinstance(f, (str, bytes, os.PathLike)) and callable(getattr(f, "write", None)) \
        and callable(getattr(f, "tell", None))


def _fsync_directory(directory):
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The member that records the saved object's structure. Its name does not end in ".npy", so
# it can never be an array's member; files without it (older minidl, np.savez, the converter)
# load as a flat {name: array} dict.
TREE = "minidl-structure.json"
_SCALARS = (bool, int, float, str, type(None))


class _Writer:
    """Walks the object ``save`` is given: arrays and Tensors become .npy members named by
    their path in the object (``model/conv1.weight``), everything else goes into one JSON tree
    that says what each position holds, so ``load`` rebuilds the same nesting and types."""

    def __init__(self):
        self.members = {}  # member name (without .npy) -> numpy array

    def _member(self, path, array):
        name = "/".join(path) or "tensor"
        if name in self.members or name == TREE:
            name = f"{name}#{len(self.members)}"
        self.members[name] = array
        return name

    def _nested(self, value, path):
        """A nested tensor: its parts (jagged: values, offsets, lengths; strided: the
        components) as tensors, its layout and ragged dim in the tree."""
        if value.is_jagged:
            lengths = value.lengths()
            return {"layout": "jagged", "ragged_idx": int(value._ragged_idx),
                    "leaf": bool(value._leaf),
                    "values": self.node(value.values(), path + ["values"]),
                    "offsets": self.node(value.offsets(), path + ["offsets"]),
                    "lengths": None if lengths is None else self.node(lengths,
                                                                      path + ["lengths"])}
        return {"layout": "strided", "leaf": bool(value._leaf),
                "components": [self.node(c, path + [str(i)])
                               for i, c in enumerate(value.unbind())]}

    def node(self, value, path):
        from .tensor import Tensor

        where = "/".join(path) or "the object"
        if _is_device(value):  # loads as what it was: minidl.device or Tensor.device's name
            return {"device": str(value), "name": isinstance(value, str)}
        if isinstance(value, _SCALARS):
            if isinstance(value, str) and "\0" in value:
                raise ValueError(f"save: {where} is a string holding a NUL character")
            return {"value": value}
        if isinstance(value, Tensor) and getattr(value, "is_nested", False) is True:
            return {"nested": self._nested(value, path)}
        if _is_quantized(value):  # its integers, dtype, scale(s), zero point(s), axis
            per_channel = value._axis is not None
            qparams = [self.node(np.asarray(v), path + [k]) if per_channel else {"value": v}
                       for k, v in (("scale", float(value._scale) if not per_channel else
                                     value._scale), ("zero_point", value._zero_point
                                                     if per_channel else int(value._zero_point)))]
            return {"qtensor": {"ints": self.node(value._ints, path + ["int_repr"]),
                                "dtype": value.dtype.name, "scale": qparams[0],
                                "zero_point": qparams[1], "axis": value._axis}}
        if _is_qdtype(value):
            return {"qdtype": value.name}
        if _is_dtype(value, where):  # minidl.float16 & co as values (a torch file's dtypes)
            return {"dtype_value": value.name}
        if isinstance(value, Tensor) and _is_compressed(value):  # CSR & co: their parts
            data = value.data
            node = {"compressed": {
                "layout": data.layout, "shape": list(data.shape),
                **{k: self.node(Tensor(getattr(data, k)), path + [k])
                   for k in ("compressed", "plain", "values")}}}
            if value.requires_grad:
                node["requires_grad"] = True
            return node
        if isinstance(value, Tensor) and _is_sparse(value):  # indices, values, shape
            data = value.data
            node = {"sparse": {"indices": self.node(Tensor(data.indices), path + ["indices"]),
                               "values": self.node(Tensor(data.values), path + ["values"]),
                               "shape": list(data.shape), "coalesced": data.coalesced}}
            if value.requires_grad:
                node["requires_grad"] = True
            return node
        if isinstance(value, Tensor) or isinstance(value, (np.ndarray, np.generic)) \
                or type(value).__module__.startswith("cupy"):
            array = _host_array(where, value, raw_bfloat16=True)
            node = {"tensor" if isinstance(value, Tensor) else "array": None}
            if array.dtype.kind == "V":  # bfloat16: its bits as uint16, the name in the tree
                node["dtype"] = str(array.dtype)
                array = array.view(np.uint16)
            if isinstance(value, np.generic):
                node["scalar"] = True
            if isinstance(value, Tensor) and value.requires_grad:
                node["requires_grad"] = True
            key = "tensor" if isinstance(value, Tensor) else "array"
            node[key] = self._member(path, array)
            return node
        if isinstance(value, dict):
            items = []
            for k, v in value.items():
                if not isinstance(k, _SCALARS):
                    raise TypeError(f"save: key {k!r} of {where} is a {type(k).__name__}; keys "
                                    "must be str, int, float, bool or None")
                items.append([k, self.node(v, path + [str(k)])])
            return {"dict": items}
        if isinstance(value, (list, tuple)):
            kind = "tuple" if isinstance(value, tuple) else "list"
            return {kind: [self.node(v, path + [str(i)]) for i, v in enumerate(value)]}
        raise TypeError(f"save: {where} is a {type(value).__name__}; minidl.save stores Tensors, "
                        "arrays, numbers, strings, None, and dicts, lists and tuples of them "
                        "(it never pickles, so a file cannot run code when loaded)")


# ---- torch.save's zip format, for handing a checkpoint to PyTorch ------------------------------
# numpy dtype name -> the storage class torch 2.x names in data.pkl's persistent ids
_TORCH_STORAGES = {
    "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage", "int8": "CharStorage", "int16": "ShortStorage",
    "int32": "IntStorage", "int64": "LongStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
    "complex64": "ComplexFloatStorage", "complex128": "ComplexDoubleStorage",
}
# data.pkl names only these, collections.OrderedDict and torch._utils' _rebuild_tensor_v2 and
# _rebuild_parameter: globals torch.load(weights_only=True) allows
_QUANTIZED_STORAGES = {"qint8": "QInt8Storage", "quint8": "QUInt8Storage",
                       "qint32": "QInt32Storage"}
_ARCHIVE = "archive"  # the zip's top folder: torch names it after the file and reads any name
_ALIGN = 64  # each storage starts on a 64-byte boundary of the file, as torch writes them


def _tuple_end(n):
    return {0: pickle.EMPTY_TUPLE, 1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}.get(
        n, pickle.TUPLE)


class _TorchPickle:
    """data.pkl of a torch.save file, written opcode by opcode in pickle protocol 2 (as
    torch.save writes it). A Pickler would import a global's module to check its name, and
    torch must not be needed to name ``torch._utils._rebuild_tensor_v2``; only opcodes that
    torch.load(weights_only=True) reads are used. The walk checks every value and collects the
    storages (host arrays, C order, little-endian) before anything is written."""

    def __init__(self):
        self.out = bytearray(pickle.PROTO + b"\x02")
        self.memo = {}      # (module, name) -> memo slot of its GLOBAL
        self.storages = []  # arrays; storage key i is str(i)
        self.shared = {}    # id(source array) -> key: one array saved twice is one storage
        self.keep = []      # the source arrays, so that their ids stay theirs during the walk
        self.open = set()   # ids of the containers being walked (one inside itself)

    def write_global(self, module, name):
        slot = self.memo.get((module, name))
        if slot is None:
            self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")
            slot = self.memo[module, name] = len(self.memo)
            self.out += (pickle.BINPUT + bytes([slot]) if slot < 256
                         else pickle.LONG_BINPUT + struct.pack("<I", slot))
        else:
            self.out += (pickle.BINGET + bytes([slot]) if slot < 256
                         else pickle.LONG_BINGET + struct.pack("<I", slot))

    def write_int(self, value, where):
        if 0 <= value < 256:
            self.out += pickle.BININT1 + bytes([value])
        elif 0 <= value < 65536:
            self.out += pickle.BININT2 + struct.pack("<H", value)
        elif -(1 << 31) <= value < (1 << 31):
            self.out += pickle.BININT + struct.pack("<i", value)
        else:  # two's complement, little-endian, in as few bytes as keep the sign
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            if len(data) > 255:  # LONG4 is not among the opcodes weights_only reads
                raise ValueError(f"save: {where} is an integer of {value.bit_length()} bits; "
                                 "format='torch' stores integers of up to 2039 bits")
            self.out += pickle.LONG1 + bytes([len(data)]) + data

    def write_str(self, value):
        data = value.encode("utf-8", "surrogatepass")
        self.out += pickle.BINUNICODE + struct.pack("<I", len(data)) + data

    def write_ints(self, values, where):
        if len(values) > 3:
            self.out += pickle.MARK
        for v in values:
            self.write_int(v, where)
        self.out += _tuple_end(len(values))

    def write_empty_ordered_dict(self):  # OrderedDict(): the hooks argument of torch's rebuilds
        self.write_global("collections", "OrderedDict")
        self.out += pickle.EMPTY_TUPLE + pickle.REDUCE

    def write_tensor(self, value, where):
        from .tensor import Tensor

        source = value.data if isinstance(value, Tensor) else value
        # CUDA -> host, Python objects refused; a NUL in a key is fine here (no zip name)
        array = _host_array(where.replace("\0", "\\0"), value, raw_bfloat16=True)
        storage = _TORCH_STORAGES.get(array.dtype.name)
        if storage is None or array.dtype.fields is not None:
            raise TypeError(f"save: {where} has dtype {array.dtype}, which format='torch' cannot "
                            f"store; it stores {', '.join(_TORCH_STORAGES)} (cast it first)")
        key = self.shared.get(id(source))
        if key is None:
            raw = array.view(np.uint16) if array.dtype.name == "bfloat16" else array
            # C order and little-endian, as the byteorder record says: a copy only where needed
            raw = np.ascontiguousarray(raw, dtype=raw.dtype.newbyteorder("<"))
            key = self.shared[id(source)] = str(len(self.storages))
            self.storages.append(raw)
            self.keep.append(source)
        requires_grad = bool(isinstance(value, Tensor) and value.requires_grad)
        # nn.Parameter, known by name: nn sits above this module
        parameter = isinstance(value, Tensor) and any(
            cls.__name__ == "Parameter" for cls in type(value).__mro__)
        if parameter:  # torch._utils._rebuild_parameter(tensor, requires_grad, hooks)
            self.write_global("torch._utils", "_rebuild_parameter")
            self.out += pickle.MARK
        # torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks),
        # the storage given by its persistent id ("storage", type, key, location, numel)
        self.write_global("torch._utils", "_rebuild_tensor_v2")
        self.out += pickle.MARK + pickle.MARK
        self.write_storage_view(storage, key, array.shape, array.size, where)
        self.out += pickle.NEWTRUE if requires_grad and not parameter else pickle.NEWFALSE
        self.write_empty_ordered_dict()
        self.out += pickle.TUPLE + pickle.REDUCE
        if parameter:
            self.out += pickle.NEWTRUE if requires_grad else pickle.NEWFALSE
            self.write_empty_ordered_dict()
            self.out += pickle.TUPLE + pickle.REDUCE

    def write_nested(self, value, path):
        """A nested tensor as torch.save writes it: the jagged layout as
        torch._tensor._rebuild_from_type_v2(_rebuild_njt, NestedTensor, (constructor kwargs,),
        {}), the strided one as torch._utils._rebuild_nested_tensor(buffer, sizes, strides,
        storage offsets), both of which torch.load(weights_only=True) reads."""
        if value.is_jagged:
            module = "torch.nested._internal.nested_tensor"
            self.write_global("torch._tensor", "_rebuild_from_type_v2")
            self.out += pickle.MARK
            self.write_global(module, "_rebuild_njt")
            self.write_global(module, "NestedTensor")
            lengths = value.lengths()
            self.write({"values": value.values().detach(), "offsets": value.offsets(),
                        "lengths": None if lengths is None else lengths,
                        "_ragged_idx": int(value._ragged_idx), "_metadata_cache": {},
                        "requires_grad": bool(value.requires_grad)}, path)
            self.out += pickle.TUPLE1 + pickle.EMPTY_DICT + pickle.TUPLE + pickle.REDUCE
            return
        comps = [c.detach() for c in value.unbind()]
        sizes = [list(c.shape) for c in comps]
        strides = [[int(np.prod(n[i + 1:], dtype=np.int64)) for i in range(len(n))]
                   for n in sizes]
        starts = np.cumsum([0] + [c.numel() for c in comps])[:-1]
        ndim = comps[0].ndim if comps else 0
        buffer = (np.concatenate([np.asarray(_host_array("/".join(path), c)).reshape(-1)
                                  for c in comps]) if comps else np.zeros(0, np.float32))
        self.write_global("torch._utils", "_rebuild_nested_tensor")
        self.out += pickle.MARK
        where = "/".join(path) or "the object"
        from .tensor import Tensor

        self.write_tensor(Tensor(buffer, requires_grad=value.requires_grad), where)
        for table in (sizes, strides):
            self.write_tensor(np.array(table, dtype=np.int64).reshape(len(comps), ndim), where)
        self.write_tensor(np.asarray(starts, dtype=np.int64), where)
        self.out += pickle.TUPLE + pickle.REDUCE

    def write_storage_view(self, storage, key, shape, numel, where):
        """A rebuild function's first arguments: the storage by its persistent id ("storage",
        torch.<storage>, key, "cpu", numel), offset 0, the size and its C-contiguous strides in
        elements, as torch.save writes them."""
        self.write_str("storage")
        self.write_global("torch", storage)
        self.write_str(key)
        self.write_str("cpu")
        self.write_int(numel, where)
        self.out += pickle.TUPLE + pickle.BINPERSID
        stride, step = [], 1
        for n in reversed(shape):
            stride.insert(0, step)
            step *= max(n, 1)
        self.write_int(0, where)
        self.write_ints(shape, where)
        self.write_ints(stride, where)

    def write_sparse(self, value, where):
        """torch._utils._rebuild_sparse_tensor(layout, (indices, values, size, is_coalesced)),
        the layout from torch.serialization._get_layout("torch.sparse_coo"), as torch.save
        writes a sparse COO tensor (requires_grad is not kept, as torch's)."""
        from .tensor import Tensor

        data = value.data
        self.write_global("torch._utils", "_rebuild_sparse_tensor")
        self.write_global("torch.serialization", "_get_layout")
        self.write_str("torch.sparse_coo")
        self.out += pickle.TUPLE1 + pickle.REDUCE + pickle.MARK
        self.write_tensor(Tensor(data.indices), where + "/indices")
        self.write_tensor(Tensor(data.values), where + "/values")
        self.write_global("torch", "Size")
        self.write_ints(data.shape, where)
        self.out += pickle.TUPLE1 + pickle.REDUCE
        self.out += pickle.NEWTRUE if data.coalesced else pickle.NEWFALSE
        self.out += pickle.TUPLE + pickle.TUPLE2 + pickle.REDUCE

    def write_compressed(self, value, where):
        """torch._utils._rebuild_sparse_tensor(layout, (compressed_indices, plain_indices,
        values, size)), as torch.save writes a CSR, CSC, BSR or BSC tensor."""
        from .tensor import Tensor

        data = value.data
        self.write_global("torch._utils", "_rebuild_sparse_tensor")
        self.write_global("torch.serialization", "_get_layout")
        self.write_str(f"torch.{data.layout}")
        self.out += pickle.TUPLE1 + pickle.REDUCE + pickle.MARK
        for part in ("compressed", "plain", "values"):
            self.write_tensor(Tensor(getattr(data, part)), f"{where}/{part}")
        self.write_global("torch", "Size")
        self.write_ints(data.shape, where)
        self.out += pickle.TUPLE1 + pickle.REDUCE
        self.out += pickle.TUPLE + pickle.TUPLE2 + pickle.REDUCE

    def write_qtensor(self, value, where):
        """torch._utils._rebuild_qtensor(storage, offset, size, stride, quantizer params,
        requires_grad, hooks), the integers in a QInt8/QUInt8/QInt32 storage and the params
        (per_tensor_affine, scale, zero_point) or (per_channel_affine, float64 scales, int64
        zero points, axis) (float32 ones for float qparams), as torch.save writes a quantized
        tensor."""
        ints = np.ascontiguousarray(value._ints, dtype=value._ints.dtype.newbyteorder("<"))
        key = str(len(self.storages))
        self.storages.append(ints)
        self.keep.append(ints)
        self.write_global("torch._utils", "_rebuild_qtensor")
        self.out += pickle.MARK + pickle.MARK
        self.write_storage_view(_QUANTIZED_STORAGES[value.dtype.name], key, ints.shape,
                                ints.size, where)
        if value._axis is None:
            self.write_global("torch", "per_tensor_affine")
            self.out += pickle.BINFLOAT + struct.pack(">d", float(value._scale))
            self.write_int(int(value._zero_point), where)
            self.out += pickle.TUPLE3
        elif value._float_qparams:  # embeddings: float32 scales and zero points under
            self.out += pickle.MARK    # per_channel_affine, as torch.save writes them
            self.write_global("torch", "per_channel_affine")
            self.write_tensor(np.asarray(value._scale, np.float32), where + "/scales")
            self.write_tensor(np.asarray(value._zero_point, np.float32), where + "/zero_points")
            self.write_int(int(value._axis), where)
            self.out += pickle.TUPLE
        else:
            self.out += pickle.MARK
            self.write_global("torch", "per_channel_affine")
            self.write_tensor(np.asarray(value._scale, np.float64), where + "/scales")
            self.write_tensor(np.asarray(value._zero_point, np.int64), where + "/zero_points")
            self.write_int(int(value._axis), where)
            self.out += pickle.TUPLE
        self.out += pickle.NEWFALSE
        self.write_empty_ordered_dict()
        self.out += pickle.TUPLE + pickle.REDUCE

    def write(self, value, path):
        from .tensor import Tensor

        where = "/".join(path) or "the object"
        if getattr(value, "is_nested", False) is True:
            self.write_nested(value, path)
        elif _is_quantized(value):
            self.write_qtensor(value, where)
        elif _is_qdtype(value):  # torch.qint8 & co
            self.write_global("torch", value.name)
        elif _is_dtype(value, where):  # torch.float16 & co, which weights_only reads
            self.write_global("torch", value.name)
        elif _is_device(value):  # torch.device(type[, index]), as torch pickles one
            from .backend import device

            value = device(value)
            self.write_global("torch", "device")
            self.write_str(value.type)
            if value.index is None:
                self.out += pickle.TUPLE1
            else:
                self.write_int(value.index, where)
                self.out += pickle.TUPLE2
            self.out += pickle.REDUCE
        # numpy scalars first: np.float64 is a float, but it is saved as a 0-d tensor
        elif isinstance(value, Tensor) and _is_sparse(value):
            self.write_sparse(value, where)
        elif isinstance(value, Tensor) and _is_compressed(value):
            self.write_compressed(value, where)
        elif isinstance(value, (Tensor, np.ndarray, np.generic)) \
                or type(value).__module__.startswith("cupy"):
            self.write_tensor(value, where)
        elif value is None:
            self.out += pickle.NONE
        elif isinstance(value, bool):
            self.out += pickle.NEWTRUE if value else pickle.NEWFALSE
        elif isinstance(value, int):
            self.write_int(int(value), where)
        elif isinstance(value, float):
            self.out += pickle.BINFLOAT + struct.pack(">d", value)
        elif isinstance(value, str):
            self.write_str(str(value))
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in self.open:
                raise ValueError(f"save: {where} contains itself; a checkpoint must be a tree")
            self.open.add(id(value))
            self.write_container(value, path, where)
            self.open.discard(id(value))
        else:
            raise TypeError(f"save: {where} is a {type(value).__name__}; format='torch' stores "
                            "Tensors, arrays, numbers, strings, None, and dicts, lists and tuples "
                            "of them (what torch.load(weights_only=True) reads back)")

    def write_container(self, value, path, where):
        if isinstance(value, dict):  # dict subclasses other than OrderedDict become dicts
            if isinstance(value, collections.OrderedDict):
                self.write_empty_ordered_dict()
            else:
                self.out += pickle.EMPTY_DICT
            if not value:
                return
            self.out += pickle.MARK
            for k, v in value.items():
                if not isinstance(k, _SCALARS) or isinstance(k, np.generic):
                    raise TypeError(f"save: key {k!r} of {where} is a {type(k).__name__}; keys "
                                    "must be str, int, float, bool or None")
                self.write(k, path + [str(k)])
                self.write(v, path + [str(k)])
            self.out += pickle.SETITEMS
            metadata = getattr(value, "_metadata", None)
            if isinstance(value, collections.OrderedDict) and isinstance(metadata, dict):
                # a state_dict's module versions, set on the OrderedDict as torch.save does
                self.out += pickle.EMPTY_DICT
                self.write_str("_metadata")
                self.write(collections.OrderedDict(
                    (str(k), {"version": int(v.get("version", 1))} if isinstance(v, dict) else {})
                    for k, v in metadata.items()), path + ["_metadata"])
                self.out += pickle.SETITEM + pickle.BUILD
        elif isinstance(value, list):
            self.out += pickle.EMPTY_LIST
            if value:
                self.out += pickle.MARK
                for i, v in enumerate(value):
                    self.write(v, path + [str(i)])
                self.out += pickle.APPENDS
        else:
            if len(value) > 3:
                self.out += pickle.MARK
            for i, v in enumerate(value):
                self.write(v, path + [str(i)])
            self.out += _tuple_end(len(value))


def _write_torch_zip(f, data_pkl, storages):
    """The zip torch.load opens: ``archive/data.pkl``, ``archive/byteorder``, one
    ``archive/data/<key>`` per storage (its raw bytes, starting on a 64-byte boundary of the
    file, as torch aligns them) and ``archive/version``, all stored uncompressed."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(f"{_ARCHIVE}/data.pkl", bytes(data_pkl))
        zf.writestr(f"{_ARCHIVE}/byteorder", "little")
        for key, array in enumerate(storages):
            info = zipfile.ZipInfo(f"{_ARCHIVE}/data/{key}")
            info.file_size = array.nbytes
            zip64 = array.nbytes * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own test
            # local header: 30 bytes, the name, our padding field, zip64's 20 bytes
            start = f.tell() + 30 + len(info.filename) + 4 + (20 if zip64 else 0)
            pad = -start % _ALIGN
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB", torch's pad id
            with zf.open(info, "w", force_zip64=zip64) as member:
                member.write(memoryview(array.reshape(-1).view(np.uint8)))
        zf.writestr(f"{_ARCHIVE}/version", "3\n")


def save_torch(obj, path, make_folders=False):
    """Write ``obj`` as ``torch.save(obj, path)`` would, without torch: a zip that
    ``torch.load(path)`` (``weights_only=True``, its default, or False) reads back as dicts
    (OrderedDicts stay OrderedDicts), lists, tuples, numbers, strings, None and tensors, and
    that ``minidl.models.convert.load_torch_checkpoint`` reads without torch.

    Tensors, Parameters (rebuilt as ``torch.nn.Parameter``) and numpy arrays and scalars (as
    tensors; CUDA ones are copied to the host) of dtype float32/64, float16, bfloat16, int8/16/
    32/64, uint8, bool and complex64/128 are stored (sparse COO tensors as torch.save writes
    them: indices, values, size, coalesced flag), each written C-contiguous whatever its
    strides. One array object saved twice is one storage; distinct views of one array are
    written as separate storages (torch would share one). Anything else, and dict keys that
    are not str, int, float, bool or None, raise TypeError naming the key path (ValueError for a
    container inside itself or an integer over 2039 bits), before the file is touched; the
    write itself is atomic, as ``save``'s. The folder of ``path`` must exist
    (``make_folders``: create it)."""
    check_save_path(path, make_folders)  # before the walk: a wrong path costs nothing
    pkl = _TorchPickle()
    pkl.write(obj, [])
    pkl.out += pickle.STOP
    _write_atomically(path, lambda f: _write_torch_zip(f, pkl.out, pkl.storages), make_folders)


def save(obj, path, *, format="minidl"):
    """Write ``obj`` to ``path`` atomically, as ``torch.save`` does for what a training script
    saves: a state dict, a Tensor, or a checkpoint such as ``{"model": model.state_dict(),
    "optimizer": opt.state_dict(), "epoch": 3}``. Tensors (sparse COO ones as their indices,
    values and shape), arrays (bfloat16 too), numbers,
    strings, None, and dicts, lists and tuples of them are stored, each array as one .npy
    member of an .npz and the structure as JSON beside them: nothing is pickled, so loading a
    file cannot run code. Every value is checked before the file is touched; see ``save_npz``
    for the write itself. The folder of ``path`` must exist, as for torch.save.

    ``format="torch"`` writes torch.save's zip instead, for PyTorch's ``torch.load`` (see
    ``save_torch``). Only the keyword chooses it: a ``.pt`` or ``.pth`` path alone still gets
    minidl's .npz."""
    if format == "torch":
        return save_torch(obj, path)
    if format != "minidl":
        raise ValueError(f"save: format must be 'minidl' (.npz, no pickle) or 'torch' "
                         f"(torch.save's zip, for torch.load), got {format!r}")
    check_save_path(path)  # before the walk: a wrong path costs nothing
    writer = _Writer()
    tree = writer.node(obj, [])
    text = json.dumps(tree, ensure_ascii=False, allow_nan=True)
    _write_members(writer.members, path, extra={TREE: text.encode("utf-8")})


def load(path, map_location=None, weights_only=True):
    """Read what ``save`` wrote: the same nesting of dicts, lists and tuples, Tensors as Tensors
    (on ``map_location``: "cpu", the default, or "cuda"), arrays as numpy arrays, numbers and
    strings as themselves. A file without minidl's structure (written by np.savez, the weight
    converter, or minidl before the structure was recorded) loads as {name: numpy array}.
    ``map_location`` may also be a device, a dict {saved location: device} or a callable
    ``f(tensor, location)`` returning a Tensor (or None to keep it), as torch.load's; the saved
    location is always "cpu" (minidl stores host arrays).
    ``weights_only`` is accepted for torch.load's sake: nothing is ever unpickled."""
    del weights_only
    source = None
    if not isinstance(path, (str, bytes, os.PathLike)) and callable(getattr(path, "read", None)):
        # torch.load(buffer): the file object is read from its position, as torch reads it
        map_location = _check_map_location(map_location)
        data = path.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"load: the file object must be opened in binary mode (read() gave "
                            f"{type(data).__name__})")
        source, path = io.BytesIO(data), "<file object>"
    else:
        try:
            path = os.fspath(path)
        except TypeError:
            raise TypeError(f"load: the path must be a str, os.PathLike or a binary file "
                            f"object, got {type(path).__name__}") from None
        map_location = _check_map_location(map_location)
        if os.path.isdir(path):
            raise IsADirectoryError(f"load: {path} is a directory, not a checkpoint file")
    if _is_torch_file(path if source is None else source):
        # torch.save's format (format="torch" here, or PyTorch's own file): read without torch
        # and without running code from the file (torch_file's restricted unpickler)
        from .torch_file import read

        obj = read(path if source is None else source, tensors=True)
        try:
            return _torch_tensors(obj, map_location)
        except ValueError as exc:  # a tensor whose parts do not fit together
            if path in str(exc):
                raise
            raise ValueError(f"checkpoint {path}: {exc}") from None
    if _looks_like_a_broken_zip(path if source is None else source):
        raise ValueError(f"cannot read checkpoint {path}: not a valid .npz file (nor torch.save "
                         "file): it starts as a zip archive, but is truncated or corrupt (its "
                         "zip directory cannot be read)")
    try:
        with zipfile.ZipFile(path if source is None else source) as zf:
            names = zf.namelist()
            if TREE not in names:
                out = {}
                for name in names:
                    with zf.open(name) as member:
                        out[name.removesuffix(_SUFFIX)] = np.lib.format.read_array(
                            member, allow_pickle=False)
                return out
            tree = json.loads(zf.read(TREE).decode("utf-8"))
            return _Reader(zf, map_location).node(tree)
    except (FileNotFoundError, PermissionError, IsADirectoryError, _MapLocationError):
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read checkpoint {path}: not a valid .npz file ({exc})") from None


def _looks_like_a_broken_zip(path):
    """A file that begins with a zip's local header but has no readable zip directory."""
    try:
        if isinstance(path, io.BytesIO):
            head = path.getvalue()[:4]
        else:
            with open(path, "rb") as f:
                head = f.read(4)
        return head == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError:
        return False


def _is_torch_file(path):
    """torch.save's zip (a data.pkl member) or its legacy pickle (protocol 2 magic);
    ``path`` may be an io.BytesIO (load of a file object)."""
    try:
        if isinstance(path, io.BytesIO):
            head = path.getvalue()[:2]
        else:
            with open(path, "rb") as f:
                head = f.read(2)
        if head == b"\x80\x02":
            return True
        with zipfile.ZipFile(path) as zf:
            return any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _check_map_location(map_location):
    """``map_location`` as load applies it: None, a device name, a dict or a callable;
    anything else is refused here, before the file is read, naming the argument."""
    from .backend import normalize_device

    if map_location is None or callable(map_location):
        return map_location
    if isinstance(map_location, dict):  # {saved location: device}; minidl saves from the host
        for key, value in map_location.items():
            if not isinstance(key, str) or not isinstance(value, str) and not hasattr(value, "type"):
                raise TypeError(f"load: map_location dict entries must map a location name to a "
                                f"device, got {key!r}: {value!r}")
        map_location = map_location.get("cpu", "cpu")
    if isinstance(map_location, (bool, int, float)) or not (
            isinstance(map_location, str) or hasattr(map_location, "type")):
        raise TypeError(f"load: map_location should be a device (str or minidl.device), a dict or "
                        f"a callable, got {type(map_location).__name__} {map_location!r}")
    name = str(map_location)
    try:
        return normalize_device("cpu" if name == "cpu:0" else name)
    except ValueError:
        raise ValueError(f"load: map_location {map_location!r} is not a device minidl has: "
                         "expected 'cpu' or 'cuda'") from None


class _MapLocationError(TypeError):
    """The caller's map_location function misbehaved: not the file's fault."""


def _placed(t, device):
    """Tensor ``t`` (read on the host) where ``map_location`` puts it."""
    from .tensor import Tensor

    if callable(device):  # torch's f(storage, location), given the Tensor here
        moved = device(t, "cpu")
        if moved is None:
            return t
        if not isinstance(moved, Tensor):
            raise _MapLocationError(f"load: map_location returned a {type(moved).__name__}, "
                                    "not a Tensor")
        return moved
    return t.to(device) if device not in (None, "cpu") else t


def _nested_from_parts(obj, device):
    """A LoadedNested of a torch.save file as a minidl nested tensor (a leaf), its parts
    checked as minidl's constructors check them."""
    from .nested import NestedTensor, as_nested_tensor, nested_tensor_from_jagged
    from .sparse import jagged
    from .tensor import Tensor

    try:
        if obj.layout == "strided":
            out = as_nested_tensor([_placed(Tensor(np.array(a)), device) for a in obj.parts])
        else:
            values, offsets, lengths = (None if a is None else _placed(Tensor(np.array(a)),
                                                                        device)
                                        for a in obj.parts)
            out = nested_tensor_from_jagged(values, offsets, lengths,
                                            jagged_dim=obj.ragged_idx)
            if out.layout is not jagged:
                raise ValueError("not a jagged nested tensor")
    except (RuntimeError, TypeError, IndexError) as exc:
        raise ValueError(f"a nested tensor whose parts do not fit together: {exc}") from None
    if obj.requires_grad:
        out.requires_grad_(True)
    assert isinstance(out, NestedTensor)
    return out


def _torch_tensors(obj, device):
    """A torch.save file's structure as convert.read_torch_file gives it, with each array
    (each tensor in the file) made a Tensor on ``device``."""
    from .tensor import Tensor
    from .torch_file import (LoadedCompressed, LoadedNested, LoadedQTensor, LoadedSparse,
                             LoadedTensor, _DType)

    if isinstance(obj, LoadedNested):
        return _nested_from_parts(obj, device)

    if isinstance(obj, LoadedQTensor):  # quantized tensors live on the host
        from .ao.quantization.qtensor import qtensor_from_parts

        return qtensor_from_parts(obj.ints, obj.dtype, obj.scale, obj.zero_point, obj.axis,
                                  "a quantized tensor of the checkpoint")
    if isinstance(obj, LoadedSparse):
        return _placed(_sparse_tensor(obj.indices, obj.values, obj.shape, obj.coalesced), device)
    if isinstance(obj, LoadedCompressed):
        return _placed(_compressed_tensor(obj.layout, obj.compressed, obj.plain, obj.values,
                                          obj.shape), device)
    if isinstance(obj, LoadedTensor):  # its dtype (bfloat16 too) and requires_grad, as torch's
        t = _placed(Tensor(obj.array), device)
        return t.requires_grad_(True) if obj.requires_grad and t._ctx is None else t
    if isinstance(obj, _DType) and obj.name in ("qint8", "quint8", "qint32"):
        from .ao.quantization.qtensor import QDTYPES

        return QDTYPES[obj.name]
    if isinstance(obj, _DType):  # torch.float32 & co as a value: minidl's dtype of that name
        from .backend.dtypes import as_dtype

        return as_dtype(obj.name)
    if isinstance(obj, np.ndarray):
        return _placed(Tensor(obj), device)
    if isinstance(obj, dict):
        return type(obj)((k, _torch_tensors(v, device)) for k, v in obj.items()) \
            if isinstance(obj, collections.OrderedDict) else {k: _torch_tensors(v, device)
                                                              for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_torch_tensors(v, device) for v in obj)
    return obj


class _Reader:
    def __init__(self, zf, map_location):
        self.zf, self.device = zf, map_location

    def _array(self, name, node):
        with self.zf.open(name + _SUFFIX) as member:
            array = np.lib.format.read_array(member, allow_pickle=False)
        if "dtype" in node:
            from .backend.dtypes import as_dtype

            array = array.view(as_dtype(node["dtype"]))
        return array

    def _nested(self, part):
        from .nested import NestedTensor

        tensors = ([part["values"], part["offsets"]] + ([part["lengths"]] if part["lengths"]
                                                         else []) if part["layout"] == "jagged"
                   else list(part["components"]))
        if not all(isinstance(t, dict) and "tensor" in t for t in tensors):
            raise ValueError("a nested tensor whose parts are not tensors")
        leaf = bool(part.get("leaf"))
        if part["layout"] == "strided":
            return NestedTensor(components=[self.node(c) for c in tensors], leaf=leaf)
        if part["layout"] != "jagged":
            raise ValueError(f"a nested tensor of unknown layout {part['layout']!r}")
        values, offsets = self.node(part["values"]), self.node(part["offsets"])
        lengths = None if part["lengths"] is None else self.node(part["lengths"])
        return NestedTensor(values=values, offsets=offsets, lengths=lengths,
                            ragged_idx=int(part["ragged_idx"]), leaf=leaf)

    def node(self, node):
        if "value" in node:
            return node["value"]
        if "array" in node:
            array = self._array(node["array"], node)
            return array[()] if node.get("scalar") else array
        if "tensor" in node:
            from .tensor import Tensor

            t = Tensor(self._array(node["tensor"], node), requires_grad=bool(node.get("requires_grad")))
            return _placed(t, self.device)
        if "nested" in node:
            return self._nested(node["nested"])
        if "qtensor" in node:
            from .ao.quantization.qtensor import qtensor_from_parts

            part = node["qtensor"]
            return qtensor_from_parts(self.node(part["ints"]), part["dtype"],
                                      self.node(part["scale"]), self.node(part["zero_point"]),
                                      part["axis"], "a quantized tensor of the checkpoint")
        if "dtype_value" in node:
            from .backend.dtypes import as_dtype

            if node["dtype_value"] not in _TORCH_STORAGES:
                raise ValueError(f"unknown dtype {node['dtype_value']!r}")
            return as_dtype(node["dtype_value"])
        if "qdtype" in node:
            from .ao.quantization.qtensor import QDTYPES

            if node["qdtype"] not in QDTYPES:
                raise ValueError(f"unknown quantized dtype {node['qdtype']!r}")
            return QDTYPES[node["qdtype"]]
        if "device" in node:
            from .backend import DeviceName, device

            name = str(device(node["device"]))  # checked: an unknown name raises
            return DeviceName(name) if node.get("name") else device(name)
        if "compressed" in node:
            part = node["compressed"]
            arrays = [self._array(part[k]["tensor"], part[k])
                      for k in ("compressed", "plain", "values")]
            t = _placed(_compressed_tensor(part["layout"], *arrays, part["shape"]), self.device)
            return t.requires_grad_(True) if node.get("requires_grad") else t
        if "sparse" in node:
            part = node["sparse"]
            arrays = [self._array(part[k]["tensor"], part[k]) for k in ("indices", "values")]
            t = _placed(_sparse_tensor(*arrays, part["shape"], part.get("coalesced", False)),
                        self.device)
            return t.requires_grad_(True) if node.get("requires_grad") else t
        if "dict" in node:
            return {k: self.node(v) for k, v in node["dict"]}
        if "list" in node:
            return [self.node(v) for v in node["list"]]
        if "tuple" in node:
            return tuple(self.node(v) for v in node["tuple"])
        raise ValueError(f"unknown entry {sorted(node)} in its structure")
