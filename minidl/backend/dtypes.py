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
complex64 = np.dtype(np.complex64)
complex128 = np.dtype(np.complex128)
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


def is_real_number(x) -> bool:
    """A Python or NumPy real number (Python's bool too, as an int; not np.bool_), a bfloat16
    NumPy scalar included: ml_dtypes' scalars are np.generic but not np.floating."""
    return isinstance(x, (int, float, np.integer, np.floating)) or (
        isinstance(x, np.generic) and is_floating(x.dtype))


def is_complex(dtype) -> bool:
    """complex64 or complex128."""
    return dtype.kind == "c"


def is_differentiable(dtype) -> bool:
    """The dtypes a tensor that requires grad can have: floating or complex."""
    return dtype.kind in "fc" or is_floating(dtype)


def complex_of(dtype) -> np.dtype:
    """The complex dtype whose parts are ``dtype``'s precision, as torch's ``toComplexType``:
    complex128 for float64, complex64 for the others (float16 and bfloat16 included: torch's
    complex32 is not a NumPy dtype); a complex dtype is itself."""
    if dtype.kind == "c":
        return dtype
    return complex128 if dtype == float64 else complex64


def real_of(dtype) -> np.dtype:
    """The real dtype of a complex dtype's parts (float32 for complex64), as torch's
    ``toRealValueType``; a real dtype is itself."""
    if dtype.kind != "c":
        return dtype
    return float64 if dtype == complex128 else float32


def is_low_precision(dtype) -> bool:
    """float16 or bfloat16: the dtypes autocast computes in."""
    return dtype.itemsize == 2 and is_floating(dtype)


def channel_dtype(dtype) -> np.dtype:
    """The dtype of per-channel numbers (batch-norm statistics, scale, shift and their
    gradients) beside activations of ``dtype``: float32 for 16-bit activations (mixed
    precision), the activations' own dtype otherwise."""
    return np.dtype(np.float32) if is_low_precision(dtype) else dtype


def as_dtype(dtype) -> np.dtype:
    """np.dtype of a dtype-like, including the names 'bfloat16', 'half', 'float', 'double',
    'cfloat' and 'cdouble'."""
    if isinstance(dtype, str):
        name = {"half": "float16", "float": "float32", "double": "float64",
                "bf16": "bfloat16", "fp16": "float16", "cfloat": "complex64",
                "cdouble": "complex128", "complex": "complex64"}.get(dtype, dtype)
        if name == "bfloat16":
            return bfloat16_dtype()
        dtype = name
    return np.dtype(dtype)

# ---- type promotion, as PyTorch's: a category (bool < integer < floating < complex) rises to the
# highest among the operands; within a category, a tensor with dimensions decides over a 0-d
# tensor, and a 0-d tensor over a Python number (``x * 2.0`` stays float32, ``x * 2`` too)
def category(dtype):
    kind = dtype.kind
    return 0 if kind == "b" else (1 if kind in "iu" else (3 if kind == "c" else 2))


# the unsigned types torch added in 2.3 with "limited support": they promote only with
# themselves and with the floating types, as torch.promote_types
WIDE_UNSIGNED = frozenset(np.dtype(t) for t in ("uint16", "uint32", "uint64"))
_TORCH_SCALAR_NAMES = {"bool": "Bool", "uint8": "Byte", "int8": "Char", "int16": "Short",
                       "int32": "Int", "int64": "Long", "float16": "Half",
                       "bfloat16": "BFloat16", "float32": "Float", "float64": "Double",
                       "complex64": "ComplexFloat", "complex128": "ComplexDouble",
                       "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64"}


def torch_scalar_name(dtype) -> str:
    """torch's ScalarType name of ``dtype`` (``Long`` for int64), as its errors print it."""
    return _TORCH_SCALAR_NAMES.get(dtype.name, dtype.name)


class UnsignedPromotionError(TypeError, RuntimeError):
    """uint16/uint32/uint64 meeting another non-floating dtype: torch refuses the promotion
    (a RuntimeError there, a TypeError as minidl's other dtype errors)."""


def promote_types(a, b):
    """Within one tier of operands: NumPy's promotion, except that a floating type meets an
    integer type as itself (NumPy makes int64 + float16 float64; PyTorch float16), and a
    complex type meets a real one at the wider precision of the two (float64 + complex64 is
    complex128, float16 + complex64 complex64). uint16/32/64 promote only with a floating
    type (to it), as torch's."""
    if a == b:
        return a
    ca, cb = category(a), category(b)
    # (kind and itemsize, not a set look-up that hashes both dtypes on every promotion)
    if ((a.kind == "u" and a.itemsize > 1) or (b.kind == "u" and b.itemsize > 1)) and not (
            (ca == 2 and b.kind == "u") or (cb == 2 and a.kind == "u")):
        raise UnsignedPromotionError(
            f"Promotion for uint16, uint32, uint64 types is not supported, attempted to "
            f"promote {torch_scalar_name(a)} and {torch_scalar_name(b)}")
    if 3 in (ca, cb):
        wide = a if ca == 3 and (cb != 3 or a.itemsize >= b.itemsize) else b
        other = b if wide is a else a
        return complex128 if other.kind in "fc" and real_of(other) == float64 else wide
    if ca != cb and 2 in (ca, cb):
        return a if ca == 2 else b
    return np.promote_types(a, b)


def combine_dtypes(higher, lower):
    """PyTorch's combine_categories: the higher tier's dtype, unless the lower tier is of a
    higher category; a floating tier meeting a complex one lower down keeps its precision
    (float32 tensor + complex128 number is complex64)."""
    ch = category(higher)
    if ch == 3:
        return higher
    if ch == 2:
        return complex_of(higher) if lower.kind == "c" else higher
    if higher.kind == "b" or category(lower) >= 2:
        return promote_types(higher, lower)
    return higher


DEFAULT_FLOAT = np.dtype(np.float32)  # the initial default; default_float() is the current one
# the dtypes Python numbers take part in promotion with; SCALAR_DTYPES[float] is minidl's
# default floating dtype (set_default_float changes it), one dict look-up on the hot path
SCALAR_DTYPES = {bool: np.dtype(np.bool_), int: np.dtype(np.int64), float: DEFAULT_FLOAT,
                 complex: complex64}


def default_float() -> np.dtype:
    """The default floating dtype (``minidl.get_default_dtype()``): what float creation,
    layers' parameters and integer-to-float promotion make."""
    return SCALAR_DTYPES[float]


def set_default_float(dtype) -> None:
    """Make ``dtype`` (float32, float64, float16 or bfloat16) the default floating dtype."""
    try:
        dt = as_dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not is_floating(dt):
        raise TypeError(f"set_default_dtype: only floating-point types are supported as the "
                        f"default type, got {dtype!r}")
    SCALAR_DTYPES[float] = dt
    SCALAR_DTYPES[complex] = complex128 if dt == float64 else complex64


def default_complex() -> np.dtype:
    """The complex dtype of the default float's precision (complex64 beside float32, complex128
    beside float64): what Python complex numbers and complex creation make."""
    return SCALAR_DTYPES[complex]


def scalar_dtype(x):
    """The dtype a Python (or NumPy) number takes part in promotion with."""
    dt = SCALAR_DTYPES.get(type(x))
    if dt is None:
        kind = np.asarray(x).dtype.kind
        dt = SCALAR_DTYPES[bool if kind == "b" else int if kind in "iu" else
                           complex if kind == "c" else float]
    return dt
