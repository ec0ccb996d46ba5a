"""Data-parallel process groups on MPI (mpi4py) and NCCL (CuPy), and their collectives.

Launch one process per rank with MPI and initialise the group in each::

    mpiexec -n 2 python train.py

    import minidl.distributed as dist
    dist.init_process_group(backend="mpi")   # or "nccl": CuPy arrays go through NCCL
    dist.all_reduce(x, op="avg")              # in place, on numpy/cupy arrays or Tensors

Rank and world size come from the MPI launcher. The ``mpi`` backend runs every collective
through MPI; CuPy arrays are staged through host memory. The ``nccl`` backend reduces CuPy
arrays with NCCL on the current CUDA stream (its unique id is shared over MPI) and still uses
MPI for host arrays. Either backend makes this process use the GPU of its local rank (rank
within the node) when CUDA is used, and shares the node's cores between the ranks on it.

A rank that dies of an uncaught exception aborts the whole job (``MPI_Abort``), after
printing its traceback, instead of leaving the other ranks waiting in a collective forever;
a collective that does not complete within ``timeout`` seconds aborts the job too.

Nothing here imports mpi4py or CuPy until ``init_process_group`` runs: ``import minidl`` stays
cheap and works where neither is installed.
"""
from __future__ import annotations

import os
import sys
import traceback
import zlib

import numpy as np

from ..backend import get_array_module
from ..tensor import Tensor

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "is_available",
           "is_mpi_available", "is_nccl_available", "is_gloo_available", "is_backend_available",
           "is_torchelastic_launched", "get_rank", "get_world_size", "get_local_rank",
           "get_node_local_rank", "get_backend", "new_group", "get_process_group_ranks",
           "get_group_rank", "get_global_rank", "ProcessGroup", "GroupMember", "group", "Backend",
           "ReduceOp", "Work", "P2POp", "all_reduce", "reduce", "broadcast", "all_gather",
           "all_gather_into_tensor", "gather", "scatter", "reduce_scatter",
           "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "send", "recv", "isend",
           "irecv", "batch_isend_irecv", "barrier", "monitored_barrier", "all_gather_object", "gather_object",
           "broadcast_object_list", "scatter_object_list", "launched_world_size",
           "new_subgroups", "new_subgroups_by_enumeration", "send_object_list",
           "recv_object_list", "DeviceMesh", "init_device_mesh"]

DEFAULT_TIMEOUT = 1800.0  # seconds, as PyTorch's default for CPU process groups

_group = None  # the world group's implementation (an MPIGroup or NCCLGroup), one per process
_world = None  # the world as a ProcessGroup


class ReduceOp:
    """Reduction names; plain strings ("sum", "avg", "max", "min", "product", "band", "bor",
    "bxor") work as well."""
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


OPS = (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT, ReduceOp.BAND,
       ReduceOp.BOR, ReduceOp.BXOR)
reduce_op = ReduceOp  # torch's deprecated name


class Backend(str):
    """A backend name, lower-cased and checked: ``Backend("MPI") == "mpi"``. "gloo" (PyTorch's
    CPU backend) is accepted and runs on MPI."""
    MPI = "mpi"
    NCCL = "nccl"
    GLOO = "gloo"
    UNDEFINED = "undefined"

    def __new__(cls, name):
        value = str(name).lower()
        if value not in ("mpi", "nccl", "gloo", "undefined"):
            raise ValueError(f"Invalid backend: '{name}'; minidl has 'mpi', 'nccl' and 'gloo' "
                             "(which runs on MPI)")
        return super().__new__(cls, value)


def is_available() -> bool:
    """Whether mpi4py can be imported (without initialising MPI)."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


is_mpi_available = is_available


def is_nccl_available() -> bool:
    """Whether CuPy with NCCL can be imported (it does not say whether a GPU is present)."""
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:  # ImportError, or CuPy failing without a CUDA driver
        return False
    return is_available()


def is_gloo_available() -> bool:
    """Whether backend "gloo" works: it runs on MPI here."""
    return is_available()


def is_backend_available(backend) -> bool:
    name = str(backend).lower()
    return {"mpi": is_available, "gloo": is_available,
            "nccl": is_nccl_available}.get(name, lambda: False)()


def is_torchelastic_launched() -> bool:
    """Whether torchrun started this process (minidl's ranks come from an MPI launcher)."""
    return os.environ.get("TORCHELASTIC_RUN_ID") is not None


def launched_world_size():
    """The number of ranks when this process was started by an MPI launcher (mpiexec, srun),
    from the launcher's environment; None when it was not."""
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE",
                "SLURM_NTASKS"):
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return None


def _parse_backend(backend):
    """'mpi', 'nccl', 'gloo', or torch's per-device form 'cpu:gloo,cuda:nccl' -> 'mpi'/'nccl'
    (NCCL carries CuPy arrays wherever it is named; host arrays always go through MPI)."""
    names = []
    for part in str(backend).lower().split(","):
        name = part.split(":")[-1].strip()
        if name not in ("mpi", "nccl", "gloo"):
            raise ValueError(f"init_process_group: unknown backend {name!r}; expected 'mpi', "
                             "'nccl' or 'gloo' (which runs on MPI)")
        names.append(name)
    return "nccl" if "nccl" in names else "mpi"


