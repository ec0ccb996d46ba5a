"""Audit of what landed on 2026-12-07 (linalg, special, distributions, compat) against torch
2.13 and against misuse: one test per problem found, each failing before its fix."""
import math
import warnings

import numpy as np
import pytest

import minidl
import minidl.distributions as D
from minidl.distributions import constraints, transforms as T
from test_cuda_api import gpu  # noqa: F401  (the fake GPU with cupy.cuda's stand-ins)

rng = np.random.default_rng(20261207)


def t64(a, grad=False):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=np.float64, requires_grad=grad)


def i32(values):
    return minidl.tensor(np.asarray(values, dtype=np.int32), dtype=np.int32)


# ---- linalg ----------------------------------------------------------------------------------
@pytest.mark.parametrize("pivots, what", [([5, 5, 5, 5], "smaller or equal"),
                                          ([0, 0, 0, 0], "greater or equal")])
def test_lu_solve_refuses_pivots_out_of_range(pivots, what):
    """linalg.lu_solve checked only the pivots' dtype and shape: pivots above n raised a bare
    IndexError from the permutation, and pivots of 0 were taken as -1 (the last row) and gave
    a wrong solution silently. torch refuses both with its message."""
    A = t64(rng.standard_normal((4, 4)))
    LU, _ = minidl.linalg.lu_factor(A)
    with pytest.raises(ValueError, match=what):
        minidl.linalg.lu_solve(LU, i32(pivots), t64(np.ones((4, 1))))


def test_cholesky_ex_reports_nan_in_info():
    """linalg.cholesky_ex gave info = 0 for a matrix with NaN (NumPy's factor just carries the
    NaN), so check_errors=True did not raise either; LAPACK's potrf (torch) stops at the NaN
    pivot and reports its order."""
    a = np.array([[[4.0, 0.0], [0.0, np.nan]], [[4.0, 1.0], [1.0, 3.0]], [[np.nan, 0], [0, 1.0]]])
    L, info = minidl.linalg.cholesky_ex(t64(a))
    assert info.numpy().tolist() == [2, 0, 1]
    np.testing.assert_allclose(L.numpy()[1], np.linalg.cholesky(a[1]))
    assert L.numpy()[0, 0, 0] == 2.0
    with pytest.raises(minidl.linalg.LinAlgError, match=r"Batch element 0.*order 2"):
        minidl.linalg.cholesky_ex(t64(a), check_errors=True)


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
    big = rng.standard_normal((3, 3)) * 20
    batch = np.stack([np.array([[np.inf, 0, 0], [0, 1, 0], [0, 0, 1.0]]), big,
                      np.full((3, 3), np.nan)])
    out = minidl.linalg.matrix_exp(t64(batch)).numpy()
    assert np.isnan(out[0]).all() and np.isnan(out[2]).all()
    alone = minidl.linalg.matrix_exp(t64(big)).numpy()
    np.testing.assert_allclose(out[1], alone, rtol=1e-12)


def test_householder_product_without_reflectors_stays_in_the_graph():
    """linalg.householder_product with tau of length 0 returned a constant (requires_grad
    False), so a loss on it could not be backpropagated; torch's output stays a function of
    A and tau, with zero gradients."""
    A = t64(rng.standard_normal((2, 4, 3)), grad=True)
    tau = t64(np.zeros((2, 0)), grad=True)
    q = minidl.linalg.householder_product(A, tau)
    assert q.requires_grad
    np.testing.assert_array_equal(q.numpy(), np.broadcast_to(np.eye(4, 3), (2, 4, 3)))
    (q * q).sum().backward()
    np.testing.assert_array_equal(A.grad.numpy(), 0)
    assert tau.grad.shape == (2, 0)


# ---- special ---------------------------------------------------------------------------------
def test_bessel_y_at_the_smallest_subnormal():
    """bessel_y0/y1 (and the K series) took log(x / 2), and x / 2 is 0 at x = 5e-324: Y0 gave
    -inf instead of -474.0 and Y1 NaN instead of -inf (as torch's); K0 gave inf for 744.6."""
    S = minidl.special
    x = t64([5e-324, 1e-320])
    y0 = S.bessel_y0(x).numpy()
    k0 = S.modified_bessel_k0(x).numpy()
    ref_y0 = [2 / math.pi * (math.log(v) - math.log(2) + 0.5772156649015329) for v in
              (5e-324, 1e-320)]
    ref_k0 = [-(math.log(v) - math.log(2)) - 0.5772156649015329 for v in (5e-324, 1e-320)]
    np.testing.assert_allclose(y0, ref_y0, rtol=1e-14)
    np.testing.assert_allclose(k0, ref_k0, rtol=1e-14)
    assert S.bessel_y1(x).numpy().tolist() == [-math.inf, -math.inf]


