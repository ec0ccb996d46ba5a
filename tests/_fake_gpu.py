"""Running minidl's CUDA code paths on a machine without a GPU, for tests.

- ``build_host_kernels`` compiles the CUDA kernel bodies of minidl/backend/cuda.py with the host
  C++ compiler, and ``HostKernel`` calls them the way CuPy's ElementwiseKernel would be called.
- ``FakeCuPy`` is a numpy-backed stand-in for the ``cupy`` module: its arrays are a numpy
  subclass that minidl takes for GPU arrays (device 'cuda'), and it returns 0-d arrays where
  numpy returns scalars, as CuPy does. With it (and the host kernels) every device path of minidl
  runs on the CPU: dispatch to cuda.py, device checks, moving modules, optimizers, checkpoints.

- ``strict(*modules)`` makes the fake behave as CuPy does where numpy would let a mistake
  through: numpy arrays beside device arrays, ``ufunc.at``/``accumulate`` that CuPy lacks, numpy
  functions CuPy lacks, ``cupy.repeat`` with array counts, device arrays passed to numba kernels,
  and ``np.asarray``/``np.array`` of device data (through ``modules``' ``np``) raise TypeError;
  host copies (float(), int(), bool(), .item(), .tolist(), iteration, .get(), asnumpy) are
  counted, so a test can bound them (tests/test_gpu_readiness.py). Off by default.

What it cannot show: that CuPy itself behaves as assumed (outside strict() it is more
permissive, e.g. it lets numpy and "GPU" arrays mix, where CuPy raises), CuPy's dtype rules
for numpy scalars, which dtypes its atomic scatters take, NVRTC compilation, or speed.
"""
from __future__ import annotations

import contextlib
import ctypes
import shutil
import subprocess
import types

import numpy as np

import minidl
from minidl.backend import cuda

DTYPES = [np.float32, np.float64]
CTYPE = {np.float32: "float", np.float64: "double"}


# ---- the kernel bodies on the host --------------------------------------------------------
params = cuda.parse_params


def kernel_source(name, ctype, device=False):
    """Kernel ``name`` for one element type as a C++ (or CUDA) function named
    ``{name}_{ctype}``: the source minidl launches on the GPU (``cuda.kernel_source``)."""
    return cuda.kernel_source(name, f"{name}_{ctype}", ctype, ctype, device)


# One host thread runs the whole loop, so an atomic add is a plain one there.
HOST_ATOMICS = "#define atomicAdd(p, v) (*(p) += (v))\n"


def all_kernel_sources(device=False):
    # the 32-bit index type and multiply-and-shift divisions: what every array below 2^31
    # elements runs with on the GPU
    head = ("#include <cstddef>\n#include <cmath>\n" + cuda.PREAMBLE[False]
            + ("" if device else HOST_ATOMICS))
    return head + "".join(
        kernel_source(name, CTYPE[dt], device) for name in cuda.SPECS for dt in DTYPES)


def build_host_kernels(workdir):
    """A ctypes library of every kernel body for float and double, or None without a compiler."""
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        return None
    src, lib = workdir / "kernels.cpp", workdir / "kernels.so"
    src.write_text(all_kernel_sources())
    done = subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"the CUDA kernel bodies do not compile as C++:\n{done.stderr}")
    return ctypes.CDLL(str(lib))


