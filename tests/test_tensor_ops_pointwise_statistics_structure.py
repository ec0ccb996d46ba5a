"""Tensor ops of the backend's pointwise.py, statistics.py and structure.py: elementwise (asinh...,
copysign, heaviside, fmax/fmin, ldexp/frexp, gcd/lcm, nextafter), statistics (aminmax, nanmedian,
quantile, mode, dist, cov/corrcoef), products and shape/scatter ops (tensordot, kron, addr/addbmm,
diag_embed, *_scatter, masked_scatter, fill_diagonal_, index_reduce), tensor queries and in-place
samplers. PyTorch's values, dtypes and gradients in float64 (broadcasting and negative dims
included), finite-difference checks, and PyTorch's errors."""
import numpy as np
import pytest

import minidl
from _ops_check import check, torch

rng = np.random.default_rng(7)
X = rng.standard_normal((3, 4))
Y = rng.standard_normal((3, 4))
ROW = rng.standard_normal((4,))
UNIT = rng.uniform(-0.9, 0.9, (3, 4))
ABOVE1 = rng.uniform(1.2, 3.0, (3, 4))
INTS = np.array([[-4, 0, 6, 9], [12, -15, 7, 0]])


# ---- group 1: elementwise --------------------------------------------------------------------
UNARY = [("asinh", X), ("arcsinh", X), ("acosh", ABOVE1), ("arccosh", ABOVE1), ("atanh", UNIT),
         ("arctanh", UNIT), ("deg2rad", X * 90), ("rad2deg", X), ("fix", X * 3),
         ("absolute", X + 0.01), ("positive", X), ("negative", X), ("arctan", X)]


@pytest.mark.parametrize("name, a", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, a):
    check(lambda L, x: getattr(L, name)(x), a)
    check(lambda L, x: getattr(x, name)(), a)


def test_sgn_is_sign_with_a_zero_gradient():
    check(lambda L, x: L.sgn(x), X, grad=False)
    check(lambda L, x: x.sgn(), INTS, grad=False)
    x = minidl.tensor(X, requires_grad=True)
    x.sgn().sum().backward()
    assert x.grad is not None and not x.grad.numpy().any()


@pytest.mark.parametrize("name", ["asinh", "acosh", "atanh", "deg2rad", "rad2deg", "sgn", "fix",
                                  "positive", "absolute", "signbit", "isposinf", "isneginf",
                                  "isreal"])
@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool", "float32"])
def test_unary_dtypes(name, dtype):
    a = np.array([[2, 0, 1], [3, 1, 5]]).astype(dtype)
    if dtype == "bool" and name in ("positive", "absolute", "fix"):
        with pytest.raises((TypeError, RuntimeError)):
            getattr(minidl, name)(minidl.tensor(a))
        return
    check(lambda L, x: getattr(L, name)(x), a, grad=False, rtol=1e-6)


@pytest.mark.parametrize("b", [Y, ROW, np.array(-0.7), -2.5], ids=["same", "row", "0d", "num"])
def test_copysign(b):
    a = X.copy()
    a[0, 0] = 0.0
    if isinstance(b, float):
        check(lambda L, x: L.copysign(x, b), a)
    else:
        check(lambda L, x, y: L.copysign(x, y), a, b)
        check(lambda L, x, y: x.copysign(y), a, b)


def test_copysign_and_signbit_dtypes():
    check(lambda L, x, y: L.copysign(x, y), INTS, INTS[::-1].copy(), grad=False)
    check(lambda L, x: L.signbit(x), np.array([-0.0, 0.0, -1.0, np.nan, -np.inf]), grad=False)
    check(lambda L, x: L.signbit(x), INTS, grad=False)


def test_heaviside():
    a = np.array([-1.5, 0.0, 2.0, 0.0])
    check(lambda L, x, v: L.heaviside(x, v), a, np.array([0.5, 0.25, 7.0, -1.0]), grad=False)
    check(lambda L, x, v: x.heaviside(v), a, np.array(0.5), grad=False)
    check(lambda L, x, v: L.heaviside(x, v), INTS, np.array(3), grad=False)
    with pytest.raises(TypeError, match="same dtype"):
        minidl.heaviside(minidl.tensor(a), minidl.tensor([1, 2, 3, 4]))
    x = minidl.tensor(a, requires_grad=True, dtype=np.float64)
    with pytest.raises(RuntimeError, match="not implemented"):
        minidl.heaviside(x, minidl.tensor(0.5, dtype=np.float64)).sum().backward()


@pytest.mark.parametrize("name", ["fmax", "fmin"])
def test_fmax_fmin(name):
    a, b = X.copy(), Y.copy()
    a[0, 0] = b[0, 0] = np.nan
    a[0, 1] = np.nan
    b[1, 2] = np.nan
    a[2, 3] = b[2, 3]  # a tie: the input takes the gradient, as PyTorch's
    check(lambda L, x, y: getattr(L, name)(x, y), a, b, check_grad=False)
    check(lambda L, x, y: getattr(x, name)(y), X, ROW)
    check(lambda L, x, y: getattr(L, name)(x, y), INTS, INTS[::-1].copy(), grad=False)
    check(lambda L, x, y: getattr(L, name)(x, y), INTS, X[:2].astype(np.float32), grad=False)
    with pytest.raises(TypeError, match="other"):
        getattr(minidl, name)(minidl.tensor(X), 2.0)
    with pytest.raises(ValueError, match="broadcast"):
        getattr(minidl, name)(minidl.tensor(X), minidl.tensor(Y[:, :3]))


def test_float_power():
    pos = np.abs(X) + 0.5
    check(lambda L, x, y: L.float_power(x, y), pos, Y)
    check(lambda L, x, y: x.float_power(y), pos, ROW)
    check(lambda L, x: L.float_power(x, 3), X)
    check(lambda L, x: L.float_power(x, 0.5), pos)
    check(lambda L, x: L.float_power(2, x), X)
    check(lambda L, x: L.float_power(x, 2), INTS, grad=False)
    check(lambda L, x: L.float_power(x, 2), X.astype(np.float32), grad=False)
    check(lambda L, x, y: L.float_power(x, y), np.abs(X[:2]).astype(np.float32), INTS % 4,
          grad=False)


