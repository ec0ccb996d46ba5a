"""The PyTorch nn API beyond the core layers: leaky_relu, elu, silu, gelu, one_hot, pad,
binary_cross_entropy (with logits), l1_loss, smooth_l1_loss, layer_norm, embedding, their
modules, ModuleDict, and their autocast policy. Each op: a float64 finite-difference gradient
check, PyTorch parity forward and backward (functional and module), stability at large
magnitudes, and bad input refused with what did not fit."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from helpers import leaf, randn
from minidl.testing import gradcheck
from test_amp import fake_cuda  # noqa: F401  (the stand-in GPU: CUDA kernel bodies on the host)
from minidl.testing import gradgradcheck

try:
    import torch
except ImportError:
    torch = None

NO_TORCH = "torch is not installed: the PyTorch parity checks compare against it"


@pytest.fixture
def parity():
    """tests/_torch_parity.py (check_op and its input specs), or a skip without torch."""
    if torch is None:
        pytest.skip(NO_TORCH)
    import _torch_parity

    return _torch_parity


def uniform(shape, low, high, seed=0, requires_grad=True):
    return leaf(np.random.default_rng(seed).uniform(low, high, shape), requires_grad)


def scaled(shape, scale, seed=0):
    return leaf(np.random.default_rng(seed).standard_normal(shape) * scale)


def apart(shape, seed=0, margin=0.1):
    """Normal values at least ``margin`` from 0 (kinks at 0: leaky_relu, elu, l1)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return leaf(np.where(x >= 0, x + margin, x - margin))


def const(array, dtype="float64"):
    return leaf(np.asarray(array), requires_grad=False, dtype=dtype)


IDX = np.array([[0, 2, 2], [4, 2, 0]])  # repeats: the weight's gradient must add them up


# ---- gradient checks (float64 finite differences) --------------------------------------------
GRADCHECK = [
    ("leaky_relu", lambda x: F.leaky_relu(x), lambda: [apart((3, 4))]),
    ("leaky_relu_0.2", lambda x: F.leaky_relu(x, 0.2), lambda: [apart((3, 4))]),
    ("leaky_relu_negative_slope", lambda x: F.leaky_relu(x, -0.3), lambda: [apart((5,))]),
    ("elu", lambda x: F.elu(x), lambda: [apart((3, 4))]),
    ("elu_alpha", lambda x: F.elu(x, alpha=0.5), lambda: [apart((3, 4))]),
    ("silu", lambda x: F.silu(x), lambda: [randn((3, 4))]),
    ("gelu", lambda x: F.gelu(x), lambda: [uniform((3, 5), -5, 5)]),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda: [uniform((3, 5), -5, 5)]),
    ("pad_grow", lambda x: F.pad(x, (1, 2)), lambda: [randn((2, 3))]),
    ("pad_crop_and_grow", lambda x: F.pad(x, (-1, 2, 1, -1), value=1.5),
     lambda: [randn((2, 3, 4))]),
    ("pad_three_dims", lambda x: F.pad(x, (0, 1, 1, 0, 2, 1)), lambda: [randn((1, 2, 2, 3))]),
    ("bce", lambda x, t: F.binary_cross_entropy(x, t),
     lambda: [uniform((3, 4), 0.05, 0.95), uniform((3, 4), 0, 1, seed=1)]),
    ("bce_weight_sum", lambda x, t: F.binary_cross_entropy(
        x, t, const(np.linspace(0.5, 2, 4)), reduction="sum"),
     lambda: [uniform((3, 4), 0.05, 0.95), uniform((3, 4), 0, 1, seed=1)]),
    ("bce_none", lambda x, t: F.binary_cross_entropy(x, t, reduction="none"),
     lambda: [uniform((5,), 0.05, 0.95), uniform((5,), 0, 1, seed=1)]),
    ("bce_logits", lambda x, t: F.binary_cross_entropy_with_logits(x, t),
     lambda: [randn((3, 4)), uniform((3, 4), 0, 1, seed=1)]),
    ("bce_logits_weights", lambda x, t: F.binary_cross_entropy_with_logits(
        x, t, const(np.linspace(0.5, 2, 4)), "sum", pos_weight=const([0.5, 1.0, 2.0, 3.0])),
     lambda: [scaled((3, 4), 3), uniform((3, 4), 0, 1, seed=1)]),
    ("bce_logits_none", lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"),
     lambda: [randn((6,)), uniform((6,), 0, 1, seed=1)]),
    ("l1", lambda x, t: F.l1_loss(x, t), lambda: [apart((3, 4)), const(np.zeros((3, 4)))]),
    ("l1_target_sum", lambda x, t: F.l1_loss(t, x, reduction="sum"),
     lambda: [apart((3, 4)), const(np.zeros((3, 4)))]),
    ("smooth_l1", lambda x, t: F.smooth_l1_loss(x, t), lambda: [scaled((3, 4), 2), randn((3, 4), 1)]),
    ("smooth_l1_beta", lambda x, t: F.smooth_l1_loss(x, t, reduction="none", beta=0.5),
     lambda: [scaled((3, 4), 2), randn((3, 4), 1)]),
    ("smooth_l1_beta0", lambda x: F.smooth_l1_loss(x, const(np.zeros(6)), beta=0.0),
     lambda: [apart((6,))]),
    ("layer_norm", lambda x: F.layer_norm(x, (5,)), lambda: [randn((3, 5))]),
    ("layer_norm_affine", lambda x, w, b: F.layer_norm(x, (5,), w, b),
     lambda: [randn((2, 3, 5)), randn((5,), 1), randn((5,), 2)]),
    ("layer_norm_two_dims", lambda x, w: F.layer_norm(x, (3, 4), w, eps=1e-3),
     lambda: [randn((2, 3, 4)), randn((3, 4), 1)]),
    ("layer_norm_offset", lambda x: F.layer_norm(x + 50.0, [4]), lambda: [randn((3, 4))]),
    ("embedding", lambda w: F.embedding(minidl.tensor(IDX), w), lambda: [randn((5, 3))]),
    # (with padding_idx the padding row's gradient is 0 by design, not its finite difference:
    # checked exactly below)
    ("embedding_3d_indices", lambda w: F.embedding(minidl.tensor(IDX[None]), w),
     lambda: [randn((5, 3))]),
]


@pytest.mark.parametrize("fn, make", [pytest.param(f, m, id=i) for i, f, m in GRADCHECK])
def test_gradcheck(fn, make):
    assert gradcheck(fn, make())


def test_embedding_gradient_adds_repeats_and_skips_the_padding_row():
    w = randn((5, 3))
    F.embedding(minidl.tensor(IDX), w, padding_idx=-3).sum().backward()  # row 2
    counts = np.bincount(IDX.ravel(), minlength=5).astype(float)
    counts[2] = 0
    np.testing.assert_array_equal(w.grad.numpy(), np.repeat(counts[:, None], 3, axis=1))


# ---- PyTorch parity, functional (float32, check_op: forward and every input's gradient) -------
def _specs(p):
    """The input specs, made once torch is known to be there."""
    probs = p.positive((3, 4), 0.02, 0.98)
    target = p.positive((3, 4), 0.0, 1.0)
    weight = p.const(np.linspace(0.5, 2.0, 4).astype(np.float32))
    return probs, target, weight


def test_activations_match_torch(parity):
    p = parity
    shapes = [(3, 4), (2, 3, 5), p.distinct((4, 5), spacing=0.37)]
    p.check_op(lambda F, x: F.leaky_relu(x), shapes)
    p.check_op(lambda F, x: F.leaky_relu(x, 0.2), shapes)
    p.check_op(lambda F, x: F.elu(x), shapes)
    p.check_op(lambda F, x: F.elu(x, alpha=0.3), shapes)
    p.check_op(lambda F, x: F.silu(x), shapes)
    p.check_op(lambda F, x: F.gelu(x), shapes, rtol=1e-5, atol=1e-6)
    p.check_op(lambda F, x: F.gelu(x, approximate="tanh"), shapes, rtol=1e-5, atol=1e-6)
    wide = p.distinct((10, 10), spacing=0.2)  # -10 .. 10: the tails of GELU and ELU
    p.check_op(lambda F, x: F.gelu(x), [wide], rtol=1e-5, atol=1e-6)
    p.check_op(lambda F, x: F.elu(x), [wide])


