"""minidl.save(obj, path, format="torch"): torch.save's zip written without torch. torch.load
reads it (weights_only True and False) for every dtype, shape and nesting; a minidl model's
state dict drives its torch twin to the same outputs; load_torch_checkpoint reads it without
torch; the pickle names only the globals torch.load(weights_only=True) allows; bad values are
refused by key path before the file is touched. Tests that need torch import it inside."""
import collections
import math
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import serialization
from minidl.models.convert import load_torch_checkpoint, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = [np.float32, np.float64, np.float16, minidl.bfloat16, np.int8, np.int16, np.int32,
          np.int64, np.uint8, np.bool_, np.complex64, np.complex128]
# what torch.load(weights_only=True) allows, spelled out here rather than read from the module
ALLOWED_GLOBALS = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2",
                   "torch._utils _rebuild_parameter"} | {
    f"torch {n}Storage" for n in ("Float", "Double", "Half", "BFloat16", "Char", "Short", "Int",
                                  "Long", "Byte", "Bool", "ComplexFloat", "ComplexDouble")}


def values(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def arrays_of(dtype):
    """Shapes a checkpoint meets: 0-d, empty, ordinary, and non-contiguous inputs."""
    base = values(dtype, (4, 6), seed=1)
    return {"scalar": values(dtype, ()), "empty": values(dtype, (0,)), "empty3": values(dtype, (2, 0, 3)),
            "matrix": values(dtype, (3, 5)), "transposed": base.T, "strided": base[::2, 1::3],
            "reversed": base[::-1], "fortran": np.asfortranarray(values(dtype, (3, 4, 2))),
            # big-endian input is written little-endian, as the byteorder record says
            "big_endian": base if np.dtype(dtype).name == "bfloat16" else base.astype(
                base.dtype.newbyteorder(">"))}


def bits(a):
    """The array's elements bit for bit (NaNs compare equal, bfloat16 through its uint16)."""
    a = np.ascontiguousarray(a)
    if a.dtype.itemsize == 0 or a.dtype.kind == "b":
        return a
    return a.view(f"u{a.dtype.itemsize}" if a.dtype.itemsize <= 8 else "u8")


def torch_to_numpy(t, torch):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(minidl.bfloat16)
    return t.detach().numpy()


def assert_same(expected, got, torch, where="obj"):
    """``got`` (what torch.load returned) holds what ``expected`` held, with the same types."""
    from minidl.tensor import Tensor

    if isinstance(expected, (Tensor, np.ndarray, np.generic)):
        array = expected.numpy() if isinstance(expected, Tensor) else np.asarray(expected)
        if array.dtype.name != "bfloat16":
            array = array.astype(array.dtype.newbyteorder("="))
        assert isinstance(got, torch.Tensor), (where, type(got))
        assert tuple(got.shape) == array.shape, (where, got.shape, array.shape)
        assert got.is_contiguous(), where
        back = torch_to_numpy(got, torch)
        assert back.dtype == array.dtype, (where, back.dtype, array.dtype)
        np.testing.assert_array_equal(bits(back), bits(array), err_msg=where)
        return
    assert type(got) is type(expected), (where, type(got), type(expected))
    if isinstance(expected, dict):
        assert list(got) == list(expected), where
        for k in expected:
            assert_same(expected[k], got[k], torch, f"{where}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (e, g) in enumerate(zip(expected, got)):
            assert_same(e, g, torch, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), where
    else:
        assert got == expected, (where, got, expected)


def nested():
    return {
        "model": collections.OrderedDict([("w", minidl.randn(3, 2)), ("b", np.zeros(2, np.float64))]),
        "optimizer": {"state": {0: {"step": 7, "buf": np.ones((2, 2), np.float32)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1],
                                        "nesterov": False, "foreach": None}]},
        "epoch": 3, "neg": -123456789, "big": 2 ** 100, "small": -(2 ** 70), "i16": 40000,
        "floats": [0.5, float("inf"), float("-inf"), float("nan"), -0.0],
        "text": "gewicht ä λ \U0001F600", "empty": ["", [], (), {}, collections.OrderedDict()],
        "tuples": ((1,), (1, 2), (1, 2, 3), (1, 2, 3, 4, 5)), "flags": [True, False, None],
        "keys": {7: "int", 2.5: "float", True: "bool", None: "none", "s": "str"},
        "scalar": np.float64(2.5),
    }


# ---- without torch: the file itself -----------------------------------------------------------
def test_layout_storages_and_globals_checked_without_torch(tmp_path):
    """The zip holds what torch.load opens, each storage holds its tensor's little-endian bytes
    from a 64-byte boundary, and data.pkl is protocol 2 naming only allowed globals."""
    arrays = {np.dtype(dt).name: values(dt, (2, 3)).T for dt in DTYPES}
    obj = {"arrays": arrays, "param": nn.Parameter(minidl.randn(4)), **nested()}
    path = tmp_path / "c.pt"
    minidl.save(obj, path, format="torch")
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert zf.namelist()[0] == "archive/data.pkl"
        assert zf.read("archive/byteorder") == b"little"
        assert zf.read("archive/version").strip() == b"3"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos.values())
        data_pkl = zf.read("archive/data.pkl")
        storages = sorted((n for n in infos if n.startswith("archive/data/")),
                          key=lambda n: int(n.rsplit("/", 1)[1]))
        assert storages == [f"archive/data/{i}" for i in range(len(storages))]
        for name in storages:  # where each storage's bytes begin, from its local header
            offset = infos[name].header_offset
            name_len, extra_len = struct.unpack("<HH", raw[offset + 26:offset + 30])
            assert (offset + 30 + name_len + extra_len) % 64 == 0, name

        ops = list(pickletools.genops(data_pkl))
        assert ops[0][0].name == "PROTO" and ops[0][1] == 2
        globals_named = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
        assert globals_named <= ALLOWED_GLOBALS, globals_named - ALLOWED_GLOBALS
        assert {"torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter",
                "collections OrderedDict"} <= globals_named
        assert {op.proto for op, _, _ in ops} <= {0, 1, 2}
        # the storages of the dtype arrays, in the order they were walked: their exact bytes
        for key, (dt, a) in enumerate(arrays.items()):
            stored = zf.read(f"archive/data/{key}")
            a = a.view(np.uint16) if dt == "bfloat16" else a
            assert stored == np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes(), dt
    persistent_ids = 0
    for op, _, _ in ops:
        persistent_ids += op.name == "BINPERSID"
    assert persistent_ids == len(arrays) + 1 + 2 + 1 + 1  # + param, model's 2, buf, scalar


