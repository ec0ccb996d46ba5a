"""save/load of state dicts as .npz, written to a temporary file and renamed into place."""
from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np


def save(state_dict, path):
    """Write a {name: Tensor or array} dict to ``path`` (.npz) atomically: a crash mid-write
    leaves the previous file intact."""
    from .backend import to_numpy
    from .tensor import Tensor

    path = os.fspath(path)
    arrays = {}
    for name, value in state_dict.items():
        # host arrays whatever device the value is on (a GPU checkpoint loads on a CPU)
        arrays[name] = value.numpy() if isinstance(value, Tensor) else to_numpy(value)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path):
    """Read a .npz state dict into {name: numpy array} (load_state_dict accepts it directly)."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"cannot read checkpoint {path}: not a valid .npz file ({exc})") from None
