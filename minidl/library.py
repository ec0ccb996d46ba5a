"""``minidl.library``: torch.library's custom operators.

``custom_op("mylib::name", mutates_args=...)`` turns a function written with minidl's ops (or
with NumPy on ``x.numpy()``) into an operator: its schema comes from the type annotations, it
is reachable as ``minidl.ops.mylib.name`` (``.default`` its one overload), and it takes
``register_autograd`` (a backward and a setup_context, run as one autograd Function, so that
the op's gradient, and its second derivative where the backward is written with
differentiable ops, are minidl's), ``register_fake`` (a function that says what the outputs
look like, checked by ``opcheck``) and ``register_kernel`` (a kernel per device type, "cpu"
or "cuda"). ``Library(ns, "DEF" | "FRAGMENT" | "IMPL")`` with ``define(schema)`` and
``impl(name, fn, dispatch_key)`` is the older, schema-string way to the same operators.

What torch refuses is refused here too: names that are not ``namespace::name``, parameters
without a type annotation, mutates_args naming no parameter, an output that is (or is a view
of) an input, a second ``DEF`` library for one namespace, a gradient for an argument that is
not a Tensor. Mutating an input not declared in mutates_args is caught by ``opcheck``'s
test_schema, as torch's (a call does not check it).

Dispatch keys that mean something here: "CPU", "CUDA", "CompositeExplicitAutograd" (a
kernel: below autograd), "CompositeImplicitAutograd" (run as written: autograd records its
ops), "Autograd", "AutogradCPU", "AutogradCUDA" (a function that does its own autograd, such
as a ``Function.apply``) and "Meta" (the fake). minidl has no tracing compiler, so the fake
is used by ``opcheck`` only, and ``opcheck``'s test_aot_dispatch_* are refused.
"""
from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
import warnings

import numpy as np

from . import ops as _ops
from .autograd import Function
from .backend import get_array_module
from .backend.dtypes import is_floating
from .tensor import Tensor, is_grad_enabled, no_grad

__all__ = ["custom_op", "register_autograd", "register_fake", "register_kernel", "opcheck",
           "Library", "define", "impl", "infer_schema", "CustomOpDef", "OpCheckError"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DEVICE_TYPES = ("cpu", "cuda")
_TEST_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")
_KERNEL_KEYS = {"CPU": "cpu", "CUDA": "cuda", "CompositeExplicitAutograd": None}
_AUTOGRAD_KEYS = {"Autograd": None, "AutogradCPU": "cpu", "AutogradCUDA": "cuda"}


class OpCheckError(Exception):
    """What ``opcheck`` raises when one of its tests fails (torch's OpCheckError)."""


# ---- schemas -------------------------------------------------------------------------------

class _Arg:
    __slots__ = ("name", "type", "default", "kwarg_only", "mutable", "alias")

    def __init__(self, name, type_, default=inspect.Parameter.empty, kwarg_only=False,
                 mutable=False, alias="a"):
        self.name, self.type, self.default = name, type_, default
        self.kwarg_only, self.mutable, self.alias = kwarg_only, mutable, alias

    @property
    def has_default(self):
        return self.default is not inspect.Parameter.empty

    def __str__(self):
        t = self.type
        if self.mutable:  # Tensor(a!) / Tensor(a!)? / Tensor(a!)[]
            t = t.replace("Tensor", f"Tensor({self.alias}!)", 1)
        text = f"{t} {self.name}"
        if self.has_default:
            text += "=" + _default_text(self.default)
        return text


def _default_text(value):
    if value is None:
        return "None"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_default_text(v) for v in value) + "]"
    return str(value)


class Schema:
    """A parsed operator schema: ``args`` (each with name, type string, default, kwarg_only,
    mutable) and ``returns`` (type strings)."""

    def __init__(self, args, returns):
        self.args, self.returns = list(args), list(returns)
        self.positional = [a for a in self.args if not a.kwarg_only]

    def __str__(self):
        parts, star = [], False
        for a in self.args:
            if a.kwarg_only and not star:
                parts.append("*")
                star = True
            parts.append(str(a))
        if len(self.returns) == 1:
            ret = self.returns[0]
        else:
            ret = "(" + ", ".join(self.returns) + ")"
        return "(" + ", ".join(parts) + ") -> " + ret

    @property
    def is_functional(self):
        return not any(a.mutable for a in self.args)


_BASE_TYPES = {"Tensor", "int", "SymInt", "float", "bool", "str", "Scalar", "ScalarType",
               "Device", "Layout", "MemoryFormat", "Generator", "Any"}


