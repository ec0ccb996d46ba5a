"""minidl.func's transforms (grad, grad_and_value, vjp, jvp, jacrev, jacfwd, hessian, vmap,
stack_module_state) against torch.func on the same float64 inputs, and their errors."""
import numpy as np
import pytest

import minidl
import minidl.func as mf
import minidl.nn as nn
from minidl import func as mfunc

rng = np.random.default_rng(11)
A, B = rng.normal(size=(3, 4)), rng.normal(size=4)
W, X, Y = rng.normal(size=(4, 2)), rng.normal(size=(5, 4)), rng.normal(size=(5, 2))


def f(x, y):
    return ((x @ y).tanh() ** 2).sum() + (x.exp() * y).mean()


def loss(w, x, y):
    return ((x @ w - y) ** 2).sum()


def ours(*arrays):
    return tuple(minidl.tensor(a, dtype=minidl.float64) for a in arrays)


def theirs(*arrays):
    torch = pytest.importorskip("torch")
    return tuple(torch.tensor(a) for a in arrays)


def close(a, b):
    if isinstance(b, (tuple, list)):
        assert isinstance(a, (tuple, list)) and len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y)
        return
    if isinstance(b, dict):
        assert set(a) == set(b)
        for k in b:
            close(a[k], b[k])
        return
    assert tuple(a.shape) == tuple(b.shape)
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


def tf():
    torch = pytest.importorskip("torch")
    return torch.func


def test_grad_and_friends_match_torch_func():
    t = tf()
    close(mf.grad(f)(*ours(A, B)), t.grad(f)(*theirs(A, B)))
    close(mf.grad(f, argnums=(0, 1))(*ours(A, B)), t.grad(f, argnums=(0, 1))(*theirs(A, B)))
    close(mf.grad_and_value(f, argnums=1)(*ours(A, B)),
          t.grad_and_value(f, argnums=1)(*theirs(A, B)))
    close(mf.hessian(f, argnums=(0, 1))(*ours(A, B)), t.hessian(f, argnums=(0, 1))(*theirs(A, B)))
    g = lambda x, y: (x @ y).sigmoid()  # noqa: E731
    close(mf.jacrev(g, argnums=1)(*ours(A, B)), t.jacrev(g, argnums=1)(*theirs(A, B)))
    close(mf.jacfwd(g, argnums=(0, 1))(*ours(A, B)), t.jacfwd(g, argnums=(0, 1))(*theirs(A, B)))
    h = lambda x: (x.tanh(), {"s": x.sum(0)})  # noqa: E731
    close(mf.jacrev(h)(*ours(A)), t.jacrev(h)(*theirs(A)))


def test_vjp_jvp_match_torch_func():
    t = tf()
    out, fn = mf.vjp(lambda x, y: (x * y).tanh(), *ours(A, B))
    out_t, fn_t = t.vjp(lambda x, y: (x * y).tanh(), *theirs(A, B))
    close(out, out_t)
    close(fn(ours(A)[0]), fn_t(theirs(A)[0]))
    close(fn(ours(A * 2)[0]), fn_t(theirs(A * 2)[0]))  # callable again
    close(mf.jvp(lambda x, y: (x @ y).exp(), ours(A, B), ours(A, B)),
          t.jvp(lambda x, y: (x @ y).exp(), theirs(A, B), theirs(A, B)))


def test_nested_transforms_match_torch_func():
    t = tf()
    close(mf.grad(lambda x: mf.grad(lambda z: (z ** 4).sum())(x).sum())(*ours(B)),
          t.grad(lambda x: t.grad(lambda z: (z ** 4).sum())(x).sum())(*theirs(B)))
    close(mf.vmap(mf.grad(loss), in_dims=(None, 0, 0))(*ours(W, X, Y)),
          t.vmap(t.grad(loss), in_dims=(None, 0, 0))(*theirs(W, X, Y)))
    close(mf.vmap(mf.jacrev(lambda x: x.sin() if False else x.tanh()))(*ours(A)),
          t.vmap(t.jacrev(lambda x: x.tanh()))(*theirs(A)))


