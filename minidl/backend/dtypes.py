"""The floating-point dtypes minidl computes in: float32 (the default), float64 (gradient
checks), and the two 16-bit types of mixed precision, float16 and bfloat16.

bfloat16 is ``ml_dtypes.bfloat16``, the NumPy dtype CuPy uses too. Importing ml_dtypes takes
half a second, so it is imported the first time bfloat16 is asked for, not with minidl.
"""
from __future__ import annotations

import numpy as np

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
_bfloat16 = None


def bfloat16_dtype() -> np.dtype:
    global _bfloat16
    if _bfloat16 is None:
        try:
            import ml_dtypes
        except ImportError:
            raise RuntimeError("bfloat16 needs the ml_dtypes package: pip install ml_dtypes") \
                from None
        _bfloat16 = np.dtype(ml_dtypes.bfloat16)
    return _bfloat16


def is_floating(dtype) -> bool:
    """float16/32/64 or bfloat16 (whose NumPy kind is 'V', not 'f')."""
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.name == "bfloat16")


def is_low_precision(dtype) -> bool:
    """float16 or bfloat16: the dtypes autocast computes in."""
    return dtype.itemsize == 2 and is_floating(dtype)


def channel_dtype(dtype) -> np.dtype:
    """The dtype of per-channel numbers (batch-norm statistics, scale, shift and their
    gradients) beside activations of ``dtype``: float32 for 16-bit activations (mixed
    precision), the activations' own dtype otherwise."""
    return np.dtype(np.float32) if is_low_precision(dtype) else dtype


def as_dtype(dtype) -> np.dtype:
    """np.dtype of a dtype-like, including the names 'bfloat16', 'half', 'float' and 'double'."""
    if isinstance(dtype, str):
        name = {"half": "float16", "float": "float32", "double": "float64",
                "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
        if name == "bfloat16":
            return bfloat16_dtype()
        dtype = name
    return np.dtype(dtype)