def init_process_group(backend="mpi", init_method=None, timeout=None, world_size=None,
                       rank=None, store=None, device_id=None, **_ignored):
    """Join the job's process group. ``backend`` is "mpi", "nccl" or "gloo" (runs on MPI);
    ``world_size`` and ``rank``, if given (-1, torch's default, means not given), must agree
    with what the MPI launcher assigned (they are not chosen here). ``init_method``: None or
    "env://" (rank and world size come from the MPI launcher either way). ``timeout``: seconds a collective may wait before the job is
    aborted (default 1800; a ``datetime.timedelta`` works too)."""
    global _group, _world
    if _group is not None:
        raise RuntimeError("init_process_group: the process group is already initialised "
                           "(call destroy_process_group() first)")
    backend = _parse_backend("mpi" if backend is None else backend)
    if init_method not in (None, "env://"):
        raise ValueError(f"init_process_group: init_method {init_method!r} is not supported; "
                         "minidl's ranks come from the MPI launcher (mpiexec -n N), so leave it "
                         "out or pass 'env://'")
    if store is not None:
        raise ValueError("init_process_group: a store is not supported; minidl's ranks meet "
                         "through MPI (launch with mpiexec -n N)")
    if timeout is None:
        timeout = float(os.environ.get("MINIDL_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    elif hasattr(timeout, "total_seconds"):
        timeout = timeout.total_seconds()
    if float(timeout) <= 0:
        raise ValueError(f"init_process_group: timeout must be > 0 seconds, got {timeout}")
    try:
        from mpi4py import MPI  # noqa: F401  (initialises MPI)
    except ImportError as exc:
        raise RuntimeError(
            f"minidl.distributed needs mpi4py and an MPI library ({exc}); install them with "
            "`pip install minidl[distributed]` (mpi4py and the mpich wheel), then launch with "
            "`mpiexec -n N python ...`") from None
    from .mpi import MPIGroup

    group = MPIGroup(float(timeout))
    torchrun_world = os.environ.get("WORLD_SIZE", "")
    if group.size == 1 and torchrun_world.isdigit() and int(torchrun_world) > 1 \
            and launched_world_size() is None:
        group.close()
        raise RuntimeError(
            f"init_process_group: WORLD_SIZE={torchrun_world} in the environment (torchrun?) but "
            "this process was not started by an MPI launcher, so it would train alone; launch "
            f"with `mpiexec -n {torchrun_world} python ...` instead")
    if world_size is not None and int(world_size) != -1 and int(world_size) != group.size:
        raise ValueError(f"init_process_group: world_size={world_size} but the MPI launcher "
                         f"started {group.size} ranks (mpiexec -n sets it)")
    if rank is not None and int(rank) != -1 and int(rank) != group.rank:
        raise ValueError(f"init_process_group: rank={rank} but the MPI launcher made this "
                         f"process rank {group.rank}")
    _use_local_resources(group.local_rank, group.local_size)
    if backend == "nccl":
        from .nccl import NCCLGroup

        group = NCCLGroup(group)
    _group = group
    _world = GroupMember.WORLD = ProcessGroup(group, list(range(group.size)))
    _install_abort_hook()


def destroy_process_group(group=None):
    """Leave the default process group (MPI itself stays up until the process exits), or free
    the subgroup ``group``."""
    global _group, _world
    if _group is None:
        _require("destroy_process_group")
    if group is not None and group is not _world:
        if isinstance(group, ProcessGroup) and not group._destroyed:
            group._destroyed = True
            group._impl.close()
        return
    impl, _group, _world = _group, None, None
    GroupMember.WORLD = None
    impl.close()


def is_initialized() -> bool:
    return _group is not None


def _require(what):
    if _group is None:
        raise RuntimeError(
            f"minidl.distributed.{what}: the default process group is not initialised; call "
            "minidl.distributed.init_process_group(backend='mpi') first (and launch the script "
            "with mpiexec -n N)")
    return _group


# ---- process groups -------------------------------------------------------------------------
class ProcessGroup:
    """A set of ranks that run collectives together: the world (``group.WORLD``), or one made by
    ``new_group``. ``rank()``/``size()`` are this process's rank in it and its size; functions
    that take ``src``/``dst`` take ranks of the world (global ranks), as torch's, and
    ``group_src``/``group_dst`` ranks within the group."""

    def __init__(self, impl, ranks):
        self._impl, self._ranks, self._destroyed = impl, list(ranks), False

    def rank(self):
        return self._impl.rank

    def size(self):
        return self._impl.size

    def name(self):
        return self._impl.name

    def __repr__(self):
        return f"ProcessGroup(backend={self._impl.name!r}, ranks={self._ranks})"


class _NonMember:
    def __repr__(self):
        return "GroupMember.NON_GROUP_MEMBER"


class GroupMember:
    """``GroupMember.WORLD`` is the default group; ``NON_GROUP_MEMBER`` is what ``new_group``
    returns on a rank it does not include."""
    NON_GROUP_MEMBER = _NonMember()
    WORLD = None  # set by init_process_group


class _GroupNamespace:
    @property
    def WORLD(self):  # noqa: N802  (torch's name)
        return _world


group = _GroupNamespace()


def _pg(grp, what):
    """The ProcessGroup ``grp`` stands for (None: the world); None on a rank outside it."""
    _require(what)
    if grp is None or grp is _world:
        return _world
    if grp is GroupMember.NON_GROUP_MEMBER:
        import warnings

        warnings.warn(f"{what}: running a collective on rank {_group.rank}, which does not "
                      "belong to the given group; it does nothing here", stacklevel=3)
        return None
    if not isinstance(grp, ProcessGroup):
        raise TypeError(f"{what}: group must be a ProcessGroup from new_group() or None, got "
                        f"{type(grp).__name__}")
    if grp._destroyed:
        raise RuntimeError(f"{what}: the group was destroyed (destroy_process_group(group))")
    return grp


def new_group(ranks=None, timeout=None, backend=None, pg_options=None,
              use_local_synchronization=False, group_desc=None):
    """A process group of the world ranks ``ranks`` (all of them if None), which every rank of
    the world must call, in the same order as the other ranks' calls (as torch's). Ranks
    outside it get ``GroupMember.NON_GROUP_MEMBER``. With ``use_local_synchronization=True``
    only the ranks in ``ranks`` need to call it (as torch's). ``backend``: the world's by
    default; 'mpi'/'gloo' runs a group on MPI under an NCCL world."""
    world = _require("new_group")
    size = world.size
    members = list(range(size)) if ranks is None else [int(r) for r in ranks]
    if len(set(members)) != len(members):
        raise ValueError(f"new_group: ranks {list(ranks)} name a rank twice")
    for r in members:
        if not 0 <= r < size:
            raise ValueError(f"new_group: rank {r} is out of range for world size {size}")
    if not members:
        raise ValueError("new_group: ranks is empty")
    members = sorted(members)  # torch orders a group's ranks by their world rank
    base = world
    if backend is not None and _parse_backend(backend) == "mpi" and world.name == "nccl":
        base = world.mpi
    if not use_local_synchronization:  # every rank must name the same ranks
        _agree(_world, "new_group", extra=(zlib.crc32(str(members).encode()),),
               describe=f"new_group of ranks {members}")
    impl = base.subgroup(members, bool(use_local_synchronization))
    if timeout is not None and impl is not None:
        seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout
        _set_timeout(impl, float(seconds))
    if impl is None:
        return GroupMember.NON_GROUP_MEMBER
    return ProcessGroup(impl, members)


def new_subgroups(group_size=None, group=None, timeout=None, backend=None, pg_options=None,
                  group_desc=None):
    """The world cut into consecutive groups of ``group_size`` ranks (default: the ranks on
    one node, as torch's one group per node's GPUs): ``(this rank's group, all groups)``.
    Every rank must call it. ``group`` is not supported by torch either (must be None)."""
    world = _require("new_subgroups")
    if group is not None:
        raise ValueError("new_subgroups: group must be None (torch's too)")
    if group_size is None:
        group_size = world.local_size  # the ranks sharing this node (MPI's shared-memory split)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"new_subgroups: group_size must be a positive int, got {group_size!r}")
    if world.size % group_size:
        raise ValueError(f"new_subgroups: the world size ({world.size}) must be divisible by "
                         f"group_size ({group_size})")
    lists = [list(range(i, i + group_size)) for i in range(0, world.size, group_size)]
    return new_subgroups_by_enumeration(lists, timeout=timeout, backend=backend)


def new_subgroups_by_enumeration(ranks_per_subgroup_list, timeout=None, backend=None,
                                 pg_options=None, group_desc=None):
    """One group per list of world ranks in ``ranks_per_subgroup_list`` (disjoint lists):
    ``(this rank's group, all groups)``; this rank's is None where no list holds it. Every rank
    must call it."""
    world = _require("new_subgroups_by_enumeration")
    if not ranks_per_subgroup_list:
        raise ValueError("new_subgroups_by_enumeration: the subgroup rank lists are empty")
    seen = {}
    for i, ranks in enumerate(ranks_per_subgroup_list):
        for r in ranks:
            if r in seen:
                raise ValueError(f"new_subgroups_by_enumeration: rank {r} is in subgroups "
                                 f"{seen[r]} and {i}")
            seen[r] = i
    mine, groups = None, []
    for ranks in ranks_per_subgroup_list:
        g = new_group(ranks, timeout=timeout, backend=backend)
        groups.append(g)
        if world.rank in ranks:
            mine = g
    return mine, groups


def send_object_list(object_list, dst=None, group=None, device=None, group_dst=None,
                     use_batch=False):
    """Send the picklable objects of ``object_list`` to rank ``dst``, whose
    ``recv_object_list`` takes them (a list of the same length); as torch's, anything that
    unpickles runs on the receiver, so exchange objects only with ranks you trust.
    ``use_batch`` (torch's choice of batched point-to-point calls) changes nothing here."""
    import pickle

    if _pg(group, "send_object_list") is None:
        return None
    blobs = [pickle.dumps(o) for o in object_list]
    # how many objects first, so that a receiver whose list differs in length can say so
    # (and still take every message, leaving the channel in step) instead of misreading
    send(Tensor(np.array([len(blobs)], dtype=np.int64)), dst, group, group_dst=group_dst)
    send(Tensor(np.array([len(b) for b in blobs], dtype=np.int64)), dst, group,
         group_dst=group_dst)
    if sum(len(b) for b in blobs):
        send(Tensor(np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()), dst, group,
             group_dst=group_dst)


def recv_object_list(object_list, src=None, group=None, device=None, group_src=None,
                     use_batch=False):
    """Fill ``object_list`` (as long as the sender's) with the objects rank ``src`` (None: any
    rank) sent with ``send_object_list``; returns the sender's world rank. A list of another
    length raises ValueError naming both lengths, leaving ``object_list`` as it was (the
    sender's objects are taken all the same, so later messages stay in step)."""
    import pickle

    pg = _pg(group, "recv_object_list")
    if pg is None:
        return -1
    count = Tensor(np.zeros(1, dtype=np.int64))
    sender = recv(count, src, group, group_src=group_src)
    count = int(count.numpy()[0])
    sizes = Tensor(np.zeros(count, dtype=np.int64))
    recv(sizes, sender, group)
    lengths = sizes.numpy().tolist()
    data = np.zeros(sum(lengths), dtype=np.uint8)
    if data.size:
        buffer = Tensor(data)
        recv(buffer, sender, group)
        data = buffer.numpy()
    if count != len(object_list):
        raise ValueError(f"recv_object_list: rank {sender} sent {count} objects, but "
                         f"object_list holds {len(object_list)}; make it as long as the "
                         "sender's list")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    object_list[:] = [pickle.loads(data[offsets[i]:offsets[i + 1]].tobytes())
                      for i in range(len(lengths))]
    return sender


def _set_timeout(impl, seconds):
    impl.timeout = seconds
    if hasattr(impl, "mpi"):
        impl.mpi.timeout = seconds


def get_rank(group=None) -> int:
    """This process's rank in ``group`` (the world by default); -1 outside the group."""
    _require("get_rank")
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return _pg(group, "get_rank").rank()


def get_world_size(group=None) -> int:
    _require("get_world_size")
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return _pg(group, "get_world_size").size()


def get_local_rank() -> int:
    """This process's rank among the ranks on its node (it picks the node's GPU)."""
    return _require("get_local_rank").local_rank


get_node_local_rank = get_local_rank


def get_backend(group=None) -> str:
    pg = _pg(group, "get_backend")
    if pg is None:
        raise ValueError("get_backend: this rank is not part of the group")
    return pg.name()


def get_process_group_ranks(group):
    """The world ranks of ``group``, in the group's rank order."""
    pg = _pg(group, "get_process_group_ranks")
    return list(pg._ranks) if pg is not None else []


def get_group_rank(group, global_rank) -> int:
    pg = _pg(group, "get_group_rank")
    if pg is None or int(global_rank) not in pg._ranks:
        raise ValueError(f"get_group_rank: global rank {global_rank} is not part of the group")
    return pg._ranks.index(int(global_rank))


def get_global_rank(group, group_rank) -> int:
    pg = _pg(group, "get_global_rank")
    if pg is None or not 0 <= int(group_rank) < len(pg._ranks):
        raise ValueError(f"get_global_rank: group rank {group_rank} is out of range for the "
                         "group")
    return pg._ranks[int(group_rank)]


def _peer(pg, global_rank, group_rank, name, what, required=False):
    """The group-local rank of a ``src``/``dst`` given as a world rank or a group rank; when
    neither is given, world rank 0 (torch's default for gather, scatter and the object
    collectives), or a ValueError where torch requires one (``required``: broadcast, reduce,
    send)."""
    if global_rank is not None and group_rank is not None:
        raise ValueError(f"{what}: give {name} or group_{name}, not both")
    if required and global_rank is None and group_rank is None:
        raise ValueError(f"{what}: give {name} (a world rank) or group_{name} (a rank in the "
                         "group); it has no default")
    if group_rank is not None:
        r = int(group_rank)
        if not 0 <= r < pg.size():
            raise ValueError(f"{what}: group rank {r} is out of range for group size "
                             f"{pg.size()}")
        return r
    r = 0 if global_rank is None else int(global_rank)
    if r not in pg._ranks:
        if pg is _world:
            raise ValueError(f"{what}: rank {r} is out of range for world size {pg.size()}")
        raise ValueError(f"{what}: rank {r} is not part of the group (its ranks: {pg._ranks})")
    return pg._ranks.index(r)


# ---- completion handles ---------------------------------------------------------------------
class Work:
    """What a collective with ``async_op=True`` (and ``isend``/``irecv``) returns: the operation
    is under way; ``wait()`` blocks until it has completed and its output is written."""

    def __init__(self, pending, outputs=(), after=None):
        self._pending, self._outputs, self._after = pending, list(outputs), after
        self._finished, self._error = False, None

    def _finish(self):
        """Complete the operation once; an error it raised is kept and raised again by every
        later wait (a second wait must not report a failed operation as done)."""
        if not self._finished:
            try:
                value = self._pending.wait()
                if self._after is not None:
                    self._after(value)
            except Exception as exc:
                self._finished, self._error = True, exc
                raise
            self._finished, self._value = True, value
        elif self._error is not None:
            raise self._error

    def wait(self, timeout=None):
        """Block until the operation has completed. ``timeout`` (seconds or a timedelta):
        raise a RuntimeError if it has not by then (it stays under way; a later wait can
        still complete it) instead of waiting up to the group's timeout."""
        if timeout is not None and not self._finished:
            import time

            seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else \
                float(timeout)
            deadline = time.monotonic() + seconds
            while not self.is_completed():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Work.wait: the operation did not complete within "
                                       f"{seconds:g} s (timeout)")
                time.sleep(1e-4)
        self._finish()
        return True

    def is_completed(self) -> bool:
        if not self._finished:
            try:
                ready = self._pending.test()
            except Exception as exc:
                self._finished, self._error = True, exc
                return True
            if ready:
                try:
                    self._finish()
                except Exception:
                    pass  # kept: exception() returns it, wait() raises it
        return self._finished

    def is_success(self) -> bool:
        return self.is_completed() and self._error is None

    def exception(self):
        """The error the operation raised, or None."""
        return self._error

    def result(self):
        """The output tensors of the operation (after waiting for it)."""
        self._finish()
        return self._outputs

    def get_future(self):
        """A ``minidl.futures.Future`` of the output tensors (completed by waiting)."""
        from ..futures import Future

        return Future(_waiter=self.result, _poll=self.is_completed)

    def source_rank(self) -> int:
        """For an ``irecv``: the world rank the message came from."""
        self._finish()
        return self._value


def _complete(pending, async_op, outputs=(), after=None):
    work = Work(pending, outputs, after)
    if async_op:
        return work
    work.wait()
    return None


def _skipped(async_op):
    """What a collective returns on a rank outside its group: nothing to wait for."""
    from .mpi import Done

    return Work(Done()) if async_op else None


# ---- collectives ------------------------------------------------------------------------------
def _array(x, what):
    if isinstance(x, Tensor):
        return x.data
    xp = get_array_module(x)
    if not isinstance(x, xp.ndarray):
        raise TypeError(f"{what}: expected a Tensor or a numpy/cupy array, got {type(x).__name__}"
                        " (collectives work in place, so Python numbers cannot be used)")
    return x


def _op(op, arr, what):
    op = str(op).lower()
    if op not in OPS:
        raise ValueError(f"{what}: unknown op {op!r}; expected one of {', '.join(OPS)}")
    if arr.dtype.kind == "c":  # as torch's: reduced as (real, imag) pairs
        if op not in ("sum", "avg"):
            raise ValueError(f"{what} does not support {op!r} on complex tensors (sum and avg "
                             "do)")
        return op
    if arr.dtype.kind not in "fiub" and arr.dtype.name != "bfloat16":
        raise TypeError(f"{what}: cannot reduce dtype {arr.dtype}")
    floating = arr.dtype.kind == "f" or arr.dtype.name == "bfloat16"
    if op == "avg" and not floating:
        raise TypeError(f"{what}: op 'avg' needs a floating-point array, got {arr.dtype}")
    if op in ("band", "bor", "bxor") and floating:
        raise TypeError(f"{what}: op {op!r} needs an integer or bool array, got {arr.dtype}")
    return op


def _like(arr, ref, name, what):
    if arr.shape != ref.shape or arr.dtype != ref.dtype:
        raise ValueError(f"{what}: {name} has shape {tuple(arr.shape)} and dtype {arr.dtype}, "
                         f"the input has {tuple(ref.shape)} and {ref.dtype}")


def _list(tensors, n, name, what):
    arrs = [_array(t, what) for t in tensors]
    if len(arrs) != n:
        raise ValueError(f"{what}: {name} has {len(arrs)} entries, the group has {n} ranks")
    return arrs


_KINDS = ("all_reduce", "reduce", "broadcast", "all_gather", "all_gather_into_tensor",
          "gather", "scatter", "reduce_scatter", "reduce_scatter_tensor", "all_to_all_single",
          "all_to_all", "barrier", "all_gather_object", "gather_object", "broadcast_object_list",
          "scatter_object_list", "new_group")
CHECK_ARGUMENTS = os.environ.get("MINIDL_DIST_CHECKS", "1") != "0"
_AGREE_LEN = 6  # the values _agree compares: kind, size, dtype, op, root, one extra


def _dtype_code(dtype):
    """A small integer naming ``dtype`` (the ranks compare these)."""
    return zlib.crc32(str(dtype).encode()) & 0xFFFFFFF


def _agree(pg, what, arr=None, op=None, root=None, extra=(), describe=None):
    """Before a collective: every rank of the group called ``what`` with the same size, dtype,
    op and root (see MPIGroup.agree; one small all-reduce). MINIDL_DIST_CHECKS=0 turns it
    off."""
    if not CHECK_ARGUMENTS:
        return
    values = [_KINDS.index(what), -1, -1, -1 if op is None else OPS.index(op),
              -1 if root is None else int(root), *extra]
    # one length for every collective: ranks in different collectives must still run an
    # all-reduce of one count (MPI has no meaning for one of mismatched counts)
    values += [-1] * (_AGREE_LEN - len(values))
    describe = describe or what
    if arr is not None:
        values[1], values[2] = int(arr.size), _dtype_code(arr.dtype)
        describe = f"{what} of shape {tuple(arr.shape)} {arr.dtype}"
    if op is not None:
        describe += f", op {op}"
    if root is not None:
        describe += f", root {root}"
    pg._impl.agree(values, describe, what)


def all_reduce(tensor, op="sum", group=None, async_op=False):
    """Reduce ``tensor`` over the ranks of ``group``, in place on every rank. ``op``: sum, avg,
    max, min, product, or (integers) band, bor, bxor."""
    pg = _pg(group, "all_reduce")
    arr = _array(tensor, "all_reduce")
    op = _op(op, arr, "all_reduce")
    if pg is None:
        return _skipped(async_op)
    _agree(pg, "all_reduce", arr, op)
    return _complete(pg._impl.all_reduce(arr, op), async_op, [tensor])


def reduce(tensor, dst=None, op="sum", group=None, async_op=False, group_dst=None):
    """Reduce ``tensor`` over the ranks into rank ``dst``'s ``tensor``; the other ranks'
    tensors keep their values."""
    pg = _pg(group, "reduce")
    arr = _array(tensor, "reduce")
    op = _op(op, arr, "reduce")
    if pg is None:
        return _skipped(async_op)
    root = _peer(pg, dst, group_dst, "dst", "reduce", required=True)
    _agree(pg, "reduce", arr, op, root)
    return _complete(pg._impl.reduce(arr, op, root), async_op, [tensor])


def broadcast(tensor, src=None, group=None, async_op=False, group_src=None):
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every other rank, in place."""
    pg = _pg(group, "broadcast")
    arr = _array(tensor, "broadcast")
    if pg is None:
        return _skipped(async_op)
    root = _peer(pg, src, group_src, "src", "broadcast", required=True)
    _agree(pg, "broadcast", arr, root=root)
    return _complete(pg._impl.broadcast(arr, root), async_op, [tensor])


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` (PyTorch's signature: the list holds
    one array or Tensor per rank, of the input's shape and dtype, written in place)."""
    pg = _pg(group, "all_gather")
    arr = _array(tensor, "all_gather")
    if pg is None:
        return _skipped(async_op)
    outs = _list(tensor_list, pg.size(), "tensor_list", "all_gather")
    for i, o in enumerate(outs):
        _like(o, arr, f"tensor_list[{i}]", "all_gather")

    def scatter_parts(gathered):
        for o, part in zip(outs, gathered):
            o[...] = part
    _agree(pg, "all_gather", arr)
    return _complete(pg._impl.all_gather(arr), async_op, tensor_list, scatter_parts)


def _check_world_sized(big, small, n, what, rule, names):
    """``big`` must hold n ``small``s, concatenated along the first dimension or stacked;
    returns the stacked shape. ``names``: what big and small are called in messages."""
    if big.dtype != small.dtype:
        raise ValueError(f"{what}: the {names[0]}'s dtype {big.dtype} differs from the "
                         f"{names[1]}'s {small.dtype}")
    stacked = (n,) + tuple(small.shape)
    concatenated = ((n * small.shape[0],) + tuple(small.shape[1:])) if small.ndim else (n,)
    if tuple(big.shape) not in (stacked, concatenated):
        raise ValueError(f"{what}: {rule}: {names[0]} has shape {tuple(big.shape)}, expected "
                         f"{concatenated} or {stacked} for {names[1]} {tuple(small.shape)} on "
                         f"{n} ranks")
    return stacked


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """Every rank's ``input_tensor`` into ``output_tensor``, either concatenated along the first
    dimension (world_size * n, ...) or stacked (world_size, n, ...)."""
    pg = _pg(group, "all_gather_into_tensor")
    out, arr = _array(output_tensor, "all_gather_into_tensor"), _array(input_tensor,
                                                                        "all_gather_into_tensor")
    if pg is None:
        return _skipped(async_op)
    _check_world_sized(big=out, small=arr, n=pg.size(), what="all_gather_into_tensor",
                       rule="output tensor size must be equal to world_size times input "
                            "tensor size", names=("output", "input"))
    _agree(pg, "all_gather_into_tensor", arr)
    return _complete(pg._impl.all_gather(arr, out), async_op, [output_tensor])


def _root_list(pg, root, tensors, ref, name, role, what):
    """gather's and scatter's list, which the root rank alone gives (one entry per rank, each
    of ``ref``'s shape and dtype): its arrays on the root, None elsewhere."""
    if pg.rank() != root:
        if tensors:
            raise ValueError(f"{what}: Argument ``{name}`` must NOT be specified on "
                             f"non-{role} ranks.")
        return None
    if tensors is None:
        raise ValueError(f"{what}: Argument ``{name}`` must be specified on {role} rank.")
    arrs = _list(tensors, pg.size(), name, what)
    for i, a in enumerate(arrs):
        _like(a, ref, f"{name}[{i}]", what)
    return arrs


def gather(tensor, gather_list=None, dst=None, group=None, async_op=False, group_dst=None):
    """Every rank's ``tensor`` into ``gather_list`` on rank ``dst`` (one entry per rank)."""
    pg = _pg(group, "gather")
    arr = _array(tensor, "gather")
    if pg is None:
        return _skipped(async_op)
    root = _peer(pg, dst, group_dst, "dst", "gather")
    outs = _root_list(pg, root, gather_list, arr, "gather_list", "destination", "gather")

    def place(gathered):
        if outs is not None:
            for o, part in zip(outs, gathered):
                o[...] = part
    _agree(pg, "gather", arr, root=root)
    return _complete(pg._impl.gather(arr, root), async_op, gather_list or [], place)


def scatter(tensor, scatter_list=None, src=None, group=None, async_op=False, group_src=None):
    """Rank ``src``'s ``scatter_list[r]`` into rank r's ``tensor``."""
    pg = _pg(group, "scatter")
    out = _array(tensor, "scatter")
    if pg is None:
        return _skipped(async_op)
    root = _peer(pg, src, group_src, "src", "scatter")
    parts = _root_list(pg, root, scatter_list, out, "scatter_list", "source", "scatter")
    stacked = None
    if parts is not None:
        xp = get_array_module(out)
        stacked = xp.stack([xp.asarray(p) for p in parts])
    _agree(pg, "scatter", out, root=root)
    return _complete(pg._impl.scatter(out, stacked, root), async_op, [tensor])


def reduce_scatter(output, input_list, op="sum", group=None, async_op=False):
    """Rank r's ``output`` = the reduction over ranks of their ``input_list[r]``."""
    pg = _pg(group, "reduce_scatter")
    out = _array(output, "reduce_scatter")
    op = _op(op, out, "reduce_scatter")
    if pg is None:
        return _skipped(async_op)
    parts = _list(input_list, pg.size(), "input_list", "reduce_scatter")
    for i, p in enumerate(parts):
        _like(p, out, f"input_list[{i}]", "reduce_scatter")
    xp = get_array_module(out)
    stacked = xp.stack([xp.asarray(p) for p in parts])
    _agree(pg, "reduce_scatter", out, op)
    return _complete(pg._impl.reduce_scatter(out, stacked, op), async_op, [output])


def reduce_scatter_tensor(output, input, op="sum", group=None, async_op=False):  # noqa: A002
    """As reduce_scatter, with the inputs as one tensor: concatenated along the first dimension
    (world_size * n, ...) or stacked (world_size, n, ...)."""
    pg = _pg(group, "reduce_scatter_tensor")
    out, arr = _array(output, "reduce_scatter_tensor"), _array(input, "reduce_scatter_tensor")
    op = _op(op, arr, "reduce_scatter_tensor")
    if pg is None:
        return _skipped(async_op)
    stacked = _check_world_sized(big=arr, small=out, n=pg.size(), what="reduce_scatter_tensor",
                                 rule="input tensor must be the same size as output size "
                                      "times world size", names=("input", "output"))
    _agree(pg, "reduce_scatter_tensor", out, op)
    return _complete(pg._impl.reduce_scatter(out, arr.reshape(stacked), op), async_op, [output])


def _splits(sizes, total, n, name, what):
    if sizes is None or len(sizes) == 0:
        if total % n:
            raise ValueError(f"{what}: the first dimension ({total}) of the {name} is not "
                             f"divisible by the group size {n}; give {name}_split_sizes")
        return [total // n] * n
    sizes = [int(v) for v in sizes]
    if len(sizes) != n or sum(sizes) != total or min(sizes) < 0:
        raise ValueError(f"{what}: {name}_split_sizes {sizes} must hold {n} sizes >= 0 that sum "
                         f"to the {name}'s first dimension {total}")
    return sizes


def _agree_splits(pg, what, send, recv, dtype):
    """Before an all-to-all: what each rank sends to rank j is what rank j expects from it (in
    elements), and the dtypes agree. Every rank sees every rank's counts (one small
    all-gather), so all raise the same error."""
    if not CHECK_ARGUMENTS:
        return
    _agree(pg, what)
    n = pg.size()
    mine = np.array(list(send) + list(recv) + [_dtype_code(dtype)],
                    dtype=np.int64)
    table = pg._impl.all_gather(mine).wait()
    table = np.asarray(table if not hasattr(table, "get") else table.get())
    problems = [f"rank {i} sends {table[i, j]} elements to rank {j}, which expects "
                f"{table[j, n + i]}" for i in range(n) for j in range(n)
                if table[i, j] != table[j, n + i]]
    if len(set(table[:, 2 * n].tolist())) > 1:
        problems.append("the ranks' dtypes differ")
    if problems:
        raise ValueError(f"{what}: the ranks' split sizes do not match: {'; '.join(problems)}")


def all_to_all_single(output, input, output_split_sizes=None,  # noqa: A002
                      input_split_sizes=None, group=None, async_op=False):
    """Split ``input`` along its first dimension (equally, or by ``input_split_sizes``) and send
    part j to rank j; rank j's part for this rank lands in ``output``'s part (split by
    ``output_split_sizes``)."""
    what = "all_to_all_single"
    pg = _pg(group, what)
    out, arr = _array(output, what), _array(input, what)
    if pg is None:
        return _skipped(async_op)
    n = pg.size()
    if out.dtype != arr.dtype:
        raise ValueError(f"{what}: output dtype {out.dtype} differs from the input's {arr.dtype}")
    if out.shape[1:] != arr.shape[1:]:
        raise ValueError(f"{what}: output shape {tuple(out.shape)} and input shape "
                         f"{tuple(arr.shape)} differ after the first dimension")
    send = _splits(input_split_sizes, arr.shape[0], n, "input", what)
    recv = _splits(output_split_sizes, out.shape[0], n, "output", what)
    even = input_split_sizes in (None, []) and output_split_sizes in (None, [])
    row = int(np.prod(arr.shape[1:], dtype=np.int64))
    _agree_splits(pg, what, [c * row for c in send], [c * row for c in recv], arr.dtype)
    pending = pg._impl.all_to_all(out, arr, None if even else send, None if even else recv)
    return _complete(pending, async_op, [output])


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False):
    """Rank r's ``input_tensor_list[j]`` into rank j's ``output_tensor_list[r]`` (entries may
    differ in size; the dtype is one)."""
    what = "all_to_all"
    pg = _pg(group, what)
    if pg is None:
        return _skipped(async_op)
    n = pg.size()
    ins = _list(input_tensor_list, n, "input_tensor_list", what)
    outs = _list(output_tensor_list, n, "output_tensor_list", what)
    dtypes = {a.dtype for a in ins + outs}
    if len(dtypes) != 1:
        raise ValueError(f"{what}: every tensor must have one dtype, got "
                         f"{sorted(str(d) for d in dtypes)}")
    xp = get_array_module(ins[0])
    flat_in = xp.concatenate([xp.ascontiguousarray(a).reshape(-1) for a in ins])
    flat_out = xp.empty(sum(int(o.size) for o in outs), dtype=ins[0].dtype)
    sizes_in, sizes_out = [int(a.size) for a in ins], [int(o.size) for o in outs]
    _agree_splits(pg, what, sizes_in, sizes_out, ins[0].dtype)
    pending = pg._impl.all_to_all(flat_out, flat_in, sizes_in, sizes_out)

    def place(_):
        off = 0
        for o in outs:
            o[...] = flat_out[off:off + o.size].reshape(o.shape)
            off += o.size
    return _complete(pending, async_op, output_tensor_list, place)


# ---- point to point ---------------------------------------------------------------------------
def _p2p_peer(pg, peer, group_peer, name, what):
    r = _peer(pg, peer, group_peer, name, what, required=True)
    if r == pg.rank():
        raise ValueError(f"{what}: Invalid {'destination' if name == 'dst' else 'source'} rank: "
                         f"{'destination' if name == 'dst' else 'source'} rank should not be "
                         "the same as the rank of the current process.")
    return r


def isend(tensor, dst=None, group=None, tag=0, group_dst=None, _what="isend"):
    """Start sending ``tensor`` to rank ``dst``; returns a Work to ``wait()`` on."""
    pg = _pg(group, _what)
    arr = _array(tensor, _what)
    if pg is None:
        return None
    r = _p2p_peer(pg, dst, group_dst, "dst", _what)
    return Work(pg._impl.send(arr, r, int(tag)), [tensor])


def irecv(tensor, src=None, group=None, tag=0, group_src=None):
    """Start receiving into ``tensor`` from rank ``src`` (None: any rank); returns a Work whose
    ``source_rank()`` is the sender's world rank."""
    pg = _pg(group, "irecv")
    arr = _array(tensor, "irecv")
    if pg is None:
        return None
    r = None if src is None and group_src is None else _p2p_peer(pg, src, group_src, "src",
                                                                 "irecv")
    pending = pg._impl.recv(arr, r, int(tag))
    work = Work(pending, [tensor])
    work._pending = _Mapped(pending, lambda gr: pg._ranks[gr])
    return work


class _Mapped:
    """A Pending whose result goes through ``fn`` (a group rank to a world rank)."""

    def __init__(self, pending, fn):
        self.pending, self.fn = pending, fn

    def wait(self):
        return self.fn(self.pending.wait())

    def test(self):
        return self.pending.test()


def send(tensor, dst=None, group=None, tag=0, group_dst=None):
    """Send ``tensor`` to rank ``dst`` and wait until it has gone."""
    work = isend(tensor, dst, group, tag, group_dst, _what="send")
    if work is not None:
        work.wait()


def recv(tensor, src=None, group=None, tag=0, group_src=None):
    """Receive into ``tensor`` from rank ``src`` (None: any rank); returns the sender's world
    rank (-1 on a rank outside ``group``)."""
    work = irecv(tensor, src, group, tag, group_src)
    if work is None:
        return -1
    return work.source_rank()


class P2POp:
    """One send or receive of ``batch_isend_irecv``: ``P2POp(dist.isend, tensor, peer)``."""

    def __init__(self, op, tensor, peer=None, group=None, tag=0, group_peer=None):
        if op not in (isend, irecv):
            raise ValueError("P2POp: op must be minidl.distributed.isend or irecv")
        if peer is None and group_peer is None:  # checked here, as torch's
            raise ValueError("P2POp: give peer (a world rank) or group_peer (a rank in the "
                             "group)")
        if peer is not None and group_peer is not None:
            raise ValueError("P2POp: give peer or group_peer, not both")
        self.op, self.tensor, self.peer, self.group, self.tag = op, tensor, peer, group, tag
        self.group_peer = group_peer


def batch_isend_irecv(p2p_op_list):
    """Start every send and receive of the list; returns their Works."""
    if not p2p_op_list or not all(isinstance(p, P2POp) for p in p2p_op_list):
        raise ValueError("batch_isend_irecv: expected a non-empty list of P2POp")
    works = []
    for p in p2p_op_list:
        if p.op is isend:
            works.append(isend(p.tensor, p.peer, p.group, p.tag, p.group_peer))
        else:
            works.append(irecv(p.tensor, p.peer, p.group, p.tag, p.group_peer))
    return works


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank of ``group`` gets here."""
    pg = _pg(group, "barrier")
    if pg is None:
        return _skipped(async_op)
    _agree(pg, "barrier")
    return _complete(pg._impl.barrier_async(), async_op)


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    """A barrier that fails instead of hanging: rank 0 waits up to ``timeout`` (seconds or a
    timedelta; the group's timeout by default) for every other rank, and raises a RuntimeError
    naming the first rank that did not come (all of them with ``wait_all_ranks``); the ranks
    that came raise too, naming it. The job is not aborted."""
    pg = _pg(group, "monitored_barrier")
    if pg is None:
        return None
    if timeout is None:
        seconds = pg._impl.timeout
    else:
        seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout
    if float(seconds) <= 0:
        raise ValueError(f"monitored_barrier: timeout must be > 0 seconds, got {seconds}")
    pg._impl.monitored_barrier(float(seconds), bool(wait_all_ranks), pg._ranks)


# ---- picklable Python objects ---------------------------------------------------------------
def _all_gather_object(obj):
    """Every rank's picklable ``obj``, as a list indexed by rank (small metadata only)."""
    return _require("all_gather_object").all_gather_object(obj)


def all_gather_object(object_list, obj, group=None):
    """``object_list[r]`` = rank r's picklable ``obj`` (the list has one entry per rank)."""
    pg = _pg(group, "all_gather_object")
    if pg is None:
        return None
    if len(object_list) != pg.size():
        raise ValueError(f"all_gather_object: object_list has {len(object_list)} entries, the "
                         f"group has {pg.size()} ranks")
    _agree(pg, "all_gather_object")
    object_list[:] = pg._impl.all_gather_object(obj)


def gather_object(obj, object_gather_list=None, dst=None, group=None, group_dst=None):
    """Every rank's picklable ``obj`` into ``object_gather_list`` on rank ``dst``."""
    pg = _pg(group, "gather_object")
    if pg is None:
        return None
    root = _peer(pg, dst, group_dst, "dst", "gather_object")
    if pg.rank() == root:
        if object_gather_list is None or len(object_gather_list) != pg.size():
            raise ValueError(f"gather_object: on the destination rank object_gather_list must "
                             f"hold {pg.size()} entries")
    _agree(pg, "gather_object", root=root)
    got = pg._impl.gather_object(obj, root)
    if pg.rank() == root:
        object_gather_list[:] = got


def broadcast_object_list(object_list, src=None, group=None, device=None, group_src=None):
    """Replace ``object_list``'s entries on every rank by rank ``src``'s (same length)."""
    pg = _pg(group, "broadcast_object_list")
    if pg is None:
        return None
    root = _peer(pg, src, group_src, "src", "broadcast_object_list")
    _agree(pg, "broadcast_object_list", root=root, extra=(len(object_list),))
    got = pg._impl.broadcast_object(list(object_list), root)
    if len(got) != len(object_list):
        raise ValueError(f"broadcast_object_list: rank {src}'s list has {len(got)} entries, "
                         f"this rank's {len(object_list)}")
    object_list[:] = got


def scatter_object_list(scatter_object_output_list, scatter_object_input_list=None, src=None,
                        group=None, group_src=None):
    """``scatter_object_output_list[0]`` = rank ``src``'s ``scatter_object_input_list[r]`` on
    rank r."""
    pg = _pg(group, "scatter_object_list")
    if pg is None:
        return None
    root = _peer(pg, src, group_src, "src", "scatter_object_list")
    if not isinstance(scatter_object_output_list, list) or not scatter_object_output_list:
        raise ValueError("scatter_object_list: Expected argument scatter_object_output_list to "
                         "be a list of size at least 1.")
    objs = None
    if pg.rank() == root:
        objs = list(scatter_object_input_list or [])
        if len(objs) != pg.size():
            raise ValueError(f"scatter_object_list: on the source rank "
                             f"scatter_object_input_list must hold {pg.size()} entries, got "
                             f"{len(objs)}")
    _agree(pg, "scatter_object_list", root=root)
    scatter_object_output_list[0] = pg._impl.scatter_object(objs, root)


def __getattr__(name):
    """The submodules as attributes, imported when first used (torch.distributed.nn, .optim,
    .algorithms, .fsdp, .checkpoint)."""
    if name in ("nn", "optim", "algorithms", "fsdp", "checkpoint"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- node resources: one GPU and a share of the cores per rank ------------------------------
_THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _use_local_resources(local_rank, local_size):
    """Point CUDA at this rank's GPU, and give each rank on a node its share of the cores
    (unless the user set a thread count): otherwise N ranks each start one thread per core and
    fight over them."""
    from .. import backend

    backend.use_device(local_rank)
    if local_size <= 1 or any(os.environ.get(k) for k in _THREAD_VARS):
        return
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    # a launcher that binds ranks to cores (Open MPI does) already gave this rank its share
    share = usable if usable < (os.cpu_count() or usable) else usable // local_size
    from ..backend.cpu import tuning

    tuning.set_num_threads(max(1, share))


# ---- failure: one rank's uncaught exception takes the whole job down ------------------------
_previous_hook = None


def _install_abort_hook():
    global _previous_hook
    if _previous_hook is None:
        _previous_hook = sys.excepthook
        sys.excepthook = _abort_job


def _abort_job(exc_type, exc, tb):
    group = _group
    if group is None or group.size == 1:
        return (_previous_hook or sys.__excepthook__)(exc_type, exc, tb)
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(f"minidl.distributed: rank {group.rank} of {group.size} failed; "
                     f"aborting the job\n{text}")
    sys.stderr.flush()
    group.abort(1)


from .device_mesh import DeviceMesh, init_device_mesh  # noqa: E402  (torch.distributed's names)
