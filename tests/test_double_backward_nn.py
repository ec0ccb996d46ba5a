"""Double backward (create_graph=True) through the neural-network ops: convolutions (and their
transposes, unfold, fold), pooling, resampling, grid_sample, batch/layer/RMS norm, vector
norms, padding, dropout, embedding and embedding_bag, activation checkpointing and module
hooks.

Each op: a gradgradcheck against finite differences in float64 (no torch needed), and where
PyTorch differentiates that op twice, a parity test: the first gradient taken with
create_graph=True, reduced to a scalar that depends on it nonlinearly, backpropagated, and
every input's .grad compared with torch's on the same inputs. The cases are written once as
``fn(F, lib, *inputs)`` and run with (minidl.nn.functional, minidl) and (torch's, torch).
"""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl import autograd
from minidl.testing import gradgradcheck
from minidl.utils.checkpoint import checkpoint


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def _leaves(arrays):
    return [minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in arrays]


def _emb_idx(lib):
    return lib.tensor([[0, 2, 4, 2], [1, 1, 3, 0]])


def _bn_eval(F, lib, x, w, b):
    rm = lib.tensor([0.1, -0.2, 0.3], dtype=lib.float64)
    rv = lib.tensor([1.5, 0.7, 1.1], dtype=lib.float64)
    return F.batch_norm(x, rm, rv, w, b, training=False).tanh()


def _unpool(F, lib, x):
    y, i = F.max_pool2d(x.tanh(), 2, 2, return_indices=True)
    return F.max_unpool2d(y.tanh() * 2, i, 2, 2).tanh()


def _embedding(F, lib, w, v, padding_idx=None):
    return (F.embedding(_emb_idx(lib), w.tanh(), padding_idx=padding_idx) * v).tanh()


def _embedding_padding(F, lib, w, v):
    return _embedding(F, lib, w, v, padding_idx=1)


def _grid(F, x, g, mode, padding_mode, align_corners):
    return F.grid_sample(x.tanh(), g.tanh() * 1.2, mode=mode, padding_mode=padding_mode,
                         align_corners=align_corners).tanh()


