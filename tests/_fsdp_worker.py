"""What each rank runs for tests/test_fsdp.py, under
``mpiexec -n 2 python tests/_fsdp_worker.py CASES OUTDIR``: CASES comma-separated, each rank
writing OUTDIR/CASE.rank<R>.json (and .npz where arrays are compared). The single-process
references are computed by the test, from the functions here.

Cases: train (FSDP + SGD-momentum / Adam, each strategy, MLP and conv net with BatchNorm, a
model applying a nested unit twice with tied weights, equal to one process on the whole batch;
what a rank holds afterwards), memory (the gathered parameter buffers alive between forward and
backward, and the gathers in backward, per strategy), state (state dicts, optimizer
state, summon_full_params, clip_grad_norm_, no_sync, buffers, kwargs, mixed precision, a group of
one rank), errors (bad input).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import weakref

import numpy as np

import minidl
import minidl.distributed as dist
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim
from minidl.distributed.fsdp import (FullStateDictConfig, FullyShardedDataParallel as FSDP,
                                     MixedPrecision, ShardingStrategy, StateDictType)
from minidl.distributed.fsdp.wrap import ModuleWrapPolicy, size_based_auto_wrap_policy

STEPS, BATCH = 4, 6  # per rank: the reference takes BATCH * world
STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD")
# (model, strategy, optimizer) runs of the train case
RUNS = [("mlp", s, o) for s in STRATEGIES for o in ("sgd", "adam")] + \
       [("conv", "FULL_SHARD", "sgd"), ("conv", "FULL_SHARD", "adam"),
        ("conv", "SHARD_GRAD_OP", "adam"), ("conv", "NO_SHARD", "sgd")] + \
       [("twice", s, "sgd") for s in STRATEGIES]
FLOAT64 = ("mlp", "twice")  # the models in float64 (and their data)


class Twice(nn.Module):
    """A block (an FSDP unit with a unit inside it) applied twice in one forward, and two
    layers sharing a weight in the root unit."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(10, 16)
        self.block = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Sequential(nn.Linear(16, 16)))
        self.proj = nn.Linear(16, 16)
        self.proj2 = nn.Linear(16, 16, bias=False)
        self.proj2.weight = self.proj.weight
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.block(self.block(F.relu(self.inp(x))))
        return self.out(F.relu(self.proj2(F.relu(self.proj(h)))))


def make_model(kind, seed=100):
    minidl.manual_seed(seed)
    if kind == "twice":
        return Twice().to(minidl.float64)
    if kind == "mlp":  # float64: the FSDP run and the reference agree to rounding
        return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                             nn.Linear(16, 3)).to(minidl.float64)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def policy(kind):
    if kind == "twice":  # the block and the Sequential inside it: nested units
        return ModuleWrapPolicy({nn.Sequential})
    if kind == "mlp":  # wraps the middle Linear (272 parameters); the root keeps 227
        return functools.partial(size_based_auto_wrap_policy, min_num_params=200)
    return ModuleWrapPolicy({nn.Conv2d})


def data(kind, step, world=2, batch=BATCH):
    rng = np.random.default_rng(1000 + step)
    n = world * batch
    if kind in FLOAT64:
        x = rng.standard_normal((n, 10))
    else:
        x = rng.standard_normal((n, 3, 5, 5)).astype(np.float32)
    return x, rng.integers(0, 3, n)


def make_opt(name, params):
    if name == "sgd":
        return optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    return optim.Adam(params, lr=0.01)


def train_reference(kind, opt_name, steps=STEPS, world=2):
    """One process, the plain model, every rank's samples in one batch."""
    model = make_model(kind)
    opt = make_opt(opt_name, model.parameters())
    for s in range(steps):
        x, y = data(kind, s, world)
        opt.zero_grad()
        F.cross_entropy(model(minidl.tensor(x, dtype=x.dtype)), minidl.tensor(y)).backward()
        opt.step()
    return model, opt


