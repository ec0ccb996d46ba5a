"""Real-GPU checks of what the tests run on the fake GPU only, added on 2026-12-07: sparse COO
products and sparse embedding gradients with SparseAdam, saved-tensor hooks and save_on_cpu,
forward-mode AD, the legacy ``minidl.cuda.*Tensor`` types, storages, poisson and the low-rank
SVD, ``x[i, j]`` and ``as_strided`` views, and ``save(format="torch")`` of GPU tensors; and
from stop 33: ``minidl.accelerator`` and ``x.device.type``/``.index`` on the GPU, flex
attention with a score_mod and a block mask (forward and gradients), and
``EmbeddingBag(sparse=True)``'s sparse gradient; and the features added since
2026-12-05 in a quick form (compressed sparse layouts, vision.ops, fx, distributions, fft /
special / signal, depthwise and 1x1 convolutions, 16-bit max pooling and ReLU, minidl.func and
forward AD, in-place ops on views, recent layers, quantized models refusing CUDA, QAT steps).
Each runs on CUDA and on the CPU from the same values and compares.

    python tools/gpu_features_check.py

Prints one PASS/FAIL line per check; exits 1 if any failed (tools/gpu_checks.sh's api step
runs it; tests/test_gpu_features_script.py runs the same checks on the fake GPU)."""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import minidl
from _report import check, summary


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol), \
        float(np.abs(a - b).max()) if a.size and a.shape == b.shape else 0.0


def sparse_products():
    rng = np.random.default_rng(0)
    idx = np.array([[0, 1, 1, 3], [2, 0, 2, 1]])
    vals = rng.normal(size=4).astype(np.float32)
    dense = rng.normal(size=(4, 5)).astype(np.float32)
    out = {}
    for device in ("cpu", "cuda"):
        s = minidl.sparse_coo_tensor(minidl.tensor(idx), minidl.tensor(vals), (4, 4),
                                     device=device, requires_grad=True)
        d = minidl.tensor(dense, device=device, requires_grad=True)
        y = minidl.sparse.mm(s, d)
        y.sum().backward()
        out[device] = (y.cpu().numpy(), d.grad.cpu().numpy(), s.grad.coalesce().values().cpu().numpy())
    ok = all(_close(a, b)[0] for a, b in zip(out["cpu"], out["cuda"]))
    return ok, f"sparse.mm forward and both gradients equal ({y.device})"


def sparse_embedding_adam():
    weights = {}
    for device in ("cpu", "cuda"):
        minidl.manual_seed(0)
        emb = minidl.nn.Embedding(10, 4, sparse=True).to(device)
        opt = minidl.optim.SparseAdam(emb.parameters(), lr=0.1)
        for step in range(3):
            ids = minidl.tensor([[1, 2, 2], [5, step, 1]], device=device)
            opt.zero_grad()
            emb(ids).pow(2).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
        weights[device] = emb.weight.detach().cpu().numpy()
    ok, diff = _close(weights["cpu"], weights["cuda"])
    return ok, f"3 SparseAdam steps, max difference {diff:.2e}"


def saved_tensor_hooks():
    from minidl.autograd.graph import save_on_cpu, saved_tensors_hooks

    minidl.manual_seed(0)
    model = minidl.nn.Sequential(minidl.nn.Linear(8, 16), minidl.nn.ReLU(),
                                 minidl.nn.Linear(16, 2)).to("cuda")
    x = minidl.randn(4, 8, device="cuda")

    def grads(context):
        model.zero_grad()
        with context:
            loss = model(x).pow(2).sum()
        loss.backward()
        return [p.grad.cpu().numpy() for p in model.parameters()]

    import contextlib

    plain = grads(contextlib.nullcontext())
    packed = []

    def pack(t):
        packed.append(t.device)
        return t.cpu()

    hooked = grads(saved_tensors_hooks(pack, lambda t: t.to("cuda")))
    offloaded = grads(save_on_cpu())
    ok = all(_close(a, b)[0] and _close(a, c)[0] for a, b, c in zip(plain, hooked, offloaded))
    on_gpu = bool(packed) and all(str(d).startswith("cuda") for d in packed)
    return ok and on_gpu, f"{len(packed)} saved tensors packed from the GPU; gradients equal"


