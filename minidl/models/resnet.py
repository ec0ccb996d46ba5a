"""ResNet-50 (He et al., 2015) in torchvision's layout, so torchvision checkpoints load by name.

torchvision's "v1.5" variant: each bottleneck downsamples in its 3x3 conv (stride 2 there),
not in the first 1x1 conv as the paper did. Module names follow torchvision exactly
(``layer1.0.downsample.1.running_var``), which is what makes conversion a rename-free copy.

No weights are downloaded here. ``resnet50(weights=...)`` takes torchvision's ``.pth`` (or
``.npz`` converted from it once with ``python -m minidl.models.convert``), a ``.safetensors``
file with torchvision's names, or the names ``"IMAGENET1K_V1"``/``"IMAGENET1K_V2"``, which find
torchvision's downloaded files under ``$TORCH_HOME/hub/checkpoints`` (see ``models.weights``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .. import nn
from ..nn import functional as F
from ..tensor import Tensor

__all__ = ["Bottleneck", "ResNet", "resnet50", "load_weights"]


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample  # None is kept as a plain attribute: no state
        self.stride = stride

    def forward(self, x):
        out = self.bn1.forward_relu(self.conv1(x))  # relu(bn1(...)) in one pass
        out = self.bn2.forward_relu(self.conv2(out))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.add_relu(out, identity)  # relu(out + identity) in one pass


class ResNet(nn.Module):
    """The ImageNet ResNet stem and four stages of bottleneck blocks."""

    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000):
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"ResNet: layers must be four block counts >= 1, got {layers!r}")
        if int(num_classes) < 1:
            raise ValueError(f"ResNet: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * Bottleneck.expansion
        self.fc = nn.Linear(self.num_features, self.num_classes)
        self._init_weights()

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        out_channels = planes * Bottleneck.expansion
        if stride != 1 or self.inplanes != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_channels
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, int(blocks))]
        return nn.Sequential(*layers)

    def _init_weights(self):
        # torchvision's scheme: He-normal (fan_out) convs, BatchNorm at the identity. The fc
        # keeps nn.Linear's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x):
        """The pooled 2048-d image embedding (N, 2048): everything but the classifier."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet: expected input (N, 3, H, W), got shape {tuple(x.shape)}")
        x = self.maxpool(self.bn1.forward_relu(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


def _read_weights(weights):
    """A path (.npz from the converter, a PyTorch .pth/.pt, a .safetensors), a torchvision
    weights name ("IMAGENET1K_V2") or a mapping -> ({name: array}, where it came from)."""
    if isinstance(weights, Mapping):
        state = {k: (v.numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in weights.items()}
        source = "the given state_dict"
    elif isinstance(weights, (str, os.PathLike)):
        from .convert import load_torch_checkpoint  # reads .npz and .safetensors too, runs no pickled code
        from .weights import resolve_weights_path

        source = resolve_weights_path(weights)  # "IMAGENET1K_V2" -> torchvision's cached file
        state = load_torch_checkpoint(source)
    else:
        raise TypeError(f"weights must be a path, a state_dict or None, got {type(weights).__name__}")
    # PyTorch's BatchNorm step counter does not change inference; converted files drop it
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, source


def load_weights(model, weights):
    """Load ``weights`` (path or mapping) into ``model`` strictly; every problem in one error."""
    from .convert import check_state_dict

    state, source = _read_weights(weights)
    fc = state.get("fc.weight")
    if fc is not None and np.ndim(fc) == 2 and fc.shape[0] != model.num_classes:
        raise ValueError(
            f"weights {source} are for {fc.shape[0]} classes (fc.weight {tuple(fc.shape)}), but "
            f"the model was built with num_classes={model.num_classes}; pass "
            f"num_classes={fc.shape[0]}, or load the backbone and replace model.fc")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    problems = check_state_dict(expected, state)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError(f"weights {source} do not fit {type(model).__name__} "
                         f"({len(problems)} problems):\n  " + "\n  ".join(shown))
    non_float = [k for k, v in state.items() if np.asarray(v).dtype.kind != "f"]
    if non_float:
        raise ValueError(f"weights {source}: expected floating-point tensors, got "
                         + ", ".join(f"{k} ({np.asarray(state[k]).dtype})" for k in non_float[:5]))
    model.load_state_dict(state, strict=True)
    return model


def resnet50(weights=None, num_classes=1000):
    """ResNet-50 with torchvision's parameter names; ``weights`` is a path to a converted
    ``.npz``, a PyTorch checkpoint (``.pth``), a ``.safetensors`` file, "IMAGENET1K_V1" or
    "IMAGENET1K_V2" (torchvision's cached download), a state_dict, or None for random weights.

    Like a PyTorch module, the model starts in train mode: call ``model.eval()`` for inference
    (BatchNorm then uses the loaded running statistics).
    """
    model = ResNet((3, 4, 6, 3), num_classes=num_classes)
    if weights is not None:
        load_weights(model, weights)
    return model

