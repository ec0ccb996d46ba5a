#!/usr/bin/env python
"""minidl / PyTorch time ratios per benchmark group, from pytest-benchmark's JSON.

    pytest benchmarks --benchmark-only --benchmark-json=bench.json
    python tools/bench_ratios.py bench.json            # plain table
    python tools/bench_ratios.py bench.json --markdown # the table in benchmarks/RESULTS.md
    python tools/bench_ratios.py run1.json run2.json run3.json   # several runs: median ratio

With several files (repeated runs: the machine may be shared and noisy) the times and GFLOP/s
are medians over the runs, the ratio is the median of the per-run ratios (each of which compares
minidl and PyTorch measured in the same run), and each run's ratio is listed too.

Each group holds one minidl benchmark and its PyTorch twin (``fw`` parameter ``minidl`` or
``torch``; for the matmul group ``numpy``, the GEMM minidl runs on). The ratio is of medians:
below 1 minidl is faster. Benchmarks that record ``flops`` also get GFLOP/s, and conv2d forward
groups the share of the machine's float32 GEMM throughput (numpy.matmul at 1024x1024, measured
in the same run) that they reach.
"""
from __future__ import annotations

import argparse
import json
import sys

OURS = ("minidl", "numpy")
MATMUL_GROUP = "matmul-1024-float32"

# The goals (ratio minidl / PyTorch, CPU, same run), shown next to the measurement.
TARGETS = {
    "lenet5-train-step-b128": 1.5,
    "mlp-784-256-10-train-step-b128": 1.3,
    "lenet5-inference-b1000": 1.5,
    "conv2d-forward-resnet50_3x3": 1.5,
    "resnet50-train-step-b4-128": 1.5,
    "gpu-resnet50-train-step-b32-224": 1.5,
    "gpu-resnet50-inference-b64-224": 1.3,
    "gpu-resnet50-inference-b256-224": 1.3,
    "gpu-resnet50-train-step-b64-224-bf16": 1.5,
}
# Mixed precision (issue 13): minidl's float32 step / its bf16 step, at least this much.
SPEEDUPS = {("gpu-resnet50-train-step-b64-224-fp32", "gpu-resnet50-train-step-b64-224-bf16"): 2.5}


def load(path):
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, dict[str, dict]] = {}
    for b in data["benchmarks"]:
        fw = (b.get("params") or {}).get("fw")
        if fw is None:
            continue
        side = "ours" if fw in OURS else "torch" if fw == "torch" else None
        if side:
            groups.setdefault(b["group"], {})[side] = b
    return data, groups


def gflops(b):
    flops = (b.get("extra_info") or {}).get("flops")
    return flops / b["stats"]["median"] / 1e9 if flops else None


def rows(groups):
    peak = None
    if "ours" in groups.get(MATMUL_GROUP, {}):
        peak = gflops(groups[MATMUL_GROUP]["ours"])
    out = []
    for name in sorted(groups):
        g = groups[name]
        ours, torch = g.get("ours"), g.get("torch")
        m = ours["stats"]["median"] if ours else None
        t = torch["stats"]["median"] if torch else None
        ratio = m / t if m and t else None
        gf = gflops(ours) if ours else None
        share = gf / peak if gf and peak and name.startswith("conv2d-forward") else None
        target = TARGETS.get(name)
        verdict = "" if target is None or ratio is None else ("ok" if ratio <= target else "MISSED")
        mem = [(b.get("extra_info") or {}).get("peak_mem_bytes") if b else None
               for b in (ours, torch)]
        mem_ratio = mem[0] / mem[1] if mem[0] and mem[1] else None
        # minidl on CUDA also records the peak of the bytes in use (the pool's high-water mark
        # above counts cached free blocks too): the figure torch.cuda.max_memory_allocated is
        used = (ours.get("extra_info") or {}).get("peak_used_bytes") if ours else None
        out.append(dict(group=name, ours=m, torch=t, ratio=ratio, gflops=gf, share=share,
                        target=target, verdict=verdict, mem_ours=mem[0], mem_torch=mem[1],
                        mem_ratio=mem_ratio, mem_used=used,
                        used_ratio=used / mem[1] if used and mem[1] else None))
    return out, peak


