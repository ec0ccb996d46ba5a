"""Audit of 2026-12-07 (d): what training scripts hit most (Module API, optimizers, data
loading, layers), each test failing before its fix."""
import collections
import copy
import pickle
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn


# ---- optimizers ---------------------------------------------------------------------------
def _trained(opt_cls, **kw):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    opt = opt_cls(model.parameters(), lr=0.1, **kw)
    model(minidl.ones(4, 2)).sum().backward()
    opt.step()
    return model, opt


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_optimizer_keeps_its_state_for_the_copied_parameters(how):
    model, opt = _trained(minidl.optim.Adam)
    if how == "deepcopy":
        model2, opt2 = copy.deepcopy((model, opt))
    else:
        model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    assert opt2.param_groups[0]["params"][0] is model2[0].weight
    assert list(opt2.state_dict()["state"]) == [0, 1, 2, 3]  # was empty: the state was lost
    np.testing.assert_array_equal(opt2.state[model2[0].weight]["exp_avg"],
                                  opt.state[model[0].weight]["exp_avg"])
    for m, o in ((model, opt), (model2, opt2)):  # both go on the same way
        o.zero_grad()
        m(minidl.ones(4, 2)).sum().backward()
        o.step()
    np.testing.assert_array_equal(model2[0].weight.numpy(), model[0].weight.numpy())


# ---- Module API ---------------------------------------------------------------------------
def test_module_to_an_integer_dtype_is_refused_and_keeps_the_weights():
    model = nn.Linear(3, 2)
    before = model.weight.numpy().copy()
    with pytest.raises(TypeError, match="floating point or complex"):
        model.to(minidl.int64)
    assert model.weight.dtype == minidl.float32
    np.testing.assert_array_equal(model.weight.numpy(), before)


def test_a_replaced_parameter_or_buffer_keeps_its_place():
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(minidl.ones(2, 2))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    bn = nn.BatchNorm1d(2)
    bn.running_mean = minidl.ones(2)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]


def test_replaced_parameter_order_matches_torch():
    torch = pytest.importorskip("torch")
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.weight = a.weight
    ours_a, ours_b = nn.Linear(2, 2), nn.Linear(2, 2)
    ours_b.weight = ours_a.weight
    assert list(nn.ModuleList([ours_a, ours_b]).state_dict()) == \
        list(torch.nn.ModuleList([a, b]).state_dict())


