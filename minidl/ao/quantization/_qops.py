"""The float ops that take a quantized tensor, as torch's QuantizedCPU kernels: what a
quantized model runs between its quantized modules (torchvision's quantizable ResNet,
MobileNetV2 and ShuffleNetV2: max pooling, adaptive average pooling, ``torch.flatten``,
``mean``, ``chunk``, ``cat``, ``relu``, ``sigmoid``, ``hardsigmoid``). ``F.max_pool2d``,
``F.adaptive_avg_pool2d``, ``F.relu``, ``F.sigmoid``, ``F.hardsigmoid`` and ``minidl.cat`` hand a quantized input to ``QTensor._quantized_op``, which
runs the kernel of that name here. The output keeps the input's scale and zero point:

- max pooling: the max of the integers (exact: the affine map is increasing);
- adaptive average pooling and mean over the last dims: ``nearbyint(float32(sum of the
  integers) / float32(count))``, as torch's kernels (the zero point passes through the mean);
- relu: ``max(q, zero_point)``;
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


OPS = {"sigmoid": sigmoid, "hardsigmoid": hardsigmoid, "tanh": tanh, "max_pool1d": _max_pool, "max_pool2d": _max_pool, "max_pool3d": _max_pool,
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
