"""Where a training step on CUDA spends its time: host (Python + launches) or GPU.

    python tools/profile_gpu_step.py [--model lenet5|resnet50] [--batch 1024] [--size 224]
                                     [--amp off|bf16] [--conv auto|im2col] [--steps 200]

Prints the synchronised step time (and the spread of single steps), the host time to *issue* a
step without waiting for the GPU, each phase (forward, backward, optimizer) synchronised on its
own, and a cProfile of the host side sorted by own time. For ResNet-50 a small batch (2 at
224x224, say) gives the GPU too little work to hide the host: the issue time is then the host's
cost of a step, which is what bounds the step at batch 32 or under bf16.
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
from _common import add_step_arguments, warm_cuda_step  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    add_step_arguments(ap, model="lenet5", batch=1024, amp="off")
    ap.add_argument("--conv", choices=["auto", "im2col"], default="auto",
                    help="im2col: cuDNN off (im2col + cuBLAS)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--top", type=int, default=35)
    args = ap.parse_args()
    if args.conv == "im2col":
        minidl.backends.cudnn.enabled = False
    step, sync = warm_cuda_step(args, min(20, args.steps))
    forward, opt = step.forward, step.opt

    def timed(fn, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return np.array(ts) * 1e3

    from minidl.backend import cuda, cudnn

    misses = cudnn.pack_misses[0]
    ts = timed(step, args.steps)
    print(f"cuDNN variant packs built per step: {(cudnn.pack_misses[0] - misses) / args.steps:.1f}; "
          f"kernels that fell back to ElementwiseKernel: {sorted(cuda.raw_errors) or 'none'}")
    print(f"{args.model} batch {args.batch} amp {args.amp} conv {args.conv}: synchronised step "
          f"median {np.median(ts):.3f} ms (min {ts.min():.3f}, p90 {np.percentile(ts, 90):.3f})")
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
        loss = forward(); sync(); t.append(time.perf_counter())
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
    st.sort_stats("tottime").print_stats(args.top)
    st.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
