"""``torch.utils.data.distributed``'s path: ``from minidl.utils.data.distributed import
DistributedSampler`` (the class is ``minidl.data.DistributedSampler``)."""
from .sampler import DistributedSampler

__all__ = ["DistributedSampler"]
