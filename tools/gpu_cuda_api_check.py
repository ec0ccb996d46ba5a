"""Real-GPU checks of minidl.cuda's torch.cuda surface and of DLPack on CUDA, which the tests
run on the fake GPU only (tests/test_cuda_api.py): streams and events on CuPy's, device
properties, memory figures, the CUDA random state, OutOfMemoryError from CuPy's pool, NVTX,
and sharing GPU memory with CuPy (and torch, where it has CUDA) through DLPack.

    python tools/gpu_cuda_api_check.py

Prints one PASS/FAIL line per check; exits 1 if any failed. (tools/gpu_checks.sh's api step
runs it.)"""
from __future__ import annotations

import sys

import numpy as np

import minidl
import minidl.nn.functional as F
from _report import check, summary


def streams_and_events():
    cuda = minidl.cuda
    a = minidl.randn(2048, 2048, device="cuda")
    s = cuda.Stream(priority=-1)
    start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
    s.wait_stream(cuda.current_stream())  # a was made on the current stream
    with cuda.stream(s):
        inside = cuda.current_stream() == s
        start.record()
        b = a @ a
        end.record()
    cuda.current_stream().wait_stream(s)
    end.synchronize()
    ms = start.elapsed_time(end)
    back = cuda.current_stream() == cuda.default_stream()
    expect = (a.cpu().numpy().astype(np.float64) @ a.cpu().numpy().astype(np.float64))
    close = np.allclose(b.cpu().numpy(), expect, rtol=1e-3, atol=1e-2)
    ok = inside and back and ms > 0 and end.query() and s.query() and close
    return ok, f"matmul on a stream {ms:.3f} ms, inside={inside}, restored={back}, close={close}"


def properties_and_memory():
    cuda = minidl.cuda
    p = cuda.get_device_properties()
    cp = minidl.backend.require_cuda()
    cc = cp.cuda.Device().compute_capability
    free, total = cuda.mem_get_info()
    stats = cuda.memory_stats()
    ok = (p.total_memory == total and f"{p.major}{p.minor}" == cc and p.multi_processor_count > 0
          and 0 < free <= total and stats["allocated_bytes.all.current"] >= 0
          and "Allocated memory" in cuda.memory_summary()
          and cuda.get_arch_list() == [f"sm_{cc}"] and cuda.is_initialized())
    return ok, f"{p!r}; free {free / 2**30:.1f} of {total / 2**30:.1f} GiB"


def random_state():
    cuda = minidl.cuda
    minidl.manual_seed(0)
    x = minidl.ones(4096, device="cuda")
    state = cuda.get_rng_state()
    first = (minidl.randn(8, device="cuda").cpu().numpy(), F.dropout(x, 0.5).cpu().numpy())
    cuda.set_rng_state(state)
    again = (minidl.randn(8, device="cuda").cpu().numpy(), F.dropout(x, 0.5).cpu().numpy())
    ok = all(np.array_equal(u, v) for u, v in zip(first, again))
    return ok, "randn and GPU dropout repeat after set_rng_state"


def out_of_memory():
    cuda = minidl.cuda
    before = cuda.memory_stats()["num_ooms"]
    total = cuda.mem_get_info()[1]
    cuda.set_per_process_memory_fraction((cuda.memory_reserved() + 64 * 2**20) / total)
    error = None
    try:
        minidl.zeros(64 * 2**20, device="cuda")  # 256 MiB against a cap 64 MiB above use
    except cuda.OutOfMemoryError as e:
        error = e
    finally:
        cuda.set_per_process_memory_fraction(1.0)
    if error is None:
        return False, "256 MiB were allocated under a cap 64 MiB above what the pool held"
    ok = cuda.memory_stats()["num_ooms"] == before + 1 and isinstance(error, RuntimeError)
    return ok, str(error)[:120]


def nvtx():
    depth = minidl.cuda.nvtx.range_push("check")
    minidl.cuda.nvtx.mark("here")
    with minidl.cuda.nvtx.range("inner {}", 1):
        pass
    return minidl.cuda.nvtx.range_pop() == depth == 0, "push/mark/range/pop"


def dlpack():
    cp = minidl.backend.require_cuda()
    t = minidl.arange(6.0, device="cuda")
    c = cp.from_dlpack(t)
    c[0] = 42.0
    shared = float(t[0].item()) == 42.0
    back = minidl.from_dlpack(cp.arange(3, dtype=cp.float32))
    ok = shared and back.device == "cuda" and t.__dlpack_device__()[0] == 2
    detail = f"CuPy shares minidl's memory: {shared}"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        tt = torch.from_dlpack(t)
        tt[1] = -1.0
        m = minidl.from_dlpack(torch.ones(3, device="cuda"))
        with_torch = float(t[1].item()) == -1.0 and m.device == "cuda"
        ok = ok and with_torch
        detail += f"; torch shares it both ways: {with_torch}"
    return ok, detail


CHECKS = [("streams and events", streams_and_events),
          ("device properties and memory", properties_and_memory),
          ("CUDA random state", random_state), ("OutOfMemoryError", out_of_memory),
          ("nvtx", nvtx), ("dlpack on CUDA", dlpack)]


if __name__ == "__main__":
    if not minidl.cuda.is_available():
        print("SKIP no GPU")
        sys.exit(0)
    for name, fn in CHECKS:
        check(name, fn)
    sys.exit(summary())
