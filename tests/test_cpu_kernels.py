"""The numba CPU kernels against the generic NumPy reference kernels, on random shapes with
strides and padding, in float32 and float64, including non-contiguous inputs."""
import os

import numpy as np
import pytest

from minidl.backend import generic

cpu = pytest.importorskip("minidl.backend.cpu", reason="numba is not installed or fails to load")
from minidl.backend.cpu import conv_im2col, conv_winograd, launch, scratch, tuning  # noqa: E402

DTYPES = [np.float32, np.float64]
# (N, C, H, W, kh, kw, sh, sw, ph, pw): odd sizes, strides that do not divide, padding on one
# axis only, kernels as large as the padded input, 1x1 kernels.
GEOMS = [
    (2, 3, 7, 6, 3, 3, 1, 1, 1, 1),
    (1, 2, 9, 8, 3, 2, 2, 3, 1, 0),
    (3, 1, 5, 5, 5, 5, 1, 1, 2, 2),
    (2, 4, 6, 7, 1, 1, 2, 2, 0, 0),
    (2, 2, 4, 4, 4, 4, 1, 1, 0, 0),
    (1, 3, 8, 5, 2, 3, 3, 1, 1, 1),
    (2, 2, 3, 3, 3, 3, 2, 2, 1, 1),
    (2, 3, 9, 11, 3, 2, 2, 3, 0, 0),   # no padding, short rows: the offset-table kernels
    (1, 2, 20, 21, 3, 3, 1, 1, 0, 0),  # no padding, rows of 18-19: the row kernels
    (1, 2, 18, 20, 3, 3, 1, 1, 1, 1),  # padding, rows of 20: the row kernels
    (2, 3, 12, 11, 3, 3, 1, 1, 1, 1),  # padding, rows of 11: padded-plane gather, row col2im
    (2, 2, 9, 9, 3, 3, 2, 2, 1, 0),    # padding on one axis, stride 2, rows of 4
]


@pytest.fixture(params=["serial", "parallel"], autouse=True)
def drivers(request, monkeypatch):
    """Run every test with the serial kernel drivers and again with the prange ones (the
    thresholds that pick between them are set to 0 or out of reach)."""
    size = 0 if request.param == "parallel" else 1 << 62
    for kind in launch.THRESHOLDS:
        monkeypatch.setitem(launch.THRESHOLDS, kind, size)
    return request.param


# The tests that check a fresh process (a subprocess: its thresholds are its own, not the ones
# set here) or a process-wide setting run once: the two drivers would run the same code twice.
# So does the Adam test, which picks its driver itself (its own ``driver`` parameter).
once = pytest.mark.parametrize("drivers", ["serial"], indirect=True)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _rand(rng, shape, dtype, noncontig=False):
    if noncontig:  # every other element of a wider array: strides the kernels must not trust
        a = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)[..., ::2]
        assert not a.flags.c_contiguous
        return a
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("noncontig", [False, True])
def test_im2col_col2im_match_reference(geom, dtype, noncontig):
    n, c, h, w, kh, kw, sh, sw, ph, pw = geom
    rng = np.random.default_rng(hash(geom) % 2**32)
    x = _rand(rng, (n, c, h, w), dtype, noncontig)
    ref = generic.im2col(x, kh, kw, sh, sw, ph, pw)
    got = cpu.im2col(x, kh, kw, sh, sw, ph, pw)
    assert got.dtype == dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)

    # the batch-side-by-side layout is the same numbers, transposed
    got_t = cpu.im2col_t(x, kh, kw, sh, sw, ph, pw)
    np.testing.assert_array_equal(got_t, ref.transpose(1, 0, 2).reshape(ref.shape[1], -1))

    col = _rand(rng, ref.shape, dtype, noncontig)
    ref_x = generic.col2im(col, x.shape, kh, kw, sh, sw, ph, pw)
    got_x = cpu.col2im(col, x.shape, kh, kw, sh, sw, ph, pw)
    assert got_x.dtype == dtype and got_x.shape == x.shape
    np.testing.assert_allclose(got_x, ref_x, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_is_adjoint_of_im2col(dtype):
    # <im2col(x), c> == <x, col2im(c)> for every x, c: the backward pass is the exact transpose
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    geom = (3, 2, 2, 1, 1, 1)
    col = cpu.im2col_t(x, *geom).copy()
    c = rng.standard_normal(col.shape).astype(dtype)
    lhs = float((col.astype(np.float64) * c).sum())
    rhs = float((x.astype(np.float64) * cpu.col2im_t(c, x.shape, *geom)).sum())
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (2, 3, 1, 2, 1, 0),
                                  (3, 3, 3, 3, 0, 0), (2, 2, 1, 1, 0, 0), (3, 3, 1, 1, 1, 1),
                                  (3, 3, 2, 2, 0, 0), (3, 3, 2, 1, 1, 0)])
@pytest.mark.parametrize("noncontig", [False, True])
@pytest.mark.parametrize("hw", [(9, 8), (16, 13)], ids=["9x8", "16x13"])
def test_max_pool_matches_reference(pool, dtype, noncontig, hw):
    kh, kw, sh, sw, ph, pw = pool
    rng = np.random.default_rng(2)
    x = _rand(rng, (2, 3) + hw, dtype, noncontig)
    x[0, 0, :4, :4] = 0.5  # ties: the first maximum of a window must win, as in the reference
    x[1, 2, 5:9, 3:7] = -np.inf  # a window of -inf inside the plane
    y_ref, arg_ref = generic.max_pool2d_forward(x, *pool)
    y, arg = cpu.max_pool2d_forward(x, *pool)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    gy = _rand(rng, y.shape, dtype, noncontig)
    gx_ref = generic.max_pool2d_backward(gy, arg_ref, x.shape, *pool)
    gx = cpu.max_pool2d_backward(gy, arg, x.shape, *pool)
    np.testing.assert_allclose(gx, gx_ref, **_tol(dtype))


def test_max_pool_propagates_nan():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    for geom in [(2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1)]:
        y, arg = cpu.max_pool2d_forward(x, *geom)
        y_ref, arg_ref = generic.max_pool2d_forward(x, *geom)
        np.testing.assert_array_equal(y, y_ref)  # equal_nan by default
        np.testing.assert_array_equal(arg, arg_ref)
        assert np.isnan(y[0, 0, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (3, 3, 1, 1, 1, 1)],
                         ids=str)
