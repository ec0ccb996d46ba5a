"""nn.EmbeddingBag(sparse=True) / F.embedding_bag(..., sparse=True): the weight's gradient
is a sparse COO tensor laid out as torch's (one entry per index in a bag, input order,
padding left out, uncoalesced), equal to the dense gradient, and taken by SparseAdam and SGD
as nn.Embedding(sparse=True)'s. Gradient checks run without torch; parity tests compare the
stored indices and values with torch 2.13's."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

WEIGHT = np.random.default_rng(0).standard_normal((7, 3))
INPUT_1D = np.array([1, 2, 4, 5, 4, 3, 2, 0, 6])
OFFSETS = np.array([0, 3, 3, 6])  # the second bag is empty

# (input, offsets, mode, padding_idx, per_sample_weights, include_last_offset)
CASES = {
    "sum 1-D": (INPUT_1D, OFFSETS, "sum", None, False, False),
    "mean 1-D": (INPUT_1D, OFFSETS, "mean", None, False, False),
    "sum padding": (INPUT_1D, OFFSETS, "sum", 2, False, False),
    "mean padding": (INPUT_1D, OFFSETS, "mean", 2, False, False),
    "sum weighted": (INPUT_1D, OFFSETS, "sum", None, True, False),
    "sum weighted padding": (INPUT_1D, OFFSETS, "sum", 4, True, False),
    "mean 2-D": (INPUT_1D[:8].reshape(2, 4), None, "mean", None, False, False),
    "sum 2-D padding": (INPUT_1D[:8].reshape(4, 2), None, "sum", 4, False, False),
    "mean last offset": (INPUT_1D, np.array([0, 3, 3, 6, 9]), "mean", None, False, True),
}


def _torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    return torch


def _run(ns, case, dtype=np.float32, upstream=None):
    inp, offsets, mode, padding_idx, weighted, last = case
    w = ns.tensor(WEIGHT.astype(dtype), requires_grad=True)
    psw = None
    if weighted:
        psw = ns.tensor(np.linspace(0.5, 2.0, inp.size).reshape(inp.shape).astype(dtype),
                        requires_grad=True)
    out = ns.nn.functional.embedding_bag(
        ns.tensor(inp), w, None if offsets is None else ns.tensor(offsets), mode=mode,
        sparse=True, per_sample_weights=psw, include_last_offset=last, padding_idx=padding_idx)
    g = np.random.default_rng(1).standard_normal(tuple(out.shape)).astype(dtype)
    out.backward(ns.tensor(g))
    return out, w, psw


@pytest.mark.parametrize("name", list(CASES))
def test_sparse_gradient_matches_torch(name):
    torch = _torch()
    (m_out, m_w, m_psw), (t_out, t_w, t_psw) = _run(minidl, CASES[name]), _run(torch, CASES[name])
    np.testing.assert_allclose(m_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-6, atol=1e-6)
    mg, tg = m_w.grad, t_w.grad
    assert mg.is_sparse and tg.is_sparse
    assert mg.is_coalesced() == tg.is_coalesced() and tuple(mg.shape) == tuple(tg.shape)
    np.testing.assert_array_equal(mg._indices().numpy(), tg._indices().numpy())
    np.testing.assert_allclose(mg._values().numpy(), tg._values().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mg.to_dense().numpy(), tg.to_dense().numpy(), rtol=1e-6, atol=1e-6)
    if m_psw is not None:
        np.testing.assert_allclose(m_psw.grad.numpy(), t_psw.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_sparse_gradient_equals_the_dense_one(name):
    inp, offsets, mode, padding_idx, weighted, last = CASES[name]
    grads = []
    for sparse in (True, False):
        w = minidl.tensor(WEIGHT.astype(np.float32), requires_grad=True)
        psw = None if not weighted else minidl.tensor(
            np.linspace(0.5, 2.0, inp.size).reshape(inp.shape).astype(np.float32), requires_grad=True)
        out = F.embedding_bag(minidl.tensor(inp), w, None if offsets is None else minidl.tensor(offsets),
                              mode=mode, sparse=sparse, per_sample_weights=psw,
                              include_last_offset=last, padding_idx=padding_idx)
        (out * minidl.tensor(np.arange(out.numel(), dtype=np.float32).reshape(out.shape))).sum().backward()
        assert w.grad.is_sparse is sparse
        grads.append((w.grad.to_dense().numpy() if sparse else w.grad.numpy(),
                      None if psw is None else psw.grad.numpy()))
    (sw, sp), (dw, dp) = grads
    np.testing.assert_allclose(sw, dw, rtol=1e-6, atol=1e-6)
    if sp is not None:
        np.testing.assert_allclose(sp, dp, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["sum padding", "mean 1-D", "sum weighted padding", "mean 2-D",
                                  "mean last offset"])
def test_gradcheck(name):
    """The sparse weight gradient (densified) against float64 central differences, entry by
    entry (minidl.testing.gradcheck reads dense gradients); per_sample_weights' gradient,
    dense, by gradcheck."""
    inp, offsets, mode, padding_idx, weighted, last = CASES[name]
    psw = None if not weighted else minidl.tensor(
        np.linspace(0.5, 2.0, inp.size).reshape(inp.shape), dtype=minidl.float64, requires_grad=True)
    proj = None

    def fn(weight, psw=psw):
        nonlocal proj
        out = F.embedding_bag(minidl.tensor(inp), weight,
                              None if offsets is None else minidl.tensor(offsets), mode=mode,
                              sparse=True, per_sample_weights=psw, include_last_offset=last,
                              padding_idx=padding_idx)
        if proj is None:
            proj = minidl.tensor(np.random.default_rng(2).standard_normal(tuple(out.shape)))
        return (out * proj).sum() + (out ** 2).sum()

    w = minidl.tensor(WEIGHT, dtype=minidl.float64, requires_grad=True)
    fn(w).backward()
    assert w.grad.is_sparse
    analytic = w.grad.to_dense().numpy()
    numeric = np.zeros_like(WEIGHT)
    for i in np.ndindex(WEIGHT.shape):
        step = np.zeros_like(WEIGHT)
        step[i] = 1e-6
        with minidl.no_grad():
            hi = fn(minidl.tensor(WEIGHT + step, dtype=minidl.float64)).item()
            lo = fn(minidl.tensor(WEIGHT - step, dtype=minidl.float64)).item()
        numeric[i] = (hi - lo) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)
    if padding_idx is not None:
        assert not analytic[padding_idx].any()
    if psw is not None:
        fixed = minidl.tensor(WEIGHT, dtype=minidl.float64)
        assert gradcheck(lambda p: fn(fixed, p), [psw])


def _train(ns, make_opt, mode, steps=4):
    bag = ns.nn.EmbeddingBag(7, 3, mode=mode, sparse=True, padding_idx=6)
    with ns.no_grad():
        bag.weight.copy_(ns.tensor(WEIGHT.astype(np.float32)))
    opt = make_opt(ns, bag.parameters())
    for step in range(steps):
        opt.zero_grad()
        inp = ns.tensor((INPUT_1D + step) % 7)
        (bag(inp, ns.tensor(OFFSETS)) ** 2).sum().backward()
        assert bag.weight.grad.is_sparse
        opt.step()
    return bag.weight.detach().numpy().copy()


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("name,make", [
    ("SparseAdam", lambda ns, p: ns.optim.SparseAdam(p, lr=0.1)),
    ("SGD momentum", lambda ns, p: ns.optim.SGD(p, lr=0.1, momentum=0.9)),
    ("Adagrad", lambda ns, p: ns.optim.Adagrad(p, lr=0.1)),
])
def test_optimizer_steps_equal_torchs(name, make, mode):
    torch = _torch()
    np.testing.assert_allclose(_train(minidl, make, mode), _train(torch, make, mode),
                               rtol=1e-5, atol=1e-6)


def test_module_trains_with_sparse_adam_without_torch():
    before = WEIGHT.astype(np.float32)
    after = _train(minidl, lambda ns, p: ns.optim.SparseAdam(p, lr=0.1), "mean", steps=1)
    touched = np.unique(INPUT_1D[(INPUT_1D != 6)])
    untouched = np.setdiff1d(np.arange(7), touched)
    assert np.all(np.any(after[touched] != before[touched], axis=1))
    np.testing.assert_array_equal(after[untouched], before[untouched])  # sparse update only


def test_max_mode_refuses_sparse_as_torch():
    w = minidl.tensor(WEIGHT.astype(np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="max mode does not support sparse weights"):
        F.embedding_bag(minidl.tensor(INPUT_1D), w, minidl.tensor(OFFSETS), mode="max", sparse=True)
    bag = nn.EmbeddingBag(7, 3, mode="max", sparse=True)  # torch refuses at the call, too
    with pytest.raises(ValueError, match="max mode does not support sparse weights"):
        bag(minidl.tensor(INPUT_1D), minidl.tensor(OFFSETS))


def test_double_backward_through_a_sparse_gradient_is_refused():
    w = minidl.tensor(WEIGHT, dtype=minidl.float64, requires_grad=True)
    out = F.embedding_bag(minidl.tensor(INPUT_1D), w, minidl.tensor(OFFSETS), mode="sum", sparse=True)
    (g,) = minidl.autograd.grad((out ** 2).sum(), w, create_graph=True)
    assert g.is_sparse
    with pytest.raises(RuntimeError):
        minidl.autograd.grad(g.to_dense().sum(), w)


def test_sparse_embedding_bag_on_the_fake_gpu(monkeypatch, host_kernels):
    import _fake_gpu

    results = {}
    for device in ("cpu", "cuda"):
        if device == "cuda":
            _fake_gpu.install(monkeypatch, host_kernels)
        bag = nn.EmbeddingBag(7, 3, mode="sum", sparse=True, padding_idx=2).to(device)
        with minidl.no_grad():
            bag.weight.copy_(minidl.tensor(WEIGHT.astype(np.float32), device=device))
        opt = minidl.optim.SparseAdam(bag.parameters(), lr=0.1)
        psw = minidl.tensor(np.linspace(0.5, 2.0, INPUT_1D.size).astype(np.float32),
                            device=device, requires_grad=True)
        out = bag(minidl.tensor(INPUT_1D, device=device), minidl.tensor(OFFSETS, device=device),
                  per_sample_weights=psw)
        (out ** 2).sum().backward()
        assert bag.weight.grad.is_sparse and bag.weight.grad.device == device
        grad = bag.weight.grad.to_dense().numpy()
        opt.step()
        results[device] = [out.detach().numpy(), grad, psw.grad.numpy(), bag.weight.detach().numpy()]
    for ours, cpu in zip(results["cuda"], results["cpu"]):
        np.testing.assert_allclose(ours, cpu, rtol=1e-6, atol=1e-7)
