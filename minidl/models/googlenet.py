"""GoogLeNet / Inception v1 (Szegedy et al., 2014) in torchvision's layout: BasicConv2d
(conv, BatchNorm eps=0.001, ReLU) stem, nine Inception modules (1x1 | 1x1-3x3 | 1x1-3x3 |
3x3 max pool-1x1 branches, concatenated; torchvision's third branch uses a 3x3 where the paper
has a 5x5, and so does this), two auxiliary classifiers after inception4a and inception4d,
global average pooling, dropout and a linear classifier.

As torchvision's: the auxiliary heads run only in train mode, and with ``aux_logits=True`` a
train-mode forward returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` (the field
named aux_logits2 holds the head after inception4a, as torchvision's forward passes them);
eval mode (or ``aux_logits=False``) returns the logits. ``transform_input=True`` maps
ImageNet-normalised input to the [-1, 1] scaling of the ported weights. With ``weights=``, the
builder defaults ``transform_input`` to True and loads the file's auxiliary heads, then drops
them unless ``aux_logits=True`` was asked for (torchvision's builder)."""
from __future__ import annotations

import warnings
from collections import namedtuple

from .. import cat, nn
from ..nn import functional as F
from ._blocks import (
    aux_head_kwargs, BasicConv2d, check_image, init_inception_style, transform_input_imagenet,
)
from .resnet import _build

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "googlenet"]

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])
_GoogLeNetOutputs = GoogLeNetOutputs


class Inception(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                 conv_block=None):
        super().__init__()
        conv_block = BasicConv2d if conv_block is None else conv_block
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(conv_block(in_channels, ch3x3red, kernel_size=1),
                                     conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(conv_block(in_channels, ch5x5red, kernel_size=1),
                                     conv_block(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     conv_block(in_channels, pool_proj, kernel_size=1))

    def forward(self, x):
        return cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """4x4 adaptive average pool, 1x1 conv to 128, fc 2048->1024 (ReLU, dropout), fc."""

    def __init__(self, in_channels, num_classes, conv_block=None, dropout=0.7):
        super().__init__()
        conv_block = BasicConv2d if conv_block is None else conv_block
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x):
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4))).flatten(1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    """torchvision's ``GoogLeNet(num_classes=1000, aux_logits=True, transform_input=False,
    init_weights=None, blocks=None, dropout=0.2, dropout_aux=0.7)``."""

    classifier_key = "fc"

    def __init__(self, num_classes=1000, aux_logits=True, transform_input=False,
                 init_weights=None, blocks=None, dropout=0.2, dropout_aux=0.7):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"GoogLeNet: num_classes must be >= 1, got {num_classes}")
        blocks = [BasicConv2d, Inception, InceptionAux] if blocks is None else blocks
        if init_weights is None:
            warnings.warn("The default weight initialization of GoogleNet will be changed in future "
                          "releases of torchvision. If you wish to keep the old behavior (which "
                          "leads to long initialization times due to scipy/scipy#11299), please "
                          "set init_weights=True.", FutureWarning)
            init_weights = True
        if len(blocks) != 3:
            raise ValueError(f"blocks length should be 3 instead of {len(blocks)}")
        conv_block, inception_block, aux_block = blocks
        self.num_classes = int(num_classes)
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.conv1 = conv_block(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = conv_block(64, 64, kernel_size=1)
        self.conv3 = conv_block(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = inception_block(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception_block(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception_block(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception_block(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception_block(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception_block(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception_block(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = inception_block(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inception_block(832, 384, 192, 384, 48, 128, 128)
        if aux_logits:
            self.aux1 = aux_block(512, self.num_classes, dropout=dropout_aux)
            self.aux2 = aux_block(528, self.num_classes, dropout=dropout_aux)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, self.num_classes)
        if init_weights:  # torchvision's: truncated N(0, 0.01) in [-2, 2], BatchNorm identity
            init_inception_style(self, lambda m: 0.01)

    def _transform_input(self, x):
        return transform_input_imagenet(x) if self.transform_input else x

    def forward(self, x):
        check_image("GoogLeNet", x)
        x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(self.avgpool(x).flatten(1)))
        if self.training and self.aux_logits:
            # torchvision's forward swaps the two heads' names on the way out
            return GoogLeNetOutputs(x, aux1, aux2)
        return x


def googlenet(weights=None, num_classes=1000, **kwargs):
    original_aux_logits = aux_head_kwargs(weights, kwargs, False)
    model = _build("googlenet", GoogLeNet(num_classes=num_classes, **kwargs), weights)
    if weights is not None:
        if not original_aux_logits:
            model.aux_logits = False
            model.aux1 = model.aux2 = None
        else:
            warnings.warn("auxiliary heads in the pretrained googlenet model are NOT pretrained, "
                          "so make sure to train them")
    return model


def _document():
    from .resnet import _document as doc

    doc(googlenet, "GoogLeNet (Inception v1)")
    googlenet.__doc__ += ("    With ``weights``, ``transform_input`` defaults to True and the "
                          "auxiliary heads are dropped\n    unless ``aux_logits=True``; without, "
                          "GoogLeNet's defaults apply (``aux_logits=True``).\n")


_document()
