"""``minidl.linalg``: the norms of torch.linalg that minidl has (vector_norm)."""
from .math_ops import vector_norm

__all__ = ["vector_norm"]
