"""minidl.distributed.fsdp.FullyShardedDataParallel.

Every multi-rank case runs in one launch of ``mpiexec -n 2 tests/_fsdp_worker.py`` (skipped
only where mpi4py or mpiexec is missing, with that reason); each rank trains on its half of the
batch, and the references are computed here, in one process, by the plain model on the whole
batch. The rest (wrap policies, errors before a process group exists) runs in this process.
"""
import contextlib
import functools
import json

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim
from minidl.distributed.fsdp import FullyShardedDataParallel as FSDP
from minidl.distributed.fsdp import MixedPrecision, ShardingStrategy, StateDictType
from minidl.distributed.fsdp.wrap import (ModuleWrapPolicy, always_wrap_policy,
                                          lambda_auto_wrap_policy, size_based_auto_wrap_policy,
                                          transformer_auto_wrap_policy)
from test_distributed import REPO, needs_mpi, run_mpi
import _fsdp_worker as worker

WORKER = REPO / "tests" / "_fsdp_worker.py"
CASES = "train,state,errors,memory,fsdp2"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    rc, so, se, _ = run_mpi([WORKER, CASES, out], timeout=300)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return out


def _json(out, case):
    return [json.loads((out / f"{case}.rank{r}.json").read_text()) for r in range(2)]


def _npz(out, case, rank=0):
    return dict(np.load(out / f"{case}.rank{rank}.npz"))


@pytest.fixture(scope="module")
def train(launched):
    return _json(launched, "train"), _npz(launched, "train")


@pytest.fixture(scope="module")
def state(launched):
    return _json(launched, "state"), [_npz(launched, "state", r) for r in range(2)]


@pytest.fixture(scope="module")
def errors(launched):
    return _json(launched, "errors")


def _plain_state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


# ---- training equals one process on the whole batch ---------------------------------------------
@needs_mpi
@pytest.mark.parametrize("run", worker.RUNS, ids=[".".join(r) for r in worker.RUNS])
def test_training_equals_one_process_on_the_whole_batch(train, run):
    """FSDP (nested units from auto_wrap) + SGD-momentum / Adam for several steps, each rank
    on its half of the batch, gives the plain model's weights and BatchNorm statistics after
    the same steps on the whole batch; the full state dict has the plain model's keys."""
    infos, arrays = train
    kind, strategy, opt_name = run
    tag = ".".join(run)
    ref, _ = worker.train_reference(kind, opt_name)
    want = _plain_state(ref)
    assert infos[0][tag]["state_keys"] == list(want)  # same keys, same order
    tol = 1e-12 if kind in worker.FLOAT64 else 2e-6  # float64 / float32
    for k, v in want.items():
        got = arrays[f"{tag}|{k}"]
        assert got.shape == v.shape, k
        np.testing.assert_allclose(got, v, rtol=tol, atol=tol, err_msg=k)
    assert infos[0][tag]["units"] == (2 if kind == "mlp" else 3)  # the root and auto-wrapped
    assert infos[1][tag]["state_keys"] == []  # rank0_only: the other rank gets nothing


