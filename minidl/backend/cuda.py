"""CUDA kernels (CuPy) for the loops that numba runs on the CPU: im2col/col2im, max pooling,
batch norm, the fused activation, loss and optimizer updates.

Same signatures, layouts and results as ``generic.py`` (argmax is the flat window index i*kw+j,
int32). Matrix products are not here: ``cupy.matmul`` sends them to cuBLAS; convolutions go to
cuDNN where it is installed (``cudnn.py``).

Each kernel is written in ElementwiseKernel form (``SPECS``: parameters, then a body run for each
flat index ``i``), with one thread per *output* element that reads what it needs from ``raw``
inputs by computing flat indices itself, so nothing is written twice. ``kernel_source`` turns a
spec into a plain CUDA function that ``_RawLaunch`` builds with NVRTC and launches directly: a
training step launches hundreds of kernels, and CuPy's ElementwiseKernel call costs several
times a raw launch in host time. CuPy's ElementwiseKernel of the same spec is the fallback.

- ``im2col``: one thread per column entry copies the pixel it reads (0 in the padding);
- ``col2im``: one thread per image pixel gathers the column entries that read it. A gather needs
  no atomics, so the sum is deterministic, and it adds the taps in the same (i, j) order as
  generic.py, so the two agree to the last bit;
- ``im2col_t``/``col2im_t``: the same two kernels writing/reading the (C*kh*kw, N*OH*OW) layout
  of the CPU kernels (cpu/conv_im2col.py), which lets a conv be one GEMM over the whole batch;
- ``max_pool2d_forward``: one thread per output scans its window;
- ``max_pool2d_backward``: one thread per input pixel gathers the outputs whose argmax is it.

The loop bodies are plain C++ over the flat index ``i`` (CuPy's name), kept as strings so tests
can compile them on the host (``kernel_source(..., device=False)``) and compare them with
generic.py where there is no GPU, and ``tools/nvrtc_check.py`` compiles them as the GPU would.
"""
from __future__ import annotations

import os

import numpy as _np

from . import allow_tf32, cudnn, cupy_module, generic, get_array_module
from .dtypes import channel_dtype
from .generic import out_size

__all__ = ["out_size", "im2col", "col2im", "im2col_t", "col2im_t", "max_pool2d_forward",
           "max_pool2d_backward", "cols_to_nchw", "relu_backward", "astype",
           "softmax_cross_entropy", "softmax_cross_entropy_backward", "sgd_update",
           "sgd_update_many", "adam_update", "batch_norm_train", "batch_norm_backward",
           "batch_norm_eval", "channel_affine", "unscale_grads", "conv2d_algorithm",
           "conv2d_cudnn", "conv2d_cudnn_backward_data", "conv2d_cudnn_backward_filter",
           "activation_forward", "activation_backward", "rnn_step_fits", "lstm_step_forward", "lstm_step_backward", "gru_step_forward",
           "gru_step_backward"]

# Geometry shared by every kernel: input h x w, kernel kh x kw, stride, padding, output oh x ow.
GEOMETRY = ("int32 h, int32 w, int32 kh, int32 kw, int32 sh, int32 sw, int32 ph, int32 pw, "
            "int32 oh, int32 ow")
# Where column row r = (c, i, j) of sample s starts: s * sn + r * sr. (sn, sr) = (K*L, L) is
# generic.py's (N, K, L) layout; (L, N*L) is the (K, N*L) layout whose GEMM covers the batch.
COLUMNS = "int32 channels, int64 sn, int64 sr"
# Divisors of a kernel's index arithmetic come with their multiply-and-shift constants
# (``_magic``), named m_<divisor>.
IM2COL_MAGIC = "uint64 m_ow, uint64 m_oh, uint64 m_kw, uint64 m_kh, uint64 m_channels"

# One thread per column entry, in (sample, channel, i, j, oy, ox) order; ``t`` ends as the
# (sample, channel) plane.
IM2COL = """
idx_t t = i, q;
q = DIVM(t, ow, m_ow); const int ox = t - q * ow; t = q;
q = DIVM(t, oh, m_oh); const int oy = t - q * oh; t = q;
q = DIVM(t, kw, m_kw); const int kj = t - q * kw; t = q;
q = DIVM(t, kh, m_kh); const int ki = t - q * kh; t = q;
q = DIVM(t, channels, m_channels);
const int y = oy * sh - ph + ki;
const int x = ox * sw - pw + kj;
const ptrdiff_t row = ((t - q * channels) * kh + ki) * kw + kj;
col[q * sn + row * sr + oy * ow + ox] =
    (y >= 0 && y < h && x >= 0 && x < w) ? img[(t * h + y) * w + x] : (T)0;
"""

# Pixel (y, x) was read by tap (ki, kj) of output (oy, ox) when y + ph - ki == oy * sh (same in x).
COL2IM = """
idx_t t = i;
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
        acc = acc + col[base + (ki * kw + kj) * sr + (yy / sh) * ow + xx / sw];
    }
}
img = acc;
"""

# (``acc = acc + v`` rather than ``+=``: CuPy's bfloat16 type has no compound assignment.)

# Padding counts as -inf (``ninf``), as in generic.py: it only wins a window of -infs, and then
# only as its first cell. Ties keep the first maximum and a NaN wins, as numpy's argmax does.
MAX_POOL_FORWARD = """
idx_t t = i;
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
idx_t t = i;
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
        if (arg[o] == ki * kw + kj) acc = acc + gy[o];
    }
}
gx = acc;
"""

# The GEMM output (Co, N*L) -> NCHW, adding the bias on the way: one pass instead of a transposed
# copy and a broadcast add.
COLS_TO_NCHW = """
idx_t t = i;
idx_t q = DIVM(t, length, m_length);
const ptrdiff_t l = t - q * length;
t = q;
q = DIVM(t, channels, m_channels);
const ptrdiff_t c = t - q * channels;
y = y2[c * nl + q * length + l] + (with_bias ? bias[c] : (T)0);
"""

# The inverse layout: NCHW (N, Co, L) -> the (Co, N*L) columns a weight-gradient GEMM takes.
NCHW_TO_COLS = """
idx_t t = i;
idx_t q = DIVM(t, length, m_length);
const idx_t l = t - q * length;
t = q;
q = DIVM(t, samples, m_samples);
g2 = g[((t - q * samples) * channels + q) * length + l];
"""

# relu(a + b), the residual add of a ResNet block and the ReLU after it, in one pass; NaN passes
# through as in maximum(v, 0).
ADD_RELU = """
const T v = a[i] + b[i];
y = (v > (T)0 || v != v) ? v : (T)0;
"""

# As in PyTorch, the gradient is g where the output is positive and exactly 0 elsewhere.
RELU_BACKWARD = """
gx = y[i] <= (T)0 ? (T)0 : g[i];
"""

# A dtype conversion between float32 and the 16-bit types (autocast's casts), through float.
CAST = """
y = (P)(float)x[i];
"""

# One thread per row: max, sum of exponentials, probabilities and the row's loss, in one pass
# over the row's classes (a NaN logit makes the row's max, loss and probabilities NaN).
SOFTMAX_XENT = """
const ptrdiff_t r = i * classes;
T m = logits[r];
for (int c = 1; c < classes; ++c) {
    const T v = logits[r + c];
    if (!(v <= m)) m = v;
}
T s = 0;
for (int c = 0; c < classes; ++c) {
    const T e = exp(logits[r + c] - m);
    prob[r + c] = e;
    s += e;
}
const T inv = (T)1 / s;
for (int c = 0; c < classes; ++c) prob[r + c] *= inv;
loss = log(s) - (logits[r + target[i]] - m);
"""

