"""CUDA kernels (CuPy) for the loops that numba runs on the CPU: im2col/col2im and max pooling.

Same signatures, layouts and results as ``generic.py`` (argmax is the flat window index i*kw+j,
int32). Matrix products are not here: ``cupy.matmul`` sends them to cuBLAS.

Each kernel is a CuPy ``ElementwiseKernel`` with one thread per *output* element that reads what
it needs from ``raw`` inputs by computing flat indices itself, so nothing is written twice:

- ``im2col``: one thread per column entry copies the pixel it reads (0 in the padding);
- ``col2im``: one thread per image pixel gathers the column entries that read it. A gather needs
  no atomics, so the sum is deterministic, and it adds the taps in the same (i, j) order as
  generic.py, so the two agree to the last bit;
- ``im2col_t``/``col2im_t``: the same two kernels writing/reading the (C*kh*kw, N*OH*OW) layout
  of the CPU kernels (cpu.py), which lets a conv be one GEMM over the whole batch;
- ``max_pool2d_forward``: one thread per output scans its window;
- ``max_pool2d_backward``: one thread per input pixel gathers the outputs whose argmax is it.

The loop bodies are plain C++ over the flat index ``i`` (CuPy's name), kept as strings so tests
can compile them on the host and compare them with generic.py where there is no GPU.
"""
from __future__ import annotations

from . import get_array_module
from .generic import out_size

__all__ = ["out_size", "im2col", "col2im", "im2col_t", "col2im_t", "max_pool2d_forward",
           "max_pool2d_backward"]

# Geometry shared by every kernel: input h x w, kernel kh x kw, stride, padding, output oh x ow.
GEOMETRY = ("int32 h, int32 w, int32 kh, int32 kw, int32 sh, int32 sw, int32 ph, int32 pw, "
            "int32 oh, int32 ow")
# Where column row r = (c, i, j) of sample s starts: s * sn + r * sr. (sn, sr) = (K*L, L) is
# generic.py's (N, K, L) layout; (L, N*L) is the (K, N*L) layout whose GEMM covers the batch.
COLUMNS = "int32 channels, int64 sn, int64 sr"

# One thread per column entry, in (sample, channel, i, j, oy, ox) order; ``t`` ends as the
# (sample, channel) plane.
IM2COL = """
ptrdiff_t t = i;
const int ox = t % ow; t /= ow;
const int oy = t % oh; t /= oh;
const int kj = t % kw; t /= kw;
const int ki = t % kh; t /= kh;
const int y = oy * sh - ph + ki;
const int x = ox * sw - pw + kj;
const ptrdiff_t row = ((t % channels) * kh + ki) * kw + kj;
col[(t / channels) * sn + row * sr + oy * ow + ox] =
    (y >= 0 && y < h && x >= 0 && x < w) ? img[(t * h + y) * w + x] : (T)0;
"""

# Pixel (y, x) was read by tap (ki, kj) of output (oy, ox) when y + ph - ki == oy * sh (same in x).
COL2IM = """
ptrdiff_t t = i;
const int x = t % w; t /= w;
const int y = t % h; t /= h;
const ptrdiff_t base = (t / channels) * sn + (t % channels) * kh * kw * sr;
T acc = 0;
for (int ki = 0; ki < kh; ++ki) {
    const int yy = y + ph - ki;
    if (yy < 0 || yy % sh != 0 || yy / sh >= oh) continue;
    for (int kj = 0; kj < kw; ++kj) {
        const int xx = x + pw - kj;
        if (xx < 0 || xx % sw != 0 || xx / sw >= ow) continue;
        acc += col[base + (ki * kw + kj) * sr + (yy / sh) * ow + xx / sw];
    }
}
img = acc;
"""

# Padding counts as -inf (``ninf``), as in generic.py: it only wins a window of -infs, and then
# only as its first cell. Ties keep the first maximum and a NaN wins, as numpy's argmax does.
MAX_POOL_FORWARD = """
ptrdiff_t t = i;
const int ox = t % ow; t /= ow;
const int oy = t % oh; t /= oh;
T best = (T)ninf;
int best_k = 0;
for (int ki = 0; ki < kh; ++ki) {
    const int y = oy * sh - ph + ki;
    for (int kj = 0; kj < kw; ++kj) {
        const int x = ox * sw - pw + kj;
        const int k = ki * kw + kj;
        const T v = (y >= 0 && y < h && x >= 0 && x < w) ? img[(t * h + y) * w + x] : (T)ninf;
        if (k == 0 || ((v > best || v != v) && best == best)) {
            best = v;
            best_k = k;
        }
    }
}
pooled = best;
arg = best_k;
"""