def test_vmap_dims_match_torch_func():
    t = tf()
    close(mf.vmap(lambda x: x.sum(0), in_dims=1)(*ours(A)),
          t.vmap(lambda x: x.sum(0), in_dims=1)(*theirs(A)))
    close(mf.vmap(lambda x, y: (x * y, x.sum()), in_dims=(0, None), out_dims=(1, 0))(*ours(A, B)),
          t.vmap(lambda x, y: (x * y, x.sum()), in_dims=(0, None), out_dims=(1, 0))(*theirs(A, B)))


def test_ensemble_with_stack_module_state_matches_a_loop():
    minidl.manual_seed(0)
    models = [nn.Linear(4, 3).double() for _ in range(3)]
    params, buffers = mf.stack_module_state(models)
    assert params["weight"].shape == (3, 3, 4) and params["weight"].requires_grad
    x = ours(X)[0]

    def one(p, b, xb):
        return mf.functional_call(models[0], (p, b), (xb,))

    out = mf.vmap(one, in_dims=(0, 0, None))(params, buffers, x)
    for k, m in enumerate(models):
        np.testing.assert_allclose(out[k].detach().numpy(), m(x).detach().numpy(), rtol=1e-12)
    out.sum().backward()
    assert params["weight"].grad.shape == (3, 3, 4)


def test_a_closure_over_parameters_keeps_the_graph():
    """MAML's inner step: the gradient with respect to an input is differentiable with respect
    to the model's parameters the function closes over."""
    minidl.manual_seed(1)
    model = nn.Linear(4, 1).double()
    g = mf.grad(lambda x: model(x).tanh().sum())(ours(X)[0])
    assert g.requires_grad
    g.pow(2).sum().backward()
    assert model.weight.grad is not None and np.abs(model.weight.grad.numpy()).sum() > 0
    plain = mf.grad(lambda x: (x ** 2).sum())(ours(X)[0])
    assert not plain.requires_grad


def test_has_aux_and_values():
    g, aux = mf.grad(lambda x: ((x ** 2).sum(), {"n": 3}), has_aux=True)(ours(B)[0])
    np.testing.assert_allclose(g.numpy(), 2 * B)
    assert aux == {"n": 3}
    g, (value, aux) = mf.grad_and_value(lambda x: ((x ** 2).sum(), x.mean()), has_aux=True)(
        ours(B)[0])
    np.testing.assert_allclose(value.item(), (B ** 2).sum())
    np.testing.assert_allclose(aux.item(), B.mean())


def test_vmap_randomness_modes():
    x = minidl.zeros(4, 3)
    with pytest.raises(RuntimeError, match="random operation"):
        mf.vmap(lambda r: r + minidl.rand(3))(x)
    same = mf.vmap(lambda r: r + minidl.rand(3), randomness="same")(x)
    assert np.allclose(same.numpy(), same.numpy()[0])
    different = mf.vmap(lambda r: r + minidl.rand(3), randomness="different")(x)
    assert not np.allclose(different.numpy(), different.numpy()[0])


def test_errors():
    x = ours(A)[0]
    with pytest.raises(RuntimeError, match="single element"):
        mf.grad(lambda t: t * 2)(x)
    with pytest.raises(ValueError, match="argnums"):
        mf.grad(f, argnums=2)(*ours(A, B))
    with pytest.raises(ValueError, match="same size in the mapped dimension"):
        mf.vmap(lambda a, b: a + b)(x, ours(B)[0])
    with pytest.raises(ValueError, match="out of range"):
        mf.vmap(lambda a: a, in_dims=2)(x)
    with pytest.raises(ValueError, match="at least one argument must be mapped"):
        mf.vmap(lambda a: a, in_dims=None)(x)
    with pytest.raises(ValueError, match="randomness"):
        mf.vmap(lambda a: a, randomness="sometimes")
    with pytest.raises(ValueError, match="cotangents"):
        mf.vjp(lambda t: t * 2, x)[1](ours(B)[0])
    with pytest.raises(TypeError, match="tuples"):
        mf.jvp(lambda t: t, x, x)


