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


def test_nested_tensor_padding_path_is_refused_not_baked_in():
    # the nested-tensor path zeroes padded outputs only for right-padded masks: a branch on
    # the mask's values
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)

        def forward(self, x, pad):
            return self.encoder(x, src_key_padding_mask=pad)

    pad = minidl.tensor(np.arange(5)[None] >= np.array([[3], [5]]))
    with pytest.raises(minidl.onnx.OnnxExporterError, match="outside minidl's ops|branches"):
        minidl.onnx.export(Nested(), (minidl.randn(2, 5, 16), pad), io.BytesIO())
