"""The 2026-12-06 (d) audit against PyTorch 2.13: the elementwise, statistics and structure ops,
the nn additions of the day (3-D family, grid_sample, CTC, EmbeddingBag, parametrizations,
swa_utils), the in-place forms, runtime helpers, checkpoint and worker data loading. Each test
pins one divergence found and fixed, by running the same thing in minidl and in torch."""

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

import _fake_gpu

torch = pytest.importorskip("torch", reason="the audit compares against torch")


def same(mine, theirs, what="", atol=1e-9, rtol=1e-7):
    a = mine.numpy() if isinstance(mine, minidl.Tensor) else np.asarray(mine)
    b = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs torch's {b.shape}"
    assert str(a.dtype) == str(b.dtype), f"{what}: dtype {a.dtype} vs torch's {b.dtype}"
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, equal_nan=True, err_msg=what)


def test_frexp_subnormal_mantissa_and_gradient():
    x = np.array([0.0, -0.0, np.inf, np.nan, 1e-40, 3.0, -np.inf], np.float32)
    mx = minidl.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    mm, me = minidl.frexp(mx)
    tm, te = torch.frexp(tx)
    same(mm, tm, "mantissa")
    same(me, te, "exponent")
    mm.sum().backward()
    tm.sum().backward()
    same(mx.grad, tx.grad, "grad")
    d = minidl.tensor(np.array([0.3, -5.0, 7.5]), dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda t: minidl.frexp(t)[0], [d])


def test_aminmax_over_an_empty_dim_is_an_index_error():
    with pytest.raises(IndexError):
        torch.aminmax(torch.zeros(2, 0), dim=1)
    with pytest.raises(IndexError, match="empty"):
        minidl.aminmax(minidl.zeros(2, 0), dim=1)
    with pytest.raises(ValueError):
        minidl.aminmax(minidl.zeros(0, 3), dim=-2)


def _both(fn, *arrays, dtype=None):
    ms = [minidl.tensor(a, dtype=a.dtype) for a in arrays]
    ts = [torch.from_numpy(np.array(a)) for a in arrays]
    return fn(minidl, *ms), fn(torch, *ts)


def test_beta_zero_keeps_the_input_in_the_graph_and_checks_its_shape():
    rng = np.random.default_rng(0)
    a, v1, v2 = np.full((1, 4), np.nan), rng.standard_normal(3), rng.standard_normal(4)
    mi = minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
    ti = torch.tensor(a, requires_grad=True)
    mo = minidl.addr(mi, minidl.tensor(v1, dtype=minidl.float64), minidl.tensor(v2, dtype=minidl.float64), beta=0, alpha=2)
    to = torch.addr(ti, torch.tensor(v1), torch.tensor(v2), beta=0, alpha=2)
    same(mo, to, "addr beta=0")
    mo.sum().backward()
    to.sum().backward()
    same(mi.grad, ti.grad, "input's gradient: zeros, not None")
    for beta in (0, 1):
        with pytest.raises(RuntimeError):
            torch.addmm(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(3, 4), beta=beta)
        with pytest.raises((ValueError, RuntimeError), match="broadcast"):
            minidl.addmm(minidl.zeros(3, 4), minidl.zeros(2, 3), minidl.zeros(3, 4), beta=beta)
        with pytest.raises(RuntimeError, match="broadcast"):
            minidl.addmm(minidl.zeros(2, 2, 4), minidl.zeros(2, 3), minidl.zeros(3, 4), beta=beta)


def test_addr_refuses_float_scalars_for_integer_results():
    ints = [np.ones((2, 2), np.int64), np.ones(2, np.int64), np.ones(2, np.int64)]
    for kw in ({"beta": 0.5}, {"alpha": 1.5}):
        with pytest.raises(RuntimeError):
            torch.addr(*map(torch.from_numpy, ints), **kw)
        with pytest.raises(RuntimeError, match="floating point"):
            minidl.addr(*[minidl.tensor(x) for x in ints], **kw)
    m, t = _both(lambda L, i, x, y: L.addr(i, x, y, beta=0.5), np.ones((2, 2), np.int64),
                 np.ones(2), np.ones(2))
    same(m, t, "float vectors: a float result, no error")


def test_tensordot_takes_dims_as_a_tensor():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(3, 2)
    m, t = _both(lambda L, x, y: L.tensordot(x, y, dims=L.tensor(1)), a, b)
    same(m, t, "0-d tensor dims")
    m, t = _both(lambda L, x, y: L.tensordot(x, y, dims=L.tensor([[1], [0]])), a, b)
    same(m, t, "2-row tensor dims")


