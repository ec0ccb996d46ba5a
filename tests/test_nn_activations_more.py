"""ReLU6, Hardtanh, Softplus, Softsign, Mish, Hardswish, Hardsigmoid, PReLU, SELU, CELU, GLU,
Tanhshrink, Threshold, Softmin, LogSigmoid, Hardshrink, Softshrink (modules and functions):
float64 gradient checks, PyTorch parity (values, gradients, in-place, repr), autocast dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import away_from_zero, leaf

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
