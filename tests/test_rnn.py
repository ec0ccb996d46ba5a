"""nn.RNN / LSTM / GRU and their cells: PyTorch parity in float64 (outputs, final states and the
gradients of the input, the initial states and every parameter), gradient checks against
finite differences, parameter names, shapes and initialisation, bad input, pad_sequence."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.nn.rnn import Recurrence
from minidl.nn.utils.rnn import (
    PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence,
    unpack_sequence,
)
from minidl.nn.utils import rnn as mrnn
from minidl.testing import gradcheck
from helpers import both_raise, f64_tensor, load_from, same

import _fake_gpu

try:
    import torch
except ImportError:  # the parity tests skip, the rest still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
trnn = torch.nn.utils.rnn if torch is not None else None


def f64(a, requires_grad=True):
    return minidl.tensor(np.asarray(a), requires_grad=requires_grad, dtype="float64")


def _copy_torch_weights(tm, mm, dtype="float64"):
    mm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return mm.double() if dtype == "float64" else mm.float()


def _compare(mine, theirs, what, atol=1e-10, rtol=1e-9):
    np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), atol=atol, rtol=rtol,
                               err_msg=what)


def _parity(kind, batched=True, batch_first=False, with_state=True, L=5, N=3, I=4, H=6,
            dtype="float64", **kwargs):
    """float64 by default; float32 (``dtype``) runs the fused step kernels of the CPU backend,
    compared at float32's tolerances."""
    layers = kwargs.get("num_layers", 1)
    directions = 2 if kwargs.get("bidirectional") else 1
    tm = getattr(torch.nn, kind)(I, H, batch_first=batch_first, **kwargs)
    tm = tm.double() if dtype == "float64" else tm.float()
    mm = _copy_torch_weights(tm, getattr(nn, kind)(I, H, batch_first=batch_first, **kwargs), dtype)
    tol = {} if dtype == "float64" else dict(atol=2e-5, rtol=2e-4)

    def make(a, requires_grad=True):
        return minidl.tensor(np.asarray(a), requires_grad=requires_grad, dtype=dtype)

    def check(mine, theirs, what):
        _compare(mine, theirs, what, **tol)

    rng = np.random.default_rng(1)
    xshape = ((N, L, I) if batch_first else (L, N, I)) if batched else (L, I)
    widths = [kwargs.get("proj_size") or H] + ([H] if kind == "LSTM" else [])
    x = rng.standard_normal(xshape).astype(dtype)
    states = [rng.standard_normal((layers * directions, N, w) if batched else
                                  (layers * directions, w)).astype(dtype) for w in widths]
    tx, mx = torch.tensor(x, requires_grad=True), make(x)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    ms = [make(s) for s in states]
    if with_state:
        targ = tuple(ts) if kind == "LSTM" else ts[0]
        marg = tuple(ms) if kind == "LSTM" else ms[0]
        tout, tfinal = tm(tx, targ)
        mout, mfinal = mm(mx, marg)
    else:
        tout, tfinal = tm(tx)
        mout, mfinal = mm(mx)
    tfinal = list(tfinal) if kind == "LSTM" else [tfinal]
    mfinal = list(mfinal) if kind == "LSTM" else [mfinal]
    assert mout.shape == tuple(tout.shape)
    check(mout, tout, "output")
    for k, (a, b) in enumerate(zip(mfinal, tfinal)):
        assert a.shape == tuple(b.shape)
        check(a, b, f"final state {k}")
    # one random projection of every output, so each gets its own gradient
    weights = [rng.standard_normal(tuple(t.shape)).astype(dtype) for t in [tout] + tfinal]
    tloss = sum((t * torch.tensor(w)).sum() for t, w in zip([tout] + tfinal, weights))
    mloss = None
    for t, w in zip([mout] + mfinal, weights):
        term = (t * make(w, False)).sum()
        mloss = term if mloss is None else mloss + term
    tloss.backward()
    mloss.backward()
    check(mx.grad, tx.grad, "input grad")
    if with_state:
        for k, (a, b) in enumerate(zip(ms, ts)):
            check(a.grad, b.grad, f"initial state {k} grad")
    theirs = dict(tm.named_parameters())
    names = [n for n, _ in mm.named_parameters()]
    assert names == list(theirs)
    for name, p in mm.named_parameters():
        check(p.grad, theirs[name].grad, f"grad of {name}")


CASES = [
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=3, bidirectional=False),
    dict(num_layers=2, bidirectional=True, bias=False),
    dict(with_state=False, batch_first=True),
    dict(batched=False, num_layers=2, bidirectional=True),
    dict(batched=False, with_state=False),
]


@needs_torch
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_parity_with_torch(kind, case):
    _parity(kind, **case)


@needs_torch
@pytest.mark.parametrize("case", [
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(batched=False, with_state=False, bias=False),
    dict(num_layers=3)])
def test_lstm_with_projections_parity(case):
    _parity("LSTM", proj_size=4, **case)


FUSED_CASES = [(kind, case) for kind in ("LSTM", "GRU") for case in CASES[:4]] + [
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=4))]


@needs_torch
@pytest.mark.parametrize("kind, case", FUSED_CASES, ids=lambda c: c if isinstance(c, str) else
                         "-".join(f"{k}={v}" for k, v in c.items()))