def held_elements(model, opt=None):
    """Elements of every array the model (and the optimizer's state) keeps: parameters,
    gradients, buffers and any other array attribute of its modules."""
    seen, total = set(), 0

    def add(arr):
        nonlocal total
        if id(arr) not in seen:
            seen.add(id(arr))
            total += arr.size

    def visit(v):
        if isinstance(v, minidl.Tensor):
            add(v.data)
            if type(v).__dict__.get("grad") is None and v.__dict__.get("grad") is not None:
                add(v.__dict__["grad"].data)
        elif isinstance(v, np.ndarray):
            add(v)
        elif isinstance(v, dict):
            for w in v.values():
                visit(w)
        elif isinstance(v, (list, tuple)):
            for w in v:
                visit(w)

    for m in model.modules():
        for name, v in vars(m).items():
            if name != "_modules":
                visit(v)
    if opt is not None:
        for st in opt.state.values():
            visit(st)
    return total


def rank_batch(kind, step, rank, world):
    x, y = data(kind, step, world)
    sl = slice(rank * BATCH, (rank + 1) * BATCH)
    return minidl.tensor(x[sl], dtype=x.dtype), minidl.tensor(y[sl])


def fsdp_model(kind, strategy="FULL_SHARD", sync_bn=True, **kwargs):
    model = make_model(kind)
    if kind == "conv" and sync_bn:  # batch statistics over every rank: the whole batch's
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return FSDP(model, sharding_strategy=ShardingStrategy[strategy],
                auto_wrap_policy=policy(kind), **kwargs)


def full_state(model):
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=True, rank0_only=True)):
        return {k: v.numpy() for k, v in model.state_dict().items()}


def case_train(rank, world, outdir):
    out, arrays = {}, {}
    for kind, strategy, opt_name in RUNS:
        tag = f"{kind}.{strategy}.{opt_name}"
        model = fsdp_model(kind, strategy)
        opt = make_opt(opt_name, model.parameters())
        for s in range(STEPS):
            x, y = rank_batch(kind, s, rank, world)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        units = [m for m in model.modules() if isinstance(m, FSDP)]
        out[tag] = {
            "held": held_elements(model),
            "held_with_optimizer": held_elements(model, opt),
            "shards": [int(u._flat.data.size) for u in units if u._flat is not None],
            "unit_params": [int(u._numel) for u in units if u._flat is not None],
            "buffers": int(sum(b.data.size for b in model.buffers())),
            "units": len(units),
            "plain_params": int(sum(p.data.size for p in make_model(kind).parameters())),
            "exposed_after_step": [n for u in units for i in u._infos for m, n in i.owners
                                   if getattr(m, n).data.size],
        }
        state = full_state(model)
        out[tag]["state_keys"] = list(state)
        arrays.update({f"{tag}|{k}": v for k, v in state.items()})
    np.savez(os.path.join(outdir, f"train.rank{rank}.npz"), **arrays)
    return out


