"""F.interpolate's bicubic, area and nearest-exact modes (and PyTorch's same-size copies), and the
Upsample module with them: float64 gradient checks, PyTorch parity forward and backward, the
bicubic coefficients and border clamping, errors, and the autocast dtypes of torch's CPU policy.
The other modes are in test_nn_pooling_more.py (interpolate/Upsample) and test_nn_3d.py."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck
from helpers import randn, same

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the parity tests skip themselves
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _parity(fn, x, seed=0, rtol=1e-4, atol=1e-5, grad=True):
    """fn(F, tensor) on minidl and torch (float32): outputs and input gradients of a fixed
    random projection."""
    mx = minidl.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    my, ty = fn(F, mx), fn(TF, tx)
    assert tuple(my.shape) == tuple(ty.shape)
    assert my.dtype == np.float32
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=rtol, atol=atol)
    if grad:
        proj = np.random.default_rng(seed).standard_normal(tuple(ty.shape)).astype(np.float32)
        (my * minidl.tensor(proj)).sum().backward()
        (ty * torch.tensor(proj)).sum().backward()
        np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=atol)
    return my


INTERP_GRADCHECKS = [
    ("bicubic_up", lambda x: F.interpolate(x, (7, 9), mode="bicubic"), (1, 2, 3, 4)),
    ("bicubic_down", lambda x: F.interpolate(x, scale_factor=0.6, mode="bicubic"), (1, 2, 7, 6)),
    ("bicubic_ac", lambda x: F.interpolate(x, scale_factor=(1.7, 0.8), mode="bicubic",
                                           align_corners=True), (2, 1, 4, 5)),
    ("bicubic_same_size", lambda x: F.interpolate(x, scale_factor=1.1, mode="bicubic"),
     (1, 1, 4, 5)),
    ("area_up", lambda x: F.interpolate(x, (5, 7), mode="area"), (1, 2, 3, 4)),
    ("area_down", lambda x: F.interpolate(x, scale_factor=0.4, mode="area"), (1, 2, 7, 8)),
    ("area_1d", lambda x: F.interpolate(x, 3, mode="area"), (2, 2, 7)),
    ("nearest_exact_2d", lambda x: F.interpolate(x, scale_factor=1.6, mode="nearest-exact"),
     (1, 2, 3, 4)),
]


@pytest.mark.parametrize("name,fn,shape", INTERP_GRADCHECKS,
                         ids=[g[0] for g in INTERP_GRADCHECKS])
def test_interpolate_gradcheck_float64(name, fn, shape):
    assert gradcheck(fn, [randn(shape)])


INTERP_PARITY = [
    ("bicubic_size_up", lambda F, x: F.interpolate(x, (7, 9), mode="bicubic"), (2, 3, 4, 5)),
    ("bicubic_size_down", lambda F, x: F.interpolate(x, (3, 2), mode="bicubic"), (1, 2, 8, 7)),
    ("bicubic_scale", lambda F, x: F.interpolate(x, scale_factor=2.5, mode="bicubic"),
     (1, 2, 3, 4)),
    ("bicubic_scale_down", lambda F, x: F.interpolate(x, scale_factor=(0.45, 0.7),
                                                      mode="bicubic"), (1, 2, 9, 8)),
    ("bicubic_ac_up", lambda F, x: F.interpolate(x, (9, 6), mode="bicubic", align_corners=True),
     (2, 2, 4, 3)),
    ("bicubic_ac_down", lambda F, x: F.interpolate(x, scale_factor=0.5, mode="bicubic",
                                                   align_corners=True), (1, 2, 9, 7)),
    ("bicubic_recompute", lambda F, x: F.interpolate(x, scale_factor=1.3, mode="bicubic",
                                                     recompute_scale_factor=True), (1, 2, 4, 5)),
    ("bicubic_one_pixel", lambda F, x: F.interpolate(x, (4, 3), mode="bicubic"), (1, 1, 1, 1)),
    ("bicubic_to_one", lambda F, x: F.interpolate(x, 1, mode="bicubic", align_corners=True),
     (1, 1, 5, 4)),
    ("area_size_down", lambda F, x: F.interpolate(x, (3, 2), mode="area"), (2, 3, 8, 7)),
    ("area_size_up", lambda F, x: F.interpolate(x, (7, 9), mode="area"), (1, 2, 3, 4)),
    ("area_scale", lambda F, x: F.interpolate(x, scale_factor=(0.5, 0.35), mode="area"),
     (1, 2, 9, 10)),
    ("area_scale_recompute", lambda F, x: F.interpolate(x, scale_factor=1.5, mode="area",
                                                        recompute_scale_factor=True),
     (1, 2, 3, 5)),
    ("area_1d", lambda F, x: F.interpolate(x, scale_factor=0.5, mode="area"), (2, 3, 9)),
    ("nearest_exact_2d_scale", lambda F, x: F.interpolate(x, scale_factor=(1.7, 0.6),
                                                          mode="nearest-exact"), (1, 2, 5, 6)),
    ("nearest_exact_same_size", lambda F, x: F.interpolate(x, scale_factor=1.1,
                                                           mode="nearest-exact"), (1, 2, 7, 8)),
    # torch copies a dim whose size stays, whatever the scale factor (bilinear, 2-D nearest)
    ("bilinear_same_size", lambda F, x: F.interpolate(x, scale_factor=(1.1, 0.9),
                                                      mode="bilinear"), (1, 2, 5, 6)),
    ("nearest_same_size", lambda F, x: F.interpolate(x, scale_factor=(1.1, 1.5)), (1, 2, 5, 4)),
    ("nearest_double", lambda F, x: F.interpolate(x, scale_factor=2.1), (1, 2, 5, 4)),
    ("linear_same_size", lambda F, x: F.interpolate(x, scale_factor=1.1, mode="linear"),
     (1, 2, 6)),
]


@needs_torch
@pytest.mark.parametrize("name,fn,shape", INTERP_PARITY, ids=[p[0] for p in INTERP_PARITY])
def test_interpolate_parity_with_torch(name, fn, shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    _parity(fn, x)


@needs_torch
def test_bicubic_same_size_scale_forward_matches_torch_gradient_is_the_true_one():
    # torch's bicubic backward copies the gradient when the size does not change, though its
    # forward resamples at the scaled positions (torch's own gradcheck fails there); minidl's
    # gradient is the forward's true adjoint (checked by the gradcheck above)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32)
    y = _parity(lambda F, x: F.interpolate(x, scale_factor=1.1, mode="bicubic"), x, grad=False)
    assert not np.allclose(y.numpy(), x, atol=1e-3)  # it does resample


def test_bicubic_coefficients_and_border_clamping():
    # a unit impulse at the first pixel, upsampled by 2 along the width: the taps are torch's
    # A = -0.75 cubic weights, with those left of the border folded onto pixel 0
    x = np.zeros((1, 1, 1, 4), np.float32)
    x[..., 0] = 1
    y = F.interpolate(minidl.tensor(x), size=(1, 8), mode="bicubic").numpy().ravel()
    a = -0.75

    def w(d):
        d = abs(d)
        return ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else \
            (((d - 5) * d + 8) * d - 4) * a if d < 2 else 0.0

    want = []
    for i in range(8):
        pos = (i + 0.5) / 2 - 0.5
        f = np.floor(pos)
        want.append(sum(w(pos - (f + k)) for k in (-1, 0, 1, 2) if min(max(f + k, 0), 3) == 0))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)
    # the constant image stays constant (the weights sum to one)
    c = F.interpolate(minidl.ones(1, 1, 3, 5), scale_factor=(2.3, 0.7), mode="bicubic")
    np.testing.assert_allclose(c.numpy(), 1.0, rtol=1e-6)


def test_area_is_adaptive_average_pooling():
    x = minidl.randn(2, 3, 9, 10)
    np.testing.assert_array_equal(F.interpolate(x, (4, 3), mode="area").numpy(),
                                  F.adaptive_avg_pool2d(x, (4, 3)).numpy())


@needs_torch
@pytest.mark.parametrize("kwargs", [dict(scale_factor=2, mode="bicubic"),
                                    dict(size=(5, 7), mode="bicubic", align_corners=True),
                                    dict(scale_factor=0.5, mode="area"),
                                    dict(size=(6, 3), mode="nearest-exact")])
def test_upsample_module_matches_torch(kwargs):
    from _nn_parity import check_module

    x = np.random.default_rng(1).standard_normal((2, 3, 4, 6)).astype(np.float32)
    ours, theirs = nn.Upsample(**kwargs), torch.nn.Upsample(**kwargs)
    assert repr(ours) == repr(theirs)
    check_module(ours, theirs, [x])


def test_interpolate_new_modes_bad_input():
    x = minidl.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, 3, mode="area", align_corners=False)
    with pytest.raises(ValueError, match="mode 'bicubic' expects a 4-D"):
        F.interpolate(minidl.randn(1, 2, 5), 3, mode="bicubic")
    with pytest.raises(ValueError, match="recompute_scale_factor is not meaningful"):
        F.interpolate(x, 3, mode="bicubic", recompute_scale_factor=True)
    with pytest.raises(ValueError, match="mode 'lanczos' is not supported"):
        F.interpolate(x, 3, mode="lanczos")


@needs_torch
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_interpolate_new_modes_keep_the_autocast_dtype_as_torch_cpu(low):
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((2, 2, 1, 1)).astype(np.float32)
    for kwargs in [dict(scale_factor=2, mode="bicubic"), dict(size=3, mode="area")]:
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = TF.interpolate(TF.conv2d(torch.tensor(x), torch.tensor(w)), **kwargs)
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = F.interpolate(F.conv2d(minidl.tensor(x), minidl.tensor(w)), **kwargs)
        assert str(got.dtype) == str(want.dtype).replace("torch.", "")
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05,
                                   atol=0.1)


# ---- nearest modes on uint8 images ---------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("kw", [{"size": (3, 4)}, {"scale_factor": 2}, {"scale_factor": 0.6}])
def test_interpolate_nearest_takes_uint8_images(mode, kw):
    a = (np.arange(2 * 3 * 5 * 7) % 251).astype(np.uint8).reshape(2, 3, 5, 7)
    import minidl.nn.functional as F

    m = F.interpolate(minidl.tensor(a, dtype=a.dtype), mode=mode, **kw)
    t = torch.nn.functional.interpolate(torch.from_numpy(a), mode=mode, **kw)
    same(m, t, f"uint8 {mode} {kw}")
    with pytest.raises(TypeError):
        F.interpolate(minidl.tensor(a.astype(np.int64)), mode=mode, **kw)
