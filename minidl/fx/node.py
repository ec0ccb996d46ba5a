"""``Node``: one operation of an fx ``Graph`` (torch.fx.Node's meaning)."""
import builtins
import importlib
import operator

from ._paths import _public_path

__all__ = ["Node", "map_arg", "map_aggregate", "Argument"]

Argument = object  # any value a node's args may hold: nodes, constants, and lists/tuples/dicts of them

_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output", "root")


def _no_mutation(self, *args, **kwargs):
    raise NotImplementedError(f"'{type(self).__name__}' object does not support mutation. If you are "
                              f"attempting to modify the kwargs or args of a minidl.fx.Node object, "
                              f"instead create a new copy of it and assign the copy to the node.")


class immutable_list(list):
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _no_mutation
    append = extend = insert = pop = remove = clear = sort = reverse = _no_mutation

    def __reduce__(self):
        return (immutable_list, (list(self),))

    def __hash__(self):
        return hash(tuple(self))


class immutable_dict(dict):
    __setitem__ = __delitem__ = __ior__ = _no_mutation
    update = pop = popitem = clear = setdefault = _no_mutation

    def __reduce__(self):
        return (immutable_dict, (dict(self),))

    def __hash__(self):
        return hash(tuple(self.items()))


def _freeze(a):
    if isinstance(a, list):
        return immutable_list(_freeze(e) for e in a)
    if isinstance(a, dict):
        return immutable_dict((k, _freeze(v)) for k, v in a.items())
    if isinstance(a, tuple) and not hasattr(a, "_fields"):
        return tuple(_freeze(e) for e in a)
    return a


