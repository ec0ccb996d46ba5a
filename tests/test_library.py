"""minidl.library (torch.library): custom operators made with custom_op (a fake impl,
register_autograd, opcheck, device types) and with define / impl / infer_schema, run the same
on torch 2.13 where it is importable; gradients checked by gradcheck and gradgradcheck."""
import numpy as np
import pytest

import minidl


# ---- minidl.library ---------------------------------------------------------------------------

def test_a_mutating_custom_op_that_returns_nothing_takes_an_input_that_requires_grad():
    """A custom op returning None (mutating its argument) with an argument that requires grad
    went through autograd, ran its kernel (the mutation done) and then raised that an op with an
    autograd formula must return Tensors; torch runs it."""
    from minidl.library import custom_op

    @custom_op("audit_n::bump", mutates_args=("x",))
    def bump(x: minidl.Tensor) -> None:
        x.data[...] += 1

    x = minidl.zeros(3, requires_grad=True)
    assert bump(x) is None
    np.testing.assert_array_equal(x.detach().numpy(), [1.0, 1.0, 1.0])
    assert x.requires_grad and x.grad_fn is None


def test_a_custom_op_is_recorded_by_fx_tracing():
    """A custom op called on an fx Proxy raised "Expected a value of type 'Tensor' ... found
    type 'Proxy'"; torch.fx records torch.ops.ns.name.default as one call_function node."""
    from minidl.library import custom_op

    @custom_op("audit_n::twice_sin", mutates_args=())
    def twice_sin(x: minidl.Tensor) -> minidl.Tensor:
        return x.sin() * 2

    for call in (twice_sin, minidl.ops.audit_n.twice_sin,
                 minidl.ops.audit_n.twice_sin.default):
        def f(t, call=call):
            return call(t) + 1

        gm = minidl.fx.symbolic_trace(f, concrete_args={"call": call})
        targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
        assert minidl.ops.audit_n.twice_sin.default in targets
        x = minidl.randn(4)
        np.testing.assert_allclose(gm(x).numpy(), (np.sin(x.numpy()) * 2 + 1), rtol=1e-6)
    with pytest.raises(RuntimeError, match="Expected a value of type 'Tensor'"):
        twice_sin(3.0)  # outside tracing a wrong argument is still refused


# ---- minidl.library: impl without a definition, kernels checked against the schema ------------

def test_an_impl_without_a_definition_is_no_operator():
    """Library.impl of a name never defined made minidl.ops.<ns>.<name> an attribute whose call
    raised an empty RuntimeError; torch has no such attribute until the operator is defined."""
    lib = minidl.library.Library("audit_n_impl", "DEF")
    lib.impl("later", lambda x: x * 2, "CPU")
    with pytest.raises(AttributeError, match="has no attribute 'later'"):
        minidl.ops.audit_n_impl.later
    assert "later" not in dir(minidl.ops.audit_n_impl)
    lib.define("later(Tensor x) -> Tensor")  # defined afterwards, the impl given before runs
    np.testing.assert_array_equal(minidl.ops.audit_n_impl.later(minidl.ones(2)).numpy(),
                                  [2.0, 2.0])


def test_a_custom_op_kernel_must_return_what_its_schema_says():
    """A kernel returning a NumPy array for '-> Tensor', or one value for '-> (Tensor, Tensor)',
    had that handed back as the op's result (and, with an input requiring grad, an unclear
    error); torch refuses such a result ("Unable to cast ... to Tensor")."""
    from minidl.library import custom_op

    @custom_op("audit_n::as_array", mutates_args=())
    def as_array(x: minidl.Tensor) -> minidl.Tensor:
        return x.numpy() * 2

    @custom_op("audit_n::one_of_two", mutates_args=())
    def one_of_two(x: minidl.Tensor) -> tuple[minidl.Tensor, minidl.Tensor]:
        return (x * 2,)

    for requires_grad in (False, True):
        x = minidl.ones(2, requires_grad=requires_grad)
        with pytest.raises(RuntimeError, match="Unable to cast ndarray to Tensor"):
            as_array(x)
        with pytest.raises(RuntimeError, match="returned 1 values.*returns 2"):
            one_of_two(x)
