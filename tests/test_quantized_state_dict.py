"""Quantized models' state dicts: torch's keys and layout, load_state_dict restoring them
exactly, minidl.save/load round trips (minidl's format and torch's, both ways), and the
errors for a float state dict given to a quantized model and the other way round."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.ao import quantization as tq

from _fbgemm_saturation import assert_cannot_saturate

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*reduce_range will be deprecated.*:UserWarning"),
              # torch.load's own _rebuild_qtensor reads storage.device of a typed storage
              pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")]


def _net(nn_, tq_):
    class Net(nn_.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq_.QuantStub(), tq_.DeQuantStub()
            self.fc1, self.relu, self.fc2 = nn_.Linear(8, 16), nn_.ReLU(), nn_.Linear(16, 3)

        def forward(self, x):
            return self.dequant(self.fc2(self.relu(self.fc1(self.quant(x)))))

    return Net()


def _qconfig(tq_):
    # torch's x86 default activations (reduce_range: [0, 127]), which keep fbgemm's int16
    # pair sums from saturating on CPUs without VNNI (tests/_fbgemm_saturation.py)
    return tq_.QConfig(activation=tq_.HistogramObserver.with_args(reduce_range=True),
                       weight=tq_.default_per_channel_weight_observer)


def _calibration(seed=0, n=64):
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def _minidl_converted(seed, state=None):
    minidl.manual_seed(seed)
    model = _net(nn, tq).eval()
    if state is not None:
        model.load_state_dict(state)
    model.qconfig = _qconfig(tq)
    prepared = tq.prepare(model)
    prepared(minidl.tensor(_calibration(seed)))
    return model, tq.convert(prepared)


def _torch_converted(torch, seed, state=None):
    tqq = torch.ao.quantization
    torch.manual_seed(seed)
    model = _net(torch.nn, tqq).eval()
    if state is not None:
        model.load_state_dict(state)
    model.qconfig = _qconfig(tqq)
    prepared = tqq.prepare(model)
    prepared(torch.from_numpy(_calibration(seed)))
    return model, tqq.convert(prepared)


def _dynamic(seed):
    minidl.manual_seed(seed)
    return tq.quantize_dynamic(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)),
                               {nn.Linear})


# ---- without torch ------------------------------------------------------------------------
def test_static_state_dict_layout():
    _, model = _minidl_converted(0)
    state = model.state_dict()
    assert list(state) == [
        "quant.scale", "quant.zero_point",
        "fc1.scale", "fc1.zero_point", "fc1._packed_params.dtype", "fc1._packed_params._packed_params",
        "fc2.scale", "fc2.zero_point", "fc2._packed_params.dtype", "fc2._packed_params._packed_params"]
    assert state["quant.scale"].shape == (1,) and state["quant.zero_point"].dtype == minidl.int64
    assert state["fc1.scale"].shape == () and state["fc1.scale"].dtype == minidl.float32
    assert state["fc1._packed_params.dtype"] is minidl.qint8
    weight, bias = state["fc1._packed_params._packed_params"]
    assert weight.is_quantized and weight.dtype is minidl.qint8 and weight.shape == (16, 8)
    assert weight.qscheme() is minidl.per_channel_affine and bias.shape == (16,)
    assert state._metadata["fc1"] == {"version": 3}
    assert state._metadata["fc1._packed_params"] == {"version": 3}


@pytest.mark.parametrize("which", ["static", "dynamic"])
def test_load_state_dict_restores_a_quantized_model_exactly(which):
    make = (lambda s: _minidl_converted(s)[1]) if which == "static" else _dynamic
    a, b = make(0), make(1)
    x = minidl.tensor(_calibration(5, 20)[:, :8 if which == "static" else 6])
    assert not np.array_equal(a(x).numpy(), b(x).numpy())
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    # a copy: changing the source afterwards does not reach the loaded model
    first = a.fc1 if which == "static" else a[0]
    first._weight._ints[...] = 0
    first._bias.data[...] = 0
    assert not np.array_equal(a(x).numpy(), b(x).numpy())


@pytest.mark.parametrize("which", ["static", "dynamic"])
@pytest.mark.parametrize("fmt", ["minidl", "torch"])
def test_save_and_load_round_trip(tmp_path, which, fmt):
    make = (lambda s: _minidl_converted(s)[1]) if which == "static" else _dynamic
    a, b = make(0), make(1)
    path = tmp_path / ("q.npz" if fmt == "minidl" else "q.pt")
    minidl.save(a.state_dict(), path, format=fmt)
    loaded = minidl.load(path)
    assert list(loaded) == list(a.state_dict())
    key = "fc2._packed_params._packed_params" if which == "static" else "2._packed_params._packed_params"
    w, w0 = loaded[key][0], a.state_dict()[key][0]
    assert w.dtype is w0.dtype and w.qscheme() is w0.qscheme()
    np.testing.assert_array_equal(w.int_repr().numpy(), w0.int_repr().numpy())
    b.load_state_dict(loaded)
    x = minidl.tensor(_calibration(6, 10)[:, :8 if which == "static" else 6])
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_per_tensor_and_per_channel_tensors_round_trip(tmp_path):
    x = minidl.tensor(np.linspace(-2, 2, 24, dtype=np.float32).reshape(4, 6))
    values = {"t": minidl.quantize_per_tensor(x, 0.02, 7, minidl.quint8),
              "c": minidl.quantize_per_channel(x, [0.1, 0.2, 0.3, 0.4], [0, 1, -1, 2], 0, minidl.qint8),
              "i": minidl.quantize_per_tensor(x, 0.001, -3, minidl.qint32), "d": minidl.quint8}
    for fmt in ("minidl", "torch"):
        path = tmp_path / f"v.{fmt}"
        minidl.save(values, path, format=fmt)
        back = minidl.load(path)
        assert back["d"] is minidl.quint8
        for k in "tci":
            assert back[k].dtype is values[k].dtype and repr(back[k]) == repr(values[k])
            np.testing.assert_array_equal(back[k].int_repr().numpy(), values[k].int_repr().numpy())


def test_float_state_dict_into_a_quantized_model_names_the_key():
    float_model, quantized = _minidl_converted(0)
    before = quantized.state_dict()["fc1._packed_params._packed_params"][0].int_repr().numpy()
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"fc1\.weight is a float weight, but fc1 is a "
                                               r"quantized Linear"):
            quantized.load_state_dict(float_model.state_dict(), strict=strict)
    after = quantized.state_dict()["fc1._packed_params._packed_params"][0].int_repr().numpy()
    np.testing.assert_array_equal(before, after)


def test_quantized_state_dict_into_a_float_model_names_the_key():
    float_model, quantized = _minidl_converted(0)
    with pytest.raises(RuntimeError, match=r"fc1\._packed_params\._packed_params, "
                                           r"fc2\._packed_params\._packed_params hold quantized "
                                           r"weights where the model has float ones \(fc1\.weight"):
        float_model.load_state_dict(quantized.state_dict())
    state = float_model.state_dict()
    state["fc1.weight"] = quantized.state_dict()["fc1._packed_params._packed_params"][0]
    with pytest.raises(RuntimeError, match=r"quantized tensor \(minidl\.qint8\) for the float "
                                           r"parameter 'fc1\.weight'"):
        float_model.load_state_dict(state)


def test_bad_values_name_the_key_and_change_nothing():
    _, a = _minidl_converted(0)
    _, b = _minidl_converted(1)
    x = minidl.tensor(_calibration(3, 7))
    expected = b(x).numpy()
    good = a.state_dict()
    packed = "fc1._packed_params._packed_params"
    w, bias = good[packed]
    cases = [
        ({packed: (w.dequantize(), bias)}, TypeError, r"weight in 'fc1\._packed_params\._packed_params' "
                                                      r"must be a qint8 quantized tensor, got a Tensor of dtype float32"),
        ({packed: w}, TypeError, r"must be \(weight, bias\)"),
        ({packed: (w, minidl.tensor([1, 2]))}, TypeError, r"bias in 'fc1\._packed_params\._packed_params' must be a float"),
        ({packed: good["fc2._packed_params._packed_params"]}, ValueError,
         r"size mismatch for fc1\._packed_params\._packed_params: checkpoint weight \(3, 16\), model \(16, 8\)"),
        ({"fc1.scale": minidl.tensor([0.1, 0.2])}, TypeError, r"'fc1\.scale' must hold one number"),
        ({"fc1.scale": minidl.tensor(-1.0)}, TypeError, r"'fc1\.scale' is a scale and must be positive"),
        ({"quant.zero_point": minidl.tensor([300])}, TypeError, r"quant\.zero_point 300 is outside"),
        ({"fc2._packed_params.dtype": minidl.quint8}, TypeError, r"takes qint8 weights only"),
    ]
    for change, kind, message in cases:
        with pytest.raises(kind, match=message):
            b.load_state_dict({**good, **change})
        np.testing.assert_array_equal(b(x).numpy(), expected)
    with pytest.raises(RuntimeError, match=r"missing keys: fc2\.scale"):
        b.load_state_dict({k: v for k, v in good.items() if k != "fc2.scale"})
    np.testing.assert_array_equal(b(x).numpy(), expected)
    # the dynamic Linear here takes per-tensor weights only
    d = _dynamic(0)
    state = d.state_dict()
    state["0._packed_params._packed_params"] = (w, None)
    with pytest.raises(TypeError, match="quantized per channel"):
        d.load_state_dict(state)


def test_corrupt_quantized_tensor_in_a_file_names_the_file(tmp_path):
    w = minidl.quantize_per_tensor(minidl.tensor([1.0, 2.0]), 0.1, 0, minidl.qint8)
    path = tmp_path / "w.npz"
    minidl.save({"w": w}, path)
    import json
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    tree = json.loads(members["minidl-structure.json"])
    tree["dict"][0][1]["qtensor"]["scale"] = {"value": -1.0}
    members["minidl-structure.json"] = json.dumps(tree).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(ValueError, match=r"w\.npz.*scale must be positive"):
        minidl.load(path)


# ---- against torch ------------------------------------------------------------------------
def _same_float_weights(torch):
    t_float = _net(torch.nn, torch.ao.quantization)
    return t_float, {k: v.detach().numpy() for k, v in t_float.state_dict().items()}


def test_state_dict_keys_and_types_match_torch():
    torch = pytest.importorskip("torch")
    _, weights = _same_float_weights(torch)
    _, t_conv = _torch_converted(torch, 0, {k: torch.from_numpy(v) for k, v in weights.items()})
    _, m_conv = _minidl_converted(0, weights)
    t_state, m_state = t_conv.state_dict(), m_conv.state_dict()
    assert list(m_state) == list(t_state)
    assert dict(m_state._metadata) == dict(t_state._metadata)
    for k, tv in t_state.items():
        mv = m_state[k]
        if isinstance(tv, torch.Tensor):
            assert mv.shape == tuple(tv.shape) and np.dtype(mv.dtype).name == str(tv.dtype)[6:], k
            np.testing.assert_allclose(mv.numpy(), tv.numpy(), rtol=1e-6)
        elif isinstance(tv, tuple):
            (tw, tb), (mw, mb) = tv, mv
            assert repr(mw.qscheme())[7:] == repr(tw.qscheme())[6:]
            np.testing.assert_array_equal(mw.int_repr().numpy(), tw.int_repr().numpy())
            np.testing.assert_allclose(mw.q_per_channel_scales().numpy(),
                                       tw.q_per_channel_scales().numpy(), rtol=1e-12)
            np.testing.assert_array_equal(mb.numpy(), tb.detach().numpy())
        else:
            assert str(mv)[7:] == str(tv)[6:] == "qint8"
    t_dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(6, 5)))
    m_dyn = tq.quantize_dynamic(nn.Sequential(nn.Linear(6, 5)))
    assert list(m_dyn.state_dict()) == list(t_dyn.state_dict())
    assert dict(m_dyn.state_dict()._metadata) == dict(t_dyn.state_dict()._metadata)


def _check_same_outputs(model, x, mine, theirs, step):
    # the int32 sums are exact in both; a float32 product landing on the other side of a
    # rounding tie moves one output by one step, rarely. The inputs are scaled (by 0.7) to
    # stay where no Linear's input integers can saturate fbgemm's int16 pair sums on a CPU
    # without VNNI: past the calibrated range the converted modules give integers past 127
    assert_cannot_saturate(model, x)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=step * 1.0001)
    assert np.mean(mine == theirs) > 0.98


def test_torch_saved_quantized_state_dict_loads_into_minidl(tmp_path):
    torch = pytest.importorskip("torch")
    _, t_conv = _torch_converted(torch, 0)
    path = tmp_path / "torch_quantized.pt"
    torch.save(t_conv.state_dict(), path)
    _, m_conv = _minidl_converted(1)
    m_conv.load_state_dict(minidl.load(path))
    x = _calibration(9, 200) * np.float32(0.7)  # see _check_same_outputs
    mine, theirs = m_conv(minidl.tensor(x)).numpy(), t_conv(torch.from_numpy(x)).numpy()
    _check_same_outputs(m_conv, x, mine, theirs, t_conv.fc2.scale)
    # torch's state_dict itself (torch tensors, quantized ones too) loads as well
    _, m_direct = _minidl_converted(2)
    m_direct.load_state_dict(t_conv.state_dict())
    np.testing.assert_array_equal(m_direct(minidl.tensor(x)).numpy(), mine)
    # dynamic: bit for bit
    t_dyn = torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4)))
    torch.save(t_dyn.state_dict(), tmp_path / "dyn.pt")
    m_dyn = _dynamic(3)
    m_dyn.load_state_dict(minidl.load(tmp_path / "dyn.pt"))
    xd = _calibration(4, 30)[:, :6]
    np.testing.assert_array_equal(m_dyn(minidl.tensor(xd)).numpy(),
                                  t_dyn(torch.from_numpy(xd)).numpy())


def test_minidl_saved_quantized_state_dict_loads_into_torch(tmp_path):
    torch = pytest.importorskip("torch")
    _, m_conv = _minidl_converted(0)
    path = tmp_path / "minidl_quantized.pt"
    minidl.save(m_conv.state_dict(), path, format="torch")
    _, t_conv = _torch_converted(torch, 1)
    t_conv.load_state_dict(torch.load(path))  # weights_only=True
    x = _calibration(8, 200) * np.float32(0.7)
    _check_same_outputs(m_conv, x, m_conv(minidl.tensor(x)).numpy(),
                        t_conv(torch.from_numpy(x)).numpy(), m_conv.fc2.scale)
    m_dyn = _dynamic(0)
    minidl.save(m_dyn.state_dict(), tmp_path / "dyn.pt", format="torch")
    t_dyn = torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4)))
    t_dyn.load_state_dict(torch.load(tmp_path / "dyn.pt"))
    xd = _calibration(4, 30)[:, :6]
    np.testing.assert_array_equal(m_dyn(minidl.tensor(xd)).numpy(),
                                  t_dyn(torch.from_numpy(xd)).numpy())


def test_torch_file_with_a_quantized_tensor_that_does_not_fit_names_the_file(tmp_path):
    from minidl.ao.quantization.qtensor import QTensor

    # two rows, one per-channel scale: written as it is, refused when read back
    bad = QTensor(np.zeros((2, 3), np.int8), minidl.qint8, np.array([0.1]), np.array([0]), 0)
    path = tmp_path / "bad.pt"
    minidl.save({"w": bad}, path, format="torch")
    with pytest.raises(ValueError, match=r"bad\.pt.*expected 2 scales and zero points"):
        minidl.load(path)
    # a converter that reads plain tensors only refuses quantized ones by name
    from minidl.torch_file import read

    with pytest.raises(Exception, match="refusing to load torch._utils._rebuild_qtensor"):
        read(path)


def test_float_models_state_dict_metadata_is_torchs():
    """Each module's version in ``_metadata``, as torch's: 2 for the normalisation layers."""
    torch = pytest.importorskip("torch")

    def build(nn):
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.InstanceNorm2d(2),
                             nn.Flatten(), nn.LayerNorm(8), nn.Linear(8, 2))

    ours = build(minidl.nn).state_dict()._metadata
    theirs = build(torch.nn).state_dict()._metadata
    assert dict(ours) == dict(theirs)
