"""numba kernels for the CPU hot loops: im2col/col2im, direct and Winograd convolution, max
pooling, the conv output layout, ReLU and softmax cross-entropy.

Every kernel is a module-level ``@njit(cache=True)`` function so a second process loads the
machine code from ``__pycache__`` instead of compiling it again; compilation is lazy (on the
first call for each dtype), and this module is only imported by ``backend.kernels`` on the first
op, so ``import minidl`` never pays for numba. Kernels take float32 or float64 (gradient checks
run in float64) and are handed C-contiguous arrays by the Python wrappers at the bottom; other
dtypes go to the generic kernels.

Convolution, as ``functional.Conv2d`` picks it:
- training, thin input (C_in*kh*kw <= 32, stride 1): ``conv2d_direct``, no im2col matrix;
- training otherwise: ``im2col_t`` writes the columns of the whole batch side by side,
  ``(C*kh*kw, N*OH*OW)``, so the forward pass, the weight gradient and the column gradient are
  one large GEMM each in ``numpy.matmul`` (BLAS) instead of N small ones; the price is a
  transpose of the GEMM output into NCHW, which ``cols_to_nchw`` fuses with the bias add;
- inference (no gradient wanted): Winograd F(2x2, 3x3) for 3x3 stride-1 layers that are wide
  enough (``use_winograd``), otherwise im2col + GEMM in cache-sized chunks of samples.
"""
from __future__ import annotations

import os
import sys
import threading

import numba
import numpy as np
from numba import njit, prange

from . import generic
from .generic import out_size

# numba's default OpenMP layer keeps idle workers spinning, and two pools then fight over the 2
# cores: numpy's BLAS (OpenBLAS) right after a kernel took 8 ms instead of 0.1 ms, and with
# PyTorch's own OpenMP runtime in the same process a LeNet step went from 13 ms to 500 ms.
# The workqueue layer's workers sleep when idle (launches cost more, ~50 us, so small arrays
# take serial paths), and it is fork-safe. It is not safe to enter from two Python threads at
# once, so every parallel kernel runs under _launch. A layer the user chose is left alone.
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"
_launch = threading.Lock()


