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
``torch.distributions``, attention-based multiple-instance learning, Kim's CNN for sentences,
AlexNet with LocalResponseNorm, a Deep & Cross Network, a multi-margin SVM with ridge regression
by ``solve`` and ``lstsq``, a Gaussian mixture fitted by EM, k-NN with Gaussian naive Bayes,
gradient-boosted stumps on quantile bins (``bucketize``, ``bincount``) and label spreading over a
sparse k-NN graph (``sparse_coo_tensor``, ``torch.sparse.mm``).

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


# ---- 6. WaveNet: mu-law quantisation, dilated causal Conv1d, gated tanh*sigmoid, skips -------
def wavenet(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    Q = 16

    def mu_law_encode(x, mu=Q - 1):
        mu = tt.tensor(mu, dtype=x.dtype)
        y = tt.sign(x) * tt.log1p(mu * tt.abs(x)) / tt.log1p(mu)
        return ((y + 1) / 2 * mu + 0.5).to(tt.int64)

    def mu_law_decode(q, mu=Q - 1):
        y = 2 * q.to(tt.float64) / mu - 1
        return tt.sign(y) * (tt.pow(1 + mu, tt.abs(y)) - 1) / mu

    class CausalConv1d(nn.Conv1d):
        def __init__(self, cin, cout, kernel_size, dilation=1):
            super().__init__(cin, cout, kernel_size, dilation=dilation)
            self.left = (kernel_size - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, res, skip, dilation):
            super().__init__()
            self.dilated = CausalConv1d(res, 2 * res, 2, dilation)
            self.res_out = nn.Conv1d(res, res, 1)
            self.skip_out = nn.Conv1d(res, skip, 1)

        def forward(self, x):
            filt, gate = self.dilated(x).chunk(2, dim=1)
            h = tt.tanh(filt) * tt.sigmoid(gate)
            return x + self.res_out(h), self.skip_out(h)

    class WaveNet(nn.Module):
        def __init__(self, res=6, skip=8, layers=4):
            super().__init__()
            self.embed = nn.Embedding(Q, res)
            self.causal = CausalConv1d(res, res, 2)
            self.blocks = nn.ModuleList(ResidualBlock(res, skip, 2 ** i) for i in range(layers))
            self.post = nn.Sequential(nn.ReLU(), nn.Conv1d(skip, skip, 1), nn.ReLU(),
                                      nn.Conv1d(skip, Q, 1))
            self.receptive_field = 2 + sum(2 ** i for i in range(layers))

        def forward(self, q):
            x = self.causal(self.embed(q).transpose(1, 2))
            skips = 0
            for block in self.blocks:
                x, s = block(x)
                skips = skips + s
            return self.post(skips)

    rng = np.random.default_rng(6)
    t = np.linspace(0, 4 * np.pi, 40)
    audio = tt.from_numpy(0.8 * np.sin(t[None] * rng.uniform(1, 3, (3, 1)))
                          + 0.05 * rng.standard_normal((3, 40)))
    q = mu_law_encode(audio)
    model = WaveNet().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=3e-3)
    losses = _train(opt, lambda: F.cross_entropy(model(q[:, :-1]), q[:, 1:]), steps, [])
    # greedy generation, one sample at a time, from the receptive field of the last samples
    gen = q[:1, :model.receptive_field]
    with tt.no_grad():
        for _ in range(5):
            logits = model(gen[:, -model.receptive_field:])[:, :, -1]
            gen = tt.cat([gen, logits.argmax(1, keepdim=True)], dim=1)
    return {"losses": losses, "q": repr(q.tolist()), "gen": repr(gen.tolist()),
            "decoded": _np(mu_law_decode(gen)), "params": _params(model)}


def test_wavenet_trains_the_same():
    _parity(wavenet)


def test_wavenet_runs_in_minidl():
    out = wavenet(minidl)
    assert np.isfinite(out["losses"]).all() and np.abs(out["decoded"]).max() <= 1.0


# ---- 7. a Conformer block: macaron FFNs, attention with a relative position bias, conv module
def conformer(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class FeedForward(nn.Module):
        def __init__(self, d, mult=2):
            super().__init__()
            self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d * mult), nn.SiLU(),
                                     nn.Dropout(0.0), nn.Linear(d * mult, d), nn.Dropout(0.0))

        def forward(self, x):
            return self.net(x)

    class RelPosAttention(nn.Module):
        def __init__(self, d, heads, max_rel=4):
            super().__init__()
            self.heads, self.max_rel = heads, max_rel
            self.norm = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)
            self.rel_bias = nn.Embedding(2 * max_rel + 1, heads)

        def forward(self, x, pad_mask):
            B, T, D = x.shape
            q, k, v = self.qkv(self.norm(x)).view(B, T, 3, self.heads, -1).unbind(2)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            pos = tt.arange(T)
            rel = (pos[None, :] - pos[:, None]).clamp(-self.max_rel, self.max_rel) + self.max_rel
            bias = self.rel_bias(rel).permute(2, 0, 1)  # heads, T, T
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias
            scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
            out = scores.softmax(-1) @ v
            return self.out(out.transpose(1, 2).reshape(B, T, D))

    class ConvModule(nn.Module):
        def __init__(self, d, kernel=5):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.pointwise1 = nn.Conv1d(d, 2 * d, 1)
            self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
            self.bn = nn.BatchNorm1d(d)
            self.pointwise2 = nn.Conv1d(d, d, 1)

        def forward(self, x, pad_mask):
            x = self.norm(x).masked_fill(pad_mask.unsqueeze(-1), 0.0).transpose(1, 2)
            x = F.glu(self.pointwise1(x), dim=1)
            x = self.pointwise2(F.silu(self.bn(self.depthwise(x))))
            return x.transpose(1, 2)

    class ConformerBlock(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.ff1, self.ff2 = FeedForward(d), FeedForward(d)
            self.attn = RelPosAttention(d, heads)
            self.conv = ConvModule(d)
            self.norm = nn.LayerNorm(d)

        def forward(self, x, pad_mask):
            x = x + 0.5 * self.ff1(x)
            x = x + self.attn(x, pad_mask)
            x = x + self.conv(x, pad_mask)
            x = x + 0.5 * self.ff2(x)
            return self.norm(x)

    class Model(nn.Module):
        def __init__(self, feats=5, d=8, classes=4):
            super().__init__()
            self.subsample = nn.Sequential(nn.Conv1d(feats, d, 3, stride=2, padding=1), nn.ReLU())
            self.blocks = nn.ModuleList([ConformerBlock(d), ConformerBlock(d)])
            self.classifier = nn.Linear(d, classes)

        def forward(self, feats, lengths):
            x = self.subsample(feats.transpose(1, 2)).transpose(1, 2)
            lengths = tt.div(lengths + 1, 2, rounding_mode="floor")
            pad_mask = tt.arange(x.shape[1])[None, :] >= lengths[:, None]
            for block in self.blocks:
                x = block(x, pad_mask)
            keep = (~pad_mask).unsqueeze(-1).to(x.dtype)
            return self.classifier((x * keep).sum(1) / keep.sum(1))

    rng = np.random.default_rng(7)
    feats = tt.from_numpy(rng.standard_normal((4, 12, 5)))
    lengths = tt.tensor([12, 9, 7, 12])
    y = tt.from_numpy(rng.integers(0, 4, 4))
    model = Model().double()
    _load(model, tt, state)
    opt = tt.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98), eps=1e-9,
                         weight_decay=1e-3)
    warmup = tt.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 2))
    losses = []
    for _ in range(steps):
        _train(opt, lambda: F.cross_entropy(model(feats, lengths), y), 1, losses)
        warmup.step()
    return {"losses": losses, "params": _params(model)}


def test_conformer_trains_the_same():
    # float64 throughout, but torch's sums run in an order that follows the CPU's vector
    # width: after the steps one depthwise bias was 2.3e-10 from torch's on an AVX2 Zen 3,
    # within 1e-10 on an AVX-512 Zen 4
    _parity(conformer, atol=1e-9)


def test_conformer_runs_in_minidl():
    out = conformer(minidl)
    assert np.isfinite(out["losses"]).all()


