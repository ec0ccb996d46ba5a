"""The core of reverse-mode autograd: grad mode, ``Function`` (one differentiable op) and
``unbroadcast``.

This module sits below ``ops`` (whose ops subclass ``Function``) and ``tensor`` (whose Tensor
methods call those ops), so it imports neither. ``Function.apply`` wraps its result in a
Tensor all the same: ``tensor.py`` hands its ``Tensor`` class over with ``use_tensor_class``
once the class is defined, before any op can run. Imports flow one way:
``backend <- autograd <- ops <- tensor <- functional``.
"""
from __future__ import annotations

import contextlib
import functools
import weakref as _weakref

import numpy as _np

from ..backend import cupy_module, get_array_module, translated_oom
from ..backend.dtypes import is_differentiable, is_floating
from ..backend.sparse import SparseArray, SparseLayoutError, layout_words

_grad_enabled = True
# How many in-place changes of tensors there have been (Tensor.__iadd__, optimizer steps,
# load_state_dict). Each recorded op notes the count at its forward; backward looks at the
# tensors of an op only where the count has moved since (an ordinary step: never).
changes = 0
# Set by minidl.amp while an autocast region is active: called as hook(fn_class, tensors,
# kwargs), it returns the op's result computed under the autocast policy, or None to let
# the op run as it is. None outside autocast, so ordinary ops pay one global read.
_autocast_hook = None


# Set by minidl.profiler while a profiler records (its Recorder): Function.apply then runs
# the op's forward through hook.forward(fn, tensors, kwargs), and the backward engine each
# node's backward through hook.backward(fn, grad), so that both are timed. None otherwise.
_profiler_hook = None
# Set (by products.counted_as) while a product runs that torch counts as an op of its own
# (addmm, baddbmm) or not at all (addbmm's forward, bilinear): (forward name or None, whether
# the backward counts), read by minidl.utils.flop_counter.FlopCounterMode. None otherwise.
_flop_alias = None


# Saved-tensor hooks (autograd.graph.saved_tensors_hooks): a stack of (pack, unpack) pairs, the
# innermost last; only the innermost applies, as in torch. Empty otherwise, so an op that
# records its graph pays one global read. ``_saved_hooks_disabled``: the error message of an
# active disable_saved_tensors_hooks, else None.
_saved_hooks = []
# forward AD (autograd.forward_ad) reads tangents through the recorded graph: while one of its
# levels is open, a result computed under no_grad from tensors that require grad is marked, so
# that unpack_dual refuses it rather than giving it no tangent
_forward_ad_level = False


def _mark_no_grad_result(result, tensors):
    for t in tensors:
        if t.requires_grad or t.__dict__.get("_no_grad_of_graph"):
            result._no_grad_of_graph = True
            return
_saved_hooks_disabled = None


# While a backward pass runs for chosen inputs only (autograd.grad, backward(inputs=...)): the
# ids of the tensors whose gradients lead to those inputs. An op with no derivative for one of
# its inputs refuses only where that gradient is needed (input_needed), as torch's engine
# computes only the edges it needs. None otherwise (every input that requires grad is needed).
_needed = None


def input_needed(fn, i):
    """Whether the running backward pass needs the gradient of ``fn``'s i-th input."""
    t = fn.inputs[i]
    return t.requires_grad and (_needed is None or id(t) in _needed)


class GraphTask:
    """The backward pass running now (``autograd.graph.register_multi_grad_hook`` needs it, as
    torch's hook asks its engine): one per backward()/grad() call, with ``will_run(t)``: whether
    this pass sends a gradient to ``t`` (it is above the roots and, for chosen inputs, on a
    path to one of them). Hooks keep per-pass state on it (``state``), gone with the pass."""
    _count = 0

    def __init__(self, order, runs, found):
        GraphTask._count += 1
        self.id, self.state = GraphTask._count, {}
        self._order, self._runs, self._found, self._reached = order, runs, found, None

    def will_run(self, t):
        if self._reached is None:  # made on the first question only: backward's cost stays
            self._reached = {id(node) for node in self._order}
        key = id(t)
        if key not in self._reached:
            return False
        return self._runs is None or key in self._runs or key in self._found


_graph_task = None  # the GraphTask of the backward pass running now, None outside one


# Anomaly detection (detect_anomaly): ops record where they were called, and a backward pass
# checks every gradient an op returns for NaN, naming the op and that forward call.
_anomaly = False
_anomaly_check_nan = True


def _forward_trace():
    import traceback

    return traceback.extract_stack()[:-2]


class set_detect_anomaly:
    """Turn anomaly detection on or off, as ``torch.autograd.set_detect_anomaly``: at once as a
    call, restored on exit as a context manager. On, every op records the stack of its forward
    call, and a backward pass that meets an op returning NaN in a gradient (with ``check_nan``)
    or raising raises a RuntimeError that names the op and shows that forward call."""

    def __init__(self, mode: bool, check_nan: bool = True):
        global _anomaly, _anomaly_check_nan
        self.previous = (_anomaly, _anomaly_check_nan)
        _anomaly, _anomaly_check_nan = bool(mode), bool(check_nan)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _anomaly, _anomaly_check_nan
        _anomaly, _anomaly_check_nan = self.previous
        return False


class detect_anomaly:
    """``with minidl.autograd.detect_anomaly():`` (or as a decorator): anomaly detection on
    inside, as torch's; it warns that it slows everything down, as torch's does."""

    def __init__(self, check_nan: bool = True):
        self.check_nan = check_nan
        self._modes = []

    def __enter__(self):
        import warnings

        warnings.warn("Anomaly Detection has been enabled. This mode will increase the runtime "
                      "and should only be enabled for debugging.", UserWarning, stacklevel=2)
        self._modes.append(set_detect_anomaly(True, self.check_nan))
        return self

    def __exit__(self, *exc):
        self._modes.pop().__exit__(*exc)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        return run


def is_anomaly_enabled() -> bool:
    return _anomaly


def is_anomaly_check_nan_enabled() -> bool:
    return _anomaly_check_nan


def anomaly_error(fn, message):
    """The RuntimeError anomaly mode raises for ``fn`` (a graph node), with the stack of the
    forward call that made it where it was recorded."""
    import traceback

    trace = getattr(fn, "forward_trace", None)
    where = ("\nTraceback of the forward call that caused the error:\n"
             + "".join(traceback.format_list(trace)) if trace else
             "\n(the op was recorded before anomaly detection was turned on: no forward trace)")
    return RuntimeError(message + where)


