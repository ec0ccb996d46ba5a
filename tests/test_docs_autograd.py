"""docs/autograd.md: its code blocks run in order, and its list of ops whose gradients are
first-order only is exactly the set of minidl's Functions without a graph_backward."""
import importlib
import os
import pkgutil
import re

import minidl
from minidl.autograd import Function

from docblocks import python_blocks, run_blocks

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "autograd.md")


def _doc():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def test_every_code_block_runs_in_order():
    blocks = python_blocks(DOC)
    assert len(blocks) >= 4
    namespace = {"__name__": "autograd_doc"}
    run_blocks(DOC, namespace)


def _all_functions():
    for info in pkgutil.walk_packages(minidl.__path__, "minidl."):
        if ".examples" in info.name or info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra (mpi4py, cupy) that is not installed
            continue
    found, stack = set(), [Function]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith("minidl."):
                found.add(sub)
    return found


def first_order_only():
    """minidl's Functions whose class (or a base below Function) defines no graph_backward, and
    the pointwise activations (a graph_backward on their base) that state no derivative as
    ops. A PyTorch-style function (backward on Tensors) is differentiable where its ops are."""
    names = set()
    for cls in _all_functions():
        if cls._on_tensors:
            continue
        own = any("graph_backward" in vars(k) for k in cls.__mro__[:cls.__mro__.index(Function)])
        if hasattr(cls, "graph_df") and not cls.graph_df and not cls.constant_df:
            own = False  # Pointwise's graph_backward falls back to first order for it
        if not own:
            names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


def test_first_order_only_list_matches_the_code():
    section = _doc().split("<!-- first-order-only:start -->")[1].split(
        "<!-- first-order-only:end -->")[0]
    listed = set(re.findall(r"^- `([\w.]+)`", section, flags=re.M))
    actual = first_order_only()
    assert not actual - listed, f"not in docs/autograd.md's list: {sorted(actual - listed)}"
    assert not listed - actual, f"listed but now differentiable: {sorted(listed - actual)}"