def test_gelu_in_float64_is_exact_against_torch():
    """Within 1e-15 of PyTorch's float64 GELU everywhere (which computes 1 + erf(x / sqrt 2)
    and so rounds the far negative tail to 0, where minidl's erfc keeps ~1e-32)."""
    if torch is None:
        pytest.skip(NO_TORCH)
    x = np.linspace(-12, 12, 2001)
    got = F.gelu(leaf(x)).numpy()
    want = torch.nn.functional.gelu(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    assert got[0] < 0 and abs(got[0] + 12 * 0.5 * math.erfc(12 / math.sqrt(2))) < 1e-45


def test_pad_and_one_hot_match_torch(parity):
    p = parity
    for widths in [(1, 1), (2, 0, 0, 3), (-1, 2), (1, -2, -1, 1), (0, 0, 1, 1, 1, 0), (-3, 0)]:
        p.check_op(lambda F, x, w=widths: F.pad(x, w), [(2, 3, 4)])
    p.check_op(lambda F, x: F.pad(x, (1, 2), value=-1.5), [(3,)])
    p.check_op(lambda F, x: F.pad(x, [1, 1, 2, 2], "constant", 0.25), [(2, 2, 3)])
    ints = np.array([[1, 4], [0, 2]])
    got = F.pad(minidl.tensor(ints), (1, 1), value=7)
    want = torch.nn.functional.pad(torch.tensor(ints), (1, 1), value=7)
    assert got.dtype == np.int64 and got.tolist() == want.tolist()
    for classes in (-1, 5, 7):
        got = F.one_hot(minidl.tensor(ints), classes)
        want = torch.nn.functional.one_hot(torch.tensor(ints), classes)
        assert got.dtype == np.int64 and got.shape == tuple(want.shape)
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert F.one_hot(minidl.tensor(np.zeros(0, np.int64)), 3).shape == (0, 3)


def test_losses_match_torch(parity):
    p = parity
    probs, target, weight = _specs(p)
    for reduction in ("mean", "sum", "none"):
        p.check_op(lambda F, x, t, r=reduction: F.binary_cross_entropy(x, t, reduction=r),
                   [(probs, target)])
        p.check_op(lambda F, x, t, w, r=reduction: F.binary_cross_entropy(x, t, w, reduction=r),
                   [(probs, target, weight)])
        p.check_op(lambda F, x, t, r=reduction: F.binary_cross_entropy_with_logits(
            x, t, reduction=r), [((3, 4), target)])
        p.check_op(lambda F, x, t, w, r=reduction: F.binary_cross_entropy_with_logits(
            x, t, w, reduction=r, pos_weight=w * 2), [((3, 4), target, weight)])
        p.check_op(lambda F, x, t, r=reduction: F.l1_loss(x, t, reduction=r), [((3, 4), (3, 4))])
        for beta in (1.0, 0.3, 0.0):
            p.check_op(lambda F, x, t, r=reduction, b=beta: F.smooth_l1_loss(
                x, t, reduction=r, beta=b), [((3, 4), (3, 4)), ((7,), (7,))])
    # a row weight (1, C) and a per-element one broadcast as in PyTorch
    p.check_op(lambda F, x, t, w: F.binary_cross_entropy_with_logits(x, t, w),
               [((2, 3, 4), p.positive((2, 3, 4), 0.0, 1.0),
                 p.const(np.full((3, 1), 0.7, np.float32)))])


def test_layer_norm_and_embedding_match_torch(parity):
    p = parity
    p.check_op(lambda F, x: F.layer_norm(x, (5,)), [(3, 5), (2, 3, 5)])
    p.check_op(lambda F, x, w, b: F.layer_norm(x, (5,), w, b), [((4, 5), (5,), (5,))])
    p.check_op(lambda F, x, w, b: F.layer_norm(x, (3, 5), w, b, eps=1e-3),
               [((2, 3, 5), (3, 5), (3, 5))])
    p.check_op(lambda F, x, w: F.layer_norm(x, [5], w), [((1, 5), (5,))])
    idx = p.const(IDX)
    p.check_op(lambda F, i, w: F.embedding(i, w), [(idx, (5, 3))])
    p.check_op(lambda F, i, w: F.embedding(i, w, padding_idx=2), [(idx, (5, 3))])
    p.check_op(lambda F, i, w: F.embedding(i, w, padding_idx=-1), [(p.const([4, 4, 1]), (5, 2))])
    p.check_op(lambda F, i, w: F.embedding(i, w), [(p.const(np.array(3)), (5, 2))])  # 0-d
    p.check_op(lambda F, i, w: F.embedding(i, w),
               [(p.const(np.array([[1, 0]], np.int32)), (2, 4))])


# ---- PyTorch parity, modules: same parameters and names, same forward and backward -----------
def _module_cases():
    w = np.linspace(0.5, 2.0, 4).astype(np.float32)
    return [
        ("LeakyReLU", lambda nn: nn.LeakyReLU(0.1), "x"),
        ("ELU", lambda nn: nn.ELU(alpha=0.7), "x"),
        ("SiLU", lambda nn: nn.SiLU(), "x"),
        ("GELU", lambda nn: nn.GELU(), "x"),
        ("GELU_tanh", lambda nn: nn.GELU(approximate="tanh"), "x"),
        ("LayerNorm", lambda nn: nn.LayerNorm(4), "x"),
        ("LayerNorm_2d_no_bias", lambda nn: nn.LayerNorm([3, 4], eps=1e-3, bias=False), "x"),
        ("LayerNorm_no_affine", lambda nn: nn.LayerNorm(4, elementwise_affine=False), "x"),
        ("Embedding", lambda nn: nn.Embedding(6, 4), "idx"),
        ("Embedding_padding", lambda nn: nn.Embedding(6, 4, padding_idx=2), "idx"),
        ("BCELoss", lambda nn: nn.BCELoss(), "probs"),
        ("BCELoss_weight_sum", lambda nn: nn.BCELoss(weight=_lib_tensor(nn, w), reduction="sum"),
         "probs"),
        ("BCEWithLogitsLoss", lambda nn: nn.BCEWithLogitsLoss(), "logits"),
        ("BCEWithLogitsLoss_weights", lambda nn: nn.BCEWithLogitsLoss(
            weight=_lib_tensor(nn, w), reduction="none", pos_weight=_lib_tensor(nn, w * 3)),
         "logits"),
        ("L1Loss", lambda nn: nn.L1Loss(), "pair"),
        ("L1Loss_sum", lambda nn: nn.L1Loss(reduction="sum"), "pair"),
        ("SmoothL1Loss", lambda nn: nn.SmoothL1Loss(beta=0.5), "pair"),
    ]


def _lib_tensor(nn_module, array):
    lib = torch if nn_module is getattr(torch, "nn", None) else minidl
    return lib.tensor(array)


def _module_inputs(kind, rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    if kind == "x":
        return [(x, True)]
    if kind == "idx":
        return [(np.array([[0, 5, 2], [2, 2, 1]]), False)]
    t = rng.uniform(0, 1, (2, 3, 4)).astype(np.float32)
    if kind == "probs":
        return [(rng.uniform(0.02, 0.98, (2, 3, 4)).astype(np.float32), True), (t, True)]
    if kind == "logits":
        return [(x * 3, True), (t, True)]
    return [(x, True), (rng.standard_normal((2, 3, 4)).astype(np.float32), True)]


@pytest.mark.parametrize("name, make, kind", [pytest.param(*c, id=c[0]) for c in _module_cases()])
def test_module_matches_torch(name, make, kind):
    if torch is None:
        pytest.skip(NO_TORCH)
    ours, theirs = make(nn), make(torch.nn)
    assert type(ours).__name__ == type(theirs).__name__
    assert repr(ours) == repr(theirs)
    want_keys = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == want_keys
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    # the same parameters on both sides: ours, loaded into torch's module
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    arrays = _module_inputs(kind, rng)
    m_in = [minidl.tensor(a, requires_grad=g) for a, g in arrays]
    t_in = [torch.tensor(a, requires_grad=g) for a, g in arrays]
    m_out, t_out = ours(*m_in), theirs(*t_in)
    np.testing.assert_allclose(m_out.numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    proj = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
    (m_out * minidl.tensor(proj)).sum().backward()
    (t_out * torch.tensor(proj)).sum().backward()
    for k, (m, t) in enumerate(zip(m_in, t_in)):
        if t.requires_grad:
            np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"input {k}")
    theirs_params = dict(theirs.named_parameters())
    for pname, param in ours.named_parameters():
        np.testing.assert_allclose(param.grad.numpy(), theirs_params[pname].grad.numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=pname)


def test_default_initialisation_is_pytorchs():
    ln = nn.LayerNorm((2, 3))
    assert ln.weight.dtype == np.float32 and ln.weight.requires_grad
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones((2, 3)))
    np.testing.assert_array_equal(ln.bias.numpy(), np.zeros((2, 3)))
    assert nn.LayerNorm(3, elementwise_affine=False).weight is None
    emb = nn.Embedding(400, 50, padding_idx=7)
    w = emb.weight.numpy()
    assert w.dtype == np.float32 and w.shape == (400, 50)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1)
    np.testing.assert_array_equal(w[7], 0)
    assert nn.Embedding(5, 2, padding_idx=-1).padding_idx == 4
    frozen = nn.Embedding.from_pretrained(minidl.tensor(np.eye(3)))
    assert not frozen.weight.requires_grad and frozen(minidl.tensor([2])).tolist() == [[0, 0, 1]]
    assert nn.Embedding.from_pretrained(np.eye(3), freeze=False).weight.requires_grad


