"""Parity with PyTorch: forward values and every input gradient, float32, one line per case;
batch-norm running statistics; numerical stability at |x| = 1e4; default initialisation; a small
conv-bn-relu-pool-linear model loaded from a torch state_dict."""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch parity tests need torch (pip install torch)")

import minidl  # noqa: E402
import minidl.nn as nn  # noqa: E402
import minidl.nn.functional as F  # noqa: E402
from _torch_parity import (  # noqa: E402
    assert_close, away_from_zero, check_op, const, distinct, positive,
)

torch.manual_seed(0)


# ---- the helper itself -------------------------------------------------------------------
class _HalfGradSquare(minidl.Function):
    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, g):
        return g * self.saved[0]  # should be 2 * g * x


def test_check_op_catches_forward_and_gradient_mismatches():
    from _torch_parity import MINIDL

    with pytest.raises(AssertionError, match="forward"):
        check_op(lambda F, x: F.softmax(x, dim=0 if F is MINIDL else 1), [(3, 4)])
    with pytest.raises(AssertionError, match="grad of input 0"):
        check_op(lambda F, x: _HalfGradSquare.apply(x) if F is MINIDL else x * x, [(3, 4)])
    with pytest.raises(AssertionError, match="shape"):
        check_op(lambda F, x: x.sum(dim=0, keepdim=F is MINIDL), [(3, 4)])


# ---- elementwise and arithmetic -----------------------------------------------------------
def test_add_sub_broadcast():
    check_op(lambda F, a, b: a + b, [((2, 3), (2, 3)), ((3, 1), (1, 4)), ((4,), (2, 3, 4))])
    check_op(lambda F, a, b: a - b, [((2, 3), (2, 3)), ((2, 1, 4), (3, 1)), ((), (3,))])
    check_op(lambda F, a: 1.5 - a + 2.0, [(3,), (2, 2)])


def test_mul_div_broadcast():
    check_op(lambda F, a, b: a * b, [((2, 3), (2, 3)), ((4,), (2, 3, 4)), ((3, 1), (1, 4))])
    check_op(lambda F, a, b: a / b, [((2, 3), positive((2, 3))), ((2, 3, 4), positive((4,))),
                                     ((3, 1), positive((1, 5)))])
    check_op(lambda F, a: 3.0 / a * 2.0, [positive((2, 3)), positive((5,))])


def test_pow():
    check_op(lambda F, a: a ** 2, [(2, 3), (4,)])
    check_op(lambda F, a: a ** 0.5, [positive((2, 3))])
    check_op(lambda F, a: a ** -1.5, [positive((3, 2))])
    check_op(lambda F, a, b: a ** b, [(positive((2, 3)), (2, 3)), (positive((2, 3)), (3,))])
    check_op(lambda F, a: 2.0 ** a, [(2, 3)])


def test_neg_exp_log_sqrt_tanh_abs():
    check_op(lambda F, a: -a, [(2, 3), (5,)])
    check_op(lambda F, a: a.exp(), [(2, 3), (2, 3, 4)])
    check_op(lambda F, a: a.log(), [positive((2, 3)), positive((7,))])
    check_op(lambda F, a: a.sqrt(), [positive((2, 3)), positive((4, 1))])
    check_op(lambda F, a: a.tanh(), [(2, 3), (3, 4, 2)])
    check_op(lambda F, a: a.abs(), [away_from_zero((2, 3)), away_from_zero((6,))])


def test_matmul():
    check_op(lambda F, a, b: a @ b, [
        ((3, 4), (4, 5)),          # 2-D
        ((2, 3, 4), (2, 4, 5)),    # batched
        ((3, 4), (2, 4, 5)),       # broadcast batch
        ((2, 1, 3, 4), (5, 4, 2)),  # broadcast middle batch dim
        ((4,), (4,)),              # dot
        ((3, 4), (4,)),            # matrix-vector
        ((4,), (4, 5)),            # vector-matrix
        ((4,), (2, 4, 5)),
        ((2, 3, 4), (4,)),
        ((2, 3, 2, 4), (3, 4, 5)),
    ])


