"""Counting the floating-point operations of a model (``torch.utils.flop_counter``): the
matrix products, convolutions and attention of a forward and backward pass, by module.

    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    counter.get_total_flops()          # e.g. 3 * the forward's FLOPs for a conv net
    counter.get_flop_counts()          # {"Global": {"convolution": ...}, "ResNet.layer1": ...}

What is counted, and how, follows torch's counter (so the totals agree with PyTorch's on the
same model; ``tests/test_flop_counter.py`` checks it): a multiply-add is 2 FLOPs; a product
(M, K) @ (K, N) costs 2*M*N*K (batched: times the batch), and its backward one such product
per input that needs a gradient; a convolution 2 * N * C_out * C_in/groups * kernel size *
output size, its backward torch's formulas for the input and the weight gradient; attention
2*B*H*L*S*(E + Ev) forward and twice that backward (torch's formula; torch 2.13's CPU build
leaves its CPU attention kernel uncounted, so there its totals lack this). Elementwise ops,
reductions, norms and softmax are not counted (they are not in torch's either). Products are
named as torch runs them: a linear op with a bias is addmm (mm on a non-contiguous input),
addmm/baddbmm keep their names, matmul folds a batch into mm or a matrix-vector product
(uncounted) where torch's should_fold does, addbmm's forward and bilinear are uncounted (torch
has no formula for them). minidl's fused ops are counted as the products they do: an einsum as
torch's pairwise batched products (bmm), a recurrent layer (LSTM, GRU, RNN) as its per-step
products with the hidden weights (its input projection is a linear op, counted as such).
Modules are named by their path from the outermost module called, wherever they are called
from. Counters nest, and nest with ``profile()`` either way round.
"""
from __future__ import annotations

import math
from collections import defaultdict

from .. import autograd

__all__ = ["FlopCounterMode", "op_flops"]


def _prod(xs):
    return math.prod(int(v) for v in xs)


# ---- the formulas -------------------------------------------------------------------------------
def _mm(a_shape, b_shape):
    """FLOPs of a @ b (matmul's broadcasting), or 0 where torch runs no counted product (b
    one-dimensional: a matrix-vector or dot product)."""
    if len(b_shape) < 2:
        return 0
    m = a_shape[-2] if len(a_shape) >= 2 else 1
    k, n = b_shape[-2], b_shape[-1]
    batch_a = a_shape[:-2] if len(a_shape) >= 2 else ()
    batch = _broadcast(batch_a, b_shape[:-2])
    return 2 * _prod(batch) * m * n * k


def _broadcast(a, b):
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    return tuple(max(x, y) for x, y in zip(a, b))


def _conv(x_shape, w_shape, out_shape, transposed=False):
    """torch's conv_flop_count."""
    conv_shape = (x_shape if transposed else out_shape)[2:]
    c_out, c_in, *kernel = w_shape
    return 2 * _prod(conv_shape) * _prod(kernel) * x_shape[0] * c_out * c_in


def _t(shape):
    return (shape[1], shape[0]) + tuple(shape[2:])


def _conv_backward(gy_shape, x_shape, w_shape, needs_x, needs_w, transposed):
    """torch's conv_backward_flop: the input gradient, the weight gradient."""
    flops = 0
    if needs_x:
        flops += _conv(gy_shape, w_shape, x_shape, not transposed)
    if needs_w:
        if transposed:
            flops += _conv(_t(gy_shape), _t(x_shape), _t(w_shape), False)
        else:
            flops += _conv(_t(x_shape), _t(gy_shape), _t(w_shape), False)
    return flops


def _sdpa(q_shape, k_shape, v_shape):
    b = _prod(q_shape[:-2])
    length, e = q_shape[-2], q_shape[-1]
    s, ev = k_shape[-2], v_shape[-1]
    return 2 * b * length * s * (e + ev)


