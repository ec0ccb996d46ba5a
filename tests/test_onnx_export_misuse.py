"""minidl.onnx.export given what torch's refuses or handles with care: in-place ops recorded
(the caller's input, the buffers and the gradients left as they were), in-place changes it
cannot record refused, and torch's arguments and file objects checked before any work. Only
the onnx package is needed (onnxruntime where an exported graph is run), unlike the other
onnx files, which need both. Found by an audit against torch 2.13: each test failed before
its fix."""
import numpy as np
import pytest

import minidl


_RNG = np.random.default_rng(7)


def _ort(path, *inputs):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(str(path))
    return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), inputs)})


class _InPlace(minidl.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = minidl.nn.Linear(4, 4)
        self.act = minidl.nn.ReLU(inplace=True)
        self.register_buffer("calls", minidl.zeros(1))

    def forward(self, x):
        x.mul_(3)                                  # the caller's input must not change
        y = self.act(self.l(x) - 0.2)
        y.add_(1)
        self.calls += 1                            # a buffer updated in forward
        return {"y": minidl.nn.functional.relu(y - 1.5, inplace=True) * 2, "none": None}


def test_onnx_export_records_in_place_ops_and_leaves_state_alone(tmp_path):
    pytest.importorskip("onnx")
    m = _InPlace()
    m.l.weight.grad = minidl.ones(4, 4)
    x = minidl.tensor(_RNG.standard_normal((3, 4)).astype(np.float32))
    x0 = x.numpy().copy()
    state = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    minidl.onnx.export(m, (x,), tmp_path / "m.onnx")    # was: relu/add_ left out, silently
    assert np.array_equal(x.numpy(), x0)
    assert all(np.array_equal(v.numpy(), state[k]) for k, v in m.state_dict().items())
    assert m.training and m.l.weight.grad.numpy().sum() == 16
    (got,) = _ort(tmp_path / "m.onnx", x0)
    np.testing.assert_allclose(got, m(minidl.tensor(x0))["y"].detach().numpy(), atol=1e-5)


def test_onnx_export_refuses_in_place_changes_it_cannot_record(tmp_path):
    pytest.importorskip("onnx")

    class OnView(minidl.nn.Module):
        def forward(self, x):
            y = x * 2
            y[:, :2].relu_()
            return y
    with pytest.raises(minidl.onnx.OnnxExporterError, match="in place"):
        minidl.onnx.export(OnView(), (minidl.randn(2, 4),), tmp_path / "v.onnx")
    assert not (tmp_path / "v.onnx").exists()

    class SetsBuffer(minidl.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("n", minidl.zeros(2))

        def forward(self, x):
            self.n[0] = 5
            return x + self.n.sum()
    m = SetsBuffer()
    with pytest.raises(minidl.onnx.OnnxExporterError, match="in place"):
        minidl.onnx.export(m, (minidl.randn(2),), tmp_path / "b.onnx")
    assert m.n.tolist() == [0.0, 0.0]                        # left as it was


def test_onnx_export_arguments_and_files_as_torch(tmp_path):
    pytest.importorskip("onnx")
    onnx_ = minidl.onnx
    m = minidl.nn.Sequential(minidl.nn.Linear(4, 2), minidl.nn.Dropout(0.5))
    x = minidl.randn(3, 4)
    with open(tmp_path / "t.onnx", "w") as fh:                    # refused before any work
        with pytest.raises(TypeError, match="text-mode file"):
            onnx_.export(m, (x,), fh)
    (tmp_path / "r.onnx").write_bytes(b"")
    with open(tmp_path / "r.onnx", "rb") as fh:
        with pytest.raises(ValueError, match="not open for writing"):
            onnx_.export(m, (x,), fh)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        onnx_.export(m, (x,), tmp_path)
    onnx_.export(m, (), tmp_path / "k.onnx", kwargs={"input": x}, dynamo=False,
                 training=onnx_.TrainingMode.EVAL)
    m.train()  # a training-mode graph is exported since (tests/test_onnx_export_third.py)
    onnx_.export(m, (x,), tmp_path / "t2.onnx", training=onnx_.TrainingMode.PRESERVE)
    with pytest.raises(NotImplementedError, match="custom_opsets"):  # torch's, not supported
        onnx_.export(m, (x,), tmp_path / "p.onnx", custom_opsets={"x": 1})
    with pytest.raises(TypeError, match="no_such_option"):           # not torch's at all
        onnx_.export(m, (x,), tmp_path / "p.onnx", no_such_option=1)

    class Nothing(minidl.nn.Module):
        def forward(self, x):
            return None
    with pytest.raises(onnx_.OnnxExporterError, match="returned a NoneType"):
        onnx_.export(Nothing(), (x,), tmp_path / "n.onnx")
    assert m.training and not (tmp_path / "p.onnx").exists()
# ---- pools with return_indices=True are refused by name ---------------------------------------

@pytest.mark.parametrize("pool, shape", [
    (lambda: minidl.nn.MaxPool2d(2, return_indices=True), (1, 2, 4, 4)),
    (lambda: minidl.nn.MaxPool2d(2, return_indices=True), (2, 4, 4)),
    (lambda: minidl.nn.MaxPool1d(2, return_indices=True), (1, 2, 4)),
    (lambda: minidl.nn.AdaptiveMaxPool2d(2, return_indices=True), (1, 2, 4, 4)),
])
def test_onnx_export_refuses_pool_indices_by_name(pool, shape, tmp_path):
    """Exporting nn.MaxPool2d(return_indices=True) failed with "output 1 ... was not made by a
    recorded op" (and unbatched input with a Reshape complaint) instead of the refusal by name
    that docs/onnx.md promises."""
    pytest.importorskip("onnx")
    import minidl.onnx

    with pytest.raises(minidl.onnx.UnsupportedOperatorError,
                       match="not supported for return_indices=True"):
        minidl.onnx.export(pool(), (minidl.randn(*shape),), str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()
