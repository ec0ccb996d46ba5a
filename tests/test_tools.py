"""The measuring tools run: a tool that breaks is found here, not on the one machine (a Zen 1
VM, a GPU machine) where its figures were wanted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(name, *args, timeout=300):
    """``python tools/<name> args...`` from the repository root; asserts that it succeeded."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("mode", [[], ["--train"]], ids=["inference", "train"])
def test_lenet_layers_reports_every_layer_of_both_frameworks(tmp_path, mode):
    pytest.importorskip("torch", reason="the per-layer table compares minidl with PyTorch")
    out = tmp_path / "layers.json"
    done = run_tool("lenet_layers.py", "--batch", "4", "--repeats", "2", "--threads", "1",
                    "--json", str(out), *mode)
    report = json.loads(out.read_text())
    names = [name for name, _ in report["layers"]["minidl"]]
    assert names == [name for name, _ in report["layers"]["torch"]]
    assert len(names) == 12 and names[0] == "0:Conv2d" and names[-1] == "11:Linear"
    assert all(ms > 0 for rows in report["layers"].values() for _, ms in rows)
    assert report["threads"] == 1 and "cpu" in report
    assert ("forward + backward" in done.stdout) == bool(mode)


def test_lenet_layers_holds_numba_to_avx2(tmp_path):
    """``--isa avx2`` runs the tool again with numba held to AVX2 code: the report says which
    vector registers numba's code uses, and they are not AVX-512's."""
    try:
        with open("/proc/cpuinfo") as f:
            has_avx2 = " avx2" in f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo: cannot tell whether this CPU has AVX2")
    if not has_avx2:
        pytest.skip("this CPU has no AVX2 to hold the libraries to")
    out = tmp_path / "layers.json"
    done = run_tool("lenet_layers.py", "--isa", "avx2", "--batch", "2", "--repeats", "1",
                    "--threads", "1", "--json", str(out), timeout=600)
    report = json.loads(out.read_text())
    assert report["isa"] == "avx2"
    assert report["numba_vector_registers"] == "ymm"
    assert "ISA held to AVX2" in done.stdout


def test_lenet_layers_prints_the_avx2_environment_for_other_commands():
    done = run_tool("lenet_layers.py", "--isa", "avx2", "--print-env", timeout=120)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.split("\n")
                   if line)
    assert "-avx512f" in exports["NUMBA_CPU_FEATURES"].split(",")
    assert exports["ATEN_CPU_CAPABILITY"] == "avx2" and exports["OPENBLAS_CORETYPE"] == "Zen"


@pytest.mark.parametrize("mode", [[], ["--train"]], ids=["inference", "train"])
def test_resnet_convs_times_every_distinct_convolution(tmp_path, mode):
    pytest.importorskip("torch", reason="the per-convolution table compares minidl with PyTorch")
    out = tmp_path / "convs.json"
    done = run_tool("resnet_convs.py", "--batch", "1", "--size", "32", "--rounds", "1",
                    "--repeats", "1", "--threads", "1", "--json", str(out), *mode)
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert sum(r["count"] for r in rows) == 53  # ResNet-50's convolutions, stem to layer4
    assert len({(tuple(r["x"]), tuple(r["w"]), r["stride"]) for r in rows}) == len(rows)
    assert any(r["w"] == [64, 3, 7, 7] and r["stride"] == 2 for r in rows)  # the stem
    keys = ["minidl_fwd_ms", "torch_fwd_ms"] + (["minidl_fwd_bwd_ms", "torch_fwd_bwd_ms"]
                                                 if mode else [])
    assert all(r[k] > 0 for r in rows for k in keys)
    assert report["train"] == bool(mode) and "all 53 convolutions" in done.stdout


def test_solo_ratios_times_each_framework_in_its_own_process():
    pytest.importorskip("torch", reason="solo_ratios compares with PyTorch")
    out = run_tool("solo_ratios.py", "--cases", "mlp_step,encoder_step", "--reps", "2").stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert sorted(rows) == ["encoder_step", "mlp_step"]
    for minidl_ms, torch_ms, ratio in rows.values():
        assert float(minidl_ms) > 0 and float(torch_ms) > 0
        # the times print rounded to 0.1 ms; the ratio is of the unrounded ones
        assert float(ratio) == pytest.approx(float(minidl_ms) / float(torch_ms), rel=0.15,
                                             abs=0.02)
