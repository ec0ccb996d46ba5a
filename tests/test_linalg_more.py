"""The rest of torch.linalg and its top-level relatives in minidl.linalg: solve_triangular,
lu_factor(_ex) / lu / lu_solve / lu_unpack, cholesky_solve / cholesky_inverse, the *_ex forms
(info tensors, check_errors), vecdot, vander, matrix_exp, householder_product / geqrf / orgqr /
ormqr, tensorinv / tensorsolve, triangular_solve and the aliases. PyTorch's values and
gradients in float64 on batched and broadcast inputs (``check``), finite-difference first and
second derivatives, and errors that name what did not fit."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch
from minidl.testing import gradcheck, gradgradcheck

rng = np.random.default_rng(11)
# torch.lu, torch.lu_solve and torch.triangular_solve are deprecated in torch
pytestmark = pytest.mark.filterwarnings("ignore:torch.(lu|lu_solve|triangular_solve) is deprecated")


def r(*shape):
    return rng.standard_normal(shape)


def tri(*shape, upper=False):
    """Triangular matrices with a diagonal far from zero (accurate finite differences)."""
    a = r(*shape) + 4 * np.eye(shape[-1])
    return np.triu(a) if upper else np.tril(a)


def t64(a, grad=True):
    return minidl.tensor(a, dtype=np.float64, requires_grad=grad)


def gg(fn, *arrays):
    """Second derivatives of fn against finite differences (float64, every input)."""
    assert gradgradcheck(fn, [t64(a) for a in arrays])


# ---- solve_triangular and triangular_solve -------------------------------------------------
@pytest.mark.parametrize("upper", [True, False])
@pytest.mark.parametrize("unit", [False, True])
@pytest.mark.parametrize("a_shape,b_shape", [((4, 4), (4, 2)), ((2, 3, 3), (3, 1, 3, 2)),
                                             ((3, 1, 3, 3), (2, 3, 4))])
def test_solve_triangular(upper, unit, a_shape, b_shape):
    # A's whole square is passed: only its triangle (and diagonal unless unit) is read, and
    # only there does it take a gradient
    a = r(*a_shape) + 4 * np.eye(a_shape[-1])
    check(lambda L, a, b: L.linalg.solve_triangular(a, b, upper=upper, unitriangular=unit),
          a, r(*b_shape))


@pytest.mark.parametrize("upper", [True, False])
def test_solve_triangular_left_false(upper):
    a = r(2, 3, 3) + 4 * np.eye(3)
    check(lambda L, a, b: L.linalg.solve_triangular(a, b, upper=upper, left=False), a, r(5, 3))


def test_solve_triangular_second_derivatives():
    gg(lambda a, b: minidl.linalg.solve_triangular(a, b, upper=True), tri(2, 3, 3, upper=True),
       r(3, 2))
    gg(lambda a, b: minidl.linalg.solve_triangular(a, b, upper=False, unitriangular=True,
                                                   left=False), tri(3, 3), r(2, 2, 3))


def test_solve_triangular_zero_on_the_diagonal_gives_inf_as_torch():
    check(lambda L, a, b: L.linalg.solve_triangular(a, b, upper=True), np.diag([1.0, 0.0]),
          np.ones((2, 1)), grad=False)


@pytest.mark.parametrize("upper,transpose,unit", [(True, False, False), (False, True, False),
                                                  (True, True, True)])
def test_triangular_solve(upper, transpose, unit):
    a = r(2, 1, 3, 3) + 4 * np.eye(3)
    check(lambda L, b, a: L.triangular_solve(b, a, upper, transpose, unit), r(3, 3, 2), a)
    # the copy of A takes its own gradient (broadcast back), as torch's
    check(lambda L, b, a: L.triangular_solve(b, a, upper, transpose, unit)[1] * 3, r(3, 3, 2),
          a)
    check(lambda L, b, a: b.triangular_solve(a, upper=upper).solution, r(3, 2), r(3, 3) + 4 *
          np.eye(3))


# ---- LU --------------------------------------------------------------------------------------
LU_SHAPES = [(4, 4), (2, 3, 3), (3, 5), (2, 5, 3), (2, 1, 4, 2)]


@pytest.mark.parametrize("shape", LU_SHAPES)
def test_lu_factor_and_lu(shape):
    a = r(*shape)
    check(lambda L, a: L.linalg.lu_factor(a), a)  # pivots: int32, 1-based, as torch's
    check(lambda L, a: L.linalg.lu_factor_ex(a), a)
    check(lambda L, a: L.linalg.lu(a), a, check_grad=False)
    check(lambda L, a: L.linalg.lu(a).U, a)
    check(lambda L, a: L.linalg.lu(a).L, a)
    check(lambda L, a: (lambda p, lo, up: p @ lo @ up)(*L.linalg.lu(a)), a)
    check(lambda L, a: L.lu_unpack(*L.linalg.lu_factor(a)), a, check_grad=False)
    check(lambda L, a: L.lu_unpack(*L.linalg.lu_factor(a))[2], a)


def test_lu_second_derivatives():
    for shape in [(3, 3), (2, 3, 4), (4, 2)]:
        gg(lambda a: minidl.linalg.lu_factor(a).LU, r(*shape))
    gg(lambda a: minidl.linalg.lu(a).L, r(2, 4, 3))


def test_lu_of_singular_matrices():
    s = np.stack([np.eye(2), [[1.0, 2.0], [2.0, 4.0]], np.diag([1.0, 0.0]), [[0.0, 0.0],
                                                                            [1.0, 1.0]]])
    check(lambda L, a: L.linalg.lu_factor_ex(a), s, grad=False)  # info 0, 2, 2, 2
    check(lambda L, a: L.linalg.lu(a), s, grad=False)  # factors anyway
    check(lambda L, a: L.lu(a, get_infos=True), s, grad=False)
    with pytest.raises(minidl.linalg.LinAlgError,
                       match=r"torch.linalg.lu_factor: \(Batch element 1\): U\[2,2\] is zero"):
        minidl.linalg.lu_factor(minidl.tensor(s))
    with pytest.raises(RuntimeError, match=r"lu_factor_ex: \(Batch element 1\): U\[2,2\]"):
        minidl.linalg.lu_factor_ex(minidl.tensor(s), check_errors=True)
    with pytest.raises(RuntimeError, match=r"lu_factor: U\[2,2\] is zero"):
        minidl.linalg.lu_factor(minidl.tensor(s[1]))
    with pytest.raises(RuntimeError, match=r"U\[2,2\] is zero"):
        minidl.lu(minidl.tensor(s))  # torch.lu without get_infos checks


def test_lu_without_pivoting():
    # torch runs pivot=False on CUDA only; the factors still multiply back to A
    a = t64(r(2, 3, 3) + 3 * np.eye(3), grad=False)
    P, L, U = minidl.linalg.lu(a, pivot=False)
    assert P.shape == (0,)
    np.testing.assert_allclose((L @ U).numpy(), a.numpy(), rtol=1e-12, atol=1e-12)
    LU, piv = minidl.linalg.lu_factor(a, pivot=False)
    assert piv.tolist() == [[1, 2, 3]] * 2
    x = minidl.linalg.lu_solve(LU, piv, minidl.ones(3, 1, dtype=minidl.float64))
    np.testing.assert_allclose((a @ x).numpy(), np.ones((2, 3, 1)), rtol=1e-10)
    assert gradcheck(lambda a: minidl.linalg.lu_factor(a, pivot=False).LU,
                     [t64(r(3, 3) + 3 * np.eye(3))])


@pytest.mark.parametrize("left,adjoint", [(True, False), (True, True), (False, False),
                                          (False, True)])
@pytest.mark.parametrize("a_shape,b_shape", [((3, 3), (3, 2)), ((2, 3, 3), (4, 1, 3, 3))])
def test_lu_solve(left, adjoint, a_shape, b_shape):
    b = r(*b_shape) if left else r(*b_shape).swapaxes(-1, -2)
    # the gradient reaches A through lu_factor, and LU itself as an input
    check(lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(a), b, left=left,
                                            adjoint=adjoint), r(*a_shape), b)
    a = r(*a_shape)
    lu, piv = (t.numpy() for t in minidl.linalg.lu_factor(minidl.tensor(a, dtype=np.float64)))
    check(lambda L, lu, piv, b: L.linalg.lu_solve(lu, piv, b, left=left, adjoint=adjoint),
          lu, piv, b)


def test_lu_solve_second_derivatives_and_the_deprecated_forms():
    gg(lambda a, b: minidl.linalg.lu_solve(*minidl.linalg.lu_factor(a), b, adjoint=True),
       r(3, 3), r(2, 3, 2))
    check(lambda L, b, a: L.lu_solve(b, *L.linalg.lu_factor(a)), r(3, 2), r(3, 3))
    check(lambda L, b, a: b.lu_solve(*a.lu()), r(2, 3, 2), r(2, 3, 3))
    check(lambda L, a: L.lu(a), r(2, 3, 3))


@pytest.mark.parametrize("shape", [(2, 150, 130), (130, 150), (70, 70)])
def test_lu_and_triangular_solves_past_one_block(shape):
    # past minidl.linalg._BLOCK (64) rows both run blocked: the same pivots and values
    a = r(*shape)
    check(lambda L, a: L.linalg.lu_factor(a), a, grad=shape == (70, 70))
    n = shape[-1]
    t = 0.1 * r(2, n, n) + 4 * np.eye(n)  # well conditioned at this size
    check(lambda L, t, b: L.linalg.solve_triangular(t, b, upper=False), t, r(n, 3),
          grad=n < 100)
    check(lambda L, t, b: L.linalg.solve_triangular(t, b, upper=True, unitriangular=True), t,
          r(n, 3), grad=False)


# ---- solves and inverses from a Cholesky factor ---------------------------------------------
@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_and_inverse(upper):
    def factor(L, l):  # the triangle, so that finite differences see only what is read
        return l.triu() if upper else l.tril()
    ls = tri(2, 3, 3, upper=upper)
    check(lambda L, b, l: L.cholesky_solve(b, factor(L, l), upper=upper), r(4, 1, 3, 2), ls)
    check(lambda L, b, l: b.cholesky_solve(factor(L, l), upper), r(3, 1), ls[0])
    check(lambda L, l: L.cholesky_inverse(factor(L, l), upper=upper), ls)
    check(lambda L, l: factor(L, l).cholesky_inverse(upper), ls[1])
    # on the whole square torch's gradient reaches the unread triangle too: the same here
    check(lambda L, b, l: L.cholesky_solve(b, l, upper=upper), r(3, 2), ls[0] + 0.1 * r(3, 3),
          check_grad=False)
    check(lambda L, l: L.cholesky_inverse(l, upper=upper), ls[0] + 0.1 * r(3, 3),
          check_grad=False)
    gg(lambda b, l: minidl.cholesky_solve(b, factor(minidl, l), upper=upper), r(3, 2), ls[0])
    gg(lambda l: minidl.cholesky_inverse(factor(minidl, l), upper=upper), ls)


# ---- the *_ex forms ----------------------------------------------------------------------------
def test_ex_forms_on_good_input_match_the_plain_ops_and_torch():
    a = r(2, 3, 3)

    def spd(L, a):  # symmetric in the graph: Cholesky's gradient is torch's symmetric one
        return a @ a.mT + L.eye(3, dtype=a.dtype)
    check(lambda L, a: L.linalg.cholesky_ex(spd(L, a)), a)
    check(lambda L, a: L.linalg.cholesky_ex(spd(L, a), upper=True), a)
    check(lambda L, a: L.linalg.inv_ex(a), a)
    check(lambda L, a, b: L.linalg.solve_ex(a, b), a, r(3, 2))
    check(lambda L, a, b: L.linalg.solve_ex(a, b, left=False), a, r(5, 3))
    gg(lambda a: minidl.linalg.inv_ex(a).inverse, a)
    gg(lambda a: minidl.linalg.cholesky_ex(a @ a.mT + minidl.eye(3, dtype=a.dtype)).L, a)


def test_ex_forms_report_failures_in_info():
    c = np.array([[4.0, 2, 2, 1], [2, 5, 1, 1], [2, 1, -3, 1], [1, 1, 1, 3]])
    not_pd = np.stack([c, c @ c.T, np.diag([1.0, 1.0, -1.0, 1.0])])
    # info 3, 0, 3, and LAPACK's partial factor where it stopped
    check(lambda L, a: L.linalg.cholesky_ex(a), not_pd, grad=False)
    check(lambda L, a: L.linalg.cholesky_ex(a, upper=True), not_pd, grad=False)
    s = np.stack([np.eye(2), [[1.0, 2.0], [2.0, 4.0]], np.diag([1.0, 0.0])])
    check(lambda L, a: L.linalg.inv_ex(a), s, grad=False)  # inf / nan as LAPACK's
    check(lambda L, a, b: L.linalg.solve_ex(a, b), s, np.ones((3, 2, 1)), grad=False)
    check(lambda L, a, b: L.linalg.solve_ex(a, b), s, np.ones(2), grad=False)
    with pytest.raises(minidl.linalg.LinAlgError,
                       match=r"linalg.cholesky_ex: \(Batch element 0\): .*not positive-definite"
                             r" \(the leading minor of order 3"):
        minidl.linalg.cholesky_ex(minidl.tensor(not_pd), check_errors=True)
    with pytest.raises(RuntimeError, match=r"linalg.inv_ex: \(Batch element 1\): The diagonal "
                                           "element 2 is zero"):
        minidl.linalg.inv_ex(minidl.tensor(s), check_errors=True)
    with pytest.raises(RuntimeError, match=r"solve_ex: \(Batch element 1\): The solver failed"):
        minidl.linalg.solve_ex(minidl.tensor(s), minidl.ones(3, 2, 1), check_errors=True)
    assert minidl.linalg.inv_ex(minidl.tensor(s[1])).info.dtype == np.int32


def test_inv_names_getrf_s_zero_pivot():
    # the first leading block is singular, but with row exchanges U's second pivot is zero
    with pytest.raises(RuntimeError, match="The diagonal element 2 is zero"):
        minidl.linalg.inv(minidl.tensor([[0.0, 0.0], [1.0, 1.0]]))


# ---- products, the exponential, Householder products, aliases -------------------------------
def test_vecdot_vander():
    check(lambda L, x, y: L.linalg.vecdot(x, y), r(2, 3), r(3))
    check(lambda L, x, y: L.linalg.vecdot(x, y, dim=0), r(4, 1), r(4, 3))
    check(lambda L, x: L.linalg.vander(x), r(2, 3))
    check(lambda L, x: L.linalg.vander(x, N=5), np.array([0.0, 1.5, -2.0]))  # 0 included
    check(lambda L, x: L.linalg.vander(x), np.arange(4))  # integers stay integers
    gg(lambda x: minidl.linalg.vander(x, N=4), np.array([0.0, 0.5, -1.5]))


def test_matrix_exp():
    check(lambda L, a: L.linalg.matrix_exp(a), r(2, 3, 3))
    check(lambda L, a: L.matrix_exp(a * 3), r(3, 3))  # scaled and squared
    check(lambda L, a: a.matrix_exp(), r(2, 2))
    check(lambda L, a: L.linalg.matrix_exp(a), r(3, 3).astype(np.float32), rtol=1e-5, atol=1e-6,
          check_grad=False)
    gg(lambda a: minidl.linalg.matrix_exp(a), r(2, 3, 3) * 0.5)


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 4), (2, 1, 3, 2)])
def test_householder_product_geqrf_orgqr(shape):
    a = r(*shape)
    check(lambda L, a: L.geqrf(a), a, grad=False)
    check(lambda L, a: a.geqrf(), a, grad=False)
    h, tau = (t.numpy() for t in minidl.geqrf(minidl.tensor(a, dtype=np.float64)))
    check(lambda L, h, tau: L.linalg.householder_product(h, tau), h, tau)
    check(lambda L, h, tau: L.orgqr(h, tau), h, tau)
    check(lambda L, h, tau: h.orgqr(tau[..., :1]), h, tau)  # fewer reflectors than columns
    # Q of geqrf is linalg.qr's Q
    check(lambda L, a: L.linalg.householder_product(*L.geqrf(a)), a, grad=False)
    gg(lambda h, tau: minidl.linalg.householder_product(h, tau), h, tau)


@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("transpose", [False, True])
def test_ormqr(left, transpose):
    a = r(2, 5, 3)
    h, tau = (t.numpy() for t in minidl.geqrf(minidl.tensor(a, dtype=np.float64)))
    c = r(2, 5, 2) if left else r(2, 2, 5)
    check(lambda L, h, tau, c: L.ormqr(h, tau, c, left, transpose), h, tau, c)
    check(lambda L, h, tau, c: h.ormqr(tau, c, left=left, transpose=transpose), h, tau, c)
    gg(lambda h, tau, c: minidl.ormqr(h, tau, c, left, transpose), h[0], tau[0], c[0])


def test_geqrf_has_no_derivative_as_torch():
    a, _ = minidl.geqrf(t64(r(3, 3)))
    with pytest.raises(NotImplementedError, match="derivative for 'geqrf' is not implemented"):
        a.sum().backward()


def test_tensorinv_tensorsolve():
    check(lambda L, a: L.linalg.tensorinv(a, ind=1), r(6, 2, 3))
    check(lambda L, a: L.linalg.tensorinv(a), r(2, 3, 6))
    check(lambda L, a, b: L.linalg.tensorsolve(a, b), r(2, 3, 6), r(2, 3))
    check(lambda L, a, b: L.linalg.tensorsolve(a, b, dims=(0,)), r(6, 2, 3), r(2, 3))


def test_aliases():
    check(lambda L, a: L.linalg.diagonal(a), r(2, 3, 4))
    check(lambda L, a: L.linalg.diagonal(a, offset=1, dim1=0, dim2=2), r(2, 3, 4))
    check(lambda L, a, b: L.linalg.matmul(a, b), r(2, 3, 4), r(4, 2))
    check(lambda L, a: L.adjoint(a), r(2, 3, 4))
    check(lambda L, a: a.adjoint(), r(3, 4))


def test_float32_stays_float32():
    a = r(2, 3, 3).astype(np.float32) + 3 * np.eye(3, dtype=np.float32)
    b = r(3, 2).astype(np.float32)
    for fn in [lambda L, a, b: L.linalg.solve_triangular(a, b, upper=True),
               lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(a), b),
               lambda L, a, b: L.cholesky_solve(b, a.tril()),
               lambda L, a, b: L.linalg.lu_factor_ex(a)]:
        check(fn, a, b, rtol=1e-5, atol=1e-5, check_grad=False)


# ---- LDL^T ---------------------------------------------------------------------------------------
def symmetric(*shape, small_diagonal=False):
    a = r(*shape)
    a = a + a.swapaxes(-1, -2)
    if small_diagonal:  # Bunch-Kaufman then takes 2x2 pivots (negative entries in pivots)
        a[..., np.arange(shape[-1]), np.arange(shape[-1])] *= 0.01
    return a


@pytest.mark.parametrize("n", [1, 2, 5, 9])
@pytest.mark.parametrize("small_diagonal", [False, True])
def test_ldl_factor_and_solve(n, small_diagonal):
    a, b = symmetric(3, n, n, small_diagonal=small_diagonal), r(3, n, 2)
    LD, piv, info = minidl.linalg.ldl_factor_ex(minidl.tensor(a, dtype=np.float64))
    assert piv.dtype == np.int32 and info.numpy().tolist() == [0, 0, 0]
    x = minidl.linalg.ldl_solve(LD, piv, minidl.tensor(b, dtype=np.float64))
    np.testing.assert_allclose(a @ x.numpy(), b, rtol=1e-8, atol=1e-8)
    if torch is not None:  # LAPACK's pivots and packed factors, exactly
        check(lambda L, a: L.linalg.ldl_factor_ex(a), a, grad=False)
        check(lambda L, a: L.linalg.ldl_factor(a, hermitian=True), a, grad=False)
        check(lambda L, a, b: L.linalg.ldl_solve(*L.linalg.ldl_factor(a), b), a, b, grad=False)
        check(lambda L, a, b: L.linalg.ldl_solve(*L.linalg.ldl_factor(a[0]), b), a, b,
              grad=False)  # one factor, a batch of right-hand sides
    if small_diagonal and n > 2:
        assert (piv.numpy() < 0).any()


def test_ldl_singular_and_no_derivative():
    LD, piv, info = minidl.linalg.ldl_factor_ex(minidl.zeros(2, 3, 3, dtype=minidl.float64))
    assert info.numpy().tolist() == [1, 1] and piv.numpy().tolist() == [[1, 2, 3]] * 2
    s = np.stack([np.eye(3), np.diag([1.0, 0.0, 1.0])])
    with pytest.raises(minidl.linalg.LinAlgError, match=r"ldl_factor: \(Batch element 1\): "
                                                        "The factorization could not be "
                                                        "completed: D's diagonal block at "
                                                        "column 2"):
        minidl.linalg.ldl_factor(minidl.tensor(s))
    with pytest.raises(RuntimeError, match="ldl_factor_ex"):
        minidl.linalg.ldl_factor_ex(minidl.tensor(s), check_errors=True)
    a = t64(symmetric(3, 3))
    LD, piv = minidl.linalg.ldl_factor(a)
    with pytest.raises(NotImplementedError, match="derivative for 'linalg_ldl_factor_ex'"):
        LD.sum().backward()
    with pytest.raises(NotImplementedError, match="derivative for 'linalg_ldl_solve'"):
        minidl.linalg.ldl_solve(LD.detach(), piv, t64(r(3, 1))).sum().backward()


def test_cpu_autocast_runs_torch_s_float32_ops_in_float32():
    a = r(3, 3) + 3 * np.eye(3)
    low = minidl.bfloat16
    A, B = minidl.tensor(a).to(low), minidl.tensor(r(3, 2)).to(low)
    Lo = minidl.tensor(np.tril(a)).to(low)
    with minidl.autocast("cpu", dtype=low):
        outs = {"cholesky_solve": minidl.cholesky_solve(B, Lo),
                "cholesky_inverse": minidl.cholesky_inverse(Lo),
                "triangular_solve": minidl.triangular_solve(B, A).solution,
                "inv_ex": minidl.linalg.inv_ex(A).inverse,
                "tensorinv": minidl.linalg.tensorinv(A, ind=1),
                "householder_product": minidl.linalg.householder_product(A, B[:, 0]),
                "ormqr": minidl.ormqr(A, B[:, 0], A),
                "geqrf": minidl.geqrf(A).a,
                "lu_solve": minidl.lu_solve(B, *minidl.linalg.lu_factor(A.float())),
                "matrix_exp": minidl.linalg.matrix_exp(A)}  # runs in bfloat16, as torch's
    got = {k: v.dtype for k, v in outs.items()}
    assert got == {**{k: np.float32 for k in outs}, "matrix_exp": low}, got
    with pytest.raises(TypeError, match="16-bit"):  # outside a region, as torch refuses it
        minidl.cholesky_solve(B, Lo)
    # (torch 2.13's own bfloat16 exponential on the CPU gives inf/nan: compared with float64)
    small = 0.3 * r(3, 3)
    np.testing.assert_allclose(
        minidl.linalg.matrix_exp(minidl.tensor(small).to(low)).float().numpy(),
        minidl.linalg.matrix_exp(minidl.tensor(small, dtype=np.float64)).numpy(), rtol=2e-2,
        atol=1e-2)


@pytest.mark.parametrize("a_shape,b_shape", [((0, 0), (0, 2)), ((2, 0, 0), (2, 0, 1)),
                                             ((0, 3, 3), (0, 3, 1))])
def test_empty_matrices_and_batches(a_shape, b_shape):
    a, b = np.zeros(a_shape), np.zeros(b_shape)
    for fn in [lambda L, a, b: L.linalg.solve_triangular(a, b, upper=True),
               lambda L, a, b: L.linalg.lu_factor_ex(a), lambda L, a, b: L.linalg.lu(a),
               lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(a), b),
               lambda L, a, b: L.cholesky_solve(b, a), lambda L, a, b: L.cholesky_inverse(a),
               lambda L, a, b: L.linalg.cholesky_ex(a), lambda L, a, b: L.linalg.inv_ex(a),
               lambda L, a, b: L.linalg.matrix_exp(a), lambda L, a, b: L.geqrf(a),
               lambda L, a, b: L.linalg.ldl_factor_ex(a),
               lambda L, a, b: L.linalg.ldl_solve(*L.linalg.ldl_factor(a), b)]:
        if torch is None:
            fn(minidl, minidl.tensor(a, dtype=np.float64), minidl.tensor(b, dtype=np.float64))
        else:
            check(fn, a, b, grad=False)


# ---- eig / eigvals (complex results) ----------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 3)])
def test_eig_and_eigvals_of_real_matrices(shape):
    a = r(*shape)  # random real matrices: complex-conjugate pairs among the eigenvalues
    check(lambda L, a: L.view_as_real(L.linalg.eigvals(a)), a)
    check(lambda L, a: L.view_as_real(L.linalg.eig(a).eigenvalues), a)
    # geev's eigenvectors (unit, largest component real), and gradients of phase-free losses.
    # The sign of each vector is LAPACK's choice, and torch's LAPACK and NumPy's choose
    # differently on some CPUs (an AVX2 Zen 3 flipped some that agree on a Zen 4): compared
    # with the phase of torch's largest component divided out of both
    check(lambda L, a: L.view_as_real(_phase_free(L, L.linalg.eig(a).eigenvectors)), a,
          grad=False)
    check(lambda L, a: L.linalg.eig(a).eigenvectors.abs(), a)
    check(lambda L, a: (lambda w, v: (v.abs() ** 2 * w.real.unsqueeze(-2)).sum(-1))(
        *L.linalg.eig(a)), a)


def _phase_free(L, v):
    """Eigenvectors (columns) times the conjugate phase of each one's own component at the
    row where it is largest in magnitude (ties go to the first such row)."""
    k = L.argmax(v.abs(), dim=-2, keepdim=True)
    pivot = L.gather(v, -2, k)
    return v * (pivot.conj() / pivot.abs())


def test_eig_of_complex_matrices():
    c = r(2, 3, 3) + 1j * r(2, 3, 3)
    x = minidl.tensor(c, dtype=np.complex128, requires_grad=True)
    w, v = minidl.linalg.eig(x)
    assert w.dtype == np.complex128 and v.dtype == np.complex128
    np.testing.assert_allclose((x @ v).detach().numpy(), (v * w.unsqueeze(-2)).detach().numpy(),
                               atol=1e-12)
    assert gradcheck(lambda x: minidl.view_as_real(minidl.linalg.eigvals(x)),
                     [minidl.tensor(c[0], dtype=np.complex128, requires_grad=True)])
    assert gradcheck(lambda x: minidl.linalg.eig(x).eigenvectors.abs(),
                     [minidl.tensor(c[0], dtype=np.complex128, requires_grad=True)])
    if torch is not None:
        t = torch.tensor(c, requires_grad=True)
        tw, tv = torch.linalg.eig(t)
        np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), atol=1e-12)
        (tv.abs().sum() + tw.imag.sum()).backward()
        (v.abs().sum() + w.imag.sum()).backward()
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_eig_second_derivatives():
    a = r(3, 3)
    gg(lambda a: minidl.view_as_real(minidl.linalg.eigvals(a)), a)
    gg(lambda a: (lambda w, v: v.abs() ** 2 * w.real.unsqueeze(-2))(*minidl.linalg.eig(a)), a)
    c = minidl.tensor(a + 1j * r(3, 3), dtype=np.complex128, requires_grad=True)
    assert gradgradcheck(lambda c: minidl.view_as_real(minidl.linalg.eigvals(c)), [c])


def test_eig_dtypes_and_refusals():
    w = minidl.linalg.eigvals(minidl.tensor(r(3, 3)))
    assert w.dtype == np.complex64  # float32 in, complex64 out, as torch
    a = minidl.tensor(np.array([[0.0, -2.0], [1.0, 0.0]]), dtype=np.float64, requires_grad=True)
    _, v = minidl.linalg.eig(a)  # eigenvalues +-i sqrt(2): v's phase is a convention
    with pytest.raises(RuntimeError, match="depends on this quantity, so it is ill-defined"):
        v.real.sum().backward()
    with pytest.raises(ValueError, match="eig: A must be batches of square matrices"):
        minidl.linalg.eig(minidl.zeros(2, 3))
    with pytest.raises(TypeError, match="float32 or float64.*int64"):
        minidl.linalg.eigvals(minidl.tensor([[1, 2], [3, 4]]))


# ---- bad input ---------------------------------------------------------------------------------
def test_errors_name_what_did_not_fit():
    z = minidl.zeros
    LinAlg = minidl.linalg
    with pytest.raises(ValueError, match="solve_triangular: A must be batches of square "
                                         "matrices, but they are 2 by 3"):
        LinAlg.solve_triangular(z(2, 3), z(2, 1), upper=True)
    with pytest.raises(ValueError, match=r"Incompatible shapes of A and B for the equation "
                                         r"AX = B \(3x3 and 2x1\)"):
        LinAlg.solve_triangular(z(3, 3), z(2, 1), upper=True)
    with pytest.raises(ValueError, match=r"equation XA = B \(3x3 and 2x2\)"):
        LinAlg.solve_triangular(z(3, 3), z(2, 2), upper=True, left=False)
    with pytest.raises(RuntimeError, match="B must have at least 2 dimensions"):
        LinAlg.solve_triangular(z(3, 3), z(3), upper=True)
    with pytest.raises(TypeError, match="same dtype.*float32 and float64"):
        LinAlg.solve_triangular(z(3, 3), z(3, 1, dtype=minidl.float64), upper=True)
    with pytest.raises(ValueError, match=r"batch dims of A \(2, 3, 3\) and B \(3, 3, 1\)"):
        LinAlg.solve_triangular(z(2, 3, 3), z(3, 3, 1), upper=True)
    with pytest.raises(TypeError, match="float32 or float64.*int64"):
        LinAlg.lu_factor(minidl.tensor([[1, 2], [3, 4]]))
    with pytest.raises(TypeError, match="16-bit"):
        LinAlg.lu_factor(z(2, 2, dtype=minidl.float16))
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(3,\)"):
        LinAlg.lu_factor(z(3))
    LU, piv = LinAlg.lu_factor(minidl.eye(3))
    with pytest.raises(ValueError, match=r"equation AX = B \(3x3 and 4x1\)"):
        LinAlg.lu_solve(LU, piv, z(4, 1))
    with pytest.raises(TypeError, match="pivots must be an int32 tensor.*int64"):
        LinAlg.lu_solve(LU, piv.long(), z(3, 1))
    with pytest.raises(ValueError, match=r"LU.shape\[:-1\] and pivots.shape to be the same, "
                                         r"but got pivots with shape \(2,\)"):
        LinAlg.lu_solve(LU, piv[:2], z(3, 1))
    with pytest.raises(TypeError, match="LU_pivots is expected to be a tensor of int32"):
        minidl.lu_unpack(LU, piv.long())
    with pytest.raises(ValueError, match="between 1 and LU.size\\(-2\\) = 3"):
        minidl.lu_unpack(LU, minidl.tensor([1, 2, 7], dtype=minidl.int32))
    with pytest.raises(ValueError, match="each A matrix is 3 by 3 but each b matrix is 4 by 1"):
        minidl.cholesky_solve(z(4, 1), minidl.eye(3))
    with pytest.raises(ValueError, match="input2 must be batches of square matrices"):
        minidl.cholesky_solve(z(3, 1), z(3, 2))
    with pytest.raises(TypeError, match="Expected x and y to have the same dtype"):
        LinAlg.vecdot(z(3), z(3, dtype=minidl.float64))
    with pytest.raises(ValueError, match=r"x \(3,\) and y \(4,\) do not broadcast"):
        LinAlg.vecdot(z(3), z(4))
    with pytest.raises(ValueError, match="N must be greater than 1"):
        LinAlg.vander(z(3), N=1)
    with pytest.raises(TypeError, match="floating point and integer.*bool"):
        LinAlg.vander(minidl.tensor([True, False]))
    with pytest.raises(ValueError, match=r"input.shape\[-2\] must be greater than or equal to "
                                         r"input.shape\[-1\], got 3 and 4"):
        LinAlg.householder_product(z(3, 4), z(2))
    with pytest.raises(ValueError, match=r"must be greater than or equal to tau.shape\[-1\], "
                                         "got 3 and 4"):
        LinAlg.householder_product(z(4, 3), z(4))
    with pytest.raises(ValueError, match=r"batch dimensions of tau.*\(2,\), but got \(3,\)"):
        LinAlg.householder_product(z(2, 4, 3), z(3, 3))
    with pytest.raises(ValueError, match=r"other.shape\[-2\] must be equal to input.shape\[-2\]"
                                         ", got 5 and 4"):
        minidl.ormqr(z(4, 3), z(3), z(5, 2))
    with pytest.raises(ValueError, match=r"tau.shape\[-1\] must be equal to"):
        minidl.ormqr(z(4, 3), z(2), z(4, 2))
    with pytest.raises(ValueError, match="strictly positive integer for 'ind', but got 0"):
        LinAlg.tensorinv(z(2, 3, 6), ind=0)
    with pytest.raises(ValueError, match="18 != 2"):
        LinAlg.tensorinv(z(2, 3, 6), ind=1)
    with pytest.raises(ValueError, match=r"B of shape \(5,\)"):
        LinAlg.tensorsolve(z(2, 3, 6), z(5))
    with pytest.raises(ValueError, match="matrix_exp: A must be batches of square matrices"):
        LinAlg.matrix_exp(z(3, 4))
    with pytest.raises(ValueError, match="adjoint.*Got 1-D tensor"):
        minidl.adjoint(z(3))
    with pytest.raises(ValueError, match="ldl_factor: A must be batches of square matrices"):
        LinAlg.ldl_factor(z(3, 4))
    LD, lpiv = LinAlg.ldl_factor(minidl.eye(3))
    with pytest.raises(ValueError, match="each A matrix is 3 by 3 but each b matrix is 2 by 1"):
        LinAlg.ldl_solve(LD, lpiv, z(2, 1))
    with pytest.raises(TypeError, match="pivots must be an integer tensor.*float32"):
        LinAlg.ldl_solve(LD, lpiv.float(), z(3, 1))
    with pytest.raises(ValueError, match="between 1 and 3 in absolute value"):
        LinAlg.ldl_solve(LD, lpiv * 5, z(3, 1))
    # torch's bad-input errors are RuntimeErrors: these are both
    with pytest.raises(RuntimeError):
        LinAlg.lu_solve(LU, piv, z(4, 1))


@needs_torch
def test_names_match_torch():
    left_out = {"common_notes"}  # (a docs string)
    missing = [n for n in dir(torch.linalg) if not n.startswith("_") and n not in left_out
               and not hasattr(minidl.linalg, n)]
    assert not missing
    for name in ["lu_unpack", "lu_solve", "lu", "cholesky_solve", "cholesky_inverse",
                 "triangular_solve", "geqrf", "orgqr", "ormqr", "adjoint", "matrix_exp"]:
        assert hasattr(torch, name) and hasattr(minidl, name), name
        if name != "lu_unpack":
            assert hasattr(minidl.Tensor, name), name


def test_on_the_fake_gpu(monkeypatch):
    """The triangular solves and LU run on the array module of the data (the numpy-backed
    stand-in for CuPy), with the CPU's values and gradients."""
    import _fake_gpu

    _fake_gpu.install(monkeypatch, None)
    a, b = r(2, 3, 3) + 3 * np.eye(3), r(3, 2)

    def run(device):
        x = minidl.tensor(a, dtype=np.float64, device=device, requires_grad=True)
        y = minidl.tensor(b, dtype=np.float64, device=device, requires_grad=True)
        lu, piv, info = minidl.linalg.lu_factor_ex(x)
        out = (minidl.linalg.lu_solve(lu, piv, y).sum()
               + minidl.linalg.solve_triangular(x, y, upper=True).sum()
               + minidl.cholesky_solve(y, x.tril()).sum() + minidl.linalg.lu(x).P.sum()
               + minidl.linalg.matrix_exp(x).sum() + minidl.linalg.inv_ex(x).inverse.sum())
        out.backward()
        return out, x, y, piv, info

    out, x, y, piv, info = run("cuda")
    assert str(x.grad.device).startswith("cuda") and str(piv.device).startswith("cuda")
    cpu = run("cpu")
    np.testing.assert_allclose(out.numpy(), cpu[0].numpy(), rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), cpu[1].grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(y.grad.numpy(), cpu[2].grad.numpy(), rtol=1e-10)
    assert piv.numpy().tolist() == cpu[3].numpy().tolist() and info.numpy().tolist() == [0, 0]
    s = minidl.tensor(np.stack([np.eye(2), np.zeros((2, 2))]), device="cuda")
    assert minidl.linalg.inv_ex(s).info.numpy().tolist() == [0, 1]
    with pytest.raises(RuntimeError, match="Batch element 1"):
        minidl.linalg.lu_factor(s)