@needs_mpi
@pytest.mark.parametrize("run", worker.RUNS, ids=[".".join(r) for r in worker.RUNS])
def test_each_rank_holds_only_its_shards_after_a_step(train, run):
    """After a step, the model holds its shards, their gradients and the buffers, and nothing
    else (no gathered parameters, no original parameters): half the model on each of 2 ranks
    (FULL_SHARD, SHARD_GRAD_OP); NO_SHARD holds all of it. The optimizer's state is sharded
    the same way."""
    kind, strategy, opt_name = run
    tag = ".".join(run)
    for r in train[0]:
        info = r[tag]
        shards = sum(info["shards"])
        assert info["exposed_after_step"] == []
        assert sum(info["unit_params"]) == info["plain_params"]
        if strategy == "NO_SHARD":
            assert info["shards"] == info["unit_params"]
        else:  # each unit's flat buffer padded to an even size, then halved
            assert info["shards"] == [(n + 1) // 2 for n in info["unit_params"]]
            assert shards <= info["plain_params"] // 2 + len(info["shards"])
        assert info["held"] == 2 * shards + info["buffers"]  # values and gradients
        per_param = 2 if opt_name == "adam" else 1  # exp_avg, exp_avg_sq / momentum_buffer
        extra = info["held_with_optimizer"] - info["held"]
        assert shards * per_param <= extra <= shards * per_param + 2 * len(info["shards"])


# ---- state dicts, optimizer state, full parameters ----------------------------------------------
@needs_mpi
def test_state_dict_types_round_trip(state):
    infos, _ = state
    plain_keys = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    for rank, r in enumerate(infos):
        assert r["full_round_trip"]
        assert r["SHARDED_STATE_DICT_round_trip"] and r["LOCAL_STATE_DICT_round_trip"]
        assert r["SHARDED_STATE_DICT_keys"] == plain_keys
        assert r["LOCAL_STATE_DICT_keys"] == ["_flat_param", "2._flat_param"]
        assert r["LOCAL_STATE_DICT_sizes"] == [114, 136]  # (227 + 1) / 2, 272 / 2
        assert r["rank0_only_got"] == (6 if rank == 0 else 0)
    # each rank's pieces of the parameters make up the whole of them
    sizes = np.add(infos[0]["SHARDED_STATE_DICT_sizes"], infos[1]["SHARDED_STATE_DICT_sizes"])
    assert sizes.tolist() == [160, 16, 256, 16, 48, 3]


@needs_mpi
def test_load_refuses_another_world_size_and_missing_keys(state):
    for r in state[0]:
        assert r["local_world_mismatch"].startswith("ValueError: FullyShardedDataParallel."
                                                    "load_state_dict (LOCAL_STATE_DICT)")
        assert "holds 227 elements, this rank's shard 114" in r["local_world_mismatch"]
        assert "different number of ranks" in r["local_world_mismatch"]
        assert "SHARDED_STATE_DICT" in r["sharded_world_mismatch"]
        assert "'0.weight' holds 160 elements" in r["sharded_world_mismatch"]
        assert r["full_missing_key"].endswith("missing keys: 2.bias")


@needs_mpi
def test_optim_state_dict_is_the_plain_optimizers_by_name(state):
    """FSDP.optim_state_dict: Adam's state over the whole model keyed by parameter name, equal
    to the plain model's Adam after the same two steps; optim_state_dict_to_load gives each
    rank back its shards, and loads it on another number of ranks (one) too."""
    infos, arrays = state
    ref, ref_opt = worker.train_reference("mlp", "adam", steps=2)
    names = [n for n, _ in ref.named_parameters()]
    for rank, r in enumerate(infos):
        assert r["osd_keys"] == sorted(names) and sorted(r["osd_groups"]) == sorted(names)
        assert r["osd_reload_equal"] and r["osd_other_world_equal"]
        for name, p in ref.named_parameters():
            st = ref_opt.state[id(p)]
            for key in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(arrays[rank][f"osd|{name}|{key}"], st[key],
                                           rtol=1e-10, atol=1e-14)
            assert float(arrays[rank][f"osd|{name}|step"]) == 2.0


@needs_mpi
def test_summon_full_params_shows_and_writes_back(state):
    for r in state[0]:
        assert [n for n, _ in r["summoned"]] == [
            "_fsdp_wrapped_module.0.weight", "_fsdp_wrapped_module.0.bias",
            "_fsdp_wrapped_module.2._fsdp_wrapped_module.weight",
            "_fsdp_wrapped_module.2._fsdp_wrapped_module.bias",
            "_fsdp_wrapped_module.4.weight", "_fsdp_wrapped_module.4.bias"]
        assert r["summoned"][0][1] == [16, 10]
        assert r["after_summon_params"] == ["_flat_param", "_fsdp_wrapped_module.2._flat_param"]
        assert r["written_back"] == 42.0


def _plain_clip_grads():
    """The plain model's whole-batch gradients of the clip case (before clipping)."""
    model = worker.make_model("mlp")
    x, y = worker.data("mlp", 0)
    F.cross_entropy(model(minidl.tensor(x, dtype=x.dtype)), minidl.tensor(y)).backward()
    return model


def _clip_key(name):  # the plain name under summon_full_params (2 is a nested unit)
    return "clip|_fsdp_wrapped_module." + name.replace("2.", "2._fsdp_wrapped_module.")


@needs_mpi
def test_clip_grad_norm_equals_the_plain_models(state):
    """The norm over every rank's shards, and the clipped gradients, equal
    nn.utils.clip_grad_norm_ on the plain model's whole-batch gradients."""
    infos, arrays = state
    model = _plain_clip_grads()
    inf = float(max(np.abs(p.grad.numpy()).max() for p in model.parameters()))
    norm = nn.utils.clip_grad_norm_(model.parameters(), 0.05)
    assert float(norm.item()) > 0.05  # it does clip
    for rank, r in enumerate(infos):
        assert r["clip_norm"] == pytest.approx(float(norm.item()), rel=1e-12)
        assert r["clip_inf"] == pytest.approx(inf, rel=1e-12)
        for n, p in model.named_parameters():
            np.testing.assert_allclose(arrays[rank][_clip_key(n)], p.grad.numpy(), rtol=1e-10,
                                       atol=1e-15, err_msg=n)


@needs_mpi
def test_clip_grad_norm_equals_torchs_on_the_plain_model(state):
    infos, arrays = state
    torch = pytest.importorskip("torch")
    model = _plain_clip_grads()
    tparams = []
    for _, p in model.named_parameters():
        t = torch.nn.Parameter(torch.zeros(p.shape, dtype=torch.float64))
        t.grad = torch.tensor(p.grad.numpy())
        tparams.append(t)
    norm = float(torch.nn.utils.clip_grad_norm_(tparams, 0.05))
    for rank, r in enumerate(infos):
        assert r["clip_norm"] == pytest.approx(norm, rel=1e-12)
        for (n, _), t in zip(model.named_parameters(), tparams):
            np.testing.assert_allclose(arrays[rank][_clip_key(n)], t.grad.numpy(), rtol=1e-10,
                                       atol=1e-15, err_msg=n)


@needs_mpi
def test_no_sync_accumulates_then_reduces(state):
    """Two backward passes under no_sync (no gradient on the shards yet), then one outside:
    the shards' gradients are those of the three whole batches summed."""
    infos, arrays = state
    model = worker.make_model("conv")
    for s in range(3):
        x, y = worker.data("conv", s)
        F.cross_entropy(model(minidl.tensor(x)), minidl.tensor(y)).backward()
    for rank, r in enumerate(infos):
        assert r["no_sync_grad_none"] == [True, True]
        for n, p in model.named_parameters():
            parts = n.split(".")
            key = "nosync|_fsdp_wrapped_module." + (
                f"{parts[0]}._fsdp_wrapped_module.{parts[1]}" if parts[0] in ("0", "3") else n)
            np.testing.assert_allclose(arrays[rank][key], p.grad.numpy(), rtol=2e-5,
                                       atol=2e-6, err_msg=n)


@needs_mpi
def test_buffers_kwargs_module_and_mixed_precision(state):
    infos, arrays = state
    model = worker.make_model("mlp").to(minidl.float32)
    x, y = worker.data("mlp", 0)
    F.cross_entropy(model(minidl.tensor(x)), minidl.tensor(y)).backward()
    for rank, r in enumerate(infos):
        assert r["running_mean"] == [1.0] * 4  # rank 0's, broadcast at wrap time
        assert r["kwargs"][1][0] == pytest.approx([2 * v + 1 for v in r["kwargs"][0][0]])
        assert r["module_is_kwnet"] == "KwNet" and r["eval_no_grad"] is False
        assert r["mp_logits_dtype"] == "float16"  # computed in param_dtype
        assert r["mp_shard_dtypes"] == ["float32"] and r["mp_grad_dtypes"] == ["float32"]
        for n, p in model.named_parameters():
            got = arrays[rank]["mp|_fsdp_wrapped_module." + n]
            np.testing.assert_allclose(got, p.grad.numpy(), rtol=0.05, atol=2e-3, err_msg=n)


@needs_mpi
def test_a_group_of_one_rank_is_the_plain_model(state):
    """FSDP over a process group of this rank alone (world size 1) trains as the plain model
    on that rank's own batches."""
    infos, arrays = state
    for rank in range(2):
        assert infos[rank]["solo_world"] == 1
        model = worker.make_model("mlp")
        opt = worker.make_opt("sgd", model.parameters())
        for s in range(2):
            x, y = worker.data("mlp", s)
            sl = slice(rank * worker.BATCH, (rank + 1) * worker.BATCH)
            opt.zero_grad()
            F.cross_entropy(model(minidl.tensor(x[sl], dtype=x.dtype)),
                            minidl.tensor(y[sl])).backward()
            opt.step()
        if rank == 0:  # rank0_only: the full state dict is on rank 0
            for k, v in _plain_state(model).items():
                np.testing.assert_allclose(arrays[0][f"solo|{k}"], v, rtol=1e-12, atol=1e-14)


# ---- bad input -------------------------------------------------------------------------------
@needs_mpi
def test_errors_name_the_problem(errors):
    for r in errors:
        assert r["shared"].startswith("ValueError: FullyShardedDataParallel: parameter "
                                      "'2.weight' is shared with '0.weight', which another FSDP "
                                      "unit takes")
        # refused before anything was wrapped or flattened
        assert r["shared_left_as_was"] == ["Linear", "ReLU", "Linear", "Parameter", [4, 4], True]
        assert r["mixed_left_as_was"] == ["Linear", "ReLU", "Linear", "ReLU", "Linear", 6]
        assert r["tied_one_unit_numel"] == 24  # 16 + 4 + 4: the tied weight once
        assert r["stale_optimizer"].startswith(
            "RuntimeError: FullyShardedDataParallel: the optimizer holds parameter '0.weight'")
        assert "Construct the optimizer after wrapping" in r["stale_optimizer"]
        assert "0.weight do not and the others do" in r["mixed_requires_grad"]
        assert r["not_a_module"] == ("TypeError: FullyShardedDataParallel wraps an nn.Module, "
                                     "got function")
        assert r["bad_strategy"].startswith("TypeError") and "'FULL'" in r["bad_strategy"]
        assert r["hybrid"].startswith("ValueError: FullyShardedDataParallel: HYBRID_SHARD "
                                      "takes process_group=(shard group, replicate group)")
        assert "auto_wrap_policy must be a callable" in r["bad_policy"]
        assert r["different_models"] == (
            "ValueError: FullyShardedDataParallel: ranks wrap different modules: rank 0 has "
            "('weight', (2, 3), 'float32') where rank 1 has ('weight', (2, 4), 'float32')")
    assert errors[0]["tied_one_unit_keys"] == ["0.weight", "0.bias", "2.weight", "2.bias"]  # torch's


def test_wrapping_without_a_process_group_is_refused():
    with pytest.raises(RuntimeError, match="process group is not initialised; call "
                                           "minidl.distributed.init_process_group"):
        FSDP(nn.Linear(2, 2))


def test_wrap_policies():
    lin, seq = nn.Linear(10, 10), nn.Sequential(nn.Linear(2, 2))
    size = functools.partial(size_based_auto_wrap_policy, min_num_params=100)
    assert size(module=lin, recurse=True, nonwrapped_numel=110)
    assert size(module=lin, recurse=False, nonwrapped_numel=110)
    assert not size(module=lin, recurse=False, nonwrapped_numel=99)
    assert not size(module=nn.ModuleList([lin]), recurse=False, nonwrapped_numel=110)
    leaf = functools.partial(size_based_auto_wrap_policy, min_num_params=1,
                             force_leaf_modules={nn.Sequential})
    assert not leaf(module=seq, recurse=True, nonwrapped_numel=6)
    policy = ModuleWrapPolicy({nn.Linear})
    assert policy(module=seq, recurse=True) and not policy(module=seq, recurse=False)
    assert policy(module=lin, recurse=False, nonwrapped_numel=0)
    assert repr(policy) == "ModuleWrapPolicy({Linear})"
    tr = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={nn.Sequential})
    assert tr(module=seq, recurse=False, nonwrapped_numel=0)
    assert not tr(module=lin, recurse=False, nonwrapped_numel=0)
    lam = functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: m is lin)
    assert lam(module=lin, recurse=False, nonwrapped_numel=0)
    assert always_wrap_policy(module=lin, recurse=False)
    with pytest.raises(TypeError, match="expected module classes"):
        ModuleWrapPolicy({"Linear"})


