#!/usr/bin/env python
"""LeNet-5 inference layer by layer, minidl against PyTorch, and what the machine is.

    python tools/lenet_layers.py                  # batch 1000, the benchmarks' thread count
    python tools/lenet_layers.py --threads 1 --json zen1.json
    python tools/lenet_layers.py --train          # forward + backward per layer, batch 128
    python tools/lenet_layers.py --isa avx2       # as on an AVX2-only CPU (Zen 1, Zen 2)
    eval "$(python tools/lenet_layers.py --isa avx2 --print-env)"   # the same for any command

Issue 12 asks why the LeNet-5 inference ratio (minidl / PyTorch, batch 1000) reads about 1.0 on
one 2-vCPU machine and 1.5-1.8 on another. The whole-model ratio mixes kernels of different
natures (PyTorch's NCHW max pool was 45% of its time on a Zen 4 machine; minidl's second
convolution was its largest layer), so this prints one line per layer for both frameworks on
the same weights and inputs, and beside it what differs between machines: the CPU model and
whether its vCPUs are SMT siblings, numpy's OpenBLAS kernel set, the cost of one numba parallel
launch, and numpy's float32 GEMM rate. Medians over ``--repeats`` calls, both frameworks in
this one process, nothing else running.

``--isa avx2`` runs the same measurement with every library held to AVX2 on a CPU that has
AVX-512 (Zen 4, recent Intel): numba compiles for Zen 1 (``NUMBA_CPU_NAME`` and
``NUMBA_CPU_FEATURES``: the name alone still lets LLVM emit AVX-512), OpenBLAS takes its Zen
kernels, PyTorch's ATen and oneDNN their AVX2 code. It does not make the machine a Zen 1 (its
caches, clocks and 256-bit datapaths stay), but it shows what code generation alone does: on a
Zen 4 it found minidl's max pool 5x slower in AVX2 code, where its NaN test compiled to
branches on the data.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# The environment that holds numba, OpenBLAS and PyTorch to AVX2 (``--isa avx2``): Zen 1's
# scheduling model and feature set for numba's LLVM, less AMD's own instructions (sse4a,
# clzero, mwaitx: absent on Intel), with every AVX-512 extension off.
AVX2_ENV = {
    "NUMBA_CPU_NAME": "znver1",
    "NUMBA_CPU_FEATURES": ",".join(
        "+" + f for f in (
            "64bit adx aes avx avx2 bmi bmi2 clflushopt cmov cx16 cx8 f16c fma fsgsbase fxsr "
            "lzcnt mmx movbe pclmul popcnt prfchw rdrnd rdseed sahf sha sse sse2 sse3 sse4.1 "
            "sse4.2 ssse3 xsave xsavec xsaveopt xsaves").split()
    ) + ",-sse4a,-clzero,-mwaitx,-avx512f,-avx512bw,-avx512dq,-avx512vl,-avx512cd",
    "OPENBLAS_CORETYPE": "Zen",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def cpuinfo():
    """The first processor's fields in /proc/cpuinfo (Linux), {} where there is none."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags():
    return set(cpuinfo().get("flags", "").split())


def hold_to_avx2(argv):
    """Runs this tool again in a process whose libraries compile and pick AVX2 code (the
    variables must be set before numpy, numba and PyTorch load)."""
    if all(os.environ.get(k) == v for k, v in AVX2_ENV.items()):
        return  # already the AVX2 process
    flags = cpu_flags()
    if flags and "avx2" not in flags:
        sys.exit("--isa avx2: this CPU has no AVX2")
    env = dict(os.environ, **AVX2_ENV)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))


