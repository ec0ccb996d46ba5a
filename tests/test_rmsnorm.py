"""nn.RMSNorm and F.rms_norm: float64 gradient checks, PyTorch parity of values and gradients
(weight or none, several normalised dims, eps=None in each dtype, mixed dtypes), the module's
parameters, state_dict keys and repr, autocast dtypes on the CPU, and refusals."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import randn

torch = pytest.importorskip("torch")
from _torch_parity import check_op  # noqa: E402


@pytest.mark.parametrize("shape,norm", [((3, 5), (5,)), ((2, 3, 4), (3, 4))])
def test_gradcheck_float64(shape, norm):
    x, w = randn(shape, seed=1), randn(norm, seed=2)
    assert gradcheck(lambda x, w: F.rms_norm(x, norm, w), [x, w])
    assert gradcheck(lambda x: F.rms_norm(x, norm, eps=1e-3), [randn(shape, seed=3)])


@pytest.mark.parametrize("fn,shapes", [
    (lambda F, x, w: F.rms_norm(x, (6,), w), [((4, 6), (6,))]),
    (lambda F, x, w: F.rms_norm(x, [3, 4], w, eps=1e-2), [((2, 3, 4), (3, 4))]),
    (lambda F, x: F.rms_norm(x, (5,)), [(3, 2, 5)]),
    (lambda F, x: F.rms_norm(x * 1e-4, (5,)), [(3, 5)]),  # eps=None matters here
])
def test_parity_with_torch(fn, shapes):
    check_op(fn, shapes)


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16"])
def test_eps_none_is_the_compute_dtypes_epsilon(dtype):
    x = np.random.default_rng(0).standard_normal((3, 4)) * 1e-4
    tx = torch.tensor(x).to(getattr(torch, dtype))
    mx = minidl.tensor(x, dtype=getattr(minidl, dtype))
    got = F.rms_norm(mx, (4,))
    want = torch.nn.functional.rms_norm(tx, (4,))
    assert str(got.dtype) == dtype
    np.testing.assert_allclose(got.numpy().astype(np.float64), want.double().numpy(),
                               rtol=1e-2 if dtype != "float64" else 1e-12)


@pytest.mark.filterwarnings("ignore:Mismatch dtype")
def test_mixed_dtypes_follow_the_input():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.uniform(0.5, 2, 4)
    for xd, wd in (("float64", "float32"), ("float32", "float64"), ("bfloat16", "float32")):
        mx = minidl.tensor(x, dtype=getattr(minidl, xd), requires_grad=True)
        mw = minidl.tensor(w, dtype=getattr(minidl, wd), requires_grad=True)
        tx = torch.tensor(x).to(getattr(torch, xd)).requires_grad_()
        tw = torch.tensor(w).to(getattr(torch, wd)).requires_grad_()
        y, ty = F.rms_norm(mx, (4,), mw), torch.nn.functional.rms_norm(tx, (4,), tw)
        assert str(y.dtype) == str(ty.dtype).replace("torch.", "")
        y.float().sum().backward()
        ty.float().sum().backward()
        assert str(mw.grad.dtype) == wd and str(mx.grad.dtype) == xd
        tol = 2e-2 if xd == "bfloat16" else 1e-5
        np.testing.assert_allclose(y.float().numpy(), ty.float().detach().numpy(), atol=tol)
        np.testing.assert_allclose(mw.grad.float().numpy(), tw.grad.float().numpy(), atol=tol * 4)


def test_module_matches_torch():
    m, t = nn.RMSNorm([3, 4], eps=1e-5), torch.nn.RMSNorm([3, 4], eps=1e-5)
    assert repr(m) == repr(t) == "RMSNorm((3, 4), eps=1e-05, elementwise_affine=True)"
    assert list(m.state_dict()) == list(t.state_dict()) == ["weight"]
    np.testing.assert_array_equal(m.weight.numpy(), t.weight.detach().numpy())
    w = np.random.default_rng(1).uniform(0.5, 2, (3, 4)).astype(np.float32)
    m.load_state_dict({"weight": w})
    t.load_state_dict({"weight": torch.tensor(w)})
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    mx, tx = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = m(mx), t(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.weight.grad.numpy(), t.weight.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_module_without_affine_and_factory_kwargs():
    m = nn.RMSNorm(4, None, False)
    assert m.weight is None and list(m.state_dict()) == []
    assert repr(m) == repr(torch.nn.RMSNorm(4, None, False))
    assert nn.RMSNorm(4, 1e-6, True, "cpu", minidl.float64).weight.dtype == np.float64


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_autocast_cpu_dtype_as_torch(dtype):
    x = np.random.default_rng(0).standard_normal((2, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.nn.functional.rms_norm(torch.tensor(x).to(getattr(torch, dtype)), (4,),
                                            torch.ones(4))
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        got = F.rms_norm(minidl.tensor(x, dtype=getattr(minidl, dtype)), (4,), minidl.ones(4))
    assert str(got.dtype) == str(want.dtype).replace("torch.", "")


def test_bad_input_is_refused():
    x = minidl.randn(3, 4)
    with pytest.raises(ValueError, match=r"normalized_shape \[3\]"):
        F.rms_norm(x, (3,))
    with pytest.raises(ValueError, match="weight has shape"):
        F.rms_norm(x, (4,), minidl.ones(3))
    with pytest.raises(TypeError, match="floating"):
        F.rms_norm(minidl.tensor([[1, 2]]), (2,))
    with pytest.raises(TypeError, match="normalized_shape"):
        nn.RMSNorm(2.5)


def test_on_fake_gpu(monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)  # rms_norm launches no custom kernel
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    m = nn.RMSNorm(4).to("cuda")
    mx = minidl.tensor(x, device="cuda", requires_grad=True)
    y = m(mx)
    assert y.device == "cuda" and m.weight.device == "cuda"
    y.sum().backward()
    assert mx.grad.device == "cuda" and m.weight.grad.device == "cuda"
    cpu = F.rms_norm(minidl.tensor(x), (4,), minidl.ones(4))
    np.testing.assert_allclose(y.numpy(), cpu.numpy(), rtol=1e-6)



def test_autocast_cuda_policy_lists_it_as_float32():
    # PyTorch's CUDA policy lists rms_norm as a float32 op since 2.12 (pytorch/pytorch#174824);
    # its CPU policy does not (checked against torch above). No CUDA torch here to compare with.
    import importlib
    policy = importlib.import_module("minidl.amp.autocast")
    from minidl.nn._functional.rms_norm import RMSNorm as Op
    assert Op.__name__ in policy.FLOAT32["cuda"] and Op.__name__ in policy._LISTED
    assert Op.__name__ not in policy.FLOAT32["cpu"] | policy.FLOAT32_INSIDE["cpu"]
