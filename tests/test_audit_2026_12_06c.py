"""The 2026-12-06 (c) audit against PyTorch 2.13: recurrent layers and packed sequences,
attention and transformers, optimizers and schedulers, top-level functions. Each test pins
one behaviour by running the same thing in minidl and in torch."""

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.nn.utils import rnn as mrnn

torch = pytest.importorskip("torch", reason="the audit compares against torch")
trnn = torch.nn.utils.rnn


def f64(a, requires_grad=False):
    return minidl.tensor(np.asarray(a), dtype=minidl.float64, requires_grad=requires_grad)


def t64(a, requires_grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=requires_grad)


def same(mine, theirs, what="", atol=1e-9):
    a = mine.numpy() if isinstance(mine, minidl.Tensor) else np.asarray(mine)
    b = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs torch's {b.shape}"
    np.testing.assert_allclose(a, b, atol=atol, rtol=1e-7, equal_nan=True, err_msg=what)


def load_from(tm, mm):
    mm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return mm


def both_raise(fm, ft, mine_types, match=None):
    """torch raises; minidl raises an error that is also each of ``mine_types``."""
    with pytest.raises(Exception) as te:
        ft()
    with pytest.raises(Exception) as me:
        fm()
    assert isinstance(me.value, tuple(mine_types)), (type(me.value), te.value)
    for cls in mine_types:
        assert isinstance(me.value, cls), f"{type(me.value).__name__} is not a {cls.__name__}"
    assert isinstance(me.value, type(te.value)) or type(te.value) is AssertionError, (
        f"minidl raised {type(me.value).__name__}, torch {type(te.value).__name__}")
    if match:
        assert match in str(me.value), str(me.value)


# ---- 1. recurrent layers ----------------------------------------------------------------------
RNN_CASES = [
    # kind, batch_first, bidirectional, num_layers, proj_size, batched, with state
    ("RNN", True, True, 2, 0, True, True),
    ("GRU", False, True, 2, 0, True, False),
    ("GRU", True, False, 1, 0, False, True),
    ("LSTM", True, True, 2, 2, True, True),
    ("LSTM", False, False, 2, 2, False, True),
    ("LSTM", False, True, 1, 0, True, False),
]


@pytest.mark.parametrize("kind,bf,bi,layers,proj,batched,with_state", RNN_CASES)
def test_rnn_layers_match_torch_in_eval_with_dropout(kind, bf, bi, layers, proj, batched,
                                                     with_state):
    """Dropout between layers is off in eval; outputs, final states and every gradient (input,
    h0/c0, weights) match torch's in float64."""
    kw = dict(num_layers=layers, batch_first=bf, bidirectional=bi, dropout=0.5 * (layers > 1))
    if proj:
        kw["proj_size"] = proj
    torch.manual_seed(0)
    tm = getattr(torch.nn, kind)(3, 4, **kw).double().eval()
    mm = load_from(tm, getattr(nn, kind)(3, 4, dtype=minidl.float64, **kw)).eval()
    rng = np.random.default_rng(0)
    D = 2 if bi else 1
    x = rng.standard_normal(((2, 5, 3) if bf else (5, 2, 3)) if batched else (5, 3))
    N = 2 if batched else None
    widths = [proj or 4] + ([4] if kind == "LSTM" else [])
    states = [rng.standard_normal((layers * D, N, w) if batched else (layers * D, w))
              for w in widths]
    xt, xm = t64(x, True), f64(x, True)
    st, sm = [t64(s, True) for s in states], [f64(s, True) for s in states]
    args_t, args_m = [xt], [xm]
    if with_state:
        args_t.append(tuple(st) if kind == "LSTM" else st[0])
        args_m.append(tuple(sm) if kind == "LSTM" else sm[0])
    ot, ht = tm(*args_t)
    om, hm = mm(*args_m)
    same(om, ot, "output")
    ht, hm = (ht if kind == "LSTM" else (ht,)), (hm if kind == "LSTM" else (hm,))
    for a, b in zip(hm, ht):
        same(a, b, "final state")
    ((ot ** 2).sum() + sum((h * (k + 1.5)).sum() for k, h in enumerate(ht))).backward()
    ((om ** 2).sum() + sum((h * (k + 1.5)).sum() for k, h in enumerate(hm))).backward()
    same(xm.grad, xt.grad, "d input")
    if with_state:
        for a, b in zip(sm, st):
            same(a.grad, b.grad, "d state")
    for (name, pt), (_, pm) in zip(tm.named_parameters(), mm.named_parameters()):
        same(pm.grad, pt.grad, f"d {name}")


def test_rnn_state_dict_loads_torch_tensors_and_flatten_parameters_is_a_noop():
    tm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    mm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    assert [(k, tuple(v.shape)) for k, v in tm.named_parameters()] == \
        [(k, tuple(v.shape)) for k, v in mm.named_parameters()]
    mm.load_state_dict(tm.state_dict())
    assert mm.flatten_parameters() is None
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    same(mm(minidl.tensor(x))[0], tm(torch.tensor(x))[0], "output", atol=1e-6)
    bound = 1 / np.sqrt(5)
    for p in nn.GRU(3, 5).parameters():
        assert np.abs(p.numpy()).max() <= bound and np.abs(p.numpy()).max() > 0.8 * bound


@pytest.mark.parametrize("kind,enforce_sorted,bf,bi",
                         [("LSTM", True, False, True), ("GRU", False, True, True),
                          ("RNN", False, False, False), ("LSTM", False, True, False)])