def test_reads_back_with_load_torch_checkpoint_where_torch_cannot_be_imported(tmp_path):
    """A fresh interpreter in which `import torch` fails writes and reads the file."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # import torch raises ImportError
        import numpy as np, minidl
        from minidl.models.convert import load_torch_checkpoint
        state = {{"w": minidl.tensor([[1.0, 2.0], [3.0, 4.0]]).T, "h": np.arange(3, dtype=np.float16),
                 "bf": np.array([1.5, -2.0], dtype=minidl.bfloat16), "i": np.arange(4)[::2],
                 "c": np.array([1 + 2j], np.complex128), "m": np.array([True, False]),
                 "s": np.array(5, np.int8), "e": np.zeros((0, 3), np.uint8)}}
        path = {str(tmp_path / "c.pt")!r}
        minidl.save(state, path, format="torch")
        back = load_torch_checkpoint(path)
        assert list(back) == list(state), list(back)
        for k, v in state.items():
            v = v.numpy() if isinstance(v, minidl.Tensor) else v
            want = v.astype(np.float32) if k == "bf" else v  # the reader widens bfloat16
            assert back[k].dtype == want.dtype and back[k].shape == want.shape, k
            np.testing.assert_array_equal(back[k], want, err_msg=k)
        assert "torch" not in {{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}}
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_one_array_saved_twice_is_one_storage_views_are_two(tmp_path):
    a = np.arange(6.0)
    t = minidl.tensor([1.0, 2.0])
    minidl.save({"a": a, "again": a, "view": a[1:], "t": t, "t2": t}, tmp_path / "c.pt", format="torch")
    with zipfile.ZipFile(tmp_path / "c.pt") as zf:
        assert sorted(n for n in zf.namelist() if "/data/" in n) == \
            ["archive/data/0", "archive/data/1", "archive/data/2"]


def test_pt_suffix_alone_still_writes_minidls_npz(tmp_path):
    for name in ("c.pt", "c.pth"):
        minidl.save({"w": np.arange(3.0)}, tmp_path / name)
        with zipfile.ZipFile(tmp_path / name) as zf:
            assert serialization.TREE in zf.namelist()
        np.testing.assert_array_equal(minidl.load(tmp_path / name)["w"], np.arange(3.0))


def test_cuda_tensors_are_written_from_a_host_copy(tmp_path, monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    t = minidl.tensor([[1.0, 2.0], [3.0, 4.0]], device="cuda")
    assert t.device == "cuda"
    minidl.save({"t": t, "p": nn.Parameter(t)}, tmp_path / "c.pt", format="torch")
    back = load_torch_checkpoint(tmp_path / "c.pt")
    np.testing.assert_array_equal(back["t"], [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(back["p"], [[1.0, 2.0], [3.0, 4.0]])


# ---- bad input: named by key path, nothing written ----------------------------------------------
class Thing:
    pass


def _self_containing():
    x = []
    x.append(x)
    return x


@pytest.mark.parametrize("bad, error, message", [
    (Thing(), TypeError, r"model/extra is a Thing"),
    (lambda: 0, TypeError, r"model/extra is a function"),
    ({1, 2}, TypeError, r"model/extra is a set"),
    (b"raw", TypeError, r"model/extra is a bytes"),
    (1 + 2j, TypeError, r"model/extra is a complex"),
    (np.arange(3, dtype=np.uint16), TypeError, r"model/extra has dtype uint16"),
    (np.array(["a", "b"]), TypeError, r"model/extra has dtype <U1"),
    (np.array([object()], dtype=object), TypeError, r"model/extra.*Python objects"),
    ({(1, 2): 0}, TypeError, r"key \(1, 2\) of model/extra is a tuple"),
    (_self_containing(), ValueError, r"model/extra/0 contains itself"),
    (1 << 3000, ValueError, r"model/extra is an integer of 3001 bits"),
])
def test_bad_value_is_refused_by_key_path_before_the_file_is_touched(tmp_path, bad, error, message):
    path = tmp_path / "ckpt.pt"
    minidl.save({"w": np.arange(3.0)}, path, format="torch")
    before = path.read_bytes()
    with pytest.raises(error, match=message):
        minidl.save({"model": {"w": np.zeros(2), "extra": bad}}, path, format="torch")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    np.testing.assert_array_equal(load_torch_checkpoint(path)["w"], np.arange(3.0))


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    minidl.save({"w": np.arange(3.0)}, path, format="torch")
    before = path.read_bytes()

    def half(f, data_pkl, storages):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(serialization, "_write_torch_zip", half)
    with pytest.raises(OSError, match="No space left"):
        minidl.save({"w": np.ones(3)}, path, format="torch")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.pt"]


def test_unknown_format_and_missing_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"format must be 'minidl' .* or 'torch'.*'pickle'"):
        minidl.save({"w": np.ones(1)}, tmp_path / "c.pt", format="pickle")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        minidl.save({"w": np.ones(1)}, tmp_path / "nope" / "c.pt", format="torch")
    assert os.listdir(tmp_path) == []


# ---- the command line ----------------------------------------------------------------------------
def test_cli_to_torch_converts_a_minidl_checkpoint(tmp_path, capsys):
    src, out = tmp_path / "c.npz", tmp_path / "sub" / "c.pt"
    model = minidl.models.lenet5()
    minidl.save({"model": model.state_dict(), "epoch": 2}, src)
    assert main(["--to-torch", str(src), str(out)]) == 0
    assert "wrote 10 tensors" in capsys.readouterr().out
    back = load_torch_checkpoint(out)  # unwraps "model"
    assert list(back) == list(model.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy())


def test_cli_to_torch_refuses_bad_input_with_one_line(tmp_path, capsys):
    src = tmp_path / "c.npz"
    minidl.save({"w": np.ones(2, np.float32)}, src)
    assert main(["--to-torch", str(src), str(tmp_path / "r.pt"), "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "error: checkpoint" in err and "does not fit minidl's resnet18" in err and "unexpected: w" in err
    assert main(["--to-torch", str(src), str(src)]) == 2
    assert "destroy the source" in capsys.readouterr().err
    assert main(["--to-torch", str(tmp_path / "missing.npz"), str(tmp_path / "r.pt")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


# ---- with torch --------------------------------------------------------------------------------
@pytest.mark.parametrize("weights_only", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_and_shape_loads_in_torch(tmp_path, dtype, weights_only):
    torch = pytest.importorskip("torch")
    arrays = arrays_of(dtype)
    obj = {"numpy": arrays, "tensors": {k: minidl.Tensor(v) for k, v in arrays.items()},
           "numpy_scalar": values(dtype, (1,))[0]}
    path = tmp_path / "c.pt"
    minidl.save(obj, path, format="torch")
    got = torch.load(path, weights_only=weights_only)
    assert_same(obj, got, torch)


def test_a_lone_tensor_and_keys_with_nul_or_slashes(tmp_path):
    torch = pytest.importorskip("torch")
    minidl.save(minidl.tensor([1.0, 2.0]), tmp_path / "t.pt", format="torch")
    assert torch.equal(torch.load(tmp_path / "t.pt"), torch.tensor([1.0, 2.0]))
    state = {"a\0b": np.ones(1), "a/b": np.zeros(1), "": np.full(1, 2.0)}
    minidl.save(state, tmp_path / "k.pt", format="torch")
    assert_same(state, torch.load(tmp_path / "k.pt"), torch)


@pytest.mark.parametrize("weights_only", [True, False])
def test_nested_structure_parameters_and_requires_grad(tmp_path, weights_only):
    torch = pytest.importorskip("torch")
    obj = nested()
    obj["param"] = nn.Parameter(minidl.randn(2, 3))
    obj["frozen"] = nn.Parameter(minidl.randn(2), requires_grad=False)
    obj["leaf"] = minidl.randn(3, requires_grad=True)
    minidl.save(obj, tmp_path / "c.pt", format="torch")
    got = torch.load(tmp_path / "c.pt", weights_only=weights_only)
    assert_same({k: v for k, v in obj.items() if k not in ("param", "frozen", "leaf")},
                {k: v for k, v in got.items() if k not in ("param", "frozen", "leaf")}, torch)
    assert type(got["param"]) is torch.nn.Parameter and got["param"].requires_grad
    assert type(got["frozen"]) is torch.nn.Parameter and not got["frozen"].requires_grad
    assert type(got["leaf"]) is torch.Tensor and got["leaf"].requires_grad
    for k in ("param", "frozen", "leaf"):
        np.testing.assert_array_equal(got[k].detach().numpy(), obj[k].numpy())


def test_mmap_load_and_shared_storage_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    minidl.save({"a": a, "again": a, "view": a[1:]}, tmp_path / "c.pt", format="torch")
    got = torch.load(tmp_path / "c.pt", mmap=True, weights_only=True)
    assert got["a"].untyped_storage().data_ptr() == got["again"].untyped_storage().data_ptr()
    assert got["a"].data_ptr() % 64 == 0
    np.testing.assert_array_equal(got["view"].numpy(), a[1:])


def test_same_bytes_as_torch_save_reads(tmp_path):
    """torch.load gives the same tensors for our file and for torch.save's of the same values."""
    torch = pytest.importorskip("torch")
    state = collections.OrderedDict((np.dtype(dt).name, values(dt, (2, 3))) for dt in DTYPES
                                    if np.dtype(dt).name != "bfloat16")
    minidl.save(state, tmp_path / "ours.pt", format="torch")
    torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()),
               tmp_path / "theirs.pt")
    ours, theirs = torch.load(tmp_path / "ours.pt"), torch.load(tmp_path / "theirs.pt")
    assert type(ours) is type(theirs) and list(ours) == list(theirs)
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and ours[k].stride() == theirs[k].stride(), k
        assert torch.equal(ours[k], theirs[k]), k