# ---- reductions -----------------------------------------------------------------------------
def test_sum_mean():
    for dim in (None, 0, 1, -1, (0, 2)):
        for keepdim in (False, True):
            if dim is None:
                check_op(lambda F, a: a.sum() * 1.0, [(2, 3, 4)])
                check_op(lambda F, a: a.mean(), [(2, 3, 4)])
                break
            check_op(lambda F, a: a.sum(dim=dim, keepdim=keepdim), [(2, 3, 4)])
            check_op(lambda F, a: a.mean(dim=dim, keepdim=keepdim), [(2, 3, 4)])


def test_max_min():
    shapes = [distinct((2, 3, 4)), distinct((3, 5, 1))]
    check_op(lambda F, a: a.max(), shapes)
    check_op(lambda F, a: a.min(), shapes)
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            check_op(lambda F, a: a.max(dim=dim, keepdim=keepdim)[0], shapes)
            check_op(lambda F, a: a.min(dim=dim, keepdim=keepdim)[0], shapes)
    check_op(lambda F, a: a.amax(dim=(0, 2)), shapes)


def test_max_indices_match_torch():
    x = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(np.float32)
    for dim in (0, 1, 2):
        m, t = minidl.tensor(x).max(dim=dim), torch.tensor(x).max(dim=dim)
        np.testing.assert_array_equal(m[1].numpy(), t[1].numpy())
        np.testing.assert_array_equal(m.indices.numpy(), t.indices.numpy())
        np.testing.assert_array_equal(minidl.tensor(x).argmax(dim=dim).numpy(),
                                      torch.tensor(x).argmax(dim=dim).numpy())


def test_ties_and_zeros_route_gradients_like_torch():
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, -1.0, 5.0]], np.float32)
    for fn in (lambda a: a.max(dim=1)[0], lambda a: a.min(dim=0, keepdim=True)[0],
               lambda a: a.max(), lambda a: a.amax(dim=1), lambda a: a ** 0, lambda a: a ** 1,
               lambda a: a.abs(), lambda a: a.relu()):
        check_op(lambda F, a: fn(a), [const(x)], grad=False)  # values
        m, t = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        fn(m).sum().backward()
        fn(t).sum().backward()
        np.testing.assert_array_equal(m.grad.numpy(), t.grad.numpy())


# ---- shape ops ------------------------------------------------------------------------------
def test_shape_ops():
    check_op(lambda F, a: a.reshape(4, 6), [(2, 3, 4)])
    check_op(lambda F, a: a.reshape(-1, 2), [(2, 3, 4)])
    check_op(lambda F, a: a.view(3, 8), [(2, 3, 4)])
    check_op(lambda F, a: a.transpose(0, 2), [(2, 3, 4)])
    check_op(lambda F, a: a.transpose(-1, -2), [(2, 3, 4)])
    check_op(lambda F, a: a.T, [(2, 3), (4, 1)])
    check_op(lambda F, a: a.permute(2, 0, 1), [(2, 3, 4)])
    check_op(lambda F, a: a.flatten(), [(2, 3, 4)])
    check_op(lambda F, a: a.flatten(1), [(2, 3, 4), (2, 1, 2, 2)])
    check_op(lambda F, a: a.flatten(0, 1), [(2, 3, 4)])
    check_op(lambda F, a: a.unsqueeze(0), [(2, 3)])
    check_op(lambda F, a: a.unsqueeze(-1), [(2, 3)])
    check_op(lambda F, a: a.squeeze(1), [(3, 1, 4), (3, 2, 4)])
    check_op(lambda F, a: a.squeeze(), [(1, 3, 1)])
    check_op(lambda F, a: a.transpose(-3, -1).permute(-1, 0, 1).flatten(-2), [(2, 3, 4)])
    check_op(lambda F, a: a.squeeze(-1).unsqueeze(-2), [(3, 1)])


