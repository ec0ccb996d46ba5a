"""The float ops that take a quantized tensor, as torch's QuantizedCPU kernels: what a
quantized model runs between its quantized modules (torchvision's quantizable ResNet,
MobileNetV2 and ShuffleNetV2: max pooling, adaptive average pooling, ``torch.flatten``,
``mean``, ``chunk``, ``cat``, ``relu``, ``sigmoid``, ``hardsigmoid``). ``F.max_pool2d``,
``F.adaptive_avg_pool2d``, ``F.relu``, ``F.sigmoid``, ``F.hardsigmoid`` and ``minidl.cat`` hand a quantized input to ``QTensor._quantized_op``, which
runs the kernel of that name here. The output keeps the input's scale and zero point:

- max pooling: the max of the integers (exact: the affine map is increasing);
- adaptive average pooling and mean over the last dims: ``nearbyint(float32(sum of the
  integers) / float32(count))``, as torch's kernels (the zero point passes through the mean);
- average pooling: torch's per-window requantization (see ``avg_pool2d``);
- relu: ``max(q, zero_point)``; relu6 / hardtanh: the integers clamped to the quantized
  bounds; leaky_relu: torch's kernel with x's scale and zero point;
- cat: each input dequantized and requantized with the first's scale and zero point;
- sigmoid, hardsigmoid, tanh: a new scale and zero point, torch's fixed ones (1/256 and the
  dtype's minimum; tanh 2/256 and the middle of the range)."""
from __future__ import annotations

import numpy as np

from ...tensor import Tensor
from ._qmath import dequantize_fma, dequantize_mul, quantize_ints, quantize_vec


def _per_tensor(name, x):
    if x._axis is not None:
        raise NotImplementedError(f"{name}: per-tensor quantized input only here, got one "
                                  f"quantized {x.qscheme()}")


def _like(x, ints):
    """A result on x's grid, channels-last where x is (and it is still 4-D)."""
    out = type(x)(ints.astype(x.dtype.storage), x.dtype, x._scale, x._zero_point)
    out._channels_last = x._channels_last and out.ndim == 4
    return out


def _max_pool(name, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
              return_indices=False, dims=2):
    """The float kernel on the integers (exact in float32), the result put back on x's grid."""
    from ...nn._functional import pooling as P

    _per_tensor(name, x)
    if return_indices:
        raise NotImplementedError(f"{name}: return_indices is not supported for quantized "
                                  "tensors (as torch's)")
    fn = {1: P.max_pool1d, 2: P.max_pool2d, 3: P.max_pool3d}[dims]
    y = fn(Tensor(x._ints.astype(np.float32)), kernel_size, stride, padding, dilation, ceil_mode)
    return _like(x, np.rint(y.numpy()).astype(np.int64))


def _pair(value, name):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) for v in value):
        raise ValueError(f"avg_pool2d: {name} must be an int or a pair of ints, got {value!r}")
    return tuple(int(v) for v in value)


