"""minidl.onnx.export, third round: indices and ordering (topk, sort, argsort, argmax with
keepdim, max(dim)), nonzero and where(cond), any/all, gather/scatter/index_select with index
tensors computed in the graph, cumsum, clamp with tensor bounds, expand/repeat with sizes read
from x.shape, and torch's export keywords. Each graph runs in ONNX Runtime at two input sizes
(dynamic axes) and gives minidl's outputs; where torch's TorchScript exporter handles the same
model, its file gives the same ONNX Runtime outputs."""
import io

import numpy as np
import pytest

import minidl
import minidl.nn as nn

onnx = pytest.importorskip("onnx", reason="minidl.onnx.export needs the onnx package")
ort = pytest.importorskip("onnxruntime", reason="running the exported graphs needs onnxruntime")
import minidl.onnx  # noqa: E402

_RNG = np.random.default_rng(0)


def _outputs(out):
    if isinstance(out, (tuple, list)):
        flat = []
        for o in out:
            flat.extend(_outputs(o))
        return flat
    return [out]


def _session(data):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _export(model, example, dynamic_axes, **kw):
    buf = io.BytesIO()
    minidl.onnx.export(model, (example,), buf, input_names=["x"], dynamic_axes=dynamic_axes,
                       **kw)
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    return buf.getvalue()


class Head(nn.Module):
    """A Linear, then ``fn(lib, y)``: the same lambda runs on minidl and on torch."""

    def __init__(self, fn, lib=minidl, linear=None):
        super().__init__()
        self.fn, self.lib = fn, lib
        self.lin = linear if linear is not None else nn.Linear(6, 6)

    def forward(self, x):
        return self.fn(self.lib, self.lin(x))


_DYN = {"x": {0: "batch", 1: "seq"}}
_SIZES = [(2, 5), (3, 7), (1, 4)]


def _examples():
    return [minidl.tensor(_RNG.standard_normal((n, s, 6)).astype(np.float32))
            for n, s in _SIZES]


