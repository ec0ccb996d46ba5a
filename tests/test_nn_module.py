"""nn.Module semantics: registration, names, state_dict (with buffers, torch's key names),
load_state_dict (arrays or Tensors, copies), train/eval, zero_grad, default init, save/load."""
import math
import os

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F


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
