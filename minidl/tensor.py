"""Tensor and reverse-mode autograd.

A Tensor holds an array (``.data``, numpy or cupy) and, when it was made by a differentiable op
from inputs that need gradients, the ``Function`` that made it (``._ctx``). ``backward()`` walks
the graph in reverse topological order and accumulates gradients with ``+``.
"""
from __future__ import annotations

import copy
import operator

import numpy as np

from . import autograd, backend
from .autograd import (  # noqa: F401  (Function, no_grad, ... are part of this module's API)
    DimError, Function, autocast_hook, root_array, enable_grad, is_grad_enabled, no_grad, set_autocast_hook, unbroadcast,
)
from .backend import device_of, get_array_module, normalize_device, torch_random
from .backend.sparse import SparseArray, SparseCOO, SparseLayoutError
from .backend.sparse_compressed import SparseCompressed
from .backend.dtypes import (
    SCALAR_DTYPES, as_dtype, bfloat16_dtype, category, combine_dtypes, default_float,
    is_differentiable, is_floating, is_real_number, promote_types, scalar_dtype,
)
from . import complex_ops as _complex_ops, ops
from .ops import (
    Abs, Add, Cast, Clone, Div, Fill, Exp, Expand, Log, LogSoftmax, MatMul, Max, MaxDim, MaxResult,
    Maximum, Mean, Mul, Neg, Permute, Pow, PowTensor, ReLU, Repeat, Reshape, Sigmoid, Softmax,
    Sqrt, Sub, Sum, Tanh, GetItem, astype, reduction_axes,
)
from .ops import wrap_dim as _wrap_dim

def _as_array(data, dtype=None, device="cpu"):
    if isinstance(data, Tensor):
        data = data.data
    device = normalize_device(device)
    source = device_of(data)
    if device == "cpu":
        xp = np
        if source == "cuda":
            data = backend.to_numpy(data)
    else:  # an array already on the GPU proves CuPy works: no need to ask the driver again
        xp = backend.cupy_module() if source == "cuda" else backend.require_cuda()
    if dtype is None:
        arr = xp.asarray(data)
        # an array keeps its dtype on either device; Python numbers and lists get the defaults
        is_array = isinstance(data, (np.ndarray, np.generic, xp.ndarray))  # NumPy scalars too
        if arr.dtype.kind == "f" and not is_array and arr.dtype != SCALAR_DTYPES[float]:
            arr = arr.astype(SCALAR_DTYPES[float])  # Python floats: the default dtype
        elif arr.dtype.kind in "iu" and arr.dtype != xp.int64 and not is_array:
            arr = arr.astype(xp.int64)
        elif arr.dtype.kind == "c" and not is_array and arr.dtype != SCALAR_DTYPES[complex]:
            arr = arr.astype(SCALAR_DTYPES[complex])  # Python complex numbers: complex64
        return arr
    return xp.asarray(data, dtype=dtype)


def _legacy_arguments(data, requires_grad, dtype, device, more):
    """torch's legacy forms of the Tensor constructor, as Tensor's four arguments:
    ``Tensor(2, 3)`` (sizes), ``Tensor()`` and ``Tensor(x.size())`` (uninitialised, in the
    default float dtype); anything else as given (extra positional arguments refused). Off the
    constructor's fast path, which takes arrays."""
    if type(data) is int and type(requires_grad) is int:
        return _legacy_sizes(data, requires_grad, dtype, device, more)
    if data is _NO_DATA or type(data).__name__ == "Size":  # minidl.Size: a layer above this
        sizes = (0,) if data is _NO_DATA else tuple(data)
        data = np.empty(sizes, dtype=SCALAR_DTYPES[float])
    elif more:
        raise TypeError(f"Tensor(): unexpected arguments {more!r} after device")
    return data, requires_grad, dtype, device


def _legacy_sizes(*args):
    """``Tensor(2, 3)`` (torch's legacy constructor): an uninitialised tensor of those sizes in
    the default float dtype, as ``torch.Tensor(2, 3)``; returns Tensor's four arguments (a
    ``device=`` keyword is kept, as torch's)."""
    device = None
    if isinstance(args[3], (str, backend.device)):
        device, args = args[3], args[:3] + (None, args[4])
    sizes = args[:2] + tuple(a for a in args[2:4] if a is not None) + tuple(args[4])
    if not all(type(s) is int for s in sizes) or any(s < 0 for s in sizes):
        raise TypeError(f"Tensor(*sizes): expected non-negative ints, got {sizes!r} (for "
                        f"data with requires_grad or dtype, name them)")
    return np.empty(sizes, dtype=SCALAR_DTYPES[float]), False, None, device


_NO_DATA = object()  # Tensor() with no data: torch's empty (0,) float tensor


def _cuda_array_type():
    cp = backend.cupy_module()
    return None if cp is None else cp.ndarray


# how Tensors print (minidl.set_printoptions changes it, as torch.set_printoptions)
PRINT_OPTIONS = {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80,
                 "sci_mode": None}


_WARNED_FLOAT_OF_GRAD = False  # float() of a tensor that needs gradients: warned once


class Size(tuple):
    """A shape, as ``torch.Size``: a tuple of ints (``x.shape == minidl.Size([2, 3])``)."""

    def __new__(cls, sizes=()):
        sizes = tuple(sizes)
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise TypeError(f"Size: expected a sequence of ints, got an element of type "
                                f"{type(s).__name__}")
        return super().__new__(cls, (int(s) for s in sizes))

    def numel(self):
        return int(np.prod(self, dtype=np.int64))

    def __repr__(self):
        return f"minidl.Size({list(self)})"


