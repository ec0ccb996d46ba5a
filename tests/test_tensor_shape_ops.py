"""sort, argsort, cumsum, cumprod, flip, roll, tril/triu, diag/diagonal, narrow, unbind,
movedim, swapaxes/swapdims, unflatten, view_as/reshape_as, contiguous, squeeze with a tuple,
tile and the new_* factories: PyTorch's values, dtypes and gradients in float64, and
finite-difference gradient checks."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch

rng = np.random.default_rng(1)
X = rng.standard_normal((3, 4))
X3 = rng.standard_normal((2, 3, 4))


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_and_argsort(dim, descending):
    check(lambda L, x: L.sort(x, dim=dim, descending=descending), X)
    check(lambda L, x: x.sort(dim, descending), X)
    check(lambda L, x: L.argsort(x, dim=dim, descending=descending), X, grad=False)
    check(lambda L, x: x.argsort(dim, descending=descending), X, grad=False)


@pytest.mark.parametrize("descending", [False, True])
def test_stable_sort_keeps_ties_in_order_and_nan_is_largest(descending):
    a = np.array([[2.0, 1.0, 2.0, np.nan, 1.0, 0.0, 2.0]])
    check(lambda L, x: L.sort(x, stable=True, descending=descending), a, grad=False)
    check(lambda L, x: L.argsort(x, stable=True, descending=descending), a, grad=False)
    result = minidl.sort(minidl.tensor(a), descending=descending, stable=True)
    values, indices = result
    assert result.values is values and result.indices is indices
    assert indices.dtype == np.int64


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumsum_and_cumprod(dim):
    check(lambda L, x: L.cumsum(x, dim), X)
    check(lambda L, x: x.cumsum(dim=dim), X)
    check(lambda L, x: L.cumprod(x, dim), X)
    check(lambda L, x: x.cumprod(dim), X3)


@pytest.mark.parametrize("row", [[0.0, 2.0, 3.0, 0.5], [2.0, 0.0, 3.0, 0.0], [1.5, 3.0, -2.0, 0.0],
                                 [0.0, 0.0, 2.0, 3.0]])
def test_cumprod_gradient_with_zeros(row):
    a = np.array([row, [1.0, -0.5, 2.0, 3.0]])
    check(lambda L, x: L.cumprod(x, 1), a)
    check(lambda L, x: L.cumprod(x, 0), a.T.copy())


def test_cumulative_dtypes():
    i = np.array([[1, 2], [3, 4]])
    check(lambda L, x: L.cumsum(x, 0), i, grad=False)
    check(lambda L, x: L.cumprod(x, 1), i.astype(np.int32), grad=False)
    check(lambda L, x: x.cumsum(0), np.array([True, False, True]), grad=False)
    check(lambda L, x: L.cumsum(x, 1, dtype=L.float64), i, grad=False)
    check(lambda L, x: L.cumsum(x, 0), np.array(2.5))
    x = minidl.tensor([1.0, 2.0])
    assert minidl.cumsum(x, 0).dtype == np.float32
    with pytest.raises(IndexError, match="dimension out of range"):
        x.cumsum(1)


def test_flip_roll():
    check(lambda L, x: L.flip(x, (0, 2)), X3)
    check(lambda L, x: x.flip(-1), X3)
    check(lambda L, x: x.flip([1]), X)
    check(lambda L, x: x.flip(0, 2), X3)
    check(lambda L, x: L.fliplr(x), X)
    check(lambda L, x: L.flipud(x), X)
    check(lambda L, x: L.roll(x, 2), X)
    check(lambda L, x: x.roll(-1, 0), X)
    check(lambda L, x: L.roll(x, (1, -3), (2, 0)), X3)
    check(lambda L, x: x.roll(shifts=5, dims=1), X)


@pytest.mark.parametrize("k", [0, 1, -1, 3, -5])
def test_tril_triu(k):
    check(lambda L, x: L.tril(x, k), X)
    check(lambda L, x: x.triu(k), X)
    check(lambda L, x: x.tril(diagonal=k), X3)
    check(lambda L, x: L.triu(x, diagonal=k), X3)


@pytest.mark.parametrize("k", [0, 1, -2, 5])
def test_diag_and_diagonal(k):
    check(lambda L, x: L.diag(x, k), X)
    check(lambda L, x: x.diag(k), X[0].copy())
    check(lambda L, x: x.diagonal(k), X)
    check(lambda L, x: L.diagonal(x, offset=k, dim1=2, dim2=0), X3)
    check(lambda L, x: x.diagonal(k, -1, 1), X3)


def test_narrow_unbind_movedim_swap_unflatten():
    check(lambda L, x: L.narrow(x, 1, 1, 2), X)
    check(lambda L, x: x.narrow(0, -2, 2), X)
    check(lambda L, x: L.unbind(x, 1), X)
    check(lambda L, x: (lambda p: p[0] * p[1])(x.unbind()), X3)
    check(lambda L, x: L.movedim(x, 0, 2), X3)
    check(lambda L, x: x.movedim((0, 1), (2, 0)), X3)
    check(lambda L, x: L.moveaxis(x, -1, 0), X3)
    check(lambda L, x: L.swapaxes(x, 0, 2), X3)
    check(lambda L, x: x.swapdims(1, -1), X3)
    check(lambda L, x: x.swapaxes(0, 1), X)
    check(lambda L, x: L.unflatten(x, 1, (2, 2)), X)
    check(lambda L, x: x.unflatten(-1, (2, -1)), X3)


def test_view_reshape_as_contiguous_squeeze_tile():
    y = np.zeros((6, 2))
    check(lambda L, x, y: x.view_as(y), X, y)
    check(lambda L, x, y: x.reshape_as(y), X, y)
    x = minidl.tensor(X)
    assert x.contiguous() is x
    check(lambda L, x: x.reshape(3, 1, 4, 1).squeeze((1, 3)), X)
    check(lambda L, x: x.reshape(1, 3, 1, 4).squeeze((0, -2, 1)), X)
    check(lambda L, x: L.tile(x, (2,)), X)
    check(lambda L, x: x.tile((2, 1, 3)), X)
    check(lambda L, x: x.tile(2, 2), X)


def test_new_factories():
    for dt in (np.float64, np.int32, np.float32):
        a = np.zeros((2,), dtype=dt)
        check(lambda L, x: x.new_zeros(2, 3), a, grad=False)
        check(lambda L, x: x.new_ones((3,)), a, grad=False)
        check(lambda L, x: x.new_full((2, 2), 7), a, grad=False)
        check(lambda L, x: x.new_tensor([[1, 2], [3, 4]]), a, grad=False)
        check(lambda L, x: x.new_zeros(2, dtype=L.int64), a, grad=False)
        assert minidl.tensor(a, dtype=dt).new_empty((4, 1)).shape == (4, 1)
        assert minidl.tensor(a, dtype=dt).new_empty(3).dtype == dt
    y = minidl.tensor([1.0]).new_ones(2, requires_grad=True)
    assert y.requires_grad and y.is_leaf


def test_bad_arguments():
    x = minidl.tensor(X)
    with pytest.raises(IndexError, match="start 5 out of range"):
        x.narrow(0, 5, 1)
    with pytest.raises(ValueError, match=r"start \(2\) \+ length \(2\) exceeds"):
        x.narrow(0, 2, 2)
    with pytest.raises(ValueError, match="at least 2 dims"):
        minidl.tril(minidl.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="do not fill dim 1 of size 4"):
        x.unflatten(1, (3, 2))
    with pytest.raises(ValueError, match="more than once"):
        x.flip((0, 0))
    with pytest.raises(ValueError, match="same length"):
        x.roll((1, 2), 0)
    with pytest.raises(ValueError, match="1-d or 2-d"):
        minidl.diag(minidl.tensor(X3))
    with pytest.raises(IndexError, match="dimension out of range"):
        x.sort(2)


@needs_torch
def test_fake_gpu(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    x = minidl.tensor(X.astype(np.float32), device="cuda", requires_grad=True)
    y = (x.sort(1).values * x.cumprod(0)).roll(1, 0).flip(1).tril() + x.diag().sum()
    y.sum().backward()
    assert y.device == "cuda" and x.grad.device == "cuda" and x.grad.dtype == np.float32
    t = torch.tensor(X.astype(np.float32), requires_grad=True)
    ty = (t.sort(1).values * t.cumprod(0)).roll(1, 0).flip(1).tril() + t.diag().sum()
    ty.sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert x.new_zeros(2).device == "cuda"