def test_load_state_dict_assign_puts_the_given_tensors_in_place():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    sd = {k: minidl.tensor(np.full(v.shape, 2.0), dtype=minidl.float64)
          for k, v in model.state_dict().items() if k != "1.num_batches_tracked"}
    result = model.load_state_dict(sd, strict=False, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert isinstance(model[0].weight, nn.Parameter) and model[0].weight.dtype == minidl.float64
    assert model[0].weight.data is sd["0.weight"].data  # the given array, not a copy
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    assert model[1].running_mean is sd["1.running_mean"]
    with pytest.raises(RuntimeError, match="size mismatch"):
        nn.Linear(2, 2).load_state_dict({"weight": minidl.ones(2, 3), "bias": minidl.ones(2)},
                                        assign=True)


def test_load_state_dict_assign_matches_torch():
    torch = pytest.importorskip("torch")
    theirs, ours = torch.nn.Linear(2, 2), nn.Linear(2, 2)
    w = np.arange(4.0).reshape(2, 2)
    theirs.load_state_dict({"weight": torch.tensor(w), "bias": torch.zeros(2).double()},
                           assign=True)
    ours.load_state_dict({"weight": minidl.tensor(w, dtype=minidl.float64),
                          "bias": minidl.zeros(2, dtype=minidl.float64)}, assign=True)
    assert str(theirs.weight.dtype).split(".")[-1] == str(ours.weight.dtype).split(".")[-1]
    x = np.ones((1, 2))
    np.testing.assert_allclose(ours(minidl.tensor(x, dtype=minidl.float64)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy())


def _hook_log(lib, nn_):
    log = []
    m = nn_.Linear(2, 2)
    h1 = m.register_forward_pre_hook(lambda mod, args: log.append("pre1"))
    m.register_forward_pre_hook(lambda mod, args: log.append("pre0"), prepend=True)
    m.register_forward_pre_hook(
        lambda mod, args, kwargs: log.append(("prekw", sorted(kwargs))), with_kwargs=True)
    m.register_forward_hook(lambda mod, args, out: log.append("fwd"))
    m.register_forward_hook(lambda mod, args, kwargs, out: log.append(("fwdkw", sorted(kwargs))),
                            with_kwargs=True)
    m(lib.ones(1, 2))
    h1.remove()
    m(input=lib.ones(1, 2))

    def swap(mod, args, kwargs):
        return (), {"input": kwargs["input"] * 0}
    m.register_forward_pre_hook(swap, with_kwargs=True)
    out = m(input=lib.ones(1, 2))
    log.append(bool((out == m.bias).all()))

    class Bad(nn_.Module):
        def forward(self, x):
            raise ValueError("boom")
    bad = Bad()
    bad.register_forward_hook(lambda mod, args, out: log.append(("always", out)),
                              always_call=True)
    bad.register_forward_hook(lambda mod, args, out: log.append("not"))
    with pytest.raises(ValueError, match="boom"):
        bad(lib.ones(1))
    return log


def test_forward_hooks_take_with_kwargs_always_call_and_prepend():
    log = _hook_log(minidl, nn)
    assert log == ["pre0", "pre1", ("prekw", []), "fwd", ("fwdkw", []),
                   "pre0", ("prekw", ["input"]), "fwd", ("fwdkw", ["input"]),
                   "pre0", ("prekw", ["input"]), "fwd", ("fwdkw", ["input"]), True,
                   ("always", None)]


def test_forward_hooks_with_kwargs_match_torch():
    torch = pytest.importorskip("torch")
    assert _hook_log(minidl, nn) == _hook_log(torch, torch.nn)


def test_a_pre_hook_with_kwargs_returning_a_wrong_value_is_a_runtime_error():
    m = nn.Linear(2, 2)
    m.register_forward_pre_hook(lambda mod, args, kwargs: args, with_kwargs=True)
    with pytest.raises(RuntimeError, match=r"tuple of \(new_args, new_kwargs\)"):
        m(minidl.ones(1, 2))


def test_a_removed_kwargs_hook_leaves_no_mark():
    m = nn.Linear(2, 2)
    handle = m.register_forward_hook(lambda mod, args, kwargs, out: None, with_kwargs=True,
                                     always_call=True)
    handle.remove()
    assert not m._forward_hooks and not m._forward_hooks_with_kwargs
    assert not m._forward_hooks_always_called


def test_named_parameters_and_buffers_take_remove_duplicate_and_recurse():
    lin = nn.BatchNorm1d(2)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == \
        ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in model.named_buffers(remove_duplicate=False)][-1] == \
        "2.num_batches_tracked"
    assert [n for n, _ in model.named_buffers()][-1] == "0.num_batches_tracked"
    assert list(model.named_buffers(recurse=False)) == []
    assert list(model.buffers(recurse=False)) == []
    assert len(list(lin.named_buffers(prefix="bn"))) == 3


def test_named_members_match_torch():
    torch = pytest.importorskip("torch")

    def names(nn_):
        a = nn_.Linear(2, 2)
        m = nn_.Sequential(a, nn_.BatchNorm1d(2), a)
        return ([n for n, _ in m.named_parameters(remove_duplicate=False)],
                [n for n, _ in m.named_buffers(prefix="p", remove_duplicate=False)],
                [n for n, _ in m[1].named_buffers(recurse=False)])
    assert names(nn) == names(torch.nn)


@pytest.mark.parametrize("layer", ["Linear", "ReLU", "Identity", "Dropout", "Flatten",
                                   "Sequential"])
def test_core_layers_take_their_input_by_torchs_keyword(layer):
    m = {"Linear": lambda: nn.Linear(2, 2), "Sequential": lambda: nn.Sequential(nn.ReLU())}.get(
        layer, getattr(nn, layer))().eval()
    x = minidl.ones(1, 2)
    np.testing.assert_array_equal(m(input=x).numpy(), m(x).numpy())



# ---- data loading -------------------------------------------------------------------------
Pair = collections.namedtuple("Pair", "image label")


class _Samples(minidl.data.Dataset):
    def __init__(self, make):
        self.make = make

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.make(i)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_batches_keep_named_tuples_and_nested_fields_types(num_workers):
    data = _Samples(lambda i: Pair(np.full(2, i, np.float32),
                                   {"meta": (i, i / 2, f"n{i}"), "ids": [i, i + 1]}))
    batch = next(iter(minidl.data.DataLoader(data, batch_size=3, num_workers=num_workers)))
    assert type(batch) is Pair and batch.image.shape == (3, 2)
    label, half, names = batch.label["meta"]  # was one float64 array: the ints made floats
    assert label.dtype == minidl.int64 and label.tolist() == [0, 1, 2]
    assert half.dtype == minidl.float64 and half.tolist() == [0.0, 0.5, 1.0]
    assert names == ["n0", "n1", "n2"]
    assert batch.label["ids"].shape == (3, 2)  # numbers of one kind still stack


def test_loader_nested_fields_match_torch():
    torch = pytest.importorskip("torch")
    items = [{"x": (i, np.float64(i)), "p": Pair(np.ones(2, np.float32) * i, i)}
             for i in range(3)]
    ours = next(iter(minidl.data.DataLoader(items, batch_size=3)))
    theirs = next(iter(torch.utils.data.DataLoader(items, batch_size=3)))
    assert type(ours["p"]) is type(theirs["p"]) is Pair
    for a, b in zip(list(ours["x"]) + list(ours["p"]), list(theirs["x"]) + list(theirs["p"])):
        assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1]
        np.testing.assert_array_equal(a.numpy(), b.numpy())



