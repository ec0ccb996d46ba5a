"""PyTorch twins of minidl's reference models and the weight copy between them, shared by the
tests and the benchmarks (benchmarks/_common.py puts this folder on sys.path and re-exports them).

- ``torch_resnet50``: torchvision's ResNet-50 (v1.5: stride on the 3x3 conv) in plain torch with
  torchvision's module names (torchvision is not a dependency); ``randomised_torch_resnet50``
  gives it random weights scaled to behave like trained ones, and running statistics from real
  forward passes, so eval-mode BatchNorm is not the identity;
- ``torch_lenet5``, ``torch_mlp``: the LeNet-5 and MLP of ``minidl_lenet5``/``minidl_mlp``;
- ``copy_weights(src, dst)``: a minidl module's state dict into the torch twin, by name.

torch is imported when a function runs (a skip with a reason under pytest where it is missing),
so importing this module needs only minidl.
"""
from __future__ import annotations

import numpy as np

import minidl.nn as nn


def _torch():
    try:
        import torch
    except ImportError:  # pytest is imported only here: the startup benchmark imports this module
        import pytest

        pytest.skip("torch is needed for the PyTorch twins")
    return torch


def minidl_lenet5():
    # written out here rather than taken from minidl.models, so the twins pin the same layout
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def torch_lenet5():
    tn = _torch().nn
    return tn.Sequential(
        tn.Conv2d(1, 6, 5, padding=2), tn.ReLU(), tn.MaxPool2d(2),
        tn.Conv2d(6, 16, 5), tn.ReLU(), tn.MaxPool2d(2), tn.Flatten(),
        tn.Linear(400, 120), tn.ReLU(), tn.Linear(120, 84), tn.ReLU(), tn.Linear(84, 10))


def minidl_mlp():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def torch_mlp():
    tn = _torch().nn
    return tn.Sequential(tn.Linear(784, 256), tn.ReLU(), tn.Linear(256, 10))


def copy_weights(src, dst):
    """minidl module ``src`` -> torch module ``dst`` with the same parameter and buffer names;
    returns ``dst``."""
    torch = _torch()
    state = {k: torch.from_numpy(np.ascontiguousarray(v.numpy())) for k, v in src.state_dict().items()}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    # torch's BatchNorm counts its steps; nothing else may be left out
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), \
        (missing, unexpected)
    return dst


def torch_resnet50(num_classes=1000):
    torch = _torch()
    tnn = torch.nn

    class Bottleneck(tnn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(planes * 4)
            self.relu = tnn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class TorchResNet50(tnn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = 64
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.relu = tnn.ReLU(inplace=True)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(64, 3)
            self.layer2 = self._make_layer(128, 4, 2)
            self.layer3 = self._make_layer(256, 6, 2)
            self.layer4 = self._make_layer(512, 3, 2)
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(2048, num_classes)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = tnn.Sequential(
                    tnn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                    tnn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return tnn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return TorchResNet50()


def randomised_torch_resnet50(seed=0, num_classes=1000):
    torch = _torch()

    torch.manual_seed(seed)
    model = torch_resnet50(num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, torch.nn.BatchNorm2d):
                # gamma ~0.5 keeps each residual branch from swamping its shortcut
                m.weight.uniform_(0.3, 0.7, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.momentum = None  # cumulative average: the stats of every calibration batch
        model.fc.weight.mul_(4.0)  # logits of a few units, top-1 margins far above float32 noise
        model.train()
        for _ in range(2):
            model(torch.randn(8, 3, 64, 64, generator=g))
        model.eval()
    return model