STRICT_OPS = {  # name: (fn of x (2, 3, 3) and y (3, 2), host copies allowed)
    "solve_triangular": (lambda L, x, y: L.linalg.solve_triangular(x, y, upper=True), 0),
    "lu_factor_ex": (lambda L, x, y: L.linalg.lu_factor_ex(x).LU, 0),
    "lu": (lambda L, x, y: L.linalg.lu(x).U, 0),
    "lu_solve": (lambda L, x, y: L.linalg.lu_solve(*L.linalg.lu_factor_ex(x)[:2], y), 0),
    "cholesky_solve": (lambda L, x, y: L.cholesky_solve(y, x.tril()), 0),
    "cholesky_inverse": (lambda L, x, y: L.cholesky_inverse(x.tril()), 0),
    "householder_product": (lambda L, x, y: L.linalg.householder_product(x, y[:2].mT), 0),
    "ormqr": (lambda L, x, y: L.ormqr(x, y[:, 0].expand(2, 3), x), 0),
    "vander": (lambda L, x, y: L.linalg.vander(y), 0),
    "vecdot": (lambda L, x, y: L.linalg.vecdot(x, y[:, 0]), 0),
    "geqrf": (lambda L, x, y: L.geqrf(x.detach()).tau, 0),
    "matrix_exp": (lambda L, x, y: L.linalg.matrix_exp(x), 2),  # the norm picks the scaling
    "inv_ex": (lambda L, x, y: L.linalg.inv_ex(x).inverse, 1),  # CuPy's inv: a finite check
    "eigvals": (lambda L, x, y: L.view_as_real(L.linalg.eigvals(x)), 0),
    "eig": (lambda L, x, y: L.linalg.eig(x).eigenvectors.abs(), 1),  # torch's phase check
}


