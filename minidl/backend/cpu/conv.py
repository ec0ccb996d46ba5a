"""Which algorithm runs a convolution on the CPU: every rule in one place.

``conv2d_algorithm`` names the algorithm ``functional.Conv2d`` runs:

- ``"tiles"``: stride-1 square 3x3 or 5x5 filters with up to 64x64 channels (``use_tiles``):
  register-blocked direct convolution (``conv2d_tiles``, kernels in ``conv_tiles_kernels.py``),
  no im2col matrix; in inference and in training (backward: the tiled weight gradient, and the
  input gradient as a tiled convolution of the output gradient with the flipped filters);
- ``"direct"``: thin input (C_in*kh*kw <= 32, stride 1), training or not: ``conv2d_direct``,
  no im2col matrix (LeNet's first layer); its weight gradient is ``conv2d_direct_wgrad`` below;
- ``"winograd"``: 3x3 stride-1 layers wide enough (``use_winograd``): Winograd F(2x2, 3x3),
  2.25x fewer multiplies; in inference, and in training under the same rule as tiles;
- ``"gemm_chunks"``: inference otherwise (except 1x1): im2col + GEMM in cache-sized chunks of
  samples, ``conv2d_inference``;
- ``"pointwise"``: 1x1 stride-1 unpadded: the input already is its column matrix, one GEMM per
  sample;
- ``"im2col"``: training otherwise: one im2col matrix for the batch, kept for backward.
"""
from __future__ import annotations

import numpy as np

from .. import generic
from ..generic import is_pointwise
from . import conv_direct
from .conv_tiles import conv2d_tiles_wgrad
from .conv_tiles_gen import SIZES as TILE_SIZES


def conv2d_direct_wgrad(x, g, kh, kw, ph, pw):
    """Weight and bias gradients of the direct path (thin input, no im2col matrix): the
    register-blocked kernels (``conv_tiles.conv2d_tiles_wgrad``) for the square filter sizes
    they cover, LeNet-5's first layer at batch 128 in 0.83 ms against 1.15 ms for the
    per-tap loops of ``conv_direct``, which take the other shapes."""
    if kh == kw and kh in TILE_SIZES:
        return conv2d_tiles_wgrad(x, g, kh, kw, ph, pw)
    return conv_direct.conv2d_direct_wgrad(x, g, kh, kw, ph, pw)


def use_direct_conv(x_shape, w_shape, stride):
    """Whether ``conv2d_direct`` beats im2col + GEMM: stride 1 and few inputs per output, but
    not a 1x1 filter, whose per-sample GEMM needs no im2col either (MobileNetV2's 16 -> 96
    expansion at 48x48, batch 8, 2 threads: forward 4.4 ms direct, 0.7 as a GEMM)."""
    co, ci, kh, kw = w_shape
    return stride == (1, 1) and ci * kh * kw <= 32 and kh * kw > 1


def use_tiles(x_shape, w_shape, stride):
    """Whether ``conv2d_tiles`` beats the other inference paths. Measured at batch 1-1000 on
    LeNet-5's and ResNet-sized layers (2-vCPU Zen 4): 1.3-3x faster than im2col + GEMM in
    cache-sized chunks, and than Winograd up to 64x64 channels (8x64x56x56: 1.15-2.2x);
    Winograd wins from 128x128 channels (0.8x), the thin-input direct kernel with few output
    channels (LeNet's first layer, 6 channels: 0.7-0.87x)."""
    co, ci, kh, kw = w_shape
    if stride != (1, 1) or kh != kw or kh not in TILE_SIZES or ci * co > 64 * 64:
        return False
    return not (use_direct_conv(x_shape, w_shape, stride) and co < 16)


def use_winograd(x_shape, w_shape, stride, padding):
    """Whether ``conv2d_winograd`` beats im2col + GEMM: 3x3 stride-1 layers with enough channels
    to keep its GEMMs deep and enough 2x2 tiles to pay for transforming the filters (measured on
    ResNet-50's layers: a win from 8x64x56x56 to 8x256x14x14, a loss at 1x256x14x14 or 7x7)."""
    co, ci, kh, kw = w_shape
    if (kh, kw) != (3, 3) or stride != (1, 1) or ci < 32 or co < 32:
        return False
    oh, ow = x_shape[2] + 2 * padding[0] - 2, x_shape[3] + 2 * padding[1] - 2
    return x_shape[0] * ((oh + 1) // 2) * ((ow + 1) // 2) >= 256


def conv2d_algorithm(x_shape, w_shape, stride, padding, needs_grad, dtype=None):
    """The algorithm for a convolution of these shapes (see the module docstring); every dtype
    takes the same one here. Training takes the tiled kernels wherever they apply: since their
    forward and input gradient keep each filter row's weights in registers, forward + backward
    ran 0.75-0.84x the time of im2col where its matrix would be kept (LeNet-5's conv2 at batch
    128, 8x64x16x16, 2x64x28x28; the same with AVX2 code at LeNet's shape), and the LeNet-5
    training step 0.81x at batch 128 (2-vCPU Zen 4). Winograd is taken in training only where
    the im2col matrix would not be kept for backward: 8x64x56x56 3x3 (ResNet-50's layer1 at
    224x224), forward and backward 53-57 -> 44-46 ms; where it would be kept, the forward pass
    saved what backward then paid to gather it again (4x128x16x16: 6.4-6.8 ms with im2col,
    6.7-7.6 Winograd)."""
    if use_tiles(x_shape, w_shape, stride):
        return "tiles"
    itemsize = 4 if dtype is None else np.dtype(dtype).itemsize
    cols_kept = needs_grad and generic.column_bytes(
        x_shape, w_shape, stride, padding, itemsize) <= generic.KEEP_COLUMNS_BYTES
    if use_direct_conv(x_shape, w_shape, stride):
        return "direct"
    if not cols_kept and use_winograd(x_shape, w_shape, stride, padding):
        return "winograd"
    pointwise = is_pointwise(w_shape, stride, padding)
    if not needs_grad and not pointwise:
        return "gemm_chunks"
    return "pointwise" if pointwise else "im2col"
