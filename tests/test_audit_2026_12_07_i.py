"""Audit of 2026-12-07 (i): quantization observers and fake quant, quantize_dynamic, sparse,
pytree, func, forward AD, saved-tensor hooks, torch-format files, nn.utils, lr schedulers
and DataLoader: silently wrong results, bad input not refused (or refused after changing
state), hangs and lost error reports."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import func as mfunc
from minidl.ao import quantization as mq


# ---- quantization observers and fake quant -------------------------------------------------
def test_observers_keep_eps_as_a_buffer_as_torch():
    obs = mq.MinMaxObserver(eps=0.5)
    assert list(obs.state_dict()) == ["eps", "min_val", "max_val"]
    assert obs.eps.numpy().tolist() == [0.5]
    hist = mq.HistogramObserver(bins=8)
    assert list(hist.state_dict()) == ["eps", "histogram", "min_val", "max_val"]
    # a loaded eps is the one used
    obs = mq.MinMaxObserver()
    obs(minidl.tensor([0.0, 0.0]))
    obs.load_state_dict({"eps": np.array([0.25], np.float32), "min_val": np.float32(0),
                         "max_val": np.float32(0)})
    assert obs.calculate_qparams()[0].item() == 0.25


def test_observer_state_dicts_load_both_ways_with_torch():
    torch = pytest.importorskip("torch")
    from torch.ao import quantization as tq

    x = np.linspace(-2, 3, 24, dtype=np.float32).reshape(4, 6)
    t_fq = tq.default_per_channel_weight_fake_quant()
    t_fq(torch.tensor(x))
    m_fq = mq.default_per_channel_weight_fake_quant()
    m_fq.load_state_dict({k: v.numpy() for k, v in t_fq.state_dict().items()})
    m_fq.disable_observer()
    t_fq.disable_observer()
    np.testing.assert_array_equal(m_fq(minidl.tensor(x)).numpy(), t_fq(torch.tensor(x)).numpy())
    back = tq.default_per_channel_weight_fake_quant()
    back.load_state_dict({k: torch.tensor(v.numpy()) for k, v in m_fq.state_dict().items()})
    np.testing.assert_array_equal(back.scale.numpy(), t_fq.scale.numpy())


def test_per_channel_observer_and_fake_quant_load_into_fresh_ones():
    x = minidl.tensor(np.linspace(-2, 3, 24, dtype=np.float32).reshape(4, 6))
    fq = mq.default_per_channel_weight_fake_quant()
    fq(x)
    fresh = mq.default_per_channel_weight_fake_quant()
    fresh.load_state_dict(fq.state_dict())
    assert fresh.scale.shape == (4,) and fresh.activation_post_process.min_val.shape == (4,)
    fresh.disable_observer()
    fq.disable_observer()
    np.testing.assert_array_equal(fresh(x).numpy(), fq(x).numpy())
    obs = mq.PerChannelMinMaxObserver(ch_axis=1)
    obs(x)
    again = mq.PerChannelMinMaxObserver(ch_axis=1)
    again.load_state_dict(obs.state_dict())
    np.testing.assert_array_equal(again.calculate_qparams()[0].numpy(),
                                  obs.calculate_qparams()[0].numpy())
    # a per-tensor observer's min is a 0-d buffer: a (4,) one is still refused
    with pytest.raises(RuntimeError, match="min_val"):
        mq.MinMaxObserver().load_state_dict({"eps": np.array([1e-7], np.float32),
                                             "min_val": np.zeros(4, np.float32),
                                             "max_val": np.zeros(4, np.float32)})


def test_observed_nan_and_inf_reach_the_qparams_instead_of_the_defaults():
    obs = mq.PerChannelMinMaxObserver(ch_axis=1)
    obs(minidl.tensor([[1.0, np.nan, 2.0]]))
    scale, zp = obs.calculate_qparams()
    assert scale.shape == (3,) and np.isnan(scale.numpy()[1])
    np.testing.assert_allclose(scale.numpy()[[0, 2]], [1.0 / 255, 2.0 / 255], rtol=1e-6)
    obs = mq.MinMaxObserver()
    obs(minidl.tensor([1.0, np.inf]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "must run observer" warning: it has run
        scale, zp = obs.calculate_qparams()
    assert scale.item() == np.inf and zp.item() == 0


def test_observed_nan_and_inf_match_torch():
    torch = pytest.importorskip("torch")
    from torch.ao import quantization as tq

    for data in ([1.0, np.nan, 2.0], [1.0, np.inf, 2.0], [-np.inf, 1.0]):
        for name in ("MinMaxObserver", "MovingAverageMinMaxObserver"):
            t_obs, m_obs = getattr(tq, name)(), getattr(mq, name)()
            t_obs(torch.tensor(data))
            m_obs(minidl.tensor(data))
            (ts, tz), (ms, mz) = t_obs.calculate_qparams(), m_obs.calculate_qparams()
            np.testing.assert_array_equal(ms.numpy(), ts.numpy())
            np.testing.assert_array_equal(mz.numpy(), tz.numpy())


def test_histogram_observer_refuses_nan_before_changing_its_histogram():
    obs = mq.HistogramObserver(bins=8)
    obs(minidl.tensor([0.0, 1.0, 2.0]))
    before = {k: v.numpy().copy() for k, v in obs.state_dict().items()}
    with pytest.raises(RuntimeError, match="NaN"):
        obs(minidl.tensor([1.0, np.nan]))
    for k, v in obs.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_per_channel_observer_names_a_changed_channel_count_and_keeps_its_state():
    obs = mq.PerChannelMinMaxObserver(ch_axis=1)
    obs(minidl.tensor(np.ones((2, 6), np.float32)))
    with pytest.raises(RuntimeError, match="3 channels along ch_axis 1.*has seen 6"):
        obs(minidl.tensor(np.zeros((2, 3), np.float32)))
    assert obs.min_val.shape == (6,) and obs.min_val.numpy().tolist() == [1.0] * 6
    with pytest.raises(IndexError, match="ch_axis 1 is out of range"):
        mq.PerChannelMinMaxObserver(ch_axis=1)(minidl.tensor([1.0, 2.0]))


def test_per_channel_float_qparams_observer_gives_torchs_qparams():
    # (this audit had it refused with a clear message; weight-only quantized embeddings, added
    # later, need it: float scales and zero points per channel, as torch's)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    m = mq.PerChannelMinMaxObserver(qscheme=minidl.per_channel_affine_float_qparams,
                                    dtype=minidl.quint8, ch_axis=0)
    m(minidl.tensor(x))
    scale, zero_point = m.calculate_qparams()
    assert zero_point.dtype == minidl.float32
    torch = pytest.importorskip("torch")
    o = torch.ao.quantization.PerChannelMinMaxObserver(
        qscheme=torch.per_channel_affine_float_qparams, dtype=torch.quint8, ch_axis=0)
    o(torch.tensor(x))
    ts, tz = o.calculate_qparams()
    np.testing.assert_allclose(scale.numpy(), ts.numpy(), rtol=1e-6)
    np.testing.assert_allclose(zero_point.numpy(), tz.numpy(), rtol=1e-6)


# ---- quantize_dynamic ----------------------------------------------------------------------
def _two_linears():
    minidl.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 2)))


def _quantized(module):
    return "quantized" in type(module).__module__


def test_quantize_dynamic_takes_submodule_names_and_dicts_as_torch():
    q = mq.quantize_dynamic(_two_linears(), {"1"})
    assert not _quantized(q[0]) and _quantized(q[1][0])
    q = mq.quantize_dynamic(_two_linears(), {"0"})
    assert _quantized(q[0]) and not _quantized(q[1][0])
    q = mq.quantize_dynamic(_two_linears(), {nn.Linear: mq.default_dynamic_qconfig})
    assert _quantized(q[0]) and _quantized(q[1][0])
    q = mq.quantize_dynamic(_two_linears(), {nn.Sequential})  # a container's Linears
    assert _quantized(q[0]) and _quantized(q[1][0])
    q = mq.quantize_dynamic(_two_linears(), {"1": mq.default_dynamic_qconfig, nn.Linear: None})
    assert not _quantized(q[0]) and not _quantized(q[1][0])
    model = _two_linears()
    model[0].qconfig = None  # a module's own qconfig wins
    q = mq.quantize_dynamic(model, {nn.Linear})
    assert not _quantized(q[0]) and _quantized(q[1][0])
    with pytest.raises(ValueError, match=r"\['zz'\].*not submodules"):
        mq.quantize_dynamic(_two_linears(), {"zz"})
    with pytest.raises(NotImplementedError, match="ReLU"):
        mq.quantize_dynamic(_two_linears(), {nn.ReLU})


def test_quantize_dynamic_by_name_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.ao import quantization as tq

    torch.manual_seed(0)
    t_model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Sequential(
        torch.nn.Linear(2, 2)))
    m_model = _two_linears()
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_q = tq.quantize_dynamic(t_model, {"1"})
    m_q = mq.quantize_dynamic(m_model, {"1"})
    np.testing.assert_allclose(m_q(minidl.tensor(x)).numpy(),
                               t_q(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


# ---- minidl.func ---------------------------------------------------------------------------
def test_vmap_over_an_empty_batch_gives_empty_outputs():
    out = mfunc.vmap(lambda x: (x * 2, x.sum()))(minidl.zeros(0, 3))
    assert out[0].shape == (0, 3) and out[1].shape == (0,)
    out = mfunc.vmap(lambda x: x.sum(0), in_dims=1, out_dims=0)(minidl.zeros(4, 0))
    assert out.shape == (0,)


def test_vmap_refuses_an_in_place_change_of_an_unmapped_argument_before_writing():
    y = minidl.zeros(4)
    x = minidl.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    with pytest.raises(RuntimeError, match="argument 1 in place, which is not mapped"):
        mfunc.vmap(lambda a, b: b.add_(a), in_dims=(0, None))(x, y)
    assert y.numpy().tolist() == [0.0] * 4 and y._version == 0
    y.add_(1)  # writeable again afterwards
    assert y.numpy().tolist() == [1.0] * 4
    # a mapped argument may still be changed in place, as in torch
    out = mfunc.vmap(lambda a: a.mul_(2))(x)
    assert out.numpy()[1, 1] == 10.0 and x.numpy()[1, 1] == 10.0


def test_vmap_takes_nested_and_dict_out_dims_as_torch():
    x = minidl.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    s, (a, b) = mfunc.vmap(lambda r: (r.sum(), (r * 2, r * 3)), out_dims=(0, (1, 0)))(x)
    assert s.shape == (3,) and a.shape == (4, 3) and b.shape == (3, 4)
    out = mfunc.vmap(lambda r: {"a": r}, out_dims={"a": 1})(x)
    np.testing.assert_array_equal(out["a"].numpy(), x.numpy().T)
    with pytest.raises(ValueError, match="not compatible with the structure"):
        mfunc.vmap(lambda r: r, out_dims=0.0)(x)


def test_vmap_nested_out_dims_parity_with_torch():
    torch = pytest.importorskip("torch")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)

    def f(m):
        return m.func.vmap(lambda r: (r.sum(), {"p": r * 2, "q": [r * 3]}),
                           out_dims=(0, {"p": 1, "q": [0]}))(m.tensor(x))
    (ts, td), (ms, md) = f(torch), f(minidl)
    np.testing.assert_array_equal(ms.numpy(), ts.numpy())
    np.testing.assert_array_equal(md["p"].numpy(), td["p"].numpy())
    np.testing.assert_array_equal(md["q"][0].numpy(), td["q"][0].numpy())


def test_vjp_and_jacrev_refuse_integer_and_bool_outputs_instead_of_zeros():
    x = minidl.ones(3)
    with pytest.raises(RuntimeError, match="floating-point or complex.*int64"):
        mfunc.vjp(lambda t: (t * 2).long(), x)
    with pytest.raises(RuntimeError, match="floating-point or complex.*bool"):
        mfunc.jacrev(lambda t: t > 0)(x)
    # a float output with an integer one beside it is refused too, as torch's
    with pytest.raises(RuntimeError, match="bool"):
        mfunc.vjp(lambda t: (t * 2, t > 0), x)


def test_stack_module_state_names_the_parameter_whose_shapes_differ():
    with pytest.raises(ValueError, match=r"'weight' has shape \(3, 3\) in model 1 but \(2, 3\)"):
        mfunc.stack_module_state([nn.Linear(3, 2), nn.Linear(3, 3)])


# ---- autograd.forward_ad -------------------------------------------------------------------
fwad = minidl.autograd.forward_ad


def test_unpack_dual_after_a_backward_that_freed_the_graph_is_refused_not_none():
    with fwad.dual_level():
        dual = fwad.make_dual(minidl.ones(2, 2), minidl.ones(2, 2))
        y = (dual * dual).sum()
        read_before = fwad.unpack_dual(y).tangent
        y.backward()
        assert fwad.unpack_dual(y).tangent.item() == read_before.item() == 8.0  # kept
        z = (dual.exp() * 1).sum()
        z.backward()
        with pytest.raises(RuntimeError, match="freed by a backward pass"):
            fwad.unpack_dual(z)


def test_unpack_dual_of_a_level_that_is_not_there_is_refused():
    with fwad.dual_level():
        dual = fwad.make_dual(minidl.ones(2), minidl.ones(2))
        with pytest.raises(RuntimeError, match="level 5"):
            fwad.unpack_dual(dual, level=5)
    assert fwad.unpack_dual(dual).tangent is None  # no level: no tangent, as torch's


def test_make_dual_of_a_tensor_with_a_tangent_is_refused_as_torch():
    with fwad.dual_level():
        dual = fwad.make_dual(minidl.ones(2), minidl.ones(2))
        for base in (dual, dual * 2):
            with pytest.raises(RuntimeError, match="already has a forward gradient"):
                fwad.make_dual(base, minidl.ones(2))
        assert fwad.unpack_dual(dual * 3).tangent.numpy().tolist() == [3.0, 3.0]


# ---- save / load ---------------------------------------------------------------------------
def test_dtypes_saved_as_values_round_trip_in_both_formats(tmp_path):
    state = {"dtype": minidl.float16, "more": [minidl.bfloat16, minidl.int64, minidl.bool]}
    for fmt, name in (("minidl", "c.npz"), ("torch", "c.pt")):
        minidl.save(state, tmp_path / name, format=fmt)
        back = minidl.load(tmp_path / name)
        assert back["dtype"] == minidl.float16
        assert back["more"] == [minidl.bfloat16, minidl.int64, minidl.bool]
    with pytest.raises(TypeError, match="more/0 is the dtype uint16"):
        minidl.save({"more": [np.dtype(np.uint16)]}, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_dtypes_saved_by_minidl_load_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    minidl.save({"dt": minidl.float16, "b": minidl.bfloat16}, tmp_path / "c.pt", format="torch")
    back = torch.load(tmp_path / "c.pt")  # weights_only=True
    assert back == {"dt": torch.float16, "b": torch.bfloat16}


def test_a_truncated_zip_checkpoint_is_named_as_truncated(tmp_path):
    path = tmp_path / "c.pt"
    minidl.save({"w": minidl.ones(100)}, path, format="torch")
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="c.pt.*truncated or corrupt"):
            minidl.load(path)


# ---- lr schedulers -------------------------------------------------------------------------
def test_sequential_lr_refuses_milestones_out_of_order_before_changing_the_lr():
    opt = minidl.optim.SGD([nn.Parameter(minidl.ones(1))], lr=0.1)
    sched = minidl.optim.lr_scheduler
    parts = [sched.ConstantLR(opt, factor=0.5, total_iters=2), sched.StepLR(opt, 2),
             sched.ExponentialLR(opt, 0.9)]
    lr = opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match=r"increasing order, got \[4, 2\]"):
        sched.SequentialLR(opt, parts, milestones=[4, 2])
    assert opt.param_groups[0]["lr"] == lr
    good = sched.SequentialLR(opt, parts, milestones=[2, 4])
    state = good.state_dict()
    state["_milestones"] = [4, 2]
    with pytest.raises(ValueError, match="increasing order"):
        good.load_state_dict(state)
    assert good._milestones == [2, 4]


# ---- DataLoader and default_collate ----------------------------------------------------------
def test_collate_promotes_mixed_dtypes_as_torch_stack():
    data = minidl.data
    batch = data.default_collate([minidl.ones(2), minidl.ones(2, dtype=minidl.int64)])
    assert batch.dtype == minidl.float32
    batch = data.default_collate([np.ones(2, np.float32), np.ones(2, np.int64)])
    assert batch.dtype == minidl.float32
    (batch,) = list(data.DataLoader([minidl.ones(2, dtype=minidl.int64), minidl.ones(2)],
                                    batch_size=2))
    assert batch.dtype == minidl.float32
    (batch,) = list(data.DataLoader([np.ones(2, np.uint8), np.ones(2, np.int8)], batch_size=2))
    assert batch.dtype == minidl.int16


def test_collate_mixed_dtypes_parity_with_torch():
    torch = pytest.importorskip("torch")
    for dtypes in [("float32", "int64"), ("uint8", "int8"), ("float16", "bfloat16"),
                   ("bool", "int8"), ("int32", "float16")]:
        ours = minidl.data.default_collate([minidl.ones(2, dtype=getattr(minidl, d))
                                            for d in dtypes])
        theirs = torch.utils.data.default_collate([torch.ones(2, dtype=getattr(torch, d))
                                                   for d in dtypes])
        assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1], dtypes


def test_collate_refuses_an_integer_beyond_int64_instead_of_an_object_tensor():
    with pytest.raises(ValueError, match="does not fit in int64"):
        minidl.data.default_collate([2 ** 70, 1])
    with pytest.raises(ValueError, match=r"2361183241434822606848.*dataset index 1"):
        list(minidl.data.DataLoader([1, 2 ** 71], batch_size=2))


def test_collate_keeps_the_samples_mapping_type():
    import collections

    samples = [collections.defaultdict(int, a=i) for i in range(3)]
    (batch,) = list(minidl.data.DataLoader(samples, batch_size=3))
    assert type(batch) is collections.defaultdict and batch["a"].numpy().tolist() == [0, 1, 2]
    assert batch["missing"] == 0  # its default factory kept
    batch = minidl.data.default_collate(samples)
    assert type(batch) is collections.defaultdict
    ordered = [collections.OrderedDict(b=i, a=i) for i in range(2)]
    (batch,) = list(minidl.data.DataLoader(ordered, batch_size=2))
    assert type(batch) is collections.OrderedDict and list(batch) == ["b", "a"]


# ---- sparse gradients with optimizers, GradScaler, in-place ops -------------------------------
def _sparse_embedding():
    emb = nn.Embedding(5, 3, sparse=True)
    emb.weight.data[...] = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    return emb


def test_grad_scaler_unscales_sparse_gradients_and_finds_their_inf():
    emb = _sparse_embedding()
    opt = minidl.optim.SGD(emb.parameters(), lr=0.1)
    scaler = minidl.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(emb(minidl.tensor([1, 1])).sum()).backward()
    scaler.unscale_(opt)
    np.testing.assert_allclose(emb.weight.grad.to_dense().numpy()[1], [2.0, 2.0, 2.0])
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(emb.weight.detach().numpy()[1], [0.1, 0.2, 0.3], rtol=1e-6)
    opt.zero_grad()
    scaler.scale(emb(minidl.tensor([2])).sum() * np.inf).backward()
    before = emb.weight.detach().numpy().copy()
    scaler.step(opt)  # skipped: an inf in the sparse gradient
    scaler.update()
    np.testing.assert_array_equal(emb.weight.detach().numpy(), before)
    assert scaler.get_scale() == 2.0


def test_grad_scaler_with_sparse_gradients_matches_torch():
    torch = pytest.importorskip("torch")
    w = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    results = []
    for m in (torch, minidl):
        emb = m.nn.Embedding(5, 3, sparse=True)
        with m.no_grad():
            emb.weight.copy_(m.tensor(w))
        opt = m.optim.SGD(emb.parameters(), lr=0.1, momentum=0.5)
        scaler = m.amp.GradScaler("cpu", init_scale=8.0)
        for idx in ([1, 1, 3], [0, 3]):
            opt.zero_grad()
            scaler.scale(emb(m.tensor(idx)).pow(2).sum()).backward()
            scaler.step(opt)
            scaler.update()
        results.append(emb.weight.detach().numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_sgd_momentum_takes_a_sparse_gradient_after_dense_ones_as_torch():
    torch = pytest.importorskip("torch")
    w = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    results = []
    for m in (torch, minidl):
        emb = m.nn.Embedding(5, 3, sparse=True)
        with m.no_grad():
            emb.weight.copy_(m.tensor(w))
        opt = m.optim.SGD(emb.parameters(), lr=0.1, momentum=0.9, dampening=0.1)
        for i in range(3):
            opt.zero_grad()
            if i == 0:  # a dense gradient first: a dense momentum buffer
                (m.ones(1, 3) @ emb.weight.t()).pow(2).sum().backward()
            else:
                emb(m.tensor([1, 3, 3])).pow(2).sum().backward()
            opt.step()
        results.append(emb.weight.detach().numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_sgd_refuses_a_dense_gradient_into_a_sparse_momentum_buffer_before_any_step():
    emb = _sparse_embedding()
    other = nn.Parameter(minidl.ones(2))
    opt = minidl.optim.SGD([other, emb.weight], lr=0.1, momentum=0.9)
    emb(minidl.tensor([1])).sum().backward()
    other.grad = minidl.ones(2)
    opt.step()
    opt.zero_grad()
    (minidl.ones(1, 3) @ emb.weight.t()).sum().backward()
    other.grad = minidl.ones(2)
    before = other.detach().numpy().copy(), emb.weight.detach().numpy().copy()
    with pytest.raises(RuntimeError, match=r"momentum buffer of the parameter of shape \(5, 3\) "
                                           "is sparse"):
        opt.step()
    np.testing.assert_array_equal(other.detach().numpy(), before[0])  # nothing moved
    np.testing.assert_array_equal(emb.weight.detach().numpy(), before[1])


def test_in_place_ops_on_a_sparse_tensor_name_the_op():
    s = minidl.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2))
    for op, name in ((lambda: s.add_(s), "in-place add"), (lambda: s.mul_(2), "in-place multiply"),
                     (lambda: s.copy_(s), "copy_"), (lambda: s.fill_(1.0), "fill")):
        with pytest.raises(NotImplementedError, match=f"{name}.*sparse COO") as info:
            op()
        assert "flags" not in str(info.value)
    np.testing.assert_array_equal(s.to_dense().numpy(), [[0.0, 1.0], [2.0, 0.0]])


def test_save_refuses_a_structured_array_it_could_not_load_back(tmp_path):
    record = np.zeros(2, dtype=[("a", "i4"), ("b", "f4")])
    with pytest.raises(TypeError, match="'o' has dtype"):
        minidl.save({"o": record}, tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()
    minidl.save({"o": np.ones(2, np.uint16)}, tmp_path / "c.npz")  # plain ones still load
    assert minidl.load(tmp_path / "c.npz")["o"].tolist() == [1, 1]


def test_fake_quantize_takes_bfloat16_as_a_floating_dtype():
    x = minidl.tensor([[-1.3, 0.2, 2.55], [0.05, -0.7, 10.0]]).bfloat16().requires_grad_(True)
    y = minidl.fake_quantize_per_tensor_affine(x, 0.1, 0, 0, 255)
    assert y.dtype == minidl.bfloat16
    (y.float() * minidl.arange(6.0).reshape(2, 3)).sum().backward()
    assert x.grad.float().numpy().tolist() == [[0.0, 1.0, 2.0], [3.0, 0.0, 5.0]]
    y = minidl.fake_quantize_per_channel_affine(x, minidl.tensor([0.1, 0.2, 0.3]),
                                                minidl.tensor([0, 1, 2]), 1, 0, 255)
    assert y.dtype == minidl.bfloat16
    with pytest.raises(RuntimeError, match="expected a floating tensor, got dtype int64"):
        minidl.fake_quantize_per_tensor_affine(minidl.tensor([1, 2]), 0.1, 0, 0, 255)


def test_fake_quantize_bfloat16_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[-1.3, 0.2, 2.55], [0.05, -0.7, 10.0]], np.float32)
    outs = [m.fake_quantize_per_tensor_affine(m.tensor(x).bfloat16(), 0.1, 3, 0, 255).float()
            for m in (torch, minidl)]
    np.testing.assert_array_equal(outs[1].numpy(), outs[0].numpy())


# ---- nn.utils -----------------------------------------------------------------------------
def test_weight_norm_of_a_1d_parameter_along_dim_0_takes_each_entry_alone():
    for make in (lambda m: nn.utils.weight_norm(m, name="bias"),
                 lambda m: nn.utils.parametrizations.weight_norm(m, name="bias")):
        lin = nn.Linear(4, 3)
        lin.bias.data[...] = [1.0, -0.5, 0.25]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            make(lin)
        g = lin.bias_g if hasattr(lin, "bias_g") else lin.parametrizations.bias.original0
        assert g.shape == (3,)
        np.testing.assert_allclose(g.detach().numpy(), [1.0, 0.5, 0.25])
        np.testing.assert_allclose(lin.bias.detach().numpy(), [1.0, -0.5, 0.25])


def test_weight_norm_of_a_1d_parameter_matches_torch():
    torch = pytest.importorskip("torch")
    b = np.array([1.0, -0.5, 0.25], np.float32)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    grads = []
    for m in (torch, minidl):
        lin = m.nn.Linear(4, 3)
        with m.no_grad():
            lin.weight.copy_(m.ones(3, 4))
            lin.bias.copy_(m.tensor(b))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            m.nn.utils.weight_norm(lin, name="bias")
        lin(m.tensor(x)).pow(2).sum().backward()
        grads.append((lin.bias_g.grad.numpy(), lin.bias_v.grad.numpy()))
    for ours, theirs in zip(grads[1], grads[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_scheduler_refuses_a_group_added_after_it_instead_of_leaving_it_unscheduled():
    sched = minidl.optim.lr_scheduler
    for make in (lambda o: sched.LambdaLR(o, lambda e: 0.5 ** e),
                 lambda o: sched.MultiplicativeLR(o, lambda e: 0.5)):
        opt = minidl.optim.SGD([nn.Parameter(minidl.ones(1))], lr=0.1)
        s = make(opt)
        opt.add_param_group({"params": [nn.Parameter(minidl.ones(1))], "lr": 0.5})
        opt.step()
        epoch, count = s.last_epoch, s._step_count
        with pytest.raises(ValueError, match="2 parameter groups.*lrs for 1"):
            s.step()
        assert (s.last_epoch, s._step_count) == (epoch, count)
        assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    # a multiplicative schedule that needs no base lr keeps working, as torch's
    opt = minidl.optim.SGD([nn.Parameter(minidl.ones(1))], lr=0.1)
    s = sched.StepLR(opt, 1, 0.5)
    opt.add_param_group({"params": [nn.Parameter(minidl.ones(1))], "lr": 0.5})
    opt.step()
    s.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.25]


def test_torch_files_with_conjugate_and_negative_views_load_their_values():
    torch = pytest.importorskip("torch")
    import tempfile
    import os

    from minidl.models.convert import read_torch_file

    for make in (lambda z: z.conj(), lambda z: z.conj().imag, lambda z: z):
        t = make(torch.tensor([1 + 2j, -3 - 0.5j]))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.pt")
            torch.save({"t": t}, path)
            ours = minidl.load(path)["t"]
            arrays = read_torch_file(path)["t"]
        expected = t.resolve_conj().resolve_neg().numpy()
        np.testing.assert_array_equal(ours.numpy(), expected)
        np.testing.assert_array_equal(arrays, expected)


def test_torch_files_with_dtypes_or_kinds_minidl_lacks_are_named_so():
    torch = pytest.importorskip("torch")
    import tempfile
    import os

    with tempfile.TemporaryDirectory() as d:
        for obj, what in ((torch.ones(2).to(torch.float8_e4m3fn), "dtype torch.float8_e4m3fn"),
                          (torch.empty(2, device="meta"), "a meta tensor")):
            path = os.path.join(d, "c.pt")
            torch.save({"w": obj}, path)
            with pytest.raises(Exception, match=what) as info:
                minidl.load(path)
            assert "only tensors and plain containers" not in str(info.value)


def test_per_channel_observers_reset_their_statistics_as_torch():
    for cls in (mq.PerChannelMinMaxObserver, mq.MovingAveragePerChannelMinMaxObserver):
        obs = cls(ch_axis=1)
        obs(minidl.tensor([[5.0, -5.0, 1.0]]))
        obs.reset_min_max_vals()
        assert obs.min_val.shape == (0,)
        obs(minidl.tensor([[0.5, -0.5]]))  # a new channel count is fine after a reset
        assert obs.min_val.numpy().tolist() == [0.5, -0.5]


def test_vmap_names_outputs_whose_shape_depends_on_the_sample():
    x = minidl.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    with pytest.raises(RuntimeError, match=r"output 0 has shape \(2,\) for sample 0 but \(1,\)"):
        mfunc.vmap(lambda r: r[r > 0])(x)


def test_vmap_checks_chunk_size_and_leaves_unbatched_non_tensor_outputs_alone():
    x = minidl.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="chunk_size"):
            mfunc.vmap(lambda r: r, chunk_size=bad)
    out, n = mfunc.vmap(lambda r: (r * 2, 3), out_dims=(0, None))(x)
    assert n == 3 and out.shape == (2, 3)
    with pytest.raises(ValueError, match="only Tensors"):
        mfunc.vmap(lambda r: (r * 2, 3), out_dims=(0, 0))(x)


def test_sparse_sum_of_a_bool_tensor_with_repeated_entries_counts_each_place_once():
    s = minidl.sparse_coo_tensor([[0, 1, 1, 0], [2, 0, 2, 2]], [True, False, True, True], (2, 3))
    assert minidl.sparse.sum(s).item() == 2 == int(s.to_dense().numpy().sum())
    counts = minidl.sparse_coo_tensor([[0, 0]], [2, 3], (1,))  # numbers still add up
    assert minidl.sparse.sum(counts).item() == 5


def test_prepare_without_any_qconfig_warns_as_torch():
    model = nn.Sequential(nn.Linear(2, 2))
    for prepare in (mq.prepare, mq.prepare_qat):
        with pytest.warns(UserWarning, match="None of the submodule got qconfig applied"):
            prepare(model)
    model.qconfig = mq.get_default_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mq.prepare(model)


def test_jacrev_and_jacfwd_check_chunk_size_and_randomness_as_torch():
    x = minidl.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match="chunk_size"):
        mfunc.jacrev(lambda t: t.sin(), chunk_size=0)
    with pytest.raises(RuntimeError, match="Only allowed values for randomness"):
        mfunc.jacfwd(lambda t: t.sin(), randomness="foo")
    with pytest.raises(RuntimeError, match="random operation while randomness='error'"):
        mfunc.jacfwd(lambda t: t * minidl.rand(2))(x)
    jac = mfunc.jacfwd(lambda t: t * minidl.rand(2), randomness="same")(x)
    assert jac.shape == (2, 2) and jac.numpy()[0, 1] == 0.0


def test_loader_batches_bfloat16_tensors_and_refuses_dates():
    samples = [minidl.ones(2, dtype=minidl.bfloat16), minidl.zeros(2, dtype=minidl.bfloat16)]
    (batch,) = list(minidl.data.DataLoader(samples, batch_size=2))
    assert batch.dtype == minidl.bfloat16 and batch.shape == (2, 2)
    ((x, y),) = list(minidl.data.DataLoader([(t, 1) for t in samples], batch_size=2))
    assert x.dtype == minidl.bfloat16 and y.numpy().tolist() == [1, 1]
    dates = [np.datetime64("2020-01-01"), np.datetime64("2020-01-02")]
    with pytest.raises(TypeError, match="batch must contain"):
        list(minidl.data.DataLoader(dates, batch_size=2))
    with pytest.raises(TypeError, match="batch must contain"):
        minidl.data.default_collate([np.array(dates)] * 2)
