#!/usr/bin/env bash
# The GPU checks (issues 6, 12, 13), in one go, on a machine with an NVIDIA GPU, CuPy and CUDA PyTorch
# (the `device` machine: nothing to install, the repo runs from its checkout).
#   bash tools/gpu_checks.sh OUTDIR MNIST_DIR [what...]
# what: smoke api bench mnist dist resnet tests profile amp (default: all but profile). Logs and JSON
#   land in OUTDIR. amp: tools/gpu_amp_check.py (16-bit kernels, autocast vs torch, ResNet-50 b64
#   bf16 vs fp32 and torch) and the MNIST example with --amp bf16 (issue 13: >= 99.0%)
#   (AMP_ARGS=--skip-bench leaves out its ResNet-50 timing, which bench also has)
#   overhead: host time per convolution call, cuDNN's graph and legacy APIs, im2col, torch
#   bench: every CUDA benchmark (LeNet, ResNet-50 inference b64/b256, ResNet-50 training step
#          b32/b128 with peak memory); BENCH_K=expr narrows it (pytest -k)
#   smoke: cuDNN's version and the CUDA kernel, device, recurrent (LSTM/GRU step kernels),
#          cuDNN, batch-norm and conv tests
#          (SMOKE_TESTS="tests/a.py tests/b.py" names others)
#   api: fft/complex/stft and FlopCounterMode on CuPy against the CPU
#        (tools/gpu_complex_check.py), minidl.cuda's streams, events, memory figures, RNG
#        state, OutOfMemoryError and CUDA DLPack (tools/gpu_cuda_api_check.py); sparse, saved-
#        tensor hooks, forward AD, legacy types, views, torch-format save on CUDA, and (fake-GPU audit)
#        CSR/CSC/BSR/BSC, vision.ops, fx, distributions, fft/special/signal, depthwise and 1x1
#        convs, 16-bit max pool/ReLU, minidl.func, in-place ops on views, recent layers, the
#        quantized-on-CUDA refusal, QAT steps (tools/gpu_features_check.py, a few seconds); not
#        in figures
#   dist: tools/dist_gpu_check.sh (nccl world 1; 2 ranks sharing the GPU over mpi)
#   profile: per-phase times and the top GPU kernels of a ResNet-50 step (tools/profile_resnet_gpu.py;
#            PROFILE_ARGS="--amp bf16 --batch 64" for the mixed-precision step)
#   host: the host's share of a step (tools/profile_gpu_step.py: ResNet-50 b64 bf16 and b32 fp32,
#         LeNet-5 b128): synchronised and issue-only step times, kernels that fell back to CuPy's
#         ElementwiseKernel, cuDNN variant packs built per step, and a cProfile of the host
#   cpu: LeNet-5 layer by layer against PyTorch on this machine's CPU, 2 threads, inference and
#        training (tools/lenet_layers.py: issue 12's question of what differs by machine; ~30 s)
#   figures: every figure issues 12 and 13 ask for, in about 7 minutes of a warm H200: smoke,
#            the CUDA benchmarks 3 times (medians of 3 runs), the amp checks and MNIST with
#            --amp bf16, the host's share of a step (host), and the cpu section
set -u
out=${1:?output folder}; data=${2:?folder holding the MNIST IDX files}; shift 2
what=${*:-smoke api bench mnist dist resnet tests amp}
if [ "$what" = figures ]; then
  what="smoke bench amp host cpu"
  export BENCH_RUNS=${BENCH_RUNS:-3} AMP_ARGS=${AMP_ARGS:---skip-bench}
fi
bench_k=${BENCH_K:-}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MINIDL_DATA=$(dirname "$data")
mkdir -p "$out"
for w in $what; do
  echo "=== $w $(date -u +%T)"
  case $w in
    smoke)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -c 'import numpy, numba, cupy, torch; print("numpy", numpy.__version__, "numba", numba.__version__, "cupy", cupy.__version__, "torch", torch.__version__, torch.cuda.is_available(), "torch cudnn", torch.backends.cudnn.version())'
      python3 -c 'from minidl.backend import cudnn; print("minidl cudnn:", cudnn.version(), cudnn.unavailable_reason() or "", [p for p in cudnn.candidate_paths()][:3])'
      # one cuDNN conv forward and backward in its own process: if it breaks, the rest of the
      # run goes on without cuDNN (im2col + cuBLAS), so the other figures still come out
      if ! timeout 120 python3 -c 'import minidl, minidl.nn.functional as F
x = minidl.randn(2, 3, 9, 9, device="cuda", requires_grad=True); w = minidl.randn(4, 3, 3, 3, device="cuda", requires_grad=True)
y = F.conv2d(x, w, padding=1); assert y._ctx.cudnn, "cuDNN not chosen"; y.sum().backward(); print("cuDNN probe ok", float(x.grad.sum()), float(w.grad.sum()))'; then
        echo "cuDNN PROBE FAILED: the rest of this run sets MINIDL_CUDNN=0"; export MINIDL_CUDNN=0
      fi
      timeout 300 python3 -m pytest -q -rs -p no:cacheprovider ${SMOKE_TESTS:-tests/test_cudnn.py tests/test_cuda.py tests/test_devices.py tests/test_rnn.py tests/test_batch_norm.py tests/test_conv_memory.py tests/test_checkpoint.py tests/test_double_backward.py} 2>&1 | tee "$out/smoke.log" | tail -25 ;;
    api)
      # what runs on CuPy but was tested on the fake GPU only (not part of "figures")
      timeout 120 python3 tools/gpu_complex_check.py 2>&1 | tee "$out/complex.log" | tail -8
      timeout 120 python3 tools/gpu_cuda_api_check.py 2>&1 | tee "$out/cuda_api.log" | tail -8
      timeout 120 python3 tools/gpu_features_check.py 2>&1 | tee "$out/features.log" | tail -10 ;;
    bench)
      # BENCH_RUNS=3 for the issues' medians of 3 runs (bench_ratios takes the median ratio)
      for r in $(seq 1 "${BENCH_RUNS:-1}"); do
        timeout 400 python3 -m pytest -q -p no:cacheprovider benchmarks/test_bench_cuda.py --benchmark-only \
          ${bench_k:+-k "$bench_k"} --benchmark-json="$out/bench_cuda_$r.json" 2>&1 | tee "$out/bench_$r.log" | tail -4
      done
      python3 tools/bench_ratios.py "$out"/bench_cuda_*.json --markdown ;;
    host)
      for a in "--model resnet50 --batch 64 --amp bf16 --steps 30" "--model resnet50 --batch 32 --steps 30" \
               "--model lenet5 --batch 128 --steps 200"; do
        timeout 120 python3 tools/profile_gpu_step.py $a --top 25 2>&1 | tee -a "$out/host.log" | head -4
      done ;;
    cpu)
      timeout 120 python3 tools/lenet_layers.py --threads 2 --json "$out/lenet_layers.json" 2>&1 | tee "$out/cpu.log"
      timeout 120 python3 tools/lenet_layers.py --threads 2 --train --json "$out/lenet_layers_train.json" 2>&1 | tee -a "$out/cpu.log" ;;
    overhead)
      timeout 120 python3 tools/cudnn_overhead.py 2>&1 | tee "$out/overhead.log" ;;
    amp)
      timeout 300 python3 tools/gpu_amp_check.py ${AMP_ARGS:-} 2>&1 | tee "$out/amp.log" | grep -v '^  File' | tail -40
      timeout 300 python3 -m minidl.examples.mnist --device cuda --amp bf16 --data "$data" --no-progress \
        --metrics-json "$out/mnist_cuda_bf16.json" 2>&1 | tee "$out/mnist_bf16.log" | tail -5 ;;
    mnist)
      timeout 500 python3 -m minidl.examples.mnist --device cuda --data "$data" --no-progress \
        --metrics-json "$out/mnist_cuda.json" 2>&1 | tee "$out/mnist.log" | tail -15 ;;
    resnet)
      timeout 200 python3 -m pytest -q -rs -p no:cacheprovider tests/test_resnet50.py 2>&1 | tail -5 ;;
    dist)
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 240 bash tools/dist_gpu_check.sh "$out/dist" 2>&1 | tee "$out/dist.log" | tail -15 ;;
    profile)
      timeout 200 python3 tools/profile_resnet_gpu.py ${PROFILE_ARGS:-} 2>&1 | tee "$out/profile.log" ;;
    tests)
      timeout 580 python3 -m pytest -q -rs -p no:cacheprovider tests 2>&1 | tee "$out/tests.log" | tail -40 ;;
  esac
done
