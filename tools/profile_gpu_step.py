"""Where a LeNet-5 training step on CUDA spends its time: host (Python + launches) or GPU.

    python tools/profile_gpu_step.py [--batch 1024] [--steps 200]

Prints the synchronised step time, the host time to *issue* a step without waiting for the GPU,
each phase (forward, backward, optimizer) synchronised on its own, and a cProfile of the host
side sorted by own time.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import minidl  # noqa: E402
import minidl.nn.functional as F  # noqa: E402
from _common import minidl_lenet5  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    cp = minidl.backend.require_cuda()
    sync = cp.cuda.Device().synchronize
    minidl.manual_seed(0)
    model = minidl_lenet5().to("cuda")
    opt = minidl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((args.batch, 1, 28, 28), dtype=np.float32), device="cuda")
    y = minidl.tensor(rng.integers(0, 10, args.batch), device="cuda")

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(20):
        step()
    sync()

    def timed(fn, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return np.median(ts) * 1e3

    print(f"batch {args.batch}: synchronised step median {timed(step, args.steps):.3f} ms")
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    t1 = time.perf_counter()
    sync()
    t2 = time.perf_counter()
    print(f"issue only: {(t1 - t0) / args.steps * 1e3:.3f} ms/step host; "
          f"{(t2 - t0) / args.steps * 1e3:.3f} ms/step to drain")

    phases = {"zero_grad": [], "forward": [], "backward": [], "step": []}
    for _ in range(args.steps):
        t = [time.perf_counter()]
        opt.zero_grad(); sync(); t.append(time.perf_counter())
        loss = F.cross_entropy(model(x), y); sync(); t.append(time.perf_counter())
        loss.backward(); sync(); t.append(time.perf_counter())
        opt.step(); sync(); t.append(time.perf_counter())
        for k, a, b in zip(phases, t, t[1:]):
            phases[k].append(b - a)
    print("phases (ms, median): " + ", ".join(f"{k} {np.median(v) * 1e3:.3f}" for k, v in phases.items()))

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        step()
    sync()
    prof.disable()
    st = pstats.Stats(prof)
    st.sort_stats("tottime").print_stats(35)


if __name__ == "__main__":
    main()
