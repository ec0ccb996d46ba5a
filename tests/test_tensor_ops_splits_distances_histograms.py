"""Tensor ops: splits, distances, histograms and more: atan2/arctan2, hypot, logaddexp, logaddexp2,
logcumsumexp, tensor_split/hsplit/vsplit/dsplit, block_diag, cartesian_prod, cdist, pdist,
dist, bincount, histc, trapezoid/cumulative_trapezoid, the in-place view methods (unsqueeze_,
squeeze_, t_, transpose_, swapdims_, swapaxes_), atan2_/hypot_, and the autocast entries of
these and of linalg: PyTorch 2.13's values, dtypes and gradients in float64, finite-difference
checks, and PyTorch's errors for bad input."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch

rng = np.random.default_rng(20261206)


def r(*shape):
    return rng.standard_normal(shape)


INF = float("inf")


# ---- atan2, hypot, logaddexp, logaddexp2 ------------------------------------------------------
@pytest.mark.parametrize("name", ["atan2", "arctan2", "hypot", "logaddexp", "logaddexp2"])
def test_binary_elementwise_values_and_gradients(name):
    check(lambda L, a, b: getattr(L, name)(a, b), r(3, 4), r(3, 4))
    check(lambda L, a, b: getattr(a, name)(b), r(2, 3, 4), r(4))       # broadcast
    check(lambda L, a, b: getattr(L, name)(a, b), r(3, 1), r(1, 5))    # both broadcast
    check(lambda L, a, b: getattr(L, name)(a, b), r(3), r())           # a 0-d other
    check(lambda L, a, b: getattr(L, name)(a, b).sum(dim=-1), r(2, 5), r(2, 5))


@needs_torch
@pytest.mark.parametrize("name", ["atan2", "hypot", "logaddexp", "logaddexp2"])
def test_binary_elementwise_edges_as_torch(name):
    # infinities, NaN, zeros, signed zeros: PyTorch's values and gradients, NaN where it has NaN
    a = np.array([-INF, -INF, INF, 1.0, 0.0, 0.0, -0.0, 3.0, -1e300, 1e300, 1.0])
    b = np.array([-INF, 0.0, INF, np.nan, 0.0, -0.0, 1.0, 4.0, -1e300, 1e300, -INF])
    ma, mb = (minidl.tensor(v, dtype=np.float64, requires_grad=True) for v in (a, b))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    my, ty = getattr(minidl, name)(ma, mb), getattr(torch, name)(ta, tb)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12)
    my.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(ma.grad.numpy(), ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(mb.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


@needs_torch
def test_binary_elementwise_dtypes_as_torch():
    i, f = np.array([1, 2, -3]), np.array([1.0, -2.0, 0.5], dtype=np.float32)
    for name in ("atan2", "hypot", "logaddexp", "logaddexp2"):
        for a, b in ((f, f), (f, f.astype(np.float64)), (f, i), (f.astype(np.float16), f[:1])):
            m = getattr(minidl, name)(minidl.tensor(a, dtype=a.dtype), minidl.tensor(b, dtype=b.dtype))
            t = getattr(torch, name)(torch.tensor(a), torch.tensor(b))
            assert m.dtype == np.dtype(str(t.dtype).split(".")[1]), (name, a.dtype, b.dtype)
            np.testing.assert_allclose(m.numpy().astype(np.float64), t.numpy().astype(np.float64),
                                       rtol=2e-3 if a.dtype == np.float16 else 1e-6)
    assert minidl.atan2(minidl.tensor(i), minidl.tensor(i)).dtype == np.float32
    for name in ("hypot", "logaddexp", "logaddexp2"):
        with pytest.raises(NotImplementedError, match="int64"):
            getattr(minidl, name)(minidl.tensor(i), minidl.tensor(i))
        with pytest.raises(NotImplementedError):
            getattr(torch, name)(torch.tensor(i), torch.tensor(i))


@pytest.mark.parametrize("name", ["atan2", "hypot", "logaddexp", "logaddexp2"])
def test_binary_elementwise_bad_input(name):
    x = minidl.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="'other' must be a Tensor"):
        getattr(minidl, name)(x, 2.0)
    with pytest.raises(TypeError, match="'input' must be a Tensor"):
        getattr(minidl, name)([1.0], x)
    with pytest.raises(ValueError, match=r"do not broadcast: input \(2,\), other \(3,\)"):
        getattr(x, name)(minidl.zeros(3))
    if torch is not None:
        with pytest.raises(TypeError):
            getattr(torch, name)(torch.tensor([1.0, 2.0]), 2.0)
        with pytest.raises(RuntimeError):
            getattr(torch, name)(torch.tensor([1.0, 2.0]), torch.zeros(3))


def test_logaddexp_is_stable():
    big = minidl.tensor([1000.0, -1000.0, 88.0], requires_grad=True)
    y = minidl.logaddexp(big, big)
    np.testing.assert_allclose(y.numpy(), [1000 + np.log(2), -1000 + np.log(2), 88 + np.log(2)],
                               rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(big.grad.numpy(), [1.0, 1.0, 1.0])
    y2 = minidl.logaddexp2(minidl.tensor([500.0]), minidl.tensor([500.0]))
    np.testing.assert_allclose(y2.numpy(), [501.0])


# ---- logcumsumexp -----------------------------------------------------------------------------
def test_logcumsumexp_values_and_gradients():
    x = r(3, 4, 5)
    for dim in (0, 1, 2, -1, -3):
        check(lambda L, a: L.logcumsumexp(a, dim), x)
    check(lambda L, a: a.logcumsumexp(dim=-1), r(7) * 30)
    check(lambda L, a: a.logcumsumexp(0), r())              # 0-d: dim 0 and -1
    check(lambda L, a: L.logcumsumexp(a, -1), r())
    check(lambda L, a: L.logcumsumexp(a, 1), r(2, 0), grad=False)
    check(lambda L, a: L.logcumsumexp(a, 0), np.array([-1000.0, 0.0, 1000.0, -5.0]))


@needs_torch
def test_logcumsumexp_infinities_as_torch():
    cases = [([-INF, -INF, 0.0, 1.0, -INF, 2.0], [1.0, -2.0, 3.0, 0.5, 1.0, -1.0]),
             ([-INF, -INF], [1.0, 1.0]), ([1.0, INF, 0.0], [1.0, 1.0, 1.0]),
             ([-1000.0, 0.0, np.nan, 1.0], [1.0, 1.0, 1.0, 1.0]), ([-1e308, 1e308], [1.0, 0.0])]
    for xs, gs in cases:
        m = minidl.tensor(xs, dtype=np.float64, requires_grad=True)
        t = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
        my, ty = minidl.logcumsumexp(m, 0), torch.logcumsumexp(t, 0)
        np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12)
        my.backward(minidl.tensor(gs, dtype=np.float64))
        ty.backward(torch.tensor(gs, dtype=torch.float64))
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, err_msg=str(xs))


def test_logcumsumexp_is_stable_and_checks_input():
    x = minidl.tensor([-1000.0, 0.0, 1000.0])
    np.testing.assert_allclose(minidl.logcumsumexp(x, 0).numpy(), [-1000.0, 0.0, 1000.0])
    h = minidl.logcumsumexp(minidl.tensor(np.zeros((2, 4096), np.float16), dtype=np.float16), 1)
    assert h.dtype == np.float16
    np.testing.assert_allclose(h.numpy()[:, -1].astype(np.float64), np.log(4096), rtol=1e-3)
    with pytest.raises(IndexError, match=r"range of \[-2, 1\], but got 2"):
        minidl.zeros(2, 3).logcumsumexp(2)
    with pytest.raises(NotImplementedError, match="int64"):
        minidl.tensor([1, 2]).logcumsumexp(0)
    with pytest.raises(TypeError, match="dim must be an int"):
        minidl.zeros(3).logcumsumexp(None)


# ---- tensor_split, hsplit, vsplit, dsplit ---------------------------------------------------
def test_tensor_split_values_and_gradients():
    x = r(7, 3)
    for spec in (3, 1, 7, 10, [1, 5], [5, 1, 10], (-2, -5), [], [0, 0, 7]):
        check(lambda L, a: L.tensor_split(a, spec), x)
    check(lambda L, a: a.tensor_split(2, dim=-1), x)
    check(lambda L, a: L.tensor_split(a, [1], 1), x)
    check(lambda L, a: L.tensor_split(a, sections=4), r(9))
    check(lambda L, a: L.tensor_split(a, indices=[2, 3]), r(9))
    if torch is not None:
        for spec in (np.array(3), np.array([1, 5])):
            m = minidl.tensor_split(minidl.tensor(x), minidl.tensor(spec))
            t = torch.tensor_split(torch.tensor(x), torch.tensor(spec))
            assert isinstance(m, tuple) and [p.shape for p in m] == [tuple(p.shape) for p in t]


def test_hsplit_vsplit_dsplit():
    check(lambda L, a: L.hsplit(a, 3), r(4, 6))
    check(lambda L, a: a.hsplit([1, 4]), r(4, 6))
    check(lambda L, a: L.hsplit(a, 7), r(7))
    check(lambda L, a: L.vsplit(a, [1]), r(4, 6))
    check(lambda L, a: a.vsplit(2), r(4, 6, 2))
    check(lambda L, a: L.dsplit(a, [1, 4]), r(1, 2, 6))
    check(lambda L, a: a.dsplit(3), r(2, 2, 6))


def test_split_family_bad_input():
    x = minidl.arange(7.0)
    for sections in (0, -1):
        with pytest.raises(RuntimeError, match=f"larger than 0, got {sections}"):
            minidl.tensor_split(x, sections)
    with pytest.raises(RuntimeError, match="at least a 1-dimensional tensor"):
        minidl.tensor_split(minidl.tensor(1.0), 2)
    with pytest.raises(IndexError, match=r"range of \[-1, 0\], but got 1"):
        minidl.tensor_split(x, 2, dim=1)
    with pytest.raises(TypeError, match="must be an int, a list of ints"):
        minidl.tensor_split(x, 2.0)
    with pytest.raises(RuntimeError, match="one-dimensional tensor, but got a tensor with 2"):
        minidl.tensor_split(x, minidl.tensor([[1]]))
    with pytest.raises(TypeError, match="dtype int64"):
        minidl.tensor_split(x, minidl.tensor([1.0]))
    with pytest.raises(RuntimeError, match="size 7 into 2 equal pieces"):
        minidl.hsplit(x, 2)
    with pytest.raises(RuntimeError, match="at least 2 dimensions, but got a tensor with 1"):
        minidl.vsplit(x, 7)
    with pytest.raises(RuntimeError, match="at least 3 dimensions"):
        minidl.dsplit(minidl.zeros(2, 2), 1)
    if torch is not None:  # the same inputs are refused by PyTorch with the same error types
        tx = torch.arange(7.0)
        for call in (lambda: torch.tensor_split(tx, 0), lambda: torch.hsplit(tx, 2),
                     lambda: torch.vsplit(tx, 7)):
            with pytest.raises(RuntimeError):
                call()
        with pytest.raises(IndexError):
            torch.tensor_split(tx, 2, dim=1)


# ---- block_diag, cartesian_prod -------------------------------------------------------------
def test_block_diag():
    check(lambda L, a, b, c: L.block_diag(a, b, c), r(2, 3), r(1, 1), r(3, 2))
    check(lambda L, a, b, c: L.block_diag(a, b, c), r(), r(3), r(2, 2))   # 0-d and 1-d blocks
    check(lambda L, a, b: L.block_diag(a, b), r(0, 2), r(1, 0))
    check(lambda L, a, b: L.block_diag(a, b), np.array([[1, 2]]), r(2, 1))  # int64 + float64
    check(lambda L, a: L.block_diag(a), np.array([[True]]), grad=False)
    if torch is not None:
        assert tuple(minidl.block_diag().shape) == tuple(torch.block_diag().shape) == (1, 0)
    with pytest.raises(RuntimeError, match="2 or fewer dimensions. Input 1 has 3"):
        minidl.block_diag(minidl.zeros(2), minidl.zeros(2, 2, 2))
    with pytest.raises(TypeError, match="input 0 must be a Tensor"):
        minidl.block_diag([[1.0]])


def test_cartesian_prod():
    check(lambda L, a, b: L.cartesian_prod(a, b), r(2), r(3))
    check(lambda L, a, b, c: L.cartesian_prod(a, b, c), r(2), r(3), r(2))
    check(lambda L, a: L.cartesian_prod(a), r(4))
    check(lambda L, a, b: L.cartesian_prod(a, b), np.array([1, 2]), np.array([3, 4, 5]))
    check(lambda L, a, b: L.cartesian_prod(a, b), np.array([1, 2]), np.zeros(0, np.int64))
    with pytest.raises(TypeError, match="same dtype, got int64, float32"):
        minidl.cartesian_prod(minidl.tensor([1, 2]), minidl.tensor([1.0]))
    for bad in ((minidl.tensor(1.0),), (minidl.zeros(2, 2),), ()):
        with pytest.raises(RuntimeError):
            minidl.cartesian_prod(*bad)


# ---- cdist ------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2.0, 1.0, INF, 3.0, 0.5, 1.5, 0.0])
def test_cdist_values_and_gradients(p):
    check(lambda L, a, b: L.cdist(a, b, p=p), r(4, 3), r(5, 3))
    check(lambda L, a, b: L.cdist(a, b, p), r(2, 1, 3, 4), r(5, 2, 4))      # batch broadcast
    check(lambda L, a, b: L.cdist(a, b, p=p).sum(dim=-1), r(3, 2), r(3, 2))


@needs_torch
@pytest.mark.parametrize("p", [2.0, 1.0, INF, 3.0, 0.5, 0.0])
def test_cdist_ties_and_zero_distances_as_torch(p):
    # equal points (distance 0), equal coordinates, and ties for the largest |difference|
    x = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 2.0], [2.0, -1.0, 0.0]])
    y = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 2.0], [3.0, 0.0, 1.0]])
    check(lambda L, a, b: L.cdist(a, b, p=p), x, y, check_grad=False)
    check(lambda L, a, b: L.cdist(a, b, p=p, compute_mode="donot_use_mm_for_euclid_dist"),
          r(30, 3), r(40, 3))


@needs_torch
def test_cdist_float32_matches_torch():
    a, b = r(2, 50, 8).astype(np.float32), r(2, 30, 8).astype(np.float32)
    for p in (2.0, 1.0):
        m = minidl.cdist(minidl.tensor(a), minidl.tensor(b), p)
        t = torch.cdist(torch.tensor(a), torch.tensor(b), p)
        assert m.dtype == np.float32
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-4, atol=1e-5)


def test_cdist_bad_input():
    a = minidl.zeros(2, 3)
    with pytest.raises(RuntimeError, match="at least 2D tensors, x1 got: 1D"):
        minidl.cdist(minidl.zeros(3), a)
    with pytest.raises(RuntimeError, match="same number of columns. X1: 3 X2: 4"):
        minidl.cdist(a, minidl.zeros(2, 4))
    with pytest.raises(RuntimeError, match="non-negative p values"):
        minidl.cdist(a, a, p=-1)
    with pytest.raises(RuntimeError, match="batch dims do not broadcast"):
        minidl.cdist(minidl.zeros(2, 3, 3), minidl.zeros(3, 2, 3))
    with pytest.raises(TypeError, match="floating-point dtypes, x1 got: int64"):
        minidl.cdist(minidl.tensor([[1, 2]]), minidl.tensor([[1, 2]]))
    with pytest.raises(TypeError, match="same dtype, got float32 and float64"):
        minidl.cdist(a, a.double())
    with pytest.raises(ValueError, match="foo is not a valid value for compute_mode"):
        minidl.cdist(a, a, compute_mode="foo")
    assert minidl.cdist(minidl.zeros(0, 3), a).shape == (0, 2)
    np.testing.assert_array_equal(minidl.cdist(minidl.zeros(2, 0), minidl.zeros(2, 0),
                                               p=INF).numpy(), np.zeros((2, 2)))


# ---- bincount, histc ------------------------------------------------------------------------
def _same(m, t):
    assert m.dtype == np.dtype(str(t.dtype).split(".")[1]), (m.dtype, t.dtype)
    assert tuple(m.shape) == tuple(t.shape)
    np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-6)


@needs_torch
def test_bincount_as_torch():
    x = rng.integers(0, 9, 50)
    w = rng.standard_normal(50)
    cases = [((x,), {}), ((x, w.astype(np.float32)), {}), ((x, w), {}), ((x,), {"minlength": 20}),
             ((x, w.astype(np.float16)), {"minlength": 3}), ((x, rng.integers(0, 5, 50)), {}),
             ((np.zeros(0, np.int64),), {}), ((np.zeros(0, np.int64),), {"minlength": 4}),
             ((x.astype(np.uint8),), {}), ((x.astype(np.int32),), {})]
    for args, kwargs in cases:
        m = minidl.bincount(*[minidl.tensor(a, dtype=a.dtype) for a in args], **kwargs)
        t = torch.bincount(*[torch.tensor(a) for a in args], **kwargs)
        _same(m, t)
    m = minidl.tensor(x).bincount(weights=minidl.tensor(w, dtype=np.float64, requires_grad=True),
                                  minlength=2)
    assert not m.requires_grad and m.dtype == np.float64


def test_bincount_bad_input():
    with pytest.raises(RuntimeError, match="1-d non-negative integral inputs"):
        minidl.bincount(minidl.tensor([-1, 2]))
    with pytest.raises(RuntimeError, match="1-d non-negative integral inputs, got shape \\(2, 2\\)"):
        minidl.bincount(minidl.zeros(2, 2).long())
    for bad in (minidl.tensor([1.0, 2.0]), minidl.tensor([True, False])):
        with pytest.raises(NotImplementedError):
            minidl.bincount(bad)
    with pytest.raises(RuntimeError, match="minlength should be >= 0"):
        minidl.bincount(minidl.tensor([1]), minlength=-1)
    with pytest.raises(RuntimeError, match="same length as input"):
        minidl.bincount(minidl.tensor([1, 2]), minidl.ones(3))


@needs_torch
def test_histc_as_torch():
    x = np.array([1.0, 2, 1, 4, 2.5, -1, 10], np.float32)
    cases = [{}, {"bins": 4, "min": 0, "max": 3}, {"bins": 4}, {"bins": 3, "min": 1, "max": 1},
             {"bins": 5, "min": -1, "max": 10}, {"bins": 1}]
    for kwargs in cases:
        _same(minidl.histc(minidl.tensor(x), **kwargs), torch.histc(torch.tensor(x), **kwargs))
    others = [(np.array([2.0, 2.0]), {"bins": 4}), (np.zeros(0), {"bins": 3}),
              (np.array([0.0, 1.0, np.nan]), {"bins": 2, "min": 0, "max": 1}),
              (np.array([0.1, 0.2, 0.3], np.float32), {"bins": 3, "min": 0.1, "max": 0.3}),
              (np.linspace(0, 1, 1001, dtype=np.float32), {"bins": 7, "min": 0, "max": 1}),
              (rng.standard_normal((20, 30)), {"bins": 13}),
              (rng.standard_normal(500).astype(np.float32), {"bins": 9, "min": -1.5, "max": 2}),
              (x.astype(np.float16), {"bins": 6})]
    for a, kwargs in others:
        _same(minidl.tensor(a, dtype=a.dtype).histc(**kwargs), torch.histc(torch.tensor(a), **kwargs))


def test_histc_bad_input():
    x = minidl.tensor([1.0, 2.0])
    with pytest.raises(NotImplementedError, match="int64"):
        minidl.histc(minidl.tensor([1, 2]))
    for bins in (0, -1):
        with pytest.raises(RuntimeError, match=f"bins must be > 0, but got {bins}"):
            minidl.histc(x, bins=bins)
    with pytest.raises(RuntimeError, match="max must be larger than min"):
        minidl.histc(x, min=3, max=1)
    with pytest.raises(RuntimeError, match="is not finite"):
        minidl.histc(minidl.tensor([1.0, INF]))
    with pytest.raises(RuntimeError, match="is not finite"):
        minidl.histc(minidl.tensor([1.0, np.nan]))
    with pytest.raises(TypeError, match="'bins' must be int, not float"):
        minidl.histc(x, bins=2.5)


# ---- trapezoid, trapz, cumulative_trapezoid ------------------------------------------------------
@pytest.mark.parametrize("name", ["trapezoid", "trapz", "cumulative_trapezoid"])
def test_trapezoid_values_and_gradients(name):
    y = r(3, 4)
    check(lambda L, a: getattr(L, name)(a), y)
    check(lambda L, a: getattr(L, name)(a, dim=0), y)
    check(lambda L, a: getattr(L, name)(a, dx=2.5, dim=-1), y)
    check(lambda L, a, x: getattr(L, name)(a, x), y, np.array([0.0, 1.0, 3.0, 6.0]))
    check(lambda L, a, x: getattr(L, name)(a, x), y, r(3, 4))           # x the shape of y
    check(lambda L, a, x: getattr(L, name)(a, x, dim=0), y, r(3, 1))     # x broadcasts
    y3 = r(2, 3, 4)
    for xs, dim in (((3, 1), 1), ((3, 4), -1), ((2, 1, 1), 0), ((1, 3, 4), 1), ((1, 4), 0)):
        check(lambda L, a, x: getattr(L, name)(a, x, dim=dim), y3, r(*xs))  # x padded with 1s
    check(lambda L, a: getattr(L, name)(a), np.array([1, 2, 4]), grad=False)   # int -> float32
    check(lambda L, a: getattr(L, name)(a), r(2, 0), grad=False)
    check(lambda L, a: getattr(L, name)(a), r(1))


def test_trapezoid_bad_input():
    y = minidl.zeros(3, 4)
    with pytest.raises(IndexError, match="no dimensions"):
        minidl.trapezoid(minidl.tensor(1.0))
    with pytest.raises(IndexError, match=r"range of \[-2, 1\], but got 2"):
        minidl.trapezoid(y, dim=2)
    with pytest.raises(RuntimeError, match="one `x` value for each sample point"):
        minidl.trapezoid(y, minidl.arange(3.0))
    with pytest.raises(TypeError, match="x or dx, not both"):
        minidl.trapezoid(y, minidl.arange(4.0), dx=1.0)


# ---- in-place view methods ----------------------------------------------------------------------
VIEW_CALLS = [("unsqueeze_", (0,)), ("unsqueeze_", (-1,)), ("squeeze_", ()), ("squeeze_", (1,)),
              ("squeeze_", ((0, 1),)), ("t_", ()), ("transpose_", (0, -1)),
              ("swapdims_", (-1, 0)), ("swapaxes_", (1, 0))]


@pytest.mark.parametrize("name,args", VIEW_CALLS)
def test_view_in_place_shapes_and_gradients(name, args):
    shape = (1, 3) if name.startswith("squeeze") else (2, 3)
    a = rng.standard_normal(shape)
    out_of_place = name[:-1]
    # the same shape and values as the out-of-place view; the same object comes back
    x = minidl.tensor(a)
    ref = getattr(x, out_of_place)(*args)
    assert getattr(x, name)(*args) is x
    assert x.shape == ref.shape
    np.testing.assert_array_equal(x.numpy(), ref.numpy())
    assert x._version == 1
    # in the graph: the gradient flows back through the change of shape (gradcheck + torch)
    check(lambda L, t: getattr(t * 1.5, name)(*args) * 2, a)


def test_view_in_place_chain_and_torch_parity():
    check(lambda L, t: (t * 1).t_().unsqueeze_(1).squeeze_().transpose_(0, 1).swapaxes_(0, 1)
          .exp(), r(2, 3))
    check(lambda L, t: (t * 1)[0].unsqueeze_(0) * 3, r(2, 3))   # a view of a non-leaf
    check(lambda L, t: (t * 1).t()[1:].t_() * 3, r(2, 3))
    for lib in (minidl, torch) if torch is not None else (minidl,):
        leaf = lib.ones(2, 3, requires_grad=True)
        with pytest.raises(RuntimeError, match="view of a leaf"):
            leaf[0].unsqueeze_(0)
        with pytest.raises(RuntimeError, match="view of a leaf"):
            leaf.t()[1:].t_()


def test_view_in_place_on_leaves_and_without_grad():
    for name, args in VIEW_CALLS:
        x = minidl.tensor(np.ones((1, 3)), requires_grad=True)
        with pytest.raises(RuntimeError, match=f"{name} on a leaf tensor that requires grad"):
            getattr(x, name)(*args)
        if torch is not None:
            with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
                getattr(torch.ones(1, 3, requires_grad=True), name)(*args)
    leaf = minidl.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with minidl.no_grad():
        leaf.t_()
    assert leaf.shape == (3, 2) and leaf.requires_grad and leaf.grad_fn is None
    leaf.sum().backward()
    assert leaf.grad.shape == (3, 2)
    a = minidl.zeros(2, 3)
    flat = a.reshape(6)
    a.unsqueeze_(0)
    a[0, 1, 2] = 7.0  # the same array: a view made before sees the write
    assert flat[5].item() == 7.0 and a.shape == (1, 2, 3)


def test_view_in_place_refusals():
    x = minidl.tensor(np.ones((2, 3)), requires_grad=True)
    h = x * 2
    y = h * h  # h is an input of an op of the graph already
    with pytest.raises(RuntimeError, match="already took as an input"):
        h.t_()
    assert h.shape == (2, 3)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 8.0))
    h2 = x * 2
    with minidl.no_grad(), pytest.raises(RuntimeError, match="under no_grad"):
        h2.t_()
    with pytest.raises(ValueError):
        minidl.zeros(2, 3, 4).t_()
    with pytest.raises(IndexError, match=r"range of \[-3, 2\], but got 5"):
        minidl.zeros(2, 3).unsqueeze_(5)
    if torch is not None:
        with pytest.raises(IndexError):
            torch.zeros(2, 3).unsqueeze_(5)


def test_atan2_and_hypot_in_place():
    a, b = r(2, 3), r(3)
    x = minidl.tensor(a, dtype=np.float64)
    assert x.atan2_(minidl.tensor(b, dtype=np.float64)) is x
    np.testing.assert_allclose(x.numpy(), np.arctan2(a, b))
    x = minidl.tensor(a, dtype=np.float64)
    x.hypot_(minidl.tensor(b, dtype=np.float64))
    np.testing.assert_allclose(x.numpy(), np.hypot(a, b))
    check(lambda L, t, u: (t * 1).atan2_(u), a, b)
    check(lambda L, t, u: (t * 1).hypot_(u), a, b)


# ---- autocast: PyTorch's CPU policy for these ops and for linalg ----------------------------------
_SPD = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
_VEC = np.array([0.7, 1.3, 0.9, 2.1])
AUTOCAST_OPS = {
    "cdist": lambda L, a, v: L.cdist(a, a + 1),
    "trace": lambda L, a, v: L.trace(a),
    "logcumsumexp": lambda L, a, v: L.logcumsumexp(v, 0),
    "atan2": lambda L, a, v: L.atan2(v, v + 1),
    "hypot": lambda L, a, v: L.hypot(v, v),
    "logaddexp": lambda L, a, v: L.logaddexp(v, v * 2),
    "logaddexp2": lambda L, a, v: L.logaddexp2(v, v * 2),
    "trapezoid": lambda L, a, v: L.trapezoid(v),
    "histc": lambda L, a, v: L.histc(v, 4),
    "block_diag": lambda L, a, v: L.block_diag(a, a),
    "linalg.inv": lambda L, a, v: L.linalg.inv(a),
    "linalg.solve": lambda L, a, v: L.linalg.solve(a, a),
    "linalg.cholesky": lambda L, a, v: L.linalg.cholesky(a),
    "linalg.qr": lambda L, a, v: L.linalg.qr(a)[1],
    "linalg.svdvals": lambda L, a, v: L.linalg.svdvals(a),
    "linalg.svd": lambda L, a, v: L.linalg.svd(a)[1],
    "linalg.eigvalsh": lambda L, a, v: L.linalg.eigvalsh(a),
    "linalg.eigh": lambda L, a, v: L.linalg.eigh(a)[0],
    "linalg.lstsq": lambda L, a, v: L.linalg.lstsq(a, a)[0],
    "linalg.matrix_rank": lambda L, a, v: L.linalg.matrix_rank(a),
    "linalg.cond": lambda L, a, v: L.linalg.cond(a),
    "linalg.matrix_norm": lambda L, a, v: L.linalg.matrix_norm(a),
    "linalg.vector_norm": lambda L, a, v: L.linalg.vector_norm(v),
    "inverse": lambda L, a, v: L.inverse(a),
    "pinverse": lambda L, a, v: L.pinverse(a),
    "svd": lambda L, a, v: L.svd(a)[1],
    "cholesky": lambda L, a, v: L.cholesky(a),
    "erfinv": lambda L, a, v: L.erfinv(v / 3),
    "lgamma": lambda L, a, v: L.lgamma(v),
}


def _torch_dtype(t):
    return str(t.dtype).split(".")[1]


@needs_torch
@pytest.mark.filterwarnings("ignore:torch.cholesky is deprecated")
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", sorted(AUTOCAST_OPS))
def test_autocast_cpu_dtypes_as_torch(name, low):
    fn = AUTOCAST_OPS[name]
    for in_dtype in ("float32", low):
        m_args = [minidl.tensor(x, dtype=getattr(minidl, in_dtype)) for x in (_SPD, _VEC)]
        t_args = [torch.tensor(x, dtype=getattr(torch, in_dtype)) for x in (_SPD, _VEC)]
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            m = fn(minidl, *m_args)
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            t = fn(torch, *t_args)
        assert str(m.dtype) == _torch_dtype(t), (name, in_dtype, m.dtype, t.dtype)
        tol = 2e-2 if _torch_dtype(t) in ("bfloat16", "float16") else 2e-3
        mv, tv = m.numpy().astype(np.float64), t.detach().to(torch.float64).numpy()
        if name in ("linalg.qr",):  # the signs of R's rows are the decomposition's choice
            mv, tv = abs(mv), abs(tv)
        np.testing.assert_allclose(mv, tv, rtol=tol, atol=tol, err_msg=f"{name} {in_dtype}")


@needs_torch
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_autocast_linalg_pinv_comes_back_low_as_torch(low):
    # PyTorch's pinv is an SVD in float32 and a matmul in the low dtype
    with minidl.autocast("cpu", dtype=getattr(minidl, low)):
        m = minidl.linalg.pinv(minidl.tensor(_SPD))
        m64 = minidl.linalg.pinv(minidl.tensor(_SPD, dtype=np.float64))
        m_compat = minidl.pinverse(minidl.tensor(_SPD))
    with torch.autocast("cpu", dtype=getattr(torch, low)):
        t = torch.linalg.pinv(torch.tensor(_SPD, dtype=torch.float32))
        t64 = torch.linalg.pinv(torch.tensor(_SPD))
        t_compat = torch.pinverse(torch.tensor(_SPD, dtype=torch.float32))
    for m_, t_ in ((m, t), (m64, t64), (m_compat, t_compat)):
        assert str(m_.dtype) == _torch_dtype(t_)
        np.testing.assert_allclose(m_.numpy().astype(np.float64), t_.to(torch.float64).numpy(),
                                   rtol=2e-2, atol=2e-3)


def test_autocast_float32_ops_keep_the_gradient_path():
    a = minidl.tensor(_SPD, dtype=minidl.bfloat16, requires_grad=True)
    with minidl.autocast("cpu"):
        y = minidl.linalg.inv(a)
        d = minidl.cdist(a, a + 1)
    assert y.dtype == np.float32 and d.dtype == np.float32
    (y.sum() + d.sum()).backward()
    assert a.grad.dtype == minidl.bfloat16 and np.isfinite(a.grad.numpy().astype(np.float32)).all()
    # outside a region the 16-bit refusal of linalg stays
    with pytest.raises(TypeError, match="float32 or float64"):
        minidl.linalg.inv(a)


# ---- the fake GPU -----------------------------------------------------------------------------
def test_new_ops_on_the_fake_gpu(monkeypatch):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, None)
    a, b = r(3, 4), r(5, 4)
    out = {}
    for device in ("cuda", "cpu"):
        x = minidl.tensor(a, dtype=np.float64, device=device, requires_grad=True)
        y = minidl.tensor(b, dtype=np.float64, device=device, requires_grad=True)
        loss = (minidl.cdist(x, y).sum() + minidl.logcumsumexp(x, -1).sum()
                + minidl.atan2(x, y[:3]).sum() + minidl.logaddexp(x, y[0]).sum()
                + minidl.hypot(x, y[1:4]).sum())
        loss.backward()
        h = minidl.histc(x.detach(), bins=5)
        c = minidl.bincount(minidl.tensor([0, 2, 2, 5], device=device), minlength=7)
        if device == "cuda":
            assert str(x.grad.device).startswith("cuda") and str(h.device).startswith("cuda")
            assert str(c.device).startswith("cuda")
        out[device] = [loss.numpy(), x.grad.numpy(), y.grad.numpy(), h.numpy(), c.numpy()]
    for g, c in zip(out["cuda"], out["cpu"]):
        np.testing.assert_allclose(g, c, rtol=1e-12)
    # CUDA's autocast policy runs cdist in float32 too (the host build of the cast kernel has
    # no 16-bit body: the stand-in casts with NumPy here)
    from minidl import ops

    monkeypatch.setattr(ops, "astype", lambda x, dtype: x.astype(dtype))
    h = minidl.tensor(a, dtype=np.float16, device="cuda")
    with minidl.autocast("cuda"):
        d = minidl.cdist(h, h)
        e = minidl.erfinv(h / 10)
        assert minidl.logcumsumexp(h, 1).dtype == np.float16  # not on the list: as it comes
    assert d.dtype == np.float32 and e.dtype == np.float32 and str(d.device).startswith("cuda")


def test_cdist_in_row_blocks(monkeypatch):
    # a block of rows at a time (here 2 of 7): the same values and gradients as in one step
    from minidl import products

    a, b, g = r(2, 7, 3), r(1, 5, 3), r(2, 7, 5)
    whole = {}
    for limit in (1 << 22, 2 * 5 * 3 * 2):
        monkeypatch.setattr(products, "_CDIST_STEP_ELEMENTS", limit)
        assert len(products._row_steps(a, b)) == (1 if limit > 1000 else 4)
        for p in (2.0, 1.0, INF, 0.5):
            x, y = (minidl.tensor(v, dtype=np.float64, requires_grad=True) for v in (a, b))
            d = minidl.cdist(x, y, p)
            d.backward(minidl.tensor(g, dtype=np.float64))
            got = [d.numpy(), x.grad.numpy(), y.grad.numpy()]
            for u, v in zip(whole.setdefault(p, got), got):
                np.testing.assert_allclose(u, v, rtol=1e-13)
    check(lambda L, u, v: L.cdist(u, v, 3.0), a, b)


# ---- pdist, dist ------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2.0, 1.0, INF, 3.0, 0.5])
def test_pdist_and_dist(p):
    check(lambda L, a: L.pdist(a, p), r(5, 3))
    check(lambda L, a: L.pdist(a, p=p), r(2, 4))
    check(lambda L, a: L.pdist(a, p), r(1, 3), grad=False)
    check(lambda L, a, b: L.dist(a, b, p), r(3, 4), r(4))     # broadcast
    check(lambda L, a, b: a.dist(b, p), r(2, 3), r(2, 1))


def test_pdist_and_dist_bad_input():
    with pytest.raises(RuntimeError, match="only supports 2D tensors, got: 1D"):
        minidl.pdist(minidl.zeros(3))
    with pytest.raises(RuntimeError, match="non-negative p values"):
        minidl.pdist(minidl.zeros(2, 3), p=-1)
    with pytest.raises(TypeError, match="floating-point dtypes"):
        minidl.pdist(minidl.zeros(2, 3).long())
    with pytest.raises(TypeError, match="'other' must be a Tensor"):
        minidl.dist(minidl.zeros(3), 2.0)
    with pytest.raises(ValueError):
        minidl.dist(minidl.zeros(3, 3), minidl.zeros(5))
