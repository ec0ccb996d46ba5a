"""NVIDIA cuDNN convolutions for the CUDA backend, called through ctypes (optional).

The im2col + cuBLAS path in ``functional.Conv2d`` is the reference and runs everywhere. Where
cuDNN's library can be loaded, CUDA convolutions in float32, float16, bfloat16 and float64 run
through cuDNN instead (forward, data gradient and filter gradient), as they do in PyTorch: an
implicit-GEMM convolution never writes the kh*kw-times copy of its input that im2col does.

CuPy 14 no longer wraps cuDNN, so this module binds the C functions it needs with ctypes: no
compiled extension, nothing to build. The library comes from NVIDIA's ``nvidia-cudnn-cu13``
wheel (``pip install minidl[cudnn]``; PyTorch's CUDA wheels install it too).

Two of cuDNN's APIs are used. The graph ("backend") API is the default, as in PyTorch: each
convolution shape and direction becomes an operation graph, cuDNN's heuristics rank its engine
configurations, and the first that builds (and that TF32-off float32 allows) is kept as a
finalized execution plan, so a call is one ``cudnnBackendExecute`` with a cached variant pack of
the data pointers. The older descriptor API (``cudnnConvolutionForward`` and friends) is the
fallback where no graph plan builds, or everywhere with ``MINIDL_CUDNN_API=legacy``: cuDNN 9
translates each such call into its graph machinery, which measured about 0.25 ms of host time per
call on an H200 machine (LeNet-5's training step went from 1.6 to 3.1 ms).

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

from .generic import out_size

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
        for folder in ("cudnn/lib", "cu1*/lib"):
            paths.extend(sorted(glob.glob(os.path.join(root, folder, LIBRARY_NAMES[0]))))
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
            if version < 90000:  # the enum values and APIs used here are cuDNN 9's
                errors.append(f"{path}: cuDNN {version} is older than 9.0")
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


_names = {}


def _name(dtype):
    if isinstance(dtype, str):
        return dtype
    name = _names.get(dtype)
    if name is None:
        name = _names[dtype] = np.dtype(dtype).name
    return name


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


def _handle_and_stream(cp):
    """This device's cuDNN handle, bound to CuPy's current stream (set again only when the
    stream changed), and that stream's pointer."""
    device = cp.cuda.runtime.getDevice()
    entry = _handles.get(device)
    if entry is None:
        handle = ctypes.c_void_p()
        _check(_lib.cudnnCreate(ctypes.byref(handle)), "handle creation")
        entry = _handles[device] = [handle, None]
    stream = cp.cuda.get_current_stream().ptr
    if entry[1] != stream:
        _check(_lib.cudnnSetStream(entry[0], ctypes.c_void_p(stream)), "set stream")
        entry[1] = stream
    return entry[0], stream


def _handle(cp):
    return _handle_and_stream(cp)[0]


def plan(x_shape, w_shape, stride, padding, dtype, allow_tf32=False):
    """The descriptor-API plan (legacy path) of a convolution shape."""
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


_LEGACY = {"forward": "cudnnConvolutionForward", "data": "cudnnConvolutionBackwardData",
           "filter": "cudnnConvolutionBackwardFilter"}


def _run_legacy(cp, handle, which, key, x, w, y):
    p = plan(*key)
    choice = p.algorithm(handle, which)
    if choice is None:
        raise CudnnError(f"cuDNN has no {which} algorithm for this convolution within "
                         f"MINIDL_CUDNN_WORKSPACE_MB; set minidl.backends.cudnn.enabled = False")
    algo, nbytes = choice
    ws = cp.empty(max(nbytes, 1), dtype=np.uint8)
    one, zero = p.scalar(1.0), p.scalar(0.0)
    fn = getattr(_lib, _LEGACY[which])
    # (input a, input b, output) by direction, with their descriptors
    a, b, out = {"forward": ((p.x, x), (p.w, w), (p.y, y)),
                 "data": ((p.w, w), (p.y, y), (p.x, x)),
                 "filter": ((p.x, x), (p.y, y), (p.w, w))}[which]
    _check(fn(handle, ctypes.byref(one), a[0], _ptr(a[1]), b[0], _ptr(b[1]), p.conv, algo,
              _ptr(ws), ctypes.c_size_t(nbytes), ctypes.byref(zero), out[0], _ptr(out[1])),
           which)


_api = "legacy" if os.environ.get("MINIDL_CUDNN_API", "graph") == "legacy" else "graph"


