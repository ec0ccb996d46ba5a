"""Neural-network ops: linear, conv2d by im2col, pooling, activations, losses, batch and layer
norm, embedding, one_hot, pad.

Public as ``minidl.nn.functional`` (``import minidl.nn.functional as F``). Argument checks live
in the wrapper functions, so a bad call fails before any work with the shapes that did not fit.
"""
from __future__ import annotations

import copy
import functools
import warnings

import numpy as np

from . import backend
from .backend import device_of, generic, get_array_module
from .autograd import first_order_only
from .backend.dtypes import channel_dtype, is_floating, is_low_precision, is_real_number
from .backend.sparse import SparseCOO
from .ops import (
    LogSoftmax, ReLU, Sigmoid, Softmax, Where, accumulation_dtype, cat, constant, keep_where,
    log_softmax_array, reduction_axes, pointwise_kernels, refuse_complex, row_kernels,
    stable_sigmoid,
)
from .tensor import (Function, Tensor, apply_in_place, autocast_hook, bump_version,
                     is_grad_enabled)
from .special import erfc_array  # noqa: E402


def _pair(v, name):
    if type(v) is int:
        return v, v
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
        return _int(v[0], name, v), _int(v[1], name, v)
    return _int(v, name, v), _int(v, name, v)


def _int(v, name, whole):
    # PyTorch refuses a float size (2.5 would be cut to 2 without a word)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {whole!r}")
    return int(v)


def _whole(v, what, whole=None):
    """v as an int; a float, a bool or anything else is refused, naming ``what``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        got = v if whole is None else whole
        raise TypeError(f"{what} must be {'ints' if whole is not None else 'an int'}, "
                        f"got {got!r}")
    return int(v)


def _kernels(x):
    return backend.kernels(get_array_module(x))


def _needs_grad(fn, i):
    return len(fn.inputs) > i and fn.inputs[i].requires_grad


def _no_samples_grads(fn, g, *shapes):
    """The gradients of a convolution whose output is empty (no samples, or no output
    channels): zeros of each input's shape where wanted, as torch's (the kernels' reshapes
    cannot infer a length from nothing)."""
    xp = get_array_module(g)
    return tuple(xp.zeros(s, dtype=g.dtype) if i < len(fn.inputs) and _needs_grad(fn, i)
                 else None for i, s in enumerate(shapes))


def _autocast_inputs(name, *tensors):
    """Composite ops (made of other ops) ask autocast for their inputs' dtype themselves."""
    hook = autocast_hook()
    return tensors if hook is None else hook.inputs(name, tensors)