def test_float32_parity_with_torch_through_the_fused_step_kernels(kind, case, monkeypatch):
    """float32 runs the CPU backend's fused step kernels (float64 above runs the NumPy steps):
    outputs, final states and every gradient against torch at float32's tolerances. The
    kernels are counted, so this fails if the fused path stops being taken."""
    from minidl.backend.cpu import rnn as kernels

    calls = []
    for name in ("lstm_step_forward", "lstm_step_backward", "gru_step_forward",
                 "gru_step_backward"):
        original = getattr(kernels, name)
        monkeypatch.setattr(minidl.backend.kernels(np), name,
                            lambda *a, _f=original, _n=name: (calls.append(_n), _f(*a))[1])
    _parity(kind, dtype="float32", H=37, **case)  # H not a multiple of the vector width
    prefix = kind.lower()
    assert f"{prefix}_step_forward" in calls and f"{prefix}_step_backward" in calls


def test_fused_step_kernels_match_the_numpy_steps(monkeypatch):
    """Larger shapes than the parity tests: the fused kernels against the NumPy steps they
    replace (run by turning the kernels off), in float32, forward and backward."""
    rng = np.random.default_rng(3)
    for kind, kw in (("LSTM", {}), ("LSTM", dict(proj_size=24)), ("GRU", {})):
        minidl.manual_seed(0)
        m = getattr(nn, kind)(40, 64, num_layers=2, bidirectional=True, batch_first=True, **kw)
        x = rng.standard_normal((9, 17, 40)).astype(np.float32) * 3  # saturating gates too
        results = []
        for fused in (True, False):
            if not fused:
                monkeypatch.setattr("minidl.nn.rnn._fused_kernels", lambda *a: None)
            m.zero_grad()
            xt = minidl.tensor(x, requires_grad=True)
            out, _ = m(xt)
            (out * minidl.tensor(np.cos(np.arange(out.numel())).reshape(out.shape)
                                 .astype(np.float32))).sum().backward()
            results.append([out.numpy(), xt.grad.numpy()] + [p.grad.numpy() for p in m.parameters()])
        monkeypatch.undo()
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def test_fused_activations_are_accurate():
    """The kernels' float32 sigmoid and tanh against float64 references, over the range where
    they are used, and at the edges: 0, -0, tiny, huge, infinities and NaN."""
    from numba import njit

    from minidl.backend.cpu.rnn import sigmoid_f32, tanh_f32

    @njit
    def apply(x, out, which):
        for i in range(x.size):
            out[i] = sigmoid_f32(x[i]) if which == 0 else tanh_f32(x[i])

    x = np.concatenate([np.linspace(-80, 80, 100001), [0.0, -0.0, 1e-7, -1e-7, 1e-30, 100.0,
                                                       -100.0]]).astype(np.float32)
    out = np.empty_like(x)
    x64 = x.astype(np.float64)
    apply(x, out, 1)
    np.testing.assert_allclose(out, np.tanh(x64), rtol=4e-7, atol=0)
    assert np.signbit(out[x.size - 6])  # tanh(-0) = -0
    apply(x, out, 0)
    # below -87 exp_f32 flushes to 0 (the exact values are float32 subnormals, < 1.2e-38)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x64)), rtol=4e-7, atol=1.2e-38)
    special = np.float32([np.inf, -np.inf, np.nan])
    out = np.empty_like(special)
    apply(special, out, 0)
    np.testing.assert_array_equal(out, [1, 0, np.nan])
    apply(special, out, 1)
    np.testing.assert_array_equal(out, [1, -1, np.nan])


@needs_torch
def test_relu_rnn_parity():
    _parity("RNN", nonlinearity="relu", num_layers=2, bidirectional=True, batch_first=True)


@needs_torch
def test_length_one_and_batch_one():
    _parity("LSTM", L=1, N=1, num_layers=2, bidirectional=True)
    _parity("GRU", L=1, N=1)


@needs_torch
@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_parity_with_torch(kind, batched, bias):
    tm = getattr(torch.nn, kind)(4, 5, bias=bias).double()
    mm = _copy_torch_weights(tm, getattr(nn, kind)(4, 5, bias=bias))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4) if batched else (4,))
    hshape = (3, 5) if batched else (5,)
    states = [rng.standard_normal(hshape) for _ in range(2 if kind == "LSTMCell" else 1)]
    tx, mx = torch.tensor(x, requires_grad=True), f64(x)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    ms = [f64(s) for s in states]
    tout = tm(tx, tuple(ts) if kind == "LSTMCell" else ts[0])
    mout = mm(mx, tuple(ms) if kind == "LSTMCell" else ms[0])
    touts = list(tout) if kind == "LSTMCell" else [tout]
    mouts = list(mout) if kind == "LSTMCell" else [mout]
    weights = [rng.standard_normal(tuple(t.shape)) for t in touts]
    for a, b in zip(mouts, touts):
        assert a.shape == tuple(b.shape)
        _compare(a, b, "cell output")
    sum((t * torch.tensor(w)).sum() for t, w in zip(touts, weights)).backward()
    loss = (mouts[0] * f64(weights[0], False)).sum()
    if len(mouts) == 2:
        loss = loss + (mouts[1] * f64(weights[1], False)).sum()
    loss.backward()
    _compare(mx.grad, tx.grad, "input grad")
    for a, b in zip(ms, ts):
        _compare(a.grad, b.grad, "state grad")
    theirs = dict(tm.named_parameters())
    for name, p in mm.named_parameters():
        _compare(p.grad, theirs[name].grad, f"grad of {name}")
    # without a state: zeros, as in PyTorch
    default = mm(mx)
    expected = tm(tx)
    for a, b in zip(default if kind == "LSTMCell" else [default],
                    expected if kind == "LSTMCell" else [expected]):
        _compare(a, b, "output from a zero state")


