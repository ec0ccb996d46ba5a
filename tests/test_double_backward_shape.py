"""Double backward (create_graph=True) of the indexing, shape, product and linear-algebra ops:
each op's graph_backward checked by gradgradcheck (float64 finite differences of the first
gradient) and, where PyTorch differentiates that op twice, against torch's second-order
gradients on the same inputs. Every case runs ``op(...)`` squared, so that the second
derivative is not zero for the ops that are linear in their input."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
from minidl.testing import gradgradcheck


def _leaf(a):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=minidl.float64,
                         requires_grad=True)


def _ix(L, a):
    """An index (int64) or mask (bool) tensor of library L (minidl or torch)."""
    return L.tensor(np.asarray(a))


def _f64(L, a):
    return L.tensor(np.asarray(a, dtype=np.float64), dtype=L.float64)


def _is_minidl(L):
    return L is minidl


def _spd(L, x):
    """A symmetric positive-definite matrix (batch) made from x, differentiable in x."""
    n = x.shape[-1]
    return x @ x.transpose(-1, -2) + _f64(L, np.eye(n) * n)


def _cholesky_private(L, a):
    if _is_minidl(L):
        from minidl.distributions._linalg import cholesky
        return cholesky(a)
    return L.linalg.cholesky(a)


def _solve_lower(L, lower, b):
    if _is_minidl(L):
        from minidl.distributions._linalg import solve_lower
        return solve_lower(lower, b)
    return L.linalg.solve_triangular(lower.tril(), b, upper=False)


def _matrix_exp(L, a):
    if _is_minidl(L):
        from minidl.nn._parametrizations import _matrix_exp
        return _matrix_exp(a)
    return L.linalg.matrix_exp(a)


def _compared_in_place(L, x, z):
    y = x * 1.0
    y.eq_(z)  # a float result of a comparison: a zero gradient, not an error
    return y * x


def _sym(x):
    return x + x.transpose(-1, -2)


def _eigh(L, x):
    w, v = L.linalg.eigh(_sym(x))
    return (v * v) * w.unsqueeze(-2)  # the eigenvectors' signs are arbitrary: squared


def _svd(L, x):
    u, s, vh = L.linalg.svd(x, full_matrices=False)
    return (u * u * s.unsqueeze(-2)) @ (vh * vh)  # signs are arbitrary: squared


def _qr(L, x, mode="reduced"):
    q, r = L.linalg.qr(x, mode=mode)
    return L.cat([q.reshape(-1), r.reshape(-1)])


def _set_item(L, x, v):
    y = x * 1
    y[_ix(L, [0, 2, 3]), 1:] = v
    return y


R = np.random.default_rng(0)
_G = [[0, 2, 2, 1], [3, 0, 1, 1], [2, 2, 0, 3]]  # gather/scatter_add index, repeats in rows


def _distinct(shape, seed):
    """Values far apart (no ties: median, amax, cdist p=inf)."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.37 + 0.1).reshape(shape)


def _no_zero(shape, seed):
    a = np.random.default_rng(seed).uniform(0.5, 1.5, shape)
    return a * np.random.default_rng(seed + 1).choice([-1.0, 1.0], shape)


