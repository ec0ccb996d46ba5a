"""gather, scatter, scatter_add (and their in-place forms), index_select, index_add,
take_along_dim, masked_select, nonzero, argwhere: PyTorch's values and gradients in float64,
finite-difference gradient checks, and IndexErrors that name the bad index."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4))
IDX0 = np.array([[0, 1, 2, 0], [2, 2, 1, 0]])  # repeats: gradients add up
IDX1 = np.array([[3, 0], [1, 1], [2, 0]])


@pytest.mark.parametrize("dim, index", [(0, IDX0), (1, IDX1), (-1, IDX1[:2, :1])])
def test_gather(dim, index):
    check(lambda L, x, i: L.gather(x, dim, i), X, index)
    check(lambda L, x, i: x.gather(dim, i), X, index)


def test_gather_3d():
    x = rng.standard_normal((2, 3, 4))
    i = rng.integers(0, 3, (2, 5, 4))
    check(lambda L, x, i: x.gather(1, i), x, i)


@pytest.mark.parametrize("dim, index", [(0, np.array([[0, 1, 2, 0], [2, 0, 1, 1]])),
                                        (1, np.array([[3, 0], [1, 2], [2, 0]]))])
def test_scatter_and_scatter_add(dim, index):
    src = rng.standard_normal((3, 4))
    # distinct positions per scatter (a repeat's winner is unspecified in torch)
    si = index[:, :1] if dim == 0 else index
    # torch's scatter backward needs src of index's shape; scatter_add takes a larger src
    check(lambda L, x, i, s: L.scatter(x, dim, i, s), X, si, src[:si.shape[0], :si.shape[1]])
    src = src[:index.shape[0], :index.shape[1]]
    check(lambda L, x, i, s: x.scatter_add(dim, i, s), X, index, src)
    check(lambda L, x, i, s: L.scatter_add(x, dim, i, s), X, index, src)


@needs_torch
def test_scatter_add_takes_a_larger_src():
    x = minidl.zeros(3, 4, dtype=minidl.float64)
    s = minidl.tensor(np.arange(12.0).reshape(3, 4), dtype=minidl.float64, requires_grad=True)
    y = x.scatter_add(0, minidl.tensor([[1, 2], [1, 0]]), s)
    t = torch.zeros(3, 4, dtype=torch.float64).scatter_add(
        0, torch.tensor([[1, 2], [1, 0]]), torch.arange(12.0, dtype=torch.float64).reshape(3, 4))
    np.testing.assert_array_equal(y.numpy(), t.numpy())
    (y * y).sum().backward()  # src's unused elements get a zero gradient
    np.testing.assert_array_equal(s.grad.numpy()[:, 2:], 0)
    np.testing.assert_array_equal(s.grad.numpy()[:2, :2], 2 * y.numpy()[[[1, 2], [1, 0]], [0, 1]])


def test_scatter_value():
    check(lambda L, x, i: x.scatter(1, i, 2.5), X, np.array([[0], [3], [1]]))
    check(lambda L, x, i: L.scatter(x, 1, i, value=-1.0), X, np.array([[0], [3], [1]]))


def test_scatter_in_place_on_a_graph_tensor():
    src = rng.standard_normal((2, 4))
    i = np.array([[0, 1, 2, 0], [1, 2, 0, 2]])

    def f(L, x, i, s):
        y = x * 2
        y.scatter_add_(0, i, s)
        z = x * 1
        z.scatter_(0, i[:1], s[:1])
        return y * z
    check(f, X, i, src)


def test_scatter_in_place_without_graph_writes_the_array():
    x = minidl.zeros(3, 4)
    view = x[0]
    out = x.scatter_(0, minidl.tensor([[1, 0, 2, 0]]), minidl.ones(1, 4))
    assert out is x
    np.testing.assert_array_equal(view.numpy(), [0, 1, 0, 1])
    x.scatter_add_(1, minidl.tensor([[0, 0]]), minidl.ones(1, 2))
    assert x[0, 0].item() == 2.0
    leaf = minidl.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        leaf.scatter_(0, minidl.tensor([0]), minidl.ones(1))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select(dim):
    i = np.array([2, 0, 2]) if dim == 0 else np.array([3, 3, 1, 0, 2])
    check(lambda L, x, i: L.index_select(x, dim, i), X, i)
    check(lambda L, x, i: x.index_select(dim, i), X, i.astype(np.int32))


def test_index_add():
    src = rng.standard_normal((3, 3))
    i = np.array([1, 3, 1])
    check(lambda L, x, i, s: L.index_add(x, 1, i, s), X, i, src)
    check(lambda L, x, i, s: x.index_add(1, i, s, alpha=-2.0), X, i, src)

    def f(L, x, i, s):
        y = x + 0
        y.index_add_(1, i, s, alpha=3)
        return y
    check(f, X, i, src)


@pytest.mark.parametrize("dim", [None, 0, 1])
def test_take_along_dim(dim):
    if dim is None:
        i = np.array([0, 11, 5, 5])
    elif dim == 0:
        i = np.array([[2, 0, 1, 1]])  # broadcasts over nothing; (1, 4)
    else:
        i = np.argsort(X, axis=1)
    check(lambda L, x, i: L.take_along_dim(x, i, dim), X, i)
    check(lambda L, x, i: x.take_along_dim(i, dim=dim), X, i)


def test_take_along_dim_broadcasts():
    x = rng.standard_normal((3, 1, 4))
    i = rng.integers(0, 4, (1, 5, 2))
    check(lambda L, x, i: L.take_along_dim(x, i, 2), x, i)


def test_masked_select():
    mask = X > 0
    check(lambda L, x, m: L.masked_select(x, m), X, mask)
    check(lambda L, x, m: x.masked_select(m), X, np.array([True, False, True, True]))
    check(lambda L, x, m: x.masked_select(m), X[:, :1], mask)  # the input broadcasts


@pytest.mark.parametrize("a", [np.array([[0, 1.5, 0], [2, 0, -1]]), np.array([0, 3, 0, 4]),
                               np.array(0.0), np.array(2), np.zeros((2, 0))])
def test_nonzero_and_argwhere(a):
    check(lambda L, x: L.nonzero(x), a, grad=False)
    check(lambda L, x: x.nonzero(as_tuple=True), a, grad=False)
    check(lambda L, x: L.argwhere(x), a, grad=False)
    check(lambda L, x: x.argwhere(), a, grad=False)


def test_bad_indices_name_the_index_and_the_size():
    x = minidl.tensor(X)
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 0 with size 3"):
        x.gather(0, minidl.tensor([[4, 0, 0, 0]]))
    with pytest.raises(IndexError, match="index -1 .*size 4"):
        x.gather(1, minidl.tensor([[-1]] * 3))
    with pytest.raises(IndexError, match="index 9 .*dimension 1 with size 4"):
        x.index_select(1, minidl.tensor([0, 9]))
    with pytest.raises(IndexError, match="index 3 .*size 3"):
        x.scatter(0, minidl.tensor([[3]]), 1.0)
    with pytest.raises(IndexError, match="index 5"):
        x.index_add(0, minidl.tensor([5]), minidl.zeros(1, 4))
    with pytest.raises(TypeError, match="int64"):
        x.gather(0, minidl.tensor([[0.0]]))
    with pytest.raises(ValueError, match="same number of dims"):
        x.gather(0, minidl.tensor([0]))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        x.index_add(0, minidl.tensor([0]), minidl.zeros(2, 4))
    with pytest.raises(IndexError, match="dimension out of range"):
        x.index_select(2, minidl.tensor([0]))
    with pytest.raises(TypeError, match="bool"):
        x.masked_select(minidl.tensor([1, 0, 1, 0]))


@needs_torch
def test_float32_stays_float32_and_fake_gpu(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    x = minidl.tensor(X.astype(np.float32), device="cuda", requires_grad=True)
    i = minidl.tensor(IDX0, device="cuda")
    i2 = minidl.tensor(IDX0[:, :2] % 2, device="cuda")
    y = x.gather(0, i) + x.index_select(1, minidl.tensor([0, 1, 2, 3], device="cuda"))[:2]
    y = minidl.scatter_add(y, 0, i2, y[:, :2])
    y.sum().backward()
    assert y.device == "cuda" and x.grad.device == "cuda" and y.dtype == np.float32
    t = torch.tensor(X.astype(np.float32), requires_grad=True)
    ti = torch.tensor(IDX0)
    ty = t.gather(0, ti) + t.index_select(1, torch.arange(4))[:2]
    ty = ty.scatter_add(0, ti[:, :2] % 2, ty[:, :2])
    ty.sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-6)


def test_take_and_index_fill():
    check(lambda L, x, i: L.take(x, i), X, np.array([[0, 11], [-1, 5], [5, 3]]))
    check(lambda L, x, i: x.take(i), X, np.array([2, 2, 7]))
    check(lambda L, x, i: L.index_fill(x, 1, i, -2.0), X, np.array([0, 2]))
    check(lambda L, x, i: x.index_fill(0, i, 3), X, np.array([1]))

    def f(L, x, i):
        y = x * 2
        y.index_fill_(1, i, 0.5)
        return y
    check(f, X, np.array([3, 1]))
    with pytest.raises(IndexError, match="index -13 .*size 12"):
        minidl.take(minidl.tensor(X), minidl.tensor([-13]))


def test_masked_fill_and_clamp_in_place():
    mask = X > 0.5

    def f(L, x, m):
        y = x * 3
        y.masked_fill_(m, -1.0)
        z = x + 1
        z.clamp_(-0.5, 1.5)
        w = x - 1
        w.clip_(max=0.0)
        return y * z + w
    check(f, X, mask)
    x = minidl.tensor(X)
    assert x.masked_fill_(minidl.tensor(mask), 0.0) is x and (x.numpy()[mask] == 0).all()
    assert x.clamp_(min=0.1).numpy().min() == np.float32(0.1)


def test_index_on_another_device_is_named(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    x = minidl.tensor(X, device="cuda")
    with pytest.raises(ValueError, match="index is on cpu, input on cuda"):
        x.gather(0, minidl.tensor(IDX0))
    with pytest.raises(ValueError, match="index is on cpu, input on cuda"):
        x.index_select(0, minidl.tensor([0]))


def test_where_with_only_a_condition_is_nonzero_as_tuple():
    check(lambda L, x: L.where(x > 0), X, grad=False)
    check(lambda L, x: L.where(x), np.array([0, 2, 0, 1]), grad=False)


def test_index_put_index_copy_unfold():
    i0, i1 = np.array([0, 2, 0]), np.array([1, 3, 1])
    v = rng.standard_normal(3)
    check(lambda L, x, a, b, v: L.index_put(x, (a, b), v, accumulate=True), X, i0, i1, v)
    check(lambda L, x, a, b, v: x.index_put((a, b), v), X, i0[:2], i1[:2], v[:2])
    check(lambda L, x, a, v: x.index_put((a,), v), X, np.array([2, 0]), v[None, :1])

    def f(L, x, a, v):
        y = x * 2
        y.index_put_((a,), v, accumulate=True)
        return y
    check(f, X, np.array([1, 1]), rng.standard_normal(4))
    src = rng.standard_normal((3, 2))
    check(lambda L, x, i, s: L.index_copy(x, 1, i, s), X, np.array([3, 0]), src)

    def g(L, x, i, s):
        y = x + 0
        y.index_copy_(1, i, s)
        return y
    check(g, X, np.array([1, 2]), src)
    check(lambda L, x: x.unfold(1, 2, 1), X)
    check(lambda L, x: x.unfold(0, 2, 2), X)
    check(lambda L, x: x.unfold(-1, 3, 2), rng.standard_normal((2, 3, 7)))
    with pytest.raises(IndexError, match="index 3 is out of bounds"):
        minidl.tensor(X).index_put((minidl.tensor([3]),), minidl.tensor(1.0))


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce(reduce, include_self):
    index = np.array([[0, 1, 2, 0], [2, 2, 1, 0], [0, 0, 2, 2]])  # repeats, one row untouched
    src = rng.standard_normal((3, 4))
    check(lambda L, x, i, s: L.scatter_reduce(x, 0, i, s, reduce, include_self=include_self),
          X, index, src)
    check(lambda L, x, i, s: x.scatter_reduce(1, i, s, reduce=reduce, include_self=include_self),
          X, index[:, :2] + 1, src[:, :2])

    def f(L, x, i, s):
        y = x * 1
        y.scatter_reduce_(0, i, s, reduce, include_self=include_self)
        return y
    check(f, X, index, src)


@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
def test_scatter_reduce_prod_with_zeros_amax_ties_and_integers():
    x = np.array([[0.0, 2.0, 1.5], [3.0, 0.0, 2.0]])
    s = np.array([[2.0, 0.0, 0.5], [0.0, 1.5, -1.0], [1.0, 3.0, 2.0]])
    i = np.array([[0, 1, 0], [0, 1, 1], [1, 0, 1]])
    check(lambda L, x, i, s: L.scatter_reduce(x, 0, i, s, "prod"), x, i, s)
    check(lambda L, x, i, s: L.scatter_reduce(x, 0, i, s, "prod", include_self=False), x, i, s)
    tie = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 0.0, 3.0]])  # ties in a position
    check(lambda L, x, i, s: L.scatter_reduce(x, 0, i, s, "amax"), x, np.zeros((3, 3), int),
          tie, check_grad=False)
    check(lambda L, x, i, s: L.scatter_reduce(x, 0, i, s, "amin", include_self=False), x,
          np.zeros((3, 3), int), tie, check_grad=False)
    ints = np.array([[1, 2, 3], [4, 5, 6]])
    for reduce in ["sum", "prod", "mean", "amax", "amin"]:
        for inc in (True, False):
            check(lambda L, x, i: L.scatter_reduce(x, 1, i, x, reduce, include_self=inc), ints,
                  np.array([[0, 0, 2], [1, 1, 1]]), grad=False)
    check(lambda L, x, i, s: L.scatter(x, 0, i, s, reduce="multiply"), x, i[:2], s[:2],
          grad=False)
    check(lambda L, x, i, s: x.scatter(0, i, s, reduce="add"), x, i[:2], s[:2], grad=False)
    with pytest.raises(ValueError, match="reduce must be one of"):
        minidl.scatter_reduce(minidl.tensor(x), 0, minidl.tensor(i), minidl.tensor(s), "max")


# ---- put_ into a 0-d tensor -------------------------------------------------------------------

def test_put_into_a_0d_tensor():
    x = minidl.tensor(5)
    assert x.put_(minidl.tensor([0, -1]), minidl.tensor([1, 2])) is x
    assert x.item() == 2
    x = minidl.tensor(5)
    x.put_(minidl.tensor([0, -1]), minidl.tensor([1, 2]), accumulate=True)
    assert x.item() == 8 and x.shape == ()
    a = minidl.tensor(2.0, requires_grad=True)
    b = minidl.tensor([3.0, 4.0], requires_grad=True)
    y = minidl.put(a * 1, minidl.tensor([0, 0]), b, accumulate=True)
    assert y.shape == () and y.item() == 9.0
    y.backward()
    assert a.grad.item() == 1.0
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


# ---- take_along_dim with negative indices; scatter_reduce's refusals --------------------------

def test_take_along_dim_takes_negative_indices_over_a_dim():
    x = minidl.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    y = minidl.take_along_dim(x, minidl.tensor([[-1, -3]]), 1)
    np.testing.assert_array_equal(y.detach().numpy(), [[3.0, 1.0]])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 0.0, 1.0]])
    with pytest.raises(IndexError):
        minidl.take_along_dim(x, minidl.tensor([[-4]]), 1)
    with pytest.raises(IndexError):  # flattened (dim=None): torch refuses -1 there too
        minidl.take_along_dim(minidl.tensor([1, 2, 3]), minidl.tensor([-1]))


def test_take_along_dim_negative_parity():
    torch = pytest.importorskip("torch")
    a = np.arange(12.0).reshape(3, 4)
    i = np.array([[-1, 0], [-4, 3], [2, -2]])
    for dim in (1, -1):
        np.testing.assert_array_equal(
            minidl.take_along_dim(minidl.tensor(a), minidl.tensor(i), dim).numpy(),
            torch.take_along_dim(torch.tensor(a), torch.tensor(i), dim).numpy())


def test_scatter_reduce_refuses_what_torch_does_not_implement():
    idx = minidl.tensor([0, 0])
    with pytest.raises(TypeError, match="mean"):
        minidl.scatter_reduce(minidl.tensor([True, False]), 0, idx, minidl.tensor([True, True]),
                              "mean")
    for red in ("amax", "amin"):
        with pytest.raises(TypeError, match=red):
            minidl.scatter_reduce(minidl.tensor([1j, 2]), 0, idx, minidl.tensor([1j, 1j]), red)
    out = minidl.scatter_reduce(minidl.tensor([1j, 2]), 0, idx, minidl.tensor([1j, 1j]), "sum")
    np.testing.assert_allclose(out.numpy(), [3j, 2])
    out = minidl.scatter_reduce(minidl.tensor([True, False]), 0, idx, minidl.tensor([True, True]),
                                "amax")
    np.testing.assert_array_equal(out.numpy(), [True, False])


# ---- scatter of a value beyond the dtype ------------------------------------------------------

def test_scatter_value_beyond_the_dtype_is_refused():
    idx = minidl.tensor([0])
    for value, dtype in ((300, minidl.int8), (1e5, minidl.float16), (1e300, minidl.float32)):
        with pytest.raises(RuntimeError, match="cannot be converted"):
            minidl.scatter(minidl.zeros(2, dtype=dtype), 0, idx, value)
    np.testing.assert_array_equal(
        minidl.scatter(minidl.zeros(2, dtype=minidl.uint8), 0, idx, -1).numpy(), [255, 0])
    np.testing.assert_array_equal(
        minidl.scatter(minidl.zeros(2, dtype=minidl.int64), 0, idx, 2.5).numpy(), [2, 0])
