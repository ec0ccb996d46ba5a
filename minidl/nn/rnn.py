"""Recurrent layers with PyTorch's names, shapes, gate orders and initialisation: RNN (tanh or
relu), LSTM and GRU over whole sequences, and the one-step RNNCell, LSTMCell and GRUCell.

Each layer and direction projects the whole input sequence with one matmul (``F.linear``);
the recurrence over time is then one autograd Function (``Recurrence``) whose backward is
backpropagation through time written out by hand, so a sequence of length L records a handful
of graph nodes per layer instead of a dozen per time step.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .. import autograd, backend
from ..backend.dtypes import default_float
from .. import functional as F
from ..backend import get_array_module
from ..ops import Clone, Where, cat, constant, stable_sigmoid, stack
from ..tensor import Function, Tensor
from . import init
from ._rnn_utils import (
    PackedSequence, TracedPackedSequence, packing_index, traced_packed, unpack_sorted,
)
from .module import Module, Parameter

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class RNNShapeError(ValueError, RuntimeError):
    """An input or hidden state of the wrong size (or a hidden state of another dtype than the
    input's): PyTorch raises RuntimeError for these, and minidl's shape errors are ValueErrors;
    this is both."""


def _fused_kernels(xp, mode, valid, *like):
    """The kernel set whose fused LSTM/GRU step kernels take this recurrence (numba's for
    float32, the CUDA kernels for float32 and float64; packed sequences, with their per-step
    masks, excluded), or None: the array-expression steps below."""
    if mode not in ("LSTM", "GRU") or valid is not None:
        return None
    ks = backend.kernels(xp)
    fits = getattr(ks, "rnn_step_fits", None)
    return ks if fits is not None and fits(*like) else None


def _by_gate_rows(xp, batch):
    """Whether the per-step products with W_hh go to BLAS with the weight's rows as the
    product's rows (W_hh @ h.T forward, W_hh.T @ da.T backward) instead of the batch's. OpenBLAS
    splits a GEMM's rows between its threads, and a small batch splits badly: batch 32, hidden
    256, 2 threads, 127 against 161 us forward, transposed copy included; from batch 128 the
    plain product is faster."""
    return xp is np and batch <= 64


# ---- the recurrence ---------------------------------------------------------------------------
class Recurrence(Function):
    """One layer and one direction over a whole sequence, from the projected input
    ``xw = x @ W_ih.T + b_ih`` of shape (L, N, G): inputs ``xw, h0, [c0,] w_hh, [b_hh,] [w_hr]``.

    The output is the hidden state at every step, (L, N, H), in input order also when
    ``reverse`` (the backward direction of a bidirectional layer runs from L-1 down to 0); an
    LSTM returns (L, N, P + H): the hidden states, then the cell states, along the last dim.

    ``proj``: an LSTM with projections; the last input is ``w_hr`` (P, H) and the hidden
    state is ``(o * tanh(c)) @ w_hr.T`` (P wide; the cell state stays H wide).

    ``lengths`` (N,) (packed sequences): sequence b has steps 0..lengths[b]-1 only; at the
    steps past its end its state is carried unchanged, so the forward direction ends, and the
    reverse direction starts, at its own last step."""

    def forward(self, xw, h0, *rest, mode, reverse, lengths=None, proj=False):
        xp = get_array_module(xw)
        # under autocast the projection may come in a 16-bit dtype beside float32 weights:
        # the recurrence runs in the widest (each gradient goes back in its input's dtype)
        dtype = max((a.dtype for a in (xw, h0) + rest), key=lambda d: d.itemsize)
        xw, h0 = xw.astype(dtype, copy=False), h0.astype(dtype, copy=False)
        rest = tuple(a.astype(dtype, copy=False) for a in rest)
        lstm, gru = mode == "LSTM", mode == "GRU"
        c0, rest = (rest[0], rest[1:]) if lstm else (None, rest)
        w_hr, rest = (rest[-1], rest[:-1]) if proj else (None, rest)
        w_hh = rest[0]
        b_hh = rest[1] if len(rest) > 1 else None
        length, batch = xw.shape[:2]
        H = c0.shape[-1] if lstm else h0.shape[-1]
        hs = xp.empty((length, batch, h0.shape[-1]), dtype=dtype)
        acts = xp.empty(xw.shape, dtype=dtype) if (lstm or gru) else None
        cs = xp.empty((length, batch, H), dtype=dtype) if lstm else None
        hn_parts = xp.empty((length, batch, H), dtype=dtype) if gru else None
        unprojected = xp.empty((length, batch, H), dtype=dtype) if proj else None
        w_t = w_hh.T
        h, c = h0, c0
        valid = None
        if lengths is not None:  # (L, N, 1): step t is inside sequence b
            valid = (xp.arange(length)[:, None] < lengths[None, :])[:, :, None]
        steps = range(length - 1, -1, -1) if reverse else range(length)
        fused = _fused_kernels(xp, mode, valid, xw)
        if fused is not None:
            bias = b_hh if b_hh is not None else xp.zeros(w_hh.shape[0], dtype=dtype)
            by_rows = _by_gate_rows(xp, batch)
            for t in steps:
                gh = (w_hh @ h.T).T if by_rows else h @ w_t
                if lstm:
                    h_out = unprojected[t] if proj else hs[t]
                    fused.lstm_step_forward(xw[t], gh, bias, c, acts[t], cs[t], h_out)
                    c = cs[t]
                    if proj:
                        hs[t] = h_out @ w_hr.T
                else:
                    fused.gru_step_forward(xw[t], gh, bias, h, acts[t], hn_parts[t], hs[t])
                h = hs[t]
            steps = ()
        for t in steps:
            h_prev, c_prev = h, c
            gh = h @ w_t
            if b_hh is not None:
                gh += b_hh
            if lstm:
                a = acts[t]
                xp.add(xw[t], gh, out=a)
                a[:, :2 * H] = stable_sigmoid(a[:, :2 * H])  # i, f
                xp.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])  # g
                a[:, 3 * H:] = stable_sigmoid(a[:, 3 * H:])  # o
                c = a[:, H:2 * H] * c + a[:, :H] * a[:, 2 * H:3 * H]
                h = a[:, 3 * H:] * xp.tanh(c)
                if proj:
                    unprojected[t] = h
                    h = h @ w_hr.T
            elif gru:
                a = acts[t]
                a[:, :2 * H] = stable_sigmoid(xw[t, :, :2 * H] + gh[:, :2 * H])  # r, z
                hn_parts[t] = gh[:, 2 * H:]
                n = xp.tanh(xw[t, :, 2 * H:] + a[:, :H] * gh[:, 2 * H:])
                a[:, 2 * H:] = n
                h = n + a[:, H:2 * H] * (h - n)  # (1 - z) * n + z * h
            else:
                h = xw[t] + gh
                if mode == "RNN_TANH":
                    xp.tanh(h, out=h)
                else:
                    xp.maximum(h, 0, out=h)
            if valid is not None:
                h = xp.where(valid[t], h, h_prev)
                if lstm:
                    c = xp.where(valid[t], c, c_prev)
            if lstm:
                cs[t] = c
            hs[t] = h
        self.mode, self.reverse, self.valid, self.proj = mode, reverse, valid, proj
        self.save_for_backward(h0, c0, w_hh, hs, cs, acts, hn_parts, w_hr, unprojected)
        return xp.concatenate([hs, cs], axis=2) if lstm else hs

    def backward(self, g):
        h0, c0, w_hh, hs, cs, acts, hn_parts, w_hr, unprojected = self.saved
        xp = get_array_module(g)
        mode, reverse = self.mode, self.reverse
        lstm, gru = mode == "LSTM", mode == "GRU"
        length, batch, P = hs.shape  # P: the hidden state's width (H, or an LSTM's proj_size)
        H = cs.shape[2] if lstm else P
        dproj = xp.empty_like(hs) if w_hr is not None else None
        width = hs.shape[2]
        g_h, g_c = (g[:, :, :width], g[:, :, width:]) if lstm else (g, None)
        dxw = xp.empty((length, batch, w_hh.shape[0]), dtype=g.dtype)
        dgh = xp.empty_like(dxw) if gru else dxw  # gradient of h @ W_hh.T + b_hh per step
        dh = xp.zeros_like(h0)
        dc = xp.zeros_like(c0) if lstm else None
        order = range(length) if reverse else range(length - 1, -1, -1)
        # the state each step started from, in input order
        if reverse:
            prev = xp.concatenate([hs[1:], h0[None]]) if length else hs
        else:
            prev = xp.concatenate([h0[None], hs[:-1]]) if length else hs
        valid = self.valid
        skip_h = skip_c = 0
        fused = _fused_kernels(xp, mode, valid, g, hs)
        if fused is not None:
            # W_hh.T @ da.T (H rows), with W_hh.T copied once per layer: the LSTM language
            # model's training step 140 -> 134 ms (median of 12 alternating pairs)
            by_rows = _by_gate_rows(xp, batch)
            w_hh_t = xp.ascontiguousarray(w_hh.T) if by_rows else None
            carry = xp.empty(dh.shape, dh.dtype) if gru else None
            dc = xp.zeros(c0.shape, c0.dtype) if lstm else None  # updated in place
            for t in order:
                dh = dh + g_h[t]
                if lstm:
                    if w_hr is not None:
                        dproj[t] = dh
                        dh = dh @ w_hr
                    last = (t == length - 1) if reverse else (t == 0)
                    c_prev = c0 if last else cs[t + 1 if reverse else t - 1]
                    fused.lstm_step_backward(dh, dc, g[t], width, acts[t], c_prev, cs[t],
                                             dxw[t])
                    dh = (w_hh_t @ dxw[t].T).T if by_rows else dxw[t] @ w_hh
                else:
                    fused.gru_step_backward(dh, acts[t], hn_parts[t], prev[t], dxw[t], dgh[t],
                                            carry)
                    dh = carry + ((w_hh_t @ dgh[t].T).T if by_rows else dgh[t] @ w_hh)
            order = ()
        for t in order:
            dh = dh + g_h[t]
            if lstm:
                dc = dc + g_c[t]
            if valid is not None:
                # past a sequence's end the state went through unchanged: so does its gradient
                m = valid[t].astype(dh.dtype)
                skip_h, dh = dh * (1 - m), dh * m
                if lstm:
                    skip_c, dc = dc * (1 - m), dc * m
            h = hs[t]
            if lstm:
                a = acts[t]
                i, f, gg, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
                last = (t == length - 1) if reverse else (t == 0)
                c_prev = c0 if last else cs[t + 1 if reverse else t - 1]
                tc = xp.tanh(cs[t])
                if w_hr is not None:
                    dproj[t] = dh
                    dh = dh @ w_hr
                dc = dc + dh * o * (1 - tc * tc)
                da = dxw[t]
                da[:, :H] = dc * gg * i * (1 - i)
                da[:, H:2 * H] = dc * c_prev * f * (1 - f)
                da[:, 2 * H:3 * H] = dc * i * (1 - gg * gg)
                da[:, 3 * H:] = dh * tc * o * (1 - o)
                dc = dc * f + skip_c
                dh = da @ w_hh + skip_h
            elif gru:
                a = acts[t]
                r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
                dn = dh * (1 - z)
                dz = dh * (prev[t] - n)
                dan = dn * (1 - n * n)
                dr = dan * hn_parts[t]
                dxw[t, :, :H] = dr * r * (1 - r)
                dxw[t, :, H:2 * H] = dz * z * (1 - z)
                dxw[t, :, 2 * H:] = dan
                dgh[t, :, :2 * H] = dxw[t, :, :2 * H]
                dgh[t, :, 2 * H:] = dan * r
                dh = dh * z + dgh[t] @ w_hh + skip_h
            else:
                da = dxw[t]
                if mode == "RNN_TANH":
                    xp.multiply(dh, 1 - h * h, out=da)
                else:
                    xp.multiply(dh, h > 0, out=da)
                dh = da @ w_hh + skip_h
        gates = w_hh.shape[0]
        dw = dgh.reshape(-1, gates).T @ prev.reshape(-1, P)
        grads = [dxw, dh]
        if lstm:
            grads.append(dc)
        grads.append(dw)
        if len(self.inputs) > (4 if lstm else 3) + (w_hr is not None):
            grads.append(dgh.sum(axis=(0, 1)))
        if w_hr is not None:
            grads.append(dproj.reshape(-1, P).T @ unprojected.reshape(-1, H))
        return tuple(grads)

    def graph_backward(self, g, out):
        """The gradients of a replay of the forward pass in recorded Tensor ops (one node per
        step and gate), taken with create_graph=True, so that they can be differentiated
        again. The replay starts from stand-ins of the inputs, so the inner backward stops
        there instead of walking the graph above them; the stand-ins are then joined to the
        inputs by an identity node, through which a second backward reaches them."""
        if not out.shape[0]:  # an empty sequence
            return autograd.first_order_only(self, g)
        stand_ins = [Tensor(t.data, dtype=t.data.dtype, requires_grad=t.requires_grad)
                     for t in self.inputs]
        wanted = [s for s in stand_ins if s.requires_grad]
        grads = iter(autograd.grad(self.replay(*stand_ins), wanted, grad_outputs=g,
                                   create_graph=True, allow_unused=True,
                                   materialize_grads=True))
        for s, t in zip(stand_ins, self.inputs):
            if s.requires_grad:
                join = Clone()
                join.inputs, join.stamp = [t], autograd.changes
                s._ctx = join
        return tuple(next(grads) if s.requires_grad else None for s in stand_ins)

    def replay(self, xw, h0, *rest):
        """The forward pass on Tensors, one recorded op at a time (for graph_backward)."""
        lstm, gru = self.mode == "LSTM", self.mode == "GRU"
        c0, rest = (rest[0], rest[1:]) if lstm else (None, rest)
        w_hr, rest = (rest[-1], rest[:-1]) if self.proj else (None, rest)
        w_hh, b_hh = rest[0], (rest[1] if len(rest) > 1 else None)
        H = w_hh.shape[0] // _GATES[self.mode]
        length = xw.shape[0]
        h, c, hs, cs = h0, c0, [None] * length, [None] * length
        for t in (range(length - 1, -1, -1) if self.reverse else range(length)):
            gh = h @ w_hh.transpose(0, 1)
            if b_hh is not None:
                gh = gh + b_hh
            x = xw[t]
            if lstm:
                a = x + gh
                i, f = a[:, :H].sigmoid(), a[:, H:2 * H].sigmoid()
                gg, o = a[:, 2 * H:3 * H].tanh(), a[:, 3 * H:].sigmoid()
                c_new = f * c + i * gg
                h_new = o * c_new.tanh()
                if w_hr is not None:
                    h_new = h_new @ w_hr.transpose(0, 1)
            elif gru:
                r = (x[:, :H] + gh[:, :H]).sigmoid()
                z = (x[:, H:2 * H] + gh[:, H:2 * H]).sigmoid()
                n = (x[:, 2 * H:] + r * gh[:, 2 * H:]).tanh()
                h_new = n + z * (h - n)
            else:
                h_new = x + gh
                h_new = h_new.tanh() if self.mode == "RNN_TANH" else h_new.relu()
            if self.valid is not None:  # past a sequence's end the state is carried
                step = constant(self.valid[t])
                h_new = Where.apply(step, h_new, h)
                if lstm:
                    c_new = Where.apply(step, c_new, c)
            h, hs[t] = h_new, h_new
            if lstm:
                c, cs[t] = c_new, c_new
        return cat([stack(hs), stack(cs)], dim=2) if lstm else stack(hs)


# Their own names for autocast's policy: PyTorch's CPU autocast runs an Elman RNN (layer or
# cell) and an LSTM over a sequence in the low dtype, and a GRU or an LSTMCell in float32.
class RNNRecurrence(Recurrence):
    """Recurrence of nn.RNN and nn.RNNCell."""


class LSTMRecurrence(Recurrence):
    """Recurrence of nn.LSTM over a sequence (nn.LSTMCell runs the plain Recurrence)."""


def _recurrence(mode, sequence):
    if mode.startswith("RNN"):
        return RNNRecurrence
    return LSTMRecurrence if mode == "LSTM" and sequence else Recurrence


# ---- checks -----------------------------------------------------------------------------------
def _positive_int(name, what, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: {what} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name}: {what} must be greater than zero, got {value}")
    return int(value)


def _check_dtype(name, x, weight):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if x.dtype != weight.dtype:
        raise ValueError(f"{name}: input dtype ({x.dtype}) does not match weight dtype "
                         f"({weight.dtype}); convert the input (x.to({weight.dtype})) or the "
                         f"model (model.to({x.dtype}))")


def _check_state(name, what, h, expected, dtype):
    if not isinstance(h, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(h).__name__}")
    if tuple(h.shape) != tuple(expected):
        raise RNNShapeError(f"{name}: expected {what} of size {tuple(expected)}, got "
                            f"{tuple(h.shape)}")
    if h.dtype != dtype:
        raise RNNShapeError(f"{name}: {what} dtype ({h.dtype}) does not match the input's "
                         f"({dtype})")


def _zeros_like_state(x, shape):
    xp = get_array_module(x.data)
    hook = autograd._profiler_hook
    if hook is not None and getattr(hook, "traces_untracked_ops", False):
        # the ONNX exporter traces: a recorded Expand of one zero, so that the batch dim of the
        # state follows the input's in the graph
        return Tensor(xp.zeros((), dtype=x.dtype)).expand(*shape)
    return Tensor(xp.zeros(shape, dtype=x.dtype))


# ---- whole-sequence layers ----------------------------------------------------------------
class RNNBase(Module):
    """What RNN, LSTM and GRU share: the parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``_reverse`` for the second direction), each drawn
    from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) as in PyTorch."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.num_layers = _positive_int(name, "num_layers", num_layers)
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Number)
                or not 0 <= dropout <= 1):
            raise ValueError(f"{name}: dropout should be a number in range [0, 1] representing "
                             f"the probability of an element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout option adds dropout after all but last recurrent "
                          f"layer, so non-zero dropout expects num_layers greater than 1, but "
                          f"got dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral) or \
                proj_size < 0:
            raise ValueError(f"{name}: proj_size should be a non-negative integer, got "
                             f"{proj_size!r}")
        if proj_size and mode != "LSTM":
            raise ValueError(f"{name}: proj_size argument is only supported for LSTM, not "
                             f"RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size ({proj_size}) has to be smaller than "
                             f"hidden_size ({hidden_size})")
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        self.proj_size = int(proj_size)
        out_size = proj_size or hidden_size  # the width of the hidden state and the output
        gate_size = _GATES[mode] * hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names = []
        for layer in range(num_layers):
            for direction in range(directions):
                layer_input = input_size if layer == 0 else out_size * directions
                suffix = "_reverse" if direction == 1 else ""
                shapes = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, out_size))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for kind, shape in shapes:
                    pname = f"{kind}_l{layer}{suffix}"
                    setattr(self, pname, Parameter(np.empty(shape, dtype=default_float())))
                    self._flat_weights_names.append(pname)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def flatten_parameters(self):
        """A no-op (PyTorch compacts the weights for cuDNN there)."""

    @property
    def _flat_weights(self):
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self):
        """The parameters grouped per layer and direction, as PyTorch lists them."""
        per = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        w = self._flat_weights
        return [w[i:i + per] for i in range(0, len(w), per)]

    def _layer_weights(self, layer, direction):
        suffix = "_reverse" if direction else ""

        def get(name):  # the attribute (an FSDP unit shows its gathered views there)
            return getattr(self, name)
        w_ih, w_hh = get(f"weight_ih_l{layer}{suffix}"), get(f"weight_hh_l{layer}{suffix}")
        w_hr = get(f"weight_hr_l{layer}{suffix}") if self.proj_size else None
        if self.bias:
            return (w_ih, w_hh, get(f"bias_ih_l{layer}{suffix}"),
                    get(f"bias_hh_l{layer}{suffix}"), w_hr)
        return w_ih, w_hh, None, None, w_hr

    def _prepare(self, input, hx):
        """The input as (L, N, H_in) and the initial state(s) as (layers * D, N, H)."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D instead")
        batched = input.ndim == 3
        x = input if not batched else (input.transpose(0, 1) if self.batch_first else input)
        if not batched:
            x = x.unsqueeze(1)
        if x.shape[-1] != self.input_size:
            raise RNNShapeError(f"{name}: input.size(-1) must be equal to input_size. Expected "
                                f"{self.input_size}, got {x.shape[-1]}")
        if x.shape[0] == 0:
            raise RNNShapeError(f"{name}: Expected sequence length to be larger than 0 in RNN, "
                                f"got input of shape {input.shape}")
        _check_dtype(name, x, self.weight_ih_l0)
        batch = x.shape[1]
        layers = self.num_layers * (2 if self.bidirectional else 1)
        lstm = self.mode == "LSTM"
        # h_0's width is proj_size where an LSTM projects; c_0's is always hidden_size
        shapes = [(layers, batch, self.proj_size or self.hidden_size)]
        if lstm:
            shapes.append((layers, batch, self.hidden_size))
        if hx is None:
            states = [_zeros_like_state(x, shape) for shape in shapes]
        else:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got "
                                    f"{type(hx).__name__}")
                states, whats = list(hx), ("h_0", "c_0")
            else:
                states, whats = [hx], ("hx",)
            for s, what in zip(states, whats):
                if not isinstance(s, Tensor):
                    raise TypeError(f"{name}: {what} must be a Tensor, got {type(s).__name__}")
                if s.ndim != (3 if batched else 2):
                    raise RNNShapeError(
                        f"{name}: for {'batched 3' if batched else 'unbatched 2'}-D input, "
                        f"{what} should be {3 if batched else 2}-D, got {s.ndim}-D")
            if not batched:
                states = [s.unsqueeze(1) for s in states]
            for s, what, expected in zip(states, whats, shapes):
                shown = expected if batched else (expected[0], expected[2])
                if tuple(s.shape) != expected:
                    got = tuple(s.shape) if batched else (s.shape[0], s.shape[2])
                    raise RNNShapeError(f"{name}: expected {what} of size {shown}, got {got}")
                if s.dtype != x.dtype:
                    raise RNNShapeError(f"{name}: {what} dtype ({s.dtype}) does not match the "
                                     f"input's ({x.dtype})")
        return x, states, batched

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        x, states, batched = self._prepare(input, hx)
        output, h, c = self._run(x, states)
        if not batched:
            output, h = output.squeeze(1), h.squeeze(1)
            c = c.squeeze(1) if c is not None else None
        elif self.batch_first:
            output = output.transpose(0, 1)
        return (output, (h, c)) if self.mode == "LSTM" else (output, h)

    def _forward_packed(self, packed, hx):
        """A PackedSequence in, one out (as PyTorch): the recurrences run on the padded batch
        (in its sorted order) and carry each sequence's state past its end unchanged, so
        h_n holds each sequence's own last step."""
        if isinstance(packed, TracedPackedSequence):  # the ONNX exporter traces
            return self._forward_traced_packed(packed, hx)
        padded, lengths = unpack_sorted(packed)
        sorted_indices, unsorted_indices = packed.sorted_indices, packed.unsorted_indices
        lstm = self.mode == "LSTM"
        batch_first, self.batch_first = self.batch_first, False  # padded is (L, N, H_in)
        try:
            x, states, _ = self._prepare(padded, hx)
        finally:
            self.batch_first = batch_first
        if hx is not None and sorted_indices is not None:  # hx comes in the caller's order
            states = [s[:, sorted_indices.data] for s in states]
        xp = get_array_module(x.data)
        device_lengths = lengths if xp is np else xp.asarray(lengths)
        output, h, c = self._run(x, states, device_lengths)
        t_idx, b_idx, _ = packing_index(lengths)
        if xp is not np:
            t_idx, b_idx = xp.asarray(t_idx), xp.asarray(b_idx)
        data = output[t_idx, b_idx]
        if unsorted_indices is not None:
            h = h[:, unsorted_indices.data]
            c = c[:, unsorted_indices.data] if lstm else None
        out = PackedSequence(data, packed.batch_sizes, sorted_indices, unsorted_indices)
        return (out, (h, c)) if lstm else (out, h)

    def _forward_traced_packed(self, packed, hx):
        """_forward_packed while the ONNX exporter traces: the recurrences run on the padded
        batch in the caller's order, the lengths a graph value (each sequence is computed on
        its own, so the order does not change its numbers), and the result is again a
        TracedPackedSequence."""
        batch_first, self.batch_first = self.batch_first, False
        try:
            x, states, _ = self._prepare(packed.padded, hx)
        finally:
            self.batch_first = batch_first
        output, h, c = self._run(x, states, packed.lengths.data)
        sorted_order = None if packed.sorted_indices is None else packed.sorted_indices.numpy()
        out = traced_packed(output, packed.lengths, sorted_order)
        return (out, (h, c)) if self.mode == "LSTM" else (out, h)

    def _run(self, x, states, lengths=None):
        """All layers over x (L, N, H_in) from the initial states: (output, h_n, c_n)."""
        lstm = self.mode == "LSTM"
        directions = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                w_ih, w_hh, b_ih, b_hh, w_hr = self._layer_weights(layer, direction)
                k = layer * directions + direction
                xw = F.linear(layer_input, w_ih, b_ih)
                args = [xw, states[0][k]] + ([states[1][k]] if lstm else []) + [w_hh]
                if b_hh is not None:
                    args.append(b_hh)
                if w_hr is not None:
                    args.append(w_hr)
                y = _recurrence(self.mode, True).apply(*args, mode=self.mode,
                                                       reverse=direction == 1, lengths=lengths,
                                                       proj=w_hr is not None)
                last = 0 if direction == 1 else -1  # -1, not L-1: an exported graph's L varies
                if lstm:
                    width = self.proj_size or self.hidden_size
                    outputs.append(y[:, :, :width])
                    h_n.append(y[last, :, :width])
                    c_n.append(y[last, :, width:])
                else:
                    outputs.append(y)
                    h_n.append(y[last])
            layer_input = outputs[0] if directions == 1 else cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        return layer_input, stack(h_n), (stack(c_n) if lstm else None)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' "
                             "or 'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self):
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")


