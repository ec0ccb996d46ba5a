"""Double backward: gradients taken with create_graph=True are recorded ops, differentiable again.

Each core op's second derivative is checked against finite differences (gradgradcheck, float64),
and the engine's behaviour (accumulation into .grad, hooks, custom functions, retained graphs,
the refusal of an op whose gradient is first-order only) against PyTorch's where torch is
installed.
"""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.autograd import Function
from minidl.testing import gradgradcheck

rng = np.random.default_rng(7)


def t64(a, grad=True):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=minidl.float64, requires_grad=grad)


def away_from_zero(shape, low=0.3, high=1.5):
    """Values whose magnitude is in [low, high], random signs: no kinks of relu, abs, max."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


# one case per op: (name, function, input arrays); every input is differentiated twice
CASES = [
    ("add_broadcast", lambda a, b: (a + b) * (a + b), [rng.normal(size=(3, 4)), rng.normal(size=4)]),
    ("sub", lambda a, b: (a - b) ** 3, [rng.normal(size=(2, 3)), rng.normal(size=(1, 3))]),
    ("mul", lambda a, b: a * b * a, [rng.normal(size=(3, 2)), rng.normal(size=(3, 1))]),
    ("div", lambda a, b: a / b, [rng.normal(size=(2, 3)), rng.uniform(0.5, 2, (2, 3))]),
    ("neg", lambda a: -(a * a), [rng.normal(size=5)]),
    ("pow_3", lambda a: a ** 3, [rng.normal(size=5)]),
    ("pow_half", lambda a: a ** 0.5, [rng.uniform(0.5, 2, 5)]),
    ("pow_minus_1", lambda a: a ** -1, [rng.uniform(0.5, 2, 5)]),
    ("pow_1", lambda a: (a ** 1) * a, [rng.normal(size=5)]),
    ("pow_tensor", lambda a, b: a ** b, [rng.uniform(0.5, 2, 4), rng.normal(size=4)]),
    ("exp", lambda a: a.exp(), [rng.normal(size=(2, 2))]),
    ("log", lambda a: a.log(), [rng.uniform(0.5, 2, 4)]),
    ("sqrt", lambda a: a.sqrt(), [rng.uniform(0.5, 2, 4)]),
    ("tanh", lambda a: a.tanh(), [rng.normal(size=4)]),
    ("sigmoid", lambda a: a.sigmoid(), [rng.normal(size=4)]),
    ("relu", lambda a: a.relu() * a, [away_from_zero(6)]),
    ("abs", lambda a: a.abs() * a, [away_from_zero(6)]),
    ("clamp_numbers", lambda a: a.clamp(-0.5, 0.8) * a, [rng.uniform(-1, 1, 8)]),
    ("clamp_tensors", lambda a, lo, hi: minidl.clamp(a, lo, hi) ** 2,
     [rng.normal(size=6), rng.normal(size=6) - 1, rng.normal(size=6) + 1]),
    ("where", lambda a, b: minidl.where(a > 0, a * b, b * b), [away_from_zero(5), rng.normal(size=5)]),
    ("masked_fill_tensor_value", lambda a, v: a.masked_fill(a > 0, v * v) * a,
     [away_from_zero(5), rng.normal(size=())]),
    ("maximum", lambda a, b: minidl.maximum(a, b) ** 2, [rng.normal(size=5), rng.normal(size=5)]),
    ("minimum", lambda a, b: minidl.minimum(a, b) * a, [rng.normal(size=5), rng.normal(size=5)]),
    ("softmax", lambda a: F.softmax(a, dim=1), [rng.normal(size=(2, 4))]),
    ("softmax_dim0", lambda a: F.softmax(a, dim=0) * a, [rng.normal(size=(3, 2))]),
    ("log_softmax", lambda a: F.log_softmax(a, dim=-1) ** 2, [rng.normal(size=(2, 4))]),
    ("matmul_2d", lambda a, b: (a @ b) ** 2, [rng.normal(size=(2, 3)), rng.normal(size=(3, 4))]),
    ("matmul_vec_mat", lambda a, b: (a @ b) ** 2, [rng.normal(size=3), rng.normal(size=(2, 3, 4))]),
    ("matmul_mat_vec", lambda a, b: (a @ b) ** 2, [rng.normal(size=(2, 3)), rng.normal(size=3)]),
    ("matmul_dot", lambda a, b: (a @ b) ** 2, [rng.normal(size=3), rng.normal(size=3)]),
    ("matmul_batch_broadcast", lambda a, b: (a @ b).tanh(),
     [rng.normal(size=(2, 1, 2, 3)), rng.normal(size=(3, 3, 2))]),
    ("sum_dims", lambda a: a.sum(dim=1) ** 2, [rng.normal(size=(2, 3, 2))]),
    ("sum_keepdim", lambda a: a * a.sum(dim=(0, 2), keepdim=True), [rng.normal(size=(2, 3, 2))]),
    ("mean", lambda a: a.mean(dim=0) ** 3 + a.mean() * a, [rng.normal(size=(3, 2))]),
    ("amax", lambda a: a.amax(dim=1) * a.sum(dim=1), [rng.normal(size=(3, 4))]),
    ("max_all", lambda a: a.max() * a, [rng.normal(size=(3, 4))]),
    ("max_dim", lambda a: a.max(dim=0).values ** 2 * a.min(dim=0).values, [rng.normal(size=(3, 4))]),
    ("var", lambda a: a.var(dim=1) * a.sum(dim=1), [rng.normal(size=(3, 4))]),
    ("var_keepdim_biased", lambda a: a * a.var(dim=0, keepdim=True, unbiased=False),
     [rng.normal(size=(3, 2))]),
    ("std", lambda a: a.std(dim=1) ** 2 + a.std(), [rng.normal(size=(3, 4))]),
    ("topk", lambda a: a.topk(2, dim=1).values ** 2, [rng.normal(size=(3, 5))]),
    ("reshape_permute", lambda a: a.reshape(3, 4).permute(1, 0) ** 2 @ a.reshape(3, 4),
     [rng.normal(size=(2, 6))]),
    ("expand", lambda a: a.expand(3, 4) * a.expand(3, 4).sum(dim=0), [rng.normal(size=(1, 4))]),
    ("getitem_basic", lambda a: a[1:, ::2] ** 2 * a[0, 0], [rng.normal(size=(3, 4))]),
    ("getitem_repeated_index", lambda a: a[[0, 2, 0]] ** 2, [rng.normal(size=(3, 2))]),
    ("getitem_bool_mask", lambda a: a[a > 0] ** 3, [away_from_zero((3, 3))]),
    ("setitem", lambda a, v: _setitem(a, v), [rng.normal(size=(3, 4)), rng.normal(size=4)]),
    ("repeat", lambda a: a.repeat(2, 3) ** 2, [rng.normal(size=(2, 2))]),
    ("cat_stack", lambda a, b: (minidl.cat([a, b * a], dim=1) ** 2).sum(1)
     * minidl.stack([a, b]).sum((0, 2)),
     [rng.normal(size=(2, 3)), rng.normal(size=(2, 3))]),
    ("clone", lambda a: a.clone() * a, [rng.normal(size=4)]),
    ("sum_to_size", lambda a: (a * a).sum_to_size(1, 3) ** 2, [rng.normal(size=(2, 3))]),
    ("linear", lambda x, w, b: F.linear(x, w, b).tanh(),
     [rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)]),
    ("linear_no_bias", lambda x, w: F.linear(x, w) ** 2, [rng.normal(size=(3, 4)), rng.normal(size=(2, 4))]),
]


def _setitem(a, v):
    a = a * 1.0
    a[1] = v * v
    return a * a


@pytest.mark.parametrize("name,fn,arrays", CASES, ids=[c[0] for c in CASES])
def test_second_derivatives_match_finite_differences(name, fn, arrays):
    assert gradgradcheck(fn, [t64(a) for a in arrays], atol=1e-5, rtol=1e-4)


def test_gradgradcheck_catches_a_wrong_second_derivative():
    """A custom op whose differentiable gradient has the right value but treats x as a
    constant (the silent error create_graph must not make): gradgradcheck must fail where
    gradcheck passes; and one whose differentiable gradient has a wrong value fails too."""

    class BadSquare(Function):
        def forward(self, a):
            return a * a

        def backward(self, g):
            return 2 * g * self.inputs[0].data

        def graph_backward(self, g, out):
            return g * minidl.ops.constant(2 * self.inputs[0].data)  # x as a constant

    class WrongValue(BadSquare):
        def graph_backward(self, g, out):
            return g * self.inputs[0] * self.inputs[0]  # not 2 * g * x

    x = t64([0.7, -1.3])
    assert minidl.testing.gradcheck(lambda a: BadSquare.apply(a), [x])
    with pytest.raises(AssertionError, match="differs"):
        gradgradcheck(lambda a: BadSquare.apply(a), [x])
    with pytest.raises(AssertionError, match="create_graph=True differs"):
        gradgradcheck(lambda a: WrongValue.apply(a), [x])


def test_third_derivative():
    x = t64([0.5, -2.0, 1.5])
    (g1,) = minidl.autograd.grad((x ** 4).sum(), x, create_graph=True)
    (g2,) = minidl.autograd.grad(g1.sum(), x, create_graph=True)
    (g3,) = minidl.autograd.grad(g2.sum(), x)
    np.testing.assert_allclose(g1.numpy(), 4 * x.numpy() ** 3)
    np.testing.assert_allclose(g2.numpy(), 12 * x.numpy() ** 2)
    np.testing.assert_allclose(g3.numpy(), 24 * x.numpy())


def test_backward_create_graph_keeps_grad_differentiable_and_accumulates_out_of_place():
    x = t64([1.0, 2.0])
    (x ** 3).sum().backward(create_graph=True)
    first = x.grad
    assert first.requires_grad and first.grad_fn is not None
    np.testing.assert_allclose(first.numpy(), [3.0, 12.0])
    (x ** 2).sum().backward(create_graph=True)  # accumulates: 3x^2 + 2x, out of place
    np.testing.assert_allclose(first.numpy(), [3.0, 12.0])
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 16.0])
    total = x.grad.sum()
    x.grad = None
    total.backward()  # d/dx (3x^2 + 2x) = 6x + 2
    np.testing.assert_allclose(x.grad.numpy(), [8.0, 14.0])


def test_create_graph_retains_the_graph_by_default():
    x = t64([1.0, 2.0])
    y = (x * x).sum()
    minidl.autograd.grad(y, x, create_graph=True)
    (g,) = minidl.autograd.grad(y, x)  # again: the first pass kept the graph, as in PyTorch
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])


def test_hook_output_is_differentiated_through():
    x = t64([1.0, -2.0])
    w = t64([3.0, 0.5])
    y = x * x
    y.register_hook(lambda g: g * w)  # the gradient then depends on w
    (gx,) = minidl.autograd.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(gx.numpy(), 2 * x.numpy() * w.numpy())
    (gw,) = minidl.autograd.grad(gx.sum(), w)
    np.testing.assert_allclose(gw.numpy(), 2 * x.numpy())


def test_an_op_without_differentiable_gradient_refuses_the_second_backward():
    class Cube(Function):  # minidl's own style: forward and backward on arrays only
        def forward(self, a):
            self.save_for_backward(a)
            return a ** 3

        def backward(self, g):
            (a,) = self.saved
            return 3 * g * a * a

    x = t64([1.0, 2.0])
    (g,) = minidl.autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), [3.0, 12.0])  # the first order is right
    assert g.requires_grad
    with pytest.raises(NotImplementedError, match="CubeBackward"):
        g.sum().backward()
    # a first-order gradient that does not depend on anything needing grad is a plain value
    c = t64([1.0, 2.0], grad=False)
    (gc,) = minidl.autograd.grad((Cube.apply(x) * c).sum(), x, create_graph=True)
    assert gc.requires_grad  # depends on x through Cube's saved input


def test_pytorch_style_custom_function_backward_is_differentiable():
    class Cube(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a ** 3

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return 3 * g * a * a  # Tensor ops: recorded in a create_graph pass

    x = t64([1.0, -2.0])
    (g,) = minidl.autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
    (h,) = minidl.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy())


def test_sum_to_size():
    x = minidl.arange(6.0).reshape(2, 3)
    assert x.sum_to_size(1, 3).tolist() == [[3.0, 5.0, 7.0]]
    assert x.sum_to_size((2, 1)).tolist() == [[3.0], [12.0]]
    assert x.sum_to_size(3).tolist() == [3.0, 5.0, 7.0]
    assert x.sum_to_size(2, 3) is x
    with pytest.raises(ValueError, match="not expandable"):
        x.sum_to_size(4)
    with pytest.raises(ValueError, match="not expandable"):
        x.sum_to_size(1, 2, 3)


# ---- parity with PyTorch -----------------------------------------------------------------------
def _mlp_params(framework, seed=3):
    r = np.random.default_rng(seed)
    shapes = [(8, 5), (8,), (3, 8), (3,)]
    arrays = [r.normal(size=s) * 0.5 for s in shapes]
    return [framework.tensor(a, dtype=framework.float64, requires_grad=True) for a in arrays]


def _gradient_penalty_step(framework, functional):
    """A WGAN-GP style step: the critic's gradient with respect to its input, its norm's
    squared distance from 1, backpropagated to the critic's weights and to the input."""
    w1, b1, w2, b2 = _mlp_params(framework)
    r = np.random.default_rng(5)
    x = framework.tensor(r.normal(size=(4, 5)), dtype=framework.float64, requires_grad=True)
    h = functional.linear(x, w1, b1).tanh()
    h = h * functional.softmax(h, dim=1).sigmoid()
    out = functional.linear(h, w2, b2)
    score = out.exp().sum(dim=1).log().sum() + (out ** 2).mean()
    (gx,) = framework.autograd.grad(score, x, create_graph=True)
    penalty = ((gx.pow(2).sum(dim=1) + 1e-12).sqrt() - 1) ** 2
    penalty.mean().backward()
    return [p.grad.detach().numpy() for p in (w1, b1, w2, b2, x)]


