"""Reference kernels written once for any array module (numpy or cupy).

They loop over the kernel window (kh * kw iterations) and do the rest with whole-array slices,
so they are correct and reasonably fast everywhere; faster device-specific versions live in
``cpu/`` (numba) and ``cuda.py`` (CuPy raw kernels) with the same signatures.
"""
from __future__ import annotations

from . import get_array_module


# The op codes of the kernel sets' ``activation_forward``/``activation_backward`` (numba's in
# cpu/activations.py, CUDA's act_forward/act_backward): the sigmoid (whose backward takes its
# output), SiLU, GELU, and GELU's tanh form.
ACT_SIGMOID, ACT_SILU, ACT_GELU, ACT_GELU_TANH = 0, 1, 2, 3


def out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


# A training convolution keeps its im2col matrix for backward up to this size; a larger one is
# gathered again from the input in backward (functional.Conv2d), which lets the forward pass
# skip it altogether where a kernel set has a faster algorithm (the CPU's rules, cpu/conv.py).
KEEP_COLUMNS_BYTES = 8 << 20


def column_bytes(x_shape, w_shape, stride, padding, itemsize):
    """Size of the im2col matrix of a convolution: C_in*kh*kw rows of N*OH*OW values."""
    n, ci, h, w = x_shape
    kh, kw = w_shape[2:]
    oh, ow = out_size(h, kh, stride[0], padding[0]), out_size(w, kw, stride[1], padding[1])
    return ci * kh * kw * n * oh * ow * itemsize


def is_pointwise(w_shape, stride, padding):
    """A 1x1 stride-1 unpadded convolution: its input already is its column matrix."""
    return tuple(w_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and \
        tuple(padding) == (0, 0)


def conv2d_algorithm(x_shape, w_shape, stride, padding, needs_grad, dtype=None):
    """The convolution algorithm where a kernel set has no rules of its own: one GEMM per
    sample for 1x1 layers ("pointwise") and im2col + GEMM ("im2col") otherwise."""
    return "pointwise" if is_pointwise(w_shape, stride, padding) else "im2col"


def im2col(x, kh, kw, sh, sw, ph, pw):
    """(N, C, H, W) -> (N, C*kh*kw, OH*OW); the rows run over (c, i, j) like a flattened weight."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    col = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = x[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
    return col.reshape(n, c * kh * kw, oh * ow)


def col2im(col, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of im2col: sums every column entry back into the pixel it was read from."""
    xp = get_array_module(col)
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    col = col.reshape(n, c, kh, kw, oh, ow)
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += col[:, :, i, j]
    return out[:, :, ph:ph + h, pw:pw + w]


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Returns (y, argmax) with argmax the flat index i*kw+j of the winner in each window."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-xp.inf)
    win = xp.empty((kh * kw, n, c, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            win[i * kw + j] = x[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
    arg = win.argmax(axis=0)
    y = xp.take_along_axis(win, arg[None], axis=0)[0]
    return y, arg.astype(xp.int32)


def max_pool2d_backward(gy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    xp = get_array_module(gy)
    n, c, h, w = x_shape
    oh, ow = gy.shape[2], gy.shape[3]
    gx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
    for i in range(kh):
        for j in range(kw):
            gx[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += xp.where(arg == i * kw + j, gy, 0)
    return gx[:, :, ph:ph + h, pw:pw + w]


def _bn_axes(x):
    return (0,) if x.ndim == 2 else (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


def batch_norm_train(x, weight, bias, running_mean, running_var, momentum, eps, relu=False):
    """Training-mode batch norm over every dim but 1, as whole-array code: returns (y, batch
    mean, invstd) and updates the running statistics in place (PyTorch's: unbiased variance).
    The variance is taken about the mean (two passes), so a large offset does not cancel."""
    xp = get_array_module(x)
    axes, shape = _bn_axes(x)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    if running_mean is not None:
        count = x.size // x.shape[1]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (count / max(count - 1, 1))
    invstd = (1 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
    scale = invstd * weight if weight is not None else invstd
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return channel_affine(x, scale, shift, relu), mean, invstd


def batch_norm_backward(g, x, y, mean, invstd, weight, relu=False):
    """Gradients (x, weight, bias) of ``batch_norm_train`` from the output gradient g."""
    axes, shape = _bn_axes(x)
    if relu:
        g = g * (y > 0)
    count = x.size // x.shape[1]
    xmu = x - mean.reshape(shape)
    sum_g = g.sum(axis=axes)
    sum_gx = (g * xmu).sum(axis=axes)
    a = invstd * weight if weight is not None else invstd
    beta = -a * invstd * invstd * sum_gx / count
    gx = g * a.reshape(shape) + xmu * beta.reshape(shape) - (a * sum_g / count).reshape(shape)
    return gx, sum_gx * invstd, sum_g


def channel_affine(x, scale, shift, relu=False):
    """y = x * scale[c] + shift[c] per channel (dim 1), then max(y, 0) when ``relu``."""
    _, shape = _bn_axes(x)
    y = x * scale.reshape(shape)
    y += shift.reshape(shape)
    if relu:
        get_array_module(x).maximum(y, 0, out=y)
    return y