def test_unique_consecutive_of_an_empty_tensor_along_a_dim():
    for shape, dim in (((0, 3), 1), ((2, 0), 0)):
        with pytest.raises(RuntimeError):
            torch.unique_consecutive(torch.zeros(shape), dim=dim)
        with pytest.raises(ValueError, match="0 sized"):
            minidl.unique_consecutive(minidl.zeros(shape), dim=dim)
    for shape, dim in (((0,), 0), ((0, 3), 0), ((2, 0), 1)):
        a = np.zeros(shape)
        m, t = _both(lambda L, x: L.unique_consecutive(x, return_inverse=True,
                                                      return_counts=True, dim=dim), a)
        for x, y in zip(m, t):
            same(x, y, f"unique_consecutive {shape} dim={dim}")


def test_masked_scatter_on_0d_tensors_with_gradient():
    for mask in (True, False):
        x = np.array(1.5)
        src = np.array([4.0, 5.0])
        mx = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
        ms = minidl.tensor(src, dtype=minidl.float64, requires_grad=True)
        tx, ts = torch.tensor(x, requires_grad=True), torch.tensor(src, requires_grad=True)
        mo = minidl.masked_scatter(mx, minidl.tensor(mask), ms)
        to = torch.masked_scatter(tx, torch.tensor(mask), ts)
        same(mo, to, "0-d masked_scatter")
        (mo * 3).backward()
        (to * 3).backward()
        same(mx.grad, tx.grad, "input grad")
        same(ms.grad, ts.grad, "source grad")


def test_nn_functional_pdist_and_empty_bincount_dtype():
    import minidl.nn.functional as F

    a = np.random.default_rng(1).standard_normal((5, 3))
    m, t = _both(lambda L, x: (F if L is minidl else torch.nn.functional).pdist(x, 1.5), a)
    same(m, t, "F.pdist")
    for w in (np.zeros(0, np.float32), np.zeros(0), np.zeros(0, np.int64)):
        m, t = _both(lambda L, x, ww: L.bincount(x, ww, minlength=3), np.zeros(0, np.int64), w)
        same(m, t, f"empty bincount with {w.dtype} weights")


@pytest.mark.parametrize("draw", [
    lambda L: L.zeros(3).bernoulli_(1.5),
    lambda L: L.zeros(3).bernoulli_(L.tensor([0.0, 2.0, 1.0])),
    lambda L: L.zeros(3).normal_(0.0, -1.0),
    lambda L: L.ones(3, dtype=L.int64).multinomial(1),
])
def test_random_fills_refuse_what_torch_refuses(draw):
    with pytest.raises(RuntimeError):
        draw(torch)
    with pytest.raises((ValueError, TypeError)):
        draw(minidl)


def test_random_fills_at_the_edges_of_their_ranges():
    assert minidl.zeros(4).bernoulli_(1.0).numpy().tolist() == [1.0] * 4
    assert minidl.ones(4).bernoulli_(minidl.tensor([0.0, 1.0, 0.0, 1.0])).numpy().tolist() == [0, 1, 0, 1]
    assert minidl.ones(4).normal_(2.0, 0.0).numpy().tolist() == [2.0] * 4


@pytest.mark.parametrize("call", [
    lambda L, x: x.atan2_(L.tensor([1, 2])),
    lambda L, x: x.arctan2_(L.tensor([1, 2])),
    lambda L, x: x.hypot_(L.tensor([1.0, 2.0])),
])
def test_inplace_atan2_hypot_refuse_a_float_result_in_an_integer_tensor(call):
    with pytest.raises(RuntimeError):
        call(torch, torch.tensor([1, 2]))
    x = minidl.tensor([1, 2])
    with pytest.raises((RuntimeError, TypeError), match="cast"):
        call(minidl, x)
    assert x.numpy().tolist() == [1, 2], "unchanged"


def test_inplace_atan2_still_matches_torch_with_gradients():
    a, b = np.array([[0.3, -1.2], [2.0, 0.5]]), np.array([0.7, -0.4])
    mb, tb = minidl.tensor(a, dtype=minidl.float64, requires_grad=True), torch.tensor(a, requires_grad=True)
    mo, to = minidl.tensor(b, dtype=minidl.float64, requires_grad=True), torch.tensor(b, requires_grad=True)
    mx, tx = mb * 1, tb * 1
    mx.atan2_(mo)
    tx.atan2_(to)
    same(mx, tx, "atan2_")
    mx.sum().backward()
    tx.sum().backward()
    same(mb.grad, tb.grad, "self's grad")
    same(mo.grad, to.grad, "other's grad")


