"""Walking a nested state dict (dicts and lists) to its leaves, and the ranks that take part."""
from __future__ import annotations

import pickle

import numpy as np

from ... import distributed as dist
from ...backend.sparse import SparseCOO
from ...tensor import Tensor
from .metadata import FlatShard


def is_tensor(value):
    """A value saved as raw array bytes. A quantized tensor is not one: its integers mean
    nothing without its scale and zero point, so it is saved whole (pickled) and loading
    replaces it, as torch's DCP round-trips one."""
    if getattr(value, "is_quantized", False) is True:
        return False
    return isinstance(value, (Tensor, FlatShard, np.ndarray))


def refuse_sparse(value, key, what):
    """A checkpoint holds dense tensors only (torch's DCP cannot save sparse ones either):
    refused before anything is written or changed, naming the key."""
    data = value.local.data if isinstance(value, FlatShard) else \
        value.data if isinstance(value, Tensor) else value
    if type(data) is SparseCOO:
        raise TypeError(f"{what}: {key!r} is a sparse COO tensor; a checkpoint holds dense "
                        f"tensors only (use .to_dense() for it, and load into a dense tensor)")


def _walked(lst):
    """Whether a list is walked element by element (as torch's DCP: where it holds a tensor
    or a dict, or such a list); any other list (of numbers, strings...) is one value, saved
    and loaded whole, so that its length may differ between the checkpoint and the state
    dict being loaded."""
    return any(is_tensor(v) or isinstance(v, dict) or (isinstance(v, list) and _walked(v))
               for v in lst)


def leaves(obj, path=()):
    """(dotted key, container, key in it, value) of every tensor or other value in ``obj``
    (dicts, and lists that hold tensors or dicts, are walked; a tuple, int, str, None, a list
    of plain values... is one value)."""
    if isinstance(obj, dict):
        items = obj.items()
        for k, _ in items:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                where = ".".join(map(str, path)) or "the state dict"
                raise TypeError(f"checkpoint: keys must be str or int, {where} has key {k!r}")
    else:
        items = enumerate(obj)
    for k, v in items:
        if isinstance(v, dict) or (isinstance(v, list) and _walked(v)):
            yield from leaves(v, path + (k,))
        else:
            yield ".".join(map(str, path + (k,))), obj, k, v


def group_info(process_group):
    """(rank, world size) in ``process_group`` (the default group when None); (0, 1) without
    an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise RuntimeError("checkpoint: a process_group was given but no process group is "
                               "initialised")
        return 0, 1
    return dist.get_rank(process_group), dist.get_world_size(process_group)


def gather(obj, world, process_group):
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj, group=process_group)
    return out


def raise_if_any_failed(errors, what, me):
    """``errors``: every rank's exception or None. Every rank raises: its own exception if it
    failed, else one of the first failing rank's type that names that rank."""
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if not failed:
        return
    if errors[me] is not None:
        raise errors[me]
    rank, exc = failed[0]
    if isinstance(exc, Exception):
        try:
            raised = type(exc)(f"{what} failed on rank {rank}: {exc}")
        except TypeError:
            raised = RuntimeError(f"{what} failed on rank {rank}: {type(exc).__name__}: {exc}")
        raise raised from None
    raise RuntimeError(f"{what} failed on rank {rank}: {exc}")


def portable(exc):
    """``exc`` as something all_gather_object can send."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001  (an exception that does not pickle: send its text)
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def agree(exc, world, process_group, what, rank):
    """Every rank learns whether any failed; all raise if one did (see raise_if_any_failed)."""
    errors = gather(portable(exc), world, process_group)
    if exc is not None:
        raise exc
    raise_if_any_failed(errors, what, rank)
