"""NVIDIA cuDNN convolutions for the CUDA backend, called through ctypes (optional).

The im2col + cuBLAS path in ``functional.Conv2d`` is the reference and runs everywhere. Where
cuDNN's library can be loaded, CUDA convolutions in float32, float16, bfloat16 and float64 run
through cuDNN instead (forward, data gradient and filter gradient), as they do in PyTorch: an
implicit-GEMM convolution never writes the kh*kw-times copy of its input that im2col does.

CuPy 14 no longer wraps cuDNN, so this module binds the dozen C functions it needs with ctypes:
no compiled extension, nothing to build. The library comes from NVIDIA's ``nvidia-cudnn-cu13``
wheel (``pip install minidl[cudnn]``; PyTorch's CUDA wheels install it too). It uses cuDNN's
descriptor-based convolution API, which cuDNN 9 keeps beside its graph API.

Switches (``minidl.backends.cudnn``): ``enabled`` (``MINIDL_CUDNN=0`` turns it off for a
process) and ``allow_tf32`` (the TF32 switch shared with matmul: off, float32 convolutions use
FMA math only, as ``torch.backends.cudnn.allow_tf32 = False``). ``MINIDL_CUDNN_LIBRARY`` names
the library file where it is not found by itself. Algorithms come from cuDNN's heuristics (as
PyTorch's default ``benchmark = False``), the first whose workspace fits
``MINIDL_CUDNN_WORKSPACE_MB`` (1024 by default); a shape cuDNN has no algorithm for falls back
to im2col.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import threading

import numpy as np


LIBRARY_NAMES = ("libcudnn.so.9", "libcudnn.so")

# cuDNN's enums (cudnn_graph.h, cudnn_cnn.h), with their C values
_DATA_TYPE = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 9}
_NCHW = 0
_CROSS_CORRELATION = 1  # what deep-learning frameworks call convolution
_DEFAULT_MATH, _TENSOR_OP_MATH, _FMA_MATH = 0, 1, 3
_STATUS_SUCCESS = 0
_MAX_ALGOS = 16


class _AlgoPerf(ctypes.Structure):
    """cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t: the three share one layout."""
    _fields_ = [("algo", ctypes.c_int), ("status", ctypes.c_int), ("time", ctypes.c_float),
                ("memory", ctypes.c_size_t), ("determinism", ctypes.c_int),
                ("mathType", ctypes.c_int), ("reserved", ctypes.c_int * 3)]


class CudnnError(RuntimeError):
    pass


_lock = threading.RLock()
_lib = None
_load_error = None
_handles = {}   # CUDA device id -> cudnnHandle_t
_plans = {}     # (shapes, stride, padding, dtype, math) -> _Plan
_enabled = os.environ.get("MINIDL_CUDNN", "1") not in ("0", "")


def candidate_paths():
    """Where the library may be, in the order tried: $MINIDL_CUDNN_LIBRARY, the nvidia-cudnn
    wheels' lib folders, then the dynamic loader's search path by name."""
    named = os.environ.get("MINIDL_CUDNN_LIBRARY")
    paths = [named] if named else []
    spec = importlib.util.find_spec("nvidia") if _nvidia_importable() else None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        for pattern in ("cudnn/lib/libcudnn.so.*", "cu1*/lib/libcudnn.so.*"):
            paths.extend(sorted(p for p in glob.glob(os.path.join(root, pattern))
                                if p.endswith(LIBRARY_NAMES[0][len("libcudnn"):])))
    return paths + list(LIBRARY_NAMES)


def _nvidia_importable():
    try:
        return importlib.util.find_spec("nvidia") is not None
    except (ImportError, ValueError):
        return False


def load():
    """The loaded library, or None (``unavailable_reason()`` says why)."""
    global _lib, _load_error
    with _lock:
        if _lib is not None or _load_error is not None:
            return _lib
        errors = []
        for path in candidate_paths():
            try:
                lib = ctypes.CDLL(path)
                lib.cudnnGetVersion.restype = ctypes.c_size_t
                version = lib.cudnnGetVersion()
            except (OSError, AttributeError) as exc:
                errors.append(f"{path}: {exc}")
                continue
            if version < 8000:
                errors.append(f"{path}: cuDNN {version} is older than 8.0")
                continue
            lib.cudnnGetErrorString.restype = ctypes.c_char_p
            _lib = lib
            return _lib
        _load_error = ("no cuDNN library found (install it with `pip install minidl[cudnn]`, or "
                       "name it in MINIDL_CUDNN_LIBRARY); tried: " + "; ".join(errors))
        return None


def unavailable_reason():
    return None if load() is not None else _load_error


def version():
    """cuDNN's version number (e.g. 92801 for 9.28.1), or None without the library."""
    lib = load()
    return None if lib is None else int(lib.cudnnGetVersion())