def test_ldexp_and_frexp():
    e = np.array([[1, -2, 0, 3], [2, 2, -1, 0], [0, 5, 1, -3]])
    check(lambda L, x, y: L.ldexp(x, y), X, e.astype(np.float64))
    check(lambda L, x, y: x.ldexp(y), X, ROW)
    # an integer exponent: PyTorch's input gradient 2**e is computed in integers there (0 for
    # negative e), which minidl does not copy; compared where e >= 0
    check(lambda L, x, y: L.ldexp(x, y), X, np.abs(e))
    check(lambda L, x, y: L.ldexp(x, y), X, e, grad=False)
    x = minidl.tensor(X, dtype=np.float64, requires_grad=True)
    minidl.ldexp(x, minidl.tensor(e)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0 ** e)
    check(lambda L, x, y: L.ldexp(x, y), INTS[:, :3], e[:2, :3], grad=False)
    check(lambda L, x: L.frexp(x), X * 100)
    check(lambda L, x: x.frexp(), np.array([0.0, -0.0, 1.0, -3.5, 1e-300, np.inf]),
          grad=False)
    check(lambda L, x: L.frexp(x), X.astype(np.float32), grad=False)
    with pytest.raises(RuntimeError, match="floating-point"):
        minidl.frexp(minidl.tensor(INTS))
    with pytest.raises(TypeError, match="other"):
        minidl.ldexp(minidl.tensor(X), 2)


def test_gcd_lcm():
    a, b = INTS, np.array([[6, 0, -4, 3], [8, 10, 7, 5]])
    for name in ("gcd", "lcm"):
        check(lambda L, x, y: getattr(L, name)(x, y), a, b, grad=False)
        check(lambda L, x, y: getattr(x, name)(y), a, np.array(4), grad=False)
        check(lambda L, x, y: getattr(L, name)(x, y), a.astype(np.int32), b.astype(np.int16),
              grad=False)
        with pytest.raises(NotImplementedError, match="integer"):
            getattr(minidl, name)(minidl.tensor(X), minidl.tensor(Y))
        with pytest.raises(NotImplementedError):
            getattr(minidl, name)(minidl.tensor([True]), minidl.tensor([False]))


def test_nextafter():
    b = Y.copy()
    b[1, 1] = X[1, 1]
    check(lambda L, x, y: L.nextafter(x, y), X, b, rtol=0, atol=0, check_grad=False)
    check(lambda L, x, y: x.nextafter(y), X.astype(np.float32), np.array(np.inf, np.float32),
          rtol=0, atol=0, check_grad=False)
    with pytest.raises(NotImplementedError):
        minidl.nextafter(minidl.tensor(INTS), minidl.tensor(INTS))


def test_isposinf_isneginf_isreal():
    a = np.array([np.inf, -np.inf, np.nan, 0.0, -2.0])
    for name in ("isposinf", "isneginf", "isreal"):
        check(lambda L, x: getattr(L, name)(x), a, grad=False)
        check(lambda L, x: getattr(x, name)(), a.astype(np.float32), grad=False)


def test_arithmetic_aliases():
    check(lambda L, x, y: L.multiply(x, y), X, ROW)
    check(lambda L, x, y: x.multiply(y), X, Y)
    check(lambda L, x, y: L.subtract(x, y, alpha=2.5), X, ROW)
    check(lambda L, x, y: x.subtract(y), X, Y)
    check(lambda L, x, y: L.subtract(x, y, alpha=2), INTS, INTS, grad=False)
    check(lambda L, x, y: L.true_divide(x, y), X, Y)
    check(lambda L, x, y: L.true_divide(x, y), INTS, INTS + 20, grad=False)
    check(lambda L, x, y: x.true_divide(y), X, ROW)
    check(lambda L, x, y: L.divide(x, y, rounding_mode="floor"), INTS, INTS + 20, grad=False)
    check(lambda L, x, y: L.not_equal(x, y), INTS, INTS[::-1].copy(), grad=False)
    check(lambda L, x, y: L.multiply(x, y), np.array([True, False]), np.array([True, True]),
          grad=False)
    with pytest.raises((TypeError, RuntimeError)):
        minidl.subtract(minidl.tensor([True]), minidl.tensor([False]))


def test_inverse_hyperbolic_edges():
    check(lambda L, x: L.atanh(x), np.array([-1.0, 1.0, 0.0, 2.0]), grad=False)
    check(lambda L, x: L.acosh(x), np.array([1.0, 0.5, 1e6]), grad=False)
    check(lambda L, x: L.asinh(x), np.array([-1e300, 1e-300, 0.0]), grad=False, rtol=1e-12)


# ---- group 2: reductions and statistics ------------------------------------------------------
DISTINCT = rng.permutation(24).reshape(2, 3, 4) * 0.37 - 4.0


@pytest.mark.parametrize("dim, keepdim", [(None, False), (None, True), (0, False), (-1, True),
                                          (1, False)])
def test_aminmax(dim, keepdim):
    check(lambda L, x: L.aminmax(x, dim=dim, keepdim=keepdim), DISTINCT)
    check(lambda L, x: x.aminmax(dim=dim, keepdim=keepdim), INTS, grad=False)


