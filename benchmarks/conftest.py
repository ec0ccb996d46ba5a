"""Shared set-up for ``pytest benchmarks --benchmark-only``.

Every minidl benchmark has a PyTorch twin on the same inputs, in the same run and the same
pytest-benchmark group, so ``tools/bench_ratios.py`` can print minidl/PyTorch per group.

Fairness: PyTorch is limited to the thread count numba uses (numba's default is one thread per
core, as is OpenBLAS's, the BLAS under numpy.matmul), so both sides get the same cores.
``MINIDL_BENCH_THREADS=k`` sets that count for numba and PyTorch (set OPENBLAS_NUM_THREADS=k
too, before Python starts, to limit numpy's BLAS).
"""
from __future__ import annotations

import os

import pytest


def bench_threads() -> int:
    import numba

    n = int(os.environ.get("MINIDL_BENCH_THREADS", "0")) or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(n)
    return n


THREADS = bench_threads()


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: no twin to compare with")
    torch.set_num_threads(THREADS)
    return torch


def pytest_report_header(config):
    return f"minidl benchmarks: numba threads = torch threads = {THREADS}"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["minidl_threads"] = THREADS
