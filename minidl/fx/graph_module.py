"""``GraphModule``: a Module whose ``forward`` is Python generated from a ``Graph``."""
import copy
import linecache

from ..nn.module import Module, Parameter
from ..tensor import Tensor
from .graph import Graph

__all__ = ["GraphModule"]

_counter = [0]


def _copy_attr(from_module, to_module, target):
    """``to_module.<target> = from_module.<target>``, with plain Modules made for the path between."""
    *prefix, field = target.split(".")
    for item in prefix:
        f = getattr(from_module, item)
        t = getattr(to_module, item, None)
        if f is t:
            return
        if t is None:
            t = Module()
            setattr(to_module, item, t)
        from_module, to_module = f, t
    value = getattr(from_module, field)
    if isinstance(value, Tensor) and not isinstance(value, Parameter):
        # a buffer or a tensor constant: a buffer of the GraphModule (so in its state_dict), as
        # torch's GraphModule registers it
        to_module.register_buffer(field, value)
    elif isinstance(value, Module) or field in from_module.__dict__.get("_parameters", {}):
        setattr(to_module, field, value)
    else:
        object.__setattr__(to_module, field, value)


def _set_attr_dict(to_module, target, value):
    *prefix, field = target.split(".")
    for item in prefix:
        t = getattr(to_module, item, None)
        if t is None:
            t = Module()
            setattr(to_module, item, t)
        to_module = t
    if isinstance(value, Module):
        setattr(to_module, field, value)
    else:
        try:
            setattr(to_module, field, value)
        except (TypeError, ValueError):
            object.__setattr__(to_module, field, value)


def _rebuild(class_name, module_dict, graph):
    gm = GraphModule.__new__(GraphModule, class_name=class_name)
    gm.__dict__.update(module_dict)
    gm.graph = graph
    return gm


class GraphModule(Module):
    """Holds the submodules, parameters and tensors its graph uses (copied from ``root``, a Module
    or a dict of them) and runs the graph as generated Python (``.code``)."""

    def __new__(cls, *args, class_name=None, **kwargs):
        if cls is GraphModule:  # each instance has its own class, so that forward is a class member
            name = class_name if class_name is not None else (args[2] if len(args) > 2
                                                               else kwargs.get("class_name", "GraphModule"))
            cls = type(name, (GraphModule,), {"__module__": __name__})
        return object.__new__(cls)

    def __init__(self, root, graph, class_name="GraphModule"):
        super().__init__()
        type(self).__name__ = class_name
        type(self).__qualname__ = class_name
        if isinstance(root, Module):
            if hasattr(root, "training"):
                object.__setattr__(self, "training", root.training)
            for node in graph.nodes:
                if node.op in ("get_attr", "call_module"):
                    _copy_attr(root, self, node.target)
        elif isinstance(root, dict):
            for node in graph.nodes:
                if node.op in ("get_attr", "call_module"):
                    if node.target not in root:
                        raise RuntimeError(f"Node {node.name} referenced target {node.target} but that "
                                           f"target was not provided in ``root``!")
                    _set_attr_dict(self, node.target, root[node.target])
        else:
            raise RuntimeError(f"Unsupported type {type(root).__name__} passed for root!")
        self.graph = graph

    # the graph: setting it regenerates the code
    @property
    def graph(self):
        return self.__dict__["_graph"]

    @graph.setter
    def graph(self, g):
        if not isinstance(g, Graph):
            raise TypeError(f"GraphModule.graph must be a Graph, got {type(g).__name__}")
        self.__dict__["_graph"] = g
        g.owning_module = self
        self.recompile()

    def __setattr__(self, name, value):
        if name == "graph":
            object.__setattr__(self, name, value)  # the property
        else:
            super().__setattr__(name, value)

    @property
    def code(self):
        return self.__dict__["_code"]

    def recompile(self):
        """Regenerates ``forward`` from ``self.graph`` (after editing the graph)."""
        python_code = self.graph.python_code(root_module="self")
        src = python_code.src
        _counter[0] += 1
        filename = f"<eval_with_key>.{_counter[0]}"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        globals_ = dict(python_code.globals)
        exec(compile(src, filename, "exec"), globals_)
        self.__dict__["_code"] = src
        cls = type(self)
        if cls is not GraphModule:
            cls.forward = globals_["forward"]
        return python_code

    # ---- submodules the graph calls ----------------------------------------------------------
    def add_submodule(self, target, m):
        """Installs ``m`` at the dotted path ``target`` (plain Modules made for the path); returns
        False where a part of the path is not a Module."""
        *prefix, field = target.split(".")
        mod = self
        for item in prefix:
            sub = getattr(mod, item, None)
            if sub is None:
                sub = Module()
                setattr(mod, item, sub)
            if not isinstance(sub, Module):
                return False
            mod = sub
        setattr(mod, field, m)
        return True

    def delete_submodule(self, target):
        """Removes the submodule at ``target``; returns False where there is none."""
        *prefix, field = target.split(".")
        mod = self
        for item in prefix:
            mod = getattr(mod, item, None)
            if not isinstance(mod, Module):
                return False
        if field not in mod.__dict__.get("_modules", {}):
            return False
        delattr(mod, field)
        return True

    def delete_all_unused_submodules(self):
        """Removes every submodule that no call_module or get_attr node (nor their parents) uses."""
        used = set()
        for node in self.graph.nodes:
            if node.op in ("call_module", "get_attr"):
                parts = node.target.split(".")
                used |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
                if node.op == "call_module":
                    used |= {f"{node.target}.{n}" for n, _ in self.get_submodule(node.target).named_modules()
                             if n}
        for name, _ in sorted(self.named_modules(), key=lambda nm: -nm[0].count(".")):
            if name and name not in used:
                self.delete_submodule(name)

    def print_readable(self, print_output=True):
        body = "\n".join("    " + line if line else "" for line in self.code.strip("\n").splitlines())
        out = f"class {type(self).__name__}(minidl.nn.Module):\n{body}\n"
        if print_output:
            print(out)
        return out

    def __str__(self):
        return super().__str__() + "\n\n\n" + self.code.strip("\n") + "\n"

    def _state(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_graph", "_code")}

    def __reduce__(self):
        return (_rebuild, (type(self).__name__, self._state(), self.graph))

    def __deepcopy__(self, memo):
        gm = GraphModule.__new__(GraphModule, class_name=type(self).__name__)
        memo[id(self)] = gm
        gm.__dict__.update(copy.deepcopy(self._state(), memo))
        gm.graph = copy.deepcopy(self.graph, memo)
        return gm

    def __copy__(self):
        gm = GraphModule.__new__(GraphModule, class_name=type(self).__name__)
        gm.__dict__.update(self._state())
        gm.graph = self.graph
        return gm