# (id, input arrays (float64; a tuple is a shape of normal values), fn(L, *inputs), torch)
# where L is minidl or torch; ``torch``: whether PyTorch differentiates the op twice
CASES = [
    # ---- indexing ----
    ("gather", [(3, 4)], lambda L, x: x.gather(1, _ix(L, _G)), True),
    ("gather_dim0", [(3, 4)], lambda L, x: x.gather(0, _ix(L, [[2, 0, 1, 2], [2, 2, 0, 1]])),
     True),
    ("take", [(3, 4)], lambda L, x: L.take(x, _ix(L, [[0, 11], [5, 5]])), True),
    ("scatter", [(3, 5), (3, 3)],
     lambda L, x, s: x.scatter(1, _ix(L, [[0, 2, 4], [1, 3, 0], [4, 1, 2]]), s), True),
    ("scatter_add", [(4, 5), (3, 4)], lambda L, x, s: x.scatter_add(1, _ix(L, _G), s), True),
    # src larger than index: PyTorch's own backward returns a gradient of index's shape there
    ("scatter_src_larger", [(3, 5), (3, 4)],
     lambda L, x, s: x.scatter(1, _ix(L, [[0, 2, 4], [1, 3, 0], [4, 1, 2]]), s), False),
    ("scatter_add_src_larger", [(4, 5), (4, 5)],
     lambda L, x, s: x.scatter_add(1, _ix(L, _G), s), False),
    ("index_add", [(4, 3), (3, 3)],
     lambda L, x, s: x.index_add(0, _ix(L, [1, 3, 1]), s, alpha=2.0), True),
    ("index_select", [(4, 3)], lambda L, x: x.index_select(1, _ix(L, [2, 0, 2, 1])), True),
    ("index_put", [(4, 3), (3,)],
     lambda L, x, v: x.index_put((_ix(L, [0, 2, 3]), _ix(L, [1, 1, 0])), v), True),
    ("index_put_accumulate", [(4, 3), (1,)],
     lambda L, x, v: x.index_put((_ix(L, [0, 2, 0]),), v, accumulate=True), True),
    ("getitem_advanced", [(4, 3)], lambda L, x: x[_ix(L, [3, 0, 3]), _ix(L, [1, 2, 1])], True),
    ("setitem", [(4, 3), (2,)], lambda L, x, v: _set_item(L, x, v), True),
    # ---- the shape paths of Tensor's methods ----
    ("unbind_stack", [(3, 4)],
     lambda L, x: L.stack([t * (i + 1.0) for i, t in enumerate(x.unbind(1))], 0), True),
    ("split_chunk_cat", [(3, 4)], lambda L, x: L.cat(
        [*x.split([1, 2], dim=0)[::-1], *x.chunk(2, dim=0)], 0), True),
    ("view_chain", [(3, 4)], lambda L, x: x.unsqueeze(0).transpose(1, 2).squeeze(0)
     .narrow(0, 1, 2).flatten().view(3, 2), True),
    ("getitem_basic", [(3, 4, 2)], lambda L, x: x[1:, ::2][None, ..., 0], True),
    ("getitem_mask", [(3, 4)], lambda L, x: x[_ix(L, [[True, False, True, True], [False] * 4,
                                                     [True, True, False, False]])], True),
    ("masked_select", [(3, 4)], lambda L, x: x.masked_select(_ix(L, [True, False, True, True])),
     True),
    # ---- scatter_reduce (ties and zeros avoided unless named) ----
    *[(f"scatter_reduce_{r}_{'self' if s else 'noself'}",
       [_no_zero((3, 5), 3) if r != "amax" and r != "amin" else _distinct((3, 5), 3),
        _no_zero((3, 4), 4) if r != "amax" and r != "amin" else _distinct((3, 4), 4) + 0.05],
       (lambda r, s: lambda L, x, src: x.scatter_reduce(1, _ix(L, _G), src, r,
                                                         include_self=s))(r, s), True)
      for r in ("sum", "mean", "prod", "amax", "amin") for s in (True, False)],
    ("scatter_reduce_prod_zeros", [np.array([[0.0, 1.5, -0.7], [0.8, 1.2, 0.9]]),
                                   np.array([[1.1, 0.0, -1.3], [0.0, 0.6, 1.4]])],
     lambda L, x, src: x.scatter_reduce(1, _ix(L, [[0, 1, 1], [2, 1, 0]]), src, "prod"), True),
    # ---- shape ----
    ("flip", [(3, 4)], lambda L, x: x.flip(0, 1), True),
    ("roll", [(3, 4)], lambda L, x: x.roll((1, -2), (0, 1)), True),
    ("roll_flat", [(3, 4)], lambda L, x: L.roll(x, 5), True),
    ("tril", [(2, 3, 4)], lambda L, x: x.tril(-1), True),
    ("triu", [(3, 4)], lambda L, x: x.triu(1), True),
    ("diagonal", [(2, 3, 4)], lambda L, x: x.diagonal(1, 0, 2), True),
    ("diag_2d", [(4, 3)], lambda L, x: L.diag(x, -1), True),
    ("diag_1d", [(3,)], lambda L, x: L.diag(x, 1), True),
    ("diag_embed", [(2, 3)], lambda L, x: L.diag_embed(x, offset=-1, dim1=0, dim2=2), True),
    ("block_diag", [(2, 3), (1, 2), (3,)], lambda L, a, b, c: L.block_diag(a, b, c), True),
    ("median", [_distinct((3, 4), 5)], lambda L, x: x.median(), True),
    ("nanmedian", [_distinct((2, 3), 6)], lambda L, x: x.nanmedian(), True),
    ("masked_scatter", [(3, 4), (2, 4)],
     lambda L, x, s: x.masked_scatter(_ix(L, [[True, False, True, True], [False] * 4,
                                              [False, True, True, False]]), s), True),
    # ---- products ----
    ("einsum_mm", [(2, 3), (3, 4)], lambda L, a, b: L.einsum("ij,jk->ik", a, b), True),
    ("einsum_batch_ellipsis", [(2, 2, 3), (3, 2)],
     lambda L, a, b: L.einsum("...ij,jk->...ik", a, b), True),
    ("einsum_three", [(2, 3), (3, 4), (4,)],
     lambda L, a, b, c: L.einsum("ij,jk,k->i", a, b, c), True),
    ("einsum_diagonal", [(3, 3, 2)], lambda L, a: L.einsum("iij->ij", a), True),
    ("einsum_trace_product", [(3, 3), (3,)], lambda L, a, b: L.einsum("ii,j->j", a, b), True),
    ("einsum_summed_away", [(2, 3), (3, 4)], lambda L, a, b: L.einsum("ij,jk->i", a, b), True),
    ("einsum_implicit", [(2, 3), (2, 3)], lambda L, a, b: L.einsum("ij,ij", a, b), True),
    ("einsum_same_operand_twice", [(2, 3)], lambda L, a: L.einsum("ij,kj->ik", a, a), True),
    ("einsum_broadcast_one", [(1, 3), (2, 3)], lambda L, a, b: L.einsum("ij,ij->ij", a, b),
     True),
    ("cdist_p2", [(2, 3, 4), (1, 2, 4)], lambda L, a, b: (
        L.cdist(a, b) if _is_minidl(L) else L.cdist(a, b, compute_mode="use_mm_for_euclid_dist")),
     True),
    ("cdist_p1", [(3, 2), (4, 2)], lambda L, a, b: L.cdist(a, b, p=1.0), False),
    ("cdist_p3", [(3, 2), (4, 2)], lambda L, a, b: L.cdist(a, b, p=3.0), False),
    ("cdist_p_half", [(3, 2), (4, 2)], lambda L, a, b: L.cdist(a, b, p=0.5), False),
    ("cdist_pinf", [(3, 2), (4, 2)],
     lambda L, a, b: L.cdist(a, b, p=float("inf")), False),
    ("addmm_beta0", [(2, 2), (2, 3), (3, 2)],
     lambda L, c, a, b: L.addmm(c, a, b, beta=0), True),
    # ---- linear algebra ----
    ("inv", [np.eye(3) * 2 + R.standard_normal((3, 3)) * 0.3], lambda L, a: L.linalg.inv(a),
     True),
    ("det", [R.standard_normal((2, 3, 3))], lambda L, a: L.linalg.det(a), True),
    ("slogdet", [R.standard_normal((3, 3))], lambda L, a: L.linalg.slogdet(a)[1], True),
    ("solve", [np.eye(3) * 2 + R.standard_normal((2, 3, 3)) * 0.3, (3, 2)],
     lambda L, a, b: L.linalg.solve(a, b), True),
    ("solve_vector", [np.eye(3) * 2 + R.standard_normal((3, 3)) * 0.3, (3,)],
     lambda L, a, b: L.linalg.solve(a, b), True),
    ("cholesky", [(2, 3, 3)], lambda L, x: L.linalg.cholesky(_spd(L, x)), True),
    ("cholesky_upper", [(3, 3)], lambda L, x: L.linalg.cholesky(_spd(L, x), upper=True), True),
    ("cholesky_private", [(2, 3, 3)], lambda L, x: _cholesky_private(L, _spd(L, x)), True),
    ("solve_lower", [np.eye(3) * 2 + R.standard_normal((2, 3, 3)) * 0.3, (3, 2)],
     lambda L, lower, b: _solve_lower(L, lower, b), True),
    ("matrix_exp", [R.standard_normal((2, 3, 3)) * 0.5], lambda L, a: _matrix_exp(L, a), True),
    ("pinv_tall", [(4, 3)], lambda L, a: L.linalg.pinv(a), True),
    ("pinv_wide_batch", [(2, 2, 3)], lambda L, a: L.linalg.pinv(a), True),
    ("eigh", [(2, 3, 3)], lambda L, x: _eigh(L, x), True),
    ("eigvalsh", [(3, 3)], lambda L, x: L.linalg.eigvalsh(_sym(x)), True),
    ("svd_tall", [(4, 3)], lambda L, x: _svd(L, x), True),
    ("svd_wide_batch", [(2, 2, 3)], lambda L, x: _svd(L, x), True),
    ("svdvals", [(3, 4)], lambda L, x: L.linalg.svdvals(x), True),
    ("qr_tall", [(4, 3)], lambda L, x: _qr(L, x), True),
    ("qr_square_complete", [(2, 3, 3)], lambda L, x: _qr(L, x, "complete"), True),
    ("qr_wide", [(2, 4)], lambda L, x: _qr(L, x), True),
    # ---- a comparison written in place into a float tensor ----
    # (no equal values: finite differences would cross the step)
    ("eq_inplace", [np.array([1.0, 2.0, 3.0]), np.array([1.25, 0.5, 3.5])],
     lambda L, x, z: _compared_in_place(L, x, z), True),
]
_IDS = [c[0] for c in CASES]


