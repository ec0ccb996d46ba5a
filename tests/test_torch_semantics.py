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