def test_gradient_penalty_matches_torch():
    torch = pytest.importorskip("torch")
    ours = _gradient_penalty_step(minidl, F)
    theirs = _gradient_penalty_step(torch, torch.nn.functional)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-12)


def _hessian_vector_product(framework, functional):
    w1, b1, w2, b2 = _mlp_params(framework, seed=11)
    r = np.random.default_rng(12)
    x = framework.tensor(r.normal(size=(6, 5)), dtype=framework.float64)
    target = framework.tensor(r.normal(size=(6, 3)), dtype=framework.float64)
    params = [w1, b1, w2, b2]
    pred = functional.linear(functional.linear(x, w1, b1).sigmoid(), w2, b2)
    loss = ((pred - target) ** 2).mean() + functional.log_softmax(pred, dim=1).max(dim=1)[0].sum()
    grads = framework.autograd.grad(loss, params, create_graph=True)
    vs = [framework.tensor(r.normal(size=tuple(p.shape)), dtype=framework.float64) for p in params]
    dot = sum((g * v).sum() for g, v in zip(grads, vs))
    return [h.detach().numpy() for h in framework.autograd.grad(dot, params)]


def test_hessian_vector_product_matches_torch():
    torch = pytest.importorskip("torch")
    for a, b in zip(_hessian_vector_product(minidl, F),
                    _hessian_vector_product(torch, torch.nn.functional)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-12)


