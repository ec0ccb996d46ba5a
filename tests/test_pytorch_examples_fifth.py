"""A fifth set of programs, each written once as torch code and run unchanged by torch 2.13 and
by minidl (``tt`` is either module) from the same initial weights, in float64: the saving and
loading recipes (warm-starting with ``strict=False`` and a changed head; several models and
optimizers in one checkpoint), feature extraction, a layer summary and Grad-CAM with module
hooks, integrated gradients, MAML with second-order gradients, a hypernetwork, a neural ODE
integrated by RK4, NeRF (positional encoding, volume rendering, hierarchical sampling),
PointNet with a T-net, a capsule network with dynamic routing, deep sets, a Gaussian process by
Cholesky, a Bayes-by-backprop network, ASPP segmentation with dilated convolutions, the M5
speech-commands model on synthetic waveforms, a Mamba-style selective scan, Perceiver
cross-attention, a TabTransformer, Pix2Pix (a U-Net generator and a PatchGAN), the
channels_last / profiler / benchmark / CPU autocast recipes, the fused Conv-BatchNorm custom
Function tutorial, the optimizer-step-in-backward recipe, a Fourier neural operator with complex
weights, gradual unfreezing with discriminative learning rates, word2vec with sparse gradients
and SparseAdam, an energy-based model sampled by Langevin dynamics, a Swin block (shifted
windows, relative position bias), ConvNeXt V2 blocks (GRN, depthwise 7x7) and MobileNetV3 /
ShuffleNet blocks (depthwise convolutions, squeeze-and-excitation, a channel shuffle).

minidl's random generator is its own (not torch's), so every draw the two runs share (data,
noise, reparameterisation epsilons) comes from numpy. ``Tensor.data`` is minidl's ndarray by
design, so in-place updates of parameters are written under ``no_grad``. What the programs
found missing in minidl is fixed, each fix with its own test at the end."""
import copy
import importlib
import io
import math

import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


from _program_parity import _load, _np, _params, _parity  # noqa: E402


# ---- 1. warm-starting: a pretrained model's weights into one with a changed head, strict=False
def warm_start(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class NetA(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc1 = nn.Linear(4 * 3 * 3, 12)
            self.fc2 = nn.Linear(12, classes)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            return self.fc2(F.relu(self.fc1(tt.flatten(x, 1))))

    class NetB(nn.Module):  # the same trunk, a new head and an extra layer
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc1 = nn.Linear(4 * 3 * 3, 12)
            self.extra = nn.Linear(12, 12)
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = F.relu(self.fc1(tt.flatten(x, 1)))
            return self.head(F.relu(self.extra(x)) + x)

    rng = np.random.default_rng(1)
    x = tt.from_numpy(rng.standard_normal((8, 1, 8, 8)))
    ya, yb = tt.from_numpy(rng.integers(0, 10, 8)), tt.from_numpy(rng.integers(0, 3, 8))
    netA, netB = NetA().double(), NetB().double()
    _load(netA, tt, state, "A.")
    _load(netB, tt, state, "B.")
    opt = tt.optim.SGD(netA.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(netA(x), ya)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    buffer = io.BytesIO()
    tt.save(netA.state_dict(), buffer)
    buffer.seek(0)
    result = netB.load_state_dict(tt.load(buffer, weights_only=True), strict=False)
    keys = repr((sorted(result.missing_keys), sorted(result.unexpected_keys)))
    same = all(bool((netB.state_dict()[k] == v).all()) for k, v in netA.state_dict().items()
               if k.startswith(("conv1", "fc1")))
    # a state dict whose head has another shape is refused, even with strict=False
    try:
        NetA(classes=3).double().load_state_dict(netA.state_dict(), strict=False)
        refused = "no"
    except RuntimeError as e:
        refused = repr(("size mismatch for fc2.weight" in str(e), "fc2.bias" in str(e)))
    # fine-tune: the trunk at a tenth of the head's learning rate
    trunk = [p for n, p in netB.named_parameters() if n.startswith(("conv1", "fc1"))]
    new = [p for n, p in netB.named_parameters() if not n.startswith(("conv1", "fc1"))]
    opt = tt.optim.Adam([{"params": trunk, "lr": 1e-3}, {"params": new}], lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(netB(x), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "keys": keys, "same": repr(same), "refused": refused,
            "params": {**_params(netA, "A."), **_params(netB, "B.")}}


def test_warm_start_with_a_changed_head_trains_the_same():
    out = _parity(warm_start)
    assert out["keys"] == repr((["extra.bias", "extra.weight", "head.bias", "head.weight"],
                                ["fc2.bias", "fc2.weight"]))
    assert out["same"] == "True" and out["refused"] == "(True, True)"


def test_warm_start_runs_in_minidl():
    out = warm_start(minidl)
    assert np.isfinite(out["losses"]).all() and out["same"] == "True"


# ---- 2. several models and optimizers in one checkpoint: a GAN saved mid-training, resumed --
def gan_checkpoint(tt, state=None, steps=4, interrupt=None):
    nn = tt.nn

    def make():
        G = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)).double()
        D = nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)).double()
        optG = tt.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
        optD = tt.optim.RMSprop(D.parameters(), lr=1e-3, momentum=0.3)
        return G, D, optG, optD

    rng = np.random.default_rng(2)
    real = rng.standard_normal((steps, 6, 2)) * 0.5 + np.array([1.0, -1.0])
    zs = rng.standard_normal((steps, 6, 3))
    G, D, optG, optD = make()
    _load(G, tt, state, "G.")
    _load(D, tt, state, "D.")
    criterion = nn.BCEWithLogitsLoss()
    losses, facts = [], []
    epoch = 0
    while epoch < steps:
        x, z = tt.from_numpy(real[epoch]), tt.from_numpy(zs[epoch])
        ones, zeros = tt.ones(6, 1, dtype=tt.float64), tt.zeros(6, 1, dtype=tt.float64)
        fake = G(z)
        lossD = criterion(D(x), ones) + criterion(D(fake.detach()), zeros)
        optD.zero_grad()
        lossD.backward()
        optD.step()
        lossG = criterion(D(fake), ones)
        optG.zero_grad()
        lossG.backward()
        optG.step()
        losses += [lossD.item(), lossG.item()]
        epoch += 1
        if epoch == interrupt:
            buffer = io.BytesIO()
            tt.save({"epoch": epoch, "modelG_state_dict": G.state_dict(),
                     "modelD_state_dict": D.state_dict(),
                     "optimizerG_state_dict": optG.state_dict(),
                     "optimizerD_state_dict": optD.state_dict(), "lossG": lossG,
                     "lossD": lossD.item()}, buffer)
            buffer.seek(0)
            checkpoint = tt.load(buffer, map_location="cpu", weights_only=True)
            G, D, optG, optD = make()
            G.load_state_dict(checkpoint["modelG_state_dict"])
            D.load_state_dict(checkpoint["modelD_state_dict"])
            optG.load_state_dict(checkpoint["optimizerG_state_dict"])
            optD.load_state_dict(checkpoint["optimizerD_state_dict"])
            epoch = checkpoint["epoch"]
            saved = checkpoint["lossG"]  # a tensor in the graph comes back a leaf
            facts.append(repr((saved.item() == lossG.item(), saved.requires_grad,
                               saved.is_leaf, saved.grad_fn)))
            assert sorted(checkpoint["optimizerD_state_dict"]["state"][0]) == \
                ["momentum_buffer", "square_avg", "step"]
            G.train()
            D.train()
    return {"losses": losses, "facts": repr(facts),
            "params": {**_params(G, "G."), **_params(D, "D.")}}


def test_gan_checkpoint_with_two_models_and_optimizers_trains_the_same():
    _parity(gan_checkpoint)


def test_gan_checkpoint_resumes_as_torch():
    out = _parity(gan_checkpoint, interrupt=2)
    assert out["facts"] == repr([repr((True, True, True, None))])


def test_gan_checkpoint_resumed_run_is_the_straight_run():
    start = gan_checkpoint(minidl, steps=0)["params"]
    straight = gan_checkpoint(minidl, state=start)
    resumed = gan_checkpoint(minidl, state=start, interrupt=2)
    np.testing.assert_array_equal(resumed["losses"], straight["losses"])
    for k in straight["params"]:
        np.testing.assert_array_equal(resumed["params"][k], straight["params"][k], err_msg=k)


# ---- 3. module hooks: feature extraction by forward hooks, a pre-hook, a layer summary by a
# global module hook, Grad-CAM by a forward and a full backward hook ------------------------------
def hooks_gradcam(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6),
                                          nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(tt.flatten(self.pool(self.features(x)), 1))

    rng = np.random.default_rng(3)
    images = rng.random((8, 3, 8, 8))
    labels = rng.integers(0, 4, 8)
    model = Net().double()
    _load(model, tt, state)
    activation = {}

    def get_activation(name):
        def hook(module, inputs, output):
            activation[name] = output  # kept in the graph: the loss below uses it
        return hook

    handles = [model.features[2].register_forward_hook(get_activation("relu1")),
               model.pool.register_forward_hook(get_activation("pooled"))]
    scale = model.fc.register_forward_pre_hook(lambda m, args: (args[0] * 2.0,))
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses, shapes = [], []
    for _ in range(steps):
        out = model(tt.from_numpy(images))
        loss = F.cross_entropy(out, tt.from_numpy(labels)) + 1e-3 * activation["relu1"].pow(
            2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        shapes.append(tuple(activation["pooled"].shape))
    scale.remove()
    for h in handles:
        h.remove()
    activation.clear()
    model(tt.from_numpy(images))
    removed = repr((len(activation), shapes))
    summary = []  # a layer-by-layer summary by a hook on every module
    module_hooks = importlib.import_module(tt.__name__ + ".nn.modules.module")
    every = module_hooks.register_module_forward_hook(
        lambda m, i, o: summary.append((type(m).__name__, tuple(o.shape),
                                        sum(p.numel() for p in m.parameters(recurse=False)))))
    try:
        model(tt.from_numpy(images[:2]))
    finally:
        every.remove()
    # Grad-CAM on the last conv block's output
    model.eval()
    store = {}
    target = model.features[5]
    fh = target.register_forward_hook(lambda m, i, o: store.__setitem__("act", o.detach()))
    bh = target.register_full_backward_hook(
        lambda m, gin, gout: store.__setitem__("grad", gout[0].detach()))
    x = tt.from_numpy(images[:4]).requires_grad_()
    logits = model(x)
    cls = logits.argmax(dim=1)
    model.zero_grad()
    logits.gather(1, cls[:, None]).sum().backward()
    fh.remove()
    bh.remove()
    weights = store["grad"].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * store["act"]).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)
    flat = cam.flatten(1)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    cam = ((flat - lo) / (hi - lo + 1e-8)).view_as(cam)
    return {"losses": losses, "removed": removed, "summary": repr(summary),
            "cam": _np(cam).reshape(-1),
            "input_grad": _np(x.grad).reshape(-1), "params": _params(model)}


def test_hooks_and_grad_cam_run_the_same():
    out = _parity(hooks_gradcam)
    assert out["removed"] == repr((0, [(8, 8, 1, 1)] * 3))
    summary = eval(out["summary"])
    assert len(summary) == 10 and summary[-1] == ("Net", (2, 4), 0)
    assert sum(n for _, _, n in summary) == 168 + 12 + 440 + 36
    assert out["cam"].min() >= 0 and out["cam"].max() <= 1


def test_hooks_and_grad_cam_run_in_minidl():
    out = hooks_gradcam(minidl, steps=2)
    assert np.isfinite(out["cam"]).all() and np.abs(out["input_grad"]).sum() > 0


# ---- 4. integrated gradients and SmoothGrad: attributions by autograd.grad on a batch of paths
def integrated_gradients(tt, state=None, steps=3, m=16):
    nn, F = tt.nn, tt.nn.functional
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Softplus(),
                          nn.Linear(16, 3)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(tt.from_numpy(X)), tt.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()

    def ig(x, baseline, target):
        alphas = tt.linspace(0, 1, m + 1, dtype=tt.float64)
        path = baseline + alphas[:, None] * (x - baseline)[None]
        path.requires_grad_(True)
        out = F.softmax(model(path), dim=-1)[:, target]
        (grads,) = tt.autograd.grad(out.sum(), path)
        avg = (grads[:-1] + grads[1:]).mean(dim=0) / 2.0  # the trapezoid rule
        return (x - baseline) * avg, out[-1] - out[0]

    attributions, gaps = [], []
    for k in range(4):
        x = tt.from_numpy(X[k])
        target = int(model(x[None]).argmax())
        attr, gap = ig(x, tt.zeros_like(x), target)
        attributions.append(attr)
        gaps.append((attr.sum() - gap).abs().item())  # completeness, up to the quadrature
    noise = tt.from_numpy(rng.standard_normal((8, 6)) * 0.1)
    noisy = (tt.from_numpy(X[:1]) + noise).requires_grad_()
    score = model(noisy)[:, 0].sum()
    score.backward()
    smooth = noisy.grad.mean(dim=0)
    return {"losses": losses, "ig": _np(tt.stack(attributions)).reshape(-1), "gaps": gaps,
            "smooth": _np(smooth), "params": _params(model)}


def test_integrated_gradients_run_the_same():
    out = _parity(integrated_gradients)
    assert max(out["gaps"]) < 0.05


def test_integrated_gradients_run_in_minidl():
    out = integrated_gradients(minidl, m=32)
    assert max(out["gaps"]) < 0.02


# ---- 5. MAML on sine regression: an inner loop by autograd.grad(create_graph=True) and
# functional_call, the outer Adam step through the inner updates -----------------------------
def maml(tt, state=None, steps=3, inner_steps=2, first_order=False):
    nn, F = tt.nn, tt.nn.functional
    model = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 1)).double()
    _load(model, tt, state)
    meta_opt = tt.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(5)
    inner_lr, tasks = 0.05, 3
    losses = []

    def sample_task():
        amp, phase = rng.uniform(0.5, 2.0), rng.uniform(0, math.pi)
        xs = rng.uniform(-3, 3, (10, 1))
        ys = amp * np.sin(xs + phase)
        return (tt.from_numpy(xs[:5]), tt.from_numpy(ys[:5]), tt.from_numpy(xs[5:]),
                tt.from_numpy(ys[5:]))

    for _ in range(steps):
        meta_opt.zero_grad()
        meta_loss = 0.0
        for _ in range(tasks):
            xs, ys, xq, yq = sample_task()
            fast = dict(model.named_parameters())
            for _ in range(inner_steps):
                loss = F.mse_loss(tt.func.functional_call(model, fast, (xs,)), ys)
                grads = tt.autograd.grad(loss, list(fast.values()),
                                         create_graph=not first_order)
                fast = {n: p - inner_lr * g for (n, p), g in zip(fast.items(), grads)}
            query = F.mse_loss(tt.func.functional_call(model, fast, (xq,)), yq)
            (query / tasks).backward()
            meta_loss += query.item() / tasks
        meta_opt.step()
        losses.append(meta_loss)
    return {"losses": losses, "params": _params(model)}


