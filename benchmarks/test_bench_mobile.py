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

FRAMEWORKS = ["minidl", "torch"]
BATCH, SIZE, CLASSES = 8, 96, 100
# (expansion, output channels, blocks, first stride), as torchvision's MobileNetV2
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(nn):
    """MobileNetV2 written once for both frameworks (``nn`` is minidl.nn or torch.nn)."""
    def conv_bn(cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6()] if act else layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden, 1, 1) if expand != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, 1, act=False)
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    layers, cin = conv_bn(3, 32, 3, 2), 32
    for t, c, n, s in SETTINGS:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += conv_bn(cin, 1280, 1, 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, CLASSES)]
    return nn.Sequential(*layers)


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
