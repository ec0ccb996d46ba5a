"""Sparse compressed tensors (CSR, CSC, BSR, BSC): constructors and torch's invariant errors,
conversions, accessors, products with their gradients (layouts as torch 2.13's), printing,
save/load, and a GCN layer trained against torch. Gradient checks run without torch; the
parity tests compare with torch on the same inputs in float64."""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.testing import gradcheck, gradgradcheck

DENSE = np.array([[0., 2., 0., 0., 1., 0.],
                  [3., 0., 4., 0., 0., 0.],
                  [0., 0., 0., 0., 0., 0.],
                  [5., 6., 0., 0., 0., 7.]])
RHS = np.arange(12.).reshape(6, 2) / 7 - 0.5
LAYOUTS = ["sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc"]


def _torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message="Sparse (invariant|CSR)")
    warnings.filterwarnings("ignore", message=".*requires materialization of a dense")
    return torch


def _convert(x, layout, block=(2, 2)):
    return {"sparse_csr": lambda: x.to_sparse_csr(), "sparse_csc": lambda: x.to_sparse_csc(),
            "sparse_bsr": lambda: x.to_sparse_bsr(block),
            "sparse_bsc": lambda: x.to_sparse_bsc(block)}[layout]()


def _parts(t):
    """(layout name, shape, index arrays, values) of a tensor of either library."""
    layout = str(t.layout).split(".")[-1]
    if layout in ("sparse_csr", "sparse_bsr"):
        idx = [t.crow_indices(), t.col_indices()]
    elif layout in ("sparse_csc", "sparse_bsc"):
        idx = [t.ccol_indices(), t.row_indices()]
    elif layout == "sparse_coo":
        idx = [t._indices()]
    else:
        return layout, tuple(t.shape), [], t.detach().numpy()
    return layout, tuple(t.shape), [np.asarray(i.numpy()) for i in idx], \
        (t.values() if layout != "sparse_coo" else t._values()).detach().numpy()


