"""torch.distributed's API beyond all_reduce/broadcast/all_gather: reduce, gather, scatter,
reduce_scatter, all_to_all, point to point, async Work, object collectives and subgroups; the
differentiable collectives of minidl.distributed.nn; and nn.SyncBatchNorm.

The multi-process cases run ``mpiexec -n 2 tests/_dist_worker.py CASE`` once each (skipped only
where mpi4py or mpiexec is missing, with that reason); the references are computed here, in one
process: by hand for the collectives, by BatchNorm2d (and torch's) on the whole batch for
SyncBatchNorm.
"""
import json

import numpy as np
import pytest

import minidl
import minidl.distributed as dist
import minidl.nn as nn
from test_distributed import REPO, WORKER, needs_mpi, run_mpi
import _dist_worker as worker


# every multi-rank case of this file runs in one launch of mpiexec (a launch costs seconds)
ALL_CASES = "api,autograd,syncbn,join,zero,mismatch,monitored"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_api")
    rc, so, se, _ = run_mpi([WORKER, ALL_CASES, out])
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return out


def _run(case, launched):
    assert case in ALL_CASES.split(",")
    return launched


@pytest.fixture(scope="module")
def api(launched):
    out = _run("api", launched)
    return [json.loads((out / f"api.rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def autograd_run(launched):
    out = _run("autograd", launched)
    return [dict(np.load(out / f"autograd.rank{r}.npz")) for r in range(2)]


@pytest.fixture(scope="module")
def syncbn_run(launched):
    out = _run("syncbn", launched)
    return [dict(np.load(out / f"syncbn.rank{r}.npz")) for r in range(2)]


# ---- collectives, on 2 ranks --------------------------------------------------------------------
@needs_mpi
def test_reduce_product_and_bitwise_ops(api):
    r0, r1 = api
    assert r1["reduce"] == [3.0, 6.0]  # dst=1 gets the sum
    assert r0["reduce"] == [1.0, 2.0]  # the others keep their own values
    for r in api:
        assert r["product"] == [6, 9] and r["bor"] == [3, 6]
        assert "op 'avg' needs a floating-point array, got int64" in r["avg_int"]
        assert "op 'band' needs an integer or bool array, got float32" in r["band_float"]


@needs_mpi
def test_gather_and_scatter(api):
    r0, r1 = api
    assert r0["gather"] == [[0.0] * 3, [10.0] * 3] and r1["gather"] is None
    assert "must NOT be specified on non-destination ranks" in r1["gather_nondst_list"]
    assert r0["scatter"] == [0.0, 0.5] and r1["scatter"] == [1.0, 1.5]  # from the last rank


@needs_mpi
def test_all_gather_into_tensor_and_reduce_scatter(api):
    for r in api:
        assert r["agit_cat"] == [[0.0, 0.25], [1.0, 1.25]]
        assert r["agit_stack"] == [[[0.0, 0.25]], [[1.0, 1.25]]]
        assert "output tensor size must be equal to world_size times input tensor size" \
            in r["agit_bad"] and "(3, 2)" in r["agit_bad"]
    r0, r1 = api
    # rank q gets sum over ranks r of input_list[q] = [q, 100 r]
    assert r0["reduce_scatter"] == [0.0, 100.0] and r1["reduce_scatter"] == [2.0, 100.0]
    assert r0["reduce_scatter_tensor_max"] == [1.0, 2.0]
    assert r1["reduce_scatter_tensor_max"] == [3.0, 4.0]


@needs_mpi
def test_all_to_all_even_uneven_and_lists(api):
    r0, r1 = api
    assert r0["a2a_even"] == [0.0, 1.0, 100.0, 101.0]
    assert r1["a2a_even"] == [2.0, 3.0, 102.0, 103.0]
    assert r0["a2a_uneven"] == [[0.0, 1.0], [10.0, 11.0], [12.0, 13.0]]
    assert r1["a2a_uneven"] == [[2.0, 3.0], [4.0, 5.0], [14.0, 15.0]]
    assert "output_split_sizes [1, 1] must hold 2 sizes" in r0["a2a_bad"]
    assert r0["a2a_list"] == [[0.0], [10.0]]
    assert r1["a2a_list"] == [[1.0, 1.0], [11.0, 11.0]]


@needs_mpi
def test_point_to_point(api):
    r0, r1 = api
    # a ring of 1 MB messages with batch_isend_irecv: each rank got its left neighbour's
    assert r0["ring"] == [1.0, 1.0] and r1["ring"] == [0.0, 0.0]
    assert r1["any_source"] == [0, [7.0, 8.0]]  # recv without src names the sender
    for r in api:
        assert "destination rank should not be the same as the rank of the current process" \
            in r["send_self"]


@needs_mpi
def test_async_work_and_objects(api):
    for r in api:
        assert r["async"] == [True, [3.0] * 4]
        assert r["barrier_async"] is True
        assert r["all_gather_object"] == [{"rank": 0, "name": "r0"}, {"rank": 1, "name": "r1"}]
        assert r["broadcast_object_list"] == [1, "x"]
    r0, r1 = api
    assert r0["gather_object"] == [[0, 0], [1, 1]] and r1["gather_object"] is None
    assert r0["scatter_object_list"] == {"to": 0} and r1["scatter_object_list"] == {"to": 1}


@needs_mpi
def test_subgroups(api):
    r0, r1 = api
    assert not r0["solo_member"] and r1["solo_member"]
    assert r0["solo_rank"] == -1 and r1["solo_rank"] == 0
    assert r0["solo_sum"] == [1.0, 1.0]  # outside the group: untouched
    assert r1["solo_sum"] == [2.0, 2.0]  # a group of one: its own value
    for r in api:
        assert r["pair_ranks"] == [0, 1]  # new_group([1, 0]) orders by world rank, as torch
        assert r["pair_sum"] == [3.0, 3.0]
        assert r["pair_broadcast_group_src"] == [1.0, 1.0]
        assert "the group was destroyed" in r["destroyed"]
    assert r0["pair_rank"] == [0, 2, 0, 1] and r1["pair_rank"] == [1, 2, 1, 1]
    assert "rank 0 is not part of the group (its ranks: [1])" in r1["not_member_src"]
    # DistributedDataParallel(device_ids=[0], process_group=solo) on the one member: its own
    # gradients; on a rank outside the group it is refused
    assert r1["ddp_solo_is_local"] is True
    assert "this rank is not part of process_group" in r0["ddp_solo_is_local"]
    for r in api:
        assert "give at most one" in r["ddp_two_devices"]


# ---- differentiable collectives -----------------------------------------------------------------
def _w(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


@needs_mpi
def test_nn_functional_gradients_sum_over_ranks(autograd_run):
    xs = [_w(r, (2, 3)) for r in range(2)]
    for q, got in enumerate(autograd_run):
        np.testing.assert_allclose(got["all_gather.0"], np.concatenate(xs))
        np.testing.assert_allclose(got["all_gather.1"],
                                   sum(_w(100 + r, (4, 3))[2 * q:2 * q + 2] for r in range(2)))
        np.testing.assert_allclose(got["all_reduce.0"], xs[0] + 2 * xs[1])
        np.testing.assert_allclose(got["all_reduce.1"], (q + 1) * (_w(200, (2, 3)) +
                                                                   _w(201, (2, 3))))
        np.testing.assert_allclose(got["broadcast.0"], xs[1])
        expect = _w(300, (2, 3)) + _w(301, (2, 3)) if q == 1 else np.zeros((2, 3))
        np.testing.assert_allclose(got["broadcast.1"], expect)
        np.testing.assert_allclose(got["reduce_scatter.0"], (q + 1) * (xs[0] + xs[1]))
        np.testing.assert_allclose(got["reduce_scatter.1"],
                                   _w(400, (2, 3)) + 2 * _w(401, (2, 3)))
    rows = [_w(500 + r, (3, 2)) for r in range(2)]
    u = [_w(600 + r, (3, 2)) for r in range(2)]
    r0, r1 = autograd_run
    np.testing.assert_allclose(r0["all_to_all_single.0"], np.concatenate([rows[0][:1],
                                                                          rows[1][:2]]))
    np.testing.assert_allclose(r1["all_to_all_single.0"], np.concatenate([rows[0][1:],
                                                                          rows[1][2:]]))
    np.testing.assert_allclose(r0["all_to_all_single.1"], np.concatenate([u[0][:1], u[1][:2]]))
    np.testing.assert_allclose(r1["all_to_all_single.1"], np.concatenate([u[0][1:], u[1][2:]]))


@needs_mpi
def test_nn_functional_second_order(autograd_run):
    s = _w(800, (4,)) + _w(801, (4,))
    for q, got in enumerate(autograd_run):
        z = _w(700 + q, (4,))
        np.testing.assert_allclose(got["second_order.0"], 2 * z * s)
        np.testing.assert_allclose(got["second_order.1"], 8 * z * s * s)


# ---- SyncBatchNorm -------------------------------------------------------------------------------
def _one_process_reference():
    """BatchNorm2d over the whole batch, the two steps the ranks ran."""
    x, r = worker.syncbn_data()
    model = worker.syncbn_model(sync=False)
    ref = {}
    for step in range(2):
        xb = minidl.tensor(x, requires_grad=True, dtype=minidl.float64)
        y = model(xb)
        (y * minidl.tensor(r, dtype=minidl.float64)).sum().backward()
        ref[f"y{step}"], ref[f"gx{step}"] = y.numpy(), xb.grad.numpy()
        for name, p in model.named_parameters():
            ref[f"g{step}.{name}"] = p.grad.numpy()
            p.grad = None
    for name, b in model.named_buffers():
        ref[name] = b.numpy().copy()  # (numpy() shares the buffer)
    model.eval()
    ref["eval"] = model(minidl.tensor(x, dtype=minidl.float64)).numpy()
    model.train()
    ref.update(worker.gradient_penalty(model, x, r))
    return ref


@needs_mpi
def test_sync_batchnorm_equals_batchnorm_over_the_whole_batch(syncbn_run):
    ref = _one_process_reference()
    bounds = np.cumsum((0,) + worker.SYNC_SIZES)
    for rank, got in enumerate(syncbn_run):
        assert sorted(got) == sorted(list(ref) + ["converted"])
        sl = slice(bounds[rank], bounds[rank + 1])
        for key in ("y0", "y1", "gx0", "gx1", "eval", "gp.gx", "gp.x"):
            np.testing.assert_allclose(got[key], ref[key][sl], rtol=1e-9, atol=1e-9,
                                       err_msg=f"rank {rank} {key}")
        for key in ("1.running_mean", "1.running_var"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, err_msg=key)
        assert int(got["1.num_batches_tracked"]) == 2
        assert got["converted"].all()
    # parameter gradients are each rank's own (DDP averages them): they add up to the whole's
    for key in ref:
        if key.startswith(("g0.", "g1.", "gp.")) and key not in ("gp.gx", "gp.x"):
            total = syncbn_run[0][key] + syncbn_run[1][key]
            # the conv weight gradients sum x (~1e4) times gradients that cancel, so a 1e-12
            # difference in those shows up 1e4 times larger (torch's differ from both by 2e-6)
            np.testing.assert_allclose(total, ref[key], rtol=1e-8,
                                       atol=1e-9 * max(np.abs(ref[key]).max(), 1.0), err_msg=key)
            if np.abs(ref[key]).max() > 1e-6:  # (the conv bias: 0 before a batch norm)
                assert not np.allclose(syncbn_run[0][key], ref[key])


def test_one_process_reference_matches_torch():
    """The reference above is torch's BatchNorm2d on the same batch (torch's SyncBatchNorm
    needs a process group and a GPU)."""
    torch = pytest.importorskip("torch")
    x, r = worker.syncbn_data()
    ref = _one_process_reference()
    model = worker.syncbn_model(sync=False)
    tm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                             torch.nn.ReLU()).double()
    tm.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                        for k, v in model.state_dict().items()})
    for step in range(2):
        xt = torch.tensor(x, requires_grad=True)
        y = tm(xt)
        (y * torch.tensor(r)).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), ref[f"y{step}"], rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(xt.grad.numpy(), ref[f"gx{step}"], rtol=1e-6, atol=1e-6)
        for name, p in tm.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), ref[f"g{step}.{name}"], rtol=1e-6,
                                       atol=1e-6)
            p.grad = None
    for name in ("1.running_mean", "1.running_var"):
        np.testing.assert_allclose(tm.state_dict()[name].numpy(), ref[name], rtol=1e-9)
    xt = torch.tensor(x, requires_grad=True)
    (gx,) = torch.autograd.grad((tm(xt) * torch.tensor(r)).sum(), xt, create_graph=True)
    (gx * gx).sum().backward()
    np.testing.assert_allclose(gx.detach().numpy(), ref["gp.gx"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(xt.grad.numpy(), ref["gp.x"], rtol=1e-6, atol=1e-6)
    for name, p in tm.named_parameters():
        if p.grad is not None and f"gp.{name}" in ref:
            scale = max(np.abs(ref[f"gp.{name}"]).max(), 1.0)
            np.testing.assert_allclose(p.grad.numpy(), ref[f"gp.{name}"], rtol=1e-6,
                                       atol=1e-6 * scale, err_msg=name)


class _OneRank:
    """minidl.distributed's collectives for a world of one, to run SyncBatchNorm's own op in
    this process (gradcheck)."""

    @staticmethod
    def install(monkeypatch):
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 1)

        def agit(out, inp, group=None):
            out[...] = inp.reshape(out.shape)
        monkeypatch.setattr(dist, "all_gather_into_tensor", agit)
        monkeypatch.setattr(dist, "all_reduce", lambda x, op="sum", group=None: None)


def test_sync_batchnorm_op_gradcheck(monkeypatch):
    from minidl.nn._sync_batchnorm import _SyncBatchNormFn
    from minidl.testing import gradcheck

    _OneRank.install(monkeypatch)
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((3, 2, 4)) * 3 + 5, requires_grad=True,
                      dtype=minidl.float64)
    w = minidl.tensor([1.5, -0.5], requires_grad=True, dtype=minidl.float64)
    b = minidl.tensor([0.2, 0.1], requires_grad=True, dtype=minidl.float64)

    def fn(x, w, b):
        return _SyncBatchNormFn.apply(x, w, b, has_weight=True, has_bias=True,
                                      running_mean=None, running_var=None, momentum=0.1,
                                      eps=1e-5, group=None)
    assert gradcheck(fn, [x, w, b])
    # and it equals batch norm (one rank holds the whole batch)
    ref = minidl.nn.functional.batch_norm(x, None, None, w, b, training=True)
    np.testing.assert_allclose(fn(x, w, b).numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


def test_sync_batchnorm_op_gradgradcheck(monkeypatch):
    import minidl.distributed.nn as dnn
    from minidl.nn._sync_batchnorm import _SyncBatchNormFn
    from minidl.testing import gradgradcheck

    _OneRank.install(monkeypatch)
    monkeypatch.setattr(dnn, "all_reduce", lambda t, op="sum", group=None: t)
    rng = np.random.default_rng(1)
    x = minidl.tensor(rng.standard_normal((3, 2, 3)) + 2, requires_grad=True,
                      dtype=minidl.float64)
    w = minidl.tensor([1.5, -0.5], requires_grad=True, dtype=minidl.float64)
    b = minidl.tensor([0.2, 0.1], requires_grad=True, dtype=minidl.float64)
    assert gradgradcheck(lambda x, w, b: _SyncBatchNormFn.apply(
        x, w, b, has_weight=True, has_bias=True, running_mean=None, running_var=None,
        momentum=0.1, eps=1e-5, group=None), [x, w, b])


def test_sync_batchnorm_without_a_process_group_is_batchnorm():
    minidl.manual_seed(0)
    x = minidl.randn(4, 3, 5)
    sbn, bn = nn.SyncBatchNorm(3), nn.BatchNorm1d(3)
    np.testing.assert_allclose(sbn(x).numpy(), bn(x).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sbn.running_var.numpy(), bn.running_var.numpy(), rtol=1e-6)
    assert int(sbn.num_batches_tracked.numpy()) == 1
    with pytest.raises(ValueError, match=r"expected at least 2D input \(got 1D input\)"):
        sbn(minidl.randn(3))


def test_convert_sync_batchnorm_keeps_weights_statistics_and_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(
        nn.BatchNorm1d(2, affine=False)))
    model[1].running_mean.data[...] = 3.0
    model[2][0].eval()
    weight = model[1].weight
    out = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert out is model
    assert isinstance(model[1], nn.SyncBatchNorm) and model[1].weight is weight
    assert model[1].running_mean.numpy().tolist() == [3.0] * 4
    assert isinstance(model[2][0], nn.SyncBatchNorm) and not model[2][0].training
    assert model[2][0].weight is None
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias",
                                       "1.running_mean", "1.running_var",
                                       "1.num_batches_tracked", "2.0.running_mean",
                                       "2.0.running_var", "2.0.num_batches_tracked"}


