"""The new layers' functions on the numpy-backed stand-in GPU (tests/_fake_gpu.py): each runs
through minidl's device paths (arrays of the fake CuPy, its add.at, random numbers) and gives
the CPU's values and gradients."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

import _fake_gpu

CASES = [
    ("conv1d_groups", lambda F, x, w: F.conv1d(x, w, padding=1, groups=2), [(2, 4, 7), (6, 2, 3)]),
    ("conv2d_dilation", lambda F, x, w: F.conv2d(x, w, dilation=2), [(1, 2, 7, 7), (3, 2, 3, 3)]),
    ("conv_transpose2d", lambda F, x, w: F.conv_transpose2d(x, w, stride=2, output_padding=1),
     [(1, 2, 3, 3), (2, 3, 3, 3)]),
    ("fold_unfold", lambda F, x: F.fold(F.unfold(x, 2), (4, 5), 2), [(1, 2, 4, 5)]),
    ("pad_reflect", lambda F, x: F.pad(x, (1, 2, 2, 1), mode="reflect"), [(1, 2, 4, 4)]),
    ("max_pool1d", lambda F, x: F.max_pool1d(x, 3, 2, 1, ceil_mode=True), [(2, 3, 8)]),
    ("avg_pool1d", lambda F, x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False), [(2, 3, 8)]),
    ("adaptive_max_pool2d", lambda F, x: F.adaptive_max_pool2d(x, (2, 3)), [(1, 2, 5, 7)]),
    ("bilinear", lambda F, x: F.interpolate(x, (5, 6), mode="bilinear"), [(1, 2, 3, 4)]),
    ("bicubic_area", lambda F, x: F.interpolate(x, (5, 6), mode="bicubic")
     + F.interpolate(x * 2, (5, 6), mode="area"), [(1, 2, 3, 4)]),
    ("group_norm", lambda F, x: F.group_norm(x, 2), [(2, 4, 3, 3)]),
    ("instance_norm", lambda F, x: F.instance_norm(x), [(2, 3, 5)]),
    ("normalize", lambda F, x: F.normalize(x), [(3, 4)]),
    ("activations", lambda F, x: F.mish(x) + F.softplus(x) + F.hardswish(x) + F.selu(x),
     [(3, 4)]),
    ("prelu", lambda F, x, w: F.prelu(x, w), [(2, 3, 4), (3,)]),
    ("losses", lambda F, a, b: F.huber_loss(a, b) + F.triplet_margin_loss(a, b, a * 2)
     + F.kl_div(a, b, reduction="batchmean", log_target=True) + F.gaussian_nll_loss(a, b, a * a),
     [(4, 5), (4, 5)]),
    ("bilinear_layer", lambda F, a, b, w: F.bilinear(a, b, w), [(3, 2), (3, 4), (5, 2, 4)]),
]


def _run(fn, arrays, device):
    import _fake_gpu

    return _fake_gpu.forward_backward(fn, F, arrays, device)


@pytest.mark.parametrize("name,fn,shapes", CASES, ids=[c[0] for c in CASES])
def test_fake_gpu_matches_cpu(name, fn, shapes, monkeypatch, host_kernels):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    want_y, want_g = _run(fn, arrays, "cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    got_y, got_g = _run(fn, arrays, "cuda")
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_g, want_g):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fake_gpu_modules_move_and_run(monkeypatch, host_kernels):
    _fake_gpu.install(monkeypatch, host_kernels)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, padding_mode="circular"),
                          nn.GroupNorm(2, 4), nn.PReLU(4), nn.MaxPool1d(2),
                          nn.ConvTranspose1d(4, 2, 2, stride=2), nn.InstanceNorm1d(2, affine=True,
                                                                                     track_running_stats=True))
    plist = nn.ParameterList([nn.Parameter(minidl.ones(3))])
    model.to("cuda"), plist.to("cuda")
    x = minidl.randn(3, 2, 8).to("cuda")
    y = model(x)
    assert y.device == "cuda" and y.shape == (3, 2, 8)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.device == "cuda" for p in model.parameters())
    assert model[5].running_mean.device == "cuda" and plist[0].device == "cuda"
    z = F.dropout2d(minidl.randn(2, 4, 3, 3).to("cuda"), 0.5)
    assert z.device == "cuda"


# ---- Embedding's max_norm, antialiased interpolate, a 0-feature Linear: the stand-in GPU -------------
_ROWS = np.random.default_rng(0).standard_normal((6, 3)) * 2
_IDX = np.array([[1, 2, 1], [5, 1, 2]])


_IMAGE = np.random.default_rng(2).standard_normal((2, 3, 17, 11))


def test_new_paths_run_on_a_fake_gpu_as_on_the_cpu(monkeypatch, tmp_path):
    """Embedding's max_norm and scale_grad_by_freq, antialiased interpolation and a Linear of
    0 features on the (numpy-backed, CuPy-strict) GPU stand-in give the CPU's results."""
    import _fake_gpu
    from minidl import functional as mf
    from minidl.nn._functional import pooling

    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")

    def run(device):
        w = minidl.tensor(_ROWS, dtype=minidl.float64, device=device, requires_grad=True)
        with minidl.no_grad():
            nn.functional.embedding(minidl.tensor(_IDX, device=device), w, max_norm=1.5)
        y = nn.functional.embedding(minidl.tensor(_IDX, device=device), w,
                                    scale_grad_by_freq=True)
        (y * y).sum().backward()
        x = minidl.tensor(_IMAGE, dtype=minidl.float64, device=device, requires_grad=True)
        z = nn.functional.interpolate(x, size=(5, 4), mode="bicubic", antialias=True)
        (z * z).sum().backward()
        lin = nn.Linear(0, 3).double().to(device)
        out = lin(minidl.zeros(2, 0, dtype=minidl.float64, device=device))
        return [t.numpy() for t in (w, w.grad, z, x.grad, out)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = run("cpu")
        _fake_gpu.install(monkeypatch, lib)
        with _fake_gpu.strict(mf, pooling):
            gpu = run("cuda")
    for a, b in zip(gpu, cpu):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
