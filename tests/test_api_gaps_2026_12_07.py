"""torch API gaps filled on 2026-12-07: autograd.graph.register_multi_grad_hook, the global
module registration hooks, minidl.library (custom ops), minidl.masked, segment_reduce and the
unsigned dtypes. Parity tests run the same code on torch 2.13 where it is importable."""
import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck, gradgradcheck


# ---- 1. autograd.graph.register_multi_grad_hook ---------------------------------------------

def _multi_hook_script(T, R):
    a = T.tensor([1., 2., 3.], requires_grad=True)
    b = T.tensor([4., 5., 6.], requires_grad=True)
    c, d = a * b, a * b
    log = []
    h = R((a, b, c, d), lambda gs: log.append([None if g is None else g.tolist() for g in gs]))
    c.sum().backward(retain_graph=True)
    c.sum().backward(inputs=(a,), retain_graph=True)
    (c + d).sum().backward(retain_graph=True)
    h.remove()
    c.sum().backward(retain_graph=True)  # removed: no call
    e, f = c * 2, a + b
    h = R((c, f, e), lambda gs: log.append([None if g is None else g.tolist() for g in gs]))
    T.autograd.grad((e * 3).sum(), (c,), retain_graph=True)
    T.autograd.grad((e * 3 + f).sum(), (a,), retain_graph=True)
    h.remove()
    anys = []
    with R((c, e), lambda g: anys.append(g.tolist()), mode="any"):  # e's grad comes first
        (e * 3 + c).sum().backward(retain_graph=True)
        c.sum().backward(retain_graph=True)
    (e * 3).sum().backward(retain_graph=True)  # the with block removed it
    return log, anys


def test_multi_grad_hook_calls():
    from minidl.autograd.graph import register_multi_grad_hook
    log, anys = _multi_hook_script(minidl, register_multi_grad_hook)
    assert log[0] == [[4., 5., 6.], [1., 2., 3.], [1., 1., 1.], None]
    assert log[1] == [[4., 5., 6.], None, [1., 1., 1.], None]
    assert log[2] == [[8., 10., 12.], [2., 4., 6.], [1., 1., 1.], [1., 1., 1.]]
    assert len(log) == 5 and log[3] == [[6., 6., 6.], None, [3., 3., 3.]]
    assert anys == [[3., 3., 3.], [1., 1., 1.]]


def test_multi_grad_hook_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.autograd.graph import register_multi_grad_hook as torch_hook

    from minidl.autograd.graph import register_multi_grad_hook
    assert _multi_hook_script(minidl, register_multi_grad_hook) == \
        _multi_hook_script(torch, torch_hook)


def test_multi_grad_hook_refusals_and_leaf_grad():
    from minidl.autograd.graph import register_multi_grad_hook
    a = minidl.tensor([1., 2.], requires_grad=True)
    with pytest.raises(ValueError, match="Expects mode to be one of"):
        register_multi_grad_hook((a,), print, mode="every")
    with pytest.raises(RuntimeError, match="does not require grad"):
        register_multi_grad_hook((a, minidl.tensor([1.])), print)
    seen = []
    register_multi_grad_hook((a, minidl.tensor([1.])), seen.append, mode="any")
    (a * a).sum().backward()
    assert seen[0].tolist() == [2., 4.]
    # autograd.grad with a leaf among the tensors (torch 2.13 refuses this case; minidl answers)
    b = minidl.tensor([3., 4.], requires_grad=True)
    got = []
    register_multi_grad_hook((a, b), lambda gs: got.append([g is None for g in gs]))
    minidl.autograd.grad((a * b).sum(), (b,))
    assert got == [[True, False]]
    # the gradients reaching the leaves are not changed by the hook
    assert a.grad.tolist() == [2., 4.] and b.grad is None


# ---- 2. global module registration hooks -----------------------------------------------------

