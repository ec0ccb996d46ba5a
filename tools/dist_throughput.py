"""LeNet-5 training throughput, one process or data-parallel under mpiexec (issue 14 figure).

    python tools/dist_throughput.py                  # 1 rank
    mpiexec -n 2 python tools/dist_throughput.py     # 2 ranks, DistributedDataParallel

Each rank trains on its own batches of --batch-size MNIST-sample images (SGD + momentum, the
example's settings); after --warmup steps, --steps steps are timed between two barriers.
Prints one line: ranks, threads per rank, and images/s of the whole job.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minidl  # noqa: E402
import minidl.distributed as dist  # noqa: E402
import minidl.nn.functional as F  # noqa: E402
from minidl import optim  # noqa: E402
from minidl.datasets import MNIST  # noqa: E402
from minidl.models import lenet5  # noqa: E402
from minidl.nn.parallel import DistributedDataParallel  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    args = p.parse_args()
    world, rank = 1, 0
    if (dist.launched_world_size() or 1) > 1:
        dist.init_process_group("mpi")
        world, rank = dist.get_world_size(), dist.get_rank()
    import numba

    minidl.manual_seed(0)
    data = MNIST.sample(train=True)
    model = lenet5()
    if world > 1:
        model = DistributedDataParallel(model)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(rank)
    batches = [data.get_batch(rng.integers(0, len(data), args.batch_size)) for _ in range(16)]
    batches = [(minidl.tensor(x), minidl.tensor(y)) for x, y in batches]

    def step(i):
        x, y = batches[i % len(batches)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    if world > 1:
        dist.barrier()
    seconds = time.perf_counter() - t0
    if rank == 0:
        rate = world * args.batch_size * args.steps / seconds
        print(f"ranks {world} threads/rank {numba.get_num_threads()} batch/rank "
              f"{args.batch_size}: {rate:.0f} images/s ({seconds / args.steps * 1e3:.1f} ms/step)",
              flush=True)


if __name__ == "__main__":
    main()