def test_aminmax_ties_share_the_gradient_and_errors():
    a = np.array([[1.0, 3.0, 3.0], [0.0, 0.0, 2.0]])
    check(lambda L, x: L.aminmax(x), a, check_grad=False)
    check(lambda L, x: L.aminmax(x, dim=1)[1], a, check_grad=False)
    check(lambda L, x: L.aminmax(x, dim=1)[0], a, check_grad=False)
    check(lambda L, x: L.aminmax(x), np.array([True, False]), grad=False)
    check(lambda L, x: L.aminmax(x, dim=0), np.array(2.5))
    with pytest.raises(RuntimeError, match="empty"):
        minidl.aminmax(minidl.tensor(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="empty"):
        minidl.aminmax(minidl.tensor(np.zeros((2, 0))), dim=1)


@pytest.mark.parametrize("dim, keepdim", [(None, False), (0, False), (-1, True), (1, False)])
def test_nanmedian(dim, keepdim):
    a = DISTINCT.copy()
    a[0, 1, 2] = a[1, 0, 0] = a[1, 2, 3] = np.nan
    if dim is None:
        check(lambda L, x: L.nanmedian(x), a)
        check(lambda L, x: x.nanmedian(), DISTINCT)
    else:
        check(lambda L, x: L.nanmedian(x, dim, keepdim), a, check_grad=False)
        check(lambda L, x: x.nanmedian(dim, keepdim=keepdim), DISTINCT)
        # an all-NaN slice: NaN (its index is where PyTorch's partial sort left it: not compared)
        a[0, 2, :] = a[1, :, 1] = np.nan
        check(lambda L, x: L.nanmedian(x, dim, keepdim)[0], a, grad=False)
    check(lambda L, x: L.nanmedian(x, -1), np.array([[2.0, 1, 2, 2], [1, 1, 3, 3], [3, 3, 1, 1]]),
          check_grad=False)
    check(lambda L, x: L.nanmedian(x), np.array([2.0, 1, 2, 2, 5, np.nan]), check_grad=False)
    check(lambda L, x: L.nanmedian(x, 0), INTS, grad=False)


QUANTILE_CASES = [(0.3, None, False), (0.5, 1, False), (1.0, -1, True), (0.0, 0, True),
                  ([0.1, 0.5, 0.95], -1, False), ([0.25, 0.75], 0, True),
                  ([0.6], None, True), ("0d", 1, False)]


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
@pytest.mark.parametrize("q, dim, keepdim", QUANTILE_CASES)
def test_quantile(q, dim, keepdim, interpolation):
    def fn(L, x):
        qq = q
        if q == "0d":
            qq = L.tensor(0.4, dtype=x.dtype)
        elif isinstance(q, list):
            qq = L.tensor(np.array(q), dtype=x.dtype)
        return L.quantile(x, qq, dim, keepdim, interpolation=interpolation)
    check(fn, DISTINCT)


@pytest.mark.parametrize("interpolation", ["linear", "nearest", "midpoint"])
def test_quantile_nan_and_nanquantile(interpolation):
    a = DISTINCT[0].copy()
    a[0, 1] = a[2, 2] = np.nan
    a[1, :] = np.nan
    q = np.array([0.2, 0.5, 0.9])
    for name in ("quantile", "nanquantile"):
        check(lambda L, x, qq: getattr(L, name)(x, qq, 1, interpolation=interpolation),
              a, q, check_grad=False)
        check(lambda L, x, qq: getattr(x, name)(qq, 0, True, interpolation=interpolation),
              a, q, check_grad=False)
        check(lambda L, x: getattr(L, name)(x, 0.5), a, check_grad=False)
    b = DISTINCT[0].copy()
    b[0, 0] = np.nan
    check(lambda L, x: L.nanquantile(x, 0.7, dim=-1), b)
    # the gradient of q itself (linear interpolation), as PyTorch's
    check(lambda L, x, qq: L.quantile(x, qq, 1), DISTINCT[0], np.array([0.15, 0.55, 0.8]))
    check(lambda L, x, qq: L.nanquantile(x, qq, 1), b, np.array([0.15, 0.55, 0.8]))
    check(lambda L, x: L.quantile(x, 0.25), DISTINCT.astype(np.float32), grad=False, rtol=1e-6)
    halves = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # ranks at .5: nearest rounds half to even
    check(lambda L, x: L.quantile(x, L.tensor([0.125, 0.375, 0.625, 0.875], dtype=x.dtype),
                                  interpolation="nearest"), halves)


def test_quantile_errors():
    x = minidl.tensor(X)
    with pytest.raises(RuntimeError, match="float or double"):
        minidl.quantile(minidl.tensor(INTS), 0.5)
    with pytest.raises(ValueError, match="range"):
        minidl.quantile(x, 1.5)
    with pytest.raises(ValueError, match="range"):
        x.nanquantile(minidl.tensor([0.5, -0.1]))
    with pytest.raises(RuntimeError, match="same dtype"):
        minidl.quantile(x, minidl.tensor([0.5], dtype=np.float64))
    with pytest.raises(RuntimeError, match="1D"):
        minidl.quantile(x, minidl.tensor([[0.5]]))
    with pytest.raises(RuntimeError, match="interpolation"):
        minidl.quantile(x, 0.5, interpolation="cubic")
    with pytest.raises(RuntimeError, match="non-empty"):
        minidl.quantile(minidl.tensor(np.zeros(0, np.float32)), 0.5)
    with pytest.raises(IndexError):
        minidl.quantile(x, 0.5, dim=2)


@pytest.mark.parametrize("dim, keepdim", [(-1, False), (0, True), (1, False)])
def test_mode(dim, keepdim):
    a = np.array([[[1, 5, 5, 1, 7], [2, 2, 2, 0, 0], [3, 1, 1, 3, 4]],
                  [[9, 9, 8, 8, 8], [6, 5, 4, 3, 2], [0, 0, 0, 0, 0]]], dtype=np.float64)
    # finite differences break the ties that make a mode: torch's gradients only
    check(lambda L, x: L.mode(x, dim, keepdim), a, check_grad=False)
    check(lambda L, x: x.mode(dim, keepdim=keepdim), a.astype(np.int64), grad=False)
    check(lambda L, x: L.mode(x), np.array([[2.0, 1, 2, 2], [1, 1, 3, 3], [3, 3, 1, 1]]),
          check_grad=False)
    check(lambda L, x: L.mode(x), np.array(3.0))
    check(lambda L, x: L.mode(x, 0), np.array([True, False, True]), grad=False)


@pytest.mark.parametrize("p", [2, 1, 0, 3.5, float("inf"), float("-inf")])
def test_dist(p):
    a, b = DISTINCT[0], DISTINCT[1][::-1].copy()
    check(lambda L, x, y: L.dist(x, y, p), a, b, grad=p != 0)  # p = 0: a zero gradient
    check(lambda L, x, y: x.dist(y, p=p), a, b[1], grad=p != 0)


@pytest.mark.parametrize("correction", [1, 0, 2])
def test_cov_and_corrcoef(correction):
    a = rng.standard_normal((3, 6))
    fw = np.array([1, 2, 0, 3, 1, 1])
    aw = rng.uniform(0.2, 2.0, 6)
    check(lambda L, x: L.cov(x, correction=correction), a)
    check(lambda L, x: x.cov(correction=correction), a[0])
    check(lambda L, x, f: L.cov(x, correction=correction, fweights=f), a, fw)
    check(lambda L, x, w: L.cov(x, correction=correction, aweights=w), a, aw)
    check(lambda L, x, f, w: L.cov(x, correction=correction, fweights=f, aweights=w), a, fw, aw)
    check(lambda L, x: L.corrcoef(x), a)
    check(lambda L, x: x.corrcoef(), a[:1])
    check(lambda L, x: L.cov(x), INTS, grad=False)
    check(lambda L, x: L.corrcoef(x), INTS, grad=False, rtol=1e-6)


def test_cov_errors_and_degrees_of_freedom():
    x = minidl.tensor(X)
    with pytest.raises(RuntimeError, match="two or fewer"):
        minidl.cov(minidl.tensor(np.zeros((2, 2, 2))))
    with pytest.raises(TypeError, match="integral"):
        minidl.cov(x, fweights=minidl.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(TypeError, match="floating point"):
        minidl.cov(x, aweights=minidl.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="negative"):
        minidl.cov(x, fweights=minidl.tensor([1, -2, 3, 4]))
    with pytest.raises(ValueError, match="numel"):
        minidl.cov(x, fweights=minidl.tensor([1, 2, 3]))
    with pytest.warns(UserWarning, match="degrees of freedom"):
        out = minidl.cov(minidl.tensor(np.ones((2, 1))))
    assert np.isnan(out.numpy()).all()


def test_quantile_and_dist_under_autocast():
    torch_ = pytest.importorskip("torch")
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((3, 4)).astype(np.float32)
    m = rng.standard_normal((2, 3, 4)).astype(np.float32)
    with minidl.autocast("cpu"), torch_.autocast("cpu"):
        for fn in (lambda L, x, y: L.quantile(x, 0.3), lambda L, x, y: L.nanquantile(x, 0.3, 1),
                   lambda L, x, y: L.dist(x, y), lambda L, x, y: L.cov(x),
                   lambda L, x, y: L.corrcoef(x)):
            mine = fn(minidl, minidl.tensor(a), minidl.tensor(b))
            theirs = fn(torch_, torch_.tensor(a), torch_.tensor(b))
            assert str(mine.dtype) == str(theirs.dtype).replace("torch.", "")
        mine = minidl.quantile(minidl.tensor(m).to(minidl.bfloat16), 0.5, dim=0)
        theirs = torch_.quantile(torch_.tensor(m).bfloat16(), 0.5, dim=0)
        assert mine.dtype == np.float32 and theirs.dtype == torch_.float32


# ---- group 3: products, shapes, scatters -----------------------------------------------------
A3 = rng.standard_normal((2, 3, 4))
B3 = rng.standard_normal((4, 3, 5))


@pytest.mark.parametrize("dims", [2, 1, 0, ([1, 0], [1, 0]), ([2], [0]), [[-1, 1], [0, -2]],
                                  ([], [])])
def test_tensordot(dims):
    b = B3  # (4, 3, 5)
    if dims == 2:
        b = rng.standard_normal((3, 4, 2))
    elif dims == ([1, 0], [1, 0]):
        b = rng.standard_normal((2, 3, 5))
    check(lambda L, x, y: L.tensordot(x, y, dims), A3, b)
    check(lambda L, x, y: L.tensordot(x, y, dims=dims), A3, b)


def test_tensordot_errors():
    a = minidl.tensor(A3)
    with pytest.raises(RuntimeError, match="dims"):
        minidl.tensordot(a, a, 4)
    with pytest.raises(ValueError, match="need to match"):
        minidl.tensordot(a, a, ([0], [1]))
    with pytest.raises(TypeError):
        minidl.tensordot(a, a, (0, 0, 1))
    with pytest.raises(TypeError, match="same dtype"):
        minidl.tensordot(a, minidl.tensor(INTS), 0)


@pytest.mark.parametrize("sa, sb", [((2, 3), (2, 2)), ((3,), (2, 2)), ((), (2, 3)),
                                    ((2, 1, 3), (2, 2))])
def test_kron(sa, sb):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    check(lambda L, x, y: L.kron(x, y), a, b)
    check(lambda L, x, y: x.kron(y), a, b)
    check(lambda L, x, y: L.kron(x, y), INTS[:, :2], np.array([[1, 2], [3, 4]]), grad=False)


@pytest.mark.parametrize("beta, alpha", [(1, 1), (0.5, 2.0), (0, -1.5)])
def test_addr_addbmm(beta, alpha):
    inp, v1, v2 = rng.standard_normal((3, 4)), rng.standard_normal(3), rng.standard_normal(4)
    check(lambda L, m, a, b: L.addr(m, a, b, beta=beta, alpha=alpha), inp, v1, v2)
    check(lambda L, m, a, b: m.addr(a, b, beta=beta, alpha=alpha), inp[0], v1, v2)
    b1, b2 = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 5, 4))
    check(lambda L, m, a, b: L.addbmm(m, a, b, beta=beta, alpha=alpha), inp, b1, b2)
    check(lambda L, m, a, b: m.addbmm(a, b, beta=beta, alpha=alpha), inp[:, :1], b1, b2)
    check(lambda L, m, a, b: L.addr(m, a, b), INTS[:, :3], INTS[:, 0], INTS[0, :3], grad=False)


