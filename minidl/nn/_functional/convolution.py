"""Convolutions with PyTorch's full set of options: conv1d, conv2d, conv3d (groups, dilation,
padding='same'/'valid'), conv_transpose1d/2d/3d, and unfold/fold (im2col/col2im as ops).

conv2d with groups=1 and dilation=1 is ``functional.conv2d`` (its tuned kernels); the other
cases run here on whole arrays of any array module: a dilated im2col (``unfold_array``), one
batched GEMM per group, and its adjoint ``fold_array`` (col2im). A transposed convolution is
the adjoint of a convolution: its forward pass is the convolution's input-gradient pass (GEMM,
then col2im) and its backward the convolution's forward (im2col, then GEMM). 1-D convolutions
are the 2-D ones on a height of 1; 3-D ones take the same N-d path (no tuned kernel).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ... import functional as _F
from ...backend import generic, get_array_module
from ...complex_ops import complex as _complex
from ...backend import kernels as generic_kernels
from ...functional import (_check_dtypes, _cpu_low_precision, _needs_grad, _whole,
                           _no_samples_grads)
from ...tensor import Function, Tensor, is_grad_enabled


def _ntuple(v, n, what):
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ValueError(f"{what} must be an int or a tuple of {n} ints, got {v!r}")
        return tuple(_whole(e, what, v) for e in v)
    return (_whole(v, what),) * n


def out_length(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ---- windows of an array: im2col and its adjoint ------------------------------------------
def _window(offsets, stride, dilation, out_sizes):
    """The slices that read window element ``offsets`` of every output position."""
    return (slice(None), slice(None)) + tuple(
        slice(i * d, i * d + s * (o - 1) + 1, s)
        for i, s, d, o in zip(offsets, stride, dilation, out_sizes))


def unfold_array(xpad, kernel, stride, dilation, out_hw):
    """(N, C, *S) already padded -> (N, C, *kernel, *out_sizes): the window element of every
    output position, the rows ordered as a flattened (C, *kernel) weight (any number of
    spatial dims: 2-D convolutions and pooling, 3-D ones)."""
    xp = get_array_module(xpad)
    n, c = xpad.shape[:2]
    kernel, out_hw = tuple(kernel), tuple(out_hw)
    col = xp.empty((n, c) + kernel + out_hw, dtype=xpad.dtype)
    for offsets in itertools.product(*(range(k) for k in kernel)):
        col[(slice(None), slice(None)) + offsets] = xpad[_window(offsets, stride, dilation,
                                                                  out_hw)]
    return col


def fold_array(col, padded_hw, stride, dilation):
    """Adjoint of unfold_array: (N, C, *kernel, *out_sizes) summed into an
    (N, C, *padded_hw) array, each entry into the element it was read from."""
    xp = get_array_module(col)
    dims = len(padded_hw)
    n, c = col.shape[:2]
    kernel, out_hw = col.shape[2:2 + dims], col.shape[2 + dims:]
    out = xp.zeros((n, c) + tuple(padded_hw), dtype=col.dtype)
    for offsets in itertools.product(*(range(k) for k in kernel)):
        out[_window(offsets, stride, dilation, out_hw)] += col[(slice(None), slice(None))
                                                               + offsets]
    return out


def _pad_sp(x, padding):
    """Zero padding of every spatial dim (dims 2...) by ``padding[d]`` on both sides."""
    if not any(padding):
        return x
    return get_array_module(x).pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding))


def _crop_sp(x, padding, sizes):
    index = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(padding, sizes))
    return get_array_module(x).ascontiguousarray(x[index])


def _pad_hw(x, ph, pw):
    return _pad_sp(x, (ph, pw))


def _crop_hw(x, ph, pw, h, w):
    return _crop_sp(x, (ph, pw), (h, w))


def _spatial_axes(a):
    return (0,) + tuple(range(2, a.ndim))


# ---- convolution with groups and dilation ---------------------------------------------------
def _shared_times_batched(a, b):
    """``a[g] @ b[n, g]`` for every n: a (G, M, K), the same for each sample, times b
    (N, G, K, L), giving (N, G, M, L). NumPy's broadcast matmul leaves BLAS for its own loop
    where the shared operand is a transposed view (20-50x slower), so it gets a contiguous
    copy; with one group the whole batch is one GEMM, the samples side by side."""
    xp = get_array_module(b)
    a = xp.ascontiguousarray(a)
    if xp is not np or b.shape[1] != 1:
        return xp.matmul(a, b)
    n, _, k, length = b.shape
    b2 = xp.ascontiguousarray(b.transpose(2, 0, 1, 3)).reshape(k, n * length)
    return (a[0] @ b2).reshape(1, a.shape[1], n, length).transpose(2, 0, 1, 3)



def _depthwise_kernels(x, w, groups):
    """The CPU kernel set where its direct depthwise kernels take this 2-D convolution."""
    if type(x) is not np.ndarray or groups == 1 or x.ndim != 4:
        return None
    ks = generic_kernels(np)
    fits = getattr(ks, "depthwise_fits", None)
    return ks if fits is not None and fits(x, w, groups) else None


def _group_columns(x, kernel, stride, padding, dilation, groups):
    """The im2col matrix of a grouped, dilated convolution: (N, G, Ci/G*prod(kernel), L)."""
    n, ci = x.shape[:2]
    out = tuple(out_length(*a) for a in zip(x.shape[2:], kernel, stride, padding, dilation))
    col = unfold_array(_pad_sp(x, padding), kernel, stride, dilation, out)
    return col.reshape(n, groups, ci // groups * math.prod(kernel), math.prod(out)), out


class ConvNd(Function):
    """Convolution with groups and dilation over any number of spatial dims (2-D, 3-D), each
    group one batched GEMM on the im2col matrix (N, G, Ci/G*prod(kernel), L). Only the weight
    gradient needs that matrix: it is kept when small (up to generic.KEEP_COLUMNS_BYTES, as
    functional.Conv2d does), and otherwise gathered again in backward from the input, which
    the graph holds anyway; a depthwise layer's kh*kw-times copy of a large input does not
    outlive the forward pass."""

    depthwise = None  # the CPU kernel set, where it computes this (depthwise) convolution

    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                weight_grad=True):
        n = x.shape[0]
        co, cig = w.shape[:2]
        kernel = tuple(w.shape[2:])
        ks = _depthwise_kernels(x, w, groups)
        if ks is not None:  # no column matrix: a direct kernel per (sample, channel) plane
            out = tuple(out_length(*a) for a in zip(x.shape[2:], kernel, stride, padding,
                                                     dilation))
            self.depthwise, self.kept_cols = ks, False
            self.geom = (x.shape, kernel, stride, padding, dilation, groups)
            self.save_for_backward(x, w)
            return ks.depthwise_forward(x, w, b, stride, padding, dilation, out)
        col, out = _group_columns(x, kernel, stride, padding, dilation, groups)
        wg = w.reshape(groups, co // groups, cig * math.prod(kernel))
        y = _shared_times_batched(wg, col).reshape((n, co) + out)
        if b is not None:
            y += b.reshape((1, -1) + (1,) * len(out))
        self.geom = (x.shape, kernel, stride, padding, dilation, groups)
        self.kept_cols = weight_grad and col.nbytes <= generic.KEEP_COLUMNS_BYTES
        self.save_for_backward(col if self.kept_cols else x, w)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        col, w = self.saved
        x_shape, kernel, stride, padding, dilation, groups = self.geom
        if g.size == 0:
            return _no_samples_grads(self, g, x_shape, w.shape, (g.shape[1],))
        if self.depthwise is not None:
            return self._depthwise_backward(g, col, w)
        n, ci = x_shape[:2]
        co = w.shape[0]
        gy = g.reshape(n, groups, co // groups, -1)
        gx = gw = gb = None
        if _needs_grad(self, 1):
            if not self.kept_cols:  # col holds x: gather the columns again
                col, _ = _group_columns(col, kernel, stride, padding, dilation, groups)
            gw = xp.matmul(gy, col.transpose(0, 1, 3, 2)).sum(axis=0).reshape(w.shape)
            col = None
        if len(self.inputs) > 2 and _needs_grad(self, 2):
            gb = g.sum(axis=_spatial_axes(g))
        if _needs_grad(self, 0):
            wg = w.reshape(groups, co // groups, -1)
            gcol = _shared_times_batched(wg.transpose(0, 2, 1), gy)
            gcol = gcol.reshape((n, ci) + kernel + g.shape[2:])
            sizes = x_shape[2:]
            full = fold_array(gcol, tuple(s + 2 * p for s, p in zip(sizes, padding)), stride,
                              dilation)
            gx = _crop_sp(full, padding, sizes)
        return gx, gw, gb

    def _depthwise_backward(self, g, x, w):
        x_shape, kernel, stride, padding, dilation, _ = self.geom
        ks = self.depthwise
        gx = gw = gb = None
        if _needs_grad(self, 1):
            gw = ks.depthwise_weight_grad(x, g, kernel, stride, padding, dilation)
        if len(self.inputs) > 2 and _needs_grad(self, 2):
            gb = g.sum(axis=_spatial_axes(g))
        if _needs_grad(self, 0):
            gx = ks.depthwise_input_grad(g, w, x_shape, stride, padding, dilation)
        return gx, gw, gb

    def graph_backward(self, g, out):
        _, _, stride, padding, dilation, groups = self.geom
        return conv_graph_gradients(self.inputs, g, stride, padding, dilation, groups)


# ---- double backward: a convolution is bilinear in (x, w) ----------------------------------
# Its input gradient is a transposed convolution of g with w, and its weight gradient a
# correlation of x with g (ConvWeightGrad); each of the three is linear in each argument, and
# their gradients are the other two, so graph-mode gradients of any order close over them.
def _output_padding(x_shape, y_shape, kernel, stride, padding, dilation):
    """The output_padding that makes the transposed convolution of y (the gradient of a
    convolution of x) the size of x again (the rows a strided convolution left unread)."""
    return tuple(s - _transposed_length(o, k, st, p, 0, d) for s, o, k, st, p, d in zip(
        x_shape[2:], y_shape[2:], kernel, stride, padding, dilation))


def _plain_2d(kernel, dilation, groups):
    """A 2-D convolution without groups or dilation: functional.Conv2d's own layout kernels
    (im2col/col2im into one GEMM for the whole batch) compute it and its gradients."""
    return len(kernel) == 2 and groups == 1 and tuple(dilation) == (1, 1)


def _plain_input_grad(g, w, x_shape, stride, padding):
    """The input gradient of a plain 2-D convolution by w (a transposed convolution of g), as
    functional.Conv2d's backward computes it."""
    return _F._conv2d_input_grad(_F._kernels(g), g, w, x_shape, stride, padding)