@pytest.mark.parametrize("name", sorted(STRICT_OPS))
def test_on_the_strict_fake_gpu(monkeypatch, name):
    """As CuPy would run them: no numpy arrays beside device arrays, and host copies bounded."""
    import _fake_gpu

    _fake_gpu.install(monkeypatch, None)
    fn, syncs = STRICT_OPS[name]
    a, b = r(2, 3, 3) + 3 * np.eye(3), r(3, 2)

    def run(device):
        x, y = (minidl.tensor(v, dtype=np.float64, device=device, requires_grad=True)
                for v in (a, b))
        out = fn(minidl, x, y)
        if out.requires_grad:
            (out * minidl.tensor(np.cos(np.arange(out.numel())).reshape(out.shape),
                                 dtype=np.float64, device=device)).sum().backward()
        return out, x.grad, y.grad

    cpu = run("cpu")
    with _fake_gpu.strict(minidl.linalg) as counted:
        gpu = run("cuda")
    assert len(counted) <= syncs, counted
    for c, g in zip(cpu, gpu):
        assert (c is None) == (g is None)
        if c is not None:
            assert str(g.device).startswith("cuda")
            np.testing.assert_allclose(g.numpy(), c.numpy(), rtol=1e-10, atol=1e-12)


def _second_derivatives(L, fn, arrays):
    """d/dinputs <d/dinputs <fn(inputs), v>, w> on minidl or torch (L), fixed v and w."""
    if L is minidl:
        ts = [minidl.tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
        grad = minidl.autograd.grad
    else:
        ts = [L.tensor(a, requires_grad=True) for a in arrays]
        grad = L.autograd.grad
    out = fn(L, *ts)
    v = np.cos(np.arange(out.numel())).reshape(tuple(out.shape))
    gs = grad((out * L.tensor(v, dtype=L.float64)).sum(), ts, create_graph=True)
    total = sum((g * L.tensor(np.sin(np.arange(g.numel()) + k).reshape(tuple(g.shape)),
                              dtype=L.float64)).sum() for k, g in enumerate(gs))
    return [h.detach().numpy() for h in grad(total, ts)]


def test_second_derivatives_match_torch():
    torch = pytest.importorskip("torch")
    lo = tri(2, 3, 3) + 0.2 * np.triu(r(3, 3), 1)  # the unread triangle is not zero
    cases = [
        (lambda L, a, b: L.linalg.solve_triangular(a, b, upper=False), [lo, r(3, 2)]),
        (lambda L, a: L.linalg.lu_factor(a)[0], [r(2, 3, 3)]),
        (lambda L, a: L.linalg.lu(a)[2], [r(3, 5)]),
        (lambda L, a: L.linalg.lu(a)[1], [r(5, 3)]),
        (lambda L, a, b: L.linalg.lu_solve(*L.linalg.lu_factor(a), b, adjoint=True),
         [r(3, 3), r(3, 2)]),
        (lambda L, b, lo: L.cholesky_solve(b, lo), [r(3, 2), lo]),
        (lambda L, b, up: L.cholesky_solve(b, up, upper=True), [r(3, 2), lo.swapaxes(1, 2)]),
        (lambda L, lo: L.cholesky_inverse(lo), [lo]),
        (lambda L, up: L.cholesky_inverse(up, upper=True), [lo.swapaxes(1, 2)]),
        (lambda L, a: L.linalg.matrix_exp(a), [r(3, 3)]),
        (lambda L, a, t: L.linalg.householder_product(a, t), [r(4, 3), r(2)]),
        (lambda L, a, t, c: L.ormqr(a, t, c, transpose=True), [r(4, 3), r(3), r(4, 2)]),
        (lambda L, b, a: L.triangular_solve(b, a)[0], [r(3, 2), lo.swapaxes(1, 2)]),
        (lambda L, a: L.linalg.inv_ex(a)[0], [r(3, 3)]),
        (lambda L, a: L.view_as_real(L.linalg.eigvals(a)), [r(3, 3)]),
        (lambda L, a: L.linalg.eig(a).eigenvectors.abs(), [r(2, 3, 3)]),
    ]
    for k, (fn, arrays) in enumerate(cases):
        for m, t in zip(_second_derivatives(minidl, fn, arrays),
                        _second_derivatives(torch, fn, arrays)):
            np.testing.assert_allclose(m, t, rtol=1e-7, atol=1e-9, err_msg=f"case {k}")


# ---- svd_lowrank's q over the matrix size (and poisson/binomial shapes) as torch's -------------------
def test_svd_lowrank_q_over_the_matrix_size():
    rng = np.random.default_rng(0)
    a = minidl.tensor((rng.standard_normal((8, 3)) @ rng.standard_normal((3, 5))))
    u, s, v = minidl.svd_lowrank(a)  # torch's default q=6 > min(8, 5)
    assert (u.shape, s.shape, v.shape) == ((8, 5), (5,), (5, 5))
    np.testing.assert_allclose(s.numpy()[:3], np.linalg.svd(a.numpy())[1][:3], rtol=1e-5)
    assert minidl.svd_lowrank(a, q=0)[1].shape == (0,)
    with pytest.raises(ValueError, match="q"):
        minidl.svd_lowrank(a, q=-1)


def test_lowrank_poisson_binomial_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((7, 2)) @ rng.standard_normal((2, 4))).astype(np.float64)
    for lib in (minidl, torch):
        s = lib.svd_lowrank(lib.tensor(a), q=6)[1].numpy()
        shapes = [tuple(t.shape) for t in lib.pca_lowrank(lib.tensor(a), q=4)]
        got = (s, shapes, tuple(lib.poisson(lib.tensor(2.0)).shape),
               tuple(lib.binomial(lib.tensor([3.0, 3.0]), lib.tensor([1.0])).shape))
        if lib is minidl:
            mine = got
    np.testing.assert_allclose(mine[0][:2], got[0][:2], rtol=1e-6)
    assert mine[0].shape == got[0].shape and mine[1:] == got[1:]