def _registration_script(T):
    nn = T.nn
    M = nn.modules.module
    log = []

    def on_param(m, name, p):
        log.append(("p", type(m).__name__, name, tuple(p.shape)))

    def on_buffer(m, name, b):
        log.append(("b", type(m).__name__, name, None if b is None else tuple(b.shape)))
        if name == "swap":
            return T.ones(5)

    def on_module(m, name, sub):
        log.append(("m", type(m).__name__, name, type(sub).__name__))
        if name == "repl":
            return nn.Tanh()

    hs = [M.register_module_parameter_registration_hook(on_param),
          M.register_module_buffer_registration_hook(on_buffer),
          M.register_module_module_registration_hook(on_module)]
    try:  # global hooks: removed even when the script fails, or every later module sees them
        nn.Linear(2, 3)
        nn.BatchNorm1d(4)
        nn.Sequential(nn.ReLU(), nn.Linear(1, 1))
        m = nn.Module()
        m.register_buffer("swap", T.zeros(2))
        log.append(m.swap.tolist())
        m.register_buffer("nb", None)
        m.nb = T.zeros(3)
        m.w = nn.Parameter(T.zeros(2))
        m.register_parameter("w2", None)  # None: no call
        m.w2 = nn.Parameter(T.zeros(1))
        m.w2 = None
        m.repl = nn.ReLU()
        log.append(type(m.repl).__name__)
        m.add_module("a", None)
        m.register_module("b", nn.ReLU())
        m.b = None
        pl = nn.ParameterList([nn.Parameter(T.zeros(1))])
        pl[0] = nn.Parameter(T.zeros(2))
        pd = nn.ParameterDict({"k": nn.Parameter(T.zeros(1))})
        pd["k"] = nn.Parameter(T.zeros(3))
        ml = nn.ModuleList([nn.ReLU()])
        ml[0] = nn.Tanh()
        ml.append(nn.ReLU())
    finally:
        for h in hs:
            h.remove()
    nn.Linear(1, 1)  # removed: no calls
    log.append([name for name, _ in m.named_children()])
    return log


def test_registration_hooks_calls_and_replacements():
    log = _registration_script(minidl)
    assert log[:2] == [("p", "Linear", "weight", (3, 2)), ("p", "Linear", "bias", (3,))]
    assert ("b", "BatchNorm1d", "num_batches_tracked", ()) in log
    assert [1.0] * 5 in log and "Tanh" in log  # the hooks' replacements were registered
    assert ("b", "Module", "nb", None) in log and ("m", "Module", "b", "NoneType") in log
    assert not any(e[:3] == ("p", "Module", "w2") and e[3] is None for e in log
                   if isinstance(e, tuple))
    assert log[-1] == ["repl"] and len(log) == 30


def test_registration_hooks_match_torch():
    torch = pytest.importorskip("torch")
    assert _registration_script(minidl) == _registration_script(torch)


def test_registration_hook_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        minidl.nn.modules.module.register_module_buffer_registration_hook(3)


# ---- 3. minidl.library: custom operators ------------------------------------------------------

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


# ---- 4. minidl.masked -------------------------------------------------------------------------

_X = np.array([[0.5, -1.2, 2.0, 0.3], [1.5, 0.7, -0.4, -2.2], [0.1, 0.9, 1.1, -0.6]])
_MASK = np.array([[True, False, True, True], [False, False, False, False],
                  [True, True, False, True]])

# (name, positional args after input, keyword args); each is run with mask=_MASK
_MASKED_CASES = [
    ("sum", (), {}), ("sum", (1,), {}), ("sum", ((0, 1),), {"keepdim": True}),
    ("prod", (1,), {}), ("prod", (), {"keepdim": True}),
    ("amax", (1,), {}), ("amax", (0,), {"keepdim": True}), ("amin", (1,), {}), ("amin", (), {}),
    ("argmax", (1,), {}), ("argmin", (1,), {"keepdim": True}),
    ("mean", (1,), {}), ("mean", (), {}), ("median", (1,), {}), ("median", (0,), {}),
    ("norm", (2.0, 1), {}), ("norm", (1.0, None), {}), ("norm", (float("inf"), 1), {}),
    ("norm", (float("-inf"), 1), {}),
    ("var", (1,), {}), ("var", (1,), {"correction": 0}), ("var", (0,), {"unbiased": False}),
    ("std", (1,), {"keepdim": True}), ("std", (None,), {}),
    ("logsumexp", (1,), {}), ("logsumexp", (), {}),
    ("softmax", (1,), {}), ("log_softmax", (1,), {}), ("softmin", (0,), {}),
    ("normalize", (2.0, 1), {}), ("cumsum", (1,), {}), ("cumprod", (1,), {}),
    ("sum", (1,), {"dtype": "float32"}),
]


