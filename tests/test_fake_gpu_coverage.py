"""The features added since 2026-12-05 on the strict fake GPU (tests/_fake_gpu.strict), against
the CPU on the same float64 data: in-place ops on tensors with views, the compressed sparse
layouts, minidl.vision.ops, minidl.fx, distributions / fft / special / signal, the depthwise and
1x1 convolutions, half-precision max pooling and ReLU, forward AD and minidl.func, and what
refuses the GPU as torch does (quantized models). Outputs and gradients must stay on "cuda" and
equal the CPU's; host copies are counted where the result's size depends on the data."""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

import minidl
import minidl.distributions as D
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.vision import ops as vops

import _fake_gpu

GUARDED = [
    "minidl.pointwise", "minidl.statistics", "minidl.structure", "minidl.sampling",
    "minidl.math_ops", "minidl.shape_ops", "minidl.products", "minidl.tensor",
    "minidl.tensor_functions", "minidl.autograd", "minidl.autograd.forward_ad", "minidl.func",
    "minidl.sparse_compressed", "minidl.backend.sparse_compressed", "minidl.backend.sparse",
    "minidl.sparse", "minidl.vision.ops", "minidl.fx.graph_module", "minidl.fx.interpreter",
    "minidl.fft", "minidl.special", "minidl.signal.windows", "minidl.distributions.distribution",
    "minidl.distributions.normal", "minidl.distributions.gamma", "minidl.distributions.beta",
    "minidl.distributions.dirichlet", "minidl.distributions.categorical",
    "minidl.distributions.multivariate_normal", "minidl.distributions._special",
    "minidl.distributions.utils", "minidl.nn._functional.convolution",
    "minidl.nn._functional.pooling", "minidl.nn._functional.activations", "minidl.creation",
]
MODULES = [importlib.import_module(m) for m in GUARDED]
MODULES = [m for m in MODULES if hasattr(m, "np")]


@pytest.fixture
def fake_gpu(monkeypatch, host_kernels):
    _fake_gpu.install(monkeypatch, host_kernels)


def _host(t):
    return t.detach().cpu().numpy() if isinstance(t, minidl.Tensor) else np.asarray(t)


def _agree(gpu, cpu, rtol=1e-9, atol=1e-11):
    gpu = list(gpu) if isinstance(gpu, (list, tuple)) else [gpu]
    cpu = list(cpu) if isinstance(cpu, (list, tuple)) else [cpu]
    assert len(gpu) == len(cpu)
    for g, c in zip(gpu, cpu):
        if isinstance(c, minidl.Tensor):
            assert isinstance(g, minidl.Tensor) and g.device == "cuda", getattr(g, "device", g)
            assert g.dtype == c.dtype and tuple(g.shape) == tuple(c.shape), (g.dtype, c.dtype)
        np.testing.assert_allclose(_host(g), _host(c), rtol=rtol, atol=atol)


def both(fn, syncs=0, rtol=1e-9, atol=1e-11):
    """``fn(device)`` -> results (tensors or arrays) on the CPU and on the strict fake GPU; they
    must agree and the GPU's stay on "cuda", with at most ``syncs`` host copies."""
    minidl.manual_seed(0)
    cpu = fn("cpu")
    minidl.manual_seed(0)
    with _fake_gpu.strict(*MODULES) as counted:
        gpu = fn("cuda")
    if os.environ.get("FAKE_GPU_SYNCS"):  # to see the counts while writing a test
        print("\nSYNCS", len(counted), counted)
    assert len(counted) <= syncs, f"{len(counted)} host copies: {counted}"
    _agree(gpu, cpu, rtol, atol)
    return counted


def _r(*shape, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape)


def _t(a, device, grad=False):
    return minidl.tensor(np.asarray(a), dtype=minidl.float64 if np.asarray(a).dtype.kind == "f"
                         else None, device=device, requires_grad=grad)


# ---- in-place ops on tensors that have views; as_strided rebasing --------------------------
X, W, U = _r(3, 4, seed=7), _r(3, 4, seed=8), _r(4, seed=9)
VIEWS = {
    "slice": lambda h: h[:, 1:3],
    "transpose": lambda h: h.transpose(0, 1),
    "diagonal": lambda h: h.diagonal(1),
    "expand": lambda h: h[1:2].expand(5, 4),
    "view_of_view": lambda h: h[1:].t()[2],
}
BASE_OPS = {
    "mul_grad": lambda h, w, u: h.mul_(w),
    "add_grad": lambda h, w, u: h.add_(u),
    "sin_": lambda h, w, u: h.sin_(),
    "setitem": lambda h, w, u: h.__setitem__(1, u * 3),
    "clamp_": lambda h, w, u: h.clamp_(-0.5, 0.7),
}


@pytest.mark.parametrize("op", list(BASE_OPS))
@pytest.mark.parametrize("view", list(VIEWS))
def test_inplace_on_a_base_with_views(fake_gpu, view, op):
    def run(device):
        x, w, u = (_t(a, device, True) for a in (X, W, U))
        h = x * 1.5 - 0.2
        v = VIEWS[view](h)
        other = h[2]
        BASE_OPS[op](h, w, u)
        loss = (h * h).sum() + (v * v.detach().cos()).sum() + (other * 3).sum()
        loss.backward()
        return [h, v, other, x.grad, w.grad if w.grad is not None else w * 0,
                u.grad if u.grad is not None else u * 0]
    both(run)


@pytest.mark.parametrize("op", ["mul_", "add_", "exp_", "copy_"])
def test_inplace_on_a_view_then_as_strided(fake_gpu, op):
    def run(device):
        x, w = _t(X, device, True), _t(W, device, True)
        h = x * 1.0
        v = h[1:, 1:3]
        {"mul_": lambda: v.mul_(w[1:, :2]), "add_": lambda: v.add_(w[:2, 2:]),
         "exp_": lambda: v.exp_(), "copy_": lambda: v.copy_(w[:2, :2] * 2)}[op]()
        s = minidl.as_strided(h, (2, 3), (4, 1), 1)
        s.mul_(3)
        (h.sin() * h).sum().backward()
        return [h, v, x.grad, w.grad if w.grad is not None else w * 0]
    both(run)


