"""Attention and transformers: F.scaled_dot_product_attention, nn.MultiheadAttention and the
nn.Transformer family against PyTorch in float64 (outputs, attention weights, the gradients of
every input and parameter), gradient checks, parameter names and initialisation, bad input."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

import _fake_gpu
import minidl.nn.attention as attention
from helpers import both_raise, f64_tensor, load_from, same

try:
    import torch
except ImportError:  # the parity tests skip, the rest still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
# torch's own notes on the masks and the nested-tensor fast path, which are not ours to test
pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")]


def f64(a, requires_grad=True):
    return minidl.tensor(np.asarray(a), requires_grad=requires_grad, dtype="float64")


def _close(mine, theirs, what, atol=1e-10):
    assert mine.shape == tuple(theirs.shape), what
    np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), atol=atol, rtol=1e-9,
                               err_msg=what)


def _backward_both(touts, mouts, rng):
    """Backward of one random projection of all the outputs on both sides."""
    tloss, mloss = 0, None
    for t, m in zip(touts, mouts):
        w = rng.standard_normal(tuple(t.shape))
        tloss = tloss + (t * torch.tensor(w)).sum()
        term = (m * f64(w, False)).sum()
        mloss = term if mloss is None else mloss + term
    tloss.backward()
    mloss.backward()


def _mask_pair(mask):
    if mask.dtype == np.bool_:
        return torch.tensor(mask), minidl.tensor(mask)
    return torch.tensor(mask), f64(mask, False)


# ---- scaled_dot_product_attention -------------------------------------------------------------
def _sdpa_case(case, rng):
    q = rng.standard_normal((2, 3, 4, 5))
    k = rng.standard_normal((2, 3, 6, 5))
    v = rng.standard_normal((2, 3, 6, 7))
    kw = {}
    if case == "causal":
        kw["is_causal"] = True
    elif case == "scale":
        kw["scale"] = 0.3
    elif case == "bool_mask":
        m = rng.random((4, 6)) > 0.3
        m[1] = False  # a query that sees no key: zeros, as in PyTorch
        m[2] = True
        kw["attn_mask"] = m
    elif case == "float_mask":
        kw["attn_mask"] = rng.standard_normal((2, 1, 4, 6))
    elif case == "gqa":
        k, v = k[:, :1], v[:, :1]
        kw["enable_gqa"] = True
    elif case == "3d":
        q, k, v = q[0], k[0], v[0]
    return (q, k, v), kw


@needs_torch
@pytest.mark.parametrize("case", ["plain", "causal", "scale", "bool_mask", "float_mask", "gqa",
                                  "3d"])
def test_sdpa_parity(case):
    rng = np.random.default_rng(0)
    arrays, kw = _sdpa_case(case, rng)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ms = [f64(a) for a in arrays]
    tkw, mkw = dict(kw), dict(kw)
    if "attn_mask" in kw:
        tkw["attn_mask"], mkw["attn_mask"] = _mask_pair(kw["attn_mask"])
    tout = torch.nn.functional.scaled_dot_product_attention(*ts, **tkw)
    mout = F.scaled_dot_product_attention(*ms, **mkw)
    _close(mout, tout, "output")
    _backward_both([tout], [mout], rng)
    for name, a, b in zip("qkv", ms, ts):
        _close(a.grad, b.grad, f"grad of {name}")
    if case == "bool_mask":
        assert np.all(mout.numpy()[:, :, 1] == 0)


def test_sdpa_gradcheck_with_a_float_mask_and_causal():
    rng = np.random.default_rng(1)
    q, k, v = (f64(rng.standard_normal(s)) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 3)))
    mask = f64(rng.standard_normal((3, 5)))  # a float mask gets a gradient too
    assert gradcheck(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                     [q, k, v, mask])
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                     [q, k, v])


def test_sdpa_dropout_and_errors():
    q = minidl.randn(2, 4, 8)
    plain = F.scaled_dot_product_attention(q, q, q).numpy()
    minidl.manual_seed(3)
    a = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5).numpy()
    minidl.manual_seed(3)
    b = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain)
    with pytest.raises(ValueError, match="query has 8 features .* key 5"):
        F.scaled_dot_product_attention(q, minidl.randn(2, 4, 5), minidl.randn(2, 4, 5))
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=minidl.ones(4, 4).bool(),
                                       is_causal=True)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 4\) does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=minidl.ones(3, 4).bool())
    with pytest.raises(TypeError, match="same dtype"):
        F.scaled_dot_product_attention(q, q.double(), q)


# ---- MultiheadAttention -----------------------------------------------------------------------
MHA_CASES = [
    dict(),
    dict(batch_first=True, key_padding_mask=True, attn_mask="bool"),
    dict(kdim=3, vdim=6, need_weights=False, key_padding_mask=True),
    dict(average_attn_weights=False, attn_mask="float3", bias=False),
    dict(batched=False, key_padding_mask=True, attn_mask="bool"),
    dict(batched=False, need_weights=False, attn_mask="float3"),
    dict(add_bias_kv=True, add_zero_attn=True, key_padding_mask=True, attn_mask="bool"),
    dict(add_bias_kv=True, need_weights=False, batch_first=True),
    dict(attn_mask="float2", key_padding_mask="float", need_weights=False),
]


def _mha_parity(batch_first=False, kdim=None, vdim=None, bias=True, need_weights=True,
                average_attn_weights=True, key_padding_mask=False, attn_mask=None, batched=True,
                add_bias_kv=False, add_zero_attn=False, self_attention=False):
    rng = np.random.default_rng(2)
    E, H, L, S, N = 8, 2, 4, 5, 3
    ctor = dict(bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first,
                add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn)
    tm = torch.nn.MultiheadAttention(E, H, **ctor).double()
    mm = nn.MultiheadAttention(E, H, **ctor)
    assert list(mm.state_dict()) == list(tm.state_dict())
    mm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    mm.double()

    def shape(length, e):
        return ((N, length, e) if batch_first else (length, N, e)) if batched else (length, e)

    if self_attention:
        S = L
        x = rng.standard_normal(shape(L, E))
        arrays = [x]
    else:
        arrays = [rng.standard_normal(shape(L, E)), rng.standard_normal(shape(S, kdim or E)),
                  rng.standard_normal(shape(S, vdim or E))]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ms = [f64(a) for a in arrays]
    tkw, mkw = {}, {}
    if key_padding_mask:
        if key_padding_mask == "float":
            m = rng.standard_normal((N, S))
        else:
            m = rng.random((N, S) if batched else (S,)) > 0.6
            m[..., 0] = False  # every query sees some key
        tkw["key_padding_mask"], mkw["key_padding_mask"] = _mask_pair(m)
    if attn_mask == "bool":
        m = np.triu(np.ones((L, S), bool), 1)
    elif attn_mask == "float2":
        m = rng.standard_normal((L, S))
    elif attn_mask == "float3":
        m = rng.standard_normal(((N if batched else 1) * H, L, S))
    if attn_mask:
        tkw["attn_mask"], mkw["attn_mask"] = _mask_pair(m)
    targs = ts * 3 if self_attention else ts
    margs = ms * 3 if self_attention else ms
    tout, tw = tm(*targs, need_weights=need_weights, average_attn_weights=average_attn_weights,
                  **tkw)
    mout, mw = mm(*margs, need_weights=need_weights, average_attn_weights=average_attn_weights,
                  **mkw)
    _close(mout, tout, "output")
    if need_weights:
        _close(mw, tw, "attention weights")
        _backward_both([tout, tw], [mout, mw], rng)
    else:
        assert mw is None and tw is None
        _backward_both([tout], [mout], rng)
    for k, (a, b) in enumerate(zip(ms, ts)):
        _close(a.grad, b.grad, f"grad of input {k}")
    theirs = dict(tm.named_parameters())
    assert [n for n, _ in mm.named_parameters()] == list(theirs)
    for name, p in mm.named_parameters():
        _close(p.grad, theirs[name].grad, f"grad of {name}")


@needs_torch
@pytest.mark.parametrize("case", MHA_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())
                         or "default")
def test_multihead_attention_parity(case):
    _mha_parity(**case)


@needs_torch
def test_multihead_self_attention_parity():
    _mha_parity(self_attention=True, attn_mask="bool", batch_first=True)


def test_multihead_attention_init_and_names():
    m = nn.MultiheadAttention(16, 4)
    assert [k for k in m.state_dict()] == ["in_proj_weight", "in_proj_bias", "out_proj.weight",
                                           "out_proj.bias"]
    assert m.in_proj_weight.shape == (48, 16) and m.head_dim == 4
    bound = math.sqrt(6 / (16 + 48))  # xavier_uniform_ of (3E, E)
    w = m.in_proj_weight.numpy()
    assert np.abs(w).max() <= bound and w.std() > 0.5 * bound / math.sqrt(3)
    assert not m.in_proj_bias.numpy().any() and not m.out_proj.bias.numpy().any()
    m = nn.MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False)
    assert list(m.state_dict()) == ["q_proj_weight", "k_proj_weight", "v_proj_weight",
                                    "out_proj.weight"]
    assert m.k_proj_weight.shape == (8, 3) and m.v_proj_weight.shape == (8, 5)


def test_multihead_attention_gradcheck():
    m = nn.MultiheadAttention(4, 2, add_bias_kv=True).double()
    rng = np.random.default_rng(4)
    q, k = f64(rng.standard_normal((3, 2, 4))), f64(rng.standard_normal((5, 2, 4)))
    mask = minidl.tensor(np.triu(np.ones((3, 5), bool), 3))
    assert gradcheck(lambda q, k: m(q, k, k, attn_mask=mask)[0], [q, k])
    assert gradcheck(lambda q, k: m(q, k, k, need_weights=False)[0], [q, k])


def test_multihead_attention_dropout_only_in_training():
    m = nn.MultiheadAttention(8, 2, dropout=0.5)
    x = minidl.randn(3, 2, 8)
    m.eval()
    a = m(x, x, x)[0].numpy()
    np.testing.assert_array_equal(a, m(x, x, x)[0].numpy())
    m.train()
    assert not np.allclose(m(x, x, x)[0].numpy(), a)


def test_multihead_attention_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.MultiheadAttention(10, 3)
    m = nn.MultiheadAttention(8, 2)
    x = minidl.randn(3, 2, 8)
    with pytest.raises(RuntimeError, match="Need attn_mask"):  # torch's type; a ValueError too
        m(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match=r"key_padding_mask shape of \(2, 3\), but got \(3, 2\)"):
        m(x, x, x, key_padding_mask=minidl.zeros(3, 2).bool())
    with pytest.raises(ValueError, match=r"2-D attn_mask is \(3, 4\), but should be \(3, 3\)"):
        m(x, x, x, attn_mask=minidl.zeros(3, 4).bool())
    with pytest.raises(ValueError, match="expected embed_dim 8"):
        m(minidl.randn(3, 2, 6), x, x)


def test_multihead_attention_on_fake_gpu_matches_cpu(monkeypatch, tmp_path):
    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = np.random.default_rng(6).standard_normal((2, 5, 8)).astype(np.float32)
    mask = np.zeros((2, 5), bool)
    mask[0, 3:] = True
    out, w = m(*[minidl.tensor(x)] * 3, key_padding_mask=minidl.tensor(mask))
    (out.sum() + (w * w).sum()).backward()
    cpu = [out.numpy(), w.numpy()] + [p.grad.numpy() for p in m.parameters()]
    _fake_gpu.install(monkeypatch, lib)
    m.zero_grad()
    m.to("cuda")
    xs = minidl.tensor(x, device="cuda")
    out, w = m(xs, xs, xs, key_padding_mask=minidl.tensor(mask, device="cuda"))
    assert out.device == "cuda"
    (out.sum() + (w * w).sum()).backward()
    gpu = [out.numpy(), w.numpy()] + [p.grad.numpy() for p in m.parameters()]
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@needs_torch
def test_attention_under_cpu_autocast_is_bfloat16_as_in_torch():
    x = np.random.default_rng(0).standard_normal((3, 2, 8)).astype(np.float32)
    tm, mm = torch.nn.MultiheadAttention(8, 2), nn.MultiheadAttention(8, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t_sdpa = torch.nn.functional.scaled_dot_product_attention(*[torch.tensor(x)] * 3)
        t_mha = tm(*[torch.tensor(x)] * 3)[0]
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        m_sdpa = F.scaled_dot_product_attention(*[minidl.tensor(x)] * 3)
        m_mha = mm(*[minidl.tensor(x)] * 3)[0]
    assert t_sdpa.dtype == t_mha.dtype == torch.bfloat16
    assert m_sdpa.dtype == m_mha.dtype == minidl.bfloat16
    m_mha.float().sum().backward()
    assert all(p.grad.dtype == np.float32 for p in mm.parameters())


# ---- transformer layers -----------------------------------------------------------------------
def _twin(make_torch, make_mine):
    """A torch module in float64 and eval mode, and ours with its weights (through its own
    state_dict, so the keys must match)."""
    tm = make_torch().double().eval()
    mm = make_mine()
    assert list(mm.state_dict()) == list(tm.state_dict())
    mm.load_state_dict(tm.state_dict())
    return tm, mm.double().eval()


def _compare_run(tm, mm, arrays, tkw=None, mkw=None, seed=7):
    rng = np.random.default_rng(seed)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ms = [f64(a) for a in arrays]
    tout = tm(*ts, **(tkw or {}))
    mout = mm(*ms, **(mkw or {}))
    _close(mout, tout, "output", atol=1e-9)
    _backward_both([tout], [mout], rng)
    for k, (a, b) in enumerate(zip(ms, ts)):
        _close(a.grad, b.grad, f"grad of input {k}", atol=1e-9)
    theirs = dict(tm.named_parameters())
    assert [n for n, _ in mm.named_parameters()] == list(theirs)
    for name, p in mm.named_parameters():
        _close(p.grad, theirs[name].grad, f"grad of {name}", atol=1e-9)


def _masks(rng, L, S, N, causal=True, padding=True):
    tkw, mkw = {}, {}
    if causal:
        m = np.triu(np.full((L, S), -np.inf), 1)
        tkw["mask"], mkw["mask"] = torch.tensor(m), f64(m, False)
    if padding:
        p = rng.random((N, S)) > 0.6
        p[:, 0] = False
        tkw["padding"], mkw["padding"] = torch.tensor(p), minidl.tensor(p)
    return tkw, mkw


ENCODER_CASES = [
    dict(),
    dict(norm_first=True, activation="gelu", batch_first=True, masks=True),
    dict(bias=False, masks=True),
    dict(activation="silu", layer_norm_eps=1e-3),
    dict(unbatched=True, masks=True),
]


@needs_torch
@pytest.mark.parametrize("case", ENCODER_CASES, ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c.items()) or "default")
def test_encoder_layer_parity(case):
    case = dict(case)
    masks, unbatched = case.pop("masks", False), case.pop("unbatched", False)
    act = case.pop("activation", "relu")
    t_act = torch.nn.functional.silu if act == "silu" else act
    m_act = F.silu if act == "silu" else act
    tm, mm = _twin(
        lambda: torch.nn.TransformerEncoderLayer(8, 2, 16, activation=t_act, **case),
        lambda: nn.TransformerEncoderLayer(8, 2, 16, activation=m_act, **case))
    rng = np.random.default_rng(8)
    L, N = 5, 3
    shape = (L, 8) if unbatched else ((N, L, 8) if case.get("batch_first") else (L, N, 8))
    tkw, mkw = {}, {}
    if masks:
        t, m = _masks(rng, L, L, N, padding=not unbatched)
        tkw = {"src_mask": t["mask"]}
        mkw = {"src_mask": m["mask"]}
        if "padding" in t:
            tkw["src_key_padding_mask"], mkw["src_key_padding_mask"] = t["padding"], m["padding"]
    _compare_run(tm, mm, [rng.standard_normal(shape)], tkw, mkw)


@needs_torch
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_parity(norm_first):
    tm, mm = _twin(
        lambda: torch.nn.TransformerDecoderLayer(8, 2, 12, norm_first=norm_first),
        lambda: nn.TransformerDecoderLayer(8, 2, 12, norm_first=norm_first))
    rng = np.random.default_rng(9)
    L, S, N = 4, 6, 2
    t, m = _masks(rng, L, L, N, padding=False)
    tp, mp = _masks(rng, L, S, N, causal=False)
    tkw = {"tgt_mask": t["mask"], "memory_key_padding_mask": tp["padding"]}
    mkw = {"tgt_mask": m["mask"], "memory_key_padding_mask": mp["padding"]}
    _compare_run(tm, mm, [rng.standard_normal((L, N, 8)), rng.standard_normal((S, N, 8))],
                 tkw, mkw)


@needs_torch
def test_encoder_and_decoder_stacks_parity():
    tm, mm = _twin(
        lambda: torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16), 2,
                                            norm=torch.nn.LayerNorm(8), enable_nested_tensor=False),
        lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2,
                                      norm=nn.LayerNorm(8), enable_nested_tensor=False))
    rng = np.random.default_rng(10)
    t, m = _masks(rng, 5, 5, 3)
    _compare_run(tm, mm, [rng.standard_normal((5, 3, 8))],
                 {"mask": t["mask"], "src_key_padding_mask": t["padding"]},
                 {"mask": m["mask"], "src_key_padding_mask": m["padding"]})
    tm, mm = _twin(
        lambda: torch.nn.TransformerDecoder(
            torch.nn.TransformerDecoderLayer(8, 2, 16, batch_first=True), 2),
        lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, batch_first=True), 2))
    t, m = _masks(rng, 4, 4, 3, padding=False)
    _compare_run(tm, mm, [rng.standard_normal((3, 4, 8)), rng.standard_normal((3, 5, 8))],
                 {"tgt_mask": t["mask"], "tgt_is_causal": True},
                 {"tgt_mask": m["mask"], "tgt_is_causal": True})


@needs_torch
@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_parity(batch_first):
    kw = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
              dim_feedforward=16, batch_first=batch_first)
    tm, mm = _twin(lambda: torch.nn.Transformer(**kw), lambda: nn.Transformer(**kw))
    rng = np.random.default_rng(11)
    S, L, N = 6, 4, 2
    src = rng.standard_normal((N, S, 8) if batch_first else (S, N, 8))
    tgt = rng.standard_normal((N, L, 8) if batch_first else (L, N, 8))
    tmask = torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)
    mmask = nn.Transformer.generate_square_subsequent_mask(L, dtype=minidl.float64)
    pad = np.zeros((N, S), bool)
    pad[1, 4:] = True
    tkw = {"tgt_mask": tmask, "src_key_padding_mask": torch.tensor(pad),
           "memory_key_padding_mask": torch.tensor(pad)}
    mkw = {"tgt_mask": mmask, "src_key_padding_mask": minidl.tensor(pad),
           "memory_key_padding_mask": minidl.tensor(pad)}
    _compare_run(tm, mm, [src, tgt], tkw, mkw)


@needs_torch
def test_transformer_state_dict_and_mask_match_torch():
    tm = torch.nn.Transformer(16, 4, 1, 1, 32)
    mm = nn.Transformer(16, 4, 1, 1, 32)
    ours = {k: tuple(v.shape) for k, v in mm.state_dict().items()}
    assert list(ours) == list(tm.state_dict())
    assert ours == {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    mm.load_state_dict(tm.state_dict())  # torch's tensors load as they are
    np.testing.assert_array_equal(mm.encoder.layers[0].linear1.weight.numpy(),
                                  tm.encoder.layers[0].linear1.weight.detach().numpy())
    np.testing.assert_array_equal(nn.Transformer.generate_square_subsequent_mask(5).numpy(),
                                  torch.nn.Transformer.generate_square_subsequent_mask(5).numpy())
    assert nn.Transformer.generate_square_subsequent_mask(3).dtype == np.float32


def test_transformer_init():
    m = nn.Transformer(16, 4, 2, 1, 32)
    w = m.encoder.layers[1].linear1.weight.numpy()  # (32, 16): xavier bound sqrt(6 / 48)
    assert np.abs(w).max() <= math.sqrt(6 / 48) and w.std() > 0.25 * math.sqrt(6 / 48)
    a = m.encoder.layers[0].self_attn.in_proj_weight.numpy()
    assert np.abs(a).max() <= math.sqrt(6 / 64)
    assert not m.encoder.layers[0].self_attn.in_proj_bias.numpy().any()
    np.testing.assert_array_equal(m.encoder.norm.weight.numpy(), 1)
    # the stack's layers are copies of one layer: they start equal, then train apart
    stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 3)
    first, last = stack.layers[0].linear1.weight, stack.layers[2].linear1.weight
    np.testing.assert_array_equal(first.numpy(), last.numpy())
    assert first is not last and first.data is not last.data


def test_encoder_layer_gradcheck_and_dropout():
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.3).double().eval()
    x = f64(np.random.default_rng(12).standard_normal((3, 2, 4)))
    mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=minidl.float64)
    assert gradcheck(lambda x: layer(x, src_mask=mask), [x])
    a = layer(x).numpy()
    layer.train()
    assert not np.allclose(layer(x).numpy(), a)


def test_transformer_errors():
    with pytest.raises(ValueError, match="divisible by nhead"):
        nn.TransformerEncoderLayer(10, 3)
    with pytest.raises(ValueError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerDecoderLayer(8, 2, activation="tanh")
    m = nn.Transformer(8, 2, 1, 1, 16)
    with pytest.raises(ValueError, match="batch number of src and tgt must be equal"):
        m(minidl.randn(5, 2, 8), minidl.randn(4, 3, 8))
    with pytest.raises(ValueError, match=r"equal to d_model \(8\), got 6"):
        m(minidl.randn(5, 2, 6), minidl.randn(4, 2, 8))


@needs_torch
def test_activation_module_and_custom_encoder():
    """An activation Module is a submodule (no parameters, so torch's keys still match); a
    custom encoder takes the place of the built one."""
    tm, mm = _twin(lambda: torch.nn.TransformerEncoderLayer(8, 2, 16, activation=torch.nn.GELU()),
                   lambda: nn.TransformerEncoderLayer(8, 2, 16, activation=nn.GELU()))
    _compare_run(tm, mm, [np.random.default_rng(13).standard_normal((4, 2, 8))])
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1)
    m = nn.Transformer(8, 2, num_decoder_layers=1, dim_feedforward=16, custom_encoder=encoder)
    assert m.encoder is encoder
    assert m(minidl.randn(5, 2, 8), minidl.randn(3, 2, 8)).shape == (3, 2, 8)


def test_sdpa_is_one_fused_op_that_matches_the_composite_with_dropout():
    """scaled_dot_product_attention records one graph node (Attention) that stands for the
    transpose, matmuls, scaling, mask add, safe softmax and dropout of the composite: the same
    values and gradients as the composite written out with minidl's ops, dropout included
    (the same seed draws the same multiplier)."""
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 4, 5), (2, 3, 6, 5),
                                                                   (2, 3, 6, 7))]
    mask = rng.standard_normal((4, 6)).astype(np.float32)
    g = rng.standard_normal((2, 3, 4, 7)).astype(np.float32)
    results = []
    for fused in (True, False):
        q, k, v = (minidl.tensor(a, requires_grad=True) for a in arrays)
        m = minidl.tensor(mask, requires_grad=True)
        minidl.manual_seed(11)
        if fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=0.25, scale=0.7)
            assert out.grad_fn.name() == "AttentionBackward"
        else:
            w = F.softmax(q @ k.transpose(-2, -1) * 0.7 + m, dim=-1)
            out = F.dropout(w, 0.25, True) @ v
        (out * minidl.tensor(g)).sum().backward()
        results.append([out.numpy(), q.grad.numpy(), k.grad.numpy(), v.grad.numpy(),
                        m.grad.numpy()])
    for a, b, what in zip(*results, ["out", "q", "k", "v", "mask"]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=what)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "bool2d", "float3d", "padding", "causal", "dropout"])
def test_packed_self_attention_matches_the_general_path(batch_first, masks, monkeypatch):
    """Self-attention (query is key is value) takes one packed projection and one op to the
    merged heads; the same module with three distinct (equal) inputs takes the general path.
    Outputs and every gradient agree, masks and dropout included (same seed, same draws)."""
    from minidl.nn.attention import PackedSelfAttention

    calls = []
    original = PackedSelfAttention.forward
    monkeypatch.setattr(PackedSelfAttention, "forward",
                        lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    rng = np.random.default_rng(8)
    E, H, L, N = 12, 3, 5, 2
    m = nn.MultiheadAttention(E, H, dropout=0.3 if masks == "dropout" else 0.0,
                              batch_first=batch_first)
    x = rng.standard_normal((N, L, E) if batch_first else (L, N, E)).astype(np.float32)
    kw = {}
    if masks == "bool2d":
        a = rng.random((L, L)) > 0.6
        a[:, 0] = False  # every query keeps a key
        kw["attn_mask"] = minidl.tensor(a)
    elif masks == "float3d":
        kw["attn_mask"] = minidl.tensor(rng.standard_normal((N * H, L, L)).astype(np.float32))
    elif masks == "padding":
        pad = np.zeros((N, L), bool)
        pad[1, 3:] = True
        kw["key_padding_mask"] = minidl.tensor(pad)
    elif masks == "causal":
        kw["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(L)
        kw["is_causal"] = True
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for packed in (True, False):
        m.zero_grad()
        xs = [minidl.tensor(x, requires_grad=True) for _ in range(1 if packed else 3)]
        q, k, v = (xs[0],) * 3 if packed else xs
        minidl.manual_seed(5)
        out, weights = m(q, k, v, need_weights=False, **kw)
        assert weights is None
        assert (len(calls) == 1) == packed
        calls.clear()
        (out * minidl.tensor(g)).sum().backward()
        gx = sum(t.grad.numpy() for t in xs)
        results.append([out.numpy(), gx] + [p.grad.numpy() for p in m.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@needs_torch
def test_packed_self_attention_matches_torch_in_an_encoder_layer():
    """TransformerEncoderLayer calls self-attention with need_weights=False: the packed path,
    against torch's layer from the same weights, in float64, forward and backward."""
    rng = np.random.default_rng(9)
    tl = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).double()
    ml = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    ml.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    ml.double()
    x = rng.standard_normal((3, 7, 16))
    pad = np.zeros((3, 7), bool)
    pad[2, 5:] = True
    tx, mx = torch.tensor(x, requires_grad=True), f64(x)
    tout = tl(tx, src_key_padding_mask=torch.tensor(pad))
    mout = ml(mx, src_key_padding_mask=minidl.tensor(pad))
    _close(mout, tout, "output")
    _backward_both([tout], [mout], rng)
    _close(mx.grad, tx.grad, "input grad")
    theirs = dict(tl.named_parameters())
    for name, p in ml.named_parameters():
        _close(p.grad, theirs[name].grad, name)


