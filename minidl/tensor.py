"""Tensor and reverse-mode autograd.

A Tensor holds an array (``.data``, numpy or cupy) and, when it was made by a differentiable op
from inputs that need gradients, the ``Function`` that made it (``._ctx``). ``backward()`` walks
the graph in reverse topological order and accumulates gradients with ``+``.
"""
from __future__ import annotations

import numpy as np

from . import autograd, backend
from .autograd import (  # noqa: F401  (Function, no_grad, ... are part of this module's API)
    Function, autocast_hook, enable_grad, is_grad_enabled, no_grad, set_autocast_hook, unbroadcast,
)
from .backend import device_of, get_array_module, normalize_device
from .backend.dtypes import as_dtype, bfloat16_dtype, is_floating
from .ops import (
    Abs, Add, Div, Exp, Log, MatMul, Max, MaxDim, MaxResult, Mean, Mul, Neg, Permute, Pow,
    PowTensor, ReLU, Reshape, Sigmoid, Softmax, Sqrt, Sub, Sum, Tanh, GetItem, reduction_axes,
)

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
        is_array = isinstance(data, (np.ndarray, xp.ndarray))
        if arr.dtype.kind == "f" and arr.dtype != xp.float32 and not is_array:
            arr = arr.astype(xp.float32)  # Python floats and lists become float32
        elif arr.dtype.kind in "iu" and arr.dtype != xp.int64 and not is_array:
            arr = arr.astype(xp.int64)
        return arr
    return xp.asarray(data, dtype=dtype)


def _cuda_array_type():
    cp = backend.cupy_module()
    return None if cp is None else cp.ndarray


