"""An uninitialised Lazy parameter used in an op raises PyTorch's ValueError ("Attempted to use
an uninitialized parameter in ...") instead of computing on an empty array; the module itself
(.to, state_dict, an optimizer over it, the first forward) works as before. And the lazy modules
against torch's: the shapes they infer, their outputs, optimizers and state dicts over them."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

torch = pytest.importorskip("torch")
from _nn_parity import check_module  # noqa: E402

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


# ---- the lazy modules against torch's ------------------------------------------------------------
LAZY = [
    ("LazyLinear", (3,), {}, (2, 5)),
    ("LazyLinear", (4,), dict(bias=False), (2, 3, 6)),
    ("LazyConv2d", (4, 3), dict(padding=1, groups=2), (2, 6, 5, 5)),
    ("LazyConv2d", (2, (2, 3)), dict(stride=2), (3, 5, 6)),
    ("LazyConv1d", (3, 2), {}, (2, 4, 6)),
    ("LazyConv3d", (2, 2), {}, (1, 3, 3, 3, 3)),
    ("LazyBatchNorm2d", (), {}, (4, 3, 2, 2)),
    ("LazyBatchNorm1d", (), dict(affine=False), (4, 3)),
    ("LazyBatchNorm3d", (), dict(momentum=0.2), (2, 3, 2, 2, 2)),
    ("LazyConvTranspose2d", (4, 3), dict(groups=2, stride=2), (1, 6, 3, 3)),
    ("LazyConvTranspose1d", (2, 3), dict(output_padding=1, stride=2), (2, 3, 4)),
    ("LazyConvTranspose3d", (2, 2), dict(bias=False), (1, 2, 2, 3, 2)),
    ("LazyInstanceNorm2d", (), {}, (2, 3, 4, 4)),
    ("LazyInstanceNorm1d", (), dict(affine=False, track_running_stats=False), (2, 3, 5)),
    ("LazyInstanceNorm3d", (), dict(momentum=0.3), (2, 2, 2, 3, 2)),
]


@pytest.mark.filterwarnings("ignore:input's size at dim=1")  # torch's note on affine=False
@pytest.mark.parametrize("cls,args,kwargs,shape", LAZY,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(LAZY)])
def test_lazy_modules_match_torch(cls, args, kwargs, shape):
    ours, theirs = getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.has_uninitialized_params() == theirs.has_uninitialized_params()
    for name, p in ours.named_parameters():
        assert type(p).__name__ == "UninitializedParameter", name
        with pytest.raises(RuntimeError, match="uninitialized parameter"):
            p.shape
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours(minidl.tensor(x)), theirs(torch.tensor(x))
    assert type(ours).__name__ == type(theirs).__name__ == cls.replace("Lazy", "")
    assert isinstance(ours, getattr(nn, cls.replace("Lazy", "")))
    assert repr(ours) == repr(theirs)
    for (name, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert type(p) is nn.Parameter and p.shape == tuple(tp.shape), name
    if "Norm" not in cls:  # the layer's own init ran: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        w = ours.weight.numpy()
        bound = 1 / np.sqrt(np.prod(w.shape[1:]))
        assert 0.5 * bound < np.abs(w).max() <= bound + 1e-6
    else:  # running statistics started at 0 and 1 and took the first batch in, as torch's
        for k in theirs.state_dict():
            np.testing.assert_allclose(ours.state_dict()[k].numpy(),
                                       theirs.state_dict()[k].numpy(), rtol=1e-5, atol=1e-6)
    check_module(ours, theirs, [x])


def test_lazy_modules_optimizer_load_and_dtype():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2))
    opt = minidl.optim.SGD(model.parameters(), lr=0.1)  # before the shapes are known
    y = model(minidl.randn(3, 5))
    y.sum().backward()
    before = model[0].weight.numpy().copy()
    opt.step()
    assert model[0].weight.shape == (4, 5) and not np.allclose(model[0].weight.numpy(), before)
    fresh = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2))
    fresh.load_state_dict(model.state_dict())  # the shapes come from the checkpoint
    assert fresh[2].weight.shape == (2, 4) and fresh[0].in_features == 5
    x = minidl.randn(2, 5)
    np.testing.assert_allclose(fresh(x).numpy(), model(x).numpy())
    lazy = nn.LazyConv2d(3, 2, dtype=minidl.float64)
    assert lazy(minidl.randn(1, 2, 4, 4).double()).dtype == np.float64
    assert lazy.weight.dtype == np.float64
    bn = nn.LazyBatchNorm2d()
    bn(minidl.randn(4, 3, 2, 2) * 2 + 1)
    assert bn.num_features == 3 and bn.num_batches_tracked.item() == 1
    assert 0.05 < float(bn.running_mean.numpy().mean()) < 0.2
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.LazyConv2d(4, 3, groups=2)(minidl.randn(1, 3, 5, 5))