# ---- 8. matrix factorisation: user/item embeddings and biases with sparse gradients ----------
def matrix_factorisation(tt, state=None, steps=3, sparse=True):
    nn = tt.nn

    class MF(nn.Module):
        def __init__(self, users, items, factors=4):
            super().__init__()
            self.user_factors = nn.Embedding(users, factors, sparse=sparse)
            self.item_factors = nn.Embedding(items, factors, sparse=sparse)
            self.user_bias = nn.Embedding(users, 1, sparse=sparse)
            self.item_bias = nn.Embedding(items, 1, sparse=sparse)
            self.global_bias = nn.Parameter(tt.zeros(1))
            nn.init.normal_(self.user_factors.weight, std=0.1)
            nn.init.normal_(self.item_factors.weight, std=0.1)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)

        def forward(self, user, item):
            dot = (self.user_factors(user) * self.item_factors(item)).sum(dim=1)
            return (dot + self.user_bias(user).squeeze(1) + self.item_bias(item).squeeze(1)
                    + self.global_bias)

    rng = np.random.default_rng(8)
    n_users, n_items = 7, 9
    U, V = rng.standard_normal((n_users, 2)), rng.standard_normal((n_items, 2))
    pairs = rng.choice(n_users * n_items, 30, replace=False)
    users, items = pairs // n_items, pairs % n_items
    ratings = np.clip(3 + (U[users] * V[items]).sum(1), 1, 5)
    model = MF(n_users, n_items).double()
    _load(model, tt, state)
    sparse_params = [p for n, p in model.named_parameters() if n != "global_bias"]
    if sparse:
        opt_sparse = tt.optim.SparseAdam(sparse_params, lr=0.05)
    else:
        opt_sparse = tt.optim.Adam(sparse_params, lr=0.05)
    opt_dense = tt.optim.Adam([model.global_bias], lr=0.05)
    loss_fn = nn.MSELoss()
    losses, grads = [], []
    for step in range(steps):
        for batch in np.array_split(rng.permutation(30), 3):
            u, i = tt.from_numpy(users[batch]), tt.from_numpy(items[batch])
            r = tt.from_numpy(ratings[batch])
            opt_sparse.zero_grad()
            opt_dense.zero_grad()
            loss = loss_fn(model(u, i), r)
            loss.backward()
            g = model.user_factors.weight.grad
            grads.append(repr((g.is_sparse, g.layout == tt.sparse_coo)))
            opt_sparse.step()
            opt_dense.step()
            losses.append(loss.item())
    with tt.no_grad():
        scores = model(tt.zeros(n_items, dtype=tt.int64), tt.arange(n_items))
        top = tt.topk(scores, 3).indices
    return {"losses": losses, "grads": repr(grads[:1]), "top": repr(top.tolist()),
            "params": _params(model)}


def test_matrix_factorisation_with_sparse_adam_trains_the_same():
    out = _parity(matrix_factorisation)
    assert out["grads"] == repr([repr((True, True))])


def test_matrix_factorisation_sparse_and_dense_agree_in_minidl():
    start = matrix_factorisation(minidl, steps=0)["params"]
    a = matrix_factorisation(minidl, state=start, sparse=True)
    b = matrix_factorisation(minidl, state=start, sparse=False)
    # SparseAdam updates only the rows a batch touches; Adam decays every row's moments
    assert np.isfinite(a["losses"]).all() and a["losses"][0] == b["losses"][0]


# ---- 9. Wide & Deep: EmbeddingBag with offsets (sum, mean, per_sample_weights), a wide part --
def wide_and_deep(tt, state=None, steps=3):
    nn = tt.nn

    class WideAndDeep(nn.Module):
        def __init__(self, n_cross=20, n_genre=6, n_tags=10, dense=3, emb=4):
            super().__init__()
            self.wide = nn.EmbeddingBag(n_cross, 1, mode="sum")
            self.genre = nn.EmbeddingBag(n_genre, emb, mode="mean")
            self.tags = nn.EmbeddingBag(n_tags, emb, mode="sum")
            self.deep = nn.Sequential(nn.Linear(2 * emb + dense, 12), nn.ReLU(),
                                      nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 1))
            self.bias = nn.Parameter(tt.zeros(1))

        def forward(self, cross, cross_off, genre, genre_off, tags, tag_off, tag_w, dense):
            wide = self.wide(cross, cross_off).squeeze(1)
            deep_in = tt.cat([self.genre(genre, genre_off),
                              self.tags(tags, tag_off, per_sample_weights=tag_w), dense], dim=1)
            return wide + self.deep(deep_in).squeeze(1) + self.bias

    rng = np.random.default_rng(9)
    B = 6

    def bags(n, vocab, lo, hi, empty=None):
        lengths = rng.integers(lo, hi, n)
        if empty is not None:
            lengths[empty] = 0
        values = rng.integers(0, vocab, lengths.sum())
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return tt.from_numpy(values), tt.from_numpy(offsets)

    cross, cross_off = bags(B, 20, 1, 4)
    genre, genre_off = bags(B, 6, 1, 3)
    tags, tag_off = bags(B, 10, 1, 4, empty=2)  # a row without tags: an empty bag
    tag_w = tt.from_numpy(rng.uniform(0.2, 1.0, tags.shape[0]))
    dense = tt.from_numpy(rng.standard_normal((B, 3)))
    y = tt.from_numpy(rng.integers(0, 2, B).astype(np.float64))
    model = WideAndDeep().double()
    _load(model, tt, state)
    opt_wide = tt.optim.FTRL if hasattr(tt.optim, "FTRL") else tt.optim.Adagrad
    opt = [opt_wide([*model.wide.parameters(), model.bias], lr=0.1),
           tt.optim.Adam([p for n, p in model.named_parameters()
                          if not n.startswith(("wide", "bias"))], lr=0.01)]
    criterion = nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(steps):
        for o in opt:
            o.zero_grad()
        loss = criterion(model(cross, cross_off, genre, genre_off, tags, tag_off, tag_w, dense), y)
        loss.backward()
        for o in opt:
            o.step()
        losses.append(loss.item())
    with tt.no_grad():
        empty = model.tags(tags, tag_off, per_sample_weights=tag_w)
    return {"losses": losses, "tags": _np(empty), "params": _params(model)}


def test_wide_and_deep_trains_the_same():
    _parity(wide_and_deep)


def test_wide_and_deep_runs_in_minidl():
    out = wide_and_deep(minidl)
    assert np.isfinite(out["losses"]).all()
    assert (np.abs(out["tags"]).sum(1) == 0).any()  # an empty bag sums to zeros


# ---- 10. DLRM: a bottom MLP, EmbeddingBags, pairwise dot interactions, a top MLP ------------
def dlrm(tt, state=None, steps=3):
    nn = tt.nn

    class DLRM(nn.Module):
        def __init__(self, dense=4, tables=(8, 5, 7), d=4):
            super().__init__()
            self.bot = nn.Sequential(nn.Linear(dense, 8), nn.ReLU(), nn.Linear(8, d), nn.ReLU())
            self.emb = nn.ModuleList(nn.EmbeddingBag(n, d, mode="sum") for n in tables)
            for e in self.emb:
                nn.init.uniform_(e.weight, -math.sqrt(1 / e.num_embeddings),
                                 math.sqrt(1 / e.num_embeddings))
            F_ = len(tables) + 1
            li, lj = tt.tril_indices(F_, F_, offset=-1)
            self.register_buffer("li", li, persistent=False)
            self.register_buffer("lj", lj, persistent=False)
            self.top = nn.Sequential(nn.Linear(d + F_ * (F_ - 1) // 2, 8), nn.ReLU(),
                                     nn.Linear(8, 1))

        def interact(self, x, ly):
            B, d = x.shape
            T = tt.cat([x] + ly, dim=1).view((B, -1, d))
            Z = tt.bmm(T, tt.transpose(T, 1, 2))
            return tt.cat([x, Z[:, self.li, self.lj]], dim=1)

        def forward(self, dense, indices, offsets):
            x = self.bot(dense)
            ly = [e(i, o) for e, i, o in zip(self.emb, indices, offsets)]
            return self.top(self.interact(x, ly)).squeeze(-1)

    rng = np.random.default_rng(10)
    B = 5
    dense = tt.from_numpy(np.log1p(rng.exponential(3, (B, 4))))
    indices, offsets = [], []
    for n in (8, 5, 7):
        lengths = rng.integers(1, 3, B)
        indices.append(tt.from_numpy(rng.integers(0, n, lengths.sum())))
        offsets.append(tt.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]])))
    y = tt.from_numpy(rng.integers(0, 2, B).astype(np.float64))
    model = DLRM().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.1)
    losses = _train(opt, lambda: nn.functional.binary_cross_entropy(
        tt.sigmoid(model(dense, indices, offsets)), y), steps, [])
    return {"losses": losses, "params": _params(model)}


