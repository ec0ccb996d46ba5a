"""A CUDA training step's timeline: how busy the GPU is, and which CUDA API calls the host
spends its time in.

    python tools/gpu_timeline.py [--model resnet50] [--batch 64] [--amp bf16] [--trace FILE]

torch.profiler records CUPTI's activity for the whole process, so CuPy's and cuDNN's kernels and
the CUDA runtime/driver calls that minidl makes are in it. For two steps this prints the GPU's
busy time (the union of kernel, memcpy and memset intervals) against the steps' span, the longest
idle gaps, and the runtime calls by host time: a host that waits for the GPU shows up as long
launch calls (a full launch queue) or as synchronising calls; a GPU that waits for the host shows
up as idle time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

from _common import add_step_arguments, warm_cuda_step  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    add_step_arguments(ap)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--trace", help="also keep the Chrome trace here")
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    step, sync = warm_cuda_step(args)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        sync()
    path = args.trace or os.path.join(tempfile.mkdtemp(), "trace.json")
    prof.export_chrome_trace(path)
    with open(path) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    gpu = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                 if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    runtime = [e for e in events if e.get("cat") == "cuda_runtime" or e.get("cat") == "cuda_driver"]
    host = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver", "python_function",
                                                   "cpu_op", "user_annotation")]
    start = min(e["ts"] for e in host) if host else gpu[0][0]
    end = max(g[1] for g in gpu)
    busy, gaps, cur_s, cur_e = 0.0, [], None, None
    for s, e, name in gpu:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
                gaps.append((s - cur_e, cur_e - start, name))
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += cur_e - cur_s
    kernels = sum(e - s for s, e, _ in gpu)
    span = end - start
    print(f"{args.model} b{args.batch} amp {args.amp}, {args.steps} steps: span {span / 1e3:.2f} ms "
          f"({span / args.steps / 1e3:.2f} per step), GPU busy {busy / 1e3:.2f} ms "
          f"({100 * busy / span:.0f}%), kernel+copy time {kernels / 1e3:.2f} ms, "
          f"{len(gpu)} GPU activities")
    gaps.sort(reverse=True)
    idle = sum(g for g, _, _ in gaps)
    print(f"GPU idle {idle / 1e3:.2f} ms in {len(gaps)} gaps; gaps over 50 us: "
          f"{sum(1 for g in gaps if g[0] > 50)} totalling {sum(g for g, _, _ in gaps if g > 50) / 1e3:.2f} ms")
    print("longest gaps (us, at ms from start, before kernel):")
    for g, at, name in gaps[:12]:
        print(f"  {g:9.1f}  {at / 1e3:8.2f}  {name[:80]}")
    per = collections.defaultdict(list)
    for e in runtime:
        per[e["name"]].append(e["dur"])
    print("\nCUDA API calls on the host (count, total ms, mean us, max us):")
    for name, ds in sorted(per.items(), key=lambda kv: -sum(kv[1]))[:15]:
        ds = np.array(ds)
        print(f"  {name[:40]:40s} {len(ds):6d} {ds.sum() / 1e3:9.2f} {ds.mean():8.1f} {ds.max():9.1f}")
    del torch


if __name__ == "__main__":
    main()
