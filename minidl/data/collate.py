"""default_collate and default_convert, as torch.utils.data's: a list of samples into a batch
of Tensors with the samples' structure (dicts, named tuples, lists), strings kept as they are."""
from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np

from ..backend.dtypes import default_float, is_floating


class CollateError(ValueError, RuntimeError):
    """Samples that do not batch together (PyTorch's RuntimeError): their shapes or lengths
    differ. The message names the samples (their place in the batch and, where known, their
    dataset index) and the field."""


def collate(samples, indices=None):
    """Batch a list of samples as PyTorch's default_collate does: (x, y, ...) tuples or lists
    into a tuple of stacked arrays, dicts into a dict of them (by key), strings into a list.
    ``indices``: the samples' dataset indices, named in errors."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        if _is_namedtuple(first) and not all(type(s) is type(first) for s in samples):
            j = next(j for j, s in enumerate(samples) if type(s) is not type(first))
            raise CollateError(f"default_collate: {_sample(0, indices)} is a "
                               f"{type(first).__name__}, {_sample(j, indices)} a "
                               f"{type(samples[j]).__name__}")
        size = _equal_sizes(samples, indices, "")
        fields = [_collate_field([s[i] for s in samples], indices, f" (field {i})")
                  for i in range(size)]
        return type(first)(*fields) if _is_namedtuple(first) else tuple(fields)
    return _collate_field(samples, indices, "")


_NUMBER_KINDS = ((bool, np.bool_), (int, np.integer), (float, np.floating))


def _number_kind(value):
    """0 bool, 1 integer, 2 float for a Python or NumPy scalar number, else None."""
    for kind, types in enumerate(_NUMBER_KINDS):
        if isinstance(value, types):
            return kind
    return None


def _nested(values):
    """Whether a field of tuples or lists is batched position by position (as torch's
    default_collate does) rather than stacked into one array: its elements are not numbers
    of one kind (a label beside a float, a string, a dict, an array), or it is a named
    tuple. Lists of numbers of one kind stack into a (batch, n) array."""
    first = values[0]
    if not isinstance(first, (tuple, list)):
        return False
    if _is_namedtuple(first):
        return True
    kinds = {_number_kind(v) for s in values if isinstance(s, (tuple, list)) for v in s}
    return len(kinds) > 1 or None in kinds


def _sample(j, indices):
    """Sample ``j`` of a batch, named for an error message."""
    if indices is None:
        return f"sample {j}"
    return f"sample {j} (dataset index {int(indices[j])})"


def _equal_sizes(items, indices, where):
    """The common length of ``items`` (tuples or lists), or a CollateError naming the first
    sample that differs, as torch's "each element in list of batch should be of equal size"."""
    size = len(items[0])
    for j, v in enumerate(items):
        if not isinstance(v, (tuple, list)) or len(v) != size:
            got = f"length {len(v)}" if isinstance(v, (tuple, list)) else type(v).__name__
            raise CollateError(f"default_collate: each element in list of batch should be of "
                               f"equal size{where}: {_sample(0, indices)} has length {size}, "
                               f"{_sample(j, indices)} has {got}")
    return size


def _same_mapping(first, collated):
    """The collated fields in a mapping of the samples' type, as torch's default_collate: a
    mutable mapping (OrderedDict, defaultdict, ...) copied and updated, another built from a
    dict where its type allows, else a dict."""
    if isinstance(first, MutableMapping):
        try:
            clone = copy.copy(first)
            clone.update(collated)
            return clone
        except Exception:  # noqa: BLE001  (a mapping that cannot be copied: a plain dict)
            return collated
    try:
        return type(first)(collated)
    except TypeError:
        return collated


def _promoted(values, arrays):
    """Arrays (from Tensors, numpy arrays or numpy numbers) of different dtypes cast to the
    dtype torch.stack gives them (minidl.promote_types: float32 beside int64 stays float32,
    where numpy would widen to float64); Python numbers and equal dtypes are left alone."""
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) < 2 or not all(hasattr(v, "dtype") for v in values):
        return arrays
    from ..runtime import promote_types

    target = functools.reduce(promote_types, [a.dtype for a in arrays])
    return [a.astype(target, copy=False) for a in arrays]


def _check_int64(values, indices, where):
    """Python ints beyond int64, which numpy would keep as objects (torch: overflow)."""
    for j, v in enumerate(values):
        if isinstance(v, int) and not -(1 << 63) <= v < (1 << 63):
            raise CollateError(f"default_collate: the integer {v}{where} at {_sample(j, indices)} "
                               "does not fit in int64 (Overflow when unpacking long long)")


