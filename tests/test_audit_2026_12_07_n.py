"""Audit of 2026-12-07 (n): differential checks against torch 2.13 of what was merged that day
(the unsigned dtypes uint16/uint32/uint64, minidl.library's custom ops, the global module
registration hooks, minidl.nested, minidl.masked), and the regressions they found."""
import numpy as np
import pytest

import minidl
from minidl import nn

WIDE = ["uint16", "uint32", "uint64"]


def _wide(name):
    return minidl.from_numpy(np.array([[3, 1], [2, 5]], dtype=name))


# each op torch 2.13 has no CPU kernel of for uint16/32/64 (its NotImplementedError)
_REFUSED = {
    "max()": lambda x: x.max(),
    "max(dim)": lambda x: x.max(0),
    "min()": lambda x: x.min(),
    "min(dim)": lambda x: minidl.min(x, 1),
    "max(a, b)": lambda x: minidl.max(x, x),
    "argmax": lambda x: x.argmax(),
    "argmin": lambda x: minidl.argmin(x, 0),
    "amax": lambda x: x.amax(),
    "amin": lambda x: minidl.amin(x),
    "aminmax": lambda x: minidl.aminmax(x),
    "clamp": lambda x: x.clamp(1, 3),
    "clamp(min=)": lambda x: minidl.clamp(x, min=1),
    "minimum": lambda x: minidl.minimum(x, x),
    "maximum": lambda x: x.maximum(x),
    "sum(dtype=)": lambda x: x.sum(dtype=x.dtype),
    "float sum(dtype=uint)": lambda x: minidl.ones(2).sum(dtype=x.dtype),
    "prod(dtype=)": lambda x: minidl.prod(x, dtype=x.dtype),
    "cumsum(dtype=)": lambda x: minidl.cumsum(x, 0, dtype=x.dtype),
    "arange": lambda x: minidl.arange(5, dtype=x.dtype),
    "eye": lambda x: minidl.eye(2, dtype=x.dtype),
    "linspace": lambda x: minidl.linspace(0, 4, 5, dtype=x.dtype),
    "count_nonzero": lambda x: minidl.count_nonzero(x),
    "topk": lambda x: x.topk(1),
    "tril": lambda x: minidl.tril(x),
    "triu": lambda x: minidl.triu(x),
    "trace": lambda x: minidl.trace(x),
    "masked_fill": lambda x: x.masked_fill(minidl.tensor([[True, False], [False, True]]), 7),
    "cummax": lambda x: minidl.cummax(x, 0),
    "cummin": lambda x: minidl.cummin(x, 0),
    "median": lambda x: x.median(),
    "nanmedian": lambda x: minidl.nanmedian(x),
    "kthvalue": lambda x: minidl.kthvalue(x, 1),
    "mode": lambda x: minidl.mode(x),
}


@pytest.mark.parametrize("dtype", WIDE)
@pytest.mark.parametrize("op", sorted(_REFUSED))
def test_wide_unsigned_ops_torch_has_no_kernel_of_are_refused(op, dtype):
    """These computed a result for uint16/32/64 (max, argmax, clamp, minimum, sum(dtype=),
    arange, eye, count_nonzero, ...) where torch 2.13 has no kernel and raises
    NotImplementedError."""
    with pytest.raises(NotImplementedError, match="not implemented for 'UInt"):
        _REFUSED[op](_wide(dtype))


