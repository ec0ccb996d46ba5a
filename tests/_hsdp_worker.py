"""What each rank runs for tests/test_hsdp.py, under
``mpiexec -n 4 python tests/_hsdp_worker.py OUTDIR``: each rank writes OUTDIR/rank<R>.json and
OUTDIR/rank<R>.npz (the trained models' whole state), and the HSDP runs save a DCP checkpoint
to OUTDIR/ckpt.<run> that the test loads into a plain one-process model.

Runs (RUNS): FSDP1 HYBRID_SHARD over a (2, 2) mesh, over the default groups (one node: the
whole world here), _HYBRID_SHARD_ZERO2 over a (shard, replicate) tuple of groups, FULL_SHARD
over a 1-D mesh; fully_shard over a 1-D and a 2-D mesh; each with SGD-momentum and Adam,
float64, every rank on its own quarter of the batch. Then bad input (errors).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

import minidl.distributed as dist
import minidl.distributed.checkpoint as dcp
import minidl.nn.functional as F
from minidl.distributed.checkpoint.state_dict import get_state_dict
from minidl.distributed.device_mesh import init_device_mesh
from minidl.distributed.fsdp import (FullStateDictConfig, FullyShardedDataParallel as FSDP,
                                     ShardingStrategy, StateDictType, fully_shard)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _fsdp_worker as fw  # noqa: E402  (the models, data and optimizers of test_fsdp)

WORLD = 4
# run -> (API, strategy, how the groups are given, shard group size, replicas)
SETUPS = {
    "hybrid_mesh": ("fsdp1", "HYBRID_SHARD", "mesh2d", 2, 2),
    "hybrid_default": ("fsdp1", "HYBRID_SHARD", "default", 4, 1),
    "hybrid_zero2_tuple": ("fsdp1", "_HYBRID_SHARD_ZERO2", "tuple", 2, 2),
    "full_shard_mesh1d": ("fsdp1", "FULL_SHARD", "mesh1d", 4, 1),
    "fsdp2_mesh1d": ("fsdp2", None, "mesh1d", 4, 1),
    "fsdp2_mesh2d": ("fsdp2", None, "mesh2d", 2, 2),
}
RUNS = [(name, opt) for name in SETUPS for opt in ("sgd", "adam")]
# the runs whose checkpoint (DCP, via get_state_dict) the test loads into one process
CHECKPOINTED = [(name, opt) for name, opt in RUNS if SETUPS[name][4] > 1]
SHARDED_RUN = "hybrid_mesh.sgd"  # also saved from its SHARDED_STATE_DICT to OUTDIR/sharded


def _groups():
    """The (2, 2) mesh, the 1-D mesh of the world, and the same (shard, replicate) layout as
    a tuple of groups made by new_group (every rank makes every group, in one order)."""
    mesh2d = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    mesh1d = init_device_mesh("cpu", (WORLD,), mesh_dim_names=("shard",))
    shard = [dist.new_group(r) for r in ([0, 1], [2, 3])]
    replicate = [dist.new_group(r) for r in ([0, 2], [1, 3])]
    me = dist.get_rank()
    return {"mesh2d": mesh2d, "mesh1d": mesh1d,
            "tuple": (shard[me // 2], replicate[me % 2])}


def build(name, groups):
    api, strategy, given, _, _ = SETUPS[name]
    model = fw.make_model("mlp")
    if api == "fsdp1":
        kwargs = {}
        if given in ("mesh2d", "mesh1d"):
            kwargs["device_mesh"] = groups[given]
        elif given == "tuple":
            kwargs["process_group"] = groups[given]
        return FSDP(model, sharding_strategy=ShardingStrategy[strategy],
                    auto_wrap_policy=fw.policy("mlp"), **kwargs)
    for m in (model[0], model[2], model[4], model):
        fully_shard(m, mesh=groups[given])
    return model


def held(model, api):
    """(elements of each sharded piece this rank holds, the whole parameters' elements)."""
    if api == "fsdp1":
        units = [u for u in model.modules() if isinstance(u, FSDP) and u._flat is not None]
        return [int(u._flat.data.size) for u in units], [int(u._numel) for u in units]
    return ([int(p.data.size) for p in model.parameters()],
            [int(p.data.size) for p in fw.make_model("mlp").parameters()])


def whole_state(model, api):
    if api == "fsdp2":
        return {k: v.numpy() for k, v in model.full_state_dict().items()}
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig()):
        return {k: v.numpy() for k, v in model.state_dict().items()}


