"""``torch.distributed.algorithms``: DDP communication hooks and Join (uneven inputs)."""
from . import ddp_comm_hooks  # noqa: F401
from .join import Join, Joinable, JoinHook  # noqa: F401
