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


# ---- out= dtype rules -------------------------------------------------------------------------

INF, NAN = float("inf"), float("nan")


def _raises_like_torch(fn_m, fn_t, torch):
    with pytest.raises(RuntimeError) as theirs:
        fn_t()
    with pytest.raises(RuntimeError) as ours:
        fn_m()
    return str(theirs.value), str(ours.value)


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
        _raises_like_torch(lambda: bad(minidl), lambda: bad(torch), torch)


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
        t, o = _raises_like_torch(lambda: getattr(minidl.tensor([4], dtype=minidl.int16), name)(),
                                  lambda: getattr(torch.tensor([4], dtype=torch.int16), name)(),
                                  torch)
        assert "can't be cast to the desired output type" in t and \
            "can't be cast to the desired output type" in o
    _raises_like_torch(lambda: minidl.tensor([True]).square_(),
                       lambda: torch.tensor([True]).square_(), torch)
    _raises_like_torch(lambda: minidl.tensor([1.0], dtype=minidl.float64).sub_(True),
                       lambda: torch.tensor([1.0], dtype=torch.float64).sub_(True), torch)


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
    _raises_like_torch(lambda: minidl.ones(3).pow_(minidl.ones(1, 3)),
                       lambda: torch.ones(3).pow_(torch.ones(1, 3)), torch)