def test_indexing():
    check_op(lambda F, a: a[1:, ::2], [(3, 5), (4, 4)])
    check_op(lambda F, a: a[1], [(3, 5)])
    check_op(lambda F, a: a[:, -1], [(3, 5)])
    check_op(lambda F, a: a[..., 1:3], [(2, 3, 5)])
    check_op(lambda F, a: a[[0, 2, 0, 0]], [(3, 5)])  # repeated rows accumulate
    check_op(lambda F, a: a[[0, 1, 1], [2, 3, 3]], [(3, 5)])
    check_op(lambda F, a: a[:, [4, 4, 1]], [(3, 5)])


def test_cat_stack():
    check_op(lambda F, a, b: F.cat([a, b, a]), [((2, 3), (1, 3))])
    check_op(lambda F, a, b: F.cat([a, b], dim=1), [((2, 3), (2, 2)), ((2, 1, 3), (2, 4, 3))])
    check_op(lambda F, a, b: F.stack([a, b]), [((2, 3), (2, 3))])
    check_op(lambda F, a, b: F.stack([a, b, a], dim=-1), [((2, 3), (2, 3))])


# ---- nn.functional --------------------------------------------------------------------------
def test_linear():
    check_op(lambda F, x, w, b: F.linear(x, w, b), [((4, 3), (2, 3), (2,)), ((2, 5, 3), (4, 3), (4,))])
    check_op(lambda F, x, w: F.linear(x, w), [((4, 3), (2, 3)), ((3,), (5, 3))])


def test_conv2d():
    conv = lambda **kw: (lambda F, x, w, *b: F.conv2d(x, w, *b, **kw))  # noqa: E731
    check_op(conv(), [((2, 3, 6, 6), (4, 3, 3, 3), (4,)), ((1, 1, 5, 4), (2, 1, 3, 3))])
    check_op(conv(), [((2, 3, 4, 5), (2, 3, 1, 1), (2,))])                 # 1x1 kernel
    check_op(conv(padding=2), [((1, 2, 7, 7), (3, 2, 5, 5), (3,))])       # 5x5 kernel
    check_op(conv(padding=1), [((2, 3, 5, 5), (4, 3, 3, 3))])
    check_op(conv(stride=2), [((2, 2, 7, 8), (3, 2, 3, 3), (3,))])
    check_op(conv(stride=2, padding=1), [((2, 2, 8, 7), (4, 2, 3, 3), (4,))])
    check_op(conv(stride=(1, 2), padding=(2, 0)), [((1, 2, 6, 7), (2, 2, 5, 3), (2,))])  # non-square
    check_op(conv(stride=3, padding=2), [((1, 1, 8, 9), (2, 1, 4, 4))])


def test_pooling():
    check_op(lambda F, x: F.max_pool2d(x, 2), [distinct((2, 3, 4, 6)), distinct((1, 1, 5, 5))])
    check_op(lambda F, x: F.max_pool2d(x, 3, stride=2), [distinct((1, 2, 7, 7))])
    check_op(lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1),
             [distinct((2, 2, 6, 5)), distinct((1, 3, 8, 8))])
    check_op(lambda F, x: F.max_pool2d(x, (2, 3), stride=(2, 1), padding=(1, 1)), [distinct((1, 2, 5, 6))])
    check_op(lambda F, x: F.avg_pool2d(x, 2), [(2, 3, 4, 6)])
    check_op(lambda F, x: F.avg_pool2d(x, 3, stride=2, padding=1), [(2, 2, 6, 5)])
    check_op(lambda F, x: F.avg_pool2d(x, 3, stride=1), [(1, 2, 5, 5)])
    check_op(lambda F, x: F.adaptive_avg_pool2d(x, 1), [(2, 3, 4, 5), (1, 2, 1, 1)])
    check_op(lambda F, x: F.adaptive_avg_pool2d(x, (2, 3)), [(1, 2, 4, 6)])
    check_op(lambda F, x: F.adaptive_avg_pool2d(x, 3), [(1, 2, 5, 7), (2, 1, 4, 4)])  # non-divisible
    check_op(lambda F, x: F.adaptive_avg_pool2d(x, (4, 2)), [(1, 2, 7, 3)])
    check_op(lambda F, x: F.adaptive_avg_pool2d(x, (3, 4)), [(1, 2, 2, 3)])  # output > input