class Tensor:
    """An n-dimensional array that remembers how it was computed."""

    __array_priority__ = 1000  # so numpy_array * tensor calls Tensor.__rmul__
    is_nested = False  # minidl.nested.NestedTensor's is True
    # In-place changes are counted per array, shared by every tensor that views it (detach(),
    # slices, reshapes), as PyTorch's version counter is: backward refuses an op whose saved
    # array changed after its forward. None until the first change or the first view;
    # [count, when it last changed] then, with a third entry once a view of the array is made.
    _vc = None
    _used = False  # how many ops recorded in the graph took this tensor as an input (0: none)
    _is_view = False  # made by a view method (slice, reshape, detach) of another tensor
    _hooks = None  # register_hook's functions, {key: fn}, run when this gradient is computed
    _post_hooks = None  # register_post_accumulate_grad_hook's, run after .grad is updated

    @property
    def _version(self):
        vc = self._vc
        return 0 if vc is None else vc[0]

    def __init__(self, data=_NO_DATA, requires_grad=False, dtype=None, device=None, *more):
        if device is None and type(data) is np.ndarray and not more:
            # the common case (a gradient, an op's result), as the general path below takes it:
            # the array itself (or as dtype), and no host range (that is for the GPU's arrays)
            self.data = data if dtype is None else np.asarray(data, dtype=dtype)
        elif device is None and type(data) is _cuda_array_type() and not more:
            xp = backend.cupy_module()  # likewise for an array on the GPU
            self.data = xp.asarray(data) if dtype is None else xp.asarray(data, dtype=dtype)
        elif type(data) in (SparseCOO, SparseCompressed) and not more:  # a sparse tensor; device:
            self.data = data if dtype is None else data.astype(dtype, copy=False)  # its values'
        else:
            data, requires_grad, dtype, device = _legacy_arguments(data, requires_grad, dtype,
                                                                   device, more)
            source = data.data if isinstance(data, Tensor) else data
            if device is None:
                device = device_of(source)
            try:
                self.data = _as_array(data, dtype, device)
            except MemoryError as exc:  # CuPy's out-of-memory error as torch's
                oom = backend.translated_oom(exc)
                if oom is None:
                    raise
                raise oom from exc
            _note_host_range(self, source)
        if requires_grad and not is_differentiable(self.data.dtype):
            raise GradDtypeError(
                "only floating-point and complex tensors can require gradients, got dtype "
                f"{self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._ctx: Function | None = None
        self._retain_grad = False

    # ---- basic properties -------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return device_of(self.data)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def is_leaf(self):
        return self._ctx is None

    def size(self, dim=None):
        # torch.Size for size(); .shape stays the plain tuple (hot path, by design)
        return tuple.__new__(Size, self.shape) if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    @property
    def grad_fn(self):
        """The op that made this tensor (its ``Function``; ``.name()`` gives ``MulBackward``),
        None for a leaf, as PyTorch's ``grad_fn``."""
        ctx = self._ctx
        if type(ctx) is RefusedView:
            raise RuntimeError(ctx.refusal)
        return ctx

    @property
    def is_cuda(self):
        return device_of(self.data) == "cuda"

    def get_device(self):
        """-1 on the CPU, else the index of this process's GPU, as PyTorch."""
        return -1 if device_of(self.data) == "cpu" else int(self.data.device.id)

    def element_size(self):
        return int(self.data.dtype.itemsize)

    nelement = numel
    ndimension = dim

    def stride(self, dim=None):
        """Steps between neighbours, in elements (PyTorch's unit; NumPy's strides are bytes)."""
        steps = tuple(s // self.data.dtype.itemsize for s in self.data.strides)
        return steps if dim is None else steps[_wrap_dim(dim, self.data.ndim, "stride")]

    def data_ptr(self):
        """The address of the first element (to tell whether two tensors share memory)."""
        if device_of(self.data) == "cuda":
            return int(self.data.data.ptr)
        return int(self.data.__array_interface__["data"][0])

    def pin_memory(self):
        """Accepted for PyTorch's DataLoader idioms; host arrays here are ordinary memory."""
        return self

    def is_pinned(self):
        return False

    def share_memory_(self):
        """Move a CPU tensor's values into shared memory (an anonymous shared mapping), so that
        processes forked from this one (multiprocessing's "fork" start, Hogwild training) see
        each other's in-place updates, as torch's; a CUDA tensor is left as it is, as torch
        leaves it. Views made before keep the old memory. Returns the tensor."""
        if device_of(self.data) == "cpu" and not self.is_shared():
            import mmap

            array = self.data
            buffer = mmap.mmap(-1, max(array.nbytes, 1))  # MAP_SHARED | MAP_ANONYMOUS
            shared = np.frombuffer(buffer, dtype=array.dtype, count=array.size)
            shared = shared.reshape(array.shape)
            shared[...] = array
            self.data = shared
        return self

    def is_shared(self):
        """Whether the values are in shared memory (``share_memory_``); CUDA tensors are, as
        torch answers for them."""
        if device_of(self.data) == "cuda":
            return True
        import mmap

        base = self.data
        while isinstance(base, np.ndarray):
            base = base.base
        if isinstance(base, memoryview):  # np.frombuffer's view of the mapping
            base = base.obj
        return isinstance(base, mmap.mmap)

    def detach_(self):
        """Take this tensor out of the graph in place (it becomes a leaf without grad)."""
        if self._is_view and not self.__dict__.get("_detached"):
            raise RuntimeError("detach_() on a view: detach() a copy instead (PyTorch refuses "
                               "it for views too)")
        self._ctx, self.requires_grad = None, False
        return self

    def type(self, dtype=None, non_blocking=False):
        """Without an argument, PyTorch's type name (``'minidl.FloatTensor'``); with a dtype,
        a legacy type (``minidl.LongTensor``, ``minidl.cuda.FloatTensor``) or its name
        (``'torch.LongTensor'``), the tensor cast to it (and moved, for a GPU type)."""
        if dtype is None:
            where = "minidl." if device_of(self.data) == "cpu" else "minidl.cuda."
            return where + _TYPE_NAMES.get(self.data.dtype.name, self.data.dtype.name)
        device = None
        if hasattr(dtype, "_dtype_name"):  # a legacy type (minidl.legacy_types)
            dtype, device = dtype._dtype_name, "cuda" if dtype.is_cuda else "cpu"
        elif isinstance(dtype, str) and dtype.endswith("Tensor"):
            parts = dtype.split(".")
            names = {v: k for k, v in _TYPE_NAMES.items()}
            if parts[-1] not in names or parts[0] not in ("torch", "minidl") or len(parts) > 3 \
                    or len(parts) == 3 and parts[1] != "cuda":
                raise ValueError(f"type: invalid type {dtype!r}; expected a name such as "
                                 "'torch.FloatTensor' or 'torch.cuda.LongTensor'")
            dtype, device = names[parts[-1]], "cuda" if len(parts) == 3 else "cpu"
        out = self.astype(dtype)
        return out if device is None or out.device == device else out.to(device)

    def __repr__(self):
        """As PyTorch prints a tensor, character for character (minidl/printing.py): the
        dtype where it is not the default for its kind (the default float dtype, int64, bool),
        then the device, and the op that made it (``grad_fn=<MulBackward>``) or
        ``requires_grad=True`` on a leaf."""
        from .printing import compressed_repr, sparse_repr, tensor_repr

        grad_fn = None if self._ctx is None else self._ctx.name()
        if type(self.data) is SparseCOO:
            return sparse_repr(self.data, grad_fn, self.requires_grad, PRINT_OPTIONS)
        if type(self.data) is SparseCompressed:
            return compressed_repr(self.data, grad_fn, self.requires_grad, PRINT_OPTIONS)
        device = self.device
        if device != "cpu":  # torch names the GPU's index: device='cuda:0'
            device = f"{device}:{getattr(getattr(self.data, 'device', None), 'id', 0)}"
        return tensor_repr(self.numpy(), device, grad_fn, self.requires_grad, PRINT_OPTIONS)

    def numpy(self, *, force=False) -> np.ndarray:
        """The values as a numpy array on the host (a copy when on the GPU). Unlike PyTorch,
        also for a tensor that requires grad (see DESIGN.md); ``force`` is taken for
        PyTorch's signature and changes nothing."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        if self.data.size != 1:
            raise ItemError(f"item(): a Tensor with {self.data.size} elements cannot be "
                            f"converted to Scalar; it needs one element, got shape "
                            f"{self.shape}")
        return self.data.reshape(-1)[0].item()

    def __float__(self):
        global _WARNED_FLOAT_OF_GRAD
        # torch's warning, once a process, only where gradients are being recorded
        if self.requires_grad and not _WARNED_FLOAT_OF_GRAD and is_grad_enabled():
            _WARNED_FLOAT_OF_GRAD = True
            import warnings

            warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to "
                          "unexpected behavior.\nConsider using tensor.detach() first.",
                          UserWarning, stacklevel=2)
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __complex__(self):
        return complex(self.item())

    def __bool__(self):
        return bool(self.item())

    def to(self, device=None, dtype=None, non_blocking=False, copy=False, memory_format=None):
        """A copy on another device or with another dtype (self when nothing changes, unless
        ``copy=True``): ``x.to("cuda")``, ``x.to(minidl.bfloat16)``, ``x.to("cuda",
        minidl.float16)``, ``x.to(other)`` (other's device and dtype); ``memory_format``
        (``minidl.channels_last``...) lays the memory out as torch's does. ``non_blocking`` is
        accepted for PyTorch's signature; copies here are synchronous."""
        if isinstance(device, Tensor):
            device, dtype = device.device, device.dtype if dtype is None else dtype
        if dtype is None and device is not None and _is_dtype_like(device):
            device, dtype = None, device
        out = self.clone() if copy else self
        if device is not None and normalize_device(device) != self.device:
            out = _to_device(out, normalize_device(device))
        if dtype is not None and as_dtype(dtype) != out.dtype:
            out = out.astype(dtype)
        if memory_format is not None:
            out = _shape_ops.in_memory_format(out, memory_format)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None, non_blocking=False):
        return self.to("cuda" if device is None or isinstance(device, int) else device)

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def half(self):
        return self.astype(np.float16)

    def bfloat16(self):
        return self.astype(bfloat16_dtype())

    def cfloat(self):
        return self.astype(np.complex64)

    def cdouble(self):
        return self.astype(np.complex128)

    # ---- complex numbers (minidl/complex_ops.py) ----------------------------------------
    def is_complex(self):
        return self.data.dtype.kind == "c"

    @property
    def real(self):
        """The real parts, a view of a complex tensor; a real tensor itself."""
        return _complex_ops.real(self)

    @real.setter
    def real(self, value):
        self.real.copy_(value)

    @property
    def imag(self):
        """The imaginary parts, a view of a complex tensor (refused for a real one)."""
        return _complex_ops.imag(self)

    @imag.setter
    def imag(self, value):
        self.imag.copy_(value)

    def conj(self):
        return _complex_ops.conj(self)

    def conj_physical(self):
        return _complex_ops.conj_physical(self)

    def resolve_conj(self):
        return self

    def resolve_neg(self):
        return self

    def is_conj(self):
        return False

    def is_neg(self):
        return False

    def long(self):
        return Tensor(_real_data(self, np.int64).astype(np.int64))

    def int(self):
        return Tensor(_real_data(self, np.int32).astype(np.int32))  # PyTorch's int is 32 bits

    def byte(self):
        return self.astype(np.uint8)

    def char(self):
        return self.astype(np.int8)

    def short(self):
        return self.astype(np.int16)

    def bool(self):
        return Tensor(self.data.astype(np.bool_))

    def type_as(self, other):
        """This tensor in ``other``'s dtype (self when it already has it)."""
        return self.to(dtype=other.dtype)

    def astype(self, dtype):
        return _cast(self, as_dtype(dtype))

    def detach(self):
        """The same values (the same array), cut from the graph."""
        out = _share_version(Tensor(self.data), self)
        out.__dict__.pop("_view_base", None)  # a base of its own for in-place ops, as torch's
        out.__dict__.pop("_view_no_grad", None)
        out._detached = True  # (its memory is self's, but torch's autograd sees no view)
        return out

    def requires_grad_(self, flag=True):
        if flag and not is_differentiable(self.data.dtype):
            raise GradDtypeError(f"only floating-point and complex tensors can require "
                                 f"gradients, got {self.dtype}")
        self.requires_grad = flag
        return self

    def retain_grad(self):
        self._retain_grad = True

    def register_hook(self, hook):
        """Call ``hook(grad)`` each time this tensor's gradient is computed in a backward pass
        (before a leaf adds it to ``.grad``, before an intermediate passes it on); a Tensor it
        returns replaces the gradient. Returns a handle whose ``remove()`` takes the hook off."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not "
                               "require grad")
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be callable, got {type(hook).__name__}")
        if self._hooks is None:
            self._hooks = {}
        return _HookHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` each time a backward pass has added into this leaf's ``.grad``
        (an optimizer step per parameter, inside backward, as PyTorch's). Returns a handle
        whose ``remove()`` takes the hook off."""
        if self._ctx is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: post accumulate grad hooks "
                               "cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: cannot register a hook on a "
                               "tensor that does not require grad")
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got "
                            f"{type(hook).__name__}")
        if self._post_hooks is None:
            self._post_hooks = {}
        return _HookHandle(self._post_hooks, hook)

    def zero_(self):
        return _inplace(self, 0, "fill", _fill)

    def fill_(self, value):
        return _inplace(self, value, "fill", _fill)

    def uniform_(self, a=0.0, b=1.0, *, generator=None):
        """Fill with draws uniform on [a, b) from minidl's seeded generator (PyTorch's
        ``uniform_(from, to)``), or from ``generator``; the in-place rules of ``copy_`` apply."""
        gen = backend.generator_of(generator, self.device, "uniform_")
        # torch's numbers (a complex tensor: each part uniform on [a, b))
        return _random_fill(self, torch_random.uniform_array(
            gen, tuple(self.shape), _draw_dtype(self), a, b, like=self.data), "uniform_")

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        """Fill with draws of N(mean, std**2) from minidl's seeded generator (or ``generator``)."""
        if std < 0:
            raise ValueError(f"normal_ expects std >= 0.0, but found std {std}")
        gen = backend.generator_of(generator, self.device, "normal_")
        # torch's numbers (a complex tensor: each part N(mean, std**2 / 2))
        return _random_fill(self, torch_random.normal_array(
            gen, tuple(self.shape), _draw_dtype(self), mean, std, like=self.data), "normal_")

    def bernoulli_(self, p=0.5, *, generator=None):
        """Fill with 0 or 1, 1 with probability ``p`` (a number or a tensor) in [0, 1]."""
        q = p.data if isinstance(p, Tensor) else p
        if not bool(((q >= 0) & (q <= 1)).all()) if hasattr(q, "shape") else not 0 <= q <= 1:
            raise ValueError(f"bernoulli_ expects p to be in [0, 1], but got p={p}")
        if self.data.dtype.kind == "c":
            raise ops.ComplexDtypeError(f"bernoulli_: not implemented for complex tensors (got "
                                        f"dtype {self.data.dtype})")
        gen = backend.generator_of(generator, self.device, "bernoulli_")
        if isinstance(p, Tensor):
            p = backend.to_numpy(p.data)
        # torch's draws: a number p against float64 uniforms, a tensor against its precision's
        return _random_fill(self, torch_random.bernoulli(gen, tuple(self.shape), p), "bernoulli_")

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(t)``: the values of a tensor on the host (PyTorch refuses a GPU tensor:
        call ``.cpu()`` or ``.numpy()`` for a copy)."""
        if self.device != "cpu":
            raise TypeError(f"cannot convert a {self.device} tensor to a numpy array "
                            "implicitly; call .cpu() or .numpy() to copy it to the host")
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    # ---- autograd ---------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad
        (only into ``inputs``' ``.grad`` where that is given, as PyTorch).

        As in PyTorch, the graph's saved arrays are freed on the way, and a second backward
        through it raises a RuntimeError, unless the first one passes ``retain_graph=True``."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if retain_graph is None:
            retain_graph = create_graph  # as PyTorch: a graph of gradients keeps its forward
        grad = _root_gradient(self, gradient, "backward()", create_graph)
        if inputs is None:
            _backprop([self], [grad], bool(retain_graph), gradient is not None,
                      create_graph=create_graph)
            return
        inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if not inputs:
            raise RuntimeError("backward(): inputs=, where given, must not be empty")
        found = _backprop([self], [grad], bool(retain_graph), True, wanted=inputs,
                          create_graph=create_graph)
        for t, g in zip(inputs, found):
            if g is not None:
                _accumulate(t, g, set())
                _run_post_hooks(t)

    # ---- operators and math: each runs one Function from ops.py ----------------------------
    def __add__(self, other):
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: t + other)
        return Add.apply(*_refusing_unsigned(_pair(self, other), "add_stub"))

    def __radd__(self, other):
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: other + t)
        return Add.apply(*_refusing_unsigned(_pair(self, other, reverse=True), "add_stub"))

    def __sub__(self, other):
        ops.refuse_bool_sub(self, other)
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: t - other)
        return Sub.apply(*_refusing_unsigned(_pair(self, other), "add_stub"))

    def __rsub__(self, other):
        ops.refuse_bool_sub(other, self)
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: other - t)
        return Sub.apply(*_refusing_unsigned(_pair(self, other, reverse=True), "add_stub"))

    def __mul__(self, other):
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: t * other)
        return Mul.apply(*_pair(self, other))

    def __rmul__(self, other):
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: other * t)
        return Mul.apply(*_pair(self, other, reverse=True))

    def __truediv__(self, other):
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: t / other)
        return Div.apply(*_pair(self, other, true_divide=True))

    def __rtruediv__(self, other):
        if _opmath_scalar(self, other):
            return _in_float32(self, lambda t: other / t)
        return Div.apply(*_pair(self, other, reverse=True, true_divide=True))

    def __matmul__(self, other):
        ops.refuse_mixed_matmul(self, other)
        return MatMul.apply(*_refusing_unsigned(_pair(self, other), "dot"))

    def __rmatmul__(self, other):
        ops.refuse_mixed_matmul(other, self)
        return MatMul.apply(*_refusing_unsigned(_pair(self, other, reverse=True), "dot"))

    matmul = __matmul__

    def add(self, other, *, alpha=1):
        """``self + alpha * other``."""
        return self + _times_alpha(self, other, alpha, "add")

    def sub(self, other, *, alpha=1):
        """``self - alpha * other``."""
        ops.refuse_bool_sub(self, other)
        return self - _times_alpha(self, other, alpha, "sub")

    mul = __mul__
    div = __truediv__

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return PowTensor.apply(*_refusing_unsigned(_pair(self, exponent), "pow"))
        if isinstance(exponent, np.generic):  # a NumPy number: its kind, as a Python one
            exponent = exponent.item()
        if isinstance(exponent, complex) and self.data.dtype.kind != "c":
            return Pow.apply(_cast(self, combine_dtypes(self.data.dtype, scalar_dtype(exponent))),
                             exponent=exponent)
        if not is_differentiable(self.dtype) and isinstance(exponent, float):
            return Pow.apply(_cast(self, default_float()), exponent=exponent)
        if self.data.dtype.kind == "u":
            ops.refuse_unsigned(self.data.dtype, "pow")
        if self.data.dtype.kind in "biu" and isinstance(exponent, int):
            ops.check_integer_exponent(self.data.dtype, exponent)
            if self.data.dtype == np.bool_:  # bool ** 2 is int64; bool ** True stays bool
                if isinstance(exponent, bool):
                    return Tensor(self.data.copy() if exponent else
                                  get_array_module(self.data).ones_like(self.data))
                return Pow.apply(_cast(self, np.dtype(np.int64)), exponent=exponent)
        return Pow.apply(self, exponent=exponent)

    def __rpow__(self, base):
        return PowTensor.apply(*_refusing_unsigned(_pair(self, base, reverse=True), "pow"))

    pow = __pow__

    # In-place operators: on the array itself where no graph is recorded (a parameter update
    # under no_grad(), a tensor that needs no gradient), so every reference sees the change.
    # Where the graph records the op, the result is a new tensor that the name is bound to:
    # the gradients are PyTorch's, but other references keep the old values.
    def __iadd__(self, other):
        return _inplace(self, other, "add", Tensor.__add__)

    def __isub__(self, other):
        return _inplace(self, other, "subtract", Tensor.__sub__)

    def __imul__(self, other):
        return _inplace(self, other, "multiply", Tensor.__mul__)

    def __itruediv__(self, other):
        return _inplace(self, other, "true_divide", Tensor.__truediv__)

    def __ipow__(self, other):
        return _inplace(self, other, "power", Tensor.__pow__)

    def __ifloordiv__(self, other):
        return _inplace(self, other, "floor_divide", Tensor.__floordiv__)

    def add_(self, other, *, alpha=1):
        """``self += alpha * other``."""
        return self.__iadd__(_times_alpha(self, other, alpha, "add_"))

    def sub_(self, other, *, alpha=1):
        """``self -= alpha * other``."""
        return self.__isub__(_times_alpha(self, other, alpha, "sub_"))

    def mul_(self, other):
        return self.__imul__(other)

    def div_(self, other, *, rounding_mode=None):
        """In-place division; ``rounding_mode`` None (true division), "floor" or "trunc", as
        ``div``."""
        if rounding_mode is None:
            return self.__itruediv__(other)
        if rounding_mode == "floor":
            return self.__ifloordiv__(other)
        if rounding_mode != "trunc":
            raise ValueError(f"div_ expected rounding_mode to be one of None, 'trunc', or "
                             f"'floor' but found '{rounding_mode}'")
        return _inplace(self, other, "trunc_divide",
                        lambda a, b: a.div(b, rounding_mode="trunc"))

    def copy_(self, src, non_blocking=False):
        """Write ``src``'s values into this tensor's array (cast to its dtype, broadcast to its
        shape), outside the graph, as PyTorch's ``copy_`` under ``no_grad()``.
        ``non_blocking`` is taken, as PyTorch's, and changes nothing here: the copy is done
        when the call returns."""
        return _inplace(self, src, "copy", None)

    def clone(self, *, memory_format=None):
        """A copy of the values that stays in the graph (its gradient flows back to self);
        ``memory_format`` as torch's (channels-last memory, say)."""
        out = Clone.apply(self, keep_layout=memory_format in (None, _shape_ops.preserve_format))
        if memory_format is None or memory_format is _shape_ops.preserve_format:
            return out
        return _shape_ops.in_memory_format(out, memory_format)

    def __neg__(self):
        if self.data.dtype.kind == "u":
            ops.refuse_unsigned(self.data.dtype, "neg_cpu")
        return Neg.apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        if self.data.dtype.kind == "u":
            ops.refuse_unsigned(self.data.dtype, "abs_cpu")
        return Abs.apply(self)

    abs = __abs__

    def exp(self):
        return Exp.apply(_float_input(self))

    def log(self):
        return Log.apply(_float_input(self))

    def sqrt(self):
        return Sqrt.apply(_float_input(self))

    def tanh(self):
        return Tanh.apply(_float_input(self))

    def relu(self):
        return ReLU.apply(self)

    def relu_(self):
        return apply_in_place(self, ReLU.apply, "relu")

    def sigmoid(self):
        if self.data.dtype.kind == "c":  # 1 / (1 + e^-z), as recorded complex ops
            return 1 / (1 + (-self).exp())
        return Sigmoid.apply(_float_input(self))

    def softmax(self, dim, dtype=None):
        x = self if dtype is None else self.to(dtype)  # torch's dtype: cast first
        if not is_floating(x.data.dtype):
            raise TypeError(f"softmax: needs a floating-point tensor, got dtype {x.dtype}")
        d = _wrap_dim(dim, x.ndim, "softmax")
        return Softmax.apply(x, dim=d if x.ndim else None)

    def log_softmax(self, dim, dtype=None):
        x = self if dtype is None else self.to(dtype)
        if not is_floating(x.data.dtype):
            raise TypeError(f"log_softmax: needs a floating-point tensor, got dtype {x.dtype}")
        d = _wrap_dim(dim, x.ndim, "log_softmax")
        return LogSoftmax.apply(x, dim=d if x.ndim else None)

    def clamp(self, min=None, max=None):
        return ops.clamp(self, min, max)

    clip = clamp

    def maximum(self, other):
        return ops.maximum(self, other)

    def minimum(self, other):
        return ops.minimum(self, other)

    def where(self, condition, other):
        """``minidl.where(condition, self, other)``."""
        return ops.where(condition, self, other)

    def masked_fill(self, mask, value):
        return ops.masked_fill(self, mask, value)

    # Comparisons give a boolean Tensor outside the graph (a recorded op only while a tracer
    # that asks for them is installed: see ops.traces_untracked); a Tensor hashes by identity.
    def __lt__(self, other):
        return _compare(self, other, "less", "lt")

    def __le__(self, other):
        return _compare(self, other, "less_equal", "le")

    def __gt__(self, other):
        return _compare(self, other, "greater", "gt")

    def __ge__(self, other):
        return _compare(self, other, "greater_equal", "ge")

    def __eq__(self, other):
        if other is None:  # `t == None` is False, as in PyTorch
            return False
        return _compare(self, other, "equal")

    def __ne__(self, other):
        if other is None:
            return True
        return _compare(self, other, "not_equal")

    def __hash__(self):
        return id(self)

    # ---- bitwise operators and Python protocols (PyTorch's semantics; % and // are in
    # math_ops) ------------------------------------------------------------------------------
    def __and__(self, other):
        return _bitwise(self, other, "bitwise_and")

    def __or__(self, other):
        return _bitwise(self, other, "bitwise_or")

    def __xor__(self, other):
        return _bitwise(self, other, "bitwise_xor")

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __invert__(self):
        if self.data.dtype.kind not in "biu":
            raise ops.UnsupportedDtypeError(f"~ (bitwise_not) needs a bool or integer tensor, "
                                            f"got {self.dtype}")
        if self.data.dtype.kind == "u":
            ops.refuse_unsigned(self.data.dtype, "bitwise_not_cpu")
        if autograd._profiler_hook is not None and ops.traces_untracked():
            return ops.Compare.apply(self, op="invert")
        return Tensor(get_array_module(self.data).invert(self.data))

    def __contains__(self, element):
        """``element in t``: whether any entry equals it (PyTorch's rule)."""
        if not isinstance(element, (Tensor, bool, int, float, np.generic)):
            raise RuntimeError("Tensor.__contains__ only supports Tensor or scalar, "
                               f"but you passed in a {type(element).__name__}")
        return bool((self == element).data.any())

    def __index__(self):
        """An integer tensor of one element used as an index (``range(t)``, ``list[t]``)."""
        if self.data.dtype.kind not in "biu" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an "
                            f"index (got dtype {self.dtype} and shape {tuple(self.shape)})")
        return int(self.data.reshape(()).item())

    def __format__(self, spec):
        """A 0-d tensor formats as its number (``f"{loss:.4f}"``); others as their repr."""
        if self.data.ndim == 0:
            return format(self.item(), spec)
        return format(repr(self), spec)

    def __deepcopy__(self, memo):
        """``copy.deepcopy``: a leaf copies its values, ``requires_grad`` and ``.grad``; a tensor
        made by an op refuses, as in PyTorch (the copy could not keep its place in the graph)."""
        if self._ctx is not None:
            raise RuntimeError("Only Tensors created explicitly by the user (graph leaves) support "
                               "the deepcopy protocol at the moment; use detach().clone()")
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key in ("_vc", "_used", "_is_view", "_view_base", "_views", "_view_uses",
                       "_view_no_grad", "_multi_view", "_detached"):
                continue  # a fresh array: its own version count, not a view of anything
            new.__dict__[key] = value.copy() if key == "data" else copy.deepcopy(value, memo)
        return new

    # ---- reductions ---------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, axis=None, keepdims=None, dtype=None):
        dim = axis if dim is None else dim
        keepdim = keepdims if keepdims is not None else keepdim
        if dtype is not None:
            ops.refuse_unsigned(as_dtype(dtype), "sum_cpu")  # no uint16/32/64 sum in torch
        x = self if dtype is None else self.to(as_dtype(dtype))  # PyTorch's dtype=: cast first
        y = Sum.apply(x, dim=dim, keepdim=keepdim)
        return y if dtype is None or y.data.dtype == x.data.dtype else y.to(x.data.dtype)

    def mean(self, dim=None, keepdim=False, axis=None, keepdims=None, dtype=None):
        if dtype is not None:
            return self.to(as_dtype(dtype)).mean(dim, keepdim, axis, keepdims)
        if not is_differentiable(self.data.dtype):  # PyTorch refuses it (NumPy: float64)
            raise ops.UnsupportedDtypeError(f"mean: needs a floating-point tensor, got "
                                            f"{self.data.dtype}; call .float() first")
        dim = axis if dim is None else dim
        keepdim = keepdims if keepdims is not None else keepdim
        return Mean.apply(self, dim=dim, keepdim=keepdim)

    def max(self, dim=None, keepdim=False, axis=None, keepdims=None):
        """Over everything: the largest value. Over one dim: (values, indices), as PyTorch."""
        return _max_or_min(self, dim, keepdim, axis, keepdims, take_min=False)

    def min(self, dim=None, keepdim=False, axis=None, keepdims=None):
        """Over everything: the smallest value. Over one dim: (values, indices), as PyTorch."""
        return _max_or_min(self, dim, keepdim, axis, keepdims, take_min=True)

    def amax(self, dim=None, keepdim=False):
        ops.refuse_unsigned(self.data.dtype, "max_values_cpu")
        ops.refuse_empty_reduction("amax", self.shape, dim)
        return Max.apply(self, dim=dim, keepdim=keepdim, take_min=False, nan_spread=False)

    def argmax(self, dim=None, keepdim=False):
        return _arg_max_or_min(self, dim, keepdim, take_min=False)

    def argmin(self, dim=None, keepdim=False):
        return _arg_max_or_min(self, dim, keepdim, take_min=True)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        """Variance, by default unbiased (correction=1), as PyTorch."""
        return ops.var(self, dim, unbiased, keepdim, correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return ops.var(self, dim, unbiased, keepdim, correction, name="std")

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """(values, indices) of the k largest (smallest) along dim; values keep the gradient."""
        return ops.topk(self, k, dim, largest, sorted)

    def any(self, dim=None, keepdim=False):
        return _any_or_all(self, "any", dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return _any_or_all(self, "all", dim, keepdim)

    # ---- shape --------------------------------------------------------------------------
    def __getitem__(self, index):
        return _share_version(GetItem.apply(self, index=_index(index)), self)

    def __setitem__(self, index, value):
        """``x[index] = value`` (a number, list, array or Tensor, broadcast to the selection and
        cast to ``x``'s dtype), under the in-place rules: written into the array, which views
        see; inside a graph, recorded as an op whose result ``x`` becomes."""
        check_index_put_dtype(self, index, value)
        _set_item(self, _index(index), value)

    def reshape(self, *shape, **by_name):
        shape = ops.sizes_or_keyword("reshape", shape, by_name, "shape")
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        try:
            np.empty(self.shape, dtype=np.uint8).reshape(shape)  # validates cheaply on host
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {self.shape} ({self.numel()} elements) "
                             f"as {shape}") from None
        return _share_version(Reshape.apply(self, shape=shape), self)

    def view(self, *shape, **by_name):
        """``reshape`` that, as PyTorch's ``view``, refuses a view of another tensor (a
        transpose, an expand, a strided slice) whose strides cannot be read in the new shape
        without a copy; ``x.view(dtype)`` reads the elements' bytes as another dtype."""
        if len(shape) == 1 and not by_name and not isinstance(shape[0], (int, np.integer, tuple,
                                                                        list)):
            return _view_as_dtype(self, shape[0])
        sizes = ops.sizes_or_keyword("view", shape, by_name, "size")
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        if self._is_view and not _viewable(self.data, sizes):
            raise RuntimeError(
                f"view size is not compatible with input tensor's size and stride (at least one "
                f"dimension spans across two contiguous subspaces). Use .reshape(...) instead. "
                f"(shape {tuple(self.shape)}, strides {self.stride()}, asked for {sizes})")
        return self.reshape(sizes)

    def permute(self, *axes, **by_name):
        axes = ops.sizes_or_keyword("permute", axes, by_name, "dims")
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        wrapped = tuple(_wrap_dim(a, self.ndim, "permute") for a in axes)
        if sorted(wrapped) != list(range(self.ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} dims")
        return _share_version(Permute.apply(self, axes=wrapped), self)

    def transpose(self, dim0=None, dim1=None):
        if dim0 is None and dim1 is None:
            if self.ndim > 2:
                raise ValueError(f"transpose() without dims (t()) needs at most 2 dims, got "
                                 f"{self.ndim}; pass the two dims to swap")
            return self.permute(tuple(reversed(range(self.ndim))))
        if dim0 is None or dim1 is None:
            raise TypeError("transpose: pass both dims to swap, e.g. x.transpose(0, 1)")
        if self.ndim == 0:
            _wrap_dim(dim0, 0, "transpose"), _wrap_dim(dim1, 0, "transpose")
            return self
        axes = list(range(self.ndim))
        d0, d1 = _wrap_dim(dim0, self.ndim, "transpose"), _wrap_dim(dim1, self.ndim, "transpose")
        axes[d0], axes[d1] = axes[d1], axes[d0]
        return self.permute(tuple(axes))

    @property
    def T(self):  # noqa: N802  (PyTorch's name)
        return self.permute(tuple(reversed(range(self.ndim))))

    def t(self):
        return self.transpose()

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            _wrap_dim(start_dim, 0, "flatten"), _wrap_dim(end_dim, 0, "flatten")
            return self.reshape(1)
        start = _wrap_dim(start_dim, self.ndim, "flatten")
        end = _wrap_dim(end_dim, self.ndim, "flatten")
        if start > end:
            raise ops.BadArgumentError(f"flatten: start_dim {start_dim} comes after end_dim "
                                       f"{end_dim}")
        shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
        if 0 in self.shape:
            shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1])),) \
                + self.shape[end + 1:]
        return _share_version(Reshape.apply(self, shape=shape), self)

    def unsqueeze(self, dim):
        d = _wrap_dim(dim, self.ndim + 1, "unsqueeze")
        return _share_version(Reshape.apply(self, shape=self.shape[:d] + (1,) + self.shape[d:]), self)

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(n for n in self.shape if n != 1)
        else:
            dims = dim if isinstance(dim, (tuple, list)) else (dim,)
            wrapped = [_wrap_dim(d, self.ndim, "squeeze") for d in dims]
            drop = set(wrapped)
            if len(drop) < len(wrapped):
                raise RuntimeError(f"squeeze: dim {next(d for d in wrapped if wrapped.count(d) > 1)}"
                                   " appears multiple times in the list of dims")
            if self.ndim == 0:
                return self
            shape = tuple(n for i, n in enumerate(self.shape) if n != 1 or i not in drop)
        return _share_version(Reshape.apply(self, shape=shape), self)

    def expand(self, *sizes):
        """A view with size-1 dims repeated (-1 keeps a dim); new dims go in front."""
        return _share_version(Expand.apply(self, shape=ops.expand_shape(self.shape, sizes)), self)

    def expand_as(self, other):
        return self.expand(other.shape)

    def repeat(self, *sizes):
        """Dim i repeated sizes[i] times (a copy, NumPy's tile)."""
        return Repeat.apply(self, sizes=ops.repeat_sizes(self.shape, sizes))

    def split(self, split_size=None, dim=0, *, split_size_or_sections=None):
        """A tuple of pieces of split_size (or of each size in a list) along dim
        (``split_size_or_sections`` is torch.split's name for it)."""
        if split_size_or_sections is not None:
            if split_size is not None:
                raise TypeError("split: pass split_size or split_size_or_sections, not both")
            split_size = split_size_or_sections
        return ops.split(self, split_size, dim)

    def chunk(self, chunks, dim=0):
        return ops.chunk(self, chunks, dim)


