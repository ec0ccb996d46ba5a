"""Audit of the APIs added on 2026-12-07 (distributed, SyncBatchNorm, flop counter, jit and
compiler) against torch 2.13 and against misuse: one test per problem found."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import autograd
from minidl.profiler import profile, schedule
from minidl.utils.flop_counter import FlopCounterMode


def _torch_global(torch, fn):
    from torch.utils.flop_counter import FlopCounterMode as TorchCounter

    with TorchCounter(display=False) as counter:
        fn()
    return {str(op).replace("aten.", ""): v
            for op, v in counter.get_flop_counts().get("Global", {}).items()}


def test_flop_counter_names_a_linear_with_bias_addmm_for_contiguous_inputs_of_any_rank():
    """A linear op with a bias on a contiguous 1-D or 3-D input was counted as mm; torch folds
    it into one addmm (mm only for a non-contiguous input), so the per-op counts differed
    (nn.MultiheadAttention's too)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for shape, transpose in (((5,), False), ((2, 4, 5), False), ((2, 5, 4), True)):
        x = rng.standard_normal(shape).astype(np.float32)
        minidl.manual_seed(0)
        ours = nn.Linear(5, 3)
        theirs = torch.nn.Linear(5, 3)
        theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in
                                ours.state_dict().items()})

        def prep(t):
            return t.transpose(1, 2) if transpose else t
        want = _torch_global(torch, lambda: theirs(prep(torch.tensor(x, requires_grad=True)))
                             .sum().backward())
        with FlopCounterMode(display=False) as mc:
            ours(prep(minidl.tensor(x, requires_grad=True))).sum().backward()
        assert mc.get_flop_counts()["Global"] == want, shape


def test_flop_counter_counts_einsum_as_torch_bmm_for_any_number_of_operands():
    """einsum was counted under the name 'einsum' (torch's counter shows bmm), an einsum of
    three operands counted 0 FLOPs and an outer product (a plain multiply in torch) was
    counted as a product."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for eq, shapes in (("ij,jk->ik", [(3, 4), (4, 5)]),
                       ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]),
                       ("i,j->ij", [(3,), (5,)]),
                       ("bij,bjk,k->bi", [(2, 3, 4), (2, 4, 5), (5,)])):
        arrs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        want = _torch_global(torch, lambda: torch.einsum(
            eq, *[torch.tensor(a, requires_grad=True) for a in arrs]).sum().backward())
        with FlopCounterMode(display=False) as mc:
            minidl.einsum(eq, *[minidl.tensor(a, requires_grad=True) for a in arrs]).sum() \
                .backward()
        assert mc.get_flop_counts().get("Global", {}) == want, eq


def test_counter_inside_a_scheduled_profile_and_profile_inside_a_counter():
    """A FlopCounterMode inside a profile() whose schedule starts a new recording at step()
    raised 'another profiler is already recording'; a profile() inside a counter raised the
    same; and a counter left after the profile it was entered in stopped put the stopped
    recorder back as the global hook, so every later profile() raised."""
    m = nn.Linear(4, 3)
    x = minidl.randn(2, 4)
    with profile(schedule=schedule(wait=1, warmup=1, active=1, repeat=2), with_flops=True) as p:
        with FlopCounterMode(display=False) as c:
            for _ in range(6):
                m(x)
                p.step()
    assert c.get_total_flops() == 6 * 48
    assert autograd._profiler_hook is None

    with FlopCounterMode(display=False) as c:
        with profile(with_flops=True) as p:
            m(x)
        m(x)
    assert c.get_total_flops() == 96
    assert [(e.name, e.flops) for e in p.events()] == [("Linear", 48)]
    assert autograd._profiler_hook is None

    p = profile()
    p.__enter__()
    c = FlopCounterMode(display=False)
    c.__enter__()
    m(x)
    p.__exit__(None, None, None)
    c.__exit__(None, None, None)
    assert autograd._profiler_hook is None
    with profile() as p:  # raised before: the stopped recorder was still installed
        m(x)
    assert [e.name for e in p.events()] == ["Linear"]


# ---- futures and jit ---------------------------------------------------------------------------
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


def test_jit_final_annotation_and_script_if_tracing_and_isinstance():
    """``x: torch.jit.Final[int]`` in a class body raised TypeError ('type' object is not
    subscriptable: Final was ``object``); torch.jit.script_if_tracing and torch.jit.isinstance
    were missing."""
    from typing import Dict, List, Optional, Tuple

    from minidl import jit

    class M(nn.Module):
        scale: jit.Final[int] = 3

    assert M.scale == 3

    @jit.script_if_tracing
    def double(x):
        return x * 2
    assert double(2) == 4
    assert jit.isinstance([1, 2], List[int]) and not jit.isinstance([1, "a"], List[int])
    assert jit.isinstance({"a": 1}, Dict[str, int]) and not jit.isinstance({"a": 1.0},
                                                                            Dict[str, int])
    assert jit.isinstance(None, Optional[int]) and jit.isinstance(3, Optional[int])
    assert jit.isinstance((1, "a"), Tuple[int, str]) and not jit.isinstance((1, 2),
                                                                            Tuple[int, str])
    assert jit.isinstance(minidl.ones(1), minidl.Tensor) and not jit.isinstance(1, str)


# ---- multi-rank (mpiexec -n 2) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def audit_run(tmp_path_factory):
    import json
    from pathlib import Path

    from test_distributed import MPIEXEC, run_mpi  # tests/ is on sys.path (conftest.py)

    if not minidl.distributed.is_available() or MPIEXEC is None:
        pytest.skip("needs mpi4py and an mpiexec")
    out = tmp_path_factory.mktemp("audit")
    worker = Path(__file__).parent / "_dist_audit_worker.py"
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


def _tracked_net(torch_nn):
    class Block(torch_nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.fc2 = torch_nn.Linear(4, 4), torch_nn.Linear(4, 4)

        def forward(self, x):
            return self.fc2(self.fc(x))

    class Net(torch_nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.seq = torch_nn.Sequential(torch_nn.Linear(4, 4), Block())

        def forward(self, x):
            x = self.block(x)
            x = self.seq[1].fc(x)  # a grandchild called from the root
            x = self.block.fc(x)   # a module called a second time, from elsewhere
            return self.seq(x)
    return Net()


def test_flop_counter_names_modules_by_their_path_wherever_they_are_called_from():
    """A module called from a module other than its parent (self.seq[1].fc(x) in the root's
    forward) was counted as '<caller>.Linear', lumping different modules together; torch
    names every module by its path from the outermost one (Net.seq.1.fc)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode as TorchCounter

    x = np.ones((2, 4), np.float32)
    with TorchCounter(display=False) as tc:
        _tracked_net(torch.nn)(torch.tensor(x))
    with FlopCounterMode(display=False) as mc:
        _tracked_net(nn)(minidl.tensor(x))
    want = {m: sum(ops.values()) for m, ops in tc.get_flop_counts().items()}
    assert {m: sum(ops.values()) for m, ops in mc.get_flop_counts().items()} == want
    assert want["Net.seq.1.fc"] == 128


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


