"""nn.Module semantics: registration, names, state_dict (with buffers, torch's key names),
load_state_dict (arrays or Tensors, copies), train/eval, zero_grad, default init, save/load; state-dict hooks, extra state and to_empty
against torch's."""
import math
import os

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

try:
    import torch
except ImportError:  # the tests that compare with torch skip themselves
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.not_a_param = minidl.tensor([1.0])  # a plain Tensor attribute is not registered
        self.note = "plain attribute"

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 2))

    def forward(self, x):
        return self.head(self.block(x))


EXPECTED_PARAMS = [
    ("block.scale", (1,)),
    ("block.conv.weight", (3, 2, 3, 3)), ("block.conv.bias", (3,)),
    ("block.bn.weight", (3,)), ("block.bn.bias", (3,)),
    ("head.1.weight", (5, 48)), ("head.1.bias", (5,)),
    ("head.3.weight", (2, 5)), ("head.3.bias", (2,)),
]


def test_parameters_registered_by_attribute_with_nested_names():
    net = Net()
    names = [(n, p.shape) for n, p in net.named_parameters()]
    assert sorted(names) == sorted(EXPECTED_PARAMS)
    assert len(list(net.parameters())) == len(EXPECTED_PARAMS)
    assert all(p.requires_grad for p in net.parameters())
    assert "not_a_param" not in dict(net.named_parameters())
    assert net.block.note == "plain attribute"
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert isinstance(seq[0], nn.Linear) and len(seq) == 3


def test_reassigning_and_deleting_attributes_updates_registration():
    lin = nn.Linear(3, 2)
    lin.weight = nn.Parameter(np.zeros((2, 3), np.float32))
    assert dict(lin.named_parameters())["weight"].numpy().sum() == 0
    lin.extra = nn.Linear(1, 1)
    assert "extra.weight" in dict(lin.named_parameters())
    del lin.extra
    assert "extra.weight" not in dict(lin.named_parameters())
    shared = nn.Linear(2, 2)
    tied = nn.Sequential(shared, shared)
    assert len(list(tied.parameters())) == 2  # a shared parameter is listed once


def test_registering_over_a_plain_attribute_replaces_it():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = None  # e.g. an optional parameter, created later
            self.w = nn.Parameter(np.ones(2, np.float32))
            self.sub = "placeholder"
            self.sub = nn.Linear(2, 2)

    m = M()
    assert isinstance(m.w, nn.Parameter) and isinstance(m.sub, nn.Linear)
    assert [n for n, _ in m.named_parameters()] == ["w", "sub.weight", "sub.bias"]
    with pytest.raises(TypeError, match="parameter 'w'"):
        m.w = 5  # PyTorch refuses it: the parameter would silently leave parameters()
    with pytest.raises(TypeError, match="parameter 'w'"):
        m.w = minidl.tensor([1.0, 2.0])
    assert "w" in dict(m.named_parameters())
    with pytest.raises(TypeError, match="buffer"):
        m.sub2 = nn.BatchNorm1d(2)
        m.sub2.running_mean = np.zeros(2, np.float32)


def test_state_dict_includes_buffers():
    net = Net()
    sd = net.state_dict()
    for k in ("block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked"):
        assert k in sd
    assert sd["block.bn.num_batches_tracked"].dtype == np.int64
    assert len(sd) == len(EXPECTED_PARAMS) + 3
    assert all(not v.requires_grad for v in sd.values())


def test_state_dict_keys_match_torch_for_the_same_architecture():
    torch = pytest.importorskip("torch", reason="key-name comparison needs torch")

    def build(lib):
        return lib.Sequential(lib.Conv2d(1, 4, 3), lib.BatchNorm2d(4), lib.ReLU(),
                              lib.Sequential(lib.Conv2d(4, 4, 1, bias=False), lib.BatchNorm2d(4)),
                              lib.AdaptiveAvgPool2d(1), lib.Flatten(), lib.Linear(4, 3))

    m, t = build(nn), build(torch.nn)
    assert list(m.state_dict()) == list(t.state_dict())
    for k, v in t.state_dict().items():
        assert m.state_dict()[k].shape == tuple(v.shape), k
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert list(m[3:].state_dict()) == list(t[3:].state_dict())  # slices keep their names
    assert isinstance(m[-1], nn.Linear) and len(m[1:3]) == 2


