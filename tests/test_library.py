"""minidl.library (torch.library): custom operators made with custom_op (a fake impl,
register_autograd, opcheck, device types) and with define / impl / infer_schema, run the same
on torch 2.13 where it is importable; gradients checked by gradcheck and gradgradcheck."""
import numpy as np
import pytest

import minidl


# ---- custom_op ---------------------------------------------------------------------------------------
def _custom_op_script(T, ns):
    from typing import Optional, Sequence
    Tensor, L, out = T.Tensor, T.library, []

    def scale(x: Tensor, alpha: float, bias: Optional[Tensor] = None) -> Tensor:
        y = x * x * alpha
        return y if bias is None else y + bias

    scale = L.custom_op(f"{ns}::scale", mutates_args=())(scale)

    def setup(ctx, inputs, output):
        x, alpha, bias = inputs
        ctx.alpha, ctx.has_bias = alpha, bias is not None
        ctx.save_for_backward(x)

    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.alpha * x * 2, None, (g if ctx.has_bias else None)

    L.register_autograd(f"{ns}::scale", backward, setup_context=setup)
    x = T.tensor([1., 2., 3.], dtype=T.float64, requires_grad=True)
    b = T.tensor([0.5, 0.5, 0.5], dtype=T.float64, requires_grad=True)
    y = scale(x, 3.0, b)
    gx, gb = T.autograd.grad(y.sum(), (x, b), create_graph=True)
    (ggx,) = T.autograd.grad(gx.sum(), x)  # the registered backward, differentiated
    space = getattr(T.ops, ns)
    out += [y.tolist(), gx.tolist(), gb.tolist(), ggx.tolist(), space.scale(x, 2.0).tolist(),
            space.scale.default(x, alpha=2.0).tolist()]

    @L.custom_op(f"{ns}::twice", mutates_args=(), device_types="cpu")
    def twice(x: Tensor) -> tuple[Tensor, Tensor]:
        return x * 2, x * 3

    @twice.register_fake
    def _(x):
        return T.empty_like(x), T.empty_like(x)

    out.append([t.tolist() for t in twice(T.ones(2))])

    @L.register_kernel(f"{ns}::twice", "cpu")
    def _(x):
        return x * 20, x * 30

    out.append([t.tolist() for t in twice(T.ones(2))])
    y1, y2 = twice(T.ones(2, requires_grad=True))
    with pytest.raises(RuntimeError, match="no autograd formula was registered"):
        (y1 + y2).sum().backward()

    @L.custom_op(f"{ns}::fill", mutates_args=("out",))
    def fill(x: Tensor, out: Tensor) -> None:
        out.copy_(x)

    o = T.zeros(2)
    out.append((fill(T.ones(2), o), o.tolist()))
    with pytest.raises(RuntimeError, match="non-functional operator"):
        L.register_autograd(fill, lambda ctx, g: None)

    @L.custom_op(f"{ns}::sneaky", mutates_args=())
    def sneaky(x: Tensor) -> Tensor:
        x.add_(1)
        return x.clone()

    r = L.opcheck(sneaky, (T.ones(2),), test_utils=("test_schema",), raise_exception=False)
    out.append(str(r["test_schema"]))
    out.append(L.opcheck(scale, (x, 2.0, b), test_utils=("test_schema",
                                                        "test_autograd_registration")))
    out.append(L.opcheck(twice, (T.ones(2),), test_utils=("test_schema", "test_faketensor")))

    @L.custom_op(f"{ns}::alias", mutates_args=())
    def alias(x: Tensor) -> Tensor:
        return x[:1]

    with pytest.raises(RuntimeError, match="may not alias any inputs"):
        alias(T.ones(3))

    def plain(x: Tensor) -> Tensor:
        return x.clone()

    bad_names = [("nons", ValueError), ("a::b::c", ValueError), (f"{ns}::foo-bar", RuntimeError)]
    if T.__name__ != "torch":
        # torch refuses "1a::b" too, but only after registering part of it: its registry then
        # breaks torch.compile's first use later in the process (inductor walks every op)
        bad_names.append(("1a::b", RuntimeError))
    for bad, err in bad_names:
        with pytest.raises(err):
            L.custom_op(bad, mutates_args=())(plain)
    with pytest.raises(ValueError, match="must have a type annotation"):
        L.custom_op(f"{ns}::noann", mutates_args=())(lambda x: x)
    with pytest.raises(ValueError, match="were not found in the custom op's signature"):
        L.custom_op(f"{ns}::badmut", mutates_args=("z",))(plain)

    lib = L.Library(f"{ns}l", "DEF")
    out.append(lib.define("mul2(Tensor x, float a=2.0) -> Tensor"))
    with pytest.raises(RuntimeError, match="Only a single TORCH_LIBRARY"):
        L.Library(f"{ns}l", "DEF")
    with pytest.raises(ValueError, match="Unsupported kind: XYZ"):
        L.Library(f"{ns}l", "XYZ")
    lib.impl("mul2", lambda x, a=2.0: x * a, "CompositeImplicitAutograd")
    space = getattr(T.ops, f"{ns}l")
    xx = T.tensor([1., 2.], requires_grad=True)
    yy = space.mul2(xx)
    yy.sum().backward()
    out += [xx.grad.tolist(), yy.tolist()]
    lib.define("cube(Tensor x) -> Tensor")
    lib.impl("cube", lambda x: x * x * x, "CPU")
    L.register_autograd(f"{ns}l::cube", lambda ctx, g: g * 3 * ctx.saved_tensors[0] ** 2,
                        setup_context=lambda ctx, inputs, output: ctx.save_for_backward(
                            inputs[0]))
    xx = T.tensor([1., 2.], requires_grad=True)
    space.cube(xx).sum().backward()
    out.append(xx.grad.tolist())
    with pytest.raises(RuntimeError, match=r"expected at most 1 argument\(s\) but received 2"):
        space.cube(T.ones(2), 3)
    with pytest.raises(RuntimeError, match="Expected a value of type 'float' for argument 'a'"):
        space.mul2(T.ones(2), "a")
    with pytest.raises(AttributeError, match="has no attribute 'nothere'"):
        space.nothere
    impl_lib = L.Library(f"{ns}l", "IMPL", "CPU")
    with pytest.raises(RuntimeError, match="Cannot define an operator inside of a TORCH_LIBRARY_IMPL"):
        impl_lib.define("q(Tensor x) -> Tensor")
    fragment = L.Library(f"{ns}l", "FRAGMENT")  # kept: torch's drops its ops when collected
    out.append(fragment.define("h(Tensor x) -> Tensor"))
    impl_lib.impl("h", lambda x: x * 3)
    out.append(space.h(T.ones(1)).tolist())

    @L.custom_op(f"{ns}::listy", mutates_args=())
    def listy(xs: Sequence[Tensor], w: Tensor) -> Tensor:
        return xs[0] * w + xs[1]

    L.register_autograd(listy, lambda ctx, g: ([g * ctx.saved_tensors[1], g],
                                               g * ctx.saved_tensors[0]),
                        setup_context=lambda ctx, inputs, output: ctx.save_for_backward(
                            inputs[0][0], inputs[1]))
    a, c, w = (T.tensor(v, requires_grad=True) for v in ([1., 2.], [3., 4.], [5., 6.]))
    listy([a, c], w).sum().backward()
    out += [a.grad.tolist(), c.grad.tolist(), w.grad.tolist()]

    @L.custom_op(f"{ns}::kw", mutates_args=())
    def kw(x: Tensor, *, val: float = 1.0) -> Tensor:
        return x * val

    def kw_setup(ctx, inputs, keyword_only_inputs, output):
        ctx.val = keyword_only_inputs["val"]

    kw.register_autograd(lambda ctx, g: g * ctx.val, setup_context=kw_setup)
    a = T.tensor([1., 2.], requires_grad=True)
    kw(a, val=4.0).sum().backward()
    out.append(a.grad.tolist())

    @L.custom_op(f"{ns}::badgrad", mutates_args=())
    def badgrad(x: Tensor, n: int) -> Tensor:
        return x * n

    badgrad.register_autograd(lambda ctx, g: (g, g))
    with pytest.raises(RuntimeError, match="different than None at position 2"):
        badgrad(T.ones(2, requires_grad=True), 2).sum().backward()
    badgrad.register_autograd(lambda ctx, g: g)
    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        badgrad(T.ones(2, requires_grad=True), 2).sum().backward()
    out.append(str(scale._schema))
    return out


