"""PyTorch's ``torch.utils`` paths: ``minidl.utils.data`` is ``minidl.data`` (the same module
object), so ``from minidl.utils.data import DataLoader`` works as in PyTorch code,
``minidl.utils.checkpoint`` is activation checkpointing, ``minidl.utils.dlpack`` shares memory
with other array libraries, ``minidl.utils.benchmark`` times statements (torch's Timer),
``minidl.utils.hooks`` holds the hook handle, and ``swap_tensors`` swaps two Tensors'
contents."""
import gc
import sys
import weakref

from .. import data
from ..autograd import Function
from ..tensor import Tensor

sys.modules[__name__ + ".data"] = data
from ..data import distributed as _data_distributed  # noqa: E402

sys.modules[__name__ + ".data.distributed"] = _data_distributed  # torch.utils.data.distributed

from . import checkpoint  # noqa: E402  (after data: it imports the nn layer lazily)
from . import benchmark, dlpack, flop_counter, hooks, model_zoo  # noqa: E402,F401
from . import _pytree  # noqa: E402,F401  (torch.utils._pytree is there after `import torch`)

__all__ = ["data", "checkpoint", "dlpack", "flop_counter", "benchmark", "hooks", "model_zoo",
           "swap_tensors"]


def _in_live_graph(t):
    """Whether a recorded op not yet freed by a backward pass holds ``t`` among its inputs
    (a search of the referrers: only for a tensor that some op took, and swaps are rare)."""
    for holder in gc.get_referrers(t):
        if isinstance(holder, (list, tuple)):
            for owner in gc.get_referrers(holder):
                if isinstance(owner, dict):  # the op's attributes (its __dict__)
                    if owner.get("inputs") is holder and any(
                            isinstance(fn, Function) and fn.__dict__ is owner
                            for fn in gc.get_referrers(owner)):
                        return True
                elif isinstance(owner, Function) and owner.inputs is holder:
                    return True
    return False


def swap_tensors(t1, t2):
    """Swap everything two Tensors hold (data, ``requires_grad``, ``.grad``, the graph node,
    hooks, attributes set on them, their class: a Parameter stays where its value goes), as
    ``torch.utils.swap_tensors``: each name then refers to the other's contents. A tensor that
    an op recorded for backward has taken as an input, or one with a weak reference, is refused
    (the graph or the reference would follow the wrong contents), as torch refuses them."""
    for name, t in (("t1", t1), ("t2", t2)):
        if not isinstance(t, Tensor):
            raise TypeError(f"swap_tensors: expected {name} to be a minidl.Tensor, got "
                            f"{type(t).__name__}")
        if weakref.getweakrefcount(t):
            raise RuntimeError(f"Cannot swap {name} because it has weakref associated with it")
        if t.__dict__.get("_used") and _in_live_graph(t):
            raise RuntimeError(f"swap_tensors: cannot swap {name}: an op recorded for backward "
                               "took it as an input, and that graph's gradients would go to "
                               "the other tensor's contents (swap before the forward pass, or "
                               "once backward has freed the graph or it is gone)")
    if t1 is t2:
        return
    if type(t1) is not type(t2):
        t1.__class__, t2.__class__ = type(t2), type(t1)
    state1, state2 = dict(t1.__dict__), dict(t2.__dict__)
    t1.__dict__.clear()
    t1.__dict__.update(state2)
    t2.__dict__.clear()
    t2.__dict__.update(state1)