def _same(ours, theirs, atol=1e-10):
    a, b = _parts(ours), _parts(theirs)
    assert a[:2] == b[:2], (a[:2], b[:2])
    assert len(a[2]) == len(b[2])
    for x, y in zip(a[2], b[2]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(a[3], b[3], atol=atol, rtol=1e-10)


def _both(make, torch):
    return make(minidl), make(torch)


def _repr_of(t):
    return repr(t).replace("torch.", "minidl.").replace("Backward0>", "Backward>")


# ---- layouts, constructors, printing --------------------------------------------------------
def test_layout_objects_and_properties():
    d = minidl.tensor(DENSE)
    for name in LAYOUTS:
        lay = getattr(minidl, name)
        assert repr(lay) == f"minidl.{name}" and _convert(d, name).layout is lay
    c = d.to_sparse_csr()
    assert c.is_sparse_csr and not c.is_sparse and not d.is_sparse_csr
    assert not d.to_sparse_csc().is_sparse_csr
    assert c._nnz() == 7 and c.sparse_dim() == 2 and c.dense_dim() == 0
    assert c.shape == (4, 6) and c.dtype == minidl.float32


def test_repr_matches_torch_character_for_character():
    torch = _torch()
    cases = [
        lambda ns: ns.tensor(DENSE.tolist()).to_sparse_csr(),
        lambda ns: ns.tensor(DENSE, dtype=ns.float64).to_sparse_csc(),
        lambda ns: ns.tensor(DENSE.tolist()).to_sparse_bsr((2, 2)),
        lambda ns: ns.tensor(DENSE.tolist()).to_sparse_bsc((2, 3)),
        lambda ns: ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr().requires_grad_(),
        lambda ns: ns.tensor(DENSE.tolist()).int().to_sparse_csr(),
        lambda ns: ns.sparse_csr_tensor(ns.tensor([0, 0, 0]), ns.tensor([], dtype=ns.int64),
                                        ns.tensor([]), (2, 2)),
        lambda ns: ns.sparse_csr_tensor(ns.tensor([[0, 1, 2], [0, 0, 2]]),
                                        ns.tensor([[0, 1], [0, 1]]),
                                        ns.tensor([[1., 2.], [3., 4.]]), (2, 2, 2)),
        lambda ns: ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr().requires_grad_() * 2.0,
    ]
    for make in cases:
        assert repr(make(minidl)) == _repr_of(make(torch))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_constructors_match_torch(layout):
    torch = _torch()
    block = (1, 2) if layout in ("sparse_bsr", "sparse_bsc") else None

    def make(ns):
        parts = _convert(ns.tensor(DENSE, dtype=ns.float64), layout, block)
        comp, plain = (parts.crow_indices(), parts.col_indices()) \
            if layout in ("sparse_csr", "sparse_bsr") else (parts.ccol_indices(),
                                                            parts.row_indices())
        vals = ns.tensor(parts.values().detach().numpy(), dtype=ns.float64)
        comp, plain = ns.tensor(comp.numpy()), ns.tensor(plain.numpy())
        build = getattr(ns, f"{layout}_tensor")
        return [build(comp, plain, vals, (4, 6)),
                build(comp, plain, vals),  # the size inferred
                ns.sparse_compressed_tensor(comp, plain, vals, (4, 6),
                                            layout=getattr(ns, layout)),
                build(comp, plain, vals, (4, 6), dtype=ns.float32)]
    for ours, theirs in zip(*_both(make, torch)):
        _same(ours, theirs)
        assert ours.dtype == getattr(minidl, str(theirs.dtype).split(".")[-1])


def test_batched_and_hybrid_constructors_match_torch():
    torch = _torch()
    cases = [
        lambda ns: ns.sparse_csr_tensor(ns.tensor([[0, 1, 2], [0, 0, 2]]),
                                        ns.tensor([[0, 1], [0, 1]]),
                                        ns.tensor([[1., 2.], [3., 4.]]), (2, 2, 2)),
        lambda ns: ns.sparse_csr_tensor(ns.tensor([0, 1, 2]), ns.tensor([0, 1]),
                                        ns.tensor([[1., 2.], [3., 4.]]), (2, 2, 2)),
        lambda ns: ns.tensor([[[1., 0], [0, 2]], [[0, 3], [4, 0]]]).to_sparse_csr(),
        lambda ns: ns.tensor([[[1., 0], [0, 2]], [[0, 3], [4, 0]]]).to_sparse_csr(dense_dim=1),
        lambda ns: ns.tensor([[[1., 0], [0, 2]], [[0, 3], [4, 0]]]).to_sparse_csc(),
        lambda ns: ns.ones(2, 4, 4).to_sparse_bsr((2, 2)),
        lambda ns: ns.ones(2, 4, 4).to_sparse_csr().transpose(1, 2),
    ]
    for make in cases:
        ours, theirs = _both(make, torch)
        _same(ours, theirs)
        np.testing.assert_array_equal(ours.to_dense().numpy(), theirs.to_dense().numpy())


def test_invariant_errors_match_torch():
    torch = _torch()
    bad = [  # (crow, col, values, size): torch's message with check_invariants=True
        ([0, 2, 1], [0, 1], [1., 2.], (2, 2), re.escape("`crow_indices[..., -1] == nnz`")),
        ([1, 1, 2], [0, 1], [1., 2.], (2, 2), re.escape("`crow_indices[..., 0] == 0`")),
        ([0, 1, 3], [0, 1], [1., 2.], (2, 2), re.escape("`crow_indices[..., -1] == nnz`")),
        ([0, 1, 2], [0, 5], [1., 2.], (2, 2), "`0 <= col_indices < ncols` is not satisfied"),
        ([0, 1, 2], [0, -1], [1., 2.], (2, 2), "`0 <= col_indices < ncols`"),
        ([0, 2, 2], [1, 1], [1., 2.], (2, 2), "are sorted and distinct"),
        ([0, 2, 2], [1, 0], [1., 2.], (2, 2), "are sorted and distinct"),
        ([0, 1, 2], [0, 1], [1., 2., 3.], (2, 2), r"col_indices.shape\[-1\] must be equal to "
         r"nnz \(=3\) as defined by values.shape\[0\], but got 2"),
        ([0, 1], [0, 1], [1., 2.], (2, 2), r"crow_indices.shape\[-1\] must be equal to the "
         r"number of rows \+ 1 \(=3\), but got 2"),
        ([0, 1, 2], [0, 1], [1., 2.], (3, 2), r"number of rows \+ 1 \(=4\), but got 3"),
    ]
    for crow, col, vals, size, message in bad:
        for ns, kwargs in ((minidl, {}), (torch, {"check_invariants": True})):
            with pytest.raises(RuntimeError, match=message):
                ns.sparse_csr_tensor(ns.tensor(crow), ns.tensor(col), ns.tensor(vals), size,
                                     **kwargs)
    for ns, kwargs in ((minidl, {}), (torch, {"check_invariants": True})):
        with pytest.raises(RuntimeError, match="must be divisible with blocksize"):
            ns.sparse_bsr_tensor(ns.tensor([0, 1, 2]), ns.tensor([0, 1]), ns.ones(2, 2, 2),
                                 (4, 5), **kwargs)
        with pytest.raises(RuntimeError, match="ccol_indices.shape.-1. must be equal to the "
                                               "number of columns"):
            ns.sparse_csc_tensor(ns.tensor([0, 1, 2]), ns.tensor([0, 1]), ns.tensor([1., 2.]),
                                 (2, 3), **kwargs)
        with pytest.raises(RuntimeError, match="expected sparse compressed tensor layout"):
            ns.sparse_compressed_tensor(ns.tensor([0, 1, 2]), ns.tensor([0, 1]),
                                        ns.tensor([1., 2.]), (2, 2))


def test_invariant_errors_without_torch():
    with pytest.raises(RuntimeError, match="are sorted and distinct"):  # within one batch
        minidl.sparse_csr_tensor(minidl.tensor([[0, 1, 2], [0, 2, 2]]),
                                 minidl.tensor([[0, 1], [1, 0]]), minidl.ones(2, 2), (2, 2, 2))
    ok = minidl.sparse_csr_tensor(minidl.tensor([[0, 1, 2], [0, 2, 2]]),  # across two batches
                                  minidl.tensor([[1, 0], [0, 1]]), minidl.ones(2, 2), (2, 2, 2))
    assert ok.shape == (2, 2, 2)
    with pytest.raises(RuntimeError, match="int32 or int64"):
        minidl.sparse_csr_tensor(minidl.tensor([0., 1.]), minidl.tensor([0]), minidl.ones(1))
    with pytest.raises(RuntimeError, match="dimensionality"):
        minidl.sparse_csr_tensor(minidl.tensor([0, 1]), minidl.tensor([0]), minidl.ones(1),
                                 (1, 1, 1))
    with minidl.sparse.check_sparse_tensor_invariants():
        assert minidl.sparse.check_sparse_tensor_invariants.is_enabled()
    assert not minidl.sparse.check_sparse_tensor_invariants.is_enabled()


def test_int32_indices_are_kept():
    c = minidl.sparse_csr_tensor(minidl.tensor([0, 1, 2], dtype=minidl.int32),
                                 minidl.tensor([0, 1], dtype=minidl.int32),
                                 minidl.tensor([1., 2.]), (2, 2))
    assert c.crow_indices().dtype == minidl.int32 and c.col_indices().dtype == minidl.int32
    assert c.to_sparse().indices().dtype == minidl.int64
    np.testing.assert_array_equal(c.to_dense().numpy(), [[1, 0], [0, 2]])


# ---- conversions and accessors ------------------------------------------------------------
CONVERSIONS = [
    lambda ns, d: d.to_sparse_csr(),
    lambda ns, d: d.to_sparse_csc(),
    lambda ns, d: d.to_sparse_bsr((2, 3)),
    lambda ns, d: d.to_sparse_bsc(2),
    lambda ns, d: d.to_sparse(layout=ns.sparse_csc),
    lambda ns, d: d.to_sparse(layout=ns.sparse_bsr, blocksize=(2, 2)),
    lambda ns, d: d.to_sparse_csr().to_sparse_csc(),
    lambda ns, d: d.to_sparse_csc().to_sparse_csr(),
    lambda ns, d: d.to_sparse_csr().to_sparse_bsr((2, 2)),
    lambda ns, d: d.to_sparse_bsr((2, 2)).to_sparse_bsc((2, 2)),
    lambda ns, d: d.to_sparse_csr().to_sparse(),
    lambda ns, d: d.to_sparse_csc().to_sparse(),
    lambda ns, d: d.to_sparse_bsr((2, 2)).to_sparse(),
    lambda ns, d: d.to_sparse().to_sparse_csr(),
    lambda ns, d: d.to_sparse().to_sparse_csc(),
    lambda ns, d: d.to_sparse_csr().t(),
    lambda ns, d: d.to_sparse_csc().transpose(0, 1),
    lambda ns, d: d.to_sparse_bsr((2, 3)).t(),
    lambda ns, d: d.to_sparse_csr().to_dense(),
    lambda ns, d: d.to_sparse_bsc((1, 3)).to_dense(),
    lambda ns, d: d.to_sparse_csr().to_sparse_csr(),
]


def test_conversions_match_torch():
    torch = _torch()
    for convert in CONVERSIONS:
        ours, theirs = _both(lambda ns: convert(ns, ns.tensor(DENSE, dtype=ns.float64)), torch)
        _same(ours, theirs)
        if ours.layout is minidl.sparse_coo:
            assert ours.is_coalesced() == theirs.is_coalesced()


def test_conversion_gradients_match_torch():
    torch = _torch()
    weights = np.arange(24.).reshape(4, 6)
    for convert in CONVERSIONS:
        for start in ("dense", "csr"):
            def run(ns):
                d = ns.tensor(DENSE, dtype=ns.float64)
                leaf = (d if start == "dense" else d.to_sparse_csr()).requires_grad_()
                out = convert(ns, leaf if start == "dense" else leaf.to_dense()) \
                    if start == "dense" else convert(ns, leaf.to_dense())
                w = weights[:out.shape[0], :out.shape[1]] if out.shape[0] == 4 else weights.T
                (out.to_dense() * ns.tensor(w, dtype=ns.float64)).sum().backward()
                return leaf.grad
            ours = run(minidl)
            try:
                theirs = run(torch)
            except RuntimeError as exc:  # torch cannot convert the gradient back (BSR->CSR)
                assert "expected SparseCsr or SparseCsc layout" in str(exc)
                continue
            _same(ours, theirs)


def test_compressed_input_gradients_keep_its_layout_as_torch():
    torch = _torch()
    cases = [  # a compressed leaf through an op; torch decides the gradient's layout
        lambda ns, c: (c.to_dense() * ns.tensor(np.arange(24.).reshape(4, 6), dtype=ns.float64)).sum(),
        lambda ns, c: c.sum(),
        lambda ns, c: (c * 3.0).to_dense().sum(),
        lambda ns, c: c.values().pow(2).sum(),
        lambda ns, c: c.to(ns.float32).to_dense().sum(),
        lambda ns, c: c.clone().to_dense().sum(),
        lambda ns, c: (c + c).to_dense().sum(),
        lambda ns, c: (-c).to_dense().sum(),
        lambda ns, c: c.to_sparse_csc().to_dense().sum(),
        lambda ns, c: ns.mm(c.to_sparse_csc(), ns.ones(6, 2, dtype=ns.float64)).sum(),
        lambda ns, c: c.to_sparse().to_dense().pow(2).sum(),
        lambda ns, c: c.t().to_dense().sum(),
        lambda ns, c: (ns.sparse.mm(c, ns.ones(6, 2, dtype=ns.float64)).sum()  # accumulated
                       + ns.sparse.mm(c, ns.ones(6, 2, dtype=ns.float64)).pow(2).sum()),
        lambda ns, c: (ns.mm(c, ns.ones(6, 2, dtype=ns.float64)).sum()  # dense where one is
                       + ns.sparse.mm(c, ns.ones(6, 2, dtype=ns.float64)).sum()),
    ]
    for op in cases:
        def run(ns):
            c = ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr().requires_grad_()
            op(ns, c).backward()
            return c.grad
        ours, theirs = _both(run, torch)
        _same(ours, theirs)


def test_accessors_and_their_errors_match_torch():
    torch = _torch()
    for ns in (minidl, torch):
        d = ns.tensor(DENSE.tolist())
        c, cc = d.to_sparse_csr(), d.to_sparse_csc()
        for call, message in [
                (lambda: c.ccol_indices(), "ccol_indices expected sparse column compressed "
                                           "tensor layout but got SparseCsr"),
                (lambda: cc.crow_indices(), "crow_indices expected sparse row compressed "
                                            "tensor layout but got SparseCsc"),
                (lambda: d.to_sparse().crow_indices(), "crow_indices expected sparse row "
                                                       "compressed tensor layout but got Sparse"),
                (lambda: c.indices(), "indices expected sparse coordinate tensor layout but "
                                      "got SparseCsr"),
                (lambda: c.is_coalesced(), "is_coalesced expected sparse coordinate tensor "
                                           "layout but got SparseCsr"),
                (lambda: d.to_sparse_bsr((2, 2)).to_sparse_csr(), "expected SparseCsr or "
                                                                 "SparseCsc layout but got "
                                                                 "SparseBsr"),
                (lambda: ns.ones(3, 3).to_sparse_bsr((2, 2)), r"sparse size \(3,3\) must be "
                                                              r"divisible by given blocksize"),
                (lambda: d.to_sparse(layout=ns.sparse_bsr), "without blocksize argument"),
                (lambda: ns.ones(2, 4, 4).to_sparse().to_sparse_csr(), r"sparse_dim\(\)!=2"),
                (lambda: ns.tensor([[[1., 0], [0, 2]], [[0, 3], [0, 0]]]).to_sparse_csr(),
                 "Expect the same number of specified elements per batch"),
                (lambda: ns.ones(2, 4, 4).to_sparse_csr().transpose(0, 1),
                 "can only transpose dimensions of the same type"),
                (lambda: c.to_dense(ns.float64), "dtype argument is not supported"),
        ]:
            with pytest.raises(RuntimeError, match=message):
                call()
    for ns in (minidl, torch):
        c = ns.tensor(DENSE.tolist()).to_sparse_csr()
        np.testing.assert_array_equal(c.crow_indices().numpy(), [0, 2, 4, 4, 7])
        np.testing.assert_array_equal(c.col_indices().numpy(), [1, 4, 0, 2, 0, 1, 5])
        cc = ns.tensor(DENSE.tolist()).to_sparse_csc()
        np.testing.assert_array_equal(cc.ccol_indices().numpy(), [0, 2, 4, 5, 5, 6, 7])
        np.testing.assert_array_equal(cc.row_indices().numpy(), [1, 3, 0, 3, 1, 0, 3])


# ---- products ---------------------------------------------------------------------------------
PRODUCTS = {  # torch.mm & co give the compressed input a dense gradient, sparse.mm its layout
    "mm": lambda ns, a, b: ns.mm(a, b),
    "matmul": lambda ns, a, b: ns.matmul(a, b),
    "@": lambda ns, a, b: a @ b,
    "sparse.mm": lambda ns, a, b: ns.sparse.mm(a, b),
    "addmm": lambda ns, a, b: ns.addmm(ns.ones(4, 2, dtype=ns.float64), a, b, beta=0.5,
                                       alpha=2.0),
    "sparse.addmm": lambda ns, a, b: ns.sparse.addmm(ns.ones(4, 2, dtype=ns.float64), a, b,
                                                     beta=0.5, alpha=2.0),
    "mv": lambda ns, a, b: a @ b[:, 0],
    "linear(weight)": lambda ns, a, b: F.linear(b.t(), a) if ns is minidl
    else ns.nn.functional.linear(b.t(), a),
    "linear(input)": lambda ns, a, b: F.linear(a, b.t()) if ns is minidl
    else ns.nn.functional.linear(a, b.t()),
    "dense @ compressed": lambda ns, a, b: b.t()[:, :4] @ a,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(PRODUCTS))
def test_products_and_gradients_match_torch(layout, name):
    torch = _torch()

    def run(ns, sparse=True):
        a = ns.tensor(DENSE, dtype=ns.float64)
        a = (_convert(a, layout) if sparse else a).requires_grad_()
        b = ns.tensor(RHS, dtype=ns.float64, requires_grad=True)
        y = PRODUCTS[name](ns, a, b)
        w = ns.tensor(np.linspace(-1, 1, y.numel()).reshape(y.shape), dtype=ns.float64)
        (y * w).sum().backward()
        return y, a.grad, b.grad
    y, ga, gb = run(minidl)
    try:
        ty, tga, tgb = run(torch)
    except (RuntimeError, NotImplementedError) as exc:  # torch: not on the CPU for BSR/BSC
        assert any(w in str(exc) for w in ("not implemented", "not supported",
                                           "unsupported combination")), exc
        ty, tga, tgb = run(torch, sparse=False)  # the same numbers from a dense a
        if name.startswith("sparse."):  # the gradient at a's stored places, in its layout
            tga = _convert(tga * torch.tensor(DENSE != 0), layout)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), atol=1e-12)
    if tga.layout == torch.strided:
        assert ga.layout is minidl.strided
        np.testing.assert_allclose(ga.numpy(), tga.numpy(), atol=1e-12)
    elif name.startswith("sparse.") and layout in ("sparse_bsr", "sparse_bsc"):
        assert ga.layout is getattr(minidl, layout)  # its blocks' stored zeros: a gradient
        np.testing.assert_allclose(ga.to_dense().numpy() * (DENSE != 0),
                                   tga.to_dense().numpy(), atol=1e-12)
    else:
        _same(ga, tga)
    np.testing.assert_allclose(gb.numpy(), tgb.numpy(), atol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "mean", "amax", "amin"])
