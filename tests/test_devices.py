"""Every op, a training step, modules, optimizers, data loading and checkpoints on each device.

Devices: "cpu"; "cuda" where CuPy and an NVIDIA GPU are present (skipped otherwise); and
"fake-cuda" everywhere, a numpy-backed stand-in for CuPy with the CUDA kernel bodies compiled
for the host (tests/_fake_gpu.py), so minidl's device paths (dispatch to backend/cuda.py, device
checks, moving modules and optimizer state, checkpoints, label range checks) are exercised even
without a GPU. Results on a device are compared with the CPU's and, where torch is installed,
with PyTorch's.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import backend
from minidl.data import DataLoader, TensorDataset
from minidl.models import lenet5
from minidl.testing import gradcheck

import _fake_gpu

needs_cuda = pytest.mark.skipif(
    not minidl.cuda_available(),
    reason="needs CuPy and an NVIDIA GPU (CuPy not installed or no GPU found)")

DEVICES = ["cpu", "fake-cuda", pytest.param("cuda", marks=needs_cuda)]
GPU_LIKE = ["fake-cuda", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture
def device(request, monkeypatch):
    """The device name to pass to minidl ('cpu' or 'cuda'); "fake-cuda" installs the stand-in."""
    if request.param == "fake-cuda":
        _fake_gpu.install(monkeypatch, request.getfixturevalue("host_kernels"))
        minidl.manual_seed(1234)
        return "cuda"
    return request.param


def _on(device):
    return pytest.mark.parametrize("device", device, indirect=True)


def _host(t):
    return None if t is None else t.numpy()


# ---- every op, forward and backward, against the CPU and PyTorch ---------------------------
class Const:
    """An input without gradient (integer targets, indices)."""

    def __init__(self, array):
        self.array = np.asarray(array)


def distinct(*shape):
    """No ties (max, pooling, relu kinks stay put between devices)."""
    n = int(np.prod(shape))
    return lambda rng: ((rng.permutation(n) - n / 2) * 0.1).reshape(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def _inputs(specs, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        if isinstance(spec, Const):
            out.append((spec.array, False))
        elif callable(spec):
            out.append((spec(rng).astype(np.float32), True))
        else:
            out.append((rng.standard_normal(spec).astype(np.float32), True))
    return out


class _Namespace:
    def __init__(self, *modules):
        self.modules = modules

    def __getattr__(self, name):
        for m in self.modules:
            if hasattr(m, name):
                return getattr(m, name)
        raise AttributeError(name)


IDX = np.array([0, 2, 2, 1])  # a repeated index: its gradient must accumulate
LABELS = np.array([1, 0, 3, 3, 2])

OPS = [
    # today's fused paths: numba kernels on the CPU, CUDA kernels or array code on the devices
    ("gelu_both_forms", lambda F, a: F.gelu(a) + F.gelu(a, approximate="tanh"), [(3, 5)]),
    ("silu_sigmoid", lambda F, a: F.silu(a) + F.sigmoid(a), [(3, 5)]),
    ("layer_norm", lambda F, a, w, b: F.layer_norm(a, (5,), w, b), [(3, 4, 5), (5,), (5,)]),
    ("softmax_last_dim", lambda F, a: F.softmax(a, dim=-1), [(3, 7)]),
    ("sdpa_causal", lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     [(2, 3, 4, 5), (2, 3, 4, 5), (2, 3, 4, 6)]),
    ("add_broadcast", lambda F, a, b: a + b, [(3, 4), (4,)]),
    ("sub_mul_div", lambda F, a, b: (a - b) * a / b, [(2, 3), positive(2, 3)]),
    ("scalars", lambda F, a: 2.0 / (a * 3.0 + 10.0) - 1, [(5,)]),
    ("neg_pow", lambda F, a: -(a ** 3), [(4,)]),
    ("pow_tensor", lambda F, a, b: a ** b, [positive(3, 2), (3, 2)]),
    ("exp_log_sqrt", lambda F, a: a.exp() + a.log() + a.sqrt(), [positive(6)]),
    ("tanh_abs", lambda F, a: a.tanh() * abs(a), [distinct(2, 5)]),
    ("matmul", lambda F, a, b: a @ b, [(3, 4), (4, 5)]),
    ("matmul_batched", lambda F, a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
    ("matmul_vec", lambda F, a, b: a @ b, [(4,), (4, 3)]),
    ("sum_mean", lambda F, a: a.sum(1) + a.mean(dim=(0, 1), keepdim=True).sum(), [(3, 4, 2)]),
    ("max_dim", lambda F, a: a.max(1).values + a.amax(0).sum(), [distinct(3, 4)]),
    ("shape_ops", lambda F, a: a.reshape(4, 6).T.permute(1, 0).flatten().unsqueeze(0)
     .squeeze(0)[3:9], [(2, 3, 4)]),
    ("transpose", lambda F, a: a.transpose(0, 2) * 1.5, [(2, 3, 4)]),
    ("getitem_array", lambda F, a, i: a[i] * 2, [(3, 4), Const(IDX)]),
    ("cat_stack", lambda F, a, b: F.cat([a, b], 1).sum() + F.stack([a, b], 0), [(2, 3), (2, 3)]),
    ("linear", lambda F, x, w, b: F.linear(x, w, b), [(4, 5), (3, 5), (3,)]),
    ("conv2d", lambda F, x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
     [(2, 3, 7, 6), (4, 3, 3, 3), (4,)]),
    ("conv2d_1x1", lambda F, x, w: F.conv2d(x, w), [(2, 3, 4, 4), (5, 3, 1, 1)]),
    ("max_pool2d", lambda F, x: F.max_pool2d(x, 2), [distinct(2, 3, 6, 6)]),
    ("max_pool2d_pad", lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1),
     [distinct(1, 2, 7, 7)]),
    ("avg_pool2d", lambda F, x: F.avg_pool2d(x, 2, stride=1, padding=1), [(2, 2, 4, 5)]),
    ("adaptive_avg_pool", lambda F, x: F.adaptive_avg_pool2d(x, 1) + F.adaptive_avg_pool2d(x, 3)
     .mean(), [(2, 3, 7, 5)]),
    ("relu_sigmoid", lambda F, x: F.relu(x) + F.sigmoid(x), [distinct(3, 4)]),
    ("softmax", lambda F, x: F.softmax(x, 1) * F.log_softmax(x, 0), [(3, 5)]),
    ("cross_entropy", lambda F, x, t: F.cross_entropy(x, t), [(5, 4), Const(LABELS)]),
    ("cross_entropy_none", lambda F, x, t: F.cross_entropy(x, t, reduction="none"),
     [(5, 4), Const(LABELS)]),
    ("nll_loss", lambda F, x, t: F.nll_loss(F.log_softmax(x, 1), t), [(5, 4), Const(LABELS)]),
    ("mse_loss", lambda F, a, b: F.mse_loss(a, b), [(3, 4), (3, 4)]),
    ("batch_norm_train", lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
     [(4, 3, 2, 2), (3,), (3,)]),
]


def _run_op(fn, built, device, namespace):
    ins = [minidl.tensor(a, requires_grad=g, device=device) for a, g in built]
    out = fn(namespace, *ins)
    proj = np.random.default_rng(7).standard_normal(out.shape).astype(np.float32)
    (out * minidl.tensor(proj, device=device)).sum().backward()
    return out, [x.grad if g else None for x, (_, g) in zip(ins, built)], proj


@_on(DEVICES)
@pytest.mark.parametrize("name,fn,specs", OPS, ids=[o[0] for o in OPS])
def test_op_on_device_matches_cpu_and_torch(device, name, fn, specs):
    built = _inputs(specs)
    namespace = _Namespace(F, minidl)
    out, grads, proj = _run_op(fn, built, device, namespace)
    assert out.device == device and out.dtype == np.float32
    for g in grads:
        assert g is None or (g.device == device and g.dtype == np.float32)
    if device != "cpu":
        ref_out, ref_grads, _ = _run_op(fn, built, "cpu", namespace)
        np.testing.assert_allclose(out.numpy(), ref_out.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name}: forward on {device} vs cpu")
        for k, (g, r) in enumerate(zip(grads, ref_grads)):
            if r is not None:
                np.testing.assert_allclose(_host(g), _host(r), rtol=1e-4, atol=1e-5,
                                           err_msg=f"{name}: gradient {k} on {device} vs cpu")
    torch = sys.modules.get("torch") or _try_torch()
    if torch is None:
        return
    t_ins = [torch.tensor(a, requires_grad=g) for a, g in built]
    t_out = fn(_Namespace(torch.nn.functional, torch), *t_ins)
    (t_out * torch.tensor(proj)).sum().backward()
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=f"{name}: forward on {device} vs torch")
    for k, (g, t) in enumerate(zip(grads, t_ins)):
        if g is not None:
            np.testing.assert_allclose(_host(g), t.grad.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name}: gradient {k} on {device} vs torch")


def _try_torch():
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


# ---- gradient checks in float64 on the device ---------------------------------------------
def _leaf(shape, device, seed=0, values=None):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape) if values is None else values
    return minidl.tensor(a, requires_grad=True, dtype="float64", device=device)


def _distinct64(shape, seed=0):
    n = int(np.prod(shape))
    return ((np.random.default_rng(seed).permutation(n) - n / 2) * 0.1).reshape(shape)


GRADCHECKS = [
    ("conv2d", lambda d: ((lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1)),
                          [_leaf((2, 2, 5, 5), d), _leaf((3, 2, 3, 3), d, 1), _leaf((3,), d, 2)])),
    ("max_pool2d", lambda d: ((lambda x: F.max_pool2d(x, 3, stride=2, padding=1)),
                              [_leaf((1, 2, 5, 5), d, values=_distinct64((1, 2, 5, 5)))])),
    ("linear_relu", lambda d: ((lambda x, w: F.relu(F.linear(x, w))),
                               [_leaf((3, 4), d), _leaf((5, 4), d, 1)])),
    ("cross_entropy", lambda d: ((lambda x: F.cross_entropy(
        x, minidl.tensor(LABELS, device=d))), [_leaf((5, 4), d)])),
    ("batch_norm", lambda d: ((lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)),
                              [_leaf((4, 3, 2, 2), d), _leaf((3,), d, 1), _leaf((3,), d, 2)])),
    ("getitem_softmax", lambda d: ((lambda x: F.softmax(x[minidl.tensor(IDX, device=d)], 1)),
                                   [_leaf((3, 4), d)])),
]


@_on(DEVICES)
@pytest.mark.parametrize("name,make", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_on_device(device, name, make):
    fn, inputs = make(device)
    assert all(x.device == device for x in inputs)
    assert gradcheck(fn, inputs)


# ---- a LeNet-5 training step ----------------------------------------------------------------
def _lenet_steps(device, state, x, y, steps=2):
    model = lenet5().to(device)
    model.load_state_dict(state)
    opt = minidl.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                           nesterov=True)
    xb, yb = minidl.tensor(x, device=device), minidl.tensor(y, device=device)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


@_on(DEVICES)
def test_lenet5_training_step_matches_cpu(device):
    minidl.manual_seed(0)
    state = {k: v.numpy() for k, v in lenet5().state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    model, losses = _lenet_steps(device, state, x, y)
    assert all(p.device == device for p in model.parameters())
    ref, ref_losses = _lenet_steps("cpu", state, x, y)
    # float32 GEMMs on cuBLAS and on the CPU's BLAS round differently: agreement, not identity
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    assert losses[1] < losses[0]
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


@_on(GPU_LIKE)
def test_resnet50_train_and_eval_on_the_device_match_cpu(device):
    """Every ResNet-50 kernel on the device path inside the real network: fused BatchNorm(+ReLU)
    forward and backward, add+ReLU, im2col with the multiply-and-shift indexing, the 1x1
    weight-gradient layouts, eval-mode affine; in float64 against the same step on the CPU."""
    from minidl.models import resnet50

    minidl.manual_seed(0)
    state = {k: v.numpy() for k, v in resnet50(num_classes=10).state_dict().items()}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 40, 48))
    y = rng.integers(0, 10, 2)
    results = []
    for dev in (device, "cpu"):
        model = resnet50(num_classes=10)
        model.load_state_dict(state)
        model = model.double().to(dev)
        loss = F.cross_entropy(model(minidl.tensor(x, dtype="float64", device=dev)),
                               minidl.tensor(y, device=dev))
        loss.backward()
        grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
        running = model.state_dict()["layer2.0.bn2.running_var"].numpy()
        with minidl.no_grad():
            logits = model.eval()(minidl.tensor(x, dtype="float64", device=dev)).numpy()
        # one training batch counted by every BatchNorm (on CUDA inside its kernel), none in eval
        counts = {k: int(v.item()) for k, v in model.state_dict().items()
                  if k.endswith("num_batches_tracked")}
        assert len(counts) == 53 and set(counts.values()) == {1}, dev
        results.append((loss.item(), grads, running, logits))
    (loss, grads, running, logits), (loss0, grads0, running0, logits0) = results
    assert np.isclose(loss, loss0, rtol=1e-12)
    for name, g in grads.items():  # relative to the tensor's largest entry, as sums round
        err = np.abs(g - grads0[name]).max() / np.abs(grads0[name]).max()
        assert err <= 1e-9, f"{name}: gradient off by {err:.1e} relative to its max"
    np.testing.assert_allclose(running, running0, rtol=1e-12)
    np.testing.assert_allclose(logits, logits0, rtol=1e-9, atol=1e-12)


# ---- modules, optimizers, checkpoints, data ---------------------------------------------------
def _small_net():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3))


@_on(DEVICES)
def test_module_to_keeps_parameter_identity_and_the_optimizer_follows(device):
    minidl.manual_seed(0)
    net = _small_net()
    ref = _small_net()
    ref.load_state_dict(net.state_dict())
    params = list(net.parameters())
    opt = minidl.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    ref_opt = minidl.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(0).standard_normal((4, 1, 6, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 1])

    def step(model, optimizer, dev):
        loss = F.cross_entropy(model(minidl.tensor(x, device=dev)), minidl.tensor(y, device=dev))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(net, opt, "cpu")  # momentum buffers now exist on the CPU
    step(ref, ref_opt, "cpu")
    assert net.to(device) is net
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(t.device == device for t in list(net.parameters()) + list(net.buffers()))
    step(net, opt, device)  # the optimizer still holds the moved parameters, buffers follow
    step(ref, ref_opt, "cpu")
    for buf in (s["momentum_buffer"] for s in opt.state.values()):
        assert backend.device_of(buf) == device
    for (name, p), (_, q) in zip(net.state_dict().items(), ref.state_dict().items()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    net.to("cpu")
    assert all(t.device == "cpu" for t in list(net.parameters()) + list(net.buffers()))


@_on(DEVICES)
def test_checkpoint_saved_on_one_device_loads_on_the_other(device, tmp_path):
    minidl.manual_seed(0)
    net = _small_net().to(device)
    net(minidl.randn(2, 1, 6, 6).to(device))  # BatchNorm running stats move off their init
    path = tmp_path / "ckpt.npz"
    minidl.save(net.state_dict(), path)
    saved = minidl.load(path)
    # Tensors come back as Tensors, on the CPU unless map_location says otherwise
    assert all(isinstance(v, minidl.Tensor) and v.device == "cpu" for v in saved.values())
    assert all(v.device == device for v in minidl.load(path, map_location=device).values())

    on_cpu = _small_net()
    on_cpu.load_state_dict(saved)
    for (k, a), (_, b) in zip(net.state_dict().items(), on_cpu.state_dict().items()):
        assert b.device == "cpu"
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)

    back = _small_net().to(device)
    params = [id(p) for p in back.parameters()]
    back.load_state_dict(on_cpu.state_dict())  # CPU tensors copied onto the model's device
    assert [id(p) for p in back.parameters()] == params
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert b.device == device
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


@_on(DEVICES)
def test_dataloader_moves_each_batch_once_and_labels_carry_their_range(device):
    x = np.random.default_rng(0).standard_normal((10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10) % 3
    loader = DataLoader(TensorDataset(x, y), batch_size=4, device=device)
    seen = []
    for xb, yb in loader:
        assert xb.device == yb.device == device
        assert xb.dtype == np.float32 and yb.dtype == np.int64
        if device == "cuda":  # range measured on the host: no read-back per step
            assert yb._host_range[0] is yb.data
            assert yb._host_range[1:] == (int(yb.numpy().min()), int(yb.numpy().max()))
        seen.append(yb.numpy())
    np.testing.assert_array_equal(np.concatenate(seen), y)


@_on(DEVICES)
def test_cross_entropy_rejects_out_of_range_labels_on_the_device(device):
    logits = minidl.tensor(np.zeros((3, 4)), device=device)
    loader = DataLoader(TensorDataset(np.zeros((3, 1)), np.array([0, 4, 1])), batch_size=3,
                        device=device)
    _, y = next(iter(loader))
    with pytest.raises(ValueError, match="target class 4 is out of range for 4 classes"):
        F.cross_entropy(logits, y)
    # labels made on the device carry no host range: checked by reading them back
    made_there = minidl.tensor([0, 1, 2], device=device) - 1
    assert made_there.device == device
    with pytest.raises(ValueError, match="target class -1 is out of range"):
        F.cross_entropy(logits, made_there)
    # a label array changed in place after the copy: the remembered range no longer applies
    y2 = minidl.tensor(np.array([0, 1, 2]), device=device)
    y2.data = y2.data + 2
    with pytest.raises(ValueError, match="target class 4 is out of range"):
        F.cross_entropy(logits, y2)


@_on(GPU_LIKE)
def test_tensor_basics_on_the_device(device):
    t = minidl.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True, device=device)
    assert t.device == device and t.dtype == np.float32
    assert "device='cuda:0'" in repr(t) and "requires_grad=True" in repr(t)
    assert isinstance(t.numpy(), np.ndarray)
    assert t.sum().item() == 10.0 and isinstance(t.sum().item(), float)
    # float64 host arrays stay float64 on the device, as on the CPU (gradient checks need it)
    assert minidl.Tensor(np.ones(2), device=device).dtype == np.float64
    assert minidl.tensor(np.arange(3), device=device).dtype == np.int64
    # moving is differentiable: the gradient comes back to the device the leaf is on
    (t.to("cpu") * 2).sum().backward()
    assert t.grad.device == device
    np.testing.assert_array_equal(t.grad.numpy(), np.full((2, 2), 2.0))
    values, indices = t.max(dim=1)
    assert values.device == indices.device == device and indices.dtype == np.int64
    assert t.argmax().device == device and int(t.argmax().item()) == 3


@_on(GPU_LIKE)
def test_mixing_devices_in_one_op_names_both(device):
    a = minidl.tensor([1.0, 2.0])
    b = minidl.tensor([1.0, 2.0], device=device)
    for op in (lambda: a + b, lambda: b * a, lambda: a @ b,
               lambda: F.linear(a.reshape(1, 2), b.reshape(1, 2)),
               lambda: F.cross_entropy(b.reshape(1, 2), minidl.tensor([1]))):
        with pytest.raises(ValueError) as err:
            op()
        assert "cpu" in str(err.value) and "cuda" in str(err.value), str(err.value)
    bn = nn.BatchNorm2d(2)  # running stats left on the CPU
    with pytest.raises(ValueError, match="running_mean is on cpu, input on cuda"):
        bn(minidl.randn(2, 2, 3, 3).to(device))


@_on(GPU_LIKE)
def test_mnist_example_trains_on_the_device(device, tmp_path, monkeypatch, capsys):
    from minidl.datasets import mnist as mnist_module
    from minidl.examples import mnist as example

    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(mnist_module, "MIRRORS", [])
    metrics = tmp_path / "m.json"
    rc = example.main(["--model", "mlp", "--epochs", "1", "--no-progress", "--device", device,
                       "--metrics-json", str(metrics), "--save", str(tmp_path / "c.npz")])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ") and float(last.split(": ")[1]) > 0.8
    assert json.loads(metrics.read_text())["device"] == "cuda"


# ---- asking for CUDA where there is none -------------------------------------------------------
def _no_cuda_expectation():
    if minidl.cuda_available():
        pytest.skip("CuPy and a GPU are present: the missing-CUDA error cannot happen here")
    try:
        importlib.import_module("cupy")
    except Exception:
        return ["needs CuPy", "pip install minidl[cuda13]", "cuda12"]
    return ["needs an NVIDIA GPU"]


def test_missing_cuda_is_one_clear_runtime_error():
    expected = _no_cuda_expectation()
    for make in (lambda: minidl.tensor([1.0], device="cuda"),
                 lambda: minidl.zeros(2, device="cuda"),
                 lambda: minidl.tensor([1.0]).to("cuda")):
        with pytest.raises(RuntimeError) as err:
            make()
        for words in expected:
            assert words in str(err.value)
    net = _small_net()
    before = [p.data for p in net.parameters()]
    with pytest.raises(RuntimeError, match=expected[0]):
        net.to("cuda")
    assert all(p.data is b for p, b in zip(net.parameters(), before))  # nothing half-moved


def test_mnist_cli_without_cuda_prints_one_error_line():
    expected = _no_cuda_expectation()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "minidl.examples.mnist", "--device", "cuda"],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for words in expected:
        assert words in lines[0]


def test_cpu_device_with_an_index_is_the_cpu_as_in_torch():
    t = minidl.ones(2)
    assert t.to("cpu:0") is t or t.to("cpu:0").device == "cpu"
    assert minidl.zeros(2, device="cpu:0").device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        t.to("cpu:x")


# ---- grid_sample, ctc_loss, embedding_bag, rrelu and the pooling layers on the fake GPU ----------
FAKE_GPU = [
    ("grid_sample", lambda F, x, g: F.grid_sample(x, g, "bilinear", "reflection", False)
     + F.grid_sample(x, g, "bicubic", "zeros", True), [(1, 2, 4, 5), (1, 3, 3, 2)]),
    ("grid_sample_3d", lambda F, x, g: F.grid_sample(x, g, "bilinear", "border", True),
     [(1, 2, 3, 4, 3), (1, 2, 2, 2, 3)]),
    ("affine_grid", lambda F, t: F.affine_grid(t, (1, 1, 3, 4), False), [(1, 2, 3)]),
    ("embedding_bag", lambda F, w: F.embedding_bag(
        minidl.tensor([1, 2, 4, 5, 4], device=w.device), w,
        minidl.tensor([0, 2], device=w.device), mode="max")
     + F.embedding_bag(minidl.tensor([[1, 2], [4, 4]], device=w.device), w, mode="sum"), [(6, 3)]),
    ("pool_layers", lambda F, x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)
     + F.rrelu(x) + F.channel_shuffle(x, 2) * 2 + F.interpolate(F.lp_pool2d(x, 2, 2), (4, 4)),
     [(1, 4, 4, 4)]),
    ("losses", lambda F, x: F.multi_margin_loss(x, minidl.tensor([0, 2], device=x.device))
     + F.multilabel_margin_loss(x, minidl.tensor([[1, -1, 0], [2, 0, -1]], device=x.device))
     + F.ctc_loss(x.reshape(2, 1, 3).log_softmax(2), minidl.tensor([[1]], device=x.device),
                  [2], [1]), [(2, 3)]),
]


def _run_on(fn, arrays, device):
    import _fake_gpu

    return _fake_gpu.forward_backward(fn, F, arrays, device)


@pytest.mark.skipif(_try_torch() is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("name,fn,shapes", FAKE_GPU, ids=[c[0] for c in FAKE_GPU])
def test_fake_gpu_matches_cpu(name, fn, shapes, monkeypatch, host_kernels):
    import _fake_gpu

    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-1.2, 1.2, s).astype(np.float32) for s in shapes]
    want_y, want_g = _run_on(fn, arrays, "cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    got_y, got_g = _run_on(fn, arrays, "cuda")
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_g, want_g):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ---- the ops fixed by an audit, on the fake GPU --------------------------------------------------
@pytest.mark.skipif(_try_torch() is None, reason="PyTorch is not installed")
def test_fixes_run_on_the_fake_gpu(monkeypatch, host_kernels):
    """frexp's new Function, beta=0's ignored input, masked_scatter on 0-d tensors and the
    checkpoint boundary, on the numpy-backed stand-in GPU, give the CPU's numbers."""
    from minidl.utils.checkpoint import checkpoint as mcp

    def run(device):
        x = minidl.tensor([1e-40, 3.0, -0.75], requires_grad=True, device=device)
        m, e = minidl.frexp(x)
        inp = minidl.tensor([[float("nan")] * 4], requires_grad=True, device=device)
        o = minidl.addr(inp, minidl.ones(3, device=device), minidl.ones(4, device=device), beta=0)
        s = minidl.tensor(1.5, requires_grad=True, device=device)
        ms = minidl.masked_scatter(s, minidl.tensor(True, device=device),
                                   minidl.tensor([4.0, 5.0], device=device))
        w = minidl.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True, device=device)
        h = (x[:2] @ w).sin()
        c = mcp(lambda a: (a @ w).tanh() * h.sum(), x[:2] * 1, use_reentrant=False)
        (m.sum() + o.sum() + ms * 2 + c.sum()).backward()
        assert e.device == device
        sh = minidl.tensor([1, -8, 3], device=device) << minidl.tensor([1, 64, 2], device=device)
        rn = minidl.renorm(w * 3, 2, 0, 1.0)
        return [t.numpy() for t in (m, e, o, ms, c, x.grad, inp.grad, s.grad, w.grad, sh, rn)]

    want = run("cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    for a, b in zip(run("cuda"), want):
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)