# ---- gradient checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_recurrence(mode, reverse, bias):
    """The hand-written BPTT of one layer and direction, input by input."""
    rng = np.random.default_rng(3)
    H = 3
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1) * H
    inputs = [f64(rng.standard_normal((4, 2, G))), f64(rng.standard_normal((2, H)))]
    if mode == "LSTM":
        inputs.append(f64(rng.standard_normal((2, H))))
    inputs.append(f64(rng.standard_normal((G, H)) * 0.5))
    if bias:
        inputs.append(f64(rng.standard_normal(G)))
    if mode == "RNN_RELU":  # away from the kink at 0
        inputs[0] = f64(inputs[0].numpy() + np.sign(inputs[0].numpy()) * 0.5)
    assert gradcheck(lambda *a: Recurrence.apply(*a, mode=mode, reverse=reverse), inputs)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_gradcheck_bidirectional_two_layers(kind):
    m = getattr(nn, kind)(3, 2, num_layers=2, bidirectional=True, batch_first=True).double()
    rng = np.random.default_rng(3)
    x = f64(rng.standard_normal((2, 3, 3)))
    h0 = [f64(rng.standard_normal((4, 2, 2))) for _ in range(2 if kind == "LSTM" else 1)]

    def run(x, *states):
        out, final = m(x, tuple(states) if kind == "LSTM" else states[0])
        final = final[0] + final[1] if kind == "LSTM" else final
        return out.sum(dim=2) + final.sum()

    assert gradcheck(run, [x] + h0)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_gradcheck_cells(kind):
    rng = np.random.default_rng(4)
    cell = getattr(nn, kind)(3, 2).double()
    x = f64(rng.standard_normal((2, 3)))
    h = [f64(rng.standard_normal((2, 2))) for _ in range(2 if kind == "LSTMCell" else 1)]
    if kind == "LSTMCell":
        assert gradcheck(lambda x, h, c: cell(x, (h, c))[0] * cell(x, (h, c))[1], [x] + h)
    else:
        assert gradcheck(lambda x, h: cell(x, cell(x, h)), [x] + h)  # two steps


def test_gradcheck_relu_rnn_module():
    m = nn.RNN(3, 4, nonlinearity="relu").double()
    x = f64(np.random.default_rng(4).standard_normal((4, 2, 3)))
    assert gradcheck(lambda x: m(x)[0], [x])


# ---- parameters --------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("kind,kwargs", [
    ("RNN", dict(num_layers=2, bidirectional=True)), ("LSTM", dict(num_layers=3)),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
    ("GRU", dict(bidirectional=True, bias=False)), ("RNNCell", {}), ("LSTMCell", {}),
    ("GRUCell", dict(bias=False))])
