"""In-place ops on a view of a tensor inside the graph (``h[:, :2].mul_(2)``,
``h.view(-1).relu_()``, ``nn.Flatten`` then ``nn.ReLU(inplace=True)``): the base sees the
change and the gradients are PyTorch's; the cases PyTorch refuses are refused."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck, gradgradcheck

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
W = RNG.standard_normal(4)
U = RNG.standard_normal(3)

# view kind -> the view of a (3, 4) tensor h
VIEWS = {
    "slice": lambda h: h[:, :2],
    "row": lambda h: h[1],
    "select": lambda h: h.select(1, 0),
    "narrow": lambda h: h.narrow(1, 1, 2),
    "view": lambda h: h.view(-1),
    "reshape": lambda h: h.reshape(2, 6),
    "flatten": lambda h: h.flatten(0),
    "unflatten": lambda h: h.unflatten(1, (2, 2))[:, 0],
    "t": lambda h: h.t(),
    "transpose": lambda h: h.transpose(0, 1)[1:],
    "permute": lambda h: h.unsqueeze(0).permute(2, 0, 1),
    "unsqueeze": lambda h: h.unsqueeze(0)[0, 1:],
    "squeeze": lambda h: h[:1].squeeze(0),
    "chain": lambda h: h[1:].t()[0],
    "diagonal": lambda h: h.diagonal(),
    "diagonal_offset": lambda h: h.t().diagonal(-1),
}


def _ops(lib, w, u):
    """in-place op -> fn(view); w and u are tensors that require grad (shapes (4,), (3,))."""
    def by_last(v):  # a value that fits the view's last dim, requiring grad
        n = v.shape[-1]
        return w[:n] if n <= 4 else w.repeat(3)[:n]
    return {
        "mul_": lambda v: v.mul_(2),
        "add_grad": lambda v: v.add_(by_last(v)),
        "mul_grad": lambda v: v.mul_(by_last(v)),
        "relu_": lambda v: v.relu_(),
        "sigmoid_": lambda v: v.sigmoid_(),
        "zero_": lambda v: v.zero_(),
        "copy_grad": lambda v: v.copy_(by_last(v) * 3),
        "clamp_": lambda v: v.clamp_(-0.3, 0.4),
        "fill_": lambda v: v.fill_(0.5),
        "setitem": lambda v: v.__setitem__(0, u[0] * 2),
    }


def _run(lib, view, op):
    x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
    w = lib.tensor(W, dtype=lib.float64, requires_grad=True)
    u = lib.tensor(U, dtype=lib.float64, requires_grad=True)
    h = x * 1.5 - 0.2
    v = VIEWS[view](h)
    r = _ops(lib, w, u)[op](v)
    assert r is None or r is v
    vals = [h.detach().numpy().copy(), v.detach().numpy().copy()]
    loss = (h * h).sum() + (v * v.detach().sin()).sum()
    loss.backward()
    grads = [None if g is None else g.numpy() for g in (x.grad, w.grad, u.grad)]
    return vals, grads


@pytest.mark.parametrize("op", ["mul_", "add_grad", "mul_grad", "relu_", "sigmoid_", "zero_",
                                "copy_grad", "clamp_", "fill_", "setitem"])
@pytest.mark.parametrize("view", list(VIEWS))
def test_in_place_on_view_as_torch(view, op):
    torch = pytest.importorskip("torch")
    mv, mg = _run(minidl, view, op)
    tv, tg = _run(torch, view, op)
    for a, b in zip(mv, tv):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(mg, tg):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_base_and_view_read_the_new_values():
    x = minidl.tensor(X, dtype=minidl.float64, requires_grad=True)
    h = x * 1
    other = h[0]  # another view of h, made before the change
    v = h[:, 1]
    v.mul_(3)
    expect = X.copy()
    expect[:, 1] *= 3
    np.testing.assert_allclose(h.detach().numpy(), expect)
    np.testing.assert_allclose(v.detach().numpy(), expect[:, 1])
    np.testing.assert_allclose(other.detach().numpy(), expect[0])
    assert h._version == v._version == other._version == 1
    assert h.grad_fn is not None and v.grad_fn is not None
    # the view made before the change is a view of the new value: its gradient goes through it
    (other * minidl.arange(4, dtype=minidl.float64)).sum().backward()
    g = np.zeros((3, 4))
    g[0] = np.arange(4.0)
    g[0, 1] *= 3
    np.testing.assert_allclose(x.grad.numpy(), g)


def test_gradcheck_and_gradgradcheck_through_a_view_in_place_op():
    x = minidl.tensor(X, dtype=minidl.float64, requires_grad=True)
    w = minidl.tensor(W, dtype=minidl.float64, requires_grad=True)

    def f(x, w):
        h = x * x
        h[1:].t()[0].mul_(w[:2])
        h.view(-1)[::3].sigmoid_()
        return h * h.sum()

    assert gradcheck(f, (x, w))
    assert gradgradcheck(f, (x, w))


def test_two_in_place_ops_on_one_view_and_on_two_views():
    torch = pytest.importorskip("torch")

    def run(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        w = lib.tensor(W, dtype=lib.float64, requires_grad=True)
        h = x.exp() * 1
        v = h[:, 2]
        h[:, 0].add_(w[1:])  # first: a later change would refuse sigmoid_'s saved output in torch
        v.mul_(w[:3])
        v.sigmoid_()
        (h * h).sum().backward()
        return h.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    for a, b in zip(run(minidl), run(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_index_augmented_assignment_in_the_graph():
    torch = pytest.importorskip("torch")

    def run(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        h = x * 2
        h[0] += 1
        h[:, 2] *= x[:, 0]
        (h * h).sum().backward()
        return h.detach().numpy(), x.grad.numpy()

    for a, b in zip(run(minidl), run(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_unrecorded_base_becomes_part_of_the_graph():
    torch = pytest.importorskip("torch")

    def run(lib):
        b = lib.zeros(3, 4, dtype=lib.float64)
        w = lib.tensor(W, dtype=lib.float64, requires_grad=True)
        before = b[1:]  # a view made before the change also becomes a view of the new b
        b[0].copy_(w * 2)
        assert b.requires_grad and before.requires_grad
        ((b * b).sum() + (before * 3).sum()).backward()
        return b.detach().numpy(), w.grad.numpy()

    for a, c in zip(run(minidl), run(torch)):
        np.testing.assert_allclose(a, c)


def test_flatten_then_relu_in_place_model_as_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    weight, bias, data = rng.standard_normal((6, 4)), rng.standard_normal(6), rng.standard_normal(
        (5, 2, 4))

    def run(lib):
        model = lib.nn.Sequential(lib.nn.Linear(4, 6), lib.nn.Flatten(), lib.nn.ReLU(inplace=True))
        model = model.double()
        with lib.no_grad():
            model[0].weight.copy_(lib.tensor(weight, dtype=lib.float64))
            model[0].bias.copy_(lib.tensor(bias, dtype=lib.float64))
        x = lib.tensor(data, dtype=lib.float64, requires_grad=True)
        y = model(x)
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), model[0].weight.grad.numpy()

    for a, b in zip(run(minidl), run(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_flatten_relu_in_place_gradcheck():
    lin = minidl.nn.Linear(4, 6).double()
    model = minidl.nn.Sequential(lin, minidl.nn.Flatten(), minidl.nn.ReLU(inplace=True))
    x = minidl.tensor(RNG.standard_normal((2, 3, 4)), dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda x: model(x) * 1, (x,))


def _refusal(lib, case):
    x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
    if case == "leaf":
        x[0].mul_(2)
    h = x * 1
    if case == "no_grad":
        with lib.no_grad():
            v = h[0]
        v.mul_(2)
    elif case == "expand":
        h[:1].expand(3, 4).mul_(2)
    elif case == "unbind":
        h.unbind(0)[0].mul_(2)
    elif case == "split":
        h.split(1)[0].mul_(2)


@pytest.mark.parametrize("case, match", [
    ("leaf", "a view of a leaf Variable that requires grad is being used in an in-place"),
    ("no_grad", "A view was created in no_grad mode and is being modified inplace with grad"),
    ("expand", "more than one element of the written-to tensor"),
    ("unbind", "is a view and is being modified inplace. This view is the output of a function "
               "that returns multiple views"),
    ("split", "is a view and is being modified inplace. This view is the output of a function "
              "that returns multiple views"),
])
def test_refused_as_torch_refuses(case, match):
    with pytest.raises(RuntimeError, match=f"(?i){match}"):
        _refusal(minidl, case)


@pytest.mark.parametrize("case", ["leaf", "no_grad", "expand", "unbind", "split"])
def test_torch_refuses_those_too(case):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError):
        _refusal(torch, case)


def test_a_refused_change_leaves_everything_as_it_was():
    x = minidl.tensor(X, dtype=minidl.float64, requires_grad=True)
    h = x * 1
    v = h[:1].expand(3, 4)
    node = h.grad_fn
    with pytest.raises(RuntimeError, match="single memory location"):
        v.mul_(2)
    np.testing.assert_array_equal(h.detach().numpy(), X)
    assert h.grad_fn is node and h._version == 0


def test_an_op_that_took_the_base_or_a_view_first_is_refused_not_misrouted():
    x = minidl.tensor(X, dtype=minidl.float64, requires_grad=True)
    h = x * 2
    _ = h * h  # the base is an input of another op
    with pytest.raises(RuntimeError, match="other than a view already took its base"):
        h[0].mul_(2)
    g = x * 2
    a = g[0]
    _ = a * 3  # another view of the base is an input of another op
    with pytest.raises(RuntimeError, match="other than a view already took another view"):
        g[:, 1].mul_(2)
    k = x * 2
    v = k[0]
    _ = v.exp()  # the view itself
    with pytest.raises(RuntimeError, match="other than a view already took it"):
        v.mul_(2)


def test_a_saved_base_changed_through_a_view_fails_at_backward():
    x = minidl.tensor(X, dtype=minidl.float64, requires_grad=True)
    h = x.exp()  # exp saves its output
    h[0].mul_(2)
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        h.sum().backward()


def test_without_grad_the_view_writes_into_its_base():
    x = minidl.tensor(X, dtype=minidl.float64, requires_grad=True)
    with minidl.no_grad():
        h = x * 1
        h[1].mul_(2)  # made and changed under no_grad: allowed, as in PyTorch
    expect = X.copy()
    expect[1] *= 2
    np.testing.assert_allclose(h.numpy(), expect)


def test_tensors_with_views_pickle_and_copy():
    import copy
    import pickle

    b = minidl.zeros(3, dtype=minidl.float64)
    c = b[1:]  # b now remembers its views (weakly): a pickle or a copy starts without them
    b2 = pickle.loads(pickle.dumps(b))
    np.testing.assert_array_equal(b2.numpy(), np.zeros(3))
    assert copy.deepcopy(b).shape == (3,)
    c2 = pickle.loads(pickle.dumps(c))  # its own array now: an in-place op changes only it
    w = minidl.ones(2, dtype=minidl.float64, requires_grad=True)
    c2.add_(w)
    c2.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(b.numpy(), np.zeros(3))


def test_unsafe_split_pieces_are_not_followed_as_views_as_torch():
    torch = pytest.importorskip("torch")

    def run(lib, method):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        h = x * 1
        a = (h.unsafe_split(2) if method else lib.unsafe_split(h, 2))[0]
        a.mul_(2)  # not refused (split's pieces are), and not recorded on h
        (h.sum() + a.sum()).backward()
        return a.detach().numpy(), x.grad.numpy()

    for method in (True, False):
        for p, q in zip(run(minidl, method), run(torch, method)):
            np.testing.assert_allclose(p, q)


def test_diagonal_is_a_view_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (minidl, torch):
        x = lib.tensor(X, dtype=lib.float64)
        x.diagonal(1).fill_(7.0)  # writes into x, as PyTorch's view does
        assert x.diagonal().is_contiguous() is False
        expect = X.copy()
        expect[[0, 1, 2], [1, 2, 3]] = 7.0
        np.testing.assert_array_equal(x.numpy(), expect)
    for lib in (minidl, torch):
        src = lib.tensor(X, dtype=lib.float64)
        src.diag().fill_(0.0)  # diag, though, is a copy in both
        np.testing.assert_array_equal(src.numpy(), X)


@pytest.mark.parametrize("case", ["add_row", "mul_col", "copy_row", "self_mul", "setitem_row",
                                  "add_base"])
def test_value_from_the_same_base_as_torch(case):
    """The value read from the same base: its values before the change, as PyTorch's (which
    refuses at backward where mul saved a view that then changed; minidl saved a copy)."""
    torch = pytest.importorskip("torch")

    def run(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        h = x * x
        if case == "add_row":
            h[0].add_(h[1])
        elif case == "mul_col":  # (torch refuses mul's saved other at backward: a clone there)
            h[:, 0].mul_(h[:, 1] if lib is minidl else h[:, 1].clone())
        elif case == "copy_row":
            h[0].copy_(h[2])
        elif case == "self_mul":
            v = h[1:, 2]
            v.mul_(v if lib is minidl else v.clone())
        elif case == "setitem_row":
            h[1][1:] = h[2][:3]
        elif case == "add_base":
            h.view(12)[:4].add_(h[2])
        (h * h.detach().cos()).sum().backward()
        return h.detach().numpy(), x.grad.numpy()

    for a, b in zip(run(minidl), run(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_base_with_a_non_contiguous_array_as_torch():
    torch = pytest.importorskip("torch")

    def run(lib):
        b = lib.from_numpy(np.ascontiguousarray(X.T).T.copy(order="F"))  # strides of a .T
        w = lib.tensor(U, dtype=lib.float64, requires_grad=True)
        b[1:, 2].copy_(w[1:] * 2)
        b.t()[3].mul_(w)
        (b * b).sum().backward()
        return b.detach().numpy(), w.grad.numpy()

    assert not minidl.from_numpy(X.copy(order="F")).is_contiguous()
    for a, c in zip(run(minidl), run(torch)):
        np.testing.assert_allclose(a, c, rtol=1e-12)


# ---- views where torch gives views: x[i, j] (a 0-d view, not a scalar copy) and as_strided -----------
def test_integer_index_of_every_dim_is_a_writable_view():
    x = minidl.arange(12.0).reshape(3, 4)
    y = x[1, 2]
    assert y.shape == ()
    y.add_(100)
    assert x[1, 2].item() == 106.0
    v = minidl.arange(5.0)
    v[3].mul_(-1)
    assert v.tolist() == [0.0, 1.0, 2.0, -3.0, 4.0]
    x[2][3].fill_(-7)  # chained indexing reaches x too
    assert x[2, 3].item() == -7.0


def test_integer_index_view_shares_the_version_count():
    a = minidl.tensor([1.0, 2.0, 3.0])
    w = minidl.tensor([0.5, 0.5, 0.5], requires_grad=True)
    y = (w * a).sum()  # the product saves a for w's gradient
    a[1].add_(1)  # changes a through a 0-d view: backward must see it
    with pytest.raises(RuntimeError, match="modified|in-place|changed"):
        y.backward()


def test_integer_index_gradient_and_torch_parity():
    x = minidl.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    x[1, 1].backward()
    assert x.grad.tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    torch = pytest.importorskip("torch")
    a = np.arange(24.0).reshape(2, 3, 4)
    t, m = torch.tensor(a), minidl.tensor(a.copy())
    t[1, 2, 3].add_(5)
    m[1, 2, 3].add_(5)
    t[0][1].mul_(2)
    m[0][1].mul_(2)
    np.testing.assert_array_equal(m.numpy(), t.numpy())


def test_zero_dim_tensor_index_is_a_view():
    x = minidl.tensor([[1.0, 2.0], [3.0, 4.0]])
    x[minidl.tensor(0), minidl.tensor(1)].add_(10)
    x[minidl.tensor(1)].mul_(2)
    assert x.tolist() == [[1.0, 12.0], [6.0, 8.0]]
    assert x._version == 2


def test_zero_dim_tensor_index_gradient():
    a = minidl.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=minidl.float64, requires_grad=True)
    i = minidl.tensor(1)
    (a[i, 0] * a[0, i]).backward()
    assert a.grad.tolist() == [[0.0, 3.0], [2.0, 0.0]]


def test_zero_dim_tensor_index_parity():
    torch = pytest.importorskip("torch")
    for lib in (minidl, torch):
        x = lib.tensor([[1.0, 2.0], [3.0, 4.0]])
        x[lib.tensor(1), lib.tensor(0)].sub_(5)
        x[lib.tensor([0, 0])] += 1  # a 1-d index stays advanced indexing (a copy, then written)
        if lib is minidl:
            got = x.tolist()
        else:
            want = x.tolist()
    assert got == want


def test_as_strided_writes_reach_the_base_as_in_torch():
    torch = pytest.importorskip("torch")
    a = np.arange(12.0).reshape(3, 4)
    m, t = minidl.tensor(a.copy()), torch.tensor(a)
    minidl.as_strided(m, (2, 2), (1, 4)).mul_(0)
    torch.as_strided(t, (2, 2), (1, 4)).mul_(0)
    np.testing.assert_array_equal(m.numpy(), t.numpy())
    # the storage offset counts from the storage, not from the view
    np.testing.assert_array_equal(m[1:].as_strided((2,), (2,), 1).numpy(),
                                  t[1:].as_strided((2,), (2,), 1).numpy())


def test_as_strided_without_torch():
    m = minidl.arange(6.0)
    s = minidl.as_strided(m, (2, 2), (2, 1), 1)
    assert s.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    s[1, 1] = 40.0
    assert m.tolist() == [0.0, 1.0, 2.0, 3.0, 40.0, 5.0]
    c = minidl.as_strided_copy(m, (2,), (1,))
    c.add_(1)  # a copy: the base keeps its values
    assert m.tolist()[:2] == [0.0, 1.0]


def test_overlapping_as_strided_refuses_writes():
    m = minidl.arange(4.0)
    s = minidl.as_strided(m, (3, 2), (1, 1))  # elements share memory locations
    with pytest.raises(ValueError, match="read-only"):
        s.add_(1)
    assert m.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_as_strided_view_gradcheck():
    x = minidl.tensor(np.random.default_rng(0).normal(size=(3, 4)), requires_grad=True,
                      dtype=minidl.float64)
    assert gradcheck(lambda x: minidl.as_strided(x.t(), (2, 3), (1, 2), 1), (x,))
    assert gradcheck(lambda x: minidl.as_strided(x, (3, 2), (1, 1)), (x,))
# ---- in-place on a view, reading an expanded view of the same base ----------------------------

def _add_expanded_row_element(lib):
    a = lib.tensor(np.arange(12.0).reshape(3, 4), dtype=lib.float64, requires_grad=True)
    b = a * 1
    b[1].add_(b[:, 2][2:].expand(4))  # row 1 += b[2, 2], read through an expanded view
    (b ** 2).sum().backward()
    return b.detach().numpy(), a.grad.numpy()


def test_inplace_on_a_view_reads_an_expanded_view_of_its_base():
    """An in-place op on a view whose other operand was an expand()ed view of the same base
    was refused with 'more than one element of the written-to tensor ... refers to a single
    memory location', though only the operand (read, not written) repeats a place; torch
    reads it (its overlap check gives up on a non-dense operand), and so does minidl now."""
    b, g = _add_expanded_row_element(minidl)
    assert b[1].tolist() == [14.0, 15.0, 16.0, 17.0]
    assert g[2, 2] == 2 * 10.0 + 2 * (14.0 + 15.0 + 16.0 + 17.0)


def test_inplace_on_a_view_reads_an_expanded_view_of_its_base_as_torch():
    torch = pytest.importorskip("torch")
    for m, t in zip(_add_expanded_row_element(minidl), _add_expanded_row_element(torch)):
        np.testing.assert_array_equal(m, t)