def test_convert_sync_batchnorm_regroups_an_existing_sync_batchnorm():
    """convert_sync_batchnorm(model, process_group=g) left a SyncBatchNorm already in the model
    on its old group (torch re-creates it on g, keeping its parameters and statistics), so its
    statistics were silently synchronised over the wrong ranks."""
    group = object()  # any group object: nothing runs a collective here
    bn = nn.SyncBatchNorm(3)
    bn.running_mean.data[...] = 2.0
    model = nn.Sequential(nn.Linear(3, 3), bn)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
    new = converted[1]
    assert isinstance(new, nn.SyncBatchNorm) and new.process_group is group
    assert new.weight is bn.weight and new.running_mean is bn.running_mean
    assert new.running_mean.numpy().tolist() == [2.0, 2.0, 2.0]


# ---- in this process: no MPI needed --------------------------------------------------------------
def test_new_functions_before_init_raise_runtime_error():
    x = np.ones(2, dtype=np.float32)
    calls = [lambda: dist.reduce(x, 0), lambda: dist.gather(x), lambda: dist.scatter(x),
             lambda: dist.reduce_scatter(x, [x, x]), lambda: dist.all_to_all_single(x, x),
             lambda: dist.send(x, 1), lambda: dist.recv(x), lambda: dist.new_group([0]),
             lambda: dist.all_gather_object([None], 1), lambda: dist.get_process_group_ranks(None),
             lambda: dist.barrier(async_op=True)]
    for call in calls:
        with pytest.raises(RuntimeError, match="init_process_group"):
            call()
    import minidl.distributed.nn as dnn

    with pytest.raises(RuntimeError, match="init_process_group"):
        dnn.all_gather(minidl.ones(2))


