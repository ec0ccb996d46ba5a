"""``x[index] = value``: written into the array (views see it) outside a graph, recorded as an
op inside one, with PyTorch's gradients; bad input names what did not fit."""
import numpy as np
import pytest

import minidl
from helpers import raises_like_torch, randn
from minidl.testing import gradcheck

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch parity tests need torch (pip install torch); not installed")

INDEXES = [
    ("row", lambda: 1, (4,)),
    ("column_bcast", lambda: (slice(None), 2), (1,)),
    ("block", lambda: (slice(0, 2), slice(1, 3)), (2, 1)),
    ("fancy", lambda: ([0, 2], [1, 3]), (2,)),
    ("mask", lambda: np.array([[True, False, True, False]] * 3), (6,)),
    ("ellipsis_none", lambda: (Ellipsis, None, 0), (1, 1)),
]


@pytest.mark.parametrize("name, index, value_shape", INDEXES, ids=[c[0] for c in INDEXES])
def test_gradients_match_finite_differences(name, index, value_shape):
    def f(a, v):
        y = a * 1.0
        y[index()] = v
        return y * y  # the result's gradient depends on which entries came from where

    assert gradcheck(f, [randn((3, 4)), randn(value_shape, 1)])


@needs_torch
@pytest.mark.parametrize("name, index, value_shape", INDEXES, ids=[c[0] for c in INDEXES])
def test_values_and_gradients_match_torch(name, index, value_shape):
    rng = np.random.default_rng(0)
    a, v, w = rng.standard_normal((3, 4)), rng.standard_normal(value_shape), rng.standard_normal((3, 4))
    results = []
    for lib, make in ((minidl, lambda z: minidl.tensor(z, dtype=minidl.float64, requires_grad=True)),
                      (torch, lambda z: torch.tensor(z, requires_grad=True))):
        ta, tv = make(a), make(v)
        y = ta * 1.0
        idx = index()
        if lib is torch and isinstance(idx, np.ndarray):
            idx = torch.tensor(idx)
        y[idx] = tv
        (y * lib.tensor(w, dtype=lib.float64)).sum().backward()
        results.append([np.asarray(z.detach().numpy()) for z in (y, ta.grad, tv.grad)])
    for got, want, what in zip(*results, ("value", "grad of x", "grad of value")):
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=what)


def test_outside_a_graph_the_array_is_written_and_views_see_it():
    x = minidl.zeros(3, 4)
    row = x[1]
    x[1, 2] = 5
    x[:, 0] = minidl.tensor([1.0, 2.0, 3.0])
    x[x > 4] = -1
    assert row.tolist() == [2.0, 0.0, -1.0, 0.0]
    assert x.tolist() == [[1, 0, 0, 0], [2, 0, -1, 0], [3, 0, 0, 0]]
    labels = minidl.zeros(3, dtype=minidl.int64)
    labels[0] = 2.7  # cast to the tensor's dtype, as torch does
    assert labels.tolist() == [2, 0, 0] and labels.dtype == np.int64


def test_a_graph_built_into_a_fresh_tensor():
    """The common pattern: a zero buffer filled with results that require grad."""
    w = minidl.randn(4, requires_grad=True)
    h = minidl.zeros(3, 4)
    h[1] = w * 2
    assert h.requires_grad
    h.sum().backward()
    assert w.grad.tolist() == [2.0] * 4


def test_bad_input_names_what_did_not_fit():
    x = minidl.zeros(3, 4)
    with pytest.raises(ValueError, match=r"shape \(5,\) does not fit the \(4,\) elements"):
        x[0] = minidl.ones(5)
    with pytest.raises(IndexError, match=r"index 5 .*shape \(3, 4\)"):
        x[5] = 1
    p = minidl.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        p[0] = 1.0
    with minidl.no_grad():
        p[0] = 1.0
    assert p[0].item() == 1.0
    h = p * 2
    _ = h * 3  # h is now another op's input: changing it would reroute that op's gradient
    with pytest.raises(RuntimeError, match="already took as an input"):
        h[0] = 0.0


# ---- x[advanced index] = tensor of another dtype ----------------------------------------------

def test_advanced_index_assignment_needs_matching_dtypes():
    x = minidl.zeros(3, 2)
    for index in ([0, 1], minidl.tensor([0, 2]), (0, [0, 1]), minidl.tensor(True)):
        with pytest.raises(RuntimeError, match="Index put requires the source and destination"):
            x[index] = minidl.tensor(1)
    with pytest.raises(RuntimeError, match="dtypes match"):
        x[minidl.tensor([[True, False], [False, True], [True, True]])] = \
            minidl.tensor([1.0, 2, 3, 4], dtype=minidl.float64)
    np.testing.assert_array_equal(x.numpy(), np.zeros((3, 2)))  # nothing written
    x[minidl.tensor(0)] = minidl.tensor(1)  # an integer index: a copy into a view, cast
    x[:, 1] = minidl.tensor([1, 2, 3])
    x[minidl.tensor([[True, False], [False, True], [True, True]])] = \
        minidl.tensor(5.0, dtype=minidl.float64)  # one value under a mask: cast
    x[minidl.tensor([0])] = 7  # a number: cast
    np.testing.assert_array_equal(x.numpy(), [[7, 7], [0, 5], [5, 5]])


def test_advanced_index_assignment_parity():
    torch = pytest.importorskip("torch")
    for index in ([0, 1], (0, [0, 1])):
        raises_like_torch(lambda: minidl.zeros(3, 2).__setitem__(index, minidl.tensor(1)),
                           lambda: torch.zeros(3, 2).__setitem__(index, torch.tensor(1)))