def test_vdot():
    check(lambda L, x, y: L.vdot(x, y), ROW, X[0])
    check(lambda L, x, y: x.vdot(y), INTS[0], INTS[1], grad=False)
    with pytest.raises(RuntimeError, match="1D"):
        minidl.vdot(minidl.tensor(X), minidl.tensor(X))
    with pytest.raises(TypeError, match="dtype"):
        minidl.vdot(minidl.tensor(INTS[0]), minidl.tensor(ROW))


@pytest.mark.parametrize("offset, dim1, dim2", [(0, -2, -1), (1, 0, 2), (-1, -1, 0),
                                                (2, 1, 3), (-2, 3, 0)])
def test_diag_embed(offset, dim1, dim2):
    check(lambda L, x: L.diag_embed(x, offset, dim1, dim2), A3)
    check(lambda L, x: x.diag_embed(offset=offset, dim1=dim1, dim2=dim2), A3)


def test_diag_embed_diagflat_dtypes_and_errors():
    check(lambda L, x: L.diag_embed(x), INTS, grad=False)
    check(lambda L, x: L.diag_embed(x), ROW)
    for offset in (0, 2, -1):
        check(lambda L, x: L.diagflat(x, offset), X)
        check(lambda L, x: x.diagflat(offset), INTS, grad=False)
    with pytest.raises(RuntimeError, match="identical"):
        minidl.diag_embed(minidl.tensor(X), 0, 1, -2)


