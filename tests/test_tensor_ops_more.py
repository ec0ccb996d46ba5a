"""The rest of the PyTorch tensor ops minidl now has: select, broadcast_to, ravel, concat,
hstack/vstack, repeat_interleave, meshgrid, rot90, diff, cummax/cummin, kthvalue, median,
msort, unique, searchsorted/bucketize, trace, addmm/baddbmm/addmv, inner, cross, clamp_min/
clamp_max, count_nonzero, nan_to_num, nansum/nanmean, xlogy, std_mean/var_mean, in-place
unary methods, detach_: PyTorch's values and gradients in float64, finite-difference checks."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch

rng = np.random.default_rng(4)
X = rng.standard_normal((3, 4))
X3 = rng.standard_normal((2, 3, 4))


def r(*shape):
    return rng.standard_normal(shape)


def test_shape_extras():
    check(lambda L, x: L.select(x, 1, -1), X)
    check(lambda L, x: x.select(0, 2), X3[0].copy())
    check(lambda L, x: L.broadcast_to(x, (2, 3, 4)), X)
    check(lambda L, x: x.ravel(), X3)
    check(lambda L, a, b: L.concat([a, b], 1), X, r(3, 2))
    check(lambda L, a, b: L.concatenate((a, b)), X, r(1, 4))
    check(lambda L, a, b: L.hstack([a, b]), r(3), r(2))
    check(lambda L, a, b: L.hstack([a, b]), X, r(3, 1))
    check(lambda L, a, b: L.vstack([a, b]), r(4), X)
    check(lambda L, x: x.repeat_interleave(2), X)
    check(lambda L, x: L.repeat_interleave(x, 3, dim=1), X)
    check(lambda L, x, c: x.repeat_interleave(c, dim=0), X, np.array([2, 0, 1]))
    check(lambda L, c: L.repeat_interleave(c), np.array([2, 0, 3]), grad=False)
    for indexing in ("ij", "xy"):
        check(lambda L, a, b, c: L.meshgrid(a, b, c, indexing=indexing), r(2), r(3), r(4))
        check(lambda L, a, b: L.meshgrid([a, b], indexing=indexing), r(2), r(3))
    for k in (1, 2, 3, -1, 4):
        check(lambda L, x: L.rot90(x, k), X)
        check(lambda L, x: x.rot90(k, (2, 0)), X3)
    check(lambda L, x: L.diff(x), X)
    check(lambda L, x: x.diff(n=2, dim=0), X)
    check(lambda L, x, p, a: L.diff(x, 1, 1, p, a), X, r(3, 1), r(3, 2))
    with pytest.raises(IndexError, match="index 4 out of range for dimension 1 of size 4"):
        minidl.tensor(X).select(1, 4)


def test_ordering_extras():
    a = np.array([[1.0, 3.0, 2.0, 3.0, 0.5], [2.0, -1.0, 4.0, 4.0, 5.0]])
    # ties: torch's indices (the latest) and gradients; no finite differences across a tie
    check(lambda L, x: L.cummax(x, 1), a, check_grad=False)
    check(lambda L, x: x.cummin(1), a, check_grad=False)
    check(lambda L, x: L.cummax(x, 0), X)
    check(lambda L, x: x.cummin(dim=1), X)
    check(lambda L, x: L.cummin(x, dim=-1), np.array([2.0, np.nan, 1.0]), grad=False)
    d = X  # distinct values: the index a median or kthvalue picks is unique
    check(lambda L, x: L.kthvalue(x, 2, 1), d)
    check(lambda L, x: x.kthvalue(3, dim=0, keepdim=True), d)
    check(lambda L, x: L.median(x), d)
    check(lambda L, x: x.median(1), d)
    check(lambda L, x: x.median(0, keepdim=True), d)
    check(lambda L, x: L.msort(x), d)
    u = np.array([[3, 1, 2], [1, 3, 3]])
    check(lambda L, x: L.unique(x), u, grad=False)
    check(lambda L, x: x.unique(return_inverse=True, return_counts=True), u, grad=False)
    seq = np.array([1.0, 2.0, 2.0, 5.0])
    vals = np.array([[0.0, 2.0, 3.0], [5.0, 6.0, 1.0]])
    check(lambda L, s, v: L.searchsorted(s, v), seq, vals, grad=False)
    check(lambda L, s, v: L.searchsorted(s, v, right=True), seq, vals, grad=False)
    check(lambda L, s, v: L.searchsorted(s, v, side="right", out_int32=True), seq, vals,
          grad=False)
    check(lambda L, s, v: L.searchsorted(s, v), np.sort(r(2, 5), axis=1), r(2, 3), grad=False)
    check(lambda L, v, b: L.bucketize(v, b), vals, seq, grad=False)
    check(lambda L, v, b: L.bucketize(v, b, right=True), vals, seq, grad=False)


@needs_torch
def test_product_extras():
    check(lambda L, x: L.trace(x), r(4, 4))
    check(lambda L, x: x.trace(), X)
    check(lambda L, i, a, b: L.addmm(i, a, b), r(3, 2), X, r(4, 2))
    check(lambda L, i, a, b: i.addmm(a, b, beta=0.5, alpha=-2), r(2), X, r(4, 2))
    check(lambda L, i, a, b: L.baddbmm(i, a, b, alpha=3), r(2, 3, 5), X3, r(2, 4, 5))
    check(lambda L, i, a, b: L.addmv(i, a, b, beta=2), r(3), X, r(4))
    check(lambda L, a, b: L.inner(a, b), X, r(5, 4))
    check(lambda L, a, b: a.inner(b), X3, r(4))
    check(lambda L, a, b: L.cross(a, b, dim=1), r(4, 3), r(4, 3))
    check(lambda L, a, b: L.linalg.cross(a, b) if L is torch else L.cross(a, b, dim=-1),
          r(2, 3), r(1, 3))
    check(lambda L, a, b: a.cross(b, dim=0), r(3, 2), r(3, 2))


def test_math_extras():
    check(lambda L, x: L.clamp_min(x, 0.1), X)
    check(lambda L, x: x.clamp_max(-0.2), X)
    check(lambda L, x: L.count_nonzero(x), np.array([[0, 1.5], [2, 0]]), grad=False)
    check(lambda L, x: x.count_nonzero(dim=0), np.array([[0, 1], [2, 0], [3, 3]]), grad=False)
    bad = np.array([[1.0, np.nan, np.inf], [-np.inf, -2.0, 0.5]])
    check(lambda L, x: L.nan_to_num(x), bad, check_grad=False)
    check(lambda L, x: x.nan_to_num(nan=1.0, posinf=9.0, neginf=-9.0), bad, check_grad=False)
    check(lambda L, x: L.nansum(x), bad[:, :2].copy(), check_grad=False)
    check(lambda L, x: x.nansum(1), np.array([[1.0, np.nan], [2.0, 3.0]]), check_grad=False)
    check(lambda L, x: L.nanmean(x, 0), np.array([[1.0, np.nan], [2.0, 3.0]]), check_grad=False)
    check(lambda L, x, y: L.xlogy(x, y), np.array([[0.0, 1.5], [2.0, -1.0]]),
          np.array([[0.5, 2.0], [3.0, 0.7]]))
    check(lambda L, x: L.xlogy(x, 2.0), X)
    check(lambda L, x: L.std_mean(x, 1), X)
    check(lambda L, x: L.var_mean(x, 0, keepdim=True, correction=0), X)
    check(lambda L, x: L.std_mean(x), X)


@needs_torch
@pytest.mark.parametrize("name, a", [("exp", X), ("log", np.abs(X) + 0.5), ("sqrt", np.abs(X)),
                                     ("neg", X), ("abs", X + 0.05), ("sigmoid", X),
                                     ("tanh", X), ("sin", X), ("reciprocal", X),
                                     ("square", X), ("floor", X)])
def test_in_place_unary_methods(name, a):
    def f(L, x):
        y = x * 1.5
        getattr(y, name + "_")()
        return y
    check(f, a)
    t = minidl.tensor(a)
    view = t[0]
    assert getattr(t, name + "_")() is t
    expected = getattr(torch.tensor(a, dtype=torch.float32), name)().numpy()
    np.testing.assert_allclose(view.numpy(), expected[0], rtol=1e-6)


@needs_torch
def test_pow_clamp_min_detach_in_place_and_tensor_queries():
    def f(L, x):
        y = x * 2
        y.pow_(3)
        y.clamp_min_(-1.0)
        return y
    check(f, X)
    x = minidl.tensor(X, requires_grad=True)
    y = x * 2
    assert y.detach_() is y and y.is_leaf and not y.requires_grad
    for lib in (minidl, torch):
        t = lib.tensor(X.astype(np.float32))
        assert t.is_floating_point() and not lib.tensor([1]).is_floating_point()
        assert t.is_contiguous() and t.nelement() == 12 and t.element_size() == 4


@needs_torch
def test_fake_gpu(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    a32 = X.astype(np.float32)
    x = minidl.tensor(a32, device="cuda", requires_grad=True)
    y = (x.cummax(1).values + x.repeat_interleave(1, dim=0)).rot90() * x.median()
    y = minidl.xlogy(y.abs(), x.T.abs() + 1).nansum() + minidl.trace(x[:, :3])
    y.backward()
    assert y.device == "cuda" and x.grad.device == "cuda" and x.grad.dtype == np.float32
    t = torch.tensor(a32, requires_grad=True)
    ty = (t.cummax(1).values + t.repeat_interleave(1, dim=0)).rot90() * t.median()
    ty = torch.xlogy(ty.abs(), t.T.abs() + 1).nansum() + torch.trace(t[:, :3])
    ty.backward()
    np.testing.assert_allclose(y.item(), ty.item(), rtol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)
    s = minidl.searchsorted(minidl.tensor([1.0, 2.0], device="cuda"),
                            minidl.tensor([1.5], device="cuda"))
    assert s.device == "cuda" and s.item() == 1
    assert minidl.unique(minidl.tensor([2, 1, 2], device="cuda")).device == "cuda"


# ---- bfloat16 medians -------------------------------------------------------------------------

INF, NAN = float("inf"), float("nan")


def test_bfloat16_median_propagates_nan_and_empty_gives_nan():
    x = minidl.tensor([NAN, 1.7, 1.1], dtype=minidl.bfloat16)
    assert np.isnan(float(x.median()))
    assert float(x.nanmedian()) == pytest.approx(1.1015625)
    r = x.median(0)
    assert np.isnan(float(r.values)) and int(r.indices) == 0
    assert np.isnan(float(minidl.tensor([], dtype=minidl.bfloat16).median()))
    assert np.isnan(float(minidl.tensor([], dtype=minidl.bfloat16).nanmedian()))
    u = minidl.unique(minidl.tensor([NAN, NAN, 1.0], dtype=minidl.bfloat16))
    assert u.shape == (3,)  # each NaN its own value, as torch


def test_bfloat16_median_parity():
    torch = pytest.importorskip("torch")
    for v in ([INF, NAN, -0.0], [3.0, 1.0, 2.0, NAN], [NAN, 1.7, 1.1]):
        a = minidl.tensor(v, dtype=minidl.bfloat16)
        b = torch.tensor(v, dtype=torch.bfloat16)
        for name in ("median", "nanmedian"):
            np.testing.assert_array_equal(np.float32(getattr(a, name)().float().item()),
                                          np.float32(getattr(b, name)().float().item()))
            ours, theirs = getattr(a, name)(0), getattr(b, name)(0)
            assert int(ours.indices) == int(theirs.indices)


# ---- searchsorted sorter= and bool values -----------------------------------------------------

def test_searchsorted_with_a_sorter_and_bool_values():
    s = minidl.tensor([3.0, 1.0, 2.0])
    out = minidl.searchsorted(s, minidl.tensor([2.5, 0.0]), sorter=minidl.tensor([1, 2, 0]))
    np.testing.assert_array_equal(out.numpy(), [2, 0])
    out = minidl.searchsorted(s, minidl.tensor([2.0]), side="right",
                              sorter=minidl.tensor([1, 2, 0]))
    np.testing.assert_array_equal(out.numpy(), [2])
    for bad in (minidl.tensor([1, 2, 3]), minidl.tensor([1, 2]), minidl.tensor([1.0, 2, 0]),
                minidl.tensor([-1, 2, 0])):
        with pytest.raises(RuntimeError, match="sorter"):
            minidl.searchsorted(s, minidl.tensor([1.0]), sorter=bad)
    np.testing.assert_array_equal(
        minidl.searchsorted(minidl.tensor([0.0, 1.0]), minidl.tensor([True, False])).numpy(),
        [1, 0])
    with pytest.raises(TypeError):
        minidl.searchsorted(minidl.tensor([False, True]), minidl.tensor([True]))


def test_searchsorted_sorter_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((2, 6))
    order = np.argsort(seq, axis=-1)
    vals = rng.standard_normal((2, 4))
    for side in ("left", "right"):
        ours = minidl.searchsorted(minidl.tensor(seq), minidl.tensor(vals), side=side,
                                   sorter=minidl.tensor(order))
        theirs = torch.searchsorted(torch.tensor(seq), torch.tensor(vals), side=side,
                                    sorter=torch.tensor(order))
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


# ---- unique over a dim ------------------------------------------------------------------------

def test_unique_over_a_dim_sorts_the_slices():
    x = minidl.tensor([[1, 2], [1, 2], [0, 5]])
    values, inverse, counts = minidl.unique(x, dim=0, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(values.numpy(), [[0, 5], [1, 2]])
    np.testing.assert_array_equal(inverse.numpy(), [1, 1, 0])
    np.testing.assert_array_equal(counts.numpy(), [1, 2])
    np.testing.assert_array_equal(x.unique(dim=1).numpy(), [[1, 2], [1, 2], [0, 5]])
    y = minidl.tensor([[3, 1, 3], [2, 2, 2]])
    v, inv = minidl.unique(y, dim=-1, return_inverse=True)
    np.testing.assert_array_equal(v.numpy(), [[1, 3], [2, 2]])
    np.testing.assert_array_equal(inv.numpy(), [1, 0, 1])
    assert minidl.unique(minidl.zeros(0, 3), dim=0).shape == (0, 3)
    assert minidl.unique(minidl.zeros(2, 0), dim=1).shape == (2, 0)
    with pytest.raises(RuntimeError, match="0 sized dimensions"):
        minidl.unique(minidl.zeros(2, 0), dim=0)
    with pytest.raises(IndexError):
        minidl.unique(minidl.tensor(3.0), dim=0)


def test_unique_over_a_dim_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for shape, dim in (((5, 3), 0), ((5, 3), 1), ((4, 2, 3), -1), ((4, 2, 3), 1), ((6,), 0)):
        a = rng.integers(0, 2, shape)
        for dt in ("int64", "float64", "bool"):
            ours = minidl.unique(minidl.tensor(a.astype(dt)), dim=dim, return_inverse=True,
                                 return_counts=True)
            theirs = torch.unique(torch.tensor(a.astype(dt)), dim=dim, return_inverse=True,
                                  return_counts=True)
            for o, t in zip(ours, theirs):
                np.testing.assert_array_equal(o.numpy(), t.numpy())
