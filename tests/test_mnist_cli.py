"""The MNIST example as a command-line tool: progress output, output paths checked before the
first step, one-line errors with exit status 2, resume through the public API only."""
import ast
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import minidl
from minidl.datasets import MNIST
from minidl.examples import mnist as example
from minidl.serialization import save_npz

EXAMPLE_SOURCE = Path(example.__file__)


def _write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    """A folder of the four IDX files holding 96 training and 32 test digits (fast to train)."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    train, test = MNIST.sample(train=True), MNIST.sample(train=False)
    _write_idx(folder / "train-images-idx3-ubyte", train.images[:96])
    _write_idx(folder / "train-labels-idx1-ubyte", train.labels[:96])
    _write_idx(folder / "t10k-images-idx3-ubyte", test.images[:32])
    _write_idx(folder / "t10k-labels-idx1-ubyte", test.labels[:32])
    return folder


def _run(capsys, *argv):
    rc = example.main(["--model", "mlp", "--batch-size", "32", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _np(value):
    return value.numpy() if isinstance(value, minidl.Tensor) else np.asarray(value)


def _assert_one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any work starts (the model is built right before the first step)."""
    def refuse(name):
        raise AssertionError("work started before the bad argument was reported")
    monkeypatch.setattr(example, "build_model", refuse)


# ---- item 5: progress bars only on a terminal --------------------------------------------------
class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_no_progress_bar_when_stderr_is_not_a_terminal(tiny_mnist, capsys):
    rc, out, err = _run(capsys, "--data", tiny_mnist, "--epochs", 2)
    assert rc == 0
    assert err == ""  # a log or a redirect gets no bar at all
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2  # one line per epoch instead


def test_progress_bar_on_a_terminal(tiny_mnist, capsys, monkeypatch):
    terminal = _FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert example.main(["--model", "mlp", "--data", str(tiny_mnist), "--epochs", "1"]) == 0
    assert "epoch 1/1" in terminal.getvalue() and "batch" in terminal.getvalue()
    terminal = _FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    example.main(["--model", "mlp", "--data", str(tiny_mnist), "--epochs", "1", "--no-progress"])
    assert terminal.getvalue() == ""


# ---- item 14: output paths checked before the first step ---------------------------------------
def test_unwritable_output_paths_fail_before_work(tiny_mnist, tmp_path, capsys, no_training):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for flag in ("--save", "--metrics-json"):
        rc, _, err = _run(capsys, "--data", tiny_mnist, flag, blocker / "out")
        assert rc == 2
        _assert_one_error_line(err, flag, blocker)
    rc, _, err = _run(capsys, "--data", tiny_mnist, "--save", tmp_path)  # a directory
    assert rc == 2
    _assert_one_error_line(err, "is a directory")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        rc, _, err = _run(capsys, "--data", tiny_mnist, "--save", locked / "c.npz")
        assert rc == 2
        _assert_one_error_line(err, "--save", locked)


def test_errors_must_be_a_png_path(tiny_mnist, tmp_path, capsys, no_training):
    with pytest.raises(SystemExit) as exit_info:
        _run(capsys, "--data", tiny_mnist, "--errors", tmp_path / "x.txt")
    assert exit_info.value.code == 2
    assert "error: --errors writes a PNG image" in capsys.readouterr().err


