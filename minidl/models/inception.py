"""Inception v3 (Szegedy et al., 2015) in torchvision's layout (``Inception3``): a BasicConv2d
stem, Mixed_5b-5d (InceptionA), 6a (InceptionB, grid reduction), 6b-6e (InceptionC, factorised
1x7/7x1 convs), 7a (InceptionD, reduction), 7b-7c (InceptionE, expanded 1x3/3x1 branches), an
auxiliary classifier after Mixed_6e, global average pooling, dropout and a linear classifier.
It expects N x 3 x 299 x 299 input (at least 75 x 75; the auxiliary head, which runs in train
mode only, needs the full 299).

As torchvision's: with ``aux_logits=True`` a train-mode forward returns
``InceptionOutputs(logits, aux_logits)``, eval mode the logits; ``transform_input=True`` maps
ImageNet-normalised input to the [-1, 1] scaling of the ported weights. With ``weights=``,
``transform_input`` defaults to True and the file's auxiliary head is loaded, then dropped if
``aux_logits=False`` was passed (torchvision's builder)."""
from __future__ import annotations

import warnings
from collections import namedtuple

from .. import cat, nn
from ..nn import functional as F
from ._blocks import (
    aux_head_kwargs, BasicConv2d, check_image, init_inception_style, transform_input_imagenet,
)
from .resnet import _build

__all__ = ["Inception3", "InceptionOutputs", "inception_v3"]

InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])
_InceptionOutputs = InceptionOutputs


class InceptionA(nn.Module):
    def __init__(self, in_channels, pool_features, conv_block=None):
        super().__init__()
        B = BasicConv2d if conv_block is None else conv_block
        self.branch1x1 = B(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = B(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = B(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = B(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = B(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = B(96, 96, kernel_size=3, padding=1)
        self.branch_pool = B(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels, conv_block=None):
        super().__init__()
        B = BasicConv2d if conv_block is None else conv_block
        self.branch3x3 = B(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = B(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = B(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = B(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels, channels_7x7, conv_block=None):
        super().__init__()
        B = BasicConv2d if conv_block is None else conv_block
        c7 = channels_7x7
        self.branch1x1 = B(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = B(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = B(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = B(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = B(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = B(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = B(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = B(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = B(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = B(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return cat([self.branch1x1(x), b7, d, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels, conv_block=None):
        super().__init__()
        B = BasicConv2d if conv_block is None else conv_block
        self.branch3x3_1 = B(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = B(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = B(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = B(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = B(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = B(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels, conv_block=None):
        super().__init__()
        B = BasicConv2d if conv_block is None else conv_block
        self.branch1x1 = B(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = B(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = B(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = B(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = B(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = B(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = B(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = B(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = B(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return cat([self.branch1x1(x), b3, d, bp], 1)


class InceptionAux(nn.Module):
    """5x5/3 average pool, 1x1 conv to 128, 5x5 conv to 768, global average pool, fc."""

    def __init__(self, in_channels, num_classes, conv_block=None):
        super().__init__()
        B = BasicConv2d if conv_block is None else conv_block
        self.conv0 = B(in_channels, 128, kernel_size=1)
        self.conv1 = B(128, 768, kernel_size=5)
        self.conv1.stddev = 0.01  # as torchvision (set on the block, so its init never reads it)
        self.fc = nn.Linear(768, num_classes)
        self.fc.stddev = 0.001

    def forward(self, x):
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(F.adaptive_avg_pool2d(x, (1, 1)).flatten(1))


class Inception3(nn.Module):
    """torchvision's ``Inception3(num_classes=1000, aux_logits=True, transform_input=False,
    inception_blocks=None, init_weights=None, dropout=0.5)``."""

    classifier_key = "fc"

    def __init__(self, num_classes=1000, aux_logits=True, transform_input=False,
                 inception_blocks=None, init_weights=None, dropout=0.5):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"Inception3: num_classes must be >= 1, got {num_classes}")
        if inception_blocks is None:
            inception_blocks = [BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD,
                                InceptionE, InceptionAux]
        if init_weights is None:
            warnings.warn("The default weight initialization of inception_v3 will be changed in "
                          "future releases of torchvision. If you wish to keep the old behavior "
                          "(which leads to long initialization times due to scipy/scipy#11299), "
                          "please set init_weights=True.", FutureWarning)
            init_weights = True
        if len(inception_blocks) != 7:
            raise ValueError(f"length of inception_blocks should be 7 instead of "
                             f"{len(inception_blocks)}")
        B, A, Bk, C, D, E, Aux = inception_blocks
        self.num_classes = int(num_classes)
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.Conv2d_1a_3x3 = B(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = B(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = B(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = B(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = B(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = A(192, pool_features=32)
        self.Mixed_5c = A(256, pool_features=64)
        self.Mixed_5d = A(288, pool_features=64)
        self.Mixed_6a = Bk(288)
        self.Mixed_6b = C(768, channels_7x7=128)
        self.Mixed_6c = C(768, channels_7x7=160)
        self.Mixed_6d = C(768, channels_7x7=160)
        self.Mixed_6e = C(768, channels_7x7=192)
        self.AuxLogits = Aux(768, self.num_classes) if aux_logits else None
        self.Mixed_7a = D(768)
        self.Mixed_7b = E(1280)
        self.Mixed_7c = E(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, self.num_classes)
        if init_weights:  # torchvision's: truncated N(0, stddev or 0.1) in [-2, 2]
            init_inception_style(self, lambda m: float(getattr(m, "stddev", 0.1)))

    def _transform_input(self, x):
        return transform_input_imagenet(x) if self.transform_input else x

    def forward(self, x):
        check_image("Inception3", x, " (299x299 for ImageNet)")
        x = self._transform_input(x)
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = self.fc(self.dropout(self.avgpool(x)).flatten(1))
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


def inception_v3(weights=None, num_classes=1000, **kwargs):
    original_aux_logits = aux_head_kwargs(weights, kwargs, True)
    model = _build("inception_v3", Inception3(num_classes=num_classes, **kwargs), weights)
    if weights is not None and not original_aux_logits:
        model.aux_logits = False
        model.AuxLogits = None
    return model


def _document():
    from .resnet import _document as doc

    doc(inception_v3, "Inception v3")
    inception_v3.__doc__ += ("    It expects 299x299 input. With ``weights``, ``transform_input`` "
                             "defaults to True.\n")


_document()
