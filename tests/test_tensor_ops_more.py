"""The rest of the PyTorch tensor ops minidl now has: select, broadcast_to, ravel, concat,
hstack/vstack, repeat_interleave, meshgrid, rot90, diff, cummax/cummin, kthvalue, median,
msort, unique, searchsorted/bucketize, trace, addmm/baddbmm/addmv, inner, cross, clamp_min/
clamp_max, count_nonzero, nan_to_num, nansum/nanmean, xlogy, std_mean/var_mean, in-place
unary methods, detach_: PyTorch's values and gradients in float64, finite-difference checks.
And ops PyTorch has that minidl lacked until an audit (atan2, hypot, logaddexp, copysign, fmax/
fmin, float_power, the inverse hyperbolics, splits and stacks, statistics such as nanquantile),
against torch directly."""
import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck
from _ops_check import agree_both, check, needs_torch, torch

rng = np.random.default_rng(4)
X = rng.standard_normal((3, 4))
X3 = rng.standard_normal((2, 3, 4))


def r(*shape):
    return rng.standard_normal(shape)


def test_shape_extras():
    check(lambda L, x: L.select(x, 1, -1), X)
    check(lambda L, x: x.select(0, 2), X3[0].copy())
    check(lambda L, x: L.broadcast_to(x, (2, 3, 4)), X)
    check(lambda L, x: x.ravel(), X3)
    check(lambda L, a, b: L.concat([a, b], 1), X, r(3, 2))
    check(lambda L, a, b: L.concatenate((a, b)), X, r(1, 4))
    check(lambda L, a, b: L.hstack([a, b]), r(3), r(2))
    check(lambda L, a, b: L.hstack([a, b]), X, r(3, 1))
    check(lambda L, a, b: L.vstack([a, b]), r(4), X)
    check(lambda L, x: x.repeat_interleave(2), X)
    check(lambda L, x: L.repeat_interleave(x, 3, dim=1), X)
    check(lambda L, x, c: x.repeat_interleave(c, dim=0), X, np.array([2, 0, 1]))
    check(lambda L, c: L.repeat_interleave(c), np.array([2, 0, 3]), grad=False)
    for indexing in ("ij", "xy"):
        check(lambda L, a, b, c: L.meshgrid(a, b, c, indexing=indexing), r(2), r(3), r(4))
        check(lambda L, a, b: L.meshgrid([a, b], indexing=indexing), r(2), r(3))
    for k in (1, 2, 3, -1, 4):
        check(lambda L, x: L.rot90(x, k), X)
        check(lambda L, x: x.rot90(k, (2, 0)), X3)
    check(lambda L, x: L.diff(x), X)
    check(lambda L, x: x.diff(n=2, dim=0), X)
    check(lambda L, x, p, a: L.diff(x, 1, 1, p, a), X, r(3, 1), r(3, 2))
    with pytest.raises(IndexError, match="index 4 out of range for dimension 1 of size 4"):
        minidl.tensor(X).select(1, 4)


def test_ordering_extras():
    a = np.array([[1.0, 3.0, 2.0, 3.0, 0.5], [2.0, -1.0, 4.0, 4.0, 5.0]])
    # ties: torch's indices (the latest) and gradients; no finite differences across a tie
    check(lambda L, x: L.cummax(x, 1), a, check_grad=False)
    check(lambda L, x: x.cummin(1), a, check_grad=False)
    check(lambda L, x: L.cummax(x, 0), X)
    check(lambda L, x: x.cummin(dim=1), X)
    check(lambda L, x: L.cummin(x, dim=-1), np.array([2.0, np.nan, 1.0]), grad=False)
    d = X  # distinct values: the index a median or kthvalue picks is unique
    check(lambda L, x: L.kthvalue(x, 2, 1), d)
    check(lambda L, x: x.kthvalue(3, dim=0, keepdim=True), d)
    check(lambda L, x: L.median(x), d)
    check(lambda L, x: x.median(1), d)
    check(lambda L, x: x.median(0, keepdim=True), d)
    check(lambda L, x: L.msort(x), d)
    u = np.array([[3, 1, 2], [1, 3, 3]])
    check(lambda L, x: L.unique(x), u, grad=False)
    check(lambda L, x: x.unique(return_inverse=True, return_counts=True), u, grad=False)
    seq = np.array([1.0, 2.0, 2.0, 5.0])
    vals = np.array([[0.0, 2.0, 3.0], [5.0, 6.0, 1.0]])
    check(lambda L, s, v: L.searchsorted(s, v), seq, vals, grad=False)
    check(lambda L, s, v: L.searchsorted(s, v, right=True), seq, vals, grad=False)
    check(lambda L, s, v: L.searchsorted(s, v, side="right", out_int32=True), seq, vals,
          grad=False)
    check(lambda L, s, v: L.searchsorted(s, v), np.sort(r(2, 5), axis=1), r(2, 3), grad=False)
    check(lambda L, v, b: L.bucketize(v, b), vals, seq, grad=False)
    check(lambda L, v, b: L.bucketize(v, b, right=True), vals, seq, grad=False)


