"""PyTorch 2.x API that scripts and libraries use, compared with torch 2.13 where it runs on a
CPU: DLPack, utils.swap_tensors, amp.custom_fwd/custom_bwd and is_autocast_available, the
deprecated Module.register_backward_hook, Module.share_memory/compile, the optimizer's
state-dict hooks, testing.assert_allclose and autograd.Variable."""
import os
import warnings
import weakref

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.utils import dlpack, swap_tensors


# ---- DLPack ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "uint8", "bool"])
def test_dlpack_shares_memory_with_torch(dtype):
    torch = pytest.importorskip("torch")
    values = np.arange(12).reshape(3, 4) % 3
    t = torch.tensor(values.astype(dtype))
    m = minidl.from_dlpack(t)
    assert m.dtype == np.dtype(dtype) and m.shape == (3, 4)
    t[0, 0] = 1  # a write through torch shows in minidl: one memory
    np.testing.assert_array_equal(m.numpy(), t.numpy())
    back = torch.from_dlpack(m)  # and the other way
    m.data[2, 3] = 0
    assert back[2, 3].item() == 0 and back.dtype == t.dtype
    capsule = dlpack.to_dlpack(m)
    assert "dltensor" in repr(capsule)
    np.testing.assert_array_equal(torch.utils.dlpack.from_dlpack(capsule).numpy(), m.numpy())
    assert m.__dlpack_device__() == tuple(int(v) for v in t.__dlpack_device__()) == (1, 0)


def test_dlpack_views_capsules_and_refusals():
    torch = pytest.importorskip("torch")
    base = minidl.arange(6.0).reshape(2, 3)
    view = base.T  # strided: exported with its strides, not copied
    t = torch.from_dlpack(view)
    assert t.shape == (3, 2) and t.stride() == (1, 3)
    t[0, 1] = -1.0
    assert base.numpy()[1, 0] == -1.0
    # a capsule is used once, as torch says
    capsule = torch.utils.dlpack.to_dlpack(torch.ones(2))
    np.testing.assert_array_equal(minidl.from_dlpack(capsule).numpy(), [1.0, 1.0])
    with pytest.raises(RuntimeError) as ours:
        minidl.from_dlpack(capsule)
    with pytest.raises(RuntimeError) as theirs:
        torch.from_dlpack(capsule)
    assert str(ours.value) == str(theirs.value)
    # a tensor that requires grad is refused, with torch's error
    with pytest.raises(BufferError) as ours:
        minidl.ones(2, requires_grad=True).__dlpack__()
    with pytest.raises(BufferError) as theirs:
        torch.ones(2, requires_grad=True).__dlpack__()
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(TypeError, match="from_dlpack: expected an object with __dlpack__"):
        minidl.from_dlpack(3)
    with pytest.raises(BufferError, match="bfloat16 tensor of shape"):
        minidl.ones(2, dtype=minidl.bfloat16).__dlpack__()


def test_dlpack_numpy_and_copies():
    a = np.arange(4.0)
    m = minidl.from_dlpack(a)
    a[0] = 9.0
    assert m.numpy()[0] == 9.0
    copied = minidl.from_dlpack(a, copy=True)
    a[1] = 7.0
    assert copied.numpy()[1] == 1.0
    same = minidl.from_dlpack(m, device="cpu")  # a minidl Tensor exports itself too
    m.data[3] = -3.0
    assert same.numpy()[3] == -3.0
    np.testing.assert_array_equal(np.from_dlpack(m), m.numpy())  # NumPy imports minidl's
    with pytest.raises(TypeError, match="to_dlpack: expected a minidl.Tensor"):
        dlpack.to_dlpack(a)