# id: (fn(F, lib, *inputs), input shapes); every one of them also runs against torch
CASES = {
    # functional.Conv2d (the tuned kernels' op): strided and padded, 1x1, with bias
    "conv2d": (lambda F, L, x, w, b: F.conv2d(x, w, b, stride=2, padding=1).tanh(),
               [(2, 2, 5, 5), (3, 2, 3, 3), (3,)]),
    "conv2d_1x1": (lambda F, L, x, w: F.conv2d(x.tanh(), w).tanh(), [(2, 3, 3, 3), (2, 3, 1, 1)]),
    # ConvNd: dilation and groups, conv1d, conv3d
    "conv2d_groups": (lambda F, L, x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=2,
                                                     dilation=2, groups=2).tanh(),
                      [(1, 4, 5, 5), (4, 2, 3, 2), (4,)]),
    "conv1d": (lambda F, L, x, w: F.conv1d(x, w, stride=2, padding=1).tanh(),
               [(2, 2, 7), (3, 2, 3)]),
    "conv3d": (lambda F, L, x, w: F.conv3d(x, w, padding=1, stride=2).tanh(),
               [(1, 2, 3, 3, 3), (2, 2, 2, 2, 2)]),
    # ConvTranspose2d
    "conv_transpose2d": (lambda F, L, x, w, b: F.conv_transpose2d(
        x, w, b, stride=2, padding=1, output_padding=1, groups=2).tanh(),
        [(1, 4, 3, 3), (4, 1, 3, 3), (2,)]),
    "conv_transpose1d": (lambda F, L, x, w: F.conv_transpose1d(x, w, stride=3, dilation=2).tanh(),
                         [(2, 2, 4), (2, 3, 2)]),
    "unfold": (lambda F, L, x: F.unfold(x.tanh(), 3, dilation=2, padding=1, stride=2).tanh(),
               [(1, 2, 6, 6)]),
    "fold": (lambda F, L, x: F.fold(x.tanh(), (4, 4), 2, padding=1, stride=2).tanh(),
             [(1, 8, 9)]),
    # pooling: functional's kernels, then the window ops (dilation, ceil_mode, 1-D, 3-D)
    "max_pool2d": (lambda F, L, x: F.max_pool2d(x.tanh(), 3, 2, 1).tanh(), [(1, 2, 6, 6)]),
    "max_pool2d_dilated": (lambda F, L, x: F.max_pool2d(x.tanh(), 3, 2, 1, dilation=2,
                                                        ceil_mode=True).tanh(), [(1, 2, 7, 7)]),
    "max_pool1d": (lambda F, L, x: F.max_pool1d(x.tanh(), 3, 2, 1).tanh(), [(2, 2, 7)]),
    "max_pool3d": (lambda F, L, x: F.max_pool3d(x.tanh(), 2, 1, 1).tanh(), [(1, 1, 2, 3, 3)]),
    "avg_pool2d": (lambda F, L, x: F.avg_pool2d(x.tanh(), 3, 2, 1).tanh(), [(1, 2, 6, 6)]),
    "avg_pool2d_exclude_pad": (lambda F, L, x: F.avg_pool2d(
        x.tanh(), 3, 2, 1, ceil_mode=True, count_include_pad=False).tanh(), [(1, 2, 6, 6)]),
    "avg_pool3d": (lambda F, L, x: F.avg_pool3d(x.tanh(), 2, 1, 1).tanh(), [(1, 1, 2, 3, 3)]),
    "adaptive_avg_pool2d": (lambda F, L, x: F.adaptive_avg_pool2d(x.tanh(), (3, 2)).tanh(),
                            [(1, 2, 5, 5)]),
    "adaptive_avg_pool3d": (lambda F, L, x: F.adaptive_avg_pool3d(x.tanh(), (2, 2, 3)).tanh(),
                            [(1, 1, 3, 3, 4)]),
    "adaptive_max_pool2d": (lambda F, L, x: F.adaptive_max_pool2d(x.tanh(), (3, 2)).tanh(),
                            [(1, 2, 5, 5)]),
    "max_unpool2d": (_unpool, [(1, 2, 4, 4)]),
    "interpolate_bilinear": (lambda F, L, x: F.interpolate(
        x.tanh(), size=(5, 4), mode="bilinear", align_corners=False).tanh(), [(1, 2, 3, 3)]),
    "interpolate_bicubic": (lambda F, L, x: F.interpolate(
        x.tanh(), scale_factor=2, mode="bicubic", align_corners=True).tanh(), [(1, 1, 3, 3)]),
    # normalisation
    "batch_norm_train": (lambda F, L, x, w, b: F.batch_norm(x, None, None, w, b,
                                                            training=True).tanh(),
                         [(3, 3, 2, 2), (3,), (3,)]),
    "batch_norm_train_2d": (lambda F, L, x, w: F.batch_norm(x, None, None, w,
                                                            training=True).tanh(),
                            [(5, 3), (3,)]),
    "batch_norm_eval": (_bn_eval, [(2, 3, 4), (3,), (3,)]),
    "layer_norm": (lambda F, L, x, w, b: F.layer_norm(x, (2, 3), w, b).tanh(),
                   [(2, 2, 2, 3), (2, 3), (2, 3)]),
    "layer_norm_plain": (lambda F, L, x: F.layer_norm(x, (4,)).tanh(), [(3, 4)]),
    "rms_norm": (lambda F, L, x, w: F.rms_norm(x, (4,), w, eps=1e-6).tanh(), [(3, 2, 4), (4,)]),
    "normalize_p2": (lambda F, L, x: F.normalize(x, p=2.0, dim=1).tanh(), [(3, 4)]),
    "normalize_p3": (lambda F, L, x: F.normalize(x, p=3.0, dim=1).tanh(), [(3, 4)]),
    # padding, embedding
    "pad_constant": (lambda F, L, x: F.pad(x.tanh(), (1, 2, -1, 1), value=0.5).tanh(),
                     [(1, 2, 3, 4)]),
    "pad_reflect": (lambda F, L, x: F.pad(x.tanh(), (1, 2, 2, 1), mode="reflect").tanh(),
                    [(1, 2, 3, 4)]),
    "pad_replicate": (lambda F, L, x: F.pad(x.tanh(), (2, 1), mode="replicate").tanh(),
                      [(2, 2, 3)]),
    "pad_circular": (lambda F, L, x: F.pad(x.tanh(), (1, 1, 2, 0), mode="circular").tanh(),
                     [(1, 1, 3, 3)]),
    "embedding": (_embedding, [(5, 3), (4, 3)]),
    # grid_sample: gradients in the input and in the grid
    "grid_sample_bilinear": (lambda F, L, x, g: _grid(F, x, g, "bilinear", "zeros", False),
                             [(1, 2, 4, 5), (1, 3, 2, 2)]),
    "grid_sample_bicubic": (lambda F, L, x, g: _grid(F, x, g, "bicubic", "reflection", True),
                            [(1, 2, 4, 5), (1, 3, 2, 2)]),
    "grid_sample_nearest": (lambda F, L, x, g: _grid(F, x, g, "nearest", "border", False),
                            [(1, 2, 4, 5), (1, 3, 2, 2)]),
    "grid_sample_3d": (lambda F, L, x, g: _grid(F, x, g, "bilinear", "border", True),
                       [(1, 1, 3, 4, 3), (1, 2, 2, 1, 3)]),
    "embedding_padding_idx": (_embedding_padding, [(5, 3), (4, 3)]),
}
# The padding row's gradient is 0 by convention, not by calculus (the row is read in forward),
# so finite differences of the first gradient disagree there; torch's double backward agrees.
NOT_BY_CALCULUS = {"embedding_padding_idx"}


