#!/usr/bin/env python
"""ResNet-50's convolutions one by one, minidl against PyTorch: where a step's time goes.

    python tools/resnet_convs.py --train                     # batch 4 at 128x128, fwd and fwd+bwd
    python tools/resnet_convs.py --batch 8 --size 224        # inference
    python tools/resnet_convs.py --batch 1 --json b1.json

It runs ResNet-50 once to record the (input, filters, stride, padding) of every convolution,
then times each distinct one in this process: minidl's ``F.conv2d`` (and, with ``--train``,
forward + backward into input and weights) against ``torch.nn.functional.conv2d`` on the same
arrays. A figure is the best of ``--rounds`` medians of ``--repeats`` calls, the two frameworks
alternating round by round, so a burst of load on a shared machine shows as a slow round rather
than a slow framework. Rows are sorted by the time minidl loses on that layer times how often
the layer occurs; the total is over all of the network's convolutions. The algorithm column is
minidl's choice for that shape (``backend/cpu/conv.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def conv_shapes(batch, size):
    """Counter of (x shape, w shape, stride, padding) over ResNet-50's forward pass."""
    import minidl
    import minidl.functional as MF
    from minidl.models import resnet50

    seen = []
    forward = MF.Conv2d.forward

    def record(self, x, w, *args, **kwargs):
        seen.append((tuple(x.shape), tuple(w.shape), tuple(kwargs["stride"]),
                     tuple(kwargs["padding"])))
        return forward(self, x, w, *args, **kwargs)

    MF.Conv2d.forward = record
    try:
        with minidl.no_grad():
            resnet50().eval()(minidl.zeros(batch, 3, size, size))
    finally:
        MF.Conv2d.forward = forward
    return Counter(seen)


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def measure(shape, train, rounds, repeats, torch):
    import minidl
    import minidl.nn.functional as F
    from minidl.backend import kernels

    xs, ws, stride, padding = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs, dtype=np.float32)
    w = (rng.standard_normal(ws, dtype=np.float32) * 0.05).astype(np.float32)
    xm, wm = minidl.tensor(x, requires_grad=train), minidl.tensor(w, requires_grad=train)
    xt, wt = torch.from_numpy(x).requires_grad_(train), torch.from_numpy(w).requires_grad_(train)
    gy = None

    def m_fwd():
        if train:
            return F.conv2d(xm, wm, stride=stride, padding=padding)
        with minidl.no_grad():
            return F.conv2d(xm, wm, stride=stride, padding=padding)

    def t_fwd():
        if train:
            return torch.nn.functional.conv2d(xt, wt, stride=stride, padding=padding)
        with torch.no_grad():
            return torch.nn.functional.conv2d(xt, wt, stride=stride, padding=padding)

    def m_both():
        xm.grad = wm.grad = None
        m_fwd().backward(gy)

    def t_both():
        xt.grad = wt.grad = None
        t_fwd().backward(torch.from_numpy(gy))

    if train:
        gy = rng.standard_normal(m_fwd().shape, dtype=np.float32)
    cases = [m_fwd, t_fwd] + ([m_both, t_both] if train else [])
    for fn in cases:  # warm-up: numba compiles, buffers settle
        fn()
    best = np.full(len(cases), np.inf)
    for r in range(rounds):
        order = range(len(cases)) if r % 2 == 0 else reversed(range(len(cases)))
        for i in order:
            best[i] = min(best[i], median_ms(cases[i], repeats))
    algorithm = kernels(np).conv2d_algorithm(xs, ws, stride, padding, train)
    return algorithm, [float(v) for v in best]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=None, help="default: 4 with --train, else 8")
    ap.add_argument("--size", type=int, default=None, help="default: 128 with --train, else 224")
    ap.add_argument("--train", action="store_true", help="forward + backward as well")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--json", help="write the table here as well")
    args = ap.parse_args(argv)
    batch = args.batch or (4 if args.train else 8)
    size = args.size or (128 if args.train else 224)
    try:
        import torch
    except ImportError:
        ap.exit(2, "resnet_convs.py compares with PyTorch: pip install torch\n")
    import minidl

    minidl.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    counts = conv_shapes(batch, size)
    rows = []
    for shape, count in counts.items():
        algorithm, ms = measure(shape, args.train, args.rounds, args.repeats, torch)
        rows.append({"x": shape[0], "w": shape[1], "stride": shape[2][0], "padding": shape[3][0],
                     "count": count, "algorithm": algorithm, "minidl_fwd_ms": ms[0],
                     "torch_fwd_ms": ms[1], **({"minidl_fwd_bwd_ms": ms[2],
                                                 "torch_fwd_bwd_ms": ms[3]} if args.train else {})})
    key = "fwd_bwd_ms" if args.train else "fwd_ms"
    rows.sort(key=lambda r: -(r["minidl_" + key] - r["torch_" + key]) * r["count"])
    head = f"{'input':20s} {'filters':20s} {'s':>2s} {'n':>3s} {'algorithm':11s} {'forward ms':>20s}"
    print(f"ResNet-50 convolutions, batch {batch} at {size}x{size}, {args.threads} threads; "
          f"minidl / PyTorch, best of {args.rounds} medians of {args.repeats}")
    print(head + (f" {'fwd + bwd ms':>22s}" if args.train else ""))
    for r in rows:
        line = (f"{str(r['x']):20s} {str(r['w']):20s} {r['stride']:2d} {r['count']:3d} "
                f"{r['algorithm']:11s} {r['minidl_fwd_ms']:7.2f} / {r['torch_fwd_ms']:6.2f} "
                f"({r['minidl_fwd_ms'] / r['torch_fwd_ms']:.2f})")
        if args.train:
            line += (f" {r['minidl_fwd_bwd_ms']:7.2f} / {r['torch_fwd_bwd_ms']:6.2f} "
                     f"({r['minidl_fwd_bwd_ms'] / r['torch_fwd_bwd_ms']:.2f})")
        print(line)
    totals = {k: sum(r[k] * r["count"] for r in rows) for k in rows[0] if k.endswith("_ms")}
    print("all %d convolutions: forward %.1f / %.1f ms" % (
        sum(counts.values()), totals["minidl_fwd_ms"], totals["torch_fwd_ms"])
        + (", fwd + bwd %.1f / %.1f ms" % (totals["minidl_fwd_bwd_ms"],
                                           totals["torch_fwd_bwd_ms"]) if args.train else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": batch, "size": size, "train": args.train,
                       "threads": args.threads, "rows": rows, "totals": totals}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
