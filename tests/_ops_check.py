"""``check(fn, *arrays)``: one lambda ``fn(L, *tensors)`` run on minidl (``L`` is minidl) and on
PyTorch (``L`` is torch) from the same float64 arrays: the outputs must match (values, dtype,
shape), and so must the gradients of every floating-point input (of a fixed random projection
of the first float output); the minidl side also passes a finite-difference gradcheck.
Integer and bool arrays are passed as constants (indices, masks). Without torch only the
gradient check runs; tests that call torch themselves carry ``needs_torch``.

``agree(fm, ft)`` / ``agree_both(f)``: a lambda of the library (``L``) run on minidl and on
torch, for ops without gradients: equal dtypes and values, or the same error."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

try:
    import torch
except ImportError:  # the gradient checks still run; the comparisons with torch skip
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch parity tests need torch (pip install torch); not installed")


def _outputs(out):
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def _gradcheck_only(fn, arrays, floats, grad):
    """Without torch: minidl's forward runs, and its gradient passes the finite differences."""
    m_in = [minidl.tensor(a, dtype=a.dtype) for a in arrays]
    out = _outputs(fn(minidl, *m_in))
    first = next((k for k, t in enumerate(out) if t.dtype.kind == "f"), None)
    if not grad or first is None or not any(floats):
        return

    def f(*ts):
        return _outputs(fn(minidl, *ts))[first]
    fresh = [minidl.tensor(a, dtype=a.dtype, requires_grad=fl) for a, fl in zip(arrays, floats)]
    assert gradcheck(f, fresh)


def check(fn, *arrays, grad=True, rtol=1e-7, atol=1e-9, check_grad=True, seed=0):
    arrays = [np.asarray(a) for a in arrays]
    floats = [a.dtype.kind == "f" for a in arrays]
    if torch is None:
        _gradcheck_only(fn, arrays, floats, grad and check_grad)
        return
    m_in = [minidl.tensor(a, dtype=a.dtype, requires_grad=f and grad) for a, f in zip(arrays, floats)]
    t_in = [torch.tensor(a, requires_grad=f and grad) for a, f in zip(arrays, floats)]
    m_out, t_out = _outputs(fn(minidl, *m_in)), _outputs(fn(torch, *t_in))
    assert len(m_out) == len(t_out)
    for k, (m, t) in enumerate(zip(m_out, t_out)):
        mv, tv = _np(m), _np(t)
        assert mv.shape == tv.shape, f"output {k}: shape {mv.shape} != torch's {tv.shape}"
        assert mv.dtype == tv.dtype, f"output {k}: dtype {mv.dtype} != torch's {tv.dtype}"
        np.testing.assert_allclose(mv, tv, rtol=rtol, atol=atol, err_msg=f"output {k}")
    if not grad or not any(floats):
        return
    first = next((k for k, t in enumerate(t_out) if t.dtype.is_floating_point and t.requires_grad),
                 None)
    if first is None:
        return
    proj = np.random.default_rng(seed).standard_normal(tuple(t_out[first].shape))
    (m_out[first] * minidl.tensor(proj, dtype=np.float64)).sum().backward()
    (t_out[first] * torch.tensor(proj)).sum().backward()
    for k, (m, t) in enumerate(zip(m_in, t_in)):
        if not t.requires_grad:
            continue
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        mg = np.zeros(m.shape) if m.grad is None else m.grad.numpy()
        np.testing.assert_allclose(mg, tg, rtol=rtol, atol=atol, err_msg=f"gradient of input {k}")
    if check_grad:
        def f(*ts):
            return _outputs(fn(minidl, *ts))[first]
        fresh = [minidl.tensor(a, dtype=a.dtype, requires_grad=fl) for a, fl in zip(arrays, floats)]
        assert gradcheck(f, fresh)


def agree(fm, ft):
    """Run ``fm(minidl)`` and ``ft(torch)``: equal values and dtypes, or both raise an error of
    torch's type (minidl's error classes subclass torch's)."""
    try:
        want = ft(torch)
    except Exception as e:  # noqa: BLE001  (any error torch raises, minidl must raise too)
        kind = RuntimeError if isinstance(e, RuntimeError) else type(e)
        with pytest.raises(kind):
            fm(minidl)
        return
    got_tensor = fm(minidl)
    assert str(got_tensor.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    got = np.asarray(got_tensor.detach().numpy())
    if want.dtype.is_floating_point:  # within an ulp or two of torch's vectorised math
        np.testing.assert_allclose(got.astype(np.float64), want.double().numpy(), rtol=3e-7,
                                   atol=0)
    else:
        np.testing.assert_array_equal(got, want.numpy())


def agree_both(f):
    """``agree`` with one lambda for both libraries."""
    agree(f, f)