def test_max_pool_nan_and_inf_in_every_tap(geom, dtype):
    """The fast windows take one comparison per tap and check each row for NaN or infinity
    apart: NaNs and infinities in any tap, ties and rows without them must all give the
    reference's values and winners."""
    rng = np.random.default_rng(11)
    x = np.round(rng.standard_normal((3, 4, 12, 14)) * 2).astype(dtype)  # many ties
    flat = x.reshape(-1)
    picks = rng.permutation(flat.size)
    flat[picks[:40]] = np.nan
    flat[picks[40:60]] = np.inf
    flat[picks[60:80]] = -np.inf
    x[2][np.isnan(x[2]) | np.isinf(x[2])] = 1.0  # a sample with finite rows only
    y, arg = cpu.max_pool2d_forward(x, *geom)
    y_ref, arg_ref = generic.max_pool2d_forward(x, *geom)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    assert np.isnan(y).any() and np.isposinf(y).any()
    # backward: NaN and infinite gradients go to the winner alone, zeros elsewhere (the 2x2
    # case masks the gradient's bits)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gy.reshape(-1)[::7] = np.nan
    gy.reshape(-1)[3::11] = -np.inf
    gx = cpu.max_pool2d_backward(gy, arg, x.shape, *geom)
    gx_ref = generic.max_pool2d_backward(gy, arg_ref, x.shape, *geom)
    if geom[2] >= geom[0] and geom[3] >= geom[1]:  # no overlap: one gradient per input
        np.testing.assert_array_equal(gx, gx_ref)
    else:  # overlapping windows add in another order; NaN and infinite places still agree
        tol = 1e-6 if dtype == np.float32 else 1e-14  # the summands are O(1)
        np.testing.assert_allclose(gx, gx_ref, rtol=tol, atol=tol)
    assert np.isnan(gx).any() and np.isneginf(gx).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(9, 8), (8, 9), (16, 13), (2, 2), (1, 5), (112, 112)], ids=str)
def test_max_pool_3x3_stride2_gather_backward_equals_the_scatter(hw, dtype):
    """ResNet's stem pool backward (3x3, stride 2, padding 1) gathers each input's gradient
    from the windows over it; the general kernel scatters, zero-fills and adds. Both add the
    same terms in the same order, so they agree bit for bit, NaN and infinite gradients
    included, at even and odd plane sizes."""
    from minidl.backend.cpu import pooling

    rng = np.random.default_rng(12)
    x = np.round(rng.standard_normal((2, 3) + hw) * 2).astype(dtype)  # ties
    x.reshape(-1)[::29] = np.nan
    geom = (3, 3, 2, 2, 1, 1)
    y, arg = cpu.max_pool2d_forward(x, *geom)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gy.reshape(-1)[::7] = np.nan
    gy.reshape(-1)[3::11] = -np.inf
    gy.reshape(-1)[5::13] = -0.0
    gx = cpu.max_pool2d_backward(gy, arg, x.shape, *geom)
    scattered = np.empty_like(gx)
    pooling._max_pool_bwd_ser(gy, arg, 3, 2, 2, 1, 1, scattered)
    np.testing.assert_array_equal(gx.view(f"u{gx.itemsize}"),
                                  scattered.view(f"u{gx.itemsize}"))


@pytest.mark.parametrize("geom", [(3, 3, 2, 2, 1, 1), (3, 3, 1, 1, 1, 1)], ids=str)
def test_max_pool_3x3_inside_windows_take_the_first_nan(geom):
    """The unrolled 3x3 windows: a NaN wins over larger values before and after it, and of two
    NaNs in a window the first one (row by row) is the winner."""
    x = np.random.default_rng(9).standard_normal((1, 2, 11, 12)).astype(np.float32)
    x[0, 0, 4, 5] = np.nan
    x[0, 0, 3, 6] = 50.0
    x[0, 0, 5, 4] = 60.0
    x[0, 1, 4, 4] = x[0, 1, 4, 6] = np.nan
    x[0, 1, 6, 7] = np.inf
    y, arg = cpu.max_pool2d_forward(x, *geom)
    y_ref, arg_ref = generic.max_pool2d_forward(x, *geom)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    assert np.isnan(y[0, 0]).any() and np.isnan(y[0, 1]).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_layout_helpers(dtype):
    rng = np.random.default_rng(3)
    n, co, oh, ow = 3, 5, 4, 6
    y2 = rng.standard_normal((co, n * oh * ow)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    expect = y2.reshape(co, n, oh, ow).transpose(1, 0, 2, 3) + b[:, None, None]
    np.testing.assert_allclose(cpu.cols_to_nchw(y2, b, n, oh, ow), expect, **_tol(dtype))
    np.testing.assert_array_equal(cpu.cols_to_nchw(y2, None, n, oh, ow),
                                  y2.reshape(co, n, oh, ow).transpose(1, 0, 2, 3))
    g = rng.standard_normal((n, co, oh, ow)).astype(dtype)[:, :, :, ::-1]  # non-contiguous
    g2, gb = cpu.nchw_to_cols(g)
    np.testing.assert_array_equal(g2, g.transpose(1, 0, 2, 3).reshape(co, -1))
    np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), **_tol(dtype))
    np.testing.assert_allclose(cpu.bias_grad_nchw(g), g.sum(axis=(0, 2, 3)), **_tol(dtype))


def _conv_reference(x, w, b, ph, pw):
    """Convolution by the generic im2col, in float64."""
    n = x.shape[0]
    co, ci, kh, kw = w.shape
    col = generic.im2col(x.astype(np.float64), kh, kw, 1, 1, ph, pw)
    y = w.reshape(co, -1).astype(np.float64) @ col
    if b is not None:
        y += b[:, None]
    oh, ow = x.shape[2] + 2 * ph - kh + 1, x.shape[3] + 2 * pw - kw + 1
    return y.reshape(n, co, oh, ow), col


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [((3, 1, 9, 7), (4, 1, 5, 5), 2, 2), ((2, 1, 6, 6), (3, 1, 3, 2), 0, 1),
                                  ((2, 2, 5, 8), (5, 2, 3, 3), 1, 0), ((1, 1, 4, 4), (2, 1, 4, 4), 0, 0)])
