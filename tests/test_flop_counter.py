"""minidl.utils.flop_counter.FlopCounterMode against torch.utils.flop_counter on the same
models, and the profiler's with_flops column."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import autograd
from minidl.profiler import profile, schedule
from minidl.utils.flop_counter import FlopCounterMode, op_flops


def _net(torch_nn, functional, attention=False):
    class Net(torch_nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch_nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.group = torch_nn.Conv2d(8, 8, 3, padding=1, groups=4)
            self.up = torch_nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.conv1d = torch_nn.Conv1d(4, 6, 3)
            self.fc = torch_nn.Linear(6, 5)
            self.head = torch_nn.Linear(5, 2)

        def forward(self, x):
            h = functional.relu(self.group(functional.relu(self.conv(x))))
            s = self.conv1d(self.up(h).flatten(2))        # (N, 6, 62)
            t = self.fc(s.transpose(1, 2))                 # (N, 62, 5): a 3-D linear
            a = t @ t.transpose(1, 2)                      # a batched product
            if attention:
                q = t.reshape(2, 1, 62, 5)
                return functional.scaled_dot_product_attention(q, q, q).sum()
            return a.sum() + self.head(t[:, 0]).sum()      # a 2-D linear: addmm
    return Net()


def _twins(attention=False):
    torch = pytest.importorskip("torch")
    minidl.manual_seed(0)
    ours = _net(nn, F, attention)
    theirs = _net(torch.nn, torch.nn.functional, attention)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.numpy()))
                            for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    return torch, ours, theirs, x


def _torch_counts(torch, fn):
    from torch.utils.flop_counter import FlopCounterMode as TorchCounter

    with TorchCounter(display=False) as counter:
        fn()
    return counter, {m: {str(op).replace("aten.", ""): v for op, v in ops.items()}
                     for m, ops in counter.get_flop_counts().items()}


def test_forward_and_backward_match_torch():
    torch, ours, theirs, x = _twins()
    tc, theirs_counts = _torch_counts(
        torch, lambda: theirs(torch.tensor(x, requires_grad=True)).backward())
    with FlopCounterMode(display=False) as mc:
        ours(minidl.tensor(x, requires_grad=True)).backward()
    assert mc.get_total_flops() == tc.get_total_flops() > 0
    assert mc.get_flop_counts()["Global"] == theirs_counts["Global"]
    for leaf in ("Net.conv", "Net.group", "Net.up", "Net.conv1d", "Net.fc", "Net.head"):
        assert mc.get_flop_counts()[leaf] == theirs_counts[leaf], leaf
    assert set(mc.get_flop_counts()["Global"]) == {"convolution", "convolution_backward", "mm",
                                                  "addmm", "bmm"}


def test_inputs_without_gradients_count_only_the_gradients_taken():
    torch, ours, theirs, x = _twins()
    for p in theirs.parameters():
        p.requires_grad_(False)
    for p in ours.parameters():
        p.requires_grad = False
    ours.conv.weight.requires_grad = theirs.conv.weight.requires_grad_(True).requires_grad
    tc, _ = _torch_counts(torch, lambda: theirs(torch.tensor(x)).backward())
    with FlopCounterMode(display=False) as mc:
        ours(minidl.tensor(x)).backward()
    assert mc.get_total_flops() == tc.get_total_flops()


def test_attention_counts_torch_formula():
    """torch 2.13's CPU build does not count its CPU attention kernel; its formula is the two
    products of the composite softmax(q k^T) v forward and four backward, which torch counts
    when the composite is written out."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 7, 4), (2, 3, 5, 4),
                                                                     (2, 3, 5, 6)))

    def composite():
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        (torch.softmax(tq @ tk.transpose(-1, -2), -1) @ tv).sum().backward()
    tc, _ = _torch_counts(torch, composite)
    with FlopCounterMode(display=False) as mc:
        mq, mk, mv = (minidl.tensor(a, requires_grad=True) for a in (q, k, v))
        F.scaled_dot_product_attention(mq, mk, mv).sum().backward()
    assert mc.get_total_flops() == tc.get_total_flops() == 3 * 2 * 6 * 7 * 5 * (4 + 6)