# (softmax - one_hot(target)) * scale / divisor; scale holds one value, or one per row.
SOFTMAX_XENT_BACKWARD = """
const ptrdiff_t r = i / classes;
const T onehot = (i - r * classes) == target[r] ? (T)1 : (T)0;
grad = (prob[i] - onehot) * (scale[per_row ? r : 0] / (T)divisor);
"""

# torch.optim.SGD's update for one parameter in one pass: d = grad + weight_decay * param;
# with momentum, buf = momentum * buf + (1 - dampening) * d (buf = d on the first step) and
# d = buf, or d + momentum * buf with Nesterov; then param -= lr * d.
SGD = """
T d = grad[i];
if (weight_decay != 0) d += (T)weight_decay * param;
param -= (T)lr * d;
"""

SGD_MOMENTUM = """
T d = grad[i];
if (weight_decay != 0) d += (T)weight_decay * param;
const T b = first ? d : (T)momentum * buf + (T)(1 - dampening) * d;
buf = b;
param -= (T)lr * (nesterov ? d + (T)momentum * b : b);
"""

# The same momentum step for many parameters in one launch (a training step's optimizer is
# otherwise one launch per parameter tensor). ``table`` holds one row per tensor: the addresses
# of its parameter, gradient and momentum buffer, and the running element count at its end;
# thread i finds its tensor by a binary search over those ends. ``anchor`` (the first
# parameter, written through the table like the others) only fixes T.
SGD_MOMENTUM_MANY = """
long long lo = 0, hi = ntensors - 1;
while (lo < hi) {
    const long long mid = (lo + hi) / 2;
    if (table[4 * mid + 3] <= (long long)i) lo = mid + 1; else hi = mid;
}
const long long j = (long long)i - (lo ? table[4 * lo - 1] : 0);
T* param = (T*)(size_t)table[4 * lo];
const T* grad = (const T*)(size_t)table[4 * lo + 1];
T* buf = (T*)(size_t)table[4 * lo + 2];
T d = grad[j];
if (weight_decay != 0) d += (T)weight_decay * param[j];
const T b = (T)momentum * buf[j] + (T)(1 - dampening) * d;
buf[j] = b;
param[j] -= (T)lr * (nesterov ? d + (T)momentum * b : b);
"""

# torch.optim.Adam (no amsgrad): the moments, then param -= step_size * m / (sqrt(v) / c2 + eps),
# with step_size = lr / (1 - beta1^t) and c2 = sqrt(1 - beta2^t) computed on the host.
ADAM = """
T d = grad[i];
if (weight_decay != 0) d += (T)weight_decay * param;
const T mi = (T)beta1 * m + (T)(1 - beta1) * d;
const T vi = (T)beta2 * v + (T)(1 - beta2) * d * d;
m = mi;
v = vi;
param -= (T)step_size * mi / (sqrt(vi) / (T)c2 + (T)eps);
"""

# ---- batch norm: a reduction launch, a per-channel launch and an elementwise launch a pass --
# Channel c of an (N, C, HW) input is N planes of HW contiguous values. A reduction runs
# groups * lanes threads per channel: thread (g, l) reads planes g, g + groups, ... and in each
# plane the values l, l + lanes, ... (neighbouring threads read neighbouring addresses, two
# loads in flight per thread), keeps float64 partial sums and adds them into the channel's two
# float64 accumulators with atomicAdd. The sums are of x - x[first value of the channel], a shift
# close to the mean, so sum(d^2)/n - mean(d)^2 does not cancel at a large offset (x ~ 1e4) the
# way sum(x^2)/n - mean(x)^2 would.
BN_WALK = """
const idx_t per_channel = (idx_t)groups * (idx_t)lanes;
const idx_t c = (idx_t)i / per_channel;
const idx_t grp = ((idx_t)i % per_channel) / (idx_t)lanes;
const idx_t lane = (idx_t)i % (idx_t)lanes;
const idx_t nplanes = (idx_t)count / (idx_t)hw;
"""
# The 32 lanes of a warp are 32 threads of one channel (lanes is a multiple of 32, CuPy's
# blocks are 128 threads, and every warp runs the same number of loop trips), so on the GPU
# they first add their sums together with shuffles and one lane does the two atomic adds.
BN_ACCUMULATE = """
double s = s0 + s1, q = q0 + q1;
#ifdef __CUDACC__
for (int off = 16; off > 0; off >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, off);
    q += __shfl_down_sync(0xffffffffu, q, off);
}
if ((threadIdx.x & 31) == 0)
#endif
{
    atomicAdd(&acc[c], s);
    atomicAdd(&acc[channels + c], q);
}
"""

BN_PARTIAL_STATS = BN_WALK + """
const double shift = to_double(x[c * hw]);
double s0 = 0, q0 = 0, s1 = 0, q1 = 0;
for (idx_t n = grp; n < nplanes; n += groups) {
    const idx_t row = (n * channels + c) * hw;
    idx_t p = lane;
    for (; p + lanes < hw; p += 2 * lanes) {
        const double d0 = to_double(x[row + p]) - shift;
        const double d1 = to_double(x[row + p + lanes]) - shift;
        s0 += d0; q0 += d0 * d0;
        s1 += d1; q1 += d1 * d1;
    }
    if (p < hw) {
        const double d0 = to_double(x[row + p]) - shift;
        s0 += d0; q0 += d0 * d0;
    }
}
""" + BN_ACCUMULATE

# One thread per channel: the batch mean and (biased) variance from the partial sums, the
# per-channel scale and shift of y = x * scale + shift, and PyTorch's running-statistics update
# (unbiased variance, weight ``momentum`` on the new value). The five per-channel results are the
# rows of one (5, C) array ``stats``: mean, variance, invstd, scale, shift. The sums are set back
# to zero as they are read, so the next reduction into the same buffer needs no memset.
BN_FINALIZE = """
const double s = acc[i], q = acc[channels + i];
acc[i] = 0;
acc[channels + i] = 0;
const double d = s / (double)count;
double var = q / (double)count - d * d;
if (var < 0) var = 0;
const double mu = to_double(x[i * hw]) + d;
const double inv = 1.0 / sqrt(var + eps);
const double a = has_weight ? (double)weight[i] * inv : inv;
stats[i] = (P)mu;
stats[channels + i] = (P)var;
stats[2 * channels + i] = (P)inv;
stats[3 * channels + i] = (P)a;
stats[4 * channels + i] = (P)((has_bias ? (double)bias[i] : 0.0) - mu * a);
if (count_batch && i == 0) tracked[0] = tracked[0] + 1;
if (update) {
    const double unbiased = count > 1 ? var * (double)count / (double)(count - 1) : var;
    rmean[i] = (P)((1 - momentum) * (double)rmean[i] + momentum * mu);
    rvar[i] = (P)((1 - momentum) * (double)rvar[i] + momentum * unbiased);
}
"""

# y = x * scale[c] + shift[c] (``ss`` holds scale, then shift), then max(y, 0) when the
# following ReLU is fused in.
# The channel of element i: (i / hw) % channels, with both divisions by multiply and shift.
CHANNEL_OF_I = """
const idx_t plane = DIVM((idx_t)i, hw, m_hw);
const idx_t c = plane - DIVM(plane, channels, m_channels) * (idx_t)channels;
"""

BN_NORMALIZE = CHANNEL_OF_I + """
const P v = (P)x[i] * ss[c] + ss[channels + c];
y = (relu && v < (P)0) ? (T)0 : (T)v;
"""

