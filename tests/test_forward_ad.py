"""autograd.forward_ad (dual_level, make_dual, unpack_dual) and func.linearize: directional
derivatives against finite differences (without torch) and against torch.autograd.forward_ad
and torch.func.linearize."""
import numpy as np
import pytest

import minidl
import minidl.autograd.forward_ad as fwAD
import minidl.nn.functional as F

RNG = np.random.default_rng(3)


def _a(*shape):
    return RNG.standard_normal(shape)


def _t(a, grad=False):
    return minidl.tensor(a, dtype=minidl.float64, requires_grad=grad)


# each case: (function of (lib, F, x, *consts)), x's shape, constant arrays)
def _mlp(lib, F_, x, w1, b1, w2):
    return F_.linear(F_.relu(F_.linear(x, w1, b1)).tanh(), w2)


def _conv(lib, F_, x, k, b):
    return F_.avg_pool2d(F_.conv2d(x, k, b, padding=1).sigmoid(), 2)


def _softmax(lib, F_, x):
    return F_.log_softmax(x, dim=1) + F_.softmax(x * 2, dim=0)


def _layer_norm(lib, F_, x, w, b):
    return F_.layer_norm(x, (6,), w, b)


def _batch_norm(lib, F_, x, w, b):
    return F_.batch_norm(x, None, None, w, b, training=True)


def _nested(lib, F_, x, w):
    inner = lambda v: (v * v).sum(dim=1, keepdim=True) * v  # noqa: E731
    return inner(F_.linear(inner(x).exp(), w))


CASES = {
    "mlp": (_mlp, (4, 5), [_a(7, 5), _a(7), _a(3, 7)]),
    "conv": (_conv, (2, 2, 6, 6), [_a(3, 2, 3, 3), _a(3)]),
    "softmax": (_softmax, (3, 5), []),
    "layer_norm": (_layer_norm, (4, 6), [_a(6), _a(6)]),
    "batch_norm": (_batch_norm, (5, 3), [_a(3), _a(3)]),
    "nested": (_nested, (3, 4), [_a(2, 4) * 0.3]),
}
INPUTS = {name: (_a(*shape) * 0.5, _a(*shape)) for name, (_, shape, _) in CASES.items()}