def test_float_power_inplace_needs_a_float64_base():
    for L in (torch, minidl):
        with pytest.raises(RuntimeError, match="float_power_"):
            L.tensor([1.0, 2.0], dtype=L.float32).float_power_(2)
    m = minidl.tensor([1.0, 2.0], dtype=minidl.float64).float_power_(3)
    same(m, torch.tensor([1.0, 2.0], dtype=torch.float64).float_power_(3), "float64 base")


def _checkpoint_grads(L, cp, fn_of):
    rng = np.random.default_rng(3)
    w1, w2, xs = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((5, 3))
    if L is torch:
        W1, W2, x = (torch.tensor(a, requires_grad=True) for a in (w1, w2, xs))
    else:
        W1, W2, x = (minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in (w1, w2, xs))
    out = fn_of(L, cp, W1, W2, x)
    out.sum().backward()
    return [out] + [t.grad for t in (W1, W2, x)]


@pytest.mark.parametrize("fn_of", [
    # h, computed before the checkpoint from x and W1, is read by the checkpointed function
    lambda L, cp, W1, W2, x: (lambda h: cp(lambda a: (a @ W1).tanh() @ W2 * h.sum(), x,
                                           use_reentrant=False))((x @ W1).sin()),
    # a tuple output with a non-Tensor value in it
    lambda L, cp, W1, W2, x: cp(lambda a: ((a @ W1) @ W2, 2.0), x, use_reentrant=False)[0] * 2,
])
def test_checkpoint_matches_torch_with_closures_and_mixed_outputs(fn_of):
    from torch.utils.checkpoint import checkpoint as tcp

    from minidl.utils.checkpoint import checkpoint as mcp

    mine = _checkpoint_grads(minidl, mcp, fn_of)
    theirs = _checkpoint_grads(torch, tcp, fn_of)
    for what, a, b in zip(("out", "W1", "W2", "x"), mine, theirs):
        same(a, b, what)


def test_checkpoint_keeps_non_tensor_values_of_its_output():
    from minidl.utils.checkpoint import checkpoint as mcp

    x = minidl.ones(2, requires_grad=True)
    y, tag, z = mcp(lambda a: (a * 3, "tag", a * a), x, use_reentrant=False)
    assert tag == "tag"
    (y.sum() + z.sum()).backward()
    assert x.grad.numpy().tolist() == [5.0, 5.0]


