"""The transformer family with PyTorch's constructors, forward arguments, submodule names (so
its state_dict loads here) and initialisation: TransformerEncoderLayer, TransformerDecoderLayer,
TransformerEncoder, TransformerDecoder and Transformer."""
from __future__ import annotations

import copy
import numbers
import warnings

import numpy as np

from .. import functional as F
from ..backend import get_array_module, normalize_device, to_device
from ..backend.dtypes import as_dtype, default_float
from ..ops import traces_untracked
from ..tensor import Tensor, autocast_hook, is_grad_enabled
from . import init
from .attention import (AttentionArgumentError, MultiheadAttention, _as_float_padding,
                        _warn_mismatched_masks)
from .layers import GELU, Dropout, LayerNorm, Linear, ModuleList, ReLU
from .module import Module

__all__ = ["Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
           "TransformerDecoderLayer"]


def _activation(name, activation):
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        raise AttentionArgumentError(f"{name}: activation should be relu/gelu, not "
                                     f"{activation}")
    if not callable(activation):
        raise TypeError(f"{name}: activation must be 'relu', 'gelu' or a callable, got "
                        f"{type(activation).__name__}")
    return activation


def _check_sizes(name, d_model, nhead, dim_feedforward, dropout):
    for what, v in (("d_model", d_model), ("nhead", nhead), ("dim_feedforward", dim_feedforward)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
    if d_model % nhead:
        raise ValueError(f"{name}: d_model ({d_model}) must be divisible by nhead ({nhead})")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
        raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout!r}")


def _relu_or_gelu(activation):
    """PyTorch's ``activation_relu_or_gelu``: 1 for relu, 2 for gelu, 0 for anything else."""
    if activation is F.relu or isinstance(activation, ReLU):
        return 1
    if activation is F.gelu or isinstance(activation, GELU):
        return 2
    return 0


def _fast_layer_reason(layer, in_encoder=False):
    """Why PyTorch's fused inference path can never run this encoder layer ('' if it can), in
    the layer's words or (``in_encoder``) TransformerEncoder's."""
    attn = layer.self_attn
    if not attn.batch_first:
        return "self_attn.batch_first was not True"
    if attn.in_proj_bias is None:
        return "self_attn was passed bias=False"
    if not attn._qkv_same_embed_dim:
        return "self_attn._qkv_same_embed_dim was not True"
    if not layer.activation_relu_or_gelu:
        return "activation_relu_or_gelu was not True"
    if layer.norm1.eps != layer.norm2.eps:
        return "norm1.eps is not equal to norm2.eps"
    if attn.num_heads % 2:
        return "self_attn.num_heads is odd" if in_encoder else "num_head is odd"
    return ""


def _nothing_to_differentiate(layer, src):
    if not is_grad_enabled():
        return True
    attn = layer.self_attn
    tensors = (src, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight,
               attn.out_proj.bias, layer.norm1.weight, layer.norm1.bias, layer.norm2.weight,
               layer.norm2.bias, layer.linear1.weight, layer.linear1.bias, layer.linear2.weight,
               layer.linear2.bias)
    return not any(t is not None and t.requires_grad for t in tensors)


