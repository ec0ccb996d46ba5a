"""Elementwise math (reciprocal, rsqrt, square, trigonometric, log1p/expm1/log2/log10,
sign and rounding with zero gradients), prod and logsumexp and norms over dims, amin,
lerp/addcmul/addcdiv, comparisons and logical ops, allclose/equal, and minidl.sum(x)-style
functions: PyTorch's values, dtypes and gradients in float64, finite-difference checks."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch
from minidl.testing import gradcheck
from helpers import raises_like_torch

rng = np.random.default_rng(2)
X = rng.standard_normal((3, 4))
POS = rng.uniform(0.5, 2.0, (3, 4))
UNIT = rng.uniform(-0.9, 0.9, (3, 4))
# away from the rounding steps, so finite differences never cross one
STEPS = np.array([[-2.3, -1.6, -0.4, 0.2], [0.7, 1.3, 2.6, -3.7], [4.2, -0.8, 1.9, 0.45]])

UNARY = [("reciprocal", X), ("rsqrt", POS), ("square", X), ("sin", X), ("cos", X),
         ("tan", UNIT), ("asin", UNIT), ("acos", UNIT), ("atan", X), ("sinh", X), ("cosh", X),
         ("log1p", POS), ("expm1", X), ("log2", POS), ("log10", POS), ("exp2", X),
         ("sign", X), ("floor", STEPS), ("ceil", STEPS), ("round", STEPS), ("trunc", STEPS),
         ("frac", STEPS), ("neg", X), ("negative", X)]


@pytest.mark.parametrize("name, a", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, a):
    check(lambda L, x: getattr(L, name)(x), a)
    check(lambda L, x: getattr(x, name)(), a)


@pytest.mark.parametrize("name", ["reciprocal", "sin", "log1p", "sign", "floor", "round",
                                  "square", "neg", "trunc", "ceil", "frac", "expm1"])
def test_unary_dtypes_of_integer_and_float32_input(name):
    ints = np.array([[-2, 0, 3], [1, 5, -7]])
    if name == "frac":  # floating-point only, in both
        with pytest.raises(TypeError, match="floating-point"):
            minidl.frac(minidl.tensor(ints))
        ints = ints.astype(np.float32)
    check(lambda L, x: getattr(L, name)(x), ints + (2 if name == "log1p" else 0), grad=False)
    check(lambda L, x: getattr(x, name)(), X.astype(np.float32), grad=False, rtol=1e-6)


def test_round_decimals_and_log1p_accuracy():
    check(lambda L, x: L.round(x, decimals=2), X, check_grad=False)
    check(lambda L, x: x.round(decimals=-1), X * 100, check_grad=False)
    tiny = np.array([1e-20, -1e-18, 3e-17])
    check(lambda L, x: L.log1p(x), tiny, rtol=1e-12, atol=0)
    check(lambda L, x: L.expm1(x), tiny, rtol=1e-12, atol=0)
    assert minidl.tensor(-2.0) .neg().item() == 2.0 and (-minidl.tensor(3.0)).item() == -3.0


@pytest.mark.parametrize("dim, keepdim", [(None, False), (0, False), (1, True), (-1, False)])
def test_prod(dim, keepdim):
    if dim is None:
        check(lambda L, x: L.prod(x), X)
        check(lambda L, x: x.prod(), POS)
    else:
        check(lambda L, x: L.prod(x, dim, keepdim), X)
        check(lambda L, x: x.prod(dim=dim, keepdim=keepdim), X)


@pytest.mark.parametrize("row", [[0.0, 2.0, 3.0, 0.5], [0.0, 0.0, 3.0, 1.0], [1.5, -1.0, 2.0, 3.0]])
def test_prod_gradient_with_zeros(row):
    a = np.array([row, [0.5, 0.0, 2.0, 3.0], [1.0, 2.0, -0.5, 0.25]])
    check(lambda L, x: L.prod(x, 1), a)
    check(lambda L, x: L.prod(x, 0), a)
    check(lambda L, x: L.prod(x), np.array(row))


def test_prod_dtypes():
    check(lambda L, x: L.prod(x, 0), np.array([[1, 2], [3, 4]]), grad=False)
    check(lambda L, x: x.prod(), np.array([True, True]), grad=False)
    check(lambda L, x: x.prod(1, dtype=L.float64), np.array([[1, 2], [3, 4]]), grad=False)


@pytest.mark.parametrize("dim, keepdim", [(0, False), (1, True), ((0, 1), False), (-1, False)])
def test_logsumexp(dim, keepdim):
    check(lambda L, x: L.logsumexp(x, dim, keepdim), X)
    check(lambda L, x: x.logsumexp(dim, keepdim=keepdim), X)


def test_logsumexp_is_stable():
    big = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, -np.inf, -np.inf],
                    [np.inf, 1.0, 2.0]])
    check(lambda L, x: L.logsumexp(x, 1), big, grad=False)
    check(lambda L, x: L.logsumexp(x, 1), big[:1], check_grad=False)


@pytest.mark.parametrize("p", [2, 1, float("inf"), float("-inf"), 3, 0.5, 0, "fro"])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (1, False), (0, True), ((0, 1), False)])
def test_norm(p, dim, keepdim):
    a = np.array([[0.3, -1.2, 2.5, 0.7], [-0.4, 1.1, -0.9, 1.9], [2.2, -0.1, 0.6, -1.5]])
    if p == "fro" and dim is not None and not isinstance(dim, tuple):
        return  # torch.norm('fro') over one dim is the 2-norm, covered by p=2
    check(lambda L, x: L.norm(x, p, dim, keepdim), a, check_grad=p != 0)
    check(lambda L, x: x.norm(p=p, dim=dim, keepdim=keepdim), a, check_grad=p != 0)
    if p != "fro":
        check(lambda L, x: L.linalg.vector_norm(x, p, dim, keepdim), a, check_grad=p != 0)


def test_norm_of_zeros_has_a_zero_gradient_and_dtype():
    check(lambda L, x: L.linalg.vector_norm(x), np.zeros((2, 3)), check_grad=False)
    check(lambda L, x: L.linalg.vector_norm(x, 1), np.array([0.0, 1.0, -2.0]), check_grad=False)
    check(lambda L, x: L.linalg.vector_norm(x, dtype=L.float64), X.astype(np.float32),
          check_grad=False)
    with pytest.raises(TypeError, match="floating-point"):
        minidl.linalg.vector_norm(minidl.tensor([1, 2]))


def test_amin_min_max():
    a = np.array([[0.3, -1.2, 2.5, 0.7], [-0.4, 1.1, -0.9, 1.9], [2.2, -0.1, 0.6, -1.5]])
    check(lambda L, x: L.amin(x), a)
    check(lambda L, x: x.amin(1), a)
    check(lambda L, x: L.amin(x, (0, 1), keepdim=True), a)
    check(lambda L, x: L.min(x, 1), a)
    check(lambda L, x: L.max(x, 0, keepdim=True), a)
    check(lambda L, x: L.max(x), a)
    r = minidl.max(minidl.tensor(a), 1)
    assert r.values.shape == (3,) and r.indices.dtype == np.int64


def test_lerp_addcmul_addcdiv():
    b, c = rng.standard_normal((3, 4)), rng.uniform(0.5, 2, (4,))
    check(lambda L, x, e: L.lerp(x, e, 0.3), X, b)
    check(lambda L, x, e, w: x.lerp(e, w), X, b, c)
    check(lambda L, x, e, w: L.addcmul(x, e, w, value=0.5), X, b, c)
    check(lambda L, x, e, w: x.addcdiv(e, w, value=-2), X, b, c)
    check(lambda L, x, e, w: x.addcmul(e, w), X, b, c)


def test_comparisons_and_logical_ops():
    a = np.array([[1.0, np.nan, 3.0], [np.inf, -np.inf, 0.0]])
    b = np.array([[1.0, 2.0, 2.0], [np.inf, 0.0, 0.0]])
    for name in ["eq", "ne", "lt", "le", "gt", "ge", "greater", "less_equal", "not_equal"]:
        check(lambda L, x, y: getattr(L, name)(x, y), a, b, grad=False)
        check(lambda L, x: getattr(x, name)(1.0), a, grad=False)
    for name in ["isnan", "isinf", "isfinite", "logical_not"]:
        check(lambda L, x: getattr(L, name)(x), a, grad=False)
        check(lambda L, x: getattr(x, name)(), np.array([1, 0, 2]), grad=False)
    for name in ["logical_and", "logical_or", "logical_xor"]:
        check(lambda L, x, y: getattr(L, name)(x, y), a, b, grad=False)
        check(lambda L, x, y: getattr(x, name)(y), np.array([True, False, True]),
              np.array([1, 1, 0]), grad=False)
    check(lambda L, x, y: L.isclose(x, y), a, b, grad=False)
    check(lambda L, x, y: L.isclose(x, y, equal_nan=True), a, a, grad=False)


@needs_torch
def test_allclose_equal():
    for lib in (minidl, torch):
        x = lib.tensor([1.0, 2.0, float("nan")])
        y = lib.tensor([1.0, 2.0 + 1e-6, float("nan")])
        assert lib.allclose(x, y) is False and x.allclose(y, equal_nan=True) is True
        assert x.allclose(y + 1e-3, equal_nan=True) is False
        assert lib.equal(x[:2], x[:2]) is True and lib.equal(x[:2], y[:2]) is False
        assert lib.equal(x[:2], x[:1]) is False


@pytest.mark.parametrize("name, args", [("sum", (1,)), ("mean", ()), ("exp", ()), ("abs", ()),
                                        ("transpose", (0, 1)), ("flatten", ()),
                                        ("unsqueeze", (0,)), ("softmax", (1,)),
                                        ("std", (0,)), ("pow", (2,))])
def test_module_level_forms_of_methods(name, args):
    check(lambda L, x: getattr(L, name)(x, *args), X)


@needs_torch
def test_fake_gpu(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    x = minidl.tensor(POS.astype(np.float32), device="cuda", requires_grad=True)
    y = x.log1p().sin() * x.prod(1, keepdim=True) + x.logsumexp(0) + x.norm(dim=1, keepdim=True)
    y.sum().backward()
    assert y.device == "cuda" and x.grad.device == "cuda" and x.grad.dtype == np.float32
    t = torch.tensor(POS.astype(np.float32), requires_grad=True)
    ty = t.log1p().sin() * t.prod(1, keepdim=True) + t.logsumexp(0) + t.norm(dim=1, keepdim=True)
    ty.sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-5)
    assert minidl.isnan(x).device == "cuda"


def test_remainder_fmod_floor_divide():
    a = np.array([[3.5, -2.5, 7.25], [-4.75, 5.5, -0.3]])
    b = np.array([[2.0, 2.0, -3.0], [1.5, -2.5, 0.7]])
    check(lambda L, x, y: L.remainder(x, y), a, b)
    check(lambda L, x, y: x % y, a, b)
    check(lambda L, x: x % 2, a)
    check(lambda L, x: 5.5 % x, b, grad=False)  # torch has no gradient for a tensor divisor of a number
    check(lambda L, x, y: L.fmod(x, y), a, b)
    check(lambda L, x: x.fmod(-2.0), a)
    check(lambda L, x, y: L.div(x, y, rounding_mode="floor"), a, b, check_grad=False)
    check(lambda L, x, y: x.div(y, rounding_mode="trunc"), a, b, check_grad=False)
    check(lambda L, x, y: x.div(y), a, b)
    check(lambda L, x, y: L.divide(x, y), a, b)
    ints = np.array([7, -7, 6, -1])
    check(lambda L, x: x // 2, ints, grad=False)
    check(lambda L, x: x % 3, ints, grad=False)
    check(lambda L, x: L.fmod(x, 3), ints, grad=False)
    check(lambda L, x: x.div(-2, rounding_mode="trunc"), ints, grad=False)
    check(lambda L, x: x.div(2, rounding_mode="floor"), ints, grad=False)
    check(lambda L, x: L.floor_divide(x, 2.5), ints, grad=False)
    check(lambda L, x: 9 // x, ints, grad=False)
    with pytest.raises(ValueError, match="rounding_mode"):
        minidl.tensor([1.0]).div(2, rounding_mode="round")


@pytest.mark.parametrize("ord", ["fro", 1, -1, float("inf"), float("-inf")])
def test_linalg_matrix_norm_and_norm(ord):
    a = np.array([[0.3, -1.2, 2.5, 0.7], [-0.4, 1.1, -0.9, 1.9], [2.2, -0.1, 0.6, -1.5]])
    check(lambda L, x: L.linalg.matrix_norm(x, ord), a)
    check(lambda L, x: L.linalg.matrix_norm(x, ord, dim=(0, 2), keepdim=True),
          np.stack([a, a * 2 - 1]).transpose(1, 0, 2).copy())
    check(lambda L, x: L.linalg.norm(x, ord), a)
    check(lambda L, x: L.linalg.norm(x, ord, dim=(1, 0)), a)


def test_linalg_norm_vectors_and_cross():
    a = np.array([[0.3, -1.2, 2.5, 0.7], [-0.4, 1.1, -0.9, 1.9], [2.2, -0.1, 0.6, -1.5]])
    check(lambda L, x: L.linalg.norm(x), a)
    check(lambda L, x: L.linalg.norm(x, 3, dim=1), a)
    check(lambda L, x: L.linalg.norm(x[0], 1), a)
    check(lambda L, x: L.linalg.norm(x, dim=0, keepdim=True), a)
    check(lambda L, x, y: L.linalg.cross(x, y), a[:, :3].copy(), a[:, 1:].copy())
    check(lambda L, x: L.linalg.matrix_norm(x, "nuc"), a)  # through the SVD (test_linalg.py)


# ---- step functions (sign, floor, ceil, round, trunc): exact zero gradients -------------------

def test_step_functions_pass_exact_zeros_for_an_inf_or_nan_gradient():
    """sign/floor/ceil/round/trunc: the gradient is zero whatever arrives (it was g * 0,
    NaN for an inf or NaN gradient), as torch's."""
    for name in ("sign", "floor", "ceil", "round", "trunc"):
        x = minidl.tensor([1.5, -2.5, 0.0], requires_grad=True)
        getattr(minidl, name)(x).backward(minidl.tensor([float("inf"), float("nan"), 1.0]))
        assert x.grad.tolist() == [0.0, 0.0, 0.0], name