def test_checkpoint_through_a_custom_function_with_two_outputs():
    from minidl.utils.checkpoint import checkpoint as mcp

    class Two(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2, a * 3

        @staticmethod
        def backward(ctx, g1, g2):
            return g1 * 2 + g2 * 3

    w = minidl.tensor([1.0, 2.0], requires_grad=True)
    x = minidl.tensor([3.0, 4.0], requires_grad=True)

    def f(a):
        u, v = Two.apply(a * w)
        return (u * v).sum()

    f(x).backward()
    want = (x.grad.numpy().copy(), w.grad.numpy().copy())
    x.grad = w.grad = None
    mcp(f, x, use_reentrant=False).backward()
    np.testing.assert_allclose(x.grad.numpy(), want[0])
    np.testing.assert_allclose(w.grad.numpy(), want[1])


@pytest.mark.parametrize("name", ["multiply", "true_divide"])
@pytest.mark.parametrize("number", [2, 2.5, True])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_multiply_and_true_divide_take_a_number_first(name, number, dtype):
    a = np.array([1, 2, 4]).astype(dtype)
    m = getattr(minidl, name)(number, minidl.tensor(a, dtype=a.dtype))
    t = getattr(torch, name)(number, torch.from_numpy(a))
    same(m, t, f"{name}({number}, {dtype})")


@pytest.mark.parametrize("a, b", [
    (np.array([True, False]), np.array([1.0, 2.0])),
    (np.array([1.0, 2.0]), np.array([True, False])),
    (np.array([1, 2]), True),
    (np.array([True, False]), 2),
    (np.array([True, False]), np.array([True, True])),
])
def test_subtract_refuses_bool_operands(a, b):
    def args(L):
        x = L.tensor(a) if L is torch else minidl.tensor(a, dtype=a.dtype)
        y = b if not isinstance(b, np.ndarray) else (
            torch.tensor(b) if L is torch else minidl.tensor(b, dtype=b.dtype))
        return x, y

    with pytest.raises(RuntimeError):
        torch.subtract(*args(torch))
    with pytest.raises(RuntimeError, match="bool"):
        minidl.subtract(*args(minidl))
    with pytest.raises(TypeError):
        minidl.subtract(*args(minidl))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("kw", [{"size": (3, 4)}, {"scale_factor": 2}, {"scale_factor": 0.6}])
def test_interpolate_nearest_takes_uint8_images(mode, kw):
    a = (np.arange(2 * 3 * 5 * 7) % 251).astype(np.uint8).reshape(2, 3, 5, 7)
    import minidl.nn.functional as F

    m = F.interpolate(minidl.tensor(a, dtype=a.dtype), mode=mode, **kw)
    t = torch.nn.functional.interpolate(torch.from_numpy(a), mode=mode, **kw)
    same(m, t, f"uint8 {mode} {kw}")
    with pytest.raises(TypeError):
        F.interpolate(minidl.tensor(a.astype(np.int64)), mode=mode, **kw)


@pytest.mark.parametrize("shapes", [((3, 1), (1, 4), (4,)), (2, (3, 1)), ((),), (), ((0, 1), (3,)),
                                    ([2, 1], [5, 1, 1])])
def test_broadcast_shapes(shapes):
    assert minidl.broadcast_shapes(*shapes) == tuple(torch.broadcast_shapes(*shapes))


@pytest.mark.parametrize("shapes", [((2,), (3,)), ((-1,),)])
def test_broadcast_shapes_refuses_what_torch_refuses(shapes):
    with pytest.raises((RuntimeError, ValueError)):
        torch.broadcast_shapes(*shapes)
    with pytest.raises(RuntimeError):
        minidl.broadcast_shapes(*shapes)


def test_module_repr_puts_extra_repr_on_its_own_line_beside_children():
    import minidl.nn.utils.parametrize as MP

    def build(nn, P):
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 3)

            def extra_repr(self):
                return "scale=2"

        class Multi(nn.Module):
            def extra_repr(self):
                return "a=1\nb=2"

        class Twice(nn.Module):
            def forward(self, x):
                return x * 2

        lin = nn.Linear(3, 3)
        P.register_parametrization(lin, "weight", Twice())
        return [Block(), Multi(), lin, nn.Sequential(nn.Linear(2, 3), nn.ReLU())]

    for m, t in zip(build(minidl.nn, MP), build(torch.nn, torch.nn.utils.parametrize)):
        assert repr(m) == repr(t)


@pytest.mark.parametrize("call", [lambda L, x: L.nanmedian(x), lambda L, x: L.nanmedian(x, 0),
                                  lambda L, x: L.median(x), lambda L, x: L.median(x, 0)])
