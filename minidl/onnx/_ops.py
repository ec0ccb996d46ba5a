"""One translation per recorded Function class: ``(ctx) -> name of the op's output`` where
``ctx`` (an ``exporter.OpContext``) gives the op's inputs, keywords and shapes and adds the
ONNX nodes. An op whose arguments this table cannot express raises ``Unsupported`` with the
reason; a class missing here is refused by the exporter (never exported as a wrong graph)."""
from __future__ import annotations

import math

import numpy as np

TRANSLATIONS = {}  # "module.Class" -> translation


class Unsupported(Exception):
    """Raised by a translation: this call of the op has no ONNX form here (the reason)."""


def _register(*names):
    def wrap(fn):
        for n in names:
            TRANSLATIONS[n] = fn
        return fn
    return wrap


_OPS, _F = "minidl.ops.", "minidl.functional."
_ACT = "minidl.nn._functional.activations."
_CONV = "minidl.nn._functional.convolution."
_POOL = "minidl.nn._functional.pooling."


# ---- elementwise ---------------------------------------------------------------------------
def _binary(op):
    def tr(ctx):
        a, b = ctx.inputs_cast_to_output()
        return ctx.node(op, [a, b])
    return tr


for _name, _op in (("Add", "Add"), ("Sub", "Sub"), ("Mul", "Mul"), ("Div", "Div")):
    TRANSLATIONS[_OPS + _name] = _binary(_op)


def _unary(op, **attrs):
    return lambda ctx: ctx.node(op, [ctx.x(0)], **attrs)


for _name, _op in (("Neg", "Neg"), ("Exp", "Exp"), ("Log", "Log"), ("Sqrt", "Sqrt"),
                   ("Tanh", "Tanh"), ("Abs", "Abs"), ("ReLU", "Relu"), ("Sigmoid", "Sigmoid"),
                   ("Clone", "Identity")):
    TRANSLATIONS[_OPS + _name] = _unary(_op)
TRANSLATIONS[_ACT + "Hardswish"] = _unary("HardSwish")
TRANSLATIONS[_ACT + "Softsign"] = _unary("Softsign")


@_register(_OPS + "Pow")
def _pow(ctx):
    e = ctx.kw["exponent"]
    if not isinstance(e, (int, float)):
        raise Unsupported(f"exponent of type {type(e).__name__}")
    return ctx.node("Pow", [ctx.x(0), ctx.const(np.asarray(e, ctx.out_dtype), "exponent")])


@_register(_OPS + "ScaleBy")
def _scale_by(ctx):
    return ctx.node("Mul", [ctx.x(0), ctx.const(np.asarray(ctx.kw["factor"], ctx.out_dtype),
                                                "factor")])


@_register(_OPS + "PowTensor")
def _pow_tensor(ctx):
    return ctx.node("Pow", ctx.inputs_cast_to_output())


@_register(_OPS + "Maximum")
def _maximum(ctx):
    return ctx.node("Min" if ctx.kw.get("take_min") else "Max", ctx.inputs_cast_to_output())


@_register(_OPS + "Where")
def _where(ctx):
    return ctx.node("Where", [ctx.x(0)] + ctx.inputs_cast_to_output()[1:])


@_register(_OPS + "Cast")
def _cast(ctx):
    return ctx.node("Cast", [ctx.x(0)], to=ctx.onnx_dtype(ctx.out_dtype))


@_register(_OPS + "Clamp")
def _clamp(ctx):
    names = ctx.inputs_cast_to_output()
    x, bounds = names[0], list(names[1:])
    if all(a.ndim == 0 for a in ctx.arrays[1:]):  # Clip takes scalar bounds only
        lo = bounds.pop(0) if ctx.kw["has_min"] else ""
        hi = bounds.pop(0) if ctx.kw["has_max"] else ""
        return ctx.node("Clip", [x, lo, hi])
    # tensor bounds (broadcast): max with the lower one, then min with the upper one, which
    # gives the upper bound where lo > hi, as minidl and PyTorch do
    if ctx.kw["has_min"]:
        x = ctx.node("Max", [x, bounds.pop(0)])
    if ctx.kw["has_max"]:
        x = ctx.node("Min", [x, bounds.pop(0)])
    return x


@_register(_ACT + "Hardtanh")
def _hardtanh(ctx):
    dt = ctx.out_dtype
    return ctx.node("Clip", [ctx.x(0), ctx.const(np.asarray(ctx.kw["min_val"], dt), "min"),
                             ctx.const(np.asarray(ctx.kw["max_val"], dt), "max")])


@_register(_ACT + "Hardsigmoid")
def _hardsigmoid(ctx):
    return ctx.node("HardSigmoid", [ctx.x(0)], alpha=1 / 6, beta=0.5)


@_register(_F + "AddReLU")
def _add_relu(ctx):
    return ctx.node("Relu", [ctx.node("Add", ctx.inputs_cast_to_output())])


@_register(_F + "LeakyReLU")
def _leaky_relu(ctx):
    return ctx.node("LeakyRelu", [ctx.x(0)], alpha=float(ctx.kw["negative_slope"]))


@_register(_F + "ELU")
def _elu(ctx):
    return ctx.node("Elu", [ctx.x(0)], alpha=float(ctx.kw["alpha"]))


@_register(_F + "SiLU")
def _silu(ctx):
    x = ctx.x(0)
    return ctx.node("Mul", [x, ctx.node("Sigmoid", [x])])


@_register(_F + "GELU")
def _gelu(ctx):
    # opset 20 has Gelu; below it, PyTorch's formulas from Erf or Tanh
    x, dt = ctx.x(0), ctx.out_dtype
    approximate = ctx.kw["approximate"]
    half = ctx.const(np.asarray(0.5, dt), "half")
    one = ctx.const(np.asarray(1.0, dt), "one")
    if ctx.opset >= 20:
        return ctx.node("Gelu", [x], approximate=approximate)
    if approximate == "none":
        inner = ctx.node("Erf", [ctx.node("Div", [x, ctx.const(np.asarray(math.sqrt(2), dt),
                                                             "sqrt2")])])
    elif approximate == "tanh":
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        poly = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.const(np.asarray(0.044715, dt),
                                                                    "c")])])
        inner = ctx.node("Tanh", [ctx.node("Mul", [poly, ctx.const(
            np.asarray(math.sqrt(2 / math.pi), dt), "k")])])
    else:
        raise Unsupported(f"approximate={approximate!r}")
    return ctx.node("Mul", [ctx.node("Mul", [x, half]), ctx.node("Add", [inner, one])])


