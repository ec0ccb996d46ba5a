"""torch.linalg's decompositions, inverses and solvers in minidl.linalg (inv, det, slogdet,
solve, cholesky, qr, svd, svdvals, eigh, eigvalsh, pinv, lstsq, matrix_rank, matrix_power,
multi_dot, cond, matrix_norm's 2 / -2 / 'nuc') and torch's top-level aliases: PyTorch's values
and gradients in float64 on batches, finite-difference checks, and errors that name the batch
element or the shapes. Decompositions whose factors are unique only up to signs (svd, eigh)
are compared through sign-free functions of them (|U|, U diag(S) V^T), as torch's docs advise."""
import numpy as np
import pytest

import minidl
from _ops_check import check, needs_torch, torch

rng = np.random.default_rng(7)
# torch.cholesky, torch.qr and torch.svd are deprecated in torch (minidl keeps them quietly)
pytestmark = pytest.mark.filterwarnings("ignore:torch.(cholesky|qr|svd|chain_matmul) is deprecated")


def r(*shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (2, 1, 3, 3)])
def test_inv_det_slogdet(shape):
    a = r(*shape)
    check(lambda L, a: L.linalg.inv(a), a)
    check(lambda L, a: L.linalg.det(a), a)
    check(lambda L, a: L.linalg.slogdet(a).logabsdet, a)
    check(lambda L, a: L.linalg.slogdet(a).sign, a, grad=False)
    check(lambda L, a: L.inverse(a), a)
    check(lambda L, a: a.det(), a)
    check(lambda L, a: L.logdet(a @ a.mT), a)


def test_det_gradient_of_a_singular_matrix_is_its_cofactor_matrix():
    a = r(3, 3)
    a[2] = a[0] + a[1]  # rank 2: det = 0, the gradient (cofactors) is not
    check(lambda L, a: L.linalg.det(a), a)
    check(lambda L, a: L.det(a), np.zeros((2, 2)))


@pytest.mark.parametrize("a_shape,b_shape", [((3, 3), (3, 2)), ((2, 3, 3), (3,)),
                                             ((2, 3, 3), (2, 3)), ((2, 3, 3), (4, 1, 3, 2)),
                                             ((3, 3), (5, 3, 1))])
def test_solve_broadcasts_vectors_and_matrices(a_shape, b_shape):
    check(lambda L, a, b: L.linalg.solve(a, b), r(*a_shape), r(*b_shape))


def test_solve_left_false():
    check(lambda L, a, b: L.linalg.solve(a, b, left=False), r(2, 3, 3), r(4, 3))


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky(upper):
    check(lambda L, a: L.linalg.cholesky(a @ a.mT + 3 * L.eye(3, dtype=a.dtype), upper=upper),
          r(2, 3, 3))
    check(lambda L, a: L.cholesky(a @ a.mT + 3 * L.eye(3, dtype=a.dtype), upper=upper),
          r(3, 3))


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 4), (2, 3, 5)])
def test_qr_reduced(shape):
    a = r(*shape)
    check(lambda L, a: L.linalg.qr(a), a)
    check(lambda L, a: L.linalg.qr(a).R, a)  # the gradient from R alone
    check(lambda L, a: L.qr(a), a)


def test_qr_complete_and_r():
    check(lambda L, a: L.linalg.qr(a, "complete"), r(2, 3, 3))
    check(lambda L, a: L.linalg.qr(a, "complete"), r(5, 3), grad=False)
    check(lambda L, a: L.linalg.qr(a, "r"), r(5, 3), grad=False)
    a = minidl.tensor(r(5, 3), requires_grad=True)
    q, _ = minidl.linalg.qr(a, "complete")
    with pytest.raises(RuntimeError, match="not differentiable when mode='complete'"):
        q.sum().backward()


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (3, 3)])
def test_svd_reduced(shape):
    a = r(*shape)
    check(lambda L, a: L.linalg.svdvals(a), a)
    check(lambda L, a: L.linalg.svd(a, full_matrices=False).S, a)
    check(lambda L, a: L.linalg.svd(a, full_matrices=False).U.abs(), a)
    check(lambda L, a: L.linalg.svd(a, full_matrices=False).Vh.abs(), a)
    check(lambda L, a: (lambda u, s, vh: (u * s.unsqueeze(-2)) @ vh)(
        *L.linalg.svd(a, full_matrices=False)), a)


