"""The model zoo (minidl.models): torchvision's architectures with torchvision's state_dict
layout, so converted torchvision checkpoints load by name.

torchvision is not a dependency, so each family's reference is a twin built here from
torch.nn primitives with torchvision's module names. The twins are pinned to torchvision by its
published parameter counts (the ``num_params`` of each weights enum); minidl's models are
pinned to the twins by state_dict names and shapes, and by forward (and one backward) parity
on the same weights in float64.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import minidl
from minidl.models import get_model, get_model_builder, get_model_weights, list_models
from minidl.models.convert import main as convert_main
from minidl.models.weights import WEIGHTS

torch = pytest.importorskip("torch", reason="the torch twins need torch")
tnn = torch.nn

# torchvision's published parameter counts (the num_params of each *_Weights enum)
PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336, "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
    "mobilenet_v2": 3_504_872, "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856,
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960,
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
    "alexnet": 61_100_840, "squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496,
    "densenet121": 7_978_856, "densenet161": 28_681_000, "densenet169": 14_149_480,
    "densenet201": 20_013_928, "convnext_tiny": 28_589_128, "convnext_small": 50_223_688,
    "convnext_base": 88_591_464, "convnext_large": 197_767_336,
    "shufflenet_v2_x0_5": 1_366_792, "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624, "shufflenet_v2_x2_0": 7_393_996,
    "vit_b_16": 86_567_656, "vit_b_32": 88_224_232, "vit_l_16": 304_326_632,
    "vit_l_32": 306_535_400, "vit_h_14": 632_045_800,
}


# ---- torch twins (torchvision's module names, written from torch.nn primitives) ------------
class _TBasic(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _TBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm=tnn.BatchNorm2d):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        self.conv1 = tnn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = tnn.Conv2d(width, width, 3, stride, dilation, dilation=dilation, groups=groups,
                                bias=False)
        self.bn2 = norm(width)
        self.conv3 = tnn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _TResNet(tnn.Module):
    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64,
                 dilate=(False, False, False), norm=tnn.BatchNorm2d):
        super().__init__()
        self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
        self.dilation, self.norm = 1, norm
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = norm(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, dilate[2])
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample = None
        prev = self.dilation
        if dilate:
            self.dilation, stride = self.dilation * stride, 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                self.norm(planes * block.expansion))
        kw = dict(groups=self.groups, base_width=self.base_width)
        if block is _TBottleneck:
            kw["norm"] = self.norm
        layers = [block(self.inplanes, planes, stride, downsample, **kw,
                        **({"dilation": prev} if block is _TBottleneck else {}))]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **kw,
                         **({"dilation": self.dilation} if block is _TBottleneck else {}))
                   for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _div(v, d=8):
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def _cna(cin, cout, k=3, stride=1, groups=1, norm=tnn.BatchNorm2d, act=tnn.ReLU, dilation=1,
         padding=None, bias=None):
    """torchvision.ops.Conv2dNormActivation as a plain Sequential."""
    padding = (k - 1) // 2 * dilation if padding is None else padding
    layers = [tnn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups,
                         bias=norm is None if bias is None else bias)]
    if norm is not None:
        layers.append(norm(cout))
    if act is not None:
        layers.append(act())
    return tnn.Sequential(*layers)


class _TSE(tnn.Module):
    def __init__(self, cin, csq, act=tnn.ReLU, scale=tnn.Sigmoid):
        super().__init__()
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = tnn.Conv2d(cin, csq, 1), tnn.Conv2d(csq, cin, 1)
        self.activation, self.scale_activation = act(), scale()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class _TStochasticDepth(tnn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype).bernoulli_(keep)
        return x * noise / keep


class _TV2Block(tnn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden = int(round(inp * t))
        self.res = stride == 1 and inp == oup
        layers = [] if t == 1 else [_cna(inp, hidden, 1, act=tnn.ReLU6)]
        layers += [_cna(hidden, hidden, 3, stride, hidden, act=tnn.ReLU6),
                   tnn.Conv2d(hidden, oup, 1, bias=False), tnn.BatchNorm2d(oup)]
        self.conv = tnn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class _THead(tnn.Module):
    """features -> global average pool -> flatten -> classifier."""

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class _TMobileNetV2(_THead):
    def __init__(self, nc=1000):
        super().__init__()
        cin, feats = 32, [_cna(3, 32, 3, 2, act=tnn.ReLU6)]
        for t, c, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                           [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]:
            for i in range(n):
                feats.append(_TV2Block(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(_cna(cin, 1280, 1, act=tnn.ReLU6))
        self.features = tnn.Sequential(*feats)
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(1280, nc))


class _TV3Block(tnn.Module):
    def __init__(self, inp, k, exp, out, se, act, stride):
        super().__init__()
        norm = lambda c: tnn.BatchNorm2d(c, eps=0.001, momentum=0.01)  # noqa: E731
        act = tnn.Hardswish if act == "HS" else tnn.ReLU
        self.res = stride == 1 and inp == out
        layers = [] if exp == inp else [_cna(inp, exp, 1, norm=norm, act=act)]
        layers.append(_cna(exp, exp, k, stride, exp, norm=norm, act=act))
        if se:
            layers.append(_TSE(exp, _div(exp // 4), scale=tnn.Hardsigmoid))
        layers.append(_cna(exp, out, 1, norm=norm, act=None))
        self.block = tnn.Sequential(*layers)

    def forward(self, x):
        return self.block(x) + x if self.res else self.block(x)


_V3 = {
    "mobilenet_v3_large": ([(16, 3, 16, 16, 0, "RE", 1), (16, 3, 64, 24, 0, "RE", 2),
                            (24, 3, 72, 24, 0, "RE", 1), (24, 5, 72, 40, 1, "RE", 2),
                            (40, 5, 120, 40, 1, "RE", 1), (40, 5, 120, 40, 1, "RE", 1),
                            (40, 3, 240, 80, 0, "HS", 2), (80, 3, 200, 80, 0, "HS", 1),
                            (80, 3, 184, 80, 0, "HS", 1), (80, 3, 184, 80, 0, "HS", 1),
                            (80, 3, 480, 112, 1, "HS", 1), (112, 3, 672, 112, 1, "HS", 1),
                            (112, 5, 672, 160, 1, "HS", 2), (160, 5, 960, 160, 1, "HS", 1),
                            (160, 5, 960, 160, 1, "HS", 1)], 1280),
    "mobilenet_v3_small": ([(16, 3, 16, 16, 1, "RE", 2), (16, 3, 72, 24, 0, "RE", 2),
                            (24, 3, 88, 24, 0, "RE", 1), (24, 5, 96, 40, 1, "HS", 2),
                            (40, 5, 240, 40, 1, "HS", 1), (40, 5, 240, 40, 1, "HS", 1),
                            (40, 5, 120, 48, 1, "HS", 1), (48, 5, 144, 48, 1, "HS", 1),
                            (48, 5, 288, 96, 1, "HS", 2), (96, 5, 576, 96, 1, "HS", 1),
                            (96, 5, 576, 96, 1, "HS", 1)], 1024),
}


class _TMobileNetV3(_THead):
    def __init__(self, arch, nc=1000, width_mult=1.0):
        super().__init__()
        rows, last = _V3[arch]
        rows = [(_div(i * width_mult), k, _div(e * width_mult), _div(o * width_mult), se, a, s)
                for i, k, e, o, se, a, s in rows]
        last = _div(last * width_mult)
        norm = lambda c: tnn.BatchNorm2d(c, eps=0.001, momentum=0.01)  # noqa: E731
        feats = [_cna(3, rows[0][0], 3, 2, norm=norm, act=tnn.Hardswish)]
        feats += [_TV3Block(*r) for r in rows]
        feats.append(_cna(rows[-1][3], 6 * rows[-1][3], 1, norm=norm, act=tnn.Hardswish))
        self.features = tnn.Sequential(*feats)
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.classifier = tnn.Sequential(tnn.Linear(6 * rows[-1][3], last), tnn.Hardswish(),
                                         tnn.Dropout(0.2), tnn.Linear(last, nc))


class _TMBConv(tnn.Module):
    def __init__(self, t, k, stride, cin, cout, sd, norm=tnn.BatchNorm2d):
        super().__init__()
        exp = _div(cin * t)
        self.res = stride == 1 and cin == cout
        layers = [] if exp == cin else [_cna(cin, exp, 1, norm=norm, act=tnn.SiLU)]
        layers += [_cna(exp, exp, k, stride, exp, norm=norm, act=tnn.SiLU),
                   _TSE(exp, max(1, cin // 4), act=tnn.SiLU),
                   _cna(exp, cout, 1, norm=norm, act=None)]
        self.block = tnn.Sequential(*layers)
        self.stochastic_depth = _TStochasticDepth(sd)

    def forward(self, x):
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.res else out


class _TEfficientNet(_THead):
    def __init__(self, width, depth, dropout, nc=1000, tf_bn=False):
        super().__init__()
        import math

        rows = [(t, k, s, _div(i * width), _div(o * width), int(math.ceil(n * depth)))
                for t, k, s, i, o, n in [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2),
                                         (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                                         (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
                                         (6, 3, 1, 192, 320, 1)]]
        total, bid = sum(r[-1] for r in rows), 0
        norm = (lambda c: tnn.BatchNorm2d(c, eps=0.001, momentum=0.01)) if tf_bn else tnn.BatchNorm2d
        feats = [_cna(3, rows[0][3], 3, 2, norm=norm, act=tnn.SiLU)]
        for t, k, s, i, o, n in rows:
            stage = []
            for j in range(n):
                stage.append(_TMBConv(t, k, s if j == 0 else 1, i if j == 0 else o, o,
                                      0.2 * bid / total, norm))
                bid += 1
            feats.append(tnn.Sequential(*stage))
        feats.append(_cna(rows[-1][4], 4 * rows[-1][4], 1, norm=norm, act=tnn.SiLU))
        self.features = tnn.Sequential(*feats)
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.classifier = tnn.Sequential(tnn.Dropout(dropout), tnn.Linear(4 * rows[-1][4], nc))


_VGG = {"11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        "13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        "16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
               512, 512, 512, "M"],
        "19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
               512, 512, 512, 512, "M"]}


class _TVGG(_THead):
    def __init__(self, depth, bn, nc=1000):
        super().__init__()
        layers, cin = [], 3
        for v in _VGG[depth]:
            if v == "M":
                layers.append(tnn.MaxPool2d(2, 2))
                continue
            layers += [tnn.Conv2d(cin, v, 3, padding=1)] + ([tnn.BatchNorm2d(v)] if bn else [])
            layers.append(tnn.ReLU(inplace=True))
            cin = v
        self.features = tnn.Sequential(*layers)
        self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = tnn.Sequential(
            tnn.Linear(25088, 4096), tnn.ReLU(True), tnn.Dropout(), tnn.Linear(4096, 4096),
            tnn.ReLU(True), tnn.Dropout(), tnn.Linear(4096, nc))


class _TAlexNet(_THead):
    def __init__(self, nc=1000):
        super().__init__()
        self.features = tnn.Sequential(
            tnn.Conv2d(3, 64, 11, 4, 2), tnn.ReLU(True), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(64, 192, 5, padding=2), tnn.ReLU(True), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(True),
            tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(True),
            tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(True), tnn.MaxPool2d(3, 2))
        self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
        self.classifier = tnn.Sequential(
            tnn.Dropout(), tnn.Linear(9216, 4096), tnn.ReLU(True), tnn.Dropout(),
            tnn.Linear(4096, 4096), tnn.ReLU(True), tnn.Linear(4096, nc))


class _TFire(tnn.Module):
    def __init__(self, cin, sq, e1, e3):
        super().__init__()
        self.squeeze, self.squeeze_activation = tnn.Conv2d(cin, sq, 1), tnn.ReLU(True)
        self.expand1x1, self.expand1x1_activation = tnn.Conv2d(sq, e1, 1), tnn.ReLU(True)
        self.expand3x3, self.expand3x3_activation = tnn.Conv2d(sq, e3, 3, padding=1), tnn.ReLU(True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class _TSqueezeNet(tnn.Module):
    def __init__(self, version, nc=1000):
        super().__init__()
        P = lambda: tnn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        F_ = _TFire
        if version == "1_0":
            self.features = tnn.Sequential(
                tnn.Conv2d(3, 96, 7, 2), tnn.ReLU(True), P(), F_(96, 16, 64, 64),
                F_(128, 16, 64, 64), F_(128, 32, 128, 128), P(), F_(256, 32, 128, 128),
                F_(256, 48, 192, 192), F_(384, 48, 192, 192), F_(384, 64, 256, 256), P(),
                F_(512, 64, 256, 256))
        else:
            self.features = tnn.Sequential(
                tnn.Conv2d(3, 64, 3, 2), tnn.ReLU(True), P(), F_(64, 16, 64, 64),
                F_(128, 16, 64, 64), P(), F_(128, 32, 128, 128), F_(256, 32, 128, 128), P(),
                F_(256, 48, 192, 192), F_(384, 48, 192, 192), F_(384, 64, 256, 256),
                F_(512, 64, 256, 256))
        self.classifier = tnn.Sequential(tnn.Dropout(), tnn.Conv2d(512, nc, 1), tnn.ReLU(True),
                                         tnn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class _TDenseLayer(tnn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1, self.relu1 = tnn.BatchNorm2d(cin), tnn.ReLU(True)
        self.conv1 = tnn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = tnn.BatchNorm2d(bn_size * growth), tnn.ReLU(True)
        self.conv2 = tnn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, feats):
        x = torch.cat(feats, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _TDenseBlock(tnn.ModuleDict):
    def __init__(self, n, cin, bn_size, growth):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", _TDenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x):
        feats = [x]
        for layer in self.values():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class _TDenseNet(tnn.Module):
    def __init__(self, growth, blocks, init, nc=1000):
        super().__init__()
        from collections import OrderedDict

        self.features = tnn.Sequential(OrderedDict([
            ("conv0", tnn.Conv2d(3, init, 7, 2, 3, bias=False)), ("norm0", tnn.BatchNorm2d(init)),
            ("relu0", tnn.ReLU(True)), ("pool0", tnn.MaxPool2d(3, 2, 1))]))
        c = init
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", _TDenseBlock(n, c, 4, growth))
            c += n * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", tnn.Sequential(OrderedDict([
                    ("norm", tnn.BatchNorm2d(c)), ("relu", tnn.ReLU(True)),
                    ("conv", tnn.Conv2d(c, c // 2, 1, bias=False)), ("pool", tnn.AvgPool2d(2, 2))])))
                c //= 2
        self.features.add_module("norm5", tnn.BatchNorm2d(c))
        self.classifier = tnn.Linear(c, nc)

    def forward(self, x):
        out = torch.relu(self.features(x))
        return self.classifier(torch.flatten(tnn.functional.adaptive_avg_pool2d(out, 1), 1))


class _TLayerNorm2d(tnn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _TPermute(tnn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class _TCNBlock(tnn.Module):
    def __init__(self, dim, sd):
        super().__init__()
        self.block = tnn.Sequential(
            tnn.Conv2d(dim, dim, 7, padding=3, groups=dim), _TPermute([0, 2, 3, 1]),
            tnn.LayerNorm(dim, eps=1e-6), tnn.Linear(dim, 4 * dim), tnn.GELU(),
            tnn.Linear(4 * dim, dim), _TPermute([0, 3, 1, 2]))
        self.layer_scale = tnn.Parameter(torch.ones(dim, 1, 1) * 1e-6)
        self.stochastic_depth = _TStochasticDepth(sd)

    def forward(self, x):
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class _TConvNeXt(tnn.Module):
    def __init__(self, depths, sd, nc=1000, dims=(96, 192, 384, 768)):
        super().__init__()
        ln = lambda c: _TLayerNorm2d(c, eps=1e-6)  # noqa: E731
        feats = [_cna(3, dims[0], 4, 4, norm=ln, act=None, padding=0, bias=True)]
        total, bid = sum(depths), 0
        for i, n in enumerate(depths):
            stage = []
            for _ in range(n):
                stage.append(_TCNBlock(dims[i], sd * bid / (total - 1.0)))
                bid += 1
            feats.append(tnn.Sequential(*stage))
            if i < 3:
                feats.append(tnn.Sequential(ln(dims[i]), tnn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        self.features = tnn.Sequential(*feats)
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.classifier = tnn.Sequential(ln(dims[3]), tnn.Flatten(1), tnn.Linear(dims[3], nc))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


class _TShuffleUnit(tnn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride, bf = stride, oup // 2
        self.branch1 = tnn.Sequential()
        if stride > 1:
            self.branch1 = tnn.Sequential(
                tnn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), tnn.BatchNorm2d(inp),
                tnn.Conv2d(inp, bf, 1, bias=False), tnn.BatchNorm2d(bf), tnn.ReLU(True))
        self.branch2 = tnn.Sequential(
            tnn.Conv2d(inp if stride > 1 else bf, bf, 1, bias=False), tnn.BatchNorm2d(bf),
            tnn.ReLU(True), tnn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False),
            tnn.BatchNorm2d(bf), tnn.Conv2d(bf, bf, 1, bias=False), tnn.BatchNorm2d(bf),
            tnn.ReLU(True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)


class _TShuffleNetV2(tnn.Module):
    def __init__(self, ch, nc=1000):
        super().__init__()
        self.conv1 = tnn.Sequential(tnn.Conv2d(3, ch[0], 3, 2, 1, bias=False),
                                    tnn.BatchNorm2d(ch[0]), tnn.ReLU(True))
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        inp = ch[0]
        for name, reps, out in zip(("stage2", "stage3", "stage4"), [4, 8, 4], ch[1:]):
            setattr(self, name, tnn.Sequential(
                _TShuffleUnit(inp, out, 2), *[_TShuffleUnit(out, out, 1) for _ in range(reps - 1)]))
            inp = out
        self.conv5 = tnn.Sequential(tnn.Conv2d(inp, ch[-1], 1, bias=False),
                                    tnn.BatchNorm2d(ch[-1]), tnn.ReLU(True))
        self.fc = tnn.Linear(ch[-1], nc)

    def forward(self, x):
        x = self.conv5(self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x))))))
        return self.fc(x.mean([2, 3]))


class _TEncoderBlock(tnn.Module):
    def __init__(self, heads, hidden, mlp):
        super().__init__()
        self.ln_1 = tnn.LayerNorm(hidden, eps=1e-6)
        self.self_attention = tnn.MultiheadAttention(hidden, heads, batch_first=True)
        self.dropout = tnn.Dropout(0.0)
        self.ln_2 = tnn.LayerNorm(hidden, eps=1e-6)
        self.mlp = tnn.Sequential(tnn.Linear(hidden, mlp), tnn.GELU(), tnn.Dropout(0.0),
                                  tnn.Linear(mlp, hidden), tnn.Dropout(0.0))

    def forward(self, inp):
        x = self.ln_1(inp)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + inp
        return x + self.mlp(self.ln_2(x))


class _TEncoder(tnn.Module):
    def __init__(self, seq, layers, heads, hidden, mlp):
        super().__init__()
        from collections import OrderedDict

        self.pos_embedding = tnn.Parameter(torch.empty(1, seq, hidden).normal_(std=0.02))
        self.dropout = tnn.Dropout(0.0)
        self.layers = tnn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", _TEncoderBlock(heads, hidden, mlp)) for i in range(layers)))
        self.ln = tnn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x):
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class _TViT(tnn.Module):
    def __init__(self, image, patch, layers, heads, hidden, mlp, nc=1000):
        super().__init__()
        from collections import OrderedDict

        self.hidden = hidden
        self.conv_proj = tnn.Conv2d(3, hidden, patch, patch)
        self.class_token = tnn.Parameter(torch.zeros(1, 1, hidden))
        self.encoder = _TEncoder((image // patch) ** 2 + 1, layers, heads, hidden, mlp)
        self.heads = tnn.Sequential(OrderedDict([("head", tnn.Linear(hidden, nc))]))

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.hidden, -1).permute(0, 2, 1)
        x = self.encoder(torch.cat([self.class_token.expand(n, -1, -1), x], dim=1))
        return self.heads(x[:, 0])


# RegNet: torchvision's quantised-linear block rule, computed with torch (float32) as it does
_TREGNET = {
    "regnet_y_400mf": (16, 48, 27.89, 2.09, 8, 0.25), "regnet_y_800mf": (14, 56, 38.84, 2.4, 16, 0.25),
    "regnet_y_1_6gf": (27, 48, 20.71, 2.65, 24, 0.25), "regnet_y_3_2gf": (21, 80, 42.63, 2.66, 24, 0.25),
    "regnet_y_8gf": (17, 192, 76.82, 2.19, 56, 0.25), "regnet_y_16gf": (18, 200, 106.23, 2.48, 112, 0.25),
    "regnet_y_32gf": (20, 232, 115.89, 2.53, 232, 0.25),
    "regnet_y_128gf": (27, 456, 160.83, 2.52, 264, 0.25),
    "regnet_x_400mf": (22, 24, 24.48, 2.54, 16, None), "regnet_x_800mf": (16, 56, 35.73, 2.28, 16, None),
    "regnet_x_1_6gf": (18, 80, 34.01, 2.25, 24, None), "regnet_x_3_2gf": (25, 88, 26.31, 2.25, 48, None),
    "regnet_x_8gf": (23, 80, 49.56, 2.88, 120, None), "regnet_x_16gf": (22, 216, 55.59, 2.1, 128, None),
    "regnet_x_32gf": (23, 320, 69.86, 2.0, 168, None),
}


def _tregnet_stages(depth, w_0, w_a, w_m, group_width):
    import math

    cont = torch.arange(depth, device="cpu") * w_a + w_0  # real numbers under torch.device("meta")
    cap = torch.round(torch.log(cont / w_0) / math.log(w_m))
    widths = (torch.round(torch.divide(w_0 * torch.pow(w_m, cap), 8)) * 8).int().tolist()
    stages = []  # [width, depth] runs of equal width
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        g = min(group_width, w)
        out.append((_div(w, g), d, g))
    return out


class _TRegBlock(tnn.Module):
    def __init__(self, win, wout, stride, gw, se):
        super().__init__()
        from collections import OrderedDict

        self.proj = _cna(win, wout, 1, stride, act=None) if win != wout or stride != 1 else None
        layers = OrderedDict(a=_cna(win, wout, 1), b=_cna(wout, wout, 3, stride, wout // gw))
        if se:
            layers["se"] = _TSE(wout, int(round(se * win)))
        layers["c"] = _cna(wout, wout, 1, act=None)
        self.f = tnn.Sequential(layers)
        self.activation = tnn.ReLU(inplace=True)

    def forward(self, x):
        return self.activation((x if self.proj is None else self.proj(x)) + self.f(x))


class _TRegNet(tnn.Module):
    def __init__(self, arch, nc=1000):
        super().__init__()
        from collections import OrderedDict

        depth, w_0, w_a, w_m, gw, se = _TREGNET[arch]
        self.stem = _cna(3, 32, 3, 2)
        blocks, cur = [], 32
        for i, (w, d, g) in enumerate(_tregnet_stages(depth, w_0, w_a, w_m, gw)):
            stage = tnn.Sequential()
            for j in range(d):
                stage.add_module(f"block{i + 1}-{j}", _TRegBlock(cur if j == 0 else w, w,
                                                                 2 if j == 0 else 1, g, se))
            blocks.append((f"block{i + 1}", stage))
            cur = w
        self.trunk_output = tnn.Sequential(OrderedDict(blocks))
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(cur, nc)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk_output(self.stem(x))), 1))


class _TMnasBlock(tnn.Module):
    def __init__(self, cin, cout, k, stride, t, mom):
        super().__init__()
        mid = cin * t
        self.res = cin == cout and stride == 1
        self.layers = tnn.Sequential(
            tnn.Conv2d(cin, mid, 1, bias=False), tnn.BatchNorm2d(mid, momentum=mom), tnn.ReLU(True),
            tnn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
            tnn.BatchNorm2d(mid, momentum=mom), tnn.ReLU(True),
            tnn.Conv2d(mid, cout, 1, bias=False), tnn.BatchNorm2d(cout, momentum=mom))

    def forward(self, x):
        return self.layers(x) + x if self.res else self.layers(x)


class _TMNASNet(tnn.Module):
    def __init__(self, alpha, nc=1000):
        super().__init__()
        mom = 1 - 0.9997
        d = [_div(c * alpha) for c in (32, 16, 24, 40, 80, 96, 192, 320)]

        def stack(i, k, s, t, n):
            return tnn.Sequential(*[_TMnasBlock(d[i] if j == 0 else d[i + 1], d[i + 1], k,
                                                s if j == 0 else 1, t, mom) for j in range(n)])

        bn = lambda c: tnn.BatchNorm2d(c, momentum=mom)  # noqa: E731
        self.layers = tnn.Sequential(
            tnn.Conv2d(3, d[0], 3, 2, 1, bias=False), bn(d[0]), tnn.ReLU(True),
            tnn.Conv2d(d[0], d[0], 3, 1, 1, groups=d[0], bias=False), bn(d[0]), tnn.ReLU(True),
            tnn.Conv2d(d[0], d[1], 1, bias=False), bn(d[1]),
            stack(1, 3, 2, 3, 3), stack(2, 5, 2, 3, 3), stack(3, 5, 2, 6, 3), stack(4, 3, 1, 6, 2),
            stack(5, 5, 2, 6, 4), stack(6, 3, 1, 6, 1),
            tnn.Conv2d(d[7], 1280, 1, bias=False), bn(1280), tnn.ReLU(True))
        self.classifier = tnn.Sequential(tnn.Dropout(0.2, inplace=True), tnn.Linear(1280, nc))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


class _TBasicConv(tnn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = tnn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = tnn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _t_transform_input(x):
    return torch.cat([x[:, c:c + 1] * (s / 0.5) + (m - 0.5) / 0.5
                      for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))], 1)


class _TGInception(tnn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        B = _TBasicConv
        self.branch1 = B(cin, c1, kernel_size=1)
        self.branch2 = tnn.Sequential(B(cin, c3r, kernel_size=1), B(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = tnn.Sequential(B(cin, c5r, kernel_size=1), B(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True), B(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class _TGAux(tnn.Module):
    def __init__(self, cin, nc):
        super().__init__()
        self.conv = _TBasicConv(cin, 128, kernel_size=1)
        self.fc1, self.fc2, self.dropout = tnn.Linear(2048, 1024), tnn.Linear(1024, nc), tnn.Dropout(0.7)

    def forward(self, x):
        x = torch.flatten(self.conv(tnn.functional.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class _TGoogLeNet(tnn.Module):
    def __init__(self, nc=1000, aux=False, transform_input=False):
        super().__init__()
        B, I, P = _TBasicConv, _TGInception, lambda k=3: tnn.MaxPool2d(k, 2, ceil_mode=True)  # noqa: E731
        self.aux, self.transform_input = aux, transform_input
        self.conv1 = B(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = P()
        self.conv2 = B(64, 64, kernel_size=1)
        self.conv3 = B(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = P()
        self.inception3a = I(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = I(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = P()
        self.inception4a = I(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = I(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = I(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = I(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = I(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = P(2)
        self.inception5a = I(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = I(832, 384, 192, 384, 48, 128, 128)
        if aux:
            self.aux1, self.aux2 = _TGAux(512, nc), _TGAux(528, nc)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.dropout = tnn.Dropout(0.2)
        self.fc = tnn.Linear(1024, nc)

    def forward(self, x):
        """(logits, aux after inception4a, aux after inception4d) in train mode with aux."""
        if self.transform_input:
            x = _t_transform_input(x)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.inception4a(self.maxpool3(self.inception3b(self.inception3a(x))))
        a1 = self.aux1(x) if self.aux and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        a2 = self.aux2(x) if self.aux and self.training else None
        x = self.inception5b(self.inception5a(self.maxpool4(self.inception4e(x))))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (x, a1, a2) if self.aux and self.training else x


def _tconvs(mod, spec):
    """name -> (cin, cout, kernel, stride, padding) as _TBasicConv children of ``mod``."""
    for name, (cin, cout, k, s, p) in spec.items():
        setattr(mod, name, _TBasicConv(cin, cout, kernel_size=k, stride=s, padding=p))


class _TIncA(tnn.Module):
    def __init__(self, c, pf):
        super().__init__()
        _tconvs(self, {"branch1x1": (c, 64, 1, 1, 0), "branch5x5_1": (c, 48, 1, 1, 0),
                       "branch5x5_2": (48, 64, 5, 1, 2), "branch3x3dbl_1": (c, 64, 1, 1, 0),
                       "branch3x3dbl_2": (64, 96, 3, 1, 1), "branch3x3dbl_3": (96, 96, 3, 1, 1),
                       "branch_pool": (c, pf, 1, 1, 0)})

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(tnn.functional.avg_pool2d(x, 3, 1, 1))], 1)


class _TIncB(tnn.Module):
    def __init__(self, c):
        super().__init__()
        _tconvs(self, {"branch3x3": (c, 384, 3, 2, 0), "branch3x3dbl_1": (c, 64, 1, 1, 0),
                       "branch3x3dbl_2": (64, 96, 3, 1, 1), "branch3x3dbl_3": (96, 96, 3, 2, 0)})

    def forward(self, x):
        return torch.cat([self.branch3x3(x),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          tnn.functional.max_pool2d(x, 3, 2)], 1)


class _TIncC(tnn.Module):
    def __init__(self, c, c7):
        super().__init__()
        h, v = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
        _tconvs(self, {"branch1x1": (c, 192, 1, 1, 0), "branch7x7_1": (c, c7, 1, 1, 0),
                       "branch7x7_2": (c7, c7, *h), "branch7x7_3": (c7, 192, *v),
                       "branch7x7dbl_1": (c, c7, 1, 1, 0), "branch7x7dbl_2": (c7, c7, *v),
                       "branch7x7dbl_3": (c7, c7, *h), "branch7x7dbl_4": (c7, c7, *v),
                       "branch7x7dbl_5": (c7, 192, *h), "branch_pool": (c, 192, 1, 1, 0)})

    def forward(self, x):
        d = self.branch7x7dbl_1(x)
        for i in range(2, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                          d, self.branch_pool(tnn.functional.avg_pool2d(x, 3, 1, 1))], 1)


class _TIncD(tnn.Module):
    def __init__(self, c):
        super().__init__()
        _tconvs(self, {"branch3x3_1": (c, 192, 1, 1, 0), "branch3x3_2": (192, 320, 3, 2, 0),
                       "branch7x7x3_1": (c, 192, 1, 1, 0), "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)),
                       "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)), "branch7x7x3_4": (192, 192, 3, 2, 0)})

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, tnn.functional.max_pool2d(x, 3, 2)], 1)


class _TIncE(tnn.Module):
    def __init__(self, c):
        super().__init__()
        h, v = ((1, 3), 1, (0, 1)), ((3, 1), 1, (1, 0))
        _tconvs(self, {"branch1x1": (c, 320, 1, 1, 0), "branch3x3_1": (c, 384, 1, 1, 0),
                       "branch3x3_2a": (384, 384, *h), "branch3x3_2b": (384, 384, *v),
                       "branch3x3dbl_1": (c, 448, 1, 1, 0), "branch3x3dbl_2": (448, 384, 3, 1, 1),
                       "branch3x3dbl_3a": (384, 384, *h), "branch3x3dbl_3b": (384, 384, *v),
                       "branch_pool": (c, 192, 1, 1, 0)})

    def forward(self, x):
        b = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b), self.branch3x3_2b(b),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
                          self.branch_pool(tnn.functional.avg_pool2d(x, 3, 1, 1))], 1)


class _TIncAux(tnn.Module):
    def __init__(self, c, nc):
        super().__init__()
        _tconvs(self, {"conv0": (c, 128, 1, 1, 0), "conv1": (128, 768, 5, 1, 0)})
        self.fc = tnn.Linear(768, nc)

    def forward(self, x):
        x = self.conv1(self.conv0(tnn.functional.avg_pool2d(x, 5, 3)))
        return self.fc(torch.flatten(tnn.functional.adaptive_avg_pool2d(x, 1), 1))


class _TInception3(tnn.Module):
    def __init__(self, nc=1000, aux=True, transform_input=False):
        super().__init__()
        self.aux, self.transform_input = aux, transform_input
        _tconvs(self, {"Conv2d_1a_3x3": (3, 32, 3, 2, 0), "Conv2d_2a_3x3": (32, 32, 3, 1, 0),
                       "Conv2d_2b_3x3": (32, 64, 3, 1, 1)})
        self.maxpool1 = tnn.MaxPool2d(3, 2)
        _tconvs(self, {"Conv2d_3b_1x1": (64, 80, 1, 1, 0), "Conv2d_4a_3x3": (80, 192, 3, 1, 0)})
        self.maxpool2 = tnn.MaxPool2d(3, 2)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _TIncA(192, 32), _TIncA(256, 64), _TIncA(288, 64)
        self.Mixed_6a = _TIncB(288)
        self.Mixed_6b, self.Mixed_6c = _TIncC(768, 128), _TIncC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _TIncC(768, 160), _TIncC(768, 192)
        if aux:
            self.AuxLogits = _TIncAux(768, nc)
        self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = _TIncD(768), _TIncE(1280), _TIncE(2048)
        self.avgpool, self.dropout = tnn.AdaptiveAvgPool2d(1), tnn.Dropout(0.5)
        self.fc = tnn.Linear(2048, nc)

    def forward(self, x):
        if self.transform_input:
            x = _t_transform_input(x)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = getattr(self, name)(x)
        aux = self.AuxLogits(x) if self.aux and self.training else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))
        return (x, aux) if self.aux and self.training else x


class _TFusedMBConv(tnn.Module):
    def __init__(self, t, k, stride, cin, cout, sd, norm):
        super().__init__()
        exp = _div(cin * t)
        self.res = stride == 1 and cin == cout
        if exp != cin:
            layers = [_cna(cin, exp, k, stride, norm=norm, act=tnn.SiLU), _cna(exp, cout, 1, norm=norm, act=None)]
        else:
            layers = [_cna(cin, cout, k, stride, norm=norm, act=tnn.SiLU)]
        self.block = tnn.Sequential(*layers)
        self.stochastic_depth = _TStochasticDepth(sd)

    def forward(self, x):
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.res else out


_TV2ROWS = {  # (fused, expand, kernel, stride, in, out, layers): torchvision's efficientnet.py
    "s": [(1, 1, 3, 1, 24, 24, 2), (1, 4, 3, 2, 24, 48, 4), (1, 4, 3, 2, 48, 64, 4),
          (0, 4, 3, 2, 64, 128, 6), (0, 6, 3, 1, 128, 160, 9), (0, 6, 3, 2, 160, 256, 15)],
    "m": [(1, 1, 3, 1, 24, 24, 3), (1, 4, 3, 2, 24, 48, 5), (1, 4, 3, 2, 48, 80, 5), (0, 4, 3, 2, 80, 160, 7),
          (0, 6, 3, 1, 160, 176, 14), (0, 6, 3, 2, 176, 304, 18), (0, 6, 3, 1, 304, 512, 5)],
    "l": [(1, 1, 3, 1, 32, 32, 4), (1, 4, 3, 2, 32, 64, 7), (1, 4, 3, 2, 64, 96, 7), (0, 4, 3, 2, 96, 192, 10),
          (0, 6, 3, 1, 192, 224, 19), (0, 6, 3, 2, 224, 384, 25), (0, 6, 3, 1, 384, 640, 7)],
    # a small mix of both block kinds, for the train-mode test
    "tiny": [(1, 1, 3, 1, 24, 24, 2), (1, 4, 3, 2, 24, 32, 2), (0, 4, 3, 2, 32, 48, 2)],
}


class _TEfficientNetV2(_THead):
    def __init__(self, size, dropout, nc=1000):
        super().__init__()
        rows = _TV2ROWS[size]
        norm = lambda c: tnn.BatchNorm2d(c, eps=1e-3)  # noqa: E731
        total, bid = sum(r[-1] for r in rows), 0
        feats = [_cna(3, rows[0][4], 3, 2, norm=norm, act=tnn.SiLU)]
        for fused, t, k, s, i, o, n in rows:
            stage = []
            for j in range(n):
                cls = _TFusedMBConv if fused else _TMBConv
                stage.append(cls(t, k, s if j == 0 else 1, i if j == 0 else o, o, 0.2 * bid / total, norm))
                bid += 1
            feats.append(tnn.Sequential(*stage))
        feats.append(_cna(rows[-1][5], 1280, 1, norm=norm, act=tnn.SiLU))
        self.features = tnn.Sequential(*feats)
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.classifier = tnn.Sequential(tnn.Dropout(dropout), tnn.Linear(1280, nc))


class _TSwinAttention(tnn.Module):
    def __init__(self, dim, window, shift, heads):
        super().__init__()
        self.window, self.shift, self.heads = list(window), list(shift), heads
        self.qkv = tnn.Linear(dim, 3 * dim)
        self.proj = tnn.Linear(dim, dim)
        self.relative_position_bias_table = tnn.Parameter(
            torch.zeros((2 * window[0] - 1) * (2 * window[1] - 1), heads).normal_(std=0.02))
        c = torch.stack(torch.meshgrid(torch.arange(window[0], device="cpu"),
                                       torch.arange(window[1], device="cpu"), indexing="ij")).flatten(1)
        r = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0)
        idx = (r[..., 0] + window[0] - 1) * (2 * window[1] - 1) + r[..., 1] + window[1] - 1
        self.register_buffer("relative_position_index", idx.flatten())

    def forward(self, x):
        B, H, W, C = x.shape
        wh, ww = self.window
        x = tnn.functional.pad(x, (0, 0, 0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))
        _, PH, PW, _ = x.shape
        sh = [0 if wh >= PH else self.shift[0], 0 if ww >= PW else self.shift[1]]
        if sum(sh):
            x = torch.roll(x, (-sh[0], -sh[1]), (1, 2))
        nW, n = (PH // wh) * (PW // ww), wh * ww
        x = x.view(B, PH // wh, wh, PW // ww, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nW, n, C)
        q, k, v = self.qkv(x).reshape(B * nW, n, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * (C // self.heads) ** -0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.to(x.device)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if sum(sh):
            region = torch.zeros(PH, PW, dtype=x.dtype, device=x.device)
            cnt = 0
            for h in ((0, -wh), (-wh, -sh[0]), (-sh[0], None)):
                for w in ((0, -ww), (-ww, -sh[1]), (-sh[1], None)):
                    region[h[0]:h[1], w[0]:w[1]] = cnt
                    cnt += 1
            region = region.view(PH // wh, wh, PW // ww, ww).permute(0, 2, 1, 3).reshape(nW, n)
            mask = region.unsqueeze(1) - region.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0)
            attn = (attn.view(B, nW, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.heads, n, n)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B * nW, n, C)
        x = self.proj(x).view(B, PH // wh, PW // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, PH, PW, C)
        if sum(sh):
            x = torch.roll(x, (sh[0], sh[1]), (1, 2))
        return x[:, :H, :W, :].contiguous()


class _TSwinBlock(tnn.Module):
    def __init__(self, dim, heads, window, shift, sd):
        super().__init__()
        self.norm1 = tnn.LayerNorm(dim)
        self.attn = _TSwinAttention(dim, window, shift, heads)
        self.stochastic_depth = _TStochasticDepth(sd)
        self.norm2 = tnn.LayerNorm(dim)
        self.mlp = tnn.Sequential(tnn.Linear(dim, 4 * dim), tnn.GELU(), tnn.Dropout(0.0),
                                  tnn.Linear(4 * dim, dim), tnn.Dropout(0.0))

    def forward(self, x):
        x = x + self.stochastic_depth(self.attn(self.norm1(x)))
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class _TPatchMerging(tnn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = tnn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = tnn.LayerNorm(4 * dim)

    def forward(self, x):
        H, W = x.shape[-3:-1]
        x = tnn.functional.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :],
                       x[..., 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))


class _TSwin(tnn.Module):
    def __init__(self, embed, depths, heads, window=(7, 7), sd=0.2, nc=1000):
        super().__init__()
        feats = [tnn.Sequential(tnn.Conv2d(3, embed, 4, 4), _TPermute([0, 2, 3, 1]), tnn.LayerNorm(embed))]
        total, bid = sum(depths), 0
        for i, d in enumerate(depths):
            dim = embed * 2 ** i
            stage = []
            for j in range(d):
                stage.append(_TSwinBlock(dim, heads[i], window, [0 if j % 2 == 0 else w // 2 for w in window],
                                         sd * bid / (total - 1)))
                bid += 1
            feats.append(tnn.Sequential(*stage))
            if i < len(depths) - 1:
                feats.append(_TPatchMerging(dim))
        self.features = tnn.Sequential(*feats)
        nf = embed * 2 ** (len(depths) - 1)
        self.norm = tnn.LayerNorm(nf)
        self.head = tnn.Linear(nf, nc)

    def forward(self, x):
        x = self.norm(self.features(x)).permute(0, 3, 1, 2)
        return self.head(torch.flatten(tnn.functional.adaptive_avg_pool2d(x, 1), 1))


TWINS = {
    "resnet18": lambda nc=1000: _TResNet(_TBasic, [2, 2, 2, 2], nc),
    "resnet34": lambda nc=1000: _TResNet(_TBasic, [3, 4, 6, 3], nc),
    "resnet50": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 6, 3], nc),
    "resnet101": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc),
    "resnet152": lambda nc=1000: _TResNet(_TBottleneck, [3, 8, 36, 3], nc),
    "resnext50_32x4d": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 6, 3], nc, 32, 4),
    "resnext101_32x8d": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc, 32, 8),
    "resnext101_64x4d": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc, 64, 4),
    "wide_resnet50_2": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 6, 3], nc, 1, 128),
    "wide_resnet101_2": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc, 1, 128),
    "mobilenet_v2": lambda nc=1000: _TMobileNetV2(nc),
    "mobilenet_v3_large": lambda nc=1000: _TMobileNetV3("mobilenet_v3_large", nc),
    "mobilenet_v3_small": lambda nc=1000: _TMobileNetV3("mobilenet_v3_small", nc),
    "efficientnet_b0": lambda nc=1000: _TEfficientNet(1.0, 1.0, 0.2, nc),
    "efficientnet_b1": lambda nc=1000: _TEfficientNet(1.0, 1.1, 0.2, nc),
    "efficientnet_b2": lambda nc=1000: _TEfficientNet(1.1, 1.2, 0.3, nc),
    "efficientnet_b3": lambda nc=1000: _TEfficientNet(1.2, 1.4, 0.3, nc),
    "efficientnet_b4": lambda nc=1000: _TEfficientNet(1.4, 1.8, 0.4, nc),
    "efficientnet_b5": lambda nc=1000: _TEfficientNet(1.6, 2.2, 0.4, nc, True),
    "efficientnet_b6": lambda nc=1000: _TEfficientNet(1.8, 2.6, 0.5, nc, True),
    "efficientnet_b7": lambda nc=1000: _TEfficientNet(2.0, 3.1, 0.5, nc, True),
    "alexnet": lambda nc=1000: _TAlexNet(nc),
    "squeezenet1_0": lambda nc=1000: _TSqueezeNet("1_0", nc),
    "squeezenet1_1": lambda nc=1000: _TSqueezeNet("1_1", nc),
    "densenet121": lambda nc=1000: _TDenseNet(32, (6, 12, 24, 16), 64, nc),
    "densenet161": lambda nc=1000: _TDenseNet(48, (6, 12, 36, 24), 96, nc),
    "densenet169": lambda nc=1000: _TDenseNet(32, (6, 12, 32, 32), 64, nc),
    "densenet201": lambda nc=1000: _TDenseNet(32, (6, 12, 48, 32), 64, nc),
    "convnext_tiny": lambda nc=1000: _TConvNeXt([3, 3, 9, 3], 0.1, nc),
    "convnext_small": lambda nc=1000: _TConvNeXt([3, 3, 27, 3], 0.4, nc),
    "convnext_base": lambda nc=1000: _TConvNeXt([3, 3, 27, 3], 0.5, nc, (128, 256, 512, 1024)),
    "convnext_large": lambda nc=1000: _TConvNeXt([3, 3, 27, 3], 0.5, nc, (192, 384, 768, 1536)),
    "shufflenet_v2_x0_5": lambda nc=1000: _TShuffleNetV2([24, 48, 96, 192, 1024], nc),
    "shufflenet_v2_x1_0": lambda nc=1000: _TShuffleNetV2([24, 116, 232, 464, 1024], nc),
    "shufflenet_v2_x1_5": lambda nc=1000: _TShuffleNetV2([24, 176, 352, 704, 1024], nc),
    "shufflenet_v2_x2_0": lambda nc=1000: _TShuffleNetV2([24, 244, 488, 976, 2048], nc),
    "vit_b_16": lambda nc=1000: _TViT(224, 16, 12, 12, 768, 3072, nc),
    "vit_b_32": lambda nc=1000: _TViT(224, 32, 12, 12, 768, 3072, nc),
    "vit_l_16": lambda nc=1000: _TViT(224, 16, 24, 16, 1024, 4096, nc),
    "vit_l_32": lambda nc=1000: _TViT(224, 32, 24, 16, 1024, 4096, nc),
    "vit_h_14": lambda nc=1000: _TViT(224, 14, 32, 16, 1280, 5120, nc),
}
for _d in ("11", "13", "16", "19"):
    TWINS[f"vgg{_d}"] = lambda nc=1000, d=_d: _TVGG(d, False, nc)
    TWINS[f"vgg{_d}_bn"] = lambda nc=1000, d=_d: _TVGG(d, True, nc)
# forward parity on these (input size); the rest are checked by count, names and shapes only
FORWARD = {"resnet18": 32, "resnext50_32x4d": 32, "mobilenet_v2": 32, "mobilenet_v3_small": 32,
           "mobilenet_v3_large": 32, "efficientnet_b0": 32, "alexnet": 64, "squeezenet1_0": 64,
           "squeezenet1_1": 64, "densenet121": 32, "convnext_tiny": 32, "shufflenet_v2_x0_5": 32}

# torchvision's num_params of the families added later (source: torchvision/models/regnet.py's
# *_Weights enums, e.g. RegNet_Y_400MF_Weights.IMAGENET1K_V1.meta["num_params"])
PARAMS.update({
    "regnet_y_400mf": 4_344_144, "regnet_y_800mf": 6_432_512, "regnet_y_1_6gf": 11_202_430,
    "regnet_y_3_2gf": 19_436_338, "regnet_y_8gf": 39_381_472, "regnet_y_16gf": 83_590_140,
    "regnet_y_32gf": 145_046_770, "regnet_y_128gf": 644_812_894,
    "regnet_x_400mf": 5_495_976, "regnet_x_800mf": 7_259_656, "regnet_x_1_6gf": 9_190_136,
    "regnet_x_3_2gf": 15_296_552, "regnet_x_8gf": 39_572_648, "regnet_x_16gf": 54_278_536,
    "regnet_x_32gf": 107_811_560,
})
for _r in _TREGNET:
    TWINS[_r] = lambda nc=1000, a=_r: _TRegNet(a, nc)
# (source: torchvision/models/mnasnet.py, MNASNet*_Weights.IMAGENET1K_V1.meta["num_params"])
PARAMS.update({"mnasnet0_5": 2_218_512, "mnasnet0_75": 3_170_208, "mnasnet1_0": 4_383_312,
               "mnasnet1_3": 6_282_256})
for _a in ("0_5", "0_75", "1_0", "1_3"):
    TWINS[f"mnasnet{_a}"] = lambda nc=1000, a=float(_a.replace("_", ".")): _TMNASNet(a, nc)
# (source: torchvision/models/googlenet.py, GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"]:
# the model as its builder returns it with weights, i.e. without the auxiliary heads)
PARAMS["googlenet"] = 6_624_904
TWINS["googlenet"] = lambda nc=1000: _TGoogLeNet(nc)
# (source: torchvision/models/inception.py, Inception_V3_Weights.IMAGENET1K_V1.meta["num_params"],
# with the auxiliary head, which inception_v3() keeps by default)
PARAMS["inception_v3"] = 27_161_264
TWINS["inception_v3"] = lambda nc=1000: _TInception3(nc)
# (source: torchvision/models/efficientnet.py, EfficientNet_V2_*_Weights.IMAGENET1K_V1.meta)
PARAMS.update({"efficientnet_v2_s": 21_458_488, "efficientnet_v2_m": 54_139_356,
               "efficientnet_v2_l": 118_515_272})
for _v, _p in (("s", 0.2), ("m", 0.3), ("l", 0.4)):
    TWINS[f"efficientnet_v2_{_v}"] = lambda nc=1000, v=_v, p=_p: _TEfficientNetV2(v, p, nc)
# (source: torchvision/models/swin_transformer.py, Swin_*_Weights.IMAGENET1K_V1.meta["num_params"])
PARAMS.update({"swin_t": 28_288_354, "swin_s": 49_606_258, "swin_b": 87_768_224})
TWINS["swin_t"] = lambda nc=1000: _TSwin(96, [2, 2, 6, 2], [3, 6, 12, 24], sd=0.2, nc=nc)
TWINS["swin_s"] = lambda nc=1000: _TSwin(96, [2, 2, 18, 2], [3, 6, 12, 24], sd=0.3, nc=nc)
TWINS["swin_b"] = lambda nc=1000: _TSwin(128, [2, 2, 18, 2], [4, 8, 16, 32], sd=0.5, nc=nc)
FORWARD.update({"regnet_y_400mf": 32, "mnasnet0_5": 32,
                "googlenet": 32})  # (Inception-v3: its train-mode test compares the logits)
# (EfficientNetV2's forward and backward parity: the small V2 in its train-mode test)  # 75x75: Inception-v3's smallest input

# ---- helpers -------------------------------------------------------------------------------
def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def _randomised_state(model, seed=0):
    """``model``'s state with BatchNorm statistics and affine parameters drawn at random (so
    eval-mode BatchNorm is not the identity), in float64."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in model.state_dict().items():
        a = v.numpy()
        if a.dtype.kind != "f":
            out[k] = a
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 1.5, a.shape)
        elif k.endswith("running_mean"):
            out[k] = rng.normal(0, 0.1, a.shape)
        elif a.ndim == 1 and k.endswith("weight"):  # norm scales
            out[k] = rng.uniform(0.4, 0.8, a.shape)
        elif a.ndim == 1:
            out[k] = rng.normal(0, 0.1, a.shape)
        else:
            out[k] = a.astype(np.float64)
    return out