def test_missing_output_folders_are_made_up_front(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    rc, _, _ = _run(capsys, "--data", tiny_mnist, "--epochs", 1, "--metrics-json",
                    tmp_path / "metrics" / "m.json", "--errors", out / "e.PNG",
                    "--save", out / "c.npz")
    assert rc == 0
    assert json.loads((tmp_path / "metrics" / "m.json").read_text())["epochs"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["c.npz", "e.PNG"]


# ---- item 15: one error line and status 2 instead of a traceback -------------------------------
def test_corrupt_mnist_file_is_one_error_line(tiny_mnist, capsys):
    bad = tiny_mnist / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    rc, _, err = _run(capsys, "--data", tiny_mnist)
    assert rc == 2
    _assert_one_error_line(err, bad, "truncated")


def test_missing_data_folder_is_status_2(tmp_path, capsys):
    rc, _, err = _run(capsys, "--data", tmp_path / "nowhere")
    assert rc == 2
    assert err.startswith("error: ") and "lacks" in err


def test_every_resume_failure_is_one_error_line(tiny_mnist, tmp_path, capsys):
    ckpt = tmp_path / "lenet.npz"
    assert example.main(["--model", "lenet5", "--data", str(tiny_mnist), "--epochs", "1",
                         "--batch-size", "32", "--save", str(ckpt)]) == 0
    capsys.readouterr()
    not_a_checkpoint = tmp_path / "weights.npz"
    minidl.save({"w": np.ones(2)}, not_a_checkpoint)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 nope")
    bad_history = tmp_path / "bad_history.npz"
    state = minidl.load(ckpt)
    state["history"] = {"not": "a list"}
    minidl.save(state, bad_history)
    bad_epoch = tmp_path / "bad_epoch.npz"
    state["epoch"] = -1
    minidl.save(state, bad_epoch)
    a_tensor = tmp_path / "tensor.npz"
    minidl.save(minidl.ones(2), a_tensor)
    for path, why in [(tmp_path / "missing.npz", "does not exist"),
                      (garbage, "not a valid .npz"),
                      (not_a_checkpoint, "no epoch"),
                      (a_tensor, "holds a Tensor"),
                      (bad_epoch, "its epoch is -1"),
                      (ckpt, "Error(s) in loading state_dict"),  # a LeNet-5 checkpoint for the MLP
                      (bad_history, "bad_history.npz")]:
        rc, _, err = _run(capsys, "--data", tiny_mnist, "--resume", path)
        assert rc == 2, path
        _assert_one_error_line(err, path, why)


# ---- item 16: silent nonsense becomes an error --------------------------------------------------
@pytest.mark.parametrize("split", ["train", "t10k"])
def test_an_empty_split_is_an_error(tiny_mnist, capsys, split):
    _write_idx(tiny_mnist / f"{split}-images-idx3-ubyte", np.zeros((0, 28, 28)))
    _write_idx(tiny_mnist / f"{split}-labels-idx1-ubyte", np.zeros((0,)))
    rc, out, err = _run(capsys, "--data", tiny_mnist)
    assert rc == 2
    _assert_one_error_line(err, "training" if split == "train" else "test", "holds no images")
    assert "accuracy" not in out


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-inf"),
                                         ("--momentum", "nan"), ("--weight-decay", "inf"),
                                         ("--batch-size", "2.7")])
def test_non_finite_or_fractional_arguments_are_refused(flag, value, capsys, no_training):
    with pytest.raises(SystemExit) as exit_info:
        example.main([flag, value])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


# ---- item 2: --resume through the public API -----------------------------------------------------
def test_resume_continues_exactly_and_checkpoints_hold_the_optimizer_state_dict(
        tiny_mnist, tmp_path, capsys):
    common = ["--data", tiny_mnist, "--seed", 5, "--batch-size", 16]
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    assert _run(capsys, *common, "--epochs", 3, "--save", full)[0] == 0
    assert _run(capsys, *common, "--epochs", 1, "--save", part)[0] == 0
    state = minidl.load(part)
    assert sorted(state) == ["epoch", "history", "model", "optimizer"] and state["epoch"] == 1
    groups = state["optimizer"]["param_groups"]
    assert groups[0]["params"] == list(range(len(groups[0]["params"]))) and groups[0]["nesterov"]
    assert "momentum_buffer" in state["optimizer"]["state"][0]
    assert _run(capsys, *common, "--epochs", 3, "--resume", part, "--save", part)[0] == 0
    a, b = minidl.load(full), minidl.load(part)
    assert a["epoch"] == b["epoch"] == 3 and len(a["history"]) == len(b["history"]) == 3
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for key in a["model"]:
        np.testing.assert_array_equal(_np(a["model"][key]), _np(b["model"][key]),
                                      err_msg=key)
    for i, entries in a["optimizer"]["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(_np(value), _np(b["optimizer"]["state"][i][key]),
                                          err_msg=f"optimizer state {i}.{key}")