def test_maml_with_second_order_gradients_trains_the_same():
    _parity(maml)


def test_first_order_maml_trains_the_same():
    _parity(maml, first_order=True)


def test_maml_runs_in_minidl():
    out = maml(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 6. a hypernetwork: a task embedding generates the weights of a target MLP (F.linear, bmm)
def hypernetwork(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class HyperNet(nn.Module):
        def __init__(self, tasks=3, zdim=4, hidden=8):
            super().__init__()
            self.shapes = [(hidden, 2), (hidden,), (1, hidden), (1,)]
            self.sizes = [math.prod(s) for s in self.shapes]
            self.embed = nn.Embedding(tasks, zdim)
            self.gen = nn.Sequential(nn.Linear(zdim, 32), nn.ELU(), nn.Linear(32, sum(self.sizes)))
            with tt.no_grad():
                self.gen[-1].weight.mul_(0.1)

        def weights(self, task):
            flat = self.gen(self.embed(task))
            return [c.view(s) for c, s in zip(flat.split(self.sizes, dim=-1), self.shapes)]

        def forward(self, x, task):  # one task: the generated MLP through F.linear
            w1, b1, w2, b2 = self.weights(task)
            return F.linear(tt.tanh(F.linear(x, w1, b1)), w2, b2)

        def forward_batched(self, x, tasks):  # a task per sample: the weights per row, bmm
            flat = self.gen(self.embed(tasks))
            w1, b1, w2, b2 = (c.reshape(len(tasks), *s)
                              for c, s in zip(flat.split(self.sizes, dim=-1), self.shapes))
            h = tt.tanh(tt.bmm(w1, x.unsqueeze(-1)).squeeze(-1) + b1)
            return tt.bmm(w2, h.unsqueeze(-1)).squeeze(-1) + b2

    rng = np.random.default_rng(6)
    freqs = [1.0, 2.0, 3.0]
    net = HyperNet().double()
    _load(net, tt, state)
    opt = tt.optim.AdamW(net.parameters(), lr=5e-3, weight_decay=1e-2)
    losses = []
    for i in range(steps):
        loss = 0
        for task in range(3):
            x = rng.uniform(-1, 1, (8, 2))
            y = np.sin(freqs[task] * x[:, :1]) * x[:, 1:]
            loss = loss + F.mse_loss(net(tt.from_numpy(x), tt.tensor(task)), tt.from_numpy(y))
        tasks = rng.integers(0, 3, 6)
        x = rng.uniform(-1, 1, (6, 2))
        y = np.sin(np.array(freqs)[tasks][:, None] * x[:, :1]) * x[:, 1:]
        loss = loss + F.smooth_l1_loss(net.forward_batched(tt.from_numpy(x), tt.from_numpy(tasks)),
                                       tt.from_numpy(y), beta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        w = tt.cat([c.flatten() for c in net.weights(tt.tensor(1))])
    return {"losses": losses, "generated": _np(w), "params": _params(net)}


def test_hypernetwork_trains_the_same():
    _parity(hypernetwork)


def test_hypernetwork_runs_in_minidl():
    out = hypernetwork(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["generated"].shape == (8 * 2 + 8 + 8 + 1,)


# ---- 7. a neural ODE: dz/dt = f(t, z) by an MLP, a fixed-step RK4 solver, a spiral fitted -----
def neural_ode(tt, state=None, steps=3, solver="rk4"):
    nn = tt.nn

    class ODEFunc(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
            for m in self.net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, mean=0, std=0.1)
                    nn.init.constant_(m.bias, val=0)
            self.nfe = 0

        def forward(self, t, z):
            self.nfe += 1
            return self.net(tt.cat([z, t.expand(z.shape[0], 1)], dim=1))

    def odeint(func, z0, ts):
        zs, z = [z0], z0
        for t0, t1 in zip(ts[:-1], ts[1:]):
            h = t1 - t0
            if solver == "rk4":
                k1 = func(t0, z)
                k2 = func(t0 + h / 2, z + h * k1 / 2)
                k3 = func(t0 + h / 2, z + h * k2 / 2)
                k4 = func(t1, z + h * k3)
                z = z + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
            else:  # the explicit midpoint rule
                z = z + h * func(t0 + h / 2, z + h / 2 * func(t0, z))
            zs.append(z)
        return tt.stack(zs)

    true_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    ts = np.linspace(0, 1.5, 11)
    rng = np.random.default_rng(7)
    z0 = rng.standard_normal((4, 2))
    truth, z = [z0], z0
    for dt in np.diff(ts):  # the data: the linear spiral, integrated finely in numpy
        for _ in range(20):
            z = z + dt / 20 * (z ** 3) @ true_A.T
        truth.append(z)
    truth = tt.from_numpy(np.stack(truth))
    func = ODEFunc().double()
    _load(func, tt, state)
    opt = tt.optim.RMSprop(func.parameters(), lr=1e-2)
    t = tt.from_numpy(ts).reshape(-1, 1, 1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        pred = odeint(func, tt.from_numpy(z0), t)
        loss = tt.mean(tt.abs(pred - truth))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        extrapolated = odeint(func, tt.from_numpy(z0), tt.linspace(0, 3, 21,
                                                                  dtype=tt.float64)[:, None, None])
    return {"losses": losses, "nfe": repr(func.nfe), "extrapolated": _np(extrapolated[-1]),
            "params": _params(func)}


def test_neural_ode_with_rk4_trains_the_same():
    _parity(neural_ode)


def test_neural_ode_with_the_midpoint_rule_trains_the_same():
    _parity(neural_ode, solver="midpoint")


def test_neural_ode_runs_in_minidl():
    out = neural_ode(minidl, steps=2)
    assert out["nfe"] == repr(4 * 10 * 2 + 4 * 20) and np.isfinite(out["extrapolated"]).all()


# ---- 8. NeRF: positional encoding, stratified samples on rays, volume rendering by cumprod, the
# fine pass's samples by inverse-transform sampling (searchsorted) of the coarse weights ---------
def nerf(tt, state=None, steps=3, n_samples=12, hierarchical=False):
    nn, F = tt.nn, tt.nn.functional

    def positional_encoding(x, L):
        freqs = 2.0 ** tt.arange(L, dtype=x.dtype) * math.pi
        xf = x[..., None] * freqs  # (..., 3, L)
        enc = tt.cat([tt.sin(xf), tt.cos(xf)], dim=-1).flatten(-2)
        return tt.cat([x, enc], dim=-1)

    class TinyNeRF(nn.Module):
        def __init__(self, L_pos=4, L_dir=2, W=24):
            super().__init__()
            self.L_pos, self.L_dir = L_pos, L_dir
            self.trunk = nn.Sequential(nn.Linear(3 + 6 * L_pos, W), nn.ReLU(), nn.Linear(W, W),
                                       nn.ReLU())
            self.sigma = nn.Linear(W, 1)
            self.feature = nn.Linear(W, W)
            self.rgb = nn.Sequential(nn.Linear(W + 3 + 6 * L_dir, W // 2), nn.ReLU(),
                                     nn.Linear(W // 2, 3), nn.Sigmoid())

        def forward(self, pts, dirs):
            h = self.trunk(positional_encoding(pts, self.L_pos))
            sigma = F.softplus(self.sigma(h).squeeze(-1))
            d = positional_encoding(dirs, self.L_dir)
            rgb = self.rgb(tt.cat([self.feature(h), d], dim=-1))
            return rgb, sigma

    def render(model, rays_o, rays_d, t_vals):
        pts = rays_o[:, None, :] + rays_d[:, None, :] * t_vals[..., None]  # (R, S, 3)
        dirs = F.normalize(rays_d, dim=-1)[:, None, :].expand_as(pts)
        rgb, sigma = model(pts, dirs)
        deltas = t_vals[:, 1:] - t_vals[:, :-1]
        deltas = tt.cat([deltas, tt.full_like(deltas[:, :1], 1e10)], dim=-1)
        alpha = 1.0 - tt.exp(-sigma * deltas)
        trans = tt.cumprod(1.0 - alpha + 1e-10, dim=-1)
        trans = tt.roll(trans, 1, dims=-1)
        trans[:, 0] = 1.0  # exclusive cumprod, written in place as in the NeRF code
        weights = alpha * trans
        color = (weights[..., None] * rgb).sum(dim=-2)
        depth = (weights * t_vals).sum(dim=-1)
        acc = weights.sum(dim=-1)
        return color + (1.0 - acc[..., None]), depth, weights  # a white background

    def sample_pdf(bins, weights, u):  # inverse-transform sampling of the coarse weights
        weights = weights + 1e-5
        pdf = weights / tt.sum(weights, -1, keepdim=True)
        cdf = tt.cat([tt.zeros_like(pdf[..., :1]), tt.cumsum(pdf, -1)], -1)
        inds = tt.searchsorted(cdf, u.contiguous(), right=True)
        below = tt.max(tt.zeros_like(inds - 1), inds - 1)
        above = tt.min((cdf.shape[-1] - 1) * tt.ones_like(inds), inds)
        inds_g = tt.stack([below, above], -1)
        matched = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = tt.gather(cdf.unsqueeze(1).expand(matched), 2, inds_g)
        bins_g = tt.gather(bins.unsqueeze(1).expand(matched), 2, inds_g)
        denom = cdf_g[..., 1] - cdf_g[..., 0]
        denom = tt.where(denom < 1e-5, tt.ones_like(denom), denom)
        t = (u - cdf_g[..., 0]) / denom
        return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])

    rng = np.random.default_rng(8)
    R = 16
    rays_o = rng.standard_normal((R, 3)) * 0.1 + np.array([0, 0, -2.0])
    rays_d = np.concatenate([rng.uniform(-0.3, 0.3, (R, 2)), np.ones((R, 1))], axis=1)
    target = rng.random((R, 3))
    model = TinyNeRF().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=5e-3)
    losses, psnrs = [], []
    near, far = 1.0, 3.0
    bins = np.linspace(near, far, n_samples + 1)
    for _ in range(steps):
        t_vals = bins[:-1] + (bins[1:] - bins[:-1]) * rng.random((R, n_samples))  # stratified
        o, d = tt.from_numpy(rays_o), tt.from_numpy(rays_d)
        color, depth, weights = render(model, o, d, tt.from_numpy(t_vals))
        loss = F.mse_loss(color, tt.from_numpy(target))
        if hierarchical:  # the fine pass, on the coarse samples and those drawn from them
            t_c = tt.from_numpy(t_vals)
            mids = 0.5 * (t_c[..., 1:] + t_c[..., :-1])
            u = tt.from_numpy(rng.random((R, n_samples)))
            fine = sample_pdf(mids, weights[..., 1:-1].detach(), u)
            t_f, _ = tt.sort(tt.cat([t_c, fine.detach()], -1), -1)
            color_f, depth, _ = render(model, o, d, t_f)
            loss = loss + F.mse_loss(color_f, tt.from_numpy(target))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        psnrs.append((-10.0 * tt.log10(loss.detach())).item())
    with tt.no_grad():  # the expected depth of each ray, at the bins' midpoints
        mids = (bins[:-1] + bins[1:]) / 2 if steps else np.linspace(near, far, n_samples)
        _, depth, _ = render(model, tt.from_numpy(rays_o), tt.from_numpy(rays_d),
                          tt.from_numpy(np.tile(mids, (R, 1))))
    return {"losses": losses, "psnrs": psnrs, "depth": _np(depth), "params": _params(model)}


def test_nerf_volume_rendering_trains_the_same():
    _parity(nerf)


def test_nerf_with_hierarchical_sampling_trains_the_same():
    _parity(nerf, hierarchical=True)


def test_nerf_runs_in_minidl():
    out = nerf(minidl, steps=2, hierarchical=True)
    assert np.isfinite(out["psnrs"]).all() and ((out["depth"] > 0.9) & (out["depth"] < 3.1)).all()


# ---- 9. PointNet: a T-net predicting a 3x3 transform, shared MLPs by Conv1d, max pooling,
# the feature-transform regulariser ||I - A A^T|| ------------------------------------------------
def pointnet(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class TNet(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k
            self.conv1, self.conv2 = nn.Conv1d(k, 16, 1), nn.Conv1d(16, 32, 1)
            self.bn1, self.bn2 = nn.BatchNorm1d(16), nn.BatchNorm1d(32)
            self.fc1, self.fc2 = nn.Linear(32, 16), nn.Linear(16, k * k)
            self.bn3 = nn.BatchNorm1d(16)

        def forward(self, x):
            B = x.size(0)
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            x = tt.max(x, 2, keepdim=True)[0].view(-1, 32)
            x = self.fc2(F.relu(self.bn3(self.fc1(x))))
            iden = tt.eye(self.k, dtype=x.dtype).flatten().repeat(B, 1)
            return (x + iden).view(-1, self.k, self.k)

    class PointNetCls(nn.Module):
        def __init__(self, classes=4):
            super().__init__()
            self.stn = TNet(3)
            self.conv1 = nn.Conv1d(3, 16, 1)
            self.fstn = TNet(16)
            self.conv2 = nn.Conv1d(16, 32, 1)
            self.bn1, self.bn2 = nn.BatchNorm1d(16), nn.BatchNorm1d(32)
            self.head = nn.Sequential(nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                      nn.Dropout(p=0.0), nn.Linear(16, classes))

        def forward(self, x):
            trans = self.stn(x)
            x = tt.bmm(x.transpose(2, 1), trans).transpose(2, 1)
            x = F.relu(self.bn1(self.conv1(x)))
            trans_feat = self.fstn(x)
            x = tt.bmm(x.transpose(2, 1), trans_feat).transpose(2, 1)
            x = self.bn2(self.conv2(x))
            x = tt.max(x, 2, keepdim=True)[0].view(-1, 32)
            return F.log_softmax(self.head(x), dim=1), trans_feat

    def feature_transform_regularizer(trans):
        d = trans.size(1)
        I = tt.eye(d, dtype=trans.dtype)[None, :, :]
        return tt.mean(tt.norm(tt.bmm(trans, trans.transpose(2, 1)) - I, dim=(1, 2)))

    rng = np.random.default_rng(9)
    points = rng.standard_normal((8, 3, 20))
    points[:, 2] *= np.arange(8)[:, None] % 4 / 2 + 0.2  # the class: how flat the cloud is
    labels = np.arange(8) % 4
    model = PointNetCls().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    losses = []
    model.train()
    for _ in range(steps):
        pred, trans_feat = model(tt.from_numpy(points))
        loss = F.nll_loss(pred, tt.from_numpy(labels)) + 1e-3 * feature_transform_regularizer(
            trans_feat)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():  # a permutation of the points changes nothing
        a = model(tt.from_numpy(points))[0]
        b = model(tt.from_numpy(points[:, :, rng.permutation(20)]))[0]
    return {"losses": losses, "eval": _np(a).reshape(-1), "perm": _np(a - b).reshape(-1),
            "params": _params(model)}


def test_pointnet_trains_the_same():
    out = _parity(pointnet)
    assert np.abs(out["perm"]).max() < 1e-12


def test_pointnet_runs_in_minidl():
    out = pointnet(minidl, steps=2)
    assert np.abs(out["perm"]).max() < 1e-12


# ---- 10. a capsule network: primary capsules, squash, routing by agreement, margin loss,
# reconstruction from the masked capsule -------------------------------------------------------
def capsnet(tt, state=None, steps=3, iterations=3):
    nn, F = tt.nn, tt.nn.functional

    def squash(s, dim=-1):
        sq = (s ** 2).sum(dim=dim, keepdim=True)
        return sq / (1 + sq) * s / tt.sqrt(sq + 1e-8)

    class CapsNet(nn.Module):
        def __init__(self, classes=3, in_caps=2 * 2 * 2, in_dim=4, out_dim=6):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)
            self.primary = nn.Conv2d(8, 2 * in_dim, 3, stride=2)
            self.in_dim, self.classes = in_dim, classes
            self.W = nn.Parameter(0.1 * tt.randn(1, in_caps, classes, out_dim, in_dim,
                                                 dtype=tt.float64))
            self.decoder = nn.Sequential(nn.Linear(classes * out_dim, 32), nn.ReLU(),
                                         nn.Linear(32, 64), nn.Sigmoid())

        def forward(self, x, y=None):
            h = F.relu(self.conv(x))
            u = self.primary(h)  # (B, 2 * in_dim, 2, 2) -> (B, 8 capsules, in_dim)
            B = u.shape[0]
            u = u.view(B, 2, self.in_dim, 2, 2).permute(0, 1, 3, 4, 2).reshape(B, -1,
                                                                               self.in_dim)
            u = squash(u)
            u_hat = (self.W @ u[:, :, None, :, None]).squeeze(-1)  # (B, in, classes, out)
            b = tt.zeros(u_hat.shape[:3], dtype=u_hat.dtype)
            u_detached = u_hat.detach()
            for r in range(iterations):
                c = F.softmax(b, dim=2)
                if r == iterations - 1:
                    v = squash((c.unsqueeze(-1) * u_hat).sum(dim=1))
                else:
                    v = squash((c.unsqueeze(-1) * u_detached).sum(dim=1))
                    b = b + tt.einsum("bicd,bcd->bic", u_detached, v)
            lengths = v.norm(dim=-1)
            if y is None:
                y = lengths.argmax(dim=1)
            mask = F.one_hot(y, self.classes).to(v.dtype)
            recon = self.decoder((v * mask[:, :, None]).flatten(1))
            return lengths, recon

    def margin_loss(lengths, y, m_pos=0.9, m_neg=0.1, lam=0.5):
        T = F.one_hot(y, lengths.shape[1]).to(lengths.dtype)
        loss = T * F.relu(m_pos - lengths) ** 2 + lam * (1 - T) * F.relu(lengths - m_neg) ** 2
        return loss.sum(dim=1).mean()

    rng = np.random.default_rng(10)
    images = rng.random((6, 1, 8, 8))
    labels = rng.integers(0, 3, 6)
    model = CapsNet().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        x, y = tt.from_numpy(images), tt.from_numpy(labels)
        lengths, recon = model(x, y)
        loss = margin_loss(lengths, y) + 5e-4 * F.mse_loss(recon, x.flatten(1),
                                                           reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        lengths, _ = model(tt.from_numpy(images))
    return {"losses": losses, "lengths": _np(lengths).reshape(-1), "params": _params(model)}


def test_capsule_network_trains_the_same():
    out = _parity(capsnet)
    assert ((out["lengths"] >= 0) & (out["lengths"] < 1)).all()


def test_capsule_network_runs_in_minidl():
    out = capsnet(minidl, steps=2, iterations=2)
    assert np.isfinite(out["losses"]).all()


# ---- 11. deep sets: phi per element, a masked sum over padded sets, rho on the pooled ---------
def deep_sets(tt, state=None, steps=4, pool="sum"):
    nn, F = tt.nn, tt.nn.functional

    class DeepSets(nn.Module):
        def __init__(self, d=2, h=16):
            super().__init__()
            self.phi = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
            self.rho = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))

        def forward(self, x, mask):  # x: (B, N, d), mask: (B, N) True where an element is
            h = self.phi(x) * mask.unsqueeze(-1)
            if pool == "sum":
                pooled = h.sum(dim=1)
            elif pool == "mean":
                pooled = h.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
            else:  # max over the real elements only
                pooled = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
            return self.rho(pooled).squeeze(-1)

    rng = np.random.default_rng(11)
    B, N = 8, 6
    sizes = rng.integers(1, N + 1, B)
    x = rng.standard_normal((B, N, 2))
    mask = np.arange(N)[None, :] < sizes[:, None]
    x[~mask] = 0.0
    target = np.array([np.abs(x[b, :sizes[b]]).sum() for b in range(B)])
    model = DeepSets().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    X, M, Y = tt.from_numpy(x), tt.from_numpy(mask), tt.from_numpy(target)
    losses = []
    for _ in range(steps):
        loss = F.huber_loss(model(X, M), Y, delta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():  # invariant to the order of each set's elements and to its padding
        perm = np.stack([np.r_[rng.permutation(s), np.arange(s, N)] for s in sizes])
        xp = np.take_along_axis(x, perm[..., None], axis=1)
        wide = np.concatenate([x, np.full((B, 2, 2), 7.0)], axis=1)
        wmask = np.concatenate([mask, np.zeros((B, 2), bool)], axis=1)
        a = model(X, M)
        b = model(tt.from_numpy(xp), M)
        c = model(tt.from_numpy(wide), tt.from_numpy(wmask))
    return {"losses": losses, "pred": _np(a), "invariance": _np((a - b).abs() + (a - c).abs()),
            "params": _params(model)}


@pytest.mark.parametrize("pool", ["sum", "mean", "max"])
def test_deep_sets_train_the_same(pool):
    out = _parity(deep_sets, pool=pool)
    assert out["invariance"].max() < 1e-12


def test_deep_sets_run_in_minidl():
    out = deep_sets(minidl, pool="max")
    assert out["invariance"].max() < 1e-12


# ---- 12. a Gaussian process: an RBF kernel with learned hyperparameters, linalg.cholesky,
# cholesky_solve and solve_triangular for the marginal likelihood and the predictive -------------
def gaussian_process(tt, state=None, steps=5, optimizer="adam"):
    nn = tt.nn

    class ExactGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_lengthscale = nn.Parameter(tt.tensor(0.0, dtype=tt.float64))
            self.log_outputscale = nn.Parameter(tt.tensor(0.0, dtype=tt.float64))
            self.raw_noise = nn.Parameter(tt.tensor(-2.0, dtype=tt.float64))

        def kernel(self, a, b):
            d2 = tt.cdist(a / self.log_lengthscale.exp(), b / self.log_lengthscale.exp()) ** 2
            return self.log_outputscale.exp() * tt.exp(-0.5 * d2)

        def noise(self):
            return nn.functional.softplus(self.raw_noise) + 1e-6

        def neg_mll(self, X, y):
            n = X.shape[0]
            K = self.kernel(X, X) + self.noise() * tt.eye(n, dtype=X.dtype)
            L = tt.linalg.cholesky(K)
            alpha = tt.cholesky_solve(y[:, None], L)
            return (0.5 * (y[:, None] * alpha).sum() + tt.log(tt.diagonal(L)).sum()
                    + 0.5 * n * math.log(2 * math.pi)) / n

        def predict(self, X, y, Xs):
            K = self.kernel(X, X) + self.noise() * tt.eye(X.shape[0], dtype=X.dtype)
            L = tt.linalg.cholesky(K)
            Ks = self.kernel(X, Xs)
            v = tt.linalg.solve_triangular(L, Ks, upper=False)
            alpha = tt.linalg.solve_triangular(L.mT, tt.linalg.solve_triangular(
                L, y[:, None], upper=False), upper=True)
            mean = (Ks.mT @ alpha).squeeze(-1)
            var = self.log_outputscale.exp() - (v ** 2).sum(dim=0)
            return mean, var

    rng = np.random.default_rng(12)
    Xn = rng.uniform(-3, 3, (20, 1))
    yn = np.sin(2 * Xn[:, 0]) + 0.1 * rng.standard_normal(20)
    X, y = tt.from_numpy(Xn), tt.from_numpy(yn)
    gp = ExactGP()
    _load(gp, tt, state)
    losses = []
    if optimizer == "adam":
        opt = tt.optim.Adam(gp.parameters(), lr=0.1)
        for _ in range(steps):
            opt.zero_grad()
            loss = gp.neg_mll(X, y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    else:
        opt = tt.optim.LBFGS(gp.parameters(), lr=0.5, max_iter=steps,
                             line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = gp.neg_mll(X, y)
            loss.backward()
            losses.append(loss.item())
            return loss
        opt.step(closure)
    with tt.no_grad():
        mean, var = gp.predict(X, y, tt.linspace(-3, 3, 7, dtype=tt.float64)[:, None])
    return {"losses": losses, "mean": _np(mean), "var": _np(var), "params": _params(gp)}


def test_gaussian_process_trains_the_same():
    out = _parity(gaussian_process)
    assert out["losses"][-1] < out["losses"][0] and (out["var"] > 0).all()


def test_gaussian_process_with_lbfgs_trains_the_same():
    _parity(gaussian_process, optimizer="lbfgs", steps=6)


def test_gaussian_process_runs_in_minidl():
    out = gaussian_process(minidl, steps=8)
    assert out["losses"][-1] < out["losses"][0] and (out["var"] > -1e-9).all()


# ---- 13. Bayes by backprop: weights drawn by reparameterisation, Normal log-probs, a scale-
# mixture prior, the KL by distributions.kl_divergence, the ELBO over several samples -----------
def bayes_by_backprop(tt, state=None, steps=3, samples=2, kl="mixture"):
    nn, F = tt.nn, tt.nn.functional
    D = tt.distributions

    class BayesianLinear(nn.Module):
        def __init__(self, fin, fout):
            super().__init__()
            self.w_mu = nn.Parameter(tt.empty(fout, fin, dtype=tt.float64).uniform_(-0.2, 0.2))
            self.w_rho = nn.Parameter(tt.full((fout, fin), -4.0, dtype=tt.float64))
            self.b_mu = nn.Parameter(tt.zeros(fout, dtype=tt.float64))
            self.b_rho = nn.Parameter(tt.full((fout,), -4.0, dtype=tt.float64))
            self.log_prior = self.log_variational = 0.0

        def forward(self, x, eps_w, eps_b):
            w_sigma, b_sigma = F.softplus(self.w_rho), tt.log1p(tt.exp(self.b_rho))
            w = self.w_mu + w_sigma * eps_w
            b = self.b_mu + b_sigma * eps_b
            if kl == "mixture":  # the paper's scale mixture prior, by log-probs of the sample
                def prior(v):
                    p1 = D.Normal(0.0, 1.0).log_prob(v).exp()
                    p2 = D.Normal(0.0, math.exp(-3)).log_prob(v).exp()
                    return tt.log(0.5 * p1 + 0.5 * p2).sum()
                self.log_prior = prior(w) + prior(b)
                self.log_variational = (D.Normal(self.w_mu, w_sigma).log_prob(w).sum()
                                        + D.Normal(self.b_mu, b_sigma).log_prob(b).sum())
            else:  # a Normal prior: the KL in closed form
                std = tt.ones_like(self.w_mu)
                self.log_prior = 0.0
                self.log_variational = (
                    D.kl_divergence(D.Normal(self.w_mu, w_sigma), D.Normal(0 * std, std)).sum()
                    + D.kl_divergence(D.Independent(D.Normal(self.b_mu, b_sigma), 1),
                                      D.Independent(D.Normal(tt.zeros_like(self.b_mu),
                                                             tt.ones_like(self.b_mu)), 1)))
            return F.linear(x, w, b)

    class BNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = BayesianLinear(4, 12), BayesianLinear(12, 3)

        def forward(self, x, eps):
            x = F.relu(self.l1(x, *eps[:2]))
            return self.l2(x, *eps[2:])

        def complexity(self):
            return sum(m.log_variational - m.log_prior for m in (self.l1, self.l2))

    rng = np.random.default_rng(13)
    X, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    net = BNN()
    _load(net, tt, state)
    opt = tt.optim.Adam(net.parameters(), lr=1e-2)
    shapes = [(12, 4), (12,), (3, 12), (3,)]
    losses = []
    for _ in range(steps):
        nll = complexity = 0.0
        for _ in range(samples):
            eps = [tt.from_numpy(rng.standard_normal(s)) for s in shapes]
            out = net(tt.from_numpy(X), eps)
            nll = nll + F.cross_entropy(out, tt.from_numpy(y), reduction="sum")
            complexity = complexity + net.complexity()
        loss = (complexity / 4 + nll) / samples  # four minibatches to an epoch
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():  # the predictive: the mean softmax over weight samples
        probs = tt.stack([F.softmax(net(tt.from_numpy(X), [tt.from_numpy(rng.standard_normal(s))
                                                          for s in shapes]), -1)
                          for _ in range(3)]).mean(0)
    return {"losses": losses, "probs": _np(probs).reshape(-1), "params": _params(net)}


def test_bayes_by_backprop_trains_the_same():
    _parity(bayes_by_backprop)


def test_bayes_by_backprop_with_a_closed_form_kl_trains_the_same():
    _parity(bayes_by_backprop, kl="normal")


def test_bayes_by_backprop_runs_in_minidl():
    out = bayes_by_backprop(minidl, samples=1)
    np.testing.assert_allclose(out["probs"].reshape(-1, 3).sum(1), 1.0)


# ---- 14. semantic segmentation: a dilated backbone, ASPP (atrous branches + image pooling),
# bilinear upsampling to the input, cross-entropy over pixels with ignore_index ---------------
def aspp_segmentation(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class ASPPPooling(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

        def forward(self, x):
            size = x.shape[-2:]
            for mod in self:
                x = mod(x)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    class ASPP(nn.Module):
        def __init__(self, cin, rates, cout=8):
            super().__init__()
            branches = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                      nn.ReLU())]
            for r in rates:
                branches.append(nn.Sequential(
                    nn.Conv2d(cin, cout, 3, padding=r, dilation=r, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU()))
            branches.append(ASPPPooling(cin, cout))
            self.convs = nn.ModuleList(branches)
            self.project = nn.Sequential(nn.Conv2d(len(branches) * cout, cout, 1, bias=False),
                                         nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(0.0))

        def forward(self, x):
            return self.project(tt.cat([conv(x) for conv in self.convs], dim=1))

    class DeepLabish(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                nn.ReLU(inplace=True),
                nn.Conv2d(8, 12, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(12),
                nn.ReLU(inplace=True))
            self.aspp = ASPP(12, [1, 2, 3])
            self.classifier = nn.Conv2d(8, classes, 1)

        def forward(self, x):
            size = x.shape[-2:]
            out = self.classifier(self.aspp(self.backbone(x)))
            return F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    rng = np.random.default_rng(14)
    images = rng.random((4, 3, 12, 12))
    masks = (images[:, 0] * 3).astype(np.int64).clip(0, 2)
    masks[:, :2, :] = 255  # an unlabeled border, ignored by the loss
    model = DeepLabish().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = tt.optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=0.9)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    losses, lrs = [], []
    for _ in range(steps):
        out = model(tt.from_numpy(images))
        loss = criterion(out, tt.from_numpy(masks))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
    model.eval()
    with tt.no_grad():
        pred = model(tt.from_numpy(images)).argmax(1)
    valid = tt.from_numpy(masks) != 255
    hist = tt.bincount(tt.from_numpy(masks)[valid] * 3 + pred[valid], minlength=9).reshape(3, 3)
    iou = hist.diag() / (hist.sum(0) + hist.sum(1) - hist.diag()).clamp(min=1)
    return {"losses": losses, "lrs": lrs, "iou": _np(iou), "params": _params(model)}


def test_aspp_segmentation_trains_the_same():
    _parity(aspp_segmentation)


def test_aspp_segmentation_runs_in_minidl():
    out = aspp_segmentation(minidl, steps=2)
    assert ((out["iou"] >= 0) & (out["iou"] <= 1)).all()


# ---- 15. M5 on synthetic speech commands: a wide strided Conv1d, BatchNorm1d, MaxPool1d, global
# average pooling by avg_pool1d, log_softmax + nll_loss, Adam with weight decay and StepLR --------
def m5_speech(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class M5(nn.Module):
        def __init__(self, n_input=1, n_output=4, stride=8, n_channel=8):
            super().__init__()
            self.conv1 = nn.Conv1d(n_input, n_channel, kernel_size=40, stride=stride)
            self.bn1 = nn.BatchNorm1d(n_channel)
            self.pool1 = nn.MaxPool1d(4)
            self.conv2 = nn.Conv1d(n_channel, n_channel, kernel_size=3)
            self.bn2 = nn.BatchNorm1d(n_channel)
            self.pool2 = nn.MaxPool1d(4)
            self.conv3 = nn.Conv1d(n_channel, 2 * n_channel, kernel_size=3)
            self.bn3 = nn.BatchNorm1d(2 * n_channel)
            self.pool3 = nn.MaxPool1d(2)
            self.fc1 = nn.Linear(2 * n_channel, n_output)

        def forward(self, x):
            x = self.pool1(F.relu(self.bn1(self.conv1(x))))
            x = self.pool2(F.relu(self.bn2(self.conv2(x))))
            x = self.pool3(F.relu(self.bn3(self.conv3(x))))
            x = F.avg_pool1d(x, x.shape[-1])
            x = x.permute(0, 2, 1)
            return F.log_softmax(self.fc1(x), dim=2)

    rng = np.random.default_rng(15)
    t = np.arange(1600) / 1600.0
    labels = np.arange(8) % 4
    waves = np.stack([np.sin(2 * np.pi * (60 + 40 * c) * t * (1 + 0.1 * rng.random()))
                      * np.hanning(1600) for c in labels])
    waves += 0.05 * rng.standard_normal(waves.shape)
    model = M5().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.0001)
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    losses = []
    model.train()
    for _ in range(steps):
        data = tt.from_numpy(waves).unsqueeze(1)
        output = model(data)
        loss = F.nll_loss(output.squeeze(), tt.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        pred = model(tt.from_numpy(waves).unsqueeze(1)).argmax(dim=-1).squeeze()
        correct = pred.eq(tt.from_numpy(labels)).sum().item()
    return {"losses": losses, "correct": repr(correct), "params": _params(model)}


def test_m5_speech_commands_trains_the_same():
    _parity(m5_speech)


def test_m5_speech_commands_runs_in_minidl():
    out = m5_speech(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and 0 <= int(out["correct"]) <= 8


# ---- 16. a Mamba-style selective scan: input-dependent delta, B and C, a causal depthwise Conv1d,
# the recurrence written in tensor ops (a loop over time, or its closed form by a log cumsum) ----
def mamba(tt, state=None, steps=3, scan="loop"):
    nn, F = tt.nn, tt.nn.functional

    def selective_scan(u, delta, A, B, C, D):
        b, l, d_in = u.shape
        deltaA = tt.exp(tt.einsum("bld,dn->bldn", delta, A))
        deltaB_u = tt.einsum("bld,bln,bld->bldn", delta, B, u)
        if scan == "loop":
            x = tt.zeros((b, d_in, A.shape[1]), dtype=u.dtype)
            ys = []
            for i in range(l):
                x = deltaA[:, i] * x + deltaB_u[:, i]
                ys.append(tt.einsum("bdn,bn->bd", x, C[:, i, :]))
            y = tt.stack(ys, dim=1)
        else:  # h_t = sum_{s<=t} exp(S_t - S_s) dB_s u_s, S the cumulative sum of delta A
            S = tt.cumsum(tt.einsum("bld,dn->bldn", delta, A), dim=1)
            diff = S[:, :, None] - S[:, None, :]  # (b, t, s, d, n)
            causal = tt.tril(tt.ones(l, l, dtype=tt.bool))[None, :, :, None, None]
            weights = tt.exp(diff.masked_fill(~causal, float("-inf")))
            h = (weights * deltaB_u[:, None]).sum(dim=2)
            y = tt.einsum("bldn,bln->bld", h, C)
        return y + u * D

    class MambaBlock(nn.Module):
        def __init__(self, d_model=8, d_state=4, expand=2, d_conv=3):
            super().__init__()
            self.d_inner, self.d_state = expand * d_model, d_state
            self.dt_rank = math.ceil(d_model / 16)
            self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
            self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                    padding=d_conv - 1)
            self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
            self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
            A = tt.arange(1, d_state + 1, dtype=tt.float64).repeat(self.d_inner, 1)
            self.A_log = nn.Parameter(tt.log(A))
            self.D = nn.Parameter(tt.ones(self.d_inner, dtype=tt.float64))
            self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        def forward(self, x):
            b, l, _ = x.shape
            x, res = self.in_proj(x).split([self.d_inner, self.d_inner], dim=-1)
            x = self.conv1d(x.transpose(1, 2))[:, :, :l].transpose(1, 2)
            x = F.silu(x)
            A = -tt.exp(self.A_log)
            delta, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
            delta = F.softplus(self.dt_proj(delta))
            return self.out_proj(selective_scan(x, delta, A, B, C, self.D) * F.silu(res))

    class MambaLM(nn.Module):
        def __init__(self, vocab=11, d_model=8, layers=2):
            super().__init__()
            self.embedding = nn.Embedding(vocab, d_model)
            self.layers = nn.ModuleList([MambaBlock(d_model) for _ in range(layers)])
            self.norms = nn.ModuleList([nn.RMSNorm(d_model, eps=1e-5) for _ in range(layers)])
            self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
            self.lm_head = nn.Linear(d_model, vocab, bias=False)
            self.lm_head.weight = self.embedding.weight

        def forward(self, ids):
            x = self.embedding(ids)
            for norm, layer in zip(self.norms, self.layers):
                x = x + layer(norm(x))
            return self.lm_head(self.norm_f(x))

    rng = np.random.default_rng(16)
    ids = (np.arange(4)[:, None] + np.arange(9)[None, :] * rng.integers(1, 3, (4, 1))) % 11
    model = MambaLM().double()
    _load(model, tt, state)
    opt = tt.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        logits = model(tt.from_numpy(ids[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                               tt.from_numpy(ids[:, 1:]).reshape(-1))
        opt.zero_grad()
        loss.backward()
        tt.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():  # greedy generation, the whole prefix each step
        seq = tt.from_numpy(ids[:1, :3])
        for _ in range(4):
            nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
            seq = tt.cat([seq, nxt], dim=1)
    return {"losses": losses, "generated": repr(seq.tolist()), "params": _params(model)}


def test_mamba_selective_scan_trains_the_same():
    _parity(mamba)


def test_mamba_with_the_closed_form_scan_trains_the_same():
    _parity(mamba, scan="closed")


def test_mamba_scans_agree_in_minidl():
    start = mamba(minidl, steps=0)["params"]
    a, b = mamba(minidl, state=start, scan="loop"), mamba(minidl, state=start, scan="closed")
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-10)


# ---- 17. Perceiver: a latent array cross-attending to Fourier-encoded inputs (kdim/vdim, a key
# padding mask), latent self-attention repeated with shared weights ----------------------------
def perceiver(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def fourier_encode(pos, max_freq=4.0, num_bands=3):
        freqs = tt.linspace(1.0, max_freq / 2, num_bands, dtype=pos.dtype)
        scaled = pos[..., None] * freqs * math.pi
        enc = tt.cat([scaled.sin(), scaled.cos()], dim=-1).flatten(-2)
        return tt.cat([pos, enc], dim=-1)

    class Perceiver(nn.Module):
        def __init__(self, input_dim=1 + 2 + 12, latent_dim=16, num_latents=4, classes=3):
            super().__init__()
            self.latents = nn.Parameter(tt.randn(num_latents, latent_dim, dtype=tt.float64) * 0.2)
            self.input_norm = nn.LayerNorm(input_dim)
            self.latent_norm = nn.LayerNorm(latent_dim)
            self.cross_attn = nn.MultiheadAttention(latent_dim, 1, kdim=input_dim,
                                                    vdim=input_dim, batch_first=True)
            self.cross_ff = nn.Sequential(nn.LayerNorm(latent_dim),
                                          nn.Linear(latent_dim, 2 * latent_dim), nn.GELU(),
                                          nn.Linear(2 * latent_dim, latent_dim))
            self.latent_block = nn.TransformerEncoderLayer(
                latent_dim, 2, 2 * latent_dim, dropout=0.0, activation="gelu",
                batch_first=True, norm_first=True)
            self.head = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, classes))

        def forward(self, values, pos, pad_mask, depth=2):
            data = tt.cat([values[..., None], fourier_encode(pos)], dim=-1)
            kv = self.input_norm(data)
            lat = self.latents.expand(values.shape[0], -1, -1)
            attended, weights = self.cross_attn(self.latent_norm(lat), kv, kv,
                                                key_padding_mask=pad_mask)
            lat = lat + attended
            lat = lat + self.cross_ff(lat)
            for _ in range(depth):
                lat = self.latent_block(lat)
            return self.head(lat.mean(dim=1)), weights

    rng = np.random.default_rng(17)
    B, M = 6, 10
    pos = rng.uniform(-1, 1, (B, M, 2))
    labels = np.arange(B) % 3
    values = np.sin((labels[:, None, None] + 1) * pos * 2).sum(-1)
    lengths = rng.integers(5, M + 1, B)
    pad = np.arange(M)[None, :] >= lengths[:, None]
    model = Perceiver().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        logits, weights = model(tt.from_numpy(values), tt.from_numpy(pos), tt.from_numpy(pad))
        loss = F.cross_entropy(logits, tt.from_numpy(labels), label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        logits, weights = model(tt.from_numpy(values), tt.from_numpy(pos), tt.from_numpy(pad))
    return {"losses": losses, "weights": _np(weights).reshape(-1), "logits": _np(logits),
            "params": _params(model)}


def test_perceiver_trains_the_same():
    out = _parity(perceiver)
    w = out["weights"].reshape(6, 4, 10)
    np.testing.assert_allclose(w.sum(-1), 1.0)


def test_perceiver_runs_in_minidl():
    out = perceiver(minidl, steps=2)
    assert np.isfinite(out["logits"]).all()


# ---- 18. TabTransformer: categorical columns embedded with offsets, a Transformer over them,
# the normalised continuous columns concatenated, BCEWithLogits with pos_weight -----------------
def tab_transformer(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class TabTransformer(nn.Module):
        def __init__(self, categories=(3, 5, 4), num_continuous=3, dim=8, depth=2, heads=2):
            super().__init__()
            offsets = F.pad(tt.tensor(list(categories)), (1, 0), value=0).cumsum(dim=-1)[:-1]
            self.register_buffer("categories_offset", offsets)
            self.embeds = nn.Embedding(sum(categories), dim)
            layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0,
                                               activation="gelu", batch_first=True)
            self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(num_continuous)
            self.mlp = nn.Sequential(nn.Linear(len(categories) * dim + num_continuous, 16),
                                     nn.ReLU(), nn.Linear(16, 1))

        def forward(self, x_categ, x_cont):
            x = self.transformer(self.embeds(x_categ + self.categories_offset))
            return self.mlp(tt.cat([x.flatten(1), self.norm(x_cont)], dim=-1)).squeeze(-1)

    rng = np.random.default_rng(18)
    n = 24
    categ = np.stack([rng.integers(0, k, n) for k in (3, 5, 4)], axis=1)
    cont = rng.standard_normal((n, 3)) * np.array([1.0, 10.0, 0.1])
    y = ((categ[:, 0] == 1) ^ (cont[:, 0] > 0.5)).astype(np.float64)
    model = TabTransformer().double()
    _load(model, tt, state)
    criterion = nn.BCEWithLogitsLoss(pos_weight=tt.tensor([2.0], dtype=tt.float64))
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * 2, eta_min=1e-4)
    loader = tt.utils.data.DataLoader(tt.utils.data.TensorDataset(
        tt.from_numpy(categ), tt.from_numpy(cont), tt.from_numpy(y)), batch_size=12)
    losses = []
    for _ in range(steps):
        for xc, xn, yb in loader:
            loss = criterion(model(xc, xn), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
    model.eval()
    with tt.no_grad():
        probs = tt.sigmoid(model(tt.from_numpy(categ), tt.from_numpy(cont)))
    return {"losses": losses, "probs": _np(probs), "params": _params(model)}


def test_tab_transformer_trains_the_same():
    _parity(tab_transformer)


def test_tab_transformer_runs_in_minidl():
    out = tab_transformer(minidl, steps=2)
    assert ((out["probs"] > 0) & (out["probs"] < 1)).all()


# ---- 19. Pix2Pix: a U-Net generator (skips by cat), a PatchGAN on (input, output) pairs, the
# adversarial loss plus 100 * L1, weights_init_normal by model.apply ------------------------------
def pix2pix(tt, state=None, steps=2, gan_loss="mse"):
    nn = tt.nn

    class UNetDown(nn.Module):
        def __init__(self, cin, cout, normalize=True):
            super().__init__()
            layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
            if normalize:
                layers.append(nn.InstanceNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            self.model = nn.Sequential(*layers)

        def forward(self, x):
            return self.model(x)

    class UNetUp(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.model = nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                                       nn.InstanceNorm2d(cout), nn.ReLU(inplace=True),
                                       nn.Dropout(0.0))

        def forward(self, x, skip):
            return tt.cat((self.model(x), skip), 1)

    class GeneratorUNet(nn.Module):
        def __init__(self, cin=3, cout=3):
            super().__init__()
            self.down1 = UNetDown(cin, 8, normalize=False)
            self.down2 = UNetDown(8, 16)
            self.down3 = UNetDown(16, 16, normalize=False)
            self.up1 = UNetUp(16, 16)
            self.up2 = UNetUp(32, 8)
            self.final = nn.Sequential(nn.Upsample(scale_factor=2), nn.ZeroPad2d((1, 0, 1, 0)),
                                       nn.Conv2d(16, cout, 4, padding=1), nn.Tanh())

        def forward(self, x):
            d1 = self.down1(x)
            d2 = self.down2(d1)
            d3 = self.down3(d2)
            return self.final(self.up2(self.up1(d3, d2), d1))

    class Discriminator(nn.Module):
        def __init__(self, cin=3):
            super().__init__()

            def block(i, o, normalization=True):
                layers = [nn.Conv2d(i, o, 4, stride=2, padding=1)]
                if normalization:
                    layers.append(nn.BatchNorm2d(o))
                layers.append(nn.LeakyReLU(0.2, inplace=True))
                return layers

            self.model = nn.Sequential(*block(cin * 2, 8, normalization=False), *block(8, 16),
                                       nn.ZeroPad2d((1, 0, 1, 0)),
                                       nn.Conv2d(16, 1, 4, padding=1, bias=False))

        def forward(self, img_A, img_B):
            return self.model(tt.cat((img_A, img_B), 1))

    def weights_init_normal(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif classname.find("BatchNorm2d") != -1:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.constant_(m.bias, 0.0)

    rng = np.random.default_rng(19)
    real_A = np.tanh(rng.standard_normal((4, 3, 16, 16)))
    real_B = np.flip(real_A, axis=-1).copy() * 0.5
    generator, discriminator = GeneratorUNet().double(), Discriminator().double()
    generator.apply(weights_init_normal)
    discriminator.apply(weights_init_normal)
    _load(generator, tt, state, "G.")
    _load(discriminator, tt, state, "D.")
    criterion_GAN = nn.MSELoss() if gan_loss == "mse" else nn.BCEWithLogitsLoss()
    criterion_pixelwise = nn.L1Loss()
    lambda_pixel = 100
    optimizer_G = tt.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_D = tt.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = []
    for i in range(steps):
        A, B = tt.from_numpy(real_A[2 * (i % 2):2 * (i % 2) + 2]), \
            tt.from_numpy(real_B[2 * (i % 2):2 * (i % 2) + 2])
        valid = tt.ones((A.size(0), 1, 4, 4), dtype=tt.float64, requires_grad=False)
        fake = tt.zeros((A.size(0), 1, 4, 4), dtype=tt.float64, requires_grad=False)
        optimizer_G.zero_grad()
        fake_B = generator(A)
        loss_GAN = criterion_GAN(discriminator(fake_B, A), valid)
        loss_pixel = criterion_pixelwise(fake_B, B)
        loss_G = loss_GAN + lambda_pixel * loss_pixel
        loss_G.backward()
        optimizer_G.step()
        optimizer_D.zero_grad()
        loss_real = criterion_GAN(discriminator(B, A), valid)
        loss_fake = criterion_GAN(discriminator(fake_B.detach(), A), fake)
        loss_D = 0.5 * (loss_real + loss_fake)
        loss_D.backward()
        optimizer_D.step()
        losses += [loss_G.item(), loss_pixel.item(), loss_D.item()]
    generator.eval()
    with tt.no_grad():
        sample = generator(tt.from_numpy(real_A[:1]))
    return {"losses": losses, "sample": _np(sample).reshape(-1),
            "params": {**_params(generator, "G."), **_params(discriminator, "D.")}}


def test_pix2pix_trains_the_same():
    _parity(pix2pix)


def test_pix2pix_with_bce_trains_the_same():
    _parity(pix2pix, gan_loss="bce", steps=1)


def test_pix2pix_runs_in_minidl():
    out = pix2pix(minidl, steps=1)
    assert np.abs(out["sample"]).max() <= 1.0


# ---- 20. the performance recipes: channels_last training, the profiler with record_function,
# utils.benchmark.Timer, bfloat16 autocast on the CPU ------------------------------------------
def perf_recipes(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    benchmark = importlib.import_module(tt.__name__ + ".utils.benchmark")  # import ....benchmark
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4)).double()
    _load(model, tt, state)
    model = model.to(memory_format=tt.channels_last)
    rng = np.random.default_rng(20)
    images, labels = rng.random((6, 3, 8, 8)), rng.integers(0, 4, 6)
    x = tt.from_numpy(images).to(memory_format=tt.channels_last)
    # (the weights' own layout is not compared: minidl keeps them row-major by design)
    facts = [x.is_contiguous(), x.is_contiguous(memory_format=tt.channels_last), x.stride(),
             x.contiguous().stride()]
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), tt.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    activities = [tt.profiler.ProfilerActivity.CPU]
    with tt.profiler.profile(activities=activities, record_shapes=True) as prof:
        with tt.profiler.record_function("model_inference"):
            with tt.no_grad():
                out = model(x)
    averages = prof.key_averages()
    table = averages.table(sort_by="cpu_time_total", row_limit=5)
    facts += ["model_inference" in table,
              [e.count for e in averages if e.key == "model_inference"]]
    timer = benchmark.Timer(stmt="model(x)", setup="", globals={"model": model, "x": x},
                                     label="inference", description="channels_last")
    measurement = timer.timeit(2)
    facts += [isinstance(measurement, benchmark.Measurement), measurement.mean > 0,
              measurement.number_per_run, len(measurement.times), measurement.label,
              measurement.description, measurement.sub_label, measurement.as_row_name]
    model32 = copy.deepcopy(model).float()
    with tt.autocast(device_type="cpu", dtype=tt.bfloat16):
        h = model32[0](x.float())
        y = model32(x.float())
        p = F.softmax(y, dim=-1)
        z = model(x)  # float64 is left alone by autocast
    facts += [str(t.dtype).replace("torch.", "") for t in (h, y, p, z)]
    facts.append(bool(np.allclose(_np(y.float()), _np(model32(x.float())), atol=0.05)))
    return {"losses": losses, "out": _np(out), "facts": repr(facts), "params": _params(model)}


def test_performance_recipes_run_the_same():
    _parity(perf_recipes)


def test_performance_recipes_run_in_minidl():
    out = perf_recipes(minidl, steps=2)
    assert np.isfinite(out["out"]).all() and "True" in out["facts"]



# ---- 21. the fused Conv-BatchNorm custom Function tutorial: forward conv + batch norm in one
# op, backward by nn.grad.conv2d_input/conv2d_weight and batch norm's formula, the conv output
# recomputed in backward; then fuse_conv_bn_eval for inference ---------------------------------
def fused_conv_bn(tt, state=None, steps=3, fused=True):
    nn, F = tt.nn, tt.nn.functional

    def unsqueeze_all(t):
        return t[None, :, None, None]

    def batch_norm_backward(grad_out, X, mean, inv_std):
        N = X.numel() / X.size(1)
        xhat = (X - unsqueeze_all(mean)) * unsqueeze_all(inv_std)
        sum_g = grad_out.sum(dim=(0, 2, 3))
        sum_gx = (grad_out * xhat).sum(dim=(0, 2, 3))
        return unsqueeze_all(inv_std / N) * (N * grad_out - unsqueeze_all(sum_g)
                                              - xhat * unsqueeze_all(sum_gx))

    class FusedConvBN2DFunction(tt.autograd.Function):
        @staticmethod
        def forward(ctx, X, conv_weight, eps=1e-3):
            assert X.ndim == 4
            ctx.save_for_backward(X, conv_weight)  # the conv output is not kept: recomputed
            X = F.conv2d(X, conv_weight)
            mean = X.mean(dim=(0, 2, 3))
            var = X.var(dim=(0, 2, 3), unbiased=False)
            inv_std = 1.0 / tt.sqrt(var + eps)
            ctx.stats = (mean, inv_std)
            return (X - unsqueeze_all(mean)) * unsqueeze_all(inv_std)

        @staticmethod
        def backward(ctx, grad_out):
            X, conv_weight = ctx.saved_tensors
            mean, inv_std = ctx.stats
            conv_out = F.conv2d(X, conv_weight)
            grad_conv = batch_norm_backward(grad_out, conv_out, mean, inv_std)
            grad_X = tt.nn.grad.conv2d_input(X.shape, conv_weight, grad_conv)
            grad_w = tt.nn.grad.conv2d_weight(X, conv_weight.shape, grad_conv)
            return grad_X, grad_w, None

    class FusedConvBN(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, eps=1e-3):
            super().__init__()
            self.conv_weight = nn.Parameter(tt.empty(out_channels, in_channels, kernel_size,
                                                     kernel_size, dtype=tt.float64))
            nn.init.kaiming_uniform_(self.conv_weight, a=math.sqrt(5))
            self.eps = eps

        def forward(self, X):
            if fused:
                return FusedConvBN2DFunction.apply(X, self.conv_weight, self.eps)
            return F.batch_norm(F.conv2d(X, self.conv_weight), None, None, training=True,
                                eps=self.eps)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convbn1 = FusedConvBN(1, 4, 3)
            self.convbn2 = FusedConvBN(4, 6, 3)
            self.fc = nn.Linear(6 * 2 * 2, 3)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.convbn1(x)), 2)
            x = F.relu(self.convbn2(x))
            return F.log_softmax(self.fc(tt.flatten(x, 1)), dim=1)

    rng = np.random.default_rng(21)
    images, labels = rng.random((8, 1, 10, 10)), rng.integers(0, 3, 8)
    X = tt.from_numpy(rng.standard_normal((2, 1, 4, 4))).requires_grad_()
    W = tt.from_numpy(rng.standard_normal((2, 1, 3, 3))).requires_grad_()
    checked = tt.autograd.gradcheck(FusedConvBN2DFunction.apply, (X, W), fast_mode=True)
    model = Net().double()
    _load(model, tt, state)
    opt = tt.optim.Adadelta(model.parameters(), lr=1.0)
    losses = []
    for _ in range(steps):
        loss = F.nll_loss(model(tt.from_numpy(images)), tt.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # inference: a conv and an eval-mode BatchNorm folded into one conv
    conv, bn = nn.Conv2d(1, 4, 3).double(), nn.BatchNorm2d(4).double()
    with tt.no_grad():
        conv.weight.copy_(model.convbn1.conv_weight)
        conv.bias.zero_()
        bn.running_mean.copy_(tt.from_numpy(rng.standard_normal(4) * 0.1))
        bn.running_var.copy_(tt.from_numpy(rng.random(4) + 0.5))
        bn.weight.copy_(tt.from_numpy(rng.random(4) + 0.5))
    conv.eval()
    bn.eval()
    folded = tt.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
    with tt.no_grad():
        x = tt.from_numpy(images[:2])
        gap = (folded(x) - bn(conv(x))).abs().max().item()
    return {"losses": losses, "checked": repr(checked), "gap": gap,
            "folded": _np(folded.weight).reshape(-1), "params": _params(model)}


def test_fused_conv_bn_function_trains_the_same():
    out = _parity(fused_conv_bn)
    assert out["checked"] == "True" and out["gap"] < 1e-12


def test_fused_conv_bn_function_is_the_unfused_model():
    start = fused_conv_bn(minidl, steps=0)["params"]
    a, b = fused_conv_bn(minidl, state=start), fused_conv_bn(minidl, state=start, fused=False)
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-10)
    for k in a["params"]:
        np.testing.assert_allclose(a["params"][k], b["params"][k], rtol=1e-8, atol=1e-12)


# ---- 22. the optimizer-step-in-backward recipe: an optimizer per parameter, stepped by
# register_post_accumulate_grad_hook as each gradient lands, the same as the usual loop ------
def optimizer_in_backward(tt, state=None, steps=3, in_backward=True):
    nn, F = tt.nn, tt.nn.functional
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(22)
    X, y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    order = []
    if in_backward:
        optimizer_dict = {p: tt.optim.AdamW([p], lr=1e-2, weight_decay=0.05)
                          for p in model.parameters()}
        names = {p: n for n, p in model.named_parameters()}

        def optimizer_hook(parameter):
            order.append(names[parameter])
            optimizer_dict[parameter].step()
            optimizer_dict[parameter].zero_grad()

        handles = [p.register_post_accumulate_grad_hook(optimizer_hook)
                   for p in model.parameters()]
    else:
        opt = tt.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(tt.from_numpy(X)), tt.from_numpy(y))
        loss.backward()
        if not in_backward:
            opt.step()
            opt.zero_grad()
        losses.append(loss.item())
    if in_backward:
        for h in handles:
            h.remove()
        grads = [p.grad is None for p in model.parameters()]
    else:
        grads = [p.grad is None for p in model.parameters()]
    layers = [name.split(".")[0] for name in order[:len(order) // max(steps, 1)]]
    return {"losses": losses, "layers": repr(layers),  # the last layer's step first
            "grads": repr(grads), "params": _params(model)}


def test_optimizer_in_backward_trains_the_same():
    out = _parity(optimizer_in_backward)
    assert out["grads"] == repr([True] * 6)
    assert out["layers"] == repr(["3", "3", "2", "2", "0", "0"])


def test_optimizer_in_backward_is_the_usual_loop():
    start = optimizer_in_backward(minidl, steps=0)["params"]
    a = optimizer_in_backward(minidl, state=start)
    b = optimizer_in_backward(minidl, state=start, in_backward=False)
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-12)
    for k in a["params"]:
        np.testing.assert_allclose(a["params"][k], b["params"][k], rtol=1e-12, atol=1e-15)



# ---- 23. a Fourier neural operator (1-D): rfft, complex weights on the lowest modes by einsum,
# irfft back, a pointwise Conv1d path; Adam on complex parameters --------------------------------
def fourier_neural_operator(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class SpectralConv1d(nn.Module):
        def __init__(self, in_channels, out_channels, modes):
            super().__init__()
            self.modes = modes
            scale = 1 / (in_channels * out_channels)
            self.weights = nn.Parameter(scale * tt.rand(in_channels, out_channels, modes,
                                                        dtype=tt.cdouble))

        def forward(self, x):
            x_ft = tt.fft.rfft(x)
            out_ft = tt.zeros(x.size(0), self.weights.size(1), x.size(-1) // 2 + 1,
                              dtype=tt.cdouble)
            out_ft[:, :, :self.modes] = tt.einsum("bix,iox->box", x_ft[:, :, :self.modes],
                                                  self.weights)
            return tt.fft.irfft(out_ft, n=x.size(-1))

    class FNO1d(nn.Module):
        def __init__(self, modes=4, width=6):
            super().__init__()
            self.fc0 = nn.Linear(2, width)
            self.convs = nn.ModuleList([SpectralConv1d(width, width, modes) for _ in range(2)])
            self.ws = nn.ModuleList([nn.Conv1d(width, width, 1) for _ in range(2)])
            self.fc1 = nn.Linear(width, 16)
            self.fc2 = nn.Linear(16, 1)

        def forward(self, x):
            grid = tt.linspace(0, 1, x.shape[1], dtype=x.dtype).reshape(1, -1, 1)
            x = self.fc0(tt.cat((x, grid.repeat(x.shape[0], 1, 1)), dim=-1)).permute(0, 2, 1)
            for k, (conv, w) in enumerate(zip(self.convs, self.ws)):
                x = conv(x) + w(x)
                if k < len(self.convs) - 1:
                    x = F.gelu(x)
            return self.fc2(F.gelu(self.fc1(x.permute(0, 2, 1))))

    rng = np.random.default_rng(23)
    n, s = 6, 16
    xs = np.linspace(0, 1, s)
    coeffs = rng.standard_normal((n, 3))
    a = sum(coeffs[:, k:k + 1] * np.sin((k + 1) * np.pi * xs) for k in range(3))
    u = sum(coeffs[:, k:k + 1] / (k + 1) ** 2 * np.sin((k + 1) * np.pi * xs) for k in range(3))
    model = FNO1d().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    losses = []
    for _ in range(steps):
        pred = model(tt.from_numpy(a[..., None])).squeeze(-1)
        target = tt.from_numpy(u)
        loss = (tt.linalg.vector_norm(pred - target, dim=1)
                / tt.linalg.vector_norm(target, dim=1)).mean()  # the relative L2 loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_fourier_neural_operator_trains_the_same():
    out = _parity(fourier_neural_operator)
    assert out["params"]["convs.0.weights"].dtype == np.complex128


def test_fourier_neural_operator_runs_in_minidl():
    out = fourier_neural_operator(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 24. gradual unfreezing with discriminative learning rates: layers thawed one by one by
# requires_grad_ and add_param_group, each group its own lr and betas ---------------------------
def gradual_unfreezing(tt, state=None, steps=6):
    nn, F = tt.nn, tt.nn.functional
    model = nn.Sequential(nn.Embedding(10, 6), nn.Flatten(), nn.Linear(18, 12), nn.ReLU(),
                          nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 2)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(24)
    ids, y = rng.integers(0, 10, (12, 3)), rng.integers(0, 2, 12)
    for p in model.parameters():
        p.requires_grad_(False)
    model[6].requires_grad_(True)
    opt = tt.optim.Adam(model[6].parameters(), lr=1e-2)
    thaw = {2: (model[4], 5e-3, (0.9, 0.999)), 4: (model[2], 2e-3, (0.85, 0.99)),
            5: (model[0], 1e-3, (0.8, 0.99))}
    losses, lrs = [], []
    for step in range(steps):
        if step in thaw:
            layer, lr, betas = thaw[step]
            layer.requires_grad_(True)
            opt.add_param_group({"params": list(layer.parameters()), "lr": lr, "betas": betas})
        loss = F.cross_entropy(model(tt.from_numpy(ids)), tt.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # each group's lr decays on its own
            group["lr"] *= 0.9
        losses.append(loss.item())
        lrs.append([g["lr"] for g in opt.param_groups])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    groups = [len(g["params"]) for g in opt.state_dict()["param_groups"]]
    return {"losses": losses, "lrs": [x for row in lrs for x in row],
            "facts": repr((trainable, groups)), "params": _params(model)}


def test_gradual_unfreezing_trains_the_same():
    out = _parity(gradual_unfreezing)
    assert out["facts"] == repr((["0.weight", "2.weight", "2.bias", "4.weight", "4.bias",
                                  "6.weight", "6.bias"], [2, 2, 2, 1]))


def test_gradual_unfreezing_runs_in_minidl():
    start = gradual_unfreezing(minidl, steps=0)["params"]
    out = gradual_unfreezing(minidl, state=start, steps=3)
    np.testing.assert_array_equal(out["params"]["0.weight"], start["0.weight"])  # still frozen



# ---- 25. word2vec: skip-gram with negative sampling, sparse embedding gradients, SparseAdam ----
def word2vec(tt, state=None, steps=4, sparse=True):
    nn, F = tt.nn, tt.nn.functional

    class SkipGram(nn.Module):
        def __init__(self, vocab=20, dim=6):
            super().__init__()
            self.in_embed = nn.Embedding(vocab, dim, sparse=sparse)
            self.out_embed = nn.Embedding(vocab, dim, sparse=sparse)
            init_range = 0.5 / dim
            nn.init.uniform_(self.in_embed.weight, -init_range, init_range)
            nn.init.constant_(self.out_embed.weight, 0)

        def forward(self, center, context, negatives):
            v = self.in_embed(center)  # (B, D)
            u = self.out_embed(context)  # (B, D)
            n = self.out_embed(negatives)  # (B, K, D)
            pos = F.logsigmoid((v * u).sum(dim=-1))
            neg = F.logsigmoid(-tt.bmm(n, v.unsqueeze(2)).squeeze(2)).sum(dim=1)
            return -(pos + neg).mean()

    rng = np.random.default_rng(25)
    corpus = np.concatenate([np.arange(k, k + 5) % 20 for k in range(0, 40, 3)])
    pairs = [(corpus[i], corpus[j]) for i in range(len(corpus))
             for j in range(max(0, i - 2), min(len(corpus), i + 3)) if i != j]
    counts = np.bincount(corpus, minlength=20) ** 0.75
    noise = counts / counts.sum()
    model = SkipGram().double()
    _load(model, tt, state)
    opt = (tt.optim.SparseAdam(list(model.parameters()), lr=0.05) if sparse
           else tt.optim.Adam(model.parameters(), lr=0.05))
    losses = []
    for step in range(steps):
        batch = [pairs[k] for k in rng.choice(len(pairs), 16, replace=False)]
        center = tt.tensor([c for c, _ in batch])
        context = tt.tensor([o for _, o in batch])
        negatives = tt.from_numpy(rng.choice(20, (16, 3), p=noise))
        loss = model(center, context, negatives)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            layout = repr((model.in_embed.weight.grad.is_sparse,
                           tuple(model.in_embed.weight.grad.shape)))
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        emb = F.normalize(model.in_embed.weight, dim=1)
        nearest = (emb @ emb.T).fill_diagonal_(-2).argmax(dim=1)
    return {"losses": losses, "layout": layout if steps else "", "nearest": repr(nearest.tolist()),
            "params": _params(model)}


def test_word2vec_with_sparse_adam_trains_the_same():
    out = _parity(word2vec)
    assert out["layout"] == repr((True, (20, 6)))


def test_word2vec_sparse_and_dense_agree_in_minidl():
    start = word2vec(minidl, steps=0)["params"]
    a, b = word2vec(minidl, state=start), word2vec(minidl, state=start, sparse=False)
    np.testing.assert_allclose(a["losses"][:1], b["losses"][:1], rtol=1e-12)  # then lazy Adam
    assert np.isfinite(a["losses"]).all()


# ---- 26. an energy-based model sampled by Langevin dynamics: input gradients by autograd.grad in
# a loop, a replay buffer, the contrastive loss with an energy regulariser ----------------------
def langevin_ebm(tt, state=None, steps=3, sgld_steps=5):
    nn = tt.nn

    class Energy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 16), nn.SiLU(),
                                     nn.Linear(16, 1))

        def forward(self, x):
            return self.net(x).squeeze(-1)

    def sample_langevin(model, x, noises, step_size=0.1):
        was_training = model.training
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x = x.clone().detach().requires_grad_(True)
        for k in range(len(noises)):
            energy = model(x).sum()
            (grad_x,) = tt.autograd.grad(energy, x)
            with tt.no_grad():
                x.add_(-step_size * grad_x + math.sqrt(2 * step_size) * 0.1 * noises[k])
                x.clamp_(-3.0, 3.0)
        for p in model.parameters():
            p.requires_grad_(True)
        model.train(was_training)
        return x.detach()

    rng = np.random.default_rng(26)
    angles = rng.uniform(0, 2 * np.pi, 64)
    data = np.stack([np.cos(angles), np.sin(angles)], 1) * 1.5 + 0.05 * rng.standard_normal((64, 2))
    buffer = rng.uniform(-2, 2, (32, 2))
    model = Energy().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.999))
    losses = []
    for step in range(steps):
        real = tt.from_numpy(data[16 * (step % 4):16 * (step % 4) + 16])
        idx = rng.choice(32, 16, replace=False)
        fresh = rng.random(16) < 0.05
        start = np.where(fresh[:, None], rng.uniform(-2, 2, (16, 2)), buffer[idx])
        fake = sample_langevin(model, tt.from_numpy(start),
                               tt.from_numpy(rng.standard_normal((sgld_steps, 16, 2))))
        buffer[idx] = fake.numpy()
        e_real, e_fake = model(real), model(fake)
        loss = e_real.mean() - e_fake.mean() + 0.1 * (e_real ** 2 + e_fake ** 2).mean()
        opt.zero_grad()
        loss.backward()
        tt.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "buffer": buffer.reshape(-1), "params": _params(model)}


def test_langevin_ebm_trains_the_same():
    _parity(langevin_ebm)


def test_langevin_ebm_runs_in_minidl():
    out = langevin_ebm(minidl, steps=2)
    assert np.abs(out["buffer"]).max() <= 3.0 and np.isfinite(out["losses"]).all()



# ---- 27. a Swin block: window partition, a relative position bias table indexed by a buffer,
# a cyclic shift by roll with its attention mask, window reverse, patch merging ------------------
def swin(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def window_partition(x, ws):
        B, H, W, C = x.shape
        x = x.view(B, H // ws, ws, W // ws, ws, C)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)

    def window_reverse(windows, ws, H, W):
        B = int(windows.shape[0] / (H * W / ws / ws))
        x = windows.view(B, H // ws, W // ws, ws, ws, -1)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)

    class WindowAttention(nn.Module):
        def __init__(self, dim, ws, heads):
            super().__init__()
            self.ws, self.heads = ws, heads
            self.scale = (dim // heads) ** -0.5
            self.relative_position_bias_table = nn.Parameter(
                tt.zeros((2 * ws - 1) * (2 * ws - 1), heads))
            coords = tt.stack(tt.meshgrid(tt.arange(ws), tt.arange(ws), indexing="ij"))
            flat = tt.flatten(coords, 1)
            rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
            rel[:, :, 0] += ws - 1
            rel[:, :, 1] += ws - 1
            rel[:, :, 0] *= 2 * ws - 1
            self.register_buffer("relative_position_index", rel.sum(-1))
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

        def forward(self, x, mask=None):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q * self.scale) @ k.transpose(-2, -1)
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
                N, N, -1).permute(2, 0, 1).contiguous()
            attn = attn + bias.unsqueeze(0)
            if mask is not None:
                nW = mask.shape[0]
                attn = attn.view(B_ // nW, nW, self.heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.heads, N, N)
            attn = attn.softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(B_, N, C))

    class SwinBlock(nn.Module):
        def __init__(self, dim, res, heads, ws, shift):
            super().__init__()
            self.res, self.ws, self.shift = res, ws, shift
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, ws, heads)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            if shift > 0:
                H, W = res
                img_mask = tt.zeros((1, H, W, 1))
                cnt = 0
                for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                    for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                        img_mask[:, h, w, :] = cnt
                        cnt += 1
                mw = window_partition(img_mask, ws).view(-1, ws * ws)
                attn_mask = mw.unsqueeze(1) - mw.unsqueeze(2)
                attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(
                    attn_mask == 0, float(0.0))
            else:
                attn_mask = None
            self.register_buffer("attn_mask", attn_mask)

        def forward(self, x):
            H, W = self.res
            B, L, C = x.shape
            shortcut = x
            x = self.norm1(x).view(B, H, W, C)
            if self.shift > 0:
                x = tt.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            windows = window_partition(x, self.ws).view(-1, self.ws * self.ws, C)
            windows = self.attn(windows, mask=self.attn_mask).view(-1, self.ws, self.ws, C)
            x = window_reverse(windows, self.ws, H, W)
            if self.shift > 0:
                x = tt.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
            x = shortcut + x.view(B, H * W, C)
            return x + self.mlp(self.norm2(x))

    class PatchMerging(nn.Module):
        def __init__(self, res, dim):
            super().__init__()
            self.res = res
            self.norm = nn.LayerNorm(4 * dim)
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

        def forward(self, x):
            H, W = self.res
            B, L, C = x.shape
            x = x.view(B, H, W, C)
            x = tt.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
            return self.reduction(self.norm(x.view(B, -1, 4 * C)))

    class TinySwin(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, 8, 2, stride=2)
            self.blocks = nn.Sequential(SwinBlock(8, (4, 4), 2, 2, 0), SwinBlock(8, (4, 4), 2, 2, 1))
            self.merge = PatchMerging((4, 4), 8)
            self.norm = nn.LayerNorm(16)
            self.head = nn.Linear(16, classes)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            x = self.norm(self.merge(self.blocks(x)))
            return self.head(x.mean(dim=1))

    rng = np.random.default_rng(27)
    images, labels = rng.random((6, 3, 8, 8)), rng.integers(0, 3, 6)
    model = TinySwin().double()
    _load(model, tt, state)
    opt = tt.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(tt.from_numpy(images)), tt.from_numpy(labels),
                               label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_swin_trains_the_same():
    out = _parity(swin)
    assert out["params"]["blocks.1.attn_mask"].min() == -100.0


def test_swin_runs_in_minidl():
    out = swin(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 28. ConvNeXt V2 blocks: a 7x7 depthwise conv, LayerNorm over channels by permute, global
# response normalisation, layer scale, stochastic depth off in eval; a channels-first LayerNorm --
def convnext_v2(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class LayerNorm2d(nn.Module):  # LayerNorm over the channels of NCHW, by hand
        def __init__(self, c, eps=1e-6):
            super().__init__()
            self.weight, self.bias = nn.Parameter(tt.ones(c)), nn.Parameter(tt.zeros(c))
            self.eps = eps

        def forward(self, x):
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            x = (x - u) / tt.sqrt(s + self.eps)
            return self.weight[:, None, None] * x + self.bias[:, None, None]

    class GRN(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.gamma = nn.Parameter(tt.zeros(1, 1, 1, dim))
            self.beta = nn.Parameter(tt.zeros(1, 1, 1, dim))

        def forward(self, x):
            Gx = tt.norm(x, p=2, dim=(1, 2), keepdim=True)
            Nx = Gx / (Gx.mean(dim=-1, keepdim=True) + 1e-6)
            return self.gamma * (x * Nx) + self.beta + x

    class DropPath(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x, keep=None):
            if self.p == 0.0 or not self.training:
                return x
            return x.div(1 - self.p) * keep

    class Block(nn.Module):
        def __init__(self, dim, drop_path=0.0):
            super().__init__()
            self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pwconv1 = nn.Linear(dim, 4 * dim)
            self.act = nn.GELU()
            self.grn = GRN(4 * dim)
            self.pwconv2 = nn.Linear(4 * dim, dim)
            self.drop_path = DropPath(drop_path)

        def forward(self, x):
            shortcut = x
            x = self.dwconv(x).permute(0, 2, 3, 1)  # (N, H, W, C)
            x = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(x)))))
            return shortcut + self.drop_path(x.permute(0, 3, 1, 2))

    class ConvNeXt(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), LayerNorm2d(8))
            self.stage1 = nn.Sequential(Block(8), Block(8))
            self.down = nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 12, 2, stride=2))
            self.stage2 = Block(12)
            self.norm = nn.LayerNorm(12, eps=1e-6)
            self.head = nn.Linear(12, classes)
            self.apply(self._init_weights)
            with tt.no_grad():
                self.head.weight.mul_(0.5)

        def _init_weights(self, m):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.stage2(self.down(self.stage1(self.stem(x))))
            return self.head(self.norm(x.mean([-2, -1])))

    rng = np.random.default_rng(28)
    images, labels = rng.random((4, 3, 8, 8)), rng.integers(0, 3, 4)
    model = ConvNeXt().double()
    _load(model, tt, state)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = tt.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                          {"params": no_decay, "weight_decay": 0.0}], lr=4e-3)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(tt.from_numpy(images)), tt.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        logits = model(tt.from_numpy(images))
    return {"losses": losses, "logits": _np(logits), "params": _params(model)}


def test_convnext_v2_trains_the_same():
    _parity(convnext_v2)


def test_convnext_v2_runs_in_minidl():
    out = convnext_v2(minidl, steps=2)
    assert np.isfinite(out["logits"]).all()



# ---- 29. MobileNetV3 / ShuffleNet blocks: inverted residuals with depthwise convs (stride 1 and
# 2, 3x3 and 5x5), squeeze-and-excitation with hardsigmoid, hardswish, a channel shuffle --------
def mobilenet_v3(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def _make_divisible(v, divisor=4):
        return max(divisor, int(v + divisor / 2) // divisor * divisor)

    class SqueezeExcitation(nn.Module):
        def __init__(self, c):
            super().__init__()
            squeeze = _make_divisible(c // 4)
            self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

        def forward(self, x):
            scale = F.adaptive_avg_pool2d(x, 1)
            scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))), inplace=True)
            return scale * x

    def channel_shuffle(x, groups):
        b, c, h, w = x.size()
        x = x.view(b, groups, c // groups, h, w)
        return tt.transpose(x, 1, 2).contiguous().view(b, -1, h, w)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, expand, cout, kernel, stride, use_se, act, shuffle=False):
            super().__init__()
            self.use_res = stride == 1 and cin == cout
            self.shuffle = shuffle
            layers = [nn.Conv2d(cin, expand, 1, bias=False, groups=2 if shuffle else 1),
                      nn.BatchNorm2d(expand), act()]
            self.expand = nn.Sequential(*layers)
            self.depthwise = nn.Sequential(
                nn.Conv2d(expand, expand, kernel, stride, (kernel - 1) // 2, groups=expand,
                          bias=False), nn.BatchNorm2d(expand), act())
            self.se = SqueezeExcitation(expand) if use_se else nn.Identity()
            self.project = nn.Sequential(nn.Conv2d(expand, cout, 1, bias=False),
                                         nn.BatchNorm2d(cout))

        def forward(self, x):
            h = self.expand(x)
            if self.shuffle:
                h = channel_shuffle(h, 2)
            h = self.project(self.se(self.depthwise(h)))
            return h + x if self.use_res else h

    class TinyMobileNetV3(nn.Module):
        def __init__(self, classes=4):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                      nn.Hardswish())
            self.blocks = nn.Sequential(
                InvertedResidual(8, 16, 8, 3, 1, False, nn.ReLU),
                InvertedResidual(8, 24, 12, 5, 2, True, nn.Hardswish),
                InvertedResidual(12, 24, 12, 3, 1, True, nn.Hardswish, shuffle=True))
            self.head = nn.Sequential(nn.Linear(12, 16), nn.Hardswish(), nn.Dropout(0.0),
                                      nn.Linear(16, classes))

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.head(tt.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    rng = np.random.default_rng(29)
    images, labels = rng.random((4, 3, 16, 16)), rng.integers(0, 4, 4)
    model = TinyMobileNetV3().double()
    _load(model, tt, state)
    opt = tt.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=0.0316, momentum=0.9,
                           weight_decay=1e-5)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(tt.from_numpy(images)), tt.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        logits = model(tt.from_numpy(images))
    return {"losses": losses, "logits": _np(logits), "params": _params(model)}