# ---- swap_tensors ---------------------------------------------------------------------------
def _swap_case(lib, swap):
    a = lib.ones(2, requires_grad=True)
    b = lib.zeros(3)
    a.grad = lib.full((2,), 5.0)
    a.note = "a's"
    swap(a, b)
    return (a.numpy().tolist(), a.requires_grad, a.grad, getattr(a, "note", None),
            b.detach().numpy().tolist(), b.requires_grad, b.grad.numpy().tolist(), b.note)


def test_swap_tensors_as_torch():
    torch = pytest.importorskip("torch")
    assert _swap_case(minidl, swap_tensors) == _swap_case(torch, torch.utils.swap_tensors)
    for lib, swap in ((minidl, swap_tensors), (torch, torch.utils.swap_tensors)):
        p, t = lib.nn.Parameter(lib.ones(2)), lib.zeros(2)
        swap(p, t)  # the class goes with the contents
        assert type(t) is lib.nn.Parameter and type(p) is lib.Tensor
        x = lib.ones(2)
        ref = weakref.ref(x)
        with pytest.raises(RuntimeError, match="Cannot swap t1 because it has weakref"):
            swap(x, lib.zeros(2))
        del ref
        x = lib.ones(2, requires_grad=True)
        y = x * x  # x is saved for backward: both refuse
        with pytest.raises(RuntimeError):
            swap(x, lib.zeros(2))
        y.sum().backward()  # the graph is freed: both swap now
        swap(x, lib.zeros(2))
        assert x.requires_grad is False and x.grad is None
    with pytest.raises(TypeError, match="expected t2 to be a minidl.Tensor"):
        swap_tensors(minidl.ones(2), 3)


def test_swapped_tensors_train():
    lin = nn.Linear(3, 2)
    old = lin.weight
    swap_tensors(lin.weight, nn.Parameter(minidl.zeros(2, 3)))  # torch's Module._apply idiom
    assert lin.weight is old and isinstance(old, nn.Parameter) and np.all(old.numpy() == 0)
    lin(minidl.ones(1, 3)).sum().backward()
    np.testing.assert_array_equal(lin.weight.grad.numpy(), np.ones((2, 3)))


# ---- amp.custom_fwd / custom_bwd -------------------------------------------------------------
def _custom_mm(lib, cast_inputs):
    """A custom matrix product under CPU autocast: its output dtype, the autocast state seen
    in forward and backward, the dtypes there, and the input's gradient."""
    amp, seen = lib.amp, {}
    enabled = amp.is_autocast_enabled if lib is minidl else lib.is_autocast_enabled

    class MM(lib.autograd.Function):
        @staticmethod
        @amp.custom_fwd(device_type="cpu", cast_inputs=cast_inputs)
        def forward(ctx, a, b):
            seen["fwd"] = enabled("cpu")
            seen["fwd_dtypes"] = (str(a.dtype), str(b.dtype))
            ctx.save_for_backward(a, b)
            return a.mm(b)

        @staticmethod
        @amp.custom_bwd(device_type="cpu")
        def backward(ctx, g):
            seen["bwd"] = enabled("cpu")
            a, b = ctx.saved_tensors
            ga, gb = g.mm(b.t()), a.t().mm(g)
            seen["bwd_dtypes"] = (str(ga.dtype), str(gb.dtype))
            return ga, gb

    rng = np.random.default_rng(0)
    a = lib.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    b = lib.tensor(rng.standard_normal((4, 2)).astype(np.float32), requires_grad=True)
    with lib.autocast("cpu", dtype=lib.bfloat16):
        y = MM.apply(a, b)
    y.float().sum().backward()
    seen = {k: tuple(s.replace("torch.", "") for s in v) if isinstance(v, tuple) else v
            for k, v in seen.items()}
    return str(y.dtype).replace("torch.", ""), seen, a.grad.numpy(), b.grad.numpy()


