"""The CPU backend's float32 sigmoid, SiLU and GELU kernels (backend/cpu/activations.py): torch
parity forward and backward, accuracy against float64 over the whole range (GELU's tail
relatively), the special values, both drivers, and call counts so the tests fail if the ops
stop using them. float64 keeps the NumPy code (the gradchecks elsewhere)."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.backend.cpu import activations, launch

torch = pytest.importorskip("torch", reason="the parity checks run the same ops in PyTorch")

KERNELS = minidl.backend.kernels(np)
CASES = {
    "sigmoid": (lambda t: minidl.sigmoid(t), torch.sigmoid),
    "silu": (F.silu, torch.nn.functional.silu),
    "gelu": (F.gelu, torch.nn.functional.gelu),
    "gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"),
                  lambda t: torch.nn.functional.gelu(t, approximate="tanh")),
}


@pytest.fixture
def calls(monkeypatch):
    seen = []
    for name in ("activation_forward", "activation_backward"):
        original = getattr(KERNELS, name)
        monkeypatch.setattr(KERNELS, name, lambda *a, _f=original, _n=name: (
            seen.append(_n), _f(*a))[1])
    return seen


@pytest.mark.parametrize("driver", ["serial", "parallel"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_parity_with_torch(name, driver, calls, monkeypatch):
    if driver == "parallel":
        monkeypatch.setitem(launch.THRESHOLDS, "act", 0)
    ours, theirs = CASES[name]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((7, 301)) * 4).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    mx, tx = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    my, ty = ours(mx), theirs(tx)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    (my * minidl.tensor(g)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    # torch's tanh-form gradient cancels in 0.5 (1 + tanh) in the negative tail, an absolute
    # error of a few 1e-6 there (ours is checked against float64 below)
    atol = 5e-6 if name == "gelu_tanh" else 1e-6
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=atol)
    assert calls == ["activation_forward", "activation_backward"]


def _reference(name, x):
    from math import erfc

    x = x.astype(np.float64)
    phi = np.array([0.5 * erfc(-v / np.sqrt(2)) for v in x])
    sig = 1 / (1 + np.exp(-x))
    z = np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)
    # 0.5 x (1 + tanh z) as x sigmoid(2z): float64's 1 + tanh z cancels in the tail too
    return {"sigmoid": sig, "silu": x * sig, "gelu": x * phi,
            "gelu_tanh": x / (1 + np.exp(-2 * z))}[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_accuracy_against_float64_over_the_range(name):
    """Relative error within a few float32 ulps, growing with x^2 in GELU's tail only as the
    float32 rounding of x does through exp(-x^2/2) (about 1e-5 at x = -12), wherever the value
    is well inside float32's normal range: the negative tails of GELU (both forms) and SiLU
    included, where an absolute error would be all of it. (PyTorch's float32 GELU gives 0
    there: it computes 1 + erf(x / sqrt 2), and 1 + tanh(...), which cancel.)"""
    x = np.linspace(-12, 12, 24001).astype(np.float32)
    op = getattr(activations, name.upper())
    got = KERNELS.activation_forward(x, op).astype(np.float64)
    want = _reference(name, x)
    normal = np.abs(want) > 1e-35
    rel = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    bound = 4e-7 * (1 + x[normal].astype(np.float64) ** 2)
    assert np.all(rel <= bound), (name, x[normal][np.argmax(rel / bound)], rel.max())


def _reference_grad(name, x):
    from math import erfc, exp, pi, sqrt

    x = x.astype(np.float64)
    if name == "gelu":
        return np.array([0.5 * erfc(-v / sqrt(2)) + v * exp(-v * v / 2) / sqrt(2 * pi)
                         for v in x])
    sig = 1 / (1 + np.exp(-x))
    if name == "silu":
        return sig * (1 + x * (1 - sig))
    if name == "sigmoid":
        return sig * (1 - sig)
    z = np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)
    s, sn = 1 / (1 + np.exp(-2 * z)), 1 / (1 + np.exp(2 * z))
    return s + 2 * x * s * sn * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x * x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_accuracy_against_float64(name):
    """The backward kernels against the float64 derivative, with the same bound as above
    (the sigmoid's kernel takes its output y; its rounding is part of the error here)."""
    x = np.linspace(-12, 12, 24001).astype(np.float32)
    op = getattr(activations, name.upper())
    arg = KERNELS.activation_forward(x, op) if name == "sigmoid" else x
    got = KERNELS.activation_backward(np.ones_like(x), arg, op).astype(np.float64)
    want = _reference_grad(name, x)
    # relative as above, plus a few float32 ulps of the O(1) terms the derivative sums (it
    # crosses 0 at GELU's and SiLU's minima; the sigmoid's is y (1 - y) from a rounded y)
    err = np.abs(got - want)
    bound = 4e-7 * (1 + x.astype(np.float64) ** 2) * np.abs(want) + 2e-7
    assert np.all(err <= bound), (name, x[np.argmax(err / bound)], (err / bound).max())


def test_special_values():
    x = np.float32([np.inf, -np.inf, np.nan, 0.0, -0.0, 100.0, -100.0])
    for name, want in (("sigmoid", [1, 0, np.nan, 0.5, 0.5, 1, 0]),
                       ("silu", [np.inf, np.nan, np.nan, 0, 0, 100, 0]),
                       ("gelu", [np.inf, np.nan, np.nan, 0, 0, 100, 0])):
        got = KERNELS.activation_forward(x, getattr(activations, name.upper()))
        theirs = {"sigmoid": torch.sigmoid, "silu": torch.nn.functional.silu,
                  "gelu": torch.nn.functional.gelu}[name](torch.tensor(x)).numpy()
        if name == "gelu":  # torch's float32 GELU gives NaN at +inf (inf * (1 + erf(inf))?
            theirs[0] = np.inf  # no: its formula's inf * 0.5 * 2 path); x Phi(x) is inf there
        np.testing.assert_array_equal(np.isnan(got), np.isnan(theirs), err_msg=name)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(np.float32(want)), err_msg=name)
        finite = ~np.isnan(theirs)
        np.testing.assert_allclose(got[finite], theirs[finite], atol=1e-30, err_msg=name)
        np.testing.assert_allclose(got[finite], np.float32(want)[finite], atol=1e-30,
                                   err_msg=name)