def test_load_state_dict_from_arrays_and_tensors_copies():
    src, dst = Net(), Net()
    arrays = {k: v.numpy().copy() for k, v in src.state_dict().items()}
    arrays["block.bn.running_mean"] = np.arange(3, dtype=np.float64)  # dtype follows the model
    result = dst.load_state_dict(arrays)
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), arrays[k], err_msg=k)
    assert dst.block.bn.running_mean.dtype == np.float32
    arrays["head.1.weight"][...] = 42.0  # no aliasing of the caller's arrays
    assert not (dst.head[1].weight.numpy() == 42.0).any()

    tensors = Net().state_dict()
    dst.load_state_dict(tensors)
    tensors["head.3.bias"].data[...] = 7.0
    assert not (dst.head[3].bias.numpy() == 7.0).any()
    # parameters stay the same objects (an optimizer keeps holding them)
    params = list(dst.parameters())
    dst.load_state_dict(src.state_dict())
    assert all(a is b for a, b in zip(params, dst.parameters()))


def test_load_state_dict_strict_false_returns_missing_and_unexpected():
    net = Net()
    sd = {k: v for k, v in Net().state_dict().items() if not k.startswith("head.3")}
    sd["head.9.weight"] = np.zeros(2, np.float32)
    result = net.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == ["head.3.bias", "head.3.weight"]
    assert result.unexpected_keys == ["head.9.weight"]
    np.testing.assert_array_equal(net.block.conv.weight.numpy(), sd["block.conv.weight"].numpy())


def test_load_state_dict_accepts_checkpoints_without_num_batches_tracked():
    net = Net()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert net.load_state_dict(sd).missing_keys == []


def test_train_eval_propagate_and_change_behaviour():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = minidl.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)))
    rm = net.block.bn.running_mean.numpy().copy()
    net(x)  # eval: running stats untouched
    np.testing.assert_array_equal(net.block.bn.running_mean.numpy(), rm)
    net.train()
    assert all(m.training for m in net.modules())
    net(x)
    assert not np.array_equal(net.block.bn.running_mean.numpy(), rm)
    assert int(net.block.bn.num_batches_tracked.item()) == 1


def test_zero_grad_and_backward_reach_every_parameter():
    net = Net()
    x = minidl.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)))
    F.cross_entropy(net(x), minidl.tensor([0, 1])).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert all(grads[n].shape == p.shape for n, p in net.named_parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_gradcheck_through_a_whole_model_in_float64():
    from minidl.testing import gradcheck

    net = Net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.block.bn.running_var.dtype == np.float64
    assert net.block.bn.num_batches_tracked.dtype == np.int64
    x = minidl.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)), dtype="float64",
                      requires_grad=True)
    for mode in (True, False):  # batch statistics, then running statistics
        net.train(mode)
        assert gradcheck(lambda x: net(x), [x])


@pytest.mark.parametrize("make,fan_in", [
    (lambda: nn.Linear(300, 20), 300),
    (lambda: nn.Conv2d(6, 16, 5), 150),
    (lambda: nn.Conv2d(4, 32, (3, 2)), 24),
])
def test_default_init_is_kaiming_uniform(make, fan_in):
    m = make()
    bound = 1 / math.sqrt(fan_in)  # Kaiming-uniform with a = sqrt(5), as PyTorch's default
    w = m.weight.numpy().astype(np.float64)
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound
    assert np.abs(m.bias.numpy()).max() <= bound
    assert m.weight.dtype == np.float32


def test_batchnorm_default_state():
    bn = nn.BatchNorm2d(4)
    np.testing.assert_array_equal(bn.weight.numpy(), np.ones(4))
    np.testing.assert_array_equal(bn.bias.numpy(), np.zeros(4))
    np.testing.assert_array_equal(bn.running_mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(4))
    assert not bn.running_mean.requires_grad
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]


# ---- save / load ----------------------------------------------------------------------------
def test_save_load_roundtrip(tmp_path):
    net = Net()
    net(minidl.tensor(np.ones((2, 2, 4, 4))))  # non-default running stats
    path = tmp_path / "net.npz"
    minidl.save(net.state_dict(), path)
    loaded = minidl.load(path)
    assert list(loaded) == list(net.state_dict())
    other = Net()
    other.load_state_dict(loaded)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k].numpy(), v.numpy(), err_msg=k)
        assert other.state_dict()[k].dtype == v.dtype
    assert os.listdir(tmp_path) == ["net.npz"]


def test_save_is_atomic_when_writing_crashes(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    good = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    minidl.save(good, path)
    original_bytes = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(OSError, match="simulated"):
        minidl.save({"w": np.zeros((2, 3), np.float32)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == original_bytes
    np.testing.assert_array_equal(minidl.load(path)["w"], good["w"])
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind


def test_load_of_a_corrupt_file_names_it(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        minidl.load(bad)


# ---- the rest of torch.nn.Module's everyday surface ---------------------------------------
def test_sequential_and_module_list_behave_as_lists():
    a, b, c, d = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1), nn.Identity()
    seq = nn.Sequential(a, b, c)
    assert seq[-1] is c and list(seq[1:]) == [b, c] and [n for n, _ in seq[1:].named_children()] == ["1", "2"]
    seq.insert(1, d)
    assert list(seq) == [a, d, b, c] and list(seq._modules) == ["0", "1", "2", "3"]
    assert seq.pop(1) is d and list(seq) == [a, b, c]
    assert list(seq._modules) == ["0", "1", "2"]  # renumbered, as torch 2 does
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    seq[1] = nn.Tanh()
    assert isinstance(seq[1], nn.Tanh)
    with pytest.raises(IndexError, match="index 3 is out of range for 3"):
        seq[3]
    lst = nn.ModuleList([b])
    lst += [c]
    lst.extend([d]).append(a)
    assert list(lst) == [b, c, d, a] and isinstance(lst[1:3], nn.ModuleList)
    del lst[0]
    assert list(lst) == [c, d, a] and list(lst._modules) == ["0", "1", "2"]
    assert list(lst.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_forward_hooks_read_and_replace_as_in_torch():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    seen = {}
    h1 = net[1].register_forward_hook(lambda m, args, out: seen.setdefault("relu", out))
    h2 = net[2].register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    x = minidl.randn(5, 3)
    out = net(x)
    assert seen["relu"].shape == (5, 4) and (seen["relu"].numpy() >= 0).all()
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(net[2].bias.numpy(), (5, 2)))
    h2.remove()
    with net[2].register_forward_hook(lambda m, args, out: out * 2):
        doubled = net(x).numpy()
    h1.remove()
    seen.clear()
    plain = net(x).numpy()
    np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-6)
    assert seen == {}
    with pytest.raises(TypeError, match="callable"):
        net.register_forward_hook("not a function")


def test_non_persistent_buffers_prefix_keep_vars_and_lookups():
    bn = nn.BatchNorm1d(3)
    bn.register_buffer("scratch", minidl.ones(3), persistent=False)
    assert "scratch" not in bn.state_dict() and "scratch" in dict(bn.named_buffers())
    assert bn.load_state_dict(bn.state_dict()).missing_keys == []
    net = nn.Sequential(nn.Linear(2, 2), bn)
    assert list(net.state_dict(prefix="model."))[0] == "model.0.weight"
    assert net.state_dict(keep_vars=True)["0.weight"] is net[0].weight
    assert net.get_submodule("1") is bn and net.get_parameter("0.bias") is net[0].bias
    assert net.get_buffer("1.running_var") is bn.running_var
    with pytest.raises(AttributeError, match="no sub-module '7'"):
        net.get_submodule("7.conv")
    result = net.load_state_dict({"0.weight": np.zeros((2, 2))}, strict=False)
    missing, unexpected = result
    assert "0.bias" in missing and unexpected == [] and result.missing_keys == missing
    assert repr(net.load_state_dict(net.state_dict())) == "<All keys matched successfully>"


def test_module_half_and_bfloat16_cast_floating_state_only():
    bn = nn.BatchNorm1d(2).half()
    assert bn.weight.dtype == np.float16 and bn.num_batches_tracked.dtype == np.int64
    assert nn.Linear(2, 2).bfloat16().weight.dtype == minidl.bfloat16


def test_add_module_checks_and_set_submodule():
    net = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    net.register_module("head", nn.Identity())
    assert "head" in dict(net.named_children())
    for name, err in (("a.b", KeyError), ("", KeyError), (3.5, TypeError), ("forward", KeyError)):
        with pytest.raises(err):
            net.add_module(name, nn.ReLU())
    with pytest.raises(TypeError, match="not a Module"):
        net.add_module("x", minidl.zeros(1))
    net.set_submodule("1.1", nn.Linear(3, 4))
    assert net.get_submodule("1.1").weight.shape == (4, 3)
    with pytest.raises(AttributeError, match="no sub-module"):
        net.set_submodule("7.1", nn.ReLU())
    lin = nn.Linear(2, 2)
    with pytest.raises(AttributeError, match="not a module"):
        lin.set_submodule("weight", nn.ReLU())


def _backward_hook_run(tt, hooked):
    """A module of two tensor inputs (and a number), two outputs, full backward hooks and a
    pre-hook that change the gradients; returns what the hooks saw and the gradients."""
    class Mix(tt.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = tt.nn.Linear(3, 2).double()

        def forward(self, a, b, scale):
            return self.lin(a) * b * scale, (a * a).sum(1)

    m = Mix()
    with tt.no_grad():
        m.lin.weight.copy_(tt.from_numpy(np.arange(6.0).reshape(2, 3) / 10))
        m.lin.bias.copy_(tt.from_numpy(np.array([0.1, -0.2])))
    seen = []
    if hooked:
        def pre(mod, grad_output):
            seen.append([g.detach().numpy().copy() for g in grad_output])
            return (grad_output[0] * 3, grad_output[1])

        def full(mod, grad_input, grad_output):
            seen.append([None if g is None else g.detach().numpy().copy() for g in grad_input])
            seen.append([None if g is None else g.detach().numpy().copy() for g in grad_output])
            return (grad_input[0] + 1, grad_input[1], None)
        m.register_full_backward_pre_hook(pre)
        m.register_full_backward_hook(full)
    a = tt.from_numpy(np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])).requires_grad_()
    b = tt.from_numpy(np.array([[0.5, -1.0], [2.0, 1.5]])).requires_grad_()
    y, z = m(a, b, 2.0)
    ((y * y).sum() + (z * tt.from_numpy(np.array([1.0, -2.0]))).sum()).backward()
    grads = [a.grad.numpy().copy(), b.grad.numpy().copy(), m.lin.weight.grad.numpy().copy()]
    return seen, grads


def test_full_backward_hooks_match_torch():
    torch = pytest.importorskip("torch")
    for hooked in (False, True):
        ours_seen, ours = _backward_hook_run(minidl, hooked)
        theirs_seen, theirs = _backward_hook_run(torch, hooked)
        assert len(ours_seen) == len(theirs_seen) == (3 if hooked else 0)
        for mine, want in zip(ours_seen, theirs_seen):
            assert len(mine) == len(want)
            for p, q in zip(mine, want):
                if q is None:
                    assert p is None
                else:
                    np.testing.assert_allclose(p, q, rtol=1e-12)
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p, q, rtol=1e-12)


