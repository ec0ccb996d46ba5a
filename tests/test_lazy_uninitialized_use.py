"""An uninitialised Lazy parameter used in an op raises PyTorch's ValueError ("Attempted to use
an uninitialized parameter in ...") instead of computing on an empty array; the module itself
(.to, state_dict, an optimizer over it, the first forward) works as before."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

torch = pytest.importorskip("torch")

USES = {
    "w + 1": lambda t, w: w + 1,
    "1 - w": lambda t, w: 1 - w,
    "w * x": lambda t, w: w * t.ones(3, 4),
    "linear": lambda t, w: t.nn.functional.linear(t.ones(2, 4), w),
    "sum": lambda t, w: w.sum(),
    "mean": lambda t, w: w.mean(),
    "add": lambda t, w: t.add(w, 1),
    "exp": lambda t, w: w.exp(),
    "relu": lambda t, w: t.relu(w),
    "matmul": lambda t, w: t.ones(4) @ w,
    "mul_": lambda t, w: w.mul_(2),
    "numel": lambda t, w: w.numel(),
    "item": lambda t, w: w.item(),
    "numpy": lambda t, w: w.numpy(),
    "zeros_ init": lambda t, w: t.nn.init.zeros_(w),
}


@pytest.mark.parametrize("name", list(USES))
def test_use_of_an_uninitialized_parameter_raises_value_error(name):
    use = USES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="uninitialized parameter"):
            use(torch, torch.nn.LazyLinear(3).weight)
    with pytest.raises(ValueError, match="uninitialized parameter"):
        use(minidl, nn.LazyLinear(3).weight)


def test_bias_and_buffers_too():
    with pytest.raises(ValueError, match="uninitialized parameter"):
        nn.LazyLinear(3).bias + 1
    with pytest.raises(ValueError, match="uninitialized"):
        nn.LazyBatchNorm1d().running_mean * 2
    with pytest.raises(ValueError, match="uninitialized parameter"):
        F.conv2d(minidl.ones(1, 2, 5, 5), nn.LazyConv2d(4, 3).weight)


def test_shape_still_raises_runtime_error_as_torch():
    w = nn.LazyLinear(3).weight
    with pytest.raises(RuntimeError, match="Can't access the shape"):
        w.shape
    assert repr(w) == "<UninitializedParameter>"
    assert w.dtype == np.float32 and w.device == "cpu" and w.requires_grad


def test_the_module_works_around_the_placeholders():
    minidl.manual_seed(0)
    m = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyLinear(2))
    opt = minidl.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad()
    opt.step()  # no gradients yet: nothing to do, as in torch
    m.to(minidl.float64)
    assert sorted(m.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    y = m(minidl.ones(5, 4, dtype=minidl.float64))
    assert y.shape == (5, 2) and y.dtype == np.float64
    y.sum().backward()
    opt.step()
    assert m[0].weight.shape == (3, 4) and type(m[0].weight) is nn.Parameter
    assert np.isfinite((m[0].weight + 1).numpy()).all()


def test_load_state_dict_materialises():
    src = nn.Linear(4, 3)
    lazy = nn.LazyLinear(3)
    lazy.load_state_dict(src.state_dict())
    np.testing.assert_array_equal((lazy.weight * 1).numpy(), src.weight.numpy())
