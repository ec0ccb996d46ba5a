"""``minidl.nn.attention.flex_attention``: outputs, log-sum-exp and block tables equal to
torch's flex_attention on the same inputs (torch's CPU kernel has no backward, so gradients
are checked against torch autograd through the same formula written out, and by float64
finite differences, a learnt bias inside score_mod included)."""
import warnings

import numpy as np
import pytest

import minidl
from minidl.nn.attention import flex_attention as mfa
from minidl.testing import gradcheck, gradgradcheck

B, H, L, S, E = 2, 4, 10, 12, 8
_RNG = np.random.default_rng(0)
Q, K, V = (_RNG.standard_normal(s) for s in [(B, H, L, E), (B, H, S, E), (B, H, S, E)])
# the inputs of the tests moved here from an audit (their own stream, seed 7)
_QKV_RNG = np.random.default_rng(7)
_Q, _K, _V = (_QKV_RNG.standard_normal((2, 4, 8, 16)).astype(np.float32) for _ in range(3))

CASES = {
    "plain": {},
    "causal": dict(mask_mod=lambda b, h, qi, ki: qi >= ki),
    "relative": dict(score_mod=lambda s, b, h, qi, ki: s + (qi - ki) * 0.1),
    "per_head": dict(score_mod=lambda s, b, h, qi, ki: s * (h + 1)),
    "gqa_window": dict(gqa=True, mask_mod=lambda b, h, qi, ki: (qi - ki).abs() <= 3),
    "empty_row": dict(mask_mod=lambda b, h, qi, ki: (qi != 3) & (ki < 5)),
    "both": dict(score_mod=lambda s, b, h, qi, ki: s - (qi - ki).abs() * 0.2,
                 mask_mod=lambda b, h, qi, ki: (b == 0) | (qi >= ki)),
}


def _run(lib, fa, score_mod=None, mask_mod=None, gqa=False):
    def t(a):
        return lib.tensor(a) if lib is not minidl else minidl.tensor(a, dtype=minidl.float64)
    k, v = (K[:, :2], V[:, :2]) if gqa else (K, V)
    bm = fa.create_block_mask(mask_mod, B, H, L, S, device="cpu", BLOCK_SIZE=4) \
        if mask_mod else None
    out, aux = fa.flex_attention(t(Q), t(k), t(v), score_mod=score_mod, block_mask=bm,
                                 enable_gqa=gqa, return_aux=fa.AuxRequest(lse=True))
    res = [out.numpy(), aux.lse.numpy()]
    if bm is not None:
        res += [bm.kv_num_blocks.numpy(), bm.full_kv_num_blocks.numpy(), bm.kv_indices.numpy(),
                bm.q_num_blocks.numpy(), bm.to_dense().numpy(), np.array(bm.sparsity())]
    return res


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_lse_and_block_tables_equal_torchs(case):
    torch = pytest.importorskip("torch")
    from torch.nn.attention import flex_attention as tfa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "not compiled" notice
        theirs = _run(torch, tfa, **CASES[case])
    ours = _run(minidl, mfa, **CASES[case])
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
        np.testing.assert_allclose(np.where(np.isinf(a), 0, a), np.where(np.isinf(b), 0, b),
                                   rtol=1e-10, atol=1e-12)


def test_a_row_with_every_key_masked_gives_zeros_and_minus_inf():
    q, k, v = (minidl.tensor(a, dtype=minidl.float64) for a in (Q, K, V))
    bm = mfa.create_block_mask(lambda b, h, qi, ki: qi != 3, None, None, L, S)
    out, aux = mfa.flex_attention(q, k, v, block_mask=bm, return_aux=mfa.AuxRequest(lse=True))
    assert np.all(out.numpy()[:, :, 3] == 0) and np.all(np.isneginf(aux.lse.numpy()[:, :, 3]))
    assert np.all(np.isfinite(out.numpy()))


