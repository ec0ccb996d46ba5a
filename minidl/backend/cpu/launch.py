"""How a kernel is started: serial or parallel driver, the size thresholds between them, and the
dtypes and layout the kernels take.

Every kernel works task by task (a task is one image plane, one sample, ...) and has two
drivers: a ``prange`` one and a serial one, kept side by side as a ``Drivers`` pair. The serial
one runs unless the work is large enough to pay for the launch, and what a launch costs depends
on how numba's workers wait between kernels: with the workqueue layer they sleep, and waking
them costs 50-500 us on this class of VM; OpenMP's workers, which ``tuning`` chooses where it
can, spin briefly after each kernel and start the next in ~3 us. Hence two tables of
thresholds, ``SLEEPING_WORKERS`` and ``SPINNING_WORKERS``, and ``THRESHOLDS``, the one in use.
numpy's BLAS threads may also still hold the other core just after a matmul, so even cheap
launches do not pay for the smallest kernels. With one numba thread (a forked child, see
``tuning``) every kernel takes its serial driver.
"""
from __future__ import annotations

import threading
from typing import Callable, NamedTuple

import numba
import numpy as np

# Work sizes from which the parallel driver runs, by kind of work, for workers that sleep
# between kernels (numba's workqueue layer: a launch wakes them, 60-130 us on a 2-vCPU VM).
SLEEPING_WORKERS = {
    "columns": 1 << 22,  # im2col/col2im and the conv layout kernels, by column-matrix size
    # im2col of one chunk of samples in inference (conv2d_inference), by chunk-matrix size: each
    # chunk's gather sits between two multi-threaded GEMMs
    "chunk_columns": 1 << 22,
    "winograd": 1 << 20,  # Winograd tile transforms, by transformed-tile size
    "pool": 1 << 22,     # max pooling, by input size
    "relu": 1 << 23,     # ReLU streams at ~0.1 ns per element
    # float32 softmax cross-entropy, by logits size: one core streams 1000 classes x 256 in
    # ~0.12 ms, less than waking the workers cost there (0.27 ms in parallel)
    "xent": 1 << 22,
    "macs": 1 << 25,     # direct convolution, by multiply-adds
    "depthwise": 1 << 25,  # depthwise convolution by planes, by multiply-adds
    # batch norm's forward passes (and eval mode's one), and its backward passes, by activation
    # size: ResNet-50's activations at batch 4 (up to 1M values) ran faster on one core; the
    # backward pass's two reads of two arrays pay from 1M values (8x64x56x56: 0.78 ms in
    # parallel, 1.3 ms serial)
    "batchnorm": 1 << 21,
    "batchnorm_grad": 1 << 20,
    "optim": 1 << 20,    # optimizer updates, by parameter size (five streams an element)
    # one LSTM or GRU time step's gate arithmetic, by state size (batch x hidden): each step
    # sits between two small GEMMs, so only a large state pays for waking the workers
    "rnn": 1 << 20,
    # the row kernels (layer norm, softmax over the last dim), by activation size
    "rows": 1 << 20,
    # float32 sigmoid, SiLU and GELU (an exp or two per element), by size
    "act": 1 << 20,
}

# The same for workers that spin a while after each kernel (the OpenMP layer with the short spin
# ``tuning`` sets, where a launch costs ~3 us): 8-16x lower for the kernels of LeNet-5's step, so
# they run in parallel at batch 128. Its training step went 9.2 -> 7.2 ms (1.32 -> 1.03x
# PyTorch's, 6 alternating rounds, 2-vCPU Zen 4), inference at batch 1000 19.0 -> 17.6 ms;
# ResNet-50's training step at batch 4 did not move. Three kinds keep their limits, each because
# a lower one cost time: batch norm (its eval-mode map in parallel from 128k values: ResNet-50
# inference at batch 1 1.17 -> 1.28x), the chunked im2col of inference (between two threaded
# GEMMs: the same case 1.12 -> 1.20x at 256k) and the optimizer update (the MLP's step
# 0.80 -> 1.06 ms with its 200k-value weight updated in parallel).
# Depthwise convolution by planes (short loops, a few us of work per plane) pays from 64k
# multiply-adds: MobileNetV2's 192x12x12 layer at batch 8, forward and both gradients, 0.85 ->
# 0.52 ms. (Batch norm's training passes and ReLU6 alone in parallel from 64k values were
# faster too, 8x96x48x48's batch norm 1.75 -> 0.53 ms, but slower inside MobileNetV2's step,
# where each follows a GEMM whose BLAS threads still spin: batch norm forward 7.6 -> 10.6 ms
# a step, hardtanh backward 3.1 -> 6.0.)
SPINNING_WORKERS = dict(SLEEPING_WORKERS, columns=1 << 18, winograd=1 << 17, pool=1 << 18,
                        relu=1 << 19, macs=1 << 21, rows=1 << 16,
                        act=1 << 16, depthwise=1 << 16)

# The table in use (read on every launch, so a test can lower or raise its sizes):
# ``tuning.configure()`` switches it to SPINNING_WORKERS when it starts numba's OpenMP layer.
THRESHOLDS = dict(SLEEPING_WORKERS)

# The float dtypes the kernels are compiled for (gradient checks run in float64); other dtypes
# take the generic kernels.
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# numba's workqueue threading layer must not be entered from two Python threads at once (the
# OpenMP one may, but one lock for both keeps the rule simple).
_lock = threading.Lock()


class Drivers(NamedTuple):
    parallel: Callable
    serial: Callable


def contiguous(a):
    """The kernels index flat memory: they are handed C-contiguous arrays (a 0-d array as it
    is: np.ascontiguousarray would make it 1-d, and the result would keep that shape)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def parallel(size, kind):
    """Whether ``size`` units of work of ``kind`` (a THRESHOLDS key) pay for a parallel launch."""
    return size >= THRESHOLDS[kind] and numba.get_num_threads() > 1


def launch(drivers: Drivers, in_parallel: bool, *args):
    """Run a kernel's parallel driver (under the launch lock) or its serial one."""
    if in_parallel:
        with _lock:
            drivers.parallel(*args)
    else:
        drivers.serial(*args)
