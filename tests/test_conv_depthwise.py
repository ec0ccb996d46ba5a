"""The CPU's direct depthwise convolution (groups = input channels): forward and both gradients
against PyTorch and finite differences, over strides, paddings, dilations, channel multipliers
and conv1d's lifted form; and the check that such a layer takes it."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.testing import gradcheck

CASES = [  # (C, multiplier, kernel, stride, padding, dilation, H, W)
    (8, 1, 3, 1, 1, 1, 9, 11),
    (8, 2, 3, 2, 1, 1, 10, 9),
    (4, 1, 5, 2, 2, 2, 13, 12),
    (6, 3, 7, 1, 3, 1, 8, 8),
    (4, 1, 3, 3, 0, 1, 10, 10),
    (3, 1, 2, 1, 0, 3, 9, 9),
    (2, 1, 3, 2, 4, 1, 3, 5),  # padding wider than the input
    (5, 1, 3, 2, 0, 1, 12, 11),  # stride 2 without padding, odd width
    (3, 1, 4, 2, 3, 1, 9, 10),  # stride 2, odd padding, even filter
    (4, 1, 3, 2, 1, 1, 24, 23),  # planes larger than the kernels' choice threshold
]


@pytest.fixture(params=["planes", "channels_last"])
def kernel_choice(request, monkeypatch):
    """Each case through each of the CPU's two depthwise kernel families: by planes in NCHW
    order (conv_depthwise_planes) and channels-last (conv_depthwise), whichever the output size
    would choose."""
    from minidl.backend.cpu import conv_depthwise

    limit = 0 if request.param == "planes" else 1 << 40
    monkeypatch.setattr(conv_depthwise, "PLANES_FROM", limit)
    monkeypatch.setattr(conv_depthwise, "PLANES_FROM_THREADED", limit)
    return request.param


def run(fw, case, dtype, seed=0):
    c, m, k, s, p, d, h, w = case
    r = np.random.default_rng(seed)
    arrays = r.normal(size=(3, c, h, w)), r.normal(size=(c * m, 1, k, k)), r.normal(size=c * m)
    x, wt, b = (fw.tensor(a, dtype=getattr(fw, dtype), requires_grad=True) for a in arrays)
    y = fw.nn.functional.conv2d(x, wt, b, stride=s, padding=p, dilation=d, groups=c)
    gy = fw.tensor(r.normal(size=tuple(y.shape)), dtype=getattr(fw, dtype))
    (y * gy).sum().backward()
    return [t.detach().numpy() for t in (y, x.grad, wt.grad, b.grad)]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_depthwise_matches_torch(case, dtype, kernel_choice):
    torch = pytest.importorskip("torch")
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)
    for ours, theirs in zip(run(minidl, case, dtype), run(torch, case, dtype)):
        np.testing.assert_allclose(ours, theirs, **tol)


@pytest.mark.parametrize("case", CASES[:4], ids=[str(c) for c in CASES[:4]])
def test_depthwise_gradcheck(case, kernel_choice):
    c, m, k, s, p, d, h, w = case
    r = np.random.default_rng(1)
    args = [minidl.tensor(r.normal(size=shape), dtype=minidl.float64, requires_grad=True)
            for shape in ((2, c, h, w), (c * m, 1, k, k), (c * m,))]
    assert gradcheck(lambda x, wt, b: F.conv2d(x, wt, b, stride=s, padding=p, dilation=d,
                                               groups=c), args)


def test_conv1d_depthwise_and_the_kernel_is_used(monkeypatch):
    from minidl.backend import cpu

    calls = []
    for name in ("depthwise_forward", "depthwise_input_grad", "depthwise_weight_grad"):
        fn = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(2)
    x, w = r.normal(size=(2, 4, 17)).astype(np.float32), r.normal(size=(4, 1, 5)).astype(np.float32)
    xm, wm = minidl.tensor(x, requires_grad=True), minidl.tensor(w, requires_grad=True)
    y = F.conv1d(xm, wm, padding=2, groups=4)
    y.pow(2).sum().backward()
    assert sorted(calls) == ["depthwise_forward", "depthwise_input_grad", "depthwise_weight_grad"]
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv1d(xt, wt, padding=2, groups=4)
    yt.pow(2).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(wm.grad.numpy(), wt.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_parallel_drivers_equal_serial(monkeypatch):
    """The kernels' parallel drivers (chunks of planes, of channels for the weight gradient)
    give the serial drivers' results to the bit, on both kernel families."""
    from minidl.backend.cpu import conv_depthwise, launch

    case = (6, 2, 3, 2, 1, 1, 14, 13)
    for threshold in (0, 1 << 40):
        monkeypatch.setattr(conv_depthwise, "PLANES_FROM", threshold)
        monkeypatch.setattr(conv_depthwise, "PLANES_FROM_THREADED", threshold)
        for kind in ("macs", "depthwise"):
            monkeypatch.setitem(launch.THRESHOLDS, kind, 1 << 40)
        serial = run(minidl, case, "float32")
        for kind in ("macs", "depthwise"):
            monkeypatch.setitem(launch.THRESHOLDS, kind, 0)
        par = run(minidl, case, "float32")
        for a, b in zip(serial, par):
            np.testing.assert_array_equal(a, b)
