"""The model zoo (minidl.models): torchvision's architectures with torchvision's state_dict
layout, so converted torchvision checkpoints load by name.

torchvision is not a dependency, so each family's reference is a twin built here from
torch.nn primitives with torchvision's module names. The twins are pinned to torchvision by its
published parameter counts (the ``num_params`` of each weights enum); minidl's models are
pinned to the twins by state_dict names and shapes, and by forward (and one backward) parity
on the same weights in float64.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import minidl
from minidl.models import get_model, get_model_builder, get_model_weights, list_models
from minidl.models.convert import main as convert_main
from minidl.models.weights import WEIGHTS

torch = pytest.importorskip("torch", reason="the torch twins need torch")
tnn = torch.nn

# torchvision's published parameter counts (the num_params of each *_Weights enum)
PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336, "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
}


# ---- torch twins (torchvision's module names, written from torch.nn primitives) ------------
class _TBasic(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _TBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        self.conv1 = tnn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = tnn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _TResNet(tnn.Module):
    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64):
        super().__init__()
        self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                tnn.BatchNorm2d(planes * block.expansion))
        kw = dict(groups=self.groups, base_width=self.base_width)
        layers = [block(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **kw) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


TWINS = {
    "resnet18": lambda nc=1000: _TResNet(_TBasic, [2, 2, 2, 2], nc),
    "resnet34": lambda nc=1000: _TResNet(_TBasic, [3, 4, 6, 3], nc),
    "resnet50": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 6, 3], nc),
    "resnet101": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc),
    "resnet152": lambda nc=1000: _TResNet(_TBottleneck, [3, 8, 36, 3], nc),
    "resnext50_32x4d": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 6, 3], nc, 32, 4),
    "resnext101_32x8d": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc, 32, 8),
    "resnext101_64x4d": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc, 64, 4),
    "wide_resnet50_2": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 6, 3], nc, 1, 128),
    "wide_resnet101_2": lambda nc=1000: _TResNet(_TBottleneck, [3, 4, 23, 3], nc, 1, 128),
}
# forward parity on these (input size); the rest are checked by count, names and shapes only
FORWARD = {"resnet18": 32, "resnext50_32x4d": 32}


# ---- helpers -------------------------------------------------------------------------------
def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def _randomised_state(model, seed=0):
    """``model``'s state with BatchNorm statistics and affine parameters drawn at random (so
    eval-mode BatchNorm is not the identity), in float64."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in model.state_dict().items():
        a = v.numpy()
        if a.dtype.kind != "f":
            out[k] = a
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 1.5, a.shape)
        elif k.endswith("running_mean"):
            out[k] = rng.normal(0, 0.1, a.shape)
        elif a.ndim == 1 and k.endswith("weight"):  # norm scales
            out[k] = rng.uniform(0.4, 0.8, a.shape)
        elif a.ndim == 1:
            out[k] = rng.normal(0, 0.1, a.shape)
        else:
            out[k] = a.astype(np.float64)
    return out


def _pair(name, seed=0, num_classes=1000):
    """(minidl model, torch twin) in float64 with the same randomised weights."""
    model = get_model(name, num_classes=num_classes).double()
    state = _randomised_state(model, seed)
    model.load_state_dict(state)
    twin = TWINS[name](num_classes).double()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return model, twin


def _input(size, seed=1):
    return np.random.default_rng(seed).standard_normal((2, 3, size, size))


def _assert_close(got, want, rtol=1e-9):
    assert got.shape == want.shape
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
    assert err <= rtol, f"max |diff| / max |want| = {err:.2e}"


# ---- (a) parameter counts and (b) state_dict layout ----------------------------------------
def test_every_architecture_is_covered():
    assert set(PARAMS) == set(TWINS) == set(list_models())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_and_layout_match_torchvision(name):
    model = get_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    with torch.device("meta"):  # shapes without memory
        twin = TWINS[name]()
    assert sum(p.numel() for p in twin.parameters()) == PARAMS[name]
    mine, theirs = _shapes(model.state_dict()), _shapes(twin.state_dict())
    assert list(mine) == list(theirs)  # same names in the same order
    assert mine == theirs


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward_parity_eval_float64(name):
    model, twin = _pair(name)
    model.eval()
    twin.eval()
    x = _input(FORWARD[name])
    with minidl.no_grad():
        got = model(minidl.tensor(x, dtype=minidl.float64)).numpy()
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    assert got.dtype == np.float64
    _assert_close(got, want)


