"""minidl: a small deep-learning framework on NumPy (numba on the CPU, CuPy on CUDA).

    import minidl
    import minidl.nn as nn
    import minidl.nn.functional as F
"""
from .backend import cuda_available, manual_seed
from .ops import cat, clamp, clip, maximum, minimum, stack, where
from .serialization import load, save
from .tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from .autograd import inference_mode, set_grad_enabled
from .backend import device
from . import data, nn, optim, testing  # noqa: E402,F401  (minidl.optim.SGD etc., as in torch)
from . import amp, backends, compiler, cuda, futures, jit, utils  # noqa: E402,F401
from . import hub, random  # noqa: E402,F401  (torch.hub on local files; torch.random)
from . import accelerator, cpu  # noqa: E402,F401  (torch.accelerator, torch.cpu)
from .legacy_types import CPU as _LEGACY_TYPES  # noqa: E402  (minidl.FloatTensor, ...)

globals().update(_LEGACY_TYPES)
from .amp import autocast  # noqa: E402
from .backend.dtypes import complex64, complex128, float16, float32, float64  # noqa: E402
from .creation import (  # noqa: E402
    arange, bernoulli, empty, empty_like, eye, from_numpy, full, full_like, linspace, logspace,
    multinomial,
    normal, ones, ones_like, rand, rand_like, randint, randint_like, randn, randn_like, randperm,
    zeros, zeros_like,
)
from .tensor_functions import (  # noqa: E402,F401  (max, min: minidl.max(x, dim) as torch.max)
    finfo, get_default_dtype, iinfo, is_tensor, max, min, numel,
)
from .tensor_functions import (  # noqa: E402
    get_default_device, set_default_device, set_default_dtype,
)
from . import tensor_functions as _tensor_functions  # noqa: E402
from . import runtime  # noqa: E402
from .runtime import (  # noqa: E402,F401  (in __all__ below, compile aside)
    Size, are_deterministic_algorithms_enabled, as_tensor, can_cast, compile,
    get_float32_matmul_precision, get_num_threads, get_rng_state, initial_seed,
    is_deterministic_algorithms_warn_only_enabled, promote_types, result_type, seed,
    set_float32_matmul_precision, set_printoptions, set_rng_state, use_deterministic_algorithms,
)
from .backend import default_generator  # noqa: E402,F401


from .version import __version__  # noqa: E402,F401  (one place: minidl/version.py)


def set_num_threads(n):
    """Threads for the CPU kernels (numba) and numpy's BLAS, as ``torch.set_num_threads``."""
    from .backend.cpu import tuning

    return tuning.set_num_threads(n)


# PyTorch's other dtype names, as NumPy dtypes; looked up through __getattr__ so that names
# such as ``float``, ``int`` and ``bool`` do not shadow the builtins inside this module
_DTYPE_NAMES = {"int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
                "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
                "bool": "bool", "half": "float16", "float": "float32",
                "double": "float64", "long": "int64", "int": "int32", "short": "int16",
                "cfloat": "complex64", "cdouble": "complex128"}


def __getattr__(name):
    # ml_dtypes takes half a second to import: minidl.bfloat16 loads it when first asked for
    if name == "bfloat16":
        from .backend.dtypes import bfloat16_dtype

        return bfloat16_dtype()
    if name in _DTYPE_NAMES:
        import numpy

        return numpy.dtype(_DTYPE_NAMES[name])
    if name in ("onnx", "fx"):  # torch.onnx's and torch.fx's places; imported when first used
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minidl' has no attribute {name!r}")


__all__ = ["Tensor", "Function", "tensor", "no_grad", "enable_grad", "is_grad_enabled",
           "manual_seed", "cuda_available", "save", "load", "zeros", "ones", "randn",
           "from_numpy", "set_num_threads", "cat", "stack", "autocast", "float16", "float32", "float64", "bfloat16",
           "complex64", "complex128",
           "arange", "full", "full_like", "zeros_like", "ones_like", "rand", "randint", "linspace", "eye",
           "where", "maximum", "minimum", "clamp", "clip", "device", "set_grad_enabled",
           "inference_mode", "empty", "empty_like", "rand_like", "randn_like", "randint_like",
           "randperm", "normal", "bernoulli", "multinomial", "is_tensor", "numel",
           "is_floating_point", "get_default_dtype", "finfo", "iinfo",
           "default_generator", "logspace", "set_default_dtype", "get_default_device",
           "set_default_device"]  # max and min stay out: import * must not shadow the builtins
__all__ += [n for n in runtime.__all__ if n != "compile"]  # nor compile

# PyTorch's tensor ops beyond the core, each under its torch name (minidl.gather, minidl.sort,
# minidl.einsum, ...; also a Tensor method where torch has one): indexing.py (gather, scatter,
# index_select, ...), shape_ops.py (sort, flip, roll, tril, ...), math_ops.py (cumsum, sin,
# prod, logsumexp, comparisons, ...),
# products.py (mm, bmm, einsum, ...); torch.linalg's norms in minidl.linalg
from . import linalg  # noqa: E402,F401
from . import indexing as _indexing, math_ops as _math_ops  # noqa: E402
from . import products as _products, shape_ops as _shape_ops  # noqa: E402


def _export(functions):
    for name, fn in functions.items():
        globals()[name] = fn
        if name not in __all__:
            __all__.append(name)


_export({n: getattr(_indexing, n) for n in _indexing.__all__})
_export({n: getattr(_shape_ops, n) for n in _shape_ops.FUNCTIONS})
_export(_math_ops.FUNCTIONS)
_export({n: getattr(_products, n) for n in _products.FUNCTIONS})
_export(linalg.FUNCTIONS)  # det, inverse, svd (torch.svd's U, S, V), qr, ...
from . import special  # noqa: E402  (minidl.special.erf, ...; minidl.erf, minidl.lgamma, ...)
_export(special.FUNCTIONS)
from . import complex_ops as _complex_ops  # noqa: E402  (minidl.real, minidl.complex, ...)
_export(_complex_ops.FUNCTIONS)
__all__.remove("complex")  # as max and min: import * must not shadow the builtin
from . import fft  # noqa: E402,F401  (minidl.fft, as torch.fft)
from . import _foreach  # noqa: E402  (minidl._foreach_lerp_, ... as torch's private ops)

globals().update(_foreach.functions())
from . import spectral as _spectral  # noqa: E402  (minidl.stft, minidl.istft)
_export(_spectral.FUNCTIONS)
for _name, _fn in _spectral.TENSOR_METHODS.items():
    setattr(Tensor, _name, _fn)
del _export

# minidl.exp(x), minidl.flatten(x, 1), ...: the Tensor methods torch also has as functions,
# where no module above defined the name (tensor_functions.py)
_tensor_functions._install(globals())
from . import distributions  # noqa: E402,F401  (minidl.distributions, as torch.distributions)
# more of PyTorch's tensor ops: pointwise.py (asinh, copysign, fmax, gcd, ...), statistics.py
# (quantile, mode, cov, ...), structure.py (tensordot, kron, diag_embed, *_scatter, ...)
from . import pointwise as _pointwise, statistics as _statistics  # noqa: E402
from . import sampling as _sampling, structure as _structure  # noqa: E402

for _name, _fn in {**_pointwise.FUNCTIONS, **_statistics.FUNCTIONS,
                   **_structure.FUNCTIONS, **_sampling.FUNCTIONS}.items():
    globals()[_name] = _fn
    if _name not in __all__:
        __all__.append(_name)
del _name, _fn
from . import func  # noqa: E402,F401  (minidl.func.functional_call, as torch.func)
from . import library  # noqa: E402,F401  (minidl.library.custom_op, as torch.library)
from . import masked  # noqa: E402,F401  (minidl.masked.sum(x, mask=m), as torch.masked)
from .segment import segment_reduce  # noqa: E402,F401  (torch.segment_reduce)
from .backend import Generator  # noqa: E402,F401  (torch.Generator: an independent generator)
from .backend import OutOfMemoryError  # noqa: E402,F401  (torch.OutOfMemoryError)
from .utils.dlpack import from_dlpack  # noqa: E402,F401  (torch.from_dlpack)

__all__.append("Generator")
from . import profiler  # noqa: E402,F401  (minidl.profiler, as torch.profiler)
from . import multiprocessing  # noqa: E402,F401  (torch.multiprocessing: spawn, ...)
# torch.autograd's names above the ops layer: autograd.functional (vjp, jacobian, hessian...),
# autograd.gradcheck/gradgradcheck and autograd.profiler, set here so that autograd imports nothing above it
import sys as _sys  # noqa: E402

from . import _autograd_functional, autograd as _autograd, testing as _testing  # noqa: E402

_autograd.functional = _autograd_functional
_sys.modules[__name__ + ".autograd.functional"] = _autograd_functional
_autograd.gradcheck, _autograd.gradgradcheck = _testing.gradcheck, _testing.gradgradcheck
from .ops import cat as _ops_cat  # noqa: E402

_autograd.concat = _ops_cat  # a custom function's jvp of several outputs (autograd._JvpTransposed)
from .profiler import legacy as _legacy_profiler  # noqa: E402  (torch.autograd.profiler)

_autograd.profiler = _legacy_profiler
_sys.modules[__name__ + ".autograd.profiler"] = _legacy_profiler
del _sys, _testing, _autograd, _legacy_profiler
from .shape_ops import (  # noqa: E402,F401  (torch.channels_last, ...)
    channels_last, channels_last_3d, contiguous_format, memory_format, preserve_format,
)

__all__ += ["channels_last", "channels_last_3d", "contiguous_format", "memory_format",
            "preserve_format"]
# torch's names beyond the tensor ops: constants (pi, inf, newaxis), the functional forms at
# top level (conv2d, dropout, layer_norm, kl_div, ...), the in-place functions (relu_, exp_),
# grad-mode and autocast queries, range/asarray/frombuffer (_torch_namespace.py)
from . import _torch_namespace  # noqa: E402
from .func import vmap  # noqa: E402,F401

__all__ += [n for n in _torch_namespace.install(globals()) if n not in ("range", "e")]
from . import _torch_more  # noqa: E402  (poisson, binomial, svd/pca_lowrank, dtype, ...)

__all__ += _torch_more.install(globals())
__all__.append("vmap")
from . import signal  # noqa: E402,F401  (minidl.signal.windows, as torch.signal)

globals().update(signal.windows.TOP_LEVEL)  # minidl.hann_window, ...
__all__ += list(signal.windows.TOP_LEVEL)
# sparse COO tensors (minidl.sparse_coo_tensor, x.to_sparse(), minidl.sparse.mm, ...)
from . import sparse  # noqa: E402,F401  (minidl.sparse.mm, as torch.sparse)
from .sparse import layout, sparse_coo, sparse_coo_tensor, strided  # noqa: E402
from .sparse import hspmm, smm  # noqa: E402

__all__ += ["sparse_coo_tensor", "layout", "sparse_coo", "strided", "smm", "hspmm"]
# the compressed layouts (CSR, CSC, BSR, BSC) and their constructors
from .sparse_compressed import (  # noqa: E402
    sparse_bsc, sparse_bsc_tensor, sparse_bsr, sparse_bsr_tensor, sparse_compressed_tensor,
    sparse_csc, sparse_csc_tensor, sparse_csr, sparse_csr_tensor)

__all__ += ["sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "sparse_csr_tensor",
            "sparse_csc_tensor", "sparse_bsr_tensor", "sparse_bsc_tensor",
            "sparse_compressed_tensor"]
from . import ao  # noqa: E402  (minidl.ao.quantization, as torch.ao.quantization)
import sys as _sys  # noqa: E402

_sys.modules[__name__ + ".quantization"] = ao.quantization  # minidl.quantization, as torch's
quantization = ao.quantization
# torch.nn.quantized / .quantized.dynamic / .qat: torch's older names of the ao modules
_sys.modules[__name__ + ".nn.quantized"] = nn.quantized = ao.nn.quantized
_sys.modules[__name__ + ".nn.quantized.dynamic"] = ao.nn.quantized.dynamic
_sys.modules[__name__ + ".nn.qat"] = nn.qat = ao.nn.qat
for _name in ao.quantization.TOP_LEVEL:  # minidl.quint8, minidl.quantize_per_tensor, ...
    globals()[_name] = getattr(ao.quantization, _name)
del _sys, _name
# nested (ragged) tensors, as torch.nested: minidl.nested.nested_tensor(..., layout=minidl.jagged)
from . import nested  # noqa: E402,F401
from .sparse import jagged  # noqa: E402
__all__ += ["jagged"]