def test_svd_full_matrices_and_torch_svd():
    a = r(4, 2)
    # the extra columns of U are not unique: only their shape and orthogonality are compared
    u, s, vh = minidl.linalg.svd(minidl.tensor(a, dtype=np.float64))
    assert u.shape == (4, 4) and s.shape == (2,) and vh.shape == (2, 2)
    np.testing.assert_allclose(u.numpy().T @ u.numpy(), np.eye(4), atol=1e-12)
    check(lambda L, a: L.linalg.svd(a)[0][:, :2].abs(), a, check_grad=False)
    check(lambda L, a: L.linalg.svd(a)[2].abs(), a, check_grad=False)
    check(lambda L, a: L.svd(a)[2].abs(), a)  # torch.svd: V, not Vh
    check(lambda L, a: L.svd(a).S, a)


@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh_and_eigvalsh(uplo):
    a = r(2, 4, 4)
    check(lambda L, a: L.linalg.eigh(a + a.mT, UPLO=uplo).eigenvalues, a)
    check(lambda L, a: L.linalg.eigh(a + a.mT, UPLO=uplo).eigenvectors.abs(), a)
    check(lambda L, a: L.linalg.eigvalsh(a + a.mT, UPLO=uplo), a)
    # only the named triangle is read
    check(lambda L, a: L.linalg.eigvalsh(a, UPLO=uplo), a, check_grad=False)


def test_pinv_lstsq_matrix_rank():
    check(lambda L, a: L.linalg.pinv(a), r(2, 4, 3))
    check(lambda L, a: L.linalg.pinv(a), r(3, 5))
    check(lambda L, a: L.pinverse(a), r(3, 5))
    check(lambda L, a: L.linalg.pinv(a + a.mT, hermitian=True), r(3, 3))
    check(lambda L, a, b: L.linalg.lstsq(a, b).solution, r(5, 3), r(5, 2))
    check(lambda L, a, b: L.linalg.lstsq(a, b).solution, r(2, 5, 3), r(2, 5))
    check(lambda L, a, b: L.linalg.lstsq(a, b)[1:], r(5, 3), r(5, 2), grad=False)
    check(lambda L, a, b: L.linalg.lstsq(a, b, driver="gelsd")[1:], r(5, 3), r(5, 2),
          grad=False)
    low = r(2, 5, 2) @ r(2, 2, 4)  # rank 2
    check(lambda L, a: L.linalg.matrix_rank(a), low, grad=False)
    check(lambda L, a: L.linalg.matrix_rank(a, hermitian=True), low @ low.swapaxes(1, 2),
          grad=False)
    check(lambda L, a: L.linalg.matrix_rank(a, atol=1.0, rtol=0.0), r(3, 4, 4), grad=False)


def test_matrix_norm_ord_2_and_nuclear():
    for ord in (2, -2, "nuc"):
        check(lambda L, a: L.linalg.matrix_norm(a, ord), r(2, 4, 3))
        check(lambda L, a: L.linalg.matrix_norm(a, ord, dim=(0, 2), keepdim=True), r(3, 2, 4))
        check(lambda L, a: L.linalg.norm(a, ord), r(3, 3))
    check(lambda L, a: L.linalg.cond(a), r(2, 3, 3))
    # torch's own backward of cond(p='fro') fails (an in-place change of inv's output)
    check(lambda L, a: L.linalg.cond(a, "fro"), r(3, 3), grad=False)


@pytest.mark.parametrize("n", [0, 1, 2, 5, -1, -3])
def test_matrix_power(n):
    well_conditioned = r(2, 3, 3) + 3 * np.eye(3)  # A^-3's finite differences stay accurate
    check(lambda L, a: L.linalg.matrix_power(a, n), well_conditioned)
    check(lambda L, a: a.matrix_power(n), r(3, 3) + 3 * np.eye(3))


def test_multi_dot_and_chain_matmul():
    check(lambda L, a, b, c: L.linalg.multi_dot([a, b, c]), r(3), r(3, 4), r(4))
    check(lambda L, a, b, c: L.linalg.multi_dot([a, b, c]), r(2, 3), r(3, 4), r(4, 2))
    check(lambda L, a, b: L.chain_matmul(a, b), r(2, 3), r(3, 4))


def test_float32_stays_float32():
    check(lambda L, a: L.linalg.inv(a), r(3, 3).astype(np.float32), rtol=1e-4, atol=1e-5,
          check_grad=False)
    check(lambda L, a: L.linalg.svdvals(a), r(3, 2).astype(np.float32), rtol=1e-4, atol=1e-5,
          check_grad=False)


