"""The ResNet family (He et al., 2015) in torchvision's layout, so torchvision checkpoints load
by name: ResNet-18/34 (basic blocks), ResNet-50/101/152 (bottlenecks), ResNeXt (grouped 3x3
convs) and Wide ResNet (twice the bottleneck width).

torchvision's "v1.5" variant: each bottleneck downsamples in its 3x3 conv (stride 2 there),
not in the first 1x1 conv as the paper did. Module names follow torchvision exactly
(``layer1.0.downsample.1.running_var``), which is what makes conversion a rename-free copy.

No weights are downloaded here. ``resnet50(weights=...)`` (and every other builder) takes
torchvision's ``.pth`` (or ``.npz`` converted from it once with ``python -m
minidl.models.convert --arch NAME``), a ``.safetensors`` file with torchvision's names, or a
torchvision weights name (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``, ``"DEFAULT"``,
``"ResNet50_Weights.IMAGENET1K_V2"``), which finds torchvision's downloaded file under
``$TORCH_HOME/hub/checkpoints`` (see ``models.weights``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .. import nn
from ..backend.dtypes import is_floating
from ..nn import functional as F
from ..tensor import Tensor
from ._blocks import check_image

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101",
           "resnet152", "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
           "wide_resnet50_2", "wide_resnet101_2", "load_weights"]


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first carries the stride), plus the shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm_layer=None):
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64, got "
                             f"groups={groups}, base_width={base_width}")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample  # None is kept as a plain attribute: no state
        self.stride = stride

    def forward(self, x):
        out = _norm_relu(self.bn1, self.conv1(x))  # relu(bn1(...)) in one pass
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.add_relu(out, identity)  # relu(out + identity) in one pass

    def _last_bn(self):
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride; grouped for ResNeXt), 1x1 expand by 4, plus the
    shortcut. The inner width is ``planes * base_width / 64 * groups``, as torchvision's."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm_layer=None):
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, groups=groups,
                               dilation=dilation, bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample  # None is kept as a plain attribute: no state
        self.stride = stride

    def forward(self, x):
        out = _norm_relu(self.bn1, self.conv1(x))  # relu(bn1(...)) in one pass
        out = _norm_relu(self.bn2, self.conv2(out))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.add_relu(out, identity)  # relu(out + identity) in one pass

    def _last_bn(self):
        return self.bn3


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _norm_relu(norm, x):
    """relu(norm(x)): fused for minidl's BatchNorm, in two steps for another ``norm_layer``."""
    fused = getattr(norm, "forward_relu", None)
    return fused(x) if fused is not None else F.relu(norm(x))


