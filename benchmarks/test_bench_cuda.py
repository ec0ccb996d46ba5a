"""GPU benchmarks: minidl on CuPy against PyTorch on CUDA, same weights, same batch, same group
(so ``tools/bench_ratios.py`` prints minidl/PyTorch per group as for the CPU benchmarks).

Skipped, with the reason, without CuPy and an NVIDIA GPU; the torch twins also need a CUDA
build of PyTorch. Every timed call ends with a device synchronize, so it measures finished GPU
work, not kernel launches. TF32 is off on both sides (CuPy's default; PyTorch allows it in
cuDNN convolutions by default), so both compute in full float32.
"""
from __future__ import annotations

import numpy as np
import pytest

import minidl

from _common import (copy_weights, minidl_lenet5, minidl_train_step, seeded_inputs, torch_lenet5,
                     torch_resnet50, torch_train_step)

pytestmark = pytest.mark.skipif(
    not minidl.cuda_available(),
    reason="needs CuPy and an NVIDIA GPU (CuPy not installed or no GPU found): no GPU benchmarks")

FRAMEWORKS = ["minidl", "torch"]


@pytest.fixture(scope="module")
def torch_cuda(torch):
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here (CPU-only build or no GPU): no GPU twin")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # PyTorch at its best: tuned conv algorithms
    return torch


def _sync_minidl():
    minidl.backend.require_cuda().cuda.Device().synchronize()


def _synced_step(fw, model, x, y, torch=None, amp=False):
    """The benchmarks' shared training step (benchmarks/_common.py) on the GPU, synchronised so
    that a round times the GPU's work; ``amp``: bfloat16 autocast."""
    if fw == "torch":
        train = torch_train_step(torch, model, x, y, "cuda", torch.bfloat16 if amp else None)
        sync = torch.cuda.synchronize
    else:
        train = minidl_train_step(model, x, y, "cuda", minidl.bfloat16 if amp else None)
        sync = _sync_minidl

    def step():
        loss = train()
        sync()
        return loss
    return step


def _lenet_train_step(request, fw, batch):
    (x,) = seeded_inputs((batch, 1, 28, 28))
    y = np.random.default_rng(1).integers(0, 10, batch)
    minidl.manual_seed(0)
    model = minidl_lenet5()
    if fw == "torch":
        torch = request.getfixturevalue("torch_cuda")
        step = _synced_step(fw, copy_weights(model, torch_lenet5()).cuda(), x, y, torch)
    else:
        step = _synced_step(fw, model.to("cuda"), x, y)
    step()  # warm-up outside the timing: CuPy compiles its kernels, cuBLAS/cuDNN pick algorithms
    return step


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("batch", [128, 1024])
def test_gpu_lenet5_train_step(benchmark, request, fw, batch):
    benchmark.group = f"gpu-lenet5-train-step-b{batch}"
    benchmark(_lenet_train_step(request, fw, batch))