def is_available():
    return load() is not None


def enabled(flag=None):
    """Read, or with ``flag`` set, whether CUDA convolutions may use cuDNN."""
    global _enabled
    if flag is not None:
        _enabled = bool(flag)
    return _enabled


def _name(dtype):
    return dtype if isinstance(dtype, str) else np.dtype(dtype).name


def usable(dtype):
    """Whether convolutions of this dtype go to cuDNN: switched on, a float type cuDNN takes,
    and the library loaded."""
    return _enabled and _name(dtype) in _DATA_TYPE and load() is not None


def _check(status, what):
    if status != _STATUS_SUCCESS:
        message = _lib.cudnnGetErrorString(status).decode() if _lib is not None else ""
        raise CudnnError(f"cuDNN {what} failed: {message or status}")


def _descriptor(kind):
    d = ctypes.c_void_p()
    _check(getattr(_lib, f"cudnnCreate{kind}Descriptor")(ctypes.byref(d)), f"create {kind}")
    return d


def _tensor(shape, dtype):
    d = _descriptor("Tensor")
    _check(_lib.cudnnSetTensor4dDescriptor(d, _NCHW, _DATA_TYPE[dtype], *map(int, shape)),
           f"tensor descriptor {tuple(shape)} {dtype}")
    return d


def _filter(shape, dtype):
    d = _descriptor("Filter")
    _check(_lib.cudnnSetFilter4dDescriptor(d, _DATA_TYPE[dtype], _NCHW, *map(int, shape)),
           f"filter descriptor {tuple(shape)} {dtype}")
    return d


def math_type(dtype, allow_tf32):
    """PyTorch's choice: tensor cores for 16-bit data; for float32, TF32 only when allowed."""
    if dtype in ("float16", "bfloat16"):
        return _TENSOR_OP_MATH
    if dtype == "float32" and allow_tf32:
        return _DEFAULT_MATH
    return _FMA_MATH


def workspace_limit():
    return int(float(os.environ.get("MINIDL_CUDNN_WORKSPACE_MB", "1024")) * (1 << 20))


class _Plan:
    """The descriptors of one convolution shape and the algorithms chosen for it."""

    def __init__(self, x_shape, w_shape, stride, padding, dtype, math):
        self.dtype = dtype
        self.scalar = ctypes.c_double if dtype == "float64" else ctypes.c_float
        compute = _DATA_TYPE["float64" if dtype == "float64" else "float32"]
        self.conv = _descriptor("Convolution")
        _check(_lib.cudnnSetConvolution2dDescriptor(
            self.conv, int(padding[0]), int(padding[1]), int(stride[0]), int(stride[1]), 1, 1,
            _CROSS_CORRELATION, compute), "convolution descriptor")
        self.math = math
        _check(_lib.cudnnSetConvolutionMathType(self.conv, math), "math type")
        self.x = _tensor(x_shape, dtype)
        self.w = _filter(w_shape, dtype)
        dims = (ctypes.c_int * 4)()
        _check(_lib.cudnnGetConvolution2dForwardOutputDim(
            self.conv, self.x, self.w, *(ctypes.byref(dims, 4 * i) for i in range(4))),
            "output size")
        self.y_shape = tuple(dims)
        self.y = _tensor(self.y_shape, dtype)
        self.algos = {}

    def algorithm(self, handle, which):
        """(algo, workspace bytes) for 'forward', 'data' or 'filter', or None where cuDNN has
        no algorithm within the workspace limit."""
        if which not in self.algos:
            perf = (_AlgoPerf * _MAX_ALGOS)()
            count = ctypes.c_int()
            if which == "forward":
                args = (self.x, self.w, self.conv, self.y)
                fn = _lib.cudnnGetConvolutionForwardAlgorithm_v7
            elif which == "data":
                args = (self.w, self.y, self.conv, self.x)
                fn = _lib.cudnnGetConvolutionBackwardDataAlgorithm_v7
            else:
                args = (self.x, self.y, self.conv, self.w)
                fn = _lib.cudnnGetConvolutionBackwardFilterAlgorithm_v7
            _check(fn(handle, *args, _MAX_ALGOS, ctypes.byref(count), perf),
                   f"{which} algorithm search")
            limit = workspace_limit()
            choice = None
            for p in perf[:count.value]:
                if p.status != _STATUS_SUCCESS or p.memory > limit:
                    continue
                if self.math == _FMA_MATH and p.mathType != _FMA_MATH and \
                        p.mathType != _DEFAULT_MATH:
                    continue  # a tensor-core (TF32) algorithm while TF32 is off
                choice = (int(p.algo), int(p.memory))
                break
            self.algos[which] = choice
        return self.algos[which]


