"""Autograd semantics: deep graphs, accumulation, requires_grad propagation, detach, no_grad,
dtype rules, seeding, and the small Tensor API (numpy, item, T, comparisons)."""
import sys

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from helpers import leaf, randn


# ---- deep graphs ----------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1000, 5000])
def test_backward_through_a_long_chain_has_no_recursion_limit(depth):
    x = minidl.tensor([1.0, 2.0], requires_grad=True, dtype="float64")
    y = x
    for _ in range(depth):
        y = y * 1.001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(2, 1.001 ** depth), rtol=1e-9)


def test_deep_chain_with_recursion_limit_lowered():
    x = minidl.tensor(1.0, requires_grad=True, dtype="float64")
    y = x
    for _ in range(1000):
        y = y + x  # every node also fans in to x: the graph is a deep DAG, not a tree
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        y.backward()
    finally:
        sys.setrecursionlimit(old)
    assert x.grad.item() == 1001.0


def test_diamond_graph_visits_shared_nodes_once():
    x = minidl.tensor(3.0, requires_grad=True, dtype="float64")
    h = x * 2        # used by two branches
    y = h * h + h.exp()
    y.backward()
    assert x.grad.item() == pytest.approx(2 * (2 * 6.0) + 2 * np.exp(6.0))


# ---- accumulation ---------------------------------------------------------------------------
def test_gradient_accumulates_when_a_tensor_is_used_twice():
    x = leaf([1.0, -2.0, 3.0])
    y = x * x + x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)


def test_gradient_accumulates_across_backward_calls_like_torch():
    x = leaf([1.0, 2.0])
    (x * 3).sum().backward()
    first = x.grad
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 + 2 * x.numpy())
    # accumulated in place, as PyTorch's AccumulateGrad does: a reference to .grad sees it
    assert first is x.grad
    np.testing.assert_allclose(first.numpy(), [5.0, 7.0])
    x.grad = None
    (x * 5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_backward_with_explicit_gradient():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    (x * x).backward(minidl.tensor([[1.0, 0.0], [0.5, 2.0]], dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 0.0], [3.0, 16.0]])
    x.grad = None
    (x * 2).backward(np.ones((2, 2)))
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 2), 2.0))


def test_each_grad_is_a_writable_array_of_its_own():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a * 2 + b).sum().backward()  # b's gradient comes from sum's broadcast (a read-only view)
    b.grad.zero_()                 # torch idiom: must not raise "read-only"
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])

    c, d = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    upstream = np.ones(2)
    (c + d).backward(upstream)     # Add hands one array to both inputs
    c.grad.data *= 5.0
    np.testing.assert_array_equal(d.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(upstream, [1.0, 1.0])  # the caller's array is not aliased


def test_intermediate_tensors_keep_no_grad_unless_retained():
    x = leaf([1.0, 2.0])
    h = x * 2
    k = x * 3
    k.retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    np.testing.assert_allclose(k.grad.numpy(), h.numpy())
    assert not h.is_leaf and x.is_leaf


# ---- requires_grad, detach, no_grad -----------------------------------------------------------
def test_requires_grad_propagation():
    a = leaf([1.0, 2.0])
    b = leaf([3.0, 4.0], requires_grad=False)
    assert (a + b).requires_grad and (b * a).requires_grad
    assert not (b * b + 1).requires_grad
    assert not (b * b)._ctx  # no graph recorded where nothing needs a gradient
    (a * b).sum().backward()
    assert b.grad is None
    np.testing.assert_allclose(a.grad.numpy(), b.numpy())
    with pytest.raises(RuntimeError, match="does not require grad"):
        (b * 2).sum().backward()


def test_detach_cuts_the_graph_and_shares_values():
    x = leaf([1.0, 2.0])
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf and d._ctx is None
    np.testing.assert_array_equal(d.numpy(), [2.0, 4.0])
    y = x * d  # d is a constant: dy/dx = d only
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


def test_no_grad_records_nothing_and_restores():
    x = leaf([1.0, 2.0])
    assert minidl.is_grad_enabled()
    with minidl.no_grad():
        assert not minidl.is_grad_enabled()
        y = F.relu(x * 2 + 1).sum()
        assert not y.requires_grad and y._ctx is None
        with minidl.enable_grad():
            assert (x * 2).requires_grad
    assert minidl.is_grad_enabled()
    with pytest.raises(KeyError):
        with minidl.no_grad():
            raise KeyError("boom")
    assert minidl.is_grad_enabled()  # restored on exceptions too
    assert (x * 2).requires_grad

    @minidl.no_grad()
    def evaluate(t):
        return t * 2

    assert not evaluate(x).requires_grad and (x * 2).requires_grad


def test_integer_tensors_carry_no_gradient():
    with pytest.raises(TypeError, match="floating-point"):
        minidl.tensor([1, 2, 3], requires_grad=True)
    i = minidl.tensor([1, 2, 3])
    with pytest.raises(TypeError, match="floating-point"):
        i.requires_grad_()
    x = leaf([0.5, 1.5, 2.5])
    y = x * i
    assert y.requires_grad
    y.sum().backward()
    assert i.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])
    assert not (i * 2).requires_grad