def test_state_dict_names_and_shapes_match_torch(kind, kwargs):
    tm = getattr(torch.nn, kind)(7, 5, **kwargs)
    mm = getattr(nn, kind)(7, 5, **kwargs)
    ours = {k: tuple(v.shape) for k, v in mm.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    assert list(ours) == list(theirs)
    assert ours == theirs
    assert repr(mm) == repr(tm)
    mm.load_state_dict(tm.state_dict())  # torch's own tensors load


def test_default_init_is_uniform_within_one_over_sqrt_hidden():
    m = nn.LSTM(30, 50, num_layers=2)
    bound = 1 / math.sqrt(50)
    values = np.concatenate([p.numpy().ravel() for p in m.parameters()])
    assert values.dtype == np.float32
    assert np.abs(values).max() <= bound
    assert abs(values.std() - bound / math.sqrt(3)) < 0.02 * bound  # U(-b, b) has std b/sqrt(3)
    assert abs(values.mean()) < 0.02 * bound
    assert np.abs(nn.GRUCell(3, 16).weight_hh.numpy()).max() <= 1 / 4


def test_output_shapes_and_float32():
    m = nn.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    out, h = m(minidl.randn(2, 7, 4))
    assert out.shape == (2, 7, 6) and h.shape == (4, 2, 3)
    assert out.dtype == np.float32 and h.dtype == np.float32
    out, (h, c) = nn.LSTM(4, 3)(minidl.randn(7, 4))
    assert out.shape == (7, 3) and h.shape == (1, 3) and c.shape == (1, 3)


def test_final_state_is_the_last_step_of_each_direction():
    m = nn.RNN(2, 3, bidirectional=True)
    out, h = m(minidl.randn(5, 1, 2))
    np.testing.assert_allclose(h.numpy()[0], out.numpy()[-1, :, :3])
    np.testing.assert_allclose(h.numpy()[1], out.numpy()[0, :, 3:])


def test_dropout_between_layers_only_in_training():
    m = nn.LSTM(3, 8, num_layers=2, dropout=0.5)
    x = minidl.randn(6, 2, 3)
    m.eval()
    a, b = m(x)[0].numpy(), m(x)[0].numpy()
    np.testing.assert_array_equal(a, b)
    m.train()
    assert not np.allclose(m(x)[0].numpy(), a)
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.GRU(3, 4, dropout=0.2)


def test_training_reduces_loss():
    minidl.manual_seed(0)
    m, head = nn.GRU(1, 8, batch_first=True), nn.Linear(8, 1)
    opt = minidl.optim.Adam(list(m.parameters()) + list(head.parameters()), lr=0.05)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 1)).astype(np.float32)
    y = minidl.tensor(x.sum(axis=1))  # the running sum of the sequence
    x = minidl.tensor(x)
    losses = []
    for _ in range(60):
        out, h = m(x)
        loss = ((head(h[0]) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


# ---- bad input ---------------------------------------------------------------------------------
def test_errors_name_the_expected_sizes():
    m = nn.LSTM(4, 3, num_layers=2)
    with pytest.raises(ValueError, match="Expected 4, got 7"):
        m(minidl.randn(5, 2, 7))
    with pytest.raises(RuntimeError, match=r"expected h_0 of size \(2, 2, 3\), got \(1, 2, 3\)"):
        m(minidl.randn(5, 2, 4), (minidl.zeros(1, 2, 3), minidl.zeros(2, 2, 3)))
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        m(minidl.randn(0, 2, 4))
    assert nn.GRU(4, 3)(minidl.randn(3, 0, 4))[0].shape == (3, 0, 3)  # an empty batch is fine
    with pytest.raises(ValueError, match="2D or 3D, got 4D"):
        m(minidl.randn(2, 5, 2, 4))
    with pytest.raises(ValueError, match="should be 2-D, got 3-D"):
        m(minidl.randn(5, 4), (minidl.zeros(2, 1, 3), minidl.zeros(2, 1, 3)))
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        m(minidl.randn(5, 2, 4), minidl.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="dtype"):
        m(minidl.randn(5, 2, 4).double())
    with pytest.raises(ValueError, match="expected hx of size"):
        nn.GRU(4, 3)(minidl.randn(5, 2, 4), minidl.zeros(1, 3, 3))
    with pytest.raises(RuntimeError, match="inconsistent input_size: got 5 expected 4"):
        nn.GRUCell(4, 3)(minidl.randn(2, 5))
    with pytest.raises(ValueError, match="batch size 2 doesn't match hx batch size 3"):
        nn.RNNCell(4, 3)(minidl.randn(2, 4), minidl.zeros(3, 3))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        nn.RNN(4, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout should be a number"):
        nn.GRU(4, 3, dropout=1.5)
    with pytest.raises(TypeError, match="hidden_size should be of type int"):
        nn.LSTM(4, 3.0)
    with pytest.raises(ValueError, match="num_layers must be greater than zero"):
        nn.LSTM(4, 3, num_layers=0)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        nn.RNNBase("GRU", 4, 3, proj_size=2)
    with pytest.raises(ValueError, match=r"proj_size \(3\) has to be smaller than hidden_size"):
        nn.LSTM(4, 3, proj_size=3)
    with pytest.raises(ValueError, match=r"expected c_0 of size \(1, 2, 3\), got \(1, 2, 2\)"):
        nn.LSTM(4, 3, proj_size=2)(minidl.randn(5, 2, 4),
                                   (minidl.zeros(1, 2, 2), minidl.zeros(1, 2, 2)))


# ---- pad_sequence ------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_sequence_parity(batch_first, side):
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((n, 2)) for n in (3, 1, 4)]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ms = [f64(a) for a in arrays]
    tout = torch.nn.utils.rnn.pad_sequence(ts, batch_first=batch_first, padding_value=-1.5,
                                           padding_side=side)
    mout = pad_sequence(ms, batch_first=batch_first, padding_value=-1.5, padding_side=side)
    assert mout.shape == tuple(tout.shape)
    _compare(mout, tout, "padded")
    w = rng.standard_normal(tuple(tout.shape))
    (tout * torch.tensor(w)).sum().backward()
    (mout * f64(w, False)).sum().backward()
    for a, b in zip(ms, ts):
        _compare(a.grad, b.grad, "grad")


def test_pad_sequence_errors():
    with pytest.raises(ValueError, match="empty list"):
        pad_sequence([])
    with pytest.raises(ValueError, match=r"sequence 1 has shape \(2, 3\)"):
        pad_sequence([minidl.zeros(2, 2), minidl.zeros(2, 3)])
    assert nn.utils.rnn.pad_sequence is pad_sequence


# ---- packed sequences --------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence_parity(kind, enforce_sorted):
    """A packed batch through a 2-layer bidirectional RNN: the packed output, h_n (each
    sequence's own last step) and every gradient as PyTorch's."""
    rng = np.random.default_rng(7)
    lengths = [5, 3, 3, 1] if enforce_sorted else [2, 5, 1, 4]
    tm = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True,
                                 batch_first=True).double()
    mm = _copy_torch_weights(tm, getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True,
                                                   batch_first=True))
    x = rng.standard_normal((4, 5, 3))
    states = [rng.standard_normal((4, 4, 4)) for _ in range(2 if kind == "LSTM" else 1)]
    tx, mx = torch.tensor(x, requires_grad=True), f64(x)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    ms = [f64(s) for s in states]
    tp = torch.nn.utils.rnn.pack_padded_sequence(tx, lengths, batch_first=True,
                                                 enforce_sorted=enforce_sorted)
    mp = pack_padded_sequence(mx, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    np.testing.assert_array_equal(mp.batch_sizes.numpy(), tp.batch_sizes.numpy())
    _compare(mp.data, tp.data, "packed data")
    if not enforce_sorted:
        np.testing.assert_array_equal(mp.sorted_indices.numpy(), tp.sorted_indices.numpy())
        np.testing.assert_array_equal(mp.unsorted_indices.numpy(), tp.unsorted_indices.numpy())
    tout, tfinal = tm(tp, tuple(ts) if kind == "LSTM" else ts[0])
    mout, mfinal = mm(mp, tuple(ms) if kind == "LSTM" else ms[0])
    assert isinstance(mout, PackedSequence)
    _compare(mout.data, tout.data, "output data")
    tpad, tlen = torch.nn.utils.rnn.pad_packed_sequence(tout, batch_first=True, total_length=6)
    mpad, mlen = pad_packed_sequence(mout, batch_first=True, total_length=6)
    np.testing.assert_array_equal(mlen.numpy(), tlen.numpy())
    _compare(mpad, tpad, "padded output")
    tfinal = list(tfinal) if kind == "LSTM" else [tfinal]
    mfinal = list(mfinal) if kind == "LSTM" else [mfinal]
    for a, b in zip(mfinal, tfinal):
        _compare(a, b, "final state")
    weights = [rng.standard_normal(tuple(t.shape)) for t in [tpad] + tfinal]
    sum((t * torch.tensor(w)).sum() for t, w in zip([tpad] + tfinal, weights)).backward()
    loss = None
    for t, w in zip([mpad] + mfinal, weights):
        term = (t * f64(w, False)).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    _compare(mx.grad, tx.grad, "input grad")
    for a, b in zip(ms, ts):
        _compare(a.grad, b.grad, "state grad")
    theirs = dict(tm.named_parameters())
    for name, p in mm.named_parameters():
        _compare(p.grad, theirs[name].grad, f"grad of {name}")


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_recurrence_with_lengths(mode, reverse):
    rng = np.random.default_rng(8)
    H = 2
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1) * H
    inputs = [f64(rng.standard_normal((4, 3, G))), f64(rng.standard_normal((3, H)))]
    if mode == "LSTM":
        inputs.append(f64(rng.standard_normal((3, H))))
    inputs += [f64(rng.standard_normal((G, H)) * 0.5), f64(rng.standard_normal(G))]
    lengths = np.array([4, 2, 1])
    assert gradcheck(lambda *a: Recurrence.apply(*a, mode=mode, reverse=reverse,
                                                 lengths=lengths), inputs)


