"""Audit of the 2026-12-07 additions (sparse, forward AD, torch files, views): each test
failed before its fix."""
import numpy as np
import pytest

import minidl
from minidl.autograd import forward_ad as fwAD


# ---- x[t0, t1] with 0-d integer tensor indices is a view, as x[0, 1] -------------------------
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


# ---- an in-place op recorded in the graph counts a version, as torch's ------------------------
def test_inplace_in_graph_bumps_version():
    a = minidl.tensor([1.0, 2.0], requires_grad=True)
    y = a * 2
    assert y._version == 0
    y.mul_(3)
    assert y._version == 1
    y.add_(1)
    assert y._version == 2
    y.sum().backward()
    assert a.grad.tolist() == [6.0, 6.0]


def test_forward_ad_tangent_after_inplace_change():
    with fwAD.dual_level():
        d = fwAD.make_dual(minidl.tensor([1.0, 2.0]), minidl.tensor([1.0, 1.0]))
        y = d * 2
        assert fwAD.unpack_dual(y).tangent.tolist() == [2.0, 2.0]
        y.mul_(3)  # the cached tangent of y is stale now
        assert fwAD.unpack_dual(y).tangent.tolist() == [6.0, 6.0]


# ---- a sparse tensor divided by a number: a true division, torch's dtypes ---------------------
def _sparse(lib, values):
    n = len(values)
    return lib.sparse_coo_tensor(lib.tensor([list(range(n))]), lib.tensor(values), (n,))


def test_sparse_division_is_a_true_division():
    values = np.arange(1, 200, dtype=np.float32)
    got = (_sparse(minidl, values) / 3).to_dense().numpy()
    np.testing.assert_array_equal(got, values / np.float32(3))  # not values * (1/3)


def test_sparse_integer_scaled_gives_default_float():
    s = _sparse(minidl, [1, 2, 3])
    assert s.dtype == np.int64
    assert (s / 2).dtype == np.float32 and (s / 2).to_dense().tolist() == [0.5, 1.0, 1.5]
    assert (s * 2.5).dtype == np.float32 and (s * 2.5).to_dense().tolist() == [2.5, 5.0, 7.5]
    assert (s * 2).dtype == np.int64 and (s * 2).to_dense().tolist() == [2, 4, 6]
    with np.errstate(all="raise"):
        assert (_sparse(minidl, [1.0, 0.0]) / 0).to_dense().numpy().tolist()[0] == np.inf


def test_sparse_division_gradient():
    v = minidl.tensor([1.0, 2.0, 3.0], dtype=minidl.float64, requires_grad=True)
    s = minidl.sparse_coo_tensor(minidl.tensor([[0, 1, 2]]), v, (3,))
    ((s / 4).to_dense() * minidl.tensor([1.0, 2.0, 3.0], dtype=minidl.float64)).sum().backward()
    assert v.grad.tolist() == [0.25, 0.5, 0.75]
    assert minidl.testing.gradcheck(
        lambda w: (minidl.sparse_coo_tensor(minidl.tensor([[0, 1, 2]]), w, (3,)) / 3.0)
        .to_dense() ** 2, (minidl.tensor([1.0, 2.0, 3.0], dtype=minidl.float64,
                                         requires_grad=True),))


def test_sparse_division_parity():
    torch = pytest.importorskip("torch")
    values = np.arange(1, 200, dtype=np.float32) / 7
    got = (_sparse(minidl, values) / 3).to_dense().numpy()
    want = (_sparse(torch, values) / 3).to_dense().numpy()
    np.testing.assert_array_equal(got, want)
    for f in (lambda s: s / 2, lambda s: s * 2.5, lambda s: s * 2):
        got, want = f(_sparse(minidl, [1, 2, 3])), f(_sparse(torch, [1, 2, 3]))
        assert str(got.dtype) == str(want.dtype).removeprefix("torch.")
        assert got.to_dense().tolist() == want.to_dense().tolist()


# ---- minidl.load of a torch file keeps bfloat16 and requires_grad; torch dtypes load ------------
def test_torch_format_round_trip_keeps_bfloat16_and_requires_grad(tmp_path):
    path = tmp_path / "ck.pt"
    w = minidl.tensor([1.5, 2.25, -3.0]).to(minidl.bfloat16)
    obj = {"w": w, "p": minidl.nn.Parameter(minidl.tensor([1.0, 2.0])),
           "frozen": minidl.nn.Parameter(minidl.tensor([3.0]), requires_grad=False),
           "x": minidl.tensor([4.0], requires_grad=True), "plain": minidl.tensor([5.0])}
    minidl.save(obj, path, format="torch")
    back = minidl.load(path)
    assert back["w"].dtype == minidl.bfloat16
    assert back["w"].float().tolist() == [1.5, 2.25, -3.0]
    assert [back[k].requires_grad for k in ("p", "frozen", "x", "plain")] == [
        True, False, True, False]
    assert back["p"].is_leaf and back["p"].tolist() == [1.0, 2.0]