@pytest.mark.parametrize("cast", [None, "float32"])
def test_custom_fwd_bwd_as_torch(cast):
    torch = pytest.importorskip("torch")
    ours = _custom_mm(minidl, None if cast is None else minidl.float32)
    theirs = _custom_mm(torch, None if cast is None else torch.float32)
    assert ours[0] == theirs[0] and ours[1] == theirs[1]
    tol = 1e-2 if cast is None else 1e-5  # bfloat16 products: rounding may differ
    np.testing.assert_allclose(ours[2], theirs[2], rtol=tol, atol=tol)
    np.testing.assert_allclose(ours[3], theirs[3], rtol=tol, atol=tol)


def test_custom_fwd_outside_autocast_and_errors():
    torch = pytest.importorskip("torch")
    for lib in (minidl, torch):
        with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
            lib.amp.custom_fwd(device_type=None)
        with pytest.raises(TypeError):
            lib.amp.custom_fwd(lambda ctx, x: x)  # device_type is required
        calls = []
        fwd = lib.amp.custom_fwd(lambda ctx, x: calls.append(x.dtype) or x,
                                 device_type="cpu", cast_inputs=lib.float16)
        ctx = type("Ctx", (), {})()
        fwd(ctx, lib.ones(2))  # autocast off: no cast, and backward runs without it
        assert ctx._fwd_used_autocast is False and str(calls[0]).endswith("float32")
        with pytest.raises(AttributeError):
            lib.amp.custom_bwd(lambda ctx, g: g, device_type="cpu")(object(), 1)
    with pytest.warns(FutureWarning, match="custom_fwd"):
        minidl.cuda.amp.custom_fwd(lambda ctx, x: x)
    with pytest.warns(FutureWarning, match="custom_bwd"):
        minidl.cuda.amp.custom_bwd(lambda ctx, g: g)


def test_is_autocast_available_as_torch():
    torch = pytest.importorskip("torch")
    for name in ("cpu", "cuda", "meta"):
        assert minidl.amp.is_autocast_available(name) == torch.amp.is_autocast_available(name)
    assert minidl.amp.is_autocast_available("mps") is False  # minidl runs on CPUs and CUDA only
    with pytest.raises(RuntimeError, match="device type at start of device string: foo"):
        minidl.amp.is_autocast_available("foo")
    with pytest.raises(RuntimeError, match="device type at start of device string: foo"):
        torch.amp.is_autocast_available("foo")


# ---- the deprecated register_backward_hook ----------------------------------------------------
def _hooked_grads(lib, module, scale, create_graph=False):
    seen = []

    def hook(mod, grad_input, grad_output):
        seen.append(([None if g is None else g.detach().numpy().copy() for g in grad_input],
                     [g.detach().numpy().copy() for g in grad_output]))
        if scale is not None:
            return tuple(None if g is None else g * scale for g in grad_input)
        return None

    handle = module.register_backward_hook(hook)
    x = lib.tensor(np.array([-1.0, 0.5, 2.0]), requires_grad=True)
    y = module(x)
    (g,) = lib.autograd.grad((y * y).sum(), x, create_graph=create_graph)
    second = None
    if create_graph:
        (second,) = lib.autograd.grad(g.sum(), x)
        second = second.numpy()
    handle.remove()
    y2 = module(x)  # removed: no more calls
    y2.sum().backward()
    return seen, g.detach().numpy(), second


@pytest.mark.parametrize("make", ["Tanh", "Sigmoid", "ReLU"])
@pytest.mark.parametrize("scale", [None, 3.0])
def test_register_backward_hook_as_torch(make, scale):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch warns for a leaf input
        ours = _hooked_grads(minidl, getattr(nn, make)(), scale)
        theirs = _hooked_grads(torch, getattr(torch.nn, make)(), scale)
    assert len(ours[0]) == len(theirs[0]) == 1
    for (gi, go), (tgi, tgo) in zip(ours[0], theirs[0]):
        assert len(gi) == len(tgi) and len(go) == len(tgo)
        for a, b in zip(gi + go, tgi + tgo):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)


