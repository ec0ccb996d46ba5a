"""Module: parameters and sub-modules registered by attribute assignment, as in PyTorch."""
from __future__ import annotations

import functools
import inspect
import itertools
import warnings
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ..backend import get_array_module, normalize_device, to_device
from ..backend.dtypes import as_dtype, is_differentiable, is_floating
from .. import autograd as _autograd
from ..autograd import Function
from ..tensor import Tensor, _is_dtype_like, bump_version, is_grad_enabled


_compile_warned = False  # Module.compile's one warning per process

class _BackwardHooks:
    """One call of a module with full backward hooks. The tensors it was given and the tensors
    it returned each pass through one _Pack op, whose backward sees all their gradients at once:
    the outputs' run the pre-hooks (``hook(module, grad_output)``), the inputs' the hooks
    (``hook(module, grad_input, grad_output)``); where no input takes a gradient, the hooks run
    with the outputs' gradients, as in PyTorch."""

    def __init__(self, module, args):
        self.module, self.n_inputs = module, len(args)  # grad_input: one per positional arg
        self.input_slots = [i for i, a in enumerate(args)
                            if isinstance(a, Tensor) and a.requires_grad]
        # the outputs' gradients of this pass, until the hooks have run with them (None: the
        # inputs' gradients did not come through the outputs, see inputs_done)
        self.grad_output = None

    def outputs_done(self, grads):
        graph = _in_graph(grads)
        for hook in [*_global_backward_pre_hooks.values(),
                     *(self.module.__dict__.get("_backward_pre_hooks") or {}).values()]:
            result = hook(self.module, tuple(_wrap(g) for g in grads))
            if result is not None:
                grads = [_unwrap(g, graph)
                         for g in _as_tuple(result, len(grads), "backward pre-hook")]
        self.grad_output = tuple(grads)
        if not self.input_slots:
            self.run((None,) * self.n_inputs)
        return grads

    def inputs_done(self, grads):
        if self.grad_output is None:
            # a gradient that reached the inputs without passing the outputs (a second backward
            # through the graph of a first one's gradients): no hook runs, as in PyTorch
            return grads
        grad_input = [None] * self.n_inputs
        for slot, g in zip(self.input_slots, grads):
            grad_input[slot] = g
        grad_input = self.run(tuple(grad_input))
        return [grad_input[slot] for slot in self.input_slots]

    def run(self, grad_input):
        graph = _in_graph(grad_input) or _in_graph(self.grad_output)
        grad_output = tuple(_wrap(g) for g in self.grad_output)
        for hook in [*_global_backward_hooks.values(),
                     *(self.module.__dict__.get("_backward_hooks") or {}).values()]:
            result = hook(self.module, tuple(_wrap(g) for g in grad_input), grad_output)
            if result is not None:
                grad_input = tuple(_unwrap(g, graph) for g in _as_tuple(
                    result, len(grad_input), "backward hook"))
        self.grad_output = None
        return grad_input


# In a backward with create_graph=True (double backward) the gradients are Tensors of the
# graph, and what the hooks return must stay so; otherwise they are arrays.
def _in_graph(grads):
    return any(isinstance(g, Tensor) for g in grads)


def _wrap(g):
    return g if g is None or isinstance(g, Tensor) else Tensor(g)


def _unwrap(g, graph=False):
    if graph:
        return g if g is None or isinstance(g, Tensor) else Tensor(g)
    return g.data if isinstance(g, Tensor) else g


def _as_tuple(result, n, what):
    result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(result) != n:
        raise ValueError(f"a {what} returned {len(result)} gradients where {n} were expected")
    return result


class _Pack(Function):
    """Identity on several tensors at once (raveled and joined into one array when there are
    several), so that their gradients reach ``then`` together."""

    def forward(self, *xs, then):
        self.then, self.shapes = then, [x.shape for x in xs]
        if len(xs) == 1:
            return xs[0]
        return get_array_module(*xs).concatenate([x.ravel() for x in xs])

    def backward(self, g):
        parts, start = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape))
            parts.append(g if len(self.shapes) == 1 else g[start:start + size].reshape(shape))
            start += size
        return tuple(self.then(parts))

    def graph_backward(self, g, out):
        # backward's slices and reshapes are recorded ops on a Tensor g, and the hooks'
        # results stay Tensors (_unwrap): the gradients remain differentiable
        return self.backward(g)


def _pack(tensors, then, module):
    """``tensors`` routed through one _Pack op: the same values, as new tensors."""
    if len({t.dtype for t in tensors}) > 1:
        raise TypeError(f"{type(module).__name__}: full backward hooks need the tensors that take "
                        f"gradients to share one dtype, got {sorted({str(t.dtype) for t in tensors})}")
    packed = _Pack.apply(*tensors, then=then)
    if len(tensors) == 1:
        return [packed]
    out, start = [], 0
    for t in tensors:
        out.append(packed[start:start + t.numel()].reshape(t.shape))
        start += t.numel()
    return out


def _hook_inputs(args, state):
    if not state.input_slots:
        return args
    args = list(args)
    routed = _pack([args[i] for i in state.input_slots], state.inputs_done, state.module)
    for i, t in zip(state.input_slots, routed):
        args[i] = t
    return tuple(args)


def _grad_outputs(out):
    """The tensors of a (nested tuple/list) output that take a gradient, in order."""
    if isinstance(out, Tensor):
        return [out] if out.requires_grad else []
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _grad_outputs(item)]
    return []