def _einsum(terms, shapes, out, needs=None):
    """torch's einsum contracts its operands left to right, one batched product (bmm) per
    pair that sums over a shared letter (a pair without one is a plain multiply, uncounted);
    letters no later operand nor the output needs are summed away first. ``needs``: which
    operands take a gradient (count the backward: one product per side that needs one)."""
    sizes = {}
    for term, shape in zip(terms, shapes):
        for letter, n in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), int(n))
    flops, cur = 0, set(terms[0])
    left_needs = bool(needs and needs[0])
    for i in range(1, len(terms)):
        later = set(out).union(*terms[i + 1:])
        nxt = set(terms[i])
        cur, nxt = {c for c in cur if c in nxt or c in later}, \
            {c for c in nxt if c in cur or c in later}
        if (cur & nxt) - later:
            f = 2 * _prod(sizes[c] for c in cur | nxt)
            flops += f if needs is None else f * (left_needs + bool(needs[i]))
        left_needs = left_needs or bool(needs and needs[i])
        cur = (cur | nxt) & later
    return flops


def _needs(ctx, i):
    return len(ctx.inputs) > i and ctx.inputs[i].requires_grad


def op_flops(fn, in_shapes, out_shape, backward=False, contiguous=True):
    """(name, FLOPs) of one run of op ``fn`` (a Function instance, whose attributes its forward
    set) on inputs of ``in_shapes`` with output ``out_shape``; its backward if ``backward``.
    ``contiguous``: whether the first input is C-contiguous (it picks torch's name for a
    linear op). (None, 0) for ops that are not counted."""
    kind = type(fn).__name__
    if kind == "Linear":
        x, w = in_shapes[0], in_shapes[1]
        f = 2 * _prod(x[:-1]) * x[-1] * w[0]
        if not backward:  # torch: with a bias, addmm for a matrix or a contiguous input (of
            # any rank, flattened to a matrix), else a product (mm) and an add
            fused = len(in_shapes) > 2 and (len(x) == 2 or contiguous)
            return ("addmm" if fused else "mm"), f
        return "mm", f * (_needs(fn, 0) + _needs(fn, 1))
    if kind == "MatMul":
        f = _mm(in_shapes[0], in_shapes[1])
        name = "bmm" if len(in_shapes[0]) > 2 and len(in_shapes[1]) > 2 else "mm"
        if not backward:
            return name, f
        return name, f * (_needs(fn, 0) + _needs(fn, 1))
    if kind in ("Conv2d", "ConvNd", "ConvTranspose2d"):
        transposed = kind == "ConvTranspose2d"
        x, w = in_shapes[0], in_shapes[1]
        if not backward:
            return "convolution", _conv(x, w, out_shape, transposed)
        return "convolution_backward", _conv_backward(out_shape, x, w, _needs(fn, 0),
                                                      _needs(fn, 1), transposed)
    if kind in ("Attention", "PackedSelfAttention"):
        if kind == "Attention":
            f = _sdpa(*in_shapes[:3])
        else:  # qkv (L, N, 3E) or batch first (N, L, 3E), split into heads
            a, b, e3 = in_shapes[0]
            length, n = (b, a) if fn.batch_first else (a, b)
            e = e3 // 3
            f = 2 * n * length * length * 2 * e
        return "scaled_dot_product_attention", (2 * f if backward else f)
    if kind == "Einsum":  # torch's einsum runs as batched products: counted as bmm
        if not backward:
            return "bmm", _einsum(fn.terms, in_shapes, fn.out)
        return "bmm", _einsum(fn.terms, in_shapes, fn.out,
                              [_needs(fn, i) for i in range(len(in_shapes))])
    if kind in ("LSTMRecurrence", "RNNRecurrence", "Recurrence"):
        steps, batch = in_shapes[0][0], in_shapes[0][1]
        rest = in_shapes[2:]
        if kind == "LSTMRecurrence":
            rest = rest[1:]  # c0
        w_hh = rest[0]
        f = 2 * steps * batch * w_hh[0] * w_hh[1]
        if getattr(fn, "proj", False) and len(rest) > 1:
            w_hr = rest[-1]
            f += 2 * steps * batch * w_hr[0] * w_hr[1]
        return "rnn", (2 * f if backward else f)
    return None, 0