def map_aggregate(a, fn):
    """``fn`` applied to every leaf of ``a`` (tuples, lists, dicts and slices are walked into)."""
    if isinstance(a, tuple):
        mapped = tuple(map_aggregate(e, fn) for e in a)
        return type(a)(*mapped) if hasattr(a, "_fields") else mapped
    if isinstance(a, list):
        return [map_aggregate(e, fn) for e in a]
    if isinstance(a, dict):
        return {k: map_aggregate(v, fn) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(map_aggregate(a.start, fn), map_aggregate(a.stop, fn), map_aggregate(a.step, fn))
    return fn(a)


def map_arg(a, fn):
    """``fn`` applied to every ``Node`` inside ``a``; other leaves kept."""
    return map_aggregate(a, lambda x: fn(x) if isinstance(x, Node) else x)


def _target_name(target):
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or repr(target)
    if target is getattr(operator, name, None):
        return f"operator.{name}"
    if target is getattr(builtins, name, None):
        return name
    return f"{module}.{name}" if module else name


_RANDOM = {"rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "randperm", "bernoulli",
           "multinomial", "normal", "poisson", "dropout", "manual_seed", "seed"}


class Node:
    """``op`` is one of placeholder, get_attr, call_function, call_method, call_module, output;
    ``target`` the argument name, attribute path, callable, method name or module path;
    ``users`` the nodes that take this one as an input (an ordered dict, values None)."""

    def __init__(self, graph, name, op, target, args, kwargs, return_type=None):
        if op not in _OPS:
            raise ValueError(f"Node op must be one of {_OPS[:-1]}, got {op!r}")
        if op in ("call_method", "call_module", "get_attr", "placeholder") and not isinstance(target, str):
            raise ValueError(f"Node target of op {op!r} must be a string, got {type(target).__name__}")
        if op == "call_function" and not callable(target):
            raise ValueError(f"Node target of call_function must be callable, got {target!r}")
        self.graph = graph
        self.name = name
        self.op = op
        self.target = target
        self.type = return_type
        self.users = {}
        self.meta = {}
        self.stack_trace = None
        self._input_nodes = {}
        self._args = ()
        self._kwargs = {}
        self._erased = False
        self._update_args_kwargs(tuple(args), dict(kwargs))

    # ---- inputs -------------------------------------------------------------------------------
    def _update_args_kwargs(self, args, kwargs):
        for old in self._input_nodes:
            old.users.pop(self, None)
        self._args, self._kwargs = _freeze(tuple(args)), _freeze(dict(kwargs))
        self._input_nodes = {}
        map_arg((args, kwargs), lambda n: self._input_nodes.setdefault(n, None))
        for new in self._input_nodes:
            new.users.setdefault(self, None)

    @property
    def args(self):
        return self._args

    @args.setter
    def args(self, value):
        self._update_args_kwargs(tuple(value), self._kwargs)

    @property
    def kwargs(self):
        return self._kwargs

    @kwargs.setter
    def kwargs(self, value):
        self._update_args_kwargs(self._args, dict(value))

    @property
    def all_input_nodes(self):
        return list(self._input_nodes)

    def update_arg(self, idx, arg):
        args = list(self._args)
        args[idx] = arg
        self.args = args

    def update_kwarg(self, key, arg):
        self.kwargs = {**self._kwargs, key: arg}

    def replace_input_with(self, old_input, new_input):
        repl = (lambda n: new_input if n is old_input else n)
        self._update_args_kwargs(map_arg(self._args, repl), map_arg(self._kwargs, repl))

    def replace_all_uses_with(self, replace_with, delete_user_cb=lambda user: True, *, propagate_meta=False):
        """Every user of this node takes ``replace_with`` instead; returns the users changed."""
        if propagate_meta:
            for k, v in self.meta.items():
                replace_with.meta.setdefault(k, v)
        changed = []
        for user in list(self.users):
            if user is replace_with or not delete_user_cb(user):
                continue
            user.replace_input_with(self, replace_with)
            changed.append(user)
        return changed

    # ---- order --------------------------------------------------------------------------------
    @property
    def next(self):
        nodes = self.graph._nodes
        i = nodes.index(self)
        return nodes[i + 1] if i + 1 < len(nodes) else self.graph._root

    @property
    def prev(self):
        nodes = self.graph._nodes
        i = nodes.index(self)
        return nodes[i - 1] if i > 0 else self.graph._root

    def prepend(self, x):
        """Move ``x`` just before this node."""
        self.graph._move(x, before=self)

    def append(self, x):
        """Move ``x`` just after this node."""
        self.graph._move(x, after=self)

    # ---- pickling: minidl's functions by their public path -----------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        if self.op == "call_function":
            path = _public_path(self.target)
            if path is not None:
                state["target"] = _PathRef(path)
        return state

    def __setstate__(self, state):
        if isinstance(state.get("target"), _PathRef):
            state["target"] = state["target"].resolve()
        self.__dict__.update(state)

    # ---- printing -----------------------------------------------------------------------------
    def format_node(self, placeholder_names=None, maybe_return_typename=None):
        args = map_arg(self._args, lambda n: _Ref(n.name))
        kwargs = map_arg(self._kwargs, lambda n: _Ref(n.name))
        if self.op == "placeholder":
            return f"%{self.name} : [num_users={len(self.users)}] = placeholder[target={self.target}]"
        if self.op == "get_attr":  # no argument lists, as torch's
            return f"%{self.name} : [num_users={len(self.users)}] = get_attr[target={self.target}]"
        if self.op == "output":  # names without %, as torch prints the output
            out = map_arg(self._args, lambda n: _Name(n.name))
            return f"return {out[0] if len(out) == 1 else out}"
        return (f"%{self.name} : [num_users={len(self.users)}] = {self.op}[target={_target_name(self.target)}]"
                f"(args = {_fmt(args)}, kwargs = {_fmt(kwargs)})")

    def __repr__(self):
        return self.name

    def is_impure(self):
        if self.op in ("placeholder", "output"):
            return True
        if self.op == "call_method":
            return self.target.endswith("_") and not self.target.endswith("__")
        if self.op == "call_function":  # in-place and random functions: their effect is the point
            name = getattr(self.target, "__name__", "")
            return bool(getattr(self.target, "_fx_impure", False)) or name.endswith("_") \
                or name in _RANDOM
        if self.op == "call_module":
            mod = self.graph.owning_module
            if mod is not None:
                try:
                    return bool(getattr(mod.get_submodule(self.target), "_is_impure", False))
                except AttributeError:
                    return False
        return False


class _PathRef:
    def __init__(self, path):
        self.path = path

    def resolve(self):
        module, _, name = self.path.rpartition(".")
        return getattr(importlib.import_module(module), name)


class _Ref:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"%{self.name}"


class _Name(_Ref):
    def __repr__(self):
        return self.name


def _fmt(a):
    return repr(a)
