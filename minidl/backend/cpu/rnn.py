"""The gate arithmetic of one LSTM or GRU time step, fused into one pass forward and one backward.

A recurrent layer's step is a matmul (h @ W_hh.T, BLAS) and then elementwise work on (N, 4H)
gates: three sigmoids, two tanh, the cell update. As NumPy expressions that is about twenty
passes over small arrays per step, each with its own temporary; here it is one loop per row,
with the gates of a unit side by side (column j of each of the four gate blocks), which LLVM
vectorises. Two things make that happen: exp in plain arithmetic (``activations.exp_f32``, and
its method extended to expm1 so tanh keeps its relative accuracy near 0), and NumPy's error
model, under which a division by zero gives inf instead of raising, so the loops have no branch
to a ZeroDivisionError (with the Python one they ran 15x slower). The kernels are float32 only.

The NumPy code in ``nn/rnn.py`` stays the reference: it runs for float64 (the gradient checks),
other dtypes, on CUDA and for packed sequences (whose per-step masks it applies), and the
kernels are tested against it.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activations import sigmoid_f32, tanh_f32
from .launch import Drivers, contiguous, launch, parallel

_F = np.float32


# ---- LSTM ---------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _lstm_fwd_rows(xw, gh, bias, c_prev, acts, c_out, h_out, lo, hi):
    """Rows lo..hi of one step: gates = xw + gh + bias (i, f, g, o blocks of H), then the
    activations into ``acts``, c = f*c_prev + i*g into c_out and h = o*tanh(c) into h_out.
    Each loop stores to one array (a row is in L1 for all of them), so LLVM vectorises it with
    few runtime aliasing checks."""
    hid = c_prev.shape[1]
    for n in range(lo, hi):
        x, g, a = xw[n], gh[n], acts[n]
        for j in range(2 * hid):  # i, f
            k = np.uintp(j)
            a[k] = sigmoid_f32(x[k] + g[k] + bias[k])
        for j in range(2 * hid, 3 * hid):  # g
            k = np.uintp(j)
            a[k] = tanh_f32(x[k] + g[k] + bias[k])
        for j in range(3 * hid, 4 * hid):  # o
            k = np.uintp(j)
            a[k] = sigmoid_f32(x[k] + g[k] + bias[k])
        ai, af, ag, ao = a[:hid], a[hid:2 * hid], a[2 * hid:3 * hid], a[3 * hid:]
        cp, co, ho = c_prev[n], c_out[n], h_out[n]
        for j in range(hid):
            k = np.uintp(j)
            co[k] = af[k] * cp[k] + ai[k] * ag[k]
        for j in range(hid):
            k = np.uintp(j)
            ho[k] = ao[k] * tanh_f32(co[k])


@njit(parallel=True, cache=True, error_model="numpy")
def _lstm_fwd_par(xw, gh, bias, c_prev, acts, c_out, h_out):
    n = xw.shape[0]
    nt = min(n, 64)
    for t in prange(nt):
        _lstm_fwd_rows(xw, gh, bias, c_prev, acts, c_out, h_out, t * n // nt, (t + 1) * n // nt)


@njit(cache=True, error_model="numpy")
def _lstm_fwd_ser(xw, gh, bias, c_prev, acts, c_out, h_out):
    _lstm_fwd_rows(xw, gh, bias, c_prev, acts, c_out, h_out, 0, xw.shape[0])


@njit(cache=True, error_model="numpy")
def _lstm_bwd_rows(dh, dc, gc, off, acts, c_prev, c_t, da, lo, hi):
    """Rows lo..hi of one step backward: dc (the cell gradient carried from step t+1) gains
    gc[:, off:off + H] (the output's gradient of c_t) and dh's share through h = o*tanh(c); ``da`` gets the
    gradient of the four pre-activations, and dc becomes the gradient of c_prev. One store per
    loop, as in the forward kernel (da's o block holds tanh(c_t) until its own loop)."""
    hid = c_t.shape[1]
    one = _F(1)
    for n in range(lo, hi):
        h, cr, a, cp, ct, d = dh[n], dc[n], acts[n], c_prev[n], c_t[n], da[n]
        g = gc[n][off:off + hid]
        ai, af, ag, ao = a[:hid], a[hid:2 * hid], a[2 * hid:3 * hid], a[3 * hid:]
        di, df, dg, do = d[:hid], d[hid:2 * hid], d[2 * hid:3 * hid], d[3 * hid:]
        for j in range(hid):
            k = np.uintp(j)
            do[k] = tanh_f32(ct[k])
        for j in range(hid):
            k = np.uintp(j)
            cr[k] = cr[k] + g[k] + h[k] * ao[k] * (one - do[k] * do[k])
        for j in range(hid):
            k = np.uintp(j)
            do[k] = h[k] * do[k] * ao[k] * (one - ao[k])
        for j in range(hid):
            k = np.uintp(j)
            di[k] = cr[k] * ag[k] * ai[k] * (one - ai[k])
        for j in range(hid):
            k = np.uintp(j)
            df[k] = cr[k] * cp[k] * af[k] * (one - af[k])
        for j in range(hid):
            k = np.uintp(j)
            dg[k] = cr[k] * ai[k] * (one - ag[k] * ag[k])
        for j in range(hid):
            k = np.uintp(j)
            cr[k] = cr[k] * af[k]


@njit(parallel=True, cache=True, error_model="numpy")
def _lstm_bwd_par(dh, dc, gc, off, acts, c_prev, c_t, da):
    n = dh.shape[0]
    nt = min(n, 64)
    for t in prange(nt):
        _lstm_bwd_rows(dh, dc, gc, off, acts, c_prev, c_t, da, t * n // nt, (t + 1) * n // nt)


@njit(cache=True, error_model="numpy")
def _lstm_bwd_ser(dh, dc, gc, off, acts, c_prev, c_t, da):
    _lstm_bwd_rows(dh, dc, gc, off, acts, c_prev, c_t, da, 0, dh.shape[0])


# ---- GRU ----------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _gru_fwd_rows(xw, gh, bias, h_prev, acts, hn, h_out, lo, hi):
    """Rows lo..hi of one GRU step (r, z, n blocks): r, z = sigmoid(xw + gh + b_hh),
    n = tanh(xw_n + r * (gh_n + b_hh_n)), h = n + z * (h_prev - n). ``hn`` keeps
    gh_n + b_hh_n for backward. One store per loop, as in the LSTM kernels."""
    hid = h_prev.shape[1]
    for n in range(lo, hi):
        x, g, a, hnr, hp, ho = xw[n], gh[n], acts[n], hn[n], h_prev[n], h_out[n]
        for j in range(2 * hid):  # r, z
            k = np.uintp(j)
            a[k] = sigmoid_f32(x[k] + g[k] + bias[k])
        gn, bn, xn = g[2 * hid:], bias[2 * hid:], x[2 * hid:]
        ar, az, an = a[:hid], a[hid:2 * hid], a[2 * hid:]
        for j in range(hid):
            k = np.uintp(j)
            hnr[k] = gn[k] + bn[k]
        for j in range(hid):
            k = np.uintp(j)
            an[k] = tanh_f32(xn[k] + ar[k] * hnr[k])
        for j in range(hid):
            k = np.uintp(j)
            ho[k] = an[k] + az[k] * (hp[k] - an[k])


@njit(parallel=True, cache=True, error_model="numpy")
def _gru_fwd_par(xw, gh, bias, h_prev, acts, hn, h_out):
    n = xw.shape[0]
    nt = min(n, 64)
    for t in prange(nt):
        _gru_fwd_rows(xw, gh, bias, h_prev, acts, hn, h_out, t * n // nt, (t + 1) * n // nt)


@njit(cache=True, error_model="numpy")
def _gru_fwd_ser(xw, gh, bias, h_prev, acts, hn, h_out):
    _gru_fwd_rows(xw, gh, bias, h_prev, acts, hn, h_out, 0, xw.shape[0])


@njit(cache=True, error_model="numpy")
def _gru_bwd_rows(dh, acts, hn, h_prev, dxw, dgh, dh_carry, lo, hi):
    """Rows lo..hi of one GRU step backward from dh (the gradient of h_t): the gradients of the
    input projection's three blocks (dxw), of h_prev @ W_hh.T + b_hh (dgh: r and z as in dxw,
    the n block times r) and dh * z, h_prev's share that does not go through W_hh."""
    hid = h_prev.shape[1]
    one = _F(1)
    for n in range(lo, hi):
        h, a, hnr, hp, dx, dg, dcar = dh[n], acts[n], hn[n], h_prev[n], dxw[n], dgh[n], dh_carry[n]
        ar, az, an = a[:hid], a[hid:2 * hid], a[2 * hid:]
        dxr, dxz, dxn = dx[:hid], dx[hid:2 * hid], dx[2 * hid:]
        dgn = dg[2 * hid:]
        for j in range(hid):
            k = np.uintp(j)
            dxn[k] = h[k] * (one - az[k]) * (one - an[k] * an[k])
        for j in range(hid):
            k = np.uintp(j)
            dxr[k] = dxn[k] * hnr[k] * ar[k] * (one - ar[k])
        for j in range(hid):
            k = np.uintp(j)
            dxz[k] = h[k] * (hp[k] - an[k]) * az[k] * (one - az[k])
        for j in range(2 * hid):
            k = np.uintp(j)
            dg[k] = dx[k]
        for j in range(hid):
            k = np.uintp(j)
            dgn[k] = dxn[k] * ar[k]
        for j in range(hid):
            k = np.uintp(j)
            dcar[k] = h[k] * az[k]


@njit(parallel=True, cache=True, error_model="numpy")
def _gru_bwd_par(dh, acts, hn, h_prev, dxw, dgh, dh_carry):
    n = dh.shape[0]
    nt = min(n, 64)
    for t in prange(nt):
        _gru_bwd_rows(dh, acts, hn, h_prev, dxw, dgh, dh_carry, t * n // nt, (t + 1) * n // nt)


@njit(cache=True, error_model="numpy")
def _gru_bwd_ser(dh, acts, hn, h_prev, dxw, dgh, dh_carry):
    _gru_bwd_rows(dh, acts, hn, h_prev, dxw, dgh, dh_carry, 0, dh.shape[0])


_LSTM_FWD = Drivers(_lstm_fwd_par, _lstm_fwd_ser)
_LSTM_BWD = Drivers(_lstm_bwd_par, _lstm_bwd_ser)
_GRU_FWD = Drivers(_gru_fwd_par, _gru_fwd_ser)
_GRU_BWD = Drivers(_gru_bwd_par, _gru_bwd_ser)


def rnn_step_fits(*arrays):
    """Whether the fused step kernels take these arrays: float32, the dtype they are written
    for (float64, which gradient checks use, runs the NumPy steps they are tested against)."""
    return all(a.dtype == np.float32 for a in arrays)


def lstm_step_forward(xw, gh, bias, c_prev, acts, c_out, h_out):
    """One LSTM step's gates and state update, written into acts (N, 4H), c_out and h_out
    (N, H); ``bias`` (4H,) is b_hh (zeros for a layer without biases)."""
    launch(_LSTM_FWD, parallel(c_prev.size, "rnn"), contiguous(xw), contiguous(gh), bias,
           contiguous(c_prev), acts, c_out, h_out)


def lstm_step_backward(dh, dc, gc, off, acts, c_prev, c_t, da):
    """One LSTM step backward: da (N, 4H) gets the pre-activation gradients; dc (N, H), the
    carried cell gradient, is updated in place to c_prev's. The output's gradient of c_t is
    gc[:, off:off + H] (the step's row of the layer output's gradient, which holds h's first:
    read in place, not copied out)."""
    launch(_LSTM_BWD, parallel(dh.size, "rnn"), contiguous(dh), dc, contiguous(gc), int(off),
           acts, contiguous(c_prev), contiguous(c_t), da)


def gru_step_forward(xw, gh, bias, h_prev, acts, hn, h_out):
    """One GRU step: activations (N, 3H) into acts, gh_n + b_hh_n into hn, h into h_out."""
    launch(_GRU_FWD, parallel(h_prev.size, "rnn"), contiguous(xw), contiguous(gh), bias,
           contiguous(h_prev), acts, hn, h_out)


def gru_step_backward(dh, acts, hn, h_prev, dxw, dgh, dh_carry):
    """One GRU step backward from dh: dxw and dgh (N, 3H), and dh * z into dh_carry (N, H)."""
    launch(_GRU_BWD, parallel(dh.size, "rnn"), contiguous(dh), acts, hn, contiguous(h_prev),
           dxw, dgh, dh_carry)