def test_register_backward_hook_double_backward_as_torch():
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ours = _hooked_grads(minidl, nn.Tanh(), 2.0, create_graph=True)
        theirs = _hooked_grads(torch, torch.nn.Tanh(), 2.0, create_graph=True)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-6)


def test_register_backward_hook_warnings_and_mixing():
    torch = pytest.importorskip("torch")
    for lib in (minidl, torch):
        seq = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.ReLU())
        seq.register_backward_hook(lambda m, gi, go: None)
        with pytest.warns(FutureWarning, match="forward contains multiple autograd Nodes"):
            out = seq(lib.ones(2, 3, requires_grad=True))
        out.sum().backward()
        relu = lib.nn.ReLU()
        relu.register_full_backward_hook(lambda m, gi, go: None)
        with pytest.raises(RuntimeError, match="Cannot use both regular backward hooks and full"):
            relu.register_backward_hook(lambda m, gi, go: None)
        relu = lib.nn.ReLU()
        relu.register_backward_hook(lambda m, gi, go: None)
        with pytest.raises(RuntimeError, match="Cannot use both regular backward hooks and full"):
            relu.register_full_backward_hook(lambda m, gi, go: None)
        relu = lib.nn.ReLU()
        relu.register_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
        with pytest.raises(RuntimeError, match="incorrect number of values"):
            relu(lib.ones(2, requires_grad=True) * 2).sum().backward()


# ---- Module.share_memory / compile ------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="shared memory is shared with forked children")
def test_share_memory_reaches_forked_processes():
    torch = pytest.importorskip("torch")
    tm = torch.nn.Linear(3, 2)
    assert tm.share_memory() is tm and tm.weight.is_shared()
    model = nn.Linear(3, 2)
    assert not model.weight.is_shared()
    assert model.share_memory() is model
    assert model.weight.is_shared() and model.bias.is_shared()
    pid = os.fork()
    if pid == 0:  # the child trains in place; the parent sees it
        with minidl.no_grad():
            model.weight.data[...] = 7.0
        os._exit(0)
    os.waitpid(pid, 0)
    assert np.all(model.weight.numpy() == 7.0)
    model(minidl.ones(1, 3)).sum().backward()  # still trains
    assert model.weight.grad is not None


