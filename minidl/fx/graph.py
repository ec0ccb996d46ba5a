"""``Graph``: the ordered nodes of a traced program, and the Python source generated from them
(torch.fx.Graph's meaning)."""
import builtins
import inspect
import keyword
import math
import operator
import re
import sys

from ._paths import _public_path
from .node import Node, map_arg

__all__ = ["Graph", "PythonCode"]

_ILLEGAL = set(dir(builtins)) | set(keyword.kwlist) | {"inf", "nan", "minidl", "self"}

# operator functions printed as Python syntax
_BINARY = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
           operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@",
           operator.and_: "&", operator.or_: "|", operator.xor: "^", operator.lshift: "<<",
           operator.rshift: ">>", operator.lt: "<", operator.le: "<=", operator.gt: ">",
           operator.ge: ">=", operator.eq: "==", operator.ne: "!="}
_UNARY = {operator.neg: "-", operator.pos: "+", operator.invert: "~"}


def _snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class _Namespace:
    """Unique Python identifiers: ``add``, ``add_1``, ...; builtins and keywords get a suffix."""

    def __init__(self):
        self.used = set()
        self.counts = {}

    def create_name(self, candidate):
        candidate = re.sub(r"[^0-9a-zA-Z_]+", "_", candidate) or "_unnamed"
        if candidate[0].isdigit():
            candidate = f"_{candidate}"
        m = re.match(r"(.*)_(\d+)$", candidate)
        if m is None:
            base, num = candidate, None
        else:
            base, num = m.group(1), int(m.group(2))
        if num is None:
            num = self.counts.get(base, 0)
        while candidate in self.used or candidate in _ILLEGAL:
            num += 1
            candidate = f"{base}_{num}"
        self.used.add(candidate)
        self.counts[base] = num
        return candidate


class _InsertPoint:
    def __init__(self, graph, new_insert):
        self.graph = graph
        self.orig, graph._insert = graph._insert, new_insert

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.graph._insert = self.orig


class PythonCode:
    def __init__(self, src, globals_):
        self.src = src
        self.globals = globals_


def _qualified_path(fn):
    """The dotted path of a minidl function (``minidl.nn.functional.relu``), or None."""
    return _public_path(fn)