def _check_dtypes(name, x, weight, bias):
    """PyTorch refuses an input whose dtype differs from the weights' (float64 data into a
    float32 model would otherwise turn its gradients and momentum into float64). Under
    autocast the 32- and 16-bit float mixes are deliberate and the policy casts them; float64
    is never cast there (as in PyTorch), so a float64 mismatch is refused even then."""
    dt = x.data.dtype
    if weight.data.dtype == dt and (bias is None or bias.data.dtype == dt):
        return  # the usual case
    named = [("input", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    dtypes = {np.dtype(t.dtype) for _, t in named}
    if autocast_hook() is not None and all(is_floating(d) and d.itemsize <= 4 for d in dtypes):
        return
    have = ", ".join(f"{what} {t.dtype}" for what, t in named)
    raise TypeError(f"{name}: dtypes differ ({have}); cast the input to the weights' dtype "
                    f"(x.to(dtype={weight.dtype}), x.float()) or the model to the input's")


def _cpu_low_precision(x):
    # numba and BLAS have no float16/bfloat16 GEMMs: on the CPU those run in float32, rounded
    dt = x.data.dtype
    return dt.itemsize == 2 and is_low_precision(dt) and x.device == "cpu"


# ---- for graph_backward (double backward) of the ops linear in their input ----------------
class LinearAdjoint(Function):
    """The gradient of an op that is linear in its only differentiable input, with
    coefficients fixed at its forward (padding, windows, averaging, resampling), as an op: its
    forward is that op's array backward (on a shallow copy of the op, so that freeing the
    original graph leaves it whole), and its own gradient is that op again: a fresh forward
    with the same keyword arguments (``kwargs``, which must make it linear: pad value 0)."""

    def forward(self, g, op, kwargs):
        self.op, self.kwargs = op, kwargs
        grads = op.backward(g)
        return grads[0] if isinstance(grads, tuple) else grads

    def backward(self, h):
        return type(self.op)().forward(h, **self.kwargs)

    def graph_backward(self, h, out):
        return type(self.op).apply(h, **self.kwargs)


def linear_graph_backward(op, g, **kwargs):
    """``op``'s input gradient as a LinearAdjoint op (see there); ``kwargs``: the keyword
    arguments of op's forward."""
    return LinearAdjoint.apply(g, op=copy.copy(op), kwargs=kwargs)


def _flat_scatter_add(values, index, shape):
    """Zeros of ``shape`` (N, C, *S) with each value of ``values`` (N, C, *O) added at its
    flat index ``index`` (N, C, *O) into its (n, c) plane; repeated indices summed."""
    xp = get_array_module(values)
    n, c = shape[:2]
    plane = int(np.prod(shape[2:]))
    rows = xp.arange(n * c, dtype=np.int64).reshape(-1, 1) * plane
    where = (rows + index.reshape(n * c, -1)).reshape(-1)
    wide = accumulation_dtype(values)
    vals = values.reshape(-1, 1).astype(wide or values.dtype, copy=False)
    out = xp.zeros((n * c * plane, 1), dtype=vals.dtype)
    _add_rows(out, where, vals)
    return out.reshape(shape).astype(values.dtype, copy=False)


class GatherPlanes(Function):
    """Each (n, c) plane of x (N, C, *S) read at flat indices ``index`` (N, C, *O): what max
    pooling computes for its winners, and the gradient of max unpooling; its gradient adds
    back (ScatterPlanes)."""

    def forward(self, x, index):
        self.index, self.in_shape = index, x.shape
        xp = get_array_module(x)
        n, c = x.shape[:2]
        y = xp.take_along_axis(x.reshape(n, c, -1), index.reshape(n, c, -1), axis=2)
        return y.reshape(index.shape)

    def backward(self, g):
        return _flat_scatter_add(g, self.index, self.in_shape)

    def graph_backward(self, g, out):
        return ScatterPlanes.apply(g, index=self.index, shape=self.in_shape)


class ScatterPlanes(Function):
    """The adjoint of GatherPlanes: ``g`` (N, C, *O) added into zeros of ``shape`` at its
    flat indices per plane (max pooling's input gradient, as an op for double backward)."""

    def forward(self, g, index, shape):
        self.index = index
        return _flat_scatter_add(g, index, shape)

    def backward(self, h):
        return GatherPlanes().forward(h, self.index)

    def graph_backward(self, h, out):
        return GatherPlanes.apply(h, index=self.index)


def _normalization_graph_grads(fn, g, axes, lead, param_shape, eps):
    """Graph-mode gradients of (x - mean) / sqrt(var + eps) * w + b over ``axes`` (batch and
    layer norm with batch statistics), as recorded ops: w (and b) broadcast as
    ``param_shape``, their gradients summed over ``lead``. ``fn.inputs``: x, then w and b
    where the op has them."""
    x, rest = fn.inputs[0], list(fn.inputs[1:])
    w = rest.pop(0) if fn.has_weight else None
    b = rest.pop(0) if fn.has_bias else None
    xc = x - x.mean(dim=axes, keepdim=True)
    rstd = ((xc * xc).mean(dim=axes, keepdim=True) + eps) ** -0.5
    xhat = xc * rstd
    gxhat = g * w.reshape(param_shape) if w is not None else g
    gx = None
    if x.requires_grad:
        gx = rstd * (gxhat - gxhat.mean(dim=axes, keepdim=True)
                     - xhat * (gxhat * xhat).mean(dim=axes, keepdim=True))
    grads = [gx]
    if w is not None:
        grads.append((g * xhat).sum(dim=lead) if w.requires_grad else None)
    if b is not None:
        grads.append(g.sum(dim=lead) if b.requires_grad else None)
    return tuple(grads)


# ---- linear -----------------------------------------------------------------------------
class Linear(Function):
    # complex x and w: the gradients take their conjugates (PyTorch's convention), saved so
    complex_grad = True

    def forward(self, x, w, b=None):
        self.in_shape = x.shape
        x2 = x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1])  # -1 is unknown for 0 features
        y = x2 @ w.T
        if b is not None:
            y += b
        if w.dtype.kind == "c":
            self.save_for_backward(x2.conj(), w.conj())
        else:
            self.save_for_backward(x2, w)
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, g):
        x2, w = self.saved
        g2 = g.reshape(x2.shape[0], w.shape[0])  # not -1: 0 out_features leaves it unknown
        gx = (g2 @ w).reshape(self.in_shape) if _needs_grad(self, 0) else None
        gw = g2.T @ x2 if _needs_grad(self, 1) else None
        gb = g2.sum(axis=0) if len(self.inputs) > 2 else None
        return gx, gw, gb

    def graph_backward(self, g, out):
        x, w = self.inputs[:2]
        rows = int(np.prod(self.in_shape[:-1]))
        g2 = g.reshape(rows, w.shape[0])
        need_x, need_w = x.requires_grad, w.requires_grad
        if w.data.dtype.kind == "c":
            from .ops import Conj

            x, w = Conj.apply(x), Conj.apply(w)
        gx = (g2 @ w).reshape(self.in_shape) if need_x else None
        gw = g2.transpose(0, 1) @ x.reshape(rows, w.shape[1]) if need_w else None
        gb = g2.sum(0) if len(self.inputs) > 2 else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features) as in PyTorch."""
    if getattr(x, "is_nested", False) is True:  # minidl.nested
        return x._nested_op("linear", x, weight, bias)
    if not hasattr(x, "ndim"):  # a dict, list or None: PyTorch's TypeError, not an AttributeError
        raise TypeError(f"linear(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(x).__name__}")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1] if x.ndim else 0} features (shape "
                         f"{x.shape}), weight {weight.shape} expects {weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias shape {bias.shape} does not match {weight.shape[0]} outputs")
    _check_dtypes("linear", x, weight, bias)
    args = (x, weight) if bias is None else (x, weight, bias)
    if _cpu_low_precision(x):
        return Linear.apply(*(t.float() for t in args)).astype(x.dtype)
    return Linear.apply(*args)


# ---- convolution ------------------------------------------------------------------------
class Conv2d(Function):
    """Convolution as GEMMs on an im2col matrix laid out (C_in*kh*kw, N*OH*OW): the columns of
    the whole batch side by side, so the forward pass, the weight gradient and the column
    gradient are one BLAS call each. A 1x1 stride-1 unpadded conv skips im2col (the input
    already is its column matrix) and runs one GEMM per sample, which also avoids copying x."""

    tiles = False  # forward by the tiled kernels: backward uses their weight gradient too

    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0), needs_grad=True):
        k = _kernels(x)
        n, ci, h, wd = x.shape
        co, _, kh, kw = w.shape
        (sh, sw), (ph, pw) = stride, padding
        oh, ow = k.out_size(h, kh, sh, ph), k.out_size(wd, kw, sw, pw)
        self.geom = (x.shape, kh, kw, sh, sw, ph, pw)
        algorithm = _conv2d_algorithm(k, x.shape, w.shape, stride, padding, needs_grad, x.dtype)
        self.pointwise = algorithm == "pointwise"
        self.direct = algorithm == "direct"
        self.cudnn = algorithm == "cudnn"
        if self.cudnn:  # implicit GEMM in cuDNN (backend/cudnn.py): x is all it keeps
            self.conv_args = (stride, padding)
            self.save_for_backward(x, w)
            return k.conv2d_cudnn(x, w, b, stride, padding)
        w2 = w.reshape(co, -1)                                  # (Co, K)
        if self.direct:  # thin input (LeNet's first layer): no im2col matrix at all
            self.save_for_backward(x, w)
            return k.conv2d_direct(x, w, b, ph, pw)
        if algorithm in ("tiles", "winograd"):
            # register-blocked direct convolution, or Winograd F(2x2, 3x3) with 2.25x fewer
            # multiplies: no im2col matrix. In training the tiles' backward needs none either
            # (their weight gradient, and the input gradient as a tiled convolution); Winograd
            # is chosen only where the matrix would not be kept anyway, and backward gathers
            # it from x as it does for large ones
            run = k.conv2d_tiles if algorithm == "tiles" else k.conv2d_winograd
            self.kept_cols = False
            self.tiles = algorithm == "tiles"
            self.save_for_backward(x, w)
            return run(x, w, b, ph, pw)
        if algorithm == "gemm_chunks":
            return k.conv2d_inference(x, w, b, stride, padding)  # nothing to keep: cache-sized
        if self.pointwise:
            x3 = x.reshape(n, ci, h * wd)
            y = w2 @ x3                                         # (N, Co, L): already NCHW
            if b is not None:
                y += b[:, None]
            self.save_for_backward(x3, w)
            return y.reshape(n, co, oh, ow)
        col = _im2col_t(k, x, kh, kw, sh, sw, ph, pw)          # (K, N*L)
        y = _cols_to_nchw(k, w2 @ col, b, n, oh, ow)
        # A kh*kw-times copy of the input is the largest array a conv could keep for backward.
        # Small ones are kept (re-gathering would cost more than it saves); large ones are
        # gathered again in backward from x, which is alive anyway as this op's input.
        self.kept_cols = needs_grad and col.nbytes <= generic.KEEP_COLUMNS_BYTES
        if self.kept_cols:
            _lend_scratch(k, col, self)  # reused only once this Function is gone
        else:
            _give_back_scratch(k, col)
        self.save_for_backward(col if self.kept_cols else x, w)
        return y

    def backward(self, g):
        k = _kernels(g)
        col, w = self.saved
        x_shape, kh, kw, sh, sw, ph, pw = self.geom
        want_x, want_w = _needs_grad(self, 0), _needs_grad(self, 1)
        want_b = len(self.inputs) > 2 and _needs_grad(self, 2)
        if g.size == 0:
            return _no_samples_grads(self, g, x_shape, w.shape, (g.shape[1],))
        gx = gw = gb = None
        if self.cudnn:
            x = col  # the cuDNN path saved the input, not a column matrix
            g = g.astype(x.dtype, copy=False)
            if want_x:
                gx = k.conv2d_cudnn_backward_data(g, w, x_shape, *self.conv_args)
            if want_w:
                gw = k.conv2d_cudnn_backward_filter(x, g, w.shape, *self.conv_args)
            if want_b:
                gb = _bias_grad(k, g)
            return gx, gw, gb
        n, co = g.shape[:2]
        w2 = w.reshape(co, -1)
        if self.direct:
            x = col  # the direct path saved the input, not a column matrix
            if want_w or want_b:
                gw, gb_all = k.conv2d_direct_wgrad(x, g, kh, kw, ph, pw)
                gw = gw if want_w else None
                gb = gb_all if want_b else None
            if want_x:
                gx = _conv2d_input_grad(k, g, w, x_shape, (sh, sw), (ph, pw))
            return gx, gw, gb
        if self.pointwise:
            g3 = g.reshape(n, co, -1)
            if want_w:
                gw = _pointwise_wgrad(k, g, col, w.shape)
            if want_b:
                gb = _bias_grad(k, g)
            if want_x:
                gx = (w2.T @ g3).reshape(x_shape)
            return gx, gw, gb
        if self.tiles:  # no column matrix in backward either (the tiled kernels' shapes)
            x = col
            if want_w or want_b:
                gw_all, gb_all = k.conv2d_tiles_wgrad(x, g, kh, kw, ph, pw)
                gw = gw_all if want_w else None
                gb = gb_all if want_b else None
            if want_x:
                gx = _data_grad_direct(k, g, w, (sh, sw), (ph, pw))
            if gx is not None or not want_x:
                return gx, gw, gb
            want_w = want_b = False  # done: the input gradient goes the im2col way below
        g2, gb_all = _nchw_to_cols(k, g)                        # (Co, N*L)
        if want_w:
            if not self.kept_cols:
                col = _im2col_t(k, col, kh, kw, sh, sw, ph, pw)  # col held x: gather again
            # written into an array that owns its memory (a view would be copied again as
            # .grad). With long rows (N*L > K) col @ g2.T ran up to 1.7x faster in BLAS than
            # g2 @ col.T, even with its transpose copied; with short rows (ResNet's last
            # stages) the transposed copy of the large (K, Co) result cost 5x the GEMM
            xp = get_array_module(g)
            gw = xp.empty(w.shape, dtype=g.dtype)
            if col.shape[1] > col.shape[0]:
                gw.reshape(co, -1)[...] = (col @ g2.T).T
            else:
                xp.matmul(g2, col.T, out=gw.reshape(co, -1))
            if not self.kept_cols:
                _give_back_scratch(k, col)
        if want_b:
            gb = gb_all if gb_all is not None else _bias_grad(k, g)
        if want_x:
            gx = _col2im_t(k, w2.T @ g2, x_shape, kh, kw, sh, sw, ph, pw)
        _give_back_scratch(k, g2)
        return gx, gw, gb

    def graph_backward(self, g, out):
        x_shape, kh, kw, sh, sw, ph, pw = self.geom
        return _conv_graph_gradients(self.inputs, g, (sh, sw), (ph, pw), (1, 1), 1)


# The graph-mode gradients of a convolution (double backward) are convolutions with groups
# and dilation, which nn/_functional/convolution.py defines on top of this module: it hands
# its function over when imported (as tensor.py hands autograd its Tensor class), which
# ``import minidl`` always does.
_conv_graph_gradients = None


def use_conv_graph_gradients(fn):
    global _conv_graph_gradients
    _conv_graph_gradients = fn


def _conv2d_input_grad(k, g, w, x_shape, stride, padding):
    """The input gradient of a 2-D convolution (no groups, no dilation) by w, a transposed
    convolution of g: one GEMM into the column matrix, then col2im."""
    co, _, kh, kw = w.shape
    g2, _ = _nchw_to_cols(k, g)
    gx = _col2im_t(k, w.reshape(co, -1).T @ g2, tuple(x_shape), kh, kw, *stride, *padding)
    _give_back_scratch(k, g2)
    return gx


def _data_grad_direct(k, g, w, stride, padding):
    """The input gradient of a stride-1 convolution as a convolution itself: of g, padded by
    k-1-p, with the filters flipped and their input and output channels swapped; computed by
    the kernel set's tiled or Winograd kernels where its rules choose them for that
    convolution, None otherwise (the caller then takes the im2col way)."""
    co, ci, kh, kw = w.shape
    qh, qw = kh - 1 - padding[0], kw - 1 - padding[1]
    if stride != (1, 1) or qh < 0 or qw < 0:  # padding wider than the filter: a cropping
        return None
    algorithm = _conv2d_algorithm(k, g.shape, (ci, co, kh, kw), (1, 1), (qh, qw), False,
                                  g.dtype)
    if algorithm not in ("tiles", "winograd"):
        return None
    wf = get_array_module(w).ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    run = k.conv2d_tiles if algorithm == "tiles" else k.conv2d_winograd
    return run(g, wf.astype(g.dtype, copy=False), None, qh, qw)


def _pointwise_wgrad(k, g, x3, w_shape):
    """Weight gradient of a 1x1 conv, sum over samples of g[n] @ x[n].T, written into an array
    of the weight's shape that owns its memory (a view would be copied again as .grad).
    Per-sample GEMMs summed afterwards need an (N, Co, Ci) intermediate; where that is larger
    than the two activations, both are laid out as (C, N*L) columns and one GEMM covers the
    batch (short rows, as in ResNet's last stages, also make per-sample GEMMs inefficient)."""
    xp = get_array_module(g)
    n, co = g.shape[:2]
    ci, length = x3.shape[1:]
    gw = xp.empty(w_shape, dtype=g.dtype)
    if n == 1 or n * co * ci <= (co + ci) * n * length:
        g3 = g.reshape(n, co, -1)
        (g3 @ x3.transpose(0, 2, 1)).sum(axis=0, out=gw.reshape(co, ci))
        return gw
    g2, _ = _nchw_to_cols(k, g)
    x2, _ = _nchw_to_cols(k, x3)
    xp.matmul(g2, x2.T, out=gw.reshape(co, ci))
    _give_back_scratch(k, g2)
    _give_back_scratch(k, x2)
    return gw


def _conv2d_algorithm(k, x_shape, w_shape, stride, padding, needs_grad, dtype):
    """The kernel set's choice of convolution algorithm (the CPU's rules are in
    ``backend/cpu/conv.py``, CUDA's, cuDNN among them, in ``backend/cuda.py``); elsewhere, one
    GEMM per sample for 1x1 layers and im2col otherwise."""
    choose = getattr(k, "conv2d_algorithm", generic.conv2d_algorithm)
    return choose(x_shape, w_shape, stride, padding, needs_grad, dtype)


# Kernel sets with a scratch pool (the CPU's) hand out im2col and gradient columns that the
# caller owns and gives back when it is done with them (see backend/cpu/scratch.py).
def _lend_scratch(k, array, owner):
    scratch = getattr(k, "scratch_pool", None)
    if scratch is not None:
        scratch.lend(array, owner)


def _give_back_scratch(k, array):
    scratch = getattr(k, "scratch_pool", None)
    if scratch is not None:
        scratch.give_back(array)


# The layout helpers use a kernel set's fused versions when it has them (numba on the CPU) and
# whole-array code that runs on any array module otherwise.
def _im2col_t(k, x, kh, kw, sh, sw, ph, pw):
    fast = getattr(k, "im2col_t", None)
    if fast is not None:
        return fast(x, kh, kw, sh, sw, ph, pw)
    col = k.im2col(x, kh, kw, sh, sw, ph, pw)                  # (N, K, L)
    n, kk, length = col.shape
    return col.transpose(1, 0, 2).reshape(kk, n * length)


def _col2im_t(k, gcol, x_shape, kh, kw, sh, sw, ph, pw):
    fast = getattr(k, "col2im_t", None)
    if fast is not None:
        return fast(gcol, x_shape, kh, kw, sh, sw, ph, pw)
    n = x_shape[0]
    gcol = gcol.reshape(gcol.shape[0], n, -1).transpose(1, 0, 2)
    return k.col2im(gcol, x_shape, kh, kw, sh, sw, ph, pw)


def _cols_to_nchw(k, y2, b, n, oh, ow):
    fast = getattr(k, "cols_to_nchw", None)
    if fast is not None:
        return fast(y2, b, n, oh, ow)
    xp = get_array_module(y2)
    y = xp.ascontiguousarray(y2.reshape(y2.shape[0], n, -1).transpose(1, 0, 2))
    if b is not None:
        y += b[:, None]
    return y.reshape(n, y2.shape[0], oh, ow)


def _nchw_to_cols(k, g):
    fast = getattr(k, "nchw_to_cols", None)
    if fast is not None:
        return fast(g)
    n, co = g.shape[:2]
    g2 = g.reshape(n, co, -1).transpose(1, 0, 2).reshape(co, -1)
    return g2, g2.sum(axis=1)


def _bias_grad(k, g):
    fast = getattr(k, "bias_grad_nchw", None)
    if fast is not None:
        return fast(g)
    return g.reshape(g.shape[0], g.shape[1], -1).sum(axis=(0, 2))


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in PyTorch) of NCHW input with (C_out, C_in, kH, kW)."""
    if not hasattr(x, "data") or not hasattr(x, "ndim"):  # PyTorch's TypeError
        raise TypeError(f"conv2d(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(x).__name__}")
    xs, ws = x.data.shape, weight.data.shape
    if x.data.dtype.kind == "c" or weight.data.dtype.kind == "c":
        refuse_complex("conv2d", x.data if x.data.dtype.kind == "c" else weight.data)
    if len(xs) != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if len(ws) != 4:
        raise ValueError(f"conv2d: weight must be 4-D (C_out, C_in, kH, kW), got {weight.shape}")
    if xs[1] != ws[1]:
        raise ValueError(f"conv2d: input has {xs[1]} channels (shape {x.shape}), weight "
                         f"{weight.shape} expects {ws[1]}")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: stride {stride} must be >= 1 and padding {padding} >= 0")
    kh, kw = ws[2:]
    if min(kh, kw) < 1:  # an empty kernel sums nothing: torch refuses it
        raise ValueError(f"conv2d: kernel size should be greater than zero, got kernel "
                         f"{kh}x{kw} (weight {weight.shape})")
    if xs[2] + 2 * padding[0] < kh or xs[3] + 2 * padding[1] < kw:
        raise ValueError(f"conv2d: kernel {kh}x{kw} is larger than the padded input "
                         f"{xs[2] + 2 * padding[0]}x{xs[3] + 2 * padding[1]}")
    if bias is not None and bias.shape != (ws[0],):
        raise ValueError(f"conv2d: bias shape {bias.shape} does not match {ws[0]} filters")
    _check_dtypes("conv2d", x, weight, bias)
    args = (x, weight) if bias is None else (x, weight, bias)
    # without a gradient to compute, the forward pass may use an algorithm that keeps nothing
    needs_grad = is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in args)
    if _cpu_low_precision(x):
        return Conv2d.apply(*(t.float() for t in args), stride=stride, padding=padding,
                            needs_grad=needs_grad).astype(x.dtype)
    return Conv2d.apply(*args, stride=stride, padding=padding, needs_grad=needs_grad)


# ---- pooling ----------------------------------------------------------------------------
def _pool_args(name, x, kernel_size, stride, padding):
    if x.ndim != 4:
        raise ValueError(f"{name}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    p = _pair(padding, "padding")
    if min(k) < 1 or min(s) < 1:
        raise ValueError(f"{name}: kernel_size {k} and stride {s} must be positive")
    if min(p) < 0:
        raise ValueError(f"{name}: padding {p} must not be negative")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{name}: padding {p} must be at most half the kernel size {k}")
    if x.shape[2] + 2 * p[0] < k[0] or x.shape[3] + 2 * p[1] < k[1]:
        raise ValueError(f"{name}: kernel {k} is larger than the padded input of shape {x.shape}")
    return k, s, p


class MaxPool2d(Function):
    def forward(self, x, kernel, stride, padding):
        self.geom = (x.shape,) + kernel + stride + padding
        y, self.argmax = _kernels(x).max_pool2d_forward(x, *kernel, *stride, *padding)
        return y

    def backward(self, g):
        x_shape, *geom = self.geom
        return _kernels(g).max_pool2d_backward(g, self.argmax, x_shape, *geom)

    def graph_backward(self, g, out):
        # max pooling reads each output from its winner: the gradient is a scatter to the
        # winners' flat positions in the input planes (linear in g, the winners fixed)
        (n, c, h, w), kh, kw, sh, sw, ph, pw = self.geom
        xp = get_array_module(self.argmax)
        arg = self.argmax.astype(np.int64)
        oh, ow = arg.shape[2:]
        rows = xp.arange(oh, dtype=np.int64).reshape(-1, 1) * sh - ph + arg // kw
        cols = xp.arange(ow, dtype=np.int64) * sw - pw + arg % kw
        return ScatterPlanes.apply(g, index=rows * w + cols, shape=(n, c, h, w))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over kH x kW windows; stride defaults to the kernel size; padding counts as -inf."""
    if getattr(x, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return x._quantized_op("max_pool2d", kernel_size, stride, padding)
    k, s, p = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2d.apply(x, kernel=k, stride=s, padding=p)


class AvgPool2d(Function):
    """Mean over windows, padding counted as zeros (PyTorch's count_include_pad=True)."""

    def forward(self, x, kernel, stride, padding):
        xp = get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        n, c, h, w = x.shape
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if ph or pw:
            x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        wide = accumulation_dtype(x)  # 16-bit inputs: summed in float32
        y = xp.zeros((n, c, oh, ow), dtype=wide or x.dtype)
        for i in range(kh):
            for j in range(kw):
                y += x[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
        self.geom = ((n, c, h, w), kernel, stride, padding)
        return (y / (kh * kw)).astype(x.dtype, copy=False)

    def backward(self, g):
        xp = get_array_module(g)
        (n, c, h, w), (kh, kw), (sh, sw), (ph, pw) = self.geom
        oh, ow = g.shape[2:]
        gx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=g.dtype)
        g = g / (kh * kw)
        for i in range(kh):
            for j in range(kw):
                gx[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += g
        return gx[:, :, ph:ph + h, pw:pw + w]

    def graph_backward(self, g, out):
        _, kernel, stride, padding = self.geom
        return linear_graph_backward(self, g, kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    if getattr(x, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return x._quantized_op("avg_pool2d", kernel_size, stride, padding)
    k, s, p = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel=k, stride=s, padding=p)


def adaptive_avg_pool2d(x, output_size):
    """Average into an output_size grid; bins follow PyTorch's floor/ceil rule."""
    if getattr(x, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return x._quantized_op("adaptive_avg_pool2d", output_size)
    if x.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d: input must be 4-D (N, C, H, W), got {x.shape}")
    oh, ow = _pair(output_size, "output_size")
    h, w = x.shape[2:]
    if min(h, w) < 1:  # no element to average: torch refuses it (the mean was NaN)
        raise ValueError(f"adaptive_avg_pool2d: expected input to have non-zero size for "
                         f"non-batch dimensions, but its spatial size is {(h, w)} (shape "
                         f"{x.shape})")
    if min(oh, ow) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size {(oh, ow)} must be positive")
    if (oh, ow) == (1, 1):
        return x.mean(dim=(2, 3), keepdim=True)
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(x, (h // oh, w // ow))
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        cols = []
        for j in range(ow):
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            cols.append(x[:, :, r0:r1, c0:c1].mean(dim=(2, 3), keepdim=True))
        rows.append(cat(cols, dim=3))
    return cat(rows, dim=2)


# ---- activations ------------------------------------------------------------------------
def relu(input, inplace=False):
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("relu", input)
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op("relu")
    return apply_in_place(input, ReLU.apply, "relu") if inplace else ReLU.apply(input)


class AddReLU(Function):
    """relu(a + b) as one op (a minidl extension: ResNet's residual add and the ReLU after it);
    only the output is kept, and both inputs get the same gradient."""

    def forward(self, a, b):
        self.dtypes = a.dtype, b.dtype
        if a.dtype != b.dtype:  # promote as a + b would (a float16 branch meets a float32 one)
            dtype = get_array_module(a).result_type(a, b)
            a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
        fast = getattr(_kernels(a), "add_relu", None)
        if fast is not None:
            y = fast(a, b)
        else:
            y = a + b
            get_array_module(y).maximum(y, 0, out=y)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        fast = getattr(_kernels(g), "relu_backward", None)
        gx = fast(g, y) if fast is not None else g * ~(y <= 0)
        return tuple(gx.astype(dt, copy=False) for dt in self.dtypes)

    def graph_backward(self, g, out):
        gx = keep_where(~(out.data <= 0), g)
        return gx, gx


def add_relu(a, b):
    """``relu(a + b)`` for two tensors of the same shape, in one pass."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"add_relu: shapes {tuple(a.shape)} and {tuple(b.shape)} differ "
                         "(no broadcasting here; use relu(a + b))")
    return AddReLU.apply(a, b)


def sigmoid(input):
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op("sigmoid")
    if not is_floating(input.data.dtype):  # complex; integers and bools give floats, as torch's
        return input.sigmoid()
    return Sigmoid.apply(input)


def tanh(input):
    return input.tanh()


def _opmath(a):
    """16-bit arrays as float32 (PyTorch's kernels compute them in float, then round); others
    as they are."""
    wide = accumulation_dtype(a)
    return a if wide is None else a.astype(wide)


def _float_input(name, x):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if not is_floating(x.data.dtype):
        raise TypeError(f"{name}: input must be a floating-point tensor, got {x.dtype}")


def _clip_like_kernels(*arrays):
    """The CPU kernel set where its one-pass leaky-ReLU and hardtanh kernels take these
    arrays, else None."""
    if type(arrays[0]) is not np.ndarray:
        return None
    k = backend.kernels(np)
    fits = getattr(k, "leaky_relu_fits", None)
    return k if fits is not None and fits(*arrays) else None


class LeakyReLU(Function):
    def forward(self, x, negative_slope):
        self.slope = negative_slope
        self.save_for_backward(x)
        k = _clip_like_kernels(x)
        if k is not None:
            return k.leaky_relu_forward(x, negative_slope)
        xp = get_array_module(x)
        xw = _opmath(x)
        return xp.where(xw > 0, xw, xw * negative_slope).astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved
        k = _clip_like_kernels(g, x)
        if k is not None:
            return k.leaky_relu_backward(g, x, self.slope)
        gw = _opmath(g)
        return get_array_module(g).where(x > 0, gw, gw * self.slope).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0].data
        k = _clip_like_kernels(x)
        if k is not None and x.dtype == g.data.dtype:  # the slopes: the gradient of ones
            slope = k.leaky_relu_backward(np.ones_like(x), x, self.slope)
        else:
            slope = get_array_module(x).where(x > 0, 1, self.slope).astype(g.data.dtype)
        return g * constant(slope)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """input where input > 0, negative_slope * input elsewhere (the gradient at 0 is negative_slope)."""
    if getattr(input, "is_quantized", False) is True:  # minidl.ao's quantized kernel
        return input._quantized_op("leaky_relu", negative_slope)
    _float_input("leaky_relu", input)
    fn = functools.partial(LeakyReLU.apply, negative_slope=float(negative_slope))
    return apply_in_place(input, fn, "leaky_relu") if inplace else fn(input)


class ELU(Function):
    def forward(self, x, alpha):
        xp = get_array_module(x)
        xw = _opmath(x)
        # expm1 of min(x, 0): exact near 0, and no overflow for large positive x
        y = xp.where(xw > 0, xw, alpha * xp.expm1(xp.minimum(xw, 0))).astype(x.dtype, copy=False)
        self.alpha = alpha
        self.save_for_backward(x, y)
        return y

    def backward(self, g):
        x, y = self.saved
        gw = _opmath(g)
        # below 0, d/dx alpha * (e^x - 1) = alpha * e^x = y + alpha
        # NaN takes the positive side, as in PyTorch (its test is x <= 0)
        gx = get_array_module(g).where(x <= 0, gw * (_opmath(y) + self.alpha), gw)
        return gx.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        # below 0 the derivative is out + alpha, itself differentiable through out
        return Where.apply(constant(~(self.inputs[0].data <= 0)), g, g * (out + self.alpha))


def elu(input, alpha=1.0, inplace=False):
    """input where input > 0, alpha * (exp(input) - 1) elsewhere."""
    _float_input("elu", input)
    fn = functools.partial(ELU.apply, alpha=float(alpha))
    return apply_in_place(input, fn, "elu") if inplace else fn(input)


class SiLU(Function):
    """x * sigmoid(x); only x is kept (the sigmoid is taken again in backward)."""

    def forward(self, x):
        self.save_for_backward(x)
        ks = pointwise_kernels(x)
        if ks is not None:
            return ks.activation_forward(x, generic.ACT_SILU)
        xw = _opmath(x)
        return (xw * stable_sigmoid(xw)).astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved
        ks = pointwise_kernels(x)
        if ks is not None and g.dtype == x.dtype and type(g) is type(x):
            return ks.activation_backward(g, x, generic.ACT_SILU)
        xw = _opmath(x)
        s = stable_sigmoid(xw)
        return (_opmath(g) * (s * (1 + xw * (1 - s)))).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        s = Sigmoid.apply(x)
        return g * (s * (1 + x * (1 - s)))


def silu(input, inplace=False):
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("silu", input)
    _float_input("silu", input)
    return apply_in_place(input, SiLU.apply, "silu") if inplace else SiLU.apply(input)


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_SQRT_2_OVER_PI = 0.7978845608028654
# erfc of any float dtype on any device (special.py): float64 to a few ulps, float32 by a
# Chebyshev fit with a relative error under 1.2e-7, the tail included (where GELU of a
# negative input is small and an absolute error would be all of it)
_erfc = erfc_array


def _gelu_parts(x, approximate):
    """(Phi, tanh term) of GELU for opmath-dtype x: Phi(x) for 'none', tanh(...) for 'tanh'."""
    xp = get_array_module(x)
    if approximate == "none":
        return 0.5 * _erfc(-x * _SQRT_HALF)
    return xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))


def _gelu_op(approximate):
    return generic.ACT_GELU if approximate == "none" else generic.ACT_GELU_TANH


class GELU(Function):
    def forward(self, x, approximate):
        self.approximate = approximate
        self.save_for_backward(x)
        ks = pointwise_kernels(x)
        if ks is not None:
            return ks.activation_forward(x, _gelu_op(approximate))
        xw = _opmath(x)
        part = _gelu_parts(xw, approximate)
        y = xw * part if approximate == "none" else 0.5 * xw * (1 + part)
        return y.astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved
        ks = pointwise_kernels(x)
        if ks is not None and g.dtype == x.dtype and type(g) is type(x):
            return ks.activation_backward(g, x, _gelu_op(self.approximate))
        xp = get_array_module(x)
        xw = _opmath(x)
        part = _gelu_parts(xw, self.approximate)
        if self.approximate == "none":  # Phi(x) + x * phi(x)
            d = part + xw * (_INV_SQRT_2PI * xp.exp(-0.5 * xw * xw))
        else:
            inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * xw * xw)
            d = 0.5 * (1 + part) + 0.5 * xw * (1 - part * part) * inner
        return (_opmath(g) * d).astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        if self.approximate == "none":  # Phi(x) + x * phi(x)
            d = (x * -_SQRT_HALF).erfc() * 0.5 + x * ((x * x) * -0.5).exp() * _INV_SQRT_2PI
        else:
            t = ((x + x * x * x * 0.044715) * _SQRT_2_OVER_PI).tanh()
            inner = (1 + x * x * (3 * 0.044715)) * _SQRT_2_OVER_PI
            d = (1 + t) * 0.5 + x * (1 - t * t) * inner * 0.5
        return g * d


def gelu(x, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF; approximate='tanh' is PyTorch's tanh form."""
    if getattr(x, "is_nested", False) is True:  # minidl.nested
        return x._nested_op("gelu", x, approximate=approximate)
    _float_input("gelu", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate=approximate)


def _softmax_dim(name, x, dim):
    """PyTorch's implicit dim where none is given (0 for 0-, 1- and 3-D inputs, 1 otherwise),
    with its warning; a given dim is checked against the input's dims."""
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated (PyTorch's "
                      f"rule picked dim {dim} for a {x.ndim}-D input); pass dim explicitly",
                      stacklevel=3)
        return dim
    return reduction_axes(dim, x.ndim)[0] if x.ndim else 0


def _softmax_input(name, x, dtype):
    """The input cast to ``dtype`` (torch's argument: an integer tensor, or float16 computed
    in float32); without it, an integer or bool input is refused as torch refuses it (its
    probabilities would be truncated to integers)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if dtype is not None:
        x = x.to(dtype)
    if not is_floating(x.data.dtype):
        raise TypeError(f"{name}: input must be a floating-point tensor, got {x.dtype}; pass "
                        f"dtype=minidl.float32 (or cast it with .float())")
    return x


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("softmax", input, dim, dtype=dtype)
    input = _softmax_input("softmax", input, dtype)
    return Softmax.apply(input, dim=_softmax_dim("softmax", input, dim))


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("log_softmax", input, dim, dtype=dtype)
    input = _softmax_input("log_softmax", input, dtype)
    return LogSoftmax.apply(input, dim=_softmax_dim("log_softmax", input, dim))


# ---- losses -----------------------------------------------------------------------------
class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood over class scores (N, C)."""

    graph_reads_all = True  # graph_backward reads the logits; backward, the saved softmax

    def forward(self, logits, target, reduction="mean"):
        dtype = logits.dtype
        wide = accumulation_dtype(logits)  # 16-bit logits: computed in float32, loss rounded
        if wide is not None:
            return self._forward(logits.astype(wide), target, reduction).astype(dtype)
        return self._forward(logits, target, reduction)

    def _forward(self, logits, target, reduction):
        fast = getattr(_kernels(logits), "softmax_cross_entropy", None)
        if fast is not None:
            losses, prob = fast(logits, target)
        else:
            xp = get_array_module(logits)
            logp = log_softmax_array(logits, 1)
            losses = -logp[xp.arange(logits.shape[0]), target]
            prob = xp.exp(logp)
        self.save_for_backward(prob, target)
        self.reduction = reduction
        if reduction == "mean":
            return losses.mean()
        if reduction == "sum":
            return losses.sum()
        return losses

    def backward(self, g):
        prob, target = self.saved
        n = prob.shape[0]
        fast = getattr(_kernels(prob), "softmax_cross_entropy_backward", None)
        if fast is not None:
            return fast(prob, target, g, n if self.reduction == "mean" else 1), None
        scale = {"mean": g / n, "sum": g}.get(self.reduction, g)
        xp = get_array_module(prob)
        grad = prob.copy()  # softmax - one_hot(target)
        grad[xp.arange(n), target] -= 1
        grad *= scale if self.reduction != "none" else scale[:, None]
        return grad, None

    def graph_backward(self, g, out):
        logits, target = self.inputs
        n = logits.shape[0]
        xp = get_array_module(logits.data)
        one_hot = xp.zeros(logits.shape, dtype=g.data.dtype)
        one_hot[xp.arange(n), target.data] = 1
        if self.reduction == "none":
            scale = g.reshape(n, 1)
        else:
            scale = g / n if self.reduction == "mean" else g
        prob = Softmax.apply(logits, dim=1)
        return (prob - constant(one_hot)) * scale, None


def _class_range(target):
    """(min, max) of the class indices. Reading them back from a GPU would stall every step, so
    labels copied there from the host (DataLoader batches, tensor(labels, device='cuda'),
    .to('cuda')) carry the range measured on the host; only labels computed on the GPU are read
    back."""
    known = getattr(target, "_host_range", None)
    if known is not None and known[0] is target.data:
        return known[1], known[2]
    return int(target.data.min()), int(target.data.max())


def _check_targets(name, logits, target, ignore_index=-100):
    """The target as a Tensor, checked, and whether some target is ``ignore_index`` (PyTorch
    leaves those rows out of the loss; its default -100 included)."""
    if not isinstance(target, Tensor):
        target = Tensor(target)
    if logits.ndim != 2:
        raise ValueError(f"{name}: logits must be 2-D (N, C), got shape {logits.shape}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != (logits.shape[0],):
        raise ValueError(f"{name}: target shape {target.shape} does not match logits "
                         f"{logits.shape}: expected ({logits.shape[0]},)")
    if target.device != logits.device:
        raise ValueError(f"{name}: logits are on {logits.device} and target on {target.device}; "
                         f"move the target with .to('{logits.device}')")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{name}: ignore_index must be an int, got {ignore_index!r}")
    classes = logits.shape[1]
    ignored = False
    if target.numel():
        lo, hi = _class_range(target)
        if lo < 0 or hi >= classes:
            data = target.data
            outside = data[(data != ignore_index) & ((data < 0) | (data >= classes))]
            if outside.size:
                raise ValueError(f"{name}: target class {int(outside[0])} is out of range for "
                                 f"{classes} classes (logits shape {logits.shape})")
            ignored = True
        elif 0 <= ignore_index < classes:
            ignored = bool((target.data == ignore_index).any())
    return target, ignored


def _class_weights(name, weight, logits):
    if weight is None:
        return None
    data = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
    if tuple(data.shape) != (logits.shape[1],) or not is_floating(data.dtype):
        raise ValueError(f"{name}: weight must be a float tensor of one value per class, shape "
                         f"({logits.shape[1]},), got {data.dtype} {tuple(data.shape)}")
    if device_of(data) != logits.device:
        raise ValueError(f"{name}: weight is on {device_of(data)}, logits on {logits.device}")
    return data


def _check_loss_options(name, reduction, label_smoothing=0.0):
    _check_reduction(name, reduction)
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing!r}")


def _picked_loss(logp, target, weight, ignore_index, reduction, label_smoothing=0.0):
    """PyTorch's nll_loss (and cross_entropy's label smoothing) from log-probabilities, with
    class weights and ignored rows, as ops on ``logp`` (autograd takes the gradient)."""
    xp = get_array_module(logp.data)
    t = target.data
    valid = t != ignore_index
    safe = xp.where(valid, t, 0)
    row_w = valid.astype(logp.data.dtype if weight is None else weight.dtype)
    if weight is not None:
        row_w = weight[safe] * row_w
    row_w = row_w.astype(channel_dtype(logp.data.dtype), copy=False)
    picked = logp[xp.arange(t.shape[0]), safe]
    losses = -picked * Tensor(row_w)
    if label_smoothing:
        per_class = logp if weight is None else logp * Tensor(weight)
        smooth = -per_class.sum(dim=1) * Tensor(valid.astype(row_w.dtype))
        losses = losses * (1.0 - label_smoothing) + smooth * (label_smoothing / logp.shape[1])
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    total = xp.asarray(row_w.sum())  # a 0-d array: a NumPy scalar would become float32
    # every row ignored: the loss is NaN and the gradient 0, as in PyTorch (0/0 would make the
    # gradient NaN too and poison the parameters). Rows kept but weighing 0 in all: the loss
    # and its gradient are NaN, as PyTorch's 0/0 (dividing by 1 gave a finite gradient of a
    # NaN loss, and label smoothing an infinite loss)
    empty = total == 0
    weightless = xp.logical_and(empty, valid.any())  # arrays: no device sync
    mean = losses.sum() / Tensor(xp.where(empty, 1, total).astype(total.dtype))
    mean = mean * Tensor(xp.where(weightless, np.nan, 1).astype(mean.data.dtype))
    return mean + Tensor(xp.where(empty, np.nan, 0).astype(mean.data.dtype))


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, C) against integer targets (N,), with PyTorch's
    options: class ``weight`` (C,), rows whose target is ``ignore_index`` left out, and
    ``label_smoothing``. Without them it is one fused op."""
    if logits.data.dtype.kind == "c":
        refuse_complex("cross_entropy", logits.data)
    _check_loss_options("cross_entropy", reduction, label_smoothing)
    target, ignored = _check_targets("cross_entropy", logits, target, ignore_index)
    w = _class_weights("cross_entropy", weight, logits)
    if w is None and not ignored and not label_smoothing:
        return CrossEntropy.apply(logits, target, reduction=reduction)
    (logits,) = _autocast_inputs("CrossEntropy", logits)
    logp = log_softmax(logits, dim=1)
    return _picked_loss(logp, target, w, ignore_index, reduction, float(label_smoothing))


def _check_reduction(name, reduction):
    if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    if log_probs.data.dtype.kind == "c":
        refuse_complex("nll_loss", log_probs.data)
    _check_reduction("nll_loss", reduction)
    target, ignored = _check_targets("nll_loss", log_probs, target, ignore_index)
    w = _class_weights("nll_loss", weight, log_probs)
    (log_probs,) = _autocast_inputs("nll_loss", log_probs)
    if w is not None or ignored:
        return _picked_loss(log_probs, target, w, ignore_index, reduction)
    rows = get_array_module(log_probs.data).arange(log_probs.shape[0])
    picked = -log_probs[rows, target.data]
    return {"mean": picked.mean, "sum": picked.sum}.get(reduction, lambda: picked)()


def mse_loss(input, target, reduction="mean"):
    for t in (input, target):
        if t.data.dtype.kind == "c":
            refuse_complex("mse_loss", t.data)
    _check_reduction("mse_loss", reduction)
    input, target = broadcast_loss_operands("mse_loss", input, target)
    input, target = _autocast_inputs("mse_loss", input, target)
    sq = (input - target) ** 2
    return {"mean": sq.mean, "sum": sq.sum}.get(reduction, lambda: sq)()


# The elementwise losses below are one Function each: the loss of every element, reduced, and
# in backward the element's derivative times the reduced loss's gradient, spread back.
def _reduce_loss(losses, reduction, dtype):
    """Mean or sum (in float32 for 16-bit, as PyTorch), or the losses; in ``dtype``."""
    if reduction == "mean":
        out = losses.mean(dtype=accumulation_dtype(losses))
    elif reduction == "sum":
        out = losses.sum(dtype=accumulation_dtype(losses))
    else:
        out = losses
    return get_array_module(losses).asarray(out).astype(dtype, copy=False)


def _spread_loss_grad(g, shape, reduction):
    """The reduced loss's gradient as one factor per element, in float32 for 16-bit g."""
    g = _opmath(g)
    if reduction == "none":
        return g
    n = int(np.prod(shape))
    return g / n if reduction == "mean" and n else g


def _spread_graph_grad(g, shape, reduction):
    """_spread_loss_grad on a Tensor ``g``, as a recorded op."""
    n = int(np.prod(shape))
    return g / n if reduction == "mean" and n else g


def _check_same_shape(name, input, target):
    for what, t in (("input", input), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
    if input.shape != target.shape:
        raise ValueError(f"{name}: target shape {target.shape} differs from input shape "
                         f"{input.shape}; they must be the same")
    if input.device != target.device:
        raise ValueError(f"{name}: input is on {input.device} and target on {target.device}")
    for what, t in (("input", input), ("target", target)):
        if not is_floating(t.data.dtype):
            raise TypeError(f"{name}: {what} must be a floating-point tensor, got {t.dtype}")


def _elementwise_weight(name, what, weight, input):
    """A weight that broadcasts to the input's shape, as an array on its device (no gradient:
    PyTorch's losses are not differentiable in it either)."""
    if weight is None:
        return None
    data = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
    if not is_floating(data.dtype):
        raise TypeError(f"{name}: {what} must be a floating-point tensor, got {data.dtype}")
    try:
        fits = np.broadcast_shapes(tuple(data.shape), input.shape) == input.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name}: {what} of shape {tuple(data.shape)} does not broadcast to "
                         f"the input's shape {input.shape}")
    if device_of(data) != input.device:
        raise ValueError(f"{name}: {what} is on {device_of(data)}, input on {input.device}")
    return data


class BinaryCrossEntropy(Function):
    """-(t log x + (1 - t) log(1 - x)), each log clamped at -100 as PyTorch does, so x = 0 or
    1 gives a finite loss; the gradient's denominator x (1 - x) is kept from 0 by 1e-12."""

    def forward(self, x, t, weight=None, reduction="mean"):
        xp = get_array_module(x)
        xw, tw = _opmath(x), _opmath(t)
        log_x, log_1mx = self._logs(xw)
        losses = -(tw * log_x + (1 - tw) * log_1mx)
        if weight is not None:
            losses = losses * weight.astype(losses.dtype, copy=False)
        self.weight, self.reduction = weight, reduction
        self.save_for_backward(x, t)
        return _reduce_loss(losses, reduction, xp.result_type(x, t))

    @staticmethod
    def _logs(xw):
        xp = get_array_module(xw)
        with np.errstate(divide="ignore"):
            return xp.maximum(xp.log(xw), -100), xp.maximum(xp.log1p(-xw), -100)

    def backward(self, g):
        x, t = self.saved
        xp = get_array_module(x)
        xw, tw = _opmath(x), _opmath(t)
        scale = _spread_loss_grad(g, x.shape, self.reduction)
        if self.weight is not None:
            scale = scale * self.weight.astype(xw.dtype, copy=False)
        gx = gt = None
        if _needs_grad(self, 0):
            gx = (scale * (xw - tw) / xp.maximum(xw * (1 - xw), 1e-12)).astype(x.dtype, copy=False)
        if _needs_grad(self, 1):
            log_x, log_1mx = self._logs(xw)
            gt = (scale * (log_1mx - log_x)).astype(t.dtype, copy=False)
        return gx, gt

    def graph_backward(self, g, out):
        x, t = self.inputs
        scale = _spread_graph_grad(g, x.shape, self.reduction)
        if self.weight is not None:
            scale = scale * constant(self.weight.astype(g.data.dtype, copy=False))
        gx = gt = None
        if x.requires_grad:
            gx = scale * (x - t) / (x * (1 - x)).clamp(min=1e-12)
        if t.requires_grad:
            gt = scale * ((1 - x).log().clamp(min=-100) - x.log().clamp(min=-100))
        return gx, gt


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities ``input`` in [0, 1] against ``target`` in [0, 1]
    (same shape); ``weight`` broadcasts to the input and scales each element's loss."""
    name = "binary_cross_entropy"
    _check_reduction(name, reduction)
    _check_same_shape(name, input, target)
    if input.data.dtype != target.data.dtype and autocast_hook() is None:
        raise TypeError(f"{name}: input is {input.dtype} and target {target.dtype}; PyTorch "
                        "refuses the mix too: cast the target with .to(input.dtype)")
    w = _elementwise_weight(name, "weight", weight, input)
    for what, t in (("input", input), ("target", target)):
        if t.numel():
            lo, hi = float(t.data.min()), float(t.data.max())
            if not (0.0 <= lo and hi <= 1.0):  # NaN fails too
                raise ValueError(f"{name}: every element of the {what} must be between 0 and 1, "
                                 f"got values in [{lo}, {hi}]")
    return BinaryCrossEntropy.apply(input, target, weight=w, reduction=reduction)


class BinaryCrossEntropyWithLogits(Function):
    """Binary cross-entropy of sigmoid(x): (1 - t) softplus(x) + pos_weight t softplus(-x),
    with softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)): exp never overflows, and the terms
    are never subtracted, so the loss keeps its digits at any |x| (softplus(-100) = 3.7e-44)."""

    def forward(self, x, t, weight=None, pos_weight=None, reduction="mean"):
        xp = get_array_module(x)
        xw, tw = _opmath(x), _opmath(t)
        tail = xp.log1p(xp.exp(-abs(xw)))
        neg = (1 - tw) * (xp.maximum(xw, 0) + tail)     # -(1 - t) log(1 - sigmoid(x))
        pos = tw * (xp.maximum(-xw, 0) + tail)          # -t log sigmoid(x)
        if pos_weight is not None:
            pos *= pos_weight.astype(xw.dtype, copy=False)
        losses = neg + pos
        if weight is not None:
            losses *= weight.astype(xw.dtype, copy=False)
        self.weight, self.pos_weight, self.reduction = weight, pos_weight, reduction
        self.save_for_backward(x, t)
        return _reduce_loss(losses, reduction, xp.result_type(x, t))

    def backward(self, g):
        x, t = self.saved
        xp = get_array_module(x)
        xw, tw = _opmath(x), _opmath(t)
        scale = _spread_loss_grad(g, x.shape, self.reduction)
        if self.weight is not None:
            scale = scale * self.weight.astype(xw.dtype, copy=False)
        pw = None if self.pos_weight is None else self.pos_weight.astype(xw.dtype, copy=False)
        gx = gt = None
        if _needs_grad(self, 0):
            s = stable_sigmoid(xw)
            d = s - tw if pw is None else s * (1 - tw + pw * tw) - pw * tw
            gx = (scale * d).astype(x.dtype, copy=False)
        if _needs_grad(self, 1):
            if pw is None:
                d = -xw      # softplus(-x) - softplus(x)
            else:
                tail = xp.log1p(xp.exp(-abs(xw)))
                d = pw * (xp.maximum(-xw, 0) + tail) - (xp.maximum(xw, 0) + tail)
            gt = (scale * d).astype(t.dtype, copy=False)
        return gx, gt

    def graph_backward(self, g, out):
        x, t = self.inputs
        scale = _spread_graph_grad(g, x.shape, self.reduction)
        if self.weight is not None:
            scale = scale * constant(self.weight.astype(g.data.dtype, copy=False))
        pw = None if self.pos_weight is None else \
            constant(self.pos_weight.astype(g.data.dtype, copy=False))
        gx = gt = None
        if x.requires_grad:
            s = Sigmoid.apply(x)
            gx = scale * (s - t if pw is None else s * (1 - t + pw * t) - pw * t)
        if t.requires_grad:
            if pw is None:
                gt = scale * -x
            else:
                gt = scale * (pw * Softplus.apply(-x) - Softplus.apply(x))
        return gx, gt


class Softplus(Function):
    """log(1 + e^x) as max(x, 0) + log1p(e^-|x|): no overflow, and all its digits for x << 0
    (the distributions' softplus, and the losses' and activations' double backward)."""

    def forward(self, x):
        xp = get_array_module(x)
        self.save_for_backward(x)
        return (xp.maximum(x, 0) + xp.log1p(xp.exp(-abs(x)))).astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved
        return g * stable_sigmoid(x)

    def graph_backward(self, g, out):
        return g * Sigmoid.apply(self.inputs[0])


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    """Binary cross-entropy of sigmoid(input), stable for any |input|. ``weight`` broadcasts
    to the input; ``pos_weight`` (one value per class, the last dim) weighs the positive term.
    """
    name = "binary_cross_entropy_with_logits"
    _check_reduction(name, reduction)
    _check_same_shape(name, input, target)
    w = _elementwise_weight(name, "weight", weight, input)
    pw = _elementwise_weight(name, "pos_weight", pos_weight, input)
    return BinaryCrossEntropyWithLogits.apply(input, target, weight=w, pos_weight=pw,
                                              reduction=reduction)


class L1Loss(Function):
    def forward(self, x, t, reduction="mean"):
        d = _opmath(x) - _opmath(t)
        self.sign = get_array_module(d).sign(d)  # the gradient: 0 where x == t, as PyTorch
        self.reduction, self.shape = reduction, d.shape
        return _reduce_loss(abs(d), reduction, get_array_module(x).result_type(x, t))

    def backward(self, g):
        gd = _spread_loss_grad(g, self.shape, self.reduction) * self.sign
        return gd, -gd

    def graph_backward(self, g, out):
        gd = _spread_graph_grad(g, self.shape, self.reduction) * constant(
            self.sign.astype(g.data.dtype, copy=False))
        return gd, -gd


class SmoothL1Loss(Function):
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (beta = 0: the L1 loss)."""

    def forward(self, x, t, reduction="mean", beta=1.0):
        xp = get_array_module(x)
        d = _opmath(x) - _opmath(t)
        ad = abs(d)
        if beta == 0:
            losses = ad
        else:
            losses = xp.where(ad < beta, (0.5 / beta) * d * d, ad - 0.5 * beta)
        self.reduction, self.beta = reduction, beta
        self.save_for_backward(x, t)
        return _reduce_loss(losses, reduction, xp.result_type(x, t))

    def backward(self, g):
        x, t = self.saved
        xp = get_array_module(x)
        d = _opmath(x) - _opmath(t)
        slope = xp.sign(d) if self.beta == 0 else \
            xp.where(abs(d) < self.beta, d / self.beta, xp.sign(d))
        gd = _spread_loss_grad(g, d.shape, self.reduction) * slope
        return gd, -gd

    def graph_backward(self, g, out):
        x, t = self.inputs
        xp = get_array_module(x.data)
        d = x.data - t.data
        sign = constant(xp.sign(d).astype(g.data.dtype, copy=False))
        if self.beta == 0:
            slope = sign
        else:
            slope = Where.apply(constant(abs(d) < self.beta), (x - t) / self.beta, sign)
        gd = _spread_graph_grad(g, d.shape, self.reduction) * slope
        return gd, -gd


def broadcast_loss_operands(name, input, target, stacklevel=3):
    """(input, target) of a regression loss (mse, l1, smooth_l1, huber) as torch takes them: a
    target of another shape warns, as torch's does, and both are broadcast (the actor-critic
    example's ``smooth_l1_loss(value, torch.tensor([R]))``); shapes that do not broadcast are
    an error naming both."""
    for what, t in (("input", input), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
    if input.shape == target.shape:
        return input, target
    try:
        shape = np.broadcast_shapes(input.shape, target.shape)
    except ValueError:
        raise ValueError(f"{name}: input shape {input.shape} and target shape {target.shape} "
                         "differ and do not broadcast") from None
    warnings.warn(f"Using a target size ({_size(target.shape)}) that is different to the input "
                  f"size ({_size(input.shape)}). This will likely lead to incorrect results due "
                  "to broadcasting. Please ensure they have the same size.", UserWarning,
                  stacklevel=stacklevel)
    return input.expand(shape), target.expand(shape)


def _size(shape):
    return f"minidl.Size({list(shape)})"  # as minidl.Size prints (runtime is a layer above)


def _check_regression_loss(name, input, target, reduction):
    _check_reduction(name, reduction)
    input, target = broadcast_loss_operands(name, input, target, stacklevel=5)
    _check_same_shape(name, input, target)
    return input, target


def l1_loss(input, target, reduction="mean"):
    """Mean (or sum, or each) of |input - target|; shapes must match (as in mse_loss)."""
    input, target = _check_regression_loss("l1_loss", input, target, reduction)
    return L1Loss.apply(input, target, reduction=reduction)


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    input, target = _check_regression_loss("smooth_l1_loss", input, target, reduction)
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be a number >= 0, got {beta!r}")
    return SmoothL1Loss.apply(input, target, reduction=reduction, beta=float(beta))


# ---- batch norm -------------------------------------------------------------------------
class BatchNorm(Function):
    """Training mode (batch statistics) runs the kernel set's fused passes and keeps only x and
    two numbers per channel for backward; x is alive anyway as this op's input, so nothing the
    size of an activation is added. Eval mode is one affine map per channel."""

    def forward(self, x, *weight_bias, has_weight, has_bias, running_mean=None, running_var=None,
                training=False, momentum=0.1, eps=1e-5, relu=False, tracked=None):
        wb = list(weight_bias)
        w = wb.pop(0) if has_weight else None
        b = wb.pop(0) if has_bias else None
        self.batch_stats = training or running_mean is None
        self.has_weight, self.has_bias, self.relu = has_weight, has_bias, relu
        self.eps = eps
        k = _kernels(x)
        if self.batch_stats:
            train = getattr(k, "batch_norm_train", generic.batch_norm_train)
            update = training and running_mean is not None
            counted = {} if tracked is None else {"tracked": tracked}
            y, mean, invstd = train(x, w, b, running_mean if update else None,
                                    running_var if update else None, momentum, eps, relu,
                                    **counted)
            # y is kept only when a fused ReLU needs its sign (it is the next op's input anyway)
            self.save_for_backward(x, y if relu else None, mean, invstd, w)
            return y
        mean, var = running_mean, running_var
        fused = getattr(k, "batch_norm_eval", None)
        if fused is not None:  # CUDA: the per-channel numbers and the pass over x, two launches
            y, inv_std = fused(x, mean, var, w, b, eps, relu)
            self.save_for_backward(x, y if relu else None, mean, inv_std, w)
            return y
        xp = get_array_module(x)
        pdt = channel_dtype(x.dtype)  # float32 beside 16-bit x (mixed precision)
        inv_std = (1 / xp.sqrt(var + eps)).astype(pdt, copy=False)
        # Eval mode is one affine map per channel, y = x * scale + shift (what PyTorch's CPU
        # kernel computes too): one pass over x (with the ReLU fused in), and no xhat kept
        # unless a weight gradient asks for it in backward.
        scale = inv_std * w if w is not None else inv_std
        shift = -mean.astype(pdt, copy=False) * scale
        if b is not None:
            shift = shift + b
        y = getattr(k, "channel_affine", generic.channel_affine)(x, scale, shift, relu)
        self.save_for_backward(x, y if relu else None, mean, inv_std, w)
        return y

    def backward(self, g):
        x, y, mean, inv_std, w = self.saved
        if self.batch_stats:
            k = _kernels(g)
            grad = getattr(k, "batch_norm_backward", generic.batch_norm_backward)
            gx, gw, gb = grad(g, x, y, mean, inv_std, w, self.relu)
        else:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            axes = (0,) if x.ndim == 2 else (0,) + tuple(range(2, x.ndim))
            if self.relu:
                g = g * (y > 0)
            scale = inv_std * w if w is not None else inv_std
            gx = (g * scale.reshape(shape)).astype(x.dtype, copy=False)
            gw = gb = None
            if self.has_weight and _needs_grad(self, 1):
                xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
                gw = (g * xhat).sum(axis=axes)
            if self.has_bias:
                gb = g.astype(inv_std.dtype, copy=False).sum(axis=axes)
        grads = [gx]
        if self.has_weight:
            grads.append(gw)
        if self.has_bias:
            grads.append(gb)
        return tuple(grads)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        axes = (0,) if x.ndim == 2 else (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.relu:
            g = keep_where(out.data > 0, g)
        if self.batch_stats:
            return _normalization_graph_grads(self, g, axes, axes, shape, self.eps)
        # eval mode: an affine map per channel, with the running statistics as constants
        _, _, mean, inv_std, _ = self.saved
        rest = list(self.inputs[1:])
        w = rest.pop(0) if self.has_weight else None
        b = rest.pop(0) if self.has_bias else None
        inv = constant(inv_std).reshape(shape)
        grads = [(g * (inv * w.reshape(shape)) if w is not None else g * inv)
                 if x.requires_grad else None]
        if w is not None:
            xhat = (x - constant(mean).reshape(shape)) * inv
            grads.append((g * xhat).sum(dim=axes) if w.requires_grad else None)
        if b is not None:
            grads.append(g.sum(dim=axes) if b.requires_grad else None)
        return tuple(grads)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalise over every dim but the channel dim (1). In training, batch statistics are
    used and the running ones (Tensors, updated in place) follow them with ``momentum``."""
    if input.data.dtype.kind == "c":
        refuse_complex("batch_norm", input.data)
    _eval_needs_stats("batch_norm", running_mean, running_var, training)
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _eval_needs_stats(name, running_mean, running_var, training):
    """torch's check: evaluation normalises with the running statistics, so they must be
    given (without them the batch's own statistics were used, silently)."""
    if not training:
        for what, t in (("running_mean", running_mean), ("running_var", running_var)):
            if t is None:
                raise RuntimeError(f"{name}: {what} must be defined in evaluation mode "
                                   f"(training=False); pass the running statistics, or "
                                   f"training=True to normalise with the batch's")


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    """``relu(batch_norm(...))`` in one op (a minidl extension; PyTorch fuses the pair inside
    cuDNN/oneDNN): one pass over the activation instead of two, and one array fewer."""
    _eval_needs_stats("batch_norm_relu", running_mean, running_var, training)
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                       relu=True)


def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, relu=False,
                tracked=None):
    """batch_norm (and batch_norm_relu); ``tracked``: a BatchNorm layer's num_batches_tracked
    array, which gets 1 added (in the kernel where the kernel set can)."""
    xd = x.data
    shape = xd.shape
    if len(shape) not in (2, 3, 4, 5):
        raise ValueError(f"batch_norm: input must be 2-D to 5-D with channels in dim 1, got {x.shape}")
    c = shape[1]
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    for name, t in (("running_mean", rm), ("running_var", rv), ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(t.shape)}, input {x.shape} "
                             f"has {c} channels")
    if momentum is None:
        raise ValueError("batch_norm: momentum=None (a cumulative average of the batch "
                         "statistics) needs the batch count: use nn.BatchNorm2d(momentum=None)")
    if training and xd.size and xd.size // c <= 1:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got {x.shape}")
    if not is_floating(xd.dtype):  # before the running statistics move, as torch refuses it
        raise TypeError(f"batch_norm: input must be a floating-point tensor, got {x.dtype}")
    if training and not eps > 0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if not eps >= 0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if xd.size == 0:  # an empty batch: an empty result, the running statistics as they were
        if tracked is not None and training and rm is not None:
            tracked += 1  # torch counts the batch all the same
        return x * 1.0
    for name, t in (("running_mean", rm), ("running_var", rv)):
        # arrays of the input's own type are on its device; compare names only otherwise
        if t is not None and type(t) is not type(xd) and device_of(t) != x.device:
            raise ValueError(f"batch_norm: {name} is on {device_of(t)}, input on {x.device}; "
                             f"move the module with .to('{x.device}')")
    if xd.dtype.itemsize == 2 and is_low_precision(xd.dtype) and \
            not getattr(_kernels(xd), "batch_norm_16bit", False):
        # mixed precision where the kernels take only one dtype (the CPU): statistics and
        # normalisation in float32 on a float32 copy. CUDA's kernels read the 16-bit
        # activations as they are and keep the per-channel numbers in float32.
        return _batch_norm(x.float(), running_mean, running_var, weight, bias, training, momentum,
                           eps, relu, tracked).astype(x.dtype)
    if weight is None:
        tensors = (x,) if bias is None else (x, bias)
    else:
        tensors = (x, weight) if bias is None else (x, weight, bias)
    if tracked is not None and not (training and rm is not None and getattr(
            _kernels(xd), "batch_norm_counts_batches", False)):
        tracked += 1  # the kernel set does not count batches (or no running statistics move)
        tracked = None
    return BatchNorm.apply(*tensors, has_weight=weight is not None, has_bias=bias is not None,
                           running_mean=rm, running_var=rv, training=training,
                           momentum=momentum, eps=eps, relu=relu, tracked=tracked)


# ---- layer norm -------------------------------------------------------------------------
class LayerNorm(Function):
    """Normalise over the last ``ndim`` dims. The variance is the mean of (x - mean)^2, never
    E[x^2] - E[x]^2, which cancels to noise when the mean is large against the spread. Only
    x and two numbers per row are kept for backward; x is alive anyway as this op's input.
    16-bit inputs are computed in float32 (also beside float32 weights) and rounded."""

    fast = None  # the CPU kernel set, when its row kernels ran forward

    def forward(self, x, *weight_bias, ndim, eps, has_weight, has_bias):
        xp = get_array_module(x)
        axes = tuple(range(x.ndim - ndim, x.ndim))
        self.eps = eps
        ks = row_kernels(x, -1)
        if ks is not None and ks.rows_fit(x, *weight_bias):
            wb = list(weight_bias)
            w = wb.pop(0) if has_weight else None
            b = wb.pop(0) if has_bias else None
            cols = int(np.prod(x.shape[x.ndim - ndim:]))
            y, mean, rstd = ks.layer_norm_forward(x.reshape(-1, cols), w, b, eps)
            self.fast, self.axes, self.has_weight, self.has_bias = ks, axes, has_weight, has_bias
            self.save_for_backward(x, mean, rstd, w)
            return y.reshape(x.shape)
        xw = _opmath(x)
        mean = xw.mean(axis=axes, keepdims=True)
        xc = xw - mean
        rstd = 1 / xp.sqrt((xc * xc).mean(axis=axes, keepdims=True) + eps)
        y = xc * rstd
        wb = list(weight_bias)
        w = wb.pop(0) if has_weight else None
        b = wb.pop(0) if has_bias else None
        if w is not None:
            y *= w
        if b is not None:
            y += b
        self.axes, self.has_weight, self.has_bias = axes, has_weight, has_bias
        self.save_for_backward(x, mean, rstd, w)
        return y.astype(x.dtype, copy=False)

    def backward(self, g):
        x, mean, rstd, w = self.saved
        axes = self.axes
        if self.fast is not None:
            shape = x.shape[x.ndim - len(axes):]
            cols = int(np.prod(shape))
            gx, gw, gb = self.fast.layer_norm_backward(
                g.astype(x.dtype, copy=False).reshape(-1, cols), x.reshape(-1, cols), w, mean,
                rstd, want_gx=_needs_grad(self, 0))
            grads = [None if gx is None else gx.reshape(x.shape)]
            if self.has_weight:
                grads.append(gw.reshape(shape))
            if self.has_bias:
                grads.append(gb.reshape(shape))
            return tuple(grads)
        lead = tuple(range(x.ndim - len(axes)))  # the dims the parameters are shared over
        xhat = (_opmath(x) - mean) * rstd
        gw_ = _opmath(g)
        grads = []
        gxhat = gw_ * w if w is not None else gw_
        if _needs_grad(self, 0):
            gx = rstd * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                         - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
            grads.append(gx.astype(x.dtype, copy=False))
        else:
            grads.append(None)
        if self.has_weight:
            grads.append((gw_ * xhat).sum(axis=lead))
        if self.has_bias:
            grads.append(gw_.sum(axis=lead))
        return tuple(grads)

    def graph_backward(self, g, out):
        x = self.inputs[0]
        axes = self.axes
        lead = tuple(range(x.ndim - len(axes)))
        return _normalization_graph_grads(self, g, axes, lead, x.shape[len(lead):],
                                          self.eps)


def _shape_tuple(name, what, shape):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        return (int(shape),)
    try:
        out = tuple(shape)
    except TypeError:
        raise TypeError(f"{name}: {what} must be an int or a sequence of ints, got "
                        f"{shape!r}") from None
    return tuple(_whole(n, f"{name}: {what}", shape) for n in out)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last len(normalized_shape) dims, then scale by ``weight`` and shift
    by ``bias`` (each of shape normalized_shape), as PyTorch's layer_norm."""
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("layer_norm", input, normalized_shape, weight, bias, eps)
    name = "layer_norm"
    _float_input(name, input)
    shape = _shape_tuple(name, "normalized_shape", normalized_shape)
    if not shape or input.shape[input.ndim - len(shape):] != shape or len(shape) > input.ndim:
        raise ValueError(f"{name}: normalized_shape {shape} must be the last dims of the "
                         f"input, got input of shape {input.shape}")
    for what, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: {what} has shape {tuple(t.shape)}, expected "
                             f"normalized_shape {shape}")
        if t.device != input.device:
            raise ValueError(f"{name}: {what} is on {t.device}, input on {input.device}")
        dt, pdt = input.data.dtype, t.data.dtype
        # PyTorch takes float32 parameters beside 16-bit input (mixed precision), no other mix
        if dt != pdt and not (is_low_precision(dt) and pdt == np.float32) \
                and autocast_hook() is None:
            raise TypeError(f"{name}: input is {input.dtype} and {what} {t.dtype}; cast one "
                            f"to the other's dtype")
    tensors = [input] + [t for t in (weight, bias) if t is not None]
    return LayerNorm.apply(*tensors, ndim=len(shape), eps=float(eps),
                           has_weight=weight is not None, has_bias=bias is not None)


# ---- dropout ----------------------------------------------------------------------------
def dropout_mask(x, p):
    """Dropout's multiplier for an array like x: 0 with probability p, else 1 / (1 - p), drawn
    from the global generator (``manual_seed``) as every dropout in minidl draws it."""
    xp = get_array_module(x)
    if xp is np:  # torch's bernoulli_(1 - p) draws
        keep = backend.torch_random.bernoulli(backend.default_generator, x.shape, 1 - p)
    else:
        keep = xp.random.random_sample(x.shape, dtype=xp.float32) >= p
    return keep.astype(x.dtype) / (1 - p)


class Dropout(Function):
    def forward(self, x, p):
        self.mask = dropout_mask(x, p)
        return x * self.mask

    def backward(self, g):
        return g * self.mask

    def graph_backward(self, g, out):
        return g * constant(self.mask)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only);
    ``inplace=True`` writes the result into input under the in-place rules."""
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("dropout", input, p, training, inplace)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    if input.data.dtype.kind in "biu":  # the kept values are scaled by 1/(1-p): floats only
        if p == 1:
            return input.zero_() if inplace else Tensor(get_array_module(input.data).zeros_like(
                input.data))
        raise TypeError(f"dropout: input must be a floating-point tensor in training with "
                        f"0 < p < 1 (the kept values are scaled by 1/(1-p)), got {input.dtype}")
    if inplace:
        return apply_in_place(input, lambda t: dropout(t, p, training), "dropout")
    if p == 1:
        return input * 0.0
    return Dropout.apply(input, p=p)


def flatten(x, start_dim=0, end_dim=-1):
    return x.flatten(start_dim, end_dim)


# ---- indices: one_hot, embedding; padding -----------------------------------------------
class IndexRangeError(IndexError, ValueError):
    """An index out of range: an IndexError as in PyTorch's embedding, and a ValueError as
    minidl's other argument errors."""


