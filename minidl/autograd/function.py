"""``torch.autograd.function``'s names: ``Function`` (also ``minidl.autograd.Function``),
``FunctionCtx`` (the ctx a PyTorch-style custom function's forward and backward receive: the
function's own node, here) and ``once_differentiable``."""
from . import Function, once_differentiable

FunctionCtx = Function

__all__ = ["Function", "FunctionCtx", "once_differentiable"]
