"""ShuffleNetV2 x0.5/x1.0/x1.5/x2.0 (Ma et al., 2018) in torchvision's layout: units that
split the channels (or, downsampling, run two branches), a depthwise 3x3 between 1x1 convs,
and a channel shuffle of two groups after each unit. PyTorch's default initialisation, as
torchvision."""
from __future__ import annotations

from .. import cat, nn
from ..nn.functional import channel_shuffle  # torch.nn.functional's, as torchvision's model uses
from .resnet import _build

__all__ = ["ShuffleNetV2", "channel_shuffle", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
           "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError("illegal stride value")
        self.stride = stride
        bf = oup // 2
        if stride == 1 and inp != bf << 1:
            raise ValueError(f"Invalid combination of stride {stride}, inp {inp} and oup {oup} "
                             "values. If stride == 1 then inp should be equal to oup // 2 << 1.")
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU())
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            half = x.shape[1] // 2
            out = cat([x[:, :half], self.branch2(x[:, half:])], 1)
        else:
            out = cat([self.branch1(x), self.branch2(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    classifier_key = "fc"

    def __init__(self, stages_repeats, stages_out_channels, num_classes=1000):
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError("expected stages_repeats as list of 3 positive ints")
        if len(stages_out_channels) != 5:
            raise ValueError("expected stages_out_channels as list of 5 positive ints")
        if int(num_classes) < 1:
            raise ValueError(f"ShuffleNetV2: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        out = stages_out_channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(3, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out),
                                   nn.ReLU())
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inp = out
        for name, repeats, out in zip(("stage2", "stage3", "stage4"), stages_repeats,
                                      stages_out_channels[1:]):
            units = [InvertedResidual(inp, out, 2)]
            units += [InvertedResidual(out, out, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            inp = out
        out = stages_out_channels[-1]
        self.conv5 = nn.Sequential(nn.Conv2d(inp, out, 1, bias=False), nn.BatchNorm2d(out),
                                   nn.ReLU())
        self.fc = nn.Linear(out, self.num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


def _shufflenet(arch, channels, weights, num_classes, **kwargs):
    return _build(arch, ShuffleNetV2([4, 8, 4], channels, num_classes, **kwargs), weights)


def shufflenet_v2_x0_5(weights=None, num_classes=1000, **kwargs):
    """ShuffleNetV2 x0.5 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _shufflenet("shufflenet_v2_x0_5", [24, 48, 96, 192, 1024], weights, num_classes, **kwargs)


def shufflenet_v2_x1_0(weights=None, num_classes=1000, **kwargs):
    """ShuffleNetV2 x1.0 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _shufflenet("shufflenet_v2_x1_0", [24, 116, 232, 464, 1024], weights, num_classes, **kwargs)


def shufflenet_v2_x1_5(weights=None, num_classes=1000, **kwargs):
    """ShuffleNetV2 x1.5 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _shufflenet("shufflenet_v2_x1_5", [24, 176, 352, 704, 1024], weights, num_classes, **kwargs)


def shufflenet_v2_x2_0(weights=None, num_classes=1000, **kwargs):
    """ShuffleNetV2 x2.0 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _shufflenet("shufflenet_v2_x2_0", [24, 244, 488, 976, 2048], weights, num_classes, **kwargs)
