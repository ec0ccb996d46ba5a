"""ReLU6, Hardtanh, Softplus, Softsign, Mish, Hardswish, Hardsigmoid, PReLU, SELU, CELU, GLU,
Tanhshrink, Threshold, Softmin, LogSigmoid, Hardshrink, Softshrink, RReLU, gumbel_softmax and the
in-place functional forms (modules and functions):
float64 gradient checks, PyTorch parity (values, gradients, in-place, repr), autocast dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import away_from_zero, leaf, randn

torch = pytest.importorskip("torch")
from _nn_parity import check_init, check_module  # noqa: E402
from _torch_parity import check_op  # noqa: E402

TF = torch.nn.functional


def _spread(shape, seed=0):
    """Values over [-8, 8] that keep clear of every kink (0, +-0.5, +-1, +-3, 6, thresholds)."""
    x = np.random.default_rng(seed).uniform(-8, 8, shape)
    kinks = np.array([0, 0.5, -0.5, 1, -1, 3, -3, 6, 0.1, 0.3, -0.3, 2, -2])
    near = np.abs(x[..., None] - kinks).min(-1) < 0.05
    return np.where(near, x + 0.1, x)


FUNCTIONS = [
    ("relu6", lambda F, x: F.relu6(x)),
    ("hardtanh", lambda F, x: F.hardtanh(x)),
    ("hardtanh_bounds", lambda F, x: F.hardtanh(x, -2.0, 3.0)),
    ("softplus", lambda F, x: F.softplus(x)),
    ("softplus_beta", lambda F, x: F.softplus(x, beta=2.0, threshold=5.0)),
    ("softsign", lambda F, x: F.softsign(x)),
    ("mish", lambda F, x: F.mish(x)),
    ("hardswish", lambda F, x: F.hardswish(x)),
    ("hardsigmoid", lambda F, x: F.hardsigmoid(x)),
    ("selu", lambda F, x: F.selu(x)),
    ("celu", lambda F, x: F.celu(x, alpha=2.0)),
    ("glu", lambda F, x: F.glu(x)),
    ("glu_dim", lambda F, x: F.glu(x, dim=0)),
    ("tanhshrink", lambda F, x: F.tanhshrink(x)),
    ("threshold", lambda F, x: F.threshold(x, 0.1, 20.0)),
    ("softmin", lambda F, x: F.softmin(x, dim=1)),
    ("logsigmoid", lambda F, x: F.logsigmoid(x)),
    ("hardshrink", lambda F, x: F.hardshrink(x)),
    ("softshrink", lambda F, x: F.softshrink(x, 0.3)),
]


@pytest.mark.parametrize("name,fn", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_gradcheck_float64(name, fn):
    x = leaf(_spread((4, 6)) * (0.5 if name == "softmin" else 1))
    assert gradcheck(lambda x: fn(F, x), [x])


@pytest.mark.parametrize("name,fn", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_parity_with_torch(name, fn):
    x = _spread((4, 6, 2), seed=1).astype(np.float32)
    big = np.array([-100.0, -30.0, 30.0, 100.0, 1e-3], dtype=np.float32).reshape(1, 5, 1)
    for a in (x, np.tile(big, (2, 1, 2))):  # large |x|: no overflow, the right tails
        m, t = minidl.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
        ym, yt = fn(F, m), fn(TF, t)
        np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert ym.dtype == np.float32
        proj = np.random.default_rng(2).standard_normal(tuple(yt.shape)).astype(np.float32)
        (ym * minidl.tensor(proj)).sum().backward()
        (yt * torch.tensor(proj)).sum().backward()
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_prelu_functional():
    check_op(lambda F, x, w: F.prelu(x, w), [((2, 3, 4), (3,)), ((2, 3, 4, 2), (1,)), ((5,), (1,))])
    assert gradcheck(lambda x, w: F.prelu(x, w), [leaf(away_from_zero((2, 3, 4))),
                                                  leaf(np.array([0.1, -0.2, 0.3]))])


MODULES = [
    ("ReLU6", (), {}), ("ReLU6", (True,), {}), ("Hardtanh", (), {}),
    ("Hardtanh", (-2, 3, True), {}), ("Softplus", (), {}), ("Softplus", (2.0, 4.0), {}),
    ("Softsign", (), {}), ("Mish", (), {}), ("Hardswish", (), {}), ("Hardsigmoid", (), {}),
    ("PReLU", (), {}), ("PReLU", (4,), dict(init=0.1)), ("SELU", (), {}), ("CELU", (2.0,), {}),
    ("GLU", (), dict(dim=1)), ("Tanhshrink", (), {}), ("Threshold", (0.1, 20), {}),
    ("Softmin", (1,), {}), ("LogSigmoid", (), {}), ("Hardshrink", (), {}),
    ("Softshrink", (0.3,), {}), ("Mish", (), dict(inplace=True)),
    ("SELU", (), dict(inplace=True)), ("CELU", (), dict(inplace=True)),
]


@pytest.mark.parametrize("cls,args,kwargs", MODULES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_module_parity_and_repr(cls, args, kwargs):
    ours, theirs = getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    check_init(lambda: getattr(nn, cls)(*args, **kwargs),
               lambda: getattr(torch.nn, cls)(*args, **kwargs))
    x = _spread((2, 4, 3), seed=3).astype(np.float32)
    if ours.__dict__.get("inplace"):  # through a non-leaf, as torch requires
        check_module(ours, theirs, [x], call=lambda m, x: m(x * 1.0))
    else:
        check_module(ours, theirs, [x])


def test_inplace_changes_the_input():
    for name in ("relu6", "hardtanh", "mish", "hardswish", "hardsigmoid", "selu", "celu"):
        x = minidl.tensor(_spread((3, 4)).astype(np.float32))
        want = getattr(F, name)(x).numpy()
        out = getattr(F, name)(x, inplace=True)
        assert out is x
        np.testing.assert_array_equal(x.numpy(), want)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_autocast_dtypes_match_torch_cpu(low):
    x = _spread((2, 3, 4)).astype(np.float32)
    w = np.random.default_rng(0).standard_normal((4, 3, 1)).astype(np.float32)
    from _torch_parity import MINIDL, TORCH

    for name, fn in FUNCTIONS + [("prelu", lambda F, x: F.prelu(x, F.tensor([0.25])))]:
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = fn(TORCH, TF.conv1d(torch.tensor(x), torch.tensor(w)))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(MINIDL, F.conv1d(minidl.tensor(x), minidl.tensor(w)))
        assert str(got.dtype) == str(want.dtype).replace("torch.", ""), name
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05,
                                   atol=0.1, err_msg=name)


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        F.glu(minidl.randn(3, 5))
    with pytest.raises(ValueError, match="greater than max_val"):
        nn.Hardtanh(2, 1)
    with pytest.raises(ValueError, match="3 channels"):
        F.prelu(minidl.randn(2, 3, 4), minidl.randn(2))
    with pytest.raises(TypeError, match="floating-point"):
        F.softplus(minidl.tensor([1, 2]))


# ---- rrelu (functional and module) ---------------------------------------------------------------
def test_rrelu_eval_matches_torch_and_train_draws_slopes():
    check_op(lambda F, x: F.rrelu(x), [(4, 5)])
    check_op(lambda F, x: F.rrelu(x, 0.1, 0.5, training=False), [(3, 4)])
    assert gradcheck(lambda x: F.rrelu(x, 0.2, 0.4), [randn((3, 4))])
    minidl.manual_seed(0)
    x = minidl.tensor(-np.ones((200, 50), dtype=np.float32), requires_grad=True)
    y = F.rrelu(x, 0.1, 0.3, training=True)
    slopes = -y.numpy()
    assert 0.1 <= slopes.min() and slopes.max() <= 0.3 and slopes.std() > 0.04
    assert abs(slopes.mean() - 0.2) < 0.01
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), slopes)  # the gradient is each element's slope
    pos = F.rrelu(minidl.ones(3), training=True)
    np.testing.assert_array_equal(pos.numpy(), 1.0)
    minidl.manual_seed(1)
    a = F.rrelu(minidl.tensor(-np.ones(8, np.float32)), training=True).numpy()
    minidl.manual_seed(1)
    b = F.rrelu(minidl.tensor(-np.ones(8, np.float32)), training=True).numpy()
    np.testing.assert_array_equal(a, b)  # minidl's generator: seeded, reproducible


def test_rrelu_module_and_errors():
    ours, theirs = nn.RReLU(0.1, 0.3), torch.nn.RReLU(0.1, 0.3)
    assert repr(ours) == repr(theirs)
    assert repr(nn.RReLU(inplace=True)) == repr(torch.nn.RReLU(inplace=True))
    ours.eval(), theirs.eval()
    check_module(ours, theirs, [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)])
    ours.train()
    y = ours(minidl.tensor(-np.ones((50, 50), np.float32))).numpy()
    assert y.std() > 0.01  # random slopes in training mode
    x = minidl.randn(3, 4)
    out = F.rrelu(x, inplace=True)
    assert out is x
    y = minidl.tensor(-np.ones(3, np.float32))
    assert F.rrelu_(y) is y
    np.testing.assert_allclose(y.numpy(), -(1 / 8 + 1 / 3) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="Lower bound"):
        F.rrelu(x, 0.5, 0.1)


# ---- gumbel_softmax, rrelu in training, the in-place functional activations ----------------------
def test_gumbel_softmax_soft_gradcheck_and_straight_through():
    x = minidl.tensor(np.random.default_rng(0).standard_normal((3, 4)), dtype=minidl.float64,
                      requires_grad=True)

    def soft(x):
        minidl.manual_seed(5)  # the same noise on every call
        return F.gumbel_softmax(x, tau=0.7, dim=0)
    assert gradcheck(soft, [x])
    # hard: one-hot values, the soft sample's gradient (same noise)
    proj = minidl.tensor(np.random.default_rng(1).standard_normal((3, 4)), dtype=minidl.float64)
    grads = []
    for hard in (False, True):
        minidl.manual_seed(7)
        x.grad = None
        y = F.gumbel_softmax(x, tau=0.5, hard=hard)
        (y * proj).sum().backward()
        grads.append(x.grad.numpy())
        if hard:
            assert set(np.unique(y.numpy())) == {0.0, 1.0}
            np.testing.assert_array_equal(y.numpy().sum(-1), 1.0)
            assert y.dtype == np.float64
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12)


def test_gumbel_softmax_samples_follow_the_softmax_as_torch():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    n = 4000
    minidl.manual_seed(0)
    x = minidl.tensor(np.tile(logits, (n, 1)))
    hard = F.gumbel_softmax(x, hard=True).numpy()
    t = torch.nn.functional.gumbel_softmax(torch.tensor(np.tile(logits, (n, 1))), hard=True)
    want = torch.softmax(torch.tensor(logits), 0).numpy()
    np.testing.assert_allclose(hard.mean(0), want, atol=0.03)  # the Gumbel-max trick
    np.testing.assert_allclose(t.numpy().mean(0), want, atol=0.03)
    soft = F.gumbel_softmax(x, tau=2.0, dim=1).numpy()
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)
    assert soft.shape == (n, 4) and soft.dtype == np.float32
    with pytest.warns(UserWarning, match="`eps` parameter is deprecated"):
        F.gumbel_softmax(x, eps=1e-5)


INPLACE = [
    ("relu_", (), {}), ("elu_", (0.7,), {}), ("leaky_relu_", (0.2,), {}),
    ("hardtanh_", (-0.5, 0.8), {}), ("selu_", (), {}), ("celu_", (1.3,), {}),
    ("threshold_", (0.1, -2.0), {}), ("rrelu_", (0.1, 0.3), {}),
]


@pytest.mark.parametrize("name,args,kwargs", INPLACE, ids=[c[0] for c in INPLACE])
def test_inplace_functional_forms_as_torch(name, args, kwargs):
    a = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    a[np.abs(a) < 0.05] = 0.3  # away from the kinks
    leaf, tleaf = minidl.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    h, th = leaf * 1.5, tleaf * 1.5
    out = getattr(F, name)(h, *args, **kwargs)
    assert getattr(torch.nn.functional, name)(th, *args, **kwargs) is th
    assert out is h
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), rtol=1e-5, atol=1e-6)
    (h * h).sum().backward()
    (th * th).sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), tleaf.grad.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="leaf"):
        getattr(F, name)(minidl.tensor(a, requires_grad=True), *args, **kwargs)
    plain = minidl.tensor(a)
    getattr(F, name)(plain, *args, **kwargs)  # no graph: written into the array
    np.testing.assert_allclose(plain.numpy(), getattr(torch.nn.functional, name)(
        torch.tensor(a), *args, **kwargs).numpy(), rtol=1e-5, atol=1e-6)


def test_rrelu_training_and_module():
    minidl.manual_seed(0)
    a = np.random.default_rng(0).standard_normal((200, 50)).astype(np.float32)
    x = minidl.tensor(a, requires_grad=True)
    y = F.rrelu(x, 0.1, 0.3, training=True)
    ratio = y.numpy()[a < 0] / a[a < 0]
    assert 0.1 <= ratio.min() and ratio.max() <= 0.3 and ratio.std() > 0.03
    np.testing.assert_array_equal(y.numpy()[a >= 0], a[a >= 0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy()[a < 0], ratio, rtol=1e-6)  # the slopes drawn
    x64 = minidl.tensor(a[:3, :4].astype(np.float64), dtype=minidl.float64, requires_grad=True)

    def fn(t):
        minidl.manual_seed(3)
        return F.rrelu(t, training=True)
    assert gradcheck(fn, [x64])
    m, t = nn.RReLU(0.1, 0.3), torch.nn.RReLU(0.1, 0.3)
    assert repr(m) == repr(t)
    m.eval()
    t.eval()
    np.testing.assert_allclose(m(minidl.tensor(a)).numpy(), t(torch.tensor(a)).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="ower bound (must|should) be less than or equal"):
        F.rrelu(minidl.tensor(a), 0.5, 0.1)