def test_activations():
    check_op(lambda F, x: F.relu(x), [away_from_zero((3, 4)), away_from_zero((2, 3, 2, 2))])
    check_op(lambda F, x: F.sigmoid(x), [(3, 4), (10,)])
    check_op(lambda F, x: F.tanh(x), [(3, 4)])
    for dim in (0, 1, -1):
        check_op(lambda F, x: F.softmax(x, dim=dim), [(3, 4), (2, 3, 4)])
        check_op(lambda F, x: F.log_softmax(x, dim=dim), [(3, 4), (2, 3, 4)])


def test_losses():
    targets = const(np.array([0, 4, 2, 2]))
    for reduction in ("mean", "sum", "none"):
        check_op(lambda F, x, t: F.cross_entropy(x, t, reduction=reduction), [((4, 5), targets)])
        check_op(lambda F, x, t: F.nll_loss(F.log_softmax(x, dim=1), t, reduction=reduction),
                 [((4, 5), targets)])
        check_op(lambda F, x, y: F.mse_loss(x, y, reduction=reduction), [((3, 4), (3, 4)), ((5,), (5,))])
    check_op(lambda F, x, t: F.cross_entropy(x, t), [((1, 3), const([2])), ((8, 10), const(np.arange(8)))])
    # 32 classes or more take the CPU's vectorised float32 pass (exp_f32)
    for reduction in ("mean", "none"):
        check_op(lambda F, x, t: F.cross_entropy(x, t, reduction=reduction),
                 [((16, 1000), const(np.arange(16) * 61)), ((5, 40), const([0, 39, 7, 7, 20]))])


def test_cross_entropy_module_with_integer_targets():
    logits = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    target = np.array([3, 0, 1, 1, 2, 3])
    m = nn.CrossEntropyLoss()(minidl.tensor(logits), minidl.tensor(target))
    t = torch.nn.CrossEntropyLoss()(torch.tensor(logits), torch.tensor(target))
    assert minidl.tensor(target).dtype == np.int64
    assert_close(m.item(), t.item(), 1e-5, 1e-6, "CrossEntropyLoss")


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 4, 5), (2, 3, 3)])
def test_batch_norm_training_and_running_stats(shape):
    rng = np.random.default_rng(0)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    rm0, rv0 = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    proj = rng.standard_normal(shape).astype(np.float32)

    mx, mw, mb = (minidl.tensor(a, requires_grad=True) for a in (x, w, b))
    m_rm, m_rv = minidl.tensor(rm0.copy()), minidl.tensor(rv0.copy())
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_rm, t_rv = torch.tensor(rm0.copy()), torch.tensor(rv0.copy())
    for _ in range(2):  # twice: the running averages compound
        for g in (mx, mw, mb, tx, tw, tb):
            g.grad = None
        m_out = F.batch_norm(mx, m_rm, m_rv, mw, mb, training=True, momentum=0.2)
        t_out = torch.nn.functional.batch_norm(tx, t_rm, t_rv, tw, tb, training=True, momentum=0.2)
        assert_close(m_out.numpy(), t_out.detach().numpy(), 1e-4, 1e-5, "forward")
        (m_out * minidl.tensor(proj)).sum().backward()
        (t_out * torch.tensor(proj)).sum().backward()
        for name, m, t in (("x", mx, tx), ("weight", mw, tw), ("bias", mb, tb)):
            assert_close(m.grad.numpy(), t.grad.numpy(), 1e-4, 1e-5, f"grad {name}")
        # running_var follows the unbiased batch variance, as in PyTorch
        assert_close(m_rm.numpy(), t_rm.numpy(), 1e-5, 1e-6, "running_mean")
        assert_close(m_rv.numpy(), t_rv.numpy(), 1e-5, 1e-6, "running_var")


