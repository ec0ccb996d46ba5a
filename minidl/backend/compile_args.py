"""torch.compile's mode and backend names, and its checks of them, shared by
``minidl.compile`` and ``Module.compile`` (kept at the bottom layer so that nn can use them):
minidl compiles nothing, but a mistyped name must still raise as in torch."""
from __future__ import annotations


COMPILE_MODES = ("default", "lite", "reduce-overhead", "max-autotune-no-cudagraphs",
                 "max-autotune")
COMPILE_BACKENDS = ("inductor", "eager", "aot_eager", "cudagraphs", "openxla", "tvm", "ts",
                    "aot_ts", "aot_eager_decomp_partition", "aot_eager_default_partitioner",
                    "eager_debug", "eager_noexcept", "pre_dispatch_eager", "openxla_eval")


def check_compile_arguments(backend="inductor", mode=None, options=None):
    """torch.compile's checks of its arguments (also Module.compile's): an unknown ``mode`` or
    ``backend`` name, or ``mode`` and ``options`` together, raise at once."""
    if isinstance(backend, str):
        if backend not in COMPILE_BACKENDS:
            raise RuntimeError(f"compile: invalid backend {backend!r}; torch's are "
                               f"{', '.join(COMPILE_BACKENDS)} (or a callable)")
    elif not callable(backend):
        raise TypeError(f"compile: backend must be a name or a callable, got "
                        f"{type(backend).__name__}")
    if backend == "inductor":
        if mode is not None and options is not None:
            raise RuntimeError("compile: Either mode or options can be specified, but both "
                               "can't be specified at the same time.")
        if mode is not None and mode not in COMPILE_MODES:
            raise RuntimeError(f"compile: Unrecognized mode={mode}, should be one of: "
                               f"{', '.join(COMPILE_MODES)}")
