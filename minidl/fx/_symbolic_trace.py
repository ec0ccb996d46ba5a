"""Symbolic tracing: ``Proxy``, ``Tracer``, ``symbolic_trace`` and ``wrap`` (torch.fx's meaning).

minidl has no ``__torch_function__``: while a trace runs, the public functions of ``minidl``,
``minidl.nn.functional``, ``minidl.functional``, ``minidl.linalg``, ``minidl.special`` and
``minidl.fft`` are replaced by wrappers that record a ``call_function`` node when a Proxy is
among their arguments (and call the function otherwise); ``Module.__call__``,
``Module.__getattr__`` (parameters become ``get_attr`` nodes) and the Tensor operators (a Tensor
on the left of a Proxy) are patched the same way. Everything is restored when the trace ends,
also on error."""
import builtins
import dis
import importlib
import inspect
import math
import operator
import types

from ..nn.module import Module, Parameter
from ..tensor import Tensor
from ._paths import _WRAPPED_MODULES
from .graph import Graph
from .node import Node, map_aggregate

__all__ = ["Proxy", "Attribute", "Tracer", "TraceError", "symbolic_trace", "wrap", "PH"]



class TraceError(ValueError):
    pass


class _PH:
    def __repr__(self):
        return "PH"


PH = _PH()


def _has_proxy(args, kwargs):
    found = []
    map_aggregate((args, kwargs), lambda x: found.append(x) if isinstance(x, Proxy) else None)
    return found[0] if found else None


# ---- Proxy ---------------------------------------------------------------------------------------
class Proxy:
    """Stands for a node's value while tracing: operations on it record more nodes."""

    __hash__ = object.__hash__
    _is_fx_proxy = True  # how minidl.library's ops know a Proxy without importing minidl.fx

    def __init__(self, node, tracer=None):
        self.node = node
        self.tracer = tracer

    def __repr__(self):
        return f"Proxy({self.node.name})"

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Attribute(self, name)

    def __call__(self, *args, **kwargs):
        return self.tracer.create_proxy("call_method", "__call__", (self,) + args, kwargs)

    def __bool__(self):
        raise TraceError("symbolically traced variables cannot be used as inputs to control flow")

    def __iter__(self):
        frame = inspect.currentframe().f_back
        inst = None
        for ins in dis.get_instructions(frame.f_code):
            if ins.offset >= frame.f_lasti:  # the unpacking that asked for the iterator
                inst = ins
                break
        if inst is not None and inst.opname == "UNPACK_SEQUENCE":
            return (self[i] for i in range(inst.argval))
        raise TraceError("Proxy object cannot be iterated. This can be attempted when the Proxy is "
                         "used in a loop or as a *args or **kwargs function argument.")

    def __len__(self):
        raise RuntimeError("'len' is not supported in symbolic tracing by default. If you want this "
                           "call to be recorded, please call minidl.fx.wrap('len') at module scope")

    def __index__(self):
        raise TraceError("symbolically traced variables cannot be used as an index or a size "
                         "(they have no value during tracing)")

    def keys(self):
        return self.tracer.create_proxy("call_method", "keys", (self,), {})


class Attribute(Proxy):
    """``proxy.name``: a ``call_method`` node when called, else a ``getattr`` node (made lazily)."""

    def __init__(self, root, attr):
        self.root = root
        self.attr = attr
        self.tracer = root.tracer
        self._node = None

    @property
    def node(self):
        if self._node is None:
            self._node = self.tracer.create_proxy("call_function", builtins.getattr,
                                                  (self.root, self.attr), {}).node
        return self._node

    def __call__(self, *args, **kwargs):
        return self.tracer.create_proxy("call_method", self.attr, (self.root,) + args, kwargs)


def _binary(op):
    def forward(self, other):
        return self.tracer.create_proxy("call_function", op, (self, other), {})

    def reflected(self, other):
        return self.tracer.create_proxy("call_function", op, (other, self), {})

    return forward, reflected