def _check(fn, torch_too=True, rtol=1e-5, atol=1e-6):
    """Exports Head(fn) on the first example, checks ONNX Runtime's outputs against minidl's
    on every example (shapes and values), and, where asked, torch's export of the same model
    against them; returns the graph's op types."""
    minidl.manual_seed(0)
    model = Head(fn).eval()
    examples = _examples()
    data = _export(model, examples[0], _DYN)
    sess = _session(data)
    got_all = []
    for x in examples:
        with minidl.no_grad():
            want = [w.numpy() for w in _outputs(model(x))]
        got = sess.run(None, {"x": x.numpy()})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
        got_all.append(got)
    if torch_too:
        torch = pytest.importorskip("torch")
        lin = torch.nn.Linear(6, 6)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(model.lin.weight.numpy()))
            lin.bias.copy_(torch.from_numpy(model.lin.bias.numpy()))

        class TorchHead(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = lin

            def forward(self, x):
                return fn(torch, self.lin(x))

        buf = io.BytesIO()
        torch.onnx.export(TorchHead().eval(), (torch.from_numpy(examples[0].numpy()),), buf,
                          input_names=["x"], dynamic_axes=_DYN, opset_version=17, dynamo=False)
        tsess = _session(buf.getvalue())
        for x, got in zip(examples, got_all):
            theirs = tsess.run(None, {"x": x.numpy()})
            assert len(theirs) == len(got)
            for g, t in zip(got, theirs):
                assert g.shape == t.shape
                np.testing.assert_allclose(g, t.astype(g.dtype), rtol=rtol, atol=atol)
    return {n.op_type for n in onnx.load_from_string(data).graph.node}


# ---- indices and ordering --------------------------------------------------------------------
def test_topk_values_and_indices():
    ops = _check(lambda lib, y: (y.topk(3, dim=-1), y.topk(2, dim=1, largest=False)))
    assert "TopK" in ops and "GatherElements" in ops


def test_argmax_argmin_keepdim():
    _check(lambda lib, y: (y.argmax(dim=1, keepdim=True), y.argmin(dim=-1, keepdim=True),
                           y.argmax(dim=2)))


def test_max_min_over_a_dim_with_indices():
    _check(lambda lib, y: (tuple(y.max(dim=1)), tuple(y.min(dim=2, keepdim=True))))


@pytest.mark.parametrize("descending", [False, True])
def test_sort_along_a_dynamic_axis(descending):
    ops = _check(lambda lib, y: tuple(lib.sort(y, dim=1, descending=descending)))
    assert "TopK" in ops and "Shape" in ops  # k is the dim's size, read from the graph


def test_argsort_and_gather_with_its_indices():
    _check(lambda lib, y: (lib.argsort(y, dim=-1, descending=True),
                           lib.gather(y, 1, lib.argsort(y, dim=1))))


# ---- nonzero, where(cond), any/all, masked_fill ----------------------------------------------
def test_nonzero_and_where_with_one_argument():
    ops = _check(lambda lib, y: (lib.nonzero(y > 0.2), lib.where(y > 0.5),
                                 lib.nonzero(y < -0.5, as_tuple=True)))
    assert "NonZero" in ops


def test_any_and_all():
    _check(lambda lib, y: ((y > 0).any(dim=1), (y > -1).all(dim=2, keepdim=True), (y > 0).any(),
                           (y > -2).all()))


def test_any_all_on_a_float_tensor():
    # nonzero counts as True; no torch file here (torch's export casts the same way)
    _check(lambda lib, y: (y.relu().any(dim=2), y.relu().all(dim=1)), torch_too=False)


def test_masked_fill_with_masks_from_comparisons():
    _check(lambda lib, y: (y.masked_fill(y > 0.1, -1.0),
                           y.masked_fill((y > 0) & (y < 0.5), 2.0),
                           y.masked_fill(y.argmax(dim=2, keepdim=True) == 3, 0.0)))


# ---- gather / scatter / index_select with traced indices -------------------------------------
def test_gather_with_topk_indices():
    _check(lambda lib, y: lib.gather(y * 2, 2, y.topk(2, dim=2).indices))


def test_index_select_with_a_traced_index():
    ops = _check(lambda lib, y: lib.index_select(y, 2, y[0, 0].argsort()))
    assert "Gather" in ops


def test_scatter_and_scatter_add_with_traced_indices():
    ops = _check(lambda lib, y: (y.scatter(2, y.argmax(dim=2, keepdim=True), 0.0),
                                 lib.scatter_add(y, 2, y.argsort(dim=2), y * 2)))
    assert "ScatterElements" in ops


def test_scatter_from_a_source_larger_than_the_index():
    # only src's corner of index's shape is written (Slice to Shape(index)); torch's file
    # passes the whole src to ScatterElements, which ONNX Runtime refuses, so no torch here
    ops = _check(lambda lib, y: y.scatter(2, y.argsort(dim=2)[:, :, :3], y * 10),
                 torch_too=False)
    assert "Slice" in ops


def test_cumsum():
    ops = _check(lambda lib, y: (y.cumsum(dim=1), lib.cumsum(y, 2)))
    assert "CumSum" in ops


def test_clamp_with_tensor_bounds():
    # ONNX's Clip takes scalar bounds only: Max and Min, the upper bound winning where lo > hi
    ops = _check(lambda lib, y: (lib.clamp(y, min=y[:, :, :1], max=y[:, :, 1:2] + 0.5),
                                 lib.clamp(y, max=y.mean(dim=2, keepdim=True)),
                                 lib.clamp(y, min=-0.5, max=0.5)))
    assert {"Max", "Min", "Clip"} <= ops


# ---- sizes from x.shape ------------------------------------------------------------------------
def test_expand_and_repeat_with_sizes_from_the_shape():
    ops = _check(lambda lib, y: (y[:, :1].expand(y.shape[0], y.shape[1], 6),
                                 y[:1].repeat(y.shape[0], 1, 1),
                                 y[:, :1].repeat(1, y.shape[1], 2)))
    assert "Shape" in ops


@pytest.mark.parametrize("fn, op", [
    (lambda lib, y: y[:, :1].expand(y.shape[0], 2 * y.shape[1], 6), "Expand"),
    (lambda lib, y: y.topk(y.shape[1] // 2, dim=1).values, "TopkIndices"),
    (lambda lib, y: y * y.shape[1], "Mul"),
    (lambda lib, y: y + lib.arange(y.shape[1]).reshape(1, -1, 1), "Reshape"),
])
def test_size_arithmetic_the_graph_cannot_follow_is_refused_by_name(fn, op):
    minidl.manual_seed(0)
    with pytest.raises(minidl.onnx.OnnxExporterError, match=op):
        _export(Head(fn), _examples()[0], _DYN)


def test_indices_ops_left_as_they_were_outside_an_export():
    # the recorded forms run only while the exporter traces: outside it, plain tensors
    x = minidl.tensor(_RNG.standard_normal((3, 5)).astype(np.float32))
    v, i = x.topk(2, dim=1)
    assert i.grad_fn is None and i.data.dtype == np.int64
    assert minidl.nonzero(x > 0).grad_fn is None and (x > 0).any().grad_fn is None
    np.testing.assert_array_equal(minidl.argsort(x, dim=1).numpy(),
                                  np.argsort(x.numpy(), axis=1, kind="stable"))


# ---- torch's keyword arguments ------------------------------------------------------------------
@pytest.mark.parametrize("fold", [False, True])
def test_keep_initializers_as_inputs(fold):
    # every initializer is listed among the inputs too, as torch does (with folding, the
    # folded transposed weight is the one listed, as torch's onnx::MatMul_ constant)
    minidl.manual_seed(0)
    model = Head(lambda lib, y: y.relu()).eval()
    x = _examples()[0]
    data = _export(model, x, _DYN, keep_initializers_as_inputs=True, do_constant_folding=fold)
    proto = onnx.load_from_string(data)
    names = [i.name for i in proto.graph.input]
    inits = [i.name for i in proto.graph.initializer]
    assert names[0] == "x" and sorted(names[1:]) == sorted(inits) and len(inits) == 2
    if not fold:
        assert names == ["x", "lin.weight", "lin.bias"]
    sess = _session(data)
    with minidl.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], want, rtol=1e-5,
                               atol=1e-6)
    zero = np.zeros(6, np.float32)  # an input that is also an initializer can be overridden
    got = sess.run(None, {"x": x.numpy(), "lin.bias": zero})[0]
    np.testing.assert_allclose(got, np.maximum(x.numpy() @ model.lin.weight.numpy().T, 0),
                               rtol=1e-5, atol=1e-6)
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(6, 6)

    class TorchHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x).relu()

    buf = io.BytesIO()
    torch.onnx.export(TorchHead(), (torch.zeros(2, 5, 6),), buf, input_names=["x"],
                      dynamic_axes=_DYN, keep_initializers_as_inputs=True,
                      do_constant_folding=fold, dynamo=False)
    theirs = onnx.load_from_string(buf.getvalue())
    assert len(theirs.graph.input) == len(names)
    if not fold:
        assert [i.name for i in theirs.graph.input] == names