def test_dlrm_trains_the_same():
    out = _parity(dlrm)
    assert "li" not in out["params"]


def test_dlrm_runs_in_minidl():
    assert np.isfinite(dlrm(minidl)["losses"]).all()


# ---- 11. logistic regression by L-BFGS with a strong Wolfe line search, L2-penalised --------
def lbfgs_logistic(tt, state=None, steps=3, classes=2):
    nn, F = tt.nn, tt.nn.functional
    rng = np.random.default_rng(11)
    X = rng.standard_normal((40, 5))
    w_true = rng.standard_normal((5, classes))
    y = (X @ w_true + 0.5 * rng.standard_normal((40, classes))).argmax(1)
    mean, std = X.mean(0), X.std(0)
    X = tt.from_numpy((X - mean) / std)
    model = nn.Linear(5, 1 if classes == 2 else classes).double()
    _load(model, tt, state)
    target = tt.from_numpy(y)
    opt = tt.optim.LBFGS(model.parameters(), lr=1, max_iter=20, history_size=5,
                         tolerance_grad=1e-9, tolerance_change=1e-12,
                         line_search_fn="strong_wolfe")
    C = 0.1
    evals = []

    def closure():
        opt.zero_grad()
        out = model(X)
        if classes == 2:
            loss = F.binary_cross_entropy_with_logits(out.squeeze(1), target.double())
        else:
            loss = F.cross_entropy(out, target)
        loss = loss + C / 2 * model.weight.pow(2).sum()
        loss.backward()
        evals.append(loss.item())
        return loss

    losses = [opt.step(closure).item() for _ in range(steps)]
    with tt.no_grad():
        out = model(X)
        pred = (out.squeeze(1) > 0).long() if classes == 2 else out.argmax(1)
        acc = (pred == target).double().mean().item()
    st = opt.state[opt.param_groups[0]["params"][0]]
    return {"losses": losses, "evals": evals, "acc": acc,
            "iters": repr((st.get("func_evals"), st.get("n_iter"))), "params": _params(model)}


def test_lbfgs_logistic_regression_trains_the_same():
    out = _parity(lbfgs_logistic, rtol=1e-7, atol=1e-9, loss_rtol=1e-8)
    assert out["acc"] > 0.7


def test_lbfgs_softmax_regression_trains_the_same():
    _parity(lbfgs_logistic, classes=3, rtol=1e-7, atol=1e-9, loss_rtol=1e-8)


def test_lbfgs_logistic_regression_runs_in_minidl():
    out = lbfgs_logistic(minidl)
    assert out["evals"][-1] <= out["evals"][0] and out["acc"] > 0.7


# ---- 12. k-means: k-means++ seeding, cdist, argmin assignments, scatter_add_ centroid update --
def kmeans(tt, state=None, steps=6):
    rng = np.random.default_rng(12)
    centers = np.array([[0.0, 0.0], [4.0, 4.0], [-4.0, 3.0]])
    X = tt.from_numpy(np.concatenate([c + 0.6 * rng.standard_normal((20, 2)) for c in centers]))
    K = 3
    # k-means++: the next seed drawn with probability proportional to the squared distance
    first = int(rng.integers(len(X)))
    C = X[first:first + 1].clone()
    for _ in range(K - 1):
        d2 = tt.cdist(X, C).min(dim=1).values ** 2
        probs = (d2 / d2.sum()).numpy()
        nxt = int(rng.choice(len(X), p=probs))
        C = tt.cat([C, X[nxt].unsqueeze(0)])
    inertia = []
    for _ in range(steps):
        dist = tt.cdist(X, C)
        labels = dist.argmin(dim=1)
        inertia.append(dist.gather(1, labels[:, None]).pow(2).sum().item())
        sums = tt.zeros_like(C).scatter_add_(0, labels[:, None].expand(-1, X.shape[1]), X)
        counts = tt.bincount(labels, minlength=K).to(X.dtype).clamp(min=1)
        new_C = sums / counts[:, None]
        shift = tt.linalg.vector_norm(new_C - C, dim=1).max()
        C = new_C
        if shift < 1e-9:
            break
    order = tt.argsort(C[:, 0])
    sizes = tt.bincount(tt.cdist(X, C).argmin(dim=1), minlength=K)[order]
    return {"inertia": inertia, "sizes": repr(sizes.tolist()),
            "params": {"centroids": _np(C[order])}}


def test_kmeans_runs_the_same():
    out = _parity(kmeans)
    assert out["sizes"] == repr([20, 20, 20])
    assert all(a >= b for a, b in zip(out["inertia"], out["inertia"][1:]))


def test_kmeans_runs_in_minidl():
    out = kmeans(minidl)
    np.testing.assert_allclose(out["params"]["centroids"], [[-4, 3], [0, 0], [4, 4]], atol=0.5)


# ---- 13. PCA: torch.pca_lowrank against the exact torch.linalg.svd, explained variance -------
def pca(tt, state=None, steps=0):
    rng = np.random.default_rng(13)
    basis = np.linalg.qr(rng.standard_normal((8, 3)))[0]
    A = tt.from_numpy(rng.standard_normal((50, 3)) * [5.0, 2.0, 1.0] @ basis.T
                      + rng.standard_normal(8))  # rank 3 after centring
    mean = A.mean(dim=0, keepdim=True)
    U, S, Vh = tt.linalg.svd(A - mean, full_matrices=False)
    explained = S ** 2 / (A.shape[0] - 1)
    ratio = explained / explained.sum()
    # the randomized low-rank PCA finds the same top components exactly on a rank-3 matrix
    tt.manual_seed(0)
    U_r, S_r, V_r = tt.pca_lowrank(A, q=4, center=True, niter=2)
    comps = Vh[:3]
    sign = tt.sign((comps * V_r[:, :3].T).sum(1, keepdim=True))
    scores = (A - mean) @ comps.T
    recon = scores @ comps + mean
    err = tt.linalg.matrix_norm(A - recon).item()
    return {"S": _np(S[:3]), "S_r": _np(S_r[:3]), "ratio": _np(ratio),
            "agree": _np(V_r[:, :3].T * sign - comps), "err": err,
            "params": {"components": _np(comps * tt.sign(comps[:, :1])), "mean": _np(mean)}}


def test_pca_runs_the_same():
    out = _parity(pca, loss_atol=1e-9)
    np.testing.assert_allclose(out["S_r"], out["S"], rtol=1e-9)
    assert np.abs(out["agree"]).max() < 1e-8 and out["err"] < 1e-9
    np.testing.assert_allclose(out["ratio"][:3].sum(), 1.0)


def test_pca_runs_in_minidl():
    out = pca(minidl)
    np.testing.assert_allclose(out["S_r"], out["S"], rtol=1e-9)
    assert out["err"] < 1e-9


# ---- 14. a time-series forecaster: a GRU encoder, a GRUCell decoder run autoregressively -----
def forecaster(tt, state=None, steps=3, teacher_forcing=0.5):
    nn = tt.nn
    IN, OUT = 12, 4

    class Seq2SeqForecaster(nn.Module):
        def __init__(self, hidden=8):
            super().__init__()
            self.encoder = nn.GRU(2, hidden, num_layers=2, batch_first=True, dropout=0.0)
            self.decoder = nn.GRUCell(1, hidden)
            self.proj = nn.Linear(hidden, 1)

        def forward(self, x, horizon, target=None, tf_draws=None):
            _, h = self.encoder(x)
            hx = h[-1]
            y_prev = x[:, -1, :1]
            outs = []
            for t in range(horizon):
                hx = self.decoder(y_prev, hx)
                y = self.proj(hx)
                outs.append(y)
                use_truth = target is not None and tf_draws[t] < teacher_forcing
                y_prev = target[:, t:t + 1] if use_truth else y
            return tt.stack(outs, dim=1).squeeze(-1)

    rng = np.random.default_rng(14)
    t = np.arange(80, dtype=np.float64)
    series = np.sin(t / 4) + 0.3 * np.sin(t / 11) + 0.05 * rng.standard_normal(80)
    feature = np.cos(2 * np.pi * (t % 7) / 7)
    values = tt.from_numpy(np.stack([series, feature], axis=1))
    windows = values.unfold(0, IN + OUT, 3).permute(0, 2, 1)  # sliding windows
    x, target = windows[:, :IN], windows[:, IN:, 0]
    mu, sigma = x[..., 0].mean(), x[..., 0].std()
    x = tt.stack([(x[..., 0] - mu) / sigma, x[..., 1]], dim=-1)
    target = (target - mu) / sigma
    model = Seq2SeqForecaster().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=5e-3)
    sched = tt.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    losses = []
    for _ in range(steps):
        draws = rng.uniform(size=OUT)
        _train(opt, lambda: nn.functional.l1_loss(model(x, OUT, target, draws), target), 1,
               losses)
        sched.step(losses[-1])
    with tt.no_grad():
        pred = model(x[-2:], OUT) * sigma + mu
    return {"losses": losses, "pred": _np(pred), "windows": repr(tuple(windows.shape)),
            "params": _params(model)}


