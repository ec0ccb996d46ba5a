"""What each rank runs for the multi-rank edge cases of tests/test_distributed_api.py, under
``mpiexec -n 2 python tests/_dist_api_edges_worker.py CASE OUTDIR``; each rank writes what it saw
to OUTDIR/CASE.rank<R>.json."""
from __future__ import annotations

import json
import os
import sys

import numpy as np

import minidl
import minidl.distributed as dist


def _catch(fn):
    try:
        fn()
    except Exception as exc:  # the test reads the type and message
        return f"{type(exc).__name__}: {exc}"
    return None


def _fd_check(rank, world, fn, shape, seed):
    """fn (Tensor -> Tensor) run on every rank: the gradient of the loss summed over ranks
    (sum_r p_r . fn(x_r)) that backward gives rank r's x, against central differences where
    one rank at a time moves one element of its x (the others keep theirs). The largest
    difference, the same on every rank."""
    rng = np.random.default_rng(seed + rank)
    x0 = rng.standard_normal(shape)
    proj = None

    def loss(xv, grad=False):
        nonlocal proj
        x = minidl.tensor(xv, dtype=minidl.float64, requires_grad=grad)
        y = fn(x)
        if proj is None:
            proj = minidl.tensor(np.random.default_rng(100 + seed + rank)
                                 .standard_normal(y.shape), dtype=minidl.float64)
        local = (y * proj).sum()
        if grad:
            local.backward()
            return x.grad.numpy()
        total = np.array([local.item()])
        dist.all_reduce(total)
        return float(total[0])

    analytic = loss(x0, grad=True)
    worst, eps = 0.0, 1e-6
    for q in range(world):
        for i in range(x0.size):
            moved = []
            for sign in (1.0, -1.0):
                xv = x0.copy()
                if rank == q:
                    xv.reshape(-1)[i] += sign * eps
                moved.append(loss(xv))
            if rank == q:
                worst = max(worst, abs((moved[0] - moved[1]) / (2 * eps)
                                       - analytic.reshape(-1)[i]))
    best = np.array([worst])
    dist.all_reduce(best, op="max")
    return float(best[0])


def _nn_collectives(rank, world):
    """distributed.nn's gather, scatter, reduce and all_to_all: values, and gradients against
    finite differences over the ranks."""
    import minidl.distributed.nn as dnn

    out = {}
    x = minidl.tensor(np.full((2,), rank + 1.0), dtype=minidl.float64)
    out["gather"] = [t.numpy().tolist() for t in dnn.gather(x, dst=1)]
    parts = [minidl.tensor(np.full((2,), 10.0 * j + rank), dtype=minidl.float64)
             for j in range(world)]
    out["scatter"] = dnn.scatter(parts, src=0).numpy().tolist()
    out["reduce"] = dnn.reduce(x, dst=0).numpy().tolist()
    outs = [minidl.zeros(rank + 1, dtype=minidl.float64) for _ in range(world)]
    ins = [minidl.tensor(np.full((j + 1,), 10.0 * rank + j), dtype=minidl.float64)
           for j in range(world)]
    out["all_to_all"] = [t.numpy().tolist() for t in dnn.all_to_all(outs, ins)]
    out["all_to_all_filled"] = [t.numpy().tolist() for t in outs]
    sizes = [(j + 1, 2) for j in range(world)]
    out["fd"] = {
        "gather": _fd_check(rank, world, lambda t: minidl.stack(dnn.gather(t * t, dst=1)),
                            (3,), 1),
        "scatter": _fd_check(rank, world, lambda t: dnn.scatter(
            [t[j] * (j + 1.0) for j in range(world)], src=1) ** 2, (world, 2), 2),
        # torch's reduce: only rank dst's output carries a gradient (the others' outputs
        # are their inputs, ignored by the backward), so the loss reads rank dst's alone
        "reduce": _fd_check(rank, world, lambda t: dnn.reduce(t * t, dst=1)
                            * (1.0 if rank == 1 else 0.0), (3,), 3),
        "all_to_all": _fd_check(rank, world, lambda t: minidl.cat([p.reshape(-1) for p in (
            dnn.all_to_all([minidl.zeros(*sizes[rank], dtype=minidl.float64)
                            for _ in range(world)],
                           [t[:(j + 1) * 2].reshape(j + 1, 2) ** 2 for j in range(world)]))]),
            (2 * world,), 4),
    }
    # second order: the gradient through gather, differentiated again
    z = minidl.tensor(np.arange(3.0) + rank, dtype=minidl.float64, requires_grad=True)
    w = minidl.tensor(np.arange(6.0).reshape(2, 3) + 1.0, dtype=minidl.float64)
    (g,) = minidl.autograd.grad((minidl.stack(dnn.gather(z * z, dst=0)) * w).sum(), z,
                                create_graph=True)
    (g * g).sum().backward()
    out["second_order"] = [g.detach().numpy().tolist(), z.grad.numpy().tolist()]
    return out


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
    out["nn"] = _nn_collectives(rank, world)
    # Work.wait(timeout): raises when the operation has not completed in time, and a later
    # wait still completes it
    late = minidl.zeros(1)
    if rank == 0:
        work = dist.irecv(late, src=1, tag=9)
        out["wait_timeout"] = [_catch(lambda: work.wait(timeout=0.2)), work.is_completed()]
        dist.barrier()
        out["wait_timeout"].append([work.wait(), float(late.item())])
    else:
        dist.barrier()
        dist.send(minidl.tensor([4.0]), dst=0, tag=9)
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