def _run_masked(T, name, args, kwargs, mask_shape=None, grad_seed=1):
    kwargs = dict(kwargs)
    if "dtype" in kwargs:
        kwargs["dtype"] = getattr(T, kwargs["dtype"])
    x = T.tensor(_X, dtype=T.float64, requires_grad=True)
    mask = _MASK if mask_shape is None else _MASK[0]
    y = getattr(T.masked, name)(x, *args, mask=T.tensor(mask), **kwargs)
    out = {"value": y.detach().numpy().copy(), "dtype": str(y.dtype).split(".")[-1]}
    if y.requires_grad:
        g = np.random.default_rng(grad_seed).standard_normal(tuple(y.shape))
        v = y.detach().numpy()
        g = np.where(np.isfinite(v), g, 0.0)
        finite = T.where(T.tensor(np.isfinite(v)), y, T.zeros_like(y))
        (finite * T.tensor(g, dtype=y.dtype)).sum().backward()
        out["grad"] = x.grad.numpy().copy()
    return out


@pytest.mark.parametrize("name,args,kwargs", _MASKED_CASES)
def test_masked_matches_torch(name, args, kwargs):
    torch = pytest.importorskip("torch")
    got = _run_masked(minidl, name, args, kwargs)
    want = _run_masked(torch, name, args, kwargs)
    assert got["dtype"] == want["dtype"]
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-10, atol=1e-12)
    assert ("grad" in got) == ("grad" in want)
    if "grad" in got:
        np.testing.assert_allclose(got["grad"], want["grad"], rtol=1e-9, atol=1e-12)


def test_masked_fully_masked_slices_and_gradients():
    x = minidl.tensor(_X, dtype=minidl.float64, requires_grad=True)
    m = minidl.tensor(_MASK)
    assert minidl.masked.sum(x, 1, mask=m)[1].item() == 0.0
    assert minidl.masked.prod(x, 1, mask=m)[1].item() == 1.0
    assert minidl.masked.amax(x, 1, mask=m)[1].item() == -np.inf
    assert minidl.masked.amin(x, 1, mask=m)[1].item() == np.inf
    assert np.isnan(minidl.masked.mean(x, 1, mask=m)[1].item())
    assert np.isnan(minidl.masked.var(x, 1, mask=m)[1].item())
    assert np.isnan(minidl.masked.median(x, 1, mask=m)[1].item())
    assert np.isnan(minidl.masked.softmax(x, 1, mask=m)[1].numpy()).all()
    assert minidl.masked.softmax(x, 1, mask=m)[0, 1].item() == 0.0
    minidl.masked.sum(x, 1, mask=m).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), _MASK.astype(float))
    ints = minidl.tensor([[1, 2], [3, 4]])
    im = minidl.tensor([[True, False], [False, False]])
    assert minidl.masked.sum(ints, 1, mask=im).dtype == minidl.int64
    assert minidl.masked.amax(ints, 1, mask=im).tolist() == [1, np.iinfo(np.int64).min]
    with pytest.raises(ValueError, match="Could not infer output dtype"):
        minidl.masked.mean(ints, mask=im)
    with pytest.raises(ValueError, match="fully masked out rows"):
        minidl.masked.median(ints, 1, mask=im)
    with pytest.raises(IndexError, match="mask dimensionality higher"):
        minidl.masked.sum(x[0], mask=m)
    with pytest.raises(RuntimeError, match="appears multiple times"):
        minidl.masked.sum(x, (1, -1), mask=m)


@pytest.mark.parametrize("name,args,kwargs", [
    ("sum", (1,), {}), ("prod", (1,), {}), ("amax", (1,), {}), ("mean", (1,), {}),
    ("norm", (2.0, 1), {}), ("var", (1,), {}), ("std", (1,), {}), ("logsumexp", (1,), {}),
    ("softmax", (1,), {}), ("log_softmax", (1,), {}), ("softmin", (1,), {}),
    ("normalize", (2.0, 1), {}), ("cumsum", (1,), {}), ("cumprod", (1,), {}),
    ("median", (1,), {})])
