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
"""
from __future__ import annotations

import json
import os
import secrets
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
    if array.dtype.kind == "V" and array.dtype.fields is None and not (
            raw_bfloat16 and array.dtype.name == "bfloat16"):
        # e.g. ml_dtypes' bfloat16: the .npy header records it as raw bytes ('|V2')
        raise TypeError(f"save: value of {name!r} has dtype {array.dtype}, which .npz cannot "
                        "record; cast it (e.g. .astype('float32')) first")
    return array


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
    try:
        path = os.path.abspath(os.fspath(path))
    except TypeError:
        raise TypeError(f"save: the path must be a str or os.PathLike, got "
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
    path = check_save_path(path, make_folders)
    directory = os.path.dirname(path)
    if make_folders:
        os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(path)
    # not tempfile.mkstemp: its 0600 mode would stay on the result; open(.., "x") honours umask
    tmp = os.path.join(directory, f"{_tmp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}.npz")
    try:
        with open(tmp, "xb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, array in checked.items():
                    with zf.open(name + _SUFFIX, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
                for name, data in (extra or {}).items():
                    zf.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


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

    def node(self, value, path):
        from .tensor import Tensor

        where = "/".join(path) or "the object"
        if isinstance(value, _SCALARS):
            if isinstance(value, str) and "\0" in value:
                raise ValueError(f"save: {where} is a string holding a NUL character")
            return {"value": value}
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


def save(obj, path):
    """Write ``obj`` to ``path`` atomically, as ``torch.save`` does for what a training script
    saves: a state dict, a Tensor, or a checkpoint such as ``{"model": model.state_dict(),
    "optimizer": opt.state_dict(), "epoch": 3}``. Tensors, arrays (bfloat16 too), numbers,
    strings, None, and dicts, lists and tuples of them are stored, each array as one .npy
    member of an .npz and the structure as JSON beside them: nothing is pickled, so loading a
    file cannot run code. Every value is checked before the file is touched; see ``save_npz``
    for the write itself. The folder of ``path`` must exist, as for torch.save."""
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
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"load: the path must be a str or os.PathLike, got "
                        f"{type(path).__name__}") from None
    map_location = _check_map_location(map_location)
    if os.path.isdir(path):
        raise IsADirectoryError(f"load: {path} is a directory, not a checkpoint file")
    try:
        with zipfile.ZipFile(path) as zf:
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
        if _is_torch_file(path):
            raise ValueError(f"cannot read checkpoint {path}: it is a PyTorch file (torch.save), "
                             "not minidl's .npz; read it with minidl.models.convert."
                             "load_torch_checkpoint(path) or convert it with `python -m "
                             "minidl.models.convert`") from None
        raise ValueError(f"cannot read checkpoint {path}: not a valid .npz file ({exc})") from None


def _is_torch_file(path):
    """torch.save's zip (a data.pkl member) or its legacy pickle (protocol 2 magic)."""
    try:
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

    def node(self, node):
        if "value" in node:
            return node["value"]
        if "array" in node:
            array = self._array(node["array"], node)
            return array[()] if node.get("scalar") else array
        if "tensor" in node:
            from .tensor import Tensor

            t = Tensor(self._array(node["tensor"], node), requires_grad=bool(node.get("requires_grad")))
            if callable(self.device):  # torch's f(storage, location), given the Tensor here
                moved = self.device(t, "cpu")
                if moved is None:
                    return t
                if not isinstance(moved, Tensor):
                    raise _MapLocationError(f"load: map_location returned a "
                                            f"{type(moved).__name__}, not a Tensor")
                return moved
            return t.to(self.device) if self.device not in (None, "cpu") else t
        if "dict" in node:
            return {k: self.node(v) for k, v in node["dict"]}
        if "list" in node:
            return [self.node(v) for v in node["list"]]
        if "tuple" in node:
            return tuple(self.node(v) for v in node["tuple"])
        raise ValueError(f"unknown entry {sorted(node)} in its structure")
