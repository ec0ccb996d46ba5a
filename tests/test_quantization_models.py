"""Whole vision models quantized the torchvision way (fuse, prepare with the x86/fbgemm
qconfig, calibrate, convert; or fuse_modules_qat, prepare_qat, train, convert), in minidl and
in torch 2.13 from the same float weights: a small ResNet (torchvision's quantizable
BasicBlock: the residual add_relu a FloatFunctional, max pooling, adaptive average pooling,
flatten) and a small MobileNetV2 (Conv2dNormActivation blocks with ReLU, as torchvision's
quantizable MobileNetV2 after ``_replace_relu``; inverted residuals with a FloatFunctional
add; dropout before the classifier).

The models are written once, over a namespace (minidl's or torch's). Parity: with torch's
converted state dict loaded, every layer's integers are torch's (bit for bit: fbgemm's
requantization is deterministic float32 arithmetic minidl repeats); calibrated apart, the
float layers' float32 sums differ from torch's in the last bits, which can move an observed
range, and so a scale, by an ulp and a rare rounding by a step, which the next layers carry
on (tests/test_quantization_conv.py measures the same on one block)."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.ao import quantization as tq
from minidl.ao.nn import intrinsic as nni
from minidl.ao.nn import quantized as nnq
from minidl.ao.nn.intrinsic import qat as nniqat
from minidl.ao.nn.intrinsic import quantized as nniq

from _fbgemm_saturation import (HAS_VNNI, INT16_MAX, assert_cannot_saturate, requires_vnni,
                                worst_pairs)
from helpers import use_quantized_engine

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*quantized tensor creation.*:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*reduce_range will be deprecated.*:UserWarning"),
              pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")]


def _torch():
    torch = pytest.importorskip("torch")  # the parity tests only
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch has no fbgemm engine here")
    use_quantized_engine(torch, "fbgemm")
    return torch


class _NS:
    """The names a model is written with: minidl's or torch's."""

    def __init__(self, framework):
        if framework == "torch":
            import torch
            import torch.ao.nn.quantized as functional

            self.nn, self.tq, self.flatten = torch.nn, torch.ao.quantization, torch.flatten
            self.F = torch.nn.functional
        else:
            functional = nnq
            self.nn, self.tq, self.flatten = nn, tq, minidl.flatten
            self.F = nn.functional
        self.FloatFunctional = functional.FloatFunctional


# ---- a small ResNet: torchvision's QuantizableResNet with BasicBlocks -----------------------
def _resnet(ns, widths=(8, 16), num_classes=5):
    n = ns.nn

    class BasicBlock(n.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1 = n.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1, self.relu = n.BatchNorm2d(planes), n.ReLU()
            self.conv2 = n.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = n.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = n.Sequential(n.Conv2d(inplanes, planes, 1, stride, bias=False),
                                               n.BatchNorm2d(planes))
            self.add_relu = ns.FloatFunctional()

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.add_relu.add_relu(out, identity)

        def fuse_model(self, fuse):
            fuse(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]], inplace=True)
            if self.downsample is not None:
                fuse(self.downsample, ["0", "1"], inplace=True)

    class ResNet(n.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = ns.tq.QuantStub(), ns.tq.DeQuantStub()
            self.conv1 = n.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.bn1, self.relu = n.BatchNorm2d(widths[0]), n.ReLU()
            self.maxpool = n.MaxPool2d(3, 2, 1)
            self.layer1 = n.Sequential(BasicBlock(widths[0], widths[0]),
                                       BasicBlock(widths[0], widths[0]))
            self.layer2 = n.Sequential(BasicBlock(widths[0], widths[1], 2))
            self.avgpool = n.AdaptiveAvgPool2d((1, 1))
            self.fc = n.Linear(widths[1], num_classes)

        def forward(self, x):
            x = self.quant(x)
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer2(self.layer1(x))
            x = ns.flatten(self.avgpool(x), 1)
            return self.dequant(self.fc(x))

        def fuse_model(self, is_qat=False):
            fuse = ns.tq.fuse_modules_qat if is_qat else ns.tq.fuse_modules
            fuse(self, ["conv1", "bn1", "relu"], inplace=True)
            for m in self.modules():
                if type(m) is BasicBlock:
                    m.fuse_model(fuse)

    return ResNet()


# ---- a small MobileNetV2: torchvision's QuantizableMobileNetV2 ------------------------------
def _mobilenet_v2(ns, num_classes=5):
    n = ns.nn

    def conv_bn_relu(inp, oup, kernel=3, stride=1, groups=1):
        # torchvision's Conv2dNormActivation: Sequential(conv, bn, act)
        return n.Sequential(n.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups,
                                     bias=False), n.BatchNorm2d(oup), n.ReLU())

    class InvertedResidual(n.Module):
        def __init__(self, inp, oup, stride, expand_ratio):
            super().__init__()
            hidden = inp * expand_ratio
            self.use_res_connect = stride == 1 and inp == oup
            layers = [conv_bn_relu(inp, hidden, 1)] if expand_ratio != 1 else []
            layers += [conv_bn_relu(hidden, hidden, 3, stride, hidden),
                       n.Conv2d(hidden, oup, 1, 1, 0, bias=False), n.BatchNorm2d(oup)]
            self.conv = n.Sequential(*layers)
            self.skip_add = ns.FloatFunctional()

        def forward(self, x):
            return self.skip_add.add(x, self.conv(x)) if self.use_res_connect else self.conv(x)

    class MobileNetV2(n.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = ns.tq.QuantStub(), ns.tq.DeQuantStub()
            self.features = n.Sequential(
                conv_bn_relu(3, 8, 3, 2), InvertedResidual(8, 8, 1, 1),
                InvertedResidual(8, 12, 2, 4), InvertedResidual(12, 12, 1, 4),
                conv_bn_relu(12, 32, 1))
            self.classifier = n.Sequential(n.Dropout(0.2), n.Linear(32, num_classes))

        def forward(self, x):
            x = self.features(self.quant(x))
            x = ns.flatten(ns.F.adaptive_avg_pool2d(x, (1, 1)), 1)
            return self.dequant(self.classifier(x))

        def fuse_model(self, is_qat=False):
            fuse = ns.tq.fuse_modules_qat if is_qat else ns.tq.fuse_modules
            for m in self.modules():
                if type(m) is n.Sequential and len(m) == 3 and type(m[2]) is n.ReLU:
                    fuse(m, ["0", "1", "2"], inplace=True)
                if type(m) is InvertedResidual:
                    for i in range(len(m.conv)):
                        if type(m.conv[i]) is n.Conv2d:
                            fuse(m.conv, [str(i), str(i + 1)], inplace=True)

    return MobileNetV2()


# ---- a small ShuffleNetV2: torchvision's QuantizableShuffleNetV2 -----------------------------
def _shufflenet_v2(ns, stages=(16, 32), num_classes=5):
    n = ns.nn

    def channel_shuffle(x, groups):
        b, c, h, w = x.shape
        x = x.view(b, groups, c // groups, h, w)
        return x.transpose(1, 2).contiguous().view(b, -1, h, w)

    class InvertedResidual(n.Module):
        def __init__(self, inp, oup, stride):
            super().__init__()
            self.stride = stride
            branch = oup // 2
            if stride > 1:
                self.branch1 = n.Sequential(
                    n.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), n.BatchNorm2d(inp),
                    n.Conv2d(inp, branch, 1, bias=False), n.BatchNorm2d(branch), n.ReLU())
            else:
                self.branch1 = n.Sequential()
            self.branch2 = n.Sequential(
                n.Conv2d(inp if stride > 1 else branch, branch, 1, bias=False),
                n.BatchNorm2d(branch), n.ReLU(),
                n.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False),
                n.BatchNorm2d(branch),
                n.Conv2d(branch, branch, 1, bias=False), n.BatchNorm2d(branch), n.ReLU())
            self.cat = ns.FloatFunctional()

        def forward(self, x):
            if self.stride == 1:
                x1, x2 = x.chunk(2, dim=1)
                out = self.cat.cat([x1, self.branch2(x2)], dim=1)
            else:
                out = self.cat.cat([self.branch1(x), self.branch2(x)], dim=1)
            return channel_shuffle(out, 2)

    class ShuffleNetV2(n.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = ns.tq.QuantStub(), ns.tq.DeQuantStub()
            self.conv1 = n.Sequential(n.Conv2d(3, 8, 3, 2, 1, bias=False), n.BatchNorm2d(8),
                                      n.ReLU())
            self.maxpool = n.MaxPool2d(3, 2, 1)
            self.stage2 = n.Sequential(InvertedResidual(8, stages[0], 2),
                                       InvertedResidual(stages[0], stages[0], 1))
            self.stage3 = n.Sequential(InvertedResidual(stages[0], stages[1], 2),
                                       InvertedResidual(stages[1], stages[1], 1))
            self.conv5 = n.Sequential(n.Conv2d(stages[1], 32, 1, bias=False), n.BatchNorm2d(32),
                                      n.ReLU())
            self.fc = n.Linear(32, num_classes)

        def forward(self, x):
            x = self.maxpool(self.conv1(self.quant(x)))
            x = self.conv5(self.stage3(self.stage2(x)))
            return self.dequant(self.fc(x.mean([2, 3])))  # the global pool

        def fuse_model(self, is_qat=False):
            fuse = ns.tq.fuse_modules_qat if is_qat else ns.tq.fuse_modules
            for name in ("conv1", "conv5"):
                fuse(getattr(self, name), ["0", "1", "2"], inplace=True)
            for m in self.modules():
                if type(m) is InvertedResidual:
                    if len(m.branch1._modules) > 0:
                        fuse(m.branch1, [["0", "1"], ["2", "3", "4"]], inplace=True)
                    fuse(m.branch2, [["0", "1", "2"], ["3", "4"], ["5", "6", "7"]], inplace=True)

    return ShuffleNetV2()


# ---- a small MobileNetV3: torchvision's QuantizableMobileNetV3 -----------------------------
def _mobilenet_v3(ns, num_classes=5):
    n = ns.nn

    class ConvNormActivation(n.Sequential):  # torchvision's Conv2dNormActivation
        def __init__(self, inp, oup, kernel, stride=1, groups=1, act=None):
            layers = [n.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups,
                               bias=False), n.BatchNorm2d(oup)]
            super().__init__(*layers + ([act()] if act is not None else []))

    class SqueezeExcitation(n.Module):  # QuantizableSqueezeExcitation
        def __init__(self, channels, squeeze):
            super().__init__()
            self.avgpool = n.AdaptiveAvgPool2d(1)
            self.fc1, self.fc2 = n.Conv2d(channels, squeeze, 1), n.Conv2d(squeeze, channels, 1)
            self.activation, self.scale_activation = n.ReLU(), n.Hardsigmoid()
            self.skip_mul = ns.FloatFunctional()

        def forward(self, x):
            scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
            return self.skip_mul.mul(self.scale_activation(scale), x)

    class InvertedResidual(n.Module):
        def __init__(self, inp, expanded, oup, kernel, stride, use_se, act):
            super().__init__()
            layers = [ConvNormActivation(inp, expanded, 1, act=act)] if expanded != inp else []
            layers.append(ConvNormActivation(expanded, expanded, kernel, stride, expanded, act))
            if use_se:
                layers.append(SqueezeExcitation(expanded, max(8, expanded // 4)))
            layers.append(ConvNormActivation(expanded, oup, 1))
            self.block = n.Sequential(*layers)
            self.use_res_connect = stride == 1 and inp == oup
            self.skip_add = ns.FloatFunctional()

        def forward(self, x):
            y = self.block(x)
            return self.skip_add.add(x, y) if self.use_res_connect else y

    class MobileNetV3(n.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = ns.tq.QuantStub(), ns.tq.DeQuantStub()
            self.features = n.Sequential(
                ConvNormActivation(3, 8, 3, 2, act=n.Hardswish),
                InvertedResidual(8, 8, 8, 3, 2, True, n.ReLU),
                InvertedResidual(8, 32, 12, 3, 1, False, n.ReLU),
                InvertedResidual(12, 36, 12, 3, 1, False, n.ReLU),
                InvertedResidual(12, 48, 16, 5, 1, True, n.Hardswish),
                ConvNormActivation(16, 48, 1, act=n.Hardswish))
            self.avgpool = n.AdaptiveAvgPool2d(1)
            self.classifier = n.Sequential(n.Linear(48, 64), n.Hardswish(), n.Dropout(0.2),
                                           n.Linear(64, num_classes))

        def forward(self, x):
            x = self.avgpool(self.features(self.quant(x)))
            return self.dequant(self.classifier(ns.flatten(x, 1)))

        def fuse_model(self, is_qat=False):
            fuse = ns.tq.fuse_modules_qat if is_qat else ns.tq.fuse_modules
            for m in self.modules():
                if type(m) is ConvNormActivation:
                    names = ["0", "1"] + (["2"] if len(m) == 3 and type(m[2]) is n.ReLU else [])
                    fuse(m, names, inplace=True)
                elif type(m) is SqueezeExcitation:
                    fuse(m, ["fc1", "activation"], inplace=True)

    return MobileNetV3()


# ---- a small Inception: torchvision's QuantizableInception3's InceptionA and BasicConv2d --
def _inception(ns, num_classes=5):
    n, F = ns.nn, ns.F

    class BasicConv2d(n.Module):  # QuantizableBasicConv2d
        def __init__(self, inp, oup, **kwargs):
            super().__init__()
            self.conv = n.Conv2d(inp, oup, bias=False, **kwargs)
            self.bn, self.relu = n.BatchNorm2d(oup, eps=0.001), n.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class InceptionA(n.Module):  # QuantizableInceptionA
        def __init__(self, inp, pool_features):
            super().__init__()
            self.branch1x1 = BasicConv2d(inp, 8, kernel_size=1)
            self.branch5x5_1 = BasicConv2d(inp, 6, kernel_size=1)
            self.branch5x5_2 = BasicConv2d(6, 8, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = BasicConv2d(inp, 8, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(8, 12, kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(inp, pool_features, kernel_size=1)
            self.myop = ns.FloatFunctional()

        def forward(self, x):
            outputs = [self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                       self.branch3x3dbl_2(self.branch3x3dbl_1(x)),
                       self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))]
            return self.myop.cat(outputs, 1)

    class Inception(n.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = ns.tq.QuantStub(), ns.tq.DeQuantStub()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 8, kernel_size=3, stride=2)
            self.maxpool1 = n.MaxPool2d(3, 2, ceil_mode=True)
            self.Mixed_5b = InceptionA(8, 4)
            self.avgpool, self.dropout = n.AdaptiveAvgPool2d((1, 1)), n.Dropout(0.5)
            self.fc = n.Linear(32, num_classes)

        def forward(self, x):
            x = self.maxpool1(self.Conv2d_1a_3x3(self.quant(x)))
            x = ns.flatten(self.dropout(self.avgpool(self.Mixed_5b(x))), 1)
            return self.dequant(self.fc(x))

        def fuse_model(self, is_qat=False):
            fuse = ns.tq.fuse_modules_qat if is_qat else ns.tq.fuse_modules
            for m in self.modules():
                if type(m) is BasicConv2d:
                    fuse(m, ["conv", "bn", "relu"], inplace=True)

    return Inception()


BUILDERS = {"resnet": _resnet, "mobilenet_v2": _mobilenet_v2, "shufflenet_v2": _shufflenet_v2,
            "mobilenet_v3": _mobilenet_v3, "inception": _inception}


def _twins(torch, arch, seed=0):
    """The same float model in both frameworks: torch's initialisation, batch norms given
    running statistics and affine parameters away from the identity."""
    torch.manual_seed(seed)
    t_model = BUILDERS[arch](_NS("torch"))
    for m in t_model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    m_model = BUILDERS[arch](_NS("minidl"))
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    return t_model, m_model


# ShuffleNetV2 halves the size four times: 32 keeps its global pool over 2 x 2 (torch's
# quantized mean refuses a channels-last 1 x 1 input: "required rank 4 tensor to use
# channels_last format")
SIZE = {"shufflenet_v2": 32, "inception": 19}


def _model_images(arch, seed, n=3):
    size = SIZE.get(arch, 16)
    return _images(seed, n, (2, 3, size, size))


def _images(seed, n=3, shape=(2, 3, 16, 16)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _ptq(torch, arch, backend="x86", seed=0):
    tqq = torch.ao.quantization
    t_model, m_model = _twins(torch, arch, seed)
    quantized = []
    for model, mod, data_of in ((t_model, tqq, torch.from_numpy), (m_model, tq, minidl.tensor)):
        model.eval()
        model.fuse_model()
        model.qconfig = mod.get_default_qconfig(backend)
        prepared = mod.prepare(model)
        for x in _model_images(arch, 1):
            prepared(data_of(x))
        quantized.append(mod.convert(prepared))
    return quantized[0], quantized[1], t_model, m_model


@pytest.mark.parametrize("arch,backend", [("resnet", "x86"), ("mobilenet_v2", "x86"),
                                          ("shufflenet_v2", "x86"), ("mobilenet_v3", "x86"),
                                          ("inception", "x86"), ("resnet", "fbgemm")])
def test_post_training_quantized_model_matches_torch(arch, backend):
    torch = _torch()
    t_q, m_q, t_float, m_float = _ptq(torch, arch, backend)
    # torch's quantized Linear keeps its packed weight in a submodule; minidl's in itself
    t_mods = {k: v for k, v in t_q.named_modules() if not k.endswith("_packed_params")}
    m_mods = dict(m_q.named_modules())
    assert sorted(t_mods) == sorted(m_mods)
    for name, t_mod in t_mods.items():  # the same module types, name by name
        assert type(m_mods[name]).__name__ == type(t_mod).__name__, name
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    for name, t_mod in t_mods.items():
        if hasattr(t_mod, "scale") and not callable(t_mod.scale):
            assert np.isclose(float(m_mods[name].scale), float(t_mod.scale), rtol=1e-5), name
    # inputs well inside the calibrated range: the HistogramObserver clips the ranges it saw,
    # so activations past 127 reach the next layers, whose int16 pair sums fbgemm on a CPU
    # without VNNI could saturate (tests/_fbgemm_saturation.py checks these inputs cannot)
    x_test = [0.5 * _model_images(arch, 7, n=1)[0], 0.5 * _model_images(arch, 1, n=1)[0]]
    for x in x_test:
        assert_cannot_saturate(m_q, x)
        mine, theirs = m_q(minidl.tensor(x)).numpy(), t_q(torch.from_numpy(x)).numpy()
        step = _step(m_q, arch)
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=3 * step * 1.0001)
        # the integers are nearly always torch's; the output's scale may be an ulp away
        assert np.mean(np.isclose(mine, theirs, rtol=1e-6, atol=1e-7)) > 0.8
    # with torch's scales and weights, every integer is torch's
    m_q.load_state_dict(t_q.state_dict())
    for x in x_test:
        assert_cannot_saturate(m_q, x)
        np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(),
                                      t_q(torch.from_numpy(x)).numpy())
    # and the int8 model stays near the float one
    x = x_test[0]
    float_out = m_float(minidl.tensor(x)).detach().numpy()
    assert np.abs(m_q(minidl.tensor(x)).numpy() - float_out).max() < 0.1 * np.abs(float_out).max() + 0.05


def _step(q_model, arch):
    return float(q_model.classifier[-1].scale if arch.startswith("mobilenet") else q_model.fc.scale)


# after a few QAT steps, MobileNetV3's squeeze-excitation sees eval-mode activations past the
# ranges its FakeQuantize observed with the batches' statistics: integers past 127 reach the
# next 1x1 convolution, whose int16 pair sums fbgemm without VNNI could saturate
@pytest.mark.parametrize("arch", [a if a != "mobilenet_v3" else pytest.param(a, marks=requires_vnni)
                                  for a in sorted(BUILDERS)])
def test_quantization_aware_training_of_the_model_matches_torch(arch):
    """fuse_modules_qat, prepare_qat with the fbgemm QAT qconfig (torch's version 0:
    FakeQuantize modules), a few SGD steps with train-mode batch norms, freeze_bn_stats,
    convert: the int8 model computes what the fake-quantized one simulated, and both
    frameworks train the same model (within the drift of rare one-step roundings)."""
    torch = _torch()
    tqq = torch.ao.quantization
    t_model, m_model = _twins(torch, arch, seed=1)
    preps = []
    for model, mod, kw in ((t_model, tqq, {"version": 0}), (m_model, tq, {})):
        model.train()
        model.fuse_model(is_qat=True)
        model.qconfig = mod.get_default_qat_qconfig("fbgemm", **kw)
        prep = mod.prepare_qat(model)
        for m in prep.modules():  # the dropouts: their random masks would differ
            if type(m).__name__ == "Dropout":
                m.eval()
        preps.append(prep)
    t_prep, m_prep = preps
    t_opt = torch.optim.SGD(t_prep.parameters(), lr=0.02, momentum=0.9)
    m_opt = minidl.optim.SGD(m_prep.parameters(), lr=0.02, momentum=0.9)
    rng = np.random.default_rng(3)
    for x in _model_images(arch, 4, n=3):
        target = rng.integers(0, 5, size=2)
        t_loss = torch.nn.functional.cross_entropy(t_prep(torch.from_numpy(x)),
                                                   torch.from_numpy(target))
        m_loss = nn.functional.cross_entropy(m_prep(minidl.tensor(x)), minidl.tensor(target))
        assert abs(t_loss.item() - m_loss.item()) < 0.02 * abs(t_loss.item()) + 1e-3
        for loss, opt in ((t_loss, t_opt), (m_loss, m_opt)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    for prep, mod, qat_mod in ((t_prep, tqq, torch.ao.nn.intrinsic.qat),
                              (m_prep, tq, minidl.ao.nn.intrinsic.qat)):
        prep.apply(qat_mod.freeze_bn_stats)
        prep.eval()
        prep.apply(mod.disable_observer)
    t_q, m_q = tqq.convert(t_prep), tq.convert(m_prep)
    assert type(m_q.quant) is nnq.Quantize
    if arch == "resnet":
        assert type(m_q.conv1) is nniq.ConvReLU2d and type(m_q.layer2[0].conv2) is nnq.Conv2d
        assert type(m_q.layer2[0].downsample[0]) is nnq.Conv2d
    elif arch == "shufflenet_v2":
        assert type(m_q.conv1[0]) is nniq.ConvReLU2d and type(m_q.stage2[0].cat) is nnq.QFunctional
        assert type(m_q.stage2[0].branch1[0]) is nnq.Conv2d
    elif arch == "inception":
        assert type(m_q.Conv2d_1a_3x3.conv) is nniq.ConvReLU2d
        assert type(m_q.Mixed_5b.myop) is nnq.QFunctional
    elif arch == "mobilenet_v3":
        assert type(m_q.features[0][0]) is nnq.Conv2d and type(m_q.features[0][2]) is nnq.Hardswish
        se = m_q.features[1].block[1]
        assert type(se.fc1) is nniq.ConvReLU2d and type(se.skip_mul) is nnq.QFunctional
        assert "activation_post_process" not in se.scale_activation._modules  # QAT's, removed
    else:
        assert type(m_q.features[0][0]) is nniq.ConvReLU2d
        assert type(m_q.features[1].conv[1]) is nnq.Conv2d
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    x = 0.5 * _model_images(arch, 5, n=1)[0]
    mine, my_fake = m_q(minidl.tensor(x)).numpy(), m_prep(minidl.tensor(x)).detach().numpy()
    step = _step(m_q, arch)
    # the int model computes what its fake-quant model simulated; a rare tie lands a step
    # away and the layers after it carry it on
    np.testing.assert_allclose(mine, my_fake, rtol=0, atol=3 * step)
    theirs_fake = t_prep(torch.from_numpy(x)).detach().numpy()
    assert np.abs(my_fake - theirs_fake).max() < 0.1 * np.abs(theirs_fake).max() + 4 * step
    # with torch's trained scales and weights, the integers are torch's
    m_q.load_state_dict(t_q.state_dict())
    if arch != "mobilenet_v3":  # (which runs on VNNI CPUs only)
        assert_cannot_saturate(m_q, x)
    np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(), t_q(torch.from_numpy(x)).numpy())


# ---- fusion: hooks, Linear + BatchNorm1d ---------------------------------------------------
def _mlp(ns, bias=True):
    n = ns.nn

    class MLP(n.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = ns.tq.QuantStub(), ns.tq.DeQuantStub()
            self.fc1, self.bn1 = n.Linear(8, 16, bias=bias), n.BatchNorm1d(16)
            self.relu, self.fc2 = n.ReLU(), n.Linear(16, 4)

        def forward(self, x):
            return self.dequant(self.fc2(self.relu(self.bn1(self.fc1(self.quant(x))))))

    return MLP()


def test_fuse_modules_moves_the_first_pre_hooks_and_the_last_forward_hooks():
    model = _mlp(_NS("minidl")).eval()
    model.fc1.weight.data[...] = 0.5 * model.fc1.weight.numpy()
    seen = []
    model.fc1.register_forward_pre_hook(lambda m, args: seen.append(("pre", type(m).__name__)))
    model.bn1.register_forward_hook(lambda m, args, out: seen.append(("post", type(m).__name__)))
    model.bn1.register_forward_hook(lambda m, args, out: out * 2)  # replaces the output
    x = minidl.randn(3, 8)
    expected = model(x).detach().numpy()
    fused = tq.fuse_modules(model, [["fc1", "bn1"]])
    assert type(fused.fc1) is nn.Linear and type(fused.bn1) is nn.Identity
    seen.clear()
    np.testing.assert_allclose(fused(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert seen == [("pre", "Linear"), ("post", "Linear")]  # each once
    assert not fused.bn1.__dict__.get("_forward_hooks")
    # the original model (fuse_modules copied it) keeps its hooks
    seen.clear()
    model(x)
    assert seen == [("pre", "Linear"), ("post", "BatchNorm1d")]
    # a three-module fusion: the ReLU's hooks go to the fused ConvReLU2d
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU()).eval()
    calls = []
    conv[0].register_forward_pre_hook(lambda m, args: calls.append(type(m).__name__))
    conv[2].register_forward_hook(lambda m, args, out: calls.append(type(m).__name__))
    fused_conv = tq.fuse_modules(conv, ["0", "1", "2"])
    fused_conv(minidl.randn(1, 2, 5, 5))
    assert calls == ["ConvReLU2d", "ConvReLU2d"]


def test_fuse_modules_hooks_match_torch():
    torch = _torch()
    out = {}
    for name, ns in (("torch", _NS("torch")), ("minidl", _NS("minidl"))):
        model = _mlp(ns).eval()
        calls = []
        model.fc1.register_forward_pre_hook(lambda m, args, c=calls: c.append("pre"))
        model.bn1.register_forward_hook(lambda m, args, o, c=calls: c.append("post"))
        fused = ns.tq.fuse_modules(model, [["fc1", "bn1"]])
        fused(torch.zeros(2, 8) if name == "torch" else minidl.zeros(2, 8))
        out[name] = (calls, type(fused.fc1).__name__, len(fused.fc1._forward_hooks or {}))
    assert out["minidl"] == (["pre", "post"], "Linear", 1)
    # torch's folded Linear is a deepcopy of fc1 that keeps its pre-hook, which torch then
    # registers a second time, so that it runs twice; minidl's runs once
    assert out["torch"] == (["pre", "pre", "post"], "Linear", 1)


def test_fuse_linear_bn_for_eval_and_qat():
    model = _mlp(_NS("minidl"))
    model.bn1.running_mean = minidl.tensor(np.linspace(-0.5, 0.5, 16).astype(np.float32))
    model.bn1.running_var = minidl.tensor(np.linspace(0.5, 2.0, 16).astype(np.float32))
    model.eval()
    fused = tq.fuse_linear_bn(False, model.fc1, model.bn1)
    x = minidl.randn(5, 8)
    np.testing.assert_allclose(fused(x).detach().numpy(),
                               model.bn1(model.fc1(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    model.train()
    qat_fused = tq.fuse_linear_bn(True, model.fc1, model.bn1)
    assert type(qat_fused) is nni.LinearBn1d and qat_fused[0] is model.fc1
    with pytest.raises(AssertionError, match="same mode"):
        tq.fuse_linear_bn(True, model.fc1, model.bn1.eval())
    with pytest.raises(AssertionError, match="num_features"):
        tq.fuse_linear_bn(True, nn.Linear(8, 15), nn.BatchNorm1d(16))
    with pytest.raises(ValueError, match="QAT fusion|quantization-aware"):
        m = tq.fuse_modules_qat(_mlp(_NS("minidl")), [["fc1", "bn1"]])
        m.qconfig = tq.get_default_qconfig("x86")
        tq.prepare(m)


@pytest.mark.parametrize("bias", [True, False])
def test_qat_linear_bn_matches_torch(bias):
    """fuse_modules_qat (Linear, BatchNorm1d) -> LinearBn1d, QAT steps, freeze_bn_stats,
    convert to a quantized Linear with the running statistics folded in, as torch's."""
    torch = _torch()
    tqq = torch.ao.quantization
    torch.manual_seed(0)
    t_model = _mlp(_NS("torch"), bias)
    with torch.no_grad():
        t_model.bn1.running_var.uniform_(0.5, 2.0)
        t_model.bn1.weight.uniform_(0.5, 1.5)
    m_model = _mlp(_NS("minidl"), bias)
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    preps = []
    for model, mod, kw in ((t_model, tqq, {"version": 0}), (m_model, tq, {})):
        model.train()
        fused = mod.fuse_modules_qat(model, [["fc1", "bn1"]])
        fused.qconfig = mod.get_default_qat_qconfig("fbgemm", **kw)
        preps.append(mod.prepare_qat(fused))
    t_prep, m_prep = preps
    assert type(m_prep.fc1) is nniqat.LinearBn1d and type(m_prep.bn1) is nn.Identity
    t_opt = torch.optim.SGD(t_prep.parameters(), lr=0.05)
    m_opt = minidl.optim.SGD(m_prep.parameters(), lr=0.05)
    rng = np.random.default_rng(1)
    for i in range(4):
        x = rng.standard_normal((16, 8)).astype(np.float32)
        target = rng.standard_normal((16, 4)).astype(np.float32)
        t_out, m_out = t_prep(torch.from_numpy(x)), m_prep(minidl.tensor(x))
        if i == 0:
            np.testing.assert_allclose(m_out.detach().numpy(), t_out.detach().numpy(),
                                       rtol=0, atol=1e-5)
        ((t_out - torch.from_numpy(target)) ** 2).mean().backward()
        ((m_out - minidl.tensor(target)) ** 2).mean().backward()
        if i == 0:
            # a weight whose fake quantization clamps in one and not in the other (its scale
            # an ulp apart) gets no straight-through gradient there: nearly all are equal
            gm, gt = m_prep.fc1.weight.grad.numpy(), t_prep.fc1.weight.grad.numpy()
            assert np.mean(np.isclose(gm, gt, rtol=1e-4, atol=1e-6)) > 0.97
            # (and that weight's output channel gets another batch-norm gradient)
            bm, bt = m_prep.fc1.bn.weight.grad.numpy(), t_prep.fc1.bn.weight.grad.numpy()
            assert np.mean(np.isclose(bm, bt, rtol=1e-3, atol=1e-5)) > 0.9
        for opt in (t_opt, m_opt):
            opt.step()
            opt.zero_grad()
    np.testing.assert_allclose(m_prep.fc1.bn.running_mean.numpy(),
                               t_prep.fc1.bn.running_mean.numpy(), rtol=0, atol=1e-4)
    for prep, mod, nniqat_ in ((t_prep, tqq, torch.ao.nn.intrinsic.qat), (m_prep, tq, nniqat)):
        prep.apply(nniqat_.freeze_bn_stats)
        prep.train()  # frozen: the running statistics stay in use
        prep.eval()
        prep.apply(mod.disable_observer)
    assert m_prep.fc1.freeze_bn
    t_q, m_q = tqq.convert(t_prep), tq.convert(m_prep)
    assert type(m_q.fc1) is nnq.Linear
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    x = 0.5 * rng.standard_normal((8, 8)).astype(np.float32)  # inside the trained ranges
    # the int model computes what the fake-quant one simulated; where a tie of fc1's output
    # rounds the other way, fc2 carries that step on, times its weights
    mine, fake = m_q(minidl.tensor(x)).numpy(), m_prep(minidl.tensor(x)).detach().numpy()
    np.testing.assert_allclose(mine, fake, rtol=0, atol=6 * m_q.fc2.scale)
    assert np.mean(np.isclose(mine, fake, rtol=0, atol=1e-6)) > 0.9
    m_q.load_state_dict(t_q.state_dict())
    np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(), t_q(torch.from_numpy(x)).numpy())
    float_linear = m_prep.fc1.to_float()
    assert type(float_linear) is nn.Linear


