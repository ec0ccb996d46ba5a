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

from _common import THREADS, blas_in_use  # sets numba's thread count on import


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


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["minidl_threads"] = THREADS
    output_json["minidl_blas"] = blas_in_use()
    output_json["minidl_gc_freeze"] = os.environ.get("MINIDL_BENCH_GC_FREEZE", "1") != "0"