# ---- norms without an identity over an empty dim ----------------------------------------------

INF, NAN = float("inf"), float("nan")


def test_vector_norm_of_negative_or_inf_order_over_an_empty_dim_is_refused():
    for p in (-1, INF, -INF, -0.5):
        with pytest.raises(RuntimeError, match="empty"):
            minidl.linalg.vector_norm(minidl.zeros(0), p)
        with pytest.raises(RuntimeError, match="empty"):
            minidl.zeros(2, 0).norm(p=p, dim=1)
    for p in (2, 1, 0, 3.5):
        assert minidl.linalg.vector_norm(minidl.zeros(0), p).item() == 0.0
    assert minidl.zeros(0, 3).norm(p=INF, dim=1).shape == (0,)


def test_vector_norm_empty_parity():
    torch = pytest.importorskip("torch")
    for p in (-1, INF, 2, 0):
        try:
            theirs = torch.linalg.vector_norm(torch.zeros(0), p)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                minidl.linalg.vector_norm(minidl.zeros(0), p)
            continue
        assert minidl.linalg.vector_norm(minidl.zeros(0), p).item() == theirs.item()


# ---- linalg -----------------------------------------------------------------------------------

_rng_edge = np.random.default_rng(20261207)


def _t64_edge(a, grad=False):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=np.float64, requires_grad=grad)


