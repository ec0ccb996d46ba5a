"""What a checkpoint's metadata file describes (torch.distributed.checkpoint.metadata's names),
and FlatShard, the piece of a sharded tensor one rank holds (minidl has no DTensor)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...backend import to_numpy
from ...tensor import Tensor

__all__ = ["Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
           "FlatShard"]


@dataclass
class ChunkStorageMetadata:
    """Elements [offset, offset + length) of the tensor flattened in row-major order, stored
    in ``file`` at byte ``byte_offset``."""
    offset: int
    length: int
    file: str = ""
    byte_offset: int = 0
    crc32: int = 0


@dataclass
class TensorStorageMetadata:
    size: tuple
    dtype: str
    chunks: list = field(default_factory=list)


@dataclass
class BytesStorageMetadata:
    """A non-tensor value (pickled)."""
    file: str = ""
    byte_offset: int = 0
    length: int = 0
    crc32: int = 0


@dataclass
class Metadata:
    """``state_dict_metadata``: the dotted key of every value saved -> its storage metadata."""
    state_dict_metadata: dict
    world_size: int = 1
    version: int = 1


class FlatShard:
    """This rank's piece of a tensor sharded over ranks: elements ``[offset, offset +
    local.numel)`` of the whole tensor (of shape ``shape``) flattened in row-major order.
    ``get_model_state_dict`` / ``get_optimizer_state_dict`` give these for FSDP models (where
    torch gives DTensors); ``save`` writes each rank's pieces, and ``load`` fills a FlatShard
    in place from whatever pieces the checkpoint holds (saved by any number of ranks)."""

    def __init__(self, local, shape, offset):
        self.local = local if isinstance(local, Tensor) else Tensor(np.asarray(local))
        if self.local.data.ndim != 1:
            raise ValueError(f"FlatShard: the local piece must be 1-D, got shape "
                             f"{tuple(self.local.data.shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.offset = int(offset)
        total = int(np.prod(self.shape, dtype=np.int64))
        if self.offset < 0 or self.offset + self.local.data.size > total:
            raise ValueError(f"FlatShard: elements [{self.offset}, "
                             f"{self.offset + self.local.data.size}) do not fit in a tensor of "
                             f"shape {self.shape} ({total} elements)")

    @property
    def dtype(self):
        return self.local.data.dtype

    def to_local(self):
        return self.local

    def numpy(self):
        return to_numpy(self.local.data)

    def __repr__(self):
        return (f"FlatShard(shape={self.shape}, elements [{self.offset}, "
                f"{self.offset + self.local.data.size}), dtype={self.dtype})")