@needs_torch
def test_product_extras():
    check(lambda L, x: L.trace(x), r(4, 4))
    check(lambda L, x: x.trace(), X)
    check(lambda L, i, a, b: L.addmm(i, a, b), r(3, 2), X, r(4, 2))
    check(lambda L, i, a, b: i.addmm(a, b, beta=0.5, alpha=-2), r(2), X, r(4, 2))
    check(lambda L, i, a, b: L.baddbmm(i, a, b, alpha=3), r(2, 3, 5), X3, r(2, 4, 5))
    check(lambda L, i, a, b: L.addmv(i, a, b, beta=2), r(3), X, r(4))
    check(lambda L, a, b: L.inner(a, b), X, r(5, 4))
    check(lambda L, a, b: a.inner(b), X3, r(4))
    check(lambda L, a, b: L.cross(a, b, dim=1), r(4, 3), r(4, 3))
    check(lambda L, a, b: L.linalg.cross(a, b) if L is torch else L.cross(a, b, dim=-1),
          r(2, 3), r(1, 3))
    check(lambda L, a, b: a.cross(b, dim=0), r(3, 2), r(3, 2))


def test_math_extras():
    check(lambda L, x: L.clamp_min(x, 0.1), X)
    check(lambda L, x: x.clamp_max(-0.2), X)
    check(lambda L, x: L.count_nonzero(x), np.array([[0, 1.5], [2, 0]]), grad=False)
    check(lambda L, x: x.count_nonzero(dim=0), np.array([[0, 1], [2, 0], [3, 3]]), grad=False)
    bad = np.array([[1.0, np.nan, np.inf], [-np.inf, -2.0, 0.5]])
    check(lambda L, x: L.nan_to_num(x), bad, check_grad=False)
    check(lambda L, x: x.nan_to_num(nan=1.0, posinf=9.0, neginf=-9.0), bad, check_grad=False)
    check(lambda L, x: L.nansum(x), bad[:, :2].copy(), check_grad=False)
    check(lambda L, x: x.nansum(1), np.array([[1.0, np.nan], [2.0, 3.0]]), check_grad=False)
    check(lambda L, x: L.nanmean(x, 0), np.array([[1.0, np.nan], [2.0, 3.0]]), check_grad=False)
    check(lambda L, x, y: L.xlogy(x, y), np.array([[0.0, 1.5], [2.0, -1.0]]),
          np.array([[0.5, 2.0], [3.0, 0.7]]))
    check(lambda L, x: L.xlogy(x, 2.0), X)
    check(lambda L, x: L.std_mean(x, 1), X)
    check(lambda L, x: L.var_mean(x, 0, keepdim=True, correction=0), X)
    check(lambda L, x: L.std_mean(x), X)


@needs_torch
@pytest.mark.parametrize("name, a", [("exp", X), ("log", np.abs(X) + 0.5), ("sqrt", np.abs(X)),
                                     ("neg", X), ("abs", X + 0.05), ("sigmoid", X),
                                     ("tanh", X), ("sin", X), ("reciprocal", X),
                                     ("square", X), ("floor", X)])
def test_in_place_unary_methods(name, a):
    def f(L, x):
        y = x * 1.5
        getattr(y, name + "_")()
        return y
    check(f, a)
    t = minidl.tensor(a)
    view = t[0]
    assert getattr(t, name + "_")() is t
    expected = getattr(torch.tensor(a, dtype=torch.float32), name)().numpy()
    np.testing.assert_allclose(view.numpy(), expected[0], rtol=1e-6)


@needs_torch
def test_pow_clamp_min_detach_in_place_and_tensor_queries():
    def f(L, x):
        y = x * 2
        y.pow_(3)
        y.clamp_min_(-1.0)
        return y
    check(f, X)
    x = minidl.tensor(X, requires_grad=True)
    y = x * 2
    assert y.detach_() is y and y.is_leaf and not y.requires_grad
    for lib in (minidl, torch):
        t = lib.tensor(X.astype(np.float32))
        assert t.is_floating_point() and not lib.tensor([1]).is_floating_point()
        assert t.is_contiguous() and t.nelement() == 12 and t.element_size() == 4