# ---- Embedding ----------------------------------------------------------------------------
_ROWS = np.random.default_rng(0).standard_normal((6, 3)) * 2
_IDX = np.array([[1, 2, 1], [5, 1, 2]])


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_embedding_max_norm_renormalises_the_looked_up_rows_in_place(norm_type):
    w = minidl.tensor(_ROWS, dtype=minidl.float64)
    y = nn.functional.embedding(minidl.tensor(_IDX), w, max_norm=1.5, norm_type=norm_type)
    norms = np.linalg.norm(w.numpy(), ord=norm_type, axis=1)
    assert np.all(norms[[1, 2, 5]] <= 1.5 + 1e-6)
    np.testing.assert_array_equal(w.numpy()[[0, 3, 4]], _ROWS[[0, 3, 4]])  # not looked up
    np.testing.assert_array_equal(y.numpy(), w.numpy()[_IDX])


def test_embedding_max_norm_and_scale_grad_by_freq_match_torch():
    torch = pytest.importorskip("torch")
    for kw in [dict(max_norm=1.0), dict(max_norm=1.5, norm_type=1.0),
               dict(scale_grad_by_freq=True, padding_idx=2), dict(max_norm=1.0, padding_idx=1)]:
        theirs = torch.nn.Embedding(6, 3, **kw)
        ours = nn.Embedding(6, 3, **kw)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(_ROWS))
        ours.weight.data[...] = _ROWS.astype(np.float32)
        weights = np.arange(18.0).reshape(2, 3, 3)
        yt = theirs(torch.tensor(_IDX))
        (yt * torch.tensor(weights, dtype=torch.float32)).sum().backward()
        yo = ours(minidl.tensor(_IDX))
        (yo * minidl.tensor(weights)).sum().backward()
        np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert repr(nn.Embedding(5, 3, max_norm=2.0, scale_grad_by_freq=True)) == \
        repr(torch.nn.Embedding(5, 3, max_norm=2.0, scale_grad_by_freq=True))


def _freq_scaled_second_gradient(lib, w_array):
    """d/dw sum(g^2), g the (frequency-scaled) gradient of sum(embedding(idx, w)^3)."""
    if lib is minidl:
        w = minidl.tensor(w_array, dtype=minidl.float64, requires_grad=True)
        grad = minidl.autograd.grad
    else:
        w = lib.tensor(w_array, requires_grad=True)
        grad = lib.autograd.grad
    y = lib.nn.functional.embedding(lib.tensor(_IDX), w, scale_grad_by_freq=True, padding_idx=5)
    g, = grad((y ** 3).sum(), w, create_graph=True)
    return g, grad((g * g).sum(), w)[0]


