"""torch API gaps filled on 2026-12-07: autograd.graph.register_multi_grad_hook, the global
module registration hooks, minidl.library (custom ops), minidl.masked, segment_reduce and the
unsigned dtypes. Parity tests run the same code on torch 2.13 where it is importable."""
import pytest

import minidl


# ---- 1. autograd.graph.register_multi_grad_hook ---------------------------------------------

def _multi_hook_script(T, R):
    a = T.tensor([1., 2., 3.], requires_grad=True)
    b = T.tensor([4., 5., 6.], requires_grad=True)
    c, d = a * b, a * b
    log = []
    h = R((a, b, c, d), lambda gs: log.append([None if g is None else g.tolist() for g in gs]))
    c.sum().backward(retain_graph=True)
    c.sum().backward(inputs=(a,), retain_graph=True)
    (c + d).sum().backward(retain_graph=True)
    h.remove()
    c.sum().backward(retain_graph=True)  # removed: no call
    e, f = c * 2, a + b
    h = R((c, f, e), lambda gs: log.append([None if g is None else g.tolist() for g in gs]))
    T.autograd.grad((e * 3).sum(), (c,), retain_graph=True)
    T.autograd.grad((e * 3 + f).sum(), (a,), retain_graph=True)
    h.remove()
    anys = []
    with R((c, e), lambda g: anys.append(g.tolist()), mode="any"):  # e's grad comes first
        (e * 3 + c).sum().backward(retain_graph=True)
        c.sum().backward(retain_graph=True)
    (e * 3).sum().backward(retain_graph=True)  # the with block removed it
    return log, anys


def test_multi_grad_hook_calls():
    from minidl.autograd.graph import register_multi_grad_hook
    log, anys = _multi_hook_script(minidl, register_multi_grad_hook)
    assert log[0] == [[4., 5., 6.], [1., 2., 3.], [1., 1., 1.], None]
    assert log[1] == [[4., 5., 6.], None, [1., 1., 1.], None]
    assert log[2] == [[8., 10., 12.], [2., 4., 6.], [1., 1., 1.], [1., 1., 1.]]
    assert len(log) == 5 and log[3] == [[6., 6., 6.], None, [3., 3., 3.]]
    assert anys == [[3., 3., 3.], [1., 1., 1.]]


def test_multi_grad_hook_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.autograd.graph import register_multi_grad_hook as torch_hook

    from minidl.autograd.graph import register_multi_grad_hook
    assert _multi_hook_script(minidl, register_multi_grad_hook) == \
        _multi_hook_script(torch, torch_hook)


def test_multi_grad_hook_refusals_and_leaf_grad():
    from minidl.autograd.graph import register_multi_grad_hook
    a = minidl.tensor([1., 2.], requires_grad=True)
    with pytest.raises(ValueError, match="Expects mode to be one of"):
        register_multi_grad_hook((a,), print, mode="every")
    with pytest.raises(RuntimeError, match="does not require grad"):
        register_multi_grad_hook((a, minidl.tensor([1.])), print)
    seen = []
    register_multi_grad_hook((a, minidl.tensor([1.])), seen.append, mode="any")
    (a * a).sum().backward()
    assert seen[0].tolist() == [2., 4.]
    # autograd.grad with a leaf among the tensors (torch 2.13 refuses this case; minidl answers)
    b = minidl.tensor([3., 4.], requires_grad=True)
    got = []
    register_multi_grad_hook((a, b), lambda gs: got.append([g is None for g in gs]))
    minidl.autograd.grad((a * b).sum(), (b,))
    assert got == [[True, False]]
    # the gradients reaching the leaves are not changed by the hook
    assert a.grad.tolist() == [2., 4.] and b.grad is None
