"""DenseNet-121/161/169/201 (Huang et al., 2016) in torchvision's layout: dense blocks of
BN-ReLU-1x1-BN-ReLU-3x3 layers whose outputs are concatenated, transitions that halve the
channels and the resolution, and a final BatchNorm ``norm5``.

torchvision's published DenseNet files use the old key spelling ``denselayer1.norm.1.weight``
(for ``denselayer1.norm1.weight``); loading renames them as torchvision's loader does."""
from __future__ import annotations

import re
from collections import OrderedDict

from .. import cat, nn
from ..nn import functional as F
from .resnet import _build

__all__ = ["DenseNet", "densenet121", "densenet161", "densenet169", "densenet201"]

_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class _DenseLayer(nn.Module):
    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, features):
        x = cat(features, 1) if isinstance(features, (list, tuple)) else features
        out = self.conv1(self.norm1.forward_relu(x))
        out = self.conv2(self.norm2.forward_relu(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(
                num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate))

    def forward(self, init_features):
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features, num_output_features):
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(num_input_features)), ("relu", nn.ReLU()),
            ("conv", nn.Conv2d(num_input_features, num_output_features, 1, bias=False)),
            ("pool", nn.AvgPool2d(kernel_size=2, stride=2))]))


class DenseNet(nn.Module):
    classifier_key = "classifier"

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
                 bn_size=4, drop_rate=0, num_classes=1000, memory_efficient=False):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"DenseNet: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU()),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(
                num_layers, num_features, bn_size, growth_rate, drop_rate))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}",
                                         _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, self.num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def remap_state_dict(state):
        """torchvision's published files' ``denselayerN.norm.1.weight`` -> ``norm1.weight``."""
        out = {}
        for k, v in state.items():
            m = _OLD_KEY.match(k)
            out[m.group(1) + m.group(2) if m else k] = v
        return out

    def forward(self, x):
        out = F.relu(self.features(x))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _densenet(arch, growth_rate, block_config, num_init_features, weights, num_classes, **kw):
    return _build(arch, DenseNet(growth_rate, block_config, num_init_features,
                                 num_classes=num_classes, **kw), weights)


def densenet121(weights=None, num_classes=1000, **kwargs):
    """DenseNet-121 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _densenet("densenet121", 32, (6, 12, 24, 16), 64, weights, num_classes, **kwargs)


def densenet161(weights=None, num_classes=1000, **kwargs):
    """DenseNet-161 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _densenet("densenet161", 48, (6, 12, 36, 24), 96, weights, num_classes, **kwargs)


def densenet169(weights=None, num_classes=1000, **kwargs):
    """DenseNet-169 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _densenet("densenet169", 32, (6, 12, 32, 32), 64, weights, num_classes, **kwargs)


def densenet201(weights=None, num_classes=1000, **kwargs):
    """DenseNet-201 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _densenet("densenet201", 32, (6, 12, 48, 32), 64, weights, num_classes, **kwargs)
