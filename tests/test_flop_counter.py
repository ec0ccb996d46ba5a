"""minidl.utils.flop_counter.FlopCounterMode against torch.utils.flop_counter on the same
models, and the profiler's with_flops column."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
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