# ---- angle and digamma at the edges -----------------------------------------------------------

INF, NAN = float("inf"), float("nan")


def test_angle_of_infinity_is_zero_with_a_zero_gradient():
    x = minidl.tensor([INF, -INF, NAN, 2.0, -3.0], dtype=minidl.float64, requires_grad=True)
    y = minidl.angle(x)
    np.testing.assert_array_equal(y.detach().numpy(), [0.0, np.pi, NAN, 0.0, np.pi])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(5))


def test_digamma_of_signed_zeros():
    for dtype in (minidl.float16, minidl.float32, minidl.float64):
        y = minidl.digamma(minidl.tensor([-0.0, 0.0], dtype=dtype)).float().numpy()
        np.testing.assert_array_equal(y, [INF, -INF])


def test_angle_digamma_parity():
    torch = pytest.importorskip("torch")
    v = [INF, -INF, NAN, -0.0, 0.0, 2.5, -3.0]
    for name in ("angle", "digamma"):
        for dt in ("float16", "float64"):
            ours = getattr(minidl, name)(minidl.tensor(v, dtype=getattr(minidl, dt)))
            theirs = getattr(torch, name)(torch.tensor(v, dtype=getattr(torch, dt)))
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-3)


# ---- integer division by zero of nothing ------------------------------------------------------