def api(name=None):
    """'graph' (the default) or 'legacy': which cuDNN API convolutions call. Read from
    $MINIDL_CUDNN_API when minidl is imported; ``api("legacy")`` switches at run time."""
    global _api
    if name is not None:
        if name not in ("graph", "legacy"):
            raise ValueError(f"cuDNN API must be 'graph' or 'legacy', got {name!r}")
        _api = name
    return _api


# (direction, handle, x shape, w shape, stride, padding, dtype, tf32) -> _Graph | False; a plan
# is built for one handle, so for one device
_graphs = {}
graph_errors = {}   # the same keys -> why no graph plan built (the legacy API ran instead)


def _y_shape(x_shape, w_shape, stride, padding):
    return (x_shape[0], w_shape[0]) + tuple(
        out_size(x_shape[2 + k], w_shape[2 + k], stride[k], padding[k]) for k in (0, 1))


def _graph(handle, which, key):
    gkey = (which, handle.value) + key
    g = _graphs.get(gkey)
    if g is None:
        x_shape, w_shape, stride, padding, dtype, allow_tf32 = key
        try:
            g = _Graph(handle, which, x_shape, w_shape, _y_shape(x_shape, w_shape, stride, padding),
                       stride, padding, dtype, allow_tf32)
        except CudnnError as exc:
            graph_errors[gkey] = str(exc)
            g = False
        _graphs[gkey] = g
    return g


def _aligned(cp, a):
    a = cp.ascontiguousarray(a)
    return a if a.data.ptr % _ALIGNMENT == 0 else a.copy()


# One workspace per (device, stream), grown to the largest a plan asks for: kernels on one stream
# run in order, so convolutions can share it, and its pointer stays put, so the variant packs
# (cached by pointers) are found again step after step.
_workspaces = {}


def _workspace(cp, handle_key, nbytes):
    ws = _workspaces.get(handle_key)
    if ws is None or ws.nbytes < nbytes:
        ws = _workspaces[handle_key] = None  # the old one goes back to the pool first
        ws = _workspaces[handle_key] = cp.empty(nbytes, dtype=np.uint8)
    return ws


def _convolve(cp, which, key, x, w, y):
    """Run one convolution direction; x, w, y are the (contiguous) input, filter and output
    arrays, of which ``which`` writes one: y (forward), x (data), w (filter)."""
    handle, stream = _handle_and_stream(cp)
    g = _graph(handle, which, key) if _api == "graph" else False
    if g:
        ws = _workspace(cp, (handle.value, stream), g.workspace).data.ptr if g.workspace else 0
        g.execute(handle, (x.data.ptr, w.data.ptr, y.data.ptr), ws)
    else:
        _run_legacy(cp, handle, which, key, x, w, y)


_ready = {}  # (device,) + key -> whether cuDNN runs this convolution's forward pass


def supports_forward(cp, x_shape, w_shape, stride, padding, dtype, allow_tf32=False):
    """Whether cuDNN takes this convolution (decided once per shape: a graph plan or a legacy
    algorithm for the forward pass)."""
    key = (tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding), _name(dtype),
           bool(allow_tf32))
    device = cp.cuda.runtime.getDevice()
    ready = _ready.get((device,) + key)
    if ready is None:
        try:
            handle = _handle(cp)
            ready = bool(_graph(handle, "forward", key)) if _api == "graph" else False
            if not ready:
                ready = plan(*key).algorithm(handle, "forward") is not None
        except CudnnError:
            ready = False
        _ready[(device,) + key] = ready
    return ready


def conv2d_forward(cp, x, w, stride, padding, allow_tf32=False):
    x, w = _aligned(cp, x), _aligned(cp, w)
    key = (x.shape, w.shape, tuple(stride), tuple(padding), _name(x.dtype), bool(allow_tf32))
    y = cp.empty(_y_shape(x.shape, w.shape, stride, padding), dtype=x.dtype)
    _convolve(cp, "forward", key, x, w, y)
    return y


def conv2d_backward_data(cp, g, w, x_shape, stride, padding, allow_tf32=False):
    g, w = _aligned(cp, g), _aligned(cp, w)
    key = (tuple(x_shape), w.shape, tuple(stride), tuple(padding), _name(g.dtype),
           bool(allow_tf32))
    gx = cp.empty(tuple(x_shape), dtype=g.dtype)
    _convolve(cp, "data", key, gx, w, g)
    return gx


def conv2d_backward_filter(cp, x, g, w_shape, stride, padding, allow_tf32=False):
    x, g = _aligned(cp, x), _aligned(cp, g)
    key = (x.shape, tuple(w_shape), tuple(stride), tuple(padding), _name(g.dtype),
           bool(allow_tf32))
    gw = cp.empty(tuple(w_shape), dtype=g.dtype)
    _convolve(cp, "filter", key, x, gw, g)
    return gw


