"""``minidl.cpu``: torch.cpu's names, so that device-agnostic code written against
``getattr(torch, device_type)`` runs for ``"cpu"`` as for ``"cuda"``. The CPU has one device,
no streams to wait for and no memory pool; ``get_capabilities()`` reports the instruction sets
the processor has (from /proc/cpuinfo on Linux, as torch's cpuinfo does)."""
from __future__ import annotations

import functools
import platform
import types

__all__ = ["is_available", "is_initialized", "synchronize", "current_device", "current_stream",
           "stream", "set_device", "device_count", "Stream", "StreamContext", "Event",
           "get_capabilities"]

# /proc/cpuinfo flag -> torch.cpu.get_capabilities() key, where the two differ
_X86_NAMES = {"pni": "sse3", "sse4_1": "sse4_1", "sse4_2": "sse4_2", "fma": "fma3",
              "avx512f": "avx512_f", "avx512cd": "avx512_cd", "avx512dq": "avx512_dq",
              "avx512bw": "avx512_bw", "avx512vl": "avx512_vl", "avx512ifma": "avx512_ifma",
              "avx512vbmi": "avx512_vbmi", "avx512_vbmi2": "avx512_vbmi2",
              "avx512_bitalg": "avx512_bitalg", "avx512_vpopcntdq": "avx512_vpopcntdq",
              "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16",
              "avx512_fp16": "avx512_fp16", "avx_vnni": "avx_vnni", "abm": "lzcnt"}
_X86_KEYS = ("sse", "sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "sse4a", "avx", "avx2",
             "avx_vnni", "avx512_f", "avx512_cd", "avx512_dq", "avx512_bw", "avx512_vl",
             "avx512_ifma", "avx512_vbmi", "avx512_vbmi2", "avx512_bitalg", "avx512_vpopcntdq",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8",
             "amx_fp16", "fma3", "fma4", "f16c", "bmi", "bmi1", "bmi2", "popcnt", "lzcnt", "aes",
             "sha", "clflush", "clflushopt", "clwb", "avx512_vp2intersect", "avx512_4vnniw",
             "avx512_4fmaps", "avx10_1", "avx10_2", "avx_vnni_int8", "avx_vnni_int16",
             "avx_ne_convert")


def _cpuinfo():
    """The fields of /proc/cpuinfo, one dict per logical processor ([] where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            blocks = f.read().strip().split("\n\n")
    except OSError:
        return []
    return [dict((k.strip(), v.strip()) for k, _, v in (line.partition(":")
                                                       for line in block.splitlines()))
            for block in blocks]


def _cache_size(level, kind):
    """Bytes of cpu0's cache of that level and type (sysfs), or None."""
    import glob

    def read(path):
        with open(path) as f:
            return f.read().strip()

    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            if int(read(f"{path}/level")) != level or read(f"{path}/type") not in kind:
                continue
            size = read(f"{path}/size")
            return int(size.rstrip("KM")) * {"K": 1024, "M": 1024 ** 2}.get(size[-1:], 1)
        except (OSError, ValueError):
            continue
    return None


@functools.lru_cache(None)
def get_capabilities():
    """A read-only mapping of the instruction sets this processor has (``{"avx2": True,
    "avx512_f": False, ...}`` on x86-64, ``{"neon": True, ...}`` on ARM64) and its
    ``architecture``, ``cpu_name`` (the kernel's model name), core and socket counts and L1d/L2
    cache sizes in bytes; the keys are torch's. Empty where the processor cannot be read."""
    procs = _cpuinfo()
    flags = set((procs[0].get("flags") or procs[0].get("Features") or "").split()) if procs \
        else set()
    if not flags:
        return types.MappingProxyType({})
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        have = {_X86_NAMES.get(f, f) for f in flags}
        caps = {k: k in have for k in _X86_KEYS}
        caps["bmi"] = caps.pop("bmi1") or "bmi1" in flags
        caps["sha"] = "sha_ni" in flags or "sha" in flags
    else:
        caps = {"neon": "asimd" in flags or "neon" in flags, "fp16_arith": "asimdhp" in flags,
                "bf16": "bf16" in flags, "i8mm": "i8mm" in flags, "dot": "asimddp" in flags,
                "sve": "sve" in flags, "sve2": "sve2" in flags}
    caps["architecture"] = platform.machine()
    caps["cpu_name"] = procs[0].get("model name", "")
    caps["num_logical_cores"] = len(procs)
    cores = {(p.get("physical id"), p.get("core id")) for p in procs}
    caps["num_physical_cores"] = len(cores) if ("0", "0") in cores else len(procs)
    caps["num_sockets"] = len({p.get("physical id") for p in procs})
    for key, level, kind in (("l1d_cache_size", 1, ("Data",)), ("l2_cache_size", 2, ("Unified",
                                                                                        "Data"))):
        size = _cache_size(level, kind)
        if size is not None:
            caps[key] = size
    return types.MappingProxyType(caps)


def is_available() -> bool:
    """Always True."""
    return True


def is_initialized() -> bool:
    """Always True."""
    return True


def synchronize(device=None) -> None:
    """Nothing to wait for: the CPU's work is done when its call returns."""
    _check_device(device, "synchronize")


def device_count() -> int:
    """Always 1."""
    return 1


def current_device() -> str:
    """Always ``"cpu"``."""
    return "cpu"


def set_device(device) -> None:
    """A no-op, as torch's (there is one CPU device)."""
    _check_device(device, "set_device")


def _check_device(device, name):
    if device is None or isinstance(device, int):
        return
    from .backend import device as _device

    if _device(device).type != "cpu":
        raise ValueError(f"minidl.cpu.{name}: expected a CPU device, got {device!r}")


class Stream:
    """A stand-in so that stream code runs on the CPU; waiting on it does nothing."""

    def __init__(self, priority: int = -1) -> None:
        self.priority = priority

    def wait_stream(self, stream) -> None:
        pass

    def record_event(self) -> None:
        pass

    def wait_event(self, event) -> None:
        pass


class Event:
    """A stand-in: always complete."""

    def query(self) -> bool:
        return True

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass


_default_stream = Stream()
_current = [_default_stream]


def current_stream(device=None) -> Stream:
    """The stream selected by ``with minidl.cpu.stream(s):`` (else the default one)."""
    return _current[0]


class StreamContext:
    """``with minidl.cpu.stream(s):`` makes ``s`` the current stream inside."""

    def __init__(self, stream):
        self.stream, self.prev_stream = stream, _default_stream

    def __enter__(self):
        if self.stream is not None:
            self.prev_stream, _current[0] = _current[0], self.stream

    def __exit__(self, *exc_info):
        if self.stream is not None:
            _current[0] = self.prev_stream


def stream(stream) -> StreamContext:
    return StreamContext(stream)


class _Amp:
    """``torch.cpu.amp``'s deprecated names: ``autocast(...)`` is ``minidl.autocast("cpu",
    ...)``, ``GradScaler(...)`` is ``minidl.amp.GradScaler("cpu", ...)``, each with torch's
    FutureWarning."""

    @staticmethod
    def autocast(enabled=True, dtype=None, cache_enabled=True):
        from .amp.deprecated import device_autocast

        return device_autocast("cpu", enabled, dtype)  # bfloat16 by default, as torch's

    @staticmethod
    def GradScaler(init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,  # noqa: N802
                   growth_interval=2000, enabled=True):
        from .amp.deprecated import device_grad_scaler

        return device_grad_scaler("cpu", init_scale, growth_factor, backoff_factor,
                                  growth_interval, enabled)


amp = _Amp()
