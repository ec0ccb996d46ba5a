"""minidl.ao.quantization: quantized tensors (rounding as torch's, to the bit), fake
quantization and its straight-through gradient, observers and their qparams, FakeQuantize,
the default qconfigs, and dynamic quantization of Linear layers."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.ao import quantization as mq
from minidl.ao import quantization as tq
from minidl.ao.nn.quantized.dynamic import choose_qparams

from _fbgemm_saturation import assert_cannot_saturate, requires_vnni

# torch 2.13 deprecates torch.ao.quantization and quantized tensor creation (in favour of
# torchao); the parity tests still compare against them
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*reduce_range will be deprecated.*:UserWarning")]

DTYPES = [("quint8", 0, 255), ("qint8", -128, 127), ("qint32", -2 ** 31, 2 ** 31 - 1)]


def _values(n=20001, seed=0):
    rng = np.random.default_rng(seed)
    ties = np.arange(-300, 301) / 2  # exact .5 multiples of scale 1 and 0.5
    return np.concatenate([rng.standard_normal(n) * 4, ties, ties * 0.37]).astype(np.float32)


def _torch():
    return pytest.importorskip("torch")


# ---- quantized tensors, without torch -----------------------------------------------------
@pytest.mark.parametrize("name,lo,hi", DTYPES)
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(name, lo, hi):
    x = _values()
    scale, zp = 0.05, (10 if name == "quint8" else -3)
    q = minidl.quantize_per_tensor(minidl.tensor(x), scale, zp, getattr(minidl, name))
    back = q.dequantize().numpy()
    inside = (x >= (lo - zp) * scale) & (x <= (hi - zp) * scale)
    # half a step, plus float32's rounding of x / scale and of the product back
    slack = 4 * np.finfo(np.float32).eps * np.abs(x)
    assert np.all((np.abs(back - x) <= scale / 2 + slack)[inside])
    assert np.all(back[x > (hi - zp) * scale] == np.float32((hi - zp) * np.float32(scale)))
    assert np.all(back[x < (lo - zp) * scale] == np.float32((lo - zp) * np.float32(scale)))
    assert q.int_repr().dtype == np.dtype({"quint8": np.uint8, "qint8": np.int8,
                                           "qint32": np.int32}[name])


def test_ties_round_half_to_even_after_the_zero_point():
    x = minidl.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    assert minidl.quantize_per_tensor(x, 1.0, 0, minidl.qint8).int_repr().tolist() == \
        [0, 2, 2, 0, -2, -2]
    # the zero point is added before rounding: 0.5 + 3 = 3.5 -> 4, 1.5 + 3 = 4.5 -> 4
    assert minidl.quantize_per_tensor(x, 1.0, 3, minidl.quint8).int_repr().tolist() == \
        [4, 4, 6, 2, 2, 0]


def test_quantized_tensor_answers_its_parameters():
    q = minidl.quantize_per_tensor(minidl.tensor([1.0, -2.0]), 0.5, 4, minidl.quint8)
    assert q.is_quantized and not minidl.tensor([1.0]).is_quantized
    assert (q.q_scale(), q.q_zero_point(), q.qscheme()) == (0.5, 4, minidl.per_tensor_affine)
    assert q.dtype is minidl.quint8 and repr(q.dtype) == "minidl.quint8"
    assert q.shape == (2,) and q.size() == (2,) and q.numel() == 2 and q.element_size() == 1
    assert q.clone().int_repr().tolist() == [6, 0]
    with pytest.raises(RuntimeError, match="expected a per-channel"):
        q.q_per_channel_scales()
    w = minidl.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    qc = minidl.quantize_per_channel(w, minidl.tensor([0.5, 2.0]), minidl.tensor([0, 1]), 0,
                                     minidl.qint8)
    assert qc.qscheme() is minidl.per_channel_affine and qc.q_per_channel_axis() == 0
    # row 1: 3/2 + 1 = 2.5 -> 2 and 5/2 + 1 = 3.5 -> 4 (half to even)
    assert qc.int_repr().tolist() == [[0, 2, 4], [2, 3, 4]]
    assert qc.dequantize().tolist() == [[0, 1, 2], [2, 4, 6]]
    assert qc.q_per_channel_scales().dtype == np.float64
    with pytest.raises(RuntimeError, match="expected a per-tensor"):
        qc.q_scale()


def test_ops_other_than_the_quantized_ones_refuse():
    q = minidl.quantize_per_tensor(minidl.tensor([1.0, 2.0]), 0.1, 0, minidl.quint8)
    for op in (lambda: q + q, lambda: minidl.exp(q), lambda: q.sum(), lambda: q.numpy(),
               lambda: q * 2, lambda: minidl.matmul(q, q)):
        with pytest.raises(NotImplementedError, match="quantized tensor.*dequantize"):
            op()


def test_shape_ops_keep_the_quantization():
    x = minidl.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    q = minidl.quantize_per_tensor(x, 0.1, 3, minidl.qint8)
    for op in (lambda t: t.reshape(3, 2), lambda t: t.view(-1), lambda t: t.t(),
               lambda t: t.transpose(0, 1), lambda t: t.permute(1, 0), lambda t: t.flatten(),
               lambda t: t[0], lambda t: t[:, 1:], lambda t: t.unsqueeze(0).squeeze(0),
               lambda t: t.contiguous()):
        r = op(q)
        assert r.is_quantized and (r.q_scale(), r.q_zero_point()) == (0.1, 3)
        np.testing.assert_array_equal(r.dequantize().numpy(), op(q.dequantize()).numpy())
    assert x.dequantize() is x
    qc = minidl.quantize_per_channel(x, minidl.tensor([0.1, 0.2]), minidl.tensor([0, 0]), 0,
                                     minidl.qint8)
    with pytest.raises(RuntimeError, match="per-tensor"):
        qc.reshape(3, 2)


def test_bad_arguments_name_what_did_not_fit():
    x = minidl.tensor([1.0])
    with pytest.raises(RuntimeError, match="zero_point 300 is above upper bound 255"):
        minidl.quantize_per_tensor(x, 0.1, 300, minidl.quint8)
    with pytest.raises(RuntimeError, match="zero_point -129 is below lower bound -128"):
        minidl.quantize_per_tensor(x, 0.1, -129, minidl.qint8)
    with pytest.raises(RuntimeError, match="dtype must be"):
        minidl.quantize_per_tensor(x, 0.1, 0, minidl.float32)
    with pytest.raises(ValueError, match="scale must be positive"):
        minidl.quantize_per_tensor(x, 0.0, 0, minidl.quint8)
    with pytest.raises(RuntimeError, match="floating tensor"):
        minidl.quantize_per_tensor(minidl.tensor([1]), 0.1, 0, minidl.quint8)
    with pytest.raises(IndexError, match="axis -1 is out of range"):  # torch refuses it too
        minidl.quantize_per_channel(minidl.zeros(2, 3), minidl.tensor([1.0] * 3),
                                    minidl.tensor([0] * 3), -1, minidl.qint8)
    with pytest.raises(RuntimeError, match="expected 2 scales"):
        minidl.quantize_per_channel(minidl.zeros(2, 3), minidl.tensor([1.0]), minidl.tensor([0]),
                                    0, minidl.qint8)


# ---- quantized tensors against torch ------------------------------------------------------
@pytest.mark.parametrize("name,lo,hi", DTYPES)
@pytest.mark.parametrize("scale,zp", [(0.1, 3), (0.37, 100), (0.013, 7), (1.0, 0), (0.5, 1)])
@pytest.mark.parametrize("n", [20001 + 601 * 2, 7])
def test_quantize_per_tensor_matches_torch_bit_for_bit(name, lo, hi, scale, zp, n):
    torch = _torch()
    x = _values()[:n]
    if name == "qint8":
        zp = min(zp, 127) - 20
    t = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, getattr(torch, name))
    m = minidl.quantize_per_tensor(minidl.tensor(x), scale, zp, getattr(minidl, name))
    np.testing.assert_array_equal(m.int_repr().numpy(), t.int_repr().numpy())
    np.testing.assert_array_equal(m.dequantize().numpy(), t.dequantize().numpy())
    assert (m.q_scale(), m.q_zero_point()) == (t.q_scale(), t.q_zero_point())


@pytest.mark.parametrize("name,lo,hi", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_quantize_per_channel_matches_torch_bit_for_bit(name, lo, hi, axis):
    torch = _torch()
    x = _values()[:3 * 5 * 401].reshape(3, 5, 401) if axis != 2 else _values()[:42].reshape(1, 6, 7)
    size = x.shape[axis]
    rng = np.random.default_rng(1)
    scales = rng.uniform(0.01, 0.5, size)
    zps = rng.integers(max(lo, -20), min(hi, 20) + 1, size)
    if name == "quint8":
        zps = np.abs(zps)
    t = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales),
                                   torch.from_numpy(zps), axis, getattr(torch, name))
    m = minidl.quantize_per_channel(minidl.tensor(x), minidl.tensor(scales, dtype=minidl.float64),
                                    minidl.tensor(zps), axis, getattr(minidl, name))
    np.testing.assert_array_equal(m.int_repr().numpy(), t.int_repr().numpy())
    np.testing.assert_array_equal(m.dequantize().numpy(), t.dequantize().numpy())
    np.testing.assert_array_equal(m.q_per_channel_scales().numpy(),
                                  t.q_per_channel_scales().numpy())
    assert m.q_per_channel_axis() == t.q_per_channel_axis()


def test_repr_matches_torch():
    torch = _torch()
    x = np.array([0.25, 0.75, -0.25, 1.25, 2.5, -2.5, 0.35, 100.0, -100.0], np.float32)
    t = torch.quantize_per_tensor(torch.from_numpy(x), 0.1, 3, torch.quint8)
    m = minidl.quantize_per_tensor(minidl.tensor(x), 0.1, 3, minidl.quint8)
    assert repr(m) == repr(t).replace("torch.", "minidl.")
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    t = torch.quantize_per_channel(torch.from_numpy(w), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
                                   torch.tensor([0, 1, -1]), 0, torch.qint8)
    m = minidl.quantize_per_channel(minidl.tensor(w), minidl.tensor([0.1, 0.2, 0.3], dtype=minidl.float64),
                                    minidl.tensor([0, 1, -1]), 0, minidl.qint8)
    assert repr(m) == repr(t).replace("torch.", "minidl.")


# ---- fake quantization ----------------------------------------------------------------------
def test_fake_quant_gradient_is_straight_through_inside_the_range():
    x = minidl.tensor([-10.0, -0.26, 0.0, 0.3, 1.24, 1.26, 10.0], requires_grad=True)
    y = minidl.fake_quantize_per_tensor_affine(x, 0.1, 2, 0, 14)  # range [-0.2, 1.2]
    assert np.allclose(y.detach().numpy(), [-0.2, -0.2, 0.0, 0.3, 1.2, 1.2, 1.2])
    y.backward(minidl.tensor([1.0, 2, 3, 4, 5, 6, 7]))
    # -0.26 rounds to -3 + 2 = -1 < 0: outside; 1.24 rounds to 12 + 2 = 14: inside
    assert x.grad.tolist() == [0, 0, 3, 4, 5, 0, 0]


def test_fake_quant_gradient_is_differentiable_again():
    x = minidl.tensor([0.3, 5.0], requires_grad=True)
    g = minidl.tensor([2.0, 2.0], requires_grad=True)
    y = minidl.fake_quantize_per_tensor_affine(x, 0.1, 0, 0, 20)
    (gx,) = minidl.autograd.grad(y, x, g, create_graph=True)
    assert gx.tolist() == [2.0, 0.0]
    (gg,) = minidl.autograd.grad(gx.sum(), g)
    assert gg.tolist() == [1.0, 0.0]


def test_fake_quant_bad_arguments():
    x = minidl.tensor([1.0])
    with pytest.raises(RuntimeError, match="quant_min"):
        minidl.fake_quantize_per_tensor_affine(x, 0.1, 0, 10, 5)
    with pytest.raises(RuntimeError, match="zero_point"):
        minidl.fake_quantize_per_tensor_affine(x, 0.1, 300, 0, 255)
    with pytest.raises(RuntimeError, match="expected 3 scales"):
        minidl.fake_quantize_per_channel_affine(minidl.zeros(3, 2), minidl.tensor([0.1]),
                                                minidl.tensor([0]), 0, 0, 255)


@pytest.mark.parametrize("scale,zp,qmin,qmax", [(0.1, 3, 0, 255), (0.37, 0, -128, 127),
                                                (0.013, 7, 0, 15), (1.0, 0, -8, 7)])
def test_fake_quant_per_tensor_matches_torch_forward_and_backward(scale, zp, qmin, qmax):
    torch = _torch()
    x = _values(3001)
    g = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.fake_quantize_per_tensor_affine(tx, scale, zp, qmin, qmax)
    ty.backward(torch.from_numpy(g))
    mx = minidl.tensor(x, requires_grad=True)
    my = minidl.fake_quantize_per_tensor_affine(mx, scale, zp, qmin, qmax)
    my.backward(minidl.tensor(g))
    np.testing.assert_array_equal(my.detach().numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())


@pytest.mark.parametrize("axis", [0, 1])
def test_fake_quant_per_channel_matches_torch_forward_and_backward(axis):
    torch = _torch()
    x = _values(3001)[:4 * 900].reshape(4, 900)
    size = x.shape[axis]
    rng = np.random.default_rng(3)
    scales = rng.uniform(0.01, 0.5, size).astype(np.float32)
    zps = rng.integers(-10, 10, size).astype(np.int32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.fake_quantize_per_channel_affine(tx, torch.from_numpy(scales), torch.from_numpy(zps),
                                                axis, -128, 127)
    ty.backward(torch.from_numpy(g))
    mx = minidl.tensor(x, requires_grad=True)
    my = minidl.fake_quantize_per_channel_affine(mx, minidl.tensor(scales), minidl.tensor(zps),
                                                 axis, -128, 127)
    my.backward(minidl.tensor(g))
    np.testing.assert_array_equal(my.detach().numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())


# ---- observers --------------------------------------------------------------------------------
def test_min_max_observer_affine_qparams_by_hand():
    obs = tq.MinMaxObserver()
    obs(minidl.tensor([-1.0, 0.5]))
    obs(minidl.tensor([3.0]))
    scale, zp = obs.calculate_qparams()
    assert np.isclose(scale.item(), 4.0 / 255) and zp.item() == round(1 / (4.0 / 255))
    sym = tq.MinMaxObserver(dtype=minidl.qint8, qscheme=minidl.per_tensor_symmetric)
    sym(minidl.tensor([-1.0, 3.0]))
    scale, zp = sym.calculate_qparams()
    assert np.isclose(scale.item(), 3.0 / 127.5) and zp.item() == 0
    with pytest.warns(UserWarning, match="must run observer"):
        assert tq.MinMaxObserver().calculate_qparams()[0].tolist() == [1.0]


OBSERVER_CASES = [
    ("MinMaxObserver", {}),
    ("MinMaxObserver", {"reduce_range": True}),
    ("MinMaxObserver", {"dtype": "qint8", "qscheme": "per_tensor_symmetric"}),
    ("MinMaxObserver", {"dtype": "quint8", "qscheme": "per_tensor_symmetric"}),
    ("MinMaxObserver", {"quant_min": 0, "quant_max": 15}),
    ("MinMaxObserver", {"quant_min": 0, "quant_max": 255, "reduce_range": True}),
    ("MovingAverageMinMaxObserver", {"averaging_constant": 0.3}),
    ("PerChannelMinMaxObserver", {"ch_axis": 1}),
    ("PerChannelMinMaxObserver", {"dtype": "qint8", "qscheme": "per_channel_symmetric"}),
    ("MovingAveragePerChannelMinMaxObserver", {"averaging_constant": 0.5, "ch_axis": 0}),
]


@pytest.mark.parametrize("cls,kwargs", OBSERVER_CASES)
def test_observers_match_torch(cls, kwargs):
    torch = _torch()

    def args(mod):
        return {k: getattr(mod, v) if isinstance(v, str) else v for k, v in kwargs.items()}

    t_obs = getattr(torch.ao.quantization, cls)(**args(torch))
    m_obs = getattr(tq, cls)(**args(minidl))
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = (rng.standard_normal((5, 6)) * rng.uniform(0.1, 3) + rng.uniform(-1, 1)).astype(np.float32)
        t_obs(torch.from_numpy(x))
        m_obs(minidl.tensor(x))
    np.testing.assert_array_equal(m_obs.min_val.numpy(), t_obs.min_val.numpy())
    np.testing.assert_array_equal(m_obs.max_val.numpy(), t_obs.max_val.numpy())
    assert (m_obs.quant_min, m_obs.quant_max) == (t_obs.quant_min, t_obs.quant_max)
    ts, tz = t_obs.calculate_qparams()
    ms, mz = m_obs.calculate_qparams()
    np.testing.assert_array_equal(ms.numpy(), ts.numpy())
    np.testing.assert_array_equal(mz.numpy(), tz.numpy())


@pytest.mark.parametrize("bins,kwargs", [
    (2048, {}), (256, {"reduce_range": True}),
    (512, {"dtype": "qint8", "qscheme": "per_tensor_symmetric"})])
def test_histogram_observer_matches_torch(bins, kwargs):
    torch = _torch()
    t_obs = torch.ao.quantization.HistogramObserver(
        bins=bins, **{k: getattr(torch, v) if isinstance(v, str) else v for k, v in kwargs.items()})
    m_obs = tq.HistogramObserver(
        bins=bins, **{k: getattr(minidl, v) if isinstance(v, str) else v for k, v in kwargs.items()})
    rng = np.random.default_rng(6)
    for i in range(4):  # widening ranges: the histogram is re-binned each time
        x = (rng.standard_normal(5000) * (1 + i) + 0.3 * i).astype(np.float32)
        x[0] = 10.0 * (i + 1)  # an outlier, which the search leaves out of the range
        t_obs(torch.from_numpy(x))
        m_obs(minidl.tensor(x))
        np.testing.assert_array_equal(m_obs.histogram.numpy(), t_obs.histogram.numpy())
        assert m_obs.min_val.item() == t_obs.min_val.item()
        assert m_obs.max_val.item() == t_obs.max_val.item()
    (ts, tz), (ms, mz) = t_obs.calculate_qparams(), m_obs.calculate_qparams()
    np.testing.assert_array_equal(ms.numpy(), ts.numpy())
    np.testing.assert_array_equal(mz.numpy(), tz.numpy())
    # the chosen range leaves the last outlier out: a finer scale than min/max's
    minmax = tq.MinMaxObserver(**{k: getattr(minidl, v) if isinstance(v, str) else v
                                  for k, v in kwargs.items()})
    minmax(minidl.tensor([m_obs.min_val.item(), m_obs.max_val.item()]))
    assert ms.item() < minmax.calculate_qparams()[0].item()


def test_histogram_observer_keeps_the_mass_when_the_range_widens():
    obs = tq.HistogramObserver(bins=64)
    obs(minidl.tensor(np.linspace(0, 1, 1000, dtype=np.float32)))
    hist = obs.histogram.numpy()
    assert hist.sum() == 1000 and np.all(np.abs(hist - 1000 / 64) <= 1)  # uniform
    obs(minidl.tensor(np.array([-1.0, 3.0], np.float32)))  # re-binned over [-1, 3]
    hist = obs.histogram.numpy()
    assert (obs.min_val.item(), obs.max_val.item()) == (-1.0, 3.0)
    assert np.isclose(hist.sum(), 1002)
    assert np.isclose(hist[16:32].sum(), 1000)  # [0, 1] is now bins 16..31
    scale, zp = obs.calculate_qparams()
    assert scale.item() > 0 and 0 <= zp.item() <= 255


# ---- FakeQuantize and qconfigs --------------------------------------------------------------
@pytest.mark.parametrize("which", ["activation", "weight"])
def test_fake_quantize_module_from_the_qat_qconfig_matches_torch(which):
    torch = _torch()
    # torch's version 0 (FakeQuantize); see get_default_qat_qconfig on version 1
    t_fq = getattr(torch.ao.quantization.get_default_qat_qconfig("x86", version=0), which)()
    m_fq = getattr(tq.get_default_qat_qconfig("x86"), which)()
    assert (m_fq.quant_min, m_fq.quant_max) == (t_fq.quant_min, t_fq.quant_max)
    assert repr(m_fq.qscheme) == repr(t_fq.qscheme).replace("torch.", "minidl.")
    rng = np.random.default_rng(5)
    for step in range(4):
        if step == 3:
            t_fq.disable_observer()
            m_fq.disable_observer()
        x = (rng.standard_normal((4, 8)) * 2).astype(np.float32)
        g = rng.standard_normal((4, 8)).astype(np.float32)
        tx = torch.from_numpy(x).requires_grad_()
        t_fq(tx).backward(torch.from_numpy(g))
        mx = minidl.tensor(x, requires_grad=True)
        my = m_fq(mx)
        my.backward(minidl.tensor(g))
        np.testing.assert_array_equal(m_fq.scale.numpy(), t_fq.scale.numpy())
        np.testing.assert_array_equal(m_fq.zero_point.numpy(), t_fq.zero_point.numpy())
        np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())
    m_fq.disable_fake_quant()
    x = minidl.tensor([0.123456])
    assert m_fq(x).tolist() == x.tolist()


def test_fake_quantize_forward_matches_torch_with_fixed_qparams():
    torch = _torch()
    t_fq = torch.ao.quantization.FakeQuantize(quant_min=0, quant_max=255)
    m_fq = tq.FakeQuantize(quant_min=0, quant_max=255)
    x = _values(2001)
    np.testing.assert_array_equal(m_fq(minidl.tensor(x)).detach().numpy(),
                                  t_fq(torch.from_numpy(x)).detach().numpy())


def test_qat_fake_quantize_keeps_the_observers_reduced_range_while_training_as_torchs():
    """While training, the x86 QAT FakeQuantize clamps to its observer's [0, 127]
    (reduce_range), as torch's; only the converted modules clamp to quint8's [0, 255]."""
    torch = _torch()
    t_fq = torch.ao.quantization.get_default_qat_qconfig("x86", version=0).activation()
    m_fq = tq.get_default_qat_qconfig("x86").activation()
    assert (m_fq.quant_min, m_fq.quant_max) == (t_fq.quant_min, t_fq.quant_max) == (0, 127)
    rng = np.random.default_rng(4)
    small = rng.uniform(-1, 1, 256).astype(np.float32)
    t_fq(torch.from_numpy(small))
    m_fq(minidl.tensor(small))
    big = (rng.uniform(-1, 1, 256) * 4).astype(np.float32)  # past the observed range
    t_fq.disable_observer()
    m_fq.disable_observer()
    theirs = t_fq(torch.from_numpy(big)).detach().numpy()
    mine = m_fq(minidl.tensor(big)).detach().numpy()
    np.testing.assert_array_equal(mine, theirs)
    scale, zp = m_fq.scale.item(), m_fq.zero_point.item()
    ints = np.rint(mine / np.float32(scale)) + zp
    assert ints.max() == 127 and ints.min() == 0 and np.mean(ints == 127) > 0.2


def test_default_qconfigs():
    qc = tq.get_default_qconfig("x86")
    act, w = qc.activation(), qc.weight()
    assert isinstance(act, tq.HistogramObserver)
    assert act.reduce_range and (act.quant_min, act.quant_max) == (0, 127)
    assert w.dtype is minidl.qint8 and w.qscheme is minidl.per_channel_symmetric
    assert isinstance(tq.get_default_qat_qconfig("fbgemm").activation(), tq.FakeQuantize)
    assert tq.get_default_qconfig("qnnpack").weight().qscheme is minidl.per_tensor_symmetric
    with pytest.raises(AssertionError, match="not supported"):
        tq.get_default_qconfig("arm")
    with pytest.raises(ValueError, match="observer instance"):
        tq.QConfig(activation=tq.MinMaxObserver(), weight=tq.MinMaxObserver)
    assert minidl.quantization is tq


# ---- dynamic quantization ---------------------------------------------------------------------
def _linear(k, n, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, k)).astype(np.float32) * 0.1,
            rng.standard_normal(n).astype(np.float32))


def test_dynamic_linear_is_close_to_the_float_one():
    w, b = _linear(64, 10, 6)
    lin = nn.Linear(64, 10)
    lin.load_state_dict({"weight": w, "bias": b})
    model = nn.Sequential(lin, nn.ReLU())
    q = tq.quantize_dynamic(model, {nn.Linear}, dtype=minidl.qint8)
    assert type(model[0]) is nn.Linear  # a copy
    x = np.random.default_rng(7).standard_normal((5, 64)).astype(np.float32)
    y, yq = model(minidl.tensor(x)).detach().numpy(), q(minidl.tensor(x)).numpy()
    x_scale, _ = choose_qparams(x.min(), x.max(), 0, 127)
    w_scale = q[0].weight().q_scale()
    # each of the 64 products errs by at most |x| w_scale/2 + |w| x_scale/2 + the product of both
    bound = 64 * (np.abs(x).max() * w_scale / 2 + np.abs(w).max() * x_scale / 2 + x_scale * w_scale / 4)
    assert np.abs(y - yq).max() <= bound
    assert "DynamicQuantizedLinear(in_features=64, out_features=10, dtype=minidl.qint8" in repr(q)
    state = q.state_dict()
    assert state["0._packed_params.dtype"] is minidl.qint8
    qw, qb = state["0._packed_params._packed_params"]
    assert qw.is_quantized and np.array_equal(qb.numpy(), b)
    fresh = tq.quantize_dynamic(nn.Sequential(nn.Linear(64, 10), nn.ReLU()), {nn.Linear})
    fresh.load_state_dict(state)  # tests/test_quantized_state_dict.py checks more
    assert np.array_equal(fresh(minidl.tensor(x)).numpy(), yq)
    with pytest.raises(NotImplementedError, match=r"ReLU.*\(Linear, LSTM, GRU, Embedding and EmbeddingBag only\)"):
        tq.quantize_dynamic(model, {nn.ReLU})


def test_choose_qparams_by_hand():
    assert choose_qparams(0.0, 12.7, 0, 127) == (pytest.approx(0.1), 0)
    scale, zp = choose_qparams(-1.0, 1.0, 0, 255)
    assert scale == pytest.approx(2 / 255) and zp == 128  # 127.5: the max end rounds to even


@pytest.mark.parametrize("seed", range(8))
def test_quantize_dynamic_matches_torch_bit_for_bit(seed):
    torch = _torch()
    rng = np.random.default_rng(seed)
    k, n, batch = (int(v) for v in rng.integers(1, 300, 3))
    w, b = _linear(k, n, seed)
    x = (rng.standard_normal((batch % 16 + 1, k)) * rng.uniform(0.01, 5)
         + rng.uniform(-2, 2)).astype(np.float32)
    t_lin = torch.nn.Linear(k, n)
    t_lin.weight.data, t_lin.bias.data = torch.from_numpy(w), torch.from_numpy(b)
    t_q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(t_lin), {torch.nn.Linear},
                                                 dtype=torch.qint8)
    m_lin = nn.Linear(k, n)
    m_lin.load_state_dict({"weight": w, "bias": b})
    m_q = tq.quantize_dynamic(nn.Sequential(m_lin), {nn.Linear}, dtype=minidl.qint8)
    np.testing.assert_array_equal(m_q[0].weight().int_repr().numpy(),
                                  t_q[0].weight().int_repr().numpy())
    assert m_q[0].weight().q_scale() == t_q[0].weight().q_scale()
    np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(),
                                  t_q(torch.from_numpy(x)).detach().numpy())
    assert repr(m_q) == repr(t_q).replace("torch.", "minidl.")
    assert list(m_q.state_dict()) == list(t_q.state_dict())


def test_docs_code_blocks_run_in_order():
    import os

    from docblocks import python_blocks, run_blocks

    doc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "quantization.md")
    assert len(python_blocks(doc)) == 8
    run_blocks(doc, {"__name__": "quantization_doc"})  # checks the outputs its comments show, too


# ---- eager-mode quantization-aware training ---------------------------------------------------
def _qat_net(module, stubs):
    class Net(module.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = stubs.QuantStub(), stubs.DeQuantStub()
            self.fc1, self.relu, self.fc2 = module.Linear(8, 16), module.ReLU(), module.Linear(16, 3)

        def forward(self, x):
            return self.dequant(self.fc2(self.relu(self.fc1(self.quant(x)))))

    return Net()


def test_qat_trains_and_converts_to_an_integer_model_that_matches_its_fake_quant_forward():
    minidl.manual_seed(0)
    model = _qat_net(nn, tq)
    model.qconfig = tq.get_default_qat_qconfig("x86")
    prepared = tq.prepare_qat(model)
    assert isinstance(prepared.fc1, minidl.ao.nn.qat.Linear) and type(model.fc1) is nn.Linear
    assert isinstance(prepared.quant.activation_post_process, tq.FakeQuantize)
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((64, 8)).astype(np.float32))
    y = minidl.tensor(rng.integers(0, 3, 64))
    opt = minidl.optim.SGD(prepared.parameters(), lr=0.1)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(prepared(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    prepared.eval()
    prepared.apply(tq.disable_observer)
    fake = prepared(x).detach().numpy()
    converted = tq.convert(prepared)
    assert "QuantizedLinear(in_features=8, out_features=16" in repr(converted)
    assert converted.fc1.weight().qscheme() is minidl.per_channel_affine
    out = converted(x).numpy()
    # the same rounding in both: equal, but for the few values where a float32 sum and the
    # exact int32 one land on either side of a rounding boundary; in a hidden layer that one
    # step is carried through fc2's weights, a few output steps (torch's own converted net is
    # 1-2 steps off its fake-quant forward in a third of these outputs)
    step = converted.fc2.scale
    assert np.abs(out - fake).max() <= 16 * step
    assert np.mean(out == fake) > 0.97
    with pytest.raises(AssertionError, match="training mode"):
        tq.prepare_qat(model.eval())


def _qat_converted_pair(seed):
    torch = _torch()
    tqq = torch.ao.quantization
    torch.manual_seed(seed)
    t_model, m_model = _qat_net(torch.nn, tqq), _qat_net(nn, tq)
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    t_model.qconfig = tqq.get_default_qat_qconfig("x86", version=0)
    m_model.qconfig = tq.get_default_qat_qconfig("x86")
    t_prep, m_prep = tqq.prepare_qat(t_model), tq.prepare_qat(m_model)
    rng = np.random.default_rng(1)
    # the float32 products of F.linear and torch's GEMM may differ in the last bit, which
    # moves an observed min or max by an ulp, and rarely a rounding by one output step
    for _ in range(3):
        x = rng.standard_normal((32, 8)).astype(np.float32)
        mine = m_prep(minidl.tensor(x)).detach().numpy()
        theirs = t_prep(torch.from_numpy(x)).detach().numpy()
        step = t_prep.fc2.activation_post_process.scale.item()
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=step * 1.0001)
        assert np.mean(np.isclose(mine, theirs, rtol=1e-6, atol=0)) > 0.95
    for prep, mod in ((t_prep, tqq), (m_prep, tq)):
        prep.eval()
        prep.apply(mod.disable_observer)
    t_conv, m_conv = tqq.convert(t_prep), tq.convert(m_prep)
    assert np.isclose(m_conv.fc1.scale, t_conv.fc1.scale, rtol=1e-6, atol=0)
    assert abs(m_conv.fc1.zero_point - t_conv.fc1.zero_point) <= 1
    assert list(m_conv.state_dict()) == list(t_conv.state_dict())
    x = rng.standard_normal((64, 8)).astype(np.float32)
    return torch, (t_prep, m_prep), (t_conv, m_conv), x


def _int_and_fake(pair, prepared, x):
    import torch

    (t_conv, m_conv), (t_prep, m_prep) = pair, prepared
    return (m_conv(minidl.tensor(x)).numpy(), t_conv(torch.from_numpy(x)).numpy(),
            m_prep(minidl.tensor(x)).detach().numpy(), t_prep(torch.from_numpy(x)).detach().numpy())


@pytest.mark.parametrize("seed", range(4))
def test_qat_prepare_and_convert_match_torch(seed):
    _, prepared, converted, x = _qat_converted_pair(seed)
    m_conv = converted[1]
    step = m_conv.fc2.scale
    # x * 0.6 keeps every Linear's input integers where fbgemm's int16 pair sums cannot
    # saturate, VNNI or not: the int models give each other's outputs up to a scale's ulp,
    # and (in the rows that stay inside the trained range: nearly all) what the fake-quant
    # models simulated
    x_in = x * np.float32(0.6)
    assert_cannot_saturate(m_conv, x_in)
    mine, theirs, my_fake, their_fake = _int_and_fake(converted, prepared, x_in)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=step * 1.0001)
    assert np.mean(np.isclose(mine, theirs, rtol=1e-6, atol=0)) > 0.95
    rows = np.all(np.abs(my_fake - mine) <= step * 1.0001, axis=1)
    assert rows.mean() > 0.95
    assert np.mean(mine[rows] == my_fake[rows]) > 0.98
    # past it, training's FakeQuantize clamps to the observer's [0, 127] (reduce_range, as
    # torch's) while the converted modules, as torch's, clamp to quint8's full [0, 255]
    mine = m_conv(minidl.tensor(x * 1.5)).numpy()
    my_fake = prepared[1](minidl.tensor(x * 1.5)).detach().numpy()
    rows = np.all(np.abs(my_fake - mine) <= step * 1.0001, axis=1)
    assert 0.5 < rows.mean() < 1  # both kinds of rows occur in this input
    assert m_conv.fc1(m_conv.quant(minidl.tensor(x * 1.5))).int_repr().numpy().max() > 127


@requires_vnni
@pytest.mark.parametrize("seed", range(2))
def test_qat_converted_model_leaves_the_trained_range_as_torchs(seed):
    """Past the trained range the converted models of both leave their fake-quant models in
    the same places. The integers past 127 that this takes reach the next Linear, where
    fbgemm's int16 pair sums saturate on a CPU without VNNI (so torch's outputs there depend
    on the CPU)."""
    _, prepared, converted, x = _qat_converted_pair(seed)
    step = converted[1].fc2.scale
    mine, theirs, my_fake, their_fake = _int_and_fake(converted, prepared, x * 1.5)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=step * 1.0001)
    assert np.mean(np.isclose(mine, theirs, rtol=1e-6, atol=0)) > 0.95
    rows = np.all(np.abs(my_fake - mine) <= step * 1.0001, axis=1)
    their_rows = np.all(np.abs(their_fake - theirs) <= step * 1.0001, axis=1)
    assert 0.5 < rows.mean() < 1
    assert np.mean(rows == their_rows) > 0.95


def test_fake_quant_double_backward_by_gradgradcheck():
    from minidl.testing import gradgradcheck

    # points a quarter step from the rounding boundaries, so that finite differences of the
    # (piecewise constant) first gradient see the analytic zero; the g direction is linear
    x = minidl.tensor(np.array([-0.125, 0.025, 0.375, 2.025, -3.0]), requires_grad=True,
                      dtype=minidl.float64)
    assert gradgradcheck(lambda t: minidl.fake_quantize_per_tensor_affine(t, 0.1, 0, -10, 10),
                         [x], eps=1e-4)


def test_learnable_fake_quant_gradients_by_hand():
    x = minidl.tensor([0.26, -5.0, 5.0], requires_grad=True)
    scale = minidl.tensor([0.1], requires_grad=True)
    zp = minidl.tensor([2.0], requires_grad=True)
    y = minidl._fake_quantize_learnable_per_tensor_affine(x, scale, zp, 0, 10, 1.0)
    assert np.allclose(y.detach().numpy(), [0.3, -0.2, 0.8])
    y.backward(minidl.tensor([1.0, 1.0, 1.0]))
    assert x.grad.tolist() == [1.0, 0.0, 0.0]
    # inside: (0.3 - 0.26) / 0.1; below: 0 - 2; above: 10 - 2
    assert np.isclose(scale.grad.item(), 0.4 - 2 + 8, atol=1e-5)
    assert np.isclose(zp.grad.item(), -0.2)  # -scale for each of the two clamped values


@pytest.mark.parametrize("s,z,qmin,qmax,factor", [
    (0.1, 3.0, 0, 255, 1.0), (0.05, 2.6, 0, 127, 0.5), (0.07, 2.5, 0, 255, 1.0),
    (0.5, -3.4, -8, 7, 1.0), (0.5, -2.5, -8, 7, 1.0), (0.5, 9.0, -8, 7, 1.0)])
def test_learnable_fake_quant_matches_torch(s, z, qmin, qmax, factor):
    torch = _torch()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(3000) * 3).astype(np.float32)
    g = rng.standard_normal(3000).astype(np.float32)
    tx, ts, tz = (torch.tensor(v, requires_grad=True) for v in (x, [s], [z]))
    torch._fake_quantize_learnable_per_tensor_affine(tx, ts, tz, qmin, qmax, factor).backward(
        torch.from_numpy(g))
    mx, ms, mz = (minidl.tensor(v, requires_grad=True) for v in (x, [s], [z]))
    my = minidl._fake_quantize_learnable_per_tensor_affine(mx, ms, mz, qmin, qmax, factor)
    my.backward(minidl.tensor(g))
    t_out = torch._fake_quantize_learnable_per_tensor_affine(tx, ts, tz, qmin, qmax, factor)
    np.testing.assert_array_equal(my.detach().numpy(), t_out.detach().numpy())
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())
    # sums of 3000 float32 terms, in another order
    np.testing.assert_allclose(ms.grad.numpy(), ts.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(mz.grad.numpy(), tz.grad.numpy(), rtol=1e-5)


def _calibrate(model, batches):
    for x in batches:
        model(x)


def test_post_training_static_quantization_is_close_to_the_float_model():
    minidl.manual_seed(1)
    model = _qat_net(nn, tq).eval()
    model.qconfig = tq.get_default_qconfig("x86")
    rng = np.random.default_rng(2)
    batches = [minidl.tensor(rng.standard_normal((32, 8)).astype(np.float32)) for _ in range(4)]
    qmodel = tq.quantize(model, _calibrate, [batches])
    assert type(model.fc1) is nn.Linear and "QuantizedLinear" in repr(qmodel.fc1)
    x = batches[0]
    y, yq = model(x).detach().numpy(), qmodel(x).numpy()
    # a few output steps: the input, the hidden layer and the output each round once
    assert np.abs(y - yq).max() <= 4 * qmodel.fc2.scale


def test_post_training_static_quantization_matches_torch():
    torch = _torch()
    tqq = torch.ao.quantization
    torch.manual_seed(0)
    t_model, m_model = _qat_net(torch.nn, tqq).eval(), _qat_net(nn, tq).eval()
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    t_model.qconfig = tqq.get_default_qconfig("x86")  # HistogramObserver activations
    m_model.qconfig = tq.get_default_qconfig("x86")
    rng = np.random.default_rng(3)
    data = [rng.standard_normal((32, 8)).astype(np.float32) for _ in range(3)]
    t_q = tqq.quantize(t_model, lambda m, d: [m(torch.from_numpy(x)) for x in d], [data])
    m_q = tq.quantize(m_model, lambda m, d: [m(minidl.tensor(x)) for x in d], [data])
    np.testing.assert_array_equal(m_q.fc1.weight().int_repr().numpy(),
                                  t_q.fc1.weight().int_repr().numpy())
    assert np.isclose(m_q.fc2.scale, t_q.fc2.scale, rtol=1e-6, atol=0)
    # the float32 sums of calibration may move a scale by an ulp, and so a rounding by one
    # step; the calibration data keeps fbgemm's int16 pair sums from saturating, VNNI or not
    for x in data:
        assert_cannot_saturate(m_q, x)
        mine, theirs = m_q(minidl.tensor(x)).numpy(), t_q(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=m_q.fc2.scale * 1.0001)
        assert np.mean(np.isclose(mine, theirs, rtol=1e-6, atol=0)) > 0.95


def test_fake_quant_rounds_before_the_zero_point_quantize_after():
    # as torch's kernels: at an exact tie with an odd zero point they land one step apart
    x = minidl.tensor([0.25])
    assert minidl.quantize_per_tensor(x, 0.1, 3, minidl.quint8).int_repr().tolist() == [6]
    assert np.allclose(minidl.fake_quantize_per_tensor_affine(x, 0.1, 3, 0, 255).tolist(), [0.2])


def test_torch_nn_quantized_and_qat_names_are_the_ao_modules():
    import minidl.nn.qat as qat
    import minidl.nn.quantized as quantized
    import minidl.nn.quantized.dynamic as dynamic
    from minidl.nn.quantized import Linear

    assert quantized is minidl.ao.nn.quantized and minidl.nn.quantized is quantized
    assert dynamic is minidl.ao.nn.quantized.dynamic and qat is minidl.ao.nn.qat
    assert Linear is minidl.ao.nn.quantized.Linear and minidl.nn.qat.Linear is qat.Linear


# ---- quantized tensors: the device, float32 input only, item() and stride() as torch's ---------------
def test_a_quantized_tensors_device_is_a_device_name():
    q = minidl.quantize_per_tensor(minidl.ones(2), 0.1, 0, minidl.quint8)
    assert q.device.type == "cpu" and q.device.index is None
    assert repr(q.device) == "device(type='cpu')" and q.device == "cpu"


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_quantizing_takes_float32_only_as_torch(dtype):
    x = minidl.ones(2, 2).to(getattr(minidl, dtype))
    with pytest.raises(RuntimeError, match=f"float32.*got dtype {dtype}"):
        minidl.quantize_per_tensor(x, 0.1, 0, minidl.quint8)
    with pytest.raises(RuntimeError, match=f"float32.*got dtype {dtype}"):
        minidl.quantize_per_channel(x, minidl.tensor([0.1, 0.1]), minidl.tensor([0, 0]), 0,
                                    minidl.qint8)


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning")
def test_quantizing_refuses_the_dtypes_torch_refuses():
    torch = pytest.importorskip("torch")
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        outcomes = []
        for ns in (torch, minidl):
            try:
                ns.quantize_per_tensor(ns.ones(2).to(getattr(ns, dtype)), 0.1, 0, ns.quint8)
                outcomes.append("ok")
            except RuntimeError:
                outcomes.append("refused")
        assert outcomes[0] == outcomes[1], dtype


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning")
def test_quantized_item_and_stride_as_torchs():
    torch = pytest.importorskip("torch")
    x = np.linspace(-1, 1, 6).reshape(2, 3).astype(np.float32)
    ours = minidl.quantize_per_tensor(minidl.tensor(x), 0.01, 3, minidl.quint8)
    theirs = torch.quantize_per_tensor(torch.from_numpy(x), 0.01, 3, torch.quint8)
    for f in (lambda q: q.stride(), lambda q: q.t().stride(), lambda q: q[:, 1].stride(),
              lambda q: q.stride(-1), lambda q: q[0, 1].item(), lambda q: q[1, 2].item()):
        assert f(ours) == f(theirs)
    for q in (ours, theirs):
        with pytest.raises(RuntimeError, match="a Tensor with 6 elements cannot be converted"):
            q.item()
# ---- quantization observers and fake quant ----------------------------------------------------

def _two_linears():
    minidl.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 2)))


def _quantized(module):
    return "quantized" in type(module).__module__


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


# ---- quantize_dynamic -------------------------------------------------------------------------

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


# ---- fake quantize of bfloat16 ----------------------------------------------------------------

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


# ---- per-channel observers: reset_min_max_vals ------------------------------------------------

def test_per_channel_observers_reset_their_statistics_as_torch():
    for cls in (mq.PerChannelMinMaxObserver, mq.MovingAveragePerChannelMinMaxObserver):
        obs = cls(ch_axis=1)
        obs(minidl.tensor([[5.0, -5.0, 1.0]]))
        obs.reset_min_max_vals()
        assert obs.min_val.shape == (0,)
        obs(minidl.tensor([[0.5, -0.5]]))  # a new channel count is fine after a reset
        assert obs.min_val.numpy().tolist() == [0.5, -0.5]


# ---- prepare without any qconfig --------------------------------------------------------------

def test_prepare_without_any_qconfig_warns_as_torch():
    model = nn.Sequential(nn.Linear(2, 2))
    for prepare in (mq.prepare, mq.prepare_qat):
        with pytest.warns(UserWarning, match="None of the submodule got qconfig applied"):
            prepare(model)
    model.qconfig = mq.get_default_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mq.prepare(model)


# ---- quantization: a per-channel activation observer ------------------------------------------

def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_convert_refuses_a_per_channel_activation_observer():
    """A per-channel observer on activations (PerChannelMinMaxObserver as qconfig.activation)
    converted silently: the QuantStub kept the first channel's scale and zero point for every
    channel (and batch sizes other than the calibration's ran with them). torch fails there
    (its converted scale is many numbers); minidl now refuses, naming the module and the
    observer."""
    aq = minidl.ao.quantization
    stub = aq.QuantStub()
    model = minidl.nn.Sequential(stub).eval()
    model.qconfig = aq.QConfig(
        activation=aq.PerChannelMinMaxObserver.with_args(dtype=minidl.quint8),
        weight=aq.default_weight_observer)
    prepared = aq.prepare(model)
    prepared(minidl.tensor(_rand(2, 3).astype(np.float32)))
    with pytest.raises(RuntimeError, match="QuantStub.*PerChannelMinMaxObserver.*per channel"):
        aq.convert(prepared)
