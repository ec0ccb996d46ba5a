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
    """Every test starts from the same minidl (and torch) random state, so failures reproduce
    whatever ran before it in the process. And once a test has imported PyTorch (the parity
    tests' reference), it runs on one thread: its pool otherwise shares the cores with minidl's
    numba and BLAS threads, and on a 2-vCPU machine the parity files took twice as long
    (tests/test_pytorch_examples_fifth.py and tests/test_nn_api.py: 22 s against 11 s).
    Importing it here for everyone would change the order in which the two load OpenMP, which
    minidl's tuning cares about."""
    import minidl

    minidl.manual_seed(1234)
    torch = sys.modules.get("torch")
    if torch is not None:
        # torch's generator too: a test that draws from it without seeding would otherwise
        # get whatever the files before it in this process left (pytest-xdist hands each
        # worker a different sequence of files from run to run)
        torch.manual_seed(1234)
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
    yield
    helpers = sys.modules.get("helpers")
    if helpers is not None:  # torch's quantized engine, if a parity test chose one
        helpers.put_back_quantized_engine()


@pytest.fixture(scope="session")
def host_kernels(tmp_path_factory):
    """The CUDA kernel bodies compiled for the host, which the fake GPU (tests/_fake_gpu.py)
    runs; skipped with the reason where no C++ compiler is found."""
    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path_factory.mktemp("fake_gpu"))
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    return lib
