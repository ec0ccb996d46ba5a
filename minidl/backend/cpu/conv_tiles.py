"""Register-blocked direct convolution for stride-1 3x3 and 5x5 filters: forward and weight gradient.

im2col + GEMM spends most of its time on the im2col matrix when the GEMM is small (LeNet-5's
second layer: 16 filters over 6x5x5 inputs), and needs BLAS and numba to hand the cores to each
other for every chunk. These kernels compute the convolution from a zero-padded copy of one
sample instead, each task on its own core: for 4 output channels at a time, every output
position adds the kw taps of one filter row of an input channel in registers (the row's 4*kw
weights stay in registers too), reading the padded plane as one contiguous stream per tap
(positions run over the padded width, so a few columns per row are computed and dropped). The kernels are generated (``conv_tiles_gen``; why is said there) into
``conv_tiles_kernels``. ``conv.use_tiles`` says where they are chosen, in inference and in
training alike. The same layout gives
the weight gradient without an im2col matrix (``conv2d_tiles_wgrad``), which the thin-input
direct path uses (``conv.conv2d_direct_wgrad``).
"""
from __future__ import annotations

import numba
import numpy as np

from .conv_direct import forward_args, wgrad_in_parts
from .conv_tiles_kernels import FORWARD, WGRAD
from .launch import Drivers, launch, parallel

_FORWARD = {size: Drivers(*drivers) for size, drivers in FORWARD.items()}
_WGRAD = {size: Drivers(*drivers) for size, drivers in WGRAD.items()}


def conv2d_tiles(x, w, bias, ph, pw):
    """Stride-1 convolution with a square filter of a size ``conv_tiles`` has kernels for
    (``conv_tiles_kernels.FORWARD``): register-blocked direct convolution, no im2col matrix."""
    x, w, b, has_bias = forward_args(x, w, bias)
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    oh, ow = h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    macs = n * co * oh * (wd + 2 * pw) * c * kh * kw
    in_parallel = parallel(macs, "macs")  # batch 1 too: its channel blocks are split
    parts = 4 * numba.get_num_threads() if in_parallel else 1
    launch(_FORWARD[kh], in_parallel, x, w.reshape(-1), b, has_bias, ph, pw, out, parts)
    return out


def conv2d_tiles_wgrad(x, g, kh, kw, ph, pw):
    """(weight gradient, bias gradient) of a stride-1 convolution with a square filter of a
    size the kernels cover, from its input x and output gradient g, without an im2col matrix:
    for 3 output channels and one filter row at a time, 3*k sums of gradient times shifted
    input run in registers over each sample's positions; samples add up in float64 per task."""
    return wgrad_in_parts(x, g, kh, kw, pw, lambda par, x, g, gw, gb: launch(
        _WGRAD[kh], par, x, g, ph, pw, gw, gb))