def forward_mode():
    import minidl.autograd.forward_ad as fwAD

    rng = np.random.default_rng(1)
    a, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    out = {}
    for device in ("cpu", "cuda"):
        with fwAD.dual_level():
            x = fwAD.make_dual(minidl.tensor(a, dtype=minidl.float64, device=device),
                               minidl.tensor(t, dtype=minidl.float64, device=device))
            y = (x.sin() * x).softmax(-1)
            out[device] = fwAD.unpack_dual(y).tangent.cpu().numpy()
    ok, diff = _close(out["cpu"], out["cuda"], 1e-10)
    return ok, f"tangent of softmax(sin(x) * x), max difference {diff:.2e}"


def legacy_types_and_storages():
    x = minidl.arange(6.0, device="cuda").reshape(2, 3)
    typed = isinstance(x, minidl.cuda.FloatTensor) and not isinstance(x, minidl.FloatTensor)
    moved = x.type("torch.cuda.LongTensor")
    cast = moved.device == "cuda" and moved.dtype == np.int64
    made = minidl.cuda.FloatTensor(2, 3).device == "cuda"
    shared = x[1].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    apart = x.clone().untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    ok = typed and cast and made and shared and apart
    return ok, (f"isinstance {typed}, type() {cast}, constructor {made}, storage shared {shared}, "
                f"clone apart {apart}")


def views_write_through():
    x = minidl.arange(12.0, device="cuda").reshape(3, 4)
    x[1, 2].add_(100)
    minidl.as_strided(x, (2, 2), (1, 4)).mul_(0)
    expect = np.arange(12.0).reshape(3, 4)
    expect[1, 2] += 100
    expect[:2, :2] = 0
    ok, _ = _close(x.cpu().numpy(), expect)
    return ok, "x[i, j].add_ and as_strided(...).mul_ reach x"


def sampling_and_lowrank():
    minidl.manual_seed(0)
    draws = minidl.poisson(minidl.full((100000,), 4.0, device="cuda"))
    mean_ok = draws.device == "cuda" and abs(draws.mean().item() - 4.0) < 0.05
    a = minidl.randn(40, 5, device="cuda", dtype=minidl.float64) @ \
        minidl.randn(5, 30, device="cuda", dtype=minidl.float64)
    u, s, v = minidl.svd_lowrank(a, q=6)
    err = float(((u * s) @ v.mT - a).abs().max().item())
    return mean_ok and err < 1e-8, f"poisson mean {draws.mean().item():.3f}; low-rank error {err:.1e}"


def save_torch_format_from_gpu():
    x = minidl.randn(3, 4, device="cuda")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "gpu.pt")
        minidl.save({"w": x, "n": 3}, path, format="torch")
        back = minidl.load(path, map_location="cuda")
        ok = back["n"] == 3 and back["w"].device == "cuda" and _close(back["w"].cpu().numpy(),
                                                                        x.cpu().numpy(), 0)[0]
        detail = "minidl.load round trip"
        try:
            import torch
        except ImportError:
            return ok, detail + "; torch not installed"
        theirs = torch.load(path)
        ok = ok and np.array_equal(theirs["w"].numpy(), x.cpu().numpy())
    return ok, detail + " and torch.load"


def accelerator_and_device():
    x = minidl.ones(3, device="cuda")
    acc = minidl.accelerator
    ok = (acc.is_available() and acc.current_accelerator(check_available=True) == "cuda"
          and acc.device_count() >= 1 and x.device.type == "cuda"
          and x.device.index == acc.current_device_index()
          and repr(x.device) == f"device(type='cuda', index={x.device.index})")
    acc.synchronize()
    return ok, f"{acc.device_count()} device(s), x.device {x.device!r}"