autograd.use_tensor_class(Tensor)  # Function.apply wraps its results in this class


def _real_data(t, dtype):
    """``t``'s array, its real parts (with PyTorch's warning) where it is complex."""
    data = t.data
    return ops.complex_to_real(data, np.dtype(dtype)) if data.dtype.kind == "c" else data


def _cast(x, dtype):
    return Cast.apply(x, dtype=dtype)


def _to_dtype(t, dtype):
    return t if t.data.dtype == dtype else _cast(t, dtype)


def _opmath_scalar(t, other):
    """Whether ``t`` (float16 or bfloat16) meets a Python number that its dtype cannot hold
    exactly (65536.5 overflows float16, 1e-8 underflows, 0.1 rounds): PyTorch's kernels then
    compute in float32 with the number as a float32 and round the result once (0 * 65536.5 is
    0, not 0 * inf; x / 1e5 is not x / inf)."""
    if type(other) not in (int, float) or t.data.dtype.itemsize != 2 or \
            not is_floating(t.data.dtype):
        return False
    with np.errstate(over="ignore"):
        held = float(t.data.dtype.type(other))
    return held != other and other == other


def _in_float32(t, compute):
    """``compute(t)`` with t in float32, the result rounded back to t's dtype."""
    return _cast(compute(_cast(t, np.dtype(np.float32))), t.data.dtype)


def _pair(a: Tensor, other, reverse=False, true_divide=False):
    """The two operands of a binary op, as tensors of one dtype (PyTorch's result type):
    ``int64 * float32`` is float32, ``bool + 1`` int64, ``int64 + 2.5`` float32, and a
    division of integers float32."""
    kind = type(other)
    if (kind is float or kind is int) and is_floating(a.data.dtype):
        b = _scalar(other, a, a.data.dtype)  # the common case: the number takes a's dtype
        return (b, a) if reverse else (a, b)
    if isinstance(other, Tensor):
        da, db = a.data.dtype, other.data.dtype
        if da == db:
            dtype = da
        elif (a.data.ndim == 0) == (other.data.ndim == 0):
            dtype = promote_types(da, db)
        elif a.data.ndim:
            dtype = combine_dtypes(da, db)
        else:
            dtype = combine_dtypes(db, da)
        b = other
    elif isinstance(other, (bool, int, float, complex, np.generic)):
        dtype = combine_dtypes(a.data.dtype, scalar_dtype(other))
        if true_divide and not is_differentiable(dtype):  # the number made at the float dtype, so
            dtype = default_float()  # uint8_tensor / -1 divides by -1, not by a wrapped 255
        b = _scalar(other, a, dtype)
    else:  # an array (numpy, or cupy on the GPU) takes part as a number of its kind would
        arr = get_array_module(a.data).asarray(other)
        kind = arr.dtype.kind
        if kind in "biuc" or is_floating(arr.dtype):
            dtype = combine_dtypes(a.data.dtype, scalar_dtype(arr.dtype.type(0)))
        else:
            dtype = arr.dtype  # not a number: the op says what does not fit
        b = Tensor(arr)
    if true_divide and not is_differentiable(dtype):
        dtype = default_float()
    a = _to_dtype(a, dtype)
    b = _to_dtype(b, dtype)
    return (b, a) if reverse else (a, b)


def _refusing_unsigned(operands, kernel):
    """``operands`` as they are, unless they are uint16/32/64, for which torch has no CPU kernel
    of this op (``kernel``, as its error names it): refused as there."""
    if operands[0].data.dtype.kind == "u":  # (on every add: one attribute test, no call)
        ops.refuse_unsigned(operands[0].data.dtype, kernel)
    return operands


def _bitwise(a: Tensor, other, ufunc):
    """``&``, ``|``, ``^`` on bool or integer tensors (bool with bool stays bool)."""
    x, y = _pair(a, other)
    if x.data.dtype.kind not in "biu":
        raise ops.UnsupportedDtypeError(f"{ufunc} needs bool or integer tensors, got "
                                        f"{x.data.dtype}")
    if autograd._profiler_hook is not None and ops.traces_untracked():
        return ops.Compare.apply(x, y, op=ufunc)
    return Tensor(getattr(get_array_module(x.data), ufunc)(x.data, y.data))


_COMPARISONS = {"less": operator.lt, "less_equal": operator.le, "greater": operator.gt,
                "greater_equal": operator.ge, "equal": operator.eq, "not_equal": operator.ne}