def test_sparse_mm_reduce_matches_torch(reduce):
    torch = _torch()
    dense = DENSE.copy()
    dense[0, 1] = -2.0  # a negative entry: amax and amin pick different ones

    def run(ns):
        a = ns.tensor(dense, dtype=ns.float64).to_sparse_csr().requires_grad_()
        b = ns.tensor(RHS, dtype=ns.float64, requires_grad=True)
        y = ns.sparse.mm(a, b, reduce)
        w = ns.tensor(np.linspace(-1, 2, y.numel()).reshape(y.shape), dtype=ns.float64)
        (y * w).sum().backward()
        return y, a.grad, b.grad
    ours, theirs = _both(run, torch)
    for x, y in zip(ours, theirs):
        _same(x, y)
    like = minidl.tensor(dense, dtype=minidl.float64).to_sparse_csr()
    v = minidl.tensor(like.values().numpy(), dtype=minidl.float64, requires_grad=True)
    b = minidl.tensor(RHS, dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda v, b: minidl.sparse.mm(_rebuilt(v, like), b, reduce), (v, b))
    for ns in (minidl, torch):
        with pytest.raises(RuntimeError, match="expect self to be SparseCsr"):
            ns.sparse.mm(ns.tensor(DENSE.tolist()).to_sparse_csc(), ns.ones(6, 2), "mean")
        with pytest.raises(RuntimeError, match="reduce type of prod has not been enabled"):
            ns.sparse.mm(ns.tensor(DENSE.tolist()).to_sparse_csr(), ns.ones(6, 2), "prod")


