"""Activations and losses: ReLU and leaky ReLU forward and backward, the float32 sigmoid, SiLU
and GELU, and softmax cross-entropy."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..generic import ACT_GELU, ACT_GELU_TANH, ACT_SIGMOID, ACT_SILU
from .bits import pow2_f32
from .launch import FLOATS, Drivers, contiguous, launch, parallel

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
        if yf[k] <= 0:  # a NaN output passes the gradient on, as torch's threshold_backward
            gxf[k] = 0
        else:
            gxf[k] = gf[k]


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


# ---- relu(a + b): ResNet's residual add and the ReLU after it, in one pass ------------------
@njit(cache=True)
def _add_relu_range(af, bf, yf, lo, hi):
    for i in range(lo, hi):
        k = np.uintp(i)
        v = af[k] + bf[k]
        if v > 0 or v != v:  # NaN passes through, as in relu_forward
            yf[k] = v
        else:
            yf[k] = 0


@njit(parallel=True, cache=True)
def _add_relu_par(af, bf, yf):
    nt = 64
    for t in prange(nt):
        _add_relu_range(af, bf, yf, t * af.size // nt, (t + 1) * af.size // nt)


@njit(cache=True)
def _add_relu_ser(af, bf, yf):
    _add_relu_range(af, bf, yf, 0, af.size)


_ADD_RELU = Drivers(_add_relu_par, _add_relu_ser)


def add_relu(a, b):
    """relu(a + b) for two arrays of one shape and dtype, in one pass over both (NumPy's
    ``a + b`` then ``maximum`` reads and writes the sum twice, on one core)."""
    if a.dtype not in FLOATS or a.dtype != b.dtype or a.shape != b.shape:
        y = a + b
        np.maximum(y, 0, out=y)
        return y
    a, b = contiguous(a), contiguous(b)
    y = np.empty_like(a)
    launch(_ADD_RELU, parallel(a.size, "relu"), a.reshape(-1), b.reshape(-1), y.reshape(-1))
    return y


# ---- leaky ReLU: x where x > 0, slope * x elsewhere (one pass each way, no temporaries) ------
@njit(cache=True)
def _leaky_fwd_range(xf, yf, slope, lo, hi):
    for i in range(lo, hi):
        k = np.uintp(i)
        v = xf[k]
        yf[k] = v if v > 0 else v * slope  # NaN * slope is NaN, as numpy's where gives


@njit(cache=True)
def _leaky_bwd_range(gf, xf, gxf, slope, lo, hi):
    for i in range(lo, hi):
        k = np.uintp(i)
        gxf[k] = gf[k] if xf[k] > 0 else gf[k] * slope


@njit(parallel=True, cache=True)
def _leaky_fwd_par(xf, yf, slope):
    nt = 64
    for t in prange(nt):
        _leaky_fwd_range(xf, yf, slope, t * xf.size // nt, (t + 1) * xf.size // nt)


@njit(cache=True)
def _leaky_fwd_ser(xf, yf, slope):
    _leaky_fwd_range(xf, yf, slope, 0, xf.size)


@njit(parallel=True, cache=True)
def _leaky_bwd_par(gf, xf, gxf, slope):
    nt = 64
    for t in prange(nt):
        _leaky_bwd_range(gf, xf, gxf, slope, t * gf.size // nt, (t + 1) * gf.size // nt)


@njit(cache=True)
def _leaky_bwd_ser(gf, xf, gxf, slope):
    _leaky_bwd_range(gf, xf, gxf, slope, 0, gf.size)


_LEAKY_FWD = Drivers(_leaky_fwd_par, _leaky_fwd_ser)
_LEAKY_BWD = Drivers(_leaky_bwd_par, _leaky_bwd_ser)


# ---- hardtanh (ReLU6): x clipped to [lo, hi]; the gradient passes strictly inside ----------
@njit(cache=True)
def _clip_fwd_range(xf, yf, lo, hi, a, b):
    for i in range(a, b):
        k = np.uintp(i)
        v = xf[k]
        yf[k] = lo if v < lo else (hi if v > hi else v)  # NaN compares false: stays NaN


@njit(cache=True)
def _clip_bwd_range(gf, xf, gxf, lo, hi, a, b):
    zero = np.zeros(1, dtype=gf.dtype)[0]
    for i in range(a, b):
        k = np.uintp(i)
        v = xf[k]
        # 0 outside (a NaN x too), not g * 0: an inf or NaN g stops there, as torch's select
        gxf[k] = gf[k] if (v > lo and v < hi) else zero


@njit(parallel=True, cache=True)
def _clip_fwd_par(xf, yf, lo, hi):
    nt = 64
    for t in prange(nt):
        _clip_fwd_range(xf, yf, lo, hi, t * xf.size // nt, (t + 1) * xf.size // nt)


@njit(cache=True)
def _clip_fwd_ser(xf, yf, lo, hi):
    _clip_fwd_range(xf, yf, lo, hi, 0, xf.size)


@njit(parallel=True, cache=True)
def _clip_bwd_par(gf, xf, gxf, lo, hi):
    nt = 64
    for t in prange(nt):
        _clip_bwd_range(gf, xf, gxf, lo, hi, t * gf.size // nt, (t + 1) * gf.size // nt)


@njit(cache=True)
def _clip_bwd_ser(gf, xf, gxf, lo, hi):
    _clip_bwd_range(gf, xf, gxf, lo, hi, 0, gf.size)


_CLIP_FWD = Drivers(_clip_fwd_par, _clip_fwd_ser)
_CLIP_BWD = Drivers(_clip_bwd_par, _clip_bwd_ser)


def hardtanh_forward(x, lo, hi):
    x = contiguous(x)
    y = np.empty_like(x)
    t = x.dtype.type
    launch(_CLIP_FWD, parallel(x.size, "relu"), x.reshape(-1), y.reshape(-1), t(lo), t(hi))
    return y


def hardtanh_backward(g, x, lo, hi):
    """g where lo < x < hi, 0 elsewhere, at NaN too (PyTorch's hardtanh gradient)."""
    g, x = contiguous(g), contiguous(x)
    gx = np.empty_like(g)
    t = g.dtype.type
    launch(_CLIP_BWD, parallel(g.size, "relu"), g.reshape(-1), x.reshape(-1), gx.reshape(-1),
           t(lo), t(hi))
    return gx


def leaky_relu_fits(*arrays):
    """Whether the leaky-ReLU (and hardtanh) kernels take these arrays: float32 or float64
    numpy arrays of one dtype and shape."""
    first = arrays[0]
    return all(type(a) is np.ndarray and a.dtype in FLOATS and a.dtype == first.dtype
               and a.shape == first.shape for a in arrays)


def leaky_relu_forward(x, slope):
    x = contiguous(x)
    y = np.empty_like(x)
    launch(_LEAKY_FWD, parallel(x.size, "relu"), x.reshape(-1), y.reshape(-1),
           x.dtype.type(slope))
    return y


def leaky_relu_backward(g, x, slope):
    """g where x > 0, slope * g elsewhere."""
    g, x = contiguous(g), contiguous(x)
    gx = np.empty_like(g)
    launch(_LEAKY_BWD, parallel(g.size, "relu"), g.reshape(-1), x.reshape(-1), gx.reshape(-1),
           g.dtype.type(slope))
    return gx


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


# numba's np.exp is a scalar call per element (no vector math library), so past a few thousand
# elements numpy's vectorised exp beat the fused loop above (1000 classes x 256: 0.3 ms against
# 1.1 ms). exp_f32 below is float32 exp in plain arithmetic that LLVM vectorises: x = n*ln2 + r
# with |r| <= ln2/2 (ln2 split in two parts so n*ln2 is exact to float32), exp(r) by its Taylor
# series to r**7 (truncation error < 1e-8 relative), and 2**n built from exponent bits
# (bits.pow2_f32). Measured against float64 exp over [-87, 0]: at most 1.7 ulp. Below -87
# (where 2**n would leave the normal range) it returns 0: the largest value dropped is 1.7e-38,
# nothing next to a softmax's largest term, which is 1. NaN stays NaN.
_F = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _F(1.4426950408889634), _F(0.693359375), _F(-2.12194440e-4)
_EXP_LOW = _F(-87.0)
_T2, _T3, _T4, _T5, _T6, _T7 = (_F(1 / f) for f in (2, 6, 24, 120, 720, 5040))


@njit(cache=True, inline="always")
def exp_f32(x):
    """exp(x) of a float32 x <= 88 (the softmax's x - max is <= 0), vectorisable."""
    xc = _EXP_LOW if x < _EXP_LOW else x
    nf = np.floor(xc * _LOG2E + _F(0.5))
    r = xc - nf * _LN2_HI - nf * _LN2_LO
    p = ((((((_T7 * r + _T6) * r + _T5) * r + _T4) * r + _T3) * r + _T2) * r + _F(1)) * r + _F(1)
    e = p * pow2_f32(nf)
    return _F(0) if x < _EXP_LOW else e


@njit(cache=True, inline="always", error_model="numpy")
def expm1_f32(x):
    """exp(x) - 1 of a float32 x <= 0, vectorisable, accurate near 0 (no 1 - 1 cancellation):
    with x = n*ln2 + r, exp(x) - 1 = q * 2**n + (2**n - 1) where q = exp(r) - 1 by its series."""
    xc = _EXP_LOW if x < _EXP_LOW else x
    nf = np.floor(xc * _LOG2E + _F(0.5))
    r = xc - nf * _LN2_HI - nf * _LN2_LO
    q = ((((((_T7 * r + _T6) * r + _T5) * r + _T4) * r + _T3) * r + _T2) * r + _F(1)) * r
    two = pow2_f32(nf)
    e = q * two + (two - _F(1))
    return _F(-1) if x < _EXP_LOW else e


@njit(cache=True, error_model="numpy")
def sigmoid_f32(v):
    """1 / (1 + exp(-v)) of a float32, exp taken of -|v| only (no overflow); NaN stays NaN."""
    e = exp_f32(-abs(v))
    s = _F(1) / (_F(1) + e)
    return s if v >= _F(0) else e * s


@njit(cache=True, error_model="numpy")
def tanh_f32(v):
    """tanh of a float32 as -expm1(-2|v|) / (2 + expm1(-2|v|)), with v's sign."""
    u = expm1_f32(_F(-2) * abs(v))  # in [-1, 0]
    return np.copysign(-u / (_F(2) + u), v)


@njit(cache=True, fastmath={"reassoc"})
def _sum_f32(v):
    """Sum of a row in vector lanes (reassociated: its order differs from a left-to-right sum
    by float32 rounding only)."""
    s = _F(0)
    for k in range(v.size):
        s += v[k]
    return s


@njit(cache=True)
def _softmax_xent_f32_rows(logits, target, m, prob, losses, lo, hi):
    c = logits.shape[1]
    for r in range(lo, hi):
        row, out, mr = logits[r], prob[r], m[r]
        for k in range(c):
            out[k] = exp_f32(row[k] - mr)
        s = _sum_f32(out)
        inv = _F(1) / s
        for k in range(c):
            out[k] *= inv
        losses[r] = np.log(s) - (row[target[r]] - mr)


@njit(parallel=True, cache=True)
def _softmax_xent_f32_par(logits, target, m, prob, losses):
    n = logits.shape[0]
    nt = min(n, 64)
    for t in prange(nt):
        _softmax_xent_f32_rows(logits, target, m, prob, losses, t * n // nt, (t + 1) * n // nt)


@njit(cache=True)
def _softmax_xent_f32_ser(logits, target, m, prob, losses):
    _softmax_xent_f32_rows(logits, target, m, prob, losses, 0, logits.shape[0])


_XENT_F32 = Drivers(_softmax_xent_f32_par, _softmax_xent_f32_ser)


@njit(cache=True)
def _softmax_xent_bwd(prob, target, scale, grad):
    n, c = prob.shape
    for r in range(n):
        sr = scale[r] if scale.size > 1 else scale[0]
        for k in range(c):
            grad[r, k] = prob[r, k] * sr
        grad[r, target[r]] -= sr


_RELU_FWD = Drivers(_relu_fwd_par, _relu_fwd_ser)
_RELU_BWD = Drivers(_relu_bwd_par, _relu_bwd_ser)


def relu_forward(x):
    if x.dtype not in FLOATS:
        return np.maximum(x, 0)
    x = contiguous(x)
    y = np.empty_like(x)
    launch(_RELU_FWD, parallel(x.size, "relu"), x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(g, y):
    """Gradient of ReLU from its output: y > 0 exactly where the input was > 0; a NaN passes
    the gradient on (torch's threshold_backward zeroes only where y <= 0)."""
    if g.dtype not in FLOATS or g.dtype != y.dtype or g.shape != y.shape:
        # a select, not a product: +0 where y <= 0 even for an inf or negative g (as torch's),
        # and no float16 arithmetic, which NumPy emulates
        return np.where(y <= 0, np.zeros((), g.dtype), g)
    g, y = contiguous(g), contiguous(y)
    gx = np.empty_like(g)
    launch(_RELU_BWD, parallel(g.size, "relu"), g.reshape(-1), y.reshape(-1), gx.reshape(-1))
    return gx


def softmax_cross_entropy(logits, target):
    """(per-row losses, softmax probabilities) of logits (N, C) against class indices (N,)."""
    if logits.dtype not in FLOATS:
        logits = logits.astype(np.float64)
    logits = contiguous(logits)
    if logits.dtype == np.float32 and logits.shape[1] >= 32:
        # The row maxima by numpy (vectorised; a NaN in a row makes its maximum NaN, and with it
        # the row's loss and softmax, as in PyTorch), then one vectorised pass per row: 1000
        # classes x 256 in 0.12 ms, against 0.30 ms by numpy and 1.2 ms by the scalar loop.
        # With fewer classes the scalar loop below wins (10 classes x 4096: 0.24 ms against
        # 0.42 ms here and by numpy; 32 classes break even).
        m = logits.max(axis=1)
        prob = np.empty_like(logits)
        losses = np.empty(logits.shape[0], dtype=logits.dtype)
        launch(_XENT_F32, parallel(logits.size, "xent"), logits, contiguous(target), m, prob,
               losses)
        return losses, prob
    if logits.dtype == np.float64 and logits.size > 8192:
        # float64: numpy's vectorised exp wins over the fused loop's scalar one
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
    _softmax_xent(logits, contiguous(target), prob, losses)
    return losses, prob


def softmax_cross_entropy_backward(prob, target, scale, divisor=1):
    """(softmax - one_hot(target)) * (scale / divisor), with scale a scalar or one per row."""
    scale = np.asarray(scale, dtype=prob.dtype)
    if divisor != 1:
        scale = scale / divisor
    scale = np.ascontiguousarray(scale.reshape(-1))
    grad = np.empty_like(prob)
    _softmax_xent_bwd(prob, contiguous(target), scale, grad)
    return grad


# ---- float32 sigmoid, SiLU, GELU ------------------------------------------------------------
# One vectorised pass each way (NumPy's versions: sigmoid about 6 passes, GELU's erfc fit about
# 25). The error model is NumPy's, so the divisions have no branch to ZeroDivisionError and the
# loops vectorise. GELU uses special.py's erfc fit (the numpy path's), so both agree to float32
# rounding.
_ERFC_FIT = tuple(_F(c) for c in (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                                  0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277))
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9 = _ERFC_FIT
_SQRT_HALF, _INV_SQRT_2PI = _F(0.7071067811865476), _F(0.3989422804014327)
_SQRT_2_OVER_PI, _GELU_K = _F(0.7978845608028654), _F(0.044715)
# the ``op`` codes of the kernels below, the kernel sets' shared ones (generic.py)
SIGMOID, SILU, GELU, GELU_TANH = ACT_SIGMOID, ACT_SILU, ACT_GELU, ACT_GELU_TANH


@njit(cache=True, error_model="numpy")
def _phi_f32(x):
    """The standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2 by the erfc fit."""
    u = -x * _SQRT_HALF
    z = abs(u)
    t = _F(1) / (_F(1) + _F(0.5) * z)
    p = _C9
    p = p * t + _C8
    p = p * t + _C7
    p = p * t + _C6
    p = p * t + _C5
    p = p * t + _C4
    p = p * t + _C3
    p = p * t + _C2
    p = p * t + _C1
    p = p * t + _C0
    tail = t * exp_f32(p - z * z)
    return _F(0.5) * (tail if u >= _F(0) else _F(2) - tail)


@njit(cache=True, error_model="numpy")
def _act_fwd_range(x, y, op, lo, hi):
    if op == SIGMOID:
        for i in range(lo, hi):
            k = np.uintp(i)
            y[k] = sigmoid_f32(x[k])
    elif op == SILU:
        for i in range(lo, hi):
            k = np.uintp(i)
            y[k] = x[k] * sigmoid_f32(x[k])
    elif op == GELU:
        for i in range(lo, hi):
            k = np.uintp(i)
            y[k] = x[k] * _phi_f32(x[k])
    else:  # 0.5 x (1 + tanh(z)) = x sigmoid(2z): no 1 + tanh cancelling in the negative tail
        for i in range(lo, hi):
            k = np.uintp(i)
            v = x[k]
            y[k] = v * sigmoid_f32(_F(2) * _SQRT_2_OVER_PI * (v + _GELU_K * v * v * v))


@njit(cache=True, error_model="numpy")
def _act_bwd_range(g, x, gx, op, lo, hi):
    """gx = g * f'(x); for the sigmoid ``x`` is its output y (f' = y (1 - y))."""
    if op == SIGMOID:
        for i in range(lo, hi):
            k = np.uintp(i)
            y = x[k]
            gx[k] = g[k] * y * (_F(1) - y)
    elif op == SILU:
        for i in range(lo, hi):
            k = np.uintp(i)
            v = x[k]
            s = sigmoid_f32(v)
            gx[k] = g[k] * (s * (_F(1) + v * (_F(1) - s)))
    elif op == GELU:
        for i in range(lo, hi):
            k = np.uintp(i)
            v = x[k]
            gx[k] = g[k] * (_phi_f32(v) + v * (_INV_SQRT_2PI * exp_f32(_F(-0.5) * v * v)))
    else:  # with s = sigmoid(2z): s + 2 x s (1 - s) z', 1 - s taken as sigmoid(-2z)
        for i in range(lo, hi):
            k = np.uintp(i)
            v = x[k]
            z2 = _F(2) * _SQRT_2_OVER_PI * (v + _GELU_K * v * v * v)
            s, sn = sigmoid_f32(z2), sigmoid_f32(-z2)
            dz = _SQRT_2_OVER_PI * (_F(1) + _F(3) * _GELU_K * v * v)
            gx[k] = g[k] * (s + _F(2) * v * s * sn * dz)


@njit(parallel=True, cache=True)
def _act_fwd_par(x, y, op):
    nt = 64
    for t in prange(nt):
        _act_fwd_range(x, y, op, t * x.size // nt, (t + 1) * x.size // nt)


@njit(cache=True)
def _act_fwd_ser(x, y, op):
    _act_fwd_range(x, y, op, 0, x.size)


@njit(parallel=True, cache=True)
def _act_bwd_par(g, x, gx, op):
    nt = 64
    for t in prange(nt):
        _act_bwd_range(g, x, gx, op, t * x.size // nt, (t + 1) * x.size // nt)


@njit(cache=True)
def _act_bwd_ser(g, x, gx, op):
    _act_bwd_range(g, x, gx, op, 0, x.size)


_ACT_FWD = Drivers(_act_fwd_par, _act_fwd_ser)
_ACT_BWD = Drivers(_act_bwd_par, _act_bwd_ser)


def activation_forward(x, op):
    """f(x) for a float32 array x, f one of SIGMOID, SILU, GELU, GELU_TANH."""
    x = contiguous(x)
    y = np.empty_like(x)
    launch(_ACT_FWD, parallel(x.size, "act"), x.reshape(-1), y.reshape(-1), op)
    return y


def activation_backward(g, x, op):
    """g * f'(x) for float32 arrays of one shape (for SIGMOID, x is the output y)."""
    g, x = contiguous(g), contiguous(x)
    gx = np.empty_like(x)
    launch(_ACT_BWD, parallel(x.size, "act"), g.reshape(-1), x.reshape(-1), gx.reshape(-1), op)
    return gx
