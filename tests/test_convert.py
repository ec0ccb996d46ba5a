"""Reading PyTorch checkpoints without torch (and without running code from them), and .npz output."""

import collections
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minidl.models.convert import check_state_dict, convert, load_torch_checkpoint, main, save_npz
import minidl

REPO = Path(__file__).resolve().parents[1]


def needs_torch():
    return pytest.importorskip("torch", reason="torch is needed to write PyTorch checkpoints")


def torch_state_dict():
    """A small model's state_dict plus tensors that exercise every path of the reader."""
    torch = needs_torch()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    bn = model[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.num_batches_tracked.fill_(7)
    sd = model.state_dict()
    big = torch.randn(40)
    sd.update({
        "extra.float64": torch.randn(2, 3, dtype=torch.float64),
        "extra.int64": torch.tensor([-(2 ** 40), 0, 2 ** 50]),
        "extra.int32": torch.tensor([-7, 8], dtype=torch.int32),
        "extra.uint8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "extra.uint16": torch.tensor([1, 60000], dtype=torch.uint16),  # torch 2.x: _rebuild_tensor_v3
        "extra.int8": torch.tensor([-128, 127], dtype=torch.int8),
        "extra.bool": torch.tensor([True, False, True]),
        "extra.float16": torch.randn(4).half(),
        "extra.bfloat16": torch.randn(4).bfloat16(),
        "extra.transposed": torch.randn(3, 5).t(),          # non-contiguous
        "extra.offset_view": big[5:11].view(2, 3),           # storage offset 5 into 40 floats
        "extra.strided": big[1::7],                          # shares `big`'s storage, step 7
        "extra.scalar": torch.tensor(3.5),
        "extra.empty": torch.zeros(0, 3),
    })
    return sd


def to_numpy(t):
    import torch
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()


def assert_same(got, expected_torch):
    assert list(got) == list(expected_torch)
    for k, t in expected_torch.items():
        want = to_numpy(t)
        assert got[k].dtype == want.dtype, k
        assert got[k].shape == want.shape, k
        assert np.array_equal(got[k], want), k
        assert got[k].flags.c_contiguous, k


def load_without_torch(path):
    """Run load_torch_checkpoint in a fresh interpreter where `import torch` fails."""
    script = (
        "import sys, pickle\n"
        "sys.modules['torch'] = None  # makes every `import torch` raise ImportError\n"
        "from minidl.models.convert import load_torch_checkpoint\n"
        "try:\n"
        "    import torch\n"
        "    raise SystemExit('torch is still importable')\n"
        "except ImportError:\n"
        "    pass\n"
        "try:\n"
        "    result = load_torch_checkpoint(sys.argv[1])\n"
        "except Exception as e:\n"
        "    result = e\n"
        "pickle.dump(result, sys.stdout.buffer)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    return pickle.loads(proc.stdout)


def test_zip_checkpoint_converts_identically_with_and_without_torch(tmp_path):
    torch = needs_torch()
    sd = torch_state_dict()
    path = tmp_path / "model.pth"
    torch.save(sd, path)
    without = load_without_torch(path)
    assert not isinstance(without, Exception), without
    assert_same(without, sd)
    assert_same(load_torch_checkpoint(path), sd)


def test_legacy_format(tmp_path):
    torch = needs_torch()
    # torch itself cannot read back uint16 from its legacy format, so leave that one out
    sd = {k: v for k, v in torch_state_dict().items() if v.dtype != torch.uint16}
    path = tmp_path / "legacy.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert_same(load_torch_checkpoint(path), sd)
    err = load_without_torch(path)
    assert isinstance(err, ValueError) and "legacy" in str(err) and "torch" in str(err)


def test_big_endian_storages(tmp_path):
    torch = needs_torch()
    for dtype in (torch.float32, torch.float64, torch.int64, torch.bfloat16):
        t = (torch.randn(3, 2) * 1000).to(dtype)
        little, big = tmp_path / "little.pth", tmp_path / "big.pth"
        torch.save({"t": t}, little)
        itemsize = t.element_size()
        with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
            for name in src.namelist():
                data = src.read(name)
                if name.endswith("/byteorder"):
                    data = b"big"
                elif "/data/" in name:
                    data = np.frombuffer(data, dtype=f"u{itemsize}").byteswap().tobytes()
                dst.writestr(name, data)
        got = load_torch_checkpoint(big)["t"]
        assert got.dtype.isnative and np.array_equal(got, to_numpy(t)), dtype


def test_unwraps_training_checkpoints_and_dataparallel_prefix(tmp_path):
    torch = needs_torch()
    sd = torch_state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "arch": "tiny", "state_dict": {"module." + k: v for k, v in sd.items()},
                "optimizer": {"lr": 0.1}}, path)
    assert_same(load_torch_checkpoint(path), sd)
    torch.save({"model": {"w": torch.nn.Parameter(torch.ones(2))}}, path)
    assert np.array_equal(load_torch_checkpoint(path)["w"], [1.0, 1.0])