def _minidl_fn(name):
    fn = CASES[name][0]
    return lambda *xs: fn(F, minidl, *xs)


@pytest.mark.parametrize("name", sorted(set(CASES) - NOT_BY_CALCULUS))
def test_gradgradcheck(name):
    shapes = CASES[name][1]
    assert gradgradcheck(_minidl_fn(name), _leaves(_arrays(shapes)))


def _second_order_grads(fn, lib, F_, arrays, make, grad):
    """fn's input gradients (create_graph) reduced nonlinearly to a scalar, backpropagated:
    each input's .grad as a numpy array."""
    xs = [make(a) for a in arrays]
    y = fn(F_, lib, *xs)
    rng = np.random.default_rng(5)
    v = make(rng.standard_normal(tuple(y.shape)), grad=False)
    gs = grad((y * v).sum(), xs)
    total = 0
    for gx, x in zip(gs, xs):
        r = make(rng.standard_normal(tuple(x.shape)), grad=False)
        total = total + (gx * gx).sum() + (gx * r).sum()
    total.backward()
    return [x.grad.numpy() for x in xs]


def _minidl_make(a, grad=True):
    return minidl.tensor(a, dtype=minidl.float64, requires_grad=grad)


def _minidl_grad(y, xs):
    return autograd.grad(y, xs, create_graph=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_parity(name):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as TF

    fn, shapes = CASES[name]
    arrays = _arrays(shapes, seed=1)

    def make(a, grad=True):
        return torch.tensor(a, dtype=torch.float64, requires_grad=grad)

    def tgrad(y, xs):
        return torch.autograd.grad(y, xs, create_graph=True)

    ours = _second_order_grads(fn, minidl, F, arrays, _minidl_make, _minidl_grad)
    theirs = _second_order_grads(fn, torch, TF, arrays, make, tgrad)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10)


# ---- ops torch does not differentiate twice (embedding_bag), or that are random -------------
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_gradgradcheck(mode):
    idx = minidl.tensor([[0, 2, 4, 2], [1, 1, 3, 0]])
    fn = lambda w: F.embedding_bag(idx, w.tanh(), mode=mode).tanh()  # noqa: E731
    assert gradgradcheck(fn, _leaves(_arrays([(5, 3)])))


def test_embedding_bag_per_sample_weights_gradgradcheck():
    idx, offsets = minidl.tensor([0, 2, 4, 2, 1, 1, 3, 0]), minidl.tensor([0, 3])

    def fn(w, p):
        return F.embedding_bag(idx, w.tanh(), offsets, mode="sum",
                               per_sample_weights=p.tanh()).tanh()
    assert gradgradcheck(fn, _leaves(_arrays([(5, 3), (8,)])))


def test_normalize_p1_gradgradcheck():
    # |x| is piecewise linear: its second derivative is 0 away from 0, what the check sees
    fn = lambda x: F.normalize(x, p=1.0, dim=1).tanh()  # noqa: E731
    assert gradgradcheck(fn, _leaves(_arrays([(3, 4)])))


