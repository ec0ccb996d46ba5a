"""PyTorch's semantics where NumPy's differ: in-place operators, type promotion, dims out of
range, reductions over no dims, list indexing, 16-bit sums, numpy interop. Each case was a
silent difference before (the audit of 2026-12-06); the expected values are PyTorch's."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn

try:
    import torch
except ImportError:  # the cases below state PyTorch's results; torch only cross-checks them
    torch = None


def t(values, **kw):
    return minidl.tensor(values, **kw)


# ---- in-place operators ------------------------------------------------------------------
def test_hand_written_sgd_step_updates_the_parameters_in_place():
    lin = nn.Linear(2, 1)
    w = lin.weight
    before = w.numpy().copy()
    lin(t([[1.0, 2.0]])).sum().backward()
    with minidl.no_grad():
        for p in lin.parameters():
            p -= 0.5 * p.grad
    assert lin.weight is w and lin.weight.is_leaf
    np.testing.assert_allclose(w.numpy(), before - 0.5 * np.array([[1.0, 2.0]]), rtol=1e-6)


def test_in_place_ops_write_through_shared_arrays():
    x = t([1.0, 2.0])
    d = x.detach()
    d += 5
    d *= 2
    d -= 1
    d /= 3
    np.testing.assert_allclose(x.numpy(), [11 / 3, 13 / 3], rtol=1e-6)
    y = t([1.0, 2.0])
    y.add_(1).mul_(2).sub_(1).div_(2)
    np.testing.assert_allclose(y.numpy(), [1.5, 2.5])
    y.copy_(t([7.0, 8.0]))
    np.testing.assert_allclose(y.numpy(), [7.0, 8.0])


def test_in_place_on_a_leaf_that_requires_grad_is_refused():
    w = t([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w *= 2
    with minidl.no_grad():
        w *= 2
    np.testing.assert_allclose(w.numpy(), [2.0, 4.0])
    assert w.is_leaf and w.requires_grad


def test_in_place_inside_the_graph_gives_pytorchs_gradient():
    x = t([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    y += x          # recorded: y = 3x
    y *= y          # y = 9x^2
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 18 * x.numpy())


def test_in_place_type_and_shape_errors_name_what_did_not_fit():
    i = t([1, 2])
    with pytest.raises(TypeError, match="int64 tensor cannot hold"):
        i += 2.5
    with pytest.raises(TypeError, match="cannot hold"):
        i /= 2
    i *= 3
    assert i.tolist() == [3, 6] and i.dtype == np.int64
    with pytest.raises(ValueError, match=r"does not broadcast to this tensor's shape \(2,\)"):
        f = t([1.0, 2.0])
        f += t([[1.0, 2.0], [3.0, 4.0]])


def test_backward_refuses_an_input_changed_in_place_after_it_was_saved():
    w = t([1.0, 2.0], requires_grad=True)
    x = t([3.0, 4.0])
    loss = (w * x).sum()
    x += 1  # Mul saved x for w's gradient
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        loss.backward()
    # an op that saves nothing from x is not affected (PyTorch: same)
    w2 = t([1.0, 2.0], requires_grad=True)
    x2 = t([3.0, 4.0])
    loss2 = (w2 + x2).sum()
    x2 += 1
    loss2.backward()
    np.testing.assert_allclose(w2.grad.numpy(), [1.0, 1.0])


def test_backward_refuses_a_saved_output_changed_in_place():
    x = t([0.5, 1.0], requires_grad=True)
    y = x.exp()  # saves its output
    with minidl.no_grad():
        y += 1
    with pytest.raises(RuntimeError, match="Exp's output"):
        y.sum().backward()


def test_clone_is_a_copy_in_the_graph():
    x = t([1.0, 2.0], requires_grad=True)
    c = x.clone()
    with minidl.no_grad():
        c += 1
    np.testing.assert_allclose(x.numpy(), [1.0, 2.0])
    (x.clone() * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


# ---- type promotion ----------------------------------------------------------------------
@pytest.mark.parametrize("make, dtype, values", [
    (lambda: t([True, False]) * 2, np.int64, [2, 0]),
    (lambda: t([True, False]) + 1, np.int64, [2, 1]),
    (lambda: t([1, 2]) + 2.5, np.float32, [3.5, 4.5]),
    (lambda: t([1, 2]) / 2, np.float32, [0.5, 1.0]),
    (lambda: t([1, 2]) / t([2, 4]), np.float32, [0.5, 0.5]),
    (lambda: t([1.0, 2.0]) * t([1, 2]), np.float32, [1.0, 4.0]),
    (lambda: t([1.0, 2.0]) + t(1.0, dtype=np.float64), np.float32, [2.0, 3.0]),
    (lambda: t([1, 2]) * t(2.5, dtype=np.float64), np.float64, [2.5, 5.0]),
    (lambda: t([1, 4]) ** 0.5, np.float32, [1.0, 2.0]),
    (lambda: 2.0 ** t([1, 2]), np.float32, [2.0, 4.0]),
    (lambda: t([1, 2]).exp(), np.float32, list(np.exp([1.0, 2.0]))),
    (lambda: t([1, 2]).sqrt(), np.float32, list(np.sqrt([1.0, 2.0]))),
    (lambda: t([1.0, 2.0], dtype=np.float16) * t([1, 2]), np.float16, [1.0, 4.0]),
    (lambda: minidl.cat([t([1, 2]), t([0.5])]), np.float32, [1.0, 2.0, 0.5]),
])
def test_results_take_pytorchs_dtype(make, dtype, values):
    out = make()
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out.numpy().astype(np.float64), values, rtol=1e-6)


def test_promotion_matches_torch_on_a_grid_of_dtypes():
    if torch is None:
        pytest.skip("torch not installed: the grid is checked against torch.result_type")
    cases = {np.bool_: torch.bool, np.int32: torch.int32, np.int64: torch.int64,
             np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}
    for da, ta in cases.items():
        for db, tb in cases.items():
            for shape_a, shape_b in [((2,), (2,)), ((2,), ()), ((), (2,)), ((), ())]:
                a, b = np.ones(shape_a, da), np.ones(shape_b, db)
                got = (minidl.Tensor(a) * minidl.Tensor(b)).dtype
                want = (torch.from_numpy(np.asarray(a)) * torch.from_numpy(np.asarray(b))).dtype
                assert str(got) == str(want).replace("torch.", ""), (da, db, shape_a, shape_b)
            for scalar in (True, 2, 2.5):
                got = (minidl.Tensor(np.ones(2, da)) * scalar).dtype
                want = (torch.ones(2, dtype=ta) * scalar).dtype
                assert str(got) == str(want).replace("torch.", ""), (da, scalar)


def test_mixed_dtype_gradients_come_back_in_each_inputs_dtype():
    a = t([1.0, 2.0], requires_grad=True)
    b = t([3.0, 4.0], dtype=np.float64, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])


# ---- dims --------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda x: x.squeeze(5), lambda x: x.unsqueeze(4), lambda x: x.unsqueeze(-5),
    lambda x: x.permute(1, 2, 5), lambda x: x.flatten(3), lambda x: x.transpose(0, 3),
    lambda x: x.argmax(3), lambda x: x.sum(3),
])
def test_dims_out_of_range_raise_index_error(call):
    x = t(np.zeros((2, 3, 1)))
    with pytest.raises(IndexError):
        call(x)


def test_dims_of_a_zero_d_tensor_and_empty_dim_lists():
    s = t(3.0)
    assert s.squeeze(0).shape == () and s.sum(0).item() == 3.0 and s.sum(-1).item() == 3.0
    x = t(np.arange(6.0).reshape(2, 3))
    assert x.sum(dim=[]).item() == 15.0 and x.mean(dim=()).item() == 2.5
    with pytest.raises(ValueError):
        x.flatten(1, 0)
    assert x.argmax(keepdim=True).shape == (1, 1)
    assert x.squeeze((0, 1)).shape == (2, 3)


def test_a_list_of_index_lists_indexes_like_a_tuple():
    x = t(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(x[[[0, 1], [1, 2]]].numpy(), [1.0, 6.0])
    assert x[[0, 2]].shape == (2, 4)  # a flat list stays one index


# ---- reductions and ops at the edges -----------------------------------------------------
def test_16_bit_sums_accumulate_in_float32():
    bf16 = minidl.bfloat16
    ones = minidl.Tensor(np.ones((3, 4096), np.float32)).to(bf16)
    assert ones.sum(1).dtype == np.dtype(bf16)
    np.testing.assert_allclose(ones.sum(1).float().numpy(), 4096)
    np.testing.assert_allclose(ones.mean(1).float().numpy(), 1.0)
    sm = ones.softmax(1).float().numpy().sum(1)
    np.testing.assert_allclose(sm, 1.0, rtol=1e-2)
    half = minidl.Tensor(np.full((2, 4096), 0.1, np.float16))
    np.testing.assert_allclose(half.sum().float().item(), 819.2, rtol=2e-3)


def test_bfloat16_matmul_stays_bfloat16():
    bf16 = minidl.bfloat16
    a = minidl.Tensor(np.ones((2, 3), np.float32)).to(bf16)
    assert (a @ a.T).dtype == np.dtype(bf16)


def test_pow_gradients_at_the_edges_match_pytorch():
    a = t([0.0, -2.0, 2.0], requires_grad=True)
    b = t([0.0, 2.0, 3.0], requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.0, -4.0, 12.0])
    gb = b.grad.numpy()
    assert gb[0] == 0.0 and np.isnan(gb[1]) and np.isclose(gb[2], 8 * np.log(2))


def test_max_with_a_nan_sends_the_gradient_to_the_nan():
    x = t([1.0, float("nan"), 3.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.0])


def test_max_of_two_tensors_is_elementwise_and_ties_split():
    a = t([1.0, 5.0, 2.0], requires_grad=True)
    b = t([3.0, 4.0, 2.0], requires_grad=True)
    m = a.max(b)
    np.testing.assert_array_equal(m.numpy(), [3.0, 5.0, 2.0])
    m.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(a.min(b).numpy(), [1.0, 4.0, 2.0])


# ---- numpy interop -----------------------------------------------------------------------
def test_numpy_sees_a_tensors_values():
    x = t([[1.0, 2.0], [3.0, 4.0]])
    a = np.asarray(x)
    assert a.dtype == np.float32 and a.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(x, dtype=np.float64), [[1, 2], [3, 4]])
    assert np.array([t(1.0), t(2.0)]).dtype == np.float32
    assert minidl.tensor([t(1.0), t(2.0)]).tolist() == [1.0, 2.0]
    y = np.ones(2, np.float32) * x[0]  # still the tensor's operator
    assert isinstance(y, minidl.Tensor)