@pytest.mark.parametrize("frozen", [True, False])
def test_qat_linear_bn_gradients_by_finite_differences(frozen):
    from minidl.testing import gradcheck

    minidl.manual_seed(0)
    fused = nni.LinearBn1d(nn.Linear(4, 3), nn.BatchNorm1d(3))
    fused.qconfig = tq.get_default_qat_qconfig("x86")
    m = nniqat.LinearBn1d.from_float(fused).to(minidl.float64)
    m.bn.running_var = minidl.tensor(np.array([0.5, 1.5, 2.0]), dtype=minidl.float64)
    m.bn.running_mean = minidl.tensor(np.array([0.1, -0.2, 0.3]), dtype=minidl.float64)
    m.weight_fake_quant.disable_fake_quant()
    m.weight_fake_quant.disable_observer()
    if frozen:
        m.freeze_bn_stats()
    saved = [b.numpy().copy() for b in (m.bn.running_mean, m.bn.running_var)]

    def run(x, w, bn_w):
        m._parameters["weight"], m.bn._parameters["weight"] = w, bn_w
        out = m(x)
        m.bn.running_mean = minidl.tensor(saved[0].copy())
        m.bn.running_var = minidl.tensor(saved[1].copy())
        return out

    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((5, 4)), requires_grad=True, dtype=minidl.float64)
    w = nn.Parameter(minidl.tensor(rng.standard_normal((3, 4)) * 0.5, dtype=minidl.float64))
    bn_w = nn.Parameter(minidl.tensor(rng.uniform(0.5, 1.5, 3), dtype=minidl.float64))
    assert gradcheck(run, [x, w, bn_w], eps=1e-6, atol=1e-5)


