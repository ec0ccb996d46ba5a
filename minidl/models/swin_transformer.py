"""Swin Transformer T/S/B (Liu et al., 2021; torchvision's v1 ``swin_t``/``swin_s``/``swin_b``)
in torchvision's layout: a 4x4 patch-embedding conv with LayerNorm on channels-last maps, four
stages of Swin blocks (pre-norm window attention with a learnt relative position bias, every
second block on windows shifted by half a window with the wrapped-around regions masked, then
an MLP; stochastic depth on both branches) joined by patch merging (2x2 neighbourhoods
concatenated, LayerNorm, linear 4C -> 2C), a final LayerNorm, average pooling and the head.

Module and parameter names follow torchvision (``features.1.0.attn.relative_position_bias_table``,
``features.1.0.attn.relative_position_index`` (an int64 buffer, as torchvision saves it),
``features.2.reduction.weight``, ``head.weight``), so its checkpoints load by name. Maps whose
size is not a multiple of the window are padded on the bottom/right, as torchvision does.
Initialisation is torchvision's: every Linear truncated N(0, 0.02) with zero bias, the bias
tables truncated N(0, 0.02)."""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import nn, roll, tensor
from ..nn import functional as F
from ._blocks import check_image, Permute, StochasticDepth, trunc_normal_far_
from .resnet import _build

__all__ = ["SwinTransformer", "SwinTransformerBlock", "ShiftedWindowAttention", "PatchMerging",
           "shifted_window_attention", "swin_t", "swin_s", "swin_b"]


def _patch_merging_pad(x):
    """(..., H, W, C) -> (..., ceil(H/2), ceil(W/2), 4C): each 2x2 neighbourhood's four
    vectors concatenated in torchvision's order (0,0), (1,0), (0,1), (1,1); odd sizes are
    zero-padded at the bottom/right."""
    H, W = x.shape[-3], x.shape[-2]
    if H % 2 or W % 2:
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    from .. import cat

    return cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :],
                x[..., 1::2, 1::2, :]], -1)


class PatchMerging(nn.Module):
    """Halve the resolution, double the channels: 2x2 merge, LayerNorm(4C), Linear(4C, 2C)."""

    def __init__(self, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x):
        return self.reduction(self.norm(_patch_merging_pad(x)))


def _shift_mask(pad_h, pad_w, window_size, shift_size):
    """The (num_windows, N, N) additive mask of a shifted window: 0 between tokens from the
    same region of the un-shifted map, -100 between tokens the cyclic shift brought together."""
    regions = np.zeros((pad_h, pad_w))
    count = 0
    for h0, h1 in ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None)):
        for w0, w1 in ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None)):
            regions[h0:h1, w0:w1] = count
            count += 1
    nh, nw = pad_h // window_size[0], pad_w // window_size[1]
    regions = regions.reshape(nh, window_size[0], nw, window_size[1]).transpose(0, 2, 1, 3)
    regions = regions.reshape(nh * nw, window_size[0] * window_size[1])
    diff = regions[:, None, :] - regions[:, :, None]
    return np.where(diff != 0, -100.0, 0.0)