def test_mobilenet_v3_blocks_train_the_same():
    _parity(mobilenet_v3)


def test_mobilenet_v3_blocks_run_in_minidl():
    out = mobilenet_v3(minidl, steps=2)
    assert np.isfinite(out["logits"]).all()


# ---- what the programs found, each fix with its own test ------------------------------------
def _grad_runs_only_the_path_to_its_inputs(tt):
    calls = []
    w = tt.tensor([0.5, -1.5], dtype=tt.float64, requires_grad=True)
    w.register_hook(lambda g: calls.append("w"))
    fast = w * 2.0 - w.exp()  # ops above the inputs of autograd.grad below, with saved arrays
    grads = []
    for _ in range(2):  # first-order MAML's inner loop: gradients of the fast weights only
        loss = (fast.sin() * fast).sum()
        (g,) = tt.autograd.grad(loss, fast)
        grads.append(_np(g))
        fast = fast - 0.1 * g
    fast.pow(2).sum().backward()  # through the ops above, which kept what they saved
    a = tt.tensor([1.0, 2.0], dtype=tt.float64, requires_grad=True)
    v = tt.tensor([3.0, -1.0], dtype=tt.float64, requires_grad=True)
    y = a.exp()
    y.register_hook(lambda g: calls.append("y"))  # off the path from the output to v
    (gv,) = tt.autograd.grad((y * v).sum(), v)
    (ga,) = tt.autograd.grad((y * v).sum(), a)  # y's op was left alone: it runs now
    return grads + [_np(w.grad), _np(gv), _np(ga)], calls