# ---- attention masks, fast paths and errors against torch (an audit) -----------------------------
def t64(a, requires_grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=requires_grad)


def _mha_pair(E=8, H=2, **kw):
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(E, H, **kw).double()
    return tm, load_from(tm, nn.MultiheadAttention(E, H, dtype=minidl.float64, **kw))


def _bool_mask(shape, seed, full_row=False):
    b = np.random.default_rng(seed).random(shape) < 0.3
    if full_row:
        b[..., 0, :] = True
    return b


MHA_MASK_CASES = [  # extra constructor kwargs, attn_mask kind, key_padding_mask kind, need_weights,
    # average_attn_weights, batched
    (dict(batch_first=True), "bool2", "bool", True, False, True),
    (dict(kdim=5, vdim=6), "float3", None, False, True, True),
    (dict(add_bias_kv=True, add_zero_attn=True), "bool3", "float", True, True, True),
    (dict(add_zero_attn=True, dropout=0.3), "float2", "bool", False, True, False),
    (dict(batch_first=True, add_bias_kv=True), None, "bool", True, False, True),
]


@needs_torch
@pytest.mark.parametrize("kw,am,kpm,need_weights,average,batched", MHA_MASK_CASES)
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
    mq, mk, mv = (f64_tensor(a, True) for a in (q, k, v))
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


