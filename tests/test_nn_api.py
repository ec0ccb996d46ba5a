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