def test_full_backward_hook_for_grad_cam_and_removal():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    acts, grads = {}, {}
    conv.register_forward_hook(lambda m, args, out: acts.update(a=out))
    handle = conv.register_full_backward_hook(lambda m, gi, go: grads.update(g=go[0]))
    x = minidl.randn(2, 1, 4, 4)  # the input takes no gradient: the hook sees grad_input (None,)
    net(x)[:, 1].sum().backward()
    assert grads["g"].shape == acts["a"].shape == (2, 2, 4, 4)
    handle.remove()
    grads.clear()
    net(x).sum().backward()
    assert not grads
    with pytest.raises(ValueError, match="returned 2 gradients where 1"):
        lin = nn.Linear(2, 1)
        lin.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
        lin(minidl.randn(3, 2, requires_grad=True)).sum().backward()
    with minidl.no_grad():  # no graph: the hooks are not wired in
        assert nn.Linear(2, 1)(minidl.randn(1, 2)).shape == (1, 1)


# ---- state-dict hooks, extra state and to_empty, against torch's ---------------------------------
def _with_extra(M):
    class Counter(M.Module):
        def __init__(self):
            super().__init__()
            self.scale = M.Parameter(M.init.ones_(M.Parameter(M.Linear(2, 2).weight.data[0]))
                                     .data) if M is nn else M.Parameter(torch.ones(2))
            self.register_buffer("steps", (minidl if M is nn else torch).zeros(1))
            self.seen = 0

        def get_extra_state(self):
            return {"seen": self.seen}

        def set_extra_state(self, state):
            self.seen = state["seen"]
    return Counter


@needs_torch
def test_extra_state_as_torch():
    m = nn.Sequential(nn.Linear(2, 2), _with_extra(nn)())
    t = torch.nn.Sequential(torch.nn.Linear(2, 2), _with_extra(torch.nn)())
    assert list(m.state_dict()) == list(t.state_dict()) == [
        "0.weight", "0.bias", "1.scale", "1.steps", "1._extra_state"]
    m[1].seen = 7
    sd = m.state_dict()
    assert sd["1._extra_state"] == {"seen": 7}
    m2 = nn.Sequential(nn.Linear(2, 2), _with_extra(nn)())
    m2.load_state_dict(sd)
    assert m2[1].seen == 7
    # the key is required when strict (as torch), and refused by a module without extra state
    del sd["1._extra_state"]
    with pytest.raises(ValueError, match="missing keys: 1._extra_state"):
        m2.load_state_dict(sd)
    assert m2.load_state_dict(sd, strict=False).missing_keys == []
    with pytest.raises(ValueError, match="unexpected keys: _extra_state"):
        nn.Linear(2, 2).load_state_dict({**nn.Linear(2, 2).state_dict(), "_extra_state": 1})
    with pytest.raises(RuntimeError, match="Module.get_extra_state"):
        nn.Linear(2, 2).get_extra_state()