def test_median_and_nanmedian_refuse_bool(call):
    with pytest.raises(NotImplementedError):
        call(torch, torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        call(minidl, minidl.ones(3, dtype=minidl.bool))


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    lib = _fake_gpu.build_host_kernels(tmp_path_factory.mktemp("fake_gpu"))
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    return lib


def test_fixes_run_on_the_fake_gpu(monkeypatch, host_kernels):
    """frexp's new Function, beta=0's ignored input, masked_scatter on 0-d tensors and the
    checkpoint boundary, on the numpy-backed stand-in GPU, give the CPU's numbers."""
    from minidl.utils.checkpoint import checkpoint as mcp

    def run(device):
        x = minidl.tensor([1e-40, 3.0, -0.75], requires_grad=True, device=device)
        m, e = minidl.frexp(x)
        inp = minidl.tensor([[float("nan")] * 4], requires_grad=True, device=device)
        o = minidl.addr(inp, minidl.ones(3, device=device), minidl.ones(4, device=device), beta=0)
        s = minidl.tensor(1.5, requires_grad=True, device=device)
        ms = minidl.masked_scatter(s, minidl.tensor(True, device=device),
                                   minidl.tensor([4.0, 5.0], device=device))
        w = minidl.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True, device=device)
        h = (x[:2] @ w).sin()
        c = mcp(lambda a: (a @ w).tanh() * h.sum(), x[:2] * 1, use_reentrant=False)
        (m.sum() + o.sum() + ms * 2 + c.sum()).backward()
        assert e.device == device
        sh = minidl.tensor([1, -8, 3], device=device) << minidl.tensor([1, 64, 2], device=device)
        rn = minidl.renorm(w * 3, 2, 0, 1.0)
        return [t.numpy() for t in (m, e, o, ms, c, x.grad, inp.grad, s.grad, w.grad, sh, rn)]

    want = run("cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    for a, b in zip(run("cuda"), want):
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("p, dim, maxnorm", [(2, 0, 1.0), (1, -1, 2.0), (float("inf"), 1, 0.5),
                                             (3, 2, 100.0)])
def test_renorm_matches_torch_with_gradients(p, dim, maxnorm):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 4, 2)) * 3, rng.standard_normal((3, 4, 2))
    m = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    mo, to = minidl.renorm(m, p, dim, maxnorm), torch.renorm(t, p, dim, maxnorm)
    same(mo, to, "renorm")
    mo.backward(minidl.tensor(g, dtype=minidl.float64))
    to.backward(torch.tensor(g))
    same(m.grad, t.grad, "renorm grad", atol=1e-12)
    assert gradcheck(lambda a: minidl.renorm(a, p, dim, maxnorm),
                     [minidl.tensor(x, dtype=minidl.float64, requires_grad=True)])
    y, ty = minidl.tensor(x, dtype=minidl.float64), torch.tensor(x)
    assert y.renorm_(p, dim, maxnorm) is y
    same(y, ty.renorm_(p, dim, maxnorm), "renorm_")


@pytest.mark.parametrize("call", [lambda L: L.renorm(L.ones(3), 2, 0, 1.0),
                                  lambda L: L.renorm(L.ones(2, 3), 0, 0, 1.0),
                                  lambda L: L.renorm(L.ones(2, 3), 2, 0, -1.0),
                                  lambda L: L.renorm(L.ones(2, 3, dtype=L.int64), 2, 0, 1.0)])
def test_renorm_refuses_what_torch_refuses(call):
    with pytest.raises(RuntimeError):
        call(torch)
    with pytest.raises((ValueError, TypeError)):
        call(minidl)


SHIFTS = [
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) << L.tensor([1, 2, 8, 9], dtype=L.int8),
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) >> L.tensor([1, 2, 8, 9], dtype=L.int8),
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) << -1,
    lambda L: L.tensor([1, -8, 3, 127], dtype=L.int8) >> -1,
    lambda L: L.tensor([1, -8, 3, 2**40]) << 63,
    lambda L: L.tensor([1, -8, 3, 2**40]) >> 64,
    lambda L: L.tensor([True, False]) << 1,
    lambda L: 2 << L.tensor([1, 2]),
    lambda L: 1024 >> L.tensor([1, 2]),
    lambda L: L.tensor([1, 2], dtype=L.uint8) << L.tensor([1, 9]),
    lambda L: L.tensor([200], dtype=L.uint8) >> 9,
    lambda L: L.bitwise_left_shift(L.tensor([[1], [2]]), L.tensor([1, 2, 3])),
    lambda L: L.tensor([3, 4]).bitwise_right_shift(1),
]


@pytest.mark.parametrize("shift", SHIFTS)
def test_bitwise_shifts_match_torch(shift):
    same(shift(minidl), shift(torch), "shift")


def test_bitwise_shifts_in_place_and_refusing_floats():
    for L in (torch, minidl):
        x = L.tensor([3, 4])
        y = x
        x <<= 2
        assert x is y and x.tolist() == [12, 16]
        assert x.bitwise_right_shift_(3) is x and x.tolist() == [1, 2]
        with pytest.raises(NotImplementedError):
            L.tensor([1.5]) << 1


def test_checkpoint_returns_dicts_and_nested_outputs():
    from torch.utils.checkpoint import checkpoint as tcp

    from minidl.utils.checkpoint import checkpoint as mcp

    def fn_of(L, cp, W1, W2, x):
        out = cp(lambda a: {"y": (a @ W1).tanh(), "rest": [a @ W1 @ W2, "note"]}, x,
                 use_reentrant=False)
        assert out["rest"][1] == "note"
        return out["y"].sum() + (out["rest"][0] ** 2).sum()

    for what, a, b in zip(("out", "W1", "W2", "x"), _checkpoint_grads(minidl, mcp, fn_of),
                          _checkpoint_grads(torch, tcp, fn_of)):
        same(a, b, what)