def test_embedding_scale_grad_by_freq_second_derivative_is_the_gradients_derivative():
    _, h = _freq_scaled_second_gradient(minidl, _ROWS)
    eps, numeric = 1e-6, np.zeros_like(_ROWS)
    for i in range(_ROWS.shape[0]):
        for j in range(_ROWS.shape[1]):
            up, down = _ROWS.copy(), _ROWS.copy()
            up[i, j] += eps
            down[i, j] -= eps
            g_up = _freq_scaled_second_gradient(minidl, up)[0].numpy()
            g_down = _freq_scaled_second_gradient(minidl, down)[0].numpy()
            numeric[i, j] = ((g_up ** 2).sum() - (g_down ** 2).sum()) / (2 * eps)
    np.testing.assert_allclose(h.numpy(), numeric, rtol=1e-6, atol=1e-5)


def test_embedding_scale_grad_by_freq_double_backward_matches_torch():
    torch = pytest.importorskip("torch")
    ours = _freq_scaled_second_gradient(minidl, _ROWS)
    theirs = _freq_scaled_second_gradient(torch, _ROWS)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-10)


def test_embedding_max_norm_lookup_passes_gradgradcheck():
    from minidl.testing import gradcheck, gradgradcheck

    w = minidl.tensor(_ROWS, dtype=minidl.float64, requires_grad=True)

    def f(weight):  # max_norm above every row's norm: renorming is a no-op, the op is smooth
        return nn.functional.embedding(minidl.tensor(_IDX), weight, max_norm=100.0)
    assert gradcheck(f, (w,)) and gradgradcheck(f, (w,))


def test_embedding_sparse_with_max_norm_matches_torch():
    torch = pytest.importorskip("torch")
    kw = dict(max_norm=1.0, padding_idx=2, sparse=True)
    theirs, ours = torch.nn.Embedding(6, 3, **kw), nn.Embedding(6, 3, **kw)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(_ROWS))
    ours.weight.data[...] = _ROWS.astype(np.float32)
    weights = np.arange(18.0).reshape(2, 3, 3)
    (theirs(torch.tensor(_IDX)) * torch.tensor(weights, dtype=torch.float32)).sum().backward()
    (ours(minidl.tensor(_IDX)) * minidl.tensor(weights)).sum().backward()
    assert ours.weight.grad.is_sparse and theirs.weight.grad.is_sparse
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.weight.grad.to_dense().numpy(),
                               theirs.weight.grad.to_dense().numpy(), rtol=1e-5, atol=1e-6)
    assert repr(ours) == repr(theirs)


def test_embedding_sparse_with_scale_grad_by_freq_is_refused_as_torch():
    with pytest.raises(ValueError, match="scale_grad_by_freq.*sparse"):
        nn.Embedding(6, 3, scale_grad_by_freq=True, sparse=True)(minidl.tensor(_IDX))


# ---- layers -------------------------------------------------------------------------------
def test_identity_ignores_its_constructor_arguments():
    layer = nn.Identity(54, unused_argument1=0.1, unused_argument2=False)
    x = minidl.ones(2, 3)
    assert layer(x) is x