class HostKernel:
    """Called like a CuPy ElementwiseKernel (inputs, then outputs, ``size=`` when every array
    is raw), but runs the compiled body on numpy arrays."""

    def __init__(self, lib, name):
        self.lib, self.name = lib, name
        in_params, out_params, _ = cuda.SPECS[name]
        self.params = params(in_params) + params(out_params)

    def __call__(self, *args, size=None):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments"
        if any(_is_half(a) for a, (_, typ, _) in zip(args, self.params) if typ in ("T", "P")):
            return self._in_float32(args, size)
        t_dtype = next(a.dtype for a, (_, typ, _) in zip(args, self.params) if typ in ("T", "P"))
        c_args = []
        for a, (raw, typ, pname) in zip(args, self.params):
            if typ in ("T", "P", "int32", "int64", "float64") and isinstance(a, np.ndarray):
                # the host build has P (per-channel arrays, float32 beside 16-bit T on the GPU)
                # equal to T
                want = {"T": t_dtype, "P": t_dtype, "int32": np.int32, "int64": np.int64,
                        "float64": np.float64}[typ]
                assert a.dtype == want, f"{self.name}: {pname} is {a.dtype}, not {want}"
                # the wrappers promise flat C-contiguous buffers; CuPy would cope, the host can't
                assert a.flags.c_contiguous, f"{self.name}: {pname} is not C-contiguous"
                if not raw:
                    size = a.size if size is None else size
                    assert a.size == size, f"{self.name}: {pname} has {a.size} != {size} items"
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            else:
                assert not isinstance(a, np.ndarray), f"{self.name}: {pname} must be a scalar"
                c_args.append({"int32": ctypes.c_int, "int64": ctypes.c_longlong,
                               "float64": ctypes.c_double, "uint64": ctypes.c_ulonglong}[typ](a))
        assert size is not None, f"{self.name}: all arguments raw and no size="
        fn = getattr(self.lib, f"{self.name}_{CTYPE[t_dtype.type]}")
        fn.restype = None
        fn(*c_args, ctypes.c_longlong(size))


    def _in_float32(self, args, size):
        """A 16-bit (float16/bfloat16) launch, which the host build has no body for: the kernel
        run on float32 copies of the T and P arrays (the GPU's bodies load 16-bit values into
        float and compute there), each output rounded back to its array's dtype (numpy's
        astype: round to nearest even, as CUDA's conversions)."""
        wide, outs = [], []
        n_in = len(params(cuda.SPECS[self.name][0]))
        for i, (a, (_, typ, _)) in enumerate(zip(args, self.params)):
            if typ in ("T", "P") and isinstance(a, np.ndarray):
                w = np.ascontiguousarray(np.asarray(a).view(np.ndarray), dtype=np.float32)
                wide.append(w)
                if i >= n_in:
                    outs.append((a, w))
            else:
                wide.append(a)
        self(*wide, size=size)
        for a, w in outs:
            a[...] = w.astype(a.dtype)


def _is_half(a):
    return isinstance(a, np.ndarray) and a.dtype.itemsize == 2 and a.dtype.name in (
        "float16", "bfloat16")


# ---- a numpy-backed stand-in for the cupy module ------------------------------------------
# CuPy >= 12 gives every ufunc the methods, but ``at`` runs only for those with an atomic
# scatter kernel (before 12: cupyx.scatter_* only) and ``accumulate`` only for add (cumsum;
# multiply's is cumprod); the rest raise NotImplementedError (cupy/cupy#7082)
CUPY_UFUNC_AT = {"add", "maximum", "minimum", "bitwise_and", "bitwise_or", "bitwise_xor"}
CUPY_UFUNC_ACCUMULATE = {"add", "multiply"}


class _Strictness:
    """The state of ``strict()``: off by default, so the fake stays as permissive as before."""

    on = False
    syncs: list = []
    depth = 0  # > 0 inside a fake cupy function, whose numpy internals are not checked
    trace = None  # a list to collect the stack of each host copy, or None


@contextlib.contextmanager
def _inside():
    _Strictness.depth += 1
    try:
        yield
    finally:
        _Strictness.depth -= 1


def _sync(kind):
    if _Strictness.on:
        _Strictness.syncs.append(kind)
        if _Strictness.trace is not None:  # where each host copy came from, to debug a test
            import traceback
            _Strictness.trace.append(traceback.format_stack(limit=6)[:-2])


def _is_host_array(a):
    return type(a) is np.ndarray and a.ndim > 0


def _refuse_host_arrays(what, args):
    """CuPy refuses numpy arrays beside its own in a ufunc or an array function."""
    for a in args:
        if isinstance(a, (list, tuple)):
            _refuse_host_arrays(what, a)
        elif _is_host_array(a):
            raise TypeError(f"fake cupy (strict): {what} got a numpy array {a.shape} {a.dtype} "
                            "beside device arrays; CuPy raises here (move it with xp.asarray)")