def test_strides_are_torchs_contiguous_ones(tmp_path):
    torch = pytest.importorskip("torch")
    shapes = [(), (0,), (2, 0, 3), (0, 4), (3, 1, 2), (2, 3, 4, 5, 1)]
    minidl.save([np.zeros(s, np.float32) for s in shapes], tmp_path / "c.pt", format="torch")
    got = torch.load(tmp_path / "c.pt")
    assert [t.stride() for t in got] == [torch.empty(s).stride() for s in shapes]


class _TorchLeNet5:
    """minidl.models.lenet5 in torch, with its module names (features.*, classifier.*)."""

    def __new__(cls, torch):
        tn = torch.nn

        class LeNet5(tn.Module):
            def __init__(self):
                super().__init__()
                self.features = tn.Sequential(
                    tn.Conv2d(1, 6, 5, padding=2), tn.ReLU(), tn.MaxPool2d(2),
                    tn.Conv2d(6, 16, 5), tn.ReLU(), tn.MaxPool2d(2))
                self.classifier = tn.Sequential(
                    tn.Flatten(), tn.Linear(400, 120), tn.ReLU(), tn.Linear(120, 84), tn.ReLU(),
                    tn.Linear(84, 10))

            def forward(self, x):
                return self.classifier(self.features(x))

        return LeNet5()