@pytest.mark.parametrize("noncontig", [False, True])
def test_direct_conv_matches_im2col_reference(geom, dtype, noncontig):
    xs, ws, ph, pw = geom
    rng = np.random.default_rng(7)
    x = _rand(rng, xs, dtype, noncontig)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    assert cpu.use_direct_conv(xs, ws, (1, 1))
    ref, col = _conv_reference(x, w, b, ph, pw)
    for bias in (b, None):
        got = cpu.conv2d_direct(x, w, bias, ph, pw)
        assert got.dtype == dtype and got.shape == ref.shape
        expect = ref if bias is not None else ref - b[:, None, None]
        np.testing.assert_allclose(got, expect, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-4 if dtype == np.float32 else 1e-10)
    g = _rand(rng, ref.shape, dtype, noncontig)
    gw, gb = cpu.conv2d_direct_wgrad(x, g, ws[2], ws[3], ph, pw)
    g2 = g.astype(np.float64).reshape(xs[0], ws[0], -1)
    gw_ref = np.einsum("nol,nkl->ok", g2, col).reshape(ws)
    assert gw.dtype == dtype and gb.dtype == dtype
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
    np.testing.assert_allclose(gb, g2.sum(axis=(0, 2)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [((3, 1, 9, 7), (6, 1, 5, 5), 2, 2), ((2, 3, 6, 8), (7, 3, 3, 3), 1, 0),
                                  ((1, 2, 5, 5), (2, 2, 3, 3), 0, 1), ((2, 4, 7, 6), (4, 4, 5, 5), 0, 0)])
def test_tiled_weight_gradient_matches_reference(geom, dtype):
    """The register-blocked weight gradient: channel blocks of 3 with a short last one, batch
    1, padding on one axis, against the im2col reference (float64 einsum)."""
    xs, ws, ph, pw = geom
    rng = np.random.default_rng(17)
    x = rng.standard_normal(xs).astype(dtype)
    _, col = _conv_reference(x, rng.standard_normal(ws).astype(dtype), None, ph, pw)
    oh, ow = xs[2] + 2 * ph - ws[2] + 1, xs[3] + 2 * pw - ws[3] + 1
    g = rng.standard_normal((xs[0], ws[0], oh, ow)).astype(dtype)
    gw, gb = cpu.conv2d_tiles_wgrad(x, g, ws[2], ws[3], ph, pw)
    g2 = g.astype(np.float64).reshape(xs[0], ws[0], -1)
    assert gw.dtype == dtype and gw.shape == ws and gb.shape == (ws[0],)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, np.einsum("nol,nkl->ok", g2, col).reshape(ws), **tol)
    np.testing.assert_allclose(gb, g2.sum(axis=(0, 2)), **tol)


def test_direct_conv_is_only_chosen_where_it_pays():
    assert cpu.use_direct_conv((128, 1, 28, 28), (6, 1, 5, 5), (1, 1))      # LeNet conv1
    assert not cpu.use_direct_conv((128, 6, 14, 14), (16, 6, 5, 5), (1, 1))  # LeNet conv2
    assert not cpu.use_direct_conv((1, 1, 28, 28), (6, 1, 5, 5), (2, 2))     # strided
    # a thin 1x1 layer (MobileNetV2's 16 -> 96 expansion) is a per-sample GEMM already
    assert not cpu.use_direct_conv((8, 16, 48, 48), (96, 16, 1, 1), (1, 1))
    assert cpu.conv2d_algorithm((8, 16, 48, 48), (96, 16, 1, 1), (1, 1), (0, 0), True) == "pointwise"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [7, 100_000])  # below and above the parallel threshold
def test_relu_kernels(dtype, size):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(size).astype(dtype).reshape(-1, 1)
    x[0] = np.nan
    y = cpu.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    g = rng.standard_normal(x.shape).astype(dtype)
    # the gradient passes where x > 0 and at NaN (torch's threshold_backward: 0 where y <= 0)
    np.testing.assert_array_equal(cpu.relu_backward(g, y), np.where(x <= 0, 0, g))
    assert cpu.relu_backward(g, y)[0] == g[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [7, 1_000_000])  # below and above the parallel threshold