# ---- compressed sparse layouts (CSR, CSC, BSR, BSC) --------------------------------------
DENSE = _r(4, 6, seed=3) * (np.random.default_rng(4).uniform(size=(4, 6)) < 0.4)
DENSE[0, 0] = 1.5  # at least one stored element in each layout


@pytest.mark.parametrize("layout", ["csr", "csc", "bsr", "bsc"])
def test_compressed_round_trip_and_to_dense(fake_gpu, layout):
    def run(device):
        d = _t(DENSE, device)
        s = {"csr": lambda: d.to_sparse_csr(), "csc": lambda: d.to_sparse_csc(),
             "bsr": lambda: d.to_sparse_bsr((2, 3)), "bsc": lambda: d.to_sparse_bsc((2, 2))}[layout]()
        assert s.device == device and s.layout.name == f"sparse_{layout}"
        back = s.to("cpu").to(device)
        assert back.device == device and back.layout == s.layout
        return [s.to_dense(), back.to_dense(), s.values()]
    both(run, syncs=5)


def test_csr_constructor_mm_addmm_matmul_gradients(fake_gpu):
    def run(device):
        crow = minidl.tensor([0, 2, 3, 5], device=device)
        col = minidl.tensor([0, 2, 1, 0, 3], device=device)
        vals = _t(_r(5, seed=5), device, True)
        a = minidl.sparse_csr_tensor(crow, col, vals, (3, 4))
        assert a.device == device and a.layout == minidl.sparse_csr
        b = _t(_r(4, 2, seed=6), device, True)
        c = _t(_r(3, 2, seed=7), device, True)
        y1 = minidl.mm(a, b)
        y2 = minidl.addmm(c, a, b, beta=0.5, alpha=2.0)
        y3 = minidl.matmul(a, b)
        (y1.sin().sum() + (y2 * y2).sum() + y3.sum()).backward()
        return [y1, y2, y3, vals.grad, b.grad, c.grad]
    both(run, syncs=5)


def test_csr_of_a_gpu_tensor_converts_back_and_forth(fake_gpu):
    def run(device):
        d = _t(DENSE, device, True)
        s = d.to_sparse_csr()
        y = minidl.sparse.mm(s, _t(_r(6, 3, seed=2), device)) if hasattr(minidl.sparse, "mm") \
            else minidl.mm(s, _t(_r(6, 3, seed=2), device))
        y.sum().backward()
        return [y, d.grad, s.to_sparse_csc().to_dense(), s.to_sparse().to_dense()]
    both(run, syncs=5)


# ---- minidl.vision.ops ---------------------------------------------------------------------
BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 19, 29, 31],
                  [0, 0, 9, 10], [50, 50, 60, 55]], dtype=np.float64)
SCORES = np.array([0.9, 0.8, 0.7, 0.95, 0.85, 0.1])
CLASSES = np.array([0, 0, 1, 1, 1, 0])


def test_nms_and_batched_nms(fake_gpu):
    from minidl.vision import ops

    def run(device):
        b, s = _t(BOXES, device), _t(SCORES, device)
        keep = ops.nms(b, s, 0.5)
        bkeep = ops.batched_nms(b, s, minidl.tensor(CLASSES, device=device), 0.5)
        assert keep.dtype == np.int64 and bkeep.dtype == np.int64
        return [keep, bkeep]
    # the kept count depends on the data: the boxes and scores come to the host once (as
    # torchvision's CUDA kernel, whose mask is read back)
    both(run, syncs=5)


def test_box_iou_and_losses(fake_gpu):
    from minidl.vision import ops

    def run(device):
        a = _t(BOXES, device, True)
        b = _t(BOXES[::-1] + 0.5, device, True)
        iou = ops.box_iou(a, b)
        giou = ops.generalized_box_iou(a, b)
        loss = ops.complete_box_iou_loss(a, b, reduction="sum")
        (iou.sum() + giou.sum() + loss).backward()
        return [iou, giou, loss, a.grad, b.grad]
    both(run)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align(fake_gpu, aligned):
    from minidl.vision import ops

    rois = np.array([[0, 0.5, 0.5, 5.5, 4.0], [1, 2.0, 1.0, 7.5, 7.5], [0, 3.0, 3.0, 3.5, 6.0]])

    def run(device):
        x = _t(_r(2, 3, 8, 8, seed=11), device, True)
        y = ops.roi_align(x, _t(rois, device), (3, 2), spatial_scale=1.0, sampling_ratio=-1,
                          aligned=aligned)
        (y * y).sum().backward()
        return [y, x.grad]
    both(run, syncs=1)


def test_roi_pool(fake_gpu):
    from minidl.vision import ops

    rois = np.array([[0, 0.5, 0.5, 5.5, 4.0], [1, 2.0, 1.0, 7.5, 7.5]])

    def run(device):
        x = _t(_r(2, 3, 8, 8, seed=12), device, True)
        y = ops.roi_pool(x, [_t(rois[:1, 1:], device), _t(rois[1:, 1:], device)], 2)
        (y * y).sum().backward()
        return [y, x.grad]
    # the boxes come to the host (one copy per image) and the bins' winners back once
    both(run, syncs=4)


# ---- minidl.fx -------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        y = F.relu(self.conv(x)).mean(1)
        return self.fc(y.flatten(1)).softmax(-1) + x.sum()


