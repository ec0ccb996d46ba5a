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


# ---- 2. global module registration hooks -----------------------------------------------------

def _registration_script(T):
    nn = T.nn
    M = nn.modules.module
    log = []

    def on_param(m, name, p):
        log.append(("p", type(m).__name__, name, tuple(p.shape)))

    def on_buffer(m, name, b):
        log.append(("b", type(m).__name__, name, None if b is None else tuple(b.shape)))
        if name == "swap":
            return T.ones(5)

    def on_module(m, name, sub):
        log.append(("m", type(m).__name__, name, type(sub).__name__))
        if name == "repl":
            return nn.Tanh()

    hs = [M.register_module_parameter_registration_hook(on_param),
          M.register_module_buffer_registration_hook(on_buffer),
          M.register_module_module_registration_hook(on_module)]
    nn.Linear(2, 3)
    nn.BatchNorm1d(4)
    nn.Sequential(nn.ReLU(), nn.Linear(1, 1))
    m = nn.Module()
    m.register_buffer("swap", T.zeros(2))
    log.append(m.swap.tolist())
    m.register_buffer("nb", None)
    m.nb = T.zeros(3)
    m.w = nn.Parameter(T.zeros(2))
    m.register_parameter("w2", None)  # None: no call
    m.w2 = nn.Parameter(T.zeros(1))
    m.w2 = None
    m.repl = nn.ReLU()
    log.append(type(m.repl).__name__)
    m.add_module("a", None)
    m.register_module("b", nn.ReLU())
    m.b = None
    pl = nn.ParameterList([nn.Parameter(T.zeros(1))])
    pl[0] = nn.Parameter(T.zeros(2))
    pd = nn.ParameterDict({"k": nn.Parameter(T.zeros(1))})
    pd["k"] = nn.Parameter(T.zeros(3))
    ml = nn.ModuleList([nn.ReLU()])
    ml[0] = nn.Tanh()
    ml.append(nn.ReLU())
    for h in hs:
        h.remove()
    nn.Linear(1, 1)  # removed: no calls
    log.append([name for name, _ in m.named_children()])
    return log


def test_registration_hooks_calls_and_replacements():
    log = _registration_script(minidl)
    assert log[:2] == [("p", "Linear", "weight", (3, 2)), ("p", "Linear", "bias", (3,))]
    assert ("b", "BatchNorm1d", "num_batches_tracked", ()) in log
    assert [1.0] * 5 in log and "Tanh" in log  # the hooks' replacements were registered
    assert ("b", "Module", "nb", None) in log and ("m", "Module", "b", "NoneType") in log
    assert not any(e[:3] == ("p", "Module", "w2") and e[3] is None for e in log
                   if isinstance(e, tuple))
    assert log[-1] == ["repl"] and len(log) == 30


def test_registration_hooks_match_torch():
    torch = pytest.importorskip("torch")
    assert _registration_script(minidl) == _registration_script(torch)


def test_registration_hook_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        minidl.nn.modules.module.register_module_buffer_registration_hook(3)
