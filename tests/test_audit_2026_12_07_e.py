"""Mended after an audit (2026-12-07, e): views where PyTorch gives views (x[i, j],
as_strided), NaN through the piecewise activations as PyTorch passes it, Module.compile's
arguments."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.testing import gradcheck


# ---- x[i, j]: a 0-d view, not a scalar copy ---------------------------------------------------
def test_integer_index_of_every_dim_is_a_writable_view():
    x = minidl.arange(12.0).reshape(3, 4)
    y = x[1, 2]
    assert y.shape == ()
    y.add_(100)
    assert x[1, 2].item() == 106.0
    v = minidl.arange(5.0)
    v[3].mul_(-1)
    assert v.tolist() == [0.0, 1.0, 2.0, -3.0, 4.0]
    x[2][3].fill_(-7)  # chained indexing reaches x too
    assert x[2, 3].item() == -7.0


def test_integer_index_view_shares_the_version_count():
    a = minidl.tensor([1.0, 2.0, 3.0])
    w = minidl.tensor([0.5, 0.5, 0.5], requires_grad=True)
    y = (w * a).sum()  # the product saves a for w's gradient
    a[1].add_(1)  # changes a through a 0-d view: backward must see it
    with pytest.raises(RuntimeError, match="modified|in-place|changed"):
        y.backward()


def test_integer_index_gradient_and_torch_parity():
    x = minidl.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    x[1, 1].backward()
    assert x.grad.tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    torch = pytest.importorskip("torch")
    a = np.arange(24.0).reshape(2, 3, 4)
    t, m = torch.tensor(a), minidl.tensor(a.copy())
    t[1, 2, 3].add_(5)
    m[1, 2, 3].add_(5)
    t[0][1].mul_(2)
    m[0][1].mul_(2)
    np.testing.assert_array_equal(m.numpy(), t.numpy())


# ---- as_strided: a view of the storage --------------------------------------------------------
def test_as_strided_writes_reach_the_base_as_in_torch():
    torch = pytest.importorskip("torch")
    a = np.arange(12.0).reshape(3, 4)
    m, t = minidl.tensor(a.copy()), torch.tensor(a)
    minidl.as_strided(m, (2, 2), (1, 4)).mul_(0)
    torch.as_strided(t, (2, 2), (1, 4)).mul_(0)
    np.testing.assert_array_equal(m.numpy(), t.numpy())
    # the storage offset counts from the storage, not from the view
    np.testing.assert_array_equal(m[1:].as_strided((2,), (2,), 1).numpy(),
                                  t[1:].as_strided((2,), (2,), 1).numpy())


def test_as_strided_without_torch():
    m = minidl.arange(6.0)
    s = minidl.as_strided(m, (2, 2), (2, 1), 1)
    assert s.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    s[1, 1] = 40.0
    assert m.tolist() == [0.0, 1.0, 2.0, 3.0, 40.0, 5.0]
    c = minidl.as_strided_copy(m, (2,), (1,))
    c.add_(1)  # a copy: the base keeps its values
    assert m.tolist()[:2] == [0.0, 1.0]


def test_overlapping_as_strided_refuses_writes():
    m = minidl.arange(4.0)
    s = minidl.as_strided(m, (3, 2), (1, 1))  # elements share memory locations
    with pytest.raises(ValueError, match="read-only"):
        s.add_(1)
    assert m.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_as_strided_view_gradcheck():
    x = minidl.tensor(np.random.default_rng(0).normal(size=(3, 4)), requires_grad=True,
                      dtype=minidl.float64)
    assert gradcheck(lambda x: minidl.as_strided(x.t(), (2, 3), (1, 2), 1), (x,))
    assert gradcheck(lambda x: minidl.as_strided(x, (3, 2), (1, 1)), (x,))


# ---- NaN through piecewise activations --------------------------------------------------------
VALUES = np.array([np.nan, -1.0, 0.0, 1.0, np.inf, -np.inf, 0.5, -0.5, 0.3])


@pytest.mark.parametrize("name,args", [("threshold", (0.5, 2.0)), ("hardshrink", ()),
                                       ("softshrink", ())])
def test_nan_input_stays_nan(name, args):
    y = getattr(F, name)(minidl.tensor(VALUES, dtype=minidl.float64), *args)
    assert np.isnan(y.numpy()[0]), f"{name} hid a NaN input"


@pytest.mark.parametrize("name,args", [("threshold", (0.5, 2.0)), ("hardshrink", ()),
                                       ("softshrink", ()), ("elu", ()), ("selu", ()),
                                       ("celu", ())])
def test_nan_and_infinity_match_torch_forward_and_backward(name, args):
    torch = pytest.importorskip("torch")
    x = minidl.tensor(VALUES, requires_grad=True, dtype=minidl.float64)
    xt = torch.tensor(VALUES, requires_grad=True)
    y = getattr(F, name)(x, *args)
    yt = getattr(torch.nn.functional, name)(xt, *args)
    with np.errstate(invalid="ignore"):
        y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-12)
    mine, theirs = x.grad.numpy(), xt.grad.numpy()
    nan = np.isnan(VALUES)
    np.testing.assert_allclose(mine[~nan], theirs[~nan], rtol=1e-12)
    # at a NaN input torch's ELU backward (x <= 0 ? the exponential branch : the slope) gives
    # the slope in its AVX-512 code and NaN in its AVX2 code; minidl gives the slope (the
    # formula's answer, since NaN <= 0 is false) on every CPU
    if name in ("elu", "selu", "celu"):
        slope = 1.0507009873554805 if name == "selu" else 1.0
        assert (mine[nan] == slope).all() and (np.isnan(theirs[nan]) | (theirs[nan] == slope)).all()
    else:
        np.testing.assert_array_equal(mine[nan], theirs[nan])


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # float32 runs the numba kernels
@pytest.mark.parametrize("name,args", [("relu", ()), ("relu6", ()), ("hardtanh", (-0.5, 0.5)),
                                       ("leaky_relu", (0.1,))])
def test_relu_family_passes_the_gradient_at_nan_as_torch(name, args, dtype):
    torch = pytest.importorskip("torch")
    values = np.concatenate([VALUES, np.linspace(-8, 8, 40)])  # enough for the kernels' path
    x = minidl.tensor(values, requires_grad=True, dtype=getattr(minidl, dtype))
    xt = torch.tensor(values, requires_grad=True, dtype=getattr(torch, dtype))
    weights = np.arange(values.size, dtype=dtype) + 1
    y = getattr(F, name)(x, *args)
    yt = getattr(torch.nn.functional, name)(xt, *args)
    (g,) = minidl.autograd.grad((y * minidl.tensor(weights)).sum(), x, create_graph=True)
    (gt,) = torch.autograd.grad((yt * torch.tensor(weights)).sum(), xt, create_graph=True)
    np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
    np.testing.assert_array_equal(g.detach().numpy(), gt.detach().numpy())
    # at NaN torch passes ReLU's gradient on (threshold_backward zeroes where y <= 0), scales
    # leaky ReLU's, and stops hardtanh's (it passes only where lo < x < hi)
    expected = {"relu": 1.0, "leaky_relu": 0.1}.get(name, 0.0) * weights[0]
    assert g.detach().numpy()[0] == expected


def test_add_relu_passes_the_gradient_at_nan_as_relu_of_a_sum():
    a = minidl.tensor(VALUES, requires_grad=True, dtype=minidl.float64)
    b = minidl.tensor(np.ones_like(VALUES), requires_grad=True, dtype=minidl.float64)
    F.add_relu(a, b).sum().backward()
    a2 = minidl.tensor(VALUES, requires_grad=True, dtype=minidl.float64)
    F.relu(a2 + minidl.tensor(np.ones_like(VALUES))).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), a2.grad.numpy())
    assert a.grad.numpy()[0] == 1.0


# ---- Module.compile checks torch.compile's arguments --------------------------------------------
def test_module_compile_checks_its_arguments():
    model = minidl.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="Unrecognized mode"):
        model.compile(mode="max-autotun")
    with pytest.raises(RuntimeError, match="invalid backend"):
        model.compile(backend="inductr")
    with pytest.raises(TypeError):
        model.compile("max-autotune")  # torch's Module.compile takes keywords only
    assert model.compile(mode="reduce-overhead", disable=True) is None


def test_relu_gradient_at_nan_on_a_fake_gpu_as_on_the_cpu(monkeypatch, tmp_path):
    """The CUDA kernel body of ReLU's backward (compiled for the host) passes the gradient at a
    NaN output as the numba kernel does."""
    import warnings

    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    values = np.concatenate([VALUES, np.linspace(-8, 8, 40)]).astype(np.float32)

    def run(device):
        x = minidl.tensor(values, device=device, requires_grad=True)
        (F.relu(x) * minidl.tensor(np.arange(values.size, dtype=np.float32) + 1,
                                   device=device)).sum().backward()
        return x.grad.numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = run("cpu")
        _fake_gpu.install(monkeypatch, lib)
        gpu = run("cuda")
    np.testing.assert_array_equal(gpu, cpu)
    assert gpu[0] == 1.0