def _replace(out, new):
    """``out`` with its gradient-taking tensors replaced, in order, from the iterator ``new``."""
    if isinstance(out, Tensor):
        return next(new) if out.requires_grad else out
    if isinstance(out, (tuple, list)):
        items = [_replace(item, new) for item in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    return out


def _hook_outputs(out, state):
    tensors = _grad_outputs(out)
    if not tensors:
        return out
    return _replace(out, iter(_pack(tensors, state.outputs_done, state.module)))


# ---- the deprecated register_backward_hook: a hook on the op that made the output ---------
_MIXED_HOOKS = ("Cannot use both regular backward hooks and full backward hooks on a single "
                "Module. Please use only one of them.")


def _first_tensor(out):
    """The tensor torch's non-full backward hook attaches to: the output, or the first tensor
    of a tuple/list (its first item, recursively) or of a dict's values."""
    while not isinstance(out, Tensor):
        if isinstance(out, dict):
            out = next((v for v in out.values() if isinstance(v, Tensor)), None)
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
        else:
            return None
    return out


def _warn_non_full(module, args, out, fn):
    """torch's FutureWarnings where the hook cannot see what full backward hooks see."""
    import warnings

    tail = ("is deprecated and will be removed in future versions. This hook will be missing "
            "some {}. Please use register_full_backward_hook to get the documented behavior.")
    if not (isinstance(out, Tensor) or (isinstance(out, tuple)
                                        and all(isinstance(o, Tensor) for o in out))):
        message = ("Using non-full backward hooks on a Module that does not return a single "
                   "Tensor or a tuple of Tensors " + tail.format("of the grad_output"))
    elif isinstance(out, tuple) and any(o._ctx is not fn for o in out):
        message = ("Using a non-full backward hook when outputs are generated by different "
                   "autograd Nodes " + tail.format("grad_output"))
    else:
        given = {id(a) for a in args if isinstance(a, Tensor)}
        if not any(isinstance(t, Tensor) and t._ctx is not None and id(t) not in given
                   for t in fn.inputs):
            return  # one op between the module's inputs (and parameters) and its output
        message = ("Using a non-full backward hook when the forward contains multiple "
                   "autograd Nodes " + tail.format("grad_input"))
    warnings.warn(message, FutureWarning, stacklevel=4)


def _attach_non_full_hooks(module, args, out, hooks):
    """Run ``hooks`` (``hook(module, grad_input, grad_output)``) when the op that made the
    output computes its inputs' gradients: grad_input is that op's (one per input of the op,
    None where it takes none), grad_output the output's; a hook's result replaces grad_input."""
    var = _first_tensor(out)
    fn = None if var is None else var._ctx
    if fn is None:
        return  # the output is a leaf or takes no gradient: nothing to hook, as in torch
    _warn_non_full(module, args, out, fn)
    node_backward = fn.backward
    own_graph_backward = type(fn).graph_backward is not Function.graph_backward
    node_graph_backward = fn.graph_backward
    busy = []  # inside the graph-mode backward: its call of backward is not hooked again

    def hooked(grads, g):
        single = not isinstance(grads, tuple)
        grads = (grads,) if single else grads
        graph = _in_graph(grads) or isinstance(g, Tensor)
        grad_input = tuple(None if gi is None or not (isinstance(t, Tensor) and t.requires_grad)
                           else _wrap(gi) for t, gi in zip(fn.inputs, grads))
        grad_output = (_wrap(g),)
        changed = None
        for hook in hooks:
            result = hook(module, changed or grad_input, grad_output)
            if result is not None:
                result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
                if len(result) != len(grad_input):
                    name = getattr(hook, "__name__", repr(hook))
                    raise RuntimeError(f"hook '{name}' has returned an incorrect number of "
                                       f"values (got {len(result)}, but expected "
                                       f"{len(grad_input)})")
                changed = result
        if changed is None:
            return grads[0] if single else grads
        new = tuple(_unwrap(c, graph) for c in changed)
        return new[0] if single else new

    def backward(g):
        grads = node_backward(g)
        return grads if busy else hooked(grads, g)

    fn.backward = backward
    if own_graph_backward:
        def graph_backward(g, out_tensor):
            busy.append(True)
            try:
                grads = node_graph_backward(g, out_tensor)
            finally:
                busy.pop()
            return hooked(grads, g)

        fn.graph_backward = graph_backward


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True by default)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data,
                         requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class _BufferMeta(type):
    # isinstance(t, Buffer) holds for the tensors Buffer(...) returns (plain Tensors marked
    # with _is_buffer), as torch's metaclass makes it
    def __instancecheck__(cls, instance):
        if cls is Buffer and isinstance(instance, Tensor) and getattr(instance, "_is_buffer",
                                                                       False):
            return True
        return super().__instancecheck__(instance)


class Buffer(Tensor, metaclass=_BufferMeta):
    """A tensor that, assigned as a Module attribute, registers itself as a buffer
    (``self.mean = nn.Buffer(t)``, torch 2.5's nn.Buffer); ``persistent=False`` keeps it out
    of ``state_dict()``. It returns a plain Tensor (detached, keeping requires_grad) marked
    as a buffer."""

    def __new__(cls, data=None, *, persistent=True):
        if data is None:
            data = Tensor(np.empty(0, dtype=np.float32))
        if not isinstance(data, Tensor):
            raise TypeError(f"Buffer: data must be a Tensor, got {type(data).__name__}")
        t = data.detach()
        if data.requires_grad:
            t.requires_grad_(True)
        t.persistent = persistent
        t._is_buffer = True
        return t


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as PyTorch's: the model's keys the state dict lacked
    and the state dict's keys the model does not have (both empty when strict)."""

    missing_keys: list
    unexpected_keys: list

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (f"IncompatibleKeys(missing_keys={self.missing_keys}, "
                f"unexpected_keys={self.unexpected_keys})")


