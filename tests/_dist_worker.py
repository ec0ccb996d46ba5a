"""What each rank runs in tests/test_distributed.py (and tools/dist_gpu_check.sh), under
``mpiexec -n N python tests/_dist_worker.py CASE OUTDIR [DEVICE]``. Each rank writes what it
saw to OUTDIR/CASE.rank<R>.json (or .npz), and the test compares.

Cases: collectives, api (the rest of torch.distributed's collectives, point to point, objects,
subgroups, async work), syncbn and autograd (SyncBatchNorm and distributed.nn.functional against
one process), train (DDP equivalence, no_sync, shape mismatch), crash, exit.
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


def _catch(fn):
    try:
        fn()
    except (ValueError, TypeError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def case_api(rank, world, device):
    """Everything torch.distributed offers beyond all_reduce/broadcast/all_gather, on the world
    and on subgroups. Rank r's inputs hold r-dependent values, so each result shows which
    ranks' data it combined."""
    B = minidl.backend

    def dev(a):
        return B.to_device(np.asarray(a), device)

    def host(a):
        return B.to_numpy(a.data if isinstance(a, minidl.Tensor) else a).tolist()

    out = {"rank": rank}
    # reduce: only dst gets the result; product / bitwise ops
    a = dev(np.array([rank + 1.0, 2.0 * (rank + 1)], dtype=np.float32))
    dist.reduce(a, dst=1)
    out["reduce"] = host(a)
    p = dev(np.array([rank + 2, 3], dtype=np.int64))
    dist.all_reduce(p, op=dist.ReduceOp.PRODUCT)
    out["product"] = host(p)
    bits = dev(np.array([1 << rank, 0b110], dtype=np.int32))
    dist.all_reduce(bits, op=dist.ReduceOp.BOR)
    out["bor"] = host(bits)
    out["avg_int"] = _catch(lambda: dist.all_reduce(dev(np.ones(2, np.int64)), op="avg"))
    out["band_float"] = _catch(lambda: dist.all_reduce(dev(np.ones(2, np.float32)), op="band"))
    # gather / scatter
    g = minidl.tensor(dev(np.full(3, rank * 10.0, dtype=np.float32)))
    gl = [minidl.zeros(3) .to(device) for _ in range(world)] if rank == 0 else None
    dist.gather(g, gl, dst=0)
    out["gather"] = [host(t) for t in gl] if gl else None
    out["gather_nondst_list"] = _catch(lambda: dist.gather(g, [g, g], dst=0)) if rank == 1 \
        else None
    sc = minidl.zeros(2).to(device)
    sl = [minidl.tensor(dev(np.array([r, r + 0.5], dtype=np.float32))) for r in range(world)] \
        if rank == world - 1 else None
    dist.scatter(sc, sl, src=world - 1)
    out["scatter"] = host(sc)
    # all_gather_into_tensor: concatenated and stacked
    x = minidl.tensor(dev(np.array([[rank, rank + 0.25]], dtype=np.float32)))
    cat = minidl.zeros(world, 2).to(device)
    dist.all_gather_into_tensor(cat, x)
    out["agit_cat"] = host(cat)
    stk = minidl.zeros(world, 1, 2).to(device)
    dist.all_gather_into_tensor(stk, x)
    out["agit_stack"] = host(stk)
    out["agit_bad"] = _catch(lambda: dist.all_gather_into_tensor(minidl.zeros(3, 2), x.cpu()))
    # reduce_scatter (list and tensor forms)
    rs = minidl.zeros(2).to(device)
    dist.reduce_scatter(rs, [minidl.tensor(dev(np.array([j, 100.0 * rank], np.float32)))
                             for j in range(world)])
    out["reduce_scatter"] = host(rs)
    rst = minidl.zeros(2).to(device)
    big = minidl.tensor(dev(np.arange(2 * world, dtype=np.float32) + rank))
    dist.reduce_scatter_tensor(rst, big, op="max")
    out["reduce_scatter_tensor_max"] = host(rst)
    # all_to_all_single: equal and uneven splits
    inp = minidl.tensor(dev(np.arange(2 * world, dtype=np.float32) + 100 * rank))
    o = minidl.zeros(2 * world).to(device)
    dist.all_to_all_single(o, inp)
    out["a2a_even"] = host(o)
    # rank 0 sends 1 row to rank 0 and 2 rows to rank 1; rank 1 sends 2 and 1
    send_sizes = [1, 2] if rank == 0 else [2, 1]
    recv_sizes = [1, 2] if rank == 0 else [2, 1]
    rows = minidl.tensor(dev(np.arange(6, dtype=np.float32).reshape(3, 2) + 10 * rank))
    o2 = minidl.zeros(sum(recv_sizes), 2).to(device)
    dist.all_to_all_single(o2, rows, recv_sizes, send_sizes)
    out["a2a_uneven"] = host(o2)
    out["a2a_bad"] = _catch(lambda: dist.all_to_all_single(o2, rows, [1, 1], send_sizes))
    # all_to_all with lists of different sizes
    ins = [minidl.tensor(dev(np.full(j + 1, float(rank * 10 + j), np.float32)))
           for j in range(world)]
    outs = [minidl.zeros(rank + 1).to(device) for _ in range(world)]
    dist.all_to_all(outs, ins)
    out["a2a_list"] = [host(t) for t in outs]
    # point to point: a ring exchange with isend/irecv (blocking sends would deadlock on large
    # messages), send/recv with a tag, recv from any source
    n = 1 << 18  # 1 MB of float32: beyond MPI's eager limit
    mine = minidl.tensor(dev(np.full(n, float(rank), dtype=np.float32)))
    theirs = minidl.zeros(n).to(device)
    peer = (rank + 1) % world
    works = dist.batch_isend_irecv([dist.P2POp(dist.isend, mine, peer),
                                    dist.P2POp(dist.irecv, theirs, (rank - 1) % world)])
    for w in works:
        w.wait()
    out["ring"] = [float(host(theirs[:1])[0]), float(host(theirs[-1:])[0])]
    if rank == 0:
        dist.send(minidl.tensor(dev(np.array([7.0, 8.0], np.float32))), dst=1, tag=5)
        out["any_source"] = None
    elif rank == 1:
        got = minidl.zeros(2).to(device)
        sender = dist.recv(got, tag=5)
        out["any_source"] = [sender, host(got)]
    out["send_self"] = _catch(lambda: dist.send(mine, dst=rank))
    # async collectives: Work.wait, is_completed, result
    aw = minidl.tensor(dev(np.full(4, rank + 1.0, np.float32)))
    work = dist.all_reduce(aw, async_op=True)
    work.wait()
    out["async"] = [work.is_completed(), host(work.result()[0])]
    out["barrier_async"] = dist.barrier(async_op=True).wait()
    # objects
    objs = [None] * world
    dist.all_gather_object(objs, {"rank": rank, "name": f"r{rank}"})
    out["all_gather_object"] = objs
    lst = [rank, "x"] if rank == 1 else [None, None]
    dist.broadcast_object_list(lst, src=1)
    out["broadcast_object_list"] = lst
    gathered = [None] * world if rank == 0 else None
    dist.gather_object((rank, rank * rank), gathered, dst=0)
    out["gather_object"] = [list(t) for t in gathered] if gathered else None
    so = [None]
    dist.scatter_object_list(so, [{"to": r} for r in range(world)] if rank == 0 else None, src=0)
    out["scatter_object_list"] = so[0]
    # subgroups: {1} alone and {0, 1} in reverse order (torch sorts the ranks)
    solo = dist.new_group([world - 1])
    pair = dist.new_group([1, 0])
    out["solo_member"] = solo is not dist.GroupMember.NON_GROUP_MEMBER
    out["solo_rank"] = dist.get_rank(solo)
    out["pair_ranks"] = dist.get_process_group_ranks(pair)
    out["pair_rank"] = [dist.get_rank(pair), dist.get_world_size(pair),
                        dist.get_group_rank(pair, rank), dist.get_global_rank(pair, 1)]
    s = minidl.tensor(dev(np.full(2, rank + 1.0, np.float32)))
    dist.all_reduce(s, group=solo)  # a no-op warning outside the group, a sum of one inside
    out["solo_sum"] = host(s)
    t = minidl.tensor(dev(np.full(2, rank + 1.0, np.float32)))
    dist.all_reduce(t, group=pair)
    out["pair_sum"] = host(t)
    b = minidl.tensor(dev(np.full(2, float(rank), np.float32)))
    dist.broadcast(b, group=pair, group_src=1)
    out["pair_broadcast_group_src"] = host(b)
    out["not_member_src"] = _catch(lambda: dist.broadcast(b, src=0, group=solo)) \
        if out["solo_member"] and world > 1 else None
    # DistributedDataParallel with torch's arguments, over a subgroup
    net = make_model(seed=300 + rank).to(device)
    if out["solo_member"]:
        ddp = DDP(net, device_ids=[0], process_group=solo, find_unused_parameters=True)
        F.cross_entropy(ddp(minidl.ones(2, 10).to(device)),
                        minidl.tensor([0, 1], device=device)).backward()
        local = make_model(seed=300 + rank).to(device)
        F.cross_entropy(local(minidl.ones(2, 10).to(device)),
                        minidl.tensor([0, 1], device=device)).backward()
        out["ddp_solo_is_local"] = bool(np.allclose(host(ddp.module[0].weight.grad),
                                                    host(local[0].weight.grad)))
    else:
        out["ddp_solo_is_local"] = _catch(lambda: DDP(net, process_group=solo))
    out["ddp_two_devices"] = _catch(lambda: DDP(net, device_ids=[0, 1]))
    dist.destroy_process_group(pair)
    out["destroyed"] = _catch(lambda: dist.all_reduce(t, group=pair))
    dist.barrier()
    return out


