"""Vision Transformer B/16, B/32, L/16, L/32, H/14 (Dosovitskiy et al., 2020) in torchvision's
layout: a patchify conv ``conv_proj``, a learnt ``class_token`` and ``encoder.pos_embedding``,
pre-norm encoder blocks (``ln_1``, ``self_attention`` as nn.MultiheadAttention, ``ln_2``,
``mlp``), ``encoder.ln`` and ``heads.head``. The input size is fixed at build time
(``image_size``, 224 by default) because the position embedding has one row per patch."""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import numpy as np

from .. import cat, nn
from .resnet import _build

__all__ = ["VisionTransformer", "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"]


class MLPBlock(nn.Sequential):
    """Linear, GELU, Dropout, Linear, Dropout (keys ``0.*`` and ``3.*``)."""

    def __init__(self, in_dim, mlp_dim, dropout):
        super().__init__(nn.Linear(in_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(mlp_dim, in_dim), nn.Dropout(dropout))
        for m in self.modules():  # torchvision's
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)


class EncoderBlock(nn.Module):
    def __init__(self, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, norm_layer):
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads,
                                                    dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = norm_layer(hidden_dim)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout)

    def forward(self, input):
        if input.ndim != 3:
            raise ValueError(f"Expected (batch_size, seq_length, hidden_dim) got {tuple(input.shape)}")
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + input
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout,
                 attention_dropout, norm_layer):
        super().__init__()
        self.pos_embedding = nn.Parameter(np.zeros((1, seq_length, hidden_dim), dtype=np.float32))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout,
                                                attention_dropout, norm_layer))
            for i in range(num_layers)))
        self.ln = norm_layer(hidden_dim)

    def forward(self, input):
        return self.ln(self.layers(self.dropout(input + self.pos_embedding)))


class VisionTransformer(nn.Module):
    classifier_key = "heads.head"

    def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim,
                 dropout=0.0, attention_dropout=0.0, num_classes=1000, representation_size=None,
                 norm_layer=None):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"Input shape indivisible by patch size! ({image_size} % {patch_size})")
        if int(num_classes) < 1:
            raise ValueError(f"VisionTransformer: num_classes must be >= 1, got {num_classes}")
        norm_layer = partial(nn.LayerNorm, eps=1e-6) if norm_layer is None else norm_layer
        self.image_size, self.patch_size, self.hidden_dim = image_size, patch_size, hidden_dim
        self.mlp_dim, self.num_classes = mlp_dim, int(num_classes)
        self.representation_size = representation_size
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        seq_length = (image_size // patch_size) ** 2 + 1  # + the class token
        self.class_token = nn.Parameter(np.zeros((1, 1, hidden_dim), dtype=np.float32))
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout,
                               attention_dropout, norm_layer)
        self.seq_length = seq_length
        heads = OrderedDict()
        if representation_size is None:
            heads["head"] = nn.Linear(hidden_dim, self.num_classes)
        else:
            heads["pre_logits"] = nn.Linear(hidden_dim, representation_size)
            heads["act"] = nn.Tanh()
            heads["head"] = nn.Linear(representation_size, self.num_classes)
        self.heads = nn.Sequential(heads)
        # torchvision's initialisation
        fan_in = 3 * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        if representation_size is not None:
            nn.init.trunc_normal_(self.heads.pre_logits.weight, std=math.sqrt(1 / hidden_dim))
            nn.init.zeros_(self.heads.pre_logits.bias)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def _process_input(self, x):
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.image_size \
                or x.shape[3] != self.image_size:
            raise ValueError(f"VisionTransformer: expected input (N, 3, {self.image_size}, "
                             f"{self.image_size}), got shape {tuple(x.shape)} (the position "
                             "embedding fixes the size: build with image_size=...)")
        n = x.shape[0]
        x = self.conv_proj(x)  # (n, hidden, h/p, w/p)
        return x.reshape(n, self.hidden_dim, -1).permute(0, 2, 1)

    def forward(self, x):
        x = self._process_input(x)
        token = self.class_token.expand(x.shape[0], -1, -1)
        x = self.encoder(cat([token, x], 1))
        return self.heads(x[:, 0])


# torchvision's SWAG end-to-end weights were fine-tuned at these sizes; naming them builds the
# model at that size, as torchvision's builders do
_E2E_SIZES = {"vit_b_16": 384, "vit_l_16": 512, "vit_h_14": 518}


def _vit(arch, patch, layers, heads, hidden, mlp, weights, num_classes, **kwargs):
    from .weights import _canonical

    default = 224
    if isinstance(weights, str) and _canonical(weights, arch) == "IMAGENET1K_SWAG_E2E_V1":
        default = _E2E_SIZES[arch]
    image_size = kwargs.pop("image_size", default)
    model = VisionTransformer(image_size, patch, layers, heads, hidden, mlp,
                              num_classes=num_classes, **kwargs)
    return _build(arch, model, weights)


def vit_b_16(weights=None, num_classes=1000, **kwargs):
    """ViT-B/16 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vit("vit_b_16", 16, 12, 12, 768, 3072, weights, num_classes, **kwargs)


def vit_b_32(weights=None, num_classes=1000, **kwargs):
    """ViT-B/32 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vit("vit_b_32", 32, 12, 12, 768, 3072, weights, num_classes, **kwargs)


def vit_l_16(weights=None, num_classes=1000, **kwargs):
    """ViT-L/16 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vit("vit_l_16", 16, 24, 16, 1024, 4096, weights, num_classes, **kwargs)


def vit_l_32(weights=None, num_classes=1000, **kwargs):
    """ViT-L/32 with torchvision's names; ``weights`` as for ``resnet50``."""
    return _vit("vit_l_32", 32, 24, 16, 1024, 4096, weights, num_classes, **kwargs)


def vit_h_14(weights=None, num_classes=1000, **kwargs):
    """ViT-H/14 with torchvision's names; ``weights`` as for ``resnet50`` (torchvision has only
    SWAG weights for it: DEFAULT is the end-to-end one at 518x518)."""
    return _vit("vit_h_14", 14, 32, 16, 1280, 5120, weights, num_classes, **kwargs)