@needs_torch
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
        xt, xm = t64(x, True), f64_tensor(x, True)
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
    same(ml(f64_tensor(x), src_mask=minidl.tensor(not_causal), is_causal=True),
         tl(t64(x), src_mask=torch.tensor(not_causal), is_causal=True), "encoder layer")


@needs_torch
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


@needs_torch
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


@needs_torch
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


@needs_torch
def test_attn_mask_of_the_wrong_shape_is_a_runtime_error_as_in_torch():
    tm, mm = _mha_pair()
    x = np.zeros((3, 2, 8))
    both_raise(lambda: mm(f64_tensor(x), f64_tensor(x), f64_tensor(x), attn_mask=minidl.zeros(3, 4)),
               lambda: tm(t64(x), t64(x), t64(x), attn_mask=torch.zeros(3, 4)),
               [RuntimeError, ValueError], "(3, 3)")
    both_raise(lambda: mm(f64_tensor(x), f64_tensor(x), f64_tensor(x), attn_mask=minidl.zeros(2, 3, 3)),
               lambda: tm(t64(x), t64(x), t64(x), attn_mask=torch.zeros(2, 3, 3)),
               [RuntimeError, ValueError], "(4, 3, 3)")


@needs_torch
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
    same(F.scaled_dot_product_attention(*(f64_tensor(q64),) * 3, attn_mask=minidl.tensor(mask)),
         torch.nn.functional.scaled_dot_product_attention(*(t64(q64),) * 3,
                                                          attn_mask=torch.tensor(mask)),
         "float32 mask on float64 query", atol=1e-7)
    both_raise(lambda: nn.TransformerEncoderLayer(4, 2, activation="tanh"),
               lambda: torch.nn.TransformerEncoderLayer(4, 2, activation="tanh"),
               [RuntimeError, ValueError], "activation should be relu/gelu, not tanh")
