"""tools/gpu_features_check.py's checks run here on the fake GPU (tests/_fake_gpu.py), so the
script that tools/gpu_checks.sh runs on a real GPU is known to work before a GPU is lent."""
import os
import sys

import pytest

import _fake_gpu

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


@pytest.fixture
def script(monkeypatch, host_kernels):
    _fake_gpu.install(monkeypatch, host_kernels)
    monkeypatch.syspath_prepend(TOOLS)
    import _report
    import gpu_features_check

    monkeypatch.setattr(_report, "failures", [])
    yield gpu_features_check
    sys.modules.pop("gpu_features_check", None)


def test_every_check_passes_on_the_fake_gpu(script, capsys):
    import _report

    for name, fn in script.CHECKS:
        _report.check(name, fn)
    out = capsys.readouterr().out
    assert _report.failures == [], out
    assert out.count("PASS") == len(script.CHECKS)


ROOT = os.path.dirname(TOOLS)
GPU_SCRIPTS = sorted(f for f in os.listdir(TOOLS) if f.startswith("gpu_") and f.endswith(".py"))


def _named_by_gpu_checks():
    """The tools/ files tools/gpu_checks.sh runs."""
    import re

    with open(os.path.join(TOOLS, "gpu_checks.sh")) as f:
        return sorted(set(re.findall(r"tools/([\w.]+\.(?:py|sh))", f.read())))


def test_gpu_checks_sh_names_only_files_that_exist():
    named = _named_by_gpu_checks()
    assert "gpu_features_check.py" in named and "gpu_complex_check.py" in named
    missing = [n for n in named if not os.path.exists(os.path.join(TOOLS, n))]
    assert missing == [], missing


@pytest.mark.parametrize("name", sorted(set(GPU_SCRIPTS) | {
    n for n in _named_by_gpu_checks() if n.endswith(".py")}))
def test_every_gpu_script_parses_and_imports(name, monkeypatch, host_kernels):
    """Each script the one real-GPU run uses compiles and imports (its top level: imports, the
    helpers it takes from tools/ and benchmarks/), so a lent GPU's minutes are not lost to a
    script that no longer loads; nothing runs but the module's top level."""
    import ast
    import importlib.util

    path = os.path.join(TOOLS, name)
    with open(path) as f:
        ast.parse(f.read(), path)
    _fake_gpu.install(monkeypatch, host_kernels)
    monkeypatch.setattr(sys, "path", [TOOLS] + sys.path)  # restored after: scripts extend it
    monkeypatch.setattr(sys, "argv", [path])
    spec = importlib.util.spec_from_file_location(f"_gpu_script_{name[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)) or hasattr(module, "CHECKS"), \
        f"{name}: no main() or CHECKS to run"


def test_complex_check_passes_on_the_fake_gpu(monkeypatch, host_kernels, capsys):
    _fake_gpu.install(monkeypatch, host_kernels)
    monkeypatch.syspath_prepend(TOOLS)
    import _report
    import gpu_complex_check

    monkeypatch.setattr(_report, "failures", [])
    try:
        assert gpu_complex_check.main() == 0, capsys.readouterr().out
    finally:
        sys.modules.pop("gpu_complex_check", None)