def test_batch_norm_without_affine_and_eval():
    rm, rv = const(np.array([0.3, -0.1, 0.0], np.float32)), const(np.array([0.5, 2.0, 1.0], np.float32))
    check_op(lambda F, x: F.batch_norm(x, None, None, training=True), [(4, 3, 2, 2), (5, 3)])
    check_op(lambda F, x, m, v, w, b: F.batch_norm(x, m, v, w, b, training=False),
             [((4, 3, 2, 2), rm, rv, (3,), (3,)), ((6, 3), rm, rv, (3,), (3,))])
    check_op(lambda F, x, m, v: F.batch_norm(x, m, v, training=False), [((2, 3, 3, 3), rm, rv)])


def test_batch_norm_module_train_then_eval():
    rng = np.random.default_rng(2)
    m, t = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
        assert_close(m(minidl.tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), 1e-4, 1e-5, "train")
    for name, buf in t.state_dict().items():
        assert_close(m.state_dict()[name].numpy(), buf.numpy(), 1e-5, 1e-6, name)
    m.eval(), t.eval()
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    assert_close(m(minidl.tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), 1e-4, 1e-5, "eval")


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True),
                                   (False, True, True), (True, False, True)])
def test_gradients_when_only_some_inputs_require_grad(needs):
    rng = np.random.default_rng(5)
    cases = [
        (lambda F, x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(2, 3, 5, 5), (4, 3, 3, 3), (4,)]),
        (lambda F, x, w, b: F.linear(x, w, b), [(2, 3), (4, 3), (4,)]),
        (lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True), [(4, 3, 2, 2), (3,), (3,)]),
        (lambda F, x, w, b: x @ w + b, [(2, 3), (3, 4), (4,)]),
    ]
    from _torch_parity import MINIDL, TORCH
    for fn, shapes in cases:
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        ms = [minidl.tensor(a, requires_grad=n) for a, n in zip(arrays, needs)]
        ts = [torch.tensor(a, requires_grad=n) for a, n in zip(arrays, needs)]
        m_out, t_out = fn(MINIDL, *ms), fn(TORCH, *ts)
        proj = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
        (m_out * minidl.tensor(proj)).sum().backward()
        (t_out * torch.tensor(proj)).sum().backward()
        for k, (m, t) in enumerate(zip(ms, ts)):
            if t.grad is None:
                assert m.grad is None, f"input {k} got a gradient it did not ask for"
            else:
                assert_close(m.grad.numpy(), t.grad.numpy(), 1e-4, 1e-5, f"grad of input {k}")


# ---- numerical stability at large magnitudes --------------------------------------------------
@pytest.fixture
def strict_float():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # overflow, 0/0 and log(0) raise; underflow to 0 (exp(-2e4)) is the right answer
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            yield


def test_large_logits_match_torch_float64(strict_float):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [5e3, 5e3, -1e4]])
    target = np.array([1, 0, 0])
    for dtype in (np.float32, np.float64):
        m, t = minidl.tensor(x, dtype=dtype), torch.tensor(x.astype(dtype))
        for name, mo, to in (
            ("softmax", F.softmax(m, dim=1), torch.softmax(t, dim=1)),
            ("log_softmax", F.log_softmax(m, dim=1), torch.log_softmax(t, dim=1)),
            ("cross_entropy", F.cross_entropy(m, minidl.tensor(target), reduction="none"),
             torch.nn.functional.cross_entropy(t, torch.tensor(target), reduction="none")),
        ):
            assert np.isfinite(mo.numpy()).all(), name
            assert_close(mo.numpy(), to.numpy(), 1e-6, 1e-6, f"{name} {dtype.__name__}")


def test_large_logits_over_many_classes_match_torch(strict_float):
    """The vectorised float32 cross-entropy (32 classes or more) at |x| = 1e4: terms far
    below the maximum give exactly 0, the rest match PyTorch."""
    rng = np.random.default_rng(3)
    x = rng.choice([-1e4, 0.0, 5e3, 1e4], size=(4, 48)) + rng.standard_normal((4, 48))
    target = np.array([0, 47, 3, 20])
    for dtype in (np.float32, np.float64):
        m, t = minidl.tensor(x, dtype=dtype), torch.tensor(x.astype(dtype))
        mo = F.cross_entropy(m, minidl.tensor(target), reduction="none")
        to = torch.nn.functional.cross_entropy(t, torch.tensor(target), reduction="none")
        assert np.isfinite(mo.numpy()).all()
        assert_close(mo.numpy(), to.numpy(), 1e-5, 1e-3, f"cross_entropy {dtype.__name__}")