def test_einsum_and_matmul_variants_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((3, 5, 6)).astype(np.float32)
    m = rng.standard_normal((5, 6)).astype(np.float32)
    v = rng.standard_normal(5).astype(np.float32)

    def run(lib, tensor):
        ta, tb, tm, tv = (tensor(x) for x in (a, b, m, v))
        return (lib.einsum("bij,bjk->bik", ta, tb).sum() + (ta @ tm).sum() + (tv @ tm).sum()
                + (tm.T @ tv).sum())
    tc, _ = _torch_counts(torch, lambda: run(torch, lambda x: torch.tensor(x)))
    with FlopCounterMode(display=False) as mc:
        run(minidl, lambda x: minidl.tensor(x))
    assert mc.get_total_flops() == tc.get_total_flops()


def test_recurrent_layers_count_their_products():
    lstm = nn.LSTM(6, 8, num_layers=2)
    x = minidl.randn(5, 3, 6)
    with FlopCounterMode(display=False) as mc:
        lstm(x)[0].sum().backward()
    counts = mc.get_flop_counts()["Global"]
    steps, batch, hidden = 5, 3, 8
    # per layer: the input projection (a linear op) and the hidden products of each step
    proj = 2 * steps * batch * 4 * hidden * (6 + hidden)
    rec = 2 * 2 * steps * batch * 4 * hidden * hidden
    assert counts["mm"] + counts.get("addmm", 0) == 3 * proj - 2 * steps * batch * 4 * hidden * 6  # no grad into x
    assert counts["rnn"] == 3 * rec


def test_table_and_display(capsys):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))
    with FlopCounterMode(depth=1) as mc:
        model(minidl.randn(5, 4))
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["Module", "FLOP", "%", "Total"]
    assert "Global" in out and " Sequential" in out and "Sequential.2" not in out
    assert mc.get_flop_counts()["Sequential.2.0"] == {"addmm": 2 * 5 * 3 * 2}
    assert mc.get_total_flops() == 2 * 5 * 4 * 3 + 2 * 5 * 3 * 2
    assert "Sequential.2.0" in mc.get_table(depth=3)


def test_counter_inside_a_profiler_and_record_function_inside_a_counter():
    from minidl.profiler import profile, record_function

    lin = nn.Linear(4, 3)
    with profile() as prof:
        with FlopCounterMode(display=False) as mc:
            with record_function("mine"):
                lin(minidl.randn(2, 4)).sum().backward()
    assert mc.get_total_flops() == 2 * (2 * 2 * 4 * 3)  # forward, and the weight gradient
    names = {e.key for e in prof.key_averages()}
    assert {"mine", "Linear", "LinearBackward"} <= names  # the profiler still recorded
    with FlopCounterMode(display=False):
        with record_function("alone"):  # no profiler: a range that records nothing
            lin(minidl.randn(2, 4))
    assert minidl.autograd._profiler_hook is None


def test_profiler_with_flops_column():
    from minidl.profiler import profile

    lin = nn.Linear(4, 3)
    x = minidl.randn(200, 4, requires_grad=True)
    with profile(with_flops=True) as prof:
        lin(x).sum().backward()
    by_name = {e.key: e for e in prof.key_averages()}
    assert by_name["Linear"].flops == 2 * 200 * 4 * 3
    assert by_name["LinearBackward"].flops == 2 * 2 * 200 * 4 * 3
    assert by_name["Sum"].flops == 0
    table = prof.key_averages().table()
    assert "Total KFLOPs" in table  # the smallest count, 4.8K, sets the unit (torch's rule)
    assert "4.800" in table and "9.600" in table and "--" in table
    with profile() as plain:
        lin(x)
    assert "FLOPs" not in plain.key_averages().table()


def test_op_flops_of_uncounted_ops_is_zero():
    with FlopCounterMode(display=False) as mc:
        (minidl.randn(3, 4).relu().softmax(-1) * 2).sum()
    assert mc.get_total_flops() == 0
    assert op_flops(object(), [(2, 2)], (2, 2)) == (None, 0)


# ---- counts and names as torch's (addmm, einsum, matmul's folds, module paths), with a profiler ------
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
