"""What each rank runs for tests/test_audit_2026_12_07_c.py, under
``mpiexec -n 2 python tests/_dist_audit_worker.py CASE OUTDIR``; each rank writes what it saw
to OUTDIR/CASE.rank<R>.json."""
from __future__ import annotations

import json
import os
import sys

import minidl
import minidl.distributed as dist


def _catch(fn):
    try:
        fn()
    except Exception as exc:  # the test reads the type and message
        return f"{type(exc).__name__}: {exc}"
    return None


def case_audit(rank, world):
    out = {}
    x = minidl.tensor([float(rank)])
    # broadcast, reduce and send have no default source/destination in torch
    out["broadcast_no_src"] = _catch(lambda: dist.broadcast(x))
    out["reduce_no_dst"] = _catch(lambda: dist.reduce(x))
    out["send_no_dst"] = _catch(lambda: dist.send(x))
    out["isend_no_dst"] = _catch(lambda: dist.isend(x))
    # use_local_synchronization: only the group's members call new_group
    if rank == world - 1:
        solo = dist.new_group([rank], use_local_synchronization=True)
        y = minidl.tensor([5.0])
        dist.all_reduce(y, group=solo)
        out["local_group"] = [dist.get_process_group_ranks(solo), float(y.item())]
    z = minidl.tensor([1.0])
    dist.all_reduce(z)
    out["world_after"] = float(z.item())
    # a failed receive (a shorter message than the tensor) stays failed on a second wait
    if rank == 0:
        dist.send(minidl.tensor([1.0, 2.0]), dst=1)
    else:
        work = dist.irecv(minidl.zeros(4), src=0)
        first = _catch(work.wait)
        out["failed_recv"] = [first, _catch(work.wait), work.is_completed(), work.is_success(),
                              type(work.exception()).__name__]
    # complex tensors: sum/avg reduce (as (real, imag) pairs, as torch's); max is refused
    c = minidl.tensor([[1 + 2j, 3 - 1j]]) * (rank + 1)
    dist.all_reduce(c)
    a = minidl.tensor([2 + 4j]) * (rank + 1)
    dist.all_reduce(a, op="avg")
    rs = minidl.zeros(1, dtype=minidl.complex64)
    dist.reduce_scatter_tensor(rs, minidl.tensor([1 + 1j, 2 - 2j]) * (rank + 1))
    b = minidl.tensor([5 + 6j]) if rank == 0 else minidl.zeros(1, dtype=minidl.complex64)
    dist.broadcast(b, src=0)
    def pairs(t):
        return [[float(v.real), float(v.imag)] for v in t.numpy().reshape(-1).tolist()]
    out["complex"] = {"sum": pairs(c), "avg": pairs(a), "reduce_scatter": pairs(rs),
                      "broadcast": pairs(b),
                      "max": _catch(lambda: dist.all_reduce(minidl.tensor([1j]), op="max"))}
    # ZeRO: many one-parameter groups still spread over the ranks
    from minidl.distributed.optim import ZeroRedundancyOptimizer

    params = [minidl.nn.Parameter(minidl.zeros(4)) for _ in range(4)]
    opt = ZeroRedundancyOptimizer([{"params": [p]} for p in params],
                                  optimizer_class=minidl.optim.SGD, lr=0.1)
    out["zero_owners"] = [o[0] for o in opt._owners]
    return out


def main():
    case, outdir = sys.argv[1], sys.argv[2]
    os.environ.setdefault("MINIDL_DIST_TIMEOUT", "30")
    # -1: torch's defaults for "from the environment"
    dist.init_process_group(backend="mpi", timeout=30, world_size=-1, rank=-1)
    rank, world = dist.get_rank(), dist.get_world_size()
    if case == "audit":
        result = case_audit(rank, world)
    else:
        raise SystemExit(f"unknown case {case}")
    with open(os.path.join(outdir, f"{case}.rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
