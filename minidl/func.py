"""``minidl.func``: torch.func's functional_call (run a module with substituted parameters and
buffers, the gradients going to the substitutes)."""
from .nn._stateless import functional_call

__all__ = ["functional_call"]