@needs_torch
def test_pack_sequence_and_unpack_match_torch():
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal((n, 2)) for n in (2, 4, 3)]
    tp = torch.nn.utils.rnn.pack_sequence([torch.tensor(a) for a in arrays],
                                          enforce_sorted=False)
    mp = pack_sequence([f64(a) for a in arrays], enforce_sorted=False)
    _compare(mp.data, tp.data, "packed data")
    np.testing.assert_array_equal(mp.batch_sizes.numpy(), tp.batch_sizes.numpy())
    for a, b in zip(unpack_sequence(mp), arrays):
        np.testing.assert_array_equal(a.numpy(), b)
    padded, lengths = pad_packed_sequence(mp, padding_value=-1.0)
    assert padded.shape == (4, 3, 2) and lengths.tolist() == [2, 4, 3]
    assert padded.numpy()[3, 0, 0] == -1.0


def test_packing_errors():
    x = minidl.zeros(3, 2, 1)
    with pytest.raises(ValueError, match="enforce_sorted"):
        pack_padded_sequence(x, [2, 3])
    with pytest.raises(ValueError, match="greater than 0"):
        pack_padded_sequence(x, [3, 0])
    with pytest.raises(ValueError, match="3 lengths for a batch of 2"):
        pack_padded_sequence(x, [3, 2, 1])
    with pytest.raises(ValueError, match="longer than the input's 3 steps"):
        pack_padded_sequence(x, [4, 2])
    with pytest.raises(ValueError, match="total_length to be at least 3"):
        pad_packed_sequence(pack_padded_sequence(x, [3, 2]), total_length=2)
    with pytest.raises(ValueError, match=r"expected hx of size \(1, 2, 4\)"):
        nn.GRU(1, 4)(pack_padded_sequence(x, [3, 2]), minidl.zeros(1, 3, 4))