def median_ms(fn, repeats, warmup=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def cpu_description():
    """Model name, family/model, and the SMT layout, from /proc and /sys (Linux)."""
    info = {"machine": platform.machine(), "logical_cpus": os.cpu_count()}
    fields = cpuinfo()
    info.update((key, fields[key]) for key in ("model name", "cpu family", "model", "vendor_id")
                if key in fields)
    try:
        with open("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list") as f:
            siblings = f.read().strip()
        # "0" alone: no SMT sibling; "0-1" or "0,1": cpu0 shares its core with another vCPU
        info["cpu0_thread_siblings"] = siblings
        info["smt_siblings"] = "," in siblings or "-" in siblings
    except OSError:
        pass
    return info


def launch_cost_us(repeats=200):
    """Median cost of starting an almost empty numba parallel loop (the threading layer wakes
    its workers): what every parallel minidl kernel pays before it computes."""
    from numba import njit, prange

    @njit(parallel=True)
    def touch(a):
        for i in prange(a.size):
            a[i] += 1.0

    a = np.zeros(2)
    return median_ms(lambda: touch(a), repeats, warmup=20) * 1e3


def numba_vector_width():
    """The widest vector registers numba's code uses here ("zmm": AVX-512, "ymm": AVX/AVX2,
    "xmm"), read from the machine code of a vectorisable loop: shows that ``--isa avx2`` holds."""
    from numba import njit

    @njit
    def scale(a):
        for i in range(a.size):
            a[i] = a[i] * 2.0 + 1.0

    a = np.zeros(64, dtype=np.float32)
    scale(a)
    asm = "".join(scale.inspect_asm().values())
    return next((r for r in ("zmm", "ymm", "xmm") if r in asm), "?")


def gemm_gflops(n=1024, repeats=20):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return 2 * n ** 3 / (median_ms(lambda: a @ a, repeats) * 1e-3) / 1e9


def layer_times(model, x, run, repeats):
    """[(name, ms)] for each layer of a Sequential, each timed on its own input."""
    rows = []
    for i, layer in enumerate(model):
        y = run(layer, x)
        rows.append((f"{i}:{type(layer).__name__}", median_ms(lambda: run(layer, x), repeats)))
        x = y
    return rows


def train_layer_times(model, x, leaf, repeats):
    """[(name, ms)] of forward + backward for each layer of a Sequential in train mode, each on
    its own input: ``leaf(array, requires_grad)`` makes the input tensor, which needs a gradient
    for every layer but the first (as in a training step, where nothing asks for d loss / d x).
    The upstream gradient is a fixed array of the output's shape."""
    rows = []
    for i, layer in enumerate(model):
        inp = leaf(x, i > 0)
        out = layer(inp)
        g = np.random.default_rng(i).standard_normal(out.shape).astype(np.float32)
        g_t = leaf(g, False)

        def step():
            layer(inp).backward(g_t)

        rows.append((f"{i}:{type(layer).__name__}", median_ms(step, repeats)))
        x = out.detach().numpy()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None,
                        help="default: 1000 for inference, 128 with --train (the benchmarks')")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for numba, OpenBLAS and PyTorch (default: the benchmarks')")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--train", action="store_true",
                        help="forward + backward of each layer in train mode (default batch 128) "
                             "instead of inference")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: hold numba, OpenBLAS and PyTorch to AVX2 code on a CPU that "
                             "has AVX-512, as on Zen 1 or Zen 2 (default: native)")
    parser.add_argument("--print-env", action="store_true",
                        help="print the shell exports that --isa sets, and exit (for other "
                             "commands: eval \"$(python tools/lenet_layers.py --isa avx2 "
                             "--print-env)\"; pytest benchmarks ...)")
    args = parser.parse_args(argv)
    if args.print_env:
        for k, v in (AVX2_ENV if args.isa == "avx2" else {}).items():
            print(f"export {k}={v}")
        return
    if args.isa == "avx2":
        hold_to_avx2(sys.argv[1:] if argv is None else argv)
    if args.batch is None:
        args.batch = 128 if args.train else 1000

    import minidl
    from _common import (THREADS, blas_in_use, copy_weights, minidl_lenet5, seeded_inputs,
                         torch_lenet5)

    threads = minidl.set_num_threads(args.threads or THREADS)
    import numba

    report = {"cpu": cpu_description(), "threads": threads, "isa": args.isa}
    report["blas"] = blas_in_use()
    (x,) = seeded_inputs((args.batch, 1, 28, 28))
    minidl.manual_seed(0)
    model = minidl_lenet5().train(args.train)

    def run_minidl(layer, inp):
        with minidl.no_grad():
            return layer(inp)

    def per_layer(net, leaf, run):
        """The table for one framework: ``leaf(array, requires_grad)`` makes its tensors."""
        if args.train:
            return train_layer_times(net, x, leaf, args.repeats)
        return layer_times(net, leaf(x, False), run, args.repeats)

    rows = {"minidl": per_layer(model, lambda a, grad: minidl.tensor(a, requires_grad=grad),
                                run_minidl)}
    report["numba_threading_layer"] = numba.threading_layer()
    report["numba_launch_us"] = launch_cost_us()
    report["numba_vector_registers"] = numba_vector_width()
    report["numpy_gemm_gflops"] = gemm_gflops()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        report["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        tmodel = copy_weights(model, torch_lenet5()).train(args.train)

        def run_torch(layer, inp):
            with torch.no_grad():
                return layer(inp)

        rows["torch"] = per_layer(tmodel, lambda a, grad: torch.tensor(a, requires_grad=grad),
                                  run_torch)
        with torch.no_grad():
            np.testing.assert_allclose(tmodel(torch.from_numpy(x)).numpy(),
                                       run_minidl(model, minidl.tensor(x)).numpy(),
                                       rtol=1e-3, atol=1e-3)
    report["layers"] = rows

    cpu = report["cpu"]
    print(f"CPU: {cpu.get('model name', '?')} (family {cpu.get('cpu family', '?')}, model "
          f"{cpu.get('model', '?')}), {cpu.get('logical_cpus')} logical CPUs, cpu0 siblings "
          f"{cpu.get('cpu0_thread_siblings', '?')}")
    for lib in report.get("blas", {}).get("openblas", []):
        print(f"OpenBLAS: {lib.get('path')} core {lib.get('corename', '?')}; "
              f"env {report['blas'].get('env') or '-'}")
    if args.isa == "avx2":
        print("ISA held to AVX2: " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()
                                              if k != "NUMBA_CPU_FEATURES"))
    print(f"threads {threads}; numba layer {report['numba_threading_layer']}, parallel launch "
          f"{report['numba_launch_us']:.0f} us, {report['numba_vector_registers']} registers; "
          f"numpy float32 GEMM 1024^3 "
          f"{report['numpy_gemm_gflops']:.0f} GFLOP/s")
    if "torch_cpu_capability" in report:
        print(f"PyTorch {torch.__version__}, CPU capability {report['torch_cpu_capability']}")
    what = "forward + backward per layer" if args.train else "inference"
    print(f"\nLeNet-5 {what}, batch {args.batch}, median ms of {args.repeats}:")
    print(f"{'layer':16s} {'minidl':>8s} {'torch':>8s} {'ratio':>6s}")
    total = {k: sum(ms for _, ms in v) for k, v in rows.items()}
    for i, (name, ms) in enumerate(rows["minidl"]):
        t = rows["torch"][i][1] if "torch" in rows else float("nan")
        print(f"{name:16s} {ms:8.3f} {t:8.3f} {ms / t:6.2f}")
    t = total.get("torch", float("nan"))
    print(f"{'sum of layers':16s} {total['minidl']:8.3f} {t:8.3f} {total['minidl'] / t:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
