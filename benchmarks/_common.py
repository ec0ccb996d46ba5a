"""Set-up shared by the benchmark files. The reference networks in minidl and plain torch (no
torchvision), and ``copy_weights`` that loads the torch copy from the minidl weights so both
compute the same, are the tests' own (tests/_torch_reference.py), re-exported here."""
from __future__ import annotations

import os
import sys

import numpy as np

import minidl
import minidl.optim

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _torch_reference import (  # noqa: E402,F401
    copy_weights, minidl_lenet5, minidl_mlp, torch_lenet5, torch_mlp, torch_resnet50,
)


def seeded_inputs(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def minidl_sgd(model):
    return minidl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


# One training step as every benchmark and tool times it: zero the gradients, forward and
# cross-entropy (under autocast at ``amp_dtype`` when it is given), backward, SGD with momentum
# 0.9. ``step()`` returns the loss tensor; nothing is synchronised (the caller times).
def minidl_train_step(model, x, y, device="cpu", amp_dtype=None):
    import minidl.nn.functional as F

    opt = minidl_sgd(model)
    xm, ym = minidl.tensor(x, device=device), minidl.tensor(y, device=device)
    amp = amp_dtype is not None

    def forward():
        with minidl.autocast(device, dtype=amp_dtype if amp else None, enabled=amp):
            return F.cross_entropy(model(xm), ym)

    def step():
        opt.zero_grad()
        loss = forward()
        loss.backward()
        opt.step()
        return loss
    step.forward, step.opt = forward, opt  # for tools that time the phases
    return step


def add_step_arguments(parser, model="resnet50", batch=64, amp="bf16"):
    """The --model, --batch, --size and --amp options of the tools that build a
    ``cuda_train_step``; ``warm_cuda_step(args)`` builds it."""
    parser.add_argument("--model", choices=["lenet5", "resnet50"], default=model)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--size", type=int, default=224, help="ResNet-50 input size")
    parser.add_argument("--amp", choices=["off", "bf16"], default=amp)


def warm_cuda_step(args, warmup=5):
    """(step, synchronize): the ``cuda_train_step`` that ``add_step_arguments``' options name,
    run ``warmup`` times (kernels built, plans chosen, memory pool grown)."""
    sync = minidl.backend.require_cuda().cuda.Device().synchronize
    step = cuda_train_step(args.model, args.batch, args.size, args.amp == "bf16")
    for _ in range(warmup):
        step()
    sync()
    return step, sync


def cuda_train_step(model_name, batch, size=224, amp=False, seed=0):
    """``minidl_train_step`` on CUDA for the tools: LeNet-5 ("lenet5", 1x28x28, 10 classes) or
    ResNet-50 ("resnet50", 3 x size x size, 1000 classes) on random inputs, bfloat16 autocast
    when ``amp``."""
    rng = np.random.default_rng(seed)
    minidl.manual_seed(seed)
    if model_name == "lenet5":
        model, shape, classes = minidl_lenet5(), (batch, 1, 28, 28), 10
    else:
        from minidl.models import resnet50

        model, shape, classes = resnet50(), (batch, 3, size, size), 1000
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, classes, batch)
    return minidl_train_step(model.to("cuda"), x, y, "cuda", minidl.bfloat16 if amp else None)


def torch_train_step(torch, model, x, y, device="cpu", amp_dtype=None):
    """The PyTorch twin of ``minidl_train_step`` (``amp_dtype`` a torch dtype)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    amp = amp_dtype is not None

    def step():
        opt.zero_grad()
        with torch.autocast(device, dtype=amp_dtype, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        return loss
    return step


def synced_median_ms(fn, sync, reps=5):
    """Median wall time of ``reps`` calls of fn in milliseconds, each between two ``sync()``
    (a GPU's: the time covers the work fn queued, not only its launch)."""
    import statistics
    import time

    out = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def bench_threads() -> int:
    import numba

    # through minidl, so that numba's pool starts on the layer minidl configures
    return minidl.set_num_threads(int(os.environ.get("MINIDL_BENCH_THREADS", "0"))
                                  or numba.config.NUMBA_NUM_THREADS)


THREADS = bench_threads()


def torch_or_none():
    """PyTorch with the benchmark thread count, or None: minidl's benchmarks run without it (its
    twins and the parity checks against it are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch


def blas_in_use():
    """What numpy's BLAS runs as: OpenBLAS's core name (the kernel set it picked, or the one
    OPENBLAS_CORETYPE forces) and configuration, and the environment variables that steer it.
    Ratios against PyTorch (which brings its own GEMMs) move with this from machine to machine,
    so every benchmark run records it."""
    import ctypes

    import numpy as np

    from minidl.backend.cpu.tuning import openblas_libraries

    np.ones((2, 2)) @ np.ones((2, 2))  # make sure numpy's BLAS is loaded
    out = {"env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                              "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                   if k in os.environ}, "openblas": []}
    for path, lib in openblas_libraries():
        entry = {"path": os.path.basename(path)}
        for field in ("corename", "config"):
            # plain OpenBLAS, or the scipy-openblas build numpy's wheels ship (prefixed, 64-bit)
            for name in (f"openblas_get_{field}", f"scipy_openblas_get_{field}64_"):
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    entry[field] = fn().decode(errors="replace")
                    break
        out["openblas"].append(entry)
    return out
