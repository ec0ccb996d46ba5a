"""The option types of FullyShardedDataParallel, under torch.distributed.fsdp's names."""
from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ShardingStrategy", "BackwardPrefetch", "StateDictType", "MixedPrecision",
           "CPUOffload", "FullStateDictConfig", "ShardedStateDictConfig", "LocalStateDictConfig",
           "StateDictConfig", "FullOptimStateDictConfig", "ShardedOptimStateDictConfig",
           "LocalOptimStateDictConfig", "OptimStateDictConfig"]


class ShardingStrategy(enum.Enum):
    FULL_SHARD = 1      # parameters, gradients and optimizer state sharded
    SHARD_GRAD_OP = 2   # gradients and optimizer state sharded; parameters kept to backward
    NO_SHARD = 3        # nothing sharded: gradients all-reduced, as DDP
    HYBRID_SHARD = 4
    _HYBRID_SHARD_ZERO2 = 5


class BackwardPrefetch(enum.Enum):
    BACKWARD_PRE = 1
    BACKWARD_POST = 2


class StateDictType(enum.Enum):
    FULL_STATE_DICT = 1
    LOCAL_STATE_DICT = 2
    SHARDED_STATE_DICT = 3


@dataclass
class MixedPrecision:
    """``param_dtype``: the dtype the gathered parameters (and the root's floating inputs) are
    cast to for forward and backward; ``reduce_dtype``: the dtype gradients are reduced in
    (param_dtype when None); ``buffer_dtype``: buffers are cast to it when wrapped. The shards
    the optimizer steps keep the model's own dtype."""
    param_dtype: object = None
    reduce_dtype: object = None
    buffer_dtype: object = None
    keep_low_precision_grads: bool = False
    cast_forward_inputs: bool = False
    cast_root_forward_inputs: bool = True
    _module_classes_to_ignore: tuple = ()


@dataclass
class CPUOffload:
    offload_params: bool = False


@dataclass
class StateDictConfig:
    offload_to_cpu: bool = False


@dataclass
class FullStateDictConfig(StateDictConfig):
    rank0_only: bool = False


@dataclass
class ShardedStateDictConfig(StateDictConfig):
    _use_dtensor: bool = False


@dataclass
class LocalStateDictConfig(StateDictConfig):
    pass


@dataclass
class OptimStateDictConfig:
    offload_to_cpu: bool = True


@dataclass
class FullOptimStateDictConfig(OptimStateDictConfig):
    rank0_only: bool = False


@dataclass
class ShardedOptimStateDictConfig(OptimStateDictConfig):
    _use_dtensor: bool = False


@dataclass
class LocalOptimStateDictConfig(OptimStateDictConfig):
    offload_to_cpu: bool = False