def test_custom_ops():
    out = _custom_op_script(minidl, "gapsm")
    assert out[0] == [3.5, 12.5, 27.5] and out[3] == [6.0, 6.0, 6.0]
    assert out[-1] == "(Tensor x, float alpha, Tensor? bias=None) -> Tensor"


def test_custom_ops_match_torch():
    torch = pytest.importorskip("torch")
    assert _custom_op_script(minidl, "gapsm2") == _custom_op_script(torch, "gapst")


def test_custom_op_gradcheck_and_gradgradcheck():
    from minidl.library import custom_op
    from minidl.testing import gradcheck, gradgradcheck

    @custom_op("gapgc::softsq", mutates_args=())
    def softsq(x: minidl.Tensor, w: minidl.Tensor) -> minidl.Tensor:
        return (x * w).tanh() * x

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, g):
        x, w = ctx.saved_tensors
        t = (x * w).tanh()
        dt = 1 - t * t
        return g * (dt * w * x + t), g * dt * x * x

    softsq.register_autograd(backward, setup_context=setup_context)
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal(5), dtype=minidl.float64, requires_grad=True)
    w = minidl.tensor(rng.standard_normal(5), dtype=minidl.float64, requires_grad=True)
    assert gradcheck(softsq, (x, w))
    assert gradgradcheck(softsq, (x, w))
    assert minidl.library.opcheck(softsq, (x, w), test_utils=(
        "test_schema", "test_autograd_registration")) == {
        "test_schema": "SUCCESS", "test_autograd_registration": "SUCCESS"}
    # a wrong formula is caught by opcheck's gradcheck
    softsq.register_autograd(lambda ctx, g: (g, g), setup_context=setup_context)
    with pytest.raises(minidl.library.OpCheckError, match="test_autograd_registration"):
        minidl.library.opcheck(softsq, (x, w), test_utils="test_autograd_registration")
    with pytest.raises(ValueError, match="no compiler"):
        minidl.library.opcheck(softsq, (x, w), test_utils="test_aot_dispatch_dynamic")
    r = minidl.library.opcheck(softsq, (x, w), test_utils="test_faketensor",
                               raise_exception=False)
    assert "no fake impl registered" in str(r["test_faketensor"])


