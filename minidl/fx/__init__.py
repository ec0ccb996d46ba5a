"""minidl.fx: capture a model's program as a graph of nodes, edit it, and run it again as Python
(the core of torch.fx: symbolic tracing, Graph, Node, GraphModule, Interpreter, Transformer).
See docs/fx.md."""
from ._symbolic_trace import PH, Attribute, Proxy, Tracer, TraceError, symbolic_trace, wrap
from .graph import Graph, PythonCode
from .graph_module import GraphModule
from .interpreter import Interpreter, Transformer
from .node import Node, map_arg
from . import passes, subgraph_rewriter  # noqa: F401
from .subgraph_rewriter import replace_pattern

__all__ = ["symbolic_trace", "Tracer", "Proxy", "Attribute", "TraceError", "wrap", "PH", "Graph",
           "PythonCode", "GraphModule", "Node", "map_arg", "Interpreter", "Transformer", "replace_pattern"]
