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
    """One process group on MPI. The world group (``parent`` None) duplicates COMM_WORLD and
    watches the side channel for ranks that leave; a subgroup (``new_group``) runs on its own
    communicator, split from its parent's, and shares the world's watch and timeout."""
    name = "mpi"

    def __init__(self, timeout, comm=None, parent=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.world = self if parent is None else parent.world
        # a private communicator: the user's own MPI traffic on COMM_WORLD never mixes with ours
        self.comm = MPI.COMM_WORLD.Dup() if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.timeout = timeout
        self.monitor = self.comm.Dup()  # monitored_barrier's own messages
        self._ops = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN,
                     "product": MPI.PROD, "band": MPI.BAND, "bor": MPI.BOR, "bxor": MPI.BXOR}
        self._left = parent is not None  # only the world group says goodbye
        if parent is not None:
            return
        # the side channel for "rank r has left": one receive posted for the first notice
        self.notices = self.comm.Dup()
        self._notice = np.zeros(1, dtype=np.int64)
        self._notice_req = self.notices.Irecv(self._notice, source=MPI.ANY_SOURCE, tag=1)
        self._peer_left_at = None
        import atexit

        atexit.register(self.leave)  # runs before mpi4py's MPI_Finalize (registered earlier)

    def subgroup(self, ranks, local=False):
        """A group of ``ranks`` (ranks of this group, in that order), or None on a rank not in
        it. Every rank of this group must call it, as torch's new_group; with ``local``
        (torch's use_local_synchronization) only the ranks in it do (MPI_Comm_create_group)."""
        MPI = self.MPI
        if local:
            if self.rank not in ranks:
                return None
            everyone = self.comm.Get_group()
            members = everyone.Incl(list(ranks))
            comm = self.comm.Create_group(members)
            members.Free()
            everyone.Free()
            return MPIGroup(self.timeout, comm=comm, parent=self)
        color = 0 if self.rank in ranks else MPI.UNDEFINED
        key = ranks.index(self.rank) if self.rank in ranks else 0
        comm = self.comm.Split(color, key)
        if comm == MPI.COMM_NULL:
            return None
        return MPIGroup(self.timeout, comm=comm, parent=self)

    # ---- waiting with a deadline ------------------------------------------------------------
    def _wait(self, request, what, status=None):
        """Poll ``request`` (filling ``status`` if given): spin for a moment (most waits are
        short), then yield the core in short sleeps so a waiting rank does not steal it from a
        busy one on a shared node."""
        plain = request.Test if status is None else (lambda: request.Test(status))

        def test():
            try:
                return plain()
            except self.MPI.Exception as exc:
                first = exc.Get_error_string().splitlines()[0].replace(", error stack:", "")
                hint = " (the message is larger than the receiving tensor)" \
                    if exc.Get_error_class() == self.MPI.ERR_TRUNCATE else ""
                raise RuntimeError(f"{what}: MPI reported an error: {first}{hint}") from None
        if test():
            return
        world = self.world
        start = time.monotonic()
        spin_until, deadline = start + 2e-3, start + self.timeout
        while not test():
            now = time.monotonic()
            if now > spin_until:
                if now > deadline:
                    self._timed_out(what)
                if world._peer_left_at is None and world._notice_req.Test():
                    world._peer_left_at = now
                if world._peer_left_at is not None and now > max(world._peer_left_at,
                                                                 start) + LEAVE_GRACE:
                    self._peer_gone(what)
                time.sleep(5e-5)

    def _peer_gone(self, what):
        sys.stderr.write(
            f"minidl.distributed: rank {self.world.rank}: rank {int(self.world._notice[0])} "
            f"left the job while this rank waited in {what}; aborting the job\n")
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
            f"minidl.distributed: rank {self.world.rank}: {what} did not complete within "
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

    def _reducible(self, host, op):
        """(buffer to reduce in, MPI op, whether it is a float32 copy of 16-bit floats)."""
        half = host.dtype.name in _HALF_KINDS
        buf = host.astype(np.float32) if half else _real_pairs(host)
        if buf.dtype == np.bool_:
            buf = buf.view(np.uint8)
            op = {"sum": "max", "min": "min", "product": "min", "band": "band",
                  "bor": "bor", "bxor": "bxor"}.get(op, op)  # logical or / and
        return buf, self._ops[op], half

    def _reduced(self, op, buf, host, half, arr):
        """The finishing step of a reduction into ``buf``: the 1/size of 'avg', the float32
        copy back into 16-bit ``host``, and ``host`` back into ``arr``."""
        def finish():
            if op == "avg":
                buf[...] *= buf.dtype.type(1.0 / self.size)
            if half:
                host[...] = buf
            self._write_back(arr, host)
        return finish

    def _pending(self, request, what, finish=None):
        return Pending(self, request, what, finish)

    # ---- collectives: each starts its operation and returns a Pending ---------------------------
    def all_reduce(self, arr, op):
        host = self._host(arr)
        buf, mpi_op, half = self._reducible(host, op)

        return self._pending(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=mpi_op),
                             "all_reduce", self._reduced(op, buf, host, half, arr))

    def reduce(self, arr, op, root):
        host = self._host(arr)
        buf, mpi_op, half = self._reducible(host, op)
        if self.rank == root:
            request = self.comm.Ireduce(self.MPI.IN_PLACE, buf, op=mpi_op, root=root)
        else:
            request = self.comm.Ireduce(buf, None, op=mpi_op, root=root)

        # only the destination's array receives the result
        finish = self._reduced(op, buf, host, half, arr) if self.rank == root else None
        return self._pending(request, "reduce", finish)

    def broadcast(self, arr, src):
        host = self._host(arr)
        return self._pending(self.comm.Ibcast(_raw(host), root=src), "broadcast",
                             lambda: self._write_back(arr, host))

    def all_gather(self, arr, out=None):
        """Every rank's ``arr`` stacked, (size, *arr.shape), into ``out`` if given (an array
        of that many elements) else a new array; the Pending's result is it."""
        host = self._host(arr)
        hout = np.empty((self.size,) + host.shape, dtype=host.dtype)
        request = self.comm.Iallgather(_raw(host), _raw(hout))
        return self._pending(request, "all_gather", lambda: _deliver(hout, arr, out))

    def gather(self, arr, root):
        host = self._host(arr)
        hout = np.empty((self.size,) + host.shape, dtype=host.dtype) if self.rank == root else None
        request = self.comm.Igather(_raw(host), _raw(hout) if hout is not None else None,
                                    root=root)
        return self._pending(request, "gather",
                             lambda: None if hout is None else to_device(hout, device_of(arr)))

    def scatter(self, out, stacked, root):
        """Rank ``root``'s ``stacked`` (size, *out.shape), one slice to each rank's ``out``."""
        hin = self._host(stacked) if self.rank == root else None
        hout = self._host(out)
        request = self.comm.Iscatter(_raw(hin) if hin is not None else None, _raw(hout),
                                     root=root)
        return self._pending(request, "scatter", lambda: self._write_back(out, hout))

    def reduce_scatter(self, out, stacked, op):
        """Slice r of the reduction of every rank's ``stacked`` (size, *out.shape) into rank r's
        ``out``."""
        hin = self._host(stacked)
        hout = self._host(out)
        bin_, mpi_op, half = self._reducible(hin, op)
        bout = hout.astype(np.float32) if half else _real_pairs(hout)
        if bout.dtype == np.bool_:
            bout = bout.view(np.uint8)
        request = self.comm.Ireduce_scatter_block(bin_, bout, op=mpi_op)

        return self._pending(request, "reduce_scatter", self._reduced(op, bout, hout, half, out))

    def all_to_all(self, out, inp, send_counts=None, recv_counts=None):
        """Rank r's slice j of ``inp`` to rank j's slice r of ``out`` (split along the first
        axis: equal slices, or rows counted by send_counts/recv_counts)."""
        hin, hout = self._host(inp), self._host(out)
        if send_counts is None:
            request = self.comm.Ialltoall(_raw(hin), _raw(hout))
        else:
            row_in = int(np.prod(hin.shape[1:], dtype=np.int64))
            row_out = int(np.prod(hout.shape[1:], dtype=np.int64))
            sc = [c * row_in for c in send_counts]
            rc = [c * row_out for c in recv_counts]
            sd = np.concatenate([[0], np.cumsum(sc)[:-1]]).astype(int).tolist()
            rd = np.concatenate([[0], np.cumsum(rc)[:-1]]).astype(int).tolist()
            request = self.comm.Ialltoallv([_raw(hin), (sc, sd)], [_raw(hout), (rc, rd)])
        return self._pending(request, "all_to_all", lambda: self._write_back(out, hout))

    def send(self, arr, dst, tag):
        host = self._host(arr)
        return self._pending(self.comm.Isend(_raw(host), dest=dst, tag=tag), "send")

    def recv(self, arr, src, tag):
        """Receive into ``arr`` from rank ``src`` (None: any rank); the result is the sender."""
        host = self._host(arr)
        if not host.flags.writeable:
            host = host.copy()
        status = self.MPI.Status()
        source = self.MPI.ANY_SOURCE if src is None else src
        request = self.comm.Irecv(_raw(host), source=source, tag=tag)

        def finish():
            got = status.Get_count(self.MPI.BYTE)
            sender = src if src is not None else status.Get_source()
            if got != host.nbytes:
                raise ValueError(f"recv: the message from rank {sender} holds {got} bytes, the "
                                 f"receiving tensor {host.nbytes} ({host.dtype}, shape "
                                 f"{tuple(host.shape)}); send and receive tensors of one size")
            self._write_back(arr, host)
            return sender
        return Pending(self, request, "recv", finish, status=status)

    # ---- agreement: every rank called the same collective with matching arguments -------------
    def agree(self, values, describe, what):
        """Check that ``values`` (small integers: which collective, sizes, dtype, op, root) are
        the same on every rank, with one small all-reduce (max of v and of -v); if not, every
        rank learns it and raises the same ValueError, listing each rank's ``describe``, before
        any data moves: a mismatched collective would otherwise hang, or reduce only part of
        the data without a word."""
        v = np.asarray(values, dtype=np.int64)
        both = np.concatenate([v, -v])
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, both, op=self.MPI.MAX), what)
        if np.array_equal(both[:v.size], -both[v.size:]):
            return
        everyone = self.all_gather_object(describe)
        lines = "; ".join(f"rank {r}: {d}" for r, d in enumerate(everyone))
        raise ValueError(f"{what}: the ranks called collectives that do not match ({lines}); "
                         "every rank must call the same collective with tensors of the same "
                         "size and dtype")

    # ---- monitored barrier: a barrier that names the ranks that did not come -----------------
    def monitored_barrier(self, seconds, wait_all, names):
        """Rank 0 waits up to ``seconds`` for a message from each other rank, then answers
        each: 0 (all came) or 1 + the first missing rank. Raises RuntimeError, naming the
        missing ranks (``names``: their world ranks), instead of aborting the job."""
        MPI, comm = self.MPI, self.monitor
        deadline = time.monotonic() + seconds
        ms = int(round(seconds * 1000))
        if self.rank == 0:
            bufs = {r: np.zeros(1, dtype=np.int64) for r in range(1, self.size)}
            reqs = {r: comm.Irecv(bufs[r], source=r, tag=3) for r in bufs}
            pending = dict(reqs)
            while pending and time.monotonic() < deadline:
                pending = {r: q for r, q in pending.items() if not q.Test()}
                if pending:
                    time.sleep(1e-3)
            missing = sorted(pending)
            for q in pending.values():
                q.Cancel()
                q.Wait()
            verdict = np.array([0 if not missing else 1 + missing[0]], dtype=np.int64)
            acks = [comm.Isend(verdict, dest=r, tag=4) for r in bufs if r not in pending]
            done_by = time.monotonic() + 1.0
            while acks and not MPI.Request.Testall(acks) and time.monotonic() < done_by:
                time.sleep(1e-4)
            if missing:
                who = missing if wait_all else missing[:1]
                label = "Ranks" if len(who) > 1 else "Rank"
                raise RuntimeError(f"[Rank {names[0]}]: {label} "
                                   f"{', '.join(str(names[r]) for r in who)} failed to pass "
                                   f"monitoredBarrier in {ms} ms")
            return
        token = np.zeros(1, dtype=np.int64)
        send = comm.Isend(token, dest=0, tag=3)
        verdict = np.zeros(1, dtype=np.int64)
        recv = comm.Irecv(verdict, source=0, tag=4)
        while not recv.Test():
            if time.monotonic() > deadline + 1.0:  # rank 0 answers within a second of its own
                for q in (recv, send):
                    if not q.Test():
                        q.Cancel()
                        q.Wait()
                raise RuntimeError(f"[Rank {names[self.rank]}]: monitoredBarrier: rank "
                                   f"{names[0]} did not answer within {ms} ms (it did not "
                                   "reach the barrier in time, or this rank came too late)")
            time.sleep(1e-3)
        send.Wait()
        if verdict[0]:
            raise RuntimeError(f"[Rank {names[self.rank]}]: monitoredBarrier failed: rank "
                               f"{names[int(verdict[0]) - 1]} did not reach it within {ms} ms")

    # ---- picklable objects (small metadata): blocking calls, reached only when all can -------
    def all_gather_object(self, obj):
        self.barrier()  # the pickled gather below blocks: reach it only when every rank can
        return self.comm.allgather(obj)

    def gather_object(self, obj, root):
        self.barrier()
        return self.comm.gather(obj, root=root)

    def broadcast_object(self, obj, root):
        self.barrier()
        return self.comm.bcast(obj, root=root)

    def scatter_object(self, objs, root):
        self.barrier()
        return self.comm.scatter(objs, root=root)

    def barrier(self):
        self.barrier_async().wait()

    def barrier_async(self):
        return self._pending(self.comm.Ibarrier(), "barrier")

    def abort(self, code=1):
        self.world.comm.Abort(code)

    def close(self):
        if self.world is self:
            self.leave()
        self.monitor.Free()
        self.comm.Free()


