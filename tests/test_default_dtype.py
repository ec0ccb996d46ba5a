"""minidl.set_default_dtype / get_default_dtype (and the default device), as PyTorch's: float
creation, layer parameters and Python floats in type promotion follow the default dtype."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn

torch = pytest.importorskip("torch")


@pytest.fixture
def default64():
    minidl.set_default_dtype(minidl.float64)
    torch.set_default_dtype(torch.float64)
    yield
    minidl.set_default_dtype(minidl.float32)
    torch.set_default_dtype(torch.float32)


def _name(dtype):
    return str(dtype).replace("torch.", "")


CREATIONS = [
    ("tensor list", lambda m: m.tensor([1.0, 2.0])),
    ("tensor float", lambda m: m.tensor(1.5)),
    ("tensor int", lambda m: m.tensor([1, 2])),
    ("zeros", lambda m: m.zeros(2, 3)),
    ("ones", lambda m: m.ones(2)),
    ("empty", lambda m: m.empty(2)),
    ("full float", lambda m: m.full((2,), 1.5)),
    ("full int", lambda m: m.full((2,), 1)),
    ("rand", lambda m: m.rand(2)),
    ("randn", lambda m: m.randn(2)),
    ("arange float", lambda m: m.arange(0, 1, 0.25)),
    ("arange int", lambda m: m.arange(3)),
    ("linspace", lambda m: m.linspace(0, 1, 5)),
    ("logspace", lambda m: m.logspace(0, 1, 3)),
    ("eye", lambda m: m.eye(3)),
    ("normal", lambda m: m.normal(0.0, 1.0, (2,))),
    ("int + float", lambda m: m.tensor([1, 2]) + 2.5),
    ("float + int", lambda m: 2.5 * m.tensor([1, 2])),
    ("int / int", lambda m: m.tensor([1, 2]) / 2),
    ("int sqrt", lambda m: m.tensor([1, 4]).sqrt()),
    ("int ** float", lambda m: m.tensor([1, 4]) ** 0.5),
    ("float32 + float", lambda m: m.ones(2, dtype=m.float32) + 2.5),
    ("bool + float", lambda m: m.tensor([True]) + 1.5),
    ("linear weight", lambda m: m.nn.Linear(2, 3).weight),
    ("conv bias", lambda m: m.nn.Conv2d(1, 2, 3).bias),
    ("batchnorm buffer", lambda m: m.nn.BatchNorm1d(2).running_mean),
    ("layernorm weight", lambda m: m.nn.LayerNorm(4).weight),
    ("embedding", lambda m: m.nn.Embedding(4, 2).weight),
    ("lstm", lambda m: m.nn.LSTM(2, 3).weight_ih_l0),
    ("mha", lambda m: m.nn.MultiheadAttention(4, 2).in_proj_weight),
    ("prelu", lambda m: m.nn.PReLU().weight),
    ("square mask", lambda m: m.nn.Transformer.generate_square_subsequent_mask(3)),
]


@pytest.mark.parametrize("name,make", CREATIONS, ids=[c[0] for c in CREATIONS])
@pytest.mark.parametrize("default", ["float32", "float64"])
def test_creation_follows_the_default_dtype(name, make, default):
    minidl.set_default_dtype(getattr(minidl, default))
    torch.set_default_dtype(getattr(torch, default))
    try:
        assert str(make(minidl).dtype) == _name(make(torch).dtype)
        assert minidl.get_default_dtype() == np.dtype(default)
    finally:
        minidl.set_default_dtype(minidl.float32)
        torch.set_default_dtype(torch.float32)


def test_finfo_of_the_default(default64):
    assert minidl.finfo().eps == torch.finfo().eps
    assert minidl.finfo().bits == 64


def test_sixteen_bit_defaults_as_torch():
    for d in ("float16", "bfloat16"):
        minidl.set_default_dtype(getattr(minidl, d))
        try:
            assert str(minidl.tensor([1.0]).dtype) == d
            assert str(minidl.zeros(2).dtype) == d
            assert minidl.get_default_dtype() == getattr(minidl, d)
        finally:
            minidl.set_default_dtype(minidl.float32)
    assert minidl.tensor([1.0]).dtype == np.float32


@pytest.mark.parametrize("bad", [minidl.int64, minidl.bool, np.dtype("complex64"), "int32", 3])
def test_set_default_dtype_refuses_non_floating(bad):
    with pytest.raises(TypeError, match="floating-point"):
        minidl.set_default_dtype(bad)
    assert minidl.get_default_dtype() == np.float32


def test_ndarray_rule(default64):
    # minidl's contract: under float32 (the default), float64 arrays become float32; under a
    # float64 default, arrays keep their float dtype, as torch.tensor does
    assert minidl.tensor(np.zeros(2)).dtype == np.float64
    assert minidl.tensor(np.zeros(2, np.float32)).dtype == np.float32
    minidl.set_default_dtype(minidl.float32)
    assert minidl.tensor(np.zeros(2)).dtype == np.float32


def test_training_step_in_float64(default64):
    minidl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = minidl.optim.SGD(model.parameters(), lr=0.1)
    x = minidl.randn(5, 3)
    loss = nn.functional.cross_entropy(model(x), minidl.tensor([0, 1, 0, 1, 1]))
    loss.backward()
    opt.step()
    assert loss.dtype == np.float64
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    nn.init.xavier_uniform_(model[0].weight)
    assert model[0].weight.dtype == np.float64


def test_default_device():
    assert minidl.get_default_device() == "cpu"
    minidl.set_default_device("cpu")
    assert minidl.zeros(2).device == "cpu"
    minidl.set_default_device(None)
    assert minidl.get_default_device() == "cpu"
    with pytest.raises((ValueError, RuntimeError)):
        minidl.set_default_device("tpu")


def test_default_device_fake_gpu(monkeypatch):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, None)  # creation needs no kernels
    minidl.set_default_device("cuda")
    try:
        assert minidl.get_default_device() == "cuda"
        for t in (minidl.zeros(2), minidl.ones(2), minidl.tensor([1.0]), minidl.arange(3),
                  minidl.rand(2), minidl.randn(2), minidl.full((2,), 1.0), minidl.eye(2),
                  minidl.linspace(0, 1, 3)):
            assert t.device == "cuda"
        assert minidl.tensor(np.zeros(2)).device == "cuda"
    finally:
        minidl.set_default_device(None)
    assert minidl.zeros(2).device == "cpu"
