"""The NCCL process group: CuPy arrays are reduced by NCCL (``cupy.cuda.nccl``) on the current
CUDA stream, so a collective is ordered after the kernels that produced its input and before
the ones that read its output, without a host synchronisation. Host (numpy) arrays go through
the MPI group this one is built on; MPI also carries NCCL's unique id from rank 0 to the others.

Each rank drives one GPU, the one of its local rank: NCCL refuses two ranks on one GPU, so
ranks sharing a GPU must use the mpi backend.
"""
from __future__ import annotations

from ..backend import device_of


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
        self._ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
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

    def all_reduce(self, arr, op):
        if device_of(arr) != "cuda":
            return self.mpi.all_reduce(arr, op)
        buf, dtype, copied = self._device_buffer(arr)
        if arr.dtype == bool:
            op = {"sum": "max"}.get(op, op)
        if op == "avg" and self._avg is not None:
            nccl_op = self._avg
        else:
            nccl_op = self._ops["sum" if op == "avg" else op]
        self.comm.allReduce(self._ptr(buf), self._ptr(buf), buf.size, dtype, nccl_op, self._stream())
        if op == "avg" and self._avg is None:
            buf *= buf.dtype.type(1.0 / self.size)
        if copied:
            arr[...] = buf.view(arr.dtype)

    def broadcast(self, arr, src):
        if device_of(arr) != "cuda":
            return self.mpi.broadcast(arr, src)
        buf, dtype, copied = self._device_buffer(arr)
        self.comm.bcast(self._ptr(buf), buf.size, dtype, src, self._stream())
        if copied:
            arr[...] = buf.view(arr.dtype)

    def all_gather(self, arr):
        if device_of(arr) != "cuda":
            return self.mpi.all_gather(arr)
        buf, dtype, _ = self._device_buffer(arr)
        out = self.cp.empty((self.size,) + buf.shape, dtype=buf.dtype)
        self.comm.allGather(self._ptr(buf), self._ptr(out), buf.size, dtype, self._stream())
        return out.view(arr.dtype)

    def all_gather_object(self, obj):
        return self.mpi.all_gather_object(obj)

    def barrier(self):
        self.cp.cuda.get_current_stream().synchronize()  # this rank's collectives have run
        self.mpi.barrier()

    def abort(self, code=1):
        try:
            self.comm.abort()  # frees the GPU kernels waiting for a peer that will not come
        finally:
            self.mpi.abort(code)

    def close(self):
        self.cp.cuda.get_current_stream().synchronize()
        self.comm.destroy()
        self.mpi.close()