# ---- the graph (backend) API ---------------------------------------------------------------
# Enum values from cudnn_graph.h (cuDNN 9)
_T_TENSOR, _T_CONV, _T_ENGINE, _T_ENGINECFG, _T_HEUR, _T_PLAN = 17, 1, 2, 3, 4, 5
_T_OP = {"forward": 10, "filter": 11, "data": 12}
_T_GRAPH, _T_VARIANT_PACK = 15, 16
_A_TENSOR_ALIGNMENT, _A_TENSOR_DTYPE, _A_TENSOR_DIMS, _A_TENSOR_STRIDES, _A_TENSOR_UID = \
    900, 901, 902, 903, 906
_A_CONV_COMP_TYPE, _A_CONV_MODE, _A_CONV_DILATIONS, _A_CONV_STRIDES = 100, 101, 102, 103
_A_CONV_POST_PAD, _A_CONV_PRE_PAD, _A_CONV_SPATIAL_DIMS = 104, 105, 106
# (alpha, beta, conv, then the three tensors by role) per direction
_A_OP = {"forward": (700, 701, 702, {"w": 703, "x": 704, "y": 705}),
         "data": (706, 707, 708, {"w": 709, "x": 710, "y": 711}),
         "filter": (712, 713, 714, {"w": 715, "x": 716, "y": 717})}
_A_GRAPH_HANDLE, _A_GRAPH_OPS = 800, 801
_A_HEUR_MODE, _A_HEUR_GRAPH, _A_HEUR_RESULTS = 200, 201, 202
_A_CFG_ENGINE, _A_ENGINE_NUMERICAL_NOTE, _A_ENGINE_BEHAVIOR_NOTE = 300, 1303, 1305
_A_PLAN_HANDLE, _A_PLAN_CONFIG, _A_PLAN_WORKSPACE = 400, 401, 402
_A_PACK_UIDS, _A_PACK_POINTERS, _A_PACK_WORKSPACE = 1000, 1001, 1003
_TY_HANDLE, _TY_DATA_TYPE, _TY_INT64, _TY_FLOAT, _TY_DOUBLE, _TY_VOID_PTR = 0, 1, 3, 4, 5, 6
_TY_CONV_MODE, _TY_HEUR_MODE, _TY_NUMERICAL_NOTE, _TY_DESCRIPTOR, _TY_BEHAVIOR_NOTE = \
    7, 8, 11, 15, 19
_HEUR_MODE_A, _HEUR_MODE_FALLBACK = 3, 2
_NOTE_TENSOR_CORE, _NOTE_DOWN_CONVERT_INPUTS = 0, 1
_BEHAVIOR_RUNTIME_COMPILATION = 0
_UIDS = {"x": 1, "w": 2, "y": 3}
_ALIGNMENT = 16  # bytes; a pointer that is not is copied to one that is
pack_misses = [0]  # variant packs built (a call whose pointers no cached pack of its plan had)
_PACKS_PER_GRAPH = 16

_backend_ready = False


def _backend_api():
    """Declare the backend functions' C types once (int64 counts must not go as C ints)."""
    global _backend_ready
    if not _backend_ready:
        i64p = ctypes.POINTER(ctypes.c_int64)
        vp = ctypes.c_void_p
        _lib.cudnnBackendCreateDescriptor.argtypes = [ctypes.c_int, ctypes.POINTER(vp)]
        _lib.cudnnBackendSetAttribute.argtypes = [vp, ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                                  vp]
        _lib.cudnnBackendGetAttribute.argtypes = [vp, ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                                  i64p, vp]
        _lib.cudnnBackendFinalize.argtypes = [vp]
        _lib.cudnnBackendDestroyDescriptor.argtypes = [vp]
        _lib.cudnnBackendExecute.argtypes = [vp, vp, vp]
        _backend_ready = True
    return _lib


def _bcreate(kind):
    d = ctypes.c_void_p()
    _check(_lib.cudnnBackendCreateDescriptor(kind, ctypes.byref(d)), f"create descriptor {kind}")
    return d


def _bset(desc, attr, type_, values):
    """Set an attribute from a ctypes array (or one ctypes value)."""
    if not isinstance(values, ctypes.Array):
        values = (type(values) * 1)(values)
    _check(_lib.cudnnBackendSetAttribute(desc, attr, type_, len(values),
                                         ctypes.cast(values, ctypes.c_void_p)),
           f"set attribute {attr}")


