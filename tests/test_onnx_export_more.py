"""minidl.onnx.export, second round: attention masks, comparisons and argmax, recurrent layers
and more activations; each graph runs in ONNX Runtime and gives minidl's eval outputs."""
import io

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

onnx = pytest.importorskip("onnx", reason="minidl.onnx.export needs the onnx package")
ort = pytest.importorskip("onnxruntime", reason="running the exported graphs needs onnxruntime")
import minidl.onnx  # noqa: E402


def _export_and_compare(model, examples, names, dynamic_axes=None, rtol=1e-4, atol=1e-5):
    """Exports ``model`` on ``examples[0]`` and checks ONNX Runtime's outputs against minidl's
    eval outputs on every example; returns the set of the graph's op types."""
    buf = io.BytesIO()
    minidl.onnx.export(model, tuple(examples[0]), buf, input_names=names,
                       dynamic_axes=dynamic_axes)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    model.eval()
    for args in examples:
        with minidl.no_grad():
            want = model(*args)
        want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
        got = sess.run(None, {n: a.numpy() for n, a in zip(names, args)})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return {n.op_type for n in proto.graph.node}


_RNG = np.random.default_rng(0)


def _padding(n, length):
    """A (n, length) bool key_padding_mask, True on each row's padded tail (at least one
    valid step)."""
    lens = _RNG.integers(1, length + 1, n)
    return minidl.tensor(np.arange(length)[None] >= lens[:, None])


# ---- 1. attention masks ---------------------------------------------------------------------
class PaddedClassifier(nn.Module):
    def __init__(self, norm_first=False):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, ids, pad):
        return self.head(self.encoder(self.emb(ids), src_key_padding_mask=pad).mean(dim=1))


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_classifier_with_padding_mask_input(norm_first):
    minidl.manual_seed(0)

    def example(n, length):
        return minidl.tensor(_RNG.integers(0, 50, (n, length))), _padding(n, length)

    dyn = {"ids": {0: "batch", 1: "seq"}, "pad": {0: "batch", 1: "seq"}}
    ops = _export_and_compare(PaddedClassifier(norm_first), [example(2, 5), example(3, 7),
                                                             example(1, 3)], ["ids", "pad"], dyn)
    assert "Where" in ops  # the bool mask becomes 0/-inf in the graph, from the input


class SequenceFirstEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, activation="gelu"),
                                         2, enable_nested_tensor=False)

    def forward(self, x, mask, pad):
        return self.enc(x, mask=mask, src_key_padding_mask=pad)


def test_sequence_first_encoder_with_float_mask_and_padding_inputs():
    # (L, N, E) layers take the general path: the packed self-attention op with the mask
    minidl.manual_seed(0)

    def example(n, length):
        mask = minidl.tensor(_RNG.standard_normal((length, length)).astype(np.float32))
        return minidl.randn(length, n, 16), mask, _padding(n, length)

    dyn = {"x": {0: "l", 1: "n"}, "m": {0: "l", 1: "l"}, "pad": {0: "n", 1: "l"}}
    _export_and_compare(SequenceFirstEncoder(), [example(2, 5), example(3, 3)],
                        ["x", "m", "pad"], dyn)


class Decoder(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        layer = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.1, batch_first=batch_first)
        self.dec = nn.TransformerDecoder(layer, 2)

    def forward(self, tgt, memory, tgt_mask, memory_pad):
        return self.dec(tgt, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_pad,
                        tgt_is_causal=True)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_decoder_causal_and_memory_padding(batch_first):
    minidl.manual_seed(0)
    b, s = (0, 1) if batch_first else (1, 0)

    def example(n, length, source):
        def seq(k):
            return minidl.randn(n, k, 16) if batch_first else minidl.randn(k, n, 16)
        return (seq(length), seq(source),
                nn.Transformer.generate_square_subsequent_mask(length), _padding(n, source))

    dyn = {"tgt": {b: "n", s: "l"}, "mem": {b: "n", s: "s"}, "tm": {0: "l", 1: "l"},
           "mp": {0: "n", 1: "s"}}
    ops = _export_and_compare(Decoder(batch_first), [example(2, 4, 5), example(3, 6, 2)],
                              ["tgt", "mem", "tm", "mp"], dyn)
    assert "Trilu" in ops  # the causal mask, made at the graph's length


