"""Audit of 2026-12-07's autograd APIs (double backward, minidl.autograd.functional, minidl.func,
anomaly mode, custom functions, pruning) against PyTorch's semantics and against misuse. Each
test failed before its fix."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F


def t64(a, grad=True):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=minidl.float64, requires_grad=grad)


# ---- .grad after backward(create_graph=True) is a tensor of its own -------------------------
def test_create_graph_grad_is_not_shared_between_leaves_or_with_the_given_gradient():
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    (a + b).sum().backward(create_graph=True)  # Add hands one gradient to both inputs
    assert a.grad is not b.grad
    with minidl.no_grad():
        a.grad.zero_()
    assert b.grad.tolist() == [1.0, 1.0]
    x = t64([1.0, 2.0])
    v = t64([5.0, 6.0], grad=False)
    x.backward(v, create_graph=True)
    assert x.grad is not v
    with minidl.no_grad():
        x.grad.zero_()
    assert v.tolist() == [5.0, 6.0]


def test_create_graph_grad_copy_matches_torch_and_stays_differentiable():
    torch = pytest.importorskip("torch")
    results = []
    for lib in (torch, minidl):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        v = lib.tensor([1.0, 3.0], dtype=lib.float64, requires_grad=True)
        (a * 1).backward(v, create_graph=True)
        assert a.grad is not v and a.grad.requires_grad
        (gv,) = lib.autograd.grad((a.grad * a.grad).sum(), v)  # through the copy
        results.append(gv.tolist())
    assert results[0] == results[1] == [2.0, 6.0]


# ---- the in-place version check in a create_graph pass --------------------------------------
@pytest.mark.parametrize("op", ["var", "std"])
def test_var_refuses_an_input_changed_in_place_in_both_passes(op):
    # Var saved its deviations from the mean, not its input; graph_backward reads the input
    # Tensor, so a create_graph pass differentiated the changed values (silently wrong)
    for create_graph in (False, True):
        a = t64([0.3, 0.7, 1.2])
        b = a * 2
        c = getattr(b, op)()
        with minidl.no_grad():
            b.mul_(1.5)
        with pytest.raises(RuntimeError, match="changed by an in-place operation"):
            minidl.autograd.grad(c, a, create_graph=create_graph)


def test_cross_entropy_create_graph_refuses_logits_changed_in_place():
    a = t64([[0.3, 0.7, 1.2]])
    b = a * 2
    loss = F.cross_entropy(b, minidl.tensor([1]))
    (ordinary,) = minidl.autograd.grad(loss, a, retain_graph=True)  # the saved softmax: right
    np.testing.assert_allclose(ordinary.numpy(), [[0.2156, -1.5201, 1.3045]], atol=1e-4)
    with minidl.no_grad():
        b.mul_(1.5)
    with pytest.raises(RuntimeError, match="CrossEntropy's input 0"):
        minidl.autograd.grad(loss, a, create_graph=True)


@pytest.mark.parametrize("name", ["sinc", "i1", "i0e", "i1e", "erfcx", "log_ndtr"])
def test_special_op_create_graph_refuses_its_output_changed_in_place(name):
    fn = getattr(minidl.special, name)
    a = t64([0.3, 0.6, 0.8])
    b = a * 1
    c = fn(b)
    (ordinary,) = minidl.autograd.grad(c.sum(), a, retain_graph=True)
    with minidl.no_grad():
        c.mul_(1.1)
    # the ordinary pass uses the saved input: still right; the create_graph pass read the output
    (again,) = minidl.autograd.grad(c.sum(), a, retain_graph=True)
    np.testing.assert_allclose(again.numpy(), ordinary.numpy())
    with pytest.raises(RuntimeError, match="output .*changed by an in-place operation"):
        minidl.autograd.grad(c.sum(), a, create_graph=True)


# ---- minidl.func ---------------------------------------------------------------------------------
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


# ---- zero_grad(set_to_none=False) after backward(create_graph=True) --------------------------------
@pytest.mark.parametrize("via", ["optimizer", "module"])
def test_zero_grad_in_place_cuts_a_create_graph_gradient_from_its_graph(via):
    m = minidl.nn.Linear(2, 1).double()
    x = t64([[1.0, 2.0]], grad=False)
    (m(x) ** 2).sum().backward(create_graph=True)
    assert m.weight.grad.requires_grad
    if via == "optimizer":
        minidl.optim.SGD(m.parameters(), lr=0.1).zero_grad(set_to_none=False)
    else:
        m.zero_grad(set_to_none=False)
    g = m.weight.grad
    assert g.tolist() == [[0.0, 0.0]]
    assert not g.requires_grad and g.grad_fn is None  # no graph kept alive by .grad
    (m(x) ** 2).sum().backward()
    assert not m.weight.grad.requires_grad


def test_zero_grad_in_place_parity_with_torch():
    torch = pytest.importorskip("torch")
    flags = []
    for lib in (torch, minidl):
        w = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        opt = lib.optim.SGD([w], lr=0.1)
        (w ** 3).sum().backward(create_graph=True)
        opt.zero_grad(set_to_none=False)
        flags.append((w.grad.requires_grad, w.grad.tolist()))
    assert flags[0] == flags[1]


# ---- custom functions ------------------------------------------------------------------------------
@pytest.mark.parametrize("create_graph", [False, True])
def test_custom_backward_gradient_of_a_wrong_shape_is_refused(create_graph):
    class Shrink(minidl.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return g.sum()  # shape () for an input of shape (2,): was taken as x's gradient

    x = t64([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"invalid gradient at index 0 - got shape \(\)"):
        minidl.autograd.grad(Shrink.apply(x).sum(), x, create_graph=create_graph)

    class Wide(minidl.autograd.Function):  # a broadcast gradient is summed down, as PyTorch's
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * minidl.ones(3, 2, dtype=minidl.float64)

    (gx,) = minidl.autograd.grad(Wide.apply(x).sum(), x, create_graph=create_graph)
    assert gx.tolist() == [3.0, 3.0]


# ---- pruning ---------------------------------------------------------------------------------------
def test_pruned_state_dict_into_an_unpruned_model_is_a_runtime_error_as_torch():
    prune = minidl.nn.utils.prune
    m = minidl.nn.Linear(3, 2)
    prune.l1_unstructured(m, "weight", amount=2)
    with pytest.raises(RuntimeError, match="missing keys: weight"):
        minidl.nn.Linear(3, 2).load_state_dict(m.state_dict())
    with pytest.raises(ValueError):  # still the ValueError it was
        minidl.nn.Linear(3, 2).load_state_dict(m.state_dict())
    fresh = minidl.nn.Linear(3, 2)
    prune.identity(fresh, "weight")
    fresh.load_state_dict(m.state_dict())
    x = minidl.ones(1, 3)
    np.testing.assert_array_equal(fresh(x).numpy(), m(x).numpy())


# ---- gradgradcheck takes torch's arguments ---------------------------------------------------------
def test_gradgradcheck_takes_one_tensor_grad_outputs_and_tuple_outputs():
    from minidl.testing import gradcheck, gradgradcheck

    x = t64([0.5, -1.0, 2.0])
    assert gradcheck(lambda t: t ** 3, x)  # one Tensor: was iterated over as its elements
    assert gradgradcheck(lambda t: t ** 3, x)
    # torch's third positional argument: was taken as eps
    assert gradgradcheck(lambda t: t ** 3, [x], [t64([1.0, -1.0, 0.5], grad=False)])
    assert gradgradcheck(lambda t: (t ** 3, t.exp().sum()), [x])
    with pytest.raises(ValueError, match="grad_outputs of shapes"):
        gradgradcheck(lambda t: t ** 3, [x], [t64([1.0], grad=False)])

    class Wrong(minidl.autograd.Function):  # a graph_backward that is a constant: caught
        def forward(self, a):
            self.save_for_backward(a)
            return a ** 3

        def backward(self, g):
            (a,) = self.saved
            return 3 * g * a * a

        def graph_backward(self, g, out):
            (a,) = self.inputs
            return g * minidl.tensor(3 * a.numpy() ** 2, dtype=minidl.float64)

    assert not gradgradcheck(lambda t: Wrong.apply(t), x, [t64([1.0, 1.0, 1.0], grad=False)],
                             raise_exception=False)


# ---- autograd.grad / backward argument errors, as torch --------------------------------------------
def test_grad_argument_errors_are_torch_s():
    x = t64([1.0, 2.0])
    y = x ** 3
    with pytest.raises(RuntimeError, match="needs a scalar"):
        minidl.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not match"):
        minidl.autograd.grad(y, x, grad_outputs=t64([1.0, 1.0, 1.0], False), create_graph=True)
    with pytest.raises(RuntimeError, match="needs a scalar"):
        y.backward(create_graph=True)
    with pytest.raises(ValueError):  # still the ValueError it was
        y.backward()
    with pytest.raises(RuntimeError, match="inputs must not be empty"):
        minidl.autograd.grad(y.sum(), [], create_graph=True)  # was ()
    with pytest.raises(ValueError, match="allow_unused"):
        minidl.autograd.grad(y.sum(), x, allow_unused=False, materialize_grads=True)


def _saves_output(style):
    if style == "setup_context":
        class Double(minidl.autograd.Function):
            @staticmethod
            def forward(x):
                return x * x, x * 3

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(*output)

            @staticmethod
            def backward(ctx, ga, gb):
                a, b = ctx.saved_tensors  # x^2 and 3x: their derivative needs the graph
                return ga * a + gb * b
    else:
        class Double(minidl.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                a, b = x * x, x * 3
                ctx.save_for_backward(a, b)
                return a, b

            @staticmethod
            def backward(ctx, ga, gb):
                a, b = ctx.saved_tensors
                return ga * a + gb * b
    return Double


@pytest.mark.parametrize("style", ["setup_context", "ctx"])
def test_custom_function_saved_outputs_are_differentiable_in_a_create_graph_pass(style):
    Double = _saves_output(style)
    x = t64([1.0, 2.0])
    a, b = Double.apply(x)
    (g,) = minidl.autograd.grad((a + b).sum(), x, create_graph=True)  # x^2 + 3x
    assert g.tolist() == [4.0, 10.0]
    # was: g a constant, no second derivative. a and b are recorded through Double itself,
    # so their derivative is Double's backward again, as in PyTorch: a + b
    (h,) = minidl.autograd.grad(g.sum(), x)
    assert h.tolist() == [4.0, 10.0]
    (plain,) = minidl.autograd.grad(sum(Double.apply(x)).sum(), x)  # the ordinary pass
    assert plain.tolist() == [4.0, 10.0]


def test_custom_function_saved_output_parity_with_torch():
    torch = pytest.importorskip("torch")

    class TCube(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x ** 3

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], output)

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            return 3 * g * y / x

    class MCube(minidl.autograd.Function):
        @staticmethod
        def forward(x):
            return x ** 3

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], output)

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            return 3 * g * y / x

    results = []
    for lib, fn in ((torch, TCube), (minidl, MCube)):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        (g,) = lib.autograd.grad(fn.apply(x).sum(), x, create_graph=True)
        (h,) = lib.autograd.grad(g.sum(), x)
        results.append((g.tolist(), h.tolist()))
    assert results[0] == results[1]


def test_custom_save_for_backward_refuses_a_non_tensor():
    class C(minidl.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(3.0)

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(TypeError, match="argument 0 is of type float"):
        C.apply(t64([1.0]))


# ---- module full backward hooks in a second backward -----------------------------------------------
def _mlp(lib):
    m = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.Tanh(), lib.nn.Linear(3, 1)).double()
    with lib.no_grad():
        for p in m.parameters():
            p.copy_(lib.tensor(np.linspace(-0.5, 0.7, p.numel()).reshape(tuple(p.shape)),
                               dtype=lib.float64))
    return m


def _hooked_penalty(lib):
    m = _mlp(lib)
    m[1].register_full_backward_hook(lambda mod, gin, gout: (gin[0] * 2,))
    x = lib.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=lib.float64, requires_grad=True)
    (g,) = lib.autograd.grad(m(x).sum(), x, create_graph=True)
    (g ** 2).sum().backward()
    return g, m[0].weight.grad, x.grad


def test_full_backward_hook_runs_only_where_the_gradient_passed_the_outputs():
    # the second backward reaches Tanh's input through its derivative (1 - y^2) without
    # passing Tanh's output node: the hook (x2) ran there again, doubling x.grad
    _, _, x_grad = _hooked_penalty(minidl)
    np.testing.assert_allclose(x_grad.numpy(), [[-0.03108657, -0.02462929], [-1.29492724, -1.38035561]],
                               rtol=1e-6)


def test_full_backward_hook_second_backward_parity_with_torch():
    torch = pytest.importorskip("torch")
    for ours, theirs in zip(_hooked_penalty(minidl), _hooked_penalty(torch)):
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-10)