def test_compile_checks_mode_backend_and_options_as_torch():
    """minidl.compile / compiler.compile accepted any mode and backend name (a typo such as
    mode='max-autotun' passed silently) and mode with options together; torch raises on each
    at once."""
    from minidl import compiler

    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="Unrecognized mode=max-autotun"):
        minidl.compile(model, mode="max-autotun")
    with pytest.raises(RuntimeError, match="Either mode or options"):
        compiler.compile(model, mode="max-autotune", options={"triton.cudagraphs": True})
    with pytest.raises(RuntimeError, match="invalid backend 'inductr'"):
        minidl.compile(model, backend="inductr")
    # as torch's: accepted, and the model comes back wrapped (an OptimizedModule running it)
    assert minidl.compile(model, backend="eager", mode="anything")._orig_mod is model
    assert minidl.compile(model, mode="reduce-overhead")._orig_mod is model
    assert minidl.compile(model, backend=lambda gm, inputs: gm)._orig_mod is model


def test_compiler_set_stance_and_the_other_missing_names():
    """torch.compiler.set_stance (function, context manager, decorator), is_exporting,
    list_backends, substitute_in_graph, nested_compile_region and wrap_numpy were missing
    (AttributeError in scripts written for torch 2.13)."""
    from minidl import compiler

    compiler.set_stance("force_eager")
    assert compiler._stance == "force_eager"
    compiler.set_stance("default")
    with compiler.set_stance("eager_on_recompile"):
        assert compiler._stance == "eager_on_recompile"
    assert compiler._stance == "default"

    @compiler.set_stance("force_eager")
    def inside():
        return compiler._stance
    assert compiler._stance == "default" and inside() == "force_eager"
    assert compiler._stance == "default"
    with pytest.raises(ValueError, match="unknown stance 'eager'"):
        compiler.set_stance("eager")
    assert not compiler.is_exporting() and "inductor" in compiler.list_backends()
    assert compiler.nested_compile_region(abs) is abs
    assert compiler.substitute_in_graph(abs)(len) is len

    @compiler.wrap_numpy
    def add(a, b):
        return a + b, np.float64(1.0)
    out, one = add(minidl.ones(2), minidl.tensor(np.arange(2.0), dtype=minidl.float64))
    assert isinstance(out, minidl.Tensor) and out.dtype == minidl.float64
    assert out.numpy().tolist() == [1.0, 2.0] and one == 1.0