class SelfAttention(nn.Module):
    def __init__(self, batch_first, need_weights):
        super().__init__()
        self.need_weights = need_weights
        self.mha = nn.MultiheadAttention(16, 4, batch_first=batch_first)

    def forward(self, x, attn_mask, pad):
        out, w = self.mha(x, x, x, attn_mask=attn_mask, key_padding_mask=pad,
                          need_weights=self.need_weights)
        return out if w is None else (out, w)


@pytest.mark.parametrize("batch_first,need_weights", [(True, False), (False, False),
                                                      (False, True)])
def test_multihead_attention_with_attn_mask_and_padding(batch_first, need_weights):
    minidl.manual_seed(0)
    b, s = (0, 1) if batch_first else (1, 0)

    def example(n, length):
        x = minidl.randn(n, length, 16) if batch_first else minidl.randn(length, n, 16)
        return x, minidl.tensor(_RNG.random((length, length)) < 0.3), _padding(n, length)

    dyn = {"x": {b: "n", s: "l"}, "am": {0: "l", 1: "l"}, "pad": {0: "n", 1: "l"}}
    _export_and_compare(SelfAttention(batch_first, need_weights),
                        [example(2, 5), example(3, 7)], ["x", "am", "pad"], dyn)


def test_scaled_dot_product_attention_masks_and_causal():
    class Attend(nn.Module):
        def forward(self, q, k, v, m):
            return (F.scaled_dot_product_attention(q, k, v, attn_mask=m)
                    + F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def example(n, length, source):
        m = _RNG.random((length, source)) < 0.5
        m[0] = False  # a query with every key masked: zeros, not NaN
        return (minidl.randn(n, 2, length, 8), minidl.randn(n, 2, source, 8),
                minidl.randn(n, 2, source, 8), minidl.tensor(m))

    dyn = {"q": {0: "n", 2: "l"}, "k": {0: "n", 2: "s"}, "v": {0: "n", 2: "s"},
           "m": {0: "l", 1: "s"}}
    _export_and_compare(Attend(), [example(2, 3, 5), example(3, 6, 4)], ["q", "k", "v", "m"],
                        dyn)


def test_nested_tensor_padding_path_is_computed_in_the_graph():
    # the nested-tensor path zeroes padded outputs only for right-padded masks: the graph
    # computes that test from the mask instead of branching on it (more cases in
    # test_onnx_export_third.py)
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)

        def forward(self, x, pad):
            return self.encoder(x, src_key_padding_mask=pad)

    minidl.manual_seed(0)
    pad = minidl.tensor(np.arange(5)[None] >= np.array([[3], [5]]))
    left = minidl.tensor(np.arange(5)[None] < np.array([[2], [0]]))  # not right-padded
    _export_and_compare(Nested(), [(minidl.randn(2, 5, 16), pad), (minidl.randn(2, 5, 16), left)],
                        ["x", "pad"], {"x": {0: "n", 1: "l"}, "pad": {0: "n", 1: "l"}})