# ---- the ops between the quantized modules: pooling, mean, cat, chunk, relu, sigmoid --------
def _qpair(torch, shape, scale, zp, seed=0, dtype="quint8", spread=2.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * spread).astype(np.float32)
    t = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, getattr(torch, dtype))
    import minidl.ao.nn.quantized._state as state

    return t, state.as_qtensor(t)


def _same_q(mine, theirs, exact=True, share=0.99):
    """The same quantized tensor; ``exact=False``: integers within one step, and more than
    ``share`` of them equal (torch's elementwise kernels run a scalar loop over the last
    ``numel % 128`` elements (64 with AVX2), whose float steps differ from the vector loop's
    at rare ties; minidl computes the vector loop's everywhere)."""
    assert mine.dtype is getattr(minidl, str(theirs.dtype).rsplit(".", 1)[-1])
    assert mine.q_scale() == theirs.q_scale() and mine.q_zero_point() == theirs.q_zero_point()
    assert mine.shape == tuple(theirs.shape)
    a, b = mine.int_repr().numpy().astype(np.int64), theirs.int_repr().numpy().astype(np.int64)
    if exact:
        np.testing.assert_array_equal(a, b)
    else:
        assert np.abs(a - b).max() <= 1 and np.mean(a == b) > share


@pytest.mark.parametrize("shape,out", [((2, 16, 7, 7), (1, 1)), ((2, 8, 7, 9), (3, 4)),
                                       ((1, 32, 7, 7), (2, 2)), ((4, 5, 5), 2)])
