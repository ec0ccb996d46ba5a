"""RegNetX / RegNetY (Radosavovic et al., 2020) in torchvision's layout: a 3x3 stride-2 stem,
four stages of residual bottleneck blocks (1x1, grouped 3x3 carrying the stride, squeeze-and-
excitation for RegNetY, 1x1) whose widths and depths come from the quantised linear rule
``w_j = w_0 + w_a * j`` (``BlockParams.from_init_params``), and a linear classifier.

Module names follow torchvision (``trunk_output.block2.block2-0.f.b.1.running_var``), so its
checkpoints load by name. Initialisation is torchvision's: convs N(0, sqrt(2 / fan_out)) with
fan_out = k*k*out_channels, BatchNorm at the identity, the classifier N(0, 0.01) with a zero
bias."""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import numpy as np

from .. import nn
from ._blocks import check_image, Conv2dNormActivation, make_divisible, SqueezeExcitation
from .resnet import _build

__all__ = ["RegNet", "BlockParams", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf",
           "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf",
           "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
           "regnet_x_16gf", "regnet_x_32gf"]


class SimpleStemIN(Conv2dNormActivation):
    """The ImageNet stem: 3x3 stride-2 conv, norm, activation."""

    def __init__(self, width_in, width_out, norm_layer, activation_layer):
        super().__init__(width_in, width_out, kernel_size=3, stride=2, norm_layer=norm_layer,
                         activation_layer=activation_layer)


class BottleneckTransform(nn.Sequential):
    """1x1 (``a``), grouped 3x3 with the stride (``b``), optional squeeze-excitation (``se``),
    1x1 without activation (``c``)."""

    def __init__(self, width_in, width_out, stride, norm_layer, activation_layer, group_width,
                 bottleneck_multiplier, se_ratio):
        w_b = int(round(width_out * bottleneck_multiplier))
        groups = w_b // group_width
        layers = OrderedDict()
        layers["a"] = Conv2dNormActivation(width_in, w_b, 1, norm_layer=norm_layer,
                                           activation_layer=activation_layer)
        layers["b"] = Conv2dNormActivation(w_b, w_b, 3, stride=stride, groups=groups,
                                           norm_layer=norm_layer, activation_layer=activation_layer)
        if se_ratio:
            layers["se"] = SqueezeExcitation(w_b, int(round(se_ratio * width_in)),
                                             activation=activation_layer)
        layers["c"] = Conv2dNormActivation(w_b, width_out, 1, norm_layer=norm_layer,
                                           activation_layer=None)
        super().__init__(layers)


class ResBottleneckBlock(nn.Module):
    """``activation(proj(x) + f(x))``; ``proj`` (1x1 conv + norm) only where the width or the
    resolution changes, else the identity."""

    def __init__(self, width_in, width_out, stride, norm_layer, activation_layer, group_width=1,
                 bottleneck_multiplier=1.0, se_ratio=None):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = Conv2dNormActivation(width_in, width_out, 1, stride=stride,
                                             norm_layer=norm_layer, activation_layer=None)
        self.f = BottleneckTransform(width_in, width_out, stride, norm_layer, activation_layer,
                                     group_width, bottleneck_multiplier, se_ratio)
        self.activation = activation_layer()

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))


class AnyStage(nn.Sequential):
    """``depth`` blocks named ``block{stage}-{i}``; the first carries the stride."""

    def __init__(self, width_in, width_out, stride, depth, block_constructor, norm_layer,
                 activation_layer, group_width, bottleneck_multiplier, se_ratio=None,
                 stage_index=0):
        super().__init__()
        for i in range(depth):
            self.add_module(f"block{stage_index}-{i}", block_constructor(
                width_in if i == 0 else width_out, width_out, stride if i == 0 else 1,
                norm_layer, activation_layer, group_width, bottleneck_multiplier, se_ratio))