# ---- 2. comparisons, logical ops and argmax -------------------------------------------------
class MaskFromIds(nn.Module):
    """Builds its padding mask from the ids inside forward (``ids == pad_id``)."""

    def __init__(self, pad_id=0):
        super().__init__()
        self.pad_id = pad_id
        self.emb = nn.Embedding(50, 16, padding_idx=pad_id)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, ids):
        pad = ids == self.pad_id
        h = self.encoder(self.emb(ids), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        logits = self.head((h * keep).sum(dim=1) / keep.sum(dim=1))
        return logits, logits.argmax(dim=-1)


def test_padding_mask_built_from_ids_inside_forward():
    minidl.manual_seed(0)

    def example(n, length):
        ids = _RNG.integers(1, 50, (n, length))
        lens = _RNG.integers(1, length + 1, n)
        ids[np.arange(length)[None] >= lens[:, None]] = 0
        return (minidl.tensor(ids),)

    ops = _export_and_compare(MaskFromIds(), [example(2, 5), example(3, 7), example(1, 2)],
                              ["ids"], {"ids": {0: "batch", 1: "seq"}})
    assert {"Equal", "Not", "ArgMax"} <= ops


class Comparisons(nn.Module):
    def forward(self, x, y):
        a = minidl.where(x > 0, x, x * 0.1) + minidl.where(x <= y, y, x)
        m = ((x >= 0.5) | (y < -0.5)) & ~(x != y)
        m2 = minidl.logical_and(x > 0, minidl.logical_not(y > 0)) ^ (x == y)
        m3 = minidl.logical_or(x, y > 1)  # a float operand: nonzero is True
        z = minidl.where(y > 0.8, x / 0.0, x)  # inf and nan where y > 0.8
        m4 = z.isnan() | minidl.isinf(z) | ~minidl.isfinite(z) | minidl.logical_not(x)
        return (a + m.float() + m2.float() + m3.float() + m4.float(), x.argmax(), x.argmin(dim=0, keepdim=True),
                x.argmax(keepdim=True), x + x.max(dim=1, keepdim=True).indices.float(),
                x.min(dim=0).indices)


def test_comparisons_logical_ops_and_argmax():
    def example(n):
        x = minidl.randn(n, 4)
        x.data[0, 1] = 0.0  # a zero for logical_or's float operand
        return x, minidl.tensor(np.where(_RNG.random((n, 4)) < 0.3, x.numpy(),
                                         _RNG.standard_normal((n, 4)).astype(np.float32)))

    minidl.manual_seed(0)
    ops = _export_and_compare(Comparisons(), [example(3), example(5)], ["x", "y"],
                              {"x": {0: "n"}, "y": {0: "n"}})
    assert {"Greater", "LessOrEqual", "GreaterOrEqual", "Less", "Equal", "Not", "And", "Or",
            "Xor", "Where", "ArgMax", "ArgMin", "IsNaN", "IsInf"} <= ops


def test_comparisons_are_recorded_only_for_a_hook_that_asks():
    from minidl import autograd

    class Hook:
        def __init__(self, asks):
            self.traces_untracked_ops, self.seen = asks, []

        def forward(self, fn, tensors, kwargs):
            self.seen.append(type(fn).__name__)
            return fn.forward(*[t.data for t in tensors], **kwargs)

    x = minidl.randn(3, 4)
    for asks in (False, True):
        hook, prev = Hook(asks), autograd._profiler_hook
        autograd._profiler_hook = hook
        try:
            m, i = (x > 0) & (x < 1), x.argmax(dim=1)
        finally:
            autograd._profiler_hook = prev
        assert hook.seen == (["Compare", "Compare", "Compare", "ArgMaxMin"] if asks else [])
        np.testing.assert_array_equal(m.numpy(), (x.numpy() > 0) & (x.numpy() < 1))
        np.testing.assert_array_equal(i.numpy(), x.numpy().argmax(1))


# ---- 3. recurrent layers --------------------------------------------------------------------
class Recurrent(nn.Module):
    def __init__(self, kind, batch_first, layers, bidirectional, bias=True):
        super().__init__()
        self.kind = kind
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.rnn = cls(5, 6, num_layers=layers, batch_first=batch_first,
                       bidirectional=bidirectional, bias=bias)

    def forward(self, x):
        out, h = self.rnn(x)
        return (out,) + (tuple(h) if self.kind == "lstm" else (h,))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch_first,layers,bidirectional,bias", [
    (False, 1, False, True), (True, 2, True, True), (False, 2, True, False)])
def test_recurrent_layers_match_onnxruntime(kind, batch_first, layers, bidirectional, bias):
    minidl.manual_seed(0)
    b, s = (0, 1) if batch_first else (1, 0)

    def example(n, length):
        return (minidl.randn(n, length, 5) if batch_first else minidl.randn(length, n, 5),)

    ops = _export_and_compare(Recurrent(kind, batch_first, layers, bidirectional, bias),
                              [example(2, 4), example(3, 6), example(1, 1)], ["x"],
                              {"x": {b: "n", s: "l"}})
    assert {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[kind] in ops


class WithState(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 6, batch_first=True)
        self.cell = nn.GRUCell(6, 4)
        self.lcell = nn.LSTMCell(4, 3)
        self.rcell = nn.RNNCell(3, 2, nonlinearity="relu")

    def forward(self, x, h0, c0):
        out, (h, c) = self.lstm(x, (h0, c0))
        g = self.cell(out[:, -1], None)
        hc, cc = self.lcell(g)
        return out, h, c, hc, cc, self.rcell(hc)


def test_lstm_with_initial_state_inputs_and_cells():
    minidl.manual_seed(0)

    def example(n, length):
        return minidl.randn(n, length, 5), minidl.randn(1, n, 6), minidl.randn(1, n, 6)

    _export_and_compare(WithState(), [example(2, 4), example(3, 2)], ["x", "h0", "c0"],
                        {"x": {0: "n", 1: "l"}, "h0": {1: "n"}, "c0": {1: "n"}})


def test_packed_sequences_with_constant_lengths():
    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 4)

        def forward(self, x):
            packed = nn.utils.rnn.pack_padded_sequence(x, [3, 2], enforce_sorted=True)
            return self.gru(packed)[1]

    # lengths given as a list: constants of the graph (ONNX's sequence_lens); lengths as a
    # graph input in test_onnx_export_third.py
    minidl.manual_seed(0)
    _export_and_compare(Packed(), [(minidl.randn(3, 2, 3),), (minidl.randn(3, 2, 3),)], ["x"])