def _inputs(spec, seed):
    rng = np.random.default_rng(seed)
    return [np.asarray(a, dtype=np.float64) if not isinstance(a, tuple)
            else rng.standard_normal(a) for a in spec]


@pytest.mark.parametrize("name, spec, fn, _", CASES, ids=_IDS)
def test_gradgradcheck(name, spec, fn, _):
    xs = [_leaf(a) for a in _inputs(spec, len(name))]
    assert gradgradcheck(lambda *t: fn(minidl, *t) ** 2, xs, atol=1e-5, rtol=1e-4)


def _second_order(L, fn, arrays, v, ws):
    """Each input's gradient of sum(g^2) + <g, w> with g the first gradient of <fn^2, v>."""
    if _is_minidl(L):
        xs = [_leaf(a) for a in arrays]
    else:
        xs = [L.tensor(a, dtype=L.float64, requires_grad=True) for a in arrays]
    y = fn(L, *xs) ** 2
    grads = L.autograd.grad((y * _f64(L, v)).sum(), xs, create_graph=True)
    total = sum(((g * g).sum() + (g * _f64(L, w)).sum()) for g, w in zip(grads, ws))
    total.backward()
    return [np.zeros(x.shape) if x.grad is None else _numpy(x.grad) for x in xs]


def _numpy(t):
    return t.numpy() if isinstance(t, minidl.Tensor) else t.detach().numpy()


