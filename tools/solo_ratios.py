"""Training and inference steps timed with each framework alone in its own process.

    python tools/solo_ratios.py [--reps 15] [--threads N] [--cases lenet_step,encoder_step]

Why: in one process the two frameworks share more than the cores. minidl's first CPU op loads
the system's GNU OpenMP runtime for numba, and PyTorch's wheel, whose libgomp.so.1 has the same
soname, then runs on that one too. numba's pool also turned OpenMP nesting on there, which made
a PyTorch Transformer-encoder step take 219-240 ms instead of 25 ms (2-vCPU Zen 4); minidl now
sets nesting back to one level (backend/cpu/tuning.py), and the two agree again, but any such
process-wide state can skew pytest-benchmark's twins, which share one process. Here each
(case, framework) runs in a fresh interpreter; the PyTorch process never runs a minidl op
(checked: the system libgomp must not be loaded there). Prints one line per case: the median
step time of each and minidl / PyTorch."""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = ["lenet_step", "lenet_infer", "mlp_step", "encoder_step", "lstm_step", "mobilenet_step"]


def _inputs(case):
    import numpy as np

    rng = np.random.default_rng(0)
    if case == "lenet_step":
        return rng.standard_normal((128, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 128)
    if case == "lenet_infer":
        return rng.standard_normal((1000, 1, 28, 28), dtype=np.float32), None
    if case == "mlp_step":
        return rng.standard_normal((128, 784), dtype=np.float32), rng.integers(0, 10, 128)
    if case == "mobilenet_step":
        from _mobile_models import BATCH, CLASSES, SIZE

        return (rng.standard_normal((BATCH, 3, SIZE, SIZE), dtype=np.float32),
                rng.integers(0, CLASSES, BATCH))
    from _sequence_models import (BATCH, CLASSES, SEQ, T_BATCH, T_SEQ, TOKENS, VOCAB)

    if case == "encoder_step":
        return rng.integers(0, TOKENS, (T_BATCH, T_SEQ)), rng.integers(0, CLASSES, T_BATCH)
    tokens = rng.integers(0, VOCAB, (BATCH, SEQ + 1))
    return tokens[:, :-1], tokens[:, 1:].reshape(-1)


def _build(case, nn, lib):
    import _sequence_models as seq

    if case == "encoder_step":
        return seq._encoder_classifier(nn)
    if case == "lstm_step":
        return seq._lstm_lm(nn)
    if case == "mobilenet_step":
        from _mobile_models import mobilenet_v2

        return mobilenet_v2(nn)
    import _torch_reference as ref  # pure torch builders (minidl's nn is imported, never run)

    if lib == "torch":
        return ref.torch_lenet5() if case.startswith("lenet") else ref.torch_mlp()
    return ref.minidl_lenet5() if case.startswith("lenet") else ref.minidl_mlp()


def _run(case, fw, reps, threads):
    sys.path[:0] = [os.path.join(ROOT, "benchmarks"), os.path.join(ROOT, "tests")]
    x, y = _inputs(case)
    if fw == "torch":
        import torch

        torch.set_num_threads(threads)
        model = _build(case, torch.nn, "torch")
        xt = torch.from_numpy(x)
        if y is None:
            model.eval()

            def step():
                with torch.no_grad():
                    model(xt)
        else:
            yt = torch.from_numpy(y)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step():
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt), yt).backward()
                opt.step()
    else:
        import minidl
        import minidl.nn.functional as F

        minidl.set_num_threads(threads)
        minidl.manual_seed(0)
        model = _build(case, minidl.nn, "minidl")
        xm = minidl.tensor(x)
        if y is None:
            model.eval()

            def step():
                with minidl.no_grad():
                    model(xm)
        else:
            ym = minidl.tensor(y)
            opt = minidl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step():
                opt.zero_grad()
                F.cross_entropy(model(xm), ym).backward()
                opt.step()
    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
    libgomp = sorted(set(re.findall(r"/\S*libgomp\S*", maps)))
    if fw == "torch" and any("site-packages/torch" not in p for p in libgomp):
        raise SystemExit(f"the PyTorch process loaded another libgomp: {libgomp}")
    print(json.dumps({"ms": 1000 * statistics.median(times), "libgomp": libgomp}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--run", nargs=2, metavar=("CASE", "FW"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run:
        _run(args.run[0], args.run[1], args.reps, args.threads)
        return 0
    print(f"each framework alone in its own process, {args.threads} threads, median of "
          f"{args.reps} steps after 3 warm-up steps")
    print(f"{'case':14s} {'minidl ms':>10s} {'torch ms':>10s} {'ratio':>6s}")
    for case in args.cases.split(","):
        ms = {}
        for fw in ("minidl", "torch"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--reps",
                                  str(args.reps), "--threads", str(args.threads), "--run", case,
                                  fw], capture_output=True, text=True, timeout=900)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return 1
            ms[fw] = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
        print(f"{case:14s} {ms['minidl']:10.1f} {ms['torch']:10.1f} "
              f"{ms['minidl'] / ms['torch']:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
