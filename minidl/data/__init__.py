"""Datasets, samplers and minibatch loading (torch.utils.data's names)."""
from .collate import default_collate, default_convert
from .dataset import (ChainDataset, ConcatDataset, Dataset, IterableDataset, StackDataset,
                      Subset, TensorDataset, random_split)
from .loader import DataLoader, get_worker_info
from .sampler import (BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler,
                      SubsetRandomSampler, WeightedRandomSampler)

__all__ = ["Dataset", "TensorDataset", "StackDataset", "Subset", "random_split", "DataLoader",
           "DistributedSampler", "IterableDataset", "ConcatDataset", "ChainDataset", "Sampler",
           "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler",
           "BatchSampler", "default_collate", "default_convert", "get_worker_info", "StackDataset"]
