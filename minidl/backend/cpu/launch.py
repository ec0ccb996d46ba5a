"""How a kernel is started: serial or parallel driver, the size thresholds between them, and the
dtypes and layout the kernels take.

Every kernel works task by task (a task is one image plane, one sample, ...) and has two
drivers: a ``prange`` one and a serial one, kept side by side as a ``Drivers`` pair. The serial
one runs unless the work is large: a launch may have to wake a sleeping thread (50-500 us on
this class of VM with numba's workqueue layer; OpenMP's workers, which ``tuning`` chooses where
it can, spin briefly after each kernel and start the next in ~2 us), and numpy's BLAS threads
may still hold the other core just after a matmul. Measured on LeNet-5 (batch 128), parallel
kernels below these sizes gained nothing in the median step time. With one numba thread (a
forked child, see ``tuning``) every kernel takes its serial driver.
"""
from __future__ import annotations

import threading
from typing import Callable, NamedTuple

import numba
import numpy as np

# Work sizes from which the parallel driver runs, by kind of work (read on every launch, so a
# test can lower or raise them).
THRESHOLDS = {
    "columns": 1 << 22,  # im2col/col2im and the conv layout kernels, by column-matrix size
    "winograd": 1 << 20,  # Winograd tile transforms, by transformed-tile size
    "pool": 1 << 22,     # max pooling, by input size
    "relu": 1 << 23,     # ReLU streams at ~0.1 ns per element
    "macs": 1 << 25,     # direct convolution, by multiply-adds
    # batch norm's forward passes (and eval mode's one), and its backward passes, by activation
    # size: a parallel launch costs 60-130 us on a 2-vCPU VM, so ResNet-50's activations at
    # batch 4 (up to 1M values) ran faster on one core; the backward pass's two reads of two
    # arrays pay from 1M values (8x64x56x56: 0.78 ms in parallel, 1.3 ms serial)
    "batchnorm": 1 << 21,
    "batchnorm_grad": 1 << 20,
    "optim": 1 << 20,    # optimizer updates, by parameter size (five streams an element)
}

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
    """The kernels index flat memory: they are handed C-contiguous arrays."""
    return np.ascontiguousarray(a)


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
