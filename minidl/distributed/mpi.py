"""The MPI process group: collectives through mpi4py on host arrays; CuPy arrays are staged
through host memory (a copy down, the collective, a copy back up).

Every collective is started non-blocking and polled, so that one that never completes (a rank
died without aborting, or skipped it) aborts the job after the group's timeout instead of
hanging it.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from ..backend import device_of, to_device

# dtypes MPI has no reduction for: reduced in float32, moved as raw 16-bit words otherwise
_HALF_KINDS = ("float16", "bfloat16")


class MPIGroup:
    name = "mpi"

    def __init__(self, timeout):
        from mpi4py import MPI

        self.MPI = MPI
        # a private communicator: the user's own MPI traffic on COMM_WORLD never mixes with ours
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.timeout = timeout
        self._ops = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}

    # ---- waiting with a deadline ------------------------------------------------------------
    def _wait(self, request, what):
        """Poll ``request``: spin for a moment (most waits are short), then yield the core in
        short sleeps so a waiting rank does not steal it from a busy one on a shared node."""
        if request.Test():
            return
        start = time.monotonic()
        spin_until, deadline = start + 2e-3, start + self.timeout
        while not request.Test():
            now = time.monotonic()
            if now > spin_until:
                if now > deadline:
                    self._timed_out(what)
                time.sleep(5e-5)

    def _timed_out(self, what):
        sys.stderr.write(
            f"minidl.distributed: rank {self.rank}: {what} did not complete within "
            f"{self.timeout:.0f} s (another rank died, or skipped the collective); aborting the "
            "job\n")
        sys.stderr.flush()
        self.abort(1)

    # ---- host staging -------------------------------------------------------------------------
    @staticmethod
    def _host(arr):
        """A C-contiguous host array holding arr's values (arr itself when it already is one)."""
        if device_of(arr) == "cuda":
            return np.ascontiguousarray(to_device(arr, "cpu"))
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)

    @staticmethod
    def _write_back(arr, host):
        if host is arr:
            return
        if device_of(arr) == "cuda":
            arr[...] = to_device(host, "cuda")
        else:
            arr[...] = host

    # ---- collectives --------------------------------------------------------------------------
    def all_reduce(self, arr, op):
        host = self._host(arr)
        half = host.dtype.name in _HALF_KINDS
        buf = host.astype(np.float32) if half else host
        if buf.dtype == np.bool_:
            buf = buf.view(np.uint8)
            op = {"sum": "max", "min": "min"}.get(op, op)  # logical or / and
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self._ops[op]), "all_reduce")
        if op == "avg":
            buf *= buf.dtype.type(1.0 / self.size)
        if half:
            host[...] = buf
        self._write_back(arr, host)

    def broadcast(self, arr, src):
        host = self._host(arr)
        self._wait(self.comm.Ibcast(_raw(host), root=src), "broadcast")
        self._write_back(arr, host)

    def all_gather(self, arr):
        host = self._host(arr)
        out = np.empty((self.size,) + host.shape, dtype=host.dtype)
        self._wait(self.comm.Iallgather(_raw(host), _raw(out)), "all_gather")
        return to_device(out, device_of(arr))

    def all_gather_object(self, obj):
        self.barrier()  # the pickled gather below blocks: reach it only when every rank can
        return self.comm.allgather(obj)

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "barrier")

    def abort(self, code=1):
        self.comm.Abort(code)

    def close(self):
        self.comm.Free()


def _raw(host):
    """A buffer MPI can move whatever the element type: 16-bit floats and bools as raw words."""
    if host.dtype.name in _HALF_KINDS:
        return host.view(np.uint16)
    if host.dtype == np.bool_:
        return host.view(np.uint8)
    return host