def test_quantized_pooling_and_mean_match_torch(shape, out):
    torch = _torch()
    F, tF = nn.functional, torch.nn.functional
    for seed in range(3):
        t, m = _qpair(torch, shape, 0.02 + 0.01 * seed, 17 + 60 * seed, seed)
        _same_q(F.adaptive_avg_pool2d(m, out), tF.adaptive_avg_pool2d(t, out))
        _same_q(nn.AdaptiveAvgPool2d(out)(m), torch.nn.AdaptiveAvgPool2d(out)(t))
        _same_q(nn.MaxPool2d(3, 2, 1)(m), torch.nn.MaxPool2d(3, 2, 1)(t))
        _same_q(F.max_pool2d(m, 2, ceil_mode=True), tF.max_pool2d(t, 2, ceil_mode=True))
        _same_q(m.mean([-2, -1]), t.mean([-2, -1]))
        _same_q(m.mean([-2, -1], keepdim=True), t.mean([-2, -1], keepdim=True))
        _same_q(F.relu(m), tF.relu(t))
        _same_q(minidl.flatten(m, 1), torch.flatten(t, 1))
        for mine, theirs in zip(m.chunk(2, 1), t.chunk(2, 1)):
            _same_q(mine, theirs)


def test_quantized_cat_requantizes_to_the_first_inputs_qparams_as_torch():
    torch = _torch()
    a_t, a_m = _qpair(torch, (2, 3, 4, 4), 0.05, 30, 0)
    b_t, b_m = _qpair(torch, (2, 5, 4, 4), 0.1, 10, 1)
    _same_q(minidl.cat([a_m, b_m], 1), torch.cat([a_t, b_t], 1))
    _same_q(minidl.cat([a_m, a_m], 0), torch.cat([a_t, a_t], 0))
    with pytest.raises(TypeError, match="quantized tensors"):
        minidl.cat([a_m, minidl.randn(2, 3, 4, 4)], 1)
    with pytest.raises(RuntimeError, match="differ outside dim 0"):
        minidl.cat([a_m, b_m], 0)


@pytest.mark.parametrize("dtype", ["quint8", "qint8"])
def test_quantized_sigmoid_has_torchs_fixed_qparams(dtype):
    torch = _torch()
    for shape in [(4, 8, 16, 16), (3, 5, 7)]:
        t, m = _qpair(torch, shape, 0.03, 5 if dtype == "quint8" else -3, 0, dtype)
        exact = int(np.prod(shape)) % 128 == 0
        _same_q(nn.functional.sigmoid(m), torch.sigmoid(t), exact)
        _same_q(nn.Sigmoid()(m), torch.nn.Sigmoid()(t), exact)


def test_quantized_ops_without_torch():
    q = minidl.quantize_per_tensor(minidl.tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)),
                                   1.0, 3, minidl.quint8)
    pooled = nn.MaxPool2d(2)(q)
    assert pooled.int_repr().numpy().ravel().tolist() == [8, 10, 16, 18]
    assert pooled.q_scale() == 1.0 and pooled.q_zero_point() == 3
    avg = nn.AdaptiveAvgPool2d(1)(q)  # (3 + ... + 18) / 16 = 10.5 -> 10 (half to even)
    assert avg.int_repr().item() == 10 and avg.dequantize().item() == 7.0
    assert q.mean().int_repr().item() == 10
    assert nn.functional.relu(q).int_repr().min().item() == 3
    with pytest.raises(NotImplementedError, match="return_indices"):
        nn.functional.max_pool2d(q, 2, return_indices=True)
    with pytest.raises(NotImplementedError, match="dequantize"):
        q._quantized_op("softplus")


# ---- QFunctional.add_scalar / mul_scalar --------------------------------------------------
@pytest.mark.parametrize("dtype", ["quint8", "qint8"])
def test_qfunctional_add_and_mul_scalar_match_torch(dtype):
    torch = _torch()
    rng = np.random.default_rng(0)
    qf = nnq.QFunctional()
    for i in range(60):
        scale = float(rng.uniform(0.005, 0.2))
        zp = int(rng.integers(0, 256)) if dtype == "quint8" else int(rng.integers(-128, 128))
        t, m = _qpair(torch, (3, 50), scale, zp, i, dtype)
        c = float(rng.standard_normal() * rng.choice([0.1, 1, 10, 100]))
        _same_q(qf.add_scalar(m, c), torch.ops.quantized.add_scalar(t, c))
        for k in (c, 0.0, -abs(c), abs(c)):
            _same_q(qf.mul_scalar(m, k), torch.ops.quantized.mul_scalar(t, k))


def test_qfunctional_scalar_ops_without_torch():
    qf = nnq.QFunctional()
    q = minidl.quantize_per_tensor(minidl.tensor([0.0, 0.5, 1.0]), 0.1, 10, minidl.quint8)
    shifted = qf.add_scalar(q, 0.3)  # the integers stay, the zero point moves by 3
    assert shifted.int_repr().tolist() == q.int_repr().tolist() and shifted.q_zero_point() == 7
    np.testing.assert_allclose(shifted.dequantize().numpy(), [0.3, 0.8, 1.3], rtol=1e-6)
    big = qf.add_scalar(q, 100.0)  # past the range: zero point 0, a wider scale
    assert big.q_zero_point() == 0 and big.q_scale() > 0.1
    np.testing.assert_allclose(big.dequantize().numpy(), [100.0, 100.5, 101.0], atol=big.q_scale())
    neg = qf.mul_scalar(q, -2.0)
    np.testing.assert_allclose(neg.dequantize().numpy(), [0.0, -1.0, -2.0], atol=1e-6)
    zero = qf.mul_scalar(q, 0)
    assert zero.q_scale() == 1.0 and zero.int_repr().tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="number"):
        qf.add_scalar(q, "1")
    with pytest.raises(ValueError, match="finite"):
        qf.mul_scalar(q, float("nan"))
    with pytest.raises(TypeError, match="quantized"):
        qf.add_scalar(minidl.tensor([1.0]), 1.0)
    ff = nnq.FloatFunctional()  # the float form: plain arithmetic, not observed
    np.testing.assert_allclose(ff.add_scalar(minidl.tensor([1.0]), 2).numpy(), [3.0])
    np.testing.assert_allclose(ff.mul_scalar(minidl.tensor([1.5]), 2).numpy(), [3.0])


