"""torch.fx.proxy's names: ``Proxy``, ``Attribute``, ``TraceError`` (defined with the tracer)."""
from ._symbolic_trace import Attribute, Proxy, TraceError

__all__ = ["Proxy", "Attribute", "TraceError"]