def _plain_weight_grad(x, g, kernel, stride, padding):
    """The weight gradient of a plain 2-D convolution of x whose output's gradient is g."""
    k = _F._kernels(x)
    kh, kw = kernel
    col = _F._im2col_t(k, x, kh, kw, *stride, *padding)
    g2, _ = _F._nchw_to_cols(k, g)
    gw = (g2 @ col.T).reshape(g.shape[1], x.shape[1], kh, kw)
    _F._give_back_scratch(k, col)
    _F._give_back_scratch(k, g2)
    return gw


def _conv_op(x, w, stride, padding, dilation, groups):
    """A convolution as a recorded op: functional.Conv2d where it is a plain 2-D one."""
    if _plain_2d(tuple(w.shape[2:]), dilation, groups):
        return _F.Conv2d.apply(x, w, stride=tuple(stride), padding=tuple(padding))
    return ConvNd.apply(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)


def _input_gradient(g, w, x_shape, stride, padding, dilation, groups):
    op = _output_padding(x_shape, g.shape, w.shape[2:], stride, padding, dilation)
    return ConvTranspose2d.apply(g, w, stride=stride, padding=padding, output_padding=op,
                                 dilation=dilation, groups=groups)


def conv_graph_gradients(inputs, g, stride, padding, dilation, groups):
    """The gradients of a convolution (x, w[, b]) as recorded ops, for double backward."""
    x, w = inputs[:2]
    gx = gw = gb = None
    if x.requires_grad:
        gx = _input_gradient(g, w, x.shape, stride, padding, dilation, groups)
    if w.requires_grad:
        gw = ConvWeightGrad.apply(x, g, kernel=tuple(w.shape[2:]), stride=stride,
                                  padding=padding, dilation=dilation, groups=groups)
    if len(inputs) > 2 and inputs[2].requires_grad:
        gb = g.sum(dim=_spatial_axes(g))
    return gx, gw, gb