def _compare(x, other, op, order_name=None):
    """``x op other`` compared at PyTorch's result type, a boolean Tensor outside the graph
    (recorded as ``ops.Compare`` while the ONNX exporter's tracer asks for it); the ordering
    comparisons (``order_name``) refuse complex numbers."""
    a, b = _pair(x, other)
    if order_name is not None and a.data.dtype.kind == "c":
        ops.refuse_complex(order_name, a.data)
    if order_name is not None and a.data.dtype.kind == "u":
        ops.refuse_unsigned(a.data.dtype, f"{order_name}_cpu")
    if autograd._profiler_hook is not None and ops.traces_untracked():
        return ops.Compare.apply(a, b, op=op)
    return Tensor(_COMPARISONS[op](a.data, b.data))  # the arrays' own operators (NumPy, CuPy)


def _scalar(x, like: Tensor, dtype):
    """A Python number as a 0-d array of ``dtype`` on ``like``'s device. An integer outside an
    integer dtype's range wraps as in PyTorch (``uint8_tensor - 1``: the 1 subtracted, mod 256)."""
    x = ops.wrap_integer(x, dtype)
    data = like.data
    if type(data) in (SparseCOO, SparseCompressed):  # a sparse tensor's device: its values'
        data = data.values
    if type(x) is float and abs(x) > 65504.0:  # beyond float16: inf there, as in PyTorch
        with np.errstate(over="ignore"):
            return Tensor(get_array_module(data).asarray(x, dtype=dtype))
    if type(data) is np.ndarray:
        return Tensor(np.asarray(x, dtype=dtype))
    xp = get_array_module(data)
    if xp is not np:
        # a GPU fill kernel takes the number by value; asarray would copy it from the host,
        # and a copy from pageable memory can wait for the GPU to finish its queue
        return Tensor(xp.full((), x, dtype=dtype))
    return Tensor(np.asarray(x, dtype=dtype))


def _times_alpha(t: Tensor, other, alpha, name):
    """``alpha * other`` for ``t.add(other, alpha=...)``; as PyTorch, a float alpha needs a
    floating-point result."""
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, complex, np.number)) or
                                       is_real_number(alpha)):
        raise TypeError(f"{name}: alpha must be a number, got {type(alpha).__name__}")
    if type(alpha) is int:
        return _scaled(other, alpha)
    kinds = t.data.dtype.kind + (other.data.dtype.kind if isinstance(other, Tensor) else
                                 "c" if isinstance(other, complex) else
                                 "f" if isinstance(other, float) else "i")
    if isinstance(alpha, (complex, np.complexfloating)) and "c" not in kinds:
        raise TypeError(f"{name}: for non-complex input tensors, argument alpha must not be a "
                        f"complex number ({alpha})")
    if is_real_number(alpha) and not isinstance(alpha, (int, np.integer)) and not (
            is_floating(t.data.dtype) or "f" in kinds or "c" in kinds):
        raise TypeError(f"{name}: alpha must not be a float ({alpha}) for integer tensors")
    return _scaled(other, alpha)


def _scaled(other, alpha):
    """``other * alpha``; a float32 or float64 tensor times a real number through ScaleBy,
    which saves nothing (a second backward goes through add's alpha, as torch's)."""
    if alpha == 1:
        return other
    if isinstance(other, Tensor) and other.data.dtype in (np.float32, np.float64) and \
            not isinstance(other.data, SparseArray) and is_real_number(alpha) and \
            not isinstance(alpha, (bool, np.bool_)):
        return ops.ScaleBy.apply(other, factor=float(alpha))
    return other * alpha


_share_version = autograd.share_version  # (defined beside root_array, for the op modules too)


def bump_version(t):
    """Count an in-place change of ``t``'s array (an optimizer step, a load_state_dict)."""
    vc = t._vc
    if vc is None:
        vc = t._vc = [0, 0]
    autograd.changes += 1
    vc[0] += 1  # the count (Tensor._version)
    vc[1] = autograd.changes  # when it last changed


_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
               "bfloat16": "BFloat16Tensor", "int64": "LongTensor", "int32": "IntTensor",
               "int16": "ShortTensor", "int8": "CharTensor", "uint8": "ByteTensor",
               "bool": "BoolTensor", "complex64": "ComplexFloatTensor",
               "complex128": "ComplexDoubleTensor"}


def _draw_dtype(t):
    """The dtype torch's recipes draw in for ``t`` (its own if floating, else float32)."""
    return torch_random.draw_dtype(t.data.dtype)


def _random_fill(t, values, name):
    """``t``'s values replaced by the draws (a host array), under ``copy_``'s in-place rules."""
    if autograd._grad_enabled and t.requires_grad and t._ctx is None:
        raise RuntimeError(f"{name} on a leaf tensor that requires grad (shape {t.shape}): "
                           "PyTorch refuses it too; initialise inside `with minidl.no_grad():`")
    return t.copy_(Tensor(values, device=t.device))  # drawn on the host, moved once


def _fill(t, value):
    return Fill.apply(t, value=value)


def _float_input(t):
    """Integer tensors enter floating-point math in the default dtype, as in PyTorch."""
    return t if is_differentiable(t.data.dtype) else _cast(t, default_float())


def _inplace(t: Tensor, other, ufunc, out_of_place):
    """``t op= other`` and the ``*_`` methods (see the note above ``Tensor.__iadd__``).
    ``out_of_place(t, other)`` is the op recorded when the graph takes part; None for copy_."""
    if out_of_place is not None and autograd._profiler_hook is not None and \
            ops.traces_untracked() and _traced_in_place(t, lambda: out_of_place(t, other)):
        return t
    name = "copy_" if out_of_place is None else f"in-place {ufunc}"
    other_grad = isinstance(other, Tensor) and other.requires_grad
    if autograd._grad_enabled and (t.requires_grad or other_grad):
        return _inplace_in_graph(t, other, name, out_of_place)
    _refuse_no_grad_view(t, name)
    xp = get_array_module(t.data)
    if isinstance(other, Tensor):
        if other.device != t.device:
            raise ValueError(f"{name}: tensors on different devices, {t.device} and "
                             f"{other.device}; move them with .to('{t.device}') first")
        value = other.data
    elif isinstance(other, (bool, int, float, complex, np.generic)):
        value = ops.fill_value(other, t.data.dtype) if ufunc in ("fill", "copy") else other
    else:
        value = xp.asarray(other)
    _check_writable(t, name)
    # a float tensor with a number or a tensor of its dtype: NumPy's op in place is PyTorch's;
    # anything else is computed by the op itself (PyTorch's result type, integer wrapping), then
    # stored where that type fits (a bool or complex number takes the op's path: NumPy's dtype
    # compares equal to None, so a missing dtype is not float64's)
    direct = out_of_place is None or ufunc == "fill" or (is_floating(t.data.dtype) and (
        type(other) in (int, float) or (hasattr(value, "dtype") and value.dtype == t.data.dtype))
        and ufunc != "trunc_divide"  # (no NumPy ufunc: computed by the op, then stored)
        and not _opmath_scalar(t, other))  # (a 16-bit tensor and such a number: in float32)
    if not direct:
        with no_grad():
            value = out_of_place(t, other).data
        if category(value.dtype) > category(t.data.dtype):
            raise ops.InPlaceCastError(f"{name}: result type {value.dtype} can't be cast to the "
                                       f"desired output type {t.data.dtype} (a {t.data.dtype} "
                                       "tensor cannot hold it)")
    try:
        if out_of_place is None or ufunc == "fill" or not direct:
            if not direct and value.shape != t.shape:
                raise ValueError
            xp.copyto(t.data, value, casting="unsafe")
        else:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                getattr(xp, ufunc)(t.data, value, out=t.data)
    except ValueError:
        raise ops.BadArgumentError(
            f"{name}: shape {getattr(value, 'shape', ())} does not broadcast to this tensor's "
            f"shape {t.shape}") from None
    bump_version(t)
    return t


def _advanced_index(index):
    """Whether ``x[index] = value`` is PyTorch's index_put_ (an index holding a list, an array,
    a tensor with dims or a bool tensor), not a copy into a view."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (list, np.ndarray)) or (isinstance(p, Tensor) and (
        p.ndim or p.data.dtype == np.bool_)) for p in parts)


def check_index_put_dtype(t, index, value):
    """PyTorch's refusal of ``x[index] = tensor`` of another dtype where the index is advanced
    (index_put_ needs the dtypes to match; a copy into a view, or one value under a bool mask,
    casts). ``index`` as the caller gave it."""
    if isinstance(value, Tensor) and value.data.dtype != t.data.dtype and \
            _advanced_index(index) and not (
                isinstance(index, Tensor) and index.data.dtype == np.bool_ and index.ndim and
                value.ndim == 0):
        raise RuntimeError(f"Index put requires the source and destination dtypes match, got "
                           f"{t.data.dtype} for the destination and {value.data.dtype} for the "
                           "source.")


def _viewable(data, sizes):
    """Whether an array of ``data``'s shape and strides reads as ``sizes`` with no copy
    (NumPy's test on a stand-in of those strides, which touches no element)."""
    if data.size == 0 or data.ndim == 0:
        return True
    item = data.dtype.itemsize
    strides = tuple(int(st) // item for st in data.strides)
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), data.shape, strides)
    try:
        stand_in.reshape(sizes, copy=False)
    except (ValueError, TypeError):
        return False
    return True


def _view_as_dtype(t, dtype):
    """``x.view(dtype)``: the same bytes read as ``dtype`` (no gradient); of another element
    size, the last dim must be contiguous and its byte count divisible, as in PyTorch."""
    dt = as_dtype(dtype)
    a = t.data
    if dt.itemsize != a.dtype.itemsize:
        if a.ndim == 0 or (a.shape[-1] > 1 and a.strides[-1] != a.dtype.itemsize) or \
                (a.shape[-1] * a.dtype.itemsize) % dt.itemsize:
            raise RuntimeError(
                f"view(dtype): a tensor of dtype {a.dtype} and shape {tuple(a.shape)} cannot be "
                f"viewed as {dt}: its last dim must be contiguous and its size in bytes divisible "
                f"by {dt.itemsize}")
        if a.shape[-1] > 1 and not a.flags.c_contiguous and a.ndim > 1:
            a = a.view()  # (NumPy needs only the last axis contiguous)
    out = Tensor(a.view(dt), dtype=dt)
    out._is_view = True
    return _share_version(out, t)


def _set_item(t, index, value):
    name = "x[index] = value"
    if isinstance(value, (bool, int, float, complex, np.generic)):  # checked, wrapped as torch's
        value = ops.fill_value(value, t.data.dtype, name)
    if isinstance(value, Tensor) and value.device != t.device:
        raise ValueError(f"{name}: tensors on different devices, {t.device} and "
                         f"{value.device}; move the value with .to('{t.device}') first")
    try:
        target_shape = np.empty(t.shape, dtype=np.uint8)[index].shape  # checks the index
    except IndexError as e:
        raise IndexError(f"{name}: {e} (tensor of shape {t.shape})") from None
    value_shape = value.shape if isinstance(value, Tensor) else np.shape(value)
    try:
        np.broadcast_shapes(value_shape, target_shape)
        if len(value_shape) > len(target_shape) and any(n != 1 for n in value_shape[
                :len(value_shape) - len(target_shape)]):
            raise ValueError
    except ValueError:
        raise ValueError(f"{name}: a value of shape {tuple(value_shape)} does not fit the "
                         f"{tuple(target_shape)} elements selected") from None
    value_grad = isinstance(value, Tensor) and value.requires_grad
    if autograd._grad_enabled and (t.requires_grad or value_grad) and _writes_itself(
            t, index, value):
        return  # x[i] += v: the view changed in place already holds the values (and the node)
    if isinstance(value, Tensor) and value._vc is not None and value._vc is t._vc and \
            not _advanced_index(index):  # (one count: the same memory) h[1:] = h[:-1]
        _refuse_partial_overlap(t.data[index], value.data, name)
    if autograd._grad_enabled and (t.requires_grad or value_grad):
        if not isinstance(value, Tensor):
            value = Tensor(get_array_module(t.data).asarray(value, dtype=t.data.dtype))
        elif value.data.dtype != t.data.dtype:
            value = _cast(value, t.data.dtype)
        if len(value.shape) > len(target_shape):  # leading 1s the selection does not have
            value = value.reshape(value.shape[len(value.shape) - len(target_shape):])
        _inplace_in_graph(t, value, name,
                          lambda old, v: _copy_slices(ops.SetItem.apply(old, v, index=index)))
        return
    _check_writable(t, name)
    t.data[index] = value.data if isinstance(value, Tensor) else value  # cast as torch casts
    bump_version(t)


def check_in_place_result(name, have, want, shape=None, result_shape=None):
    """PyTorch's refusal of an in-place op whose result a tensor cannot hold: a float result
    in an integer or bool tensor (``int_tensor.sqrt_()``), a complex one in a real tensor, an
    integer one in a bool tensor (``bool_tensor.square_()``), a result of another shape
    (``x.pow_(y)`` with y broadcasting x to more dims)."""
    if shape is not None and tuple(result_shape) != tuple(shape):
        raise RuntimeError(f"{name}: output with shape {list(shape)} doesn't match the "
                           f"broadcast shape {list(result_shape)}")
    if category(have) > category(want) or (want.kind == "b" and have.kind != "b"):
        raise ops.InPlaceCastError(f"{name}: result type {have} can't be cast to the desired "
                                   f"output type {want}")


def _check_writable(t, name):
    """Refuse an in-place write outside the graph into ``t``'s array where it cannot take one:
    a sparse tensor (named, not NumPy's "flags: not supported"), or a read-only array."""
    if type(t.data) in (SparseCOO, SparseCompressed):
        raise SparseLayoutError(name, t.data.layout)
    if type(t.data) is np.ndarray and not t.data.flags.writeable:
        raise ValueError(f"{name}: this tensor's array (shape {t.shape}) is read-only")


def _write_result(t, y, name, result_name):
    """``y``'s values written into ``t``'s array outside the graph (views of it see them), once
    torch's checks pass: the result fits ``t`` (``result_name`` in that error), the array
    takes writes."""
    check_in_place_result(result_name, y.data.dtype, t.data.dtype, t.shape, y.shape)
    _check_writable(t, name)
    get_array_module(t.data).copyto(t.data, y.data, casting="unsafe")
    bump_version(t)
    return t


def _writes_itself(t, index, value):
    """``t[index] = value`` where ``value`` is the very view ``t[index]`` (what Python runs for
    ``t[index] += v`` after the in-place op on that view): nothing left to write."""
    if not (isinstance(value, Tensor) and value._is_view) or type(t.data) is SparseCOO:
        return False
    base = t.__dict__.get("_view_base", t)
    if value.__dict__.get("_view_base") is not base or value.data.dtype != t.data.dtype:
        return False
    try:
        target = t.data[index]
    except (IndexError, TypeError, ValueError):
        return False
    if getattr(target, "base", None) is None or target.shape != value.shape:
        return False  # an advanced index's copy, or a scalar: not the view itself
    return target.strides == value.data.strides and _addr(target) == _addr(value.data)


def _dense(a):
    """torch's is_non_overlapping_and_dense: the elements of ``a`` fill one block of memory
    with no gap, in some order of its dims (positive strides)."""
    expected = a.itemsize
    for step, n in sorted((st, n) for n, st in zip(a.shape, a.strides) if n > 1):
        if step != expected:
            return False
        expected *= n
    return True