def test_backend_names_and_availability():
    assert dist.Backend("MPI") == "mpi" and dist.Backend.NCCL == "nccl"
    with pytest.raises(ValueError, match="Invalid backend: 'xyz'"):
        dist.Backend("xyz")
    assert dist.is_mpi_available() == dist.is_available()
    assert dist.is_backend_available("gloo") == dist.is_available()
    assert dist.is_backend_available("ucc") is False
    assert isinstance(dist.is_nccl_available(), bool)
    assert dist.ReduceOp.PRODUCT == "product" and dist.reduce_op is dist.ReduceOp
    assert dist.group.WORLD is None and dist.GroupMember.WORLD is None  # before init


@pytest.mark.skipif(not dist.is_available(), reason="needs mpi4py (pip install "
                    "'minidl[distributed]')")
def test_torchrun_without_an_mpi_launcher_is_refused(tmp_path):
    """torchrun sets WORLD_SIZE; without mpiexec every process would be a world of one and
    train alone, silently: refused with what to run instead."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(WORLD_SIZE="2", RANK="0", PYTHONPATH=str(WORKER.parents[1]))
    code = ("import minidl.distributed as d\n"
            "try:\n    d.init_process_group('gloo')\n"
            "except RuntimeError as e:\n    print('REFUSED', e)\n")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "REFUSED" in res.stdout and "mpiexec -n 2" in res.stdout, res.stdout + res.stderr


# ---- DDP: uneven inputs (join) and communication hooks ------------------------------------------
@pytest.fixture(scope="module")
def join_run(launched):
    out = _run("join", launched)
    return out, [json.loads((out / f"join.rank{r}.json").read_text()) for r in range(2)]


@needs_mpi
def test_ddp_join_trains_on_uneven_inputs(join_run):
    """Rank 0 holds 3 batches, rank 1 holds 5: under join() rank 0 shadows rank 1's last two
    steps, and both end with the model of one process that averaged the gradients that way."""
    out, _ = join_run
    ref = worker.join_reference()
    for rank in range(2):
        got = np.load(out / f"join.rank{rank}.npz")
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-5,
                                       err_msg=f"rank {rank} {k}")


@needs_mpi
def test_ddp_join_throw_on_early_termination(join_run):
    _, results = join_run
    for r in results:
        assert r["throw"] == ("Detected at least one rank that exhausted inputs. Throwing "
                              "across all ranks.")
    assert [r["throw_steps"] for r in results] == [2, 3]  # rank 1 raised in its 4th forward


@needs_mpi
def test_ddp_comm_hooks(join_run):
    out, results = join_run
    for rank in range(2):
        got = np.load(out / f"hooks.rank{rank}.npz")
        names = [k.split(".", 1)[1] for k in got.files if k.startswith("none.")]
        for n in names:
            plain = got[f"none.{n}"]
            np.testing.assert_allclose(got[f"allreduce.{n}"], plain, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(got[f"fp16.{n}"], plain, rtol=1e-2, atol=1e-3)
            np.testing.assert_allclose(got[f"bf16.{n}"], plain, rtol=2e-2, atol=1e-2)
            assert not np.array_equal(got[f"fp16.{n}"], plain) or not plain.any()
        # the custom hook took the max over ranks: the same on both ranks, unlike a mean
        other = np.load(out / f"hooks.rank{1 - rank}.npz")
        for n in names:
            np.testing.assert_array_equal(got[f"custom.{n}"], other[f"custom.{n}"])
    for r in results:
        # 2 buckets of a tiny cap (reverse order: the last layer's 3 tensors... then the rest)
        assert [c[0] for c in r["custom_calls"]] == list(range(len(r["custom_calls"])))
        assert [c[1] for c in r["custom_calls"]][-1] is True
        assert sum(c[2] for c in r["custom_calls"]) == 4  # every parameter in one bucket
        assert r["hook_twice"] == "register_comm_hook can only be called once."


def test_futures():
    from minidl.futures import Future, collect_all, wait_all

    f = Future()
    with pytest.raises(RuntimeError, match="not completed yet"):
        f.value()
    g = f.then(lambda fut: fut.value() * 2)
    seen = []
    f.add_done_callback(lambda fut: seen.append(fut.value()))
    f.set_result(21)
    assert g.wait() == 42 and seen == [21] and f.done()
    with pytest.raises(RuntimeError, match="already completed"):
        f.set_result(1)
    h = Future()
    h.set_exception(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        h.then(lambda fut: fut.value()).wait()
    assert wait_all([f, g]) == [21, 42]
    assert collect_all([f, g]).wait() == [f, g]


def test_future_then_completes_when_its_future_is_set():
    """Future.then's future completed only when it was waited on: after set_result on the
    first, torch's chained future is done (its callback has run), minidl's was not."""
    from minidl.futures import Future

    seen = []
    f = Future()
    g = f.then(lambda fut: seen.append(fut.value()) or fut.value() + 1)
    h = g.then(lambda fut: fut.value() * 10)
    bad = f.then(lambda fut: 1 / 0)
    assert not g.done()
    f.set_result(1)
    assert seen == [1] and g.done() and h.done() and bad.done()
    assert g.value() == 2 and h.wait() == 20
    with pytest.raises(ZeroDivisionError):
        bad.wait()


def test_a_collectives_future_reports_done_once_the_collective_is():
    """Work.get_future().done() stayed False until something waited on the future, so
    ``while not fut.done(): other_work()`` (torch's way to overlap) never ended; done() now
    polls the operation, and a chained then() future follows."""
    from minidl.distributed import Work
    from minidl.distributed.mpi import Done

    out = minidl.ones(2)
    fut = Work(Done(), [out]).get_future()
    chained = fut.then(lambda f: f.value()[0] * 2)
    spins = 0
    while not fut.done() and spins < 100:
        spins += 1
    assert fut.done() and spins == 0 and chained.done()
    assert fut.value()[0] is out and chained.value().numpy().tolist() == [2.0, 2.0]


# ---- ZeroRedundancyOptimizer -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def zero_run(launched):
    out = _run("zero", launched)
    return out, [json.loads((out / f"zero.rank{r}.json").read_text()) for r in range(2)]


@needs_mpi
def test_zero_redundancy_optimizer_equals_one_process_adam(zero_run):
    """2 ranks, DDP + ZeroRedundancyOptimizer(Adam) with two parameter groups and a StepLR
    schedule == one process's Adam on both ranks' batches: the weights and the consolidated
    Adam state, while each rank keeps the state of half the parameters only."""
    out, results = zero_run
    ref_params, ref_state = worker.zero_reference()
    for rank in range(2):
        got = np.load(out / f"zero.rank{rank}.npz")
        for k, v in ref_params.items():
            np.testing.assert_allclose(got[f"param.{k}"], v, rtol=1e-5, atol=1e-6,
                                       err_msg=f"rank {rank} {k}")
    got = np.load(out / "zero.rank0.npz")
    assert results[0]["state_keys"] == sorted(ref_state)
    for i, st in ref_state.items():
        for n, v in st.items():
            np.testing.assert_allclose(got[f"state.{i}.{n}"], v, rtol=1e-5, atol=1e-7,
                                       err_msg=f"state {i} {n}")
    # of 4 (160, 16 | 48, 3 elements): torch's greedy partition, its totals carried from the
    # first group to the second, gives rank 0 the 160 and rank 1 the other three
    assert [r["local_params"] for r in results] == [1, 3]
    for r in results:
        assert r["lr"] == [0.01 * 0.5 ** 3, 0.02 * 0.5 ** 3]
        assert r["reloaded_lr"] == r["lr"] and r["reloaded_steps"] == [6.0]
        assert f"consolidate_state_dict(to={r['rank']})" in r["not_consolidated"]


@needs_mpi
def test_monitored_barrier_names_the_late_rank(launched):
    out = _run("monitored", launched)
    r0, r1 = [json.loads((out / f"monitored.rank{r}.json").read_text()) for r in range(2)]
    assert r0["ok_seconds"] < 2.5 and r1["ok_seconds"] < 2.5  # not its 5 s timeout
    assert r0["late"] == ("RuntimeError: [Rank 0]: Rank 1 failed to pass monitoredBarrier in "
                          "1000 ms")
    # it waited its 1 s timeout, not rank 1's 4 s nor the group's 30 min
    assert 0.9 < r0["late_seconds"] < 3.0
    assert "rank 0 did not answer within 1000 ms" in r1["late"]
    assert r0["after"] == r1["after"] == [2.0, 2.0]  # no abort: the job carried on


@needs_mpi
def test_mismatched_collectives_raise_on_every_rank(launched):
    """Arguments that differ between ranks (size, dtype, which collective, root, all-to-all
    splits, a message of another size): every rank raises, naming what each rank passed,
    instead of hanging or reducing part of the data; the job carries on."""
    out = _run("mismatch", launched)
    r0, r1 = [json.loads((out / f"mismatch.rank{r}.json").read_text()) for r in range(2)]
    for r in (r0, r1):
        assert ("rank 0: all_reduce of shape (3,) float32, op sum; rank 1: all_reduce of shape "
                "(4,) float32, op sum" in r["size"])
        assert "rank 1: all_reduce of shape (3,) float64" in r["dtype"]
        assert "rank 0: barrier; rank 1: all_reduce of shape (3,) float32" in r["kind"]
        assert "root 0; rank 1: broadcast of shape (2,) float64, root 1" in r["root"]
        assert "rank 1 sends 2 elements to rank 0, which expects 1" in r["splits"]
        assert "rank 0: new_group of ranks [0]; rank 1: new_group of ranks [1]" in r["new_group"]
        assert r["after"] == [2.0, 2.0]
    assert r1["recv_small"] == ("RuntimeError: recv: MPI reported an error: Message truncated "
                                "(the message is larger than the receiving tensor)")
    assert "the message from rank 0 holds 8 bytes, the receiving tensor 12" in r1["recv_big"]


# ---- multi-rank edge cases, one launch of tests/_dist_api_edges_worker.py on 2 ranks -----------------
@pytest.fixture(scope="module")
def audit_run(tmp_path_factory):
    import json
    from pathlib import Path

    from test_distributed import MPIEXEC, run_mpi  # tests/ is on sys.path (conftest.py)

    if not minidl.distributed.is_available() or MPIEXEC is None:
        pytest.skip("needs mpi4py and an mpiexec")
    out = tmp_path_factory.mktemp("audit")
    worker = Path(__file__).parent / "_dist_api_edges_worker.py"
    rc, so, se, _ = run_mpi([worker, "audit", out], timeout=90)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    return [json.loads((out / f"audit.rank{r}.json").read_text()) for r in range(2)]


def test_broadcast_reduce_and_send_need_a_source_or_destination(audit_run):
    """broadcast, reduce, send and isend without src/dst silently used world rank 0; torch
    raises ("Must specify global_rank or group_rank") because they have no default (gather,
    scatter and the object collectives default to 0 in both)."""
    for r in audit_run:
        assert r["broadcast_no_src"].startswith("ValueError: broadcast: give src")
        assert r["reduce_no_dst"].startswith("ValueError: reduce: give dst")
        assert r["send_no_dst"].startswith("ValueError: send: give dst")
        assert r["isend_no_dst"].startswith("ValueError: isend: give dst")


def test_new_group_with_local_synchronization_is_called_by_its_members_only(audit_run):
    """new_group(ranks, use_local_synchronization=True) ignored the flag: it split the world
    communicator, which every rank had to join, so a group made by its members alone (as
    torch allows) hung until the job was aborted."""
    r0, r1 = audit_run
    assert r1["local_group"] == [[1], 5.0] and "local_group" not in r0
    assert r0["world_after"] == r1["world_after"] == 2.0


def test_zero_partition_carries_rank_totals_across_param_groups(audit_run):
    """ZeroRedundancyOptimizer shared out each parameter group from zero, so with one
    parameter per group (per-layer learning rates) every parameter went to rank 0 and the
    state was not divided at all; torch's greedy partition carries the totals across groups."""
    for r in audit_run:
        assert r["zero_owners"] == [0, 1, 0, 1]


def test_init_process_group_takes_torchs_minus_one_for_world_size_and_rank(audit_run):
    """init_process_group(world_size=-1, rank=-1) (torch's defaults, which scripts pass on
    meaning "from the environment") raised 'world_size=-1 but the MPI launcher started 2
    ranks'; the worker initialises that way."""
    assert [r["world_after"] for r in audit_run] == [2.0, 2.0]


def test_a_failed_work_stays_failed(audit_run):
    """A Work whose operation failed (a receive of a shorter message) raised once, then a
    second wait() returned True and is_success() was True; now every wait raises the same
    error, is_success() is False and exception() returns it (as torch's)."""
    first, second, completed, success, exc = audit_run[1]["failed_recv"]
    assert first.startswith("ValueError: recv: the message from rank 0 holds 8 bytes")
    assert second == first and completed and not success and exc == "ValueError"


def test_complex_tensors_sum_and_average_over_ranks(audit_run):
    """all_reduce / reduce_scatter_tensor of a complex tensor raised 'cannot reduce dtype
    complex64'; torch reduces complex tensors with sum and avg (as real pairs) and refuses max,
    min, product and the bitwise ops with 'does not support ... on complex tensors'."""
    for rank, r in enumerate(audit_run):
        c = r["complex"]
        assert c["sum"] == [[3.0, 6.0], [9.0, -3.0]] and c["avg"] == [[3.0, 6.0]]
        assert c["reduce_scatter"] == ([[3.0, 3.0]] if rank == 0 else [[6.0, -6.0]])
        assert c["broadcast"] == [[5.0, 6.0]]
        assert c["max"].startswith("ValueError: all_reduce does not support 'max' on complex")


def test_distributed_nn_gather_scatter_reduce_all_to_all(audit_run):
    """torch.distributed.nn.functional's gather, scatter, reduce and all_to_all were missing
    from minidl.distributed.nn (AttributeError). Values as torch's (gather: zeros off the
    destination; reduce: the other ranks keep their input), gradients against finite
    differences taken one rank at a time, and a second derivative through gather."""
    r0, r1 = (r["nn"] for r in audit_run)
    assert r0["gather"] == [[0.0, 0.0], [0.0, 0.0]] and r1["gather"] == [[1.0, 1.0], [2.0, 2.0]]
    assert r0["scatter"] == [0.0, 0.0] and r1["scatter"] == [10.0, 10.0]
    assert r0["reduce"] == [3.0, 3.0] and r1["reduce"] == [2.0, 2.0]
    assert r0["all_to_all"] == r0["all_to_all_filled"] == [[0.0], [10.0]]
    assert r1["all_to_all"] == r1["all_to_all_filled"] == [[1.0, 1.0], [11.0, 11.0]]
    for op, err in r0["fd"].items():
        assert err < 1e-6, op
    z = [np.arange(3.0) + r for r in range(2)]
    w = np.arange(6.0).reshape(2, 3) + 1.0
    for q, r in enumerate((r0, r1)):
        np.testing.assert_allclose(r["second_order"][0], 2 * z[q] * w[q])
        np.testing.assert_allclose(r["second_order"][1], 8 * z[q] * w[q] ** 2)


def test_work_wait_honours_its_timeout(audit_run):
    """Work.wait(timeout=...) ignored the timeout: a receive whose sender had not come waited
    up to the group's timeout (30 min by default) and then aborted the whole job; torch's wait
    raises after ``timeout``. The operation stays under way: a later wait completes it."""
    err, completed, (later, value) = audit_run[0]["wait_timeout"]
    assert err.startswith("RuntimeError: Work.wait: the operation did not complete within 0.2 s")
    assert not completed and later is True and value == 4.0


def test_p2pop_needs_one_peer_when_made():
    """P2POp(isend, t) without a peer was accepted and only failed (or, before broadcast/send
    needed a destination, went to rank 0) inside batch_isend_irecv; torch refuses it when the
    P2POp is made, and a peer given both ways too."""
    import minidl.distributed as dist

    t = minidl.zeros(1)
    with pytest.raises(ValueError, match="give peer"):
        dist.P2POp(dist.isend, t)
    with pytest.raises(ValueError, match="not both"):
        dist.P2POp(dist.irecv, t, 1, group_peer=0)
    assert dist.P2POp(dist.irecv, t, group_peer=1).group_peer == 1


# ---- recv_object_list given a list of another length (tests/_recv_object_list_worker.py, 2 ranks) ----
@needs_mpi
def test_recv_object_list_of_another_length_names_both_and_stays_in_step(tmp_path):
    import json

    rc, so, se, _ = run_mpi([REPO / "tests" / "_recv_object_list_worker.py", tmp_path], n=2,
                            timeout=120)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    got = json.loads((tmp_path / "rank1.json").read_text())
    assert got[0] == ["ValueError", "recv_object_list: rank 0 sent 3 objects, but object_list "
                      "holds 2; make it as long as the sender's list", ["untouched"] * 2]
    assert got[1] == ["ok", 0, ["a", "b"]]  # the next message is read whole
    assert got[2][0] == "ValueError" and "sent 1 objects" in got[2][1]
    assert got[3] == ["ok", 0, [None, "c"]]
