"""Model builders shared by the benchmark files: the same networks in minidl and plain torch
(no torchvision), with the torch copy loaded from the minidl weights so both compute the same."""
from __future__ import annotations

import os

import numpy as np

import minidl
import minidl.nn as nn
import minidl.optim


def lenet5_minidl():
    # defined here rather than imported from minidl.models, so the benchmark pins the layout
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def lenet5_torch(torch):
    tn = torch.nn
    return tn.Sequential(
        tn.Conv2d(1, 6, 5, padding=2), tn.ReLU(), tn.MaxPool2d(2),
        tn.Conv2d(6, 16, 5), tn.ReLU(), tn.MaxPool2d(2), tn.Flatten(),
        tn.Linear(400, 120), tn.ReLU(), tn.Linear(120, 84), tn.ReLU(), tn.Linear(84, 10))


def mlp_minidl():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def mlp_torch(torch):
    tn = torch.nn
    return tn.Sequential(tn.Linear(784, 256), tn.ReLU(), tn.Linear(256, 10))


def copy_weights(torch, src, dst):
    """minidl module -> torch module with the same parameter and buffer names."""
    state = {k: torch.from_numpy(np.ascontiguousarray(v.numpy())) for k, v in src.state_dict().items()}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    # torch's BatchNorm counts its steps; nothing else may be left out
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), \
        (missing, unexpected)
    return dst


def resnet50_torch(torch):
    """torchvision's ResNet-50 (v1.5: stride in the 3x3 conv) written out in plain torch."""
    tn = torch.nn

    class Bottleneck(tn.Module):
        def __init__(self, inplanes, planes, stride, downsample):
            super().__init__()
            self.conv1 = tn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = tn.BatchNorm2d(planes)
            self.conv2 = tn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = tn.BatchNorm2d(planes)
            self.conv3 = tn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = tn.BatchNorm2d(planes * 4)
            self.relu = tn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class ResNet50(tn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = tn.BatchNorm2d(64)
            self.relu = tn.ReLU()
            self.maxpool = tn.MaxPool2d(3, stride=2, padding=1)
            self.inplanes = 64
            self.layer1 = self._layer(64, 3, 1)
            self.layer2 = self._layer(128, 4, 2)
            self.layer3 = self._layer(256, 6, 2)
            self.layer4 = self._layer(512, 3, 2)
            self.avgpool = tn.AdaptiveAvgPool2d(1)
            self.fc = tn.Linear(2048, 1000)

        def _layer(self, planes, blocks, stride):
            down = None
            if stride != 1 or self.inplanes != planes * 4:
                down = tn.Sequential(tn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                     tn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(self.inplanes, planes, stride, down)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
            return tn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet50()


def seeded_inputs(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def minidl_sgd(model):
    return minidl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def bench_threads() -> int:
    import numba

    n = int(os.environ.get("MINIDL_BENCH_THREADS", "0")) or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(n)
    return n


THREADS = bench_threads()


def torch_or_none():
    """PyTorch with the benchmark thread count, or None: minidl's benchmarks run without it (its
    twins and the parity checks against it are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch
