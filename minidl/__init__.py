"""minidl: a small deep-learning framework on NumPy (numba on the CPU, CuPy on CUDA).

    import minidl
    import minidl.nn as nn
    import minidl.nn.functional as F
"""
from .backend import cuda_available, manual_seed
from .ops import cat, stack
from .serialization import load, save
from .tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from . import data, nn, optim, testing  # noqa: E402,F401  (minidl.optim.SGD etc., as in torch)
from . import amp, backends  # noqa: E402,F401
from .amp import autocast  # noqa: E402
from .backend.dtypes import float16, float32, float64  # noqa: E402


__version__ = "0.1.0"


def zeros(*shape, dtype="float32", requires_grad=False, device="cpu"):
    import numpy as np

    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def ones(*shape, dtype="float32", requires_grad=False, device="cpu"):
    import numpy as np

    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def randn(*shape, dtype="float32", requires_grad=False, device="cpu"):
    from .backend import rng

    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    values = rng().standard_normal(shape).astype(dtype)
    return Tensor(values, requires_grad=requires_grad, device=device)


def from_numpy(array):
    return Tensor(array)


def set_num_threads(n):
    """Threads for the CPU kernels (numba) and numpy's BLAS, as ``torch.set_num_threads``."""
    from .backend.cpu import tuning

    return tuning.set_num_threads(n)


def __getattr__(name):
    # ml_dtypes takes half a second to import: minidl.bfloat16 loads it when first asked for
    if name == "bfloat16":
        from .backend.dtypes import bfloat16_dtype

        return bfloat16_dtype()
    raise AttributeError(f"module 'minidl' has no attribute {name!r}")


__all__ = ["Tensor", "Function", "tensor", "no_grad", "enable_grad", "is_grad_enabled",
           "manual_seed", "cuda_available", "save", "load", "zeros", "ones", "randn",
           "from_numpy", "set_num_threads", "cat", "stack", "autocast", "float16", "float32", "float64", "bfloat16"]
