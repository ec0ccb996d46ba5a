"""Where a ResNet-50 step on CUDA spends its GPU time, minidl and PyTorch side by side.

    python tools/profile_resnet_gpu.py [--batch 32] [--eval-batch 256] [--top 25] [--amp bf16]

For the training step (train-mode forward, cross-entropy, backward, SGD with momentum) and for
eval-mode inference: synchronised medians of the forward, the backward and the whole step for
both frameworks, then the GPU kernels of three minidl steps by total time (torch.profiler with
CUDA activity records CuPy's kernels too: CUPTI is process-wide). TF32 is off on both sides.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import minidl  # noqa: E402
import minidl.nn.functional as F  # noqa: E402
from _common import copy_weights, synced_median_ms as timed, torch_resnet50  # noqa: E402
from minidl.models import resnet50  # noqa: E402


def _autocast(fw, torch, amp):
    """bfloat16 autocast in either framework (a no-op context when ``amp`` is false)."""
    if fw == "torch":
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp)
    return minidl.autocast("cuda", dtype=minidl.bfloat16, enabled=amp)


def phases(fw, model, x, y, opt, sync, torch, amp=False):
    state = {}
    cross_entropy = torch.nn.functional.cross_entropy if fw == "torch" else F.cross_entropy

    def forward():
        opt.zero_grad()
        with _autocast(fw, torch, amp):
            state["loss"] = cross_entropy(model(x), y)

    def backward():
        state["loss"].backward()

    def step():
        forward()
        backward()
        opt.step()

    step()
    step()
    t_step = timed(step, sync)
    fwd, bwd = [], []
    for _ in range(5):
        fwd.append(timed(forward, sync, 1))
        bwd.append(timed(backward, sync, 1))
        opt.step()
    return statistics.median(fwd), statistics.median(bwd), t_step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--amp", choices=["off", "bf16"], default="off",
                    help="bf16: the training step under autocast in both frameworks")
    args = ap.parse_args()
    amp = args.amp == "bf16"
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    cp = minidl.backend.require_cuda()
    sync_m, sync_t = cp.cuda.Device().synchronize, torch.cuda.synchronize
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
    y = rng.integers(0, 1000, args.batch)
    minidl.manual_seed(0)
    model = resnet50()
    tmodel = copy_weights(model, torch_resnet50()).cuda()
    model.to("cuda")
    opt = minidl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
    xm, ym = minidl.tensor(x, device="cuda"), minidl.tensor(y, device="cuda")
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    print(f"train step{' (bf16 autocast)' if amp else ''}, batch {args.batch} at 224x224 "
          "(ms, medians of 5): forward backward step")
    m = phases("minidl", model, xm, ym, opt, sync_m, torch, amp)
    t = phases("torch", tmodel, xt, yt, topt, sync_t, torch, amp)
    for name, a, b in zip(("forward", "backward", "step"), m, t):
        print(f"  {name:9s} minidl {a:8.2f}  torch {b:8.2f}  ratio {a / b:5.2f}")

    xe = rng.standard_normal((args.eval_batch, 3, 224, 224)).astype(np.float32)
    xem, xet = minidl.tensor(xe, device="cuda"), torch.from_numpy(xe).cuda()
    model.eval(), tmodel.eval()

    def infer_m():
        with minidl.no_grad():
            model(xem)

    def infer_t():
        with torch.no_grad():
            tmodel(xet)
    infer_m(), infer_t()
    a, b = timed(infer_m, sync_m), timed(infer_t, sync_t)
    print(f"inference, batch {args.eval_batch}: minidl {a:.2f} ms, torch {b:.2f} ms, "
          f"ratio {a / b:.2f}")

    from torch.profiler import ProfilerActivity, profile
    def train_step():
        opt.zero_grad()
        with _autocast("minidl", torch, amp):
            loss = F.cross_entropy(model(xm), ym)
        loss.backward()
        opt.step()

    for label, fn, train in (("train step", train_step, True), ("inference", infer_m, False)):
        model.train(train)
        fn()
        sync_m()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                fn()
            sync_m()
        events = prof.key_averages()
        key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") \
            else "self_cuda_time_total"
        total = sum(getattr(e, key) for e in events)
        print(f"\nminidl {label}: GPU kernel time per step {total / 3e3:.2f} ms; top kernels:")
        rows = sorted(events, key=lambda e: -getattr(e, key))[:args.top]
        for e in rows:
            v = getattr(e, key)
            print(f"  {100 * v / total:5.1f}%  {v / 3e3:8.3f} ms/step  {e.count // 3:5d} calls  "
                  f"{e.key[:90]}")


if __name__ == "__main__":
    main()
