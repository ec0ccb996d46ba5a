"""Where the host waits for the GPU inside a CUDA training step.

    python tools/host_waits.py [--model resnet50] [--batch 64] [--amp bf16] [--steps 5]

A step whose synchronised time is well above both its host time (the same step at a tiny batch)
and its GPU kernel time has a call in it that blocks the host until the GPU catches up (a copy
from pageable memory, a read-back, cudaFree, a library call that synchronises). This times every
op's forward and backward, every function of minidl.backend.cuda and .cudnn, and every
allocation from CuPy's pool, call by call, over a few synchronised steps, and prints the calls
that took longest: a blocking call stands out by milliseconds where its kind takes microseconds.
"""
from __future__ import annotations

import argparse
import collections
import functools
import inspect
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import minidl  # noqa: E402
from _common import add_step_arguments, warm_cuda_step  # noqa: E402
from minidl import autograd  # noqa: E402
from minidl.backend import cuda, cudnn  # noqa: E402

records = []  # (start, seconds, name)
_depth = [0]


def _timed(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        _depth[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _depth[0] -= 1
            records.append((t0, time.perf_counter() - t0, name, _depth[0]))
    return wrapper


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def instrument(cp):
    for cls in set(_subclasses(autograd.Function)):
        for meth in ("forward", "backward"):
            if meth in vars(cls):
                setattr(cls, meth, _timed(f"{cls.__name__}.{meth}", vars(cls)[meth]))
    for mod in (cuda, cudnn):
        for name, fn in list(vars(mod).items()):
            if inspect.isfunction(fn) and fn.__module__ == mod.__name__:
                setattr(mod, name, _timed(f"{mod.__name__.rsplit('.', 1)[1]}.{name}", fn))
    for cls_name in ("_GraphPlan", "Graph", "_Graph"):
        cls = getattr(cudnn, cls_name, None)
        if cls is not None and "execute" in vars(cls):
            cls.execute = _timed(f"cudnn.{cls_name}.execute", vars(cls)["execute"])
    pool = cp.get_default_memory_pool()
    malloc = _timed("cupy pool malloc", pool.malloc)
    cp.cuda.set_allocator(malloc)
    return pool


def main():
    ap = argparse.ArgumentParser()
    add_step_arguments(ap)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    cp = minidl.backend.require_cuda()
    step, sync = warm_cuda_step(args)
    def synced_steps():
        """Each of args.steps steps, synchronised, in ms, as one string."""
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(f"{(time.perf_counter() - t0) * 1e3:.1f}")
        return " ".join(times)

    pool = cp.get_default_memory_pool()
    before = pool.total_bytes()
    plain = synced_steps()
    print(f"{args.model} b{args.batch} amp {args.amp}: synchronised steps (ms) {plain}; "
          f"pool grew {(pool.total_bytes() - before) / 2**20:.1f} MiB over them")

    instrument(cp)
    step()
    sync()
    records.clear()
    print(f"instrumented steps (ms) {synced_steps()}")
    per = collections.defaultdict(list)
    for _, dt, name, _ in records:
        per[name].append(dt)
    print(f"\nper name, per step: calls, total ms, max ms, calls over 1 ms (top {args.top} by total)")
    rows = sorted(per.items(), key=lambda kv: -sum(kv[1]))[:args.top]
    for name, ts in rows:
        ts = np.array(ts)
        print(f"  {name:45s} {len(ts) / args.steps:7.1f} {ts.sum() / args.steps * 1e3:9.3f} "
              f"{ts.max() * 1e3:8.3f} {(ts > 1e-3).sum() / args.steps:6.1f}")
    print("\nthe longest single calls (outermost first when nested):")
    for t0, dt, name, depth in sorted(records, key=lambda r: -r[1])[:args.top]:
        print(f"  {dt * 1e3:8.3f} ms  depth {depth}  {name}")


if __name__ == "__main__":
    main()
