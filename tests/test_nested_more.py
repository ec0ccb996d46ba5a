"""``minidl.nested`` beyond the first cut: in-place ops, ``retain_grad``, ``is_inference``,
``flatten``, ``narrow`` and ``nt[..., a:b]`` where torch 2.13 takes them (forward and backward
equal to torch's, float64 finite differences, torch's refusals), ``minidl.save``/``load`` of
nested tensors, and ``MultiheadAttention``'s attention weights for nested input (dense,
zero-padded, as torch's fast path)."""
import numpy as np
import pytest

import minidl
import minidl.nested as nested
from minidl.testing import gradcheck, gradgradcheck
from test_nested import _run, _t, _weights

_RNG = np.random.default_rng(1)
A2 = [_RNG.standard_normal((2, 4)), _RNG.standard_normal((3, 4))]  # (B=2, j, 4)
C2 = [_RNG.standard_normal((2, 4)), _RNG.standard_normal((3, 4))]  # a second, same structure
A4 = [_RNG.standard_normal((2, 3, 4)), _RNG.standard_normal((3, 3, 4))]  # (B=2, j, 3, 4)
ROW = _RNG.standard_normal(4)
PER_SEQ = _RNG.standard_normal((2, 1, 4))  # one row per sequence
PER_SEQ4 = _RNG.standard_normal((2, 3, 1, 4))  # for (B, 3, j, 4)
J, S = "jagged", "strided"


def _like(L, N, y, comps):
    """A constant nested tensor of ``y``'s structure (jagged: on y's offsets, as torch's nested
    int requires)."""
    if y.layout is L.jagged:
        return N.nested_tensor_from_jagged(L.tensor(np.concatenate(comps), dtype=L.float64),
                                           y.offsets())
    return N.as_nested_tensor([L.tensor(c, dtype=L.float64) for c in comps])


# fn(lib, nested, functional, x) -> nested result; the in-place ones act on y = x * 2 (a
# non-leaf), so the gradient reaches x through them
CASES = {
    "add_": (A2, lambda L, N, F, x: (x * 2).add_(1.5)),
    "add_alpha": (A2, lambda L, N, F, x: (x * 2).add_(1.5, alpha=2)),
    "add_nested": (A2, lambda L, N, F, x: (lambda y: y.add_(_like(L, N, y, C2)))(x * 2)),
    "iadd": (A2, lambda L, N, F, x: (lambda y: y.__iadd__(0.5))(x * 2)),
    "mul_": (A2, lambda L, N, F, x: (x * 2).mul_(-3.0)),
    "mul_nested": (A2, lambda L, N, F, x: (lambda y: y.mul_(_like(L, N, y, C2)))(x * 2)),
    "relu_": (A2, lambda L, N, F, x: (x * 2).relu_()),
    "copy_": (A2, lambda L, N, F, x: (lambda y: y.copy_(_like(L, N, y, C2)) * x)(x * 2)),
    "fill_": (A2, lambda L, N, F, x: (x * 2).fill_(0.25) + x),
    "zero_": (A2, lambda L, N, F, x: (x * 2).zero_() + x * x),
    "select_regular": (A4, lambda L, N, F, x: x.select(2, 1) * 2),
    "index_last": (A4, lambda L, N, F, x: x[..., 1] * 3),
}
JAGGED_ONLY = {  # torch has no strided kernel for these
    "clamp_": (A2, lambda L, N, F, x: (x * 2).clamp_(-1.0, 1.0)),
    "add_dense_row": (A2, lambda L, N, F, x: (x * 2).add_(L.tensor(ROW, dtype=L.float64))),
    "mul_per_sequence": (A2, lambda L, N, F, x: (x * 2).mul_(L.tensor(PER_SEQ, dtype=L.float64))),
    "add_per_sequence_transposed": (A4, lambda L, N, F, x: x.transpose(1, 2).exp().add_(
        L.tensor(PER_SEQ4, dtype=L.float64))),
    "add_0d": (A2, lambda L, N, F, x: (x * 2).add_(L.tensor(0.5, dtype=L.float64))),
    "sub_": (A2, lambda L, N, F, x: (x * 2).sub_(0.5)),
    "div_": (A2, lambda L, N, F, x: (x * 2).div_(4.0)),
    "flatten_regular": (A4, lambda L, N, F, x: x.flatten(2, 3) * 2),
    "flatten_neg": (A4, lambda L, N, F, x: x.flatten(-2)),
    "slice_last": (A4, lambda L, N, F, x: x[..., 1:3] * 2),
    "narrow_last": (A4, lambda L, N, F, x: x.narrow(-1, 1, 2).exp()),
}
# torch 2.13 runs these forward but its backward raises (aten.slice_backward,
# _nested_select_backward and, after a transpose, _nested_tensor_size have no jagged kernel):
# their gradients are checked by finite differences only
TORCH_FORWARD_ONLY = {(J, "slice_last"), (J, "narrow_last"), (J, "select_regular"),
                      (J, "index_last"), (S, "select_regular"), (S, "index_last"),
                      (J, "add_per_sequence_transposed")}