def test_add_relu_kernel(dtype, size):
    """relu(a + b) in one pass: bit for bit NumPy's a + b then maximum, NaN (from either side,
    or inf - inf) passing through, and a sum of -0.0 + -0.0 given as +0, as in
    relu_forward; strided views give the same result."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal(size).astype(dtype).reshape(-1, 1)
    b = rng.standard_normal(size).astype(dtype).reshape(-1, 1)
    a[0], b[1], a[2], b[2] = np.nan, np.nan, np.inf, -np.inf
    a[3] = b[3] = -0.0
    ref = np.maximum(a + b, 0)
    y = cpu.add_relu(a, b)
    assert y.dtype == dtype and y.shape == a.shape
    np.testing.assert_array_equal(y, ref)
    assert np.isnan(y[:3]).all() and not np.signbit(y[3])
    assert np.shares_memory(y, a) is False and np.shares_memory(y, b) is False
    np.testing.assert_array_equal(cpu.add_relu(a[::2], b[::2]), ref[::2])  # strided views


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_add_relu_op_uses_the_kernel_both_ways(monkeypatch, dtype):
    """F.add_relu (ResNet's residual add) runs the one-pass kernel forward and relu_backward's
    kernel backward on the CPU, with the gradient of relu(a + b) for both inputs."""
    import minidl
    import minidl.nn.functional as F
    from minidl.backend import cpu as cpu_kernels

    calls = []
    for name in ("add_relu", "relu_backward"):
        fn = getattr(cpu_kernels, name)
        monkeypatch.setattr(cpu_kernels, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    rng = np.random.default_rng(7)
    a, b, g = (rng.standard_normal((2, 3, 4, 4)).astype(dtype) for _ in range(3))
    ma, mb = (minidl.tensor(v, dtype=getattr(minidl, dtype), requires_grad=True) for v in (a, b))
    y = F.add_relu(ma, mb)
    (y * minidl.tensor(g, dtype=getattr(minidl, dtype))).sum().backward()
    assert calls == ["add_relu", "relu_backward"]
    np.testing.assert_array_equal(y.numpy(), np.maximum(a + b, 0))
    expected = np.where(a + b > 0, g, 0)
    np.testing.assert_array_equal(ma.grad.numpy(), expected)
    np.testing.assert_array_equal(mb.grad.numpy(), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 4), (40, 300)])  # fused kernel, numpy path
def test_softmax_cross_entropy_kernels(dtype, shape):
    n, c = shape
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal(shape) * 30).astype(dtype)  # large: needs the max shift
    logits[0, 1] = 1e4 if dtype == np.float32 else 1e300
    target = rng.integers(0, c, n)
    losses, prob = cpu.softmax_cross_entropy(logits, target)
    assert losses.dtype == dtype and prob.dtype == dtype
    ref_logp = logits.astype(np.float64) - logits.max(1, keepdims=True)
    ref_logp -= np.log(np.exp(ref_logp).sum(1, keepdims=True))
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, -ref_logp[np.arange(n), target], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prob, np.exp(ref_logp), rtol=1e-5, atol=1e-6)
    onehot = np.eye(c)[target]
    np.testing.assert_allclose(cpu.softmax_cross_entropy_backward(prob, target, 0.5),
                               (np.exp(ref_logp) - onehot) * 0.5, rtol=1e-5, atol=1e-6)
    scale = np.arange(n, dtype=dtype)
    np.testing.assert_allclose(cpu.softmax_cross_entropy_backward(prob, target, scale),
                               (np.exp(ref_logp) - onehot) * scale[:, None], rtol=1e-5, atol=1e-6)


def test_vectorised_float32_exp_is_within_two_ulp():
    """exp_f32 (the float32 softmax's exp) against float64 exp: every float32 in [-87, 0] at a
    stride, the edges, and what it returns outside its range (0 below -87, NaN for NaN)."""
    from numba import njit

    from minidl.backend.cpu.activations import exp_f32

    @njit
    def vexp(x, out):
        for i in range(x.size):
            out[i] = exp_f32(x[i])

    x = np.concatenate([np.linspace(-87, 0, 2_000_001, dtype=np.float32),
                        np.float32([-1e-30, -0.0, 0.5 * np.log(2), -0.5 * np.log(2)])])
    out = np.empty_like(x)
    vexp(x, out)
    ref = np.exp(x.astype(np.float64))
    ulp = np.abs(out - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)
    assert ulp.max() <= 2.0, (ulp.max(), x[ulp.argmax()])
    edge = np.float32([-87.5, -100, -np.inf, np.nan])
    out = np.empty_like(edge)
    vexp(edge, out)
    np.testing.assert_array_equal(out[:3], 0)
    assert np.isnan(out[3])


@pytest.mark.parametrize("shape", [(256, 1000), (4, 2000), (600, 40), (600, 2)])
def test_float32_softmax_cross_entropy_kernel(shape):
    """The float32 kernels (the vectorised pass from 32 classes, the scalar loop below) against
    float64 numpy, with a
    row holding NaN (NaN loss and softmax, as in PyTorch), a row with -inf logits (zero
    probability there) and a row whose logits sit at a 1e4 offset."""
    n, c = shape
    rng = np.random.default_rng(8)
    logits = (rng.standard_normal(shape) * 8).astype(np.float32)
    logits[1] += 1e4
    logits[2, 0] = -np.inf
    logits[-1, -1] = np.nan
    target = rng.integers(0, c, n)
    target[2] = 1
    losses, prob = cpu.softmax_cross_entropy(logits, target)
    assert losses.dtype == np.float32 and prob.dtype == np.float32
    ref = logits.astype(np.float64)
    ref_logp = ref - ref.max(1, keepdims=True)
    ref_logp -= np.log(np.exp(ref_logp).sum(1, keepdims=True))
    ok = slice(0, n - 1)
    np.testing.assert_allclose(losses[ok], -ref_logp[np.arange(n), target][ok], rtol=2e-6,
                               atol=2e-6)
    np.testing.assert_allclose(prob[ok], np.exp(ref_logp)[ok], rtol=2e-6, atol=1e-7)
    assert prob[2, 0] == 0
    assert np.isnan(losses[-1]) and np.isnan(prob[-1]).all()


def test_scratch_buffers_are_not_reused_while_held():
    x = np.random.default_rng(6).standard_normal((2, 2, 5, 5)).astype(np.float32)
    a = cpu.im2col_t(x, 3, 3, 1, 1, 1, 1)
    first = a.copy()
    b = cpu.im2col_t(x * 2, 3, 3, 1, 1, 1, 1)  # a is still held: b must not overwrite it
    np.testing.assert_array_equal(a, first)
    np.testing.assert_array_equal(b, 2 * first)
    del a, b
    c = cpu.im2col_t(x, 3, 3, 1, 1, 1, 1)
    np.testing.assert_array_equal(c, first)


def _addr(a):
    return a.__array_interface__["data"][0]


def test_scratch_pool_reuses_given_back_buffers_and_stays_bounded():
    pool = scratch.ScratchPool(max_bytes=1000)
    a = pool.take((100,), np.float32)
    first = _addr(a)
    pool.give_back(a)
    b = pool.take((10, 10), np.float32)  # given back: the same memory comes back
    assert _addr(b) == first and not pool.free
    c = pool.take((200,), np.float32)    # b is out: a new buffer
    assert _addr(c) != first
    pool.give_back(b.T)                  # a view of a buffer gives the buffer back
    pool.give_back(c)
    assert sorted(x.nbytes for x in pool.free) == [800]  # over the cap: the oldest is dropped
    pool.give_back(np.empty(10))         # not the pool's: ignored
    assert sorted(x.nbytes for x in pool.free) == [800]


def test_scratch_buffer_is_never_reused_while_its_owner_holds_it():
    """The pool hands a buffer out again only after its owner gave it back: holding just a view
    of it (what a reference-count guess can get wrong), or nothing but the promise to give it
    back later, keeps it out of reach."""
    pool = scratch.ScratchPool()
    view = pool.take((64, 64), np.float32)[::2].T   # the owner keeps only a strided view
    view[...] = 1.0
    for _ in range(3):
        other = pool.take((64, 64), np.float32)
        assert not np.shares_memory(other, view)
        other[...] = 2.0
        pool.give_back(other)
    np.testing.assert_array_equal(view, 1.0)
    pool.give_back(view)  # now, and only now, it is free
    assert any(b is view.base for b in pool.free)


def test_scratch_buffer_lent_to_an_owner_returns_when_the_owner_is_freed():
    import gc

    class Owner:
        pass

    pool = scratch.ScratchPool()
    owner = Owner()
    a = pool.take((50,), np.float64)
    where = _addr(a)
    pool.lend(a, owner)
    del a
    gc.collect()
    assert _addr(pool.take((50,), np.float64)) != where  # the owner still holds it
    del owner
    gc.collect()
    assert [_addr(b) for b in pool.free] == [where]


def test_conv_columns_saved_for_backward_are_not_overwritten_by_later_convs():
    """Conv2d keeps its im2col matrix (a scratch buffer) for backward; convolutions of the same
    shape run before that backward must get other buffers, or the weight gradient is silently
    computed from the wrong input."""
    import minidl
    import minidl.nn.functional as F

    rng = np.random.default_rng(13)
    xs = [rng.standard_normal((2, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    w_np = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)

    def weight_grad(x, others):
        w = minidl.tensor(w_np, requires_grad=True)
        y = F.conv2d(minidl.tensor(x), w, padding=1)
        for o in others:  # same shapes, other data, graphs kept alive until the backward
            others_w = minidl.tensor(w_np, requires_grad=True)
            o.append(F.conv2d(minidl.tensor(o.pop(0)), others_w, padding=1))
        y.sum().backward()
        return w.grad.numpy()

    alone = weight_grad(xs[0], [])
    crowded = weight_grad(xs[0], [[xs[1]], [xs[2]]])
    np.testing.assert_array_equal(crowded, alone)
    assert np.abs(alone).sum() > 0


def test_kernel_dispatch_falls_back_without_numba(monkeypatch):
    import minidl.backend as backend

    monkeypatch.setattr(backend, "_kernel_sets", {})
    monkeypatch.setenv("MINIDL_DISABLE_NUMBA", "1")
    assert backend.kernels(np) is generic
    monkeypatch.setattr(backend, "_kernel_sets", {})
    monkeypatch.delenv("MINIDL_DISABLE_NUMBA")
    assert backend.kernels(np) is cpu


def test_kernel_dispatch_survives_a_broken_numba(monkeypatch):
    import sys

    import minidl.backend as backend

    monkeypatch.setattr(backend, "_kernel_sets", {})
    for name in [m for m in sys.modules if m.startswith("minidl.backend.cpu")]:
        monkeypatch.delitem(sys.modules, name)  # the package and its kernel modules
    monkeypatch.delattr(backend, "cpu")
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    with pytest.warns(RuntimeWarning, match="numba kernels unavailable"):
        assert backend.kernels(np) is generic


@pytest.mark.parametrize("shapes", [((2, 1, 6, 5), (3, 1, 3, 3), 1),    # direct path (thin input)
                                    ((2, 3, 6, 5), (4, 3, 3, 3), 1),    # im2col + GEMM
                                    ((2, 3, 4, 4), (4, 3, 1, 1), 0)])   # 1x1: no im2col
def test_conv2d_paths_pass_gradcheck(shapes):
    import minidl
    import minidl.nn.functional as F
    from minidl.testing import gradcheck

    xs, ws, pad = shapes
    rng = np.random.default_rng(8)
    x, w, b = (minidl.tensor(rng.standard_normal(s), requires_grad=True, dtype=np.float64)
               for s in (xs, ws, (ws[0],)))
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=pad), [x, w, b])


def test_max_pool_and_relu_pass_gradcheck():
    import minidl
    import minidl.nn.functional as F
    from minidl.testing import gradcheck

    rng = np.random.default_rng(9)
    # distinct values: the finite differences never straddle a tie or a kink
    x = minidl.tensor(rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0 - 12,
                      requires_grad=True, dtype=np.float64)
    assert gradcheck(lambda x: F.relu(F.max_pool2d(x, 2)), [x])
    assert gradcheck(lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [x])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [((2, 32, 7, 9), 1), ((1, 33, 6, 5), 0), ((3, 40, 8, 8), 1),
                                  ((1, 32, 3, 3), 1), ((2, 32, 4, 11), 0)])
def test_winograd_matches_im2col_reference(geom, dtype, monkeypatch):
    # small chunks too, so the sample-chunk loop runs more than once
    monkeypatch.setattr(conv_winograd, "WINO_TILES", 4)
    xs, pad = geom
    rng = np.random.default_rng(10)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((36, xs[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(36).astype(dtype)
    ref, _ = _conv_reference(x, w, b, pad, pad)
    for bias, expect in ((b, ref), (None, ref - b[:, None, None])):
        got = cpu.conv2d_winograd(x, w, bias, pad, pad)
        assert got.dtype == dtype and got.shape == ref.shape
        # the transforms reorder the sums: float32 rounding, relative to the output's scale
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, expect, rtol=0, atol=tol * np.abs(ref).max())


def test_winograd_runs_only_without_gradients():
    import minidl
    import minidl.nn.functional as F

    assert cpu.use_winograd((8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1))
    assert not cpu.use_winograd((1, 256, 14, 14), (256, 256, 3, 3), (1, 1), (1, 1))
    assert not cpu.use_winograd((8, 64, 56, 56), (64, 64, 3, 3), (2, 2), (1, 1))
    assert not cpu.use_winograd((8, 3, 56, 56), (64, 3, 3, 3), (1, 1), (1, 1))
    rng = np.random.default_rng(11)
    x = minidl.tensor(rng.standard_normal((2, 32, 12, 12)).astype(np.float32))
    w = minidl.tensor(rng.standard_normal((32, 32, 3, 3)).astype(np.float32), requires_grad=True)
    with minidl.no_grad():
        y_inference = F.conv2d(x, w, padding=1)
    y_train = F.conv2d(x, w, padding=1)   # im2col, with a graph for backward
    assert y_inference._ctx is None and y_train._ctx is not None
    np.testing.assert_allclose(y_inference.numpy(), y_train.numpy(), rtol=1e-4, atol=1e-4)
    y_train.sum().backward()
    assert w.grad is not None and w.grad.shape == (32, 32, 3, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [((3, 6, 14, 14), (16, 6, 5, 5), 0, 0),   # LeNet-5's second layer
                                  ((2, 3, 9, 7), (6, 3, 3, 3), 1, 1),      # a short last block
                                  ((1, 5, 6, 11), (9, 5, 5, 5), 2, 1),     # batch 1: split blocks
                                  ((2, 1, 7, 7), (3, 1, 3, 3), 0, 2),      # fewer than 4 channels
                                  ((4, 2, 3, 3), (4, 2, 3, 3), 0, 0)])     # a 1x1 output
@pytest.mark.parametrize("noncontig", [False, True])
def test_tiled_conv_matches_im2col_reference(geom, dtype, noncontig):
    xs, ws, ph, pw = geom
    rng = np.random.default_rng(13)
    x = _rand(rng, xs, dtype, noncontig)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    ref, _ = _conv_reference(x, w, b, ph, pw)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for bias, expect in ((b, ref), (None, ref - b[:, None, None])):
        got = cpu.conv2d_tiles(x, w, bias, ph, pw)
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, expect, **tol)


def test_tiled_conv_kernels_are_what_the_generator_writes():
    from minidl.backend.cpu import conv_tiles_gen

    assert conv_tiles_gen.TARGET.read_text() == conv_tiles_gen.module_source(), (
        "conv_tiles_kernels.py differs from its generator: run python minidl/backend/cpu/conv_tiles_gen.py")


def test_tiled_conv_is_chosen_for_inference_where_it_pays():
    import minidl
    import minidl.nn.functional as F

    assert cpu.use_tiles((1000, 6, 14, 14), (16, 6, 5, 5), (1, 1))        # LeNet-5 conv2
    assert cpu.use_tiles((8, 64, 56, 56), (64, 64, 3, 3), (1, 1))         # ResNet-50 layer1
    assert not cpu.use_tiles((8, 128, 28, 28), (128, 128, 3, 3), (1, 1))  # Winograd's
    assert not cpu.use_tiles((128, 1, 28, 28), (6, 1, 5, 5), (1, 1))     # LeNet-5 conv1: direct
    assert not cpu.use_tiles((8, 64, 56, 56), (64, 64, 3, 3), (2, 2))     # strided
    assert not cpu.use_tiles((8, 64, 56, 56), (64, 64, 7, 7), (1, 1))     # no 7x7 kernels
    assert not cpu.use_tiles((8, 64, 56, 56), (64, 64, 3, 5), (1, 1))     # not square
    assert cpu.conv2d_algorithm((8, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0), False) == "tiles"
    # training: the tiled kernels wherever they apply, kept im2col matrix (< 8 MB) or not
    assert cpu.conv2d_algorithm((8, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0), True) == "tiles"
    layer1, w64 = (8, 64, 56, 56), (64, 64, 3, 3)
    assert cpu.conv2d_algorithm(layer1, w64, (1, 1), (1, 1), True, np.float32) == "tiles"
    assert cpu.conv2d_algorithm((8, 128, 28, 28), (128, 128, 3, 3), (1, 1), (1, 1), True,
                                np.float32) == "winograd"
    assert cpu.conv2d_algorithm((4, 128, 16, 16), (128, 128, 3, 3), (1, 1), (1, 1), True,
                                np.float32) == "im2col"  # 4.7 MB: kept
    assert cpu.conv2d_algorithm((1, 64, 56, 56), w64, (1, 1), (1, 1), True,
                                np.float32) == "tiles"   # 7.2 MB: would be kept
    assert cpu.conv2d_algorithm((1, 64, 56, 56), w64, (1, 1), (1, 1), True,
                                np.float64) == "tiles"   # 14.5 MB in float64
    assert cpu.conv2d_algorithm((4, 32, 16, 16), (32, 32, 3, 3), (1, 1), (1, 1), True,
                                np.float32) == "tiles"   # Winograd's size, but tiles first
    rng = np.random.default_rng(14)
    x = minidl.tensor(rng.standard_normal((2, 6, 14, 14)).astype(np.float32))
    w = minidl.tensor(rng.standard_normal((16, 6, 5, 5)).astype(np.float32), requires_grad=True)
    b = minidl.tensor(rng.standard_normal(16).astype(np.float32), requires_grad=True)
    with minidl.no_grad():
        y_inference = F.conv2d(x, w, b)
    y_train = F.conv2d(x, w, b)
    assert y_inference._ctx is None and y_train._ctx is not None
    np.testing.assert_allclose(y_inference.numpy(), y_train.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [((5, 3, 9, 8), (4, 3, 3, 2), (2, 1), (1, 0)),
                                  ((3, 2, 7, 7), (6, 2, 5, 5), (1, 1), (2, 2)),
                                  ((1, 4, 6, 6), (3, 4, 1, 1), (2, 2), (0, 0))])
def test_inference_conv_matches_reference(geom, dtype, monkeypatch):
    xs, ws, stride, pad = geom
    rng = np.random.default_rng(12)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    col = generic.im2col(x.astype(np.float64), ws[2], ws[3], *stride, *pad)
    oh = (xs[2] + 2 * pad[0] - ws[2]) // stride[0] + 1
    ow = (xs[3] + 2 * pad[1] - ws[3]) // stride[1] + 1
    ref = (w.reshape(ws[0], -1).astype(np.float64) @ col).reshape(xs[0], ws[0], oh, ow)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    # one sample per chunk (straight into the output), several, and the whole batch at once
    for chunk_elems in (1, 2 * col.shape[1] * oh * ow, 1 << 30):
        monkeypatch.setattr(conv_im2col, "INFER_CHUNK", chunk_elems)
        got = cpu.conv2d_inference(x, w, b, stride, pad)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref + b[:, None, None], **tol)
        np.testing.assert_allclose(cpu.conv2d_inference(x, w, None, stride, pad), ref, **tol)


@once
def test_openblas_spin_time_is_shortened_and_blas_still_computes():
    """configure() sets OpenBLAS's worker spin time (see tuning._shorten_blas_spin). Wherever an
    OpenBLAS that reports its timeout is loaded and the environment allows the tuning, it must
    have taken: this fails, rather than skips, when it did not. BLAS results must not change."""
    libs = [(path, lib) for path, lib in tuning.openblas_libraries()
            if hasattr(lib, "openblas_thread_timeout")]
    if not libs:
        pytest.skip("no OpenBLAS that reports its thread timeout is loaded: nothing to tune")
    if not tuning.blas_tuning_wanted():
        pytest.skip("BLAS tuning turned off by the environment (MINIDL_BLAS_TUNING=0 or "
                    "OPENBLAS_THREAD_TIMEOUT set)")
    report = cpu.configure()
    for path, lib in libs:
        assert lib.openblas_thread_timeout() == tuning.BLAS_SPIN_LOG2, \
            f"{path}: OpenBLAS thread timeout {lib.openblas_thread_timeout()}, minidl's tuning " \
            f"did not take (configure() reported {report.blas_tuned})"
        assert path in report.blas_tuned
    a = np.random.default_rng(0).standard_normal((300, 200))
    b = np.random.default_rng(1).standard_normal((200, 100))
    want = np.einsum("ij,jk->ik", a, b)
    tuning._shorten_blas_spin()  # again: the workers restart once more
    np.testing.assert_allclose(a @ b, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@once
def test_configure_runs_once_and_is_thread_safe():
    import threading

    reports = []
    threads = [threading.Thread(target=lambda: reports.append(cpu.configure())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reports) == 8 and all(r is reports[0] for r in reports)
    assert reports[0] is cpu.configure()


@once
def test_each_process_setting_can_be_turned_off():
    """With the three switches off, importing the CPU kernels changes nothing in the process."""
    import subprocess
    import sys

    env = dict(os.environ, MINIDL_THREADING_TUNING="0", MINIDL_MALLOC_TUNING="0",
               MINIDL_BLAS_TUNING="0")
    env.pop("NUMBA_THREADING_LAYER", None)
    code = ("import numba; from minidl.backend import cpu; r = cpu.configure(); "
            "print(r.threading_layer, r.malloc_tuned, r.blas_tuned, numba.config.THREADING_LAYER)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "False", "()", "default"]


def _run_python(code):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER",
                                                           "MINIDL_THREADING_TUNING")}
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done


@once
def test_set_num_threads_starts_numba_on_the_layer_minidl_chose():
    """minidl.set_num_threads configures first, so numba's pool starts on the layer minidl
    chose (numba.set_num_threads before minidl's first op starts it on OpenMP with libgomp's
    default spin); the short spin's variable does not stay in the environment."""
    done = _run_python(
        "import os, minidl, numba\n"
        "from minidl.backend import cpu\n"
        "assert minidl.set_num_threads(1) == 1\n"
        "print(numba.threading_layer(), numba.get_num_threads(), cpu.configure().threading_layer,"
        " 'GOMP_SPINCOUNT' in os.environ)\n")
    layer, threads, chosen, leftover = done.stdout.split()
    assert layer == chosen and layer in ("omp", "workqueue") and threads == "1"
    assert leftover == "False"


@once
def test_the_thresholds_follow_how_the_workers_wait():
    """OpenMP's spinning workers start a kernel in microseconds, so minidl's kernels go parallel
    from smaller sizes there than on workqueue's sleeping workers; the table in use is the one
    for the layer minidl chose (and the one for sleeping workers where the user chose)."""
    import subprocess
    import sys

    code = ("from minidl.backend import cpu; from minidl.backend.cpu import launch; "
            "layer = cpu.configure().threading_layer; "
            "table = {'omp': launch.SPINNING_WORKERS}.get(layer, launch.SLEEPING_WORKERS); "
            "print(layer, launch.THRESHOLDS == table)")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER",
                                                           "MINIDL_THREADING_TUNING")}
    for extra in ({}, {"NUMBA_THREADING_LAYER": "workqueue"}):
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, **extra),
                             capture_output=True, text=True, check=True, timeout=300).stdout
        assert out.split()[1] == "True", out
    from minidl.backend.cpu import launch

    assert launch.SPINNING_WORKERS.keys() == launch.SLEEPING_WORKERS.keys()
    assert all(launch.SPINNING_WORKERS[k] <= launch.SLEEPING_WORKERS[k]
               for k in launch.SLEEPING_WORKERS)
    assert launch.SPINNING_WORKERS["columns"] < launch.SLEEPING_WORKERS["columns"]