# ---- softmax, reductions, products --------------------------------------------------------
@_register(_OPS + "Softmax")
def _softmax(ctx):
    return ctx.node("Softmax", [ctx.x(0)], axis=int(ctx.kw["dim"]))


@_register(_OPS + "LogSoftmax")
def _log_softmax(ctx):
    return ctx.node("LogSoftmax", [ctx.x(0)], axis=int(ctx.kw["dim"]))


def _axes(ctx):
    dim, ndim = ctx.kw.get("dim"), ctx.ndim(0)
    if dim is None:
        return list(range(ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    if not dims:  # dim=(): torch reduces over every dim; the output's shape tells
        return [] if ctx.rec.out.shape == ctx.shape(0) else list(range(ndim))
    return sorted(int(d) % ndim for d in dims) if ndim else []


def _reduce(op):
    def tr(ctx):
        axes, keep = _axes(ctx), int(bool(ctx.kw.get("keepdim", False)))
        if not axes:
            return ctx.node("Identity", [ctx.x(0)])
        if op == "ReduceSum" or ctx.opset >= 18:  # axes an input from opset 13 / 18 on
            return ctx.node(op, [ctx.x(0), ctx.const(np.asarray(axes, np.int64), "axes")],
                            keepdims=keep)
        return ctx.node(op, [ctx.x(0)], axes=axes, keepdims=keep)
    return tr


TRANSLATIONS[_OPS + "Sum"] = _reduce("ReduceSum")
TRANSLATIONS[_OPS + "Mean"] = _reduce("ReduceMean")


@_register(_OPS + "Max")
def _max(ctx):
    if ctx.kw.get("take_min"):
        return _reduce("ReduceMin")(ctx)
    return _reduce("ReduceMax")(ctx)


@_register(_OPS + "MatMul")
def _matmul(ctx):
    return ctx.node("MatMul", ctx.inputs_cast_to_output())


@_register(_F + "Linear")
def _linear(ctx):
    x, w = ctx.x(0), ctx.x(1)
    b = ctx.x(2) if ctx.n_inputs > 2 else None
    if ctx.ndim(0) == 2:  # Gemm takes the (out, in) weight as it is, with transB
        return ctx.node("Gemm", [x, w] + ([b] if b else []), transB=1)
    wt = ctx.transposed(1)
    y = ctx.node("MatMul", [x, wt])
    return ctx.node("Add", [y, b]) if b else y


# ---- shapes -------------------------------------------------------------------------------
@_register(_OPS + "Reshape")
def _reshape(ctx):
    return ctx.node("Reshape", [ctx.x(0), ctx.reshape_target()])


@_register(_OPS + "Permute")
def _permute(ctx):
    return ctx.node("Transpose", [ctx.x(0)], perm=[int(a) for a in ctx.kw["axes"]])


@_register(_OPS + "Concat")
def _concat(ctx):
    names = [n for n, a in zip(ctx.inputs_cast_to_output(), ctx.arrays)
             if not (ctx.ndim_out > 1 and a.shape == (0,))]
    return ctx.node("Concat", names, axis=int(ctx.kw.get("dim", 0)) % ctx.ndim_out)


@_register(_OPS + "Expand")
def _expand(ctx):
    return ctx.node("Expand", [ctx.x(0), ctx.expand_target()])


@_register(_OPS + "Repeat")
def _repeat(ctx):
    sizes = [int(s) for s in ctx.kw["sizes"]]
    x = ctx.x(0)
    extra = len(sizes) - ctx.ndim(0)
    if extra > 0:
        x = ctx.node("Unsqueeze", [x, ctx.const(np.arange(extra, dtype=np.int64), "axes")])
    # a count that differs in the second run came from a dynamic size (x.repeat(n.shape[0],
    # 1)): the output's dim read from the graph's inputs, divided by the input's own dim
    in2 = (1,) * max(extra, 0) + tuple(ctx.shapes2[0])
    parts = list(sizes)
    for d in sorted(ctx.out_dyn):
        if in2[d] and ctx.out_shape2[d] // in2[d] == sizes[d] and \
                ctx.out_shape2[d] == in2[d] * sizes[d]:
            continue  # a fixed count of a dynamic dim
        k = d - max(extra, 0)
        if k < 0:
            parts[d] = ctx._read_dim(d)
        else:
            own = ctx.node("Gather", [ctx.node("Shape", [ctx.x(0)]),
                                      ctx.const(np.asarray([k], np.int64), "dim")], axis=0)
            parts[d] = ctx.node("Div", [ctx._read_dim(d), own])
    return ctx.node("Tile", [x, ctx._shape_tensor(parts)])


@_register(_OPS + "GetItem")
def _getitem(ctx):
    index = ctx.kw["index"]
    index = index if isinstance(index, tuple) else (index,)
    ndim = ctx.ndim(0)
    if any(i is Ellipsis for i in index):
        k = index.index(Ellipsis)
        used = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:k] + (slice(None),) * (ndim - used) + index[k + 1:]
    starts, ends, axes, steps, squeeze, unsq = [], [], [], [], [], []
    dim = out_dim = 0
    big = np.iinfo(np.int64).max
    for i in index:
        if i is None:
            unsq.append(out_dim)
            out_dim += 1
            continue
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer, slice)):
            raise Unsupported(f"index of type {type(i).__name__} (only ints, slices, None "
                              "and ... are exported)")
        if isinstance(i, slice):
            step = 1 if i.step is None else int(i.step)
            if step > 0:
                start = 0 if i.start is None else int(i.start)
                end = big if i.stop is None else int(i.stop)
            else:
                start = -1 if i.start is None else int(i.start)
                end = -big - 1 if i.stop is None else int(i.stop)
            if not (start == 0 and end == big and step == 1):
                starts.append(start), ends.append(end), axes.append(dim), steps.append(step)
            out_dim += 1
        else:
            i = int(i)
            starts.append(i), ends.append(i + 1 if i != -1 else big), axes.append(dim)
            steps.append(1)
            squeeze.append(dim)
        dim += 1
    y = ctx.x(0)
    if axes:
        y = ctx.node("Slice", [y] + [ctx.const(np.asarray(v, np.int64), n) for v, n in
                                     ((starts, "starts"), (ends, "ends"), (axes, "axes"),
                                      (steps, "steps"))])
    if squeeze:
        y = ctx.node("Squeeze", [y, ctx.const(np.asarray(squeeze, np.int64), "axes")])
    if unsq:
        y = ctx.node("Unsqueeze", [y, ctx.const(np.asarray(unsq, np.int64), "axes")])
    if y == ctx.x(0):
        y = ctx.node("Identity", [y])
    return y


