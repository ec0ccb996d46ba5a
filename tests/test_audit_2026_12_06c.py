"""The 2026-12-06 (c) audit against PyTorch 2.13: recurrent layers and packed sequences,
attention and transformers, optimizers and schedulers, top-level functions. Each test pins
one behaviour by running the same thing in minidl and in torch."""

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
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


# ---- 2. attention and transformers ------------------------------------------------------------
def _mha_pair(E=8, H=2, **kw):
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(E, H, **kw).double()
    return tm, load_from(tm, nn.MultiheadAttention(E, H, dtype=minidl.float64, **kw))


def _bool_mask(shape, seed, full_row=False):
    b = np.random.default_rng(seed).random(shape) < 0.3
    if full_row:
        b[..., 0, :] = True
    return b


MHA_CASES = [  # extra constructor kwargs, attn_mask kind, key_padding_mask kind, need_weights,
    # average_attn_weights, batched
    (dict(batch_first=True), "bool2", "bool", True, False, True),
    (dict(kdim=5, vdim=6), "float3", None, False, True, True),
    (dict(add_bias_kv=True, add_zero_attn=True), "bool3", "float", True, True, True),
    (dict(add_zero_attn=True, dropout=0.3), "float2", "bool", False, True, False),
    (dict(batch_first=True, add_bias_kv=True), None, "bool", True, False, True),
]


@pytest.mark.parametrize("kw,am,kpm,need_weights,average,batched", MHA_CASES)
@pytest.mark.parametrize("full_row", [False, True])
def test_multihead_attention_matches_torch(kw, am, kpm, need_weights, average, batched,
                                           full_row):
    """Outputs, weights (NaN for an all-masked query where torch's are) and gradients; dropout
    is off in eval."""
    tm, mm = _mha_pair(**kw)
    tm.eval()
    mm.eval()
    L, S, N, H = 3, 4, 2, 2
    rng = np.random.default_rng(1)
    kd, vd = kw.get("kdim", 8), kw.get("vdim", 8)
    lead = ((N,) if kw.get("batch_first") else ()) if batched else ()
    mid = (() if kw.get("batch_first") else (N,)) if batched else ()
    q = rng.standard_normal((*lead, L, *mid, 8))
    k = rng.standard_normal((*lead, S, *mid, kd))
    v = rng.standard_normal((*lead, S, *mid, vd))
    ta, ma = {}, {}
    if am:
        shape = (L, S) if am.endswith("2") else (N * H, L, S)
        b = _bool_mask(shape, 2, full_row)
        m = b if am.startswith("bool") else np.where(b, -np.inf, rng.standard_normal(shape))
        ta["attn_mask"] = torch.tensor(m)
        ma["attn_mask"] = minidl.tensor(m, dtype=m.dtype)
    if kpm:
        b = _bool_mask((N, S) if batched else (S,), 3)
        m = b if kpm == "bool" else np.where(b, -np.inf, 0.0)
        ta["key_padding_mask"] = torch.tensor(m)
        ma["key_padding_mask"] = minidl.tensor(m, dtype=m.dtype)
    tq, tk, tv = (t64(a, True) for a in (q, k, v))
    mq, mk, mv = (f64(a, True) for a in (q, k, v))
    ot, wt = tm(tq, tk, tv, need_weights=need_weights, average_attn_weights=average, **ta)
    om, wm = mm(mq, mk, mv, need_weights=need_weights, average_attn_weights=average, **ma)
    same(om, ot, "output")
    assert (wm is None) == (wt is None)
    if wt is not None:
        same(wm, wt, "weights")
    if np.isnan(ot.detach().numpy()).any():
        return
    (ot ** 2).sum().backward()
    (om ** 2).sum().backward()
    for a, b, what in ((mq, tq, "query"), (mk, tk, "key"), (mv, tv, "value")):
        same(a.grad, b.grad, f"d {what}")
    for (name, pt), (_, pm) in zip(tm.named_parameters(), mm.named_parameters()):
        same(pm.grad, pt.grad, f"d {name}")