def shifted_window_attention(input, qkv_weight, proj_weight, relative_position_bias, window_size,
                             num_heads, shift_size, attention_dropout=0.0, dropout=0.0,
                             qkv_bias=None, proj_bias=None, training=True):
    """torchvision.models.swin_transformer.shifted_window_attention (v1): multi-head self
    attention within (shifted) windows of a (B, H, W, C) map."""
    B, H, W, C = input.shape
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b)) if pad_r or pad_b else input
    pad_h, pad_w = x.shape[1], x.shape[2]
    shift_size = list(shift_size)
    if window_size[0] >= pad_h:  # the window covers the map: nothing to shift
        shift_size[0] = 0
    if window_size[1] >= pad_w:
        shift_size[1] = 0
    shifted = sum(shift_size) > 0
    if shifted:
        x = roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    nh, nw = pad_h // window_size[0], pad_w // window_size[1]
    num_windows, n = nh * nw, window_size[0] * window_size[1]
    x = x.reshape(B, nh, window_size[0], nw, window_size[1], C).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(B * num_windows, n, C)
    head_dim = C // num_heads
    qkv = F.linear(x, qkv_weight, qkv_bias).reshape(B * num_windows, n, 3, num_heads, head_dim)
    qkv = qkv.permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * head_dim ** -0.5).matmul(k.transpose(-2, -1)) + relative_position_bias
    if shifted:
        mask = tensor(_shift_mask(pad_h, pad_w, window_size, shift_size), dtype=attn.dtype,
                      device=attn.device)
        attn = attn.reshape(B, num_windows, num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.reshape(-1, num_heads, n, n)
    attn = F.dropout(F.softmax(attn, dim=-1), p=attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(B * num_windows, n, C)
    x = F.dropout(F.linear(x, proj_weight, proj_bias), p=dropout, training=training)
    x = x.reshape(B, nh, nw, window_size[0], window_size[1], C).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(B, pad_h, pad_w, C)
    if shifted:
        x = roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :] if pad_r or pad_b else x


class ShiftedWindowAttention(nn.Module):
    """Window attention with a learnt bias per (relative offset, head): ``qkv``, ``proj``,
    ``relative_position_bias_table`` ((2Wh-1)(2Ww-1), heads) and the int64 buffer
    ``relative_position_index`` that maps each token pair of a window to its table row."""

    def __init__(self, dim, window_size, shift_size, num_heads, qkv_bias=True, proj_bias=True,
                 attention_dropout=0.0, dropout=0.0):
        super().__init__()
        if len(window_size) != 2 or len(shift_size) != 2:
            raise ValueError("window_size and shift_size must be of length 2")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size, self.shift_size = list(window_size), list(shift_size)
        self.num_heads = num_heads
        self.attention_dropout, self.dropout = attention_dropout, dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            np.zeros(((2 * wh - 1) * (2 * ww - 1), num_heads), dtype=np.float32))
        trunc_normal_far_(self.relative_position_bias_table, 0.02)
        coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
        rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
        index = (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)
        self.register_buffer("relative_position_index", tensor(index.reshape(-1).astype(np.int64)))

    def get_relative_position_bias(self):
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x):
        return shifted_window_attention(
            x, self.qkv.weight, self.proj.weight, self.get_relative_position_bias(),
            self.window_size, self.num_heads, self.shift_size, self.attention_dropout,
            self.dropout, self.qkv.bias, self.proj.bias, self.training)


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim, num_heads, window_size, shift_size, mlp_ratio=4.0, dropout=0.0,
                 attention_dropout=0.0, stochastic_depth_prob=0.0, norm_layer=nn.LayerNorm,
                 attn_layer=ShiftedWindowAttention):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, window_size, shift_size, num_heads,
                               attention_dropout=attention_dropout, dropout=dropout)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        # torchvision.ops.MLP's layout: keys mlp.0 and mlp.3
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.stochastic_depth(self.attn(self.norm1(x)))
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class SwinTransformer(nn.Module):
    """torchvision's ``SwinTransformer(patch_size, embed_dim, depths, num_heads, window_size,
    mlp_ratio=4.0, dropout=0.0, attention_dropout=0.0, stochastic_depth_prob=0.1,
    num_classes=1000, norm_layer=None, block=None, downsample_layer=PatchMerging)``."""

    classifier_key = "head"

    def __init__(self, patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio=4.0,
                 dropout=0.0, attention_dropout=0.0, stochastic_depth_prob=0.1, num_classes=1000,
                 norm_layer=None, block=None, downsample_layer=PatchMerging):
        super().__init__()
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f"SwinTransformer: depths and num_heads must be non-empty and of "
                             f"equal length, got {depths} and {num_heads}")
        if int(num_classes) < 1:
            raise ValueError(f"SwinTransformer: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        block = SwinTransformerBlock if block is None else block
        norm_layer = partial(nn.LayerNorm, eps=1e-5) if norm_layer is None else norm_layer
        layers = [nn.Sequential(
            nn.Conv2d(3, embed_dim, kernel_size=tuple(patch_size), stride=tuple(patch_size)),
            Permute([0, 2, 3, 1]), norm_layer(embed_dim))]
        total = sum(depths)
        block_id = 0
        for i_stage, depth in enumerate(depths):
            dim = embed_dim * 2 ** i_stage
            stage = []
            for i_layer in range(depth):
                sd_prob = stochastic_depth_prob * float(block_id) / max(total - 1, 1)
                stage.append(block(dim, num_heads[i_stage], window_size=list(window_size),
                                   shift_size=[0 if i_layer % 2 == 0 else w // 2 for w in window_size],
                                   mlp_ratio=mlp_ratio, dropout=dropout,
                                   attention_dropout=attention_dropout,
                                   stochastic_depth_prob=sd_prob, norm_layer=norm_layer))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i_stage < len(depths) - 1:
                layers.append(downsample_layer(dim, norm_layer))
        self.features = nn.Sequential(*layers)
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = norm_layer(self.num_features)
        self.permute = Permute([0, 3, 1, 2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.head = nn.Linear(self.num_features, self.num_classes)
        for m in self.modules():  # torchvision's (it overrides the MLPs' own init too)
            if isinstance(m, nn.Linear):
                trunc_normal_far_(m.weight, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        check_image("SwinTransformer", x)
        x = self.permute(self.norm(self.features(x)))
        return self.head(self.flatten(self.avgpool(x)))


def _swin(arch, embed_dim, depths, num_heads, sd_prob, weights, num_classes, kwargs):
    kwargs.setdefault("stochastic_depth_prob", sd_prob)
    model = SwinTransformer([4, 4], embed_dim, depths, num_heads, [7, 7],
                            num_classes=num_classes, **kwargs)
    return _build(arch, model, weights)


def swin_t(weights=None, num_classes=1000, **kwargs):
    return _swin("swin_t", 96, [2, 2, 6, 2], [3, 6, 12, 24], 0.2, weights, num_classes, kwargs)


def swin_s(weights=None, num_classes=1000, **kwargs):
    return _swin("swin_s", 96, [2, 2, 18, 2], [3, 6, 12, 24], 0.3, weights, num_classes, kwargs)


def swin_b(weights=None, num_classes=1000, **kwargs):
    return _swin("swin_b", 128, [2, 2, 18, 2], [4, 8, 16, 32], 0.5, weights, num_classes, kwargs)


def _document():
    from .resnet import _document as doc

    for fn, title in [(swin_t, "Swin-T"), (swin_s, "Swin-S"), (swin_b, "Swin-B")]:
        doc(fn, title)


_document()
