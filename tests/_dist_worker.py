"""What each rank runs in tests/test_distributed.py (and tools/dist_gpu_check.sh), under
``mpiexec -n N python tests/_dist_worker.py CASE OUTDIR [DEVICE]``. Each rank writes what it
saw to OUTDIR/CASE.rank<R>.json (or .npz), and the test compares.

Cases: collectives, train (DDP equivalence, no_sync, shape mismatch), crash.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

import minidl
import minidl.distributed as dist
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim
from minidl.data import DataLoader, DistributedSampler, TensorDataset
from minidl.nn.parallel import DistributedDataParallel as DDP

STEPS, BATCH = 20, 32  # per rank: the single-process reference takes BATCH * world_size


def regression_data(n=1280, seed=7):
    """Inputs and class labels shared by every rank and the reference run (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.int64) + (x[:, 3] > 0.5)
    return x, y


def make_model(seed):
    minidl.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def train_reference(world, steps=STEPS, batch=BATCH, device="cpu"):
    """One process, batch ``world * batch``, from rank 0's initial weights: step s reads the
    samples that the ranks read."""
    x, y = regression_data()
    model = make_model(100).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for s in range(steps):
        idx = np.arange(s * batch * world, (s + 1) * batch * world)
        loss = F.cross_entropy(model(minidl.tensor(x[idx], device=device)),
                               minidl.tensor(y[idx], device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.numpy() for k, v in model.state_dict().items()}


def no_sync_reference(world, batch=BATCH, device="cpu"):
    """The gradients of one backward over every rank's micro-batches, from rank 0's weights."""
    x, y = regression_data()
    model = make_model(200).to(device)
    F.cross_entropy(model(minidl.tensor(x[:batch * world], device=device)),
                    minidl.tensor(y[:batch * world], device=device)).backward()
    return {n: p.grad.numpy() for n, p in model.named_parameters()}


def case_collectives(rank, world, device):
    import numba

    out = {"rank": rank, "world": world, "backend": dist.get_backend(), "device": device,
           "threads": numba.get_num_threads()}
    if device == "cuda":
        cp = minidl.backend.require_cuda()
        out["gpu"] = int(cp.cuda.Device().id)

    def dev(a):
        return minidl.backend.to_device(a, device)

    a = dev(np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * rank)
    dist.all_reduce(a)
    out["sum"] = minidl.backend.to_numpy(a).tolist()
    t = minidl.tensor(dev(np.full(4, rank + 1.0, dtype=np.float32)))
    dist.all_reduce(t, op="avg")
    out["avg_tensor"] = t.numpy().tolist()
    m = dev(np.array([rank, -rank], dtype=np.int64))
    dist.all_reduce(m, op="max")
    out["max_int"] = minidl.backend.to_numpy(m).tolist()
    dist.all_reduce(m, op=dist.ReduceOp.MIN)
    out["min_int"] = minidl.backend.to_numpy(m).tolist()
    base = dev(np.ones((3, 4), dtype=np.float32) * (rank + 1))
    view = base[:, 1]  # not contiguous: the values must land in place all the same
    dist.all_reduce(view)
    out["strided"] = minidl.backend.to_numpy(base).tolist()
    h = dev(np.full(3, 0.5 * (rank + 1), dtype=np.float16))
    dist.all_reduce(h)
    out["half"] = [float(v) for v in minidl.backend.to_numpy(h)]
    b = dev(np.full(5, float(rank), dtype=np.float64))
    dist.broadcast(b, src=world - 1)
    out["broadcast"] = minidl.backend.to_numpy(b).tolist()
    parts = [minidl.tensor(dev(np.zeros(2, dtype=np.float32))) for _ in range(world)]
    dist.all_gather(parts, minidl.tensor(dev(np.array([rank, rank * 10], dtype=np.float32))))
    out["all_gather"] = [p.numpy().tolist() for p in parts]
    dist.barrier()
    try:
        dist.broadcast(np.zeros(1), src=world)
    except ValueError as exc:
        out["bad_src"] = str(exc)

    # DistributedSampler: the ranks' shards of one epoch, gathered on every rank
    ds = TensorDataset(np.arange(11), np.arange(11))
    sampler = DistributedSampler(ds, shuffle=True, seed=3)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        mine = [int(v) for (xb, _) in DataLoader(ds, batch_size=4, sampler=sampler)
                for v in xb.numpy()]
        epochs.append(dist._all_gather_object(mine))
    out["sampler_epochs"] = epochs
    out["sampler_len"] = len(sampler)
    return out


def case_train(rank, world, device, outdir):
    out = {"rank": rank}
    # the same architecture with one layer a different size on rank 1: refused, naming it
    wrong = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3 + (rank == 1)))
    try:
        DDP(wrong)
        out["mismatch"] = None
    except ValueError as exc:
        out["mismatch"] = str(exc)

    x, y = regression_data()
    model = make_model(seed=100 + rank).to(device)  # different initial weights on every rank
    ddp = DDP(model, bucket_cap_mb=0.0005)  # ~500 bytes: several buckets even for this model
    ddp.eval()
    out["passes_through"] = (ddp.module is model and not model[0].training
                             and [id(p) for p in ddp.parameters()] == [id(p) for p in
                                                                        model.parameters()])
    ddp.train()
    opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for s in range(STEPS):
        start = s * BATCH * world + rank * BATCH  # this rank's half of the reference batch
        xb = minidl.tensor(x[start:start + BATCH], device=device)
        yb = minidl.tensor(y[start:start + BATCH], device=device)
        loss = F.cross_entropy(ddp(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s == 0:
            out["buckets_after_first_sync"] = len(ddp._buckets)
    state = {k: v.numpy() for k, v in ddp.state_dict().items()}
    np.savez(os.path.join(outdir, f"train.rank{rank}.npz"), **state)

    # no_sync: two micro-batches accumulated locally, the second one's backward outside
    # no_sync averages the sum; equals one backward over both micro-batches of every rank
    acc = DDP(make_model(seed=200 + rank).to(device))
    xa = minidl.tensor(x[:BATCH * world], device=device)
    ya = minidl.tensor(y[:BATCH * world], device=device)
    half = BATCH // 2
    for i, part in enumerate((slice(0, half), slice(half, BATCH))):
        sl = slice(rank * BATCH + part.start, rank * BATCH + part.stop)
        ctx = acc.no_sync() if i == 0 else _nullcontext()
        with ctx:
            # the loss is a mean over a micro-batch: halve it so the sum is the batch mean
            (F.cross_entropy(acc(xa[sl]), ya[sl]) * 0.5).backward()
        if i == 0:  # inside no_sync the gradient is still this rank's own
            local = acc.module[0].weight.grad.numpy().tolist()
    grads = {n: p.grad.numpy() for n, p in acc.named_parameters()}
    np.savez(os.path.join(outdir, f"nosync.rank{rank}.npz"), **grads)
    local_grads = [np.array(g) for g in dist._all_gather_object(local)]
    out["no_sync_local_differs"] = bool(world > 1 and not np.allclose(local_grads[0],
                                                                      local_grads[1]))
    return out


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def case_crash(rank, world, device):
    t = np.ones(4, dtype=np.float32)
    dist.all_reduce(t)
    if rank == world - 1:
        raise ZeroDivisionError(f"rank {rank} fails on purpose")
    dist.all_reduce(t)  # the other ranks wait here for a peer that will never come
    return {"rank": rank, "unexpected": "the job survived a failed rank"}


def case_exit(rank, world, device):
    t = np.ones(4, dtype=np.float32)
    dist.all_reduce(t)
    if rank == world - 1:
        sys.exit(3)  # no exception: excepthook never runs; the others learn it on leaving
    dist.all_reduce(t)
    return {"rank": rank, "unexpected": "the job survived a rank that left"}


def main():
    case, outdir = sys.argv[1], sys.argv[2]
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    backend = sys.argv[4] if len(sys.argv) > 4 else "mpi"
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if case == "collectives":
        result = case_collectives(rank, world, device)
    elif case == "train":
        result = case_train(rank, world, device, outdir)
    elif case == "crash":
        result = case_crash(rank, world, device)
    elif case == "exit":
        result = case_exit(rank, world, device)
    else:
        raise SystemExit(f"unknown case {case}")
    with open(os.path.join(outdir, f"{case}.rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