def test_is_causal_hint_replaces_attn_mask_where_torch_does():
    """With need_weights=False and no key_padding_mask, torch's general path applies the causal
    mask that is_causal promises instead of attn_mask; otherwise attn_mask is used."""
    tm, mm = _mha_pair()
    x = np.random.default_rng(4).standard_normal((5, 2, 8))
    not_causal = _bool_mask((5, 5), 5)
    np.fill_diagonal(not_causal, False)
    for need_weights, with_kpm in ((False, False), (True, False), (False, True)):
        extra_t, extra_m = {}, {}
        if with_kpm:
            kpm = np.zeros((2, 5), bool)
            kpm[0, -1] = True
            extra_t["key_padding_mask"], extra_m["key_padding_mask"] = (torch.tensor(kpm),
                                                                        minidl.tensor(kpm))
        xt, xm = t64(x, True), f64(x, True)
        ot = tm(xt, xt, xt, attn_mask=torch.tensor(not_causal), is_causal=True,
                need_weights=need_weights, **extra_t)[0]
        om = mm(xm, xm, xm, attn_mask=minidl.tensor(not_causal), is_causal=True,
                need_weights=need_weights, **extra_m)[0]
        same(om, ot, f"need_weights={need_weights} kpm={with_kpm}")
        ot.sum().backward()
        om.sum().backward()
        same(xm.grad, xt.grad, "d x")
    tl = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0).double()
    ml = load_from(tl, nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=minidl.float64))
    same(ml(f64(x), src_mask=minidl.tensor(not_causal), is_causal=True),
         tl(t64(x), src_mask=torch.tensor(not_causal), is_causal=True), "encoder layer")


def test_inference_fast_path_gives_nan_for_all_masked_queries_as_torch():
    """torch's batch-first self-attention fast path (eval, nothing requiring grad) gives NaN
    for a query whose keys are all masked; its general path gives finite numbers."""
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    mm = load_from(tm, nn.MultiheadAttention(8, 2, batch_first=True)).eval()
    x = np.random.default_rng(6).standard_normal((3, 4, 8)).astype(np.float32)
    kpm = np.zeros((3, 4), bool)
    kpm[1] = True  # every key of sequence 1 is padding
    xt, xm = torch.tensor(x), minidl.tensor(x)
    with torch.no_grad():
        ot = tm(xt, xt, xt, key_padding_mask=torch.tensor(kpm), need_weights=False)[0]
    with minidl.no_grad():
        om = mm(xm, xm, xm, key_padding_mask=minidl.tensor(kpm), need_weights=False)[0]
    assert np.isnan(ot.numpy()[1]).all() and not np.isnan(ot.numpy()[[0, 2]]).any()
    same(om, ot, "fast path", atol=1e-5)
    # grad enabled: the general path, where torch's scaled_dot_product_attention gives zeros
    ot = tm(xt, xt, xt, key_padding_mask=torch.tensor(kpm), need_weights=False)[0]
    om = mm(xm, xm, xm, key_padding_mask=minidl.tensor(kpm), need_weights=False)[0]
    assert not np.isnan(ot.detach().numpy()).any()
    same(om, ot, "general path", atol=1e-5)


@pytest.mark.parametrize("activation,mask_kind", [("relu", "float"), ("gelu", "bool"),
                                                  ("silu", "bool"), ("relu", "bool")])
def test_encoder_layer_fast_path_and_its_masks_as_torch(activation, mask_kind):
    """The fused encoder-layer path (relu/gelu, eval, no grad) gives NaN for an all-masked
    query, float masks included; any other layer turns bool masks into float ones first, so its
    attention never takes the fast path and gives finite numbers."""
    acts_t = {"relu": "relu", "gelu": torch.nn.GELU(), "silu": torch.nn.functional.silu}
    acts_m = {"relu": "relu", "gelu": nn.GELU(), "silu": F.silu}
    torch.manual_seed(0)
    tl = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True,
                                          activation=acts_t[activation]).eval()
    ml = load_from(tl, nn.TransformerEncoderLayer(8, 2, 16, batch_first=True,
                                                  activation=acts_m[activation])).eval()
    x = np.random.default_rng(7).standard_normal((2, 4, 8)).astype(np.float32)
    b = np.triu(np.ones((4, 4), bool), 1)
    b[2] = True
    m = b if mask_kind == "bool" else np.where(b, -np.inf, 0.0).astype(np.float32)
    with torch.no_grad():
        ot = tl(torch.tensor(x), src_mask=torch.tensor(m))
    with minidl.no_grad():
        om = ml(minidl.tensor(x), src_mask=minidl.tensor(m))
    assert np.isnan(ot.numpy()).any() == (activation != "silu")
    same(om, ot, "encoder layer", atol=1e-5)