def _finish(module, device, dtype):
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with dropout, a residual connection and
    LayerNorm (after the residual, or before the block with ``norm_first``)."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, d_model, nhead, dim_feedforward, dropout)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(name, activation)
        self.activation_relu_or_gelu = _relu_or_gelu(self.activation)
        self.batch_first = batch_first
        _finish(self, device, dtype)

    def _inference_fast_path(self, src):
        """Whether PyTorch runs this layer through its fused inference kernel, whose attention
        gives NaN for a query with every key masked (float masks too) and ignores is_causal;
        minidl computes the same numbers the ordinary way."""
        if (not isinstance(src, Tensor) or src.ndim != 3 or self.training
                or _fast_layer_reason(self) or autocast_hook() is not None):
            return False
        if any(m.__dict__.get("_forward_hooks") or m.__dict__.get("_forward_pre_hooks")
               for m in self.modules()):
            return False
        return _nothing_to_differentiate(self, src)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if getattr(src, "is_nested", False) is True:  # minidl.nested: torch's fast path only
            return src._nested_op("transformer_encoder_layer", self, src, src_mask,
                                  src_key_padding_mask)
        x = src
        _warn_mismatched_masks(src_key_padding_mask, "src_key_padding_mask", src_mask,
                               "src_mask")
        if self._inference_fast_path(src):
            def attend(y):
                return self.self_attn._attend(y, y, y, src_key_padding_mask, False, src_mask,
                                              True, False, True)[0]
            if self.norm_first:
                x = x + attend(self.norm1(x))
                return x + self._ff_block(self.norm2(x))
            x = self.norm1(x + attend(x))
            return self.norm2(x + self._ff_block(x))
        if isinstance(src, Tensor):  # bool masks become float ones, as PyTorch's do here
            src_mask, src_key_padding_mask = (
                None if m is None else _as_float_padding(m, src.dtype)
                for m in (src_mask, src_key_padding_mask))
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=bool(is_causal))[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout2(x)


class TransformerDecoderLayer(Module):
    """Self-attention, attention over the encoder's output (``memory``), then a feed-forward
    block; each with dropout, a residual connection and LayerNorm."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, d_model, nhead, dim_feedforward, dropout)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(name, activation)
        self.batch_first = batch_first
        _finish(self, device, dtype)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask,
                                    memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                               memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=bool(is_causal))[0]
        return self.dropout1(x)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False,
                                is_causal=bool(is_causal))[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout3(x)


def _clones(name, module, n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{name}: num_layers must be a non-negative int, got {n!r}")
    if not isinstance(module, Module):
        raise TypeError(f"{name}: the layer must be a Module, got {type(module).__name__}")
    return ModuleList([copy.deepcopy(module) for _ in range(n)])


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` (each starts with the same weights, as in
    PyTorch, which deep-copies it), then ``norm`` if given."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = _clones(type(self).__name__, encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor, self.mask_check = enable_nested_tensor, mask_check
        # PyTorch's nested-tensor inference path (see forward); asked for but impossible: warn
        if not isinstance(encoder_layer, TransformerEncoderLayer):
            why_not = "encoder_layer was not TransformerEncoderLayer"
        elif encoder_layer.norm_first:
            why_not = "encoder_layer.norm_first was True"
        else:
            why_not = _fast_layer_reason(encoder_layer, in_encoder=True)
            why_not = why_not and "encoder_layer." + why_not
        self.use_nested_tensor = bool(enable_nested_tensor) and not why_not
        if enable_nested_tensor and why_not:
            warnings.warn(f"enable_nested_tensor is True, but self.use_nested_tensor is False "
                          f"because {why_not}", stacklevel=2)

    def _padded_positions(self, src, mask, src_key_padding_mask):
        """Where PyTorch's nested-tensor path (inference with right-padded sequences) leaves
        zeros in place of the padded positions' outputs: a (N, L, 1) bool Tensor, or None."""
        kpm = src_key_padding_mask
        first = self.layers[0] if len(self.layers) else None
        if (not self.use_nested_tensor or first is None or first.training
                or not isinstance(src, Tensor) or src.ndim != 3 or kpm is None
                or mask is not None or autocast_hook() is not None
                or not _nothing_to_differentiate(first, src)):
            return None
        if tuple(kpm.shape) != (src.shape[0], src.shape[1]):
            return None
        if traces_untracked():
            # the ONNX exporter traces: the same test as recorded ops on the mask (a graph
            # cannot branch on it), all False where a sequence has a valid step after padding
            padded = kpm if kpm.dtype == np.bool_ else kpm != 0
            if self.mask_check:
                padded = padded & ~(padded[:, :-1] & ~padded[:, 1:]).any()
            return padded[:, :, None]
        xp = get_array_module(kpm.data)
        padded = kpm.data if kpm.dtype == np.bool_ else kpm.data != 0
        # PyTorch checks that every sequence is its valid steps, then only padding
        if self.mask_check and bool(xp.any(padded[:, :-1] & ~padded[:, 1:])):
            return None
        return Tensor(padded[:, :, None])

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = src
        padded = self._padded_positions(src, mask, src_key_padding_mask)
        _warn_mismatched_masks(src_key_padding_mask, "src_key_padding_mask", mask, "mask")
        if mask is not None and src_key_padding_mask is not None and isinstance(src, Tensor) \
                and mask.dtype != src_key_padding_mask.dtype:
            # as torch's: both made float here, so that the layers do not warn again
            mask, src_key_padding_mask = (_as_float_padding(m, src.dtype)
                                          for m in (mask, src_key_padding_mask))
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=bool(is_causal))
        if padded is not None:
            x = x.masked_fill(padded, 0.0)
        return self.norm(x) if self.norm is not None else x


class TransformerDecoder(Module):
    """``num_layers`` copies of ``decoder_layer``, then ``norm`` if given."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(type(self).__name__, decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x


class Transformer(Module):
    """The encoder-decoder of "Attention Is All You Need", PyTorch's: encoder and decoder
    stacks each ending in a LayerNorm, every weight matrix drawn Xavier-uniform."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation=F.relu, custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True, device=None, dtype=None):
        super().__init__()
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
                                            layer_norm_eps, batch_first, norm_first, bias)
            self.encoder = TransformerEncoder(layer, num_encoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
                                            layer_norm_eps, batch_first, norm_first, bias)
            self.decoder = TransformerDecoder(layer, num_decoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self._reset_parameters()
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        _finish(self, device, dtype)

    def _reset_parameters(self):
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        name = "Transformer"
        for what, t in (("src", src), ("tgt", tgt)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
        if src.ndim == 3:
            b = 0 if self.batch_first else 1
            if tgt.ndim != 3 or src.shape[b] != tgt.shape[b]:
                raise AttentionArgumentError(
                    f"{name}: the batch number of src and tgt must be equal, got shapes "
                    f"{src.shape} and {tgt.shape} (batch_first={self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise AttentionArgumentError(
                f"{name}: the feature number of src and tgt must be equal to d_model "
                f"({self.d_model}), got {src.shape[-1]} and {tgt.shape[-1]}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """A float (sz, sz) mask: 0 on and below the diagonal, -inf above it (position i
        attends to 0..i)."""
        if isinstance(sz, bool) or not isinstance(sz, numbers.Integral) or sz < 0:
            raise ValueError(f"generate_square_subsequent_mask: sz must be a non-negative int, "
                             f"got {sz!r}")
        dt = default_float() if dtype is None else as_dtype(dtype)
        mask = np.triu(np.full((sz, sz), -np.inf, dtype=dt), 1)
        device = "cpu" if device is None else normalize_device(device)
        if device != "cpu":
            mask = to_device(mask, device)
        return Tensor(mask)