@pytest.mark.parametrize("offset, dim1, dim2", [(0, 0, 1), (1, 0, 1), (-1, 1, 0), (1, 0, 2),
                                                (0, -1, -3), (-2, 2, 1)])
def test_diagonal_scatter(offset, dim1, dim2):
    shape = np.array(A3).diagonal(offset, dim1, dim2).shape
    src = rng.standard_normal(shape)
    check(lambda L, x, s: L.diagonal_scatter(x, s, offset, dim1, dim2), A3, src)
    check(lambda L, x, s: x.diagonal_scatter(s, offset=offset, dim1=dim1, dim2=dim2), A3, src)


def test_select_and_slice_scatter():
    check(lambda L, x, s: L.select_scatter(x, s, 1, -1), A3, rng.standard_normal((2, 4)))
    check(lambda L, x, s: x.select_scatter(s, 0, 1), A3, rng.standard_normal((3, 4)))
    check(lambda L, x, s: L.slice_scatter(x, s, 2, 1, None, 2), A3, rng.standard_normal((2, 3, 2)))
    check(lambda L, x, s: x.slice_scatter(s), A3, rng.standard_normal((2, 3, 4)))
    check(lambda L, x, s: L.slice_scatter(x, s, -2, -2), A3, rng.standard_normal((2, 2, 4)))
    check(lambda L, x, s: L.select_scatter(x, s, 0, 0), INTS, np.array([1, 2, 3, 4]), grad=False)
    check(lambda L, x, s: L.diagonal_scatter(x, s, 1), X, np.array([7, 8, 9]).astype(np.int64),
          check_grad=False)
    x = minidl.tensor(X)
    with pytest.raises(RuntimeError, match="slice size"):
        minidl.select_scatter(x, minidl.tensor(np.ones(3)), 0, 0)
    with pytest.raises(ValueError, match="slice size"):
        minidl.diagonal_scatter(x, minidl.tensor(np.ones(4)), 1)
    with pytest.raises(IndexError):
        minidl.select_scatter(x, minidl.tensor(np.ones(4)), 0, 3)


def test_broadcast_tensors_and_stacking():
    check(lambda L, x, y, z: L.broadcast_tensors(x, y, z), X, ROW, np.array(2.0))
    check(lambda L, x, y: L.broadcast_tensors(x, y), A3, X)
    for fn in ("dstack", "column_stack", "hstack", "vstack"):
        check(lambda L, x, y: getattr(L, fn)([x, y]), X, Y)
    check(lambda L, x, y: L.dstack([x, y]), ROW, X[0])
    check(lambda L, x, y: L.dstack([x, y]), np.array(1.5), np.array(2.5))
    check(lambda L, x, y: L.dstack((x, y)), A3, A3[..., :2].copy())
    check(lambda L, x, y, z: L.column_stack([x, y, z]), X[:, 0].copy(), X, np.ones((3, 2)))
    check(lambda L, x, y: L.column_stack([x, y]), np.array(1.5), np.array(2.5))
    check(lambda L, x, y: L.column_stack([x, y]), INTS[0], INTS[1], grad=False)
    check(lambda L, x: L.atleast_3d(x), ROW)
    check(lambda L, x: L.atleast_3d(x), X)
    check(lambda L, x, y: L.atleast_3d(x, y), np.array(1.0), A3)
    with pytest.raises(TypeError):
        minidl.dstack(minidl.tensor(X))
    with pytest.raises(ValueError, match="broadcast"):
        minidl.broadcast_tensors(minidl.tensor(X), minidl.tensor(np.ones(3)))


def test_split_with_sizes_and_sum_to_size():
    check(lambda L, x: L.split_with_sizes(x, [1, 3], 1), X)
    check(lambda L, x: x.split_with_sizes([2, 0, 2], dim=-1), X)
    check(lambda L, x: x.split_with_sizes([3]), X)
    with pytest.raises(RuntimeError, match="sum exactly"):
        minidl.tensor(X).split_with_sizes([1, 1], 1)
    for size in [(4,), (1, 4), (3, 1), (1, 1), (3, 4), ((3, 1),), (1, 3, 1)]:
        check(lambda L, x: x.sum_to_size(*size), A3)
    check(lambda L, x: x.sum_to_size(1, 4), INTS.astype(np.int32), grad=False)
    with pytest.raises(ValueError, match="not expandable"):
        minidl.tensor(A3).sum_to_size(3)
    with pytest.raises(RuntimeError, match="not expandable"):
        minidl.tensor(X).sum_to_size(1, 3, 4, 1)


def test_logspace():
    for args, kw in [((0, 2, 5), {}), ((-1, 1, 7), {"base": 2.0}), ((0, 2, 5), {"dtype": "int64"}),
                     ((1, -1, 4), {"base": 3}), ((-1, 1, 1), {}), ((0, 1, 0), {}),
                     ((0, 3, 4), {"dtype": "float64", "base": 0.5})]:
        mine = minidl.logspace(*args, **{k: getattr(minidl, v) if k == "dtype" else v
                                         for k, v in kw.items()})
        if torch is not None:
            theirs = torch.logspace(*args, **{k: getattr(torch, v) if k == "dtype" else v
                                              for k, v in kw.items()})
            assert str(mine.dtype) == str(theirs.dtype).replace("torch.", "")
            np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=2e-7)
    assert minidl.logspace(0, 1, 3, requires_grad=True).requires_grad


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_unique_consecutive(dim):
    x = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3], [1, 1, 2]])
    for inverse in (False, True):
        for counts in (False, True):
            check(lambda L, t: L.unique_consecutive(t, return_inverse=inverse,
                                                    return_counts=counts, dim=dim),
                  x, grad=False)
            check(lambda L, t: t.unique_consecutive(return_inverse=inverse,
                                                    return_counts=counts, dim=dim),
                  x.astype(np.float32), grad=False)
    check(lambda L, t: L.unique_consecutive(t, return_counts=True),
          np.array([np.nan, np.nan, 1.0, 1.0]), grad=False)
    check(lambda L, t: L.unique_consecutive(t, return_inverse=True, return_counts=True),
          np.zeros(0), grad=False)