class FakeDeviceArray(np.ndarray):
    """A numpy array that minidl takes for a CuPy array."""

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # CuPy keeps reductions as 0-d device arrays where numpy would return a scalar
        return np.asarray(array).view(FakeDeviceArray)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if _Strictness.on:
            if method == "at" and ufunc.__name__ not in CUPY_UFUNC_AT:
                raise TypeError(f"fake cupy (strict): {ufunc.__name__}.at on device arrays; "
                                "CuPy has ufunc.at only for "
                                f"{', '.join(sorted(CUPY_UFUNC_AT))} (from CuPy 12)")
            if method == "accumulate" and ufunc.__name__ not in CUPY_UFUNC_ACCUMULATE:
                raise TypeError(f"fake cupy (strict): {ufunc.__name__}.accumulate on device "
                                "arrays; CuPy accumulates only add (cumsum) and multiply "
                                "(cumprod)")
            if _Strictness.depth == 0:
                _refuse_host_arrays(f"ufunc {ufunc.__name__}",
                                    inputs + tuple(kwargs.get("out", ())))
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*(_plain(a) for a in inputs), **kwargs)
        if method == "at":
            return None
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _on_device(result)

    def __array_function__(self, func, types, args, kwargs):
        if not _Strictness.on:
            return super().__array_function__(func, types, args, kwargs)
        if _Strictness.depth == 0:
            _refuse_host_arrays(f"np.{func.__name__}", tuple(args) + tuple(kwargs.values()))
        with _inside():  # numpy's own helper arrays inside the function are not the caller's
            return super().__array_function__(func, types, args, kwargs)

    def __getitem__(self, key):
        if _Strictness.on:  # a 0-d device index is an array index in CuPy, not a host copy
            key = tuple(_plain(k) for k in key) if isinstance(key, tuple) else _plain(key)
        out = np.ndarray.__getitem__(self, key)
        if _Strictness.on and isinstance(out, np.generic):
            return np.asarray(out).view(FakeDeviceArray)  # CuPy: a 0-d device array
        return out

    def __setitem__(self, key, value):
        # CuPy copies a 0-d device value on the device; numpy would call its __float__
        if _Strictness.on:
            key = tuple(_plain(k) for k in key) if isinstance(key, tuple) else _plain(key)
        np.ndarray.__setitem__(self, key, _plain(value))

    # Each of these copies device data to the host: a synchronisation on a real GPU (a
    # per-element one inside a Python loop). strict() counts them.
    def __float__(self):
        _sync("float")
        return np.ndarray.__float__(self)

    def __int__(self):
        _sync("int")
        return np.ndarray.__int__(self)

    def __index__(self):
        _sync("index")
        return np.ndarray.__index__(self)

    def __bool__(self):
        _sync("bool")
        return np.ndarray.__bool__(self)

    def __complex__(self):
        _sync("complex")
        return np.ndarray.__complex__(self)

    def __iter__(self):
        _sync("iter")
        return np.ndarray.__iter__(self)

    def item(self, *args):
        _sync("item")
        return np.ndarray.item(self, *args)

    def tolist(self):
        _sync("tolist")
        return np.ndarray.tolist(self)

    def get(self):
        _sync("get")
        return np.array(self.view(np.ndarray))

    @property
    def data(self):
        """CuPy's ``a.data`` is a MemoryPointer whose ``ptr`` is the device address (numpy's a
        memoryview without one)."""
        return types.SimpleNamespace(ptr=int(self.__array_interface__["data"][0]))

    def argmax(self, *args, **kwargs):  # numpy's methods return scalars without a wrap
        return _on_device(np.ndarray.argmax(self, *args, **kwargs))

    def argmin(self, *args, **kwargs):
        return _on_device(np.ndarray.argmin(self, *args, **kwargs))


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, FakeDeviceArray) else a


def _on_device(result):
    if isinstance(result, FakeDeviceArray):
        return result
    if isinstance(result, (np.ndarray, np.generic)):
        return np.asarray(result).view(FakeDeviceArray)
    if isinstance(result, (tuple, list)):
        return type(result)(_on_device(r) for r in result)
    return result