# builder arguments that give the model torchvision's num_params describes (its builder drops
# the auxiliary heads when it loads weights)
BUILD_KW = {"googlenet": {"aux_logits": False, "init_weights": True},
            "inception_v3": {"init_weights": True}}


def _pair(name, seed=0, num_classes=1000):
    """(minidl model, torch twin) in float64 with the same randomised weights."""
    model = get_model(name, num_classes=num_classes, **BUILD_KW.get(name, {})).double()
    state = _randomised_state(model, seed)
    model.load_state_dict(state)
    twin = TWINS[name](num_classes).double()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return model, twin


def _input(size, seed=1):
    return np.random.default_rng(seed).standard_normal((2, 3, size, size))


def _assert_close(got, want, rtol=1e-9, floor=1e-12):
    """max |got - want| <= rtol * max(max |want|, floor)."""
    assert got.shape == want.shape
    err = np.abs(got - want).max() / max(np.abs(want).max(), floor)
    assert err <= rtol, f"max |diff| / max |want| = {err:.2e}"


# ---- (a) parameter counts and (b) state_dict layout ----------------------------------------
def test_every_architecture_is_covered():
    assert set(PARAMS) == set(TWINS) == set(list_models())


# the RegNets and EfficientNetV2s over 35M parameters are built by minidl only as far as their
# stage plan (the code that turns a plan into modules is the one every smaller variant checks):
# allocating and initialising 35-645M parameters would take most of this file's time
HUGE = {"regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf", "regnet_x_8gf",
        "regnet_x_16gf", "regnet_x_32gf", "efficientnet_v2_m", "efficientnet_v2_l"}