def test_csr_times_csr_matches_torch():
    torch = _torch()
    other = np.array([[1., 0., 0., 2.], [0., 0., 5., 0.], [0., 6., 0., 0.], [0., 0., 0., 0.],
                      [0., 1., 0., 0.], [3., 0., 0., 0.]])

    def run(ns):
        a = ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr().requires_grad_()
        b = ns.tensor(other, dtype=ns.float64).to_sparse_csr().requires_grad_()
        y = a @ b
        w = ns.tensor(np.arange(16.).reshape(4, 4), dtype=ns.float64)
        (y.to_dense() * w).sum().backward()
        return y, a.grad, b.grad
    ours, theirs = _both(run, torch)
    for x, y in zip(ours, theirs):  # torch's (MKL's) columns come unsorted within a row,
        assert x.layout is minidl.sparse_csr and y.layout == torch.sparse_csr  # its own
        assert x._nnz() == y._nnz()  # invariant broken: minidl's are sorted; same meaning
        np.testing.assert_array_equal(x.crow_indices().numpy(), y.crow_indices().numpy())
        np.testing.assert_allclose(x.to_dense().detach().numpy(), y.to_dense().detach().numpy(),
                                   atol=1e-12)
    np.testing.assert_allclose(minidl.mm(minidl.tensor(DENSE).to_sparse_csr(),
                                         minidl.tensor(other).to_sparse_csr()).to_dense().numpy(),
                               DENSE @ other, atol=1e-5)
    la = _pattern("sparse_csr")
    lb = minidl.tensor(other, dtype=minidl.float64).to_sparse_csr()
    va = minidl.tensor(la.values().numpy(), dtype=minidl.float64, requires_grad=True)
    vb = minidl.tensor(lb.values().numpy(), dtype=minidl.float64, requires_grad=True)

    def f(va, vb):
        return (_rebuilt(va, la) @ _rebuilt(vb, lb)).to_dense()
    assert gradcheck(f, (va, vb)) and gradgradcheck(f, (va, vb))
    with pytest.raises(NotImplementedError, match="only 2-D CSR @ CSR"):
        la.to_sparse_csc() @ lb