@pytest.mark.parametrize("op", sorted(_REFUSED))
def test_wide_unsigned_refusals_match_torch(op):
    torch = pytest.importorskip("torch")
    t = torch.tensor([[3, 1], [2, 5]]).to(torch.uint32)
    torch_ops = {
        "max()": lambda: t.max(), "max(dim)": lambda: t.max(0), "min()": lambda: t.min(),
        "min(dim)": lambda: torch.min(t, 1), "max(a, b)": lambda: torch.max(t, t),
        "argmax": lambda: t.argmax(), "argmin": lambda: torch.argmin(t, 0),
        "amax": lambda: t.amax(), "amin": lambda: torch.amin(t),
        "aminmax": lambda: torch.aminmax(t), "clamp": lambda: t.clamp(1, 3),
        "clamp(min=)": lambda: torch.clamp(t, min=1), "minimum": lambda: torch.minimum(t, t),
        "maximum": lambda: t.maximum(t), "sum(dtype=)": lambda: t.sum(dtype=t.dtype),
        "float sum(dtype=uint)": lambda: torch.ones(2).sum(dtype=t.dtype),
        "prod(dtype=)": lambda: torch.prod(t, dtype=t.dtype),
        "cumsum(dtype=)": lambda: torch.cumsum(t, 0, dtype=t.dtype),
        "arange": lambda: torch.arange(5, dtype=t.dtype),
        "eye": lambda: torch.eye(2, dtype=t.dtype),
        "linspace": lambda: torch.linspace(0, 4, 5, dtype=t.dtype),
        "count_nonzero": lambda: torch.count_nonzero(t), "topk": lambda: t.topk(1),
        "tril": lambda: torch.tril(t), "triu": lambda: torch.triu(t),
        "trace": lambda: torch.trace(t),
        "masked_fill": lambda: t.masked_fill(torch.tensor([[True, False], [False, True]]), 7),
        "cummax": lambda: torch.cummax(t, 0), "cummin": lambda: torch.cummin(t, 0),
        "median": lambda: t.median(), "nanmedian": lambda: torch.nanmedian(t),
        "kthvalue": lambda: torch.kthvalue(t, 1),
        "mode": lambda: torch.mode(t),
    }
    with pytest.raises(NotImplementedError, match="not implemented for 'UInt32'"):
        torch_ops[op]()
    with pytest.raises(NotImplementedError, match="not implemented for 'UInt32'"):
        _REFUSED[op](_wide("uint32"))


@pytest.mark.parametrize("dtype", WIDE)
def test_wide_unsigned_ops_torch_has_still_work(dtype):
    x = _wide(dtype)
    np.testing.assert_array_equal(x.flip(0).numpy(), [[2, 5], [3, 1]])
    assert x.flip(0).dtype == np.dtype(dtype)
    assert x.sum().item() == 11 and x.sum().dtype == minidl.int64
    np.testing.assert_array_equal(minidl.sort(x).values.numpy(), [[1, 3], [2, 5]])
    # with a float operand the maximum is taken in float, as torch's
    f = minidl.tensor([[1.5, 0.5], [9.0, 0.0]])
    for got in (minidl.max(x, f), x.max(f), minidl.maximum(x, f), x.clamp(f)):
        assert got.dtype == minidl.float32
    np.testing.assert_array_equal(x.max(f).numpy(), [[3.0, 1.0], [9.0, 5.0]])
    # uint8 keeps every op
    u8 = minidl.tensor([[3, 1], [2, 5]], dtype=minidl.uint8)
    assert u8.max().item() == 5 and u8.argmax().item() == 3
    np.testing.assert_array_equal(u8.clamp(2, 4).numpy(), [[3, 2], [2, 4]])
    np.testing.assert_array_equal(minidl.arange(3, dtype=minidl.uint8).numpy(), [0, 1, 2])
    assert minidl.count_nonzero(u8).item() == 4


# ---- global module registration hooks --------------------------------------------------------
def test_a_raising_buffer_registration_hook_leaves_the_module_unchanged():
    """register_buffer marked the name as a buffer before running the global hooks, so a hook
    that raised left a name that was no buffer but refused a plain attribute afterwards."""
    def refuse(module, name, value):
        raise ValueError("no buffers here")

    handle = nn.modules.module.register_module_buffer_registration_hook(refuse)
    m = nn.Module()
    try:
        with pytest.raises(ValueError, match="no buffers here"):
            m.register_buffer("stat", minidl.zeros(2))
    finally:
        handle.remove()
    assert dict(m.named_buffers()) == {}
    m.stat = 3  # a plain attribute, as in torch
    assert m.stat == 3 and "stat" not in m.state_dict()


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


# ---- minidl.nested ----------------------------------------------------------------------------
def _jagged(parts, requires_grad=False):
    return minidl.nested.nested_tensor([minidl.tensor(np.asarray(p), dtype=minidl.float64)
                                        for p in parts], layout=minidl.jagged,
                                       requires_grad=requires_grad)