# ---- quantized BatchNorm2d, LeakyReLU, ELU, Sigmoid, Dropout ------------------------------
SHAPES = [(2, 16, 8, 8), (3, 5, 7, 9), (2, 37, 3, 5), (2, 13, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES)
def test_quantized_batch_norm_matches_torch(shape):
    torch = _torch()
    from minidl.ao.nn.intrinsic import quantized as nniq_

    rng = np.random.default_rng(shape[1])
    c = shape[1]
    for relu in (False, True):
        t_bn = (torch.ao.nn.intrinsic.quantized.BNReLU2d if relu
                else torch.ao.nn.quantized.BatchNorm2d)(c)
        with torch.no_grad():
            t_bn.weight.uniform_(0.5, 1.5)
            t_bn.bias.uniform_(-0.3, 0.3)
            t_bn.running_mean.uniform_(-0.3, 0.3)
            t_bn.running_var.uniform_(0.5, 2.0)
        t_bn.scale, t_bn.zero_point = torch.tensor(0.031), torch.tensor(int(rng.integers(0, 200)))
        m_bn = (nniq_.BNReLU2d if relu else nnq.BatchNorm2d)(c)
        m_bn.load_state_dict(t_bn.state_dict())
        assert list(m_bn.state_dict()) == list(t_bn.state_dict())
        for seed in range(2):
            t, m = _qpair(torch, shape, 0.02, 100 + 50 * seed, seed)
            _same_q(m_bn(m), t_bn(t))
    with pytest.raises(ValueError, match="channels"):
        m_bn(_qpair(torch, (1, c + 1, 2, 2), 0.1, 0)[1])


def _scalar_torch(torch):
    """Whether torch runs its scalar DEFAULT kernels (ATEN_CPU_CAPABILITY=default, or a CPU
    without AVX2). minidl computes the quantized LeakyReLU, ELU and QFunctional.add as torch's
    AVX2 and AVX-512 vector loops do (LeakyReLU and ELU: a fused multiply-add to dequantize,
    rint(y * (1 / scale)) to quantize); torch's DEFAULT build rounds those float steps
    otherwise (neither an unfused multiply-add nor (q - zp) * scale alone reproduces it), and
    an output within an ulp of a rounding boundary lands one step away. Measured there:
    LeakyReLU on up to 2.5% of the elements, ELU on up to 3.8%, add and add_relu on up to
    0.3%, never more than one step; Sigmoid, ReLU6, Hardswish and mul stay bit for bit."""
    return torch.backends.cpu.get_cpu_capability() == "DEFAULT"


@pytest.mark.parametrize("shape", SHAPES)
def test_quantized_leaky_relu_elu_sigmoid_match_torch(shape):
    torch = _torch()
    tq_nn = torch.ao.nn.quantized
    pairs = [(nnq.LeakyReLU(0.04, 90, 0.1), tq_nn.LeakyReLU(0.04, 90, 0.1)),
             (nnq.ELU(0.03, 120, 0.7), tq_nn.ELU(0.03, 120, 0.7)),
             (nnq.Sigmoid(0.003, 7), tq_nn.Sigmoid(0.003, 7)),
             (nnq.Dropout(0.3), tq_nn.Dropout(0.3))]
    assert list(pairs[0][0].state_dict()) == list(pairs[0][1].state_dict())
    exact = int(np.prod(shape)) % 128 == 0
    scalar = _scalar_torch(torch)
    for seed in range(2):
        t, m = _qpair(torch, shape, 0.025, 60 + 80 * seed, seed)
        for mine, theirs in pairs:
            if scalar and not isinstance(mine, (nnq.Sigmoid, nnq.Dropout)):
                _same_q(mine(m), theirs(t), exact=False, share=0.95)
            else:
                _same_q(mine(m), theirs(t), exact)


def _activations_model(ns):
    n = ns.nn

    class Net(n.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = ns.tq.QuantStub(), ns.tq.DeQuantStub()
            self.conv = n.Conv2d(3, 8, 3, padding=1)
            self.bn, self.act = n.BatchNorm2d(8), n.LeakyReLU(0.05)
            self.bn2, self.relu = n.BatchNorm2d(8), n.ReLU()
            self.elu, self.drop = n.ELU(0.8), n.Dropout(0.5)
            self.fc = n.Linear(8, 4)

        def forward(self, x):
            x = self.act(self.bn(self.conv(self.quant(x))))
            x = self.elu(self.relu(self.bn2(x)))
            x = ns.flatten(ns.F.adaptive_avg_pool2d(self.drop(x), 1), 1)
            return self.dequant(ns.F.sigmoid(self.fc(x)))

    return Net()


def test_batch_norm_and_activations_through_prepare_and_convert_match_torch():
    """A batch norm left unfused, a fused BNReLU2d, LeakyReLU, ELU, Dropout and sigmoid
    through prepare/convert, in both frameworks; with torch's state dict loaded the outputs
    are torch's bit for bit."""
    torch = _torch()
    torch.manual_seed(0)
    t_model = _activations_model(_NS("torch"))
    with torch.no_grad():
        for bn in (t_model.bn, t_model.bn2):
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    m_model = _activations_model(_NS("minidl"))
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    out = []
    for model, mod, data_of in ((t_model, torch.ao.quantization, torch.from_numpy),
                                (m_model, tq, minidl.tensor)):
        model.eval()
        fused = mod.fuse_modules(model, [["bn2", "relu"]])
        fused.qconfig = mod.get_default_qconfig("x86")
        prepared = mod.prepare(fused)
        for x in _images(2, shape=(2, 3, 6, 6)):
            prepared(data_of(x))
        out.append(mod.convert(prepared))
    t_q, m_q = out
    from minidl.ao.nn.intrinsic import quantized as nniq_

    assert type(m_q.bn) is nnq.BatchNorm2d and type(m_q.bn2) is nniq_.BNReLU2d
    assert type(m_q.act) is nnq.LeakyReLU and type(m_q.elu) is nnq.ELU
    assert type(m_q.drop) is nnq.Dropout
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    m_q.load_state_dict(t_q.state_dict())
    for x in _images(3, n=2, shape=(2, 3, 6, 6)):
        x = 0.5 * x
        assert_cannot_saturate(m_q, x)
        np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(),
                                      t_q(torch.from_numpy(x)).numpy())


# ---- fake quantization: float zero points, learnable scale and zero point -----------------
def test_per_channel_fake_quantize_takes_float_zero_points_as_torch():
    torch = _torch()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 6, 5)) * 3).astype(np.float32)
    scale = rng.uniform(0.01, 0.1, 6).astype(np.float32)
    zp = rng.uniform(-5, 130, 6).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.fake_quantize_per_channel_affine(xt, torch.from_numpy(scale),
                                                torch.from_numpy(zp), 1, 0, 255)
    yt.sum().backward()
    xm = minidl.tensor(x, requires_grad=True)
    ym = minidl.fake_quantize_per_channel_affine(xm, minidl.tensor(scale), minidl.tensor(zp), 1,
                                                 0, 255)
    ym.sum().backward()
    np.testing.assert_array_equal(ym.detach().numpy(), yt.detach().numpy())
    np.testing.assert_array_equal(xm.grad.numpy(), xt.grad.numpy())


def test_learnable_per_channel_fake_quantize_matches_torch():
    torch = _torch()
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 6, 5)) * 3).astype(np.float32)
    scale = rng.uniform(0.01, 0.1, 6).astype(np.float32)
    zp = rng.uniform(-5, 130, 6).astype(np.float32)
    g = rng.standard_normal((4, 6, 5)).astype(np.float32)
    ts = [torch.from_numpy(a.copy()).requires_grad_() for a in (x, scale, zp)]
    yt = torch._fake_quantize_learnable_per_channel_affine(*ts, 1, 0, 255, 0.5)
    yt.backward(torch.from_numpy(g))
    ms = [minidl.tensor(a.copy(), requires_grad=True) for a in (x, scale, zp)]
    ym = minidl._fake_quantize_learnable_per_channel_affine(*ms, 1, 0, 255, 0.5)
    ym.backward(minidl.tensor(g))
    np.testing.assert_array_equal(ym.detach().numpy(), yt.detach().numpy())
    np.testing.assert_array_equal(ms[0].grad.numpy(), ts[0].grad.numpy())
    for m, t in zip(ms[1:], ts[1:]):  # sums over 20 elements, in another order
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="expected 6 scales"):
        minidl._fake_quantize_learnable_per_channel_affine(ms[0], ms[1][:5], ms[2][:5], 1, 0, 255)