def _keep_freed_memory():
    """Let glibc's malloc keep freed memory for the next training step.

    A step allocates and frees tens of MB of activations and gradients. With glibc's default
    policy each large array is a fresh mmap (or the heap top is trimmed back to the kernel after
    every step), so every step paid ~2,300 page faults: 14.5 ms instead of 9.5 ms for LeNet-5 at
    batch 128. Serving arrays up to 64 MB from the heap and trimming only past 256 MB of free
    memory removes them. Skipped off glibc, when the user set either glibc tunable, or with
    MINIDL_MALLOC_TUNING=0."""
    if os.environ.get("MINIDL_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                     "GLIBC_TUNABLES")):
        return
    try:
        import ctypes
        import platform

        if platform.libc_ver()[0] != "glibc":
            return
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        libc.mallopt(m_mmap_threshold, 64 << 20)
        libc.mallopt(m_trim_threshold, 256 << 20)
    except Exception:  # no glibc after all: its default policy stays
        pass


_keep_freed_memory()

# OpenBLAS's idle workers spin for 2^OPENBLAS_THREAD_TIMEOUT cycles (default 2^28, ~0.1 s) after
# every multi-threaded call before they sleep. A numba parallel kernel started in that window
# shares a core with a spinning worker: LeNet-5 inference at batch 1000 took 37 ms instead of
# 21 ms, and the ResNet-50 3x3 conv ran 1.3x or 2.2x PyTorch's time depending on whether a worker
# was still spinning. 2^20 cycles (~0.3 ms) keeps the workers awake between the GEMMs of one
# layer but asleep by the time the next numba kernel runs; 2^16 or shorter made the back-to-back
# GEMMs of a training step wake sleeping workers (LeNet-5 step +30%), 2^24 or longer brought the
# contention back (measured with `pytest benchmarks --benchmark-only`, per timeout 2^4..2^28).
_BLAS_SPIN_LOG2 = 20


def _openblas_libraries():
    """ctypes handles of the OpenBLAS libraries loaded in this process (numpy's, usually)."""
    import ctypes

    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = os.path.basename(path)
                if "openblas" in name.lower() and ".so" in name:
                    paths.add(path)
    except OSError:
        return []
    libs = []
    for path in sorted(paths):
        try:
            libs.append(ctypes.CDLL(path))  # already loaded: the same library, not a second copy
        except OSError:
            pass
    return libs


def _shorten_blas_spin():
    """Set OpenBLAS's worker spin time to 2^_BLAS_SPIN_LOG2 cycles in this process.

    OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when it loads, which is before minidl can set it
    (numpy loads it), so the variable is set for a moment while ``openblas_read_env`` re-reads
    the environment, and the workers are stopped (``blas_thread_shutdown_``) so that the next
    multi-threaded call starts them with the new timeout. Skipped where those symbols are not
    found (MKL, Accelerate, another BLAS), when the user set OPENBLAS_THREAD_TIMEOUT, or with
    MINIDL_BLAS_TUNING=0. Like any BLAS reconfiguration, it must not race a BLAS call running
    in another thread: it runs once, when the first op imports this module."""
    if os.environ.get("MINIDL_BLAS_TUNING", "1") == "0" or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return
    if not sys.platform.startswith("linux"):
        return
    for lib in _openblas_libraries():
        read_env = getattr(lib, "openblas_read_env", None)
        shutdown = getattr(lib, "blas_thread_shutdown_", None)
        if read_env is None or shutdown is None:
            continue
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(_BLAS_SPIN_LOG2)
        try:
            read_env()
        finally:
            del os.environ["OPENBLAS_THREAD_TIMEOUT"]
        getter = getattr(lib, "openblas_thread_timeout", None)
        if getter is not None and getter() != _BLAS_SPIN_LOG2:
            continue  # this build did not take the new value: leave its threads alone
        shutdown()
        _blas_spin_set.append(lib)


_blas_spin_set = []  # the OpenBLAS libraries whose spin time _shorten_blas_spin changed


_shorten_blas_spin()

# Every kernel below works task by task (a task is one image plane, one sample, ...) and has two
# drivers: a prange one and a serial one. The serial one runs unless the work is large: a
# workqueue launch must wake a sleeping thread, which on this class of VM takes 50-500 us, and
# numpy's BLAS threads may still hold the other core just after a matmul. Measured on LeNet-5
# (batch 128), parallel kernels below these sizes gained nothing in the median step time.
_PAR_COL = 1 << 22      # im2col/col2im and the conv layout kernels, by column-matrix size
_PAR_POOL = 1 << 22     # max-pool, by input size
_PAR_RELU = 1 << 23     # ReLU streams at ~0.1 ns per element
_PAR_MACS = 1 << 25     # direct convolution, by multiply-adds


def _parallel(size, threshold):
    return size >= threshold and numba.get_num_threads() > 1


# ---- im2col / col2im ----------------------------------------------------------------------
# Indices that the compiler cannot prove non-negative (they subtract the padding) are cast to
# np.uintp: numba then skips its negative-index wraparound branch, which otherwise stops LLVM
# from vectorising the inner loops (3-5x slower). Every such index is in range by construction.
@njit(cache=True, inline="always")
def _valid_range(k, size, stride, pad, out):
    """Output positions [lo, hi) whose input position o*stride - pad + k lies in [0, size)."""
    lo = 0
    if pad > k:
        lo = (pad - k + stride - 1) // stride
    hi = (size - 1 + pad - k) // stride + 1
    if hi > out:
        hi = out
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True)
def _im2col_task(x, kh, kw, sh, sw, ph, pw, oh, ow, col, nc):
    """One (sample, channel) plane: it owns kh*kw rows of one column block, so tasks never
    write the same memory. Padding is handled here instead of by a padded copy of x."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    length = oh * ow
    b = nc // c
    ci = nc - b * c
    src = x[b, ci].reshape(-1)
    for i in range(kh):
        y0, y1 = _valid_range(i, h, sh, ph, oh)
        for j in range(kw):
            x0, x1 = _valid_range(j, w, sw, pw, ow)
            dst = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            dst[:y0 * ow] = 0
            dst[y1 * ow:] = 0
            for y in range(y0, y1):
                ob = y * ow
                ib = (y * sh - ph + i) * w + j - pw
                for xx in range(x0):
                    dst[ob + xx] = 0
                if sw == 1:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx)] = src[np.uintp(ib + xx)]
                else:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx)] = src[np.uintp(ib + xx * sw)]
                for xx in range(x1, ow):
                    dst[ob + xx] = 0


@njit(parallel=True, cache=True)
def _im2col_par(x, kh, kw, sh, sw, ph, pw, oh, ow, col):
    for nc in prange(x.shape[0] * x.shape[1]):
        _im2col_task(x, kh, kw, sh, sw, ph, pw, oh, ow, col, nc)


@njit(cache=True)
def _im2col_ser(x, kh, kw, sh, sw, ph, pw, oh, ow, col):
    for nc in range(x.shape[0] * x.shape[1]):
        _im2col_task(x, kh, kw, sh, sw, ph, pw, oh, ow, col, nc)


@njit(cache=True)
def _col2im_task(col, kh, kw, sh, sw, ph, pw, oh, ow, out, nc):
    """One output plane per task, so the scatter-add needs no atomics."""
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    length = oh * ow
    b = nc // c
    ci = nc - b * c
    dst = out[b, ci].reshape(-1)
    dst[:] = 0
    for i in range(kh):
        y0, y1 = _valid_range(i, h, sh, ph, oh)
        for j in range(kw):
            x0, x1 = _valid_range(j, w, sw, pw, ow)
            src = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            for y in range(y0, y1):
                ib = y * ow
                ob = (y * sh - ph + i) * w + j - pw
                if sw == 1:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx)] += src[np.uintp(ib + xx)]
                else:
                    for xx in range(x0, x1):
                        dst[np.uintp(ob + xx * sw)] += src[np.uintp(ib + xx)]


@njit(parallel=True, cache=True)
def _col2im_par(col, kh, kw, sh, sw, ph, pw, oh, ow, out):
    for nc in prange(out.shape[0] * out.shape[1]):
        _col2im_task(col, kh, kw, sh, sw, ph, pw, oh, ow, out, nc)


@njit(cache=True)
def _col2im_ser(col, kh, kw, sh, sw, ph, pw, oh, ow, out):
    for nc in range(out.shape[0] * out.shape[1]):
        _col2im_task(col, kh, kw, sh, sw, ph, pw, oh, ow, out, nc)


# Short output rows (LeNet's second layer: 10 wide) leave the row loops above mostly loop
# overhead and scalar remainders. Without padding, each (i, j) row of a plane is instead one
# loop over the whole OH*OW window through a table of input offsets (y*sh*w + x*sw): a gather
# for im2col, a scatter-add for col2im (distinct targets within a row). 25-35% faster at
# OW=10, slower for wide rows, so the wrappers use it only below _SHORT_ROW.
_SHORT_ROW = 16


@njit(cache=True)
def _im2col_off_task(x, kh, kw, off, col, nc):
    c, w = x.shape[1], x.shape[3]
    length = off.size
    b = nc // c
    ci = nc - b * c
    src = x[b, ci].reshape(-1)
    for i in range(kh):
        for j in range(kw):
            dst = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            base = i * w + j
            for p in range(length):
                dst[p] = src[np.uintp(base + off[p])]


@njit(parallel=True, cache=True)
def _im2col_off_par(x, kh, kw, off, col):
    for nc in prange(x.shape[0] * x.shape[1]):
        _im2col_off_task(x, kh, kw, off, col, nc)


@njit(cache=True)
def _im2col_off_ser(x, kh, kw, off, col):
    for nc in range(x.shape[0] * x.shape[1]):
        _im2col_off_task(x, kh, kw, off, col, nc)


@njit(cache=True)
def _col2im_off_task(col, kh, kw, off, out, nc):
    c, w = out.shape[1], out.shape[3]
    length = off.size
    b = nc // c
    ci = nc - b * c
    dst = out[b, ci].reshape(-1)
    dst[:] = 0
    for i in range(kh):
        for j in range(kw):
            src = col[(ci * kh + i) * kw + j, b * length:(b + 1) * length]
            base = i * w + j
            for p in range(length):
                dst[np.uintp(base + off[p])] += src[p]


@njit(parallel=True, cache=True)
def _col2im_off_par(col, kh, kw, off, out):
    for nc in prange(out.shape[0] * out.shape[1]):
        _col2im_off_task(col, kh, kw, off, out, nc)


@njit(cache=True)
def _col2im_off_ser(col, kh, kw, off, out):
    for nc in range(out.shape[0] * out.shape[1]):
        _col2im_off_task(col, kh, kw, off, out, nc)


def _offsets(w, sh, sw, oh, ow):
    return (np.arange(oh)[:, None] * (sh * w) + np.arange(ow)[None, :] * sw).reshape(-1)


# ---- conv output layout --------------------------------------------------------------------
@njit(cache=True)
def _to_nchw_task(y2, bias, has_bias, out, t):
    """(Co, N*L) GEMM output -> (N, Co, L) for one (sample, channel), adding the bias."""
    co, length = out.shape[1], out.shape[2]
    b = t // co
    k = t - b * co
    src = y2[k, b * length:(b + 1) * length]
    dst = out[b, k]
    if has_bias:
        bk = bias[k]
        for p in range(length):
            dst[p] = src[p] + bk
    else:
        for p in range(length):
            dst[p] = src[p]


@njit(parallel=True, cache=True)
def _to_nchw_par(y2, bias, has_bias, out):
    for t in prange(out.shape[0] * out.shape[1]):
        _to_nchw_task(y2, bias, has_bias, out, t)


@njit(cache=True)
def _to_nchw_ser(y2, bias, has_bias, out):
    for t in range(out.shape[0] * out.shape[1]):
        _to_nchw_task(y2, bias, has_bias, out, t)


# reassoc lets the compiler split the bias-gradient sums into vector lanes (a different but
# equally accurate summation order); nothing else in these kernels is reordered.
@njit(cache=True, fastmath={"reassoc"})
def _to_cols_task(g, out, gb, k):
    """(N, Co, L) gradient -> row k of (Co, N*L), and the bias gradient of channel k."""
    n, length = g.shape[0], g.shape[2]
    s = 0.0  # float64 accumulator over N*L terms
    for b in range(n):
        src = g[b, k]
        if out.shape[0] > 0:
            dst = out[k, b * length:(b + 1) * length]
            for p in range(length):
                dst[p] = src[p]
        for p in range(length):
            s += src[p]
    gb[k] = s


@njit(parallel=True, cache=True)
def _to_cols_par(g, out, gb):
    for k in prange(g.shape[1]):
        _to_cols_task(g, out, gb, k)


@njit(cache=True)
def _to_cols_ser(g, out, gb):
    for k in range(g.shape[1]):
        _to_cols_task(g, out, gb, k)


# ---- direct convolution for thin inputs -------------------------------------------------------
# With few input values per output (C_in*kh*kw small, LeNet's first layer: 1*5*5) the im2col
# matrix is 25x the input and the GEMM has too little depth to run at BLAS speed: the layer is
# bound by memory traffic. These kernels compute it from a padded copy of one sample instead.
# Output rows are computed at the padded width Wp (a few wasted columns) so that each filter
# tap is one long contiguous multiply-add over the flattened plane, which vectorises.
@njit(cache=True)
def _pad_sample(x, b, ph, pw, kw, xp):
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = h + 2 * ph, w + 2 * pw
    xp[:] = 0
    for ci in range(c):
        for yy in range(h):
            o = ci * hp * wp + (yy + ph) * wp + pw
            for xx in range(w):
                xp[np.uintp(o + xx)] = x[b, ci, yy, xx]


@njit(cache=True)
def _direct_fwd_task(x, w, bias, has_bias, ph, pw, out, b):
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    co, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    hp, wp = h + 2 * ph, wd + 2 * pw
    q = oh * wp
    xp = np.empty(c * hp * wp + kw, dtype=x.dtype)
    _pad_sample(x, b, ph, pw, kw, xp)
    acc = np.empty(2 * q, dtype=x.dtype)
    # two output channels per pass: each load of the input feeds two multiply-adds (+13%)
    for k0 in range(0, co, 2):
        k1 = min(k0 + 1, co - 1)  # an odd last channel is computed twice, harmlessly
        b0 = bias[k0] if has_bias else 0.0
        b1 = bias[k1] if has_bias else 0.0
        for p in range(q):
            acc[p] = b0
            acc[np.uintp(q + p)] = b1
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    w0 = w[k0, ci, i, j]
                    w1 = w[k1, ci, i, j]
                    base = ci * hp * wp + i * wp + j
                    for p in range(q):
                        v = xp[np.uintp(base + p)]
                        acc[p] += w0 * v
                        acc[np.uintp(q + p)] += w1 * v
        d0 = out[b, k0]
        d1 = out[b, k1]
        for y in range(oh):
            for xx in range(ow):
                d0[y, xx] = acc[y * wp + xx]
                d1[y, xx] = acc[q + y * wp + xx]


@njit(parallel=True, cache=True)
def _direct_fwd_par(x, w, bias, has_bias, ph, pw, out):
    for b in prange(x.shape[0]):
        _direct_fwd_task(x, w, bias, has_bias, ph, pw, out, b)


@njit(cache=True)
def _direct_fwd_ser(x, w, bias, has_bias, ph, pw, out):
    for b in range(x.shape[0]):
        _direct_fwd_task(x, w, bias, has_bias, ph, pw, out, b)


@njit(cache=True, fastmath={"reassoc"})
def _direct_wgrad_task(x, g, ph, pw, kh, kw, gw, gb, b0, b1):
    """Weight and bias gradients summed over samples [b0, b1) into float64 gw, gb."""
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    co, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    hp, wp = h + 2 * ph, wd + 2 * pw
    q = oh * wp
    xp = np.empty(c * hp * wp + kw, dtype=x.dtype)
    gf = np.zeros(q, dtype=g.dtype)  # gradient at the padded width, zero in the extra columns
    zero = np.zeros(1, dtype=g.dtype)[0]
    for b in range(b0, b1):
        _pad_sample(x, b, ph, pw, kw, xp)
        for k in range(co):
            src = g[b, k]
            sb = 0.0
            for y in range(oh):
                for xx in range(ow):
                    v = src[y, xx]
                    gf[y * wp + xx] = v
                    sb += v
            gb[k] += sb
            for ci in range(c):
                for i in range(kh):
                    for j in range(kw):
                        base = ci * hp * wp + i * wp + j
                        s = zero  # of the data's dtype: float32 products stay
                        for p in range(q):  # float32 and vectorise; samples add up in float64
                            s += gf[p] * xp[np.uintp(base + p)]
                        gw[k, ci, i, j] += s


@njit(parallel=True, cache=True)
def _direct_wgrad_par(x, g, ph, pw, kh, kw, gw_parts, gb_parts):
    nt = gw_parts.shape[0]
    n = x.shape[0]
    for t in prange(nt):
        _direct_wgrad_task(x, g, ph, pw, kh, kw, gw_parts[t], gb_parts[t],
                           t * n // nt, (t + 1) * n // nt)


@njit(cache=True)
def _direct_wgrad_ser(x, g, ph, pw, kh, kw, gw_parts, gb_parts):
    _direct_wgrad_task(x, g, ph, pw, kh, kw, gw_parts[0], gb_parts[0], 0, x.shape[0])


# ---- Winograd F(2x2, 3x3) for inference -----------------------------------------------------
# A 3x3 stride-1 convolution computed on 2x2 output tiles: each 4x4 input tile d becomes
# V = B^T d B, each filter g becomes U = G g G^T, and the 16 elementwise products U * V
# (summed over input channels) are 16 GEMMs (C_out x C_in) @ (C_in x tiles) that BLAS runs in
# one batched matmul. That is 16 multiplies per 4 outputs instead of 36: the GEMM work drops
# 2.25x, for ResNet-50's 3x3 layers the bulk of the time. B, G and A hold only 0, +-1 and 1/2,
# so the transforms are exact in binary except for rounding of the sums (PyTorch's oneDNN
# offers the same algorithm). Used when no gradient is needed: training keeps im2col, whose
# column matrix the weight gradient reuses.
@njit(cache=True)
def _wino_filter(w, u):
    """U = G g G^T for every 3x3 filter g of w (C_out, C_in, 3, 3), into u (16, C_out * C_in).
    Filters are done 256 at a time in a small buffer and then written out row by row: writing
    each filter's 16 values straight into 16 rows far apart ran 7x slower."""
    wf = w.reshape(-1, 9)
    nf = wf.shape[0]
    blk = np.empty((16, 256), dtype=u.dtype)
    for f0 in range(0, nf, 256):
        nb = min(256, nf - f0)
        for i in range(nb):
            g = wf[f0 + i]
            for r in range(4):  # row r of G g, then that row times G^T
                if r == 0:
                    a0, a1, a2 = g[0], g[1], g[2]
                elif r == 1:
                    a0 = 0.5 * (g[0] + g[3] + g[6])
                    a1 = 0.5 * (g[1] + g[4] + g[7])
                    a2 = 0.5 * (g[2] + g[5] + g[8])
                elif r == 2:
                    a0 = 0.5 * (g[0] - g[3] + g[6])
                    a1 = 0.5 * (g[1] - g[4] + g[7])
                    a2 = 0.5 * (g[2] - g[5] + g[8])
                else:
                    a0, a1, a2 = g[6], g[7], g[8]
                blk[4 * r, i] = a0
                blk[4 * r + 1, i] = 0.5 * (a0 + a1 + a2)
                blk[4 * r + 2, i] = 0.5 * (a0 - a1 + a2)
                blk[4 * r + 3, i] = a2
        for e in range(16):
            u[e, f0:f0 + nb] = blk[e, :nb]