def _split_top(text):
    """``text`` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_type(text, where):
    """A schema type string -> (normalized type, mutable, alias name)."""
    mutable, alias = False, "a"
    m = re.fullmatch(r"Tensor\(([a-z][a-z0-9]*)(!?)\)(.*)", text)
    if m:
        mutable, alias, text = m.group(2) == "!", m.group(1), "Tensor" + m.group(3)
    m = re.fullmatch(r"([A-Za-z]+)(\[\d*\])?(\?)?", text)
    if not m or m.group(1) not in _BASE_TYPES:
        raise RuntimeError(f"{where}: unknown type {text!r} in the schema")
    base = m.group(1)
    return base + ("[]" if m.group(2) else "") + (m.group(3) or ""), mutable, alias


def _parse_default(text, type_, where):
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    if text.startswith(("'", '"')) and text.endswith(text[0]) and len(text) >= 2:
        return text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_parse_default(p, type_[:-2], where) for p in _split_top(inner)] if inner else []
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise RuntimeError(f"{where}: cannot read the default value {text!r}") from None
    if type_.startswith("float") and isinstance(value, int):
        value = float(value)
    return value


def parse_schema(text, where="schema"):
    """``"(Tensor x, float a=2.0, *, bool flag=False) -> Tensor"`` -> Schema; a name in front
    (``"name.overload(...)"``) is returned too: (name or None, overload, Schema)."""
    text = text.strip()
    m = re.fullmatch(r"([^(]*)\((.*)\)\s*->\s*(.+)", text, re.S)
    if not m:
        raise RuntimeError(f"{where}: expected 'name(args) -> returns', got {text!r}")
    head, body, ret = m.group(1).strip(), m.group(2), m.group(3).strip()
    name = overload = None
    if head:
        name, _, overload = head.partition(".")
        if not _IDENT.match(name) or (overload and not _IDENT.match(overload)):
            raise RuntimeError(f"{where}: {head!r} is not a valid operator name")
    args, kwarg_only, seen = [], False, set()
    for part in _split_top(body):
        if part == "*":
            kwarg_only = True
            continue
        decl, eq, default = part.partition("=")
        pieces = decl.split()
        if len(pieces) != 2 or not _IDENT.match(pieces[1]):
            raise RuntimeError(f"{where}: cannot read the argument {part!r}")
        type_, mutable, alias = _parse_type(pieces[0], where)
        if pieces[1] in seen:
            raise RuntimeError(f"{where}: argument {pieces[1]!r} appears twice")
        seen.add(pieces[1])
        arg = _Arg(pieces[1], type_, kwarg_only=kwarg_only, mutable=mutable, alias=alias)
        if eq:
            arg.default = _parse_default(default.strip(), type_, where)
        args.append(arg)
    if ret.startswith("(") and ret.endswith(")"):
        rets = [r.split()[0] for r in _split_top(ret[1:-1])]
    else:
        rets = [ret.split()[0]]
    returns = [_parse_type(r, where)[0] for r in rets]
    return name, overload or "default", Schema(args, returns)


def _type_of_annotation(ann, where, what):
    """A Python type annotation -> schema type string (torch.library.infer_schema's table)."""
    origin, params = typing.get_origin(ann), typing.get_args(ann)
    if ann is Tensor:
        return "Tensor"
    if ann is int:
        return "SymInt"
    if ann in (float, bool, str):
        return ann.__name__
    if origin in (typing.Union, types.UnionType):
        rest = [p for p in params if p is not type(None)]
        if set(rest) == {int, float, bool} or set(rest) == {int, float}:
            return "Scalar" + ("?" if len(rest) < len(params) else "")
        if len(rest) == 1 and len(params) == 2:
            inner = _type_of_annotation(rest[0], where, what)
            if not inner.endswith("?"):
                return inner + "?"
    if origin in (list, collections.abc.Sequence, typing.Sequence, typing.List) and \
            len(params) == 1:
        inner = _type_of_annotation(params[0], where, what)
        if inner in ("Tensor", "SymInt", "float", "bool", "Tensor?"):
            return inner + "[]" if not inner.endswith("?") else "Tensor?[]"
    raise ValueError(f"{where}: {what} has unsupported type {ann}.")


def _return_types(ann, where):
    if ann is None or ann is type(None):
        return []
    if typing.get_origin(ann) is tuple:
        return [_type_of_annotation(a, where, "Return") for a in typing.get_args(ann)]
    return [_type_of_annotation(ann, where, "Return")]


def infer_schema(fn, *, mutates_args, op_name=None):
    """The schema of ``fn`` from its type annotations, as torch.library.infer_schema: a Tensor
    argument named in ``mutates_args`` (or every Tensor, for "unknown") is marked mutable."""
    sig = inspect.signature(fn)
    where = f"infer_schema(func): Got func with signature {sig}"
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 (an unresolved name: the raw annotations)
        hints = {}
    args = []
    for i, (pname, p) in enumerate(sig.parameters.items()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ValueError(f"infer_schema(func): We do not support *args or **kwargs. "
                             f"Got func with signature {sig})")
        ann = hints.get(pname, p.annotation)
        if ann is inspect.Parameter.empty:
            raise ValueError(f"infer_schema(func): Parameter {pname} must have a type "
                             f"annotation. Got func with signature {sig})")
        type_ = _type_of_annotation(ann, "infer_schema(func)", f"Parameter {pname}")
        mutable = (mutates_args == "unknown" and type_.startswith("Tensor")) or (
            mutates_args != "unknown" and pname in mutates_args)
        if mutable and not type_.startswith("Tensor"):
            raise ValueError(f"infer_schema(func): Parameter {pname} is in mutable_args but "
                             f"only Tensors or collections of Tensors can be mutated")
        args.append(_Arg(pname, type_, p.default, p.kind == p.KEYWORD_ONLY, mutable, f"a{i}"))
    if mutates_args != "unknown":
        missing = set(mutates_args) - set(sig.parameters)
        if missing:
            raise ValueError(f"infer_schema(func): {missing} in mutates_args were not found in "
                             "the custom op's signature. mutates_args should contain the names "
                             "of all args that the custom op mutates, or just the string "
                             f"'unknown' if you don't know. Got func with signature {sig})")
    ret = hints.get("return", sig.return_annotation)
    if ret is inspect.Signature.empty:
        raise ValueError(f"infer_schema(func): No return type annotation was provided. Please "
                         f"add one. Got func with signature {sig})")
    return str(Schema(args, _return_types(ret, where)))


# ---- the operator registry --------------------------------------------------------------------

_namespaces = {}  # name -> _OpNamespace
_def_namespaces = set()  # namespaces a Library("...", "DEF") holds


class _OpNamespace:
    """``minidl.ops.<namespace>``: its operators as attributes (OpOverloadPackets)."""

    def __init__(self, name):
        self.name, self._packets = name, {}

    def __getattr__(self, name):
        packet = self.__dict__.get("_packets", {}).get(name)
        # an operator is there once defined (an impl alone, before define, is not one: calling
        # it raised an empty RuntimeError)
        if packet is None or not packet.overloads():
            raise AttributeError(f"'_OpNamespace' '{self.name}' object has no attribute "
                                 f"'{name}'")
        return packet

    def __dir__(self):
        return sorted(n for n, p in self._packets.items() if p.overloads())

    def __repr__(self):
        return f"minidl.ops.{self.name}"


def _namespace(ns):
    space = _namespaces.get(ns)
    if space is None:
        space = _namespaces[ns] = _OpNamespace(ns)
        _ops.custom_namespaces[ns] = space
    return space


class OpOverloadPacket:
    """``minidl.ops.ns.name``: calling it calls the overload whose schema takes the arguments
    (``default`` first); ``.default`` and ``.<overload>`` are the overloads."""

    def __init__(self, ns, name):
        self._ns, self._name, self._overloads = ns, name, {}

    def __getattr__(self, name):
        found = self.__dict__.get("_overloads", {}).get(name)
        if found is None or found.schema is None:
            raise AttributeError(f"The underlying op of '{self._ns}.{self._name}' has no "
                                 f"overload name '{name}'")
        return found

    def overloads(self):
        return [n for n, o in self._overloads.items() if o.schema is not None]

    def __call__(self, *args, **kwargs):
        defined = [o for o in self._overloads.values() if o.schema is not None]
        defined.sort(key=lambda o: o.overload != "default")
        errors = []
        for op in defined:
            try:
                op.bind(args, kwargs)
            except RuntimeError as e:
                errors.append(str(e))
                continue
            return op(*args, **kwargs)
        if defined and _fx_proxy(args, kwargs) is not None:  # minidl.fx tracing: the first
            return defined[0](*args, **kwargs)  # overload records the call (default first)
        raise RuntimeError("\n".join(errors))

    def __repr__(self):
        return f"{self._ns}.{self._name}"


def _op(ns, name, overload="default"):
    """The OpOverload ``ns::name.overload``, made (without a schema) if new."""
    space = _namespace(ns)
    packet = space._packets.get(name)
    if packet is None:
        packet = space._packets[name] = OpOverloadPacket(ns, name)
    op = packet._overloads.get(overload)
    if op is None:
        op = packet._overloads[overload] = OpOverload(ns, name, overload)
    return op


def _split_qualname(qualname, who):
    if not isinstance(qualname, str):
        raise TypeError(f"{who}: the operator's name must be a string 'namespace::name', got "
                        f"{type(qualname).__name__}")
    parts = qualname.split("::")
    if len(parts) != 2:
        raise ValueError(f"{who}: expected the operator's name as 'namespace::name', got "
                         f"{qualname!r}")
    ns, rest = parts
    name, _, overload = rest.partition(".")
    if not _IDENT.match(ns) or not _IDENT.match(name) or (overload and not _IDENT.match(
            overload)):
        raise RuntimeError(f"{who}: {qualname!r} is not a valid operator name (namespace and "
                           "name must be identifiers)")
    if overload == "default":
        raise RuntimeError("default is not a legal overload name for aten operators")
    return ns, name, overload or "default"


def _device_of(args, kwargs):
    for t in _tensors_in((*args, *kwargs.values())):
        return "cuda" if str(t.device).startswith("cuda") else "cpu"
    return "cpu"


def _tensors_in(values):
    for v in values:
        if isinstance(v, Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            for item in v:
                if isinstance(item, Tensor):
                    yield item


def _check_value(op, arg, value, position):
    """torch's argument check: ``value`` fits ``arg``'s schema type."""
    type_ = arg.type
    if value is None and (type_.endswith("?") or arg.default is None and arg.has_default):
        return
    base = type_.rstrip("?")
    if base.endswith("[]"):
        ok = isinstance(value, (list, tuple)) and all(
            _fits(base[:-2], v) for v in value)
        if base[:-2] in ("SymInt", "int", "float", "bool") and _fits(base[:-2], value):
            ok = True  # a number for an int[] broadcasts, as torch's int[2]
    else:
        ok = _fits(base, value)
    if not ok:
        raise RuntimeError(f"{op.qualname}() Expected a value of type '{type_}' for argument "
                           f"'{arg.name}' but instead found type '{type(value).__name__}'.\n"
                           f"Position: {position}\nValue: {value!r}\nDeclaration: "
                           f"{op.qualname}{op.schema}")


def _fits(base, value):
    if base == "Tensor":
        return isinstance(value, Tensor)
    if base == "Tensor?":
        return value is None or isinstance(value, Tensor)
    if base in ("int", "SymInt"):
        return isinstance(value, (int, np.integer))
    if base == "float":
        return isinstance(value, (int, float, np.integer, np.floating))
    if base == "bool":
        return isinstance(value, (bool, np.bool_))
    if base == "str":
        return isinstance(value, str)
    if base == "Scalar":
        return isinstance(value, (int, float, complex, bool, np.number, np.bool_))
    return True  # ScalarType, Device, Layout, ...: passed as they are


class OpOverload:
    """One operator (``minidl.ops.ns.name.default``): its schema, kernels per device type,
    autograd formula and fake. Calling it dispatches as torch's dispatcher does: autograd
    first (when an input requires grad), then the kernel of the inputs' device."""

    def __init__(self, ns, name, overload):
        self.ns, self.name, self.overload = ns, name, overload
        self.schema = None
        self.kernels = {}  # device type ("cpu", "cuda") or None (every device) -> fn
        self.composite = None  # CompositeImplicitAutograd: run as written, autograd records it
        self.autograd_kernels = {}  # device type or None -> fn doing its own autograd
        self.backward = self.setup_context = None
        self.fake = None
        self.from_custom_op = False  # an op of custom_op: no autograd formula -> backward error
        self._function = None
        self._warned = False
        self.__name__ = f"{name}_{overload}"  # fx names its node and the code's global so

    @property
    def qualname(self):
        return f"{self.ns}::{self.name}"

    def __repr__(self):
        return f"{self.ns}.{self.name}.{self.overload}"

    @property
    def _schema(self):
        return f"{self.qualname}{'' if self.overload == 'default' else '.' + self.overload}" \
               f"{self.schema}"

    def bind(self, args, kwargs):
        """(positional values, keyword-only values) in schema order, defaults filled in."""
        if self.schema is None:
            raise RuntimeError(f"{self.qualname}: the operator has no schema (define it first)")
        positional, kw_only = self.schema.positional, [a for a in self.schema.args
                                                       if a.kwarg_only]
        if len(args) > len(positional):
            raise RuntimeError(f"{self.qualname}() expected at most {len(positional)} "
                               f"argument(s) but received {len(args)} argument(s). "
                               f"Declaration: {self._schema}")
        known = {a.name for a in self.schema.args}
        for key in kwargs:
            if key not in known:
                raise RuntimeError(f"{self.qualname}() got an unexpected keyword argument "
                                   f"'{key}'. Declaration: {self._schema}")
        values, kw_values = [], {}
        for i, arg in enumerate(positional):
            if i < len(args):
                if arg.name in kwargs:
                    raise RuntimeError(f"{self.qualname}() got multiple values for argument "
                                       f"'{arg.name}'")
                value = args[i]
            else:
                value = self._keyword_value(arg, kwargs)
            _check_value(self, arg, value, i)
            values.append(value)
        for arg in kw_only:
            value = self._keyword_value(arg, kwargs)
            _check_value(self, arg, value, arg.name)
            kw_values[arg.name] = value
        return values, kw_values

    def _keyword_value(self, arg, kwargs):
        """``arg``'s value from the keywords, else its default; refused when it has neither."""
        if arg.name in kwargs:
            return kwargs[arg.name]
        if arg.has_default:
            return arg.default
        raise RuntimeError(f"{self.qualname}() is missing value for argument '{arg.name}'. "
                           f"Declaration: {self._schema}")

    # -- dispatch --
    def kernel_for(self, device):
        fn = self.kernels.get(device, self.kernels.get(None))
        if fn is None:
            raise NotImplementedError(
                f"Could not run '{self.qualname}' with arguments from the "
                f"'{device.upper()}' backend: it has kernels for "
                f"{sorted(d or 'every device' for d in self.kernels) or 'no device'}")
        return fn

    def __call__(self, *args, **kwargs):
        try:
            values, kw_values = self.bind(args, kwargs)
        except RuntimeError:
            proxy = _fx_proxy(args, kwargs)
            if proxy is None:
                raise
            # inside minidl.fx tracing: one call_function node of this op, as torch.fx records
            # torch.ops.ns.name.default (the checks run again when the graph runs)
            return proxy.tracer.create_proxy("call_function", self, args, kwargs)
        device = _device_of(values, kw_values)
        auto = self.autograd_kernels.get(device, self.autograd_kernels.get(None))
        if auto is not None:  # a function that does its own autograd
            return auto(*values, **kw_values)
        if self.composite is not None and device not in self.kernels and None not in \
                self.kernels:  # run as written: autograd records its ops
            return self.composite(*values, **kw_values)
        # an op that returns nothing (only mutates its arguments) has no output to record, as
        # torch's: it runs as without grad instead of failing after its kernel has written
        wants_grad = bool(self.schema.returns) and is_grad_enabled() and any(
            t.requires_grad for t in _tensors_in((*values, *kw_values.values())))
        if wants_grad and (self.backward is not None or self.from_custom_op):
            return _apply_autograd(self, values, kw_values, device)
        if wants_grad:  # a kernel and no formula: torch warns and records what the kernel does
            if not self._warned:
                warnings.warn(f"{self.qualname}: an autograd kernel was not registered to the "
                              "Autograd key(s) but we are trying to backprop through it; the "
                              "ops of its kernel are recorded instead (register_autograd gives "
                              "it a formula)", UserWarning, stacklevel=2)
                self._warned = True
            return _check_returns(self, self.kernel_for(device)(*values, **kw_values))
        with no_grad():
            out = self.kernel_for(device)(*values, **kw_values)
        _check_returns(self, out)
        _check_no_alias(self, values, kw_values, out)
        return out


def _check_returns(op, out):
    """``out`` as the schema's Tensor returns have it (a Tensor, a list of them, one value per
    return), or torch's error: a kernel's NumPy array or short tuple is no result."""
    returns = op.schema.returns
    if not returns:
        return out
    if len(returns) > 1 and (not isinstance(out, (tuple, list)) or len(out) != len(returns)):
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else type(out).__name__
        raise RuntimeError(f"{op.qualname}: its kernel returned {got}, but the schema "
                           f"{op._schema} returns {len(returns)}")
    for r, value in zip(returns, (out,) if len(returns) == 1 else out):
        if r.endswith("?") and value is None:
            continue
        kind = r.rstrip("?")
        if kind == "Tensor" and not isinstance(value, Tensor):
            raise RuntimeError(f"{op.qualname}: Unable to cast {type(value).__name__} to Tensor "
                               f"(its kernel must return a Tensor: {op._schema})")
        if kind == "Tensor[]" and not (isinstance(value, (list, tuple)) and all(
                isinstance(t, Tensor) for t in value)):
            raise RuntimeError(f"{op.qualname}: its kernel must return a list of Tensors for "
                               f"{r} ({op._schema}), got {type(value).__name__}")
    return out


def _fx_proxy(args, kwargs):
    """The first minidl.fx Proxy among the arguments (inside lists too), or None; known by its
    class's marker, so that this module needs no import of minidl.fx."""
    for value in (*args, *kwargs.values()):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if getattr(type(item), "_is_fx_proxy", False) is True:
                return item
    return None


def _flat_outputs(out):
    """The Tensors of an op's result, and how to rebuild it from them."""
    if isinstance(out, Tensor):
        return [out], lambda ts: ts[0]
    if isinstance(out, (tuple, list)):
        flat, shape = [], []
        for item in out:
            if isinstance(item, (list, tuple)):
                shape.append(len(item))
                flat.extend(item)
            else:
                shape.append(None)
                flat.append(item)

        def rebuild(ts, kind=type(out)):
            parts, it = [], iter(ts)
            for n in shape:
                parts.append(next(it) if n is None else [next(it) for _ in range(n)])
            return kind(parts)

        return flat, rebuild
    return [], lambda ts: out


def _check_no_alias(op, values, kw_values, out):
    inputs = [t.data for t in _tensors_in((*values, *kw_values.values()))]
    outs, _ = _flat_outputs(out)
    outs = [o for o in outs if isinstance(o, Tensor)]
    for i, o in enumerate(outs):
        data = o.data
        if not isinstance(data, np.ndarray) and not hasattr(data, "data"):
            continue
        xp = get_array_module(data)
        others = inputs + [p.data for p in outs[:i]]
        if any(type(d) is type(data) and xp.may_share_memory(data, d) and data.size and d.size
               for d in others):
            raise RuntimeError(
                f"{op.qualname}: The output of this custom operator (1) must not also be an "
                "input to this custom operator and (2) may not alias any inputs to this custom "
                "operator or other returns. The most common way to trigger this error is if we "
                "have y = custom_op(x) and y and x are the same Tensor. Please instead return a "
                "clone of the offending output tensor(s) (e.g. return x.clone()) or refactor "
                "the custom operator to not return y.")


class _Call:
    """The non-Tensor parts of one call, for the autograd Function: the Tensors travel as its
    arguments and are put back in place here."""

    def __init__(self, values, kw_values):
        self.values, self.kw_values = values, kw_values
        self.slots = []  # (where, index, index in a list or None)
        tensors = []
        for where, items in (("pos", list(enumerate(values))),
                             ("kw", list(kw_values.items()))):
            for key, v in items:
                if isinstance(v, Tensor):
                    self.slots.append((where, key, None))
                    tensors.append(v)
                elif isinstance(v, (list, tuple)):
                    for j, item in enumerate(v):
                        if isinstance(item, Tensor):
                            self.slots.append((where, key, j))
                            tensors.append(item)
        self.tensors = tensors

    def rebuild(self, tensors):
        values = [list(v) if isinstance(v, (list, tuple)) else v for v in self.values]
        kw = {k: list(v) if isinstance(v, (list, tuple)) else v
              for k, v in self.kw_values.items()}
        for (where, key, j), t in zip(self.slots, tensors):
            store = values if where == "pos" else kw
            if j is None:
                store[key] = t
            else:
                store[key][j] = t
        for i, v in enumerate(self.values):  # a tuple stays a tuple
            if isinstance(v, tuple):
                values[i] = tuple(values[i])
        return values, kw


def _generated_function(op):
    if op._function is not None:
        return op._function

    def forward(ctx, call, device, *tensors):
        values, kw = call.rebuild(tensors)
        out = _check_returns(op, op.kernel_for(device)(*values, **kw))
        _check_no_alias(op, values, kw, out)
        ctx.needs_input_grad = tuple(
            (isinstance(v, Tensor) and v.requires_grad) or (isinstance(v, (list, tuple)) and any(
                isinstance(t, Tensor) and t.requires_grad for t in v)) for v in call.values)
        if op.setup_context is not None:
            if any(a.kwarg_only for a in op.schema.args):
                op.setup_context(ctx=ctx, inputs=tuple(values), keyword_only_inputs=kw,
                                 output=out)
            else:
                op.setup_context(ctx=ctx, inputs=tuple(values), output=out)
        flat, rebuild = _flat_outputs(out)
        if not flat or not all(isinstance(t, Tensor) for t in flat):
            raise RuntimeError(f"{op.qualname}: an operator with an autograd formula must "
                               "return Tensors (or lists of them)")
        ctx._op_call, ctx._op_rebuild, ctx._op_single = call, rebuild, isinstance(out, Tensor)
        return flat[0] if len(flat) == 1 and isinstance(out, Tensor) else tuple(flat)

    def backward(ctx, *grads):
        call = ctx._op_call
        if op.backward is None:
            raise RuntimeError(f"Trying to backward through {op} but no autograd formula was "
                               "registered. Please use register_autograd to add one.")
        structured = grads if ctx._op_single else ctx._op_rebuild(list(grads))
        result = op.backward(ctx, *((structured[0],) if ctx._op_single else structured))
        n = len(call.values)
        result = result if isinstance(result, tuple) else (result,)
        if len(result) != n:
            raise RuntimeError(f"function {type(ctx).__name__} returned an incorrect number of "
                               f"gradients (expected {n}, got {len(result)})")
        for i, (g, v) in enumerate(zip(result, call.values)):
            is_tensor = isinstance(v, Tensor) or (isinstance(v, (list, tuple)) and any(
                isinstance(t, Tensor) for t in v))
            if g is not None and not is_tensor:
                raise RuntimeError(f"function {type(ctx).__name__} returned a gradient "
                                   f"different than None at position {i + 1}, but the "
                                   "corresponding forward input was not a Variable")
        flat = []
        for where, key, j in call.slots:
            if where == "kw":
                flat.append(None)  # keyword-only Tensors take no gradient, as torch's
                continue
            g = result[key]
            if j is not None:
                g = None if g is None else g[j]
            flat.append(g)
        return (None, None, *flat)

    name = f"GeneratedBackwardFor_{op.ns}_{op.name}_{op.overload}"
    op._function = type(name, (Function,), {"forward": staticmethod(forward),
                                            "backward": staticmethod(backward)})
    return op._function


def _apply_autograd(op, values, kw_values, device):
    call = _Call(values, kw_values)
    out = _generated_function(op).apply(call, device, *call.tensors)
    flat = list(out) if isinstance(out, tuple) else [out]
    # rebuilt in the op's own structure (a list return, a tuple of a Tensor and a list)
    return flat[0] if len(flat) == 1 and _single_return(op) else _rebuild_like(op, flat)


def _single_return(op):
    return len(op.schema.returns) == 1 and not op.schema.returns[0].endswith("[]")


def _rebuild_like(op, flat):
    parts, it = [], iter(flat)
    for r in op.schema.returns:
        if r.endswith("[]"):
            parts.append(list(it))  # a list return is the last Tensor list (torch allows one)
        else:
            parts.append(next(it))
    if len(op.schema.returns) == 1:
        return parts[0]
    return tuple(parts)


# ---- custom_op --------------------------------------------------------------------------------

class CustomOpDef:
    """What ``custom_op`` returns: call it as the function it wraps; ``register_autograd``,
    ``register_fake`` and ``register_kernel`` as methods; ``_opoverload`` is
    ``minidl.ops.ns.name.default``."""

    def __init__(self, op, fn):
        self._opoverload, self._init_fn = op, fn
        self._name, self._namespace = op.name, op.ns
        self.__name__, self.__doc__ = getattr(fn, "__name__", op.name), fn.__doc__
        self._schema = op.schema

    def __call__(self, *args, **kwargs):
        return self._opoverload(*args, **kwargs)

    def __repr__(self):
        return f"<CustomOpDef({self._opoverload.qualname})>"

    def register_autograd(self, backward, /, *, setup_context=None):
        register_autograd(self, backward, setup_context=setup_context)

    def register_fake(self, fn=None, /):
        return register_fake(self, fn)

    def register_kernel(self, device_types, fn=None, /):
        return register_kernel(self, device_types, fn)


def _device_types(device_types, who):
    if device_types is None:
        return [None]
    items = [device_types] if isinstance(device_types, str) else list(device_types)
    for d in items:
        if d not in _DEVICE_TYPES:
            raise ValueError(f"{who}: unknown device type {d!r}; minidl's are "
                             f"{', '.join(_DEVICE_TYPES)}")
    return items


def custom_op(name, fn=None, /, *, mutates_args, device_types=None, schema=None, tags=None):
    """torch.library.custom_op: ``@custom_op("mylib::name", mutates_args=())`` over a function
    with type annotations (or ``schema=``) makes an operator of it; see the module docstring."""
    ns, opname, overload = _split_qualname(name, "custom_op")
    if isinstance(mutates_args, str) and mutates_args != "unknown":
        raise ValueError(f"custom_op: mutates_args must be a sequence of names or 'unknown', got "
                         f"{mutates_args!r}")
    if mutates_args != "unknown":
        mutates_args = tuple(mutates_args)
    devices = _device_types(device_types, "custom_op")

    def make(fn):
        if not callable(fn):
            raise TypeError(f"custom_op: expected a function, got {type(fn).__name__}")
        text = schema if schema is not None else infer_schema(fn, mutates_args=mutates_args)
        _, _, parsed = parse_schema(text, "custom_op")
        op = _op(ns, opname, overload)
        op.schema, op.from_custom_op = parsed, True
        op.kernels, op.composite, op.autograd_kernels = {}, None, {}
        op.backward = op.setup_context = op.fake = None
        op._function = None
        for d in devices:
            op.kernels[d] = fn
        return CustomOpDef(op, fn)

    return make if fn is None else make(fn)


def _resolve(op, who):
    if isinstance(op, CustomOpDef):
        return op._opoverload
    if isinstance(op, OpOverload):
        return op
    if isinstance(op, OpOverloadPacket):
        return op._overloads["default"] if "default" in op._overloads else next(
            iter(op._overloads.values()))
    if isinstance(op, str):
        ns, name, overload = _split_qualname(op, who)
        found = _namespaces.get(ns)
        packet = found._packets.get(name) if found is not None else None
        if packet is None or overload not in packet._overloads or \
                packet._overloads[overload].schema is None:
            raise ValueError(f"{who}: there is no operator {op!r} (define it with custom_op or "
                             "Library.define first)")
        return packet._overloads[overload]
    raise TypeError(f"{who}: expected a custom op, an OpOverload or a 'namespace::name' string, "
                    f"got {type(op).__name__}")


def register_autograd(op, backward, /, *, setup_context=None, lib=None):
    """``backward(ctx, *grads) -> one gradient per positional input`` (None for non-Tensors),
    with ``setup_context(ctx, inputs, output)`` (``keyword_only_inputs`` too where the op has
    keyword-only arguments) run after the forward to save what backward needs."""
    target = _resolve(op, "register_autograd")
    if not callable(backward) or (setup_context is not None and not callable(setup_context)):
        raise TypeError("register_autograd: backward and setup_context must be callable")
    if not target.schema.is_functional:
        raise RuntimeError(f"Cannot register autograd formula for non-functional operator "
                           f"{target.qualname} with schema {target.schema}. Please create a "
                           "functional operator and register an autograd formula for that.")
    if setup_context is not None:
        params = inspect.signature(setup_context).parameters
        kw_only = any(a.kwarg_only for a in target.schema.args)
        needed = {"ctx", "inputs", "output"} | ({"keyword_only_inputs"} if kw_only else set())
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()) and \
                not needed <= set(params):
            raise TypeError(f"register_autograd: setup_context must take "
                            f"({', '.join(sorted(needed))}) by name; it takes "
                            f"({', '.join(params)})")
    target.backward, target.setup_context = backward, setup_context


def register_fake(op, fn=None, /, *, lib=None, _stacklevel=1, allow_override=True):
    """The fake of ``op``: ``fn(*args)`` returns Tensors of the outputs' shapes, dtypes and
    devices (``minidl.empty_like(x)``); ``opcheck`` compares it with the real outputs. As a
    decorator without ``fn``."""
    target = _resolve(op, "register_fake")

    def put(fn):
        if not callable(fn):
            raise TypeError(f"register_fake: expected a function, got {type(fn).__name__}")
        if target.fake is not None and not allow_override:
            raise RuntimeError(f"register_fake: {target.qualname} already has a fake")
        target.fake = fn
        return fn

    return put if fn is None else put(fn)


def register_kernel(op, device_types, fn=None, /, *, lib=None):
    """A kernel of ``op`` for ``device_types`` ("cpu", "cuda", a list of them, or None: every
    device), used in place of the op's own function there. As a decorator without ``fn``."""
    target = _resolve(op, "register_kernel")
    devices = _device_types(device_types, "register_kernel")

    def put(fn):
        if not callable(fn):
            raise TypeError(f"register_kernel: expected a function, got {type(fn).__name__}")
        for d in devices:
            target.kernels[d] = fn
        return fn

    return put if fn is None else put(fn)


# ---- Library ----------------------------------------------------------------------------------

class Library:
    """torch.library.Library: ``Library("mylib", "DEF")`` (the one library defining a
    namespace), ``"FRAGMENT"`` (more definitions) or ``"IMPL"`` (implementations only, of a
    ``dispatch_key`` given here or per ``impl``)."""

    def __init__(self, ns, kind, dispatch_key=""):
        if kind not in ("IMPL", "DEF", "FRAGMENT"):
            raise ValueError(f"Unsupported kind: {kind}")
        if not isinstance(ns, str) or not _IDENT.match(ns):
            raise ValueError(f"Library: the namespace must be an identifier, got {ns!r}")
        if kind == "DEF":
            if ns in _def_namespaces:
                raise RuntimeError(
                    f"Only a single TORCH_LIBRARY can be used to register the namespace {ns}; "
                    "please put all of your definitions in a single TORCH_LIBRARY block. If "
                    "you were trying to specify implementations, consider using "
                    "TORCH_LIBRARY_IMPL (Library(ns, 'IMPL')); to add definitions, "
                    "Library(ns, 'FRAGMENT')")
            _def_namespaces.add(ns)
        self.ns, self.kind, self.dispatch_key = ns, kind, dispatch_key
        self._defined, self._impls = [], []

    def __repr__(self):
        return f"Library(kind={self.kind}, ns={self.ns}, dispatch_key={self.dispatch_key})"

    def define(self, schema, alias_analysis="", *, tags=()):
        """Define an operator from a schema string ``"name(Tensor x, float a=2.0) -> Tensor"``;
        returns its name."""
        if self.kind == "IMPL":
            raise RuntimeError(f'def("{schema.split("(")[0]}"): Cannot define an operator '
                               "inside of a TORCH_LIBRARY_IMPL block. All def()s should be "
                               "placed in the (unique) TORCH_LIBRARY block for their namespace.")
        name, overload, parsed = parse_schema(schema, "Library.define")
        if name is None:
            raise RuntimeError(f"Library.define: the schema must start with the operator's "
                               f"name, got {schema!r}")
        op = _op(self.ns, name, overload)
        if op.schema is not None:
            raise RuntimeError(f"Tried to register an operator ({self.ns}::{name}"
                               f"{parsed}) with the same name and overload name multiple "
                               "times. Each overload's schema should only be registered with "
                               "a single call to def().")
        op.schema = parsed
        self._defined.append(op)
        return name

    def impl(self, op_name, fn, dispatch_key="", *, with_keyset=False, allow_override=True):
        """Register ``fn`` for ``op_name`` (``"name"``, ``"name.overload"`` or an OpOverload)
        under ``dispatch_key`` (this library's where not given; CompositeImplicitAutograd
        where neither is)."""
        if with_keyset:
            raise NotImplementedError("Library.impl: with_keyset=True needs torch's dispatch "
                                      "key sets, which minidl does not have")
        if not callable(fn):
            raise TypeError(f"Library.impl: expected a function, got {type(fn).__name__}")
        key = dispatch_key or self.dispatch_key or "CompositeImplicitAutograd"
        if isinstance(op_name, (OpOverload, CustomOpDef)):
            op = _resolve(op_name, "Library.impl")
        else:
            if not isinstance(op_name, str):
                raise TypeError(f"Library.impl: expected an operator name, got "
                                f"{type(op_name).__name__}")
            text = op_name.split("::")[-1]
            name, _, overload = text.partition(".")
            if not _IDENT.match(name) or (overload and not _IDENT.match(overload)):
                raise ValueError(f"Library.impl: {op_name!r} is not an operator name")
            op = _op(self.ns, name, overload or "default")  # may be defined later, as torch
        _register_impl(op, fn, key)
        self._impls.append((op, key))

    def fallback(self, fn, dispatch_key="", *, with_keyset=False):
        raise NotImplementedError("Library.fallback: minidl has no boxed fallbacks")

    def _destroy(self):
        for op in self._defined:
            op.schema = None
        for op, key in self._impls:
            _register_impl(op, None, key)
        if self.kind == "DEF":
            _def_namespaces.discard(self.ns)


def _register_impl(op, fn, key):
    if key in _KERNEL_KEYS:
        store, device = op.kernels, _KERNEL_KEYS[key]
    elif key in _AUTOGRAD_KEYS:
        store, device = op.autograd_kernels, _AUTOGRAD_KEYS[key]
    elif key == "CompositeImplicitAutograd":
        op.composite = fn
        return
    elif key == "Meta":
        op.fake = fn
        return
    else:
        raise ValueError(f"Library.impl: dispatch key {key!r} is not one minidl runs (CPU, "
                         "CUDA, CompositeExplicitAutograd, CompositeImplicitAutograd, Autograd, "
                         "AutogradCPU, AutogradCUDA, Meta)")
    if fn is None:
        store.pop(device, None)
    else:
        store[device] = fn


def define(qualname, schema, *, lib=None, tags=()):
    """torch.library.define: ``define("mylib::name", "(Tensor x) -> Tensor")``."""
    ns, name, overload = _split_qualname(qualname, "define")
    library = lib if lib is not None else Library(ns, "FRAGMENT")
    head = name if overload == "default" else f"{name}.{overload}"
    library.define(head + schema, tags=tags)


def impl(qualname, types, func=None, *, lib=None):
    """torch.library.impl: ``impl("mylib::name", "cpu", fn)`` (or as a decorator): a kernel
    for the device types ("cpu", "cuda", "default" for every one), or a dispatch key name."""
    if isinstance(types, str) and types not in _DEVICE_TYPES and types != "default":
        key = types  # a dispatch key, as torch's
        ns, name, overload = _split_qualname(qualname, "impl")

        def put_key(fn):
            _register_impl(_op(ns, name, overload), fn, key)
            return fn

        return put_key if func is None else put_key(func)
    target = _resolve(qualname, "impl")
    devices = [None] if types == "default" else _device_types(types, "impl")

    def put(fn):
        for d in devices:
            target.kernels[d] = fn
        return fn

    return put if func is None else put(func)


# ---- opcheck ----------------------------------------------------------------------------------

def _cloned(value):
    if isinstance(value, Tensor):
        c = value.detach().clone()
        c.requires_grad_(value.requires_grad)
        return c
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(v) for v in value)
    return value


def _test_schema(op, args, kwargs):
    values, kw = op.bind(args, kwargs)
    values, kw = _cloned(values), _cloned(kw)
    before = {id(t): t.numpy().copy() for t in _tensors_in((*values, *kw.values()))}
    with no_grad():
        op(*values, **kw)
    for arg, value in zip(op.schema.args, (*values, *[kw[a.name] for a in op.schema.args
                                                       if a.kwarg_only])):
        if arg.mutable:
            continue
        for t in _tensors_in([value]):
            if not np.array_equal(before[id(t)], t.numpy(), equal_nan=True):
                raise RuntimeError(f"Argument {arg.name} is not defined as mutable but was "
                                   "mutated")


def _test_autograd_registration(op, args, kwargs):
    values, kw = op.bind(args, kwargs)
    tensors = list(_tensors_in((*values, *kw.values())))
    if not any(t.requires_grad for t in tensors):
        return
    has_formula = (op.backward is not None or op.autograd_kernels or
                   (op.composite is not None and not op.kernels))
    if not has_formula:
        raise AssertionError(f"{op.qualname}: an input requires grad but the operator has no "
                             "autograd formula (register_autograd): its backward would fail")
    grad_inputs = [t for t in tensors if t.requires_grad]
    if not all(t.dtype in (np.float64, np.complex128) for t in grad_inputs):
        return  # the finite-difference check needs double precision, as torch's gradcheck
    from .testing import gradcheck

    call = _Call(values, kw)
    which = [i for i, t in enumerate(call.tensors) if t.requires_grad]

    def run(*leaves):
        ts = list(call.tensors)
        for i, leaf in zip(which, leaves):
            ts[i] = leaf
        v, k = call.rebuild(ts)
        out = op(*v, **k)
        flat, _ = _flat_outputs(out)
        flat = [o for o in flat if isinstance(o, Tensor) and is_floating(o.dtype)]
        return flat[0] if len(flat) == 1 else tuple(flat)

    leaves = [call.tensors[i].detach().clone().requires_grad_(True) for i in which]
    gradcheck(run, leaves)


def _test_faketensor(op, args, kwargs):
    if op.fake is None:
        raise RuntimeError(f"There was no fake impl registered for <CustomOpDef({op.qualname})>. "
                           "This is necessary for torch.compile/export/fx tracing to work. "
                           f"Please use `{op.name}.register_fake` to add an fake impl.")
    values, kw = op.bind(args, kwargs)
    with no_grad():
        real = op(*_cloned(values), **_cloned(kw))
        fake = op.fake(*_cloned(values), **_cloned(kw))
    real_flat, _ = _flat_outputs(real)
    fake_flat, _ = _flat_outputs(fake)
    if len(real_flat) != len(fake_flat):
        raise RuntimeError(f"{op.qualname}: the fake returned {len(fake_flat)} outputs, the "
                           f"operator {len(real_flat)}")
    for i, (r, f) in enumerate(zip(real_flat, fake_flat)):
        if isinstance(r, Tensor) != isinstance(f, Tensor):
            raise RuntimeError(f"{op.qualname}: output {i} is a {type(r).__name__}, its fake a "
                               f"{type(f).__name__}")
        if isinstance(r, Tensor) and (tuple(r.shape) != tuple(f.shape) or r.dtype != f.dtype
                                      or str(r.device) != str(f.device)):
            raise RuntimeError(f"{op.qualname}: output {i} has shape {tuple(r.shape)}, dtype "
                               f"{r.dtype} on {r.device}, but the fake says {tuple(f.shape)}, "
                               f"{f.dtype} on {f.device}")


_TESTS = {"test_schema": _test_schema, "test_autograd_registration": _test_autograd_registration,
          "test_faketensor": _test_faketensor}


def opcheck(op, args, kwargs=None, *, test_utils=_TEST_UTILS, raise_exception=True, atol=None,
            rtol=None):
    """torch.library.opcheck's tests that mean something without a compiler: test_schema (no
    input mutated that the schema does not declare mutable; no output aliasing an input),
    test_autograd_registration (an input that requires grad has an autograd formula to go
    through, and, where those inputs are float64, the formula agrees with finite differences)
    and test_faketensor (the fake's outputs have the real ones' shapes, dtypes and devices).
    Returns ``{test: "SUCCESS" or the exception}``; raises OpCheckError on the first failure
    with ``raise_exception``."""
    target = _resolve(op, "opcheck")
    kwargs = {} if kwargs is None else kwargs
    names = (test_utils,) if isinstance(test_utils, str) else tuple(test_utils)
    known = (*_TEST_UTILS, "test_aot_dispatch_static", "test_aot_dispatch_dynamic")
    if not set(names) <= set(known):
        raise ValueError(f"opcheck(op, ..., test_utils={names}), expected test_utils to be "
                         f"subset of {known} but it was not")
    aot = [n for n in names if n.startswith("test_aot")]
    if aot:
        raise ValueError(f"opcheck: {', '.join(aot)} checks torch.compile's AOT dispatcher; "
                         f"minidl has no compiler: leave them out of test_utils")
    results = {}
    for name in names:
        try:
            _TESTS[name](target, args, kwargs)
        except Exception as e:  # noqa: BLE001 (every failure is reported, by test)
            if raise_exception:
                raise OpCheckError(f"opcheck(op, ...): {name} failed with {e}") from e
            results[name] = e
            continue
        results[name] = "SUCCESS"
    return results
