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
