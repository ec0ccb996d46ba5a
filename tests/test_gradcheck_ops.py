"""Every differentiable op against central finite differences in float64 (minidl.testing.gradcheck),
and gradcheck itself: it passes on correct ops and catches a wrong backward."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from helpers import away_from_zero, distinct, leaf, randn
from minidl.testing import gradcheck


def _inplace_chain(a):
    y = a * 2
    y += a   # recorded out of place: y = 3a
    y *= a   # y = 3a^2
    return y


def positive(shape, seed=0, low=0.5, high=2.0):
    return leaf(np.random.default_rng(seed).uniform(low, high, shape))


# (id, fn, inputs) -- inputs are built lazily so a failing constructor names its case.
CASES = [
    # arithmetic, with broadcasting that must reduce the gradient back to each input's shape
    ("add", lambda a, b: a + b, lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("add_bcast_3x1_1x4", lambda a, b: a + b, lambda: [randn((3, 1)), randn((1, 4), 1)]),
    ("add_scalar", lambda a: 2.5 + a + 1.0, lambda: [randn((2, 3))]),
    ("sub_bcast", lambda a, b: a - b, lambda: [randn((2, 3, 4)), randn((3, 1), 1)]),
    ("rsub", lambda a: 1.0 - a, lambda: [randn((3,))]),
    ("mul_bcast_4_234", lambda a, b: a * b, lambda: [randn((4,)), randn((2, 3, 4), 1)]),
    ("mul_same", lambda a, b: a * b, lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("div", lambda a, b: a / b, lambda: [randn((2, 3)), positive((2, 3), 1)]),
    ("div_bcast", lambda a, b: a / b, lambda: [randn((2, 3)), positive((3,), 1)]),
    ("rdiv", lambda a: 2.0 / a, lambda: [positive((2, 3))]),
    ("pow_scalar_2", lambda a: a ** 2, lambda: [randn((2, 3))]),
    ("pow_scalar_frac", lambda a: a ** 1.5, lambda: [positive((2, 3))]),
    ("pow_scalar_neg", lambda a: a ** -2.0, lambda: [positive((4,))]),
    ("pow_tensor", lambda a, b: a ** b, lambda: [positive((2, 3)), randn((2, 3), 1)]),
    ("pow_tensor_bcast", lambda a, b: a ** b, lambda: [positive((2, 3)), randn((3,), 1)]),
    ("rpow", lambda a: 2.0 ** a, lambda: [randn((3,))]),
    ("neg", lambda a: -a, lambda: [randn((2, 3))]),
    ("clone", lambda a: a.clone() * a, lambda: [randn((2, 3))]),
    ("maximum_bcast", lambda a, b: a.max(b), lambda: [randn((2, 3)), randn((3,), 1)]),
    ("minimum", lambda a, b: a.min(b), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("mul_promoted_int", lambda a: a * minidl.tensor([1, 2, 3]), lambda: [randn((2, 3))]),
    ("inplace_in_graph", lambda a: _inplace_chain(a), lambda: [randn((2, 3))]),
    # matmul: 2-D, batched, broadcast batch dims, and the 1-D vector cases
    ("matmul_2d", lambda a, b: a @ b, lambda: [randn((3, 4)), randn((4, 2), 1)]),
    ("matmul_batched", lambda a, b: a @ b, lambda: [randn((2, 3, 4)), randn((2, 4, 5), 1)]),
    ("matmul_bcast_batch", lambda a, b: a @ b, lambda: [randn((3, 4)), randn((2, 4, 2), 1)]),
    ("matmul_bcast_mid", lambda a, b: a @ b, lambda: [randn((2, 1, 3, 4)), randn((5, 4, 2), 1)]),
    ("matmul_bcast_mid_rhs", lambda a, b: a @ b, lambda: [randn((2, 3, 4)), randn((2, 1, 4, 2), 1)]),
    ("matmul_vec_vec", lambda a, b: a @ b, lambda: [randn((4,)), randn((4,), 1)]),
    ("matmul_mat_vec", lambda a, b: a @ b, lambda: [randn((3, 4)), randn((4,), 1)]),
    ("matmul_vec_mat", lambda a, b: a @ b, lambda: [randn((4,)), randn((4, 3), 1)]),
    ("matmul_vec_batched", lambda a, b: a @ b, lambda: [randn((4,)), randn((2, 4, 3), 1)]),
    ("matmul_batched_vec", lambda a, b: a @ b, lambda: [randn((2, 3, 4)), randn((4,), 1)]),
    # elementwise
    ("exp", lambda a: a.exp(), lambda: [randn((2, 3))]),
    ("log", lambda a: a.log(), lambda: [positive((2, 3))]),
    ("sqrt", lambda a: a.sqrt(), lambda: [positive((2, 3))]),
    ("tanh", lambda a: a.tanh(), lambda: [randn((2, 3))]),
    ("abs", lambda a: a.abs(), lambda: [leaf(away_from_zero((2, 3)))]),
    ("abs_op", lambda a: abs(a), lambda: [leaf(away_from_zero((5,)))]),
    # reductions
    ("sum_all", lambda a: a.sum(), lambda: [randn((2, 3, 4))]),
    ("sum_dim0", lambda a: a.sum(dim=0), lambda: [randn((2, 3, 4))]),
    ("sum_dim_neg_keep", lambda a: a.sum(dim=-1, keepdim=True), lambda: [randn((2, 3, 4))]),
    ("sum_dims_tuple", lambda a: a.sum(dim=(0, 2)), lambda: [randn((2, 3, 4))]),
    ("mean_all", lambda a: a.mean(), lambda: [randn((2, 3, 4))]),
    ("mean_dim1", lambda a: a.mean(dim=1), lambda: [randn((2, 3, 4))]),
    ("mean_dims_keep", lambda a: a.mean(dim=(1, 2), keepdim=True), lambda: [randn((2, 3, 4))]),
    ("max_all", lambda a: a.max(), lambda: [leaf(distinct((2, 3, 4)))]),
    ("max_dim", lambda a: a.max(dim=1)[0], lambda: [leaf(distinct((2, 3, 4)))]),
    ("max_dim_keep", lambda a: a.max(dim=-1, keepdim=True).values, lambda: [leaf(distinct((2, 3, 4)))]),
    ("amax_dims", lambda a: a.amax(dim=(0, 2)), lambda: [leaf(distinct((2, 3, 4)))]),
    ("min_all", lambda a: a.min(), lambda: [leaf(distinct((3, 4)))]),
    ("min_dim", lambda a: a.min(dim=0)[0], lambda: [leaf(distinct((3, 4)))]),
    ("min_dim_keep", lambda a: a.min(dim=1, keepdim=True)[0], lambda: [leaf(distinct((3, 4)))]),
    # shape
    ("reshape", lambda a: a.reshape(4, 6) * leaf(np.arange(24.0).reshape(4, 6), False), lambda: [randn((2, 3, 4))]),
    ("reshape_infer", lambda a: a.reshape(-1, 2), lambda: [randn((2, 3, 4))]),
    ("view", lambda a: a.view((3, 8)), lambda: [randn((2, 3, 4))]),
    ("transpose", lambda a: a.transpose(0, 2), lambda: [randn((2, 3, 4))]),
    ("T", lambda a: a.T @ a, lambda: [randn((3, 2))]),
    ("permute", lambda a: a.permute(2, 0, 1), lambda: [randn((2, 3, 4))]),
    ("flatten", lambda a: a.flatten(1), lambda: [randn((2, 3, 4))]),
    ("F_flatten", lambda a: F.flatten(a, 1, 2), lambda: [randn((2, 3, 4, 2))]),
    ("unsqueeze", lambda a: a.unsqueeze(1) * randn((3, 2, 1), 5, False), lambda: [randn((3, 4))]),
    ("squeeze", lambda a: a.squeeze(1), lambda: [randn((3, 1, 4))]),
    ("squeeze_all", lambda a: a.squeeze(), lambda: [randn((1, 3, 1))]),
    # indexing: slices, integer arrays with repeats (gradients must accumulate), mixed
    ("index_slice", lambda a: a[1:, ::2], lambda: [randn((3, 5))]),
    ("index_int", lambda a: a[1], lambda: [randn((3, 5))]),
    ("index_neg_step", lambda a: a[::-1, 1:4], lambda: [randn((3, 5))]),
    ("index_int_array_repeat", lambda a: a[np.array([0, 2, 0, 0])], lambda: [randn((3, 5))]),
    ("index_pairs_repeat", lambda a: a[np.array([0, 1, 1]), np.array([2, 3, 3])], lambda: [randn((3, 5))]),
    ("index_tensor", lambda a: a[:, minidl.tensor([4, 4, 1])], lambda: [randn((3, 5))]),
    ("index_ellipsis", lambda a: a[..., 0], lambda: [randn((2, 3, 4))]),
    ("index_bool_mask", lambda a: a[np.array([True, False, True])], lambda: [randn((3, 2))]),
    # joining
    ("cat_dim0", lambda a, b: minidl.cat([a, b, a]), lambda: [randn((2, 3)), randn((1, 3), 1)]),
    ("cat_dim1", lambda a, b: minidl.cat([a, b], dim=1), lambda: [randn((2, 3)), randn((2, 2), 1)]),
    ("stack", lambda a, b: minidl.stack([a, b]), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("stack_dim_last", lambda a, b: minidl.stack([a, b, b], dim=-1), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    # nn.functional
    ("linear", lambda x, w, b: F.linear(x, w, b), lambda: [randn((4, 3)), randn((2, 3), 1), randn((2,), 2)]),
    ("linear_nobias", lambda x, w: F.linear(x, w), lambda: [randn((4, 3)), randn((2, 3), 1)]),
    ("linear_3d_input", lambda x, w, b: F.linear(x, w, b), lambda: [randn((2, 2, 3)), randn((4, 3), 1), randn((4,), 2)]),
    ("linear_1d_input", lambda x, w: F.linear(x, w), lambda: [randn((3,)), randn((4, 3), 1)]),
    ("conv_k3_bias", lambda x, w, b: F.conv2d(x, w, b), lambda: [randn((2, 2, 5, 5)), randn((3, 2, 3, 3), 1), randn((3,), 2)]),
    ("conv_k1", lambda x, w: F.conv2d(x, w), lambda: [randn((2, 3, 4, 4)), randn((2, 3, 1, 1), 1)]),
    ("conv_k5_pad2", lambda x, w, b: F.conv2d(x, w, b, padding=2), lambda: [randn((1, 2, 5, 6)), randn((2, 2, 5, 5), 1), randn((2,), 2)]),
    ("conv_stride2", lambda x, w: F.conv2d(x, w, stride=2), lambda: [randn((1, 2, 7, 6)), randn((3, 2, 3, 3), 1)]),
    ("conv_stride2_pad1", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), lambda: [randn((2, 2, 6, 5)), randn((3, 2, 3, 3), 1), randn((3,), 2)]),
    ("conv_nonsquare", lambda x, w: F.conv2d(x, w, stride=(1, 2), padding=(1, 0)), lambda: [randn((1, 2, 5, 7)), randn((2, 2, 3, 2), 1)]),
    ("maxpool_2", lambda x: F.max_pool2d(x, 2), lambda: [leaf(distinct((2, 2, 4, 6)))]),
    ("maxpool_k3_s2_overlap", lambda x: F.max_pool2d(x, 3, stride=2), lambda: [leaf(distinct((1, 2, 7, 7)))]),
    ("maxpool_k3_s2_p1", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), lambda: [leaf(distinct((2, 1, 6, 5)))]),
    ("maxpool_nonsquare", lambda x: F.max_pool2d(x, (2, 3), stride=(2, 1)), lambda: [leaf(distinct((1, 2, 5, 5)))]),
    ("avgpool_2", lambda x: F.avg_pool2d(x, 2), lambda: [randn((2, 2, 4, 6))]),
    ("avgpool_k3_s2_p1", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), lambda: [randn((1, 2, 6, 5))]),
    ("adaptive_avg_1", lambda x: F.adaptive_avg_pool2d(x, 1), lambda: [randn((2, 3, 4, 5))]),
    ("adaptive_avg_divisible", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), lambda: [randn((1, 2, 4, 6))]),
    ("adaptive_avg_nondivisible", lambda x: F.adaptive_avg_pool2d(x, 3), lambda: [randn((1, 2, 5, 7))]),
    ("relu", lambda x: F.relu(x), lambda: [leaf(away_from_zero((3, 4)))]),
    ("relu_method", lambda x: x.relu(), lambda: [leaf(away_from_zero((5,)))]),
    ("sigmoid", lambda x: F.sigmoid(x), lambda: [randn((3, 4))]),
    ("tanh_F", lambda x: F.tanh(x), lambda: [randn((3, 4))]),
    ("softmax_last", lambda x: F.softmax(x, dim=-1), lambda: [randn((3, 4))]),
    ("softmax_dim0", lambda x: F.softmax(x, dim=0), lambda: [randn((3, 4))]),
    ("softmax_dim1_4d", lambda x: F.softmax(x, dim=1), lambda: [randn((2, 3, 2, 2))]),
    ("log_softmax_last", lambda x: F.log_softmax(x, dim=-1), lambda: [randn((3, 4))]),
    ("log_softmax_dim0", lambda x: F.log_softmax(x, dim=0), lambda: [randn((3, 4))]),
    ("log_softmax_dim1_3d", lambda x: F.log_softmax(x, dim=1), lambda: [randn((2, 3, 4))]),
    ("cross_entropy_mean", lambda x, t: F.cross_entropy(x, t), lambda: [randn((4, 5)), minidl.tensor([0, 4, 2, 2])]),
    ("cross_entropy_sum", lambda x, t: F.cross_entropy(x, t, reduction="sum"), lambda: [randn((4, 5)), minidl.tensor([1, 0, 3, 1])]),
    ("cross_entropy_none", lambda x, t: F.cross_entropy(x, t, reduction="none"), lambda: [randn((4, 5)), minidl.tensor([1, 0, 3, 4])]),
    ("nll_loss", lambda x, t: F.nll_loss(F.log_softmax(x, 1), t), lambda: [randn((4, 5)), minidl.tensor([0, 4, 2, 2])]),
    ("cross_entropy_options", lambda x, t: F.cross_entropy(
        x, t, weight=minidl.tensor([1.0, 2.0, 0.5, 1.5, 1.0], dtype=np.float64), ignore_index=2,
        label_smoothing=0.1), lambda: [randn((4, 5)), minidl.tensor([0, 4, 2, 1])]),
    ("nll_loss_weighted", lambda x, t: F.nll_loss(
        x, t, weight=minidl.tensor([1.0, 2.0, 0.5, 1.5, 1.0], dtype=np.float64)),
     lambda: [randn((3, 5)), minidl.tensor([0, 4, 1])]),
    ("nll_loss_sum", lambda x, t: F.nll_loss(x, t, reduction="sum"), lambda: [randn((3, 5)), minidl.tensor([0, 4, 4])]),
    ("nll_loss_none", lambda x, t: F.nll_loss(x, t, reduction="none"), lambda: [randn((3, 5)), minidl.tensor([1, 2, 1])]),
    ("mse_loss", lambda x, y: F.mse_loss(x, y), lambda: [randn((3, 4)), randn((3, 4), 1)]),
    ("mse_loss_sum", lambda x, y: F.mse_loss(x, y, reduction="sum"), lambda: [randn((3, 4)), randn((3, 4), 1)]),
    ("mse_loss_none", lambda x, y: F.mse_loss(x, y, reduction="none"), lambda: [randn((5,)), randn((5,), 1)]),
    ("batch_norm_train_affine", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), lambda: [randn((3, 2, 2, 3)), randn((2,), 1), randn((2,), 2)]),
    ("batch_norm_train_affine_stats", lambda x, w, b: F.batch_norm(x, minidl.zeros(2), minidl.ones(2), w, b, training=True), lambda: [randn((3, 2, 2, 3)), randn((2,), 1), randn((2,), 2)]),
    ("batch_norm_train_no_affine", lambda x: F.batch_norm(x, None, None, training=True), lambda: [randn((4, 3, 2, 2))]),
    ("batch_norm_train_2d", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), lambda: [randn((5, 3)), randn((3,), 1), randn((3,), 2)]),
    ("batch_norm_relu_train", lambda x, w, b: F.batch_norm_relu(x, minidl.zeros(2), minidl.ones(2), w, b, training=True), lambda: [randn((3, 2, 2, 3)), randn((2,), 1), randn((2,), 2)]),
    ("batch_norm_relu_train_3d", lambda x: F.batch_norm_relu(x, None, None, training=True), lambda: [randn((2, 3, 5))]),
    ("batch_norm_relu_eval", lambda x, w, b: F.batch_norm_relu(x, minidl.tensor([0.1, -0.2]), minidl.tensor([0.5, 2.0]), w, b, training=False), lambda: [randn((3, 2, 2, 2)), randn((2,), 1), randn((2,), 2)]),
    ("add_relu", lambda a, b: F.add_relu(a, b), lambda: [randn((3, 4)), randn((3, 4), 1)]),
    ("add_relu_4d", lambda a, b: F.add_relu(a, b), lambda: [randn((2, 3, 2, 2)), randn((2, 3, 2, 2), 1)]),
    ("batch_norm_eval", lambda x, w, b: F.batch_norm(x, minidl.tensor([0.1, -0.2]), minidl.tensor([0.5, 2.0]), w, b, training=False), lambda: [randn((3, 2, 2, 2)), randn((2,), 1), randn((2,), 2)]),
]


@pytest.mark.parametrize("fn,make_inputs", [pytest.param(f, m, id=i) for i, f, m in CASES])
def test_gradcheck(fn, make_inputs):
    inputs = make_inputs()
    assert any(x.requires_grad for x in inputs)
    assert gradcheck(fn, inputs)  # which also checks each gradient has its input's shape
    # gradcheck takes its gradients by autograd.grad, as torch's: .grad is left as it was
    for x in inputs:
        if x.requires_grad:
            assert x.grad is None


def test_broadcast_gradient_shapes_and_values():
    a, b = randn((3, 1)), randn((1, 4), 1)
    (a + b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (1, 4)
    np.testing.assert_allclose(a.grad.numpy(), np.full((3, 1), 4.0))
    np.testing.assert_allclose(b.grad.numpy(), np.full((1, 4), 3.0))

    v, m = randn((4,)), randn((2, 3, 4), 1)
    (v * m).sum().backward()
    assert v.grad.shape == (4,)
    np.testing.assert_allclose(v.grad.numpy(), m.numpy().sum(axis=(0, 1)))
    np.testing.assert_allclose(m.grad.numpy(), np.broadcast_to(v.numpy(), (2, 3, 4)))


def test_dropout_gradient_is_the_mask():
    x = randn((4, 5))

    def fixed_mask_dropout(x):
        minidl.manual_seed(7)  # the same mask on every call of the finite differences
        return F.dropout(x, p=0.3)

    assert gradcheck(fixed_mask_dropout, [x])
    x.grad = None
    y = fixed_mask_dropout(x)
    y.sum().backward()
    mask = y.numpy() / x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), mask, rtol=1e-12)
    assert set(np.round(np.unique(mask), 6)) <= {0.0, round(1 / 0.7, 6)}


def test_dropout_eval_is_identity():
    x = randn((3, 3))
    assert F.dropout(x, 0.5, training=False) is x


# ---- gradcheck itself -----------------------------------------------------------------------
class WrongSquare(minidl.Function):
    """x**2 with a backward that forgets the factor 2."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, g):
        (x,) = self.saved
        return g * x


