"""The import arrows of DESIGN.md: data and datasets never import models."""
import subprocess
import sys


def test_datasets_and_transforms_do_not_import_models():
    code = ("import sys, minidl.datasets, minidl.vision.transforms\n"
            "from minidl.datasets import ImageFolder\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('minidl.models', 'minidl.examples')))\n"
            "print(' '.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"minidl.datasets imports {out.stdout.strip()}"