def test_autograd_grad_runs_only_the_ops_on_a_path_to_its_inputs():
    """First-order MAML failed with 'backward through a graph a second time': minidl's
    autograd.grad(loss, fast_weights) went on past the fast weights, ran the ops that made them
    from the parameters and freed them, so the outer loss's backward could not pass. It also
    ran the hooks of tensors off the path. Now, as torch's engine, only the ops on a path from
    the outputs to the inputs run (and are freed)."""
    got, calls = _grad_runs_only_the_path_to_its_inputs(minidl)
    w = np.array([0.5, -1.5])
    f = w * 2 - np.exp(w)
    g0 = np.sin(f) + f * np.cos(f)
    np.testing.assert_allclose(got[0], g0)
    f1 = f - 0.1 * g0
    np.testing.assert_allclose(got[1], np.sin(f1) + f1 * np.cos(f1))
    f2 = f1 - 0.1 * got[1]
    np.testing.assert_allclose(got[2], 2 * f2 * (2 - np.exp(w)))
    np.testing.assert_allclose(got[3], np.exp([1.0, 2.0]))
    np.testing.assert_allclose(got[4], np.exp([1.0, 2.0]) * [3.0, -1.0])
    assert calls == ["w", "y"]
    x = minidl.tensor([0.3, 0.7], dtype=minidl.float64, requires_grad=True)
    y = x.exp()
    minidl.autograd.grad(y.sum(), x)  # frees the graph: a second pass still refuses
    with pytest.raises(RuntimeError, match="second time"):
        minidl.autograd.grad(y.sum(), x)