def test_masked_scatter():
    mask = rng.random((3, 4)) > 0.4
    src = rng.standard_normal(15)
    check(lambda L, x, m, s: L.masked_scatter(x, m, s), X, mask, src)
    check(lambda L, x, m, s: x.masked_scatter(m, s), X, mask[1], src[:12].reshape(3, 4))
    check(lambda L, x, m, s: x.masked_scatter(m, s), ROW, mask, src)  # input broadcast
    check(lambda L, x, m, s: L.masked_scatter(x, m, s), INTS, mask[:2], INTS * 3, grad=False)
    x = minidl.tensor(X)
    with pytest.raises(RuntimeError, match="source"):
        x.masked_scatter(minidl.tensor(np.ones((3, 4), bool)), minidl.tensor(np.ones(5)))
    with pytest.raises(TypeError, match="boolean"):
        x.masked_scatter(minidl.tensor(np.ones((3, 4), np.int64)), minidl.tensor(np.ones(12)))
    with pytest.raises(TypeError, match="dtype"):
        x.masked_scatter(minidl.tensor(mask), minidl.tensor(INTS))


def test_masked_scatter_in_place():
    mask = rng.random((3, 4)) > 0.5
    src = rng.standard_normal(12)
    a, b = minidl.tensor(X, dtype=np.float64), torch.tensor(X) if torch is not None else None
    out = a.masked_scatter_(minidl.tensor(mask), minidl.tensor(src, dtype=np.float64))
    assert out is a
    if torch is not None:
        b.masked_scatter_(torch.tensor(mask), torch.tensor(src))
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        # in the graph: the gradient through the in-place op, as torch's
        w = minidl.tensor(X, dtype=np.float64, requires_grad=True)
        s = minidl.tensor(src, dtype=np.float64, requires_grad=True)
        h = w * 2
        h.masked_scatter_(minidl.tensor(mask), s)
        (h * minidl.tensor(Y, dtype=np.float64)).sum().backward()
        tw = torch.tensor(X, requires_grad=True)
        ts = torch.tensor(src, requires_grad=True)
        th = tw * 2
        th.masked_scatter_(torch.tensor(mask), ts)
        (th * torch.tensor(Y)).sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy())
        np.testing.assert_allclose(s.grad.numpy(), ts.grad.numpy())


@pytest.mark.parametrize("shape, wrap", [((5, 3), True), ((7, 3), True), ((7, 3), False),
                                         ((3, 5), True), ((4, 4), False), ((2, 2, 2), False),
                                         ((3, 3, 3, 3), True)])
def test_fill_diagonal_(shape, wrap):
    a = rng.standard_normal(shape)
    mine = minidl.tensor(a).fill_diagonal_(2.5, wrap=wrap)
    ints = minidl.tensor(np.zeros(shape, np.int64)).fill_diagonal_(1.7, wrap)
    if torch is not None:
        np.testing.assert_array_equal(
            mine.numpy(), torch.tensor(a, dtype=torch.float32).fill_diagonal_(2.5, wrap=wrap))
        theirs = torch.zeros(shape, dtype=torch.long).fill_diagonal_(1.7, wrap)
        np.testing.assert_array_equal(ints.numpy(), theirs.numpy())


def test_fill_diagonal_gradient_and_errors():
    w = minidl.tensor(X, dtype=np.float64, requires_grad=True)
    h = w * 3
    h.fill_diagonal_(0.0)
    h.sum().backward()
    expected = np.full(X.shape, 3.0)
    expected[np.arange(3), np.arange(3)] = 0
    np.testing.assert_array_equal(w.grad.numpy(), expected)
    with pytest.raises(RuntimeError, match="equal length"):
        minidl.zeros(2, 3, 2).fill_diagonal_(1)
    with pytest.raises(ValueError, match="larger than 1"):
        minidl.zeros(3).fill_diagonal_(1)


@pytest.mark.filterwarnings("ignore:index_reduce:UserWarning")  # torch's "in beta" note
@pytest.mark.parametrize("reduce", ["prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_index_reduce(reduce, include_self):
    index = np.array([0, 2, 0, 3])
    src = rng.standard_normal((3, 4, 4)) + 0.1 * np.arange(48).reshape(3, 4, 4)
    base = rng.standard_normal((3, 5, 4))
    fn = (lambda L, x, s, i: L.index_reduce(x, 1, i, s, reduce, include_self=include_self))
    check(fn, base, src, index, check_grad=reduce not in ("amax", "amin"))
    check(lambda L, x, s, i: x.index_reduce(-1, i, s, reduce, include_self=include_self),
          base[:, :4, :], rng.standard_normal((3, 4, 4)), index, check_grad=False)
    check(fn, base.astype(np.int64), (src * 3).astype(np.int64), index, grad=False)
    a = minidl.tensor(base)
    out = a.index_reduce_(1, minidl.tensor(index), minidl.tensor(src), reduce,
                          include_self=include_self)
    assert out is a
    np.testing.assert_allclose(a.numpy(), fn(minidl, minidl.tensor(base), minidl.tensor(src),
                                            minidl.tensor(index)).numpy())
    with pytest.raises(ValueError, match="reduce"):
        minidl.tensor(base).index_reduce(1, minidl.tensor(index), minidl.tensor(src), "sum")


def test_products_under_autocast():
    torch_ = pytest.importorskip("torch")
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4, 5))
    b = b.astype(np.float32)
    m, n = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.standard_normal((2, 4, 5))
    n = n.astype(np.float32)
    c = rng.standard_normal((3, 5)).astype(np.float32)
    cases = [lambda L, t: L.tensordot(t["a"], t["b"], 1), lambda L, t: L.kron(t["a"], t["a"]),
             lambda L, t: L.addbmm(t["c"], t["m"], t["n"]),
             lambda L, t: L.addr(t["c"], t["a"][:, 0], t["b"][0]),
             lambda L, t: L.vdot(t["a"][0], t["a"][1])]
    arrays = {"a": a, "b": b, "m": m, "n": n, "c": c}
    with minidl.autocast("cpu"), torch_.autocast("cpu"):
        for fn in cases:
            mine = fn(minidl, {k: minidl.tensor(v) for k, v in arrays.items()})
            theirs = fn(torch_, {k: torch_.tensor(v) for k, v in arrays.items()})
            assert str(mine.dtype) == str(theirs.dtype).replace("torch.", "")
            np.testing.assert_allclose(mine.float().numpy(), theirs.float().numpy(), rtol=2e-2,
                                       atol=5e-2)