def test_transformer_encoder_nested_path_zeros_padding_and_warns_as_torch():
    torch.manual_seed(0)
    tl = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    tm = torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(8)).eval()
    mm = load_from(tm, nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, norm=nn.LayerNorm(8))).eval()
    assert mm.use_nested_tensor is tm.use_nested_tensor is True
    x = np.random.default_rng(8).standard_normal((3, 5, 8)).astype(np.float32)
    kpm = np.zeros((3, 5), bool)
    kpm[0, 3:] = kpm[1, 1:] = True  # right padding: torch runs nested tensors
    with torch.no_grad():
        ot = tm(torch.tensor(x), src_key_padding_mask=torch.tensor(kpm))
    with minidl.no_grad():
        om = mm(minidl.tensor(x), src_key_padding_mask=minidl.tensor(kpm))
    same(om, ot, "nested path", atol=1e-5)
    ot = tm(torch.tensor(x), src_key_padding_mask=torch.tensor(kpm))  # grad on: padded kept
    om = mm(minidl.tensor(x), src_key_padding_mask=minidl.tensor(kpm))
    same(om, ot, "general path", atol=1e-5)
    with pytest.warns(UserWarning, match="use_nested_tensor is False because encoder_layer."
                                         "self_attn.batch_first was not True"):
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1)
    with pytest.warns(UserWarning):
        torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16), 1)
    assert enc.use_nested_tensor is False
    for kw in (dict(norm_first=True), dict(nhead=3, d_model=9), dict(bias=False),
               dict(activation=lambda x: x)):
        args = dict(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
        args.update(kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(**args), 1)
            nn.TransformerEncoder(nn.TransformerEncoderLayer(**args), 1)
        theirs, mine = (str(w.message) for w in caught)
        assert mine == theirs


def test_attn_mask_of_the_wrong_shape_is_a_runtime_error_as_in_torch():
    tm, mm = _mha_pair()
    x = np.zeros((3, 2, 8))
    both_raise(lambda: mm(f64(x), f64(x), f64(x), attn_mask=minidl.zeros(3, 4)),
               lambda: tm(t64(x), t64(x), t64(x), attn_mask=torch.zeros(3, 4)),
               [RuntimeError, ValueError], "(3, 3)")
    both_raise(lambda: mm(f64(x), f64(x), f64(x), attn_mask=minidl.zeros(2, 3, 3)),
               lambda: tm(t64(x), t64(x), t64(x), attn_mask=torch.zeros(2, 3, 3)),
               [RuntimeError, ValueError], "(4, 3, 3)")


# ---- 3. optimizers and schedules --------------------------------------------------------------
OPTIM_CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.7, dampening=0.5, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, maximize=True)),
    ("Adadelta", dict(lr=0.5, weight_decay=0.1, maximize=True)),
    ("Adamax", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("ASGD", dict(lr=0.05, lambd=0.01, alpha=0.5, t0=3, weight_decay=0.1, maximize=True)),
    ("Rprop", dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-4, 1), maximize=True)),
]