# ---- attention masks whose dtype differs from the query's -------------------------------------

@pytest.mark.parametrize("which", ["key_padding_mask", "attn_mask"])
def test_attention_float_mask_of_another_dtype_than_the_query_is_refused(which):
    """MultiheadAttention took a float64 key_padding_mask (or attn_mask) with a float32
    query; torch refuses it (its baddbmm: "Input dtypes must be the same"), in the module, in
    F.multi_head_attention_forward and (already) in F.scaled_dot_product_attention."""
    import minidl.nn.functional as F

    mha = minidl.nn.MultiheadAttention(4, 2)
    q = minidl.randn(3, 2, 4)
    bad = {"key_padding_mask": minidl.zeros(2, 3, dtype=minidl.float64),
           "attn_mask": minidl.zeros(3, 3, dtype=minidl.float64)}[which]
    with pytest.raises(RuntimeError, match=f"{which} must have the query's dtype"):
        mha(q, q, q, **{which: bad})
    mha.eval()
    with minidl.no_grad(), pytest.raises(RuntimeError, match="float32.*got float64"):
        mha(q, q, q, **{which: bad})
    with pytest.raises(RuntimeError, match="multi_head_attention_forward: .*dtype"):
        F.multi_head_attention_forward(
            q, q, q, 4, 2, mha.in_proj_weight, mha.in_proj_bias, None, None, False, 0.0,
            mha.out_proj.weight, mha.out_proj.bias, **{which: bad})
    ok = {"key_padding_mask": minidl.zeros(2, 3), "attn_mask": minidl.zeros(3, 3)}[which]
    assert mha(q, q, q, **{which: ok})[0].shape == (3, 2, 4)  # the query's dtype: fine
    assert mha(q, q, q, **{which: ok > 0})[0].shape == (3, 2, 4)  # bool: fine
    qs = minidl.randn(2, 2, 3, 4)
    with pytest.raises(RuntimeError, match="attn_mask dtype"):
        F.scaled_dot_product_attention(qs, qs, qs, attn_mask=minidl.zeros(3, 3,
                                                                           dtype=minidl.float64))