def test_special_float32_overflow_gives_no_warning():
    """The Bessel functions computed in float64 and cast to float32 outside NumPy's errstate, so
    a float32 result past its range (I0(100)) came with "RuntimeWarning: overflow encountered
    in cast"; torch returns inf silently."""
    x = minidl.tensor(np.array([100.0, 1.0], dtype=np.float32), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = minidl.special.modified_bessel_i0(x).numpy()
    assert out[0] == np.inf and out.dtype == np.float32


def test_gammainc_gradient_at_large_a():
    """The x-gradient of gammainc/gammaincc, exp((a - 1) log x - x - lgamma(a)), lost 8 digits
    for a ~ 1e7 (and all of them by 1e12): its terms, of size a log a, cancel. Checked by the
    exact ratio d/dx P(a + 1, x) / d/dx P(a, x) = x / a."""
    for a, x in ((1e7, 1e7), (1e7, 1e7 - 5000.0), (1e12, 1e12 + 3e5), (250.0, 230.0)):
        grads = []
        for shape in (a, a + 1):
            xt = t64([x], grad=True)
            minidl.special.gammainc(t64([shape]), xt).sum().backward()
            grads.append(xt.grad.numpy()[0])
        np.testing.assert_allclose(grads[1] / grads[0], x / a, rtol=1e-12)
        xt = t64([x], grad=True)
        minidl.special.gammaincc(t64([a]), xt).sum().backward()
        np.testing.assert_allclose(xt.grad.numpy()[0], -grads[0], rtol=1e-15)


# ---- distributions: transforms and TransformedDistribution -----------------------------------
def test_inverse_transform_swaps_forward_and_inverse_shapes():
    """The inverse of a transform kept its forward_shape/inverse_shape instead of swapping
    them, so TransformedDistribution(Dirichlet(...), StickBreakingTransform().inv) had events of
    K entries (not K - 1) and its log_prob refused its own samples. Its ``bijective`` was
    always True (SoftmaxTransform().inv is not)."""
    inv = T.StickBreakingTransform().inv
    assert tuple(inv.forward_shape((3, 4))) == (3, 3)
    assert tuple(inv.inverse_shape((3, 4))) == (3, 5)
    assert T.SoftmaxTransform().inv.bijective is False
    d = D.TransformedDistribution(D.Dirichlet(t64(np.ones((2, 4)))), [inv])
    assert tuple(d.batch_shape) == (2,) and tuple(d.event_shape) == (3,)
    x = d.sample((5,))
    assert tuple(x.shape) == (5, 2, 3)
    lp = d.log_prob(x)
    assert tuple(lp.shape) == (5, 2) and np.isfinite(lp.numpy()).all()


def test_affine_transform_broadcasts_the_base_distribution():
    """AffineTransform's forward_shape ignored loc's and scale's shapes, so
    TransformedDistribution(Normal(0, 1), AffineTransform(loc of shape (3,), 2)) had batch shape
    () and sample((2,)) failed to broadcast (2,) with (3,); torch expands the base to (3,)."""
    loc = t64([1.0, 2.0, 3.0])
    d = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)), [T.AffineTransform(loc, 2.0)])
    assert tuple(d.batch_shape) == (3,)
    assert tuple(d.base_dist.batch_shape) == (3,)
    assert tuple(d.sample((2,)).shape) == (2, 3)
    value = t64([[0.0, 1.0, 2.0]])
    want = -0.5 * ((value.numpy() - loc.numpy()) / 2) ** 2 - math.log(2) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(d.log_prob(value).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("transform", [T.AbsTransform(), T.StickBreakingTransform(),
                                       T.SoftmaxTransform(), T.ReshapeTransform((2,), (2, 1)),
                                       T.CatTransform([T.ExpTransform(), T.AbsTransform()],
                                                      dim=-1)])
def test_sign_of_non_monotone_transforms_is_refused(transform):
    """Every transform had sign = 1, so TransformedDistribution(Normal, AbsTransform()).cdf
    returned the Normal's cdf at the non-negative preimage (a wrong number) instead of refusing
    as torch does (NotImplementedError: the transform is not monotone)."""
    with pytest.raises(NotImplementedError):
        transform.sign


def test_transformed_cdf_refuses_a_non_monotone_transform():
    """The cdf/icdf half of the sign problem above: a folded Normal's cdf at 0.5 came out as
    Phi(0.5) = 0.69 (its true value is 0.38); torch raises."""
    d = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)), [T.AbsTransform()])
    with pytest.raises(NotImplementedError):
        d.cdf(t64(0.5))
    with pytest.raises(NotImplementedError):
        d.icdf(t64(0.5))
    # monotone ones still have their sign (and cdf)
    assert T.ComposeTransform([T.ExpTransform(), T.AffineTransform(0.0, -2.0)]).sign == -1
    e = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)),
                                  [T.ExpTransform(), T.AffineTransform(0.0, -1.0)])
    np.testing.assert_allclose(e.cdf(t64(-1.0)).numpy(), 0.5, rtol=1e-12)


