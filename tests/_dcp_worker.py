"""What each rank runs for tests/test_dcp.py, under
``mpiexec -n 2 python tests/_dcp_worker.py OUTDIR PLAIN_CKPT``: every case below, each rank
writing OUTDIR/dcp.rank<R>.json; the checkpoints it saves go to OUTDIR/<case>_ckpt.
PLAIN_CKPT is a checkpoint one process saved (a plain model and Adam after BEFORE steps on the
whole batch), which the fsdp_from_plain case loads on 2 ranks.

Every run: the float64 MLP of _fsdp_worker with Adam, BEFORE steps, save, then AFTER steps
(each rank on its half of the batch); the references are computed by the test in one
process on the whole batch.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import minidl  # noqa: E402
import minidl.distributed as dist  # noqa: E402
import minidl.distributed.checkpoint as dcp  # noqa: E402
import minidl.nn as nn  # noqa: E402
import minidl.nn.functional as F  # noqa: E402
from minidl.distributed.checkpoint.state_dict import (StateDictOptions,  # noqa: E402
                                                      get_state_dict, set_state_dict)
from minidl.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402
from minidl.distributed.fsdp import ShardingStrategy, fully_shard  # noqa: E402
from minidl.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import _fsdp_worker as fw  # noqa: E402

BEFORE, AFTER = 2, 3


def make(style, seed=100, kind="mlp", strategy="FULL_SHARD", opt="adam"):
    """The model (initialised from ``seed``) wrapped by ``style``, and its optimizer."""
    model = fw.make_model(kind, seed=seed)
    if style == "ddp":
        model = DDP(model)
    elif style == "fsdp":
        if kind == "conv":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = FSDP(model, sharding_strategy=ShardingStrategy[strategy],
                     auto_wrap_policy=fw.policy(kind))
    elif style == "fsdp2":
        fully_shard(model[2])
        fully_shard(model)
    return model, fw.make_opt(opt, model.parameters())


def steps(model, opt, first, count, rank, world, kind="mlp"):
    losses = []
    for s in range(first, first + count):
        x, y = fw.rank_batch(kind, s, rank, world)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return losses


def full_weights(model):
    sd, _ = get_state_dict(model, [], options=StateDictOptions(full_state_dict=True))
    return {k: v.numpy().tolist() for k, v in sd.items()}


def resume(style, ckpt, seed=7, options=None, **kw):
    """A fresh model (other initial weights) and optimizer, filled from ``ckpt``."""
    model, opt = make(style, seed=seed, **kw)
    msd, osd = get_state_dict(model, opt, options=options)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=ckpt)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=options)
    return model, opt


def data_files(ckpt):
    return sorted(n for n in os.listdir(ckpt) if n.endswith(".data"))


def run_style(style, rank, world, outdir):
    out = {}
    ckpt = os.path.join(outdir, f"{style}_ckpt")
    # uninterrupted
    model, opt = make(style)
    out["uninterrupted"] = steps(model, opt, 0, BEFORE + AFTER, rank, world)
    # interrupted: save after BEFORE steps, resume into a fresh model, go on
    model, opt = make(style)
    steps(model, opt, 0, BEFORE, rank, world)
    msd, osd = get_state_dict(model, opt)
    out["sharded_values"] = sorted(k for k, v in msd.items() if isinstance(v, dcp.FlatShard))
    out["local_elements"] = int(sum(v.to_local().data.size if isinstance(v, dcp.FlatShard)
                                    else v.data.size for v in msd.values()))
    future = dcp.async_save({"model": msd, "optim": osd}, checkpoint_id=ckpt)
    out["future_done"] = bool(future.done()) and future.result() is not None
    out["files"] = data_files(ckpt)
    out["weights_at_save"] = full_weights(model)
    model2, opt2 = resume(style, ckpt)
    out["weights_resumed"] = full_weights(model2)
    out["resumed"] = steps(model2, opt2, BEFORE, AFTER, rank, world)
    return out


def case_fsdp_from_plain(rank, world, plain_ckpt):
    model, opt = resume("fsdp", plain_ckpt)
    weights = full_weights(model)
    return {"weights": weights, "losses": steps(model, opt, BEFORE, AFTER, rank, world)}


VARIANTS = [("fsdp", "mlp", "SHARD_GRAD_OP", "sgd"), ("fsdp", "mlp", "NO_SHARD", "adam"),
            ("fsdp", "conv", "FULL_SHARD", "adam"), ("fsdp2", "mlp", "FULL_SHARD", "sgd")]


def case_variants(rank, world, outdir):
    """Save and resume for other strategies, SGD-momentum, a conv net with BatchNorm buffers;
    an FSDP checkpoint resumed by fully_shard (another layout of the pieces); whole values
    (full_state_dict=True) saved and loaded."""
    out = {}
    for style, kind, strategy, opt_name in VARIANTS:
        tag = ".".join((style, kind, strategy, opt_name))
        kw = dict(kind=kind, strategy=strategy, opt=opt_name)
        ckpt = os.path.join(outdir, f"{tag}_ckpt")
        model, opt = make(style, **kw)
        want = steps(model, opt, 0, BEFORE + AFTER, rank, world, kind)[BEFORE:]
        model, opt = make(style, **kw)
        steps(model, opt, 0, BEFORE, rank, world, kind)
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=ckpt)
        model, opt = resume(style, ckpt, **kw)
        out[tag] = {"equal": steps(model, opt, BEFORE, AFTER, rank, world, kind) == want,
                    "files": len(data_files(ckpt))}
    # FSDP (FSDP1 units) checkpoint -> fully_shard
    model, opt = make("fsdp2")
    want = steps(model, opt, 0, BEFORE + AFTER, rank, world)[BEFORE:]
    model, opt = resume("fsdp2", os.path.join(outdir, "fsdp_ckpt"))
    out["fsdp_to_fsdp2"] = steps(model, opt, BEFORE, AFTER, rank, world) == want
    # whole values: every rank holds them all, written once
    full = StateDictOptions(full_state_dict=True)
    model, opt = make("fsdp")
    steps(model, opt, 0, BEFORE, rank, world)
    msd, osd = get_state_dict(model, opt, options=full)
    ckpt = os.path.join(outdir, "full_ckpt")
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=ckpt)
    out["full_files"] = len(data_files(ckpt))
    model, opt = resume("fsdp", ckpt, options=full)
    out["full_equal"] = steps(model, opt, BEFORE, AFTER, rank, world) == want
    rank0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
    out["rank0_only_keys"] = len(get_state_dict(model, opt, options=rank0)[0])
    return out


def case_errors(rank, world, outdir):
    out = {}
    ckpt = os.path.join(outdir, "fsdp_ckpt")

    def catch(fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001  (the test reads the type and message)
            return f"{type(exc).__name__}: {exc}"
        return None

    model, opt = make("fsdp")
    msd, _ = get_state_dict(model, opt)
    msd["extra.weight"] = minidl.tensor(np.zeros(3))
    out["missing_key"] = catch(lambda: dcp.load({"model": msd}, checkpoint_id=ckpt))
    # only rank 1 asks for something the checkpoint lacks: both ranks raise
    sd = {"model": {"0.bias": minidl.tensor(np.zeros(16))}}
    if rank == 1:
        sd["model"]["nope"] = minidl.tensor(np.zeros(1))
    out["one_rank_fails"] = catch(lambda: dcp.load(sd, checkpoint_id=ckpt))
    # plain tensors of different shapes under one key (pieces without FlatShard) are refused
    out["unlabelled_pieces"] = catch(lambda: dcp.save(
        {"w": minidl.tensor(np.zeros(3 + rank))}, checkpoint_id=os.path.join(outdir, "bad")))
    out["bad_dir_left"] = os.path.exists(os.path.join(outdir, "bad", ".metadata"))
    return out


def main():
    outdir, plain_ckpt = sys.argv[1], sys.argv[2]
    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {}
    for style in ("ddp", "fsdp", "fsdp2"):
        result[style] = run_style(style, rank, world, outdir)
    result["fsdp_from_plain"] = case_fsdp_from_plain(rank, world, plain_ckpt)
    result["errors"] = case_errors(rank, world, outdir)
    result["variants"] = case_variants(rank, world, outdir)
    with open(os.path.join(outdir, f"dcp.rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