# ---- devices -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_lstm_on_fake_gpu_matches_cpu(kind, monkeypatch, tmp_path):
    """On the (fake) GPU the recurrence runs the CUDA step kernels, compiled here on the host:
    the same outputs and gradients as on the CPU, and the kernels are seen to run."""
    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    m = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = np.random.default_rng(6).standard_normal((2, 5, 3)).astype(np.float32)
    out, state = m(minidl.tensor(x))
    states = list(state) if kind == "LSTM" else [state]
    (out.sum() + sum(s.sum() for s in states)).backward()
    cpu = [out.numpy()] + [s.numpy() for s in states] + [p.grad.numpy() for p in m.parameters()]
    _fake_gpu.install(monkeypatch, lib)
    from minidl.backend import cuda

    launched = []
    original = cuda._kernel
    monkeypatch.setattr(cuda, "_kernel", lambda name, wide=False: (launched.append(name),
                                                                   original(name, wide))[1])
    m.zero_grad()
    m.to("cuda")
    out, state = m(minidl.tensor(x, device="cuda"))
    states = list(state) if kind == "LSTM" else [state]
    assert out.device == "cuda" and states[0].device == "cuda"
    (out.sum() + sum(s.sum() for s in states)).backward()
    gpu = [out.numpy()] + [s.numpy() for s in states] + [p.grad.numpy() for p in m.parameters()]
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    step = kind.lower() + "_step"
    assert launched.count(step) == 4 * 5 and launched.count(step + "_backward") == 4 * 5


# ---- autocast ----------------------------------------------------------------------------------
# PyTorch's CPU autocast policy for the recurrent layers (bfloat16)
AUTOCAST_OUT = {"LSTM": "bfloat16", "RNN": "bfloat16", "RNNCell": "bfloat16",
                "GRU": "float32", "GRUCell": "float32", "LSTMCell": "float32"}


@needs_torch
@pytest.mark.parametrize("kind", sorted(AUTOCAST_OUT))
def test_autocast_cpu_output_dtype_matches_torch(kind):
    """PyTorch's CPU autocast gives bfloat16 from an LSTM over a sequence, an RNN and an
    RNNCell, and float32 from a GRU, a GRUCell and an LSTMCell; the parameters' gradients stay
    float32 either way. torch runs the bfloat16 LSTM through oneDNN, which has no such
    primitive on a CPU without AVX-512 (it raises there): the policy is then this table's."""
    args = (4, 3)
    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    if kind.endswith("Cell"):
        x = x[0]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = getattr(torch.nn, kind)(*args)(torch.tensor(x))
    except RuntimeError as exc:
        if "primitive descriptor" not in str(exc):
            raise
    else:
        theirs = (out[0] if isinstance(out, tuple) else out).dtype
        assert str(theirs) == "torch." + AUTOCAST_OUT[kind]
    m = getattr(nn, kind)(*args)
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        out = m(minidl.tensor(x))
        mine = out[0] if isinstance(out, tuple) else out
    assert str(mine.dtype) == AUTOCAST_OUT[kind]
    mine.float().sum().backward()
    assert all(p.grad.dtype == np.float32 for p in m.parameters())


