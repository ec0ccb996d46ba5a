"""minidl.masked (torch.masked): the masked reductions and normalisations against torch 2.13 on
the same inputs and masks (fully masked slices, gradients, result dtypes of integer and float
inputs), and float64 gradient checks."""
import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck, gradgradcheck


_X = np.array([[0.5, -1.2, 2.0, 0.3], [1.5, 0.7, -0.4, -2.2], [0.1, 0.9, 1.1, -0.6]])
_MASK = np.array([[True, False, True, True], [False, False, False, False],
                  [True, True, False, True]])

# (name, positional args after input, keyword args); each is run with mask=_MASK
_MASKED_CASES = [
    ("sum", (), {}), ("sum", (1,), {}), ("sum", ((0, 1),), {"keepdim": True}),
    ("prod", (1,), {}), ("prod", (), {"keepdim": True}),
    ("amax", (1,), {}), ("amax", (0,), {"keepdim": True}), ("amin", (1,), {}), ("amin", (), {}),
    ("argmax", (1,), {}), ("argmin", (1,), {"keepdim": True}),
    ("mean", (1,), {}), ("mean", (), {}), ("median", (1,), {}), ("median", (0,), {}),
    ("norm", (2.0, 1), {}), ("norm", (1.0, None), {}), ("norm", (float("inf"), 1), {}),
    ("norm", (float("-inf"), 1), {}),
    ("var", (1,), {}), ("var", (1,), {"correction": 0}), ("var", (0,), {"unbiased": False}),
    ("std", (1,), {"keepdim": True}), ("std", (None,), {}),
    ("logsumexp", (1,), {}), ("logsumexp", (), {}),
    ("softmax", (1,), {}), ("log_softmax", (1,), {}), ("softmin", (0,), {}),
    ("normalize", (2.0, 1), {}), ("cumsum", (1,), {}), ("cumprod", (1,), {}),
    ("sum", (1,), {"dtype": "float32"}),
]


def _run_masked(T, name, args, kwargs, mask_shape=None, grad_seed=1):
    kwargs = dict(kwargs)
    if "dtype" in kwargs:
        kwargs["dtype"] = getattr(T, kwargs["dtype"])
    x = T.tensor(_X, dtype=T.float64, requires_grad=True)
    mask = _MASK if mask_shape is None else _MASK[0]
    y = getattr(T.masked, name)(x, *args, mask=T.tensor(mask), **kwargs)
    out = {"value": y.detach().numpy().copy(), "dtype": str(y.dtype).split(".")[-1]}
    if y.requires_grad:
        g = np.random.default_rng(grad_seed).standard_normal(tuple(y.shape))
        v = y.detach().numpy()
        g = np.where(np.isfinite(v), g, 0.0)
        finite = T.where(T.tensor(np.isfinite(v)), y, T.zeros_like(y))
        (finite * T.tensor(g, dtype=y.dtype)).sum().backward()
        out["grad"] = x.grad.numpy().copy()
    return out


@pytest.mark.parametrize("name,args,kwargs", _MASKED_CASES)
def test_masked_matches_torch(name, args, kwargs):
    torch = pytest.importorskip("torch")
    got = _run_masked(minidl, name, args, kwargs)
    want = _run_masked(torch, name, args, kwargs)
    assert got["dtype"] == want["dtype"]
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-10, atol=1e-12)
    assert ("grad" in got) == ("grad" in want)
    if "grad" in got:
        np.testing.assert_allclose(got["grad"], want["grad"], rtol=1e-9, atol=1e-12)


