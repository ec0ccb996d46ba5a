"""Mixed-precision checks on a CUDA machine (issue 13), each section on its own so one failure
does not hide the rest:

    python tools/gpu_amp_check.py [--batch 64] [--reps 5] [--skip-bench]

1. CuPy with ml_dtypes' bfloat16 and with float16: matmul (cuBLAS compute type 32F), the
   elementwise ops and reductions minidl uses;
2. minidl's CUDA kernels (backend/cuda.py) on 16-bit inputs against float32 references, and the
   fused GradScaler unscale + inf/NaN kernel;
3. autocast("cuda", bf16/fp16) on a small conv net: output dtypes, float32 parameter gradients,
   loss and gradients against torch.autocast("cuda");
4. a ResNet-50 training step, batch 64: minidl float32, minidl bf16 autocast, torch bf16 and
   float32, medians of synchronised steps and peak memory (CuPy pool vs
   torch.cuda.max_memory_allocated), with the issue's goals.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import minidl  # noqa: E402
import minidl.nn.functional as F  # noqa: E402

RESULTS = {}


def section(fn):
    def run(*args):
        print(f"=== {fn.__name__}", flush=True)
        t0 = time.perf_counter()
        try:
            fn(*args)
            RESULTS[fn.__name__] = "ok"
        except Exception:
            traceback.print_exc()
            RESULTS[fn.__name__] = "FAILED"
        print(f"--- {fn.__name__}: {RESULTS[fn.__name__]} ({time.perf_counter() - t0:.1f} s)",
              flush=True)
    return run


@section
def cupy_16bit():
    import cupy as cp
    import ml_dtypes

    print("cupy", cp.__version__, "ml_dtypes", ml_dtypes.__version__)
    linalg = cp._core._routines_linalg
    for dt in (np.float16, ml_dtypes.bfloat16):
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((256, 512)), rng.standard_normal((512, 128))
        ga, gb = cp.asarray(a.astype(dt)), cp.asarray(b.astype(dt))
        c = ga @ gb
        ref = a.astype(dt).astype(np.float64) @ b.astype(dt).astype(np.float64)
        err = np.abs(cp.asnumpy(c).astype(np.float64) - ref).max() / np.abs(ref).max()
        print(f"{np.dtype(dt).name}: matmul -> {c.dtype}, compute type "
              f"{linalg.compute_type_to_str(linalg.get_compute_type(np.dtype(dt)))}, max rel err {err:.2e}")
        x = ga[:4, :8]
        for name, f in [("add", lambda: x + x), ("mul scalar", lambda: x * 2.0),
                        ("maximum", lambda: cp.maximum(x, 0)), ("exp", lambda: cp.exp(x)),
                        ("sum", lambda: x.sum()), ("mean", lambda: x.mean(axis=0)),
                        ("astype f32", lambda: x.astype(cp.float32)),
                        ("isfinite", lambda: cp.isfinite(x).all()), ("where", lambda: cp.where(x > 0, x, 0))]:
            try:
                out = f()
                print(f"  {name}: {out.dtype}")
            except Exception as exc:
                print(f"  {name}: ERROR {type(exc).__name__}: {str(exc)[:150]}")


@section
def kernels_16bit():
    import cupy as cp
    import ml_dtypes

    from minidl.backend import cuda, generic

    rng = np.random.default_rng(1)
    for dt in (np.float16, ml_dtypes.bfloat16):
        tol = 2e-2 if dt == ml_dtypes.bfloat16 else 3e-3
        x = rng.standard_normal((2, 3, 9, 8)).astype(dt)
        k = (3, 3, 2, 1, 1, 1)
        col = cp.asnumpy(cuda.im2col_t(cp.asarray(x), *k)).astype(np.float32)
        ref = generic.im2col(x.astype(np.float32), *k)
        kk, length = ref.shape[1:]
        np.testing.assert_array_equal(col, ref.transpose(1, 0, 2).reshape(kk, -1))
        gcol = rng.standard_normal(col.shape).astype(dt)
        img = cp.asnumpy(cuda.col2im_t(cp.asarray(gcol), x.shape, *k)).astype(np.float32)
        gref = generic.col2im(gcol.astype(np.float32).reshape(kk, 2, length).transpose(1, 0, 2),
                              x.shape, *k)
        np.testing.assert_allclose(img, gref, rtol=tol, atol=tol * 4)
        y, arg = cuda.max_pool2d_forward(cp.asarray(x), 2, 2, 2, 2, 0, 0)
        yr, argr = generic.max_pool2d_forward(x.astype(np.float32), 2, 2, 2, 2, 0, 0)
        np.testing.assert_array_equal(cp.asnumpy(y).astype(np.float32), yr)
        g = rng.standard_normal(yr.shape).astype(dt)
        gx = cuda.max_pool2d_backward(cp.asarray(g), arg, x.shape, 2, 2, 2, 2, 0, 0)
        np.testing.assert_array_equal(cp.asnumpy(gx).astype(np.float32),
                                      generic.max_pool2d_backward(g.astype(np.float32), argr,
                                                                  x.shape, 2, 2, 2, 2, 0, 0))
        r = cuda.relu_backward(cp.asarray(x), cp.maximum(cp.asarray(x), 0))
        np.testing.assert_array_equal(cp.asnumpy(r).astype(np.float32),
                                      np.where(x.astype(np.float32) > 0, x.astype(np.float32), 0))
        y2 = rng.standard_normal((4, 2 * 6)).astype(dt)
        b = rng.standard_normal(4).astype(dt)
        out = cp.asnumpy(cuda.cols_to_nchw(cp.asarray(y2), cp.asarray(b), 2, 2, 3))
        want = y2.astype(np.float32).reshape(4, 2, 2, 3).transpose(1, 0, 2, 3) + \
            b.astype(np.float32)[:, None, None]
        np.testing.assert_allclose(out.astype(np.float32), want, rtol=tol, atol=tol)
        print(np.dtype(dt).name, "im2col_t col2im_t max_pool relu_backward cols_to_nchw: ok")
    grads = [cp.asarray(rng.standard_normal(1000).astype(np.float32) * 1024) for _ in range(3)]
    found = cp.zeros(1, cp.int32)
    cuda.unscale_grads(grads, 1 / 1024, found)
    assert int(found[0]) == 0 and float(abs(grads[0]).max()) < 10
    grads[2][17] = cp.nan
    cuda.unscale_grads(grads, 1.0, found)
    assert int(found[0]) == 1
    print("unscale_grads: ok")


@section
def autocast_vs_torch():
    import torch

    from _common import copy_weights

    class Net(minidl.nn.Module):
        def __init__(self, nn):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.fc = nn.Linear(16 * 8 * 8, 10)

        def forward(self, x, F):
            h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
            return self.fc(h.reshape(h.shape[0], -1))

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(16)
            self.fc = torch.nn.Linear(16 * 8 * 8, 10)

        def forward(self, x, F):
            h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
            return self.fc(h.reshape(h.shape[0], -1))

    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    for name in ("bfloat16", "float16"):
        minidl.manual_seed(0)
        m = Net(minidl.nn)
        t = copy_weights(m, TorchNet()).cuda()
        m.to("cuda")
        with minidl.autocast("cuda", dtype=getattr(minidl, name)):
            logits = m(minidl.tensor(x, device="cuda"), F)
            loss = F.cross_entropy(logits, minidl.tensor(y, device="cuda"))
        loss.backward()
        with torch.autocast("cuda", dtype=getattr(torch, name)):
            tlogits = t(torch.from_numpy(x).cuda(), torch.nn.functional)
            tloss = torch.nn.functional.cross_entropy(tlogits, torch.from_numpy(y).cuda())
        tloss.backward()
        print(name, "logits", logits.dtype, tlogits.dtype, "loss", loss.item(), tloss.item())
        assert str(logits.dtype) == str(tlogits.dtype).replace("torch.", "")
        for (k, p), (_, q) in zip(m.named_parameters(), t.named_parameters()):
            assert p.grad.dtype == np.float32, k
            g, h = p.grad.numpy(), q.grad.float().cpu().numpy()
            err = np.abs(g - h).max() / (np.abs(h).max() + 1e-12)
            print(f"  {k}: grad rel err {err:.2e}")


@section
def resnet50_step(batch, reps):
    import cupy as cp
    import torch

    from _common import (copy_weights, minidl_train_step, synced_median_ms, torch_resnet50,
                         torch_train_step)
    from minidl.models import resnet50

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    y = rng.integers(0, 1000, batch)
    pool = cp.get_default_memory_pool()
    times, mems = {}, {}
    for fw, precision in [("minidl", "fp32"), ("minidl", "bf16"), ("torch", "bf16"),
                          ("torch", "fp32")]:
        gc.collect()
        amp = precision == "bf16"
        minidl.manual_seed(0)
        model = resnet50()
        if fw == "torch":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            model = copy_weights(model, torch_resnet50()).cuda()
            step = torch_train_step(torch, model, x, y, "cuda", torch.bfloat16 if amp else None)
            sync = torch.cuda.synchronize
            peak = torch.cuda.max_memory_allocated
        else:
            pool.free_all_blocks()
            step = minidl_train_step(model.to("cuda"), x, y, "cuda",
                                     minidl.bfloat16 if amp else None)
            sync = cp.cuda.Device().synchronize
            peak = pool.total_bytes
        first = float(step())
        step()
        times[fw, precision] = synced_median_ms(step, sync, reps) / 1e3
        mems[fw, precision] = peak()
        print(f"{fw} {precision}: first loss {first:.4f}, step {times[fw, precision] * 1e3:.1f} ms, "
              f"peak {mems[fw, precision] / 2**20:.0f} MiB", flush=True)
        del step, model
    r = times["minidl", "bf16"] / times["torch", "bf16"]
    s = times["minidl", "fp32"] / times["minidl", "bf16"]
    mr = mems["minidl", "bf16"] / mems["torch", "bf16"]
    print(f"bf16 minidl/torch time {r:.2f} (goal <= 1.5), minidl fp32/bf16 speed-up {s:.2f} "
          f"(goal >= 2.5), bf16 peak memory minidl/torch {mr:.2f} (goal <= 1.3)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    minidl.backend.require_cuda()
    cupy_16bit()
    kernels_16bit()
    autocast_vs_torch()
    if not args.skip_bench:
        resnet50_step(args.batch, args.reps)
    print("summary:", RESULTS)
    return 0 if all(v == "ok" for v in RESULTS.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