def test_fx_graph_module_moved_to_cuda(fake_gpu):
    from minidl import fx

    def run(device):
        minidl.manual_seed(0)
        gm = fx.symbolic_trace(_Net().double())
        gm = gm.to(device)
        x = _t(_r(2, 2, 4, 3, seed=13), device, True)
        y = gm(x)
        y.pow(2).sum().backward()
        interp = fx.Interpreter(gm).run(x)
        return [y, interp, x.grad, gm.conv.weight.grad, gm.fc.bias.grad]
    both(run)


# ---- distributions, fft, special, signal ----------------------------------------------------
def _dists(D, device, validate):
    loc = _t(_r(3, seed=20), device, True)
    scale = _t(_r(3, seed=21, lo=0.5, hi=2.0), device, True)
    conc = _t(_r(3, seed=22, lo=0.5, hi=3.0), device, True)
    tril = _t(np.tril(_r(3, 3, seed=23)) + 3 * np.eye(3), device, True)
    v = {"validate_args": validate}
    return [loc, scale, conc, tril], {
        "Normal": lambda: D.Normal(loc, scale, **v), "Laplace": lambda: D.Laplace(loc, scale, **v),
        "Gamma": lambda: D.Gamma(conc, scale, **v), "Beta": lambda: D.Beta(conc, scale, **v),
        "Dirichlet": lambda: D.Dirichlet(conc, **v),
        "StudentT": lambda: D.StudentT(conc + 1, loc, scale, **v),
        "MultivariateNormal": lambda: D.MultivariateNormal(loc, scale_tril=tril, **v),
        "LogNormal": lambda: D.LogNormal(loc, scale, **v),
        "Uniform": lambda: D.Uniform(loc - 3, loc + scale, **v),
    }


# the families whose rsample is a fixed transform of minidl's normal or uniform draws, which
# the fake GPU draws as the CPU does: their samples agree too
SAME_DRAWS = ("Normal", "Laplace", "LogNormal", "Uniform", "MultivariateNormal")


@pytest.mark.parametrize("name", ["Normal", "Laplace", "Gamma", "Beta", "Dirichlet", "StudentT",
                                  "MultivariateNormal", "LogNormal", "Uniform"])
def test_distribution_log_prob_and_rsample_gradients(fake_gpu, name):
    def run(device):
        params, dists = _dists(D, device, validate=False)
        d = dists[name]()
        v = d.sample((4,))
        assert v.device == device and not v.requires_grad
        lp = d.log_prob(v.mean(0))
        r = d.rsample((5,))
        (lp.sum() + r.sin().sum() + d.entropy().sum()).backward()
        return [v, r, lp, d.entropy()] + [p.grad for p in params if p.grad is not None]
    if name in SAME_DRAWS:  # without argument checks: no host copy at all
        both(run, rtol=1e-7, atol=1e-9)
    # every family, with torch's argument checks (each a host copy, as torch's on CUDA): runs
    # under strict and stays on the device
    with _fake_gpu.strict(*MODULES):
        params, dists = _dists(D, "cuda", validate=True)
        d = dists[name]()
        r = d.rsample((5,))
        lp = d.log_prob(r.detach())
        (lp.sum() + r.sum()).backward()
        assert r.device == lp.device == "cuda"
        assert all(p.grad.device == "cuda" for p in params if p.grad is not None)
        assert any(p.grad is not None for p in params)


def test_categorical_and_bernoulli_sample_on_device(fake_gpu):
    def run(device):
        logits = _t(_r(4, 5, seed=24), device, True)
        c = D.Categorical(logits=logits, validate_args=False)
        s = c.sample((3,))
        assert s.device == device and s.shape == (3, 4)
        b = D.Bernoulli(logits=logits, validate_args=False)
        lp = c.log_prob(minidl.tensor([0, 1, 4, 2], device=device)) + \
            b.log_prob(_t((_r(4, 5, seed=25) > 0).astype(np.float64), device)).sum(-1)
        lp.sum().backward()
        return [lp, c.entropy(), logits.grad]
    both(run, syncs=1)  # log_prob's gather checks its index's bounds on the host


def test_fft_and_signal_windows(fake_gpu):
    from minidl import fft
    from minidl.signal import windows

    def run(device):
        x = _t(_r(3, 8, seed=26), device, True)
        f = fft.rfft(x * windows.hann(8, dtype=minidl.float64, device=device))
        z = fft.ifft(fft.fft2(x.to(minidl.complex128)))
        (f.abs().sum() + z.real.sum()).backward()
        w = [windows.gaussian(7, std=1.5, dtype=minidl.float64, device=device),
             windows.kaiser(9, beta=4.0, dtype=minidl.float64, device=device),
             minidl.hann_window(6, dtype=minidl.float64, device=device)]
        return [f.abs(), z.real, x.grad] + w
    both(run)


def test_special_functions(fake_gpu):
    from minidl import special

    def run(device):
        x = _t(_r(3, 8, seed=26, lo=-4, hi=4), device, True)
        s = special.erfcx(x) + special.log_ndtr(x) + special.i0e(x) + \
            special.xlog1py(x, x.abs()) + special.ndtr(x) + special.erf(x)
        s.sum().backward()
        return [s, x.grad]
    # float64 erf/erfc/erfcx take their two ranges as masked parts, each behind a host any()
    # (a branch-free form would evaluate the 200-level continued fraction everywhere: more
    # launches than the copies it saves); this bound keeps the count from growing
    both(run, syncs=36, rtol=1e-8, atol=1e-10)


# ---- convolutions: depthwise and 1x1 ------------------------------------------------------
@pytest.mark.parametrize("kind", ["depthwise", "pointwise", "pointwise-strided"])
def test_depthwise_and_pointwise_conv(fake_gpu, kind):
    def run(device):
        x = _t(_r(2, 4, 7, 6, seed=30), device, True)
        if kind == "depthwise":
            w = _t(_r(8, 1, 3, 3, seed=31), device, True)
            y = F.conv2d(x, w, _t(_r(8, seed=32), device), padding=1, stride=(1, 2), groups=4)
        else:
            w = _t(_r(5, 4, 1, 1, seed=31), device, True)
            y = F.conv2d(x, w, _t(_r(5, seed=32), device), stride=2 if "strided" in kind else 1)
        (y * y.detach().cos()).sum().backward()
        return [y, x.grad, w.grad]
    both(run)