class Tensor:
    """An n-dimensional array that remembers how it was computed."""

    __array_priority__ = 1000  # so numpy_array * tensor calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if device is None and type(data) is np.ndarray:
            # the common case (a gradient, an op's result), as the general path below takes it:
            # the array itself (or as dtype), and no host range (that is for the GPU's arrays)
            self.data = data if dtype is None else np.asarray(data, dtype=dtype)
        elif device is None and type(data) is _cuda_array_type():
            xp = backend.cupy_module()  # likewise for an array on the GPU
            self.data = xp.asarray(data) if dtype is None else xp.asarray(data, dtype=dtype)
        else:
            source = data.data if isinstance(data, Tensor) else data
            if device is None:
                device = device_of(source)
            self.data = _as_array(data, dtype, device)
            _note_host_range(self, source)
        if requires_grad and not is_floating(self.data.dtype):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
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
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({self.numpy()!r}{dev}{grad})"

    def numpy(self) -> np.ndarray:
        """The values as a numpy array on the host (a copy when on the GPU)."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(-1)[0].item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def to(self, device=None, dtype=None):
        """A copy on another device or with another dtype (self when nothing changes):
        ``x.to("cuda")``, ``x.to(minidl.bfloat16)``, ``x.to("cuda", minidl.float16)``."""
        if dtype is None and device is not None and _is_dtype_like(device):
            device, dtype = None, device
        out = self
        if device is not None and normalize_device(device) != self.device:
            out = _to_device(out, normalize_device(device))
        if dtype is not None and as_dtype(dtype) != out.dtype:
            out = out.astype(dtype)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def half(self):
        return self.astype(np.float16)

    def bfloat16(self):
        return self.astype(bfloat16_dtype())

    def long(self):
        return Tensor(self.data.astype(np.int64))

    def astype(self, dtype):
        return _cast(self, as_dtype(dtype))

    def detach(self):
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        if flag and not is_floating(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = flag
        return self

    def retain_grad(self):
        self._retain_grad = True

    def zero_(self):
        self.data[...] = 0
        return self

    # ---- autograd ---------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        As in PyTorch, the graph's saved arrays are freed on the way, and a second backward
        through it raises a RuntimeError, unless the first one passes ``retain_graph=True``."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        xp = get_array_module(self.data)
        if gradient is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without a gradient needs a scalar, got shape {self.shape}; "
                    "pass gradient= of the same shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(): gradient shape {grad.shape} does not match "
                                 f"tensor shape {self.shape}")
            grad = grad.astype(self.data.dtype, copy=False)

        order, any_freed = _graph_order(self)
        for node in (order if any_freed else ()):  # the first freed op in order, as before
            ctx = node._ctx
            if ctx is not None and ctx.freed:
                raise RuntimeError(
                    "backward() through a graph a second time: its saved arrays were freed by "
                    f"the first backward (at {type(ctx).__name__}, output shape "
                    f"{node.shape}). Pass retain_graph=True to the first backward() to call it "
                    "again, or recompute the forward pass")
        finishers = []  # Function.after_backward callbacks met on the way, each run once
        grads = {id(self): grad}
        pop_grad = grads.pop
        # arrays already owned elsewhere (the caller's gradient, another leaf's .grad) are
        # copied before a leaf keeps them, so .grad is always writable and never shared
        handed_out = {id(grad)} if gradient is not None else set()
        for node in reversed(order):
            g = pop_grad(id(node), None)
            if g is None:
                continue
            ctx = node._ctx
            if ctx is None or node._retain_grad:
                if node.requires_grad:
                    if node.grad is not None:
                        node.grad = Tensor(node.grad.data + g, dtype=g.dtype)
                    else:
                        # a view (broadcast_to in sum's backward is read-only) or an array
                        # that Add handed to two inputs must not become a shared .grad
                        if getattr(g, "base", None) is not None or id(g) in handed_out:
                            g = g.copy()
                        handed_out.add(id(g))
                        node.grad = Tensor(g, dtype=g.dtype)
                if ctx is None:
                    continue
            finish = ctx.after_backward
            if finish is not None and finish not in finishers:
                finishers.append(finish)
            # no_grad() around the op's backward, without a context manager's cost per node
            previous, autograd._grad_enabled = autograd._grad_enabled, False
            try:
                in_grads = ctx.backward(g)
            finally:
                autograd._grad_enabled = previous
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            inputs = ctx.inputs
            if not retain_graph:
                ctx.free()
            for parent, pg in zip(inputs, in_grads):
                if pg is None or not parent.requires_grad:
                    continue
                target = parent.data
                if pg.shape != target.shape:
                    pg = unbroadcast(pg, target.shape)
                dtype = target.dtype
                if pg.dtype is not dtype and pg.dtype != dtype:
                    pg = _astype(pg, dtype)  # mixed precision: a gradient has its input's dtype
                key = id(parent)
                held = grads.get(key)
                grads[key] = pg if held is None else held + pg
        for finish in finishers:
            finish()

    # ---- operators and math: each runs one Function from ops.py ----------------------------
    def __add__(self, other):
        return Add.apply(self, _operand(other, self))

    def __radd__(self, other):
        return Add.apply(_operand(other, self), self)

    def __sub__(self, other):
        return Sub.apply(self, _operand(other, self))

    def __rsub__(self, other):
        return Sub.apply(_operand(other, self), self)

    def __mul__(self, other):
        return Mul.apply(self, _operand(other, self))

    def __rmul__(self, other):
        return Mul.apply(_operand(other, self), self)

    def __truediv__(self, other):
        return Div.apply(self, _operand(other, self))

    def __rtruediv__(self, other):
        return Div.apply(_operand(other, self), self)

    def __matmul__(self, other):
        return MatMul.apply(self, _operand(other, self))

    def __rmatmul__(self, other):
        return MatMul.apply(_operand(other, self), self)

    matmul = __matmul__

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return PowTensor.apply(self, exponent)
        return Pow.apply(self, exponent=exponent)

    def __rpow__(self, base):
        return PowTensor.apply(_operand(base, self), self)

    def __neg__(self):
        return Neg.apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return Abs.apply(self)

    abs = __abs__

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def sqrt(self):
        return Sqrt.apply(self)

    def tanh(self):
        return Tanh.apply(self)

    def relu(self):
        return ReLU.apply(self)

    def sigmoid(self):
        return Sigmoid.apply(self)

    def softmax(self, dim):
        return Softmax.apply(self, dim=dim)

    # Comparisons give a boolean Tensor outside the graph; a Tensor hashes by identity.
    def __lt__(self, other):
        return Tensor(self.data < _data(other))

    def __le__(self, other):
        return Tensor(self.data <= _data(other))

    def __gt__(self, other):
        return Tensor(self.data > _data(other))

    def __ge__(self, other):
        return Tensor(self.data >= _data(other))

    def __eq__(self, other):
        return Tensor(self.data == _data(other))

    def __ne__(self, other):
        return Tensor(self.data != _data(other))

    def __hash__(self):
        return id(self)

    # ---- reductions ---------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, axis=None, keepdims=None):
        dim = axis if dim is None else dim
        keepdim = keepdims if keepdims is not None else keepdim
        return Sum.apply(self, dim=dim, keepdim=keepdim)

    def mean(self, dim=None, keepdim=False, axis=None, keepdims=None):
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
        return Max.apply(self, dim=dim, keepdim=keepdim, take_min=False)

    def argmax(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor(np.int64(self.data.argmax()) if self.device == "cpu" else self.data.argmax())
        arg = self.data.argmax(axis=dim)
        if keepdim:
            arg = get_array_module(arg).expand_dims(arg, dim)
        return Tensor(arg.astype(np.int64))

    # ---- shape --------------------------------------------------------------------------
    def __getitem__(self, index):
        return GetItem.apply(self, index=_index(index))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        try:
            np.empty(self.shape, dtype=np.uint8).reshape(shape)  # validates cheaply on host
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {self.shape} ({self.numel()} elements) "
                             f"as {shape}") from None
        return Reshape.apply(self, shape=shape)

    view = reshape

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if sorted(a % self.ndim for a in axes) != list(range(self.ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} dims")
        return Permute.apply(self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, dim0=None, dim1=None):
        if dim0 is None:
            return self.permute(tuple(reversed(range(self.ndim))))
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(tuple(axes))

    @property
    def T(self):  # noqa: N802  (PyTorch's name)
        return self.transpose()

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
        shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
        return Reshape.apply(self, shape=shape)

    def unsqueeze(self, dim):
        d = dim % (self.ndim + 1)
        return Reshape.apply(self, shape=self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(n for n in self.shape if n != 1)
        else:
            d = dim % self.ndim
            shape = self.shape if self.shape[d] != 1 else self.shape[:d] + self.shape[d + 1:]
        return Reshape.apply(self, shape=shape)


autograd.use_tensor_class(Tensor)  # Function.apply wraps its results in this class


def _operand(x, like: Tensor):
    """Python scalars and arrays take the dtype and device of the tensor they meet, so
    ``x * 2.0`` stays float32 and never upcasts."""
    if isinstance(x, Tensor):
        return x
    xp = get_array_module(like.data)
    if xp is not np and isinstance(x, (bool, int, float)):
        # a GPU fill kernel takes the number by value; asarray would copy it from the host,
        # and a copy from pageable memory can wait for the GPU to finish its queue
        kind = np.asarray(x).dtype
        dtype = like.dtype if kind.kind in "biuf" and (is_floating(like.dtype) or kind.kind != "f") \
            else kind
        return Tensor(xp.full((), x, dtype=dtype))
    arr = xp.asarray(x)
    if arr.dtype.kind in "biuf" and (is_floating(like.dtype) or arr.dtype.kind != "f"):
        arr = arr.astype(like.dtype)
    return Tensor(arr)


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _index(index):
    """Tensors inside an index become their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def _max_or_min(x, dim, keepdim, axis, keepdims, take_min):
    dim = axis if dim is None else dim
    keepdim = keepdims if keepdims is not None else keepdim
    if dim is None or not isinstance(dim, int) or x.ndim == 0:
        return Max.apply(x, dim=dim, keepdim=keepdim, take_min=take_min)
    reduction_axes(dim, x.ndim)  # a clear error for a dim out of range
    arg = x.data.argmin(axis=dim) if take_min else x.data.argmax(axis=dim)
    arg = get_array_module(arg).expand_dims(arg, dim)
    values = MaxDim.apply(x, dim=dim, keepdim=keepdim, arg=arg)
    indices = arg if keepdim else arg.squeeze(axis=dim)
    return MaxResult(values, Tensor(indices.astype(np.int64)))