@pytest.fixture
def no_init(monkeypatch):
    """The nn.init functions as no-ops: a count and a layout need no random values, and drawing
    them took most of this file's time (6.5 s for VGG-16's 138M parameters)."""
    import minidl.nn.init as init_module

    for name in dir(init_module):
        if name.endswith("_") and not name.startswith("_"):
            monkeypatch.setattr(init_module, name, lambda tensor, *args, **kwargs: tensor)


@pytest.mark.parametrize("name", sorted(set(PARAMS) - HUGE))
def test_parameter_count_and_layout_match_torchvision(name, no_init):
    model = get_model(name, **BUILD_KW.get(name, {}))
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    with torch.device("meta"):  # shapes without memory
        twin = TWINS[name]()
    assert sum(p.numel() for p in twin.parameters()) == PARAMS[name]
    mine, theirs = _shapes(model.state_dict()), _shapes(twin.state_dict())
    assert list(mine) == list(theirs)  # same names in the same order
    assert mine == theirs


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_variants_stage_plan_and_count(name):
    """minidl's stage plan equals the twin's (RegNet: widths, depths, group widths from the
    block rule; EfficientNetV2: the stage table), and the twin (on the meta device) has
    torchvision's parameter count."""
    if name.startswith("regnet"):
        from minidl.models.regnet import _PARAMS, BlockParams

        bp = BlockParams.from_init_params(**_PARAMS[name])
        mine = list(zip(bp.widths, bp.depths, bp.group_widths))
        depth, w_0, w_a, w_m, gw, _ = _TREGNET[name]
        assert mine == _tregnet_stages(depth, w_0, w_a, w_m, gw)
        assert bp.strides == [2] * len(mine) and bp.se_ratio == _TREGNET[name][-1]
    else:
        from minidl.models.efficientnet import _V2

        assert _V2[name] == _TV2ROWS[name[-1]]
    with torch.device("meta"):
        twin = TWINS[name]()
    assert sum(p.numel() for p in twin.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward_parity_eval_float64(name):
    model, twin = _pair(name)
    model.eval()
    twin.eval()
    x = _input(FORWARD[name])
    with minidl.no_grad():
        got = model(minidl.tensor(x, dtype=minidl.float64)).numpy()
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    assert got.dtype == np.float64
    _assert_close(got, want)


def _no_dropout(*models):
    for m in models:
        for sub in m.modules():
            if type(sub).__name__ == "Dropout":
                sub.p = 0.0


# train-mode BatchNorm over 2 samples of a 1x1 map is ill-conditioned: MobileNetV2 gets 64x64
@pytest.mark.parametrize("name,size", [("resnet18", 32), ("mobilenet_v2", 64),
                                       ("regnet_y_400mf", 64)])
def test_train_mode_backward_matches_torch(name, size):
    model, twin = _pair(name, num_classes=10)
    model.train()
    twin.train()
    _no_dropout(model, twin)  # the two draw different masks
    x = _input(size, seed=2)
    w = np.random.default_rng(3).standard_normal((2, 10))
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    (model(xm) * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    xt = torch.from_numpy(x).requires_grad_(True)
    (twin(xt) * torch.from_numpy(w)).sum().backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-8)
    tgrads = dict(twin.named_parameters())
    for k, p in model.named_parameters():
        # the bias of a conv that feeds a train-mode BatchNorm has a zero gradient (rounding
        # noise in both), hence the floor
        _assert_close(p.grad.numpy(), tgrads[k].grad.numpy(), 1e-8, floor=1e-3)
    # train mode updated the running statistics as torch did
    tstate = twin.state_dict()
    for k, v in model.state_dict().items():
        if "running" in k:
            _assert_close(v.numpy(), tstate[k].numpy(), 1e-9)


def test_vgg_features_parity_float64():
    """VGG's classifier is 120M parameters of plain Linear layers; its features (3x3 convs,
    BatchNorm, 2x2 pools) and the 7x7 adaptive pool (which replicates a 1x1 map) are compared."""
    from minidl.models.vgg import _CFGS, make_layers

    features = make_layers(_CFGS["A"], batch_norm=True).double().eval()
    state = _randomised_state(features)
    features.load_state_dict(state)
    twin = _TVGG("11", True).double().eval()
    twin.features.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = _input(32)
    with minidl.no_grad():
        got = minidl.nn.AdaptiveAvgPool2d((7, 7))(features(minidl.tensor(x, dtype=minidl.float64)))
    with torch.no_grad():
        want = twin.avgpool(twin.features(torch.from_numpy(x))).numpy()
    assert got.shape == (2, 512, 7, 7)
    _assert_close(got.numpy(), want)


def test_vision_transformer_parity_float64():
    """A small ViT (32x32 input, 16x16 patches, 2 blocks) from the same class as vit_b_16: the
    patchify conv, class token, position embedding, pre-norm attention and MLP blocks, in eval
    mode, and one train-mode backward."""
    from minidl.models import VisionTransformer

    model = VisionTransformer(32, 16, 2, 4, 32, 64, num_classes=10).double()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(9)
    state["heads.head.weight"] = rng.standard_normal((10, 32)) * 0.2  # torchvision zeroes it
    model.load_state_dict(state)
    twin = _TViT(32, 16, 2, 4, 32, 64, 10).double()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    assert list(_shapes(model.state_dict())) == list(_shapes(twin.state_dict()))
    x = _input(32, seed=10)
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    om, ot = model.train()(xm), twin.train()(xt)
    _assert_close(om.detach().numpy(), ot.detach().numpy())
    om.sum().backward()
    ot.sum().backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-8)
    tgrads = dict(twin.named_parameters())
    for k, p in model.named_parameters():
        _assert_close(p.grad.numpy(), tgrads[k].grad.numpy(), 1e-8, floor=1e-6)
    with pytest.raises(ValueError, match=r"expected input \(N, 3, 32, 32\)"):
        model(minidl.tensor(_input(64), dtype=minidl.float64))


