"""affine_grid and grid_sample, the new losses (ctc_loss, multi_margin_loss,
multilabel_margin_loss, triplet_margin_with_distance_loss) and layers (embedding_bag, rrelu,
lp_pool, max_unpool, channel_shuffle, the upsample aliases, the lazy modules): float64 gradient
checks, PyTorch parity forward and backward, errors, autocast dtypes and the fake GPU."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn  # noqa: F401  (the layers below)
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import leaf, randn

torch = pytest.importorskip("torch")
from _nn_parity import check_module  # noqa: E402,F401
from _torch_parity import MINIDL, TORCH, _Made, check_op, const  # noqa: E402

TF = torch.nn.functional


def _grid(shape, low=-1.3, high=1.3, seed=5):
    return np.random.default_rng(seed).uniform(low, high, shape)


# ---- affine_grid / grid_sample -----------------------------------------------------------------
SAMPLE_MODES = [(m, p, a) for m in ("bilinear", "nearest", "bicubic")
                for p in ("zeros", "border", "reflection") for a in (True, False)]


@pytest.mark.parametrize("mode,padding_mode,align_corners", SAMPLE_MODES,
                         ids=["-".join(map(str, c)) for c in SAMPLE_MODES])
def test_grid_sample_2d_parity(mode, padding_mode, align_corners):
    check_op(lambda F, x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
             [((2, 3, 5, 6), const(_grid((2, 4, 7, 2)).astype(np.float32)))])
    if mode != "nearest":  # nearest has a zero grid gradient in both; the others carry one
        g = _grid((2, 4, 7, 2)).astype(np.float32)
        check_op(lambda F, x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
                 [((2, 3, 5, 6), _Made(lambda rng: g))])


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_3d_parity(mode, padding_mode, align_corners):
    g = _grid((1, 3, 4, 2, 3)).astype(np.float32)
    check_op(lambda F, x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
             [((1, 2, 4, 5, 3), _Made(lambda rng: g))])


@pytest.mark.parametrize("mode,padding_mode,align_corners",
                         [("bilinear", "zeros", False), ("bilinear", "reflection", True),
                          ("bicubic", "border", False), ("bicubic", "zeros", True),
                          ("nearest", "reflection", False)])
def test_grid_sample_gradcheck_float64(mode, padding_mode, align_corners):
    x = randn((2, 2, 4, 5), seed=1)
    g = leaf(_grid((2, 3, 4, 2)), requires_grad=mode != "nearest")
    assert gradcheck(lambda x, g: F.grid_sample(x, g, mode, padding_mode, align_corners), [x, g])


def test_grid_sample_3d_gradcheck_float64():
    x = randn((1, 2, 3, 4, 3), seed=1)
    g = leaf(_grid((1, 2, 3, 2, 3)))
    assert gradcheck(lambda x, g: F.grid_sample(x, g, "bilinear", "border", False), [x, g])


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 3, 4, 2), (2, 3, 1, 4)])
def test_affine_grid_parity_and_gradcheck(size, align_corners):
    dims = len(size) - 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's unit-size note
        check_op(lambda F, t: F.affine_grid(t, size, align_corners), [(2, dims, dims + 1)])
        assert gradcheck(lambda t: F.affine_grid(t, size, align_corners),
                         [randn((2, dims, dims + 1))])


def test_affine_grid_then_grid_sample_identity_and_module_chain():
    theta = minidl.tensor([[[1.0, 0, 0], [0, 1, 0]]], requires_grad=True)
    x = minidl.randn(1, 2, 4, 5)
    grid = F.affine_grid(theta, (1, 2, 4, 5), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False)
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-6)
    y.sum().backward()
    assert theta.grad is not None and theta.grad.shape == (1, 2, 3)


def test_affine_grid_and_grid_sample_errors_and_warnings():
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 1, 2, 2))
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        F.grid_sample(minidl.randn(1, 1, 2, 2), minidl.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError, match="Nx2x3"):
        F.affine_grid(minidl.randn(1, 3, 4), (1, 1, 2, 2), False)
    with pytest.raises(ValueError, match="Nx3x4"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 1, 2, 2, 2), False)
    with pytest.raises(NotImplementedError, match="4D and 5D"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 1, 2), False)
    with pytest.raises(ValueError, match="positive output size"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 0, 2, 2), False)
    with pytest.raises(ValueError, match="floating point"):
        F.affine_grid(minidl.tensor([[[1, 0, 0], [0, 1, 0]]]), (1, 1, 2, 2), False)
    x = minidl.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="expected mode"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 2), "area", align_corners=False)
    with pytest.raises(ValueError, match="expected padding_mode"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 2), padding_mode="wrap", align_corners=False)
    with pytest.raises(ValueError, match="grid of shape"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 3), align_corners=False)
    with pytest.raises(ValueError, match="bicubic"):
        F.grid_sample(minidl.randn(1, 1, 2, 2, 2), minidl.zeros(1, 1, 1, 1, 3), "bicubic",
                      align_corners=False)
    with pytest.raises(TypeError, match="same dtype"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 2, dtype=minidl.float64), align_corners=False)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_grid_autocast_dtypes_match_torch_cpu(low):
    th = np.random.default_rng(0).standard_normal((1, 2, 3)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    g = _grid((1, 3, 3, 2)).astype(np.float32)
    with torch.autocast("cpu", dtype=getattr(torch, low)):
        t_grid = TF.affine_grid(torch.tensor(th), (1, 2, 4, 4), align_corners=False)
        t_out = TF.grid_sample(torch.tensor(x).to(getattr(torch, low)),
                               torch.tensor(g).to(getattr(torch, low)), align_corners=False)
    with minidl.autocast("cpu", dtype=getattr(minidl, low)):
        m_grid = F.affine_grid(minidl.tensor(th), (1, 2, 4, 4), align_corners=False)
        m_out = F.grid_sample(minidl.tensor(x).to(getattr(minidl, low)),
                              minidl.tensor(g).to(getattr(minidl, low)), align_corners=False)
    assert str(m_grid.dtype) == str(t_grid.dtype).replace("torch.", "")
    assert str(m_out.dtype) == str(t_out.dtype).replace("torch.", "") == "float32"
    np.testing.assert_allclose(m_out.numpy(), t_out.numpy(), rtol=1e-5, atol=1e-5)



# ---- losses ------------------------------------------------------------------------------------
CTC_TARGETS = np.array([[1, 2, 2, 0], [3, 1, 4, 4], [2, 0, 0, 0]])
CTC_TARGET_LENGTHS, CTC_INPUT_LENGTHS = [3, 4, 1], [7, 5, 6]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("blank", [0, 5])
def test_ctc_loss_parity(reduction, blank):
    targets = np.where(CTC_TARGETS == blank, 2, CTC_TARGETS) if blank else CTC_TARGETS
    check_op(lambda F, x: F.ctc_loss(x.log_softmax(2), F.tensor(targets), CTC_INPUT_LENGTHS,
                                     CTC_TARGET_LENGTHS, blank, reduction), [(7, 3, 6)])
    # raw log_probs: torch's gradient formula (exp(lp) - posterior), matched as is
    check_op(lambda F, x: F.ctc_loss(x, F.tensor(targets), F.tensor(CTC_INPUT_LENGTHS),
                                     F.tensor(CTC_TARGET_LENGTHS), blank, reduction), [(7, 3, 6)])


def test_ctc_loss_concatenated_unbatched_and_module():
    flat = np.concatenate([CTC_TARGETS[k, :n] for k, n in enumerate(CTC_TARGET_LENGTHS)])
    check_op(lambda F, x: F.ctc_loss(x.log_softmax(2), F.tensor(flat), CTC_INPUT_LENGTHS,
                                     CTC_TARGET_LENGTHS), [(7, 3, 5)])
    check_op(lambda F, x: F.ctc_loss(x.log_softmax(1), F.tensor([1, 3, 3]), F.tensor(6),
                                     F.tensor(3), reduction="none"), [(6, 5)])
    ours, theirs = nn.CTCLoss(blank=4, zero_infinity=True), torch.nn.CTCLoss(4, zero_infinity=True)
    assert repr(ours) == repr(theirs)
    lp = np.random.default_rng(0).standard_normal((5, 2, 5)).astype(np.float32)
    check_module(ours, theirs, [lp, const(np.array([[0, 1, 1], [2, 3, 0]])).array,
                                np.array([5, 4]), np.array([3, 2])], grad_inputs={0})


@pytest.mark.parametrize("zero_infinity", [False, True])
def test_ctc_loss_impossible_alignment(zero_infinity):
    # target [1, 1] needs 3 frames (a blank between the repeats): 2 frames give an infinite loss
    def fn(F, x):
        return F.ctc_loss(x.log_softmax(2), F.tensor([[1, 1], [2, 0]]), [2, 4], [2, 1],
                          reduction="none", zero_infinity=zero_infinity)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    mx, tx = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    m, t = fn(MINIDL, mx), fn(TORCH, tx)
    np.testing.assert_allclose(m.numpy(), t.detach().numpy(), rtol=1e-5)
    assert np.isinf(m.numpy()[0]) != zero_infinity
    m.sum().backward(), t.sum().backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_ctc_loss_gradcheck_float64():
    targets = minidl.tensor(CTC_TARGETS)
    assert gradcheck(lambda x: F.ctc_loss(x.log_softmax(2), targets, CTC_INPUT_LENGTHS,
                                          CTC_TARGET_LENGTHS), [randn((7, 3, 5))])


def test_ctc_loss_errors():
    lp = minidl.randn(5, 2, 4).log_softmax(2)
    t = minidl.tensor([[1, 2], [3, 1]])
    with pytest.raises(ValueError, match="input_lengths"):
        F.ctc_loss(lp, t, [6, 5], [2, 2])
    with pytest.raises(ValueError, match="target_lengths"):
        F.ctc_loss(lp, t, [5, 5], [3, 2])
    with pytest.raises(ValueError, match="blank"):
        F.ctc_loss(lp, minidl.tensor([[0, 2], [3, 1]]), [5, 5], [2, 2])
    with pytest.raises(IndexError, match="target labels"):
        F.ctc_loss(lp, minidl.tensor([[1, 7], [3, 1]]), [5, 5], [2, 2])
    with pytest.raises(TypeError, match="integer"):
        F.ctc_loss(lp, t.float(), [5, 5], [2, 2])
    with pytest.raises(ValueError, match="reduction"):
        F.ctc_loss(lp, t, [5, 5], [2, 2], reduction="avg")


MARGIN_CASES = [
    ("multi_margin_p1", lambda F, x: F.multi_margin_loss(x, F.tensor([0, 3, 4, 1]))),
    ("multi_margin_p2_weight", lambda F, x: F.multi_margin_loss(
        x, F.tensor([0, 3, 4, 1]), 2, 0.7, F.tensor([1.0, 0.5, 2.0, 1.5, 0.2]), reduction="sum")),
    ("multi_margin_none", lambda F, x: F.multi_margin_loss(x, F.tensor([2, 2, 0, 1]),
                                                           margin=2.0, reduction="none")),
    ("multilabel_margin", lambda F, x: F.multilabel_margin_loss(
        x, F.tensor([[3, 0, -1, 1, 2], [1, 1, 2, -1, 0], [-1, 2, 3, 0, 0], [0, 1, 2, 3, 4]]))),
    ("multilabel_margin_none", lambda F, x: F.multilabel_margin_loss(
        x, F.tensor([[4, -1, 0, 0, 0], [0, 1, -1, 0, 0], [2, 3, 1, -1, 0], [1, -1, 1, 1, 1]]),
        reduction="none")),
    ("triplet_distance", lambda F, x: F.triplet_margin_with_distance_loss(
        x[:2], x[2:] * 0.5, x[1:3].flip(0), margin=0.5, swap=True)),
    ("triplet_distance_cosine", lambda F, x: F.triplet_margin_with_distance_loss(
        x[:2], x[2:], x[1:3], distance_function=lambda a, b: 1 - F.cosine_similarity(a, b),
        reduction="none")),
]


@pytest.mark.parametrize("name,fn", MARGIN_CASES, ids=[c[0] for c in MARGIN_CASES])
def test_margin_losses_parity_and_gradcheck(name, fn):
    check_op(fn, [(4, 5)])
    assert gradcheck(lambda x: fn(MINIDL, x), [randn((4, 5), seed=3)])


def test_margin_loss_modules_and_unbatched():
    w = np.array([1.0, 0.5, 2.0], dtype=np.float32)
    ours = nn.MultiMarginLoss(p=2, margin=0.5, weight=minidl.tensor(w))
    theirs = torch.nn.MultiMarginLoss(p=2, margin=0.5, weight=torch.tensor(w))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    check_module(ours, theirs, [x, np.array([0, 2, 1, 1])], grad_inputs={0})
    check_module(nn.MultiLabelMarginLoss(reduction="sum"),
                 torch.nn.MultiLabelMarginLoss(reduction="sum"),
                 [x, np.array([[0, -1, 1], [2, 1, -1], [1, 1, 1], [-1, 0, 0]])], grad_inputs={0})
    check_module(nn.TripletMarginWithDistanceLoss(margin=0.3, swap=True),
                 torch.nn.TripletMarginWithDistanceLoss(margin=0.3, swap=True), [x, x * 2, -x])
    for fn in (lambda F, x: F.multi_margin_loss(x, F.tensor(1)),
               lambda F, x: F.multilabel_margin_loss(x, F.tensor([2, 0, -1, 1]))):
        check_op(fn, [(4,)])


def test_margin_loss_errors():
    x = minidl.randn(3, 4)
    with pytest.raises(ValueError, match="only p == 1 and p == 2"):
        F.multi_margin_loss(x, minidl.tensor([0, 1, 2]), p=3)
    with pytest.raises(ValueError, match="one-dimensional"):
        F.multi_margin_loss(x, minidl.tensor([0, 1, 2]), weight=minidl.ones(2, 2))
    with pytest.raises(IndexError, match="out of bounds"):
        F.multi_margin_loss(x, minidl.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="target"):
        F.multi_margin_loss(x, minidl.tensor([0, 1]))
    with pytest.raises(ValueError, match="inconsistent target size"):
        F.multilabel_margin_loss(x, minidl.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        F.triplet_margin_with_distance_loss(x, x, x, margin=0)
    with pytest.raises(ValueError, match="expected margin"):
        nn.TripletMarginWithDistanceLoss(margin=-1)
    with pytest.raises(ValueError, match="same number of dimensions"):
        F.triplet_margin_with_distance_loss(x, x[0], x)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_loss_autocast_dtypes_match_torch_cpu(low):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    lp = rng.standard_normal((6, 2, 5)).astype(np.float32)
    cases = [
        lambda F, x, lp: F.multi_margin_loss(x, F.tensor([0, 1, 2, 3])),
        lambda F, x, lp: F.multilabel_margin_loss(x, F.tensor([[0, -1, 0, 0, 0]] * 4)),
        lambda F, x, lp: F.triplet_margin_with_distance_loss(x, x * 2, x * 3),
        lambda F, x, lp: F.ctc_loss(lp, F.tensor([[1, 2], [3, 3]]), [6, 6], [2, 2]),
    ]
    for fn in cases:
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = fn(TORCH, torch.tensor(x).to(getattr(torch, low)),
                      torch.tensor(lp).to(getattr(torch, low)))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(MINIDL, minidl.tensor(x).to(getattr(minidl, low)),
                     minidl.tensor(lp).to(getattr(minidl, low)))
        assert str(got.dtype) == str(want.dtype).replace("torch.", ""), (got.dtype, want.dtype)
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05,
                                   atol=0.05)


# ---- the numpy-backed fake GPU (tests/_fake_gpu.py) ---------------------------------------------
FAKE_GPU = [
    ("grid_sample", lambda F, x, g: F.grid_sample(x, g, "bilinear", "reflection", False)
     + F.grid_sample(x, g, "bicubic", "zeros", True), [(1, 2, 4, 5), (1, 3, 3, 2)]),
    ("grid_sample_3d", lambda F, x, g: F.grid_sample(x, g, "bilinear", "border", True),
     [(1, 2, 3, 4, 3), (1, 2, 2, 2, 3)]),
    ("affine_grid", lambda F, t: F.affine_grid(t, (1, 1, 3, 4), False), [(1, 2, 3)]),
]


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path_factory.mktemp("fake_gpu"))
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    return lib


def _run_on(fn, arrays, device):
    xs = [minidl.tensor(a, requires_grad=True, device=device) for a in arrays]
    y = fn(F, *xs)
    proj = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    (y * minidl.tensor(proj, device=device)).sum().backward()
    return y.numpy(), [x.grad.numpy() for x in xs]


@pytest.mark.parametrize("name,fn,shapes", FAKE_GPU, ids=[c[0] for c in FAKE_GPU])
def test_fake_gpu_matches_cpu(name, fn, shapes, monkeypatch, host_kernels):
    import _fake_gpu

    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-1.2, 1.2, s).astype(np.float32) for s in shapes]
    want_y, want_g = _run_on(fn, arrays, "cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    got_y, got_g = _run_on(fn, arrays, "cuda")
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_g, want_g):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