def _index_tensor(name, t, what="input"):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor of integer indices, got "
                        f"{type(t).__name__}")
    if t.data.dtype.kind not in "iu":
        raise TypeError(f"{name}: {what} must hold integer indices, got dtype {t.dtype}")


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape tensor.shape + (num_classes,), 1 at each index and 0 elsewhere;
    num_classes=-1 takes the largest index + 1. Not differentiable (as in PyTorch)."""
    _index_tensor("one_hot", tensor)
    if tensor.data.dtype != np.int64:
        raise TypeError(f"one_hot: input must be an int64 tensor (as in PyTorch), got "
                        f"{tensor.dtype}; cast it with .long()")
    num_classes = _whole(num_classes, "one_hot: num_classes")
    if num_classes < -1:
        raise ValueError(f"one_hot: num_classes must be -1 (inferred) or >= 0, got {num_classes}")
    data = tensor.data
    if data.size:
        lo, hi = _class_range(tensor)
        if lo < 0:
            raise IndexRangeError(f"one_hot: class values must be non-negative, got {lo}")
        if num_classes == -1:
            num_classes = hi + 1
        elif hi >= num_classes:
            raise IndexRangeError(f"one_hot: class value {hi} is out of range for "
                                  f"num_classes={num_classes}")
    elif num_classes == -1:
        raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass it")
    xp = get_array_module(data)
    return Tensor(data[..., None] == xp.arange(num_classes), dtype=np.int64)


class Embedding(Function):
    """Rows of the weight picked by integer indices. In backward the rows' gradients are
    added into a gradient of the weight's shape, so an index that repeats gets their sum; the
    padding row gets none."""

    def forward(self, weight, indices, padding_idx=None, scale=None):
        self.indices, self.padding_idx = indices, padding_idx
        self.scale = scale  # scale_grad_by_freq: 1 / (how often each index comes), per index
        self.weight_shape = weight.shape
        return get_array_module(weight).take(weight, indices, axis=0)

    def backward(self, g):
        xp = get_array_module(g)
        wide = accumulation_dtype(g)  # 16-bit rows are summed in float32
        rows = g.reshape(-1, g.shape[-1]).astype(wide or g.dtype, copy=False)
        if self.scale is not None:
            rows = rows * self.scale.reshape(-1, 1).astype(rows.dtype)
        gw = xp.zeros(self.weight_shape, dtype=rows.dtype)
        _add_rows(gw, self.indices.reshape(-1), rows)
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw.astype(g.dtype, copy=False)

    def graph_backward(self, g, out):
        return EmbeddingGrad.apply(g, op=copy.copy(self))


class SparseEmbedding(Embedding):
    """Embedding whose weight gradient is sparse: one entry per looked-up index (repeats kept,
    the padding row's left out), its row of the output's gradient as values."""

    def backward(self, g):
        xp = get_array_module(g)
        index = self.indices.reshape(-1).astype(xp.int64)
        rows = g.reshape(-1, g.shape[-1])
        if self.padding_idx is not None:
            keep = index != self.padding_idx
            index, rows = index[keep], rows[keep]
        else:
            rows = rows.copy()  # g may be a view another gradient shares
        return SparseCOO(index[None], rows, self.weight_shape)

    def graph_backward(self, g, out):
        return first_order_only(self, g)

    def name(self):
        return "EmbeddingBackward"


class EmbeddingGrad(Function):
    """Embedding's weight gradient as an op (for double backward): the rows of ``g`` added
    into zeros of the weight's shape (Embedding's backward); its own gradient reads those rows
    back, 0 where the index is the padding row (which got no gradient)."""

    def forward(self, g, op):
        self.op = op
        return op.backward(g)

    def backward(self, h):
        rows = get_array_module(h).take(h, self.op.indices, axis=0)
        if self.op.padding_idx is not None:
            rows = rows * (self.op.indices != self.op.padding_idx)[..., None]
        # no scale_grad_by_freq here: the gradient it scales is not the lookup's derivative,
        # and the path back to the weight passes Embedding's backward, which scales once (as
        # torch's embedding_dense_double_backward, and finite differences of the gradient)
        return rows

    def graph_backward(self, h, out):
        op = self.op
        rows = Embedding.apply(h, indices=op.indices)
        if op.padding_idx is None:
            return rows
        return keep_where((op.indices != op.padding_idx)[..., None], rows)


def _add_rows(out, index, rows):
    """out[index[i]] += rows[i], with repeated indices summed."""
    xp = get_array_module(out)
    if xp is np and out.dtype in (np.float32, np.float64) and rows.dtype == out.dtype:
        fast = getattr(backend.kernels(np), "add_rows", None)
        if fast is not None:  # numba: ufunc.at is several times slower on rows
            fast(out, index, rows)
            return
    if xp is np or hasattr(xp.add, "at"):
        xp.add.at(out, index, rows)
    else:  # CuPy before 12
        import cupyx

        cupyx.scatter_add(out, index, rows)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """weight[input]: for integer indices of any shape, rows of weight (num_embeddings,
    embedding_dim), shape input.shape + (embedding_dim,). The row ``padding_idx`` gets no
    gradient. ``max_norm``: the rows looked up whose ``norm_type``-norm exceeds it are first
    scaled down to it, in place in ``weight`` (as torch's embedding_renorm_);
    ``scale_grad_by_freq``: each row's gradient is divided by how often its index comes in
    ``input``. With ``sparse=True`` the weight's gradient is a sparse COO tensor whose rows are
    the looked-up indices (uncoalesced, the padding row left out), as torch's."""
    if getattr(input, "is_nested", False) is True:  # minidl.nested
        return input._nested_op("embedding", input, weight, padding_idx, max_norm, norm_type,
                                scale_grad_by_freq, sparse)
    name = "embedding"
    _index_tensor(name, input)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"{name}: weight must be a 2-D Tensor (num_embeddings, embedding_dim), "
                         f"got {getattr(weight, 'shape', type(weight).__name__)}")
    if input.device != weight.device:
        raise ValueError(f"{name}: input is on {input.device} and weight on {weight.device}")
    n = weight.shape[0]
    if padding_idx is not None:
        padding_idx = _whole(padding_idx, f"{name}: padding_idx")
        if not -n <= padding_idx < n:
            raise ValueError(f"{name}: padding_idx {padding_idx} is out of range for "
                             f"{n} embeddings")
        padding_idx %= n
    if input.numel():
        lo, hi = _class_range(input)
        if lo < 0 or hi >= n:
            raise IndexRangeError(f"{name}: index {lo if lo < 0 else hi} is out of range for "
                                  f"{n} embeddings (weight shape {weight.shape})")
    if sparse and scale_grad_by_freq:
        raise ValueError(f"{name}: scale_grad_by_freq is not supported with sparse gradients "
                         f"(as in torch); use one or the other")
    indices = input.data
    if max_norm is not None and indices.size:
        _renorm_rows_(weight, indices, float(max_norm), float(norm_type))
    scale = None
    if scale_grad_by_freq and indices.size:
        xp = get_array_module(indices)
        counts = xp.bincount(indices.reshape(-1), minlength=n)
        scale = 1.0 / xp.take(counts, indices).astype(np.float64)
    op = SparseEmbedding if sparse else Embedding
    return op.apply(weight, indices=indices, padding_idx=padding_idx, scale=scale)


