"""MaxPool1d/2d (dilation, ceil_mode, return_indices), AvgPool1d/2d (ceil_mode,
count_include_pad, divisor_override), adaptive average and max pooling, interpolate/Upsample,
PixelShuffle/PixelUnshuffle, Unflatten, Unfold/Fold modules: float64 gradient checks and
PyTorch parity (functions and modules, repr included)."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import distinct, leaf, randn

torch = pytest.importorskip("torch")
from _nn_parity import check_module  # noqa: E402
from _torch_parity import check_op, distinct as t_distinct  # noqa: E402

TF = torch.nn.functional


GRADCHECKS = [
    ("max_pool1d", lambda x: F.max_pool1d(x, 3, 2, 1, dilation=2, ceil_mode=True), (2, 3, 10)),
    ("max_pool2d_dilation", lambda x: F.max_pool2d(x, (2, 3), 2, (1, 1), dilation=(2, 1)),
     (1, 2, 7, 8)),
    ("avg_pool1d_ceil", lambda x: F.avg_pool1d(x, 3, 2, 1, ceil_mode=True,
                                               count_include_pad=False), (2, 3, 8)),
    ("avg_pool2d_divisor", lambda x: F.avg_pool2d(x, 3, 2, 1, divisor_override=5), (1, 2, 6, 7)),
    ("adaptive_avg_pool1d", lambda x: F.adaptive_avg_pool1d(x, 4), (2, 3, 7)),
    ("adaptive_max_pool2d", lambda x: F.adaptive_max_pool2d(x, (3, 2)), (1, 2, 7, 5)),
    ("adaptive_max_pool1d", lambda x: F.adaptive_max_pool1d(x, 3), (2, 2, 8)),
    ("interp_bilinear", lambda x: F.interpolate(x, (5, 7), mode="bilinear"), (1, 2, 3, 4)),
    ("interp_bilinear_ac", lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear",
                                                   align_corners=True), (1, 2, 4, 3)),
    ("interp_nearest", lambda x: F.interpolate(x, scale_factor=(2, 3)), (1, 2, 3, 2)),
    ("interp_linear", lambda x: F.interpolate(x, 4, mode="linear"), (2, 2, 6)),
    ("pixel_shuffle", lambda x: F.pixel_shuffle(x, 2), (1, 8, 2, 3)),
    ("pixel_unshuffle", lambda x: F.pixel_unshuffle(x, 2), (1, 2, 4, 6)),
]


@pytest.mark.parametrize("name,fn,shape", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_float64(name, fn, shape):
    x = leaf(distinct(shape, spacing=0.1)) if "max" in name else randn(shape)
    assert gradcheck(fn, [x])


PARITY = [
    ("max_pool1d", lambda F, x: F.max_pool1d(x, 3), [t_distinct((2, 3, 10))]),
    ("max_pool1d_all", lambda F, x: F.max_pool1d(x, 4, 3, 2, 2, True), [t_distinct((2, 3, 13))]),
    ("max_pool1d_unbatched", lambda F, x: F.max_pool1d(x, 2, 1), [t_distinct((3, 6))]),
    ("max_pool2d_ceil", lambda F, x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
     [t_distinct((2, 2, 8, 9))]),
    ("max_pool2d_dilation", lambda F, x: F.max_pool2d(x, 2, 1, 0, 2), [t_distinct((1, 2, 6, 5))]),
    ("max_pool2d_unbatched", lambda F, x: F.max_pool2d(x, 2), [t_distinct((2, 6, 6))]),
    ("avg_pool1d", lambda F, x: F.avg_pool1d(x, 3, 2, 1), [(2, 3, 9)]),
    ("avg_pool1d_ceil_nopad", lambda F, x: F.avg_pool1d(x, 3, 2, 1, True, False), [(2, 3, 8)]),
    ("avg_pool2d_ceil", lambda F, x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), [(1, 2, 8, 7)]),
    ("avg_pool2d_nopad", lambda F, x: F.avg_pool2d(x, 2, 2, 1, count_include_pad=False),
     [(1, 2, 5, 5)]),
    ("avg_pool2d_divisor", lambda F, x: F.avg_pool2d(x, 2, divisor_override=3), [(1, 2, 4, 4)]),
    ("adaptive_avg_pool1d", lambda F, x: F.adaptive_avg_pool1d(x, 3), [(2, 3, 8)]),
    ("adaptive_avg_pool2d_none", lambda F, x: F.adaptive_avg_pool2d(x, (None, 3)),
     [(2, 3, 5, 7)]),
    ("adaptive_max_pool2d", lambda F, x: F.adaptive_max_pool2d(x, (3, 4)),
     [t_distinct((2, 2, 7, 9))]),
    ("adaptive_max_pool2d_unbatched", lambda F, x: F.adaptive_max_pool2d(x, 2),
     [t_distinct((2, 5, 5))]),
    ("adaptive_max_pool1d", lambda F, x: F.adaptive_max_pool1d(x, 4), [t_distinct((2, 2, 10))]),
    ("nearest_size", lambda F, x: F.interpolate(x, size=(5, 7)), [(2, 3, 3, 4)]),
    ("nearest_down", lambda F, x: F.interpolate(x, size=(2, 3)), [(1, 2, 5, 7)]),
    ("nearest_scale", lambda F, x: F.interpolate(x, scale_factor=1.7), [(1, 2, 3, 4)]),
    ("nearest_exact", lambda F, x: F.interpolate(x, size=5, mode="nearest-exact"), [(1, 2, 3)]),
    ("nearest_1d", lambda F, x: F.interpolate(x, scale_factor=3), [(2, 2, 4)]),
    ("bilinear", lambda F, x: F.interpolate(x, (5, 7), mode="bilinear"), [(2, 3, 3, 4)]),
    ("bilinear_down", lambda F, x: F.interpolate(x, (3, 2), mode="bilinear"), [(1, 2, 7, 5)]),
    ("bilinear_ac", lambda F, x: F.interpolate(x, (5, 7), mode="bilinear", align_corners=True),
     [(2, 3, 3, 4)]),
    ("bilinear_scale", lambda F, x: F.interpolate(x, scale_factor=2.5, mode="bilinear"),
     [(1, 2, 3, 3)]),
    ("bilinear_scale_recompute", lambda F, x: F.interpolate(
        x, scale_factor=1.3, mode="bilinear", recompute_scale_factor=True), [(1, 2, 4, 5)]),
    ("linear_ac", lambda F, x: F.interpolate(x, 7, mode="linear", align_corners=True),
     [(2, 2, 4)]),
    ("linear_scale", lambda F, x: F.interpolate(x, scale_factor=0.6, mode="linear"), [(2, 2, 9)]),
    ("pixel_shuffle", lambda F, x: F.pixel_shuffle(x, 3), [(2, 18, 2, 3)]),
    ("pixel_unshuffle", lambda F, x: F.pixel_unshuffle(x, 2), [(2, 3, 4, 6)]),
    ("pixel_shuffle_unbatched", lambda F, x: F.pixel_shuffle(x, 2), [(8, 2, 2)]),
]


@pytest.mark.parametrize("name,fn,shapes", PARITY, ids=[p[0] for p in PARITY])
def test_functional_parity_with_torch(name, fn, shapes):
    check_op(fn, shapes, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn,shape", [
    (lambda F, x: F.max_pool1d(x, 3, 2, 1, 2, True, return_indices=True), (2, 3, 11)),
    (lambda F, x: F.max_pool2d(x, 3, 2, 1, return_indices=True), (2, 2, 7, 6)),
    (lambda F, x: F.max_pool2d(x, 2, return_indices=True), (2, 5, 4)),
    (lambda F, x: F.adaptive_max_pool2d(x, (3, 2), return_indices=True), (2, 2, 7, 5)),
    (lambda F, x: F.adaptive_max_pool1d(x, 3, return_indices=True), (2, 2, 7)),
])
def test_return_indices_match_torch(fn, shape):
    x = distinct(shape, dtype="float32")
    y, idx = fn(F, minidl.tensor(x, requires_grad=True))
    ty, tidx = fn(TF, torch.tensor(x))
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    assert idx.dtype == np.int64 and not idx.requires_grad
    y.sum().backward()  # the values still carry a gradient


MODULES = [
    ("MaxPool1d", (3,), {}, (2, 3, 9)),
    ("MaxPool1d", (3, 2, 1, 2), dict(ceil_mode=True), (2, 3, 9)),
    ("MaxPool2d", (2,), {}, (2, 3, 6, 6)),
    ("MaxPool2d", ((3, 2), 1, 1), dict(dilation=(1, 2)), (1, 2, 6, 7)),
    ("AvgPool1d", (3,), {}, (2, 3, 9)),
    ("AvgPool1d", (3, 2, 1, True, False), {}, (2, 3, 8)),
    ("AvgPool2d", (2,), {}, (2, 3, 6, 6)),
    ("AvgPool2d", ((2, 3), 1, 1, True, False, 2), {}, (1, 2, 5, 6)),
    ("AdaptiveAvgPool1d", (3,), {}, (2, 3, 8)),
    ("AdaptiveAvgPool2d", ((3, None),), {}, (2, 3, 5, 4)),
    ("AdaptiveMaxPool1d", (3,), {}, (2, 3, 8)),
    ("AdaptiveMaxPool2d", ((3, None),), {}, (2, 3, 5, 4)),
    ("Upsample", (), dict(scale_factor=2), (1, 2, 3, 3)),
    ("Upsample", (), dict(size=(4, 5), mode="bilinear", align_corners=False), (1, 2, 3, 3)),
    ("UpsamplingBilinear2d", (), dict(scale_factor=2), (1, 2, 3, 3)),
    ("UpsamplingNearest2d", (), dict(size=5), (1, 2, 3, 3)),
    ("PixelShuffle", (2,), {}, (1, 8, 3, 3)),
    ("PixelUnshuffle", (3,), {}, (1, 2, 6, 3)),
    ("Unflatten", (1, (2, 3)), {}, (4, 6, 5)),
    ("Unflatten", (-1, (2, -1)), {}, (4, 6)),
    ("Unfold", ((2, 3),), dict(padding=1, stride=2), (2, 3, 5, 6)),
    ("Fold", ((4, 5), 2), {}, (2, 12, 12)),
]


@pytest.mark.parametrize("cls,args,kwargs,shape", MODULES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_module_parity_and_repr(cls, args, kwargs, shape):
    ours, theirs = getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    x = distinct(shape, dtype="float32")
    check_module(ours, theirs, [x])


def test_bad_arguments():
    x = minidl.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match="half the kernel"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="exactly one of size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, 3, align_corners=True)
    with pytest.raises(ValueError, match="mode 'linear' expects a 3-D"):
        F.interpolate(x, 3, mode="linear")
    with pytest.raises(ValueError, match="divisible"):
        F.pixel_shuffle(minidl.randn(1, 6, 2, 2), 2)
    with pytest.raises(ValueError, match="output_size"):
        F.adaptive_max_pool2d(x, (1, 2, 3))


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_autocast_keeps_the_low_dtype_as_torch_cpu(low):
    from _torch_parity import MINIDL, TORCH

    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 4, 1, 1)).astype(np.float32)
    cases = [lambda F, h: F.interpolate(h, scale_factor=2),
             lambda F, h: F.interpolate(h, size=(7, 5), mode="bilinear"),
             lambda F, h: F.interpolate(h[:, :, 0], size=7, mode="linear"),
             lambda F, h: F.adaptive_max_pool2d(h, 4),
             lambda F, h: F.adaptive_avg_pool1d(h[:, :, 0], 4),
             lambda F, h: F.max_pool1d(h[:, :, 0], 3, 2, 1, ceil_mode=True),
             lambda F, h: F.avg_pool1d(h[:, :, 0], 3, 2, 1, ceil_mode=True),
             lambda F, h: F.avg_pool2d(h, 3, 2, ceil_mode=True),
             lambda F, h: F.fold(F.unfold(h, 2), (6, 6), 2),
             lambda F, h: F.pixel_unshuffle(h, 2)]
    for k, fn in enumerate(cases):
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = fn(TORCH, TF.conv2d(torch.tensor(x), torch.tensor(w)))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(MINIDL, F.conv2d(minidl.tensor(x), minidl.tensor(w)))
        assert str(got.dtype) == str(want.dtype).replace("torch.", ""), k
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05,
                                   atol=0.1, err_msg=str(k))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_max_pool_runs_the_float32_kernels_exactly(dtype):
    """float16/bfloat16 max pooling takes the CPU's float32 kernels (NumPy emulates half
    arithmetic): the maxima and winners equal the float32 pool's exactly (NaN included), and
    non-overlapping windows give the gradient exactly."""
    from minidl.backend.cpu import pooling
    from minidl.backend.dtypes import as_dtype

    dt = as_dtype(getattr(minidl, dtype))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(dt)
    x[0, 0, 0, 0] = np.nan
    for geo in [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1)]:
        y, arg = pooling.max_pool2d_forward(x, *geo)
        y32, arg32 = pooling.max_pool2d_forward(x.astype(np.float32), *geo)
        assert y.dtype == dt
        np.testing.assert_array_equal(y.astype(np.float32), y32)
        np.testing.assert_array_equal(arg, arg32)
    y, arg = pooling.max_pool2d_forward(x, 2, 2, 2, 2, 0, 0)
    gy = rng.standard_normal(y.shape).astype(dt)
    gx = pooling.max_pool2d_backward(gy, arg, x.shape, 2, 2, 2, 2, 0, 0)
    gx32 = pooling.max_pool2d_backward(gy.astype(np.float32), arg, x.shape, 2, 2, 2, 2, 0, 0)
    assert gx.dtype == dt
    np.testing.assert_array_equal(gx.astype(np.float32), gx32)
