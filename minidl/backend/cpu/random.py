"""torch's random recipes that loop (backend/torch_random.py says what they are): the
Box-Muller blocks of 16 of torch's normal fill, with libm's log, cos and sin as torch's, and
the Fisher-Yates shuffle of its randperm."""
from __future__ import annotations

import math

from numba import njit


@njit(cache=True)
def box_muller16(data, theta_in_double=False):
    """Each block of 16 of ``data`` (uniforms on [0, 1), float32 or float64, in place): the
    first 8 give the radii sqrt(-2 log(1 - u)), the last 8 the angles 2 pi u; cos then sin.
    ``theta_in_double``: the angle of a float32 block is 2 pi u in double, rounded to float
    (torch's scalar DEFAULT build), not float(2 pi) * u in float (its vector builds)."""
    one = data.dtype.type(1)
    two_pi = data.dtype.type(2.0 * math.pi)
    minus_two = data.dtype.type(-2)
    for b in range(0, data.size - 15, 16):
        for j in range(8):
            u1 = one - data[b + j]
            u2 = data[b + j + 8]
            radius = math.sqrt(minus_two * math.log(u1))
            if theta_in_double:
                theta = data.dtype.type(2.0 * math.pi * float(u2))
            else:
                theta = two_pi * u2
            data[b + j] = radius * math.cos(theta)
            data[b + j + 8] = radius * math.sin(theta)


@njit(cache=True)
def shuffle(out, z, inside_out):
    """torch's randperm shuffles of ``out`` (0 .. n-1): swap i with i + z[i] for each i, or the
    inside-out variant (out[i] = out[z[i]], out[z[i]] = i)."""
    if inside_out:
        for i in range(out.size):
            j = z[i]
            out[i] = out[j]
            out[j] = i
    else:
        for i in range(z.size):
            j = i + z[i]
            t = out[i]
            out[i] = out[j]
            out[j] = t


@njit(cache=True)
def exponential_fill(u, lambd):
    """torch's exponential recipe in place on float64 uniforms: -1 / lambd * log1p(-u) (libm's
    log1p, as torch's)."""
    scale = -1.0 / lambd
    for i in range(u.size):
        u[i] = scale * math.log1p(-u[i])