MAX_POOL_BACKWARD = """
ptrdiff_t t = i;
const int x = t % w; t /= w;
const int y = t % h; t /= h;
T acc = 0;
for (int ki = 0; ki < kh; ++ki) {
    const int yy = y + ph - ki;
    if (yy < 0 || yy % sh != 0 || yy / sh >= oh) continue;
    for (int kj = 0; kj < kw; ++kj) {
        const int xx = x + pw - kj;
        if (xx < 0 || xx % sw != 0 || xx / sw >= ow) continue;
        const ptrdiff_t o = (t * oh + yy / sh) * ow + xx / sw;
        if (arg[o] == ki * kw + kj) acc += gy[o];
    }
}
gx = acc;
"""

# name: (input parameters, output parameters, body)
SPECS = {
    "im2col": ("raw T img, " + GEOMETRY + ", " + COLUMNS, "raw T col", IM2COL),
    "col2im": ("raw T col, " + GEOMETRY + ", " + COLUMNS, "T img", COL2IM),
    "max_pool2d_forward": ("raw T img, float64 ninf, " + GEOMETRY, "T pooled, int32 arg",
                           MAX_POOL_FORWARD),
    "max_pool2d_backward": ("raw T gy, raw int32 arg, " + GEOMETRY, "T gx", MAX_POOL_BACKWARD),
}

_compiled = {}


def _kernel(name):
    """The ElementwiseKernel for ``name``, built once; CuPy compiles it per dtype on first call."""
    kernel = _compiled.get(name)
    if kernel is None:
        import cupy

        in_params, out_params, body = SPECS[name]
        kernel = _compiled[name] = cupy.ElementwiseKernel(in_params, out_params, body,
                                                          f"minidl_{name}")
    return kernel


def _flat(cp, a):
    # raw arguments are indexed with flat C-order offsets; 1-D contiguous keeps that a pointer add
    return cp.ascontiguousarray(a).reshape(-1)


def _im2col(x, kh, kw, sh, sw, ph, pw, batch_major, out=None):
    cp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    k, length = c * kh * kw, oh * ow
    shape, sn, sr = ((n, k, length), k * length, length) if batch_major else \
        ((k, n * length), length, n * length)
    if out is None or out.shape != shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        out = cp.empty(shape, dtype=x.dtype)
    if out.size:
        # every entry is written (0 in the padding), so ``empty`` is safe
        _kernel("im2col")(_flat(cp, x), h, w, kh, kw, sh, sw, ph, pw, oh, ow, c, sn, sr,
                          out.reshape(-1), size=out.size)
    return out


def _col2im(col, x_shape, kh, kw, sh, sw, ph, pw, batch_major):
    cp = get_array_module(col)
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    k, length = c * kh * kw, oh * ow
    sn, sr = (k * length, length) if batch_major else (length, n * length)
    img = cp.empty((n, c, h, w), dtype=col.dtype)
    if img.size:
        _kernel("col2im")(_flat(cp, col), h, w, kh, kw, sh, sw, ph, pw, oh, ow, c, sn, sr, img)
    return img


def im2col(x, kh, kw, sh, sw, ph, pw):
    """(N, C, H, W) -> (N, C*kh*kw, OH*OW); the rows run over (c, i, j) like a flattened weight."""
    return _im2col(x, kh, kw, sh, sw, ph, pw, batch_major=True)


def col2im(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of im2col: every pixel sums the column entries that were read from it."""
    return _col2im(col, x_shape, kh, kw, sh, sw, ph, pw, batch_major=True)


def im2col_t(x, kh, kw, sh, sw, ph, pw, out=None):
    """(N, C, H, W) -> (C*kh*kw, N*OH*OW): the whole batch's columns side by side, so the conv
    is one cuBLAS GEMM instead of N."""
    return _im2col(x, kh, kw, sh, sw, ph, pw, batch_major=False, out=out)


def col2im_t(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of ``im2col_t``: (C*kh*kw, N*OH*OW) -> (N, C, H, W)."""
    return _col2im(col, x_shape, kh, kw, sh, sw, ph, pw, batch_major=False)


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Returns (y, argmax) with argmax the flat index i*kw+j of the winner in each window."""
    cp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    y = cp.empty((n, c, oh, ow), dtype=x.dtype)
    arg = cp.empty((n, c, oh, ow), dtype=cp.int32)
    if y.size:
        _kernel("max_pool2d_forward")(_flat(cp, x), float("-inf"), h, w, kh, kw, sh, sw, ph, pw,
                                      oh, ow, y, arg)
    return y, arg


def max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    cp = get_array_module(gy)
    n, c, h, w = x_shape
    oh, ow = gy.shape[2], gy.shape[3]
    gx = cp.empty((n, c, h, w), dtype=gy.dtype)
    if gx.size:
        _kernel("max_pool2d_backward")(_flat(cp, gy), _flat(cp, arg.astype(cp.int32, copy=False)),
                                       h, w, kh, kw, sh, sw, ph, pw, oh, ow, gx)
    return gx
