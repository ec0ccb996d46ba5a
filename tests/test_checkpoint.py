"""minidl.utils.checkpoint: activation checkpointing with PyTorch's API and gradients."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.utils.checkpoint import checkpoint, checkpoint_sequential
from helpers import same

try:
    import torch
except ImportError:  # the tests that compare with torch skip themselves
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _mlp(dropout=0.0, dtype=minidl.float64, width=8, depth=3, batch_norm=False):
    minidl.manual_seed(0)
    layers = []
    for i in range(depth):
        layers.append(nn.Linear(width if i else 4, width, dtype=dtype))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width, dtype=dtype))
        layers.append(nn.Tanh())
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, 3, dtype=dtype))
    return nn.Sequential(*layers)


def _grads(model, run, x, seed=1):
    model.zero_grad()
    minidl.manual_seed(seed)
    loss = (run(model, x) ** 2).sum()
    loss.backward()
    return float(loss), [p.grad.numpy().copy() for p in model.parameters()]


def _same(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    for ga, gb in zip(a[1], b[1], strict=True):
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_checkpoint_gives_the_plain_gradients(dropout):
    """Dropout's masks are drawn again alike (the random state is put back for the recompute)."""
    model = _mlp(dropout)
    x = minidl.randn(6, 4, dtype=minidl.float64)
    _same(_grads(model, lambda m, x: m(x), x), _grads(model, lambda m, x: checkpoint(m, x), x))
    _same(_grads(model, lambda m, x: m(x), x),
          _grads(model, lambda m, x: checkpoint_sequential(m, 3, x), x))


def test_parameters_get_gradients_when_no_input_requires_grad_and_inputs_do_when_they_do():
    model = _mlp()
    x = minidl.randn(5, 4, dtype=minidl.float64)
    checkpoint(model, x).sum().backward()
    assert all(p.grad is not None and np.abs(p.grad.numpy()).sum() > 0
               for p in model.parameters())
    xr = x.clone().requires_grad_()
    model(xr).sum().backward()
    expected = xr.grad.numpy().copy()
    xc = x.clone().requires_grad_()
    checkpoint(model, xc).sum().backward()
    np.testing.assert_allclose(xc.grad.numpy(), expected, rtol=1e-12)


def test_gradcheck_through_a_checkpoint_with_two_outputs_and_kwargs():
    w = minidl.randn(3, 3, dtype=minidl.float64, requires_grad=True)

    def f(a, b, scale=1.0):
        h = (a @ w).tanh()
        return h * b * scale, (h + b).sigmoid()

    a = minidl.randn(2, 3, dtype=minidl.float64, requires_grad=True)
    b = minidl.randn(2, 3, dtype=minidl.float64, requires_grad=True)

    def loss(a, b):
        u, v = checkpoint(f, a, b, scale=2.0)
        return (u * v).sum() + u.sum()

    from minidl.testing import gradcheck
    assert gradcheck(loss, (a, b))
    w.grad = None
    u, v = checkpoint(f, a, b, scale=2.0)
    ((u * v).sum() + u.sum()).backward()
    got = w.grad.numpy().copy()
    w.grad = None
    u, v = f(a, b, scale=2.0)
    ((u * v).sum() + u.sum()).backward()
    np.testing.assert_allclose(got, w.grad.numpy(), rtol=1e-12)


def test_an_output_left_out_of_the_loss_takes_no_gradient():
    w = minidl.randn(3, dtype=minidl.float64, requires_grad=True)
    x = minidl.randn(3, dtype=minidl.float64)
    u, v = checkpoint(lambda x: (x * w, (x * w).exp()), x)
    v.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), (x * w).exp().numpy() * x.numpy(), rtol=1e-12)


def test_nested_checkpoints_and_no_grad():
    model = _mlp()
    x = minidl.randn(4, 4, dtype=minidl.float64)
    inner = lambda m, x: checkpoint(lambda y: checkpoint(m[0], y) * 2, x)  # noqa: E731
    a = _grads(model, lambda m, x: m[1:](inner(m, x)), x)
    b = _grads(model, lambda m, x: m[1:](m[0](x) * 2), x)
    _same(a, b)
    with minidl.no_grad():
        out = checkpoint(model, x)
    assert out.grad_fn is None and not out.requires_grad