def test_integer_division_by_zero_of_an_empty_tensor_gives_an_empty_tensor():
    e = minidl.zeros(0, dtype=minidl.int8)
    assert (e // 0).shape == (0,)
    assert minidl.remainder(e, 0).dtype == minidl.int8
    assert minidl.div(e, minidl.tensor(0), rounding_mode="trunc").shape == (0,)
    out = minidl.fmod(minidl.zeros(3, 0, dtype=minidl.int16), minidl.zeros(2, 1, 1, dtype=minidl.int16))
    assert out.shape == (2, 3, 0)
    with pytest.raises(ZeroDivisionError):
        minidl.tensor([1, 2]) // 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        minidl.fmod(minidl.tensor([1, 2]), minidl.tensor([1, 0]))


# ---- lerp's two forms -------------------------------------------------------------------------

def test_lerp_uses_torchs_two_forms_at_infinities():
    start = minidl.tensor([2.5, -INF, 1.0])
    end = minidl.tensor([-INF, -3.8, 2.0])
    np.testing.assert_array_equal(minidl.lerp(start, end, 0.5).numpy()[:2], [NAN, -INF])
    np.testing.assert_array_equal(minidl.lerp(start, end, 0.2).numpy()[:2], [-INF, NAN])
    assert minidl.lerp(minidl.tensor([0.1]), minidl.tensor([0.7]), 1.0).item() == np.float32(0.7)
    w = minidl.tensor([0.5, 0.2, 1.0])
    np.testing.assert_array_equal(minidl.lerp(start, end, w).numpy(), [NAN, NAN, 2.0])


def test_lerp_parity_and_gradcheck():
    torch = pytest.importorskip("torch")
    s = np.array([2.5, -INF, 1.0, 0.3])
    e = np.array([-INF, -3.8, 2.0, 0.9])
    for w in (0.5, 0.2, 1.0, 0.7, -0.6):
        ours = minidl.lerp(minidl.tensor(s), minidl.tensor(e), w).numpy()
        theirs = torch.lerp(torch.tensor(s, dtype=torch.float32),
                            torch.tensor(e, dtype=torch.float32), w).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    a = minidl.tensor([0.3, -1.2, 2.0], dtype=minidl.float64, requires_grad=True)
    b = minidl.tensor([1.1, 0.4, -0.5], dtype=minidl.float64, requires_grad=True)
    w = minidl.tensor([0.2, 0.6, 1.3], dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda a, b, w: minidl.lerp(a, b, w), (a, b, w))
    assert gradcheck(lambda a, b: minidl.lerp(a, b, 0.75), (a, b))


# ---- gradients at the odd points --------------------------------------------------------------

def test_abs_and_norm_gradients_at_nan_are_zero():
    x = minidl.tensor([NAN, -2.0, 0.0, 3.0], dtype=minidl.float64, requires_grad=True)
    x.abs().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, -1, 0, 1])
    for p in (1, INF):
        x = minidl.tensor([NAN, -2.0, 0.0, 3.0], dtype=minidl.float64, requires_grad=True)
        x.norm(p=p).backward()
        assert not np.isnan(x.grad.numpy()).any()
    x = minidl.tensor([1.0, -3.0, 0.0, 3.0], dtype=minidl.float64, requires_grad=True)
    x.norm(p=INF).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, -0.5, 0, 0.5])