_MAGIC = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
          "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
          "matmul": operator.matmul, "and": operator.and_, "or": operator.or_, "xor": operator.xor,
          "lshift": operator.lshift, "rshift": operator.rshift}
for _name, _op in _MAGIC.items():
    _f, _r = _binary(_op)
    setattr(Proxy, f"__{_name}__", _f)
    setattr(Proxy, f"__r{_name}__", _r)
for _name, _op in {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
                   "eq": operator.eq, "ne": operator.ne, "getitem": operator.getitem}.items():
    setattr(Proxy, f"__{_name}__", _binary(_op)[0])
for _name, _op in {"neg": operator.neg, "pos": operator.pos, "invert": operator.invert,
                   "abs": operator.abs}.items():
    setattr(Proxy, f"__{_name}__",
            (lambda op: lambda self: self.tracer.create_proxy("call_function", op, (self,), {}))(_op))


# ---- patching --------------------------------------------------------------------------------------
_MISSING = object()


class _Patcher:
    def __init__(self):
        self.saved = []

    def patch(self, obj, name, new):
        self.saved.append((obj, name, obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)))
        setattr(obj, name, new)

    def patch_dict(self, d, name, new):
        self.saved.append((d, name, d.get(name, _MISSING)))
        d[name] = new

    def restore(self):
        while self.saved:
            obj, name, old = self.saved.pop()
            if isinstance(obj, dict):
                if old is _MISSING:
                    del obj[name]
                else:
                    obj[name] = old
            else:
                setattr(obj, name, old)


def _function_wrapper(fn):
    def wrapped(*args, **kwargs):
        proxy = _has_proxy(args, kwargs)
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", fn, args, kwargs)
        return fn(*args, **kwargs)

    wrapped.__wrapped__ = fn
    wrapped.__name__ = getattr(fn, "__name__", "wrapped")
    return wrapped


_wrapped_globals = []  # (globals dict, name) registered by wrap()


def wrap(fn_or_name):
    """Called at module scope: calls of that module's global function of this name are recorded
    as ``call_function`` nodes instead of being traced through (torch.fx.wrap)."""
    if callable(fn_or_name):
        name = fn_or_name.__name__
    elif isinstance(fn_or_name, str):
        name = fn_or_name
    else:
        raise TypeError(f"wrap() takes a function or a function's name, got {type(fn_or_name).__name__}")
    frame = inspect.currentframe().f_back
    if frame.f_code.co_name != "<module>":
        raise NotImplementedError("wrap must be called at the top level of a module")
    _wrapped_globals.append((frame.f_globals, name))
    return fn_or_name


_TENSOR_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
                  "lshift", "rshift")


def _tensor_op_wrapper(orig):
    def wrapped(self, *args):
        if any(isinstance(a, Proxy) for a in args):
            return NotImplemented
        return orig(self, *args)

    return wrapped


def _tensor_method_wrapper(name, orig):
    def wrapped(self, *args, **kwargs):
        proxy = _has_proxy(args, kwargs)
        if proxy is not None:  # tensor.matmul(proxy): a call_method node on the tensor
            return proxy.tracer.create_proxy("call_method", name, (self,) + args, kwargs)
        return orig(self, *args, **kwargs)

    wrapped.__wrapped__ = orig
    wrapped.__name__ = name
    return wrapped


def _tensor_getitem_wrapper(orig):
    def wrapped(self, index):
        proxy = _has_proxy((index,), {})
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", operator.getitem, (self, index), {})
        return orig(self, index)

    return wrapped


# ---- Tracer ------------------------------------------------------------------------------------------
# concrete_args of these types are checked at each call (torch's base types, tensors aside)
_SPECIALIZABLE = (bool, int, float, complex, str)


def _assert(condition, message):
    """A specialized argument's check in a traced graph (torch._assert's part there); traced
    again (a GraphModule retraced), it records itself."""
    if isinstance(condition, Proxy):
        return condition.tracer.create_proxy("call_function", _assert, (condition, message), {})
    if not condition:
        raise AssertionError(message)