def i32(values):
    return minidl.tensor(np.asarray(values, dtype=np.int32), dtype=np.int32)


@pytest.mark.parametrize("pivots, what", [([5, 5, 5, 5], "smaller or equal"),
                                          ([0, 0, 0, 0], "greater or equal")])
def test_lu_solve_refuses_pivots_out_of_range(pivots, what):
    """linalg.lu_solve checked only the pivots' dtype and shape: pivots above n raised a bare
    IndexError from the permutation, and pivots of 0 were taken as -1 (the last row) and gave
    a wrong solution silently. torch refuses both with its message."""
    A = _t64_edge(_rng_edge.standard_normal((4, 4)))
    LU, _ = minidl.linalg.lu_factor(A)
    with pytest.raises(ValueError, match=what):
        minidl.linalg.lu_solve(LU, i32(pivots), _t64_edge(np.ones((4, 1))))


def test_cholesky_ex_reports_nan_in_info():
    """linalg.cholesky_ex gave info = 0 for a matrix with NaN (NumPy's factor just carries the
    NaN), so check_errors=True did not raise either; LAPACK's potrf (torch) stops at the NaN
    pivot and reports its order."""
    a = np.array([[[4.0, 0.0], [0.0, np.nan]], [[4.0, 1.0], [1.0, 3.0]], [[np.nan, 0], [0, 1.0]]])
    L, info = minidl.linalg.cholesky_ex(_t64_edge(a))
    assert info.numpy().tolist() == [2, 0, 1]
    np.testing.assert_allclose(L.numpy()[1], np.linalg.cholesky(a[1]))
    assert L.numpy()[0, 0, 0] == 2.0
    with pytest.raises(minidl.linalg.LinAlgError, match=r"Batch element 0.*order 2"):
        minidl.linalg.cholesky_ex(_t64_edge(a), check_errors=True)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_vecdot_refuses_non_floating(dtype):
    """linalg.vecdot summed integer and bool tensors; torch's takes only floating point and
    complex tensors ("Expected a floating point or complex tensor as input")."""
    x = minidl.tensor(np.ones(3, dtype=dtype), dtype=dtype)
    with pytest.raises(TypeError, match="floating point or complex"):
        minidl.linalg.vecdot(x, x)