def test_autocast_state_is_the_same_in_the_recompute():
    model = _mlp(dtype=minidl.float32)
    x = minidl.randn(4, 4)

    def run(wrap):
        model.zero_grad()
        with minidl.autocast("cpu", dtype=minidl.bfloat16):
            out = wrap(x)
        out.float().sum().backward()
        return [p.grad.numpy().copy() for p in model.parameters()]

    for a, b in zip(run(model), run(lambda x: checkpoint(model, x)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_keeps_a_fraction_of_the_activations():
    """Eight 512-wide layers on a batch of 512: the plain graph keeps every activation, four
    checkpointed segments keep about a quarter of them."""
    model = _mlp(dtype=minidl.float32, width=512, depth=8)
    x = minidl.randn(512, 4)

    def held(run):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        out = run(x)
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        out.sum().backward()
        return kept

    plain = held(model)
    segments = held(lambda x: checkpoint_sequential(model, 4, x))
    assert segments < 0.5 * plain, (segments, plain)


def test_the_recompute_must_compute_the_same_shapes():
    calls = []

    def changing(x):
        calls.append(1)
        return x[: len(calls)] * 2

    x = minidl.randn(4, requires_grad=True)
    out = checkpoint(changing, x)
    with pytest.raises(RuntimeError, match="must compute the same thing both times"):
        out.sum().backward()


@pytest.mark.parametrize("bad, kind, words", [
    (lambda x: x.numpy(), TypeError, "must return a Tensor or a tuple of Tensors"),
    (3, TypeError, "function must be callable"),
])
def test_bad_functions_are_refused(bad, kind, words):
    with pytest.raises(kind, match=words):
        checkpoint(bad, minidl.randn(2, requires_grad=True))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="use_reentrant"):
        checkpoint(lambda x: x, minidl.randn(2), use_reentrant="yes")
    with pytest.raises(ValueError, match="segments must be a positive integer"):
        checkpoint_sequential(_mlp(), 0, minidl.randn(2, 4, dtype=minidl.float64))


def test_backward_twice_needs_retain_graph_as_elsewhere():
    model = _mlp()
    x = minidl.randn(3, 4, dtype=minidl.float64)
    loss = checkpoint(model, x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    loss = checkpoint(model, x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="freed|a second time"):
        loss.backward()


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_torch_parity_gradients_and_batch_norm_statistics(use_reentrant):
    """PyTorch's checkpoint on the same weights: the same gradients, and BatchNorm's running
    statistics updated on both runs as there."""
    torch = pytest.importorskip("torch", reason="the reference is torch.utils.checkpoint")
    import torch.utils.checkpoint as tcp

    model = _mlp(batch_norm=True)
    ref = torch.nn.Sequential(*[
        torch.nn.Linear(m.in_features, m.out_features, dtype=torch.float64)
        if isinstance(m, nn.Linear) else torch.nn.BatchNorm1d(m.num_features, dtype=torch.float64)
        if isinstance(m, nn.BatchNorm1d) else torch.nn.Tanh() for m in model])
    ref.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in
                         model.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((6, 4))
    xt = torch.tensor(x, requires_grad=True)
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    (tcp.checkpoint_sequential(ref, 2, xt, use_reentrant=use_reentrant) ** 2).sum().backward()
    (checkpoint_sequential(model, 2, xm, use_reentrant=use_reentrant) ** 2).sum().backward()
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-10)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)  # a bias before BatchNorm: zero, to rounding
    ours, theirs = model.state_dict(), ref.state_dict()
    for key in ours:
        np.testing.assert_allclose(np.asarray(ours[key].numpy(), dtype=np.float64),
                                   theirs[key].numpy(), rtol=1e-10, err_msg=key)