def test_torch_keywords_at_their_defaults_are_accepted_and_others_refused_by_name():
    minidl.manual_seed(0)
    model = Head(lambda lib, y: y.relu())
    x = _examples()[0]
    buf = io.BytesIO()
    minidl.onnx.export(model, (x,), buf, operator_export_type="ONNX", custom_opsets=None,
                       export_modules_as_functions=False, autograd_inlining=True, report=False,
                       verify=False, profile=False, dump_exported_program=False,
                       dynamic_shapes=None, custom_translation_table=None, artifacts_dir=".",
                       export_params=True, verbose=False, do_constant_folding=False,
                       keep_initializers_as_inputs=False)
    assert buf.getvalue()
    for key, value in [("operator_export_type", "ONNX_ATEN_FALLBACK"),
                       ("custom_opsets", {"my": 1}), ("export_modules_as_functions", True),
                       ("verify", True), ("report", True), ("dynamic_shapes", {"x": {0: "b"}}),
                       ("custom_translation_table", {len: len}), ("profile", True),
                       ("autograd_inlining", False), ("dump_exported_program", True)]:
        with pytest.raises((NotImplementedError, TypeError, ValueError), match=key):
            minidl.onnx.export(model, (x,), io.BytesIO(), **{key: value})
    with pytest.raises(TypeError, match="not_a_torch_argument"):
        minidl.onnx.export(model, (x,), io.BytesIO(), not_a_torch_argument=1)