# ---- neural-network layers ----------------------------------------------------------------
def _conv(ctx, stride, padding, dilation, groups):
    x, w = ctx.x(0), ctx.x(1)
    b = [ctx.x(2)] if ctx.n_inputs > 2 else []
    k = list(ctx.shape(1)[2:])
    pads = [int(p) for p in padding]
    return ctx.node("Conv", [x, w] + b, kernel_shape=k, strides=[int(s) for s in stride],
                    pads=pads + pads, dilations=[int(d) for d in dilation], group=int(groups))


@_register(_F + "Conv2d")
def _conv2d(ctx):
    return _conv(ctx, ctx.kw.get("stride", (1, 1)), ctx.kw.get("padding", (0, 0)), (1, 1), 1)


@_register(_CONV + "ConvNd")
def _conv_nd(ctx):
    kw = ctx.kw
    padding = kw.get("padding", (0, 0))
    if any(not isinstance(p, (int, np.integer)) for p in padding):
        raise Unsupported(f"padding {padding!r}")
    return _conv(ctx, kw.get("stride", (1, 1)), padding, kw.get("dilation", (1, 1)),
                 kw.get("groups", 1))


@_register(_F + "MaxPool2d")
def _max_pool2d(ctx):
    p = [int(v) for v in ctx.kw["padding"]]
    return ctx.node("MaxPool", [ctx.x(0)], kernel_shape=list(ctx.kw["kernel"]),
                    strides=list(ctx.kw["stride"]), pads=p + p)


@_register(_F + "AvgPool2d")
def _avg_pool2d(ctx):
    p = [int(v) for v in ctx.kw["padding"]]
    return ctx.node("AveragePool", [ctx.x(0)], kernel_shape=list(ctx.kw["kernel"]),
                    strides=list(ctx.kw["stride"]), pads=p + p, count_include_pad=1)


@_register(_POOL + "MaxPoolWindows")
def _max_pool_windows(ctx):
    kw = ctx.kw
    if isinstance(ctx.rec.kwargs.get("keep"), list):  # keep: the indices were asked for
        raise Unsupported("return_indices=True")
    p = [int(v) for v in kw["padding"]]
    end = [int(v) + int(e) for v, e in zip(kw["padding"], kw["extra"])]
    return ctx.node("MaxPool", [ctx.x(0)], kernel_shape=[int(k) for k in kw["kernel"]],
                    strides=[int(s) for s in kw["stride"]], pads=p + end,
                    dilations=[int(d) for d in kw["dilation"]])


@_register(_POOL + "AvgPoolWindows")
def _avg_pool_windows(ctx):
    kw = ctx.kw
    kernel = [int(k) for k in kw["kernel"]]
    p = [int(v) for v in kw["padding"]]
    divisor = np.asarray(kw["divisor"])
    if any(int(e) for e in kw["extra"]) or not np.all(divisor == math.prod(kernel)):
        raise Unsupported("ceil_mode, count_include_pad=False or divisor_override (a divisor "
                          "that is not the window size)")
    return ctx.node("AveragePool", [ctx.x(0)], kernel_shape=kernel,
                    strides=[int(s) for s in kw["stride"]], pads=p + p, count_include_pad=1)