def test_forecaster_trains_the_same():
    out = _parity(forecaster)
    assert out["windows"] == repr((22, 16, 2))


def test_forecaster_runs_in_minidl():
    out = forecaster(minidl, teacher_forcing=1.0)
    assert np.isfinite(out["losses"]).all()


# ---- 15. a denoising autoencoder scoring anomalies by reconstruction error ------------------
def denoising_autoencoder(tt, state=None, steps=4):
    nn = tt.nn
    rng = np.random.default_rng(15)
    latent = rng.standard_normal((60, 2))
    mix = rng.standard_normal((2, 6))
    normal = latent @ mix + 0.05 * rng.standard_normal((60, 6))
    anomalies = rng.standard_normal((5, 6)) * 2.0
    scaler_mean, scaler_std = normal.mean(0), normal.std(0)

    def scale(a):
        return tt.from_numpy((a - scaler_mean) / scaler_std)

    train, test = scale(normal[:50]), scale(np.concatenate([normal[50:], anomalies]))
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2), nn.Tanh(),
                          nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 6)).double()
    _load(model, tt, state)
    loader = tt.utils.data.DataLoader(tt.utils.data.TensorDataset(train), batch_size=25)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    criterion = nn.MSELoss()
    losses = []
    for epoch in range(steps):
        model.train()
        for (clean,) in loader:
            noisy = clean + 0.1 * tt.from_numpy(rng.standard_normal(clean.shape))
            opt.zero_grad()
            loss = criterion(model(noisy), clean)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        train_err = ((model(train) - train) ** 2).mean(dim=1)
        threshold = tt.quantile(train_err, 0.95)
        threshold2 = train_err.mean() + 3 * train_err.std()
        scores = ((model(test) - test) ** 2).mean(dim=1)
    flags = scores > threshold
    return {"losses": losses, "scores": _np(scores), "thr": [threshold.item(), threshold2.item()],
            "flags": repr(flags.tolist()), "params": _params(model)}


def test_denoising_autoencoder_trains_the_same():
    _parity(denoising_autoencoder)


def test_denoising_autoencoder_flags_anomalies_in_minidl():
    out = denoising_autoencoder(minidl, steps=40)
    scores = out["scores"]
    assert scores[-5:].mean() > scores[:10].mean()


# ---- 16. a Siamese Bi-LSTM (MaLSTM): packed variable-length sentences, exp(-L1) similarity ---
def siamese_bilstm(tt, state=None, steps=3):
    nn = tt.nn
    rnn_utils = tt.nn.utils.rnn

    class SiameseLSTM(nn.Module):
        def __init__(self, vocab=15, emb=6, hidden=5):
            super().__init__()
            self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
            self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)

        def encode(self, ids, lengths):
            packed = rnn_utils.pack_padded_sequence(self.embedding(ids), lengths.cpu(),
                                                    batch_first=True, enforce_sorted=False)
            out, (h, c) = self.lstm(packed)
            padded, out_lengths = rnn_utils.pad_packed_sequence(out, batch_first=True,
                                                                total_length=ids.shape[1])
            mask = (tt.arange(ids.shape[1])[None, :] < out_lengths[:, None]).unsqueeze(-1)
            mean = (padded * mask).sum(1) / out_lengths[:, None].to(padded.dtype)
            last = tt.cat([h[-2], h[-1]], dim=1)  # the final states of both directions
            return tt.cat([mean, last], dim=1)

        def forward(self, a, la, b, lb):
            return tt.exp(-tt.sum(tt.abs(self.encode(a, la) - self.encode(b, lb)), dim=1))

    rng = np.random.default_rng(16)
    B, L = 6, 7

    def sentences():
        lengths = rng.integers(2, L + 1, B)
        ids = np.zeros((B, L), dtype=np.int64)
        for i, n in enumerate(lengths):
            ids[i, :n] = rng.integers(1, 15, n)
        return tt.from_numpy(ids), tt.from_numpy(lengths)

    a, la = sentences()
    b, lb = sentences()
    y = tt.from_numpy(rng.integers(0, 2, B).astype(np.float64))
    model = SiameseLSTM().double()
    _load(model, tt, state)
    opt = tt.optim.Adadelta(model.parameters(), lr=1.0)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(a, la, b, lb), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.25)
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        sim = model(a, la, a, la)
    return {"losses": losses, "self_sim": _np(sim), "params": _params(model)}


def test_siamese_bilstm_trains_the_same():
    out = _parity(siamese_bilstm)
    np.testing.assert_allclose(out["self_sim"], 1.0)


def test_siamese_bilstm_runs_in_minidl():
    assert np.isfinite(siamese_bilstm(minidl)["losses"]).all()


# ---- 17. the Bi-LSTM-CRF tagger: a forward algorithm by logsumexp, Viterbi decoding ---------
def bilstm_crf(tt, state=None, steps=3):
    nn = tt.nn
    tags = ["B", "I", "O", "<START>", "<STOP>"]
    START, STOP = 3, 4
    T = len(tags)

    class BiLSTM_CRF(nn.Module):
        def __init__(self, vocab=12, emb=5, hidden=6):
            super().__init__()
            self.word_embeds = nn.Embedding(vocab, emb)
            self.lstm = nn.LSTM(emb, hidden // 2, num_layers=1, bidirectional=True)
            self.hidden2tag = nn.Linear(hidden, T)
            # transitions[i, j]: the score of going from tag j to tag i
            self.transitions = nn.Parameter(tt.randn(T, T))
            self.transitions.data[START, :] = -10000
            self.transitions.data[:, STOP] = -10000

        def _features(self, sentence):
            embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
            out, _ = self.lstm(embeds)
            return self.hidden2tag(out.view(len(sentence), -1))

        def _forward_alg(self, feats):
            alpha = tt.full((1, T), -10000.0, dtype=feats.dtype)
            alpha[0][START] = 0.0
            for feat in feats:
                alpha = tt.logsumexp(alpha + self.transitions + feat.view(T, 1), dim=1).view(1, T)
            return tt.logsumexp(alpha + self.transitions[STOP], dim=1)[0]

        def _score_sentence(self, feats, tags_):
            score = tt.zeros(1, dtype=feats.dtype)
            tags_ = tt.cat([tt.tensor([START], dtype=tt.long), tags_])
            for i, feat in enumerate(feats):
                score = score + self.transitions[tags_[i + 1], tags_[i]] + feat[tags_[i + 1]]
            return score + self.transitions[STOP, tags_[-1]]

        def _viterbi_decode(self, feats):
            backpointers = []
            vvars = tt.full((1, T), -10000.0, dtype=feats.dtype)
            vvars[0][START] = 0
            for feat in feats:
                next_tag_var = vvars + self.transitions  # [next, prev]
                best, bptrs = tt.max(next_tag_var, dim=1)
                backpointers.append(bptrs.tolist())
                vvars = (best + feat).view(1, -1)
            terminal = vvars + self.transitions[STOP]
            best_tag = tt.argmax(terminal).item()
            path_score = terminal[0][best_tag]
            path = [best_tag]
            for bptrs in reversed(backpointers):
                best_tag = bptrs[best_tag]
                path.append(best_tag)
            assert path.pop() == START
            path.reverse()
            return path_score, path

        def neg_log_likelihood(self, sentence, tags_):
            feats = self._features(sentence)
            return self._forward_alg(feats) - self._score_sentence(feats, tags_)

        def forward(self, sentence):
            return self._viterbi_decode(self._features(sentence))

    rng = np.random.default_rng(17)
    data = []
    for n in (5, 4, 6):
        words = rng.integers(0, 12, n)
        data.append((tt.from_numpy(words), tt.from_numpy(np.where(words < 4, 0, np.where(
            words < 8, 1, 2)))))
    model = BiLSTM_CRF().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)
    losses = []
    for _ in range(steps):
        for sentence, tags_ in data:
            model.zero_grad()
            loss = model.neg_log_likelihood(sentence, tags_)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    with tt.no_grad():
        decoded = [model(s) for s, _ in data]
    return {"losses": losses, "scores": [s.item() for s, _ in decoded],
            "paths": repr([p for _, p in decoded]), "params": _params(model)}