# ---- dtypes ---------------------------------------------------------------------------------
def test_tensor_dtype_rules():
    assert minidl.tensor([1.0, 2.0]).dtype == np.float32
    assert minidl.tensor(1.5).dtype == np.float32
    assert minidl.tensor(np.array([1.0, 2.0])).dtype == np.float32  # float64 array -> float32
    assert minidl.tensor(np.array([1.0], np.float16)).dtype == np.float32
    assert minidl.tensor([1, 2]).dtype == np.int64
    assert minidl.tensor(np.array([1, 2], np.int32)).dtype == np.int64
    assert minidl.tensor(np.array([1, 2], np.uint8)).dtype == np.int64
    assert minidl.tensor([1.0, 2.0], dtype="float64").dtype == np.float64
    assert minidl.tensor(np.ones(2), dtype=np.float64).dtype == np.float64
    assert minidl.tensor([True, False]).dtype == np.bool_


def test_scalar_operands_do_not_upcast():
    x = minidl.tensor([1.0, 2.0])
    for y in (x * 2.0, 2.0 * x, x + np.float64(1.0), x / 3, 1 - x, x ** 2.0, x * np.ones(2)):
        assert y.dtype == np.float32, y
    d = minidl.tensor([1.0], dtype="float64")
    assert (d * 2.0).dtype == np.float64
    left = np.ones(2) * x  # a numpy array on the left still gives a Tensor
    assert isinstance(left, minidl.Tensor) and left.dtype == np.float32


def test_tensor_copies_its_input_and_from_numpy_shares():
    a = np.array([1.0, 2.0], np.float32)
    t, shared, lst = minidl.tensor(a), minidl.from_numpy(a), minidl.tensor(a.tolist())
    i = np.array([1, 2])
    ti = minidl.tensor(i)
    a[0], i[0] = 9.0, 9
    assert t.numpy()[0] == 1.0 and lst.numpy()[0] == 1.0 and ti.numpy()[0] == 1
    assert shared.numpy()[0] == 9.0
    again = minidl.tensor(t)
    again.data[1] = 5.0
    assert t.numpy()[1] == 2.0
    assert t.shape == (2,) and t.numel() == 2 and len(t) == 2 and t.ndim == 1


# ---- seeding --------------------------------------------------------------------------------
def test_manual_seed_reproduces_init_and_dropout():
    def draw(seed):
        minidl.manual_seed(seed)
        lin = nn.Linear(5, 3)
        mask = F.dropout(minidl.ones(4, 6), p=0.5).numpy()
        return lin.weight.numpy(), lin.bias.numpy(), mask

    a, b, c = draw(0), draw(0), draw(1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2])
    assert set(np.unique(a[2])) <= {0.0, 2.0}


def test_dropout_mask_statistics_and_module_eval():
    minidl.manual_seed(3)
    y = F.dropout(minidl.ones(200, 100), p=0.3).numpy()
    assert abs((y == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    drop = nn.Dropout(0.3)
    drop.eval()
    x = randn((3, 4))
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    assert F.dropout(x, p=1.0).numpy().sum() == 0


# ---- small API ------------------------------------------------------------------------------
def test_numpy_item_T_and_comparisons():
    x = minidl.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], requires_grad=True)
    n = x.numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float32 and n.shape == (2, 3)
    s = x.sum()
    assert isinstance(s.item(), float) and s.item() == 21.0
    assert isinstance(minidl.tensor([7]).item(), int)
    with pytest.raises(ValueError, match="one element"):
        x.item()
    assert x.T.shape == (3, 2)
    np.testing.assert_array_equal(x.T.numpy(), n.T)
    y = minidl.tensor([[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]])
    for op, ref in [(x > y, n > 3), (x >= 3.0, n >= 3), (x < y, n < 3), (x <= 3, n <= 3),
                    (x == y, n == 3), (x != 3.0, n != 3)]:
        assert op.dtype == np.bool_ and not op.requires_grad
        np.testing.assert_array_equal(op.numpy(), ref)
    # comparisons feed boolean-mask indexing, and the gradient flows to the selected entries
    x[x > 3.0].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), (n > 3).astype(np.float32))


def test_max_over_dim_returns_values_and_indices():
    x = minidl.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.numpy(), [5.0, 6.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 2])
    assert indices.dtype == np.int64
    assert x.max().item() == 6.0 and x.min().item() == 1.0
    np.testing.assert_array_equal(x.argmax(dim=0).numpy(), [1, 0, 1])


def test_max_ties_share_the_gradient_but_max_over_a_dim_picks_its_index():
    x = leaf([2.0, 2.0, 1.0])
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.5, 0.0])
    x.grad = None
    values, index = x.max(dim=0)
    values.backward()
    assert index.item() == 0
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 0.0, 0.0])  # as torch.max(x, dim)