# Backward reduction: per channel, sum(g) and sum(g * (x - mean)), where g is the output's
# gradient (zero where a fused ReLU cut the output to 0).
BN_PARTIAL_GRAD = BN_WALK + """
const double mu = (double)mean[c];
double s0 = 0, q0 = 0, s1 = 0, q1 = 0;
for (idx_t n = grp; n < nplanes; n += groups) {
    const idx_t row = (n * channels + c) * hw;
    idx_t p = lane;
    for (; p + lanes < hw; p += 2 * lanes) {
        const idx_t k0 = row + p, k1 = row + p + lanes;
        const double g0 = (relu && !(to_double(y[k0]) > 0)) ? 0.0 : to_double(g[k0]);
        const double g1 = (relu && !(to_double(y[k1]) > 0)) ? 0.0 : to_double(g[k1]);
        s0 += g0; q0 += g0 * (to_double(x[k0]) - mu);
        s1 += g1; q1 += g1 * (to_double(x[k1]) - mu);
    }
    if (p < hw) {
        const idx_t k0 = row + p;
        const double g0 = (relu && !(to_double(y[k0]) > 0)) ? 0.0 : to_double(g[k0]);
        s0 += g0; q0 += g0 * (to_double(x[k0]) - mu);
    }
}
""" + BN_ACCUMULATE

# One thread per channel: dx = alpha * g + beta * (x - mean) + gamma with
# alpha = w * invstd, beta = -alpha * invstd^2 * sum(g (x - mean)) / n, gamma = -alpha * sum(g) / n
# (the rows of ``coef``); the weight gradient is sum(g * xhat) = invstd * sum(g (x - mean)), the
# bias gradient sum(g). The sums are set back to zero as they are read (see BN_FINALIZE).
BN_FINALIZE_GRAD = """
const double s = acc[i], q = acc[channels + i];
acc[i] = 0;
acc[channels + i] = 0;
const double inv = (double)invstd[i];
const double a = has_weight ? (double)weight[i] * inv : inv;
coef[i] = (P)a;
coef[channels + i] = (P)(-a * inv * inv * q / (double)count);
coef[2 * channels + i] = (P)(-a * s / (double)count);
gweight[i] = (P)(q * inv);
gbias[i] = (P)s;
"""

# Eval mode, one thread per channel: y = x * scale + shift from the running statistics, with
# scale = weight * invstd and shift = bias - mean * scale (``ss`` holds scale, then shift, as
# bn_normalize reads them), in double precision.
BN_EVAL_COEF = """
const double inv = 1.0 / sqrt((double)rvar[i] + eps);
const double a = has_weight ? (double)weight[i] * inv : inv;
invstd[i] = (P)inv;
ss[i] = (P)a;
ss[channels + i] = (P)((has_bias ? (double)bias[i] : 0.0) - (double)rmean[i] * a);
"""

BN_INPUT_GRAD = CHANNEL_OF_I + """
const P gi = (relu && !((P)y[i] > (P)0)) ? (P)0 : (P)g[i];
gx = (T)(coef[c] * gi + coef[channels + c] * ((P)x[i] - mean[c]) + coef[2 * channels + c]);
"""

BN_GEOMETRY = "int64 channels, int64 hw, int64 count, int64 groups, int64 lanes"

# GradScaler's unscale and inf/NaN check in one pass over a gradient: grad *= inv_scale, and the
# flag is set where a value is inf or NaN (v - v is 0 exactly for finite v). Every thread that
# sets the flag writes the same 1, so the race is harmless and needs no atomic.
UNSCALE_GRADS = """
const T v = grad;
if (!(v - v == (T)0)) found_inf[0] = 1;
grad = v * (T)inv_scale;
"""

# One time step of an LSTM or a GRU (nn/rnn.py's Recurrence), one thread per (sample, unit):
# the gate arithmetic after the step's h @ W_hh.T, forward and backward, in one launch instead of
# about twenty array expressions. Gate q of unit j in row n is at n * G * hidden + q * hidden + j
# (G = 4 for an LSTM's i, f, g, o; 3 for a GRU's r, z, n). Computed in double (the inputs are
# float32 or float64, see rnn_step_fits): a step is a few thousand values, bound by the launch.
RNN_ROW = """
const long long n = i / hidden, j = i - n * hidden;
"""
SIGMOID = "(({v}) >= 0 ? 1.0 / (1.0 + exp(-fabs({v}))) : exp(-fabs({v})) / (1.0 + exp(-fabs({v}))))"
LSTM_STEP = RNN_ROW + """
const long long r = n * 4 * hidden + j;
const double vi = to_double(xw[r]) + to_double(gh[r]) + to_double(bias[j]);
const double vf = to_double(xw[r + hidden]) + to_double(gh[r + hidden])
                  + to_double(bias[j + hidden]);
const double vg = to_double(xw[r + 2 * hidden]) + to_double(gh[r + 2 * hidden])
                  + to_double(bias[j + 2 * hidden]);
const double vo = to_double(xw[r + 3 * hidden]) + to_double(gh[r + 3 * hidden])
                  + to_double(bias[j + 3 * hidden]);
const double ai = """ + SIGMOID.format(v="vi") + """;
const double af = """ + SIGMOID.format(v="vf") + """;
const double ag = tanh(vg);
const double ao = """ + SIGMOID.format(v="vo") + """;
const double c = af * to_double(c_prev[i]) + ai * ag;
acts[r] = (T)ai;
acts[r + hidden] = (T)af;
acts[r + 2 * hidden] = (T)ag;
acts[r + 3 * hidden] = (T)ao;
c_out[i] = (T)c;
h_out[i] = (T)(ao * tanh(c));
"""
# dc: the cell gradient carried from step t+1 in, c_prev's out (each thread its own element)
LSTM_STEP_BACKWARD = RNN_ROW + """
const long long r = n * 4 * hidden + j;
const double ai = to_double(acts[r]), af = to_double(acts[r + hidden]);
const double ag = to_double(acts[r + 2 * hidden]), ao = to_double(acts[r + 3 * hidden]);
const double tc = tanh(to_double(c_t[i]));
const double d = to_double(dh[i]);
const double dcv = to_double(dc[i]) + to_double(gc[n * gwidth + goff + j])
                   + d * ao * (1.0 - tc * tc);
da[r] = (T)(dcv * ag * ai * (1.0 - ai));
da[r + hidden] = (T)(dcv * to_double(c_prev[i]) * af * (1.0 - af));
da[r + 2 * hidden] = (T)(dcv * ai * (1.0 - ag * ag));
da[r + 3 * hidden] = (T)(d * tc * ao * (1.0 - ao));
dc[i] = (T)(dcv * af);
"""
GRU_STEP = RNN_ROW + """
const long long r = n * 3 * hidden + j;
const double vr = to_double(xw[r]) + to_double(gh[r]) + to_double(bias[j]);
const double vz = to_double(xw[r + hidden]) + to_double(gh[r + hidden])
                  + to_double(bias[j + hidden]);
const double ar = """ + SIGMOID.format(v="vr") + """;
const double az = """ + SIGMOID.format(v="vz") + """;
const double ghn = to_double(gh[r + 2 * hidden]) + to_double(bias[j + 2 * hidden]);
const double an = tanh(to_double(xw[r + 2 * hidden]) + ar * ghn);
acts[r] = (T)ar;
acts[r + hidden] = (T)az;
acts[r + 2 * hidden] = (T)an;
hn[i] = (T)ghn;
h_out[i] = (T)(an + az * (to_double(h_prev[i]) - an));
"""
GRU_STEP_BACKWARD = RNN_ROW + """
const long long r = n * 3 * hidden + j;
const double ar = to_double(acts[r]), az = to_double(acts[r + hidden]);
const double an = to_double(acts[r + 2 * hidden]);
const double d = to_double(dh[i]);
const double dxn = d * (1.0 - az) * (1.0 - an * an);
const double dxr = dxn * to_double(hn[i]) * ar * (1.0 - ar);
const double dxz = d * (to_double(h_prev[i]) - an) * az * (1.0 - az);
dxw[r] = (T)dxr;
dxw[r + hidden] = (T)dxz;
dxw[r + 2 * hidden] = (T)dxn;
dgh[r] = (T)dxr;
dgh[r + hidden] = (T)dxz;
dgh[r + 2 * hidden] = (T)(dxn * ar);
dh_carry[i] = (T)(d * az);
"""

