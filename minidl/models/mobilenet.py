"""MobileNetV2 (Sandler et al., 2018) and MobileNetV3 small/large (Howard et al., 2019) in
torchvision's layout: inverted residuals with depthwise 3x3/5x5 convs, ReLU6 (V2), hardswish
and squeeze-excitation with a hard sigmoid (V3). MobileNetV3's BatchNorms use eps=0.001,
momentum=0.01 as torchvision's."""
from __future__ import annotations

from functools import partial

from .. import nn
from ._blocks import Conv2dNormActivation, SqueezeExcitation, init_mobile, make_divisible
from .resnet import _build

__all__ = ["MobileNetV2", "MobileNetV3", "InvertedResidual", "mobilenet_v2",
           "mobilenet_v3_large", "mobilenet_v3_small"]


def _init_mobile(model):
    """torchvision's MobileNet initialisation, with N(0, 0.01) linears."""
    init_mobile(model, lambda m: nn.init.normal_(m.weight, 0, 0.01))


def _check_classes(name, num_classes):
    if int(num_classes) < 1:
        raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


class _V2Block(nn.Module):
    """MobileNetV2's inverted residual: 1x1 expand (ReLU6), depthwise 3x3 (ReLU6), 1x1 project."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, 1, activation_layer=nn.ReLU6))
        layers += [Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden,
                                        activation_layer=nn.ReLU6),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    classifier_key = "classifier.1"

    def __init__(self, num_classes=1000, width_mult=1.0, round_nearest=8, dropout=0.2):
        super().__init__()
        self.num_classes = _check_classes("MobileNetV2", num_classes)
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                   [6, 160, 3, 2], [6, 320, 1, 1]]
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [Conv2dNormActivation(3, input_channel, stride=2, activation_layer=nn.ReLU6)]
        for t, c, n, s in setting:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(_V2Block(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, 1,
                                             activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout),
                                        nn.Linear(self.last_channel, self.num_classes))
        _init_mobile(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: optional 1x1 expand, depthwise kxk, optional squeeze-excitation
    (hard-sigmoid gate), 1x1 project; the shortcut when the shape is kept."""

    def __init__(self, cnf, norm_layer):
        super().__init__()
        inp, kernel, exp, out, use_se, act, stride, dilation = cnf
        if stride not in (1, 2):
            raise ValueError("illegal stride value")
        self.use_res_connect = stride == 1 and inp == out
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        layers = []
        if exp != inp:
            layers.append(Conv2dNormActivation(inp, exp, 1, norm_layer=norm_layer,
                                               activation_layer=activation))
        layers.append(Conv2dNormActivation(exp, exp, kernel, stride=1 if dilation > 1 else stride,
                                           dilation=dilation, groups=exp, norm_layer=norm_layer,
                                           activation_layer=activation))
        if use_se:
            layers.append(SqueezeExcitation(exp, make_divisible(exp // 4, 8),
                                            scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(exp, out, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_res_connect else out


def _v3_config(arch, width_mult=1.0, reduced_tail=False, dilated=False):
    """(input, kernel, expanded, out, use_se, activation, stride, dilation) rows and the last
    channel, as torchvision's _mobilenet_v3_conf: every width times ``width_mult`` (rounded to
    multiples of 8); ``reduced_tail`` halves the last stage's widths, ``dilated`` dilates it
    (stride 1) instead of striding."""
    adj = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    r = 2 if reduced_tail else 1
    d = 2 if dilated else 1
    if arch == "mobilenet_v3_large":
        rows = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2),
                (24, 3, 72, 24, False, "RE", 1), (24, 5, 72, 40, True, "RE", 2),
                (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
                (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
                (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
                (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
                (112, 5, 672, 160 // r, True, "HS", 2, d),
                (160 // r, 5, 960 // r, 160 // r, True, "HS", 1, d),
                (160 // r, 5, 960 // r, 160 // r, True, "HS", 1, d)]
        last_channel = 1280 // r
    else:
        rows = [(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2),
                (24, 3, 88, 24, False, "RE", 1), (24, 5, 96, 40, True, "HS", 2),
                (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
                (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1),
                (48, 5, 288, 96 // r, True, "HS", 2, d),
                (96 // r, 5, 576 // r, 96 // r, True, "HS", 1, d),
                (96 // r, 5, 576 // r, 96 // r, True, "HS", 1, d)]
        last_channel = 1024 // r
    rows = [row if len(row) == 8 else row + (1,) for row in rows]
    setting = [(adj(i), k, adj(e), adj(o), se, a, s, dil) for i, k, e, o, se, a, s, dil in rows]
    return setting, adj(last_channel)


def _v3_split(kwargs):
    """torchvision's builders send width_mult, reduced_tail and dilated to the config."""
    return {k: kwargs.pop(k) for k in ("width_mult", "reduced_tail", "dilated") if k in kwargs}


class MobileNetV3(nn.Module):
    classifier_key = "classifier.3"

    def __init__(self, inverted_residual_setting, last_channel, num_classes=1000, dropout=0.2):
        super().__init__()
        if not inverted_residual_setting:
            raise ValueError("The inverted_residual_setting should not be empty")
        self.num_classes = _check_classes("MobileNetV3", num_classes)
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        layers = [Conv2dNormActivation(3, inverted_residual_setting[0][0], 3, stride=2,
                                       norm_layer=norm_layer, activation_layer=nn.Hardswish)]
        layers += [InvertedResidual(cnf, norm_layer) for cnf in inverted_residual_setting]
        last_in = inverted_residual_setting[-1][3]
        last_out = 6 * last_in
        layers.append(Conv2dNormActivation(last_in, last_out, 1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last_out, last_channel), nn.Hardswish(),
                                        nn.Dropout(p=dropout),
                                        nn.Linear(last_channel, self.num_classes))
        _init_mobile(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def mobilenet_v2(weights=None, num_classes=1000, **kwargs):
    """MobileNetV2 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _build("mobilenet_v2", MobileNetV2(num_classes=num_classes, **kwargs), weights)


def mobilenet_v3_large(weights=None, num_classes=1000, **kwargs):
    """MobileNetV3-Large with torchvision's names; ``weights`` as for ``resnet50``;
    ``width_mult``, ``reduced_tail``, ``dilated`` as torchvision's."""
    setting, last = _v3_config("mobilenet_v3_large", **_v3_split(kwargs))
    return _build("mobilenet_v3_large", MobileNetV3(setting, last, num_classes, **kwargs), weights)


def mobilenet_v3_small(weights=None, num_classes=1000, **kwargs):
    """MobileNetV3-Small with torchvision's names; ``weights`` as for ``resnet50``;
    ``width_mult``, ``reduced_tail``, ``dilated`` as torchvision's."""
    setting, last = _v3_config("mobilenet_v3_small", **_v3_split(kwargs))
    return _build("mobilenet_v3_small", MobileNetV3(setting, last, num_classes, **kwargs), weights)
