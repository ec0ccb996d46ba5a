"""minidl.onnx.export given what torch's refuses or handles with care: in-place ops recorded
(the caller's input, the buffers and the gradients left as they were), in-place changes it
cannot record refused, and torch's arguments and file objects checked before any work. Only
the onnx package is needed (onnxruntime where an exported graph is run), unlike the other
onnx files, which need both. Found by an audit against torch 2.13: each test failed before
its fix."""
import pytest

import minidl


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