@pytest.mark.parametrize("name,kw", OPTIM_CASES, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(OPTIM_CASES)])
def test_twenty_steps_with_two_groups_and_a_state_dict_swap_match_torch(name, kw):
    """Two parameter groups with different lrs, a parameter now and then without a gradient,
    and at step 10 torch's state_dict loaded into a fresh minidl optimizer: the parameters
    follow torch's for 20 steps (float64)."""
    import minidl.optim as mo
    shapes = [(4, 3), (3,), (2, 2)]
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in shapes]
    mp = [nn.Parameter(p.copy()) for p in params]
    tp = [torch.nn.Parameter(torch.tensor(p.copy())) for p in params]

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": kw["lr"] * 0.3}]
    mopt, topt = getattr(mo, name)(groups(mp), **kw), getattr(torch.optim, name)(groups(tp), **kw)
    assert set(mopt.param_groups[1]) == set(topt.param_groups[1])
    for k in range(20):
        mopt.zero_grad()
        topt.zero_grad()
        for i, (a, b, s) in enumerate(zip(mp, tp, shapes)):
            if k % 4 == 2 and i == 2:
                continue
            g = rng.standard_normal(s)
            a.grad, b.grad = minidl.Tensor(g.copy()), torch.tensor(g)
        mopt.step()
        topt.step()
        for a, b in zip(mp, tp):
            same(a, b, f"{name} step {k}", atol=1e-12)
        if k == 9:
            mopt = getattr(mo, name)(groups(mp), **kw)
            mopt.load_state_dict(topt.state_dict())


def test_optimizers_take_torchs_kernel_options_and_record_them_in_groups():
    import minidl.optim as mo
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
                 "RAdam", "ASGD", "Rprop"):
        tg = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], lr=0.1,
                                        foreach=False).param_groups[0]
        mopt = getattr(mo, name)([nn.Parameter(np.zeros(2, np.float32))], lr=0.1, foreach=False)
        mg = mopt.param_groups[0]
        assert set(tg) == set(mg), (name, set(tg) ^ set(mg))
        for key in ("foreach", "fused", "capturable", "differentiable"):
            assert mg.get(key, "absent") == tg.get(key, "absent"), (name, key)
            if key in tg and key != "foreach":
                with pytest.raises(ValueError, match=f"{key}=True"):
                    getattr(mo, name)([nn.Parameter(np.zeros(2, np.float32))], lr=0.1,
                                      **{key: True})
        # torch's state dict, kernel options and all, loads
        topt = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], lr=0.2)
        mopt.load_state_dict(topt.state_dict())
        assert mopt.param_groups[0]["lr"] == 0.2
    with pytest.raises(TypeError, match="foreach"):
        mo.SGD([nn.Parameter(np.zeros(2, np.float32))], lr=0.1, foreach="yes")


def test_zero_grad_sets_gradients_to_none_by_default():
    import minidl.optim as mo
    p = nn.Parameter(np.ones(2, np.float32))
    opt = mo.Adam([p])
    p.grad = minidl.ones(2)
    opt.zero_grad()
    assert p.grad is None


def _scheduled(fw):
    if fw is torch:
        ps = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
        return torch.optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}], lr=0.1,
                               momentum=0.9)
    import minidl.optim as mo
    ps = [nn.Parameter(np.zeros(2, np.float32)), nn.Parameter(np.zeros(3, np.float32))]
    return mo.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}], lr=0.1, momentum=0.9)


def _schedules(fw, opt, which):
    S = torch.optim.lr_scheduler if fw is torch else minidl.optim.lr_scheduler
    return {
        "step+exponential": lambda: [S.StepLR(opt, 3, 0.5), S.ExponentialLR(opt, 0.9)],
        "lambda": lambda: [S.LambdaLR(opt, [lambda e: 0.9 ** e, lambda e: 1 / (e + 1)])],
        "multiplicative": lambda: [S.MultiplicativeLR(opt, lambda e: 0.95)],
        "sequential": lambda: [S.SequentialLR(opt, [S.LinearLR(opt, 0.1, total_iters=3),
                                                    S.ExponentialLR(opt, 0.8)], [3])],
        "chained": lambda: [S.ChainedScheduler([S.StepLR(opt, 2, 0.5),
                                                S.ExponentialLR(opt, 0.9)])],
    }[which]()


@pytest.mark.parametrize("which", ["step+exponential", "lambda", "multiplicative",
                                   "sequential", "chained"])