def test_autograd_grad_runs_only_the_ops_on_a_path_to_its_inputs_as_torch():
    torch = pytest.importorskip("torch")
    ours, our_calls = _grad_runs_only_the_path_to_its_inputs(minidl)
    theirs, their_calls = _grad_runs_only_the_path_to_its_inputs(torch)
    assert our_calls == their_calls
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def _init_by_keyword(tt):
    t = tt.empty(3, 4, dtype=tt.float64)
    out = [tt.nn.init.constant_(tensor=t, val=0.25).clone()]
    for f in (tt.nn.init.zeros_, tt.nn.init.ones_, tt.nn.init.eye_):
        out.append(f(tensor=t).clone())
    w = tt.empty(2, 2, 3, 3, dtype=tt.float64)
    out.append(tt.nn.init.dirac_(tensor=w, groups=2).clone())
    return [_np(o) for o in out]


def test_nn_init_takes_torchs_argument_names():
    """The neural ODE's nn.init.constant_(m.bias, val=0) was refused: minidl's initialisers
    named their arguments t and value where torch's are tensor and val."""
    import inspect

    got = _init_by_keyword(minidl)
    assert (got[0] == 0.25).all() and (got[1] == 0).all() and (got[3] == np.eye(3, 4)).all()
    for name in ("uniform_", "normal_", "constant_", "xavier_uniform_", "kaiming_normal_",
                 "trunc_normal_", "orthogonal_", "sparse_"):
        assert next(iter(inspect.signature(getattr(minidl.nn.init, name)).parameters)) == \
            "tensor", name
    t = minidl.empty(5, 6, dtype=minidl.float64)
    minidl.nn.init.normal_(tensor=t, mean=1.0, std=0.0)
    assert (t.numpy() == 1.0).all()
    with pytest.raises(TypeError, match="value"):
        minidl.nn.init.constant_(t, value=1.0)