# ---- the encoder's nested path and the attention fast path on the fake GPU -----------------------
@pytest.mark.skipif(_try_torch() is None, reason="PyTorch is not installed")
def test_inference_paths_on_a_fake_gpu_match_the_cpu(monkeypatch, tmp_path):
    """The encoder's nested-tensor zeros and the fast path's NaN come out the same on the
    (numpy-backed) GPU stand-in as on the CPU; logspace and as_tensor place their results."""
    import _fake_gpu
    lib = _fake_gpu.build_host_kernels(tmp_path)
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    minidl.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2).eval()
    x = np.random.default_rng(9).standard_normal((3, 5, 8)).astype(np.float32)
    kpm = np.zeros((3, 5), bool)
    kpm[0, 3:] = kpm[1, :] = True  # sequence 1: all padding
    with minidl.no_grad():
        cpu = enc(minidl.tensor(x), src_key_padding_mask=minidl.tensor(kpm)).numpy()
    assert (cpu[0, 3:] == 0).all() and (cpu[1] == 0).all() and not np.isnan(cpu).any()
    _fake_gpu.install(monkeypatch, lib)
    enc.to("cuda")
    with minidl.no_grad():
        out = enc(minidl.tensor(x, device="cuda"),
                  src_key_padding_mask=minidl.tensor(kpm, device="cuda"))
    assert out.device == "cuda"
    np.testing.assert_allclose(out.numpy(), cpu, rtol=1e-5, atol=1e-5)
    layer = enc.layers[0]
    with minidl.no_grad():
        y = layer(minidl.tensor(x, device="cuda"),
                  src_key_padding_mask=minidl.tensor(kpm, device="cuda"))
    assert np.isnan(y.numpy()[1]).all() and not np.isnan(y.numpy()[0]).any()
    assert minidl.logspace(0, 2, 3, device="cuda").device == "cuda"
    assert minidl.as_tensor(np.zeros(2), device="cuda").device == "cuda"