def _catch(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001  (the test reads the type and message)
        return f"{type(exc).__name__}: {exc}"
    return None


def case_state(rank, world, outdir):
    out, arrays = {}, {}
    # trained a little, FULL_SHARD, Adam: the optimizer state over the whole model by name
    model = fsdp_model("mlp")
    opt = make_opt("adam", model.parameters())
    for s in range(2):
        x, y = rank_batch("mlp", s, rank, world)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    osd = FSDP.optim_state_dict(model, opt)
    out["osd_keys"] = sorted(osd["state"])
    out["osd_groups"] = osd["param_groups"][0]["params"]
    for k, st in osd["state"].items():
        for n, v in st.items():
            arrays[f"osd|{k}|{n}"] = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    # ... loaded into a fresh model's optimizer: the same shards of state
    fresh = fsdp_model("mlp")
    fresh_opt = make_opt("adam", fresh.parameters())
    FSDP.optim_state_dict_to_load(fresh, fresh_opt, osd, load_directly=True)
    out["osd_reload_equal"] = all(
        np.array_equal(np.asarray(fresh_opt.state[id(q)][n].numpy() if hasattr(
            fresh_opt.state[id(q)][n], "numpy") else fresh_opt.state[id(q)][n]),
            np.asarray(v.numpy() if hasattr(v, "numpy") else v))
        for p, q in zip(model.parameters(), fresh.parameters())
        for n, v in opt.state[id(p)].items())

    # state dicts: FULL on every rank, loaded into a model built from another seed
    full = full_state(model)  # every rank takes part; rank 0 alone gets it
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT):
        everywhere = {k: v.numpy() for k, v in model.state_dict().items()}
    out["rank0_only_got"] = len(full)
    other = FSDP(make_model("mlp", seed=5), auto_wrap_policy=policy("mlp"))
    other.load_state_dict(everywhere)  # FULL by default
    out["full_round_trip"] = all(np.array_equal(everywhere[k], v.numpy())
                                 for k, v in other.state_dict().items())
    for kind in (StateDictType.SHARDED_STATE_DICT, StateDictType.LOCAL_STATE_DICT):
        with FSDP.state_dict_type(model, kind):
            sd = model.state_dict()
        target = FSDP(make_model("mlp", seed=6), auto_wrap_policy=policy("mlp"))
        with FSDP.state_dict_type(target, kind):
            target.load_state_dict(sd)
        out[f"{kind.name}_keys"] = list(sd)
        out[f"{kind.name}_sizes"] = [int(getattr(v, "local", v).data.size) for v in sd.values()]
        out[f"{kind.name}_round_trip"] = all(
            np.array_equal(a.data, b.data) for a, b in zip(model.parameters(),
                                                            target.parameters()))
    # summon_full_params: the original names and shapes; a change is written back
    with FSDP.summon_full_params(model):
        names = [(n, list(p.shape)) for n, p in model.named_parameters()]
        first = model.module[0].weight
        first.data[0, 0] = 42.0
    out["summoned"] = names
    out["after_summon_params"] = [n for n, _ in model.named_parameters()]
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT):
        out["written_back"] = float(model.state_dict()["0.weight"].numpy()[0, 0])

    # clip_grad_norm_: gradients of one step, then clipped
    clip = fsdp_model("mlp")
    x, y = rank_batch("mlp", 0, rank, world)
    F.cross_entropy(clip(x), y).backward()
    norm = clip.clip_grad_norm_(0.05)
    out["clip_norm"] = float(norm.item())
    with FSDP.summon_full_params(clip, with_grads=True):
        for n, p in clip.named_parameters():
            arrays[f"clip|{n}"] = p.grad.numpy().copy()
    inf = fsdp_model("mlp")
    F.cross_entropy(inf(x), y).backward()
    out["clip_inf"] = float(inf.clip_grad_norm_(1e9, norm_type="inf").item())

    # no_sync: two micro-batches accumulated locally, the third reduces all of them
    ns = fsdp_model("conv")
    for s in range(3):
        x, y = rank_batch("conv", s, rank, world)
        if s < 2:
            with ns.no_sync():
                F.cross_entropy(ns(x), y).backward()
            out.setdefault("no_sync_grad_none", []).append(
                all(p.grad is None for p in ns.parameters()))
        else:
            F.cross_entropy(ns(x), y).backward()
    with FSDP.summon_full_params(ns, with_grads=True):
        for n, p in ns.named_parameters():
            arrays[f"nosync|{n}"] = p.grad.numpy().copy()

    # buffers: rank 0's running statistics everywhere after wrapping
    m = make_model("conv")
    m[1].running_mean.data[...] = float(rank + 1)
    wrapped = FSDP(m)
    out["running_mean"] = wrapped.module[1].running_mean.numpy().tolist()

    # forward kwargs pass through; module attribute; unused FSDP kwargs accepted
    class KwNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x, scale=1.0, *, shift=None):
            return self.fc(x) * scale + (0 if shift is None else shift)

    minidl.manual_seed(3)
    kw = FSDP(KwNet(), cpu_offload=None, use_orig_params=True, device_id=None,
              limit_all_gathers=True)
    xin = minidl.tensor(np.ones((1, 4), np.float32))
    out["kwargs"] = [kw(xin).numpy().tolist(), kw(xin, 2.0, shift=1.0).numpy().tolist()]
    out["module_is_kwnet"] = type(kw.module).__name__
    out["eval_no_grad"] = None
    with minidl.no_grad():
        out["eval_no_grad"] = kw(xin).requires_grad

    # mixed precision: float16 forward and backward, float32 reduction and shards
    mp = FSDP(make_model("mlp").to(minidl.float32),
              mixed_precision=MixedPrecision(param_dtype=minidl.float16,
                                             reduce_dtype=minidl.float32))
    x, y = rank_batch("mlp", 0, rank, world)
    logits = mp(x.to(minidl.float32))
    out["mp_logits_dtype"] = str(logits.dtype)
    F.cross_entropy(logits.float(), y).backward()
    out["mp_shard_dtypes"] = sorted({str(p.dtype) for p in mp.parameters()})
    out["mp_grad_dtypes"] = sorted({str(p.grad.dtype) for p in mp.parameters()})
    with FSDP.summon_full_params(mp, with_grads=True):
        for n, p in mp.named_parameters():
            arrays[f"mp|{n}"] = p.grad.numpy().copy()

    # a group of this rank alone: FSDP on one rank equals the plain model on its own batch
    solo = dist.new_group([rank], use_local_synchronization=True)
    one = FSDP(make_model("mlp"), process_group=solo, auto_wrap_policy=policy("mlp"))
    one_opt = make_opt("sgd", one.parameters())
    for s in range(2):
        x, y = rank_batch("mlp", s, rank, world)
        one_opt.zero_grad()
        F.cross_entropy(one(x), y).backward()
        one_opt.step()
    for k, v in full_state(one).items():
        arrays[f"solo|{k}"] = v
    out["solo_world"] = one.world_size
    # the two-rank model's optimizer state, by name, loads on one rank (another world size)
    one_adam = make_opt("adam", one.parameters())
    FSDP.optim_state_dict_to_load(one, one_adam, osd, load_directly=True)
    again = FSDP.optim_state_dict(one, one_adam)
    out["osd_other_world_equal"] = sorted(again["state"]) == sorted(osd["state"]) and all(
        np.array_equal(np.asarray(v.numpy() if hasattr(v, "numpy") else v),
                       np.asarray(again["state"][k][n].numpy() if hasattr(
                           again["state"][k][n], "numpy") else again["state"][k][n]))
        for k, st in osd["state"].items() for n, v in st.items())
    # a LOCAL state dict of that one-rank model does not load into the two-rank one
    with FSDP.state_dict_type(one, StateDictType.LOCAL_STATE_DICT):
        local1 = one.state_dict()
    two = FSDP(make_model("mlp"), auto_wrap_policy=policy("mlp"))
    with FSDP.state_dict_type(two, StateDictType.LOCAL_STATE_DICT):
        out["local_world_mismatch"] = _catch(lambda: two.load_state_dict(local1))
    with FSDP.state_dict_type(one, StateDictType.SHARDED_STATE_DICT):
        sharded1 = one.state_dict()
    with FSDP.state_dict_type(two, StateDictType.SHARDED_STATE_DICT):
        out["sharded_world_mismatch"] = _catch(lambda: two.load_state_dict(sharded1))
    out["full_missing_key"] = _catch(lambda: two.load_state_dict(
        {k: v for k, v in everywhere.items() if k != "2.bias"}))
    np.savez(os.path.join(outdir, f"state.rank{rank}.npz"), **arrays)
    return out


