"""backward() frees the graph's saved arrays; a second backward through it is a RuntimeError
unless the first used retain_graph=True (PyTorch's rule), instead of silently doubling .grad."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.models import lenet5


def _graph_functions(root):
    seen, stack, out = set(), [root], []
    while stack:
        t = stack.pop()
        if t._ctx is None or id(t._ctx) in seen:
            continue
        seen.add(id(t._ctx))
        out.append(t._ctx)
        stack.extend(t._ctx.inputs)
    return out


def _lenet_loss(seed=0):
    minidl.manual_seed(seed)
    model = lenet5()
    x = minidl.tensor(np.random.default_rng(seed).standard_normal((4, 1, 28, 28)))
    loss = F.cross_entropy(model(x), minidl.tensor([1, 2, 3, 4]))
    return model, loss


def _arrays_held(fn):
    return [k for k, v in vars(fn).items() if k != "edges" and (
            (hasattr(v, "shape") and hasattr(v, "dtype"))
            or (isinstance(v, (tuple, list)) and any(hasattr(a, "shape") for a in v)))]


def _strong_non_leaves(fn):
    """The tensors a freed op keeps strongly that are not leaves requiring grad (its edges
    keep those, as torch's AccumulateGrad does, and others only weakly)."""
    return [e for e in fn.edges or () if isinstance(e, minidl.Tensor) and (
        e._ctx is not None or not e.requires_grad)]


def test_a_second_backward_raises_and_leaves_the_gradients_alone():
    model, loss = _lenet_loss()
    loss.backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        loss.backward()
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), g)  # not doubled


def test_backward_frees_the_saved_arrays():
    model, loss = _lenet_loss()
    functions = _graph_functions(loss)
    assert len(functions) > 10 and any(_arrays_held(fn) for fn in functions)
    loss.backward()
    assert all(fn.freed and fn.saved == () and fn.inputs == () for fn in functions)
    assert [(type(fn).__name__, _arrays_held(fn)) for fn in functions if _arrays_held(fn)] == []
    assert [type(fn).__name__ for fn in functions if _strong_non_leaves(fn)] == []


def test_retain_graph_keeps_it_and_a_second_backward_accumulates_like_torch():
    model, loss = _lenet_loss()
    loss.backward(retain_graph=True)
    once = [p.grad.numpy().copy() for p in model.parameters()]
    loss.backward()  # allowed: the graph was kept; this one frees it
    for g, p in zip(once, model.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), 2 * g, rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_a_new_graph_over_a_freed_one_raises_too():
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    h = (x * x).sum()
    h.backward()
    with pytest.raises(RuntimeError, match="second time"):
        (h * 3).backward()
    x.grad = None
    y = (x * x).sum()  # a fresh forward pass is always fine
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


def test_matches_torch():
    torch = pytest.importorskip("torch", reason="the comparison needs torch")
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    tl = (t.sigmoid() * t).sum()
    tl.backward()
    with pytest.raises(RuntimeError):
        tl.backward()
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    loss = (x.sigmoid() * x).sum()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError):
        loss.backward()
