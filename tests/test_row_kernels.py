"""The CPU backend's row kernels (minidl/backend/cpu/rows.py): layer norm, softmax over the last
dim, and the scatter-add of an embedding's weight gradient. Each is checked against PyTorch in
float32 (forward and every gradient), by finite differences in float64 (the kernels take float64
too), on the edge cases (masked rows, NaN, a large offset, repeated indices), with the parallel
drivers forced, and the tests count the kernels' calls so they fail if the ops stop using them."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.backend.cpu import launch
from minidl.testing import gradcheck

torch = pytest.importorskip("torch", reason="the parity checks run the same ops in PyTorch")

KERNELS = minidl.backend.kernels(np)


@pytest.fixture
def calls(monkeypatch):
    """Counts the row kernels' calls (by name) for the test that takes it."""
    seen = []
    for name in ("layer_norm_forward", "layer_norm_backward", "softmax_last",
                 "softmax_last_backward", "add_rows"):
        original = getattr(KERNELS, name)
        monkeypatch.setattr(KERNELS, name, lambda *a, _f=original, _n=name, **k: (
            seen.append(_n), _f(*a, **k))[1])
    return seen


@pytest.fixture(params=["serial", "parallel"])
def drivers(request, monkeypatch):
    """Both drivers: the parallel one is forced by a zero size threshold."""
    if request.param == "parallel":
        monkeypatch.setitem(launch.THRESHOLDS, "rows", 0)
    return request.param


def _both(array, requires_grad=True):
    return (minidl.tensor(array, requires_grad=requires_grad, dtype=array.dtype),
            torch.tensor(array, requires_grad=requires_grad))


def _close(mine, theirs, what, dtype=np.float32):
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), err_msg=what, **tol)


@pytest.mark.parametrize("shape, normalized", [((4, 7, 37), (37,)), ((3, 4, 6), (4, 6)),
                                               ((129, 256), (256,)), ((5,), (5,))])
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
def test_layer_norm_matches_torch_in_float32(shape, normalized, affine, calls, drivers):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    mx, tx = _both(x)
    params = []
    if affine != "none":
        params.append(_both(rng.standard_normal(normalized).astype(np.float32)))
        params.append(_both(rng.standard_normal(normalized).astype(np.float32))
                      if affine == "weight+bias" else (None, None))
    else:
        params = [(None, None), (None, None)]
    (mw, tw), (mb, tb) = params
    my = F.layer_norm(mx, normalized, mw, mb, eps=1e-5)
    ty = torch.nn.functional.layer_norm(tx, normalized, tw, tb, eps=1e-5)
    _close(my, ty, "output")
    g = rng.standard_normal(shape).astype(np.float32)
    (my * minidl.tensor(g)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    _close(mx.grad, tx.grad, "input grad")
    for m, t, what in ((mw, tw, "weight grad"), (mb, tb, "bias grad")):
        if m is not None:
            _close(m.grad, t.grad, what)
    assert calls.count("layer_norm_forward") == 1 and calls.count("layer_norm_backward") == 1


def test_layer_norm_gradcheck_in_float64_through_the_kernels(calls):
    rng = np.random.default_rng(1)
    x = minidl.tensor(rng.standard_normal((3, 5, 4)), requires_grad=True, dtype="float64")
    w = minidl.tensor(rng.standard_normal(4), requires_grad=True, dtype="float64")
    b = minidl.tensor(rng.standard_normal(4), requires_grad=True, dtype="float64")
    assert gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b), [x, w, b])
    assert gradcheck(lambda x: F.layer_norm(x, (5, 4)), [x])
    assert "layer_norm_forward" in calls and "layer_norm_backward" in calls


def test_layer_norm_keeps_its_variance_at_a_large_offset():
    """Two passes (mean, then squares about it) in float64: 1e4 + a unit spread still
    normalises to the float64 answer within float32's resolution at that offset."""
    rng = np.random.default_rng(2)
    x = (1e4 + rng.standard_normal((8, 300))).astype(np.float32)
    y = F.layer_norm(minidl.tensor(x), (300,)).numpy()
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want, atol=2e-3)  # float32 rounding of x - mean at 1e4
    assert abs(y.std(axis=1) - 1).max() < 1e-3


