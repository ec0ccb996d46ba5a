"""Host time per CUDA convolution call: where a small network's step is bound by the CPU.

    python tools/cudnn_overhead.py

A small conv (batch 8, 16 -> 16 channels, 3x3 at 8x8) is too little GPU work to hide the host's
share, so many calls in a row without synchronising time the host side: minidl through cuDNN's
graph API and its legacy API, minidl's im2col + cuBLAS path, and torch.nn.functional.conv2d.
Forward alone (no_grad) and forward + backward. Then the LeNet-5 training step at batch 128 and
the ResNet-50 one at batch 32 (TF32 off) with each minidl path.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import minidl  # noqa: E402
import minidl.nn.functional as F  # noqa: E402
from _common import cuda_train_step, synced_median_ms  # noqa: E402
from minidl.backend import cudnn  # noqa: E402

CALLS = 400


def per_call(fn, sync, calls=CALLS):
    fn()
    sync()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def paths():
    for name, env, on in (("cudnn graph", "graph", True), ("cudnn legacy", "legacy", True),
                          ("im2col", "graph", False)):
        cudnn.api(env)
        cudnn.enabled(on)
        yield name
    cudnn.api("graph")
    cudnn.enabled(True)


def main():
    import cupy as cp
    import torch

    print("cuDNN", cudnn.version(), "torch cuDNN", torch.backends.cudnn.version())
    torch.backends.cudnn.allow_tf32 = False
    sync = cp.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    xm = minidl.tensor(x, device="cuda", requires_grad=True)
    wm = minidl.tensor(w, device="cuda", requires_grad=True)
    xt = torch.tensor(x, device="cuda", requires_grad=True)
    wt = torch.tensor(w, device="cuda", requires_grad=True)
    print(f"us per call, {CALLS} calls unsynchronised, median of 3:")
    for name in paths():
        def fwd():
            with minidl.no_grad():
                F.conv2d(xm, wm, padding=1)

        def fwd_bwd():
            F.conv2d(xm, wm, padding=1).sum().backward()

        print(f"  minidl {name:13s} forward {per_call(fwd, sync):8.1f}   forward+backward "
              f"{per_call(fwd_bwd, sync):8.1f}")
    print(f"  torch                forward "
          f"{per_call(lambda: torch.nn.functional.conv2d(xt.detach(), wt.detach(), padding=1), torch.cuda.synchronize):8.1f}"
          f"   forward+backward "
          f"{per_call(lambda: torch.nn.functional.conv2d(xt, wt, padding=1).sum().backward(), torch.cuda.synchronize):8.1f}")
    if cudnn.graph_errors:
        print("graph plans that did not build (legacy API used):")
        for key, err in list(cudnn.graph_errors.items())[:5]:
            print("  ", key, err)

    lenet_step = cuda_train_step("lenet5", 128)
    print("LeNet-5 training step, batch 128 (us, 100 steps unsynchronised, median of 3):")
    for name in paths():
        print(f"  minidl {name:13s} {per_call(lenet_step, sync, 100):8.1f}")

    step = cuda_train_step("resnet50", 32)

    print("ResNet-50 training step, batch 32 (ms, median of 5 synchronised steps):")
    for name in paths():
        step()
        step()
        print(f"  minidl {name:13s} {synced_median_ms(step, sync):8.2f}")


if __name__ == "__main__":
    main()