def test_vecdot_conjugates_complex_x():
    """linalg.vecdot of complex tensors summed x * y; torch's is sum(conj(x) * y) along dim (so
    vecdot(x, x) is the squared norm, real), with the matching gradients."""
    x = np.array([[1 + 2j, 3 - 1j], [0.5j, 2.0]])
    y = np.array([2 - 1j, 1 + 1j])
    xt = minidl.tensor(x, dtype=np.complex128, requires_grad=True)
    yt = minidl.tensor(y, dtype=np.complex128, requires_grad=True)
    out = minidl.linalg.vecdot(xt, yt)
    np.testing.assert_allclose(out.detach().numpy(), (np.conj(x) * y).sum(-1), rtol=1e-15)
    np.testing.assert_allclose(minidl.linalg.vecdot(xt, xt).detach().numpy(),
                               (np.abs(x) ** 2).sum(-1), rtol=1e-15)
    # |vecdot|^2 = |v|^2 with v = sum(conj(x) y): d/dconj(y) = 2 x v (PyTorch's convention)
    (out.abs() ** 2).sum().backward()
    v = (np.conj(x) * y).sum(-1)
    np.testing.assert_allclose(yt.grad.numpy(), (2 * x * v[:, None]).sum(0), rtol=1e-14)


def test_matrix_exp_of_non_finite_matrices():
    """linalg.matrix_exp crashed with OverflowError ("cannot convert float infinity to
    integer") on a matrix with an inf, and a NaN anywhere in a batch switched off the scaling
    for all its matrices; torch gives NaN for those matrices and the others as usual."""
    big = _rng_edge.standard_normal((3, 3)) * 20
    batch = np.stack([np.array([[np.inf, 0, 0], [0, 1, 0], [0, 0, 1.0]]), big,
                      np.full((3, 3), np.nan)])
    out = minidl.linalg.matrix_exp(_t64_edge(batch)).numpy()
    assert np.isnan(out[0]).all() and np.isnan(out[2]).all()
    alone = minidl.linalg.matrix_exp(_t64_edge(big)).numpy()
    np.testing.assert_allclose(out[1], alone, rtol=1e-12)


def test_householder_product_without_reflectors_stays_in_the_graph():
    """linalg.householder_product with tau of length 0 returned a constant (requires_grad
    False), so a loss on it could not be backpropagated; torch's output stays a function of
    A and tau, with zero gradients."""
    A = _t64_edge(_rng_edge.standard_normal((2, 4, 3)), grad=True)
    tau = _t64_edge(np.zeros((2, 0)), grad=True)
    q = minidl.linalg.householder_product(A, tau)
    assert q.requires_grad
    np.testing.assert_array_equal(q.numpy(), np.broadcast_to(np.eye(4, 3), (2, 4, 3)))
    (q * q).sum().backward()
    np.testing.assert_array_equal(A.grad.numpy(), 0)
    assert tau.grad.shape == (2, 0)


# ---- eig and eigvals of non-finite matrices ---------------------------------------------------

def test_eig_and_eigvals_of_non_finite_matrices():
    """linalg.eig of a matrix with an inf or NaN raised "The algorithm failed to converge"
    (NumPy's refusal, misread), and linalg.eigvals raised too; torch's eig refuses with "input
    tensor should not contain infs or NaNs" and its eigvals gives NaN eigenvalues for that
    matrix (the others of the batch as usual)."""
    for bad in (np.inf, np.nan):
        batch = np.stack([np.array([[bad, 0.0], [0.0, 1.0]]), np.array([[2.0, 1.0], [0.0, 3.0]])])
        with pytest.raises(minidl.linalg.LinAlgError, match="should not contain infs or NaNs"):
            minidl.linalg.eig(_t64_edge(batch))
        w = minidl.linalg.eigvals(_t64_edge(batch)).numpy()
        assert np.isnan(w[0]).all()
        np.testing.assert_allclose(np.sort(w[1].real), [2.0, 3.0])


