"""Whole models, minidl against PyTorch: training steps (forward, loss, backward, SGD with
momentum) and inference, on the same weights and the same batch."""
from __future__ import annotations

import numpy as np
import pytest

import minidl

from _common import (copy_weights, minidl_lenet5, torch_lenet5, minidl_mlp, minidl_train_step, torch_mlp,
                     torch_resnet50, torch_train_step, seeded_inputs, torch_or_none)

FRAMEWORKS = ["minidl", "torch"]


def _train_step(request, fw, build_minidl, build_torch, x, y):
    minidl.manual_seed(0)
    model = build_minidl()
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        return torch_train_step(torch, copy_weights(model, build_torch()), x, y)
    return minidl_train_step(model, x, y)


def _check_same_steps(request, build_minidl, build_torch, x, y, steps=3):
    """Guards the comparison: from the same weights both frameworks take the same steps."""
    if torch_or_none() is None:
        return
    losses = [[step().item() for _ in range(steps)]
              for step in (_train_step(request, fw, build_minidl, build_torch, x, y)
                           for fw in FRAMEWORKS)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_lenet5_train_step_b128(benchmark, request, fw):
    benchmark.group = "lenet5-train-step-b128"
    (x,) = seeded_inputs((128, 1, 28, 28))
    y = np.random.default_rng(1).integers(0, 10, 128)
    if fw == "minidl":
        _check_same_steps(request, minidl_lenet5, torch_lenet5, x[:16], y[:16])
    benchmark(_train_step(request, fw, minidl_lenet5, torch_lenet5, x, y))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mlp_train_step_b128(benchmark, request, fw):
    benchmark.group = "mlp-784-256-10-train-step-b128"
    (x,) = seeded_inputs((128, 784))
    y = np.random.default_rng(1).integers(0, 10, 128)
    if fw == "minidl":
        _check_same_steps(request, minidl_mlp, torch_mlp, x, y)
    benchmark(_train_step(request, fw, minidl_mlp, torch_mlp, x, y))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_lenet5_inference_b1000(benchmark, request, fw):
    benchmark.group = "lenet5-inference-b1000"
    (x,) = seeded_inputs((1000, 1, 28, 28))
    minidl.manual_seed(0)
    model = minidl_lenet5().eval()
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        tmodel = copy_weights(model, torch_lenet5()).eval()
        xt = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return tmodel(xt)
    else:
        xm = minidl.tensor(x)

        def run():
            with minidl.no_grad():
                return model(xm)
        torch = torch_or_none()
        tmodel = torch and copy_weights(model, torch_lenet5()).eval()
        with torch.no_grad() if torch else minidl.no_grad():
            if torch:
                np.testing.assert_allclose(run().numpy(), tmodel(torch.from_numpy(x)).numpy(),
                                           rtol=1e-4, atol=1e-4)
    benchmark(run)


def _resnet50():
    try:
        from minidl.models import resnet50
    except ImportError as exc:
        pytest.skip(f"minidl.models.resnet50 is not importable ({exc})")
    return resnet50


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("batch", [1, 8])
def test_resnet50_inference(benchmark, request, fw, batch):
    benchmark.group = f"resnet50-inference-b{batch}-224"
    torch = request.getfixturevalue("torch") if fw == "torch" else torch_or_none()
    minidl.manual_seed(0)
    model = _resnet50()().eval()
    (x,) = seeded_inputs((batch, 3, 224, 224))
    xm = minidl.tensor(x)

    def run_minidl():
        with minidl.no_grad():
            return model(xm)

    run = run_minidl
    if torch is not None:  # the twin, and the check that both compute the same thing
        tmodel = copy_weights(model, torch_resnet50()).eval()
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.no_grad():
                return tmodel(xt)

        if fw == "torch":
            run = run_torch
        else:
            np.testing.assert_allclose(run_minidl().numpy(), run_torch().numpy(),
                                       rtol=1e-2, atol=1e-2)
    benchmark.pedantic(run, rounds=5 if batch == 1 else 3, warmup_rounds=1)


def peak_rss_of(fw, batch, size):
    """Peak resident memory of ``steps`` training steps in a fresh process of its own (the two
    frameworks in one process would share, and hide, each other's peak)."""
    import json
    import os
    import subprocess
    import sys

    from _common import THREADS

    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                        "peak_memory.py")
    done = subprocess.run([sys.executable, tool, fw, "--batch", str(batch), "--size", str(size),
                           "--threads", str(THREADS)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_resnet50_train_step_b4_128(benchmark, request, fw):
    """ResNet-50 in train mode at batch 4, 128x128: forward, cross-entropy, backward, SGD with
    momentum; peak RSS of the same steps in a separate process goes in extra_info."""
    benchmark.group = "resnet50-train-step-b4-128"
    resnet50 = _resnet50()
    (x,) = seeded_inputs((4, 3, 128, 128))
    y = np.random.default_rng(1).integers(0, 1000, 4)
    if fw == "torch":
        request.getfixturevalue("torch")

    def build_torch():
        return torch_resnet50()

    def build_minidl():
        return resnet50()

    if fw == "minidl":
        # One step: at batch 4 the float32 rounding of 53 batch norms makes the two runs drift
        # apart within a few SGD steps (they agree to 1e-12 in float64, see
        # tests/test_resnet50.py::test_train_mode_forward_and_backward_match_torch).
        _check_same_steps(request, build_minidl, build_torch, x, y, steps=1)
    step = _train_step(request, fw, build_minidl, build_torch, x, y)
    step()  # warm-up: numba compiles, buffers settle
    benchmark.extra_info["peak_mem_bytes"] = peak_rss_of(fw, 4, 128)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
