"""Compile every CUDA kernel of minidl/backend/cuda.py with NVRTC, without a GPU.

    python tools/nvrtc_check.py [--arch 90]

What the GPU builds on first use (``cuda._raw_code``: the kernel body, CuPy's type declarations
and minidl's preamble, after the headers CuPy puts before its own kernels), for float32 and
float64, and for float16 and bfloat16 with float32 per-channel numbers, plus the casts between
float32 and the 16-bit types. NVRTC runs on the CPU, so this catches a kernel that would not
build (and would fall back to CuPy's slower ElementwiseKernel) on a machine without a GPU.

It needs CuPy, NVRTC and the CUDA headers (CuPy looks for them under CUDA_PATH, e.g.
/usr/local/cuda-13.0/include), but no driver or GPU. For example:
    pip download --no-deps cupy-cuda12x nvidia-cuda-nvrtc-cu12 cuda-pathfinder fastrlock -d whl
    pip install --no-deps --target /tmp/cupyenv whl/*.whl
    PYTHONPATH=/tmp/cupyenv LD_LIBRARY_PATH=/tmp/cupyenv/nvidia/cuda_nvrtc/lib \\
        python tools/nvrtc_check.py
Kernels that only ever see float32 (the optimizers, the loss) are expected not to build for the
16-bit types; they are listed apart.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minidl.backend import cuda  # noqa: E402
from minidl.backend.dtypes import bfloat16_dtype, channel_dtype  # noqa: E402

FLOAT32_ONLY = ("softmax_xent", "sgd", "adam")
HEADERS = ("cupy/complex.cuh", "cupy/carray.cuh", "cupy/atomics.cuh", "cupy/math_constants.h")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="90", help="compute capability, e.g. 90 for Hopper")
    args = ap.parse_args()
    from cupy._core import core
    from cupy.cuda import compiler

    head = "".join(f"#include <{h}>\n" for h in HEADERS)
    options = core.assemble_cupy_compiler_options(()) + (
        f"--gpu-architecture=compute_{args.arch}", "--device-as-default-execution-space")
    cases = [(name, wide, np.dtype(t), channel_dtype(np.dtype(t)))
             for t in (np.float32, np.float64, np.float16, bfloat16_dtype())
             for name in cuda.SPECS for wide in (False, True)]
    cases += [("cast", False, np.dtype(a), np.dtype(b)) for a, b in
              [(np.float32, bfloat16_dtype()), (bfloat16_dtype(), np.float32),
               (np.float32, np.float16), (np.float16, np.float32)]]
    failed, expected = [], []
    for name, wide, t, p in cases:
        _, code = cuda._raw_code(name, wide, t, p)
        try:
            compiler._NVRTCProgram(head + code, "/tmp/minidl_kernel.cu", (), (),
                                   method="ptx").compile(options, None)
        except Exception as e:
            low = t.itemsize == 2
            (expected if low and name.startswith(FLOAT32_ONLY) else failed).append(
                (name, wide, str(t), str(p), str(e).strip().splitlines()[-3:]))
    print(f"{len(cases)} kernel builds, {len(failed)} failed, {len(expected)} expected failures "
          "(16-bit builds of float32-only kernels)")
    for name, wide, t, p, err in failed:
        print(f"FAILED {name} wide={wide} T={t} P={p}: {' / '.join(err)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
