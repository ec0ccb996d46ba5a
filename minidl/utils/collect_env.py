"""What to paste into a bug report: ``python -m minidl.utils.collect_env`` prints the versions
of minidl and of what it runs on (Python, NumPy and its BLAS, numba and its threads, CuPy and
the GPU, mpi4py and MPI, torch if installed), the CPU and the operating system."""
from __future__ import annotations

import importlib
import os
import platform
import sys

__all__ = ["get_env_info", "get_pretty_env_info", "main"]


def _version(name):
    try:
        module = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001  (a broken install is worth reporting too)
        return "not installed" if isinstance(e, ImportError) else f"fails to import ({e})"
    return str(getattr(module, "__version__", "installed"))


def _blas():
    try:
        import numpy as np

        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def _gpu():
    from .. import cuda

    if not cuda.is_available():
        return "none (CuPy not installed or no GPU found)"
    return ", ".join(f"{i}: {cuda.get_device_name(i)}" for i in range(cuda.device_count()))


def get_env_info():
    """The report's fields, as a dict of strings."""
    import minidl

    from .. import cpu

    caps = cpu.get_capabilities()
    try:
        import numba

        threads = f"{numba.config.NUMBA_NUM_THREADS} (layer: {numba.config.THREADING_LAYER})"
    except ImportError:
        threads = "numba not installed"
    return {
        "minidl": getattr(minidl, "__version__", "unknown"),
        "Python": f"{sys.version.split()[0]} ({platform.python_implementation()})",
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "CPU": f"{caps.get('cpu_name') or platform.processor() or 'unknown'}, "
               f"{os.cpu_count()} logical cores, vector ISA "
               f"{minidl.backends.cpu.get_cpu_capability()}",
        "NumPy": _version("numpy"), "BLAS": _blas(), "numba": _version("numba"),
        "numba threads": threads, "CuPy": _version("cupy"), "GPU": _gpu(),
        "mpi4py": _version("mpi4py"), "ml_dtypes": _version("ml_dtypes"),
        "Pillow": _version("PIL"), "torch": _version("torch"),
    }


def get_pretty_env_info():
    info = get_env_info()
    width = max(len(k) for k in info)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in info.items())


def main():
    print("Collecting environment information...")
    print(get_pretty_env_info())


if __name__ == "__main__":
    main()