def _collate_field(values, indices=None, where=""):
    first = values[0]
    if isinstance(first, Mapping):
        return _same_mapping(first, {
            k: _collate_field([v[k] for v in values], indices, f"{where} (key {k!r})")
            for k in first})
    if isinstance(first, (str, bytes)):
        return list(values)
    if _nested(values):
        size = _equal_sizes(values, indices, where)
        fields = [_collate_field([v[i] for v in values], indices, f"{where} (item {i})")
                  for i in range(size)]
        return type(first)(*fields) if _is_namedtuple(first) else fields
    pil = sys.modules.get("PIL.Image")  # only loaded when images are in use
    if pil is not None and isinstance(first, pil.Image):
        # np.asarray would silently batch HWC pixels; torch refuses, and so does minidl
        raise TypeError(_FOUND.format("<class 'PIL.Image.Image'>") + " (add "
                        "minidl.vision.transforms.ToTensor() to the dataset's transform)")
    _check_int64(values, indices, where)
    arrays = _promoted(values, [np.asarray(v) for v in values])
    try:
        batch = np.stack(arrays)
    except ValueError:
        shape = arrays[0].shape
        j = next((j for j, a in enumerate(arrays) if a.shape != shape), None)
        if j is None:
            raise
        raise CollateError(f"default_collate: stack expects each sample to be equal size{where}, "
                           f"but got {list(shape)} at {_sample(0, indices)} and "
                           f"{list(arrays[j].shape)} at {_sample(j, indices)}") from None
    if not _batchable(batch.dtype):  # None, objects, strings mixed with numbers, dates
        j = next((j for j, a in enumerate(arrays) if not _batchable(a.dtype)), 0)
        raise TypeError(_FOUND.format(type(values[j])) + f"{where} at {_sample(j, indices)}")
    return batch


def _batchable(dtype):
    """A dtype a batch Tensor can have: numbers and bools, bfloat16 included (its NumPy kind is
    'V', as a record's), not objects, strings, records or dates."""
    return dtype.kind in "biufc" or is_floating(dtype)


_FOUND = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
          "found {}")


def _tensor(array):
    from ..tensor import Tensor

    return Tensor(array)


def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _stack_tensors(batch):
    from ..backend import get_array_module
    from ..tensor import Tensor

    shapes = {tuple(t.shape) for t in batch}
    if len(shapes) > 1:
        raise RuntimeError(f"default_collate: stack expects each tensor to be equal size, but "
                           f"got {sorted(shapes)}")
    devices = {t.device for t in batch}
    if len(devices) > 1:
        raise RuntimeError(f"default_collate: the tensors are on different devices: "
                           f"{sorted(devices)}")
    xp = get_array_module(batch[0].data)
    datas = [t.data for t in batch]
    if len({d.dtype for d in datas}) > 1:  # torch.stack's promotion, not numpy's
        from ..runtime import promote_types

        target = functools.reduce(promote_types, [d.dtype for d in datas])
        datas = [d.astype(target, copy=False) for d in datas]
    return Tensor(xp.stack(datas), device=batch[0].device)


def _check_numbers(batch):
    """A batch of Python numbers holds only numbers (torch: "must be real number, not str")."""
    for j, value in enumerate(batch):
        if not isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
            raise TypeError(f"default_collate: batch entry 0 is a number, entry {j} is a "
                            f"{type(value).__name__} ({value!r}); must be real number")


def default_collate(batch):
    """Tensors, numpy arrays and numpy numbers are stacked into a Tensor with a new first
    dimension; Python floats become a float64 Tensor, ints an int64 one (bools a bool one);
    strings and bytes come back as they were given; dicts are collated key by key; a named
    tuple gives the same named tuple of batches; other sequences (lists, tuples) give a list
    of batches, one per position (each sample must have the same length)."""
    from ..tensor import Tensor

    if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)):
        batch = list(batch)
    if not batch:
        raise ValueError("default_collate: the batch is empty")
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack_tensors(batch)
    if isinstance(elem, np.ndarray) or isinstance(elem, np.generic) and not isinstance(
            elem, (np.str_, np.bytes_)):
        if not _batchable(np.asarray(elem).dtype):  # strings, objects, records, dates
            raise TypeError(_FOUND.format(np.asarray(elem).dtype))
        shapes = {np.shape(b) for b in batch}
        if len(shapes) > 1:
            raise RuntimeError(f"default_collate: stack expects each array to be equal size, "
                               f"but got {sorted(shapes)}")
        return _tensor(np.stack(_promoted(batch, [np.asarray(b) for b in batch])))
    if isinstance(elem, (bool, int, float)):
        _check_numbers(batch)
    if isinstance(elem, float):
        return _tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, (bool, int)):
        _check_int64(batch, None, "")
        values = np.array(batch)
        if values.dtype.kind == "f":  # torch.tensor's default dtype for a mixed list
            values = values.astype(default_float())
        return _tensor(values)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, Mapping):
        return _same_mapping(elem, {key: default_collate([d[key] for d in batch])
                                    for key in elem})
    if _is_namedtuple(elem):
        return type(elem)(*(default_collate(s) for s in zip(*batch)))
    if isinstance(elem, Sequence):
        size = len(elem)
        if any(len(b) != size for b in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        columns = [default_collate(s) for s in zip(*batch)]  # strings stay tuples, as in torch
        if isinstance(elem, tuple):
            return columns  # a list, as PyTorch returns for tuples
        try:
            return type(elem)(columns)
        except TypeError:
            return columns
    raise TypeError(_FOUND.format(type(elem)))


def default_convert(data):
    """One sample's numpy arrays and numbers as Tensors, its structure kept (what a DataLoader
    with batch_size=None yields); strings and other objects are left as they are."""
    from ..tensor import Tensor

    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return data if data.dtype.kind in "SaUO" else _tensor(data)
    if isinstance(data, np.generic) and not isinstance(data, (np.str_, np.bytes_)):
        return _tensor(np.asarray(data))
    if isinstance(data, Mapping):
        converted = {k: default_convert(v) for k, v in data.items()}
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    if _is_namedtuple(data):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
