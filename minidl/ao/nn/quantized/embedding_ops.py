"""Weight-only quantized embeddings (torch.ao.nn.quantized.Embedding / EmbeddingBag): the
table is quint8 with a float scale and a float zero point per row
(``per_channel_affine_float_qparams``: ``scale = (max - min) / 255``,
``zero_point = -min / scale``, from ``float_qparams_weight_only_qconfig``), and the lookups
give float32 rows, as torch's fbgemm kernels compute them: each row as
``fma(scale, q, bias)`` with ``bias = float32(-zero_point * scale)``, and a bag summed row by
row as ``acc = fma(scale * w, q, acc + bias * w)`` (``w`` the per-sample weight, 1 without),
then divided by its length for ``mode="mean"``. Made by ``quantize_dynamic(model,
{nn.Embedding: float_qparams_weight_only_qconfig})`` or by ``convert`` of a model whose
embeddings have that qconfig."""
from __future__ import annotations

import numpy as np

from ....nn.module import Module
from ....tensor import Tensor
from ...quantization.qtensor import QTensor, per_channel_affine_float_qparams, quint8
from ._state import as_qtensor, weight_observer

_ONLY = ("quantized Embedding/EmbeddingBag: only quint8 weights quantized per row with float "
         "qparams are supported (float_qparams_weight_only_qconfig)")


def _indices(name, input):
    arr = np.asarray(input.numpy() if isinstance(input, Tensor) else input)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"quantized {name}: indices must be an integer tensor, got {arr.dtype}")
    return arr.astype(np.int64)


def _check_range(name, idx, rows):
    if idx.size and (idx.min() < 0 or idx.max() >= rows):
        bad = idx[(idx < 0) | (idx >= rows)].ravel()[0]
        raise IndexError(f"quantized {name}: index {bad} is out of range for a table of {rows} "
                         "rows")


class _EmbeddingBase(Module):
    _version = 1

    def _init_weight(self, num_embeddings, embedding_dim, dtype):
        if dtype is not quint8:
            raise NotImplementedError(_ONLY)
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype
        scales = np.ones(num_embeddings, np.float32)
        zps = np.zeros(num_embeddings, np.float32)
        self._qweight = QTensor(np.zeros((num_embeddings, embedding_dim), np.uint8), quint8,
                                scales, zps, 0)
        self._rows_scale_bias()

    def _rows_scale_bias(self):
        w = self._qweight
        self._scale32 = np.asarray(w._scale, np.float32)
        self._bias32 = (-w._zero_point.astype(np.float32) * self._scale32).astype(np.float32)

    # ---- torch's accessors and state ------------------------------------------------------
    def weight(self):
        return self._qweight

    def set_weight(self, w):
        if not isinstance(w, QTensor) or w.dtype is not quint8 or not w._float_qparams \
                or w._axis != 0:
            raise TypeError(_ONLY + f", got {getattr(w, 'dtype', type(w).__name__)}")
        if w.shape != (self.num_embeddings, self.embedding_dim):
            raise ValueError(f"quantized {type(self).__name__}: weight of shape {w.shape}, "
                             f"expected {(self.num_embeddings, self.embedding_dim)}")
        self._qweight = w
        self._rows_scale_bias()

    def _own_state(self, prefix, keep_vars):  # torch's keys
        yield prefix + "_packed_params.dtype", quint8
        yield prefix + "_packed_params._packed_weight", self._qweight

    def _check_own_state(self, given, prefix):
        from ....nn.module import StateDictValueError

        key = prefix + "_packed_params._packed_weight"
        if key not in given:
            return []
        w = as_qtensor(given[key])
        if w is None or w.dtype is not quint8 or not w._float_qparams:
            raise StateDictValueError(f"load_state_dict: {key!r} must be a quint8 tensor "
                                      "quantized per row with float qparams, got "
                                      f"{getattr(given[key], 'dtype', type(given[key]).__name__)}")
        expected = (self.num_embeddings, self.embedding_dim)
        return [] if w.shape == expected else [f"{key}: checkpoint {w.shape}, model {expected}"]

    def _load_own_state(self, given, prefix):
        key = prefix + "_packed_params._packed_weight"
        if key in given:
            self._qweight = as_qtensor(given[key])
            self._rows_scale_bias()

    def _rows(self, idx):
        """float32 ``fma(scale, q, bias)`` of the rows ``idx``."""
        q = self._qweight._ints[idx].astype(np.float64)
        s, b = self._scale32[idx][..., None], self._bias32[idx][..., None]
        return (q * s.astype(np.float64) + b.astype(np.float64)).astype(np.float32)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """From a float nn.Embedding / nn.EmbeddingBag with a float-qparams weight qconfig
        (or a QAT one with its ``weight_fake_quant``)."""
        weight_fq = weight_observer(cls, mod, "use float_qparams_weight_only_qconfig")
        if weight_fq.dtype is not quint8 or weight_fq.qscheme is not \
                per_channel_affine_float_qparams:
            raise ValueError(f"{cls.__name__} quantization is only supported with "
                             "float_qparams_weight_only_qconfig (quint8, "
                             f"per_channel_affine_float_qparams), got {weight_fq.dtype} "
                             f"{weight_fq.qscheme}")
        from ...quantization.qtensor import quantize_per_channel

        weight = mod.weight.detach()
        weight_fq(weight)
        scale, zp = weight_fq.calculate_qparams()
        out = cls._like(mod)
        out.set_weight(quantize_per_channel(weight, scale.numpy().astype(np.float32),
                                            zp.numpy().astype(np.float32), 0, quint8))
        return out