def _record_hooks(M, model, calls):
    for name, mod in model.named_modules():
        mod.register_state_dict_pre_hook(
            lambda module, prefix, keep_vars: calls.append(("pre", prefix, keep_vars)))
        mod.register_state_dict_post_hook(
            lambda module, sd, prefix, meta: calls.append(("post", prefix, len(sd))))


@needs_torch
def test_state_dict_hooks_as_torch():
    m = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    t = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sequential(torch.nn.ReLU(),
                                                                       torch.nn.Linear(3, 1)))
    mc, tc = [], []
    _record_hooks(nn, m, mc)
    _record_hooks(torch.nn, t, tc)
    m.state_dict(keep_vars=True)
    t.state_dict(keep_vars=True)
    assert mc == tc and len(mc) == 10

    def add_key(module, sd, prefix, meta):
        sd[prefix + "note"] = "hi"
    for model in (m, t):
        model[0].register_state_dict_post_hook(add_key)
    assert list(m.state_dict()) == list(t.state_dict())
    assert m.state_dict()["0.note"] == "hi"
    handle = m[0].register_state_dict_post_hook(lambda *a: {"bad": 1})
    with pytest.raises(RuntimeError, match="post-hook must return None"):
        m.state_dict()
    handle.remove()
    m.state_dict()


@needs_torch
def test_load_state_dict_hooks_as_torch():
    def rename(module, sd, prefix, meta, strict, missing, unexpected, errors):
        if prefix + "old_weight" in sd:
            sd[prefix + "weight"] = sd.pop(prefix + "old_weight")
    results = {}
    for M, name in ((nn, "minidl"), (torch.nn, "torch")):
        model = M.Sequential(M.Linear(2, 2), M.Sequential(M.Linear(2, 2)))
        order = []
        for prefix, mod in model.named_modules():
            mod.register_load_state_dict_post_hook(
                lambda module, keys, p=prefix: order.append((p, list(keys.missing_keys))))
        model[0].register_load_state_dict_pre_hook(rename)
        w = np.arange(4, dtype=np.float32).reshape(2, 2)
        sd = {"0.old_weight": w if M is nn else torch.tensor(w),
              "1.0.weight": w if M is nn else torch.tensor(w)}
        res = model.load_state_dict(sd, strict=False)
        # (torch's hooks of an earlier child see the missing keys found so far; here all)
        results[name] = ([p for p, _ in order], sorted(res.missing_keys), sorted(res.unexpected_keys),
                         model[0].weight.detach().numpy().copy())
        assert "0.old_weight" in sd  # the caller's dict is not changed
    assert results["minidl"][:3] == results["torch"][:3]
    np.testing.assert_array_equal(results["minidl"][3], results["torch"][3])

    # a post-hook that clears the missing keys lets a strict load through, as in torch
    def forgive(module, keys):
        keys.missing_keys.clear()
    m = nn.Linear(2, 2)
    m.register_load_state_dict_post_hook(forgive)
    m.load_state_dict({"weight": np.ones((2, 2), np.float32)})
    np.testing.assert_array_equal(m.weight.numpy(), 1.0)
    n = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="missing keys: bias"):
        n.load_state_dict({"weight": np.ones((2, 2), np.float32)})

    def complain(module, sd, prefix, meta, strict, missing, unexpected, errors):
        errors.append("old format")
    n.register_load_state_dict_pre_hook(complain)
    with pytest.raises(RuntimeError, match="old format"):
        n.load_state_dict(n.state_dict())


@needs_torch
def test_to_empty_keeps_the_objects_and_shapes():
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params = list(m.parameters())
    assert m.to_empty(device="cpu") is m
    assert list(m.parameters()) == params
    assert [p.shape for p in m.parameters()] == [(4, 3), (4,), (4,), (4,)]
    assert m[1].num_batches_tracked.dtype == np.int64
    inner = m[0].weight.data
    m.to_empty(device="cpu", recurse=False)  # a Sequential has nothing of its own
    assert m[0].weight.data is inner
    with pytest.raises(TypeError):
        m.to_empty("cpu")  # device is keyword-only, as in torch