@once
def test_a_forked_child_runs_the_kernels_on_one_thread():
    """GNU OpenMP does not survive fork() (numba terminates a child that starts a parallel
    kernel on it): a forked child gets one numba thread, runs the serial drivers and gets the
    parent's answer, and the parent goes on in parallel."""
    done = _run_python(
        "import os, numpy as np, numba, minidl\n"
        "import minidl.nn.functional as F\n"
        "from minidl.backend.cpu import launch\n"
        "minidl.set_num_threads(2)\n"
        "for kind in launch.THRESHOLDS: launch.THRESHOLDS[kind] = 0\n"
        "x = minidl.tensor(np.random.default_rng(0).standard_normal((4, 8, 12, 12)))\n"
        "w = minidl.tensor(np.random.default_rng(1).standard_normal((16, 8, 3, 3)))\n"
        "want = F.relu(F.conv2d(x, w, padding=1)).sum().item()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    got = F.relu(F.conv2d(x, w, padding=1)).sum().item()\n"
        "    os._exit(0 if numba.get_num_threads() == 1 and abs(got - want) < 1e-3 * abs(want) else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), numba.get_num_threads(),"
        " F.relu(F.conv2d(x, w, padding=1)).sum().item() == want)\n")
    assert done.stdout.split() == ["0", "2", "True"], done.stdout + done.stderr


