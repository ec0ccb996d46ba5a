"""What a convolution keeps for backward: a large im2col matrix is not kept (it is gathered
again from the input in backward), and the gradients are the same either way."""
import numpy as np
import pytest

import minidl
from minidl.backend import generic
import minidl.nn.functional as F


def _conv_grads(x, w, b):
    mx, mw, mb = (minidl.tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(mx, mw, mb, stride=2, padding=1)
    proj = np.random.default_rng(9).standard_normal(out.shape).astype(x.dtype)
    saved = out._ctx.saved
    (out * minidl.tensor(proj)).sum().backward()
    return saved, [t.grad.numpy() for t in (mx, mw, mb)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_large_columns_are_gathered_again_in_backward(monkeypatch, dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    kept, want = _conv_grads(x, w, b)
    assert kept[0].shape == (27, 2 * 5 * 4)  # small: the column matrix itself is kept
    monkeypatch.setattr(generic, "KEEP_COLUMNS_BYTES", 0)
    saved, got = _conv_grads(x, w, b)
    assert saved[0].shape == x.shape  # large: only the input, which the graph holds anyway
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_gradcheck_with_columns_gathered_again(monkeypatch):
    from minidl.testing import gradcheck

    monkeypatch.setattr(generic, "KEEP_COLUMNS_BYTES", 0)
    rng = np.random.default_rng(10)
    x, w = (minidl.tensor(rng.standard_normal(s), dtype=np.float64, requires_grad=True)
            for s in ((2, 2, 5, 5), (3, 2, 3, 3)))
    assert gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])


@pytest.mark.parametrize("spatial", [1, 2, 12], ids=["1x1", "2x2", "12x12"])
def test_pointwise_weight_gradient_either_way(spatial):
    """1x1 convs take their weight gradient as per-sample GEMMs summed (long rows) or as one
    GEMM over the batch's columns (short rows, where the per-sample products would be larger
    than the activations): both against a plain einsum."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 6, spatial, spatial)).astype(np.float32)
    w = rng.standard_normal((5, 6, 1, 1)).astype(np.float32)
    mx, mw = minidl.tensor(x, requires_grad=True), minidl.tensor(w, requires_grad=True)
    out = F.conv2d(mx, mw)
    g = rng.standard_normal(out.shape).astype(np.float32)
    (out * minidl.tensor(g)).sum().backward()
    want = np.einsum("nchw,nkhw->ck", g, x)[:, :, None, None]
    np.testing.assert_allclose(mw.grad.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mx.grad.numpy(), np.einsum("nchw,ck->nkhw", g, w[:, :, 0, 0]),
                               rtol=1e-5, atol=1e-5)


def _im2col_only(m):
    """Makes the CPU's algorithm choice skip the tiled kernels (the im2col reference)."""
    from minidl.backend.cpu import conv
    m.setattr(conv, "use_tiles", lambda *a: False)


@pytest.mark.parametrize("case", ["tiles", "winograd"])
def test_training_forward_without_columns_where_they_would_not_be_kept(monkeypatch, case):
    """Training runs the tiled kernels forward wherever they apply, and Winograd where the
    im2col matrix would be too large to keep; backward then needs no kept matrix: the same
    output and gradients as im2col + GEMM with its matrix kept, in float64."""
    cpu = pytest.importorskip("minidl.backend.cpu", reason="numba is not installed")
    rng = np.random.default_rng(12)
    # tiles: up to 64x64 channels; Winograd: wider layers with enough 2x2 output tiles
    xs, ws = ((2, 8, 9, 10), (16, 8, 3, 3)) if case == "tiles" else ((4, 64, 16, 16),
                                                                      (80, 64, 3, 3))
    x, w = rng.standard_normal(xs), rng.standard_normal(ws) * 0.1
    b = rng.standard_normal(ws[0])
    g = rng.standard_normal((xs[0], ws[0], xs[2], xs[3]))

    def run():
        mx, mw, mb = (minidl.tensor(a, dtype=np.float64, requires_grad=True) for a in (x, w, b))
        out = F.conv2d(mx, mw, mb, padding=1)
        saved = out._ctx.saved
        (out * minidl.tensor(g, dtype=np.float64)).sum().backward()
        return out.numpy(), saved, [t.grad.numpy() for t in (mx, mw, mb)]

    calls = []
    kernel = getattr(cpu, f"conv2d_{case}")
    monkeypatch.setattr(cpu, f"conv2d_{case}", lambda *a: calls.append(1) or kernel(*a))
    with monkeypatch.context() as m:
        if case == "tiles":
            _im2col_only(m)
        want_y, kept, want = run()
    assert not calls and kept[0].ndim == 2  # small: im2col, its matrix kept
    if case == "winograd":
        monkeypatch.setattr(generic, "KEEP_COLUMNS_BYTES", 0)
    got_y, saved, got = run()
    assert calls and saved[0].shape == xs  # the inference kernel ran; only x is kept
    np.testing.assert_allclose(got_y, want_y, rtol=1e-10, atol=1e-10)
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_, w_, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", [1, 3], ids=["pad1", "pad3"])
def test_tiled_training_backward_matches_im2col(monkeypatch, padding):
    """A layer trained through the tiled kernels takes their weight gradient and its input
    gradient as a tiled convolution of g with the flipped filters; with padding wider than the
    filter (a transposed conv that would crop) the input gradient goes the im2col way."""
    pytest.importorskip("minidl.backend.cpu", reason="numba is not installed")
    rng = np.random.default_rng(14)
    x, w, b = rng.standard_normal((3, 8, 9, 10)), rng.standard_normal((16, 8, 3, 3)) * 0.1, \
        rng.standard_normal(16)

    def grads():
        mx, mw, mb = (minidl.tensor(a, dtype=np.float64, requires_grad=True) for a in (x, w, b))
        out = F.conv2d(mx, mw, mb, padding=padding)
        tiled = out._ctx.tiles
        (out * minidl.tensor(np.cos(np.arange(out.numel())).reshape(out.shape))).sum().backward()
        return tiled, [t.grad.numpy() for t in (mx, mw, mb)]

    with monkeypatch.context() as m:
        _im2col_only(m)
        tiled, want = grads()
    assert not tiled
    tiled, got = grads()
    assert tiled
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_, w_, rtol=1e-10, atol=1e-10)


def test_gradcheck_of_a_tiled_training_convolution():
    from minidl.testing import gradcheck

    pytest.importorskip("minidl.backend.cpu", reason="numba is not installed")
    rng = np.random.default_rng(13)
    x, w = (minidl.tensor(rng.standard_normal(s), dtype=np.float64, requires_grad=True)
            for s in ((2, 4, 6, 5), (16, 4, 3, 3)))
    assert F.conv2d(x, w, padding=1)._ctx.tiles  # the tiled kernels, forward and backward
    assert gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])