def case_errors(rank, world, outdir):
    out = {}
    # a parameter shared by two units (tied weights)
    minidl.manual_seed(0)
    tied = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    tied[2].weight = tied[0].weight
    out["shared"] = _catch(lambda: FSDP(tied, auto_wrap_policy=ModuleWrapPolicy({nn.Linear})))
    out["shared_left_as_was"] = [type(m).__name__ for m in tied] + [
        type(tied[0].weight).__name__, list(tied[0].weight.shape), tied[2].weight is tied[0].weight]
    # ... within one unit it is fine: flattened once, both layers see it
    minidl.manual_seed(0)
    tied1 = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    tied1[2].weight = tied1[0].weight
    t1 = FSDP(tied1)
    out["tied_one_unit_numel"] = int(t1._numel)
    out["tied_one_unit_keys"] = list(full_state(t1))
    # an optimizer made before wrapping
    plain = make_model("mlp")
    stale = optim.SGD(plain.parameters(), lr=0.1)
    model = FSDP(plain)
    x, y = rank_batch("mlp", 0, rank, world)
    F.cross_entropy(model(x), y).backward()
    out["stale_optimizer"] = _catch(stale.step)
    # frozen and trainable parameters in one unit
    mixed = make_model("mlp")
    mixed[0].weight.requires_grad_(False)
    out["mixed_requires_grad"] = _catch(lambda: FSDP(mixed, auto_wrap_policy=policy("mlp")))
    out["mixed_left_as_was"] = [type(m).__name__ for m in mixed] + [
        len(list(mixed.parameters()))]
    out["not_a_module"] = _catch(lambda: FSDP(lambda x: x))
    out["bad_strategy"] = _catch(lambda: FSDP(make_model("mlp"), sharding_strategy="FULL"))
    out["hybrid"] = _catch(lambda: FSDP(make_model("mlp"), process_group=(dist.group.WORLD,),
                                        sharding_strategy=ShardingStrategy.HYBRID_SHARD))
    out["bad_policy"] = _catch(lambda: FSDP(make_model("mlp"), auto_wrap_policy=3))
    # ranks that wrap different models
    out["different_models"] = _catch(lambda: FSDP(nn.Linear(3 + rank, 2)))
    return out


