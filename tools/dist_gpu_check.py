"""GPU checks of minidl.distributed (issue 14), on a machine with one GPU, CuPy and mpiexec:

    python tools/dist_gpu_check.py [OUTDIR]

- nccl backend, world size 1: collectives on CuPy arrays, and DistributedDataParallel training
  (20 SGD+momentum steps) ending with the parameters of a plain single-process run;
- mpi backend, 2 ranks sharing the GPU (CuPy arrays staged through the host): the same
  collectives, and 2 ranks x batch 32 matching 1 process x batch 64 on the GPU; the rest of
  the API (reduce, gather, scatter, reduce_scatter, all_to_all, point to point, objects,
  subgroups), SyncBatchNorm against BatchNorm over the whole batch, and the differentiable
  collectives, on CuPy arrays, checked by the assertions of tests/test_distributed_api.py.
Prints one PASS/FAIL line per check; exits 1 if any failed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
import _dist_worker as worker  # noqa: E402
from test_distributed import find_mpiexec, mpiexec_command  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
from _report import report, summary  # noqa: E402



def run(n, case, out, device, backend, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    cmd = mpiexec_command(n, find_mpiexec()) + [sys.executable, str(REPO / "tests" / "_dist_worker.py"),
                                                case, str(out), device, backend]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        return None, f"timed out after {timeout} s\n{text}"
    if proc.returncode:
        return None, f"exit {proc.returncode} after {time.monotonic() - t0:.1f} s\n{text[-3000:]}"
    return [json.loads((Path(out) / f"{case}.rank{r}.json").read_text()) for r in range(n)], ""


def check_collectives(tag, results):
    w = len(results)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    problems = []
    for r in results:
        own = float(r["rank"] + 1)
        expect = {
            "sum": (w * a + 10 * w * (w - 1) / 2).tolist(),
            "avg_tensor": [(w + 1) / 2] * 4,
            "max_int": [w - 1, 0], "min_int": [w - 1, 0],
            "strided": [[own, w * (w + 1) / 2, own, own]] * 3,
            "half": [0.5 * w * (w + 1) / 2] * 3,
            "broadcast": [float(w - 1)] * 5,
            "all_gather": [[float(q), 10.0 * q] for q in range(w)],
        }
        for key, want in expect.items():
            if not np.allclose(np.array(r[key], dtype=float), np.array(want, dtype=float)):
                problems.append(f"rank {r['rank']} {key}: {r[key]} != {want}")
        covered = sorted({i for shard in r["sampler_epochs"][0] for i in shard})
        if covered != list(range(11)):
            problems.append(f"rank {r['rank']} sampler covered {covered}")
        if r["device"] != "cuda":
            problems.append(f"rank {r['rank']} ran on {r['device']}")
    gpus = [r.get("gpu") for r in results]
    report(f"{tag} collectives on CuPy arrays (world {w}, GPU {gpus})", not problems,
           "; ".join(problems))


def check_training(tag, out, world):
    ref = worker.train_reference(world=world, device="cuda")
    worst = 0.0
    for rank in range(world):
        got = np.load(Path(out) / f"train.rank{rank}.npz")
        worst = max(worst, max(float(np.abs(got[k] - ref[k]).max()) for k in ref))
    report(f"{tag} DDP {world} x 32 == 1 x {32 * world} on the GPU after 20 steps",
           worst <= 1e-5, f"max abs difference {worst:.2e}")
    ref = worker.no_sync_reference(world=world, device="cuda")
    worst = 0.0
    for rank in range(world):
        got = np.load(Path(out) / f"nosync.rank{rank}.npz")
        worst = max(worst, max(float(np.abs(got[k] - ref[k]).max()) for k in ref))
    report(f"{tag} no_sync accumulation == one big backward", worst <= 1e-6,
           f"max abs difference {worst:.2e}")


def check_api_on_gpu(out_root):
    import test_distributed_api as api_tests

    checks = {"api": ["test_reduce_product_and_bitwise_ops", "test_gather_and_scatter",
                      "test_all_gather_into_tensor_and_reduce_scatter",
                      "test_all_to_all_even_uneven_and_lists", "test_point_to_point",
                      "test_async_work_and_objects", "test_subgroups"],
              "syncbn": ["test_sync_batchnorm_equals_batchnorm_over_the_whole_batch"],
              "autograd": ["test_nn_functional_gradients_sum_over_ranks",
                           "test_nn_functional_second_order"]}
    for case, tests in checks.items():
        out = out_root / f"mpi2-{case}"
        out.mkdir(parents=True, exist_ok=True)
        results, error = run(2, case, out, "cuda", "mpi")
        if results is None:
            report(f"[mpi x2] {case} ran on CuPy arrays", False, error)
            continue
        if case == "api":
            data = results
        else:
            data = [dict(np.load(out / f"{case}.rank{r}.npz")) for r in range(2)]
        for name in tests:
            try:
                getattr(api_tests, name)(data)
                report(f"[mpi x2] cuda {name}", True)
            except AssertionError as exc:
                report(f"[mpi x2] cuda {name}", False, str(exc)[:500])


def main():
    out_root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    if find_mpiexec() is None:
        report("mpiexec found", False, "no mpiexec beside python or on PATH")
        return 1
    import cupy  # noqa: F401  (fail here, clearly, without CuPy)

    for n, backend in ((1, "nccl"), (2, "mpi")):
        tag = f"[{backend} x{n}]"
        for case in ("collectives", "train"):
            out = out_root / f"{backend}{n}-{case}"
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            results, error = run(n, case, out, "cuda", backend)
            if results is None:
                report(f"{tag} {case} ran", False, error)
                continue
            print(f"  {tag} {case}: {time.monotonic() - t0:.1f} s", flush=True)
            if case == "collectives":
                check_collectives(tag, results)
            else:
                check_training(tag, out, n)
    check_api_on_gpu(out_root)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
