"""EfficientNet B0-B7 (Tan & Le, 2019) and EfficientNetV2-S/M/L (Tan & Le, 2021) in
torchvision's layout: MBConv blocks (1x1 expand, depthwise kxk, squeeze-excitation, 1x1
project) with SiLU, stochastic depth on the residual branch in train mode (probability rising
linearly to 0.2 over the blocks), and the width/depth multipliers of each variant. V2's early
stages use FusedMBConv (one kxk conv in place of expand + depthwise, no squeeze-excitation) and
a 1280-channel head. B5-B7's BatchNorms use eps=0.001, momentum=0.01, V2's eps=0.001, as
torchvision's."""
from __future__ import annotations

import copy
import math
from functools import partial

from .. import nn
from ._blocks import (Conv2dNormActivation, SqueezeExcitation, StochasticDepth, init_mobile,
                      make_divisible)
from .resnet import _build

__all__ = ["EfficientNet", "MBConv", "FusedMBConv", "MBConvConfig", "FusedMBConvConfig",
           "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
           "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6",
           "efficientnet_b7"]


class MBConvConfig:
    """One stage of MBConv blocks; widths scaled by ``width_mult`` (rounded to multiples of 8)
    and the block count by ``depth_mult`` (rounded up), as torchvision's."""

    def __init__(self, expand_ratio, kernel, stride, input_channels, out_channels, num_layers,
                 width_mult=1.0, depth_mult=1.0, block=None):
        self.expand_ratio, self.kernel, self.stride = expand_ratio, kernel, stride
        self.input_channels = make_divisible(input_channels * width_mult, 8)
        self.out_channels = make_divisible(out_channels * width_mult, 8)
        self.num_layers = int(math.ceil(num_layers * depth_mult))
        self.block = MBConv if block is None else block


class FusedMBConvConfig:
    """One stage of FusedMBConv blocks (EfficientNetV2), widths and depth as given."""

    def __init__(self, expand_ratio, kernel, stride, input_channels, out_channels, num_layers,
                 block=None):
        self.expand_ratio, self.kernel, self.stride = expand_ratio, kernel, stride
        self.input_channels, self.out_channels = input_channels, out_channels
        self.num_layers = num_layers
        self.block = FusedMBConv if block is None else block


class _ResidualBlock(nn.Module):
    """An EfficientNet block: ``block``, plus the input through stochastic depth where the
    shapes allow (``use_res_connect``)."""

    def forward(self, x):
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class MBConv(_ResidualBlock):
    def __init__(self, cnf, stochastic_depth_prob, norm_layer=nn.BatchNorm2d):
        super().__init__()
        if cnf.stride not in (1, 2):
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        expanded = make_divisible(cnf.input_channels * cnf.expand_ratio, 8)
        layers = []
        if expanded != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, expanded, 1,
                                               norm_layer=norm_layer, activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, cnf.kernel, stride=cnf.stride,
                                           groups=expanded, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, cnf.input_channels // 4),
                                        activation=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, cnf.out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

