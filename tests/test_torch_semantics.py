"""PyTorch's semantics where NumPy's differ: in-place operators, type promotion, dims out of
range, reductions over no dims, list indexing, 16-bit sums, numpy interop. Each case was a
silent difference before (the audit of 2026-12-06); the expected values are PyTorch's."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.testing import gradcheck
from _ops_check import agree_both
from helpers import raises_like_torch, same

try:
    import torch
except ImportError:  # the cases below state PyTorch's results; torch only cross-checks them
    torch = None

# tests that compare with torch directly (rather than stating its results) need it installed
needs_torch = pytest.mark.skipif(torch is None, reason="compares with torch; torch is not installed")


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


# ---- nn, optim, data, amp ----------------------------------------------------------------
def test_softmax_without_dim_uses_pytorchs_implicit_dim_and_warns():
    import minidl.nn.functional as F
    x3 = t(np.arange(24.0).reshape(2, 3, 4))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = F.softmax(x3)
    np.testing.assert_allclose(y.numpy().sum(0), 1.0, rtol=1e-6)  # dim 0 for 3-D, as PyTorch
    with pytest.warns(UserWarning):
        assert np.allclose(np.exp(F.log_softmax(x3).numpy()).sum(0), 1.0)
    x4 = t(np.arange(24.0).reshape(1, 2, 3, 4))
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(nn.Softmax()(x4).numpy().sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(F.softmax(x4, dim=-1).numpy().sum(-1), 1.0, rtol=1e-6)


def test_16_bit_losses_and_pools_keep_their_dtype_and_accuracy():
    import minidl.nn.functional as F
    bf16 = minidl.bfloat16
    logits = t(np.linspace(-3, 3, 4 * 50).reshape(4, 50).astype(np.float32))
    target = t([0, 10, 20, 49])
    want = F.cross_entropy(logits, target).item()
    loss = F.cross_entropy(logits.to(bf16), target)
    assert loss.dtype == np.dtype(bf16)
    assert abs(float(loss.float().item()) - want) < 0.05
    nll = F.nll_loss(F.log_softmax(logits.to(bf16), dim=1), target)
    assert abs(float(nll.float().item()) - want) < 0.05
    x = minidl.Tensor(np.full((1, 1, 32, 32), 1.01, np.float32)).to(bf16)
    pooled = F.avg_pool2d(x, 32)
    assert pooled.dtype == np.dtype(bf16) and abs(pooled.float().item() - 1.01) < 0.01


def test_pool_and_conv_sizes_must_be_ints():
    import minidl.nn.functional as F
    x = t(np.zeros((1, 1, 4, 4)))
    with pytest.raises(TypeError, match="stride"):
        F.max_pool2d(x, 2, stride=1.5)
    with pytest.raises(ValueError, match="padding"):
        F.max_pool2d(x, 3, padding=-1)
    with pytest.raises(ValueError, match="positive"):
        F.avg_pool2d(x, 2, stride=0)


def test_parameters_and_buffers_refuse_plain_values():
    lin = nn.Linear(2, 1)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        lin.weight = minidl.tensor([[1.0, 2.0]])
    assert "weight" in lin.state_dict()


def test_shared_submodules_come_once_from_named_modules():
    shared = nn.Linear(2, 2)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(net.modules())) == 3  # PyTorch: Sequential, Linear, ReLU
    assert len(list(net.parameters())) == 2
    assert set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_load_state_dict_writes_into_the_existing_arrays():
    lin = nn.Linear(2, 1)
    held = lin.state_dict()["weight"]
    lin.load_state_dict({"weight": np.array([[5.0, 6.0]], np.float32),
                         "bias": np.zeros(1, np.float32)})
    np.testing.assert_array_equal(held.numpy(), [[5.0, 6.0]])


def test_zero_grad_set_to_none_false_zeroes_in_place():
    lin = nn.Linear(2, 1)
    opt = minidl.optim.SGD(lin.parameters(), lr=0.1)
    lin(t([[1.0, 2.0]])).sum().backward()
    g = lin.weight.grad
    opt.zero_grad(set_to_none=False)
    assert lin.weight.grad is g and not g.numpy().any()
    lin(t([[1.0, 2.0]])).sum().backward()
    lin.zero_grad(set_to_none=False)
    assert lin.weight.grad is g and not g.numpy().any()
    lin.zero_grad()
    assert lin.weight.grad is None


def test_batch_norm_momentum_none_is_a_cumulative_average():
    bn = nn.BatchNorm1d(3, momentum=None)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((8, 3)).astype(np.float32) + i for i in range(3)]
    for b in batches:
        bn(t(b))
    want = np.mean([b.mean(0) for b in batches], axis=0)  # 1/k weights: the plain average
    np.testing.assert_allclose(bn.running_mean.numpy(), want, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked.item()) == 3
    if torch is not None:
        tbn = torch.nn.BatchNorm1d(3, momentum=None)
        for b in batches:
            tbn(torch.from_numpy(b))
        np.testing.assert_allclose(bn.running_var.numpy(), tbn.running_var.numpy(), rtol=1e-5)


def test_module_to_an_unknown_device_names_it():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        nn.Linear(2, 1).to("tpu")
    assert nn.Linear(2, 1).to("float64").weight.dtype == np.float64


def test_data_loader_takes_pytorchs_positional_order_and_collates_dicts():
    from minidl.data import DataLoader, TensorDataset

    ds = TensorDataset(np.arange(10, dtype=np.float32), np.arange(10))
    loader = DataLoader(ds, 4, False, [9, 8, 7, 6, 5])  # the fourth is the sampler
    batches = list(loader)
    assert [b[1].tolist() for b in batches] == [[9, 8, 7, 6], [5]]
    with pytest.raises(TypeError):
        DataLoader(ds, 4, False, None, True)  # drop_last is keyword-only

    class Dicts:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"x": np.full(2, i, np.float32), "y": i, "name": f"n{i}"}

    (batch,) = list(DataLoader(Dicts(), 3))
    assert batch["x"].shape == (3, 2) and batch["y"].tolist() == [0, 1, 2]
    assert batch["name"] == ["n0", "n1", "n2"]


def test_autocast_leaves_float64_alone():
    a = minidl.Tensor(np.ones((2, 2)))
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        assert (a @ a).dtype == np.float64
        assert (a.float() @ a.float()).dtype == np.dtype(minidl.bfloat16)


def test_grad_scaler_scales_a_float16_scalar_loss_in_float32():
    import warnings

    with warnings.catch_warnings():  # its bfloat16 note, if an earlier test used bf16 autocast
        warnings.simplefilter("ignore", UserWarning)
        scaler = minidl.amp.GradScaler("cpu")
        loss = minidl.Tensor(np.array(3.0, np.float16))
        scaled = scaler.scale(loss)
        assert scaled.dtype == np.float32 and scaled.item() == 3.0 * 65536
        batch = minidl.Tensor(np.ones(2, np.float16))
        # a 0-d scale does not widen a batch of losses (PyTorch's promotion)
        assert minidl.amp.GradScaler("cpu", init_scale=4.0).scale(batch).dtype == np.float16


# ---- cross_entropy / nll_loss options ------------------------------------------------------
_CE_CASES = [
    dict(),
    dict(weight=True),
    dict(ignore_index=2),
    dict(label_smoothing=0.1),
    dict(weight=True, ignore_index=2, label_smoothing=0.2),
    dict(default_ignored=True),
    dict(weight=True, default_ignored=True, label_smoothing=0.05),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", _CE_CASES, ids=lambda c: "-".join(c) or "plain")
def test_cross_entropy_options_match_torch(case, reduction):
    if torch is None:
        pytest.skip("torch not installed: these options are checked against torch's losses")
    import minidl.nn.functional as F

    rng = np.random.default_rng(3)
    n, c = 7, 5
    x = rng.standard_normal((n, c))
    y = np.array([0, 2, 4, 2, 1, 3, 2])
    if case.get("default_ignored"):
        y[[1, 4]] = -100
    w = rng.uniform(0.5, 2.0, c) if case.get("weight") else None
    kw = {k: v for k, v in case.items() if k in ("ignore_index", "label_smoothing")}
    xm = minidl.tensor(x, dtype=np.float64, requires_grad=True)
    out = F.cross_entropy(xm, minidl.tensor(y), None if w is None else minidl.tensor(w, dtype=np.float64),
                          reduction=reduction, **kw)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(xt, torch.tensor(y), None if w is None else torch.tensor(w),
                                            reduction=reduction, **kw)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-10)
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    lp = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True))
    if not kw.get("label_smoothing"):
        got = F.nll_loss(minidl.tensor(lp, dtype=np.float64), minidl.tensor(y),
                         None if w is None else minidl.tensor(w, dtype=np.float64),
                         ignore_index=kw.get("ignore_index", -100), reduction=reduction)
        want = torch.nn.functional.nll_loss(torch.tensor(lp), torch.tensor(y),
                                            None if w is None else torch.tensor(w),
                                            ignore_index=kw.get("ignore_index", -100),
                                            reduction=reduction)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)


def test_cross_entropy_option_errors_name_what_did_not_fit():
    import minidl.nn.functional as F

    x, y = t(np.zeros((2, 3))), t([0, 1])
    with pytest.raises(ValueError, match="target class 5"):
        F.cross_entropy(x, t([0, 5]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        F.cross_entropy(x, y, weight=t([1.0, 2.0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, y, reduction=t([1.0]))
    assert np.isnan(F.cross_entropy(x, t([-100, -100])).item())  # all ignored: 0/0, as PyTorch


def test_cross_entropy_loss_module_takes_the_options_and_moves_its_weight():
    loss = nn.CrossEntropyLoss(weight=t([1.0, 2.0, 3.0]), label_smoothing=0.1, ignore_index=0)
    assert "weight" in loss.state_dict()
    x = t(np.zeros((3, 3)), requires_grad=True)
    value = loss(x, t([0, 1, 2]))
    value.backward()
    # uniform logits, rows 1 and 2 counted (weights 2 and 3): (1 - 0.1) * log 3 from the picked
    # class, and 0.1 / 3 * (6 log 3 * 2 rows) / 5 from the smoothing, PyTorch's formula
    np.testing.assert_allclose(value.item(), 0.98 * np.log(3), rtol=1e-6)
    nll = nn.NLLLoss(ignore_index=1)(t(np.log(np.full((2, 3), 1 / 3))), t([1, 2]))
    np.testing.assert_allclose(nll.item(), np.log(3), rtol=1e-6)


def test_mean_of_integers_is_refused_as_in_pytorch():
    with pytest.raises(TypeError, match=r"mean: needs a floating-point tensor.*\.float\(\)"):
        t([1, 2, 3]).mean()
    assert (t([1, 2]) == t([1, 3])).float().mean().item() == 0.5


def test_maximum_with_a_nan_gives_both_sides_the_gradient_as_pytorch():
    a = t([float("nan"), 1.0], requires_grad=True)
    b = t([0.0, float("nan")], requires_grad=True)
    a.max(b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_data_loader_takes_collate_fn_and_pytorchs_worker_options():
    from minidl.data import DataLoader, TensorDataset

    ds = TensorDataset(np.arange(6, dtype=np.float32), np.arange(6))
    loader = DataLoader(ds, batch_size=4, collate_fn=lambda samples: [int(y) for _, y in samples],
                        num_workers=2, pin_memory=True, persistent_workers=True)
    assert list(loader) == [[0, 1, 2, 3], [4, 5]]
    plain = DataLoader(ds, batch_size=4, num_workers=4)  # same batches as num_workers=0
    assert [b[1].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5]]
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=-1)
    with pytest.raises(TypeError, match="collate_fn"):
        DataLoader(ds, collate_fn=3)


def test_sum_and_mean_take_a_dtype_and_softmax_checks_its_dim():
    assert t([1, 2, 4]).mean(dtype=minidl.float32).item() == pytest.approx(7 / 3)
    assert t([1.0, 2.0]).sum(dtype=minidl.float64).dtype == np.float64
    with pytest.raises(IndexError):
        t([[1.0, 2.0]]).softmax(2)
    np.testing.assert_allclose(t([[1.0, 1.0]]).softmax(-1).numpy(), [[0.5, 0.5]])


def test_pytorchs_dtype_names():
    assert minidl.long == minidl.int64 == np.int64 and minidl.bool == np.bool_
    assert minidl.float == np.float32 and minidl.double == np.float64 and minidl.half == np.float16
    assert minidl.zeros(2, dtype=minidl.int64).dtype == np.int64
    assert minidl.tensor([1, 2]).to(minidl.float).dtype == np.float32


# ---- in-place changes through views, optimizer steps and the graph (second audit) ----------
def test_in_place_changes_through_views_are_caught_by_backward():
    import minidl.nn.functional as F

    x = t([0.5, 1.0, 2.0], requires_grad=True)
    y = x.exp()
    y.detach().zero_()  # detach() shares the array and its version count, as in PyTorch
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()
    xs = t(np.ones((3, 4)))
    w = t(np.ones((2, 4)), requires_grad=True)
    out = F.linear(xs[0:2], w)
    xs[0:2].mul_(0)  # through another view of the same rows
    with pytest.raises(RuntimeError, match="in-place"):
        out.sum().backward()
    c = t([1.0, 2.0, 3.0])
    z = (t([1.0, 1.0], requires_grad=True) * c[0:2]).sum()
    c.zero_()
    with pytest.raises(RuntimeError, match="in-place"):
        z.backward()


def test_backward_after_an_optimizer_step_or_a_load_is_refused():
    lin = nn.Linear(2, 1)
    opt = minidl.optim.SGD(lin.parameters(), lr=0.1)
    x = t([[1.0, 2.0]], requires_grad=True)
    first = lin(x).sum()
    lin(x).sum().backward()
    opt.step()  # the weights first saved are gone: PyTorch refuses the old graph too
    with pytest.raises(RuntimeError, match="in-place"):
        first.backward()
    second = lin(x).sum()
    lin.load_state_dict({k: v.numpy() * 0 for k, v in lin.state_dict().items()})
    with pytest.raises(RuntimeError, match="in-place"):
        second.backward()
    lin(x).sum().backward()  # a graph recorded after the step is fine


def test_in_place_methods_inside_the_graph_change_the_tensor_itself():
    x = t([1.0, 2.0], requires_grad=True)
    h = x * 2
    h.mul_(5)  # no assignment: h itself changes, as in PyTorch
    np.testing.assert_array_equal(h.numpy(), [10.0, 20.0])
    h.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [10.0, 10.0])
    x.grad = None
    acc = minidl.zeros(2)
    acc.add_(x * 3)
    assert acc.requires_grad
    acc.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    x.grad = None
    z = x * 1
    z.zero_()
    z.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])


def test_in_place_in_the_graph_that_would_reroute_a_gradient_is_refused():
    x = t([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor"):
        x.zero_()
    h = x * 2
    _ = h * 3  # h is already an input of another op
    with pytest.raises(RuntimeError, match="already took as an input"):
        h.add_(1)
    g = x * 2
    g[0:1].mul_(3)  # a view of a tensor of the graph: recorded, as in PyTorch
    g.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 2.0])
    with pytest.raises(RuntimeError, match="view of a leaf"):
        x[0:1] += 1


def test_second_audit_small_divergences():
    import minidl.nn.functional as F
    from minidl.nn import init

    x = t(np.zeros((2, 3)), requires_grad=True)
    loss = F.cross_entropy(x, t([-100, -100]))  # every row ignored
    loss.backward()
    assert np.isnan(loss.item()) and not x.grad.numpy().any()  # NaN loss, zero gradient
    assert (t([0.1]) == t(0.1, dtype=np.float64)).tolist() == [True]  # compared in float32
    assert (t([1]) == 16777217.0).tolist() == (torch.tensor([1]) == 16777217.0).tolist() \
        if torch is not None else True
    assert (t([2.0]) ** np.float64(1.5)).dtype == np.float32
    assert minidl.arange(-1.5, 2, 1, dtype=minidl.int64).tolist() == [-1, 0, 1]
    with pytest.raises(ValueError, match="step"):
        minidl.arange(0.0, 1.0, 0.3, dtype=minidl.int64)
    w = nn.Linear(3, 2).weight
    held = w.detach()
    init.uniform_(w, 5.0, 6.0)  # written in place: a tensor sharing the array sees it
    assert held.numpy().min() >= 5.0
    with pytest.raises(TypeError, match="Parameter or None"):
        nn.Linear(2, 2).register_parameter("extra", t([1.0]))
    assert (t([1.0]) == None) is False and (t([1.0]) != None) is True  # noqa: E711


def test_inplace_activations_change_their_input_as_in_pytorch():
    import minidl.nn.functional as F

    x = t([-1.0, 2.0])
    y = F.relu(x, inplace=True)
    assert y is x and x.tolist() == [0.0, 2.0]
    z = t([-2.0, 1.0])
    z.relu_()
    assert z.tolist() == [0.0, 1.0]
    for make in (lambda: nn.ReLU(inplace=True), lambda: nn.LeakyReLU(0.1, inplace=True),
                 lambda: nn.ELU(inplace=True), lambda: nn.SiLU(inplace=True)):
        w = t([[1.0, -2.0], [0.5, 1.5]], dtype=np.float64, requires_grad=True)
        a = t([[0.3, -0.7]], dtype=np.float64)
        h = a @ w
        out = make()(h)
        assert out is h  # the tensor itself, recorded in the graph
        (out * out).sum().backward()
        if torch is not None:
            tw = torch.tensor(w.numpy(), requires_grad=True)
            th = torch.tensor(a.numpy()) @ tw
            tout = {"ReLU": torch.nn.ReLU(inplace=True), "LeakyReLU": torch.nn.LeakyReLU(0.1, True),
                    "ELU": torch.nn.ELU(inplace=True), "SiLU": torch.nn.SiLU(inplace=True)}[
                type(make()).__name__](th)
            (tout * tout).sum().backward()
            np.testing.assert_allclose(h.numpy(), th.detach().numpy(), rtol=1e-12)
            np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)
    leaf = t([1.0, -1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor"):
        F.relu(leaf, inplace=True)


@pytest.mark.skipif(torch is None, reason="torch is not installed: the expected text is torch's own repr")
def test_repr_reads_as_torch_prints():
    cases = [np.array([[0.7443, 0.2528], [-1.366, 1.8075]], np.float32), np.array([1.0, 2.0], np.float32),
             np.array(3.5, np.float32), np.array([1, 2], np.int64), np.array([True, False]),
             np.array([0.5, 1.0], np.float64)]
    for a in cases:
        want = repr(torch.from_numpy(a)).replace("torch.", "minidl.")
        assert repr(minidl.from_numpy(a)) == want, a
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x * 2).endswith("grad_fn=<MulBackward>)")


# ---- remainder, floor division, bitwise operators, protocol methods ------------------------
def test_remainder_and_floor_division_follow_the_divisor_sign():
    a = t([5.5, -5.5, 5.5, -5.5, 3.0], dtype=np.float64)
    b = t([2.0, 2.0, -2.0, -2.0, 1.5], dtype=np.float64)
    np.testing.assert_allclose((a % b).numpy(), [1.5, 0.5, -0.5, -1.5, 0.0])
    np.testing.assert_allclose((a // b).numpy(), [2.0, -3.0, -3.0, 2.0, 2.0])
    ints = t([7, -7, 7, -7])
    assert (ints % 3).tolist() == [1, 2, 1, 2] and (ints // -2).tolist() == [-4, 3, -4, 3]
    assert (ints % 3).dtype == np.int64 and (7 % t([3, -3])).tolist() == [1, -2]
    assert (t([7, 8]) // 2.0).dtype == np.float32 and (10 // t([3])).tolist() == [3]


def test_remainder_gradient_matches_torch():
    from minidl.testing import gradcheck
    rng = np.random.default_rng(0)
    a = minidl.tensor(rng.uniform(-5, 5, (3, 4)), dtype=np.float64, requires_grad=True)
    b = minidl.tensor(rng.uniform(0.7, 2, (4,)) * rng.choice([-1, 1], 4), dtype=np.float64,
                      requires_grad=True)
    assert gradcheck(lambda x, y: x % y, (a, b))
    a.grad = b.grad = None
    (a % b * t(np.arange(12.0).reshape(3, 4), dtype=np.float64)).sum().backward()
    if torch is not None:
        ta = torch.tensor(a.numpy(), requires_grad=True)
        tb = torch.tensor(b.numpy(), requires_grad=True)
        (ta % tb * torch.arange(12.0, dtype=torch.float64).reshape(3, 4)).sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


def test_bitwise_operators_on_bool_and_integer_tensors():
    m, n = t([True, True, False]), t([True, False, False])
    assert (m & n).tolist() == [True, False, False] and (m | n).tolist() == [True, True, False]
    assert (m ^ n).tolist() == [False, True, False] and (~m).tolist() == [False, False, True]
    assert (m & n).dtype == np.bool_
    assert (t([12, 10]) & 6).tolist() == [4, 2] and (~t([0, 5])).tolist() == [-1, -6]
    assert (t([1, 2]) | t([True, False])).tolist() == [1, 2]
    for bad in (lambda: t([1.0]) & t([1.0]), lambda: ~t([1.5])):
        with pytest.raises(TypeError, match="bool or integer"):
            bad()


def test_contains_index_and_format():
    x = t([[1.0, 2.0], [3.0, 4.0]])
    assert 3.0 in x and 5 not in x and t(2.0) in x
    with pytest.raises(RuntimeError, match="only supports Tensor or scalar"):
        "a" in x
    assert list(range(10))[t(3)] == 3 and list(range(t([4]))) == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="index"):
        [1, 2][t(1.0)]
    loss = t(0.123456)
    assert f"{loss:.3f}" == "0.123" and f"{t(7):>3d}" == "  7"
    assert f"{x}" == repr(x)


def test_deepcopy_copies_leaves_and_refuses_graph_tensors():
    import copy
    w = t([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    c = copy.deepcopy(w)
    assert c is not w and c.requires_grad and c.is_leaf
    np.testing.assert_array_equal(c.grad.numpy(), [2.0, 4.0])
    with minidl.no_grad():
        c += 1
    assert w.tolist() == [1.0, 2.0] and c._version == 1 and w._version == 0
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(w * 2)
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    twin = copy.deepcopy(net)
    assert isinstance(twin[0].weight, nn.Parameter)
    with minidl.no_grad():
        twin[0].weight.fill_(0.0)
    assert net[0].weight.numpy().any()
    x = t([[0.5, -1.0]])
    assert twin(x).shape == net(x).shape


# ---- NaN, 0-d tensors and integer edges (an audit against torch 2.13) ----------------------------
NAN = float("nan")


def _np(t):
    return np.asarray(t.detach().numpy())


@needs_torch
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


@needs_torch
def test_unique_keeps_each_nan():
    data = [1., NAN, 3., NAN, 1.]
    vm, im, cm = minidl.unique(minidl.tensor(data), return_inverse=True, return_counts=True)
    vt, it, ct = torch.unique(torch.tensor(data), return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(_np(vm), vt.numpy())
    np.testing.assert_array_equal(_np(im), it.numpy())
    np.testing.assert_array_equal(_np(cm), ct.numpy())


@needs_torch
def test_max_min_of_0d_tensor_over_a_dim_give_values_and_indices():
    for name in ("max", "min"):
        r = getattr(minidl.tensor(2.5), name)(0)
        rt = getattr(torch.tensor(2.5), name)(0)
        assert r.values.item() == rt.values.item() and r.indices.item() == rt.indices.item()
        assert r.indices.dtype == np.int64 and r.values.shape == ()


@needs_torch
def test_0d_input_keeps_its_shape_through_cpu_kernels():
    x = minidl.tensor(2.5, requires_grad=True)
    y = minidl.nn.functional.relu(x)
    y.backward()
    assert y.shape == () and x.grad.shape == ()


@needs_torch
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


@needs_torch
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


@needs_torch
def test_float_floor_divide_with_infinities():
    x = [1., NAN, -3., 0., float("inf"), -float("inf"), -1.]
    for d in (2., -1., 2.5, float("inf")):
        np.testing.assert_array_equal(_np(minidl.tensor(x) // d), (torch.tensor(x) // d).numpy())


@needs_torch
def test_sign_of_nan_is_zero():
    x = [NAN, -2., 0., 3.]
    np.testing.assert_array_equal(_np(minidl.sign(minidl.tensor(x))), torch.sign(torch.tensor(x)).numpy())


@needs_torch
def test_integer_sums_are_int64():
    for dt in ("uint8", "int8", "int32", "bool"):
        a = minidl.from_numpy(np.ones((2, 2), dtype=dt))
        assert a.sum().dtype == np.int64 and a.sum(0).dtype == np.int64


# ---- ties, NaN, integer powers, bool operands, result types (a second audit against torch 2.13) ----
def _tie_patterns(seed, count):
    """Small tensors full of equal values (some with NaN), and a dim of each."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = tuple(int(s) for s in rng.integers(1, 7, size=int(rng.integers(1, 4))))
        a = rng.integers(0, 3, shape).astype(np.float64)
        if i % 3 == 0:
            a[rng.random(shape) < 0.2] = NAN
        yield a, int(rng.integers(-len(shape), len(shape)))