def _refuse_partial_overlap(target, source, name):
    """torch's refusal of an in-place write of the array ``source`` into ``target`` where
    both are dense blocks whose memory overlaps without being the same elements in the same
    order (``h[1:] = h[:-1]``, ``h.copy_(h.t())``)."""
    if type(source) is not type(target) or type(target) is SparseCOO or \
            not get_array_module(target).may_share_memory(target, source):
        return
    if source.shape == target.shape and source.strides == target.strides and \
            _addr(source) == _addr(target):
        return
    if _dense(target) and _dense(source):
        raise RuntimeError(
            f"{name}: unsupported operation: some elements of the input tensor (shape "
            f"{tuple(source.shape)}) and the written-to tensor (shape {tuple(target.shape)}) "
            "refer to a single memory location. Please clone() the tensor before performing "
            "the operation (PyTorch refuses it too)")


def _addr(a):
    return a.__array_interface__["data"][0] if type(a) is np.ndarray else a.data.ptr


def apply_in_place(t, fn, name):
    """``t`` set to ``fn(t)`` in place (``F.relu(x, inplace=True)``, ``x.relu_()``): the same
    rules as the in-place operators (recorded by the graph as the tensor itself, refused where
    that would send a gradient astray); without a graph, the values are written into ``t``'s
    array, which views of it see."""
    if autograd._profiler_hook is not None and ops.traces_untracked() and \
            _traced_in_place(t, lambda: fn(t)):
        return t
    if autograd._grad_enabled and t.requires_grad:
        return _inplace_in_graph(t, None, f"{name}(inplace=True)", lambda old, _: fn(old))
    _refuse_no_grad_view(t, f"{name}(inplace=True)")
    return _write_result(t, fn(t), f"{name}(inplace=True)", f"{name}_")


def _traced_in_place(t, compute):
    """While a tracer that sees the untracked ops runs (the ONNX exporter: a graph of values
    cannot follow a write into an earlier op's array, and would leave the op out): the op
    computed out of place by ``compute()`` (so the tracer records it), its result made ``t``'s
    array, so later ops read the new value as the model did. False, with nothing changed,
    where that cannot stand for the in-place write (a view, whose base would not see it; another
    shape; a wider dtype): the real path then runs, which the exporter refuses."""
    if t._is_view:
        return False
    result = compute()
    if tuple(result.shape) != tuple(t.shape):
        return False
    data = result.data
    if data.dtype != t.data.dtype:
        if category(data.dtype) > category(t.data.dtype):
            return False  # the real path raises torch's error for it
        data = result.to(t.data.dtype).data
    t.data = data
    return True


def _fitted_result(out, t, name, any_cast=False, into="a tensor"):
    """An in-place op's out-of-place result ``out`` cast to ``t``'s dtype (refused where that
    is a narrower category, as torch's, unless ``any_cast``: copy_ casts whatever it is given)
    and checked to have ``t``'s shape (``into`` names what t is in the error)."""
    if out.data.dtype != t.data.dtype:
        if not any_cast and category(out.data.dtype) > category(t.data.dtype):
            raise ops.InPlaceCastError(f"{name}: result type {out.data.dtype} can't be cast to "
                                       f"the desired output type {t.data.dtype} (a "
                                       f"{t.data.dtype} tensor cannot hold it)")
        out = _cast(out, t.data.dtype)
    if out.shape != t.shape:
        raise ValueError(f"{name}: a result of shape {out.shape} does not fit in {into} of "
                         f"shape {t.shape}")
    return out


def _inplace_in_graph(t, other, name, out_of_place):
    """An in-place op that the graph records: ``t`` itself becomes the op's result (its old
    node moves to a new Tensor that the op takes as input), so ``h.mul_(2)`` changes ``h`` as in
    PyTorch. Where that could reroute a gradient, it is refused with the reason."""
    if t.requires_grad and t._ctx is None:
        raise RuntimeError(
            f"{name} on a leaf tensor that requires grad (shape {t.shape}): PyTorch refuses it "
            "too; update parameters inside `with minidl.no_grad():`")
    if t._is_view and not _lost_its_base(t) and not t.__dict__.get("_detached"):
        return _inplace_on_view(t, other, name, out_of_place)
    if out_of_place is None:
        out_of_place = _copied
    vc = t._vc
    if vc is not None and len(vc) > 2:  # other tensors may view t's array
        return _inplace_on_viewed_base(t, other, name, out_of_place)
    if t._used:
        raise RuntimeError(
            f"{name} on a tensor (shape {t.shape}) that another op of the graph already took as "
            "an input: its gradient would go to the changed tensor. Use an out-of-place op "
            "(h = h * 2) or change a .clone()")
    old = Tensor.__new__(Tensor)
    old.__dict__.update(t.__dict__)  # the node as it was: the recorded op takes it as input
    out = out_of_place(old, old if other is t else other)  # y *= y squares the old y
    out = _fitted_result(out, t, name)
    version = t._version
    t.data, t._ctx, t.requires_grad = out.data, out._ctx, out.requires_grad
    # a new array: views of the old one keep the old count; t's own count still goes up by
    # one, as PyTorch's (whatever caches by version, as forward AD's tangents, sees the change)
    t._vc = [version + 1, 0]
    t.__dict__.pop("_used", None)
    t.__dict__.pop("_is_view", None)
    t.__dict__.pop("_hooks", None)  # hooks stay with the value they were registered on
    return t


def _copied(old, value):
    """``t.copy_(value)`` in the graph, ``old`` standing for t's old node: value broadcast to
    t's shape and cast to its dtype, as an op whose gradient goes to ``value`` (summed back to
    its shape) and is zero for ``old``, which stays an input, as in torch's CopyBackwards (t
    keeps requiring grad where the old t did)."""
    if not isinstance(value, Tensor):
        value = Tensor(get_array_module(old.data).asarray(value))
    if value.device != old.device:
        raise ValueError(f"copy_: tensors on different devices, {old.device} and "
                         f"{value.device}; move them with .to('{old.device}') first")
    try:
        fits = np.broadcast_shapes(tuple(value.shape), tuple(old.shape)) == tuple(old.shape)
    except ValueError:
        fits = False
    if not fits:
        raise ops.BadArgumentError(f"copy_: shape {tuple(value.shape)} does not broadcast to "
                                   f"this tensor's shape {tuple(old.shape)}")
    if value.data.dtype != old.data.dtype:
        value = _cast(value, old.data.dtype)
    return ops.SetItem.apply(old, value, index=Ellipsis)


def _inplace_on_viewed_base(t, other, name, out_of_place):
    """An in-place op in the graph on a whole tensor ``t`` whose array other tensors may view
    (``v = h[0]; h.mul_(2)``), as PyTorch records it: the op computed out of place from a copy
    of ``t``'s values (a Clone of its old node, so what the op saves is never overwritten),
    its result written into ``t``'s array (every view reads the new values, and the shared
    count goes up) and ``t`` made the op's result. The views recorded from ``t`` reach its new
    node through ``t`` itself, so their gradients flow through the op, as torch's regenerated
    view nodes; views recorded before ``t`` took part in the graph (no node) become views of
    the new ``t``. Where an op other than a view already took ``t`` or one of its views, the
    change would reroute that op's gradient: refused, as for a whole tensor without views."""
    b_data = t.data
    xp = get_array_module(b_data)
    if type(b_data) is SparseCOO:
        raise SparseLayoutError(name)
    if xp is np and not b_data.flags.writeable:
        raise ValueError(f"{name}: this tensor's array (shape {t.shape}) is read-only")
    tracked = [w for w in (r() for r in t.__dict__.get("_views", ())) if w is not None]
    views = [w for w in tracked if w.__dict__.get("_view_base") is t]
    for w in [t] + views:
        if int(w._used) > w.__dict__.get("_view_uses", 0):
            what = "it" if w is t else "a view of it"
            raise RuntimeError(
                f"{name} on a tensor (shape {t.shape}) when an op of the graph other than a view "
                f"already took {what} (shape {w.shape}) as an input: minidl cannot send that "
                "op's gradient to the values as they were. Use an out-of-place op, or change a "
                ".clone()")
    if isinstance(other, Tensor) and other is not t and type(other.data) is type(b_data) and \
            xp.may_share_memory(other.data, b_data):
        same = other.data.shape == b_data.shape and other.data.strides == b_data.strides and \
            _addr(other.data) == _addr(b_data)
        if not same and name != "x[index] = value":
            raise RuntimeError(
                f"{name}: unsupported operation: some elements of the input tensor (shape "
                f"{other.shape}) and the written-to tensor (shape {t.shape}) refer to a single "
                "memory location. Please clone() the tensor before performing the operation "
                "(PyTorch refuses it too)")
        # a value in the graph (a view of t: its node leads to t, soon the op's) is read from
        # the old node; one outside it (h.detach()) is read as it is, as torch reads it
        other_pos = False if not other.requires_grad else None if same else _view_positions(
            b_data, other.data, name, overlap=True)
    else:
        other_pos = False
    # the views without a node, to be made views of the new t: their places, found first
    unrecorded = [(w, _view_positions(b_data, w.data, name, overlap=True)) for w in views
                  if w._ctx is None]
    old = Tensor.__new__(Tensor)
    old.__dict__.update(t.__dict__)  # the node as it was (its op, its count, its array)
    for key in ("_used", "_view_uses", "_views"):  # (hooks: with the old value, as torch's)
        old.__dict__.pop(key, None)
    src = old.clone()  # its values now: what the op reads and may save
    if other is t or other_pos is None:
        other = src  # h *= h squares the old h
    elif other_pos is not False:  # a view of t (h[1:] = h[:-1]): its values as they were
        other = _view_node(src, other_pos)
    out = out_of_place(src, other)
    out = _fitted_result(out, t, name)
    xp.copyto(b_data, out.data, casting="unsafe")
    bump_version(t)
    if out.requires_grad:
        # t's array is not the op's output array, which the op's graph_backward may read
        # (relu's mask, exp's value) from its output tensor: an identity node stands between
        out = autograd.Alias.apply(out)
    t._ctx, t.requires_grad = out._ctx, out.requires_grad
    t.__dict__.pop("_hooks", None)  # hooks stay with the value they were registered on
    if t.requires_grad:
        for w, pos in unrecorded:
            node = _view_node(t, pos)
            w._ctx, w.requires_grad = node._ctx, node.requires_grad
            w.__dict__.pop("_hooks", None)
    _refuse_stale_views(tracked)
    return t


class RefusedView(Function):
    """The node of a view that PyTorch refuses to use once its base, or another view of its
    base, changed in place in grad mode: a view made under no_grad(), or one of several views
    a function returned (split, unbind). torch raises at the view's next use; minidl raises
    when its grad_fn is read or a backward pass reaches it (``refusal`` says why)."""

    def backward(self, g):
        raise RuntimeError(self.refusal)

    def graph_backward(self, g, out):
        raise RuntimeError(self.refusal)


def _refuse_stale_views(views):
    """Mark the live views (of a base just changed in place in grad mode) that torch refuses
    to use afterwards (see RefusedView)."""
    for w in views:
        multi = w.__dict__.get("_multi_view")
        if multi is not None:
            why = (f"Output of {multi} (a view of shape {tuple(w.shape)}) is a view and its base "
                   "or another view of its base has been modified inplace. This view is the "
                   "output of a function that returns multiple views. Such functions do not "
                   "allow the output views to be modified inplace (PyTorch refuses it too). You "
                   "should replace the inplace operation by an out-of-place one")
        elif w.__dict__.get("_view_no_grad") and "_view_base" not in w.__dict__:
            why = (f"A view was created in no_grad mode (shape {tuple(w.shape)}) and its base or "
                   "another view of its base has been modified inplace with grad mode enabled. "
                   "Given that this use case is ambiguous and error-prone, it is forbidden (as "
                   "in PyTorch): make both the view and the in-place op inside the no_grad "
                   "block, or both outside it, or clone() the view")
        else:
            continue
        node = RefusedView()
        node.refusal, node.freed, node.lost = why, True, True
        w._ctx, w.requires_grad = node, True


def _element_addresses(a):
    """The address of each element of the array ``a`` (its shape), from its strides."""
    xp = get_array_module(a)
    start = _addr(a)
    addr = xp.full(a.shape, start, dtype=np.int64)
    for d, (n, step) in enumerate(zip(a.shape, a.strides)):
        addr = addr + (xp.arange(n, dtype=np.int64) * step).reshape(
            (1,) * d + (n,) + (1,) * (a.ndim - d - 1))
    return addr


def _surely_apart(a):
    """True where the strides of ``a`` show that no two of its elements share memory (each
    dim's step clears all the smaller ones' span); False leaves it to be counted."""
    extent = a.itemsize
    for step, n in sorted((abs(st), n) for n, st in zip(a.shape, a.strides) if n > 1):
        if step < extent:
            return False
        extent += step * (n - 1)
    return True


class _Strided(tuple):
    """Where a view lies in a C-contiguous base: ``(shape, strides, offset)`` in elements of
    the flat base (ops.AsStrided's arguments), kept instead of an array of places."""

    __slots__ = ()
    shape = property(lambda self: self[0])
    strides = property(lambda self: self[1])
    offset = property(lambda self: self[2])


def _strided_place(base, view, name, overlap):
    """``view``'s place in the C-contiguous array ``base`` as a _Strided, or None where its
    byte offset or strides are not whole elements (then the places are counted one by one)."""
    item = base.itemsize
    start = _addr(view) - _addr(base)
    if start % item or any(st % item for st in view.strides):
        return None
    offset, strides = start // item, tuple(int(st) // item for st in view.strides)
    if view.size:
        lo = offset + sum(min(0, (n - 1) * st) for n, st in zip(view.shape, strides))
        hi = offset + sum(max(0, (n - 1) * st) for n, st in zip(view.shape, strides))
        if lo < 0 or hi >= base.size:
            return None
    place = _Strided((tuple(int(n) for n in view.shape), strides, int(offset)))
    if not overlap and view.size > 1 and not _surely_apart(view):
        xp = get_array_module(base)
        if xp.unique(ops.strided_positions(xp, *place)).size != view.size:
            _refuse_overlapping_write(view, name)
    return place


def _refuse_overlapping_write(view, name):
    raise RuntimeError(f"{name}: unsupported operation: more than one element of the "
                       f"written-to tensor (shape {tuple(view.shape)}, an expand()ed view?) "
                       "refers to a single memory location. Please clone() the tensor before "
                       "performing the operation (PyTorch refuses it too)")