@pytest.mark.parametrize("name, spec, fn", [c[:3] for c in CASES if c[3]],
                         ids=[c[0] for c in CASES if c[3]])
def test_second_order_matches_torch(name, spec, fn):
    torch = pytest.importorskip("torch")
    arrays = _inputs(spec, len(name))
    rng = np.random.default_rng(1)
    xs = [_leaf(a) for a in arrays]
    v = rng.standard_normal(tuple(fn(minidl, *xs).shape))
    ws = [rng.standard_normal(a.shape) for a in arrays]
    got = _second_order(minidl, fn, arrays, v, ws)
    want = _second_order(torch, fn, arrays, v, ws)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=f"{name}: input {k}")


@pytest.mark.parametrize("name", ["gather", "scatter_reduce_prod_self", "index_select",
                                  "index_put", "diagonal", "diag_1d", "diag_embed",
                                  "masked_scatter", "einsum_diagonal", "cdist_p2", "inv",
                                  "cholesky", "solve_lower", "matrix_exp", "pinv_tall",
                                  "eigh", "svd_tall", "qr_wide"])
def test_third_order_matches_torch(name):
    """The gradients' own graph_backward (GetItemGrad, DiagonalGrad, the ops applied again):
    a third derivative, through autograd.grad with create_graph=True twice."""
    _, spec, fn, _ = CASES[_IDS.index(name)]
    _check_third_order(name, fn, _inputs(spec, len(name)))