def _ops_second_order(framework):
    r = np.random.default_rng(21)
    a = framework.tensor(r.normal(size=(3, 4)), dtype=framework.float64, requires_grad=True)
    b = framework.tensor(r.uniform(0.5, 2, (4,)), dtype=framework.float64, requires_grad=True)
    y = (a / b).exp() * framework.clamp(a, -0.5, 0.5) + a.abs().sqrt() * a[[0, 2, 2]].sum(0)
    y = framework.cat([y, a.var(dim=0, keepdim=True) * b], dim=0).std(dim=1)
    y = y + a.amax(dim=1).pow(3).mean() + framework.maximum(a, b).sum()
    ga, gb = framework.autograd.grad(y.sum(), [a, b], create_graph=True)
    ((ga ** 2).sum() + (gb * b).sum().tanh()).backward()
    return a.grad.detach().numpy(), b.grad.detach().numpy()


def test_second_order_through_many_ops_matches_torch():
    torch = pytest.importorskip("torch")
    for ours, theirs in zip(_ops_second_order(minidl), _ops_second_order(torch)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-12)


def test_float32_second_order_matches_torch():
    torch = pytest.importorskip("torch")

    def run(framework):
        r = np.random.default_rng(4)
        x = framework.tensor(r.normal(size=(5, 3)).astype(np.float32), requires_grad=True)
        w = framework.tensor(r.normal(size=(3, 3)).astype(np.float32), requires_grad=True)
        y = (x @ w).relu().sum() + (x.double() @ w.double()).sigmoid().pow(2).sum().float()
        (gx,) = framework.autograd.grad(y, x, create_graph=True)
        gx.pow(2).sum().backward()
        return w.grad.numpy(), gx.detach().numpy()

    for ours, theirs in zip(run(minidl), run(torch)):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def _penalty_on(device):
    """A WGAN-GP style second-order step of a small CNN on ``device``: the parameters' grads."""
    minidl.manual_seed(0)
    model = minidl.nn.Sequential(
        minidl.nn.Conv2d(2, 4, 3, padding=1), minidl.nn.BatchNorm2d(4), minidl.nn.ReLU(),
        minidl.nn.MaxPool2d(2), minidl.nn.Flatten(), minidl.nn.Linear(4 * 2 * 2, 3),
        minidl.nn.LayerNorm(3), minidl.nn.GELU(), minidl.nn.Linear(3, 1)).double().to(device)
    x = minidl.tensor(np.random.default_rng(2).normal(size=(3, 2, 4, 4)),
                      dtype=minidl.float64, device=device, requires_grad=True)
    (gx,) = minidl.autograd.grad(model(x).sum(), x, create_graph=True)
    ((gx.pow(2).sum(dim=(1, 2, 3)) + 1e-12).sqrt().sub(1).pow(2).mean()).backward()
    # the last bias does not reach d(out)/dx: it gets no gradient
    return [np.zeros(p.shape) if p.grad is None else p.grad.numpy() for p in model.parameters()]


