"""``minidl.autograd.grad`` and ``backward(inputs=...)`` as PyTorch's: gradients of several
outputs with respect to chosen tensors (leaves or intermediates), nothing accumulated where
torch accumulates nothing, unused inputs refused or given as None/zeros."""
import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


def _graph(tt):
    x = tt.from_numpy(np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]])).requires_grad_()
    w = tt.from_numpy(np.array([[0.2, -0.4], [1.1, 0.6], [-0.3, 0.8]])).requires_grad_()
    h = (x @ w).tanh()
    y = (h * h).sum()
    z = (h.exp() * tt.from_numpy(np.array([1.0, -2.0]))).sum(1)
    return x, w, h, y, z


def _np(ts):
    return [None if t is None else t.detach().numpy() for t in ts]


def run_grad(tt):
    x, w, h, y, z = _graph(tt)
    out = []
    out += _np(tt.autograd.grad(y, (x, w), retain_graph=True))
    out += _np(tt.autograd.grad([y, z], [h, w], grad_outputs=[None, tt.from_numpy(
        np.array([0.5, -1.5]))], retain_graph=True))
    out += _np(tt.autograd.grad(z, x, grad_outputs=tt.ones_like(z), retain_graph=True))
    assert x.grad is None and w.grad is None  # nothing accumulated
    y.backward(inputs=[w], retain_graph=True)
    assert x.grad is None
    out.append(w.grad.detach().numpy().copy())
    z.sum().backward(inputs=x)
    out.append(x.grad.detach().numpy().copy())
    return out


def test_grad_matches_torch():
    ours = run_grad(minidl)
    assert all(o is not None for o in ours)
    if torch is None:
        pytest.skip("torch not installed: the parity half of this test needs it")
    for a, b in zip(ours, run_grad(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_grad_unused_inputs_and_errors():
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    u = minidl.tensor([3.0], requires_grad=True)
    y = (x * x).sum()
    with pytest.raises(RuntimeError, match="not used in the graph"):
        minidl.autograd.grad(y, [x, u], retain_graph=True)
    gx, gu = minidl.autograd.grad(y, [x, u], allow_unused=True, retain_graph=True)
    assert gx.tolist() == [2.0, 4.0] and gu is None
    gx, gu = minidl.autograd.grad(y, [x, u], materialize_grads=True, retain_graph=True)
    assert gu.tolist() == [0.0]
    (gx,) = minidl.autograd.grad(y, x, create_graph=True)  # keeps the graph, as torch
    assert gx.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        minidl.autograd.grad(y, minidl.tensor([1.0]))
    with pytest.raises(ValueError, match="without a gradient needs a scalar"):
        minidl.autograd.grad(x * 2, x)
    minidl.autograd.grad(y, x)  # frees the graph, as torch without retain_graph
    with pytest.raises(RuntimeError, match="second time"):
        minidl.autograd.grad(y, x)


def test_grad_runs_tensor_hooks_and_sees_a_shared_subgraph_once():
    x = minidl.tensor([1.0, -2.0], requires_grad=True)
    seen = []
    h = x * 3
    h.register_hook(lambda g: seen.append(g.tolist()))
    a, b = (h * h).sum(), h.sum()
    (gx,) = minidl.autograd.grad([a, b], [x])
    np.testing.assert_allclose(gx.numpy(), 3 * (2 * 3 * x.numpy() + 1))
    assert seen == [[7.0, -11.0]]  # one call, with both outputs' contributions


# ---- autograd.grad / backward argument errors, as torch ----------------------------------------------
def t64(a, grad=True):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=minidl.float64, requires_grad=grad)


def test_grad_argument_errors_are_torch_s():
    x = t64([1.0, 2.0])
    y = x ** 3
    with pytest.raises(RuntimeError, match="needs a scalar"):
        minidl.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not match"):
        minidl.autograd.grad(y, x, grad_outputs=t64([1.0, 1.0, 1.0], False), create_graph=True)
    with pytest.raises(RuntimeError, match="needs a scalar"):
        y.backward(create_graph=True)
    with pytest.raises(ValueError):  # still the ValueError it was
        y.backward()
    with pytest.raises(RuntimeError, match="inputs must not be empty"):
        minidl.autograd.grad(y.sum(), [], create_graph=True)  # was ()
    with pytest.raises(ValueError, match="allow_unused"):
        minidl.autograd.grad(y.sum(), x, allow_unused=False, materialize_grads=True)
# ---- the ops without a derivative for one input -----------------------------------------------

rng = np.random.default_rng(20261207)


def _f64(a, grad=False):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=np.float64, requires_grad=grad)


def test_grad_for_the_other_input_only():
    """special.gammainc/gammaincc/zeta (no derivative in their first argument) and geqrf /
    ldl_factor (none at all) raised "the derivative ... is not implemented" in
    autograd.grad(loss, [x]) and backward(inputs=[x]) even where only another input's
    gradient was asked, because the first argument also required grad; torch's engine computes
    only the edges it needs, and refuses only when the missing derivative is asked for."""
    S = minidl.special
    a = _f64([1.5, 2.0], grad=True)
    x = _f64([0.5, 3.0], grad=True)
    for fn in (S.gammainc, S.gammaincc, S.zeta):
        (gx,) = minidl.autograd.grad(fn(a, x).sum(), [x])
        (gy,) = minidl.autograd.grad(fn(a.detach(), x).sum(), [x])
        np.testing.assert_allclose(gx.numpy(), gy.numpy())
        x.grad = None
        fn(a, x).sum().backward(inputs=[x])
        np.testing.assert_allclose(x.grad.numpy(), gy.numpy())
        with pytest.raises(NotImplementedError, match="not implemented"):
            minidl.autograd.grad(fn(a, x).sum(), [a, x])
        with pytest.raises(NotImplementedError, match="not implemented"):
            fn(a, x).sum().backward()
    A = _f64(rng.standard_normal((3, 3)), grad=True)
    y = _f64(np.ones(3), grad=True)
    loss = minidl.geqrf(A)[0].sum() + (y * 2).sum()
    (gy,) = minidl.autograd.grad(loss, [y])
    np.testing.assert_array_equal(gy.numpy(), 2.0)
    with pytest.raises(NotImplementedError, match="geqrf"):
        (minidl.geqrf(A)[0].sum() + y.sum()).backward()