def test_attention_mask_dtypes_follow_torch_where_the_masks_merge_or_weights_are_not_asked():
    """The dtype check above was first made per mask, which refused what torch runs: a float32
    attn_mask beside a bool key_padding_mask with a float64 query (torch adds the two masks,
    which promotes to float64), and any float mask with need_weights=False (torch's attention
    then takes it as it is). Each case as torch 2.13 answers it."""
    mha = minidl.nn.MultiheadAttention(4, 2).double()
    q = minidl.randn(3, 2, 4, dtype=minidl.float64)
    am, kpm_f = minidl.zeros(3, 3), minidl.zeros(2, 3)
    kpm_b = minidl.tensor([[False, False, True]] * 2)
    runs = {"am": dict(attn_mask=am), "kpm": dict(key_padding_mask=kpm_f),
            "am+kpm bool": dict(attn_mask=am, key_padding_mask=kpm_b),
            "am+kpm f32": dict(attn_mask=am, key_padding_mask=kpm_f),
            "am, no weights": dict(attn_mask=am, need_weights=False),
            "am+kpm bool, no weights": dict(attn_mask=am, key_padding_mask=kpm_b,
                                            need_weights=False)}
    torch_answers = {"am": False, "kpm": False, "am+kpm bool": True, "am+kpm f32": False,
                     "am, no weights": True, "am+kpm bool, no weights": True}
    for case, kw in runs.items():
        try:
            mha(q, q, q, **kw)
            ran = True
        except RuntimeError as e:
            assert "dtype" in str(e)
            ran = False
        assert ran == torch_answers[case], case


# ---- nn.attention.sdpa_kernel -----------------------------------------------------------------

def test_sdpa_kernel_records_the_choice_and_keeps_the_result():
    q = minidl.randn(1, 2, 4, 8)
    plain = minidl.nn.functional.scaled_dot_product_attention(q, q, q).numpy()
    with attention.sdpa_kernel([attention.SDPBackend.FLASH_ATTENTION,
                                attention.SDPBackend.MATH]):
        assert attention.current_sdpa_backends() == [attention.SDPBackend.FLASH_ATTENTION,
                                                     attention.SDPBackend.MATH]
        inside = minidl.nn.functional.scaled_dot_product_attention(q, q, q).numpy()
    np.testing.assert_array_equal(inside, plain)
    assert attention.SDPBackend.ERROR not in attention.current_sdpa_backends()
    with pytest.raises(AssertionError, match="SDPBackend"):
        with attention.sdpa_kernel("flash"):
            pass
    torch = pytest.importorskip("torch")
    for b in attention.SDPBackend:
        assert int(getattr(torch.nn.attention.SDPBackend, b.name)) == int(b)