# ---- has_aux outputs, vmap's out_dims and in_dims, argument errors (audit against torch 2.13) --------
def t64(a, grad=True):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=minidl.float64, requires_grad=grad)


def test_func_aux_is_cut_from_the_transforms_graph():
    import minidl.func as mf

    x = t64([1.0, 2.0], grad=False)
    _, aux = mf.grad(lambda x: ((x ** 2).sum(), {"a": x * 2}), has_aux=True)(x)
    assert not aux["a"].requires_grad and aux["a"].grad_fn is None
    _, _, aux = mf.vjp(lambda x: (x ** 2, x.sum()), x, has_aux=True)
    assert not aux.requires_grad
    _, _, aux = mf.jvp(lambda x: (x * 2, x), (x,), (x,), has_aux=True)
    assert not aux.requires_grad
    _, aux = mf.jacrev(lambda x: (x ** 2, [x * 3]), has_aux=True)(x)
    assert not aux[0].requires_grad
    # an outer transform still differentiates through the aux
    w = t64([3.0])
    _, aux = mf.grad(lambda x: ((x ** 2).sum(), x * w), has_aux=True)(x)
    assert aux.requires_grad


def test_func_aux_parity_with_torch():
    torch = pytest.importorskip("torch")
    import minidl.func as mf

    ours = mf.grad(lambda x: ((x ** 2).sum(), x * 2), has_aux=True)(t64([1.0, 2.0], grad=False))
    theirs = torch.func.grad(lambda x: ((x ** 2).sum(), x * 2), has_aux=True)(
        torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert ours[1].requires_grad == theirs[1].requires_grad
    np.testing.assert_allclose(ours[1].numpy(), theirs[1].numpy())


def test_vmap_out_dims_none_refuses_an_output_that_varies_per_sample():
    import minidl.func as mf

    xs = t64([[1.0, 2.0], [3.0, 4.0]], grad=False)
    with pytest.raises(ValueError, match="out_dims is None"):
        mf.vmap(lambda x: x * 2, out_dims=None)(xs)  # was silently sample 0's output
    y = t64([1.0, 2.0], grad=False)
    out = mf.vmap(lambda x, y: (x, y * 2), in_dims=(0, None), out_dims=(0, None))(xs, y)
    assert out[1].tolist() == [2.0, 4.0]


def test_vmap_refuses_non_tensor_outputs_and_out_of_range_out_dims():
    import minidl.func as mf

    xs = t64([[1.0, 2.0], [3.0, 4.0]], grad=False)
    with pytest.raises(ValueError, match="only Tensors"):
        mf.vmap(lambda x: (x, float(x.sum())))(xs)  # was sample 0's float
    with pytest.raises(IndexError, match="out of range"):
        mf.vmap(lambda x: x * 2, out_dims=3)(xs)  # was wrapped round to dim 0
    assert mf.vmap(lambda x: x * 2, out_dims=-1)(xs).tolist() == [[2.0, 6.0], [4.0, 8.0]]


def test_vmap_nested_in_dims_and_unmappable_arguments():
    import minidl.func as mf

    a = t64([[1.0, 2.0], [3.0, 4.0]], grad=False)
    b = t64([10.0, 20.0], grad=False)
    out = mf.vmap(lambda d: d["a"] + d["b"], in_dims=({"a": 0, "b": None},))({"a": a, "b": b})
    assert out.tolist() == [[11.0, 22.0], [13.0, 24.0]]
    out = mf.vmap(lambda p: p[0] * p[1], in_dims=((1, None),))((a, b))
    assert out.tolist() == [[10.0, 60.0], [20.0, 80.0]]
    with pytest.raises(ValueError, match="only Tensors can be mapped"):
        mf.vmap(lambda x, n: x * n, in_dims=(0, 0))(a, 3)
    with pytest.raises(ValueError, match="matches the argument's structure"):
        mf.vmap(lambda p: p[0], in_dims=((0, None, 0),))((a, b))


def test_vmap_nested_in_dims_parity_with_torch():
    torch = pytest.importorskip("torch")
    import minidl.func as mf

    a, b = np.arange(6.0).reshape(2, 3), np.array([1.0, 2.0, 3.0])
    ours = mf.vmap(lambda p: p[0] * p[1], in_dims=((0, None),))((t64(a, False), t64(b, False)))
    theirs = torch.func.vmap(lambda p: p[0] * p[1], in_dims=((0, None),))(
        (torch.tensor(a), torch.tensor(b)))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy())


