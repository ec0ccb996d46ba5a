"""What a convolution keeps for backward: a large im2col matrix is not kept (it is gathered
again from the input in backward), and the gradients are the same either way; the same for
grouped, depthwise and dilated convolutions."""
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


# ---- grouped and dilated convolutions (nn/_functional/convolution.py's ConvNd) -----------------
def _grouped_grads(x, w, b, **kwargs):
    mx, mw, mb = (minidl.tensor(a, requires_grad=True, dtype=a.dtype) for a in (x, w, b))
    out = F.conv2d(mx, mw, mb, **kwargs)
    saved = out._ctx.saved
    proj = np.random.default_rng(9).standard_normal(out.shape).astype(x.dtype)
    (out * minidl.tensor(proj, dtype=x.dtype)).sum().backward()
    return out.numpy(), saved, [t.grad.numpy() for t in (mx, mw, mb)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kwargs", [dict(groups=3, padding=1), dict(dilation=2, stride=2),
                                    dict(groups=6, dilation=(2, 1), padding=(2, 1), stride=2)],
                         ids=["grouped", "dilated", "depthwise_dilated"])
def test_grouped_dilated_columns_are_gathered_again_in_backward(monkeypatch, dtype, kwargs):
    rng = np.random.default_rng(8)
    groups = kwargs.get("groups", 1)
    x = rng.standard_normal((2, 6, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 6 // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    want_y, kept, want = _grouped_grads(x, w, b, **kwargs)
    assert kept[0].ndim == 4 and kept[0].shape[:2] == (2, groups)  # small: the columns kept
    monkeypatch.setattr(generic, "KEEP_COLUMNS_BYTES", 0)
    got_y, saved, got = _grouped_grads(x, w, b, **kwargs)
    assert saved[0].shape == x.shape  # large: only the input, which the graph holds anyway
    np.testing.assert_array_equal(got_y, want_y)
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-6 if dtype == np.float32 else 1e-13)


def _traced_conv(x, w, groups):
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        y = F.conv2d(x, w, padding=1, groups=groups)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return y, held - before, peak - before


def test_large_depthwise_conv_builds_no_columns():
    """A depthwise layer runs the direct CPU kernel: no kh*kw-times column matrix at all."""
    c, hw = 32, 96  # the 3x3 columns would be 9x the 1.2 MB input
    x = minidl.tensor(np.random.default_rng(0).standard_normal((1, c, hw, hw)),
                      requires_grad=True)
    w = minidl.tensor(np.random.default_rng(1).standard_normal((c, 1, 3, 3)),
                      requires_grad=True)
    F.conv2d(x, w, padding=1, groups=c).sum().backward()  # numba compiles (or loads) first
    x.grad = w.grad = None
    y, held, peak = _traced_conv(x, w, c)
    # the output and the channels-last copies of input and output, no 9x columns
    assert peak < 4 * x.data.nbytes < 9 * x.data.nbytes / 2
    assert held < 2 * x.data.nbytes
    assert y._ctx.saved[0] is x.data
    y.sum().backward()
    assert w.grad.shape == w.shape and x.grad.shape == x.shape


def test_large_grouped_conv_holds_no_columns_after_forward():
    c, hw = 32, 96  # two input channels per group: the columns, 9x the input, are built
    x = minidl.tensor(np.random.default_rng(0).standard_normal((1, c, hw, hw)),
                      requires_grad=True)
    w = minidl.tensor(np.random.default_rng(1).standard_normal((c, 2, 3, 3)),
                      requires_grad=True)
    columns = 9 * x.data.nbytes
    assert columns > generic.KEEP_COLUMNS_BYTES
    y, held, peak = _traced_conv(x, w, c // 2)
    assert peak >= columns  # the forward pass did build them ...
    assert held < 2 * x.data.nbytes < columns / 4  # ... and keeps only the output
    assert y._ctx.saved[0] is x.data
    y.sum().backward()
    assert w.grad.shape == w.shape and x.grad.shape == x.shape


def test_frozen_grouped_weight_keeps_no_columns():
    x = minidl.randn(1, 4, 6, 6, requires_grad=True)
    w = minidl.randn(4, 1, 3, 3)  # no weight gradient: the columns are never needed
    y = F.conv2d(x, w, groups=4, dilation=2)
    assert y._ctx.saved[0] is x.data
    y.sum().backward()
    assert x.grad is not None and w.grad is None


def test_gradcheck_grouped_dilated_with_columns_gathered_again(monkeypatch):
    from minidl.testing import gradcheck

    monkeypatch.setattr(generic, "KEEP_COLUMNS_BYTES", 0)
    rng = np.random.default_rng(10)
    x, w, b = (minidl.tensor(rng.standard_normal(s), dtype=np.float64, requires_grad=True)
               for s in ((2, 4, 6, 5), (4, 1, 3, 2), (4,)))
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=(2, 1), dilation=(2, 1),
                                              groups=4), [x, w, b])
    x1, w1 = (minidl.tensor(rng.standard_normal(s), dtype=np.float64, requires_grad=True)
              for s in ((2, 4, 11), (6, 2, 3)))
    assert gradcheck(lambda x, w: F.conv1d(x, w, stride=2, dilation=3, groups=2), [x1, w1])


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on even kernels
def test_grouped_dilated_with_columns_gathered_again_matches_torch(monkeypatch):
    pytest.importorskip("torch")
    from _torch_parity import check_op

    monkeypatch.setattr(generic, "KEEP_COLUMNS_BYTES", 0)
    check_op(lambda F, x, w, b: F.conv2d(x, w, b, stride=(1, 2), padding=1, dilation=2,
                                         groups=3), [((2, 6, 9, 10), (6, 2, 3, 3), (6,))])
    check_op(lambda F, x, w: F.conv2d(x, w, padding="same", groups=5), [((1, 5, 7, 7),
                                                                        (10, 1, 4, 3))])