class RemovableHandle:
    """Returned by the ``register_*_hook`` methods; ``remove()`` takes the hook out again (also
    as a context manager: ``with module.register_forward_hook(f): ...``)."""

    _ids = itertools.count()

    def __init__(self, hooks, extra=()):
        self._hooks, self.id = hooks, next(RemovableHandle._ids)
        self._extra = extra  # the sets that mark this hook (with_kwargs, always_call)

    def remove(self):
        self._hooks.pop(self.id, None)
        for marks in self._extra:
            marks.discard(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _add_hook(module, store, hook, prepend=False, marks=()):
    """Register ``hook`` in the module's dict ``store``; ``marks`` names the module's sets
    (``_forward_hooks_with_kwargs``, ...) the hook's id goes in."""
    if not callable(hook):
        raise TypeError(f"{type(module).__name__}: a hook must be callable, got a "
                        f"{type(hook).__name__}")
    hooks = module.__dict__.get(store)
    if hooks is None:
        hooks = OrderedDict()
        object.__setattr__(module, store, hooks)
    sets = []
    for mark in marks:
        if module.__dict__.get(mark) is None:
            object.__setattr__(module, mark, set())
        sets.append(module.__dict__[mark])
    handle = RemovableHandle(hooks, tuple(sets))
    for ids in sets:
        ids.add(handle.id)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


# the hooks every module runs, before its own (torch.nn.modules.module's global hooks, for
# debugging and profiling: a summary of every layer's output, activation statistics)
_global_forward_pre_hooks = OrderedDict()
_global_forward_hooks = OrderedDict()
_global_forward_hooks_with_kwargs = set()
_global_forward_hooks_always_called = set()
_global_backward_pre_hooks = OrderedDict()
_global_backward_hooks = OrderedDict()


def _add_global_hook(hooks, hook, marks=()):
    if not callable(hook):
        raise TypeError(f"a module hook must be callable, got a {type(hook).__name__}")
    handle = RemovableHandle(hooks, tuple(marks))
    for ids in marks:
        ids.add(handle.id)
    hooks[handle.id] = hook
    return handle


def register_module_forward_pre_hook(hook):
    """``hook(module, args)`` before every module's forward (before the module's own
    pre-hooks); what it returns replaces the positional args. Returns a RemovableHandle."""
    return _add_global_hook(_global_forward_pre_hooks, hook)


def register_module_forward_hook(hook, *, with_kwargs=False, always_call=False):
    """``hook(module, args, output)`` (``hook(module, args, kwargs, output)`` with
    ``with_kwargs``) after every module's forward, before the module's own forward hooks;
    what it returns replaces the output. ``always_call``: also when forward raised."""
    marks = ([_global_forward_hooks_with_kwargs] if with_kwargs else []) + (
        [_global_forward_hooks_always_called] if always_call else [])
    return _add_global_hook(_global_forward_hooks, hook, marks)


def register_module_full_backward_pre_hook(hook):
    """``hook(module, grad_output)`` for every module, before the module's own backward
    pre-hooks; what it returns replaces grad_output."""
    return _add_global_hook(_global_backward_pre_hooks, hook)


def register_module_full_backward_hook(hook):
    """``hook(module, grad_input, grad_output)`` for every module, before the module's own
    full backward hooks; what it returns replaces grad_input."""
    return _add_global_hook(_global_backward_hooks, hook)


# hook(module, name, value) -> None or a replacement, on every registration of a parameter, a
# buffer or a sub-module, by assignment or by register_*/add_module (torch's global
# registration hooks: a tool that wraps or records every parameter as models are built)
_global_parameter_registration_hooks = OrderedDict()
_global_buffer_registration_hooks = OrderedDict()
_global_module_registration_hooks = OrderedDict()


def register_module_parameter_registration_hook(hook):
    """``hook(module, name, param)`` each time any module registers a Parameter (assignment,
    ``register_parameter``; not a None); a value it returns is registered instead. Returns a
    RemovableHandle."""
    return _add_global_hook(_global_parameter_registration_hooks, hook)


def register_module_buffer_registration_hook(hook):
    """``hook(module, name, buffer)`` each time any module registers a buffer (assignment,
    ``register_buffer``, None included); a value it returns is registered instead."""
    return _add_global_hook(_global_buffer_registration_hooks, hook)


def register_module_module_registration_hook(hook):
    """``hook(module, name, submodule)`` each time any module registers a sub-module
    (assignment, ``add_module``/``register_module``, None included); a value it returns is
    registered instead."""
    return _add_global_hook(_global_module_registration_hooks, hook)


def registered(hooks, module, name, value):
    """``value`` through the global registration ``hooks``, in the order they were added."""
    if not hooks:  # the common case: no list built on each attribute assignment
        return value
    for hook in list(hooks.values()):
        out = hook(module, name, value)
        if out is not None:
            value = out
    return value


class StateDictValueError(TypeError, RuntimeError):
    """A state_dict value that is no array (a string, None, an object): PyTorch's
    RuntimeError, naming the key."""


class StateDictKeyError(ValueError, RuntimeError):
    """Missing or unexpected state_dict keys (a pruned model's ``weight_orig`` and
    ``weight_mask`` loaded into an unpruned one): PyTorch's RuntimeError, and the ValueError
    minidl raised before."""


def _loadable(value):
    """Whether a state_dict value can be copied into a parameter: a Tensor, a numeric array
    (NumPy, CuPy, or anything with __array__, e.g. a torch Tensor), a number, or a list of
    numbers. Strings, None and objects are refused (they have shape ())."""
    if isinstance(value, Tensor) or type(value).__module__.startswith("cupy"):
        return True
    if isinstance(value, (str, bytes)) or value is None:
        return False
    try:
        kind = np.asarray(value).dtype.kind if not isinstance(value, np.ndarray) else value.dtype.kind
    except Exception:  # __array__ that refuses (e.g. a torch tensor that requires grad)
        return True  # the copy below reports it
    return kind not in "OUS"


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Module:
    training: bool
    # Layers that hold parameters take PyTorch's factory arguments, ``nn.Linear(3, 4,
    # device="cuda", dtype=minidl.float64)``: a layer class sets this, and a constructor of it
    # that does not name ``device``/``dtype`` itself gets them as keywords (applied by .to()
    # once the layer is built)
    _factory_kwargs = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if not cls._factory_kwargs or init is None or not cls.__module__.startswith("minidl."):
            return
        sig = inspect.signature(init)
        if "device" in sig.parameters or any(p.kind is p.VAR_KEYWORD
                                             for p in sig.parameters.values()):
            return

        @functools.wraps(init)
        def with_factory_kwargs(self, *args, device=None, dtype=None, **kw):
            init(self, *args, **kw)
            if device is not None or dtype is not None:
                self.to(device=device, dtype=dtype)
                reset = getattr(self, "reset_parameters", None)
                if dtype is not None and as_dtype(dtype).kind == "c" and callable(reset):
                    # torch draws a complex layer's parameters as complex numbers (both parts
                    # random); cast from real ones, their imaginary parts would all be 0
                    with _autograd.no_grad():
                        reset()

        extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
                 for n in ("device", "dtype")]
        params = list(sig.parameters.values())
        at = next((i for i, p in enumerate(params) if p.kind is p.KEYWORD_ONLY), len(params))
        with_factory_kwargs.__signature__ = sig.replace(parameters=params[:at] + extra + params[at:])
        cls.__init__ = with_factory_kwargs

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration -----------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        params = self.__dict__["_parameters"]
        if name in params and value is not None and not isinstance(value, Parameter):
            # PyTorch refuses it too: the name would silently leave parameters() and state_dict()
            raise TypeError(f"cannot assign a {type(value).__name__} as parameter {name!r} of "
                            f"{type(self).__name__} (a Parameter or None expected); wrap it in "
                            "nn.Parameter(...), or write its values with .data or copy_()")
        if (name in self.__dict__.get("_buffer_names", ()) and value is not None
                and not isinstance(value, Tensor)):
            raise TypeError(f"cannot assign a {type(value).__name__} as buffer {name!r} of "
                            f"{type(self).__name__} (a Tensor or None expected)")
        if isinstance(value, Parameter) and name not in params and hasattr(type(self), name):
            # a class attribute (a method, a property of nn.utils.parametrize) would hide the
            # Parameter from attribute lookup while state_dict() holds it: torch refuses it too
            raise KeyError(f"attribute '{name}' already exists")
        if isinstance(value, Buffer):
            for store in (self._parameters, self._modules):
                store.pop(name, None)
            self.__dict__.pop(name, None)
            self.register_buffer(name, value, persistent=value.persistent)
            return
        if isinstance(value, Parameter):
            keep = self._parameters
            value = registered(_global_parameter_registration_hooks, self, name, value)
        elif isinstance(value, Module) or (value is None and name in self._modules):
            keep = self._modules  # (None keeps the name a child's, as torch's)
            value = registered(_global_module_registration_hooks, self, name, value)
        elif name in self.__dict__.get("_buffer_names", ()):
            keep = self._buffers
            value = registered(_global_buffer_registration_hooks, self, name, value)
        else:
            keep = None
        for store in (self._parameters, self._buffers, self._modules):
            if store is not keep:  # a replaced entry keeps its place: parameters()'s order,
                store.pop(name, None)  # and so an optimizer's state by index, stay torch's
        if keep is None:
            object.__setattr__(self, name, value)
        else:
            # a plain attribute of the same name would shadow the registered one forever
            self.__dict__.pop(name, None)
            keep[name] = value

    def __getattr__(self, name):
        for store in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(store)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor, persistent=True):
        """A non-trainable tensor that is part of the state (BatchNorm's running stats). It
        moves with ``to()``; ``persistent=False`` leaves it out of ``state_dict()`` (a cache,
        a constant rebuilt in ``__init__``), as in PyTorch."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"register_buffer: the name must be a non-empty string without '.', "
                           f"got {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            if not isinstance(tensor, np.ndarray) and get_array_module(tensor) is np:
                raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got a "
                                f"{type(tensor).__name__}")
            tensor = Tensor(tensor)
        if name not in self._buffers and (name in self._parameters or name in self._modules
                                           or hasattr(self, name)):
            # a parameter or sub-module of that name would hide the buffer, and state_dict()
            # would write one over the other under the same key: torch refuses it too
            raise KeyError(f"register_buffer: attribute '{name}' already exists")
        # the hooks run before anything changes: one that raises leaves the module as it was
        tensor = registered(_global_buffer_registration_hooks, self, name, tensor)
        for store in ("_buffer_names", "_non_persistent"):
            if store not in self.__dict__:
                object.__setattr__(self, store, set())
        self._buffer_names.add(name)
        (self._non_persistent.add if not persistent else self._non_persistent.discard)(name)
        self._buffers[name] = tensor

    def register_parameter(self, name, param):
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"register_parameter: the name must be a non-empty string without "
                           f"'.', got {name!r}")
        if name not in self._parameters and (name in self._buffers or name in self._modules
                                              or hasattr(self, name)):
            raise KeyError(f"register_parameter: attribute '{name}' already exists")
        if param is None:
            self._parameters[name] = None
        elif not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got a "
                            f"{type(param).__name__}; wrap it in nn.Parameter(...)")
        else:
            self.__setattr__(name, param)

    def add_module(self, name, module):
        """Register ``module`` (or None) as a child under ``name``, as PyTorch checks it: a
        non-empty name without dots that is not already another kind of attribute."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {type(module).__name__} is not a Module subclass")
        if isinstance(name, int):
            name = str(name)  # Sequential's numbering
        if not isinstance(name, str):
            raise TypeError(f"add_module: module name should be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"add_module: module name can't be empty or contain \".\", got {name!r}")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"add_module: attribute {name!r} already exists")
        self._modules[name] = registered(_global_module_registration_hooks, self, name, module)

    register_module = add_module

    def set_submodule(self, target, module, strict=False):
        """Put ``module`` at a dotted path (``"layer1.0.conv1"``) whose parent exists;
        ``strict=True`` only replaces a sub-module that is there."""
        prefix, _, name = target.rpartition(".")
        if not name:
            raise ValueError("set_submodule: cannot set the module itself (empty target)")
        parent = self.get_submodule(prefix)
        if name not in parent._modules and hasattr(parent, name):
            raise AttributeError(f"set_submodule: {target!r} is not a module")
        if strict and name not in parent._modules:
            raise AttributeError(f"set_submodule: {type(parent).__name__} has no sub-module "
                                 f"{name!r} to replace (strict=True)")
        parent.add_module(name, module)

    # ---- traversal --------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """Every module, this one first; as in PyTorch, a module shared by two parents comes
        once, under its first name (both with remove_duplicate=False, as state_dict lists)."""
        if isinstance(memo, str):  # named_modules("prefix"), the old positional form
            memo, prefix = None, memo
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate)

    def modules(self, remove_duplicate=True):
        for _, m in self.named_modules(remove_duplicate=remove_duplicate):
            yield m

    def named_children(self):
        """(name, module) of each direct sub-module, a module held under several names once,
        under its first (as torch's)."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, parameter) of this module and (recurse) its sub-modules; a parameter (or
        module) shared under several names comes once, under its first, unless
        ``remove_duplicate=False``."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def _named_members(self, store, prefix, recurse, remove_duplicate):
        seen = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                   if recurse else [(prefix, self)])
        for mod_name, module in modules:
            for name, p in module.__dict__[store].items():
                if p is None or (remove_duplicate and id(p) in seen):
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, buffer), as named_parameters."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ---- state ------------------------------------------------------------------------
    def _own_state(self, prefix, keep_vars):
        """(name, tensor) of this module's parameters and persistent buffers, in order."""
        skip = self.__dict__.get("_non_persistent", ())
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in skip:
                yield prefix + name, b if keep_vars else b.detach()

    def _tensor_state(self):
        """The state_dict's tensors by name, without hooks or extra state."""
        out = OrderedDict()
        for mod_name, module in self.named_modules(remove_duplicate=False):
            out.update(module._own_state(f"{mod_name}." if mod_name else "", False))
        return out

    def _extra_state_keys(self, method):
        """name -> module for the modules whose class overrides ``method`` (get_extra_state
        when saving, set_extra_state when loading), as ``<prefix>_extra_state``."""
        return OrderedDict(
            (f"{mod_name}._extra_state" if mod_name else "_extra_state", module)
            for mod_name, module in self.named_modules(remove_duplicate=False)
            if getattr(type(module), method) is not getattr(Module, method))

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Parameters and persistent buffers by dotted name, in registration order: detached
        Tensors sharing the parameters' arrays, or the Parameters themselves (keep_vars=True).
        ``prefix`` goes before every name; ``destination`` is filled and returned. A module
        whose class defines ``get_extra_state`` adds what it returns as ``<prefix>_extra_state``
        (after its own tensors); state-dict pre- and post-hooks run as PyTorch's."""
        out = OrderedDict() if destination is None else destination
        if destination is None:  # torch's: each module's version, for load-time upgrades
            out._metadata = OrderedDict()
        metadata = getattr(out, "_metadata", None)
        if isinstance(metadata, dict):
            metadata[prefix[:-1]] = {"version": getattr(self, "_version", 1)}
        for hook in list((self.__dict__.get("_state_dict_pre_hooks") or {}).values()):
            hook(self, prefix, keep_vars)
        out.update(self._own_state(prefix, keep_vars))
        if type(self).get_extra_state is not Module.get_extra_state:
            out[prefix + "_extra_state"] = self.get_extra_state()
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination=out, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        private = self.__dict__.get("_state_dict_hooks_private") or ()
        for key, hook in list((self.__dict__.get("_state_dict_hooks") or {}).items()):
            result = hook(self, out, prefix, {"version": getattr(self, "_version", 1)})
            if result is not None:
                if key not in private:
                    raise RuntimeError("state_dict post-hook must return None")
                out = result  # _register_state_dict_hook's may return the dict to use
        return out

    def _post_order(self):
        """Every module (shared ones under each name), children before their parent, as
        PyTorch runs the load post-hooks."""
        for child in self._modules.values():
            if child is not None:
                yield from child._post_order()
        yield self

    def get_extra_state(self):
        """Extra (non-tensor) state for state_dict: a module class that keeps some defines this
        and set_extra_state; the value is saved under ``<prefix>_extra_state``, as PyTorch's."""
        raise RuntimeError("Reached a code path in Module.get_extra_state() that should never be "
                           "called. Please file an issue at https://github.com/pytorch/pytorch/"
                           "issues/new?template=bug-report.yml to report this bug.")

    def set_extra_state(self, state):
        """Restore what get_extra_state returned (called by load_state_dict)."""
        raise RuntimeError("Reached a code path in Module.set_extra_state() that should never be "
                           "called. Please file an issue at https://github.com/pytorch/pytorch/"
                           "issues/new?template=bug-report.yml to report this bug.")

    def register_state_dict_pre_hook(self, hook):
        """``hook(module, prefix, keep_vars)`` runs before this module's state_dict()."""
        return _add_hook(self, "_state_dict_pre_hooks", hook)

    def register_state_dict_post_hook(self, hook):
        """``hook(module, state_dict, prefix, local_metadata)`` runs after this module's (and
        its children's) entries are in ``state_dict``; it may change it in place and must
        return None."""
        return _add_hook(self, "_state_dict_hooks", hook)

    def _register_state_dict_hook(self, hook):
        """torch's older (private, still widely used) state-dict post-hook: as
        register_state_dict_post_hook, except that what the hook returns, if not None, is the
        state dict state_dict() goes on with and returns."""
        return _add_hook(self, "_state_dict_hooks", hook, marks=("_state_dict_hooks_private",))

    def _register_load_state_dict_pre_hook(self, hook, with_module=False):
        """torch's older (private, still widely used) load pre-hook: ``hook(state_dict, prefix,
        local_metadata, strict, missing_keys, unexpected_keys, error_msgs)``, or with the
        module first when ``with_module``."""
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}: a hook must be callable, got a "
                            f"{type(hook).__name__}")
        return self.register_load_state_dict_pre_hook(
            hook if with_module else (lambda module, *args: hook(*args)))

    def register_load_state_dict_pre_hook(self, hook):
        """``hook(module, state_dict, prefix, local_metadata, strict, missing_keys,
        unexpected_keys, error_msgs)`` runs before load_state_dict reads this module's entries;
        it may change the (copied) state_dict in place, e.g. rename old keys."""
        return _add_hook(self, "_load_state_dict_pre_hooks", hook)

    def register_load_state_dict_post_hook(self, hook):
        """``hook(module, incompatible_keys)`` runs after load_state_dict; it may remove
        entries from ``incompatible_keys.missing_keys`` / ``unexpected_keys`` in place, and
        strict loading then checks what is left."""
        return _add_hook(self, "_load_state_dict_post_hooks", hook)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """torch's per-module loading step, which subclasses override to upgrade old
        checkpoints (rename keys by ``local_metadata["version"]``, then call this). Here it
        runs the module's load pre-hooks; load_state_dict then copies every value itself, so
        what an override changes in ``state_dict`` before or after calling this is what gets
        loaded (``missing_keys``/``unexpected_keys`` are not read back)."""
        for hook in list((self.__dict__.get("_load_state_dict_pre_hooks") or {}).values()):
            hook(self, state_dict, prefix, local_metadata, strict, missing_keys,
                 unexpected_keys, error_msgs)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values (numpy arrays or Tensors) into parameters and buffers, in place.
        ``assign=True`` puts the given tensors in their places instead (their arrays, dtypes
        and devices; a parameter stays a Parameter with its requires_grad), as torch's.

        Every missing, unexpected and mis-shaped key is listed in one error; nothing is
        changed unless everything fits (with strict=False, missing and unexpected keys are
        returned instead of raised, but shape mismatches still raise). Load pre-hooks see a
        copy of the dict first; where a module has load post-hooks, the values are loaded
        first, the hooks may clear keys, and strict then judges what is left (PyTorch's
        order). ``_extra_state`` entries go to set_extra_state."""
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of name -> array (a state_dict), "
                            f"got a {type(state_dict).__name__}")
        modules = list(self.named_modules(remove_duplicate=False))
        if any(m.__dict__.get("_load_state_dict_pre_hooks") or
               type(m)._load_from_state_dict is not Module._load_from_state_dict
               for _, m in modules):
            # each module's _load_from_state_dict (an override: a version upgrade renaming
            # old keys) and load pre-hooks see a copy of the dict, parents first, with the
            # metadata the checkpoint was saved with ({} for a dict without it), as torch's
            metadata = getattr(state_dict, "_metadata", None)
            state_dict = OrderedDict(state_dict.items())
            error_msgs = []
            for mod_name, module in modules:
                local_metadata = {} if metadata is None else dict(metadata.get(mod_name, {}))
                module._load_from_state_dict(state_dict, f"{mod_name}." if mod_name else "",
                                             local_metadata, True, [], [], error_msgs)
            if error_msgs:
                raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                                   + "; ".join(map(str, error_msgs)))
        for mod_name, module in self.named_modules():  # lazy modules take the shapes first
            if hasattr(module, "_materialize_from"):
                module._materialize_from(state_dict, f"{mod_name}." if mod_name else "")
        own = self._tensor_state()
        # modules that read their own entries (quantized ones: packed int8 weights, a scale
        # and zero point kept as numbers): key -> (module, prefix)
        readers = {}
        for mod_name, module in modules:
            if hasattr(module, "_load_own_state"):
                prefix = f"{mod_name}." if mod_name else ""
                for k, _ in module._own_state(prefix, False):
                    readers[k] = (module, prefix)
        extras = self._extra_state_keys("set_extra_state")
        # buffers that take the checkpoint's shape (a per-channel observer's statistics)
        resizable = {(f"{mod_name}." if mod_name else "") + name
                     for mod_name, module in modules
                     for name in getattr(module, "_resizable_buffers", ())}
        targets = dict(self.named_parameters())
        targets.update({k: b for k, b in self.named_buffers() if k in own})
        given = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")
                 or k in own}
        # PyTorch's BatchNorm counter is optional: converted checkpoints drop it
        missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
        missing += [k for k in extras if k not in given and strict]
        unexpected = [k for k in given if k not in own and k not in extras]
        mismatched = []
        for module, prefix in dict.fromkeys(readers.values()):  # checked before anything changes
            mismatched += module._check_own_state(given, prefix)
        for k in own:
            if k in readers:
                continue
            if k in given and getattr(given[k], "is_quantized", False) is True:
                raise StateDictValueError(
                    f"Error(s) in loading state_dict for {type(self).__name__}: the checkpoint "
                    f"holds a quantized tensor ({given[k].dtype}) for the float parameter {k!r}; "
                    "load it into a model quantized the same way, or dequantize() it first")
            if k in given and not _loadable(given[k]):  # np.shape(None) is (): not a shape error
                raise StateDictValueError(
                    f"Error(s) in loading state_dict for {type(self).__name__}: while copying the "
                    f"parameter named {k!r}, expected a Tensor or a numeric array from the "
                    f"checkpoint but received {type(given[k]).__name__} {_short(given[k])}")
            if k in given:
                shape = tuple(np.shape(given[k].data if isinstance(given[k], Tensor) else given[k]))
                if shape != own[k].shape and k not in resizable:
                    mismatched.append(f"{k}: checkpoint {shape}, model {own[k].shape}")
        post_hooks = [(m, h) for m in self._post_order()
                      for h in (m.__dict__.get("_load_state_dict_post_hooks") or {}).values()]
        problems = []
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        packed = [k for k in unexpected if k.endswith("_packed_params._packed_params")
                  and k.removesuffix("_packed_params._packed_params") + "weight" in missing]
        if packed and strict:  # a quantized model's state_dict given to the float model
            problems.append(f"{', '.join(packed)} hold{'s' if len(packed) == 1 else ''} "
                            "quantized weights where the model has float ones (" + ", ".join(
                                k.removesuffix("_packed_params._packed_params") + "weight"
                                for k in packed) + "): quantize the model the same way first")
        if not post_hooks:
            if strict and missing:
                problems.append("missing keys: " + ", ".join(missing))
            if strict and unexpected:
                problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise StateDictKeyError(f"Error(s) in loading state_dict for "
                                    f"{type(self).__name__}: " + " | ".join(problems))
        if assign:
            self._assign_state(own, given)
        for k, value in given.items():
            if assign and k in own or k in readers:
                continue
            if k in targets:
                t = targets[k]
                arr = to_device(value.data if isinstance(value, Tensor) else value, t.device)
                # copied into the tensor's own array, in its dtype (PyTorch's copy_): the
                # caller's array is never aliased, and tensors taken from state_dict() see it
                own_arr = t.data
                xp = get_array_module(own_arr)  # CuPy's arrays are always writeable
                if k in resizable and arr.shape != own_arr.shape:
                    t.data = xp.asarray(arr).astype(own_arr.dtype, copy=True)
                    bump_version(t)
                elif xp is not np or own_arr.flags.writeable:
                    xp.copyto(own_arr, arr, casting="unsafe")
                    bump_version(t)  # a graph that saved the old values refuses its backward
                else:
                    t.data = arr.astype(own_arr.dtype, copy=True)
            elif k in extras:
                extras[k].set_extra_state(value)
        for module, prefix in dict.fromkeys(readers.values()):
            module._load_own_state(given, prefix)
        result = IncompatibleKeys(missing, unexpected)
        for module, hook in post_hooks:
            if hook(module, result) is not None:
                raise RuntimeError("load_state_dict post-hook must return None")
        if post_hooks and strict and (missing or unexpected):
            problems = (["missing keys: " + ", ".join(missing)] if missing else []) + \
                (["unexpected keys: " + ", ".join(unexpected)] if unexpected else [])
            raise StateDictKeyError(f"Error(s) in loading state_dict for "
                                    f"{type(self).__name__}: " + " | ".join(problems))
        return result

    def _assign_state(self, own, given):
        """load_state_dict(assign=True): each given entry becomes the tensor at its name."""
        owners = {}
        for mod_name, module in self.named_modules(remove_duplicate=False):
            prefix = f"{mod_name}." if mod_name else ""
            for name in list(module._parameters) + list(module._buffers):
                owners.setdefault(prefix + name, (module, name))
        for k in own:
            if k not in given or k not in owners:
                continue
            module, name = owners[k]
            value = given[k]
            if not isinstance(value, Tensor):
                value = Tensor(np.asarray(value))
            if name in module._parameters:
                old = module._parameters[name]
                if isinstance(value, Parameter):
                    value.requires_grad_(old.requires_grad)
                else:
                    value = Parameter(value, requires_grad=old.requires_grad)
                module._parameters[name] = value
            else:
                module._buffers[name] = value

    # ---- modes and devices ------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None, non_blocking=False, memory_format=None):
        """Move (or cast) every parameter and buffer in place, keeping the same objects so an
        optimizer made before the move still holds them. ``model.to(device)``,
        ``model.to(minidl.bfloat16)``, ``model.to(tensor)`` (its device and dtype);
        ``non_blocking`` is accepted for PyTorch's signature, and so is ``memory_format``
        (``minidl.channels_last``): the weights keep minidl's row-major layout, which its
        kernels take, and every result is the same."""
        if memory_format is not None:
            from ..shape_ops import memory_format as _format

            if not isinstance(memory_format, _format):
                raise TypeError(f"to: memory_format must be a minidl memory format "
                                f"(minidl.channels_last, ...), got {memory_format!r}")
        if isinstance(device, Tensor):
            device, dtype = device.device, device.dtype if dtype is None else dtype
        if dtype is None and device is not None and _is_dtype_like(device):
            device, dtype = None, device  # model.to(minidl.bfloat16), as in torch
        if device is not None:
            device = normalize_device(device)
        dtype = None if dtype is None else as_dtype(dtype)
        if dtype is not None and not is_differentiable(dtype):
            # casting would silently truncate every weight (0.3 -> 0); torch refuses it too
            raise TypeError(f"nn.Module.to only accepts floating point or complex dtypes, but "
                            f"got desired dtype={dtype}")
        for t in list(self.parameters()) + list(self.buffers()):
            if device is not None:
                t.data = to_device(t.data, device)
            if dtype is not None and is_floating(t.data.dtype):
                t.data = t.data.astype(dtype)
            if t.grad is not None and device is not None:
                t.grad = Tensor(to_device(t.grad.data, device))
        return self

    def to_empty(self, *, device, recurse=True):
        """Move every parameter and buffer to ``device`` as uninitialised storage (the values
        are not copied), keeping the same objects, as PyTorch's (after building a module whose
        values will be loaded anyway). ``recurse=False`` moves only this module's own."""
        device = normalize_device("cpu" if device is None else device)
        own = [t for t in list(self._parameters.values()) + list(self._buffers.values())
               if t is not None]
        tensors = own if not recurse else list(self.parameters()) + list(self.buffers())
        for t in tensors:
            xp = get_array_module(to_device(np.empty(0, t.data.dtype), device))
            t.data = xp.empty(t.data.shape, t.data.dtype)
            if t.grad is not None:  # the gradient moves the same way, as in PyTorch
                t.grad = Tensor(xp.empty(t.grad.shape, t.grad.dtype))
        return self

    def share_memory(self):
        """Move every parameter and buffer (and gradient) into shared memory, so that
        processes forked from this one train the same values (Hogwild), as torch's; returns
        the module."""
        for t in list(self.parameters()) + list(self.buffers()):
            t.share_memory_()
            if t.grad is not None:
                t.grad.share_memory_()
        return self

    def compile(self, *, fullgraph=False, dynamic=None, backend="inductor", mode=None,
                options=None, disable=False):
        """``torch.nn.Module.compile``'s place, in place: as ``minidl.compile(module)``, the
        module runs eagerly as it is (one warning per process says so); returns None. The
        arguments are torch.compile's and are checked as it checks them (a mistyped mode
        raises)."""
        from ..backend.compile_args import check_compile_arguments

        check_compile_arguments(backend, mode, options)
        global _compile_warned
        if disable:
            return
        if not _compile_warned:
            _compile_warned = True
            warnings.warn("Module.compile: minidl has no graph compiler; the model runs "
                          "eagerly, as it is (its CPU kernels are already compiled by numba)",
                          UserWarning, stacklevel=2)

    def cuda(self, device=None):
        return self.to("cuda" if device is None or isinstance(device, int) else device)

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def half(self):
        return self.to(dtype=np.float16)

    def bfloat16(self):
        return self.to(dtype="bfloat16")

    def type(self, dst_type):
        return self.to(dtype=dst_type)

    def zero_grad(self, set_to_none=True):
        """Drop the gradients (set_to_none=True, PyTorch's default) or zero them in place."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                if p.grad._ctx is not None:  # from backward(create_graph=True): cut its graph first
                    p.grad.detach_()
                p.grad.requires_grad = False
                p.grad.zero_()

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def get_submodule(self, target):
        """The module at a dotted path (``"layer1.0.conv1"``; ``""`` is this module)."""
        module = self
        for i, part in enumerate(target.split(".") if target else ()):
            child = module._modules.get(part)
            if child is None:
                where = ".".join(target.split(".")[:i]) or type(self).__name__
                raise AttributeError(f"get_submodule: {where} has no sub-module {part!r} "
                                     f"(it has: {', '.join(module._modules) or 'none'})")
            module = child
        return module

    def _get_leaf(self, target, store, what):
        prefix, _, name = target.rpartition(".")
        module = self.get_submodule(prefix)
        value = module.__dict__[store].get(name)
        if value is None:
            raise AttributeError(f"get_{what}: {prefix or type(self).__name__} has no {what} "
                                 f"{name!r}")
        return value

    def get_parameter(self, target):
        return self._get_leaf(target, "_parameters", "parameter")

    def get_buffer(self, target):
        return self._get_leaf(target, "_buffers", "buffer")

    # ---- hooks ------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """``hook(module, args)`` runs before ``forward``; what it returns other than None
        replaces the positional arguments (a non-tuple becomes a 1-tuple), as in PyTorch.
        ``with_kwargs=True``: ``hook(module, args, kwargs)``, returning None or a new
        ``(args, kwargs)``. ``prepend=True`` runs it before the hooks already there."""
        return _add_hook(self, "_forward_pre_hooks", hook, prepend,
                         ("_forward_pre_hooks_with_kwargs",) if with_kwargs else ())

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False,
                              always_call=False):
        """``hook(module, args, output)`` runs after ``forward``; what it returns other than
        None replaces the output. Feature extraction and Grad-CAM read activations this way.
        ``with_kwargs=True``: ``hook(module, args, kwargs, output)``; ``always_call=True``: it
        runs even when forward raises (output None), before the error goes on."""
        marks = (("_forward_hooks_with_kwargs",) if with_kwargs else ()) + \
            (("_forward_hooks_always_called",) if always_call else ())
        return _add_hook(self, "_forward_hooks", hook, prepend, marks)

    def register_full_backward_hook(self, hook, *, prepend=False):
        """``hook(module, grad_input, grad_output)`` runs when the gradients of the module's
        inputs have been computed (tuples of Tensors, None where an input or output takes no
        gradient); what it returns other than None replaces grad_input. As PyTorch's: it
        sees the positional tensor inputs, and the module must not change its inputs in
        place."""
        if self.__dict__.get("_non_full_backward_hooks"):
            raise RuntimeError(_MIXED_HOOKS)
        return _add_hook(self, "_backward_hooks", hook, prepend)

    def register_backward_hook(self, hook):
        """Deprecated (use ``register_full_backward_hook``): ``hook(module, grad_input,
        grad_output)`` runs when the op that made the module's output (its first tensor) has
        computed its inputs' gradients; grad_input holds that op's input gradients, which are
        the module's only where its forward is that one op (torch warns otherwise, as here).
        What it returns other than None replaces grad_input."""
        if self.__dict__.get("_backward_hooks"):
            raise RuntimeError(_MIXED_HOOKS)
        return _add_hook(self, "_non_full_backward_hooks", hook)

    def register_full_backward_pre_hook(self, hook, *, prepend=False):
        """``hook(module, grad_output)`` runs when the gradients of the module's outputs have
        arrived, before the module's own backward; what it returns replaces grad_output."""
        return _add_hook(self, "_backward_pre_hooks", hook, prepend)

    # ---- calling ----------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        hook = _autograd._profiler_hook
        if hook is not None:  # a profiler records: with_modules adds an "nn.Module: X" range
            return hook.module_call(self, self._call_impl, args, kwargs)
        return self._call_impl(*args, **kwargs)

    def _call_impl(self, *args, **kwargs):
        # A numpy array into one of minidl's own forwards is refused here, where PyTorch's op
        # would refuse it, rather than deep inside; a forward the user wrote gets what it is
        # given, as in torch (it may convert the array itself, or use it as plain numbers)
        for a in args:
            if isinstance(a, np.ndarray) and \
                    (getattr(type(self).forward, "__module__", None) or "").startswith("minidl."):
                raise TypeError(f"{type(self).__name__}: the input is a numpy array of shape "
                                f"{a.shape}; make it a tensor first: minidl.tensor(array)")
        pre, post = self.__dict__.get("_forward_pre_hooks"), self.__dict__.get("_forward_hooks")
        if _global_forward_pre_hooks:  # every module's hooks first, as torch's
            pre = {**_global_forward_pre_hooks, **(pre or {})}
        if _global_forward_hooks:
            post = {**_global_forward_hooks, **(post or {})}
        pre_kw = self.__dict__.get("_forward_pre_hooks_with_kwargs") or ()
        for key, hook in list((pre or {}).items()):
            if key in pre_kw:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(f"forward pre-hook must return None or a tuple of "
                                           f"(new_args, new_kwargs), but got {result}.")
                    args, kwargs = result
                continue
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        backward_hooks = (self.__dict__.get("_backward_hooks")
                          or self.__dict__.get("_backward_pre_hooks")
                          or _global_backward_hooks or _global_backward_pre_hooks)
        state = None
        if backward_hooks and is_grad_enabled():
            state = _BackwardHooks(self, args)
            args = _hook_inputs(args, state)
        post_kw = self.__dict__.get("_forward_hooks_with_kwargs") or ()
        always = self.__dict__.get("_forward_hooks_always_called") or ()
        if _global_forward_hooks:
            post_kw = {*post_kw, *_global_forward_hooks_with_kwargs}
            always = {*always, *_global_forward_hooks_always_called}
        called = set()
        try:
            out = self.forward(*args, **kwargs)
            for key, hook in list((post or {}).items()):
                if key in always:
                    called.add(key)
                result = hook(self, args, kwargs, out) if key in post_kw else hook(self, args, out)
                if result is not None:
                    out = result
        except Exception:
            for key, hook in list((post or {}).items()):
                if key in always and key not in called:
                    try:  # as torch: the hook sees output None, and the first error goes on
                        hook(self, args, kwargs, None) if key in post_kw else hook(self, args, None)
                    except Exception as e:
                        warnings.warn(f"forward hook with ``always_call=True`` raised an "
                                      f"exception that was silenced as another error was "
                                      f"raised in forward: {e}")
            raise
        if state is not None:
            out = _hook_outputs(out, state)
        non_full = self.__dict__.get("_non_full_backward_hooks")
        if non_full and is_grad_enabled():
            _attach_non_full_hooks(self, args, out, list(non_full.values()))
        return out

    def extra_repr(self):
        return ""

    def __repr__(self):
        # as PyTorch's: a one-line extra_repr stays inline when there are no children; else
        # its lines and the children's each get a line of their own, indented by two spaces
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(child).replace("\n", "\n  ")
                       for name, child in self._modules.items()]  # every name, as torch's
        if not child_lines and len(extra_lines) <= 1:
            return f"{type(self).__name__}({extra})"
        return (f"{type(self).__name__}(\n  " + "\n  ".join(extra_lines + child_lines)
                + "\n)")

