"""Divergences from PyTorch 2.13 found by the 2026-12-06 audit: one regression test each."""
import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

torch = pytest.importorskip("torch", reason="parity tests need torch")

NAN = float("nan")


def _np(t):
    return np.asarray(t.detach().numpy())


def test_median_propagates_nan_and_shares_tie_gradient():
    rows = [[1., NAN, 3., NAN], [NAN, 0., 2., 1.], [3., 2., 1., 1.]]
    for dim in (None, 1, 0):
        m = minidl.tensor(np.array(rows), dtype=minidl.float64, requires_grad=True)
        t = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
        rm = minidl.median(m) if dim is None else minidl.median(m, dim)
        rt = torch.median(t) if dim is None else torch.median(t, dim)
        vm, vt = (rm, rt) if dim is None else (rm.values, rt.values)
        np.testing.assert_array_equal(_np(vm), vt.detach().numpy())
        if dim is not None:
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
        vm.sum().backward()
        vt.sum().backward()
        np.testing.assert_allclose(_np(m.grad), t.grad.numpy())
    y = [1., 5., 2., 2., 2.]  # ties: torch.median() shares the gradient among them
    m, t = minidl.tensor(y, requires_grad=True), torch.tensor(y, requires_grad=True)
    minidl.median(m).backward()
    torch.median(t).backward()
    np.testing.assert_allclose(_np(m.grad), t.grad.numpy())
    assert np.isnan(minidl.median(minidl.zeros(0)).item())
    x = minidl.tensor(np.random.default_rng(0).standard_normal((3, 5)), dtype=minidl.float64,
                      requires_grad=True)
    assert gradcheck(lambda a: minidl.median(a, 1).values, [x])


def test_unique_keeps_each_nan():
    data = [1., NAN, 3., NAN, 1.]
    vm, im, cm = minidl.unique(minidl.tensor(data), return_inverse=True, return_counts=True)
    vt, it, ct = torch.unique(torch.tensor(data), return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(_np(vm), vt.numpy())
    np.testing.assert_array_equal(_np(im), it.numpy())
    np.testing.assert_array_equal(_np(cm), ct.numpy())


def test_max_min_of_0d_tensor_over_a_dim_give_values_and_indices():
    for name in ("max", "min"):
        r = getattr(minidl.tensor(2.5), name)(0)
        rt = getattr(torch.tensor(2.5), name)(0)
        assert r.values.item() == rt.values.item() and r.indices.item() == rt.indices.item()
        assert r.indices.dtype == np.int64 and r.values.shape == ()


def test_0d_input_keeps_its_shape_through_cpu_kernels():
    x = minidl.tensor(2.5, requires_grad=True)
    y = minidl.nn.functional.relu(x)
    y.backward()
    assert y.shape == () and x.grad.shape == ()


def test_integer_tensor_with_out_of_range_number_wraps():
    a = [0, 1, 255]
    m, t = minidl.tensor(a, dtype=minidl.uint8), torch.tensor(a, dtype=torch.uint8)
    cases = [lambda x: x - 1, lambda x: x * -1, lambda x: x == -1, lambda x: -1 - x,
             lambda x: x + 256, lambda x: x / -1, lambda x: x // -1]
    for f in cases:
        rm, rt = f(m), f(t)
        assert str(rm.dtype).split(".")[-1] == str(rt.dtype).split(".")[-1]
        np.testing.assert_array_equal(_np(rm), rt.numpy())
    np.testing.assert_allclose(_np(minidl.xlogy(m, -1)), torch.xlogy(t, -1).numpy())


def test_integer_division_by_zero_is_refused():
    a = minidl.tensor([3, 4])
    with pytest.raises(RuntimeError):
        torch.tensor([3, 4]) // 0
    for f in (lambda: a // 0, lambda: a % minidl.tensor([1, 0]), lambda: minidl.fmod(a, 0),
              lambda: minidl.div(a, 0, rounding_mode="trunc")):
        with pytest.raises(ZeroDivisionError):
            f()
        with pytest.raises(RuntimeError):
            f()


def test_float_floor_divide_with_infinities():
    x = [1., NAN, -3., 0., float("inf"), -float("inf"), -1.]
    for d in (2., -1., 2.5, float("inf")):
        np.testing.assert_array_equal(_np(minidl.tensor(x) // d), (torch.tensor(x) // d).numpy())


def test_sign_of_nan_is_zero():
    x = [NAN, -2., 0., 3.]
    np.testing.assert_array_equal(_np(minidl.sign(minidl.tensor(x))), torch.sign(torch.tensor(x)).numpy())


def test_integer_sums_are_int64():
    for dt in ("uint8", "int8", "int32", "bool"):
        a = minidl.from_numpy(np.ones((2, 2), dtype=dt))
        assert a.sum().dtype == np.int64 and a.sum(0).dtype == np.int64