# ---- group 4: tensor queries -----------------------------------------------------------------
def test_queries_match_torch():
    for dtype in ("float32", "float64", "float16", "int64", "int16", "int8", "uint8", "bool"):
        a = np.zeros((3, 4), dtype=dtype)
        mine = minidl.tensor(a, dtype=a.dtype)
        assert mine.itemsize == a.itemsize and mine.nbytes == a.nbytes
        assert mine.is_signed() == (dtype not in ("uint8", "bool"))
        if torch is not None:
            theirs = torch.tensor(a)
            assert (mine.itemsize, mine.nbytes, mine.is_signed()) == (
                theirs.itemsize, theirs.nbytes, theirs.is_signed())
    assert minidl.ones(2).bfloat16().is_signed()
    x = minidl.ones(2, 3)
    assert x.is_cpu and not x.is_inference() and not minidl.is_inference(x)
    assert x.is_same_size(minidl.zeros(2, 3)) and not minidl.is_same_size(x, minidl.zeros(3, 2))
    for value, expected in ((np.array([3]), True), (np.array([[0.0]]), False),
                            (np.array(np.nan), True), (np.array([False]), False)):
        assert minidl.tensor(value).is_nonzero() is expected
        assert minidl.is_nonzero(minidl.tensor(value)) is expected
    with pytest.raises(RuntimeError, match="no values"):
        minidl.tensor(np.zeros(0)).is_nonzero()
    with pytest.raises(ValueError, match="more than one"):
        minidl.tensor([1, 2]).is_nonzero()


def test_retains_grad():
    w = minidl.tensor([1.0, 2.0], requires_grad=True)
    w.retain_grad()
    assert w.retains_grad is False  # never for a leaf, as torch
    h = w * 2
    assert h.retains_grad is False
    h.retain_grad()
    assert h.retains_grad is True
    h.sum().backward()
    np.testing.assert_array_equal(h.grad.numpy(), [1.0, 1.0])


# ---- group 5: in-place samplers --------------------------------------------------------------
def _draws(make, n=20000):
    minidl.manual_seed(3)
    first = make(n)
    minidl.manual_seed(3)
    again = make(n)
    np.testing.assert_array_equal(first.numpy(), again.numpy())  # manual_seed repeats them
    return first.numpy()


def test_random_():
    v = _draws(lambda n: minidl.zeros(n).random_(3, 10))
    assert v.dtype == np.float32 and set(np.unique(v)) == set(range(3, 10))
    v = _draws(lambda n: minidl.zeros(n, dtype=minidl.int64).random_(4))
    assert v.dtype == np.int64 and set(np.unique(v)) == {0, 1, 2, 3}
    v = _draws(lambda n: minidl.zeros(n, dtype=minidl.uint8).random_())
    assert v.min() == 0 and v.max() == 255
    v = _draws(lambda n: minidl.zeros(n, dtype=minidl.int8).random_(100, None))
    assert v.min() == 100 and v.max() == 127
    v = _draws(lambda n: minidl.zeros(n, dtype=minidl.bool).random_())
    assert v.dtype == np.bool_ and 0.45 < v.mean() < 0.55
    v = _draws(lambda n: minidl.zeros(n).random_())
    assert v.min() >= 0 and v.max() <= 2 ** 24 and (v == np.round(v)).all()
    v = _draws(lambda n: minidl.zeros(n).random_(**{"from": -5, "to": -2}))
    assert set(np.unique(v)) == {-5, -4, -3}
    for bad in ((5, 5), (-3,)):
        with pytest.raises(RuntimeError, match="less than"):
            minidl.zeros(3).random_(*bad)
    with pytest.raises(ValueError, match="out of bounds"):
        minidl.zeros(3, dtype=minidl.uint8).random_(-1, 3)
    with pytest.raises(ValueError, match="out of bounds"):
        minidl.zeros(3, dtype=minidl.uint8).random_(0, 300)
    x = minidl.zeros(3)
    assert x.random_(2) is x


def test_continuous_samplers():
    v = _draws(lambda n: minidl.zeros(n).exponential_(2.0))
    assert v.min() >= 0 and abs(v.mean() - 0.5) < 0.02
    v = _draws(lambda n: minidl.zeros(n, dtype=minidl.float64).cauchy_(1.0, 0.5))
    assert v.dtype == np.float64 and abs(np.median(v) - 1.0) < 0.03
    assert abs(np.percentile(v, 75) - np.percentile(v, 25) - 1.0) < 0.05  # IQR = 2 sigma
    v = _draws(lambda n: minidl.zeros(n).log_normal_(0.5, 0.25))
    assert v.min() > 0 and abs(np.log(v).mean() - 0.5) < 0.01 and abs(np.log(v).std() - 0.25) < 0.01
    v = _draws(lambda n: minidl.zeros(n, dtype=minidl.int64).geometric_(0.3))
    assert v.dtype == np.int64 and v.min() >= 1 and abs(v.mean() - 1 / 0.3) < 0.1
    for method, args, match in (("exponential_", (0,), "lambda"), ("cauchy_", (0, 0), "sigma"),
                                ("log_normal_", (1, -1), "std"), ("geometric_", (1,), "p")):
        with pytest.raises(RuntimeError, match=match):
            getattr(minidl.zeros(3), method)(*args)
    for method in ("exponential_", "cauchy_", "log_normal_"):
        with pytest.raises(TypeError, match="floating point"):
            getattr(minidl.zeros(3, dtype=minidl.int64), method)()
    with pytest.raises(NotImplementedError):
        minidl.zeros(3, dtype=minidl.bool).geometric_(0.5)
    w = minidl.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        w.exponential_()
    with minidl.no_grad():
        assert w.exponential_() is w