@njit(cache=True)
def _wino_in_task(x, ph, pw, th, tw, v, b0, t, nblk):
    """Input tiles of sample b0 + t // nblk, for its t % nblk-th block of channels."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    bl = t // nblk
    blk = t - bl * nblk
    b = b0 + bl
    hp, wp = 2 * th + 2, 2 * tw + 2
    plane = np.zeros(hp * wp, dtype=x.dtype)  # zero padding around the image, and past it
    rows = np.empty((4, wp), dtype=x.dtype)
    r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
    p0 = bl * th * tw
    for ci in range(blk * c // nblk, (blk + 1) * c // nblk):
        src = x[b, ci]
        for yy in range(h):
            o = (yy + ph) * wp + pw
            for xx in range(w):
                plane[np.uintp(o + xx)] = src[yy, xx]
        for ty in range(th):
            o = 2 * ty * wp
            for xx in range(wp):  # B^T on the four input rows of this band
                d0 = plane[np.uintp(o + xx)]
                d1 = plane[np.uintp(o + wp + xx)]
                d2 = plane[np.uintp(o + 2 * wp + xx)]
                d3 = plane[np.uintp(o + 3 * wp + xx)]
                r0[xx] = d0 - d2
                r1[xx] = d1 + d2
                r2[xx] = d2 - d1
                r3[xx] = d1 - d3
            base = p0 + ty * tw
            for a in range(4):  # then B on each tile's four columns
                r = rows[a]
                for tx in range(tw):
                    e0 = r[2 * tx]
                    e1 = r[2 * tx + 1]
                    e2 = r[2 * tx + 2]
                    e3 = r[2 * tx + 3]
                    q = np.uintp(base + tx)
                    v[4 * a, ci, q] = e0 - e2
                    v[4 * a + 1, ci, q] = e1 + e2
                    v[4 * a + 2, ci, q] = e2 - e1
                    v[4 * a + 3, ci, q] = e1 - e3


@njit(cache=True)
def _wino_out_task(m, bias, has_bias, out, th, tw, b0, t, nblk):
    """Output tiles of sample b0 + t // nblk, for its t % nblk-th block of channels."""
    co, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    bl = t // nblk
    blk = t - bl * nblk
    b = b0 + bl
    u = np.empty((4, 2, tw), dtype=out.dtype)
    row0 = np.empty(2 * tw, dtype=out.dtype)
    row1 = np.empty(2 * tw, dtype=out.dtype)
    p0 = bl * th * tw
    for k in range(blk * co // nblk, (blk + 1) * co // nblk):
        bk = bias[k] if has_bias else 0.0
        dst = out[b, k]
        for ty in range(th):
            base = p0 + ty * tw
            for a in range(4):  # A^T along each tile row...
                for tx in range(tw):
                    q = np.uintp(base + tx)
                    m0 = m[4 * a, k, q]
                    m1 = m[4 * a + 1, k, q]
                    m2 = m[4 * a + 2, k, q]
                    m3 = m[4 * a + 3, k, q]
                    u[a, 0, tx] = m0 + m1 + m2
                    u[a, 1, tx] = m1 - m2 - m3
            for tx in range(tw):  # ...then down the columns: the 2x2 outputs of each tile
                row0[2 * tx] = u[0, 0, tx] + u[1, 0, tx] + u[2, 0, tx] + bk
                row0[2 * tx + 1] = u[0, 1, tx] + u[1, 1, tx] + u[2, 1, tx] + bk
                row1[2 * tx] = u[1, 0, tx] - u[2, 0, tx] - u[3, 0, tx] + bk
                row1[2 * tx + 1] = u[1, 1, tx] - u[2, 1, tx] - u[3, 1, tx] + bk
            y = 2 * ty
            dst[y, :] = row0[:ow]
            if y + 1 < oh:  # an odd output height leaves the last tile half outside
                dst[y + 1, :] = row1[:ow]


@njit(parallel=True, cache=True)
def _wino_in_par(x, ph, pw, th, tw, v, b0, nb, nblk):
    for t in prange(nb * nblk):
        _wino_in_task(x, ph, pw, th, tw, v, b0, t, nblk)


@njit(cache=True)
def _wino_in_ser(x, ph, pw, th, tw, v, b0, nb, nblk):
    for t in range(nb * nblk):
        _wino_in_task(x, ph, pw, th, tw, v, b0, t, nblk)


@njit(parallel=True, cache=True)
def _wino_out_par(m, bias, has_bias, out, th, tw, b0, nb, nblk):
    for t in prange(nb * nblk):
        _wino_out_task(m, bias, has_bias, out, th, tw, b0, t, nblk)


@njit(cache=True)
def _wino_out_ser(m, bias, has_bias, out, th, tw, b0, nb, nblk):
    for t in range(nb * nblk):
        _wino_out_task(m, bias, has_bias, out, th, tw, b0, t, nblk)


# ---- max pooling ---------------------------------------------------------------------------
@njit(cache=True)
def _max_pool_task(x, kh, kw, sh, sw, ph, pw, y, arg, nc):
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    b = nc // c
    ci = nc - b * c
    src = x[b, ci]
    ninf = -np.inf
    for oy in range(oh):
        for ox in range(ow):
            # Same winner as argmax over the window with padding read as -inf: the first
            # maximum, and the first NaN if there is one (NaN propagates as in PyTorch).
            best = ninf
            bi = -1
            for i in range(kh):
                iy = oy * sh - ph + i
                for j in range(kw):
                    ix = ox * sw - pw + j
                    v = ninf
                    if 0 <= iy < h and 0 <= ix < w:
                        v = src[np.uintp(iy), np.uintp(ix)]
                    if bi < 0 or v > best or (v != v and best == best):
                        best = v
                        bi = i * kw + j
            y[b, ci, oy, ox] = best
            arg[b, ci, oy, ox] = bi


@njit(cache=True)
def _max_pool_2x2_task(x, y, arg, nc):
    """2x2 windows, stride 2, no padding: the common case, with the window unrolled."""
    c = x.shape[1]
    oh, ow = y.shape[2], y.shape[3]
    b = nc // c
    ci = nc - b * c
    src = x[b, ci]
    dst = y[b, ci]
    am = arg[b, ci]
    for oy in range(oh):
        r0 = src[2 * oy]
        r1 = src[2 * oy + 1]
        for ox in range(ow):
            best = r0[2 * ox]
            bi = 0
            v = r0[2 * ox + 1]
            if v > best or (v != v and best == best):
                best = v
                bi = 1
            v = r1[2 * ox]
            if v > best or (v != v and best == best):
                best = v
                bi = 2
            v = r1[2 * ox + 1]
            if v > best or (v != v and best == best):
                best = v
                bi = 3
            dst[oy, ox] = best
            am[oy, ox] = bi


@njit(parallel=True, cache=True)
def _max_pool_par(x, kh, kw, sh, sw, ph, pw, y, arg):
    for nc in prange(x.shape[0] * x.shape[1]):
        if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
            _max_pool_2x2_task(x, y, arg, nc)
        else:
            _max_pool_task(x, kh, kw, sh, sw, ph, pw, y, arg, nc)


@njit(cache=True)
def _max_pool_ser(x, kh, kw, sh, sw, ph, pw, y, arg):
    for nc in range(x.shape[0] * x.shape[1]):
        if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
            _max_pool_2x2_task(x, y, arg, nc)
        else:
            _max_pool_task(x, kh, kw, sh, sw, ph, pw, y, arg, nc)


@njit(cache=True)
def _max_pool_bwd_task(gy, arg, kw, sh, sw, ph, pw, gx, nc):
    c, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    oh, ow = gy.shape[2], gy.shape[3]
    b = nc // c
    ci = nc - b * c
    dst = gx[b, ci]
    dst[:, :] = 0
    g = gy[b, ci]
    a = arg[b, ci]
    for oy in range(oh):
        for ox in range(ow):
            k = a[oy, ox]
            iy = oy * sh - ph + k // kw
            ix = ox * sw - pw + k % kw
            if 0 <= iy < h and 0 <= ix < w:  # a winner in the padding gets no gradient
                dst[np.uintp(iy), np.uintp(ix)] += g[oy, ox]


@njit(cache=True)
def _max_pool_bwd_2x2_task(gy, arg, gx, nc):
    """2x2 stride 2: windows tile the plane, so each input is written once (no zero-fill and
    no read-modify-write); rows/columns past the last window get zeros."""
    c, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    oh, ow = gy.shape[2], gy.shape[3]
    b = nc // c
    ci = nc - b * c
    dst = gx[b, ci]
    g = gy[b, ci]
    a = arg[b, ci]
    for oy in range(oh):
        r0 = dst[2 * oy]
        r1 = dst[2 * oy + 1]
        for ox in range(ow):
            k = a[oy, ox]
            v = g[oy, ox]
            r0[2 * ox] = v if k == 0 else 0
            r0[2 * ox + 1] = v if k == 1 else 0
            r1[2 * ox] = v if k == 2 else 0
            r1[2 * ox + 1] = v if k == 3 else 0
        if w > 2 * ow:
            r0[2 * ow:] = 0
            r1[2 * ow:] = 0
    if h > 2 * oh:
        dst[2 * oh:, :] = 0


@njit(parallel=True, cache=True)
def _max_pool_bwd_par(gy, arg, kh, kw, sh, sw, ph, pw, gx):
    for nc in prange(gx.shape[0] * gx.shape[1]):
        if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
            _max_pool_bwd_2x2_task(gy, arg, gx, nc)
        else:
            _max_pool_bwd_task(gy, arg, kw, sh, sw, ph, pw, gx, nc)


@njit(cache=True)
def _max_pool_bwd_ser(gy, arg, kh, kw, sh, sw, ph, pw, gx):
    for nc in range(gx.shape[0] * gx.shape[1]):
        if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
            _max_pool_bwd_2x2_task(gy, arg, gx, nc)
        else:
            _max_pool_bwd_task(gy, arg, kw, sh, sw, ph, pw, gx, nc)


# ---- ReLU ----------------------------------------------------------------------------------
@njit(cache=True)
def _relu_fwd_range(xf, yf, lo, hi):
    for i in range(lo, hi):
        k = np.uintp(i)  # lo >= 0: skip the wraparound check that blocks vectorisation
        v = xf[k]
        if v > 0 or v != v:  # NaN passes through, as in np.maximum
            yf[k] = v
        else:
            yf[k] = 0


@njit(cache=True)
def _relu_bwd_range(gf, yf, gxf, lo, hi):
    for i in range(lo, hi):
        k = np.uintp(i)
        if yf[k] > 0:
            gxf[k] = gf[k]
        else:
            gxf[k] = 0


@njit(parallel=True, cache=True)
def _relu_fwd_par(xf, yf):
    nt = 64
    for t in prange(nt):
        _relu_fwd_range(xf, yf, t * xf.size // nt, (t + 1) * xf.size // nt)


@njit(cache=True)
def _relu_fwd_ser(xf, yf):
    _relu_fwd_range(xf, yf, 0, xf.size)


@njit(parallel=True, cache=True)
def _relu_bwd_par(gf, yf, gxf):
    nt = 64
    for t in prange(nt):
        _relu_bwd_range(gf, yf, gxf, t * gf.size // nt, (t + 1) * gf.size // nt)


@njit(cache=True)
def _relu_bwd_ser(gf, yf, gxf):
    _relu_bwd_range(gf, yf, gxf, 0, gf.size)


# ---- softmax cross-entropy -----------------------------------------------------------------
@njit(cache=True)
def _softmax_xent(logits, target, prob, losses):
    """Per-row loss -log softmax(logits)[target], keeping the softmax for the backward pass."""
    n, c = logits.shape
    for r in range(n):
        row = logits[r]
        m = row[0]
        for k in range(1, c):
            if row[k] > m:
                m = row[k]
        s = 0.0
        for k in range(c):
            e = np.exp(row[k] - m)  # max subtracted: no overflow
            prob[r, k] = e
            s += e
        inv = 1.0 / s
        for k in range(c):
            prob[r, k] *= inv
        losses[r] = np.log(s) - (row[target[r]] - m)


@njit(cache=True)
def _softmax_xent_bwd(prob, target, scale, grad):
    n, c = prob.shape
    for r in range(n):
        sr = scale[r] if scale.size > 1 else scale[0]
        for k in range(c):
            grad[r, k] = prob[r, k] * sr
        grad[r, target[r]] -= sr


# ---- Python wrappers (the kernel set ``backend.kernels(numpy)`` returns) --------------------
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _c(a):
    return np.ascontiguousarray(a)


def _run(kernel, *args):
    with _launch:
        kernel(*args)


class _ScratchPool:
    """Reuses large work buffers (im2col columns, their gradients) between steps of the same
    shape instead of asking the allocator for fresh pages each time.

    A buffer is handed out again only when nothing outside the pool refers to it any more
    (checked with the reference count, which views of the buffer also raise), so a column
    matrix saved for a pending backward pass is never overwritten.
    """

    def __init__(self, max_bytes=256 << 20):
        self.buffers = []
        self.max_bytes = max_bytes
        self.lock = threading.Lock()

    def get(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        with self.lock:
            best = None
            for buf in self.buffers:
                # 3 references: the list, the loop variable and getrefcount's argument
                if buf.nbytes >= nbytes and sys.getrefcount(buf) <= 3:
                    if best is None or buf.nbytes < best.nbytes:
                        best = buf
            if best is None:
                best = np.empty(nbytes, dtype=np.uint8)
                self.buffers.append(best)
                self._trim()
            return best[:nbytes].view(dtype).reshape(shape)

    def _trim(self):
        """Drop free buffers, oldest first, until the pool holds at most max_bytes."""
        total = sum(b.nbytes for b in self.buffers)
        i = 0
        while total > self.max_bytes and i < len(self.buffers):
            buf = self.buffers[i]
            if sys.getrefcount(buf) <= 3:  # the list, buf and getrefcount's argument
                del self.buffers[i]
                total -= buf.nbytes
            else:
                i += 1


_pool = _ScratchPool()


def im2col_t(x, kh, kw, sh, sw, ph, pw):
    """(N, C, H, W) -> (C*kh*kw, N*OH*OW): every sample's columns side by side, ready for one
    GEMM with the (C_out, C*kh*kw) weight."""
    if x.dtype not in _FLOATS:
        col = generic.im2col(x, kh, kw, sh, sw, ph, pw)
        return col.transpose(1, 0, 2).reshape(col.shape[1], -1)
    x = _c(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = _pool.get((c * kh * kw, n * oh * ow), x.dtype)
    par = _parallel(out.size, _PAR_COL)
    if ph == pw == 0 and ow < _SHORT_ROW:
        off = _offsets(w, sh, sw, oh, ow)
        if par:
            _run(_im2col_off_par, x, kh, kw, off, out)
        else:
            _im2col_off_ser(x, kh, kw, off, out)
    elif par:
        _run(_im2col_par, x, kh, kw, sh, sw, ph, pw, oh, ow, out)
    else:
        _im2col_ser(x, kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def col2im_t(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of ``im2col_t``: (C*kh*kw, N*OH*OW) -> (N, C, H, W)."""
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    if col.dtype not in _FLOATS:
        col = col.reshape(col.shape[0], n, -1).transpose(1, 0, 2)
        return generic.col2im(col, x_shape, kh, kw, sh, sw, ph, pw)
    col = _c(col)
    out = np.empty((n, c, h, w), dtype=col.dtype)
    par = _parallel(col.size, _PAR_COL)
    if ph == pw == 0 and ow < _SHORT_ROW:
        off = _offsets(w, sh, sw, oh, ow)
        if par:
            _run(_col2im_off_par, col, kh, kw, off, out)
        else:
            _col2im_off_ser(col, kh, kw, off, out)
    elif par:
        _run(_col2im_par, col, kh, kw, sh, sw, ph, pw, oh, ow, out)
    else:
        _col2im_ser(col, kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def im2col(x, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.im2col``: (N, C, H, W) -> (N, C*kh*kw, OH*OW)."""
    n = x.shape[0]
    col = im2col_t(x, kh, kw, sh, sw, ph, pw)
    return np.ascontiguousarray(col.reshape(col.shape[0], n, -1).transpose(1, 0, 2))


def col2im(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Same contract as ``generic.col2im``."""
    n, k, length = col.shape
    return col2im_t(col.transpose(1, 0, 2).reshape(k, n * length), x_shape, kh, kw, sh, sw, ph, pw)


def cols_to_nchw(y2, bias, n, oh, ow, out=None):
    """(C_out, N*OH*OW) -> (N, C_out, OH, OW) plus the bias (None for none), into ``out`` (a
    C-contiguous array of that shape) when given."""
    co = y2.shape[0]
    if y2.dtype not in _FLOATS:
        y = np.ascontiguousarray(y2.reshape(co, n, -1).transpose(1, 0, 2))
        if bias is not None:
            y += bias[:, None]
        if out is not None:
            out[...] = y.reshape(out.shape)
            return out
        return y.reshape(n, co, oh, ow)
    out = np.empty((n, co, oh * ow), dtype=y2.dtype) if out is None else out.reshape(n, co, -1)
    has_bias = bias is not None
    b = _c(bias).astype(y2.dtype, copy=False) if has_bias else np.zeros(1, y2.dtype)
    if _parallel(out.size, _PAR_COL):
        _run(_to_nchw_par, _c(y2), b, has_bias, out)
    else:
        _to_nchw_ser(_c(y2), b, has_bias, out)
    return out.reshape(n, co, oh, ow)


# Inference runs im2col + GEMM over chunks of samples whose column matrix stays about this size
# (elements): in the caches, instead of one matrix for the batch that is written to memory and
# read back (LeNet-5 at batch 1000: 60 MB; ResNet-50's stem at batch 8: 59 MB).
_INFER_CHUNK = 1 << 20


def conv2d_inference(x, w, bias, stride, padding):
    """im2col + GEMM convolution that keeps nothing for a backward pass, chunked over samples.
    A chunk of one sample multiplies straight into its NCHW output; larger chunks go through
    ``cols_to_nchw``."""
    (sh, sw), (ph, pw) = stride, padding
    x = _c(x)
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    w2 = _c(w).astype(x.dtype, copy=False).reshape(co, -1)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    chunk = max(1, _INFER_CHUNK // (c * kh * kw * oh * ow))
    for s0 in range(0, n, chunk):
        xs = x[s0:s0 + chunk]
        col = im2col_t(xs, kh, kw, sh, sw, ph, pw)
        if xs.shape[0] == 1:
            y = out[s0].reshape(co, -1)
            np.matmul(w2, col, out=y)
            if bias is not None:
                y += bias[:, None]
        else:
            cols_to_nchw(w2 @ col, bias, xs.shape[0], oh, ow, out=out[s0:s0 + xs.shape[0]])
    return out


def nchw_to_cols(g, with_cols=True):
    """(N, C_out, OH, OW) -> ((C_out, N*OH*OW) or None, bias gradient (C_out,))."""
    n, co = g.shape[:2]
    if g.dtype not in _FLOATS:
        g2 = g.reshape(n, co, -1).transpose(1, 0, 2).reshape(co, -1)
        return (g2 if with_cols else None), g2.sum(axis=1)
    g3 = _c(g).reshape(n, co, -1)
    out = _pool.get((co, n * g3.shape[2]), g.dtype) if with_cols else np.empty((0, 0), g.dtype)
    gb = np.empty(co, dtype=g.dtype)
    if _parallel(g3.size, _PAR_COL):
        _run(_to_cols_par, g3, out, gb)
    else:
        _to_cols_ser(g3, out, gb)
    return (out if with_cols else None), gb


def bias_grad_nchw(g):
    """Sum of an (N, C, ...) gradient over every dim but the channel dim."""
    return nchw_to_cols(g, with_cols=False)[1]


def use_direct_conv(x_shape, w_shape, stride):
    """Whether ``conv2d_direct`` beats im2col + GEMM: stride 1 and few inputs per output."""
    co, ci, kh, kw = w_shape
    return stride == (1, 1) and ci * kh * kw <= 32


def conv2d_direct(x, w, bias, ph, pw):
    """Stride-1 convolution computed without an im2col matrix (see the kernels' comment)."""
    x, w = _c(x), _c(w).astype(x.dtype, copy=False)
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    out = np.empty((n, co, h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1), dtype=x.dtype)
    has_bias = bias is not None
    b = _c(bias).astype(x.dtype, copy=False) if has_bias else np.zeros(1, x.dtype)
    if n > 1 and _parallel(n * co * out.shape[2] * (wd + 2 * pw) * c * kh * kw, _PAR_MACS):
        _run(_direct_fwd_par, x, w, b, has_bias, ph, pw, out)
    else:
        _direct_fwd_ser(x, w, b, has_bias, ph, pw, out)
    return out


def conv2d_direct_wgrad(x, g, kh, kw, ph, pw):
    """(weight gradient, bias gradient) of ``conv2d_direct``, summed in float64 per thread."""
    x, g = _c(x), _c(g)
    n, c = x.shape[:2]
    co = g.shape[1]
    macs = n * co * g.shape[2] * (x.shape[3] + 2 * pw) * c * kh * kw
    parts = min(numba.get_num_threads(), n) if _parallel(macs, _PAR_MACS) else 1
    gw = np.zeros((parts, co, c, kh, kw), dtype=np.float64)
    gb = np.zeros((parts, co), dtype=np.float64)
    if parts > 1:
        _run(_direct_wgrad_par, x, g, ph, pw, kh, kw, gw, gb)
    else:
        _direct_wgrad_ser(x, g, ph, pw, kh, kw, gw, gb)
    return gw.sum(axis=0).astype(x.dtype), gb.sum(axis=0).astype(x.dtype)


def use_winograd(x_shape, w_shape, stride, padding):
    """Whether ``conv2d_winograd`` beats im2col + GEMM: 3x3 stride-1 layers with enough channels
    to keep its GEMMs deep and enough 2x2 tiles to pay for transforming the filters (measured on
    ResNet-50's layers: a win from 8x64x56x56 to 8x256x14x14, a loss at 1x256x14x14 or 7x7)."""
    co, ci, kh, kw = w_shape
    if (kh, kw) != (3, 3) or stride != (1, 1) or ci < 32 or co < 32:
        return False
    oh, ow = x_shape[2] + 2 * padding[0] - 2, x_shape[3] + 2 * padding[1] - 2
    return x_shape[0] * ((oh + 1) // 2) * ((ow + 1) // 2) >= 256


# Samples go through the three Winograd stages in chunks of at least this many tiles: enough
# columns for BLAS to run at full speed, few enough that V and M stay in the caches.
_WINO_TILES = 768


def conv2d_winograd(x, w, bias, ph, pw):
    """3x3 stride-1 convolution by Winograd F(2x2, 3x3) (see the kernels' comment)."""
    x = _c(x)
    dt = x.dtype
    n, c, h, wd = x.shape
    co = w.shape[0]
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    u = np.empty((16, co, c), dtype=dt)
    _wino_filter(_c(w).astype(dt, copy=False), u.reshape(16, -1))
    has_bias = bias is not None
    b = _c(bias).astype(dt, copy=False) if has_bias else np.zeros(1, dt)
    out = np.empty((n, co, oh, ow), dtype=dt)
    chunk = min(n, -(-_WINO_TILES // (th * tw)))
    for b0 in range(0, n, chunk):
        nb = min(chunk, n - b0)
        tiles = nb * th * tw
        v = _pool.get((16, c, tiles), dt)
        m = _pool.get((16, co, tiles), dt)
        par = _parallel(16 * c * tiles, _PAR_COL // 4)
        nblk = 4 if par else 1  # channel blocks per sample: work for both threads at batch 1
        if par:
            _run(_wino_in_par, x, ph, pw, th, tw, v, b0, nb, nblk)
        else:
            _wino_in_ser(x, ph, pw, th, tw, v, b0, nb, nblk)
        np.matmul(u, v, out=m)
        if par:
            _run(_wino_out_par, m, b, has_bias, out, th, tw, b0, nb, nblk)
        else:
            _wino_out_ser(m, b, has_bias, out, th, tw, b0, nb, nblk)
    return out


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Returns (y, argmax) with argmax the flat index i*kw+j of the winner (int32), as generic."""
    if x.dtype not in _FLOATS:
        return generic.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
    x = _c(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)
    if _parallel(x.size, _PAR_POOL):
        _run(_max_pool_par, x, kh, kw, sh, sw, ph, pw, y, arg)
    else:
        _max_pool_ser(x, kh, kw, sh, sw, ph, pw, y, arg)
    return y, arg


def max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    if gy.dtype not in _FLOATS:
        return generic.max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw)
    gx = np.empty(x_shape, dtype=gy.dtype)
    args = (_c(gy), _c(arg).astype(np.int32, copy=False), kh, kw, sh, sw, ph, pw, gx)
    if _parallel(gx.size, _PAR_POOL):
        _run(_max_pool_bwd_par, *args)
    else:
        _max_pool_bwd_ser(*args)
    return gx


def relu_forward(x):
    if x.dtype not in _FLOATS:
        return np.maximum(x, 0)
    x = _c(x)
    y = np.empty_like(x)
    if _parallel(x.size, _PAR_RELU):
        _run(_relu_fwd_par, x.reshape(-1), y.reshape(-1))
    else:
        _relu_fwd_ser(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(g, y):
    """Gradient of ReLU from its output: y > 0 exactly where the input was > 0."""
    if g.dtype not in _FLOATS or g.dtype != y.dtype or g.shape != y.shape:
        return g * (y > 0)
    g, y = _c(g), _c(y)
    gx = np.empty_like(g)
    if _parallel(g.size, _PAR_RELU):
        _run(_relu_bwd_par, g.reshape(-1), y.reshape(-1), gx.reshape(-1))
    else:
        _relu_bwd_ser(g.reshape(-1), y.reshape(-1), gx.reshape(-1))
    return gx


def softmax_cross_entropy(logits, target):
    """(per-row losses, softmax probabilities) of logits (N, C) against class indices (N,)."""
    if logits.dtype not in _FLOATS:
        logits = logits.astype(np.float64)
    logits = _c(logits)
    if logits.size > 8192:
        # numba's exp is scalar (no vector math library): past a few thousand elements numpy's
        # vectorised exp wins over the fused loop (1000 classes x 256: 0.3 ms against 1.1 ms)
        m = logits.max(axis=1, keepdims=True)
        prob = logits - m
        np.exp(prob, out=prob)
        s = prob.sum(axis=1, keepdims=True)
        prob /= s
        rows = np.arange(logits.shape[0])
        losses = (np.log(s[:, 0]) - (logits[rows, target] - m[:, 0])).astype(logits.dtype, copy=False)
        return losses, prob
    prob = np.empty_like(logits)
    losses = np.empty(logits.shape[0], dtype=logits.dtype)
    _softmax_xent(logits, _c(target), prob, losses)
    return losses, prob


def softmax_cross_entropy_backward(prob, target, scale, divisor=1):
    """(softmax - one_hot(target)) * (scale / divisor), with scale a scalar or one per row."""
    scale = np.asarray(scale, dtype=prob.dtype)
    if divisor != 1:
        scale = scale / divisor
    scale = np.ascontiguousarray(scale.reshape(-1))
    grad = np.empty_like(prob)
    _softmax_xent_bwd(prob, _c(target), scale, grad)
    return grad


# batch norm lives in its own module; it is part of this kernel set
from .cpu_batchnorm import batch_norm_backward, batch_norm_train, channel_affine  # noqa: E402,F401
