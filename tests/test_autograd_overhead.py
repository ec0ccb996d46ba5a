"""The cheap paths of the autograd engine and of Module attribute lookup keep the behaviour of
the general ones: which attribute wins, what backward frees, the device check of an op."""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.autograd import Function
from minidl.nn import Parameter


def _param(n):
    return Parameter(np.zeros(n, dtype=np.float32))


class _Plain(nn.Module):
    klass = "class attribute"


def test_registered_attributes_follow_every_change():
    m = _Plain()
    lin, w = nn.Linear(2, 3), _param(2)
    m.sub, m.w = lin, w
    assert m.sub is lin and m.w is w
    m.sub = None  # a plain attribute now; no longer a sub-module
    assert m.sub is None and list(m.named_modules()) == [("", m)]
    m.w = _param(3)  # replaced
    assert m.w.shape == (3,) and [n for n, _ in m.named_parameters()] == ["w"]
    del m.w
    with pytest.raises(AttributeError):
        m.w
    with pytest.raises(AttributeError):
        del m.w
    m.add_module(0, nn.ReLU())
    assert isinstance(getattr(m, "0"), nn.ReLU)
    m.register_parameter("bias", None)
    assert m.bias is None and m.state_dict() == {}


def test_a_registration_over_a_plain_or_class_attribute_is_refused_as_torch():
    m = _Plain()
    m.x = 3
    with pytest.raises(KeyError, match="'x' already exists"):
        m.register_buffer("x", np.ones(2))  # the plain attribute was there first and stays
    assert m.x == 3 and list(m.state_dict()) == []
    with pytest.raises(KeyError, match="'klass' already exists"):
        m.klass = _param(4)  # the class attribute would hide it from m.klass
    assert m.klass == "class attribute" and list(m.named_parameters()) == []
    m.y = _param(5)
    with pytest.raises(KeyError, match="'y' already exists"):
        m.register_buffer("y", np.ones(6))
    assert m.y.shape == (5,) and list(m.state_dict()) == ["y"]
    del m.y
    m.register_buffer("y", np.ones(6))  # free again
    assert m.y.shape == (6,) and type(m.y) is minidl.Tensor


def test_batchnorm_buffers_and_reinitialisation():
    bn = nn.BatchNorm2d(3)
    bn.running_mean = None  # a registered buffer name stays a buffer
    assert bn.running_mean is None and "running_mean" not in bn.state_dict()
    bn.running_mean = minidl.tensor(np.ones(3))  # back in its place, as torch's
    assert list(bn.state_dict())[:4] == ["weight", "bias", "running_mean", "running_var"]
    lin = nn.Linear(2, 2)
    nn.Module.__init__(lin)  # fresh, empty registrations
    with pytest.raises(AttributeError):
        lin.weight


class _Keeps(Function):
    def forward(self, x):
        self.nested = ((1, 2), [x * 2])  # an array deep in a tuple
        self.index = np.arange(3)
        self.shape, self.dtype_kept, self.note = x.shape, x.dtype, "kept"
        return x * 1

    def backward(self, g):
        return g


def test_free_drops_every_array_and_keeps_the_rest():
    x = minidl.tensor(np.ones((2, 3)), requires_grad=True)
    y = _Keeps.apply(x)
    fn = y._ctx
    fn.after_backward = lambda: None
    callback = fn.after_backward
    y.sum().backward()
    assert fn.freed and fn.saved == () and fn.inputs == ()
    assert fn.nested is None and fn.index is None
    assert (fn.shape, fn.dtype_kept, fn.note) == ((2, 3), np.float32, "kept")
    assert fn.after_backward is callback


def test_an_op_refuses_tensors_of_two_devices(monkeypatch):
    from minidl import backend

    class FakeCuPyArray(np.ndarray):
        pass

    class FakeCuPy:
        ndarray = FakeCuPyArray

    monkeypatch.setattr(backend, "_cupy", FakeCuPy)
    a = minidl.Tensor(np.ones(2, dtype=np.float32))
    b = minidl.Tensor(np.ones(2, dtype=np.float32))
    b.data = b.data.view(FakeCuPyArray)
    with pytest.raises(ValueError, match="add: tensors on different devices, cpu and cuda"):
        a + b
    # a numpy scalar beside an array: two types, one device
    c = minidl.Tensor(np.ones(2, dtype=np.float32))
    c.data = np.float32(2.0)
    np.testing.assert_array_equal((a * c).numpy(), [2.0, 2.0])


def test_grad_mode_inside_and_after_backward():
    seen = []

    class Spy(Function):
        def forward(self, x):
            return x * 1

        def backward(self, g):
            seen.append(minidl.is_grad_enabled())
            return g

    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    Spy.apply(x).sum().backward()
    assert seen == [False] and minidl.is_grad_enabled()