def test_second_order_on_the_fake_gpu_matches_the_cpu(monkeypatch, host_kernels):
    import _fake_gpu

    expected = _penalty_on("cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    for a, b in zip(_penalty_on("cuda"), expected):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not minidl.cuda_available(),
                    reason="needs CuPy and an NVIDIA GPU (CuPy not installed or no GPU found)")
def test_second_order_on_cuda_matches_the_cpu():
    for a, b in zip(_penalty_on("cuda"), _penalty_on("cpu")):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)


# ---- .grad after backward(create_graph=True) is a tensor of its own ----------------------------------
def test_create_graph_grad_is_not_shared_between_leaves_or_with_the_given_gradient():
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    (a + b).sum().backward(create_graph=True)  # Add hands one gradient to both inputs
    assert a.grad is not b.grad
    with minidl.no_grad():
        a.grad.zero_()
    assert b.grad.tolist() == [1.0, 1.0]
    x = t64([1.0, 2.0])
    v = t64([5.0, 6.0], grad=False)
    x.backward(v, create_graph=True)
    assert x.grad is not v
    with minidl.no_grad():
        x.grad.zero_()
    assert v.tolist() == [5.0, 6.0]


def test_create_graph_grad_copy_matches_torch_and_stays_differentiable():
    torch = pytest.importorskip("torch")
    results = []
    for lib in (torch, minidl):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        v = lib.tensor([1.0, 3.0], dtype=lib.float64, requires_grad=True)
        (a * 1).backward(v, create_graph=True)
        assert a.grad is not v and a.grad.requires_grad
        (gv,) = lib.autograd.grad((a.grad * a.grad).sum(), v)  # through the copy
        results.append(gv.tolist())
    assert results[0] == results[1] == [2.0, 6.0]


