"""mm, bmm, mv, dot, outer/ger, einsum and broadcasting matmul: PyTorch's values and
gradients in float64, finite-difference checks, errors naming the shapes, and autocast's
dtypes against torch.autocast("cpu")."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch

rng = np.random.default_rng(3)


def r(*shape):
    return rng.standard_normal(shape)


def test_mm_bmm_mv_dot_outer():
    check(lambda L, a, b: L.mm(a, b), r(3, 4), r(4, 2))
    check(lambda L, a, b: a.mm(b), r(1, 4), r(4, 5))
    check(lambda L, a, b: L.bmm(a, b), r(2, 3, 4), r(2, 4, 5))
    check(lambda L, a, b: a.bmm(b), r(3, 1, 2), r(3, 2, 2))
    check(lambda L, a, b: L.mv(a, b), r(3, 4), r(4))
    check(lambda L, a, b: L.dot(a, b), r(5), r(5))
    check(lambda L, a, b: a.dot(b), r(3), r(3))
    check(lambda L, a, b: L.outer(a, b), r(3), r(4))
    check(lambda L, a, b: a.outer(b), r(2), r(5))
    check(lambda L, a, b: L.ger(a, b), r(2), r(3))


@pytest.mark.parametrize("shapes", [((2, 1, 3, 4), (5, 4, 2)), ((4,), (2, 4, 3)),
                                    ((2, 3, 4), (4,)), ((3, 4), (2, 1, 4, 5))])
def test_broadcasting_matmul(shapes):
    check(lambda L, a, b: L.matmul(a, b), r(*shapes[0]), r(*shapes[1]))
    check(lambda L, a, b: a @ b, r(*shapes[0]), r(*shapes[1]))


def test_errors_name_the_shapes():
    a, b = minidl.zeros(2, 3), minidl.zeros(4, 5)
    with pytest.raises(ValueError, match=r"mm: shapes \(2, 3\) and \(4, 5\)"):
        minidl.mm(a, b)
    with pytest.raises(ValueError, match=r"2-d matrices.*\(2, 3, 1\)"):
        minidl.mm(minidl.zeros(2, 3, 1), b)
    with pytest.raises(ValueError, match=r"batch sizes differ.*\(2, 3, 4\) and \(3, 4, 5\)"):
        minidl.bmm(minidl.zeros(2, 3, 4), minidl.zeros(3, 4, 5))
    with pytest.raises(ValueError, match=r"3-d"):
        minidl.bmm(a, b)
    with pytest.raises(ValueError, match=r"cannot be multiplied"):
        minidl.bmm(minidl.zeros(2, 3, 4), minidl.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="sizes differ: 3 and 4"):
        minidl.dot(minidl.zeros(3), minidl.zeros(4))
    with pytest.raises(TypeError, match="same dtype"):
        minidl.mm(a, minidl.zeros(3, 2, dtype=minidl.float64))
    with pytest.raises(ValueError, match="subscript 'j' has size 3 in one operand and 4"):
        minidl.einsum("ij,jk->ik", a, b)
    with pytest.raises(ValueError, match="2 operands, 1 were given"):
        minidl.einsum("ij,jk->ik", a)
    with pytest.raises(ValueError, match="name 3 dims"):
        minidl.einsum("ijk->i", a)


EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 2)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij->j", [(3, 4)]),
    ("i,i->", [(5,), (5,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,ij->ij", [(1, 3), (2, 3)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(3, 3)]),
    ("ij,jk", [(3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
    ("b...,b->...", [(2, 3, 4), (2,)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("ijk,jl,kl->il", [(2, 3, 4), (3, 5), (4, 5)]),
    ("i j , j k -> i k", [(2, 3), (3, 2)]),
]


@pytest.mark.parametrize("eq, shapes", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum(eq, shapes):
    arrays = [r(*s) for s in shapes]
    check(lambda L, *xs: L.einsum(eq, *xs), *arrays)
    check(lambda L, *xs: L.einsum(eq, list(xs)), *arrays, check_grad=False)


@needs_torch
def test_einsum_mixed_dtypes_and_integers():
    for lib in (minidl, torch):
        with pytest.raises((TypeError, RuntimeError)):
            lib.einsum("ij,j->i", lib.tensor(r(2, 3)), lib.tensor([1, 2, 3]))
    check(lambda L, a, b: L.einsum("ij,jk->ik", a, b), np.arange(6).reshape(2, 3),
          np.arange(3).reshape(3, 1), grad=False)


low_dtypes = pytest.mark.parametrize("low", ["bfloat16", "float16"])


@needs_torch
@low_dtypes
def test_autocast_dtypes_match_torch(low):
    a = rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32)
    cases = [lambda L, x: L.mm(x, x.T), lambda L, x: L.bmm(x[None], x.T[None]),
             lambda L, x: L.einsum("ij,kj->ik", x, x), lambda L, x: x.prod(0),
             lambda L, x: x.half().prod(0), lambda L, x: x.cumsum(0),
             lambda L, x: x.bfloat16().logsumexp(0), lambda L, x: L.dot(x[0], x[1]),
             lambda L, x: L.addmm(x[:, :3], x, x.T[:, :3]), lambda L, x: L.mv(x, x[0]),
             lambda L, x: L.baddbmm(x[None, :, :3], x[None], x.T[None, :, :3], beta=0.5),
             lambda L, x: L.inner(x, x), lambda L, x: L.outer(x[0], x[1])]
    for k, fn in enumerate(cases):
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            expected = fn(torch, torch.tensor(a))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(minidl, minidl.tensor(a))
        assert str(got.dtype) == str(expected.dtype).replace("torch.", ""), f"case {k}"
        np.testing.assert_allclose(got.float().numpy(), expected.float().numpy(), rtol=2e-2,
                                   atol=1e-2, err_msg=f"case {k}")


@needs_torch
def test_fake_gpu(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    a32, b32 = r(2, 3, 4).astype(np.float32), r(4, 5).astype(np.float32)
    a = minidl.tensor(a32, device="cuda", requires_grad=True)
    b = minidl.tensor(b32, device="cuda", requires_grad=True)
    y = minidl.einsum("bij,jk->bik", a, b) + minidl.bmm(a, b.expand(2, 4, 5))
    y.sum().backward()
    assert y.device == "cuda" and a.grad.device == "cuda" and b.grad.dtype == np.float32
    ta, tb = torch.tensor(a32, requires_grad=True), torch.tensor(b32, requires_grad=True)
    (torch.einsum("bij,jk->bik", ta, tb) + torch.bmm(ta, tb.expand(2, 4, 5))).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5)