def test_npz_input(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.arange(3.0), b=np.ones((2, 2), np.float32))
    got = load_torch_checkpoint(path)
    assert sorted(got) == ["a", "b"] and np.array_equal(got["a"], [0.0, 1.0, 2.0])


# --- hostile and broken files: crafted in torch's zip layout, no torch needed -----------------

def write_torch_zip(path, data_pkl, storages=(), byteorder=b"little"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", byteorder)
        z.writestr("archive/version", b"3\n")
        for key, raw in storages:
            z.writestr(f"archive/data/{key}", raw)


# Hand-written protocol-0 pickles, the way torch lays out a state_dict.
STORAGE0 = b"(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI4\ntQ"  # persistent id of 4 floats under key '0'
FOUR_FLOATS = [("0", np.arange(4, dtype="<f4").tobytes())]


def rebuild(storage, size, stride, offset=0):
    ints = lambda xs: b"".join(b"I%d\n" % x for x in xs)  # noqa: E731
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"I%d\n(" % offset + ints(size) + b"t("
            + ints(stride) + b"tI00\nccollections\nOrderedDict\n)RtR")


def state_dict_pickle(*items):
    return b"ccollections\nOrderedDict\n)R" + b"".join(b"V%s\n%ss" % (k.encode(), v) for k, v in items) + b"."


def tensor_pickle(size):
    """{'w': a float32 tensor of `size`, stride 1, on storage '0'}."""
    return state_dict_pickle(("w", rebuild(STORAGE0, (size,), (1,))))


def test_crafted_tensor_pickle_loads(tmp_path):
    path = tmp_path / "ok.pth"
    write_torch_zip(path, tensor_pickle(4), FOUR_FLOATS)
    assert np.array_equal(load_torch_checkpoint(path)["w"], [0.0, 1.0, 2.0, 3.0])


def test_tensor_overrunning_its_storage_is_refused(tmp_path):
    path = tmp_path / "overrun.pth"
    write_torch_zip(path, tensor_pickle(100), FOUR_FLOATS)
    with pytest.raises(pickle.UnpicklingError, match="overruns"):
        load_torch_checkpoint(path)


def test_expanded_tensor_is_refused(tmp_path):
    path = tmp_path / "expanded.pth"  # 10**9 elements, all the same float: would copy to 4 GB
    write_torch_zip(path, state_dict_pickle(("w", rebuild(STORAGE0, (10 ** 9,), (0,)))), FOUR_FLOATS)
    with pytest.raises(pickle.UnpicklingError, match="expanded"):
        load_torch_checkpoint(path)