# ---- the in-place version check in a create_graph pass -----------------------------------------------
@pytest.mark.parametrize("op", ["var", "std"])
def test_var_refuses_an_input_changed_in_place_in_both_passes(op):
    # Var saved its deviations from the mean, not its input; graph_backward reads the input
    # Tensor, so a create_graph pass differentiated the changed values (silently wrong)
    for create_graph in (False, True):
        a = t64([0.3, 0.7, 1.2])
        b = a * 2
        c = getattr(b, op)()
        with minidl.no_grad():
            b.mul_(1.5)
        with pytest.raises(RuntimeError, match="changed by an in-place operation"):
            minidl.autograd.grad(c, a, create_graph=create_graph)


def test_cross_entropy_create_graph_refuses_logits_changed_in_place():
    a = t64([[0.3, 0.7, 1.2]])
    b = a * 2
    loss = F.cross_entropy(b, minidl.tensor([1]))
    (ordinary,) = minidl.autograd.grad(loss, a, retain_graph=True)  # the saved softmax: right
    np.testing.assert_allclose(ordinary.numpy(), [[0.2156, -1.5201, 1.3045]], atol=1e-4)
    with minidl.no_grad():
        b.mul_(1.5)
    with pytest.raises(RuntimeError, match="CrossEntropy's input 0"):
        minidl.autograd.grad(loss, a, create_graph=True)