def test_masked_gradcheck(name, args, kwargs):
    mask = minidl.tensor(np.array([[True, False, True, True], [True, True, False, True]]))
    x = minidl.tensor(_X[[0, 2]], dtype=minidl.float64, requires_grad=True)
    op = getattr(minidl.masked, name)

    def fn(t):
        out = op(t, *args, mask=mask, **kwargs)
        if name == "log_softmax":  # -inf at the masked-out places: left out of the check
            out = minidl.where(mask, out, minidl.zeros_like(out))
        return out

    assert gradcheck(fn, (x,))
    if name in ("sum", "mean", "var", "logsumexp", "softmax", "normalize", "cumprod"):
        assert gradgradcheck(fn, (x,))


# ---- 5. segment_reduce ------------------------------------------------------------------------

_SEG_DATA = [[1., 5., 2., 2., 3., -1.], [0., 4., 4., 1., 2., 2.]]
_SEG_LENGTHS = [[2, 0, 3, 1], [1, 2, 0, 3]]


def _segment_script(T):
    out = []
    d = T.tensor(_SEG_DATA, dtype=T.float64, requires_grad=True)
    lengths = T.tensor(_SEG_LENGTHS)
    for reduce in ("sum", "mean", "max", "min", "prod", "amax", "amin"):
        for initial in (None, 7.0, 2.0):
            y = T.segment_reduce(d, reduce, lengths=lengths, axis=1, initial=initial)
            (g,) = T.autograd.grad(y, d, T.ones_like(y))
            out.append((reduce, initial, y.tolist(), g.tolist()))
    offsets = T.tensor([[0, 2, 2, 5, 6], [0, 1, 3, 3, 6]])
    out.append(T.segment_reduce(d, "mean", offsets=offsets, axis=-1).tolist())
    x = T.tensor([1., 2., 2., 0., 3.], dtype=T.float64, requires_grad=True)
    y = T.segment_reduce(x, "prod", lengths=T.tensor([2, 3], dtype=T.int32))
    out.append(T.autograd.grad(y.sum(), x)[0].tolist())
    y = T.segment_reduce(x, "max", lengths=T.tensor([1, 2, 2]))
    out.append(T.autograd.grad(y.sum(), x)[0].tolist())
    out.append(T.segment_reduce(x, "sum", lengths=T.tensor([2, 2]), unsafe=True).tolist())
    out.append(T.segment_reduce(x, "sum", offsets=T.tensor([1, 3, 5])).tolist())
    z = T.arange(12.).reshape(2, 3, 2).requires_grad_()
    y = T.segment_reduce(z, "mean", lengths=T.tensor([[2, 1], [0, 3]]), axis=1)
    y.sum().backward()
    out += [y.tolist(), z.grad.tolist()]
    out.append(T.segment_reduce(T.tensor([1., 2., 2., 0.]), "prod", lengths=T.tensor([0, 4, 0]),
                                initial=3).tolist())
    return out


def test_segment_reduce_values():
    out = _segment_script(minidl)
    assert out[0] == ("sum", None, [[6.0, 0.0, 7.0, -1.0], [0.0, 8.0, 0.0, 5.0]], [[1.0] * 6] * 2)
    mean = out[3][2]
    assert np.isnan(mean[0][1]) and np.isnan(mean[1][2])  # empty segments
    assert out[6][2] == [[5.0, -np.inf, 3.0, -1.0], [0.0, 4.0, -np.inf, 2.0]]
    assert out[6][3][1] == [1.0, 0.5, 0.5, 0.0, 0.5, 0.5]  # ties share the gradient
    assert out[7][2] == [[7.0] * 4] * 2 and out[7][3] == [[0.0] * 6] * 2  # initial won


def test_segment_reduce_matches_torch():
    torch = pytest.importorskip("torch")

    def same(a, b):
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(p, q) for p, q in zip(a, b))
        if isinstance(a, float) and np.isnan(a):
            return isinstance(b, float) and np.isnan(b)
        return a == b or (isinstance(a, float) and abs(a - b) < 1e-12)

    assert same(_segment_script(minidl), _segment_script(torch))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("initial", [None, 0.5])
