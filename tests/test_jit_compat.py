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