def test_acosh_gradient_is_torchs_formula_outside_the_domain():
    x = minidl.tensor([-4.03, 1.5], dtype=minidl.float64, requires_grad=True)
    x.acosh().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 1 / np.sqrt(np.array([-4.03, 1.5]) ** 2 - 1))
    x = minidl.tensor([1.5, 3.0], dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda t: t.acosh(), (x,))


def test_remainder_gradient_for_the_divisor_uses_torchs_floor_division():
    a = minidl.tensor([0.26, INF, 2.1], dtype=minidl.float64, requires_grad=True)
    b = minidl.tensor([-2.29, -2.32, 1.61], dtype=minidl.float64, requires_grad=True)
    minidl.remainder(a, b).sum().backward()
    assert np.isnan(b.grad.numpy()[1])  # inf // x is NaN in torch
    np.testing.assert_allclose(b.grad.numpy()[[0, 2]], [1.0, -1.0])


def test_polygamma_at_minus_infinity_gives_nan_instead_of_crashing():
    x = minidl.tensor([-2.33, -INF, INF, NAN, 0.8], dtype=minidl.float64, requires_grad=True)
    y = minidl.polygamma(1, x)
    assert np.isnan(y.detach().numpy()[1]) and y.detach().numpy()[2] == 0.0
    y.sum().backward()
    assert x.grad.shape == (5,)