class Embedding(_EmbeddingBase):
    """Rows of the quint8 table for each index, as float32 (see the module's docstring)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 dtype=quint8):
        super().__init__()
        if max_norm is not None:
            raise NotImplementedError("quantized Embedding: max_norm is not supported (as "
                                      "torch's)")
        self.padding_idx = padding_idx
        self._init_weight(num_embeddings, embedding_dim, dtype)
        if _weight is not None:
            self.set_weight(_weight)

    @classmethod
    def _like(cls, mod):
        return cls(mod.num_embeddings, mod.embedding_dim, getattr(mod, "padding_idx", None))

    def forward(self, indices):
        idx = _indices("Embedding", indices)
        _check_range("Embedding", idx, self.num_embeddings)
        return Tensor(self._rows(idx))

    def __repr__(self):
        return (f"QuantizedEmbedding(num_embeddings={self.num_embeddings}, embedding_dim="
                f"{self.embedding_dim}, dtype={self.dtype}, qscheme={self._qweight.qscheme()})")


class EmbeddingBag(_EmbeddingBase):
    """Sums (or means) of rows of the quint8 table over bags of indices, as float32: a 2-D
    input (each row a bag) or a 1-D input with ``offsets``; ``per_sample_weights`` with
    ``mode="sum"`` (see the module's docstring)."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, mode="sum", sparse=False, _weight=None,
                 include_last_offset=False, dtype=quint8):
        super().__init__()
        if mode not in ("sum", "mean"):
            raise NotImplementedError(f"quantized EmbeddingBag: mode {mode!r} is not supported "
                                      "(sum or mean, as torch's)")
        self.mode, self.include_last_offset = mode, include_last_offset
        self._init_weight(num_embeddings, embedding_dim, dtype)
        if _weight is not None:
            self.set_weight(_weight)

    @classmethod
    def _like(cls, mod):
        return cls(mod.num_embeddings, mod.embedding_dim, mode=getattr(mod, "mode", "sum"),
                   include_last_offset=getattr(mod, "include_last_offset", False))

    def forward(self, indices, offsets=None, per_sample_weights=None,
                compressed_indices_mapping=None):
        name = "EmbeddingBag"
        idx = _indices(name, indices)
        if idx.ndim == 2:
            if offsets is not None:
                raise ValueError(f"quantized {name}: offsets must be None for a 2-D input")
            bounds = np.arange(0, idx.size + 1, max(idx.shape[1], 1)) if idx.shape[1] else \
                np.zeros(idx.shape[0] + 1, np.int64)
            idx = idx.reshape(-1)
        elif idx.ndim == 1:
            if offsets is None:
                raise ValueError(f"quantized {name}: offsets are required for a 1-D input")
            bounds = _indices(name, offsets).reshape(-1)
            if not self.include_last_offset:
                bounds = np.append(bounds, idx.size)
            if bounds.size and (bounds[0] != 0 or np.any(np.diff(bounds) < 0)
                                or bounds[-1] > idx.size):
                raise ValueError(f"quantized {name}: offsets must start at 0, not decrease and "
                                 f"stay within the {idx.size} indices, got {bounds.tolist()}")
        else:
            raise ValueError(f"quantized {name}: expected a 1-D or 2-D input, got shape "
                             f"{idx.shape}")
        _check_range(name, idx, self.num_embeddings)
        weights = None
        if per_sample_weights is not None:
            if self.mode != "sum":
                raise NotImplementedError(f"quantized {name}: per_sample_weights is only "
                                          "supported for mode='sum'")
            weights = np.asarray(per_sample_weights.numpy(), np.float32).reshape(-1)
            if weights.size != idx.size:
                raise ValueError(f"quantized {name}: per_sample_weights has {weights.size} "
                                 f"elements, the input {idx.size}")
        out = np.zeros((len(bounds) - 1, self.embedding_dim), np.float32)
        q = self._qweight._ints
        for b in range(len(bounds) - 1):
            acc = np.zeros(self.embedding_dim, np.float32)
            for i in range(bounds[b], bounds[b + 1]):
                r = idx[i]
                s, bias = self._scale32[r], self._bias32[r]
                if weights is not None:
                    s, bias = s * weights[i], bias * weights[i]
                acc = (q[r].astype(np.float64) * np.float64(s)
                       + np.float64(acc + bias)).astype(np.float32)
            length = bounds[b + 1] - bounds[b]
            if self.mode == "mean" and length:
                acc = acc * (np.float32(1) / np.float32(length))
            out[b] = acc
        return Tensor(out)

    def __repr__(self):
        return (f"QuantizedEmbeddingBag(num_embeddings={self.num_embeddings}, embedding_dim="
                f"{self.embedding_dim}, dtype={self.dtype}, qscheme={self._qweight.qscheme()})")


__all__ = ["Embedding", "EmbeddingBag"]
