import os
import sys

import pytest

# The test modules share tests/helpers.py and tests/_torch_parity.py; make them importable
# however pytest was started (rootdir, a single file, --import-mode=importlib).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    from hypothesis import settings

    # Modest and deadline-free: property tests must be fast and never flaky on a loaded CI box.
    settings.register_profile("minidl", max_examples=40, deadline=None, derandomize=True)
    settings.load_profile("minidl")
except ImportError:  # hypothesis is a test extra; the property tests skip without it
    pass


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same minidl random state, so failures reproduce."""
    import minidl

    minidl.manual_seed(1234)
    yield