def _bfinalize(desc, what):
    _check(_lib.cudnnBackendFinalize(desc), f"finalize {what}")


def _int64s(values):
    return (ctypes.c_int64 * len(values))(*map(int, values))


def _descs(*descs):
    return (ctypes.c_void_p * len(descs))(*(d.value for d in descs))


def _btensor(uid, shape, dtype):
    t = _bcreate(_T_TENSOR)
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * int(shape[k + 1])
    _bset(t, _A_TENSOR_DTYPE, _TY_DATA_TYPE, ctypes.c_int(_DATA_TYPE[dtype]))
    _bset(t, _A_TENSOR_DIMS, _TY_INT64, _int64s(shape))
    _bset(t, _A_TENSOR_STRIDES, _TY_INT64, _int64s(strides))
    _bset(t, _A_TENSOR_UID, _TY_INT64, ctypes.c_int64(uid))
    _bset(t, _A_TENSOR_ALIGNMENT, _TY_INT64, ctypes.c_int64(_ALIGNMENT))
    _bfinalize(t, f"tensor {tuple(shape)} {dtype}")
    return t


def _bconv(stride, padding, dtype):
    c = _bcreate(_T_CONV)
    compute = _DATA_TYPE["float64" if dtype == "float64" else "float32"]
    _bset(c, _A_CONV_COMP_TYPE, _TY_DATA_TYPE, ctypes.c_int(compute))
    _bset(c, _A_CONV_MODE, _TY_CONV_MODE, ctypes.c_int(_CROSS_CORRELATION))
    _bset(c, _A_CONV_SPATIAL_DIMS, _TY_INT64, ctypes.c_int64(2))
    _bset(c, _A_CONV_DILATIONS, _TY_INT64, _int64s((1, 1)))
    _bset(c, _A_CONV_STRIDES, _TY_INT64, _int64s(stride))
    _bset(c, _A_CONV_PRE_PAD, _TY_INT64, _int64s(padding))
    _bset(c, _A_CONV_POST_PAD, _TY_INT64, _int64s(padding))
    _bfinalize(c, "convolution")
    return c


def _notes(engine, attr, type_, most):
    notes, n = (ctypes.c_int * most)(), ctypes.c_int64()
    if _lib.cudnnBackendGetAttribute(engine, attr, type_, most, ctypes.byref(n),
                                     ctypes.cast(notes, ctypes.c_void_p)) != _STATUS_SUCCESS:
        return set()
    return set(notes[:n.value])


