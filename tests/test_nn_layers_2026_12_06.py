"""affine_grid and grid_sample, the new losses (ctc_loss, multi_margin_loss,
multilabel_margin_loss, triplet_margin_with_distance_loss) and layers (embedding_bag, rrelu,
lp_pool, max_unpool, channel_shuffle, the upsample aliases, the lazy modules): float64 gradient
checks, PyTorch parity forward and backward, errors, autocast dtypes and the fake GPU."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import leaf, randn

torch = pytest.importorskip("torch")
from _nn_parity import check_module  # noqa: E402
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



# ---- embedding_bag -----------------------------------------------------------------------------
BAG_INPUT = np.array([1, 2, 4, 5, 4, 3, 2, 9])
BAG_OFFSETS = np.array([0, 4, 4, 6])


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 4])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_embedding_bag_parity(mode, padding_idx, include_last_offset):
    offsets = np.append(BAG_OFFSETS, 8) if include_last_offset else BAG_OFFSETS
    check_op(lambda F, w: F.embedding_bag(F.tensor(BAG_INPUT), w, F.tensor(offsets), mode=mode,
                                          include_last_offset=include_last_offset,
                                          padding_idx=padding_idx),
             [_Made(lambda rng: rng.permutation(40).reshape(10, 4) * 0.1)])
    check_op(lambda F, w: F.embedding_bag(F.tensor(BAG_INPUT.reshape(2, 4)), w, mode=mode,
                                          padding_idx=padding_idx),
             [_Made(lambda rng: rng.permutation(40).reshape(10, 4) * 0.1)])


def test_embedding_bag_per_sample_weights_and_gradcheck():
    check_op(lambda F, w, p: F.embedding_bag(F.tensor(BAG_INPUT), w, F.tensor(BAG_OFFSETS),
                                             mode="sum", per_sample_weights=p, padding_idx=2),
             [((10, 4), (8,))])
    idx, off = minidl.tensor(BAG_INPUT), minidl.tensor(BAG_OFFSETS)
    for mode in ("sum", "mean"):
        assert gradcheck(lambda w: F.embedding_bag(idx, w, off, mode=mode), [randn((10, 4))])
    assert gradcheck(lambda w, p: F.embedding_bag(idx, w, off, mode="sum", per_sample_weights=p),
                     [randn((10, 4)), randn((8,), seed=2)])
    w = leaf(np.random.default_rng(0).permutation(40).reshape(10, 4) * 0.1)
    assert gradcheck(lambda w: F.embedding_bag(idx, w, off, mode="max"), [w])


@pytest.mark.parametrize("kwargs", [dict(), dict(mode="max", padding_idx=2),
                                    dict(mode="sum", include_last_offset=True)])
def test_embedding_bag_module(kwargs):
    ours, theirs = nn.EmbeddingBag(10, 3, **kwargs), torch.nn.EmbeddingBag(10, 3, **kwargs)
    assert repr(ours) == repr(theirs)
    offsets = np.append(BAG_OFFSETS, 8) if kwargs.get("include_last_offset") else BAG_OFFSETS
    check_module(ours, theirs, [BAG_INPUT, offsets])
    big, tbig = nn.EmbeddingBag(200, 16, padding_idx=3), torch.nn.EmbeddingBag(200, 16, padding_idx=3)
    assert abs(big.weight.numpy().std() - tbig.weight.detach().numpy().std()) < 0.1
    assert not big.weight.numpy()[3].any()
    pre = nn.EmbeddingBag.from_pretrained(minidl.ones(3, 2), mode="sum")
    assert not pre.weight.requires_grad
    np.testing.assert_array_equal(pre(minidl.tensor([[0, 2]])).numpy(), [[2.0, 2.0]])


def test_embedding_bag_max_norm_renormalises_rows_in_place():
    w = np.random.default_rng(0).standard_normal((10, 4)) * 2
    mw, tw = minidl.tensor(w, dtype="float64"), torch.tensor(w)
    for kwargs in (dict(max_norm=1.5), dict(max_norm=2.0, norm_type=3, mode="max")):
        got = F.embedding_bag(minidl.tensor(BAG_INPUT), mw, minidl.tensor(BAG_OFFSETS), **kwargs)
        want = TF.embedding_bag(torch.tensor(BAG_INPUT), tw, torch.tensor(BAG_OFFSETS), **kwargs)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)
        np.testing.assert_allclose(mw.numpy(), tw.numpy(), rtol=1e-12)  # the rows it touched
    layer = nn.EmbeddingBag(10, 3, max_norm=1.0, mode="sum")
    assert repr(layer) == repr(torch.nn.EmbeddingBag(10, 3, max_norm=1.0, mode="sum"))
    layer(minidl.tensor([[1, 2, 3]]))
    assert np.linalg.norm(layer.weight.numpy()[[1, 2, 3]], axis=1).max() <= 1.0 + 1e-6


def test_embedding_bag_errors():
    w = minidl.randn(10, 3)
    idx = minidl.tensor(BAG_INPUT)
    with pytest.raises(ValueError, match="offsets has to be a 1D Tensor but got None"):
        F.embedding_bag(idx, w)
    with pytest.raises(ValueError, match="offsets has to be None"):
        F.embedding_bag(idx.reshape(2, 4), w, minidl.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"offsets\[0\] has to be 0"):
        F.embedding_bag(idx, w, minidl.tensor([1, 4]))
    with pytest.raises(NotImplementedError, match="only supported for mode='sum'"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), per_sample_weights=minidl.ones(8))
    with pytest.raises(ValueError, match="same shape as the input"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="sum",
                        per_sample_weights=minidl.ones(7))
    with pytest.raises(ValueError, match="mode has to be one of"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="median")
    with pytest.raises(IndexError, match="out of range"):
        F.embedding_bag(minidl.tensor([0, 10]), w, minidl.tensor([0]))
    with pytest.raises(TypeError, match="integer"):
        F.embedding_bag(minidl.tensor([0.0, 1.0]), w, minidl.tensor([0]))
    with pytest.raises(ValueError, match="max mode does not support scaling"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="max", scale_grad_by_freq=True)
    with pytest.raises(ValueError, match="not supported in minidl"):
        nn.EmbeddingBag(10, 3, scale_grad_by_freq=True)
    with pytest.raises(ValueError, match="max mode does not support sparse weights"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="max", sparse=True)


# ---- rrelu -------------------------------------------------------------------------------------
def test_rrelu_eval_matches_torch_and_train_draws_slopes():
    check_op(lambda F, x: F.rrelu(x), [(4, 5)])
    check_op(lambda F, x: F.rrelu(x, 0.1, 0.5, training=False), [(3, 4)])
    assert gradcheck(lambda x: F.rrelu(x, 0.2, 0.4), [randn((3, 4))])
    minidl.manual_seed(0)
    x = minidl.tensor(-np.ones((200, 50), dtype=np.float32), requires_grad=True)
    y = F.rrelu(x, 0.1, 0.3, training=True)
    slopes = -y.numpy()
    assert 0.1 <= slopes.min() and slopes.max() <= 0.3 and slopes.std() > 0.04
    assert abs(slopes.mean() - 0.2) < 0.01
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), slopes)  # the gradient is each element's slope
    pos = F.rrelu(minidl.ones(3), training=True)
    np.testing.assert_array_equal(pos.numpy(), 1.0)
    minidl.manual_seed(1)
    a = F.rrelu(minidl.tensor(-np.ones(8, np.float32)), training=True).numpy()
    minidl.manual_seed(1)
    b = F.rrelu(minidl.tensor(-np.ones(8, np.float32)), training=True).numpy()
    np.testing.assert_array_equal(a, b)  # minidl's generator: seeded, reproducible


def test_rrelu_module_and_errors():
    ours, theirs = nn.RReLU(0.1, 0.3), torch.nn.RReLU(0.1, 0.3)
    assert repr(ours) == repr(theirs)
    assert repr(nn.RReLU(inplace=True)) == repr(torch.nn.RReLU(inplace=True))
    ours.eval(), theirs.eval()
    check_module(ours, theirs, [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)])
    ours.train()
    y = ours(minidl.tensor(-np.ones((50, 50), np.float32))).numpy()
    assert y.std() > 0.01  # random slopes in training mode
    x = minidl.randn(3, 4)
    out = F.rrelu(x, inplace=True)
    assert out is x
    y = minidl.tensor(-np.ones(3, np.float32))
    assert F.rrelu_(y) is y
    np.testing.assert_allclose(y.numpy(), -(1 / 8 + 1 / 3) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="Lower bound"):
        F.rrelu(x, 0.5, 0.1)


# ---- lp_pool, max_unpool, channel_shuffle, *_with_indices, upsample aliases --------------------
POOL_CASES = [
    ("lp_pool1d", lambda F, x: F.lp_pool1d(x, 2, 3, 2), [(2, 3, 9)]),
    ("lp_pool1d_ceil", lambda F, x: F.lp_pool1d(x.abs() + 0.1, 1.5, 2, ceil_mode=True),
     [(2, 3, 7)]),
    ("lp_pool2d", lambda F, x: F.lp_pool2d(x, 2, (2, 3), 1), [(2, 3, 5, 6)]),
    ("lp_pool2d_p3", lambda F, x: F.lp_pool2d(x.abs() + 0.1, 3.0, 2), [(1, 2, 6, 6)]),
    ("lp_pool2d_inf", lambda F, x: F.lp_pool2d(x, float("inf"), 2), [_Made(
        lambda rng: (rng.permutation(72).reshape(2, 4, 3, 3) - 36) * 0.1)]),
    ("channel_shuffle", lambda F, x: F.channel_shuffle(x, 3), [(2, 6, 2, 3)]),
    ("channel_shuffle_3d", lambda F, x: F.channel_shuffle(x, 2), [(2, 4, 5)]),
    ("max_unpool2d", lambda F, x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2),
     [_Made(lambda rng: rng.permutation(96).reshape(2, 3, 4, 4) * 0.1)]),
    ("max_unpool2d_size", lambda F, x: F.max_unpool2d(
        *F.max_pool2d(x, 2, 2, 1, return_indices=True), 2, 2, 1, output_size=(1, 2, 7, 6)),
     [_Made(lambda rng: rng.permutation(84).reshape(1, 2, 7, 6) * 0.1)]),
    ("max_unpool1d", lambda F, x: F.max_unpool1d(*F.max_pool1d(x, 2, return_indices=True), 2),
     [_Made(lambda rng: rng.permutation(42).reshape(2, 3, 7) * 0.1)]),
    ("max_unpool3d", lambda F, x: F.max_unpool3d(*F.max_pool3d(x, 2, return_indices=True), 2),
     [_Made(lambda rng: rng.permutation(128).reshape(1, 2, 4, 4, 4) * 0.1)]),
    ("max_pool2d_with_indices", lambda F, x: F.max_pool2d_with_indices(x, 2, 1)[0]
     * F.max_pool2d_with_indices(x, 2, 1)[1].float(),
     [_Made(lambda rng: rng.permutation(48).reshape(1, 3, 4, 4) * 0.1)]),
    ("max_pool1d_with_indices", lambda F, x: F.max_pool1d_with_indices(x, 3, 2, 1)[0],
     [_Made(lambda rng: rng.permutation(27).reshape(1, 3, 9) * 0.1)]),
    ("adaptive_max_pool_with_indices", lambda F, x: F.adaptive_max_pool2d_with_indices(x, 2)[0]
     * F.adaptive_max_pool2d_with_indices(x, 2)[1].float()
     + F.adaptive_max_pool1d_with_indices(x[:, :, 0], 3)[0].sum()
     + F.adaptive_max_pool3d_with_indices(x.unsqueeze(2), 1)[0].sum(),
     [_Made(lambda rng: rng.permutation(60).reshape(1, 3, 4, 5) * 0.1)]),
]


@pytest.mark.parametrize("name,fn,shapes", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_layers_parity_and_gradcheck(name, fn, shapes):
    check_op(fn, shapes)
    spec = shapes[0]
    x = spec.make(np.random.default_rng(0)) if isinstance(spec, _Made) else \
        np.random.default_rng(0).standard_normal(spec)
    assert gradcheck(lambda x: fn(MINIDL, x), [leaf(x)])


def test_with_indices_and_unpool_modules():
    x = (np.random.default_rng(0).permutation(60).reshape(1, 3, 4, 5) * 0.1).astype(np.float32)
    y, i = F.max_pool2d_with_indices(minidl.tensor(x), 2)
    ty, ti = TF.max_pool2d_with_indices(torch.tensor(x), 2)
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
    for cls, args in (("MaxUnpool2d", ((2, 3), 1, 1)), ("MaxUnpool1d", (2,)),
                      ("MaxUnpool3d", (2, 1))):
        assert repr(getattr(nn, cls)(*args)) == repr(getattr(torch.nn, cls)(*args))
    pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
    tpool, tunpool = torch.nn.MaxPool2d(2, return_indices=True), torch.nn.MaxUnpool2d(2)
    out, idx = pool(minidl.tensor(x))
    tout, tidx = tpool(torch.tensor(x))
    np.testing.assert_array_equal(unpool(out, idx, output_size=(1, 3, 5, 5)).numpy(),
                                  tunpool(tout, tidx, output_size=(1, 3, 5, 5)).numpy())
    u = F.max_unpool2d(out[0], idx[0], 2, output_size=(4, 5))  # unbatched (C, H, W)
    assert u.shape == (3, 4, 5)
    with pytest.raises(ValueError, match="invalid output_size"):
        unpool(out, idx, output_size=(9, 9))
    with pytest.raises(ValueError, match="2 or 4 elements"):
        unpool(out, idx, output_size=(4, 4, 4))
    with pytest.raises(IndexError, match="invalid max index"):
        F.max_unpool2d(out, idx + 100, 2)
    with pytest.raises(ValueError, match="same as that of the input"):
        F.max_unpool2d(out, idx[:, :2], 2)


def test_lp_pool_and_channel_shuffle_modules():
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    for ours, theirs in ((nn.LPPool2d(2, 3, 2), torch.nn.LPPool2d(2, 3, 2)),
                         (nn.LPPool2d(2.5, (2, 3), 1, True), torch.nn.LPPool2d(2.5, (2, 3), 1, True)),
                         (nn.ChannelShuffle(2), torch.nn.ChannelShuffle(2))):
        assert repr(ours) == repr(theirs)
        check_module(ours, theirs, [np.abs(x) + 0.1])
    ours, theirs = nn.LPPool1d(2, 3), torch.nn.LPPool1d(2, 3)
    assert repr(ours) == repr(theirs)
    check_module(ours, theirs, [x[:, :, 0]])
    with pytest.raises(ValueError, match="divisible by groups"):
        F.channel_shuffle(minidl.randn(1, 5, 2, 2), 2)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        F.channel_shuffle(minidl.randn(4, 4), 2)


def test_upsample_aliases_warn_and_match_interpolate():
    x = minidl.randn(1, 2, 3, 4)
    for fn, want in ((lambda: F.upsample(x, scale_factor=2, mode="bilinear", align_corners=False),
                      F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
                     (lambda: F.upsample_nearest(x, (5, 7)), F.interpolate(x, (5, 7))),
                     (lambda: F.upsample_bilinear(x, scale_factor=2),
                      F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))):
        with pytest.warns(UserWarning, match="is deprecated. Use `nn.functional.interpolate`"):
            got = fn()
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_op(lambda F, x: F.upsample_bilinear(x, scale_factor=2), [(1, 2, 3, 4)])
        check_op(lambda F, x: F.upsample_nearest(x, scale_factor=3), [(1, 2, 3, 4)])


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_layer_autocast_dtypes_match_torch_cpu(low):
    x = (np.random.default_rng(0).permutation(96).reshape(2, 3, 4, 4) * 0.1).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32)
    cases = [
        lambda F, x, w: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2),
        lambda F, x, w: F.lp_pool2d(x, 2, 2),
        lambda F, x, w: F.channel_shuffle(x, 3),
        lambda F, x, w: F.rrelu(x),
        lambda F, x, w: F.embedding_bag(F.tensor([[1, 2], [3, 4]]), w),
    ]
    for fn in cases:
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = fn(TORCH, torch.tensor(x).to(getattr(torch, low)),
                      torch.tensor(w).to(getattr(torch, low)))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(MINIDL, minidl.tensor(x).to(getattr(minidl, low)),
                     minidl.tensor(w).to(getattr(minidl, low)))
        assert str(got.dtype) == str(want.dtype).replace("torch.", ""), (got.dtype, want.dtype)
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05,
                                   atol=0.05)



# ---- lazy modules ------------------------------------------------------------------------------
LAZY = [
    ("LazyLinear", (3,), {}, (2, 5)),
    ("LazyLinear", (4,), dict(bias=False), (2, 3, 6)),
    ("LazyConv2d", (4, 3), dict(padding=1, groups=2), (2, 6, 5, 5)),
    ("LazyConv2d", (2, (2, 3)), dict(stride=2), (3, 5, 6)),
    ("LazyConv1d", (3, 2), {}, (2, 4, 6)),
    ("LazyConv3d", (2, 2), {}, (1, 3, 3, 3, 3)),
    ("LazyBatchNorm2d", (), {}, (4, 3, 2, 2)),
    ("LazyBatchNorm1d", (), dict(affine=False), (4, 3)),
    ("LazyBatchNorm3d", (), dict(momentum=0.2), (2, 3, 2, 2, 2)),
    ("LazyConvTranspose2d", (4, 3), dict(groups=2, stride=2), (1, 6, 3, 3)),
    ("LazyConvTranspose1d", (2, 3), dict(output_padding=1, stride=2), (2, 3, 4)),
    ("LazyConvTranspose3d", (2, 2), dict(bias=False), (1, 2, 2, 3, 2)),
    ("LazyInstanceNorm2d", (), {}, (2, 3, 4, 4)),
    ("LazyInstanceNorm1d", (), dict(affine=False, track_running_stats=False), (2, 3, 5)),
    ("LazyInstanceNorm3d", (), dict(momentum=0.3), (2, 2, 2, 3, 2)),
]


@pytest.mark.filterwarnings("ignore:input's size at dim=1")  # torch's note on affine=False
@pytest.mark.parametrize("cls,args,kwargs,shape", LAZY,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(LAZY)])
def test_lazy_modules_match_torch(cls, args, kwargs, shape):
    ours, theirs = getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.has_uninitialized_params() == theirs.has_uninitialized_params()
    for name, p in ours.named_parameters():
        assert type(p).__name__ == "UninitializedParameter", name
        with pytest.raises(RuntimeError, match="uninitialized parameter"):
            p.shape
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours(minidl.tensor(x)), theirs(torch.tensor(x))
    assert type(ours).__name__ == type(theirs).__name__ == cls.replace("Lazy", "")
    assert isinstance(ours, getattr(nn, cls.replace("Lazy", "")))
    assert repr(ours) == repr(theirs)
    for (name, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert type(p) is nn.Parameter and p.shape == tuple(tp.shape), name
    if "Norm" not in cls:  # the layer's own init ran: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        w = ours.weight.numpy()
        bound = 1 / np.sqrt(np.prod(w.shape[1:]))
        assert 0.5 * bound < np.abs(w).max() <= bound + 1e-6
    else:  # running statistics started at 0 and 1 and took the first batch in, as torch's
        for k in theirs.state_dict():
            np.testing.assert_allclose(ours.state_dict()[k].numpy(),
                                       theirs.state_dict()[k].numpy(), rtol=1e-5, atol=1e-6)
    check_module(ours, theirs, [x])


def test_lazy_modules_optimizer_load_and_dtype():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2))
    opt = minidl.optim.SGD(model.parameters(), lr=0.1)  # before the shapes are known
    y = model(minidl.randn(3, 5))
    y.sum().backward()
    before = model[0].weight.numpy().copy()
    opt.step()
    assert model[0].weight.shape == (4, 5) and not np.allclose(model[0].weight.numpy(), before)
    fresh = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2))
    fresh.load_state_dict(model.state_dict())  # the shapes come from the checkpoint
    assert fresh[2].weight.shape == (2, 4) and fresh[0].in_features == 5
    x = minidl.randn(2, 5)
    np.testing.assert_allclose(fresh(x).numpy(), model(x).numpy())
    lazy = nn.LazyConv2d(3, 2, dtype=minidl.float64)
    assert lazy(minidl.randn(1, 2, 4, 4).double()).dtype == np.float64
    assert lazy.weight.dtype == np.float64
    bn = nn.LazyBatchNorm2d()
    bn(minidl.randn(4, 3, 2, 2) * 2 + 1)
    assert bn.num_features == 3 and bn.num_batches_tracked.item() == 1
    assert 0.05 < float(bn.running_mean.numpy().mean()) < 0.2
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.LazyConv2d(4, 3, groups=2)(minidl.randn(1, 3, 5, 5))


# ---- the numpy-backed fake GPU (tests/_fake_gpu.py) ---------------------------------------------
FAKE_GPU = [
    ("grid_sample", lambda F, x, g: F.grid_sample(x, g, "bilinear", "reflection", False)
     + F.grid_sample(x, g, "bicubic", "zeros", True), [(1, 2, 4, 5), (1, 3, 3, 2)]),
    ("grid_sample_3d", lambda F, x, g: F.grid_sample(x, g, "bilinear", "border", True),
     [(1, 2, 3, 4, 3), (1, 2, 2, 2, 3)]),
    ("affine_grid", lambda F, t: F.affine_grid(t, (1, 1, 3, 4), False), [(1, 2, 3)]),
    ("embedding_bag", lambda F, w: F.embedding_bag(
        minidl.tensor([1, 2, 4, 5, 4], device=w.device), w,
        minidl.tensor([0, 2], device=w.device), mode="max")
     + F.embedding_bag(minidl.tensor([[1, 2], [4, 4]], device=w.device), w, mode="sum"), [(6, 3)]),
    ("pool_layers", lambda F, x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)
     + F.rrelu(x) + F.channel_shuffle(x, 2) * 2 + F.interpolate(F.lp_pool2d(x, 2, 2), (4, 4)),
     [(1, 4, 4, 4)]),
    ("losses", lambda F, x: F.multi_margin_loss(x, minidl.tensor([0, 2], device=x.device))
     + F.multilabel_margin_loss(x, minidl.tensor([[1, -1, 0], [2, 0, -1]], device=x.device))
     + F.ctc_loss(x.reshape(2, 1, 3).log_softmax(2), minidl.tensor([[1]], device=x.device),
                  [2], [1]), [(2, 3)]),
]


def _run_on(fn, arrays, device):
    import _fake_gpu

    return _fake_gpu.forward_backward(fn, F, arrays, device)


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


NEW_FUNCTIONS = ["conv3d", "conv_transpose3d", "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d",
                 "adaptive_max_pool3d", "dropout3d", "affine_grid", "grid_sample", "ctc_loss",
                 "multi_margin_loss", "multilabel_margin_loss",
                 "triplet_margin_with_distance_loss", "embedding_bag", "rrelu", "lp_pool1d",
                 "lp_pool2d", "lp_pool3d", "max_unpool1d", "max_unpool2d", "max_unpool3d",
                 "channel_shuffle", "max_pool1d_with_indices", "max_pool2d_with_indices",
                 "max_pool3d_with_indices", "adaptive_max_pool1d_with_indices",
                 "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices",
                 "upsample", "upsample_nearest", "upsample_bilinear"]


@pytest.mark.parametrize("name", NEW_FUNCTIONS)
def test_new_function_arguments_are_torchs(name):
    import inspect

    try:
        want = list(inspect.signature(getattr(TF, name)).parameters)
    except (TypeError, ValueError):  # a torch builtin without a signature: the name exists
        want = None
    ours = list(inspect.signature(getattr(F, name)).parameters)
    if want is not None and want[-2:] != ["args", "kwargs"]:  # boolean-dispatch wrappers
        assert ours == want
    else:
        assert ours[0] == "input"