def test_equals_scaled_dot_product_attention_with_a_causal_mask():
    q, k, v = (minidl.tensor(a[..., :L, :], dtype=minidl.float64) for a in (Q, K, V))
    bm = mfa.create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, L, L)
    ours = mfa.flex_attention(q, k, v, block_mask=bm)
    ref = minidl.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


def _reference(lib, q, k, v, bias, keep):
    """The formula written out: softmax(q k^T / sqrt(E) + bias[h] * (i - j), masked) @ v."""
    scores = q @ k.transpose(-2, -1) / np.sqrt(E)
    rel = lib.tensor((np.arange(L)[:, None] - np.arange(S)[None, :]).astype(np.float64))
    scores = scores + bias.reshape(1, H, 1, 1) * rel
    scores = scores.masked_fill(lib.tensor(~keep), float("-inf"))
    return lib.softmax(scores, dim=-1) @ v


def test_gradients_equal_torch_autograd_of_the_written_out_formula():
    torch = pytest.importorskip("torch")
    bias0 = np.linspace(-0.3, 0.4, H)
    keep = (np.arange(L)[:, None] + 2 >= np.arange(S)[None, :])
    w = np.random.default_rng(2).standard_normal((B, H, L, E))

    def ours():
        q, k, v, bias = (minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
                         for a in (Q, K, V, bias0))
        bm = mfa.create_block_mask(lambda b, h, qi, ki: qi + 2 >= ki, None, None, L, S)
        out = mfa.flex_attention(q, k, v, block_mask=bm,
                                 score_mod=lambda s, b, h, qi, ki: s + bias[h] * (qi - ki))
        (out * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
        return [out.detach().numpy()] + [t.grad.numpy() for t in (q, k, v, bias)]

    def theirs():
        q, k, v, bias = (torch.tensor(a, requires_grad=True) for a in (Q, K, V, bias0))
        out = _reference(torch, q, k, v, bias, keep)
        (out * torch.tensor(w)).sum().backward()
        return [out.detach().numpy()] + [t.grad.numpy() for t in (q, k, v, bias)]
    for a, b in zip(ours(), theirs()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_gradgradcheck_through_score_mod_and_mask():
    rng = np.random.default_rng(3)
    q, k, v = (minidl.tensor(rng.standard_normal((1, 2, 4, 3)), dtype=minidl.float64,
                             requires_grad=True) for _ in range(3))
    bias = minidl.tensor([0.2, -0.1], dtype=minidl.float64, requires_grad=True)
    bm = mfa.create_block_mask(lambda b, h, qi, ki: qi >= ki, 1, 2, 4, 4)

    def f(q, k, v, bias):
        return mfa.flex_attention(q, k, v, block_mask=bm,
                                  score_mod=lambda s, b, h, qi, ki: s + bias[h] * (qi - ki))
    assert gradcheck(f, (q, k, v, bias))
    assert gradgradcheck(f, (q, k, v, bias))


def test_mask_combinators_and_create_mask():
    causal = lambda b, h, qi, ki: qi >= ki  # noqa: E731
    near = lambda b, h, qi, ki: (qi - ki).abs() <= 1  # noqa: E731
    both = mfa.create_mask(mfa.and_masks(causal, near), 1, 1, 4, 4).numpy()[0, 0]
    either = mfa.create_mask(mfa.or_masks(causal, near), 1, 1, 4, 4).numpy()[0, 0]
    i, j = np.indices((4, 4))
    np.testing.assert_array_equal(both, (i >= j) & (abs(i - j) <= 1))
    np.testing.assert_array_equal(either, (i >= j) | (abs(i - j) <= 1))
    assert mfa.create_mask(mfa.noop_mask, 1, 1, 3, 5).numpy().all()
    bm = mfa.create_block_mask(causal, None, None, 300, 260)
    assert bm.shape == (1, 1, 300, 260) and bm.BLOCK_SIZE == (128, 128)
    assert bm.numel() == 300 * 260 and "BlockMask(shape=(1, 1, 300, 260)" in repr(bm)


def test_bad_input_is_refused_by_name():
    q, k, v = (minidl.tensor(a, dtype=minidl.float64) for a in (Q, K, V))
    with pytest.raises(ValueError, match="query has 4 heads and key/value 2; pass enable_gqa"):
        mfa.flex_attention(q, k[:, :2], v[:, :2])
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        mfa.flex_attention(q, k[:, :3], v[:, :3], enable_gqa=True)
    with pytest.raises(ValueError, match="block_mask is for lengths \\(5, 5\\)"):
        mfa.flex_attention(q, k, v, block_mask=mfa.create_block_mask(mfa.noop_mask, 1, 1, 5, 5))
    with pytest.raises(ValueError, match="must be a 4-D Tensor"):
        mfa.flex_attention(q[0], k, v)
    with pytest.raises(TypeError, match="mask_mod must return booleans"):
        mfa.create_block_mask(lambda b, h, qi, ki: qi - ki, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="score_mod must return a Tensor of the scores' shape"):
        mfa.flex_attention(q, k, v, score_mod=lambda s, b, h, qi, ki: s.sum())
    with pytest.warns(FutureWarning, match="return_lse is deprecated"):
        out, lse = mfa.flex_attention(q, k, v, return_lse=True)
    assert lse.shape == (B, H, L)


# ---- low precision, value dtype, BlockMask's printing, adjusting and slicing, key batch of one -------
def _causal(b, h, qi, ki):
    return qi >= ki


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_flex_low_precision_works_in_float32_like_torch(dtype):
    torch = pytest.importorskip("torch")
    from torch.nn.attention import flex_attention as tfa
    tq, tk, tv = (torch.tensor(a).to(getattr(torch, dtype)) for a in (_Q, _K, _V))
    mq, mk, mv = (minidl.tensor(t.float().numpy()).to(getattr(minidl, dtype))
                  for t in (tq, tk, tv))
    seen = []

    def sm(s, b, h, qi, ki):
        return s * 2

    def seen_sm(s, b, h, qi, ki):
        seen.append(str(s.dtype))
        return s * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to, taux = tfa.flex_attention(tq, tk, tv, score_mod=sm,
                                      return_aux=tfa.AuxRequest(lse=True))
    mo, maux = mfa.flex_attention(mq, mk, mv, score_mod=seen_sm,
                                  return_aux=mfa.AuxRequest(lse=True))
    assert str(mo.dtype) == dtype and str(maux.lse.dtype) == "float32"
    assert str(taux.lse.dtype) == "torch.float32" and seen[-1] == "float32"
    np.testing.assert_allclose(maux.lse.numpy(), taux.lse.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mo.float().numpy(), to.float().numpy(), rtol=0, atol=1e-2)


def test_flex_value_dtype_follows_query_and_low_precision_has_grads():
    q = minidl.tensor(_Q)
    out = mfa.flex_attention(q, minidl.tensor(_K), minidl.tensor(_V).half())
    assert out.dtype == minidl.float32                     # torch: value cast to query's dtype
    qh = minidl.tensor(_Q).half().detach().requires_grad_()
    mfa.flex_attention(qh, minidl.tensor(_K).half(), minidl.tensor(_V).half()).sum().backward()
    assert qh.grad is not None and qh.grad.dtype == minidl.float16


def _torch_and_minidl_masks(B=None, H=None, n=256, bs=64):
    pytest.importorskip("torch")
    from torch.nn.attention import flex_attention as tfa
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = tfa.create_block_mask(_causal, B, H, n, n, device="cpu", BLOCK_SIZE=bs)
    return t, mfa.create_block_mask(_causal, B, H, n, n, BLOCK_SIZE=bs)


def _same_tables(t, m):
    for f in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
              "q_num_blocks", "full_q_num_blocks"):
        np.testing.assert_array_equal(getattr(m, f).numpy(), getattr(t, f).numpy(), err_msg=f)
    assert m.shape == tuple(t.shape)


def test_block_mask_to_string_str_and_as_tuple_match_torch():
    t, m = _torch_and_minidl_masks(B=2, H=3)
    assert m.to_string() == t.to_string()
    assert m.to_string(grid_size=(3, 3), limit=2) == t.to_string(grid_size=(3, 3), limit=2)
    assert str(m) == str(t)
    mt, tt = m.as_tuple(), t.as_tuple()
    assert len(mt) == len(tt) == 17 and mt[:2] == tt[:2] and mt[-3:-1] == tt[-3:-1]
    assert m.as_tuple(flatten=False)[0] == (256, 256)


def test_block_mask_adjust_and_slicing_match_torch():
    t, m = _torch_and_minidl_masks(B=2, H=2)
    _same_tables(t._adjust(128, 192), m._adjust(128, 192))
    _same_tables(t._adjust(100, 70), m._adjust(100, 70))
    for idx in [(slice(None), slice(None), slice(None, 2)), 1, (0, 1), (slice(0, 1), -1)]:
        ts, ms = t[idx], m[idx]
        for f in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            np.testing.assert_array_equal(getattr(ms, f).numpy(), getattr(ts, f).numpy())
    # torch: a sliced mask's mask_mod refuses to run
    q = minidl.tensor(_QKV_RNG.standard_normal((2, 2, 256, 8)).astype(np.float32))
    with pytest.raises(RuntimeError, match="sliced BlockMask"):
        mfa.flex_attention(q, q, q, block_mask=m[:, :, :])
    adj = m._adjust(128, 128)
    out = mfa.flex_attention(q[:, :, :128], q[:, :, :128], q[:, :, :128], block_mask=adj)
    ref = mfa.flex_attention(q[:, :, :128], q[:, :, :128], q[:, :, :128],
                             block_mask=mfa.create_block_mask(_causal, 2, 2, 128, 128))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="blocks"):
        m._adjust(512, 256)


