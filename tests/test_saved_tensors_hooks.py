"""autograd.graph: saved_tensors_hooks, save_on_cpu, disable_saved_tensors_hooks, and the
graph-node API (Node, next_functions, grad_fn.register_hook / register_prehook)."""
import contextlib

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.autograd.graph import (Node, disable_saved_tensors_hooks, save_on_cpu,
                                   saved_tensors_hooks)

RNG = np.random.default_rng(7)
X = RNG.standard_normal((5, 4))
W = RNG.standard_normal((3, 4))
B = RNG.standard_normal(3)
T = RNG.standard_normal((5, 3))
IMG = RNG.standard_normal((2, 1, 6, 6))
K = RNG.standard_normal((2, 1, 3, 3))
FC = RNG.standard_normal((3, 18))
LABELS = np.array([0, 2])


def _t(a, grad=True):
    return minidl.tensor(a, dtype=minidl.float64, requires_grad=grad)


def _mlp(lib, F_, x, w, b, t):
    return F_.mse_loss(F_.relu(F_.linear(x, w, b)), t)


def _conv(lib, F_, img, k, fc, labels):
    h = F_.max_pool2d(F_.relu(F_.conv2d(img, k, padding=1)), 2)
    return F_.cross_entropy(F_.linear(h.reshape(2, -1), fc), labels)


def _grads(graph, make_ctx, backward_twice=False):
    """Gradients of ``graph`` (built inside ``make_ctx()``) w.r.t. its float inputs."""
    if graph == "mlp":
        args = [_t(X), _t(W), _t(B), _t(T, grad=False)]
        fn = _mlp
    else:
        args = [_t(IMG), _t(K), _t(FC), minidl.tensor(LABELS)]
        fn = _conv
    with make_ctx():
        loss = fn(minidl, F, *args)
    loss.backward(retain_graph=backward_twice)
    if backward_twice:
        loss.backward()
    return [a.grad.numpy() for a in args if a.requires_grad]


class _Counting:
    def __init__(self, pack=lambda t: t, unpack=lambda p: p):
        self.packs = self.unpacks = 0
        self._pack, self._unpack = pack, unpack

    def hooks(self):
        def pack(t):
            assert isinstance(t, minidl.Tensor)
            self.packs += 1
            return self._pack(t)

        def unpack(p):
            self.unpacks += 1
            return self._unpack(p)
        return saved_tensors_hooks(pack, unpack)


def _to_numpy(t):
    return t.numpy().copy()


def _from_numpy(a):
    return minidl.tensor(a, dtype=a.dtype)


def _load(path):
    a = np.load(path)
    return minidl.tensor(a, dtype=a.dtype)


@pytest.mark.parametrize("graph", ["mlp", "conv"])
def test_hooks_that_copy_to_numpy_give_the_same_gradients(graph):
    plain = _grads(graph, contextlib.nullcontext)
    counting = _Counting(_to_numpy, _from_numpy)
    hooked = _grads(graph, counting.hooks)
    assert counting.packs > 0
    assert counting.unpacks == counting.packs  # one unpack per saved value and pass
    for a, b in zip(plain, hooked):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_retained_graph_unpacks_once_per_pass():
    counting = _Counting(_to_numpy, _from_numpy)
    plain = _grads("mlp", contextlib.nullcontext)
    twice = _grads("mlp", counting.hooks, backward_twice=True)
    assert counting.unpacks == 2 * counting.packs
    for a, b in zip(plain, twice):
        np.testing.assert_allclose(b, 2 * a, rtol=1e-12)


