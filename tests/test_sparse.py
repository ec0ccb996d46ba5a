"""Sparse COO tensors (minidl.sparse): construction, coalesce, conversions, sparse.mm / addmm /
sum / softmax and their gradients (layouts as torch 2.13's), nn.Embedding(sparse=True) with
SGD / SparseAdam / Adagrad, a GCN layer, and the errors for bad input. Gradient checks run
without torch; the parity tests compare with torch on the same inputs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck, gradgradcheck

INDICES = [[0, 1, 1, 0, 2], [2, 0, 2, 2, 1]]  # (0, 2) twice: an uncoalesced tensor
VALUES = [3.0, 4.0, 5.0, 1.0, -2.0]


def _torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    return torch


def _sparse(ns, dtype=None, requires_grad=False, values=VALUES):
    dtype = getattr(ns, np.dtype(dtype or np.float32).name)
    return ns.sparse_coo_tensor(ns.tensor(INDICES), ns.tensor(values, dtype=dtype), (3, 3),
                                requires_grad=requires_grad)


def _same_sparse(ours, theirs, atol=1e-6):
    """Same layout, pattern (as stored) and values."""
    assert ours.is_sparse and theirs.is_sparse
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert ours.is_coalesced() == theirs.is_coalesced()
    np.testing.assert_array_equal(ours._indices().numpy(), theirs._indices().numpy())
    np.testing.assert_allclose(ours._values().numpy(), theirs._values().detach().numpy(),
                               atol=atol, rtol=1e-5)


def _same_dense_meaning(ours, theirs, atol=1e-6):
    assert ours.is_sparse == theirs.is_sparse
    np.testing.assert_allclose(ours.to_dense().numpy(), theirs.to_dense().detach().numpy(),
                               atol=atol, rtol=1e-5)


# ---- construction, printing, parts --------------------------------------------------------
def test_repr_matches_torch_character_for_character():
    torch = _torch()
    cases = [
        lambda ns: _sparse(ns),
        lambda ns: _sparse(ns, np.float64, requires_grad=True),
        lambda ns: _sparse(ns).coalesce(),
        lambda ns: ns.sparse_coo_tensor(ns.tensor([[0, 1]]), ns.tensor([1, 2]), (3,)),
        lambda ns: ns.sparse_coo_tensor(ns.zeros(2, 0, dtype=ns.int64), ns.tensor([]), (3, 3)),
        lambda ns: ns.sparse_coo_tensor(ns.tensor([[0, 2, 0]]),
                                        ns.tensor([[1., 2.], [3., 4.], [5., 6.]]), (3, 2)),
        lambda ns: ns.tensor([[0., 2.5], [0, 0], [3, 0]]).to_sparse(),
        lambda ns: ns.sparse.softmax(_sparse(ns, requires_grad=True), 1),
    ]
    for make in cases:
        theirs = repr(make(torch)).replace("torch.", "minidl.").replace("Backward0>", "Backward>")
        assert repr(make(minidl)) == theirs


def test_parts_and_properties_match_torch():
    torch = _torch()
    for ns in (minidl, torch):
        s = _sparse(ns)
        assert s.is_sparse and not ns.ones(2).is_sparse
        assert s.sparse_dim() == 2 and s.dense_dim() == 0 and s._nnz() == 5
        assert tuple(s.shape) == (3, 3) and s.dim() == 2 and s.numel() == 9
        assert not s.is_coalesced() and s.coalesce().is_coalesced()
        with pytest.raises(RuntimeError, match="Cannot get indices on an uncoalesced tensor"):
            s.indices()
        with pytest.raises(RuntimeError, match="Cannot get values on an uncoalesced tensor"):
            s.values()
    assert minidl.ones(2).layout is minidl.strided and _sparse(minidl).layout is minidl.sparse_coo
    assert repr(minidl.sparse_coo) == "minidl.sparse_coo" and repr(minidl.strided) == "minidl.strided"
    assert _sparse(minidl).dtype == np.float32 and _sparse(minidl).device == "cpu"


def test_coalesce_sorts_and_sums_repeats_as_torch():
    torch = _torch()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, size=(2, 30))
    vals = rng.standard_normal(30).astype(np.float32)
    ours = minidl.sparse_coo_tensor(minidl.tensor(idx), minidl.tensor(vals), (4, 4))
    theirs = torch.sparse_coo_tensor(torch.tensor(idx), torch.tensor(vals), (4, 4))
    _same_sparse(ours.coalesce(), theirs.coalesce())
    np.testing.assert_array_equal(ours.coalesce().indices().numpy(),
                                  theirs.coalesce().indices().numpy())
    _same_dense_meaning(ours, theirs)
    c = ours.coalesce()
    assert c.coalesce() is c  # a coalesced tensor is its own coalesce(), as torch's


def test_hybrid_tensor_to_dense_coalesce_and_to_sparse():
    torch = _torch()
    for make in (lambda ns: ns.sparse_coo_tensor(ns.tensor([[0, 2, 0]]),
                                                  ns.tensor([[1., 2.], [3., 4.], [5., 6.]])),
                 lambda ns: ns.tensor([[0., 2.], [0, 0], [3, 0]]).to_sparse(1)):
        ours, theirs = make(minidl), make(torch)
        assert ours.sparse_dim() == theirs.sparse_dim() == 1 and ours.dense_dim() == 1
        _same_sparse(ours.coalesce(), theirs.coalesce())
        _same_dense_meaning(ours, theirs)


def test_to_sparse_and_inferred_size_as_torch():
    torch = _torch()
    x = np.array([[0., 2., 0.], [0., 0., 0.], [-1., 0., 7.]], dtype=np.float32)
    _same_sparse(minidl.tensor(x).to_sparse(), torch.tensor(x).to_sparse())
    _same_sparse(minidl.tensor(x).to_sparse_coo(), torch.tensor(x).to_sparse_coo())
    ours = minidl.sparse_coo_tensor([[0, 4], [1, 0]], [1.0, 2.0])
    theirs = torch.sparse_coo_tensor([[0, 4], [1, 0]], [1.0, 2.0])
    assert tuple(ours.shape) == tuple(theirs.shape) == (5, 2)
    assert ours.to_dense().to_dense() is not None  # a dense tensor's to_dense is itself
    d = minidl.ones(2)
    assert d.to_dense() is d and d.sparse_dim() == 0 and d.dense_dim() == 1


def test_t_mul_div_neg_add_and_dtype_as_torch():
    torch = _torch()
    weights = np.arange(9, dtype=np.float32).reshape(3, 3)
    for op in (lambda s: s.t(), lambda s: s * 2.5, lambda s: 3 * s, lambda s: s.mul(2),
               lambda s: s / 4, lambda s: -s, lambda s: s + s.coalesce(), lambda s: s.double(),
               lambda s: s.clone()):
        results = []
        for ns in (minidl, torch):
            s = _sparse(ns, requires_grad=True)
            out = op(s)
            (out.to_dense() * ns.tensor(weights, dtype=out.dtype)).sum().backward()
            results.append((out, s.grad))
        (ours, o_grad), (theirs, t_grad) = results
        _same_dense_meaning(ours, theirs)
        assert ours.dtype == np.dtype(str(theirs.dtype).replace("torch.", ""))
        _same_dense_meaning(o_grad, t_grad)  # the gradient: sparse, as torch's
    _same_sparse(_sparse(minidl).t(), _sparse(torch).t())


# ---- products and their gradients ----------------------------------------------------------
def _mm_case(ns, fn, seed=0):
    rng = np.random.default_rng(seed)
    d = ns.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    s = _sparse(ns, requires_grad=True)
    out = fn(ns, s, d)
    out.backward(ns.tensor(rng.standard_normal(tuple(out.shape)).astype(np.float32)))
    return out, s.grad, d.grad


@pytest.mark.parametrize("name,fn", [
    ("sparse.mm", lambda ns, s, d: ns.sparse.mm(s, d)),
    ("sparse.addmm", lambda ns, s, d: ns.sparse.addmm(ns.ones(3, 4), s, d, beta=0.5, alpha=2.0)),
    ("mm", lambda ns, s, d: ns.mm(s, d)),
    ("matmul", lambda ns, s, d: ns.matmul(s, d)),
    ("@", lambda ns, s, d: s @ d),
    ("to_dense", lambda ns, s, d: s.to_dense() @ d),
    ("coalesce values", lambda ns, s, d: (s.coalesce().values() * 2).sum() + d.sum()),
    ("gcn", lambda ns, s, d: ns.sparse.mm(s, d).relu() @ d.t()),
])
def test_products_and_gradients_match_torch(name, fn):
    torch = _torch()
    o_out, o_gs, o_gd = _mm_case(minidl, fn)
    t_out, t_gs, t_gd = _mm_case(torch, fn)
    np.testing.assert_allclose(o_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-5,
                               atol=1e-5)
    assert o_gs.is_sparse == t_gs.is_sparse  # sparse.mm: sparse; mm / @: dense, as torch's
    if t_gs.is_sparse:
        _same_sparse(o_gs, t_gs, atol=1e-5)
    else:
        np.testing.assert_allclose(o_gs.numpy(), t_gs.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(o_gd.numpy(), t_gd.numpy(), rtol=1e-5, atol=1e-5)


def test_addmm_with_beta_zero_does_not_read_its_input_as_torch():
    torch = _torch()
    results = []
    for ns in (minidl, torch):
        mat = ns.tensor(np.full((3, 2), np.nan, np.float32), requires_grad=True)
        out = ns.sparse.addmm(mat, _sparse(ns), ns.ones(3, 2), beta=0.0)
        out.sum().backward()
        results.append((out.detach().numpy(), mat.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


def test_gradient_reaches_values_through_sparse_coo_tensor_as_torch():
    torch = _torch()
    grads = []
    for ns in (minidl, torch):
        v = ns.tensor(np.array(VALUES, np.float32), requires_grad=True)
        s = ns.sparse_coo_tensor(ns.tensor(INDICES), v, (3, 3))
        assert s.requires_grad and not s.is_leaf
        ns.sparse.mm(s, ns.arange(6.).reshape(3, 2)).pow(2).sum().backward()
        grads.append(v.grad.numpy())
    np.testing.assert_allclose(*grads, rtol=1e-6)


def test_to_sparse_gives_a_dense_input_a_dense_gradient_as_torch():
    torch = _torch()
    x = np.array([[0., 2.], [0, 0], [3, 0]], np.float32)
    grads = []
    for ns in (minidl, torch):
        t = ns.tensor(x, requires_grad=True)
        ns.sparse.mm(t.to_sparse(), ns.ones(2, 2)).sum().backward()
        grads.append(t.grad.numpy())
    np.testing.assert_array_equal(*grads)


def test_hspmm_and_smm_as_torch():
    torch = _torch()
    d = np.arange(6, dtype=np.float32).reshape(3, 2)
    ours = minidl.hspmm(_sparse(minidl), minidl.tensor(d))
    theirs = torch.hspmm(_sparse(torch), torch.tensor(d))
    _same_sparse(ours, theirs)
    _same_dense_meaning(minidl.smm(_sparse(minidl), minidl.tensor(d)),
                        torch.smm(_sparse(torch), torch.tensor(d)))


# ---- reductions and softmax --------------------------------------------------------------------
@pytest.mark.parametrize("dim", [None, 0, 1, (0, 1), -1])
def test_sparse_sum_and_gradient_as_torch(dim):
    torch = _torch()
    results = []
    for ns in (minidl, torch):
        s = _sparse(ns, requires_grad=True)
        out = ns.sparse.sum(s) if dim is None else ns.sparse.sum(s, dim)
        (out.to_dense() * ns.arange(1., 1 + out.numel()).reshape(tuple(out.shape))).sum() \
            .backward()
        results.append((out, s.grad))
    (o_out, o_g), (t_out, t_g) = results
    assert o_out.is_sparse == t_out.is_sparse
    _same_dense_meaning(o_out, t_out) if t_out.is_sparse else np.testing.assert_allclose(
        o_out.detach().numpy(), t_out.detach().numpy())
    _same_sparse(o_g, t_g)


def test_sparse_sum_over_a_dense_dim_of_a_hybrid_tensor_as_torch():
    torch = _torch()
    outs = []
    for ns in (minidl, torch):
        s = ns.sparse_coo_tensor(ns.tensor([[0, 2, 0]]),
                                 ns.tensor([[1., 2.], [3., 4.], [5., 6.]]), (3, 2))
        outs.append((ns.sparse.sum(s, 1), ns.sparse.sum(s, 0)))
    _same_dense_meaning(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1].numpy(), outs[1][1].numpy())


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dim", [0, 1])
def test_sparse_softmax_over_specified_entries_as_torch(log, dim):
    torch = _torch()
    rng = np.random.default_rng(dim)
    weights = rng.standard_normal((3, 3)).astype(np.float32)
    results = []
    for ns in (minidl, torch):
        s = _sparse(ns, requires_grad=True)
        fn = ns.sparse.log_softmax if log else ns.sparse.softmax
        out = fn(s, dim)
        (out.to_dense() * ns.tensor(weights)).sum().backward()
        results.append((out, s.grad))
    (o_out, o_g), (t_out, t_g) = results
    _same_sparse(o_out, t_out)
    _same_sparse(o_g, t_g, atol=1e-5)
    assert o_out.grad_fn.name() == t_out.grad_fn.name().rstrip("0")


# ---- gradient checks (float64, no torch) ----------------------------------------------------
def _with_values(fn):
    """fn of the sparse tensor built from differentiable values (and the other inputs)."""
    idx = minidl.tensor(INDICES)
    return lambda v, *rest: fn(minidl.sparse_coo_tensor(idx, v, (3, 3)), *rest)


GRADCHECKS = {
    "sparse.mm": (lambda s, d: minidl.sparse.mm(s, d), True),
    "mm": (lambda s, d: minidl.mm(s, d), True),
    "addmm": (lambda s, d: minidl.sparse.addmm(d * d, s, d, beta=0.3, alpha=1.7), True),
    "to_dense": (lambda s, d: s.to_dense() * d[:, :3], True),
    "t": (lambda s, d: s.t().to_dense() * d[:, :3], True),
    "mul": (lambda s, d: (s * 3.0).to_dense() + d[:, :3], True),
    "add": (lambda s, d: minidl.sparse.mm(s + s.coalesce(), d), True),
    "values": (lambda s, d: s.coalesce().values() * d[0], True),
    "sum": (lambda s, d: minidl.sparse.sum(s, 1).to_dense() * d[:, 0], True),
    "sum all": (lambda s, d: minidl.sparse.sum(s) * d[0, 0], True),
    "softmax": (lambda s, d: minidl.sparse.softmax(s, 1).to_dense() * d[:, :3], True),
    "log_softmax": (lambda s, d: minidl.sparse.log_softmax(s, 0).to_dense() * d[:, :3], True),
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_gradcheck(name):
    fn, _ = GRADCHECKS[name]
    rng = np.random.default_rng(1)
    v = minidl.tensor(rng.standard_normal(5), dtype=minidl.float64, requires_grad=True)
    d = minidl.tensor(rng.standard_normal((3, 4)), dtype=minidl.float64, requires_grad=True)
    assert gradcheck(_with_values(fn), [v, d])


def test_gradcheck_of_to_sparse_and_of_a_sparse_leaf():
    rng = np.random.default_rng(2)
    x = minidl.tensor(rng.standard_normal((3, 3)) * (rng.random((3, 3)) > 0.4),
                      dtype=minidl.float64, requires_grad=True)
    d = minidl.tensor(rng.standard_normal((3, 2)), dtype=minidl.float64, requires_grad=True)
    # mm's dense gradient: sparse.mm's sparse one is 0 off the pattern, which finite
    # differences of entries that are 0 do not see (torch's to_sparse does the same)
    assert gradcheck(lambda x, d: minidl.mm(x.to_sparse(), d), [x, d])
    # a sparse leaf's gradient: its values' finite differences, entry by entry
    s = _sparse(minidl, np.float64, requires_grad=True)
    out = minidl.sparse.mm(s, d.detach())
    proj = rng.standard_normal(tuple(out.shape))
    (out * minidl.tensor(proj)).sum().backward()
    c = s.detach().coalesce()
    base = c.values().numpy()
    for k in range(len(base)):
        step = np.zeros_like(base)
        step[k] = 1e-6

        def f(vals):
            t = minidl.sparse_coo_tensor(c.indices(), minidl.tensor(vals, dtype=minidl.float64),
                                         (3, 3))
            return float((minidl.sparse.mm(t, d.detach()).numpy() * proj).sum())
        numeric = (f(base + step) - f(base - step)) / 2e-6
        assert abs(s.grad.coalesce().values().numpy()[k] - numeric) < 1e-5


@pytest.mark.parametrize("name", ["sparse.mm", "mm", "to_dense", "sum", "sum all", "values",
                                  "mul", "t", "clone", "to_sparse", "addmm"])
def test_gradgradcheck(name):
    rng = np.random.default_rng(3)
    idx = minidl.tensor(INDICES)
    v = minidl.tensor(rng.standard_normal(5), dtype=minidl.float64, requires_grad=True)
    d = minidl.tensor(rng.standard_normal((3, 2)), dtype=minidl.float64, requires_grad=True)
    fns = {"sparse.mm": lambda s, d: minidl.sparse.mm(s, d) * d.sum(),
           "mm": lambda s, d: (s @ d) ** 2,
           "to_dense": lambda s, d: (s.to_dense() @ d) ** 2,
           "sum": lambda s, d: minidl.sparse.sum(s, 0).to_dense() ** 2 * d[:, 0],
           "sum all": lambda s, d: minidl.sparse.sum(s) ** 2 * d,
           "values": lambda s, d: s.coalesce().values() ** 2 * d[0, 0],
           "mul": lambda s, d: minidl.sparse.mm(s * 3.0, d) ** 2,
           "t": lambda s, d: minidl.sparse.mm(s.t(), d) ** 2,
           "clone": lambda s, d: minidl.sparse.mm(s.clone(), d) ** 2,
           "to_sparse": lambda s, d: minidl.sparse.mm((s.to_dense() * 2).to_sparse(), d) ** 2,
           "addmm": lambda s, d: minidl.sparse.addmm(d * d, s, d, alpha=0.5) ** 2}
    fn = fns[name]
    assert gradgradcheck(lambda v, d: fn(minidl.sparse_coo_tensor(idx, v, (3, 3)), d), [v, d])


# ---- sparse embeddings and optimizers -------------------------------------------------------
def test_embedding_sparse_gradient_as_torch():
    torch = _torch()
    w = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    idx = np.array([[0, 2, 0], [1, 4, 2]])
    grads = []
    for ns in (minidl, torch):
        e = ns.nn.Embedding(6, 3, sparse=True, padding_idx=1)
        with ns.no_grad():
            e.weight.copy_(ns.tensor(w))
        e(ns.tensor(idx)).pow(2).sum().backward()
        first = e.weight.grad
        assert repr(e) == "Embedding(6, 3, padding_idx=1, sparse=True)"
        grads.append([first._indices().numpy().copy(), first._values().numpy().copy()])
        ns.nn.functional.embedding(ns.tensor([5, 3]), e.weight, sparse=True).sum().backward()
        assert e.weight.grad is first and e.weight.grad._nnz() == 7  # appended in place
        grads[-1].append(e.weight.grad.to_dense().numpy())
        (e.weight * 2).sum().backward()  # a dense gradient on top: dense, as torch's
        assert not e.weight.grad.is_sparse
        grads[-1].append(e.weight.grad.numpy())
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def _train(ns, make_opt, steps=4, sparse=True):
    w = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    e = ns.nn.Embedding(7, 3, sparse=sparse)
    with ns.no_grad():
        e.weight.copy_(ns.tensor(w))
    opt = make_opt(ns, e.parameters())
    for step in range(steps):
        opt.zero_grad()
        idx = ns.tensor(np.array([[0, 2, 0], [1, 4, 2]]) + step % 3)
        (e(idx) ** 2).sum().backward()
        opt.step()
    return e.weight.detach().numpy().copy(), opt


@pytest.mark.parametrize("name,make", [
    ("SparseAdam", lambda ns, p: ns.optim.SparseAdam(p, lr=0.1)),
    ("SparseAdam maximize", lambda ns, p: ns.optim.SparseAdam(p, lr=0.05, betas=(0.8, 0.99),
                                                               maximize=True)),
    ("SGD", lambda ns, p: ns.optim.SGD(p, lr=0.1)),
    ("SGD momentum", lambda ns, p: ns.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1)),
    ("SGD nesterov", lambda ns, p: ns.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    ("Adagrad", lambda ns, p: ns.optim.Adagrad(p, lr=0.1, lr_decay=0.01)),
])
def test_sparse_gradient_optimizer_steps_equal_torchs(name, make):
    torch = _torch()
    ours, _ = _train(minidl, make)
    theirs, _ = _train(torch, make)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make,message", [
    (lambda ns, p: ns.optim.Adam(p), "Adam does not support sparse gradients, please consider "
                                      "SparseAdam instead"),
    (lambda ns, p: ns.optim.RMSprop(p), "RMSprop does not support sparse gradients"),
    (lambda ns, p: ns.optim.SGD(p, lr=0.1, weight_decay=0.1),
     r"add\(sparse, dense\) is not supported"),
    (lambda ns, p: ns.optim.Adagrad(p, weight_decay=0.1),
     "weight_decay option is not compatible with sparse gradients"),
])
def test_optimizers_refuse_sparse_gradients_as_torch(make, message):
    torch = _torch()
    for ns in (minidl, torch):
        with pytest.raises(RuntimeError, match=message):
            _train(ns, make, steps=1)


def test_sparse_adam_refuses_dense_gradients():
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        _train(minidl, lambda ns, p: ns.optim.SparseAdam(p), sparse=False)


def test_zero_grad_and_clip_grad_norm_with_sparse_gradients():
    e = nn.Embedding(5, 2, sparse=True)
    opt = minidl.optim.SGD(e.parameters(), lr=0.1)
    e(minidl.tensor([1, 3, 1])).sum().backward()
    dense = e.weight.grad.to_dense().numpy()
    # the norm of the summed entries (row 1 holds 2 + 2), not of the stored ones
    total = nn.utils.clip_grad_norm_(e.parameters(), 1.0)
    assert np.isclose(total.item(), np.linalg.norm(dense), rtol=1e-6)
    np.testing.assert_allclose(e.weight.grad.to_dense().numpy(),
                               dense / (np.linalg.norm(dense) + 1e-6), rtol=1e-5)
    opt.zero_grad(set_to_none=False)
    g = e.weight.grad
    assert g.is_sparse and g._nnz() == 0 and tuple(g.shape) == (5, 2)
    assert tuple(g._values().shape) == (0, 2)
    opt.zero_grad()
    assert e.weight.grad is None


def test_gcn_layer_forward_backward_equal_torchs():
    """A tiny graph convolution: relu(A_hat @ X @ W) with A_hat the normalised adjacency."""
    torch = _torch()
    rng = np.random.default_rng(4)
    edges = np.array([[0, 1, 1, 2, 2, 3, 0, 1, 2, 3], [1, 0, 2, 1, 3, 2, 0, 1, 2, 3]])
    degree = np.bincount(edges[0]).astype(np.float32)
    norm = (1 / np.sqrt(degree[edges[0]] * degree[edges[1]])).astype(np.float32)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    results = []
    for ns in (minidl, torch):
        a = ns.sparse_coo_tensor(ns.tensor(edges), ns.tensor(norm), (4, 4))
        X, W = ns.tensor(x, requires_grad=True), ns.tensor(w, requires_grad=True)
        h = ns.sparse.mm(a, X @ W).relu()
        out = ns.sparse.mm(a, h).sum(dim=1).pow(2).mean()
        out.backward()
        results.append([out.detach().numpy(), X.grad.numpy(), W.grad.numpy()])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("indices,values,size,error,message", [
    ([[0, 5]], [1.0, 2.0], (3,), RuntimeError,
     "size is inconsistent with indices: for dim 0, size is 3 but found index 5"),
    ([[0, -1]], [1.0, 2.0], (3,), RuntimeError, "found negative index -1 for dim 0"),
    ([[0, 1]], [1.0, 2.0, 3.0], (3,), RuntimeError,
     "indices and values must have same nnz, but got nnz from indices: 2, nnz from values: 3"),
    ([0, 1], [1.0, 2.0], (3,), RuntimeError, r"indices must be sparse_dim x nnz, but got shape"),
    ([[0, 1]], [1.0, 2.0], (3, 4), RuntimeError,
     r"number of dimensions must be sparse_dim \(1\) \+ dense_dim \(0\), but got 2"),
    ([[0, 1]], [[1.0, 2.0], [3.0, 4.0]], (3, 3), RuntimeError,
     r"values has incorrect size, expected \[2, 3\], got \[2, 2\]"),
    ([[0.0, 1.0]], [1.0, 2.0], (3,), TypeError, "indices must be an integer tensor"),
])
def test_sparse_coo_tensor_names_what_does_not_fit(indices, values, size, error, message):
    with pytest.raises(error, match=message):
        minidl.sparse_coo_tensor(minidl.tensor(indices), minidl.tensor(values), size)


def test_is_coalesced_claim_is_checked():
    with pytest.raises(RuntimeError, match="not sorted and unique"):
        minidl.sparse_coo_tensor([[1, 0]], [1.0, 2.0], (3,), is_coalesced=True)
    s = minidl.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (3,), is_coalesced=True)
    assert s.is_coalesced()


@pytest.mark.parametrize("op,name", [
    (lambda s: s.exp(), "Exp"), (lambda s: s.view(9), "Reshape"), (lambda s: s.sum(), "Sum"),
    (lambda s: s[0], "GetItem"), (lambda s: s + minidl.ones(3, 3), "Add"),
    (lambda s: s * minidl.ones(3, 3), "Mul"), (lambda s: F.relu(s), "ReLU"),
])
def test_dense_only_ops_refuse_a_sparse_tensor_naming_the_op(op, name):
    with pytest.raises(NotImplementedError, match=f"^{name}: .*sparse"):
        op(_sparse(minidl))


def test_sparse_misuse_is_refused_clearly():
    s = _sparse(minidl)
    assert len(s) == 3  # its first dim, as torch's
    for op in (lambda: s == s, lambda: s < 1, lambda: abs(s), lambda: s ** 2):
        with pytest.raises(NotImplementedError, match="not supported for sparse COO tensors"):
            op()
    with pytest.raises(NotImplementedError, match="to_dense"):
        s.numpy()
    with pytest.raises(RuntimeError, match=r"shapes \(3, 3\) and \(4, 2\) cannot be multiplied"):
        minidl.sparse.mm(s, minidl.ones(4, 2))
    with pytest.raises(NotImplementedError, match="sparse @ dense"):
        s @ s
    with pytest.raises(TypeError, match="same dtype"):
        minidl.sparse.mm(s, minidl.ones(3, 2, dtype=minidl.float64))
    with pytest.raises(RuntimeError, match="expected a sparse COO tensor"):
        minidl.sparse.mm(minidl.ones(3, 3), minidl.ones(3, 2))
    with pytest.raises(ValueError, match=r"expected sizes of the two sparse tensors to match"):
        s + minidl.sparse_coo_tensor([[0]], [1.0], (3,))
    with pytest.raises(RuntimeError, match="expected a sparse COO tensor"):
        minidl.ones(2).indices()


# ---- on the (fake) GPU -------------------------------------------------------------------
def test_sparse_mm_and_embedding_on_the_fake_gpu(monkeypatch, host_kernels):
    import _fake_gpu

    results = {}
    for device in ("cpu", "cuda"):
        if device == "cuda":
            _fake_gpu.install(monkeypatch, host_kernels)
        v = minidl.tensor(np.array(VALUES, np.float32), device=device, requires_grad=True)
        s = minidl.sparse_coo_tensor(minidl.tensor(INDICES, device=device), v, (3, 3))
        assert s.device == device
        d = minidl.tensor(np.arange(6, dtype=np.float32).reshape(3, 2), device=device,
                          requires_grad=True)
        out = minidl.sparse.softmax(minidl.sparse.mm(s, d).to_sparse(), 1).to_dense()
        (out * minidl.tensor(np.arange(6.0, dtype=np.float32).reshape(3, 2), device=device)) \
            .sum().backward()
        e = nn.Embedding(4, 2, sparse=True).to(device)
        with minidl.no_grad():
            e.weight.copy_(minidl.tensor(np.ones((4, 2), np.float32), device=device))
        opt = minidl.optim.SparseAdam(e.parameters(), lr=0.1)
        e(minidl.tensor([1, 3, 1], device=device)).pow(2).sum().backward()
        assert e.weight.grad.device == device
        opt.step()
        results[device] = [out.numpy(), v.grad.numpy(), d.grad.numpy(), e.weight.numpy()]
    for ours, cpu in zip(results["cuda"], results["cpu"]):
        np.testing.assert_allclose(ours, cpu, rtol=1e-6)


def test_sgd_sparse_momentum_buffer_state_dict_round_trip():
    def run(reload):
        minidl.manual_seed(0)
        e = nn.Embedding(5, 2, sparse=True)
        opt = minidl.optim.SGD(e.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            if reload and step == 2:
                state = opt.state_dict()
                assert state["state"][0]["momentum_buffer"].is_sparse
                opt = minidl.optim.SGD(e.parameters(), lr=0.1, momentum=0.9)
                opt.load_state_dict(state)
            opt.zero_grad()
            e(minidl.tensor([1, 3, 1 + step])).pow(2).sum().backward()
            opt.step()
        return e.weight.detach().numpy()
    np.testing.assert_array_equal(run(False), run(True))


@pytest.mark.parametrize("dim", [0, 1])
def test_sparse_softmax_of_a_hybrid_tensor_as_torch(dim):
    torch = _torch()
    v = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    outs = []
    for ns in (minidl, torch):
        s = ns.sparse_coo_tensor(ns.tensor([[0, 2, 0, 1]]), ns.tensor(v), (3, 3))
        outs.append(ns.sparse.softmax(s, dim))
    _same_sparse(*outs)


# ---- a sparse tensor divided by a number: a true division, torch's dtypes ----------------------------
def _sparse_vector(lib, values):
    n = len(values)
    return lib.sparse_coo_tensor(lib.tensor([list(range(n))]), lib.tensor(values), (n,))


def test_sparse_division_is_a_true_division():
    values = np.arange(1, 200, dtype=np.float32)
    got = (_sparse_vector(minidl, values) / 3).to_dense().numpy()
    np.testing.assert_array_equal(got, values / np.float32(3))  # not values * (1/3)


def test_sparse_integer_scaled_gives_default_float():
    s = _sparse_vector(minidl, [1, 2, 3])
    assert s.dtype == np.int64
    assert (s / 2).dtype == np.float32 and (s / 2).to_dense().tolist() == [0.5, 1.0, 1.5]
    assert (s * 2.5).dtype == np.float32 and (s * 2.5).to_dense().tolist() == [2.5, 5.0, 7.5]
    assert (s * 2).dtype == np.int64 and (s * 2).to_dense().tolist() == [2, 4, 6]
    with np.errstate(all="raise"):
        assert (_sparse_vector(minidl, [1.0, 0.0]) / 0).to_dense().numpy().tolist()[0] == np.inf


def test_sparse_division_gradient():
    v = minidl.tensor([1.0, 2.0, 3.0], dtype=minidl.float64, requires_grad=True)
    s = minidl.sparse_coo_tensor(minidl.tensor([[0, 1, 2]]), v, (3,))
    ((s / 4).to_dense() * minidl.tensor([1.0, 2.0, 3.0], dtype=minidl.float64)).sum().backward()
    assert v.grad.tolist() == [0.25, 0.5, 0.75]
    assert minidl.testing.gradcheck(
        lambda w: (minidl.sparse_coo_tensor(minidl.tensor([[0, 1, 2]]), w, (3,)) / 3.0)
        .to_dense() ** 2, (minidl.tensor([1.0, 2.0, 3.0], dtype=minidl.float64,
                                         requires_grad=True),))


def test_sparse_division_parity():
    torch = pytest.importorskip("torch")
    values = np.arange(1, 200, dtype=np.float32) / 7
    got = (_sparse_vector(minidl, values) / 3).to_dense().numpy()
    want = (_sparse_vector(torch, values) / 3).to_dense().numpy()
    np.testing.assert_array_equal(got, want)
    for f in (lambda s: s / 2, lambda s: s * 2.5, lambda s: s * 2):
        got, want = f(_sparse_vector(minidl, [1, 2, 3])), f(_sparse_vector(torch, [1, 2, 3]))
        assert str(got.dtype) == str(want.dtype).removeprefix("torch.")
        assert got.to_dense().tolist() == want.to_dense().tolist()


# ---- a sparse gradient beside dense ones: refusing optimizers move nothing; clip_grad_value_ ---------
def _dense_and_sparse(seed=0):
    nn = minidl.nn
    minidl.manual_seed(seed)
    lin, emb = nn.Linear(3, 3), nn.Embedding(10, 3, sparse=True)
    (lin(emb(minidl.tensor([1, 2, 1]))) ** 2).sum().backward()
    return lin, emb


@pytest.mark.parametrize("make,message", [
    (lambda p: minidl.optim.SGD(p, lr=0.1, weight_decay=0.1), r"add\(sparse, dense\)"),
    (lambda p: minidl.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
     r"add\(sparse, dense\)"),
    (lambda p: minidl.optim.Adam(p, lr=0.1), "Adam does not support sparse gradients"),
    (lambda p: minidl.optim.Adagrad(p, lr=0.1, weight_decay=0.1),
     "weight_decay option is not compatible with sparse gradients"),
])
def test_an_optimizer_refusing_a_sparse_gradient_moves_no_parameter_first(make, message):
    lin, emb = _dense_and_sparse()
    before = [p.detach().numpy().copy() for p in (*lin.parameters(), emb.weight)]
    opt = make([*lin.parameters(), emb.weight])  # the dense ones come first
    with pytest.raises(RuntimeError, match=message):
        opt.step()
    for p, b in zip((*lin.parameters(), emb.weight), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    assert all(not s or s.get("step", 0) == 0 for s in opt.state.values())


def test_sparse_adam_refusing_a_dense_gradient_moves_no_parameter_first():
    lin, emb = _dense_and_sparse()
    before = emb.weight.detach().numpy().copy()
    opt = minidl.optim.SparseAdam([emb.weight, *lin.parameters()], lr=0.1)
    with pytest.raises(RuntimeError, match=r"dense gradients.*shape \(3, 3\)"):
        opt.step()
    np.testing.assert_array_equal(emb.weight.detach().numpy(), before)


def test_clip_grad_value_takes_a_sparse_gradient_as_clip_grad_norm_does():
    lin, emb = _dense_and_sparse()
    dense_before = emb.weight.grad.to_dense().numpy().copy()
    lin_before = lin.weight.grad.numpy().copy()
    minidl.nn.utils.clip_grad_value_([*lin.parameters(), emb.weight], 0.1)
    assert emb.weight.grad.is_sparse
    np.testing.assert_array_equal(emb.weight.grad.to_dense().numpy(),
                                  np.clip(dense_before, -0.1, 0.1))
    np.testing.assert_array_equal(lin.weight.grad.numpy(), np.clip(lin_before, -0.1, 0.1))
# ---- sparse gradients with optimizers, GradScaler, in-place ops -------------------------------

def _sparse_embedding():
    emb = nn.Embedding(5, 3, sparse=True)
    emb.weight.data[...] = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    return emb


def test_sgd_momentum_takes_a_sparse_gradient_after_dense_ones_as_torch():
    torch = pytest.importorskip("torch")
    w = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    results = []
    for m in (torch, minidl):
        emb = m.nn.Embedding(5, 3, sparse=True)
        with m.no_grad():
            emb.weight.copy_(m.tensor(w))
        opt = m.optim.SGD(emb.parameters(), lr=0.1, momentum=0.9, dampening=0.1)
        for i in range(3):
            opt.zero_grad()
            if i == 0:  # a dense gradient first: a dense momentum buffer
                (m.ones(1, 3) @ emb.weight.t()).pow(2).sum().backward()
            else:
                emb(m.tensor([1, 3, 3])).pow(2).sum().backward()
            opt.step()
        results.append(emb.weight.detach().numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_sgd_refuses_a_dense_gradient_into_a_sparse_momentum_buffer_before_any_step():
    emb = _sparse_embedding()
    other = nn.Parameter(minidl.ones(2))
    opt = minidl.optim.SGD([other, emb.weight], lr=0.1, momentum=0.9)
    emb(minidl.tensor([1])).sum().backward()
    other.grad = minidl.ones(2)
    opt.step()
    opt.zero_grad()
    (minidl.ones(1, 3) @ emb.weight.t()).sum().backward()
    other.grad = minidl.ones(2)
    before = other.detach().numpy().copy(), emb.weight.detach().numpy().copy()
    with pytest.raises(RuntimeError, match=r"momentum buffer of the parameter of shape \(5, 3\) "
                                           "is sparse"):
        opt.step()
    np.testing.assert_array_equal(other.detach().numpy(), before[0])  # nothing moved
    np.testing.assert_array_equal(emb.weight.detach().numpy(), before[1])


def test_in_place_ops_on_a_sparse_tensor_name_the_op():
    s = minidl.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2))
    for op, name in ((lambda: s.add_(s), "in-place add"), (lambda: s.mul_(2), "in-place multiply"),
                     (lambda: s.copy_(s), "copy_"), (lambda: s.fill_(1.0), "fill")):
        with pytest.raises(NotImplementedError, match=f"{name}.*sparse COO") as info:
            op()
        assert "flags" not in str(info.value)
    np.testing.assert_array_equal(s.to_dense().numpy(), [[0.0, 1.0], [2.0, 0.0]])


# ---- sparse sum of a bool tensor with repeated entries ----------------------------------------

def test_sparse_sum_of_a_bool_tensor_with_repeated_entries_counts_each_place_once():
    s = minidl.sparse_coo_tensor([[0, 1, 1, 0], [2, 0, 2, 2]], [True, False, True, True], (2, 3))
    assert minidl.sparse.sum(s).item() == 2 == int(s.to_dense().numpy().sum())
    counts = minidl.sparse_coo_tensor([[0, 0]], [2, 3], (1,))  # numbers still add up
    assert minidl.sparse.sum(counts).item() == 5


# ---- compressed sparse: CSR @ CSR -------------------------------------------------------------

def _csr_product_int32(lib, via_sparse_mm):
    def make():
        return lib.sparse_csr_tensor(
            lib.tensor([0, 2, 3, 3], dtype=lib.int32), lib.tensor([0, 2, 1], dtype=lib.int32),
            lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64), (3, 3)).requires_grad_()
    a, b = make(), make()
    y = lib.sparse.mm(a, b) if via_sparse_mm else a @ b
    head = (str(y.layout).split(".")[-1], str(y.crow_indices().dtype).split(".")[-1])
    if via_sparse_mm and lib.__name__ == "torch":  # (torch has no backward for this one)
        return head + (None, y.to_dense().detach().numpy())
    (y.to_dense() * lib.arange(9.0, dtype=lib.float64).reshape(3, 3)).sum().backward()
    return head + (str(a.grad.crow_indices().dtype).split(".")[-1], y.to_dense().detach().numpy(),
                   a.grad.to_dense().numpy(), b.grad.to_dense().numpy())


@pytest.mark.parametrize("via_sparse_mm", [False, True])
def test_csr_times_csr_has_int64_indices_and_sparse_mm_takes_it(via_sparse_mm):
    """The product of two CSR tensors kept int32 indices where both had them, and
    sparse.mm(csr, csr) raised NotImplementedError ('only a strided second operand'); torch
    gives a CSR result with int64 indices (its gradients too) either way."""
    layout, index, grad_index, *_ = _csr_product_int32(minidl, via_sparse_mm)
    assert (layout, index, grad_index) == ("sparse_csr", "int64", "int64")


def test_csr_times_csr_matches_torch():
    pytest.importorskip("torch")
    import torch
    for via in (False, True):
        m, t = _csr_product_int32(minidl, via), _csr_product_int32(torch, via)
        assert m[:2] == t[:2] and (via or m[2] == t[2])
        for x, y in zip(m[3:], t[3:]):
            np.testing.assert_array_equal(x, y)
