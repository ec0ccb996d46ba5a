"""minidl.save / minidl.load: any key round-trips, bad values are refused before anything is
written, the file mode follows the umask, and temporaries of killed writers do not pile up."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minidl
from minidl import serialization

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_any_string_key_roundtrips(tmp_path):
    # "file" and "allow_pickle" are np.savez's own keywords; "x" and "x.npy" collide in
    # np.load's lookup; "a/b" and non-ASCII names are zip members like any other
    keys = ["file", "allow_pickle", "a/b", "gewicht.ä.λ", "x", "x.npy", "", " ", "../up"]
    state = {k: np.full((2,), i, dtype=np.float32) for i, k in enumerate(keys)}
    path = tmp_path / "c.npz"
    minidl.save(state, path)
    loaded = minidl.load(path)
    assert list(loaded) == keys
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(loaded[k], np.full((2,), i, np.float32), err_msg=k)
    assert os.listdir(tmp_path) == ["c.npz"]


def test_values_keep_dtype_and_shape(tmp_path):
    state = {"f": minidl.tensor([[1.5, 2.0]]), "i": np.arange(3), "b": np.array([True, False]),
             "s": np.array(7, dtype=np.int64), "h": np.ones(2, np.float16), "u": np.uint8(3)}
    minidl.save(state, tmp_path / "c.npz")
    loaded = minidl.load(tmp_path / "c.npz")
    for k, v in state.items():
        v = v.numpy() if isinstance(v, minidl.Tensor) else np.asarray(v)
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
        np.testing.assert_array_equal(loaded[k], v)


@pytest.mark.parametrize("bad, kind", [
    ({1, 2}, "set"), (object(), "object"), (len, "builtin_function_or_method"),
    (np.array([object()], dtype=object), "Python objects"),
])
def test_bad_value_is_refused_before_the_good_file_is_touched(tmp_path, bad, kind):
    path = tmp_path / "ckpt.npz"
    minidl.save({"w": np.arange(3.0)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=rf"s.*{kind}"):
        minidl.save({"w": np.zeros(3), "s": bad}, path)
    assert path.read_bytes() == before  # the good checkpoint is still there, still readable
    np.testing.assert_array_equal(minidl.load(path)["w"], np.arange(3.0))
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_unsupported_key_is_refused_and_bfloat16_roundtrips(tmp_path):
    with pytest.raises(TypeError, match=r"key \(1, 2\).*tuple"):
        minidl.save({(1, 2): np.ones(1)}, tmp_path / "c.npz")
    assert os.listdir(tmp_path) == []
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 comes from ml_dtypes")
    h = np.array([1.5, -2.0, 3e38], ml_dtypes.bfloat16)
    minidl.save({"h": h, "t": minidl.tensor([0.25, 7.0]).bfloat16()}, tmp_path / "c.npz")
    back = minidl.load(tmp_path / "c.npz")
    assert back["h"].dtype == h.dtype and back["t"].dtype == h.dtype
    np.testing.assert_array_equal(back["h"].view(np.uint16), h.view(np.uint16))
    assert back["t"].float().tolist() == [0.25, 7.0]
    # the flat writer of the converter keeps refusing it: its files hold no structure to say so
    with pytest.raises(TypeError, match="'h'.*bfloat16"):
        serialization.save_npz({"h": h}, tmp_path / "d.npz")


def test_a_training_checkpoint_roundtrips_as_torch_save_would(tmp_path):
    """torch.save's usual argument: a dict nesting the model's and the optimizer's state dicts
    (integer keys, tuples) with numbers and strings. What comes back is the same object:
    Tensors as Tensors, arrays as arrays, tuples as tuples, NaN as NaN."""
    import math

    import minidl.nn as nn

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    opt = minidl.optim.Adam(model.parameters(), lr=1e-3)
    model(minidl.randn(5, 3)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
            "best": float("nan"), "run": "lenet/ä", "losses": [1.5, 2], "shape": (2, 3),
            "note": None, "flag": True, "mask": np.array([True, False]), "g": np.float32(2.5),
            "leaf": minidl.tensor([1.0, 2.0], requires_grad=True)}
    minidl.save(ckpt, tmp_path / "ckpt.pt")
    back = minidl.load(tmp_path / "ckpt.pt", weights_only=True)
    assert list(back) == list(ckpt)
    assert back["epoch"] == 3 and math.isnan(back["best"]) and back["run"] == "lenet/ä"
    assert back["losses"] == [1.5, 2] and type(back["losses"][1]) is int
    assert back["shape"] == (2, 3) and back["note"] is None and back["flag"] is True
    assert isinstance(back["mask"], np.ndarray) and back["mask"].tolist() == [True, False]
    assert type(back["g"]) is np.float32 and back["g"] == 2.5
    assert isinstance(back["leaf"], minidl.Tensor) and back["leaf"].requires_grad
    sd = back["model"]
    assert list(sd) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert isinstance(sd[k], minidl.Tensor) and sd[k].dtype == v.dtype, k
        np.testing.assert_array_equal(sd[k].numpy(), v.numpy(), err_msg=k)
    groups, state = back["optimizer"]["param_groups"], back["optimizer"]["state"]
    assert groups[0]["betas"] == (0.9, 0.999) and sorted(state) == list(range(6))
    twin = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    twin.load_state_dict(sd)
    opt2 = minidl.optim.Adam(twin.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    x = minidl.randn(5, 3)
    for m, o in ((model, opt), (twin, opt2)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_a_tensor_alone_and_map_location(tmp_path):
    t = minidl.arange(6).reshape(2, 3)
    minidl.save(t, tmp_path / "t.npz")
    back = minidl.load(tmp_path / "t.npz", map_location="cpu")
    assert isinstance(back, minidl.Tensor) and back.dtype == t.dtype and back.tolist() == t.tolist()


def test_a_corrupt_structure_names_the_file(tmp_path):
    import zipfile

    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(serialization.TREE, b'{"dict": [["w", {"tensor": "missing"}]]}')
    with pytest.raises(ValueError, match="bad.npz"):
        minidl.load(path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_file_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        minidl.save({"w": np.ones(2)}, tmp_path / "c.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_checkpoints_and_the_converter_share_one_writer():
    from minidl.models import convert

    assert convert.save_npz is serialization.save_npz


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    """kill -9 while the temporary is being written, then save again: no .tmp file stays."""
    path = tmp_path / "ckpt.npz"
    minidl.save({"w": np.arange(4.0)}, path)
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        import minidl
        real = np.lib.format.write_array
        def slow(*a, **k):
            real(*a, **k)
            print("writing", flush=True)
            time.sleep(60)
        np.lib.format.write_array = slow
        minidl.save({{"w": np.zeros(1000)}}, {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = [n for n in os.listdir(tmp_path) if n != "ckpt.npz"]
    assert len(stale) == 1  # what kill -9 leaves behind
    # a temporary of a writer that is still running is not touched
    live = tmp_path / f".ckpt.npz.tmp-{os.getppid()}-0000.npz"
    live.write_bytes(b"in progress")
    np.testing.assert_array_equal(minidl.load(path)["w"], np.arange(4.0))  # the old one is intact
    minidl.save({"w": np.ones(2)}, path)
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.npz", live.name])
    np.testing.assert_array_equal(minidl.load(path)["w"], np.ones(2))


def test_load_reads_files_written_by_numpy(tmp_path):
    np.savez(tmp_path / "n.npz", a=np.arange(3), b=np.eye(2, dtype=np.float32))
    loaded = minidl.load(tmp_path / "n.npz")
    assert sorted(loaded) == ["a", "b"]
    np.testing.assert_array_equal(loaded["b"], np.eye(2))


# ---- sparse tensors in checkpoints: minidl.save, format="torch", minidl.load of torch's --------------
def _sparse_checkpoint():
    s = minidl.sparse_coo_tensor([[0, 2, 0], [1, 1, 1]], [1.0, 2.0, 3.0], (3, 2))  # repeats
    h = minidl.sparse_coo_tensor([[0, 2]], np.arange(6.0).reshape(2, 3), (4, 3),
                                 dtype=minidl.float64).coalesce()  # hybrid
    e = minidl.sparse_coo_tensor(minidl.zeros(1, 0, dtype=minidl.int64), minidl.zeros(0), (5,))
    return {"s": s, "h": h, "e": e}


@pytest.mark.parametrize("fmt", ["minidl", "torch"])
def test_sparse_tensors_round_trip(tmp_path, fmt):
    obj = _sparse_checkpoint()
    minidl.save(obj, tmp_path / "sp.pt", format=fmt)  # was a SparseLayoutError
    back = minidl.load(tmp_path / "sp.pt")
    for k, t in obj.items():
        assert back[k].is_sparse and back[k].dtype == t.dtype and back[k].shape == t.shape
        assert back[k].is_coalesced() == t.is_coalesced()
        np.testing.assert_array_equal(back[k].to_dense().numpy(), t.to_dense().numpy())


def test_sparse_momentum_buffer_checkpoint(tmp_path):
    emb = minidl.nn.Embedding(5, 2, sparse=True)
    opt = minidl.optim.SGD(emb.parameters(), lr=0.1, momentum=0.9)
    emb(minidl.tensor([1, 3, 3])).sum().backward()
    opt.step()
    minidl.save({"opt": opt.state_dict()}, tmp_path / "ck.pt")
    buf = minidl.load(tmp_path / "ck.pt")["opt"]["state"][0]["momentum_buffer"]
    assert buf.is_sparse
    assert buf.to_dense().tolist() == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]


def test_sparse_tensors_torch_file_parity(tmp_path):
    torch = pytest.importorskip("torch")
    obj = _sparse_checkpoint()
    minidl.save(obj, tmp_path / "m.pt", format="torch")
    mine = torch.load(tmp_path / "m.pt", weights_only=True)
    for k, t in obj.items():
        assert mine[k].is_sparse and mine[k].is_coalesced() == t.is_coalesced()
        np.testing.assert_array_equal(mine[k].to_dense().numpy(), t.to_dense().numpy())
    theirs = {"s": torch.sparse_coo_tensor([[0, 1, 1]], [1.0, 2.0, 3.0], (4,)),
              "c": torch.ones(3, 2).to_sparse(), "size": torch.Size([2, 3])}
    torch.save(theirs, tmp_path / "t.pt")
    back = minidl.load(tmp_path / "t.pt")
    assert back["s"].to_dense().tolist() == [1.0, 5.0, 0.0, 0.0] and not back["s"].is_coalesced()
    assert back["c"].is_coalesced() and back["c"].to_dense().tolist() == [[1.0, 1.0]] * 3
    assert back["size"] == (2, 3)


def test_sparse_checkpoint_with_bad_indices_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    bad = torch.sparse_coo_tensor([[0, 7]], [1.0, 2.0], (4,), check_invariants=False)
    torch.save({"bad": bad}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="size is inconsistent"):
        minidl.load(tmp_path / "bad.pt")


# ---- devices in a checkpoint load back as devices (minidl's format and torch's) ----------------------
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
# ---- save refuses a NumPy structured array ----------------------------------------------------

def test_save_refuses_a_structured_array_it_could_not_load_back(tmp_path):
    record = np.zeros(2, dtype=[("a", "i4"), ("b", "f4")])
    with pytest.raises(TypeError, match="'o' has dtype"):
        minidl.save({"o": record}, tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()
    minidl.save({"o": np.ones(2, np.uint16)}, tmp_path / "c.npz")  # plain ones still load
    assert minidl.load(tmp_path / "c.npz")["o"].tolist() == [1, 1]


# ---- misuse: save into a missing folder or under a file, load of a directory, map_location ----

def test_save_into_missing_folder_refused_before_writing(tmp_path):
    target = tmp_path / "typo_dir" / "model.npz"
    with pytest.raises(FileNotFoundError, match="typo_dir does not exist") as info:
        minidl.save({"w": minidl.ones(2)}, target)
    assert isinstance(info.value, RuntimeError)  # torch.save's type too
    assert not (tmp_path / "typo_dir").exists()  # no folder made behind the user's back


def test_save_under_a_file_names_the_file(tmp_path):
    (tmp_path / "model.npz").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=r"model\.npz is a file, not a folder"):
        minidl.save({"w": minidl.ones(2)}, tmp_path / "model.npz" / "inner.npz")
    assert (tmp_path / "model.npz").read_bytes() == b"x"


def test_load_directory_is_an_is_a_directory_error(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path.name)):
        minidl.load(tmp_path)


def test_load_map_location_variants(tmp_path):
    path = tmp_path / "m.npz"
    minidl.save({"w": minidl.ones(2)}, path)
    for where in ("cpu", minidl.device("cpu"), {"cuda:0": "cpu"}, {"cpu": "cpu"}):
        assert minidl.load(path, map_location=where)["w"].device == "cpu"
    seen = []
    out = minidl.load(path, map_location=lambda t, loc: seen.append(loc) or t * 2)
    assert seen == ["cpu"] and out["w"].tolist() == [2.0, 2.0]
    assert minidl.load(path, map_location=lambda t, loc: None)["w"].tolist() == [1.0, 1.0]


def test_load_bad_map_location_names_the_argument_not_the_file(tmp_path):
    path = tmp_path / "m.npz"
    minidl.save({"w": minidl.ones(2)}, path)
    with pytest.raises(TypeError, match="map_location should be .* got int 3"):
        minidl.load(path, map_location=3)
    with pytest.raises(ValueError, match="map_location 'tpu' is not a device"):
        minidl.load(path, map_location="tpu")
    with pytest.raises(TypeError, match="map_location returned a str"):
        minidl.load(path, map_location=lambda t, loc: "cpu")


def test_save_load_of_a_file_object_works_and_a_non_path_is_a_clear_type_error(tmp_path):
    # torch.save/torch.load take binary file objects; so do minidl's (tests/
    # test_pytorch_examples_more.py checks buffers both ways against torch)
    with open(tmp_path / "f.npz", "wb") as f:
        minidl.save({"w": minidl.ones(1)}, f)
    with open(tmp_path / "f.npz", "rb") as f:
        assert minidl.load(f)["w"].tolist() == [1.0]
    with pytest.raises(TypeError, match="path must be a str, os.PathLike or a binary file "
                                        "object, got NoneType"):
        minidl.load(None)


# ---- load's map_location forms on the fake GPU ------------------------------------------------

def test_load_map_location_forms_reach_the_fake_gpu(tmp_path, monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    path = tmp_path / "m.npz"
    minidl.save({"w": minidl.ones(2), "n": 3}, path)
    for where in ("cuda", {"cpu": "cuda:0"}, minidl.device("cuda")):
        out = minidl.load(path, map_location=where)
        assert out["w"].device == "cuda" and out["n"] == 3
    out = minidl.load(path, map_location=lambda t, loc: t.to("cuda"))
    assert out["w"].device == "cuda" and out["w"].tolist() == [1.0, 1.0]
    model = minidl.nn.Linear(2, 1).to("cuda")
    with pytest.raises(TypeError, match="parameter named 'weight'"):
        model.load_state_dict({"weight": "w", "bias": minidl.zeros(1)})
