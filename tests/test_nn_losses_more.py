"""KLDivLoss, HuberLoss, MarginRankingLoss, HingeEmbeddingLoss, SoftMarginLoss,
MultiLabelSoftMarginLoss, CosineEmbeddingLoss, TripletMarginLoss, PoissonNLLLoss,
GaussianNLLLoss, CTCLoss, MultiMarginLoss, MultiLabelMarginLoss,
TripletMarginWithDistanceLoss (functions and modules): float64 gradient checks, PyTorch parity of values
and gradients for every reduction, autocast dtypes against torch.autocast("cpu")."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import leaf, randn

torch = pytest.importorskip("torch")
from _nn_parity import check_module  # noqa: E402
from _torch_parity import MINIDL, TORCH, check_op, const, positive  # noqa: E402

TF = torch.nn.functional
RNG = np.random.default_rng(0)
SIGNS = np.where(RNG.standard_normal(6) > 0, 1.0, -1.0).astype(np.float32)
SIGNS[:2] = (1.0, -1.0)
SIGNS_2D = np.where(RNG.standard_normal((4, 5)) > 0, 1.0, -1.0).astype(np.float32)
LABELS = (RNG.uniform(size=(4, 5)) > 0.5).astype(np.float32)
PROBS = RNG.dirichlet(np.ones(5), size=4).astype(np.float32)
PROBS[0, 1] = 0.0  # a zero target: its term is 0, not NaN
COUNTS = RNG.integers(0, 6, size=(4, 5)).astype(np.float32)


def _cases(reduction):
    r = dict(reduction=reduction)
    kl_r = dict(reduction="batchmean" if reduction == "mean" else reduction)
    return [
        ("kl_div", lambda F, x: F.kl_div(F.log_softmax(x, dim=1), F.tensor(PROBS), **kl_r),
         [(4, 5)]),
        ("kl_div_mean", lambda F, x: F.kl_div(x, F.tensor(PROBS) + 0.1, reduction="mean"),
         [(4, 5)]),
        ("kl_div_log_target", lambda F, x, t: F.kl_div(x, t, log_target=True, **r),
         [((4, 5), (4, 5))]),
        ("huber", lambda F, x, t: F.huber_loss(x, t * 2, delta=0.7, **r), [((4, 5), (4, 5))]),
        ("margin_ranking", lambda F, a, b: F.margin_ranking_loss(a, b, F.tensor(SIGNS), 0.2, **r),
         [((6,), (6,))]),
        ("hinge_embedding", lambda F, x: F.hinge_embedding_loss(x, F.tensor(SIGNS_2D), 0.5, **r),
         [(4, 5)]),
        ("soft_margin", lambda F, x: F.soft_margin_loss(x * 3, F.tensor(SIGNS_2D), **r), [(4, 5)]),
        ("multilabel_soft_margin", lambda F, x: F.multilabel_soft_margin_loss(
            x, F.tensor(LABELS), **r), [(4, 5)]),
        ("multilabel_soft_margin_weight", lambda F, x, w: F.multilabel_soft_margin_loss(
            x, F.tensor(LABELS), w, **r), [((4, 5), const(RNG.uniform(0.5, 2, 5)))]),
        ("cosine_embedding", lambda F, a, b: F.cosine_embedding_loss(
            a, b, F.tensor(SIGNS[:4]), 0.1, **r), [((4, 5), (4, 5))]),
        ("triplet", lambda F, a, p, n: F.triplet_margin_loss(a, p, n, **r),
         [((4, 5), (4, 5), (4, 5))]),
        ("triplet_p1_swap", lambda F, a, p, n: F.triplet_margin_loss(a, p, n, 0.5, 1, swap=True,
                                                                     **r),
         [((4, 5), (4, 5), (4, 5))]),
        ("poisson", lambda F, x: F.poisson_nll_loss(x, F.tensor(COUNTS), **r), [(4, 5)]),
        ("poisson_full_rate", lambda F, x: F.poisson_nll_loss(x, F.tensor(COUNTS), False, True,
                                                              **r), [positive((4, 5))]),
        ("gaussian", lambda F, x, t, v: F.gaussian_nll_loss(x, t, v, **r),
         [((4, 5), (4, 5), positive((4, 5)))]),
        ("gaussian_full_homo", lambda F, x, t, v: F.gaussian_nll_loss(x, t, v, full=True, **r),
         [((4, 5), (4, 5), positive((4, 1)))]),
        ("gaussian_one_dim_fewer", lambda F, x, t, v: F.gaussian_nll_loss(x, t, v, **r),
         [((4, 5), (4, 5), positive((4,)))]),
    ]


@pytest.mark.filterwarnings("ignore:.*batchmean")  # kl_div's 'mean' warns, in both
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_parity_with_torch(reduction):
    for name, fn, shapes in _cases(reduction):
        try:
            check_op(fn, shapes, rtol=1e-4, atol=1e-5)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


GRADCHECKS = [
    ("kl_div", lambda x: F.kl_div(x, minidl.tensor(PROBS, dtype="float64"), reduction="batchmean"),
     [(4, 5)]),
    ("kl_div_log_target_both", lambda x, t: F.kl_div(x, t, reduction="sum", log_target=True),
     [(4, 5), (4, 5)]),
    ("huber", lambda x, t: F.huber_loss(x, t * 2, delta=0.7), [(4, 5), (4, 5)]),
    ("margin_ranking", lambda a, b: F.margin_ranking_loss(
        a, b, minidl.tensor(SIGNS, dtype="float64"), 0.2), [(6,), (6,)]),
    ("soft_margin", lambda x: F.soft_margin_loss(x, minidl.tensor(SIGNS_2D, dtype="float64")),
     [(4, 5)]),
    ("multilabel", lambda x: F.multilabel_soft_margin_loss(
        x, minidl.tensor(LABELS, dtype="float64")), [(4, 5)]),
    ("cosine_embedding", lambda a, b: F.cosine_embedding_loss(
        a, b, minidl.tensor(SIGNS[:4], dtype="float64")), [(4, 5), (4, 5)]),
    ("triplet", lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=3.0, swap=True),
     [(4, 5), (4, 5), (4, 5)]),
    ("poisson", lambda x: F.poisson_nll_loss(x, minidl.tensor(COUNTS, dtype="float64"),
                                             full=True), [(4, 5)]),
]


@pytest.mark.parametrize("name,fn,shapes", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_float64(name, fn, shapes):
    assert gradcheck(fn, [randn(s, seed=i) for i, s in enumerate(shapes)])


def test_gaussian_nll_gradcheck_in_var():
    var = leaf(np.random.default_rng(0).uniform(0.5, 2, (4, 5)))
    assert gradcheck(lambda x, v: F.gaussian_nll_loss(x, x * 0.3, v, full=True),
                     [randn((4, 5)), var])


MODULES = [
    ("KLDivLoss", dict(reduction="batchmean"), [PROBS * 0 - 1.5, PROBS + 0.01]),
    ("KLDivLoss", dict(reduction="sum", log_target=True), [RNG.standard_normal((4, 5)),
                                                           RNG.standard_normal((4, 5))]),
    ("HuberLoss", dict(delta=0.5), [RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))]),
    ("MarginRankingLoss", dict(margin=0.3), [RNG.standard_normal(6), RNG.standard_normal(6),
                                             SIGNS]),
    ("HingeEmbeddingLoss", dict(reduction="sum"), [RNG.standard_normal((4, 5)), SIGNS_2D]),
    ("SoftMarginLoss", {}, [RNG.standard_normal((4, 5)), SIGNS_2D]),
    ("MultiLabelSoftMarginLoss", {}, [RNG.standard_normal((4, 5)), LABELS]),
    ("CosineEmbeddingLoss", dict(margin=0.2), [RNG.standard_normal((4, 5)),
                                               RNG.standard_normal((4, 5)), SIGNS[:4]]),
    ("TripletMarginLoss", dict(p=3.0, swap=True), [RNG.standard_normal((4, 5))
                                                   for _ in range(3)]),
    ("PoissonNLLLoss", dict(full=True), [RNG.standard_normal((4, 5)), COUNTS]),
    ("GaussianNLLLoss", dict(full=True), [RNG.standard_normal((4, 5)),
                                          RNG.standard_normal((4, 5)),
                                          RNG.uniform(0.5, 2, (4, 5))]),
]


@pytest.mark.parametrize("cls,kwargs,inputs", MODULES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_module_parity_and_repr(cls, kwargs, inputs):
    ours, theirs = getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(theirs)
    # labels and counts get no gradient (torch refuses one for most of them)
    targets = {"HingeEmbeddingLoss", "SoftMarginLoss", "MultiLabelSoftMarginLoss",
               "CosineEmbeddingLoss", "MarginRankingLoss", "PoissonNLLLoss"}
    grad = set(range(len(inputs) - 1)) if cls in targets else True
    check_module(ours, theirs, [np.asarray(a, dtype=np.float32) for a in inputs],
                 grad_inputs=grad)


def test_weight_buffer_and_legacy_reduction():
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0], dtype=np.float32)
    ours = nn.MultiLabelSoftMarginLoss(minidl.tensor(w))
    theirs = torch.nn.MultiLabelSoftMarginLoss(torch.tensor(w))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    check_module(ours, theirs, [RNG.standard_normal((4, 5)).astype(np.float32), LABELS],
                 grad_inputs={0})
    assert nn.SoftMarginLoss(reduce=False).reduction == "none"
    assert nn.HingeEmbeddingLoss(size_average=False).reduction == "sum"


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_autocast_dtypes_match_torch_cpu(low):
    from _torch_parity import MINIDL, TORCH

    x = RNG.standard_normal((4, 6)).astype(np.float32)
    w = RNG.standard_normal((5, 6)).astype(np.float32)
    signs5 = np.where(RNG.standard_normal(5) > 0, 1.0, -1.0).astype(np.float32)
    cases = [
        ("kl_div", lambda F, h: F.kl_div(h, h * 0.5, reduction="batchmean", log_target=True)),
        ("huber", lambda F, h: F.huber_loss(h, h * 0.5)),
        ("margin_ranking", lambda F, h: F.margin_ranking_loss(h[0], h[1], F.tensor(signs5))),
        ("hinge", lambda F, h: F.hinge_embedding_loss(h, F.tensor(SIGNS_2D))),
        ("soft_margin", lambda F, h: F.soft_margin_loss(h, F.tensor(SIGNS_2D))),
        ("cosine_embedding", lambda F, h: F.cosine_embedding_loss(h, h * 2, F.tensor(SIGNS[:4]))),
        ("triplet", lambda F, h: F.triplet_margin_loss(h, h * 2, h * 0.5)),
        ("poisson", lambda F, h: F.poisson_nll_loss(h, F.tensor(COUNTS))),
        ("multilabel", lambda F, h: F.multilabel_soft_margin_loss(h, F.tensor(LABELS))),
        ("gaussian", lambda F, h: F.gaussian_nll_loss(h, h * 0.5, h * h + 1)),
    ]
    for name, fn in cases:
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = fn(TORCH, TF.linear(torch.tensor(x), torch.tensor(w)))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(MINIDL, F.linear(minidl.tensor(x), minidl.tensor(w)))
        assert str(got.dtype) == str(want.dtype).replace("torch.", ""), name
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05,
                                   atol=0.05, err_msg=name)


def test_bad_arguments():
    x = minidl.randn(4, 5)
    with pytest.raises(ValueError, match="batchmean"):
        F.kl_div(x, x, reduction="avg")
    with pytest.warns(UserWarning, match="batchmean"):
        F.kl_div(x, x)
    with pytest.raises(ValueError, match="negative"):
        F.gaussian_nll_loss(x, x, -minidl.ones(4, 5))
    with pytest.raises(ValueError, match="does not fit"):
        F.gaussian_nll_loss(x, x, minidl.ones(3))
    with pytest.raises(ValueError, match="margin"):
        nn.TripletMarginLoss(margin=0)
    with pytest.raises(ValueError, match="shape"):
        F.huber_loss(x, minidl.randn(5, 4))


# ---- CTC loss and the margin losses (multi_margin, multilabel_margin, triplet_margin_with_distance) ----
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