def _pool_size(size, k, s, p, ceil_mode):
    """torch's pooling output size (ceil_mode: the last window must start inside the input
    or its left padding)."""
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch's quantized average pooling, the output on x's grid: per window, ``acc = sum(q)
    - size * zp`` over the input elements it covers (exact), divided by the window's area
    (with padding, unless ``count_include_pad=False``; or ``divisor_override``) in float32.
    Rounded as torch's kernels: over NCHW data (a QuantStub's
    output) ``nearbyint(acc / divisor + zp)``; over channels-last data (a quantized
    convolution's) ``nearbyint(acc / divisor) + zp`` for the channels in whole vectors of 16
    and the first form for the last ``C % 16`` (AVX-512; an AVX2-only CPU may take 8)."""
    name = "avg_pool2d"
    _per_tensor(name, x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name}: expected a 3-D or 4-D input, got shape {x.shape}")
    k = _pair(kernel_size, "kernel_size")
    st = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) \
        else _pair(stride, "stride")
    p = _pair(padding, "padding")
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f"{name}: pad should be at most half of the kernel size, got padding "
                         f"{p} and kernel_size {k}")
    if divisor_override is not None and int(divisor_override) == 0:
        raise ValueError(f"{name}: divisor_override must not be zero")
    ints = (x._ints if x.ndim == 4 else x._ints[None]).astype(np.int64)
    h, w = ints.shape[2:]
    oh, ow = (_pool_size(h, k[0], st[0], p[0], ceil_mode),
              _pool_size(w, k[1], st[1], p[1], ceil_mode))
    if oh < 1 or ow < 1:
        raise ValueError(f"{name}: input of shape {x.shape} is smaller than the kernel {k}")
    zp = int(x._zero_point)
    acc = np.empty(ints.shape[:2] + (oh, ow), np.float32)
    mult = np.empty((oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * st[0] - p[0], j * st[1] - p[1]
            h1, w1 = min(h0 + k[0], h + p[0]), min(w0 + k[1], w + p[1])
            pool = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            size = (h1 - h0) * (w1 - w0)
            divisor = int(divisor_override) if divisor_override is not None else (
                pool if count_include_pad else size)
            acc[:, :, i, j] = ints[:, :, h0:h1, w0:w1].sum((2, 3)) - size * zp
            mult[i, j] = np.float32(1.0 / divisor)  # torch's multiplier (scales equal)
    # the scalar loops quantize with scale 1 / multiplier, so multiply by 1 / (1 / multiplier)
    zp_before = np.rint(acc * (np.float32(1) / (np.float32(1) / mult)) + np.float32(zp))
    if x._channels_last:
        c = ints.shape[1]
        vec = c - c % 16
        out = np.concatenate([np.rint(acc[:, :vec] * mult) + zp, zp_before[:, vec:]], axis=1)
    else:
        out = zp_before
    out = np.clip(out, x.dtype.qmin, x.dtype.qmax)
    return _like(x, out if x.ndim == 4 else out[0])


def _bins(size, out):
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool2d(x, output_size):
    name = "adaptive_avg_pool2d"
    _per_tensor(name, x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name}: expected a 3-D or 4-D input, got shape {x.shape}")
    ints = x._ints if x.ndim == 4 else x._ints[None]
    h, w = ints.shape[2:]
    if min(h, w) < 1:
        raise ValueError(f"{name}: expected input to have non-zero size for non-batch "
                         f"dimensions, but its spatial size is {(h, w)}")
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(sizes) != 2:
        raise ValueError(f"{name}: output_size must have 2 elements, got {output_size!r}")
    oh, ow = (h if sizes[0] is None else int(sizes[0])), (w if sizes[1] is None else int(sizes[1]))
    if min(oh, ow) < 1:
        raise ValueError(f"{name}: output_size {(oh, ow)} must be positive")
    out = np.empty(ints.shape[:2] + (oh, ow), np.int64)
    for i, (r0, r1) in enumerate(_bins(h, oh)):
        for j, (c0, c1) in enumerate(_bins(w, ow)):
            total = ints[:, :, r0:r1, c0:c1].astype(np.int64).sum((2, 3))
            count = np.float32((r1 - r0) * (c1 - c0))
            out[:, :, i, j] = np.rint(total.astype(np.float32) / count)
    return _like(x, out if x.ndim == 4 else out[0])


def mean(x, dim=None, keepdim=False, dtype=None):
    """Over the last dims in memory (a global pool over H, W of an NCHW tensor): the
    integers' mean, rounded; otherwise (other dims, or H, W of a channels-last tensor: a
    quantized convolution's output) the dequantized float mean requantized with x's scale
    and zero point (torch's two paths; torch's float mean sums in its own order, NumPy's in
    another, which can move a rare tie by one step)."""
    name = "mean"
    _per_tensor(name, x)
    if dtype is not None:
        raise NotImplementedError(f"{name}: dtype is not supported for quantized tensors")
    dims = tuple(range(x.ndim)) if dim is None else (
        (dim,) if isinstance(dim, int) else tuple(dim))
    dims = tuple(sorted({d % x.ndim for d in dims}))
    count = np.float32(int(np.prod([x.shape[d] for d in dims])))
    if dims == tuple(range(x.ndim - len(dims), x.ndim)) and not x._channels_last:
        total = x._ints.astype(np.int64).sum(axis=dims, keepdims=keepdim)
        return _like(x, np.rint(total.astype(np.float32) / count))
    y = x.dequantize().numpy().mean(axis=dims, keepdims=keepdim, dtype=np.float32)
    ints = quantize_ints(y, float(x._scale), int(x._zero_point), x.dtype.qmin, x.dtype.qmax,
                         fused=True)
    return _like(x, ints)


def relu(x):
    _per_tensor("relu", x)
    return _like(x, np.maximum(x._ints, x._ints.dtype.type(x._zero_point)))


def cat(tensors, dim=0):
    name = "cat"
    first = tensors[0]
    for i, t in enumerate(tensors):
        if getattr(t, "is_quantized", False) is not True or t.dtype is not first.dtype:
            raise TypeError(f"{name}: expected quantized tensors of dtype {first.dtype}, got "
                            f"{getattr(t, 'dtype', type(t).__name__)} at position {i}")
        _per_tensor(name, t)
    ndim = first.ndim
    if not -ndim <= dim < ndim:
        raise IndexError(f"{name}: dim {dim} is out of range for {ndim}-D inputs")
    d = dim % ndim
    rest = [t.shape[:d] + t.shape[d + 1:] for t in tensors]
    if any(r != rest[0] or t.ndim != ndim for r, t in zip(rest, tensors)):
        raise RuntimeError(f"{name}: the shapes {[t.shape for t in tensors]} differ outside "
                           f"dim {dim}")
    parts = []
    for t in tensors:
        if t._scale == first._scale and t._zero_point == first._zero_point:
            parts.append(t._ints.astype(np.int64))
        else:
            parts.append(quantize_ints(t.dequantize().numpy(), float(first._scale),
                                       int(first._zero_point), first.dtype.qmin,
                                       first.dtype.qmax, fused=True))
    return _like(first, np.concatenate(parts, axis=d))


def chunk(x, chunks, dim=0):
    _per_tensor("chunk", x)
    d = dim % x.ndim
    size = -(-x.shape[d] // chunks)
    return tuple(x[(slice(None),) * d + (slice(i, i + size),)]
                 for i in range(0, x.shape[d], size))


def sigmoid(x, output_scale=None, output_zero_point=None):
    """As torch's kernel: ``(q - zp) * s``, ``1 / (1 + exp(-x))`` in float32, quantized with
    ``float32(1.0 / scale)``; by default torch's fixed output qparams, scale 1/256 with zero
    point 0 (quint8) or -128 (qint8)."""
    _per_tensor("sigmoid", x)
    scale = 1.0 / 256 if output_scale is None else float(output_scale)
    zp = x.dtype.qmin if output_zero_point is None else int(output_zero_point)
    v = dequantize_mul(x)
    with np.errstate(over="ignore"):
        y = np.float32(1) / (np.float32(1) + np.exp(-v))
    return type(x)(quantize_vec(y, np.float32(1.0 / scale), zp, x.dtype), x.dtype, scale, zp)


def hardsigmoid(x):
    """As torch's kernel: ``fma(q, s, -s * zp)``, ``min(max(x + 3, 0), 6) / 6`` in float32,
    quantized with torch's fixed output qparams (those of sigmoid)."""
    _per_tensor("hardsigmoid", x)
    scale, zp = 1.0 / 256, x.dtype.qmin
    v = dequantize_fma(x)
    f = np.float32
    y = np.minimum(np.maximum(v + f(3), f(0)), f(6)) / f(6)
    out = type(x)(quantize_vec(y, f(1.0 / scale), zp, x.dtype), x.dtype, scale, zp)
    out._channels_last = x._channels_last and out.ndim == 4
    return out


def tanh(x):
    """As torch's kernel: ``fma(q, s, -s * zp)``, tanh in float32, quantized with torch's
    fixed output qparams: scale 2/256 with zero point 128 (quint8) or 0 (qint8)."""
    _per_tensor("tanh", x)
    scale, zp = 2.0 / 256, (128 if x.dtype.qmin == 0 else 0)
    y = np.tanh(dequantize_fma(x))
    out = type(x)(quantize_vec(y, np.float32(1.0 / scale), zp, x.dtype), x.dtype, scale, zp)
    out._channels_last = x._channels_last and out.ndim == 4
    return out


def leaky_relu(x, negative_slope=0.01):
    """As torch's kernel, the output on x's grid: ``fma(q, s, -s * zp)``, times 1 or the
    slope, quantized as ``rint(y * float32(1 / s)) + zp``."""
    _per_tensor("leaky_relu", x)
    v = dequantize_fma(x)
    y = v * np.where(v > 0, np.float32(1), np.float32(negative_slope))
    return _like(x, quantize_vec(y, np.float32(1) / np.float32(x._scale), int(x._zero_point),
                                 x.dtype))


def hardtanh(x, min_val=-1.0, max_val=1.0):
    """The integers clamped to the quantized bounds (torch's quantized clamp), x's grid."""
    _per_tensor("hardtanh", x)
    lo, hi = (int(quantize_ints(np.float32(v), float(x._scale), int(x._zero_point),
                                x.dtype.qmin, x.dtype.qmax, fused=True)) for v in (min_val, max_val))
    return _like(x, np.clip(x._ints.astype(np.int64), lo, hi))


OPS = {"sigmoid": sigmoid, "leaky_relu": leaky_relu, "hardtanh": hardtanh, "hardsigmoid": hardsigmoid, "tanh": tanh, "avg_pool2d": avg_pool2d, "max_pool1d": _max_pool, "max_pool2d": _max_pool, "max_pool3d": _max_pool,
       "adaptive_avg_pool2d": adaptive_avg_pool2d, "relu": relu, "cat": cat}


def run(name, x, *args, **kwargs):
    fn = OPS.get(name)
    if fn is None:
        raise NotImplementedError(f"{name} is not supported on a quantized tensor here; call "
                                  ".dequantize() first")
    if fn is _max_pool:
        return fn(name, x, *args, **kwargs)
    if name == "cat":
        return fn(*args, **kwargs)
    return fn(x, *args, **kwargs)