def _handle(cp):
    device = cp.cuda.Device().id
    handle = _handles.get(device)
    if handle is None:
        handle = ctypes.c_void_p()
        _check(_lib.cudnnCreate(ctypes.byref(handle)), "handle creation")
        _handles[device] = handle
    _check(_lib.cudnnSetStream(handle, ctypes.c_void_p(cp.cuda.get_current_stream().ptr)),
           "set stream")
    return handle


def plan(x_shape, w_shape, stride, padding, dtype, allow_tf32=False):
    if load() is None:
        raise CudnnError(_load_error)
    dtype = _name(dtype)
    math = math_type(dtype, allow_tf32)
    key = (tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding), dtype, math)
    with _lock:
        p = _plans.get(key)
        if p is None:
            if len(_plans) > 4096:
                _plans.clear()  # descriptors are small; this only bounds a shape-churning loop
            p = _plans[key] = _Plan(x_shape, w_shape, stride, padding, dtype, math)
    return p


def _ptr(a):
    return ctypes.c_void_p(a.data.ptr)


def _run(cp, p, which, fn, *operands):
    """Call a cuDNN convolution function with its algorithm and a workspace from CuPy's pool."""
    handle = _handle(cp)
    choice = p.algorithm(handle, which)
    if choice is None:
        raise CudnnError(f"cuDNN has no {which} algorithm for this convolution within "
                         f"MINIDL_CUDNN_WORKSPACE_MB; set minidl.backends.cudnn.enabled = False")
    algo, nbytes = choice
    ws = cp.empty(max(nbytes, 1), dtype=np.uint8)
    one, zero = p.scalar(1.0), p.scalar(0.0)
    (a, da), (b, db), out, dout = operands
    _check(fn(handle, ctypes.byref(one), a, _ptr(da), b, _ptr(db), p.conv, algo, _ptr(ws),
              ctypes.c_size_t(nbytes), ctypes.byref(zero), out, _ptr(dout)), which)


def supports_forward(cp, x_shape, w_shape, stride, padding, dtype, allow_tf32=False):
    """Whether cuDNN has a forward algorithm for this convolution (descriptors are checked too)."""
    try:
        return plan(x_shape, w_shape, stride, padding, dtype, allow_tf32).algorithm(
            _handle(cp), "forward") is not None
    except CudnnError:
        return False


def conv2d_forward(cp, x, w, stride, padding, allow_tf32=False):
    x, w = cp.ascontiguousarray(x), cp.ascontiguousarray(w)
    p = plan(x.shape, w.shape, stride, padding, x.dtype, allow_tf32)
    y = cp.empty(p.y_shape, dtype=x.dtype)
    _run(cp, p, "forward", _lib.cudnnConvolutionForward, (p.x, x), (p.w, w), p.y, y)
    return y


def conv2d_backward_data(cp, g, w, x_shape, stride, padding, allow_tf32=False):
    g, w = cp.ascontiguousarray(g), cp.ascontiguousarray(w)
    p = plan(x_shape, w.shape, stride, padding, g.dtype, allow_tf32)
    gx = cp.empty(tuple(x_shape), dtype=g.dtype)
    _run(cp, p, "data", _lib.cudnnConvolutionBackwardData, (p.w, w), (p.y, g), p.x, gx)
    return gx


def conv2d_backward_filter(cp, x, g, w_shape, stride, padding, allow_tf32=False):
    x, g = cp.ascontiguousarray(x), cp.ascontiguousarray(g)
    p = plan(x.shape, w_shape, stride, padding, g.dtype, allow_tf32)
    gw = cp.empty(tuple(w_shape), dtype=g.dtype)
    _run(cp, p, "filter", _lib.cudnnConvolutionBackwardFilter, (p.x, x), (p.y, g), p.w, gw)
    return gw