def test_bernoulli_and_multinomial_methods():
    minidl.manual_seed(0)
    p = minidl.full((20000,), 0.3)
    v = p.bernoulli().numpy()
    assert v.dtype == np.float32 and set(np.unique(v)) <= {0.0, 1.0} and abs(v.mean() - 0.3) < 0.02
    assert abs(p.bernoulli(0.8).numpy().mean() - 0.8) < 0.02
    idx = minidl.tensor([[0.0, 1.0, 0.0, 3.0]] * 2).multinomial(2)
    assert idx.shape == (2, 2) and idx.dtype == np.int64 and set(idx.numpy().ravel()) <= {1, 3}
    assert (idx.numpy()[:, 0] != idx.numpy()[:, 1]).all()  # without replacement


# ---- a fake GPU: the new ops keep their arrays on the device ------------------------------------
def test_new_ops_on_a_fake_gpu(monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    a = minidl.tensor(X, dtype=np.float64, requires_grad=True)
    g = a.to("cuda")
    assert g.device == "cuda"
    outs = [minidl.asinh(g), minidl.copysign(g, -1.0), minidl.fmax(g, g.flip(0)),
            minidl.quantile(g, 0.3, dim=1), minidl.nanmedian(g, 0).values, minidl.mode(g).values,
            minidl.cov(g), minidl.tensordot(g, g.t(), 1), minidl.kron(g, g),
            minidl.diag_embed(g, 1), g.masked_scatter(g > 0, g * 3),
            minidl.slice_scatter(g, g[:, :2] * 2, 1, 0, 2), minidl.float_power(g.abs(), 1.5)]
    for out in outs:
        assert out.device == "cuda", out
    loss = sum(o.sum() for o in outs)
    loss.backward()
    ref = minidl.tensor(X, dtype=np.float64, requires_grad=True)
    outs_cpu = [minidl.asinh(ref), minidl.copysign(ref, -1.0), minidl.fmax(ref, ref.flip(0)),
                minidl.quantile(ref, 0.3, dim=1), minidl.nanmedian(ref, 0).values,
                minidl.mode(ref).values, minidl.cov(ref), minidl.tensordot(ref, ref.t(), 1),
                minidl.kron(ref, ref), minidl.diag_embed(ref, 1),
                ref.masked_scatter(ref > 0, ref * 3),
                minidl.slice_scatter(ref, ref[:, :2] * 2, 1, 0, 2),
                minidl.float_power(ref.abs(), 1.5)]
    for out, expected in zip(outs, outs_cpu):
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)
    sum(o.sum() for o in outs_cpu).backward()
    np.testing.assert_allclose(a.grad.numpy(), ref.grad.numpy(), rtol=1e-12)
    z = minidl.zeros(4, device="cuda")
    assert z.exponential_().device == "cuda" and z.random_(3).device == "cuda"
    assert not z.is_cpu


@pytest.mark.skipif(torch is None, reason="compares with PyTorch's 16-bit kernels; torch missing")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_floats_round_as_torch(dtype):
    x = rng.uniform(-0.9, 0.9, (64,)).astype(np.float32)
    m, t = minidl.tensor(x).to(getattr(minidl, dtype)), torch.tensor(x).to(getattr(torch, dtype))
    unary = ["asinh", "atanh", "deg2rad", "rad2deg", "sgn", "signbit", "isposinf", "fix"]
    binary = ["fmax", "fmin", "copysign", "nextafter", "multiply", "subtract", "true_divide"]
    for name in unary + binary:
        args = (m,) if name in unary else (m, m.flip(0))
        targs = (t,) if name in unary else (t, t.flip(0))
        mine, theirs = getattr(minidl, name)(*args), getattr(torch, name)(*targs)
        assert str(mine.dtype) == str(theirs.dtype).replace("torch.", ""), name
        np.testing.assert_array_equal(mine.float().numpy(), theirs.float().numpy(), err_msg=name)


def test_addr_and_addbmm_in_place():
    inp, v1, v2 = rng.standard_normal((3, 4)), rng.standard_normal(3), rng.standard_normal(4)
    b1, b2 = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 5, 4))
    plain = minidl.tensor(inp, dtype=np.float64)
    assert plain.addr_(minidl.tensor(v1, dtype=np.float64), minidl.tensor(v2, dtype=np.float64),
                       beta=0.5, alpha=2) is plain
    np.testing.assert_allclose(plain.numpy(), 0.5 * inp + 2 * np.outer(v1, v2))
    if torch is None:
        return
    for method, args in (("addr_", (v1, v2)), ("addbmm_", (b1, b2))):
        w = minidl.tensor(inp, dtype=np.float64, requires_grad=True)
        ms = [minidl.tensor(a, dtype=np.float64, requires_grad=True) for a in args]
        h = w * 1.5
        getattr(h, method)(*ms, beta=0.5, alpha=-2)
        (h * minidl.tensor(Y, dtype=np.float64)).sum().backward()
        tw = torch.tensor(inp, requires_grad=True)
        ts = [torch.tensor(a, requires_grad=True) for a in args]
        th = tw * 1.5
        getattr(th, method)(*ts, beta=0.5, alpha=-2)
        (th * torch.tensor(Y)).sum().backward()
        np.testing.assert_allclose(h.detach().numpy(), th.detach().numpy())
        for m, t in zip([w] + ms, [tw] + ts):
            np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy())


def test_zero_dim_inputs():
    s = np.array(2.5)
    check(lambda L, x: L.quantile(x, 0.5, dim=0, keepdim=True), s)
    check(lambda L, x: L.quantile(x, L.tensor([0.2, 0.7], dtype=x.dtype), keepdim=True), s)
    check(lambda L, x: L.nanmedian(x, 0, True), s)
    check(lambda L, x: L.mode(x, 0, True), s)
    check(lambda L, x: L.aminmax(x, dim=0, keepdim=True), s)
    check(lambda L, x: L.kron(x, x), s)
    check(lambda L, x: L.diagflat(x), s)
    check(lambda L, x: L.column_stack([x]), s)
    with pytest.raises(IndexError):
        minidl.diag_embed(minidl.tensor(2.5))
    with pytest.raises(RuntimeError, match="1-dimensional"):
        minidl.tensor(2.5).split_with_sizes([1])