@_register(_POOL + "AdaptiveAvgPoolNd")
def _adaptive_avg_pool(ctx):
    sizes, outs = ctx.shape(0)[2:], [int(o) for o in ctx.kw["out_sizes"]]
    if all(o == 1 for o in outs):
        return ctx.node("GlobalAveragePool", [ctx.x(0)])
    if any(s % o for s, o in zip(sizes, outs)) or ctx.dynamic(0) & set(range(2, ctx.ndim(0))):
        raise Unsupported(f"output size {tuple(outs)} from input size {tuple(sizes)} (only "
                          "output sizes that divide a static input size are exported)")
    k = [s // o for s, o in zip(sizes, outs)]
    return ctx.node("AveragePool", [ctx.x(0)], kernel_shape=k, strides=k)


@_register(_F + "BatchNorm")
def _batch_norm(ctx):
    kw = ctx.kw
    c = ctx.shape(0)[1]
    rest = list(range(1, ctx.n_inputs))
    tracked = kw.get("running_mean") is not None
    dt = ctx.array_kw("running_mean").dtype if tracked else ctx.out_dtype
    w = ctx.x(rest.pop(0)) if kw["has_weight"] else ctx.const(np.ones(c, dt), "scale")
    b = ctx.x(rest.pop(0)) if kw["has_bias"] else ctx.const(np.zeros(c, dt), "bias")
    if kw.get("training") or not tracked:  # (track_running_stats=False: in either mode)
        # batch statistics, written out (torch writes BatchNormalization with
        # training_mode=1, which ONNX Runtime 1.32's optimizer removes as an identity where
        # the running statistics are 0 and 1, a fresh layer's): (x - mean) / sqrt(var + eps)
        # over every dim but the channels, the biased variance, then weight and bias
        nd = ctx.ndim(0)
        axes = [0] + list(range(2, nd))
        x = ctx.x(0)
        mean_b = _reduce_mean(ctx, x, axes)
        d = ctx.node("Sub", [x, mean_b])
        var_b = _reduce_mean(ctx, ctx.node("Mul", [d, d]), axes)
        eps = ctx.const(np.asarray(kw.get("eps", 1e-5), ctx.out_dtype), "eps")
        y = ctx.node("Div", [d, ctx.node("Sqrt", [ctx.node("Add", [var_b, eps])])])
        shape = ctx.const(np.asarray([c] + [1] * (nd - 2), np.int64), "channel_shape")
        y = ctx.node("Add", [ctx.node("Mul", [y, ctx.node("Reshape", [w, shape])]),
                             ctx.node("Reshape", [b, shape])])
    else:
        y = ctx.node("BatchNormalization", [ctx.x(0), w, b, ctx.kw_value("running_mean"),
                                            ctx.kw_value("running_var")],
                     epsilon=float(kw.get("eps", 1e-5)))
    return ctx.node("Relu", [y]) if kw.get("relu") else y


@_register(_F + "Dropout")
def _dropout(ctx):
    # training mode only (eval runs no op): ONNX's Dropout with training_mode, random as
    # minidl's (another draw)
    ratio = ctx.const(np.asarray(ctx.kw["p"], ctx.out_dtype), "ratio")
    y, _ = ctx.node("Dropout", [ctx.x(0), ratio, ctx.const(np.asarray(True), "training_mode")],
                    n_out=2)
    return y


def _reduce_mean(ctx, x, axes):
    if ctx.opset >= 18:
        return ctx.node("ReduceMean", [x, ctx.const(np.asarray(axes, np.int64), "axes")],
                        keepdims=1)
    return ctx.node("ReduceMean", [x], axes=axes, keepdims=1)


@_register(_F + "LayerNorm")
def _layer_norm(ctx):
    kw = ctx.kw
    nd = int(kw["ndim"])
    shape = ctx.shape(0)[-nd:]
    rest = list(range(1, ctx.n_inputs))
    w = ctx.x(rest.pop(0)) if kw["has_weight"] else ctx.const(np.ones(shape, ctx.out_dtype),
                                                                "scale")
    inputs = [ctx.x(0), w] + ([ctx.x(rest.pop(0))] if kw["has_bias"] else [])
    return ctx.node("LayerNormalization", inputs, axis=-nd, epsilon=float(kw["eps"]))


@_register(_F + "Embedding")
def _embedding(ctx):
    return ctx.node("Gather", [ctx.x(0), ctx.kw_value("indices")], axis=0)


@_register(_F + "Pad")
def _pad(ctx):
    widths = [(int(lo), int(hi)) for lo, hi in ctx.kw["widths"]]
    pads = [lo for lo, _ in widths] + [hi for _, hi in widths]  # negative ones crop, as here
    value = ctx.const(np.asarray(ctx.kw["value"], ctx.out_dtype), "value")
    return ctx.node("Pad", [ctx.x(0), ctx.const(np.asarray(pads, np.int64), "pads"), value],
                    mode="constant")


@_register(_OPS + "MaxDim")
def _max_dim(ctx):
    # x.max(dim) / x.min(dim): the values (the indices the caller took with argmax are
    # outside the graph, and refused where they are used); max or min told by the output
    x, dim, keep = ctx.arrays[0], int(ctx.kw["dim"]) % ctx.ndim(0), bool(ctx.kw["keepdim"])
    xp_max = x.max(axis=dim, keepdims=keep)
    op = "ReduceMax" if (xp_max == ctx.rec.out).all() else "ReduceMin"
    axes = np.asarray([dim], np.int64)
    if ctx.opset >= 18:
        return ctx.node(op, [ctx.x(0), ctx.const(axes, "axes")], keepdims=int(keep))
    return ctx.node(op, [ctx.x(0)], axes=[dim], keepdims=int(keep))


@_register(_OPS + "MaskedFill")
def _masked_fill(ctx):
    a, _, value = ctx.inputs_cast_to_output()
    return ctx.node("Where", [ctx.x(1), value, a])


@_register("minidl.shape_ops.Roll")
def _roll(ctx):
    # each axis: the last `shift` entries moved to the front, as two Slices and a Concat
    shifts, axes = ctx.kw["shifts"], ctx.kw["axes"]
    shifts = shifts if isinstance(shifts, (tuple, list)) else (shifts,)
    if axes is None:
        raise Unsupported("roll without dims (over the flattened tensor)")
    axes = axes if isinstance(axes, (tuple, list)) else (axes,)
    y = ctx.x(0)
    for s, d in zip(shifts, axes):
        d = int(d) % ctx.ndim(0)
        if d in ctx.dynamic(0):
            raise Unsupported("roll along a dynamic axis")
        n = ctx.shape(0)[d]
        s = int(s) % n if n else 0
        if not s:
            continue
        ax = ctx.const(np.asarray([d], np.int64), "axes")

        def part(start, end):
            return ctx.node("Slice", [y, ctx.const(np.asarray([start], np.int64), "starts"),
                                      ctx.const(np.asarray([end], np.int64), "ends"), ax])
        y = ctx.node("Concat", [part(n - s, n), part(0, n - s)], axis=d)
    return y if y != ctx.x(0) else ctx.node("Identity", [y])


# ---- attention ----------------------------------------------------------------------------
_ATTN = "minidl.nn.attention."


def _reduce_max_last(ctx, x):
    if ctx.opset >= 18:
        return ctx.node("ReduceMax", [x, ctx.const(np.asarray([-1], np.int64), "axes")],
                        keepdims=1)
    return ctx.node("ReduceMax", [x], axes=[-1], keepdims=1)


def _safe_softmax(ctx, s):
    """softmax over the last dim, zeros (not NaN) on a row of only -inf (every key masked)."""
    y = ctx.node("Softmax", [s], axis=-1)
    ninf = ctx.const(np.asarray(-np.inf, ctx.out_dtype), "ninf")
    masked = ctx.node("Equal", [_reduce_max_last(ctx, s), ninf])
    return ctx.node("Where", [masked, ctx.const(np.asarray(0, ctx.out_dtype), "zero"), y])


def _attend(ctx, q, k, v, ndim, mask):
    kw = ctx.kw
    if float(kw.get("dropout_p", 0.0)) > 0:
        raise Unsupported("dropout_p > 0")
    perm = list(range(ndim - 2)) + [ndim - 1, ndim - 2]
    s = ctx.node("MatMul", [q, ctx.node("Transpose", [k], perm=perm)])
    s = ctx.node("Mul", [s, ctx.const(np.asarray(kw.get("scale", 1.0), ctx.out_dtype),
                                      "scale")])
    if kw.get("causal"):  # -inf above the diagonal of the (L, S) corner, at any L and S
        size = ctx.node("Slice", [ctx.node("Shape", [s]),
                                  ctx.const(np.asarray([-2], np.int64), "starts"),
                                  ctx.const(np.asarray([ndim], np.int64), "ends")])
        full = ctx.node("ConstantOfShape", [size], value=ctx.b.onnx.numpy_helper.from_array(
            np.asarray([-np.inf], ctx.out_dtype)))
        s = ctx.node("Add", [s, ctx.node("Trilu", [full, ctx.const(np.asarray(1, np.int64),
                                                                     "k")], upper=1)])
    elif mask is not None:
        s = ctx.node("Add", [s, mask])
    return ctx.node("MatMul", [_safe_softmax(ctx, s), v])


@_register(_ATTN + "SafeSoftmax")
def _safe_softmax_op(ctx):
    return _safe_softmax(ctx, ctx.x(0))


@_register(_ATTN + "Attention")
def _attention(ctx):
    mask = ctx.x(3) if ctx.n_inputs > 3 else None
    return _attend(ctx, ctx.x(0), ctx.x(1), ctx.x(2), ctx.ndim(0), mask)


@_register(_ATTN + "PackedSelfAttention")
def _packed_self_attention(ctx):
    # qkv (L, N, 3E) or (N, L, 3E) -> q, k, v (N, H, L, hd); the output back in qkv's layout
    heads, batch_first = int(ctx.kw["heads"]), bool(ctx.kw["batch_first"])
    e3 = ctx.shape(0)[2]
    hd = e3 // (3 * heads)
    x = ctx.node("Reshape", [ctx.x(0), ctx.const(np.asarray([0, 0, 3, heads, hd], np.int64),
                                                 "shape")])
    order = [0, 2, 1, 3] if batch_first else [1, 2, 0, 3]
    q, k, v = (ctx.node("Transpose", [ctx.node("Gather", [x, ctx.const(
        np.asarray(i, np.int64), "index")], axis=2)], perm=order) for i in range(3))
    mask = ctx.x(1) if ctx.n_inputs > 1 else None
    out = _attend(ctx, q, k, v, 4, mask)
    merged = ctx.node("Transpose", [out], perm=[0, 2, 1, 3] if batch_first else [2, 0, 1, 3])
    return ctx.node("Reshape", [merged, ctx.const(np.asarray([0, 0, heads * hd], np.int64),
                                                  "shape")])


# ---- comparisons, logical ops, argmax (recorded only while the exporter traces) -----------
_COMPARE = {"less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
            "greater_equal": "GreaterOrEqual", "equal": "Equal"}
_LOGICAL = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor",
            "bitwise_and": "And", "bitwise_or": "Or", "bitwise_xor": "Xor"}
