"""The MPI process group: collectives through mpi4py on host arrays; CuPy arrays are staged
through host memory (a copy down, the collective, a copy back up).

Every collective is started non-blocking and polled, so that one that never completes (a rank
died without aborting, or skipped it) aborts the job after the group's timeout instead of
hanging it. A rank that leaves (exits, or destroys its group) tells the others on a side
channel: one still waiting in a collective that does not complete within LEAVE_GRACE seconds
after that aborts the job at once (a rank that called sys.exit(1) mid-run would otherwise hold
the others until the timeout).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from ..backend import device_of, to_device

# dtypes MPI has no reduction for: reduced in float32, moved as raw 16-bit words otherwise
_HALF_KINDS = ("float16", "bfloat16")
LEAVE_GRACE = 5.0  # seconds a collective may still take to finish after a peer left


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
        # the side channel for "rank r has left": one receive posted for the first notice
        self.notices = self.comm.Dup()
        self._notice = np.zeros(1, dtype=np.int64)
        self._notice_req = self.notices.Irecv(self._notice, source=MPI.ANY_SOURCE, tag=1)
        self._peer_left_at = None
        self._left = False
        import atexit

        atexit.register(self.leave)  # runs before mpi4py's MPI_Finalize (registered earlier)

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
                if self._peer_left_at is None and self._notice_req.Test():
                    self._peer_left_at = now
                if self._peer_left_at is not None and now > max(self._peer_left_at,
                                                                start) + LEAVE_GRACE:
                    self._peer_gone(what)
                time.sleep(5e-5)

    def _peer_gone(self, what):
        sys.stderr.write(
            f"minidl.distributed: rank {self.rank}: rank {int(self._notice[0])} left the job "
            f"while this rank waited in {what}; aborting the job\n")
        sys.stderr.flush()
        self.abort(1)

    def leave(self):
        """Tell the other ranks that this one is leaving (see the module's docstring)."""
        if self._left:
            return
        self._left = True
        if not self._notice_req.Test():
            self._notice_req.Cancel()
            self._notice_req.Wait()
        note = np.array([self.rank], dtype=np.int64)
        sends = [self.notices.Isend(note, dest=r, tag=1) for r in range(self.size) if r != self.rank]
        deadline = time.monotonic() + 1.0  # a small message: delivered eagerly, or not at all
        while sends and not self.MPI.Request.Testall(sends) and time.monotonic() < deadline:
            time.sleep(1e-4)

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
        self.leave()
        self.comm.Free()


def _raw(host):
    """A buffer MPI can move whatever the element type: 16-bit floats and bools as raw words."""
    if host.dtype.name in _HALF_KINDS:
        return host.view(np.uint16)
    if host.dtype == np.bool_:
        return host.view(np.uint8)
    return host