# ---- half-precision max pooling and ReLU --------------------------------------------------
POOLS = {"2x2": dict(kernel_size=2, stride=2), "3x3-pad-ceil": dict(
    kernel_size=3, stride=2, padding=1, ceil_mode=True), "3x2-dilated": dict(
    kernel_size=(3, 2), stride=1, dilation=(1, 2))}


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_max_pool_and_relu(fake_gpu, dtype, pool):
    dt = getattr(minidl, dtype)

    def run(device):
        x = minidl.tensor(_r(2, 3, 7, 6, seed=33), device=device).to(dt).requires_grad_()
        y, idx = F.max_pool2d(F.relu(x), return_indices=True, **POOLS[pool])
        z = F.relu(x * 2)
        h = (x * 1).relu_()
        (y.float().sum() + (z.float() * 3).sum() + (h.float() * 2).sum()).backward()
        assert y.dtype == dt and x.grad.dtype == dt
        return [y.float(), idx, z.float(), h.float(), x.grad.float()]
    both(run, rtol=0, atol=0)


# ---- forward AD and minidl.func ----------------------------------------------------------------
def test_forward_ad_through_inplace_and_views(fake_gpu):
    import minidl.autograd.forward_ad as fwAD

    def run(device):
        with fwAD.dual_level():
            x = fwAD.make_dual(_t(X, device), _t(W, device))
            h = x * 1.0
            h[1:, :2].mul_(x[:2, 1:3])
            y = (h.sin() * x).softmax(-1).cumsum(1)
            p, t = fwAD.unpack_dual(y)
        return [p, t]
    both(run)


def test_func_grad_vmap_jacrev_functional_call(fake_gpu):
    from minidl import func

    def run(device):
        minidl.manual_seed(0)
        lin = nn.Linear(4, 3).double().to(device)
        params = {k: v.detach() for k, v in lin.named_parameters()}
        x = _t(_r(5, 4, seed=34), device)

        def loss(p, xi):
            return func.functional_call(lin, p, (xi,)).tanh().sum()

        g = func.grad(loss)(params, x)
        per_sample = func.vmap(func.grad(loss), in_dims=(None, 0))(params, x)
        jac = func.jacrev(lambda v: (v.sin() * v).cumsum(0))(x[0])
        jf = func.jacfwd(lambda v: v.exp() * v[0])(x[1])
        _, tangent = func.jvp(lambda v: v.cos(), (x[2],), (x[3],))
        return [g["weight"], g["bias"], per_sample["weight"], jac, jf, tangent]
    both(run)


# ---- quantization: CPU only, as in torch ----------------------------------------------------
def test_quantized_model_refuses_cuda_clearly(fake_gpu):
    from minidl.ao import quantization as Q

    model = nn.Sequential(Q.QuantStub(), nn.Linear(4, 3), nn.ReLU(), Q.DeQuantStub())
    model.qconfig = Q.get_default_qconfig()
    Q.prepare(model, inplace=True)
    model(minidl.randn(8, 4))
    Q.convert(model, inplace=True)
    x = minidl.randn(2, 4)
    expect = model(x).numpy()
    with pytest.raises(NotImplementedError, match="CPU-only .* got a tensor on cuda"):
        model.to("cuda")(x.to("cuda"))
    np.testing.assert_array_equal(model.to("cpu")(x).numpy(), expect)
    with pytest.raises(NotImplementedError, match="CPU-only .* got a tensor on cuda"):
        minidl.quantize_per_tensor(x.to("cuda"), 0.1, 0, minidl.quint8)


# ---- nn layers added lately -------------------------------------------------------------------
LAYERS = [
    ("LPPool2d", lambda: nn.LPPool2d(2.0, 2), (2, 3, 6, 6), 0),
    ("PReLU", lambda: nn.PReLU(3), (2, 3, 4), 0),
    ("Hardswish", lambda: nn.Hardswish(), (2, 3, 4), 0),
    ("GroupNorm", lambda: nn.GroupNorm(2, 4), (2, 4, 5), 0),
    ("InstanceNorm2d", lambda: nn.InstanceNorm2d(3, affine=True), (2, 3, 4, 4), 0),
    ("RMSNorm", lambda: nn.RMSNorm(5), (2, 3, 5), 0),
    ("MultiheadAttention", lambda: _SelfAttention(), (2, 5, 8), 0),
    ("TransformerEncoderLayer", lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                                    batch_first=True), (2, 5, 8), 0),
    ("Unflatten", lambda: nn.Sequential(nn.Unflatten(1, (2, 6)), nn.Flatten()), (3, 12), 0),
    ("PairwiseDistance", lambda: _Halves(nn.PairwiseDistance(p=3.0)), (4, 6), 0),
    ("CosineSimilarity", lambda: _Halves(nn.CosineSimilarity(dim=1)), (4, 6), 0),
    ("ConvTranspose2d", lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1,
                                                   output_padding=1), (1, 3, 4, 4), 0),
    ("Conv1d-depthwise", lambda: nn.Conv1d(4, 8, 3, groups=4, padding=1), (2, 4, 9), 0),
    ("PixelShuffle", lambda: nn.PixelShuffle(2), (1, 8, 3, 3), 0),
    ("Upsample", lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 3, 3), 0),
    ("LocalResponseNorm", lambda: nn.LocalResponseNorm(3), (1, 5, 3, 3), 0),
    ("GLU", lambda: nn.GLU(), (3, 8), 0),
    ("Mish", lambda: nn.Mish(), (3, 8), 0),
    ("GRU", lambda: _First(nn.GRU(4, 5, batch_first=True)), (2, 3, 4), 0),
    ("LSTM", lambda: _First(nn.LSTM(4, 5, batch_first=True, proj_size=3)), (2, 3, 4), 0),
    # the clusters' members are data (nonzero): copies in torch too
    ("AdaptiveLogSoftmaxWithLoss", lambda: _ALS(), (6, 8), 4),
    # a gather's index computed on the device: one flag read back for its bounds check
    ("MultiMarginLoss", lambda: _Loss(nn.MultiMarginLoss(), [0, 2, 1, 3]), (4, 5), 1),
    ("MultiLabelMarginLoss", lambda: _Loss(nn.MultiLabelMarginLoss(),
                                           [[3, 0, -1, 1, 1], [1, 2, 3, -1, 0], [0, -1, 1, 1, 1],
                                            [4, 1, -1, 0, 0]]), (4, 5), 2),
]


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=True)[0]