def test_bilstm_crf_trains_the_same():
    _parity(bilstm_crf)


def test_bilstm_crf_runs_in_minidl():
    out = bilstm_crf(minidl, steps=2)
    assert all(loss >= -1e-9 for loss in out["losses"])  # -log p(tags | words) is at least 0


# ---- 18. nn.Transformer, batch_first and pre-norm, with causal, padding and memory masks ----
def transformer_seq2seq(tt, state=None, steps=3):
    nn = tt.nn
    PAD, BOS, EOS, V, D = 0, 1, 2, 10, 8

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_emb = nn.Embedding(V, D, padding_idx=PAD)
            self.tgt_emb = nn.Embedding(V, D, padding_idx=PAD)
            self.pos = nn.Parameter(tt.zeros(1, 16, D))
            nn.init.trunc_normal_(self.pos, std=0.02)
            self.transformer = nn.Transformer(
                d_model=D, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                dim_feedforward=16, dropout=0.0, activation="gelu", batch_first=True,
                norm_first=True)
            self.generator = nn.Linear(D, V)

        def encode(self, src, src_pad):
            h = self.src_emb(src) * math.sqrt(D) + self.pos[:, :src.shape[1]]
            return self.transformer.encoder(h, src_key_padding_mask=src_pad)

        def decode(self, tgt, memory, memory_mask, src_pad):
            h = self.tgt_emb(tgt) * math.sqrt(D) + self.pos[:, :tgt.shape[1]]
            causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=h.dtype)
            out = self.transformer.decoder(h, memory, tgt_mask=causal, memory_mask=memory_mask,
                                           tgt_key_padding_mask=(tgt == PAD),
                                           memory_key_padding_mask=src_pad, tgt_is_causal=True)
            return self.generator(out)

        def forward(self, src, tgt, memory_mask):
            src_pad = src == PAD
            return self.decode(tgt, self.encode(src, src_pad), memory_mask, src_pad)

    rng = np.random.default_rng(18)
    B, S = 4, 6
    src = rng.integers(3, V, (B, S))
    src[1, 4:] = PAD
    src[3, 5:] = PAD
    tgt = np.concatenate([np.full((B, 1), BOS), src[:, ::-1].copy(), np.full((B, 1), EOS)], 1)
    tgt = np.where(tgt == PAD, EOS, tgt)
    src, tgt = tt.from_numpy(src), tt.from_numpy(tgt)
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
    # a local memory mask: target position i may attend source positions within 3 of S-1-i
    i, j = np.arange(tgt_in.shape[1])[:, None], np.arange(S)[None, :]
    memory_mask = tt.from_numpy(np.abs((S - i) - j) > 3)
    model = Seq2Seq().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    criterion = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)
    losses = _train(opt, lambda: criterion(model(src, tgt_in, memory_mask).reshape(-1, V),
                                           tgt_out.reshape(-1)), steps, [])
    model.eval()
    with tt.no_grad():  # greedy decoding
        src_pad = src == PAD
        memory = model.encode(src, src_pad)
        ys = tt.full((B, 1), BOS, dtype=tt.long)
        for k in range(4):
            logits = model.decode(ys, memory, memory_mask[:ys.shape[1]], src_pad)[:, -1]
            ys = tt.cat([ys, logits.argmax(-1, keepdim=True)], dim=1)
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    return {"losses": losses, "ys": repr(ys.tolist()), "mask": repr(mask.tolist()),
            "params": _params(model)}


def test_transformer_seq2seq_trains_the_same():
    out = _parity(transformer_seq2seq)
    inf = float("-inf")
    assert out["mask"] == repr([[0.0, inf, inf], [0.0, 0.0, inf], [0.0, 0.0, 0.0]])


def test_transformer_seq2seq_runs_in_minidl():
    assert np.isfinite(transformer_seq2seq(minidl)["losses"]).all()


# ---- 19. ResNet: bottleneck blocks, a downsampling shortcut, zero-initialised last BN -------
def resnet(tt, state=None, steps=3):
    nn = tt.nn

    class Bottleneck(nn.Module):
        expansion = 2

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self, layers=(1, 2), classes=5, zero_init_residual=True):
            super().__init__()
            self.inplanes = 8
            self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(4, layers[0])
            self.layer2 = self._make_layer(8, layers[1], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * Bottleneck.expansion, classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
            if zero_init_residual:
                for m in self.modules():
                    if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                        nn.init.constant_(m.bn3.weight, 0)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride,
                              bias=False),
                    nn.BatchNorm2d(planes * Bottleneck.expansion))
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * Bottleneck.expansion
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer2(self.layer1(x))
            return self.fc(tt.flatten(self.avgpool(x), 1))

    rng = np.random.default_rng(19)
    x = tt.from_numpy(rng.standard_normal((4, 3, 8, 8)))
    y = tt.from_numpy(rng.integers(0, 5, 4))
    model = ResNet().double()
    _load(model, tt, state)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = tt.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                        {"params": no_decay, "weight_decay": 0.0}], lr=0.1, momentum=0.9)
    sched = tt.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=max(steps, 1) + 1)
    losses = []
    for _ in range(steps):
        _train(opt, lambda: nn.functional.cross_entropy(model(x), y), 1, losses)
        sched.step()
    zero = repr(float(model.layer1[0].bn3.weight.abs().sum()) if steps == 0 else None)
    return {"losses": losses, "lr": sched.get_last_lr(), "zero": zero, "params": _params(model)}


def test_resnet_trains_the_same():
    _parity(resnet)


def test_resnet_starts_with_zeroed_residual_branches_in_minidl():
    assert resnet(minidl, steps=0)["zero"] == repr(0.0)
    assert np.isfinite(resnet(minidl)["losses"]).all()


# ---- 20. a mixture density network: MixtureSameFamily(Categorical, Independent(Normal)) ----
def mixture_density(tt, state=None, steps=3):
    nn = tt.nn
    D = tt.distributions

    class MDN(nn.Module):
        def __init__(self, hidden=12, K=3):
            super().__init__()
            self.K = K
            self.body = nn.Sequential(nn.Linear(1, hidden), nn.Tanh())
            self.pi = nn.Linear(hidden, K)
            self.mu = nn.Linear(hidden, K * 2)
            self.log_sigma = nn.Linear(hidden, K * 2)

        def forward(self, x):
            h = self.body(x)
            mix = D.Categorical(logits=self.pi(h))
            mu = self.mu(h).view(-1, self.K, 2)
            sigma = self.log_sigma(h).view(-1, self.K, 2).clamp(-5, 3).exp()
            comp = D.Independent(D.Normal(mu, sigma), 1)
            return D.MixtureSameFamily(mix, comp)

    rng = np.random.default_rng(20)
    x = rng.uniform(-1, 1, (64, 1))
    branch = rng.integers(0, 2, (64, 1))
    y = np.concatenate([np.sin(3 * x) * (2 * branch - 1), x ** 2], 1) + 0.05 * rng.standard_normal(
        (64, 2))
    x, y = tt.from_numpy(x), tt.from_numpy(y)
    model = MDN().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = _train(opt, lambda: -model(x).log_prob(y).mean(), steps, [])
    with tt.no_grad():
        dist = model(x[:5])
        mean, var = dist.mean, dist.variance
        shapes = repr((tuple(dist.batch_shape), tuple(dist.event_shape)))
    return {"losses": losses, "mean": _np(mean), "var": _np(var), "shapes": shapes,
            "params": _params(model)}


def test_mixture_density_network_trains_the_same():
    out = _parity(mixture_density)
    assert out["shapes"] == repr(((5,), (2,)))


def test_mixture_density_network_runs_in_minidl():
    out = mixture_density(minidl, steps=5)
    assert out["losses"][-1] < out["losses"][0] and (out["var"] > 0).all()


