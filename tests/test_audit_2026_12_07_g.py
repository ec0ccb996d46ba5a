"""Audit of 2026-12-07 (g): distributed.checkpoint, quantized state dicts, sparse embeddings
with optimizers, devices. Each test fails without the fix it comes with."""
import os

import numpy as np
import pytest

import minidl
import minidl.distributed.checkpoint as dcp


# ---- distributed.checkpoint ------------------------------------------------------------------
def test_dcp_refuses_sparse_tensors_naming_the_key_before_changing_anything(tmp_path):
    with pytest.raises(TypeError, match=r"save: 's' is a sparse COO tensor"):
        dcp.save({"a": minidl.ones(2), "s": minidl.ones(2, 2).to_sparse()},
                 checkpoint_id=tmp_path / "sp")
    assert not os.path.exists(tmp_path / "sp" / ".metadata")
    dcp.save({"a": minidl.ones(2), "s": minidl.ones(2, 2)}, checkpoint_id=str(tmp_path / "d"))
    a = minidl.zeros(2)
    with pytest.raises(TypeError, match=r"load: 's' is a sparse COO tensor"):
        dcp.load({"a": a, "s": minidl.zeros(2, 2).to_sparse()}, checkpoint_id=tmp_path / "d")
    np.testing.assert_array_equal(a.numpy(), [0, 0])  # nothing loaded by halves


def test_dcp_round_trips_quantized_tensors_and_a_quantized_models_state_dict(tmp_path):
    import minidl.nn as nn
    from minidl.ao import quantization as tq

    x = minidl.tensor(np.linspace(-1, 1, 6).reshape(2, 3).astype(np.float32))
    q = minidl.quantize_per_tensor(x, 0.01, 3, minidl.quint8)
    qc = minidl.quantize_per_channel(x, minidl.tensor([0.01, 0.02]), minidl.tensor([0, 1]), 0,
                                     minidl.qint8)
    dcp.save({"q": q, "qc": qc, "w": x}, checkpoint_id=tmp_path / "q")
    sd = {"q": minidl.quantize_per_tensor(x * 0, 0.02, 1, minidl.quint8),
          "qc": minidl.quantize_per_tensor(x * 0, 0.02, 1, minidl.qint8), "w": minidl.zeros(2, 3)}
    dcp.load(sd, checkpoint_id=tmp_path / "q")
    assert (sd["q"].q_scale(), sd["q"].q_zero_point()) == (0.01, 3)
    np.testing.assert_array_equal(sd["q"].int_repr().numpy(), q.int_repr().numpy())
    assert sd["qc"].q_per_channel_axis() == 0
    np.testing.assert_array_equal(sd["qc"].int_repr().numpy(), qc.int_repr().numpy())
    np.testing.assert_array_equal(sd["w"].numpy(), x.numpy())

    m = tq.quantize_dynamic(nn.Sequential(nn.Linear(6, 5)), {nn.Linear})
    other = tq.quantize_dynamic(nn.Sequential(nn.Linear(6, 5)), {nn.Linear})
    dcp.save({"model": m.state_dict()}, checkpoint_id=tmp_path / "m")
    state = {"model": other.state_dict()}
    dcp.load(state, checkpoint_id=tmp_path / "m")
    other.load_state_dict(state["model"])
    inp = minidl.randn(3, 6)
    np.testing.assert_array_equal(other(inp).numpy(), m(inp).numpy())


def test_a_quantized_tensors_device_is_a_device_name():
    q = minidl.quantize_per_tensor(minidl.ones(2), 0.1, 0, minidl.quint8)
    assert q.device.type == "cpu" and q.device.index is None
    assert repr(q.device) == "device(type='cpu')" and q.device == "cpu"