def test_sampled_addmm_matches_torch():
    torch = _torch()
    m1, m2 = np.linspace(-1, 1, 16).reshape(4, 4), np.linspace(2, -1, 24).reshape(4, 6)

    def run(ns):
        c = ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr().requires_grad_()
        a = ns.tensor(m1, dtype=ns.float64, requires_grad=True)
        b = ns.tensor(m2, dtype=ns.float64, requires_grad=True)
        y = ns.sparse.sampled_addmm(c, a, b, beta=0.5, alpha=2.0)
        (y.to_dense() * ns.tensor(np.arange(24.).reshape(4, 6), dtype=ns.float64)).sum().backward()
        return y, c.grad, a.grad, b.grad
    ours, theirs = _both(run, torch)
    _same(ours[0], theirs[0])
    _same(ours[1], theirs[1])
    for x, y in zip(ours[2:], theirs[2:]):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-12)
    for ns in (minidl, torch):
        with pytest.raises(RuntimeError, match="sampled_addmm"):
            ns.sparse.sampled_addmm(ns.tensor(DENSE.tolist()).to_sparse_csr(), ns.ones(4, 3),
                                    ns.ones(2, 6))


def test_product_errors_match_torch():
    torch = _torch()
    for ns in (minidl, torch):
        c = ns.tensor(DENSE.tolist()).to_sparse_csr()
        with pytest.raises((RuntimeError, ValueError), match=r"4x6 and 3x1|\(4, 6\) and \(3, 1"):
            c @ ns.ones(3, 1)
        with pytest.raises((RuntimeError, TypeError)):  # float32 times float64
            c @ ns.ones(6, 1, dtype=ns.float64)
        with pytest.raises(NotImplementedError):  # integer CSR products: not on the CPU
            ns.tensor(DENSE.tolist()).int().to_sparse_csr() @ ns.ones(6, 1, dtype=ns.int32)
        with pytest.raises(NotImplementedError):  # torch has no softmax of a CSR tensor
            ns.sparse.softmax(c, 1)
        with pytest.raises(NotImplementedError):
            ns.softmax(c, 1)
        with pytest.raises(RuntimeError):  # no division of a CSR tensor, as torch's
            c / 2
        with pytest.raises(RuntimeError):
            c + ns.tensor(DENSE.tolist()).to_sparse_csc()


# ---- elementwise, sum, transpose, dtype, clone, detach ---------------------------------------
def test_elementwise_sum_transpose_match_torch():
    torch = _torch()
    cases = [
        lambda ns, c: c * 2.5,
        lambda ns, c: 2.5 * c,
        lambda ns, c: c * ns.tensor(3.0, dtype=ns.float64),
        lambda ns, c: c.mul(2),
        lambda ns, c: -c,
        lambda ns, c: c + c,
        lambda ns, c: c + ns.eye(4, 6, dtype=ns.float64).to_sparse_csr(),
        lambda ns, c: c.t(),
        lambda ns, c: c.transpose(0, 1).t(),
        lambda ns, c: c.to(ns.float32),
        lambda ns, c: c.double().float(),
        lambda ns, c: c.clone(),
        lambda ns, c: c.detach(),
    ]
    for op in cases:
        ours, theirs = _both(lambda ns: op(ns, ns.tensor(DENSE, dtype=ns.float64)
                                           .to_sparse_csr()), torch)
        _same(ours, theirs)
        assert ours.dtype == getattr(minidl, str(theirs.dtype).split(".")[-1])
    ours, theirs = _both(lambda ns: ns.tensor(DENSE.tolist()).to_sparse_bsr((2, 3)).sum(), torch)
    assert ours.item() == theirs.item() == DENSE.sum()