def test_inverse_of_a_transform_is_one_object():
    """Transform.inv and ComposeTransform.inv made a new object on each call, so t.inv.inv was
    not t (torch keeps each inverse while it lives: t.inv is t.inv, t.inv.inv is t); the
    cached inverse must not stop a transform from pickling."""
    import copy
    import pickle

    for t in (T.ExpTransform(), T.AffineTransform(1.0, 2.0),
              T.ComposeTransform([T.ExpTransform(), T.AffineTransform(0.0, -1.0)])):
        assert t.inv is t.inv
        assert t.inv.inv is t
        again = pickle.loads(pickle.dumps(t))
        assert again == t and again.inv.inv is again
        assert copy.deepcopy(t) == t
    d = D.TransformedDistribution(D.Normal(t64(0.0), t64(1.0)), [T.ExpTransform()])
    d.log_prob(t64(2.0))
    np.testing.assert_allclose(pickle.loads(pickle.dumps(d)).log_prob(t64(2.0)).numpy(),
                               d.log_prob(t64(2.0)).numpy())


def test_transform_to_positive_semidefinite():
    """transform_to(constraints.positive_semidefinite) raised NotImplementedError; torch maps it
    with PositiveDefiniteTransform, as for positive_definite."""
    t = D.transform_to(constraints.positive_semidefinite)
    assert isinstance(t, T.PositiveDefiniteTransform)
    y = t(t64(rng.standard_normal((2, 3, 3))))
    assert bool(constraints.positive_semidefinite.check(y).numpy().all())


def test_kl_halfcauchy_and_cauchy():
    """kl_divergence(HalfCauchy, HalfCauchy) (and Cauchy, Cauchy) raised NotImplementedError;
    torch has the closed form log(((s1 + s2)^2 + (m1 - m2)^2) / (4 s1 s2))."""
    p, q = D.Cauchy(t64([0.0, 2.0]), t64([1.0, 0.5])), D.Cauchy(t64([1.0, -1.0]), t64([3.0, 2.0]))
    want = np.log(((np.array([1.0, 0.5]) + [3.0, 2.0]) ** 2 + np.array([-1.0, 3.0]) ** 2)
                  / (4 * np.array([1.0, 0.5]) * [3.0, 2.0]))
    np.testing.assert_allclose(D.kl_divergence(p, q).numpy(), want, rtol=1e-12)
    h = D.kl_divergence(D.HalfCauchy(t64([1.0, 2.0])), D.HalfCauchy(t64([3.0, 0.5])))
    np.testing.assert_allclose(h.numpy(), np.log(np.array([16.0, 6.25]) / [12.0, 4.0]),
                               rtol=1e-12)
    np.testing.assert_allclose(D.kl_divergence(p, p).numpy(), 0.0, atol=1e-15)