_BITWISE = {"bitwise_and": "BitwiseAnd", "bitwise_or": "BitwiseOr", "bitwise_xor": "BitwiseXor",
            "invert": "BitwiseNot"}


@_register(_OPS + "Compare")
def _compare(ctx):
    op = ctx.kw["op"]
    names = [ctx.x(i) for i in range(ctx.n_inputs)]
    if op in _COMPARE:
        return ctx.node(_COMPARE[op], names)
    if op == "not_equal":
        return ctx.node("Not", [ctx.node("Equal", names)])
    if op == "isnan":
        return ctx.node("IsNaN", names)
    if op == "isinf":
        return ctx.node("IsInf", names)
    if op == "isfinite":
        return ctx.node("Not", [ctx.node("Or", [ctx.node("IsNaN", names),
                                                ctx.node("IsInf", names)])])
    all_bool = all(a.dtype == np.bool_ for a in ctx.arrays)
    if op.startswith("logical_"):  # on any dtype: nonzero is True
        names = [n if a.dtype == np.bool_ else ctx.node("Cast", [n], to=ctx.onnx_dtype(np.bool_))
                 for n, a in zip(names, ctx.arrays)]
        return ctx.node("Not", names) if op == "logical_not" else ctx.node(_LOGICAL[op], names)
    if all_bool:  # ~, &, |, ^ on bools
        return ctx.node("Not", names) if op == "invert" else ctx.node(_LOGICAL[op], names)
    if ctx.opset < 18 or op not in _BITWISE:
        raise Unsupported(f"{op} on {ctx.arrays[0].dtype} below opset 18")
    return ctx.node(_BITWISE[op], names)


@_register(_OPS + "ArgMaxMin")
def _arg_max_min(ctx):
    kw = ctx.kw
    op = "ArgMin" if kw["take_min"] else "ArgMax"
    if kw["dim"] is None:  # over the flattened input
        flat = ctx.node("Reshape", [ctx.x(0), ctx.const(np.asarray([-1], np.int64), "shape")])
        arg = ctx.node(op, [flat], axis=0, keepdims=0)
        if not kw["keepdim"]:
            return arg
        return ctx.node("Reshape", [arg, ctx.const(np.ones(ctx.ndim(0), np.int64), "shape")])
    return ctx.node(op, [ctx.x(0)], axis=int(kw["dim"]), keepdims=int(bool(kw["keepdim"])))


# ---- recurrent layers ---------------------------------------------------------------------
_RNN = "minidl.nn.rnn."


def _gate_order(mode, hidden):
    """Row order that turns torch's stacked gates into ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU
    r,z,n -> z,r,h; RNN one gate."""
    h = np.arange(hidden)
    if mode == "LSTM":
        return np.concatenate([h, h + 3 * hidden, h + hidden, h + 2 * hidden])
    if mode == "GRU":
        return np.concatenate([h + hidden, h, h + 2 * hidden])
    return h


