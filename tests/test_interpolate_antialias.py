"""F.interpolate(antialias=True) (bilinear and bicubic): values and gradients against torch
2.13 on the same float64 images, float64 gradient checks, a hand-computed shrink, and the
modes and ranks torch refuses. Found by an audit against torch 2.13: each test failed before
its fix."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn


_IMAGE = np.random.default_rng(2).standard_normal((2, 3, 17, 11))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kw", [dict(size=(5, 4)), dict(size=(30, 3)),
                                dict(scale_factor=(0.25, 0.7)),
                                dict(scale_factor=0.37, recompute_scale_factor=True)])
def test_interpolate_antialias_matches_torch(mode, align_corners, kw):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(_IMAGE, requires_grad=True)
    yt = torch.nn.functional.interpolate(xt, mode=mode, align_corners=align_corners,
                                         antialias=True, **kw)
    (yt * torch.arange(yt.numel()).reshape(yt.shape)).sum().backward()
    xo = minidl.tensor(_IMAGE, dtype=minidl.float64, requires_grad=True)
    yo = nn.functional.interpolate(xo, mode=mode, align_corners=align_corners, antialias=True,
                                   **kw)
    (yo * minidl.arange(yo.numel()).reshape(yo.shape)).sum().backward()
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolate_antialias_gradcheck(mode):
    from minidl.testing import gradcheck, gradgradcheck

    x = minidl.tensor(_IMAGE[:1, :2, :7, :6], dtype=minidl.float64, requires_grad=True)

    def f(a):
        return nn.functional.interpolate(a, size=(3, 4), mode=mode, antialias=True)
    assert gradcheck(f, (x,)) and gradgradcheck(f, (x,))


def test_interpolate_antialias_shrinking_averages_the_covered_pixels():
    x = minidl.tensor(np.arange(8.0).reshape(1, 1, 1, 8), dtype=minidl.float64)
    y = nn.functional.interpolate(x, size=(1, 2), mode="bilinear", antialias=True)
    # each output's triangle filter is widened 4x: six inputs, weights 5 7 7 5 3 1 (/ 28)
    w = np.array([5, 7, 7, 5, 3, 1]) / 28.0
    np.testing.assert_allclose(y.numpy().ravel(), [w @ np.arange(6.0), w[::-1] @ np.arange(2.0, 8)])
    plain = nn.functional.interpolate(x, size=(1, 2), mode="bilinear")
    np.testing.assert_allclose(plain.numpy().ravel(), [1.5, 5.5])


def test_interpolate_antialias_is_refused_for_other_modes_as_torch():
    with pytest.raises(ValueError, match="restricted to bilinear and bicubic"):
        nn.functional.interpolate(minidl.tensor(_IMAGE), size=3, mode="nearest", antialias=True)
    with pytest.raises(ValueError, match="4-D"):
        nn.functional.interpolate(minidl.tensor(_IMAGE[0]), size=3, mode="linear",
                                  antialias=True)