# ---- svd_lowrank, pca_lowrank -----------------------------------------------------------------

def test_svd_lowrank_recovers_a_low_rank_matrix_and_has_gradients():
    from minidl.testing import gradcheck

    minidl.manual_seed(0)
    A = minidl.randn(20, 4, dtype=minidl.float64) @ minidl.randn(4, 15, dtype=minidl.float64)
    for matrix in (A, A.mT):
        U, S, V = minidl.svd_lowrank(matrix, q=5)
        assert U.shape == (matrix.shape[0], 5) and V.shape == (matrix.shape[1], 5)
        np.testing.assert_allclose(((U * S) @ V.mT).numpy(), matrix.numpy(), atol=1e-10)
        np.testing.assert_allclose(S.numpy()[:4], np.linalg.svd(matrix.numpy(),
                                                                compute_uv=False)[:4], rtol=1e-10)
        np.testing.assert_allclose((U.mT @ U).numpy(), np.eye(5), atol=1e-12)
    U, S, V = minidl.pca_lowrank(A, q=4)
    centred = A - A.mean(0, keepdim=True)
    np.testing.assert_allclose(((U * S) @ V.mT).numpy(), centred.numpy(), atol=1e-10)
    B = minidl.tensor(np.random.default_rng(2).normal(size=(6, 2)) @
                      np.random.default_rng(3).normal(size=(2, 5)), dtype=minidl.float64,
                      requires_grad=True)

    def top_values(b):
        minidl.manual_seed(5)
        return minidl.svd_lowrank(b, q=2)[1]

    assert gradcheck(top_values, (B,))
    # q over min(m, n) gives all min(m, n) singular values, as torch's (its default q=6)
    assert minidl.svd_lowrank(A, q=100)[1].shape == (min(A.shape[-2:]),)
    with pytest.raises(ValueError, match="q must be"):
        minidl.svd_lowrank(A, q=-2)
    with pytest.raises(ValueError, match="q"):
        minidl.pca_lowrank(A, q=-1)


def test_lowrank_matches_torch():
    torch = pytest.importorskip("torch")
    minidl.manual_seed(0)
    A = minidl.randn(30, 3, dtype=minidl.float64) @ minidl.randn(3, 12, dtype=minidl.float64)
    _, S, _ = minidl.pca_lowrank(A, q=3)
    _, St, _ = torch.pca_lowrank(torch.tensor(A.numpy()), q=3)
    np.testing.assert_allclose(S.numpy(), St.numpy(), rtol=1e-10)
    _, S, _ = minidl.svd_lowrank(A, q=3, niter=0)
    _, St, _ = torch.svd_lowrank(torch.tensor(A.numpy()), q=3, niter=0)
    np.testing.assert_allclose(S.numpy(), St.numpy(), rtol=1e-10)
