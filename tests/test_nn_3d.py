"""The 3-D family: conv3d/Conv3d, conv_transpose3d/ConvTranspose3d, max/avg/adaptive pooling in
3-D and their modules, BatchNorm3d, InstanceNorm3d, dropout3d/Dropout3d: float64 gradient
checks, PyTorch parity (functions and modules, forward and backward), init, errors, autocast
dtypes, and the fake GPU."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import distinct, leaf, randn

torch = pytest.importorskip("torch")
from _nn_parity import check_init, check_module  # noqa: E402
from _torch_parity import check_op, const  # noqa: E402
from _torch_parity import distinct as t_distinct  # noqa: E402

TF = torch.nn.functional


# ---- float64 gradient checks ---------------------------------------------------------------
GRADCHECKS = [
    ("conv3d", lambda x, w, b: F.conv3d(x, w, b, stride=(2, 1, 1), padding=(1, 0, 1),
                                        dilation=(1, 2, 1), groups=2),
     [(1, 4, 4, 5, 3), (4, 2, 2, 2, 3), (4,)]),
    ("conv3d_same", lambda x, w: F.conv3d(x, w, padding="same"), [(1, 2, 3, 4, 3), (2, 2, 2, 3, 2)]),
    ("conv_transpose3d", lambda x, w, b: F.conv_transpose3d(x, w, b, (2, 1, 2), 1, (1, 0, 0), 2),
     [(1, 4, 2, 3, 2), (4, 1, 3, 2, 2), (2,)]),
]


@pytest.mark.parametrize("name,fn,shapes", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_float64(name, fn, shapes):
    inputs = [randn(s, seed=i) for i, s in enumerate(shapes)]
    assert gradcheck(fn, inputs)


POOL_GRADCHECKS = [
    ("max_pool3d", lambda x: F.max_pool3d(x, 2, (1, 2, 1), 1, dilation=(1, 1, 2), ceil_mode=True)),
    ("avg_pool3d", lambda x: F.avg_pool3d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    ("avg_pool3d_divisor", lambda x: F.avg_pool3d(x, (2, 3, 2), divisor_override=3)),
    ("adaptive_avg_pool3d", lambda x: F.adaptive_avg_pool3d(x, (2, 3, None))),
    ("adaptive_max_pool3d", lambda x: F.adaptive_max_pool3d(x, (3, 2, 2))),
]


@pytest.mark.parametrize("name,fn", POOL_GRADCHECKS, ids=[g[0] for g in POOL_GRADCHECKS])
def test_pool_gradcheck_float64(name, fn):
    # distinct values 0.1 apart: no ties, so finite differences never switch a max's winner
    assert gradcheck(fn, [leaf(distinct((2, 2, 4, 5, 4)))])


# ---- functional parity -------------------------------------------------------------------------
PARITY = [
    ("conv3d", lambda F, x, w, b: F.conv3d(x, w, b, 2, 1), [((2, 3, 5, 6, 7), (4, 3, 3, 3, 3), (4,))]),
    ("conv3d_groups_dilation", lambda F, x, w: F.conv3d(x, w, None, 1, (0, 2, 1), (2, 1, 2), 3),
     [((1, 6, 6, 5, 6), (3, 2, 2, 3, 2))]),
    ("conv3d_same_even", lambda F, x, w: F.conv3d(x, w, padding="same"),
     [((1, 2, 4, 5, 4), (3, 2, 2, 3, 4))]),
    ("conv3d_valid_unbatched", lambda F, x, w: F.conv3d(x, w, padding="valid"),
     [((2, 4, 4, 4), (3, 2, 2, 2, 2))]),
    ("conv_transpose3d", lambda F, x, w, b: F.conv_transpose3d(x, w, b, 2, 1, 1),
     [((2, 3, 3, 2, 3), (3, 2, 3, 3, 3), (2,))]),
    ("conv_transpose3d_groups", lambda F, x, w: F.conv_transpose3d(x, w, None, (1, 2, 1), 0, 0, 2,
                                                                   (2, 1, 1)),
     [((1, 4, 3, 3, 2), (4, 3, 2, 2, 2))]),
    ("max_pool3d", lambda F, x: F.max_pool3d(x, 3, 2, 1), [t_distinct((2, 3, 6, 7, 5))]),
    ("max_pool3d_ceil_dilation", lambda F, x: F.max_pool3d(x, (2, 2, 3), (2, 1, 2), 0, 2, True),
     [t_distinct((1, 2, 7, 6, 8))]),
    ("max_pool3d_unbatched", lambda F, x: F.max_pool3d(x, 2), [t_distinct((3, 4, 4, 5))]),
    ("avg_pool3d", lambda F, x: F.avg_pool3d(x, 3, 2, 1), [(2, 3, 6, 7, 5)]),
    ("avg_pool3d_options", lambda F, x: F.avg_pool3d(x, (3, 2, 3), 2, (1, 1, 0), True, False),
     [(1, 2, 7, 6, 8)]),
    ("avg_pool3d_divisor", lambda F, x: F.avg_pool3d(x, 2, 1, 1, divisor_override=3),
     [(1, 2, 3, 4, 3)]),
    ("adaptive_avg_pool3d", lambda F, x: F.adaptive_avg_pool3d(x, (3, 4, None)), [(2, 3, 7, 9, 5)]),
    ("adaptive_avg_pool3d_one", lambda F, x: F.adaptive_avg_pool3d(x, 1), [(3, 5, 6, 4)]),
    ("adaptive_max_pool3d", lambda F, x: F.adaptive_max_pool3d(x, (2, 3, 4)),
     [t_distinct((2, 2, 5, 7, 6))]),
    ("batch_norm_5d", lambda F, x, w, b: F.batch_norm(x, None, None, w, b, True),
     [((3, 4, 2, 3, 2), (4,), (4,))]),
    ("instance_norm_5d", lambda F, x: F.instance_norm(x), [(2, 3, 3, 4, 2)]),
    ("dropout3d_eval", lambda F, x: F.dropout3d(x, 0.5, training=False), [(2, 3, 2, 2, 2)]),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on even kernels
@pytest.mark.parametrize("name,fn,shapes", PARITY, ids=[p[0] for p in PARITY])
def test_functional_parity_with_torch(name, fn, shapes):
    check_op(fn, shapes, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn", [
    lambda F, x: F.max_pool3d(x, 3, 2, 1, ceil_mode=True, return_indices=True),
    lambda F, x: F.max_pool3d(x, (2, 3, 2), dilation=(2, 1, 1), return_indices=True),
    lambda F, x: F.adaptive_max_pool3d(x, (2, 3, 3), return_indices=True),
], ids=["max_pool3d", "max_pool3d_dilation", "adaptive_max_pool3d"])
def test_pool3d_indices_match_torch(fn):
    x = np.random.default_rng(3).permutation(2 * 3 * 5 * 7 * 6).reshape(2, 3, 5, 7, 6)
    x = x.astype(np.float32)
    y, i = fn(F, minidl.tensor(x))
    ty, ti = fn(TF, torch.tensor(x))
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    assert i.dtype == np.int64
    np.testing.assert_array_equal(i.numpy(), ti.numpy())


# ---- modules ---------------------------------------------------------------------------------
MODULES = [
    ("Conv3d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
     (2, 3, 5, 6, 5)),
    ("Conv3d", dict(in_channels=4, out_channels=6, kernel_size=(2, 3, 2), padding="same",
                    groups=2, dilation=(1, 1, 2), padding_mode="reflect"), (1, 4, 4, 5, 6)),
    ("Conv3d", dict(in_channels=2, out_channels=2, kernel_size=3, padding=(1, 2, 0),
                    padding_mode="circular", bias=False), (1, 2, 3, 4, 5)),
    ("Conv3d", dict(in_channels=2, out_channels=3, kernel_size=2, padding=1,
                    padding_mode="replicate", stride=(1, 2, 1)), (2, 3, 4, 3)),
    ("ConvTranspose3d", dict(in_channels=4, out_channels=2, kernel_size=3, stride=2,
                             padding=1, output_padding=1, groups=2), (1, 4, 3, 2, 3)),
    ("ConvTranspose3d", dict(in_channels=2, out_channels=3, kernel_size=(2, 3, 2), stride=(1, 2, 2),
                             dilation=(2, 1, 1), bias=False), (2, 2, 2, 3, 3)),
]


@pytest.mark.parametrize("cls,kwargs,shape", MODULES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_conv_module_parity_repr_and_init(cls, kwargs, shape):
    ours, theirs = getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    check_module(ours, theirs, [x])
    check_init(lambda: getattr(nn, cls)(**{**kwargs, "in_channels": 8, "out_channels": 8}),
               lambda: getattr(torch.nn, cls)(**{**kwargs, "in_channels": 8,
                                                  "out_channels": 8}))


def test_conv_transpose3d_output_size():
    ours, theirs = nn.ConvTranspose3d(3, 2, 3, stride=2, padding=1), \
        torch.nn.ConvTranspose3d(3, 2, 3, stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 3, 4, 4)).astype(np.float32)
    m_out, _ = check_module(ours, theirs, [x], call=lambda m, x: m(x, output_size=[6, 8, 7]))
    assert m_out.shape == (1, 2, 6, 8, 7)
    with pytest.raises(ValueError, match="output size"):
        ours(minidl.tensor(x), output_size=(9, 9, 9))


def test_conv3d_module_float64_gradcheck():
    minidl.manual_seed(0)
    layer = nn.Conv3d(2, 2, 2, padding=1, padding_mode="circular").to(minidl.float64)
    assert gradcheck(lambda x: layer(x), [randn((1, 2, 3, 2, 3))])


POOL_MODULES = [
    ("MaxPool3d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), True),
    ("MaxPool3d", dict(kernel_size=(2, 3, 2), dilation=(1, 1, 2)), True),
    ("AvgPool3d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), False),
    ("AvgPool3d", dict(kernel_size=2, divisor_override=5, ceil_mode=True, stride=3), False),
    ("AdaptiveAvgPool3d", dict(output_size=(2, None, 3)), False),
    ("AdaptiveMaxPool3d", dict(output_size=(3, 2, 4)), True),
]


@pytest.mark.parametrize("cls,kwargs,distinct_input", POOL_MODULES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(POOL_MODULES)])
def test_pool_module_parity_and_repr(cls, kwargs, distinct_input):
    ours, theirs = getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(theirs)
    shape = (2, 3, 6, 7, 8)
    x = (distinct(shape, dtype="float32") if distinct_input else
         np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    check_module(ours, theirs, [x])


def test_max_pool3d_module_return_indices():
    x = distinct((1, 2, 4, 6, 5), dtype="float32")
    y, i = nn.MaxPool3d(2, return_indices=True)(minidl.tensor(x))
    ty, ti = torch.nn.MaxPool3d(2, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
    y, i = nn.AdaptiveMaxPool3d(2, return_indices=True)(minidl.tensor(x))
    ty, ti = torch.nn.AdaptiveMaxPool3d(2, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(i.numpy(), ti.numpy())


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("kwargs", [dict(), dict(affine=False, momentum=None),
                                    dict(track_running_stats=False)])
def test_batch_norm3d_matches_torch(kwargs, train):
    ours, theirs = nn.BatchNorm3d(4, **kwargs), torch.nn.BatchNorm3d(4, **kwargs)
    assert repr(ours) == repr(theirs)
    ours.train(train), theirs.train(train)
    x = np.random.default_rng(2).standard_normal((3, 4, 2, 3, 2)).astype(np.float32) * 2 + 1
    for _ in range(2):
        check_module(ours, theirs, [x])
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k].numpy(), v.numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="5-D"):
        ours(minidl.randn(3, 4, 2, 2))


@pytest.mark.parametrize("kwargs", [dict(), dict(affine=True, track_running_stats=True)])
def test_instance_norm3d_matches_torch(kwargs):
    ours, theirs = nn.InstanceNorm3d(3, **kwargs), torch.nn.InstanceNorm3d(3, **kwargs)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(2).standard_normal((2, 3, 2, 3, 4)).astype(np.float32)
    check_module(ours, theirs, [x])
    check_module(ours, theirs, [x[0]])  # unbatched (C, D, H, W)
    if kwargs:
        np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="5-D"):
        ours(minidl.randn(3, 4, 2))


# ---- dropout3d ---------------------------------------------------------------------------------
def test_dropout3d_drops_whole_channels_and_scales():
    minidl.manual_seed(0)
    x = minidl.ones(8, 16, 2, 3, 2, requires_grad=True)
    y = F.dropout3d(x, 0.25)
    planes = y.numpy().reshape(8, 16, -1)
    assert np.all((planes == 0).all(axis=2) | np.isclose(planes, 1 / 0.75).all(axis=2))
    kept = (planes[:, :, 0] != 0).mean()
    assert 0.6 < kept < 0.9
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y.numpy())  # gradient is the mask times scale
    layer = nn.Dropout3d(0.5)
    assert repr(layer) == repr(torch.nn.Dropout3d(0.5))
    layer.eval()
    z = minidl.randn(2, 3, 2, 2, 2)
    assert layer(z) is z
    u = F.dropout3d(minidl.ones(4, 2, 2, 2), 0.5)  # unbatched (C, D, H, W): per channel
    assert np.all(np.ptp(u.numpy().reshape(4, -1), axis=1) == 0)


def test_dropout3d_other_ranks_warn_and_bad_p_raises():
    with pytest.warns(UserWarning, match="Received a 3-D input to dropout3d"):
        F.dropout3d(minidl.randn(2, 3, 4))
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout3d(minidl.randn(2, 3, 4, 4, 4), 1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout3d(-0.1)


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_input_raises():
    x = minidl.randn(1, 4, 5, 5, 5)
    with pytest.raises(ValueError, match="4 channels"):
        F.conv3d(x, minidl.randn(2, 3, 3, 3, 3))
    with pytest.raises(ValueError, match="5-D"):
        F.conv3d(x, minidl.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="4-D .*unbatched.* or 5-D"):
        F.conv3d(minidl.randn(4, 5, 5), minidl.randn(2, 4, 3, 3, 3))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv3d(x, minidl.randn(2, 4, 6, 1, 1))
    with pytest.raises(ValueError, match="strided"):
        nn.Conv3d(3, 3, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose3d(x, minidl.randn(4, 2, 3, 3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="stride must be an int or a tuple of 3"):
        F.conv3d(x, minidl.randn(2, 4, 3, 3, 3), stride=(1, 2))
    with pytest.raises(ValueError, match="half the kernel"):
        F.max_pool3d(x, 2, padding=2)
    with pytest.raises(ValueError, match="too small"):
        F.avg_pool3d(minidl.randn(1, 1, 2, 2, 2), 3)
    with pytest.raises(ValueError, match="3 elements"):
        F.adaptive_avg_pool3d(x, (2, 2))
    with pytest.raises(ValueError, match="zero"):
        F.avg_pool3d(x, 2, divisor_override=0)


# ---- autocast ---------------------------------------------------------------------------------
AUTOCAST = [
    ("conv3d", lambda F, x, w: F.conv3d(x, w)),
    ("conv_transpose3d", lambda F, x, w: F.conv_transpose3d(x, w)),
    ("max_pool3d", lambda F, x, w: F.max_pool3d(x, 2)),
    ("avg_pool3d", lambda F, x, w: F.avg_pool3d(x, 2)),
    ("adaptive_avg_pool3d", lambda F, x, w: F.adaptive_avg_pool3d(x, 2)),
    ("adaptive_max_pool3d", lambda F, x, w: F.adaptive_max_pool3d(x, 2)),
]


@pytest.mark.parametrize("name,fn", AUTOCAST, ids=[a[0] for a in AUTOCAST])
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
@pytest.mark.parametrize("input_dtype", ["float32", "low"])
def test_autocast_dtypes_match_torch_cpu(name, fn, low, input_dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 4, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 2, 2)).astype(np.float32)
    dt = low if input_dtype == "low" else "float32"
    tx, mx = torch.tensor(x).to(getattr(torch, dt)), minidl.tensor(x).to(getattr(minidl, dt))
    with torch.autocast("cpu", dtype=getattr(torch, low)):
        want = fn(TF, tx, torch.tensor(w))
    with minidl.autocast("cpu", dtype=getattr(minidl, low)):
        got = fn(F, mx, minidl.tensor(w))
    assert str(got.dtype) == str(want.dtype).replace("torch.", ""), (got.dtype, want.dtype)
    np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05, atol=0.15)


def test_public_names():
    for name in ("conv3d", "conv_transpose3d", "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d",
                 "adaptive_max_pool3d", "dropout3d"):
        assert callable(getattr(F, name)), name
    for name in ("Conv3d", "ConvTranspose3d", "MaxPool3d", "AvgPool3d", "AdaptiveAvgPool3d",
                 "AdaptiveMaxPool3d", "BatchNorm3d", "InstanceNorm3d", "Dropout3d"):
        assert name in nn.__all__ and getattr(nn, name) is not None, name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.conv3d(minidl.randn(1, 1, 3, 3, 3), minidl.randn(1, 1, 1, 1, 1))
    assert isinstance(const, type)



# ---- interpolate on 5-D input (trilinear, nearest, nearest-exact, area) -------------------------
INTERP = [(m, kw, ac) for m in ("nearest", "nearest-exact", "trilinear", "area")
          for kw in (dict(size=(6, 4, 7)), dict(scale_factor=2), dict(scale_factor=(1.0, 1.7, 0.5)),
                     dict(scale_factor=0.7, recompute_scale_factor=True))
          for ac in ((None,) if m != "trilinear" else (True, False))]


@pytest.mark.parametrize("mode,kwargs,align_corners", INTERP,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(INTERP)])
def test_interpolate_5d_parity(mode, kwargs, align_corners):
    check_op(lambda F, x: F.interpolate(x, mode=mode, align_corners=align_corners, **kwargs),
             [(1, 2, 3, 4, 5)])


def test_interpolate_5d_gradcheck_and_upsample_module():
    assert gradcheck(lambda x: F.interpolate(x, (3, 5, 4), mode="trilinear", align_corners=False),
                     [randn((1, 2, 2, 3, 3))])
    assert gradcheck(lambda x: F.interpolate(x, scale_factor=(2, 1, 3)), [randn((1, 1, 2, 3, 2))])
    ours = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
    theirs = torch.nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
    assert repr(ours) == repr(theirs)
    check_module(ours, theirs, [np.random.default_rng(0).standard_normal((1, 2, 2, 3, 2))
                                .astype(np.float32)])
    with pytest.raises(ValueError, match="5-D"):
        F.interpolate(minidl.randn(1, 2, 3, 4), scale_factor=2, mode="trilinear")


# ---- the numpy-backed fake GPU (tests/_fake_gpu.py) ---------------------------------------------
FAKE_GPU = [
    ("conv3d", lambda F, x, w: F.conv3d(x, w, padding=1, groups=2), [(1, 4, 3, 4, 3), (4, 2, 2, 3, 2)]),
    ("conv_transpose3d", lambda F, x, w: F.conv_transpose3d(x, w, stride=2),
     [(1, 2, 2, 3, 2), (2, 3, 2, 2, 2)]),
    ("pool3d", lambda F, x: F.max_pool3d(x, 2, ceil_mode=True) * 2
     + F.avg_pool3d(x, 3, 2, 1, count_include_pad=False) + F.adaptive_max_pool3d(x, 2)
     + F.adaptive_avg_pool3d(x, 2), [(1, 2, 4, 4, 3)]),
]


def _run_on(fn, arrays, device):
    import _fake_gpu

    return _fake_gpu.forward_backward(fn, F, arrays, device)


@pytest.mark.parametrize("name,fn,shapes", FAKE_GPU, ids=[c[0] for c in FAKE_GPU])
def test_fake_gpu_matches_cpu(name, fn, shapes, monkeypatch, host_kernels):
    import _fake_gpu

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    want_y, want_g = _run_on(fn, arrays, "cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    got_y, got_g = _run_on(fn, arrays, "cuda")
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_g, want_g):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    model = nn.Sequential(nn.Conv3d(2, 2, 2), nn.BatchNorm3d(2), nn.Dropout3d(0.2)).to("cuda")
    out = model(minidl.randn(2, 2, 3, 3, 3).to("cuda"))
    assert out.device == "cuda" and out.shape == (2, 2, 2, 2, 2)