def check_anomaly(fn, grads):
    """Anomaly mode: refuse a NaN in any gradient ``fn``'s backward returned."""
    if not _anomaly_check_nan:
        return
    for i, g in enumerate(grads):
        if g is None:
            continue
        data = g.data if isinstance(g, Tensor) else g
        if is_floating(data.dtype) and bool(get_array_module(data).isnan(data).any()):
            raise anomaly_error(fn, f"Function '{fn.name()}' returned nan values in its {i}th "
                                    "output.")


def set_autocast_hook(hook):
    global _autocast_hook
    _autocast_hook = hook


def autocast_hook():
    return _autocast_hook


class _GradMode:
    """A graph-recording mode as PyTorch's no_grad/enable_grad: a context manager
    (``with minidl.no_grad():``) and a decorator, with or without the call
    (``@minidl.no_grad()`` and ``@minidl.no_grad``)."""

    _mode = None

    def __new__(cls, func=None):
        self = super().__new__(cls)
        self._previous = []
        return self(func) if callable(func) else self

    def __init__(self, func=None):
        pass

    def __enter__(self):
        global _grad_enabled
        self._previous.append(_grad_enabled)
        _grad_enabled = self._mode

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous.pop()
        return False

    def __call__(self, func):
        mode = type(self)

        @functools.wraps(func)
        def in_mode(*args, **kwargs):
            with mode():
                return func(*args, **kwargs)
        return in_mode


class no_grad(_GradMode):
    """Run ops without recording the graph (evaluation, parameter updates)."""

    _mode = False


class enable_grad(_GradMode):
    """Record the graph again inside a no_grad region (an optimizer's closure does)."""

    _mode = True