def test_vit_swag_e2e_weights_build_at_their_size(tmp_path, monkeypatch):
    """Naming the SWAG end-to-end weights builds ViT-B/16 at 384x384 as torchvision does (the
    position embedding has (384/16)^2 + 1 rows), so the file's shapes are what is checked."""
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save({"conv_proj.weight": torch.zeros(1)}, ckpt / "vit_b_16_swag-9ac1b537.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=r"missing: encoder.pos_embedding \(1, 577, 768\)"):
        get_model("vit_b_16", weights="IMAGENET1K_SWAG_E2E_V1")


# ---- stochastic depth, squeeze-excitation, LayerNorm2d ------------------------------------
def test_stochastic_depth_semantics():
    from minidl.models._blocks import StochasticDepth, stochastic_depth

    x = minidl.tensor(np.ones((64, 3, 2, 2)))
    assert stochastic_depth(x, 0.5, "row", training=False) is x
    assert np.all(stochastic_depth(x, 1.0, "row").numpy() == 0)
    minidl.manual_seed(0)
    rows = stochastic_depth(x, 0.5, "row").numpy().reshape(64, -1)
    assert set(np.unique(rows)) == {0.0, 2.0}  # survivors scaled by 1/(1-p)
    assert all(len(set(r)) == 1 for r in rows) and 10 < (rows[:, 0] == 0).sum() < 54
    batch = stochastic_depth(x, 0.5, "batch").numpy()
    assert len(np.unique(batch)) == 1
    with pytest.raises(ValueError, match="between 0 and 1"):
        stochastic_depth(x, 1.5, "row")
    with pytest.raises(ValueError, match="'batch' or 'row'"):
        stochastic_depth(x, 0.5, "col")
    assert repr(StochasticDepth(0.1, "row")) == "StochasticDepth(p=0.1, mode=row)"
    # gradients flow through the kept rows only, scaled as the values are
    xg = minidl.tensor(np.ones((8, 2)), requires_grad=True)
    minidl.manual_seed(1)
    out = stochastic_depth(xg, 0.5, "row")
    out.sum().backward()
    np.testing.assert_array_equal(xg.grad.numpy(), out.numpy())


def test_stochastic_depth_probabilities_as_torchvision():
    eff = get_model("efficientnet_b0")
    blocks = [b for stage in list(eff.features)[1:-1] for b in stage]
    assert len(blocks) == 16
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx([0.2 * i / 16 for i in range(16)])
    from minidl.models.convnext import ConvNeXt

    cn = ConvNeXt([(8, 16, 2), (16, None, 3)], stochastic_depth_prob=0.1)  # rises to p at the end
    cblocks = [b for i in (1, 3) for b in cn.features[i]]
    assert [b.stochastic_depth.p for b in cblocks] == pytest.approx([0, 0.025, 0.05, 0.075, 0.1])
    assert cblocks[0].layer_scale.shape == (8, 1, 1)
    assert np.allclose(cblocks[0].layer_scale.numpy(), 1e-6)


def _scale_ok(values, std, tol=0.1):
    values = np.asarray(values, dtype=np.float64).ravel()
    return abs(values.mean()) < 5 * std / np.sqrt(values.size) + 1e-12 \
        and abs(values.std() / std - 1) < tol


def test_regnet_initialisation_as_torchvision():
    """Convs N(0, sqrt(2 / (k*k*out_channels))) (groups ignored, as torchvision), BatchNorm at
    the identity, the classifier N(0, 0.01) with a zero bias; the squeeze-excitation convs'
    biases keep Conv2d's default (torchvision leaves them)."""
    minidl.manual_seed(0)
    m = get_model("regnet_y_400mf")
    b = m.trunk_output.block2[0].f.b[0]  # grouped 3x3
    assert b.groups > 1
    assert _scale_ok(b.weight.numpy(), np.sqrt(2.0 / (9 * b.out_channels)))
    stem = m.stem[0]
    assert _scale_ok(stem.weight.numpy(), np.sqrt(2.0 / (9 * 32)), tol=0.15)
    assert _scale_ok(m.fc.weight.numpy(), 0.01) and np.all(m.fc.bias.numpy() == 0)
    bns = [x for x in m.modules() if isinstance(x, minidl.nn.BatchNorm2d)]
    assert all(np.all(x.weight.numpy() == 1) and np.all(x.bias.numpy() == 0) for x in bns)
    se = m.trunk_output.block1[0].f.se
    assert np.any(se.fc1.bias.numpy() != 0)
    assert se.fc1.out_channels == int(round(0.25 * 32))  # se_ratio of the block's input width
    # RegNetX has no squeeze-excitation; the builders take RegNet's arguments only
    assert "se" not in dict(get_model("regnet_x_400mf").trunk_output.block1[0].f.named_children())
    from minidl.models.regnet import BlockParams

    with pytest.raises(ValueError, match="Invalid RegNet settings"):
        BlockParams.from_init_params(depth=4, w_0=30, w_a=8.0, w_m=2.0, group_width=8)
    with pytest.raises(TypeError, match="unexpected keyword arguments: dilation, w_0"):
        get_model("regnet_x_400mf", dilation=2, w_0=32)
    assert get_model("regnet_x_400mf", stem_width=16).stem[0].out_channels == 16


def test_mnasnet_version1_checkpoint_rebuilds_the_stem(tmp_path):
    """A checkpoint from before torchvision scaled MNASNet's stem (32/16 channels whatever
    alpha) loads as torchvision loads it: the stem is rebuilt, with torchvision's warning, and
    the converter accepts it for the arch."""
    from minidl.models.mnasnet import MNASNet

    old = MNASNet(0.5)
    with pytest.warns(UserWarning, match="new version of MNASNet"):
        old.remap_state_dict({"layers.0.weight": np.zeros((32, 3, 3, 3))})
    assert old.layers[0].weight.shape == (32, 3, 3, 3) and old.layers[8][0].layers[0].in_channels == 16
    state = {k: torch.from_numpy(np.ascontiguousarray(v.numpy())) for k, v in old.state_dict().items()}
    path = tmp_path / "mnasnet_v1.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="new version of MNASNet"):
        m = get_model("mnasnet0_5", weights=path)
    assert m.layers[0].weight.shape == (32, 3, 3, 3)
    np.testing.assert_array_equal(m.layers[3].weight.numpy(), state["layers.3.weight"].numpy())
    with pytest.warns(UserWarning):
        assert convert_main([str(path), str(tmp_path / "v1.npz"), "--arch", "mnasnet0_5"]) == 0
    assert get_model("mnasnet1_0").layers[0].weight.shape == (32, 3, 3, 3)  # alpha 1: unchanged
    # torchvision's initialisation: linears U(+-sqrt(3 / out_features)), zero bias
    minidl.manual_seed(0)
    fc = MNASNet(1.0, num_classes=1000).classifier[1]
    w = fc.weight.numpy()
    bound = np.sqrt(3.0 / 1000)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert _scale_ok(w, bound / np.sqrt(3)) and np.all(fc.bias.numpy() == 0)
    bns = [x for x in MNASNet(0.5).modules() if isinstance(x, minidl.nn.BatchNorm2d)]
    assert [x.momentum for x in bns] == pytest.approx([1 - 0.9997] * len(bns))


def _aux_pair(name, twin_factory, seed=11):
    """minidl's model with aux heads and transform_input, and its twin, same float64 weights."""
    model = get_model(name, num_classes=10, aux_logits=True, transform_input=True,
                      init_weights=True).double()
    state = _randomised_state(model, seed)
    model.load_state_dict(state)
    twin = twin_factory().double()
    assert list(_shapes(model.state_dict())) == list(_shapes(twin.state_dict()))
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    _no_dropout(model, twin)
    return model, twin


def test_googlenet_aux_heads_outputs_and_backward():
    """Train mode with aux_logits: GoogLeNetOutputs(logits, aux_logits2, aux_logits1), where
    torchvision's forward puts the head after inception4a in the aux_logits2 field; all three
    and the input gradient of their weighted sum match the twin (transform_input on). Eval
    mode returns the logits alone."""
    from minidl.models import GoogLeNetOutputs

    model, twin = _aux_pair("googlenet", lambda: _TGoogLeNet(10, aux=True, transform_input=True))
    x = _input(48, seed=12)
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = model.train()(xm)
    logits, a1, a2 = twin.train()(xt)
    assert isinstance(out, GoogLeNetOutputs) and out._fields == ("logits", "aux_logits2", "aux_logits1")
    _assert_close(out.logits.detach().numpy(), logits.detach().numpy())
    _assert_close(out.aux_logits2.detach().numpy(), a1.detach().numpy())
    _assert_close(out.aux_logits1.detach().numpy(), a2.detach().numpy())
    (out.logits.sum() + 0.3 * out.aux_logits2.sum() + 0.7 * out.aux_logits1.sum()).backward()
    (logits.sum() + 0.3 * a1.sum() + 0.7 * a2.sum()).backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-8)
    tgrads = dict(twin.named_parameters())
    for k in ("conv1.conv.weight", "aux1.fc1.weight", "aux2.conv.conv.weight", "fc.weight"):
        _assert_close(dict(model.named_parameters())[k].grad.numpy(), tgrads[k].grad.numpy(), 1e-8)
    with minidl.no_grad():
        got = model.eval()(minidl.tensor(x, dtype=minidl.float64))
    assert isinstance(got, minidl.Tensor) and got.shape == (2, 10)
    with torch.no_grad():
        _assert_close(got.numpy(), twin.eval()(torch.from_numpy(x)).numpy())