@_register(_RNN + "Recurrence", _RNN + "LSTMRecurrence", _RNN + "RNNRecurrence")
def _recurrence(ctx):
    # one layer, one direction over the sequence from the projected input xw (L, N, G): ONNX's
    # LSTM/GRU/RNN with X = xw and W the permutation that puts its gates in ONNX's order (an
    # exact product), R = w_hh's rows in that order, B = [0, b_hh]
    kw = ctx.kw
    mode = kw["mode"]
    packed = kw.get("lengths") is not None
    if kw.get("proj"):
        if packed:
            raise Unsupported("proj_size > 0 with packed sequences")
        return _lstm_projection_scan(ctx)
    lstm = mode == "LSTM"
    w_hh_i = 3 if lstm else 2
    gates, hidden = ctx.shape(w_hh_i)
    order = _gate_order(mode, hidden)
    dt = ctx.out_dtype
    if any(a.dtype != dt for a in ctx.arrays):
        raise Unsupported("inputs of mixed dtypes (autocast)")

    def first_axis(name):
        return ctx.node("Unsqueeze", [name, ctx.const(np.asarray([0], np.int64), "axes")])

    w = ctx.const(np.eye(gates, dtype=dt)[order][None], "W")
    r = first_axis(ctx.node("Gather", [ctx.x(w_hh_i), ctx.const(order.astype(np.int64),
                                                                 "gate_order")], axis=0))
    inputs = [ctx.x(0), w, r]
    if ctx.n_inputs > w_hh_i + 1:
        b = ctx.node("Gather", [ctx.x(w_hh_i + 1), ctx.const(order.astype(np.int64),
                                                              "gate_order")], axis=0)
        inputs.append(first_axis(ctx.node("Concat", [ctx.const(np.zeros(gates, dt), "W_bias"),
                                                     b], axis=0)))
    else:
        inputs.append("")
    lengths = None
    if packed:  # sequence_lens: ONNX's Y is zero past each sequence's end
        lengths = ctx.node("Cast", [ctx.kw_value("lengths")], to=ctx.onnx_dtype(np.int64))
        inputs.append(ctx.node("Cast", [lengths], to=ctx.onnx_dtype(np.int32)))
    else:
        inputs.append("")
    inputs.append(first_axis(ctx.x(1)))  # initial_h
    attrs = {"hidden_size": int(hidden),
             "direction": "reverse" if kw["reverse"] else "forward"}
    if lstm:
        inputs.append(first_axis(ctx.x(2)))
        y, y_h, y_c = ctx.node("LSTM", inputs, n_out=3, **attrs)
    elif mode == "GRU":
        y, y_h = ctx.node("GRU", inputs, n_out=2, linear_before_reset=1, **attrs)
    else:
        y, y_h = ctx.node("RNN", inputs, n_out=2,
                          activations=["Relu" if mode == "RNN_RELU" else "Tanh"], **attrs)
    hs = ctx.node("Squeeze", [y, ctx.const(np.asarray([1], np.int64), "axes")])  # (L, N, H)
    if packed:
        # minidl's op carries each sequence's state past its end: the last one going
        # forward, the initial one going in reverse (it starts at the sequence's end)
        steps = ctx.node("Range", [ctx.const(np.asarray(0, np.int64), "start"),
                                   ctx.node("Squeeze", [_dim_size(ctx, 0, 0)]),
                                   ctx.const(np.asarray(1, np.int64), "delta")])
        valid = ctx.node("Less", [
            ctx.node("Unsqueeze", [steps, ctx.const(np.asarray([1, 2], np.int64), "axes")]),
            ctx.node("Unsqueeze", [lengths, ctx.const(np.asarray([0, 2], np.int64), "axes")])])
        carried = ctx.x(1) if kw["reverse"] else ctx.node(
            "Squeeze", [y_h, ctx.const(np.asarray([0], np.int64), "axes")])
        hs = ctx.node("Where", [valid, hs, carried])
    if not lstm:
        return hs
    # minidl's LSTM op returns (L, N, 2H): the hidden states, then the cell states; ONNX gives
    # the last cell state only, which is what nn.LSTM reads (at the last step of its direction)
    # and all of it for a sequence of one step (nn.LSTMCell): it fills every step here
    cs = ctx.node("Expand", [y_c, ctx.node("Shape", [hs])])
    return ctx.node("Concat", [hs, cs], axis=2)


def _lstm_projection_scan(ctx):
    # an LSTM with proj_size: ONNX's LSTM has no projection, so one Scan over the steps whose
    # body is minidl's step (gates i, f, g, o; h = (o * tanh(c)) @ w_hr.T); the weights ride
    # along as unchanged state so that the body needs no outer-scope names. The output is
    # minidl's op's: the hidden states, then the cell states of every step
    helper = ctx.b.onnx.helper
    dt = ctx.out_dtype
    if any(a.dtype != dt for a in ctx.arrays):
        raise Unsupported("inputs of mixed dtypes (autocast)")
    has_bias = ctx.n_inputs == 6
    hidden = ctx.shape(2)[-1]
    elem = ctx.onnx_dtype(dt)

    def name(hint):
        return ctx.b.fresh(f"scan_{hint}")

    nodes = []

    def node(op, inputs, **attrs):
        out = name(op)
        nodes.append(helper.make_node(op, inputs, [out], name=name(op + "_node"), **attrs))
        return out

    h_prev, c_prev, w_hh, w_hr, x_t = (name(n) for n in ("h", "c", "w_hh", "w_hr", "x"))
    b_hh = name("b_hh") if has_bias else None
    state_in = [h_prev, c_prev, w_hh] + ([b_hh] if has_bias else []) + [w_hr]
    gh = node("Gemm", [h_prev, w_hh] + ([b_hh] if has_bias else []), transB=1)
    a = node("Add", [x_t, gh])
    split = [name(f"gate{k}") for k in range(4)]
    sizes = name("gate_sizes")  # a Constant inside the body (no outer-scope names)
    nodes.append(helper.make_node("Constant", [], [sizes], name=name("Constant_node"),
                                  value=ctx.b.onnx.numpy_helper.from_array(
                                      np.full(4, hidden, np.int64))))
    nodes.append(helper.make_node("Split", [a, sizes], split, name=name("Split_node"), axis=1))
    i, f, o = (node("Sigmoid", [split[k]]) for k in (0, 1, 3))
    g = node("Tanh", [split[2]])
    c = node("Add", [node("Mul", [f, c_prev]), node("Mul", [i, g])])
    h = node("Gemm", [node("Mul", [o, node("Tanh", [c])]), w_hr], transB=1)
    outs = [h, c] + [node("Identity", [v]) for v in state_in[2:]] + \
        [node("Identity", [h]), node("Identity", [c])]

    def info(n):
        return helper.make_tensor_value_info(n, elem, None)

    body = helper.make_graph(nodes, name("body"), [info(n) for n in state_in + [x_t]],
                             [info(n) for n in outs])
    weights = [ctx.x(3)] + ([ctx.x(4)] if has_bias else []) + [ctx.x(ctx.n_inputs - 1)]
    direction = 1 if ctx.kw["reverse"] else 0
    results = ctx.node("Scan", [ctx.x(1), ctx.x(2)] + weights + [ctx.x(0)],
                       n_out=len(outs), body=body, num_scan_inputs=1,
                       scan_input_directions=[direction],
                       scan_output_directions=[direction, direction])
    return ctx.node("Concat", [results[-2], results[-1]], axis=2)