@needs_torch
def test_topk_ties_give_torchs_indices_and_gradients():
    for i, (a, d) in enumerate(_tie_patterns(0, 120)):
        n = a.shape[d]
        for largest in (True, False):
            k = (i * 7) % (n + 1)
            m = minidl.tensor(a, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.topk(m, k, d, largest), torch.topk(t, k, d, largest)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(_np(rm.values), rt.values.detach().numpy())
            w = np.arange(rt.values.numel(), dtype=np.float64).reshape(rt.values.shape)
            (rm.values * minidl.tensor(w)).sum().backward()
            (rt.values * torch.tensor(w)).sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    # long rows take PyTorch's partial_sort path (k * 64 <= n); integers too
    a = np.random.default_rng(1).integers(0, 4, (2, 700))
    for k in (1, 10, 11, 50, 700):
        for largest in (True, False):
            np.testing.assert_array_equal(
                _np(minidl.tensor(a).topk(k, largest=largest).indices),
                torch.tensor(a).topk(k, largest=largest).indices.numpy())
    # sorted=False: the same elements as torch (torch leaves their order unspecified)
    a = [0., 0., 1., 1., 0., 0.]
    got = minidl.tensor(a).topk(5, sorted=False).indices.numpy()
    want = torch.tensor(a).topk(5, sorted=False).indices.numpy()
    assert sorted(got) == sorted(want)


@needs_torch
def test_topk_and_kthvalue_refuse_bool_and_check_k():
    b = minidl.tensor([True, False])
    with pytest.raises(RuntimeError):
        torch.topk(torch.tensor([True, False]), 1)
    for f in (lambda: b.topk(1), lambda: minidl.kthvalue(b, 1)):
        with pytest.raises(RuntimeError, match="bool"):
            f()
    with pytest.raises(RuntimeError):
        torch.topk(torch.zeros(3), 4)
    with pytest.raises(RuntimeError, match="out of range"):
        minidl.zeros(3).topk(4)


@needs_torch
def test_kthvalue_ties_give_torchs_index_and_gradient():
    for i, (a, d) in enumerate(_tie_patterns(2, 150)):
        n = a.shape[d]
        k = 1 + (i * 5) % n
        for keepdim in (False, True):
            m = minidl.tensor(a, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.kthvalue(m, k, d, keepdim), torch.kthvalue(t, k, d, keepdim)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(_np(rm.values), rt.values.detach().numpy())
            rm.values.sum().backward()
            rt.values.sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    with pytest.raises(IndexError):
        torch.kthvalue(torch.zeros(3, 0), 1)
    with pytest.raises(IndexError, match="non-zero size"):
        minidl.kthvalue(minidl.zeros(3, 0), 1)
    x = minidl.tensor(np.random.default_rng(3).standard_normal((3, 6)), dtype=minidl.float64,
                      requires_grad=True)
    assert gradcheck(lambda a: minidl.kthvalue(a, 2, 1).values, [x])
    assert gradcheck(lambda a: a.topk(3, 0, largest=False).values, [x])
    with pytest.raises(RuntimeError):
        torch.tensor([True, False]).median()
    with pytest.raises(RuntimeError, match="bool"):
        minidl.tensor([True, False]).median()


@needs_torch
def test_searchsorted_with_nan_gives_torchs_places():
    inf = float("inf")
    cases = [([1., 2., NAN], [NAN, 0., 1.5, 3., inf]), ([1., NAN, NAN], [NAN, 1., 2.]),
             ([NAN, NAN], [NAN, 1.]), ([1., 2., 3.], [NAN, 2.]),
             ([-inf, 0., inf, NAN], [inf, NAN, -inf]), ([1., NAN, 3., 4.], [3., 0., 5.])]
    for seq, values in cases:
        for right in (False, True):
            want = torch.searchsorted(torch.tensor(seq), torch.tensor(values), right=right)
            got = minidl.searchsorted(minidl.tensor(seq), minidl.tensor(values), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
            want = torch.searchsorted(torch.tensor([seq, seq[::-1]]),
                                      torch.tensor([values, values]), right=right)
            got = minidl.searchsorted(minidl.tensor([seq, seq[::-1]]),
                                      minidl.tensor([values, values]), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
            want = torch.bucketize(torch.tensor(values), torch.tensor(seq), right=right)
            got = minidl.bucketize(minidl.tensor(values), minidl.tensor(seq), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
    # an integer sequence searched for float values, NaN among them
    want = torch.searchsorted(torch.tensor([1, 2, 3]), torch.tensor([NAN, 1.5]))
    np.testing.assert_array_equal(
        _np(minidl.searchsorted(minidl.tensor([1, 2, 3]), minidl.tensor([NAN, 1.5]))), want.numpy())


@needs_torch
def test_searchsorted_refuses_what_torch_refuses():
    s = minidl.tensor([1., 2.])
    bad = [lambda: minidl.searchsorted(minidl.tensor([True, False]), minidl.tensor([True])),
           lambda: minidl.searchsorted(s, minidl.tensor([1.]), right=True, side="left"),
           lambda: minidl.searchsorted(minidl.tensor([[1., 2.]]), minidl.tensor(1.)),
           lambda: minidl.searchsorted(minidl.tensor([[1., 2.]]), minidl.tensor([[1.], [2.]]))]
    for f in bad:
        with pytest.raises(RuntimeError):
            f()
    with pytest.raises(RuntimeError):
        torch.searchsorted(torch.tensor([1., 2.]), torch.tensor([1.]), right=True, side="left")
    assert minidl.searchsorted(minidl.zeros(0), minidl.tensor([1.])).tolist() == [0]


@needs_torch
def test_integer_powers_with_negative_exponents():
    cases = [lambda L: L.tensor([1, 2, 3]) ** -1, lambda L: L.tensor([0, 2]) ** -2,
             lambda L: L.tensor(2) ** -1, lambda L: L.tensor([1, 2], dtype=L.uint8) ** -1,
             lambda L: L.tensor([True, False]) ** -1, lambda L: L.tensor([2, 3]).pow(-2),
             lambda L: L.pow(L.tensor([2, 3]), -1), lambda L: L.tensor([2, 3]) ** np.int64(-1),
             lambda L: L.tensor([2, 3], dtype=L.int8) ** 200,
             # a tensor exponent: no error, PyTorch's integer results (1, +-1 or 0)
             lambda L: L.tensor([-3, -2, -1, 0, 1, 2, 3] * 2) ** L.tensor([-1] * 7 + [-2] * 7),
             lambda L: 2 ** L.tensor([1, -1]), lambda L: (-1) ** L.tensor([1, -1, -2, 0]),
             lambda L: L.tensor([1, 2, 0], dtype=L.uint8) ** L.tensor([-1, -1, -1], dtype=L.int8),
             lambda L: L.tensor([1, -1, -1, 5], dtype=L.int8) ** L.tensor([-1, -1, -2, -3],
                                                                        dtype=L.int8),
             lambda L: L.tensor([2]) ** L.tensor(-1),
             # exponents that stay legal
             lambda L: L.tensor([0, 2]) ** 0, lambda L: L.tensor([1, 2]) ** -1.0,
             lambda L: L.tensor([2, 3], dtype=L.uint8) ** 200, lambda L: L.tensor([3]) ** 40]
    for f in cases:
        agree_both(f)
    x = minidl.tensor([2, 3])
    with pytest.raises(RuntimeError, match="negative integer powers"):
        x **= -1
    x **= minidl.tensor([-1, 1])
    assert x.tolist() == [0, 3]


@needs_torch
def test_bool_operands_refused_as_in_torch():
    b = lambda L: L.tensor([True, False, True])  # noqa: E731
    i = lambda L: L.tensor([1, 2, 3])  # noqa: E731
    refused = [lambda L: -b(L), lambda L: L.neg(b(L)), lambda L: b(L) - b(L),
               lambda L: i(L) - b(L), lambda L: b(L) - i(L), lambda L: b(L) - 1,
               lambda L: 1 - b(L), lambda L: True - b(L), lambda L: b(L) - True,
               lambda L: b(L) - 1.5, lambda L: L.sub(b(L), b(L)), lambda L: i(L) - True,
               lambda L: b(L).argmax(), lambda L: b(L).argmin(0), lambda L: b(L).abs(),
               lambda L: L.floor(b(L)), lambda L: L.ceil(b(L)), lambda L: L.trunc(b(L)),
               lambda L: L.round(b(L)), lambda L: L.frac(b(L)), lambda L: b(L).relu(),
               lambda L: b(L) @ b(L), lambda L: b(L) // b(L), lambda L: b(L) % b(L),
               lambda L: L.fmod(b(L), b(L)), lambda L: b(L).clamp(min=True),
               lambda L: b(L) ** b(L), lambda L: True ** b(L), lambda L: b(L).mean(),
               lambda L: b(L).var(), lambda L: i(L) @ L.tensor([1., 2., 3.])]
    for f in refused:
        with pytest.raises(RuntimeError):
            f(torch)
        with pytest.raises(RuntimeError):
            f(minidl)
    with pytest.raises(RuntimeError, match="logical_not"):
        -b(minidl)
    with pytest.raises(RuntimeError, match="logical_xor"):
        b(minidl) - b(minidl)
    t = minidl.tensor([1., 2.])
    with pytest.raises(RuntimeError, match="bool"):
        t -= minidl.tensor([True, False])
    allowed = [lambda L: b(L) + b(L), lambda L: b(L) * b(L), lambda L: b(L) / b(L),
               lambda L: b(L) ** 2, lambda L: b(L) ** True, lambda L: b(L) ** False,
               lambda L: 2 ** b(L), lambda L: b(L) ** 0.5, lambda L: L.diff(b(L)),
               lambda L: b(L).clamp(0, 1), lambda L: L.sign(b(L)), lambda L: b(L).cumsum(0),
               lambda L: b(L).sum(), lambda L: L.square(b(L))]
    for f in allowed:
        agree_both(f)


@needs_torch
def test_max_min_argmax_over_an_empty_dim_raise_torchs_errors():
    for name in ("argmax", "argmin", "max", "min", "amax", "amin"):
        for dim in (None, 1, -1):
            def f(L, name=name, dim=dim):
                x = L.zeros((3, 0))
                return getattr(x, name)() if dim is None else getattr(x, name)(dim)
            # torch: an IndexError, but a RuntimeError for max(), min(), amax(), amin()
            kind = RuntimeError if dim is None and not name.startswith("arg") else IndexError
            with pytest.raises(kind):
                f(torch)
            with pytest.raises(kind, match="reduction dim"):
                f(minidl)
        # an empty dim that is not reduced: an empty result, as in torch
        want = getattr(torch.zeros((3, 0)), name)(0)
        got = getattr(minidl.zeros((3, 0)), name)(0)
        want, got = (want.values, got.values) if isinstance(want, tuple) else (want, got)
        assert tuple(got.shape) == tuple(want.shape) == (0,)
    assert minidl.zeros((3, 0)).softmax(1).shape == (3, 0)
    assert minidl.zeros((3, 0)).log_softmax(1).shape == (3, 0)


@needs_torch
def test_in_place_ops_follow_torchs_result_types():
    def ip(op, make, other):
        def f(L):
            x = make(L)
            getattr(x, op)(other(L) if callable(other) else other)
            return x
        return f
    cases = [ip("__iadd__", lambda L: L.tensor([1, 2]), 2.5),
             ip("__iadd__", lambda L: L.tensor([1, 2]), lambda L: L.tensor([1., 2.])),
             ip("__itruediv__", lambda L: L.tensor([1, 2]), 2),
             ip("__imul__", lambda L: L.tensor([1, 2]), lambda L: L.tensor(1.5)),
             ip("__iadd__", lambda L: L.tensor([0, 2], dtype=L.uint8), -1),
             ip("__iadd__", lambda L: L.tensor([0, 2], dtype=L.uint8), 300),
             ip("__iadd__", lambda L: L.tensor([0, 2], dtype=L.uint8),
                lambda L: L.tensor([-1, 1], dtype=L.int8)),
             ip("__iadd__", lambda L: L.tensor([100, 2], dtype=L.int8),
                lambda L: L.tensor([100, 1])),
             ip("__iadd__", lambda L: L.tensor([True, False]), lambda L: L.tensor([True, True])),
             ip("__iadd__", lambda L: L.tensor([True, False]), 1),
             ip("__iadd__", lambda L: L.tensor([1., 2.]), lambda L: L.tensor([[1., 2.], [3, 4]])),
             ip("__itruediv__", lambda L: L.tensor([1., 0.]), 0),
             ip("__ipow__", lambda L: L.tensor([1, 4]), 0.5),
             ip("add_", lambda L: L.tensor([1, 2]), 2.5),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), -1),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), -255),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), -1.5),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), 300),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.int8), -1.5),
             ip("fill_", lambda L: L.tensor([1, 2]), float("nan")),
             ip("fill_", lambda L: L.tensor([1., 2.]), 1e40),
             ip("fill_", lambda L: L.tensor([1., 2.], dtype=L.float16), 1e5),
             ip("fill_", lambda L: L.tensor([1., 2.]), float("inf")),
             ip("copy_", lambda L: L.tensor([1, 2], dtype=L.uint8), lambda L: L.tensor([-1, 300]))]
    for f in cases:
        agree_both(f)
    with pytest.raises(TypeError, match="can't be cast to the desired output type int64"):
        x = minidl.tensor([1, 2])
        x += 2.5
    x = minidl.tensor([1., 2.], requires_grad=True) * 1
    z = minidl.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):  # recorded by the graph: same rule
        z += x