POINTWISE = ["abs", "relu", "sin", "tanh", "sqrt", "sign", "floor", "expm1", "log1p", "asin",
             "atan", "sinh", "tan", "erf", "trunc", "ceil", "round", "asinh", "atanh",
             "deg2rad", "rad2deg", "erfinv"]


def test_zero_preserving_pointwise_ops_match_torch():
    torch = _torch()
    small = (DENSE / 10).tolist()
    no_torch_grad = []
    for name in POINTWISE:
        def run(ns):
            c = ns.tensor(small, dtype=ns.float64).to_sparse_csr().requires_grad_()
            y = getattr(c, name)()
            w = ns.tensor(np.arange(24.).reshape(4, 6), dtype=ns.float64)
            try:
                (y.to_dense() * w).sum().backward()
            except RuntimeError as exc:  # torch's backward of some needs an op CSR lacks
                assert ns is torch and ("unsupported tensor layout" in str(exc)
                                        or "op2-sparse addition" in str(exc)), exc
            return y, c.grad
        ours, theirs = _both(run, torch)
        _same(ours[0], theirs[0])
        if theirs[1] is None:  # then torch's gradient of the same op on the values alone
            no_torch_grad.append(name)
            c = torch.tensor(small, dtype=torch.float64).to_sparse_csr()
            v = c.values().clone().requires_grad_()
            w = torch.arange(24., dtype=torch.float64).reshape(4, 6)[
                torch.tensor(DENSE != 0)]  # the weights at the stored places, in CSR order
            (getattr(v, name)() * w).sum().backward()
            _same(ours[1], torch.sparse_csr_tensor(c.crow_indices(), c.col_indices(), v.grad,
                                                   c.shape))
        elif theirs[1]._nnz() == 0:  # a zero gradient (floor, sign, ...): torch stores none
            assert ours[1].layout is minidl.sparse_csr and not ours[1].to_dense().numpy().any()
        else:
            _same(ours[1], theirs[1])
    assert "abs" not in no_torch_grad  # torch's own CSR gradient compared for some
    for ns in (minidl, torch):  # f(0) != 0: refused on a compressed tensor, as torch's
        for name in ("exp", "sigmoid", "cos"):
            with pytest.raises((RuntimeError, NotImplementedError)):
                getattr(ns.tensor(small).to_sparse_csr(), name)()


def test_pointwise_gradchecks():
    like = _pattern("sparse_csr")
    v = minidl.tensor(like.values().numpy() / 10, dtype=minidl.float64, requires_grad=True)
    for name in ("abs", "sin", "tanh", "asinh", "expm1"):
        assert gradcheck(lambda v: getattr(_rebuilt(v, like), name)().to_dense(), (v,))
        assert gradgradcheck(lambda v: getattr(_rebuilt(v, like), name)().to_dense(), (v,))


def test_compressed_and_dense_operands_match_torch():
    torch = _torch()
    other = np.arange(24.).reshape(4, 6) / 5 - 1
    # (not c.add(d, alpha=2): torch 2.13 computes 2 * c + d there, its CSR + dense kernel
    # scaling the wrong operand; minidl computes c + 2 * d, checked below)
    for op in (lambda c, d: c + d, lambda c, d: d + c, lambda c, d: d.add(c, alpha=2)):
        def run(ns):
            c = ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr().requires_grad_()
            d = ns.tensor(other, dtype=ns.float64, requires_grad=True)
            y = op(c, d)
            (y * ns.tensor(np.arange(24.).reshape(4, 6), dtype=ns.float64)).sum().backward()
            return y, c.grad, d.grad
        for ours, theirs in zip(*_both(run, torch)):
            _same(ours, theirs)  # all dense: torch's AddBackward hands g to both
    # times a dense tensor of its shape: a CSR result (torch's backward of it is broken)
    for ns in (minidl, torch):
        c = ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr()
        d = ns.tensor(other, dtype=ns.float64)
        ours = minidl.tensor(DENSE, dtype=minidl.float64).to_sparse_csr() * minidl.tensor(
            other, dtype=minidl.float64)
        _same(ours, c * d)
        with pytest.raises(RuntimeError, match="same size"):
            c + ns.ones(6, dtype=ns.float64)
    like = _pattern("sparse_csr")
    v = minidl.tensor(like.values().numpy(), dtype=minidl.float64, requires_grad=True)
    d = minidl.tensor(other, dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda v, d: (_rebuilt(v, like) * d).to_dense(), (v, d))
    assert gradcheck(lambda v, d: _rebuilt(v, like) + d, (v, d))
    np.testing.assert_allclose(like.add(minidl.tensor(other, dtype=minidl.float64),
                                        alpha=2).numpy(), DENSE + 2 * other)
    assert gradgradcheck(lambda v, d: (_rebuilt(v, like) * d).to_dense() ** 2, (v, d))


