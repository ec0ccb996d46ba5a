"""sort, argsort, cumsum, cumprod, flip, roll, tril/triu, diag/diagonal, narrow, unbind,
movedim, swapaxes/swapdims, unflatten, view_as/reshape_as, contiguous, squeeze with a tuple,
tile and the new_* factories: PyTorch's values, dtypes and gradients in float64, and
finite-difference gradient checks."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch
from minidl.testing import gradcheck
from minidl.testing import gradgradcheck

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


# ---- view refuses what torch's view refuses ---------------------------------------------------

def test_view_of_a_transpose_expand_or_strided_slice_is_refused():
    x = minidl.ones(2, 3)
    for v in (x.t(), x.unsqueeze(0).expand(2, 2, 3), x[:, ::2], x.permute(1, 0)):
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            v.view(-1)
        assert v.reshape(-1).shape == (v.numel(),)  # reshape copies
    assert x.t().view(3, 2).shape == (3, 2)
    assert x.unsqueeze(0).expand(2, 2, 3).view(2, 2, 3, 1).shape == (2, 2, 3, 1)
    assert x.flip(0).view(-1).shape == (6,)  # flip is a copy, as torch's
    assert (x.t() + 1).view(-1).shape == (6,)  # an op's result, not a view
    with pytest.raises(RuntimeError, match="view size"):
        minidl.zeros(2, 3).t().view_as(minidl.zeros(6))


def test_view_as_another_dtype_reads_the_bytes():
    y = minidl.tensor([1.0, 2.0])
    z = y.view(minidl.int32)
    np.testing.assert_array_equal(z.numpy(), np.array([1.0, 2.0], np.float32).view(np.int32))
    z[0] = 0  # shares memory
    assert y[0].item() == 0.0
    assert minidl.ones(2, 4, dtype=minidl.float16).view(minidl.float32).shape == (2, 2)
    with pytest.raises(RuntimeError):
        minidl.ones(3, dtype=minidl.float16).view(minidl.float32)


def test_view_parity_on_non_contiguous_inputs():
    torch = pytest.importorskip("torch")
    a = np.arange(24.0).reshape(2, 3, 4)
    cases = [lambda t: t.transpose(0, 2), lambda t: t[:, ::2], lambda t: t.unsqueeze(0).expand(
        2, 2, 3, 4), lambda t: t.permute(1, 0, 2), lambda t: t[:, 1:]]
    for make in cases:
        for shape in ((-1,), (6, -1), (2, 12), (-1, 4), (2, 3, 2, 2)):
            ours, theirs = make(minidl.tensor(a)), make(torch.tensor(a))
            try:
                expect = theirs.view(*shape)
            except RuntimeError:
                with pytest.raises(RuntimeError):
                    ours.view(*shape)
                continue
            np.testing.assert_array_equal(ours.view(*shape).numpy(), expect.numpy())
    np.testing.assert_array_equal(minidl.tensor([1.0, 2.0]).view(minidl.int32).numpy(),
                                  torch.tensor([1.0, 2.0]).view(torch.int32).numpy())


# ---- squeeze with a tuple, unflatten of an empty tensor ---------------------------------------

def test_squeeze_tuple_dims_on_0d_and_repeated_dims():
    assert minidl.tensor(2.0).squeeze((0,)).shape == ()
    assert minidl.tensor(2.0).squeeze(()).shape == ()
    assert minidl.tensor(2.0).squeeze((-1,)).shape == ()
    with pytest.raises(RuntimeError, match="appears multiple times"):
        minidl.ones(3).squeeze((0, -1))
    with pytest.raises(IndexError):
        minidl.tensor(2.0).squeeze((1,))


def test_unflatten_with_minus_one_on_an_empty_tensor():
    assert minidl.zeros(3, 0).t().unflatten(1, (1, -1)).shape == (0, 1, 3)
    assert minidl.zeros(2, 3, 0).unflatten(1, (-1, 1)).shape == (2, 3, 1, 0)
    assert minidl.zeros(2, 6).unflatten(-1, (-1, 3)).shape == (2, 2, 3)


# ---- Tensor.unfold is a view ------------------------------------------------------------------

def f64(x, requires_grad=False):
    return minidl.tensor(np.asarray(x, dtype=np.float64), dtype=minidl.float64,
                         requires_grad=requires_grad)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _as_strided_twice(lib):
    a = lib.tensor(np.arange(12.0).reshape(3, 4), dtype=lib.float64, requires_grad=True)
    b = a * 1
    inner = b.as_strided((2, 2), (4, 1), 5)
    inner.as_strided((2,), (5,), 0).mul_(10)  # storage elements 0 and 5
    (b ** 2).sum().backward()
    x = lib.arange(12.0)
    windows = x[2:].unfold(0, 3, 2)
    return (b.detach().numpy(), a.grad.numpy(), windows.storage_offset(),
            windows.as_strided((2,), (3,)).tolist(), inner.as_strided((2,), (1,), 3).tolist())


def test_unfold_is_a_view_of_its_input():
    """Tensor.unfold gathered its windows into a copy (IndexSelect), so a write through a
    window (u[1] = ..., u.zero_()) silently left the input unchanged and a later change of the
    input did not show in the windows; torch's unfold is a view of the input's memory."""
    x = minidl.arange(6.0)
    x.unfold(0, 3, 3).zero_()
    assert x.tolist() == [0.0] * 6
    y = minidl.arange(6.0)
    windows = y.unfold(0, 3, 1)
    y[0] = 100.0
    assert windows[0].tolist() == [100.0, 1.0, 2.0]
    a = f64(np.arange(8.0), requires_grad=True)
    b = a * 1
    b.unfold(0, 2, 2)[1] = f64([10.0, 20.0])
    (b ** 2).sum().backward()
    assert b.tolist() == [0.0, 1.0, 10.0, 20.0, 4.0, 5.0, 6.0, 7.0]
    assert a.grad.tolist() == [0.0, 2.0, 0.0, 0.0, 8.0, 10.0, 12.0, 14.0]


@pytest.mark.parametrize("shape,dim,size,step,transposed", [
    ((7,), 0, 3, 2, False), ((2, 9), 1, 4, 1, False), ((5, 6), 0, 2, 3, True),
    ((3, 4, 5), -1, 5, 1, False), ((3, 4, 5), 1, 0, 2, False), ((6,), 0, 1, 7, False)])
def test_unfold_gradients(shape, dim, size, step, transposed):
    def fn(x):
        return (x.t() if transposed else x).unfold(dim, size, step)
    a = f64(_rand(*shape), requires_grad=True)
    assert gradcheck(fn, (a,))
    assert gradgradcheck(lambda x: fn(x) ** 2, (a,))


def test_unfold_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for shape, dim, size, step in [((7,), 0, 3, 2), ((2, 9), 1, 4, 1), ((3, 4, 5), 2, 2, 2)]:
        a, g0 = rng.standard_normal(shape), None
        t = torch.tensor(a, requires_grad=True)
        m = f64(a, requires_grad=True)
        ty, my = t.unfold(dim, size, step), m.unfold(dim, size, step)
        g0 = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(g0))
        my.backward(f64(g0))
        np.testing.assert_array_equal(my.detach().numpy(), ty.detach().numpy())
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-12)
        assert my.stride() == ty.stride()


# ---- as_strided of a view that as_strided (or unfold) made ------------------------------------

def test_as_strided_of_an_as_strided_view_reads_the_storage():
    """as_strided of a view as_strided made (or, now, unfold) did not find the storage behind
    NumPy's as_strided (a DummyArray in its .base chain), took the view's own values as the
    storage and refused ('setStorage: ... the storage holds 4'); torch reads the offset and
    strides against the whole storage."""
    b, g, offset, read, read2 = _as_strided_twice(minidl)
    assert b[0, 0] == 0.0 and b[1, 1] == 50.0 and g[1, 1] == 1000.0
    assert offset == 2 and read == [2.0, 5.0] and read2 == [3.0, 4.0]


def test_as_strided_of_an_as_strided_view_as_torch():
    torch = pytest.importorskip("torch")
    for m, t in zip(_as_strided_twice(minidl), _as_strided_twice(torch)):
        np.testing.assert_array_equal(np.asarray(m), np.asarray(t))


# ---- Tensor.unfold is a view on the fake GPU too ----------------------------------------------

def test_unfold_view_on_the_fake_gpu(monkeypatch, host_kernels):
    """The windows of a device tensor stay on the device (NumPy's as_strided, which the fake
    GPU's arrays go through, returned a plain host array) and agree with the CPU's."""
    import _fake_gpu

    def run(device):
        a = minidl.tensor(_rand(3, 8), dtype=minidl.float64, device=device, requires_grad=True)
        b = a * 1
        windows = b.unfold(1, 3, 2)
        windows[:, 0].mul_(2)
        ((b ** 2).sum() + (windows ** 3).sum()).backward()
        return windows, b, a.grad

    cpu = run("cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    gpu = run("cuda")
    for g, c in zip(gpu, cpu):
        assert g.device == "cuda"
        np.testing.assert_allclose(g.detach().cpu().numpy(), c.detach().numpy(), rtol=1e-12)


# ---- minidl.masked ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_running_sums_in_bool_are_refused(name):
    """cumsum/cumprod with dtype=bool (and so minidl.masked.cumsum/cumprod of a bool input,
    whose dtype is the input's) gave a bool running 'sum'; torch has no such kernel."""
    b = minidl.tensor([True, True, False])
    with pytest.raises(NotImplementedError, match=f'"{name}_out_cpu" not implemented for '
                                                  "'Bool'"):
        getattr(minidl, name)(b, 0, dtype=minidl.bool)
    with pytest.raises(NotImplementedError, match="'Bool'"):
        getattr(minidl.masked, name)(b, 0, mask=b)
    np.testing.assert_array_equal(getattr(minidl, name)(b, 0).numpy(),
                                  [1, 2, 2] if name == "cumsum" else [1, 1, 0])