# ---- more activations, resampling ---------------------------------------------------------
def _scalar(ctx, value, hint):
    return ctx.const(np.asarray(value, ctx.out_dtype), hint)


@_register(_F + "Softplus")
def _softplus_plain(ctx):
    return ctx.node("Softplus", [ctx.x(0)])


@_register(_ACT + "Softplus")
def _softplus(ctx):
    # x where x * beta > threshold, else softplus(x * beta) / beta
    x, beta, threshold = ctx.x(0), float(ctx.kw["beta"]), float(ctx.kw["threshold"])
    z = ctx.node("Mul", [x, _scalar(ctx, beta, "beta")]) if beta != 1 else x
    soft = ctx.node("Softplus", [z])
    if beta != 1:
        soft = ctx.node("Div", [soft, _scalar(ctx, beta, "beta")])
    return ctx.node("Where", [ctx.node("Greater", [z, _scalar(ctx, threshold, "threshold")]),
                              x, soft])


@_register(_ACT + "Mish")
def _mish(ctx):
    if ctx.opset >= 18:
        return ctx.node("Mish", [ctx.x(0)])
    x = ctx.x(0)
    return ctx.node("Mul", [x, ctx.node("Tanh", [ctx.node("Softplus", [x])])])


@_register(_ACT + "LogSigmoid")
def _log_sigmoid(ctx):
    # -softplus(-x): stable at both ends
    return ctx.node("Neg", [ctx.node("Softplus", [ctx.node("Neg", [ctx.x(0)])])])


@_register(_ACT + "Tanhshrink")
def _tanhshrink(ctx):
    x = ctx.x(0)
    return ctx.node("Sub", [x, ctx.node("Tanh", [x])])


@_register(_ACT + "Hardshrink")
def _hardshrink(ctx):
    return ctx.node("Shrink", [ctx.x(0)], lambd=float(ctx.kw["lambd"]), bias=0.0)


@_register(_ACT + "Softshrink")
def _softshrink(ctx):
    lambd = float(ctx.kw["lambd"])
    return ctx.node("Shrink", [ctx.x(0)], lambd=lambd, bias=lambd)


@_register(_ACT + "Threshold")
def _threshold(ctx):
    x = ctx.x(0)
    below = ctx.node("LessOrEqual", [x, _scalar(ctx, ctx.kw["threshold"], "threshold")])
    return ctx.node("Where", [below, _scalar(ctx, ctx.kw["value"], "value"), x])


@_register(_ACT + "CELU")
def _celu(ctx):
    # scale * (x if x > 0 else alpha * (exp(x / inner) - 1)): ELU, CELU and SELU
    alpha, scale, inner = (float(ctx.kw[k]) for k in ("alpha", "scale", "inner"))
    x = ctx.x(0)
    if scale == 1 and inner == 1:
        return ctx.node("Elu", [x], alpha=alpha)
    if scale == 1 and inner == alpha:
        return ctx.node("Celu", [x], alpha=alpha)
    if inner == 1:
        return ctx.node("Selu", [x], alpha=alpha, gamma=scale)
    below = ctx.node("Mul", [ctx.node("Sub", [ctx.node("Exp", [ctx.node("Div", [
        ctx.node("Min", [x, _scalar(ctx, 0, "zero")]), _scalar(ctx, inner, "inner")])]),
        _scalar(ctx, 1, "one")]), _scalar(ctx, alpha, "alpha")])
    y = ctx.node("Where", [ctx.node("Greater", [x, _scalar(ctx, 0, "zero")]), x, below])
    return ctx.node("Mul", [y, _scalar(ctx, scale, "scale")])


@_register(_ACT + "PReLU")
def _prelu(ctx):
    x_ndim, w_size = ctx.ndim(0), int(np.prod(ctx.shape(1)))
    if w_size > 1 and x_ndim < 2:
        raise Unsupported("per-channel weights on an input of fewer than 2 dims")
    if w_size > 1:  # one slope per channel (dim 1)
        shape = [w_size] + [1] * (x_ndim - 2)
    else:
        shape = [1] * max(x_ndim, 1) if x_ndim else []
    slope = ctx.node("Reshape", [ctx.x(1), ctx.const(np.asarray(shape, np.int64), "shape")])
    return ctx.node("PRelu", [ctx.x(0), slope])


@_register(_POOL + "Resample")
def _resample(ctx):
    # interpolate / nn.Upsample, every mode: along each resized dim the output is the sum of
    # the input gathered at each tap's indices times its weights, as minidl computes it
    y = ctx.x(0)
    dyn = ctx.dynamic(0)
    for d, index, weights in ctx.kw["taps"]:
        if d in dyn:
            raise Unsupported("resizing a dynamic axis")
        shape = [1] * ctx.ndim(0)
        shape[d] = -1
        total = None
        for idx, wt in zip(index, weights):
            part = ctx.node("Gather", [y, ctx.const(np.asarray(idx, np.int64), "index")],
                            axis=int(d))
            if wt is not None:
                part = ctx.node("Mul", [part, ctx.const(
                    np.asarray(wt, ctx.out_dtype).reshape(shape), "weights")])
            total = part if total is None else ctx.node("Add", [total, part])
        y = total
    return y


