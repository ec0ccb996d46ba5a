"""Set-up shared by the benchmark files. The reference networks in minidl and plain torch (no
torchvision), and ``copy_weights`` that loads the torch copy from the minidl weights so both
compute the same, are the tests' own (tests/_torch_reference.py), re-exported here."""
from __future__ import annotations

import os
import sys

import numpy as np

import minidl
import minidl.optim

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _torch_reference import (  # noqa: E402,F401
    copy_weights, minidl_lenet5, minidl_mlp, torch_lenet5, torch_mlp, torch_resnet50,
)


def seeded_inputs(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def minidl_sgd(model):
    return minidl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def bench_threads() -> int:
    import numba

    # through minidl, so that numba's pool starts on the layer minidl configures
    return minidl.set_num_threads(int(os.environ.get("MINIDL_BENCH_THREADS", "0"))
                                  or numba.config.NUMBA_NUM_THREADS)


THREADS = bench_threads()


def torch_or_none():
    """PyTorch with the benchmark thread count, or None: minidl's benchmarks run without it (its
    twins and the parity checks against it are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch
