"""``torch.jit``'s names, so that scripts written for PyTorch run: minidl has no TorchScript,
so ``script`` and ``trace`` return what they are given (warning once per process that it runs
eagerly), the decorators (``ignore``, ``unused``, ``export``, ``interface``) leave functions as
they are, ``is_scripting()``/``is_tracing()`` are False, and ``fork``/``wait`` run the call at
once. ``save``/``load`` of TorchScript archives are refused with what to use instead
(``minidl.save(model.state_dict(), path)``): there is no archive format to write."""
from __future__ import annotations

import builtins
import types
import typing
import warnings

from .futures import Future

__all__ = ["script", "trace", "trace_module", "ignore", "unused", "export", "interface",
           "is_scripting", "is_tracing", "annotate", "Attribute", "Final", "fork", "wait",
           "freeze", "optimize_for_inference", "save", "load", "ScriptModule",
           "ScriptFunction", "script_if_tracing", "isinstance", "enable_onednn_fusion", "onednn_fusion_enabled",
           "set_fusion_strategy"]

_warned = False


def _eager(what, obj):
    global _warned
    if not callable(obj):
        raise TypeError(f"minidl.jit.{what}: expected a Module or a function, got "
                        f"{type(obj).__name__}")
    if not _warned:
        _warned = True
        warnings.warn(f"minidl.jit.{what}: minidl has no TorchScript; the model runs eagerly, "
                      "as it is", UserWarning, stacklevel=3)
    return obj


def script(obj, optimize=None, _frames_up=0, _rcb=None, example_inputs=None):
    """Returns ``obj`` (a Module, function or class) unchanged; it runs eagerly."""
    if builtins.isinstance(obj, type):
        return obj  # a scripted class: its instances are plain Python objects here
    return _eager("script", obj)


def trace(func, example_inputs=None, optimize=None, check_trace=True, check_inputs=None,
          check_tolerance=1e-5, strict=True, _force_outplace=False, _module_class=None,
          _compilation_unit=None, example_kwarg_inputs=None, _store_inputs=True):
    """Returns ``func`` unchanged (nothing is recorded: it runs eagerly on every input, so
    control flow that depends on the data keeps working, unlike a real trace)."""
    return _eager("trace", func)


def trace_module(mod, inputs, *args, **kwargs):
    return _eager("trace_module", mod)


def _passthrough(fn=None, **_):
    if fn is None:
        return lambda f: f
    return fn


def ignore(drop=False, **kwargs):
    """``@torch.jit.ignore`` (or ``ignore(drop=True)``): the function stays as it is."""
    if callable(drop):
        return drop
    return lambda fn: fn


unused = _passthrough
export = _passthrough
interface = _passthrough


def is_scripting() -> bool:
    return False


def is_tracing() -> bool:
    return False


def annotate(the_type, the_value):
    return the_value


def Attribute(value, type=None):  # noqa: N802,A002  (torch's name and signature)
    return value


Final = typing.Final  # ``x: torch.jit.Final[int]`` only annotates (as torch's: typing's)


def script_if_tracing(fn):
    """``@torch.jit.script_if_tracing``: the function stays as it is."""
    return fn


def isinstance(obj, target_type):  # noqa: A001  (torch's name)
    """``torch.jit.isinstance``: ``obj`` against a container type with its element types
    (``List[int]``, ``Dict[str, Tensor]``, ``Tuple[int, str]``, ``Optional[...]``,
    ``Union[...]``), checking every element as torch's does outside TorchScript."""
    origin, args = typing.get_origin(target_type), typing.get_args(target_type)
    if origin is None:
        return builtins.isinstance(obj, target_type)
    if origin in (typing.Union, types.UnionType):
        return any(isinstance(obj, a) for a in args)
    if not builtins.isinstance(obj, origin):
        return False
    if not args:
        return True
    if origin in (list, set, frozenset):
        return all(isinstance(v, args[0]) for v in obj)
    if origin is dict:
        return all(isinstance(k, args[0]) and isinstance(v, args[1]) for k, v in obj.items())
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(isinstance(v, args[0]) for v in obj)
        return len(obj) == len(args) and all(isinstance(v, a) for v, a in zip(obj, args))
    return True


class ScriptModule:
    """No object is ever one here (``isinstance(m, torch.jit.ScriptModule)`` is False)."""


class ScriptFunction:
    """No object is ever one here."""


def fork(func, *args, **kwargs):
    """Runs ``func(*args, **kwargs)`` now; a Future of its result (``wait`` gives it)."""
    fut = Future()
    try:
        fut.set_result(func(*args, **kwargs))
    except Exception as exc:  # raised again by wait(), as torch's
        fut.set_exception(exc)
    return fut


def wait(future):
    return future.wait()


def freeze(mod, preserved_attrs=None, optimize_numerics=True):
    """Returns ``mod`` (torch freezes a scripted module in eval mode; this one is eager)."""
    if getattr(mod, "training", False):
        raise RuntimeError("Freezing is currently only implemented for modules in eval mode. "
                           "Please call .eval() on your module before freezing.")
    return mod


def optimize_for_inference(mod, other_methods=None):
    if getattr(mod, "training", False):
        mod.eval()
    return mod


def save(m, f, _extra_files=None):
    raise RuntimeError("minidl.jit.save: minidl has no TorchScript archive to write; save the "
                       "weights with minidl.save(model.state_dict(), path) and rebuild the "
                       "model in code to load them (model.load_state_dict(minidl.load(path)))")


def load(f, map_location=None, _extra_files=None, _restore_shapes=False):
    raise RuntimeError("minidl.jit.load: minidl cannot run TorchScript archives; load a state "
                       "dict instead (minidl.load on a file minidl.save wrote, or "
                       "minidl.models.convert for a PyTorch checkpoint)")


_onednn = False


def enable_onednn_fusion(enabled: bool):
    global _onednn
    _onednn = bool(enabled)


def onednn_fusion_enabled() -> bool:
    return _onednn


def set_fusion_strategy(strategy):
    """Accepted and recorded nowhere (no fuser); returns the previous strategy as torch's."""
    return [("STATIC", 2), ("DYNAMIC", 10)]