def test_loss_weights_are_buffers_that_follow_the_module():
    pos = minidl.tensor([1.0, 2.0])
    loss = nn.BCEWithLogitsLoss(pos_weight=pos)
    assert list(loss.state_dict()) == ["pos_weight"] and loss.pos_weight is pos
    assert list(nn.BCELoss(weight=minidl.tensor([1.0, 2.0])).state_dict()) == ["weight"]
    assert list(nn.BCELoss().state_dict()) == [] and list(nn.L1Loss().state_dict()) == []
    loss.to(minidl.float64)
    assert loss.pos_weight.dtype == np.float64


def test_module_dict():
    d = nn.ModuleDict({"enc": nn.Linear(3, 4), "act": nn.GELU()})
    d["dec"] = nn.Linear(4, 2)
    d.update([("norm", nn.LayerNorm(2))])
    assert list(d) == ["enc", "act", "dec", "norm"] and len(d) == 4 and "act" in d
    assert list(d.keys()) == list(d) and isinstance(d["act"], nn.GELU)
    assert [k for k, _ in d.items()] == list(d) and len(list(d.values())) == 4
    assert list(d.state_dict()) == ["enc.weight", "enc.bias", "dec.weight", "dec.bias",
                                    "norm.weight", "norm.bias"]
    assert len(list(d.parameters())) == 6
    x = minidl.tensor(np.ones((1, 3), np.float32))
    y = d["norm"](d["dec"](d["act"](d["enc"](x))))
    assert y.shape == (1, 2)
    assert isinstance(d.pop("act"), nn.GELU) and "act" not in d
    del d["norm"]
    assert list(d) == ["enc", "dec"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleDict({"a": nn.Linear(2, 1)})

    assert list(Net().state_dict()) == ["heads.a.weight", "heads.a.bias"]
    d.clear()
    assert len(d) == 0
    if torch is not None:
        t = torch.nn.ModuleDict({"enc": torch.nn.Linear(3, 4), "act": torch.nn.GELU()})
        assert repr(nn.ModuleDict({"enc": nn.Linear(3, 4), "act": nn.GELU()})) == repr(t)


def test_nn_exports_the_new_names():
    for name in ("LeakyReLU", "ELU", "SiLU", "GELU", "LayerNorm", "Embedding", "BCELoss",
                 "BCEWithLogitsLoss", "L1Loss", "SmoothL1Loss", "ModuleDict"):
        assert name in nn.__all__ and hasattr(nn, name), name
    for name in ("leaky_relu", "elu", "silu", "gelu", "one_hot", "pad", "binary_cross_entropy",
                 "binary_cross_entropy_with_logits", "l1_loss", "smooth_l1_loss", "layer_norm",
                 "embedding"):
        assert callable(getattr(F, name)), name


# ---- stability at large magnitudes ----------------------------------------------------------
def test_bce_with_logits_is_exact_at_large_logits():
    x = minidl.tensor([100.0, -100.0, 100.0, -100.0, 30.0], requires_grad=True)
    t = minidl.tensor([0.0, 1.0, 1.0, 0.0, 0.5])
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.numpy(), [100.0, 100.0, 0.0, 0.0, 15.0], rtol=1e-6, atol=1e-30)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, -1.0, 0.0, 0.0, 0.5], atol=1e-7)
    pw = F.binary_cross_entropy_with_logits(x, t, pos_weight=minidl.tensor([2.0] * 5),
                                            reduction="sum")
    assert np.isfinite(pw.item()) and abs(pw.item() - 315.0) < 1e-3  # 100 + 2 * 100 + 15
    if torch is not None:
        tx = torch.tensor(x.numpy(), requires_grad=True)
        want = torch.nn.functional.binary_cross_entropy_with_logits(
            tx, torch.tensor(t.numpy()), reduction="none")
        np.testing.assert_allclose(loss.numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-30)
    # the small losses keep their digits: softplus(-100) = e^-100, not 0 from a cancellation
    np.testing.assert_allclose(loss.numpy()[2:4], np.exp(-100.0), rtol=0.1)


def test_bce_at_probabilities_0_and_1_is_clamped_as_in_torch():
    x = minidl.tensor([0.0, 1.0, 1.0, 0.0, 0.5], requires_grad=True)
    t = minidl.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning from log(0)
        loss = F.binary_cross_entropy(x, t, reduction="none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [100.0, 100.0, 0.0, 0.0, np.log(2)], rtol=1e-6)
    assert np.isfinite(x.grad.numpy()).all()
    if torch is not None:
        tx = torch.tensor(x.numpy(), requires_grad=True)
        want = torch.nn.functional.binary_cross_entropy(tx, torch.tensor(t.numpy()),
                                                        reduction="none")
        want.sum().backward()
        np.testing.assert_allclose(loss.numpy(), want.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6)


def test_layer_norm_at_a_large_offset():
    """x = 1e4 + N(0, 1) in float32: E[x^2] - E[x]^2 would cancel to noise; the two-pass
    variance keeps the output at what float64 gives for the same (rounded) input."""
    rng = np.random.default_rng(0)
    x32 = (1e4 + rng.standard_normal((8, 64))).astype(np.float32)
    x = minidl.tensor(x32, requires_grad=True)
    y = F.layer_norm(x, (64,))
    x64 = x32.astype(np.float64)
    ref = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.numpy(), ref, atol=2e-3)
    np.testing.assert_allclose(y.numpy().std(1), 1.0, atol=1e-3)
    (y * minidl.tensor(rng.standard_normal((8, 64)).astype(np.float32))).sum().backward()
    assert np.isfinite(x.grad.numpy()).all()
    if torch is not None:
        want = torch.nn.functional.layer_norm(torch.tensor(x32), (64,))
        np.testing.assert_allclose(y.numpy(), want.numpy(), atol=2e-3)
    assert gradcheck(lambda a: F.layer_norm(a + 1e4, (6,)), [randn((2, 6))], atol=1e-4)


def test_16_bit_inputs_compute_in_float32_and_keep_their_dtype():
    bf16 = minidl.bfloat16
    x = minidl.tensor(np.linspace(-3, 3, 4096, dtype=np.float32)).to(bf16)
    for fn in (F.gelu, F.silu, F.elu, F.leaky_relu, lambda v: F.layer_norm(v, (4096,))):
        out = fn(x)
        assert out.dtype == np.dtype(bf16)
        want = fn(x.float()).numpy()
        np.testing.assert_allclose(out.float().numpy(), want, atol=2e-2, rtol=1e-2)
    t = minidl.tensor(np.full(4096, 0.5, np.float32)).to(bf16)
    for loss in (F.l1_loss(x, t), F.smooth_l1_loss(x, t), F.binary_cross_entropy_with_logits(x, t)):
        assert loss.dtype == np.dtype(bf16)
    # a bfloat16 sum of 4096 terms would stall at 256 without float32 accumulation
    assert abs(F.l1_loss(x * 0, t, reduction="sum").float().item() - 2048) < 16