def test_segment_reduce_gradcheck(reduce, initial):
    rng = np.random.default_rng(3)
    x = minidl.tensor(rng.standard_normal((2, 7, 3)), dtype=minidl.float64, requires_grad=True)
    # an empty segment (NaN or inf without initial) where initial is given
    lengths = minidl.tensor([[3, 0, 4] if initial is not None else [3, 1, 3], [1, 5, 1]])
    assert gradcheck(lambda t: minidl.segment_reduce(t, reduce, lengths=lengths, axis=1,
                                                     initial=initial), (x,))
    y = minidl.segment_reduce(x, reduce, lengths=lengths, axis=1, initial=initial)
    (g,) = minidl.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError):  # first order only, as torch's
        minidl.autograd.grad(g.sum(), x)


def test_segment_reduce_refusals():
    x = minidl.tensor([1., 2., 3., 4., 5.])
    with pytest.raises(RuntimeError, match="sum to data.size"):
        minidl.segment_reduce(x, "sum", lengths=minidl.tensor([2, 2]))
    with pytest.raises(RuntimeError, match="negative"):
        minidl.segment_reduce(x, "sum", lengths=minidl.tensor([2, -1, 4]))
    with pytest.raises(RuntimeError, match="Either lengths or offsets"):
        minidl.segment_reduce(x, "sum")
    with pytest.raises(ValueError, match="got median"):
        minidl.segment_reduce(x, "median", lengths=minidl.tensor([5]))
    with pytest.raises(TypeError, match="must be Tensor"):
        minidl.segment_reduce(x, "sum", lengths=[2, 3])
    with pytest.raises(NotImplementedError):
        minidl.segment_reduce(minidl.tensor([1, 2]), "sum", lengths=minidl.tensor([2]))
    with pytest.raises(IndexError, match="Dimension out of range"):
        minidl.segment_reduce(x, "sum", lengths=minidl.tensor([5]), axis=1)


# ---- 6. uint16, uint32, uint64 ----------------------------------------------------------------

