"""minidl.jit and minidl.compiler: the names scripts written for PyTorch use, which here run
the code eagerly, as it is (the same code runs under torch for comparison)."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn


def _program(lib):
    """The same script for torch and minidl: jit decorators, a scripted module, fork/wait."""
    jit = lib.jit

    @jit.script
    def scaled(x, k: float):
        if jit.is_scripting():
            return x * 0  # TorchScript's branch: torch compiles it, minidl runs eagerly
        return x * k

    class Block(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = lib.nn.Linear(3, 2)

        @jit.ignore
        def debug(self):
            return "python"

        @jit.export
        def twice(self, x):
            return self.fc(x) * 2

        def forward(self, x):
            return self.fc(x)

    lib.manual_seed(0)
    block = Block()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = jit.script(block)
    x = lib.ones(4, 3)
    fut = jit.fork(scaled, x, 3.0)
    return block, scripted, jit.wait(fut), scripted.twice(x), scripted.debug()


def test_scripts_written_for_torch_run_eagerly():
    block, scripted, forked, twice, debug = _program(minidl)
    assert scripted is block and debug == "python"
    assert forked.numpy().tolist() == [[3.0] * 3] * 4
    np.testing.assert_allclose(twice.numpy(), 2 * block(minidl.ones(4, 3)).numpy())
    torch = pytest.importorskip("torch")
    _, tscripted, tforked, _, tdebug = _program(torch)  # the same program runs under torch
    assert tdebug == debug
    assert tforked.tolist() == [[0.0] * 3] * 4  # torch took the scripted branch; minidl cannot


def test_script_and_trace_warn_once_and_return_the_model(monkeypatch):
    monkeypatch.setattr(minidl.jit, "_warned", False)
    model = nn.Linear(2, 2)
    with pytest.warns(UserWarning, match="no TorchScript; the model runs eagerly"):
        assert minidl.jit.trace(model, minidl.ones(1, 2)) is model
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        assert minidl.jit.script(model) is model
    with pytest.raises(TypeError, match="expected a Module or a function, got int"):
        minidl.jit.script(3)
    assert not minidl.jit.is_tracing() and minidl.jit.annotate(int, 5) == 5


def test_freeze_save_and_load():
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="only implemented for modules in eval mode"):
        minidl.jit.freeze(model)
    assert minidl.jit.freeze(model.eval()) is model
    with pytest.raises(RuntimeError, match=r"minidl.save\(model.state_dict\(\), path\)"):
        minidl.jit.save(model, "m.pt")
    with pytest.raises(RuntimeError, match="cannot run TorchScript archives"):
        minidl.jit.load("m.pt")


def test_fork_keeps_the_error_for_wait():
    fut = minidl.jit.fork(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        minidl.jit.wait(fut)


def test_compiler_namespace():
    @minidl.compiler.disable
    def f(x):
        return x + 1

    @minidl.compiler.disable(recursive=False)
    def g(x):
        return x + 2
    assert f(1) == 2 and g(1) == 3
    assert not minidl.compiler.is_compiling() and not minidl.compiler.is_dynamo_compiling()
    assert minidl.compiler.compile is minidl.compile
    minidl.compiler.reset()


# ---- jit.Final, script_if_tracing, isinstance; compile's arguments and torch.compiler's other names ----
def test_jit_final_annotation_and_script_if_tracing_and_isinstance():
    """``x: torch.jit.Final[int]`` in a class body raised TypeError ('type' object is not
    subscriptable: Final was ``object``); torch.jit.script_if_tracing and torch.jit.isinstance
    were missing."""
    from typing import Dict, List, Optional, Tuple

    from minidl import jit

    class M(nn.Module):
        scale: jit.Final[int] = 3

    assert M.scale == 3

    @jit.script_if_tracing
    def double(x):
        return x * 2
    assert double(2) == 4
    assert jit.isinstance([1, 2], List[int]) and not jit.isinstance([1, "a"], List[int])
    assert jit.isinstance({"a": 1}, Dict[str, int]) and not jit.isinstance({"a": 1.0},
                                                                            Dict[str, int])
    assert jit.isinstance(None, Optional[int]) and jit.isinstance(3, Optional[int])
    assert jit.isinstance((1, "a"), Tuple[int, str]) and not jit.isinstance((1, 2),
                                                                            Tuple[int, str])
    assert jit.isinstance(minidl.ones(1), minidl.Tensor) and not jit.isinstance(1, str)


def test_compile_checks_mode_backend_and_options_as_torch():
    """minidl.compile / compiler.compile accepted any mode and backend name (a typo such as
    mode='max-autotun' passed silently) and mode with options together; torch raises on each
    at once."""
    from minidl import compiler

    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="Unrecognized mode=max-autotun"):
        minidl.compile(model, mode="max-autotun")
    with pytest.raises(RuntimeError, match="Either mode or options"):
        compiler.compile(model, mode="max-autotune", options={"triton.cudagraphs": True})
    with pytest.raises(RuntimeError, match="invalid backend 'inductr'"):
        minidl.compile(model, backend="inductr")
    # as torch's: accepted, and the model comes back wrapped (an OptimizedModule running it)
    assert minidl.compile(model, backend="eager", mode="anything")._orig_mod is model
    assert minidl.compile(model, mode="reduce-overhead")._orig_mod is model
    assert minidl.compile(model, backend=lambda gm, inputs: gm)._orig_mod is model


def test_module_compile_checks_its_arguments():
    model = minidl.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="Unrecognized mode"):
        model.compile(mode="max-autotun")
    with pytest.raises(RuntimeError, match="invalid backend"):
        model.compile(backend="inductr")
    with pytest.raises(TypeError):
        model.compile("max-autotune")  # torch's Module.compile takes keywords only
    assert model.compile(mode="reduce-overhead", disable=True) is None


def test_compiler_set_stance_and_the_other_missing_names():
    """torch.compiler.set_stance (function, context manager, decorator), is_exporting,
    list_backends, substitute_in_graph, nested_compile_region and wrap_numpy were missing
    (AttributeError in scripts written for torch 2.13)."""
    from minidl import compiler

    compiler.set_stance("force_eager")
    assert compiler._stance == "force_eager"
    compiler.set_stance("default")
    with compiler.set_stance("eager_on_recompile"):
        assert compiler._stance == "eager_on_recompile"
    assert compiler._stance == "default"

    @compiler.set_stance("force_eager")
    def inside():
        return compiler._stance
    assert compiler._stance == "default" and inside() == "force_eager"
    assert compiler._stance == "default"
    with pytest.raises(ValueError, match="unknown stance 'eager'"):
        compiler.set_stance("eager")
    assert not compiler.is_exporting() and "inductor" in compiler.list_backends()
    assert compiler.nested_compile_region(abs) is abs
    assert compiler.substitute_in_graph(abs)(len) is len

    @compiler.wrap_numpy
    def add(a, b):
        return a + b, np.float64(1.0)
    out, one = add(minidl.ones(2), minidl.tensor(np.arange(2.0), dtype=minidl.float64))
    assert isinstance(out, minidl.Tensor) and out.dtype == minidl.float64
    assert out.numpy().tolist() == [1.0, 2.0] and one == 1.0
