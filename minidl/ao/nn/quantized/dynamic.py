"""Dynamically quantized modules: int8 weights quantized once, activations quantized to uint8
per batch from that batch's own min and max; the products are added in int32 and the result
scaled back to float (torch.ao.nn.quantized.dynamic)."""
from __future__ import annotations

import numpy as np

from ....nn.module import Module
from ....nn.rnn import RNNBase
from ....tensor import Tensor
from ...quantization.qtensor import QTensor, qint8, quantize_ints, quantize_per_tensor
from ._state import check_packed, packed_metadata, load_packed

# fbgemm's smallest scale (quant_utils.h): a smaller one would make 1/scale overflow float32
SMALL_SCALE_THRESHOLD = 6.1e-5


def choose_qparams(x_min, x_max, qmin, qmax):
    """(scale, zero_point) for values in [x_min, x_max], as fbgemm's ChooseQuantizationParams
    (what torch's dynamic Linear uses per batch): the range widened to hold 0, scale =
    range / (qmax - qmin) in float64 then float32, and the zero point taken from whichever end
    (min or max) loses less to rounding, nudged to an integer in [qmin, qmax]."""
    lo, hi = min(float(x_min), 0.0), max(float(x_max), 0.0)
    scale = (hi - lo) / (qmax - qmin)
    if np.float32(scale) == 0 or np.isinf(np.float32(1) / np.float32(scale)):
        scale = 0.1
    if scale < SMALL_SCALE_THRESHOLD:  # widen the range so that the scale is the threshold
        org = scale
        scale = SMALL_SCALE_THRESHOLD
        if lo == 0:
            hi = scale * (qmax - qmin)
        elif hi == 0:
            lo = -scale * (qmax - qmin)
        else:
            amplifier = SMALL_SCALE_THRESHOLD / org
            lo *= amplifier
            hi *= amplifier
    zp_from_min = qmin - lo / scale
    zp_from_max = qmax - hi / scale
    err_min = abs(qmin) - abs(lo / scale)
    err_max = abs(qmax) - abs(hi / scale)
    zp = zp_from_min if err_min < err_max else zp_from_max
    zp = qmin if zp < qmin else qmax if zp > qmax else int(np.rint(zp))
    return float(np.float32(scale)), int(zp)


class Linear(Module):
    """y = x W^T + b with W stored as qint8 (per tensor): each forward quantizes x to uint8
    with its own min/max (7 bits with ``reduce_range``, as on x86: fbgemm adds pairs of
    uint8*int8 products in int16, which 8 bits could overflow), multiplies the integers with
    int32 sums, and scales the sums back by ``x_scale * w_scale``."""

    _version = 4

    def __init__(self, in_features, out_features, bias_=True, dtype=qint8):
        super().__init__()
        if dtype is not qint8:
            raise NotImplementedError(f"dynamic Linear: only qint8 weights are supported, got "
                                      f"{dtype}")
        self.in_features, self.out_features = in_features, out_features
        self._weight = quantize_per_tensor(Tensor(np.zeros((out_features, in_features),
                                                           np.float32)), 1.0, 0, qint8)
        self._bias = Tensor(np.zeros(out_features, np.float32)) if bias_ else None
        self.reduce_range = True

    def weight(self):
        return self._weight

    def bias(self):
        return self._bias

    def set_weight_bias(self, w, b):
        if not isinstance(w, QTensor) or w.dtype is not qint8:
            raise TypeError(f"dynamic Linear: the weight must be a qint8 quantized tensor, got "
                            f"{getattr(w, 'dtype', type(w).__name__)}")
        if w.shape != (self.out_features, self.in_features):
            raise ValueError(f"dynamic Linear: weight of shape {w.shape}, expected "
                             f"{(self.out_features, self.in_features)}")
        self._weight, self._bias = w, b

    def forward(self, x):
        if not isinstance(x, Tensor) or x.data.dtype != np.float32:
            raise TypeError(f"dynamic Linear: expected a float32 input, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"dynamic Linear: input has {x.shape[-1]} features, the layer "
                             f"expects {self.in_features}")
        y = self._apply(x.numpy().reshape(-1, self.in_features))
        return Tensor(y.reshape(*x.shape[:-1], self.out_features))

    def _apply(self, a):
        """The layer on a float32 array (rows, in_features), quantized as one batch."""
        qmax = 127 if self.reduce_range else 255
        if a.size:
            x_scale, x_zp = choose_qparams(a.min(), a.max(), 0, qmax)
        else:
            x_scale, x_zp = choose_qparams(0.0, 0.0, 0, qmax)
        xq = quantize_ints(a, x_scale, x_zp, 0, qmax, fused=True).astype(np.int32)
        w = self._weight
        wq = w._ints.astype(np.int32) - np.int32(w._zero_point)
        # each product fits 16 bits; their sum over in_features needs up to 32 (no overflow
        # below 2**31 / (255 * 128), about 65000 features)
        acc = (xq - np.int32(x_zp)) @ wq.T
        # fbgemm's epilogue: float(acc) * (x_scale * w_scale) + bias as one fused multiply-add
        # (float64 holds the float32 product exactly, so only the final rounding remains)
        y = acc.astype(np.float32).astype(np.float64) * np.float64(
            np.float32(x_scale) * np.float32(w._scale))
        if self._bias is not None:
            y = y + self._bias.numpy().astype(np.float32)
        return y.astype(np.float32)

    @classmethod
    def from_float(cls, mod, weight_observer=None):
        """The dynamic Linear of float ``mod``: its weight quantized with ``weight_observer``
        (or its qconfig's weight observer, else int8 symmetric per tensor)."""
        from ...quantization.qconfig import default_dynamic_qconfig

        if weight_observer is None:
            qconfig = getattr(mod, "qconfig", None) or default_dynamic_qconfig
            weight_observer = qconfig.weight()
        if weight_observer.dtype is not qint8:
            raise NotImplementedError(f"dynamic Linear: weight observer dtype {weight_observer.dtype} "
                                      "is not supported (qint8 only)")
        weight = mod.weight.detach()
        weight_observer(weight)
        scale, zp = weight_observer.calculate_qparams()
        if scale.numel() != 1:
            raise NotImplementedError("dynamic Linear: per-channel weight quantization is not "
                                      "supported here (per-tensor only)")
        qweight = quantize_per_tensor(weight, float(scale.item()), int(zp.item()), qint8)
        out = cls(mod.in_features, mod.out_features, bias_=mod.bias is not None)
        bias = None if mod.bias is None else Tensor(mod.bias.detach().numpy().astype(np.float32))
        out.set_weight_bias(qweight, bias)
        return out

    def __repr__(self):
        return f"DynamicQuantizedLinear({self.extra_repr()})"  # torch's name for it

    def _own_state(self, prefix, keep_vars):
        # torch keeps an output scale and zero point (unused by the dynamic forward) too
        yield prefix + "scale", Tensor(np.array(1.0, np.float32))
        yield prefix + "zero_point", Tensor(np.array(0, np.int64))
        yield prefix + "_packed_params.dtype", qint8
        yield prefix + "_packed_params._packed_params", (self._weight, self._bias)

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        return packed_metadata(super().state_dict(destination, prefix, keep_vars), prefix)

    def _check_own_state(self, given, prefix):
        return check_packed(self, given, prefix, per_tensor_only=True)

    def _load_own_state(self, given, prefix):  # scale and zero_point: unused, as in torch
        load_packed(self, given, prefix)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={qint8}, qscheme={self._weight.qscheme()}")