@pytest.mark.parametrize("features", [(8, 0), (0, 4)])
def test_linear_with_zero_features_runs_forward_and_backward(features):
    from minidl.testing import gradcheck, gradgradcheck

    with pytest.warns(UserWarning, match="zero-element"):
        layer = nn.Linear(*features).double()
    x = minidl.tensor(np.random.default_rng(0).standard_normal((3, 2, features[0])),
                      dtype=minidl.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == (3, 2, features[1])
    y.sum().backward()
    assert x.grad.shape == x.shape and layer.weight.grad.shape == layer.weight.shape
    if features[1] == 0:
        assert not x.grad.numpy().any()
    else:
        np.testing.assert_array_equal(layer.weight.grad.numpy(), np.zeros((4, 0)))
        np.testing.assert_array_equal(layer.bias.grad.numpy(), np.full(4, 6.0))
    assert gradcheck(lambda a: nn.functional.linear(a, layer.weight, layer.bias), (x,))
    assert gradgradcheck(lambda a: nn.functional.linear(a, layer.weight, layer.bias) ** 2, (x,))


def test_adaptive_log_softmax_with_an_empty_cluster_projection_matches_torch():
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4, 8])  # div_value 4: 8 // 16 = 0
        ours = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4, 8])
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    target = np.array([0, 5, 9, 3])
    xt = torch.tensor(x, requires_grad=True)
    xo = minidl.tensor(x, requires_grad=True)
    out_t = theirs(xt, torch.tensor(target))
    out_o = ours(xo, minidl.tensor(target))
    out_t.loss.backward()
    out_o.loss.backward()
    np.testing.assert_allclose(out_o.output.numpy(), out_t.output.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---- activations of integer tensors -------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_of_an_integer_tensor_is_refused_instead_of_truncated(name):
    x = minidl.tensor([[1, 0, 1]])
    with pytest.raises(TypeError, match="floating-point"):
        getattr(nn.functional, name)(x, 1)  # was tensor([[0, 0, 0]]): probabilities as ints
    with pytest.raises(TypeError, match="floating-point"):
        getattr(nn, {"softmax": "Softmax", "log_softmax": "LogSoftmax"}[name])(1)(x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_softmax_family_takes_torchs_dtype_argument(name):
    torch = pytest.importorskip("torch")
    x = np.array([[1, 0, 3], [2, 2, -1]])
    for fn_ours, fn_theirs in [(getattr(nn.functional, name), getattr(torch.nn.functional, name))]:
        ours = fn_ours(minidl.tensor(x), 1, dtype=minidl.float64)
        theirs = fn_theirs(torch.tensor(x), 1, dtype=torch.float64)
        assert ours.dtype == minidl.float64
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    if name != "softmin":
        ours = getattr(minidl.tensor(x), name)(1, dtype=minidl.float32)
        theirs = getattr(torch.tensor(x), name)(1, dtype=torch.float32)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_functional_sigmoid_of_an_integer_tensor_gives_floats_as_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[1, -2, 3]])
    ours = nn.functional.sigmoid(minidl.tensor(x))  # was tensor([[0, 0, 0]])
    theirs = torch.nn.functional.sigmoid(torch.tensor(x))
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_functional_batch_norm_in_evaluation_needs_the_running_statistics():
    x = minidl.tensor(np.arange(6.0).reshape(2, 3))
    for fn in (nn.functional.batch_norm, nn.functional.batch_norm_relu):
        with pytest.raises(RuntimeError, match="running_mean must be defined in evaluation"):
            fn(x, None, None, training=False)  # normalised with the batch's own, silently
        with pytest.raises(RuntimeError, match="running_var must be defined"):
            fn(x, minidl.zeros(3), None)
    out = nn.functional.batch_norm(x, None, None, training=True)
    np.testing.assert_allclose(out.numpy(), [[-1, -1, -1], [1, 1, 1]], atol=1e-4)


class _Batched(minidl.data.Dataset):
    """A dataset that reads whole batches (a database, a file per batch): __getitems__."""

    def __init__(self):
        self.calls = []

    def __len__(self):
        return 6

    def __getitem__(self, i):
        raise AssertionError("the loader should call __getitems__")

    def __getitems__(self, indices):
        self.calls.append(list(indices))
        return [(np.full(2, i, np.float32), i) for i in indices]


@pytest.mark.parametrize("collate_fn", [None, list])
def test_loader_fetches_through_getitems_as_torch(collate_fn):
    data = _Batched()
    batches = list(minidl.data.DataLoader(data, batch_size=4, collate_fn=collate_fn))
    assert data.calls == [[0, 1, 2, 3], [4, 5]]
    if collate_fn is None:
        assert batches[1][1].tolist() == [4, 5]
    sub = minidl.data.Subset(data, [5, 3, 1])
    assert [s[1] for s in sub.__getitems__([0, 2])] == [5, 1]
    assert next(iter(minidl.data.DataLoader(sub, batch_size=3)))[1].tolist() == [5, 3, 1]


