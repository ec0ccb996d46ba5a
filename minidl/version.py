"""``torch.version``: ``__version__``, and ``cuda``, the CUDA runtime version CuPy was built
with ("13.0"), or None without CuPy (as torch's CPU build)."""
from __future__ import annotations

__all__ = ["__version__", "hip", "debug", "git_version"]  # and cuda, read when asked

__version__ = "0.1.0"
hip = None
debug = False
git_version = "unknown"


def _cuda_version():
    from .backend import _load_cupy

    cp = _load_cupy()
    if cp is None:
        return None
    try:
        v = int(cp.cuda.runtime.runtimeGetVersion())
    except Exception:  # noqa: BLE001  (CuPy without a usable runtime)
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def __getattr__(name):
    if name == "cuda":
        return _cuda_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
