"""DDP communication hooks, as ``torch.distributed.algorithms.ddp_comm_hooks``:
``model.register_comm_hook(state, hook)`` with ``hook(state, bucket) -> Future`` of the bucket's
averaged gradients (see ``default_hooks``)."""
from . import default_hooks  # noqa: F401
from .default_hooks import GradBucket  # noqa: F401