def test_export_params_false_with_keep_initializers_as_inputs():
    minidl.manual_seed(0)
    model = Head(lambda lib, y: y.relu()).eval()
    x = _examples()[0]
    data = _export(model, x, _DYN, export_params=False, keep_initializers_as_inputs=True)
    proto = onnx.load_from_string(data)
    assert [i.name for i in proto.graph.input] == ["x", "lin.weight", "lin.bias"]
    assert not proto.graph.initializer
    got = _session(data).run(None, {"x": x.numpy(), "lin.weight": model.lin.weight.numpy(),
                                    "lin.bias": model.lin.bias.numpy()})[0]
    with minidl.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)


# ---- TransformerEncoder's nested-tensor path ---------------------------------------------------
class NestedEncoder(nn.Module):
    def __init__(self, mask_check=True):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True,
                                         mask_check=mask_check)

    def forward(self, x, pad):
        return self.enc(x, src_key_padding_mask=pad)


def _right_padded(n, length, lens=None):
    lens = _RNG.integers(1, length + 1, n) if lens is None else np.asarray(lens)
    return np.arange(length)[None] >= lens[:, None]


@pytest.mark.parametrize("mask_check", [True, False])
def test_transformer_encoder_nested_tensor_path_with_a_padding_mask(mask_check):
    # minidl's forward copies PyTorch's nested-tensor inference path: zeros at the padded
    # positions when every sequence is its valid steps then padding (mask_check), which the
    # graph computes from the mask (no branch on its values)
    minidl.manual_seed(0)
    model = NestedEncoder(mask_check=mask_check).eval()
    assert model.enc.use_nested_tensor

    def example(n, length, pad):
        return (minidl.tensor(_RNG.standard_normal((n, length, 8)).astype(np.float32)),
                minidl.tensor(pad))

    left = np.zeros((3, 6), bool)
    left[1, :2] = True  # padding before valid steps: no zeros (when mask_check)
    examples = [example(2, 5, _right_padded(2, 5, [5, 3])), example(3, 7, _right_padded(3, 7)),
                example(3, 6, left), example(1, 1, np.zeros((1, 1), bool))]
    buf = io.BytesIO()
    dyn = {"x": {0: "batch", 1: "seq"}, "pad": {0: "batch", 1: "seq"}}
    minidl.onnx.export(model, examples[0], buf, input_names=["x", "pad"], dynamic_axes=dyn)
    sess = _session(buf.getvalue())
    zeroed = []
    for x, pad in examples:
        with minidl.no_grad():
            want = model(x, pad).numpy()
        got = sess.run(None, {"x": x.numpy(), "pad": pad.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        zeroed.append(bool(np.all(want[pad.numpy()] == 0)))
    assert zeroed[:2] == [True, True] and zeroed[2] == (not mask_check)
    torch = pytest.importorskip("torch")

    class TorchNested(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
            self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=True,
                                                   mask_check=mask_check)

        def forward(self, x, pad):
            return self.enc(x, src_key_padding_mask=pad)

    theirs = TorchNested().eval()
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in
                            model.state_dict().items()})
    # torch's own eager forward: the same zeros, the same numbers (with mask_check=False a
    # mask with padding before valid steps is outside its contract: torch then zeroes the
    # last steps instead, minidl the padded ones; not compared)
    for x, pad in examples[:2] + examples[3:] if not mask_check else examples:
        with torch.no_grad():
            t = theirs(torch.from_numpy(x.numpy()), torch.from_numpy(pad.numpy())).numpy()
        got = sess.run(None, {"x": x.numpy(), "pad": pad.numpy()})[0]
        np.testing.assert_allclose(got, t, rtol=1e-4, atol=1e-5)


# ---- recurrent layers: proj_size, packed sequences -------------------------------------------
def _run_both(model, examples, names, dyn, rtol=1e-4, atol=1e-5):
    """Exports ``model`` on examples[0]; ONNX Runtime's outputs against minidl's on each
    example. Returns ONNX Runtime's outputs."""
    buf = io.BytesIO()
    minidl.onnx.export(model, examples[0], buf, input_names=names, dynamic_axes=dyn)
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    sess = _session(buf.getvalue())
    outs = []
    for args in examples:
        with minidl.no_grad():
            want = [w.numpy() for w in _outputs(model(*args))]
        got = sess.run(None, {n: a.numpy() for n, a in zip(names, args)})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
        outs.append(got)
    return buf.getvalue(), outs