@pytest.mark.parametrize("x_grad", [False, True])
def test_linear_relu_mse_with_hooks_against_torch(x_grad):
    # What is saved differs (minidl's Linear saves input and weight whether or not both need a
    # gradient, torch's addmm only what the gradients asked for need; minidl's mse_loss is a
    # difference and its square, torch's one op saving input and target), so the counts agree
    # only where the sets happen to: x not requiring grad, 4 each. In both, every packed value
    # is unpacked once, and the gradients under copying hooks are torch's.
    torch = pytest.importorskip("torch")
    from torch.autograd.graph import saved_tensors_hooks as torch_hooks

    counts, grads = {}, {}
    for lib, F_, hooks_cls, make, copy_back in (
            ("minidl", F, saved_tensors_hooks, lambda a, g=True: _t(a, g), _from_numpy),
            ("torch", torch.nn.functional, torch_hooks,
             lambda a, g=True: torch.tensor(a, requires_grad=g), torch.from_numpy)):
        n = {"pack": 0, "unpack": 0}

        def pack(t, n=n):
            n["pack"] += 1
            return t.detach().numpy().copy()

        def unpack(a, n=n, copy_back=copy_back):
            n["unpack"] += 1
            return copy_back(a)
        args = [make(X, x_grad), make(W), make(B), make(T, False)]
        with hooks_cls(pack, unpack):
            loss = _mlp(lib, F_, *args)
        loss.backward()
        counts[lib] = n
        grads[lib] = [a.grad.numpy() for a in args[:3] if a.requires_grad]
    for name in counts:
        assert counts[name]["pack"] == counts[name]["unpack"] > 0
    if not x_grad:
        assert counts["minidl"] == counts["torch"] == {"pack": 4, "unpack": 4}
    for a, b in zip(grads["minidl"], grads["torch"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv_net_with_hooks_against_torch():
    # minidl saves 7 values here, torch 11: max_pool2d keeps its argmax positions as an
    # attribute of its own (outside the hooks), torch saves input and indices; relu's output
    # and the pool's input are one array in minidl. Gradients under copying hooks agree.
    torch = pytest.importorskip("torch")
    from torch.autograd.graph import saved_tensors_hooks as torch_hooks

    grads, counts = {}, {}
    for lib, F_, hooks_cls, make, labels, copy_back in (
            ("minidl", F, saved_tensors_hooks, _t, minidl.tensor(LABELS), _from_numpy),
            ("torch", torch.nn.functional, torch_hooks,
             lambda a: torch.tensor(a, requires_grad=True), torch.tensor(LABELS),
             torch.from_numpy)):
        n = {"pack": 0, "unpack": 0}

        def pack(t, n=n):
            n["pack"] += 1
            return t.detach().numpy().copy()

        def unpack(a, n=n, copy_back=copy_back):
            n["unpack"] += 1
            return copy_back(a)
        args = [make(IMG), make(K), make(FC)]
        with hooks_cls(pack, unpack):
            loss = _conv(lib, F_, *args, labels)
        loss.backward()
        grads[lib], counts[lib] = [a.grad.numpy() for a in args], n
    assert counts["minidl"] == {"pack": 7, "unpack": 7}
    assert counts["torch"]["pack"] == counts["torch"]["unpack"]
    for a, b in zip(grads["minidl"], grads["torch"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_pack_sees_the_output_tensor_it_saves():
    seen = []
    x = _t(X)
    with saved_tensors_hooks(lambda t: seen.append(t) or t, lambda t: t):
        y = x.exp()  # exp saves its output, as torch's does
    assert len(seen) == 1 and seen[0] is y


def test_pack_to_a_key_in_a_store():
    store = {}

    def pack(t):
        key = f"k{len(store)}"
        store[key] = t.numpy().copy()
        return key

    def unpack(key):
        return _from_numpy(store.pop(key))
    plain = _grads("conv", contextlib.nullcontext)
    hooked = _grads("conv", lambda: saved_tensors_hooks(pack, unpack))
    assert store == {}
    for a, b in zip(plain, hooked):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_pack_to_disk_for_activation_memory(tmp_path):
    names = []

    def pack(t):
        path = tmp_path / f"saved{len(names)}.npy"
        np.save(path, t.numpy())
        names.append(path)
        return path

    for graph in ("mlp", "conv"):
        names.clear()
        plain = _grads(graph, contextlib.nullcontext)
        hooked = _grads(graph, lambda: saved_tensors_hooks(pack, _load))
        assert names and all(p.exists() for p in names)
        for a, b in zip(plain, hooked):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_a_packed_op_holds_no_saved_array():
    x = _t(X)
    with saved_tensors_hooks(lambda t: "token", lambda p: None):
        y = x.sin()
    assert y.grad_fn.saved == () and y.grad_fn.packed[0][0] == "token"


def test_unpack_returning_a_wrong_shape_raises():
    x = _t(X)
    with saved_tensors_hooks(lambda t: t, lambda t: minidl.zeros(7, dtype=minidl.float64)):
        y = x.sin()
    with pytest.raises(RuntimeError, match=r"SinBackward saved a tensor of shape \(5, 4\), but "
                                           r"unpack_hook returned one of shape \(7,\)"):
        y.sum().backward()


def test_unpack_returning_a_wrong_dtype_or_no_tensor_raises():
    x = _t(X)
    with saved_tensors_hooks(lambda t: t, lambda t: t.float()):
        y = x.sin()
    with pytest.raises(RuntimeError, match="dtype float64, but unpack_hook returned one of "
                                           "dtype float32"):
        y.sum().backward()
    with saved_tensors_hooks(lambda t: t, lambda t: 5):
        y = x.sin()
    with pytest.raises(TypeError, match="unpack_hook expected to be a Tensor but got result of "
                                        "type int"):
        y.sum().backward()


def test_no_pack_without_a_recorded_graph():
    calls = []
    x = _t(X)
    with saved_tensors_hooks(lambda t: calls.append(1) or t, lambda t: t):
        with minidl.no_grad():
            x.exp()
        _t(X, grad=False).exp()
    assert calls == []


def test_version_counter_check_still_fires_with_identity_hooks():
    x = _t(X)
    with saved_tensors_hooks(lambda t: t, lambda t: t):
        a = x * 1.0
        b = a.sin()  # saves a
    with minidl.no_grad():
        a.add_(1.0)
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        b.sum().backward()


def test_hooks_that_copy_keep_the_value_of_the_forward_pass():
    # the copy is the value sin saw: its gradient is right even though a changed afterwards
    x = _t(X)
    with saved_tensors_hooks(_to_numpy, _from_numpy):
        a = x * 1.0
        b = a.sin()
    with minidl.no_grad():
        a.add_(1.0)
    b.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.cos(X), rtol=1e-12)


def test_nesting_applies_the_innermost_pair_only():
    calls = []
    x = _t(X)
    with saved_tensors_hooks(lambda t: calls.append("outer") or t, lambda t: t):
        with saved_tensors_hooks(lambda t: calls.append("inner") or t, lambda t: t):
            y = (x * x).sum()
        z = x.sin()
    assert calls == ["inner", "inner", "outer"]
    (y + z.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * X + np.cos(X), rtol=1e-12)


def test_nesting_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.autograd.graph import saved_tensors_hooks as torch_hooks

    got = {}
    for name, hooks_cls, x in (("minidl", saved_tensors_hooks, _t(X)),
                               ("torch", torch_hooks, torch.tensor(X, requires_grad=True))):
        calls = []
        with hooks_cls(lambda t: calls.append("o") or t, lambda t: t):
            with hooks_cls(lambda t: calls.append("i") or t, lambda t: t):
                x * x
            x.sin()
        got[name] = calls
    assert got["minidl"] == got["torch"]


def test_save_on_cpu_on_cpu_tensors_gives_the_plain_gradients():
    for graph in ("mlp", "conv"):
        plain = _grads(graph, contextlib.nullcontext)
        hooked = _grads(graph, save_on_cpu)
        for a, b in zip(plain, hooked):
            np.testing.assert_array_equal(b, a)
    with pytest.raises(RuntimeError, match="device_type='xpu'"):
        save_on_cpu(device_type="xpu")


@pytest.mark.skipif(not minidl.cuda_available(), reason="needs CuPy and a CUDA GPU")
def test_save_on_cpu_moves_cuda_values_to_the_host():
    x = minidl.tensor(X, dtype=minidl.float64, requires_grad=True, device="cuda")
    with save_on_cpu():
        y = x.sin()
    (device, held), = [e[0] for e in y.grad_fn.packed]
    assert device.startswith("cuda") and held.device == "cpu"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.cos(X), rtol=1e-12)


def test_disable_saved_tensors_hooks():
    with disable_saved_tensors_hooks("no hooks here"):
        with pytest.raises(RuntimeError, match="no hooks here"):
            with saved_tensors_hooks(lambda t: t, lambda t: t):
                pass
        _t(X).sin().sum().backward()  # no hooks active: ops save as usual
    x = _t(X)
    with saved_tensors_hooks(lambda t: t, lambda t: t):
        with disable_saved_tensors_hooks("not inside"):
            with pytest.raises(RuntimeError, match="not inside"):
                x.sin()
        x.sin()  # allowed again once the disable exited


def test_hooks_must_be_callable():
    with pytest.raises(TypeError, match="pack_hook must be callable"):
        saved_tensors_hooks(3, lambda t: t)


def test_custom_function_saved_tensors_go_through_the_hooks():
    class Cube(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x * x * g

    counting = _Counting(_to_numpy, _from_numpy)
    x = _t(X)
    with counting.hooks():
        y = Cube.apply(x)
    assert counting.packs == 1 and counting.unpacks == 0
    y.sum().backward()
    assert counting.unpacks == 1
    np.testing.assert_allclose(x.grad.numpy(), 3 * X ** 2, rtol=1e-12)


def test_double_backward_through_hooked_ops():
    x = _t(X)
    with saved_tensors_hooks(_to_numpy, _from_numpy):
        y = (x.sin() * x).sum()
    (g,) = minidl.autograd.grad(y, x, create_graph=True)
    (h,) = minidl.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 2 * np.cos(X) - X * np.sin(X), rtol=1e-10)


# ---- graph nodes ---------------------------------------------------------------------------------
def test_grad_fn_is_a_node_with_next_functions_and_name():
    x = _t(X)
    c = _t(X, grad=False)
    y = (x * c).exp()
    assert isinstance(y.grad_fn, Node) and y.grad_fn.name() == "ExpBackward"
    (mul, zero), = y.grad_fn.next_functions
    assert zero == 0 and mul is y.grad_fn.inputs[0]._ctx and mul.name() == "MulBackward"
    (acc, _), (none, _) = mul.next_functions
    assert isinstance(acc, Node) and acc.variable is x and none is None
    assert y.grad_fn.next_functions[0][0].next_functions[0][0] is acc  # one per leaf
    assert repr(y.grad_fn).startswith("<ExpBackward object at ")
    y.grad_fn.metadata["tag"] = 1
    assert y.grad_fn.metadata == {"tag": 1}


def test_node_hooks_see_and_replace_gradients():
    x = _t(X)
    y = x * 3.0
    seen = []
    y.grad_fn.register_prehook(lambda go: (go[0] * 10,))
    handle = y.grad_fn.register_hook(lambda gi, go: seen.append((gi, go)) or (gi[0] + 1, None))
    y.sum().backward()
    (gi, go), = seen
    np.testing.assert_allclose(go[0].numpy(), 10 * np.ones_like(X))
    np.testing.assert_allclose(gi[0].numpy(), 30 * np.ones_like(X))
    np.testing.assert_allclose(x.grad.numpy(), 31 * np.ones_like(X))
    handle.remove()


def test_node_hooks_match_torch():
    torch = pytest.importorskip("torch")
    got = {}
    for name, x in (("minidl", _t(X)), ("torch", torch.tensor(X, requires_grad=True))):
        y = (x * 2.0).tanh()
        y.grad_fn.register_prehook(lambda go: (go[0] * 3,))
        y.grad_fn.register_hook(lambda gi, go: (gi[0] - 1,))
        y.sum().backward()
        got[name] = x.grad.numpy()
    np.testing.assert_allclose(got["minidl"], got["torch"], rtol=1e-12)


def test_node_hook_returning_the_wrong_count_raises():
    x = _t(X)
    y = x * 3.0
    y.grad_fn.register_hook(lambda gi, go: (gi[0], gi[0], gi[0]))
    with pytest.raises(RuntimeError, match="incorrect number of values"):
        y.sum().backward()


def test_node_hooks_with_create_graph():
    x = _t(X)
    y = x.sin()
    y.grad_fn.register_hook(lambda gi, go: (gi[0] * 2,))
    (g,) = minidl.autograd.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 2 * np.cos(X), rtol=1e-12)
    assert g.requires_grad


def test_node_hook_sees_gradients_in_the_inputs_shapes():
    x = _t(X)
    b = _t(B[:1])  # broadcast over (5, 4)
    y = x + b
    shapes = []
    y.grad_fn.register_hook(lambda gi, go: shapes.append([tuple(g.shape) for g in gi]))
    y.sum().backward()
    assert shapes == [[(5, 4), (1,)]]
    np.testing.assert_allclose(b.grad.numpy(), [20.0])


# ---- a pack hook's own ops are not packed again; unpack under no_grad --------------------------------
def _count_hooks(lib, pack_op, unpack_op):
    calls = {"pack": 0, "unpack": 0}

    def pack(t):
        calls["pack"] += 1
        return pack_op(t)

    def unpack(t):
        calls["unpack"] += 1
        out = unpack_op(t)
        calls["unpack_grad"] = out.requires_grad
        return out

    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with lib.autograd.graph.saved_tensors_hooks(pack, unpack):
        y = (x * x).sum()
        y.backward()
    return x.grad.tolist(), calls


def test_saved_tensors_pack_hook_ops_are_not_packed():
    grad, calls = _count_hooks(minidl, lambda t: t * 2, lambda t: t / 2)  # was a RecursionError
    assert grad == [2.0, 4.0, 6.0]
    assert calls == {"pack": 2, "unpack": 2, "unpack_grad": False}


def test_saved_tensors_hooks_parity():
    torch = pytest.importorskip("torch")
    for pack, unpack in ((lambda t: t * 2, lambda t: t / 2), (lambda t: t.sin(), lambda t: t.asin())):
        got = _count_hooks(minidl, pack, unpack)
        want = _count_hooks(torch, pack, unpack)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        assert got[1] == want[1]


# ---- autograd.graph.register_multi_grad_hook ---------------------------------------------------------
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