# ---- bad input: what did not fit is named ----------------------------------------------------
def _raises(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


def test_bad_input_is_refused_with_what_did_not_fit():
    x = minidl.tensor(np.zeros((2, 3), np.float32))
    p = minidl.tensor(np.full((2, 3), 0.5, np.float32))
    idx = minidl.tensor([0, 3])
    cases = [
        (ValueError, r"class value 3 is out of range for num_classes=3",
         lambda: F.one_hot(idx, 3)),
        (IndexError, r"out of range", lambda: F.one_hot(idx, 2)),
        (ValueError, r"non-negative, got -1", lambda: F.one_hot(minidl.tensor([-1, 0]))),
        (TypeError, r"one_hot: input must hold integer indices, got dtype float32",
         lambda: F.one_hot(x)),
        (TypeError, r"int64", lambda: F.one_hot(minidl.tensor([1], dtype=np.int32))),
        (ValueError, r"empty tensor", lambda: F.one_hot(minidl.tensor(np.zeros(0, np.int64)))),
        (ValueError, r"index 3 is out of range for 3 embeddings \(weight shape \(3, 2\)\)",
         lambda: F.embedding(idx, minidl.tensor(np.zeros((3, 2), np.float32)))),
        (IndexError, r"index -1", lambda: F.embedding(minidl.tensor([-1]), x)),
        (TypeError, r"integer indices, got dtype float32", lambda: F.embedding(x, x)),
        (ValueError, r"weight must be a 2-D Tensor", lambda: F.embedding(idx, x[0])),
        (ValueError, r"padding_idx 5 is out of range for 2 embeddings",
         lambda: F.embedding(minidl.tensor([0]), x, padding_idx=5)),
        (ValueError, r"scale_grad_by_freq is not supported with sparse gradients",
         lambda: F.embedding(minidl.tensor([0]), x, scale_grad_by_freq=True, sparse=True)),
        (ValueError, r"target must be between 0 and 1, got values in \[0.5, 1.5\]",
         lambda: F.binary_cross_entropy(p, minidl.tensor([[0.5, 1.5, 1.0]] * 2))),
        (ValueError, r"input must be between 0 and 1", lambda: F.binary_cross_entropy(p - 1, p)),
        (ValueError, r"target shape \(3,\) differs from input shape \(2, 3\)",
         lambda: F.binary_cross_entropy(p, p[0])),
        (TypeError, r"input is float32 and target float64",
         lambda: F.binary_cross_entropy(p, p.to(minidl.float64))),
        (ValueError, r"target shape \(2, 2\) differs from input shape \(2, 3\)",
         lambda: F.binary_cross_entropy_with_logits(x, p[:, :2])),
        (ValueError, r"pos_weight of shape \(2,\) does not broadcast to the input's shape "
         r"\(2, 3\)", lambda: F.binary_cross_entropy_with_logits(x, p, pos_weight=p[0, :2])),
        (ValueError, r"weight of shape \(2, 3, 1\) does not broadcast",
         lambda: F.binary_cross_entropy(p, p, weight=minidl.ones(2, 3, 1))),
        (TypeError, r"target must be a floating-point tensor, got int64",
         lambda: F.binary_cross_entropy_with_logits(x[0, :2], idx)),
        (ValueError, r"reduction must be 'mean', 'sum' or 'none', got 'avg'",
         lambda: F.l1_loss(x, p, reduction="avg")),
        (ValueError, r"l1_loss: input shape \(2, 3\) and target shape \(2, 2\) differ and "
         r"do not broadcast", lambda: F.l1_loss(x, p[:, :2])),
        (ValueError, r"beta must be a number >= 0, got -1", lambda: F.smooth_l1_loss(x, p, beta=-1)),
        (ValueError, r"normalized_shape \(2,\) must be the last dims of the input, got input of "
         r"shape \(2, 3\)", lambda: F.layer_norm(x, 2)),
        (ValueError, r"normalized_shape \(4, 2, 3\) must be the last dims",
         lambda: F.layer_norm(x, (4, 2, 3))),
        (ValueError, r"weight has shape \(2,\), expected normalized_shape \(3,\)",
         lambda: F.layer_norm(x, (3,), p[:, 0])),
        (TypeError, r"input is float64 and weight float32",
         lambda: F.layer_norm(x.to(minidl.float64), (3,), p[0])),
        (TypeError, r"normalized_shape must be ints, got \(2.5,\)",
         lambda: F.layer_norm(x, (2.5,))),
        (ValueError, r"pad \(1, 2, 3\) must have an even length", lambda: F.pad(x, (1, 2, 3))),
        (ValueError, r"pads 3 dims, the input has only 2 \(shape \(2, 3\)\)",
         lambda: F.pad(x, (1, 1, 1, 1, 1, 1))),
        (ValueError, r"pad \(-2, -2\) of dim 1 crops more than its size 3",
         lambda: F.pad(x, (-2, -2))),
        (ValueError, r"mode 'mirror' is not one of", lambda: F.pad(x, (1, 1), mode="mirror")),
        (TypeError, r"pad: pad must be ints, got \(1.5, 1\)", lambda: F.pad(x, (1.5, 1))),
        (TypeError, r"value must be a number", lambda: F.pad(x, (1, 1), value="0")),
        (ValueError, r"approximate must be 'none' or 'tanh', got 'erf'",
         lambda: F.gelu(x, approximate="erf")),
        (ValueError, r"approximate must be 'none' or 'tanh'", lambda: nn.GELU("fast")),
        (TypeError, r"gelu: input must be a floating-point tensor, got int64",
         lambda: F.gelu(idx)),
        (TypeError, r"ModuleDict: 'a' must be a Module, got int",
         lambda: nn.ModuleDict({"a": 1})),
        (TypeError, r"keys must be strings", lambda: nn.ModuleDict({1: nn.ReLU()})),
        (ValueError, r"element 0 should be a \(name, module\) pair",
         lambda: nn.ModuleDict([nn.ReLU()])),
        (ValueError, r"padding_idx 6 is out of range for 6 embeddings",
         lambda: nn.Embedding(6, 2, padding_idx=6)),
    ]
    for exc, match, fn in cases:
        _raises(exc, match, fn)


# ---- autocast: output dtypes and values against torch.autocast("cpu") -----------------------
LOW = ["float16", "bfloat16"]


def _autocast_inputs(lib):
    rng = np.random.default_rng(0)
    arrays = dict(x=rng.standard_normal((4, 6)), w=rng.standard_normal((5, 6)) * 0.5,
                  b=rng.standard_normal(5), t=rng.uniform(0, 1, (4, 5)),
                  y=rng.standard_normal((4, 5)), g=rng.uniform(0.5, 1.5, 5),
                  beta=rng.standard_normal(5), table=rng.standard_normal((7, 3)))
    out = {k: lib.tensor(a.astype(np.float32), requires_grad=True) for k, a in arrays.items()}
    out["idx"] = lib.tensor(np.array([[0, 6], [3, 3]]))
    return out


def _lo(F, v):  # an activation made inside the region: linear gives the low dtype
    return F.linear(v["x"], v["w"], v["b"])


AUTOCAST_CASES = {
    "leaky_relu": lambda F, v: F.leaky_relu(_lo(F, v), 0.1),
    "elu": lambda F, v: F.elu(_lo(F, v)),
    "silu": lambda F, v: F.silu(_lo(F, v)),
    "gelu": lambda F, v: F.gelu(_lo(F, v)),
    "gelu_tanh": lambda F, v: F.gelu(_lo(F, v), approximate="tanh"),
    "pad": lambda F, v: F.pad(_lo(F, v), (1, 2, -1, 0), value=0.5),
    "one_hot": lambda F, v: F.one_hot(v["idx"], 8),
    "layer_norm": lambda F, v: F.layer_norm(_lo(F, v), (5,)),
    "layer_norm_affine_float32": lambda F, v: F.layer_norm(_lo(F, v), (5,), v["g"], v["beta"]),
    "layer_norm_float32": lambda F, v: F.layer_norm(v["y"], (5,), v["g"], v["beta"]),
    "bce": lambda F, v: F.binary_cross_entropy(F.sigmoid(_lo(F, v)), v["t"]),
    "bce_float32": lambda F, v: F.binary_cross_entropy(F.sigmoid(v["y"]), v["t"]),
    "bce_logits": lambda F, v: F.binary_cross_entropy_with_logits(_lo(F, v), v["t"]),
    "bce_logits_low_target": lambda F, v: F.binary_cross_entropy_with_logits(
        _lo(F, v), F.sigmoid(_lo(F, v)), reduction="none"),
    "bce_logits_pos_weight": lambda F, v: F.binary_cross_entropy_with_logits(
        _lo(F, v), v["t"], pos_weight=v["g"].detach()),
    "l1_loss": lambda F, v: F.l1_loss(_lo(F, v), v["y"]),
    "l1_loss_low_low": lambda F, v: F.l1_loss(_lo(F, v), _lo(F, v) * 0.5),
    "smooth_l1_loss": lambda F, v: F.smooth_l1_loss(_lo(F, v), v["y"], beta=0.5),
    "embedding": lambda F, v: F.embedding(v["idx"], v["table"]),
    "embedding_low": lambda F, v: F.embedding(v["idx"], F.linear(v["table"], v["w"][:3, :3])),
}
TOL = {"float16": 4e-3, "bfloat16": 3e-2}


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("case", sorted(AUTOCAST_CASES))
def test_autocast_cpu_dtype_and_values_match_torch(case, low):
    if torch is None:
        pytest.skip(NO_TORCH)
    from _torch_parity import MINIDL, TORCH

    fn = AUTOCAST_CASES[case]
    with torch.autocast("cpu", dtype=getattr(torch, low)):
        want = fn(TORCH, _autocast_inputs(torch))
    with minidl.autocast("cpu", dtype=getattr(minidl, low)):
        got = fn(MINIDL, _autocast_inputs(minidl))
    assert str(got.dtype) == str(want.dtype).replace("torch.", ""), \
        f"{case}: minidl {got.dtype}, torch {want.dtype}"
    tol = TOL[low] * 4
    np.testing.assert_allclose(got.numpy().astype(np.float32), want.detach().float().numpy(),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("low", LOW)
def test_autocast_gradients_arrive_in_float32(low):
    v = _autocast_inputs(minidl)
    with minidl.autocast("cpu", dtype=getattr(minidl, low)):
        h = F.gelu(F.layer_norm(_lo(F, v), (5,), v["g"], v["beta"]))
        loss = F.binary_cross_entropy_with_logits(h, v["t"]) + F.smooth_l1_loss(h, v["y"])
    assert loss.dtype == np.float32
    loss.backward()
    for name in ("x", "w", "b", "g", "beta", "t", "y"):
        assert v[name].grad is not None and v[name].grad.dtype == np.float32, name


def test_autocast_cuda_policy_for_the_new_ops(fake_cuda):  # noqa: F811 (the fixture)
    """PyTorch's CUDA table: layer_norm and the losses in float32; binary_cross_entropy
    refused inside the region; activations, pad and embedding in their input's dtype."""
    v = {k: t.to("cuda") for k, t in _autocast_inputs(minidl).items()}
    with minidl.autocast("cuda"):  # float16
        lo = _lo(F, v)
        assert lo.dtype == np.float16
        for out in (F.layer_norm(lo, (5,)), F.layer_norm(lo, (5,), v["g"], v["beta"]),
                    F.binary_cross_entropy_with_logits(lo, v["t"]), F.l1_loss(lo, v["y"]),
                    F.smooth_l1_loss(lo, v["y"])):
            assert out.dtype == np.float32 and out.device == "cuda"
        for out in (F.leaky_relu(lo), F.elu(lo), F.silu(lo), F.pad(lo, (1, 1))):
            assert out.dtype == np.float16
        assert F.embedding(v["idx"], v["table"]).dtype == np.float32
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            F.binary_cross_entropy(F.sigmoid(lo), v["t"])
    assert F.binary_cross_entropy(F.sigmoid(v["y"]), v["t"]).dtype == np.float32


# ---- Embedding's max_norm (renormed in place) and scale_grad_by_freq, as torch's ---------------------
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


# ---- layers: input by torch's keyword, Identity's arguments, Linear of zero features -----------------
@pytest.mark.parametrize("layer", ["Linear", "ReLU", "Identity", "Dropout", "Flatten",
                                   "Sequential"])
def test_core_layers_take_their_input_by_torchs_keyword(layer):
    m = {"Linear": lambda: nn.Linear(2, 2), "Sequential": lambda: nn.Sequential(nn.ReLU())}.get(
        layer, getattr(nn, layer))().eval()
    x = minidl.ones(1, 2)
    np.testing.assert_array_equal(m(input=x).numpy(), m(x).numpy())


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


# ---- integer inputs, softmax's dtype=, F.batch_norm without running stats, Hardtanh's old names ------
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


def test_hardtanh_takes_torchs_deprecated_min_value_and_max_value():
    with pytest.warns(FutureWarning) as caught:
        layer = nn.Hardtanh(min_value=-2.0, max_value=0.5)
    assert [str(w.message).split("`")[1] for w in caught] == ["min_value", "max_value"]
    assert (layer.min_val, layer.max_val) == (-2.0, 0.5)
    np.testing.assert_array_equal(layer(minidl.tensor([-3.0, 0.0, 3.0])).numpy(),
                                  [-2.0, 0.0, 0.5])


# ---- losses: the legacy size_average / reduce and element weights, as torch's ------------------------
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


# ---- NaN (and infinities) through the piecewise activations, as torch passes them --------------------
VALUES = np.array([np.nan, -1.0, 0.0, 1.0, np.inf, -np.inf, 0.5, -0.5, 0.3])


@pytest.mark.parametrize("name,args", [("threshold", (0.5, 2.0)), ("hardshrink", ()),
                                       ("softshrink", ())])
def test_nan_input_stays_nan(name, args):
    y = getattr(F, name)(minidl.tensor(VALUES, dtype=minidl.float64), *args)
    assert np.isnan(y.numpy()[0]), f"{name} hid a NaN input"


@pytest.mark.parametrize("name,args", [("threshold", (0.5, 2.0)), ("hardshrink", ()),
                                       ("softshrink", ()), ("elu", ()), ("selu", ()),
                                       ("celu", ())])
def test_nan_and_infinity_match_torch_forward_and_backward(name, args):
    torch = pytest.importorskip("torch")
    x = minidl.tensor(VALUES, requires_grad=True, dtype=minidl.float64)
    xt = torch.tensor(VALUES, requires_grad=True)
    y = getattr(F, name)(x, *args)
    yt = getattr(torch.nn.functional, name)(xt, *args)
    with np.errstate(invalid="ignore"):
        y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-12)
    mine, theirs = x.grad.numpy(), xt.grad.numpy()
    nan = np.isnan(VALUES)
    np.testing.assert_allclose(mine[~nan], theirs[~nan], rtol=1e-12)
    # at a NaN input torch's ELU backward (x <= 0 ? the exponential branch : the slope) gives
    # the slope in its AVX-512 code and NaN in its AVX2 code; minidl gives the slope (the
    # formula's answer, since NaN <= 0 is false) on every CPU
    if name in ("elu", "selu", "celu"):
        slope = 1.0507009873554805 if name == "selu" else 1.0
        assert (mine[nan] == slope).all() and (np.isnan(theirs[nan]) | (theirs[nan] == slope)).all()
    else:
        np.testing.assert_array_equal(mine[nan], theirs[nan])


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # float32 runs the numba kernels
@pytest.mark.parametrize("name,args", [("relu", ()), ("relu6", ()), ("hardtanh", (-0.5, 0.5)),
                                       ("leaky_relu", (0.1,))])
def test_relu_family_passes_the_gradient_at_nan_as_torch(name, args, dtype):
    torch = pytest.importorskip("torch")
    values = np.concatenate([VALUES, np.linspace(-8, 8, 40)])  # enough for the kernels' path
    x = minidl.tensor(values, requires_grad=True, dtype=getattr(minidl, dtype))
    xt = torch.tensor(values, requires_grad=True, dtype=getattr(torch, dtype))
    weights = np.arange(values.size, dtype=dtype) + 1
    y = getattr(F, name)(x, *args)
    yt = getattr(torch.nn.functional, name)(xt, *args)
    (g,) = minidl.autograd.grad((y * minidl.tensor(weights)).sum(), x, create_graph=True)
    (gt,) = torch.autograd.grad((yt * torch.tensor(weights)).sum(), xt, create_graph=True)
    np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    np.testing.assert_array_equal(g.detach().numpy(), gt.detach().numpy())
    # at NaN torch passes ReLU's gradient on (threshold_backward zeroes where y <= 0), scales
    # leaky ReLU's, and stops hardtanh's (it passes only where lo < x < hi)
    expected = {"relu": 1.0, "leaky_relu": 0.1}.get(name, 0.0) * weights[0]
    assert g.detach().numpy()[0] == expected


def test_add_relu_passes_the_gradient_at_nan_as_relu_of_a_sum():
    a = minidl.tensor(VALUES, requires_grad=True, dtype=minidl.float64)
    b = minidl.tensor(np.ones_like(VALUES), requires_grad=True, dtype=minidl.float64)
    F.add_relu(a, b).sum().backward()
    a2 = minidl.tensor(VALUES, requires_grad=True, dtype=minidl.float64)
    F.relu(a2 + minidl.tensor(np.ones_like(VALUES))).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), a2.grad.numpy())
    assert a.grad.numpy()[0] == 1.0