SYNC_SIZES = (3, 5)  # the samples each of 2 ranks holds: unequal, so counts must weigh


def syncbn_data():
    """Inputs (a large offset: the statistics must not cancel), the loss weights, and the
    conv/bn initial weights, all float64, shared by the ranks and the one-process reference."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((sum(SYNC_SIZES), 3, 5, 5)) + 1e4
    r = rng.standard_normal((sum(SYNC_SIZES), 4, 3, 3))
    return x, r


def syncbn_model(sync):
    minidl.manual_seed(5)
    bn = nn.SyncBatchNorm(4) if sync else nn.BatchNorm2d(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bn, nn.ReLU()).double()
    with minidl.no_grad():
        bn.weight.data[...] = np.array([1.0, 0.5, 2.0, -1.0])
        bn.bias.data[...] = np.array([0.0, 0.1, -0.2, 0.3])
    return model


def gradient_penalty(model, x, r, device="cpu"):
    """A second-order step: the input gradient with create_graph, then |gradient|^2 backward."""
    xb = minidl.tensor(x, requires_grad=True, dtype=minidl.float64, device=device)
    loss = (model(xb) * minidl.tensor(r, dtype=minidl.float64, device=device)).sum()
    (gx,) = minidl.autograd.grad(loss, xb, create_graph=True)
    (gx * gx).sum().backward()
    got = {"gp.gx": gx.detach().numpy(), "gp.x": xb.grad.numpy()}
    for name, p in model.named_parameters():
        if p.grad is not None:  # (the batch norm's bias does not reach the input gradient)
            got[f"gp.{name}"] = p.grad.numpy()
        p.grad = None
    return got


def case_syncbn(rank, world, device, outdir):
    """Two training steps of conv -> SyncBatchNorm -> ReLU on this rank's share of the batch;
    writes outputs, input gradients, weight gradients and running statistics."""
    x, r = syncbn_data()
    lo = sum(SYNC_SIZES[:rank])
    sl = slice(lo, lo + SYNC_SIZES[rank])
    model = syncbn_model(sync=True).to(device)
    saved = {}
    for step in range(2):
        xb = minidl.tensor(x[sl], requires_grad=True, dtype=minidl.float64, device=device)
        y = model(xb)
        (y * minidl.tensor(r[sl], dtype=minidl.float64, device=device)).sum().backward()
        saved[f"y{step}"] = y.numpy()
        saved[f"gx{step}"] = xb.grad.numpy()
        for name, p in model.named_parameters():
            saved[f"g{step}.{name}"] = p.grad.numpy()
            p.grad = None
    for name, b in model.named_buffers():
        saved[name] = b.numpy().copy()  # (numpy() shares the buffer)
    model.eval()
    saved["eval"] = model(minidl.tensor(x[sl], dtype=minidl.float64, device=device)).numpy()
    model.train()
    saved.update(gradient_penalty(model, x[sl], r[sl], device))
    # converting a model keeps its weights and statistics
    plain = syncbn_model(sync=False)
    conv = nn.SyncBatchNorm.convert_sync_batchnorm(plain)
    saved["converted"] = np.array([isinstance(conv[1], nn.SyncBatchNorm),
                                   conv[1].weight is plain[1].weight])
    np.savez(os.path.join(outdir, f"syncbn.rank{rank}.npz"), **saved)
    return {"rank": rank}


def case_autograd(rank, world, device, outdir):
    """distributed.nn.functional: the gradient on each rank of a loss summed over ranks."""
    import minidl.distributed.nn as dnn

    def w(seed, shape, grad=False):
        a = np.random.default_rng(seed).standard_normal(shape)
        return minidl.tensor(a, requires_grad=grad, dtype=minidl.float64, device=device)

    def zeros(*shape):
        return minidl.zeros(*shape, dtype=minidl.float64).to(device)

    out = {}
    x = w(rank, (2, 3), grad=True)
    parts = dnn.all_gather(x)
    (minidl.cat(parts) * w(100 + rank, (2 * world, 3))).sum().backward()
    out["all_gather"] = [minidl.cat(parts).numpy(), x.grad.numpy()]
    x.grad = None
    y = dnn.all_reduce(x * (rank + 1.0))
    (y * w(200 + rank, (2, 3))).sum().backward()
    out["all_reduce"] = [y.numpy(), x.grad.numpy()]
    x.grad = None
    y = dnn.broadcast(x, src=1)
    (y * w(300 + rank, (2, 3))).sum().backward()
    out["broadcast"] = [y.numpy(), x.grad.numpy()]
    x.grad = None
    y = dnn.reduce_scatter(zeros(2, 3), [x * float(j + 1) for j in range(world)])
    (y * w(400 + rank, (2, 3))).sum().backward()
    out["reduce_scatter"] = [y.numpy(), x.grad.numpy()]
    rows = w(500 + rank, (3, 2), grad=True)
    sizes = [1, 2] if rank == 0 else [2, 1]
    y = dnn.all_to_all_single(zeros(3, 2), rows, sizes, sizes)
    (y * w(600 + rank, (3, 2))).sum().backward()
    out["all_to_all_single"] = [y.numpy(), rows.grad.numpy()]
    # second order through a collective: d/dz of |g|^2, g the gradient through all_reduce
    z = w(700 + rank, (4,), grad=True)
    (g,) = minidl.autograd.grad((dnn.all_reduce(z * z) * w(800 + rank, (4,))).sum(), z,
                                create_graph=True)
    (g * g).sum().backward()
    out["second_order"] = [g.detach().numpy(), z.grad.numpy()]
    np.savez(os.path.join(outdir, f"autograd.rank{rank}.npz"),
             **{f"{k}.{i}": a for k, pair in out.items() for i, a in enumerate(pair)})
    return {"rank": rank}


JOIN_STEPS = (3, 5)  # the batches each of 2 ranks holds


def join_reference(batch=BATCH):
    """One process: both ranks' batches averaged while both train, then rank 1's alone at
    half weight (join divides by the initial world size)."""
    x, y = regression_data()
    model = make_model(400)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for s in range(max(JOIN_STEPS)):
        losses = []
        for rank, steps in enumerate(JOIN_STEPS):
            if s < steps:
                start = (s * 2 + rank) * batch
                losses.append(F.cross_entropy(model(minidl.tensor(x[start:start + batch])),
                                              minidl.tensor(y[start:start + batch])))
        opt.zero_grad()
        (sum(losses) * 0.5).backward()
        opt.step()
    return {k: v.numpy() for k, v in model.state_dict().items()}


def case_join(rank, world, device, outdir):
    """DDP under join() with uneven inputs; comm hooks; throw_on_early_termination."""
    from minidl.distributed.algorithms.ddp_comm_hooks import default_hooks

    x, y = regression_data()
    out = {"rank": rank}

    def batch(s):
        start = (s * 2 + rank) * BATCH
        return (minidl.tensor(x[start:start + BATCH], device=device),
                minidl.tensor(y[start:start + BATCH], device=device))

    ddp = DDP(make_model(400 + rank).to(device))
    opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    with ddp.join():
        for s in range(JOIN_STEPS[rank]):
            xb, yb = batch(s)
            opt.zero_grad()
            F.cross_entropy(ddp(xb), yb).backward()
            opt.step()
    np.savez(os.path.join(outdir, f"join.rank{rank}.npz"),
             **{k: v.numpy() for k, v in ddp.state_dict().items()})

    # throw_on_early_termination: every rank raises once one runs out
    ddp2 = DDP(make_model(1).to(device))
    try:
        with ddp2.join(throw_on_early_termination=True):
            for s in range(JOIN_STEPS[rank]):
                xb, yb = batch(s)
                F.cross_entropy(ddp2(xb), yb).backward()
        out["throw"] = None
    except RuntimeError as exc:
        out["throw"] = str(exc)
        out["throw_steps"] = s

    # comm hooks: the stock ones against DDP's own averaging, and a custom one with state
    grads = {}
    for name in ("none", "allreduce", "fp16", "bf16", "custom"):
        model = DDP(make_model(500 + rank).to(device), bucket_cap_mb=0.0005)
        calls = []
        if name == "allreduce":
            model.register_comm_hook(None, default_hooks.allreduce_hook)
        elif name == "fp16":
            model.register_comm_hook(None, default_hooks.fp16_compress_hook)
        elif name == "bf16":
            model.register_comm_hook(None, default_hooks.bf16_compress_hook)
        elif name == "custom":
            def hook(state, bucket):
                state.append((bucket.index(), bucket.is_last(), len(bucket.parameters())))
                buf = bucket.buffer()
                work = dist.all_reduce(buf, op="max", async_op=True)
                return work.get_future().then(lambda fut: fut.value()[0])
            model.register_comm_hook(calls, hook)
        xb, yb = batch(0)
        F.cross_entropy(model(xb), yb).backward()
        grads[name] = {n: p.grad.numpy() for n, p in model.named_parameters()}
        if name == "custom":
            out["custom_calls"] = calls
            try:
                model.register_comm_hook(None, hook)
            except RuntimeError as exc:
                out["hook_twice"] = str(exc)
    np.savez(os.path.join(outdir, f"hooks.rank{rank}.npz"),
             **{f"{h}.{n}": g for h, d in grads.items() for n, g in d.items()})
    return out


def zero_reference(steps=6, batch=BATCH, world=2):
    """One process, Adam with a step-decayed learning rate, on every rank's batches at once."""
    x, y = regression_data()
    model = make_model(600)
    opt = optim.Adam([{"params": model[0].parameters()},
                      {"params": model[2].parameters(), "lr": 0.02}], lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for s in range(steps):
        idx = np.arange(s * batch * world, (s + 1) * batch * world)
        opt.zero_grad()
        F.cross_entropy(model(minidl.tensor(x[idx])), minidl.tensor(y[idx])).backward()
        opt.step()
        sched.step()
    state = opt.state_dict()
    return ({k: v.numpy() for k, v in model.state_dict().items()},
            {int(i): {n: (t.numpy() if hasattr(t, "numpy") else t) for n, t in st.items()}
             for i, st in state["state"].items()})


def case_zero(rank, world, device, outdir):
    """ZeroRedundancyOptimizer(Adam) under DDP == one process's Adam; its state is split."""
    from minidl.distributed.optim import ZeroRedundancyOptimizer

    x, y = regression_data()
    ddp = DDP(make_model(600 + rank).to(device))
    model = ddp.module
    opt = ZeroRedundancyOptimizer([{"params": model[0].parameters()},
                                   {"params": model[2].parameters(), "lr": 0.02}],
                                  optimizer_class=optim.Adam, lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for s in range(6):
        start = s * BATCH * world + rank * BATCH
        opt.zero_grad()
        F.cross_entropy(ddp(minidl.tensor(x[start:start + BATCH], device=device)),
                        minidl.tensor(y[start:start + BATCH], device=device)).backward()
        opt.step()
        sched.step()
    out = {"rank": rank, "local_params": len(opt.state),
           "lr": [g["lr"] for g in opt.param_groups]}
    try:
        opt.state_dict()
    except RuntimeError as exc:
        out["not_consolidated"] = str(exc)
    opt.consolidate_state_dict(to=0)
    saved = {f"param.{k}": v.numpy() for k, v in model.state_dict().items()}
    if rank == 0:
        full = opt.state_dict()
        out["state_keys"] = sorted(int(k) for k in full["state"])
        for i, st in full["state"].items():
            for n, t in st.items():
                saved[f"state.{i}.{n}"] = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
        # a fresh ZeRO on rank 0's consolidated state: each rank loads its share
        blob = full
    else:
        blob = None
    holder = [blob]
    dist.broadcast_object_list(holder, src=0)
    fresh = ZeroRedundancyOptimizer([{"params": model[0].parameters()},
                                     {"params": model[2].parameters(), "lr": 0.02}],
                                    optimizer_class=optim.Adam, lr=0.01)
    fresh.load_state_dict(holder[0])
    out["reloaded_lr"] = [g["lr"] for g in fresh.param_groups]
    out["reloaded_steps"] = sorted({float(np.asarray(st["step"].numpy() if hasattr(
        st["step"], "numpy") else st["step"])) for st in fresh.state.values()})
    np.savez(os.path.join(outdir, f"zero.rank{rank}.npz"), **saved)
    return out


def case_mismatch(rank, world, device):
    """Collectives whose arguments differ between ranks: every rank raises, naming them, and
    the job goes on (nothing hangs, nothing is half-reduced)."""
    B = minidl.backend
    out = {"rank": rank}
    out["size"] = _catch(lambda: dist.all_reduce(B.to_device(np.ones(3 + rank, np.float32),
                                                             device)))
    out["dtype"] = _catch(lambda: dist.all_reduce(
        B.to_device(np.ones(3, np.float32 if rank == 0 else np.float64), device)))
    out["kind"] = _catch(dist.barrier if rank == 0 else
                         lambda: dist.all_reduce(np.ones(3, np.float32)))
    out["root"] = _catch(lambda: dist.broadcast(np.ones(2), src=rank))
    sizes = [1, 1] if rank == 0 else [2, 0]
    out["splits"] = _catch(lambda: dist.all_to_all_single(
        np.zeros(2, np.float32), np.zeros(2, np.float32), [1, 1], sizes))
    out["new_group"] = _catch(lambda: dist.new_group([rank]))  # each names only itself
    if rank == 0:
        dist.send(np.arange(4, dtype=np.float32), dst=1)
        dist.send(np.arange(2, dtype=np.float32), dst=1, tag=1)
        out["recv_small"] = out["recv_big"] = None
    elif rank == 1:
        out["recv_small"] = _catch(lambda: dist.recv(np.zeros(2, np.float32), src=0))
        out["recv_big"] = _catch(lambda: dist.recv(np.zeros(3, np.float32), src=0, tag=1))
    x = np.ones(2, dtype=np.float32)
    dist.all_reduce(x)
    out["after"] = x.tolist()
    return out


def case_monitored(rank, world, device):
    """monitored_barrier: passes when all come; names the late rank when one is late."""
    import time

    out = {"rank": rank}
    dist.barrier()  # the ranks come from the cases before at different times: start together
    t0 = time.monotonic()
    dist.monitored_barrier(timeout=5)
    out["ok_seconds"] = time.monotonic() - t0
    if rank == world - 1:
        time.sleep(4.0)  # late: well past the 1 s timeout below, even on a busy machine
    t0 = time.monotonic()
    out["late"] = _catch(lambda: dist.monitored_barrier(timeout=1, wait_all_ranks=True))
    out["late_seconds"] = time.monotonic() - t0
    dist.barrier()  # the job goes on: nothing was aborted
    x = np.ones(2, dtype=np.float32)
    dist.all_reduce(x)
    out["after"] = x.tolist()
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
    # the grace a collective gets after a peer left, 5 s by default, spent waiting for a peer
    # that will not come: half a second shows the same abort
    import minidl.distributed.mpi as mpi

    mpi.LEAVE_GRACE = 0.5
    t = np.ones(4, dtype=np.float32)
    dist.all_reduce(t)
    if rank == world - 1:
        sys.exit(3)  # no exception: excepthook never runs; the others learn it on leaving
    dist.all_reduce(t)
    return {"rank": rank, "unexpected": "the job survived a rank that left"}


CASES = {  # name: (function, whether it takes the output directory)
    "collectives": (case_collectives, False), "api": (case_api, False),
    "mismatch": (case_mismatch, False), "monitored": (case_monitored, False),
    "zero": (case_zero, True), "join": (case_join, True), "syncbn": (case_syncbn, True),
    "autograd": (case_autograd, True), "train": (case_train, True),
    "crash": (case_crash, False), "exit": (case_exit, False),
}


def main():
    """CASE may name several cases, comma-separated: they run one after the other in one
    launch (each writes its own CASE.rank<R>.json)."""
    cases, outdir = sys.argv[1].split(","), sys.argv[2]
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    backend = sys.argv[4] if len(sys.argv) > 4 else "mpi"
    for case in cases:
        if case not in CASES:
            raise SystemExit(f"unknown case {case}")
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    for case in cases:
        fn, takes_dir = CASES[case]
        result = fn(rank, world, device, outdir) if takes_dir else fn(rank, world, device)
        with open(os.path.join(outdir, f"{case}.rank{rank}.json"), "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