class FusedMBConv(_ResidualBlock):
    """EfficientNetV2's fused block: a kxk conv carrying the stride expands (SiLU), a 1x1
    projects; with expand ratio 1 the kxk conv alone maps in to out. Stochastic depth on the
    residual branch as MBConv's."""

    def __init__(self, cnf, stochastic_depth_prob, norm_layer=nn.BatchNorm2d):
        super().__init__()
        if cnf.stride not in (1, 2):
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        expanded = make_divisible(cnf.input_channels * cnf.expand_ratio, 8)
        if expanded != cnf.input_channels:
            layers = [Conv2dNormActivation(cnf.input_channels, expanded, cnf.kernel,
                                           stride=cnf.stride, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU),
                      Conv2dNormActivation(expanded, cnf.out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None)]
        else:
            layers = [Conv2dNormActivation(cnf.input_channels, cnf.out_channels, cnf.kernel,
                                           stride=cnf.stride, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

class EfficientNet(nn.Module):
    classifier_key = "classifier.1"

    def __init__(self, inverted_residual_setting, dropout, stochastic_depth_prob=0.2,
                 num_classes=1000, norm_layer=None, last_channel=None):
        super().__init__()
        if not inverted_residual_setting:
            raise ValueError("The inverted_residual_setting should not be empty")
        if int(num_classes) < 1:
            raise ValueError(f"EfficientNet: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        layers = [Conv2dNormActivation(3, inverted_residual_setting[0].input_channels, 3,
                                       stride=2, norm_layer=norm_layer, activation_layer=nn.SiLU)]
        total = sum(cnf.num_layers for cnf in inverted_residual_setting)
        block_id = 0
        for cnf in inverted_residual_setting:
            stage = []
            for _ in range(cnf.num_layers):
                block_cnf = copy.copy(cnf)
                if stage:
                    block_cnf.input_channels, block_cnf.stride = block_cnf.out_channels, 1
                sd_prob = stochastic_depth_prob * float(block_id) / total
                stage.append(getattr(block_cnf, "block", MBConv)(block_cnf, sd_prob, norm_layer))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = inverted_residual_setting[-1].out_channels
        last_out = last_channel if last_channel is not None else 4 * last_in
        layers.append(Conv2dNormActivation(last_in, last_out, 1, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout),
                                        nn.Linear(last_out, self.num_classes))
        # torchvision's initialisation: U(-1/sqrt(out), 1/sqrt(out)) linears
        init_mobile(self, lambda m: nn.init.uniform_(m.weight, -1.0 / math.sqrt(m.out_features),
                                                      1.0 / math.sqrt(m.out_features)))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _setting(width_mult, depth_mult):
    rows = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
            (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    return [MBConvConfig(*r, width_mult=width_mult, depth_mult=depth_mult) for r in rows]


def _efficientnet(arch, width_mult, depth_mult, default_dropout, weights, num_classes, **kwargs):
    dropout = kwargs.pop("dropout", default_dropout)  # efficientnet_b0(dropout=0.5) overrides
    model = EfficientNet(_setting(width_mult, depth_mult), dropout, num_classes=num_classes,
                         **kwargs)
    return _build(arch, model, weights)


def efficientnet_b0(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B0 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet("efficientnet_b0", 1.0, 1.0, 0.2, weights, num_classes, **kwargs)


def efficientnet_b1(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B1 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet("efficientnet_b1", 1.0, 1.1, 0.2, weights, num_classes, **kwargs)


def efficientnet_b2(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B2 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet("efficientnet_b2", 1.1, 1.2, 0.3, weights, num_classes, **kwargs)


def efficientnet_b3(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B3 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet("efficientnet_b3", 1.2, 1.4, 0.3, weights, num_classes, **kwargs)


def efficientnet_b4(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B4 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet("efficientnet_b4", 1.4, 1.8, 0.4, weights, num_classes, **kwargs)


_TF_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def efficientnet_b5(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B5 with torchvision's names; ``weights`` as for ``resnet50``."""
    kwargs.setdefault("norm_layer", _TF_BN)
    return _efficientnet("efficientnet_b5", 1.6, 2.2, 0.4, weights, num_classes, **kwargs)


def efficientnet_b6(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B6 with torchvision's names; ``weights`` as for ``resnet50``."""
    kwargs.setdefault("norm_layer", _TF_BN)
    return _efficientnet("efficientnet_b6", 1.8, 2.6, 0.5, weights, num_classes, **kwargs)


def efficientnet_b7(weights=None, num_classes=1000, **kwargs):
    """EfficientNet-B7 with torchvision's names; ``weights`` as for ``resnet50``."""
    kwargs.setdefault("norm_layer", _TF_BN)
    return _efficientnet("efficientnet_b7", 2.0, 3.1, 0.5, weights, num_classes, **kwargs)


_V2_BN = partial(nn.BatchNorm2d, eps=1e-03)

_V2 = {  # (fused?, expand, kernel, stride, in, out, layers) of each stage, torchvision's
    "efficientnet_v2_s": [(1, 1, 3, 1, 24, 24, 2), (1, 4, 3, 2, 24, 48, 4), (1, 4, 3, 2, 48, 64, 4),
                          (0, 4, 3, 2, 64, 128, 6), (0, 6, 3, 1, 128, 160, 9),
                          (0, 6, 3, 2, 160, 256, 15)],
    "efficientnet_v2_m": [(1, 1, 3, 1, 24, 24, 3), (1, 4, 3, 2, 24, 48, 5), (1, 4, 3, 2, 48, 80, 5),
                          (0, 4, 3, 2, 80, 160, 7), (0, 6, 3, 1, 160, 176, 14),
                          (0, 6, 3, 2, 176, 304, 18), (0, 6, 3, 1, 304, 512, 5)],
    "efficientnet_v2_l": [(1, 1, 3, 1, 32, 32, 4), (1, 4, 3, 2, 32, 64, 7), (1, 4, 3, 2, 64, 96, 7),
                          (0, 4, 3, 2, 96, 192, 10), (0, 6, 3, 1, 192, 224, 19),
                          (0, 6, 3, 2, 224, 384, 25), (0, 6, 3, 1, 384, 640, 7)],
}


def _efficientnet_v2(arch, default_dropout, weights, num_classes, **kwargs):
    dropout = kwargs.pop("dropout", default_dropout)
    kwargs.setdefault("norm_layer", _V2_BN)
    setting = [FusedMBConvConfig(*r[1:]) if r[0] else MBConvConfig(*r[1:]) for r in _V2[arch]]
    model = EfficientNet(setting, dropout, num_classes=num_classes, last_channel=1280, **kwargs)
    return _build(arch, model, weights)


def efficientnet_v2_s(weights=None, num_classes=1000, **kwargs):
    """EfficientNetV2-S with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet_v2("efficientnet_v2_s", 0.2, weights, num_classes, **kwargs)


def efficientnet_v2_m(weights=None, num_classes=1000, **kwargs):
    """EfficientNetV2-M with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet_v2("efficientnet_v2_m", 0.3, weights, num_classes, **kwargs)


def efficientnet_v2_l(weights=None, num_classes=1000, **kwargs):
    """EfficientNetV2-L with torchvision's names; ``weights`` as for ``resnet50``."""
    return _efficientnet_v2("efficientnet_v2_l", 0.4, weights, num_classes, **kwargs)
