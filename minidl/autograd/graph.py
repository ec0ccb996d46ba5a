"""``torch.autograd.graph``'s names: saved-tensor hooks (``saved_tensors_hooks``,
``save_on_cpu``, ``disable_saved_tensors_hooks``) and ``Node``, the type of every ``grad_fn``.

What a hook sees. torch's ops save Tensors; minidl's ops save arrays, through
``Function.save_for_backward``. While ``saved_tensors_hooks(pack_hook, unpack_hook)`` is
active, each array an op saves that way goes through ``pack_hook`` as a Tensor (the op's input
or output Tensor itself where the array is its data, a new Tensor on the array otherwise, such
as a reshaped or conjugated input) once the op is recorded in a graph (not under no_grad), and
the op keeps only what the hook returned. A backward pass calls ``unpack_hook`` on it, once per
saved value and pass, and checks the Tensor it returns against the saved one's shape, dtype and
device. A custom function written as torch's (``ctx.save_for_backward``) has its Tensors packed
as torch's are, and unpacked at each ``ctx.saved_tensors``.

Outside the hooks: arrays an op keeps as attributes of its own rather than through
``save_for_backward`` (masks, indices and argmax positions of pooling and dropout, im2col
columns kept by conv, shapes): they stay on the op as they are. The number of pack calls on a
graph is therefore that of minidl's saved arrays, which can differ from torch's (``mse_loss``
is two ops here, one in torch).

In-place changes. A value unpacked that is still the memory of an input or output changed in
place since the forward pass is refused, as without hooks; a value the hooks copied (to the
host, to disk) is the value at the forward pass, and is used as it is.
"""
from __future__ import annotations

import contextlib

from .. import autograd as _ag
from . import AccumulateGrad, Function

__all__ = ["Node", "saved_tensors_hooks", "save_on_cpu", "disable_saved_tensors_hooks",
           "register_multi_grad_hook"]


class _NodeMeta(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, (Function, AccumulateGrad))

    def __subclasscheck__(cls, sub):
        return isinstance(sub, type) and issubclass(sub, (Function, AccumulateGrad))


class Node(metaclass=_NodeMeta):
    """The type of a graph node, as torch's ``autograd.graph.Node``: every ``grad_fn`` (a
    ``Function``) and the AccumulateGrad of a leaf are instances. Nodes have ``name()``,
    ``next_functions``, ``register_hook``, ``register_prehook`` and ``metadata``."""


class saved_tensors_hooks:
    """``with saved_tensors_hooks(pack_hook, unpack_hook):`` every array an op saves for
    backward inside goes through ``pack_hook(tensor) -> anything`` when the op is recorded, and
    ``unpack_hook(packed) -> Tensor`` gives it back when backward needs it. Nested, the
    innermost pair applies, as torch's. See the module docstring for what is packed."""

    def __init__(self, pack_hook, unpack_hook):
        for what, hook in (("pack_hook", pack_hook), ("unpack_hook", unpack_hook)):
            if not callable(hook):
                raise TypeError(f"saved_tensors_hooks: {what} must be callable, got "
                                f"{type(hook).__name__}")
        self.pack_hook, self.unpack_hook = pack_hook, unpack_hook

    def __enter__(self):
        if _ag._saved_hooks_disabled is not None:
            raise RuntimeError(_ag._saved_hooks_disabled)
        _ag._saved_hooks.append((self.pack_hook, self.unpack_hook))
        return self

    def __exit__(self, *exc):
        _ag._saved_hooks.pop()
        return False


class save_on_cpu(saved_tensors_hooks):
    """Saved values of ops on a GPU are moved to host memory at the forward pass (pinned with
    ``pin_memory=True``) and back to their device when backward needs them; values of ops on
    the CPU pass through as they are, as torch's. ``device_type`` names the accelerator."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        if device_type != "cuda":
            raise RuntimeError(f"save_on_cpu: minidl's only accelerator is 'cuda', got "
                               f"device_type={device_type!r}")

        def pack_to_cpu(t):
            if t.device == "cpu":
                return "cpu", t
            host = t.to("cpu")
            return t.device, host.pin_memory() if pin_memory else host

        def unpack_from_cpu(packed):
            device, t = packed
            return t if device == "cpu" else t.to(device)

        super().__init__(pack_to_cpu, unpack_from_cpu)


@contextlib.contextmanager
def disable_saved_tensors_hooks(error_message):
    """Inside, saved-tensor hooks are refused with RuntimeError(error_message): entering
    ``saved_tensors_hooks``, and an op saving a value under hooks entered before."""
    previous, _ag._saved_hooks_disabled = _ag._saved_hooks_disabled, str(error_message)
    try:
        yield
    finally:
        _ag._saved_hooks_disabled = previous


class _MultiHandle:
    """The handle of ``register_multi_grad_hook``: ``remove()`` takes the hook off every tensor
    (twice is harmless); a context manager that removes it on leaving."""

    def __init__(self, handles):
        self.handles = tuple(handles)

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def register_multi_grad_hook(tensors, fn, *, mode="all"):
    """torch's ``autograd.graph.register_multi_grad_hook``. ``mode="all"``: once per backward
    pass, after the gradient of every tensor of ``tensors`` that the pass reaches has been
    computed, ``fn(grads)`` gets them in order, None for the tensors the pass does not reach
    (not above its roots, or not on a path to the ``inputs`` of ``backward``/``grad``).
    ``mode="any"``: once per pass, ``fn(grad)`` with the first of their gradients computed.
    The gradients are not changed by ``fn``'s result. Returns a handle with ``remove()``."""
    supported = ("all", "any")
    if mode not in supported:
        raise ValueError(f"Expects mode to be one of {supported} but got {mode}")
    tensors = list(tensors)
    if mode == "all":
        key = object()  # this hook's state on each pass (GraphTask.state)

        def hook_for(index):
            def inner(grad):
                task = _ag._graph_task
                if task is None:
                    raise RuntimeError("register_multi_grad_hook: its hook ran outside a "
                                       "backward pass")
                state = task.state.get(key)
                if state is None:  # the first of this pass: how many will arrive
                    calls = sum(1 for t in tensors if task.will_run(t))
                    state = task.state[key] = [0, calls, [None] * len(tensors)]
                state[2][index] = grad
                state[0] += 1
                if state[0] == state[1]:
                    del task.state[key]
                    fn(state[2])

            return inner

        handles = [t.register_hook(hook_for(i)) for i, t in enumerate(tensors)]
    else:
        key = object()

        def once(grad):
            task = _ag._graph_task
            if task is None:
                raise RuntimeError("register_multi_grad_hook: its hook ran outside a backward "
                                   "pass")
            if key in task.state:
                return
            task.state[key] = True
            fn(grad)

        handles = [t.register_hook(once) for t in tensors if t.requires_grad]
    return _MultiHandle(handles)