# The sigmoid, SiLU and GELU (exact, and the tanh form as x sigmoid(2z)) in one launch each way
# (op: generic.ACT_SIGMOID .. ACT_GELU_TANH, 0..3), in double, the sigmoid as the recurrent
# steps': CuPy's array expressions of these are 6 to 25 launches. Backward takes the input x,
# except the sigmoid's, which takes its output y.
ACT_FORWARD = """
const double v = to_double(x[i]);
double r;
if (op == 0) r = """ + SIGMOID.format(v="v") + """;
else if (op == 1) r = v * """ + SIGMOID.format(v="v") + """;
else if (op == 2) r = 0.5 * v * erfc(-v * 0.7071067811865476);
else {
    const double z2 = 1.5957691216057308 * (v + 0.044715 * v * v * v);
    r = v * """ + SIGMOID.format(v="z2") + """;
}
y = (T)r;
"""
ACT_BACKWARD = """
const double v = to_double(x[i]);
double d;
if (op == 0) d = v * (1.0 - v);
else if (op == 1) {
    const double s = """ + SIGMOID.format(v="v") + """;
    d = s * (1.0 + v * (1.0 - s));
} else if (op == 2) {
    d = 0.5 * erfc(-v * 0.7071067811865476) + v * 0.3989422804014327 * exp(-0.5 * v * v);
} else {
    const double z2 = 1.5957691216057308 * (v + 0.044715 * v * v * v);
    const double s = """ + SIGMOID.format(v="z2") + """;
    const double sn = """ + SIGMOID.format(v="-z2") + """;
    d = s + 2.0 * v * s * sn * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * v * v);
}
gx = (T)(to_double(g[i]) * d);
"""

# name: (input parameters, output parameters, body)
SPECS = {
    "im2col": ("raw T img, " + GEOMETRY + ", " + COLUMNS + ", " + IM2COL_MAGIC, "raw T col",
               IM2COL),
    "col2im": ("raw T col, " + GEOMETRY + ", " + COLUMNS, "T img", COL2IM),
    "max_pool2d_forward": ("raw T img, float64 ninf, " + GEOMETRY, "T pooled, int32 arg",
                           MAX_POOL_FORWARD),
    "max_pool2d_backward": ("raw T gy, raw int32 arg, " + GEOMETRY, "T gx", MAX_POOL_BACKWARD),
    "cols_to_nchw": ("raw T y2, raw T bias, int32 with_bias, int64 channels, int64 length, "
                     "int64 nl, uint64 m_length, uint64 m_channels", "T y", COLS_TO_NCHW),
    "nchw_to_cols": ("raw T g, int64 channels, int64 samples, int64 length, uint64 m_length, "
                     "uint64 m_samples", "T g2", NCHW_TO_COLS),
    "add_relu": ("raw T a, raw T b", "T y", ADD_RELU),
    "relu_backward": ("raw T g, raw T y", "T gx", RELU_BACKWARD),
    "cast": ("raw T x", "P y", CAST),
    "softmax_xent": ("raw T logits, raw int64 target, int32 classes", "T loss, raw T prob",
                     SOFTMAX_XENT),
    "softmax_xent_backward": ("raw T prob, raw int64 target, raw T scale, int64 classes, "
                              "int32 per_row, float64 divisor", "T grad", SOFTMAX_XENT_BACKWARD),
    "sgd": ("raw T grad, float64 lr, float64 weight_decay", "T param", SGD),
    "sgd_momentum": ("raw T grad, float64 lr, float64 momentum, float64 dampening, "
                     "float64 weight_decay, int32 nesterov, int32 first", "T param, T buf",
                     SGD_MOMENTUM),
    "sgd_momentum_many": ("raw int64 table, int64 ntensors, float64 lr, float64 momentum, "
                          "float64 dampening, float64 weight_decay, int32 nesterov",
                          "raw T anchor", SGD_MOMENTUM_MANY),
    "adam": ("raw T grad, float64 step_size, float64 beta1, float64 beta2, float64 c2, "
             "float64 eps, float64 weight_decay", "T param, T m, T v", ADAM),
    "bn_partial_stats": ("raw T x, " + BN_GEOMETRY, "raw float64 acc", BN_PARTIAL_STATS),
    # the sums ``acc`` are read and zeroed: an output (CuPy makes raw inputs const)
    "bn_finalize": ("raw T x, raw P weight, raw P bias, int64 channels, int64 hw, int64 count, "
                    "float64 eps, float64 momentum, int32 has_weight, int32 has_bias, "
                    "int32 update, int32 count_batch", "raw float64 acc, raw P stats, raw P rmean, "
                    "raw P rvar, raw int64 tracked", BN_FINALIZE),
    "bn_normalize": ("raw T x, raw P ss, int64 channels, int64 hw, int32 relu, uint64 m_hw, "
                     "uint64 m_channels", "T y", BN_NORMALIZE),
    "bn_eval_coef": ("raw P rmean, raw P rvar, raw P weight, raw P bias, float64 eps, "
                     "int32 has_weight, int32 has_bias, int64 channels", "raw P ss, raw P invstd",
                     BN_EVAL_COEF),
    "bn_partial_grad": ("raw T g, raw T x, raw T y, raw P mean, int32 relu, " + BN_GEOMETRY,
                        "raw float64 acc", BN_PARTIAL_GRAD),
    "bn_finalize_grad": ("raw P invstd, raw P weight, int64 channels, int64 count, "
                         "int32 has_weight", "raw float64 acc, raw P coef, raw P gweight, "
                         "raw P gbias", BN_FINALIZE_GRAD),
    "bn_input_grad": ("raw T g, raw T x, raw T y, raw P mean, raw P coef, int64 channels, "
                      "int64 hw, int32 relu, uint64 m_hw, uint64 m_channels", "T gx",
                      BN_INPUT_GRAD),
    "unscale_grads": ("float64 inv_scale", "T grad, raw int32 found_inf", UNSCALE_GRADS),
    "lstm_step": ("raw T xw, raw T gh, raw T bias, raw T c_prev, int64 hidden",
                  "raw T acts, raw T c_out, raw T h_out", LSTM_STEP),
    "lstm_step_backward": ("raw T dh, raw T gc, raw T acts, raw T c_prev, raw T c_t, "
                           "int64 gwidth, int64 goff, int64 hidden", "raw T dc, raw T da",
                           LSTM_STEP_BACKWARD),
    "gru_step": ("raw T xw, raw T gh, raw T bias, raw T h_prev, int64 hidden",
                 "raw T acts, raw T hn, raw T h_out", GRU_STEP),
    "gru_step_backward": ("raw T dh, raw T acts, raw T hn, raw T h_prev, int64 hidden",
                          "raw T dxw, raw T dgh, raw T dh_carry", GRU_STEP_BACKWARD),
    "act_forward": ("raw T x, int32 op", "T y", ACT_FORWARD),
    "act_backward": ("raw T g, raw T x, int32 op", "T gx", ACT_BACKWARD),
}

_compiled = {}

# The kernels' index arithmetic (divisions and remainders by the geometry) runs in ``idx_t``:
# 32-bit unsigned where every array involved has fewer than 2^31 elements, which makes it several
# times cheaper than 64-bit (im2col was bound by its 64-bit divisions), 64-bit otherwise.
# A division n / d by a divisor known at launch is a multiply and a shift (Granlund and
# Montgomery): with l = ceil(log2 d) and m = ceil(2^(31+l) / d) < 2^32, n / d == (n * m) >> (31+l)
# for every 0 <= n < 2^31. The host packs m and the shift into one uint64 (``_magic``); wide
# kernels divide plainly.
# ``to_double`` reads any element type as a double: 16-bit types convert through float (their
# C++ classes convert to float; a direct cast to double can be ambiguous).
TO_DOUBLE = ("#ifdef __CUDACC__\n#define MINIDL_HD __device__\n#else\n#define MINIDL_HD\n#endif\n"
             "template <typename V> MINIDL_HD inline double to_double(V v) "
             "{ return (double)(float)v; }\n"
             "template <> MINIDL_HD inline double to_double<double>(double v) { return v; }\n")