def test_googlenet_builder_weights_and_init(tmp_path):
    """torchvision's builder: without weights GoogLeNet's defaults (aux heads, a FutureWarning
    about init_weights); with weights, transform_input defaults to True and the file's aux
    heads are loaded then dropped unless aux_logits=True (which warns they are untrained)."""
    with pytest.warns(FutureWarning, match="init_weights=True"):
        m = get_model("googlenet")
    assert m.aux_logits and m.aux1 is not None and not m.transform_input
    src = get_model("googlenet", init_weights=False)
    path = tmp_path / "googlenet.pth"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v.numpy()))
                for k, v in src.state_dict().items()}, path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the converter builds quietly
        assert convert_main([str(path), str(tmp_path / "g.npz"), "--arch", "googlenet"]) == 0
    m = get_model("googlenet", weights=tmp_path / "g.npz")
    assert m.transform_input and not m.aux_logits and m.aux1 is None and m.aux2 is None
    assert not any(k.startswith("aux") for k in m.state_dict())
    assert sum(p.numel() for p in m.parameters()) == PARAMS["googlenet"]
    assert isinstance(m.train()(minidl.randn(2, 3, 64, 64)), minidl.Tensor)
    with pytest.warns(UserWarning, match="NOT pretrained"):
        m = get_model("googlenet", weights=path, aux_logits=True, transform_input=False)
    assert m.aux1 is not None and not m.transform_input
    # torchvision's initialisation: truncated N(0, 0.01) convs and linears, BatchNorm identity
    minidl.manual_seed(0)
    m = get_model("googlenet", init_weights=True)
    assert _scale_ok(m.inception4a.branch2[1].conv.weight.numpy(), 0.01)
    assert _scale_ok(m.fc.weight.numpy(), 0.01)
    assert m.conv1.bn.eps == 0.001


