"""F.affine_grid and F.grid_sample (2-D and 3-D; bilinear, nearest and bicubic; each padding
mode, with and without align_corners): PyTorch parity forward and backward, float64 gradient
checks, errors and warnings, and the autocast dtypes of torch's CPU policy."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import leaf, randn

torch = pytest.importorskip("torch")
from _torch_parity import _Made, check_op, const  # noqa: E402

TF = torch.nn.functional


def _grid(shape, low=-1.3, high=1.3, seed=5):
    return np.random.default_rng(seed).uniform(low, high, shape)


SAMPLE_MODES = [(m, p, a) for m in ("bilinear", "nearest", "bicubic")
                for p in ("zeros", "border", "reflection") for a in (True, False)]


@pytest.mark.parametrize("mode,padding_mode,align_corners", SAMPLE_MODES,
                         ids=["-".join(map(str, c)) for c in SAMPLE_MODES])
def test_grid_sample_2d_parity(mode, padding_mode, align_corners):
    check_op(lambda F, x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
             [((2, 3, 5, 6), const(_grid((2, 4, 7, 2)).astype(np.float32)))])
    if mode != "nearest":  # nearest has a zero grid gradient in both; the others carry one
        g = _grid((2, 4, 7, 2)).astype(np.float32)
        check_op(lambda F, x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
                 [((2, 3, 5, 6), _Made(lambda rng: g))])


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_3d_parity(mode, padding_mode, align_corners):
    g = _grid((1, 3, 4, 2, 3)).astype(np.float32)
    check_op(lambda F, x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
             [((1, 2, 4, 5, 3), _Made(lambda rng: g))])


@pytest.mark.parametrize("mode,padding_mode,align_corners",
                         [("bilinear", "zeros", False), ("bilinear", "reflection", True),
                          ("bicubic", "border", False), ("bicubic", "zeros", True),
                          ("nearest", "reflection", False)])
def test_grid_sample_gradcheck_float64(mode, padding_mode, align_corners):
    x = randn((2, 2, 4, 5), seed=1)
    g = leaf(_grid((2, 3, 4, 2)), requires_grad=mode != "nearest")
    assert gradcheck(lambda x, g: F.grid_sample(x, g, mode, padding_mode, align_corners), [x, g])


def test_grid_sample_3d_gradcheck_float64():
    x = randn((1, 2, 3, 4, 3), seed=1)
    g = leaf(_grid((1, 2, 3, 2, 3)))
    assert gradcheck(lambda x, g: F.grid_sample(x, g, "bilinear", "border", False), [x, g])


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 3, 4, 2), (2, 3, 1, 4)])
def test_affine_grid_parity_and_gradcheck(size, align_corners):
    dims = len(size) - 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's unit-size note
        check_op(lambda F, t: F.affine_grid(t, size, align_corners), [(2, dims, dims + 1)])
        assert gradcheck(lambda t: F.affine_grid(t, size, align_corners),
                         [randn((2, dims, dims + 1))])


def test_affine_grid_then_grid_sample_identity_and_module_chain():
    theta = minidl.tensor([[[1.0, 0, 0], [0, 1, 0]]], requires_grad=True)
    x = minidl.randn(1, 2, 4, 5)
    grid = F.affine_grid(theta, (1, 2, 4, 5), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False)
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-6)
    y.sum().backward()
    assert theta.grad is not None and theta.grad.shape == (1, 2, 3)


def test_affine_grid_and_grid_sample_errors_and_warnings():
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 1, 2, 2))
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        F.grid_sample(minidl.randn(1, 1, 2, 2), minidl.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError, match="Nx2x3"):
        F.affine_grid(minidl.randn(1, 3, 4), (1, 1, 2, 2), False)
    with pytest.raises(ValueError, match="Nx3x4"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 1, 2, 2, 2), False)
    with pytest.raises(NotImplementedError, match="4D and 5D"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 1, 2), False)
    with pytest.raises(ValueError, match="positive output size"):
        F.affine_grid(minidl.randn(1, 2, 3), (1, 0, 2, 2), False)
    with pytest.raises(ValueError, match="floating point"):
        F.affine_grid(minidl.tensor([[[1, 0, 0], [0, 1, 0]]]), (1, 1, 2, 2), False)
    x = minidl.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="expected mode"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 2), "area", align_corners=False)
    with pytest.raises(ValueError, match="expected padding_mode"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 2), padding_mode="wrap", align_corners=False)
    with pytest.raises(ValueError, match="grid of shape"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 3), align_corners=False)
    with pytest.raises(ValueError, match="bicubic"):
        F.grid_sample(minidl.randn(1, 1, 2, 2, 2), minidl.zeros(1, 1, 1, 1, 3), "bicubic",
                      align_corners=False)
    with pytest.raises(TypeError, match="same dtype"):
        F.grid_sample(x, minidl.zeros(1, 2, 2, 2, dtype=minidl.float64), align_corners=False)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_grid_autocast_dtypes_match_torch_cpu(low):
    th = np.random.default_rng(0).standard_normal((1, 2, 3)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    g = _grid((1, 3, 3, 2)).astype(np.float32)
    with torch.autocast("cpu", dtype=getattr(torch, low)):
        t_grid = TF.affine_grid(torch.tensor(th), (1, 2, 4, 4), align_corners=False)
        t_out = TF.grid_sample(torch.tensor(x).to(getattr(torch, low)),
                               torch.tensor(g).to(getattr(torch, low)), align_corners=False)
    with minidl.autocast("cpu", dtype=getattr(minidl, low)):
        m_grid = F.affine_grid(minidl.tensor(th), (1, 2, 4, 4), align_corners=False)
        m_out = F.grid_sample(minidl.tensor(x).to(getattr(minidl, low)),
                              minidl.tensor(g).to(getattr(minidl, low)), align_corners=False)
    assert str(m_grid.dtype) == str(t_grid.dtype).replace("torch.", "")
    assert str(m_out.dtype) == str(t_out.dtype).replace("torch.", "") == "float32"
    np.testing.assert_allclose(m_out.numpy(), t_out.numpy(), rtol=1e-5, atol=1e-5)
