"""Attention: ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` with PyTorch's
arguments, mask conventions, parameter names and initialisation.

Masks, as in PyTorch: for scaled_dot_product_attention a bool ``attn_mask`` is True where a
query may attend; for MultiheadAttention a bool ``attn_mask`` or ``key_padding_mask`` is True
where it may NOT. A float mask is added to the scores in both.
"""
from __future__ import annotations

import contextlib
import enum
import math
import numbers

import numpy as np

from ..backend.dtypes import default_float, promote_types
from .. import functional as F
from ..backend import get_array_module
from ..backend import rng as _rng
from ..backend import to_device
from ..products import counted_as
from ..ops import (
    Reshape, Sum, Where, accumulation_dtype, cat, constant, row_kernels,
    softmax_backward_array,
    swap_last_dims,
)
from ..tensor import Function, Tensor, autocast_hook, is_grad_enabled, unbroadcast
from . import init
from .layers import NonDynamicallyQuantizableLinear
from .module import Module, Parameter

__all__ = ["scaled_dot_product_attention", "MultiheadAttention"]


class AttentionArgumentError(ValueError, RuntimeError):
    """Arguments that do not go together (is_causal without or beside a mask, src and tgt of
    different batches): PyTorch raises RuntimeError, minidl's argument errors are
    ValueErrors; this is both."""


def safe_softmax_array(x):
    """softmax over the last dim where a row of only -inf (every key masked) gives zeros
    instead of NaN, as PyTorch's scaled_dot_product_attention does; the CPU's row kernel
    where it takes x."""
    if x.size == 0:  # no query or no key: nothing to normalise (torch's empty result / zeros)
        return x.copy()
    ks = row_kernels(x, -1)
    if ks is not None:
        return ks.softmax_last(x, safe=True)
    xp = get_array_module(x)
    wide = accumulation_dtype(x)
    xw = x if wide is None else x.astype(wide)
    top = xw.max(axis=-1, keepdims=True)
    top = xp.where(top == -np.inf, xp.zeros((), dtype=top.dtype), top)  # all masked
    e = xp.exp(xw - top)
    total = e.sum(axis=-1, keepdims=True)
    y = (e / xp.where(total == 0, xp.ones((), dtype=total.dtype), total))
    return y.astype(x.dtype, copy=False)


class SafeSoftmax(Function):
    """``safe_softmax_array`` as an op."""

    def forward(self, x):
        y = safe_softmax_array(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved
        return softmax_backward_array(g, y, -1)

    def graph_backward(self, g, out):
        return out * (g - Sum.apply(g * out, dim=-1, keepdim=True))


class Attention(Function):
    """softmax(q @ k^T * scale + mask) @ v over the last two dims as one op: inputs q (..., L, E),
    k (..., S, E), v (..., S, Ev) and optionally an additive float mask broadcastable to the
    scores; batch dims broadcast. It stands for the five ops of the composite (transpose, two
    matmuls, the scaling, the safe softmax) and the mask's add: one graph node, the scale
    folded into the scores in place, the CPU's row kernels for the softmax and its gradient.
    Keeps q, k, v and the attention weights (after dropout, their multiplier) for backward."""

    _mask_input = 3  # where the mask is among the inputs

    def forward(self, q, k, v, mask=None, scale=1.0, causal=False, dropout_p=0.0):
        return self._attend(q, k, v, mask, scale, causal, dropout_p)

    def backward(self, g):
        q, k, v = self.saved[:3]
        gq, gk, gv, gmask = self._attend_backward(g)
        return (unbroadcast(gq, q.shape), unbroadcast(gk, k.shape),
                unbroadcast(gv, v.shape)) + ((gmask,) if len(self.inputs) > 3 else ())

    def graph_backward(self, g, out):
        q, k, v = self.inputs[:3]
        mask = self.inputs[3] if len(self.inputs) > 3 else None
        gq, gk, gv, gmask = self._graph_grads(q, k, v, mask, g)
        return (gq, gk, gv) + ((gmask,) if mask is not None else ())

    def _graph_grads(self, q, k, v, mask, g):
        """_attend_backward as recorded ops (for double backward): the scores and weights
        recomputed in the graph from the Tensors q, k, v and mask (None if absent), the
        dropout multiplier and the causal mask as constants."""
        xp = get_array_module(q.data)
        s = (q @ swap_last_dims(k)) * self.scale
        if self.causal:
            s = s + constant(xp.triu(xp.full(s.shape[-2:], -np.inf, dtype=s.data.dtype), 1))
        elif mask is not None:
            s = s + mask
        w = SafeSoftmax.apply(s)
        wd = w if self.drop is None else w * constant(self.drop)
        gv = swap_last_dims(wd) @ g
        gw = g @ swap_last_dims(v)
        if self.drop is not None:
            gw = gw * constant(self.drop)
        gs = w * (gw - Sum.apply(gw * w, dim=-1, keepdim=True))
        gmask = gs if mask is not None and mask.requires_grad else None
        gs = gs * self.scale
        return gs @ k, swap_last_dims(gs) @ q, gv, gmask

    def _attend(self, q, k, v, mask, scale, causal, dropout_p):
        xp = get_array_module(q)
        s = q @ xp.swapaxes(k, -1, -2)
        s *= s.dtype.type(scale)
        if causal:
            s += xp.triu(xp.full(s.shape[-2:], -np.inf, dtype=s.dtype), 1)
        elif mask is not None:  # broadcastable to the scores (checked by the caller)
            s += mask
        w = safe_softmax_array(s)
        self.drop = F.dropout_mask(w, dropout_p) if dropout_p > 0 else None
        wd = w if self.drop is None else w * self.drop
        self.scale, self.mask_shape = scale, None if mask is None else mask.shape
        self.causal = causal
        self.save_for_backward(q, k, v, w, wd)
        return wd @ v

    def _attend_backward(self, g):
        """(gq, gk, gv, gmask) on the (possibly broadcast) shapes of the forward's products;
        gmask is None unless the mask input requires grad."""
        q, k, v, w, wd = self.saved
        xp = get_array_module(g)
        gv = xp.swapaxes(wd, -1, -2) @ g
        gw = g @ xp.swapaxes(v, -1, -2)
        if self.drop is not None:
            gw *= self.drop
        gs = softmax_backward_array(gw, w, -1)
        gmask = None
        m = self._mask_input
        if len(self.inputs) > m and self.inputs[m].requires_grad:
            gmask = unbroadcast(gs, self.mask_shape)
            # where the mask has the scores' shape that is gs itself (or a view of it): the
            # scaling below must not reach the mask's gradient
            gs = gs * gs.dtype.type(self.scale)
        else:
            gs *= gs.dtype.type(self.scale)
        return gs @ k, xp.swapaxes(gs, -1, -2) @ q, gv, gmask


class PackedSelfAttention(Attention):
    """Self-attention from the packed projection ``qkv`` = x @ in_proj_weight.T + in_proj_bias,
    (L, N, 3E) or batch-first (N, L, 3E), to the heads' outputs merged back into that layout,
    (L, N, E) or (N, L, E); inputs ``qkv`` and optionally an additive mask broadcastable to
    (N, heads, L, L). The heads are strided views of qkv (no split, no copy), and backward
    writes the three gradients into one (.., 3E) array: what MultiheadAttention's three
    slices, reshapes and permutes of q, k and v, and the merge of the heads, cost as separate
    ops and gradients added together."""

    _mask_input = 1

    def forward(self, qkv, mask=None, heads=1, batch_first=False, scale=1.0, causal=False,
                dropout_p=0.0):
        self.heads, self.batch_first, self.qkv_shape = heads, batch_first, qkv.shape
        q, k, v = self._split(qkv)
        out = self._attend(q, k, v, mask, scale, causal, dropout_p)  # (N, H, L, hd)
        return self._merge(out)

    def _split(self, qkv):
        a, b, e3 = qkv.shape
        x = qkv.reshape(a, b, 3, self.heads, e3 // (3 * self.heads))
        # to (N, H, L, hd): from (L, N, ...) or batch-first (N, L, ...)
        order = (0, 2, 1, 3) if self.batch_first else (1, 2, 0, 3)
        return tuple(x[:, :, i].transpose(order) for i in range(3))

    def _merge(self, out):
        n, h, length, hd = out.shape
        order = (0, 2, 1, 3) if self.batch_first else (2, 0, 1, 3)
        merged = out.transpose(order)  # (N, L, H, hd) or (L, N, H, hd)
        return merged.reshape(merged.shape[0], merged.shape[1], h * hd)

    def backward(self, g):
        xp = get_array_module(g)
        a, b, e = g.shape
        h = self.heads
        g4 = g.reshape(a, b, h, e // h)
        g4 = g4.transpose((0, 2, 1, 3) if self.batch_first else (1, 2, 0, 3))  # (N, H, L, hd)
        gq, gk, gv, gmask = self._attend_backward(g4)
        gqkv = xp.empty((a, b, 3, h, e // h), dtype=g.dtype)
        back = (0, 2, 1, 3) if self.batch_first else (2, 0, 1, 3)
        for i, part in enumerate((gq, gk, gv)):
            gqkv[:, :, i] = part.transpose(back)
        gqkv = gqkv.reshape(self.qkv_shape)
        return (gqkv,) if len(self.inputs) == 1 else (gqkv, gmask)

    def graph_backward(self, g, out):
        qkv = self.inputs[0]
        mask = self.inputs[1] if len(self.inputs) > 1 else None
        a, b, e3 = qkv.shape
        h = self.heads
        hd = e3 // (3 * h)
        order = (0, 2, 1, 3) if self.batch_first else (1, 2, 0, 3)  # to (N, H, L, hd)
        parts = Reshape.apply(qkv, shape=(a, b, 3, h, hd))
        q, k, v = (parts[:, :, i].permute(*order) for i in range(3))
        g4 = Reshape.apply(g, shape=(a, b, h, hd)).permute(*order)
        gq, gk, gv, gmask = self._graph_grads(q, k, v, mask, g4)
        back = (0, 2, 1, 3) if self.batch_first else (2, 0, 1, 3)
        gqkv = cat([part.permute(*back).unsqueeze(2) for part in (gq, gk, gv)], dim=2)
        gqkv = Reshape.apply(gqkv, shape=self.qkv_shape)
        return (gqkv,) if mask is None else (gqkv, gmask)


def _check_tensor(name, what, t):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")


def _additive_mask(name, mask, dtype, allowed_when):
    """A mask as a Tensor to add to the scores: a bool mask becomes 0 and -inf (-inf where
    ``mask == (not allowed_when)``); a float mask is used as it is (cast to ``dtype``)."""
    xp = get_array_module(mask.data)
    if mask.dtype == np.bool_:
        # a recorded op on the mask itself (not on mask.data), so that an exported graph
        # takes the mask as an input
        zero, ninf = Tensor(xp.zeros((), dtype=dtype)), Tensor(xp.full((), -np.inf, dtype=dtype))
        return Where.apply(mask, zero, ninf) if allowed_when else Where.apply(mask, ninf, zero)
    if mask.dtype.kind != "f" and mask.dtype.kind != "V":
        raise TypeError(f"{name}: a mask must be bool or floating point, got {mask.dtype}")
    return mask if mask.dtype == dtype else mask.to(dtype=dtype)


def _check_mask_dtype(name, attn_mask, key_padding_mask, query_dtype):
    """Where torch adds the float masks to the scores through baddbmm (weights asked for, or
    the inference fast path), their merged dtype must be the query's: a bool mask counts as
    the query's dtype and a sum of two float masks promotes (so a float32 attn_mask beside a
    bool key_padding_mask is fine with a float64 query, alone it is refused, as torch's
    "Input dtypes must be the same"). Autocast casts the masks, as torch's."""
    if autocast_hook() is not None:
        return
    merged, what = None, None
    for label, mask in (("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask)):
        if mask is None:
            continue
        dt = query_dtype if mask.dtype == np.bool_ else mask.dtype
        if dt.kind != "f" and dt.kind != "V":
            continue  # refused as a mask of the wrong kind where it is made additive
        merged, what = (dt, label) if merged is None else (promote_types(merged, dt), "mask")
    if merged is not None and merged != query_dtype:
        raise AttentionArgumentError(
            f"{name}: a float {what} must have the query's dtype ({query_dtype}), got "
            f"{merged} (torch: input dtypes must be the same)")


def _broadcastable(name, what, shape, target):
    try:
        if tuple(np.broadcast_shapes(tuple(shape), tuple(target))) != tuple(target):
            raise ValueError
    except ValueError:
        raise ValueError(f"{name}: {what} of shape {tuple(shape)} does not broadcast to the "
                         f"attention scores' shape {tuple(target)}") from None


def _causal_mask(xp, length, source, dtype):
    """0 on and below the diagonal, -inf above it: query i sees keys 0..i (top-left aligned
    when length != source, as PyTorch's is_causal)."""
    return Tensor(xp.triu(xp.full((length, source), -np.inf, dtype=dtype), 1))


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """softmax(query @ key^T * scale + mask) @ value over the last two dims, batch dims
    broadcast. query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev).
    ``scale`` defaults to 1/sqrt(E); dropout_p applies whenever it is > 0 (as in PyTorch,
    pass 0.0 outside training); enable_gqa lets key/value have fewer heads (dim -3) than
    query, each shared by a group of query heads."""
    if getattr(query, "is_nested", False) is True:  # minidl.nested
        return query._nested_op("scaled_dot_product_attention", query, key, value, attn_mask,
                                dropout_p, is_causal, scale, enable_gqa)
    name = "scaled_dot_product_attention"
    for what, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, what, t)
        if t.ndim < 2:
            raise ValueError(f"{name}: {what} must have at least 2 dims (..., length, features), "
                             f"got shape {t.shape}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"{name}: query, key and value must have the same dtype, got "
                        f"{query.dtype}, {key.dtype} and {value.dtype}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"{name}: query has {query.shape[-1]} features (shape {query.shape}), "
                         f"key {key.shape[-1]} (shape {key.shape}); they must match")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{name}: key has {key.shape[-2]} positions (shape {key.shape}), value "
                         f"{value.shape[-2]} (shape {value.shape}); they must match")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real) or not (
            0 <= dropout_p <= 1):
        raise ValueError(f"{name}: dropout_p must be in [0, 1], got {dropout_p!r}")
    if is_causal and attn_mask is not None:
        raise AttentionArgumentError(f"{name}: pass either attn_mask or is_causal=True, not "
                                     "both")
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        heads, kv_heads = query.shape[-3], key.shape[-3]
        if heads % kv_heads:
            raise ValueError(f"{name}: enable_gqa needs the query's {heads} heads to be a "
                             f"multiple of key/value's {kv_heads}")
        key, value = (_repeat_heads(t, heads // kv_heads) for t in (key, value))
    elif query.ndim >= 3 and key.ndim >= 3 and key.shape[-3] != query.shape[-3] and (
            key.shape[-3] != 1 and query.shape[-3] != 1):
        raise ValueError(f"{name}: query has {query.shape[-3]} heads (shape {query.shape}), "
                         f"key {key.shape[-3]} (shape {key.shape}); pass enable_gqa=True to "
                         "share key/value heads across query heads")
    length, source = query.shape[-2], key.shape[-2]
    xp = get_array_module(query.data)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1]) if query.shape[-1] else 1.0
    mask = None  # additive, checked against the scores' shape
    if attn_mask is not None and not is_causal:
        _check_tensor(name, "attn_mask", attn_mask)
        if attn_mask.dtype not in (np.bool_, query.dtype, np.float32):
            raise AttentionArgumentError(
                f"{name}: Expected attn_mask dtype to be bool or float or to match query "
                f"dtype, but got attn_mask.dtype: {attn_mask.dtype} and query.dtype: "
                f"{query.dtype} instead.")
        scores_shape = np.broadcast_shapes(query.shape[:-2], key.shape[:-2]) + (length, source)
        _broadcastable(name, "attn_mask", attn_mask.shape, scores_shape)
        mask = _additive_mask(name, attn_mask, query.dtype, allowed_when=True)
    if autocast_hook() is None and query.dtype.kind == "f" and query.dtype.itemsize >= 4:
        # one fused op (the composite below is autocast's, and 16-bit inputs')
        args = (query, key, value) if mask is None else (query, key, value, mask)
        return Attention.apply(*args, scale=float(scale), causal=bool(is_causal),
                               dropout_p=float(dropout_p))
    scores = (query @ key.transpose(-2, -1)) * float(scale)
    if is_causal:
        scores = scores + _causal_mask(xp, length, source, scores.dtype)
    elif mask is not None:
        scores = scores + (mask if mask.dtype == scores.dtype else mask.to(dtype=scores.dtype))
    attn = SafeSoftmax.apply(scores)
    if dropout_p > 0:
        attn = F.dropout(attn, float(dropout_p), True)
    return attn @ value


def _repeat_heads(t, times):
    """(..., H, S, E) -> (..., H * times, S, E), each head repeated ``times`` times in a row
    (torch.repeat_interleave on dim -3)."""
    shape = t.shape
    expanded = t.unsqueeze(-3).expand(*shape[:-2], times, *shape[-2:])
    return expanded.reshape(*shape[:-3], shape[-3] * times, *shape[-2:])


def _xavier_normal_(t):
    fan_in = t.shape[1] * int(np.prod(t.shape[2:])) if t.ndim > 1 else t.shape[0]
    fan_out = t.shape[0] * int(np.prod(t.shape[2:])) if t.ndim > 1 else t.shape[0]
    std = math.sqrt(2.0 / (fan_in + fan_out))
    t.data = to_device((_rng().standard_normal(t.shape) * std).astype(t.dtype), t.device)
    return t


class MultiheadAttention(Module):
    """Multi-head attention, PyTorch's: the projections ``in_proj_weight`` (3E, E) and
    ``in_proj_bias`` (3E), or ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` where
    kdim or vdim differ from embed_dim, then ``out_proj``; Xavier-uniform projections and
    zero biases as PyTorch initialises them."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        name = "MultiheadAttention"
        for what, v in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
        if embed_dim % num_heads:
            raise ValueError(f"{name}: embed_dim must be divisible by num_heads, got "
                             f"{embed_dim} and {num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not (
                0 <= dropout <= 1):
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout!r}")
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads, self.dropout, self.batch_first = num_heads, float(dropout), batch_first
        self.head_dim = embed_dim // num_heads
        E = embed_dim
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(np.empty((E, E), dtype=default_float()))
            self.k_proj_weight = Parameter(np.empty((E, self.kdim), dtype=default_float()))
            self.v_proj_weight = Parameter(np.empty((E, self.vdim), dtype=default_float()))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(np.empty((3 * E, E), dtype=default_float()))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(np.empty(3 * E, dtype=default_float()))
        else:
            self.register_parameter("in_proj_bias", None)
        # torch's type for it: dynamic quantisation (ao.quantization.quantize_dynamic) leaves
        # it a float Linear, as the attention reads its weight itself
        self.out_proj = NonDynamicallyQuantizableLinear(E, E, bias=bias)
        if add_bias_kv:
            self.bias_k = Parameter(np.empty((1, 1, E), dtype=default_float()))
            self.bias_v = Parameter(np.empty((1, 1, E), dtype=default_float()))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            _xavier_normal_(self.bias_k)
            _xavier_normal_(self.bias_v)

    def _projections(self):
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            return (w[:E], bq), (w[E:2 * E], bk), (w[2 * E:], bv)
        return (self.q_proj_weight, bq), (self.k_proj_weight, bk), (self.v_proj_weight, bv)

    def _inference_fast_path(self, query, key, value, attn_mask, key_padding_mask):
        """Whether PyTorch takes its inference fast path here (batch-first self-attention in
        eval mode with nothing to differentiate, bool masks, ...). Its results differ from
        the general path's in two ways minidl copies: a query whose every key is masked gives
        NaN (not the zeros of scaled_dot_product_attention), and ``is_causal`` is not used
        (attn_mask is)."""
        if query.ndim != 3 or not (query is key and key is value):
            return False
        if any(m is not None and m.dtype != np.bool_ for m in (attn_mask, key_padding_mask)):
            return False
        if (self.training or self.num_heads % 2 or not self.batch_first or self.bias_k is not None
                or self.add_zero_attn or not self._qkv_same_embed_dim or self.in_proj_bias is None
                or autocast_hook() is not None):
            return False
        weights = (query, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight,
                   self.out_proj.bias)
        return not (is_grad_enabled() and any(t is not None and t.requires_grad for t in weights))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if getattr(query, "is_nested", False) is True:  # minidl.nested: torch's fast path only
            return query._nested_op("multi_head_attention", self, query, key, value,
                                    key_padding_mask, need_weights, attn_mask,
                                    average_attn_weights=average_attn_weights)
        name = "MultiheadAttention"
        for what, t in (("query", query), ("key", key), ("value", value)):
            _check_tensor(name, what, t)
        _warn_mismatched_masks(key_padding_mask, "key_padding_mask", attn_mask, "attn_mask")
        fast = self._inference_fast_path(query, key, value, attn_mask, key_padding_mask)
        return self._attend(query, key, value, key_padding_mask, need_weights, attn_mask,
                            average_attn_weights, is_causal, fast)

    def _attend(self, query, key, value, key_padding_mask, need_weights, attn_mask,
                average_attn_weights, is_causal, fast):
        return _multi_head_attention(
            "MultiheadAttention", query, key, value, self.num_heads, self._projections(),
            self.in_proj_weight if self._qkv_same_embed_dim else None, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout if self.training else 0.0,
            self.out_proj.weight, self.out_proj.bias, key_padding_mask, need_weights,
            attn_mask, average_attn_weights, is_causal, fast, self.batch_first)

    def extra_repr(self):
        return ""


def _multi_head_attention(name, query, key, value, num_heads, projections, in_proj_weight,
                          in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p,
                          out_proj_weight, out_proj_bias, key_padding_mask, need_weights,
                          attn_mask, average_attn_weights, is_causal, fast, batch_first,
                          static_k=None, static_v=None):
    """Multi-head attention from its weights: MultiheadAttention's forward and
    F.multi_head_attention_forward. ``projections``: ((wq, bq), (wk, bk), (wv, bv));
    ``in_proj_weight``: the packed (3E, E) weight where q, k and v share the embedding size
    (None otherwise); ``static_k``/``static_v``: (N * num_heads, S, head_dim) keys and values
    used instead of the projected ones."""
    batched = query.ndim == 3
    if query.ndim not in (2, 3):
        raise ValueError(f"{name}: query should be unbatched 2-D or batched 3-D, got "
                         f"{query.ndim}-D (shape {query.shape})")
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(f"{name}: for {query.ndim}-D query, key and value must be "
                         f"{query.ndim}-D too, got {key.ndim}-D and {value.ndim}-D")
    if is_causal and attn_mask is None:
        raise AttentionArgumentError(
            f"{name}: Need attn_mask if specifying the is_causal hint. You may use the "
            "Transformer module method `generate_square_subsequent_mask` to create this "
            "mask.")
    (wq, bq), (wk, bk), (wv, bv) = projections
    embed_dim, kdim, vdim = wq.shape[0], wk.shape[1], wv.shape[1]
    static = static_k is not None or static_v is not None
    # PyTorch's general path takes is_causal as the promise that attn_mask is the causal
    # mask and applies that instead where nothing else is to be merged into it
    causal = bool(is_causal) and not fast and key_padding_mask is None and not need_weights
    if causal:
        attn_mask = None
    # self-attention with the packed projection: one GEMM for q, k and v, and one op
    # (PackedSelfAttention) from it to the merged heads, in the caller's layout
    packed = (batched and query is key and key is value and in_proj_weight is not None
              and not need_weights and not fast and bias_k is None and not static
              and not add_zero_attn and autocast_hook() is None
              and query.dtype in (np.float32, np.float64))
    x_in = query
    if batched and batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    if not batched:
        query, key, value = (t.unsqueeze(1) for t in (query, key, value))
        if key_padding_mask is not None:
            _check_tensor(name, "key_padding_mask", key_padding_mask)
            key_padding_mask = key_padding_mask.unsqueeze(0)
    L, N, E = query.shape
    S = key.shape[0]
    H = num_heads
    hd = embed_dim // H
    if E != embed_dim:
        raise ValueError(f"{name}: query has {E} features (shape {query.shape}), expected "
                         f"embed_dim {embed_dim}")
    if key.shape[2] != kdim or value.shape[2] != vdim:
        raise ValueError(f"{name}: key and value have {key.shape[2]} and {value.shape[2]} "
                         f"features, expected kdim {kdim} and vdim {vdim}")
    if key.shape[:2] != value.shape[:2] or key.shape[1] != N:
        raise ValueError(f"{name}: key {key.shape} and value {value.shape} must share their "
                         f"length and batch, and the batch must be the query's {N}")
    if query.dtype != out_proj_weight.dtype:
        raise ValueError(f"{name}: input dtype ({query.dtype}) does not match the weights' "
                         f"({out_proj_weight.dtype})")
    if packed:
        # torch projects the transposed (non-contiguous) query of a batch_first call: a
        # FlopCounterMode names that product mm, not addmm, as torch's
        if batched and batch_first:
            qkv = counted_as("mm", True, F.linear, x_in, in_proj_weight, in_proj_bias)
        else:
            qkv = F.linear(x_in, in_proj_weight, in_proj_bias)
        dtype = qkv.dtype
    else:
        q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
        dtype = q.dtype
    mask = None  # additive, broadcastable to (N, H, L, S)
    if attn_mask is not None:
        _check_tensor(name, "attn_mask", attn_mask)
        if attn_mask.ndim == 2:
            if tuple(attn_mask.shape) != (L, S):
                raise AttentionArgumentError(
                    f"{name}: the shape of the 2-D attn_mask is {tuple(attn_mask.shape)}, "
                    f"but should be {(L, S)}")
            mask = _additive_mask(name, attn_mask, dtype, allowed_when=False)
        elif attn_mask.ndim == 3:
            if tuple(attn_mask.shape) != (N * H, L, S):
                raise AttentionArgumentError(
                    f"{name}: the shape of the 3-D attn_mask is {tuple(attn_mask.shape)}, "
                    f"but should be {(N * H, L, S)}")
            mask = _additive_mask(name, attn_mask, dtype, allowed_when=False)
            mask = mask.reshape(N, H, L, S)
        else:
            raise AttentionArgumentError(
                f"{name}: attn_mask's dimension {attn_mask.ndim} is not supported (2-D "
                "(L, S) or 3-D (N * num_heads, L, S))")
    if bias_k is not None:
        if static:
            raise AttentionArgumentError(f"{name}: bias cannot be added to static key.")
        k = cat([k, bias_k.expand(1, N, E)])
        v = cat([v, bias_v.expand(1, N, E)])
        if mask is not None:
            mask = F.pad(mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(_as_float_padding(key_padding_mask, dtype), (0, 1))
    if not packed:  # (len, N, E) -> (N, H, len, head_dim)
        q = q.reshape(L, N, H, hd).permute(1, 2, 0, 3)
        k = k.reshape(k.shape[0], N, H, hd).permute(1, 2, 0, 3)
        v = v.reshape(v.shape[0], N, H, hd).permute(1, 2, 0, 3)
        for what, t in (("static_k", static_k), ("static_v", static_v)):
            if t is None:
                continue
            _check_tensor(name, what, t)
            if t.ndim != 3 or t.shape[0] != N * H or t.shape[2] != hd:
                raise AttentionArgumentError(
                    f"{name}: expecting {what} of shape ({N * H}, S, {hd}), but got "
                    f"{tuple(t.shape)}")
            if what == "static_k":
                k = t.reshape(N, H, t.shape[1], hd)
            else:
                v = t.reshape(N, H, t.shape[1], hd)
        if k.shape[2] != v.shape[2]:
            raise AttentionArgumentError(f"{name}: {k.shape[2]} keys but {v.shape[2]} values")
    keys = S if packed else k.shape[2]  # S, plus the bias_k key, or the static keys
    if key_padding_mask is not None:
        _check_tensor(name, "key_padding_mask", key_padding_mask)
        if tuple(key_padding_mask.shape) != (N, keys):
            raise ValueError(f"{name}: expecting key_padding_mask shape of "
                             f"{(N, keys)}, but got {tuple(key_padding_mask.shape)}")
    if add_zero_attn:
        xp = get_array_module(k.data)
        zeros = Tensor(xp.zeros((N, H, 1, hd), dtype=dtype))
        k, v = cat([k, zeros], 2), cat([v, zeros], 2)
        if mask is not None:
            mask = F.pad(mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(_as_float_padding(key_padding_mask, dtype), (0, 1))
    if need_weights or fast:
        _check_mask_dtype(name, attn_mask, key_padding_mask, query.dtype)
    if key_padding_mask is not None:
        padding = _additive_mask(name, key_padding_mask, dtype, allowed_when=False)
        padding = padding.reshape(N, 1, 1, S if packed else k.shape[2])
        mask = padding if mask is None else mask + padding

    p = dropout_p
    if packed:
        args = (qkv,) if mask is None else (qkv, mask)
        out = PackedSelfAttention.apply(*args, heads=H, batch_first=batch_first,
                                        scale=1.0 / math.sqrt(hd), causal=causal, dropout_p=p)
        return F.linear(out, out_proj_weight, out_proj_bias), None
    if need_weights or fast:
        scores = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        with np.errstate(invalid="ignore"):  # an all-masked row is NaN, as in PyTorch
            weights = F.softmax(scores, dim=-1)
        dropped = F.dropout(weights, p, True) if p > 0 else weights
        out = dropped @ v
        if not need_weights:
            weights = None
    else:
        weights = None
        out = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                           is_causal=causal)
    out = out.permute(2, 0, 1, 3).reshape(L, N, E)
    out = F.linear(out, out_proj_weight, out_proj_bias)
    if weights is not None and average_attn_weights:
        weights = weights.mean(dim=1)
    if not batched:
        out = out.squeeze(1)
        if weights is not None:
            weights = weights.squeeze(0)
    elif batch_first:
        out = out.transpose(0, 1)
    return out, weights


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads,
                                 in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
                                 dropout_p, out_proj_weight, out_proj_bias, training=True,
                                 key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None,
                                 k_proj_weight=None, v_proj_weight=None, static_k=None,
                                 static_v=None, average_attn_weights=True, is_causal=False):
    """torch.nn.functional.multi_head_attention_forward: MultiheadAttention's computation
    from its weights, on (L, N, E) query and (S, N, E) key and value (or unbatched (L, E))."""
    name = "multi_head_attention_forward"
    for what, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, what, t)
    _warn_mismatched_masks(key_padding_mask, "key_padding_mask", attn_mask, "attn_mask")
    if query.ndim in (2, 3) and query.shape[-1] != embed_dim_to_check:
        raise AttentionArgumentError(f"{name}: was expecting embedding dimension of "
                                     f"{embed_dim_to_check}, but got {query.shape[-1]}")
    E = embed_dim_to_check
    if E % num_heads:
        raise AttentionArgumentError(f"{name}: embed_dim {E} not divisible by num_heads "
                                     f"{num_heads}")
    if (bias_k is None) != (bias_v is None):
        raise AttentionArgumentError(f"{name}: bias_k and bias_v must be given together")
    b = in_proj_bias
    biases = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
    if use_separate_proj_weight:
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
        if any(w is None for w in weights):
            raise AttentionArgumentError(f"{name}: use_separate_proj_weight is True but "
                                         "q_proj_weight, k_proj_weight or v_proj_weight is None")
        packed_weight = None
    else:
        if in_proj_weight is None:
            raise AttentionArgumentError(f"{name}: use_separate_proj_weight is False but "
                                         "in_proj_weight is None")
        if key.shape != value.shape:
            raise AttentionArgumentError(f"{name}: key shape {tuple(key.shape)} does not match "
                                         f"value shape {tuple(value.shape)}")
        w = in_proj_weight
        weights = (w[:E], w[E:2 * E], w[2 * E:])
        packed_weight = w
    return _multi_head_attention(
        name, query, key, value, num_heads, tuple(zip(weights, biases)), packed_weight,
        in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p if training else 0.0,
        out_proj_weight, out_proj_bias, key_padding_mask, need_weights, attn_mask,
        average_attn_weights, is_causal, False, False, static_k, static_v)


def _warn_mismatched_masks(mask, mask_name, other, other_name):
    """torch's deprecation warning where a padding mask and an attention mask of different
    dtypes (a bool one and a float one) meet: both still work, as in torch."""
    if mask is not None and other is not None and isinstance(mask, Tensor) and \
            isinstance(other, Tensor) and mask.dtype != other.dtype:
        import warnings

        warnings.warn(f"Support for mismatched {mask_name} and {other_name} is deprecated. Use "
                      "same type for both instead.", UserWarning, stacklevel=3)


def _as_float_padding(mask, dtype):
    """A bool key_padding_mask (True: ignore) as 0/-inf floats, so it can be padded."""
    if mask.dtype == np.bool_:
        return _additive_mask("MultiheadAttention", mask, dtype, allowed_when=False)
    return mask


# ---- torch.nn.attention's kernel choice ----------------------------------------------------
class SDPBackend(enum.IntEnum):
    """torch.nn.attention.SDPBackend: the kernels torch may pick for scaled_dot_product_attention.
    minidl has one, which computes what torch's MATH kernel does; the others are named so that
    scripts choosing them run."""

    ERROR = -1
    MATH = 0
    FLASH_ATTENTION = 1
    EFFICIENT_ATTENTION = 2
    CUDNN_ATTENTION = 3
    OVERRIDEABLE = 4


_sdpa_backends = tuple(b for b in SDPBackend if b is not SDPBackend.ERROR)


@contextlib.contextmanager
def sdpa_kernel(backends, set_priority=False):
    """torch.nn.attention.sdpa_kernel: which kernels scaled_dot_product_attention may use inside
    the block. minidl checks the argument as torch does and records the choice (``current_
    sdpa_backends()``); its one implementation serves every choice, so results do not change
    (torch's kernels agree to rounding too)."""
    global _sdpa_backends
    chosen = [backends] if isinstance(backends, SDPBackend) else backends
    if not isinstance(chosen, (list, tuple, set)) or not all(
            isinstance(b, SDPBackend) for b in chosen):
        raise AssertionError("sdpa_kernel: backend must be an instance of SDPBackend or a list "
                             f"of them, got {backends!r}")
    if not isinstance(set_priority, bool):
        raise TypeError(f"sdpa_kernel: set_priority must be a bool, got {set_priority!r}")
    before = _sdpa_backends
    _sdpa_backends = tuple(dict.fromkeys(chosen))
    try:
        yield
    finally:
        _sdpa_backends = before


def current_sdpa_backends():
    """The kernels sdpa_kernel allows now (all but ERROR outside any sdpa_kernel block)."""
    return list(_sdpa_backends)


# torch.nn.attention.flex_attention, as a submodule of this one
import sys as _sys  # noqa: E402

from . import _flex_attention as flex_attention  # noqa: E402

_sys.modules[__name__ + ".flex_attention"] = flex_attention