def _sigmoid(v):
    out = np.empty_like(v)
    pos = v >= 0
    out[pos] = 1 / (1 + np.exp(-v[pos]))
    e = np.exp(v[~pos])
    out[~pos] = e / (1 + e)
    return out


class _RNNBase(Module):
    """Dynamically quantized LSTM / GRU (torch.ao.nn.quantized.dynamic.LSTM/GRU): each layer
    and direction keeps its input and hidden weights as two dynamic Linears (qint8 per
    tensor, the biases in them, as torch packs them). The input projection of a layer is one
    dynamic Linear over the whole sequence (its activations quantized from the min and max of
    all time steps at once), the hidden one runs at each step on that step's hidden state;
    the gates are combined in float32, as torch's quantized_lstm / quantized_gru."""

    _mode = "LSTM"
    _gates = 4

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=qint8):
        super().__init__()
        name = type(self).__name__
        if dtype is not qint8:
            raise NotImplementedError(f"dynamic {name}: only qint8 weights are supported, got "
                                      f"{dtype}")
        if num_layers < 1:
            raise ValueError(f"dynamic {name}: num_layers must be at least 1, got {num_layers}")
        self.mode = self._mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.dtype = bidirectional, dtype
        self._cells = []
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * self._directions
            for _ in range(self._directions):
                ih = Linear(width, self._gates * hidden_size, bias_=bias)
                hh = Linear(hidden_size, self._gates * hidden_size, bias_=bias)
                self._cells.append((ih, hh))

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    def _check(self, x, hx):
        name = type(self).__name__
        if not isinstance(x, Tensor) or isinstance(x, QTensor) or x.data.dtype != np.float32:
            raise TypeError(f"dynamic {name}: expected a float32 input Tensor (packed sequences "
                            f"are not supported here), got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim not in (2, 3):
            raise ValueError(f"dynamic {name}: expected a 2-D (unbatched) or 3-D input, got "
                             f"shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"dynamic {name}: input has {x.shape[-1]} features, the layer "
                             f"expects input_size={self.input_size}")

    def forward(self, input, hx=None):
        self._check(input, hx)
        batched = input.ndim == 3
        x = input.numpy().astype(np.float32)
        if not batched:
            x = x[:, None]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        steps, batch = x.shape[:2]
        states = self._initial_states(hx, batch, batched)
        out, finals = self._run(np.ascontiguousarray(x), states)
        if not batched:
            out = out[:, 0]
            finals = [f[:, 0] for f in finals]
        elif self.batch_first:
            out = out.transpose(1, 0, 2)
        finals = tuple(Tensor(np.ascontiguousarray(f)) for f in finals)
        return Tensor(np.ascontiguousarray(out)), finals if self._mode == "LSTM" else finals[0]

    def _initial_states(self, hx, batch, batched):
        name = type(self).__name__
        shape = (self.num_layers * self._directions, batch, self.hidden_size)
        count = 2 if self._mode == "LSTM" else 1
        if hx is None:
            return [np.zeros(shape, np.float32) for _ in range(count)]
        given = list(hx) if self._mode == "LSTM" else [hx]
        if len(given) != count:
            raise ValueError(f"dynamic {name}: hx must be {'(h_0, c_0)' if count == 2 else 'h_0'}")
        out = []
        for t in given:
            arr = t.numpy().astype(np.float32)
            if not batched:
                arr = arr[:, None]
            if arr.shape != shape:
                want = shape if batched else (shape[0], shape[2])
                raise ValueError(f"dynamic {name}: expected hidden state of shape {want}, got "
                                 f"{tuple(t.shape)}")
            out.append(arr)
        return out

    def _run(self, x, states):
        hidden = self.hidden_size
        finals = [np.empty_like(s) for s in states]
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self._directions):
                k = layer * self._directions + direction
                ih, hh = self._cells[k]
                steps, batch = layer_input.shape[:2]
                gi = ih._apply(layer_input.reshape(steps * batch, -1)).reshape(steps, batch, -1)
                state = [s[k] for s in states]
                out = np.empty((steps, batch, hidden), np.float32)
                order = range(steps - 1, -1, -1) if direction else range(steps)
                for t in order:
                    gh = hh._apply(state[0])
                    state = self._cell(gi[t], gh, state)
                    out[t] = state[0]
                for f, s in zip(finals, state):
                    f[k] = s
                outputs.append(out)
            layer_input = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
        return layer_input, finals

    def _weight_pairs(self):
        return self._cells

    proj_size = 0  # (no projections: torch's dynamic RNNs refuse them)
    extra_repr = RNNBase.extra_repr  # the float layer's, dropout included, as torch's repr

    def __repr__(self):
        return f"DynamicQuantized{self._mode}({self.extra_repr()})"  # torch's name

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """The dynamic LSTM / GRU of float ``mod``: each of its weights quantized to qint8 per
        tensor with its own observer (its qconfig's weight observer, else symmetric
        min/max), the biases kept in float."""
        from ...quantization.qconfig import default_dynamic_qconfig

        name = cls.__name__
        if getattr(mod, "mode", None) != cls._mode:
            raise TypeError(f"dynamic {name}.from_float: expected an nn.{name}, got "
                            f"{type(mod).__name__}")
        if getattr(mod, "proj_size", 0):
            raise NotImplementedError(f"dynamic {name}: proj_size is not supported")
        qconfig = getattr(mod, "qconfig", None) or default_dynamic_qconfig
        if qconfig.weight().dtype is not qint8:
            raise NotImplementedError(f"dynamic {name}: only qint8 weights are supported, got "
                                      f"{qconfig.weight().dtype}")
        out = cls(mod.input_size, mod.hidden_size, mod.num_layers, mod.bias, mod.batch_first,
                  mod.dropout, mod.bidirectional)
        k = 0
        for layer in range(mod.num_layers):
            for direction in range(out._directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for linear, part in zip(out._cells[k], ("ih", "hh")):
                    weight = getattr(mod, f"weight_{part}{suffix}").detach()
                    observer = qconfig.weight()
                    observer(weight)
                    scale, zp = observer.calculate_qparams()
                    if scale.numel() != 1:
                        raise NotImplementedError(f"dynamic {name}: per-channel weight "
                                                  "quantization is not supported (per tensor "
                                                  "only, as torch's)")
                    qweight = quantize_per_tensor(weight, float(scale.item()), int(zp.item()),
                                                  qint8)
                    bias = getattr(mod, f"bias_{part}{suffix}") if mod.bias else None
                    if bias is not None:
                        bias = Tensor(bias.detach().numpy().astype(np.float32))
                    linear.set_weight_bias(qweight, bias)
                k += 1
        return out


class LSTM(_RNNBase):
    """Dynamically quantized LSTM (gate order input, forget, cell, output)."""

    def _cell(self, gi, gh, state):
        h, c = state
        gates = gh + gi
        i, f, g, o = np.split(gates, 4, axis=1)
        i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
        c = f * c + i * g
        return [o * np.tanh(c), c]


class GRU(_RNNBase):
    """Dynamically quantized GRU (gate order reset, update, new)."""

    _mode = "GRU"
    _gates = 3

    def _cell(self, gi, gh, state):
        (h,) = state
        ir, iz, in_ = np.split(gi, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r = _sigmoid(hr + ir)
        z = _sigmoid(hz + iz)
        n = np.tanh(in_ + hn * r)
        return [(h - n) * z + n]


def _no_state(self, prefix, keep_vars):
    raise NotImplementedError(
        f"state_dict: {prefix[:-1] or 'the model'} is a dynamic {self._mode}, whose state_dict "
        "(torch's packed cell parameters) is not supported here; save the float model's "
        "state_dict and quantize_dynamic it again after loading")


_RNNBase._own_state = _no_state