def test_module_compile_runs_eagerly(monkeypatch):
    import importlib

    # Module.compile's once-per-process flag is nn/module.py's own (runtime's is
    # minidl.compile's): cleared here, the warning shows whichever file called it first
    monkeypatch.setattr(importlib.import_module("minidl.nn.module"), "_compile_warned", False)
    model = nn.Linear(3, 2)
    x = minidl.ones(1, 3)
    before = model(x).numpy()
    with pytest.warns(UserWarning, match="no graph compiler"):
        assert model.compile(mode="max-autotune") is None
    np.testing.assert_array_equal(model(x).numpy(), before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compile()  # once per process


# ---- optimizer state-dict hooks -----------------------------------------------------------------
def _state_dict_hooks(lib, make):
    p = lib.nn.Parameter(lib.ones(2))
    opt = make(lib, p)
    p.grad = lib.ones(2)
    opt.step()
    log = []
    h1 = opt.register_state_dict_pre_hook(lambda o: log.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: (log.append("post"), {**sd, "extra": 1})[1])
    opt.register_state_dict_pre_hook(lambda o: log.append("pre0"), prepend=True)
    sd = opt.state_dict()
    keys = sorted(sd)

    def load_pre(o, sd):
        log.append("load_pre")
        sd["param_groups"][0]["lr"] = 0.5
        sd.pop("extra", None)
        return sd

    opt.register_load_state_dict_pre_hook(load_pre)
    h4 = opt.register_load_state_dict_post_hook(lambda o: log.append("load_post"))
    opt.load_state_dict(sd)
    lr, kept = opt.param_groups[0]["lr"], "extra" in sd
    h1.remove()
    h4.remove()
    opt.load_state_dict(opt.state_dict())
    return log, keys, lr, kept


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_state_dict_hooks_as_torch(name):
    torch = pytest.importorskip("torch")

    def make(lib, p):
        if name == "SGD":
            return lib.optim.SGD([p], lr=0.1, momentum=0.9)
        return getattr(lib.optim, name)([p], lr=0.1)

    ours, theirs = _state_dict_hooks(minidl, make), _state_dict_hooks(torch, make)
    assert ours == theirs
    assert ours[0] == ["pre0", "pre", "post", "load_pre", "load_post", "pre0", "post",
                       "load_pre"]


def test_optimizer_hooks_must_be_callable():
    opt = minidl.optim.SGD([nn.Parameter(minidl.ones(1))], lr=0.1)
    with pytest.raises(TypeError, match="a hook must be callable"):
        opt.register_state_dict_post_hook(3)


# ---- testing.assert_allclose, autograd.Variable, DataLoader -------------------------------------
def test_assert_allclose_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (minidl, torch):
        with pytest.warns(FutureWarning, match="assert_allclose"):
            lib.testing.assert_allclose(lib.tensor([1.0, 2.0]), [1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for dtype in ("float16", "float32", "float64", "int64"):
            with pytest.raises(AssertionError) as ours:
                minidl.testing.assert_allclose(minidl.tensor([1, 2], dtype=dtype),
                                               minidl.tensor([1, 3], dtype=dtype))
            with pytest.raises(AssertionError) as theirs:
                torch.testing.assert_allclose(torch.tensor([1, 2], dtype=getattr(torch, dtype)),
                                              torch.tensor([1, 3], dtype=getattr(torch, dtype)))
            assert str(ours.value) == str(theirs.value)
        # dtypes are not compared, NaNs are equal by default
        minidl.testing.assert_allclose(minidl.tensor([1.0], dtype=minidl.float64),
                                       minidl.tensor([1.0]))
        minidl.testing.assert_allclose(minidl.tensor([float("nan")]), [float("nan")])
        minidl.testing.assert_allclose(minidl.tensor([1.0]), [1.05], rtol=0.1, atol=0.0)
        with pytest.raises(ValueError, match="Both 'rtol' and 'atol'"):
            minidl.testing.assert_allclose(minidl.tensor([1.0]), [1.0], rtol=0.1)


def test_variable_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (minidl, torch):
        Variable = lib.autograd.Variable
        t = lib.ones(2, requires_grad=True)
        v = Variable(t)
        assert v is not t and v.requires_grad is False and v.grad_fn is None
        assert isinstance(t, Variable) and isinstance(v, lib.Tensor)
        assert Variable(lib.ones(2), requires_grad=True).requires_grad is True
        assert Variable().shape == (0,) if lib is minidl else tuple(Variable().shape) == (0,)
        with pytest.raises(TypeError, match="Variable data has to be a tensor, but got list"):
            Variable([1.0])
    shared = minidl.autograd.Variable(t := minidl.ones(2))
    t.data[0] = 5.0
    assert shared.numpy()[0] == 5.0  # the same data, as torch's
    with pytest.warns(UserWarning, match="volatile was removed"):
        minidl.autograd.Variable(minidl.ones(1), volatile=True)


def test_dataloader_takes_multiprocessing_context():
    torch = pytest.importorskip("torch")
    data = minidl.data.TensorDataset(minidl.arange(4.0))
    loader = minidl.data.DataLoader(data, batch_size=2, num_workers=1,
                                    multiprocessing_context="spawn")
    assert loader.multiprocessing_context is not None
    with pytest.raises(ValueError, match="multiprocessing_context can only be used with"):
        minidl.data.DataLoader(data, multiprocessing_context="spawn")
    with pytest.raises(ValueError, match="multiprocessing_context can only be used with"):
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(4.0)),
                                    multiprocessing_context="spawn")
