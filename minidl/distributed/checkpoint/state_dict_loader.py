"""load (torch.distributed.checkpoint.state_dict_loader)."""
from __future__ import annotations

import warnings

import numpy as np

from ...backend import device_of, to_device
from ...tensor import Tensor
from ._flatten import agree, group_info, is_tensor, leaves, refuse_sparse
from .filesystem import FileSystemReader, _dtype, storage_for
from .metadata import FlatShard, TensorStorageMetadata
from .planner import DefaultLoadPlanner

__all__ = ["load", "load_state_dict"]


def _target(value):
    """(the array to fill, the whole tensor's shape, first flat element, element count)."""
    if isinstance(value, FlatShard):
        arr = value.local.data
        return arr, value.shape, value.offset, arr.size
    arr = value.data if isinstance(value, Tensor) else value
    return arr, tuple(arr.shape), 0, arr.size


def _assemble(reader, meta, start, length):
    """Elements [start, start + length) of the saved tensor (flat), from whichever saved
    pieces hold them."""
    dtype = _dtype(meta.dtype)
    out = np.empty(length, dtype=dtype)
    for c in meta.chunks:
        lo, hi = max(start, c.offset), min(start + length, c.offset + c.length)
        if lo < hi:
            out[lo - start:hi - start] = reader._read_chunk(c, dtype)[lo - c.offset:hi - c.offset]
    return out


def load(state_dict, *, checkpoint_id=None, storage_reader=None, planner=None,
         process_group=None, no_dist=False):
    """Fill ``state_dict`` in place from the checkpoint in ``checkpoint_id`` (or
    ``storage_reader``'s directory): each tensor (or FlatShard: this rank's piece) is copied
    into, cast to its dtype, from the saved pieces that hold it, whatever number of ranks
    saved them; every other value is replaced by the saved one. A key the checkpoint lacks
    raises (unless ``planner=DefaultLoadPlanner(allow_partial_load=True)``), a shape that
    differs raises naming the key and both shapes; keys only the checkpoint has are ignored.
    Everything is read and checked before anything changes."""
    rank, world = (0, 1) if no_dist else group_info(process_group)
    exc, updates = None, []
    try:
        if planner is not None and not isinstance(planner, DefaultLoadPlanner):
            raise NotImplementedError("load: only DefaultLoadPlanner is supported as planner")
        if not isinstance(state_dict, dict):
            raise TypeError(f"load: state_dict must be a dict, got {type(state_dict).__name__}")
        partial = planner is not None and planner.allow_partial_load
        reader = storage_for(checkpoint_id, storage_reader, FileSystemReader, "load",
                             "storage_reader")
        saved = reader.read_metadata().state_dict_metadata
        for key, container, k, value in leaves(state_dict):
            meta = saved.get(key)
            if meta is None:
                if partial:
                    continue
                raise RuntimeError(f"Missing key in checkpoint state_dict: {key}. (load: the "
                                   f"checkpoint {reader.path!r} has no {key!r}; pass "
                                   "planner=DefaultLoadPlanner(allow_partial_load=True) to "
                                   "leave such keys as they are)")
            if not is_tensor(value):
                if isinstance(meta, TensorStorageMetadata):
                    raise TypeError(f"load: {key!r} is a tensor of shape {meta.size} in the "
                                    f"checkpoint, a {type(value).__name__} in the state dict")
                updates.append((container, k, reader._read_object(meta)))
                continue
            refuse_sparse(value, key, "load")
            if not isinstance(meta, TensorStorageMetadata):
                raise TypeError(f"load: {key!r} is a tensor in the state dict but a "
                                f"non-tensor value in the checkpoint")
            arr, shape, start, length = _target(value)
            if tuple(shape) != tuple(meta.size):
                raise ValueError(f"Size mismatch between saved {tuple(meta.size)} and current: "
                                 f"{tuple(shape)} for {key} (load: the checkpoint's {key!r} has "
                                 f"shape {tuple(meta.size)}, the state dict's {tuple(shape)})")
            updates.append((arr, None, _assemble(reader, meta, start, length)))
    except Exception as e:  # noqa: BLE001  (every rank must learn of it: see agree)
        exc = e
    agree(exc, world, process_group, "load", rank)
    for dest, k, new in updates:
        if k is None:
            dest[...] = to_device(new.astype(dest.dtype, copy=False), device_of(dest)) \
                .reshape(dest.shape)
        else:
            dest[k] = new


def load_state_dict(state_dict, storage_reader, process_group=None, coordinator_rank=0,
                    no_dist=False, planner=None):
    """Deprecated alias of load (as torch's)."""
    warnings.warn("`load_state_dict` is deprecated and will be removed in future versions. "
                  "Please use `load` instead.", FutureWarning, stacklevel=2)
    return load(state_dict, storage_reader=storage_reader, planner=planner,
                process_group=process_group, no_dist=no_dist)