class _Halves(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x[:, :3], x[:, 3:])


class _First(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[0]


class _ALS(nn.Module):
    def __init__(self):
        super().__init__()
        self.als = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4, 7], div_value=2.0)

    def forward(self, x):
        target = minidl.tensor([0, 5, 9, 3, 7, 1], device=x.device)
        out = self.als(x, target)
        return out.output + out.loss + self.als.log_prob(x).sum(1)


class _Loss(nn.Module):
    def __init__(self, loss, target):
        super().__init__()
        self.loss, self.target = loss, np.asarray(target, dtype=np.int64)

    def forward(self, x):
        return self.loss(x, minidl.tensor(self.target, device=x.device))


@pytest.mark.parametrize("name,make,shape,syncs", LAYERS, ids=[c[0] for c in LAYERS])
def test_recent_layers(fake_gpu, name, make, shape, syncs):
    def run(device):
        minidl.manual_seed(0)
        m = make().double().to(device)
        x = _t(_r(*shape, seed=40), device, True)
        y = m(x)
        (y * y.detach().cos()).sum().backward()
        return [y, x.grad] + [p.grad for p in m.parameters() if p.grad is not None]
    both(run, syncs=syncs)


COMPRESSED_OPS = {
    "csr@csr": lambda a, b, d: minidl.mm(a, b.to_sparse_csr()).to_dense(),
    "add": lambda a, b, d: (a + a * 2).to_dense(),
    "sum": lambda a, b, d: a.sum() + a.sum(1, keepdim=True).to_dense().sum(),
    "sampled_addmm": lambda a, b, d: minidl.sparse.sampled_addmm(a, d[:, :2], b.t()[:2]),
    "mm-reduce": lambda a, b, d: minidl.sparse.mm(a, b, "mean"),
    "transpose": lambda a, b, d: a.t().to_dense(),
    "unary": lambda a, b, d: a.sin().to_dense() + a.relu().to_dense(),
    "linear": lambda a, b, d: F.linear(d, a),
}


@pytest.mark.parametrize("op", list(COMPRESSED_OPS))
def test_compressed_ops(fake_gpu, op):
    def run(device):
        dense = _t(DENSE[:3, :4], device, True)
        a = dense.to_sparse_csr()
        b = _t(_r(4, 3, seed=41), device, True)
        d = _t(_r(3, 4, seed=42), device, True)
        y = COMPRESSED_OPS[op](a, b, d)
        y = y.to_dense() if y.layout != minidl.strided else y
        (y * y).sum().backward()
        return [y] + [t.grad for t in (dense, b, d) if t.grad is not None]
    # to_sparse_csr's nnz is data (a copy in torch too); a sparse @ sparse product's pattern
    # too, forward and backward
    both(run, syncs=17 if op == "csr@csr" else 4)


def test_quantization_aware_training_on_the_device(fake_gpu):
    """QAT runs on CUDA in torch: fake quantization and its observers on the device, the same
    steps as on the CPU; the trained model converts on the CPU (quantized kernels are CPU-only)."""
    from minidl.ao import quantization as Q

    models = {}

    def run(device):
        minidl.manual_seed(0)
        model = nn.Sequential(Q.QuantStub(), nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(12, 4), Q.DeQuantStub())
        model.qconfig = Q.get_default_qat_qconfig()
        model.train()
        Q.prepare_qat(model, inplace=True)
        model.to(device)
        opt = minidl.optim.SGD(model.parameters(), lr=0.1)
        x = minidl.tensor(_r(5, 2, 4, 4, seed=50).astype(np.float32), device=device)
        outs = []
        for _ in range(2):
            opt.zero_grad()
            y = model(x)
            y.pow(2).mean().backward()
            opt.step()
            outs.append(y)
        models[device] = model
        return outs + [model[1].weight, model[4].weight]
    # per fake-quantize module and step: its two switches read (as torch's `if
    # self.observer_enabled[0] == 1`), the batch's min/max read back (reduced on the device: a
    # few numbers), and the observer's state (eps, running min/max), which it keeps as host
    # tensors, read where .to(device) had moved it; none copies an activation
    both(run, syncs=50, rtol=1e-5, atol=1e-6)
    x = minidl.tensor(_r(5, 2, 4, 4, seed=50).astype(np.float32))
    q_cpu = Q.convert(models["cpu"].eval())(x)
    q_gpu = Q.convert(models["cuda"].cpu().eval())(x)
    np.testing.assert_allclose(q_gpu.numpy(), q_cpu.numpy(), rtol=1e-5, atol=1e-6)


