"""Property tests: conv2d and the pools against slow nested-loop references on random small
geometries (hypothesis), and numerical stability at large magnitudes in closed form."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from helpers import avg_pool2d_reference, conv2d_reference, max_pool2d_reference

try:
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    small = settings(max_examples=40, deadline=None)
except ImportError:  # skip the property tests only: the stability tests below need no hypothesis
    _skip = pytest.mark.skip(reason="property tests need hypothesis (pip install hypothesis)")

    class st:  # noqa: N801  (stands in for hypothesis.strategies so the decorators apply)
        composite = staticmethod(lambda f: lambda: None)

    def given(*_):
        return _skip

    def small(f):
        return f


@st.composite
def conv_cases(draw):
    n, c, co = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    assume(h + 2 * padding >= kh and w + 2 * padding >= kw)
    seed = draw(st.integers(0, 2 ** 16))
    return (n, c, h, w), (co, c, kh, kw), stride, padding, seed, draw(st.booleans())


@small
@given(conv_cases())
def test_conv2d_matches_nested_loops(case):
    x_shape, w_shape, stride, padding, seed, with_bias = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if with_bias else None
    y = F.conv2d(minidl.tensor(x, dtype="float64"), minidl.tensor(w, dtype="float64"),
                 None if b is None else minidl.tensor(b, dtype="float64"),
                 stride=stride, padding=padding)
    expected = conv2d_reference(x, w, b, stride, padding)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)


@small
@given(conv_cases())
def test_conv2d_backward_is_the_adjoint(case):
    """<conv(x, w), g> is bilinear: its gradients are the loops' partial derivatives, so
    <grad_x, dx> must equal <conv(dx, w), g> and likewise for w (exact in float64)."""
    x_shape, w_shape, stride, padding, seed, _ = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    xt, wt = (minidl.tensor(a, dtype="float64", requires_grad=True) for a in (x, w))
    y = F.conv2d(xt, wt, stride=stride, padding=padding)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    dx, dw = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    np.testing.assert_allclose((xt.grad.numpy() * dx).sum(),
                               (conv2d_reference(dx, w, None, stride, padding) * g).sum(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose((wt.grad.numpy() * dw).sum(),
                               (conv2d_reference(x, dw, None, stride, padding) * g).sum(), rtol=1e-9, atol=1e-9)


@st.composite
def pool_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    k, stride = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    padding = draw(st.integers(0, k // 2))
    assume(h + 2 * padding >= k and w + 2 * padding >= k)
    return (n, c, h, w), k, stride, padding, draw(st.integers(0, 2 ** 16))


@small
@given(pool_cases())
def test_max_pool2d_matches_nested_loops(case):
    shape, k, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    xt = minidl.tensor(x, dtype="float64", requires_grad=True)
    y = F.max_pool2d(xt, k, stride=stride, padding=padding)
    expected = max_pool2d_reference(x, k, stride, padding)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y.numpy(), expected)
    # every output routes its gradient to one input equal to it (values are distinct a.s.)
    y.sum().backward()
    grad = xt.grad.numpy()
    assert grad.sum() == pytest.approx(y.numel())
    winners = x[grad > 0]
    assert set(np.round(winners, 12)) == set(np.round(expected.ravel(), 12))


@small
@given(pool_cases())
def test_avg_pool2d_matches_nested_loops(case):
    shape, k, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y = F.avg_pool2d(minidl.tensor(x, dtype="float64"), k, stride=stride, padding=padding)
    expected = avg_pool2d_reference(x, k, stride, padding)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


# ---- numerical stability, closed forms (no torch needed) ------------------------------------
@pytest.fixture
def no_float_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # overflow, 0/0 and log(0) raise; underflow to 0 (exp(-2e4)) is the right answer
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            yield


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_saturates_without_overflow(no_float_warnings, dtype):
    x = minidl.tensor([-1e4, -1e3, 0.0, 1e3, 1e4], dtype=dtype, requires_grad=True)
    y = F.sigmoid(x)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.25, 0.0, 0.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_and_log_softmax_at_1e4(no_float_warnings, dtype):
    x = minidl.tensor([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4]], dtype=dtype, requires_grad=True)
    np.testing.assert_allclose(F.softmax(x, dim=1).numpy(), [[1, 0, 0], [0.5, 0.5, 0]])
    logp = F.log_softmax(x, dim=1)
    np.testing.assert_allclose(logp.numpy(), [[0, -2e4, -1e4], [-np.log(2), -np.log(2), -2e4 - np.log(2)]],
                               rtol=1e-6)
    logp.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_exact_at_1e4(no_float_warnings, dtype):
    x = minidl.tensor([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [0.0, 0.0, 0.0]], dtype=dtype,
                      requires_grad=True)
    target = minidl.tensor([1, 0, 2])
    losses = F.cross_entropy(x, target, reduction="none")
    # -log softmax at the target: 2e4 exactly, log 2, log 3
    np.testing.assert_allclose(losses.numpy(), [2e4, np.log(2), np.log(3)], rtol=1e-6)
    loss = F.cross_entropy(x, target)
    loss.backward()
    expected = np.array([[1, -1, 0], [0.5 - 1, 0.5, 0], [1 / 3, 1 / 3, 1 / 3 - 1]]) / 3
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6, atol=1e-7)