def _renorm_rows_(weight, indices, max_norm, norm_type):
    """torch's embedding_renorm_: each row looked up whose norm_type-norm exceeds max_norm
    is scaled to max_norm / (norm + 1e-7) of itself, in place and outside the graph."""
    xp = get_array_module(weight.data)
    rows = xp.unique(indices.reshape(-1))
    sel = weight.data[rows]
    wide = sel.astype(np.float64) if sel.dtype.itemsize < 8 else sel
    if norm_type == float("inf"):
        norms = xp.abs(wide).max(axis=1)
    elif norm_type == 0:
        norms = (wide != 0).sum(axis=1).astype(wide.dtype)
    else:
        norms = (xp.abs(wide) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    over = norms > max_norm
    if bool(over.any()):
        scale = max_norm / (norms[over] + 1e-7)
        weight.data[rows[over]] = (wide[over] * scale[:, None]).astype(sel.dtype)
        bump_version(weight)  # a graph that saved the old rows refuses its backward, as torch


class Pad(Function):
    """Constant padding; a negative amount crops. Input element i of a dim lands at i + lo
    of the output, so forward and backward are one slice assignment each."""

    complex_grad = True  # linear in x (the fill value is a constant)

    def forward(self, x, widths, value):
        src, dst, shape = [], [], []
        for n, (lo, hi) in zip(x.shape, widths):
            m = n + lo + hi
            start, stop = max(0, -lo), min(n, m - lo)
            src.append(slice(start, max(start, stop)))
            dst.append(slice(start + lo, max(start, stop) + lo))
            shape.append(m)
        self.src, self.dst, self.in_shape = tuple(src), tuple(dst), x.shape
        self.widths = widths
        out = get_array_module(x).full(tuple(shape), value, dtype=x.dtype)
        out[self.dst] = x[self.src]
        return out

    def backward(self, g):
        gx = get_array_module(g).zeros(self.in_shape, dtype=g.dtype)
        gx[self.src] = g[self.dst]
        return gx

    def graph_backward(self, g, out):
        return linear_graph_backward(self, g, widths=self.widths, value=0)


def pad(input, pad, mode="constant", value=None):
    """Pad (or, with negative amounts, crop) the last dims: ``pad`` is (left, right) of the
    last dim, then (top, bottom) of the one before, and so on, as in PyTorch. 'constant' mode
    fills the new elements with ``value`` (default 0); 'reflect', 'replicate' and 'circular'
    repeat the input (the last 1-3 dims of a (N, C, *) or (C, *) input)."""
    name = "pad"
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if mode not in ("constant",) + _GATHER_PAD_MODES:
        raise ValueError(f"{name}: mode {mode!r} is not one of 'constant', 'reflect', "
                         "'replicate', 'circular'")
    if not isinstance(pad, (tuple, list)):
        raise TypeError(f"{name}: pad must be a tuple of ints, got {pad!r}")
    amounts = [_whole(p, f"{name}: pad", pad) for p in pad]
    if len(amounts) % 2:
        raise ValueError(f"{name}: pad {tuple(pad)} must have an even length (a pair per dim)")
    if len(amounts) // 2 > input.ndim:
        raise ValueError(f"{name}: pad {tuple(pad)} pads {len(amounts) // 2} dims, the input "
                         f"has only {input.ndim} (shape {input.shape})")
    widths = [(0, 0)] * input.ndim
    for k in range(len(amounts) // 2):
        widths[input.ndim - 1 - k] = (amounts[2 * k], amounts[2 * k + 1])
    if mode != "constant":
        return _pad_gather(input, widths, amounts, mode, value)
    for d, (n, (lo, hi)) in enumerate(zip(input.shape, widths)):
        if n + min(lo, 0) + min(hi, 0) < 0:
            raise ValueError(f"{name}: pad ({lo}, {hi}) of dim {d} crops more than its "
                             f"size {n} (input shape {input.shape})")
    if value is None:
        value = 0
    if isinstance(value, bool) or not (isinstance(value, np.number) or is_real_number(value)):
        raise TypeError(f"{name}: value must be a number, got {value!r}")
    return Pad.apply(input, widths=tuple(widths), value=value)


# ---- padding by repeating the input: reflect, replicate, circular --------------------------
_GATHER_PAD_MODES = ("reflect", "replicate", "circular")


class PadGather(Function):
    """Non-constant padding as a gather: each padded dim reads its source indices (reflected,
    clamped to the edge or wrapped); backward adds every read back where it came from."""

    def forward(self, x, indices):
        self.indices, self.in_shape = indices, x.shape
        xp = get_array_module(x)
        for d, idx in indices:
            x = xp.take(x, xp.asarray(idx), axis=d)
        return x

    def backward(self, g):
        xp = get_array_module(g)
        for d, idx in reversed(self.indices):
            moved = xp.moveaxis(g, d, 0)
            out = xp.zeros((self.in_shape[d],) + moved.shape[1:], dtype=g.dtype)
            _add_rows(out, xp.asarray(idx), moved)
            g = xp.moveaxis(out, 0, d)
        return g

    def graph_backward(self, g, out):
        return linear_graph_backward(self, g, indices=self.indices)


def _pad_gather(input, widths, amounts, mode, value):
    name = "pad"
    if value is not None and value != 0:
        raise ValueError(f"{name}: mode {mode!r} takes no value argument, got value={value!r}")
    dims = len(amounts) // 2
    if len(amounts) not in (2, 4, 6) or input.ndim not in (dims + 1, dims + 2):
        raise ValueError(f"{name}: mode {mode!r} pads the last 1, 2 or 3 dims of a batched or "
                         f"unbatched input ((N, C, *) or (C, *)); got pad {tuple(amounts)} for "
                         f"input of shape {input.shape}")
    indices = []
    for d in range(input.ndim - dims, input.ndim):
        lo, hi = widths[d]
        n = input.shape[d]
        if n + lo + hi <= 0:  # negative amounts crop (after padding, as torch's)
            raise ValueError(f"{name}: padding ({lo}, {hi}) of dim {d} leaves no element of "
                             f"its {n} (input shape {input.shape}, mode {mode!r})")
        if mode == "circular" and min(lo, hi) < 0 < max(lo, hi):
            # torch's kernel reads memory outside the input there: no answer to match
            raise ValueError(f"{name}: mode 'circular' takes a crop (negative amount) and a pad "
                             f"(positive amount) on one dim only in separate calls, got ({lo}, "
                             f"{hi}) for dim {d}")
        limit = n - 1 if mode == "reflect" else (n if mode == "circular" else None)
        if (limit is not None and max(lo, hi) > limit) or n == 0:
            raise ValueError(f"{name}: padding ({lo}, {hi}) of dim {d} must be at most {limit} "
                             f"for mode {mode!r} (input shape {input.shape})")
        if not lo and not hi:
            continue
        pos = np.arange(-lo, n + hi)
        if mode == "reflect":
            period = 2 * (n - 1)
            pos = np.abs(pos) % period if period else np.zeros_like(pos)
            pos = np.where(pos >= n, period - pos, pos)
        elif mode == "replicate":
            pos = np.clip(pos, 0, n - 1)
        else:
            pos = pos % n
        indices.append((d, pos))
    if not indices:
        return input
    return PadGather.apply(input, indices=tuple(indices))