@pytest.mark.parametrize("name", ["sinc", "i1", "i0e", "i1e", "erfcx", "log_ndtr"])
def test_special_op_create_graph_refuses_its_output_changed_in_place(name):
    fn = getattr(minidl.special, name)
    a = t64([0.3, 0.6, 0.8])
    b = a * 1
    c = fn(b)
    (ordinary,) = minidl.autograd.grad(c.sum(), a, retain_graph=True)
    with minidl.no_grad():
        c.mul_(1.1)
    # the ordinary pass uses the saved input: still right; the create_graph pass read the output
    (again,) = minidl.autograd.grad(c.sum(), a, retain_graph=True)
    np.testing.assert_allclose(again.numpy(), ordinary.numpy())
    with pytest.raises(RuntimeError, match="output .*changed by an in-place operation"):
        minidl.autograd.grad(c.sum(), a, create_graph=True)


# ---- zero_grad(set_to_none=False) after backward(create_graph=True) ----------------------------------
@pytest.mark.parametrize("via", ["optimizer", "module"])
def test_zero_grad_in_place_cuts_a_create_graph_gradient_from_its_graph(via):
    m = minidl.nn.Linear(2, 1).double()
    x = t64([[1.0, 2.0]], grad=False)
    (m(x) ** 2).sum().backward(create_graph=True)
    assert m.weight.grad.requires_grad
    if via == "optimizer":
        minidl.optim.SGD(m.parameters(), lr=0.1).zero_grad(set_to_none=False)
    else:
        m.zero_grad(set_to_none=False)
    g = m.weight.grad
    assert g.tolist() == [[0.0, 0.0]]
    assert not g.requires_grad and g.grad_fn is None  # no graph kept alive by .grad
    (m(x) ** 2).sum().backward()
    assert not m.weight.grad.requires_grad


def test_zero_grad_in_place_parity_with_torch():
    torch = pytest.importorskip("torch")
    flags = []
    for lib in (torch, minidl):
        w = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        opt = lib.optim.SGD([w], lr=0.1)
        (w ** 3).sum().backward(create_graph=True)
        opt.zero_grad(set_to_none=False)
        flags.append((w.grad.requires_grad, w.grad.tolist()))
    assert flags[0] == flags[1]
