"""``ShapeProp``: runs a GraphModule and records each node's result shape and dtype in
``node.meta['tensor_meta']`` (torch.fx.passes.shape_prop's meaning)."""
from typing import NamedTuple

from ...tensor import Tensor
from ..interpreter import Interpreter
from ..node import map_aggregate

__all__ = ["ShapeProp", "TensorMetadata"]


class TensorMetadata(NamedTuple):
    shape: tuple
    dtype: object
    requires_grad: bool
    stride: tuple
    memory_format: object
    is_quantized: bool
    qparams: dict


def _extract(t):
    try:
        stride = tuple(t.stride())
    except Exception:
        stride = None
    return TensorMetadata(t.shape, t.dtype, bool(t.requires_grad), stride, None, False, {})


class ShapeProp(Interpreter):
    def __init__(self, gm):
        super().__init__(gm)

    def run_node(self, n):
        result = super().run_node(n)
        found = []

        def extract(obj):
            if isinstance(obj, Tensor):
                found.append(True)
                return _extract(obj)
            return obj

        meta = map_aggregate(result, extract)
        if found:
            n.meta["tensor_meta"] = meta
        n.meta["type"] = type(result)
        return result

    def propagate(self, *args):
        return super().run(*args)