# ---- 21. attention-based multiple-instance learning: gated attention pooling over a bag -----
def attention_mil(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class GatedAttentionMIL(nn.Module):
        def __init__(self, L=8, Dh=6):
            super().__init__()
            self.feature_extractor = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(),
                                                   nn.MaxPool2d(2, 2), nn.Flatten(),
                                                   nn.Linear(4 * 2 * 2, L), nn.ReLU())
            self.attention_V = nn.Sequential(nn.Linear(L, Dh), nn.Tanh())
            self.attention_U = nn.Sequential(nn.Linear(L, Dh), nn.Sigmoid())
            self.attention_w = nn.Linear(Dh, 1)
            self.classifier = nn.Sequential(nn.Linear(L, 1), nn.Sigmoid())

        def forward(self, x):
            H = self.feature_extractor(x.squeeze(0))  # instances x L
            A = self.attention_w(self.attention_V(H) * self.attention_U(H))
            A = F.softmax(tt.transpose(A, 1, 0), dim=1)  # 1 x instances
            Z = tt.mm(A, H)
            Y_prob = self.classifier(Z)
            return Y_prob, tt.ge(Y_prob, 0.5).float(), A

    rng = np.random.default_rng(21)
    bags = []
    for label in (1, 0, 1, 0):
        n = int(rng.integers(3, 6))
        inst = rng.standard_normal((1, n, 1, 6, 6)) * 0.3
        if label:
            inst[0, rng.integers(n), 0, 2:4, 2:4] += 2.0  # one positive instance in the bag
        bags.append((tt.from_numpy(inst), tt.tensor([float(label)], dtype=tt.float64)))
    model = GatedAttentionMIL().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.999), weight_decay=10e-5)
    losses, attn = [], []
    for _ in range(steps):
        for data, bag_label in bags:
            opt.zero_grad()
            Y_prob, Y_hat, A = model(data)
            Y_prob = tt.clamp(Y_prob, min=1e-5, max=1.0 - 1e-5)
            loss = -1.0 * (bag_label * tt.log(Y_prob) + (1.0 - bag_label) * tt.log(1.0 - Y_prob))
            loss.backward()
            opt.step()
            losses.append(loss.item())
    with tt.no_grad():
        for data, _ in bags:
            _, Y_hat, A = model(data)
            attn.extend(A.flatten().tolist())
    return {"losses": losses, "attn": attn, "y_hat": repr(Y_hat.dtype == tt.float32),
            "params": _params(model)}


def test_attention_mil_trains_the_same():
    out = _parity(attention_mil)
    assert out["y_hat"] == "True"


def test_attention_mil_runs_in_minidl():
    out = attention_mil(minidl)
    assert np.isfinite(out["losses"]).all() and min(out["attn"]) > 0



# ---- 22. Kim's CNN for sentences: Conv1d of several widths, max over time, static+trained ---
def text_cnn(tt, state=None, steps=3, p=0.0):
    nn, F = tt.nn, tt.nn.functional

    class TextCNN(nn.Module):
        def __init__(self, vocab=20, emb=6, kernel_sizes=(2, 3, 4), maps=3, classes=2):
            super().__init__()
            self.static = nn.Embedding.from_pretrained(tt.linspace(-1, 1, vocab * emb,
                                                                   dtype=tt.float64)
                                                       .view(vocab, emb), freeze=True)
            self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
            self.convs = nn.ModuleList(nn.Conv1d(2 * emb, maps, k) for k in kernel_sizes)
            self.dropout = nn.Dropout(p)
            self.fc = nn.Linear(maps * len(kernel_sizes), classes)

        def forward(self, ids):
            x = tt.cat([self.static(ids), self.embedding(ids)], dim=2).permute(0, 2, 1)
            pooled = [F.max_pool1d(F.relu(conv(x)), conv(x).shape[2]).squeeze(2)
                      for conv in self.convs]
            return self.fc(self.dropout(tt.cat(pooled, 1)))

    rng = np.random.default_rng(22)
    ids = tt.from_numpy(rng.integers(1, 20, (6, 7)))
    y = tt.from_numpy(rng.integers(0, 2, 6))
    model = TextCNN().double()
    _load(model, tt, state)
    opt = tt.optim.Adadelta([q for q in model.parameters() if q.requires_grad], rho=0.95)
    losses = []
    for _ in range(steps):
        _train(opt, lambda: F.cross_entropy(model(ids), y), 1, losses)
        with tt.no_grad():  # the max-norm constraint on the output layer's rows
            norms = model.fc.weight.norm(dim=1, keepdim=True)
            model.fc.weight.mul_(tt.clamp(3.0 / norms, max=1.0))
    frozen = repr((model.static.weight.requires_grad, len(list(model.parameters()))))
    return {"losses": losses, "frozen": frozen, "params": _params(model)}


def test_text_cnn_trains_the_same():
    out = _parity(text_cnn)
    assert out["frozen"] == repr((False, 10))


def test_text_cnn_with_dropout_runs_in_minidl():
    assert np.isfinite(text_cnn(minidl, p=0.5)["losses"]).all()