# ---- bad input ----------------------------------------------------------------------------
def test_singular_matrix_names_its_batch_element():
    a = np.stack([np.eye(3), np.diag([1.0, 0.0, 2.0])])
    with pytest.raises(minidl.linalg.LinAlgError,
                       match=r"linalg.inv: \(Batch element 1\): The diagonal element 2 is zero"):
        minidl.linalg.inv(minidl.tensor(a))
    assert issubclass(minidl.linalg.LinAlgError, RuntimeError)
    with pytest.raises(RuntimeError, match=r"solve: \(Batch element 1\).*singular"):
        minidl.linalg.solve(minidl.tensor(a), minidl.ones(2, 3, 1))
    with pytest.raises(RuntimeError, match=r"linalg.inv: The diagonal element 1 is zero"):
        minidl.linalg.inv(minidl.zeros(2, 2))


def test_cholesky_names_the_leading_minor():
    a = np.stack([np.eye(3), np.diag([1.0, -1.0, 2.0])])
    with pytest.raises(RuntimeError, match=r"\(Batch element 1\).*not positive-definite "
                                           r"\(the leading minor of order 2"):
        minidl.linalg.cholesky(minidl.tensor(a))


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="square matrices, but they are 2 by 3"):
        minidl.linalg.inv(minidl.zeros(2, 3))
    with pytest.raises(ValueError, match="at least 2 dimensions.*\\(3,\\)"):
        minidl.linalg.det(minidl.zeros(3))
    with pytest.raises(TypeError, match="float32 or float64.*int64"):
        minidl.linalg.inv(minidl.tensor([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match=r"incompatible shapes.*3x3 and \(4, 2\)"):
        minidl.linalg.solve(minidl.zeros(3, 3), minidl.zeros(4, 2))
    with pytest.raises(ValueError, match="do not broadcast"):
        minidl.linalg.solve(minidl.zeros(2, 3, 3), minidl.zeros(3, 3, 1))
    with pytest.raises(ValueError, match="mode must be"):
        minidl.linalg.qr(minidl.zeros(3, 3), mode="full")
    with pytest.raises(ValueError, match="UPLO must be"):
        minidl.linalg.eigh(minidl.zeros(3, 3), UPLO="X")
    with pytest.raises(ValueError, match="tensor 1 must be 2-d"):
        minidl.linalg.multi_dot([minidl.zeros(3), minidl.zeros(3), minidl.zeros(3)])
    with pytest.raises(ValueError, match="ord must be"):
        minidl.linalg.matrix_norm(minidl.zeros(3, 3), 3)


@needs_torch
def test_names_match_torch():
    for name in ["inv", "det", "slogdet", "solve", "cholesky", "qr", "svd", "svdvals", "eigh",
                 "eigvalsh", "pinv", "lstsq", "matrix_rank", "matrix_power", "multi_dot",
                 "cond", "LinAlgError"]:
        assert hasattr(torch.linalg, name) and hasattr(minidl.linalg, name), name
    for name in ["det", "logdet", "slogdet", "inverse", "pinverse", "matrix_power", "svd", "qr",
                 "cholesky"]:
        assert hasattr(minidl, name) and hasattr(minidl.Tensor, name), name
    assert minidl.chain_matmul and minidl.ones(2, 3).mT.shape == (3, 2)


def test_on_the_fake_gpu(monkeypatch):
    """The array module's linalg runs where the data lives (the numpy-backed stand-in for
    CuPy), and a singular matrix there (CuPy returns inf instead of raising) is still named."""
    import _fake_gpu

    _fake_gpu.install(monkeypatch, None)
    a = r(2, 3, 3)
    x = minidl.tensor(a, dtype=np.float64, device="cuda", requires_grad=True)
    y = minidl.linalg.inv(x) + minidl.linalg.svd(x).S.sum() + minidl.linalg.det(x).sum()
    y.sum().backward()
    assert str(x.grad.device).startswith("cuda") and str(y.device).startswith("cuda")
    cpu = minidl.tensor(a, dtype=np.float64, requires_grad=True)
    (minidl.linalg.inv(cpu) + minidl.linalg.svd(cpu).S.sum()
     + minidl.linalg.det(cpu).sum()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), cpu.grad.numpy(), rtol=1e-10)
    with pytest.raises(RuntimeError, match="Batch element 1"):
        minidl.linalg.inv(minidl.tensor(np.stack([np.eye(2), np.zeros((2, 2))]), device="cuda"))