class ResNet(nn.Module):
    """The ImageNet ResNet stem and four stages of ``block``s, torchvision's constructor:
    ``ResNet(block, layers, num_classes=1000, zero_init_residual=False, groups=1,
    width_per_group=64, replace_stride_with_dilation=None, norm_layer=None)``; ``block`` is
    BasicBlock or Bottleneck (or "basic"/"bottleneck"). ``replace_stride_with_dilation`` (three
    bools, for layer2-4) trades a stage's stride 2 for dilation (output stride 16 or 8, as
    segmentation backbones use; Bottleneck only); ``norm_layer(channels)`` replaces every
    BatchNorm2d (e.g. ``lambda c: nn.GroupNorm(32, c)``)."""

    classifier_key = "fc"  # the last layer, named in a num_classes mismatch

    def __init__(self, block=Bottleneck, layers=(3, 4, 6, 3), num_classes=1000,
                 zero_init_residual=False, groups=1, width_per_group=64,
                 replace_stride_with_dilation=None, norm_layer=None):
        super().__init__()
        block = _BLOCKS.get(block, block) if isinstance(block, str) else block
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"ResNet: block must be BasicBlock or Bottleneck, got {block!r}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"ResNet: layers must be four block counts >= 1, got {layers!r}")
        if int(num_classes) < 1:
            raise ValueError(f"ResNet: num_classes must be >= 1, got {num_classes}")
        if int(groups) < 1 or int(width_per_group) < 1:
            raise ValueError(f"ResNet: groups and width_per_group must be >= 1, got "
                             f"{groups} and {width_per_group}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None or a 3-element tuple, "
                             f"got {replace_stride_with_dilation}")
        self.num_classes = int(num_classes)
        self.groups, self.base_width = int(groups), int(width_per_group)
        self._norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2,
                                       dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2,
                                       dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2,
                                       dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        self.fc = nn.Linear(self.num_features, self.num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample = None
        out_channels = planes * block.expansion
        previous_dilation = self.dilation
        if dilate:  # torchvision's: the stage keeps its resolution, later convs dilate
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                self._norm_layer(out_channels),
            )
        kw = dict(groups=self.groups, base_width=self.base_width, norm_layer=self._norm_layer)
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation, **kw)]
        self.inplanes = out_channels
        layers += [block(self.inplanes, planes, dilation=self.dilation, **kw)
                   for _ in range(1, int(blocks))]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual=False):
        # torchvision's scheme: He-normal (fan_out) convs, BatchNorm at the identity, and with
        # zero_init_residual each block's last BatchNorm at zero. The fc keeps nn.Linear's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m._last_bn().weight)

    def features(self, x):
        """The pooled image embedding (N, num_features): everything but the classifier."""
        check_image("ResNet", x)
        x = self.maxpool(_norm_relu(self.bn1, self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


def _read_weights(weights, arch="resnet50"):
    """A path (.npz from the converter, a PyTorch .pth/.pt, a .safetensors), a torchvision
    weights name ("IMAGENET1K_V2") or a mapping -> ({name: array}, where it came from)."""
    if isinstance(weights, Mapping):
        state = {k: (v.numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in weights.items()}
        source = "the given state_dict"
    elif isinstance(weights, (str, os.PathLike)):
        from .convert import load_torch_checkpoint  # reads .npz and .safetensors too, runs no pickled code
        from .weights import resolve_weights_path

        source = resolve_weights_path(weights, arch=arch)  # "IMAGENET1K_V2" -> torchvision's cached file
        state = load_torch_checkpoint(source)
    else:
        raise TypeError(f"weights must be a path, a weights name, a state_dict or None, got "
                        f"{type(weights).__name__}")
    # PyTorch's BatchNorm step counter does not change inference; converted files drop it
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, source


def load_weights(model, weights, arch="resnet50"):
    """Load ``weights`` (path, weights name of ``arch``, or mapping) into ``model`` strictly;
    every problem in one error."""
    from .convert import check_state_dict

    state, source = _read_weights(weights, arch)
    remap = getattr(model, "remap_state_dict", None)  # old key spellings (DenseNet's files)
    if remap is not None:
        state = remap(state)
    head = getattr(model, "classifier_key", "fc")
    head_w = state.get(f"{head}.weight")
    num_classes = getattr(model, "num_classes", None)
    if head_w is not None and np.ndim(head_w) >= 2 and num_classes is not None \
            and head_w.shape[0] != num_classes:
        raise ValueError(
            f"weights {source} are for {head_w.shape[0]} classes ({head}.weight "
            f"{tuple(head_w.shape)}), but the model was built with num_classes={num_classes}; "
            f"pass num_classes={head_w.shape[0]}, or load the backbone and replace model.{head}")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    problems = check_state_dict(expected, state)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError(f"weights {source} do not fit {type(model).__name__} "
                         f"({len(problems)} problems):\n  " + "\n  ".join(shown))
    model_state = model.state_dict()
    # integer buffers (Swin's relative_position_index) load as integers; everything else is float
    non_float = [k for k, v in state.items() if not is_floating(np.asarray(v).dtype)
                 and is_floating(model_state[k].data.dtype)]  # bfloat16 (kind 'V') is float
    if non_float:
        raise ValueError(f"weights {source}: expected floating-point tensors, got "
                         + ", ".join(f"{k} ({np.asarray(state[k]).dtype})" for k in non_float[:5]))
    model.load_state_dict(state, strict=True)
    return model


def _build(arch, model, weights):
    """Every builder's tail: load ``weights`` (None: keep the random initialisation)."""
    if weights is not None:
        load_weights(model, weights, arch)
    return model


def _resnet(arch, block, layers, weights, num_classes, **kwargs):
    return _build(arch, ResNet(block, layers, num_classes=num_classes, **kwargs), weights)


_DOC = """{title} with torchvision's parameter names; ``weights`` is a path to a converted
    ``.npz``, a PyTorch checkpoint (``.pth``), a ``.safetensors`` file, a torchvision weights name
    ({names}; torchvision's cached download, see ``models.weights``), a state_dict, or None for
    random weights.

    Like a PyTorch module, the model starts in train mode: call ``model.eval()`` for inference
    (BatchNorm then uses the loaded running statistics).
    """


def resnet18(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnet18", BasicBlock, (2, 2, 2, 2), weights, num_classes, **kwargs)


def resnet34(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnet34", BasicBlock, (3, 4, 6, 3), weights, num_classes, **kwargs)


def resnet50(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnet50", Bottleneck, (3, 4, 6, 3), weights, num_classes, **kwargs)


def resnet101(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnet101", Bottleneck, (3, 4, 23, 3), weights, num_classes, **kwargs)


def resnet152(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnet152", Bottleneck, (3, 8, 36, 3), weights, num_classes, **kwargs)


def resnext50_32x4d(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnext50_32x4d", Bottleneck, (3, 4, 6, 3), weights, num_classes,
                   groups=32, width_per_group=4, **kwargs)


def resnext101_32x8d(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnext101_32x8d", Bottleneck, (3, 4, 23, 3), weights, num_classes,
                   groups=32, width_per_group=8, **kwargs)


def resnext101_64x4d(weights=None, num_classes=1000, **kwargs):
    return _resnet("resnext101_64x4d", Bottleneck, (3, 4, 23, 3), weights, num_classes,
                   groups=64, width_per_group=4, **kwargs)


def wide_resnet50_2(weights=None, num_classes=1000, **kwargs):
    return _resnet("wide_resnet50_2", Bottleneck, (3, 4, 6, 3), weights, num_classes,
                   width_per_group=128, **kwargs)


def wide_resnet101_2(weights=None, num_classes=1000, **kwargs):
    return _resnet("wide_resnet101_2", Bottleneck, (3, 4, 23, 3), weights, num_classes,
                   width_per_group=128, **kwargs)


def _document(fn, title):
    from .weights import weight_names

    fn.__doc__ = _DOC.format(title=title, names=", ".join(weight_names(fn.__name__)))


for _fn, _title in [(resnet18, "ResNet-18"), (resnet34, "ResNet-34"), (resnet50, "ResNet-50"),
                    (resnet101, "ResNet-101"), (resnet152, "ResNet-152"),
                    (resnext50_32x4d, "ResNeXt-50 32x4d"), (resnext101_32x8d, "ResNeXt-101 32x8d"),
                    (resnext101_64x4d, "ResNeXt-101 64x4d"),
                    (wide_resnet50_2, "Wide ResNet-50-2"), (wide_resnet101_2, "Wide ResNet-101-2")]:
    _document(_fn, _title)
