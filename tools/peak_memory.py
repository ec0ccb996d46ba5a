#!/usr/bin/env python
"""Peak memory of ResNet-50 training steps, one framework per process.

    python tools/peak_memory.py minidl --device cpu --batch 4 --size 128
    python tools/peak_memory.py torch --device cuda --batch 32 --size 224

Builds torchvision's ResNet-50 layout (minidl.models.resnet50, or the plain-torch twin in
benchmarks/_common.py), runs ``--steps`` training steps (forward in train mode, cross-entropy,
backward, SGD with momentum) and prints one JSON line: the peak in bytes and what was measured.
On the CPU that is the process's peak resident set (VmHWM), so each framework is measured in a
process of its own, imports included. On CUDA it is CuPy's memory-pool size (blocks held,
used or cached: an upper bound of what minidl had allocated) against PyTorch's
``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))


def _minidl_step(device, x, y):
    import minidl
    from _common import minidl_train_step
    from minidl.models import resnet50

    minidl.manual_seed(0)
    train = minidl_train_step(resnet50().to(device), x, y, device)
    return lambda: train().item()


def _torch_step(device, x, y):
    import torch

    from _common import torch_resnet50, torch_train_step

    torch.manual_seed(0)
    train = torch_train_step(torch, torch_resnet50().to(device), x, y, device)
    return lambda: train().item()


def _peak_rss():
    """This process's peak resident set: VmHWM, which starts afresh at exec. (ru_maxrss does
    not: a child started from a large parent reports at least the parent's peak.)"""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(framework, device="cpu", batch=4, size=128, steps=2, threads=None):
    import numpy as np

    import _common  # noqa: F401  (sets the benchmarks' thread count; --threads overrides it)

    if threads:
        import minidl
        minidl.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 1000, batch)
    if framework == "torch":
        import torch
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats()
        step = _torch_step(device, x, y)
    else:
        if device == "cuda":
            import cupy
            cupy.get_default_memory_pool().free_all_blocks()
        step = _minidl_step(device, x, y)
    for _ in range(steps):
        step()
    if device == "cpu":
        peak, kind = _peak_rss(), "peak RSS"
    elif framework == "torch":
        import torch
        peak, kind = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        import cupy
        peak, kind = cupy.get_default_memory_pool().total_bytes(), "CuPy pool bytes"
    return dict(framework=framework, device=device, batch=batch, size=size, steps=steps,
                peak_bytes=int(peak), measure=kind)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("framework", choices=["minidl", "torch"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="numba/torch threads (0: default)")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.framework, args.device, args.batch, args.size, args.steps,
                             args.threads)))


if __name__ == "__main__":
    main()
