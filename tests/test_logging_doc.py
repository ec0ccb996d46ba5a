"""docs/logging.md: its code block runs (on a 128-image slice of the MNIST sample, one epoch)
and leaves the event files it promises."""
from __future__ import annotations

import os
import re

from minidl.datasets import MNIST

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "logging.md")


def test_the_logging_example_runs_and_writes_its_runs(tmp_path, monkeypatch, capsys):
    with open(DOC, encoding="utf-8") as f:
        (block,) = re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)
    full = MNIST.sample.__func__

    def small(cls, train=True, normalize=True):
        ds = full(cls, train=train, normalize=normalize)
        ds.images, ds.labels = ds.images[:128], ds.labels[:128]
        return ds

    monkeypatch.setattr(MNIST, "sample", classmethod(small))
    monkeypatch.setenv("LOGGING_EPOCHS", "1")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, DOC, "exec"), {"__name__": "logging_doc"})
    out = capsys.readouterr().out
    assert "epoch 1: test accuracy" in out
    run = tmp_path / "runs" / "mnist-lenet5"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["hparams"]
    (events,) = [p for p in run.iterdir() if p.name.startswith("events.out.tfevents.")]
    blob = events.read_bytes()
    for tag in (b"loss/train", b"accuracy/test", b"features.0.weight", b"inputs",
                b"notes/text_summary"):
        assert tag in blob, tag
    assert b"_hparams_/experiment" in (next((run / "hparams").iterdir())).read_bytes()
