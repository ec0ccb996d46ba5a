"""Read PyTorch checkpoints without torch, and convert them to minidl's ``.npz`` weights.

    python -m minidl.models.convert resnet50-0676ba61.pth resnet50.npz [--arch NAME|none]
    python -m minidl.models.convert --to-torch model.npz model.pt [--arch NAME]

The second form goes the other way: a minidl checkpoint (``minidl.save``'s .npz, or this
converter's) becomes a file ``torch.load`` reads, written without torch (``save_torch``).

Reading a torch file without torch, and without running code from its pickle, is
``minidl.torch_file``'s restricted unpickler (``minidl.load`` uses it too).
At top level this module imports only the standard library, NumPy, that reader and minidl's
.npz writer (``minidl.serialization``); the model used for the shape check is imported when asked for.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import zipfile

import numpy as np

# the one .npz writer (atomic, any key, umask mode) and torch.save's format, written the same way
from ..serialization import TREE, check_save_path, save_npz, save_torch

__all__ = ["load_torch_checkpoint", "load_safetensors", "check_state_dict", "convert", "to_torch",
           "save_npz", "save_torch", "main"]

# the reader of torch's files (restricted unpickler, memory budget) lives below serialization
from ..torch_file import (  # noqa: E402,F401  (re-exported: the converter's names of old)
    _STORAGE_DTYPES, _TORCH_DTYPES, DEFAULT_MAX_BYTES, MAX_INFLATE_RATIO, _Budget,
    _RestrictedUnpickler, _load_legacy, _load_zip, _widen_bfloat16, read_errors,
)

_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")  # wrappers training scripts use


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
        with read_errors(path), zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            budget = _Budget(path, max_bytes)
            if names and all(n.endswith(".npy") for n in names):
                return _read_npz(archive, path, budget)
            if TREE in names and all(n.endswith(".npy") for n in names if n != TREE):
                return _read_minidl_save(path, archive, budget)
            return _load_zip(path, archive, budget)
    return _load_legacy(path)


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