def test_inception_v3_train_mode_backward_and_aux_head():
    """Train mode at 75x75 (Inception-v3's smallest input) without the auxiliary head: logits
    and every gradient match the twin (transform_input on); the auxiliary head (which needs
    the 17x17 Mixed_6e map of a 299x299 image) matches its twin alone on a 17x17 map, forward
    and backward."""
    from minidl.models.inception import InceptionAux

    model = get_model("inception_v3", num_classes=10, aux_logits=False, transform_input=True,
                      init_weights=True).double()
    state = _randomised_state(model, 13)
    model.load_state_dict(state)
    twin = _TInception3(10, aux=False, transform_input=True).double()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    _no_dropout(model, twin)
    x = _input(75, seed=14)
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    om, ot = model.train()(xm), twin.train()(xt)
    assert isinstance(om, minidl.Tensor)  # aux_logits=False: no InceptionOutputs
    # Mixed_7's train-mode BatchNorms see 2 values per channel (1x1 maps): rounding is amplified
    # there, hence 1e-7 (a wrong wiring differs at O(1))
    _assert_close(om.detach().numpy(), ot.detach().numpy(), 1e-7)
    w = np.random.default_rng(15).standard_normal((2, 10))
    (om * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    (ot * torch.from_numpy(w)).sum().backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-7)
    tgrads = dict(twin.named_parameters())
    for k, p in model.named_parameters():
        _assert_close(p.grad.numpy(), tgrads[k].grad.numpy(), 1e-7, floor=1e-3)

    aux = InceptionAux(8, 5).double()
    aux_state = _randomised_state(aux, 16)
    aux.load_state_dict(aux_state)
    taux = _TIncAux(8, 5).double()
    taux.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in aux_state.items()})
    f = np.random.default_rng(17).standard_normal((3, 8, 17, 17))
    fm = minidl.tensor(f, dtype=minidl.float64, requires_grad=True)
    ft = torch.from_numpy(f).requires_grad_(True)
    am, at = aux.train()(fm), taux.train()(ft)
    _assert_close(am.detach().numpy(), at.detach().numpy())
    am.sum().backward()
    at.sum().backward()
    _assert_close(fm.grad.numpy(), ft.grad.numpy(), 1e-8)


def test_inception_v3_outputs_builder_and_init(tmp_path):
    """aux_logits=True in train mode returns InceptionOutputs(logits, aux_logits), the aux head
    fed Mixed_6e's output (a stand-in head here: the real one needs a 299x299 image); eval mode
    runs no aux head and returns the logits. torchvision's builder: with weights, transform_input defaults to True,
    the file's aux head loads and stays unless aux_logits=False. Initialisation: truncated
    N(0, 0.1) everywhere but the aux head's fc (0.001); the aux conv1's 0.01 is set on its
    BasicConv2d, which torchvision's init loop never reads."""
    from minidl.models import InceptionOutputs

    minidl.manual_seed(0)
    with pytest.warns(FutureWarning, match="init_weights=True"):
        m = get_model("inception_v3", num_classes=4)
    assert _scale_ok(m.Mixed_6b.branch7x7_2.conv.weight.numpy(), 0.1)
    assert _scale_ok(m.AuxLogits.conv1.conv.weight.numpy(), 0.1)
    assert _scale_ok(m.AuxLogits.fc.weight.numpy(), 0.001)
    assert _scale_ok(m.fc.weight.numpy(), 0.1, tol=0.15)
    seen = []

    class _StandIn(minidl.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return minidl.zeros(x.shape[0], 4)

    real_aux = m.AuxLogits
    m.AuxLogits = _StandIn()
    with minidl.no_grad():
        out = m.train()(minidl.randn(2, 3, 75, 75))
        assert isinstance(out, InceptionOutputs) and out._fields == ("logits", "aux_logits")
        assert out.logits.shape == (2, 4) and np.all(out.aux_logits.numpy() == 0)
        assert seen == [(2, 768, 3, 3)]
        assert isinstance(m.eval()(minidl.randn(2, 3, 75, 75)), minidl.Tensor) and len(seen) == 1
    m.AuxLogits = real_aux
    path = tmp_path / "inception.pth"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v.numpy())) for k, v in m.state_dict().items()},
               path)
    got = get_model("inception_v3", weights=path, num_classes=4)
    assert got.transform_input and got.aux_logits and got.AuxLogits is not None
    got = get_model("inception_v3", weights=path, num_classes=4, aux_logits=False)
    assert got.AuxLogits is None and not any(k.startswith("AuxLogits") for k in got.state_dict())