def test_jagged_attention_takes_an_empty_sequence():
    """scaled_dot_product_attention of jagged q/k/v with an empty sequence raised NumPy's
    "zero-size array to reduction operation maximum" (the dense attention's softmax over no
    key); torch gives an empty output for that sequence (and zeros for queries with no key)."""
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((2, 3)), np.zeros((0, 3))]

    def heads(nt):
        return nt.unflatten(-1, (1, 3)).transpose(1, 2)

    q = _jagged(parts, requires_grad=True)
    out = minidl.nn.functional.scaled_dot_product_attention(heads(q), heads(q), heads(q))
    first, empty = out.unbind()
    assert tuple(empty.shape) == (1, 0, 3)
    s = parts[0] @ parts[0].T / np.sqrt(3)
    w = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(first.detach().numpy()[0], (w / w.sum(-1, keepdims=True))
                               @ parts[0], rtol=1e-12)
    # the dense op: no key for two queries gives zeros, as torch's
    dense = minidl.nn.functional.scaled_dot_product_attention(
        minidl.ones(1, 2, 3), minidl.zeros(1, 0, 3), minidl.zeros(1, 0, 3))
    np.testing.assert_array_equal(dense.numpy(), np.zeros((1, 2, 3)))


def test_jagged_cat_of_two_constructions_with_equal_lengths():
    """cat along a regular dim of two jagged tensors built separately with the same lengths
    was refused ("share a structure only when they share offsets"); torch joins them."""
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((2, 3)), rng.standard_normal((4, 3))]
    a = _jagged(parts, requires_grad=True)
    b = _jagged([p * 2 for p in parts])
    out = minidl.cat([a, b], dim=-1)
    for got, p in zip(out.unbind(), parts):
        np.testing.assert_allclose(got.detach().numpy(), np.concatenate([p, p * 2], -1))
    with pytest.raises(RuntimeError, match="offsets"):  # other lengths are still refused
        minidl.cat([a, _jagged([parts[1], parts[0]])], dim=-1)


def test_strided_to_padded_tensor_pads_a_larger_batch():
    """to_padded_tensor of a strided nested tensor refused an output_size whose batch entry is
    larger than the batch ("less than NestedTensor padded size"); torch pads whole rows."""
    nt = minidl.nested.nested_tensor([minidl.ones(2, 3), minidl.ones(0, 3)])
    out = minidl.nested.to_padded_tensor(nt, -1.0, output_size=(3, 4, 5))
    expect = np.full((3, 4, 5), -1.0, np.float32)
    expect[0, :2, :3] = 1.0
    np.testing.assert_array_equal(out.numpy(), expect)
    with pytest.raises(RuntimeError, match="less than"):
        minidl.nested.to_padded_tensor(nt, 0.0, output_size=(1, 4, 5))


# ---- minidl.masked ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_running_sums_in_bool_are_refused(name):
    """cumsum/cumprod with dtype=bool (and so minidl.masked.cumsum/cumprod of a bool input,
    whose dtype is the input's) gave a bool running 'sum'; torch has no such kernel."""
    b = minidl.tensor([True, True, False])
    with pytest.raises(NotImplementedError, match=f'"{name}_out_cpu" not implemented for '
                                                  "'Bool'"):
        getattr(minidl, name)(b, 0, dtype=minidl.bool)
    with pytest.raises(NotImplementedError, match="'Bool'"):
        getattr(minidl.masked, name)(b, 0, mask=b)
    np.testing.assert_array_equal(getattr(minidl, name)(b, 0).numpy(),
                                  [1, 2, 2] if name == "cumsum" else [1, 1, 0])


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


@pytest.mark.parametrize("move", ["insert", "del"])
def test_renumbering_a_module_list_fires_no_registration_hook(move):
    """ModuleList/Sequential insert and del renumbered the children through add_module, so the
    global module registration hook fired for every child moved (ModuleList.insert(0, m) on two
    children: three calls); torch renames them in place and fires none."""
    calls = []
    handle = nn.modules.module.register_module_module_registration_hook(
        lambda module, name, value: calls.append(name))
    try:
        for box in (nn.ModuleList([nn.ReLU(), nn.Tanh()]), nn.Sequential(nn.ReLU(), nn.Tanh())):
            calls.clear()
            if move == "insert":
                box.insert(0, nn.Sigmoid())
                assert [type(m).__name__ for m in box] == ["Sigmoid", "ReLU", "Tanh"]
            else:
                del box[0]
                assert [type(m).__name__ for m in box] == ["Tanh"]
            assert calls == []
            assert list(box._modules) == [str(i) for i in range(len(box))]
    finally:
        handle.remove()
    with pytest.raises(TypeError, match="not a Module subclass"):
        nn.ModuleList([nn.ReLU()]).insert(0, 3)


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
