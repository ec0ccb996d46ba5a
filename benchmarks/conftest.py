"""Shared set-up for ``pytest benchmarks --benchmark-only``.

Every minidl benchmark has a PyTorch twin on the same inputs, in the same run and the same
pytest-benchmark group, so ``tools/bench_ratios.py`` can print minidl/PyTorch per group.

Garbage collection: minidl builds its graph from Python objects and PyTorch in C++, so minidl
triggers CPython's collector and PyTorch hardly does. A full collection walks every object in the
process, and pytest with torch loaded holds ~400k of them (a minidl script holds a fraction):
one full collection took 140 ms there, landing in whichever round it hit. The session
therefore calls ``gc.freeze()`` once everything is imported, so collections still run and still
count for minidl's own objects but no longer rescan pytest's and torch's long-lived heap (what a
long-running training process would do too). ``MINIDL_BENCH_GC_FREEZE=0`` turns this off.

Fairness: PyTorch is limited to the thread count numba uses (numba's default is one thread per
core, as is OpenBLAS's, the BLAS under numpy.matmul), so both sides get the same cores.
``MINIDL_BENCH_THREADS=k`` sets that count for numba and PyTorch (set OPENBLAS_NUM_THREADS=k
too, before Python starts, to limit numpy's BLAS).
"""
from __future__ import annotations

import gc
import os

import pytest

from _common import THREADS  # sets numba's thread count on import


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: no twin to compare with")
    torch.set_num_threads(THREADS)
    return torch


def pytest_collection_finish(session):
    if os.environ.get("MINIDL_BENCH_GC_FREEZE", "1") != "0":
        try:
            import torch  # noqa: F401  (its import is part of the heap to freeze)
        except ImportError:
            pass
        gc.collect()
        gc.freeze()


def pytest_report_header(config):
    return f"minidl benchmarks: numba threads = torch threads = {THREADS}"


def blas_in_use():
    """What numpy's BLAS runs as: OpenBLAS's core name (the kernel set it picked, or the one
    OPENBLAS_CORETYPE forces) and configuration, and the environment variables that steer it.
    Ratios against PyTorch (which brings its own GEMMs) move with this from machine to machine,
    so every benchmark run records it."""
    import ctypes

    import numpy as np

    from minidl.backend.cpu.tuning import openblas_libraries

    np.ones((2, 2)) @ np.ones((2, 2))  # make sure numpy's BLAS is loaded
    out = {"env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                              "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                   if k in os.environ}, "openblas": []}
    for path, lib in openblas_libraries():
        entry = {"path": os.path.basename(path)}
        for field in ("corename", "config"):
            # plain OpenBLAS, or the scipy-openblas build numpy's wheels ship (prefixed, 64-bit)
            for name in (f"openblas_get_{field}", f"scipy_openblas_get_{field}64_"):
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    entry[field] = fn().decode(errors="replace")
                    break
        out["openblas"].append(entry)
    return out


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["minidl_threads"] = THREADS
    output_json["minidl_blas"] = blas_in_use()
    output_json["minidl_gc_freeze"] = os.environ.get("MINIDL_BENCH_GC_FREEZE", "1") != "0"
