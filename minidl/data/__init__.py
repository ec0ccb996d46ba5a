"""Datasets and minibatch loading."""
from .dataset import Dataset, TensorDataset, Subset, random_split
from .loader import DataLoader
from .sampler import DistributedSampler

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "DataLoader",
           "DistributedSampler"]
