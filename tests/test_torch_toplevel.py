"""The top-level API that PyTorch scripts use around the model: devices, ``minidl.cuda``,
grad-mode switches, random creation, the ``minidl.X(tensor)`` forms of Tensor methods, and
dtype queries. Expected values are PyTorch's (cross-checked against torch where installed)."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn

try:
    import torch
except ImportError:
    torch = None


def test_device_objects_name_devices_as_torch():
    d = minidl.device("cuda:0")
    assert (d.type, d.index, str(d), repr(d)) == ("cuda", 0, "cuda:0", "device(type='cuda', index=0)")
    assert minidl.device("cuda", 1).index == 1 and str(minidl.device("CPU")) == "cpu"
    assert minidl.device(d) == d and minidl.device("cpu") == "cpu" and d == "cuda"
    assert d != "cpu" and minidl.device("cpu") != minidl.device("cuda")
    assert {minidl.device("cpu"): 1}["cpu"] == 1
    for bad, err in (("tpu", ValueError), ("cuda:x", ValueError), (3, TypeError)):
        with pytest.raises(err):
            minidl.device(bad)
    with pytest.raises(ValueError, match="already names an index"):
        minidl.device("cuda:0", 1)
    if torch is not None:
        for name in ("cpu", "cuda", "cuda:0", "cuda:3"):
            assert repr(minidl.device(name)) == repr(torch.device(name))
            assert str(minidl.device(name)) == str(torch.device(name))


def test_device_agnostic_boilerplate_runs():
    device = minidl.device("cuda" if minidl.cuda.is_available() else "cpu")
    model = nn.Linear(3, 2).to(device, non_blocking=True)
    x = minidl.randn(4, 3).to(device, non_blocking=True)
    assert model(x).device == str(device.type)
    y = x.to(minidl.zeros(1, dtype="float64"))  # another tensor's device and dtype
    assert y.dtype == np.float64
    assert x.to(x.device) is x and x.to(x.device, copy=True) is not x
    m64 = nn.Linear(2, 2).to(minidl.zeros(1, dtype="float64"))
    assert m64.weight.dtype == np.float64


def test_cuda_module_answers_without_a_gpu():
    if minidl.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU answers are not what it gives")
    assert minidl.cuda.device_count() == 0 and minidl.cuda.memory_allocated() == 0
    assert minidl.cuda.memory_reserved() == 0
    minidl.cuda.synchronize()
    minidl.cuda.empty_cache()
    with pytest.raises(RuntimeError, match="cuda"):
        minidl.cuda.current_device()
    minidl.cuda.manual_seed_all(3)  # seeds minidl's one generator
    a = minidl.randn(3)
    minidl.manual_seed(3)
    np.testing.assert_array_equal(a.numpy(), minidl.randn(3).numpy())


def test_set_grad_enabled_as_call_context_and_decorator():
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    with minidl.set_grad_enabled(False):
        assert not (x * 2).requires_grad
        with minidl.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not minidl.is_grad_enabled()
    assert minidl.is_grad_enabled()
    minidl.set_grad_enabled(False)  # a call takes effect at once, as torch's
    try:
        assert not minidl.is_grad_enabled()
    finally:
        minidl.set_grad_enabled(True)

    @minidl.set_grad_enabled(False)
    def double(t):
        return t * 2
    assert minidl.is_grad_enabled() and not double(x).requires_grad
    with pytest.raises(TypeError, match="bool"):
        minidl.set_grad_enabled("no")

    @minidl.inference_mode()
    def infer(t):
        return t * 3
    assert not infer(x).requires_grad
    with minidl.inference_mode(False):
        assert (x * 3).requires_grad


def test_method_forms_equal_the_methods():
    x = minidl.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    np.testing.assert_array_equal(minidl.flatten(x).numpy(), x.flatten().numpy())
    np.testing.assert_allclose(minidl.exp(x).numpy(), np.exp(x.numpy()), rtol=1e-6)
    assert minidl.sum(x, dim=0).tolist() == [1.5, 2.0, 2.0]
    values, indices = minidl.max(x, 1)
    assert values.tolist() == [3.0, 4.0] and indices.tolist() == [2, 1]
    assert minidl.max(x).item() == 4.0 and minidl.min(x, dim=0, keepdim=True).values.shape == (1, 3)
    assert minidl.max(x, minidl.zeros(2, 3)).tolist() == [[1.0, 0.0, 3.0], [0.5, 4.0, 0.0]]
    assert minidl.reshape(x, (3, 2)).shape == (3, 2) and minidl.transpose(x, 0, 1).shape == (3, 2)
    assert minidl.exp.__name__ == "exp" and "exp" in minidl.exp.__doc__
    with pytest.raises(TypeError, match="must be a Tensor"):
        minidl.exp([1.0])
    w = minidl.tensor([1.0, 2.0], requires_grad=True)
    minidl.sum(minidl.mul(w, w)).backward()
    assert w.grad.tolist() == [2.0, 4.0]
    if torch is not None:
        tx = torch.tensor(x.numpy())
        for name in ("exp", "sigmoid", "tanh", "abs", "relu", "t", "clone"):
            np.testing.assert_allclose(getattr(minidl, name)(x).numpy(),
                                       getattr(torch, name)(tx).numpy(), rtol=1e-6)
        np.testing.assert_allclose(minidl.softmax(x, 1).numpy(), torch.softmax(tx, 1).numpy(),
                                   rtol=1e-6)


def test_queries():
    assert minidl.is_tensor(minidl.zeros(1)) and not minidl.is_tensor(np.zeros(1))
    assert minidl.numel(minidl.zeros(2, 3)) == 6
    assert minidl.is_floating_point(minidl.zeros(1)) and not minidl.is_floating_point(minidl.arange(3))
    assert minidl.get_default_dtype() == minidl.float32
    assert minidl.finfo().eps == np.finfo(np.float32).eps
    assert minidl.finfo(minidl.float16).max == 65504 and minidl.iinfo(minidl.uint8).max == 255
    with pytest.raises(TypeError):
        minidl.finfo(minidl.int64)
    with pytest.raises(TypeError):
        minidl.iinfo(minidl.float32)
    if torch is not None:
        assert float(minidl.finfo(minidl.bfloat16).eps) == torch.finfo(torch.bfloat16).eps
        assert float(minidl.finfo(minidl.bfloat16).tiny) == torch.finfo(torch.bfloat16).tiny


def test_random_creation():
    minidl.manual_seed(0)
    x = minidl.randn(2, 3, dtype="float64")
    assert minidl.randn_like(x).dtype == np.float64 and minidl.rand_like(x).shape == (2, 3)
    assert minidl.empty(2, 3).shape == (2, 3) and minidl.empty_like(x).dtype == np.float64
    r = minidl.randint_like(minidl.zeros(100, dtype="int64"), 3, 7)
    assert r.dtype == np.int64 and 3 <= r.numpy().min() and r.numpy().max() < 7
    p = minidl.randperm(10)
    assert p.dtype == np.int64 and sorted(p.tolist()) == list(range(10))
    with pytest.raises(TypeError, match="floating"):
        minidl.randn_like(minidl.arange(3))
    big = minidl.normal(2.0, 0.5, (20000,))
    assert abs(big.mean().item() - 2.0) < 0.02 and abs(big.std().item() - 0.5) < 0.02
    means = minidl.tensor([0.0, 100.0])
    draws = minidl.normal(means, minidl.tensor([1e-3, 1e-3]))
    assert draws.shape == (2,) and abs(draws[1].item() - 100) < 0.1
    with pytest.raises(ValueError, match="std"):
        minidl.normal(0.0, -1.0, (2,))
    with pytest.raises(TypeError, match="size"):
        minidl.normal(0.0, 1.0)
    b = minidl.bernoulli(minidl.tensor([0.0, 1.0, 0.0, 1.0]))
    assert b.tolist() == [0.0, 1.0, 0.0, 1.0] and b.dtype == np.float32
    half = minidl.bernoulli(minidl.zeros(10000), p=0.5)
    assert 0.45 < half.mean().item() < 0.55
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        minidl.bernoulli(minidl.tensor([1.5]))


def test_multinomial():
    minidl.manual_seed(1)
    w = minidl.tensor([[0.0, 1.0, 0.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    s = minidl.multinomial(w, 2)
    assert s.shape == (2, 2) and s.dtype == np.int64
    assert sorted(s[0].tolist()) == [1, 3] and len(set(s[1].tolist())) == 2
    counts = np.bincount(minidl.multinomial(minidl.tensor([1.0, 3.0]), 8000, replacement=True)
                         .numpy(), minlength=2)
    assert 0.72 < counts[1] / 8000 < 0.78
    with pytest.raises(ValueError, match="without replacement"):
        minidl.multinomial(w, 3)
    with pytest.raises(ValueError, match="non-negative"):
        minidl.multinomial(minidl.tensor([1.0, -1.0]), 1)


def test_in_place_random_fills():
    minidl.manual_seed(0)
    w = minidl.zeros(200, 50, dtype="float64")
    view = w[0]
    assert w.uniform_(-2, 3) is w and -2 <= w.numpy().min() and w.numpy().max() < 3
    assert view.numpy().any() and w.dtype == np.float64  # written into the array itself
    w.normal_(1.0, 0.5)
    assert abs(w.mean().item() - 1.0) < 0.02 and abs(w.std().item() - 0.5) < 0.02
    w.bernoulli_(0.25)
    assert set(np.unique(w.numpy())) <= {0.0, 1.0} and 0.22 < w.mean().item() < 0.28
    p = minidl.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="uniform_ on a leaf"):
        p.uniform_()
    with minidl.no_grad():
        p.normal_()
    assert p.numpy().any() and p._version == 1


def test_torch_utils_data_path():
    from minidl.utils.data import DataLoader, TensorDataset
    import minidl.utils.data as data_module

    assert data_module is minidl.data and DataLoader is minidl.data.DataLoader
    ds = TensorDataset(minidl.arange(6))
    assert [b[0].tolist() for b in DataLoader(ds, batch_size=4)] == [[0, 1, 2, 3], [4, 5]]


def test_tensor_introspection_as_torch():
    x = minidl.randn(3, 4, requires_grad=True)
    y = x * 2
    assert x.grad_fn is None and y.grad_fn.name() == "MulBackward"
    assert not x.is_cuda and x.get_device() == -1
    assert (x.element_size(), x.nelement(), x.ndimension()) == (4, 12, 2)
    assert x.stride() == (4, 1) and x.t().stride() == (1, 4) and x.stride(-1) == 1
    assert x.is_contiguous() and not x.t().is_contiguous()
    assert x[1].data_ptr() == x.data_ptr() + 16 and x.pin_memory() is x and not x.is_pinned()
    assert x.type() == "minidl.FloatTensor" and x.type(minidl.float64).dtype == np.float64
    assert minidl.arange(3).type() == "minidl.LongTensor"
    assert (x.byte().dtype, x.char().dtype, x.short().dtype) == (np.uint8, np.int8, np.int16)
    z = x * 3
    assert z.detach_() is z and z.is_leaf and not z.requires_grad
    with pytest.raises(RuntimeError, match="view"):
        x.detach()[0].detach_()
    if torch is not None:
        tx = torch.randn(3, 4)
        assert tx.stride() == x.stride() and tx.t().stride() == x.t().stride()
        assert tx.type() == x.type().replace("minidl", "torch")


# ---- poisson of a 0-d tensor, binomial broadcasting and NaN; FloatTensor(None) refused ---------------
def test_poisson_zero_dim_and_binomial_broadcast():
    minidl.manual_seed(0)
    d = minidl.poisson(minidl.tensor(3.0))  # was an AttributeError
    assert d.shape == () and d.dtype == np.float32 and float(d) >= 0
    b = minidl.binomial(minidl.tensor([[10.0], [4.0]]), minidl.tensor([0.0, 1.0, float("nan")]))
    assert b.shape == (2, 3)
    assert b[:, :2].tolist() == [[0.0, 10.0], [0.0, 4.0]] and np.isnan(b[:, 2].numpy()).all()
    assert minidl.binomial(minidl.tensor(5.0), minidl.tensor(1.0)).item() == 5.0


def test_legacy_type_of_none_is_refused():
    with pytest.raises(TypeError, match="NoneType"):
        minidl.FloatTensor(None)
    with pytest.raises(TypeError, match="NoneType"):
        minidl.LongTensor(None)
    assert minidl.FloatTensor([1, 2]).tolist() == [1.0, 2.0]


# ---- Tensor.device copied or unpickled; the with-device block ----------------------------------------
class _Holder(minidl.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = minidl.nn.Linear(2, 2)
        self.device = self.lin.weight.device  # a common habit in torch scripts


def test_a_copied_or_unpickled_tensor_device_keeps_type_and_index():
    import copy
    import pickle

    d = minidl.ones(2).device
    for again in (copy.copy(d), copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert again == "cpu" and again.type == "cpu" and again.index is None
        assert repr(again) == "device(type='cpu')"
    holder = _Holder()
    for again in (copy.deepcopy(holder), pickle.loads(pickle.dumps(holder))):
        assert again.device.type == "cpu"
        assert minidl.zeros(1, device=again.device).device == "cpu"


def test_with_device_block_sets_the_factories_device_and_restores_it():
    assert minidl.get_default_device() == "cpu"
    outer = minidl.device("cpu")
    with outer as entered:
        assert entered is outer
        with minidl.device(minidl.ones(1).device):
            assert minidl.zeros(2).device == "cpu"
        assert minidl.get_default_device() == "cpu"
    with pytest.raises(KeyError):
        with minidl.device("cpu"):
            raise KeyError("inside")
    assert minidl.get_default_device() == "cpu"


# ---- legacy Tensor(...) forms, set_default_tensor_type without CuPy, torch.backends' switches --------
def test_legacy_tensor_constructor_forms_as_torch():
    assert minidl.Tensor().shape == (0,) and minidl.Tensor().dtype == minidl.float32
    t = minidl.Tensor(2, 3, device="cpu")                      # was a TypeError
    assert t.shape == (2, 3) and t.device == "cpu" and t.dtype == minidl.float32
    assert minidl.Tensor(minidl.Size([4, 5])).shape == (4, 5)   # was the data [4, 5]
    assert minidl.Tensor(minidl.Size([])).shape == ()
    with pytest.raises(TypeError, match="non-negative ints"):
        minidl.Tensor(2, 3, dtype=minidl.float64)


def test_set_default_tensor_type_cuda_without_cupy_changes_nothing(monkeypatch):
    from minidl import backend
    monkeypatch.setattr(backend, "_cuda_ready", False)
    monkeypatch.setattr(backend, "_load_cupy", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="CuPy"):       # torch refuses too
            minidl.set_default_tensor_type("torch.cuda.DoubleTensor")
    assert minidl.get_default_device() == "cpu" and minidl.get_default_dtype() == minidl.float32


def test_backends_refuse_misspelt_matmul_switch_and_have_torchs_helpers():
    b = minidl.backends
    with pytest.raises(AttributeError, match="Unknown attribute allow_tf32x"):
        b.cuda.matmul.allow_tf32x = True                       # torch refuses; was ignored
    assert b.cuda.matmul.allow_fp16_reduced_precision_reduction is True
    before = b.cuda.matmul.allow_tf32
    b.cuda.matmul.allow_tf32 = before
    assert b.cuda.flash_sdp_enabled() and b.cuda.math_sdp_enabled()
    b.cuda.enable_flash_sdp(False)
    try:
        assert not b.cuda.flash_sdp_enabled() and b.cuda.mem_efficient_sdp_enabled()
    finally:
        b.cuda.enable_flash_sdp(True)
    assert b.cuda.is_built() in (True, False)
    enabled, bench = b.cudnn.enabled, b.cudnn.benchmark
    with b.cudnn.flags(enabled=False, benchmark=True):
        assert b.cudnn.enabled is False and b.cudnn.benchmark is True
    assert (b.cudnn.enabled, b.cudnn.benchmark) == (enabled, bench)
# ---- torch's legacy Tensor constructor --------------------------------------------------------

def test_tensor_class_takes_sizes_as_torch_tensor():
    t = minidl.Tensor(2, 3)
    assert t.shape == (2, 3) and t.dtype == minidl.float32 and not t.requires_grad
    assert minidl.Tensor(2, 3, 4, 5, 6).shape == (2, 3, 4, 5, 6)
    w = minidl.nn.Parameter(minidl.Tensor(4, 3))  # the custom-layer idiom
    minidl.nn.init.kaiming_uniform_(w, a=5 ** 0.5)
    assert w.shape == (4, 3) and w.requires_grad and np.isfinite(w.numpy()).all()
    # Tensor(list) keeps minidl.tensor's dtypes (ints stay int64; torch.Tensor gives floats):
    # the class is also minidl's internal constructor, which takes lists of indices
    assert minidl.Tensor([1, 2]).dtype == minidl.int64
    with pytest.raises(TypeError, match="expected non-negative ints"):
        minidl.Tensor(2, -3)
    with pytest.raises(TypeError, match="unexpected arguments"):
        minidl.Tensor(np.ones(2), False, None, None, 7)
    try:
        import torch
    except ImportError:
        return
    assert tuple(torch.Tensor(2, 3).shape) == minidl.Tensor(2, 3).shape


# ---- legacy tensor types ----------------------------------------------------------------------

def test_legacy_types_construct_check_and_cast():
    assert minidl.FloatTensor(2, 3).shape == (2, 3) and minidl.FloatTensor(2, 3).dtype == np.float32
    assert minidl.LongTensor([1, 2]).tolist() == [1, 2] and minidl.LongTensor([1, 2]).dtype == np.int64
    assert minidl.DoubleTensor(minidl.Size([4])).shape == (4,)  # a Size gives sizes
    assert minidl.FloatTensor((2, 3)).tolist() == [2.0, 3.0]  # a plain tuple gives data
    assert minidl.FloatTensor().shape == (0,)
    x = minidl.ones(2)
    assert minidl.FloatTensor(x) is x
    assert isinstance(x, minidl.FloatTensor) and not isinstance(x, minidl.LongTensor)
    assert not isinstance(x, minidl.cuda.FloatTensor) and not isinstance(np.ones(2), minidl.FloatTensor)
    assert x.type() == "minidl.FloatTensor"
    assert x.type(minidl.LongTensor).dtype == np.int64
    assert x.type("torch.IntTensor").dtype == np.int32
    assert x.type("torch.DoubleTensor").dtype == np.float64
    with pytest.raises(TypeError, match="expected a float32 tensor"):
        minidl.FloatTensor(minidl.ones(2, dtype=minidl.float64))
    with pytest.raises(TypeError, match="sequence"):
        minidl.FloatTensor(2.5)
    with pytest.raises(ValueError, match="negative size"):
        minidl.FloatTensor(-1)
    with pytest.raises(ValueError, match="invalid type"):
        x.type("torch.NoSuchTensor")
    assert repr(minidl.FloatTensor) == "<class 'minidl.FloatTensor'>"
    torch = pytest.importorskip("torch")
    for name in ("FloatTensor", "DoubleTensor", "HalfTensor", "LongTensor", "IntTensor",
                 "ShortTensor", "CharTensor", "ByteTensor", "BoolTensor", "BFloat16Tensor"):
        ours, theirs = getattr(minidl, name)([1, 0]), getattr(torch, name)([1, 0])
        assert str(theirs.dtype).replace("torch.", "") == str(ours.dtype), name
        assert theirs.type().replace("torch.", "") == ours.type().replace("minidl.", "")


# ---- float32 matmul precision and deterministic algorithms ------------------------------------

def test_float32_matmul_precision_drives_tf32_as_torch():
    torch = pytest.importorskip("torch")
    before = minidl.backends.cuda.matmul.allow_tf32
    precisions = minidl.get_float32_matmul_precision(), torch.get_float32_matmul_precision()
    try:
        for p in ("high", "medium", "highest"):
            minidl.set_float32_matmul_precision(p)
            torch.set_float32_matmul_precision(p)
            assert minidl.get_float32_matmul_precision() == torch.get_float32_matmul_precision()
            assert minidl.backends.cuda.matmul.allow_tf32 == (p != "highest")
        with pytest.raises(RuntimeError, match="Invalid precision"):
            minidl.set_float32_matmul_precision("fast")
    finally:  # both libraries as the test found them, even when an assertion failed
        minidl.set_float32_matmul_precision(precisions[0])
        torch.set_float32_matmul_precision(precisions[1])
        minidl.backends.cuda.matmul.allow_tf32 = before


def test_deterministic_algorithms_switch():
    assert not minidl.are_deterministic_algorithms_enabled()
    minidl.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert minidl.are_deterministic_algorithms_enabled()
        assert minidl.is_deterministic_algorithms_warn_only_enabled()
        assert minidl.backends.cudnn.deterministic is True
    finally:
        minidl.use_deterministic_algorithms(False)
    assert not minidl.backends.cudnn.deterministic
    with pytest.raises(TypeError, match="bool"):
        minidl.use_deterministic_algorithms("yes")
