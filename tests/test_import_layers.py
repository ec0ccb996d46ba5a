"""The import arrows of DESIGN.md: data and datasets never import models; the core layers import\nonly downward; no two components import each other."""
import subprocess
import sys


def test_datasets_and_transforms_do_not_import_models():
    code = ("import sys, minidl.datasets, minidl.vision.transforms\n"
            "from minidl.datasets import ImageFolder\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('minidl.models', 'minidl.examples')))\n"
            "print(' '.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"minidl.datasets imports {out.stdout.strip()}"


# ---- the core layers: backend <- autograd <- ops <- tensor <- functional <- nn -------------------
import ast  # noqa: E402
import os  # noqa: E402

import minidl  # noqa: E402

PACKAGE = os.path.dirname(minidl.__file__)
# each layer may import the layers before it; the op modules beside ops.py (indexing, shape,
# math, product, linear-algebra and special-function ops) form one layer with it, and may import each other (no cycles:
# test_no_import_cycles)
OPS_LAYER = ("ops", "indexing", "shape_ops", "math_ops", "products", "linalg", "special",
             "pointwise", "statistics", "printing", "complex_ops", "_special_more")  # printing: the repr
CORE = [("backend",), ("autograd",), OPS_LAYER, ("tensor",), ("functional",), ("nn",)]


def _component(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "minidl"


def _imports(by_module=False):
    """{component: {component it imports}} (or module to module), read from the source: imports
    inside functions count too (a lazy import is still an arrow), and so does any __import__."""
    graph = {}
    modules = {".".join(os.path.relpath(os.path.join(d, f), os.path.dirname(PACKAGE))[:-3]
                        .split(os.sep)).removesuffix(".__init__")
               for d, _, fs in os.walk(PACKAGE) for f in fs if f.endswith(".py")}
    name_of = (lambda m: m) if by_module else _component
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
            module_parts = rel[:-1] if rel[-1] == "__init__" else rel
            package_parts = module_parts if rel[-1] == "__init__" else module_parts[:-1]
            source = name_of(".".join(module_parts))
            targets = graph.setdefault(source, set())
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = package_parts[:len(package_parts) - node.level + 1] if node.level else []
                    stem = base + (node.module.split(".") if node.module else [])
                    found = [".".join(stem + [a.name]) if ".".join(stem + [a.name]) in modules
                             else ".".join(stem) for a in node.names]
                elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
                    found = ["__import__"]
                else:
                    continue
                for target in found:
                    if target == "__import__":
                        targets.add("__import__")
                    elif target.startswith("minidl.") and name_of(target) != source:
                        targets.add(name_of(target))
    return graph


def test_core_modules_import_only_the_layers_below_them():
    graph = _imports()
    for i, members in enumerate(CORE):
        for layer in members:
            allowed = {m for below in CORE[:i + 1] for m in below}
            if layer == "nn":
                allowed.add("distributed")  # nn.parallel's DDP
            upward = graph.get(layer, set()) - allowed
            assert not upward, f"minidl.{layer} imports {sorted(upward)}, not below it"
    assert not any("__import__" in targets for targets in graph.values()), \
        [k for k, v in graph.items() if "__import__" in v]


def test_no_import_cycles():
    """Between modules; a package's __init__ may import its own submodules (re-exports)."""
    graph = _imports(by_module=True)
    graph.pop("minidl", None)  # the package root imports everything it re-exports
    for module, targets in graph.items():  # submodule -> its package: reads the re-exports
        targets -= {t for t in list(targets) if module.startswith(t + ".")}
    seen, stack, on_stack = set(), [], set()

    def visit(node):  # depth-first search for a cycle
        seen.add(node)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in seen and nxt in graph:
                visit(nxt)
        stack.pop()
        on_stack.discard(node)

    for node in sorted(graph):
        if node not in seen:
            visit(node)


def test_tensor_methods_are_defined_in_its_class():
    """No operator is attached from outside: tensor.py's class body defines them all."""
    from minidl.tensor import Tensor

    for name in ("__add__", "__rmul__", "__matmul__", "__getitem__", "__pow__", "__lt__", "sum",
                 "mean", "max", "reshape", "permute", "T", "relu", "sigmoid", "softmax", "exp"):
        assert name in Tensor.__dict__, name
        member = Tensor.__dict__[name]
        func = member.fget if isinstance(member, property) else member
        assert func.__module__ == "minidl.tensor", (name, func.__module__)


def test_models_do_not_import_datasets_or_vision():
    code = ("import sys, minidl.models, minidl.models.convert, minidl.models.weights, minidl.models.imagenet\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('minidl.datasets', 'minidl.vision', "
            "'minidl.examples')))\n"
            "print(' '.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"minidl.models imports {out.stdout.strip()}"