def _check_third_order(name, fn, arrays):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    v = rng.standard_normal(tuple(fn(minidl, *[_leaf(a) for a in arrays]).shape))
    ws = [rng.standard_normal(a.shape) for a in arrays]
    results = []
    for L in (minidl, torch):
        xs = [_leaf(a) if _is_minidl(L) else L.tensor(a, requires_grad=True) for a in arrays]
        y = fn(L, *xs) ** 2
        g1 = L.autograd.grad((y * _f64(L, v)).sum(), xs, create_graph=True)
        s1 = sum((g * g * g).sum() for g in g1)
        g2 = L.autograd.grad(s1, xs, create_graph=True)
        sum(((g * _f64(L, w)).sum() for g, w in zip(g2, ws))).backward()
        results.append([_numpy(x.grad) for x in xs])
    for k, (a, b) in enumerate(zip(*results)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=f"{name}: input {k}")


def _f(L, x, w, idx):
    """A small function of x (6,) whose Hessian mixes einsum, gather and indexing."""
    m = x.reshape(2, 3)
    e = L.einsum("ij,jk,i->k", m, _f64(L, w), x[:2])
    picked = m.gather(1, _ix(L, idx))
    return (e * e).sum() + (picked * x[_ix(L, [5, 0, 3])].reshape(1, 3)).sum() \
        + m[:, 1:].exp().sum()


def _hessian_by_loops(x0, w, idx):
    """minidl's Hessian, row by row: the gradient taken with create_graph=True, then each of
    its elements differentiated again."""
    x = _leaf(x0)
    (g,) = minidl.autograd.grad(_f(minidl, x, w, idx), [x], create_graph=True)
    rows = []
    for i in range(x0.size):
        (h,) = minidl.autograd.grad(g[i], [x], retain_graph=True)
        rows.append(h.numpy())
    return np.stack(rows)


def test_hessian_of_einsum_gather_indexing_matches_finite_differences():
    rng = np.random.default_rng(3)
    x0, w = rng.standard_normal(6), rng.standard_normal((3, 3))
    idx = [[2, 0, 2], [1, 1, 0]]
    hessian = _hessian_by_loops(x0, w, idx)
    eps, numeric = 1e-6, np.zeros((6, 6))
    for j in range(6):
        grads = []
        for step in (eps, -eps):
            x = _leaf(x0 + step * np.eye(6)[j])
            _f(minidl, x, w, idx).backward()
            grads.append(x.grad.numpy())
        numeric[:, j] = (grads[0] - grads[1]) / (2 * eps)
    np.testing.assert_allclose(hessian, numeric, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-10, atol=1e-12)


