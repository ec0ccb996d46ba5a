"""``minidl.random``, as ``torch.random``: the process-wide generator's seed and state, and
``fork_rng``, which lets a block draw random numbers without changing what comes after it."""
from __future__ import annotations

import contextlib

from .backend import default_generator, manual_seed
from .runtime import get_rng_state, initial_seed, seed, set_rng_state

__all__ = ["manual_seed", "seed", "initial_seed", "get_rng_state", "set_rng_state", "fork_rng",
           "default_generator"]


@contextlib.contextmanager
def fork_rng(devices=None, enabled=True, _caller="fork_rng", _devices_kw="devices",
             device_type="cuda"):
    """Save the CPU random state (and the CUDA states of ``devices``, default every GPU, when
    CUDA is there) on entry and put them back on exit, even if the block raises: draws inside
    the block do not change the draws after it. ``enabled=False`` makes it do nothing."""
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"{_caller}: device_type must be 'cuda' (or 'cpu'), got {device_type!r}; "
                         "minidl has no other accelerator")
    if not enabled:
        yield
        return
    from . import cuda

    cpu_state = get_rng_state()
    gpu_states = None
    if device_type == "cuda" and cuda.is_available():
        devices = list(range(cuda.device_count())) if devices is None else list(devices)
        if devices:
            gpu_states = cuda.get_rng_state_all()
    try:
        yield
    finally:
        set_rng_state(cpu_state)
        if gpu_states is not None:
            cuda.set_rng_state_all(gpu_states)