def test_option_types_have_torchs_names():
    assert [s.name for s in ShardingStrategy][:3] == ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD"]
    assert {t.name for t in StateDictType} == {"FULL_STATE_DICT", "LOCAL_STATE_DICT",
                                               "SHARDED_STATE_DICT"}
    mp = MixedPrecision(param_dtype=minidl.float16)
    assert mp.reduce_dtype is None and mp.cast_root_forward_inputs
    import minidl.distributed as dist
    assert dist.fsdp.FullyShardedDataParallel is FSDP
    assert optim  # the optimizers take FSDP's parameters() unchanged (see the 2-rank tests)


# ---- one rank, in this process: CPU and the fake GPU (tests/_fake_gpu.py) ----------------------
def _one_rank_world(monkeypatch):
    """minidl.distributed as a world of this process alone, without MPI: every collective of a
    one-rank group leaves (or copies) its data as it is."""
    import minidl.distributed as dist

    def copy(out, inp, *args, **kwargs):
        out[...] = inp.data if hasattr(inp, "_ctx") else inp

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 1)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(dist, "all_gather_object", lambda lst, obj, group=None: lst.__setitem__(
        0, obj))
    monkeypatch.setattr(dist, "broadcast", lambda *a, **k: None)
    monkeypatch.setattr(dist, "all_reduce", lambda *a, **k: None)
    monkeypatch.setattr(dist, "all_gather_into_tensor", copy)
    monkeypatch.setattr(dist, "reduce_scatter_tensor", copy)


