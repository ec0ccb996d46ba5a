"""interpolate's bicubic and area modes (and nearest-exact, and PyTorch's same-size copies),
DataLoader(batch_size=None), random_split with fractions, grouped/dilated conv2d memory, and
var/std with no degrees of freedom left: float64 gradient checks and PyTorch parity."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import randn

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


# ---- 1. interpolate: bicubic, area, nearest-exact ------------------------------------------------
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


# ---- 2. DataLoader(batch_size=None) ----------------------------------------------------------------
class _Samples(minidl.data.Dataset):
    """A map-style dataset whose samples mix arrays, numpy and Python numbers, strings and
    nested tuples: what default_convert turns into Tensors and what it leaves."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": np.full((2, 3), i, np.float32), "y": i, "name": f"item{i}",
                "pair": (np.int64(i), 1.5), "ids": np.arange(i, i + 2)}


def _plain(obj, tensor_types):
    """A structure with its tensors (either framework's) as ('T', dtype, shape, values)."""
    if isinstance(obj, tensor_types):
        a = obj.numpy() if not hasattr(obj, "detach") else obj.detach().numpy()
        return ("T", str(a.dtype), a.shape, a.tolist())
    if isinstance(obj, dict):
        return {k: _plain(v, tensor_types) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj).__name__, [_plain(v, tensor_types) for v in obj]
    return type(obj).__name__, obj


@needs_torch
@pytest.mark.parametrize("make", ["samples", "tensors"])
def test_dataloader_without_batching_yields_what_torch_yields(make):
    from torch.utils.data import DataLoader as TorchLoader
    from torch.utils.data import Dataset as TorchDataset
    from torch.utils.data import TensorDataset as TorchTensorDataset

    if make == "samples":
        ours = _Samples()

        class Theirs(TorchDataset):
            __len__, __getitem__ = _Samples.__len__, _Samples.__getitem__
        theirs = Theirs()
    else:
        x = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
        y = np.arange(6)
        ours = minidl.data.TensorDataset(x, y)
        theirs = TorchTensorDataset(torch.tensor(x), torch.tensor(y))
    for kwargs in [{}, dict(sampler=[4, 0, 2, 2])]:
        got = minidl.data.DataLoader(ours, batch_size=None, **kwargs)
        want = TorchLoader(theirs, batch_size=None, **kwargs)
        assert len(got) == len(want)
        got_items = [_plain(b, minidl.Tensor) for b in got]
        want_items = [_plain(b, torch.Tensor) for b in want]
        assert got_items == want_items
        assert got_items[0] != got_items[1]


def test_dataloader_without_batching_shuffles_and_keeps_the_sample_shapes():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    ds = minidl.data.TensorDataset(x, np.arange(10))
    loader = minidl.data.DataLoader(ds, batch_size=None, shuffle=True, seed=3)
    first, second = [int(y.item()) for _, y in loader], [int(y.item()) for _, y in loader]
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert first != second  # each pass is the next epoch
    loader.set_epoch(0)
    assert [int(y.item()) for _, y in loader] == first
    sample = next(iter(loader))
    assert isinstance(sample, list) and sample[0].shape == (2,) and sample[1].shape == ()
    assert sample[0].dtype == np.float32 and sample[1].dtype == np.int64
    assert loader.batch_size is None and len(loader) == 10


def test_dataloader_without_batching_collate_fn_streams_and_errors():
    ds = minidl.data.TensorDataset(np.arange(4.0))
    seen = list(minidl.data.DataLoader(ds, None, collate_fn=lambda s: ("got", s)))
    assert [s[0] for s in seen] == ["got"] * 4 and isinstance(seen[0][1], tuple)

    class Stream(minidl.data.IterableDataset):
        def __iter__(self):
            return iter([np.ones(3), np.zeros(3)])

    out = list(minidl.data.DataLoader(Stream(), batch_size=None))
    assert [o.shape for o in out] == [(3,), (3,)]
    with pytest.raises(ValueError, match="mutually exclusive with drop_last"):
        minidl.data.DataLoader(ds, batch_size=None, drop_last=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        minidl.data.DataLoader(ds, batch_size=None, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="positive integer or None"):
        minidl.data.DataLoader(ds, batch_size=0)


def test_dataloader_without_batching_moves_each_sample_to_the_fake_gpu(monkeypatch):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, lib=None)  # no kernels run: the samples are only moved
    loader = minidl.data.DataLoader(_Samples(), batch_size=None, device="cuda")
    sample = next(iter(loader))
    assert sample["x"].device == "cuda" and sample["x"].shape == (2, 3)
    assert sample["pair"][0].device == "cuda" and sample["pair"][1] == 1.5
    assert sample["y"] == 0 and sample["name"] == "item0"