@pytest.mark.parametrize("weights_only", [True, False])
def test_lenet5_state_dict_drives_its_torch_twin(tmp_path, weights_only):
    torch = pytest.importorskip("torch")
    minidl.manual_seed(0)
    model = minidl.models.lenet5().eval()
    path = tmp_path / "lenet5.pt"
    minidl.save(model.state_dict(), path, format="torch")
    twin = _TorchLeNet5(torch).eval()
    state = torch.load(path, weights_only=weights_only)
    assert type(state) is collections.OrderedDict
    twin.load_state_dict(state)  # strict: every name and shape
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    with minidl.no_grad():
        got = model(minidl.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_model_checkpoint_resumes_in_torch(tmp_path):
    """A trained conv-BatchNorm model (running statistics, num_batches_tracked) saved with its
    optimizer: torch's twin loads the weights strictly and gives the same eval outputs."""
    torch = pytest.importorskip("torch")
    minidl.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    opt = minidl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(1).standard_normal((5, 3, 6, 6)).astype(np.float32)
    for _ in range(2):
        opt.zero_grad()
        model(minidl.tensor(x)).sum().backward()
        opt.step()
    path = tmp_path / "ckpt.pt"
    minidl.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2}, path,
                format="torch")
    tn = torch.nn
    twin = tn.Sequential(tn.Conv2d(3, 4, 3, padding=1), tn.BatchNorm2d(4), tn.ReLU(),
                         tn.AdaptiveAvgPool2d(1), tn.Flatten(), tn.Linear(4, 2))
    ckpt = torch.load(path, weights_only=True)
    twin.load_state_dict(ckpt["model"])
    assert ckpt["model"]["1.num_batches_tracked"].dtype == torch.int64
    assert int(ckpt["model"]["1.num_batches_tracked"]) == 2 and ckpt["epoch"] == 2
    torch_opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    torch_opt.load_state_dict(ckpt["optimizer"])
    model.eval(), twin.eval()
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    with minidl.no_grad():
        got = model(minidl.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cli_output_loads_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    src, out = tmp_path / "w.npz", tmp_path / "w.pt"
    serialization.save_npz({"a.weight": np.ones((2, 2), np.float32), "n": np.arange(3)}, src)
    assert main(["--to-torch", str(src), str(out)]) == 0
    got = torch.load(out, weights_only=True)
    assert sorted(got) == ["a.weight", "n"] and got["n"].dtype == torch.int64
    assert torch.equal(got["a.weight"], torch.ones(2, 2))


def test_the_pickle_is_protocol_2(tmp_path):
    """pickle itself (not torch) parses data.pkl to the same opcodes: no stray bytes."""
    minidl.save(nested(), tmp_path / "c.pt", format="torch")
    with zipfile.ZipFile(tmp_path / "c.pt") as zf:
        data = zf.read("archive/data.pkl")

    class Refuse(pickle.Unpickler):
        def find_class(self, module, name):
            assert f"{module} {name}" in ALLOWED_GLOBALS
            return collections.OrderedDict if name == "OrderedDict" else (lambda *a: a)

        def persistent_load(self, pid):
            return pid

    import io

    loaded = Refuse(io.BytesIO(data)).load()
    assert loaded["text"] == "gewicht ä λ \U0001F600" and loaded["big"] == 2 ** 100
    assert loaded["tuples"] == ((1,), (1, 2), (1, 2, 3), (1, 2, 3, 4, 5))


# ---- minidl.load of a torch file keeps bfloat16 and requires_grad; torch dtypes load -----------------
def test_torch_format_round_trip_keeps_bfloat16_and_requires_grad(tmp_path):
    path = tmp_path / "ck.pt"
    w = minidl.tensor([1.5, 2.25, -3.0]).to(minidl.bfloat16)
    obj = {"w": w, "p": minidl.nn.Parameter(minidl.tensor([1.0, 2.0])),
           "frozen": minidl.nn.Parameter(minidl.tensor([3.0]), requires_grad=False),
           "x": minidl.tensor([4.0], requires_grad=True), "plain": minidl.tensor([5.0])}
    minidl.save(obj, path, format="torch")
    back = minidl.load(path)
    assert back["w"].dtype == minidl.bfloat16
    assert back["w"].float().tolist() == [1.5, 2.25, -3.0]
    assert [back[k].requires_grad for k in ("p", "frozen", "x", "plain")] == [
        True, False, True, False]
    assert back["p"].is_leaf and back["p"].tolist() == [1.0, 2.0]


def test_torch_file_parity_bfloat16_requires_grad_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "t.pt"
    obj = {"bf": torch.arange(8, dtype=torch.bfloat16)[1::3], "dtype": torch.float32,
           "bf_dtype": torch.bfloat16, "p": torch.nn.Parameter(torch.tensor([1.0, 2.0])),
           "g": torch.tensor([3.0], requires_grad=True), "i": torch.tensor([1, 2])}
    torch.save(obj, path)
    back = minidl.load(path)
    assert back["bf"].dtype == minidl.bfloat16 and back["bf"].float().tolist() == [1.0, 4.0, 7.0]
    assert back["dtype"] == minidl.float32 and back["bf_dtype"] == minidl.bfloat16
    assert back["p"].requires_grad and back["g"].requires_grad
    assert not back["i"].requires_grad and back["i"].tolist() == [1, 2]
    # the converter's reading (a state dict of float arrays) still widens bfloat16
    from minidl.torch_file import read
    assert read(path)["bf"].dtype == np.float32
# ---- save / load ------------------------------------------------------------------------------

def test_dtypes_saved_as_values_round_trip_in_both_formats(tmp_path):
    state = {"dtype": minidl.float16, "more": [minidl.bfloat16, minidl.int64, minidl.bool]}
    for fmt, name in (("minidl", "c.npz"), ("torch", "c.pt")):
        minidl.save(state, tmp_path / name, format=fmt)
        back = minidl.load(tmp_path / name)
        assert back["dtype"] == minidl.float16
        assert back["more"] == [minidl.bfloat16, minidl.int64, minidl.bool]
    with pytest.raises(TypeError, match="more/0 is the dtype uint16"):
        minidl.save({"more": [np.dtype(np.uint16)]}, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_dtypes_saved_by_minidl_load_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    minidl.save({"dt": minidl.float16, "b": minidl.bfloat16}, tmp_path / "c.pt", format="torch")
    back = torch.load(tmp_path / "c.pt")  # weights_only=True
    assert back == {"dt": torch.float16, "b": torch.bfloat16}


def test_a_truncated_zip_checkpoint_is_named_as_truncated(tmp_path):
    path = tmp_path / "c.pt"
    minidl.save({"w": minidl.ones(100)}, path, format="torch")
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="c.pt.*truncated or corrupt"):
            minidl.load(path)


# ---- torch files minidl reads: conjugate and negative views, dtypes it lacks ------------------

def test_torch_files_with_conjugate_and_negative_views_load_their_values():
    torch = pytest.importorskip("torch")
    import tempfile
    import os

    from minidl.models.convert import read_torch_file

    for make in (lambda z: z.conj(), lambda z: z.conj().imag, lambda z: z):
        t = make(torch.tensor([1 + 2j, -3 - 0.5j]))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.pt")
            torch.save({"t": t}, path)
            ours = minidl.load(path)["t"]
            arrays = read_torch_file(path)["t"]
        expected = t.resolve_conj().resolve_neg().numpy()
        np.testing.assert_array_equal(ours.numpy(), expected)
        np.testing.assert_array_equal(arrays, expected)


def test_torch_files_with_dtypes_or_kinds_minidl_lacks_are_named_so():
    torch = pytest.importorskip("torch")
    import tempfile
    import os

    with tempfile.TemporaryDirectory() as d:
        for obj, what in ((torch.ones(2).to(torch.float8_e4m3fn), "dtype torch.float8_e4m3fn"),
                          (torch.empty(2, device="meta"), "a meta tensor")):
            path = os.path.join(d, "c.pt")
            torch.save({"w": obj}, path)
            with pytest.raises(Exception, match=what) as info:
                minidl.load(path)
            assert "only tensors and plain containers" not in str(info.value)