def test_packed_gru_on_fake_gpu_matches_cpu(monkeypatch, tmp_path):
    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    m = nn.GRU(3, 4, bidirectional=True)
    x = np.random.default_rng(6).standard_normal((5, 3, 3)).astype(np.float32)

    def run(device):
        xs = minidl.tensor(x, device=device, requires_grad=True)
        packed = pack_padded_sequence(xs, [2, 5, 3], enforce_sorted=False)
        out, h = m(packed)
        padded, _ = pad_packed_sequence(out)
        assert padded.device == device and h.device == device
        (padded.sum() + (h * h).sum()).backward()
        return [padded.numpy(), h.numpy(), xs.grad.numpy()] + [p.grad.numpy()
                                                              for p in m.parameters()]

    cpu = run("cpu")
    _fake_gpu.install(monkeypatch, lib)
    m.zero_grad()
    m.to("cuda")
    for a, b in zip(cpu, run("cuda")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_lstm_recurrence_with_projection_and_lengths(reverse):
    rng = np.random.default_rng(10)
    H, P = 3, 2
    inputs = [f64(rng.standard_normal((4, 3, 4 * H))), f64(rng.standard_normal((3, P))),
              f64(rng.standard_normal((3, H))), f64(rng.standard_normal((4 * H, P)) * 0.5),
              f64(rng.standard_normal(4 * H)), f64(rng.standard_normal((P, H)))]
    for lengths in (None, np.array([4, 3, 1])):
        assert gradcheck(lambda *a: Recurrence.apply(*a, mode="LSTM", reverse=reverse,
                                                     lengths=lengths, proj=True), inputs)


@pytest.mark.skipif(not minidl.backend.cuda_available(),
                    reason="needs CuPy and an NVIDIA GPU (CuPy not installed or no GPU found)")
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrence_on_the_gpu_matches_cpu(kind):
    """The CUDA step kernels on a real GPU (tools/gpu_checks.sh runs this file): outputs, states
    and every gradient as on the CPU, float32, two layers, both directions."""
    m = getattr(nn, kind)(6, 9, num_layers=2, bidirectional=True, batch_first=True)
    x = np.random.default_rng(6).standard_normal((3, 7, 6)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        m.zero_grad()
        m.to(device)
        out, state = m(minidl.tensor(x, device=device))
        states = list(state) if kind == "LSTM" else [state]
        (out.sum() + sum((s * s).sum() for s in states)).backward()
        assert out.device == device
        results.append([out.numpy()] + [s.numpy() for s in states]
                       + [p.grad.numpy() for p in m.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


# ---- recurrent layers and packed sequences against torch (an audit) ------------------------------
def t64(a, requires_grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=requires_grad)


RNN_CASES = [
    # kind, batch_first, bidirectional, num_layers, proj_size, batched, with state
    ("RNN", True, True, 2, 0, True, True),
    ("GRU", False, True, 2, 0, True, False),
    ("GRU", True, False, 1, 0, False, True),
    ("LSTM", True, True, 2, 2, True, True),
    ("LSTM", False, False, 2, 2, False, True),
    ("LSTM", False, True, 1, 0, True, False),
]


@needs_torch
@pytest.mark.parametrize("kind,bf,bi,layers,proj,batched,with_state", RNN_CASES)
def test_rnn_layers_match_torch_in_eval_with_dropout(kind, bf, bi, layers, proj, batched,
                                                     with_state):
    """Dropout between layers is off in eval; outputs, final states and every gradient (input,
    h0/c0, weights) match torch's in float64."""
    kw = dict(num_layers=layers, batch_first=bf, bidirectional=bi, dropout=0.5 * (layers > 1))
    if proj:
        kw["proj_size"] = proj
    torch.manual_seed(0)
    tm = getattr(torch.nn, kind)(3, 4, **kw).double().eval()
    mm = load_from(tm, getattr(nn, kind)(3, 4, dtype=minidl.float64, **kw)).eval()
    rng = np.random.default_rng(0)
    D = 2 if bi else 1
    x = rng.standard_normal(((2, 5, 3) if bf else (5, 2, 3)) if batched else (5, 3))
    N = 2 if batched else None
    widths = [proj or 4] + ([4] if kind == "LSTM" else [])
    states = [rng.standard_normal((layers * D, N, w) if batched else (layers * D, w))
              for w in widths]
    xt, xm = t64(x, True), f64_tensor(x, True)
    st, sm = [t64(s, True) for s in states], [f64_tensor(s, True) for s in states]
    args_t, args_m = [xt], [xm]
    if with_state:
        args_t.append(tuple(st) if kind == "LSTM" else st[0])
        args_m.append(tuple(sm) if kind == "LSTM" else sm[0])
    ot, ht = tm(*args_t)
    om, hm = mm(*args_m)
    same(om, ot, "output")
    ht, hm = (ht if kind == "LSTM" else (ht,)), (hm if kind == "LSTM" else (hm,))
    for a, b in zip(hm, ht):
        same(a, b, "final state")
    ((ot ** 2).sum() + sum((h * (k + 1.5)).sum() for k, h in enumerate(ht))).backward()
    ((om ** 2).sum() + sum((h * (k + 1.5)).sum() for k, h in enumerate(hm))).backward()
    same(xm.grad, xt.grad, "d input")
    if with_state:
        for a, b in zip(sm, st):
            same(a.grad, b.grad, "d state")
    for (name, pt), (_, pm) in zip(tm.named_parameters(), mm.named_parameters()):
        same(pm.grad, pt.grad, f"d {name}")


@needs_torch
def test_rnn_state_dict_loads_torch_tensors_and_flatten_parameters_is_a_noop():
    tm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    mm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    assert [(k, tuple(v.shape)) for k, v in tm.named_parameters()] == \
        [(k, tuple(v.shape)) for k, v in mm.named_parameters()]
    mm.load_state_dict(tm.state_dict())
    assert mm.flatten_parameters() is None
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    same(mm(minidl.tensor(x))[0], tm(torch.tensor(x))[0], "output", atol=1e-6)
    bound = 1 / np.sqrt(5)
    for p in nn.GRU(3, 5).parameters():
        assert np.abs(p.numpy()).max() <= bound and np.abs(p.numpy()).max() > 0.8 * bound


@needs_torch
@pytest.mark.parametrize("kind,enforce_sorted,bf,bi",
                         [("LSTM", True, False, True), ("GRU", False, True, True),
                          ("RNN", False, False, False), ("LSTM", False, True, False)])
def test_packed_sequences_through_rnn_match_torch(kind, enforce_sorted, bf, bi):
    lengths = [5, 3, 3, 1] if enforce_sorted else [3, 5, 1, 3]
    kw = dict(num_layers=2, batch_first=bf, bidirectional=bi)
    torch.manual_seed(0)
    tm = getattr(torch.nn, kind)(3, 4, **kw).double()
    mm = load_from(tm, getattr(nn, kind)(3, 4, dtype=minidl.float64, **kw))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 5, 3) if bf else (5, 4, 3))
    h = rng.standard_normal((2 * (2 if bi else 1), 4, 4))
    xt, xm, ht, hm = t64(x, True), f64_tensor(x, True), t64(h, True), f64_tensor(h, True)
    pt = trnn.pack_padded_sequence(xt, lengths, batch_first=bf, enforce_sorted=enforce_sorted)
    pm = mrnn.pack_padded_sequence(xm, lengths, batch_first=bf, enforce_sorted=enforce_sorted)
    same(pm.data, pt.data, "packed data")
    same(pm.batch_sizes, pt.batch_sizes, "batch_sizes")
    if not enforce_sorted:
        same(pm.sorted_indices, pt.sorted_indices, "sorted_indices")
        same(pm.unsorted_indices, pt.unsorted_indices, "unsorted_indices")
    ot, st = tm(pt, (ht, ht * 2) if kind == "LSTM" else ht)
    om, sm = mm(pm, (hm, hm * 2) if kind == "LSTM" else hm)
    assert isinstance(om, mrnn.PackedSequence)
    padt, lt = trnn.pad_packed_sequence(ot, batch_first=bf, padding_value=-1.0, total_length=7)
    padm, lm = mrnn.pad_packed_sequence(om, batch_first=bf, padding_value=-1.0, total_length=7)
    same(padm, padt, "padded output")
    same(lm, lt, "lengths")
    assert lm.dtype == np.int64
    st = st[0] + st[1] ** 2 if kind == "LSTM" else st
    sm = sm[0] + sm[1] ** 2 if kind == "LSTM" else sm
    same(sm, st, "final state")
    ((padt ** 2).sum() + (st ** 3).sum()).backward()
    ((padm ** 2).sum() + (sm ** 3).sum()).backward()
    same(xm.grad, xt.grad, "d input")
    same(hm.grad, ht.grad, "d h0")
    for (name, a), (_, b) in zip(tm.named_parameters(), mm.named_parameters()):
        same(b.grad, a.grad, f"d {name}")


@needs_torch
def test_pack_sequence_both_ways():
    seqs = [np.random.default_rng(3).standard_normal((n, 2)) for n in (2, 4, 1)]
    pt = trnn.pack_sequence([t64(s) for s in seqs], enforce_sorted=False)
    pm = mrnn.pack_sequence([f64_tensor(s) for s in seqs], enforce_sorted=False)
    same(pm.data, pt.data, "data")
    same(pm.batch_sizes, pt.batch_sizes, "batch_sizes")
    both_raise(lambda: mrnn.pack_sequence([f64_tensor(s) for s in seqs]),
               lambda: trnn.pack_sequence([t64(s) for s in seqs]), [ValueError, RuntimeError],
               "enforce_sorted")


@needs_torch
def test_packing_errors_are_runtime_errors_as_in_torch():
    x = np.zeros((5, 3, 2))
    for lengths in ([3, 2, 0], [3, 2], [2, 3, 1]):
        both_raise(lambda: mrnn.pack_padded_sequence(f64_tensor(x), lengths),
                   lambda: trnn.pack_padded_sequence(t64(x), lengths),
                   [ValueError, RuntimeError])
    pm = mrnn.pack_padded_sequence(f64_tensor(x), [3, 2, 1])
    pt = trnn.pack_padded_sequence(t64(x), [3, 2, 1])
    both_raise(lambda: mrnn.pad_packed_sequence(pm, total_length=2),
               lambda: trnn.pad_packed_sequence(pt, total_length=2), [ValueError])


@needs_torch
def test_rnn_state_shape_errors_are_runtime_errors_naming_the_expected_shape():
    tm, mm = torch.nn.GRU(3, 5, num_layers=2), nn.GRU(3, 5, num_layers=2)
    x = np.zeros((4, 6, 3), np.float32)
    h = np.zeros((2, 4, 5), np.float32)
    both_raise(lambda: mm(minidl.tensor(x), minidl.tensor(h)),
               lambda: tm(torch.tensor(x), torch.tensor(h)), [RuntimeError], "(2, 6, 5)")
    tl, ml = torch.nn.LSTM(3, 5), nn.LSTM(3, 5)
    good, bad = np.zeros((1, 6, 5), np.float32), np.zeros((1, 6, 4), np.float32)
    both_raise(lambda: ml(minidl.tensor(x), (minidl.tensor(good), minidl.tensor(bad))),
               lambda: tl(torch.tensor(x), (torch.tensor(good), torch.tensor(bad))),
               [RuntimeError], "(1, 6, 5)")
    both_raise(lambda: mm(minidl.tensor(x[..., :2])), lambda: tm(torch.tensor(x[..., :2])),
               [RuntimeError], "Expected 3, got 2")
    tc, mc = torch.nn.GRUCell(3, 5), nn.GRUCell(3, 5)
    both_raise(lambda: mc(minidl.tensor(x[0]), minidl.tensor(h[0, :2])),
               lambda: tc(torch.tensor(x[0]), torch.tensor(h[0, :2])), [RuntimeError],
               "batch size")


@needs_torch
def test_a_hidden_state_of_another_dtype_is_a_runtime_error_as_in_torch():
    x, h = np.zeros((2, 1, 3), np.float32), np.zeros((1, 1, 4))
    tm, mm = torch.nn.GRU(3, 4), nn.GRU(3, 4)
    both_raise(lambda: mm(minidl.tensor(x), f64_tensor(h)), lambda: tm(torch.tensor(x), t64(h)),
               [RuntimeError, ValueError], "dtype")
    tc, mc = torch.nn.GRUCell(3, 4), nn.GRUCell(3, 4)
    both_raise(lambda: mc(minidl.tensor(x[0]), f64_tensor(h[0])), lambda: tc(torch.tensor(x[0]),
                                                                      t64(h[0])),
               [RuntimeError, ValueError], "dtype")
