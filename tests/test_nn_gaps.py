"""torch.nn names minidl lacked: FractionalMaxPool2d/3d (and the functional forms),
AdaptiveLogSoftmaxWithLoss, CrossMapLRN2d, nn.Buffer, F.multi_head_attention_forward.
float64 gradient checks (without torch) and parity with torch 2.13 on the same inputs and
weights, forward and backward."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck, gradgradcheck

from helpers import distinct, leaf, randn


def _samples(shape, dims, seed=1, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.random(tuple(shape[:2]) + (dims,)).astype(dtype)


# ---- fractional max pooling --------------------------------------------------------------
FRACTIONAL = [
    (2, (2, 3, 9, 7), (2, 3), (4, 3), None),
    (2, (1, 2, 10, 10), 3, None, (0.5, 0.5)),
    (2, (3, 8, 6), 2, (5, 4), None),  # unbatched
    (3, (2, 2, 7, 8, 9), (2, 3, 2), (3, 4, 5), None),
    (3, (1, 2, 9, 6, 7), 2, None, (0.7, 0.5, 0.6)),
]


def _fractional(dims):
    return F.fractional_max_pool2d if dims == 2 else F.fractional_max_pool3d


@pytest.mark.parametrize("dims,shape,k,out,ratio", FRACTIONAL)
def test_fractional_max_pool_gradcheck_and_double_backward(dims, shape, k, out, ratio):
    batch = shape if len(shape) == dims + 2 else (1,) + shape
    s = minidl.tensor(_samples(batch, dims), dtype="float64")
    x = leaf(distinct(shape, spacing=0.1))

    def fn(x):
        return _fractional(dims)(x, k, output_size=out, output_ratio=ratio, _random_samples=s)
    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dims,shape,k,out,ratio", FRACTIONAL)
def test_fractional_max_pool_matches_torch(dims, shape, k, out, ratio, dtype):
    torch = pytest.importorskip("torch")
    batch = shape if len(shape) == dims + 2 else (1,) + shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    s = _samples(batch, dims, dtype=dtype)
    tx = torch.tensor(x, requires_grad=True)
    mx = minidl.tensor(x, requires_grad=True, dtype=dtype)
    tf = getattr(torch.nn.functional, f"fractional_max_pool{dims}d")
    ty, ti = tf(tx, k, output_size=out, output_ratio=ratio, return_indices=True,
                _random_samples=torch.tensor(s))
    my, mi = _fractional(dims)(mx, k, output_size=out, output_ratio=ratio, return_indices=True,
                               _random_samples=minidl.tensor(s, dtype=dtype))
    np.testing.assert_array_equal(my.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(mi.numpy(), ti.numpy())
    assert str(my.dtype) == dtype and mi.dtype == minidl.int64
    g = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(g))
    my.backward(minidl.tensor(g, dtype=dtype))
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-6)
    # the _with_indices form always returns both
    wi = getattr(F, f"fractional_max_pool{dims}d_with_indices")(
        mx, k, output_size=out, output_ratio=ratio,
        _random_samples=minidl.tensor(s, dtype=dtype))
    np.testing.assert_array_equal(wi[1].numpy(), ti.numpy())


def test_fractional_max_pool_nan_and_ties_pick_as_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 1, 7, 7))
    x[0, 0, 1, 1] = x[0, 0, 2, 4] = np.nan
    x[0, 0, 5:, 5:] = 3.0  # a tie: the first maximum wins
    s = np.array([[[0.3, 0.6]]])
    ty, ti = torch.nn.functional.fractional_max_pool2d(
        torch.tensor(x), 3, output_size=3, return_indices=True, _random_samples=torch.tensor(s))
    my, mi = F.fractional_max_pool2d(minidl.tensor(x, dtype="float64"), 3, output_size=3,
                                     return_indices=True,
                                     _random_samples=minidl.tensor(s, dtype="float64"))
    np.testing.assert_array_equal(mi.numpy(), ti.numpy())
    np.testing.assert_array_equal(my.numpy(), ty.numpy())


def test_fractional_max_pool_module_matches_torch():
    torch = pytest.importorskip("torch")
    s = _samples((2, 3), 2, dtype="float32")
    ours = nn.FractionalMaxPool2d((3, 2), output_ratio=(0.5, 0.6), return_indices=True,
                                  _random_samples=minidl.tensor(s))
    theirs = torch.nn.FractionalMaxPool2d((3, 2), output_ratio=(0.5, 0.6), return_indices=True,
                                          _random_samples=torch.tensor(s))
    x = np.random.default_rng(3).standard_normal((2, 3, 10, 9)).astype("float32")
    (my, mi), (ty, ti) = ours(minidl.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_array_equal(my.numpy(), ty.numpy())
    np.testing.assert_array_equal(mi.numpy(), ti.numpy())
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["_random_samples"]
    assert ours.kernel_size == theirs.kernel_size and ours.output_ratio == theirs.output_ratio
    assert F.fractional_max_pool2d(randn((1, 2, 8, 6)), 2, output_ratio=0.5).shape == (1, 2, 4, 3)
    m3 = nn.FractionalMaxPool3d(2, output_size=(2, 3, 2))
    assert m3(randn((2, 3, 5, 6, 4))).shape == (2, 3, 2, 3, 2)  # fresh samples each call


def test_fractional_max_pool_bad_arguments():
    x = randn((2, 3, 7, 6))
    with pytest.raises(RuntimeError, match="pool height 6 too large relative to input height 7"):
        F.fractional_max_pool2d(x, 6, output_size=3)
    with pytest.raises(ValueError, match="either an output_size or an output_ratio"):
        F.fractional_max_pool2d(x, 2)
    with pytest.raises(RuntimeError, match="Expected 3D or 4D tensor"):
        F.fractional_max_pool2d(randn((7, 6)), 2, output_size=3)
    with pytest.raises(RuntimeError, match="same dtype as input"):
        F.fractional_max_pool2d(x, 2, output_size=3,
                                _random_samples=minidl.rand(2, 3, 2, dtype=minidl.float32))
    with pytest.raises(RuntimeError, match=r"_random_samples of shape \(2, 3, 2\)"):
        F.fractional_max_pool2d(x, 2, output_size=3,
                                _random_samples=minidl.rand(2, 3, 3, dtype=minidl.float64))
    with pytest.raises(RuntimeError, match="pool time 6 too large relative to input time 5"):
        F.fractional_max_pool3d(randn((1, 1, 5, 8, 8)), 6, output_size=2)
    with pytest.raises(TypeError, match="floating-point"):
        F.fractional_max_pool2d(minidl.tensor(np.zeros((1, 1, 4, 4), dtype=np.int64)), 2,
                                output_size=2)
    with pytest.raises(ValueError, match="only one of output_size and output_ratio"):
        nn.FractionalMaxPool2d(2, output_size=3, output_ratio=0.5)
    with pytest.raises(ValueError, match="output_ratio must be between 0 and 1"):
        nn.FractionalMaxPool2d(2, output_ratio=1.5)
    with pytest.raises(ValueError, match="FractionalMaxPool3d requires specifying"):
        nn.FractionalMaxPool3d(2)


# ---- AdaptiveLogSoftmaxWithLoss -----------------------------------------------------------
def _asm_pair(torch, dtype, head_bias=True):
    theirs = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 20, [4, 9, 15], div_value=2.0,
                                                 head_bias=head_bias).to(getattr(torch, dtype))
    ours = nn.AdaptiveLogSoftmaxWithLoss(16, 20, [4, 9, 15], div_value=2.0, head_bias=head_bias,
                                         dtype=dtype)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def test_adaptive_log_softmax_with_an_empty_cluster_projection_matches_torch():
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4, 8])  # div_value 4: 8 // 16 = 0
        ours = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4, 8])
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    target = np.array([0, 5, 9, 3])
    xt = torch.tensor(x, requires_grad=True)
    xo = minidl.tensor(x, requires_grad=True)
    out_t = theirs(xt, torch.tensor(target))
    out_o = ours(xo, minidl.tensor(target))
    out_t.loss.backward()
    out_o.loss.backward()
    np.testing.assert_allclose(out_o.output.numpy(), out_t.output.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adaptive_log_softmax_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    ours, theirs = _asm_pair(torch, dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 16)).astype(dtype)
    target = np.array([0, 5, 19, 3, 12, 9, 16])
    tx, mx = torch.tensor(x, requires_grad=True), minidl.tensor(x, requires_grad=True,
                                                                 dtype=dtype)
    t_res, m_res = theirs(tx, torch.tensor(target)), ours(mx, minidl.tensor(target))
    assert type(m_res).__name__ == "_ASMoutput" and m_res._fields == ("output", "loss")
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-10)
    np.testing.assert_allclose(m_res.output.numpy(), t_res.output.detach().numpy(), **tol)
    np.testing.assert_allclose(m_res.loss.item(), t_res.loss.item(), **tol)
    (t_res.loss + t_res.output[2]).backward()
    (m_res.loss + m_res.output[2]).backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), **tol)
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), t_params[name].grad.numpy(), **tol,
                                   err_msg=name)
    np.testing.assert_allclose(ours.log_prob(mx).numpy(), theirs.log_prob(tx).detach().numpy(),
                               **tol)
    # unbatched: a 1-D input and a 0-D target
    t1, m1 = theirs(tx[1], torch.tensor(target[1])), ours(mx[1], minidl.tensor(target[1]))
    assert m1.output.shape == tuple(t1.output.shape) == ()
    np.testing.assert_allclose(m1.loss.item(), t1.loss.item(), **tol)


def test_adaptive_log_softmax_predict_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _asm_pair(torch, "float64")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 16))
    with torch.no_grad():  # tail clusters likely for some rows, shortlist for others
        theirs.head.bias.copy_(torch.tensor([0.0] * 4 + [2.0, 1.0, 0.5]))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    t_pred = theirs.predict(torch.tensor(x)).numpy()
    assert (t_pred >= 4).any() and (t_pred < 4).any()
    np.testing.assert_array_equal(ours.predict(minidl.tensor(x, dtype="float64")).numpy(),
                                  t_pred)
    # the all-tail and the all-shortlist batches take other branches
    for rows in (np.nonzero(t_pred >= 4)[0], np.nonzero(t_pred < 4)[0]):
        np.testing.assert_array_equal(
            ours.predict(minidl.tensor(x[rows], dtype="float64")).numpy(),
            theirs.predict(torch.tensor(x[rows])).numpy())


def test_adaptive_log_softmax_gradcheck():
    minidl.manual_seed(0)
    m = nn.AdaptiveLogSoftmaxWithLoss(6, 10, [3, 6], div_value=2.0, dtype="float64")
    target = minidl.tensor([0, 4, 9, 2, 7])
    x = randn((5, 6))
    assert gradcheck(lambda x: m(x, target).output, [x])
    assert gradgradcheck(lambda x: m(x, target).loss, [x])
    assert gradcheck(lambda x: m.log_prob(x), [randn((3, 6), seed=2)])
    lp = m.log_prob(x)
    np.testing.assert_allclose(np.exp(lp.numpy()).sum(1), 1.0, rtol=1e-12)


def test_adaptive_log_softmax_bad_input():
    with pytest.raises(ValueError, match="cutoffs should be a sequence of unique"):
        nn.AdaptiveLogSoftmaxWithLoss(8, 10, [5, 3])
    with pytest.raises(ValueError, match="larger than 0"):
        nn.AdaptiveLogSoftmaxWithLoss(8, 10, [])
    m = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3])
    with pytest.raises(RuntimeError, match=r"Target values should be in \[0, 9\]"):
        m(minidl.randn(2, 8), minidl.tensor([1, 10]))
    with pytest.raises(RuntimeError, match="same size in the batch dimension"):
        m(minidl.randn(3, 8), minidl.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="multi-target not supported"):
        m(minidl.randn(3, 8), minidl.tensor([[1, 2]]))


# ---- CrossMapLRN2d ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("channels", [1, 3, 7])
def test_cross_map_lrn2d_forward_matches_torch(size, channels):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(size).standard_normal((2, channels, 3, 4))
    ours, theirs = nn.CrossMapLRN2d(size, 0.3, 0.75, 1.5), torch.nn.CrossMapLRN2d(size, 0.3, 0.75,
                                                                                  1.5)
    np.testing.assert_allclose(ours(minidl.tensor(x, dtype="float64")).numpy(),
                               theirs(torch.tensor(x)).numpy(), rtol=1e-12)
    x32 = x.astype("float32")
    y32 = ours(minidl.tensor(x32))
    assert y32.dtype == minidl.float32
    np.testing.assert_allclose(y32.numpy(), theirs(torch.tensor(x32)).numpy(), rtol=1e-5)
    assert repr(ours) == repr(theirs)


def test_cross_map_lrn2d_backward_is_its_forwards_gradient():
    # torch's hand-written backward is not the gradient of its forward (a window off by
    # one channel, and channel 0 dropped); here backward is the forward's exact gradient,
    # checked against torch's autograd of torch's own forward
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 3))
    g = np.random.default_rng(1).standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    y = torch.nn.CrossMapLRN2d(3, 0.3, 0.75, 1.5)(tx)
    pre = int((3 - 1) / 2 + 1)
    sums = []
    for c in range(6):
        chans = set(range(max(0, c - pre + 1), min(5, c + pre - 1) + 1)) | {0}
        sums.append(sum(tx[:, j] ** 2 for j in chans))
    ref = tx * (torch.stack(sums, 1) * (0.3 / 3) + 1.5) ** -0.75
    np.testing.assert_allclose(ref.detach().numpy(), y.detach().numpy(), rtol=1e-12)
    (t_grad,) = torch.autograd.grad(ref, tx, torch.tensor(g))
    mx = minidl.tensor(x, requires_grad=True, dtype="float64")
    nn.CrossMapLRN2d(3, 0.3, 0.75, 1.5)(mx).backward(minidl.tensor(g, dtype="float64"))
    np.testing.assert_allclose(mx.grad.numpy(), t_grad.numpy(), rtol=1e-10)


def test_cross_map_lrn2d_gradcheck_and_bad_input():
    m = nn.CrossMapLRN2d(3, 0.5, 0.75, 1.0)
    x = randn((2, 5, 2, 3))
    assert gradcheck(m, [x])
    assert gradgradcheck(m, [x])
    with pytest.raises(ValueError, match="Expected input to be 4D, got 3D"):
        m(randn((5, 2, 3)))


# ---- nn.Buffer ----------------------------------------------------------------------------
def test_buffer_assignment_registers_a_buffer():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.mean = nn.Buffer(minidl.ones(3))
            self.cache = nn.Buffer(minidl.zeros(2), persistent=False)

    m = M()
    assert [n for n, _ in m.named_buffers()] == ["mean", "cache"]
    assert list(m.state_dict()) == ["mean", "lin.weight", "lin.bias"]
    assert isinstance(m.mean, nn.Buffer) and not isinstance(minidl.ones(2), nn.Buffer)
    assert isinstance(m.mean, minidl.Tensor) and not m.mean.requires_grad
    m.mean = minidl.full((3,), 2.0)  # a plain Tensor keeps the buffer (and its persistence)
    m.cache = minidl.ones(2)
    assert list(m.state_dict()) == ["mean", "lin.weight", "lin.bias"]
    np.testing.assert_array_equal(m.state_dict()["mean"].numpy(), [2.0, 2.0, 2.0])
    m.to(dtype=minidl.float64)
    assert m.mean.dtype == minidl.float64 and m.cache.dtype == minidl.float64
    src = minidl.ones(2, requires_grad=True)
    b = nn.Buffer(src)
    assert b.requires_grad and b.grad_fn is None and b.persistent
    assert nn.Buffer().shape == (0,)
    with pytest.raises(TypeError):
        m.lin.weight = nn.Buffer(minidl.ones(2, 2))  # a parameter's name takes Parameters


def test_buffer_matches_torch_state_dict_keys():
    torch = pytest.importorskip("torch")

    def build(ns):
        m = ns.nn.Module()
        m.a = ns.nn.Buffer(ns.ones(2))
        m.b = ns.nn.Buffer(ns.ones(2), persistent=False)
        m.c = ns.ones(2)  # a plain tensor attribute is no buffer
        m.lin = ns.nn.Linear(2, 2)
        m.d = ns.nn.Buffer(ns.zeros(1))
        return m
    ours, theirs = build(minidl), build(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]


# ---- F.multi_head_attention_forward -------------------------------------------------------
def _mha_args(ns, mha, training=False, **kw):
    args = dict(embed_dim_to_check=mha.embed_dim, num_heads=mha.num_heads,
                in_proj_weight=mha.in_proj_weight, in_proj_bias=mha.in_proj_bias,
                bias_k=mha.bias_k, bias_v=mha.bias_v, add_zero_attn=mha.add_zero_attn,
                dropout_p=mha.dropout, out_proj_weight=mha.out_proj.weight,
                out_proj_bias=mha.out_proj.bias, training=training)
    if not mha._qkv_same_embed_dim:
        args.update(use_separate_proj_weight=True, q_proj_weight=mha.q_proj_weight,
                    k_proj_weight=mha.k_proj_weight, v_proj_weight=mha.v_proj_weight)
    args.update(kw)
    return args


MHA_CASES = [
    (dict(), dict()),
    (dict(add_bias_kv=True, add_zero_attn=True), dict(need_weights=True)),
    (dict(kdim=5, vdim=3), dict(need_weights=False)),
    (dict(), dict(need_weights=True, average_attn_weights=False, attn_mask="float")),
    (dict(), dict(need_weights=False, key_padding_mask="bool")),
    (dict(bias=False), dict(need_weights=False, attn_mask="causal", is_causal=True)),
    (dict(), dict(static=True, need_weights=True)),
]


@pytest.mark.parametrize("ctor,call", MHA_CASES)
def test_multi_head_attention_forward_matches_torch(ctor, call):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    E, H, L, S, N = 8, 2, 4, 5, 3
    theirs = torch.nn.MultiheadAttention(E, H, dtype=torch.float64, **ctor)
    ours = nn.MultiheadAttention(E, H, dtype="float64", **ctor)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    kd, vd = ctor.get("kdim", E), ctor.get("vdim", E)
    arrays = [rng.standard_normal((L, N, E)), rng.standard_normal((S, N, kd)),
              rng.standard_normal((S, N, vd))]
    call = dict(call)
    masks = {}
    mask_kind = call.pop("attn_mask", None)
    if mask_kind == "float":
        masks["attn_mask"] = rng.standard_normal((L, S))
    elif mask_kind == "causal":
        arrays[1], arrays[2] = arrays[0].copy(), arrays[0].copy()
        masks["attn_mask"] = np.triu(np.full((L, L), -np.inf), 1)
    if call.pop("key_padding_mask", None):
        masks["key_padding_mask"] = np.array([[False] * (S - 1) + [True]] * N)
    if call.pop("static", False):
        masks["static_k"] = rng.standard_normal((N * H, 6, E // H))
        masks["static_v"] = rng.standard_normal((N * H, 6, E // H))
    t_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    m_in = [minidl.tensor(a, requires_grad=True, dtype="float64") for a in arrays]
    t_kw = {k: torch.tensor(v) for k, v in masks.items()}
    m_kw = {k: minidl.tensor(v, dtype=None if v.dtype == bool else "float64")
            for k, v in masks.items()}
    t_out, t_w = torch.nn.functional.multi_head_attention_forward(
        *t_in, **_mha_args(torch, theirs, **call, **t_kw))
    m_out, m_w = F.multi_head_attention_forward(*m_in, **_mha_args(minidl, ours, **call, **m_kw))
    np.testing.assert_allclose(m_out.numpy(), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert (m_w is None) == (t_w is None)
    if t_w is not None:
        np.testing.assert_allclose(m_w.numpy(), t_w.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(g))
    m_out.backward(minidl.tensor(g, dtype="float64"))
    for k, (m, t) in enumerate(zip(m_in, t_in)):
        if m.grad is None:  # static_k/static_v replace the key and value
            assert t.grad is None or not t.grad.numpy().any(), k
            continue
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=f"input {k}")
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        tg = t_params[name].grad
        if tg is None:
            assert p.grad is None or not p.grad.numpy().any(), name
        else:
            np.testing.assert_allclose(p.grad.numpy(), tg.numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=name)


def test_multi_head_attention_forward_is_the_modules_computation():
    minidl.manual_seed(0)
    mha = nn.MultiheadAttention(6, 3, dtype="float64")
    q, k, v = randn((4, 2, 6)), randn((5, 2, 6), seed=1), randn((5, 2, 6), seed=2)
    out, w = mha(q, k, v)
    f_out, f_w = F.multi_head_attention_forward(q, k, v, **_mha_args(minidl, mha))
    np.testing.assert_array_equal(out.numpy(), f_out.numpy())
    np.testing.assert_array_equal(w.numpy(), f_w.numpy())

    def fn(q, k, v):
        return F.multi_head_attention_forward(q, k, v, **_mha_args(minidl, mha))[0]
    assert gradcheck(fn, [q, k, v])
    assert gradgradcheck(fn, [q, k, v])


def test_multi_head_attention_forward_bad_arguments():
    mha = nn.MultiheadAttention(6, 3)
    q = minidl.randn(4, 2, 6)
    with pytest.raises(ValueError, match="was expecting embedding dimension of 8, but got 6"):
        F.multi_head_attention_forward(q, q, q, **_mha_args(minidl, mha, embed_dim_to_check=8))
    with pytest.raises(ValueError, match="bias cannot be added to static key"):
        F.multi_head_attention_forward(
            q, q, q, **_mha_args(minidl, mha, bias_k=minidl.zeros(1, 1, 6),
                                 bias_v=minidl.zeros(1, 1, 6), static_k=minidl.zeros(6, 4, 2)))
    with pytest.raises(ValueError, match=r"expecting static_k of shape \(6, S, 2\)"):
        F.multi_head_attention_forward(q, q, q,
                                       **_mha_args(minidl, mha, static_k=minidl.zeros(5, 4, 2)))
    with pytest.raises(ValueError, match="in_proj_weight is None"):
        F.multi_head_attention_forward(q, q, q, **_mha_args(minidl, mha, in_proj_weight=None))


# ---- nn.init's deprecated names, nn.utils' submodules --------------------------------------
INIT_ALIASES = [("uniform", (-1.0, 2.0)), ("normal", (0.5, 2.0)), ("constant", (0.3,)),
                ("eye", ()), ("dirac", ()), ("xavier_uniform", ()), ("xavier_normal", ()),
                ("kaiming_uniform", ()), ("kaiming_normal", ()), ("orthogonal", ()),
                ("sparse", (0.5,))]


@pytest.mark.parametrize("name,args", INIT_ALIASES)
def test_init_deprecated_names_warn_and_call_the_underscore_form(name, args):
    shape = (3, 4, 3) if name == "dirac" else (4, 6)
    a, b = minidl.zeros(*shape), minidl.zeros(*shape)
    minidl.manual_seed(5)
    getattr(nn.init, name + "_")(a, *args)
    minidl.manual_seed(5)
    with pytest.warns(FutureWarning, match=rf"`nn.init.{name}` is now deprecated in favor of "
                                           rf"`nn.init.{name}_`"):
        out = getattr(nn.init, name)(b, *args)
    assert out is b
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert getattr(nn.init, name).__name__ == name


def test_init_deprecated_names_are_torchs():
    torch = pytest.importorskip("torch")
    for name, _ in INIT_ALIASES:
        assert callable(getattr(torch.nn.init, name)) and callable(getattr(nn.init, name))
    with pytest.warns(FutureWarning) as ours:
        nn.init.constant(minidl.zeros(2), 1.0)
    with pytest.warns(FutureWarning) as theirs:
        torch.nn.init.constant(torch.zeros(2), 1.0)
    assert str(ours[0].message) == str(theirs[0].message)


def test_nn_utils_submodules_import_as_torchs():
    from minidl.nn.utils.clip_grad import clip_grad_norm_, clip_grad_value_, get_total_norm
    from minidl.nn.utils.convert_parameters import parameters_to_vector, vector_to_parameters
    from minidl.nn.utils.fusion import (
        fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval, fuse_linear_bn_weights,
    )
    from minidl.nn.utils.init import skip_init
    from minidl.nn.utils.memory_format import (
        convert_conv2d_weight_memory_format, convert_conv3d_weight_memory_format,
    )
    u = nn.utils
    assert clip_grad_norm_ is u.clip_grad_norm_ and clip_grad_value_ is u.clip_grad_value_
    assert get_total_norm is u.get_total_norm and skip_init is u.skip_init
    assert parameters_to_vector is u.parameters_to_vector
    assert vector_to_parameters is u.vector_to_parameters
    assert fuse_conv_bn_eval is u.fuse_conv_bn_eval and fuse_linear_bn_eval is u.fuse_linear_bn_eval
    assert fuse_conv_bn_weights is u.fuse_conv_bn_weights
    assert fuse_linear_bn_weights is u.fuse_linear_bn_weights
    assert convert_conv2d_weight_memory_format is u.convert_conv2d_weight_memory_format
    assert convert_conv3d_weight_memory_format is u.convert_conv3d_weight_memory_format


def test_convert_conv_weight_memory_format():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(),
                          nn.Sequential(nn.ConvTranspose2d(4, 2, 2), nn.Conv3d(1, 2, 2)))
    before = [p.numpy().copy() for p in model.parameters()]
    out = nn.utils.convert_conv2d_weight_memory_format(model, minidl.channels_last)
    assert out is model
    assert model[0].weight.is_contiguous(memory_format=minidl.channels_last)
    assert model[2][0].weight.is_contiguous(memory_format=minidl.channels_last)
    assert model[2][1].weight.is_contiguous()  # a 3-D convolution is not converted
    nn.utils.convert_conv3d_weight_memory_format(model, minidl.channels_last_3d)
    assert model[2][1].weight.is_contiguous(memory_format=minidl.channels_last_3d)
    for a, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, p.numpy())
        assert isinstance(p, nn.Parameter)
    x = minidl.randn(1, 3, 6, 6)
    assert model[0](x).shape == (1, 4, 4, 4)


# ---- LinearCrossEntropyLoss and F.linear_cross_entropy (torch 2.13) ------------------------
LCE = [(dict(), (), False, True), (dict(label_smoothing=0.1, ignore_index=2), (), True, True),
       (dict(reduction="none"), (3,), True, True), (dict(reduction="sum"), (), True, False),
       (dict(weight=True), (2,), False, True),
       (dict(options="default"), (), True, True),
       (dict(probabilities=True, label_smoothing=0.1), (2,), True, True)]


@pytest.mark.parametrize("kw,out_features,bias,batched", LCE)
def test_linear_cross_entropy_loss_matches_torch(kw, out_features, bias, batched):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    t_kw, m_kw = dict(kw), dict(kw)
    if kw.get("weight"):
        w = (rng.random(5) + 0.5).astype("float32")
        t_kw["weight"], m_kw["weight"] = torch.tensor(w), minidl.tensor(w)
    if kw.get("options"):
        t_kw["options"] = torch.nn.LinearCrossEntropyOptions()
        m_kw["options"] = nn.LinearCrossEntropyOptions()
    probabilities = t_kw.pop("probabilities", False)
    m_kw.pop("probabilities", None)
    theirs = torch.nn.LinearCrossEntropyLoss(6, 5, out_features=out_features, bias=bias, **t_kw)
    ours = nn.LinearCrossEntropyLoss(6, 5, out_features=out_features, bias=bias, **m_kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((4, 6) if batched else (6,)).astype("float32")
    target = rng.integers(0, 5, ((4,) + out_features) if batched else ())
    if probabilities:
        target = rng.random((4, 5) + out_features).astype("float32")
        target /= target.sum(1, keepdims=True)
    tx, mx = torch.tensor(x, requires_grad=True), minidl.tensor(x, requires_grad=True)
    t_loss, m_loss = theirs(tx, torch.tensor(target)), ours(mx, minidl.tensor(target))
    assert tuple(m_loss.shape) == tuple(t_loss.shape)
    np.testing.assert_allclose(m_loss.numpy(), t_loss.detach().numpy(), rtol=1e-5, atol=1e-6)
    t_loss.sum().backward()
    m_loss.sum().backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.linear.weight.grad.numpy(),
                               theirs.linear.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    if not kw.get("options"):
        assert repr(ours) == repr(theirs)


def test_linear_cross_entropy_gradcheck_and_bad_input():
    w = randn((5, 2, 4), seed=1)
    target = minidl.tensor([[0, 4], [2, 2], [1, 3]])
    assert gradcheck(lambda x, w: F.linear_cross_entropy(x, w, target, label_smoothing=0.2),
                     [randn((3, 4)), w])
    assert gradgradcheck(lambda x: F.linear_cross_entropy(x, w.detach(), target), [randn((3, 4))])
    with pytest.raises(ValueError, match="requires batched input"):
        F.linear_cross_entropy(randn((4,)), w, minidl.tensor(0))
    with pytest.raises(ValueError, match="expected equal input and linear_weight last"):
        F.linear_cross_entropy(randn((3, 5)), w, target)
    with pytest.raises(ValueError, match="ignore_index cannot be specified"):
        F.linear_cross_entropy(randn((3, 4)), w, minidl.rand(3, 5, 2, dtype=minidl.float64),
                               ignore_index=1)
    with pytest.raises(ValueError, match="invalid acc_policy"):
        nn.LinearCrossEntropyOptions(acc_policy="fast")
    with pytest.raises(RuntimeError, match="expected label_smoothing to be in range"):
        nn.LinearCrossEntropyLoss(4, 3, label_smoothing=2.0)


# ---- cross_entropy / nll_loss: K-dim, unbatched, class probabilities -----------------------
def _ce_case(kind, rng):
    if kind == "kdim":
        t = rng.integers(0, 3, (2, 4, 5))
        t[0, 0, 0] = -100
        return rng.standard_normal((2, 3, 4, 5)), t
    if kind == "kdim1":
        return rng.standard_normal((3, 4, 6)), rng.integers(0, 4, (3, 6))
    if kind == "unbatched":
        return rng.standard_normal(5), np.array(2)
    if kind == "probabilities":
        p = rng.random((2, 3, 4))
        return rng.standard_normal((2, 3, 4)), p / p.sum(1, keepdims=True)
    p = rng.random(4)
    return rng.standard_normal(4), p / p.sum()  # unbatched probabilities


CE_FORMS = [(kind, reduction, options, fn)
            for kind in ("kdim", "kdim1", "unbatched", "probabilities", "unbatched_probabilities")
            for reduction in ("mean", "sum", "none")
            for options in (dict(), dict(weight=True, label_smoothing=0.2))
            for fn in ("cross_entropy", "nll_loss", "module")
            # nll_loss takes class indices and no label smoothing (torch's too)
            if not (fn == "nll_loss" and ("probabilities" in kind or options))]


@pytest.mark.parametrize("kind,reduction,options,fn", CE_FORMS)
def test_cross_entropy_and_nll_loss_forms_match_torch(kind, reduction, options, fn):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, target = _ce_case(kind, rng)
    classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    kw = {"reduction": reduction}
    t_kw, m_kw = dict(kw), dict(kw)
    if options.get("weight"):
        w = rng.random(classes) + 0.5
        t_kw["weight"], m_kw["weight"] = torch.tensor(w), minidl.tensor(w, dtype="float64")
    if options.get("label_smoothing"):
        t_kw["label_smoothing"] = m_kw["label_smoothing"] = options["label_smoothing"]
    tx = torch.tensor(x, requires_grad=True)
    mx = minidl.tensor(x, requires_grad=True, dtype="float64")
    tt = torch.tensor(target)
    mt = minidl.tensor(target, dtype="float64" if target.dtype.kind == "f" else None)
    if fn == "module":
        t_out = torch.nn.CrossEntropyLoss(**t_kw)(tx, tt)
        m_out = nn.CrossEntropyLoss(**m_kw)(mx, mt)
    else:
        t_out = getattr(torch.nn.functional, fn)(tx, tt, **t_kw)
        m_out = getattr(F, fn)(mx, mt, **m_kw)
    assert tuple(m_out.shape) == tuple(t_out.shape)
    np.testing.assert_allclose(m_out.numpy(), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(g))
    m_out.backward(minidl.tensor(g, dtype="float64"))
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_nll_loss2d_and_kdim_gradchecks():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((2, 3, 2, 2)), rng.integers(0, 3, (2, 2, 2))
    with pytest.warns(FutureWarning, match="`NLLLoss2d` has been deprecated"):
        ours = nn.NLLLoss2d(reduction="sum")(minidl.tensor(x, dtype="float64"), minidl.tensor(t))
    with pytest.warns(FutureWarning, match="`NLLLoss2d` has been deprecated"):
        theirs = torch.nn.NLLLoss2d(reduction="sum")(torch.tensor(x), torch.tensor(t))
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-12)
    target = minidl.tensor(t)
    probs = minidl.tensor(rng.dirichlet(np.ones(3), (2, 2, 2)).transpose(0, 3, 1, 2),
                          dtype="float64")
    assert gradcheck(lambda x: F.cross_entropy(x, target, label_smoothing=0.1), [leaf(x)])
    assert gradgradcheck(lambda x: F.cross_entropy(x, target), [leaf(x)])
    assert gradcheck(lambda x, p: F.cross_entropy(x, p), [leaf(x), leaf(probs.numpy())])
    assert gradgradcheck(lambda x: F.cross_entropy(x, probs, reduction="sum"), [leaf(x)])


def test_cross_entropy_kdim_bad_input():
    with pytest.raises(ValueError, match=r"take a target of shape \(2, 4\), got \(2, 5\)"):
        F.cross_entropy(randn((2, 3, 4)), minidl.tensor(np.zeros((2, 5), dtype=np.int64)))
    with pytest.raises(ValueError, match="unbatched logits of shape"):
        F.cross_entropy(randn((3,)), minidl.tensor([1]))
    with pytest.raises(TypeError, match="must be floating point"):
        F.cross_entropy(randn((2, 3)), minidl.tensor(np.zeros((2, 3), dtype=np.int64)))
    z = minidl.randn(2, 3, 4, dtype=minidl.complex64)
    with pytest.raises(TypeError, match="cross_entropy: not implemented for complex"):
        F.cross_entropy(z, minidl.rand(2, 3, 4))


# ---- nn.grad, nn.parameter, F.conv_tbc --------------------------------------------------
CONV_GRADS = [(1, (2, 4, 9), (6, 2, 3), dict(stride=2, padding=1, groups=2)),
              (2, (2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, dilation=1, groups=2)),
              (2, (1, 3, 6, 6), (2, 3, 3, 3), dict(dilation=2)),
              (3, (1, 2, 5, 4, 4), (3, 2, 2, 2, 2), dict(padding=1))]


@pytest.mark.parametrize("dims,x_shape,w_shape,kw", CONV_GRADS)
def test_nn_grad_conv_input_and_weight_match_torch(dims, x_shape, w_shape, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(dims)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    conv = getattr(torch.nn.functional, f"conv{dims}d")
    out = conv(torch.tensor(x), torch.tensor(w), **kw)
    go = rng.standard_normal(tuple(out.shape))
    t_in = getattr(torch.nn.grad, f"conv{dims}d_input")(x_shape, torch.tensor(w),
                                                         torch.tensor(go), **kw)
    t_w = getattr(torch.nn.grad, f"conv{dims}d_weight")(torch.tensor(x), w_shape,
                                                         torch.tensor(go), **kw)
    m = lambda a: minidl.tensor(a, dtype="float64")  # noqa: E731
    m_in = getattr(F.grad, f"conv{dims}d_input")(x_shape, m(w), m(go), **kw)
    m_w = getattr(nn.grad, f"conv{dims}d_weight")(m(x), w_shape, m(go), **kw)
    np.testing.assert_allclose(m_in.numpy(), t_in.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m_w.numpy(), t_w.numpy(), rtol=1e-10, atol=1e-12)


def test_nn_grad_results_are_differentiable():
    go = randn((1, 2, 4, 4), seed=3)
    assert gradcheck(lambda w, g: nn.grad.conv2d_input((1, 3, 6, 6), w, g), [randn((2, 3, 3, 3)),
                                                                            go])
    assert gradcheck(lambda x: nn.grad.conv2d_weight(x, (2, 3, 3, 3), go.detach()),
                     [randn((1, 3, 6, 6), seed=4)])


def test_nn_parameter_module_and_conv_tbc():
    from minidl.nn.parameter import Buffer, Parameter, UninitializedParameter

    assert Parameter is nn.Parameter and Buffer is nn.Buffer
    assert UninitializedParameter is nn.UninitializedParameter
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 2, 3)), rng.standard_normal((3, 3, 4)), rng.standard_normal(4)
    t = torch.conv_tbc(torch.tensor(x), torch.tensor(w), torch.tensor(b), 1)
    m = F.conv_tbc(*(minidl.tensor(a, dtype="float64") for a in (x, w, b)), 1)
    np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-10)
    assert F.native_channel_shuffle is F.channel_shuffle


# ---- AdaptiveLogSoftmaxWithLoss.log_prob / predict name an input of the wrong rank ------------

def test_adaptive_log_softmax_log_prob_and_predict_name_a_wrong_rank():
    m = nn.AdaptiveLogSoftmaxWithLoss(6, 10, [3, 6])
    with pytest.raises(ValueError, match=r"log_prob: expected a 2-D input .*\(2, 3, 6\)"):
        m.log_prob(minidl.randn(2, 3, 6))  # was numpy's "index 3 is out of bounds"
    with pytest.raises(ValueError, match="predict: expected a 2-D input"):
        m.predict(minidl.randn(6))
    assert m.log_prob(minidl.randn(4, 6)).shape == (4, 10)
    assert m.predict(minidl.randn(4, 6)).shape == (4,)
