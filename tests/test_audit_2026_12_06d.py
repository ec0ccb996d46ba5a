"""The 2026-12-06 (d) audit against PyTorch 2.13: the elementwise, statistics and structure ops,
the nn additions of the day (3-D family, grid_sample, CTC, EmbeddingBag, parametrizations,
swa_utils), the in-place forms, runtime helpers, checkpoint and worker data loading. Each test
pins one divergence found and fixed, by running the same thing in minidl and in torch."""

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

torch = pytest.importorskip("torch", reason="the audit compares against torch")


def same(mine, theirs, what="", atol=1e-9, rtol=1e-7):
    a = mine.numpy() if isinstance(mine, minidl.Tensor) else np.asarray(mine)
    b = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs torch's {b.shape}"
    assert str(a.dtype) == str(b.dtype), f"{what}: dtype {a.dtype} vs torch's {b.dtype}"
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, equal_nan=True, err_msg=what)


def test_frexp_subnormal_mantissa_and_gradient():
    x = np.array([0.0, -0.0, np.inf, np.nan, 1e-40, 3.0, -np.inf], np.float32)
    mx = minidl.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    mm, me = minidl.frexp(mx)
    tm, te = torch.frexp(tx)
    same(mm, tm, "mantissa")
    same(me, te, "exponent")
    mm.sum().backward()
    tm.sum().backward()
    same(mx.grad, tx.grad, "grad")
    d = minidl.tensor(np.array([0.3, -5.0, 7.5]), dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda t: minidl.frexp(t)[0], [d])


def test_aminmax_over_an_empty_dim_is_an_index_error():
    with pytest.raises(IndexError):
        torch.aminmax(torch.zeros(2, 0), dim=1)
    with pytest.raises(IndexError, match="empty"):
        minidl.aminmax(minidl.zeros(2, 0), dim=1)
    with pytest.raises(ValueError):
        minidl.aminmax(minidl.zeros(0, 3), dim=-2)