@needs_torch
def test_std_var_with_no_degrees_of_freedom_warn_as_torch():
    cases = [lambda L: L.tensor([1.]).var(), lambda L: L.tensor([1., 2.]).std(correction=2),
             lambda L: L.tensor([1., 2.]).var(correction=3), lambda L: L.zeros(2, 0).var(1),
             lambda L: L.tensor(1.).std()]
    for f in cases:
        with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
            want = f(torch)
        with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
            got = f(minidl)
        np.testing.assert_array_equal(_np(got), want.numpy())
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minidl.tensor([1.]).var(correction=0)  # one degree of freedom: no warning
        minidl.tensor([1., 2.]).std()


@needs_torch
def test_inf_and_nan_results_come_without_numpy_warnings():
    import warnings
    inf = float("inf")
    cases = [lambda L: L.log(L.tensor([0., -1.])), lambda L: L.sqrt(L.tensor([-1.])),
             lambda L: L.exp(L.tensor([1000.])), lambda L: L.tensor([1e38]) * L.tensor([1e38]),
             lambda L: L.tensor([3e38]) + 3e38, lambda L: L.tensor([inf]) - inf,
             lambda L: L.tensor([0.]) * inf, lambda L: L.tensor([10.]) ** 100,
             lambda L: L.tensor([1, 2]) / 0, lambda L: L.tensor([1., 0.]) / L.zeros(2),
             lambda L: L.tensor([True, False]) / L.tensor([True, False]),
             lambda L: L.zeros(0).mean(), lambda L: L.zeros(2, 0).mean(1),
             lambda L: L.tensor([-inf, -inf]).softmax(0),
             lambda L: L.tensor([-inf, -inf]).log_softmax(0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in cases:
            agree_both(f)
        x = minidl.tensor([0., 4.], requires_grad=True)
        (x.log() + x.sqrt()).sum().backward()
        assert np.isinf(x.grad.numpy()[0])


@needs_torch
def test_reduction_dtype_and_promotion_edges():
    cases = [lambda L: L.tensor([1.5, 2., 3.]).sum(dtype=L.int32),
             lambda L: L.tensor([1, 2]).sum(dtype=L.float32),
             lambda L: L.ones(2, 3, dtype=L.int64).mean(1, dtype=L.float64),
             lambda L: L.tensor([True, False, True]).cumsum(0),
             lambda L: L.tensor([-1, 2, 127], dtype=L.int8).cumsum(0),
             lambda L: L.tensor([1, 2, 3]).cumsum(0, dtype=L.float32),
             lambda L: L.tensor([2 ** 30, 2 ** 30], dtype=L.int32).sum(),
             lambda L: L.tensor([1, 2, 3]) + 2.5, lambda L: L.tensor([1, 2]) / L.tensor([2, 2]),
             lambda L: L.tensor([True, False]) + L.tensor([True, True]),
             lambda L: L.tensor([1, 2, 250], dtype=L.uint8) + L.tensor([-1, 2, 127], dtype=L.int8),
             lambda L: L.tensor([1, 250], dtype=L.uint8) + L.tensor(300),
             lambda L: L.tensor([2 ** 62]) * 4, lambda L: L.tensor([100], dtype=L.int8) * 2]
    for f in cases:
        agree_both(f)


@needs_torch
def test_clamp_where_cat_round_edges():
    nan = NAN
    cases = [lambda L: L.tensor([1., 2., 3.]).clamp(2.5, 1.5),
             lambda L: L.tensor([1, 2, 3]).clamp(3, 1),
             lambda L: L.tensor([1., 2.]).clamp(L.tensor([3., 3.]), L.tensor([1., 1.])),
             lambda L: L.tensor([1, 2, 3]).clamp(1.5, 2.5),
             lambda L: L.tensor([nan, 1.]).clamp(0, 0.5),
             lambda L: L.tensor([1, 2, 250], dtype=L.uint8).clamp(-1, 100),
             lambda L: L.tensor([-1, 2, 127], dtype=L.int8).clamp(max=300),
             lambda L: L.where(L.tensor([True, False]), 1, 0),
             lambda L: L.where(L.tensor([True, False]), 1., 0),
             lambda L: L.where(L.tensor([True, False]), L.tensor([1, 2]), 0.5),
             lambda L: L.where(L.tensor([True, False]), L.tensor([1, 250], dtype=L.uint8), -1),
             lambda L: L.where(L.tensor([1, 0]), 1., 0.),
             lambda L: L.cat([L.tensor([1, 2]), L.tensor([1., 2.])]),
             lambda L: L.cat([L.tensor([True]), L.tensor([1, 2], dtype=L.uint8)]),
             lambda L: L.cat([L.tensor([1], dtype=L.uint8), L.tensor([-1], dtype=L.int8)]),
             lambda L: L.cat([L.zeros(0), L.ones(2, 2)]),
             lambda L: L.cat([L.ones(2, 2), L.zeros(0), L.ones(2, 1)], -1),
             lambda L: L.cat([L.tensor(1.), L.tensor(2.)]),
             lambda L: L.stack([L.tensor([1, 2]), L.tensor([1., 2.])], -1),
             lambda L: L.round(L.tensor([1.25, 2.35, -0.15]), decimals=1),
             lambda L: L.round(L.tensor([15., 25., 1234.]), decimals=-1),
             lambda L: L.round(L.tensor([1, 2]), decimals=1),
             lambda L: L.round(L.tensor([0.5, 1.5, 2.5, -0.5])),
             lambda L: L.nan_to_num(L.tensor([nan, float("inf"), -float("inf"), 1.]), nan=2.,
                                    posinf=3., neginf=-3.),
             lambda L: L.nan_to_num(L.tensor([nan, float("inf")], dtype=L.float16))]
    for f in cases:
        agree_both(f)
    x = minidl.zeros(0, requires_grad=True)
    y = minidl.ones(2, 2, requires_grad=True)
    minidl.cat([x, y]).sum().backward()
    assert x.grad.shape == (0,) and y.grad.tolist() == [[1., 1.], [1., 1.]]


@needs_torch
def test_0d_and_empty_edges():
    s = lambda L: L.tensor(2.5)  # noqa: E731
    cases = [lambda L: s(L).topk(0).values, lambda L: s(L).topk(0).indices,
             lambda L: L.index_select(s(L), 0, L.tensor([0])),
             lambda L: L.narrow(s(L), 0, 0, 1), lambda L: L.chunk(s(L), 2),
             lambda L: L.split(s(L), 1), lambda L: L.diag(s(L)), lambda L: L.tril(s(L)),
             lambda L: s(L) @ s(L), lambda L: L.dot(s(L), s(L)), lambda L: L.outer(s(L), s(L)),
             lambda L: L.diff(s(L)), lambda L: L.ones(2, 3).flatten(1, 0)]
    for f in cases:
        agree_both(f)
    with pytest.raises(IndexError):
        minidl.unbind(minidl.tensor(1.))
    with pytest.warns(UserWarning, match="degrees of freedom"):
        torch.zeros(2, 0).var(0)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        minidl.zeros(2, 0).var(0)


@needs_torch
def test_new_paths_run_on_a_fake_gpu(monkeypatch):
    """searchsorted's NaN search, integer powers and the tie rules on a CuPy-like device (the
    numpy-backed stand-in of tests/_fake_gpu.py; no CUDA kernel is needed by these ops)."""
    import _fake_gpu

    seq, values = [1., NAN, 3., 4.], [3., NAN, 0., 5.]
    want_search = minidl.searchsorted(minidl.tensor(seq), minidl.tensor(values)).numpy()
    want_2d = minidl.searchsorted(minidl.tensor([seq]), minidl.tensor([values]),
                                  right=True).numpy()
    base, exponent = [-3, -1, 0, 1, 2], [-1, -1, -2, -3, -1]
    want_pow = (minidl.tensor(base) ** minidl.tensor(exponent)).numpy()
    _fake_gpu.install(monkeypatch, None)
    got = minidl.searchsorted(minidl.tensor(seq, device="cuda"),
                              minidl.tensor(values, device="cuda"))
    assert got.device == "cuda"
    np.testing.assert_array_equal(got.numpy(), want_search)
    got = minidl.searchsorted(minidl.tensor([seq], device="cuda"),
                              minidl.tensor([values], device="cuda"), right=True)
    np.testing.assert_array_equal(got.numpy(), want_2d)
    got = minidl.tensor(base, device="cuda") ** minidl.tensor(exponent, device="cuda")
    np.testing.assert_array_equal(got.numpy(), want_pow)
    x = minidl.tensor([1., 3., 3., 2.], device="cuda", requires_grad=True)
    top = x.topk(2)
    top.values.sum().backward()
    assert top.values.tolist() == [3., 3.] and x.grad.tolist() == [0., 1., 1., 0.]
    with pytest.raises(RuntimeError, match="bool"):
        -minidl.tensor([True], device="cuda")


@needs_torch
def test_any_all_shifts_bitwise_lerp_addc_edges():
    u8 = lambda L: L.tensor([1, 0, 250], dtype=L.uint8)  # noqa: E731
    i = lambda L: L.tensor([1, 2, 3])  # noqa: E731
    f = lambda L: L.tensor([1., 2., 3.])  # noqa: E731
    cases = [lambda L: u8(L).any(), lambda L: u8(L).all(),
             lambda L: L.tensor([[1, 0], [0, 0]], dtype=L.uint8).any(1),
             lambda L: L.tensor([[1, 0], [0, 0]], dtype=L.int8).all(0),
             lambda L: L.tensor([-128], dtype=L.int8) // -1, lambda L: L.tensor([-2 ** 63]) // -1,
             lambda L: f(L) & 1, lambda L: i(L) & 1.5, lambda L: i(L) << 2,
             lambda L: L.tensor([-8]) >> 1, lambda L: u8(L) << 1, lambda L: 1 << L.tensor([2]),
             lambda L: L.tensor([True]) << 1, lambda L: L.tensor([1.]) << 1,
             lambda L: L.tensor([1]) << 64, lambda L: L.tensor([-8]) >> 70,
             lambda L: L.bitwise_left_shift(L.tensor([3]), 1),
             lambda L: L.bitwise_right_shift(L.tensor([12], dtype=L.int8), L.tensor([2])),
             lambda L: L.lerp(f(L), f(L) * 2, 0.5), lambda L: L.lerp(i(L), i(L), 0.5),
             lambda L: L.lerp(f(L), i(L), 0.5), lambda L: L.lerp(f(L), f(L).double(), 0.5),
             lambda L: L.lerp(f(L), f(L), L.tensor([0.5, 0.5, 0.5], dtype=L.float64)),
             lambda L: L.addcmul(i(L), i(L), i(L), value=1.5),
             lambda L: L.addcmul(i(L), i(L), i(L), value=-0.5),
             lambda L: L.addcmul(i(L), f(L), i(L), value=0.5),
             lambda L: L.addcdiv(f(L), i(L), f(L)), lambda L: L.addcdiv(f(L), i(L), i(L)),
             lambda L: L.tensor([1.], dtype=L.float16) + 1e5]
    for c in cases:
        agree_both(c)


@needs_torch
def test_indexing_ops_index_dtypes_bounds_and_src_dtypes_as_torch():
    m = lambda L: L.arange(6.).reshape(2, 3)  # noqa: E731
    ix = lambda L, v, dt=None: L.tensor(v, dtype=dt or L.int64)  # noqa: E731

    def setitem(make, index, value):
        def f(L):
            t = make(L)
            t[index] = value
            return t
        return f
    cases = [lambda L: L.gather(m(L), 1, ix(L, [[-1], [0]])),
             lambda L: L.gather(m(L), 1, ix(L, [[3], [0]])),
             lambda L: L.gather(m(L), 1, ix(L, [[1], [0]], L.int32)),
             lambda L: L.gather(m(L), 1, ix(L, [[1], [0]], L.int16)),
             lambda L: L.gather(m(L), 1, L.tensor([[1.], [0.]])),
             lambda L: L.gather(m(L), 1, ix(L, [[0], [1], [0]])),
             lambda L: L.scatter(m(L), 1, ix(L, [[0], [2]]), L.ones(2, 1, dtype=L.int64)),
             lambda L: L.scatter(m(L), 1, ix(L, [[0], [2]], L.int32), 9.),
             lambda L: L.scatter(m(L), 1, ix(L, [[-1], [2]]), 9.),
             lambda L: L.scatter_add(m(L), 1, ix(L, [[0], [2]]), L.ones(2, 1, dtype=L.int64)),
             lambda L: L.index_select(m(L), 1, ix(L, [-1])),
             lambda L: L.index_select(m(L), 1, ix(L, [2, 0], L.int32)),
             lambda L: L.index_select(m(L), 1, ix(L, [2, 0], L.int16)),
             lambda L: L.index_add(m(L), 1, ix(L, [-1]), L.ones(2, 1)),
             lambda L: L.index_add(m(L), 1, ix(L, [0]), L.ones(2, 1, dtype=L.float64)),
             lambda L: L.index_fill(m(L), 1, ix(L, [-1]), -1.),
             lambda L: L.index_fill(m(L), 1, ix(L, [-4]), -1.),
             lambda L: L.index_fill(m(L), 1, ix(L, [0], L.int32), -1.),
             lambda L: L.index_copy(m(L), 1, ix(L, [0]), L.ones(2, 1, dtype=L.float64)),
             lambda L: L.index_put(m(L), (ix(L, [0]),), L.tensor(1., dtype=L.float64)),
             lambda L: L.take_along_dim(m(L), ix(L, [[0], [1]], L.int32), 1),
             lambda L: L.masked_select(m(L), ix(L, [1, 0, 1])),
             setitem(lambda L: L.zeros(2, dtype=L.uint8), 0, -1),
             setitem(lambda L: L.zeros(2, dtype=L.uint8), 0, 300),
             setitem(lambda L: L.zeros(2, dtype=L.int64), 0, NAN),
             setitem(lambda L: L.zeros(2), 0, 1e40),
             setitem(lambda L: L.zeros(2, dtype=L.int64), 1, 2.7)]
    for c in cases:
        agree_both(c)
    with pytest.raises(IndexError):
        minidl.index_select(m(minidl), 1, ix(minidl, [[0]]))


@needs_torch
def test_unstable_sort_gives_torchs_order_among_ties():
    """sort(stable=False), PyTorch's default, runs std::sort on the CPU: equal values in rows
    longer than 16 come out in its order, not the stable one (and so do their gradients)."""
    rng = np.random.default_rng(9)
    for i in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 60, size=int(rng.integers(1, 3))))
        a = rng.integers(0, 4, shape).astype(np.float64)
        if i % 3 == 0:
            a[rng.random(shape) < 0.2] = NAN
        d = int(rng.integers(-len(shape), len(shape)))
        for descending in (False, True):
            m = minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.sort(m, d, descending), torch.sort(t, d, descending)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(
                _np(minidl.argsort(m, d, descending)), torch.argsort(t, d, descending).numpy())
            w = np.arange(a.size, dtype=np.float64).reshape(a.shape)
            (rm.values * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
            (rt.values * torch.tensor(w)).sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    for dtype in ("int64", "float16", "bool"):
        a = rng.integers(0, 2, 40).astype(dtype)
        np.testing.assert_array_equal(_np(minidl.sort(minidl.from_numpy(a)).indices),
                                      torch.sort(torch.from_numpy(a)).indices.numpy())


@needs_torch
def test_tie_orders_without_numba_match_too():
    """backend/ordering.py runs as Python where numba is off: the same indices."""
    import subprocess
    import sys
    code = ("import numpy as np, torch, minidl\n"
            "a = np.random.default_rng(0).integers(0, 3, (3, 80)).astype(np.float32)\n"
            "m, t = minidl.from_numpy(a), torch.from_numpy(a)\n"
            "assert (m.topk(9).indices.numpy() == t.topk(9).indices.numpy()).all()\n"
            "assert (m.sort().indices.numpy() == t.sort().indices.numpy()).all()\n"
            "assert (m.kthvalue(30).indices.numpy() == t.kthvalue(30).indices.numpy()).all()\n"
            "from minidl.backend import ordering\n"
            "assert not hasattr(ordering.topk_rows, 'py_func')\n")
    env = {**__import__("os").environ, "MINIDL_DISABLE_NUMBA": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


@needs_torch
def test_amax_amin_give_a_nan_slice_a_nan_gradient_and_max_shares_it():
    x = [[1., NAN, 0., NAN], [3., 3., 2., 0.]]
    cases = [lambda t: t.amax(), lambda t: t.amax(1), lambda t: t.amin(0),
             lambda t: t.amax((0, 1)), lambda t: t.max(), lambda t: t.min(),
             lambda t: t.max(1).values]
    for f in cases:
        m, t = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        f(m).sum().backward()
        f(t).sum().backward()
        np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    m, t = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    minidl.aminmax(m, dim=1).max.sum().backward()
    torch.aminmax(t, dim=1).max.sum().backward()
    np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())


# ---- var/std with no degrees of freedom left -----------------------------------------------------
DOF_CASES = [("var", (1,), {}), ("std", (1,), {}), ("var", (3,), dict(correction=3)),
             ("std", (3,), dict(correction=5)), ("var", (2, 3), dict(dim=1, correction=3)),
             ("std", (1, 4), dict(dim=0)), ("var", (0,), {}), ("var_mean", (1, 3), dict(dim=0)),
             ("std_mean", (3,), dict(correction=3)), ("var", (3,), dict(correction=2.5)),
             ("std", (2, 3), dict(dim=1, correction=2))]


@needs_torch
@pytest.mark.parametrize("fn,shape,kwargs", DOF_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in DOF_CASES])
def test_var_std_without_degrees_of_freedom_warn_and_match_torch(fn, shape, kwargs):
    import warnings

    x = (np.arange(int(np.prod(shape)), dtype=np.float32) * 1.5 + 1).reshape(shape)
    results = []
    for lib, make in ((torch, torch.tensor), (minidl, minidl.tensor)):
        t = make(x, requires_grad=True)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = getattr(lib, fn)(t, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        if x.size:
            first.sum().backward()
        grad = t.grad.numpy() if x.size else None
        messages = [str(w.message).split(" (Triggered")[0] for w in seen
                    if issubclass(w.category, UserWarning)]
        results.append((first.detach().numpy() if lib is torch else first.numpy(), grad,
                        messages))
    (want, want_grad, want_msg), (got, got_grad, got_msg) = results
    np.testing.assert_array_equal(got, want)  # nan and inf where torch has them
    if want_grad is not None:
        # with no degrees of freedom, torch's full-reduction var gradient is +inf wherever x is
        # not its mean (whatever the side); minidl's is the limit's sign(x - mean) * inf
        np.testing.assert_allclose(np.abs(got_grad), np.abs(want_grad), rtol=1e-5,
                                   equal_nan=True)
    degenerate = kwargs.get("correction", 1) >= (x.size // max(want.size, 1) if x.size else 0)
    assert got_msg == want_msg and bool(got_msg) == degenerate
    if degenerate:
        assert got_msg[0].startswith(f"{fn}(): degrees of freedom is <= 0")


# ---- ops' edges: frexp, aminmax, addr, tensordot, renorm, shifts and more (a fourth audit) -------
@needs_torch
def test_frexp_subnormal_mantissa_and_gradient():
    x = np.array([0.0, -0.0, np.inf, np.nan, 1e-40, 3.0, -np.inf], np.float32)
    mx = minidl.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    mm, me = minidl.frexp(mx)
    tm, te = torch.frexp(tx)
    same(mm, tm, "mantissa")
    same(me, te, "exponent")
    mm.sum().backward()
    tm.sum().backward()
    same(mx.grad, tx.grad, "grad")
    d = minidl.tensor(np.array([0.3, -5.0, 7.5]), dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda t: minidl.frexp(t)[0], [d])


@needs_torch
def test_aminmax_over_an_empty_dim_is_an_index_error():
    with pytest.raises(IndexError):
        torch.aminmax(torch.zeros(2, 0), dim=1)
    with pytest.raises(IndexError, match="empty"):
        minidl.aminmax(minidl.zeros(2, 0), dim=1)
    with pytest.raises(ValueError):
        minidl.aminmax(minidl.zeros(0, 3), dim=-2)


def _both_from_arrays(fn, *arrays, dtype=None):
    ms = [minidl.tensor(a, dtype=a.dtype) for a in arrays]
    ts = [torch.from_numpy(np.array(a)) for a in arrays]
    return fn(minidl, *ms), fn(torch, *ts)


@needs_torch
def test_beta_zero_keeps_the_input_in_the_graph_and_checks_its_shape():
    rng = np.random.default_rng(0)
    a, v1, v2 = np.full((1, 4), np.nan), rng.standard_normal(3), rng.standard_normal(4)
    mi = minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
    ti = torch.tensor(a, requires_grad=True)
    mo = minidl.addr(mi, minidl.tensor(v1, dtype=minidl.float64), minidl.tensor(v2, dtype=minidl.float64), beta=0, alpha=2)
    to = torch.addr(ti, torch.tensor(v1), torch.tensor(v2), beta=0, alpha=2)
    same(mo, to, "addr beta=0")
    mo.sum().backward()
    to.sum().backward()
    same(mi.grad, ti.grad, "input's gradient: zeros, not None")
    for beta in (0, 1):
        with pytest.raises(RuntimeError):
            torch.addmm(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(3, 4), beta=beta)
        with pytest.raises((ValueError, RuntimeError), match="broadcast"):
            minidl.addmm(minidl.zeros(3, 4), minidl.zeros(2, 3), minidl.zeros(3, 4), beta=beta)
        with pytest.raises(RuntimeError, match="broadcast"):
            minidl.addmm(minidl.zeros(2, 2, 4), minidl.zeros(2, 3), minidl.zeros(3, 4), beta=beta)


@needs_torch
def test_addr_refuses_float_scalars_for_integer_results():
    ints = [np.ones((2, 2), np.int64), np.ones(2, np.int64), np.ones(2, np.int64)]
    for kw in ({"beta": 0.5}, {"alpha": 1.5}):
        with pytest.raises(RuntimeError):
            torch.addr(*map(torch.from_numpy, ints), **kw)
        with pytest.raises(RuntimeError, match="floating point"):
            minidl.addr(*[minidl.tensor(x) for x in ints], **kw)
    m, t = _both_from_arrays(lambda L, i, x, y: L.addr(i, x, y, beta=0.5), np.ones((2, 2), np.int64),
                 np.ones(2), np.ones(2))
    same(m, t, "float vectors: a float result, no error")


@needs_torch
def test_tensordot_takes_dims_as_a_tensor():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(3, 2)
    m, t = _both_from_arrays(lambda L, x, y: L.tensordot(x, y, dims=L.tensor(1)), a, b)
    same(m, t, "0-d tensor dims")
    m, t = _both_from_arrays(lambda L, x, y: L.tensordot(x, y, dims=L.tensor([[1], [0]])), a, b)
    same(m, t, "2-row tensor dims")


@needs_torch
def test_unique_consecutive_of_an_empty_tensor_along_a_dim():
    for shape, dim in (((0, 3), 1), ((2, 0), 0)):
        with pytest.raises(RuntimeError):
            torch.unique_consecutive(torch.zeros(shape), dim=dim)
        with pytest.raises(ValueError, match="0 sized"):
            minidl.unique_consecutive(minidl.zeros(shape), dim=dim)
    for shape, dim in (((0,), 0), ((0, 3), 0), ((2, 0), 1)):
        a = np.zeros(shape)
        m, t = _both_from_arrays(lambda L, x: L.unique_consecutive(x, return_inverse=True,
                                                      return_counts=True, dim=dim), a)
        for x, y in zip(m, t):
            same(x, y, f"unique_consecutive {shape} dim={dim}")


@needs_torch
def test_masked_scatter_on_0d_tensors_with_gradient():
    for mask in (True, False):
        x = np.array(1.5)
        src = np.array([4.0, 5.0])
        mx = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
        ms = minidl.tensor(src, dtype=minidl.float64, requires_grad=True)
        tx, ts = torch.tensor(x, requires_grad=True), torch.tensor(src, requires_grad=True)
        mo = minidl.masked_scatter(mx, minidl.tensor(mask), ms)
        to = torch.masked_scatter(tx, torch.tensor(mask), ts)
        same(mo, to, "0-d masked_scatter")
        (mo * 3).backward()
        (to * 3).backward()
        same(mx.grad, tx.grad, "input grad")
        same(ms.grad, ts.grad, "source grad")


@needs_torch
def test_nn_functional_pdist_and_empty_bincount_dtype():
    import minidl.nn.functional as F

    a = np.random.default_rng(1).standard_normal((5, 3))
    m, t = _both_from_arrays(lambda L, x: (F if L is minidl else torch.nn.functional).pdist(x, 1.5), a)
    same(m, t, "F.pdist")
    for w in (np.zeros(0, np.float32), np.zeros(0), np.zeros(0, np.int64)):
        m, t = _both_from_arrays(lambda L, x, ww: L.bincount(x, ww, minlength=3), np.zeros(0, np.int64), w)
        same(m, t, f"empty bincount with {w.dtype} weights")


@needs_torch
@pytest.mark.parametrize("name", ["multiply", "true_divide"])
@pytest.mark.parametrize("number", [2, 2.5, True])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_multiply_and_true_divide_take_a_number_first(name, number, dtype):
    a = np.array([1, 2, 4]).astype(dtype)
    m = getattr(minidl, name)(number, minidl.tensor(a, dtype=a.dtype))
    t = getattr(torch, name)(number, torch.from_numpy(a))
    same(m, t, f"{name}({number}, {dtype})")


@needs_torch
@pytest.mark.parametrize("shapes", [((3, 1), (1, 4), (4,)), (2, (3, 1)), ((),), (), ((0, 1), (3,)),
                                    ([2, 1], [5, 1, 1])])
def test_broadcast_shapes(shapes):
    assert minidl.broadcast_shapes(*shapes) == tuple(torch.broadcast_shapes(*shapes))


@needs_torch
@pytest.mark.parametrize("shapes", [((2,), (3,)), ((-1,),)])
def test_broadcast_shapes_refuses_what_torch_refuses(shapes):
    with pytest.raises((RuntimeError, ValueError)):
        torch.broadcast_shapes(*shapes)
    with pytest.raises(RuntimeError):
        minidl.broadcast_shapes(*shapes)


@needs_torch
@pytest.mark.parametrize("call", [lambda L, x: L.nanmedian(x), lambda L, x: L.nanmedian(x, 0),
                                  lambda L, x: L.median(x), lambda L, x: L.median(x, 0)])
def test_median_and_nanmedian_refuse_bool(call):
    with pytest.raises(NotImplementedError):
        call(torch, torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        call(minidl, minidl.ones(3, dtype=minidl.bool))


@needs_torch
@pytest.mark.parametrize("p, dim, maxnorm", [(2, 0, 1.0), (1, -1, 2.0), (float("inf"), 1, 0.5),
                                             (3, 2, 100.0)])
def test_renorm_matches_torch_with_gradients(p, dim, maxnorm):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 4, 2)) * 3, rng.standard_normal((3, 4, 2))
    m = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    mo, to = minidl.renorm(m, p, dim, maxnorm), torch.renorm(t, p, dim, maxnorm)
    same(mo, to, "renorm")
    mo.backward(minidl.tensor(g, dtype=minidl.float64))
    to.backward(torch.tensor(g))
    same(m.grad, t.grad, "renorm grad", atol=1e-12)
    assert gradcheck(lambda a: minidl.renorm(a, p, dim, maxnorm),
                     [minidl.tensor(x, dtype=minidl.float64, requires_grad=True)])
    y, ty = minidl.tensor(x, dtype=minidl.float64), torch.tensor(x)
    assert y.renorm_(p, dim, maxnorm) is y
    same(y, ty.renorm_(p, dim, maxnorm), "renorm_")


@needs_torch
@pytest.mark.parametrize("call", [lambda L: L.renorm(L.ones(3), 2, 0, 1.0),
                                  lambda L: L.renorm(L.ones(2, 3), 0, 0, 1.0),
                                  lambda L: L.renorm(L.ones(2, 3), 2, 0, -1.0),
                                  lambda L: L.renorm(L.ones(2, 3, dtype=L.int64), 2, 0, 1.0)])
def test_renorm_refuses_what_torch_refuses(call):
    with pytest.raises(RuntimeError):
        call(torch)
    with pytest.raises((ValueError, TypeError)):
        call(minidl)


SHIFTS = [
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) << L.tensor([1, 2, 8, 9], dtype=L.int8),
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) >> L.tensor([1, 2, 8, 9], dtype=L.int8),
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) << -1,
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) >> -1,
    lambda L: L.tensor([1, -8, 3, 2**40]) << 63,
    lambda L: L.tensor([1, -8, 3, 2**40]) >> 64,
    lambda L: L.tensor([True, False]) << 1,
    lambda L: 2 << L.tensor([1, 2]),
    lambda L: 1024 >> L.tensor([1, 2]),
    lambda L: L.tensor([1, 2], dtype=L.uint8) << L.tensor([1, 9]),
    lambda L: L.tensor([200], dtype=L.uint8) >> 9,
    lambda L: L.bitwise_left_shift(L.tensor([[1], [2]]), L.tensor([1, 2, 3])),
    lambda L: L.tensor([3, 4]).bitwise_right_shift(1),
]