@pytest.mark.parametrize("name", ["resnet18"])
def test_train_mode_backward_matches_torch(name):
    model, twin = _pair(name, num_classes=10)
    model.train()
    twin.train()
    x = _input(32, seed=2)
    w = np.random.default_rng(3).standard_normal((2, 10))
    xm = minidl.tensor(x, dtype=minidl.float64, requires_grad=True)
    (model(xm) * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    xt = torch.from_numpy(x).requires_grad_(True)
    (twin(xt) * torch.from_numpy(w)).sum().backward()
    _assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-8)
    tgrads = dict(twin.named_parameters())
    for k, p in model.named_parameters():
        _assert_close(p.grad.numpy(), tgrads[k].grad.numpy(), 1e-8)
    # train mode updated the running statistics as torch did
    tstate = twin.state_dict()
    for k, v in model.state_dict().items():
        if "running" in k:
            _assert_close(v.numpy(), tstate[k].numpy(), 1e-9)


# ---- (c) converted torch checkpoints load through weights= ---------------------------------
@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    """(twin in eval mode, path of torch.save(twin.state_dict())) in float32."""
    model, twin = _pair("resnet18", seed=5)
    twin = twin.float().eval()
    path = tmp_path_factory.mktemp("zoo") / "resnet18.pth"
    torch.save(twin.state_dict(), path)
    return twin, path


def _logits_match(model, twin, size=32):
    x = _input(size, seed=4).astype(np.float32)
    model.eval()
    with minidl.no_grad():
        got = model(minidl.tensor(x)).numpy()
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    _assert_close(got, want, 1e-4)


def test_torch_checkpoint_loads_through_weights(resnet18_checkpoint, tmp_path, monkeypatch):
    twin, path = resnet18_checkpoint
    _logits_match(get_model("resnet18", weights=path), twin)
    # converted once to .npz with the CLI, checked against the arch
    npz = tmp_path / "resnet18.npz"
    assert convert_main([str(path), str(npz), "--arch", "resnet18"]) == 0
    _logits_match(get_model_builder("resnet18")(weights=str(npz)), twin)
    # torchvision's names find its cached file under $TORCH_HOME/hub/checkpoints
    ckpt = tmp_path / "home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    os.link(path, ckpt / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    for name in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        _logits_match(get_model("resnet18", weights=name), twin)


def test_checkpoint_of_another_arch_is_refused(resnet18_checkpoint, tmp_path, capsys):
    _, path = resnet18_checkpoint
    with pytest.raises(ValueError, match=r"(?s)do not fit ResNet.*missing: layer1.2.conv1.weight"):
        get_model("resnet34", weights=path)
    assert convert_main([str(path), str(tmp_path / "x.npz"), "--arch", "resnet34"]) == 2
    assert "does not fit minidl's resnet34" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(ValueError, match="for 1000 classes.*num_classes=1000"):
        get_model("resnet18", weights=path, num_classes=10)


def test_weights_names_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="resnet101-cd907fc2.pth"):
        get_model("resnet101", weights="DEFAULT")  # DEFAULT is torchvision's best: V2
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        get_model("resnet18", weights="imagenet1k_v1")
    with pytest.raises(ValueError, match="unknown ResNet-18 weights name 'IMAGENET1K_V2'"):
        get_model("resnet18", weights="IMAGENET1K_V2")  # resnet18 has only V1
    with pytest.raises(ValueError, match="unknown ResNet-34 weights"):
        get_model("resnet34", weights="ResNet18_Weights.IMAGENET1K_V1")
    assert get_model_weights("resnet50") == {"IMAGENET1K_V1": "resnet50-0676ba61.pth",
                                             "IMAGENET1K_V2": "resnet50-11ad3fa6.pth"}
    assert set(WEIGHTS) == set(list_models())


def test_get_model_and_list_models():
    assert list_models() == sorted(list_models())
    assert "resnet18" in list_models(include="resnet*")
    assert "resnext50_32x4d" not in list_models(include="resnet*")
    assert all(not n.startswith("wide") for n in list_models(exclude="wide_*"))
    m = get_model("ResNet18", num_classes=7)
    assert m.fc.weight.shape == (7, 512)
    with pytest.raises(ValueError, match="Unknown model resnet7"):
        get_model("resnet7")
    with pytest.raises(TypeError):
        get_model("resnet18", weights=3)