def _view_positions(base, view, name, overlap=False):
    """Where each element of the array ``view`` lies in the array ``base`` (whose memory it
    views): in a C-contiguous base (the common case), a _Strided; else an integer array of
    ``view``'s shape, of flat (C-order) indices into ``base``. ``overlap``: elements of
    ``view`` may share a place (an expand()ed view that is read, not written)."""
    if base.flags.c_contiguous:
        place = _strided_place(base, view, name, overlap)
        if place is not None:
            return place
    xp = get_array_module(base)
    v_addr = _element_addresses(view).reshape(-1)
    if base.flags.c_contiguous:  # the offset from its start, in elements
        at = v_addr - _addr(base)
        pos = at // base.itemsize
        bad = v_addr.size and bool(((at % base.itemsize != 0) | (pos < 0) | (pos >= base.size))
                                   .any())
    else:
        b_addr = _element_addresses(base).reshape(-1)
        order = xp.argsort(b_addr, kind="stable")
        ordered = b_addr[order]
        at = xp.searchsorted(ordered, v_addr)
        bad = v_addr.size and (int(at.max()) >= ordered.size or bool(
            (ordered[xp.minimum(at, ordered.size - 1)] != v_addr).any()))
        pos = order[xp.minimum(at, max(ordered.size - 1, 0))] if ordered.size else at
    if bad:
        raise RuntimeError(f"{name} on a view (shape {tuple(view.shape)}) whose elements do not "
                           "all lie in its base's array; change a .clone() instead")
    if not overlap and v_addr.size > 1 and not _surely_apart(view) and \
            xp.unique(v_addr).size != v_addr.size:
        _refuse_overlapping_write(view, name)
    return pos.reshape(view.shape)


def _view_node(base, pos):
    """The view at ``pos`` (a _Strided, or flat indices) of ``base`` as an op of the graph,
    taking ``base`` itself (so its gradient reaches ``base``'s node); the array is a copy, for
    its node only."""
    flat = Reshape.apply(base, shape=(-1,))
    if type(pos) is _Strided:
        node = ops.AsStrided.apply(flat, shape=pos.shape, strides=pos.strides, offset=pos.offset)
    else:
        node = GetItem.apply(flat, index=pos)
    if flat._ctx is not None:
        base._view_uses = base.__dict__.get("_view_uses", 0) + 1
    return node


def _copy_slices(t):
    """``t``, whose node writes values into a view of another tensor's value (torch records
    it as CopySlices), marked so that a backward pass frees it as torch frees CopySlices: a
    second backward through it refuses, as torch's."""
    if t._ctx is not None:
        t._ctx.lost_on_free = True
    return t


def _scatter_node(flat, value, pos):
    """``flat`` (a 1-d tensor) with ``value`` written at ``pos`` (as _view_node reads it), as
    an op of the graph."""
    if type(pos) is _Strided:
        return ops.AsStridedScatter.apply(flat, value, shape=pos.shape, strides=pos.strides,
                                          offset=pos.offset)
    return ops.SetItem.apply(flat, value, index=pos)


def _lost_its_base(t):
    """A tensor marked as a view whose array no longer shares its base's memory (restored from
    a pickle, which copies each array): a whole tensor of its own for in-place ops."""
    base = t.__dict__.get("_view_base")
    if base is None or type(t.data) is not np.ndarray or type(base.data) is not np.ndarray:
        return False
    return not np.may_share_memory(t.data, base.data)


def _refuse_no_grad_view(t, name):
    """PyTorch's refusal of an in-place change, in grad mode, of a view made under no_grad()
    of a tensor that requires grad (nothing to check outside grad mode or for a whole tensor)."""
    if t._is_view and autograd._grad_enabled and t.__dict__.get("_view_no_grad"):
        raise RuntimeError(
            f"{name}: A view was created in no_grad mode and is being modified inplace with grad "
            f"mode enabled (a view of shape {t.shape}). Given that this use case is ambiguous and "
            "error-prone, it is forbidden (as in PyTorch): make both the view and the in-place "
            "op inside the no_grad block, or both outside it, or clone() the view")


def _inplace_on_view(t, other, name, out_of_place):
    """An in-place op on the view ``t`` of a base ``b``, recorded as PyTorch records it: the op
    computed out of place from ``t``'s values, written at ``t``'s places into ``b``'s old value
    (an op of the graph that ``b`` now stands for, as ``_inplace_in_graph`` makes a whole
    tensor), the values also written into the shared array (so ``b``, ``t`` and every other
    view read the new ones), and ``t`` (and any view of ``b`` not recorded) made a view of the
    new ``b``. Views recorded from ``b`` reach its new node through ``b`` itself. Where some op
    other than a view already took ``b`` or one of its views, the change would reroute that
    op's gradient: refused, as for whole tensors."""
    base = t.__dict__.get("_view_base")
    _refuse_no_grad_view(t, name)
    multi = t.__dict__.get("_multi_view")
    if multi is not None:
        raise RuntimeError(
            f"{name}: output of {multi} (shape {t.shape}) is a view and is being modified "
            "inplace. This view is the output of a function that returns multiple views. Such "
            "functions do not allow the output views to be modified inplace (PyTorch refuses it "
            "too). You should replace the inplace operation by an out-of-place one")
    if base is None:
        raise RuntimeError(
            f"{name} on a view (shape {t.shape}) of another tensor inside the graph whose base "
            "minidl does not know (a complex tensor's real part, a view another kind of op "
            "made): use an out-of-place op, or change a .clone()")
    if base.requires_grad and base._ctx is None:
        raise RuntimeError(
            f"{name}: a view of a leaf Variable that requires grad is being used in an in-place "
            f"operation (the leaf has shape {base.shape}; PyTorch refuses it too). Change a "
            ".clone() of the leaf, or update it inside `with minidl.no_grad():`")
    b_data = base.data
    xp = get_array_module(b_data)
    if type(b_data) in (SparseCOO, SparseCompressed) or type(t.data) in (SparseCOO,
                                                                        SparseCompressed):
        raise SparseLayoutError(name, getattr(t.data, "layout", "sparse_coo"))
    if xp is np and not b_data.flags.writeable:
        raise ValueError(f"{name}: the base array (shape {base.shape}) of this view is read-only")
    tracked = [w for w in (r() for r in base.__dict__.get("_views", ())) if w is not None]
    views = [w for w in tracked if w.__dict__.get("_view_base") is base]
    if not any(w is t for w in views):
        views.append(t)
    for w in [base] + views:
        if int(w._used) > w.__dict__.get("_view_uses", 0):
            what = "it" if w is t else ("its base" if w is base else "another view of its base")
            raise RuntimeError(
                f"{name} on a view (shape {t.shape}) when an op of the graph other than a view "
                f"already took {what} (shape {w.shape}) as an input: minidl cannot send that "
                "op's gradient to the values as they were. Use an out-of-place op, or change a "
                ".clone()")
    if isinstance(other, Tensor) and other is not t and other._vc is t._vc and \
            name != "x[index] = value":  # (x[index] = value checked its own places)
        _refuse_partial_overlap(t.data, other.data, name)
    pos = _view_positions(b_data, t.data, name)
    # the values as they were: a node that stands for the old base (its old op, its count)
    old = Tensor.__new__(Tensor)
    old.__dict__.update(base.__dict__)
    for key in ("_used", "_view_uses", "_views"):  # (hooks: with the old value, as torch's)
        old.__dict__.pop(key, None)
    old_t = _view_node(old, pos)  # t's values (a copy), its gradient to the old base's node
    if other is t:
        other = old_t  # v *= v squares the old v
    elif isinstance(other, Tensor) and (other is base or other.__dict__.get("_view_base") is base) \
            and type(other.data) is type(b_data) and xp.may_share_memory(other.data, b_data):
        # the base or another view of it (h[0] += h[1]): its values as they were, from the old
        # base's node (through the new one, the graph would loop)
        other = _view_node(old, _view_positions(b_data, other.data, name, overlap=True))
    if out_of_place is None:  # copy_: the value, as t's dtype and shape
        value = other if isinstance(other, Tensor) else Tensor(xp.asarray(other))
        out = value if value.shape == t.shape else value.expand(*t.shape)
    else:
        out = out_of_place(old_t, other)
    out = _fitted_result(out, t, name, any_cast=out_of_place is None, into="a view")
    flat_old = Reshape.apply(old, shape=(-1,))
    new = Reshape.apply(_copy_slices(_scatter_node(flat_old, out, pos)), shape=base.shape)
    # the new values into the shared array (b, t and the other views read them), counted once
    xp.copyto(b_data, new.data, casting="unsafe")
    bump_version(base)
    base._ctx, base.requires_grad = new._ctx, new.requires_grad
    base.__dict__.pop("_hooks", None)  # hooks stay with the value they were registered on
    for w in views:  # t, and the views of the old base that no op recorded: views of the new
        if w is t or w._ctx is None:
            node = _view_node(base, pos if w is t else _view_positions(b_data, w.data, name,
                                                                       overlap=True))
            w._ctx, w.requires_grad = node._ctx, node.requires_grad
            w.__dict__.pop("_hooks", None)
    _refuse_stale_views(w for w in tracked if w is not t)
    return t


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _index_item(i):
    """A Tensor inside an index as its array; a 0-d integer one as a Python int, as PyTorch
    takes it (``x[t0, t1]`` is then a view, not an advanced-indexing copy)."""
    if not isinstance(i, Tensor):
        return i
    data = i.data
    if data.ndim == 0 and data.dtype.kind in "iu" and type(data) is not SparseCOO:
        return int(data)
    return data


def _index(index):
    """Tensors inside an index become their arrays (0-d integer ones, ints)."""
    if isinstance(index, Tensor):
        return _index_item(index)
    if isinstance(index, list) and len(index) < 32 and any(
            i is None or i is Ellipsis or isinstance(i, (list, tuple, slice, Tensor, np.ndarray))
            for i in index):
        index = tuple(index)  # x[[[0, 1], [1, 2]]] is x[[0, 1], [1, 2]], as in PyTorch
    if isinstance(index, tuple):
        return tuple(_index_item(i) for i in index)
    return index


def _arg_max_or_min(x, dim, keepdim, take_min):
    data = x.data
    name = "argmin" if take_min else "argmax"
    if data.dtype.kind == "c":
        ops.refuse_complex(name, data)
    if data.dtype.kind == "u":  # (no kernel name formatted on the common path)
        ops.refuse_unsigned(data.dtype, f"{name}_cpu")
    if data.dtype == np.bool_:
        raise ops.UnsupportedDtypeError(f"{name}(): does not support bool input; convert with "
                                        ".int() first")
    ops.refuse_empty_reduction(name, x.shape, dim)
    if autograd._profiler_hook is not None and ops.traces_untracked() and x.ndim:
        d = None if dim is None else _wrap_dim(dim, x.ndim, name)
        return ops.ArgMaxMin.apply(x, dim=d, keepdim=bool(keepdim), take_min=take_min)
    if dim is None:
        arg = data.argmin() if take_min else data.argmax()
        if keepdim:
            return Tensor(get_array_module(data).reshape(arg, (1,) * x.ndim).astype(np.int64))
        return Tensor(np.int64(arg) if x.device == "cpu" else arg.astype(np.int64))
    if x.ndim == 0:
        _wrap_dim(dim, 0, name)
        return Tensor(get_array_module(data).zeros((), dtype=np.int64))
    d = _wrap_dim(dim, x.ndim, name)
    arg = data.argmin(axis=d) if take_min else data.argmax(axis=d)
    if keepdim:
        arg = get_array_module(arg).expand_dims(arg, d)
    return Tensor(arg.astype(np.int64))


def _any_or_all(x, name, dim, keepdim):
    """``x.any()``, ``x.all()``: a bool tensor outside the graph. An empty list of dims reduces
    none, as in PyTorch's any and all (its sum and mean take it as all dims)."""
    no_dims = isinstance(dim, (tuple, list)) and not dim  # each element on its own
    axes = () if no_dims else reduction_axes(dim, x.ndim)
    if autograd._profiler_hook is not None and ops.traces_untracked():  # recorded, to be exported
        return ops.AnyAll.apply(x, op=name, axes=axes, keepdim=bool(keepdim))
    return Tensor(ops.any_all(x.data, name, axes, keepdim))


def _max_or_min(x, dim, keepdim, axis, keepdims, take_min):
    if x.data.dtype.kind == "c":
        ops.refuse_complex("min" if take_min else "max", x.data)
    dim = axis if dim is None else dim
    keepdim = keepdims if keepdims is not None else keepdim
    if isinstance(dim, Tensor):  # torch.max(a, b): the elementwise maximum (minimum), refused
        # for uint16/32/64 in the promoted dtype (uint32 with float32 is float32's maximum)
        return Maximum.apply(*_refusing_unsigned(
            _pair(x, dim), "minimum_cpu" if take_min else "maximum_cpu"), take_min=take_min)
    if x.data.dtype.kind == "u":  # uint16/32/64: torch has no kernel of these
        ops.refuse_unsigned(x.data.dtype, ("min" if take_min else "max")
                            + ("_all" if dim is None else "_cpu"))
    ops.refuse_empty_reduction("min" if take_min else "max", x.shape, dim)
    if x.ndim == 0 and isinstance(dim, int):  # x.max(0) of a 0-d x: (x, 0), as torch
        _wrap_dim(dim, 0, "min" if take_min else "max")
        return MaxResult(Max.apply(x, dim=dim, keepdim=keepdim, take_min=take_min),
                         Tensor(get_array_module(x.data).zeros((), dtype=np.int64)))
    if dim is None or not isinstance(dim, int):
        return Max.apply(x, dim=dim, keepdim=keepdim, take_min=take_min)
    reduction_axes(dim, x.ndim)  # a clear error for a dim out of range
    arg = x.data.argmin(axis=dim) if take_min else x.data.argmax(axis=dim)
    arg = get_array_module(arg).expand_dims(arg, dim)
    values = MaxDim.apply(x, dim=dim, keepdim=keepdim, arg=arg)
    if autograd._profiler_hook is not None and ops.traces_untracked():  # the indices recorded too
        return MaxResult(values, ops.ArgMaxMin.apply(x, dim=dim % x.ndim, keepdim=bool(keepdim),
                                                     take_min=take_min))
    indices = arg if keepdim else arg.squeeze(axis=dim)
    return MaxResult(values, Tensor(indices.astype(np.int64)))


def _is_dtype_like(x):
    """A dtype or a dtype's name ('bfloat16'), not a device: ``.to("tpu")`` is an unknown
    device (normalize_device says so), not an unknown dtype."""
    if isinstance(x, str):
        if x.lower().split(":")[0] in ("cpu", "cuda", "gpu"):
            return False
        try:
            as_dtype(x)
        except (TypeError, RuntimeError):
            return False
        return True
    return isinstance(x, (np.dtype, type))


def _root_gradient(t, gradient, name, create_graph=False):
    """The gradient a backward pass starts from at ``t``: ones for a one-element tensor,
    else ``gradient``, checked against t's shape and cast to its dtype. An array; a Tensor
    with ``create_graph`` (the given Tensor itself where it fits, so that a gradient that
    depends on other tensors is differentiated through too)."""
    xp = get_array_module(t.data)
    if gradient is None:
        if t.data.size != 1:
            raise GradientShapeError(f"{name} without a gradient needs a scalar, got shape "
                                     f"{t.shape}; pass gradient= of the same shape")
        if t.data.dtype.kind == "c":  # d(z)/d(z) is not a real loss's gradient
            raise GradientDtypeError(f"{name}: grad can be implicitly created only for real "
                                     f"scalar outputs but got {t.data.dtype}")
        ones = xp.ones_like(t.data)
        return Tensor(ones, dtype=ones.dtype) if create_graph else ones
    grad = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient)
    if grad.shape != t.data.shape:
        raise GradientShapeError(f"{name}: gradient shape {grad.shape} does not match tensor "
                                 f"shape {t.shape}")
    if (grad.dtype.kind == "c") != (t.data.dtype.kind == "c"):
        raise GradientDtypeError(f"{name}: for complex tensors, both the gradient and the "
                                 f"output must be complex (or both real); got a gradient of "
                                 f"dtype {grad.dtype} for an output of dtype {t.data.dtype}")
    if create_graph:
        if not isinstance(gradient, Tensor):
            return Tensor(grad.astype(t.data.dtype, copy=False))
        return gradient if gradient.dtype == t.data.dtype else gradient.to(t.data.dtype)
    return grad.astype(t.data.dtype, copy=False)