def test_nn_init_takes_torchs_argument_names_as_torch():
    torch = pytest.importorskip("torch")
    import inspect

    for a, b in zip(_init_by_keyword(minidl), _init_by_keyword(torch)):
        np.testing.assert_array_equal(a, b)
    for name in dir(torch.nn.init):
        theirs = getattr(torch.nn.init, name)
        if name.endswith("_") and not name.startswith("_") and callable(theirs):
            assert list(inspect.signature(getattr(minidl.nn.init, name)).parameters) == \
                list(inspect.signature(theirs).parameters), name


def _measurement_fields(tt):
    benchmark = importlib.import_module(tt.__name__ + ".utils.benchmark")
    plain = benchmark.Timer(stmt="x + 1", globals={"x": 1}).timeit(3)
    named = benchmark.Timer(stmt="x * 2", setup="y = 0", globals={"x": 1}, label="mul",
                            sub_label="int", description="two", env="here",
                            num_threads=1).timeit(2)
    fields = ("stmt", "setup", "global_setup", "label", "sub_label", "description", "env",
              "num_threads", "as_row_name", "title", "number_per_run")
    return [[getattr(m, f) for f in fields] for m in (plain, named)]


def test_benchmark_measurement_reads_its_tasks_fields():
    """The recipe's measurement.label (and description, sub_label...) failed: minidl's
    Measurement kept them only in its task_spec dict; torch's forwards them."""
    assert _measurement_fields(minidl) == [
        ["x + 1", "pass", "", None, None, None, None, 1, "x + 1", "x + 1", 3],
        ["x * 2", "y = 0", "", "mul", "int", "two", "here", 1, "int", "mul: int", 2]]
    m = minidl.utils.benchmark.Timer("pass").timeit(1)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        m.nothing