# ---- 23. AlexNet-style: LocalResponseNorm, overlapping max pooling, a dropout classifier ----
def alexnet(tt, state=None, steps=3):
    nn = tt.nn
    model = nn.Sequential(
        nn.Conv2d(3, 6, kernel_size=5, stride=2, padding=2), nn.ReLU(inplace=True),
        nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(6, 8, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.LocalResponseNorm(size=3, alpha=1e-2, beta=0.75, k=1.0),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
        nn.Dropout(0.0), nn.Linear(8 * 2 * 2, 16), nn.ReLU(inplace=True),
        nn.Linear(16, 4)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(23)
    x = tt.from_numpy(rng.standard_normal((4, 3, 16, 16)))
    y = tt.from_numpy(rng.integers(0, 4, 4))
    opt = tt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    losses = []
    for _ in range(steps):
        _train(opt, lambda: nn.functional.cross_entropy(model(x), y), 1, losses)
        sched.step()
    with tt.no_grad():
        lrn = nn.functional.local_response_norm(x, 3, alpha=0.5, beta=0.75, k=1.0)
    return {"losses": losses, "lrn": _np(lrn), "lr": sched.get_last_lr(), "params": _params(model)}


def test_alexnet_with_local_response_norm_trains_the_same():
    _parity(alexnet)


def test_alexnet_runs_in_minidl():
    assert np.isfinite(alexnet(minidl)["losses"]).all()


# ---- 24. Deep & Cross Network v2: cross layers x0 * (W x + b) + x beside a deep tower ------
def dcn_v2(tt, state=None, steps=3):
    nn = tt.nn

    class CrossNetwork(nn.Module):
        def __init__(self, dim, layers):
            super().__init__()
            self.W = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

        def forward(self, x0):
            x = x0
            for w in self.W:
                x = x0 * w(x) + x
            return x

    class DCN(nn.Module):
        def __init__(self, cards=(5, 7, 4), emb=3, dense=2):
            super().__init__()
            self.embeddings = nn.ModuleList(nn.Embedding(c, emb) for c in cards)
            dim = emb * len(cards) + dense
            self.cross = CrossNetwork(dim, 2)
            self.deep = nn.Sequential(nn.Linear(dim, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                      nn.Linear(8, 8), nn.ReLU())
            self.out = nn.Linear(dim + 8, 1)

        def forward(self, cats, dense):
            x0 = tt.cat([e(cats[:, i]) for i, e in enumerate(self.embeddings)] + [dense], dim=1)
            return self.out(tt.cat([self.cross(x0), self.deep(x0)], dim=1)).squeeze(1)

    rng = np.random.default_rng(24)
    cats = tt.from_numpy(np.stack([rng.integers(0, c, 8) for c in (5, 7, 4)], 1))
    dense = tt.from_numpy(rng.standard_normal((8, 2)))
    y = tt.from_numpy(rng.integers(0, 2, 8).astype(np.float64))
    model = DCN().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    pos_weight = (1 - y).sum() / y.sum().clamp(min=1)
    criterion = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    losses = _train(opt, lambda: criterion(model(cats, dense), y), steps, [])
    model.eval()
    with tt.no_grad():
        auc_scores = tt.sigmoid(model(cats, dense))
    return {"losses": losses, "scores": _np(auc_scores), "params": _params(model)}


def test_dcn_v2_trains_the_same():
    _parity(dcn_v2)


def test_dcn_v2_runs_in_minidl():
    assert np.isfinite(dcn_v2(minidl)["losses"]).all()


# ---- 25. classic linear models: a multi-class SVM (multi-margin), ridge by lstsq and solve --
def linear_models(tt, state=None, steps=3):
    nn = tt.nn
    rng = np.random.default_rng(25)
    X = rng.standard_normal((30, 4))
    y_cls = (X @ rng.standard_normal((4, 3))).argmax(1)
    y_reg = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.standard_normal(30)
    X, y_cls, y_reg = tt.from_numpy(X), tt.from_numpy(y_cls), tt.from_numpy(y_reg)
    svm = nn.Linear(4, 3).double()
    _load(svm, tt, state)
    opt = tt.optim.SGD(svm.parameters(), lr=0.1)
    hinge = nn.MultiMarginLoss(p=1, margin=1.0)
    losses = _train(opt, lambda: hinge(svm(X), y_cls) + 0.01 * svm.weight.pow(2).sum() / 2,
                    steps, [])
    sq_hinge = nn.functional.multi_margin_loss(svm(X), y_cls, p=2, margin=0.5).item()
    # ridge regression: the normal equations, and the least-squares solution of the stacked
    # system [X; sqrt(lam) I] w = [y; 0]
    lam = 0.5
    Xb = tt.cat([X, tt.ones(30, 1, dtype=X.dtype)], dim=1)
    eye = tt.eye(5, dtype=X.dtype)
    eye[-1, -1] = 0  # the intercept is not penalised
    w_solve = tt.linalg.solve(Xb.T @ Xb + lam * eye, Xb.T @ y_reg)
    A = tt.cat([Xb, math.sqrt(lam) * eye[:4]], dim=0)
    b = tt.cat([y_reg, tt.zeros(4, dtype=X.dtype)])
    w_lstsq = tt.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1)
    r2 = 1 - ((Xb @ w_solve - y_reg) ** 2).sum() / ((y_reg - y_reg.mean()) ** 2).sum()
    return {"losses": losses, "sq_hinge": sq_hinge, "w": _np(w_solve), "w2": _np(w_lstsq),
            "r2": r2.item(), "params": _params(svm)}


def test_linear_models_run_the_same():
    out = _parity(linear_models)
    np.testing.assert_allclose(out["w"], out["w2"], rtol=1e-10, atol=1e-12)
    assert out["r2"] > 0.9


def test_linear_models_run_in_minidl():
    out = linear_models(minidl, steps=10)
    np.testing.assert_allclose(out["w"], out["w2"], rtol=1e-10, atol=1e-12)
    assert out["losses"][-1] < out["losses"][0]


# ---- 26. a Gaussian mixture fitted by EM: MultivariateNormal log densities, logsumexp -------
def gmm_em(tt, state=None, steps=5):
    D = tt.distributions
    rng = np.random.default_rng(26)
    X = tt.from_numpy(np.concatenate([
        rng.multivariate_normal([0, 0], [[1.0, 0.5], [0.5, 1.0]], 40),
        rng.multivariate_normal([4, 1], [[0.5, 0.0], [0.0, 0.3]], 30)]))
    N, K = X.shape[0], 2
    means = X[tt.from_numpy(np.array([0, 45]))].clone()
    covs = tt.eye(2, dtype=X.dtype).repeat(K, 1, 1)
    weights = tt.full((K,), 1.0 / K, dtype=X.dtype)
    lls = []
    for _ in range(steps):
        # E step
        comp = D.MultivariateNormal(means, covariance_matrix=covs)
        log_p = comp.log_prob(X.unsqueeze(1)) + weights.log()  # N x K
        log_norm = tt.logsumexp(log_p, dim=1, keepdim=True)
        resp = (log_p - log_norm).exp()
        lls.append(log_norm.sum().item())
        # M step
        Nk = resp.sum(0)
        means = resp.T @ X / Nk[:, None]
        diff = X.unsqueeze(1) - means  # N x K x 2
        covs = tt.einsum("nk,nki,nkj->kij", resp, diff, diff) / Nk[:, None, None]
        covs = covs + 1e-6 * tt.eye(2, dtype=X.dtype)
        weights = Nk / N
    final = D.MultivariateNormal(means, covariance_matrix=covs)
    labels = (final.log_prob(X.unsqueeze(1)) + weights.log()).argmax(1)
    return {"lls": lls, "labels": repr(tt.bincount(labels).tolist()),
            "params": {"means": _np(means), "covs": _np(covs), "weights": _np(weights)}}


def test_gmm_em_runs_the_same():
    out = _parity(gmm_em)
    assert out["labels"] in (repr([40, 30]), repr([39, 31]))  # one point lies between the two


def test_gmm_em_runs_in_minidl():
    out = gmm_em(minidl, steps=8)
    np.testing.assert_allclose(sorted(out["params"]["weights"]), [3 / 7, 4 / 7], atol=0.03)
    assert all(b >= a - 1e-9 for a, b in zip(out["lls"], out["lls"][1:]))  # EM never decreases



# ---- 27. k-nearest neighbours and Gaussian naive Bayes: topk(largest=False), mode, unique ---
def knn_naive_bayes(tt, state=None, steps=0):
    D = tt.distributions
    rng = np.random.default_rng(27)
    means = np.array([[0.0, 0.0, 1.0], [2.0, 1.0, -1.0], [-1.0, 2.5, 0.0]])
    y = rng.integers(0, 3, 60)
    X = means[y] + 0.7 * rng.standard_normal((60, 3))
    X_train, y_train = tt.from_numpy(X[:45]), tt.from_numpy(y[:45])
    X_test, y_test = tt.from_numpy(X[45:]), tt.from_numpy(y[45:])
    # k-NN: the k closest by Euclidean distance, a majority vote by torch.mode
    dist = tt.cdist(X_test, X_train)
    knn_dist, knn_idx = dist.topk(5, dim=1, largest=False)
    votes = y_train[knn_idx]
    knn_pred = votes.mode(dim=1).values
    # distance-weighted vote: one-hot rows scaled by 1/d, summed
    weights = 1.0 / knn_dist.clamp(min=1e-12)
    scores = tt.zeros(len(X_test), 3, dtype=X_train.dtype).scatter_add_(1, votes, weights)
    wknn_pred = scores.argmax(1)
    # Gaussian naive Bayes: per-class means and variances, log prior + sum of log densities
    classes, counts = tt.unique(y_train, return_counts=True)
    mu = tt.stack([X_train[y_train == c].mean(0) for c in classes])
    var = tt.stack([X_train[y_train == c].var(0, unbiased=False) for c in classes]) + 1e-9
    log_prior = tt.log(counts.double() / counts.sum())
    log_lik = D.Normal(mu, var.sqrt()).log_prob(X_test.unsqueeze(1)).sum(-1)
    joint = log_lik + log_prior
    log_post = joint - tt.logsumexp(joint, dim=1, keepdim=True)
    nb_pred = log_post.argmax(1)
    acc = [(p == y_test).double().mean().item() for p in (knn_pred, wknn_pred, nb_pred)]
    return {"acc": acc, "preds": repr([p.tolist() for p in (knn_pred, wknn_pred, nb_pred)]),
            "knn": _np(knn_dist), "params": {"mu": _np(mu), "var": _np(var),
                                             "post": _np(log_post.exp())}}


def test_knn_and_naive_bayes_run_the_same():
    out = _parity(knn_naive_bayes)
    assert min(out["acc"]) > 0.7


def test_knn_and_naive_bayes_run_in_minidl():
    out = knn_naive_bayes(minidl)
    np.testing.assert_allclose(out["params"]["post"].sum(1), 1.0)
    assert min(out["acc"]) > 0.7


# ---- 28. gradient-boosted decision stumps on quantile bins: bucketize, bincount, cumsum -----
def boosted_stumps(tt, state=None, steps=4):
    rng = np.random.default_rng(28)
    X = tt.from_numpy(rng.uniform(-2, 2, (80, 3)))
    y = tt.sin(X[:, 0]) + 0.5 * (X[:, 1] > 0.3).double() + 0.05 * tt.from_numpy(
        rng.standard_normal(80))
    n_bins, lr = 8, 0.5
    qs = tt.linspace(0, 1, n_bins + 1, dtype=X.dtype)[1:-1]
    edges = tt.quantile(X, qs, dim=0).T.contiguous()  # features x (bins - 1)
    binned = tt.stack([tt.bucketize(X[:, j], edges[j]) for j in range(X.shape[1])], dim=1)
    pred = tt.full_like(y, y.mean().item())
    losses, stumps = [], []
    for _ in range(steps):
        residual = y - pred
        best = None
        for j in range(X.shape[1]):
            sums = tt.bincount(binned[:, j], weights=residual, minlength=n_bins)
            counts = tt.bincount(binned[:, j], minlength=n_bins).double()
            left_sum, left_n = sums.cumsum(0)[:-1], counts.cumsum(0)[:-1]
            right_sum, right_n = sums.sum() - left_sum, counts.sum() - left_n
            gain = left_sum ** 2 / left_n.clamp(min=1) + right_sum ** 2 / right_n.clamp(min=1)
            gain = tt.where((left_n > 0) & (right_n > 0), gain, tt.full_like(gain, -math.inf))
            g, split = gain.max(0)
            if best is None or g.item() > best[0]:
                best = (g.item(), j, split.item(), (left_sum / left_n.clamp(min=1))[split].item(),
                        (right_sum / right_n.clamp(min=1))[split].item())
        _, j, split, left_value, right_value = best
        goes_left = binned[:, j] <= split
        pred = pred + lr * tt.where(goes_left, tt.tensor(left_value, dtype=X.dtype),
                                    tt.tensor(right_value, dtype=X.dtype))
        stumps.append((j, split))
        losses.append(tt.nn.functional.mse_loss(pred, y).item())
    return {"losses": losses, "stumps": repr(stumps),
            "params": {"edges": _np(edges), "pred": _np(pred)}}


def test_boosted_stumps_run_the_same():
    out = _parity(boosted_stumps)
    assert all(b <= a for a, b in zip(out["losses"], out["losses"][1:]))


def test_boosted_stumps_run_in_minidl():
    out = boosted_stumps(minidl, steps=6)
    assert out["losses"][-1] < out["losses"][0]



# ---- 29. label spreading on a k-NN graph: a sparse COO affinity, torch.sparse.mm iterations --
def label_spreading(tt, state=None, steps=20, alpha=0.9):
    rng = np.random.default_rng(29)
    t = rng.uniform(0, np.pi, 40)
    X = np.concatenate([np.stack([np.cos(t[:20]), np.sin(t[:20])], 1),
                        np.stack([1 - np.cos(t[20:]), 0.5 - np.sin(t[20:])], 1)])
    X = tt.from_numpy(X + 0.05 * rng.standard_normal(X.shape))
    y = tt.from_numpy(np.repeat([0, 1], 20))
    labelled = tt.zeros(40, dtype=tt.bool)
    labelled[tt.tensor([0, 25])] = True
    k, sigma = 5, 0.3
    dist, idx = tt.cdist(X, X).topk(k + 1, largest=False)
    rows = tt.arange(40).repeat_interleave(k)
    cols = idx[:, 1:].reshape(-1)
    vals = tt.exp(-dist[:, 1:].reshape(-1) ** 2 / (2 * sigma ** 2))
    W = tt.sparse_coo_tensor(tt.stack([rows, cols]), vals, (40, 40))
    W = (W + W.t()).coalesce()  # symmetric
    deg = tt.sparse.sum(W, dim=1).to_dense()
    d = deg.pow(-0.5)
    i, j = W.indices()
    S = tt.sparse_coo_tensor(W.indices(), d[i] * W.values() * d[j], W.shape)
    Y0 = tt.zeros(40, 2, dtype=X.dtype)
    Y0[labelled, y[labelled]] = 1.0
    F_ = Y0.clone()
    deltas = []
    for _ in range(steps):
        new = alpha * tt.sparse.mm(S, F_) + (1 - alpha) * Y0
        deltas.append((new - F_).abs().max().item())
        F_ = new
    pred = F_.argmax(1)
    acc = (pred[~labelled] == y[~labelled]).double().mean().item()
    return {"deltas": deltas, "acc": acc, "nnz": repr(W._nnz()),
            "params": {"F": _np(F_), "deg": _np(deg)}}


def test_label_spreading_runs_the_same():
    out = _parity(label_spreading)
    assert out["acc"] > 0.9 and out["deltas"][-1] < out["deltas"][0]


def test_label_spreading_runs_in_minidl():
    out = label_spreading(minidl, steps=60)
    assert out["acc"] > 0.9


# ---- what the programs found missing, each fix with its own test ----------------------------
def _pow_of_a_number(tt):
    e = tt.tensor([0.5, 1.0, 2.0], dtype=tt.float64, requires_grad=True)
    y = tt.pow(16, e)  # WaveNet's mu-law decoding: torch.pow(1 + mu, |y|)
    y.sum().backward()
    ints = tt.pow(2, tt.tensor([1, 3]))
    out = tt.empty(3, dtype=tt.float64)
    tt.pow(2.5, e.detach(), out=out)
    return y.detach().numpy(), e.grad.numpy(), ints.tolist(), str(ints.dtype), out.numpy()


def test_pow_of_a_number_base_and_a_tensor_exponent():
    y, g, ints, dtype, out = _pow_of_a_number(minidl)
    np.testing.assert_allclose(y, [4.0, 16.0, 256.0])
    np.testing.assert_allclose(g, y * np.log(16.0))
    assert ints == [2, 8] and dtype.endswith("int64")
    np.testing.assert_allclose(out, 2.5 ** np.array([0.5, 1.0, 2.0]))
    e = minidl.tensor([1.0, 2.0], dtype=minidl.float64, requires_grad=True)
    assert minidl.testing.gradcheck(lambda t: minidl.pow(3, t), (e,))
    with pytest.raises(TypeError, match="argument 'input' must be a Tensor"):
        minidl.exp(2.0)


def test_pow_of_a_number_base_and_a_tensor_exponent_as_torch():
    torch_ = pytest.importorskip("torch")
    ours, theirs = _pow_of_a_number(minidl), _pow_of_a_number(torch_)
    for a, b in zip(ours[:2] + ours[4:], theirs[:2] + theirs[4:]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert ours[2] == theirs[2]


def _module_with_numpy_arguments(tt):
    class Scaled(tt.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = tt.nn.Linear(2, 2).double()

        def forward(self, x, scales):  # numbers in a numpy array, read one at a time
            return self.lin(x) * float(scales[0])

    class FromNumpy(tt.nn.Module):
        def forward(self, obs):  # an RL policy taking the environment's array as it is
            return tt.as_tensor(obs).sum()

    m = Scaled()
    with tt.no_grad():
        m.lin.weight.copy_(tt.eye(2, dtype=tt.float64))
        m.lin.bias.zero_()
    out = m(tt.ones(1, 2, dtype=tt.float64), np.array([3.0]))
    return out.tolist(), FromNumpy()(np.arange(4.0)).item()


def test_a_forward_the_user_wrote_takes_numpy_arguments():
    assert _module_with_numpy_arguments(minidl) == ([[3.0, 3.0]], 6.0)
    with pytest.raises(TypeError, match=r"numpy array of shape \(2, 2\).*minidl.tensor"):
        minidl.nn.Linear(2, 1)(np.zeros((2, 2)))  # minidl's own forward still says what to do


def test_a_forward_the_user_wrote_takes_numpy_arguments_as_torch():
    torch_ = pytest.importorskip("torch")
    assert _module_with_numpy_arguments(torch_) == _module_with_numpy_arguments(minidl)


def test_float_of_a_tensor_that_needs_gradients_warns_once_as_torch(monkeypatch):
    import sys
    import warnings

    # (minidl.tensor is a function); monkeypatch puts the once-per-process flag back after
    monkeypatch.setattr(sys.modules["minidl.tensor"], "_WARNED_FLOAT_OF_GRAD", False)
    t = minidl.ones(2, requires_grad=True).sum()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert float(minidl.ones(2).sum()) == 2.0 and t.item() == 2.0  # neither warns
        with minidl.no_grad():
            assert float(t) == 2.0  # nor this (LBFGS.step reads its closure's loss so)
        assert not caught
        assert float(t) == 2.0
        assert float(t) == 2.0  # once a process, as torch's TORCH_WARN_ONCE
    assert [str(w.message).split("\n")[0] for w in caught] == [
        "Converting a tensor with requires_grad=True to a scalar may lead to unexpected "
        "behavior."]
    assert caught[0].category is UserWarning


def _mismatched_attention_masks(tt):
    import warnings

    mha = tt.nn.MultiheadAttention(4, 2, batch_first=True).double()
    x = tt.zeros(2, 3, 4, dtype=tt.float64)
    causal = tt.nn.Transformer.generate_square_subsequent_mask(3, dtype=tt.float64)
    pad = tt.tensor([[False, False, True], [False, False, False]])
    seen = []
    for kpm, am in ((pad, causal), (pad, causal != 0), (pad.double(), causal), (None, causal)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, _ = mha(x, x, x, key_padding_mask=kpm, attn_mask=am)
        seen.append([str(w.message) for w in caught if "mismatched" in str(w.message)])
    return seen


def test_mismatched_attention_masks_warn_as_torch():
    seen = _mismatched_attention_masks(minidl)
    assert seen == [["Support for mismatched key_padding_mask and attn_mask is deprecated. Use "
                     "same type for both instead."], [], [], []]


def test_mismatched_attention_masks_warn_as_torch_as_torch():
    torch_ = pytest.importorskip("torch")
    assert _mismatched_attention_masks(torch_) == _mismatched_attention_masks(minidl)