class BlockParams:
    """Per-stage depths, widths, group widths, bottleneck multipliers and strides, and the
    squeeze-excitation ratio, as torchvision's ``BlockParams``."""

    def __init__(self, depths, widths, group_widths, bottleneck_multipliers, strides,
                 se_ratio=None):
        self.depths, self.widths, self.group_widths = list(depths), list(widths), list(group_widths)
        self.bottleneck_multipliers, self.strides = list(bottleneck_multipliers), list(strides)
        self.se_ratio = se_ratio

    @classmethod
    def from_init_params(cls, depth, w_0, w_a, w_m, group_width, bottleneck_multiplier=1.0,
                         se_ratio=None, **kwargs):
        """The quantised linear parametrisation: block j's continuous width ``w_0 + w_a*j`` is
        snapped to ``w_0 * w_m**k`` (rounded to a multiple of 8); runs of equal width form the
        stages. Computed in float32 as torchvision computes it (torch's default dtype)."""
        if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % 8 != 0:
            raise ValueError(f"Invalid RegNet settings: need w_a >= 0, w_0 > 0, w_m > 1 and "
                             f"w_0 % 8 == 0, got w_a={w_a}, w_0={w_0}, w_m={w_m}")
        f32 = np.float32
        widths_cont = np.arange(depth).astype(f32) * f32(w_a) + f32(w_0)
        capacity = np.round(np.log(widths_cont / f32(w_0)) / f32(math.log(w_m))).astype(f32)
        block_widths = (np.round(f32(w_0) * np.power(f32(w_m), capacity) / f32(8)) * 8)
        block_widths = [int(w) for w in block_widths.astype(np.int32)]
        num_stages = len(set(block_widths))
        splits = [w != wp for w, wp in zip(block_widths + [0], [0] + block_widths)]
        stage_widths = [w for w, t in zip(block_widths, splits[:-1]) if t]
        starts = [d for d, t in enumerate(splits) if t]
        stage_depths = [b - a for a, b in zip(starts[:-1], starts[1:])]
        multipliers = [bottleneck_multiplier] * num_stages
        stage_widths, group_widths = cls._adjust_widths_groups_compatibilty(
            stage_widths, multipliers, [group_width] * num_stages)
        return cls(stage_depths, stage_widths, group_widths, multipliers, [2] * num_stages,
                   se_ratio)

    def _get_expanded_params(self):
        return zip(self.widths, self.strides, self.depths, self.group_widths,
                   self.bottleneck_multipliers)

    @staticmethod
    def _adjust_widths_groups_compatibilty(stage_widths, bottleneck_ratios, group_widths):
        """Bottleneck widths rounded to a multiple of their group width (which is capped at the
        bottleneck width), and the stage widths that follow from them."""
        widths = [int(w * b) for w, b in zip(stage_widths, bottleneck_ratios)]
        group_widths_min = [min(g, w) for g, w in zip(group_widths, widths)]
        ws_bot = [make_divisible(w, g) for w, g in zip(widths, group_widths_min)]
        return [int(w / b) for w, b in zip(ws_bot, bottleneck_ratios)], group_widths_min