class _Graph:
    """One convolution shape in one direction ('forward', 'data' or 'filter') as a finalized
    cuDNN execution plan, with its workspace size and variant packs by data pointers."""

    def __init__(self, handle, which, x_shape, w_shape, y_shape, stride, padding, dtype,
                 allow_tf32):
        _backend_api()
        self.keep = []  # every descriptor the plan was built from stays alive with it
        tensors = {"x": _btensor(_UIDS["x"], x_shape, dtype),
                   "w": _btensor(_UIDS["w"], w_shape, dtype),
                   "y": _btensor(_UIDS["y"], y_shape, dtype)}
        conv = _bconv(stride, padding, dtype)
        alpha_attr, beta_attr, conv_attr, roles = _A_OP[which]
        op = _bcreate(_T_OP[which])
        scalar, scalar_type = (ctypes.c_double, _TY_DOUBLE) if dtype == "float64" else \
            (ctypes.c_float, _TY_FLOAT)
        _bset(op, alpha_attr, scalar_type, scalar(1.0))
        _bset(op, beta_attr, scalar_type, scalar(0.0))
        _bset(op, conv_attr, _TY_DESCRIPTOR, _descs(conv))
        for role, attr in roles.items():
            _bset(op, attr, _TY_DESCRIPTOR, _descs(tensors[role]))
        _bfinalize(op, f"{which} convolution operation")
        graph = _bcreate(_T_GRAPH)
        _bset(graph, _A_GRAPH_OPS, _TY_DESCRIPTOR, _descs(op))
        _bset(graph, _A_GRAPH_HANDLE, _TY_HANDLE, _descs(handle))
        _bfinalize(graph, "operation graph")
        self.keep += list(tensors.values()) + [conv, op, graph]
        strict_fp32 = dtype == "float32" and not allow_tf32
        self.plan, self.workspace = self._build(handle, graph, strict_fp32)
        self.uids = _int64s(_UIDS.values())
        self.packs = {}

    def _configs(self, graph, mode):
        heur = _bcreate(_T_HEUR)
        _bset(heur, _A_HEUR_GRAPH, _TY_DESCRIPTOR, _descs(graph))
        _bset(heur, _A_HEUR_MODE, _TY_HEUR_MODE, ctypes.c_int(mode))
        if _lib.cudnnBackendFinalize(heur) != _STATUS_SUCCESS:
            return []
        self.keep.append(heur)
        count = ctypes.c_int64()
        if _lib.cudnnBackendGetAttribute(heur, _A_HEUR_RESULTS, _TY_DESCRIPTOR, 0,
                                         ctypes.byref(count), None) != _STATUS_SUCCESS:
            return []
        cfgs = [_bcreate(_T_ENGINECFG) for _ in range(count.value)]
        array = _descs(*cfgs)
        got = ctypes.c_int64()
        _check(_lib.cudnnBackendGetAttribute(heur, _A_HEUR_RESULTS, _TY_DESCRIPTOR, len(cfgs),
                                             ctypes.byref(got), ctypes.cast(array, ctypes.c_void_p)),
               "heuristic results")
        self.keep += cfgs
        return [ctypes.c_void_p(array[k]) for k in range(got.value)]

    def _build(self, handle, graph, strict_fp32):
        """The first engine configuration, in heuristic order, that is allowed and builds."""
        limit = workspace_limit()
        tried = 0
        for allow_jit in (False, True):
            for mode in (_HEUR_MODE_A, _HEUR_MODE_FALLBACK):
                for cfg in self._configs(graph, mode):
                    engine = _bcreate(_T_ENGINE)
                    self.keep.append(engine)
                    n = ctypes.c_int64()
                    if _lib.cudnnBackendGetAttribute(cfg, _A_CFG_ENGINE, _TY_DESCRIPTOR, 1,
                                                     ctypes.byref(n),
                                                     ctypes.cast(_descs(engine), ctypes.c_void_p)
                                                     ) != _STATUS_SUCCESS:
                        continue
                    notes = _notes(engine, _A_ENGINE_NUMERICAL_NOTE, _TY_NUMERICAL_NOTE, 16)
                    if strict_fp32 and notes & {_NOTE_TENSOR_CORE, _NOTE_DOWN_CONVERT_INPUTS}:
                        continue  # TF32 (or 16-bit) tensor-core math while TF32 is off
                    behavior = _notes(engine, _A_ENGINE_BEHAVIOR_NOTE, _TY_BEHAVIOR_NOTE, 16)
                    if not allow_jit and _BEHAVIOR_RUNTIME_COMPILATION in behavior:
                        continue  # compiled at first use (NVRTC): taken only if nothing else
                    tried += 1
                    plan = _bcreate(_T_PLAN)
                    _bset(plan, _A_PLAN_HANDLE, _TY_HANDLE, _descs(handle))
                    _bset(plan, _A_PLAN_CONFIG, _TY_DESCRIPTOR, _descs(cfg))
                    if _lib.cudnnBackendFinalize(plan) != _STATUS_SUCCESS:
                        _lib.cudnnBackendDestroyDescriptor(plan)
                        continue
                    ws = ctypes.c_int64()
                    _check(_lib.cudnnBackendGetAttribute(plan, _A_PLAN_WORKSPACE, _TY_INT64, 1,
                                                         ctypes.byref(n),
                                                         ctypes.cast(ctypes.pointer(ws),
                                                                     ctypes.c_void_p)),
                           "workspace size")
                    if ws.value > limit:
                        _lib.cudnnBackendDestroyDescriptor(plan)
                        continue
                    return plan, int(ws.value)
        raise CudnnError(f"no cuDNN engine builds for this convolution ({tried} tried)")

    def execute(self, handle, pointers, workspace_ptr):
        key = pointers + (workspace_ptr,)
        pack = self.packs.get(key)
        if pack is None:
            pack_misses[0] += 1
            if len(self.packs) >= _PACKS_PER_GRAPH:
                old = self.packs.pop(next(iter(self.packs)))
                _lib.cudnnBackendDestroyDescriptor(old)
            pack = _bcreate(_T_VARIANT_PACK)
            _bset(pack, _A_PACK_UIDS, _TY_INT64, self.uids)
            _bset(pack, _A_PACK_POINTERS, _TY_VOID_PTR, (ctypes.c_void_p * 3)(*pointers))
            _bset(pack, _A_PACK_WORKSPACE, _TY_VOID_PTR,
                  (ctypes.c_void_p * 1)(workspace_ptr or None))
            _bfinalize(pack, "variant pack")
            self.packs[key] = pack
        _check(_lib.cudnnBackendExecute(handle, self.plan, pack), "execute")