# ---- Module API as torch's: to(), replaced parameters, assign=True, kwargs hooks, names, clashes -----
def test_module_to_an_integer_dtype_is_refused_and_keeps_the_weights():
    model = nn.Linear(3, 2)
    before = model.weight.numpy().copy()
    with pytest.raises(TypeError, match="floating point or complex"):
        model.to(minidl.int64)
    assert model.weight.dtype == minidl.float32
    np.testing.assert_array_equal(model.weight.numpy(), before)


def test_a_replaced_parameter_or_buffer_keeps_its_place():
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(minidl.ones(2, 2))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    bn = nn.BatchNorm1d(2)
    bn.running_mean = minidl.ones(2)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]


def test_replaced_parameter_order_matches_torch():
    torch = pytest.importorskip("torch")
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.weight = a.weight
    ours_a, ours_b = nn.Linear(2, 2), nn.Linear(2, 2)
    ours_b.weight = ours_a.weight
    assert list(nn.ModuleList([ours_a, ours_b]).state_dict()) == \
        list(torch.nn.ModuleList([a, b]).state_dict())


def test_load_state_dict_assign_puts_the_given_tensors_in_place():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    sd = {k: minidl.tensor(np.full(v.shape, 2.0), dtype=minidl.float64)
          for k, v in model.state_dict().items() if k != "1.num_batches_tracked"}
    result = model.load_state_dict(sd, strict=False, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert isinstance(model[0].weight, nn.Parameter) and model[0].weight.dtype == minidl.float64
    assert model[0].weight.data is sd["0.weight"].data  # the given array, not a copy
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    assert model[1].running_mean is sd["1.running_mean"]
    with pytest.raises(RuntimeError, match="size mismatch"):
        nn.Linear(2, 2).load_state_dict({"weight": minidl.ones(2, 3), "bias": minidl.ones(2)},
                                        assign=True)


def test_load_state_dict_assign_matches_torch():
    torch = pytest.importorskip("torch")
    theirs, ours = torch.nn.Linear(2, 2), nn.Linear(2, 2)
    w = np.arange(4.0).reshape(2, 2)
    theirs.load_state_dict({"weight": torch.tensor(w), "bias": torch.zeros(2).double()},
                           assign=True)
    ours.load_state_dict({"weight": minidl.tensor(w, dtype=minidl.float64),
                          "bias": minidl.zeros(2, dtype=minidl.float64)}, assign=True)
    assert str(theirs.weight.dtype).split(".")[-1] == str(ours.weight.dtype).split(".")[-1]
    x = np.ones((1, 2))
    np.testing.assert_allclose(ours(minidl.tensor(x, dtype=minidl.float64)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy())


def _hook_log(lib, nn_):
    log = []
    m = nn_.Linear(2, 2)
    h1 = m.register_forward_pre_hook(lambda mod, args: log.append("pre1"))
    m.register_forward_pre_hook(lambda mod, args: log.append("pre0"), prepend=True)
    m.register_forward_pre_hook(
        lambda mod, args, kwargs: log.append(("prekw", sorted(kwargs))), with_kwargs=True)
    m.register_forward_hook(lambda mod, args, out: log.append("fwd"))
    m.register_forward_hook(lambda mod, args, kwargs, out: log.append(("fwdkw", sorted(kwargs))),
                            with_kwargs=True)
    m(lib.ones(1, 2))
    h1.remove()
    m(input=lib.ones(1, 2))

    def swap(mod, args, kwargs):
        return (), {"input": kwargs["input"] * 0}
    m.register_forward_pre_hook(swap, with_kwargs=True)
    out = m(input=lib.ones(1, 2))
    log.append(bool((out == m.bias).all()))

    class Bad(nn_.Module):
        def forward(self, x):
            raise ValueError("boom")
    bad = Bad()
    bad.register_forward_hook(lambda mod, args, out: log.append(("always", out)),
                              always_call=True)
    bad.register_forward_hook(lambda mod, args, out: log.append("not"))
    with pytest.raises(ValueError, match="boom"):
        bad(lib.ones(1))
    return log


def test_forward_hooks_take_with_kwargs_always_call_and_prepend():
    log = _hook_log(minidl, nn)
    assert log == ["pre0", "pre1", ("prekw", []), "fwd", ("fwdkw", []),
                   "pre0", ("prekw", ["input"]), "fwd", ("fwdkw", ["input"]),
                   "pre0", ("prekw", ["input"]), "fwd", ("fwdkw", ["input"]), True,
                   ("always", None)]


def test_forward_hooks_with_kwargs_match_torch():
    torch = pytest.importorskip("torch")
    assert _hook_log(minidl, nn) == _hook_log(torch, torch.nn)


def test_a_pre_hook_with_kwargs_returning_a_wrong_value_is_a_runtime_error():
    m = nn.Linear(2, 2)
    m.register_forward_pre_hook(lambda mod, args, kwargs: args, with_kwargs=True)
    with pytest.raises(RuntimeError, match=r"tuple of \(new_args, new_kwargs\)"):
        m(minidl.ones(1, 2))


def test_a_removed_kwargs_hook_leaves_no_mark():
    m = nn.Linear(2, 2)
    handle = m.register_forward_hook(lambda mod, args, kwargs, out: None, with_kwargs=True,
                                     always_call=True)
    handle.remove()
    assert not m._forward_hooks and not m._forward_hooks_with_kwargs
    assert not m._forward_hooks_always_called


def test_named_parameters_and_buffers_take_remove_duplicate_and_recurse():
    lin = nn.BatchNorm1d(2)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == \
        ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in model.named_buffers(remove_duplicate=False)][-1] == \
        "2.num_batches_tracked"
    assert [n for n, _ in model.named_buffers()][-1] == "0.num_batches_tracked"
    assert list(model.named_buffers(recurse=False)) == []
    assert list(model.buffers(recurse=False)) == []
    assert len(list(lin.named_buffers(prefix="bn"))) == 3


def test_named_members_match_torch():
    torch = pytest.importorskip("torch")

    def names(nn_):
        a = nn_.Linear(2, 2)
        m = nn_.Sequential(a, nn_.BatchNorm1d(2), a)
        return ([n for n, _ in m.named_parameters(remove_duplicate=False)],
                [n for n, _ in m.named_buffers(prefix="p", remove_duplicate=False)],
                [n for n, _ in m[1].named_buffers(recurse=False)])
    assert names(nn) == names(torch.nn)


def test_registering_a_buffer_or_parameter_over_another_attribute_is_refused():
    lin = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="attribute 'weight' already exists"):
        lin.register_buffer("weight", minidl.ones(1))  # state_dict's 'weight' became it
    assert lin.state_dict()["weight"].shape == (2, 2) and "weight" not in lin._buffers
    lin.register_buffer("scale", minidl.ones(1))
    with pytest.raises(KeyError, match="attribute 'scale' already exists"):
        lin.register_parameter("scale", nn.Parameter(minidl.ones(1)))
    with pytest.raises(KeyError, match="already exists"):
        lin.register_parameter("in_features", nn.Parameter(minidl.ones(1)))
    lin.register_buffer("scale", minidl.zeros(1))  # the same kind again: replaced
    lin.register_parameter("bias", nn.Parameter(minidl.zeros(2)))
    assert list(lin.state_dict()) == ["weight", "bias", "scale"]