def test_vmap_randomness_error_leaves_the_generator_as_it_was():
    import minidl.func as mf

    minidl.manual_seed(0)
    expected = minidl.rand(3).tolist()
    minidl.manual_seed(0)
    with pytest.raises(RuntimeError, match="randomness"):
        mf.vmap(lambda x: x * minidl.rand(2))(t64([[1.0, 2.0], [3.0, 4.0]], grad=False))
    assert minidl.rand(3).tolist() == expected


def test_transform_argument_errors_are_runtime_errors_as_torch():
    import minidl.func as mf
    from minidl.autograd.functional import jacobian, vjp

    x = t64([1.0, 2.0], grad=False)
    with pytest.raises(RuntimeError):
        mf.grad(lambda x, y: (x * y).sum(), argnums=2)(x, x)
    with pytest.raises(RuntimeError):
        mf.grad(lambda x, y: (x * y).sum(), argnums=(0, 0))(x, x)
    with pytest.raises(RuntimeError):
        mf.vjp(lambda x: x ** 2, x)[1](t64([1.0, 1.0, 1.0], False))
    with pytest.raises(RuntimeError):
        mf.jvp(lambda x: x ** 2, (x,), (t64([1.0, 1.0, 1.0], False),))
    with pytest.raises(RuntimeError):
        vjp(lambda x: x ** 2, x, t64([1.0, 1.0, 1.0], False))
    with pytest.raises(RuntimeError):
        vjp(lambda x: (x, x), x, t64([1.0, 1.0], False))
    with pytest.raises(ValueError):  # still a ValueError too
        vjp(lambda x: x ** 2, x, t64([1.0, 1.0, 1.0], False))
    with pytest.raises(RuntimeError, match="strict=True and vectorize=True"):
        jacobian(lambda x: x, x, strict=True, vectorize=True)
# ---- minidl.func ------------------------------------------------------------------------------

def test_vmap_over_an_empty_batch_gives_empty_outputs():
    out = mfunc.vmap(lambda x: (x * 2, x.sum()))(minidl.zeros(0, 3))
    assert out[0].shape == (0, 3) and out[1].shape == (0,)
    out = mfunc.vmap(lambda x: x.sum(0), in_dims=1, out_dims=0)(minidl.zeros(4, 0))
    assert out.shape == (0,)


def test_vmap_refuses_an_in_place_change_of_an_unmapped_argument_before_writing():
    y = minidl.zeros(4)
    x = minidl.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    with pytest.raises(RuntimeError, match="argument 1 in place, which is not mapped"):
        mfunc.vmap(lambda a, b: b.add_(a), in_dims=(0, None))(x, y)
    assert y.numpy().tolist() == [0.0] * 4 and y._version == 0
    y.add_(1)  # writeable again afterwards
    assert y.numpy().tolist() == [1.0] * 4
    # a mapped argument may still be changed in place, as in torch
    out = mfunc.vmap(lambda a: a.mul_(2))(x)
    assert out.numpy()[1, 1] == 10.0 and x.numpy()[1, 1] == 10.0


