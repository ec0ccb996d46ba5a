"""minidl.autograd.functional (vjp, jvp, jacobian, hessian, vhp, hvp) against
torch.autograd.functional on the same float64 inputs, in each of PyTorch's result structures."""
import numpy as np
import pytest

import minidl
from minidl.autograd import functional as AF

rng = np.random.default_rng(3)
A, B, V, W = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(3, 4)), rng.normal(size=4)


def two_in_two_out(fw):
    return lambda x, y: (((x @ y).tanh() * x.sum(1)).exp(), (x * x).sum(0) * y.sigmoid())


def scalar_of_two(x, y):
    return ((x @ y).sigmoid() ** 2).sum() + (x ** 3).sum() * y.sum() + (x.exp() * y).mean()


def one_in_one_out(x):
    return (x.log_softmax(dim=1) * x).sum(0)


def tensors(fw, *arrays):
    return tuple(fw.tensor(a, dtype=fw.float64) for a in arrays)


def close(ours, theirs):
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            close(a, b)
        return
    assert tuple(ours.shape) == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def torch_functional():
    torch = pytest.importorskip("torch")
    return torch, torch.autograd.functional


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_jacobian_structures_match_torch(strategy):
    torch, TF = torch_functional()
    kw = {"strategy": strategy, "vectorize": strategy == "forward-mode"}
    close(AF.jacobian(two_in_two_out(minidl), tensors(minidl, A, B), **kw),
          TF.jacobian(two_in_two_out(torch), tensors(torch, A, B), **kw))
    close(AF.jacobian(one_in_one_out, tensors(minidl, A)[0], **kw),
          TF.jacobian(one_in_one_out, tensors(torch, A)[0], **kw))
    close(AF.jacobian(lambda x, y: x @ y, tensors(minidl, A, B), **kw),
          TF.jacobian(lambda x, y: x @ y, tensors(torch, A, B), **kw))
    close(AF.jacobian(lambda x: (x.sum(), x * 2), tensors(minidl, B)[0], **kw),
          TF.jacobian(lambda x: (x.sum(), x * 2), tensors(torch, B)[0], **kw))


def test_hessian_matches_torch():
    torch, TF = torch_functional()
    close(AF.hessian(scalar_of_two, tensors(minidl, A, B)),
          TF.hessian(scalar_of_two, tensors(torch, A, B)))
    f = lambda x: (x.tanh() ** 3).sum()  # noqa: E731
    close(AF.hessian(f, tensors(minidl, A)[0]), TF.hessian(f, tensors(torch, A)[0]))


@pytest.mark.parametrize("name", ["vhp", "hvp"])
def test_hessian_vector_products_match_torch(name):
    torch, TF = torch_functional()
    ours = getattr(AF, name)(scalar_of_two, tensors(minidl, A, B), tensors(minidl, V, W))
    theirs = getattr(TF, name)(scalar_of_two, tensors(torch, A, B), tensors(torch, V, W))
    close(ours, theirs)
    f = lambda x: (x.tanh() * x).sum()  # noqa: E731
    close(getattr(AF, name)(f, tensors(minidl, A)[0], tensors(minidl, V)[0]),
          getattr(TF, name)(f, tensors(torch, A)[0], tensors(torch, V)[0]))


def test_vjp_and_jvp_match_torch():
    torch, TF = torch_functional()
    u = (rng.normal(size=3), rng.normal(size=4))
    close(AF.vjp(two_in_two_out(minidl), tensors(minidl, A, B), tensors(minidl, *u)),
          TF.vjp(two_in_two_out(torch), tensors(torch, A, B), tensors(torch, *u)))
    close(AF.jvp(two_in_two_out(minidl), tensors(minidl, A, B), tensors(minidl, V, W)),
          TF.jvp(two_in_two_out(torch), tensors(torch, A, B), tensors(torch, V, W)))
    close(AF.vjp(lambda x: (x ** 2).sum(), tensors(minidl, B)[0]),
          TF.vjp(lambda x: (x ** 2).sum(), tensors(torch, B)[0]))


def test_values_without_torch():
    x = minidl.tensor([1.0, 2.0], dtype=minidl.float64)
    h = AF.hessian(lambda t: (t ** 3).sum(), x)
    np.testing.assert_allclose(h.numpy(), np.diag([6.0, 12.0]))
    j = AF.jacobian(lambda t: t ** 2, x)
    np.testing.assert_allclose(j.numpy(), np.diag([2.0, 4.0]))
    out, jv = AF.jvp(lambda t: t ** 2, x, minidl.tensor([1.0, 1.0], dtype=minidl.float64))
    np.testing.assert_allclose(jv.numpy(), [2.0, 4.0])
    assert not out.requires_grad and not jv.requires_grad


def test_unused_input_gives_zeros_or_refuses_with_strict():
    x, y = tensors(minidl, A, B)
    jx, jy = AF.jacobian(lambda a, b: a * 2, (x, y))
    assert jy.shape == (3, 4, 4) and not jy.numpy().any()
    with pytest.raises(RuntimeError, match="does not depend on input 1"):
        AF.jacobian(lambda a, b: a * 2, (x, y), strict=True)
    _, (hx, hy) = AF.vhp(lambda a, b: (a ** 2).sum(), (x, y), (x, y))
    assert not hy.numpy().any()


def test_create_graph_keeps_results_differentiable():
    x = minidl.tensor([0.5, -1.0], dtype=minidl.float64, requires_grad=True)
    h = AF.hessian(lambda t: (t ** 4).sum(), x, create_graph=True)  # diag(12 x^2)
    assert h.requires_grad
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 24 * x.numpy())


def test_bad_arguments():
    x = minidl.tensor([1.0, 2.0], dtype=minidl.float64)
    with pytest.raises(RuntimeError, match="single element"):
        AF.hessian(lambda t: t * 2, x)
    with pytest.raises(RuntimeError, match="v can be left out"):
        AF.vjp(lambda t: t * 2, x)
    with pytest.raises(ValueError, match=r"v\[0\] has shape \(3,\)"):
        AF.jvp(lambda t: t * 2, x, minidl.zeros(3, dtype=minidl.float64))
    with pytest.raises(TypeError, match="must be a Tensor or a tuple"):
        AF.jacobian(lambda t: t, [1.0, 2.0])
    with pytest.raises(ValueError, match="needs vectorize=True"):
        AF.jacobian(lambda t: t, x, strategy="forward-mode")
    assert minidl.autograd.functional is AF