def test_float64_and_16_bit_keep_the_numpy_code(calls):
    x = minidl.tensor(np.linspace(-3, 3, 11), dtype="float64", requires_grad=True)
    F.gelu(x).sum().backward()
    minidl.sigmoid(x.detach().half())
    assert calls == []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_leaky_relu_kernels_match_torch_and_are_used(monkeypatch, dtype):
    from minidl.backend import cpu

    calls = []
    for name in ("leaky_relu_forward", "leaky_relu_backward"):
        fn = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    x = np.array([-2, -0.0, 0.0, 1e-30, -1e-30, 3, np.nan, -np.inf, np.inf] * 50, dtype=dtype)
    w = np.arange(x.size, dtype=dtype)
    xm = minidl.tensor(x, dtype=getattr(minidl, dtype), requires_grad=True)
    y = minidl.nn.functional.leaky_relu(xm, 0.2)
    (y * minidl.tensor(w, dtype=getattr(minidl, dtype))).sum().backward()
    assert calls == ["leaky_relu_forward", "leaky_relu_backward"]
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.leaky_relu(xt, 0.2)
    (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    np.testing.assert_array_equal(xm.grad.numpy(), xt.grad.numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-0.5, 2.0)])
def test_hardtanh_kernels_match_torch_and_are_used(monkeypatch, dtype, bounds):
    """ReLU6 and hardtanh in one pass each way; the gradient passes strictly inside the bounds
    (0 on them, as torch). NaN is left out: torch's float32 and float64 kernels disagree on it
    (minidl gives 0, as torch's float64)."""
    from minidl.backend import cpu

    calls = []
    for name in ("hardtanh_forward", "hardtanh_backward"):
        fn = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    lo, hi = bounds
    x = np.array([-7, -1, -0.5, 0, 1e-30, 2, 3, 6, 6.0001, -np.inf, np.inf, 5.9] * 40, dtype=dtype)
    w = np.arange(x.size, dtype=dtype)
    xm = minidl.tensor(x, dtype=getattr(minidl, dtype), requires_grad=True)
    y = F.hardtanh(xm, lo, hi)
    (y * minidl.tensor(w, dtype=getattr(minidl, dtype))).sum().backward()
    assert calls == ["hardtanh_forward", "hardtanh_backward"]
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.hardtanh(xt, lo, hi)
    (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    np.testing.assert_array_equal(xm.grad.numpy(), xt.grad.numpy())


def test_relu_backward_of_half_precision_is_a_select_as_torch():
    """float16's ReLU gradient: +0 where the output is <= 0 even for an infinite or negative
    incoming gradient (a product gave NaN and -0), passed on at NaN (torch's
    threshold_backward)."""
    from minidl.backend.cpu import activations

    g = np.array([np.inf, -1.0, 2.0, 3.0], np.float16)
    y = np.array([0.0, 0.0, np.nan, 1.0], np.float16)
    got = activations.relu_backward(g, y)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, [0.0, 0.0, 2.0, 3.0])
    assert not np.signbit(got[1])
