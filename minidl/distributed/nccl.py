"""The NCCL process group: CuPy arrays are reduced by NCCL (``cupy.cuda.nccl``) on the current
CUDA stream, so a collective is ordered after the kernels that produced its input and before
the ones that read its output, without a host synchronisation. Host (numpy) arrays go through
the MPI group this one is built on; MPI also carries NCCL's unique id from rank 0 to the others.

Each rank drives one GPU, the one of its local rank: NCCL refuses two ranks on one GPU, so
ranks sharing a GPU must use the mpi backend.
"""
from __future__ import annotations

from ..backend import device_of
from .mpi import Done


class NCCLGroup:
    name = "nccl"

    def __init__(self, mpi_group):
        from .. import backend

        cp = backend.require_cuda()
        try:
            from cupy.cuda import nccl
        except ImportError as exc:
            raise RuntimeError(f"backend 'nccl' needs CuPy built with NCCL ({exc}); use "
                               "backend='mpi' instead") from None
        self.mpi, self.nccl, self.cp = mpi_group, nccl, cp
        self.rank, self.size = mpi_group.rank, mpi_group.size
        self.local_rank, self.local_size = mpi_group.local_rank, mpi_group.local_size
        self.timeout = mpi_group.timeout
        n_gpus = cp.cuda.runtime.getDeviceCount()
        if self.local_size > n_gpus:
            raise RuntimeError(
                f"backend 'nccl': {self.local_size} ranks on this node but {n_gpus} GPU(s); "
                "NCCL needs one GPU per rank (start fewer ranks per node, or use backend='mpi', "
                "which lets ranks share a GPU)")
        cp.cuda.Device(self.local_rank).use()  # before the communicator binds to a device
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi_group.comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._dtypes = {name: getattr(nccl, const) for name, const in (
            ("int8", "NCCL_INT8"), ("uint8", "NCCL_UINT8"), ("int32", "NCCL_INT32"),
            ("uint32", "NCCL_UINT32"), ("int64", "NCCL_INT64"), ("uint64", "NCCL_UINT64"),
            ("float16", "NCCL_FLOAT16"), ("float32", "NCCL_FLOAT32"),
            ("float64", "NCCL_FLOAT64"), ("bfloat16", "NCCL_BFLOAT16")) if hasattr(nccl, const)}
        self._ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN,
                     "product": getattr(nccl, "NCCL_PROD", None)}
        self._avg = getattr(nccl, "NCCL_AVG", None)  # NCCL >= 2.10

    def _stream(self):
        return self.cp.cuda.get_current_stream().ptr

    @staticmethod
    def _ptr(buf):
        return buf.data.ptr

    def _device_buffer(self, arr):
        """(buffer, nccl dtype, copied): a C-contiguous device array of arr's values (arr, or a
        view of it, unless ``copied``) in a type NCCL moves; bools travel as bytes."""
        copied = not arr.flags.c_contiguous
        buf = self.cp.ascontiguousarray(arr) if copied else arr
        if buf.dtype == bool:
            buf = buf.view(self.cp.uint8)
        if buf.dtype.name not in self._dtypes:
            raise TypeError(f"backend 'nccl' cannot move dtype {arr.dtype}")
        return buf, self._dtypes[buf.dtype.name], copied

    def _nccl_op(self, op, arr):
        """(NCCL op, whether the result still needs scaling by 1/size for 'avg')."""
        if op not in ("sum", "avg", "max", "min", "product"):
            raise TypeError(f"backend 'nccl' has no {op!r} reduction (bitwise reductions run "
                            "on host arrays, through MPI)")
        if arr.dtype == bool:
            op = {"sum": "max", "product": "min"}.get(op, op)
        if op == "avg" and self._avg is not None:
            return self._avg, False
        return self._ops["sum" if op == "avg" else op], op == "avg"

    def all_reduce(self, arr, op):
        if device_of(arr) != "cuda":
            return self.mpi.all_reduce(arr, op)
        buf, dtype, copied = self._device_buffer(arr)
        nccl_op, scale = self._nccl_op(op, arr)
        self.comm.allReduce(self._ptr(buf), self._ptr(buf), buf.size, dtype, nccl_op, self._stream())
        if scale:
            buf *= buf.dtype.type(1.0 / self.size)
        if copied:
            arr[...] = buf.view(arr.dtype)
        return Done()

    def reduce(self, arr, op, root):
        if device_of(arr) != "cuda":
            return self.mpi.reduce(arr, op, root)
        buf, dtype, copied = self._device_buffer(arr)
        nccl_op, scale = self._nccl_op(op, arr)
        out = buf if self.rank == root else self.cp.empty_like(buf)  # others keep their values
        self.comm.reduce(self._ptr(buf), self._ptr(out), buf.size, dtype, nccl_op, root,
                         self._stream())
        if self.rank == root:
            if scale:
                buf *= buf.dtype.type(1.0 / self.size)
            if copied:
                arr[...] = buf.view(arr.dtype)
        return Done()

    def broadcast(self, arr, src):
        if device_of(arr) != "cuda":
            return self.mpi.broadcast(arr, src)
        buf, dtype, copied = self._device_buffer(arr)
        self.comm.bcast(self._ptr(buf), buf.size, dtype, src, self._stream())
        if copied:
            arr[...] = buf.view(arr.dtype)
        return Done()

    def all_gather(self, arr, out=None):
        if device_of(arr) != "cuda":
            return self.mpi.all_gather(arr, out)
        buf, dtype, _ = self._device_buffer(arr)
        res = self.cp.empty((self.size,) + buf.shape, dtype=buf.dtype)
        self.comm.allGather(self._ptr(buf), self._ptr(res), buf.size, dtype, self._stream())
        res = res.view(arr.dtype)
        if out is not None:
            out[...] = res.reshape(out.shape)
            res = out
        return Done(res)

    def reduce_scatter(self, out, stacked, op):
        if device_of(stacked) != "cuda":
            return self.mpi.reduce_scatter(out, stacked, op)
        buf, dtype, _ = self._device_buffer(stacked)
        nccl_op, scale = self._nccl_op(op, stacked)
        res = self.cp.empty(buf.shape[1:], dtype=buf.dtype)
        self.comm.reduceScatter(self._ptr(buf), self._ptr(res), res.size, dtype, nccl_op,
                                self._stream())
        if scale:
            res *= res.dtype.type(1.0 / self.size)
        out[...] = res.view(out.dtype)
        return Done()

    # gather, scatter, all_to_all and point-to-point: through MPI, staged in host memory (the
    # copy down waits for the kernels that produced the input)
    def gather(self, arr, root):
        return self.mpi.gather(arr, root)

    def scatter(self, out, stacked, root):
        return self.mpi.scatter(out, stacked, root)

    def all_to_all(self, out, inp, send_counts=None, recv_counts=None):
        return self.mpi.all_to_all(out, inp, send_counts, recv_counts)

    def send(self, arr, dst, tag):
        return self.mpi.send(arr, dst, tag)

    def recv(self, arr, src, tag):
        return self.mpi.recv(arr, src, tag)

    def all_gather_object(self, obj):
        return self.mpi.all_gather_object(obj)

    def gather_object(self, obj, root):
        return self.mpi.gather_object(obj, root)

    def broadcast_object(self, obj, root):
        return self.mpi.broadcast_object(obj, root)

    def scatter_object(self, objs, root):
        return self.mpi.scatter_object(objs, root)

    def agree(self, values, describe, what):
        return self.mpi.agree(values, describe, what)

    def monitored_barrier(self, seconds, wait_all, names):
        self.cp.cuda.get_current_stream().synchronize()
        return self.mpi.monitored_barrier(seconds, wait_all, names)

    def subgroup(self, ranks, local=False):
        sub = self.mpi.subgroup(ranks, local)
        return None if sub is None else NCCLGroup(sub)

    def barrier(self):
        self.barrier_async().wait()

    def barrier_async(self):
        self.cp.cuda.get_current_stream().synchronize()  # this rank's collectives have run
        return self.mpi.barrier_async()

    def abort(self, code=1):
        try:
            self.comm.abort()  # frees the GPU kernels waiting for a peer that will not come
        finally:
            self.mpi.abort(code)

    def close(self):
        self.cp.cuda.get_current_stream().synchronize()
        self.comm.destroy()
        self.mpi.close()