def test_a_checkpoint_loads_the_way_a_pytorch_script_reads_one(tiny_mnist, tmp_path, capsys):
    """--save writes {"model", "optimizer", "epoch", "history"}: the model rebuilt in a script
    takes ``state["model"]`` and gives the accuracy the run printed."""
    from minidl.models import lenet5

    ckpt = tmp_path / "c.npz"
    rc, out, _ = _run(capsys, "--data", tiny_mnist, "--model", "lenet5", "--epochs", 1,
                      "--batch-size", 16, "--save", ckpt)
    assert rc == 0
    net = lenet5()
    net.load_state_dict(minidl.load(ckpt)["model"])
    assert all(isinstance(v, minidl.Tensor) for v in minidl.load(ckpt)["model"].values())


def test_checkpoints_from_before_optimizer_state_dicts_still_resume(tiny_mnist, tmp_path, capsys):
    common = ["--data", tiny_mnist, "--seed", 5, "--batch-size", 16]
    ckpt = tmp_path / "c.npz"
    assert _run(capsys, *common, "--epochs", 1, "--save", ckpt)[0] == 0
    state = minidl.load(ckpt)
    flat = {f"model.{k}": _np(v) for k, v in state["model"].items()}
    flat["meta.epoch"] = np.array(state["epoch"])
    flat["meta.history"] = np.frombuffer(json.dumps(state["history"]).encode(), dtype=np.uint8)
    oldest = dict(flat)
    for i, entries in state["optimizer"]["state"].items():
        for key, value in entries.items():
            flat[f"optimizer.state.{i}.{key}"] = _np(value)
            oldest[f"optim.{i}.{key}"] = _np(value)
    flat["optimizer.param_groups"] = np.frombuffer(
        json.dumps(state["optimizer"]["param_groups"]).encode(), dtype=np.uint8)
    for layout in (flat, oldest):  # stop 27's flat layout, and the one before state_dict()
        save_npz(layout, ckpt)
        rc, out, _ = _run(capsys, *common, "--epochs", 2, "--resume", ckpt)
        assert rc == 0 and "resumed from" in out


def test_the_example_uses_no_private_attributes():
    """--resume used to replay the DataLoader's private generator; the example is meant to be
    read as a model of the public API."""
    tree = ast.parse(EXAMPLE_SOURCE.read_text())
    private = [(node.lineno, node.attr) for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr.startswith("_")
               and not (node.attr.startswith("__") and node.attr.endswith("__"))]
    assert private == []


def _fresh_kernel(module):
    """A numba function defined as if in ``module``, compiled on its first call (no cache)."""
    import numba

    scope = {"__name__": module}
    exec("def twice(x):\n    return 2 * x\n", scope)
    return numba.njit(cache=False)(scope["twice"])


def test_compile_notice_speaks_once_when_numba_compiles_a_minidl_kernel():
    """A cold numba cache makes the first step take half a minute: one line says why, as the
    compiling starts. A kernel already compiled (a warm cache), a compile outside minidl and a
    CUDA run say nothing, and after done() nothing more is heard."""
    import io

    from minidl.examples import CompileNotice

    cold, warm, theirs, gpu, after = (io.StringIO() for _ in range(5))
    with CompileNotice("cpu", stream=cold):
        kernel = _fresh_kernel("minidl.backend.cpu._notice_probe")
        assert kernel(2) == 4 and kernel(3) == 6 and kernel(2.5) == 5.0  # two compiles, one line
    assert cold.getvalue().count("compiling minidl's CPU kernels") == 1
    with CompileNotice("cpu", stream=warm):
        assert kernel(4) == 8  # already compiled for int
    with CompileNotice("cpu", stream=theirs):
        assert _fresh_kernel("user_script")(1) == 2
    with CompileNotice("cuda", stream=gpu):
        assert _fresh_kernel("minidl.backend.cpu._notice_probe")(1) == 2
    notice = CompileNotice("cpu", stream=after)
    notice.done()
    assert _fresh_kernel("minidl.backend.cpu._notice_probe")(1) == 2
    assert warm.getvalue() == theirs.getvalue() == gpu.getvalue() == after.getvalue() == ""