def test_flex_masks_on_the_fake_gpu(monkeypatch, host_kernels):
    import _fake_gpu

    from minidl.nn import _flex_attention as impl
    _fake_gpu.install(monkeypatch, host_kernels)
    q = minidl.tensor(_Q[:1, :2]).to("cuda").requires_grad_()
    with _fake_gpu.strict(impl):                   # CuPy refuses np.asarray of device data
        bm = mfa.create_block_mask(_causal, None, None, 8, 8, device="cuda")
        dense = mfa.create_mask(_causal, None, None, 8, 8, device="cuda")
        out = mfa.flex_attention(q, q, q, block_mask=bm)
        out.sum().backward()
    assert bm.kv_num_blocks.device == "cuda" and dense.device == "cuda"
    assert out.device == "cuda" and q.grad.device == "cuda"
    assert bm.to("cpu").kv_num_blocks.device == "cpu"
    with pytest.raises(RuntimeError, match="block_mask on cpu"):      # torch refuses too
        mfa.flex_attention(q, q, q, block_mask=bm.to("cpu"))


def test_flex_key_batch_of_one_broadcasts_with_a_batched_block_mask():
    torch = pytest.importorskip("torch")
    from torch.nn.attention import flex_attention as tfa
    k1, v1 = _K[:1], _V[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tbm = tfa.create_block_mask(_causal, 2, None, 8, 8, device="cpu", BLOCK_SIZE=4)
        want = tfa.flex_attention(torch.tensor(_Q), torch.tensor(k1), torch.tensor(v1),
                                  block_mask=tbm)
    mbm = mfa.create_block_mask(_causal, 2, None, 8, 8, BLOCK_SIZE=4)
    got = mfa.flex_attention(minidl.tensor(_Q), minidl.tensor(k1), minidl.tensor(v1),
                             block_mask=mbm)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="key batch"):                  # torch refuses too
        mfa.flex_attention(minidl.tensor(_Q), minidl.tensor(k1), minidl.tensor(v1))
