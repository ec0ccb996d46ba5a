"""Depthwise-separable networks, minidl against PyTorch: a MobileNetV2 (torchvision's layout of
inverted residual blocks, width 1.0, ReLU6) training step on the CPU at batch 8, 96x96, from the
same weights on the same batch: forward in train mode, cross-entropy, backward, SGD with
momentum. Its 17 depthwise 3x3 convolutions are where a framework without a depthwise kernel
loses its time."""
from __future__ import annotations

import numpy as np
import pytest

import minidl

from _common import minidl_train_step, torch_or_none, torch_train_step
from _mobile_models import BATCH, CLASSES, SIZE, mobilenet_v2

FRAMEWORKS = ["minidl", "torch"]
def _batch():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32),
            rng.integers(0, CLASSES, BATCH))


def _step(fw):
    minidl.manual_seed(0)
    ours = mobilenet_v2(minidl.nn)
    x, y = _batch()
    if fw == "minidl":
        return minidl_train_step(ours, x, y)
    torch = torch_or_none()
    theirs = mobilenet_v2(torch.nn)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.numpy()))
                            for k, v in ours.state_dict().items()})
    return torch_train_step(torch, theirs, x, y)


def test_mobilenet_v2_steps_agree(request):
    """Guards the comparison: from the same weights both take the same first step."""
    request.getfixturevalue("torch")
    losses = [_step(fw)().item() for fw in FRAMEWORKS]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mobilenet_v2_train_step(benchmark, request, fw):
    benchmark.group = f"mobilenet-v2-train-step-b{BATCH}-{SIZE}"
    if fw == "torch":
        request.getfixturevalue("torch")
    step = _step(fw)
    step()  # warm-up: numba compiles, buffers settle
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
