"""Optimizer updates: torch.optim.SGD's and Adam's (AdamW's) steps for one parameter in one pass
over its memory.

In numpy the momentum update is five whole-array expressions (scale the buffer, scale the
gradient into a temporary, add it, scale the buffer again into a temporary, subtract it), about
eleven passes over parameter-sized arrays; here it is one pass reading the gradient, parameter
and buffer and writing the last two. ResNet-50's 25.6M parameters make that a few percent of a
CPU training step. Same arithmetic as the CUDA kernel (``backend/cuda.py``, SGD_MOMENTUM): the
scalars are rounded to the parameter's dtype first.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .launch import FLOATS, Drivers, launch, parallel

# the dtypes optim.SGD may hand this kernel set (others take the numpy expressions)
fused_update_dtypes = FLOATS


@njit(cache=True)
def _sgd_range(p, g, buf, lr, wd, momentum, damp, nesterov, first, lo, hi):
    t = p.dtype.type
    lr_t, wd_t, mom_t, damp_t = t(lr), t(wd), t(momentum), t(damp)
    use_wd, use_mom = wd != 0, momentum != 0
    for i in range(lo, hi):
        k = np.uintp(i)
        d = g[k]
        if use_wd:
            d += wd_t * p[k]
        if use_mom:
            b = d if first else mom_t * buf[k] + damp_t * d
            buf[k] = b
            d = d + mom_t * b if nesterov else b
        p[k] -= lr_t * d


@njit(parallel=True, cache=True)
def _sgd_par(p, g, buf, lr, wd, momentum, damp, nesterov, first):
    nt = 64
    for c in prange(nt):
        _sgd_range(p, g, buf, lr, wd, momentum, damp, nesterov, first, c * p.size // nt,
                   (c + 1) * p.size // nt)


@njit(cache=True)
def _sgd_ser(p, g, buf, lr, wd, momentum, damp, nesterov, first):
    _sgd_range(p, g, buf, lr, wd, momentum, damp, nesterov, first, 0, p.size)


_SGD = Drivers(_sgd_par, _sgd_ser)


def sgd_update(param, grad, state, lr, momentum, dampening, weight_decay, nesterov):
    """One torch.optim.SGD step for one C-contiguous float32/float64 parameter, in place, in one
    pass (the momentum buffer is made on the first step)."""
    p = param.reshape(-1)
    g = np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1)
    buf = state.get("momentum_buffer") if momentum else None
    first = bool(momentum) and buf is None
    if first:
        buf = state["momentum_buffer"] = np.empty_like(param)
    b = buf.reshape(-1) if buf is not None else p  # unused without momentum
    launch(_SGD, parallel(p.size, "optim"), p, g, b, float(lr), float(weight_decay),
           float(momentum), float(1 - dampening), bool(nesterov), first)


# ---- Adam -----------------------------------------------------------------------------------
# In numpy Adam's step is about a dozen passes (the two moments' updates, the square root, the
# division, the step) through parameter-sized temporaries; here one pass reads the gradient,
# parameter and both moments and writes the last three. The arithmetic is the CUDA kernel's
# (cuda.py's ADAM), scalars rounded to the parameter's dtype first. The division's error model is
# NumPy's (no branch to ZeroDivisionError), so the loop vectorises.
@njit(cache=True, error_model="numpy")
def _adam_range(p, g, m, v, step_size, b1, b2, c2, eps, wd, lo, hi):
    t = p.dtype.type
    ss, b1t, b2t, c2t, epst, wdt = t(step_size), t(b1), t(b2), t(c2), t(eps), t(wd)
    o1, o2 = t(1 - b1), t(1 - b2)
    if wd != 0:
        for i in range(lo, hi):
            k = np.uintp(i)
            d = g[k] + wdt * p[k]
            mi = b1t * m[k] + o1 * d
            vi = b2t * v[k] + o2 * d * d
            m[k] = mi
            v[k] = vi
            p[k] -= ss * mi / (np.sqrt(vi) / c2t + epst)
    else:
        for i in range(lo, hi):
            k = np.uintp(i)
            d = g[k]
            mi = b1t * m[k] + o1 * d
            vi = b2t * v[k] + o2 * d * d
            m[k] = mi
            v[k] = vi
            p[k] -= ss * mi / (np.sqrt(vi) / c2t + epst)


@njit(parallel=True, cache=True)
def _adam_par(p, g, m, v, step_size, b1, b2, c2, eps, wd):
    nt = 64
    for c in prange(nt):
        _adam_range(p, g, m, v, step_size, b1, b2, c2, eps, wd, c * p.size // nt,
                    (c + 1) * p.size // nt)


@njit(cache=True)
def _adam_ser(p, g, m, v, step_size, b1, b2, c2, eps, wd):
    _adam_range(p, g, m, v, step_size, b1, b2, c2, eps, wd, 0, p.size)


_ADAM = Drivers(_adam_par, _adam_ser)


def adam_update(param, grad, m, v, step_size, beta1, beta2, c2, eps, weight_decay):
    """One torch.optim.Adam step for one C-contiguous float32/float64 parameter and its moments
    m, v (same shape and dtype), in place, in one pass."""
    g = np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1)
    launch(_ADAM, parallel(param.size, "optim"), param.reshape(-1), g, m.reshape(-1),
           v.reshape(-1), float(step_size), float(beta1), float(beta2), float(c2), float(eps),
           float(weight_decay))
