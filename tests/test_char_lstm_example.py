"""The char_lstm example runs briefly (--steps) and its loss falls; bad options exit with 2."""
from __future__ import annotations

import re

import pytest

from minidl.examples import char_lstm


def test_char_lstm_loss_falls_and_samples(capsys):
    assert char_lstm.main(["--steps", "40", "--print-every", "10", "--sample-len", "30",
                           "--hidden", "64"]) == 0
    out = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", out)[1:]]  # [0]: the uniform guess
    assert len(losses) == 5  # step 1, 10, 20, 30, 40
    assert losses[-1] < losses[0] - 0.8, out
    sample = re.search(r"^sample: (.*)$", out, re.M)
    assert sample and len(sample.group(1)) >= 30


def test_char_lstm_trains_on_a_file_and_returns_losses(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabcabd " * 40, encoding="utf-8")
    args = char_lstm.parse_args(["--text", str(path), "--steps", "30", "--seq-len", "12",
                                 "--hidden", "32", "--sample-len", "0"])
    with open(tmp_path / "log.txt", "w") as log:
        losses = char_lstm.train(args, out=log)
    assert "step    30/30" in (tmp_path / "log.txt").read_text()
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < 0.5 * losses[0]


@pytest.mark.parametrize("argv,message", [
    (["--steps", "-1"], "--steps must be >= 1"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--text", "/nonexistent/x.txt"], "cannot read --text"),
    (["--seq-len", "100000"], "needs at least"),
])
def test_char_lstm_bad_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        char_lstm.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and message in err