def _is_dtype_like(x):
    if isinstance(x, str):
        return x.lower().split(":")[0] not in ("cpu", "cuda", "gpu")
    return isinstance(x, (np.dtype, type))


def _topological_order(root):
    """Nodes reachable from root, each after all of its inputs; iterative (no recursion limit)."""
    return _graph_order(root)[0]


def _graph_order(root):
    """``_topological_order(root)``, and whether any op in it was freed by a backward pass."""
    order, visited = [], set()
    stack = [(root, False)]
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
        if ctx.freed:
            freed = True
        push((node, True))
        for parent in ctx.inputs:
            if parent.requires_grad and id(parent) not in visited:
                push((parent, False))
    return order, freed


class _ToDevice(Function):
    def forward(self, x, device):
        self.source = device_of(x)
        return backend.to_device(x, device)

    def backward(self, g):
        return backend.to_device(g, self.source)


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
    if data.ndim != 1 or data.dtype.kind not in "iu" or not data.size:
        return
    if device_of(data) != "cuda" or device_of(source) != "cpu":
        return
    host = np.asarray(source).astype(data.dtype, copy=False)
    t._host_range = (data, int(host.min()), int(host.max()))


def _astype(a, dtype):
    """``a.astype(dtype)``, through the kernel set's own cast where it has one (CUDA: one launch
    of minidl's kernel, cheaper on the host than CuPy's astype)."""
    fast = getattr(backend.kernels(get_array_module(a)), "astype", None)
    return fast(a, dtype) if fast is not None else a.astype(dtype)


class _Cast(Function):
    def forward(self, x, dtype):
        self.source = x.dtype
        return _astype(x, dtype)

    def backward(self, g):
        return _astype(g, self.source)


def _cast(x, dtype):
    return _Cast.apply(x, dtype=dtype)


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Make a tensor: floats become float32, integers int64 (class labels)."""
    if device is None:
        device = data.device if isinstance(data, Tensor) else device_of(data)
    if isinstance(data, Tensor):
        data = data.data
    elif dtype is None and isinstance(data, np.ndarray):
        if data.dtype.kind == "f" and data.dtype != np.float64:
            dtype = np.float32
        elif data.dtype.kind in "iu":
            dtype = np.int64
        elif data.dtype == np.float64:
            dtype = np.float32  # float32 by default; pass dtype=float64 for gradient checks
    out = Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
    if out.data is data:
        # like torch.tensor, always a copy: an in-place update (an optimizer step) must never
        # write into the caller's array; minidl.from_numpy is the sharing variant
        out.data = out.data.copy()
    return out
