"""minidl.fx: symbolic tracing, Graph/Node editing, GraphModule code, Interpreter, Transformer,
replace_pattern and ShapeProp; the same models traced by torch.fx give the same graphs."""
import copy
import math
import operator
import pickle

import numpy as np
import pytest

import minidl
import minidl.fx as fx
import minidl.nn as mnn
import minidl.nn.functional as MF
from minidl import cat as imported_cat
from math import sqrt as imported_sqrt
from minidl.fx.passes.shape_prop import ShapeProp


def my_scale(x, k):  # recorded as one node: wrapped below
    return x * k


fx.wrap("my_scale")
fx.wrap("len")


def uses_len(x):
    return x + len(x)


# ---- models written once for both frameworks -------------------------------------------------------
def make_models(lib):
    nn, F = lib.nn, lib.nn.functional

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.act = nn.ReLU()
            self.fc2 = nn.Linear(16, 8)
            self.fc3 = nn.Linear(8, 3)

        def forward(self, x):
            x = self.act(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.view(x.size(0), -1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + x)

    class ResNetTiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.layer1 = nn.Sequential(Block(4), Block(4))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            x = self.layer1(lib.relu(self.stem(x)))
            return self.fc(lib.flatten(self.pool(x), 1))

    class ShapeModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 4)

        def forward(self, x, y):
            n = x.shape[0]
            a = x.view(n, -1)
            b = lib.flatten(y, 1)
            h = lib.cat([a, b], 1)
            h = self.fc(h) * 2.0 - 1
            return h.relu().flatten(), x.size(1)

    class Encoder(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.norm1 = nn.LayerNorm(d)
            self.ff1 = nn.Linear(d, 16)
            self.ff2 = nn.Linear(16, d)
            self.norm2 = nn.LayerNorm(d)
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
            k = k.view(b, t, self.heads, d // self.heads).transpose(1, 2)
            v = v.view(b, t, self.heads, d // self.heads).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
            att = F.softmax(att, dim=-1)
            h = (att @ v).transpose(1, 2).reshape(b, t, d)
            x = self.norm1(x + self.drop(self.proj(h)))
            return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))

    class AttnBlock(nn.Module):  # a leaf MultiheadAttention: its tuple result is indexed
        def __init__(self, d=8):
            super().__init__()
            self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
            self.norm = nn.LayerNorm(d)

        def forward(self, x):
            h = self.attn(x, x, x, need_weights=False)[0]
            return self.norm(x + h).mean(dim=1)

    return {"attn": (AttnBlock, [(2, 5, 8)]), "mlp": (MLP, [(4, 6)]), "lenet": (LeNet5, [(2, 1, 28, 28)]),
            "resnet": (ResNetTiny, [(2, 3, 8, 8)]), "shape": (ShapeModel, [(2, 3, 2), (2, 3, 2)]),
            "encoder": (Encoder, [(2, 5, 8)])}


MODELS = list(make_models(minidl))


def _pair(name, seed=0):
    """The same model in both frameworks, same weights, eval mode; and inputs as numpy."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    cls_t, shapes = make_models(torch)[name]
    tm = cls_t().eval()
    mm = make_models(minidl)[name][0]().eval()
    mm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return torch, tm, mm, xs


def _name(target):
    return target if isinstance(target, str) else target.__name__


def _ops(graph):
    return [(n.op, _name(n.target), n.name) for n in graph.nodes]


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _np(v):
    return np.asarray(v.detach().numpy() if hasattr(v, "detach") else v.numpy() if hasattr(v, "numpy") else v)


@pytest.mark.parametrize("name", MODELS)
def test_trace_matches_torch_fx_and_the_model(name):
    torch, tm, mm, xs = _pair(name)
    tgm = torch.fx.symbolic_trace(tm)
    mgm = fx.symbolic_trace(mm)
    assert _ops(mgm.graph) == _ops(tgm.graph)
    mgm.graph.lint()
    mx = [minidl.tensor(x) for x in xs]
    for got, want, ref in zip(_flat(mgm(*mx)), _flat(mm(*mx)), _flat(tm(*[torch.tensor(x) for x in xs]))):
        np.testing.assert_allclose(_np(got), _np(want), rtol=0, atol=0)
        np.testing.assert_allclose(_np(got), _np(ref), rtol=1e-4, atol=1e-5)
    assert set(mgm.state_dict()) == set(mm.state_dict())  # everything the model holds is used
    assert list(mgm.state_dict()) == list(tgm.state_dict())
    for k, v in mgm.state_dict().items():
        np.testing.assert_array_equal(_np(v), _np(mm.state_dict()[k]))
    assert {k for k, _ in mgm.named_parameters()} == {k for k, _ in mm.named_parameters()}


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow_through_the_graph_module(name):
    _, shapes = make_models(minidl)[name]
    minidl.manual_seed(3)  # a draw where the shape model's ReLU outputs are not all dead
    m = make_models(minidl)[name][0]().eval()
    gm = fx.symbolic_trace(m)
    xs = [minidl.tensor(np.random.default_rng(1).standard_normal(s).astype(np.float32), requires_grad=True)
          for s in shapes]

    def grads(f):
        for p in m.parameters():
            p.grad = None
        for x in xs:
            x.grad = None
        out = _flat(f(*xs))[0]
        (out * out).sum().backward()
        return [p.grad.numpy().copy() for p in m.parameters()] + [xs[0].grad.numpy().copy()]

    got, want = grads(gm), grads(m)
    assert len(got) == len(want) > 1
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    assert all(np.any(g != 0) for g in got[:2] + got[-1:])


def _relu_to_gelu(gm, lib):
    F = lib.nn.functional
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in (F.relu, lib.relu):
            node.target = F.gelu
            node.kwargs = {}
    gm.recompile()
    return gm


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet"])
def test_relu_to_gelu_pass_in_both(name):
    torch, tm, mm, xs = _pair(name)
    tgm = _relu_to_gelu(torch.fx.symbolic_trace(tm), torch)
    mgm = _relu_to_gelu(fx.symbolic_trace(mm), minidl)
    assert "gelu" in mgm.code and "relu(" not in mgm.code.replace("self.act(", "")
    assert _ops(mgm.graph) == _ops(tgm.graph)
    got = mgm(*[minidl.tensor(x) for x in xs]).numpy()
    want = tgm(*[torch.tensor(x) for x in xs]).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, mm(*[minidl.tensor(x) for x in xs]).numpy())


def test_replace_pattern_as_torch():
    torch = pytest.importorskip("torch")

    def build(lib):
        class M(lib.nn.Module):
            def forward(self, x, w1, w2):
                a = lib.relu(lib.cat([x, w1]) + 1)
                b = lib.relu(lib.cat([w1, w2]) + 1)
                return a * b

        def pattern(x, y):
            return lib.relu(x + y)

        def replacement(x, y):
            return lib.sigmoid(x - y)

        return M(), pattern, replacement

    results = []
    for lib, mod in ((torch, torch.fx), (minidl, fx)):
        m, pattern, replacement = build(lib)
        gm = mod.symbolic_trace(m)
        matches = mod.replace_pattern(gm, pattern, replacement)
        assert len(matches) == 2
        gm.graph.lint()
        rng = np.random.default_rng(0)
        xs = [lib.tensor(rng.standard_normal(3).astype(np.float32)) for _ in range(3)]
        results.append((_ops(gm.graph), _np(gm(*xs))))
    assert [op[:2] for op in results[1][0]] == [op[:2] for op in results[0][0]]
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_shape_prop_gives_torch_shapes(name):
    torch, tm, mm, xs = _pair(name)
    from torch.fx.passes.shape_prop import ShapeProp as TorchShapeProp

    tgm, mgm = torch.fx.symbolic_trace(tm), fx.symbolic_trace(mm)
    TorchShapeProp(tgm).propagate(*[torch.tensor(x) for x in xs])
    ShapeProp(mgm).propagate(*[minidl.tensor(x) for x in xs])
    checked = 0
    for tn, mn in zip(tgm.graph.nodes, mgm.graph.nodes):
        tmeta, mmeta = tn.meta.get("tensor_meta"), mn.meta.get("tensor_meta")
        assert (tmeta is None) == (mmeta is None), mn.name
        if hasattr(tmeta, "shape"):
            assert tuple(mmeta.shape) == tuple(tmeta.shape), mn.name
            assert str(mmeta.dtype).replace("minidl.", "") in str(tmeta.dtype)
            checked += 1
    assert checked >= 3


# ---- tracing details ---------------------------------------------------------------------------------
def test_control_flow_on_a_proxy_raises_trace_error():
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    before = minidl.relu
    with pytest.raises(fx.TraceError, match="control flow"):
        fx.symbolic_trace(f)
    assert minidl.relu is before and MF.relu.__name__ == "relu"  # restored after the error
    assert mnn.Module.__call__.__name__ == "__call__"


def test_concrete_args_specialise_control_flow():
    def f(x, flag):
        if flag:
            return minidl.relu(x)
        return x * 2

    gm = fx.symbolic_trace(f, concrete_args={"flag": True})
    # torch's: a placeholder flag_1 and a check of its value (eq, _assert) before the relu
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "placeholder", "call_function",
                                              "call_function", "call_function", "output"]
    x = minidl.tensor([-1.0, 2.0])
    np.testing.assert_array_equal(gm(x, True).numpy(), [0.0, 2.0])
    with pytest.raises(fx.TraceError, match="nope"):
        fx.symbolic_trace(f, concrete_args={"nope": 1})


def test_function_root_wrap_and_tensor_on_the_left():
    w = minidl.tensor([1.0, 2.0, 3.0])

    def f(x):
        return my_scale(w + x, 3) + minidl.tensor(1.0).item()

    gm = fx.symbolic_trace(f)
    ops = [(n.op, _name(n.target)) for n in gm.graph.nodes]
    assert ops == [("placeholder", "x"), ("get_attr", "_tensor_constant0"), ("call_function", "add"),
                   ("call_function", "my_scale"), ("call_function", "add"), ("output", "output")]
    assert type(gm).__name__ == "f"
    x = minidl.tensor([1.0, 1.0, 1.0])
    np.testing.assert_allclose(gm(x).numpy(), f(x).numpy())
    assert my_scale(2, 3) == 6  # restored


def test_graph_editing_api():
    def f(x, y):
        a = x + y
        b = minidl.relu(a)
        a * 2  # dead: eliminate_dead_code erases it
        return b

    gm = fx.symbolic_trace(f)
    g = gm.graph
    nodes = {n.name: n for n in g.nodes}
    assert set(nodes["add"].users) == {nodes["relu"], nodes["mul"]}
    with pytest.raises(RuntimeError, match="still had 2 users"):
        g.erase_node(nodes["add"])
    assert g.eliminate_dead_code() is True
    assert "mul" not in [n.name for n in g.nodes]
    with g.inserting_before(nodes["relu"]):
        neg = g.call_function(operator.neg, (nodes["add"],))
    nodes["add"].replace_all_uses_with(neg, delete_user_cb=lambda u: u is not neg)
    assert nodes["relu"].args == (neg,)
    with g.inserting_after(nodes["relu"]):
        sig = g.call_function(minidl.sigmoid, (nodes["relu"],))
    g.output_node().args = (sig,)
    g.lint()
    gm.recompile()
    assert "minidl.sigmoid(relu)" in gm.code and "add = x + y" in gm.code
    x, y = minidl.tensor([1.0, -3.0]), minidl.tensor([0.5, 0.5])
    np.testing.assert_allclose(gm(x, y).numpy(), minidl.sigmoid(minidl.relu(-(x + y))).numpy())
    bad = fx.Graph()
    p = bad.placeholder("x")
    other = fx.Graph()
    with pytest.raises(ValueError, match="does not belong"):
        other.call_function(operator.neg, (p,))
    assert "placeholder" in str(g) and "return" in str(g)


def test_print_tabular_and_readable(capsys):
    gm = fx.symbolic_trace(make_models(minidl)["mlp"][0]())
    gm.graph.print_tabular()
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["opcode", "name", "target", "args", "kwargs"]
    assert "call_module" in table and "fc1" in table
    text = gm.print_readable(print_output=False)
    assert text.startswith("class MLP(") and "def forward(self, x):" in text


def test_graph_module_pickle_deepcopy_and_dict_root():
    torch_free_model = make_models(minidl)["resnet"][0]().eval()
    gm = fx.symbolic_trace(torch_free_model)
    x = minidl.randn(1, 3, 8, 8)
    want = gm(x).numpy()
    assert 'getattr(self.layer1, "0").conv1' in gm.code
    for clone in (pickle.loads(pickle.dumps(gm)), copy.deepcopy(gm)):
        np.testing.assert_allclose(clone(x).numpy(), want, rtol=1e-6)
        assert clone.code == gm.code
        assert clone.fc.weight is not gm.fc.weight
    assert fx.symbolic_trace(torch_free_model).fc.weight is torch_free_model.fc.weight
    subs = {n.target: gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    gm2 = fx.GraphModule(subs, copy.deepcopy(gm.graph), "Rebuilt")
    np.testing.assert_allclose(gm2(x).numpy(), want, rtol=1e-6)
    with pytest.raises(RuntimeError, match="not provided"):
        fx.GraphModule({}, gm.graph)


def test_interpreter_and_transformer():
    gm = fx.symbolic_trace(make_models(minidl)["mlp"][0]())
    x = minidl.randn(3, 6)

    class Count(fx.Interpreter):
        seen = []

        def run_node(self, n):
            self.seen.append(n.op)
            return super().run_node(n)

    np.testing.assert_allclose(Count(gm).run(x).numpy(), gm(x).numpy())
    assert Count.seen == [n.op for n in gm.graph.nodes]

    class NegRelu(fx.Interpreter):
        def call_function(self, target, args, kwargs):
            if target is MF.relu:
                return -super().call_function(target, args, kwargs)
            return super().call_function(target, args, kwargs)

    assert not np.allclose(NegRelu(gm).run(x).numpy(), gm(x).numpy())

    class ToSigmoid(fx.Transformer):
        def call_function(self, target, args, kwargs):
            if target is MF.relu:
                target = minidl.sigmoid
            return super().call_function(target, args, kwargs)

    new = ToSigmoid(gm).transform()
    assert "minidl.sigmoid" in new.code
    ref = gm.fc3(minidl.sigmoid(gm.fc2(gm.act(gm.fc1(x)))))
    np.testing.assert_allclose(new(x).numpy(), ref.numpy(), rtol=1e-6)


def test_custom_tracer_leaves_and_wrap_of_a_builtin():
    torch = pytest.importorskip("torch")

    def build(lib, fxmod):
        class LeafBlocks(fxmod.Tracer):
            def is_leaf_module(self, m, qualname):
                return type(m).__name__ == "Block" or super().is_leaf_module(m, qualname)

        m = make_models(lib)["resnet"][0]().eval()
        return fxmod.GraphModule(m, LeafBlocks().trace(m))

    tgm, mgm = build(torch, torch.fx), build(minidl, fx)
    assert _ops(mgm.graph) == _ops(tgm.graph)
    assert [n.target for n in mgm.graph.nodes if n.op == "call_module"][1:3] == ["layer1.0", "layer1.1"]
    gm = fx.symbolic_trace(uses_len)
    assert [(n.op, _name(n.target)) for n in gm.graph.nodes][1] == ("call_function", "len")
    assert "len" not in globals()  # the builtin's patch is removed again
    np.testing.assert_allclose(gm(minidl.ones(3, 2)).numpy(), np.full((3, 2), 4.0))


def test_tracing_errors():
    class NotInstalled(mnn.Module):
        def forward(self, x):
            return mnn.ReLU()(x)

    with pytest.raises(NameError, match="not installed as a submodule"):
        fx.symbolic_trace(NotInstalled())

    elsewhere = {}  # a module that did not call fx.wrap("len")
    exec("def uses_len_directly(x):\n    return x + len(x)\n", elsewhere)
    with pytest.raises(RuntimeError, match="'len' is not supported"):
        fx.symbolic_trace(elsewhere["uses_len_directly"])

    def iterate(x):
        return [y for y in x]

    with pytest.raises(fx.TraceError, match="cannot be iterated"):
        fx.symbolic_trace(iterate)
    assert minidl.Tensor.__add__.__name__ == "__add__"  # Tensor's operators restored
    np.testing.assert_array_equal((minidl.ones(2) + minidl.ones(2)).numpy(), [2.0, 2.0])


def test_unused_submodules_are_deleted():
    gm = fx.symbolic_trace(make_models(minidl)["mlp"][0]())
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == "act":
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    gm.delete_all_unused_submodules()
    assert [n for n, _ in gm.named_children()] == ["fc1", "fc2", "fc3"]
    assert gm.add_submodule("extra.inner", mnn.ReLU()) and gm.delete_submodule("extra.inner")
    assert not gm.delete_submodule("nothing.here")


def test_functions_imported_by_name_are_recorded_too():
    def f(x):
        return imported_cat([x, x], 0) / imported_sqrt(x.shape[0])

    gm = fx.symbolic_trace(f)
    assert [_name(n.target) for n in gm.graph.nodes if n.op == "call_function"] == \
        ["cat", "getattr", "getitem", "sqrt", "truediv"]
    assert imported_cat is minidl.cat and imported_sqrt is math.sqrt  # restored
    assert "math.sqrt(getitem)" in gm.code
    x = minidl.ones(4, 2)
    np.testing.assert_allclose(gm(x).numpy(), np.full((8, 2), 0.5))


def test_tensor_method_with_a_proxy_argument():
    w = minidl.tensor([[1.0, 2.0], [3.0, 4.0]])

    def f(x):
        return w.matmul(x).add(x)

    gm = fx.symbolic_trace(f)
    assert [(n.op, _name(n.target)) for n in gm.graph.nodes] == [
        ("placeholder", "x"), ("get_attr", "_tensor_constant0"), ("call_method", "matmul"),
        ("call_method", "add"), ("output", "output")]
    x = minidl.tensor([[1.0], [1.0]])
    np.testing.assert_allclose(gm(x).numpy(), [[4.0], [8.0]])
    assert not hasattr(minidl.Tensor.matmul, "__wrapped__")  # restored


def test_retrace_a_graph_module_and_placeholder_defaults():
    m = make_models(minidl)["lenet"][0]().eval()
    gm = fx.symbolic_trace(m)
    again = fx.symbolic_trace(gm)
    assert _ops(again.graph) == _ops(gm.graph)
    x = minidl.randn(1, 1, 28, 28)
    np.testing.assert_allclose(again(x).numpy(), m(x).numpy())

    def f(x, scale=None):
        return x * 2

    g = fx.symbolic_trace(f)
    assert "def forward(self, x, scale = None):" in g.code
    assert fx.Transformer(g).transform().code == g.code


def test_generated_code_reads_as_torch_fx():
    torch, tm, mm, xs = _pair("shape")
    want = torch.fx.symbolic_trace(tm).code.replace("torch.", "minidl.").strip()
    assert fx.symbolic_trace(mm).code.strip() == want


def test_a_failed_trace_leaves_the_model_as_it_was():
    class Bad(mnn.Module):
        def __init__(self):
            super().__init__()
            self.fc = mnn.Linear(2, 2)

        def forward(self, x):
            y = self.fc(x) + minidl.ones(2)  # a tensor constant, kept on the root
            if y.sum() > 0:
                return y
            return -y

    m = Bad()
    before = dict(m.__dict__)
    with pytest.raises(fx.TraceError):
        fx.symbolic_trace(m)
    assert m.__dict__.keys() == before.keys() and not hasattr(m, "_tensor_constant0")
    assert m(minidl.ones(1, 2)).shape == (1, 2)


def test_sequential_input_keeps_its_name():
    torch = pytest.importorskip("torch")
    want = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())).code
    gm = fx.symbolic_trace(mnn.Sequential(mnn.Linear(2, 3), mnn.ReLU()))
    assert gm.code.strip() == want.strip()
    x = minidl.ones(1, 2)
    np.testing.assert_allclose(gm(input=x).numpy(), gm(x).numpy())


def test_node_args_and_kwargs_cannot_be_mutated_in_place():
    def f(x):
        return minidl.cat([x, x], dim=0)

    gm = fx.symbolic_trace(f)
    cat = [n for n in gm.graph.nodes if n.op == "call_function"][0]
    with pytest.raises(NotImplementedError, match="does not support mutation"):
        cat.kwargs["dim"] = 1
    with pytest.raises(NotImplementedError, match="does not support mutation"):
        cat.args[0].append(cat.args[0][0])
    cat.kwargs = {"dim": 1}  # assigning a copy is the way
    assert gm.recompile() and gm(minidl.ones(2, 3)).shape == (2, 6)
    assert pickle.loads(pickle.dumps(gm))(minidl.ones(2, 3)).shape == (2, 6)
    assert copy.deepcopy(gm.graph).nodes[1].kwargs == {"dim": 1}


def test_interpreter_says_which_node_failed():
    gm = fx.symbolic_trace(make_models(minidl)["mlp"][0]())
    with pytest.raises(Exception) as info:
        fx.Interpreter(gm).run(minidl.ones(2, 5))  # fc1 takes 6 features
    notes = getattr(info.value, "__notes__", ["While executing %fc1"])
    assert any("While executing %fc1" in n for n in notes)


def test_insertion_points_order_as_torch():
    torch = pytest.importorskip("torch")
    names = []
    for lib, g in ((torch, torch.fx.Graph()), (minidl, fx.Graph())):
        x = g.placeholder("x")
        with g.inserting_after(x):
            g.call_function(lib.relu, (x,))
            g.call_function(operator.neg, (x,))
        with g.inserting_before(None):
            g.placeholder("y")
        with g.inserting_after():
            g.output(x)
        g.lint()
        names.append([(n.op, n.name) for n in g.nodes])
    assert names[1] == names[0]


def test_star_args_and_kwargs_as_torch():
    torch = pytest.importorskip("torch")

    def build(lib):
        class Star(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = lib.nn.Linear(2, 2)

            def forward(self, x, *rest, **extra):
                return self.fc(x) + rest[0] * rest[1]

        return Star()

    tgm, mgm = torch.fx.symbolic_trace(build(torch)), fx.symbolic_trace(build(minidl))
    assert _ops(mgm.graph) == _ops(tgm.graph)
    assert mgm.code.strip() == tgm.code.replace("torch.", "minidl.").strip()
    m = mgm
    x, a, b = minidl.ones(1, 2), minidl.tensor(2.0), minidl.tensor(3.0)
    want = (m.fc(x) + 6.0).numpy()
    np.testing.assert_allclose(mgm(x, a, b).numpy(), want)
    np.testing.assert_allclose(fx.Interpreter(mgm).run(x, a, b).numpy(), want)


def test_minidl_model_zoo_models_trace():
    """minidl.models' networks with an input check at their entrance (ResNet, MNASNet) and the
    fused batch norm + ReLU (ResNet's stem and blocks) trace: the check is skipped for the
    tracer's Proxy (it still refuses a wrong Tensor), the fusion is taken in two steps."""
    from minidl.models import mnasnet0_5, resnet18

    for build in (resnet18, mnasnet0_5):
        model = build(num_classes=10).eval()
        traced = minidl.fx.symbolic_trace(model)
        x = minidl.randn(2, 3, 32, 32)
        np.testing.assert_array_equal(traced(x).numpy(), model(x).numpy())
        with pytest.raises(ValueError, match=r"expected input \(N, 3, H, W\)"):
            model(minidl.randn(1, 4, 32, 32))
    ops = [n.target for n in minidl.fx.symbolic_trace(resnet18().eval()).graph.nodes
           if n.op == "call_module"]
    assert ops[:3] == ["conv1", "bn1", "maxpool"]


# ---- fx: buffers and tensor attributes of a traced module -------------------------------------

def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _module_with_tensors(lib):
    class WithTensors(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lib.nn.Linear(3, 2)
            self.register_buffer("buf", lib.ones(2))
            self.scale = lib.tensor([1.0, 2.0])
            self.sub = lib.nn.Module()
            self.sub.register_buffer("b2", lib.zeros(2))
            self.sub.shift = lib.ones(2)

        def forward(self, x):
            return (self.lin(x) + self.buf) * self.scale + self.sub.b2 + self.sub.shift

    return WithTensors()


def test_fx_traces_a_module_with_a_buffer_read_in_forward():
    """symbolic_trace of a module reading its own buffer (a get_attr node at the top level)
    raised KeyError "register_buffer: attribute 'buf' already exists" (GraphModule set the
    attribute, then registered it); a plain tensor attribute became a _tensor_constant kept out
    of the state_dict. torch's GraphModule reads it by its name and holds every tensor it reads
    as a buffer, so its state_dict saves and loads them."""
    import minidl.fx as fx
    m = _module_with_tensors(minidl)
    gm = fx.symbolic_trace(m)
    assert sorted(gm.state_dict()) == ["buf", "lin.bias", "lin.weight", "scale", "sub.b2",
                                       "sub.shift"]
    assert "_tensor_constant" not in gm.code
    x = minidl.tensor(_rand(4, 3).astype(np.float32))
    np.testing.assert_array_equal(gm(x).numpy(), m(x).numpy())
    other = fx.symbolic_trace(_module_with_tensors(minidl))
    other.load_state_dict(gm.state_dict())
    np.testing.assert_array_equal(other(x).numpy(), m(x).numpy())


def test_fx_graph_module_state_dict_keys_and_code_match_torch():
    torch = pytest.importorskip("torch")
    torch_fx = pytest.importorskip("torch.fx")

    import minidl.fx as fx
    gm = fx.symbolic_trace(_module_with_tensors(minidl))
    tgm = torch_fx.symbolic_trace(_module_with_tensors(torch))
    assert sorted(gm.state_dict()) == sorted(tgm.state_dict())
    assert sorted(k for k, _ in gm.named_buffers()) == sorted(k for k, _ in tgm.named_buffers())
    assert gm.code.strip() == tgm.code.strip()


# ---- fx: a graph prints its output as torch's -------------------------------------------------

def test_fx_graph_prints_its_output_as_torch():
    """A graph's output line printed its values as %name ('return %add'); torch prints the
    names bare ('return add', 'return ((x, add), {'a': x})'). get_attr nodes printed an empty
    '(args = (), kwargs = {})', which torch's leave out."""
    import minidl.fx as fx

    class Pair(minidl.nn.Module):
        def forward(self, x):
            return (x, x + 1), {"a": x}

    text = str(fx.symbolic_trace(Pair()).graph)
    assert text.splitlines()[-1].strip() == "return ((x, add), {'a': x})"
    torch_fx = pytest.importorskip("torch.fx")
    torch = pytest.importorskip("torch")

    class TorchPair(torch.nn.Module):
        def forward(self, x):
            return (x, x + 1), {"a": x}

    assert text == str(torch_fx.symbolic_trace(TorchPair()).graph)
    with_attrs = fx.symbolic_trace(_module_with_tensors(minidl)).graph
    torch_with_attrs = torch_fx.symbolic_trace(_module_with_tensors(torch)).graph
    assert str(with_attrs) == str(torch_with_attrs)


# ---- fx: concrete_args are checked at each call -----------------------------------------------

def test_fx_concrete_args_are_checked_when_the_graph_runs():
    """A concrete argument became a placeholder defaulting to the traced value and nothing
    else, so calling the GraphModule with another value silently ran the branch traced for
    the first (gm(x, False) gave relu(x)). torch's tracer names the placeholder flag_1 and
    adds a check that raises AssertionError for another value (None checked as None)."""
    import minidl.fx as fx

    class Branchy(minidl.nn.Module):
        def forward(self, x, flag, n=None):
            if flag:
                x = minidl.relu(x)
            return x * 2 if n is None else x

    gm = fx.symbolic_trace(Branchy(), concrete_args={"flag": True, "n": None})
    x = minidl.tensor([-1.0, 2.0])
    assert gm(x, True).tolist() == [0.0, 4.0]
    with pytest.raises(AssertionError, match="flag has been specialized to have value True"):
        gm(x, False)
    with pytest.raises(AssertionError, match="n has been specialized to have value None"):
        gm(x, True, 3)
    gm.graph.eliminate_dead_code()  # the checks are kept
    gm.recompile()
    with pytest.raises(AssertionError):
        gm(x, False)
    assert "flag_1" in gm.code and "n_1" in gm.code
    for again in (fx.symbolic_trace(gm), fx.Transformer(gm).transform()):  # the checks kept
        assert again(x, True).tolist() == [0.0, 4.0]
        with pytest.raises(AssertionError, match="flag has been specialized"):
            again(x, False)