def _unsigned_script(T):
    out = []
    every = [T.bool, T.uint8, T.int8, T.int16, T.int32, T.int64, T.float16, T.bfloat16,
             T.float32, T.float64, T.complex64, T.complex128, T.uint16, T.uint32, T.uint64]
    for u in (T.uint16, T.uint32, T.uint64):
        for first in (True, False):
            row = []
            for t in every:
                try:
                    row.append(str(T.promote_types(u, t) if first else T.promote_types(t, u))
                               .split(".")[-1])
                except RuntimeError:
                    row.append("refused")
            out.append(row)
    for u in (T.uint16, T.uint32, T.uint64):
        a, b = T.tensor([1, 2, 3], dtype=u), T.tensor([4, 5, 6], dtype=u)
        top = int(T.iinfo(u).max)
        for name, f in [
                ("mul", lambda: a * b), ("div", lambda: a / b), ("eq", lambda: a == b),
                ("ne", lambda: a != b), ("add_float", lambda: a + 1.5),
                ("add_f32", lambda: a + T.tensor([1., 2, 3])), ("sum", lambda: a.sum()),
                ("cumsum", lambda: a.cumsum(0)), ("prod", lambda: a.prod()),
                ("to_f", lambda: a.float()), ("from_f", lambda: T.tensor([1.5, 2.]).to(u)),
                ("and", lambda: a & b), ("or", lambda: a | b), ("xor", lambda: a ^ b),
                ("sort", lambda: a.sort().values), ("zeros", lambda: T.zeros(2, dtype=u)),
                ("full", lambda: T.full((2,), 5, dtype=u)), ("lt_f", lambda: a < 2.5),
                ("idx", lambda: a[1:]), ("cat", lambda: T.cat([a, b])), ("item", lambda: a[0].item()),
                ("mul2", lambda: a * 2), ("eq1", lambda: a == 1), ("and1", lambda: a & 1),
                ("mul0d", lambda: a * T.tensor(2)), ("0dmul", lambda: T.tensor(2, dtype=u) * T.tensor([1, 2])),
                ("mulbool", lambda: a * True), ("where", lambda: T.where(T.tensor([True, False, True]), a, b)),
                ("to_i64", lambda: a.to(T.int64)), ("ones", lambda: T.ones(2, dtype=u)),
                ("top", lambda: T.tensor([top], dtype=u)), ("top_f64", lambda: T.tensor([top], dtype=u).double()),
                ("repr", lambda: repr(a).split("dtype=")[1].split(".")[1]), ("wrap", lambda: T.tensor([65535], dtype=u) * 2)]:
            r = f()
            out.append((name, str(r.dtype).split(".")[-1], r.tolist()) if hasattr(r, "tolist")
                       else (name, r))
        for name, f in [
                ("add", lambda: a + b), ("sub", lambda: b - a), ("add_int", lambda: a + 1),
                ("neg", lambda: -a), ("lt", lambda: a < b), ("ge1", lambda: a >= 1),
                ("abs", lambda: a.abs()), ("pow", lambda: a ** 2), ("matmul", lambda: a @ b),
                ("not", lambda: ~a), ("mul_i64", lambda: a * T.tensor([1, 2, 3])),
                ("add_u8", lambda: a + T.tensor([1, 2, 3], dtype=T.uint8)),
                ("eq_i64", lambda: a == T.tensor([1, 0, 3])),
                ("grad", lambda: T.ones(2, dtype=u, requires_grad=True)),
                ("floordiv", lambda: b // a), ("mod", lambda: b % a), ("fmod", lambda: T.fmod(b, a)),
                ("trunc", lambda: b.div(a, rounding_mode="trunc")), ("lshift", lambda: a << 1),
                ("rshift", lambda: a >> 1)]:
            try:
                f()
                out.append((name, "ran"))
            except NotImplementedError:
                out.append((name, "NotImplementedError"))
            except RuntimeError:
                out.append((name, "RuntimeError"))
    return out


def test_unsigned_dtypes():
    out = _unsigned_script(minidl)
    assert out[0] == ["refused"] * 6 + ["float16", "bfloat16", "float32", "float64"] + \
        ["refused"] * 2 + ["uint16", "refused", "refused"]
    assert minidl.uint32 == np.dtype(np.uint32) and minidl.iinfo(minidl.uint64).max == 2**64 - 1
    assert ("sum", "int64", 6) in out and ("add", "NotImplementedError") in out
    assert ("mul_i64", "RuntimeError") in out and ("grad", "RuntimeError") in out
    with pytest.raises(RuntimeError, match="attempted to promote UInt32 and Long"):
        minidl.promote_types(minidl.uint32, minidl.int64)
    with pytest.raises(NotImplementedError, match="\"add_stub\" not implemented for 'UInt16'"):
        minidl.ones(2, dtype=minidl.uint16) + 1
    t = minidl.from_numpy(np.array([7, 2**32 - 1], np.uint32))
    assert t.dtype == minidl.uint32 and repr(t) == \
        "tensor([         7, 4294967295], dtype=minidl.uint32)"


def test_unsigned_dtypes_match_torch():
    torch = pytest.importorskip("torch")
    assert _unsigned_script(minidl) == _unsigned_script(torch)


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


def _masked_dtypes_script(T):
    out = []
    ints = np.array([[1, -2, 3], [4, 5, -6]])
    xi, xf, m = T.tensor(ints), T.tensor(ints.astype(np.float32)), T.tensor([True, False, True])
    for name, args in [("sum", (1,)), ("prod", ()), ("amax", (1,)), ("amin", (0,)),
                       ("argmax", (1,)), ("argmin", (None,)), ("cumsum", (1,)),
                       ("cumprod", (0,)), ("logsumexp", (1,)), ("var", (1,)), ("median", (1,))]:
        for x in (xi, xf):
            for mask in (m, None):  # a mask of fewer dims broadcasts; None keeps everything
                try:
                    y = getattr(T.masked, name)(x, *args, mask=mask)
                    out.append((name, str(y.dtype).split(".")[-1],
                                np.round(y.numpy().astype(float), 5).tolist()))
                except (RuntimeError, ValueError, TypeError) as e:
                    out.append((name, type(e).__name__))
    return out


def test_masked_dtypes_match_torch():
    torch = pytest.importorskip("torch")
    assert _masked_dtypes_script(minidl) == _masked_dtypes_script(torch)
