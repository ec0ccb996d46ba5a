"""Audit of 2026-12-07 (g): distributed.checkpoint, quantized state dicts, sparse embeddings
with optimizers, devices. Each test fails without the fix it comes with."""
import os

import numpy as np
import pytest

import minidl
import minidl.distributed.checkpoint as dcp
from test_distributed import REPO, needs_mpi, run_mpi


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


# ---- sparse gradients and optimizers ---------------------------------------------------------
def _dense_and_sparse(seed=0):
    nn = minidl.nn
    minidl.manual_seed(seed)
    lin, emb = nn.Linear(3, 3), nn.Embedding(10, 3, sparse=True)
    (lin(emb(minidl.tensor([1, 2, 1]))) ** 2).sum().backward()
    return lin, emb


@pytest.mark.parametrize("make,message", [
    (lambda p: minidl.optim.SGD(p, lr=0.1, weight_decay=0.1), r"add\(sparse, dense\)"),
    (lambda p: minidl.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
     r"add\(sparse, dense\)"),
    (lambda p: minidl.optim.Adam(p, lr=0.1), "Adam does not support sparse gradients"),
    (lambda p: minidl.optim.Adagrad(p, lr=0.1, weight_decay=0.1),
     "weight_decay option is not compatible with sparse gradients"),
])
def test_an_optimizer_refusing_a_sparse_gradient_moves_no_parameter_first(make, message):
    lin, emb = _dense_and_sparse()
    before = [p.detach().numpy().copy() for p in (*lin.parameters(), emb.weight)]
    opt = make([*lin.parameters(), emb.weight])  # the dense ones come first
    with pytest.raises(RuntimeError, match=message):
        opt.step()
    for p, b in zip((*lin.parameters(), emb.weight), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    assert all(not s or s.get("step", 0) == 0 for s in opt.state.values())


def test_sparse_adam_refusing_a_dense_gradient_moves_no_parameter_first():
    lin, emb = _dense_and_sparse()
    before = emb.weight.detach().numpy().copy()
    opt = minidl.optim.SparseAdam([emb.weight, *lin.parameters()], lr=0.1)
    with pytest.raises(RuntimeError, match=r"dense gradients.*shape \(3, 3\)"):
        opt.step()
    np.testing.assert_array_equal(emb.weight.detach().numpy(), before)


def test_clip_grad_value_takes_a_sparse_gradient_as_clip_grad_norm_does():
    lin, emb = _dense_and_sparse()
    dense_before = emb.weight.grad.to_dense().numpy().copy()
    lin_before = lin.weight.grad.numpy().copy()
    minidl.nn.utils.clip_grad_value_([*lin.parameters(), emb.weight], 0.1)
    assert emb.weight.grad.is_sparse
    np.testing.assert_array_equal(emb.weight.grad.to_dense().numpy(),
                                  np.clip(dense_before, -0.1, 0.1))
    np.testing.assert_array_equal(lin.weight.grad.numpy(), np.clip(lin_before, -0.1, 0.1))


# ---- Tensor.device and device idioms ----------------------------------------------------------
class _Holder(minidl.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = minidl.nn.Linear(2, 2)
        self.device = self.lin.weight.device  # a common habit in torch scripts


def test_a_copied_or_unpickled_tensor_device_keeps_type_and_index():
    import copy
    import pickle

    d = minidl.ones(2).device
    for again in (copy.copy(d), copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert again == "cpu" and again.type == "cpu" and again.index is None
        assert repr(again) == "device(type='cpu')"
    holder = _Holder()
    for again in (copy.deepcopy(holder), pickle.loads(pickle.dumps(holder))):
        assert again.device.type == "cpu"
        assert minidl.zeros(1, device=again.device).device == "cpu"


def test_with_device_block_sets_the_factories_device_and_restores_it():
    assert minidl.get_default_device() == "cpu"
    outer = minidl.device("cpu")
    with outer as entered:
        assert entered is outer
        with minidl.device(minidl.ones(1).device):
            assert minidl.zeros(2).device == "cpu"
        assert minidl.get_default_device() == "cpu"
    with pytest.raises(KeyError):
        with minidl.device("cpu"):
            raise KeyError("inside")
    assert minidl.get_default_device() == "cpu"


@pytest.mark.parametrize("fmt", ["minidl", "torch"])
def test_devices_in_a_checkpoint_load_back_as_devices(tmp_path, fmt):
    path = tmp_path / "ckpt.pt"
    state = {"device": minidl.ones(1).device, "plain": minidl.device("cpu"),
             "gpu": minidl.device("cuda", 1), "w": minidl.ones(2)}
    minidl.save(state, path, format=fmt)
    back = minidl.load(path)
    for key in ("device", "plain", "gpu"):
        assert back[key] == state[key] and back[key].type == state[key].type
        assert back[key].index == (1 if key == "gpu" else None)
    assert minidl.zeros(1, device=back["device"]).device == "cpu"
    if fmt == "minidl":
        assert isinstance(back["device"], str)  # Tensor.device's name, as saved
    assert repr(back["gpu"]) == "device(type='cuda', index=1)"


def test_torch_devices_in_a_torch_file_load_and_minidl_writes_torchs(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"d": torch.device("cpu"), "e": torch.device("cuda", 1)}, tmp_path / "t.pt")
    back = minidl.load(tmp_path / "t.pt")
    assert back["d"] == minidl.device("cpu") and back["d"].type == "cpu"
    assert (back["e"].type, back["e"].index) == ("cuda", 1)
    minidl.save({"d": minidl.ones(1).device, "e": minidl.device("cuda:1")}, tmp_path / "m.pt",
                format="torch")
    theirs = torch.load(tmp_path / "m.pt")  # weights_only=True allows torch.device
    assert theirs == {"d": torch.device("cpu"), "e": torch.device("cuda", 1)}


# ---- distributed: objects point to point (one launch of 2 ranks) -------------------------------
@needs_mpi
def test_recv_object_list_of_another_length_names_both_and_stays_in_step(tmp_path):
    import json

    rc, so, se, _ = run_mpi([REPO / "tests" / "_audit_g_worker.py", tmp_path], n=2,
                            timeout=120)
    assert rc == 0, f"exit {rc}\n{so}\n{se}"
    got = json.loads((tmp_path / "rank1.json").read_text())
    assert got[0] == ["ValueError", "recv_object_list: rank 0 sent 3 objects, but object_list "
                      "holds 2; make it as long as the sender's list", ["untouched"] * 2]
    assert got[1] == ["ok", 0, ["a", "b"]]  # the next message is read whole
    assert got[2][0] == "ValueError" and "sent 1 objects" in got[2][1]
    assert got[3] == ["ok", 0, [None, "c"]]


# ---- quantized tensors ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_quantizing_takes_float32_only_as_torch(dtype):
    x = minidl.ones(2, 2).to(getattr(minidl, dtype))
    with pytest.raises(RuntimeError, match=f"float32.*got dtype {dtype}"):
        minidl.quantize_per_tensor(x, 0.1, 0, minidl.quint8)
    with pytest.raises(RuntimeError, match=f"float32.*got dtype {dtype}"):
        minidl.quantize_per_channel(x, minidl.tensor([0.1, 0.1]), minidl.tensor([0, 0]), 0,
                                    minidl.qint8)


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning")
def test_quantizing_refuses_the_dtypes_torch_refuses():
    torch = pytest.importorskip("torch")
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        outcomes = []
        for ns in (torch, minidl):
            try:
                ns.quantize_per_tensor(ns.ones(2).to(getattr(ns, dtype)), 0.1, 0, ns.quint8)
                outcomes.append("ok")
            except RuntimeError:
                outcomes.append("refused")
        assert outcomes[0] == outcomes[1], dtype


def test_dcp_lists_of_plain_values_load_whole_as_torchs(tmp_path):
    saved = {"hist": [1, 2, 3], "names": ["x", "y"], "w": [minidl.ones(2), minidl.ones(1)],
             "m": [{"a": minidl.ones(1)}], "mix": [1, minidl.ones(1)], "e": []}
    dcp.save(saved, checkpoint_id=tmp_path)
    target = {"hist": [], "names": ["q"], "w": [minidl.zeros(2), minidl.zeros(1)],
              "m": [{"a": minidl.zeros(1)}], "mix": [0, minidl.zeros(1)], "e": [5]}
    w0 = target["w"][0]
    dcp.load(target, checkpoint_id=tmp_path)
    assert target["hist"] == [1, 2, 3] and target["names"] == ["x", "y"] and target["e"] == []
    assert target["w"][0] is w0 and w0.tolist() == [1.0, 1.0]  # tensors filled in place
    assert target["m"][0]["a"].tolist() == [1.0] and target["mix"][0] == 1


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning")
def test_quantized_item_and_stride_as_torchs():
    torch = pytest.importorskip("torch")
    x = np.linspace(-1, 1, 6).reshape(2, 3).astype(np.float32)
    ours = minidl.quantize_per_tensor(minidl.tensor(x), 0.01, 3, minidl.quint8)
    theirs = torch.quantize_per_tensor(torch.from_numpy(x), 0.01, 3, torch.quint8)
    for f in (lambda q: q.stride(), lambda q: q.t().stride(), lambda q: q[:, 1].stride(),
              lambda q: q.stride(-1), lambda q: q[0, 1].item(), lambda q: q[1, 2].item()):
        assert f(ours) == f(theirs)
    for q in (ours, theirs):
        with pytest.raises(RuntimeError, match="a Tensor with 6 elements cannot be converted"):
            q.item()