def test_stack_dataset_as_torch():
    torch = pytest.importorskip("torch")
    a, b = [np.float32(i) for i in range(4)], ["w", "x", "y", "z"]
    ours, theirs = minidl.data.StackDataset(a, b), torch.utils.data.StackDataset(a, b)
    assert len(ours) == len(theirs) == 4 and ours[2] == theirs[2]
    ours, theirs = minidl.data.StackDataset(v=a, s=b), torch.utils.data.StackDataset(v=a, s=b)
    assert ours[1] == theirs[1] and ours.__getitems__([0, 3]) == theirs.__getitems__([0, 3])
    batch = next(iter(minidl.data.DataLoader(ours, batch_size=4)))
    assert batch["s"] == b and batch["v"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="(?i)size mismatch"):
        minidl.data.StackDataset(a, b[:2])
    with pytest.raises(ValueError, match="both"):
        minidl.data.StackDataset(a, s=b)


# ---- interpolate(antialias=True) ----------------------------------------------------------
_IMAGE = np.random.default_rng(2).standard_normal((2, 3, 17, 11))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kw", [dict(size=(5, 4)), dict(size=(30, 3)),
                                dict(scale_factor=(0.25, 0.7)),
                                dict(scale_factor=0.37, recompute_scale_factor=True)])
def test_interpolate_antialias_matches_torch(mode, align_corners, kw):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(_IMAGE, requires_grad=True)
    yt = torch.nn.functional.interpolate(xt, mode=mode, align_corners=align_corners,
                                         antialias=True, **kw)
    (yt * torch.arange(yt.numel()).reshape(yt.shape)).sum().backward()
    xo = minidl.tensor(_IMAGE, dtype=minidl.float64, requires_grad=True)
    yo = nn.functional.interpolate(xo, mode=mode, align_corners=align_corners, antialias=True,
                                   **kw)
    (yo * minidl.arange(yo.numel()).reshape(yo.shape)).sum().backward()
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolate_antialias_gradcheck(mode):
    from minidl.testing import gradcheck, gradgradcheck

    x = minidl.tensor(_IMAGE[:1, :2, :7, :6], dtype=minidl.float64, requires_grad=True)

    def f(a):
        return nn.functional.interpolate(a, size=(3, 4), mode=mode, antialias=True)
    assert gradcheck(f, (x,)) and gradgradcheck(f, (x,))


def test_interpolate_antialias_shrinking_averages_the_covered_pixels():
    x = minidl.tensor(np.arange(8.0).reshape(1, 1, 1, 8), dtype=minidl.float64)
    y = nn.functional.interpolate(x, size=(1, 2), mode="bilinear", antialias=True)
    # each output's triangle filter is widened 4x: six inputs, weights 5 7 7 5 3 1 (/ 28)
    w = np.array([5, 7, 7, 5, 3, 1]) / 28.0
    np.testing.assert_allclose(y.numpy().ravel(), [w @ np.arange(6.0), w[::-1] @ np.arange(2.0, 8)])
    plain = nn.functional.interpolate(x, size=(1, 2), mode="bilinear")
    np.testing.assert_allclose(plain.numpy().ravel(), [1.5, 5.5])


def test_interpolate_antialias_is_refused_for_other_modes_as_torch():
    with pytest.raises(ValueError, match="restricted to bilinear and bicubic"):
        nn.functional.interpolate(minidl.tensor(_IMAGE), size=3, mode="nearest", antialias=True)
    with pytest.raises(ValueError, match="4-D"):
        nn.functional.interpolate(minidl.tensor(_IMAGE[0]), size=3, mode="linear",
                                  antialias=True)


@pytest.mark.parametrize("lengths", [[0.8, 0.2], [7, 3]])
def test_random_split_without_a_generator_follows_manual_seed(lengths):
    def split():
        minidl.manual_seed(42)  # a script's seeding at the top: the same split every run
        return [s.indices.tolist() for s in minidl.data.random_split(range(10), lengths)]
    first = split()
    assert split() == first  # was a fresh OS-entropy permutation each call
    assert sorted(first[0] + first[1]) == list(range(10))
    minidl.manual_seed(43)
    other = [s.indices.tolist() for s in minidl.data.random_split(range(10), lengths)]
    assert other != first