def test_forged_storage_is_refused(tmp_path):
    # 'b' passes tensor 'a' (a 2-D array, memo slot 1) off as a storage: the bounds check counts
    # elements of a flat storage, so a 2-D one would let the view read past the end of memory.
    forged = state_dict_pickle(("a", rebuild(STORAGE0, (2, 2), (2, 1)) + b"p1\n"),
                               ("b", rebuild(b"(g1\nVf4\nt", (2,), (1,), offset=1)))
    path = tmp_path / "forged.pth"
    write_torch_zip(path, forged, FOUR_FLOATS)
    with pytest.raises(pickle.UnpicklingError, match="not a storage"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize("payload", [
    b"ctorch\nFloatStorage\n}Vcode\nVO\nsb.",                       # retype float storages as objects
    b"ctorch._utils\n_rebuild_tensor_v2\n(N}V__defaults__\n(I1\ntstb.",  # give a stand-in defaults
])
def test_build_opcode_cannot_poison_later_loads(tmp_path, payload):
    from minidl import torch_file
    path, good = tmp_path / "poison.pth", tmp_path / "ok.pth"
    write_torch_zip(path, payload)
    with pytest.raises((ValueError, pickle.UnpicklingError), match="poison.pth"):
        load_torch_checkpoint(path)
    assert torch_file._rebuild_tensor.__defaults__ is None
    write_torch_zip(good, tensor_pickle(4), FOUR_FLOATS)
    got = load_torch_checkpoint(good)["w"]
    assert got.dtype == np.float32 and np.array_equal(got, [0.0, 1.0, 2.0, 3.0])


def test_truncated_storage_names_the_file(tmp_path):
    path = tmp_path / "short.pth"
    write_torch_zip(path, tensor_pickle(4), [("0", b"\0" * 10)])
    with pytest.raises(ValueError, match="short.pth"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize("make_pickle, refused", [
    (lambda cmd: b"cos\nsystem\n(V" + cmd + b"\ntR.", "os.system"),
    (lambda cmd: b"cbuiltins\neval\n(V__import__('os').system('" + cmd + b"')\ntR.", "builtins.eval"),
    (lambda cmd: b"ccollections\nOrderedDict\n)RVx\ncos\nsystem\n(V" + cmd + b"\ntRs.", "os.system"),
])
def test_malicious_checkpoint_is_refused_without_running_it(tmp_path, make_pickle, refused):
    marker = tmp_path / "pwned"
    evil = make_pickle(f"touch {marker}".encode())
    pickle.loads(evil)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.pth"
    write_torch_zip(path, evil)
    with pytest.raises(pickle.UnpicklingError) as info:
        load_torch_checkpoint(path)
    assert refused in str(info.value) and "evil.pth" in str(info.value)
    assert not marker.exists()


def test_reduce_based_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    write_torch_zip(path, pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (os|posix)\.system"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_truncated_torch_file_names_itself(tmp_path):
    path = tmp_path / "cut.pth"
    write_torch_zip(path, tensor_pickle(4), FOUR_FLOATS)
    path.write_bytes(path.read_bytes()[:-40])  # loses the zip's central directory
    with pytest.raises(ValueError, match="cut.pth.*truncated"):
        load_torch_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.pth"):
        load_torch_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_torch_checkpoint(tmp_path / "missing.pth")


# --- convert, check_state_dict, .npz writing, CLI --------------------------------------------

def test_check_state_dict():
    expected = {"conv.weight": (4, 3, 3, 3), "fc.weight": (5, 10), "fc.bias": (5,)}
    got = {"conv.weight": np.zeros((4, 3, 3, 3)), "fc.weight": np.zeros((10, 5)), "extra": np.zeros(2)}
    problems = check_state_dict(expected, got)
    assert problems == ["missing: fc.bias (5,)", "unexpected: extra (2,)",
                        "shape mismatch: fc.weight: checkpoint has (10, 5), model expects (5, 10)"]
    exact = {k: np.zeros(s) for k, s in expected.items()}
    assert check_state_dict(expected, exact) == []


def test_convert_arch_none_writes_npz_atomically(tmp_path):
    torch = needs_torch()
    sd = torch_state_dict()
    src, out = tmp_path / "model.pth", tmp_path / "model.npz"
    torch.save(sd, src)
    returned = convert(src, out, arch="none")
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "model.pth"]  # no temp file left behind
    with np.load(out) as npz:
        assert "1.num_batches_tracked" not in npz.files
        assert sorted(npz.files) == sorted(returned)
        expected = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        assert_same({k: npz[k] for k in expected}, expected)


def test_save_npz_failure_keeps_old_file(tmp_path):
    out = tmp_path / "w.npz"
    save_npz({"file": np.ones(2), "allow_pickle": np.zeros(1)}, out)  # names np.savez would choke on
    before = out.read_bytes()
    with pytest.raises(TypeError, match="'bad'"):
        save_npz({"bad": np.array([object()], dtype=object)}, out)  # object arrays cannot be saved
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["w.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # the temp file's mode is not left on it
    with np.load(out) as npz:
        assert np.array_equal(npz["file"], [1.0, 1.0])


def test_convert_unknown_arch(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.ones(1))
    with pytest.raises(ValueError, match="unknown arch"):
        convert(path, tmp_path / "out.npz", arch="vgg7")


def test_cli(tmp_path, capsys):
    src, out = tmp_path / "w.npz", tmp_path / "out.npz"
    np.savez(src, a=np.ones((2, 3), np.float32), b=np.zeros(4, np.float32))
    assert main([str(src), str(out), "--arch", "none"]) == 0
    summary = capsys.readouterr().out.strip()
    assert summary == f"wrote 2 tensors (10 values) to {out}"
    assert main([str(tmp_path / "nope.pth"), str(out), "--arch", "none"]) == 2
    err = capsys.readouterr().err
    assert "nope.pth" in err and "does not exist" in err and "Traceback" not in err


def test_cli_module_exit_status(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "minidl.models.convert", str(tmp_path / "nope.pth"),
                           str(tmp_path / "out.npz"), "--arch", "none"],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 2
    assert "nope.pth" in proc.stderr and "Traceback" not in proc.stderr


# --- memory follows what the file holds, not what it declares (issue 11 item 12) ----------------
def _deflated_zeros_checkpoint(path, n_floats):
    """A torch-layout zip whose one storage is n_floats zeros, deflated (a few hundred bytes
    per MB): the file is tiny, the declared storage is not."""
    storage = b"(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI%d\ntQ" % n_floats
    data_pkl = state_dict_pickle(("w", rebuild(storage, (n_floats,), (1,))))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", b"little")
        with z.open("archive/data/0", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(n_floats * 4 >> 20):
                member.write(zeros)


def test_a_zip_bomb_storage_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb.pth"
    _deflated_zeros_checkpoint(path, 64 << 20)  # declares 256 MB
    assert path.stat().st_size < 1 << 20
    script = ("import resource, sys\n"
              "from minidl.models.convert import load_torch_checkpoint\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n"
              f"    load_torch_checkpoint({str(path)!r})\n"
              "except ValueError as e:\n"
              "    print('refused:', e)\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("refused:") and "bomb.pth" in lines[0] and "ratio" in lines[0]
    assert int(lines[-1]) < 32, f"peak RSS grew by {lines[-1]} MB"  # 256 MB declared


def test_declared_sizes_are_charged_against_the_limit_before_reading(tmp_path):
    path = tmp_path / "four.pth"
    write_torch_zip(path, tensor_pickle(4), FOUR_FLOATS)
    assert load_torch_checkpoint(path, max_bytes=16)["w"].shape == (4,)
    with pytest.raises(ValueError, match="four.pth.*declares 16 bytes, over the 15 bytes left"):
        load_torch_checkpoint(path, max_bytes=15)
    # an .npz is held to the same rules
    npz = tmp_path / "z.npz"
    np.savez_compressed(npz, a=np.zeros(1 << 20, np.float32))
    with pytest.raises(ValueError, match="ratio"):
        load_torch_checkpoint(npz)
    np.savez(npz, a=np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="over the 10 bytes left"):
        load_torch_checkpoint(npz, max_bytes=10)
    assert load_torch_checkpoint(npz)["a"].shape == (8,)


def test_convert_limits_the_load_by_the_models_expected_shapes(tmp_path, monkeypatch):
    from minidl.models import convert as convert_module
    seen = {}
    real = convert_module.load_torch_checkpoint

    def spy(path, max_bytes=None):
        seen["max_bytes"] = max_bytes
        return real(path, max_bytes=max_bytes)
    monkeypatch.setattr(convert_module, "load_torch_checkpoint", spy)
    monkeypatch.setattr(convert_module, "_expected_shapes", lambda arch: {"w": (4,)})
    path = tmp_path / "four.pth"
    write_torch_zip(path, tensor_pickle(4), FOUR_FLOATS)
    convert(path, tmp_path / "out.npz", arch="resnet50")
    assert seen["max_bytes"] == 4 * 8 * 4 + (1 << 20)


# --- the converter never overwrites its input (issue 11 item 13) ---------------------------------
def test_output_that_is_the_input_is_refused(tmp_path, capsys):
    src = tmp_path / "w.pth"
    write_torch_zip(src, tensor_pickle(4), FOUR_FLOATS)
    before = src.read_bytes()
    link = tmp_path / "link.pth"
    link.symlink_to(src)
    hard = tmp_path / "hard.pth"
    os.link(src, hard)
    for out in (src, link, hard, tmp_path / "." / "w.pth"):
        assert main([str(src), str(out), "--arch", "none"]) == 2
        err = capsys.readouterr().err
        assert "is the input checkpoint itself" in err and err.count("\n") == 1
        assert src.read_bytes() == before
    with pytest.raises(ValueError, match="input checkpoint itself"):
        convert(src, src, arch="none")


# ---- misuse: the converter's output folders, torch files read without running their code ------

def test_save_npz_still_makes_the_converter_output_folders(tmp_path):
    from minidl.serialization import save_npz

    save_npz({"w": np.ones(2)}, tmp_path / "a" / "b" / "w.npz")
    assert minidl.load(tmp_path / "a" / "b" / "w.npz")["w"].tolist() == [1.0, 1.0]


def test_load_of_a_torch_file_reads_it_without_running_its_code(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2), "step": 3, "parts": [torch.arange(2)]}, path)
    got = minidl.load(path)
    assert got["w"].tolist() == [1.0, 1.0] and got["step"] == 3
    assert isinstance(got["parts"][0], minidl.Tensor) and got["parts"][0].tolist() == [0, 1]
    hostile = tmp_path / "hostile.pt"
    torch.save({"f": collections.Counter("ab")}, hostile)  # a class no state dict holds
    with pytest.raises(Exception, match=r"hostile\.pt"):
        minidl.load(hostile)


# ---- misuse: get_model with weights files, list_models' arguments -----------------------------

def test_get_model_loads_weights_written_by_minidl_save(tmp_path):
    from minidl import models

    src = models.resnet18(num_classes=3)
    minidl.save(src.state_dict(), tmp_path / "r18.npz")  # was: "expected one data.pkl"
    model = models.get_model("resnet18", weights=tmp_path / "r18.npz", num_classes=3)
    np.testing.assert_array_equal(model.fc.weight.numpy(), src.fc.weight.numpy())
    minidl.save({"model": src.state_dict(), "epoch": 2}, tmp_path / "ck.npz")  # a checkpoint
    model = models.get_model("resnet18", weights=tmp_path / "ck.npz", num_classes=3)
    np.testing.assert_array_equal(model.conv1.weight.numpy(), src.conv1.weight.numpy())
    with pytest.raises(ValueError, match=r"(?s)r18\.npz do not fit ResNet .*missing: layer1\.2\."):
        models.get_model("resnet34", weights=tmp_path / "r18.npz", num_classes=3)


def test_get_model_weights_directory_says_directory(tmp_path):
    from minidl import models

    with pytest.raises(IsADirectoryError, match=f"{tmp_path.name} is a directory"):
        models.get_model("resnet18", weights=tmp_path)


def test_list_models_bad_include_names_the_argument():
    from minidl import models

    with pytest.raises(TypeError, match="list_models: include must be a pattern"):
        models.list_models(include=5)
    with pytest.raises(TypeError, match="exclude must be"):
        models.list_models(exclude=3.5)
    assert models.list_models(include="resnet1*") == ["resnet101", "resnet152", "resnet18"]


# ---- misuse: the converter CLI's input and output paths ---------------------------------------

def test_convert_cli_input_directory_is_one_error_line(tmp_path, capsys):
    from minidl.models.convert import main

    assert main([str(tmp_path), str(tmp_path / "out.npz"), "--arch", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: checkpoint" in err[0] and "is a directory" in err[0]


def test_convert_cli_checks_the_output_before_reading_the_input(tmp_path, capsys):
    from minidl.models.convert import main

    bad_input = tmp_path / "corrupt.pth"
    bad_input.write_bytes(b"PK\x03\x04 not really a zip")
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"keep")
    assert main([str(bad_input), str(blocker / "out.npz"), "--arch", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blocker is a file, not a folder" in err[0]  # the output is named
    assert main([str(bad_input), str(tmp_path), "--arch", "none"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert blocker.read_bytes() == b"keep"


# ---- minidl.load reads torch.save's format ----------------------------------------------------

def test_load_reads_what_save_format_torch_wrote(tmp_path):
    model = minidl.nn.Linear(3, 2)
    opt = minidl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(minidl.randn(4, 3)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.pt"
    minidl.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2,
                 "history": [0.5, 0.25]}, path, format="torch")
    back = minidl.load(path)
    assert back["epoch"] == 2 and back["history"] == [0.5, 0.25]
    fresh = minidl.nn.Linear(3, 2)
    fresh.load_state_dict(back["model"])
    np.testing.assert_array_equal(fresh.weight.numpy(), model.weight.numpy())
    opt2 = minidl.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    buf = opt2.state_dict()["state"][0]["momentum_buffer"]
    np.testing.assert_array_equal(minidl.as_tensor(buf).numpy(),
                                  opt.state_dict()["state"][0]["momentum_buffer"].numpy())