def test_relu_gradient_at_nan_on_a_fake_gpu_as_on_the_cpu(monkeypatch, tmp_path):
    """The CUDA kernel body of ReLU's backward (compiled for the host) passes the gradient at a
    NaN output as the numba kernel does."""
    import warnings

    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    values = np.concatenate([VALUES, np.linspace(-8, 8, 40)]).astype(np.float32)

    def run(device):
        x = minidl.tensor(values, device=device, requires_grad=True)
        (F.relu(x) * minidl.tensor(np.arange(values.size, dtype=np.float32) + 1,
                                   device=device)).sum().backward()
        return x.grad.numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = run("cpu")
        _fake_gpu.install(monkeypatch, lib)
        gpu = run("cuda")
    np.testing.assert_array_equal(gpu, cpu)
    assert gpu[0] == 1.0
# ---- embedding_bag: a bad padding_idx is refused before max_norm changes the weight -----------

def test_embedding_bag_checks_padding_idx_before_renormalising_the_weight():
    w = minidl.tensor(np.random.default_rng(2).standard_normal((5, 3)) * 3)
    before = w.numpy().copy()
    with pytest.raises(ValueError, match="padding_idx 9 is out of range"):
        F.embedding_bag(minidl.tensor([0, 1]), w, minidl.tensor([0]), max_norm=0.1,
                        padding_idx=9)
    assert np.array_equal(w.numpy(), before)
    F.embedding_bag(minidl.tensor([0, 1]), w, minidl.tensor([0]), max_norm=0.1, padding_idx=-1)
    assert np.linalg.norm(w.numpy()[:2], axis=1).max() <= 0.1 + 1e-6