class Graph:
    def __init__(self, owning_module=None, tracer_cls=None, tracer_extras=None):
        self._nodes = []
        self._root = None
        self._ns = _Namespace()
        self._insert = self._append
        self.owning_module = owning_module
        self._tracer_cls = tracer_cls

    def __getstate__(self):
        state = dict(self.__dict__)
        state["owning_module"] = None
        state["_insert"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._insert = self._append

    def __deepcopy__(self, memo):
        g = Graph()
        memo[id(self)] = g
        out = g.graph_copy(self, {})
        if out is not None:
            g.output(out)
        return g

    # ---- nodes --------------------------------------------------------------------------------
    @property
    def nodes(self):
        """The nodes in order (a snapshot: erasing while iterating is safe)."""
        return list(self._nodes)

    def find_nodes(self, *, op, target=None):
        return [n for n in self._nodes if n.op == op and (target is None or n.target == target)]

    def _append(self, n):
        self._nodes.append(n)

    def _move(self, x, before=None, after=None):
        if x in self._nodes:
            self._nodes.remove(x)
        ref = before if before is not None else after
        i = self._nodes.index(ref)
        self._nodes.insert(i if before is not None else i + 1, x)

    def inserting_before(self, n=None):
        """New nodes go just before ``n`` (None: at the start of the graph), as torch's."""
        if n is None:
            return _InsertPoint(self, lambda x: self._nodes.insert(0, x))
        self._check_owned(n)
        return _InsertPoint(self, lambda x: self._move(x, before=n))

    def inserting_after(self, n=None):
        """New nodes go just after ``n`` (None: at the end); several in a row end up in reverse
        order, each right after ``n``, as torch's."""
        if n is None:
            return _InsertPoint(self, self._append)
        self._check_owned(n)
        return _InsertPoint(self, lambda x: self._move(x, after=n))

    def _check_owned(self, n):
        if n.graph is not self or n._erased:
            raise ValueError(f"Node {n.name} does not belong to this graph")

    def _target_to_str(self, op, target):
        if op == "call_function":
            return _snake(getattr(target, "__name__", None) or type(target).__name__)
        return str(target)

    def create_node(self, op, target, args=None, kwargs=None, name=None, type_expr=None):
        args = () if args is None else tuple(args)
        kwargs = {} if kwargs is None else dict(kwargs)
        for a in (args, kwargs):
            map_arg(a, self._check_owned)
        candidate = name if name is not None else self._target_to_str(op, target)
        n = Node(self, self._ns.create_name(candidate), op, target, args, kwargs, type_expr)
        self._insert(n)
        return n

    def placeholder(self, name, type_expr=None, default_value=inspect.Signature.empty):
        """An input of forward; ``default_value`` (when given) is its default."""
        args = () if default_value is inspect.Signature.empty else (default_value,)
        return self.create_node("placeholder", name, args, type_expr=type_expr)

    def get_attr(self, qualified_name, type_expr=None):
        return self.create_node("get_attr", qualified_name, type_expr=type_expr)

    def call_function(self, the_function, args=None, kwargs=None, type_expr=None):
        return self.create_node("call_function", the_function, args, kwargs, type_expr=type_expr)

    def call_method(self, method_name, args=None, kwargs=None, type_expr=None):
        return self.create_node("call_method", method_name, args, kwargs, type_expr=type_expr)

    def call_module(self, module_name, args=None, kwargs=None, type_expr=None):
        return self.create_node("call_module", module_name, args, kwargs, type_expr=type_expr)

    def output(self, result, type_expr=None):
        return self.create_node("output", "output", (result,), type_expr=type_expr)

    def erase_node(self, to_erase):
        if to_erase.users:
            raise RuntimeError(f"Tried to erase Node {to_erase} but it still had {len(to_erase.users)} "
                               f"users in the graph: {to_erase.users}!")
        self._check_owned(to_erase)
        self._nodes.remove(to_erase)
        to_erase._update_args_kwargs((), {})
        to_erase._erased = True

    def node_copy(self, node, arg_transform=lambda x: x):
        args = map_arg(node.args, arg_transform)
        kwargs = map_arg(node.kwargs, arg_transform)
        name = node.name if node.name not in self._ns.used else None
        new = self.create_node(node.op, node.target, args, kwargs, name, node.type)
        new.meta = dict(node.meta)
        return new

    def graph_copy(self, g, val_map, return_output_node=False):
        """Copies ``g``'s nodes (but its output) into this graph; returns the output's value."""
        for node in g._nodes:
            if node.op == "output":
                out = map_arg(node.args[0], lambda n: val_map[n])
                return (out, node) if return_output_node else out
            val_map[node] = self.node_copy(node, lambda n: val_map[n])
        return None

    def output_node(self):
        outs = [n for n in self._nodes if n.op == "output"]
        return outs[-1] if outs else None

    # ---- passes -------------------------------------------------------------------------------
    def eliminate_dead_code(self, is_impure_node=None):
        """Erases the nodes nothing uses (placeholders, output and in-place calls stay); returns
        whether anything was erased."""
        impure = is_impure_node or (lambda n: n.is_impure())
        changed = False
        for node in reversed(list(self._nodes)):
            if not node.users and not impure(node):
                self.erase_node(node)
                changed = True
        return changed

    def lint(self):
        """Checks the graph is well formed: each input defined before its use and in this graph,
        users consistent, names unique, at most one output at the end."""
        seen, names = set(), set()
        for node in self._nodes:
            if node.graph is not self:
                raise RuntimeError(f"Node {node} does not belong to this Graph")
            if node.name in names:
                raise RuntimeError(f"Node redefined name {node.name}!")
            names.add(node.name)
            for inp in node.all_input_nodes:
                if inp not in seen:
                    where = "in this Graph" if inp.graph is self and not inp._erased else "anywhere"
                    raise RuntimeError(f"Argument '{inp}' of Node '{node}' was used before it has been "
                                       f"defined (or is not {where})!")
                if node not in inp.users:
                    raise RuntimeError(f"Node {inp} is an input of {node} but does not list it as a user")
            for user in node.users:
                if user.graph is not self or user._erased:
                    raise RuntimeError(f"Node {node} lists {user} as a user, which is not in the graph")
            if node.op == "output" and node is not self._nodes[-1]:
                raise RuntimeError(f"Output node {node} is not the last node of the graph")
            seen.add(node)
        return True

    # ---- printing -----------------------------------------------------------------------------
    def __str__(self):
        lines = ["graph():"]
        lines += ["    " + n.format_node() for n in self._nodes]
        return "\n".join(lines)

    def print_tabular(self):
        from .node import _target_name, _Ref

        rows = [("opcode", "name", "target", "args", "kwargs")]
        for n in self._nodes:
            rows.append((n.op, n.name, _target_name(n.target) if n.op == "call_function" else str(n.target),
                         repr(map_arg(n.args, lambda m: _Ref(m.name))).replace("%", ""),
                         repr(map_arg(n.kwargs, lambda m: _Ref(m.name))).replace("%", "")))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        out = [" ".join(c.ljust(w) for c, w in zip(rows[0], widths)).rstrip(),
               " ".join("-" * w for w in widths)]
        out += [" ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows[1:]]
        print("\n".join(out))

    # ---- code generation ----------------------------------------------------------------------
    def python_code(self, root_module="self"):
        """The source of ``forward`` and the globals it needs."""
        globals_ = {"inf": math.inf, "nan": math.nan}
        gnames = {}

        def add_global(name_hint, obj):
            if id(obj) in gnames:
                return gnames[id(obj)]
            name = ns_global.create_name(name_hint)
            globals_[name] = obj
            gnames[id(obj)] = name
            return name

        ns_global = _Namespace()
        ns_global.used |= {n.name for n in self._nodes} | {"inf", "nan"}

        def fmt(a):
            if isinstance(a, Node):
                return a.name
            if isinstance(a, tuple) and not hasattr(a, "_fields"):
                inner = ", ".join(fmt(e) for e in a)
                return f"({inner},)" if len(a) == 1 else f"({inner})"
            if isinstance(a, list):
                return "[" + ", ".join(fmt(e) for e in a) + "]"
            if isinstance(a, dict):
                return "{" + ", ".join(f"{fmt(k)}: {fmt(v)}" for k, v in a.items()) + "}"
            if isinstance(a, slice):
                return f"slice({fmt(a.start)}, {fmt(a.stop)}, {fmt(a.step)})"
            if a is None or a is Ellipsis or isinstance(a, (bool, int, str)):
                return repr(a)
            if isinstance(a, float):
                return repr(a) if math.isfinite(a) else ("inf" if a > 0 else "-inf" if a < 0 else "nan")
            return add_global(_snake(type(a).__name__).strip("_") or "const", a)

        def call_args(args, kwargs):
            parts = [fmt(a) for a in args] + [f"{k} = {fmt(v)}" for k, v in kwargs.items()]
            return ", ".join(parts)

        def fn_ref(fn):
            path = _qualified_path(fn)
            if path is not None:
                globals_["minidl"] = sys.modules["minidl"]
                return path
            if fn is getattr(builtins, getattr(fn, "__name__", ""), None):
                return fn.__name__
            module = sys.modules.get(getattr(fn, "__module__", None) or "")
            name = getattr(fn, "__name__", "")
            if module is not None and getattr(module, name, None) is fn and "." not in module.__name__:
                alias = module.__name__
                if globals_.get(alias, module) is module and alias not in ns_global.used:
                    globals_[alias] = module
                    return f"{alias}.{name}"
            return add_global(getattr(fn, "__name__", "fn"), fn)

        last_use = {}
        for node in self._nodes:
            for inp in node.all_input_nodes:
                last_use[inp] = node
        to_free = {}  # freed after their last use, in the order the user's arguments name them
        for node in self._nodes:
            to_free[node] = [inp for inp in node.all_input_nodes if last_use[inp] is node]

        params, body = [], []
        for node in self._nodes:
            a, k = node.args, node.kwargs
            if node.op == "placeholder":
                stars = node.target[:len(node.target) - len(node.target.lstrip("*"))]
                arg = node.target[len(stars):]
                arg = arg if arg.isidentifier() else node.name
                params.append(stars + arg if not a or stars else f"{arg} = {fmt(a[0])}")
                if arg != node.name:  # ``input`` keeps its name in the signature, as torch's
                    body.append(f"{node.name} = {arg}")
                continue
            if node.op == "output":
                body.append(f"return {fmt(a[0])}")
                continue
            if node.op == "get_attr":
                rhs = _attr_path(root_module, node.target)
            elif node.op == "call_module":
                rhs = f"{_attr_path(root_module, node.target)}({call_args(a, k)})"
            elif node.op == "call_method":
                rhs = f"{fmt(a[0])}.{node.target}({call_args(a[1:], k)})"
            else:
                t = node.target
                if t in _BINARY and len(a) == 2 and not k:
                    rhs = f"{fmt(a[0])} {_BINARY[t]} {fmt(a[1])}"
                elif t in _UNARY and len(a) == 1 and not k:
                    rhs = f"{_UNARY[t]}{fmt(a[0])}"
                elif t is operator.getitem and len(a) == 2 and not k:
                    rhs = f"{fmt(a[0])}[{fmt(a[1])}]"
                elif t is builtins.getattr and len(a) == 2 and isinstance(a[1], str) \
                        and a[1].isidentifier() and not k:
                    rhs = f"{fmt(a[0])}.{a[1]}"
                else:
                    rhs = f"{fn_ref(t)}({call_args(a, k)})"
            line = f"{node.name} = {rhs}"
            frees = [n.name for n in to_free.get(node, ()) if n is not node]
            if not node.users:  # a value nothing uses is let go at once
                frees.insert(0, node.name)
            if frees:
                line += ";  " + " = ".join(frees) + " = None"
            body.append(line)
        if not body or not body[-1].startswith("return"):
            body.append("return None")
        src = "\n\n\ndef forward(" + ", ".join([root_module] + params) + "):\n"
        src += "".join(f"    {line}\n" for line in body)
        return PythonCode(src, globals_)


def _attr_path(root, target):
    """``layer1.0.conv1`` as Python: ``layer1[0].conv1``... through getattr for non-identifiers."""
    out = root
    for part in target.split("."):
        plain = part.isidentifier() and not keyword.iskeyword(part)
        out = f"{out}.{part}" if plain else f'getattr({out}, "{part}")'
    return out