class set_grad_enabled:
    """Turn graph recording on or off: as a call it takes effect at once
    (``minidl.set_grad_enabled(False)``); as a context manager or decorator it restores the
    previous mode on exit (``with minidl.set_grad_enabled(phase == "train"):``)."""

    def __init__(self, mode: bool):
        global _grad_enabled
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled: mode must be a bool, got {type(mode).__name__}")
        self.previous, _grad_enabled = _grad_enabled, mode
        self.mode = mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.previous
        return False

    def __call__(self, fn):
        global _grad_enabled
        _grad_enabled = self.previous  # as a decorator, the mode applies inside fn only
        mode = self.mode

        @functools.wraps(fn)
        def run(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return run


_inference_enabled = False  # is_inference_mode_enabled(): inside inference_mode()


def inference_mode(mode: bool = True):
    """PyTorch's inference mode, as ``no_grad()`` (minidl has no separate tensor kind for it):
    ``with minidl.inference_mode():``; ``inference_mode(False)`` leaves grad mode as it is
    (and is_inference_mode_enabled() False inside); a decorator with or without the call, as
    PyTorch's."""
    if callable(mode):  # @minidl.inference_mode
        fn = mode

        @functools.wraps(fn)
        def run(*args, **kwargs):
            with _inference_scope(True):
                return fn(*args, **kwargs)
        return run
    return _inference_scope(bool(mode))


@contextlib.contextmanager
def _inference_scope(mode):
    global _inference_enabled
    previous, _inference_enabled = _inference_enabled, mode
    try:
        if mode:
            with no_grad():
                yield
        else:
            yield
    finally:
        _inference_enabled = previous


def is_inference_mode_enabled() -> bool:
    return _inference_enabled


def is_grad_enabled() -> bool:
    return _grad_enabled


# The Tensor class, handed over by tensor.py (see the module docstring).
Tensor = None


def use_tensor_class(cls):
    global Tensor, _NO_GRAD_INPUT
    Tensor = cls
    _NO_GRAD_INPUT = cls(_np.zeros(()))


_grad_engine = None  # tensor.py's grad(), handed over as the Tensor class is


def use_grad_engine(fn):
    global _grad_engine
    _grad_engine = fn


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """``torch.autograd.grad``: the gradients of ``outputs`` with respect to ``inputs`` (a tuple,
    one per input), accumulated into no ``.grad``; ``grad_outputs`` seeds non-scalar outputs.
    An input the outputs do not depend on is an error unless ``allow_unused=True`` (None, or
    zeros with ``materialize_grads=True``). ``create_graph=True`` records the gradients in the
    graph, so that they can be differentiated again. The arguments are torch's, in its order:
    ``only_inputs`` is deprecated there and ignored (a warning when False), as here (the
    WGAN-GP gradient penalty still passes it). ``is_grads_batched=True`` reads the first dim
    of each of ``grad_outputs`` as a batch: one vector-Jacobian product per row, stacked (rows
    of a Jacobian, as autograd.functional.jacobian(vectorize=True) takes them)."""
    if not only_inputs:
        import warnings

        warnings.warn("only_inputs argument is deprecated and is ignored now (defaults to True). "
                      "To accumulate gradient for other parts of the graph, please use "
                      "Tensor.backward.", FutureWarning, stacklevel=2)
    return _grad_engine(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused,
                        materialize_grads, is_grads_batched)


def unbroadcast(grad, shape):
    """Sum a broadcast gradient back down to ``shape`` (16-bit gradients in float32)."""
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    if not axes:
        return grad
    dtype = grad.dtype
    wide = _np.float32 if dtype.itemsize == 2 and is_floating(dtype) else None
    out = grad.sum(axis=axes, keepdims=True, dtype=wide)
    out = out.reshape(shape)
    return out if wide is None else out.astype(dtype)


class DimError(IndexError, ValueError):
    """A dimension out of range: an IndexError as in PyTorch, and a ValueError as minidl's
    other argument errors."""


# Python scalars and strings never hold an array: Function.free skips them without a look.
_PLAIN_TYPES = frozenset((int, float, bool, str, type(None)))


def _holds_array(value):
    if isinstance(value, (tuple, list)):
        for v in value:
            if type(v) not in _PLAIN_TYPES and _holds_array(v):
                return True
        return False
    if isinstance(value, _np.dtype):  # has a .shape, but no .dtype: never an array
        return False
    return hasattr(value, "shape") and hasattr(value, "dtype")


# Function.free need not look at these: ``saved`` and ``inputs`` are emptied in any case, and
# ``after_backward`` is kept
_NOT_SCANNED = frozenset(("saved", "inputs", "after_backward", "stamp", "forward_trace",
                          "packed", "node_hooks", "_metadata", "edges", "_ghost"))


def _check_devices(name, tensors):
    dev = tensors[0].device
    for t in tensors[1:]:
        if t.device != dev:
            raise ValueError(
                f"{name.lower()}: tensors on different devices, {dev} and "
                f"{t.device}; move them with .to('{dev}') first"
            )


class Function:
    """One differentiable op: ``forward`` on arrays, ``backward`` from the output's gradient
    to one gradient per tensor input (None where an input needs none)."""

    # called once, with no arguments, when a backward pass that went through this op has
    # finished accumulating every gradient (DistributedDataParallel averages them there)
    after_backward = None
    freed = False  # set once a backward pass without retain_graph has run through this op
    # set with it where that pass dropped what the op saved for its gradient: a later backward
    # through it raises, as torch's; an op that saved nothing is relinked (see relink)
    lost = False
    # True on the node of an in-place op on a view (torch's CopySlices, which drops the view's
    # op once a backward pass ran): that pass frees it as if it had saved values
    lost_on_free = False
    edges = None  # a freed op's inputs, kept without their arrays (see free)
    # True where graph_backward reads an input or the output that backward does not (saved
    # values computed from it instead): a create_graph pass refuses any of them changed in place
    graph_reads_all = False
    stamp = 0  # autograd.changes at this op's forward
    # True where backward follows PyTorch's convention for complex tensors (the gradient of a
    # real loss L is dL/dRe + i dL/dIm): others refuse to record a graph through complex ones
    complex_grad = False
    # PyTorch's style of custom function: ``@staticmethod forward(ctx, *args)`` and
    # ``backward(ctx, *grads)`` on Tensors (see _apply_on_tensors); set per subclass
    _on_tensors = False
    # what saved-tensor hooks' pack_hook returned for each saved array (see pack_saved), in
    # place of ``saved`` until a backward pass unpacks them; None without hooks
    packed = None
    # grad_fn.register_prehook / register_hook: {"pre": {id: hook}, "post": {id: hook}}
    node_hooks = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is not None:
            cls._on_tensors = isinstance(forward, staticmethod)

    def __init__(self):
        self.saved = ()
        self.inputs = ()

    def name(self):
        """``MulBackward`` for Mul, as PyTorch names a ``grad_fn``."""
        return f"{type(self).__name__}Backward"

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"

    def save_for_backward(self, *arrays):
        """Keep what backward needs: arrays in minidl's own ops; Tensors (or None) in a
        PyTorch-style function, given back by ``saved_tensors``."""
        if self._on_tensors:
            for i, a in enumerate(arrays):
                if a is not None and not isinstance(a, Tensor):
                    raise TypeError("save_for_backward can only save Tensors (or None), but "
                                    f"argument {i} is of type {type(a).__name__}")
            self._saved_tensors = arrays
            arrays = tuple(a.data for a in arrays if a is not None)
        self.saved = arrays

    def save_for_forward(self, *tensors):
        """In a PyTorch-style forward: keep Tensors (or None) for the function's ``jvp``,
        where ``ctx.saved_tensors`` gives them back, as torch's."""
        for i, a in enumerate(tensors):
            if a is not None and not isinstance(a, Tensor):
                raise TypeError("save_for_forward expects all arguments to be tensors; but "
                                f"argument {i} is of type {type(a).__name__}")
        self._saved_for_forward = tensors

    # PyTorch 2's style of custom function: ``forward(*args)`` without ctx, and
    # ``@staticmethod setup_context(ctx, inputs, output)`` to save what backward needs
    setup_context = None

    def set_materialize_grads(self, value):
        """In a PyTorch-style forward: ``False`` passes None to backward for an output that
        got no gradient, instead of zeros."""
        self._materialize_grads = bool(value)

    def mark_non_differentiable(self, *tensors):
        """In a PyTorch-style forward: these outputs take no gradient (indices, masks)."""
        self._non_differentiable = tensors

    @property
    def saved_tensors(self):
        if self.freed or not hasattr(self, "_saved_tensors"):
            raise RuntimeError("saved_tensors: nothing saved, or already freed by a backward pass "
                               "(pass retain_graph=True to backward more than once)")
        if self._saved_tensors is None:  # packed by saved-tensor hooks: unpacked at each access
            return tuple(unpack_entry(self, e) for e in self._saved_packed)
        return self._saved_tensors

    @property
    def next_functions(self):
        """``((node, 0), ...)`` per input, as torch's: the input's grad_fn, an AccumulateGrad
        for a leaf that requires grad, None for one that does not. A node that a backward
        pass freed still shows its edges, as torch's."""
        if self.freed and not self.inputs and self.edges:
            relink(self)
        return tuple((next_node(t), 0) for t in self.inputs)

    def register_prehook(self, hook):
        """Call ``hook(grad_outputs)`` before this node's backward (a tuple of one gradient);
        a tuple it returns replaces them. Returns a handle whose ``remove()`` takes it off."""
        return _node_hook(self, "pre", hook)

    def register_hook(self, hook):
        """Call ``hook(grad_inputs, grad_outputs)`` after this node's backward (one gradient
        per input, None where none is computed); a tuple it returns replaces grad_inputs.
        Returns a handle whose ``remove()`` takes it off."""
        return _node_hook(self, "post", hook)

    @property
    def metadata(self):
        """A dict kept with this node, as torch's ``Node.metadata``."""
        if "_metadata" not in vars(self):
            self._metadata = {}
        return self._metadata

    def free(self):
        """Drop what only backward needs (as PyTorch frees a graph's saved tensors): the saved
        arrays, any other array the op kept (masks, indices), and the links to its inputs, so
        the activations can go even while the output tensor is still held."""
        drop = None
        for name, value in vars(self).items():
            if name in _NOT_SCANNED or type(value) in _PLAIN_TYPES:
                continue
            if _holds_array(value):
                if drop is None:
                    drop = []
                drop.append(name)
        if drop is not None:
            for name in drop:
                setattr(self, name, None)
        lost = drop is not None or bool(self.saved) or self.lost_on_free
        if self.packed is not None:
            self.packed, lost = None, True
        if self.inputs:
            # What the freed op keeps of each input, as torch's graph keeps its edges once the
            # saved values are gone: a leaf that requires grad itself (its gradient accumulates
            # there); a tensor that does not, nothing; an op's result, a weak reference with
            # its node, shape and dtype, so that its array can go while the graph stays
            # walkable (relink). Written out here: it runs for every node of every backward.
            edges = []
            for t in self.inputs:
                ctx = t._ctx
                if ctx is None:
                    edges.append(t if t.requires_grad else None)
                else:
                    d = t.data
                    edges.append(t if type(d) is not _np.ndarray and isinstance(d, SparseArray)
                                 else (_weakref.ref(t), ctx, d.shape, d.dtype, type(d)))
            self.edges = tuple(edges)
        self.saved, self.inputs, self.freed, self.lost = (), (), True, lost

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def graph_backward(self, g, out):
        """``backward`` for a pass with ``create_graph=True``: the input gradients as Tensors
        made by recorded ops (graph mode is on) from ``g``, the output's gradient (a Tensor),
        the op's input Tensors (``self.inputs``) and its output Tensor ``out``, so that they
        can be differentiated again. An op that does not define it gives its first-order
        gradients, which refuse a second differentiation (``first_order_only``)."""
        return first_order_only(self, g)

    @classmethod
    def apply(cls, *inputs, **kwargs):
        if cls._on_tensors:
            return _apply_on_tensors(cls, inputs, kwargs)
        T = Tensor
        for x in inputs:
            if not isinstance(x, T):
                tensors = [x if isinstance(x, T) else T(x) for x in inputs]
                break
        else:
            tensors = list(inputs)
        n = len(tensors)
        if n > 1:
            # arrays of one type are on one device: the device names are compared only when
            # the types differ (a numpy scalar beside an array, or arrays of two devices)
            kind = type(tensors[0].data)
            for t in tensors:
                if type(t.data) is not kind:
                    _check_devices(cls.__name__, tensors)
                    break
        if _autocast_hook is not None:
            result = _autocast_hook(cls, tensors, kwargs)
            if result is not None:
                return result
        fn = cls()
        try:
            if _profiler_hook is not None:
                out = _profiler_hook.forward(fn, tensors, kwargs)
            elif n == 1:
                out = fn.forward(tensors[0].data, **kwargs)
            elif n == 2:
                out = fn.forward(tensors[0].data, tensors[1].data, **kwargs)
            else:
                out = fn.forward(*[t.data for t in tensors], **kwargs)
        except MemoryError as exc:  # CuPy's out-of-memory error as torch's OutOfMemoryError
            oom = translated_oom(exc)
            if oom is None:
                raise
            raise oom from exc
        except SparseLayoutError as exc:  # a sparse input the op's dense forward cannot take
            return _on_sparse(cls, tensors, kwargs, exc)
        if type(out) is not _np.ndarray and isinstance(out, _np.generic):
            out = _np.array(out)  # NumPy reductions give scalars, which in-place ops cannot write
        needs_grad = False
        if _grad_enabled:
            for t in tensors:
                if t.requires_grad:
                    dtype = out.dtype
                    needs_grad = dtype.kind == "f" or is_floating(dtype)
                    if t.data.dtype.kind == "c" or not needs_grad and dtype.kind == "c":
                        needs_grad = (needs_grad or dtype.kind == "c") and complex_grad(
                            cls, t.data.dtype, dtype)
                    break
        result = T.__new__(T)
        result.data = out
        result.grad = None
        result._retain_grad = False
        result.requires_grad = needs_grad
        result._ctx = None
        if _forward_ad_level and not _grad_enabled:
            _mark_no_grad_result(result, tensors)
        if needs_grad:
            fn.inputs = tensors
            result._ctx = fn
            for t in tensors:
                t._used += 1  # an in-place change of t would now reroute a gradient (a count:
                # in-place ops on views tell the view ops' uses from the others)
            if changes:
                fn.stamp = changes
            if _anomaly:
                fn.forward_trace = _forward_trace()
            if _saved_hooks and fn.saved:
                pack_saved(fn, result)
        return result



class Alias(Function):
    """The identity as a recorded op whose result reads the same memory (not marked a view: a
    whole tensor of its own for in-place ops); its gradient is the incoming one, read from
    nothing else (forward AD's dual tensors; the node of a base whose array an in-place op
    wrote into, so that the op's own node keeps its output array unchanged)."""

    complex_grad = True

    def forward(self, a):
        return a.view()

    def backward(self, g):
        return g

    def graph_backward(self, g, out):
        return g


# The ops that have a sparse form (minidl.sparse registers them): Function class -> a
# function of the same tensors and keywords. An op without one refuses a sparse input.
sparse_forms = {}


def _on_sparse(cls, tensors, kwargs, exc):
    form = sparse_forms.get(cls)
    if form is None:
        op = cls.__name__
        raise NotImplementedError(
            f"{op}: not supported for {layout_words(exc.layout)}; "
            f"convert with .to_dense() first ({exc.what})") from None
    return form(*tensors, **kwargs)


class ComplexGradError(RuntimeError):
    """An op whose gradient minidl does not (yet) compute for complex tensors was recorded in
    a graph with a complex input or output."""


def complex_grad(cls, in_dtype, out_dtype):
    """Whether ``cls`` records a gradient through complex tensors: its ``complex_grad`` flag
    (set on the ops whose backward follows PyTorch's conjugate-Wirtinger convention); an op
    without it raises rather than returning a gradient that ignores the conjugate."""
    if cls.complex_grad:
        return True
    raise ComplexGradError(
        f"{cls.__name__}: the gradient of this op is not implemented for complex tensors (input "
        f"{in_dtype}, output {out_dtype}); compute it on .real and .imag (or "
        "minidl.view_as_real) instead")


class _FirstOrderOnly(Function):
    """The node behind a gradient that an op computed outside the graph in a pass with
    create_graph=True (it defines no graph_backward): differentiating through it again
    raises, rather than treating the gradient as a constant, which would be silently wrong."""

    def backward(self, g):
        raise NotImplementedError(
            f"double backward through {self.op}: minidl computes {self.op}'s gradient outside "
            "the graph, so that gradient cannot be differentiated again (create_graph=True "
            "gave it, but a second backward reached it). docs/autograd.md lists the ops whose "
            "gradients are differentiable")

    def graph_backward(self, g, out):
        return self.backward(None)

    def name(self):
        """The name of the op whose gradient this is (``MulBackward``)."""
        return self.op


class _OnceDifferentiable(_FirstOrderOnly):
    """The node behind a gradient that a custom function's ``@once_differentiable`` backward
    gave in a pass with create_graph=True: a second backward raises with PyTorch's words (its
    DelayedError's RuntimeError; NotImplementedError is one), naming the function."""

    def backward(self, g):
        raise NotImplementedError(
            f"trying to differentiate twice a function that was marked with "
            f"@once_differentiable ({self.op})")


def first_order_only(fn, g):
    """``fn``'s input gradients from its array ``backward``, as Tensors that depend on ``g``
    and on fn's inputs but refuse to be differentiated (see _FirstOrderOnly)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        grads = fn.backward(g.data)
    finally:
        _grad_enabled = previous
    if not isinstance(grads, tuple):
        grads = (grads,)
    deps = [t for t in (g, *fn.inputs) if t.requires_grad]
    return tuple(None if a is None else refusing_second_order(a, deps, fn.name())
                 for a in grads)


def refusing_second_order(value, deps, op, node_type=None):
    """``value`` (an array or a Tensor, computed outside the graph) as a Tensor that depends on
    ``deps`` but refuses to be differentiated, naming ``op``; a plain Tensor where nothing in
    ``deps`` requires grad or graph mode is off. ``node_type`` (a _FirstOrderOnly by default)
    says how the refusal reads."""
    data = value.data if isinstance(value, Tensor) else value
    t = Tensor(data, dtype=data.dtype)
    deps = [d for d in deps if d.requires_grad]
    if deps and _grad_enabled and is_differentiable(t.data.dtype):
        node = (node_type or _FirstOrderOnly)()
        node.op, node.inputs = op, deps
        t.requires_grad, t._ctx = True, node
    return t


class _TensorStyle(Function):
    """The graph node of a PyTorch-style custom function: it holds the user's ``ctx`` and
    calls the user's ``backward(ctx, *grads)`` with Tensors."""

    def name(self):
        """``MyFunctionBackward`` for a custom ``MyFunction``, as PyTorch names it."""
        return f"{type(self.ctx).__name__}Backward"

    def backward(self, g):
        return tuple(None if r is None else (r.data if isinstance(r, Tensor) else r)
                     for r in self.graph_backward(Tensor(g, dtype=g.dtype), None))

    def graph_backward(self, g, out):
        """The user's backward on Tensors: in a pass with create_graph=True it runs in graph
        mode, so its gradients are differentiable where its ops are, as in PyTorch."""
        ctx, shapes = self.ctx, self.shapes
        if type(ctx).backward is Function.backward and getattr(type(ctx), "jvp", None):
            # a function with only a forward-mode formula (the forward AD tutorial's): its
            # gradient is the transpose of its jvp, which forward AD's double-vjp reads
            return _JvpTransposed.apply(g, self)
        if len(shapes) == 1:
            grads = [g]
        else:
            grads, start = [], 0
            for shape in shapes:
                size = int(_np.prod(shape))
                grads.append(g[start:start + size].reshape(shape))
                start += size
        # one gradient per output, as PyTorch: zeros for those that take none (indices), or
        # None after ctx.set_materialize_grads(False)
        full, parts = [], iter(grads)
        materialize = getattr(ctx, "_materialize_grads", True)
        for shape, dtype, graded in self.outputs:
            full.append(next(parts) if graded else
                        Tensor(get_array_module(g.data).zeros(shape, dtype)) if materialize
                        else None)
        ctx._graph_inputs = self.inputs  # for once_differentiable
        held = getattr(ctx, "_saved_tensors", None)  # None: packed by saved-tensor hooks
        saved = ctx.saved_tensors if out is not None and self.saved_outputs else None
        if saved is not None:
            # a create_graph pass: a saved output is the recorded one (rebuilt from ``out``,
            # this node's packed output, as _apply_on_tensors split it), so that what backward
            # computes from it is differentiable, as in PyTorch; put back afterwards, so that
            # ctx does not hold its own graph
            swapped = list(saved)
            for j, k in self.saved_outputs:
                swapped[j] = out if len(shapes) == 1 else self._output(out, k)
            ctx._saved_tensors = tuple(swapped)
        try:
            result = type(ctx).backward(ctx, *full)
        finally:
            if saved is not None:
                ctx._saved_tensors = held
        result = result if isinstance(result, tuple) else (result,)
        if len(result) > ctx._n_args and all(r is None for r in result[ctx._n_args:]):
            result = result[:ctx._n_args]  # Nones for forward's defaulted arguments, as torch
        if len(result) != ctx._n_args:
            raise RuntimeError(f"{type(ctx).__name__}.backward returned {len(result)} gradients, "
                               f"expected {ctx._n_args} (one per argument of forward, None for "
                               "those that take none)")
        grads = tuple(result[i] for i in ctx._tensor_args)
        for i, (r, t) in enumerate(zip(grads, self.inputs)):
            # a gradient may be broadcast (summed down to the input), not smaller, as PyTorch's
            shape = getattr(r, "shape", None)
            if shape is not None and tuple(shape) != tuple(t.shape) and not _broadcasts_to(
                    tuple(t.shape), tuple(shape)):
                raise RuntimeError(f"function {self.name()} returned an invalid gradient at "
                                   f"index {ctx._tensor_args[i]} - got shape {tuple(shape)} "
                                   f"but expected shape compatible with {tuple(t.shape)}")
        return grads


    saved_outputs = ()  # (place in ctx.saved_tensors, graded output) of outputs saved

    def _output(self, packed, k):
        """Graded output ``k`` as _apply_on_tensors split it from the packed output."""
        start = sum(int(_np.prod(shape)) for shape in self.shapes[:k])
        shape = self.shapes[k]
        return packed[start:start + int(_np.prod(shape))].reshape(shape)

    def free(self):
        held = self.ctx.__dict__
        saved = bool(held.get("_saved_tensors")) or held.get("_saved_packed") is not None
        self.ctx.freed = saved  # (a function that saved nothing goes through a second backward)
        if saved:
            self.lost_on_free = True
        self.ctx._saved_tensors = ()
        if getattr(self.ctx, "_saved_packed", None) is not None:
            self.ctx._saved_packed = None
        super().free()


class _JvpTransposed(Function):
    """The input gradients of a custom function that defines ``jvp`` and no ``backward``, as a
    recorded op of the output cotangent ``g`` (packed as _TensorStyle packs it): ``J^T g``
    itself needs the missing backward, so only a zero ``g`` is taken (the double-vjp
    construction of forward AD and func.jvp differentiates at zero) and any other refuses as
    torch does; the op's own gradient, ``J t`` for input tangents ``t``, is the user's
    ``jvp``. So forward AD through such a function gives its jvp's tangent."""

    @staticmethod
    def forward(ctx, g, node):
        if get_array_module(g.data).any(g.data):
            raise NotImplementedError(
                "You must implement either the backward or vjp method for your custom "
                f"autograd.Function to use it with backward mode AD ({type(node.ctx).__name__} "
                "defines only jvp, which forward AD uses)")
        ctx.node = node
        return tuple(Tensor(get_array_module(t.data).zeros(t.shape, t.data.dtype))
                     for t in node.inputs)

    @staticmethod
    def backward(ctx, *tangents):
        node = ctx.node
        user = node.ctx
        given = [None] * user._n_args
        for t, i, x in zip(tangents, user._tensor_args, node.inputs):
            given[i] = t if t is not None else Tensor(
                get_array_module(x.data).zeros(x.shape, x.data.dtype))
        forward_saved = user.__dict__.get("_saved_for_forward")
        if forward_saved is not None:  # in jvp, saved_tensors are those of save_for_forward
            held = user.__dict__.get("_saved_tensors", ())
            user._saved_tensors = forward_saved
        try:
            out = type(user).jvp(user, *given)
        finally:
            if forward_saved is not None:
                user._saved_tensors = held
        outs = out if isinstance(out, tuple) else (out,)
        pieces = [o for (shape, dtype, graded), o in zip(node.outputs, outs) if graded]
        if len(pieces) == 1:
            return pieces[0].reshape(node.shapes[0]), None
        return concat([p.reshape(-1) for p in pieces]), None


concat = None  # ops.cat (one dimension), set by minidl's __init__: autograd imports nothing above


def _broadcasts_to(shape, target):
    try:
        return _np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


class NoEvent:
    """What a hook's ``begin`` gives where no profiler beneath it records ranges
    (``record_function`` may set its ``args``)."""
    args = None


class ChainedHook:
    """The protocol of the ``_profiler_hook`` slot (minidl.profiler._recorder documents it),
    each method passing through to the hook installed before this one (``_prev``) or, with
    none, doing the work itself. FlopCounterMode and the ONNX exporter's tracer sit in the
    slot in front of whatever was there; they override what they watch and call these for the
    rest."""

    _prev = None

    def forward(self, fn, tensors, kwargs):
        if self._prev is not None:
            return self._prev.forward(fn, tensors, kwargs)
        return fn.forward(*[t.data for t in tensors], **kwargs)

    def backward(self, ctx, grad):
        if self._prev is not None:
            return self._prev.backward(ctx, grad)
        return ctx.backward(grad)

    def custom_forward(self, cls, ctx, args, kwargs):
        if self._prev is not None:
            return self._prev.custom_forward(cls, ctx, args, kwargs)
        return run_custom_forward(cls, ctx, args, kwargs)

    def module_call(self, module, call, args, kwargs):
        if self._prev is not None:
            return self._prev.module_call(module, call, args, kwargs)
        return call(*args, **kwargs)

    def run(self, name, fn, /, *args, **kwargs):
        if self._prev is not None:
            return self._prev.run(name, fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def begin(self, name, *args, **kwargs):
        return self._prev.begin(name, *args, **kwargs) if self._prev is not None else NoEvent()

    def end(self, ev, outputs=None):
        if self._prev is not None and not isinstance(ev, NoEvent):
            self._prev.end(ev, outputs)


def run_custom_forward(cls, ctx, args, kwargs):
    """A PyTorch-style custom function's forward: ``forward(ctx, *args)``, or, where the class
    defines ``setup_context`` (PyTorch 2's style), ``forward(*args)`` and then
    ``setup_context(ctx, args, output)``."""
    if cls.setup_context is None:
        return cls.forward(ctx, *args, **kwargs)
    out = cls.forward(*args, **kwargs)
    cls.setup_context(ctx, args, out)
    return out


def _apply_on_tensors(cls, args, kwargs):
    """``MyFunction.apply(*args)`` for a PyTorch-style custom function: ``forward(ctx, ...)``
    runs on the Tensors (and other arguments) as given, without recording a graph; its result
    (a Tensor, or a tuple of them) is recorded as one op whose gradient is the user's
    ``backward``. ``ctx.save_for_backward``, ``ctx.saved_tensors`` and
    ``ctx.needs_input_grad`` work as in PyTorch."""
    ctx = cls()
    ctx._n_args = len(args)
    ctx._tensor_args = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        if _profiler_hook is not None:
            out = _profiler_hook.custom_forward(cls, ctx, args, kwargs)
        else:
            out = run_custom_forward(cls, ctx, args, kwargs)
    finally:
        _grad_enabled = previous
    outs = out if isinstance(out, tuple) else (out,)
    if not outs or not all(isinstance(o, Tensor) for o in outs):
        raise TypeError(f"{cls.__name__}.forward must return a Tensor or a tuple of Tensors")
    wanted = _grad_enabled and any(ctx.needs_input_grad)
    fixed = getattr(ctx, "_non_differentiable", ())
    graded = [i for i, o in enumerate(outs)
              if wanted and is_differentiable(o.dtype) and not any(o is t for t in fixed)]
    if not graded:
        return out
    if len({outs[i].dtype for i in graded}) > 1:
        raise TypeError(f"{cls.__name__}: the floating-point outputs of a custom function must "
                        "share one dtype")
    node = _TensorStyle()
    node.ctx, node.shapes = ctx, [outs[i].shape for i in graded]
    node.outputs = [(o.shape, o.dtype, i in graded) for i, o in enumerate(outs)]
    node.saved = ctx.saved  # the arrays of ctx.save_for_backward, for the version check
    node.inputs = [args[i] for i in ctx._tensor_args]
    for t in node.inputs:
        t._used += 1
    node.stamp = changes
    if _anomaly:
        node.forward_trace = _forward_trace()
    data = [outs[i].data for i in graded]
    if len(data) > 1:
        joined = get_array_module(*data).concatenate([d.ravel() for d in data])
    else:
        joined = data[0]
    packed = Tensor.__new__(Tensor)
    packed.data, packed.grad, packed._retain_grad = joined, None, False
    packed.requires_grad, packed._ctx = True, node
    if len(data) == 1:
        results = [packed]
    else:
        results, start = [], 0
        for shape in node.shapes:
            size = int(_np.prod(shape))
            results.append(packed[start:start + size].reshape(shape))
            start += size
    final = list(outs)
    for i, r in zip(graded, results):
        final[i] = r
    saved = getattr(ctx, "_saved_tensors", None)
    if saved:  # saved outputs: (place in saved_tensors, which graded output), see graph_backward
        where = {id(outs[i]): k for k, i in enumerate(graded)}
        node.saved_outputs = [(j, where[id(t)]) for j, t in enumerate(saved) if id(t) in where]
        if _saved_hooks:  # ctx.saved_tensors unpacks them at each access, as torch's
            ctx._saved_packed = [pack_entry(t, node) for t in saved]
            ctx._saved_tensors, node.saved = None, ()
    return tuple(final) if isinstance(out, tuple) else final[0]


def once_differentiable(backward):
    """Decorate a PyTorch-style custom function's ``backward`` whose ops are not meant to be
    differentiated (it may compute on arrays): it runs without recording, and in a pass with
    create_graph=True its gradients refuse a second differentiation, naming the function,
    as PyTorch's ``torch.autograd.function.once_differentiable`` does."""
    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        recording = _grad_enabled
        with no_grad():
            result = backward(ctx, *grads)
        if not recording:
            return result
        deps = [g for g in grads if isinstance(g, Tensor)] + list(getattr(ctx, "_graph_inputs", ()))
        name = f"{type(ctx).__name__}Backward"
        single = not isinstance(result, tuple)
        out = tuple(None if r is None else refusing_second_order(r, deps, name, _OnceDifferentiable)
                    for r in ((result,) if single else result))
        return out[0] if single else out
    return wrapper


def relink(fn):
    """The inputs of the freed op ``fn`` again, for a later backward pass through it: each
    input that is still alive and still the result of the same node, else a stand-in of its
    shape and dtype (no array: a broadcast zero) that stands for that node, one per node.
    Returns whether the op lost what it saved (a backward through it then refuses)."""
    inputs = []
    for e in fn.edges or ():
        if e is None:
            inputs.append(_NO_GRAD_INPUT)
        elif type(e) is not tuple:
            inputs.append(e)
        else:
            ref, node, shape, dtype, kind = e
            t = ref()
            if t is None or t._ctx is not node:
                held = node.__dict__.get("_ghost")
                t = None if held is None else held()
                if t is None:
                    xp = _np if kind is _np.ndarray else cupy_module()
                    t = Tensor.__new__(Tensor)
                    t.data = xp.broadcast_to(xp.zeros((), dtype), shape)
                    t.grad, t._retain_grad, t.requires_grad, t._ctx = None, False, True, node
                    node._ghost = _weakref.ref(t)
            inputs.append(t)
    fn.inputs, fn.freed = tuple(inputs), fn.lost
    return fn.lost


_NO_GRAD_INPUT = None  # a 0-d Tensor that does not require grad, made once Tensor is known


def root_array(a):
    """The array that owns the memory ``a`` views (``a`` itself if it owns it)."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


class ViewList(list):
    """Weak references to the views made of a tensor (see share_version); a copy or a pickle
    of the tensor starts with none, as its array is a new one."""

    def __reduce__(self):
        return (ViewList, ())

    def __deepcopy__(self, memo):
        return ViewList()


def share_version(out, src):
    """``out`` views ``src``'s memory (a slice, a reshape, detach(), a complex tensor's real
    part): one version count for both, as in PyTorch, so an in-place change through either is
    seen by backward."""
    if out.data is src.data or root_array(out.data) is root_array(src.data):
        vc = src._vc
        if vc is None:
            vc = src._vc = [0, 0, True]
        elif len(vc) == 2:
            vc.append(True)  # other tensors view this array: in-place ops write into it
        out._vc = vc
        out._is_view = True
        if out._ctx is not None and any(t is src for t in out._ctx.inputs):
            src._view_uses = src.__dict__.get("_view_uses", 0) + 1  # see _inplace_on_view
        if _grad_enabled:  # its base (the tensor that owns no view), for in-place ops on it
            base = src.__dict__.get("_view_base", src)
            if out.data.dtype == base.data.dtype and base is not out:
                out._view_base = base
                _track_view(base, out)
        elif src.requires_grad or src.__dict__.get("_view_no_grad"):
            out._view_no_grad = True  # PyTorch refuses its in-place change in grad mode,
            base = src.__dict__.get("_view_base", src)  # and its use after one of its base's
            if base._ctx is not None and base is not out:  # (a leaf's is refused anyway)
                _track_view(base, out)
    return out


def _track_view(base, view):
    """Keep a weak reference to ``view`` in ``base._views`` (for in-place ops on either)."""
    views = base.__dict__.get("_views")
    if views is None:
        views = base._views = ViewList()
    if len(views) % 64 == 63:  # the dead ones dropped now and then
        views[:] = [r for r in views if r() is not None]
    views.append(_weakref.ref(view))


def check_versions(node, ctx, graph=False):
    """Refuse, as PyTorch does, a backward through an op whose saved array (one of its inputs,
    or its output, or a view of either) was changed in place after its forward pass: its
    gradient would be wrong. Called only when some change happened after that forward.
    ``graph``: a create_graph pass through an op whose graph_backward reads input or output
    Tensors that its backward did not save (``Function.graph_reads_all``): any of them
    changed is refused."""
    saved = ctx.saved
    if not saved:
        return
    stamp = ctx.stamp
    changed = [(t, f"input {i}") for i, t in enumerate(ctx.inputs)
               if t._vc is not None and t._vc[1] > stamp]
    if node._vc is not None and node._vc[1] > stamp:
        changed.append((node, "output"))
    for t, which in changed:
        root = root_array(t.data)
        if graph or any(s is t.data or root_array(s) is root for s in saved):
            raise RuntimeError(
                f"backward(): {type(ctx).__name__}'s {which} (shape {t.shape}), which it saved "
                "for its gradient, was changed by an in-place operation after the forward "
                "pass; change a copy (.clone()) instead, or do the in-place change before it")


# ---- saved-tensor hooks (autograd.graph.saved_tensors_hooks) -------------------------------------
def pack_entry(t, fn):
    """One saved value through the innermost pack hook: (packed, unpack, shape, dtype, device),
    or (value,) for what is not a Tensor (None, a number), kept as it is."""
    if not isinstance(t, Tensor):
        return (t,)
    if _saved_hooks_disabled is not None:
        raise RuntimeError(_saved_hooks_disabled)
    global _saved_hooks
    hooks = _saved_hooks
    pack, unpack = hooks[-1]
    _saved_hooks = []  # what the pack hook computes is not packed again (t * 2 saves t), as torch's
    try:
        packed = pack(t)
    finally:
        _saved_hooks = hooks
    return (packed, unpack, tuple(t.shape), t.data.dtype, t.device)


def unpack_entry(fn, entry):
    """The Tensor ``entry``'s unpack hook gives back, checked against what was saved."""
    if len(entry) == 1:
        return entry[0]
    packed, unpack, shape, dtype, device = entry
    t = unpack(packed)
    if not isinstance(t, Tensor):
        raise TypeError("Output of saved tensor unpack_hook expected to be a Tensor but got "
                        f"result of type {type(t).__name__}")
    what = f"saved tensor unpack_hook: {fn.name()} saved a tensor of"
    if tuple(t.shape) != shape:
        raise RuntimeError(f"{what} shape {shape}, but unpack_hook returned one of shape "
                           f"{tuple(t.shape)}")
    if t.data.dtype != dtype:
        raise RuntimeError(f"{what} dtype {dtype}, but unpack_hook returned one of dtype "
                           f"{t.data.dtype}")
    if t.device != device:
        raise RuntimeError(f"{what} device {device}, but unpack_hook returned one on "
                           f"{t.device}")
    return t


def pack_saved(fn, out):
    """Send the arrays ``fn`` saved for backward through the innermost pack hook, as Tensors
    (an input or ``out`` itself where the array is its data, a new Tensor on the array
    otherwise), and keep what the hook returns in place of the arrays (``fn.packed``) until
    a backward pass unpacks them (unpack_saved)."""
    entries = []
    for a in fn.saved:
        if not (hasattr(a, "shape") and hasattr(a, "dtype")) or isinstance(a, _np.generic):
            entries.append((a,))
            continue
        t = out if a is out.data else None
        if t is None:
            for x in fn.inputs:
                if x.data is a:
                    t = x
                    break
            else:
                t = Tensor(a, dtype=a.dtype)
        entries.append(pack_entry(t, fn))
    fn.packed, fn.saved = entries, ()


def unpack_saved(fn):
    """``fn.saved`` again, from its unpack hooks (before its backward runs)."""
    fn.saved = tuple(e[0] if len(e) == 1 else unpack_entry(fn, e).data for e in fn.packed)


# ---- graph nodes as torch's autograd.graph.Node --------------------------------------------------
class AccumulateGrad:
    """The node a leaf that requires grad is reached through (``grad_fn.next_functions``):
    ``variable`` is the leaf, as torch's."""

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "torch::autograd::AccumulateGrad"

    @property
    def next_functions(self):
        return ()

    def __repr__(self):
        return f"<AccumulateGrad object at {hex(id(self))}>"


def next_node(t):
    """The graph node a gradient reaches ``t`` through: its grad_fn, an AccumulateGrad for a
    leaf that requires grad (one per leaf, kept on it), None otherwise."""
    if t._ctx is not None:
        return t._ctx
    if not t.requires_grad:
        return None
    acc = vars(t).get("_accumulate_node")
    if acc is None:
        acc = t._accumulate_node = AccumulateGrad(t)
    return acc


def _node_hook(fn, kind, hook):
    if not callable(hook):
        raise TypeError(f"register_{'pre' if kind == 'pre' else ''}hook: hook must be callable, "
                        f"got {type(hook).__name__}")
    if fn.node_hooks is None:
        fn.node_hooks = {"pre": {}, "post": {}}
    return HookHandle(fn.node_hooks[kind], hook)


class HookHandle:
    """What ``register_hook`` (of a Tensor or of a grad_fn) returns: ``remove()`` takes the
    hook off (twice is harmless); also a context manager that removes it on leaving."""
    _next_id = 0

    def __init__(self, hooks, hook):
        HookHandle._next_id += 1
        self.id, self._hooks = HookHandle._next_id, hooks
        hooks[self.id] = hook

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _returned(hook, result, n):
    result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(result) != n:
        raise RuntimeError(f"hook '{getattr(hook, '__name__', hook)}' has returned an incorrect "
                           f"number of values (got {len(result)}, but expected {n})")
    return result


def run_prehooks(fn, g):
    """``fn``'s prehooks on the gradient of its output (an array, or a Tensor with
    create_graph); each sees what the one before returned."""
    for hook in list(fn.node_hooks["pre"].values()):
        as_tensor = g if isinstance(g, Tensor) else Tensor(g, dtype=g.dtype)
        out = hook((as_tensor,))
        if out is not None:
            (new,) = _returned(hook, out, 1)
            if new is not None:
                g = _like_gradient(new, g, fn, "output", isinstance(g, Tensor))
    return g


def run_posthooks(fn, in_grads, g):
    """``fn``'s hooks on its input gradients (one per input, None where none) and the output
    gradient; each may return replacements."""
    n, graph = len(fn.inputs), isinstance(g, Tensor)
    grads = list(in_grads[:n]) + [None] * (n - len(in_grads))
    for i, (a, t) in enumerate(zip(grads, fn.inputs)):  # as the inputs' shapes, as torch's
        if a is not None and tuple(a.shape) != tuple(t.shape):
            grads[i] = a.sum_to_size(t.shape) if graph else unbroadcast(a, t.shape)
    grads = tuple(grads)
    wrap = (lambda a: a) if graph else (
        lambda a: None if a is None else Tensor(a, dtype=a.dtype))
    g_out = (wrap(g),)
    for hook in list(fn.node_hooks["post"].values()):
        out = hook(tuple(wrap(a) for a in grads), g_out)
        if out is None:
            continue
        out = _returned(hook, out, n)
        grads = tuple(None if new is None else _like_gradient(new, old, fn, f"input {i}", graph)
                      for i, (new, old) in enumerate(zip(out, grads)))
    return grads


def _like_gradient(new, old, fn, which, graph):
    """A hook's gradient as the engine holds it: a Tensor with create_graph, else an array."""
    if not isinstance(new, Tensor):
        raise TypeError(f"a hook of {fn.name()} returned {type(new).__name__} for the gradient "
                        f"of its {which}; expected a Tensor or None")
    if old is not None and tuple(new.shape) != tuple(old.shape):
        raise RuntimeError(f"a hook of {fn.name()} returned a gradient of shape "
                           f"{tuple(new.shape)} for its {which}, expected {tuple(old.shape)}")
    return new if graph else new.data


class _VariableMeta(type):
    def __instancecheck__(cls, obj):  # as torch's: every Tensor is a Variable
        return isinstance(obj, Tensor)


class Variable(metaclass=_VariableMeta):
    """torch's deprecated ``Variable``: ``Variable(t, requires_grad=False)`` is a new Tensor
    on ``t``'s data, outside its graph (``t.detach()``, requiring grad as asked); every Tensor
    is an instance. ``volatile`` has no effect (use ``no_grad()``), with torch's warning."""

    def __new__(cls, data=None, requires_grad=False, volatile=False):
        if volatile:
            import warnings

            warnings.warn("volatile was removed and now has no effect. Use `with "
                          "minidl.no_grad():` instead.", UserWarning, stacklevel=2)
        if data is None:
            data = Tensor(_np.zeros(0, dtype=_np.float32))
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        out = data.detach()
        if requires_grad:
            out.requires_grad_(True)
        return out


def __getattr__(name):
    """``minidl.autograd.function`` without an import of its own, as torch's. (``functional``,
    ``gradcheck`` and ``gradgradcheck``, which sit above ops, are set here by minidl's
    __init__, so that this layer imports nothing above it.)"""
    if name in ("function", "graph", "forward_ad"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
