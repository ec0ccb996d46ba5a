"""Batch norm's fused kernels: the numba passes against the whole-array reference in generic.py,
numerical soundness at a large offset, the fused BatchNorm+ReLU against PyTorch, and what the
op keeps for backward."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.backend import generic
from _torch_reference import copy_weights
from minidl.backend.cpu import batchnorm as cpu_batchnorm
from minidl.backend.cpu import launch

# Short planes (under cpu_batchnorm.SHORT_ROWS values) take the channel-block kernels: (3, 300,
# 3, 3), (2, 70, 7, 7) and (16, 2100) make two blocks each, the second one short.
SHAPES = [(5, 3), (4, 3, 2, 5), (2, 6, 7, 7), (1, 2, 9, 11), (2, 3, 2, 2, 3), (8, 64, 16, 16),
          (3, 300, 3, 3), (2, 70, 7, 7), (16, 2100)]


@pytest.fixture(params=["serial", "parallel"])
def drivers(request, monkeypatch):
    """The serial kernel drivers, then the prange ones (thresholds out of reach, or 0)."""
    size = 0 if request.param == "parallel" else 1 << 62
    for kind in launch.THRESHOLDS:
        monkeypatch.setitem(launch.THRESHOLDS, kind, size)
    return request.param


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_numba_kernels_match_generic(shape, dtype, relu, drivers):
    rng = np.random.default_rng(0)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    rm, rv = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    want_rm, want_rv = rm.copy(), rv.copy()
    want = generic.batch_norm_train(x, w, b, want_rm, want_rv, 0.1, 1e-5, relu)
    got = cpu_batchnorm.batch_norm_train(x, w, b, rm, rv, 0.1, 1e-5, relu)
    assert got[0].dtype == dtype and got[0].shape == shape
    for name, g_, w_ in zip(("y", "mean", "invstd"), got, want):
        np.testing.assert_allclose(g_, w_, **tol, err_msg=name)
    np.testing.assert_allclose(rm, want_rm, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rv, want_rv, rtol=1e-6, atol=1e-6)

    gy = rng.standard_normal(shape).astype(dtype)
    want_g = generic.batch_norm_backward(gy, x, want[0], want[1], want[2], w, relu)
    got_g = cpu_batchnorm.batch_norm_backward(gy, x, got[0], got[1], got[2], w, relu)
    for name, g_, w_ in zip(("gx", "gw", "gb"), got_g, want_g):
        assert g_.dtype == dtype, name
        np.testing.assert_allclose(g_, w_, **tol, err_msg=name)


@pytest.mark.parametrize("shape", [(8, 3, 16, 16), (8, 40, 4, 4)], ids=["rows", "blocks"])
def test_statistics_hold_at_a_large_offset(shape, drivers):
    """Unit spread on top of 1e4 in float32: a one-pass sum of squares in float32 loses the
    variance; the shifted float64 sums match a float64 computation (per channel, and in the
    channel-block kernels of short planes)."""
    x = (1e4 + np.random.default_rng(1).standard_normal(shape)).astype(np.float32)
    want = generic.batch_norm_train(x.astype(np.float64), None, None, None, None, 0.1, 1e-5)
    y = F.batch_norm(minidl.tensor(x), None, None, training=True)
    np.testing.assert_allclose(y.numpy(), want[0], atol=2e-3)  # x itself is rounded by 1e-3
    got = cpu_batchnorm.batch_norm_train(x, None, None, None, None, 0.1, 1e-5)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-6)


@pytest.mark.parametrize("shape", [(8, 3, 16, 16), (8, 40, 4, 4), (64, 40, 7, 7)],
                         ids=["rows", "blocks", "blocks-b64"])
def test_input_gradient_holds_at_a_large_offset(shape, drivers):
    """Backward at unit spread on top of 1e4 in float32, against float64: x - mean is taken
    about the mean rounded to float32 and the rounding is put back per channel, so the input
    gradient keeps float32's precision (taking x - float32(mean) alone left 8e-6 of the
    largest gradient in the channel-block kernels, 1e-6 in the per-channel ones)."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(shape[1])
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    y, mean, invstd = generic.batch_norm_train(x64, w, None, None, None, 0.1, 1e-5)
    want = generic.batch_norm_backward(g64, x64, y, mean, invstd, w)
    y32, mean32, invstd32 = cpu_batchnorm.batch_norm_train(x, w, None, None, None, 0.1, 1e-5)
    got = cpu_batchnorm.batch_norm_backward(g, x, y32, mean32, invstd32, w)
    for name, a, b in zip(("gx", "gw", "gb"), got, want):
        assert np.abs(a - b).max() <= 5e-7 * np.abs(b).max(), name


def test_training_keeps_no_activation_sized_array_but_its_input():
    """Backward needs x (alive anyway: it is the op's input) and two numbers per channel; a
    normalised copy of x would double the activation memory of a BatchNorm network."""
    x = minidl.tensor(np.random.default_rng(2).standard_normal((4, 3, 5, 5)), requires_grad=True)
    bn = nn.BatchNorm2d(3)
    for out in (bn(x), bn.forward_relu(x)):
        saved = [a for a in out._ctx.saved if a is not None and getattr(a, "size", 0) > 3]
        assert len(saved) <= 2
        for a in saved:
            assert a is x.data or a is out.data