def _train_one_rank(device, steps=2):
    """FSDP (each Linear a unit) + Adam on ``device``: the full state dict and the clipped
    gradient norm of one more backward."""
    model = FSDP(worker.make_model("mlp").to(minidl.float32).to(device),
                 auto_wrap_policy={nn.Linear})
    opt = optim.Adam(model.parameters(), lr=0.01)
    for s in range(steps + 1):
        x, y = worker.data("mlp", s)
        opt.zero_grad()
        F.cross_entropy(model(minidl.tensor(x, device=device)),
                        minidl.tensor(y, device=device)).backward()
        if s < steps:
            opt.step()
    devices = {p.device for p in model.parameters()} | {
        p.grad.device for p in model.parameters()}
    norm = float(model.clip_grad_norm_(0.1).item())
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT):
        return {k: v.numpy() for k, v in model.state_dict().items()}, norm, devices


def test_one_rank_in_process_equals_the_plain_model(monkeypatch):
    _one_rank_world(monkeypatch)
    got, norm, devices = _train_one_rank("cpu")
    ref = worker.make_model("mlp").to(minidl.float32)
    opt = optim.Adam(ref.parameters(), lr=0.01)
    for s in range(3):
        x, y = worker.data("mlp", s)
        opt.zero_grad()
        F.cross_entropy(ref(minidl.tensor(x)), minidl.tensor(y)).backward()
        if s < 2:
            opt.step()
    want = nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
    assert norm == pytest.approx(float(want.item()), rel=1e-5)
    assert list(got) == list(_plain_state(ref)) and devices == {"cpu"}
    for k, v in _plain_state(ref).items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-7, err_msg=k)