def _accumulate(node, g, handed_out):
    """Add ``g`` into ``node.grad`` (in place where it can, as PyTorch's AccumulateGrad). A
    Tensor ``g`` (a backward with create_graph) is added out of place, as PyTorch does, so
    that ``.grad`` keeps its graph; a first one is copied (a recorded clone, as PyTorch's), as
    the same Tensor may be another leaf's gradient or the caller's ``gradient``."""
    held = node.grad
    if isinstance(g, Tensor):
        node.grad = Clone.apply(g) if held is None else held + g
        return
    if held is not None and (type(g) in (SparseCOO, SparseCompressed)
                             or type(held.data) in (SparseCOO, SparseCompressed)):
        if type(g) is type(held.data) and g.sparse_dim == held.data.sparse_dim and (
                type(g) is SparseCOO or g.layout == held.data.layout):
            held.data += g  # in place, as torch's: the new entries appended
        else:
            node.grad = Tensor(_sum_gradients(held.data, g))  # as torch's: dense where one is
        return
    if held is not None:
        if (held.data.dtype == g.dtype and held.data.shape == g.shape
                and type(held.data) is type(g)
                and (type(g) is not np.ndarray or held.data.flags.writeable)):
            held.data += g  # in place, as PyTorch: a reference to .grad sees it
        else:
            node.grad = Tensor(held.data + g, dtype=g.dtype)
    else:
        # a view (broadcast_to in sum's backward is read-only) or an array that Add handed to
        # two inputs must not become a shared .grad
        if getattr(g, "base", None) is not None or id(g) in handed_out:
            g = g.copy()
        handed_out.add(id(g))
        node.grad = Tensor(g, dtype=g.dtype)


def _backprop(roots, root_grads, retain_graph, given, wanted=None, create_graph=False):
    try:
        return _backprop_graph(roots, root_grads, retain_graph, given, wanted, create_graph)
    except MemoryError as exc:  # CuPy's out-of-memory error as torch's (backend.OutOfMemoryError)
        oom = backend.translated_oom(exc)
        if oom is None:
            raise
        raise oom from exc


def _backprop_graph(roots, root_grads, retain_graph, given, wanted=None, create_graph=False):
    """The backward pass from ``roots`` (seeded with ``root_grads``) through the graph, in
    reverse topological order. Without ``wanted``, leaves (and tensors that retain_grad)
    accumulate into ``.grad``; with it, nothing is accumulated and the gradients reaching the
    ``wanted`` tensors are returned, in order (None where none arrives). ``given``: the root
    gradients came from the caller (copied before a leaf keeps them).

    With ``create_graph`` the gradients are Tensors and each op's ``graph_backward`` computes
    its input gradients with recorded ops, so that the gradients can be differentiated again
    (double backward); without it they are arrays, computed outside the graph."""
    order, any_freed = _graph_order(roots)
    found = None if wanted is None else {id(t): None for t in wanted}
    needed = runs = None
    if found is not None:  # the tensors on a path to a wanted one (autograd.input_needed)
        needed, runs = set(found), set()
        for node in order:  # inputs before the ops that took them
            ctx = node._ctx
            if ctx is not None and any(id(p) in needed for p in ctx.inputs):
                needed.add(id(node))
                runs.add(id(node))  # only these ops run (torch's engine: those on a path
                # to an input), so an op above the inputs keeps what it saved
    for node in (order if any_freed else ()):  # the first freed op in order, as before
        ctx = node._ctx
        if ctx is not None and ctx.freed and (runs is None or id(node) in runs):
            if type(ctx) is RefusedView:
                raise RuntimeError(ctx.refusal)
            raise RuntimeError(
                "backward() through a graph a second time: its saved arrays were freed by "
                f"the first backward (at {type(ctx).__name__}, output shape "
                f"{node.shape}). Pass retain_graph=True to the first backward() to call it "
                "again, or recompute the forward pass (an op that saved nothing, as a view or "
                "an add, can be gone through again, as in PyTorch)")
    finishers = []  # Function.after_backward callbacks met on the way, each run once
    grads = {}
    for root, grad in zip(roots, root_grads):
        held = grads.get(id(root))
        grads[id(root)] = grad if held is None else held + grad
    handed_out = {id(g) for g in root_grads} if given else set()
    previous_needed, autograd._needed = autograd._needed, needed
    previous_task = autograd._graph_task
    autograd._graph_task = autograd.GraphTask(order, runs, found)
    try:
        _run_backward_nodes(order, grads, found, handed_out, retain_graph, create_graph,
                            finishers, runs)
    finally:
        autograd._needed = previous_needed
        autograd._graph_task = previous_task
    for finish in finishers:
        finish()
    return None if found is None else [found[id(t)] for t in wanted]


def _run_backward_nodes(order, grads, found, handed_out, retain_graph, create_graph,
                        finishers, runs=None):
    """The loop of _backprop_graph: each op's backward in reverse topological order (with
    ``runs``, autograd.grad's, only the ops in it: those on a path to a wanted tensor)."""
    changes = autograd.changes
    pop_grad = grads.pop
    for node in reversed(order):
        g = pop_grad(id(node), None)
        if g is None:
            continue
        if runs is not None and id(node) not in runs and id(node) not in found:
            continue  # off every path to a wanted tensor: its hooks do not run either
        if node._hooks:
            g = _run_hooks(node, g)
        ctx = node._ctx
        if found is not None:
            if id(node) in found:
                found[id(node)] = g
            if ctx is None or id(node) not in runs:  # (a freed one there raised above)
                continue
        elif ctx is None or node._retain_grad:
            if node.requires_grad:
                _accumulate(node, g, handed_out)
                _run_post_hooks(node)
            if ctx is None:
                continue
        if ctx.packed is not None:  # saved-tensor hooks packed what it saved: unpack it
            # (under no_grad unless create_graph, as torch runs the unpack hooks)
            previous, autograd._grad_enabled = autograd._grad_enabled, bool(create_graph)
            try:
                autograd.unpack_saved(ctx)
            finally:
                autograd._grad_enabled = previous
        if ctx.stamp != changes:  # something changed in place since this op's forward
            autograd.check_versions(node, ctx, create_graph and ctx.graph_reads_all)
        hooks = ctx.node_hooks
        if hooks is not None and hooks["pre"]:
            g = autograd.run_prehooks(ctx, g)
        finish = ctx.after_backward
        if finish is not None and finish not in finishers:
            finishers.append(finish)
        if autograd._anomaly:
            in_grads = _anomaly_backward(ctx, g, node, create_graph)
        elif create_graph:
            in_grads = _graph_backward(ctx, g, node)
        else:
            # no_grad() around the op's backward, without a context manager's cost per node
            previous, autograd._grad_enabled = autograd._grad_enabled, False
            try:
                if autograd._profiler_hook is None:
                    in_grads = ctx.backward(g)
                else:  # a profiler records: the node's backward in a range named ctx.name()
                    in_grads = autograd._profiler_hook.backward(ctx, g)
            finally:
                autograd._grad_enabled = previous
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if hooks is not None and hooks["post"]:
            in_grads = autograd.run_posthooks(ctx, in_grads, g)
        inputs = ctx.inputs
        if not retain_graph:
            ctx.free()
        elif ctx.packed is not None:
            ctx.saved = ()  # a retained graph keeps the packed values only, as before backward
        for parent, pg in zip(inputs, in_grads):
            if pg is None or not parent.requires_grad:
                continue
            target = parent.data
            if create_graph:
                pg = _fit_graph_gradient(pg, target)
            else:
                if pg.shape != target.shape:
                    pg = unbroadcast(pg, target.shape)
                dtype = target.dtype
                if pg.dtype is not dtype and pg.dtype != dtype:
                    if pg.dtype.kind == "c" and dtype.kind != "c":
                        pg = pg.real  # a real input's share of a complex gradient (PyTorch's)
                    pg = astype(pg, dtype)  # mixed precision: a gradient has its input's dtype
            key = id(parent)
            held = grads.get(key)
            if held is None:
                grads[key] = pg
            else:
                try:
                    grads[key] = held + pg
                except SparseLayoutError:  # one of them sparse (minidl.sparse)
                    grads[key] = _sum_gradients(held, pg)


def _sum_gradients(a, b):
    """Two gradients of one tensor, either of them sparse: sparse when both are (the entries
    of both, as torch's), dense otherwise."""
    from .backend import sparse

    from .backend import sparse_compressed

    if type(a) is SparseCOO and type(b) is SparseCOO:
        if a.shape != b.shape:
            raise RuntimeError(f"gradients of shapes {a.shape} and {b.shape} for one tensor")
        if a.sparse_dim == b.sparse_dim:
            return sparse.add(a, b)
    if type(a) is SparseCompressed and type(b) is SparseCompressed and a.layout == b.layout:
        return sparse_compressed.add(a, b)
    a = sparse.to_dense(a) if type(a) is SparseCOO else a
    b = sparse.to_dense(b) if type(b) is SparseCOO else b
    a = sparse_compressed.to_dense(a) if type(a) is SparseCompressed else a
    b = sparse_compressed.to_dense(b) if type(b) is SparseCompressed else b
    return a + b


def _run_post_hooks(t):
    """``t``'s post-accumulate-grad hooks, once its ``.grad`` has been added to (leaves only)."""
    if t._post_hooks and t._ctx is None:
        for hook in list(t._post_hooks.values()):
            hook(t)


def _anomaly_backward(ctx, g, node, create_graph):
    """One op's backward in anomaly mode: an error in it, or a NaN it returns, is raised with
    the stack of the op's forward call."""
    previous, autograd._grad_enabled = autograd._grad_enabled, bool(create_graph)
    try:
        in_grads = ctx.graph_backward(g, node) if create_graph else ctx.backward(g)
    except Exception as e:
        raise autograd.anomaly_error(ctx, f"Error detected in {ctx.name()}: "
                                          f"{type(e).__name__}: {e}") from e
    finally:
        autograd._grad_enabled = previous
    autograd.check_anomaly(ctx, in_grads if isinstance(in_grads, tuple) else (in_grads,))
    return in_grads


def _graph_backward(ctx, g, node):
    """One op's input gradients as recorded Tensor ops (graph mode on while they run)."""
    previous, autograd._grad_enabled = autograd._grad_enabled, True
    try:
        return ctx.graph_backward(g, node)
    finally:
        autograd._grad_enabled = previous