def test_sigmoid_large_magnitude_matches_torch(strict_float):
    x = np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], np.float32)
    m = F.sigmoid(minidl.tensor(x, requires_grad=True))
    assert_close(m.numpy(), torch.sigmoid(torch.tensor(x)).numpy(), 1e-6, 1e-7, "sigmoid")


# ---- nn modules ---------------------------------------------------------------------------
def _bound_and_spread(w, bound):
    w = np.asarray(w, dtype=np.float64)
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.95 * bound  # reaches the bound: not a narrower distribution
    assert abs(w.mean()) < 0.1 * bound
    # a uniform on [-b, b] has standard deviation b / sqrt(3)
    assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound


@pytest.mark.parametrize("make", [
    lambda lib: lib.Linear(200, 30),
    lambda lib: lib.Conv2d(8, 16, 3),
    lambda lib: lib.Conv2d(3, 32, (5, 3)),
])
def test_default_init_kaiming_uniform_like_torch(make):
    m, t = make(nn), make(torch.nn)
    fan_in = int(np.prod(t.weight.shape[1:]))
    bound = 1 / math.sqrt(fan_in)
    for lib_mod in (m, t):
        _bound_and_spread(lib_mod.weight.detach().numpy(), bound)
        assert np.abs(lib_mod.bias.detach().numpy()).max() <= bound
    assert m.weight.shape == tuple(t.weight.shape) and m.bias.shape == tuple(t.bias.shape)


def test_batchnorm_default_init_like_torch():
    m, t = nn.BatchNorm2d(5), torch.nn.BatchNorm2d(5)
    assert list(m.state_dict()) == list(t.state_dict())
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(m.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def _small_models():
    def build(lib):
        return lib.Sequential(
            lib.Conv2d(3, 4, 3, padding=1), lib.BatchNorm2d(4), lib.ReLU(), lib.MaxPool2d(2),
            lib.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), lib.BatchNorm2d(6), lib.ReLU(),
            lib.AdaptiveAvgPool2d(1), lib.Flatten(), lib.Linear(6, 5),
        )
    torch.manual_seed(0)
    t = build(torch.nn)
    with torch.no_grad():  # non-trivial BN parameters and buffers
        for mod in t.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5), mod.bias.uniform_(-0.5, 0.5)
                mod.running_mean.uniform_(-0.5, 0.5), mod.running_var.uniform_(0.5, 1.5)
    m = build(nn)
    m.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    return m, t


@pytest.mark.parametrize("training", [True, False])
def test_small_model_loaded_from_torch_matches(training):
    m, t = _small_models()
    assert list(m.state_dict()) == list(t.state_dict())
    m.train(training), t.train(training)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    target = np.array([0, 4, 2, 1])
    mx, tx = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    m_out, t_out = m(mx), t(tx)
    assert_close(m_out.numpy(), t_out.detach().numpy(), 1e-4, 1e-5, "model output")
    F.cross_entropy(m_out, minidl.tensor(target)).backward()
    torch.nn.functional.cross_entropy(t_out, torch.tensor(target)).backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), 1e-4, 1e-5, "input grad")
    t_params = dict(t.named_parameters())
    assert [n for n, _ in m.named_parameters()] == list(t_params)
    for name, p in m.named_parameters():
        assert_close(p.grad.numpy(), t_params[name].grad.numpy(), 1e-4, 1e-5, f"grad {name}")
    for name, buf in t.state_dict().items():  # running stats updated alike in training
        assert_close(m.state_dict()[name].numpy(), buf.numpy(), 1e-5, 1e-6, name)
