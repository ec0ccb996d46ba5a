"""In-place comparisons (eq_, ne_, lt_, le_, gt_, ge_ and their aliases) on a float tensor in
the graph, as PyTorch: the tensor keeps requires_grad with a zero gradient flowing back; on a
leaf that requires grad they are refused."""
import numpy as np
import pytest

import minidl

torch = pytest.importorskip("torch")

OPS = ["eq_", "ne_", "lt_", "le_", "gt_", "ge_", "greater_", "greater_equal_", "less_",
       "less_equal_", "not_equal_"]
X = [1.0, 0.0, -2.0, 3.5]


def _run(lib, op, other_kind, dtype):
    x = lib.tensor(X, dtype=getattr(lib, dtype), requires_grad=True)
    w = lib.tensor([0.5, 0.0, 1.0, 3.5], dtype=getattr(lib, dtype), requires_grad=True)
    y = x * 2
    other = {"number": 0.0, "tensor": lib.tensor([2.0, 0.0, -1.0, 7.0], dtype=getattr(lib, dtype)),
             "grad tensor": w * 2}[other_kind]
    out = getattr(y, op)(other)
    assert out is y
    flags = (y.requires_grad, y.grad_fn is not None)
    (y * lib.tensor([1.0, 2.0, 3.0, 4.0], dtype=getattr(lib, dtype))).sum().backward()
    return y.detach().numpy(), flags, x.grad.numpy(), w.grad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("other_kind", ["number", "tensor", "grad tensor"])
@pytest.mark.parametrize("op", OPS)
def test_inplace_comparison_in_graph_as_torch(op, other_kind, dtype):
    values, flags, gx, gw = _run(minidl, op, other_kind, dtype)
    t_values, t_flags, t_gx, t_gw = _run(torch, op, other_kind, dtype)
    np.testing.assert_array_equal(values, t_values)
    assert values.dtype == np.dtype(dtype)
    assert flags == t_flags == (True, True)
    np.testing.assert_array_equal(gx, t_gx)
    assert (gw is None) == (t_gw is None)
    if gw is not None:
        np.testing.assert_array_equal(gw.numpy(), t_gw.numpy())


def test_other_requiring_grad_makes_the_result_require_grad():
    w = minidl.tensor([1.0, 0.0], requires_grad=True)
    y = minidl.tensor([1.0, 2.0])
    y.eq_(w * 1)
    assert y.requires_grad and y.grad_fn is not None
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [0.0, 0.0])


@pytest.mark.parametrize("op", OPS)
def test_inplace_comparison_on_a_leaf_requiring_grad_is_refused(op):
    with pytest.raises(RuntimeError, match="leaf"):
        getattr(torch.tensor(X, requires_grad=True), op)(0)
    with pytest.raises(RuntimeError, match="leaf"):
        getattr(minidl.tensor(X, requires_grad=True), op)(0)


def test_without_grad_unchanged():
    x = minidl.tensor(X, requires_grad=True)
    with minidl.no_grad():
        x.gt_(0)
    np.testing.assert_array_equal(x.numpy(), [1, 0, 0, 1])
    assert x.requires_grad
    y = minidl.tensor([3, 1, 2])
    y.ge_(2)
    np.testing.assert_array_equal(y.numpy(), [1, 0, 1])
    assert y.dtype == np.int64


@pytest.mark.parametrize("op", ["logical_and_", "logical_or_", "logical_xor_", "logical_not_"])
def test_inplace_logical_in_graph_gives_zero_gradient(op):
    # minidl's choice: PyTorch writes the values without recording them (y keeps MulBackward
    # and x.grad is 2); minidl records them as the comparisons are, with a zero gradient
    x = minidl.tensor(X, requires_grad=True)
    y = x * 2
    args = () if op == "logical_not_" else (minidl.tensor([1.0, 0.0, 1.0, 0.0]),)
    getattr(y, op)(*args)
    expected = getattr(torch.tensor(X) * 2, op)(*[torch.tensor(a.numpy()) for a in args])
    np.testing.assert_array_equal(y.detach().numpy(), expected.numpy())
    assert y.requires_grad and y.grad_fn is not None
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(4))


def test_gradcheck_float64():
    from minidl.testing import gradcheck

    def fn(x, w):
        y = x * 3 + w
        y.gt_(w * 1.5)  # values away from ties: the step function is flat there
        return y * x

    x = minidl.tensor([1.0, -2.0, 3.5], dtype=minidl.float64, requires_grad=True)
    w = minidl.tensor([0.5, 0.25, -1.0], dtype=minidl.float64, requires_grad=True)
    gradcheck(fn, [x, w])
