"""The stock DDP communication hooks (``torch.distributed.algorithms.ddp_comm_hooks.
default_hooks``). A hook receives a ``GradBucket`` (one flat buffer of gradients) and returns a
Future whose value is the buffer averaged over the ranks.

- ``allreduce_hook``: what DDP does without a hook (divide by the world size, then sum).
- ``fp16_compress_hook`` / ``bf16_compress_hook``: the buffer travels as float16 / bfloat16
  (half the bytes), and is written back in its own dtype.
"""
from __future__ import annotations

from ... import all_reduce, get_world_size

__all__ = ["GradBucket", "allreduce_hook", "fp16_compress_hook", "bf16_compress_hook"]


class GradBucket:
    """One bucket of gradients, flattened: ``buffer()`` is a Tensor over the flat gradients
    (writing to it writes the bucket), ``gradients()``/``parameters()`` in bucket order."""

    def __init__(self, index, flat, params, offsets, is_last):
        self._index, self._flat, self._params = index, flat, params
        self._offsets, self._is_last = offsets, is_last

    def index(self) -> int:
        return self._index

    def buffer(self):
        from ....tensor import Tensor

        return Tensor(self._flat)

    def set_buffer(self, tensor):
        self._flat[...] = tensor.data if hasattr(tensor, "data") else tensor

    def gradients(self):
        from ....tensor import Tensor

        return [Tensor(self._flat[off:off + p.data.size].reshape(p.data.shape))
                for p, off in zip(self._params, self._offsets)]

    def parameters(self):
        return list(self._params)

    def is_last(self) -> bool:
        return self._is_last


def allreduce_hook(process_group, bucket):
    """Average the bucket over the ranks of ``process_group`` (None: the world)."""
    buf = bucket.buffer()
    buf.data *= buf.data.dtype.type(1.0 / get_world_size(process_group))
    return all_reduce(buf, group=process_group, async_op=True).get_future().then(
        lambda fut: fut.value()[0])


def _compress_hook(dtype, process_group, bucket):
    from .... import backend

    buf = bucket.buffer()
    world = get_world_size(process_group)
    small = buf.data.astype(dtype) if dtype != "bfloat16" else \
        buf.data.astype(backend.dtypes.bfloat16_dtype())
    small *= small.dtype.type(1.0 / world)
    from ....tensor import Tensor

    packed = Tensor(small)

    def decompress(fut):
        buf.data[...] = fut.value()[0].data.astype(buf.data.dtype)
        return buf
    return all_reduce(packed, group=process_group, async_op=True).get_future().then(decompress)


def fp16_compress_hook(process_group, bucket):
    """Average the bucket in float16 (half the bytes on the wire), written back in its dtype."""
    return _compress_hook("float16", process_group, bucket)


def bf16_compress_hook(process_group, bucket):
    """As ``fp16_compress_hook``, in bfloat16 (float32's range, fewer mantissa bits)."""
    return _compress_hook("bfloat16", process_group, bucket)