def case_memory(rank, world, outdir):
    """Per model and strategy: bytes of the gathered parameter buffers still alive after the
    forward (before backward), which units' buffers are alive inside the innermost unit's
    forward, the units that gather in backward (in order) and what is alive after it; and
    that each rank's gradients equal after one step (the train case checks the values)."""
    out = {}
    cls = FSDP
    original = cls._gather
    gathered = []  # (unit path, weakref to the buffer, bytes, phase)
    phase = ["forward"]

    def tracked(self, dtype=None, shard=None):
        full = original(self, dtype, shard)
        if shard is None:  # the parameters (not a gradient or optimizer state)
            gathered.append((self._path, weakref.ref(full), int(full.nbytes), phase[0]))
        return full

    def alive(which=None):
        return [(p, n) for p, r, n, ph in gathered if r() is not None and which in (None, ph)]

    cls._gather = tracked
    try:
        for kind in ("mlp", "conv", "twice"):
            for strategy in STRATEGIES:
                tag = f"{kind}.{strategy}"
                model = fsdp_model(kind, strategy)
                units = [u for u in model.modules() if isinstance(u, FSDP) and u._flat is not None]
                inner = units[-1].module  # the last unit in modules(): no unit inside it
                inside = []
                handle = inner.register_forward_hook(
                    lambda m, i, o: inside.append(sorted({p for p, _ in alive()})))
                gathered.clear()
                phase[0] = "forward"
                x, y = rank_batch(kind, 0, rank, world)
                loss = F.cross_entropy(model(x), y)
                handle.remove()
                after_forward = alive()
                phase[0] = "backward"
                regathers = []
                original_regather = cls._regather

                def regather(self, _orig=original_regather):
                    if self._regathered is None:  # what else is alive when this unit gathers
                        regathers.append([self._path, sorted(p for p, _ in alive("backward"))])
                    return _orig(self)

                cls._regather = regather
                try:
                    loss.backward()
                finally:
                    cls._regather = original_regather
                out[tag] = {
                    "unit_bytes": {u._path: int(u._padded * u._flat.data.itemsize)
                                   for u in units},
                    "alive_after_forward": after_forward,
                    "alive_inside_inner_forward": inside[0],
                    "inner_path": units[-1]._path,
                    "forward_gathers": [p for p, _, _, ph in gathered if ph == "forward"],
                    "backward_gathers": [p for p, _, _, ph in gathered if ph == "backward"],
                    "alive_at_regather": regathers,
                    "alive_after_backward": alive(),
                }
                del loss, model
    finally:
        cls._gather = original
    return out


def fully_sharded(kind="twice", reshard_after_forward=True):
    """The model with fully_shard applied bottom-up: the inner Sequential, the block, the
    root."""
    from minidl.distributed.fsdp import fully_shard

    model = make_model(kind)
    for m in (model.block[2], model.block, model):
        fully_shard(m, reshard_after_forward=reshard_after_forward)
    return model