class Pending:
    """A started MPI operation: ``wait()`` polls it to completion (with the group's deadline),
    then runs its finishing step (copy back, averaging) and returns that step's result."""

    def __init__(self, group, request, what, finish=None, status=None):
        self.group, self.request, self.what, self.finish = group, request, what, finish
        self.status = status
        self.done, self.value = False, None

    def wait(self):
        if not self.done:
            self.group._wait(self.request, self.what, self.status)
            self.done = True
            self.value = self.finish() if self.finish is not None else None
        return self.value

    def test(self):
        if self.done:
            return True
        if self.status is not None:
            ready = self.request.Test(self.status)
        else:
            ready = self.request.Test()
        if ready:
            self.done = True
            self.value = self.finish() if self.finish is not None else None
        return ready


class Done:
    """An operation that has already completed (or is ordered on the CUDA stream)."""

    def __init__(self, value=None):
        self.value, self.done = value, True

    def wait(self):
        return self.value

    def test(self):
        return True


def _deliver(hout, like, target):
    """A gathered host array on ``like``'s device, copied into ``target`` when one is given."""
    res = to_device(hout, device_of(like))
    if target is not None:
        target[...] = res.reshape(target.shape)
        return target
    return res


def _real_pairs(host):
    """A complex host array as a flat view of its (real, imag) floats (sums and averages of
    those are the complex ones); any other array as it is."""
    if host.dtype.kind != "c":
        return host
    return host.reshape(-1).view(host.real.dtype)


def _raw(host):
    """A buffer MPI can move whatever the element type: 16-bit floats and bools as raw words."""
    if host.dtype.name in _HALF_KINDS:
        return host.view(np.uint16)
    if host.dtype == np.bool_:
        return host.view(np.uint8)
    return host