@once
def test_the_users_openmp_spin_is_kept():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER",
                                                           "MINIDL_THREADING_TUNING")}
    env["GOMP_SPINCOUNT"] = "123"
    code = ("import os; from minidl.backend import cpu; cpu.configure(); "
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert out == ["123"]


@once
def test_openmp_stays_at_one_active_level_after_numbas_pool_starts():
    """numba's OpenMP pool turns nesting on (255 levels) in the process's GNU OpenMP runtime;
    minidl sets it back to one level, and it stays there after parallel kernels ran, so another
    OpenMP user in the process (PyTorch imported after minidl's first op) does not open nested
    teams, more threads than cores. A user's OMP_MAX_ACTIVE_LEVELS is kept."""
    code = (
        "import ctypes, numpy as np, minidl\n"
        "from minidl.backend import cpu\n"
        "from minidl.backend.cpu import launch, tuning\n"
        "layer = cpu.configure().threading_layer\n"
        "for kind in launch.THRESHOLDS: launch.THRESHOLDS[kind] = 0\n"
        "minidl.nn.functional.relu(minidl.tensor(np.ones((64, 64)))).sum()\n"
        "libs = tuning._loaded_libraries(lambda n: n.startswith('libgomp.so'))\n"
        "levels = [ctypes.CDLL(p).omp_get_max_active_levels() for p in libs]\n"
        "print(layer, levels)\n")
    env = {k: v for k, v in os.environ.items() if k not in (
        "NUMBA_THREADING_LAYER", "MINIDL_THREADING_TUNING", "OMP_NESTED", "OMP_MAX_ACTIVE_LEVELS")}
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout
    if not out.startswith("omp"):
        pytest.skip(f"numba's OpenMP layer is not the one chosen here ({out.strip()}), so there is "
                    "no OpenMP nesting to check")
    assert out.split(" ", 1)[1].strip() == "[1]", out
    env["OMP_MAX_ACTIVE_LEVELS"] = "3"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout
    assert out.split(" ", 1)[1].strip() != "[1]", out  # the user's setting is left alone


@once
def test_numba_threads_started_first_are_reported():
    done = _run_python(
        "import numba\n"
        "numba.set_num_threads(1)\n"
        "import minidl, numpy as np\n"
        "minidl.nn.functional.relu(minidl.tensor(np.ones(3)))\n")
    assert "numba's threads were started before minidl's first CPU op" in done.stderr
    assert "minidl.set_num_threads()" in done.stderr


# ---- the one-pass SGD update ----------------------------------------------------------------
SGD_CONFIGS = [dict(momentum=0.0), dict(momentum=0.0, weight_decay=0.1),
               dict(momentum=0.9), dict(momentum=0.9, dampening=0.3, weight_decay=0.01),
               dict(momentum=0.8, nesterov=True, weight_decay=0.05)]


def _sgd_numpy(p, g, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD's update as numpy expressions (what minidl.optim runs without a kernel)."""
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_update_matches_the_numpy_expressions(config, dtype):
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((37, 5)).astype(dtype)
    grads = [rng.standard_normal(p0.shape).astype(dtype) for _ in range(3)]
    p, state = p0.copy(), {}
    want, buf = p0.copy(), None
    full = dict(dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False), **config)
    for g in grads:
        cpu.sgd_update(p, g, state, 0.1, full["momentum"], full["dampening"],
                       full["weight_decay"], full["nesterov"])
        want, buf = _sgd_numpy(want, g, buf, 0.1, **config)
    np.testing.assert_allclose(p, want, **_tol(dtype))
    assert ("momentum_buffer" in state) == bool(full["momentum"])
    if buf is not None:
        np.testing.assert_allclose(state["momentum_buffer"], buf, **_tol(dtype))


def test_sgd_step_uses_the_kernel_for_float_parameters_only(monkeypatch):
    import minidl

    calls = []
    real = cpu.sgd_update
    monkeypatch.setattr(cpu, "sgd_update", lambda *a: (calls.append(a[0].dtype), real(*a)))
    for dtype in (np.float32, np.float16):
        p = minidl.nn.Parameter(minidl.tensor(np.ones((3, 2)), dtype=dtype))
        assert p.dtype == dtype
        opt = minidl.optim.SGD([p], lr=0.5, momentum=0.9)
        p.grad = minidl.tensor(np.ones((3, 2)), dtype=dtype)
        opt.step()
        np.testing.assert_allclose(p.numpy().astype(np.float32), 0.5)
    assert calls == [np.dtype(np.float32)]  # float16 took the numpy expressions


@once
# ---- the one-pass Adam update ----------------------------------------------------------------
@pytest.mark.parametrize("driver", ["serial", "parallel"])
@pytest.mark.parametrize("kind, kw", [("Adam", {}), ("Adam", dict(weight_decay=0.1)),
                                      ("AdamW", dict(weight_decay=0.05)),
                                      ("Adam", dict(maximize=True))])
def test_adam_update_kernel_matches_torch(kind, kw, driver, monkeypatch):
    """Adam/AdamW on float32 parameters take the CPU kernel (counted) and follow torch's steps;
    amsgrad keeps the numpy expressions."""
    torch = pytest.importorskip("torch", reason="the reference is torch.optim")
    import minidl
    from minidl.backend.cpu import launch as cpu_launch

    if driver == "parallel":
        monkeypatch.setitem(cpu_launch.THRESHOLDS, "optim", 0)
    ks = minidl.backend.kernels(np)
    calls = []
    original = ks.adam_update
    monkeypatch.setattr(ks, "adam_update", lambda *a: (calls.append(1), original(*a))[1])
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((37, 11)).astype(np.float32)
    mp, tp = minidl.tensor(w0.copy(), requires_grad=True), torch.tensor(w0.copy(), requires_grad=True)
    mo = getattr(minidl.optim, kind)([mp], lr=0.01, **kw)
    to = getattr(torch.optim, kind)([tp], lr=0.01, **kw)
    for step in range(5):
        g = rng.standard_normal(w0.shape).astype(np.float32)
        mp.grad, tp.grad = minidl.tensor(g), torch.tensor(g)
        mo.step()
        to.step()
        np.testing.assert_allclose(mp.numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=f"step {step}")
    assert len(calls) == 5
    calls.clear()
    minidl.optim.Adam([mp], amsgrad=True).step()
    assert calls == []