class Projected(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.rnn = nn.LSTM(4, 6, proj_size=3, batch_first=True, **kw)

    def forward(self, x):
        y, (h, c) = self.rnn(x)
        return y, h, c


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True},
                                {"bias": False}])
def test_lstm_with_proj_size(kw):
    # ONNX's LSTM has no projection: a Scan whose body is minidl's step (torch's exporter
    # refuses LSTMs with projections)
    minidl.manual_seed(0)
    examples = [(minidl.tensor(_RNG.standard_normal((n, s, 4)).astype(np.float32)),)
                for n, s in [(3, 6), (2, 9), (1, 1)]]
    data, _ = _run_both(Projected(**kw).eval(), examples, ["x"], {"x": {0: "b", 1: "s"}})
    assert "Scan" in {n.op_type for n in onnx.load_from_string(data).graph.node}


def test_lstm_with_proj_size_and_initial_states():
    class WithStates(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 6, proj_size=2, bidirectional=True)

        def forward(self, x, h0, c0):
            return self.rnn(x, (h0, c0))[0]

    minidl.manual_seed(0)

    def example(n, s):
        return tuple(minidl.tensor(_RNG.standard_normal(shape).astype(np.float32))
                     for shape in [(s, n, 4), (2, n, 2), (2, n, 6)])

    _run_both(WithStates().eval(), [example(3, 5), example(2, 7)], ["x", "h0", "c0"],
              {"x": {0: "s", 1: "n"}, "h0": {1: "n"}, "c0": {1: "n"}})


class Packed(nn.Module):
    """pack_padded_sequence -> RNN -> pad_packed_sequence, as in a tagger."""

    def __init__(self, mode, enforce_sorted=False, **kw):
        super().__init__()
        self.mode, self.enforce_sorted = mode, enforce_sorted
        self.rnn = getattr(nn, mode)(4, 5, batch_first=True, **kw)

    def forward(self, x, lengths):
        from minidl.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        packed = pack_padded_sequence(x, lengths, batch_first=True,
                                      enforce_sorted=self.enforce_sorted)
        out, h = self.rnn(packed)
        y, out_lengths = pad_packed_sequence(out, batch_first=True)
        return y, (h[0] if self.mode == "LSTM" else h), out_lengths


def _packed_examples(sorted_lengths=False):
    def example(lengths, length):
        lengths = np.asarray(sorted(lengths, reverse=True) if sorted_lengths else lengths)
        x = _RNG.standard_normal((len(lengths), length, 4)).astype(np.float32)
        return minidl.tensor(x), minidl.tensor(lengths.astype(np.int64))
    return [example([6, 2, 4], 6), example([3, 7, 1, 5, 5], 8), example([2], 3)]


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True}])
def test_packed_sequences_through_a_recurrent_layer(mode, kw):
    # the lengths stay a graph input (ONNX's sequence_lens); the output has zeros past each
    # length and as many steps as the longest, h_n each sequence's own last step
    minidl.manual_seed(0)
    model = Packed(mode, **kw).eval()
    examples = _packed_examples()
    dyn = {"x": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}}
    data, outs = _run_both(model, examples, ["x", "lengths"], dyn)
    proto = onnx.load_from_string(data)
    rnn = [n for n in proto.graph.node if n.op_type == mode]
    assert rnn and all(n.input[4] for n in rnn)  # sequence_lens given
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[1].dim_param  # the longest length is read from the lengths, not fixed
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class TorchPacked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, mode)(4, 5, batch_first=True, **kw)

        def forward(self, x, lengths):
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, h = self.rnn(packed)
            y, out_lengths = pad_packed_sequence(out, batch_first=True)
            return y, (h[0] if mode == "LSTM" else h), out_lengths

    theirs = TorchPacked().eval()
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in
                            model.state_dict().items()})
    buf = io.BytesIO()
    torch.onnx.export(theirs, tuple(torch.from_numpy(a.numpy()) for a in examples[0]), buf,
                      input_names=["x", "lengths"], dynamic_axes=dyn, opset_version=17,
                      dynamo=False)
    tsess = _session(buf.getvalue())
    for (x, lengths), got in zip(examples, outs):
        want = tsess.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
        # torch's graph keeps the input's steps (its eager pad_packed_sequence, as minidl's
        # graph, cuts them to the longest length): the same numbers there, zeros after
        steps = int(lengths.numpy().max())
        assert not want[0][:, steps:].any()
        want[0] = want[0][:, :steps]
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w.astype(g.dtype), rtol=1e-4, atol=1e-5)


