"""What the processor can do: the instruction sets in torch.cpu.get_capabilities()'s keys,
read from /proc/cpuinfo on Linux (as torch's cpuinfo does). It lives in the backend layer so
that the kernels' own choices (torch_random's rounding recipes) can ask without importing the
public ``minidl.cpu`` module, which re-exports ``get_capabilities``; ``cpu_capability`` is
``minidl.backends.cpu.get_cpu_capability``."""
from __future__ import annotations

import functools
import os
import platform
import types
import warnings

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


def cpu_capability():
    """torch's ``get_cpu_capability()``: "AVX512", "AVX2" or "DEFAULT" on x86-64 (the widest
    vector code torch would run here), "DEFAULT" elsewhere; or the level the environment
    variable ``ATEN_CPU_CAPABILITY`` names ("avx512", "avx2" or "default", lower case, taken
    as given, as torch takes it), warning and ignoring any other value as torch does."""
    caps = get_capabilities()
    asked = os.environ.get("ATEN_CPU_CAPABILITY")
    if asked is not None:
        names = {"default": "DEFAULT"}
        if "avx2" in caps:  # x86-64: torch has AVX2 and AVX-512 kernels to choose
            names.update(avx2="AVX2", avx512="AVX512")
        if asked in names:
            return names[asked]
        warnings.warn(f"ignoring invalid value for ATEN_CPU_CAPABILITY: {asked}",
                      UserWarning, stacklevel=3)
    if caps.get("avx512_f") and caps.get("avx512_bw") and caps.get("avx512_vl"):
        return "AVX512"
    return "AVX2" if caps.get("avx2") else "DEFAULT"
