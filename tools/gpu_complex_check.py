"""Real-GPU checks of what runs on CuPy but was tested on the fake GPU only: minidl.fft and
complex autograd (values and gradients on the GPU against the same computation on the CPU),
stft, and FlopCounterMode on a CUDA model (the same counts as on the CPU).

    python tools/gpu_complex_check.py

Prints one PASS/FAIL line per check; exits 1 if any failed. (tools/gpu_checks.sh's api step
runs it.)"""
from __future__ import annotations

import sys

import numpy as np

import minidl
import minidl.nn as nn
from minidl.utils.flop_counter import FlopCounterMode
from _report import report, summary



def run(device):
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((4, 32)), dtype=minidl.float64, device=device,
                      requires_grad=True)
    spec = minidl.fft.rfft(x, norm="ortho")
    back = minidl.fft.irfft(spec * spec.conj(), n=32)
    z = minidl.tensor(rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)),
                      dtype=minidl.complex128, device=device, requires_grad=True)
    w = (z @ z.conj().T).abs().sum() + back.sum() + minidl.fft.fft2(z).real.sum()
    w.backward()
    sig = minidl.tensor(rng.standard_normal(256), dtype=minidl.float64, device=device)
    window = minidl.tensor(np.hanning(64), dtype=minidl.float64, device=device)
    st = minidl.stft(sig, 64, hop_length=16, window=window, return_complex=True)
    return {"value": w.item(), "x.grad": x.grad.numpy(), "z.grad": z.grad.numpy(),
            "stft": st.numpy()}


def main():
    cpu, gpu = run("cpu"), run("cuda")
    for key in cpu:
        diff = float(np.max(np.abs(np.asarray(cpu[key]) - np.asarray(gpu[key]))))
        report(f"fft/complex on CuPy == CPU: {key}", diff < 1e-9, f"max abs difference {diff:.1e}")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    counts = {}
    for device in ("cpu", "cuda"):
        m = model.to(device)
        with FlopCounterMode(display=False) as counter:
            m(minidl.randn(2, 3, 8, 8).to(device)).sum().backward()
        counts[device] = counter.get_total_flops()
    report("FlopCounterMode on CUDA == CPU", counts["cpu"] == counts["cuda"] > 0, str(counts))
    return summary()


if __name__ == "__main__":
    sys.exit(main())