def test_registration_clashes_are_refused_as_torch():
    torch = pytest.importorskip("torch")
    for lib, nn_ in ((torch, torch.nn), (minidl, nn)):
        with pytest.raises(KeyError, match="attribute 'weight' already exists"):
            nn_.Linear(2, 2).register_buffer("weight", lib.ones(1))


def test_sequential_plus_sequential_as_torch():
    torch = pytest.importorskip("torch")
    a, b = nn.Linear(1, 2), nn.ReLU()
    both = nn.Sequential(a) + nn.Sequential(b)
    assert [type(m).__name__ for m in both] == \
        [type(m).__name__ for m in torch.nn.Sequential(torch.nn.Linear(1, 2)) +
         torch.nn.Sequential(torch.nn.ReLU())]
    assert both[0] is a and both[1] is b
    with pytest.raises(ValueError, match="only objects of Sequential"):
        nn.Sequential(a) + [b]
    seq = start = nn.Sequential(a)
    seq += nn.Sequential(b)
    assert seq is start and list(seq) == [a, b]
    assert list(nn.ModuleList([a]) + nn.ModuleList([b])) == [a, b]


def test_module_methods_take_torchs_keyword_names():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, lin)
    model.requires_grad_(requires_grad=False)  # was the keyword 'flag'
    assert not lin.weight.requires_grad
    assert len(list(model.modules(remove_duplicate=False))) == 3
    assert len(list(model.modules())) == 2
    with pytest.raises(AttributeError, match="strict"):
        model.set_submodule("2", nn.ReLU(), strict=True)
    model.set_submodule("1", nn.ReLU(), strict=True)
    model.set_submodule("2", nn.Tanh())
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Tanh"]


def test_module_method_signatures_cover_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    for name in ("modules", "requires_grad_", "set_submodule", "named_parameters",
                 "named_buffers", "buffers", "load_state_dict", "register_forward_hook",
                 "register_forward_pre_hook"):
        theirs = inspect.signature(getattr(torch.nn.Module, name)).parameters
        ours = inspect.signature(getattr(nn.Module, name)).parameters
        assert [p for p in theirs if p not in ours] == [], name