def test_dropout_gradgradcheck():
    def fn(x):
        minidl.manual_seed(3)  # the same mask at every evaluation
        return F.dropout(x.tanh(), 0.4).tanh()
    assert gradgradcheck(fn, _leaves(_arrays([(4, 5)])))
    minidl.manual_seed(3)
    x = _leaves(_arrays([(4, 5)]))[0]
    y = F.dropout(x, 0.4)
    (gx,) = autograd.grad((y * y).sum(), [x], create_graph=True)
    mask = y.numpy() / x.numpy()
    gx.sum().backward()  # d/dx sum(2 x mask^2) = 2 mask^2
    np.testing.assert_allclose(x.grad.numpy(), 2 * mask ** 2, rtol=1e-12)


# ---- the ops beside the functions: checkpoint, module hooks, DDP's gradient node ---------------
def test_checkpoint_gradgradcheck():
    def fn(x, w):
        return checkpoint(lambda a: F.conv2d(a, w, padding=1).tanh(), x.tanh())
    assert gradgradcheck(fn, _leaves(_arrays([(1, 2, 3, 3), (2, 2, 3, 3)])))


def _hooked_linear(nn, make, hook=lambda m, gin, gout: (gin[0] * 2,)):
    lin = nn.Linear(3, 2).double()
    rng = np.random.default_rng(2)
    lin.weight, lin.bias = (nn.Parameter(make(rng.standard_normal(s))) for s in ((2, 3), (2,)))
    lin.register_full_backward_hook(hook)
    return lin


def test_full_backward_hook_gradgradcheck():
    # a hook that only looks: the gradients pass the hooks' _Pack ops as recorded ops. (One
    # that changes them changes the second backward's too, as in PyTorch: no longer the
    # derivative of the first gradient, so that one is checked against torch below.)
    seen = []
    lin = _hooked_linear(minidl.nn, lambda a: minidl.tensor(a, dtype=minidl.float64),
                         lambda m, gin, gout: seen.append(gin[0].shape))
    assert gradgradcheck(lambda x: lin(x.tanh()).tanh(), _leaves(_arrays([(4, 3)])))
    assert seen and all(s == (4, 3) for s in seen)


# ---- module full backward hooks in a second backward -------------------------------------------------
def _mlp(lib):
    m = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.Tanh(), lib.nn.Linear(3, 1)).double()
    with lib.no_grad():
        for p in m.parameters():
            p.copy_(lib.tensor(np.linspace(-0.5, 0.7, p.numel()).reshape(tuple(p.shape)),
                               dtype=lib.float64))
    return m


def _hooked_penalty(lib):
    m = _mlp(lib)
    m[1].register_full_backward_hook(lambda mod, gin, gout: (gin[0] * 2,))
    x = lib.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=lib.float64, requires_grad=True)
    (g,) = lib.autograd.grad(m(x).sum(), x, create_graph=True)
    (g ** 2).sum().backward()
    return g, m[0].weight.grad, x.grad


def test_full_backward_hook_runs_only_where_the_gradient_passed_the_outputs():
    # the second backward reaches Tanh's input through its derivative (1 - y^2) without
    # passing Tanh's output node: the hook (x2) ran there again, doubling x.grad
    _, _, x_grad = _hooked_penalty(minidl)
    np.testing.assert_allclose(x_grad.numpy(), [[-0.03108657, -0.02462929], [-1.29492724, -1.38035561]],
                               rtol=1e-6)


def test_full_backward_hook_second_backward_parity_with_torch():
    torch = pytest.importorskip("torch")
    for ours, theirs in zip(_hooked_penalty(minidl), _hooked_penalty(torch)):
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-10)


def test_full_backward_hook_two_inputs_gradgradcheck():
    class Product(minidl.nn.Module):
        def forward(self, a, b):
            return a * b.tanh(), a + b

    seen = []
    mod = Product()
    mod.register_full_backward_hook(lambda m, gin, gout: seen.append(len(gin)))
    assert gradgradcheck(lambda a, b: sum(o.tanh() for o in mod(a.tanh(), b)),
                         _leaves(_arrays([(2, 3), (2, 3)])))
    assert seen and set(seen) == {2}