def test_registering_a_buffer_or_parameter_over_another_attribute_is_refused():
    lin = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="attribute 'weight' already exists"):
        lin.register_buffer("weight", minidl.ones(1))  # state_dict's 'weight' became it
    assert lin.state_dict()["weight"].shape == (2, 2) and "weight" not in lin._buffers
    lin.register_buffer("scale", minidl.ones(1))
    with pytest.raises(KeyError, match="attribute 'scale' already exists"):
        lin.register_parameter("scale", nn.Parameter(minidl.ones(1)))
    with pytest.raises(KeyError, match="already exists"):
        lin.register_parameter("in_features", nn.Parameter(minidl.ones(1)))
    lin.register_buffer("scale", minidl.zeros(1))  # the same kind again: replaced
    lin.register_parameter("bias", nn.Parameter(minidl.zeros(2)))
    assert list(lin.state_dict()) == ["weight", "bias", "scale"]


def test_registration_clashes_are_refused_as_torch():
    torch = pytest.importorskip("torch")
    for lib, nn_ in ((torch, torch.nn), (minidl, nn)):
        with pytest.raises(KeyError, match="attribute 'weight' already exists"):
            nn_.Linear(2, 2).register_buffer("weight", lib.ones(1))


def test_sequential_plus_sequential_as_torch():
    torch = pytest.importorskip("torch")
    a, b = nn.Linear(1, 2), nn.ReLU()
    both = nn.Sequential(a) + nn.Sequential(b)
    assert [type(m).__name__ for m in both] == \
        [type(m).__name__ for m in torch.nn.Sequential(torch.nn.Linear(1, 2)) +
         torch.nn.Sequential(torch.nn.ReLU())]
    assert both[0] is a and both[1] is b
    with pytest.raises(ValueError, match="only objects of Sequential"):
        nn.Sequential(a) + [b]
    seq = start = nn.Sequential(a)
    seq += nn.Sequential(b)
    assert seq is start and list(seq) == [a, b]
    assert list(nn.ModuleList([a]) + nn.ModuleList([b])) == [a, b]


def test_module_methods_take_torchs_keyword_names():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, lin)
    model.requires_grad_(requires_grad=False)  # was the keyword 'flag'
    assert not lin.weight.requires_grad
    assert len(list(model.modules(remove_duplicate=False))) == 3
    assert len(list(model.modules())) == 2
    with pytest.raises(AttributeError, match="strict"):
        model.set_submodule("2", nn.ReLU(), strict=True)
    model.set_submodule("1", nn.ReLU(), strict=True)
    model.set_submodule("2", nn.Tanh())
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Tanh"]


def test_module_method_signatures_cover_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    for name in ("modules", "requires_grad_", "set_submodule", "named_parameters",
                 "named_buffers", "buffers", "load_state_dict", "register_forward_hook",
                 "register_forward_pre_hook"):
        theirs = inspect.signature(getattr(torch.nn.Module, name)).parameters
        ours = inspect.signature(getattr(nn.Module, name)).parameters
        assert [p for p in theirs if p not in ours] == [], name