def test_eig_and_eigvals_of_non_finite_matrices():
    """linalg.eig of a matrix with an inf or NaN raised "The algorithm failed to converge"
    (NumPy's refusal, misread), and linalg.eigvals raised too; torch's eig refuses with "input
    tensor should not contain infs or NaNs" and its eigvals gives NaN eigenvalues for that
    matrix (the others of the batch as usual)."""
    for bad in (np.inf, np.nan):
        batch = np.stack([np.array([[bad, 0.0], [0.0, 1.0]]), np.array([[2.0, 1.0], [0.0, 3.0]])])
        with pytest.raises(minidl.linalg.LinAlgError, match="should not contain infs or NaNs"):
            minidl.linalg.eig(t64(batch))
        w = minidl.linalg.eigvals(t64(batch)).numpy()
        assert np.isnan(w[0]).all()
        np.testing.assert_allclose(np.sort(w[1].real), [2.0, 3.0])


def test_with_cache_of_compose_and_inverse_transforms():
    """ComposeTransform(...).with_cache() and SomeTransform().inv.with_cache() raised
    NotImplementedError (torch caches through both), so a cached tanh-squashed chain could not
    give back the exact x of its own sample."""
    x = t64([0.3, 2.0])
    for t in (T.ComposeTransform([T.ExpTransform(), T.TanhTransform()]), T.ExpTransform().inv,
              T.ComposeTransform([T.SigmoidTransform(), T.AffineTransform(0.0, 2.0)]).inv):
        cached = t.with_cache(1)
        assert cached._cache_size == 1 and cached == t
        y = cached(x)
        assert cached.inv(y) is x
        assert cached.with_cache(1) is cached


# ---- compat: minidl.cuda ---------------------------------------------------------------------
def test_cuda_functions_refuse_a_gpu_that_is_not_there(gpu):  # noqa: F811
    """On a one-GPU machine, cuda.set_device(3), synchronize(3), memory_stats(2),
    memory_allocated("cuda:2"), max_memory_*/reset_peak_memory_stats(5) were accepted silently
    (set_device even took GPU 3 mod 1 = 0), while mem_get_info(2) and get_device_properties(5)
    refused them; torch raises for all. set_device(-1) is torch's no-op."""
    cuda = minidl.cuda
    calls = [lambda: cuda.set_device(3), lambda: cuda.synchronize(3),
             lambda: cuda.memory_stats(2), lambda: cuda.memory_allocated("cuda:2"),
             lambda: cuda.memory_reserved(2), lambda: cuda.max_memory_allocated(5),
             lambda: cuda.max_memory_reserved(5), lambda: cuda.reset_peak_memory_stats(5)]
    for call in calls:
        with pytest.raises(ValueError, match="invalid device id"):
            call()
    cuda.set_device(-1)
    cuda.set_device(0)
    cuda.synchronize(0)
    assert cuda.memory_allocated("cuda:0") == cuda.memory_allocated()
    with pytest.raises(TypeError, match="set_device"):
        cuda.set_device(1.5)


# ---- the ops without a derivative for one input ----------------------------------------------
def test_grad_for_the_other_input_only():
    """special.gammainc/gammaincc/zeta (no derivative in their first argument) and geqrf /
    ldl_factor (none at all) raised "the derivative ... is not implemented" in
    autograd.grad(loss, [x]) and backward(inputs=[x]) even where only another input's
    gradient was asked, because the first argument also required grad; torch's engine computes
    only the edges it needs, and refuses only when the missing derivative is asked for."""
    S = minidl.special
    a = t64([1.5, 2.0], grad=True)
    x = t64([0.5, 3.0], grad=True)
    for fn in (S.gammainc, S.gammaincc, S.zeta):
        (gx,) = minidl.autograd.grad(fn(a, x).sum(), [x])
        (gy,) = minidl.autograd.grad(fn(a.detach(), x).sum(), [x])
        np.testing.assert_allclose(gx.numpy(), gy.numpy())
        x.grad = None
        fn(a, x).sum().backward(inputs=[x])
        np.testing.assert_allclose(x.grad.numpy(), gy.numpy())
        with pytest.raises(NotImplementedError, match="not implemented"):
            minidl.autograd.grad(fn(a, x).sum(), [a, x])
        with pytest.raises(NotImplementedError, match="not implemented"):
            fn(a, x).sum().backward()
    A = t64(rng.standard_normal((3, 3)), grad=True)
    y = t64(np.ones(3), grad=True)
    loss = minidl.geqrf(A)[0].sum() + (y * 2).sum()
    (gy,) = minidl.autograd.grad(loss, [y])
    np.testing.assert_array_equal(gy.numpy(), 2.0)
    with pytest.raises(NotImplementedError, match="geqrf"):
        (minidl.geqrf(A)[0].sum() + y.sum()).backward()