# ---- indices, ordering, gather/scatter, running sums --------------------------------------
_IDX = "minidl.indexing."


def _dim_size(ctx, i, dim):
    """Input ``i``'s size along ``dim`` as a 1-element int64 tensor read from the graph
    (Shape, then Gather), so that it follows a dynamic axis."""
    return ctx.node("Gather", [ctx.node("Shape", [ctx.x(i)]),
                               ctx.const(np.asarray([dim], np.int64), "dim")], axis=0)


@_register(_OPS + "TopkIndices")
def _topk_indices(ctx):
    # ONNX's TopK orders equal values by position (lower first); minidl's (PyTorch's CPU)
    # order among ties can differ
    k = ctx.const(np.asarray([int(ctx.kw["k"])], np.int64), "k")
    _, indices = ctx.node("TopK", [ctx.x(0), k], n_out=2, axis=int(ctx.kw["dim"]),
                          largest=int(bool(ctx.kw["largest"])), sorted=1)
    return indices


@_register("minidl.shape_ops.SortIndices")
def _sort_indices(ctx):
    # a TopK of the whole dim (its size read from the graph): stable, equal values by
    # position, as minidl's stable sort in either direction
    dim = int(ctx.kw["dim"])
    _, indices = ctx.node("TopK", [ctx.x(0), _dim_size(ctx, 0, dim)], n_out=2, axis=dim,
                          largest=int(bool(ctx.kw["descending"])), sorted=1)
    return indices


@_register(_OPS + "TakeAlongDim")
def _take_along_dim(ctx):
    return ctx.node("GatherElements", [ctx.x(0), ctx.kw_value("index")],
                    axis=int(ctx.kw["dim"]))


@_register(_IDX + "Gather")
def _gather(ctx):
    return ctx.node("GatherElements", [ctx.x(0), ctx.kw_value("index")],
                    axis=int(ctx.kw["dim"]))


@_register(_IDX + "IndexSelect")
def _index_select(ctx):
    return ctx.node("Gather", [ctx.x(0), ctx.kw_value("index")], axis=int(ctx.kw["dim"]))


@_register(_IDX + "Scatter")
def _scatter(ctx):
    index, src = ctx.kw_value("index"), ctx.inputs_cast_to_output()[1]
    nd = ctx.ndim(0)
    if ctx.shape(1) != tuple(ctx.kw["index"].shape):  # src's corner of index's shape
        src = ctx.node("Slice", [src, ctx.const(np.zeros(nd, np.int64), "starts"),
                                 ctx.node("Shape", [index]),
                                 ctx.const(np.arange(nd, dtype=np.int64), "axes")])
    return ctx.node("ScatterElements", [ctx.x(0), index, src], axis=int(ctx.kw["dim"]),
                    reduction="add" if ctx.kw["add"] else "none")


@_register(_OPS + "NonZero")
def _nonzero(ctx):
    return ctx.node("Transpose", [ctx.node("NonZero", [ctx.x(0)])], perm=[1, 0])


@_register(_OPS + "AnyAll")
def _any_all(ctx):
    x, axes = ctx.x(0), [int(a) for a in ctx.kw["axes"]]
    if ctx.arrays[0].dtype != np.bool_:  # nonzero (NaN included) is True
        x = ctx.node("Cast", [x], to=ctx.onnx_dtype(np.bool_))
    if axes:  # any: a sum (0 over no elements), all: a min (the type's largest over none)
        op = "ReduceSum" if ctx.kw["op"] == "any" else "ReduceMin"
        x = ctx.node("Cast", [x], to=ctx.onnx_dtype(np.int64))
        keep = int(bool(ctx.kw["keepdim"]))
        if ctx.opset >= 18 or op == "ReduceSum":
            x = ctx.node(op, [x, ctx.const(np.asarray(axes, np.int64), "axes")], keepdims=keep)
        else:
            x = ctx.node(op, [x], axes=axes, keepdims=keep)
    return ctx.node("Cast", [x], to=ctx.onnx_dtype(ctx.out_dtype))


@_register("minidl.math_ops.CumSum")
def _cumsum(ctx):
    return ctx.node("CumSum", [ctx.x(0), ctx.const(np.asarray(int(ctx.kw["dim"]), np.int64),
                                                   "axis")])


@_register("minidl.nn._rnn_utils.PadPacked")
def _pad_packed(ctx):
    # pad_packed_sequence: padding_value past each length, cut to the longest length
    padded, nd = ctx.x(0), ctx.ndim(0)
    lengths = ctx.node("Cast", [ctx.x(1)], to=ctx.onnx_dtype(np.int64))
    steps = ctx.node("Range", [ctx.const(np.asarray(0, np.int64), "start"),
                               ctx.node("Squeeze", [_dim_size(ctx, 0, 0)]),
                               ctx.const(np.asarray(1, np.int64), "delta")])
    valid = ctx.node("Less", [
        ctx.node("Unsqueeze", [steps, ctx.const(np.asarray([1], np.int64), "axes")]),
        ctx.node("Unsqueeze", [lengths, ctx.const(np.asarray([0], np.int64), "axes")])])
    if nd > 2:
        valid = ctx.node("Unsqueeze", [valid, ctx.const(np.arange(2, nd, dtype=np.int64),
                                                        "axes")])
    value = ctx.const(np.asarray(ctx.kw["padding_value"], ctx.out_dtype), "padding_value")
    y = ctx.node("Where", [valid, padded, value])
    total = ctx.kw["total_length"]
    if total is not None:
        end = ctx.const(np.asarray([int(total)], np.int64), "total_length")
    else:
        end = ctx.node("ReduceMax", [lengths], keepdims=1) if ctx.opset < 18 else ctx.node(
            "ReduceMax", [lengths, ctx.const(np.asarray([0], np.int64), "axes")], keepdims=1)
    return ctx.node("Slice", [y, ctx.const(np.asarray([0], np.int64), "starts"), end,
                              ctx.const(np.asarray([0], np.int64), "axes")])
