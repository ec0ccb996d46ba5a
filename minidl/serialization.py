"""save/load of state dicts as .npz, written to a temporary file and renamed into place.

One writer (``save_npz``) serves checkpoints (``minidl.save``) and the PyTorch converter. It
writes the zip members itself instead of calling ``np.savez(path, **arrays)``, whose own keyword
arguments (``file``, ``allow_pickle``) collide with keys of those names. ``load`` reads the
members back by their exact names, so any string key round-trips (``"a/b"``, ``"x.npy"``,
non-ASCII). Every value is checked before the temporary file is created: a bad value raises
and leaves the previous checkpoint untouched.
"""
from __future__ import annotations

import os
import secrets
import zipfile

import numpy as np

_SUFFIX = ".npy"


def _host_array(name, value):
    """``value`` as a numpy array that .npz stores and reads back unchanged, or a TypeError
    naming the key."""
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
    if array.dtype.kind == "V" and array.dtype.fields is None:
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
    previous file intact. The file's mode follows the umask, like any file the user writes."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: {path} is a directory; give a file path (e.g. model.npz)")
    checked = [(name, _host_array(name, value)) for name, value in arrays.items()]
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(path)
    # not tempfile.mkstemp: its 0600 mode would stay on the result; open(.., "x") honours umask
    tmp = os.path.join(directory, f"{_tmp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}.npz")
    try:
        with open(tmp, "xb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, array in checked:
                    with zf.open(name + _SUFFIX, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
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


def save(state_dict, path):
    """Write a {name: Tensor or array} dict to ``path`` (.npz) atomically; see ``save_npz``."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"save: expected a dict of arrays, got {type(state_dict).__name__}")
    save_npz(state_dict, path)


def load(path):
    """Read a .npz state dict into {name: numpy array} (load_state_dict accepts it directly)."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for info in zf.infolist():
                name = info.filename
                key = name.removesuffix(_SUFFIX)
                with zf.open(info) as member:
                    out[key] = np.lib.format.read_array(member, allow_pickle=False)
            return out
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"cannot read checkpoint {path}: not a valid .npz file ({exc})") from None
