"""docs/tutorial.md: every ```python block runs, in order, in one namespace.

The blocks read two environment variables a learner leaves unset: TUTORIAL_EPOCHS (1 here, to
keep this to seconds) and TUTORIAL_PHOTOS (a small generated photo folder). "IMAGENET1K_V2" is
found in a TORCH_HOME made for the test, holding a random-weights ResNet-50 saved by torch under
torchvision's file name: the code path is the real one, only the weights are not.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image

TUTORIAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "tutorial.md")


def _blocks():
    with open(TUTORIAL, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _photo_folder(root):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:80]
    patterns = {"stripes": np.where((yy // 6) % 2, 1.0, 0.45)[..., None] * [220, 40, 40],
                "checks": np.where((yy // 8 + xx // 8) % 2, 1.0, 0.3)[..., None] * [30, 170, 190]}
    for name, pattern in patterns.items():
        (root / name).mkdir(parents=True)
        for i in range(5):
            img = pattern * (0.8 + 0.4 * rng.random()) + rng.normal(0, 8, pattern.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.jpg")


def test_every_code_block_runs_in_order(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch", reason="torch writes the stand-in for torchvision's weights file")
    from minidl.models import resnet50

    blocks = _blocks()
    assert len(blocks) >= 10, "the tutorial's code blocks were not found"
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = {k: torch.from_numpy(np.ascontiguousarray(v.numpy())) for k, v in resnet50().state_dict().items()}
    torch.save(state, checkpoints / "resnet50-11ad3fa6.pth")
    _photo_folder(tmp_path / "photos")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TUTORIAL_EPOCHS", "1")
    monkeypatch.setenv("TUTORIAL_PHOTOS", str(tmp_path / "photos"))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__tutorial__"}
    for i, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"docs/tutorial.md block {i}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"tutorial block {i} failed: {e!r}\n{code}") from e
    out = capsys.readouterr().out
    assert "test accuracy" in out and "held-out photos" in out
    assert (tmp_path / "misclassified.png").is_file()
    assert (tmp_path / "my_classifier" / "classifier.npz").is_file()