def test_layer_norm_module_only_the_weight_needs_grad(calls):
    """A frozen input: backward skips the input's gradient and still gives the parameters'."""
    m = nn.LayerNorm(6)
    x = minidl.tensor(np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32))
    m(x).sum().backward()
    assert x.grad is None and m.weight.grad is not None
    np.testing.assert_allclose(m.bias.grad.numpy(), np.full(6, 4.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 64, 64), (5, 1), (6, 1000)])
def test_softmax_matches_torch(shape, dtype, calls, drivers):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    mx, tx = _both(x)
    my, ty = F.softmax(mx, dim=-1), torch.softmax(tx, dim=-1)
    _close(my, ty, "softmax", dtype)
    g = rng.standard_normal(shape).astype(dtype)
    (my * minidl.tensor(g, dtype=dtype)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    _close(mx.grad, tx.grad, "softmax grad", dtype)
    assert calls.count("softmax_last") == 1 and calls.count("softmax_last_backward") == 1


def test_softmax_edge_rows_as_torch(calls):
    """A row of only -inf is NaN in F.softmax (as torch) and zeros in attention; a NaN makes
    its row NaN; -inf entries get 0; other dims than the last take the general path."""
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, np.nan, 1.0], [-np.inf, 2.0, 2.0],
                  [1e30, -1e30, 0.0]], np.float32)
    mine = F.softmax(minidl.tensor(x), dim=-1).numpy()
    theirs = torch.softmax(torch.tensor(x), dim=-1).numpy()
    np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs))
    np.testing.assert_allclose(mine[2:], theirs[2:], rtol=1e-6)
    q, kv = minidl.tensor(np.ones((1, 2, 4), np.float32)), minidl.tensor(np.ones((1, 3, 4), np.float32))
    mask = minidl.tensor(np.array([[[False, False, False], [True, True, False]]]))
    out = F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask)
    np.testing.assert_array_equal(out.numpy()[0, 0], 0)  # no key allowed: zeros
    np.testing.assert_allclose(out.numpy()[0, 1], 1)
    before = len(calls)
    y = F.softmax(minidl.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)), dim=0)
    np.testing.assert_allclose(y.numpy(), torch.softmax(torch.arange(6.).reshape(2, 3), 0))
    assert len(calls) == before  # dim 0: not a row kernel's


def test_attention_softmax_gradient_through_the_kernels(calls):
    rng = np.random.default_rng(5)
    q, k, v = (minidl.tensor(rng.standard_normal((2, 3, 4, 5)), requires_grad=True,
                             dtype="float64") for _ in range(3))
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                     [q, k, v])
    assert "softmax_last" in calls and "softmax_last_backward" in calls


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_gradient_with_repeated_indices_matches_torch(padding_idx, calls):
    rng = np.random.default_rng(6)
    weight = rng.standard_normal((10, 9)).astype(np.float32)
    idx = np.array([[1, 2, 2, 9], [0, 1, 1, 1]])
    mw, tw = _both(weight)
    my = F.embedding(minidl.tensor(idx), mw, padding_idx=padding_idx)
    ty = torch.nn.functional.embedding(torch.tensor(idx), tw, padding_idx=padding_idx)
    g = rng.standard_normal(ty.shape).astype(np.float32)
    (my * minidl.tensor(g)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    _close(mw.grad, tw.grad, "weight grad")
    assert calls.count("add_rows") == 1


def test_add_rows_refuses_an_index_out_of_range():
    out = np.zeros((3, 2), np.float32)
    with pytest.raises(IndexError, match="3 rows"):
        KERNELS.add_rows(out, np.array([0, 3]), np.ones((2, 2), np.float32))
    KERNELS.add_rows(out, np.array([-1, 0, -1]), np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(out, [[1, 1], [0, 0], [2, 2]])
