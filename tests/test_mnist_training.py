"""Training on real MNIST (skipped without the data), the example CLI, checkpoints, resume."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl import optim
from minidl.data import DataLoader
from minidl.datasets import MNIST
from minidl.datasets import mnist as mnist_module
from minidl.examples import mnist as example
from minidl.models import lenet5, mlp

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir():
    candidates = []
    if os.environ.get("MINIDL_DATA"):
        candidates.append(Path(os.environ["MINIDL_DATA"]) / "mnist")
    candidates.append(REPO.parent / "shared" / "data" / "mnist")
    for c in candidates:
        if (c / "train-images-idx3-ubyte.gz").exists() or (c / "train-images-idx3-ubyte").exists():
            return c
    return None


MNIST_DIR = _mnist_dir()
needs_mnist = pytest.mark.skipif(
    MNIST_DIR is None,
    reason="full MNIST not found (set MINIDL_DATA to a folder holding mnist/ with the IDX files)")


@needs_mnist
def test_lenet5_learns_real_mnist():
    """A few hundred SGD steps on real MNIST: the loss falls and test accuracy passes 90%."""
    minidl.manual_seed(0)
    train, test = MNIST(MNIST_DIR, train=True), MNIST(MNIST_DIR, train=False)
    model = lenet5()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loader = DataLoader(train, batch_size=64, shuffle=True, seed=0)
    losses = []
    for step, (x, y) in enumerate(loader):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 299:
            break
    assert np.mean(losses[:20]) > 1.5  # starts near log(10) = 2.3
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    acc, _ = example.evaluate(model, test, "cpu")
    assert acc > 0.90, f"test accuracy {acc:.4f} after 300 steps"


def test_example_trains_on_embedded_sample_when_data_missing(tmp_path, monkeypatch, capsys):
    """No --data, nothing in $MINIDL_DATA or the cache, no network: trains on the sample,
    says so in one line, and the last line is the test accuracy."""
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(mnist_module, "MIRRORS", [])
    metrics = tmp_path / "m.json"
    errors = tmp_path / "errors.png"
    ckpt = tmp_path / "ckpt.npz"
    rc = example.main(["--model", "mlp", "--epochs", "2", "--no-progress", "--save", str(ckpt),
                       "--metrics-json", str(metrics), "--errors", str(errors)])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any("embedded sample (6000 train / 1000 test images)" in line for line in out)
    assert out[-1].startswith("test accuracy: ")
    acc = float(out[-1].split(": ")[1])
    assert acc > 0.85  # an MLP on 6,000 digits for two epochs
    m = json.loads(metrics.read_text())
    assert set(m) >= {"model", "epochs", "test_accuracy", "train_seconds", "history"}
    assert m["model"] == "mlp" and m["epochs"] == 2 and len(m["history"]) == 2
    assert abs(m["test_accuracy"] - acc) < 1e-4
    from PIL import Image

    assert Image.open(errors).size[0] > 0
    assert ckpt.exists() and not list(tmp_path.glob(".*tmp*"))  # no temporary file left


def test_explicit_missing_data_dir_is_an_error(tmp_path, capsys):
    assert example.main(["--data", str(tmp_path), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lacks" in err


def test_same_seed_same_accuracy_and_resume_matches_unbroken_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(mnist_module, "MIRRORS", [])
    common = ["--model", "mlp", "--no-progress", "--seed", "3", "--batch-size", "128"]

    def run(*extra):
        example.main(common + list(extra))
        return capsys.readouterr().out.strip().splitlines()[-1]

    first = run("--epochs", "2")
    second = run("--epochs", "2")
    assert first == second
    ckpt = tmp_path / "c.npz"
    run("--epochs", "1", "--save", str(ckpt))
    resumed = run("--epochs", "2", "--resume", str(ckpt))
    assert resumed == first


def test_models_shapes_and_names():
    x = minidl.tensor(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert lenet5()(x).shape == (2, 10)
    assert mlp()(x).shape == (2, 10)
    names = [n for n, _ in lenet5().named_parameters()]
    assert names[0] == "features.0.weight" and names[-1] == "classifier.5.bias"
    assert sum(p.numel() for p in lenet5().parameters()) == 61706