def _fit_graph_gradient(pg, target):
    """A Tensor gradient summed down to its input's shape (where the op broadcast it) and
    cast to its input's dtype, both as recorded ops."""
    if not isinstance(pg, Tensor):  # an array from an op's graph_backward: a constant
        pg = Tensor(pg, dtype=pg.dtype)
    if pg.shape != target.shape:
        pg = pg.sum_to_size(target.shape)
    if pg.data.dtype != target.dtype:
        if pg.data.dtype.kind == "c" and target.dtype.kind != "c":
            pg = pg.real
        pg = pg.to(target.dtype)
    return pg


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, materialize_grads=False, is_grads_batched=False):
    """The gradients of ``outputs`` with respect to ``inputs`` (a tuple of Tensors, one per
    input), as ``torch.autograd.grad``: nothing is accumulated into any ``.grad``. An input
    that the outputs do not depend on is an error unless ``allow_unused=True`` (then None, or
    zeros with ``materialize_grads=True``). With ``create_graph=True`` the gradients are
    recorded in the graph, so that they can be differentiated again (a gradient penalty, a
    Hessian-vector product); ``retain_graph`` then defaults to True."""
    if retain_graph is None:
        retain_graph = create_graph
    if is_grads_batched:
        return _grads_batched(outputs, inputs, grad_outputs, retain_graph, create_graph,
                              allow_unused, materialize_grads)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise GradientShapeError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} "
                                 "outputs")
    if not inputs:
        raise RuntimeError("grad(): inputs must not be empty (as PyTorch's)")
    if materialize_grads and allow_unused is False:
        raise ValueError("grad(): materialize_grads=True needs allow_unused=True or not given, "
                         "got allow_unused=False (as PyTorch's)")
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError(f"grad: input {i} does not require grad (or is not a Tensor)")
    for i, t in enumerate(outputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: output {i} does not require grad and has no grad_fn")
    seeds = [_root_gradient(t, g, "grad()", create_graph) for t, g in zip(outputs, grad_outputs)]
    found = _backprop(outputs, seeds, bool(retain_graph), True, wanted=inputs,
                      create_graph=create_graph)
    if allow_unused is None:
        allow_unused = materialize_grads
    result = []
    for i, (t, g) in enumerate(zip(inputs, found)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {i} (shape {t.shape}) was not used in the graph "
                                   "of the outputs; pass allow_unused=True if this is intended")
            result.append(Tensor(get_array_module(t.data).zeros_like(t.data))
                          if materialize_grads else None)
        elif isinstance(g, Tensor):  # create_graph: the recorded gradient itself
            result.append(g)
        else:
            result.append(Tensor(g.copy() if getattr(g, "base", None) is not None else g,
                                 dtype=g.dtype))
    return tuple(result)


def _grads_batched(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused,
                   materialize_grads):
    """grad(is_grads_batched=True): the first dim of each grad_output is a batch; one backward
    pass per row (the graph kept until the last), the gradients stacked along a new first dim
    (torch vmaps the engine; the numbers are the same)."""
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    seeds = [grad_outputs] if grad_outputs is None or isinstance(grad_outputs, Tensor) \
        else list(grad_outputs)
    if len(seeds) != len(outs):
        raise GradientShapeError(f"grad: {len(seeds)} grad_outputs for {len(outs)} outputs")
    sizes = set()
    for i, (t, g) in enumerate(zip(outs, seeds)):
        if not isinstance(g, Tensor):
            raise GradientShapeError(f"grad(is_grads_batched=True): grad_outputs[{i}] must be a "
                               f"Tensor whose first dim is the batch, got {type(g).__name__}")
        if tuple(g.shape[1:]) != tuple(t.shape):
            raise GradientShapeError(
                "If `is_grads_batched=True`, we interpret the first dimension of each "
                "grad_output as the batch dimension. The sizes of the remaining dimensions are "
                f"expected to match the shape of corresponding output, but a mismatch was "
                f"detected: grad_output[{i}] has a shape of {tuple(g.shape)} and output[{i}] "
                f"has a shape of {tuple(t.shape)}.")
        sizes.add(g.shape[0])
    if len(sizes) != 1 or 0 in sizes:
        raise GradientShapeError(f"grad(is_grads_batched=True): the grad_outputs' batch sizes "
                                 f"must be one size of at least 1, got {sorted(sizes)}")
    (n,) = sizes
    rows = [grad(outs, inputs, [g[b] for g in seeds], retain_graph or b < n - 1, create_graph,
                 allow_unused, materialize_grads) for b in range(n)]
    return tuple(None if column[0] is None else ops.stack(list(column))
                 for column in zip(*rows))


def _graph_order(roots):
    """The graph above ``roots`` (a list) in topological order (depth-first post-order: every
    op's inputs before it), and whether any op in it was freed by a backward pass."""
    order, visited = [], set()
    stack = [(root, False) for root in reversed(roots)]
    push, pop, seen, emit = stack.append, stack.pop, visited.add, order.append
    freed = False
    while stack:
        node, expanded = pop()
        if expanded:
            emit(node)
            continue
        key = id(node)
        if key in visited:
            continue
        seen(key)
        ctx = node._ctx
        if ctx is None:  # a leaf: nothing to visit first
            emit(node)
            continue
        if ctx.freed and autograd.relink(ctx):  # (freed by a backward pass: its inputs again)
            freed = True
        push((node, True))
        # leaves first, so that they are popped last: each comes right before the op that
        # took it, and backward accumulates it (and runs its hooks) as soon as that op's
        # gradient is there, as torch's engine runs AccumulateGrad once it is ready
        inputs = ctx.inputs
        for parent in inputs:
            if parent._ctx is None and parent.requires_grad and id(parent) not in visited:
                push((parent, False))
        for parent in inputs:
            if parent._ctx is not None and parent.requires_grad and id(parent) not in visited:
                push((parent, False))
    return order, freed


class _ToDevice(Function):
    complex_grad = True

    def forward(self, x, device):
        self.source = device_of(x)
        return backend.to_device(x, device)

    def backward(self, g):
        return backend.to_device(g, self.source)

    def graph_backward(self, g, out):
        return _ToDevice.apply(g, device=self.source)


def _to_device(x, device):
    out = _ToDevice.apply(x, device=device)
    _note_host_range(out, x.data)
    return out


def _note_host_range(t, source):
    """A 1-D integer array copied from the host to the GPU (a batch of class labels) keeps the
    (min, max) measured on the host, so cross_entropy can range-check it without reading it
    back from the GPU, which would stall every training step. The range is tied to this very
    array: replacing ``t.data`` drops it."""
    data = t.data
    if type(data) in (SparseCOO, SparseCompressed):  # a sparse tensor: no range kept
        return
    if data.ndim != 1 or data.dtype.kind not in "iu" or not data.size:
        return
    if device_of(data) != "cuda" or device_of(source) != "cpu":
        return
    host = np.asarray(source).astype(data.dtype, copy=False)
    t._host_range = (data, int(host.min()), int(host.max()))


class GradDtypeError(TypeError, RuntimeError):
    """requires_grad on a tensor that is not floating point: PyTorch raises RuntimeError,
    minidl's earlier versions TypeError; this is both."""


class GradientDtypeError(TypeError, RuntimeError):
    """A backward pass seeded with a complex gradient for a real output, a real one for a
    complex output, or none for a complex scalar (PyTorch's RuntimeError)."""


class GradientShapeError(ValueError, RuntimeError):
    """backward()/grad() of a non-scalar without a gradient, a gradient of the wrong shape, or
    grad_outputs of the wrong count: PyTorch raises RuntimeError, minidl's earlier versions
    ValueError; this is both."""


class ItemError(ValueError, RuntimeError):
    """item() of a tensor that does not hold exactly one element: PyTorch raises RuntimeError,
    minidl's earlier versions ValueError; this is both."""


def _array_dtype(dtype):
    """The dtype ``tensor`` gives a NumPy array of ``dtype`` (None: its own)."""
    if dtype.kind == "f" and SCALAR_DTYPES[float] == np.float32:
        return np.dtype(np.float32)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    if dtype.kind == "c" and SCALAR_DTYPES[float] == np.float32:
        return np.dtype(np.complex64)  # as a float array becomes float32
    return None


def _sequence_dtype(data):
    """``tensor``'s dtype for a nested list that holds tensors (``torch.tensor([R])`` of a 0-d
    float64 R is float64) or NumPy numbers: every element's dtype promoted together as torch
    does (a Python float as the default float, an int as int64, a NumPy number as its own
    dtype, a NumPy array as ``tensor`` takes one); None for plain Python numbers, which the
    array's inference serves."""
    found, scalars, stack = [], set(), [data]
    while stack:
        for x in stack.pop():
            if isinstance(x, (list, tuple)):
                stack.append(x)
            elif isinstance(x, Tensor):
                found.append(x.data.dtype)
            elif isinstance(x, np.generic):  # as tensor(np.float64(1.0)): its own dtype
                found.append(x.dtype)
            elif isinstance(x, np.ndarray):
                found.append(_array_dtype(x.dtype) or x.dtype)
            elif type(x) in SCALAR_DTYPES:
                scalars.add(type(x))
    if not found:
        return None
    out = found[0]
    for d in found[1:] + [SCALAR_DTYPES[k] for k in scalars]:
        out = promote_types(out, d)
    return out


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Make a tensor: floats become the default dtype (float32 unless
    ``minidl.set_default_dtype`` changed it), integers int64 (class labels). A NumPy float
    array becomes float32 under the float32 default (pass dtype=float64 for gradient checks);
    under another default it keeps its float dtype, as torch.tensor."""
    if device is None:
        device = data.device if isinstance(data, Tensor) else device_of(data)
        if device == "cpu" and backend._default_device != "cpu" and not isinstance(data, Tensor):
            device = backend._default_device  # minidl.set_default_device
    if isinstance(data, Tensor):
        data = data.data
    elif dtype is None and isinstance(data, np.ndarray):
        dtype = _array_dtype(data.dtype)
    elif dtype is None and isinstance(data, (list, tuple)):
        dtype = _sequence_dtype(data)
    out = Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
    if out.data.dtype.kind in "USO":  # strings, objects: no tensor dtype holds them
        raise TypeError(f"tensor: invalid data type {type(data).__name__!r} (an array of "
                        f"{out.data.dtype}); pass numbers, bools or arrays of them")
    if out.data is data:
        # like torch.tensor, always a copy: an in-place update (an optimizer step) must never
        # write into the caller's array; minidl.from_numpy is the sharing variant
        out.data = out.data.copy()
    return out


# ---- the ops of indexing.py (and their kin): Tensor methods under PyTorch's names ----------
def _inplace_by(t, name, fn, other=None):
    """``t`` set to ``fn(t, other)`` in place (``x.scatter_(...)``, ``x.index_add_(...)``),
    under the in-place rules: recorded as the tensor itself where the graph takes part,
    written into the array (which views see) where it does not."""
    if autograd._grad_enabled and (t.requires_grad or (
            isinstance(other, Tensor) and other.requires_grad)):
        return _inplace_in_graph(t, other, name, fn)
    _refuse_no_grad_view(t, name)
    with no_grad():
        y = fn(t, other)
    return _write_result(t, y, name, name)


def _install_methods(methods):
    for _name, _fn in methods.items():
        setattr(Tensor, _name, _fn)


from . import indexing as _indexing  # noqa: E402  (imports ops only, as tensor.py does)

_install_methods(_indexing.TENSOR_METHODS)


def _scatter_(self, dim, index, src=None, *, value=None, reduce=None):
    return _inplace_by(self, "scatter_", lambda t, s: _indexing.scatter(
        t, dim, index, s, value=value, reduce=reduce), src)


def _scatter_add_(self, dim, index, src):
    return _inplace_by(self, "scatter_add_",
                       lambda t, s: _indexing.scatter_add(t, dim, index, s), src)


def _index_add_(self, dim, index, source, *, alpha=1):
    return _inplace_by(self, "index_add_", lambda t, s: _indexing.index_add(
        t, dim, index, s, alpha=alpha), source)


_install_methods({"scatter_": _scatter_, "scatter_add_": _scatter_add_,
                  "index_add_": _index_add_})

from . import math_ops as _math_ops, shape_ops as _shape_ops  # noqa: E402

_install_methods(_shape_ops.TENSOR_METHODS)
_install_methods(_math_ops.TENSOR_METHODS)

from . import products as _products  # noqa: E402

_install_methods(_products.TENSOR_METHODS)

from . import linalg as _linalg  # noqa: E402

_install_methods(_linalg.TENSOR_METHODS)

from . import special as _special  # noqa: E402

_install_methods(_special.TENSOR_METHODS)


_HookHandle = autograd.HookHandle  # register_hook's handle


def _run_hooks(node, g):
    """``node``'s hooks in the order they were registered, each given the gradient the one
    before returned (a Tensor, or None to keep it)."""
    if isinstance(g, Tensor):  # create_graph: the hooks see (and may return) the recorded grad
        for hook in list(node._hooks.values()):
            out = hook(g)
            if out is None:
                continue
            if not isinstance(out, Tensor) or out.shape != g.shape:
                raise RuntimeError(f"register_hook: a hook returned "
                                   f"{getattr(out, 'shape', type(out).__name__)} for a tensor "
                                   f"of shape {tuple(g.shape)}")
            g = out if out.dtype == g.dtype else out.to(g.dtype)
        return g
    for hook in list(node._hooks.values()):
        out = hook(Tensor(g, dtype=g.dtype))
        if out is None:
            continue
        new = out.data if isinstance(out, Tensor) else get_array_module(g).asarray(out)
        if new.shape != g.shape:
            raise RuntimeError(f"register_hook: a hook returned a gradient of shape "
                               f"{tuple(new.shape)} for a tensor of shape {tuple(g.shape)}")
        g = new.astype(g.dtype, copy=False)
    return g


def _masked_fill_(self, mask, value):
    return _inplace_by(self, "masked_fill_", lambda t, v: ops.masked_fill(t, mask, v), value)


def _clamp_(self, min=None, max=None):
    return _inplace_by(self, "clamp_", lambda t, _: ops.clamp(t, min, max))


def _index_fill_(self, dim, index, value):
    return _inplace_by(self, "index_fill_",
                       lambda t, v: _indexing.index_fill(t, dim, index, v), value)


def _conj_physical_(self):
    return _inplace_by(self, "conj_physical_", lambda t, _: _complex_ops.conj_physical(t))


_install_methods({"conj_physical_": _conj_physical_})
_install_methods({"masked_fill_": _masked_fill_, "clamp_": _clamp_, "clip_": _clamp_,
                  "index_fill_": _index_fill_})


def refuse_complex_abs_(t):
    """torch's refusal of abs_ on a complex tensor (|z| is real: it would be stored as a
    complex number with no imaginary part)."""
    if t.data.dtype.kind == "c":
        raise ops.ComplexDtypeError("In-place abs is not supported for complex tensors.")


def _unary_in_place(name):
    """``x.exp_()`` and its kin: ``x.exp()`` written into x under the in-place rules."""
    def method(self):
        if name == "abs":
            refuse_complex_abs_(self)
        return apply_in_place(self, lambda t: getattr(t, name)(), name)
    method.__name__ = name + "_"
    return method


_install_methods({name + "_": _unary_in_place(name) for name in (
    "exp", "log", "sqrt", "neg", "abs", "sigmoid", "tanh", "sin", "cos", "reciprocal", "rsqrt",
    "square", "log1p", "expm1", "floor", "ceil", "round", "trunc", "frac", "sign")})


def _pow_(self, exponent):
    return _inplace_by(self, "pow_", lambda t, e: t ** e, exponent)


_install_methods({"pow_": _pow_, "clamp_min_": lambda self, min: _clamp_(
    self, min=min), "clamp_max_": lambda self, max: _clamp_(self, max=max)})


def _index_put_(self, indices, values, accumulate=False):
    return _inplace_by(self, "index_put_", lambda t, v: _indexing.index_put(
        t, indices, v, accumulate), values)


def _index_copy_(self, dim, index, source):
    return _inplace_by(self, "index_copy_",
                       lambda t, s: _indexing.index_copy(t, dim, index, s), source)


_install_methods({"index_put_": _index_put_, "index_copy_": _index_copy_})


def _scatter_reduce_(self, dim, index, src, reduce, *, include_self=True):
    return _inplace_by(self, "scatter_reduce_", lambda t, s: _indexing.scatter_reduce(
        t, dim, index, s, reduce, include_self=include_self), src)


_install_methods({"scatter_reduce_": _scatter_reduce_})


def _view_in_place(name, view):
    """``x.unsqueeze_(0)`` and its kin: x takes the shape ``view(x)`` gives it, on the same
    array (only the shape changes; the version count goes up, as in PyTorch). In the graph,
    x's node moves to the view op's input as the in-place ops' does, under their rules."""
    def method(self, *args, **kwargs):
        if autograd._grad_enabled and self.requires_grad:
            if self._ctx is None:
                raise RuntimeError(f"{name} on a leaf tensor that requires grad (shape "
                                   f"{self.shape}): PyTorch refuses it too; call it inside "
                                   "`with minidl.no_grad():` or on a .clone()")
            base = self
            while base._is_view and base._ctx is not None and base._ctx.inputs:
                base = base._ctx.inputs[0]
            if base is not self and base._ctx is None and base.requires_grad:
                raise RuntimeError(f"{name} on a view of a leaf tensor that requires grad "
                                   f"(shape {base.shape}): PyTorch refuses it too")
            if self._used:
                raise RuntimeError(
                    f"{name} on a tensor (shape {self.shape}) that another op of the graph "
                    "already took as an input: its gradient would come back in the new shape. "
                    f"Use the out-of-place {name[:-1]}()")
            old = Tensor.__new__(Tensor)
            old.__dict__.update(self.__dict__)
            out = view(old, *args, **kwargs)
            self.data, self._ctx, self._vc = out.data, out._ctx, old._vc  # one count, one array
            self.__dict__.pop("_hooks", None)  # hooks stay with the shape they were given
            bump_version(self)
            return self
        if self._ctx is not None and self.requires_grad:
            raise RuntimeError(f"{name} under no_grad() on a tensor (shape {self.shape}) made "
                               "by an op of the graph: its gradient would no longer fit its "
                               f"node (PyTorch fails at backward). Use {name[:-1]}() instead")
        with no_grad():
            out = view(self, *args, **kwargs)
        self.data = out.data
        bump_version(self)
        return self
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``x.{name[:-1]}(...)``'s shape given to x itself, in place."
    return method


_install_methods({
    "unsqueeze_": _view_in_place("unsqueeze_", lambda t, dim: t.unsqueeze(dim)),
    "squeeze_": _view_in_place("squeeze_", lambda t, dim=None: t.squeeze(dim)),
    "t_": _view_in_place("t_", lambda t: t.t()),
    "transpose_": _view_in_place("transpose_", lambda t, dim0, dim1: t.transpose(dim0, dim1)),
    "swapdims_": _view_in_place("swapdims_", lambda t, dim0, dim1: t.transpose(dim0, dim1)),
    "swapaxes_": _view_in_place("swapaxes_", lambda t, axis0, axis1: t.transpose(axis0, axis1)),
})


def _atan2_(self, other):
    return _inplace_by(self, "atan2_", lambda t, o: _math_ops.atan2(t, o), other)


def _hypot_(self, other):
    return _inplace_by(self, "hypot_", lambda t, o: _math_ops.hypot(t, o), other)


_install_methods({"atan2_": _atan2_, "arctan2_": _atan2_, "hypot_": _hypot_})


autograd.use_grad_engine(grad)  # minidl.autograd.grad runs the backward pass defined here

# the ops of pointwise.py and statistics.py (more of PyTorch's tensor ops; structure.py and
# sampling.py, which use the in-place machinery above, are installed by tensor_functions.py)
from . import pointwise as _pointwise  # noqa: E402

_install_methods(_pointwise.TENSOR_METHODS)

from . import statistics as _statistics  # noqa: E402

_install_methods(_statistics.TENSOR_METHODS)