def test_cumprod_gradient_over_a_single_element_is_the_incoming_gradient():
    x = minidl.tensor(INF, dtype=minidl.float64, requires_grad=True)
    (minidl.cumprod(x, 0) * 0.29).sum().backward()
    assert x.grad.item() == pytest.approx(0.29)
    x = minidl.tensor([[INF], [2.0]], dtype=minidl.float64, requires_grad=True)
    minidl.cumprod(x, 1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0], [1.0]])


def test_sinc_gradient_near_zero():
    x = minidl.tensor([1e-300, 1e-10, 0.0, 1e-5, 3.1e-4, 0.7], dtype=minidl.float64,
                      requires_grad=True)
    minidl.sinc(x).sum().backward()
    u = np.pi * np.array([1e-300, 1e-10, 0.0, 1e-5, 3.1e-4, 0.7])
    expect = np.pi * np.array([-v / 3 for v in u[:5]] + [(u[5] * np.cos(u[5]) - np.sin(u[5]))
                                                          / u[5] ** 2])
    np.testing.assert_allclose(x.grad.numpy(), expect, rtol=1e-6, atol=1e-300)
    assert gradcheck(minidl.sinc, (minidl.tensor([1e-4, 3e-4, 0.5, -2e-4], dtype=minidl.float64,
                                                 requires_grad=True),))