def test_hessian_of_einsum_gather_indexing_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x0, w = rng.standard_normal(6), rng.standard_normal((3, 3))
    idx = [[2, 0, 2], [1, 1, 0]]
    want = torch.autograd.functional.hessian(lambda x: _f(torch, x, w, idx),
                                             torch.tensor(x0)).numpy()
    np.testing.assert_allclose(_hessian_by_loops(x0, w, idx), want, rtol=1e-6, atol=1e-9)


def _second_backward(y, xs):
    (g,) = minidl.autograd.grad(y, xs, create_graph=True)
    (g * g).sum().backward()


def test_scatter_reduce_prod_with_two_zeros_at_a_place_refuses_a_second_backward():
    """Two of src's zeros at one place: the product of the others is not written as ops
    (PyTorch refuses it too); the first gradient is right, a second backward raises."""
    x = _leaf([[1.0, 2.0]])
    src = _leaf([[0.0, 0.0, 3.0]])
    y = x.scatter_reduce(1, minidl.tensor([[0, 0, 1]]), src, "prod")
    (g,) = minidl.autograd.grad(y.sum(), [src], create_graph=True)
    np.testing.assert_allclose(g.numpy(), [[0.0, 0.0, 2.0]])
    with pytest.raises(NotImplementedError, match="double backward"):
        (g * g).sum().backward()


def test_det_of_a_singular_matrix_refuses_a_second_backward():
    a = _leaf([[1.0, 2.0], [2.0, 4.0]])
    (g,) = minidl.autograd.grad(minidl.linalg.det(a), [a], create_graph=True)
    np.testing.assert_allclose(g.numpy(), [[4.0, -2.0], [-2.0, 1.0]])  # the cofactors
    with pytest.raises(NotImplementedError, match="double backward"):
        (g * g).sum().backward()


@pytest.mark.parametrize("name", ["gather", "scatter", "scatter_reduce_prod_zeros",
                                  "scatter_reduce_amax_self", "index_put", "diagonal",
                                  "diag_embed", "masked_scatter", "median", "einsum_diagonal",
                                  "cdist_p3", "inv", "cholesky"])
def test_second_order_on_the_fake_gpu_matches_the_cpu(name, monkeypatch):
    """graph_backward on device arrays (tests/_fake_gpu.py, strict: no NumPy on them in the
    op modules) gives the CPU's second-order gradients."""
    import _fake_gpu
    from minidl import indexing, linalg, ops, products, shape_ops, statistics, structure

    _, spec, fn, _ = CASES[_IDS.index(name)]
    arrays = _inputs(spec, len(name))
    rng = np.random.default_rng(1)
    v = rng.standard_normal(tuple(fn(minidl, *[_leaf(a) for a in arrays]).shape))
    want = _second_order(minidl, fn, arrays, v, arrays)
    _fake_gpu.install(monkeypatch, None)

    class OnGPU:  # minidl, with the tensors it makes (indices, masks, constants) on 'cuda'
        def __getattr__(self, name):
            return getattr(minidl, name)

        @staticmethod
        def tensor(a, **kwargs):
            return minidl.tensor(a, device="cuda", **kwargs)

    xs = [minidl.tensor(a, dtype=minidl.float64, device="cuda", requires_grad=True)
          for a in arrays]
    with _fake_gpu.strict(indexing, linalg, ops, products, shape_ops, statistics, structure):
        y = fn(OnGPU(), *xs) ** 2
        grads = minidl.autograd.grad((y * OnGPU.tensor(v, dtype=minidl.float64)).sum(), xs,
                                     create_graph=True)
        sum(((g * g).sum() + (g * OnGPU.tensor(w, dtype=minidl.float64)).sum())
            for g, w in zip(grads, arrays)).backward()
    for x, w in zip(xs, want):
        assert x.grad.device == "cuda"
        np.testing.assert_allclose(x.grad.numpy(), w, rtol=1e-10, atol=1e-12)