PREAMBLE = {
    False: (TO_DOUBLE + "typedef unsigned int idx_t;\n"
            "#define DIVM(n, d, m) ((idx_t)(((unsigned long long)(n) * ((m) & 0xffffffffULL)) "
            ">> ((m) >> 32)))\n"),
    True: (TO_DOUBLE + "typedef unsigned long long idx_t;\n"
           "#define DIVM(n, d, m) ((idx_t)(n) / (idx_t)(d))\n"),
}


def _magic(d):
    """The packed multiply-and-shift constant that divides 31-bit numbers by ``d`` (see
    PREAMBLE)."""
    d = int(d)
    if d < 1:
        return 0  # never used: a zero-sized dim launches nothing
    shift = 31 + (d - 1).bit_length()
    m = -(-(1 << shift) // d)
    return m | (shift << 32)


def _wide(*arrays):
    return any(a is not None and a.size >= 2 ** 31 for a in arrays)


def parse_params(spec):
    """[(raw, type, name)] from CuPy's 'raw T img, int32 h' parameter syntax."""
    out = []
    for p in spec.split(","):
        words = p.split()
        out.append((words[0] == "raw", words[-2], words[-1]))
    return out


# C types of the scalar parameter types, and the NumPy types their values are passed as
C_SCALAR = {"int32": "int", "int64": "long long", "float64": "double",
            "uint64": "unsigned long long"}
_NP_SCALAR = {"int32": _np.int32, "int64": _np.int64, "float64": _np.float64,
              "uint64": _np.uint64}


def kernel_source(name, symbol, t_name="T", p_name="P", device=True):
    """Kernel ``name`` of SPECS as one C++ (``device=False``) or CUDA ``__global__`` function
    ``symbol`` that loops the body over the flat index i, as CuPy's ElementwiseKernel does:
    raw arrays are flat pointers, a non-raw array ``v`` is a reference to its element i, the
    element count comes last. ``T`` and ``P`` are typedefs to ``t_name`` and ``p_name``. The
    GPU launches it as a RawKernel (``_RawLaunch``); tests compile it on the host."""
    in_params, out_params, body = SPECS[name]
    args, refs = [], []
    c_of = dict(C_SCALAR, T=t_name, P=p_name)
    for is_out, params in enumerate((parse_params(in_params), parse_params(out_params))):
        for raw, typ, pname in params:
            ctype = c_of[typ]
            if raw:  # raw inputs are const, as in CuPy's ElementwiseKernel
                args.append(f"{'' if is_out else 'const '}{ctype}* {pname}")
            elif not is_out:  # a non-raw input is a scalar, a non-raw output an array
                args.append(f"{ctype} {pname}")
            else:
                args.append(f"{ctype}* out_{pname}")
                refs.append(f"{ctype}& {pname} = out_{pname}[i];")
    if device:
        head = f'extern "C" __global__ void {symbol}({", ".join(args)}, long long size)'
        loop = ("for (ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; i < size;"
                " i += (ptrdiff_t)blockDim.x * gridDim.x)")
    else:
        head = f'extern "C" void {symbol}({", ".join(args)}, long long size)'
        loop = "for (ptrdiff_t i = 0; i < size; ++i)"
    return (f"namespace k_{symbol} {{ typedef {t_name} T; typedef {p_name} P; }}\n{head} {{\n"
            f"  using namespace k_{symbol};\n  {loop} {{\n    {' '.join(refs)}\n"
            f"{body}\n  }}\n}}\n")


# Why a kernel runs as an ElementwiseKernel rather than a RawKernel: (name, wide, T, P) -> error
raw_errors = {}
_RAW_BLOCK = 128  # a multiple of 32: the batch-norm reductions shuffle within whole warps


def _c_type(dtype):
    """(C type name, declarations it needs) that CuPy uses for ``dtype`` in its own kernels."""
    from cupy._core import _scalar

    decls = set()
    try:
        name = _scalar.get_typename(dtype, decls)
    except TypeError:  # a CuPy whose get_typename takes the dtype alone
        return _scalar.get_typename(dtype), ""
    return name, _scalar.format_type_decls(decls) if decls else ""


def _raw_code(name, wide, t, p):
    """The CUDA source of kernel ``name`` for element type ``t`` and per-channel type ``p``."""
    t_name, t_pre = _c_type(t)
    p_name, p_pre = _c_type(p)
    symbol = f"minidl_raw_{name}{'_wide' if wide else ''}"
    return symbol, ("".join(dict.fromkeys((t_pre, p_pre))) + PREAMBLE[wide]
                    + kernel_source(name, symbol, t_name, p_name))


class _RawLaunch:
    """Kernel ``name`` called like its ElementwiseKernel (inputs then outputs, ``size=`` when
    every array is raw) but launched as a ``cupy.RawKernel`` over the same body: its launch
    skips the ElementwiseKernel's per-call type resolution, broadcasting and indexer set-up,
    which cost several times the launch itself, and a step runs hundreds of these kernels.
    Arrays must be C-contiguous (the wrappers make them so); non-raw arrays have ``size``
    elements. Where NVRTC cannot build the raw kernel for a dtype or CuPy refuses its launch
    (``raw_errors`` says why), or an argument does not fit, the ElementwiseKernel runs instead;
    ``MINIDL_CUDA_RAW_KERNELS=0`` makes every kernel run as an ElementwiseKernel."""

    enabled = os.environ.get("MINIDL_CUDA_RAW_KERNELS", "1") != "0"

    def __init__(self, name, wide):
        self.name, self.wide = name, wide
        in_params, out_params, _ = SPECS[name]
        ins, outs = parse_params(in_params), parse_params(out_params)
        self.params = ins + outs
        kinds = [typ for _, typ, _ in self.params]
        self.t_at = kinds.index("T") if "T" in kinds else None
        self.p_at = kinds.index("P") if "P" in kinds else None
        # non-raw inputs are scalars (passed as their declared C type), non-raw outputs arrays
        self.scalars = [(k, _NP_SCALAR[typ]) for k, (raw, typ, _) in enumerate(ins) if not raw]
        self.outputs = [len(ins) + k for k, (raw, _, _) in enumerate(outs) if not raw]
        self.built = {}  # (T dtype, P dtype) -> RawKernel, or None where it did not build
        self.elementwise = None

    def _fallback(self):
        if self.elementwise is None:
            import cupy

            in_params, out_params, body = SPECS[self.name]
            self.elementwise = cupy.ElementwiseKernel(
                in_params, out_params, body,
                f"minidl_{self.name}{'_wide' if self.wide else ''}", preamble=PREAMBLE[self.wide])
        return self.elementwise

    def _build(self, t, p):
        try:
            symbol, code = _raw_code(self.name, self.wide, t, p)
            # CuPy's own compiler entry: the headers and options of its ElementwiseKernels
            from cupy._core.core import compile_with_cache

            return compile_with_cache(code).get_function(symbol)
        except Exception as e:  # NVRTC, or a CuPy without these internals: run the fallback
            raw_errors[self.name, self.wide, str(t), str(p)] = f"{type(e).__name__}: {e}"
            return None

    def __call__(self, *args, size=None):
        t = args[self.t_at].dtype if self.t_at is not None else args[self.p_at].dtype
        p = args[self.p_at].dtype if self.p_at is not None else t
        kernel = self.built.get((t, p), False)
        if kernel is False:
            kernel = self.built[t, p] = self._build(t, p) if _RawLaunch.enabled else None
        n = size
        if kernel is not None:
            for k in self.outputs:
                out = args[k]
                if n is None:
                    n = out.size
                if out.size != n or not out.flags.c_contiguous:
                    kernel = None  # broadcasting or strided output: the ElementwiseKernel's job
                    break
        if kernel is None:
            return self._fallback()(*(a.reshape(-1) if raw and getattr(a, "ndim", 0) > 1 else a
                                      for (raw, _, _), a in zip(self.params, args)), size=size)
        if n:
            raw_args = list(args)
            for k, np_type in self.scalars:
                raw_args[k] = np_type(raw_args[k])
            raw_args.append(_np.int64(n))
            try:
                kernel((min(-(-n // _RAW_BLOCK), 1 << 20),), (_RAW_BLOCK,), tuple(raw_args))
            except Exception as e:  # a launch CuPy refuses: this kernel runs as CuPy's from now
                raw_errors[self.name, self.wide, str(t), str(p)] = f"launch: {type(e).__name__}: {e}"
                self.built[t, p] = None
                self(*args, size=size)


def _kernel(name, wide=False):
    """The launcher of kernel ``name`` (``_RawLaunch``), one per index width."""
    kernel = _compiled.get((name, wide))
    if kernel is None:
        kernel = _compiled[name, wide] = _RawLaunch(name, wide)
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
        _kernel("im2col", _wide(x, out))(_flat(cp, x), h, w, kh, kw, sh, sw, ph, pw, oh, ow, c,
                                         sn, sr, *map(_magic, (ow, oh, kw, kh, c)),
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
        _kernel("col2im", _wide(col, img))(_flat(cp, col), h, w, kh, kw, sh, sw, ph, pw, oh, ow,
                                           c, sn, sr, img)
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
        _kernel("max_pool2d_forward", _wide(x))(_flat(cp, x), float("-inf"), h, w, kh, kw, sh,
                                                sw, ph, pw, oh, ow, y, arg)
    return y, arg


def max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    cp = get_array_module(gy)
    n, c, h, w = x_shape
    oh, ow = gy.shape[2], gy.shape[3]
    gx = cp.empty((n, c, h, w), dtype=gy.dtype)
    if gx.size:
        _kernel("max_pool2d_backward", _wide(gx))(
            _flat(cp, gy), _flat(cp, arg.astype(cp.int32, copy=False)), h, w, kh, kw, sh, sw, ph,
            pw, oh, ow, gx)
    return gx


def cols_to_nchw(y2, bias, n, oh, ow):
    """GEMM output (Co, N*OH*OW) -> (N, Co, OH, OW), plus the bias per channel when given."""
    cp = get_array_module(y2)
    co, length = y2.shape[0], oh * ow
    y = cp.empty((n, co, oh, ow), dtype=y2.dtype)
    if y.size:
        b = _flat(cp, bias.astype(y2.dtype, copy=False)) if bias is not None else y2.reshape(-1)
        _kernel("cols_to_nchw", _wide(y))(_flat(cp, y2), b, int(bias is not None), co, length,
                                          n * length, _magic(length), _magic(co), y)
    return y


def nchw_to_cols(g, with_cols=True):
    """(N, C, H, W) -> ((C, N*H*W) columns, None): the bias gradient is left to the caller,
    who needs it only for layers with a bias (a separate reduction on the GPU)."""
    cp = get_array_module(g)
    n, c = g.shape[:2]
    length = g.size // (n * c) if n * c else 0
    if not with_cols:
        return None, None
    g2 = cp.empty((c, n * length), dtype=g.dtype)
    if g2.size:
        _kernel("nchw_to_cols", _wide(g2))(_flat(cp, g), c, n, length, _magic(length), _magic(n),
                                           g2)
    return g2, None


def add_relu(a, b):
    """relu(a + b) for two arrays of one shape, in one pass."""
    cp = get_array_module(a)
    y = cp.empty(a.shape, dtype=a.dtype)
    if y.size:
        _kernel("add_relu")(_flat(cp, a), _flat(cp, b.astype(a.dtype, copy=False)), y)
    return y


def relu_backward(g, y):
    cp = get_array_module(g)
    gx = cp.empty(g.shape, dtype=g.dtype)
    if gx.size:
        _kernel("relu_backward")(_flat(cp, g), _flat(cp, y), gx)
    return gx


_CAST_DTYPES = {"float32", "float16", "bfloat16"}


def astype(x, dtype):
    """``x.astype(dtype)`` (a new array) in one launch of minidl's own kernel for the casts
    between float32 and the 16-bit types that autocast makes around every matrix product:
    CuPy's ``astype`` costs several times the launch in host time."""
    cp = get_array_module(x)
    dtype = _np.dtype(dtype)
    if (x.dtype.name not in _CAST_DTYPES or dtype.name not in _CAST_DTYPES
            or not x.flags.c_contiguous):
        return x.astype(dtype)
    y = cp.empty(x.shape, dtype=dtype)
    if y.size:
        _kernel("cast")(x, y)
    return y


def _targets(cp, target):
    return _flat(cp, target.astype(cp.int64, copy=False))


def softmax_cross_entropy(logits, target):
    """(per-row losses, softmax probabilities) of logits (N, C) against class indices (N,)."""
    cp = get_array_module(logits)
    if logits.dtype.kind != "f":
        logits = logits.astype(cp.float64)
    n, classes = logits.shape
    losses = cp.empty(n, dtype=logits.dtype)
    prob = cp.empty((n, classes), dtype=logits.dtype)
    if n and classes:
        _kernel("softmax_xent")(_flat(cp, logits), _targets(cp, target), classes, losses,
                                prob.reshape(-1))
    return losses, prob


def softmax_cross_entropy_backward(prob, target, scale, divisor=1):
    """(softmax - one_hot(target)) * (scale / divisor), with scale one value or one per row. The
    divisor (N for a mean) is a host number, so the mean's gradient needs no extra launch."""
    cp = get_array_module(prob)
    scale = _flat(cp, cp.asarray(scale, dtype=prob.dtype))
    grad = cp.empty(prob.shape, dtype=prob.dtype)
    if grad.size:
        _kernel("softmax_xent_backward")(_flat(cp, prob), _targets(cp, target), scale,
                                         prob.shape[1], int(scale.size > 1), float(divisor), grad)
    return grad


def sgd_update(param, grad, state, lr, momentum, dampening, weight_decay, nesterov):
    """One torch.optim.SGD step for one C-contiguous parameter, in place, in one launch."""
    cp = get_array_module(param)
    g = _flat(cp, grad.astype(param.dtype, copy=False))
    if not momentum:
        _kernel("sgd")(g, float(lr), float(weight_decay), param)
        return
    buf = state.get("momentum_buffer")
    first = buf is None
    if first:
        buf = state["momentum_buffer"] = cp.empty_like(param)
    _kernel("sgd_momentum")(g, float(lr), float(momentum), float(dampening), float(weight_decay),
                            int(bool(nesterov)), int(first), param, buf)


def _address(a):
    return a.ctypes.data if isinstance(a, _np.ndarray) else a.data.ptr


def sgd_update_many(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov):
    """torch.optim.SGD's momentum step (after the first) for many parameters in one launch, in
    place. Returns False, having changed nothing, unless every parameter, gradient and buffer is
    C-contiguous, of one float32 or float64 dtype and one shape per parameter, on one device:
    then the caller steps them one by one."""
    if "sgd_momentum_many" in raw_errors:
        return False
    cp = get_array_module(params[0])
    dtype = params[0].dtype
    if dtype not in (_np.float32, _np.float64):
        return False
    device = getattr(params[0].data, "device_id", None)
    rows, end = [], 0
    for p, g, b in zip(params, grads, bufs):
        if (g.dtype != dtype or b.dtype != dtype or p.dtype != dtype or g.shape != p.shape
                or b.shape != p.shape or not (p.flags.c_contiguous and g.flags.c_contiguous
                                              and b.flags.c_contiguous)):
            return False
        if device is not None and not (p.data.device_id == g.data.device_id
                                       == b.data.device_id == device):
            return False
        end += p.size
        rows.append((_address(p), _address(g), _address(b), end))
    if end:
        # CuPy copies host arrays through pinned memory, asynchronously: no stall here
        table = cp.asarray(_np.array(rows, dtype=_np.int64))
        try:
            _kernel("sgd_momentum_many")(table, len(rows), float(lr), float(momentum),
                                         float(dampening), float(weight_decay),
                                         int(bool(nesterov)), params[0], size=end)
        except Exception as e:  # no kernel would take it (nothing ran): one by one from now on
            raw_errors["sgd_momentum_many"] = f"{type(e).__name__}: {e}"
            return False
    return True


def adam_update(param, grad, m, v, step_size, beta1, beta2, c2, eps, weight_decay):
    """One torch.optim.Adam step for one C-contiguous parameter and its moments m, v, in place,
    in one launch."""
    cp = get_array_module(param)
    g = _flat(cp, grad.astype(param.dtype, copy=False))
    _kernel("adam")(g, float(step_size), float(beta1), float(beta2), float(c2), float(eps),
                    float(weight_decay), param, m, v)


def _bn_split(channels, planes, hw):
    """(groups, lanes) of a batch-norm reduction: lanes a power of two from 32 to 256 that
    covers a plane in a few strides, then plane groups until about 2^18 threads in all (enough
    loads in flight for the memory bus), at most one group per plane."""
    lanes = 32
    while lanes < 256 and lanes * 8 <= hw:
        lanes *= 2
    groups = 1
    while groups * 2 <= planes and channels * groups * lanes * 2 <= (1 << 18):
        groups *= 2
    return groups, lanes


_bn_geometries = {}


def _bn_geometry(shape):
    """(n, c, hw, count, groups, lanes, wide, m_hw, m_c) of an activation shape, worked out once
    per shape: a training step asks for the same few shapes hundreds of times."""
    geom = _bn_geometries.get(shape)
    if geom is None:
        n, c = shape[:2]
        size = 1
        for d in shape:
            size *= d
        hw = size // (n * c) if n * c else 1
        groups, lanes = _bn_split(c, n, hw)
        geom = _bn_geometries[shape] = (n, c, hw, n * hw, groups, lanes, size >= 2 ** 31,
                                        _magic(hw), _magic(c))
    return geom


# Zeroed float64 buffers for the batch-norm reductions' atomic sums, one per (device, stream,
# size): the kernel that reads the sums sets them back to zero, so a reduction needs neither an
# allocation nor a memset launch. (An int64 one stands in for num_batches_tracked when there is
# none to count: the kernel leaves it alone.) Kernels on one stream run in order, so one buffer per stream
# is never read and written by two reductions at once.
_sum_buffers = {}


def _sum_buffer(cp, n, dtype=_np.float64):
    try:
        key = (cp.cuda.runtime.getDevice(), cp.cuda.get_current_stream().ptr, n, dtype)
    except AttributeError:  # the tests' numpy stand-in for CuPy: one device, one stream
        key = (0, 0, n, dtype)
    buf = _sum_buffers.get(key)
    if buf is None:
        buf = _sum_buffers[key] = cp.zeros(n, dtype=dtype)
    return key, buf


def _channel_array(cp, a, dtype):
    """A per-channel array (weight, bias, scale) as the contiguous ``dtype`` array the kernels
    read: as it is in the usual case (a float32 parameter)."""
    if a.dtype != dtype:
        a = a.astype(dtype)
    return cp.ascontiguousarray(a)


# Batch norm takes 16-bit activations as they are (mixed precision): the per-channel numbers
# (statistics, weight, bias, their gradients) are float32, the sums float64, and only the
# activations and their gradients are 16-bit, as in cuDNN's batch norm under torch.autocast.
batch_norm_16bit = True


# batch_norm_train adds 1 to a BatchNorm layer's num_batches_tracked in its per-channel kernel
batch_norm_counts_batches = True


def batch_norm_train(x, weight, bias, running_mean, running_var, momentum, eps, relu=False,
                     tracked=None):
    """Training-mode batch norm over every dim but 1: returns (y, batch mean, invstd) and updates
    the running statistics in place. Three launches: channel sums, per-channel finish,
    normalise (with the following ReLU fused in when ``relu``). y has x's dtype; mean and invstd
    are float32 for 16-bit x. ``tracked`` (an int64 array of one element, on the GPU) gets 1
    added in the per-channel kernel."""
    cp = get_array_module(x)
    x = cp.ascontiguousarray(x)
    n, c, hw, count, groups, lanes, wide, m_hw, m_c = _bn_geometry(x.shape)
    pdt = channel_dtype(x.dtype)
    stats = cp.empty((5, c), dtype=pdt)  # mean, variance, invstd, scale, shift
    # the running statistics are updated in the kernel when they are contiguous arrays of the
    # per-channel dtype (the usual case); otherwise afterwards, from the batch variance
    in_kernel = (running_mean is not None and running_var is not None
                 and running_mean.dtype == pdt and running_var.dtype == pdt
                 and running_mean.flags.c_contiguous and running_var.flags.c_contiguous)
    rm, rv = (running_mean, running_var) if in_kernel else (stats, stats)
    w = _channel_array(cp, weight, pdt) if weight is not None else stats
    b = _channel_array(cp, bias, pdt) if bias is not None else stats
    key, acc = _sum_buffer(cp, 2 * c)
    try:
        _kernel("bn_partial_stats", wide)(x, c, hw, count, groups, lanes, acc,
                                          size=c * groups * lanes)
        count_batch = tracked is not None
        if count_batch and (tracked.dtype != _np.int64 or tracked.size != 1
                            or not tracked.flags.c_contiguous):
            tracked += 1  # not a layer's own int64 counter: added here instead
            count_batch = False
        _kernel("bn_finalize")(x, w, b, c, hw, count, float(eps), float(momentum),
                               int(weight is not None), int(bias is not None), int(in_kernel),
                               int(count_batch), acc, stats, rm, rv,
                               tracked if count_batch else _sum_buffer(cp, 1, _np.int64)[1],
                               size=c)
    except BaseException:
        _sum_buffers.pop(key, None)  # its sums may not be back at zero
        raise
    if not in_kernel and running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += (momentum * stats[0]).astype(running_mean.dtype, copy=False)
        running_var *= 1 - momentum
        running_var += (momentum * stats[1] * (count / max(count - 1, 1))).astype(
            running_var.dtype, copy=False)
    y = cp.empty(x.shape, dtype=x.dtype)
    if y.size:
        _kernel("bn_normalize", wide)(x, stats[3:], c, hw, int(bool(relu)), m_hw, m_c, y)
    return y, stats[0], stats[2]


def batch_norm_backward(g, x, y, mean, invstd, weight, relu=False):
    """Gradients (x, weight, bias) of training-mode batch norm from the output gradient g, the
    input x and the saved batch mean and invstd (and the output y when a ReLU was fused in)."""
    cp = get_array_module(g)
    x = cp.ascontiguousarray(x)
    g = cp.ascontiguousarray(g.astype(x.dtype, copy=False))
    y = cp.ascontiguousarray(y) if relu else x
    n, c, hw, count, groups, lanes, wide, m_hw, m_c = _bn_geometry(x.shape)
    pdt = channel_dtype(x.dtype)
    coef = cp.empty((3, c), dtype=pdt)  # alpha, beta, gamma of dx = alpha g + beta (x - mean) + gamma
    gw = cp.empty(c, dtype=pdt)
    gb = cp.empty(c, dtype=pdt)
    w = _channel_array(cp, weight, pdt) if weight is not None else invstd
    key, acc = _sum_buffer(cp, 2 * c)
    try:
        _kernel("bn_partial_grad", wide)(g, x, y, mean, int(bool(relu)), c, hw, count, groups,
                                         lanes, acc, size=c * groups * lanes)
        _kernel("bn_finalize_grad")(invstd, w, c, count, int(weight is not None), acc, coef, gw,
                                    gb, size=c)
    except BaseException:
        _sum_buffers.pop(key, None)
        raise
    gx = cp.empty(x.shape, dtype=x.dtype)
    if gx.size:
        _kernel("bn_input_grad", wide)(g, x, y, mean, coef, c, hw, int(bool(relu)), m_hw, m_c,
                                       gx)
    return gx, gw, gb


def batch_norm_eval(x, running_mean, running_var, weight, bias, eps, relu=False):
    """Eval-mode batch norm (with the following ReLU when ``relu``) from the running
    statistics: (y, invstd), in two launches, one per channel and one over x."""
    cp = get_array_module(x)
    x = cp.ascontiguousarray(x)
    n, c, hw, _, _, _, wide, m_hw, m_c = _bn_geometry(x.shape)
    pdt = channel_dtype(x.dtype)
    rm, rv = _channel_array(cp, running_mean, pdt), _channel_array(cp, running_var, pdt)
    ss = cp.empty((2, c), dtype=pdt)
    invstd = cp.empty(c, dtype=pdt)
    w = _channel_array(cp, weight, pdt) if weight is not None else rm
    b = _channel_array(cp, bias, pdt) if bias is not None else rm
    _kernel("bn_eval_coef")(rm, rv, w, b, float(eps), int(weight is not None),
                            int(bias is not None), c, ss, invstd, size=c)
    y = cp.empty(x.shape, dtype=x.dtype)
    if y.size:
        _kernel("bn_normalize", wide)(x, ss, c, hw, int(bool(relu)), m_hw, m_c, y)
    return y, invstd


def channel_affine(x, scale, shift, relu=False):
    """y = x * scale[c] + shift[c] per channel (dim 1), then max(y, 0) when ``relu``: eval-mode
    batch norm (with the following ReLU) in one pass."""
    cp = get_array_module(x)
    x = cp.ascontiguousarray(x)
    n, c, hw, _, _, _, wide, m_hw, m_c = _bn_geometry(x.shape)
    y = cp.empty(x.shape, dtype=x.dtype)
    if y.size:
        pdt = channel_dtype(x.dtype)
        ss = cp.concatenate((scale.reshape(-1), shift.reshape(-1))).astype(pdt, copy=False)
        _kernel("bn_normalize", wide)(x, ss, c, hw, int(bool(relu)), m_hw, m_c, y)
    return y


def unscale_grads(grads, inv_scale, found_inf):
    """GradScaler.unscale_ on the GPU: each gradient times inv_scale in place, one launch each,
    and found_inf (int32, one element, on the GPU) set to 1 if any value was inf or NaN. The
    flag stays on the GPU: the step reads it back once, after all gradients are done."""
    for g in grads:
        if g.size:
            _kernel("unscale_grads")(float(inv_scale), g, found_inf)


# ---- pointwise activations --------------------------------------------------------------------
def activation_forward(x, op):
    """The sigmoid (op 0), SiLU (1), GELU (2) or GELU's tanh form (3) of a float32/float64 x."""
    cp = get_array_module(x)
    y = cp.empty(x.shape, dtype=x.dtype)
    if y.size:
        _kernel("act_forward", _wide(x))(_flat(cp, x), int(op), y)
    return y


def activation_backward(g, x, op):
    """g times the derivative at x (at the sigmoid's output y for op 0)."""
    cp = get_array_module(x)
    gx = cp.empty(x.shape, dtype=x.dtype)
    if gx.size:
        _kernel("act_backward", _wide(x))(_flat(cp, g.astype(x.dtype, copy=False)),
                                          _flat(cp, x), int(op), gx)
    return gx


# ---- recurrent steps ------------------------------------------------------------------------
# The same functions as the CPU kernel set's (cpu/rnn.py): nn/rnn.py calls them once per time
# step with (N, G*H) and (N, H) arrays; the outputs are C-contiguous step slices written in place.
def rnn_step_fits(*arrays):
    """Whether the step kernels take these arrays: one dtype, float32 or float64."""
    dtype = arrays[0].dtype
    return dtype in (_np.float32, _np.float64) and all(a.dtype == dtype for a in arrays)


def _rnn_launch(name, inputs, scalars, outputs):
    """Kernel ``name`` over one thread per (sample, unit): inputs, then the scalars (the last
    one the hidden size), then the outputs, all arrays flattened (outputs written in place)."""
    cp = get_array_module(*outputs)
    size = inputs[0].shape[0] * scalars[-1]
    if size:
        _kernel(name, _wide(*inputs, *outputs))(*(_flat(cp, a) for a in inputs), *scalars,
                                                *(_flat(cp, a) for a in outputs), size=size)


def lstm_step_forward(xw, gh, bias, c_prev, acts, c_out, h_out):
    _rnn_launch("lstm_step", (xw, gh, bias, c_prev), (c_prev.shape[1],), (acts, c_out, h_out))


def lstm_step_backward(dh, dc, gc, off, acts, c_prev, c_t, da):
    # c_t's gradient is gc[:, off:off + H], read in place from the step's (N, W) row
    _rnn_launch("lstm_step_backward", (dh, gc, acts, c_prev, c_t),
                (gc.shape[1], int(off), dc.shape[1]), (dc, da))


def gru_step_forward(xw, gh, bias, h_prev, acts, hn, h_out):
    _rnn_launch("gru_step", (xw, gh, bias, h_prev), (h_prev.shape[1],), (acts, hn, h_out))


def gru_step_backward(dh, acts, hn, h_prev, dxw, dgh, dh_carry):
    _rnn_launch("gru_step_backward", (dh, acts, hn, h_prev), (dh.shape[1],), (dxw, dgh, dh_carry))


# ---- convolution algorithm ------------------------------------------------------------------
def conv2d_algorithm(x_shape, w_shape, stride, padding, needs_grad, dtype=None):
    """cuDNN where its library loads and has an algorithm for the shape (backend/cudnn.py);
    otherwise one GEMM per sample for 1x1 stride-1 layers and im2col + GEMM for the rest."""
    if dtype is not None and cudnn.usable(dtype):
        if cudnn.supports_forward(cupy_module(), x_shape, w_shape, stride, padding, dtype,
                                  allow_tf32()):
            return "cudnn"
    algorithm = generic.conv2d_algorithm(x_shape, w_shape, stride, padding, needs_grad)
    if algorithm == "pointwise" and dtype is not None and str(dtype) == "bfloat16":
        return "im2col"  # CuPy has no batched (3-D) bfloat16 matmul; 2-D GEMMs only
    return algorithm


def conv2d_cudnn(x, w, bias, stride, padding):
    cp = get_array_module(x)
    y = cudnn.conv2d_forward(cp, x, w, stride, padding, allow_tf32())
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y


def conv2d_cudnn_backward_data(g, w, x_shape, stride, padding):
    return cudnn.conv2d_backward_data(get_array_module(g), g, w, x_shape, stride, padding,
                                      allow_tf32())


def conv2d_cudnn_backward_filter(x, g, w_shape, stride, padding):
    return cudnn.conv2d_backward_filter(get_array_module(g), x, g, w_shape, stride, padding,
                                        allow_tf32())