def _leading_contiguous(arr):
    """Whether the dims before the last two of ``arr`` fold into one without a copy (torch's
    test before it runs a batched product as one matrix product)."""
    shape, strides = arr.shape, getattr(arr, "strides", None)
    if strides is None:
        return True
    return all(strides[i] == strides[i + 1] * shape[i + 1] for i in range(arr.ndim - 2))


def _matmul_name(a, b):
    """The product torch's matmul runs for Tensors ``a @ b`` (at least one of them 3-D or
    more): 'mm' where it folds the batch into one matrix product, 'bmm' where it does not,
    None where it folds into a matrix-vector product (uncounted). As torch 2.13's
    should_fold: a fold needs no copy of the larger operand, or saves the smaller one's
    gradient from a batch-sized expansion."""
    d1, d2 = a.ndim, b.ndim
    if d1 <= 2 and d2 <= 2:
        return None if d2 == 1 else "mm"
    if d1 >= 3 and d2 >= 3:
        batch_a, batch_b = _prod(a.shape[:-2]), _prod(b.shape[:-2])
        if batch_b == 1 < batch_a:  # b is one matrix: a @ b[0]
            return "mm" if b.requires_grad or _leading_contiguous(a.data) else "bmm"
        if batch_a == 1 < batch_b:  # a is one matrix: as a 2-D a
            return "mm" if a.requires_grad else "bmm"
        return "bmm"
    if d1 >= 3:  # (..., n, k) @ (k,) or (k, m)
        fold = b.requires_grad or _leading_contiguous(a.data)
    else:  # (k,) or (n, k) @ (..., k, m): folded on b transposed
        fold = a.requires_grad or (d1 == 1 and _leading_contiguous(
            b.data.swapaxes(-1, -2)))
    small = d2 if d1 >= 3 else d1
    if not fold:
        return "bmm"
    return "mm" if small == 2 else None