def _minidl_jvp(name):
    fn, _, consts = CASES[name]
    x, v = INPUTS[name]
    with fwAD.dual_level():
        dual = fwAD.make_dual(_t(x), _t(v))
        y = fn(minidl, F, dual, *[_t(c) for c in consts])
        primal, tangent = fwAD.unpack_dual(y)
    return primal.numpy(), tangent.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_tangent_is_the_directional_derivative(name):
    fn, _, consts = CASES[name]
    x, v = INPUTS[name]
    primal, tangent = _minidl_jvp(name)
    eps = 1e-6

    def f(a):
        with minidl.no_grad():
            return fn(minidl, F, _t(a), *[_t(c) for c in consts]).numpy()
    np.testing.assert_allclose(primal, f(x), rtol=1e-12, atol=1e-12)
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(tangent, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_tangent_matches_torch_forward_ad(name):
    torch = pytest.importorskip("torch")
    import torch.autograd.forward_ad as tfw

    fn, _, consts = CASES[name]
    x, v = INPUTS[name]
    primal, tangent = _minidl_jvp(name)
    with tfw.dual_level():
        dual = tfw.make_dual(torch.tensor(x), torch.tensor(v))
        y = fn(torch, torch.nn.functional, dual, *[torch.tensor(c) for c in consts])
        t_primal, t_tangent = tfw.unpack_dual(y)
    np.testing.assert_allclose(primal, t_primal.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tangent, t_tangent.numpy(), rtol=1e-10, atol=1e-12)


def test_two_duals_sum_their_contributions():
    x, y, u, v = _a(4), _a(4), _a(4), _a(4)
    with fwAD.dual_level():
        a = fwAD.make_dual(_t(x), _t(u))
        b = fwAD.make_dual(_t(y), _t(v))
        out = fwAD.unpack_dual(a.sin() * b).tangent
    np.testing.assert_allclose(out.numpy(), np.cos(x) * u * y + np.sin(x) * v, rtol=1e-12)


def test_unpack_dual_of_the_dual_and_of_unrelated_tensors():
    x, v = _a(3), _a(3)
    tangent = _t(v)
    with fwAD.dual_level():
        dual = fwAD.make_dual(_t(x), tangent)
        primal, t = fwAD.unpack_dual(dual)
        assert t is tangent and not primal.requires_grad
        np.testing.assert_array_equal(primal.numpy(), x)
        plain = _t(x) * 2
        assert fwAD.unpack_dual(plain).tangent is None
        w = _t(x, grad=True)
        assert fwAD.unpack_dual(w * 3).tangent is None  # reverse mode only
        assert fwAD.unpack_dual(3.0) == (3.0, None)
        y = dual.exp()
        first = fwAD.unpack_dual(y).tangent
        assert fwAD.unpack_dual(y).tangent is first  # cached per output
        zero = fwAD.unpack_dual(dual * 0.0).tangent
        np.testing.assert_array_equal(zero.numpy(), np.zeros(3))
    assert fwAD.unpack_dual(y).tangent is None  # the level has exited
    assert fwAD.unpack_dual(dual).tangent is None


def test_unpacked_dual_is_a_namedtuple():
    with fwAD.dual_level():
        out = fwAD.unpack_dual(fwAD.make_dual(_t(_a(2)), _t(_a(2))).sin())
    assert type(out).__name__ == "UnpackedDualTensor" and out._fields == ("primal", "tangent")
    assert out.primal is out[0] and out.tangent is out[1]


def test_tangent_keeps_the_graph_of_parameters_that_require_grad():
    x, v, w = _a(3), _a(3), _a(2, 3)
    weight = _t(w, grad=True)
    with fwAD.dual_level():
        dual = fwAD.make_dual(_t(x), _t(v))
        primal, tangent = fwAD.unpack_dual(F.linear(dual, weight))
    assert primal.requires_grad and tangent.requires_grad
    tangent.sum().backward()
    np.testing.assert_allclose(weight.grad.numpy(), np.tile(v, (2, 1)), rtol=1e-12)


def test_make_dual_errors_match_torch():
    with pytest.raises(RuntimeError, match="no level exists, make sure to enter_dual_level"):
        fwAD.make_dual(_t(_a(3)), _t(_a(3)))
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match=r"Tensor is of size \[3\] while the given "
                                               r"forward gradient is of size \[4\]"):
            fwAD.make_dual(_t(_a(3)), _t(_a(4)))
        with pytest.raises(ValueError, match="Expected primal to be floating point"):
            fwAD.make_dual(minidl.arange(3), minidl.arange(3))
        with pytest.raises(RuntimeError, match="Nested forward mode AD is not supported"):
            fwAD.enter_dual_level()


def test_make_dual_errors_against_torch_text():
    torch = pytest.importorskip("torch")
    import torch.autograd.forward_ad as tfw

    def message(mod, make):
        with pytest.raises(RuntimeError) as info:
            with mod.dual_level():
                mod.make_dual(make(_a(3)), make(_a(4)))
        return str(info.value)
    assert message(fwAD, _t) == message(tfw, torch.tensor)
    with pytest.raises(RuntimeError) as ours:
        fwAD.make_dual(_t(_a(3)), _t(_a(3)))
    with pytest.raises(RuntimeError) as theirs:
        tfw.make_dual(torch.zeros(3), torch.zeros(3))
    assert str(ours.value) == str(theirs.value)


def test_enter_and_exit_dual_level():
    level = fwAD.enter_dual_level()
    assert level == 0
    with pytest.raises(RuntimeError, match="not the last one that was created"):
        fwAD.exit_dual_level(level=5)
    fwAD.exit_dual_level(level=level)
    with pytest.raises(RuntimeError, match="Dual level must be a positive number"):
        fwAD.exit_dual_level()
    with fwAD.dual_level() as again:
        assert again == 0


