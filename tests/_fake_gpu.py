"""Running minidl's CUDA code paths on a machine without a GPU, for tests.

- ``build_host_kernels`` compiles the CUDA kernel bodies of minidl/backend/cuda.py with the host
  C++ compiler, and ``HostKernel`` calls them the way CuPy's ElementwiseKernel would be called.
- ``FakeCuPy`` is a numpy-backed stand-in for the ``cupy`` module: its arrays are a numpy
  subclass that minidl takes for GPU arrays (device 'cuda'), and it returns 0-d arrays where
  numpy returns scalars, as CuPy does. With it (and the host kernels) every device path of minidl
  runs on the CPU: dispatch to cuda.py, device checks, moving modules, optimizers, checkpoints.

What it cannot show: that CuPy itself behaves as assumed (it is more permissive, e.g. it lets
numpy and "GPU" arrays mix, where CuPy raises), NVRTC compilation, or speed.
"""
from __future__ import annotations

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


# ---- a numpy-backed stand-in for the cupy module ------------------------------------------
class FakeDeviceArray(np.ndarray):
    """A numpy array that minidl takes for a CuPy array."""

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # CuPy keeps reductions as 0-d device arrays where numpy would return a scalar
        return np.asarray(array).view(FakeDeviceArray)

    def get(self):
        return np.array(self.view(np.ndarray))

    def argmax(self, *args, **kwargs):  # numpy's methods return scalars without a wrap
        return _on_device(np.ndarray.argmax(self, *args, **kwargs))

    def argmin(self, *args, **kwargs):
        return _on_device(np.ndarray.argmin(self, *args, **kwargs))


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
            Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None))
        self.linalg = _FakeLinalg()

    @staticmethod
    def asarray(a, dtype=None):
        if isinstance(a, FakeDeviceArray):
            return a if dtype is None else a.astype(dtype, copy=False)
        return np.array(a, dtype=dtype).view(FakeDeviceArray)  # host -> device is a copy

    @staticmethod
    def asnumpy(a):
        return np.array(a.view(np.ndarray) if isinstance(a, FakeDeviceArray) else a)

    def __getattr__(self, name):
        obj = getattr(np, name)
        if isinstance(obj, (np.ufunc, type)) or not callable(obj):
            return obj  # dtypes, constants, ufuncs (which keep the subclass themselves)

        def on_device(*args, **kwargs):
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
