"""A seventh set of programs, each written once as torch code and run unchanged by torch 2.13 and
by minidl (``tt`` is either module) from the same initial weights, in float64: model
architectures and classic machine learning as their reference code writes them. EfficientNet
MBConv blocks (squeeze-excitation, stochastic depth), a DenseNet (``torch.cat`` in a loop), an
Inception module with an auxiliary head, SqueezeNet fire modules, a RetinaNet-style FPN with a
focal loss, WaveNet (dilated causal convolutions, gated activations, mu-law), a Conformer block
(depthwise Conv1d, GLU, relative position bias), a matrix-factorisation recommender with sparse
embeddings and SparseAdam, Wide&Deep with EmbeddingBag (offsets, sum/mean,
per_sample_weights), a DLRM-style dot interaction, logistic regression by L-BFGS with a strong
Wolfe line search, k-means, PCA by ``pca_lowrank`` and ``linalg.svd``, a GRU forecaster with an
autoregressive decoder, a denoising autoencoder scoring anomalies, a Siamese Bi-LSTM over packed
sequences, a Bi-LSTM-CRF tagger, an ``nn.Transformer`` with batch_first, norm_first and memory
masks, a ResNet with bottlenecks and zero-initialised residuals, a mixture density network with
``torch.distributions`` and attention-based multiple-instance learning.

minidl's random generator is its own (not torch's), so every draw the two runs share comes from
numpy; where a program draws from the framework's generator (dropout, stochastic depth) the
parity run turns that draw off and a minidl-only run turns it on. What the programs found
missing in minidl is fixed, each fix with its own test at the end."""
import math

import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


from _program_parity import _load, _np, _params, _parity  # noqa: E402


def _train(opt, loss_fn, steps, losses):
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---- 1. EfficientNet: MBConv (expand, depthwise, squeeze-excitation, project), stochastic depth
def efficientnet(tt, state=None, steps=3, drop=0.0):
    nn, F = tt.nn, tt.nn.functional

    def drop_path(x, p, training):
        if p == 0.0 or not training:
            return x
        keep = 1.0 - p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    class SqueezeExcitation(nn.Module):
        def __init__(self, channels, squeeze):
            super().__init__()
            self.fc1 = nn.Conv2d(channels, squeeze, 1)
            self.fc2 = nn.Conv2d(squeeze, channels, 1)

        def forward(self, x):
            s = F.adaptive_avg_pool2d(x, 1)
            return x * tt.sigmoid(self.fc2(F.silu(self.fc1(s))))

    class MBConv(nn.Module):
        def __init__(self, cin, cout, expand, stride, p):
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            layers = []
            if expand != 1:
                layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                           nn.SiLU(inplace=True)]
            layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                       nn.BatchNorm2d(hidden), nn.SiLU(inplace=True),
                       SqueezeExcitation(hidden, max(1, cin // 4)),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.block = nn.Sequential(*layers)
            self.p = p

        def forward(self, x):
            out = self.block(x)
            if self.use_res:
                out = drop_path(out, self.p, self.training) + x
            return out

    class EfficientNet(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                      nn.SiLU())
            cfg = [(8, 8, 1, 1), (8, 12, 4, 2), (12, 12, 4, 1)]
            self.blocks = nn.Sequential(*[MBConv(*c, p=drop * i / len(cfg))
                                          for i, c in enumerate(cfg)])
            self.head = nn.Sequential(nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16),
                                      nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Dropout(0.0), nn.Linear(16, classes))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    init_range = 1.0 / math.sqrt(m.out_features)
                    nn.init.uniform_(m.weight, -init_range, init_range)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    rng = np.random.default_rng(1)
    x = tt.from_numpy(rng.standard_normal((4, 3, 12, 12)))
    y = tt.from_numpy(rng.integers(0, 3, 4))
    model = EfficientNet().double()
    _load(model, tt, state)
    opt = tt.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-3, momentum=0.9,
                           weight_decay=1e-5)
    losses = _train(opt, lambda: F.cross_entropy(model(x), y, label_smoothing=0.1), steps, [])
    model.eval()
    with tt.no_grad():
        probs = model(x).softmax(-1)
    return {"losses": losses, "probs": _np(probs), "params": _params(model)}