def test_torch_file_parity_bfloat16_requires_grad_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "t.pt"
    obj = {"bf": torch.arange(8, dtype=torch.bfloat16)[1::3], "dtype": torch.float32,
           "bf_dtype": torch.bfloat16, "p": torch.nn.Parameter(torch.tensor([1.0, 2.0])),
           "g": torch.tensor([3.0], requires_grad=True), "i": torch.tensor([1, 2])}
    torch.save(obj, path)
    back = minidl.load(path)
    assert back["bf"].dtype == minidl.bfloat16 and back["bf"].float().tolist() == [1.0, 4.0, 7.0]
    assert back["dtype"] == minidl.float32 and back["bf_dtype"] == minidl.bfloat16
    assert back["p"].requires_grad and back["g"].requires_grad
    assert not back["i"].requires_grad and back["i"].tolist() == [1, 2]
    # the converter's reading (a state dict of float arrays) still widens bfloat16
    from minidl.torch_file import read
    assert read(path)["bf"].dtype == np.float32


# ---- forward AD under no_grad: refused, not a tangent of None ---------------------------------
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


# ---- saved-tensor hooks: a pack hook's own ops are not packed again; unpack under no_grad -----
def _count_hooks(lib, pack_op, unpack_op):
    calls = {"pack": 0, "unpack": 0}

    def pack(t):
        calls["pack"] += 1
        return pack_op(t)

    def unpack(t):
        calls["unpack"] += 1
        out = unpack_op(t)
        calls["unpack_grad"] = out.requires_grad
        return out

    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with lib.autograd.graph.saved_tensors_hooks(pack, unpack):
        y = (x * x).sum()
        y.backward()
    return x.grad.tolist(), calls


def test_saved_tensors_pack_hook_ops_are_not_packed():
    grad, calls = _count_hooks(minidl, lambda t: t * 2, lambda t: t / 2)  # was a RecursionError
    assert grad == [2.0, 4.0, 6.0]
    assert calls == {"pack": 2, "unpack": 2, "unpack_grad": False}


def test_saved_tensors_hooks_parity():
    torch = pytest.importorskip("torch")
    for pack, unpack in ((lambda t: t * 2, lambda t: t / 2), (lambda t: t.sin(), lambda t: t.asin())):
        got = _count_hooks(minidl, pack, unpack)
        want = _count_hooks(torch, pack, unpack)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        assert got[1] == want[1]


# ---- poisson of a 0-d tensor, binomial broadcasting and NaN, svd_lowrank's q ------------------
def test_poisson_zero_dim_and_binomial_broadcast():
    minidl.manual_seed(0)
    d = minidl.poisson(minidl.tensor(3.0))  # was an AttributeError
    assert d.shape == () and d.dtype == np.float32 and float(d) >= 0
    b = minidl.binomial(minidl.tensor([[10.0], [4.0]]), minidl.tensor([0.0, 1.0, float("nan")]))
    assert b.shape == (2, 3)
    assert b[:, :2].tolist() == [[0.0, 10.0], [0.0, 4.0]] and np.isnan(b[:, 2].numpy()).all()
    assert minidl.binomial(minidl.tensor(5.0), minidl.tensor(1.0)).item() == 5.0


def test_svd_lowrank_q_over_the_matrix_size():
    rng = np.random.default_rng(0)
    a = minidl.tensor((rng.standard_normal((8, 3)) @ rng.standard_normal((3, 5))))
    u, s, v = minidl.svd_lowrank(a)  # torch's default q=6 > min(8, 5)
    assert (u.shape, s.shape, v.shape) == ((8, 5), (5,), (5, 5))
    np.testing.assert_allclose(s.numpy()[:3], np.linalg.svd(a.numpy())[1][:3], rtol=1e-5)
    assert minidl.svd_lowrank(a, q=0)[1].shape == (0,)
    with pytest.raises(ValueError, match="q"):
        minidl.svd_lowrank(a, q=-1)