def test_tangent_dtype_follows_the_primal():
    with fwAD.dual_level():
        dual = fwAD.make_dual(_t(_a(3)), minidl.tensor(_a(3), dtype=minidl.float32))
        assert fwAD.unpack_dual(dual).tangent.dtype == minidl.float64


def test_reverse_mode_through_a_dual_of_a_tensor_that_requires_grad():
    x, v = _a(3), _a(3)
    leaf = _t(x, grad=True)
    with fwAD.dual_level():
        dual = fwAD.make_dual(leaf, _t(v))
        y = dual.sin()
        primal, tangent = fwAD.unpack_dual(y)
        assert primal.requires_grad and tangent.requires_grad
        y.sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(tangent.detach().numpy(), np.cos(x) * v, rtol=1e-12)


# ---- func.linearize ------------------------------------------------------------------------------
def _two_outputs(a, b):
    return (a.sin() * b, {"s": (a * b).exp().sum()})


def test_linearize_gives_jvps_without_running_func_again():
    calls = []
    x, y, u, v = _a(4), _a(4), _a(4), _a(4)

    def f(a, b):
        calls.append(1)
        return _two_outputs(a, b)
    out, jvp_fn = minidl.func.linearize(f, _t(x), _t(y))
    assert len(calls) == 1 and not out[0].requires_grad
    np.testing.assert_allclose(out[0].numpy(), np.sin(x) * y)
    for tx, ty in ((u, v), (v, u)):
        prod, more = jvp_fn(_t(tx), _t(ty))
        np.testing.assert_allclose(prod.numpy(), np.cos(x) * tx * y + np.sin(x) * ty,
                                   rtol=1e-12)
        e = np.exp(x * y)
        np.testing.assert_allclose(more["s"].numpy(), (e * (tx * y + x * ty)).sum(), rtol=1e-12)
    assert len(calls) == 1