def case_fsdp2(rank, world, outdir):
    """fully_shard: training equal to one process (either reshard_after_forward), the full
    state dict, the sharded state dict's round trip, set_requires_gradient_sync, and what is
    alive between forward and backward."""
    from minidl.distributed.fsdp import _fully_shard

    out, arrays = {}, {}
    for reshard in (True, False):
        tag = f"reshard={reshard}"
        model = fully_sharded(reshard_after_forward=reshard)
        opt = make_opt("sgd", model.parameters())
        for s in range(STEPS):
            x, y = rank_batch("twice", s, rank, world)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        full = model.full_state_dict()
        arrays.update({f"{tag}|{k}": v.numpy() for k, v in full.items()})
        out[tag] = {"keys": list(full), "names": [n for n, _ in model.named_parameters()],
                    "piece_sizes": [int(p.data.size) for p in model.parameters()],
                    "classes": [type(model).__name__, type(model.block).__name__]}
    # the sharded state dict: saved, changed by a step, loaded back
    saved = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    x, y = rank_batch("twice", 0, rank, world)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    changed = any(not np.array_equal(v.numpy(), saved[k]) for k, v in model.state_dict().items())
    result = model.load_state_dict({k: minidl.tensor(v, dtype=v.dtype)
                                    for k, v in saved.items()})
    out["round_trip"] = [changed, all(np.array_equal(v.numpy(), saved[k])
                                      for k, v in model.state_dict().items()),
                         list(result.missing_keys), list(result.unexpected_keys)]
    bad = dict(saved)
    bad["inp.weight"] = np.zeros(bad["inp.weight"].size * 2)
    out["bad_size"] = _catch(lambda: model.load_state_dict(
        {k: minidl.tensor(v) for k, v in bad.items()}))
    # gradient accumulation: two micro-batches, the first without the reduce-scatter
    model = fully_sharded()
    opt = make_opt("sgd", model.parameters())
    opt.zero_grad()
    for s in range(2):
        model.set_requires_gradient_sync(s == 1)
        x, y = rank_batch("twice", s, rank, world)
        F.cross_entropy(model(x), y).backward()
        if s == 0:
            out["grads_after_no_sync"] = [p.grad is not None for p in model.parameters()]
    opt.step()
    arrays.update({f"accumulate|{k}": v.numpy() for k, v in model.full_state_dict().items()})
    # memory: gathered buffers alive between forward and backward
    original = _fully_shard._State._gather
    refs = []

    def gather(self, dtype=None, shard=None):
        full = original(self, dtype, shard)
        refs.append((self._path, weakref.ref(full), int(full.nbytes)))
        return full

    _fully_shard._State._gather = gather
    try:
        for reshard in (True, False):
            model = fully_sharded(reshard_after_forward=reshard)
            refs.clear()
            x, y = rank_batch("twice", 0, rank, world)
            loss = F.cross_entropy(model(x), y)
            alive = [(p, n) for p, r, n in refs if r() is not None]
            forward = len(refs)
            loss.backward()
            out[f"memory.reshard={reshard}"] = {
                "alive_after_forward": alive, "backward_gathers": [p for p, _, _ in
                                                                   refs[forward:]],
                "alive_after_backward": [p for p, r, _ in refs if r() is not None]}
            model.block.unshard()
            out[f"unshard.reshard={reshard}"] = [list(model.block[0].weight.shape)]
            model.block.reshard()
            out[f"unshard.reshard={reshard}"].append(list(model.block[0].weight.shape))
    finally:
        _fully_shard._State._gather = original
    np.savez(os.path.join(outdir, f"fsdp2.rank{rank}.npz"), **arrays)
    return out


CASES = {"train": case_train, "state": case_state, "errors": case_errors,
         "memory": case_memory, "fsdp2": case_fsdp2}


def main():
    cases, outdir = sys.argv[1].split(","), sys.argv[2]
    for case in cases:
        if case not in CASES:
            raise SystemExit(f"unknown case {case}")
    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    for case in cases:
        result = CASES[case](rank, world, outdir)
        with open(os.path.join(outdir, f"{case}.rank{rank}.json"), "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