def test_lowrank_poisson_binomial_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((7, 2)) @ rng.standard_normal((2, 4))).astype(np.float64)
    for lib in (minidl, torch):
        s = lib.svd_lowrank(lib.tensor(a), q=6)[1].numpy()
        shapes = [tuple(t.shape) for t in lib.pca_lowrank(lib.tensor(a), q=4)]
        got = (s, shapes, tuple(lib.poisson(lib.tensor(2.0)).shape),
               tuple(lib.binomial(lib.tensor([3.0, 3.0]), lib.tensor([1.0])).shape))
        if lib is minidl:
            mine = got
    np.testing.assert_allclose(mine[0][:2], got[0][:2], rtol=1e-6)
    assert mine[0].shape == got[0].shape and mine[1:] == got[1:]


# ---- legacy types: FloatTensor(None) is refused (was a 0-d NaN tensor) -------------------------
def test_legacy_type_of_none_is_refused():
    with pytest.raises(TypeError, match="NoneType"):
        minidl.FloatTensor(None)
    with pytest.raises(TypeError, match="NoneType"):
        minidl.LongTensor(None)
    assert minidl.FloatTensor([1, 2]).tolist() == [1.0, 2.0]


# ---- sparse tensors in checkpoints: minidl.save / format="torch" / minidl.load of torch's -------
def _sparse_checkpoint():
    s = minidl.sparse_coo_tensor([[0, 2, 0], [1, 1, 1]], [1.0, 2.0, 3.0], (3, 2))  # repeats
    h = minidl.sparse_coo_tensor([[0, 2]], np.arange(6.0).reshape(2, 3), (4, 3),
                                 dtype=minidl.float64).coalesce()  # hybrid
    e = minidl.sparse_coo_tensor(minidl.zeros(1, 0, dtype=minidl.int64), minidl.zeros(0), (5,))
    return {"s": s, "h": h, "e": e}


@pytest.mark.parametrize("fmt", ["minidl", "torch"])
def test_sparse_tensors_round_trip(tmp_path, fmt):
    obj = _sparse_checkpoint()
    minidl.save(obj, tmp_path / "sp.pt", format=fmt)  # was a SparseLayoutError
    back = minidl.load(tmp_path / "sp.pt")
    for k, t in obj.items():
        assert back[k].is_sparse and back[k].dtype == t.dtype and back[k].shape == t.shape
        assert back[k].is_coalesced() == t.is_coalesced()
        np.testing.assert_array_equal(back[k].to_dense().numpy(), t.to_dense().numpy())


def test_sparse_momentum_buffer_checkpoint(tmp_path):
    emb = minidl.nn.Embedding(5, 2, sparse=True)
    opt = minidl.optim.SGD(emb.parameters(), lr=0.1, momentum=0.9)
    emb(minidl.tensor([1, 3, 3])).sum().backward()
    opt.step()
    minidl.save({"opt": opt.state_dict()}, tmp_path / "ck.pt")
    buf = minidl.load(tmp_path / "ck.pt")["opt"]["state"][0]["momentum_buffer"]
    assert buf.is_sparse
    assert buf.to_dense().tolist() == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]


def test_sparse_tensors_torch_file_parity(tmp_path):
    torch = pytest.importorskip("torch")
    obj = _sparse_checkpoint()
    minidl.save(obj, tmp_path / "m.pt", format="torch")
    mine = torch.load(tmp_path / "m.pt", weights_only=True)
    for k, t in obj.items():
        assert mine[k].is_sparse and mine[k].is_coalesced() == t.is_coalesced()
        np.testing.assert_array_equal(mine[k].to_dense().numpy(), t.to_dense().numpy())
    theirs = {"s": torch.sparse_coo_tensor([[0, 1, 1]], [1.0, 2.0, 3.0], (4,)),
              "c": torch.ones(3, 2).to_sparse(), "size": torch.Size([2, 3])}
    torch.save(theirs, tmp_path / "t.pt")
    back = minidl.load(tmp_path / "t.pt")
    assert back["s"].to_dense().tolist() == [1.0, 5.0, 0.0, 0.0] and not back["s"].is_coalesced()
    assert back["c"].is_coalesced() and back["c"].to_dense().tolist() == [[1.0, 1.0]] * 3
    assert back["size"] == (2, 3)


def test_sparse_checkpoint_with_bad_indices_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    bad = torch.sparse_coo_tensor([[0, 7]], [1.0, 2.0], (4,), check_invariants=False)
    torch.save({"bad": bad}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="size is inconsistent"):
        minidl.load(tmp_path / "bad.pt")