def test_benchmark_measurement_reads_its_tasks_fields_as_torch():
    torch = pytest.importorskip("torch")
    assert _measurement_fields(minidl) == _measurement_fields(torch)


def test_benchmark_measurement_title_as_torch():
    pytest.importorskip("torch")
    theirs_module = importlib.import_module("torch.utils.benchmark")
    for kw in ({"stmt": "a = 1\nb = 2"}, {"stmt": "a = 1\nb = 2", "sub_label": "s"},
               {"stmt": "pass", "sub_label": "s"}, {"stmt": "pass", "label": "L"}):
        ours = minidl.utils.benchmark.Timer(**kw).timeit(1)
        theirs = theirs_module.Timer(**kw).timeit(1)
        assert ours.title == theirs.title and ours.as_row_name == theirs.as_row_name, kw
        assert repr(ours).splitlines()[1:1 + ours.title.count("\n") + 1] == \
            repr(theirs).splitlines()[1:1 + theirs.title.count("\n") + 1], kw


def _global_module_hooks(tt):
    nn = tt.nn
    mm = importlib.import_module(tt.__name__ + ".nn.modules.module")
    seen = []
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with tt.no_grad():
        for k, p in enumerate(model.parameters()):
            p.copy_(tt.from_numpy(np.linspace(-1.0, 1.0 + k, p.numel()).reshape(p.shape)))
    model[0].register_forward_hook(lambda m, a, o: seen.append("own forward hook"))
    model[2].register_full_backward_hook(lambda m, gi, go: seen.append("own backward hook"))

    def pre(m, args):
        seen.append(("pre", type(m).__name__))
        if isinstance(m, nn.Tanh):
            return (args[0] * 0.5,)

    def fwd(m, args, kwargs, out):
        seen.append(("forward", type(m).__name__, tuple(out.shape), sorted(kwargs)))

    def bpre(m, grad_output):
        seen.append(("backward pre", type(m).__name__))

    def bwd(m, grad_input, grad_output):
        seen.append(("backward", type(m).__name__,
                     [None if g is None else tuple(g.shape) for g in grad_input]))
        if isinstance(m, nn.Tanh):
            return (grad_input[0] * 3.0,)

    handles = [mm.register_module_forward_pre_hook(pre),
               mm.register_module_forward_hook(fwd, with_kwargs=True),
               mm.register_module_full_backward_pre_hook(bpre),
               mm.register_module_full_backward_hook(bwd)]
    x = tt.tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]], dtype=tt.float64, requires_grad=True)
    try:
        out = model(x)
        out.sum().backward()
    finally:
        for h in handles:
            h.remove()
    seen.append("removed")
    model(x)

    class Fails(nn.Module):
        def forward(self, x):
            raise ValueError("no")

    h = mm.register_module_forward_hook(lambda m, a, o: seen.append(("always", o)),
                                        always_call=True)
    try:
        Fails()(x)
    except ValueError:
        seen.append("raised")
    finally:
        h.remove()
    return repr(seen), _np(out), _np(x.grad)