def _ms(v):
    return "-" if v is None else (f"{v * 1e3:.3f}" if v < 1 else f"{v * 1e3:.0f}")


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def combine(tables):
    """Per group: medians over runs, and the list of per-run ratios."""
    out = []
    for name in sorted({r["group"] for t in tables for r in t}):
        rs = [r for t in tables for r in t if r["group"] == name]
        ratio = _median([r["ratio"] for r in rs])
        target = rs[0]["target"]
        verdict = "" if target is None or ratio is None else ("ok" if ratio <= target else "MISSED")
        out.append(dict(group=name, ours=_median([r["ours"] for r in rs]),
                        torch=_median([r["torch"] for r in rs]), ratio=ratio,
                        gflops=_median([r["gflops"] for r in rs]),
                        share=_median([r["share"] for r in rs]), target=target, verdict=verdict,
                        runs=[r["ratio"] for r in rs],
                        mem_ours=_median([r["mem_ours"] for r in rs]),
                        mem_torch=_median([r["mem_torch"] for r in rs]),
                        mem_ratio=_median([r["mem_ratio"] for r in rs]),
                        mem_used=_median([r["mem_used"] for r in rs]),
                        used_ratio=_median([r["used_ratio"] for r in rs])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="+", help="file(s) written by pytest --benchmark-json")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args(argv)
    loaded = [load(path) for path in args.json]
    tables, peaks = zip(*(rows(groups) for _, groups in loaded))
    table = combine(tables)
    peak = _median(list(peaks))
    if not table:
        print("no minidl/torch benchmark pairs in", " ".join(args.json), file=sys.stderr)
        return 1
    several = len(tables) > 1
    head = ["group", "minidl ms", "torch ms", "ratio", "goal", "GFLOP/s", "of matmul peak",
            "minidl MB", "torch MB", "mem ratio"]
    with_used = any(r["mem_used"] for r in table)
    if with_used:
        head += ["minidl used MB", "used ratio"]
    if several:
        head.append("ratio per run")
    lines = []
    for r in table:
        goal = "" if r["target"] is None else f"<= {r['target']} {r['verdict']}"
        line = [r["group"], _ms(r["ours"]), _ms(r["torch"]), _f(r["ratio"], ".2f"), goal,
                _f(r["gflops"], ".1f"),
                _f(r["share"] and 100 * r["share"], ".0f") + ("%" if r["share"] else ""),
                _f(r["mem_ours"] and r["mem_ours"] / 2**20, ".0f"),
                _f(r["mem_torch"] and r["mem_torch"] / 2**20, ".0f"), _f(r["mem_ratio"], ".2f")]
        if with_used:
            line += [_f(r["mem_used"] and r["mem_used"] / 2**20, ".0f"),
                     _f(r["used_ratio"], ".2f")]
        if several:
            line.append(" ".join(_f(x, ".2f") for x in r["runs"]))
        lines.append(line)
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
        for line in [head] + lines:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    by_group = {r["group"]: r for r in table}
    for (slow, fast), goal in SPEEDUPS.items():
        if slow in by_group and fast in by_group and by_group[fast]["ours"]:
            x = by_group[slow]["ours"] / by_group[fast]["ours"]
            print(f"\nminidl {slow} / {fast}: {x:.2f}x faster (goal >= {goal}: "
                  f"{'ok' if x >= goal else 'MISSED'})")
    data = loaded[0][0]
    threads = data.get("minidl_threads")
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "")
    runs = f"median of {len(tables)} runs; " if several else "medians; "
    blas = data.get("minidl_blas") or {}
    cores = ", ".join(sorted({b.get("corename", "?") for b in blas.get("openblas", [])}))
    env = " ".join(f"{k}={v}" for k, v in (blas.get("env") or {}).items())
    print(f"\n{runs}threads: {threads} (numba = torch = OpenBLAS); numpy.matmul 1024^3 float32: "
          f"{_f(peak, '.1f')} GFLOP/s; {cpu}" + (f"; OpenBLAS core {cores}" if cores else "")
          + (f" ({env})" if env else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