def test_efficientnet_v2_blocks_and_stochastic_depth():
    """V2-S: FusedMBConv in the first three stages (expand ratio 1: the kxk conv alone; else
    kxk expand + 1x1 project, no squeeze-excitation), MBConv after; stochastic depth rising
    to 0.2 over the 40 blocks; the head 256 -> 1280."""
    from minidl.models.efficientnet import FusedMBConv, MBConv

    m = get_model("efficientnet_v2_s")
    blocks = [b for stage in list(m.features)[1:-1] for b in stage]
    assert len(blocks) == 40
    assert [type(b).__name__ for b in blocks] == ["FusedMBConv"] * 10 + ["MBConv"] * 30
    assert len(blocks[0].block) == 1 and len(blocks[2].block) == 2
    assert isinstance(blocks[0], FusedMBConv) and isinstance(blocks[10], MBConv)
    assert blocks[0].use_res_connect and not blocks[2].use_res_connect
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx([0.2 * i / 40 for i in range(40)])
    assert m.features[-1][0].weight.shape == (1280, 256, 1, 1) and m.classifier[0].p == 0.2
    assert get_model("efficientnet_v2_s", dropout=0.5).classifier[0].p == 0.5
    assert get_model("efficientnet_b0", dropout=0.5).classifier[0].p == 0.5  # was a TypeError


def test_efficientnet_v2_train_mode_backward_matches_torch():
    """One train-mode step of a small V2 (two FusedMBConv stages, with and without expansion,
    then MBConv) built by the same EfficientNet class as V2-S/M/L, stochastic depth switched off
    in both (the two draw different masks): logits, input and parameter gradients match the
    twin's."""
    from functools import partial

    from minidl.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

    setting = [FusedMBConvConfig(*r[1:]) if r[0] else MBConvConfig(*r[1:]) for r in _TV2ROWS["tiny"]]
    model = EfficientNet(setting, 0.2, num_classes=10, last_channel=1280,
                         norm_layer=partial(minidl.nn.BatchNorm2d, eps=1e-3)).double()
    state = _randomised_state(model, 18)
    model.load_state_dict(state)
    twin = _TEfficientNetV2("tiny", 0.2, 10).double()
    assert list(_shapes(model.state_dict())) == list(_shapes(twin.state_dict()))
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    _no_dropout(model, twin)
    for m in list(model.modules()) + list(twin.modules()):
        if hasattr(m, "stochastic_depth"):
            m.stochastic_depth.p = 0.0
    x = _input(32, seed=19)
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    om, ot = model.train()(xm), twin.train()(xt)
    _assert_close(om.detach().numpy(), ot.detach().numpy(), 1e-8)
    om.sum().backward()
    ot.sum().backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-7)
    tgrads = dict(twin.named_parameters())
    for k, p in model.named_parameters():
        _assert_close(p.grad.numpy(), tgrads[k].grad.numpy(), 1e-7, floor=1e-3)


def test_resnet_dilation_and_norm_layer_match_torchvision():
    """replace_stride_with_dilation=[False, True, True] (output stride 8, as torchvision's
    segmentation backbones) and norm_layer=GroupNorm: names, shapes, the feature map's size,
    and eval forward plus a train-mode backward against the twin; BasicBlock refuses
    dilation as torchvision's does."""
    kw = dict(replace_stride_with_dilation=[False, True, True],
              norm_layer=lambda c: minidl.nn.GroupNorm(4, c))
    model = minidl.models.ResNet("bottleneck", [1, 1, 1, 1], num_classes=10, **kw).double()
    state = _randomised_state(model, 20)
    model.load_state_dict(state)
    twin = _TResNet(_TBottleneck, [1, 1, 1, 1], 10, dilate=(False, True, True),
                    norm=lambda c: tnn.GroupNorm(4, c)).double()
    assert list(_shapes(model.state_dict())) == list(_shapes(twin.state_dict()))
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    assert model.layer4[0].conv2.dilation == (2, 2) and model.layer4[0].conv2.stride == (1, 1)
    assert model.layer3[0].conv2.dilation == (1, 1) and model.dilation == 4
    assert isinstance(model.bn1, minidl.nn.GroupNorm)
    x = _input(32, seed=21)
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    with minidl.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(minidl.tensor(x, dtype=minidl.float64)))))
        feat = model.layer4(model.layer3(model.layer2(model.layer1(h))))
    assert feat.shape == (2, 2048, 4, 4)  # 32 / 8
    om, ot = model.train()(xm), twin.train()(xt)
    _assert_close(om.detach().numpy(), ot.detach().numpy())
    om.sum().backward()
    ot.sum().backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-8)
    tgrads = dict(twin.named_parameters())
    for k, p in model.named_parameters():
        _assert_close(p.grad.numpy(), tgrads[k].grad.numpy(), 1e-8, floor=1e-6)
    gn = [m for m in minidl.models.resnet50(norm_layer=lambda c: minidl.nn.GroupNorm(32, c)).modules()
          if isinstance(m, minidl.nn.GroupNorm)]
    assert gn and all(np.all(m.weight.numpy() == 1) and np.all(m.bias.numpy() == 0) for m in gn)
    with pytest.raises(NotImplementedError, match="Dilation > 1 not supported in BasicBlock"):
        get_model("resnet18", replace_stride_with_dilation=[False, False, True])
    with pytest.raises(ValueError, match="3-element tuple"):
        get_model("resnet50", replace_stride_with_dilation=[True])


def test_mobilenet_v3_width_mult_reduced_tail_dilated():
    """width_mult scales every width (multiples of 8) as torchvision's _mobilenet_v3_conf:
    names, shapes and eval forward against the twin at 0.75; reduced_tail halves the last
    stage and dilated trades its stride for dilation 2."""
    model = get_model("mobilenet_v3_small", num_classes=10, width_mult=0.75).double()
    state = _randomised_state(model, 22)
    model.load_state_dict(state)
    twin = _TMobileNetV3("mobilenet_v3_small", 10, width_mult=0.75).double()
    assert list(_shapes(model.state_dict())) == list(_shapes(twin.state_dict()))
    assert _shapes(model.state_dict()) == _shapes(twin.state_dict())
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    x = _input(32, seed=23)
    with minidl.no_grad():
        got = model.eval()(minidl.tensor(x, dtype=minidl.float64)).numpy()
    with torch.no_grad():
        _assert_close(got, twin.eval()(torch.from_numpy(x)).numpy())
    assert model.features[0][0].out_channels == 16 and model.classifier[0].out_features == 768
    m = get_model("mobilenet_v3_small", reduced_tail=True, dilated=True)
    assert m.features[-1][0].in_channels == 48 and m.classifier[3].in_features == 512
    dw = m.features[9].block[1][0]  # the C4 block's depthwise conv
    assert dw.dilation == (2, 2) and dw.stride == (1, 1)
    assert get_model("mobilenet_v3_small").features[9].block[1][0].stride == (2, 2)


def test_swin_small_config_parity_float64():
    """A small Swin (embed 16, three stages, 4x4 windows) from the same classes as swin_t on a
    40x40 image: the 10x10 first map is padded to 12x12 and shifted, the 5x5 second map padded
    and shifted, the odd 5x5 map merged with padding, and the last 3x3 map (smaller than a
    window) attended unshifted. Eval forward, then a train-mode backward (stochastic depth
    off: the two draw different masks), against the twin, including the bias table's
    gradient (gathered through relative_position_index)."""
    from minidl.models import SwinTransformer

    model = SwinTransformer([4, 4], 16, [2, 2, 2], [2, 4, 8], [4, 4], stochastic_depth_prob=0.0,
                            num_classes=10).double()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(27)
    for k, v in state.items():  # LayerNorm scales and all biases off their init, for the test
        if v.dtype.kind == "f" and v.ndim == 1:
            state[k] = v + rng.normal(0, 0.2, v.shape)
        if k.endswith("relative_position_bias_table"):
            state[k] = rng.normal(0, 0.5, v.shape)
    model.load_state_dict(state)
    twin = _TSwin(16, [2, 2, 2], [2, 4, 8], window=(4, 4), sd=0.0, nc=10).double()
    assert list(_shapes(model.state_dict())) == list(_shapes(twin.state_dict()))
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    x = _input(40, seed=28)
    with minidl.no_grad():
        got = model.eval()(minidl.tensor(x, dtype=minidl.float64)).numpy()
    with torch.no_grad():
        _assert_close(got, twin.eval()(torch.from_numpy(x)).numpy())
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    w = np.random.default_rng(29).standard_normal((2, 10))
    (model.train()(xm) * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    (twin.train()(xt) * torch.from_numpy(w)).sum().backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-8)
    tgrads = dict(twin.named_parameters())
    for k, p in model.named_parameters():
        _assert_close(p.grad.numpy(), tgrads[k].grad.numpy(), 1e-8, floor=1e-6)
    idx = model.features[1][0].attn.relative_position_index
    assert idx.dtype == minidl.int64 and idx.shape == (256,)
    np.testing.assert_array_equal(idx.numpy(), twin.features[1][0].attn.relative_position_index.numpy())


def test_swin_t_names_init_and_weights(tmp_path):
    """swin_t's stochastic depth rises to 0.2 over its 12 blocks, shifted blocks alternate,
    Linear layers are truncated N(0, 0.02) with zero biases (torchvision overrides the MLPs'
    xavier init too), and a torch checkpoint with its int64 relative_position_index buffers
    loads through weights= and the converter."""
    minidl.manual_seed(0)
    m = get_model("swin_t")
    blocks = [b for i in (1, 3, 5, 7) for b in m.features[i]]
    assert len(blocks) == 12
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx([0.2 * i / 11 for i in range(12)])
    assert [b.attn.shift_size for b in blocks[:2]] == [[0, 0], [3, 3]]
    assert _scale_ok(m.features[5][0].mlp[0].weight.numpy(), 0.02)
    assert np.all(m.features[5][0].mlp[0].bias.numpy() == 0)
    assert _scale_ok(m.features[5][0].attn.relative_position_bias_table.numpy(), 0.02, tol=0.15)
    state = {k: torch.from_numpy(np.ascontiguousarray(v.numpy())) for k, v in m.state_dict().items()}
    assert state["features.1.0.attn.relative_position_index"].dtype == torch.int64
    path = tmp_path / "swin_t.pth"
    torch.save(state, path)
    assert convert_main([str(path), str(tmp_path / "swin.npz"), "--arch", "swin_t"]) == 0
    got = get_model("swin_t", weights=tmp_path / "swin.npz")
    assert got.features[1][0].attn.relative_position_index.dtype == minidl.int64
    np.testing.assert_array_equal(got.head.weight.numpy(), m.head.weight.numpy())


def test_efficientnet_batchnorm_eps_as_torchvision():
    """B0-B4 keep BatchNorm's defaults; B5-B7 (weights ported from TensorFlow) use eps=0.001,
    momentum=0.01, V2 eps=0.001, as torchvision's builders."""
    for name, want in [("efficientnet_b0", (1e-5, 0.1)), ("efficientnet_b5", (0.001, 0.01)),
                       ("efficientnet_v2_s", (0.001, 0.1))]:
        bns = [m for m in get_model(name).modules() if isinstance(m, minidl.nn.BatchNorm2d)]
        assert {(m.eps, m.momentum) for m in bns} == {want}, name


def test_block_gradients_float64():
    from minidl.models._blocks import LayerNorm2d, SqueezeExcitation
    from minidl.testing import gradcheck

    minidl.manual_seed(0)
    se = SqueezeExcitation(4, 2, activation=minidl.nn.SiLU,
                           scale_activation=minidl.nn.Hardsigmoid).double()
    ln = LayerNorm2d(4, eps=1e-6).double()
    x = minidl.tensor(np.random.default_rng(0).standard_normal((2, 4, 3, 3)),
                      dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda t: se(t), (x,))
    assert gradcheck(lambda t: ln(t), (x,))


# ---- (c) converted torch checkpoints load through weights= ---------------------------------
@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    """(twin in eval mode, path of torch.save(twin.state_dict())) in float32."""
    model, twin = _pair("resnet18", seed=5)
    twin = twin.float().eval()
    path = tmp_path_factory.mktemp("zoo") / "resnet18.pth"
    torch.save(twin.state_dict(), path)
    return twin, path


def _logits_match(model, twin, size=32):
    x = _input(size, seed=4).astype(np.float32)
    model.eval()
    with minidl.no_grad():
        got = model(minidl.tensor(x)).numpy()
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    _assert_close(got, want, 1e-4)


def test_torch_checkpoint_loads_through_weights(resnet18_checkpoint, tmp_path, monkeypatch):
    twin, path = resnet18_checkpoint
    _logits_match(get_model("resnet18", weights=path), twin)
    # converted once to .npz with the CLI, checked against the arch
    npz = tmp_path / "resnet18.npz"
    assert convert_main([str(path), str(npz), "--arch", "resnet18"]) == 0
    _logits_match(get_model_builder("resnet18")(weights=str(npz)), twin)
    # torchvision's names find its cached file under $TORCH_HOME/hub/checkpoints
    ckpt = tmp_path / "home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    os.link(path, ckpt / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    for name in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        _logits_match(get_model("resnet18", weights=name), twin)