@needs_torch
@pytest.mark.parametrize("shift", SHIFTS)
def test_bitwise_shifts_match_torch(shift):
    same(shift(minidl), shift(torch), "shift")


@needs_torch
def test_bitwise_shifts_in_place_and_refusing_floats():
    for L in (torch, minidl):
        x = L.tensor([3, 4])
        y = x
        x <<= 2
        assert x is y and x.tolist() == [12, 16]
        assert x.bitwise_right_shift_(3) is x and x.tolist() == [1, 2]
        with pytest.raises(NotImplementedError):
            L.tensor([1.5]) << 1
# ---- the unsigned dtypes uint16, uint32, uint64: promotion, the ops torch runs and refuses -----------
def _unsigned_script(T):
    out = []
    every = [T.bool, T.uint8, T.int8, T.int16, T.int32, T.int64, T.float16, T.bfloat16,
             T.float32, T.float64, T.complex64, T.complex128, T.uint16, T.uint32, T.uint64]
    for u in (T.uint16, T.uint32, T.uint64):
        for first in (True, False):
            row = []
            for t in every:
                try:
                    row.append(str(T.promote_types(u, t) if first else T.promote_types(t, u))
                               .split(".")[-1])
                except RuntimeError:
                    row.append("refused")
            out.append(row)
    for u in (T.uint16, T.uint32, T.uint64):
        a, b = T.tensor([1, 2, 3], dtype=u), T.tensor([4, 5, 6], dtype=u)
        top = int(T.iinfo(u).max)
        for name, f in [
                ("mul", lambda: a * b), ("div", lambda: a / b), ("eq", lambda: a == b),
                ("ne", lambda: a != b), ("add_float", lambda: a + 1.5),
                ("add_f32", lambda: a + T.tensor([1., 2, 3])), ("sum", lambda: a.sum()),
                ("cumsum", lambda: a.cumsum(0)), ("prod", lambda: a.prod()),
                ("to_f", lambda: a.float()), ("from_f", lambda: T.tensor([1.5, 2.]).to(u)),
                ("and", lambda: a & b), ("or", lambda: a | b), ("xor", lambda: a ^ b),
                ("sort", lambda: a.sort().values), ("zeros", lambda: T.zeros(2, dtype=u)),
                ("full", lambda: T.full((2,), 5, dtype=u)), ("lt_f", lambda: a < 2.5),
                ("idx", lambda: a[1:]), ("cat", lambda: T.cat([a, b])), ("item", lambda: a[0].item()),
                ("mul2", lambda: a * 2), ("eq1", lambda: a == 1), ("and1", lambda: a & 1),
                ("mul0d", lambda: a * T.tensor(2)), ("0dmul", lambda: T.tensor(2, dtype=u) * T.tensor([1, 2])),
                ("mulbool", lambda: a * True), ("where", lambda: T.where(T.tensor([True, False, True]), a, b)),
                ("to_i64", lambda: a.to(T.int64)), ("ones", lambda: T.ones(2, dtype=u)),
                ("top", lambda: T.tensor([top], dtype=u)), ("top_f64", lambda: T.tensor([top], dtype=u).double()),
                ("repr", lambda: repr(a).split("dtype=")[1].split(".")[1]), ("wrap", lambda: T.tensor([65535], dtype=u) * 2)]:
            r = f()
            out.append((name, str(r.dtype).split(".")[-1], r.tolist()) if hasattr(r, "tolist")
                       else (name, r))
        for name, f in [
                ("add", lambda: a + b), ("sub", lambda: b - a), ("add_int", lambda: a + 1),
                ("neg", lambda: -a), ("lt", lambda: a < b), ("ge1", lambda: a >= 1),
                ("abs", lambda: a.abs()), ("pow", lambda: a ** 2), ("matmul", lambda: a @ b),
                ("not", lambda: ~a), ("mul_i64", lambda: a * T.tensor([1, 2, 3])),
                ("add_u8", lambda: a + T.tensor([1, 2, 3], dtype=T.uint8)),
                ("eq_i64", lambda: a == T.tensor([1, 0, 3])),
                ("grad", lambda: T.ones(2, dtype=u, requires_grad=True)),
                ("floordiv", lambda: b // a), ("mod", lambda: b % a), ("fmod", lambda: T.fmod(b, a)),
                ("trunc", lambda: b.div(a, rounding_mode="trunc")), ("lshift", lambda: a << 1),
                ("rshift", lambda: a >> 1)]:
            try:
                f()
                out.append((name, "ran"))
            except NotImplementedError:
                out.append((name, "NotImplementedError"))
            except RuntimeError:
                out.append((name, "RuntimeError"))
    return out


def test_unsigned_dtypes():
    out = _unsigned_script(minidl)
    assert out[0] == ["refused"] * 6 + ["float16", "bfloat16", "float32", "float64"] + \
        ["refused"] * 2 + ["uint16", "refused", "refused"]
    assert minidl.uint32 == np.dtype(np.uint32) and minidl.iinfo(minidl.uint64).max == 2**64 - 1
    assert ("sum", "int64", 6) in out and ("add", "NotImplementedError") in out
    assert ("mul_i64", "RuntimeError") in out and ("grad", "RuntimeError") in out
    with pytest.raises(RuntimeError, match="attempted to promote UInt32 and Long"):
        minidl.promote_types(minidl.uint32, minidl.int64)
    with pytest.raises(NotImplementedError, match="\"add_stub\" not implemented for 'UInt16'"):
        minidl.ones(2, dtype=minidl.uint16) + 1
    t = minidl.from_numpy(np.array([7, 2**32 - 1], np.uint32))
    assert t.dtype == minidl.uint32 and repr(t) == \
        "tensor([         7, 4294967295], dtype=minidl.uint32)"


def test_unsigned_dtypes_match_torch():
    torch = pytest.importorskip("torch")
    assert _unsigned_script(minidl) == _unsigned_script(torch)
# ---- out= dtype rules -------------------------------------------------------------------------

INF, NAN = float("inf"), float("nan")


def test_out_dtype_rules_follow_torchs_can_cast():
    x = minidl.tensor([1, 2, 3], dtype=minidl.int16)
    out = minidl.zeros(3, dtype=minidl.uint8)
    assert minidl.add(x, x, out=out) is out  # integer -> another integer: allowed
    np.testing.assert_array_equal(out.numpy(), [2, 4, 6])
    with pytest.raises(RuntimeError, match="can't be cast"):
        minidl.add(x, x, out=minidl.zeros(3, dtype=minidl.bool))
    with pytest.raises(RuntimeError, match="can't be cast"):
        minidl.add(x, 0.5, out=minidl.zeros(3, dtype=minidl.int16))
    s = minidl.zeros((), dtype=minidl.int64)
    minidl.sum(minidl.tensor([1.5, 2.0]), 0, out=s)  # summed in out's dtype, as torch
    assert s.item() == 3
    b = minidl.zeros((), dtype=minidl.bool)
    minidl.sum(minidl.tensor([True, True]), 0, out=b)
    assert b.item() is True
    with pytest.raises(RuntimeError, match="dtype"):
        minidl.sum(minidl.tensor([1.5, 2.0]), 0, dtype=minidl.float64,
                   out=minidl.zeros((), dtype=minidl.float32))
    with pytest.raises(RuntimeError, match="long int"):
        minidl.argmax(minidl.ones(2), out=minidl.zeros((), dtype=minidl.int32))
    i = minidl.zeros((), dtype=minidl.int64)
    assert minidl.argmax(minidl.tensor([1.0, 3.0]), out=i).item() == 1
    with pytest.raises(RuntimeError, match="dtype"):
        minidl.matmul(minidl.ones(2, 2), minidl.ones(2, 2), out=minidl.zeros(2, 2,
                                                                              dtype=minidl.float64))


def test_out_dtype_parity():
    torch = pytest.importorskip("torch")
    cases = [
        lambda L: L.add(L.tensor([1, 2], dtype=L.int16), 3, out=L.zeros(2, dtype=L.uint8)),
        lambda L: L.sum(L.tensor([1.5, 2.0, 2.7]), 0, out=L.zeros((), dtype=L.int64)),
        lambda L: L.sum(L.tensor([1.5, 2.0]), 0, out=L.zeros((), dtype=L.float64)),
        lambda L: L.mul(L.tensor([1, -2], dtype=L.int8), 100, out=L.zeros(2, dtype=L.int8)),
    ]
    for case in cases:
        ours, theirs = case(minidl), case(torch)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for bad in (lambda L: L.argmax(L.ones(2), out=L.zeros((), dtype=L.int32)),
                lambda L: L.matmul(L.ones(2, 2), L.ones(2, 2), out=L.zeros(2, 2, dtype=L.float64)),
                lambda L: L.add(L.tensor([1]), L.tensor([2]), out=L.zeros(1, dtype=L.bool))):
        raises_like_torch(lambda: bad(minidl), lambda: bad(torch))


# ---- 16-bit floats with a Python number they cannot hold --------------------------------------

def test_half_tensors_compute_with_a_python_number_in_float32():
    x = minidl.tensor([0.0, 3000.0, 0.1], dtype=minidl.float16)
    y = (x * 65536.5).float().numpy()  # 65536.5 is inf in float16: 0 * inf would be NaN
    assert y[0] == 0.0 and np.isinf(y[1]) and y[2] == pytest.approx(6552.0)
    assert (x / 1e5).float().numpy()[1] == pytest.approx(0.03, rel=1e-3)  # not x / inf
    assert (x * 100000).float().numpy()[2] == pytest.approx(10000.0, rel=1e-3)
    assert (x * 1e-8).float().numpy()[1] == pytest.approx(3e-5, rel=1e-2)  # 1e-8 is 0 there
    assert (x * 0.1).dtype == minidl.float16
    z = x.clone()
    z.div_(1e5)
    assert z.float().numpy()[1] == pytest.approx(0.03, rel=1e-3)
    b = minidl.tensor([3000.0], dtype=minidl.bfloat16)
    assert (b * 0.1).float().item() == 300.0  # 0.1 as a float32, not as a bfloat16
    w = minidl.tensor([0.0, 2.0], dtype=minidl.float16, requires_grad=True)
    (w * 65536.5).float().sum().backward()
    assert w.grad.dtype == minidl.float16


def test_half_tensors_with_python_numbers_parity():
    torch = pytest.importorskip("torch")
    values = [0.0, 3000.0, 1000.0, 1.5, -2.25, 0.1]
    for dt in ("float16", "bfloat16"):
        for fn in (lambda x: x * 65536.5, lambda x: x / 1e5, lambda x: x * 1e-8,
                   lambda x: x * 1.001, lambda x: x + 0.1, lambda x: 0.1 * x,
                   lambda x: 70000 - x, lambda x: x.clone().mul_(65536.5),
                   lambda x: x.clone().div_(1e5), lambda x: x * 100000,
                   lambda x: x // 0.3, lambda x: x % 0.3, lambda x: x.div(1e5, rounding_mode="trunc")):
            ours = fn(minidl.tensor(values, dtype=getattr(minidl, dt)))
            theirs = fn(torch.tensor(values, dtype=getattr(torch, dt)))
            assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
            np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())


# ---- a cast beyond a dtype's range gives inf, without a warning -------------------------------

def test_a_cast_beyond_the_range_gives_inf_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = minidl.tensor([1e300, -1e300, NAN], dtype=minidl.float64).float()
        z = minidl.tensor([1e300], dtype=minidl.float64).half()
    np.testing.assert_array_equal(y.numpy(), [INF, -INF, NAN])
    assert np.isinf(z.float().item())


# ---- the unsigned dtypes uint16/uint32/uint64: the ops torch 2.13 has no kernel of are refused ---

WIDE = ["uint16", "uint32", "uint64"]


def _wide(name):
    return minidl.from_numpy(np.array([[3, 1], [2, 5]], dtype=name))


# each op torch 2.13 has no CPU kernel of for uint16/32/64 (its NotImplementedError)
_REFUSED = {
    "max()": lambda x: x.max(),
    "max(dim)": lambda x: x.max(0),
    "min()": lambda x: x.min(),
    "min(dim)": lambda x: minidl.min(x, 1),
    "max(a, b)": lambda x: minidl.max(x, x),
    "argmax": lambda x: x.argmax(),
    "argmin": lambda x: minidl.argmin(x, 0),
    "amax": lambda x: x.amax(),
    "amin": lambda x: minidl.amin(x),
    "aminmax": lambda x: minidl.aminmax(x),
    "clamp": lambda x: x.clamp(1, 3),
    "clamp(min=)": lambda x: minidl.clamp(x, min=1),
    "minimum": lambda x: minidl.minimum(x, x),
    "maximum": lambda x: x.maximum(x),
    "sum(dtype=)": lambda x: x.sum(dtype=x.dtype),
    "float sum(dtype=uint)": lambda x: minidl.ones(2).sum(dtype=x.dtype),
    "prod(dtype=)": lambda x: minidl.prod(x, dtype=x.dtype),
    "cumsum(dtype=)": lambda x: minidl.cumsum(x, 0, dtype=x.dtype),
    "arange": lambda x: minidl.arange(5, dtype=x.dtype),
    "eye": lambda x: minidl.eye(2, dtype=x.dtype),
    "linspace": lambda x: minidl.linspace(0, 4, 5, dtype=x.dtype),
    "count_nonzero": lambda x: minidl.count_nonzero(x),
    "topk": lambda x: x.topk(1),
    "tril": lambda x: minidl.tril(x),
    "triu": lambda x: minidl.triu(x),
    "trace": lambda x: minidl.trace(x),
    "masked_fill": lambda x: x.masked_fill(minidl.tensor([[True, False], [False, True]]), 7),
    "cummax": lambda x: minidl.cummax(x, 0),
    "cummin": lambda x: minidl.cummin(x, 0),
    "median": lambda x: x.median(),
    "nanmedian": lambda x: minidl.nanmedian(x),
    "kthvalue": lambda x: minidl.kthvalue(x, 1),
    "mode": lambda x: minidl.mode(x),
}


@pytest.mark.parametrize("dtype", WIDE)
@pytest.mark.parametrize("op", sorted(_REFUSED))
def test_wide_unsigned_ops_torch_has_no_kernel_of_are_refused(op, dtype):
    """These computed a result for uint16/32/64 (max, argmax, clamp, minimum, sum(dtype=),
    arange, eye, count_nonzero, ...) where torch 2.13 has no kernel and raises
    NotImplementedError."""
    with pytest.raises(NotImplementedError, match="not implemented for 'UInt"):
        _REFUSED[op](_wide(dtype))


@pytest.mark.parametrize("op", sorted(_REFUSED))
def test_wide_unsigned_refusals_match_torch(op):
    torch = pytest.importorskip("torch")
    t = torch.tensor([[3, 1], [2, 5]]).to(torch.uint32)
    torch_ops = {
        "max()": lambda: t.max(), "max(dim)": lambda: t.max(0), "min()": lambda: t.min(),
        "min(dim)": lambda: torch.min(t, 1), "max(a, b)": lambda: torch.max(t, t),
        "argmax": lambda: t.argmax(), "argmin": lambda: torch.argmin(t, 0),
        "amax": lambda: t.amax(), "amin": lambda: torch.amin(t),
        "aminmax": lambda: torch.aminmax(t), "clamp": lambda: t.clamp(1, 3),
        "clamp(min=)": lambda: torch.clamp(t, min=1), "minimum": lambda: torch.minimum(t, t),
        "maximum": lambda: t.maximum(t), "sum(dtype=)": lambda: t.sum(dtype=t.dtype),
        "float sum(dtype=uint)": lambda: torch.ones(2).sum(dtype=t.dtype),
        "prod(dtype=)": lambda: torch.prod(t, dtype=t.dtype),
        "cumsum(dtype=)": lambda: torch.cumsum(t, 0, dtype=t.dtype),
        "arange": lambda: torch.arange(5, dtype=t.dtype),
        "eye": lambda: torch.eye(2, dtype=t.dtype),
        "linspace": lambda: torch.linspace(0, 4, 5, dtype=t.dtype),
        "count_nonzero": lambda: torch.count_nonzero(t), "topk": lambda: t.topk(1),
        "tril": lambda: torch.tril(t), "triu": lambda: torch.triu(t),
        "trace": lambda: torch.trace(t),
        "masked_fill": lambda: t.masked_fill(torch.tensor([[True, False], [False, True]]), 7),
        "cummax": lambda: torch.cummax(t, 0), "cummin": lambda: torch.cummin(t, 0),
        "median": lambda: t.median(), "nanmedian": lambda: torch.nanmedian(t),
        "kthvalue": lambda: torch.kthvalue(t, 1),
        "mode": lambda: torch.mode(t),
    }
    with pytest.raises(NotImplementedError, match="not implemented for 'UInt32'"):
        torch_ops[op]()
    with pytest.raises(NotImplementedError, match="not implemented for 'UInt32'"):
        _REFUSED[op](_wide("uint32"))


@pytest.mark.parametrize("dtype", WIDE)
def test_wide_unsigned_ops_torch_has_still_work(dtype):
    x = _wide(dtype)
    np.testing.assert_array_equal(x.flip(0).numpy(), [[2, 5], [3, 1]])
    assert x.flip(0).dtype == np.dtype(dtype)
    assert x.sum().item() == 11 and x.sum().dtype == minidl.int64
    np.testing.assert_array_equal(minidl.sort(x).values.numpy(), [[1, 3], [2, 5]])
    # with a float operand the maximum is taken in float, as torch's
    f = minidl.tensor([[1.5, 0.5], [9.0, 0.0]])
    for got in (minidl.max(x, f), x.max(f), minidl.maximum(x, f), x.clamp(f)):
        assert got.dtype == minidl.float32
    np.testing.assert_array_equal(x.max(f).numpy(), [[3.0, 1.0], [9.0, 5.0]])
    # uint8 keeps every op
    u8 = minidl.tensor([[3, 1], [2, 5]], dtype=minidl.uint8)
    assert u8.max().item() == 5 and u8.argmax().item() == 3
    np.testing.assert_array_equal(u8.clamp(2, 4).numpy(), [[3, 2], [2, 4]])
    np.testing.assert_array_equal(minidl.arange(3, dtype=minidl.uint8).numpy(), [0, 1, 2])
    assert minidl.count_nonzero(u8).item() == 4


# ---- in-place ops whose result the tensor cannot hold -----------------------------------------

@pytest.mark.parametrize("dtype", ["int16", "uint8", "bool"])
@pytest.mark.parametrize("name", ["sqrt_", "exp_", "sigmoid_", "reciprocal_", "tanh_", "log_"])
def test_float_in_place_ops_refuse_integer_and_bool_tensors(name, dtype):
    x = minidl.tensor([1, 2, 3]).to(getattr(minidl, dtype))
    before = x.numpy().copy()
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        getattr(x, name)()
    np.testing.assert_array_equal(x.numpy(), before)  # nothing written


def test_integer_results_refused_by_bool_tensors_in_place():
    with pytest.raises(RuntimeError, match="can't be cast"):
        minidl.tensor([True, False]).square_()
    with pytest.raises(RuntimeError, match="can't be cast"):
        minidl.tensor([True, False]).clamp_(min=0)
    x = minidl.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="can't be cast"):
        x.clamp_(min=1.5)  # a float result into an int64 tensor
    np.testing.assert_array_equal(x.numpy(), [1, 2, 3])
    x.masked_fill_(minidl.tensor([True, False, True]), 2.5)  # the value is cast, as torch
    np.testing.assert_array_equal(x.numpy(), [2, 2, 2])
    y = minidl.tensor([1, 2], dtype=minidl.int8)
    y.square_()
    assert y.dtype == minidl.int8