def test_global_module_hooks():
    """A layer-by-layer summary of a model by torch.nn.modules.module's
    register_module_forward_hook failed: minidl had none of the global module hooks. Now the
    forward pre-hook, forward hook (with_kwargs, always_call) and the full backward pre-hook
    and hook run for every module, before the module's own, until removed."""
    seen, out, grad = _global_module_hooks(minidl)
    seen = eval(seen)
    assert seen[:3] == [("pre", "Sequential"), ("pre", "Linear"), ("forward", "Linear", (2, 4), [])]
    assert seen[3] == "own forward hook" and ("forward", "Sequential", (2, 2), []) in seen
    assert seen[-4:] == ["removed", "own forward hook", ("always", None), "raised"]
    assert seen.index(("backward pre", "Linear")) < seen.index("own backward hook")
    assert len(minidl.nn.module._global_forward_hooks) == 0
    assert np.isfinite(grad).all()


def test_global_module_hooks_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _global_module_hooks(minidl), _global_module_hooks(torch)
    assert ours[0] == theirs[0]
    for a, b in zip(ours[1:], theirs[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def _extra_nones(tt):
    class Scale(tt.autograd.Function):
        @staticmethod
        def forward(ctx, x, factor=2.0, shift=0.0):
            ctx.factor = factor
            return x * factor + shift

        @staticmethod
        def backward(ctx, g):
            return g * ctx.factor, None, None  # a None for each defaulted argument too

    x = tt.tensor([1.0, -2.0], dtype=tt.float64, requires_grad=True)
    Scale.apply(x).sum().backward()
    first = _np(x.grad)
    x.grad = None
    Scale.apply(x, 3.0).sum().backward()
    return [first, _np(x.grad)]


def test_custom_function_backward_may_return_nones_for_defaulted_arguments():
    """The fused Conv-BN tutorial's backward returns (grad_X, grad_w, None) for forward(ctx, X,
    conv_weight, eps=1e-3) called with two arguments: torch drops the trailing Nones, minidl
    refused the count. Extra gradients that are not None are still refused."""
    got = _extra_nones(minidl)
    assert got[0].tolist() == [2.0, 2.0] and got[1].tolist() == [3.0, 3.0]

    class Wrong(minidl.autograd.Function):
        @staticmethod
        def forward(ctx, x, factor=2.0):
            return x * factor

        @staticmethod
        def backward(ctx, g):
            return g, g

    x = minidl.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="returned 2 gradients, expected 1"):
        Wrong.apply(x).sum().backward()


def test_custom_function_backward_may_return_nones_for_defaulted_arguments_as_torch():
    torch = pytest.importorskip("torch")
    for a, b in zip(_extra_nones(minidl), _extra_nones(torch)):
        np.testing.assert_array_equal(a, b)


def _leaf_hook_order(tt):
    nn = tt.nn
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    names = {p: n for n, p in model.named_parameters()}
    seen = []
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda q: seen.append(names[q].split(".")[0]))
    shared = tt.tensor([0.5, -0.5], dtype=tt.float64, requires_grad=True)
    shared.register_post_accumulate_grad_hook(lambda q: seen.append("shared"))
    x = tt.ones(5, 3, dtype=tt.float64)
    (model(x) * shared).sum().backward()  # shared: taken by the last op only
    return seen


def test_post_accumulate_grad_hooks_run_as_each_gradient_is_ready():
    """The optimizer-in-backward recipe steps each parameter from its
    post-accumulate-grad hook: torch runs them as each gradient is complete, the last layer's
    first; minidl accumulated every parameter at the end, the first layer's first. Now a leaf
    comes right after the op that took it. (A leaf that several ops took comes after the last
    of them in minidl's order, which can be later than torch's: torch picks among the ready
    ops by creation order, minidl walks the graph depth first.)"""
    assert _leaf_hook_order(minidl) == ["shared", "4", "4", "2", "2", "0", "0"]
    seen = []
    shared = minidl.tensor([0.5, -0.5], dtype=minidl.float64, requires_grad=True)
    shared.register_post_accumulate_grad_hook(lambda q: seen.append(q.grad.tolist()))
    w = minidl.tensor([2.0, 3.0], dtype=minidl.float64, requires_grad=True)
    y = (w * shared.sum()).exp()
    (y * shared).sum().backward()  # taken early and late: accumulated once, after both
    yv = np.exp(np.array([2.0, 3.0]) * 0.0)
    expected = yv * np.array([0.5, -0.5]) * np.array([2.0, 3.0])
    assert seen == [(yv + expected.sum()).tolist()]


def test_post_accumulate_grad_hooks_run_as_each_gradient_is_ready_as_torch():
    torch = pytest.importorskip("torch")
    assert _leaf_hook_order(minidl) == _leaf_hook_order(torch)


def _batched_grads(tt):
    x = tt.tensor([0.3, -1.2, 0.8], dtype=tt.float64, requires_grad=True)
    w = tt.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=tt.float64, requires_grad=True)
    y = x.sin() * x.sum()
    z = (w @ w).tanh()
    eye = tt.eye(3, dtype=tt.float64)
    (jac,) = tt.autograd.grad(y, x, eye, retain_graph=True, is_grads_batched=True)
    jx, jw = tt.autograd.grad((y, z), (x, w), (eye, tt.ones(3, 2, 2, dtype=tt.float64)),
                              create_graph=True, is_grads_batched=True)
    (hess_trace,) = tt.autograd.grad(jx.diagonal().sum() + (jw ** 2).sum(), x,
                                     allow_unused=True, materialize_grads=True)
    (hw,) = tt.autograd.grad((jw ** 2).sum(), w)
    return [_np(jac), _np(jx), _np(jw), _np(hess_trace), _np(hw)]


def test_autograd_grad_is_grads_batched():
    """A Jacobian by rows, autograd.grad(y, x, torch.eye(n), is_grads_batched=True), was refused
    (NotImplementedError): now each row is one vector-Jacobian product and they are stacked;
    with create_graph they stay differentiable."""
    jac, jx, jw = _batched_grads(minidl)[:3]
    xv = np.array([0.3, -1.2, 0.8])
    expected = np.diag(np.cos(xv) * xv.sum()) + np.sin(xv)[:, None]
    np.testing.assert_allclose(jac, expected, rtol=1e-14)
    np.testing.assert_allclose(jx, expected, rtol=1e-14)
    assert jw.shape == (3, 2, 2) and np.allclose(jw, jw[0])
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="grad_output\\[0\\] has a shape of \\(2, 3\\) and "
                                         "output\\[0\\] has a shape of \\(2,\\)"):
        minidl.autograd.grad(x * 2, x, minidl.ones(2, 3), is_grads_batched=True)
    with pytest.raises(ValueError, match="must be a Tensor"):
        minidl.autograd.grad((x * 2).sum(), x, is_grads_batched=True)


def test_autograd_grad_is_grads_batched_as_torch():
    torch = pytest.importorskip("torch")
    for a, b in zip(_batched_grads(minidl), _batched_grads(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def _quantized_attention(tt):
    rng = np.random.default_rng(7)
    model = tt.nn.Sequential(tt.nn.Linear(8, 8))
    model.attn = tt.nn.MultiheadAttention(8, 2, batch_first=True)
    with tt.no_grad():
        for p in model.parameters():
            p.copy_(tt.from_numpy(rng.uniform(-0.5, 0.5, tuple(p.shape)).astype(np.float32)))
    x = tt.from_numpy(rng.standard_normal((2, 3, 8)).astype(np.float32))
    before = model.attn(x, x, x)[0]
    q = tt.ao.quantization.quantize_dynamic(model, {tt.nn.Linear}, dtype=tt.qint8)
    after = q.attn(x, x, x)[0]
    names = repr((type(q[0]).__name__, type(q.attn.out_proj).__name__,
                  isinstance(q.attn.out_proj, tt.nn.Linear)))
    return names, _np(before), _np(after)


def test_dynamic_quantization_leaves_attention_out_proj_alone():
    """quantize_dynamic(model, {nn.Linear}) on a model with a MultiheadAttention broke the
    attention ('function' object has no attribute 'dtype'): minidl's out_proj was a plain
    Linear, so it was swapped for a quantized one whose weight is a method. torch's is a
    NonDynamicallyQuantizableLinear, which the exact-type swap leaves alone; now minidl's too."""
    names, before, after = _quantized_attention(minidl)
    assert names == repr(("Linear", "NonDynamicallyQuantizableLinear", True))
    np.testing.assert_array_equal(after, before)


def test_dynamic_quantization_leaves_attention_out_proj_alone_as_torch():
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _quantized_attention(torch)
    ours = _quantized_attention(minidl)
    assert ours[0] == theirs[0]
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-5, atol=1e-6)


def _shared_children_and_private_hooks(tt):
    nn = tt.nn
    model = nn.Sequential(nn.Linear(2, 2))
    shared = nn.Linear(2, 1)
    model.a, model.b = shared, shared  # one module under two names
    model.add_module("none", None)
    calls = []
    model.apply(lambda m: calls.append(type(m).__name__))
    facts = [[n for n, _ in model.named_children()], len(list(model.children())), calls,
             repr(model).count("Linear(in_features=2, out_features=1"),
             "(none): None" in repr(model), sorted(model.state_dict())]

    def rename(state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        if prefix + "w" in state_dict:  # an old checkpoint's name
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "w")

    lin = nn.Linear(2, 2).double()
    lin._register_load_state_dict_pre_hook(rename)
    seen = []
    lin._register_load_state_dict_pre_hook(
        lambda module, sd, prefix, *rest: seen.append((type(module).__name__, sorted(sd))),
        with_module=True)
    lin.load_state_dict({"w": tt.ones(2, 2, dtype=tt.float64),
                         "bias": tt.zeros(2, dtype=tt.float64)})
    lin._register_state_dict_hook(
        lambda module, sd, prefix, meta: {k.upper(): v for k, v in sd.items()})
    facts += [seen, lin.weight.tolist(), list(lin.state_dict())]
    return repr(facts)


def test_shared_children_and_torchs_private_state_dict_hooks():
    """A module held under two names was listed twice by named_children (torch's lists it once;
    apply then visits it once); and the private _register_load_state_dict_pre_hook (old keys
    renamed on load) and _register_state_dict_hook (may return the dict) were missing."""
    facts = eval(_shared_children_and_private_hooks(minidl))
    assert facts[0] == ["0", "a"] and facts[1] == 2 and facts[2].count("Linear") == 2
    assert facts[3] == 2 and facts[4]  # the repr still shows every name, as torch's
    assert facts[6] == [("Linear", ["bias", "weight"])] and facts[7] == [[1.0, 1.0]] * 2
    assert facts[8] == ["WEIGHT", "BIAS"]
    lin = minidl.nn.Linear(1, 1)
    lin.register_state_dict_post_hook(lambda *a: {})
    with pytest.raises(RuntimeError, match="must return None"):
        lin.state_dict()


def test_shared_children_and_torchs_private_state_dict_hooks_as_torch():
    torch = pytest.importorskip("torch")
    assert _shared_children_and_private_hooks(minidl) == _shared_children_and_private_hooks(torch)
