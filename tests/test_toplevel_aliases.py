"""torch's top-level names minidl lacked: constants, the functional forms at top level (with
torch's own signatures: torch.dropout(input, p, train), torch.embedding(weight, indices),
int reductions), the in-place functions, window functions, grad/autocast queries, creation
helpers and the Tensor methods. Each is compared with torch 2.13 on the same inputs, values
and gradients; the alias lists name the functions added here (not torch's whole dir())."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

from helpers import randn

R = np.random.default_rng(0)


def _a(*shape, positive=False):
    a = R.standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


def _run(ns, fn, arrays, grad):
    ts = []
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            t = (ns.tensor(a, dtype=ns.float64) if ns is minidl else ns.tensor(a))
            ts.append(t.requires_grad_(grad))
        elif isinstance(a, np.ndarray):
            ts.append(ns.tensor(a))
        else:
            ts.append(a)
    return fn(ns, *ts), ts


POS_WEIGHT = _a(4, positive=True)


def _const(ns, a):
    """A float64 tensor that needs no gradient (torch refuses one for pos_weight)."""
    return ns.tensor(a, dtype=ns.float64)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


# (name, fn(ns, *inputs), inputs, differentiable)
CASES = [
    ("conv1d", lambda ns, x, w, b: ns.conv1d(x, w, b, 2, 1), [_a(2, 3, 9), _a(4, 3, 3), _a(4)],
     True),
    ("conv2d", lambda ns, x, w: ns.conv2d(x, w, None, 1, 1, 1, 1), [_a(1, 2, 5, 5),
                                                                    _a(3, 2, 3, 3)], True),
    ("conv3d", lambda ns, x, w: ns.conv3d(x, w), [_a(1, 2, 4, 4, 4), _a(3, 2, 2, 2, 2)], True),
    ("conv_transpose1d", lambda ns, x, w: ns.conv_transpose1d(x, w, None, 2, 1, 1),
     [_a(1, 2, 5), _a(2, 3, 3)], True),
    ("conv_transpose2d", lambda ns, x, w: ns.conv_transpose2d(x, w, None, 2),
     [_a(1, 2, 3, 3), _a(2, 3, 2, 2)], True),
    ("conv_transpose3d", lambda ns, x, w: ns.conv_transpose3d(x, w),
     [_a(1, 2, 2, 2, 2), _a(2, 1, 2, 2, 2)], True),
    ("convolution", lambda ns, x, w: ns.convolution(x, w, None, [1, 1], [1, 1], [1, 1], False,
                                                    [0, 0], 1), [_a(1, 2, 4, 4), _a(3, 2, 3, 3)],
     True),
    ("convolution_t", lambda ns, x, w: ns.convolution(x, w, None, [2], [0], [1], True, [1], 1),
     [_a(1, 2, 4), _a(2, 3, 3)], True),
    ("dropout_eval", lambda ns, x: ns.dropout(x, 0.5, False), [_a(3, 4)], True),
    ("alpha_dropout_eval", lambda ns, x: ns.alpha_dropout(x, 0.5, False), [_a(3, 4)], True),
    ("feature_alpha_dropout_eval", lambda ns, x: ns.feature_alpha_dropout(x, 0.5, False),
     [_a(2, 3, 4)], True),
    ("layer_norm", lambda ns, x, w, b: ns.layer_norm(x, [4], w, b, 1e-5), [_a(3, 4), _a(4),
                                                                          _a(4)], True),
    ("group_norm", lambda ns, x, w, b: ns.group_norm(x, 2, w, b), [_a(2, 4, 3), _a(4), _a(4)],
     True),
    ("instance_norm", lambda ns, x, w, b: ns.instance_norm(x, w, b, None, None, True, 0.1, 1e-5,
                                                          False), [_a(2, 3, 5), _a(3), _a(3)],
     True),
    ("batch_norm_train", lambda ns, x, w, b: ns.batch_norm(x, w, b, None, None, True, 0.1, 1e-5,
                                                          False), [_a(4, 3), _a(3), _a(3)], True),
    ("batch_norm_eval", lambda ns, x, m, v: ns.batch_norm(x, None, None, m, v, False, 0.1, 1e-5,
                                                         False),
     [_a(4, 3), _a(3), _a(3, positive=True)], False),
    ("rms_norm", lambda ns, x, w: ns.rms_norm(x, [4], w), [_a(3, 4), _a(4)], True),
    ("embedding", lambda ns, w, i: ns.embedding(w, i), [_a(5, 3), np.array([[0, 4], [2, 2]])],
     True),
    ("embedding_padding", lambda ns, w, i: ns.embedding(w, i, 2), [_a(5, 3),
                                                                 np.array([0, 2, 2, 4])], True),
    ("pixel_shuffle", lambda ns, x: ns.pixel_shuffle(x, 2), [_a(1, 8, 2, 3)], True),
    ("pixel_unshuffle", lambda ns, x: ns.pixel_unshuffle(x, 2), [_a(1, 2, 4, 6)], True),
    ("channel_shuffle", lambda ns, x: ns.channel_shuffle(x, 2), [_a(1, 4, 2, 2)], True),
    # torch has no derivative for native_channel_shuffle (minidl's is channel_shuffle's)
    ("native_channel_shuffle", lambda ns, x: ns.native_channel_shuffle(x, 2), [_a(1, 4, 2, 2)],
     False),
    ("prelu", lambda ns, x, w: ns.prelu(x, w), [_a(2, 3, 4), _a(3)], True),
    ("rrelu_eval", lambda ns, x: ns.rrelu(x), [_a(3, 4)], True),
    ("selu", lambda ns, x: ns.selu(x), [_a(3, 4)], True),
    ("celu", lambda ns, x: ns.celu(x, 0.7), [_a(3, 4)], True),
    ("hardshrink", lambda ns, x: ns.hardshrink(x, 0.3), [_a(3, 4)], True),
    ("threshold", lambda ns, x: ns.threshold(x, 0.1, -2.0), [_a(3, 4)], True),
    ("bilinear", lambda ns, a, b, w, c: ns.bilinear(a, b, w, c), [_a(3, 2), _a(3, 4),
                                                                  _a(5, 2, 4), _a(5)], True),
    ("cosine_similarity", lambda ns, a, b: ns.cosine_similarity(a, b, 1), [_a(3, 4), _a(3, 4)],
     True),
    ("pairwise_distance", lambda ns, a, b: ns.pairwise_distance(a, b, 3.0), [_a(3, 4), _a(3, 4)],
     True),
    ("kl_div", lambda ns, a, b: ns.kl_div(a, b), [_a(3, 4), _a(3, 4, positive=True)], True),
    ("kl_div_mean_log_target", lambda ns, a, b: ns.kl_div(a, b, 1, log_target=True),
     [_a(3, 4), _a(3, 4)], True),
    ("poisson_nll_loss", lambda ns, a, b: ns.poisson_nll_loss(a, b, True, True, 1e-8, 2),
     [_a(3, 4), _a(3, 4, positive=True)], True),
    ("margin_ranking_loss", lambda ns, a, b, t: ns.margin_ranking_loss(a, b, t, 0.1),
     [_a(5), _a(5), np.array([1.0, -1, 1, -1, 1])], True),
    ("hinge_embedding_loss", lambda ns, a, t: ns.hinge_embedding_loss(a, t, 1.0, 1),
     [_a(5), np.array([1.0, -1, 1, -1, 1])], True),
    ("triplet_margin_loss", lambda ns, a, p, n: ns.triplet_margin_loss(a, p, n),
     [_a(3, 4), _a(3, 4), _a(3, 4)], True),
    ("cosine_embedding_loss", lambda ns, a, b, t: ns.cosine_embedding_loss(a, b, t, 0.2, 2),
     [_a(3, 4), _a(3, 4), np.array([1.0, -1, 1])], True),
    ("ctc_loss", lambda ns, lp, tg: ns.ctc_loss(lp.log_softmax(2), tg, [6, 5], [2, 3]),
     [_a(6, 2, 4), np.array([[1, 2, 0], [1, 3, 2]])], True),
    ("ctc_loss_mean", lambda ns, lp, tg: ns.ctc_loss(lp.log_softmax(2), tg, [6, 5], [2, 3], 0, 1),
     [_a(6, 2, 4), np.array([[1, 2, 0], [1, 3, 2]])], True),
    ("bce_with_logits", lambda ns, a, b: ns.binary_cross_entropy_with_logits(
        a, b, None, _const(ns, POS_WEIGHT)), [_a(3, 4), R.random((3, 4))], True),
    ("bce_with_logits_sum", lambda ns, a, b: ns.binary_cross_entropy_with_logits(a, b, None,
                                                                                  None, 2),
     [_a(3, 4), R.random((3, 4))], True),
    ("max_pool1d", lambda ns, x: ns.max_pool1d(x, 3), [_a(2, 3, 10)], True),
    ("max_pool2d", lambda ns, x: ns.max_pool2d(x, 2, [1], 1, 1, True), [_a(1, 2, 5, 5)], True),
    ("max_pool3d", lambda ns, x: ns.max_pool3d(x, 2), [_a(1, 2, 4, 4, 4)], True),
    ("max_pool1d_with_indices", lambda ns, x: ns.max_pool1d_with_indices(x, 2), [_a(1, 2, 6)],
     True),
    ("avg_pool1d", lambda ns, x: ns.avg_pool1d(x, 3, 2, 1, True, False), [_a(2, 3, 10)], True),
    ("adaptive_avg_pool1d", lambda ns, x: ns.adaptive_avg_pool1d(x, 4), [_a(2, 3, 10)], True),
    ("adaptive_max_pool1d", lambda ns, x: ns.adaptive_max_pool1d(x, 3), [_a(2, 3, 10)], True),
    ("grid_sampler", lambda ns, x, g: ns.grid_sampler(x, g, 0, 1, False),
     [_a(1, 2, 4, 5), R.uniform(-1, 1, (1, 3, 3, 2))], True),
    ("grid_sampler_nearest", lambda ns, x, g: ns.grid_sampler(x, g, 1, 0, True),
     [_a(1, 2, 4, 5), R.uniform(-1, 1, (1, 3, 3, 2))], True),
    ("affine_grid_generator", lambda ns, t: ns.affine_grid_generator(t, [2, 1, 3, 4], False),
     [_a(2, 2, 3)], True),
    ("constant_pad_nd", lambda ns, x: ns.constant_pad_nd(x, [1, 2], 0.5), [_a(2, 3)], True),
    ("rsub", lambda ns, a, b: ns.rsub(a, b, alpha=2), [_a(3), _a(3)], True),
    ("rsub_scalar", lambda ns, a: ns.rsub(a, 1.5), [_a(3)], True),
    ("adjoint", lambda ns, a: ns.adjoint(a), [_a(2, 3, 4)], True),
    ("fill", lambda ns, a: ns.fill(a, 2.5), [_a(2, 3)], False),
    ("as_strided", lambda ns, a: ns.as_strided(a, (2, 3), (1, 2), 1), [_a(3, 4)], True),
    ("as_strided_overlap", lambda ns, a: ns.as_strided(a, (3, 3), (1, 1)), [_a(3, 4)], True),
    ("as_strided_of_view", lambda ns, a: ns.as_strided(a[1:], (2, 2), (1, 2)), [_a(3, 4)],
     True),
    ("put", lambda ns, a, s: ns.put(a, ns.tensor([0, -1, 5]), s), [_a(2, 4), _a(3)], True),
    ("put_accumulate", lambda ns, a, s: ns.put(a, ns.tensor([1, 1, 5]), s, True),
     [_a(2, 4), _a(3)], True),
    ("Tensor.hardshrink", lambda ns, a: a.hardshrink(0.2), [_a(3, 4)], True),
    ("Tensor.prelu", lambda ns, a, w: a.prelu(w), [_a(2, 3), _a(3)], True),
    ("Tensor.put", lambda ns, a, s: a.put(ns.tensor([2, 3]), s), [_a(5), _a(2)], True),
]


@pytest.mark.parametrize("name,fn,arrays,grad", CASES, ids=[c[0] for c in CASES])
def test_alias_matches_torch(name, fn, arrays, grad):
    torch = pytest.importorskip("torch")
    t_out, t_in = _run(torch, fn, arrays, grad)
    m_out, m_in = _run(minidl, fn, arrays, grad)
    assert isinstance(t_out, tuple) == isinstance(m_out, tuple), name
    for t, m in zip(t_out if isinstance(t_out, tuple) else (t_out,),
                    m_out if isinstance(m_out, tuple) else (m_out,)):
        assert tuple(m.shape) == tuple(t.shape), (name, m.shape, t.shape)
        np.testing.assert_allclose(m.numpy(), t.detach().numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    if not grad:
        return
    t_y, m_y = _first(t_out), _first(m_out)
    g = R.standard_normal(tuple(t_y.shape))
    t_y.backward(torch.tensor(g))
    m_y.backward(minidl.tensor(g, dtype=minidl.float64))
    for k, (t, m) in enumerate(zip(t_in, m_in)):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            if t.grad is None:
                assert m.grad is None or not m.grad.numpy().any(), (name, k)
                continue
            np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-7, atol=1e-10,
                                       err_msg=f"{name}: grad of input {k}")


GRADCHECKS = [
    ("as_strided", lambda x: minidl.as_strided(x, (2, 3), (1, 2), 1), (3, 4)),
    ("as_strided_overlap", lambda x: minidl.as_strided(x[1:], (3, 2), (1, 1)), (3, 4)),
    ("put", lambda x: x.put(minidl.tensor([0, 3]), x[1:3] * 2), (5,)),
    ("embedding", lambda w: minidl.embedding(w, minidl.tensor([[0, 2], [1, 1]])), (3, 2)),
    ("kl_div", lambda x: minidl.kl_div(x, minidl.tensor([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]],
                                                        dtype=minidl.float64), 1), (2, 3)),
    ("rsub", lambda x: minidl.rsub(x, x * x, alpha=0.5), (4,)),
]


@pytest.mark.parametrize("name,fn,shape", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_float64(name, fn, shape):
    assert gradcheck(fn, [randn(shape)])


def test_as_strided_double_backward():
    from minidl.testing import gradgradcheck

    assert gradgradcheck(lambda x: minidl.as_strided(x, (3, 3), (1, 1)) ** 2, [randn((3, 4))])


# ---- the in-place functions -------------------------------------------------------------------
INPLACE = [("abs_", ()), ("acos_", ()), ("asin_", ()), ("atan_", ()), ("ceil_", ()),
           ("clamp_", (-0.2, 0.3)), ("clamp_max_", (0.1,)), ("clamp_min_", (0.1,)),
           ("clip_", (-0.1, 0.1)), ("cos_", ()), ("cosh_", ()), ("deg2rad_", ()), ("erf_", ()),
           ("erfc_", ()), ("exp2_", ()), ("exp_", ()), ("expm1_", ()), ("fill_", (0.25,)),
           ("fix_", ()), ("floor_", ()), ("frac_", ()), ("neg_", ()), ("negative_", ()),
           ("rad2deg_", ()), ("reciprocal_", ()), ("round_", ()), ("sigmoid_", ()), ("sin_", ()),
           ("sinc_", ()), ("sinh_", ()), ("square_", ()), ("tan_", ()), ("tanh_", ()),
           ("trunc_", ()), ("zero_", ()), ("relu_", ()), ("selu_", ()), ("celu_", (0.5,)),
           ("threshold_", (0.1, 9.0)), ("nan_to_num_", ()), ("logit_", (0.1,)),
           ("xlogy_", (2.0,))]
POSITIVE_ONLY = {"log_", "log10_", "log1p_", "log2_", "sqrt_", "rsqrt_", "acosh_", "i0_"}
INPLACE += [(n, ()) for n in sorted(POSITIVE_ONLY)]


@pytest.mark.parametrize("name,args", INPLACE, ids=[n for n, _ in INPLACE])
def test_inplace_function_matches_torch(name, args):
    torch = pytest.importorskip("torch")
    a = R.uniform(-0.9, 0.9, (2, 3))
    if name in POSITIVE_ONLY:
        a = np.abs(a) + 1.1
    t, m = torch.tensor(a), minidl.tensor(a, dtype=minidl.float64)
    t_out, m_out = getattr(torch, name)(t, *args), getattr(minidl, name)(m, *args)
    assert m_out is m and t_out is t
    np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


def test_inplace_integer_functions_and_index_put_():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        a, b = ns.tensor([12, 18, 7]), ns.tensor([8, 12, 3])
        assert ns.gcd_(a.clone(), b).tolist() == [4, 6, 1]
        assert ns.lcm_(a.clone(), b).tolist() == [24, 36, 21]
        x = ns.zeros(3)
        assert ns.index_put_(x, (ns.tensor([0, 2]),), ns.tensor([1.0, 2.0])) is x
        assert x.tolist() == [1.0, 0.0, 2.0]
        y = ns.ones(2, requires_grad=True) * 2
        assert ns.detach_(y) is y and not y.requires_grad


def test_inplace_dropout_and_rrelu_forms():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        x = ns.ones(4, 5)
        assert ns.dropout_(x, 0.5, False) is x
        ns.manual_seed(0)
        y = ns.ones(200, 5)
        ns.dropout_(y, 0.5, True)
        kept = (y.numpy() != 0).mean()
        assert 0.35 < kept < 0.65 and set(np.unique(y.numpy())) <= {0.0, 2.0}
        z = ns.tensor([-1.0, 2.0])
        assert ns.rrelu_(z) is z and np.allclose(z.numpy(), [-(1 / 8 + 1 / 3) / 2, 2.0])
        w = ns.tensor([[-1.0, 2.0]])
        assert ns.alpha_dropout_(w, 0.5, False) is w and w.tolist() == [[-1.0, 2.0]]
        assert ns.feature_alpha_dropout_(w, 0.5, False) is w


def test_dropout_trains_as_torch_signature():
    x = minidl.ones(1000)
    minidl.manual_seed(1)
    y = minidl.dropout(x, 0.25, True)
    assert 0.65 < (y.numpy() > 0).mean() < 0.85 and np.allclose(y.numpy()[y.numpy() > 0],
                                                                  1 / 0.75)
    assert minidl.dropout(x, 0.25, False) is not None
    with pytest.raises(ValueError, match="generator"):
        minidl.rrelu(x, generator=minidl.Generator())


# ---- constants, windows, creation ---------------------------------------------------------
def test_constants_are_torchs():
    torch = pytest.importorskip("torch")
    for name in ("pi", "e", "inf"):
        assert getattr(minidl, name) == getattr(torch, name)
    assert math.isnan(minidl.nan) and minidl.newaxis is None is torch.newaxis
    assert minidl.zeros(2, 3)[minidl.newaxis].shape == (1, 2, 3)


WINDOWS = ["hann_window", "hamming_window", "blackman_window", "bartlett_window",
           "kaiser_window"]


@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("length", [0, 1, 2, 5, 8])
@pytest.mark.parametrize("periodic", [True, False])
def test_window_functions_match_torch(name, length, periodic):
    torch = pytest.importorskip("torch")
    t = getattr(torch, name)(length, periodic)
    m = getattr(minidl, name)(length, periodic)
    assert m.dtype == minidl.float32 and tuple(m.shape) == tuple(t.shape)
    np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-6, atol=1e-6)
    t64 = getattr(torch, name)(length, periodic, dtype=torch.float64, requires_grad=True)
    m64 = getattr(minidl, name)(length, periodic, dtype=minidl.float64, requires_grad=True)
    assert m64.dtype == minidl.float64 and m64.requires_grad
    np.testing.assert_allclose(m64.numpy(), t64.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_window_arguments_match_torch():
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(minidl.hamming_window(7, False, 0.6, 0.3).numpy(),
                               torch.hamming_window(7, False, 0.6, 0.3).numpy(), rtol=1e-6)
    np.testing.assert_allclose(minidl.kaiser_window(9, True, 5.0).numpy(),
                               torch.kaiser_window(9, True, 5.0).numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="floating point"):
        minidl.hann_window(4, dtype=minidl.int64)
    with pytest.raises(RuntimeError, match="non-negative"):
        minidl.hann_window(-1)


SIGNAL = ["bartlett", "blackman", "cosine", "exponential", "gaussian", "hamming", "hann",
          "kaiser", "nuttall"]


@pytest.mark.parametrize("name", SIGNAL)
@pytest.mark.parametrize("length", [0, 1, 2, 7])
@pytest.mark.parametrize("sym", [True, False])
def test_signal_windows_match_torch(name, length, sym):
    torch = pytest.importorskip("torch")
    t = getattr(torch.signal.windows, name)(length, sym=sym, dtype=torch.float64)
    m = getattr(minidl.signal.windows, name)(length, sym=sym, dtype=minidl.float64)
    np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-12, atol=1e-14)
    kw = {"std": 2.0} if name == "gaussian" else {"beta": 3.0} if name == "kaiser" else \
        {"tau": 2.5} if name == "exponential" else {}
    t = getattr(torch.signal.windows, name)(length, sym=sym, **kw)
    m = getattr(minidl.signal.windows, name)(length, sym=sym, **kw)
    assert m.dtype == minidl.float32
    np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-5, atol=1e-6)


def test_signal_general_windows_match_torch():
    torch = pytest.importorskip("torch")
    sw, mw = torch.signal.windows, minidl.signal.windows
    for sym in (True, False):
        np.testing.assert_allclose(
            mw.general_cosine(8, a=[0.5, 0.3, 0.2], sym=sym, dtype=minidl.float64).numpy(),
            sw.general_cosine(8, a=[0.5, 0.3, 0.2], sym=sym, dtype=torch.float64).numpy(),
            rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            mw.general_hamming(6, alpha=0.6, sym=sym, dtype=minidl.float64).numpy(),
            sw.general_hamming(6, alpha=0.6, sym=sym, dtype=torch.float64).numpy(), rtol=1e-12)
    np.testing.assert_allclose(mw.exponential(6, center=1.0, sym=False).numpy(),
                               sw.exponential(6, center=1.0, sym=False).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="Center must be None"):
        mw.exponential(5, center=1.0)
    with pytest.raises(ValueError, match="non-negative window length"):
        mw.hann(-2)
    with pytest.raises(ValueError, match="float32 or float64"):
        mw.hann(4, dtype=minidl.float16)


def test_range_scalar_tensor_fill_match_torch():
    torch = pytest.importorskip("torch")
    for args in [(1, 4), (0, 1, 0.25), (5, 1, -1.5), (0.5, 2.6, 0.7)]:
        with pytest.warns(UserWarning, match="torch.range is deprecated"):
            m = minidl.range(*args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = torch.range(*args)
        assert m.dtype == minidl.float32
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-6)
    with pytest.warns(UserWarning):
        assert minidl.range(0, 3, dtype=minidl.int64).tolist() == [0, 1, 2, 3]
    for value in (3, 2.5, True):
        s = minidl.scalar_tensor(value)
        assert s.shape == () and s.dtype == minidl.float32 and s.item() == float(value)
    assert minidl.scalar_tensor(2, dtype=minidl.int64).dtype == minidl.int64
    a = minidl.tensor([1, 2, 3])
    f = minidl.fill(a, 7)
    assert f.tolist() == [7, 7, 7] and f.dtype == minidl.int64 and a.tolist() == [1, 2, 3]
    assert minidl.fill(minidl.zeros(2), minidl.tensor(1.5)).tolist() == [1.5, 1.5]


def test_asarray_and_frombuffer_share_memory_as_torch():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        a = np.ones(3)
        t = ns.asarray(a)
        a[0] = 5.0
        assert t.tolist() == [5.0, 1.0, 1.0]
        c = ns.asarray(a, copy=True)
        a[1] = 7.0
        assert c.tolist() == [5.0, 1.0, 1.0]
        x = ns.tensor([1.0, 2.0])
        assert ns.asarray(x) is x
        assert ns.asarray([1, 2]).dtype == ns.int64 and ns.asarray([1.0, 2]).dtype == ns.float32
        assert ns.asarray([1, 2], dtype=ns.float64).dtype == ns.float64
        assert ns.asarray([1.0], requires_grad=True).requires_grad
        buf = bytearray(np.arange(4, dtype=np.int16).tobytes())
        f = ns.frombuffer(buf, dtype=ns.int16, count=2, offset=2)
        assert f.tolist() == [1, 2]
        buf[2] = 9
        assert f.tolist() == [9, 2]
    with pytest.raises(ValueError, match="copy=False"):
        minidl.asarray([1, 2], copy=False)
    with pytest.raises(ValueError, match="multiple of element size"):
        minidl.frombuffer(bytearray(3), dtype=minidl.int16)


def test_empty_strided_and_new_empty_strided():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        e = ns.empty_strided((2, 3), (1, 2), dtype=ns.float64)
        assert tuple(e.shape) == (2, 3) and tuple(e.stride()) == (1, 2)
        assert e.dtype == ns.float64
        n = ns.ones(2).new_empty_strided((3, 2), (2, 1))
        assert tuple(n.shape) == (3, 2) and tuple(n.stride()) == (2, 1)
        assert n.dtype == ns.float32


def test_mode_queries_match_torch():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        assert not ns.is_inference_mode_enabled()
        with ns.inference_mode():
            assert ns.is_inference_mode_enabled()
            with ns.inference_mode(False):
                assert not ns.is_inference_mode_enabled()
            assert ns.is_inference_mode_enabled()

        @ns.inference_mode()
        def f():
            return ns.is_inference_mode_enabled()
        assert f() and not ns.is_inference_mode_enabled()
        assert not ns.is_anomaly_enabled()
        ns.set_anomaly_enabled(True)
        try:
            assert ns.is_anomaly_enabled() and ns.is_anomaly_check_nan_enabled()
        finally:
            ns.set_anomaly_enabled(False)
        assert not ns.is_autocast_enabled() and not ns.is_autocast_enabled("cpu")
        assert not ns.is_autocast_cpu_enabled()
        assert ns.get_autocast_cpu_dtype() == ns.bfloat16
        assert ns.get_autocast_gpu_dtype() == ns.float16
        assert ns.get_autocast_dtype("cpu") == ns.bfloat16
        assert ns.is_autocast_cache_enabled()
        ns.clear_autocast_cache()
        assert not ns.is_warn_always_enabled()
        ns.set_warn_always(True)
        assert ns.is_warn_always_enabled()
        ns.set_warn_always(False)
        assert ns.get_device(ns.ones(2)) == -1
    with minidl.autocast("cpu"):
        assert minidl.is_autocast_enabled("cpu")
        with pytest.warns(DeprecationWarning, match=r"is_autocast_enabled\(.cpu.\)"):
            assert minidl.is_autocast_cpu_enabled()
    assert minidl.vmap is minidl.func.vmap
    assert minidl.vmap(lambda v: v * 2)(minidl.ones(3, 2)).tolist() == [[2.0, 2.0]] * 3
    assert minidl.set_flush_denormal(True) in (True, False)
    minidl.set_num_interop_threads(2)
    assert minidl.get_num_interop_threads() == 2


# ---- Tensor methods -------------------------------------------------------------------------
def test_tensor_storage_and_resize_methods_match_torch():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        x = ns.arange(12.0).reshape(3, 4)
        assert x.storage_offset() == 0 and x[1:].storage_offset() == 4
        assert x[1:, 2:].storage_offset() == 6
        b = ns.arange(6.0)
        assert b.resize_(2, 2) is b and b.tolist() == [[0.0, 1.0], [2.0, 3.0]]
        b.resize_(3, 3)
        assert tuple(b.shape) == (3, 3) and b.flatten()[:4].tolist() == [0.0, 1.0, 2.0, 3.0]
        b.resize_as_(ns.zeros(2))
        assert b.tolist() == [0.0, 1.0]
        assert x.share_memory_() is x
        c = ns.tensor([1.0, 2.0])
        assert c.apply_(lambda v: v * 10) is c and c.tolist() == [10.0, 20.0]
        c.map_(ns.tensor([1.0, 2.0]), lambda p, q: p + q)
        assert c.tolist() == [11.0, 22.0]
        c.map2_(ns.tensor([1.0]), ns.tensor([2.0, 3.0]), lambda p, q, r: p - q * r)
        assert c.tolist() == [9.0, 19.0]
        p = ns.zeros(2, 3)
        assert p.put_(ns.tensor([0, -1]), ns.tensor([1.0, 2.0])) is p
        assert p.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]
        p.put_(ns.tensor([0, 0]), ns.tensor([1.0, 2.0]), accumulate=True)
        assert p[0, 0].item() == 4.0
        w = ns.ones(3, requires_grad=True)
        with pytest.raises(RuntimeError, match="cannot resize variables that require grad"):
            w.resize_(2)
        with pytest.raises(RuntimeError, match="Can't call apply_"):
            w.apply_(lambda v: v)
        with pytest.raises((IndexError, RuntimeError)):
            ns.zeros(3).put_(ns.tensor([3]), ns.tensor([1.0]))
        with pytest.raises(IndexError, match="same number of elements"):
            ns.zeros(3).put_(ns.tensor([0, 1]), ns.tensor([1.0]))


def test_toplevel_names_added_here_exist_in_torch():
    # the names this file's aliases add: each is torch's (a check of these names, not of
    # torch's whole dir(), which grows)
    torch = pytest.importorskip("torch")
    added = {c[0].split("_eval")[0] for c in CASES if not c[0].startswith("Tensor.")}
    added -= {"convolution_t", "embedding_padding", "kl_div_mean_log_target", "ctc_loss_mean",
              "bce_with_logits", "bce_with_logits_sum", "grid_sampler_nearest",
              "rsub_scalar", "as_strided_overlap", "as_strided_of_view", "put_accumulate",
              "batch_norm_train"}
    added |= {"batch_norm", "binary_cross_entropy_with_logits", "pi", "e", "inf", "nan",
              "newaxis", "range", "scalar_tensor", "asarray", "frombuffer", "empty_strided",
              "vmap", "set_flush_denormal", "get_device", "is_inference_mode_enabled",
              "is_anomaly_enabled", "set_anomaly_enabled", "is_autocast_enabled",
              "get_autocast_dtype", "max_pool1d_with_indices", "dropout_", "alpha_dropout_",
              "feature_alpha_dropout_", "embedding_bag", "conv_tbc", "gradient", "histogram",
              "histogramdd", "nonzero_static", "empty_permuted", "cond", "while_loop",
              "typename", "is_storage", "set_deterministic_debug_mode",
              "get_deterministic_debug_mode", "set_autocast_enabled", "set_autocast_dtype",
              "native_layer_norm", "native_dropout", "norm_except_dim", "gru_cell",
              "lstm_cell", "rnn_tanh_cell", "rnn_relu_cell", "view_copy", "unsafe_chunk",
              "adjoint", "put", "rsub", "fill", "index_put_"}
    added |= {n for n, _ in INPLACE} | set(WINDOWS)
    for name in sorted(added):
        assert hasattr(torch, name), name
        assert hasattr(minidl, name), name
    for name in ("hardshrink", "prelu", "as_strided", "storage_offset", "new_empty_strided",
                 "put_", "put", "resize_", "resize_as_", "share_memory_", "map_", "map2_",
                 "apply_", "is_shared", "adjoint", "H", "dim_order", "nonzero_static",
                 "unsafe_chunk", "unsafe_split", "unsafe_split_with_sizes", "resize", "resize_as",
                 "new"):
        assert hasattr(torch.Tensor, name) and hasattr(minidl.Tensor, name), name
    for name in SIGNAL + ["general_cosine", "general_hamming"]:
        assert hasattr(torch.signal.windows, name) and hasattr(minidl.signal.windows, name)


# ---- RNN cells from weights, *_copy forms, unsafe_* -----------------------------------------
CELLS = [("rnn_tanh_cell", 1), ("rnn_relu_cell", 1), ("gru_cell", 3), ("lstm_cell", 4)]


@pytest.mark.parametrize("name,gates", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_cell_functions_match_torch(name, gates, bias):
    torch = pytest.importorskip("torch")
    H, I, N = 3, 4, 2
    arrays = [_a(N, I), _a(N, H), _a(gates * H, I), _a(gates * H, H)]
    if bias:
        arrays += [_a(gates * H), _a(gates * H)]
    extra = [_a(N, H)] if name == "lstm_cell" else []

    def call(ns, x, h, *ws_and_c):
        if name == "lstm_cell":
            c = ws_and_c[-1]
            return ns.lstm_cell(x, (h, c), *ws_and_c[:-1])
        return getattr(ns, name)(x, h, *ws_and_c)
    (t_out, t_in), (m_out, m_in) = (_run(ns, call, arrays + extra, True)
                                    for ns in (torch, minidl))
    t_outs = t_out if isinstance(t_out, tuple) else (t_out,)
    m_outs = m_out if isinstance(m_out, tuple) else (m_out,)
    for t, m in zip(t_outs, m_outs):
        np.testing.assert_allclose(m.numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)
    gs = [R.standard_normal(tuple(t.shape)) for t in t_outs]
    torch.autograd.backward(t_outs, [torch.tensor(g) for g in gs])
    sum((m * minidl.tensor(g, dtype=minidl.float64)).sum() for m, g in zip(m_outs, gs)).backward()
    for k, (t, m) in enumerate(zip(t_in, m_in)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name}: grad of input {k}")


COPIES = [("view_copy", ((4, 3),)), ("permute_copy", ((1, 0),)), ("t_copy", ()),
          ("transpose_copy", (0, 1)), ("unsqueeze_copy", (1,)), ("squeeze_copy", ()),
          ("expand_copy", ((2, 3, 4),)), ("select_copy", (1, 2)), ("diagonal_copy", ()),
          ("detach_copy", ()), ("unfold_copy", (1, 2, 1)), ("alias_copy", ()),
          ("slice_copy", (1, 1, None, 2)), ("split_copy", (2, 1)),
          ("split_with_sizes_copy", ([1, 3], 1)), ("unbind_copy", (0,)),
          ("as_strided_copy", ((2, 2), (1, 2))), ("unsafe_chunk", (2, 1)),
          ("unsafe_split", (2,)), ("unsafe_split_with_sizes", ([1, 2],))]


@pytest.mark.parametrize("name,args", COPIES, ids=[c[0] for c in COPIES])
def test_copy_forms_match_torch_and_do_not_share_memory(name, args):
    torch = pytest.importorskip("torch")
    a = _a(3, 4)
    t, m = torch.tensor(a, requires_grad=True), minidl.tensor(a, dtype=minidl.float64,
                                                             requires_grad=True)
    t_out, m_out = getattr(torch, name)(t, *args), getattr(minidl, name)(m, *args)
    t_outs = t_out if isinstance(t_out, (tuple, list)) else [t_out]
    m_outs = m_out if isinstance(m_out, (tuple, list)) else [m_out]
    assert len(t_outs) == len(m_outs)
    for tt, mm in zip(t_outs, m_outs):
        np.testing.assert_allclose(mm.detach().numpy(), tt.detach().numpy(), rtol=1e-12)
    if name.endswith("_copy") and name != "detach_copy":
        m_outs[0].data[...] = 123.0
        assert not (m.numpy() == 123.0).any()
        sum(o.sum() for o in t_outs).backward()
        sum(o.sum() for o in m_outs).backward()
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-12)


# ---- conv_tbc, gradient, histogram, nonzero_static, empty_permuted, cond, small queries -----
def test_conv_tbc_matches_torch():
    torch = pytest.importorskip("torch")
    arrays = [_a(5, 2, 3), _a(3, 3, 4), _a(4)]
    (t, t_in), (m, m_in) = (_run(ns, lambda ns, x, w, b: ns.conv_tbc(x, w, b, 1), arrays, True)
                            for ns in (torch, minidl))
    np.testing.assert_allclose(m.numpy(), t.detach().numpy(), rtol=1e-10)
    g = _a(*t.shape)
    t.backward(torch.tensor(g))
    m.backward(minidl.tensor(g, dtype=minidl.float64))
    for a, b in zip(m_in, t_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-12)


GRADIENT = [dict(), dict(spacing=2.0), dict(dim=1, edge_order=2),
            dict(spacing=[1.5, 0.5], edge_order=2),
            dict(spacing=(np.array([0.0, 1, 3, 4, 7]),), dim=0),
            dict(spacing=(np.array([0.0, 1, 3, 4, 7]),), dim=0, edge_order=2)]


@pytest.mark.parametrize("kw", GRADIENT)
def test_gradient_matches_torch(kw):
    torch = pytest.importorskip("torch")
    x = _a(5, 6)

    def args(ns):
        out = dict(kw)
        if isinstance(kw.get("spacing"), tuple):
            out["spacing"] = tuple(ns.tensor(a, dtype=ns.float64) for a in kw["spacing"])
        return out
    tx = torch.tensor(x, requires_grad=True)
    mx = minidl.tensor(x, requires_grad=True, dtype=minidl.float64)
    t, m = torch.gradient(tx, **args(torch)), minidl.gradient(mx, **args(minidl))
    assert isinstance(m, tuple) and len(m) == len(t)
    for a, b in zip(m, t):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
    sum(o.sum() * (i + 1) for i, o in enumerate(t)).backward()
    sum(o.sum() * (i + 1) for i, o in enumerate(m)).backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda v: minidl.gradient(v, **args(minidl))[0], [randn((5, 6))])


def test_histograms_match_torch():
    torch = pytest.importorskip("torch")
    v = R.standard_normal(50)
    for ns_args in [dict(bins=7), dict(bins=4, range=(-1.0, 1.0)), dict(bins=5, density=True)]:
        t = torch.histogram(torch.tensor(v), **ns_args)
        m = minidl.histogram(minidl.tensor(v, dtype=minidl.float64), **ns_args)
        np.testing.assert_allclose(m.hist.numpy(), t.hist.numpy(), rtol=1e-12)
        np.testing.assert_allclose(m.bin_edges.numpy(), t.bin_edges.numpy(), rtol=1e-12)
    edges, w = np.array([-2.0, -0.5, 0.0, 3.0]), R.random(50)
    t = torch.histogram(torch.tensor(v), torch.tensor(edges), weight=torch.tensor(w))
    m = minidl.histogram(minidl.tensor(v, dtype=minidl.float64),
                         minidl.tensor(edges, dtype=minidl.float64),
                         weight=minidl.tensor(w, dtype=minidl.float64))
    np.testing.assert_allclose(m.hist.numpy(), t.hist.numpy(), rtol=1e-12)
    pts = R.standard_normal((30, 2))
    t = torch.histogramdd(torch.tensor(pts), bins=[3, 4], range=[-2.0, 2.0, -1.0, 1.0])
    m = minidl.histogramdd(minidl.tensor(pts, dtype=minidl.float64), bins=[3, 4],
                           range=[-2.0, 2.0, -1.0, 1.0])
    np.testing.assert_allclose(m.hist.numpy(), t.hist.numpy())
    for a, b in zip(m.bin_edges, t.bin_edges):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_small_functions_match_torch():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        assert ns.nonzero_static(ns.tensor([0, 1, 0, 2]), size=3).tolist() == [[1], [3], [-1]]
        assert ns.tensor([[0, 1], [2, 0]]).nonzero_static(size=1, fill_value=-5).tolist() == \
            [[0, 1]]
        e = ns.empty_permuted((2, 3, 4), (0, 2, 1))
        assert tuple(e.shape) == (2, 3, 4) and tuple(e.stride()) == (12, 1, 3)
        assert e.dim_order() == (0, 2, 1)
        assert ns.ones(2, 3, 4, 5).to(memory_format=ns.channels_last).dim_order() == (0, 2, 3, 1)
        assert ns.typename(ns.ones(2)) == "torch.FloatTensor"
        assert ns.typename(ns.ones(2, dtype=ns.int64)) == "torch.LongTensor"
        assert ns.typename(1.0) == "float" and not ns.is_storage(ns.ones(1))
        assert tuple(ns.ones(2, 3).H.shape) == (3, 2)
        with pytest.raises(RuntimeError, match="H is only supported on matrices"):
            ns.ones(2, 3, 4).H
        one = ns.ones(1)
        assert ns.cond(ns.tensor(True), lambda a: a + 1, lambda a: a - 1, (one,)).tolist() == [2.0]
        assert ns.cond(False, lambda a: a + 1, lambda a: a - 1, (one,)).tolist() == [0.0]
        assert ns.unsafe_chunk(ns.arange(6), 3)[1].tolist() == [2, 3]
        assert ns.arange(6).unsafe_split(4)[1].tolist() == [4, 5]
        ns.set_deterministic_debug_mode("warn")
        try:
            assert ns.get_deterministic_debug_mode() == 1
            assert ns.are_deterministic_algorithms_enabled()
            assert ns.is_deterministic_algorithms_warn_only_enabled()
        finally:
            ns.set_deterministic_debug_mode(0)
        assert ns.get_deterministic_debug_mode() == 0
    out = minidl.while_loop(lambda i, s: i < 5, lambda i, s: (i + 1, s + i),
                            (minidl.tensor(0), minidl.tensor(0)))
    assert [o.item() for o in out] == [5, 10]


def test_autocast_switches_match_torch():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        ns.set_autocast_enabled("cpu", True)
        try:
            ns.set_autocast_dtype("cpu", ns.float16)
            assert ns.is_autocast_enabled("cpu") and ns.get_autocast_dtype("cpu") == ns.float16
            assert (ns.ones(2, 3) @ ns.ones(3, 2)).dtype == ns.float16
        finally:
            ns.set_autocast_enabled("cpu", False)
            ns.set_autocast_dtype("cpu", ns.bfloat16)
        assert not ns.is_autocast_enabled("cpu")
        assert (ns.ones(2, 3) @ ns.ones(3, 2)).dtype == ns.float32
        assert ns.autocast_increment_nesting() == 1 and ns.autocast_decrement_nesting() == 0
        ns.set_autocast_cache_enabled(False)
        assert not ns.is_autocast_cache_enabled()
        ns.set_autocast_cache_enabled(True)
        with pytest.warns(DeprecationWarning):
            ns.set_autocast_gpu_dtype(ns.float16)


def test_native_forms_match_torch():
    torch = pytest.importorskip("torch")
    x, w = _a(2, 3, 4), _a(4)
    outs = []
    for ns in (torch, minidl):
        t = ns.tensor(x, dtype=ns.float64)
        o, m, r = ns.native_layer_norm(t, [4], ns.tensor(w, dtype=ns.float64), None, 1e-5)
        outs.append([o.numpy(), m.numpy(), r.numpy(), ns.norm_except_dim(t, 2, 1).numpy(),
                     ns.norm_except_dim(t, 3, 0).numpy(), ns.norm_except_dim(t, 2, -1).numpy()])
        o, m = ns.native_dropout(t, 0.5, False)
        assert m.dtype == ns.bool and bool(m.all()) and np.array_equal(o.numpy(), x)
        o, m = ns.native_dropout(t, 0.5, True)
        kept = m.numpy()
        assert np.allclose(o.numpy()[kept], 2 * x[kept]) and (o.numpy()[~kept] == 0).all()
    for a, b in zip(*outs):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-10)
    assert gradcheck(lambda v: minidl.norm_except_dim(v, 3, 1), [randn((2, 3, 2))])


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("kw", [dict(), dict(include_last_offset=True), dict(padding_idx=4),
                                dict(per_sample_weights=True)])
def test_embedding_bag_matches_torch(mode, kw):
    torch = pytest.importorskip("torch")
    if kw.get("per_sample_weights") and mode != 0:
        mode = 0  # torch takes per_sample_weights with sum only
    w = _a(6, 3)
    idx = np.array([1, 2, 4, 5, 4, 3])
    off = np.array([0, 2, 2, 5, 6]) if kw.get("include_last_offset") else np.array([0, 2, 2, 5])
    psw = R.random(6) if kw.get("per_sample_weights") else None
    outs, ws = [], []
    for ns in (torch, minidl):
        wt = ns.tensor(w, dtype=ns.float64).requires_grad_(True)
        args = [False, mode, False, None if psw is None else ns.tensor(psw, dtype=ns.float64),
                kw.get("include_last_offset", False)]
        if "padding_idx" in kw:
            args.append(kw["padding_idx"])
        outs.append(ns.embedding_bag(wt, ns.tensor(idx), ns.tensor(off), *args))
        ws.append(wt)
    assert len(outs[1]) == len(outs[0]) == 4
    # in sum mode torch's offset2bag/bag_size/max_indices vary with its kernel's path (dtype,
    # requires_grad) and carry nothing: only the output is compared there
    for k, (m, t) in enumerate(zip(outs[1], outs[0]) if mode else [(outs[1][0], outs[0][0])]):
        assert tuple(m.shape) == tuple(t.shape), (k, m.shape, t.shape)
        np.testing.assert_allclose(m.detach().numpy(), t.detach().numpy(), rtol=1e-12,
                                   err_msg=f"output {k}")
    g = R.standard_normal(tuple(outs[0][0].shape))
    outs[0][0].backward(torch.tensor(g))
    outs[1][0].backward(minidl.tensor(g, dtype=minidl.float64))
    np.testing.assert_allclose(ws[1].grad.numpy(), ws[0].grad.numpy(), rtol=1e-12)


def test_deprecated_tensor_forms_match_torch():
    torch = pytest.importorskip("torch")
    for ns in (torch, minidl):
        t = ns.ones(3)
        with pytest.warns(UserWarning, match="non-inplace resize is deprecated"):
            r = t.resize(1, 3)
        assert tuple(r.shape) == (1, 3) and tuple(t.shape) == (3,)
        with pytest.warns(UserWarning, match="non-inplace resize_as is deprecated"):
            assert tuple(t.resize_as(ns.ones(3, 1)).shape) == (3, 1)
        with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="resize can only"):
            t.resize(2)
        assert tuple(t.new(2, 3).shape) == (2, 3) and t.new(2, 3).dtype == t.dtype
        assert t.new([1.0, 2.0]).tolist() == [1.0, 2.0] and tuple(t.new().shape) == (0,)
        assert tuple(t.new(ns.ones(2)).shape) == (2,)
        with pytest.warns(FutureWarning, match="`nn.Container` is deprecated"):
            c = ns.nn.Container(a=ns.nn.Linear(1, 1))
        assert [n for n, _ in c.named_children()] == ["a"]


def test_as_strided_scatter_and_storage_queries():
    # torch 2.13's as_strided_scatter gives input a wrong gradient (the scattered positions'
    # instead of the others'; torch.autograd.gradcheck fails on it): the values and src's
    # gradient are compared with torch, input's gradient is checked by finite differences
    torch = pytest.importorskip("torch")
    x, src = _a(3, 4), _a(2, 2)
    outs = []
    for ns in (torch, minidl):
        a = ns.tensor(x, dtype=ns.float64)
        s = ns.tensor(src, dtype=ns.float64).requires_grad_(True)
        o = ns.as_strided_scatter(a, s, (2, 2), (1, 4), 1)
        (o * ns.arange(12.0, dtype=ns.float64).reshape(3, 4)).sum().backward()
        outs.append((o.detach().numpy(), s.grad.numpy()))
        t = ns.ones(3)
        assert t.is_set_to(t) and not t.is_set_to(t.clone()) and t[1:].is_set_to(t[1:])
        assert t.output_nr == 0 and t.const_data_ptr() == t.data_ptr()
    for m, t in zip(outs[1], outs[0]):
        np.testing.assert_allclose(m, t, rtol=1e-12)
    s = randn((2, 2), seed=5)
    assert gradcheck(lambda a, s: minidl.as_strided_scatter(a, s, (2, 2), (1, 4), 1),
                     [randn((3, 4)), s])
    with pytest.raises(RuntimeError, match="expected src to have a size equal"):
        minidl.as_strided_scatter(minidl.zeros(3, 4), minidl.zeros(3), (2, 2), (1, 4))


# ---- deprecated and low-level top-level names -------------------------------------------------

def test_set_default_tensor_type_sets_dtype_and_device():
    try:
        with pytest.warns(UserWarning, match="set_default_tensor_type\\(\\) is deprecated"):
            minidl.set_default_tensor_type(minidl.DoubleTensor)
        assert minidl.ones(1).dtype == minidl.float64 and minidl.tensor([1.5]).dtype == \
            minidl.float64
        with pytest.warns(UserWarning):
            minidl.set_default_tensor_type("torch.FloatTensor")
        assert minidl.ones(1).dtype == minidl.float32
        with pytest.warns(UserWarning), pytest.raises(TypeError, match="only floating-point"):
            minidl.set_default_tensor_type(minidl.LongTensor)
        with pytest.warns(UserWarning), pytest.raises(TypeError, match="invalid type"):
            minidl.set_default_tensor_type("torch.NoSuchTensor")
    finally:
        minidl.set_default_dtype(minidl.float32)
        minidl.set_default_device("cpu")


def test_deprecated_norms_and_helpers_match_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((3, 4, 5))
    with pytest.warns(UserWarning, match="deprecated"):
        ours = minidl.frobenius_norm(minidl.tensor(a, dtype=minidl.float64), dim=(1, 2))
    np.testing.assert_allclose(ours.numpy(), torch.frobenius_norm(torch.tensor(a), dim=(1, 2)),
                               rtol=1e-12)
    with pytest.warns(UserWarning, match="deprecated"):
        ours = minidl.nuclear_norm(minidl.tensor(a[0], dtype=minidl.float64))
    np.testing.assert_allclose(ours.numpy(), torch.nuclear_norm(torch.tensor(a[0])), rtol=1e-12)
    with pytest.raises(RuntimeError, match="(?s)removed.*linalg.matrix_rank"):
        minidl.matrix_rank(minidl.eye(3))
    assert minidl.is_distributed(minidl.ones(1)) is torch.is_distributed(torch.ones(1)) is False
    w = np.random.default_rng(1).standard_normal((4, 3)) * 2
    theirs = torch.tensor(w)
    torch.embedding_renorm_(theirs, torch.tensor([0, 2, 2]), 1.0, 2.0)
    ours = minidl.tensor(w, dtype=minidl.float64)
    assert minidl.embedding_renorm_(ours, minidl.tensor([0, 2, 2]), 1.0, 2.0) is ours
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


def test_feature_dropout_zeroes_whole_channels():
    minidl.manual_seed(0)
    x = minidl.ones(8, 6, 5)
    y = minidl.feature_dropout(x, 0.5, True).numpy()
    per_channel = y.reshape(8, 6, -1)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # whole channels
    assert 0 < (per_channel[:, :, 0] == 0).mean() < 1
    assert minidl.feature_dropout(x, 0.5, False) is x
    z = minidl.ones(2, 3, 4)
    assert minidl.feature_dropout_(z, 1.0, True) is z and float(z.sum()) == 0.0


def test_version_module():
    assert minidl.version.__version__ == minidl.__version__
    assert minidl.version.cuda is None or isinstance(minidl.version.cuda, str)
    assert minidl.version.hip is None
    if not minidl.cuda.is_available():
        assert minidl.version.cuda is None or minidl.backend._load_cupy() is not None


# ---- poisson, binomial and other small top-level names ----------------------------------------

def test_poisson_and_binomial():
    rates = minidl.tensor([0.0, 1.0, 50.0], requires_grad=True)
    minidl.manual_seed(1)
    draws = minidl.poisson(rates)
    assert draws.dtype == np.float32 and draws[0].item() == 0.0 and draws.grad_fn is not None
    draws.sum().backward()
    assert rates.grad.tolist() == [0.0, 0.0, 0.0]  # torch's zero gradient
    many = minidl.poisson(minidl.full((20000,), 3.0, dtype=minidl.float64))
    assert many.dtype == np.float64 and abs(many.mean().item() - 3.0) < 0.06
    assert abs(many.var().item() - 3.0) < 0.15
    minidl.manual_seed(1)
    again = minidl.poisson(rates.detach())
    np.testing.assert_array_equal(again.numpy(), draws.detach().numpy())  # from minidl's state
    with pytest.raises(ValueError, match="non-negative"):
        minidl.poisson(minidl.tensor([-1.0]))
    with pytest.raises(TypeError, match="int64"):
        minidl.poisson(minidl.tensor([1, 2]))
    b = minidl.binomial(minidl.full((20000,), 10.0), minidl.full((20000,), 0.3))
    assert abs(b.mean().item() - 3.0) < 0.06 and b.max().item() <= 10
    edge = minidl.binomial(minidl.tensor([10.0, 10.5, -1.0]), minidl.tensor([1.5, 1.0, 0.5]))
    # as torch's CPU kernel: p >= 1 gives the count as it is, a count <= 0 gives 0
    assert edge.tolist() == [10.0, 10.5, 0.0]


def test_small_top_level_names():
    assert isinstance(minidl.float32, minidl.dtype) and minidl.GradScaler is minidl.amp.GradScaler
    assert minidl.get_device_module("cuda") is minidl.cuda
    with pytest.raises(RuntimeError, match="no device module"):
        minidl.get_device_module("mps")
    x = minidl.ones(2)
    assert not x.is_meta and not x.is_mps and not x.is_quantized and not x.is_nested
    counts, edges = x.histogram(bins=2)
    assert counts.tolist() == [0.0, 2.0] and len(edges) == 3