# ---- Hardtanh with equal bounds ---------------------------------------------------------------

def _t(shape, seed=0, requires_grad=True):
    a = np.random.default_rng(seed).standard_normal(shape)
    return minidl.tensor(a, dtype=minidl.float64, requires_grad=requires_grad)


def _parity(fm, ft, arrays, atol=1e-10):
    """Forward and input gradients of fm (minidl) and ft (torch) on the same float64 arrays."""
    torch = pytest.importorskip("torch")
    mt = [minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in arrays]
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    mo, to = fm(*mt), ft(*tt)
    np.testing.assert_allclose(mo.numpy(), to.detach().numpy(), atol=atol, equal_nan=True)
    w = np.random.default_rng(5).standard_normal(tuple(to.shape))
    (mo * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    (to * torch.tensor(w)).sum().backward()
    for m, t in zip(mt, tt):
        mg = np.zeros(m.shape) if m.grad is None else m.grad.numpy()
        tg = np.zeros(tuple(t.shape)) if t.grad is None else t.grad.numpy()
        np.testing.assert_allclose(mg, tg, atol=atol)


def f64(x, requires_grad=False):
    return minidl.tensor(np.asarray(x, dtype=np.float64), dtype=minidl.float64,
                         requires_grad=requires_grad)


_OUTSIDE = [-2.0, 7.0, 0.2, -0.3]        # x where each gradient below is 0


_BIG_GRADS = [-np.inf, np.nan, np.inf, np.nan]


def test_hardtanh_layer_refuses_equal_bounds_as_torch():
    with pytest.raises(ValueError, match="cannot be greater than max_val .* nor equal"):
        nn.Hardtanh(0.5, 0.5)
    assert nn.Hardtanh(-0.5, 0.5)(minidl.tensor([-2.0, 2.0])).numpy().tolist() == [-0.5, 0.5]


# ---- gradients at the kinks: hardswish at +-3, lp_pool of a zero window, margin losses --------

def test_hardswish_gradient_at_its_bounds_is_torchs():
    x = minidl.tensor([-3.0, 3.0, -2.5, 2.5, -4.0, 4.0], dtype=minidl.float64,
                      requires_grad=True)
    F.hardswish(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 1.0, -1 / 3, 4 / 3, 0.0, 1.0])
    assert gradcheck(F.hardswish, (_t((3, 4)),))


def test_kink_gradients_parity_with_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    _parity(F.hardswish, tf.hardswish, [np.array([-3.0, 3.0, -1.0, 0.0, 5.0])])
    _parity(lambda a: F.lp_pool2d(a, 2, 2), lambda a: tf.lp_pool2d(a, 2, 2),
            [np.zeros((1, 1, 4, 4))])
    _parity(lambda a: F.multi_margin_loss(a, minidl.tensor([0, 2]), p=2),
            lambda a: tf.multi_margin_loss(a, torch.tensor([0, 2]), p=2),
            [np.array([[1.0, 0.0, 2.0], [0.5, 1.5, 0.5]])])
    _parity(lambda a: F.multi_margin_loss(a, minidl.tensor([0, 2])),
            lambda a: tf.multi_margin_loss(a, torch.tensor([0, 2])),
            [np.array([[1.0, 0.0, 2.0], [0.5, 1.5, 0.5]])])


# ---- prelu of a 1-D input with several parameters ---------------------------------------------

def test_prelu_of_a_one_dimensional_input_says_it_has_a_single_channel():
    with pytest.raises(ValueError, match="single channel"):  # was "give 1 or 1"
        nn.PReLU(3)(minidl.randn(3))
    with pytest.raises(ValueError, match="give 1 or 4"):
        nn.PReLU(3)(minidl.randn(2, 4))
    assert nn.PReLU()(minidl.randn(3)).shape == (3,)


# ---- activations: piecewise-constant gradients are selects ------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("name,args,zero_at", [
    ("relu6", (), [0, 1]), ("hardtanh", (), [0, 1]), ("threshold", (0.5, 2.0), [0, 2, 3]),
    ("hardsigmoid", (), [1]), ("hardshrink", (), [2, 3]), ("softshrink", (), [2, 3])])
def test_piecewise_constant_activation_gradient_is_zero_for_an_inf_or_nan_gradient(
        dtype, name, args, zero_at):
    """relu6, hardtanh, threshold, hardsigmoid, hardshrink and softshrink multiplied the
    incoming gradient by their 0/1 derivative, so an inf or NaN gradient where the derivative
    is 0 gave NaN (and a RuntimeWarning); torch's kernels select, giving 0 there (ReLU's
    already did)."""
    dt = getattr(minidl, dtype)
    x = minidl.tensor(np.asarray(_OUTSIDE, np.float32), dtype=dt, requires_grad=True)
    getattr(F, name)(x, *args).backward(minidl.tensor(np.asarray(_BIG_GRADS, np.float32),
                                                      dtype=dt))
    g = x.grad.float().numpy()
    assert (g[zero_at] == 0).all() and not np.signbit(g[zero_at]).any()


def test_piecewise_constant_activation_gradients_match_torch():
    torch = pytest.importorskip("torch")
    xs = np.asarray([np.inf, -np.inf, -0.0, 0.0, 1.5, -2.0, 7.0, 0.2, -0.3, 3.0], np.float32)
    gs = np.asarray([1, 1, 1, 1, np.inf, -np.inf, np.nan, -np.inf, np.nan, 2.0], np.float32)
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        for name, args in [("relu6", ()), ("hardtanh", ()), ("threshold", (0.5, 2.0)),
                           ("hardsigmoid", ()), ("hardshrink", ()), ("softshrink", ())]:
            tx = torch.tensor(xs).to(getattr(torch, dtype)).requires_grad_()
            getattr(torch.nn.functional, name)(tx, *args).backward(
                torch.tensor(gs).to(tx.dtype))
            mx = minidl.tensor(xs, dtype=getattr(minidl, dtype), requires_grad=True)
            getattr(F, name)(mx, *args).backward(minidl.tensor(gs, dtype=getattr(minidl, dtype)))
            np.testing.assert_array_equal(mx.grad.float().numpy(), tx.grad.float().numpy(),
                                          err_msg=f"{name} {dtype}")