# every distribution family: sample and log_prob on the device under strict (with torch's
# argument checks, each a host copy as in torch)
FAMILIES = {  # name -> make(t, probs, positives, locations)
 "Bernoulli": lambda t, p3, pos, loc: D.Bernoulli(probs=p3), "Binomial": lambda t, p3, pos, loc: D.Binomial(5, probs=p3),
 "Poisson": lambda t, p3, pos, loc: D.Poisson(pos), "NegativeBinomial": lambda t, p3, pos, loc: D.NegativeBinomial(3.0, probs=p3),
 "Geometric": lambda t, p3, pos, loc: D.Geometric(probs=p3), "Multinomial": lambda t, p3, pos, loc: D.Multinomial(4, probs=p3),
 "VonMises": lambda t, p3, pos, loc: D.VonMises(loc, pos), "Wishart": lambda t, p3, pos, loc: D.Wishart(t(5.0), covariance_matrix=t(np.eye(3) * 2)),
 "LKJCholesky": lambda t, p3, pos, loc: D.LKJCholesky(3, t(1.5)), "Kumaraswamy": lambda t, p3, pos, loc: D.Kumaraswamy(pos, pos),
 "Chi2": lambda t, p3, pos, loc: D.Chi2(pos), "FisherSnedecor": lambda t, p3, pos, loc: D.FisherSnedecor(pos, pos),
 "Weibull": lambda t, p3, pos, loc: D.Weibull(pos, pos), "Pareto": lambda t, p3, pos, loc: D.Pareto(pos, pos),
 "Gumbel": lambda t, p3, pos, loc: D.Gumbel(loc, pos), "HalfCauchy": lambda t, p3, pos, loc: D.HalfCauchy(pos), "Cauchy": lambda t, p3, pos, loc: D.Cauchy(loc, pos),
 "ContinuousBernoulli": lambda t, p3, pos, loc: D.ContinuousBernoulli(p3), "RelaxedBernoulli": lambda t, p3, pos, loc: D.RelaxedBernoulli(t(0.5), probs=p3),
 "RelaxedOneHotCategorical": lambda t, p3, pos, loc: D.RelaxedOneHotCategorical(t(0.5), probs=p3),
 "OneHotCategorical": lambda t, p3, pos, loc: D.OneHotCategorical(probs=p3), "InverseGamma": lambda t, p3, pos, loc: D.InverseGamma(pos, pos),
 "LowRankMultivariateNormal": lambda t, p3, pos, loc: D.LowRankMultivariateNormal(loc, t(np.ones((3, 1))), pos),
 "LogisticNormal": lambda t, p3, pos, loc: D.LogisticNormal(loc, pos), "HalfNormal": lambda t, p3, pos, loc: D.HalfNormal(pos),
 "GeneralizedPareto": lambda t, p3, pos, loc: D.GeneralizedPareto(loc, pos, t([0.1, 0.2, -0.1])),
 "Exponential": lambda t, p3, pos, loc: D.Exponential(pos), "MixtureSameFamily": lambda t, p3, pos, loc: D.MixtureSameFamily(D.Categorical(probs=p3), D.Normal(loc, pos)),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_distribution_family_samples_on_the_device(fake_gpu, name):
    def t(a):
        return minidl.tensor(np.asarray(a, dtype=np.float64), device="cuda")

    with _fake_gpu.strict(*MODULES):
        d = FAMILIES[name](t, t([0.2, 0.5, 0.7]), t([0.5, 1.5, 3.0]), t([0.1, -0.3, 1.0]))
        s = d.sample((2,))
        lp = d.log_prob(s)
    assert s.device == "cuda" and lp.device == "cuda"
    assert np.isfinite(lp.numpy()).all(), lp


# ---- vision transforms on device tensors ----------------------------------------------------
TRANSFORMS = {
    "resize": lambda TF, x: TF.resize(x, [5, 7]),
    "resize-bicubic": lambda TF, x: TF.resize(x, [9, 4], interpolation=TF.InterpolationMode.BICUBIC),
    "normalize": lambda TF, x: TF.normalize(x, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]),
    "center_crop": lambda TF, x: TF.center_crop(x, [4, 5]),
    "pad-reflect": lambda TF, x: TF.pad(x, [1, 2], padding_mode="reflect"),
    "flips": lambda TF, x: TF.hflip(TF.vflip(x)),
    "grayscale": lambda TF, x: TF.rgb_to_grayscale(x, 3),
    "color": lambda TF, x: TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(
        TF.adjust_brightness(x, 1.2), 0.8), 1.3), 0.1),
    "rotate": lambda TF, x: TF.rotate(x, 30.0, interpolation=TF.InterpolationMode.BILINEAR),
    "affine": lambda TF, x: TF.affine(x, 10.0, [1, -1], 1.1, [5.0, 0.0]),
    "gaussian_blur": lambda TF, x: TF.gaussian_blur(x, [3, 5], [0.8, 1.2]),
    "erase": lambda TF, x: TF.erase(x, 1, 2, 3, 2, 0.5),
    "sharpness": lambda TF, x: TF.adjust_sharpness(x, 1.7),
    "gamma": lambda TF, x: TF.adjust_gamma(x, 0.8, 1.1),
    "autocontrast": lambda TF, x: TF.autocontrast(x),
    "invert-solarize": lambda TF, x: TF.solarize(TF.invert(x), 0.6),
    "convert_dtype": lambda TF, x: TF.convert_image_dtype(x, minidl.uint8),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_vision_transforms_on_device_tensors(fake_gpu, name):
    from minidl.vision.transforms import functional as TF

    def run(device):
        x = _t(_r(3, 8, 9, seed=60, lo=0.0, hi=1.0), device)
        return [TRANSFORMS[name](TF, x)]
    # rotate and affine warp with Pillow, on the host (torchvision: grid_sample on the device)
    both(run, syncs=1 if name in ("rotate", "affine") else 0)