def test_float64_in_place_with_a_bool_or_complex_number_follows_the_op():
    x = minidl.tensor([1.0, 2.0], dtype=minidl.float64)
    with pytest.raises(RuntimeError, match="bool tensor is not supported"):
        x.sub_(True)
    with pytest.raises(RuntimeError, match="can't be cast"):
        x.add_(1j)
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    x.add_(True)
    np.testing.assert_array_equal(x.numpy(), [2.0, 3.0])


def test_in_place_result_type_parity():
    torch = pytest.importorskip("torch")
    for name in ("sqrt_", "exp_", "sigmoid_"):
        t, o = raises_like_torch(lambda: getattr(minidl.tensor([4], dtype=minidl.int16), name)(),
                                  lambda: getattr(torch.tensor([4], dtype=torch.int16), name)())
        assert "can't be cast to the desired output type" in t and \
            "can't be cast to the desired output type" in o
    raises_like_torch(lambda: minidl.tensor([True]).square_(),
                       lambda: torch.tensor([True]).square_())
    raises_like_torch(lambda: minidl.tensor([1.0], dtype=minidl.float64).sub_(True),
                       lambda: torch.tensor([1.0], dtype=torch.float64).sub_(True))


# ---- in-place ops refuse a result that broadcasts beyond the tensor ---------------------------

def test_in_place_result_of_a_wider_shape_is_refused():
    x = minidl.ones(3)
    for fn in (lambda: x.pow_(minidl.ones(1, 3)), lambda: x.clamp_(min=minidl.zeros(2, 3)),
               lambda: x.masked_fill_(minidl.ones(2, 3, dtype=minidl.bool), 1.0),
               lambda: x.atan2_(minidl.ones(1, 3))):
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            fn()
    np.testing.assert_array_equal(x.numpy(), np.ones(3))
    assert minidl.ones(2, 3).pow_(minidl.ones(3)).shape == (2, 3)


def test_in_place_wider_shape_parity():
    torch = pytest.importorskip("torch")
    raises_like_torch(lambda: minidl.ones(3).pow_(minidl.ones(1, 3)),
                       lambda: torch.ones(3).pow_(torch.ones(1, 3)))