def test_checkpoint_of_another_arch_is_refused(resnet18_checkpoint, tmp_path, capsys):
    _, path = resnet18_checkpoint
    with pytest.raises(ValueError, match=r"(?s)do not fit ResNet.*missing: layer1.2.conv1.weight"):
        get_model("resnet34", weights=path)
    assert convert_main([str(path), str(tmp_path / "x.npz"), "--arch", "resnet34"]) == 2
    assert "does not fit minidl's resnet34" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(ValueError, match="for 1000 classes.*num_classes=1000"):
        get_model("resnet18", weights=path, num_classes=10)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
                                  "regnet_x_400mf", "mnasnet0_75"])
def test_torch_checkpoint_of_other_families_loads(name, tmp_path):
    _, twin = _pair(name, seed=6)
    twin = twin.float().eval()
    path = tmp_path / f"{name}.pth"
    torch.save(twin.state_dict(), path)
    _logits_match(get_model(name, weights=path), twin, 64 if name.startswith("squeeze") else 32)


def test_densenet_files_with_torchvision_old_key_spelling(tmp_path):
    """torchvision's densenet*.pth spell ``denselayer1.norm1.weight`` as
    ``denselayer1.norm.1.weight``; weights= and the converter rename them as torchvision does."""
    _, twin = _pair("densenet121", seed=7)
    twin = twin.float().eval()
    old = {}
    for k, v in twin.state_dict().items():
        k2 = k
        for part in ("norm1", "norm2", "conv1", "conv2", "relu1", "relu2"):
            k2 = k2.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.") if "denselayer" in k2 else k2
        old[k2] = v
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    path = tmp_path / "densenet121-old.pth"
    torch.save(old, path)
    _logits_match(get_model("densenet121", weights=path), twin)
    npz = tmp_path / "densenet121.npz"
    assert convert_main([str(path), str(npz), "--arch", "densenet121"]) == 0
    _logits_match(get_model("densenet121", weights=npz), twin)


def test_weights_names_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="resnet101-cd907fc2.pth"):
        get_model("resnet101", weights="DEFAULT")  # DEFAULT is torchvision's best: V2
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        get_model("resnet18", weights="imagenet1k_v1")
    with pytest.raises(FileNotFoundError, match="imagenet_weights.pth does not exist"):
        get_model("resnet18", weights=str(tmp_path / "imagenet_weights.pth"))  # a path, not a name
    with pytest.raises(ValueError, match="unknown ResNet-18 weights name 'IMAGENET1K_V2'"):
        get_model("resnet18", weights="IMAGENET1K_V2")  # resnet18 has only V1
    with pytest.raises(ValueError, match="unknown ResNet-34 weights"):
        get_model("resnet34", weights="ResNet18_Weights.IMAGENET1K_V1")
    expected_files = {  # torchvision's DEFAULT file of each architecture
        "mobilenet_v2": "mobilenet_v2-7ebf99e0.pth", "mobilenet_v3_large": "mobilenet_v3_large-5c1a4163.pth",
        "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
        "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
        "efficientnet_b1": "efficientnet_b1-c27df63c.pth", "vgg16": "vgg16-397923af.pth",
        "vgg19_bn": "vgg19_bn-c79401a0.pth", "alexnet": "alexnet-owt-7be5be79.pth",
        "squeezenet1_1": "squeezenet1_1-b8a52dc0.pth", "densenet161": "densenet161-8d451a50.pth",
        "convnext_small": "convnext_small-0c510722.pth", "wide_resnet50_2": "wide_resnet50_2-9ba9bcbe.pth",
        "regnet_y_400mf": "regnet_y_400mf-e6988f5f.pth", "regnet_x_32gf": "regnet_x_32gf-6eb8fdc6.pth",
        "mnasnet1_0": "mnasnet1.0_top1_73.512-f206786ef8.pth", "mnasnet0_75": "mnasnet0_75-7090bc5f.pth",
        "efficientnet_v2_l": "efficientnet_v2_l-59c71312.pth", "googlenet": "googlenet-1378be20.pth",
        "inception_v3": "inception_v3_google-0cc3c7bd.pth", "swin_b": "swin_b-68c6b09e.pth",
        "regnet_y_16gf": "regnet_y_16gf-3e4a00f9.pth", "regnet_y_128gf": "regnet_y_128gf_swag-c8ce3e52.pth",
    }
    from minidl.models.weights import find_pretrained

    for arch, fname in expected_files.items():
        with pytest.raises(FileNotFoundError, match=fname):
            find_pretrained("DEFAULT", arch=arch)
    assert get_model_weights("resnet50") == {"IMAGENET1K_V1": "resnet50-0676ba61.pth",
                                             "IMAGENET1K_V2": "resnet50-11ad3fa6.pth"}
    assert set(WEIGHTS) == set(list_models())


def test_get_model_and_list_models():
    assert list_models() == sorted(list_models())
    assert "resnet18" in list_models(include="resnet*")
    assert "resnext50_32x4d" not in list_models(include="resnet*")
    assert all(not n.startswith("wide") for n in list_models(exclude="wide_*"))
    import minidl.models.vgg

    assert list_models(minidl.models.vgg) == ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
                                              "vgg16_bn", "vgg19", "vgg19_bn"]
    assert list_models(minidl.models) == list_models()
    m = get_model("ResNet18", num_classes=7)
    assert m.fc.weight.shape == (7, 512)
    with pytest.raises(ValueError, match="Unknown model resnet7"):
        get_model("resnet7")
    with pytest.raises(TypeError):
        get_model("resnet18", weights=3)


def test_convert_cli_names_the_known_archs(tmp_path, capsys):
    src = tmp_path / "w.pth"
    torch.save({"a": torch.ones(2)}, src)
    assert convert_main([str(src), str(tmp_path / "o.npz"), "--arch", "resnet7"]) == 2
    err = capsys.readouterr().err
    assert "unknown arch 'resnet7'" in err and "mobilenet_v3_small" in err and "'none'" in err


# ---- the device path (numpy-backed fake GPU) -----------------------------------------------
@pytest.fixture
def fake_cuda(monkeypatch, tmp_path_factory):
    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path_factory.mktemp("fake_gpu"))
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    _fake_gpu.install(monkeypatch, lib)
    return "cuda"


def test_mobilenet_v3_and_stochastic_depth_on_the_fake_gpu(fake_cuda):
    """Hardswish, hard-sigmoid squeeze-excitation, depthwise convs and BatchNorm(eps=1e-3) on
    the device path, a train step and eval in float64 against the CPU; stochastic depth draws
    its mask on the input's device."""
    from minidl.models._blocks import stochastic_depth

    minidl.manual_seed(0)
    state = {k: v.numpy() for k, v in get_model("mobilenet_v3_small", num_classes=5).state_dict().items()}
    x = _input(32, seed=8)
    results = []
    for dev in (fake_cuda, "cpu"):
        model = get_model("mobilenet_v3_small", num_classes=5)
        model.load_state_dict(state)
        model = model.double().to(dev)
        _no_dropout(model)
        out = model(minidl.tensor(x, dtype=minidl.float64, device=dev))
        assert str(out.device).startswith("cuda" if dev != "cpu" else "cpu")
        out.sum().backward()
        grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
        with minidl.no_grad():
            logits = model.eval()(minidl.tensor(x, dtype=minidl.float64, device=dev)).numpy()
        results.append((grads, logits))
    (g1, l1), (g0, l0) = results
    _assert_close(l1, l0)
    for k in g0:
        _assert_close(g1[k], g0[k], 1e-8, floor=1e-3)
    for fill in ("bernoulli_", "uniform_", "normal_"):  # host draws copied onto the device
        t = getattr(minidl.empty(4, 3, device=fake_cuda), fill)()
        assert str(t.device).startswith("cuda") and np.isfinite(t.numpy()).all()
    y = stochastic_depth(minidl.tensor(np.ones((16, 2)), device=fake_cuda), 0.5, "row")
    assert str(y.device).startswith("cuda") and set(np.unique(y.numpy())) <= {0.0, 2.0}


def test_new_family_blocks_on_the_fake_gpu(fake_cuda):
    """The blocks of RegNet (grouped 3x3 + squeeze-excitation + projection shortcut),
    EfficientNetV2 (FusedMBConv), MNASNet (inverted residual), GoogLeNet (Inception branches
    with a ceil-mode pool, transform_input) and Inception-v3 (InceptionE's split branches,
    padded average pool) and Swin (shifted padded window attention, odd patch merging) on the
    device path: a train-mode forward and backward in float64 against the CPU."""
    from minidl.models._blocks import transform_input_imagenet
    from minidl.models.efficientnet import FusedMBConv, FusedMBConvConfig
    from minidl.models.googlenet import Inception
    from minidl.models.inception import InceptionE
    from minidl.models.mnasnet import _InvertedResidual
    from minidl.models.regnet import ResBottleneckBlock

    nn_ = minidl.nn
    builders = [
        lambda: ResBottleneckBlock(16, 32, 2, nn_.BatchNorm2d, nn_.ReLU, group_width=8, se_ratio=0.25),
        lambda: FusedMBConv(FusedMBConvConfig(4, 3, 2, 16, 24, 1), 0.0, nn_.BatchNorm2d),
        lambda: _InvertedResidual(16, 16, 5, 1, 3),
        lambda: Inception(16, 4, 4, 8, 2, 4, 4),
        lambda: InceptionE(16),
    ]
    x = np.random.default_rng(24).standard_normal((2, 16, 7, 7))
    for build in builders:
        minidl.manual_seed(0)
        state = {k: v.numpy() for k, v in build().state_dict().items()}
        results = []
        for dev in (fake_cuda, "cpu"):
            block = build()
            block.load_state_dict(state)
            block = block.double().to(dev).train()
            xin = minidl.tensor(x, dtype=minidl.float64, device=dev, requires_grad=True)
            out = block(xin)
            assert str(out.device).startswith("cuda" if dev != "cpu" else "cpu")
            # a weighted sum: a plain sum through a train-mode BatchNorm has a zero gradient
            w = np.random.default_rng(26).standard_normal(tuple(out.shape))
            (out * minidl.tensor(w, dtype=minidl.float64, device=dev)).sum().backward()
            results.append((out.detach().numpy(), xin.grad.numpy(),
                            {n: p.grad.numpy() for n, p in block.named_parameters()}))
        (o1, g1, p1), (o0, g0, p0) = results
        _assert_close(o1, o0)
        _assert_close(g1, g0, 1e-8)
        for k in p0:
            _assert_close(p1[k], p0[k], 1e-8, floor=1e-3)
    # Swin on channels-last maps: a shifted, padded window attention (its mask and the bias
    # gather built on the input's device) and an odd-sized patch merge
    from minidl.models.swin_transformer import PatchMerging, SwinTransformerBlock

    xs = np.random.default_rng(30).standard_normal((2, 6, 5, 16))
    for build in (lambda: SwinTransformerBlock(16, 2, [4, 4], [2, 2]), lambda: PatchMerging(16)):
        minidl.manual_seed(1)
        state = {k: v.numpy() for k, v in build().state_dict().items()}
        results = []
        for dev in (fake_cuda, "cpu"):
            block = build()
            block.load_state_dict(state)
            block = block.double().to(dev)
            xin = minidl.tensor(xs, dtype=minidl.float64, device=dev, requires_grad=True)
            out = block(xin)
            assert str(out.device).startswith("cuda" if dev != "cpu" else "cpu")
            w = np.random.default_rng(31).standard_normal(tuple(out.shape))
            (out * minidl.tensor(w, dtype=minidl.float64, device=dev)).sum().backward()
            results.append((out.detach().numpy(), xin.grad.numpy(),
                            {n: p.grad.numpy() for n, p in block.named_parameters()}))
        (o1, g1, p1), (o0, g0, p0) = results
        _assert_close(o1, o0)
        _assert_close(g1, g0, 1e-8)
        for k in p0:
            _assert_close(p1[k], p0[k], 1e-8, floor=1e-6)
    img = np.random.default_rng(25).standard_normal((2, 3, 4, 4))
    got = transform_input_imagenet(minidl.tensor(img, device=fake_cuda))
    assert str(got.device).startswith("cuda")
    want = transform_input_imagenet(minidl.tensor(img)).numpy()
    _assert_close(got.numpy(), want)
    assert np.allclose(want[:, 1], img[:, 1] * 0.224 / 0.5 + (0.456 - 0.5) / 0.5)