def test_piecewise_constant_activation_double_backward_is_a_select():
    """The same in graph mode (create_graph=True): 0, not NaN, where the derivative is 0."""
    x = f64([-2.0, 0.5, 7.0], requires_grad=True)
    g = f64([np.inf, 1.0, np.nan], requires_grad=True)
    (gx,) = minidl.autograd.grad(F.relu6(x), x, g, create_graph=True)
    np.testing.assert_array_equal(gx.numpy(), [0.0, 1.0, 0.0])
    assert gradgradcheck(F.hardtanh, (f64([-0.5, 0.25, 0.75], requires_grad=True),))


# ---- dropout of an integer tensor -------------------------------------------------------------

def test_dropout_refuses_an_integer_tensor_it_would_scale():
    x = minidl.ones(2, 3, dtype=minidl.int64)
    with pytest.raises(TypeError, match="dropout: input must be a floating-point"):
        F.dropout(x, 0.5)
    assert F.dropout(x, 1.0).dtype == minidl.int64 and not F.dropout(x, 1.0).numpy().any()
    assert F.dropout(minidl.ones(2, dtype=minidl.bool), 1.0).dtype == minidl.bool
    assert F.dropout(x, 0.5, training=False) is x


# ---- reflect / replicate padding with negative amounts crop as torch --------------------------

def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


_EMPTY_BATCH_CONVS = {
    "conv2d": (F.conv2d, (3, 2, 3, 3), 3, {}),
    "conv2d_1x1_strided": (F.conv2d, (3, 2, 1, 1), 3, {"stride": 2}),
    "conv2d_dilated": (F.conv2d, (4, 2, 3, 3), 4, {"dilation": 2}),
    "conv2d_grouped_dilated": (F.conv2d, (4, 1, 3, 3), 4, {"groups": 2, "dilation": 2}),
    "conv2d_depthwise": (F.conv2d, (4, 1, 3, 3), 4, {"groups": 2}),
    "conv_transpose2d": (F.conv_transpose2d, (2, 3, 3, 3), 3, {"stride": 2}),
    "conv_transpose2d_grouped": (F.conv_transpose2d, (2, 3, 3, 3), 6, {"stride": 2, "groups": 2}),
}


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_negative_non_constant_padding_crops(mode):
    x = _t((2, 3, 5))
    y = F.pad(x, (-1, 2), mode=mode)
    assert y.shape == (2, 3, 6)
    assert gradcheck(lambda a: F.pad(a, (2, -3), mode=mode), (_t((1, 2, 5)),))
    m = nn.ReflectionPad2d((-1, 2, 0, -1)) if mode == "reflect" else \
        nn.ReplicationPad2d((-1, 2, 0, -1))
    assert m(_t((1, 2, 4, 5))).shape == (1, 2, 3, 6)
    with pytest.raises(ValueError, match="leaves no element"):
        F.pad(x, (-3, -2), mode=mode)


def test_circular_padding_crops_but_refuses_a_crop_and_a_pad_on_one_dim():
    x = _t((2, 3, 5))
    assert F.pad(x, (-1, -2), mode="circular").shape == (2, 3, 2)
    with pytest.raises(ValueError, match="circular"):
        F.pad(x, (-1, 2), mode="circular")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_negative_non_constant_padding_parity_with_torch(mode):
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(3).standard_normal((2, 3, 5, 6))
    pads = [(-1, -2, 0, -1), (-2, 0, -1, -1)] if mode == "circular" else \
        [(-1, 2, 3, -2), (2, -4, -1, 1), (-1, -1, 0, 0)]
    for pad in pads:
        _parity(lambda x: F.pad(x, pad, mode=mode),
                lambda x: torch.nn.functional.pad(x, pad, mode=mode), [a])


# ---- convolutions with an empty kernel --------------------------------------------------------

@pytest.mark.parametrize("fn, dims", [("conv1d", 1), ("conv2d", 2), ("conv3d", 3),
                                      ("conv_transpose1d", 1), ("conv_transpose2d", 2),
                                      ("conv_transpose3d", 3)])
def test_convolution_refuses_an_empty_kernel(fn, dims):
    x = minidl.randn(1, 1, *(5,) * dims)
    w = minidl.randn(1, 1, *((3,) * (dims - 1) + (0,)))
    with pytest.raises(ValueError, match="kernel size should be greater than zero"):
        getattr(F, fn)(x, w)


def test_conv2d_layer_and_core_op_refuse_an_empty_kernel():
    with pytest.warns(UserWarning):  # torch's zero-element init warning
        layer = nn.Conv2d(1, 1, (3, 0))
    with pytest.raises(ValueError, match="kernel size should be greater than zero"):
        layer(minidl.randn(1, 1, 5, 5))
    with pytest.raises(ValueError, match="3x0"):
        minidl.functional.conv2d(minidl.randn(1, 1, 5, 5), minidl.randn(1, 1, 3, 0))


# ---- convolutions of an empty batch -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(_EMPTY_BATCH_CONVS))
def test_convolution_of_an_empty_batch_has_zero_gradients(name):
    """A convolution of a batch of 0 samples raised in backward (every kernel reshaped the
    output gradient to (0, C, -1), which NumPy cannot infer), and conv_transpose2d already in
    forward; torch gives an empty output and zero gradients (first and second order)."""
    fn, w_shape, co, kw = _EMPTY_BATCH_CONVS[name]
    x = f64(np.zeros((0, 2, 5, 5)), requires_grad=True)
    w = f64(_rand(*w_shape), requires_grad=True)
    b = f64(_rand(co, seed=1), requires_grad=True)
    y = fn(x, w, b, **kw)
    assert y.shape[:2] == (0, co)
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == (co,)
    assert not w.grad.numpy().any() and not b.grad.numpy().any()
    assert gradcheck(lambda x, w, b: fn(x, w, b, **kw), (x, w, b))
    assert gradgradcheck(lambda x, w, b: fn(x, w, b, **kw), (x, w, b))


def test_convolution_of_an_empty_batch_matches_torch():
    torch = pytest.importorskip("torch")
    for name, (fn, w_shape, co, kw) in sorted(_EMPTY_BATCH_CONVS.items()):
        w_np, b_np = _rand(*w_shape), _rand(co, seed=1)
        x = f64(np.zeros((0, 2, 5, 5)), requires_grad=True)
        w, b = f64(w_np, requires_grad=True), f64(b_np, requires_grad=True)
        y = fn(x, w, b, **kw)
        (y * 2).sum().backward()
        tx = torch.zeros(0, 2, 5, 5, dtype=torch.float64, requires_grad=True)
        tw = torch.tensor(w_np, requires_grad=True)
        tb = torch.tensor(b_np, requires_grad=True)
        ty = getattr(torch.nn.functional, fn.__name__)(tx, tw, tb, **kw)
        (ty * 2).sum().backward()
        assert y.shape == tuple(ty.shape), name
        for m, t in ((x, tx), (w, tw), (b, tb)):
            np.testing.assert_array_equal(m.grad.numpy(), t.grad.numpy())


# ---- cross_entropy with class probabilities and an ignore_index -------------------------------

def test_cross_entropy_refuses_ignore_index_with_probability_targets():
    logits = _t((3, 4))
    probs = F.softmax(_t((3, 4), 1, requires_grad=False), dim=1)
    with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point"):
        F.cross_entropy(logits, probs, ignore_index=1)
    with pytest.raises(RuntimeError, match="ignore_index"):
        nn.CrossEntropyLoss(ignore_index=0)(logits, probs)
    F.cross_entropy(logits, probs)  # the default ignore_index is fine


# ---- losses: operands of shapes that do not broadcast are named -------------------------------

@pytest.mark.parametrize("call, names", [
    (lambda: F.margin_ranking_loss(_t(3), _t(4), _t(3)), ["margin_ranking_loss", "(4,)"]),
    (lambda: F.hinge_embedding_loss(_t(3), _t(4)), ["hinge_embedding_loss", "(3,)", "(4,)"]),
    (lambda: F.cosine_embedding_loss(_t((3, 4)), _t((3, 4)), _t(4)),
     ["cosine_embedding_loss", "(4,)", "(3, 4)"]),
    (lambda: F.kl_div(_t((3, 4)), _t((4, 4)), reduction="sum"), ["kl_div", "(3, 4)", "(4, 4)"]),
    (lambda: F.poisson_nll_loss(_t((3, 4)), _t((4, 4))), ["poisson_nll_loss", "(4, 4)"]),
])
def test_elementwise_losses_name_operands_that_do_not_broadcast(call, names):
    with pytest.raises(ValueError) as info:
        call()
    for n in names:
        assert n in str(info.value)