# ---- the global module registration hooks (parameters, buffers, submodules) --------------------------
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
    try:  # global hooks: removed even when the script fails, or every later module sees them
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
    finally:
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
# ---- global module registration hooks ---------------------------------------------------------

def test_a_raising_buffer_registration_hook_leaves_the_module_unchanged():
    """register_buffer marked the name as a buffer before running the global hooks, so a hook
    that raised left a name that was no buffer but refused a plain attribute afterwards."""
    def refuse(module, name, value):
        raise ValueError("no buffers here")

    handle = nn.modules.module.register_module_buffer_registration_hook(refuse)
    m = nn.Module()
    try:
        with pytest.raises(ValueError, match="no buffers here"):
            m.register_buffer("stat", minidl.zeros(2))
    finally:
        handle.remove()
    assert dict(m.named_buffers()) == {}
    m.stat = 3  # a plain attribute, as in torch
    assert m.stat == 3 and "stat" not in m.state_dict()


# ---- global module registration hooks: renumbering a ModuleList -------------------------------

@pytest.mark.parametrize("move", ["insert", "del"])
def test_renumbering_a_module_list_fires_no_registration_hook(move):
    """ModuleList/Sequential insert and del renumbered the children through add_module, so the
    global module registration hook fired for every child moved (ModuleList.insert(0, m) on two
    children: three calls); torch renames them in place and fires none."""
    calls = []
    handle = nn.modules.module.register_module_module_registration_hook(
        lambda module, name, value: calls.append(name))
    try:
        for box in (nn.ModuleList([nn.ReLU(), nn.Tanh()]), nn.Sequential(nn.ReLU(), nn.Tanh())):
            calls.clear()
            if move == "insert":
                box.insert(0, nn.Sigmoid())
                assert [type(m).__name__ for m in box] == ["Sigmoid", "ReLU", "Tanh"]
            else:
                del box[0]
                assert [type(m).__name__ for m in box] == ["Tanh"]
            assert calls == []
            assert list(box._modules) == [str(i) for i in range(len(box))]
    finally:
        handle.remove()
    with pytest.raises(TypeError, match="not a Module subclass"):
        nn.ModuleList([nn.ReLU()]).insert(0, 3)


# ---- misuse: load_state_dict of a value that is not an array names the key --------------------

@pytest.mark.parametrize("value", ["abc", None, {"x": 1}])
def test_load_state_dict_non_array_value_names_the_key(value):
    model = minidl.nn.Linear(2, 3)
    state = dict(model.state_dict())
    state["bias"] = value
    before = model.weight.numpy().copy()
    with pytest.raises(TypeError, match=r"parameter named 'bias'") as info:
        model.load_state_dict(state)
    assert isinstance(info.value, RuntimeError)  # torch's type
    np.testing.assert_array_equal(model.weight.numpy(), before)  # nothing half-loaded


def test_load_state_dict_torch_tensors_and_lists_still_load():
    torch = pytest.importorskip("torch")
    src = torch.nn.Linear(2, 3)
    model = minidl.nn.Linear(2, 3)
    model.load_state_dict(src.state_dict())
    np.testing.assert_allclose(model.weight.numpy(), src.weight.detach().numpy())
    model.load_state_dict({"weight": src.weight.detach().numpy(), "bias": [1.0, 2.0, 3.0]})
    assert model.bias.tolist() == [1.0, 2.0, 3.0]


# ---- utils.hooks.RemovableHandle is the modules' hook handle ----------------------------------

def test_hook_handle_is_the_modules_one():
    model = minidl.nn.Linear(2, 2)
    handle = model.register_forward_hook(lambda m, i, o: None)
    assert isinstance(handle, minidl.utils.hooks.RemovableHandle)


# ---- nn.DataParallel on one device ------------------------------------------------------------

def test_data_parallel_on_one_device_matches_torch():
    torch = pytest.importorskip("torch")
    minidl.manual_seed(0)
    ours = minidl.nn.DataParallel(minidl.nn.Linear(3, 2))
    theirs = torch.nn.DataParallel(torch.nn.Linear(3, 2))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["module.weight",
                                                                    "module.bias"]
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(minidl.tensor(x)).detach().numpy(),
                               theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)
    assert isinstance(ours.module, minidl.nn.Linear)
    with pytest.raises(ValueError, match="one GPU per process"):
        minidl.nn.DataParallel(minidl.nn.Linear(3, 2), device_ids=[0, 1])