def test_packed_sequences_enforce_sorted_and_initial_state():
    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 5, batch_first=True)

        def forward(self, x, lengths, h0):
            from minidl.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            out, h = self.rnn(pack_padded_sequence(x, lengths, batch_first=True), h0)
            return pad_packed_sequence(out, batch_first=True, padding_value=-1.0)[0], h

    minidl.manual_seed(0)
    examples = [(x, n, minidl.tensor(_RNG.standard_normal((1, len(n), 5)).astype(np.float32)))
                for x, n in _packed_examples(sorted_lengths=True)]
    _run_both(WithState().eval(), examples, ["x", "lengths", "h0"],
              {"x": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}, "h0": {1: "batch"}})


def test_packed_data_used_directly_is_refused():
    # a model that reads the packed rows (whose layout depends on the lengths' values)
    class ReadsData(nn.Module):
        def forward(self, x, lengths):
            from minidl.nn.utils.rnn import pack_padded_sequence

            return pack_padded_sequence(x, lengths, batch_first=True,
                                        enforce_sorted=False).data * 2

    x, lengths = _packed_examples()[0]
    with pytest.raises(minidl.onnx.OnnxExporterError, match="Mul"):
        minidl.onnx.export(ReadsData(), (x, lengths), io.BytesIO(),
                           dynamic_axes={"x": {0: "b", 1: "s"}, "lengths": {0: "b"}})


def test_packed_sequences_outside_an_export_are_unchanged():
    from minidl.nn.utils.rnn import PackedSequence, pack_padded_sequence

    x, lengths = _packed_examples()[0]
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    assert type(packed) is PackedSequence
    assert packed.batch_sizes.numpy().tolist() == [3, 3, 2, 2, 1, 1]


# ---- training-mode export ------------------------------------------------------------------------
def _conv_bn_drop(base, lib):
    class ConvBNDrop(base):
        def __init__(self, p=0.0, track=True):
            super().__init__()
            self.conv = lib.Conv2d(3, 4, 3)
            self.bn = lib.BatchNorm2d(4, track_running_stats=track)
            self.drop = lib.Dropout(p)
            self.fc = lib.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.drop(self.bn(self.conv(x)).relu().mean(dim=(2, 3))))
    return ConvBNDrop


ConvBNDrop = _conv_bn_drop(nn.Module, nn)


def _images():
    return [minidl.tensor(_RNG.standard_normal((n, 3, 6, 6)).astype(np.float32))
            for n in (3, 5)]


@pytest.mark.parametrize("track", [True, False])
def test_training_mode_batch_norm_uses_batch_statistics(track):
    minidl.manual_seed(0)
    model = ConvBNDrop(track=track)
    model.eval()
    examples = _images()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    minidl.onnx.export(model, (examples[0],), buf, input_names=["x"],
                       dynamic_axes={"x": {0: "batch"}},
                       training=minidl.onnx.TrainingMode.TRAINING)
    # the model is left as it was: its mode, and the running statistics (which torch's
    # export updates as its traced forward runs)
    assert not model.training and not model.bn.training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    sess = _session(buf.getvalue())
    outs = []
    for x in examples:
        model.train()
        with minidl.no_grad():
            want = model(x).numpy()
        model.load_state_dict(before)
        got = sess.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        outs.append(got)
    if not track:  # torch's exporter fails on it with a dynamic batch ("batch_size and
        return  # channel_size must be non-None")
    torch = pytest.importorskip("torch")
    theirs = _conv_bn_drop(torch.nn.Module, torch.nn)(track=track)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in before.items()})
    tbuf = io.BytesIO()
    torch.onnx.export(theirs, (torch.from_numpy(examples[0].numpy()),), tbuf,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}}, dynamo=False,
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                      opset_version=17)
    tsess = _session(tbuf.getvalue())
    for x, got in zip(examples, outs):
        np.testing.assert_allclose(got, tsess.run(None, {"x": x.numpy()})[0], rtol=1e-4,
                                   atol=1e-5)