ALL = ([(J, n) for n in sorted(CASES)] + [(S, n) for n in sorted(CASES)]
       + [(J, n) for n in sorted(JAGGED_ONLY)])


def _case(name):
    return CASES.get(name) or JAGGED_ONLY[name]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("layout,name", ALL)
def test_parity_with_torch_forward_and_backward(layout, name):
    torch = pytest.importorskip("torch")
    comps, fn = _case(name)
    both = (layout, name) not in TORCH_FORWARD_ONLY
    got = _run(minidl, fn, layout, [comps], [])
    want = _run(torch, fn, layout, [comps], [], backward=both)
    assert got[2] == want[2] == [True]
    for g, w in zip(got[0], want[0], strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    for g, w in zip(got[1], want[1], strict=True) if both else ():
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout,name", ALL)
def test_gradcheck_every_case(layout, name):
    comps, fn = _case(name)
    offsets = minidl.tensor(np.cumsum([0] + [c.shape[0] for c in comps]))
    leaves = [_t(np.concatenate(comps), True)] if layout == J else [_t(c, True) for c in comps]

    def f(*xs):
        x = (nested.nested_tensor_from_jagged(xs[0], offsets) if layout == J
             else nested.as_nested_tensor(list(xs)))
        out = fn(minidl, nested, None, x)
        return minidl.cat([p.reshape(-1) for p in out.unbind()])

    assert gradcheck(f, tuple(leaves))
    assert gradgradcheck(f, tuple(leaves))  # the ops underneath carry double backward


def test_slice_of_the_last_dim_has_each_components_gradient():
    """torch's backward of nt[..., a:b] raises; minidl's is the per-component one."""
    torch = pytest.importorskip("torch")
    comps, fn = JAGGED_ONLY["slice_last"]
    got = _run(minidl, fn, J, [comps], [])[1][0]
    want = []
    for i, c in enumerate(comps):
        x = torch.tensor(c, requires_grad=True)
        y = x[..., 1:3] * 2
        w = _weights(tuple(y.shape))
        (y * torch.tensor(w)).sum().backward()
        want.append(x.grad.numpy().ravel())
    np.testing.assert_allclose(got, np.concatenate(want), rtol=1e-12)


# ---- in place on leaves, in no_grad ---------------------------------------------------------
@pytest.mark.parametrize("layout", [J, S])
def test_in_place_on_a_leaf_without_grad_and_in_no_grad(layout):
    lay = minidl.jagged if layout == J else minidl.strided
    x = nested.nested_tensor([_t(c) for c in A2], layout=lay)
    assert x.add_(1.0) is x and x.mul_(2.0) is x
    x += 1.0
    for got, a in zip(x.unbind(), A2):
        np.testing.assert_allclose(got.numpy(), (a + 1) * 2 + 1)
    w = nested.nested_tensor([_t(c) for c in A2], layout=lay, requires_grad=True)
    with minidl.no_grad():
        w.fill_(3.0).relu_()
    assert w.requires_grad and w.is_leaf
    assert all((c.detach().numpy() == 3.0).all() for c in w.unbind())
    with pytest.raises(RuntimeError, match="leaf"):  # as torch: a leaf that requires grad
        w.add_(1.0)


def test_in_place_refusals_as_torch():
    j = nested.nested_tensor([_t(c) for c in A2], layout=minidl.jagged)
    s = nested.nested_tensor([_t(c) for c in A2])
    with pytest.raises(NotImplementedError, match="masked_fill"):
        j.masked_fill_(j > 0, 0.0)
    with pytest.raises(NotImplementedError, match="masked_fill"):
        s.masked_fill_(s > 0, 0.0)
    for op in (lambda t: t.clamp_(0, 1), lambda t: t.sub_(1.0), lambda t: t.div_(2.0)):
        with pytest.raises(NotImplementedError, match="strided"):
            op(s)
    with pytest.raises(RuntimeError, match="Expected both self and other to be nested"):
        s.add_(minidl.ones(4))
    with pytest.raises(RuntimeError, match="cannot call binary pointwise function mul_"):
        j.mul_(minidl.ones(3, 1, 4))
    with pytest.raises(NotImplementedError, match="fill_"):
        j.fill_(minidl.tensor(1.0))
    assert s.fill_(minidl.tensor(2.0)) is s  # torch: a 0-d tensor fills a strided one
    other = nested.nested_tensor([_t(c) for c in A2], layout=minidl.jagged)  # new offsets
    with pytest.raises(RuntimeError):
        j.add_(other)
    with pytest.raises(NotImplementedError, match="copy_"):
        j.copy_(minidl.ones(4))
    # nothing changed on a refusal
    np.testing.assert_array_equal(j.unbind()[0].numpy(), A2[0])


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("layout", [J, S])
def test_retain_grad_and_is_inference_as_torch(layout):
    torch = pytest.importorskip("torch")
    got = {}
    for lib in (minidl, torch):
        lay = lib.jagged if layout == J else lib.strided
        x = lib.nested.nested_tensor([lib.tensor(c, dtype=lib.float64) for c in A2],
                                     layout=lay, requires_grad=True)
        y = x * 2
        assert not y.retains_grad
        y.retain_grad()
        assert y.retains_grad and not x.retains_grad
        out = y.sin()
        grad = lib.nested.as_nested_tensor([lib.tensor(c, dtype=lib.float64) for c in C2],
                                           layout=lay) \
            if layout == S else lib.nested.nested_tensor_from_jagged(
                lib.tensor(np.concatenate(C2), dtype=lib.float64), y.offsets())
        out.backward(grad)
        got[lib.__name__] = [g.numpy() for g in y.grad.unbind()]
        assert y.grad.is_nested and not x.is_inference()
    with minidl.inference_mode():  # minidl's inference_mode is no_grad: no inference tensors
        z = nested.nested_tensor([_t(c) for c in A2], layout=minidl.jagged)
    assert z.is_inference() is _t(A2[0]).is_inference() is False
    for g, w in zip(got["minidl"], got["torch"], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        nested.nested_tensor([_t(c) for c in A2], layout=minidl.jagged).retain_grad()


# ---- indexing and flatten: torch's refusals --------------------------------------------------
def test_indexing_refusals_as_torch():
    j = nested.nested_tensor([_t(c) for c in A4], layout=minidl.jagged)
    s = nested.nested_tensor([_t(c) for c in A4])
    for index in (slice(0, 1), (slice(None), 0), (slice(None), slice(None), 0)):
        with pytest.raises(RuntimeError, match="not supported for NestedTensor on dim=0"):
            j[index]
        with pytest.raises(RuntimeError, match="doesn't support sizes"):
            s[index]
    with pytest.raises(RuntimeError, match="doesn't support sizes"):
        s[..., :2]
    with pytest.raises(RuntimeError, match="ragged dim"):
        j.transpose(1, 3)[..., :1]
    with pytest.raises(RuntimeError, match="ragged dim"):
        j.select(1, 0)
    with pytest.raises(RuntimeError, match="only dim=0 supported"):
        s.narrow(-1, 1, 2)
    with pytest.raises(RuntimeError, match="ragged dim"):
        j.narrow(1, 0, 1)
    for a, b in ((0, -1), (0, 1), (1, 2), (1, 3)):
        with pytest.raises(RuntimeError, match="flatten"):
            j.flatten(a, b)
    with pytest.raises(RuntimeError, match="doesn't support sizes"):
        s.flatten(2, 3)
    assert j.flatten(2, 2) is j
    assert [c.shape for c in s.narrow(0, 1, 1).unbind()] == [(3, 3, 4)]


def test_flatten_before_the_ragged_dim_moves_it():
    j = nested.nested_tensor([_t(c) for c in A4], layout=minidl.jagged).permute(0, 2, 3, 1)
    out = j.flatten(1, 2)  # (B, 3, 4, j) -> (B, 12, j)
    assert out.shape[1] == 12 and out._ragged_idx == 2
    for got, a in zip(out.unbind(), A4):
        np.testing.assert_array_equal(got.numpy(), a.transpose(1, 2, 0).reshape(12, -1))


# ---- save / load ------------------------------------------------------------------------------
def _same(a, b):
    assert a.is_nested and b.is_nested and a.layout is b.layout
    assert a.requires_grad == b.requires_grad and a.dtype == b.dtype
    for x, y in zip(a.unbind(), b.unbind(), strict=True):
        np.testing.assert_array_equal(x.detach().numpy(), y.detach().numpy())


def test_save_and_load_round_trip(tmp_path):
    j = nested.nested_tensor([_t(c) for c in A4], layout=minidl.jagged, requires_grad=True)
    s = nested.nested_tensor([_t(c) for c in A4])
    narrowed = nested.narrow(minidl.tensor(np.arange(24.0).reshape(3, 8)), 1,
                             minidl.tensor([0, 1, 2]), minidl.tensor([3, 5, 2]),
                             layout=minidl.jagged)
    checkpoint = {"j": j, "s": s, "t": j.transpose(1, 2), "narrowed": narrowed,
                  "state": {"w": minidl.ones(2)}, "list": [s, 3]}
    minidl.save(checkpoint, tmp_path / "c.pt")
    back = minidl.load(tmp_path / "c.pt")
    for key in ("j", "s", "t", "narrowed"):
        _same(back[key], checkpoint[key])
    assert back["j"].is_leaf and back["j"].grad is None
    assert back["t"]._ragged_idx == 2 and back["t"].shape[1] == 3
    assert back["narrowed"].lengths().tolist() == [3, 5, 2] and not back["narrowed"].is_contiguous()
    _same(back["list"][0], s)
    np.testing.assert_array_equal(back["state"]["w"].numpy(), np.ones(2))
    y = back["j"] + back["j"].exp()  # one structure: offsets shared after loading
    assert y.is_nested
    minidl.save(j, tmp_path / "one.pt")  # a bare nested tensor
    _same(minidl.load(tmp_path / "one.pt"), j)


def _torch_comps(v):
    return [c.detach().numpy() for c in v.unbind()]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("layout", [J, S])
def test_torch_format_round_trip_with_torch(tmp_path, layout):
    """minidl.save(format="torch") writes what torch.save writes for a nested tensor, read by
    torch.load (weights_only=True); minidl.load reads torch.save's nested tensors."""
    torch = pytest.importorskip("torch")
    lay = minidl.jagged if layout == J else minidl.strided
    x = nested.nested_tensor([_t(c) for c in A4], layout=lay, requires_grad=True)
    saved = {"x": x, "t": x.transpose(1, 2), "plain": minidl.ones(2)}
    minidl.save(saved, tmp_path / "m.pt", format="torch")
    got = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ("x", "t"):
        assert got[key].is_nested and got[key].requires_grad
        assert got[key].layout is (torch.jagged if layout == J else torch.strided)
        for g, w in zip(_torch_comps(got[key]), _torch_comps(saved[key]), strict=True):
            np.testing.assert_array_equal(g, w)
    if layout == J:
        assert got["t"]._ragged_idx == 2
        y = got["x"] + got["x"].exp()  # torch takes it as one structure
        assert y.is_nested

    tx = torch.nested.nested_tensor([torch.tensor(c) for c in A4],
                                    layout=torch.jagged if layout == J else torch.strided,
                                    requires_grad=True)
    theirs = {"x": tx, "t": tx.transpose(1, 2)}
    if layout == J:
        theirs["narrowed"] = torch.nested.narrow(
            torch.arange(12.0).reshape(3, 4), 1, torch.tensor([0, 1, 0]),
            torch.tensor([2, 3, 1]), layout=torch.jagged)
    torch.save(theirs, tmp_path / "t.pt")
    back = minidl.load(tmp_path / "t.pt")
    for key, v in theirs.items():
        assert back[key].is_nested and back[key].layout is lay
        assert back[key].requires_grad == v.requires_grad
        for g, w in zip(_torch_comps(back[key]), _torch_comps(v), strict=True):
            np.testing.assert_array_equal(g, w)
    if layout == J:
        assert back["narrowed"].lengths().tolist() == [2, 3, 1]
        assert back["t"]._ragged_idx == 2
        assert (back["x"] * 2).is_nested


def test_torch_file_nested_parts_that_do_not_fit_are_refused(tmp_path):
    """offsets that do not fit the values: refused by name, as a bad tensor would be."""
    x = nested.nested_tensor([_t(c) for c in A2], layout=minidl.jagged)
    bad = nested.NestedTensor(values=x.values(), offsets=minidl.tensor([0, 2, 9]))
    minidl.save({"x": bad}, tmp_path / "bad.pt", format="torch")
    with pytest.raises(ValueError, match="nested tensor"):
        minidl.load(tmp_path / "bad.pt")


# ---- MultiheadAttention: the attention weights for nested input, as torch's fast path -------
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("kwargs", [{}, {"need_weights": False}, {"average_attn_weights": False}])
def test_multihead_attention_weights_for_nested_input(kwargs):
    """torch returns dense weights zero-padded to the longest component (None without
    need_weights)."""
    torch = pytest.importorskip("torch")
    x = [_RNG.standard_normal((2, 8)), _RNG.standard_normal((4, 8))]
    got = {}
    for lib in (minidl, torch):
        lib.manual_seed(0)
        mha = lib.nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
        if lib is minidl:
            state = mha.state_dict()
        else:
            mha.load_state_dict({k: torch.tensor(v.numpy()) for k, v in state.items()})
        nt = lib.nested.nested_tensor([lib.tensor(c, dtype=lib.float64) for c in x])
        with lib.no_grad():
            out, weights = mha(nt, nt, nt, **kwargs)
        assert out.is_nested
        got[lib.__name__] = ([o.numpy() for o in out.unbind()],
                             None if weights is None else (weights.is_nested, weights.numpy()))
    (mo, mw), (to, tw) = got["minidl"], got["torch"]
    for g, w in zip(mo, to, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    assert (mw is None) == (tw is None) == (kwargs.get("need_weights") is False)
    if mw is not None:
        assert mw[0] is tw[0] is False and mw[1].shape == tw[1].shape
        np.testing.assert_allclose(mw[1], tw[1], rtol=1e-10, atol=1e-12)


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