def _both_counts(torch, fn_torch, fn_ours):
    want = _torch_global(torch, fn_torch)
    with FlopCounterMode(display=False) as mc:
        fn_ours()
    return want, mc.get_flop_counts().get("Global", {})


def test_flop_counter_addmm_baddbmm_addbmm_and_bilinear_as_torch():
    """addmm and baddbmm were counted as mm/bmm (torch: addmm/baddbmm), addbmm's forward was
    counted although torch has no formula for it, and nn.Bilinear counted its product
    (torch's _trilinear is uncounted): totals and names differed from torch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    m, b = rng.standard_normal((3, 3)).astype(np.float32), \
        rng.standard_normal((2, 3, 3)).astype(np.float32)
    for name, call in (("addmm", lambda lib, x: lib.addmm(x, x, x)),
                       ("baddbmm", lambda lib, x: lib.baddbmm(x, x, x)),
                       ("addbmm", lambda lib, x: lib.addbmm(x[0], x, x))):
        arr = m if name == "addmm" else b
        want, got = _both_counts(
            torch, lambda: call(torch, torch.tensor(arr, requires_grad=True)).sum().backward(),
            lambda: call(minidl, minidl.tensor(arr, requires_grad=True)).sum().backward())
        assert got == want, name
    minidl.manual_seed(0)
    ours, theirs = nn.Bilinear(3, 3, 2), torch.nn.Bilinear(3, 3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    want, got = _both_counts(
        torch, lambda: theirs(*[torch.tensor(x, requires_grad=True)] * 2).sum().backward(),
        lambda: ours(*[minidl.tensor(x, requires_grad=True)] * 2).sum().backward())
    assert got == want == {}


@pytest.mark.parametrize("sa,sb,transpose", [((2, 3, 4), (1, 4, 5), False),
                                             ((1, 3, 4), (2, 4, 5), False),
                                             ((3, 4), (2, 4, 5), False),
                                             ((4,), (2, 4, 3), False),
                                             ((2, 4, 3), (4,), True),
                                             ((2, 4, 3), (4, 5), True)])
def test_flop_counter_matmul_folds_as_torch(sa, sb, transpose):
    """matmul with a batched operand was named bmm or mm by the operands' ranks alone, and a
    vector times a batch of matrices was counted even where torch folds it into an
    (uncounted) matrix-vector product: torch decides by which operand needs a gradient and
    whether the larger one folds without a copy."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    for ga, gb in ((False, False), (True, False), (False, True), (True, True)):
        def run(lib, tensor):
            x, y = tensor(a), tensor(b)
            if transpose:
                x = x.transpose(-1, -2)
            x.requires_grad_(ga)
            y.requires_grad_(gb)
            out = x @ y
            if ga or gb:
                out.sum().backward()
        want, got = _both_counts(torch, lambda: run(torch, torch.tensor),
                                 lambda: run(minidl, minidl.tensor))
        assert got == want, (ga, gb)


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


@pytest.mark.parametrize("batch_first", [False, True])
def test_flop_counter_transformer_encoder_layer_as_torch(batch_first):
    """nn.TransformerEncoderLayer(batch_first=True) counted its packed q/k/v projection as
    addmm where torch projects the transposed (non-contiguous) query with mm; the products
    now match torch's by name and total (torch 2.13's CPU attention kernel is uncounted, so
    the attention term is left out of the comparison, as the module docstring says)."""
    torch = pytest.importorskip("torch")
    minidl.manual_seed(0)
    ours = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in
                            ours.state_dict().items()})
    x = np.random.default_rng(5).standard_normal((2, 3, 8)).astype(np.float32)
    want, got = _both_counts(
        torch, lambda: theirs(torch.tensor(x, requires_grad=True)).sum().backward(),
        lambda: ours(minidl.tensor(x, requires_grad=True)).sum().backward())
    got = dict(got)
    assert got.pop("scaled_dot_product_attention") > 0
    assert got == want