def test_eval_mode_batch_norm_without_running_statistics():
    # track_running_stats=False normalises with the batch's statistics in eval mode too
    minidl.manual_seed(0)
    model = ConvBNDrop(track=False).eval()
    examples = _images()
    buf = io.BytesIO()
    minidl.onnx.export(model, (examples[0],), buf, input_names=["x"],
                       dynamic_axes={"x": {0: "batch"}})
    sess = _session(buf.getvalue())
    for x in examples:
        with minidl.no_grad():
            np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], model(x).numpy(),
                                       rtol=1e-4, atol=1e-5)


def test_training_mode_dropout_is_onnx_dropout():
    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.25)

        def forward(self, x):
            return self.drop(x)

    minidl.manual_seed(0)
    model = Drop()
    x = minidl.tensor(np.abs(_RNG.standard_normal((64, 64))).astype(np.float32) + 0.5)
    buf = io.BytesIO()
    minidl.onnx.export(model, (x,), buf, input_names=["x"], dynamic_axes={"x": {0: "n"}},
                       training=minidl.onnx.TrainingMode.TRAINING)
    proto = onnx.load_from_string(buf.getvalue())
    assert [n.op_type for n in proto.graph.node] == ["Dropout"]
    got = _session(buf.getvalue()).run(None, {"x": x.numpy()})[0]
    kept = got != 0  # random, as minidl's: each element 0 or x / (1 - p)
    np.testing.assert_allclose(got[kept], x.numpy()[kept] / 0.75, rtol=1e-6)
    assert 0.2 < 1 - kept.mean() < 0.3
    with pytest.raises(ValueError, match="TrainingMode"):
        minidl.onnx.export(model, (x,), io.BytesIO(), training="TRAIN")


def test_preserve_mode_exports_each_module_in_its_mode():
    minidl.manual_seed(0)
    model = ConvBNDrop()
    x = _images()[0]
    for train in (True, False):
        model.train(train)
        buf = io.BytesIO()
        minidl.onnx.export(model, (x,), buf, training=minidl.onnx.TrainingMode.PRESERVE)
        ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
        assert ("BatchNormalization" in ops) != train  # batch statistics written out
        assert model.training == train


def test_packed_sequences_with_total_length():
    class Total(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 5, batch_first=True)

        def forward(self, x, lengths):
            from minidl.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            out, _ = self.rnn(pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False))
            return pad_packed_sequence(out, batch_first=True, total_length=8)[0]

    minidl.manual_seed(0)
    examples = [(minidl.tensor(_RNG.standard_normal((len(n), s, 4)).astype(np.float32)),
                 minidl.tensor(np.asarray(n, np.int64))) for n, s in [([6, 2, 4], 8),
                                                                      ([3, 7, 1, 5, 5], 9)]]
    data, outs = _run_both(Total().eval(), examples, ["x", "lengths"],
                           {"x": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}})
    assert outs[1][0].shape == (5, 8, 5)  # total_length, not the longest length (7)


def test_pad_packed_op_gradient():
    # the op pad_packed_sequence records while the exporter traces: its gradient goes back
    # to the steps inside each length
    from minidl.nn._rnn_utils import PadPacked
    from minidl.testing import gradcheck

    x = minidl.tensor(_RNG.standard_normal((5, 3, 2)), dtype=minidl.float64,
                      requires_grad=True)
    lengths = np.array([2, 4, 1])
    for total in (None, 5):
        assert gradcheck(lambda a: PadPacked.apply(a, minidl.tensor(lengths),
                                                   padding_value=-1.0, total_length=total),
                         [x])
    y = PadPacked.apply(x, minidl.tensor(lengths), padding_value=-1.0, total_length=None)
    assert y.shape == (4, 3, 2) and (y.numpy()[2:, 0] == -1).all()


def test_reductions_at_opset_18():
    # from opset 18 the reductions take their axes as an input
    minidl.manual_seed(0)
    model = Head(lambda lib, y: ((y > 0).any(dim=1), (y > -1).all(dim=(0, 2)),
                                 lib.sort(y, dim=1).values, y.max(dim=2)[1])).eval()
    examples = _examples()
    sess = _session(_export(model, examples[0], _DYN, opset_version=18))
    for x in examples:
        with minidl.no_grad():
            want = [w.numpy() for w in _outputs(model(x))]
        for g, w in zip(sess.run(None, {"x": x.numpy()}), want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