@pytest.mark.parametrize("per_channel", [False, True])
def test_learnable_fake_quantize_module_matches_torch(per_channel):
    torch = _torch()
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize as TL

    t_ao, m_ao = torch.ao.quantization, tq
    kw = {"quant_min": -128, "quant_max": 127}
    if per_channel:
        t_fq = TL(t_ao.MovingAveragePerChannelMinMaxObserver, channel_len=4, dtype=torch.qint8,
                  qscheme=torch.per_channel_affine, ch_axis=0, **kw)
        m_fq = tq._LearnableFakeQuantize(m_ao.MovingAveragePerChannelMinMaxObserver,
                                         channel_len=4, dtype=minidl.qint8,
                                         qscheme=minidl.per_channel_affine, ch_axis=0, **kw)
    else:
        t_fq = TL(t_ao.MovingAverageMinMaxObserver, dtype=torch.qint8, use_grad_scaling=True, **kw)
        m_fq = tq._LearnableFakeQuantize(m_ao.MovingAverageMinMaxObserver, dtype=minidl.qint8,
                                         use_grad_scaling=True, **kw)
    assert list(m_fq.state_dict()) == list(t_fq.state_dict())
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(m_fq(minidl.tensor(x)).numpy(),
                                  t_fq(torch.from_numpy(x)).detach().numpy())
    np.testing.assert_allclose(m_fq.scale.numpy(), t_fq.scale.detach().numpy(), rtol=1e-6)
    t_fq.enable_param_learning()
    m_fq.enable_param_learning()
    assert m_fq.scale.requires_grad and m_fq.static_enabled.numpy()[0] == 0
    # small steps: a clipped element's scale gradient is (quant_max - zero_point) times its
    # gradient, large enough to push the scale below 0 (then clamped to eps) at lr 0.01
    t_opt = torch.optim.SGD([t_fq.scale, t_fq.zero_point], lr=1e-6)
    m_opt = minidl.optim.SGD([m_fq.scale, m_fq.zero_point], lr=1e-6)
    for i in range(3):
        x = (rng.standard_normal((4, 8)) * 1.5).astype(np.float32)
        yt, ym = t_fq(torch.from_numpy(x)), m_fq(minidl.tensor(x))
        np.testing.assert_allclose(ym.detach().numpy(), yt.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
        (yt ** 2).sum().backward()
        (ym ** 2).sum().backward()
        t_opt.step()
        m_opt.step()
        t_opt.zero_grad()
        m_opt.zero_grad()
    np.testing.assert_allclose(m_fq.scale.numpy(), t_fq.scale.detach().numpy(), rtol=1e-4)
    np.testing.assert_allclose(m_fq.zero_point.numpy(), t_fq.zero_point.detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    ms, mz = m_fq.calculate_qparams()
    ts_, tz = t_fq.calculate_qparams()
    assert mz.numpy().tolist() == tz.numpy().tolist()
    m_fq.load_state_dict(t_fq.state_dict())
    np.testing.assert_array_equal(m_fq.scale.numpy(), t_fq.scale.detach().numpy())


def test_learnable_fake_quantize_learns_a_scale_by_itself():
    """Without torch: a scale too small clips; the gradient of the clipped error widens it."""
    fq = tq._LearnableFakeQuantize(tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                   scale=0.001, zero_point=0.0)
    fq.enable_param_learning()
    # (the clipped values' gradient is (quant_max - zero_point) per element: a small rate)
    opt = minidl.optim.SGD([fq.scale], lr=2e-7)
    x = minidl.tensor(np.linspace(0, 1, 64).astype(np.float32))
    errors = []
    for _ in range(40):
        err = ((fq(x) - x) ** 2).sum()
        errors.append(err.item())
        opt.zero_grad()
        err.backward()
        opt.step()
    assert errors[-1] < 0.01 * errors[0]
    assert 1 / 255 * 0.8 < fq.scale.item() < 1 / 255 * 1.5


def test_fake_quantize_with_float_qparams_keeps_float_zero_points():
    fq = tq.default_embedding_fake_quant()
    w = minidl.tensor(np.random.default_rng(0).uniform(0.5, 2.0, (5, 8)).astype(np.float32))
    out = fq(w)
    assert fq.zero_point.numpy().dtype == np.float32 and fq.zero_point.numel() == 5
    # the range as seen (not widened to hold 0): min to max over 255 steps
    step = (w.numpy().max(1) - w.numpy().min(1)) / 255
    np.testing.assert_allclose(fq.scale.numpy(), step, rtol=1e-6)
    assert np.abs(out.numpy() - w.numpy()).max() <= step.max() / 2 * 1.001


# ---- weight-only quantized embeddings ------------------------------------------------------
def _embeddings(ns):
    n = ns.nn
    return n.Sequential(n.Embedding(10, 12), n.EmbeddingBag(10, 12, mode="sum"),
                        n.EmbeddingBag(10, 12, mode="mean"))


def test_quantized_embeddings_match_torch():
    torch = _torch()
    torch.manual_seed(0)
    t_model = _embeddings(_NS("torch"))
    m_model = _embeddings(_NS("minidl"))
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    t_spec = dict.fromkeys((torch.nn.Embedding, torch.nn.EmbeddingBag),
                           torch.ao.quantization.float_qparams_weight_only_qconfig)
    m_spec = dict.fromkeys((nn.Embedding, nn.EmbeddingBag), tq.float_qparams_weight_only_qconfig)
    t_q = torch.ao.quantization.quantize_dynamic(t_model, t_spec)
    m_q = tq.quantize_dynamic(m_model, m_spec)
    assert [type(m).__name__ for m in m_q] == ["Embedding", "EmbeddingBag", "EmbeddingBag"]
    assert m_q[0].weight().qscheme() is minidl.per_channel_affine_float_qparams
    t_w, m_w = t_q[0].weight(), m_q[0].weight()
    np.testing.assert_array_equal(m_w.int_repr().numpy(), t_w.int_repr().numpy())
    np.testing.assert_array_equal(m_w.q_per_channel_zero_points().numpy(),
                                  t_w.q_per_channel_zero_points().numpy())
    np.testing.assert_array_equal(m_w.dequantize().numpy(), t_w.dequantize().numpy())
    idx = np.array([[1, 3, 9], [0, 0, 2]])
    flat, offsets = np.array([1, 3, 9, 0, 0, 2, 5]), np.array([0, 3, 3])
    weights = np.random.default_rng(0).uniform(0.5, 2, 7).astype(np.float32)
    T, M = torch.from_numpy, minidl.tensor
    np.testing.assert_array_equal(m_q[0](M(idx)).numpy(), t_q[0](T(idx)).numpy())
    np.testing.assert_array_equal(m_q[1](M(idx)).numpy(), t_q[1](T(idx)).numpy())
    np.testing.assert_array_equal(m_q[1](M(flat), M(offsets)).numpy(),
                                  t_q[1](T(flat), T(offsets)).numpy())
    np.testing.assert_array_equal(m_q[1](M(flat), M(offsets), M(weights)).numpy(),
                                  t_q[1](T(flat), T(offsets), T(weights)).numpy())
    # torch's quantized EmbeddingBag sums whatever its mode (its kernel takes no mean: a
    # mode of 1 gives the sums too); minidl's gives the mean for mode="mean"
    t_sums = t_q[2](T(flat), T(offsets)).numpy()
    m_q[2].mode = "sum"
    np.testing.assert_array_equal(m_q[2](M(flat), M(offsets)).numpy(), t_sums)
    m_q[2].mode = "mean"
    counts = np.maximum(np.diff(np.append(offsets, flat.size)), 1).reshape(-1, 1)
    np.testing.assert_allclose(m_q[2](M(flat), M(offsets)).numpy(), t_sums / counts,
                               rtol=1e-6, atol=1e-7)
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    other = tq.quantize_dynamic(_embeddings(_NS("minidl")), m_spec)
    other.load_state_dict(t_q.state_dict())
    np.testing.assert_array_equal(other[0](M(idx)).numpy(), t_q[0](T(idx)).numpy())


def test_quantized_embedding_refuses_what_does_not_fit():
    emb = nn.Embedding(6, 4)
    with pytest.raises(ValueError, match="float_qparams_weight_only_qconfig"):
        tq.quantize_dynamic(nn.Sequential(emb), {nn.Embedding: tq.default_dynamic_qconfig})
    q = tq.quantize_dynamic(nn.Sequential(emb), {nn.Embedding: tq.float_qparams_weight_only_qconfig})
    with pytest.raises(IndexError, match="index 6 is out of range"):
        q[0](minidl.tensor([1, 6]))
    with pytest.raises(TypeError, match="integer"):
        q[0](minidl.tensor([1.0]))
    bag = tq.quantize_dynamic(nn.Sequential(nn.EmbeddingBag(6, 4)),
                              {nn.EmbeddingBag: tq.float_qparams_weight_only_qconfig})[0]
    with pytest.raises(ValueError, match="offsets are required"):
        bag(minidl.tensor([1, 2]))
    with pytest.raises(ValueError, match="offsets must start at 0"):
        bag(minidl.tensor([1, 2]), minidl.tensor([1]))
    # a float model's embedding converts through prepare/convert with its qconfig, too
    model = nn.Sequential(nn.Embedding(6, 4))
    model[0].qconfig = tq.float_qparams_weight_only_qconfig
    converted = tq.convert(tq.prepare(model.eval()))
    assert type(converted[0]) is nnq.Embedding
    np.testing.assert_allclose(converted[0](minidl.tensor([2])).numpy(),
                               model[0](minidl.tensor([2])).detach().numpy(), atol=0.02)


# ---- quantized ConvTranspose1d / ConvTranspose2d -------------------------------------------
CONV_T_CASES = [(2, (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
                (2, (3, 5, (2, 3)), dict(stride=(1, 2), padding=(0, 1))),
                (2, (4, 4, 3), dict(stride=1, padding=2, dilation=2)),
                (1, (3, 6, 4), dict(stride=3, padding=1, output_padding=2)),
                (2, (2, 3, 3), dict(stride=2, padding=0, bias=False)),
                (2, (8, 8, 3), dict(stride=2, padding=1, output_padding=1, groups=8))]


@pytest.mark.parametrize("case", range(len(CONV_T_CASES)))
def test_quantized_conv_transpose_matches_torch_bit_for_bit(case):
    torch = _torch()
    dims, args, kw = CONV_T_CASES[case]
    t_cls = getattr(torch.ao.nn.quantized, f"ConvTranspose{dims}d")
    m_cls = getattr(nnq, f"ConvTranspose{dims}d")
    t_mod, m_mod = t_cls(*args, **kw), m_cls(*args, **kw)
    rng = np.random.default_rng(case)
    w = (rng.standard_normal(tuple(t_mod.weight().shape)) * 0.3).astype(np.float32)
    bias = None if kw.get("bias", True) is False else torch.from_numpy(
        rng.standard_normal(args[1]).astype(np.float32))
    t_mod.set_weight_bias(torch.quantize_per_tensor(torch.from_numpy(w), 0.01, 0, torch.qint8),
                          bias)
    t_mod.scale, t_mod.zero_point = 0.0625, 70  # a float32 number: the state dict keeps it
    assert list(m_mod.state_dict()) == list(t_mod.state_dict())
    m_mod.load_state_dict(t_mod.state_dict())
    shape = (4, args[0], 5, 6) if dims == 2 else (4, args[0], 7)
    t_x, m_x = _qpair(torch, shape, 0.03, 60, case, spread=1.0)
    _same_q(m_mod(m_x), t_mod(t_x))


def test_conv_transpose_through_prepare_and_convert_matches_torch():
    torch = _torch()
    tqq = torch.ao.quantization

    def build(ns):
        n = ns.nn
        return n.Sequential(ns.tq.QuantStub(), n.Conv2d(3, 6, 3, stride=2, padding=1), n.ReLU(),
                            n.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1),
                            ns.tq.DeQuantStub())

    torch.manual_seed(0)
    t_model, m_model = build(_NS("torch")).eval(), build(_NS("minidl")).eval()
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    m_model.qconfig = tq.get_default_qconfig("x86")
    with pytest.raises(AssertionError, match="Per channel weight observer is not supported yet"):
        tq.prepare(m_model)
    out = []
    for model, mod, data_of in ((t_model, tqq, torch.from_numpy), (m_model, tq, minidl.tensor)):
        model.qconfig = mod.QConfig(activation=mod.HistogramObserver.with_args(reduce_range=True),
                                    weight=mod.default_weight_observer)
        prepared = mod.prepare(model)
        for x in _images(4, shape=(2, 3, 8, 8)):
            prepared(data_of(x))
        out.append(mod.convert(prepared))
    t_q, m_q = out
    assert type(m_q[3]) is nnq.ConvTranspose2d and repr(m_q[3]).startswith(
        "QuantizedConvTranspose2d(6, 4, kernel_size=(3, 3), stride=(2, 2)")
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    m_q.load_state_dict(t_q.state_dict())
    x = 0.5 * _images(5, n=1, shape=(2, 3, 8, 8))[0]
    assert_cannot_saturate(m_q, x)
    np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(), t_q(torch.from_numpy(x)).numpy())


def test_quantized_conv_transpose_refuses_what_does_not_fit():
    mod = nnq.ConvTranspose2d(4, 6, 3, stride=2)
    w = minidl.quantize_per_channel(minidl.randn(4, 6, 3, 3), minidl.tensor([0.1] * 4),
                                    minidl.tensor([0] * 4), 0, minidl.qint8)
    with pytest.raises(ValueError, match="per tensor"):
        mod.set_weight_bias(w, None)
    with pytest.raises(ValueError, match="output_padding"):
        nnq.ConvTranspose2d(4, 6, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="channels"):
        mod(minidl.quantize_per_tensor(minidl.randn(1, 3, 4, 4), 0.1, 0, minidl.quint8))
    # the integer sums are those of the float transposed convolution of the dequantized values
    x = minidl.quantize_per_tensor(minidl.randn(2, 4, 5, 5), 0.05, 64, minidl.quint8)
    wq = minidl.quantize_per_tensor(minidl.randn(4, 6, 3, 3) * 0.2, 0.01, 0, minidl.qint8)
    mod.set_weight_bias(wq, minidl.zeros(6))
    mod.scale, mod.zero_point = 0.02, 128
    expected = nn.functional.conv_transpose2d(x.dequantize(), wq.dequantize(), stride=2)
    np.testing.assert_allclose(mod(x).dequantize().numpy(), np.clip(expected.numpy(), -2.56, 2.54),
                               atol=0.01 + 1e-6)


# ---- quantized LayerNorm -------------------------------------------------------------------
@pytest.mark.parametrize("shape,normalized", [((4, 8, 64), (64,)), ((3, 128), (128,)),
                                              ((2, 4, 8, 8), (8, 8)), ((5, 37), (37,))])
def test_quantized_layer_norm_matches_torch(shape, normalized):
    torch = _torch()
    torch.manual_seed(0)
    t_ln = torch.nn.LayerNorm(normalized)
    with torch.no_grad():
        t_ln.weight.uniform_(0.5, 1.5)
        t_ln.bias.uniform_(-0.5, 0.5)
    t_q = torch.ao.nn.quantized.LayerNorm(normalized, t_ln.weight, t_ln.bias, 0.025, 128)
    m_q = nnq.LayerNorm(normalized, nn.Parameter(minidl.tensor(t_ln.weight.detach().numpy())),
                        nn.Parameter(minidl.tensor(t_ln.bias.detach().numpy())), 0.025, 128)
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    # torch's scalar loop covers a row's last elements past its vector loop (rare ties)
    exact = int(np.prod(normalized)) % 64 == 0
    for seed in range(3):
        t, m = _qpair(torch, shape, 0.03, 40 + 50 * seed, seed)
        _same_q(m_q(m), t_q(t), exact)
    with pytest.raises(ValueError, match="last dims"):
        m_q(_qpair(torch, (2, 3), 0.1, 0)[1])


def test_layer_norm_through_prepare_and_convert():
    torch = _torch()
    tqq = torch.ao.quantization

    def build(ns):
        n = ns.nn
        return n.Sequential(ns.tq.QuantStub(), n.Linear(16, 64), n.LayerNorm(64),
                            n.Linear(64, 8), ns.tq.DeQuantStub())

    torch.manual_seed(1)
    t_model, m_model = build(_NS("torch")).eval(), build(_NS("minidl")).eval()
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    out = []
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((8, 16)).astype(np.float32) for _ in range(3)]
    for model, mod, data_of in ((t_model, tqq, torch.from_numpy), (m_model, tq, minidl.tensor)):
        model.qconfig = mod.get_default_qconfig("x86")
        prepared = mod.prepare(model)
        for x in data:
            prepared(data_of(x))
        out.append(mod.convert(prepared))
    t_q, m_q = out
    assert type(m_q[2]) is nnq.LayerNorm
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    m_q.load_state_dict(t_q.state_dict())
    x = 0.5 * data[0]
    assert_cannot_saturate(m_q, x)
    np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(), t_q(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("fmt", ["minidl", "torch"])
def test_quantized_embedding_state_dict_saves_and_loads(tmp_path, fmt):
    """Float-qparams weights through minidl.save / minidl.load, and (torch's format) through
    torch.load into torch's quantized Embedding and back from torch.save."""
    spec = {nn.Embedding: tq.float_qparams_weight_only_qconfig}
    minidl.manual_seed(0)
    q = tq.quantize_dynamic(nn.Sequential(nn.Embedding(7, 5)), spec)
    path = str(tmp_path / ("e.pt" if fmt == "torch" else "e.npz"))
    minidl.save(q.state_dict(), path, **({"format": "torch"} if fmt == "torch" else {}))
    other = tq.quantize_dynamic(nn.Sequential(nn.Embedding(7, 5)), spec)
    other.load_state_dict(minidl.load(path))
    rows = minidl.tensor([[0, 6], [3, 3]])
    np.testing.assert_array_equal(other[0](rows).numpy(), q[0](rows).numpy())
    assert other[0].weight().qscheme() is minidl.per_channel_affine_float_qparams
    if fmt == "torch":
        torch = _torch()
        t_q = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Embedding(7, 5)),
            {torch.nn.Embedding: torch.ao.quantization.float_qparams_weight_only_qconfig})
        t_q.load_state_dict(torch.load(path, weights_only=False))
        np.testing.assert_array_equal(t_q[0](torch.tensor([[0, 6], [3, 3]])).numpy(),
                                      q[0](rows).numpy())
        torch.save(t_q.state_dict(), str(tmp_path / "t.pt"))
        other.load_state_dict(minidl.load(str(tmp_path / "t.pt")))
        np.testing.assert_array_equal(other[0](rows).numpy(), q[0](rows).numpy())