class SwappedMul(minidl.Function):
    """a*b whose backward returns the gradients in the wrong order."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        return g * a, g * b


def test_gradcheck_catches_wrong_backward():
    x = randn((3, 4))
    with pytest.raises(AssertionError, match=r"input 0 \(shape \(3, 4\)\)"):
        gradcheck(lambda x: WrongSquare.apply(x), [x])
    assert gradcheck(lambda x: WrongSquare.apply(x), [randn((3, 4))], raise_exception=False) is False


def test_gradcheck_catches_wrong_second_input():
    a, b = randn((2, 3)), randn((2, 3), 1)
    with pytest.raises(AssertionError, match="input"):
        gradcheck(lambda a, b: SwappedMul.apply(a, b), [a, b])


def test_gradcheck_directional_mode_on_big_inputs():
    # 2 * 2 * 24 * 24 = 2304 elements: past the element-wise limit, checked along directions
    x = randn((2, 2, 24, 24))
    w = randn((3, 2, 3, 3), 1)
    assert gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])
    with pytest.raises(AssertionError, match="directional derivative"):
        gradcheck(lambda x: WrongSquare.apply(x), [randn((50, 50))])
    with pytest.raises(AssertionError, match="directional"):
        gradcheck(lambda x: WrongSquare.apply(x), [randn((4, 4))], directions=3)


def test_gradcheck_skips_inputs_without_grad_and_needs_float64():
    w = randn((3, 3), requires_grad=False)
    x = randn((3,))
    assert gradcheck(lambda x, w: w @ x, [x, w])
    assert w.grad is None
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2, [minidl.tensor(np.ones(3), requires_grad=True)])


# ---- gradgradcheck takes torch's arguments -----------------------------------------------------------
def t64(a, grad=True):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=minidl.float64, requires_grad=grad)


def test_gradgradcheck_takes_one_tensor_grad_outputs_and_tuple_outputs():
    from minidl.testing import gradcheck, gradgradcheck

    x = t64([0.5, -1.0, 2.0])
    assert gradcheck(lambda t: t ** 3, x)  # one Tensor: was iterated over as its elements
    assert gradgradcheck(lambda t: t ** 3, x)
    # torch's third positional argument: was taken as eps
    assert gradgradcheck(lambda t: t ** 3, [x], [t64([1.0, -1.0, 0.5], grad=False)])
    assert gradgradcheck(lambda t: (t ** 3, t.exp().sum()), [x])
    with pytest.raises(ValueError, match="grad_outputs of shapes"):
        gradgradcheck(lambda t: t ** 3, [x], [t64([1.0], grad=False)])

    class Wrong(minidl.autograd.Function):  # a graph_backward that is a constant: caught
        def forward(self, a):
            self.save_for_backward(a)
            return a ** 3

        def backward(self, g):
            (a,) = self.saved
            return 3 * g * a * a

        def graph_backward(self, g, out):
            (a,) = self.inputs
            return g * minidl.tensor(3 * a.numpy() ** 2, dtype=minidl.float64)

    assert not gradgradcheck(lambda t: Wrong.apply(t), x, [t64([1.0, 1.0, 1.0], grad=False)],
                             raise_exception=False)