def test_custom_op_device_types():
    from minidl.library import custom_op

    @custom_op("gapdev::only_cuda", mutates_args=(), device_types="cuda")
    def only_cuda(x: minidl.Tensor) -> minidl.Tensor:
        return x + 1

    with pytest.raises(NotImplementedError, match="'CPU' backend"):
        only_cuda(minidl.ones(2))
    only_cuda.register_kernel("cpu")(lambda x: x + 2)
    assert only_cuda(minidl.ones(2)).tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match="unknown device type"):
        only_cuda.register_kernel("tpu", lambda x: x)


# ---- define, impl and infer_schema -------------------------------------------------------------------
def _define_impl_script(T, ns):
    from typing import Optional
    L, out = T.library, []
    L.define(f"{ns}::sq", "(Tensor x, float s=1.0) -> Tensor")

    @L.impl(f"{ns}::sq", "cpu")
    def _(x, s=1.0):
        return x * x * s

    space = getattr(T.ops, ns)
    out.append(space.sq(T.tensor([1., 2.]), 3.0).tolist())
    L.define(f"{ns}::two", "(Tensor x) -> (Tensor, Tensor)")
    L.impl(f"{ns}::two", "CompositeImplicitAutograd", lambda x: (x * 2, x.sin()))
    x = T.tensor([1., 2.], dtype=T.float64, requires_grad=True)
    a, b = space.two(x)
    (a + b).sum().backward()
    out.append(x.grad.tolist())

    def f(x: T.Tensor, n: int, xs: list[T.Tensor], o: Optional[float] = None, *,
          flag: bool = True) -> list[T.Tensor]:
        return xs

    def g(x: T.Tensor, y: T.Tensor) -> None:
        pass

    out += [L.infer_schema(f, mutates_args=()), L.infer_schema(g, mutates_args=("y",))]
    return out


def test_library_define_impl_infer_schema():
    out = _define_impl_script(minidl, "gapdefm")
    assert out[0] == [3.0, 12.0]
    assert out[2] == "(Tensor x, SymInt n, Tensor[] xs, float? o=None, *, bool flag=True) -> Tensor[]"
    assert out[3] == "(Tensor x, Tensor(a1!) y) -> ()"


def test_library_define_impl_matches_torch():
    torch = pytest.importorskip("torch")
    assert _define_impl_script(minidl, "gapdefm2") == _define_impl_script(torch, "gapdeft")
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