def test_sum_over_dims_matches_torch():
    torch = _torch()
    for dim in (0, 1, -1, (0, 1)):
        ours, theirs = _both(lambda ns: ns.tensor(DENSE, dtype=ns.float64).to_sparse_csr()
                             .sum(dim=dim, keepdim=True), torch)
        _same(ours, theirs)
    for ns in (minidl, torch):
        with pytest.raises(RuntimeError, match="keepdim=False is unsupported"):
            ns.tensor(DENSE).to_sparse_csr().sum(dim=1)
        with pytest.raises(RuntimeError, match="only compressed sparse format supported"):
            ns.tensor(DENSE).to_sparse_csc().sum(dim=1, keepdim=True)
    like = _pattern("sparse_csr")  # torch's backward of it raises; minidl's is checked here
    v = minidl.tensor(like.values().numpy(), dtype=minidl.float64, requires_grad=True)
    for dim in (0, 1, (0, 1)):
        f = (lambda dim: lambda v: _rebuilt(v, like).sum(dim=dim, keepdim=True).to_dense())(dim)
        assert gradcheck(f, (v,)) and gradgradcheck(f, (v,))


def test_detach_clone_requires_grad():
    c = minidl.tensor(DENSE, dtype=minidl.float64).to_sparse_csr().requires_grad_()
    assert c.requires_grad and c.is_leaf
    d = c.detach()
    assert not d.requires_grad and d.layout is minidl.sparse_csr
    assert d.values().data is c.data.values  # the same storage, as torch's detach
    k = c.clone()
    assert k.grad_fn is not None and k.values().data is not c.data.values
    with pytest.raises(RuntimeError, match="only floating-point"):
        minidl.tensor(DENSE).int().to_sparse_csr().requires_grad_()


# ---- gradient checks (no torch) ------------------------------------------------------------------
def _pattern(layout, block=(2, 2)):
    return _convert(minidl.tensor(DENSE, dtype=minidl.float64), layout, block)


def _rebuilt(values, like):
    lay = like.layout
    comp, plain = (like.crow_indices(), like.col_indices()) \
        if lay in (minidl.sparse_csr, minidl.sparse_bsr) \
        else (like.ccol_indices(), like.row_indices())
    return minidl.sparse_compressed_tensor(comp, plain, values, like.shape, layout=lay)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradchecks(layout):
    like = _pattern(layout)
    v = minidl.tensor(like.values().numpy() + 0.25, dtype=minidl.float64, requires_grad=True)
    b = minidl.tensor(RHS, dtype=minidl.float64, requires_grad=True)
    m1 = minidl.tensor(np.linspace(-1, 1, 16).reshape(4, 4), dtype=minidl.float64,
                       requires_grad=True)
    m2 = minidl.tensor(np.linspace(1, -1, 24).reshape(4, 6), dtype=minidl.float64,
                       requires_grad=True)
    assert gradcheck(lambda v, b: minidl.mm(_rebuilt(v, like), b), (v, b))
    assert gradcheck(lambda v, b: minidl.sparse.mm(_rebuilt(v, like), b), (v, b))
    assert gradcheck(lambda v, b: b.t()[:, :4] @ _rebuilt(v, like), (v, b))
    assert gradcheck(lambda v, b: F.linear(b.t(), _rebuilt(v, like)), (v, b))
    assert gradcheck(lambda v: (_rebuilt(v, like) * 1.5).to_dense(), (v,))
    assert gradcheck(lambda v: _rebuilt(v, like).t().to_dense(), (v,))
    assert gradcheck(lambda v: _rebuilt(v, like).to_sparse().to_dense(), (v,))
    assert gradcheck(lambda v: _rebuilt(v, like).sum(), (v,))
    if layout == "sparse_csr":
        assert gradcheck(lambda v, a, b: minidl.sparse.sampled_addmm(
            _rebuilt(v, like), a, b, beta=0.5, alpha=2.0).to_dense(), (v, m1, m2))
        assert gradcheck(lambda v: _rebuilt(v, like).to_sparse_csc().to_dense(), (v,))
        assert gradcheck(lambda v: _rebuilt(v, like).to_sparse_bsr((2, 3)).to_dense(), (v,))
    # a dense input with no zeros: the pattern stays put under the finite differences
    d = minidl.tensor(DENSE + 0.5, dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda d: _convert(d, layout).to_dense(), (d,))
    assert gradcheck(lambda d: minidl.sparse.mm(_convert(d, layout), b.detach()), (d,))


def test_gradgradcheck_of_products():
    like = _pattern("sparse_csr")
    v = minidl.tensor(like.values().numpy() + 0.25, dtype=minidl.float64, requires_grad=True)
    b = minidl.tensor(RHS, dtype=minidl.float64, requires_grad=True)
    assert gradgradcheck(lambda b: minidl.mm(like, b) ** 2, (b,))
    assert gradgradcheck(lambda v, b: minidl.mm(_rebuilt(v, like).to_dense(), b), (v, b))
    assert gradgradcheck(lambda v, b: minidl.sparse.mm(_rebuilt(v, like), b), (v, b))
    assert gradgradcheck(lambda v, b: minidl.mm(_rebuilt(v, like), b), (v, b))
    assert gradgradcheck(lambda v: (_rebuilt(v, like).values() ** 2).sum(), (v,))
    assert gradgradcheck(lambda v: _rebuilt(v, like).to_sparse_csc().to_dense() ** 2, (v,))
    assert gradgradcheck(lambda v: _rebuilt(v, like).sum() ** 2, (v,))
    m1 = minidl.tensor(np.linspace(-1, 1, 16).reshape(4, 4), dtype=minidl.float64,
                       requires_grad=True)
    m2 = minidl.tensor(np.linspace(1, -1, 24).reshape(4, 6), dtype=minidl.float64,
                       requires_grad=True)
    assert gradgradcheck(lambda v, a, b: minidl.sparse.sampled_addmm(
        _rebuilt(v, like), a, b, beta=0.5, alpha=2.0).to_dense(), (v, m1, m2))