def case_train(rank, outdir, groups):
    out, arrays = {}, {}
    for name, opt_name in RUNS:
        tag = f"{name}.{opt_name}"
        api = SETUPS[name][0]
        model = build(name, groups)
        opt = fw.make_opt(opt_name, model.parameters())
        for s in range(fw.STEPS):
            x, y = fw.rank_batch("mlp", s, rank, WORLD)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        pieces, whole = held(model, api)
        shard_group = model.process_group if api == "fsdp1" else model._fsdp_state.process_group
        out[tag] = {"pieces": pieces, "whole": whole,
                    "grads": [int(p.grad.data.size) for p in model.parameters()],
                    "shard_group_size": dist.get_world_size(shard_group),
                    "state": [int(np.size(getattr(t, "data", t))) for v in opt.state.values()
                              for k, t in v.items() if k in ("exp_avg", "momentum_buffer")]}
        arrays.update({f"{tag}|{k}": v for k, v in whole_state(model, api).items()})
        if (name, opt_name) in CHECKPOINTED:
            model_sd, optim_sd = get_state_dict(model, opt)
            dcp.save({"model": model_sd, "optim": optim_sd},
                     checkpoint_id=os.path.join(outdir, f"ckpt.{tag}"))
        if tag == SHARDED_RUN:  # torch's idiom: FSDP1's SHARDED_STATE_DICT straight to DCP
            with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
                sd = model.state_dict()
                out["sharded_values"] = sorted({type(v).__name__ for v in sd.values()})
                dcp.save({"model": sd}, checkpoint_id=os.path.join(outdir, "sharded"))
    # clip_grad_norm_ under HSDP: the whole model's gradient norm (the shard group's pieces)
    model = build("hybrid_mesh", groups)
    x, y = fw.rank_batch("mlp", 0, rank, WORLD)
    F.cross_entropy(model(x), y).backward()
    out["hybrid_grad_norm"] = float(model.clip_grad_norm_(1e9).item())
    # ... and back, into a FULL_SHARD model over four ranks (resharded: pairs -> quarters)
    target = FSDP(fw.make_model("mlp", seed=7), auto_wrap_policy=fw.policy("mlp"))
    with FSDP.state_dict_type(target, StateDictType.SHARDED_STATE_DICT):
        sd = {"model": target.state_dict()}
        dcp.load(sd, checkpoint_id=os.path.join(outdir, "sharded"))
        target.load_state_dict(sd["model"])
    arrays.update({f"resharded|{k}": v for k, v in whole_state(target, "fsdp1").items()})
    np.savez(os.path.join(outdir, f"rank{rank}.npz"), **arrays)
    return out


def _catch(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001  (the test reads the type and message)
        return f"{type(exc).__name__}: {exc}"
    return None


def case_errors(rank, groups):
    """Bad input: every rank gets the same error, before any collective, and the module is
    left as it was."""
    out = {}
    mesh3d = init_device_mesh("cpu", (1, 2, 2))
    model = fw.make_model("mlp")
    before = [p.data.copy() for p in model.parameters()]
    hybrid = ShardingStrategy.HYBRID_SHARD
    shard, replicate = groups["tuple"]
    out["hybrid_1d_mesh"] = _catch(lambda: FSDP(model, sharding_strategy=hybrid,
                                                device_mesh=groups["mesh1d"]))
    out["hybrid_3d_mesh"] = _catch(lambda: FSDP(model, sharding_strategy=hybrid,
                                                device_mesh=mesh3d))
    out["full_shard_2d_mesh"] = _catch(lambda: FSDP(model, device_mesh=groups["mesh2d"]))
    out["mesh_not_a_mesh"] = _catch(lambda: FSDP(model, device_mesh=[[0, 1], [2, 3]]))
    out["both"] = _catch(lambda: FSDP(model, sharding_strategy=hybrid, process_group=shard,
                                      device_mesh=groups["mesh2d"]))
    out["one_group"] = _catch(lambda: FSDP(model, sharding_strategy=hybrid,
                                           process_group=shard))
    out["three_groups"] = _catch(lambda: FSDP(model, sharding_strategy=hybrid,
                                              process_group=(shard, replicate, shard)))
    out["not_groups"] = _catch(lambda: FSDP(model, sharding_strategy=hybrid,
                                            process_group=(shard, "replicate")))
    out["tuple_without_hybrid"] = _catch(lambda: FSDP(model, process_group=(shard, replicate)))
    # the replicas of a shard must hold the same piece: (shard pair, the world) does not fit
    out["replicas_hold_other_pieces"] = _catch(lambda: FSDP(
        model, sharding_strategy=hybrid, process_group=(shard, dist.group.WORLD)))
    out["fsdp2_3d_mesh"] = _catch(lambda: fully_shard(model, mesh=mesh3d))
    out["fsdp2_not_a_mesh"] = _catch(lambda: fully_shard(model, mesh="cpu"))
    out["unchanged"] = (type(model).__name__ == "Sequential" and all(
        type(p).__name__ == "Parameter" and np.array_equal(p.data, b)
        for p, b in zip(model.parameters(), before)))
    return out


def main():
    outdir = sys.argv[1]
    dist.init_process_group(backend="mpi")
    rank = dist.get_rank()
    if dist.get_world_size() != WORLD:
        raise SystemExit(f"run with mpiexec -n {WORLD}")
    groups = _groups()
    result = {"train": case_train(rank, outdir, groups), "errors": case_errors(rank, groups),
              "default_groups": None}
    # what HYBRID_SHARD makes without groups: one node's ranks (the world, on one machine)
    model = FSDP(fw.make_model("mlp"), sharding_strategy=ShardingStrategy.HYBRID_SHARD)
    result["default_groups"] = [dist.get_world_size(model.process_group),
                                dist.get_world_size(model._inter_node_pg)]
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