def test_odd_point_gradients_match_torch():
    torch = pytest.importorskip("torch")
    cases = [
        ("abs", [NAN, -2.0, 0.0, 3.0], lambda L, t: t.abs()),
        ("norm1", [NAN, -2.0, 0.0, 3.0], lambda L, t: t.norm(p=1)),
        ("norminf", [NAN, -2.0, 0.0, 3.0], lambda L, t: t.norm(p=float("inf"))),
        ("acosh", [-4.03, 1.5, 2.5], lambda L, t: t.acosh()),
        ("cumprod", [INF], lambda L, t: L.cumprod(t, 0)),
        ("sinc", [1e-300, 1e-5, 0.7], lambda L, t: L.sinc(t)),
        ("remainder", [0.26, 2.1], lambda L, t: L.remainder(L.tensor([INF, 1.0],
                                                                     dtype=L.float64), t)),
    ]
    for name, v, fn in cases:
        grads = []
        for L in (minidl, torch):
            t = L.tensor(v, dtype=L.float64, requires_grad=True)
            fn(L, t).sum().backward()
            grads.append(t.grad.numpy())
        # (torch's sinc quotient loses digits near 0: 1e-6)
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-12, err_msg=name)


# ---- isclose and allclose need one dtype ------------------------------------------------------

def test_isclose_and_allclose_need_one_dtype():
    with pytest.raises(RuntimeError, match="did not match"):
        minidl.isclose(minidl.tensor([1, 2], dtype=minidl.int16), minidl.tensor([True, False]))
    with pytest.raises(RuntimeError, match="did not match"):
        minidl.allclose(minidl.tensor([1.0]), minidl.tensor([1.0], dtype=minidl.float64))
    assert minidl.isclose(minidl.tensor([1.0, NAN]), minidl.tensor([1.0, NAN]),
                          equal_nan=True).numpy().all()
    torch = pytest.importorskip("torch")
    raises_like_torch(lambda: minidl.isclose(minidl.tensor([1]), minidl.tensor([1.0])),
                       lambda: torch.isclose(torch.tensor([1]), torch.tensor([1.0])))