def flex_attention_on_gpu():
    from minidl.nn.attention import flex_attention as fa

    rng = np.random.default_rng(5)
    arrays = [rng.normal(size=(2, 4, 16, 8)).astype(np.float32) for _ in range(3)]
    outs = {}
    for device in ("cpu", "cuda"):
        q, k, v = (minidl.tensor(a, device=device, requires_grad=True) for a in arrays)
        bias = minidl.tensor(np.linspace(-0.2, 0.2, 4, dtype=np.float32), device=device,
                             requires_grad=True)
        mask = fa.create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, 16, 16,
                                    device=device, BLOCK_SIZE=8)
        y = fa.flex_attention(q, k, v, block_mask=mask,
                              score_mod=lambda s, b, h, qi, ki: s + bias[h] * (qi - ki))
        y.sum().backward()
        outs[device] = [y.detach().cpu().numpy()] + [t.grad.cpu().numpy()
                                                     for t in (q, k, v, bias)]
    errs = [_close(a, b, 1e-4) for a, b in zip(outs["cuda"], outs["cpu"])]
    return all(ok for ok, _ in errs), f"max difference {max(e for _, e in errs):.1e}"


def sparse_embedding_bag():
    idx = np.array([1, 2, 4, 5, 4, 3, 2, 9])
    offsets = np.array([0, 4])
    grads = {}
    for device in ("cpu", "cuda"):
        minidl.manual_seed(0)
        bag = minidl.nn.EmbeddingBag(10, 3, mode="mean", sparse=True).to(device)
        bag(minidl.tensor(idx, device=device), minidl.tensor(offsets, device=device)) \
            .sum().backward()
        g = bag.weight.grad
        grads[device] = (g.is_sparse, g.to_dense().cpu().numpy())
    ok, err = _close(grads["cuda"][1], grads["cpu"][1])
    return ok and grads["cuda"][0], f"sparse {grads['cuda'][0]}, max difference {err:.1e}"


# ---- the features added since 2026-12-05 (tests/test_fake_gpu_coverage.py runs them
# on the strict fake GPU; these are the quick real-GPU form) ----------------------------------
def _on_both(fn, tol=1e-9):
    """``fn(device)`` -> a list of tensors, on the CPU and on CUDA from the same seed: (ok,
    detail), ok when every CUDA result is on the GPU and equals the CPU's within ``tol``."""
    minidl.manual_seed(0)
    cpu = fn("cpu")
    minidl.manual_seed(0)
    gpu = fn("cuda")
    on_gpu = all(str(g.device).startswith("cuda") for g in gpu)
    errs = [_close(g.detach().cpu().float().numpy() if g.dtype in (minidl.float16, minidl.bfloat16)
                   else g.detach().cpu().numpy(),
                   c.detach().cpu().float().numpy() if c.dtype in (minidl.float16, minidl.bfloat16)
                   else c.detach().cpu().numpy(), tol) for g, c in zip(gpu, cpu)]
    ok = on_gpu and len(gpu) == len(cpu) and all(e for e, _ in errs)
    worst = max((d for _, d in errs), default=0.0)
    return ok, f"{len(gpu)} results, all on the GPU: {on_gpu}, max difference {worst:.1e}"


def _f64(a, device, grad=False):
    return minidl.tensor(np.asarray(a), dtype=minidl.float64, device=device, requires_grad=grad)


def _rand(*shape, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape)


