"""Audit of minidl's nn layers, functional ops and losses against torch 2.13 (less common
configurations, argument checks, state left as it was on error): each test failed before
its fix."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

_RNG = np.random.default_rng(11)


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


# ---- normalize / pairwise_distance: every p torch takes ---------------------------------

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


# ---- cross_entropy with class probabilities and an ignore_index --------------------------

def test_cross_entropy_refuses_ignore_index_with_probability_targets():
    logits = _t((3, 4))
    probs = F.softmax(_t((3, 4), 1, requires_grad=False), dim=1)
    with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point"):
        F.cross_entropy(logits, probs, ignore_index=1)
    with pytest.raises(RuntimeError, match="ignore_index"):
        nn.CrossEntropyLoss(ignore_index=0)(logits, probs)
    F.cross_entropy(logits, probs)  # the default ignore_index is fine


# ---- losses: operands of shapes that do not broadcast are named --------------------------

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


# ---- Unflatten ---------------------------------------------------------------------------

def test_unflatten_refuses_a_dim_out_of_range_instead_of_wrapping():
    x = _t((2, 6))
    with pytest.raises(IndexError, match="out of range"):
        nn.Unflatten(3, (2, 3))(x)
    with pytest.raises(IndexError, match="out of range"):
        nn.Unflatten(-3, (2, 3))(x)
    with pytest.raises(ValueError, match="unflatten: sizes"):
        nn.Unflatten(1, (2, 2))(x)
    assert nn.Unflatten(-1, [3, -1])(x).shape == (2, 3, 2)


# ---- batch_norm: integer input and eps refused before the running statistics move -------

def test_batch_norm_refuses_an_integer_input_and_leaves_the_statistics_alone():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(TypeError, match="floating-point"):
        bn(minidl.ones(4, 3, dtype=minidl.int64))
    assert np.array_equal(bn.running_mean.numpy(), np.zeros(3))
    assert np.array_equal(bn.running_var.numpy(), np.ones(3))
    assert int(bn.num_batches_tracked.item()) == 0


@pytest.mark.parametrize("eps, training", [(0.0, True), (-1.0, True), (-1.0, False)])
def test_batch_norm_refuses_a_non_positive_eps_as_torch(eps, training):
    rm, rv = minidl.zeros(3), minidl.ones(3)
    with pytest.raises(ValueError, match="batch_norm eps must be"):
        F.batch_norm(minidl.randn(4, 3), rm, rv, training=training, eps=eps)
    assert np.array_equal(rm.numpy(), np.zeros(3)) and np.array_equal(rv.numpy(), np.ones(3))
    F.batch_norm(minidl.randn(4, 3), rm, rv, training=False, eps=0.0)  # torch takes it


# ---- dropout of an integer tensor --------------------------------------------------------

def test_dropout_refuses_an_integer_tensor_it_would_scale():
    x = minidl.ones(2, 3, dtype=minidl.int64)
    with pytest.raises(TypeError, match="dropout: input must be a floating-point"):
        F.dropout(x, 0.5)
    assert F.dropout(x, 1.0).dtype == minidl.int64 and not F.dropout(x, 1.0).numpy().any()
    assert F.dropout(minidl.ones(2, dtype=minidl.bool), 1.0).dtype == minidl.bool
    assert F.dropout(x, 0.5, training=False) is x


# ---- reflect / replicate padding with negative amounts crop as torch ----------------------

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


# ---- convolutions with an empty kernel ---------------------------------------------------

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


# ---- adaptive pools: nothing to pool from, and an empty batch ------------------------------

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


# ---- normalisation layers on an empty batch ------------------------------------------------

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


# ---- cross_entropy / nll_loss whose kept rows all weigh 0 ---------------------------------

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


# ---- embedding_bag: a bad padding_idx is refused before max_norm changes the weight --------

def test_embedding_bag_checks_padding_idx_before_renormalising_the_weight():
    w = minidl.tensor(np.random.default_rng(2).standard_normal((5, 3)) * 3)
    before = w.numpy().copy()
    with pytest.raises(ValueError, match="padding_idx 9 is out of range"):
        F.embedding_bag(minidl.tensor([0, 1]), w, minidl.tensor([0]), max_norm=0.1,
                        padding_idx=9)
    assert np.array_equal(w.numpy(), before)
    F.embedding_bag(minidl.tensor([0, 1]), w, minidl.tensor([0]), max_norm=0.1, padding_idx=-1)
    assert np.linalg.norm(w.numpy()[:2], axis=1).max() <= 0.1 + 1e-6


# ---- minidl.functional.adaptive_avg_pool2d (the core op) ----------------------------------

def test_core_adaptive_avg_pool2d_refuses_an_empty_input_and_a_zero_output():
    import minidl.functional as C
    with pytest.raises(ValueError, match="non-zero size"):
        C.adaptive_avg_pool2d(minidl.randn(1, 1, 0, 5), 2)  # was a grid of NaN
    with pytest.raises(ValueError, match="output_size"):
        C.adaptive_avg_pool2d(minidl.randn(1, 1, 5, 5), 0)  # was a ZeroDivisionError
    assert C.adaptive_avg_pool2d(minidl.randn(0, 1, 5, 5), (2, 3)).shape == (0, 1, 2, 3)


# ---- Hardtanh with equal bounds ------------------------------------------------------------

def test_hardtanh_layer_refuses_equal_bounds_as_torch():
    with pytest.raises(ValueError, match="cannot be greater than max_val .* nor equal"):
        nn.Hardtanh(0.5, 0.5)
    assert nn.Hardtanh(-0.5, 0.5)(minidl.tensor([-2.0, 2.0])).numpy().tolist() == [-0.5, 0.5]


# ---- gradients at the kinks: hardswish at +-3, lp_pool of a zero window, margin losses ------

def test_hardswish_gradient_at_its_bounds_is_torchs():
    x = minidl.tensor([-3.0, 3.0, -2.5, 2.5, -4.0, 4.0], dtype=minidl.float64,
                      requires_grad=True)
    F.hardswish(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 1.0, -1 / 3, 4 / 3, 0.0, 1.0])
    assert gradcheck(F.hardswish, (_t((3, 4)),))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_lp_pool_of_an_all_zero_window_has_a_zero_gradient_not_nan(p):
    x = minidl.zeros(1, 1, 4, 4, dtype=minidl.float64, requires_grad=True)
    F.lp_pool2d(x, p, 2).sum().backward()
    assert not np.isnan(x.grad.numpy()).any()
    y = minidl.tensor(np.abs(np.random.default_rng(4).standard_normal((1, 2, 6))) + 0.1,
                      dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda a: F.lp_pool1d(a, p, 2), (y,))


def test_multi_margin_losses_give_no_gradient_where_the_hinge_is_exactly_zero():
    x = minidl.tensor([[1.0, 0.0, 2.0]], dtype=minidl.float64, requires_grad=True)
    F.multi_margin_loss(x, minidl.tensor([0])).backward()  # class 1 sits at the margin
    np.testing.assert_allclose(x.grad.numpy(), [[-1 / 3, 0.0, 1 / 3]])
    x.grad = None
    F.multilabel_margin_loss(x, minidl.tensor([[0, -1, 1]])).backward()
    np.testing.assert_allclose(x.grad.numpy(), [[-1 / 3, 0.0, 1 / 3]])


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


# ---- AdaptiveLogSoftmaxWithLoss.log_prob / predict name an input of the wrong rank ---------

def test_adaptive_log_softmax_log_prob_and_predict_name_a_wrong_rank():
    m = nn.AdaptiveLogSoftmaxWithLoss(6, 10, [3, 6])
    with pytest.raises(ValueError, match=r"log_prob: expected a 2-D input .*\(2, 3, 6\)"):
        m.log_prob(minidl.randn(2, 3, 6))  # was numpy's "index 3 is out of bounds"
    with pytest.raises(ValueError, match="predict: expected a 2-D input"):
        m.predict(minidl.randn(6))
    assert m.log_prob(minidl.randn(4, 6)).shape == (4, 10)
    assert m.predict(minidl.randn(4, 6)).shape == (4,)


# ---- prelu of a 1-D input with several parameters ------------------------------------------

def test_prelu_of_a_one_dimensional_input_says_it_has_a_single_channel():
    with pytest.raises(ValueError, match="single channel"):  # was "give 1 or 1"
        nn.PReLU(3)(minidl.randn(3))
    with pytest.raises(ValueError, match="give 1 or 4"):
        nn.PReLU(3)(minidl.randn(2, 4))
    assert nn.PReLU()(minidl.randn(3)).shape == (3,)


def test_step_functions_pass_exact_zeros_for_an_inf_or_nan_gradient():
    """sign/floor/ceil/round/trunc: the gradient is zero whatever arrives (it was g * 0,
    NaN for an inf or NaN gradient), as torch's."""
    for name in ("sign", "floor", "ceil", "round", "trunc"):
        x = minidl.tensor([1.5, -2.5, 0.0], requires_grad=True)
        getattr(minidl, name)(x).backward(minidl.tensor([float("inf"), float("nan"), 1.0]))
        assert x.grad.tolist() == [0.0, 0.0, 0.0], name