def _dropout_replay_on_cuda():
    """On CUDA the recompute draws CuPy's dropout masks from a generator forked for it; the
    gradients equal those of a plain run that drew the same masks."""
    from minidl import backend

    model = _mlp(dropout=0.5, dtype=minidl.float32).to("cuda")
    x = minidl.randn(6, 4, device="cuda")
    model.zero_grad()
    minidl.manual_seed(3)
    out = checkpoint(model, x)
    first = out.numpy().copy()
    (out ** 2).sum().backward()
    ours = [p.grad.numpy().copy() for p in model.parameters()]
    cupy = backend.get_array_module(x.data)
    minidl.manual_seed(3)
    seed = int(backend.rng().integers(0, 2**63 - 1))  # what checkpoint drew for its fork
    previous = cupy.random.get_random_state()
    cupy.random.set_random_state(cupy.random.RandomState(seed))
    model.zero_grad()
    plain = model(x)
    cupy.random.set_random_state(previous)
    np.testing.assert_array_equal(plain.numpy(), first)
    (plain ** 2).sum().backward()
    for a, b in zip(ours, [p.grad.numpy() for p in model.parameters()], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_checkpoint_with_dropout_on_the_fake_gpu(monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    _dropout_replay_on_cuda()


@pytest.mark.skipif(not minidl.cuda_available(),
                    reason="needs CuPy and an NVIDIA GPU (CuPy not installed or no GPU found)")
def test_checkpoint_with_dropout_on_cuda():
    _dropout_replay_on_cuda()


# ---- checkpoint against torch's: closures, mixed and nested outputs, custom functions (an audit) ----
def _checkpoint_grads(L, cp, fn_of):
    rng = np.random.default_rng(3)
    w1, w2, xs = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((5, 3))
    if L is torch:
        W1, W2, x = (torch.tensor(a, requires_grad=True) for a in (w1, w2, xs))
    else:
        W1, W2, x = (minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in (w1, w2, xs))
    out = fn_of(L, cp, W1, W2, x)
    out.sum().backward()
    return [out] + [t.grad for t in (W1, W2, x)]


@needs_torch
@pytest.mark.parametrize("fn_of", [
    # h, computed before the checkpoint from x and W1, is read by the checkpointed function
    lambda L, cp, W1, W2, x: (lambda h: cp(lambda a: (a @ W1).tanh() @ W2 * h.sum(), x,
                                           use_reentrant=False))((x @ W1).sin()),
    # a tuple output with a non-Tensor value in it
    lambda L, cp, W1, W2, x: cp(lambda a: ((a @ W1) @ W2, 2.0), x, use_reentrant=False)[0] * 2,
])
def test_checkpoint_matches_torch_with_closures_and_mixed_outputs(fn_of):
    from torch.utils.checkpoint import checkpoint as tcp

    from minidl.utils.checkpoint import checkpoint as mcp

    mine = _checkpoint_grads(minidl, mcp, fn_of)
    theirs = _checkpoint_grads(torch, tcp, fn_of)
    for what, a, b in zip(("out", "W1", "W2", "x"), mine, theirs):
        same(a, b, what)


@needs_torch
def test_checkpoint_keeps_non_tensor_values_of_its_output():
    from minidl.utils.checkpoint import checkpoint as mcp

    x = minidl.ones(2, requires_grad=True)
    y, tag, z = mcp(lambda a: (a * 3, "tag", a * a), x, use_reentrant=False)
    assert tag == "tag"
    (y.sum() + z.sum()).backward()
    assert x.grad.numpy().tolist() == [5.0, 5.0]


@needs_torch
def test_checkpoint_through_a_custom_function_with_two_outputs():
    from minidl.utils.checkpoint import checkpoint as mcp

    class Two(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2, a * 3

        @staticmethod
        def backward(ctx, g1, g2):
            return g1 * 2 + g2 * 3

    w = minidl.tensor([1.0, 2.0], requires_grad=True)
    x = minidl.tensor([3.0, 4.0], requires_grad=True)

    def f(a):
        u, v = Two.apply(a * w)
        return (u * v).sum()

    f(x).backward()
    want = (x.grad.numpy().copy(), w.grad.numpy().copy())
    x.grad = w.grad = None
    mcp(f, x, use_reentrant=False).backward()
    np.testing.assert_allclose(x.grad.numpy(), want[0])
    np.testing.assert_allclose(w.grad.numpy(), want[1])


@needs_torch
def test_checkpoint_returns_dicts_and_nested_outputs():
    from torch.utils.checkpoint import checkpoint as tcp

    from minidl.utils.checkpoint import checkpoint as mcp

    def fn_of(L, cp, W1, W2, x):
        out = cp(lambda a: {"y": (a @ W1).tanh(), "rest": [a @ W1 @ W2, "note"]}, x,
                 use_reentrant=False)
        assert out["rest"][1] == "note"
        return out["y"].sum() + (out["rest"][0] ** 2).sum()

    for what, a, b in zip(("out", "W1", "W2", "x"), _checkpoint_grads(minidl, mcp, fn_of),
                          _checkpoint_grads(torch, tcp, fn_of)):
        same(a, b, what)
# ---- misuse: reentrant checkpoint's keyword arguments, checkpoint_sequential's functions ------

def test_checkpoint_reentrant_refuses_keyword_arguments():
    from minidl.utils.checkpoint import checkpoint

    x = minidl.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: scale"):
        checkpoint(lambda t, scale=1: t * scale, x, use_reentrant=True, scale=3)
    out = checkpoint(lambda t, scale=1: t * scale, x, use_reentrant=False, scale=3)
    out.sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_checkpoint_sequential_names_a_bad_functions_argument():
    from minidl.utils.checkpoint import checkpoint_sequential

    x = minidl.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="functions must be an nn.Sequential .* got int"):
        checkpoint_sequential(5, 1, x, use_reentrant=False)
    with pytest.raises(TypeError, match=r"functions\[1\] is a str"):
        checkpoint_sequential([minidl.nn.ReLU(), "relu"], 1, x, use_reentrant=False)