def compressed_sparse():
    dense = _rand(4, 6, seed=3) * (np.random.default_rng(4).uniform(size=(4, 6)) < 0.4)
    dense[0, 0] = 1.5

    def run(device):
        crow = minidl.tensor([0, 2, 3, 5], device=device)
        col = minidl.tensor([0, 2, 1, 0, 3], device=device)
        vals = _f64(_rand(5, seed=5), device, True)
        a = minidl.sparse_csr_tensor(crow, col, vals, (3, 4))
        b, c = _f64(_rand(4, 2, seed=6), device, True), _f64(_rand(3, 2, seed=7), device, True)
        y = minidl.mm(a, b) + minidl.addmm(c, a, b, beta=0.5, alpha=2.0)
        y.pow(2).sum().backward()
        d = _f64(dense, device)
        trips = [s.to("cpu").to(device).to_dense() for s in (
            d.to_sparse_csr(), d.to_sparse_csc(), d.to_sparse_bsr((2, 3)), d.to_sparse_bsc((2, 2)))]
        return [y, vals.grad, b.grad, c.grad] + trips
    return _on_both(run)


def vision_ops():
    from minidl.vision import ops

    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 19, 29, 31],
                      [0, 0, 9, 10], [50, 50, 60, 55]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.85, 0.1])
    rois = np.array([[0, 0.5, 0.5, 5.5, 4.0], [1, 2.0, 1.0, 7.5, 7.5]])

    def run(device):
        b, s = _f64(boxes, device), _f64(scores, device)
        keep = ops.nms(b, s, 0.5)
        bkeep = ops.batched_nms(b, s, minidl.tensor([0, 0, 1, 1, 1, 0], device=device), 0.5)
        x = _f64(_rand(2, 3, 8, 8, seed=11), device, True)
        al = ops.roi_align(x, _f64(rois, device), (3, 2), sampling_ratio=-1, aligned=True)
        rp = ops.roi_pool(x, _f64(rois, device), 2)
        (al.pow(2).sum() + rp.pow(2).sum()).backward()
        return [keep, bkeep, ops.box_iou(b, b + 0.5), al, rp, x.grad]
    return _on_both(run)


