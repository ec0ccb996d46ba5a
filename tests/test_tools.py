"""The measuring tools run: a tool that breaks is found here, not on the one machine (a Zen 1
VM, a GPU machine) where its figures were wanted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("mode", [[], ["--train"]], ids=["inference", "train"])
def test_lenet_layers_reports_every_layer_of_both_frameworks(tmp_path, mode):
    pytest.importorskip("torch", reason="the per-layer table compares minidl with PyTorch")
    out = tmp_path / "layers.json"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "lenet_layers.py"), "--batch", "4",
         "--repeats", "2", "--threads", "1", "--json", str(out), *mode],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    names = [name for name, _ in report["layers"]["minidl"]]
    assert names == [name for name, _ in report["layers"]["torch"]]
    assert len(names) == 12 and names[0] == "0:Conv2d" and names[-1] == "11:Linear"
    assert all(ms > 0 for rows in report["layers"].values() for _, ms in rows)
    assert report["threads"] == 1 and "cpu" in report
    assert ("forward + backward" in done.stdout) == bool(mode)
