"""``torch.compiler``'s names: minidl runs eagerly (no graph compiler), so ``compile`` is
``minidl.compile`` (which returns the model), ``disable`` and the other decorators leave
functions as they are, and ``is_compiling()`` is False."""
from __future__ import annotations

from .runtime import compile  # noqa: F401

__all__ = ["compile", "disable", "is_compiling", "is_dynamo_compiling", "is_exporting", "reset",
           "allow_in_graph", "assume_constant_result", "cudagraph_mark_step_begin", "set_stance",
           "list_backends", "substitute_in_graph", "nested_compile_region", "wrap_numpy"]


def disable(fn=None, recursive=True, *, reason=None):
    """``@torch.compiler.disable``: the function stays as it is (it runs eagerly anyway)."""
    if fn is None:
        return lambda f: f
    return fn


def is_compiling() -> bool:
    return False


is_dynamo_compiling = is_compiling


def is_exporting() -> bool:
    return False


def list_backends(exclude_tags=("debug", "experimental")):
    """The backend names ``compile`` accepts (all run eagerly here)."""
    return ["cudagraphs", "inductor", "openxla", "tvm"]


_STANCES = ("default", "force_eager", "eager_on_recompile", "fail_on_recompile",
            "eager_then_compile", "aot_eager_then_compile")
_stance = "default"


class set_stance:  # noqa: N801  (torch's name; a function, context manager and decorator)
    """``torch.compiler.set_stance(stance)``: recorded (nothing is compiled here, so every
    stance runs eagerly); as a context manager or decorator the previous stance comes back
    after it. An unknown stance is refused as torch's."""

    def __init__(self, stance="default", *, skip_guard_eval_unsafe=False, force_backend=None):
        global _stance
        if stance not in _STANCES:
            raise ValueError(f"set_stance: unknown stance {stance!r}; expected one of "
                             f"{', '.join(_STANCES)}")
        self._previous, _stance = _stance, stance
        self.stance = stance

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _stance
        _stance = self._previous
        return False

    def __call__(self, fn):
        import functools

        global _stance
        stance, _stance = self.stance, self._previous  # as a decorator: only while fn runs

        @functools.wraps(fn)
        def run(*args, **kwargs):
            global _stance
            previous, _stance = _stance, stance
            try:
                return fn(*args, **kwargs)
            finally:
                _stance = previous
        return run


def substitute_in_graph(original_fn, *, can_constant_fold_through=False,
                        skip_signature_check=False):
    """A decorator that leaves the function as it is (there is no graph to substitute in)."""
    return lambda fn: fn


def nested_compile_region(fn=None, *, options=None):
    """``@torch.compiler.nested_compile_region``: the function stays as it is."""
    return (lambda f: f) if fn is None else fn


def wrap_numpy(fn):
    """``fn`` (NumPy arrays in, NumPy arrays out) as a function of Tensors: Tensor arguments
    (also inside lists, tuples and dicts) are passed as arrays, arrays returned come back as
    Tensors of the same dtype."""
    import functools

    import numpy as np

    from .tensor import Tensor

    def convert(x, to_array):
        if isinstance(x, (list, tuple)):
            return type(x)(convert(v, to_array) for v in x)
        if isinstance(x, dict):
            return {k: convert(v, to_array) for k, v in x.items()}
        if to_array and isinstance(x, Tensor):
            return x.numpy()
        if not to_array and isinstance(x, np.ndarray):
            return Tensor(x)
        return x

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return convert(fn(*convert(args, True), **convert(kwargs, True)), False)
    return run


def reset():
    """Nothing compiled, nothing to forget."""


def allow_in_graph(fn):
    return fn


def assume_constant_result(fn):
    return fn


def cudagraph_mark_step_begin():
    """No CUDA graphs here: nothing to mark."""