def test_new_paths_run_on_a_fake_gpu_as_on_the_cpu(monkeypatch, tmp_path):
    """Embedding's max_norm and scale_grad_by_freq, antialiased interpolation and a Linear of
    0 features on the (numpy-backed, CuPy-strict) GPU stand-in give the CPU's results."""
    import _fake_gpu
    from minidl import functional as mf
    from minidl.nn._functional import pooling

    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")

    def run(device):
        w = minidl.tensor(_ROWS, dtype=minidl.float64, device=device, requires_grad=True)
        with minidl.no_grad():
            nn.functional.embedding(minidl.tensor(_IDX, device=device), w, max_norm=1.5)
        y = nn.functional.embedding(minidl.tensor(_IDX, device=device), w,
                                    scale_grad_by_freq=True)
        (y * y).sum().backward()
        x = minidl.tensor(_IMAGE, dtype=minidl.float64, device=device, requires_grad=True)
        z = nn.functional.interpolate(x, size=(5, 4), mode="bicubic", antialias=True)
        (z * z).sum().backward()
        lin = nn.Linear(0, 3).double().to(device)
        out = lin(minidl.zeros(2, 0, dtype=minidl.float64, device=device))
        return [t.numpy() for t in (w, w.grad, z, x.grad, out)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = run("cpu")
        _fake_gpu.install(monkeypatch, lib)
        with _fake_gpu.strict(mf, pooling):
            gpu = run("cuda")
    for a, b in zip(gpu, cpu):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ---- nn.functional signatures -------------------------------------------------------------
def test_functional_signatures_cover_torchs_names_in_torchs_order():
    torch = pytest.importorskip("torch")
    import inspect

    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    for name in ("relu", "sigmoid", "tanh", "leaky_relu", "elu", "silu", "softmax",
                 "log_softmax", "batch_norm", "dropout", "mse_loss", "l1_loss", "smooth_l1_loss",
                 "binary_cross_entropy", "binary_cross_entropy_with_logits"):
        theirs = [p for p, v in inspect.signature(getattr(torch.nn.functional, name))
                  .parameters.items() if v.kind not in skip]
        ours = list(inspect.signature(getattr(nn.functional, name)).parameters)
        assert ours[:len(theirs)] == theirs, name
    for layer in ("CrossEntropyLoss", "NLLLoss", "SyncBatchNorm"):
        assert "input" in inspect.signature(getattr(nn, layer).forward).parameters


def test_legacy_size_average_and_reduce_and_loss_weights_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, (4, 3))
    t = (rng.random((4, 3)) > 0.5).astype(np.float64)
    w = rng.uniform(0.1, 2.0, (4, 3))
    cases = [
        ("binary_cross_entropy", (p, t), dict(size_average=False)),
        ("binary_cross_entropy", (p, t, w), dict(reduce=False)),
        ("binary_cross_entropy_with_logits", (p, t), dict(size_average=False,
                                                           pos_weight=w[0])),
        ("mse_loss", (p, t), dict(size_average=False)),
        ("l1_loss", (p, t), dict(reduce=False)),
        ("smooth_l1_loss", (p, t), dict(size_average=False, beta=0.3)),
    ] + [(name, (p, t), dict(reduction=r, weight=w)) for name in ("mse_loss", "l1_loss")
         for r in ("mean", "sum", "none")]
    for name, args, kw in cases:
        def conv(lib, v):
            return v if not isinstance(v, np.ndarray) else (
                lib.tensor(v) if lib is torch else minidl.tensor(v, dtype=minidl.float64))
        xt, xo = torch.tensor(args[0], requires_grad=True), minidl.tensor(
            args[0], dtype=minidl.float64, requires_grad=True)
        rest_t = [conv(torch, a) for a in args[1:]]
        rest_o = [conv(minidl, a) for a in args[1:]]
        yt = getattr(torch.nn.functional, name)(xt, *rest_t, **{k: conv(torch, v)
                                                                for k, v in kw.items()})
        yo = getattr(nn.functional, name)(xo, *rest_o, **{k: conv(minidl, v)
                                                           for k, v in kw.items()})
        yt.sum().backward()
        yo.sum().backward()
        np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    with pytest.raises(ValueError, match="same size"):
        nn.functional.mse_loss(minidl.tensor(p), minidl.tensor(t), weight=minidl.ones(3))


def test_weighted_mse_gradcheck():
    from minidl.testing import gradcheck, gradgradcheck

    rng = np.random.default_rng(4)
    x, t, w = (minidl.tensor(rng.standard_normal((3, 2)), dtype=minidl.float64,
                             requires_grad=True) for _ in range(3))
    for name in ("mse_loss", "l1_loss"):
        def f(a, b, c):
            return getattr(nn.functional, name)(a, b, weight=c)
        assert gradcheck(f, (x, t, w))
    assert gradgradcheck(lambda a, b, c: nn.functional.mse_loss(a, b, weight=c), (x, t, w))


def test_hardtanh_takes_torchs_deprecated_min_value_and_max_value():
    with pytest.warns(FutureWarning) as caught:
        layer = nn.Hardtanh(min_value=-2.0, max_value=0.5)
    assert [str(w.message).split("`")[1] for w in caught] == ["min_value", "max_value"]
    assert (layer.min_val, layer.max_val) == (-2.0, 0.5)
    np.testing.assert_array_equal(layer(minidl.tensor([-3.0, 0.0, 3.0])).numpy(),
                                  [-2.0, 0.0, 0.5])
