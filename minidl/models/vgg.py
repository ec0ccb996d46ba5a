"""VGG-11/13/16/19 (Simonyan & Zisserman, 2014), with or without BatchNorm, in torchvision's
layout: ``features`` (3x3 convs and 2x2 max pools), a 7x7 adaptive average pool, and the
4096-4096 ``classifier`` with dropout."""
from __future__ import annotations

from .. import nn
from .resnet import _build

__all__ = ["VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
           "vgg19_bn"]

_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def make_layers(cfg, batch_norm=False):
    layers, in_channels = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU())
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    classifier_key = "classifier.6"

    def __init__(self, features, num_classes=1000, init_weights=True, dropout=0.5):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"VGG: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=dropout),
            nn.Linear(4096, self.num_classes))
        if init_weights:  # torchvision's
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _vgg(arch, cfg, batch_norm, weights, num_classes, **kwargs):
    return _build(arch, VGG(make_layers(_CFGS[cfg], batch_norm), num_classes, **kwargs), weights)


def vgg11(weights=None, num_classes=1000, **kwargs):
    """VGG-11 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg11", "A", False, weights, num_classes, **kwargs)


def vgg11_bn(weights=None, num_classes=1000, **kwargs):
    """VGG-11 with BatchNorm, torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg11_bn", "A", True, weights, num_classes, **kwargs)


def vgg13(weights=None, num_classes=1000, **kwargs):
    """VGG-13 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg13", "B", False, weights, num_classes, **kwargs)


def vgg13_bn(weights=None, num_classes=1000, **kwargs):
    """VGG-13 with BatchNorm, torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg13_bn", "B", True, weights, num_classes, **kwargs)


def vgg16(weights=None, num_classes=1000, **kwargs):
    """VGG-16 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg16", "D", False, weights, num_classes, **kwargs)


def vgg16_bn(weights=None, num_classes=1000, **kwargs):
    """VGG-16 with BatchNorm, torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg16_bn", "D", True, weights, num_classes, **kwargs)


def vgg19(weights=None, num_classes=1000, **kwargs):
    """VGG-19 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg19", "E", False, weights, num_classes, **kwargs)


def vgg19_bn(weights=None, num_classes=1000, **kwargs):
    """VGG-19 with BatchNorm, torchvision's names; ``weights`` as for ``resnet50``."""
    return _vgg("vgg19_bn", "E", True, weights, num_classes, **kwargs)