def test_efficientnet_trains_the_same():
    _parity(efficientnet)


def test_efficientnet_with_stochastic_depth_runs_in_minidl():
    out = efficientnet(minidl, drop=0.5)
    assert np.isfinite(out["losses"]).all()
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0)


# ---- 2. DenseNet: BN-ReLU-Conv bottleneck layers concatenated in a loop, transitions ---------
def densenet(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class DenseLayer(nn.Module):
        def __init__(self, cin, growth, bn_size):
            super().__init__()
            self.norm1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(bn_size * growth)
            self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

        def forward(self, inputs):
            concated = tt.cat(inputs, 1)
            bottleneck = self.conv1(F.relu(self.norm1(concated)))
            return self.conv2(F.relu(self.norm2(bottleneck)))

    class DenseBlock(nn.ModuleDict):
        def __init__(self, layers, cin, growth, bn_size=2):
            super().__init__()
            for i in range(layers):
                self.add_module("denselayer%d" % (i + 1), DenseLayer(cin + i * growth, growth,
                                                                     bn_size))

        def forward(self, init_features):
            features = [init_features]
            for name, layer in self.items():
                features.append(layer(features))
            return tt.cat(features, 1)

    class Transition(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__()
            self.norm = nn.BatchNorm2d(cin)
            self.relu = nn.ReLU(inplace=True)
            self.conv = nn.Conv2d(cin, cout, 1, bias=False)
            self.pool = nn.AvgPool2d(2, 2)

    class DenseNet(nn.Module):
        def __init__(self, growth=4, blocks=(2, 2), init=8, classes=4):
            super().__init__()
            self.features = nn.Sequential()
            self.features.add_module("conv0", nn.Conv2d(1, init, 3, padding=1, bias=False))
            self.features.add_module("norm0", nn.BatchNorm2d(init))
            self.features.add_module("relu0", nn.ReLU(inplace=True))
            c = init
            for i, n in enumerate(blocks):
                self.features.add_module("denseblock%d" % (i + 1), DenseBlock(n, c, growth))
                c += n * growth
                if i != len(blocks) - 1:
                    self.features.add_module("transition%d" % (i + 1), Transition(c, c // 2))
                    c //= 2
            self.features.add_module("norm5", nn.BatchNorm2d(c))
            self.classifier = nn.Linear(c, classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            out = F.relu(self.features(x), inplace=True)
            out = tt.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
            return self.classifier(out)

    rng = np.random.default_rng(2)
    x = tt.from_numpy(rng.standard_normal((4, 1, 8, 8)))
    y = tt.from_numpy(rng.integers(0, 4, 4))
    model = DenseNet().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                       weight_decay=1e-4)
    losses = _train(opt, lambda: F.cross_entropy(model(x), y), steps, [])
    names = repr([n for n, _ in model.features.named_children()])
    return {"losses": losses, "names": names, "params": _params(model)}


def test_densenet_trains_the_same():
    out = _parity(densenet)
    assert "denseblock2" in out["names"] and "transition1" in out["names"]


def test_densenet_runs_in_minidl():
    out = densenet(minidl)
    assert np.isfinite(out["losses"]).all()
    assert out["params"]["classifier.weight"].shape == (4, 16)


# ---- 3. Inception (GoogLeNet): four branches concatenated, an auxiliary classifier -----------
def inception(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, **kwargs):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)), inplace=True)

    class Inception(nn.Module):
        def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
            super().__init__()
            self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
            self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1),
                                         BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
            self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1),
                                         BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
            self.branch4 = nn.Sequential(
                nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                BasicConv2d(cin, pool_proj, kernel_size=1))

        def forward(self, x):
            outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
            return tt.cat(outputs, 1)

    class InceptionAux(nn.Module):
        def __init__(self, cin, classes):
            super().__init__()
            self.conv = BasicConv2d(cin, 8, kernel_size=1)
            self.fc1 = nn.Linear(8 * 2 * 2, 16)
            self.fc2 = nn.Linear(16, classes)

        def forward(self, x):
            x = F.adaptive_avg_pool2d(x, (2, 2))
            x = tt.flatten(self.conv(x), 1)
            return self.fc2(F.dropout(F.relu(self.fc1(x), inplace=True), 0.0,
                                      training=self.training))

    class GoogLeNet(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.conv1 = BasicConv2d(3, 8, kernel_size=3, stride=2, padding=1)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.inception3a = Inception(8, 4, 4, 6, 2, 3, 3)
            self.aux1 = InceptionAux(16, classes)
            self.inception3b = Inception(16, 6, 4, 8, 2, 4, 4)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(22, classes)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.1, a=-0.2, b=0.2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.maxpool1(self.conv1(x))
            x = self.inception3a(x)
            aux1 = self.aux1(x) if self.training else None
            x = self.inception3b(x)
            x = self.fc(tt.flatten(self.avgpool(x), 1))
            return x, aux1

    rng = np.random.default_rng(3)
    x = tt.from_numpy(rng.standard_normal((4, 3, 15, 15)))
    y = tt.from_numpy(rng.integers(0, 3, 4))
    model = GoogLeNet().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def loss_fn():
        out, aux = model(x)
        return criterion(out, y) + 0.3 * criterion(aux, y)

    losses = _train(opt, loss_fn, steps, [])
    model.eval()
    with tt.inference_mode():
        out, aux = model(x)
    return {"losses": losses, "eval": _np(out), "aux": repr(aux), "params": _params(model)}


def test_inception_trains_the_same():
    out = _parity(inception)
    assert out["aux"] == "None"


def test_inception_runs_in_minidl():
    out = inception(minidl)
    assert np.isfinite(out["losses"]).all() and out["eval"].shape == (4, 3)


# ---- 4. SqueezeNet: fire modules (squeeze, two expands concatenated), a conv classifier ------
def squeezenet(tt, state=None, steps=3, p=0.0):
    nn = tt.nn

    class Fire(nn.Module):
        def __init__(self, inplanes, squeeze, expand1x1, expand3x3):
            super().__init__()
            self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
            self.squeeze_activation = nn.ReLU(inplace=True)
            self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
            self.expand1x1_activation = nn.ReLU(inplace=True)
            self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
            self.expand3x3_activation = nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.squeeze_activation(self.squeeze(x))
            return tt.cat([self.expand1x1_activation(self.expand1x1(x)),
                           self.expand3x3_activation(self.expand3x3(x))], 1)

    class SqueezeNet(nn.Module):
        def __init__(self, classes=4):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, kernel_size=3, stride=2), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(8, 2, 4, 4), Fire(8, 2, 4, 4),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(8, 4, 6, 6))
            final_conv = nn.Conv2d(12, classes, kernel_size=1)
            self.classifier = nn.Sequential(nn.Dropout(p=p), final_conv, nn.ReLU(inplace=True),
                                            nn.AdaptiveAvgPool2d((1, 1)))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    if m is final_conv:
                        nn.init.normal_(m.weight, mean=0.0, std=0.01 * 10)
                    else:
                        nn.init.kaiming_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0.01)

        def forward(self, x):
            return tt.flatten(self.classifier(self.features(x)), 1)

    rng = np.random.default_rng(4)
    x = tt.from_numpy(rng.standard_normal((4, 3, 18, 18)))
    y = tt.from_numpy(rng.integers(0, 4, 4))
    model = SqueezeNet().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    sched = tt.optim.lr_scheduler.PolynomialLR(opt, total_iters=5, power=2.0)
    losses = []
    for _ in range(steps):
        _train(opt, lambda: nn.functional.cross_entropy(model(x), y), 1, losses)
        sched.step()
    shapes = repr([tuple(model.features[:k](x).shape) for k in (3, 6, 7)])
    return {"losses": losses, "lr": sched.get_last_lr(), "shapes": shapes,
            "params": _params(model)}