class RegNet(nn.Module):
    """torchvision's ``RegNet(block_params, num_classes=1000, stem_width=32, stem_type=None,
    block_type=None, norm_layer=None, activation=None)``."""

    classifier_key = "fc"

    def __init__(self, block_params, num_classes=1000, stem_width=32, stem_type=None,
                 block_type=None, norm_layer=None, activation=None):
        super().__init__()
        if not isinstance(block_params, BlockParams):
            raise TypeError(f"RegNet: block_params must be a BlockParams, got "
                            f"{type(block_params).__name__}")
        if int(num_classes) < 1:
            raise ValueError(f"RegNet: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        stem_type = SimpleStemIN if stem_type is None else stem_type
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        block_type = ResBottleneckBlock if block_type is None else block_type
        activation = nn.ReLU if activation is None else activation
        self.stem = stem_type(3, stem_width, norm_layer, activation)
        current = stem_width
        stages = []
        for i, (width_out, stride, depth, group_width, mult) in enumerate(
                block_params._get_expanded_params()):
            stages.append((f"block{i + 1}", AnyStage(
                current, width_out, stride, depth, block_type, norm_layer, activation,
                group_width, mult, block_params.se_ratio, stage_index=i + 1)))
            current = width_out
        self.trunk_output = nn.Sequential(OrderedDict(stages))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(current, self.num_classes)
        for m in self.modules():  # torchvision's ResNet-style initialisation
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        check_image("RegNet", x)
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(x.flatten(1))


_PARAMS = {  # torchvision's from_init_params arguments of each variant
    "regnet_y_400mf": dict(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8, se_ratio=0.25),
    "regnet_y_800mf": dict(depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16, se_ratio=0.25),
    "regnet_y_1_6gf": dict(depth=27, w_0=48, w_a=20.71, w_m=2.65, group_width=24, se_ratio=0.25),
    "regnet_y_3_2gf": dict(depth=21, w_0=80, w_a=42.63, w_m=2.66, group_width=24, se_ratio=0.25),
    "regnet_y_8gf": dict(depth=17, w_0=192, w_a=76.82, w_m=2.19, group_width=56, se_ratio=0.25),
    "regnet_y_16gf": dict(depth=18, w_0=200, w_a=106.23, w_m=2.48, group_width=112,
                          se_ratio=0.25),
    "regnet_y_32gf": dict(depth=20, w_0=232, w_a=115.89, w_m=2.53, group_width=232,
                          se_ratio=0.25),
    "regnet_y_128gf": dict(depth=27, w_0=456, w_a=160.83, w_m=2.52, group_width=264,
                           se_ratio=0.25),
    "regnet_x_400mf": dict(depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16),
    "regnet_x_800mf": dict(depth=16, w_0=56, w_a=35.73, w_m=2.28, group_width=16),
    "regnet_x_1_6gf": dict(depth=18, w_0=80, w_a=34.01, w_m=2.25, group_width=24),
    "regnet_x_3_2gf": dict(depth=25, w_0=88, w_a=26.31, w_m=2.25, group_width=48),
    "regnet_x_8gf": dict(depth=23, w_0=80, w_a=49.56, w_m=2.88, group_width=120),
    "regnet_x_16gf": dict(depth=22, w_0=216, w_a=55.59, w_m=2.1, group_width=128),
    "regnet_x_32gf": dict(depth=23, w_0=320, w_a=69.86, w_m=2.0, group_width=168),
}

_MODEL_KWARGS = ("num_classes", "stem_width", "stem_type", "block_type", "norm_layer", "activation")


def _regnet(arch, weights, num_classes, kwargs):
    """As torchvision's builders: the variant's block parameters are fixed; ``kwargs`` are
    RegNet's (``stem_width``, ``norm_layer``, ``activation``, ...). torchvision also hands
    them to BlockParams.from_init_params, where one of its own names collides (TypeError)."""
    unknown = sorted(set(kwargs) - set(_MODEL_KWARGS) - {"num_classes"})
    if unknown:
        raise TypeError(f"{arch}() got unexpected keyword arguments: {', '.join(unknown)}")
    norm_layer = kwargs.pop("norm_layer", partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1))
    model = RegNet(BlockParams.from_init_params(**_PARAMS[arch]), num_classes=num_classes,
                   norm_layer=norm_layer, **kwargs)
    return _build(arch, model, weights)


def regnet_y_400mf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_400mf", weights, num_classes, kwargs)


def regnet_y_800mf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_800mf", weights, num_classes, kwargs)


def regnet_y_1_6gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_1_6gf", weights, num_classes, kwargs)


def regnet_y_3_2gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_3_2gf", weights, num_classes, kwargs)


def regnet_y_8gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_8gf", weights, num_classes, kwargs)


def regnet_y_16gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_16gf", weights, num_classes, kwargs)


def regnet_y_32gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_32gf", weights, num_classes, kwargs)


def regnet_y_128gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_y_128gf", weights, num_classes, kwargs)


def regnet_x_400mf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_x_400mf", weights, num_classes, kwargs)


def regnet_x_800mf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_x_800mf", weights, num_classes, kwargs)


def regnet_x_1_6gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_x_1_6gf", weights, num_classes, kwargs)


def regnet_x_3_2gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_x_3_2gf", weights, num_classes, kwargs)


def regnet_x_8gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_x_8gf", weights, num_classes, kwargs)


def regnet_x_16gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_x_16gf", weights, num_classes, kwargs)


def regnet_x_32gf(weights=None, num_classes=1000, **kwargs):
    return _regnet("regnet_x_32gf", weights, num_classes, kwargs)


def _document():
    from .resnet import _document as doc

    for name in _PARAMS:
        kind, size = name.split("_", 2)[1], name.split("_", 2)[2]
        doc(globals()[name], f"RegNet{kind.upper()}-{size.replace('_', '.').upper()}")


_document()
