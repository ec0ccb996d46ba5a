"""ConvNeXt-Tiny/Small/Base/Large (Liu et al., 2022) in torchvision's layout: a 4x4 patchify stem, blocks
of depthwise 7x7 conv, LayerNorm over the channels, an MLP (Linear-GELU-Linear) on
channels-last, a learnt per-channel layer scale (1e-6 at start) and stochastic depth, with
LayerNorm + 2x2 strided-conv downsampling between stages."""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import nn
from ._blocks import Conv2dNormActivation, LayerNorm2d, Permute, StochasticDepth
from .resnet import _build

__all__ = ["ConvNeXt", "CNBlock", "convnext_tiny", "convnext_small", "convnext_base",
           "convnext_large"]


def _trunc_normal_002(weight):
    """torchvision's ``trunc_normal_(w, std=0.02)`` (bounds -2, 2): the bounds lie 100 standard
    deviations out, so a normal draw, clamped for form, has the same distribution (to within
    the chance of a 100-sigma draw) at a fraction of inverse-CDF sampling's cost."""
    from .. import no_grad

    nn.init.normal_(weight, 0.0, 0.02)
    with no_grad():
        weight.clamp_(-2.0, 2.0)


class CNBlock(nn.Module):
    def __init__(self, dim, layer_scale, stochastic_depth_prob, norm_layer=None):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6) if norm_layer is None else norm_layer
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]), norm_layer(dim), nn.Linear(dim, 4 * dim), nn.GELU(),
            nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(np.full((dim, 1, 1), layer_scale, dtype=np.float32))
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, x):
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class ConvNeXt(nn.Module):
    classifier_key = "classifier.2"

    def __init__(self, block_setting, stochastic_depth_prob=0.0, layer_scale=1e-6,
                 num_classes=1000):
        super().__init__()
        if not block_setting:
            raise ValueError("The block_setting should not be empty")
        if int(num_classes) < 1:
            raise ValueError(f"ConvNeXt: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        norm_layer = partial(LayerNorm2d, eps=1e-6)
        layers = [Conv2dNormActivation(3, block_setting[0][0], kernel_size=4, stride=4, padding=0,
                                       norm_layer=norm_layer, activation_layer=None, bias=True)]
        total = sum(n for _, _, n in block_setting)
        block_id = 0
        for input_channels, out_channels, num_layers in block_setting:
            stage = []
            for _ in range(num_layers):
                sd_prob = stochastic_depth_prob * block_id / (total - 1.0)
                stage.append(CNBlock(input_channels, layer_scale, sd_prob))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if out_channels is not None:
                layers.append(nn.Sequential(norm_layer(input_channels),
                                            nn.Conv2d(input_channels, out_channels, 2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = block_setting[-1]
        last_channels = last[1] if last[1] is not None else last[0]
        self.classifier = nn.Sequential(norm_layer(last_channels), nn.Flatten(1),
                                        nn.Linear(last_channels, self.num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _trunc_normal_002(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def _convnext(arch, setting, sd_prob, weights, num_classes, **kwargs):
    sd_prob = kwargs.pop("stochastic_depth_prob", sd_prob)
    model = ConvNeXt(setting, stochastic_depth_prob=sd_prob, num_classes=num_classes, **kwargs)
    return _build(arch, model, weights)


def convnext_tiny(weights=None, num_classes=1000, **kwargs):
    """ConvNeXt-Tiny with torchvision's names; ``weights`` as for ``resnet50``."""
    setting = [(96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)]
    return _convnext("convnext_tiny", setting, 0.1, weights, num_classes, **kwargs)


def convnext_small(weights=None, num_classes=1000, **kwargs):
    """ConvNeXt-Small with torchvision's names; ``weights`` as for ``resnet50``."""
    setting = [(96, 192, 3), (192, 384, 3), (384, 768, 27), (768, None, 3)]
    return _convnext("convnext_small", setting, 0.4, weights, num_classes, **kwargs)


def convnext_base(weights=None, num_classes=1000, **kwargs):
    """ConvNeXt-Base with torchvision's names; ``weights`` as for ``resnet50``."""
    setting = [(128, 256, 3), (256, 512, 3), (512, 1024, 27), (1024, None, 3)]
    return _convnext("convnext_base", setting, 0.5, weights, num_classes, **kwargs)


def convnext_large(weights=None, num_classes=1000, **kwargs):
    """ConvNeXt-Large with torchvision's names; ``weights`` as for ``resnet50``."""
    setting = [(192, 384, 3), (384, 768, 3), (768, 1536, 27), (1536, None, 3)]
    return _convnext("convnext_large", setting, 0.5, weights, num_classes, **kwargs)
