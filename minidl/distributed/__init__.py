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

from ..backend import get_array_module
from ..tensor import Tensor

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "is_available",
           "get_rank", "get_world_size", "get_local_rank", "get_backend", "all_reduce",
           "broadcast", "all_gather", "barrier", "ReduceOp", "launched_world_size"]

DEFAULT_TIMEOUT = 1800.0  # seconds, as PyTorch's default for CPU process groups

_group = None  # the process group of this process (one per process, as PyTorch's default)


class ReduceOp:
    """Reduction names; plain strings ("sum", "avg", "max", "min") work as well."""
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"


OPS = (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN)


def is_available() -> bool:
    """Whether mpi4py can be imported (without initialising MPI)."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


def launched_world_size():
    """The number of ranks when this process was started by an MPI launcher (mpiexec, srun),
    from the launcher's environment; None when it was not."""
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE",
                "SLURM_NTASKS"):
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return None


def init_process_group(backend="mpi", timeout=None, world_size=None, rank=None):
    """Join the job's process group. ``backend`` is "mpi" or "nccl"; ``world_size`` and ``rank``,
    if given, must agree with what the MPI launcher assigned (they are not chosen here).
    ``timeout``: seconds a collective may wait before the job is aborted (default 1800; a
    ``datetime.timedelta`` works too)."""
    global _group
    if _group is not None:
        raise RuntimeError("init_process_group: the process group is already initialised "
                           "(call destroy_process_group() first)")
    backend = str(backend).lower()
    if backend not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: unknown backend {backend!r}; expected 'mpi' or "
                         "'nccl'")
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
    if world_size is not None and int(world_size) != group.size:
        raise ValueError(f"init_process_group: world_size={world_size} but the MPI launcher "
                         f"started {group.size} ranks (mpiexec -n sets it)")
    if rank is not None and int(rank) != group.rank:
        raise ValueError(f"init_process_group: rank={rank} but the MPI launcher made this "
                         f"process rank {group.rank}")
    _use_local_resources(group.local_rank, group.local_size)
    if backend == "nccl":
        from .nccl import NCCLGroup

        group = NCCLGroup(group)
    _group = group
    _install_abort_hook()


def destroy_process_group():
    """Leave the process group (MPI itself stays up until the process exits)."""
    global _group
    if _group is None:
        _require("destroy_process_group")
    group, _group = _group, None
    group.close()


def is_initialized() -> bool:
    return _group is not None


def _require(what):
    if _group is None:
        raise RuntimeError(
            f"minidl.distributed.{what}: the default process group is not initialised; call "
            "minidl.distributed.init_process_group(backend='mpi') first (and launch the script "
            "with mpiexec -n N)")
    return _group


def get_rank() -> int:
    return _require("get_rank").rank


def get_world_size() -> int:
    return _require("get_world_size").size


def get_local_rank() -> int:
    """This process's rank among the ranks on its node (it picks the node's GPU)."""
    return _require("get_local_rank").local_rank


def get_backend() -> str:
    return _require("get_backend").name


# ---- collectives ------------------------------------------------------------------------------
def _array(x, what):
    if isinstance(x, Tensor):
        return x.data
    xp = get_array_module(x)
    if not isinstance(x, xp.ndarray):
        raise TypeError(f"{what}: expected a Tensor or a numpy/cupy array, got {type(x).__name__}"
                        " (collectives work in place, so Python numbers cannot be used)")
    return x


def all_reduce(x, op="sum"):
    """Reduce ``x`` over all ranks, in place on every rank. ``op``: sum, avg, max or min."""
    group = _require("all_reduce")
    op = str(op).lower()
    if op not in OPS:
        raise ValueError(f"all_reduce: unknown op {op!r}; expected one of {', '.join(OPS)}")
    arr = _array(x, "all_reduce")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"all_reduce: cannot reduce dtype {arr.dtype}")
    if op == "avg" and arr.dtype.kind != "f":
        raise TypeError(f"all_reduce: op 'avg' needs a floating-point array, got {arr.dtype}")
    group.all_reduce(arr, op)
    return x


def broadcast(x, src=0):
    """Copy rank ``src``'s ``x`` into ``x`` on every other rank, in place."""
    group = _require("broadcast")
    _check_rank(src, group, "broadcast")
    group.broadcast(_array(x, "broadcast"), int(src))
    return x


def all_gather(tensor_list, x):
    """Fill ``tensor_list[r]`` with rank r's ``x`` (PyTorch's signature: the list holds
    world_size arrays or Tensors of x's shape and dtype, written in place)."""
    group = _require("all_gather")
    arr = _array(x, "all_gather")
    outs = [_array(t, "all_gather") for t in tensor_list]
    if len(outs) != group.size:
        raise ValueError(f"all_gather: tensor_list has {len(outs)} entries, the world size is "
                         f"{group.size}")
    for i, o in enumerate(outs):
        if o.shape != arr.shape or o.dtype != arr.dtype:
            raise ValueError(f"all_gather: tensor_list[{i}] has shape {o.shape} and dtype "
                             f"{o.dtype}, the input has {arr.shape} and {arr.dtype}")
    gathered = group.all_gather(arr)  # (world_size, *shape)
    for o, part in zip(outs, gathered):
        o[...] = part
    return tensor_list


def barrier():
    """Wait until every rank gets here."""
    _require("barrier").barrier()


def _all_gather_object(obj):
    """Every rank's picklable ``obj``, as a list indexed by rank (small metadata only)."""
    return _require("all_gather_object").all_gather_object(obj)


def _check_rank(r, group, what):
    if not 0 <= int(r) < group.size:
        raise ValueError(f"{what}: rank {r} is out of range for world size {group.size}")


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