def test_linearize_matches_torch_func():
    torch = pytest.importorskip("torch")
    x, y, u, v = _a(4), _a(4), _a(4), _a(4)
    out, jvp_fn = minidl.func.linearize(_two_outputs, _t(x), _t(y))
    t_out, t_jvp = torch.func.linearize(_two_outputs, torch.tensor(x), torch.tensor(y))
    ours, theirs = jvp_fn(_t(u), _t(v)), t_jvp(torch.tensor(u), torch.tensor(v))
    np.testing.assert_allclose(ours[0].numpy(), theirs[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours[1]["s"].numpy(), theirs[1]["s"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(out[1]["s"].numpy(), t_out[1]["s"].numpy(), rtol=1e-12)


def test_linearize_refuses_tangents_that_do_not_fit():
    _, jvp_fn = minidl.func.linearize(lambda a: a.sin(), _t(_a(3)))
    with pytest.raises(RuntimeError, match=r"tangent:0 with shape \(4,\) in flattened pytree "
                                           r"doesn't match the shape \(3,\)"):
        jvp_fn(_t(_a(4)))
    with pytest.raises(RuntimeError, match="tangent:0 with dtype float32"):
        jvp_fn(minidl.tensor(_a(3), dtype=minidl.float32))
    with pytest.raises(RuntimeError, match="takes 1 tangents, one per primal, got 2"):
        jvp_fn(_t(_a(3)), _t(_a(3)))


def test_linearize_finite_differences_on_a_conv():
    fn, shape, consts = CASES["conv"]
    x, v = INPUTS["conv"]
    _, jvp_fn = minidl.func.linearize(lambda a: fn(minidl, F, a, *[_t(c) for c in consts]),
                                      _t(x))
    eps = 1e-6

    def f(a):
        with minidl.no_grad():
            return fn(minidl, F, _t(a), *[_t(c) for c in consts]).numpy()
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(jvp_fn(_t(v)).numpy(), fd, rtol=1e-5, atol=1e-7)


def _hvp_f(a):
    return (a.sin() * a * a).sum() + (a.exp() * a).sum()


def _forward_over_reverse(x, v):
    with fwAD.dual_level():
        dual = fwAD.make_dual(_t(x), _t(v))
        (g,) = minidl.autograd.grad(_hvp_f(dual), dual, create_graph=True)
        return fwAD.unpack_dual(g).tangent.numpy()


def test_forward_over_reverse_is_a_hessian_vector_product():
    x, v, eps = _a(3), _a(3), 1e-6

    def gradient(a):
        t = _t(a, grad=True)
        _hvp_f(t).backward()
        return t.grad.numpy()
    fd = (gradient(x + eps * v) - gradient(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(_forward_over_reverse(x, v), fd, rtol=1e-6, atol=1e-8)


def test_forward_over_reverse_matches_torch():
    torch = pytest.importorskip("torch")
    import torch.autograd.forward_ad as tfw

    x, v = _a(3), _a(3)
    with tfw.dual_level():
        dual = tfw.make_dual(torch.tensor(x), torch.tensor(v))
        theirs = tfw.unpack_dual(torch.func.grad(_hvp_f)(dual)).tangent.numpy()
    np.testing.assert_allclose(_forward_over_reverse(x, v), theirs, rtol=1e-12)


# ---- a tangent after an in-place change; forward AD under no_grad is refused, not a tangent of None ----
def test_forward_ad_tangent_after_inplace_change():
    with fwAD.dual_level():
        d = fwAD.make_dual(minidl.tensor([1.0, 2.0]), minidl.tensor([1.0, 1.0]))
        y = d * 2
        assert fwAD.unpack_dual(y).tangent.tolist() == [2.0, 2.0]
        y.mul_(3)  # the cached tangent of y is stale now
        assert fwAD.unpack_dual(y).tangent.tolist() == [6.0, 6.0]


def test_forward_ad_under_no_grad_refuses_rather_than_losing_the_tangent():
    with fwAD.dual_level():
        d = fwAD.make_dual(minidl.tensor([1.0, 2.0]), minidl.tensor([1.0, 1.0]))
        y = d * 2
        with minidl.no_grad():
            z = d.sin()
            w = z + 1  # made from a marked result
            u = y * 3  # from a recorded result of the dual
            free = minidl.tensor([1.0]) * 2  # nothing that requires grad
        for lost in (z, w, u):
            with pytest.raises(RuntimeError, match="no_grad"):
                fwAD.unpack_dual(lost)
        assert fwAD.unpack_dual(free).tangent is None
        assert fwAD.unpack_dual(y).tangent.tolist() == [2.0, 2.0]
    with minidl.no_grad():  # no level open: nothing is marked
        v = minidl.tensor([1.0], requires_grad=True) * 2
    assert "_no_grad_of_graph" not in v.__dict__
# ---- autograd.forward_ad ----------------------------------------------------------------------

fwad = minidl.autograd.forward_ad


def test_unpack_dual_after_a_backward_that_freed_the_graph_is_refused_not_none():
    with fwad.dual_level():
        dual = fwad.make_dual(minidl.ones(2, 2), minidl.ones(2, 2))
        y = (dual * dual).sum()
        read_before = fwad.unpack_dual(y).tangent
        y.backward()
        assert fwad.unpack_dual(y).tangent.item() == read_before.item() == 8.0  # kept
        z = (dual.exp() * 1).sum()
        z.backward()
        with pytest.raises(RuntimeError, match="freed by a backward pass"):
            fwad.unpack_dual(z)


def test_unpack_dual_of_a_level_that_is_not_there_is_refused():
    with fwad.dual_level():
        dual = fwad.make_dual(minidl.ones(2), minidl.ones(2))
        with pytest.raises(RuntimeError, match="level 5"):
            fwad.unpack_dual(dual, level=5)
    assert fwad.unpack_dual(dual).tangent is None  # no level: no tangent, as torch's


def test_make_dual_of_a_tensor_with_a_tangent_is_refused_as_torch():
    with fwad.dual_level():
        dual = fwad.make_dual(minidl.ones(2), minidl.ones(2))
        for base in (dual, dual * 2):
            with pytest.raises(RuntimeError, match="already has a forward gradient"):
                fwad.make_dual(base, minidl.ones(2))
        assert fwad.unpack_dual(dual * 3).tangent.numpy().tolist() == [3.0, 3.0]