def _assert_is_none(value, message):
    if isinstance(value, Proxy):
        return value.tracer.create_proxy("call_function", _assert_is_none, (value, message), {})
    if value is not None:
        raise AssertionError(message)


_assert._fx_impure = _assert_is_none._fx_impure = True  # kept by eliminate_dead_code


def _tensor_attributes(root):
    """id -> qualified name of the tensors the modules under ``root`` hold as plain attributes
    (``self.scale = minidl.tensor(...)``): the tracer reads them by that name (a ``get_attr``
    node), as torch's does, instead of a ``_tensor_constant``."""
    found = {}
    for prefix, m in root.named_modules():
        for k, v in m.__dict__.items():
            if isinstance(v, Tensor) and not isinstance(v, Parameter):
                found.setdefault(id(v), f"{prefix}.{k}" if prefix else k)
    return found


class Tracer:
    """Records what ``forward`` (or a function) does to Proxy inputs into a ``Graph``."""

    def __init__(self, autowrap_modules=(math,), autowrap_functions=(), param_shapes_constant=False):
        self.autowrap_modules = tuple(autowrap_modules)
        self.autowrap_functions = tuple(autowrap_functions)
        self.param_shapes_constant = param_shapes_constant
        self.graph = None
        self.root = None

    # -- nodes
    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        return self.graph.create_node(kind, target, args, kwargs, name, type_expr)

    def proxy(self, node):
        return Proxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        node = self.create_node(kind, target, self.create_arg(args), self.create_arg(kwargs), name, type_expr)
        return proxy_factory_fn(node) if proxy_factory_fn is not None else self.proxy(node)

    def create_arg(self, a):
        """A value as a node argument: Proxies become their nodes, the root's parameters and
        buffers ``get_attr`` nodes, other tensors constants kept on the root."""
        if isinstance(a, Proxy):
            return a.node
        if isinstance(a, Node):
            return a
        if isinstance(a, tuple):
            mapped = tuple(self.create_arg(e) for e in a)
            return type(a)(*mapped) if hasattr(a, "_fields") else mapped
        if isinstance(a, list):
            return [self.create_arg(e) for e in a]
        if isinstance(a, dict):
            return {k: self.create_arg(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(self.create_arg(a.start), self.create_arg(a.stop), self.create_arg(a.step))
        if isinstance(a, Tensor):
            for store in (self.root.named_parameters(), self.root.named_buffers()):
                for n, p in store:
                    if p is a:
                        return self._get_attr_node(n)
            for n, t in self.tensor_attrs.items():
                if t is a:
                    return self._get_attr_node(n)
            name = self._module_tensors.get(id(a))
            if name is not None:  # a plain tensor attribute of a module: read by its name
                return self._get_attr_node(name)
            i = 0
            while hasattr(self.root, f"_tensor_constant{i}"):
                i += 1
            qualname = f"_tensor_constant{i}"
            object.__setattr__(self.root, qualname, a)
            self.tensor_attrs[qualname] = a
            return self._get_attr_node(qualname)
        if isinstance(a, Module):
            path = self.path_of_module(a)
            raise RuntimeError(f"Module {path} passed as an argument: modules cannot be node arguments")
        return a

    def _specialized_placeholder(self, p, value):
        """A concrete argument of a plain value (or None), as torch's: a placeholder
        ``<name>_1`` (the argument's own default) and a check that a call passes that value,
        since the graph was traced with it (an AssertionError naming it otherwise)."""
        default = () if p.default is inspect.Parameter.empty else (p.default,)
        node = self.create_node("placeholder", f"{p.name}_1", default, {})
        message = f"{p.name} has been specialized to have value {value} but got another value"
        if value is None:
            self.create_node("call_function", _assert_is_none, (node, message), {})
        else:
            eq = self.create_node("call_function", operator.eq, (node, value), {})
            self.create_node("call_function", _assert, (eq, message), {})

    def _get_attr_node(self, qualname):
        if qualname not in self._attr_cache:
            self._attr_cache[qualname] = self.create_node("get_attr", qualname, (), {})
        return self._attr_cache[qualname]

    # -- modules
    def is_leaf_module(self, m, module_qualified_name):
        """minidl.nn's own modules are leaves (but Sequential); user modules are traced through."""
        from ..nn.layers import Sequential

        module = type(m).__module__ or ""
        return (module.startswith("minidl.nn") or module.startswith("minidl.ao.nn")) \
            and not isinstance(m, Sequential)

    def path_of_module(self, mod):
        for name, m in self.root.named_modules():
            if m is mod:
                return name
        raise NameError("module is not installed as a submodule")

    def call_module(self, m, forward, args, kwargs):
        qualname = self.path_of_module(m)
        if not self.is_leaf_module(m, qualname):
            self._patch_globals(getattr(type(m).forward, "__globals__", None))
            return forward(*args, **kwargs)
        return self.create_proxy("call_module", qualname, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if isinstance(attr_val, Parameter):
            for n, p in self.root.named_parameters():
                if p is attr_val:
                    if n not in parameter_proxy_cache:
                        parameter_proxy_cache[n] = self.proxy(self._get_attr_node(n))
                    return parameter_proxy_cache[n]
        return attr_val

    # -- trace
    def trace(self, root, concrete_args=None):
        if isinstance(root, Module):
            self.root = root
            fn = type(root).forward
            self_arg = [root]
        else:
            self.root = Module()
            fn = root
            self_arg = []
        self.graph = Graph(tracer_cls=type(self))
        self.tensor_attrs = {}
        self._attr_cache = {}
        self._module_tensors = _tensor_attributes(self.root)
        concrete_args = dict(concrete_args or {})
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())[len(self_arg):]
        args, kwargs = [], {}
        has_var = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
        if has_var:  # *args/**kwargs: the function is called with each as one value, as torch does
            if not isinstance(fn, types.FunctionType):
                raise TraceError(f"cannot trace *args/**kwargs of {fn!r}: not a Python function")
            P = inspect.Parameter
            order = {P.POSITIONAL_ONLY: 0, P.POSITIONAL_OR_KEYWORD: 0, P.KEYWORD_ONLY: 1,
                     P.VAR_POSITIONAL: 2, P.VAR_KEYWORD: 3}
            params.sort(key=lambda p: order[p.kind])  # the order of the code's local variables
            fn = _as_positional(fn, len(self_arg) + len(params))
        for p in params:
            stars = "*" if p.kind == p.VAR_POSITIONAL else "**" if p.kind == p.VAR_KEYWORD else ""
            if p.name in concrete_args and not stars:
                value = concrete_args.pop(p.name)
                if value is None or type(value) in _SPECIALIZABLE:
                    self._specialized_placeholder(p, value)
                else:
                    self.create_node("placeholder", p.name, (value,), {})
            else:
                default = () if p.default is inspect.Parameter.empty else (p.default,)
                value = self.proxy(self.create_node("placeholder", stars + p.name, default, {}))
            if p.kind == p.KEYWORD_ONLY and not has_var:
                kwargs[p.name] = value
            else:
                args.append(value)
        if concrete_args:
            raise TraceError(f"concrete_args names {sorted(concrete_args)}, which are not arguments of "
                             f"{getattr(fn, '__name__', fn)}")
        patcher = self._patcher = _Patcher()
        try:
            self._patch(patcher)
            self._patch_globals(getattr(fn, "__globals__", None))
            result = fn(*self_arg, *args, **kwargs)
        except BaseException:
            for name in self.tensor_attrs:  # the root is left as it was
                self.root.__dict__.pop(name, None)
            raise
        finally:
            patcher.restore()
            self._patcher = None
        self.create_node("output", "output", (self.create_arg(result),), {})
        return self.graph

    def _patch_globals(self, g):
        """A traced module's globals: ``from minidl import cat`` (or ``from math import sqrt``)
        names the function itself, which the wrapper replaces there too while tracing."""
        if g is None or id(g) in self._patched_globals or self._patcher is None:
            return
        self._patched_globals.add(id(g))
        for name, value in list(g.items()):
            if not name.startswith("__") and id(value) in self._wrappers \
                    and self._wrappers[id(value)].__wrapped__ is value:
                self._patcher.patch_dict(g, name, self._wrappers[id(value)])

    def _patch(self, patcher):
        tracer = self
        wrappers = self._wrappers = {}
        self._patched_globals = set()

        def wrapper_of(fn):
            if id(fn) not in wrappers:
                wrappers[id(fn)] = _function_wrapper(fn)
            return wrappers[id(fn)]

        for modname in _WRAPPED_MODULES:
            mod = importlib.import_module(modname)
            for name, value in list(vars(mod).items()):
                if name.startswith("_") or not inspect.isroutine(value):
                    continue
                patcher.patch_dict(vars(mod), name, wrapper_of(value))
        for g, name in _wrapped_globals:
            if name in g:
                patcher.patch_dict(g, name, wrapper_of(g[name]))
            elif hasattr(builtins, name):
                patcher.patch_dict(g, name, wrapper_of(getattr(builtins, name)))
        for mod in self.autowrap_modules:  # math.sqrt(proxy)
            for name, value in list(vars(mod).items()):
                if not name.startswith("_") and inspect.isroutine(value):
                    patcher.patch(mod, name, wrapper_of(value))
        for fn in self.autowrap_functions:
            g = fn.__globals__
            if g.get(fn.__name__) is fn:
                patcher.patch_dict(g, fn.__name__, wrapper_of(fn))
        orig_call = Module.__call__
        orig_getattr = Module.__getattr__
        cache = {}

        def module_call(mod, *args, **kwargs):
            return tracer.call_module(mod, lambda *a, **k: orig_call(mod, *a, **k), args, kwargs)

        def module_getattr(mod, name):
            return tracer.getattr(name, orig_getattr(mod, name), cache)

        patcher.patch(Module, "__call__", module_call)
        patcher.patch(Module, "__getattr__", module_getattr)
        for name in _TENSOR_BINARY:
            for dunder in (f"__{name}__", f"__r{name}__"):
                if dunder in Tensor.__dict__:
                    patcher.patch(Tensor, dunder, _tensor_op_wrapper(Tensor.__dict__[dunder]))
        for dunder in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
            if dunder in Tensor.__dict__:
                patcher.patch(Tensor, dunder, _tensor_op_wrapper(Tensor.__dict__[dunder]))
        for name, value in list(Tensor.__dict__.items()):
            if not name.startswith("_") and inspect.isfunction(value):
                patcher.patch(Tensor, name, _tensor_method_wrapper(name, value))
        patcher.patch(Tensor, "__getitem__", _tensor_getitem_wrapper(Tensor.__dict__["__getitem__"]))


def _as_positional(fn, nargs):
    """``fn`` with its *args, **kwargs and keyword-only arguments taken positionally."""
    co = fn.__code__
    code = co.replace(co_argcount=nargs, co_posonlyargcount=0, co_kwonlyargcount=0,
                      co_flags=co.co_flags & ~(inspect.CO_VARARGS | inspect.CO_VARKEYWORDS))
    return types.FunctionType(code, fn.__globals__, fn.__name__, None, fn.__closure__)


def symbolic_trace(root, concrete_args=None):
    """A ``GraphModule`` of ``root`` (a Module or a function), traced with Proxy inputs."""
    from .graph_module import GraphModule

    tracer = Tracer()
    graph = tracer.trace(root, concrete_args)
    name = type(root).__name__ if isinstance(root, Module) else root.__name__
    return GraphModule(tracer.root, graph, name)