def test_full_backward_hook_double_backward_matches_torch():
    torch = pytest.importorskip("torch")
    (a,) = _arrays([(4, 3)])
    results = []
    for lib, make in ((minidl, lambda a: minidl.tensor(a, dtype=minidl.float64)),
                      (torch, lambda a: torch.tensor(a, dtype=torch.float64))):
        lin = _hooked_linear(lib.nn, make)
        x = make(a)
        x.requires_grad = True
        (gx,) = (autograd if lib is minidl else torch.autograd).grad(
            lin(x.tanh()).tanh().sum(), [x], create_graph=True)
        (gx * gx).sum().backward()
        results.append([t.grad.numpy() for t in (x, lin.weight, lin.bias)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_grad_sync_node_passes_through():
    from minidl.nn.parallel import _GradSync

    assert gradgradcheck(lambda x: _GradSync.apply(x.tanh()).tanh(), _leaves(_arrays([(3, 2)])))


# ---- end to end: a WGAN-GP gradient penalty on a small CNN, against torch ------------------------
SHAPES = {"w1": (4, 3, 3, 3), "b1": (4,), "g1": (4,), "s1": (4,), "w2": (5, 4, 3, 3),
          "ln_w": (5, 2, 2), "ln_b": (5, 2, 2), "wl": (1, 5), "bl": (1,)}


def _critic(F, lib, x, p, ckpt):
    def block(h):
        h = F.conv2d(h, p["w1"], p["b1"], padding=1)
        h = F.batch_norm(h, None, None, p["g1"], p["s1"], training=True).tanh()
        return F.max_pool2d(h, 2)
    h = ckpt(block, x) if ckpt is not None else block(x)
    h = F.conv2d(h, p["w2"], stride=2, padding=1)
    h = F.layer_norm(h, (5, 2, 2), p["ln_w"], p["ln_b"]).tanh()
    h = F.avg_pool2d(h, 2).flatten(1)
    return F.linear(h, p["wl"], p["bl"])


def _penalty(F, lib, make, grad, ckpt):
    rng = np.random.default_rng(7)
    x = make(rng.standard_normal((3, 3, 8, 8)))
    p = {k: make(rng.standard_normal(s) * 0.5) for k, s in SHAPES.items()}
    out = _critic(F, lib, x, p, ckpt)
    (gx,) = grad(out.sum(), [x])
    norm = ((gx * gx).sum(dim=(1, 2, 3)) + 1e-12).sqrt()
    loss = out.mean() + 10 * ((norm - 1) ** 2).mean()
    loss.backward()
    return {k: t.grad.numpy() for k, t in p.items()} | {"x": x.grad.numpy()}


@pytest.mark.parametrize("use_checkpoint", [False, True], ids=["plain", "checkpoint"])
def test_gradient_penalty_cnn_matches_torch(use_checkpoint):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as TF
    import torch.utils.checkpoint as tcp

    def make(a):
        return torch.tensor(a, dtype=torch.float64, requires_grad=True)

    ours = _penalty(F, minidl, _minidl_make, _minidl_grad,
                    checkpoint if use_checkpoint else None)
    theirs = _penalty(TF, torch, make,
                      lambda y, xs: torch.autograd.grad(y, xs, create_graph=True),
                      (lambda f, h: tcp.checkpoint(f, h, use_reentrant=False))
                      if use_checkpoint else None)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-10, err_msg=k)


def test_second_backward_without_retain_graph():
    """The companions of the linear ops keep what they need: a second backward that frees the
    graph as it goes (no retain_graph) still gives the right gradients."""
    x = _leaves(_arrays([(1, 2, 5, 5)]))[0]
    y = F.pad(F.avg_pool2d(x.tanh(), 2, 1), (1, 1, 1, 1))
    (gx,) = autograd.grad((y * y).sum(), [x], create_graph=True)
    (gx * gx).sum().backward()
    first = x.grad.numpy().copy()
    x.grad = None
    y = F.pad(F.avg_pool2d(x.tanh(), 2, 1), (1, 1, 1, 1))
    (gx,) = autograd.grad((y * y).sum(), [x], create_graph=True)
    (gx * gx).sum().backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), first, rtol=1e-12)


def test_batch_norm_relu_gradgradcheck():
    # the fused minidl extension: the ReLU's mask is a constant of the second derivative
    def fn(x, w, b):
        return F.batch_norm_relu(x, None, None, w, b, training=True).tanh()
    assert gradgradcheck(fn, _leaves(_arrays([(4, 3, 2), (3,), (3,)])))


def test_layers_gradgradcheck():
    """The same ops reached through nn layers (running statistics updated on the way)."""
    nn = minidl.nn
    minidl.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(),
                        nn.MaxPool2d(2), nn.Conv2d(3, 2, 2, groups=1, dilation=1),
                        nn.Flatten(), nn.LayerNorm(2)).double()
    assert gradgradcheck(lambda x: net(x).tanh(), _leaves(_arrays([(2, 2, 4, 4)])))
