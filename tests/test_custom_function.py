"""Custom autograd functions written as PyTorch's (``@staticmethod forward(ctx, ...)`` and
``backward(ctx, *grads)`` on Tensors, ``ctx.save_for_backward`` / ``ctx.saved_tensors``),
run unchanged by torch and by minidl."""
import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

try:
    import torch
except ImportError:
    torch = None


def define(tt):
    class Exp(tt.autograd.Function):
        @staticmethod
        def forward(ctx, i):
            result = i.exp()
            ctx.save_for_backward(result)
            return result

        @staticmethod
        def backward(ctx, grad_output):
            (result,) = ctx.saved_tensors
            return grad_output * result

    class ScaledPair(tt.autograd.Function):
        """Two outputs, a number among the arguments."""
        @staticmethod
        def forward(ctx, a, k, b):
            ctx.k = k
            ctx.save_for_backward(a, b)
            return a * k * b, a + b

        @staticmethod
        def backward(ctx, g1, g2):
            a, b = ctx.saved_tensors
            ga = g1 * ctx.k * b + g2 if ctx.needs_input_grad[0] else None
            gb = g1 * ctx.k * a + g2 if ctx.needs_input_grad[2] else None
            return ga, None, gb

    class MaxWithIndex(tt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            index = x.argmax(dim=1, keepdim=True)
            ctx.mark_non_differentiable(index)
            ctx.save_for_backward(index)
            ctx.shape = x.shape
            return x.max(dim=1, keepdim=True).values, index

        @staticmethod
        def backward(ctx, g, _):
            (index,) = ctx.saved_tensors
            out = tt.zeros(ctx.shape, dtype=g.dtype)
            return out.scatter(1, index, g)

    return Exp, ScaledPair, MaxWithIndex


def run(tt):
    Exp, ScaledPair, MaxWithIndex = define(tt)
    x = tt.from_numpy(np.array([[0.5, -1.0, 2.0], [0.1, 0.3, -0.2]])).requires_grad_()
    y = tt.from_numpy(np.array([[1.5, 2.0, -0.5], [0.7, -0.3, 0.9]])).requires_grad_()
    e = Exp.apply(x)
    p, q = ScaledPair.apply(e, 3.0, y)
    m, idx = MaxWithIndex.apply(p * q)
    ((p * p + q).sum() + (m * m).sum()).backward()
    return [e.detach().numpy(), m.detach().numpy(), idx.numpy(), x.grad.numpy(), y.grad.numpy()]


def test_pytorch_style_functions_match_torch():
    ours = run(minidl)
    if torch is None:
        pytest.skip("torch not installed: the parity half of this test needs it")
    for a, b in zip(ours, run(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_gradcheck_and_graph_rules():
    Exp, ScaledPair, MaxWithIndex = define(minidl)
    x = minidl.tensor(np.array([0.3, -0.4, 1.2]), dtype=np.float64, requires_grad=True)
    y = minidl.tensor(np.array([0.9, 0.2, -0.7]), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda a, b: ScaledPair.apply(Exp.apply(a), 2.5, b)[0], (x, y))
    assert gradcheck(lambda a, b: ScaledPair.apply(a, -1.5, b)[1] * a, (x, y))
    x.grad = None
    e = Exp.apply(x)
    assert e.grad_fn is not None and e.requires_grad
    e.sum().backward(retain_graph=True)
    e.sum().backward()  # twice with retain_graph on the first
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(x.numpy()), rtol=1e-12)
    with pytest.raises(RuntimeError, match="second time"):
        e.sum().backward()
    with minidl.no_grad():
        assert not Exp.apply(x).requires_grad
    plain = Exp.apply(minidl.tensor([1.0]))  # no input takes a gradient: no graph
    assert plain.grad_fn is None and not plain.requires_grad


def test_mistakes_are_named():
    class TooFew(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g

    a = minidl.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="returned 1 gradients, expected 2"):
        TooFew.apply(a, a).sum().backward()

    class NotTensor(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.numpy()

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(TypeError, match="must return a Tensor"):
        NotTensor.apply(a)