def test_squeezenet_trains_the_same():
    out = _parity(squeezenet)
    assert out["shapes"] == repr([(4, 8, 4, 4), (4, 8, 2, 2), (4, 12, 2, 2)])


def test_squeezenet_with_dropout_runs_in_minidl():
    out = squeezenet(minidl, p=0.5)
    assert np.isfinite(out["losses"]).all()


# ---- 5. RetinaNet-style FPN: lateral 1x1 convs, nearest upsampling, shared heads, focal loss --
def fpn_retinanet(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.c2 = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU())
            self.c3 = nn.Sequential(nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU())
            self.c4 = nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())

        def forward(self, x):
            c2 = self.c2(x)
            c3 = self.c3(c2)
            return [c2, c3, self.c4(c3)]

    class FPN(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
            self.layer_blocks = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                              for _ in in_channels)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, a=1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, feats):
            last_inner = self.inner_blocks[-1](feats[-1])
            results = [self.layer_blocks[-1](last_inner)]
            for idx in range(len(feats) - 2, -1, -1):
                inner_lateral = self.inner_blocks[idx](feats[idx])
                top_down = F.interpolate(last_inner, size=inner_lateral.shape[-2:],
                                         mode="nearest")
                last_inner = inner_lateral + top_down
                results.insert(0, self.layer_blocks[idx](last_inner))
            results.append(F.max_pool2d(results[-1], 1, 2, 0))  # the extra "pool" level
            return results

    class Head(nn.Module):
        def __init__(self, channels, anchors, classes, prior=0.01):
            super().__init__()
            self.cls_logits = nn.Conv2d(channels, anchors * classes, 3, padding=1)
            self.bbox_reg = nn.Conv2d(channels, anchors * 4, 3, padding=1)
            self.classes = classes
            nn.init.normal_(self.cls_logits.weight, std=0.01)
            nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

        def forward(self, feats):
            cls, reg = [], []
            for f in feats:
                N, _, H, W = f.shape
                c = self.cls_logits(f).view(N, -1, self.classes, H, W)
                cls.append(c.permute(0, 3, 4, 1, 2).reshape(N, -1, self.classes))
                r = self.bbox_reg(f).view(N, -1, 4, H, W)
                reg.append(r.permute(0, 3, 4, 1, 2).reshape(N, -1, 4))
            return tt.cat(cls, dim=1), tt.cat(reg, dim=1)

    def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0):
        p = tt.sigmoid(inputs)
        ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce_loss * ((1 - p_t) ** gamma)
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        return (alpha_t * loss).sum()

    rng = np.random.default_rng(5)
    x = tt.from_numpy(rng.standard_normal((2, 3, 16, 16)))
    model = nn.ModuleDict({"backbone": Backbone(), "fpn": FPN([4, 8, 12], 6),
                           "head": Head(6, 2, 3)}).double()
    _load(model, tt, state)
    A = 2 * (8 * 8 + 4 * 4 + 2 * 2 + 1 * 1)
    labels = rng.integers(-1, 3, (2, A))  # -1: background
    labels[:, :3] = 1
    cls_t = tt.from_numpy(labels)
    box_t = tt.from_numpy(rng.standard_normal((2, A, 4)))
    opt = tt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def loss_fn():
        cls, reg = model["head"](model["fpn"](model["backbone"](x)))
        foreground = cls_t >= 0
        num_fg = foreground.sum().clamp(min=1)
        gt = tt.zeros_like(cls)
        gt[foreground, cls_t[foreground]] = 1.0
        l_cls = sigmoid_focal_loss(cls, gt) / num_fg
        l_box = F.smooth_l1_loss(reg[foreground], box_t[foreground], beta=1 / 9,
                                 reduction="sum") / num_fg
        return l_cls + l_box

    losses = _train(opt, loss_fn, steps, [])
    with tt.no_grad():
        cls, _ = model["head"](model["fpn"](model["backbone"](x)))
        scores, idx = cls.sigmoid().flatten(1).topk(5)
    return {"losses": losses, "scores": _np(scores), "idx": repr(idx.tolist()),
            "params": _params(model)}


def test_fpn_retinanet_trains_the_same():
    _parity(fpn_retinanet)


def test_fpn_retinanet_runs_in_minidl():
    out = fpn_retinanet(minidl)
    assert np.isfinite(out["losses"]).all() and out["losses"][-1] < out["losses"][0]