@needs_torch
def test_fake_gpu(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    a32 = X.astype(np.float32)
    x = minidl.tensor(a32, device="cuda", requires_grad=True)
    y = (x.cummax(1).values + x.repeat_interleave(1, dim=0)).rot90() * x.median()
    y = minidl.xlogy(y.abs(), x.T.abs() + 1).nansum() + minidl.trace(x[:, :3])
    y.backward()
    assert y.device == "cuda" and x.grad.device == "cuda" and x.grad.dtype == np.float32
    t = torch.tensor(a32, requires_grad=True)
    ty = (t.cummax(1).values + t.repeat_interleave(1, dim=0)).rot90() * t.median()
    ty = torch.xlogy(ty.abs(), t.T.abs() + 1).nansum() + torch.trace(t[:, :3])
    ty.backward()
    np.testing.assert_allclose(y.item(), ty.item(), rtol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)
    s = minidl.searchsorted(minidl.tensor([1.0, 2.0], device="cuda"),
                            minidl.tensor([1.5], device="cuda"))
    assert s.device == "cuda" and s.item() == 1
    assert minidl.unique(minidl.tensor([2, 1, 2], device="cuda")).device == "cuda"


# ---- ops PyTorch has that minidl lacked: forward and backward against torch, gradcheck (an audit against torch 2.13) ----
NAN = float("nan")


def _np(t):
    return np.asarray(t.detach().numpy())


BINARY_NEW = ["atan2", "hypot", "logaddexp", "logaddexp2", "copysign", "fmax", "fmin",
              "float_power"]


UNARY_NEW = ["asinh", "acosh", "atanh", "deg2rad", "rad2deg"]


def _pair_data(name):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    if name == "float_power":
        a = np.abs(a) + 0.5
    a[0, 0], b[0, 0] = 1.25, 1.25  # a tie (fmax/fmin give it to input)
    if name in ("fmax", "fmin"):
        a[1, 1], b[2, 2] = NAN, NAN
    return a, b


def _unary_data(name):
    x = np.random.default_rng(6).uniform(-0.9, 0.9, (3, 4))
    return x + 2 if name == "acosh" else x


@needs_torch
@pytest.mark.parametrize("name", BINARY_NEW)
def test_new_binary_ops_match_torch_forward_and_backward(name):
    a, b = _pair_data(name)
    ma, mb = (minidl.tensor(v, dtype=minidl.float64, requires_grad=True) for v in (a, b))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    ym, yt = getattr(minidl, name)(ma, mb), getattr(torch, name)(ta, tb)
    np.testing.assert_allclose(_np(ym), yt.detach().numpy(), rtol=1e-12)
    w = np.random.default_rng(7).standard_normal(a.shape)
    (ym * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(_np(ma.grad), ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    if tb.grad is not None and name != "copysign":
        np.testing.assert_allclose(_np(mb.grad), tb.grad.numpy(), rtol=1e-10, atol=1e-12)
    # float32 in, the result dtype as torch's (float_power: float64)
    m32 = getattr(minidl, name)(minidl.tensor(a), minidl.tensor(b))
    t32 = getattr(torch, name)(torch.tensor(a, dtype=torch.float32),
                               torch.tensor(b, dtype=torch.float32))
    assert str(m32.dtype) == str(t32.dtype).split(".")[-1]
    if name not in ("fmax", "fmin"):  # piecewise: finite differences across the tie
        x, y = (minidl.tensor(v, dtype=minidl.float64, requires_grad=True)
                for v in (np.abs(a) + 0.5, b + 0.1 * (b == a)))
        assert gradcheck(lambda p, q: getattr(minidl, name)(p, q), [x, y])


@needs_torch
@pytest.mark.parametrize("name", UNARY_NEW)
def test_new_unary_ops_match_torch_forward_and_backward(name):
    x = _unary_data(name)
    m, t = minidl.tensor(x, dtype=minidl.float64, requires_grad=True), \
        torch.tensor(x, requires_grad=True)
    ym, yt = getattr(minidl, name)(m), getattr(torch, name)(t)
    np.testing.assert_allclose(_np(ym), yt.detach().numpy(), rtol=1e-12)
    ym.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(_np(m.grad), t.grad.numpy(), rtol=1e-10)
    assert gradcheck(lambda a: getattr(minidl, name)(a),
                     [minidl.tensor(x, dtype=minidl.float64, requires_grad=True)])
    agree_both(lambda L: getattr(L, name)(L.tensor([1, 2])))  # integers: float32


@needs_torch
def test_new_ops_edges_and_dtypes():
    a = lambda L: L.tensor([0., 1., -2., 3.])  # noqa: E731
    i = lambda L: L.tensor([1, 2, 3, 4])  # noqa: E731
    cases = [lambda L: L.atan2(i(L), i(L)), lambda L: L.hypot(i(L), i(L)),
             lambda L: L.logaddexp(i(L), i(L)), lambda L: L.fmax(i(L), i(L)),
             lambda L: L.copysign(i(L), -1), lambda L: L.atan2(a(L), 2),
             lambda L: L.float_power(i(L), 2), lambda L: L.signbit(L.tensor([-0., 0., -1.])),
             lambda L: L.isposinf(L.tensor([float("inf"), -float("inf"), 1.])),
             lambda L: L.isneginf(L.tensor([float("inf"), -float("inf"), 1.])),
             lambda L: L.sgn(L.tensor([-2, 0, 3])), lambda L: L.absolute(L.tensor([-2, 3])),
             lambda L: L.positive(L.tensor([True])), lambda L: L.heaviside(a(L), L.tensor([.5])),
             lambda L: L.heaviside(a(L), L.tensor([1])), lambda L: L.dist(a(L), a(L) * 2, 1),
             lambda L: L.dist(a(L), a(L) * 2, float("inf")),
             lambda L: L.isin(i(L), L.tensor([2, 4])), lambda L: L.multiply(i(L), 2.5),
             lambda L: L.subtract(i(L), i(L), alpha=2), lambda L: L.true_divide(i(L), 2),
             lambda L: L.bitwise_and(i(L), 6), lambda L: L.bitwise_not(a(L)),
             lambda L: L.aminmax(L.tensor([[1., 3.], [0., 2.]]), dim=1, keepdim=True).max,
             lambda L: L.aminmax(i(L)).min, lambda L: L.aminmax(L.zeros(0)).min]
    for c in cases:
        agree_both(c)
    # aminmax's gradients are amin's and amax's: shared among ties
    x = [[1., 3., 3.], [2., 2., 0.]]
    m, t = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    rm, rt = minidl.aminmax(m), torch.aminmax(t)
    (rm.min + 2 * rm.max).backward()
    (rt.min + 2 * rt.max).backward()
    np.testing.assert_allclose(_np(m.grad), t.grad.numpy())


@needs_torch
def test_new_ops_under_cpu_autocast_keep_torchs_dtypes():
    a, b = np.random.default_rng(8).uniform(1, 2, (2, 3, 3))
    for name in BINARY_NEW + ["dist"]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = getattr(torch, name)(torch.tensor(a).bfloat16(), torch.tensor(b).bfloat16())
        with minidl.autocast("cpu", dtype=minidl.bfloat16):
            got = getattr(minidl, name)(minidl.tensor(a).to(minidl.bfloat16),
                                        minidl.tensor(b).to(minidl.bfloat16))
        assert str(got.dtype) == str(want.dtype).split(".")[-1], name


# composite and new shape ops: (name, lambda on the library, input shapes), run on both
SHAPE_NEW = [
    ("tensor_split", lambda L, a: L.tensor_split(a, 3, 1)[2] * 2, [(2, 7)]),
    ("tensor_split_idx", lambda L, a: L.cat(L.tensor_split(a, [1, 5, 20], 1)[1:3], 1), [(2, 7)]),
    ("hsplit", lambda L, a: L.hsplit(a, [1, 3])[1], [(2, 6)]),
    ("vsplit", lambda L, a: L.vsplit(a, 2)[1], [(4, 3)]),
    ("dsplit", lambda L, a: L.dsplit(a, 2)[0], [(2, 2, 4)]),
    ("atleast_3d", lambda L, a: L.atleast_3d(a), [(5,)]),
    ("dstack", lambda L, a, b: L.dstack([a, b]), [(2, 3), (2, 3)]),
    ("column_stack", lambda L, a, b: L.column_stack([a, b]), [(3,), (3, 2)]),
    ("broadcast_tensors", lambda L, a, b: L.broadcast_tensors(a, b)[0] * 3, [(3, 1), (4,)]),
    ("diag_embed", lambda L, a: L.diag_embed(a, 1), [(2, 3)]),
    ("diag_embed_dims", lambda L, a: L.diag_embed(a, -1, 2, 0), [(2, 3)]),
    ("block_diag", lambda L, a, b: L.block_diag(a, b), [(2, 3), (1, 2)]),
    ("cartesian_prod", lambda L, a, b: L.cartesian_prod(a, b), [(2,), (3,)]),
    ("tensordot", lambda L, a, b: L.tensordot(a, b, dims=([1, 2], [1, 0])), [(2, 3, 4), (4, 3, 5)]),
    ("tensordot_int", lambda L, a, b: L.tensordot(a, b, 1), [(2, 3), (3, 2)]),
    ("kron", lambda L, a, b: L.kron(a, b), [(2, 3), (2, 1, 2)]),
    ("vdot", lambda L, a, b: L.vdot(a, b), [(4,), (4,)]),
    ("logcumsumexp", lambda L, a: L.logcumsumexp(a * 300, 1), [(3, 5)]),
]


@needs_torch
@pytest.mark.parametrize("name,fn,shapes", SHAPE_NEW, ids=[c[0] for c in SHAPE_NEW])
def test_new_shape_and_product_ops_match_torch(name, fn, shapes):
    rng = np.random.default_rng(10)
    arrays = [rng.standard_normal(s) for s in shapes]
    ms = [minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ym, yt = fn(minidl, *ms), fn(torch, *ts)
    assert tuple(ym.shape) == tuple(yt.shape)
    np.testing.assert_allclose(_np(ym), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    w = rng.standard_normal(tuple(yt.shape))
    (ym * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    for m, t in zip(ms, ts):
        if t.grad is None:  # an input the result does not depend on
            assert m.grad is None
            continue
        np.testing.assert_allclose(_np(m.grad), t.grad.numpy(), rtol=1e-9, atol=1e-12)
    fresh = [minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in arrays]
    assert gradcheck(lambda *xs: fn(minidl, *xs), fresh)


@needs_torch
def test_new_shape_ops_edges():
    x7 = lambda L: L.arange(7.)  # noqa: E731
    cases = [lambda L: L.tensor_split(x7(L), [-2])[1], lambda L: L.tensor_split(x7(L), [5, 2])[2],
             lambda L: L.tensor_split(L.ones(2, 7), L.tensor(3), 1)[1],
             lambda L: L.hsplit(x7(L), 3)[0], lambda L: L.dsplit(L.ones(2, 3), 1)[0],
             lambda L: L.atleast_3d(L.tensor(1.)), lambda L: L.atleast_3d(L.ones(2, 3)),
             lambda L: L.column_stack([L.tensor(1.), L.ones(1, 2)]),
             lambda L: L.tensor(list(L.broadcast_shapes((2, 1), (3,)))),
             lambda L: L.tensor(list(L.broadcast_shapes((2,), (3,)))),
             lambda L: L.block_diag(L.tensor(1), L.ones(2), L.ones(2, 1) * 2.),
             lambda L: L.block_diag(L.tensor([[1, 2]]), L.tensor([[3]])),
             lambda L: L.cartesian_prod(L.tensor([1, 2])),
             lambda L: L.tril_indices(3, 3), lambda L: L.triu_indices(2, 4, 1),
             lambda L: L.tril_indices(3, 2, -1), lambda L: L.triu_indices(3, 3, -5),
             lambda L: L.unique_consecutive(L.tensor([1, 1, 2, 2, 3, 1, 1])),
             lambda L: L.unique_consecutive(L.tensor([[1, 1], [2, 1]]), return_inverse=True)[1],
             lambda L: L.unique_consecutive(L.tensor([1, 1, 2, 3, 3]), return_counts=True)[1],
             lambda L: L.tensordot(L.ones(2, 3), L.ones(3, 2, dtype=L.float64), 1),
             lambda L: L.tensordot(L.ones(2), L.ones(3), 0),
             lambda L: L.kron(L.tensor([[1, 2], [3, 4]]), L.tensor([1, 10])),
             lambda L: L.logcumsumexp(L.tensor([-1000., 0., 1.]), 0),
             lambda L: L.logcumsumexp(L.tensor([-float("inf"), float("inf"), 1.]), 0),
             lambda L: L.logcumsumexp(L.tensor([1, 2]), 0),
             lambda L: L.bincount(L.tensor([0, 1, 1, 3])),
             lambda L: L.bincount(L.tensor([0, 1, 1]), weights=L.tensor([.5, 1., 2.])),
             lambda L: L.bincount(L.tensor([0, 1]), weights=L.tensor([1, 2])),
             lambda L: L.bincount(L.tensor([], dtype=L.int64), minlength=3),
             lambda L: L.bincount(L.tensor([-1]))]
    for c in cases:
        agree_both(c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.tensordot(torch.ones(2, 3), torch.ones(3, 2), 1).dtype
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        got = minidl.tensordot(minidl.ones(2, 3), minidl.ones(3, 2), 1).dtype
    assert str(got) == str(want).split(".")[-1]


@needs_torch
def test_torchs_keyword_names_are_accepted():
    m = lambda L: L.arange(12.).reshape(3, 4)  # noqa: E731
    cases = [lambda L: L.split(m(L), split_size_or_sections=2, dim=1)[1],
             lambda L: m(L).split(split_size=3, dim=1)[1],
             lambda L: L.flip(m(L), dims=(0,)), lambda L: L.permute(m(L), dims=(1, 0)),
             lambda L: m(L).permute(dims=[1, 0]), lambda L: L.reshape(m(L), shape=(4, 3)),
             lambda L: m(L).reshape(shape=(2, 6)), lambda L: L.tile(m(L), dims=(2, 1)),
             lambda L: L.topk(input=m(L), k=2, dim=0, largest=False, sorted=True).values,
             lambda L: L.gather(input=m(L), dim=1, index=L.tensor([[0], [1], [2]])),
             lambda L: L.clamp(input=m(L), min=2, max=5)]
    for c in cases:
        agree_both(c)
    with pytest.raises(TypeError):
        m(minidl).reshape((4, 3), shape=(4, 3))
    with pytest.raises(TypeError):
        m(minidl).permute(order=(1, 0))


STATS_NEW = [
    ("quantile_linear", lambda L, a: L.quantile(a, 0.3, dim=1), [(3, 5)]),
    ("quantile_q_tensor", lambda L, a: L.quantile(a, L.tensor([0.1, 0.5, 0.9], dtype=a.dtype),
                                                 dim=0, keepdim=True), [(4, 3)]),
    ("quantile_all", lambda L, a: L.quantile(a, 0.75), [(3, 4)]),
    ("quantile_midpoint", lambda L, a: L.quantile(a, 0.5, 1, interpolation="midpoint"), [(3, 4)]),
    ("quantile_nearest", lambda L, a: L.quantile(a, 0.4, 1, interpolation="nearest"), [(3, 6)]),
    ("nanquantile", lambda L, a: L.nanquantile(a, 0.6, dim=1), [(3, 5)]),
    ("nanmedian", lambda L, a: L.nanmedian(a, 1).values, [(3, 5)]),
    ("mode", lambda L, a: L.mode(a.round(), 1).values, [(3, 7)]),
    ("cov", lambda L, a: L.cov(a), [(3, 6)]),
    ("cov_weights", lambda L, a: L.cov(a, fweights=L.tensor([1, 2, 1, 3]),
                                       aweights=L.tensor([0.5, 1., 2., 1.], dtype=a.dtype)),
     [(2, 4)]),
    ("corrcoef", lambda L, a: L.corrcoef(a), [(3, 6)]),
    ("cdist", lambda L, a, b: L.cdist(a, b), [(2, 4, 3), (2, 5, 3)]),
    ("cdist_p1", lambda L, a, b: L.cdist(a, b, p=1), [(4, 3), (5, 3)]),
    ("cdist_p3", lambda L, a, b: L.cdist(a, b, p=3), [(4, 3), (5, 3)]),
    ("cdist_inf", lambda L, a, b: L.cdist(a, b, p=float("inf")), [(4, 3), (5, 3)]),
]


@needs_torch
@pytest.mark.parametrize("name,fn,shapes", STATS_NEW, ids=[c[0] for c in STATS_NEW])
def test_new_statistics_ops_match_torch(name, fn, shapes):
    test_new_shape_and_product_ops_match_torch(name, fn, shapes)


@needs_torch
def test_new_statistics_ops_edges():
    a = lambda L: L.tensor([[1., 5., 2., 2., 9.], [3., NAN, 1., 0., 2.]])  # noqa: E731
    cases = [lambda L: L.quantile(a(L), 0.5, dim=1), lambda L: L.nanquantile(a(L), 0.5),
             lambda L: L.nanquantile(L.tensor([[NAN, NAN], [1., NAN]]), 0.5, dim=1),
             lambda L: L.quantile(L.tensor([1., 2., 3., 4.]), L.tensor([.25, .5, 1.]),
                                  interpolation="nearest"),
             lambda L: L.quantile(L.tensor(2.), 0.5), lambda L: L.quantile(L.tensor([1, 2]), .5),
             lambda L: L.quantile(L.tensor([1., 2.]), 1.5),
             lambda L: L.quantile(L.tensor([1., 2.]), L.tensor([.5], dtype=L.float64)),
             lambda L: L.quantile(L.zeros(0), 0.5),
             lambda L: L.quantile(L.tensor([1., 2.]), 0.5, interpolation="foo"),
             lambda L: L.nanmedian(L.tensor([1., NAN, 3., 2.])),
             lambda L: L.nanmedian(L.tensor([[NAN, 1.], [NAN, NAN], [2., 2.]]), 1).indices,
             lambda L: L.nanmedian(L.full((2, 70), NAN), 1).indices,
             lambda L: L.mode(L.tensor([0., 1., 0., 1., 0., 1., 2., 0.] * 3), 0).indices,
             lambda L: L.mode(L.tensor([3, 1, 3, 1, 2])).indices,
             lambda L: L.cov(L.tensor([[1, 2, 4]])), lambda L: L.cov(L.ones(2, 2, 2)),
             lambda L: L.corrcoef(L.tensor([[1., 1., 1.], [1., 2., 3.]])),
             lambda L: L.cdist(L.ones(3, 4), L.ones(5, 3)),
             lambda L: L.cdist(L.ones(3, 4, dtype=L.int64), L.ones(5, 4, dtype=L.int64))]
    for c in cases:
        agree_both(c)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        got = minidl.cov(minidl.tensor([[1.]]))
    assert np.isnan(got.item()) or np.isinf(got.item())
    x = np.random.default_rng(11).uniform(size=(3, 6))
    for name in ("quantile", "nanquantile"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = getattr(torch, name)(torch.tensor(x).bfloat16(), 0.5, dim=1)
        with minidl.autocast("cpu", dtype=minidl.bfloat16):
            got = getattr(minidl, name)(minidl.tensor(x).to(minidl.bfloat16), 0.5, dim=1)
        assert str(got.dtype) == str(want.dtype).split(".")[-1] == "float32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.cdist(torch.tensor(x).bfloat16(), torch.tensor(x).bfloat16())
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        got = minidl.cdist(minidl.tensor(x).to(minidl.bfloat16), minidl.tensor(x).to(minidl.bfloat16))
    assert str(got.dtype) == str(want.dtype).split(".")[-1] == "float32"


MORE_NEW = [
    ("addbmm", lambda L, a, b, c: L.addbmm(a, b, c, beta=0.5, alpha=2), [(2, 2), (3, 2, 4),
                                                                         (3, 4, 2)]),
    ("addr", lambda L, a, b, c: L.addr(a, b, c, beta=2, alpha=0.5), [(2, 3), (2,), (3,)]),
    # a positive exponent: torch's ldexp gradient takes 2 ** -2 in integers, as 0
    ("ldexp", lambda L, a: L.ldexp(a, L.tensor([1, 2, 3])), [(2, 3)]),
    ("trapezoid", lambda L, a, x: L.trapezoid(a, x.cumsum(0)), [(2, 4), (4,)]),
    ("trapezoid_dx", lambda L, a: L.trapezoid(a, dx=0.5, dim=0), [(3, 2)]),
    ("cumulative_trapezoid", lambda L, a: L.cumulative_trapezoid(a), [(2, 5)]),
    ("renorm", lambda L, a: L.renorm(a, 2, 0, 1.5), [(3, 4)]),
    ("masked_scatter", lambda L, a, s: a.masked_scatter(L.tensor([True, False, True]), s),
     [(2, 3), (5,)]),
    ("select_scatter", lambda L, a, s: L.select_scatter(a, s, 1, -1), [(2, 3), (2,)]),
    ("slice_scatter", lambda L, a, s: L.slice_scatter(a, s, 0, 1, 4, 2), [(4, 2), (2, 2)]),
    ("diagonal_scatter", lambda L, a, s: L.diagonal_scatter(a, s, 1, 0, 2), [(3, 2, 4), (2, 3)]),
    ("narrow_copy", lambda L, a: L.narrow_copy(a, 1, 1, 2), [(2, 4)]),
    ("combinations", lambda L, a: L.combinations(a, 2), [(4,)]),
]


@needs_torch
@pytest.mark.parametrize("name,fn,shapes", MORE_NEW, ids=[c[0] for c in MORE_NEW])
def test_more_new_ops_match_torch(name, fn, shapes):
    test_new_shape_and_product_ops_match_torch(name, fn, shapes)


@needs_torch
def test_more_new_ops_edges():
    # vander: torch's own backward trips on an in-place op; forward against torch, gradcheck
    x = np.array([0.5, -1.5, 2.0])
    np.testing.assert_allclose(_np(minidl.vander(minidl.tensor(x, dtype=minidl.float64), N=4)),
                               torch.vander(torch.tensor(x), N=4).numpy())
    assert gradcheck(lambda a: minidl.vander(a, N=4, increasing=True),
                     [minidl.tensor(x, dtype=minidl.float64, requires_grad=True)])
    cases = [lambda L: L.gcd(L.tensor([12, -18, 0]), L.tensor([8, 12, 0])),
             lambda L: L.lcm(L.tensor([4, -6, 0]), L.tensor([6, 4, 5])),
             lambda L: L.gcd(L.tensor([1.]), L.tensor([2.])),
             lambda L: L.ldexp(L.tensor([1, 2]), L.tensor([2, 3])),
             lambda L: L.frexp(L.tensor([8., 0.5, -3., 0.])).mantissa,
             lambda L: L.frexp(L.tensor([8., 0.5, -3., 0.])).exponent,
             lambda L: L.frexp(L.tensor([1])).mantissa,
             lambda L: L.nextafter(L.tensor([1., 0.]), L.tensor([2., -1.])),
             lambda L: L.angle(L.tensor([-1., 0., 2., NAN])), lambda L: L.angle(L.tensor([-1, 2])),
             lambda L: L.trapezoid(L.zeros(0)),
             lambda L: L.histc(L.tensor([1., 2., 1., 4.]), bins=4, min=0, max=3),
             lambda L: L.histc(L.tensor([1., 2., 1.]), bins=4),
             lambda L: L.histc(L.tensor([1., 1.]), bins=3), lambda L: L.histc(L.tensor([1, 2])),
             lambda L: L.zeros(2).masked_scatter(L.tensor([True, True]), L.ones(1)),
             lambda L: L.stack(list(L.unravel_index(L.tensor([5, 7, -1]), (2, 4)))),
             lambda L: L.vander(L.tensor([1, 2, 3])), lambda L: L.vander(L.tensor([1., 2.]), N=0),
             lambda L: L.combinations(L.tensor([1, 2]), 3),
             lambda L: L.combinations(L.tensor([1, 2]), 2, with_replacement=True)]
    for c in cases:
        agree_both(c)
# ---- segment_reduce: values, torch parity, gradients, refusals ---------------------------------------
_SEG_DATA = [[1., 5., 2., 2., 3., -1.], [0., 4., 4., 1., 2., 2.]]
_SEG_LENGTHS = [[2, 0, 3, 1], [1, 2, 0, 3]]


def _segment_script(T):
    out = []
    d = T.tensor(_SEG_DATA, dtype=T.float64, requires_grad=True)
    lengths = T.tensor(_SEG_LENGTHS)
    for reduce in ("sum", "mean", "max", "min", "prod", "amax", "amin"):
        for initial in (None, 7.0, 2.0):
            y = T.segment_reduce(d, reduce, lengths=lengths, axis=1, initial=initial)
            (g,) = T.autograd.grad(y, d, T.ones_like(y))
            out.append((reduce, initial, y.tolist(), g.tolist()))
    offsets = T.tensor([[0, 2, 2, 5, 6], [0, 1, 3, 3, 6]])
    out.append(T.segment_reduce(d, "mean", offsets=offsets, axis=-1).tolist())
    x = T.tensor([1., 2., 2., 0., 3.], dtype=T.float64, requires_grad=True)
    y = T.segment_reduce(x, "prod", lengths=T.tensor([2, 3], dtype=T.int32))
    out.append(T.autograd.grad(y.sum(), x)[0].tolist())
    y = T.segment_reduce(x, "max", lengths=T.tensor([1, 2, 2]))
    out.append(T.autograd.grad(y.sum(), x)[0].tolist())
    out.append(T.segment_reduce(x, "sum", lengths=T.tensor([2, 2]), unsafe=True).tolist())
    out.append(T.segment_reduce(x, "sum", offsets=T.tensor([1, 3, 5])).tolist())
    z = T.arange(12.).reshape(2, 3, 2).requires_grad_()
    y = T.segment_reduce(z, "mean", lengths=T.tensor([[2, 1], [0, 3]]), axis=1)
    y.sum().backward()
    out += [y.tolist(), z.grad.tolist()]
    out.append(T.segment_reduce(T.tensor([1., 2., 2., 0.]), "prod", lengths=T.tensor([0, 4, 0]),
                                initial=3).tolist())
    return out


def test_segment_reduce_values():
    out = _segment_script(minidl)
    assert out[0] == ("sum", None, [[6.0, 0.0, 7.0, -1.0], [0.0, 8.0, 0.0, 5.0]], [[1.0] * 6] * 2)
    mean = out[3][2]
    assert np.isnan(mean[0][1]) and np.isnan(mean[1][2])  # empty segments
    assert out[6][2] == [[5.0, -np.inf, 3.0, -1.0], [0.0, 4.0, -np.inf, 2.0]]
    assert out[6][3][1] == [1.0, 0.5, 0.5, 0.0, 0.5, 0.5]  # ties share the gradient
    assert out[7][2] == [[7.0] * 4] * 2 and out[7][3] == [[0.0] * 6] * 2  # initial won


def test_segment_reduce_matches_torch():
    torch = pytest.importorskip("torch")

    def same(a, b):
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(p, q) for p, q in zip(a, b))
        if isinstance(a, float) and np.isnan(a):
            return isinstance(b, float) and np.isnan(b)
        return a == b or (isinstance(a, float) and abs(a - b) < 1e-12)

    assert same(_segment_script(minidl), _segment_script(torch))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("initial", [None, 0.5])
def test_segment_reduce_gradcheck(reduce, initial):
    rng = np.random.default_rng(3)
    x = minidl.tensor(rng.standard_normal((2, 7, 3)), dtype=minidl.float64, requires_grad=True)
    # an empty segment (NaN or inf without initial) where initial is given
    lengths = minidl.tensor([[3, 0, 4] if initial is not None else [3, 1, 3], [1, 5, 1]])
    assert gradcheck(lambda t: minidl.segment_reduce(t, reduce, lengths=lengths, axis=1,
                                                     initial=initial), (x,))
    y = minidl.segment_reduce(x, reduce, lengths=lengths, axis=1, initial=initial)
    (g,) = minidl.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError):  # first order only, as torch's
        minidl.autograd.grad(g.sum(), x)


def test_segment_reduce_refusals():
    x = minidl.tensor([1., 2., 3., 4., 5.])
    with pytest.raises(RuntimeError, match="sum to data.size"):
        minidl.segment_reduce(x, "sum", lengths=minidl.tensor([2, 2]))
    with pytest.raises(RuntimeError, match="negative"):
        minidl.segment_reduce(x, "sum", lengths=minidl.tensor([2, -1, 4]))
    with pytest.raises(RuntimeError, match="Either lengths or offsets"):
        minidl.segment_reduce(x, "sum")
    with pytest.raises(ValueError, match="got median"):
        minidl.segment_reduce(x, "median", lengths=minidl.tensor([5]))
    with pytest.raises(TypeError, match="must be Tensor"):
        minidl.segment_reduce(x, "sum", lengths=[2, 3])
    with pytest.raises(NotImplementedError):
        minidl.segment_reduce(minidl.tensor([1, 2]), "sum", lengths=minidl.tensor([2]))
    with pytest.raises(IndexError, match="Dimension out of range"):
        minidl.segment_reduce(x, "sum", lengths=minidl.tensor([5]), axis=1)
# ---- bfloat16 medians -------------------------------------------------------------------------

INF, NAN = float("inf"), float("nan")


def test_bfloat16_median_propagates_nan_and_empty_gives_nan():
    x = minidl.tensor([NAN, 1.7, 1.1], dtype=minidl.bfloat16)
    assert np.isnan(float(x.median()))
    assert float(x.nanmedian()) == pytest.approx(1.1015625)
    r = x.median(0)
    assert np.isnan(float(r.values)) and int(r.indices) == 0
    assert np.isnan(float(minidl.tensor([], dtype=minidl.bfloat16).median()))
    assert np.isnan(float(minidl.tensor([], dtype=minidl.bfloat16).nanmedian()))
    u = minidl.unique(minidl.tensor([NAN, NAN, 1.0], dtype=minidl.bfloat16))
    assert u.shape == (3,)  # each NaN its own value, as torch


def test_bfloat16_median_parity():
    torch = pytest.importorskip("torch")
    for v in ([INF, NAN, -0.0], [3.0, 1.0, 2.0, NAN], [NAN, 1.7, 1.1]):
        a = minidl.tensor(v, dtype=minidl.bfloat16)
        b = torch.tensor(v, dtype=torch.bfloat16)
        for name in ("median", "nanmedian"):
            np.testing.assert_array_equal(np.float32(getattr(a, name)().float().item()),
                                          np.float32(getattr(b, name)().float().item()))
            ours, theirs = getattr(a, name)(0), getattr(b, name)(0)
            assert int(ours.indices) == int(theirs.indices)


# ---- searchsorted sorter= and bool values -----------------------------------------------------

def test_searchsorted_with_a_sorter_and_bool_values():
    s = minidl.tensor([3.0, 1.0, 2.0])
    out = minidl.searchsorted(s, minidl.tensor([2.5, 0.0]), sorter=minidl.tensor([1, 2, 0]))
    np.testing.assert_array_equal(out.numpy(), [2, 0])
    out = minidl.searchsorted(s, minidl.tensor([2.0]), side="right",
                              sorter=minidl.tensor([1, 2, 0]))
    np.testing.assert_array_equal(out.numpy(), [2])
    for bad in (minidl.tensor([1, 2, 3]), minidl.tensor([1, 2]), minidl.tensor([1.0, 2, 0]),
                minidl.tensor([-1, 2, 0])):
        with pytest.raises(RuntimeError, match="sorter"):
            minidl.searchsorted(s, minidl.tensor([1.0]), sorter=bad)
    np.testing.assert_array_equal(
        minidl.searchsorted(minidl.tensor([0.0, 1.0]), minidl.tensor([True, False])).numpy(),
        [1, 0])
    with pytest.raises(TypeError):
        minidl.searchsorted(minidl.tensor([False, True]), minidl.tensor([True]))


def test_searchsorted_sorter_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((2, 6))
    order = np.argsort(seq, axis=-1)
    vals = rng.standard_normal((2, 4))
    for side in ("left", "right"):
        ours = minidl.searchsorted(minidl.tensor(seq), minidl.tensor(vals), side=side,
                                   sorter=minidl.tensor(order))
        theirs = torch.searchsorted(torch.tensor(seq), torch.tensor(vals), side=side,
                                    sorter=torch.tensor(order))
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


# ---- unique over a dim ------------------------------------------------------------------------

def test_unique_over_a_dim_sorts_the_slices():
    x = minidl.tensor([[1, 2], [1, 2], [0, 5]])
    values, inverse, counts = minidl.unique(x, dim=0, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(values.numpy(), [[0, 5], [1, 2]])
    np.testing.assert_array_equal(inverse.numpy(), [1, 1, 0])
    np.testing.assert_array_equal(counts.numpy(), [1, 2])
    np.testing.assert_array_equal(x.unique(dim=1).numpy(), [[1, 2], [1, 2], [0, 5]])
    y = minidl.tensor([[3, 1, 3], [2, 2, 2]])
    v, inv = minidl.unique(y, dim=-1, return_inverse=True)
    np.testing.assert_array_equal(v.numpy(), [[1, 3], [2, 2]])
    np.testing.assert_array_equal(inv.numpy(), [1, 0, 1])
    assert minidl.unique(minidl.zeros(0, 3), dim=0).shape == (0, 3)
    assert minidl.unique(minidl.zeros(2, 0), dim=1).shape == (2, 0)
    with pytest.raises(RuntimeError, match="0 sized dimensions"):
        minidl.unique(minidl.zeros(2, 0), dim=0)
    with pytest.raises(IndexError):
        minidl.unique(minidl.tensor(3.0), dim=0)


def test_unique_over_a_dim_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for shape, dim in (((5, 3), 0), ((5, 3), 1), ((4, 2, 3), -1), ((4, 2, 3), 1), ((6,), 0)):
        a = rng.integers(0, 2, shape)
        for dt in ("int64", "float64", "bool"):
            ours = minidl.unique(minidl.tensor(a.astype(dt)), dim=dim, return_inverse=True,
                                 return_counts=True)
            theirs = torch.unique(torch.tensor(a.astype(dt)), dim=dim, return_inverse=True,
                                  return_counts=True)
            for o, t in zip(ours, theirs):
                np.testing.assert_array_equal(o.numpy(), t.numpy())