FWD_OPS = {
    "conv2d": lambda x, w: F.conv2d(x, w, padding=1),
    "conv-depthwise": lambda x, w: F.conv2d(x, w[:2, :1].repeat(1, 1, 1, 1), groups=2),
    "max_pool": lambda x, w: F.max_pool2d(x, 2),
    "layer_norm": lambda x, w: F.layer_norm(x, (4,)),
    "batch_norm": lambda x, w: F.batch_norm(x, None, None, training=True),
    "softmax-logsumexp": lambda x, w: x.softmax(-1) + x.logsumexp(1, keepdim=True),
    "gelu-silu": lambda x, w: F.gelu(x) * F.silu(x),
    "interpolate": lambda x, w: F.interpolate(x, scale_factor=2, mode="bilinear"),
    "matmul": lambda x, w: x @ x.transpose(-1, -2),
}


@pytest.mark.parametrize("op", list(FWD_OPS))
def test_forward_ad_ops(fake_gpu, op):
    import minidl.autograd.forward_ad as fwAD

    def run(device):
        w = _t(_r(3, 2, 3, 3, seed=70), device)
        with fwAD.dual_level():
            x = fwAD.make_dual(_t(_r(2, 2, 4, 4, seed=71), device),
                               _t(_r(2, 2, 4, 4, seed=72), device))
            p, t = fwAD.unpack_dual(FWD_OPS[op](x, w))
        return [p, t]
    both(run, syncs=3 if op == "gelu-silu" else 0)  # float64 erf: see test_special_functions


def test_vmap_over_conv_and_jacfwd_of_a_net(fake_gpu):
    from minidl import func

    def run(device):
        minidl.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(48, 2)).double().to(device)
        x = _t(_r(5, 2, 4, 4, seed=73), device)
        per = func.vmap(lambda xi: net(xi.unsqueeze(0)).squeeze(0))(x)
        params = {k: v.detach() for k, v in net.named_parameters()}
        jac = func.jacfwd(lambda p: func.functional_call(net, p, (x[:2],)))(params)
        hess = func.hessian(lambda v: (v.sin() * v).sum())(x[0, 0, 0])
        return [per, jac["0.weight"], jac["3.bias"], hess]
    both(run)


def test_fx_shape_prop_and_transformer_on_the_device(fake_gpu):
    from minidl import fx
    from minidl.fx.passes.shape_prop import ShapeProp

    def run(device):
        minidl.manual_seed(0)
        gm = fx.symbolic_trace(_Net().double()).to(device)
        x = _t(_r(2, 2, 4, 3, seed=74), device)
        ShapeProp(gm).propagate(x)
        metas = [n.meta["tensor_meta"] for n in gm.graph.nodes if "tensor_meta" in n.meta]
        assert len(metas) >= 5 and tuple(metas[0].shape) == (2, 2, 4, 3)
        moved = fx.Transformer(gm).transform()
        return [moved(x), gm(x)]
    both(run)


# ---- the device of created tensors ------------------------------------------------------------
CREATED = {  # name -> (make(device), host copies allowed)
    "fftfreq": (lambda d: minidl.fft.fftfreq(5, device=d), 0),
    "rfftfreq": (lambda d: minidl.fft.rfftfreq(6, 0.5, device=d), 0),
    "kaiser_window": (lambda d: minidl.kaiser_window(6, device=d), 0),
    "tril_indices": (lambda d: minidl.tril_indices(3, 3, device=d), 0),
    "coo-from-lists": (lambda d: minidl.sparse_coo_tensor(
        [[0, 1], [1, 0]], [1.0, 2.0], (2, 2), device=d).to_dense(), 2),
    "csr-from-lists": (lambda d: minidl.sparse_csr_tensor(
        [0, 1, 2], [1, 0], [1.0, 2.0], (2, 2), device=d).to_dense(), 5),
    "bsr-from-lists": (lambda d: minidl.sparse_bsr_tensor(
        [0, 1], [0], np.ones((1, 2, 2)), (2, 2), device=d).to_dense(), 4),
    "nms-empty": (lambda d: vops.nms(
        minidl.zeros(0, 4, device=d), minidl.zeros(0, device=d), 0.5), 2),
    "roi_align-empty": (lambda d: vops.roi_align(
        minidl.ones(1, 2, 4, 4, device=d), minidl.zeros(0, 5, device=d), 2), 1),
    "masks_to_boxes": (lambda d: vops.masks_to_boxes(
        minidl.tensor(np.eye(4)[None] > 0, device=d)), 1),
    "init.dirac_": (lambda d: nn.init.dirac_(minidl.empty(2, 2, 3, 3, device=d)), 0),
    "init.eye_": (lambda d: nn.init.eye_(minidl.empty(3, 4, device=d)), 0),
    "istft": (lambda d: minidl.istft(minidl.stft(
        minidl.ones(64, device=d, dtype=minidl.float64), 16,
        window=minidl.hann_window(16, device=d, dtype=minidl.float64), return_complex=True), 16,
        window=minidl.hann_window(16, device=d, dtype=minidl.float64)), 1),
}


@pytest.mark.parametrize("name", list(CREATED))
def test_created_tensors_are_on_the_asked_device(fake_gpu, name):
    make, syncs = CREATED[name]
    both(lambda device: [make(device)], syncs=syncs)


@pytest.mark.parametrize("make", [
    lambda: minidl.randperm(5, device="cuda"), lambda: minidl.randint(0, 5, (3,), device="cuda"),
    lambda: nn.init.orthogonal_(minidl.empty(3, 4, device="cuda")),
    lambda: nn.init.trunc_normal_(minidl.empty(3, 4, device="cuda")),
    lambda: nn.init.sparse_(minidl.empty(4, 3, device="cuda"), 0.5),
], ids=["randperm", "randint", "orthogonal_", "trunc_normal_", "sparse_"])
def test_random_creation_on_the_device(fake_gpu, make):
    with _fake_gpu.strict(*MODULES) as counted:
        out = make()
    assert out.device == "cuda" and counted == []