def test_vmap_takes_nested_and_dict_out_dims_as_torch():
    x = minidl.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    s, (a, b) = mfunc.vmap(lambda r: (r.sum(), (r * 2, r * 3)), out_dims=(0, (1, 0)))(x)
    assert s.shape == (3,) and a.shape == (4, 3) and b.shape == (3, 4)
    out = mfunc.vmap(lambda r: {"a": r}, out_dims={"a": 1})(x)
    np.testing.assert_array_equal(out["a"].numpy(), x.numpy().T)
    with pytest.raises(ValueError, match="not compatible with the structure"):
        mfunc.vmap(lambda r: r, out_dims=0.0)(x)


def test_vmap_nested_out_dims_parity_with_torch():
    torch = pytest.importorskip("torch")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)

    def f(m):
        return m.func.vmap(lambda r: (r.sum(), {"p": r * 2, "q": [r * 3]}),
                           out_dims=(0, {"p": 1, "q": [0]}))(m.tensor(x))
    (ts, td), (ms, md) = f(torch), f(minidl)
    np.testing.assert_array_equal(ms.numpy(), ts.numpy())
    np.testing.assert_array_equal(md["p"].numpy(), td["p"].numpy())
    np.testing.assert_array_equal(md["q"][0].numpy(), td["q"][0].numpy())


def test_vjp_and_jacrev_refuse_integer_and_bool_outputs_instead_of_zeros():
    x = minidl.ones(3)
    with pytest.raises(RuntimeError, match="floating-point or complex.*int64"):
        mfunc.vjp(lambda t: (t * 2).long(), x)
    with pytest.raises(RuntimeError, match="floating-point or complex.*bool"):
        mfunc.jacrev(lambda t: t > 0)(x)
    # a float output with an integer one beside it is refused too, as torch's
    with pytest.raises(RuntimeError, match="bool"):
        mfunc.vjp(lambda t: (t * 2, t > 0), x)


def test_stack_module_state_names_the_parameter_whose_shapes_differ():
    with pytest.raises(ValueError, match=r"'weight' has shape \(3, 3\) in model 1 but \(2, 3\)"):
        mfunc.stack_module_state([nn.Linear(3, 2), nn.Linear(3, 3)])


# ---- vmap: sample-dependent output shapes, chunk_size -----------------------------------------

def test_vmap_names_outputs_whose_shape_depends_on_the_sample():
    x = minidl.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    with pytest.raises(RuntimeError, match=r"output 0 has shape \(2,\) for sample 0 but \(1,\)"):
        mfunc.vmap(lambda r: r[r > 0])(x)


def test_vmap_checks_chunk_size_and_leaves_unbatched_non_tensor_outputs_alone():
    x = minidl.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="chunk_size"):
            mfunc.vmap(lambda r: r, chunk_size=bad)
    out, n = mfunc.vmap(lambda r: (r * 2, 3), out_dims=(0, None))(x)
    assert n == 3 and out.shape == (2, 3)
    with pytest.raises(ValueError, match="only Tensors"):
        mfunc.vmap(lambda r: (r * 2, 3), out_dims=(0, 0))(x)


# ---- jacrev / jacfwd: chunk_size and randomness -----------------------------------------------

def test_jacrev_and_jacfwd_check_chunk_size_and_randomness_as_torch():
    x = minidl.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match="chunk_size"):
        mfunc.jacrev(lambda t: t.sin(), chunk_size=0)
    with pytest.raises(RuntimeError, match="Only allowed values for randomness"):
        mfunc.jacfwd(lambda t: t.sin(), randomness="foo")
    with pytest.raises(RuntimeError, match="random operation while randomness='error'"):
        mfunc.jacfwd(lambda t: t * minidl.rand(2))(x)
    jac = mfunc.jacfwd(lambda t: t * minidl.rand(2), randomness="same")(x)
    assert jac.shape == (2, 2) and jac.numpy()[0, 1] == 0.0