class LSTM(RNNBase):
    """LSTM with PyTorch's gate order in the weights: input, forget, cell (g), output."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)


class GRU(RNNBase):
    """GRU with PyTorch's gate order (reset, update, new) and its new gate
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


# ---- cells ------------------------------------------------------------------------------------
class RNNCellBase(Module):
    def __init__(self, mode, input_size, hidden_size, bias, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.bias = bool(bias)
        gates = _GATES[mode] * hidden_size
        self.weight_ih = Parameter(np.empty((gates, input_size), dtype=default_float()))
        self.weight_hh = Parameter(np.empty((gates, hidden_size), dtype=default_float()))
        if bias:
            self.bias_ih = Parameter(np.empty(gates, dtype=default_float()))
            self.bias_hh = Parameter(np.empty(gates, dtype=default_float()))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def _step(self, input, states):
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        if x.shape[1] != self.input_size:
            raise RNNShapeError(f"{name}: input has inconsistent input_size: got {x.shape[1]} "
                                f"expected {self.input_size}")
        _check_dtype(name, x, self.weight_ih)
        lstm = self.mode == "LSTM"
        whats = ("h_0", "c_0") if lstm else ("hx",)
        if states is None:
            states = [_zeros_like_state(x, (x.shape[0], self.hidden_size))] * len(whats)
        else:
            for s, what in zip(states, whats):
                if not isinstance(s, Tensor):
                    raise TypeError(f"{name}: {what} must be a Tensor, got {type(s).__name__}")
                if s.ndim != input.ndim:
                    raise RNNShapeError(f"{name}: {what} should be {input.ndim}-D for "
                                        f"{input.ndim}-D input, got {s.ndim}-D")
            states = [s if batched else s.unsqueeze(0) for s in states]
            for s, what in zip(states, whats):
                if s.shape[0] != x.shape[0]:
                    raise RNNShapeError(f"{name}: input batch size {x.shape[0]} doesn't match "
                                        f"{what} batch size {s.shape[0]}")
                if s.shape[1] != self.hidden_size:
                    raise RNNShapeError(f"{name}: {what} has inconsistent hidden_size: got "
                                        f"{s.shape[1]}, expected {self.hidden_size}")
                if s.dtype != x.dtype:
                    raise RNNShapeError(f"{name}: {what} dtype ({s.dtype}) does not match the "
                                     f"input's ({x.dtype})")
        xw = F.linear(x, self.weight_ih, self.bias_ih).unsqueeze(0)
        args = [xw] + list(states) + [self.weight_hh]
        if self.bias_hh is not None:
            args.append(self.bias_hh)
        y = _recurrence(self.mode, False).apply(*args, mode=self.mode, reverse=False)
        if lstm:
            h, c = y[0, :, :self.hidden_size], y[0, :, self.hidden_size:]
            return (h, c) if batched else (h.squeeze(0), c.squeeze(0))
        h = y[0]
        return h if batched else h.squeeze(0)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: Unknown nonlinearity: {nonlinearity}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._step(input, None if hx is None else [hx])


class LSTMCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"LSTMCell: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        return self._step(input, None if hx is None else list(hx))


class GRUCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        return self._step(input, None if hx is None else [hx])
