"""The PASS/FAIL lines of the GPU check scripts (dist_gpu_check, gpu_complex_check,
gpu_cuda_api_check, gpu_features_check): one line per check, a summary, and the exit
status."""
from __future__ import annotations

failures = []


def report(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(name)


def check(name, fn):
    """Run ``fn`` (returning (ok, detail)) and report it; a crash is a failure, reported with
    the rest."""
    try:
        ok, detail = fn()
    except Exception as e:
        ok, detail = False, f"{type(e).__name__}: {e}"
    report(name, ok, detail)


def summary():
    """Print ALL PASS or the number that failed; the exit status (1 if any failed)."""
    print("ALL PASS" if not failures else f"{len(failures)} FAILED", flush=True)
    return 1 if failures else 0
