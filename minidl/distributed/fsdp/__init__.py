"""torch.distributed.fsdp: FullyShardedDataParallel (FSDP1's API) and its option types,
fully_shard (FSDP2's API) and its policies; the auto-wrap policies are in
minidl.distributed.fsdp.wrap."""
from .api import (BackwardPrefetch, CPUOffload, FullOptimStateDictConfig, FullStateDictConfig,
                  LocalOptimStateDictConfig, LocalStateDictConfig, MixedPrecision,
                  OptimStateDictConfig, ShardedOptimStateDictConfig, ShardedStateDictConfig,
                  ShardingStrategy, StateDictConfig, StateDictType)
from ._fully_shard import (CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy,
                           fully_shard)
from .fully_sharded_data_parallel import FlatParameter, FullyShardedDataParallel

__all__ = ["FullyShardedDataParallel", "FlatParameter", "ShardingStrategy", "BackwardPrefetch",
           "StateDictType", "MixedPrecision", "CPUOffload", "StateDictConfig",
           "FullStateDictConfig", "ShardedStateDictConfig", "LocalStateDictConfig",
           "OptimStateDictConfig", "FullOptimStateDictConfig", "ShardedOptimStateDictConfig",
           "LocalOptimStateDictConfig", "fully_shard", "FSDPModule", "MixedPrecisionPolicy",
           "OffloadPolicy", "CPUOffloadPolicy"]
