"""save / async_save (torch.distributed.checkpoint.state_dict_saver)."""
from __future__ import annotations

import os
import pickle
import uuid
import warnings
from concurrent.futures import Future

import numpy as np

from ...backend import to_numpy
from ...tensor import Tensor
from ._flatten import agree, gather, group_info, is_tensor, leaves, refuse_sparse
from .filesystem import FileSystemWriter, storage_for
from .metadata import (BytesStorageMetadata, ChunkStorageMetadata, FlatShard, Metadata,
                       TensorStorageMetadata)
from .planner import DefaultSavePlanner

__all__ = ["save", "async_save", "save_state_dict"]


def _local_plan(state_dict):
    """(plan, payload): key -> ('t', shape, dtype, start, stop) or ('o',), and key -> the flat
    array or the pickled bytes this rank would write."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"save: state_dict must be a dict, got {type(state_dict).__name__}")
    plan, payload = {}, {}
    for key, _, _, value in leaves(state_dict):
        if key in plan:
            raise ValueError(f"save: two entries of the state dict flatten to the key {key!r}")
        if is_tensor(value):
            refuse_sparse(value, key, "save")
            if isinstance(value, FlatShard):
                arr, shape, start = to_numpy(value.local.data), value.shape, value.offset
            else:
                arr = to_numpy(value.data if isinstance(value, Tensor) else value)
                shape, start = tuple(arr.shape), 0
            flat = np.ascontiguousarray(arr).reshape(-1)
            plan[key] = ("t", tuple(int(s) for s in shape), str(flat.dtype), start,
                         start + flat.size)
            payload[key] = flat
        else:
            try:
                payload[key] = pickle.dumps(value)
            except Exception as exc:  # noqa: BLE001
                raise TypeError(f"save: {key!r} holds a {type(value).__name__} that cannot be "
                                f"pickled: {exc}") from None
            plan[key] = ("o",)
    return plan, payload


def _global_plan(plans):
    """key -> ('t', shape, dtype, [(start, stop, writing rank)]) or ('o', writing rank): each
    tensor piece that several ranks hold (replicated, as DDP's) written by the lowest of
    them. Checks that the ranks agree and the pieces tile each tensor."""
    out = {}
    for rank, plan in enumerate(plans):
        for key, entry in plan.items():
            if key not in out:
                out[key] = (entry[0], entry[1:], {}, rank)
            kind, first, pieces, first_rank = out[key]
            if entry[0] != kind:
                raise TypeError(f"save: {key!r} is a tensor on one rank and another value on "
                                f"the other (rank {first_rank}: {kind}, rank {rank}: {entry[0]})")
            if kind == "o":
                continue
            if entry[1:3] != first[:2]:
                raise ValueError(f"save: ranks disagree on {key!r}: rank {first_rank} has shape "
                                 f"{first[0]} {first[1]}, rank {rank} shape {entry[1]} "
                                 f"{entry[2]} (a sharded tensor must come as FlatShards, e.g. "
                                 "from get_model_state_dict)")
            if entry[4] > entry[3]:  # an empty piece (a rank with none of it) adds nothing
                pieces.setdefault((entry[3], entry[4]), rank)
    result = {}
    for key, (kind, first, pieces, first_rank) in out.items():
        if kind == "o":
            result[key] = ("o", first_rank)
            continue
        total = int(np.prod(first[0], dtype=np.int64))
        ordered = sorted((a, b, r) for (a, b), r in pieces.items())
        at = 0
        for a, b, r in ordered:
            if a != at:
                what = "overlap" if a < at else "leave a gap"
                raise ValueError(f"save: the ranks' pieces of {key!r} {what} at element "
                                 f"{min(a, at)} (pieces {[(x, y) for x, y, _ in ordered]} of "
                                 f"{total} elements)")
            at = b
        if at != total:
            raise ValueError(f"save: the ranks' pieces of {key!r} cover elements [0, {at}) of "
                             f"its {total} (shape {first[0]})")
        result[key] = ("t", first[0], first[1], ordered)
    return result


def save(state_dict, *, checkpoint_id=None, storage_writer=None, planner=None,
         process_group=None, no_dist=False):
    """Save ``state_dict`` (nested dicts and lists of Tensors, FlatShards and picklable values)
    into the directory ``checkpoint_id`` (or ``storage_writer``'s). Every rank of
    ``process_group`` (the default group; one process without any) calls it with its own
    state dict: each writes only the pieces it holds, a tensor held whole by several ranks
    once. Returns the Metadata. See minidl.distributed.checkpoint for the format."""
    rank, world = (0, 1) if no_dist else group_info(process_group)
    exc, plan, payload = None, None, None
    try:
        if planner is not None and not isinstance(planner, DefaultSavePlanner):
            raise NotImplementedError("save: only DefaultSavePlanner is supported as planner")
        writer = storage_for(checkpoint_id, storage_writer, FileSystemWriter, "save",
                             "storage_writer")
        writer._check()
        plan, payload = _local_plan(state_dict)
    except Exception as e:  # noqa: BLE001  (every rank must learn of it: see agree)
        exc = e
    everyone = gather((None if exc else plan, uuid.uuid4().hex[:12]), world, process_group)
    agree(exc, world, process_group, "save", rank)
    token = everyone[0][1]
    try:
        layout = _global_plan([p for p, _ in everyone])
        mine = []
        for key, entry in layout.items():
            if entry[0] == "o":
                if entry[1] == rank:
                    mine.append((key, payload[key]))
            elif any(r == rank for _, _, r in entry[3]):
                mine.append((key, payload[key]))
        os.makedirs(writer.path, exist_ok=True)
        name = f"{token}.rank{rank}.data"
        records = writer._write_data(name, mine) if mine else {}
    except Exception as e:  # noqa: BLE001
        exc, records, name = e, None, None
    written = gather((name, records), world, process_group)
    agree(exc, world, process_group, "save", rank)
    meta = {}
    for key, entry in layout.items():
        if entry[0] == "o":
            file, rec = written[entry[1]]
            meta[key] = BytesStorageMetadata(file, *rec[key])
        else:
            chunks = []
            for a, b, r in entry[3]:
                file, rec = written[r]
                chunks.append(ChunkStorageMetadata(a, b - a, file, rec[key][0], rec[key][2]))
            meta[key] = TensorStorageMetadata(entry[1], entry[2], chunks)
    metadata = Metadata(meta, world)
    try:
        if rank == 0:
            writer._write_metadata(metadata)
            writer._remove_stale({f for f, r in written if r})
    except Exception as e:  # noqa: BLE001
        exc = e
    agree(exc, world, process_group, "save", rank)
    return metadata


def async_save(state_dict, *, checkpoint_id=None, storage_writer=None, planner=None,
               process_group=None, async_checkpointer_type=None, async_stager=None,
               no_dist=False, use_collectives=True):
    """save, returning a Future (``.result()`` is the Metadata). minidl writes before it
    returns (the Future is already done), so the state dict may change right after."""
    future = Future()
    future.set_result(save(state_dict, checkpoint_id=checkpoint_id,
                           storage_writer=storage_writer, planner=planner,
                           process_group=process_group, no_dist=no_dist))
    return future


def save_state_dict(state_dict, storage_writer, process_group=None, coordinator_rank=0,
                    no_dist=False, planner=None):
    """Deprecated alias of save (as torch's)."""
    warnings.warn("`save_state_dict` is deprecated and will be removed in future versions. "
                  "Please use `save` instead.", FutureWarning, stacklevel=2)
    return save(state_dict, storage_writer=storage_writer, planner=planner,
                process_group=process_group, no_dist=no_dist)