def test_manual_nesting_and_buffer_dtype_one_rank(monkeypatch):
    """Units nested by hand (FSDP inside FSDP) train as the plain model; MixedPrecision's
    buffer_dtype casts the buffers when wrapped."""
    _one_rank_world(monkeypatch)
    minidl.manual_seed(4)
    plain = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    minidl.manual_seed(4)
    inner = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    inner[3] = FSDP(inner[3])
    model = FSDP(inner, mixed_precision=MixedPrecision(buffer_dtype=minidl.float64))
    assert model.module[1].running_var.dtype == minidl.float64
    assert [n for n, _ in model.named_parameters()] == ["_flat_param",
                                                        "_fsdp_wrapped_module.3._flat_param"]
    opts = [optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, model)]
    x = minidl.tensor(np.random.default_rng(0).standard_normal((8, 3)))
    for _ in range(3):
        for m, opt in zip((plain, model), opts):
            opt.zero_grad()
            (m(x) ** 2).mean().backward()
            opt.step()
    got = model.state_dict()
    assert list(got) == list(plain.state_dict())
    for k, v in plain.state_dict().items():
        np.testing.assert_allclose(got[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    assert model.module[0].bias is not None and model.module[0].bias.shape == (0,)  # freed


def test_one_rank_on_the_fake_gpu_equals_the_cpu(monkeypatch, host_kernels):
    """The device paths: the flat buffers, shards, gradients and optimizer state stay on the
    GPU; the state dict comes back to the host with the CPU run's values."""
    import _fake_gpu

    _one_rank_world(monkeypatch)
    cpu, cpu_norm, _ = _train_one_rank("cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    from minidl.distributed.fsdp import fully_sharded_data_parallel as fsdp_module

    # strict: numpy arrays beside device arrays, np.asarray of device data... raise as CuPy
    with _fake_gpu.strict(fsdp_module) as syncs:
        gpu, gpu_norm, devices = _train_one_rank("cuda")
    assert devices == {"cuda"}
    # training makes no host copy: one per shard's gradient in clip_grad_norm_'s sum (3 units),
    # one per state-dict value (6) when the state dict comes to the host
    assert syncs == ["float"] * 3 + ["asnumpy"] * 6
    assert gpu_norm == pytest.approx(cpu_norm, rel=1e-5)
    for k, v in cpu.items():
        np.testing.assert_allclose(gpu[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_ignored_modules_keep_their_parameters(monkeypatch):
    _one_rank_world(monkeypatch)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    head = net[2]
    model = FSDP(net, ignored_modules=[head], sync_module_states=True)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["_flat_param", "_fsdp_wrapped_module.2.weight",
                     "_fsdp_wrapped_module.2.bias"]
    assert model._flat.shape == (16,) and head.weight.shape == (2, 4)
    model(minidl.tensor(np.ones((1, 3), np.float32))).sum().backward()
    assert head.weight.grad.shape == (2, 4) and model._flat.grad.shape == (16,)


def test_full_shard_lets_go_after_forward_shard_grad_op_after_backward(monkeypatch):
    _one_rank_world(monkeypatch)
    x = minidl.tensor(np.ones((2, 3), np.float32))
    for strategy, kept in ((ShardingStrategy.FULL_SHARD, False),
                           (ShardingStrategy.SHARD_GRAD_OP, True)):
        model = FSDP(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)),
                     sharding_strategy=strategy, auto_wrap_policy={nn.Linear})
        units = FSDP.fsdp_modules(model)
        assert len(units) == 3 and FSDP.fsdp_modules(model, root_only=True) == [model]
        out = model(x).sum()
        linear = units[1].module
        assert (units[1]._full is not None) == kept
        assert (linear.weight.shape == (4, 3)) == kept  # the gathered view, or the placeholder
        out.backward()
        assert units[1]._full is None and linear.weight.shape == (0,)
        with minidl.no_grad():  # no backward to come: let go after the forward whatever
            model(x)
        assert units[1]._full is None


# ---- FULL_SHARD frees the gathered weights between forward and backward ------------------------
@pytest.fixture(scope="module")
def memory(launched):
    return _json(launched, "memory")


# (unit gathering again in backward, the units' buffers of this backward pass still alive then):
# a unit lets go once every view it saved is unpacked. The conv units never overlap; in "twice"
# the block's inner unit is still needed by the block's first use when the block gathers.
REGATHERS = {"mlp": [["", []], ["2.", [""]]],
             "conv": [["", []], ["3.", [""]], ["0.", []]],
             "twice": [["", []], ["block.2.", [""]], ["block.", ["", "block.2."]]]}


@needs_mpi
@pytest.mark.parametrize("kind", ["mlp", "conv", "twice"])
def test_full_shard_frees_gathered_weights_between_forward_and_backward(memory, kind):
    """Between forward and backward, FULL_SHARD keeps no gathered parameter buffer alive (the
    graph holds tokens and placeholders instead), SHARD_GRAD_OP all of them (every use's);
    FULL_SHARD gathers each unit once again in backward (the block applied twice too), lets
    go of it as soon as its saved views are unpacked, and nothing gathered outlives the
    backward pass. The same on both ranks."""
    assert memory[0] == memory[1]
    full, grad_op = memory[0][f"{kind}.FULL_SHARD"], memory[0][f"{kind}.SHARD_GRAD_OP"]
    units = full["unit_bytes"]
    assert full["alive_after_forward"] == []
    used = [units[p] for p in grad_op["forward_gathers"]]  # a unit used twice: twice
    assert sorted(n for _, n in grad_op["alive_after_forward"]) == sorted(used)
    assert sum(used) > sum(units.values()) if kind == "twice" else sum(used) == sum(units.values())
    inner = full["inner_path"]  # inside the innermost unit's forward: it and its ancestors
    assert full["alive_inside_inner_forward"] == sorted(p for p in units if inner.startswith(p))
    assert set(grad_op["alive_inside_inner_forward"]) == set(units)
    assert sorted(full["backward_gathers"]) == sorted(units)  # once per unit
    assert grad_op["backward_gathers"] == [] and memory[0][f"{kind}.NO_SHARD"][
        "backward_gathers"] == []
    assert full["alive_at_regather"] == REGATHERS[kind]
    assert full["alive_after_backward"] == [] and grad_op["alive_after_backward"] == []


def _gathered_tracker(monkeypatch):
    """Weak references to every parameter buffer a unit gathers: (unit path, ref, bytes)."""
    import weakref

    from minidl.distributed.fsdp import fully_sharded_data_parallel as fsdp_module

    refs, original = [], fsdp_module.FullyShardedDataParallel._gather

    def gather(self, dtype=None, shard=None):
        full = original(self, dtype, shard)
        if shard is None:
            refs.append((self._path, weakref.ref(full), full.nbytes))
        return full

    monkeypatch.setattr(fsdp_module.FullyShardedDataParallel, "_gather", gather)
    return refs


@pytest.mark.parametrize("strategy", ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD"])
def test_one_rank_frees_gathered_weights_and_trains_as_the_plain_model(monkeypatch, strategy):
    """One rank in this process, float32 shards computed in float64 (MixedPrecision: every
    gather makes a new buffer): the model applying a nested unit twice, with tied weights,
    trains as the plain float64 model; FULL_SHARD keeps no gathered buffer between forward
    and backward and gathers each unit once in backward, SHARD_GRAD_OP keeps all of them."""
    _one_rank_world(monkeypatch)
    refs = _gathered_tracker(monkeypatch)
    plain = worker.make_model("twice")
    model = FSDP(worker.make_model("twice").to(minidl.float32),
                 sharding_strategy=ShardingStrategy[strategy],
                 auto_wrap_policy=worker.policy("twice"),
                 mixed_precision=MixedPrecision(param_dtype=minidl.float64))
    opts = [optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, model)]
    for s in range(3):
        x, y = worker.data("twice", s)
        for m, opt in zip((plain, model), opts):
            opt.zero_grad()
            refs.clear()
            loss = F.cross_entropy(m(minidl.tensor(x, dtype=x.dtype)), minidl.tensor(y))
            alive = sum(n for _, r, n in refs if r() is not None)
            if m is model:
                n_forward = len(refs)
                assert alive == (0 if strategy == "FULL_SHARD" else
                                 sum(n for _, _, n in refs)), strategy
            loss.backward()
            if m is model:
                again = sorted(p for p, _, _ in refs[n_forward:])
                assert again == (["", "block.", "block.2."] if strategy == "FULL_SHARD"
                                 else []), again
                assert all(r() is None for _, r, _ in refs[n_forward:])
            opt.step()
    got = model.state_dict()
    assert list(got) == list(plain.state_dict())
    for k, v in plain.state_dict().items():  # float32 shards against float64 weights
        np.testing.assert_allclose(got[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_full_shard_under_the_users_saved_tensor_hooks(monkeypatch):
    """The user's saved-tensor hooks around the model still get every saved value that is no
    gathered weight (the activations), and their unpack gives them back; under
    disable_saved_tensors_hooks the graph keeps the gathered weights (nothing freed) and the
    gradients are the same."""
    from minidl.autograd.graph import disable_saved_tensors_hooks, saved_tensors_hooks

    _one_rank_world(monkeypatch)
    refs = _gathered_tracker(monkeypatch)
    x = minidl.tensor(np.random.default_rng(1).standard_normal((4, 10)), dtype=minidl.float64)
    y = minidl.tensor(np.array([0, 1, 2, 1]))

    def run(context):
        model = FSDP(worker.make_model("twice").to(minidl.float32),
                     auto_wrap_policy=worker.policy("twice"),
                     mixed_precision=MixedPrecision(param_dtype=minidl.float64))
        refs.clear()
        with context:
            loss = F.cross_entropy(model(x), y)
        alive = sum(n for _, r, n in refs if r() is not None)
        loss.backward()
        return [p.grad.numpy().copy() for p in model.parameters()], alive

    packed, unpacked = [], []

    def pack(t):
        packed.append(tuple(t.shape))
        return ("mine", t)

    def unpack(p):
        assert p[0] == "mine"
        unpacked.append(tuple(p[1].shape))
        return p[1]

    want, freed = run(contextlib.nullcontext())
    got, with_hooks = run(saved_tensors_hooks(pack, unpack))
    assert freed == 0 and with_hooks == 0
    assert packed and sorted(packed) == sorted(unpacked)
    assert (10, 16) not in packed and (16, 16) not in packed  # no weight went to the user's
    assert (4, 10) in packed  # the input, saved by the first Linear
    kept, kept_alive = run(disable_saved_tensors_hooks("no hooks here"))
    assert kept_alive > 0
    for a, b, c in zip(want, got, kept):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


class _Views(nn.Module):
    """Parameters used through views: a transpose (x @ W.T), a reshape, a broadcast expand
    (a zero stride: gathered again through as_strided), and one returned as an output."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(minidl.tensor(np.linspace(-1, 1, 12).reshape(4, 3)))
        self.scale = nn.Parameter(minidl.tensor(np.linspace(0.5, 1.5, 4)))
        self.shift = nn.Parameter(minidl.tensor(np.linspace(-0.2, 0.2, 4)))

    def forward(self, x):
        h = x @ self.weight.T
        h = h * self.scale.reshape(1, 4).expand(x.shape[0], 4) + self.shift.reshape(1, 4)
        return h.tanh(), self.weight.T


def test_full_shard_views_of_parameters_gathered_again(monkeypatch):
    """Views of the parameters saved by ops (transposed, reshaped, expanded) come back right
    from the buffer gathered again, and a view returned by the unit keeps its values."""
    _one_rank_world(monkeypatch)
    refs = _gathered_tracker(monkeypatch)
    x = minidl.tensor(np.random.default_rng(2).standard_normal((5, 3)), dtype=minidl.float64)
    plain = _Views().to(minidl.float64)
    h, wt = plain(x)
    (h ** 2).sum().backward()
    model = FSDP(nn.Sequential(_Views().to(minidl.float32)),
                 mixed_precision=MixedPrecision(param_dtype=minidl.float64))
    h2, wt2 = model(x)
    np.testing.assert_allclose(wt2.numpy(), wt.detach().numpy(), rtol=1e-7)  # no placeholder
    assert [r() is None for _, r, _ in refs] == [False]  # the returned view holds the buffer
    del wt2
    assert [r() is None for _, r, _ in refs] == [True]
    h2, wt2 = model(x)
    loss = (h2 ** 2).sum()  # (wt2 used here would keep the buffer: the graph saves it)
    assert [r() is None for _, r, _ in refs] == [True, False]  # wt2 only
    del wt2
    assert [r() is None for _, r, _ in refs] == [True, True]
    loss.backward()
    assert len(refs) == 3 and refs[2][1]() is None  # gathered once again, and let go
    with FSDP.summon_full_params(model, with_grads=True):
        for (name, p), q in zip(model.named_parameters(), plain.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=name)


class _Layer(nn.Module):
    """One layer called with a tuple of inputs; its first output."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, args):
        out = self.layer(*args)
        return out[0] if isinstance(out, tuple) else out


def _f64(rng, *shape):
    return minidl.tensor(rng.standard_normal(shape), dtype=minidl.float64)


LAYERS = {  # every op these layers record saves its weights through save_for_backward
    "conv2d_depthwise": (lambda: nn.Conv2d(4, 4, 3, groups=4), lambda r: (_f64(r, 2, 4, 6, 6),)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(2, 3, 3), lambda r: (_f64(r, 2, 2, 5, 5),)),
    "group_norm": (lambda: nn.GroupNorm(2, 4), lambda r: (_f64(r, 3, 4, 5),)),
    "rms_norm": (lambda: nn.RMSNorm(4), lambda r: (_f64(r, 3, 4),)),
    "bilinear": (lambda: nn.Bilinear(4, 4, 3), lambda r: (_f64(r, 2, 4), _f64(r, 2, 4))),
    "embedding_bag": (lambda: nn.EmbeddingBag(5, 3),
                      lambda r: (minidl.tensor(np.array([[1, 2], [0, 4]])),)),
    "lstm": (lambda: nn.LSTM(4, 3, batch_first=True), lambda r: (_f64(r, 2, 5, 4),)),
    "gru": (lambda: nn.GRU(4, 3, batch_first=True), lambda r: (_f64(r, 2, 5, 4),)),
    "attention": (lambda: nn.MultiheadAttention(4, 2, batch_first=True),
                  lambda r: (_f64(r, 2, 3, 4),) * 3),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_full_shard_frees_the_weights_of_each_layer_type(monkeypatch, name):
    """Convolutions (depthwise, transposed), norms, embedding bags, recurrent layers and
    attention under FULL_SHARD: no gathered buffer alive after forward, gradients as the
    plain layer's."""
    _one_rank_world(monkeypatch)
    refs = _gathered_tracker(monkeypatch)
    make, inputs = LAYERS[name]
    args = inputs(np.random.default_rng(3))
    minidl.manual_seed(0)
    plain = _Layer(make().to(minidl.float64))
    (plain(args) ** 2).sum().backward()
    minidl.manual_seed(0)
    model = FSDP(_Layer(make().to(minidl.float32)),
                 mixed_precision=MixedPrecision(param_dtype=minidl.float64))
    loss = (model(args) ** 2).sum()
    assert len(refs) == 1 and refs[0][1]() is None
    loss.backward()
    # bilinear saves a copy of its weight (a reshape of a permutation): nothing to gather
    assert len(refs) == (1 if name == "bilinear" else 2) and refs[-1][1]() is None
    with FSDP.summon_full_params(model, with_grads=True):
        for (pname, p), q in zip(model.named_parameters(), plain.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-5,
                                       err_msg=pname)



# ---- fully_shard (FSDP2's API) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def fsdp2(launched):
    return _json(launched, "fsdp2"), _npz(launched, "fsdp2")


@needs_mpi
@pytest.mark.parametrize("reshard", [True, False])
def test_fully_shard_trains_as_one_process(fsdp2, reshard):
    """fully_shard bottom-up (a nested block applied twice, tied weights in the root) + SGD
    on 2 ranks equals the plain model on the whole batch; the parameters keep their names,
    each rank holding half of each (flattened, padded); the classes are FSDP<Class>."""
    infos, arrays = fsdp2
    tag = f"reshard={reshard}"
    ref, _ = worker.train_reference("twice", "sgd")
    want = _plain_state(ref)
    info = infos[0][tag]
    assert info["keys"] == list(want)
    assert info["names"] == [n for n, _ in ref.named_parameters()]
    assert info["piece_sizes"] == [(p.data.size + 1) // 2 for p in ref.parameters()]
    assert info["classes"] == ["FSDPTwice", "FSDPSequential"]
    for k, v in want.items():
        np.testing.assert_allclose(arrays[f"{tag}|{k}"], v, rtol=1e-12, atol=1e-12, err_msg=k)


@needs_mpi
def test_fully_shard_state_dict_and_gradient_sync(fsdp2):
    """state_dict() holds each rank's pieces under the original names and load_state_dict
    takes them back (a piece of another size is refused, naming the key);
    set_requires_gradient_sync(False) sums locally, and the next synced backward reduces the
    sum: two micro-batches equal the plain model's two backward passes on the whole batches."""
    infos, arrays = fsdp2
    for r in infos:
        assert r["round_trip"] == [True, True, [], []]
        assert "size mismatch for inp.weight" in r["bad_size"]
        assert r["grads_after_no_sync"] == [False] * 10  # nothing reduced yet
    ref = worker.make_model("twice")
    opt = worker.make_opt("sgd", ref.parameters())
    opt.zero_grad()
    for s in range(2):
        x, y = worker.data("twice", s)
        F.cross_entropy(ref(minidl.tensor(x, dtype=x.dtype)), minidl.tensor(y)).backward()
    opt.step()
    for k, v in _plain_state(ref).items():
        np.testing.assert_allclose(arrays[f"accumulate|{k}"], v, rtol=1e-12, atol=1e-12,
                                   err_msg=k)


@needs_mpi
def test_fully_shard_frees_after_forward_unless_told_not_to(fsdp2):
    """reshard_after_forward=True: no gathered buffer alive between forward and backward, each
    module gathered once again in backward; False: every forward's buffers alive (the block's
    twice), nothing gathered in backward; nothing outlives the backward pass. unshard() shows
    the whole parameters, reshard() the pieces again."""
    infos, _ = fsdp2
    for r in infos:
        freed, kept = r["memory.reshard=True"], r["memory.reshard=False"]
        assert freed["alive_after_forward"] == []
        assert freed["backward_gathers"] == ["Twice.", "Sequential.", "Sequential."]
        assert sum(n for _, n in kept["alive_after_forward"]) == 4000 + 4 * 2176
        assert kept["backward_gathers"] == []
        assert freed["alive_after_backward"] == kept["alive_after_backward"] == []
        assert r["unshard.reshard=True"] == r["unshard.reshard=False"] == [[16, 16], [128]]


def test_fully_shard_one_rank_and_errors(monkeypatch):
    """In one process: fully_shard bottom-up trains as the plain model (mixed precision:
    float32 pieces computed in float64), full_state_dict gives the plain keys and values and
    load_full_state_dict takes them back; bad input is refused, naming it."""
    from minidl.distributed.fsdp import (FSDPModule, MixedPrecisionPolicy, fully_shard)

    _one_rank_world(monkeypatch)
    plain = worker.make_model("twice")
    model = worker.make_model("twice").to(minidl.float32)
    policy = MixedPrecisionPolicy(param_dtype=minidl.float64)
    for m in (model.block[2], model.block, model):
        assert fully_shard(m, mp_policy=policy) is m
    assert isinstance(model, FSDPModule) and isinstance(model, worker.Twice)
    opts = [optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, model)]
    for s in range(3):
        x, y = worker.data("twice", s)
        for m, opt in zip((plain, model), opts):
            opt.zero_grad()
            F.cross_entropy(m(minidl.tensor(x, dtype=x.dtype)), minidl.tensor(y)).backward()
            opt.step()
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    full = model.full_state_dict()
    assert list(full) == list(plain.state_dict())
    for k, v in plain.state_dict().items():
        np.testing.assert_allclose(full[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    changed = {k: v * 0 + 1 for k, v in full.items()}
    model.load_full_state_dict(changed)
    assert all(np.all(v.numpy() == 1) for v in model.full_state_dict().values())
    # reshard_after_forward=None (the default): the blocks reshard, the root keeps its own
    strategies = [m._fsdp_state.sharding_strategy for m in (model, model.block, model.block[2])]
    assert strategies == [ShardingStrategy.SHARD_GRAD_OP] + [ShardingStrategy.FULL_SHARD] * 2
    model.set_reshard_after_forward(True)
    assert model._fsdp_state.sharding_strategy is ShardingStrategy.FULL_SHARD
    with pytest.raises(ValueError, match="already fully_shard"):
        fully_shard(model)
    with pytest.raises(TypeError, match="nn.Module"):
        fully_shard(lambda x: x)
    with pytest.raises(TypeError, match="mesh must be a DeviceMesh"):
        fully_shard(nn.Linear(2, 2), mesh=object())
    with pytest.raises(NotImplementedError, match="reshard_after_forward"):
        fully_shard(nn.Linear(2, 2), reshard_after_forward=2)
    with pytest.raises(ValueError, match="shape"):
        model.load_full_state_dict({**changed, "inp.weight": minidl.ones(3)})



def test_autograd_grad_of_the_input_leaves_the_shards_alone(monkeypatch):
    """autograd.grad(loss, [x]) through FSDP units gives x's gradient and no shard gradient
    (as torch's autograd.grad); a backward pass after a step then equals the plain model's."""
    _one_rank_world(monkeypatch)
    minidl.manual_seed(0)
    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(minidl.float64)
    minidl.manual_seed(0)
    model = FSDP(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
                 auto_wrap_policy={nn.Linear},
                 mixed_precision=MixedPrecision(param_dtype=minidl.float64))
    x = minidl.tensor(np.random.default_rng(0).standard_normal((5, 3)), dtype=minidl.float64,
                      requires_grad=True)
    grads = [minidl.autograd.grad((m(x) ** 2).sum(), [x])[0].numpy() for m in (plain, model)]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6)
    assert all(p.grad is None for p in model.parameters())
    with minidl.no_grad():
        for m in (plain, model):
            for p in m.parameters():
                p.data += 0.5
    for m in (plain, model):
        (m(x) ** 2).sum().backward()
    with FSDP.summon_full_params(model, with_grads=True):
        for p, q in zip(model.parameters(), plain.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
