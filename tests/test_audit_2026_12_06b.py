"""Divergences from PyTorch 2.13 found by the second 2026-12-06 audit of the tensor ops: one
regression test each, against torch directly."""
import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

torch = pytest.importorskip("torch", reason="parity tests need torch")

NAN = float("nan")


def _np(t):
    return np.asarray(t.detach().numpy())


def _tie_patterns(seed, count):
    """Small tensors full of equal values (some with NaN), and a dim of each."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = tuple(int(s) for s in rng.integers(1, 7, size=int(rng.integers(1, 4))))
        a = rng.integers(0, 3, shape).astype(np.float64)
        if i % 3 == 0:
            a[rng.random(shape) < 0.2] = NAN
        yield a, int(rng.integers(-len(shape), len(shape)))


def test_topk_ties_give_torchs_indices_and_gradients():
    for i, (a, d) in enumerate(_tie_patterns(0, 120)):
        n = a.shape[d]
        for largest in (True, False):
            k = (i * 7) % (n + 1)
            m = minidl.tensor(a, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.topk(m, k, d, largest), torch.topk(t, k, d, largest)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(_np(rm.values), rt.values.detach().numpy())
            w = np.arange(rt.values.numel(), dtype=np.float64).reshape(rt.values.shape)
            (rm.values * minidl.tensor(w)).sum().backward()
            (rt.values * torch.tensor(w)).sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    # long rows take PyTorch's partial_sort path (k * 64 <= n); integers too
    a = np.random.default_rng(1).integers(0, 4, (2, 700))
    for k in (1, 10, 11, 50, 700):
        for largest in (True, False):
            np.testing.assert_array_equal(
                _np(minidl.tensor(a).topk(k, largest=largest).indices),
                torch.tensor(a).topk(k, largest=largest).indices.numpy())
    # sorted=False: the same elements as torch (torch leaves their order unspecified)
    a = [0., 0., 1., 1., 0., 0.]
    got = minidl.tensor(a).topk(5, sorted=False).indices.numpy()
    want = torch.tensor(a).topk(5, sorted=False).indices.numpy()
    assert sorted(got) == sorted(want)


def test_topk_and_kthvalue_refuse_bool_and_check_k():
    b = minidl.tensor([True, False])
    with pytest.raises(RuntimeError):
        torch.topk(torch.tensor([True, False]), 1)
    for f in (lambda: b.topk(1), lambda: minidl.kthvalue(b, 1)):
        with pytest.raises(RuntimeError, match="bool"):
            f()
    with pytest.raises(RuntimeError):
        torch.topk(torch.zeros(3), 4)
    with pytest.raises(RuntimeError, match="out of range"):
        minidl.zeros(3).topk(4)


def test_kthvalue_ties_give_torchs_index_and_gradient():
    for i, (a, d) in enumerate(_tie_patterns(2, 150)):
        n = a.shape[d]
        k = 1 + (i * 5) % n
        for keepdim in (False, True):
            m = minidl.tensor(a, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.kthvalue(m, k, d, keepdim), torch.kthvalue(t, k, d, keepdim)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(_np(rm.values), rt.values.detach().numpy())
            rm.values.sum().backward()
            rt.values.sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    with pytest.raises(IndexError):
        torch.kthvalue(torch.zeros(3, 0), 1)
    with pytest.raises(IndexError, match="non-zero size"):
        minidl.kthvalue(minidl.zeros(3, 0), 1)
    x = minidl.tensor(np.random.default_rng(3).standard_normal((3, 6)), dtype=minidl.float64,
                      requires_grad=True)
    assert gradcheck(lambda a: minidl.kthvalue(a, 2, 1).values, [x])
    assert gradcheck(lambda a: a.topk(3, 0, largest=False).values, [x])
    with pytest.raises(RuntimeError):
        torch.tensor([True, False]).median()
    with pytest.raises(RuntimeError, match="bool"):
        minidl.tensor([True, False]).median()


def test_searchsorted_with_nan_gives_torchs_places():
    inf = float("inf")
    cases = [([1., 2., NAN], [NAN, 0., 1.5, 3., inf]), ([1., NAN, NAN], [NAN, 1., 2.]),
             ([NAN, NAN], [NAN, 1.]), ([1., 2., 3.], [NAN, 2.]),
             ([-inf, 0., inf, NAN], [inf, NAN, -inf]), ([1., NAN, 3., 4.], [3., 0., 5.])]
    for seq, values in cases:
        for right in (False, True):
            want = torch.searchsorted(torch.tensor(seq), torch.tensor(values), right=right)
            got = minidl.searchsorted(minidl.tensor(seq), minidl.tensor(values), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
            want = torch.searchsorted(torch.tensor([seq, seq[::-1]]),
                                      torch.tensor([values, values]), right=right)
            got = minidl.searchsorted(minidl.tensor([seq, seq[::-1]]),
                                      minidl.tensor([values, values]), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
            want = torch.bucketize(torch.tensor(values), torch.tensor(seq), right=right)
            got = minidl.bucketize(minidl.tensor(values), minidl.tensor(seq), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
    # an integer sequence searched for float values, NaN among them
    want = torch.searchsorted(torch.tensor([1, 2, 3]), torch.tensor([NAN, 1.5]))
    np.testing.assert_array_equal(
        _np(minidl.searchsorted(minidl.tensor([1, 2, 3]), minidl.tensor([NAN, 1.5]))), want.numpy())


def test_searchsorted_refuses_what_torch_refuses():
    s = minidl.tensor([1., 2.])
    bad = [lambda: minidl.searchsorted(minidl.tensor([True, False]), minidl.tensor([True])),
           lambda: minidl.searchsorted(s, minidl.tensor([1.]), right=True, side="left"),
           lambda: minidl.searchsorted(minidl.tensor([[1., 2.]]), minidl.tensor(1.)),
           lambda: minidl.searchsorted(minidl.tensor([[1., 2.]]), minidl.tensor([[1.], [2.]]))]
    for f in bad:
        with pytest.raises(RuntimeError):
            f()
    with pytest.raises(RuntimeError):
        torch.searchsorted(torch.tensor([1., 2.]), torch.tensor([1.]), right=True, side="left")
    assert minidl.searchsorted(minidl.zeros(0), minidl.tensor([1.])).tolist() == [0]
