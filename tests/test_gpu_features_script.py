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