def test_device_move_has_a_second_derivative(monkeypatch):
    """_ToDevice's gradient moves back: on the fake GPU (tests/_fake_gpu.py), a function that
    moves x to 'cuda' and back is differentiated twice."""
    import _fake_gpu

    _fake_gpu.install(monkeypatch, None)
    x = _leaf([0.5, -1.5, 2.0])
    assert gradgradcheck(lambda t: t.to("cuda").to("cpu") ** 3, [x])
    y = (x.to("cuda") * 1.0).to("cpu")
    assert y.device == "cpu" and y._ctx is not None


# ---- recurrent layers: the Recurrence op's graph_backward (a replay of its forward) ----------
RNN_CASES = [
    ("rnn_tanh", "RNN", {}, None),
    ("rnn_relu", "RNN", {"nonlinearity": "relu"}, None),
    ("gru", "GRU", {}, None),
    ("lstm", "LSTM", {}, None),
    ("lstm_proj", "LSTM", {"proj_size": 1}, None),
    ("gru_bidirectional_two_layers", "GRU", {"bidirectional": True, "num_layers": 2}, None),
    ("lstm_no_bias", "LSTM", {"bias": False}, None),
    ("lstm_packed", "LSTM", {}, [3, 2]),
    ("rnn_packed_reverse", "RNN", {"bidirectional": True}, [3, 1]),
    ("gru_cell", "GRUCell", {}, None),
    ("lstm_cell", "LSTMCell", {}, None),
]


def _rnn_module(L, kind, kwargs):
    m = getattr(L.nn, kind)(2, 2, **kwargs)
    return m, [n for n, _ in m.named_parameters()]


def _rnn_run(L, kind, kwargs, lengths, x, *params):
    m, names = _rnn_module(L, kind, kwargs)
    if lengths is not None:
        x = L.nn.utils.rnn.pack_padded_sequence(x, lengths)
    out = L.func.functional_call(m, dict(zip(names, params)), (x,))
    out = out[0] if isinstance(out, tuple) else out
    return out.data if lengths is not None else out


def _rnn_inputs(kind, kwargs, seed):
    rng = np.random.default_rng(seed)
    m, _ = _rnn_module(minidl, kind, kwargs)
    x = rng.standard_normal((2, 2) if kind.endswith("Cell") else (3, 2, 2))
    return [x] + [rng.standard_normal(p.shape) * 0.7 for p in m.parameters()]


@pytest.mark.parametrize("name, kind, kwargs, lengths", RNN_CASES, ids=[c[0] for c in RNN_CASES])
def test_recurrence_gradgradcheck(name, kind, kwargs, lengths):
    xs = [_leaf(a) for a in _rnn_inputs(kind, kwargs, len(name))]
    assert gradgradcheck(lambda *t: _rnn_run(minidl, kind, kwargs, lengths, *t) ** 2, xs)


@pytest.mark.parametrize("name, kind, kwargs, lengths", RNN_CASES, ids=[c[0] for c in RNN_CASES])
def test_recurrence_second_order_matches_torch(name, kind, kwargs, lengths):
    torch = pytest.importorskip("torch")
    arrays = _rnn_inputs(kind, kwargs, len(name))
    rng = np.random.default_rng(1)
    v = rng.standard_normal(tuple(_rnn_run(minidl, kind, kwargs, lengths,
                                           *[_leaf(a) for a in arrays]).shape))
    ws = [rng.standard_normal(a.shape) for a in arrays]

    def fn(L, *t):
        return _rnn_run(L, kind, kwargs, lengths, *t)
    got = _second_order(minidl, fn, arrays, v, ws)
    want = _second_order(torch, fn, arrays, v, ws)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=f"{name}: input {k}")


def test_recurrence_third_order_matches_torch():
    """The replay's stand-ins joined to the inputs: a third derivative reaches them too."""
    kind, kwargs = "LSTM", {"proj_size": 1}
    _check_third_order("lstm_proj", lambda L, *t: _rnn_run(L, kind, kwargs, None, *t),
                       _rnn_inputs(kind, kwargs, 4))