@pytest.mark.parametrize("optimizer_first", [True, False])
def test_schedules_lrs_state_dicts_and_warnings_match_torch(which, optimizer_first):
    """get_last_lr and the groups' lrs over 12 epochs, two schedules on one optimizer, the
    state dicts' keys, and the warnings in torch's order: 'lr_scheduler.step() before
    optimizer.step()' once per schedule stepped first."""
    runs = {}
    for fw in (torch, minidl):
        opt = _scheduled(fw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scheds = _schedules(fw, opt, which)
            lrs = []
            for _ in range(12):
                if optimizer_first:
                    opt.step()
                for s in scheds:
                    s.step()
                if not optimizer_first:
                    opt.step()
                lrs.append([s.get_last_lr() for s in scheds] + [[g["lr"] for g in
                                                                 opt.param_groups]])
        runs[fw] = (lrs, [str(w.message)[:60] for w in caught], scheds)
    (lt, wt, st), (lm, wm, sm) = runs[torch], runs[minidl]
    np.testing.assert_allclose(np.array(lm, dtype=float), np.array(lt, dtype=float),
                               rtol=1e-12)
    assert wm == wt
    for a, b in zip(sm, st):
        assert set(a.state_dict()) == set(b.state_dict())


def test_get_lr_outside_step_warns_as_torch():
    for fw in (torch, minidl):
        S = torch.optim.lr_scheduler if fw is torch else minidl.optim.lr_scheduler
        sched = S.StepLR(_scheduled(fw), 2)
        with pytest.warns(UserWarning, match="get_last_lr"):
            sched.get_lr()
    sched = minidl.optim.lr_scheduler.StepLR(_scheduled(minidl), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.optimizer.step()
        sched.step()  # no warning from inside step


def test_epoch_argument_warns_after_the_step_order_warning_as_torch():
    messages = {}
    for fw in (torch, minidl):
        S = torch.optim.lr_scheduler if fw is torch else minidl.optim.lr_scheduler
        sched = S.StepLR(_scheduled(fw), 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sched.step(3)
        messages[fw] = [str(w.message)[:40] for w in caught]
    assert messages[minidl] == messages[torch]
    assert len(messages[torch]) == 2


# ---- 4. top level -----------------------------------------------------------------------------
def test_manual_seed_returns_a_generator_handle_as_torch():
    g = minidl.manual_seed(123)
    assert g is minidl.default_generator
    assert type(torch.manual_seed(123)).__name__ == "Generator"
    assert g.initial_seed() == minidl.initial_seed() == torch.initial_seed() == 123
    assert minidl.manual_seed(-1).initial_seed() == torch.manual_seed(-1).initial_seed()
    state = g.get_state()
    a = minidl.randn(4).numpy()
    g.set_state(state)
    np.testing.assert_array_equal(minidl.randn(4).numpy(), a)
    assert g.manual_seed(5) is g and minidl.initial_seed() == 5
    assert isinstance(g.seed(), int)


def test_no_grad_and_enable_grad_decorate_with_and_without_the_call():
    x = minidl.ones(2, requires_grad=True)
    tx = torch.ones(2, requires_grad=True)
    for mine, theirs in ((minidl.no_grad, torch.no_grad), (minidl.no_grad(), torch.no_grad())):
        assert mine(lambda v: v * 2)(x).requires_grad is \
            theirs(lambda v: v * 2)(tx).requires_grad is False
    with minidl.no_grad():
        assert minidl.enable_grad(lambda v: v * 2)(x).requires_grad
        assert not minidl.is_grad_enabled()
    assert minidl.inference_mode(lambda v: v * 2)(x).requires_grad is \
        torch.inference_mode(lambda v: v * 2)(tx).requires_grad is False
    mode = minidl.no_grad()
    with mode:
        with mode:
            pass
        assert not minidl.is_grad_enabled()
    assert minidl.is_grad_enabled()


def test_creation_results_match_torch():
    cases = [
        (lambda m: m.arange(0, 1, 0.25)), (lambda m: m.arange(5)), (lambda m: m.arange(1, 2.5)),
        (lambda m: m.arange(10, 0, -3)), (lambda m: m.arange(0, 1, 0.1)),
        (lambda m: m.full((2,), 3)), (lambda m: m.full((2,), True)),
        (lambda m: m.full((2,), 3.0)), (lambda m: m.linspace(0, 10, 5)),
        (lambda m: m.linspace(0, 10, 4, dtype=m.int64)), (lambda m: m.linspace(2, 10, 1)),
        (lambda m: m.logspace(0, 2, 3)), (lambda m: m.logspace(0, 3, 4, base=2)),
        (lambda m: m.logspace(-1, 1, 5, dtype=m.float64)),
        (lambda m: m.logspace(0, 2, 3, dtype=m.int64)), (lambda m: m.logspace(0, 2, 0)),
        (lambda m: m.zeros(2, dtype=m.bool)), (lambda m: m.tensor([])),
        (lambda m: m.tensor([[]])), (lambda m: m.tensor([True, 1])),
    ]
    for k, make in enumerate(cases):
        mine, theirs = make(minidl), make(torch)
        assert str(mine.dtype) == str(theirs.dtype).replace("torch.", ""), k
        same(mine, theirs, f"case {k}", atol=1e-6)
    assert minidl.numel(minidl.zeros(2, 3)) == 6 and minidl.is_tensor(minidl.zeros(1))
    assert not minidl.is_tensor(np.zeros(1))


def test_creation_errors_as_torch():
    both_raise(lambda: minidl.arange(0, 5, 0), lambda: torch.arange(0, 5, 0),
               [RuntimeError, ValueError], "nonzero")
    both_raise(lambda: minidl.arange(5, 0), lambda: torch.arange(5, 0),
               [RuntimeError, ValueError], "inconsistent with step sign")
    both_raise(lambda: minidl.from_numpy([1, 2]), lambda: torch.from_numpy([1, 2]),
               [TypeError], "np.ndarray")
    both_raise(lambda: minidl.tensor("a"), lambda: torch.tensor("a"), [TypeError], "str")
    with pytest.raises(TypeError, match="floating-point"):  # torch: NotImplementedError
        minidl.randn(2, dtype=minidl.int64)
    with pytest.raises(NotImplementedError):
        torch.randn(2, dtype=torch.int64)


def test_item_of_several_elements_is_a_runtime_error_and_numpy_takes_force():
    for shape in ((2,), (0,)):
        both_raise(lambda: minidl.ones(*shape).item(), lambda: torch.ones(*shape).item(),
                   [RuntimeError, ValueError], "cannot be converted to Scalar")
    x = minidl.ones(2, requires_grad=True)
    np.testing.assert_array_equal(x.numpy(force=True), torch.ones(2, requires_grad=True)
                                  .numpy(force=True))


def test_from_numpy_and_as_tensor_share_memory_and_keep_the_dtype():
    a = np.zeros(3)
    m, t = minidl.from_numpy(a), torch.from_numpy(a)
    a[0] = 5.0
    same(m, t, "shared")
    m.data[1] = 7.0
    assert a[1] == 7.0 and m.dtype == np.float64
    b = np.arange(3, dtype=np.int32)
    am, at = minidl.as_tensor(b), torch.as_tensor(b)
    assert str(am.dtype) == str(at.dtype).replace("torch.", "")
    b[0] = 9
    same(am, at, "as_tensor shares")
    assert minidl.as_tensor(am) is am
    assert minidl.as_tensor([1.0, 2.0]).dtype == np.float32
    assert minidl.as_tensor(b, dtype=minidl.float64).dtype == np.float64


# ---- a fake GPU -------------------------------------------------------------------------------
def test_inference_paths_on_a_fake_gpu_match_the_cpu(monkeypatch, tmp_path):
    """The encoder's nested-tensor zeros and the fast path's NaN come out the same on the
    (numpy-backed) GPU stand-in as on the CPU; logspace and as_tensor place their results."""
    import _fake_gpu
    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    minidl.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2).eval()
    x = np.random.default_rng(9).standard_normal((3, 5, 8)).astype(np.float32)
    kpm = np.zeros((3, 5), bool)
    kpm[0, 3:] = kpm[1, :] = True  # sequence 1: all padding
    with minidl.no_grad():
        cpu = enc(minidl.tensor(x), src_key_padding_mask=minidl.tensor(kpm)).numpy()
    assert (cpu[0, 3:] == 0).all() and (cpu[1] == 0).all() and not np.isnan(cpu).any()
    _fake_gpu.install(monkeypatch, lib)
    enc.to("cuda")
    with minidl.no_grad():
        out = enc(minidl.tensor(x, device="cuda"),
                  src_key_padding_mask=minidl.tensor(kpm, device="cuda"))
    assert out.device == "cuda"
    np.testing.assert_allclose(out.numpy(), cpu, rtol=1e-5, atol=1e-5)
    layer = enc.layers[0]
    with minidl.no_grad():
        y = layer(minidl.tensor(x, device="cuda"),
                  src_key_padding_mask=minidl.tensor(kpm, device="cuda"))
    assert np.isnan(y.numpy()[1]).all() and not np.isnan(y.numpy()[0]).any()
    assert minidl.logspace(0, 2, 3, device="cuda").device == "cuda"
    assert minidl.as_tensor(np.zeros(2), device="cuda").device == "cuda"


def test_sdpa_mask_dtype_and_activation_name_errors_as_torch():
    q = np.zeros((2, 3, 4), np.float32)
    for bad in (np.float64, np.float16, np.int64):
        both_raise(lambda: F.scaled_dot_product_attention(
            *(minidl.tensor(q),) * 3, attn_mask=minidl.zeros(3, 3, dtype=bad)),
            lambda: torch.nn.functional.scaled_dot_product_attention(
                *(torch.tensor(q),) * 3, attn_mask=torch.zeros(3, 3, dtype=getattr(
                    torch, np.dtype(bad).name))), [RuntimeError, ValueError], "attn_mask dtype")
    q64 = np.random.default_rng(0).standard_normal((2, 3, 4))
    mask = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    same(F.scaled_dot_product_attention(*(f64(q64),) * 3, attn_mask=minidl.tensor(mask)),
         torch.nn.functional.scaled_dot_product_attention(*(t64(q64),) * 3,
                                                          attn_mask=torch.tensor(mask)),
         "float32 mask on float64 query", atol=1e-7)
    both_raise(lambda: nn.TransformerEncoderLayer(4, 2, activation="tanh"),
               lambda: torch.nn.TransformerEncoderLayer(4, 2, activation="tanh"),
               [RuntimeError, ValueError], "activation should be relu/gelu, not tanh")


def test_size_keyword_numel_and_requires_grad_errors_as_torch():
    for name in ("zeros", "ones", "empty"):
        mine = getattr(minidl, name)(size=(2, 3))
        theirs = getattr(torch, name)(size=(2, 3))
        assert mine.shape == tuple(theirs.shape) and str(mine.dtype) == "float32"
    assert minidl.randn(size=(2,)).shape == minidl.rand(size=(2, 1)).shape[:1]
    both_raise(lambda: minidl.numel([1, 2]), lambda: torch.numel([1, 2]), [TypeError],
               "must be Tensor")
    both_raise(lambda: minidl.tensor([1, 2], requires_grad=True),
               lambda: torch.tensor([1, 2], requires_grad=True), [RuntimeError, TypeError])
    both_raise(lambda: minidl.tensor([1, 2]).requires_grad_(),
               lambda: torch.tensor([1, 2]).requires_grad_(), [RuntimeError, TypeError])
    same(minidl.from_numpy(np.ones(2, np.complex64)), torch.from_numpy(np.ones(2, np.complex64)),
         "complex")


def test_a_hidden_state_of_another_dtype_is_a_runtime_error_as_in_torch():
    x, h = np.zeros((2, 1, 3), np.float32), np.zeros((1, 1, 4))
    tm, mm = torch.nn.GRU(3, 4), nn.GRU(3, 4)
    both_raise(lambda: mm(minidl.tensor(x), f64(h)), lambda: tm(torch.tensor(x), t64(h)),
               [RuntimeError, ValueError], "dtype")
    tc, mc = torch.nn.GRUCell(3, 4), nn.GRUCell(3, 4)
    both_raise(lambda: mc(minidl.tensor(x[0]), f64(h[0])), lambda: tc(torch.tensor(x[0]),
                                                                      t64(h[0])),
               [RuntimeError, ValueError], "dtype")