@pytest.mark.parametrize("size", [2, 5])
def test_quantized_mean_of_a_convolution_output_matches_torch(size):
    """torch's quantized convolutions give channels-last tensors, whose mean over H, W goes
    through the float mean (not the integers' mean): minidl marks its convolutions' outputs
    and takes the same path; the float sums' order differs (NumPy's, torch's), which can move
    a rare tie by one step."""
    torch = _torch()
    t_conv = torch.ao.nn.quantized.Conv2d(4, 16, 1)
    rng = np.random.default_rng(size)
    w = torch.quantize_per_tensor(torch.from_numpy(rng.standard_normal((16, 4, 1, 1))
                                                   .astype(np.float32) * 0.3), 0.01, 0, torch.qint8)
    t_conv.set_weight_bias(w, None)
    t_conv.scale, t_conv.zero_point = 0.0625, 100
    m_conv = nnq.Conv2d(4, 16, 1, bias=False)
    m_conv.load_state_dict(t_conv.state_dict())
    for seed in range(4):
        t_x, m_x = _qpair(torch, (8, 4, size, size), 0.05, 70, seed)
        t_y, m_y = t_conv(t_x), m_conv(m_x)
        assert t_y.is_contiguous(memory_format=torch.channels_last) and m_y._channels_last
        _same_q(m_y.mean([2, 3]), t_y.mean([2, 3]), exact=size == 2)
        _same_q(nn.ReLU()(m_y).mean([2, 3]), torch.nn.ReLU()(t_y).mean([2, 3]), exact=size == 2)
        # the integers' mean for a contiguous (NCHW) input, as torch's
        _same_q(m_x.mean([2, 3]), t_x.mean([2, 3]))


# ---- hardsigmoid, and the fixed-qparams FakeQuantize of QAT --------------------------------
@pytest.mark.parametrize("dtype", ["quint8", "qint8"])
def test_quantized_hardsigmoid_and_tanh_match_torch(dtype):
    torch = _torch()
    for shape in [(4, 8, 16, 16), (3, 5, 7)]:
        t, m = _qpair(torch, shape, 0.04, 30 if dtype == "quint8" else -10, 1, dtype)
        exact = int(np.prod(shape)) % 128 == 0
        _same_q(nn.functional.hardsigmoid(m), torch.nn.functional.hardsigmoid(t), exact)
        _same_q(nn.Hardsigmoid()(m), torch.nn.Hardsigmoid()(t), exact)
        _same_q(nn.Tanh()(m), torch.nn.Tanh()(t), exact)
        _same_q(m.tanh(), t.tanh(), exact)


def test_qat_puts_fixed_qparams_fake_quant_on_sigmoid_like_outputs_as_torch():
    torch = _torch()

    def build(ns):
        n = ns.nn
        return n.Sequential(ns.tq.QuantStub(), n.Linear(8, 16), n.Sigmoid(), n.Linear(16, 16),
                            n.Tanh(), n.Linear(16, 8), n.Hardsigmoid(), ns.tq.DeQuantStub())

    torch.manual_seed(0)
    t_model, m_model = build(_NS("torch")), build(_NS("minidl"))
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    preps = []
    for model, mod, kw in ((t_model, torch.ao.quantization, {"version": 0}), (m_model, tq, {})):
        model.train()
        model.qconfig = mod.get_default_qat_qconfig("fbgemm", **kw)
        preps.append(mod.prepare_qat(model))
    t_prep, m_prep = preps
    fq = m_prep[2].activation_post_process
    assert type(fq) is tq.FixedQParamsFakeQuantize
    assert fq.scale.item() == 1 / 256 and fq.zero_point.item() == 0
    assert m_prep[4].activation_post_process.zero_point.item() == 128
    assert list(m_prep.state_dict()) == list(t_prep.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(m_prep(minidl.tensor(x)).detach().numpy(),
                               t_prep(torch.from_numpy(x)).detach().numpy(), rtol=0, atol=1e-6)
    for prep, mod in ((t_prep, torch.ao.quantization), (m_prep, tq)):
        prep.eval()
    t_q, m_q = torch.ao.quantization.convert(t_prep), tq.convert(m_prep)
    # the fake quants are gone; sigmoid and hardsigmoid run on quantized tensors with their
    # fixed output qparams
    assert "activation_post_process" not in m_q[2]._modules
    m_q.load_state_dict(t_q.state_dict())
    q_in = m_q[1](m_q[0](minidl.tensor(x)))
    out = m_q[2](q_in)
    assert out.q_scale() == 1 / 256 and out.q_zero_point() == 0
    # layer by layer from the same input: each quantized Linear gives the exact integer result
    # (checked from torch's own quantized weights), the rest equal torch's. torch equals the
    # exact result too, except where its int8 GEMM saturates: fbgemm's AVX2 code sums pairs of
    # uint8*int8 products in int16 (vpmaddubsw), and the sigmoid's full 0-255 outputs against
    # +-127 weights pass 32767 (VNNI sums in int32; minidl sums in int64): tests/
    # _fbgemm_saturation.py bounds each layer's pair sums whatever fbgemm's pairing
    bounds = worst_pairs(m_q, x)
    a = minidl.tensor(x)
    for i, (mine, theirs) in enumerate(zip(m_q, t_q)):
        b = torch.from_numpy(x) if i == 0 else _torch_q(torch, a)
        out_m, out_t = mine(a), theirs(b)
        if isinstance(theirs, torch.ao.nn.quantized.Linear):
            xi = b.int_repr().numpy().astype(np.int64) - b.q_zero_point()
            w = theirs.weight()
            wi = w.int_repr().numpy().astype(np.int64)
            exact = xi @ wi.T * (b.q_scale() * w.q_per_channel_scales().numpy())
            exact = np.clip(np.round((exact + theirs.bias().detach().numpy()) / theirs.scale)
                            + theirs.zero_point, 0, 255)
            np.testing.assert_array_equal(out_m.int_repr().numpy(), exact, err_msg=f"layer {i}")
            if HAS_VNNI or bounds[str(i)] <= INT16_MAX:
                np.testing.assert_array_equal(out_t.int_repr().numpy(), exact)
        elif i < len(m_q) - 1:
            np.testing.assert_array_equal(out_m.int_repr().numpy(), out_t.int_repr().numpy(),
                                          err_msg=f"layer {i}")
            assert (out_m.q_scale(), out_m.q_zero_point()) == (out_t.q_scale(),
                                                               out_t.q_zero_point())
        else:
            np.testing.assert_array_equal(out_m.numpy(), out_t.numpy())
        a = out_m


def _torch_q(torch, q):
    """minidl's per-tensor quantized tensor as torch's (same integers, scale, zero point)."""
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(q.int_repr().numpy()),
                                                   q.q_scale(), q.q_zero_point())