_F.use_conv_graph_gradients(conv_graph_gradients)


class ConvWeightGrad(Function):
    """The weight gradient of a convolution of x, from its output's gradient gy, as an op:
    the correlation of x with gy (ConvNd's backward). Linear in each of x and gy: its
    gradient in gy is the convolution of x with the incoming h, in x the transposed
    convolution of gy with h."""

    def forward(self, x, gy, kernel, stride, padding, dilation, groups):
        xp = get_array_module(x)
        self.geom = (kernel, stride, padding, dilation, groups)
        self.save_for_backward(x, gy)
        if gy.size == 0:  # a sum over no samples (or of no output channels)
            return xp.zeros((gy.shape[1], x.shape[1] // groups) + tuple(kernel), x.dtype)
        if _plain_2d(kernel, dilation, groups):
            return _plain_weight_grad(x, gy, kernel, stride, padding)
        n = x.shape[0]
        co = gy.shape[1]
        col, _ = _group_columns(x, kernel, stride, padding, dilation, groups)
        gyg = gy.reshape(n, groups, co // groups, -1)
        gw = xp.matmul(gyg, col.transpose(0, 1, 3, 2)).sum(axis=0)
        return gw.reshape((co, x.shape[1] // groups) + tuple(kernel))

    def backward(self, h):
        x, gy = self.saved
        _, stride, padding, dilation, groups = self.geom
        if gy.size == 0:
            return _no_samples_grads(self, h, x.shape, gy.shape)
        gx = ggy = None
        plain = _plain_2d(tuple(h.shape[2:]), dilation, groups)
        if _needs_grad(self, 0):
            if plain:
                gx = _plain_input_grad(gy, h, x.shape, stride, padding)
            else:
                op = _output_padding(x.shape, gy.shape, h.shape[2:], stride, padding, dilation)
                gx = ConvTranspose2d().forward(gy, h, stride=stride, padding=padding,
                                               output_padding=op, dilation=dilation,
                                               groups=groups)
        if _needs_grad(self, 1):
            if plain:
                ggy = _F.Conv2d().forward(x, h, None, tuple(stride), tuple(padding),
                                          needs_grad=False)
            else:
                ggy = ConvNd().forward(x, h, stride=stride, padding=padding, dilation=dilation,
                                       groups=groups, weight_grad=False)
        return gx, ggy

    def graph_backward(self, h, out):
        x, gy = self.inputs
        _, stride, padding, dilation, groups = self.geom
        gx = ggy = None
        if x.requires_grad:
            gx = _input_gradient(gy, h, x.shape, stride, padding, dilation, groups)
        if gy.requires_grad:
            ggy = _conv_op(x, h, stride, padding, dilation, groups)
        return gx, ggy


class ConvTranspose2d(Function):
    """The adjoint of ConvNd in its input (any number of spatial dims): GEMM into columns,
    then col2im onto the output."""

    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                dilation=(1, 1), groups=1):
        n, ci = x.shape[:2]
        sizes = tuple(x.shape[2:])
        cog = w.shape[1]
        kernel = tuple(w.shape[2:])
        co = cog * groups
        out = tuple(_transposed_length(*a) for a in zip(
            sizes, kernel, stride, padding, output_padding, dilation))
        self.geom = (x.shape, kernel, stride, padding, dilation, groups)
        if n == 0:  # no samples: an empty output (the kernels' reshapes need a length)
            self.save_for_backward(x, w)
            return get_array_module(x).zeros((n, co) + out, dtype=x.dtype)
        if _plain_2d(kernel, dilation, groups) and not any(output_padding[i] >= stride[i]
                                                            for i in range(2)):
            self.save_for_backward(x, w)
            y = _plain_input_grad(x, w, (n, co) + out, stride, padding)
            if b is not None:
                y += b.reshape(1, -1, 1, 1)
            return y
        xg = x.reshape(n, groups, ci // groups, math.prod(sizes))
        wg = w.reshape(groups, ci // groups, cog * math.prod(kernel))
        col = _shared_times_batched(wg.transpose(0, 2, 1), xg).reshape((n, co) + kernel + sizes)
        full = fold_array(col, tuple(o + 2 * p for o, p in zip(out, padding)), stride, dilation)
        y = _crop_sp(full, padding, out)
        if b is not None:
            y += b.reshape((1, -1) + (1,) * len(out))
        self.save_for_backward(x, w)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        x, w = self.saved
        x_shape, kernel, stride, padding, dilation, groups = self.geom
        if g.size == 0:
            return _no_samples_grads(self, g, x_shape, w.shape, (g.shape[1],))
        if _plain_2d(kernel, dilation, groups):
            gx = gw = gb = None
            if _needs_grad(self, 0):
                gx = _F.Conv2d().forward(g, w, None, tuple(stride), tuple(padding),
                                         needs_grad=False)
            if _needs_grad(self, 1):
                gw = _plain_weight_grad(g, x, kernel, stride, padding)
            if len(self.inputs) > 2 and _needs_grad(self, 2):
                gb = g.sum(axis=_spatial_axes(g))
            return gx, gw, gb
        n, ci = x_shape[:2]
        sizes = tuple(x_shape[2:])
        gcol = unfold_array(_pad_sp(g, padding), kernel, stride, dilation, sizes)
        gcol = gcol.reshape(n, groups, -1, math.prod(sizes))   # (N, G, Co/G*prod(k), L)
        gx = gw = gb = None
        if _needs_grad(self, 0):
            wg = w.reshape(groups, ci // groups, -1)
            gx = _shared_times_batched(wg, gcol).reshape(x.shape)
        if _needs_grad(self, 1):
            xg = x.reshape(n, groups, ci // groups, math.prod(sizes))
            gw = xp.matmul(xg, gcol.transpose(0, 1, 3, 2)).sum(axis=0).reshape(w.shape)
        if len(self.inputs) > 2 and _needs_grad(self, 2):
            gb = g.sum(axis=_spatial_axes(g))
        return gx, gw, gb

    def graph_backward(self, g, out):
        # the adjoint of a convolution in its input: its input gradient is that convolution
        # of g, its weight gradient the convolution's weight gradient with the roles swapped
        x, w = self.inputs[:2]
        _, kernel, stride, padding, dilation, groups = self.geom
        gx = gw = gb = None
        if x.requires_grad:
            gx = _conv_op(g, w, stride, padding, dilation, groups)
        if w.requires_grad:
            gw = ConvWeightGrad.apply(g, x, kernel=kernel, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups)
        if len(self.inputs) > 2 and self.inputs[2].requires_grad:
            gb = g.sum(dim=_spatial_axes(g))
        return gx, gw, gb


def _transposed_length(size, kernel, stride, padding, output_padding, dilation):
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


# ---- argument checks shared by the public functions ------------------------------------------
def _batched(name, x, dims):
    """x with a batch dim (an unbatched (C, *) input gets one), and whether it was added."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if x.ndim == dims + 1:
        return x.unsqueeze(0), True
    if x.ndim != dims + 2:
        raise ValueError(f"{name}: expected a {dims + 1}-D (unbatched) or {dims + 2}-D "
                         f"(batched) input, got shape {x.shape}")
    return x, False


def _check_weight(name, weight, bias, dims, out_channels_dim=0, groups=1):
    if not isinstance(weight, Tensor) or weight.ndim != dims + 2:
        raise ValueError(f"{name}: weight must be {dims + 2}-D, got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    if min(weight.shape[2:]) < 1:  # an empty kernel sums nothing: torch refuses it
        raise ValueError(f"{name}: kernel size should be greater than zero, got kernel "
                         f"{'x'.join(map(str, weight.shape[2:]))} (weight {tuple(weight.shape)})")
    co = weight.shape[out_channels_dim] * (groups if out_channels_dim == 1 else 1)
    if bias is not None and tuple(bias.shape) != (co,):
        raise ValueError(f"{name}: bias shape {tuple(bias.shape)} does not match {co} filters")


def _check_groups(name, groups):
    groups = _whole(groups, f"{name}: groups")
    if groups < 1:
        raise ValueError(f"{name}: groups must be a positive int, got {groups}")
    return groups


def _as_2d(x, w, dims):
    """1-D tensors as 2-D ones of height 1."""
    return (x.unsqueeze(2), w.unsqueeze(2)) if dims == 1 else (x, w)


def _lift(t, dims, fill):
    return (fill,) + t if dims == 1 else t


def _complex_conv(name, dims, input, weight, bias, *geometry):
    """A complex convolution as three real ones (Gauss's trick): with x = a + ib and
    w = c + id, x * w = (ac - bd) + i((a + b)(c + d) - ac - bd); the gradients flow through
    the real and imaginary parts as recorded ops."""
    _check_dtypes(name, input, weight, bias)  # (torch's: both complex, of one dtype)

    def conv(x, w):
        if "transpose" in name:
            return _conv_transpose(name, dims, x, w, None, *geometry)
        return _conv(name, dims, x, w, None, *geometry)

    a, b, c, d = input.real, input.imag, weight.real, weight.imag
    ac, bd = conv(a, c), conv(b, d)
    y = _complex(ac - bd, conv(a + b, c + d) - ac - bd)
    return y if bias is None else y + bias.reshape((-1,) + (1,) * dims)


def _conv(name, dims, input, weight, bias, stride, padding, dilation, groups):
    if isinstance(input, Tensor) and isinstance(weight, Tensor) and (
            input.dtype.kind == "c" or weight.dtype.kind == "c"):
        return _complex_conv(name, dims, input, weight, bias, stride, padding, dilation, groups)
    x, unbatched = _batched(name, input, dims)
    _check_weight(name, weight, bias, dims)
    groups = _check_groups(name, groups)
    stride = _ntuple(stride, dims, f"{name}: stride")
    dilation = _ntuple(dilation, dims, f"{name}: dilation")
    kernel = tuple(weight.shape[2:])
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"{name}: stride {stride} and dilation {dilation} must be positive")
    c, co, cig = x.shape[1], weight.shape[0], weight.shape[1]
    if c != cig * groups:
        raise ValueError(f"{name}: input has {c} channels (shape {input.shape}), weight "
                         f"{weight.shape} expects {cig * groups}"
                         + (f" (groups={groups})" if groups > 1 else ""))
    if co % groups:
        raise ValueError(f"{name}: weight's {co} output channels are not divisible by "
                         f"groups={groups}")
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"{name}: padding must be 'same', 'valid' or ints, got {padding!r}")
        pads = (0,) * dims
        if padding == "same":
            if max(stride) > 1:
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 f"convolutions (stride {stride})")
            amounts = []
            for k, d in zip(reversed(kernel), reversed(dilation)):
                total = d * (k - 1)
                amounts += [total // 2, total - total // 2]
            if any(amounts[0::2][i] != amounts[1::2][i] for i in range(dims)):
                x = _F.pad(x, amounts)  # an even kernel: one more on the right, as PyTorch
            else:
                pads = tuple(reversed(amounts[0::2]))
    else:
        pads = _ntuple(padding, dims, f"{name}: padding")
        if min(pads) < 0:
            raise ValueError(f"{name}: padding {pads} must not be negative")
    for size, k, p, d in zip(x.shape[2:], kernel, pads, dilation):
        if size + 2 * p < d * (k - 1) + 1:
            padded = "x".join(str(s + 2 * q) for s, q in zip(x.shape[2:], pads))
            dilated = "" if max(dilation) == 1 else f" (dilation {dilation})"
            raise ValueError(f"{name}: kernel {'x'.join(map(str, kernel))}{dilated} is larger "
                             f"than the padded input {padded}")
    _check_dtypes(name, x, weight, bias)
    x2, w2 = _as_2d(x, weight, dims)
    s2, p2, d2 = _lift(stride, dims, 1), _lift(pads, dims, 0), _lift(dilation, dims, 1)
    if dims <= 2 and groups == 1 and d2 == (1, 1):
        y = _F.conv2d(x2, w2, bias, s2, p2)
    else:
        args = (x2, w2) if bias is None else (x2, w2, bias)
        low = _cpu_low_precision(x2)
        if low:
            args = tuple(t.float() for t in args)
        # the columns are kept (when small) only for a weight gradient
        weight_grad = is_grad_enabled() and weight.requires_grad
        y = ConvNd.apply(*args, stride=s2, padding=p2, dilation=d2, groups=groups,
                         weight_grad=weight_grad)
        if low:
            y = y.astype(x.dtype)
    if dims == 1:
        y = y.squeeze(2)
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution (cross-correlation) of (N, C_in, L) or (C_in, L) input with weight
    (C_out, C_in/groups, kL); ``padding`` may be an int or 'same'/'valid', as in PyTorch."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of (N, C_in, H, W) or (C_in, H, W) input with weight
    (C_out, C_in/groups, kH, kW), with PyTorch's stride, padding (ints, 'same', 'valid'),
    dilation and groups."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution of (N, C_in, D, H, W) or (C_in, D, H, W) input with weight
    (C_out, C_in/groups, kD, kH, kW), with PyTorch's stride, padding (ints, 'same', 'valid'),
    dilation and groups (an N-d im2col and one GEMM per group)."""
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(name, dims, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    if isinstance(input, Tensor) and isinstance(weight, Tensor) and (
            input.dtype.kind == "c" or weight.dtype.kind == "c"):
        return _complex_conv(name, dims, input, weight, bias, stride, padding, output_padding,
                             groups, dilation)
    x, unbatched = _batched(name, input, dims)
    groups = _check_groups(name, groups)
    _check_weight(name, weight, bias, dims, out_channels_dim=1, groups=groups)
    stride = _ntuple(stride, dims, f"{name}: stride")
    padding = _ntuple(padding, dims, f"{name}: padding")
    output_padding = _ntuple(output_padding, dims, f"{name}: output_padding")
    dilation = _ntuple(dilation, dims, f"{name}: dilation")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or min(output_padding) < 0:
        raise ValueError(f"{name}: stride {stride} and dilation {dilation} must be positive, "
                         f"padding {padding} and output_padding {output_padding} not negative")
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= max(s, d):
            raise ValueError(f"{name}: output_padding {output_padding} must be smaller than "
                             f"either stride {stride} or dilation {dilation}")
    c = x.shape[1]
    if c != weight.shape[0]:
        raise ValueError(f"{name}: input has {c} channels (shape {input.shape}), weight "
                         f"{weight.shape} expects {weight.shape[0]}")
    if c % groups:
        raise ValueError(f"{name}: {c} input channels are not divisible by groups={groups}")
    out = tuple(_transposed_length(*a) for a in zip(
        x.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation))
    if min(out) < 1:
        raise ValueError(f"{name}: the output size {out} is too small (input {input.shape}, "
                         f"kernel {tuple(weight.shape[2:])}, padding {padding})")
    _check_dtypes(name, x, weight, bias)
    x2, w2 = _as_2d(x, weight, dims)
    args = (x2, w2) if bias is None else (x2, w2, bias)
    low = _cpu_low_precision(x2)
    if low:
        args = tuple(t.float() for t in args)
    y = ConvTranspose2d.apply(*args, stride=_lift(stride, dims, 1),
                              padding=_lift(padding, dims, 0),
                              output_padding=_lift(output_padding, dims, 0),
                              dilation=_lift(dilation, dims, 1), groups=groups)
    if low:
        y = y.astype(x.dtype)
    if dims == 1:
        y = y.squeeze(2)
    return y.squeeze(0) if unbatched else y


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 1-D convolution of (N, C_in, L) input with weight (C_in, C_out/groups, kL);
    output length (L - 1) * stride - 2 * padding + dilation * (kL - 1) + output_padding + 1."""
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-D convolution of (N, C_in, H, W) input with weight
    (C_in, C_out/groups, kH, kW), as PyTorch's (the gradient of conv2d in its input)."""
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 3-D convolution of (N, C_in, D, H, W) input with weight
    (C_in, C_out/groups, kD, kH, kW), as PyTorch's (the gradient of conv3d in its input)."""
    return _conv_transpose("conv_transpose3d", 3, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


# ---- unfold / fold ---------------------------------------------------------------------------
class Unfold(Function):
    def forward(self, x, kernel, dilation, padding, stride):
        n, c, h, w = x.shape
        oh, ow = (out_length(s, k, st, p, d) for s, k, st, p, d in zip(
            (h, w), kernel, stride, padding, dilation))
        self.geom = (x.shape, kernel, padding, stride, dilation, (oh, ow))
        col = unfold_array(_pad_hw(x, *padding), kernel, stride, dilation, (oh, ow))
        return col.reshape(n, c * kernel[0] * kernel[1], oh * ow)

    def backward(self, g):
        (n, c, h, w), kernel, (ph, pw), stride, dilation, out_hw = self.geom
        full = fold_array(g.reshape((n, c) + kernel + out_hw), (h + 2 * ph, w + 2 * pw),
                          stride, dilation)
        return _crop_hw(full, ph, pw, h, w)

    def graph_backward(self, g, out):
        (_, _, h, w), kernel, padding, stride, dilation, out_hw = self.geom
        return Fold.apply(g, output_size=(h, w), kernel=kernel, dilation=dilation,
                          padding=padding, stride=stride, blocks=out_hw)


class Fold(Function):
    def forward(self, col, output_size, kernel, dilation, padding, stride, blocks):
        n = col.shape[0]
        c = col.shape[1] // (kernel[0] * kernel[1])
        (h, w), (ph, pw) = output_size, padding
        self.geom = (col.shape, kernel, dilation, padding, stride, blocks)
        full = fold_array(col.reshape((n, c) + kernel + blocks), (h + 2 * ph, w + 2 * pw),
                          stride, dilation)
        return _crop_hw(full, ph, pw, h, w)

    def backward(self, g):
        col_shape, kernel, dilation, padding, stride, blocks = self.geom
        col = unfold_array(_pad_hw(g, *padding), kernel, stride, dilation, blocks)
        return col.reshape(col_shape)

    def graph_backward(self, g, out):
        _, kernel, dilation, padding, stride, _ = self.geom
        return Unfold.apply(g, kernel=kernel, dilation=dilation, padding=padding, stride=stride)


def _window_args(name, kernel_size, dilation, padding, stride):
    kernel = _ntuple(kernel_size, 2, f"{name}: kernel_size")
    dilation = _ntuple(dilation, 2, f"{name}: dilation")
    padding = _ntuple(padding, 2, f"{name}: padding")
    stride = _ntuple(stride, 2, f"{name}: stride")
    if min(kernel) < 1 or min(dilation) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{name}: kernel_size {kernel}, dilation {dilation} and stride "
                         f"{stride} must be positive, padding {padding} not negative")
    return kernel, dilation, padding, stride


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding blocks of a (N, C, H, W) input (or (C, H, W)) as columns:
    (N, C * kH * kW, L), L the number of block positions (im2col, as PyTorch's unfold)."""
    name = "unfold"
    x, unbatched = _batched(name, input, 2)
    kernel, dilation, padding, stride = _window_args(name, kernel_size, dilation, padding, stride)
    for s, k, p, d in zip(x.shape[2:], kernel, padding, dilation):
        if s + 2 * p < d * (k - 1) + 1:
            raise ValueError(f"{name}: kernel {kernel} (dilation {dilation}) is larger than the "
                             f"padded input of shape {x.shape} (padding {padding})")
    y = Unfold.apply(x, kernel=kernel, dilation=dilation, padding=padding, stride=stride)
    return y.squeeze(0) if unbatched else y


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Adjoint of unfold: columns (N, C * kH * kW, L) summed into (N, C, *output_size)
    (col2im, as PyTorch's fold); overlapping blocks add up."""
    name = "fold"
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    unbatched = input.ndim == 2
    x = input.unsqueeze(0) if unbatched else input
    if x.ndim != 3:
        raise ValueError(f"{name}: expected a 2-D (unbatched) or 3-D (batched) input, got "
                         f"shape {input.shape}")
    size = _ntuple(output_size, 2, f"{name}: output_size")
    kernel, dilation, padding, stride = _window_args(name, kernel_size, dilation, padding, stride)
    blocks = tuple(out_length(s, k, st, p, d) for s, k, st, p, d in zip(
        size, kernel, stride, padding, dilation))
    kk = kernel[0] * kernel[1]
    if x.shape[1] % kk:
        raise ValueError(f"{name}: input's dim 1 ({x.shape[1]}) must be divisible by the "
                         f"kernel's {kk} elements (kernel_size {kernel})")
    if min(blocks) < 1 or blocks[0] * blocks[1] != x.shape[2]:
        raise ValueError(f"{name}: input has {x.shape[2]} blocks, output_size {size} with "
                         f"kernel_size {kernel}, dilation {dilation}, padding {padding} and "
                         f"stride {stride} makes {blocks[0]} x {blocks[1]}")
    y = Fold.apply(x, output_size=size, kernel=kernel, dilation=dilation, padding=padding,
                   stride=stride, blocks=blocks)
    return y.squeeze(0) if unbatched else y


__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "unfold", "fold",
           "conv3d", "conv_transpose3d"]
