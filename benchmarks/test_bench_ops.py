"""Single ops, minidl against PyTorch on the same arrays: conv2d, max-pool, softmax
cross-entropy, training-mode batch norm, and the float32 matmul that sets the machine's GEMM ceiling.

Backward benchmarks time only the backward pass: the forward runs in pedantic's untimed setup.
"""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F

from _common import seeded_inputs, torch_or_none

FRAMEWORKS = ["minidl", "torch"]

# name: (input shape, weight shape, stride, padding)
CONV_SHAPES = {
    "lenet_conv1": ((128, 1, 28, 28), (6, 1, 5, 5), 1, 2),
    "lenet_conv2": ((128, 6, 14, 14), (16, 6, 5, 5), 1, 0),
    "resnet50_3x3": ((8, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    "resnet50_1x1": ((8, 256, 56, 56), (64, 256, 1, 1), 1, 0),
    "resnet50_stem": ((8, 3, 224, 224), (64, 3, 7, 7), 2, 3),
}
CONV_BACKWARD = ["lenet_conv1", "lenet_conv2", "resnet50_3x3"]

POOL_SHAPES = {
    "lenet_pool1": ((128, 6, 28, 28), 2, 2, 0),
    "resnet50_stem_pool": ((8, 64, 112, 112), 3, 2, 1),
}

XENT_SHAPES = {"lenet_128x10": (128, 10), "imagenet_256x1000": (256, 1000)}


def conv_flops(xs, ws, stride, padding):
    n, _, h, w = xs
    co, ci, kh, kw = ws
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    return 2 * n * co * oh * ow * ci * kh * kw


def _conv_inputs(name):
    xs, ws, stride, padding = CONV_SHAPES[name]
    x, w, b = seeded_inputs(xs, ws, (ws[0],))
    return x, w, b, stride, padding


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", list(CONV_SHAPES))
def test_conv2d_forward(benchmark, request, fw, shape):
    benchmark.group = f"conv2d-forward-{shape}"
    x, w, b, stride, padding = _conv_inputs(shape)
    benchmark.extra_info["flops"] = conv_flops(x.shape, w.shape, stride, padding)
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        xt, wt, bt = map(torch.from_numpy, (x, w, b))

        def run():
            with torch.no_grad():
                return torch.nn.functional.conv2d(xt, wt, bt, stride, padding)
    else:
        xm, wm, bm = map(minidl.tensor, (x, w, b))

        def run():
            with minidl.no_grad():
                return F.conv2d(xm, wm, bm, stride, padding)
    out = run()
    torch = torch_or_none()
    if fw == "minidl" and torch is not None:  # only meaningful if minidl computes the same thing
        ref = torch.nn.functional.conv2d(*map(torch.from_numpy, (x, w, b)), stride=stride, padding=padding)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-3, atol=1e-3)
    benchmark(run)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", CONV_BACKWARD)
def test_conv2d_backward(benchmark, request, fw, shape):
    benchmark.group = f"conv2d-backward-{shape}"
    x, w, b, stride, padding = _conv_inputs(shape)
    g = seeded_inputs(F.conv2d(minidl.tensor(x), minidl.tensor(w), None, stride, padding).shape,
                      seed=1)[0]
    benchmark.extra_info["flops"] = 2 * conv_flops(x.shape, w.shape, stride, padding)
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        gt = torch.from_numpy(g)

        def setup():
            xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
            return (torch.nn.functional.conv2d(xt, wt, bt, stride, padding),), {}

        def run(y):
            y.backward(gt)
    else:
        def setup():
            xm, wm, bm = (minidl.tensor(a, requires_grad=True) for a in (x, w, b))
            return (F.conv2d(xm, wm, bm, stride, padding),), {}

        def run(y):
            y.backward(g)
    benchmark.pedantic(run, setup=setup, rounds=20 if shape.startswith("lenet") else 8,
                       warmup_rounds=2)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", list(POOL_SHAPES))
def test_max_pool2d_forward(benchmark, request, fw, shape):
    benchmark.group = f"max_pool2d-forward-{shape}"
    xs, k, s, p = POOL_SHAPES[shape]
    (x,) = seeded_inputs(xs)
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        xt = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return torch.nn.functional.max_pool2d(xt, k, s, p)
    else:
        xm = minidl.tensor(x)

        def run():
            with minidl.no_grad():
                return F.max_pool2d(xm, k, s, p)
    benchmark(run)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", list(POOL_SHAPES))
def test_max_pool2d_backward(benchmark, request, fw, shape):
    benchmark.group = f"max_pool2d-backward-{shape}"
    xs, k, s, p = POOL_SHAPES[shape]
    (x,) = seeded_inputs(xs)
    g = seeded_inputs(F.max_pool2d(minidl.tensor(x), k, s, p).shape, seed=1)[0]
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        gt = torch.from_numpy(g)

        def setup():
            return (torch.nn.functional.max_pool2d(torch.from_numpy(x).requires_grad_(), k, s, p),), {}

        def run(y):
            y.backward(gt)
    else:
        def setup():
            return (F.max_pool2d(minidl.tensor(x, requires_grad=True), k, s, p),), {}

        def run(y):
            y.backward(g)
    benchmark.pedantic(run, setup=setup, rounds=30, warmup_rounds=2)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", list(XENT_SHAPES))
def test_softmax_cross_entropy(benchmark, request, fw, shape):
    """Forward and backward of the mean loss."""
    benchmark.group = f"cross_entropy-fwd+bwd-{shape}"
    n, c = XENT_SHAPES[shape]
    (logits,) = seeded_inputs((n, c))
    target = np.random.default_rng(1).integers(0, c, n)
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        lt, tt = torch.from_numpy(logits), torch.from_numpy(target)

        def run():
            x = lt.detach().requires_grad_()
            torch.nn.functional.cross_entropy(x, tt).backward()
            return x.grad
    else:
        tm = minidl.tensor(target)

        def run():
            x = minidl.tensor(logits, requires_grad=True)
            F.cross_entropy(x, tm).backward()
            return x.grad
    benchmark(run)


BN_SHAPES = {"resnet50_layer1": (8, 256, 56, 56), "resnet50_layer4": (8, 2048, 7, 7)}


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", list(BN_SHAPES))
def test_batch_norm_train(benchmark, request, fw, shape):
    """Training-mode BatchNorm2d, forward (batch statistics, running-statistics update) and
    backward (input, weight and bias gradients)."""
    benchmark.group = f"batch_norm-train-fwd+bwd-{shape}"
    x, g = seeded_inputs(BN_SHAPES[shape], BN_SHAPES[shape])
    c = x.shape[1]
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        bn, xt, gt = torch.nn.BatchNorm2d(c), torch.from_numpy(x), torch.from_numpy(g)

        def run():
            xi = xt.detach().requires_grad_()
            bn(xi).backward(gt)
            return xi.grad
    else:
        bn = minidl.nn.BatchNorm2d(c)

        def run():
            xi = minidl.tensor(x, requires_grad=True)
            bn(xi).backward(g)
            return xi.grad
    benchmark(run)


@pytest.mark.parametrize("fw", ["numpy", "torch"])
def test_matmul_1024(benchmark, request, fw):
    """The float32 GEMM ceiling: conv2d's GFLOP/s are reported as a share of numpy's here."""
    benchmark.group = "matmul-1024-float32"
    benchmark.extra_info["flops"] = 2 * 1024 ** 3
    a, b = seeded_inputs((1024, 1024), (1024, 1024))
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        benchmark(torch.matmul, at, bt)
    else:
        out = np.empty_like(a)
        benchmark(np.matmul, a, b, out=out)
