"""MNASNet-B1 (Tan et al., 2019) in torchvision's layout: a stem (3x3 conv, depthwise-separable
conv), six stacks of inverted residuals (1x1 expand, depthwise 3x3/5x5, linear 1x1 project) and
a 1x1 conv to 1280 channels, then global average pooling and a dropout + linear classifier.
The depth multiplier ``alpha`` scales every width (rounded to multiples of 8, preferring to round
up); the BatchNorms use TensorFlow's momentum (PyTorch momentum 1 - 0.9997), as torchvision's.

Checkpoints saved before torchvision scaled the stem ("version 1": a fixed 32/16-channel stem,
alpha != 1) load through ``weights=``, which rebuilds the stem as torchvision's loader does and
warns as it does (torchvision's published files are all version 2)."""
from __future__ import annotations

import warnings

import numpy as np

from .. import nn
from ._blocks import check_image, make_divisible
from .resnet import _build

__all__ = ["MNASNet", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"]

_BN_MOMENTUM = 1 - 0.9997  # TensorFlow's 0.9997, as PyTorch's momentum


class _InvertedResidual(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, stride, expansion_factor, bn_momentum=0.1):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        if kernel_size not in (3, 5):
            raise ValueError(f"kernel_size should be 3 or 5 instead of {kernel_size}")
        mid = in_ch * expansion_factor
        self.apply_residual = in_ch == out_ch and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid, momentum=bn_momentum),
            nn.ReLU(),
            nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, stride=stride, groups=mid,
                      bias=False),
            nn.BatchNorm2d(mid, momentum=bn_momentum), nn.ReLU(),
            nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch, momentum=bn_momentum))

    def forward(self, x):
        out = self.layers(x)
        return out + x if self.apply_residual else out


def _stack(in_ch, out_ch, kernel_size, stride, exp_factor, repeats, bn_momentum):
    """``repeats`` inverted residuals; only the first changes width or resolution."""
    if repeats < 1:
        raise ValueError(f"repeats should be >= 1, instead got {repeats}")
    return nn.Sequential(
        _InvertedResidual(in_ch, out_ch, kernel_size, stride, exp_factor, bn_momentum),
        *[_InvertedResidual(out_ch, out_ch, kernel_size, 1, exp_factor, bn_momentum)
          for _ in range(1, repeats)])


def _get_depths(alpha):
    return [make_divisible(d * alpha, 8) for d in (32, 16, 24, 40, 80, 96, 192, 320)]


def _stem(c0, c1, c2):
    """Layers 0-8: 3x3 stride-2 conv, depthwise 3x3, linear 1x1, then the first stack."""
    return [nn.Conv2d(3, c0, 3, padding=1, stride=2, bias=False),
            nn.BatchNorm2d(c0, momentum=_BN_MOMENTUM), nn.ReLU(),
            nn.Conv2d(c0, c0, 3, padding=1, stride=1, groups=c0, bias=False),
            nn.BatchNorm2d(c0, momentum=_BN_MOMENTUM), nn.ReLU(),
            nn.Conv2d(c0, c1, 1, bias=False), nn.BatchNorm2d(c1, momentum=_BN_MOMENTUM),
            _stack(c1, c2, 3, 2, 3, 3, _BN_MOMENTUM)]


class MNASNet(nn.Module):
    """torchvision's ``MNASNet(alpha, num_classes=1000, dropout=0.2)``."""

    classifier_key = "classifier.1"

    def __init__(self, alpha, num_classes=1000, dropout=0.2):
        super().__init__()
        if alpha <= 0.0:
            raise ValueError(f"alpha should be greater than 0.0 instead of {alpha}")
        if int(num_classes) < 1:
            raise ValueError(f"MNASNet: num_classes must be >= 1, got {num_classes}")
        self.alpha, self.num_classes = alpha, int(num_classes)
        d = _get_depths(alpha)
        layers = _stem(d[0], d[1], d[2]) + [
            _stack(d[2], d[3], 5, 2, 3, 3, _BN_MOMENTUM),
            _stack(d[3], d[4], 5, 2, 6, 3, _BN_MOMENTUM),
            _stack(d[4], d[5], 3, 1, 6, 2, _BN_MOMENTUM),
            _stack(d[5], d[6], 5, 2, 6, 4, _BN_MOMENTUM),
            _stack(d[6], d[7], 3, 1, 6, 1, _BN_MOMENTUM),
            nn.Conv2d(d[7], 1280, 1, bias=False), nn.BatchNorm2d(1280, momentum=_BN_MOMENTUM),
            nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(1280, self.num_classes))
        self._init_weights(self)

    @staticmethod
    def _init_weights(root):
        """torchvision's: He-normal (fan_out) convs, BatchNorm at the identity, and linears
        He-uniform over fan_out with the sigmoid's gain (U(+-sqrt(3 / out_features)))."""
        for m in root.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, mode="fan_out", nonlinearity="sigmoid")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        check_image("MNASNet", x)
        return self.classifier(self.layers(x).mean([2, 3]))

    def remap_state_dict(self, state):
        """A "version 1" checkpoint (fixed 32/16-channel stem, alpha != 1): rebuild layers 0-8
        as that stem, as torchvision's loader does, and warn."""
        w = state.get("layers.0.weight")
        if self.alpha != 1.0 and w is not None and np.shape(w)[0] == 32 \
                and self.layers[0].out_channels != 32:
            d = _get_depths(self.alpha)
            for i, layer in enumerate(_stem(32, 16, d[2])):
                self.layers[i] = layer
            self._init_weights(self.layers)
            warnings.warn("A new version of MNASNet model has been implemented. Your checkpoint "
                          "was saved using the previous version. This checkpoint will load and "
                          "work as before, but you may want to upgrade by training a newer model "
                          "or transfer learning from an updated ImageNet checkpoint.", UserWarning)
        return state


def _mnasnet(arch, alpha, weights, num_classes, kwargs):
    return _build(arch, MNASNet(alpha, num_classes=num_classes, **kwargs), weights)


def mnasnet0_5(weights=None, num_classes=1000, **kwargs):
    return _mnasnet("mnasnet0_5", 0.5, weights, num_classes, kwargs)


def mnasnet0_75(weights=None, num_classes=1000, **kwargs):
    return _mnasnet("mnasnet0_75", 0.75, weights, num_classes, kwargs)


def mnasnet1_0(weights=None, num_classes=1000, **kwargs):
    return _mnasnet("mnasnet1_0", 1.0, weights, num_classes, kwargs)


def mnasnet1_3(weights=None, num_classes=1000, **kwargs):
    return _mnasnet("mnasnet1_3", 1.3, weights, num_classes, kwargs)


def _document():
    from .resnet import _document as doc

    for fn, title in [(mnasnet0_5, "MNASNet 0.5"), (mnasnet0_75, "MNASNet 0.75"),
                      (mnasnet1_0, "MNASNet 1.0"), (mnasnet1_3, "MNASNet 1.3")]:
        doc(fn, title)


_document()