# ---- 3. random_split with fractions --------------------------------------------------------------
SPLITS = [(10, [0.3, 0.3, 0.4]), (7, [0.33, 0.33, 0.34]), (200, [0.8, 1 - 0.8]), (3, [0.5, 0.5]),
          (10, [0.1] * 10), (10, [0.7, 0.2, 0.1]), (11, (0.25, 0.75)), (10, [1.0]),
          (13, [0.2, 0.2, 0.2, 0.2, 0.2]), (5, [1, 0]), (1, [0.5, 0.5]), (0, [0.5, 0.5]),
          (10, [3, 7]), (10, [0, 10]), (10, [np.int64(4), np.int64(6)]), (9, np.array([0.3, 0.7]))]


@needs_torch
@pytest.mark.parametrize("n,lengths", SPLITS, ids=[f"{n}-{list(l)}" for n, l in SPLITS])
def test_random_split_sizes_match_torch(n, lengths):
    import warnings

    from torch.utils.data import random_split as torch_split

    with warnings.catch_warnings(record=True) as theirs_warned:
        warnings.simplefilter("always")
        want = [len(s) for s in torch_split(range(n), lengths)]
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        parts = minidl.data.random_split(list(range(n)), lengths, seed=0)
    assert [len(s) for s in parts] == want
    assert len(ours_warned) == len(theirs_warned)  # one per empty split
    assert sorted(i for s in parts for i in s.indices) == list(range(n))


@needs_torch
@pytest.mark.parametrize("lengths", [[0.5, 0.6], [0.5, 0.4], [3, 3], [-0.1, 1.1],
                                     [0.5, 0.5000000001], [1.2, -0.2]])
def test_random_split_refuses_what_torch_refuses(lengths):
    from torch.utils.data import random_split as torch_split

    with pytest.raises(ValueError) as theirs:
        torch_split(range(10), lengths)
    with pytest.raises(ValueError) as ours:
        minidl.data.random_split(list(range(10)), lengths)
    word = "between 0 and 1" if "between" in str(theirs.value) else "does not equal"
    assert word in str(ours.value)


def test_random_split_refuses_negative_and_fractional_sizes():
    with pytest.raises(ValueError, match="index 0 is negative"):
        minidl.data.random_split(list(range(10)), [-1, 11])  # torch gives overlapping subsets
    with pytest.raises(TypeError, match="neither fractions summing to 1 nor integer sizes"):
        minidl.data.random_split(list(range(10)), [2.5, 7.5])
    with pytest.raises(ValueError, match="not between 0 and 1"):
        minidl.data.random_split(list(range(10)), 1.5)
    assert [len(s) for s in minidl.data.random_split(list(range(200)), 0.8)] == [160, 40]


# ---- 5. var/std with no degrees of freedom left ----------------------------------------------------
DOF_CASES = [("var", (1,), {}), ("std", (1,), {}), ("var", (3,), dict(correction=3)),
             ("std", (3,), dict(correction=5)), ("var", (2, 3), dict(dim=1, correction=3)),
             ("std", (1, 4), dict(dim=0)), ("var", (0,), {}), ("var_mean", (1, 3), dict(dim=0)),
             ("std_mean", (3,), dict(correction=3)), ("var", (3,), dict(correction=2.5)),
             ("std", (2, 3), dict(dim=1, correction=2))]


@needs_torch
@pytest.mark.parametrize("fn,shape,kwargs", DOF_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in DOF_CASES])
def test_var_std_without_degrees_of_freedom_warn_and_match_torch(fn, shape, kwargs):
    import warnings

    x = (np.arange(int(np.prod(shape)), dtype=np.float32) * 1.5 + 1).reshape(shape)
    results = []
    for lib, make in ((torch, torch.tensor), (minidl, minidl.tensor)):
        t = make(x, requires_grad=True)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = getattr(lib, fn)(t, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        if x.size:
            first.sum().backward()
        grad = t.grad.numpy() if x.size else None
        messages = [str(w.message).split(" (Triggered")[0] for w in seen
                    if issubclass(w.category, UserWarning)]
        results.append((first.detach().numpy() if lib is torch else first.numpy(), grad,
                        messages))
    (want, want_grad, want_msg), (got, got_grad, got_msg) = results
    np.testing.assert_array_equal(got, want)  # nan and inf where torch has them
    if want_grad is not None:
        # with no degrees of freedom, torch's full-reduction var gradient is +inf wherever x is
        # not its mean (whatever the side); minidl's is the limit's sign(x - mean) * inf
        np.testing.assert_allclose(np.abs(got_grad), np.abs(want_grad), rtol=1e-5,
                                   equal_nan=True)
    degenerate = kwargs.get("correction", 1) >= (x.size // max(want.size, 1) if x.size else 0)
    assert got_msg == want_msg and bool(got_msg) == degenerate
    if degenerate:
        assert got_msg[0].startswith(f"{fn}(): degrees of freedom is <= 0")