class _FakeRandomState:
    """cupy.random.RandomState: a generator of its own (checkpoint forks one per call)."""

    def __init__(self, seed=None):
        self._gen = np.random.default_rng(seed)

    def random_sample(self, size=None, dtype=float):
        return _on_device(self._gen.random(size, dtype=dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        return _on_device(self._gen.uniform(low, high, size).astype(dtype))


# numpy functions that CuPy lacks (some only in older releases, or under another name); strict()
# refuses them
NUMPY_ONLY = {
    "trapezoid": "CuPy has trapz", "cumulative_sum": "use cumsum", "cumulative_prod":
    "use cumprod", "put_along_axis": "missing from older CuPy releases", "vecdot": "use sum(a * b)",
    "matrix_transpose": "use swapaxes", "unique_values": "use unique",
}


class _GuardedNumpy(types.ModuleType):
    """``numpy`` as a module that strict() puts in place of a minidl module's ``np``: the same
    functions, but ``np.asarray``/``np.array``/``np.ascontiguousarray`` of device data raise, as
    they do on CuPy arrays ("Implicit conversion to a NumPy array is not allowed")."""

    def __init__(self):
        super().__init__("numpy")

    def __getattr__(self, name):
        obj = getattr(np, name)
        if name in ("asarray", "array", "asanyarray", "ascontiguousarray", "copy"):
            def guarded(a, *args, **kwargs):
                if _holds_device_data(a):
                    raise TypeError(f"fake cupy (strict): np.{name} of device data; CuPy raises "
                                    "(use xp.asarray, or backend.to_numpy where a host copy is "
                                    "meant)")
                return obj(a, *args, **kwargs)
            return guarded
        return obj


def _holds_device_data(a):
    if isinstance(a, FakeDeviceArray):
        return True
    if isinstance(a, (list, tuple)):
        return any(_holds_device_data(x) for x in a)
    return False


def _guard_numba():
    """Make numba's compiled functions refuse FakeDeviceArray arguments, as they refuse CuPy
    arrays (numba would take the ndarray subclass); returns the undo, or None without numba."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # pragma: no cover
        return None
    original = Dispatcher.__call__

    def guarded(self, *args, **kwargs):
        if any(isinstance(a, FakeDeviceArray) for a in tuple(args) + tuple(kwargs.values())):
            raise TypeError(f"fake cupy (strict): a device array passed to the numba (CPU) "
                            f"kernel {getattr(self, '__name__', self)}")
        return original(self, *args, **kwargs)

    Dispatcher.__call__ = guarded
    return lambda: setattr(Dispatcher, "__call__", original)


@contextlib.contextmanager
def strict(*modules, monkeypatch=None):
    """Inside: the fake behaves as CuPy does where it differs from numpy: numpy arrays beside
    device arrays, ``ufunc.at``, numba kernels, numpy-only functions and ``np.asarray`` of device
    data (in each of ``modules``' ``np``) raise TypeError; host copies (float(), int(), bool(),
    .item(), .tolist(), iteration, .get(), asnumpy) are counted in the yielded list."""
    syncs = []
    saved = [(m, m.np) for m in modules]
    guarded = _GuardedNumpy()
    for m in modules:
        m.np = guarded
    _Strictness.on, _Strictness.syncs = True, syncs
    undo_numba = _guard_numba()
    try:
        yield syncs
    finally:
        _Strictness.on, _Strictness.syncs = False, []
        if undo_numba is not None:
            undo_numba()
        for m, original in saved:
            m.np = original


class FakeEvent:
    """``cupy.cuda.Event``: nothing runs asynchronously here, so every span between two
    events is 0 ms; ``recorded`` counts the records, for tests."""

    recorded = 0

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.done = False

    def record(self, stream=None):
        FakeEvent.recorded += 1
        self.done = True

    def synchronize(self):
        if not self.done:
            raise RuntimeError("fake cupy: synchronize() of an event never recorded")

    def query(self):
        return self.done

    @staticmethod
    def elapsed(start, end):
        """``cupy.cuda.get_elapsed_time(start, end)`` in ms; both must have been recorded."""
        if not (start.done and end.done):
            raise RuntimeError("fake cupy: get_elapsed_time of an event never recorded")
        return 0.0


class FakeCuPy(types.ModuleType):
    """``cupy`` as far as minidl uses it; anything else falls through to numpy with its array
    results put on the 'device'."""

    ndarray = FakeDeviceArray

    def __init__(self):
        super().__init__("fake_cupy")
        state = [_FakeRandomState(0)]

        def seed(s=None):
            state[0] = _FakeRandomState(s)

        def random_sample(size=None, dtype=float):
            return state[0].random_sample(size, dtype)

        def set_random_state(rs):
            state[0] = rs

        self.random = types.SimpleNamespace(
            seed=seed, random_sample=random_sample, RandomState=_FakeRandomState,
            uniform=lambda *a, **k: state[0].uniform(*a, **k),
            get_random_state=lambda: state[0], set_random_state=set_random_state)
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
            Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None,
                                                    id=int(a[0]) if a else 0),
            Event=FakeEvent, get_elapsed_time=FakeEvent.elapsed)
        self.linalg = _FakeLinalg()
        self.fft = _FakeFFT()

    @staticmethod
    def argsort(a, axis=-1, kind=None, order=None):
        return _on_device(np.argsort(_plain(a), axis=axis, kind="stable"))  # CuPy's is stable

    @staticmethod
    def sort(a, axis=-1, kind=None, order=None):
        return _on_device(np.sort(_plain(a), axis=axis, kind="stable"))

    @staticmethod
    def repeat(a, repeats, axis=None):
        if _Strictness.on and isinstance(repeats, np.ndarray):
            raise TypeError("fake cupy (strict): cupy.repeat takes an int, list or tuple of "
                            "repeats, not an array")
        return _on_device(np.repeat(_plain(a), repeats, axis=axis))

    @staticmethod
    def asarray(a, dtype=None):
        if isinstance(a, FakeDeviceArray):
            return a if dtype is None else a.astype(dtype, copy=False)
        return np.array(a, dtype=dtype).view(FakeDeviceArray)  # host -> device is a copy

    @staticmethod
    def asnumpy(a):
        if isinstance(a, FakeDeviceArray):
            _sync("asnumpy")
        return np.array(a.view(np.ndarray) if isinstance(a, FakeDeviceArray) else a)

    def __getattr__(self, name):
        if _Strictness.on and name in NUMPY_ONLY:
            raise AttributeError(f"fake cupy (strict): CuPy has no {name} (numpy-only: "
                                 f"{NUMPY_ONLY[name]})")
        obj = getattr(np, name)
        if isinstance(obj, (np.ufunc, type)) or not callable(obj):
            return obj  # dtypes, constants, ufuncs (which keep the subclass themselves)

        def on_device(*args, **kwargs):
            if not _Strictness.on:
                return _on_device(obj(*args, **kwargs))
            if _Strictness.depth == 0 and any(
                    _holds_device_data(a) for a in tuple(args) + tuple(kwargs.values())):
                _refuse_host_arrays(f"cupy.{name}", tuple(args) + tuple(kwargs.values()))
            with _inside():
                return _on_device(obj(*args, **kwargs))
        return on_device


class _FakeLinalg:
    """``cupy.linalg``: numpy.linalg with its results on the 'device'; like CuPy's, inv and
    solve of a singular matrix give inf/NaN instead of raising."""

    def __getattr__(self, name):
        obj = getattr(np.linalg, name)
        if not callable(obj) or isinstance(obj, type):
            return obj

        def on_device(*args, **kwargs):
            try:
                out = obj(*args, **kwargs)
                if isinstance(out, tuple):  # numpy's named results: plain tuples, as CuPy's
                    return tuple(_on_device(o) for o in out)
                return _on_device(out)
            except np.linalg.LinAlgError:
                if name not in ("inv", "solve"):
                    raise
                shape = np.broadcast_shapes(*(np.shape(a)[:-2] for a in args)) + \
                    np.shape(args[-1])[-2:]
                return _on_device(np.full(shape, np.inf))
        return on_device


class _FakeFFT:
    """``cupy.fft``: numpy.fft with its results on the 'device' (CuPy's transforms keep
    complex64 for float32 and complex64 input, as NumPy 2's do)."""

    def __getattr__(self, name):
        obj = getattr(np.fft, name)

        def on_device(*args, **kwargs):
            return _on_device(obj(*(_plain(a) for a in args), **kwargs))
        return on_device


def install(monkeypatch, lib, fake=None):
    """Make minidl believe ``fake`` (a FakeCuPy) is CuPy with one GPU, running the CUDA kernels
    through the host-compiled ``lib``. Undone by monkeypatch at the end of the test."""
    from minidl import backend
    from minidl.backend import cudnn

    fake = fake or FakeCuPy()
    monkeypatch.setattr(cudnn, "_enabled", False)  # cuDNN needs a real GPU and real CuPy
    monkeypatch.setattr(backend, "_cupy", fake)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(backend, "_cuda_ready", True)
    monkeypatch.setattr(cuda, "_kernel", lambda name, wide=False: HostKernel(lib, name))
    return fake


def forward_backward(fn, F, arrays, device):
    """``fn(F, *inputs)`` on ``device`` for inputs made from ``arrays`` (requiring grad), then
    backward from a fixed random projection of the output: (output, [input gradients]) as host
    arrays, to compare a fake-GPU run with the CPU's."""
    xs = [minidl.tensor(a, requires_grad=True, device=device) for a in arrays]
    y = fn(F, *xs)
    proj = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    (y * minidl.tensor(proj, device=device)).sum().backward()
    return y.numpy(), [x.grad.numpy() for x in xs]
