"""Tensor.register_hook: hooks on leaves and on intermediate tensors run when that tensor's
gradient is computed, may replace it, and come off with handle.remove(); as in PyTorch."""
import numpy as np
import pytest

import minidl
from _ops_check import needs_torch, torch

X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])


def _run(lib, remove_second=False):
    seen = []
    x = lib.tensor(X, requires_grad=True)
    w = lib.tensor(X[0] * 2, requires_grad=True)
    h = x * w
    h.register_hook(lambda g: seen.append(("h", g.numpy().copy())))
    h.register_hook(lambda g: g * 10)  # replaces the gradient flowing on to x and w
    handle = h.register_hook(lambda g: g + 1)
    if remove_second:
        handle.remove()
        handle.remove()  # twice is harmless
    x.register_hook(lambda g: seen.append(("x", g.numpy().copy())))
    w.register_hook(lambda g: g * 0.5)
    y = (h * h).sum(dim=1)
    y.register_hook(lambda g: seen.append(("y", g.numpy().copy())))
    y.backward(lib.tensor(np.array([1.0, -2.0])))
    return seen, x.grad.numpy(), w.grad.numpy()


@needs_torch
@pytest.mark.parametrize("remove_second", [False, True])
def test_hooks_match_torch(remove_second):
    m_seen, m_gx, m_gw = _run(minidl, remove_second)
    t_seen, t_gx, t_gw = _run(torch, remove_second)
    assert [n for n, _ in m_seen] == [n for n, _ in t_seen]
    for (_, a), (_, b) in zip(m_seen, t_seen):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(m_gx, t_gx, rtol=1e-12)
    np.testing.assert_allclose(m_gw, t_gw, rtol=1e-12)


@needs_torch
def test_hook_on_leaf_changes_accumulated_grad_and_retain_grad():
    for lib in (minidl, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        x.register_hook(lambda g: g * 3)
        (x * x).sum().backward()
        (x * x).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), [12.0, 24.0])
        h = x * 2
        h.retain_grad()
        h.register_hook(lambda g: g + 5)
        h.sum().backward()
        np.testing.assert_allclose(h.grad.numpy(), [6.0, 6.0])


def test_hook_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        minidl.tensor([1.0]).register_hook(lambda g: g)
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: minidl.zeros(3))
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).sum().backward()


@needs_torch
def test_hooks_stay_with_the_value_before_an_in_place_change():
    def run(lib):
        seen = []
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        h = x * 2
        h.register_hook(lambda g: seen.append(("before", g.tolist())))
        h.mul_(3)
        h.register_hook(lambda g: seen.append(("after", g.tolist())))
        h.sum().backward()
        return seen, x.grad.tolist()
    assert run(minidl) == run(torch)