# ---- the fake-quant gradients without torch ------------------------------------------------
def test_learnable_per_channel_fake_quant_gradients_by_hand():
    x = minidl.tensor([[0.26, -5.0, 5.0], [0.26, 0.5, 0.05]], requires_grad=True)
    scale = minidl.tensor([0.1, 0.05], requires_grad=True)
    zp = minidl.tensor([2.0, 0.4], requires_grad=True)  # the second rounds to 0
    y = minidl._fake_quantize_learnable_per_channel_affine(x, scale, zp, 0, 0, 10, 0.5)
    np.testing.assert_allclose(y.detach().numpy(), [[0.3, -0.2, 0.8], [0.25, 0.5, 0.05]],
                               atol=1e-6)
    y.backward(minidl.ones(2, 3))
    assert x.grad.numpy().tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    # row 0: inside (0.3 - 0.26) / 0.1, below 0 - 2, above 10 - 2; row 1: (0.25 - 0.26) / 0.05
    # and the two exact ones; each times grad_factor 0.5
    np.testing.assert_allclose(scale.grad.numpy(), [0.5 * (0.4 - 2 + 8), 0.5 * -0.2], atol=1e-5)
    np.testing.assert_allclose(zp.grad.numpy(), [0.5 * -0.2, 0.0], atol=1e-6)


def test_float_zero_point_fake_quant_double_backward_by_gradgradcheck():
    from minidl.testing import gradgradcheck

    # points a quarter step from the rounding boundaries (the zero point 0.5 shifts them)
    x = minidl.tensor(np.array([[-0.075, 0.175, 0.575], [0.3, -2.0, 0.05]]), requires_grad=True,
                      dtype=minidl.float64)
    scale = minidl.tensor(np.array([0.1, 0.1]))
    zp = minidl.tensor(np.array([0.5, 0.0], dtype=np.float32))
    assert gradgradcheck(
        lambda t: minidl.fake_quantize_per_channel_affine(t, scale, zp, 0, -10, 10), [x],
        eps=1e-4)


def test_fuse_conv_transpose_and_batch_norm_in_eval():
    torch = _torch()

    def build(ns):
        n = ns.nn
        return n.Sequential(n.ConvTranspose2d(4, 6, 3, stride=2), n.BatchNorm2d(6))

    torch.manual_seed(0)
    t_model, m_model = build(_NS("torch")), build(_NS("minidl"))
    with torch.no_grad():
        t_model[1].running_var.uniform_(0.5, 2.0)
        t_model[1].running_mean.uniform_(-0.5, 0.5)
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    t_fused = torch.ao.quantization.fuse_modules(t_model.eval(), ["0", "1"])
    m_fused = tq.fuse_modules(m_model.eval(), ["0", "1"])
    assert type(m_fused[0]) is nn.ConvTranspose2d and type(m_fused[1]) is nn.Identity
    np.testing.assert_allclose(m_fused[0].weight.detach().numpy(),
                               t_fused[0].weight.detach().numpy(), rtol=1e-6, atol=1e-7)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(m_fused(minidl.tensor(x)).detach().numpy(),
                               m_model(minidl.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(NotImplementedError, match="not yet supported in QAT"):
        tq.fuse_modules_qat(build(_NS("minidl")).train(), ["0", "1"])


# ---- quantized average pooling -------------------------------------------------------------
AVG_CASES = [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, stride=2),
             dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
             dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
             dict(kernel_size=(2, 3), stride=(1, 2), divisor_override=5)]


@pytest.mark.parametrize("case", range(len(AVG_CASES)))
def test_quantized_avg_pool2d_matches_torch(case):
    """torch's kernels round differently over NCHW data (the zero point added before
    rounding) and channels-last data (after, for whole vectors of channels): both here, on a
    QuantStub's output and on a quantized convolution's (odd zero points, where ties differ)."""
    torch = _torch()
    kw = AVG_CASES[case]
    tF = torch.nn.functional
    for seed in range(3):
        t, m = _qpair(torch, (2, 24, 9, 9), 0.02, 31 + 40 * seed, seed)
        _same_q(nn.functional.avg_pool2d(m, **kw), tF.avg_pool2d(t, **kw))
        _same_q(nn.AvgPool2d(**kw)(m), torch.nn.AvgPool2d(**kw)(t))
        t_cl = t.contiguous(memory_format=torch.channels_last)
        m._channels_last = True  # what a quantized convolution gives
        cpu = torch.backends.cpu.get_cpu_capability()
        if cpu.startswith("AVX512"):  # vectors of 16 channels
            _same_q(nn.functional.avg_pool2d(m, **kw), tF.avg_pool2d(t_cl, **kw))
        else:  # AVX2 may take vectors of 8: channels 16-23 round the other way at ties
            mine, theirs = nn.functional.avg_pool2d(m, **kw), tF.avg_pool2d(t_cl, **kw)
            assert np.abs(mine.int_repr().numpy().astype(int)
                          - theirs.int_repr().numpy().astype(int)).max() <= 1
    if case == 0:
        _same_q(nn.functional.avg_pool2d(m, 3, 1, 1), tF.avg_pool2d(t_cl, 3, 1, 1))
        with pytest.raises(ValueError, match="at most half"):
            nn.functional.avg_pool2d(m, 2, padding=2)


def test_qfunctional_matmul_matches_torch():
    torch = _torch()
    t_a, m_a = _qpair(torch, (3, 4, 5), 0.05, 60, 0)
    t_b, m_b = _qpair(torch, (3, 5, 6), 0.04, 70, 1)
    qf = nnq.QFunctional()
    qf.scale, qf.zero_point = 0.1, 64
    t_qf = torch.ao.nn.quantized.QFunctional()
    t_qf.scale, t_qf.zero_point = 0.1, 64
    _same_q(qf.matmul(m_a, m_b), t_qf.matmul(t_a, t_b))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        qf.matmul(m_a, m_a)
    # the float form through prepare/convert: observed, then quantized
    ff = nnq.FloatFunctional()
    np.testing.assert_allclose(ff.matmul(m_a.dequantize(), m_b.dequantize()).numpy(),
                               np.matmul(m_a.dequantize().numpy(), m_b.dequantize().numpy()),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,groups", [((2, 8, 8, 8), 4), ((3, 6, 5, 7), 3), ((2, 4, 64), 2)])
def test_quantized_group_and_instance_norm_match_torch(shape, groups):
    torch = _torch()
    c = shape[1]
    rng = np.random.default_rng(c)
    w = rng.uniform(0.5, 1.5, c).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, c).astype(np.float32)
    tw, tb = torch.nn.Parameter(torch.from_numpy(w)), torch.nn.Parameter(torch.from_numpy(b))
    mw, mb = nn.Parameter(minidl.tensor(w)), nn.Parameter(minidl.tensor(b))
    dims = len(shape) - 2
    pairs = [(nnq.GroupNorm(groups, c, mw, mb, 0.03, 110),
              torch.ao.nn.quantized.GroupNorm(groups, c, tw, tb, 0.03, 110)),
             (getattr(nnq, f"InstanceNorm{dims}d")(c, mw, mb, 0.025, 128, affine=True),
              getattr(torch.ao.nn.quantized, f"InstanceNorm{dims}d")(c, tw, tb, 0.025, 128,
                                                                     affine=True))]
    # torch's scalar loop takes the last elements of each channel past its vector loop
    exact = int(np.prod(shape[2:])) % 64 == 0
    for mine, theirs in pairs:
        assert list(mine.state_dict()) == list(theirs.state_dict())
        for seed in range(2):
            t, m = _qpair(torch, shape, 0.04, 50 + 60 * seed, seed)
            _same_q(mine(m), theirs(t), exact)
    with pytest.raises(ValueError, match="expected an input of shape"):
        pairs[0][0](_qpair(torch, (2, c + 1, 4), 0.1, 0)[1])


# ---- 3-D: quantized Conv3d and BatchNorm3d -------------------------------------------------
def test_conv3d_and_batch_norm3d_through_prepare_and_convert_match_torch():
    torch = _torch()

    def build(ns):
        n = ns.nn
        return n.Sequential(ns.tq.QuantStub(), n.Conv3d(3, 10, 3, padding=1), n.BatchNorm3d(10),
                            n.Conv3d(10, 6, (1, 3, 3), stride=(1, 2, 2), groups=2),
                            ns.tq.DeQuantStub())

    torch.manual_seed(0)
    t_model, m_model = build(_NS("torch")).eval(), build(_NS("minidl")).eval()
    with torch.no_grad():
        t_model[2].running_var.uniform_(0.5, 2.0)
        t_model[2].running_mean.uniform_(-0.3, 0.3)
    m_model.load_state_dict({k: v.detach().numpy() for k, v in t_model.state_dict().items()})
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((2, 3, 4, 6, 6)).astype(np.float32) for _ in range(3)]
    out = []
    for model, mod, data_of in ((t_model, torch.ao.quantization, torch.from_numpy),
                                (m_model, tq, minidl.tensor)):
        model.qconfig = mod.get_default_qconfig("x86")
        prepared = mod.prepare(model)
        for x in data:
            prepared(data_of(x))
        out.append(mod.convert(prepared))
    t_q, m_q = out
    assert type(m_q[1]) is nnq.Conv3d and type(m_q[2]) is nnq.BatchNorm3d
    assert repr(m_q[3]) == repr(t_q[3]).replace(str(t_q[3].scale), str(m_q[3].scale))
    assert list(m_q.state_dict()) == list(t_q.state_dict())
    m_q.load_state_dict(t_q.state_dict())
    x = 0.5 * data[0]
    assert_cannot_saturate(m_q, x)
    np.testing.assert_array_equal(m_q(minidl.tensor(x)).numpy(), t_q(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("dim", [None, 1, -1])
def test_quantized_softmax_matches_torch_within_a_step(dim):
    torch = _torch()
    mine, theirs = nnq.Softmax(dim, 1 / 256, 0), torch.ao.nn.quantized.Softmax(dim, 1 / 256, 0)
    for seed in range(3):
        t, m = _qpair(torch, (4, 16, 8), 0.05, 100, seed)
        _same_q(mine(m), theirs(t), exact=False)
    assert repr(mine) == f"QuantizedSoftmax(dim={dim})"


def test_functional_leaky_relu_relu6_hardtanh_on_quantized_tensors_match_torch():
    torch = _torch()
    tF, F = torch.nn.functional, nn.functional
    for shape in [(4, 8, 16, 16), (3, 5, 7)]:
        scalar = _scalar_torch(torch)
        exact = int(np.prod(shape)) % 128 == 0 and not scalar
        share = 0.95 if scalar else 0.99
        t, m = _qpair(torch, shape, 0.05, 60, 2)
        _same_q(F.leaky_relu(m, 0.2), tF.leaky_relu(t, 0.2), exact, share)
        _same_q(F.relu6(m), tF.relu6(t))
        _same_q(F.hardtanh(m, -0.5, 0.75), tF.hardtanh(t, -0.5, 0.75))
        _same_q(nn.LeakyReLU(0.1)(m), torch.nn.LeakyReLU(0.1)(t), exact, share)
