"""Real-GPU checks of what the tests run on the fake GPU only, added on 2026-12-07: sparse COO
products and sparse embedding gradients with SparseAdam, saved-tensor hooks and save_on_cpu,
forward-mode AD, the legacy ``minidl.cuda.*Tensor`` types, storages, poisson and the low-rank
SVD, ``x[i, j]`` and ``as_strided`` views, and ``save(format="torch")`` of GPU tensors; and
from stop 33: ``minidl.accelerator`` and ``x.device.type``/``.index`` on the GPU, flex
attention with a score_mod and a block mask (forward and gradients), and
``EmbeddingBag(sparse=True)``'s sparse gradient. Each runs on CUDA and on the CPU from the same
values and compares.

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
          ("EmbeddingBag(sparse=True) gradient", sparse_embedding_bag)]


if __name__ == "__main__":
    if not minidl.cuda.is_available():
        print("SKIP no GPU")
        sys.exit(0)
    for name, fn in CHECKS:
        check(name, fn)
    sys.exit(summary())