# ---- cross_entropy / nll_loss whose kept rows all weigh 0 -------------------------------------

@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_whose_rows_all_weigh_zero_is_nan_with_a_nan_gradient(label_smoothing):
    x = _t((3, 3))
    w = minidl.tensor([1.0, 0.0, 3.0], dtype=minidl.float64)
    loss = F.cross_entropy(x, minidl.tensor([1, 1, 1]), weight=w,
                           label_smoothing=label_smoothing)
    assert np.isnan(loss.item())
    loss.backward()
    assert np.isnan(x.grad.numpy()).all()
    # every row ignored stays a NaN loss with a zero gradient, as torch's
    y = _t((3, 3))
    loss = F.cross_entropy(y, minidl.tensor([1, 1, 1]), weight=w, ignore_index=1,
                           label_smoothing=label_smoothing)
    loss.backward()
    assert np.isnan(loss.item()) and not y.grad.numpy().any()


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_zero_weight_rows_parity_with_torch(label_smoothing):
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(1).standard_normal((3, 3))
    for tgt, w in (([1, 1, 1], [1.0, 0.0, 3.0]), ([1, 0, 1], [0.0, 0.0, 3.0]),
                   ([1, 0, 2], [1.0, 0.0, 3.0])):
        _parity(lambda x: F.cross_entropy(x, minidl.tensor(tgt), weight=minidl.tensor(
                    w, dtype=minidl.float64), label_smoothing=label_smoothing),
                lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(tgt), weight=torch.tensor(
                    w, dtype=torch.float64), label_smoothing=label_smoothing), [a])


# ---- multi-margin losses at the kink: no gradient where the hinge is exactly zero -------------

def test_multi_margin_losses_give_no_gradient_where_the_hinge_is_exactly_zero():
    x = minidl.tensor([[1.0, 0.0, 2.0]], dtype=minidl.float64, requires_grad=True)
    F.multi_margin_loss(x, minidl.tensor([0])).backward()  # class 1 sits at the margin
    np.testing.assert_allclose(x.grad.numpy(), [[-1 / 3, 0.0, 1 / 3]])
    x.grad = None
    F.multilabel_margin_loss(x, minidl.tensor([[0, -1, 1]])).backward()
    np.testing.assert_allclose(x.grad.numpy(), [[-1 / 3, 0.0, 1 / 3]])


# ---- normalize / pairwise_distance: every p torch takes ---------------------------------------

@pytest.mark.parametrize("p", [0.0, float("inf"), -float("inf"), -1.5])
def test_normalize_and_pairwise_distance_take_zero_infinite_and_negative_p(p):
    x = _t((3, 4))
    y = F.normalize(x, p=p, dim=1)
    assert y.shape == (3, 4) and np.isfinite(y.numpy()).all()
    d = F.pairwise_distance(x, _t((3, 4), 1), p=p)
    assert d.shape == (3,)
    if np.isfinite(p) and p != 0:
        assert gradcheck(lambda a: F.normalize(a, p=p, dim=1), (_t((3, 4)),))


@pytest.mark.parametrize("p", [0.0, float("inf"), -float("inf"), -1.5])
def test_normalize_and_pairwise_distance_p_parity_with_torch(p):
    torch = pytest.importorskip("torch")
    a, b = (np.random.default_rng(s).standard_normal((3, 4)) for s in (1, 2))
    _parity(lambda x: F.normalize(x, p=p, dim=0), lambda x: torch.nn.functional.normalize(
        x, p=p, dim=0), [a])
    _parity(lambda x, y: F.pairwise_distance(x, y, p=p, keepdim=True),
            lambda x, y: torch.nn.functional.pairwise_distance(x, y, p=p, keepdim=True), [a, b])


# ---- normalisation layers on an empty batch ---------------------------------------------------

@pytest.mark.parametrize("make, shape", [
    (lambda: nn.BatchNorm2d(3), (0, 3, 2, 2)), (lambda: nn.BatchNorm1d(3), (0, 3)),
    (lambda: nn.GroupNorm(2, 4), (0, 4, 3)),
    (lambda: nn.InstanceNorm1d(3, affine=True, track_running_stats=True), (0, 3, 4))])
@pytest.mark.parametrize("training", [True, False])
def test_normalisation_of_an_empty_batch_is_empty_and_keeps_the_statistics(make, shape,
                                                                           training):
    m = make().train(training)
    x = minidl.randn(*shape, requires_grad=True)
    y = m(x)
    assert y.shape == shape
    y.sum().backward()
    assert x.grad.shape == shape
    if getattr(m, "running_mean", None) is not None:
        assert np.array_equal(m.running_mean.numpy(), np.zeros(shape[1]))
        assert np.array_equal(m.running_var.numpy(), np.ones(shape[1]))


def test_batch_norm_of_an_empty_batch_parity_with_torch():
    torch = pytest.importorskip("torch")
    m, t = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    assert m(minidl.randn(0, 3)).shape == tuple(t(torch.randn(0, 3)).shape)
    assert int(m.num_batches_tracked.item()) == int(t.num_batches_tracked.item())


# ---- Unflatten --------------------------------------------------------------------------------

def test_unflatten_refuses_a_dim_out_of_range_instead_of_wrapping():
    x = _t((2, 6))
    with pytest.raises(IndexError, match="out of range"):
        nn.Unflatten(3, (2, 3))(x)
    with pytest.raises(IndexError, match="out of range"):
        nn.Unflatten(-3, (2, 3))(x)
    with pytest.raises(ValueError, match="unflatten: sizes"):
        nn.Unflatten(1, (2, 2))(x)
    assert nn.Unflatten(-1, [3, -1])(x).shape == (2, 3, 2)


# ---- adaptive pools: nothing to pool from, and an empty batch ---------------------------------

@pytest.mark.parametrize("fn, shape", [
    ("adaptive_avg_pool1d", (2, 3, 0)), ("adaptive_avg_pool2d", (1, 1, 0, 5)),
    ("adaptive_avg_pool3d", (1, 2, 3, 0, 5)), ("adaptive_max_pool1d", (2, 3, 0)),
    ("adaptive_max_pool2d", (3, 0, 4)), ("adaptive_max_pool3d", (1, 2, 3, 4, 0))])
def test_adaptive_pools_refuse_an_input_without_positions(fn, shape):
    with pytest.raises(ValueError, match="non-zero size for non-batch dimensions"):
        getattr(F, fn)(minidl.randn(*shape), 2)


@pytest.mark.parametrize("fn, shape, out", [
    ("adaptive_max_pool1d", (0, 3, 5), (0, 3, 2)), ("adaptive_max_pool2d", (2, 0, 5, 4),
                                                     (2, 0, 2, 2)),
    ("adaptive_max_pool3d", (0, 2, 3, 4, 5), (0, 2, 2, 2, 2))])
def test_adaptive_max_pool_of_an_empty_batch_is_empty(fn, shape, out):
    x = minidl.randn(*shape, requires_grad=True)
    y, idx = getattr(F, fn)(x, 2, return_indices=True)
    assert y.shape == out and idx.shape == out and idx.dtype == minidl.int64
    y.sum().backward()
    assert x.grad.shape == shape


# ---- minidl.functional.adaptive_avg_pool2d (the core op) --------------------------------------

def test_core_adaptive_avg_pool2d_refuses_an_empty_input_and_a_zero_output():
    import minidl.functional as C
    with pytest.raises(ValueError, match="non-zero size"):
        C.adaptive_avg_pool2d(minidl.randn(1, 1, 0, 5), 2)  # was a grid of NaN
    with pytest.raises(ValueError, match="output_size"):
        C.adaptive_avg_pool2d(minidl.randn(1, 1, 5, 5), 0)  # was a ZeroDivisionError
    assert C.adaptive_avg_pool2d(minidl.randn(0, 1, 5, 5), (2, 3)).shape == (0, 1, 2, 3)


# ---- lp_pool of an all-zero window: a zero gradient, not NaN ----------------------------------

@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_lp_pool_of_an_all_zero_window_has_a_zero_gradient_not_nan(p):
    x = minidl.zeros(1, 1, 4, 4, dtype=minidl.float64, requires_grad=True)
    F.lp_pool2d(x, p, 2).sum().backward()
    assert not np.isnan(x.grad.numpy()).any()
    y = minidl.tensor(np.abs(np.random.default_rng(4).standard_normal((1, 2, 6))) + 0.1,
                      dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda a: F.lp_pool1d(a, p, 2), (y,))