def test_gpu_train_steps_agree(request):
    """Guards the comparison: both frameworks take the same steps from the same weights."""
    request.getfixturevalue("torch_cuda")
    losses = []
    for fw in FRAMEWORKS:
        step = _lenet_train_step(request, fw, 64)  # its warm-up is the first step
        losses.append([float(step()) for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("batch", [64, 256])
def test_gpu_resnet50_inference(benchmark, request, fw, batch):
    benchmark.group = f"gpu-resnet50-inference-b{batch}-224"
    try:
        from minidl.models import resnet50
    except ImportError as exc:
        pytest.skip(f"minidl.models.resnet50 is not importable ({exc})")
    torch = request.getfixturevalue("torch_cuda")  # the twin is also the correctness check
    minidl.manual_seed(0)
    model = resnet50().eval()
    tmodel = copy_weights(model, torch_resnet50()).eval().cuda()
    model.to("cuda")
    (x,) = seeded_inputs((batch, 3, 224, 224))
    xm, xt = minidl.tensor(x, device="cuda"), torch.from_numpy(x).cuda()

    def run_minidl():
        with minidl.no_grad():
            out = model(xm)
        _sync_minidl()
        return out

    def run_torch():
        with torch.no_grad():
            out = tmodel(xt)
        torch.cuda.synchronize()
        return out

    run = run_torch if fw == "torch" else run_minidl
    if fw == "minidl":
        np.testing.assert_allclose(run_minidl().numpy(), run_torch().cpu().numpy(),
                                   rtol=1e-2, atol=1e-2)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


def _cupy_pool():
    return minidl.backend.require_cuda().get_default_memory_pool()


def _peak_used(pool, fn):
    """Run fn and return the peak of the bytes CuPy's pool had handed out meanwhile (what
    torch.cuda.max_memory_allocated counts; the pool's own size also counts cached free
    blocks), through a CuPy memory hook; None where the hook API differs."""
    cp = minidl.backend.require_cuda()

    class PeakUsed(cp.cuda.MemoryHook):
        name = "minidl_peak_used"

        def __init__(self):
            self.used = self.peak = pool.used_bytes()

        def malloc_postprocess(self, **kw):
            self.used += kw["mem_size"]
            self.peak = max(self.peak, self.used)

        def free_postprocess(self, **kw):
            self.used -= kw["mem_size"]

    try:
        hook = PeakUsed()
        with hook:
            fn()
        return hook.peak
    except Exception:  # noqa: BLE001 - an optional figure; the step itself is checked elsewhere
        fn()
        return None


def _resnet50_train_step(request, fw, batch, size=224, precision="fp32", warm_steps=2):
    """One ResNet-50 training step (train-mode forward, cross-entropy, backward, SGD with
    momentum) on the GPU at ``precision`` ("fp32", or "bf16": autocast with float32 master
    weights, no GradScaler, which bfloat16 does not need), from the same weights in both
    frameworks; returns (step, peak_bytes, used_bytes): the peak over the warm-up steps (CuPy's
    pool: every block it holds, used or cached, an upper bound; torch.cuda.max_memory_allocated)
    and, for minidl, the peak of the bytes in use during the last warm-up step (None for torch,
    whose peak_bytes already is that)."""
    import gc

    from minidl.models import resnet50

    torch = request.getfixturevalue("torch_cuda")
    gc.collect()
    (x,) = seeded_inputs((batch, 3, size, size))
    y = np.random.default_rng(1).integers(0, 1000, batch)
    minidl.manual_seed(0)
    model = resnet50()
    amp = precision == "bf16"
    if fw == "torch":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        tmodel = copy_weights(model, torch_resnet50()).cuda()
        del model
        step = _synced_step(fw, tmodel, x, y, torch, amp)

        def peak():
            return torch.cuda.max_memory_allocated()
    else:
        pool = _cupy_pool()
        pool.free_all_blocks()
        step = _synced_step(fw, model.to("cuda"), x, y, amp=amp)

        def peak():
            return pool.total_bytes()
    used = None
    for k in range(warm_steps):
        if fw == "minidl" and k == warm_steps - 1:
            used = _peak_used(pool, step)  # the last warm-up step, with the hook on
        else:
            step()
    return step, peak(), used


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("batch", [32, 128])
def test_gpu_resnet50_train_step(benchmark, request, fw, batch):
    benchmark.group = f"gpu-resnet50-train-step-b{batch}-224"
    step, peak, used = _resnet50_train_step(request, fw, batch)
    benchmark.extra_info["peak_mem_bytes"] = peak
    benchmark.extra_info["peak_used_bytes"] = used
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


def test_gpu_resnet50_train_steps_agree(request):
    """Guards the ResNet comparison: the same first loss from the same weights (later steps
    drift apart by float32 rounding alone; the float64 gradients agree to 1e-12 in
    tests/test_resnet50.py)."""
    losses = [float(_resnet50_train_step(request, fw, 8, 64, warm_steps=0)[0]())
              for fw in FRAMEWORKS]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


# ---- mixed precision (issue 13): bf16 autocast against torch.autocast, and minidl's float32 ----
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gpu_resnet50_train_step_amp(benchmark, request, fw, precision):
    """Groups gpu-resnet50-train-step-b64-224-bf16 (the issue's goal: <= 1.5x torch, peak memory
    <= 1.3x) and -fp32 (minidl's own float32 step, which bf16 must beat 2.5x;
    tools/bench_ratios.py prints that speed-up)."""
    benchmark.group = f"gpu-resnet50-train-step-b64-224-{precision}"
    step, peak, used = _resnet50_train_step(request, fw, 64, precision=precision)
    benchmark.extra_info["peak_mem_bytes"] = peak
    benchmark.extra_info["peak_used_bytes"] = used
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


def test_gpu_resnet50_bf16_steps_agree(request):
    """Guards the bf16 comparison: the first losses agree within bfloat16's rounding, and the
    parameters stay float32."""
    losses = []
    for fw in FRAMEWORKS:
        step, _, _ = _resnet50_train_step(request, fw, 8, 64, precision="bf16")
        losses.append([float(step()) for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=3e-2)