def test_packed_sequences_through_rnn_match_torch(kind, enforce_sorted, bf, bi):
    lengths = [5, 3, 3, 1] if enforce_sorted else [3, 5, 1, 3]
    kw = dict(num_layers=2, batch_first=bf, bidirectional=bi)
    torch.manual_seed(0)
    tm = getattr(torch.nn, kind)(3, 4, **kw).double()
    mm = load_from(tm, getattr(nn, kind)(3, 4, dtype=minidl.float64, **kw))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 5, 3) if bf else (5, 4, 3))
    h = rng.standard_normal((2 * (2 if bi else 1), 4, 4))
    xt, xm, ht, hm = t64(x, True), f64(x, True), t64(h, True), f64(h, True)
    pt = trnn.pack_padded_sequence(xt, lengths, batch_first=bf, enforce_sorted=enforce_sorted)
    pm = mrnn.pack_padded_sequence(xm, lengths, batch_first=bf, enforce_sorted=enforce_sorted)
    same(pm.data, pt.data, "packed data")
    same(pm.batch_sizes, pt.batch_sizes, "batch_sizes")
    if not enforce_sorted:
        same(pm.sorted_indices, pt.sorted_indices, "sorted_indices")
        same(pm.unsorted_indices, pt.unsorted_indices, "unsorted_indices")
    ot, st = tm(pt, (ht, ht * 2) if kind == "LSTM" else ht)
    om, sm = mm(pm, (hm, hm * 2) if kind == "LSTM" else hm)
    assert isinstance(om, mrnn.PackedSequence)
    padt, lt = trnn.pad_packed_sequence(ot, batch_first=bf, padding_value=-1.0, total_length=7)
    padm, lm = mrnn.pad_packed_sequence(om, batch_first=bf, padding_value=-1.0, total_length=7)
    same(padm, padt, "padded output")
    same(lm, lt, "lengths")
    assert lm.dtype == np.int64
    st = st[0] + st[1] ** 2 if kind == "LSTM" else st
    sm = sm[0] + sm[1] ** 2 if kind == "LSTM" else sm
    same(sm, st, "final state")
    ((padt ** 2).sum() + (st ** 3).sum()).backward()
    ((padm ** 2).sum() + (sm ** 3).sum()).backward()
    same(xm.grad, xt.grad, "d input")
    same(hm.grad, ht.grad, "d h0")
    for (name, a), (_, b) in zip(tm.named_parameters(), mm.named_parameters()):
        same(b.grad, a.grad, f"d {name}")


def test_pack_sequence_both_ways():
    seqs = [np.random.default_rng(3).standard_normal((n, 2)) for n in (2, 4, 1)]
    pt = trnn.pack_sequence([t64(s) for s in seqs], enforce_sorted=False)
    pm = mrnn.pack_sequence([f64(s) for s in seqs], enforce_sorted=False)
    same(pm.data, pt.data, "data")
    same(pm.batch_sizes, pt.batch_sizes, "batch_sizes")
    both_raise(lambda: mrnn.pack_sequence([f64(s) for s in seqs]),
               lambda: trnn.pack_sequence([t64(s) for s in seqs]), [ValueError, RuntimeError],
               "enforce_sorted")


def test_packing_errors_are_runtime_errors_as_in_torch():
    x = np.zeros((5, 3, 2))
    for lengths in ([3, 2, 0], [3, 2], [2, 3, 1]):
        both_raise(lambda: mrnn.pack_padded_sequence(f64(x), lengths),
                   lambda: trnn.pack_padded_sequence(t64(x), lengths),
                   [ValueError, RuntimeError])
    pm = mrnn.pack_padded_sequence(f64(x), [3, 2, 1])
    pt = trnn.pack_padded_sequence(t64(x), [3, 2, 1])
    both_raise(lambda: mrnn.pad_packed_sequence(pm, total_length=2),
               lambda: trnn.pad_packed_sequence(pt, total_length=2), [ValueError])


def test_rnn_state_shape_errors_are_runtime_errors_naming_the_expected_shape():
    tm, mm = torch.nn.GRU(3, 5, num_layers=2), nn.GRU(3, 5, num_layers=2)
    x = np.zeros((4, 6, 3), np.float32)
    h = np.zeros((2, 4, 5), np.float32)
    both_raise(lambda: mm(minidl.tensor(x), minidl.tensor(h)),
               lambda: tm(torch.tensor(x), torch.tensor(h)), [RuntimeError], "(2, 6, 5)")
    tl, ml = torch.nn.LSTM(3, 5), nn.LSTM(3, 5)
    good, bad = np.zeros((1, 6, 5), np.float32), np.zeros((1, 6, 4), np.float32)
    both_raise(lambda: ml(minidl.tensor(x), (minidl.tensor(good), minidl.tensor(bad))),
               lambda: tl(torch.tensor(x), (torch.tensor(good), torch.tensor(bad))),
               [RuntimeError], "(1, 6, 5)")
    both_raise(lambda: mm(minidl.tensor(x[..., :2])), lambda: tm(torch.tensor(x[..., :2])),
               [RuntimeError], "Expected 3, got 2")
    tc, mc = torch.nn.GRUCell(3, 5), nn.GRUCell(3, 5)
    both_raise(lambda: mc(minidl.tensor(x[0]), minidl.tensor(h[0, :2])),
               lambda: tc(torch.tensor(x[0]), torch.tensor(h[0, :2])), [RuntimeError],
               "batch size")