# ---- the counter ----------------------------------------------------------------------------------
class FlopCounterMode(autograd.ChainedHook):
    """Counts the FLOPs of the ops run inside it, forward and backward, per module (modules
    by their path from the outermost one called: "ResNet", "ResNet.layer1", ...; "Global"
    holds everything). ``display``: print the table on exit; ``depth``: how deep the table
    shows modules. Works inside a running profiler too."""

    def __init__(self, mods=None, display=True, depth=2, custom_mapping=None):
        if custom_mapping:
            raise NotImplementedError("FlopCounterMode: custom_mapping (formulas for aten ops) "
                                      "has no meaning here; minidl's formulas are in "
                                      "minidl.utils.flop_counter.op_flops")
        self.display, self.depth = display, depth
        self.flop_counts = defaultdict(lambda: defaultdict(int))
        self._path, self._module_stack, self._names = [], [], {}
        self._prev = None
        self._active = False

    # ---- the hook interface (see minidl.profiler._recorder) ------------------------------
    def __enter__(self):
        if self._active:
            raise RuntimeError("FlopCounterMode: this counter is already counting")
        self.flop_counts.clear()
        self._prev, self._active = autograd._profiler_hook, True
        autograd._profiler_hook = self
        return self

    def __exit__(self, *exc):
        # leave the stack of hooks wherever this counter is in it: a profiler or counter
        # entered after it may still be running (or have stopped already)
        hook = autograd._profiler_hook
        if hook is self:
            autograd._profiler_hook = self._prev
        while isinstance(hook, FlopCounterMode):
            if hook._prev is self:
                hook._prev = self._prev
                break
            hook = hook._prev
        self._prev = None
        self._active = False
        if self.display:
            print(self.get_table(self.depth))
        return False

    def _add(self, name, flops, modules):
        if not name or not flops:
            return
        self.flop_counts["Global"][name] += flops
        for m in modules:
            self.flop_counts[m][name] += flops

    def _modules_now(self):
        return list(self._path)

    def forward(self, fn, tensors, kwargs):
        out = super().forward(fn, tensors, kwargs)
        modules = self._modules_now()
        fn._flop_modules = modules  # its backward counts toward the same modules
        first = out[0] if isinstance(out, tuple) else out
        flags = getattr(tensors[0].data, "flags", None) if tensors else None
        name, flops = op_flops(fn, [tuple(t.data.shape) for t in tensors],
                               tuple(getattr(first, "shape", ())),
                               contiguous=flags is None or bool(flags.c_contiguous))
        if name in ("mm", "bmm", "addmm"):
            backward_name = name
            if type(fn).__name__ == "MatMul" and len(tensors) == 2 and \
                    max(t.ndim for t in tensors) > 2:
                name = backward_name = _matmul_name(*tensors)
                if name == "bmm" and tensors[1].ndim == 1:  # a batch of matrix-vector products
                    flops = fn._flop_per_pass = 2 * _prod(tensors[0].shape)
            alias = autograd._flop_alias  # set by products.counted_as
            if alias is not None:
                name = alias[0] if name is not None else None
                if not alias[1]:
                    backward_name = None
            if name is None:
                flops = 0
            if type(fn).__name__ != "Linear":
                fn._flop_backward_name = backward_name
        self._add(name, flops, modules)
        return out

    def backward(self, ctx, grad):
        out = super().backward(ctx, grad)
        name, flops = op_flops(ctx, [tuple(t.shape) for t in ctx.inputs], tuple(grad.shape),
                               backward=True)
        if hasattr(ctx, "_flop_backward_name"):  # as its forward was run (see forward)
            name = ctx._flop_backward_name
            if hasattr(ctx, "_flop_per_pass"):
                flops = ctx._flop_per_pass * (_needs(ctx, 0) + _needs(ctx, 1))
        self._add(name, flops, getattr(ctx, "_flop_modules", []))
        return out

    def module_call(self, module, call, args, kwargs):
        """Counts toward every module being called; each is named by its path from the
        outermost one ("Net.seq.1.fc", as torch's), wherever it is called from."""
        if not self._path:
            root = type(module).__name__
            self._names = {id(m): f"{root}.{n}" if n else root
                           for n, m in module.named_modules()}
            name = root
        else:
            name = self._names.get(id(module))
            if name is None:  # not part of the outermost module: named under its caller
                parent = self._module_stack[-1]
                child = next((k for k, m in parent._modules.items() if m is module),
                             type(module).__name__)
                name = f"{self._path[-1]}.{child}"
        self._path.append(name)
        self._module_stack.append(module)
        try:
            return super().module_call(module, call, args, kwargs)
        finally:
            self._path.pop()
            self._module_stack.pop()
            if not self._path:
                self._names = {}

    # ---- results --------------------------------------------------------------------------
    def get_total_flops(self) -> int:
        return int(sum(self.flop_counts["Global"].values()))

    def get_flop_counts(self):
        """{module path: {op name: FLOPs}} ("Global" for everything)."""
        return {m: dict(ops) for m, ops in self.flop_counts.items()}

    def get_table(self, depth=None):
        depth = self.depth if depth is None else depth
        total = self.get_total_flops()
        rows = [("Module", "FLOP", "% Total")]
        for mod, ops in self.flop_counts.items():
            level = 0 if mod == "Global" else mod.count(".") + 1
            if depth is not None and level > depth:
                continue
            mod_total = sum(ops.values())
            rows.append((" " * level + mod, _human(mod_total), _percent(mod_total, total)))
            for op, f in ops.items():
                rows.append((" " * level + f" - {op}", _human(f), _percent(f, total)))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _human(n):
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(int(n))


def _percent(n, total):
    return f"{100.0 * n / total:.2f}%" if total else "0.00%"