def test_masked_fully_masked_slices_and_gradients():
    x = minidl.tensor(_X, dtype=minidl.float64, requires_grad=True)
    m = minidl.tensor(_MASK)
    assert minidl.masked.sum(x, 1, mask=m)[1].item() == 0.0
    assert minidl.masked.prod(x, 1, mask=m)[1].item() == 1.0
    assert minidl.masked.amax(x, 1, mask=m)[1].item() == -np.inf
    assert minidl.masked.amin(x, 1, mask=m)[1].item() == np.inf
    assert np.isnan(minidl.masked.mean(x, 1, mask=m)[1].item())
    assert np.isnan(minidl.masked.var(x, 1, mask=m)[1].item())
    assert np.isnan(minidl.masked.median(x, 1, mask=m)[1].item())
    assert np.isnan(minidl.masked.softmax(x, 1, mask=m)[1].numpy()).all()
    assert minidl.masked.softmax(x, 1, mask=m)[0, 1].item() == 0.0
    minidl.masked.sum(x, 1, mask=m).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), _MASK.astype(float))
    ints = minidl.tensor([[1, 2], [3, 4]])
    im = minidl.tensor([[True, False], [False, False]])
    assert minidl.masked.sum(ints, 1, mask=im).dtype == minidl.int64
    assert minidl.masked.amax(ints, 1, mask=im).tolist() == [1, np.iinfo(np.int64).min]
    with pytest.raises(ValueError, match="Could not infer output dtype"):
        minidl.masked.mean(ints, mask=im)
    with pytest.raises(ValueError, match="fully masked out rows"):
        minidl.masked.median(ints, 1, mask=im)
    with pytest.raises(IndexError, match="mask dimensionality higher"):
        minidl.masked.sum(x[0], mask=m)
    with pytest.raises(RuntimeError, match="appears multiple times"):
        minidl.masked.sum(x, (1, -1), mask=m)


@pytest.mark.parametrize("name,args,kwargs", [
    ("sum", (1,), {}), ("prod", (1,), {}), ("amax", (1,), {}), ("mean", (1,), {}),
    ("norm", (2.0, 1), {}), ("var", (1,), {}), ("std", (1,), {}), ("logsumexp", (1,), {}),
    ("softmax", (1,), {}), ("log_softmax", (1,), {}), ("softmin", (1,), {}),
    ("normalize", (2.0, 1), {}), ("cumsum", (1,), {}), ("cumprod", (1,), {}),
    ("median", (1,), {})])
def test_masked_gradcheck(name, args, kwargs):
    mask = minidl.tensor(np.array([[True, False, True, True], [True, True, False, True]]))
    x = minidl.tensor(_X[[0, 2]], dtype=minidl.float64, requires_grad=True)
    op = getattr(minidl.masked, name)

    def fn(t):
        out = op(t, *args, mask=mask, **kwargs)
        if name == "log_softmax":  # -inf at the masked-out places: left out of the check
            out = minidl.where(mask, out, minidl.zeros_like(out))
        return out

    assert gradcheck(fn, (x,))
    if name in ("sum", "mean", "var", "logsumexp", "softmax", "normalize", "cumprod"):
        assert gradgradcheck(fn, (x,))


def _masked_dtypes_script(T):
    out = []
    ints = np.array([[1, -2, 3], [4, 5, -6]])
    xi, xf, m = T.tensor(ints), T.tensor(ints.astype(np.float32)), T.tensor([True, False, True])
    for name, args in [("sum", (1,)), ("prod", ()), ("amax", (1,)), ("amin", (0,)),
                       ("argmax", (1,)), ("argmin", (None,)), ("cumsum", (1,)),
                       ("cumprod", (0,)), ("logsumexp", (1,)), ("var", (1,)), ("median", (1,))]:
        for x in (xi, xf):
            for mask in (m, None):  # a mask of fewer dims broadcasts; None keeps everything
                try:
                    y = getattr(T.masked, name)(x, *args, mask=mask)
                    out.append((name, str(y.dtype).split(".")[-1],
                                np.round(y.numpy().astype(float), 5).tolist()))
                except (RuntimeError, ValueError, TypeError) as e:
                    out.append((name, type(e).__name__))
    return out


def test_masked_dtypes_match_torch():
    torch = pytest.importorskip("torch")
    assert _masked_dtypes_script(minidl) == _masked_dtypes_script(torch)