# ---- save / load -------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    x = minidl.tensor(DENSE, dtype=minidl.float64)
    state = {"csr": x.to_sparse_csr(), "csc": x.to_sparse_csc().requires_grad_(),
             "bsr": x.to_sparse_bsr((2, 3)), "bsc": x.to_sparse_bsc((1, 2)),
             "batched": minidl.ones(2, 4, 4).to_sparse_csr(),
             "hybrid": minidl.tensor(DENSE[None].repeat(2, 0).transpose(1, 2, 0))
             .to_sparse_csr(dense_dim=1)}
    path = os.path.join(tmp_path, "sparse.npz")
    minidl.save(state, path)
    back = minidl.load(path)
    for key, value in state.items():
        _same(back[key], value)
        assert back[key].requires_grad == value.requires_grad
    state["csc"] = state["csc"].detach()  # torch.save does not keep requires_grad of sparse
    pt = os.path.join(tmp_path, "sparse.pt")
    minidl.save(state, pt, format="torch")
    back = minidl.load(pt)
    for key, value in state.items():
        _same(back[key], value)


def test_torch_format_is_read_by_torch_and_back(tmp_path):
    torch = _torch()
    x = np.array(DENSE)
    ours = {"csr": minidl.tensor(x, dtype=minidl.float64).to_sparse_csr(),
            "bsc": minidl.tensor(x, dtype=minidl.float64).to_sparse_bsc((2, 3))}
    pt = os.path.join(tmp_path, "ours.pt")
    minidl.save(ours, pt, format="torch")
    theirs = torch.load(pt)
    for key in ours:
        _same(ours[key], theirs[key])
    pt2 = os.path.join(tmp_path, "theirs.pt")
    torch.save({"csc": torch.tensor(x).to_sparse_csc(),
                "bsr": torch.tensor(x).to_sparse_bsr((2, 2))}, pt2)
    back = minidl.load(pt2)
    _same(back["csc"], torch.tensor(x).to_sparse_csc())
    _same(back["bsr"], torch.tensor(x).to_sparse_bsr((2, 2)))


# ---- a GCN layer: normalised adjacency (CSR) @ features, trained against torch ------------
def _gcn_run(ns, steps=4):
    rng = np.random.default_rng(0)
    n, f_in, f_out, classes = 12, 5, 8, 3
    adj = (rng.random((n, n)) < 0.25).astype(np.float64)
    adj = np.maximum(adj, adj.T) + np.eye(n)
    deg = adj.sum(1)
    norm = adj / np.sqrt(deg[:, None] * deg[None, :])
    a_hat = ns.tensor(norm, dtype=ns.float64).to_sparse_csr()
    feats = ns.tensor(rng.standard_normal((n, f_in)), dtype=ns.float64)
    labels = ns.tensor(rng.integers(0, classes, n))
    w1 = ns.tensor(rng.standard_normal((f_out, f_in)) * 0.3, dtype=ns.float64,
                   requires_grad=True)
    w2 = ns.tensor(rng.standard_normal((classes, f_out)) * 0.3, dtype=ns.float64,
                   requires_grad=True)
    opt = ns.optim.SGD([w1, w2], lr=0.5)
    nnf = F if ns is minidl else ns.nn.functional
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        h = nnf.relu(ns.sparse.mm(a_hat, nnf.linear(feats, w1)))
        logits = a_hat @ nnf.linear(h, w2)
        loss = nnf.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, w1.detach().numpy(), w2.detach().numpy()


def test_gcn_layer_trains_as_torch():
    torch = _torch()
    ours, theirs = _gcn_run(minidl), _gcn_run(torch)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10)
    assert ours[0][-1] < ours[0][0]
    np.testing.assert_allclose(ours[1], theirs[1], atol=1e-10)
    np.testing.assert_allclose(ours[2], theirs[2], atol=1e-10)


def test_gcn_layer_trains_without_torch():
    losses, _, _ = _gcn_run(minidl, steps=6)
    assert losses[-1] < losses[0]


# ---- the *_like factories on sparse inputs (COO and compressed) -------------------------------

def test_like_factories_on_sparse_inputs():
    """zeros_like(sparse) failed with an unclear "flags: not supported" error; torch gives a
    sparse result of the same layout (zeros/empty: no stored entries for COO; compressed
    ones/full keep the pattern) and refuses ones_like/full_like on COO and rand_like."""
    d = [[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]
    coo = minidl.tensor(d).to_sparse()
    z = minidl.zeros_like(coo)
    assert z.layout == minidl.sparse_coo and z.shape == (2, 3) and z.data.nnz == 0
    assert minidl.empty_like(coo).layout == minidl.sparse_coo
    assert minidl.zeros_like(coo, dtype=minidl.float64).dtype == minidl.float64
    for fn in (lambda t: minidl.ones_like(t), lambda t: minidl.full_like(t, 2.0),
               lambda t: minidl.rand_like(t)):
        with pytest.raises(NotImplementedError, match="_like: not supported for sparse"):
            fn(coo)
    csr = minidl.tensor(d).to_sparse_csr()
    z = minidl.zeros_like(csr)
    assert z.layout == minidl.sparse_csr and z.data.nnz == 0
    assert np.array_equal(z.to_dense().numpy(), np.zeros((2, 3), np.float32))
    o = minidl.ones_like(csr)
    assert o.layout == minidl.sparse_csr
    assert np.array_equal(o.to_dense().numpy(), (np.array(d) != 0).astype(np.float32))
    f = minidl.full_like(csr.to_sparse_csc(), 5.0)
    assert f.layout == minidl.sparse_csc
    assert np.array_equal(f.to_dense().numpy(), 5 * (np.array(d) != 0).astype(np.float32))
    with pytest.raises(NotImplementedError, match="rand_like"):
        minidl.rand_like(csr)