# ---- 4. more activations, interpolation ------------------------------------------------------
class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.prelu = nn.PReLU(3, init=0.2)
        self.prelu1 = nn.PReLU()
        self.acts = nn.ModuleList([
            nn.Softplus(), nn.Softplus(beta=2.0, threshold=1.0), nn.Mish(), nn.LogSigmoid(),
            nn.Hardtanh(-0.5, 1.5), nn.ReLU6(), nn.Hardshrink(0.3), nn.Softshrink(0.4),
            nn.Tanhshrink(), nn.Threshold(0.1, -2.0), nn.CELU(0.7), nn.SELU(), nn.ELU(0.5)])

    def forward(self, x):
        y = self.prelu(x) + self.prelu1(x)
        for act in self.acts:
            y = y + act(x * 3.0)
        return y + F.softplus(x) + F.logsigmoid(x * 30.0) + F.mish(x)


def test_more_activations_match_onnxruntime():
    minidl.manual_seed(0)
    model = Activations()
    model.prelu1.weight.data[...] = -0.3
    ops = _export_and_compare(model, [(minidl.randn(2, 3, 4, 5),), (minidl.randn(4, 3, 4, 5),)],
                              ["x"], {"x": {0: "n"}})
    assert {"PRelu", "Softplus", "Shrink", "Celu", "Selu", "Elu", "Clip"} <= ops


@pytest.mark.parametrize("opset", [17, 18])
def test_mish_at_both_opsets(opset):
    buf = io.BytesIO()
    x = minidl.randn(2, 6)
    minidl.onnx.export(nn.Mish(), x, buf, opset_version=opset)
    proto = onnx.load_from_string(buf.getvalue())
    assert ("Mish" in {n.op_type for n in proto.graph.node}) == (opset >= 18)
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, F.mish(x).numpy(), rtol=1e-5, atol=1e-6)


class Resize(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.bi = nn.Upsample(size=(7, 9), mode="bilinear", align_corners=False)
        self.bi_ac = nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True)

    def forward(self, x):
        return (self.up(x), self.bi(x), self.bi_ac(x),
                F.interpolate(x, scale_factor=0.5, mode="bicubic"),
                F.interpolate(x[:, :, 0], size=5, mode="linear"),
                F.interpolate(x, size=(3, 5), mode="nearest-exact"))


def test_upsample_and_interpolate_match_onnxruntime():
    minidl.manual_seed(0)
    _export_and_compare(Resize(), [(minidl.randn(2, 3, 4, 6),), (minidl.randn(3, 3, 4, 6),)],
                        ["x"], {"x": {0: "n"}})


def test_integer_bitwise_ops_from_opset_18():
    class Bits(nn.Module):
        def forward(self, ids):
            return (((ids & 3) | 4) ^ 1) + ~ids

    ids = minidl.tensor(_RNG.integers(0, 50, (2, 5)))
    with pytest.raises(minidl.onnx.UnsupportedOperatorError, match="below opset 18"):
        minidl.onnx.export(Bits(), ids, io.BytesIO())
    buf = io.BytesIO()
    minidl.onnx.export(Bits(), ids, buf, opset_version=18)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert {"BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"} <= ops
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, {"ids": ids.numpy()})[0]
    np.testing.assert_array_equal(got, Bits()(ids).numpy())
