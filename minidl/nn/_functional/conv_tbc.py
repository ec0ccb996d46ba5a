"""conv_tbc: convolution over time of (T, B, C) input (fairseq's layout), as conv1d."""
from __future__ import annotations

from .convolution import conv1d


def conv_tbc(input, weight, bias, pad=0):
    """(T, B, C_in) input, (K, C_in, C_out) weight, (C_out,) bias, ``pad`` zeros at both ends
    of T: (T + 2 * pad - K + 1, B, C_out)."""
    if input.ndim != 3 or weight.ndim != 3:
        raise RuntimeError(f"conv_tbc: input must have 3 dims and weight 3 dims, got shapes "
                           f"{tuple(input.shape)} and {tuple(weight.shape)}")
    return conv1d(input.permute(1, 2, 0), weight.permute(2, 1, 0), bias, 1, pad).permute(2, 0, 1)