def fx_graph_module():
    from minidl import fx

    class Net(minidl.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = minidl.nn.Conv2d(2, 3, 3, padding=1)
            self.fc = minidl.nn.Linear(12, 4)

        def forward(self, x):
            y = minidl.nn.functional.relu(self.conv(x)).mean(1)
            return self.fc(y.flatten(1)).softmax(-1) + x.sum()

    def run(device):
        minidl.manual_seed(0)
        gm = fx.symbolic_trace(Net().double()).to(device)
        x = _f64(_rand(2, 2, 4, 3, seed=13), device, True)
        y = gm(x)
        y.pow(2).sum().backward()
        return [y, fx.Interpreter(gm).run(x), x.grad, gm.conv.weight.grad]
    return _on_both(run)


def distributions():
    import minidl.distributions as D

    def run(device):
        loc, scale = _f64(_rand(3, seed=20), device, True), _f64(_rand(3, seed=21, lo=0.5), device, True)
        conc = _f64(_rand(3, seed=22, lo=0.5, hi=3.0), device, True)
        tril = _f64(np.tril(_rand(3, 3, seed=23)) + 3 * np.eye(3), device, True)
        point = _f64(_rand(3, seed=24, lo=0.2, hi=0.6), device)
        dists = [D.Normal(loc, scale), D.Gamma(conc, scale), D.Dirichlet(conc),
                 D.MultivariateNormal(loc, scale_tril=tril), D.StudentT(conc + 1, loc, scale)]
        lp = sum(d.log_prob(point / point.sum() if isinstance(d, D.Dirichlet) else point).sum()
                 + d.entropy().sum() for d in dists)
        # draws differ between the two generators: their device and gradients' finiteness only
        draws = [d.rsample((4,)) for d in dists]
        assert all(r.device == loc.device for r in draws), [r.device for r in draws]
        assert bool(minidl.isfinite(sum(r.sum() for r in draws)).item())
        lp.backward()
        return [lp, loc.grad, scale.grad, conc.grad, tril.grad]
    return _on_both(run)


def fft_special_signal():
    from minidl import fft, special
    from minidl.signal import windows

    def run(device):
        x = _f64(_rand(3, 8, seed=26), device, True)
        f = fft.rfft(x * windows.hann(8, dtype=minidl.float64, device=device))
        s = special.erfcx(x) + special.log_ndtr(x) + special.i0e(x)
        (f.abs().sum() + s.sum()).backward()
        return [f.abs(), s, x.grad, windows.kaiser(9, beta=4.0, dtype=minidl.float64,
                                                   device=device)]
    return _on_both(run)


def depthwise_and_pointwise_conv():
    import minidl.nn.functional as F

    def run(device):
        x = minidl.tensor(_rand(2, 8, 14, 14, seed=30), dtype=minidl.float32, device=device,
                          requires_grad=True)
        wd = minidl.tensor(_rand(16, 1, 3, 3, seed=31), dtype=minidl.float32, device=device,
                           requires_grad=True)
        wp = minidl.tensor(_rand(5, 16, 1, 1, seed=32), dtype=minidl.float32, device=device,
                           requires_grad=True)
        y = F.conv2d(F.conv2d(x, wd, padding=1, groups=8), wp)
        (y * y.detach().cos()).sum().backward()
        return [y, x.grad, wd.grad, wp.grad]
    return _on_both(run, tol=1e-3)


def half_max_pool_relu():
    import minidl.nn.functional as F

    def run(device):
        out = []
        for dt in (minidl.float16, minidl.bfloat16):
            x = minidl.tensor(_rand(2, 3, 8, 8, seed=33), device=device).to(dt).requires_grad_()
            y = F.max_pool2d(F.relu(x), 2, stride=2)
            z = F.relu(x * 2)
            (y.float().sum() + (z.float() * 3).sum()).backward()
            out += [y, z, x.grad]
        return out
    return _on_both(run, tol=0)


def func_and_forward_ad():
    import minidl.autograd.forward_ad as fwAD
    from minidl import func

    def run(device):
        minidl.manual_seed(0)
        lin = minidl.nn.Linear(4, 3).double().to(device)
        params = {k: v.detach() for k, v in lin.named_parameters()}
        x = _f64(_rand(5, 4, seed=34), device)

        def loss(p, xi):
            return func.functional_call(lin, p, (xi,)).tanh().sum()

        per_sample = func.vmap(func.grad(loss), in_dims=(None, 0))(params, x)
        jac = func.jacrev(lambda v: (v.sin() * v).cumsum(0))(x[0])
        with fwAD.dual_level():
            d = fwAD.make_dual(x * 1.0, x.cos())
            h = d * 1.0
            h[1:3, :2].mul_(d[:2, 1:3])
            tangent = fwAD.unpack_dual((h.sin() * d).softmax(-1)).tangent
        return [per_sample["weight"], per_sample["bias"], jac, tangent]
    return _on_both(run)


def inplace_views_rebase():
    def run(device):
        x = _f64(_rand(3, 4, seed=7), device, True)
        w = _f64(_rand(3, 4, seed=8), device, True)
        h = x * 1.5 - 0.2
        v, other = h[:, 1:3], h.diagonal(1)
        h.mul_(w)
        minidl.as_strided(h, (2, 3), (4, 1), 1).mul_(3)
        ((h * h).sum() + (v * v.detach().cos()).sum() + (other * 3).sum()).backward()
        return [h, v, other, x.grad, w.grad]
    return _on_both(run)


def recent_layers():
    nn = minidl.nn

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.rms = nn.GroupNorm(2, 8), nn.RMSNorm(8)
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.lstm = nn.LSTM(8, 6, batch_first=True, proj_size=4)
            self.prelu, self.pool = nn.PReLU(5), nn.LPPool2d(2.0, 2)

        def forward(self, x):
            y = self.rms(self.norm(x.transpose(1, 2)).transpose(1, 2))
            y = self.mha(y, y, y)[0]
            y = self.lstm(y)[0]
            z = self.pool(self.prelu(y.reshape(2, 5, 2, 2).abs() + 0.1))
            return y.sum() + z.sum()

    def run(device):
        minidl.manual_seed(0)
        m = Stack().double().to(device)
        x = _f64(_rand(2, 5, 8, seed=40), device, True)
        y = m(x)
        y.backward()
        return [y, x.grad] + [p.grad for p in m.parameters()]
    return _on_both(run)


def quantized_refuses_cuda():
    from minidl.ao import quantization as Q

    nn = minidl.nn
    model = nn.Sequential(Q.QuantStub(), nn.Linear(4, 3), nn.ReLU(), Q.DeQuantStub())
    model.qconfig = Q.get_default_qconfig()
    Q.prepare(model, inplace=True)
    model(minidl.randn(8, 4))
    Q.convert(model, inplace=True)
    try:
        model.to("cuda")(minidl.randn(2, 4, device="cuda"))
    except NotImplementedError as e:
        return "CPU-only" in str(e), f"refused: {str(e)[:80]}"
    return False, "a quantized model ran on a CUDA input"


def qat_on_gpu():
    from minidl.ao import quantization as Q

    nn = minidl.nn

    def run(device):
        minidl.manual_seed(0)
        model = nn.Sequential(Q.QuantStub(), nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(12, 4), Q.DeQuantStub())
        model.qconfig = Q.get_default_qat_qconfig()
        model.train()
        Q.prepare_qat(model, inplace=True)
        model.to(device)
        opt = minidl.optim.SGD(model.parameters(), lr=0.1)
        x = minidl.tensor(_rand(5, 2, 4, 4, seed=50), dtype=minidl.float32, device=device)
        outs = []
        for _ in range(2):
            opt.zero_grad()
            y = model(x)
            y.pow(2).mean().backward()
            opt.step()
            outs.append(y)
        return outs + [model[1].weight, model[4].weight]
    return _on_both(run, tol=1e-4)


CHECKS = [("sparse mm and gradients", sparse_products),
          ("sparse embedding + SparseAdam", sparse_embedding_adam),
          ("saved-tensor hooks, save_on_cpu", saved_tensor_hooks),
          ("forward-mode AD", forward_mode),
          ("legacy cuda types and storages", legacy_types_and_storages),
          ("x[i, j] and as_strided views", views_write_through),
          ("poisson and svd_lowrank", sampling_and_lowrank),
          ("save(format='torch') of GPU tensors", save_torch_format_from_gpu),
          ("accelerator API and x.device on the GPU", accelerator_and_device),
          ("flex_attention: score_mod, block mask, gradients", flex_attention_on_gpu),
          ("EmbeddingBag(sparse=True) gradient", sparse_embedding_bag),
          ("CSR/CSC/BSR/BSC: mm/addmm gradients, .to round trips", compressed_sparse),
          ("vision.ops: nms, batched_nms, box_iou, roi_align, roi_pool", vision_ops),
          ("fx GraphModule on the GPU", fx_graph_module),
          ("distributions: log_prob, entropy, rsample gradients", distributions),
          ("fft, special, signal windows", fft_special_signal),
          ("depthwise and 1x1 convolutions (float32)", depthwise_and_pointwise_conv),
          ("float16/bfloat16 max pooling and ReLU", half_max_pool_relu),
          ("minidl.func and forward AD through in-place views", func_and_forward_ad),
          ("in-place ops on a base with views, as_strided", inplace_views_rebase),
          ("recent layers: GroupNorm, RMSNorm, MHA, LSTM proj, PReLU, LPPool2d", recent_layers),
          ("a quantized model refuses CUDA input", quantized_refuses_cuda),
          ("quantization-aware training steps on the GPU", qat_on_gpu)]


if __name__ == "__main__":
    if not minidl.cuda.is_available():
        print("SKIP no GPU")
        sys.exit(0)
    for name, fn in CHECKS:
        check(name, fn)
    sys.exit(summary())
