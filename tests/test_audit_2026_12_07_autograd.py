"""Audit of 2026-12-07's autograd APIs (double backward, minidl.autograd.functional, minidl.func,
anomaly mode, custom functions, pruning) against PyTorch's semantics and against misuse. Each
test failed before its fix."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F


def t64(a, grad=True):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=minidl.float64, requires_grad=grad)


# ---- .grad after backward(create_graph=True) is a tensor of its own -------------------------
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


# ---- the in-place version check in a create_graph pass --------------------------------------
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