@pytest.fixture
def torch_mod():
    return pytest.importorskip("torch", reason="PyTorch parity needs torch (pip install torch)")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_relu_matches_torch(torch_mod, training):
    torch = torch_mod
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5, 6)).astype(np.float32)
    m, t = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for p in (m.weight, m.bias):
        p.data[...] = rng.standard_normal(3)
    copy_weights(m, t)
    if not training:
        m.eval(), t.eval()
    mx, tx = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    my, ty = m.forward_relu(mx), torch.relu(t(tx))
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    proj = rng.standard_normal(x.shape).astype(np.float32)
    (my * minidl.tensor(proj)).sum().backward()
    (ty * torch.from_numpy(proj)).sum().backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.weight.grad.numpy(), t.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.bias.grad.numpy(), t.bias.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.running_var.numpy(), t.running_var.numpy(), rtol=1e-5)


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3, 5), (8, 64, 16, 16), (3, 300, 3, 3)],
                         ids=str)
def test_numba_channel_affine_matches_generic(shape, relu, drivers):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    scale, shift = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(2))
    want = generic.channel_affine(x, scale, shift, relu)
    np.testing.assert_allclose(cpu_batchnorm.channel_affine(x, scale, shift, relu), want,
                               rtol=1e-6, atol=1e-6)


def test_add_relu_matches_torch(torch_mod):
    torch = torch_mod
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(2))
    ma, mb = minidl.tensor(a, requires_grad=True), minidl.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    my, ty = F.add_relu(ma, mb), torch.relu(ta + tb)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-6)
    proj = rng.standard_normal(a.shape).astype(np.float32)
    (my * minidl.tensor(proj)).sum().backward()
    (ty * torch.from_numpy(proj)).sum().backward()
    np.testing.assert_allclose(ma.grad.numpy(), ta.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(mb.grad.numpy(), tb.grad.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"add_relu: shapes \(2, 3\) and \(3,\) differ"):
        F.add_relu(minidl.zeros(2, 3), minidl.zeros(3))


# ---- 16-bit activations on CUDA (mixed precision) -------------------------------------------
needs_gpu = pytest.mark.skipif(not minidl.cuda_available(),
                               reason="needs CuPy and an NVIDIA GPU (not found)")


@needs_gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
def test_cuda_batch_norm_takes_16_bit_activations_with_float32_channels(dtype, relu):
    """Under autocast a conv hands batch norm 16-bit activations: the CUDA kernels read them as
    they are, keep mean/invstd/running statistics and the parameter gradients in float32, and
    give y and dx in the activations' dtype. Against float32 batch norm of the same (rounded)
    values: per-channel numbers to float32 rounding, y and dx to 16-bit rounding."""
    low = getattr(minidl, dtype)
    rng = np.random.default_rng(5)
    x32 = (rng.standard_normal((4, 6, 7, 9)) * 2 + 3).astype(np.float32)
    g32 = rng.standard_normal(x32.shape).astype(np.float32)
    w32 = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    results = {}
    for name, dt in (("low", low), ("ref", minidl.float32)):
        bn = nn.BatchNorm2d(6).to("cuda")
        bn.weight.data[...] = minidl.tensor(w32, device="cuda").data
        x = minidl.tensor(x32, device="cuda").to(dtype=low).to(dtype=dt).requires_grad_()
        y = bn.forward_relu(x) if relu else bn(x)
        g = minidl.tensor(g32, device="cuda").to(dtype=low).to(dtype=dt)
        y.backward(g)
        results[name] = (y, x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean,
                         bn.running_var)
    y, gx, gw, gb, rm, rv = results["low"]
    assert y.dtype == low and gx.dtype == low
    assert gw.dtype == gb.dtype == rm.dtype == rv.dtype == np.float32
    tol = 1e-2 if dtype == "bfloat16" else 2e-3
    for got, want in zip(results["low"][:2], results["ref"][:2]):
        scale = np.abs(want.numpy()).max()
        assert np.abs(got.float().numpy() - want.numpy()).max() <= 2 * tol * scale
    for got, want in zip(results["low"][2:], results["ref"][2:]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    # eval mode: one affine pass in float32 arithmetic, 16-bit out
    bn = nn.BatchNorm2d(6).to("cuda").eval()
    xl = minidl.tensor(x32, device="cuda").to(dtype=low)
    out = bn(xl)
    assert out.dtype == low
    want = bn(xl.float()).numpy()
    assert np.abs(out.float().numpy() - want).max() <= 2 * tol * np.abs(want).max()


# ---- batch_norm: integer input and eps refused before the running statistics move -------------

def test_batch_norm_refuses_an_integer_input_and_leaves_the_statistics_alone():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(TypeError, match="floating-point"):
        bn(minidl.ones(4, 3, dtype=minidl.int64))
    assert np.array_equal(bn.running_mean.numpy(), np.zeros(3))
    assert np.array_equal(bn.running_var.numpy(), np.ones(3))
    assert int(bn.num_batches_tracked.item()) == 0


@pytest.mark.parametrize("eps, training", [(0.0, True), (-1.0, True), (-1.0, False)])
def test_batch_norm_refuses_a_non_positive_eps_as_torch(eps, training):
    rm, rv = minidl.zeros(3), minidl.ones(3)
    with pytest.raises(ValueError, match="batch_norm eps must be"):
        F.batch_norm(minidl.randn(4, 3), rm, rv, training=training, eps=eps)
    assert np.array_equal(rm.numpy(), np.zeros(3)) and np.array_equal(rv.numpy(), np.ones(3))
    F.batch_norm(minidl.randn(4, 3), rm, rv, training=False, eps=0.0)  # torch takes it