FUNCTIONAL = {  # name -> (fn(device) -> outputs, host copies allowed)
    "linear_cross_entropy": (lambda d, x, w: [F.linear_cross_entropy(
        x[0, 0], w[0, 0, :3] * 1.0, minidl.tensor([0, 2, 1, 0], device=d))], 0),
    "conv_tbc": (lambda d, x, w: [F.conv_tbc(x[0], w[:2, 0], w[0, 0, 0] * 1.0, pad=1)], 0),
    "bilinear": (lambda d, x, w: [F.bilinear(x[0, 0], x[1, 0], w[:2, 0, :4, :4] * 1.0)], 0),
    "fractional_max_pool2d": (lambda d, x, w: [F.fractional_max_pool2d(
        x, 2, output_size=(3, 3), _random_samples=_t(np.full((2, 3, 2), 0.4), d))], 2),
    # (the window starts are planned on the host from the samples; a NaN check reads a flag)
    "pack_padded_lstm": (lambda d, x, w: _packed_lstm(d, x), 0),
}


def _packed_lstm(device, x):
    from minidl.nn.utils import rnn as rnn_utils

    minidl.manual_seed(0)
    lstm = nn.LSTM(4, 3, batch_first=True).double().to(device)
    seqs = x[:, :, 0]  # (2, 3, 4)... as (batch 2, time 3, features 4)
    packed = rnn_utils.pack_padded_sequence(seqs, minidl.tensor([3, 2]), batch_first=True)
    out, (h, c) = lstm(packed)
    padded, lengths = rnn_utils.pad_packed_sequence(out, batch_first=True)
    return [padded, h, c]


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_more_functional_ops(fake_gpu, name):
    fn, syncs = FUNCTIONAL[name]

    def run(device):
        x = _t(_r(2, 3, 4, 4, seed=80), device, True)
        w = _t(_r(3, 3, 4, 4, seed=81), device, True)
        outs = fn(device, x, w)
        sum((o * o).sum() for o in outs).backward()
        return outs + [x.grad, w.grad if w.grad is not None else w * 0]
    both(run, syncs=syncs)


# ---- what the fake gained for these tests ---------------------------------------------------
def test_the_fake_runs_16_bit_kernels_in_float32_and_copies_0d_values_on_the_device(fake_gpu):
    import ml_dtypes

    from minidl.backend import cuda

    cp = minidl.backend.cupy_module()
    x = np.random.default_rng(90).standard_normal(50).astype(np.float32) * 300
    x[:3] = [np.inf, np.nan, 1 + 2 ** -9]
    for low in (np.float16, ml_dtypes.bfloat16):
        got = cuda.astype(cp.asarray(x), low)
        assert got.dtype == low
        np.testing.assert_array_equal(got.view(np.ndarray).view(np.uint16),
                                      x.astype(low).view(np.uint16))  # round to nearest even
    a = cp.asarray(np.zeros(3))
    assert a.data.ptr == a.__array_interface__["data"][0]  # CuPy's MemoryPointer.ptr
    with _fake_gpu.strict() as counted:
        a[1] = a.sum() + 2.0  # a 0-d device value: copied on the device, not through float()
    assert counted == [] and a.tolist() == [0.0, 2.0, 0.0]


@pytest.mark.parametrize("fmt", ["minidl", "torch"])
@pytest.mark.parametrize("layout", ["coo", "csr", "bsc"])
def test_sparse_gpu_tensors_save_and_load_onto_the_device(fake_gpu, tmp_path, layout, fmt):
    dense = DENSE[:, :4]
    t = _t(dense, "cuda")
    t = {"coo": t.to_sparse, "csr": t.to_sparse_csr, "bsc": lambda: t.to_sparse_bsc((2, 2))}[layout]()
    path = tmp_path / "s.pt"
    minidl.save(t, path, **({} if fmt == "minidl" else {"format": "torch"}))
    back = minidl.load(path, map_location="cuda")
    assert back.device == "cuda" and back.layout == t.layout
    np.testing.assert_array_equal(back.to_dense().numpy(), dense)
    assert minidl.load(path).device == "cpu"


def test_a_1d_integer_sparse_tensor_moves_to_the_device(fake_gpu):
    s = minidl.tensor(np.array([0, 3, 0, 5])).to_sparse()
    g = s.to("cuda")
    assert g.device == "cuda" and g.layout == minidl.sparse_coo
    assert g.to_dense().tolist() == [0, 3, 0, 5] and g.cpu().device == "cpu"


def test_recent_nn_utilities_on_the_device(fake_gpu):
    """fuse_conv_bn_eval, pruning, nn.grad, the padding modules, lazy and SyncBatchNorm
    (one process) on the device."""
    from minidl.nn.utils import prune

    def run(device):
        minidl.manual_seed(0)
        conv = nn.Conv2d(2, 3, 3).double().to(device)
        bn = nn.BatchNorm2d(3).double().to(device).eval()
        bn.running_mean.data = minidl.tensor(np.arange(3.0), device=device).data
        x = _t(_r(2, 2, 5, 5, seed=90), device)
        out = [nn.utils.fuse_conv_bn_eval(conv.eval(), bn)(x)]
        prune.l1_unstructured(conv, "weight", amount=0.3)
        out.append(conv(x))
        gy = minidl.ones(2, 3, 3, 3, dtype=minidl.float64, device=device)
        out += [nn.grad.conv2d_input(x.shape, conv.weight, gy),
                nn.grad.conv2d_weight(x, conv.weight.shape, gy)]
        out += [nn.CircularPad2d((1, 2, 0, 1))(x), nn.ReflectionPad3d(1)(x.unsqueeze(0)),
                nn.ZeroPad1d(2)(x[:, 0])]
        out.append(nn.LazyLinear(4).double().to(device)(x.flatten(1)))
        out.append(nn.SyncBatchNorm(2).double().to(device)(x))
        return out
    both(run)
