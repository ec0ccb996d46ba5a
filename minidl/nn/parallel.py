"""DistributedDataParallel: the same model on every rank, gradients averaged after backward.

    dist.init_process_group(backend="mpi")          # under mpiexec -n N
    model = DistributedDataParallel(model)          # every rank now holds rank 0's weights
    loss = F.cross_entropy(model(x), y)             # x: this rank's share of the batch
    loss.backward()                                 # ... and the gradients are averaged here
    optimizer.step()                                # the same step on every rank

The gradients are averaged in flat buckets of ``bucket_cap_mb`` (one collective per bucket,
not one per parameter) once the backward pass has finished. Batch statistics (BatchNorm) are
computed per rank, as in PyTorch; with ``broadcast_buffers`` (the default, as in PyTorch) rank
0's running statistics are copied to every rank at each training forward, so all ranks hold
and evaluate the same model.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .. import distributed as dist
from ..distributed.algorithms.join import Join, Joinable, JoinHook
from ..backend import device_of, get_array_module, to_device, to_numpy
from ..tensor import Function, Tensor, is_grad_enabled
from .module import Module


class _GradSync(Function):
    """Identity on the forward output; its ``after_backward`` averages the gradients."""

    def forward(self, x):
        return x

    def backward(self, g):
        return g

    def graph_backward(self, g, out):
        return g


class DistributedDataParallel(Module, Joinable):
    """``torch.nn.parallel.DistributedDataParallel``'s constructor. ``device_ids``: None, or
    the one device this rank's module is on (one GPU per process); ``process_group``: average
    over that group's ranks instead of the world's; ``bucket_cap_mb``: None means 4 MB here
    (the gradients are averaged after backward, so fewer, larger buckets cost nothing in
    overlap); ``init_sync=False`` skips broadcasting rank 0's weights. Unused parameters are
    always handled (a parameter no rank used keeps ``grad`` None, one that some ranks used is
    averaged over all), so ``find_unused_parameters`` needs no setting;
    ``gradient_as_bucket_view``, ``static_graph`` and ``check_reduction`` are accepted and
    change nothing."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0,
                 broadcast_buffers=True, init_sync=True, process_group=None, bucket_cap_mb=None,
                 find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False, **_torch_only):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an nn.Module, got "
                            f"{type(module).__name__}")
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: the default process group is not "
                               "initialised; call minidl.distributed.init_process_group() first")
        if bucket_cap_mb is None:
            bucket_cap_mb = 4.0
        if bucket_cap_mb <= 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got "
                             f"{bucket_cap_mb}")
        if device_ids is not None and len(list(device_ids)) > 1:
            raise ValueError(f"DistributedDataParallel: device_ids={list(device_ids)}: a module "
                             "runs on one device per process (one rank per GPU), so give at "
                             "most one")
        if process_group is dist.GroupMember.NON_GROUP_MEMBER:
            raise ValueError("DistributedDataParallel: this rank is not part of process_group")
        self.module = module
        self.device_ids = None if device_ids is None else list(device_ids)
        self.output_device, self.dim = output_device, dim
        self.broadcast_buffers = broadcast_buffers
        self.process_group = process_group
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view, self.static_graph = gradient_as_bucket_view, static_graph
        self.bucket_bytes = int(bucket_cap_mb * (1 << 20))
        self.require_backward_grad_sync = True
        self._buckets, self._layout = [], None
        self._comm_hook, self._comm_state = None, None
        self._join_context, self._join_scale, self._join_src = None, None, 0
        self._join_divide_by_world = True
        self._check_same_model()
        if init_sync:
            _broadcast_coalesced([t for _, t in self._named_state()], process_group)

    # ---- wrapping: every rank must hold the same architecture ---------------------------------
    def _named_state(self):
        return list(self.module.named_parameters()) + list(self.module.named_buffers())

    def _check_same_model(self):
        """Every rank must wrap the same parameters and buffers, in the same order, with the
        same shapes: otherwise the flat broadcasts and reductions would silently mix them up.
        Every rank sees every rank's list, so all of them raise the same error."""
        mine = [(name, tuple(t.shape), str(t.dtype)) for name, t in self._named_state()]
        everyone = [None] * dist.get_world_size(self.process_group)
        dist.all_gather_object(everyone, mine, group=self.process_group)
        ref = everyone[0]
        for rank, theirs in enumerate(everyone[1:], start=1):
            for (n0, s0, d0), (n, s, d) in zip(ref, theirs):
                if n0 != n:
                    raise ValueError(f"DistributedDataParallel: ranks hold different models: "
                                     f"rank 0 has {n0!r} where rank {rank} has {n!r}")
                if s0 != s or d0 != d:
                    raise ValueError(f"DistributedDataParallel: parameter {n!r} has shape {s0} "
                                     f"({d0}) on rank 0 but {s} ({d}) on rank {rank}")
            if len(ref) != len(theirs):
                longer, r = (ref, 0) if len(ref) > len(theirs) else (theirs, rank)
                extra = longer[min(len(ref), len(theirs))][0]
                raise ValueError(f"DistributedDataParallel: ranks hold different models: rank 0 "
                                 f"has {len(ref)} parameters and buffers, rank {rank} has "
                                 f"{len(theirs)} (the first extra one, on rank {r}: {extra!r})")

    # ---- the wrapped module shows through -----------------------------------------------------
    def forward(self, *args, **kwargs):
        sync = is_grad_enabled() and self.require_backward_grad_sync
        step = Join.notify_join_context(self, sync=sync)  # None outside model.join()
        if step is not None:
            self._join_step(step)
        if self.broadcast_buffers and self.training:
            buffers = list(self.module.buffers())
            if buffers:
                _broadcast_coalesced(buffers, self.process_group, self._join_src)
        out = self.module(*args, **kwargs)
        if sync:
            out = _attach(out, self._sync_gradients)
        return out

    def _join_step(self, step):
        """Under join(): this step's averaging divisor and buffer source (the highest rank
        still training, whose buffers are current)."""
        n = len(step.active) if not self._join_divide_by_world else \
            dist.get_world_size(self.process_group)
        self._join_scale = 1.0 / n
        self._join_src = max(step.active)

    def named_parameters(self, prefix="", recurse=True):
        return self.module.named_parameters(prefix, recurse)

    def named_buffers(self, prefix=""):
        return self.module.named_buffers(prefix)

    def state_dict(self):
        """The wrapped module's state dict, without a ``module.`` prefix."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict=True):
        return self.module.load_state_dict(state_dict, strict=strict)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes run inside accumulate local gradients only; the first one after it
        averages everything accumulated (gradient accumulation without a collective per
        micro-batch)."""
        previous, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # ---- communication hooks and uneven inputs -----------------------------------------------
    def register_comm_hook(self, state, hook):
        """Average each bucket with ``hook(state, bucket) -> Future`` instead of DDP's own
        all-reduce (torch's API; see minidl.distributed.algorithms.ddp_comm_hooks). The
        future's value (a Tensor of the bucket's size) becomes the averaged gradients. Once,
        before the first backward."""
        if self._comm_hook is not None:
            raise RuntimeError("register_comm_hook can only be called once.")
        if not callable(hook):
            raise TypeError(f"register_comm_hook: hook must be callable, got {type(hook).__name__}")
        self._comm_hook, self._comm_state = hook, state

    def join(self, divide_by_initial_world_size=True, enable=True,
             throw_on_early_termination=False):
        """A context in which ranks may run different numbers of steps (see
        minidl.distributed.algorithms.join). ``divide_by_initial_world_size=False`` averages
        each step's gradients over the ranks still training instead of all of them."""
        return Join([self], enable, throw_on_early_termination,
                    divide_by_initial_world_size=divide_by_initial_world_size)

    def join_hook(self, divide_by_initial_world_size=True, **kwargs):
        self._join_divide_by_world = divide_by_initial_world_size
        return _DDPJoinHook(self)

    @property
    def join_device(self):
        params = list(self.module.parameters())
        return device_of(params[0].data) if params else "cpu"

    @property
    def join_process_group(self):
        return self.process_group

    def extra_repr(self):
        return (f"world_size={dist.get_world_size(self.process_group)}, "
                f"bucket_cap_mb={self.bucket_bytes / 2**20:g}")

    # ---- gradient averaging -------------------------------------------------------------------
    def _plan_buckets(self, params):
        """Parameters in reverse order (the last layers' gradients are the first ready), cut into
        flat buckets of one device and dtype and at most bucket_bytes each. A bucket holds every
        gradient and, after them, one slot per parameter saying whether this rank has one."""
        open_buckets, buckets = {}, []
        for p in reversed(params):
            key = (device_of(p.data), p.data.dtype)
            b = open_buckets.get(key)
            if b is None or (b.size and (b.size + p.data.size) * p.data.itemsize > self.bucket_bytes):
                b = open_buckets[key] = _Bucket(*key)
                buckets.append(b)
            b.add(p)
        for b in buckets:
            b.allocate()
        return buckets

    def _sync_gradients(self, shadow=False):
        """Average the gradients over the ranks: one collective per bucket, or the comm hook's
        futures. ``shadow``: this rank has finished its data (join) and takes part with zeros,
        keeping its own gradients."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        layout = [(id(p), device_of(p.data), p.data.dtype, p.data.shape) for p in params]
        if layout != self._layout:
            self._buckets, self._layout = self._plan_buckets(params), layout
        group = self.process_group
        scale = self._join_scale or 1.0 / dist.get_world_size(group)
        for b in self._buckets:
            if shadow:
                b.flat[...] = 0  # no gradients, and no rank count
            else:
                b.pack()
        if self._comm_hook is None:
            for b in self._buckets:
                dist.all_reduce(b.flat, op="sum", group=group)
        else:
            from ..distributed.algorithms.ddp_comm_hooks import GradBucket

            futures = []
            for i, b in enumerate(self._buckets):
                dist.all_reduce(b.flat[b.size:], op="sum", group=group)  # the rank counts
                bucket = GradBucket(i, b.flat[:b.size], b.params, b.offsets,
                                    i == len(self._buckets) - 1)
                futures.append(self._comm_hook(self._comm_state, bucket))
            for b, fut in zip(self._buckets, futures):
                res = fut.wait()
                res = res.data if isinstance(res, Tensor) else res
                if res.shape != (b.size,):
                    raise RuntimeError(f"DistributedDataParallel: the comm hook's future gave "
                                       f"shape {tuple(res.shape)} for a bucket of {b.size} "
                                       "gradients")
                if res is not b.flat[:b.size]:
                    b.flat[:b.size] = res
            scale = 1.0  # a hook averages
        if not shadow:
            for b in self._buckets:
                b.unpack(scale)

    def _sync_final_model(self, is_last_joiner):
        """After join(): every rank takes the model of the highest rank that finished last."""
        mine = np.array([dist.get_rank(self.process_group) if is_last_joiner else -1])
        dist.all_reduce(mine, op="max", group=self.process_group)
        _broadcast_coalesced([t for _, t in self._named_state()], self.process_group,
                             int(mine[0]))


class _DDPJoinHook(JoinHook):
    """A joined rank's part in one step of the ranks still training: their buffer broadcast
    and gradient all-reduces, with zeros."""

    def __init__(self, ddp):
        self.ddp = ddp

    def main_hook(self):
        ddp = self.ddp
        step = ddp._join_context.step
        ddp._join_step(step)
        if ddp.broadcast_buffers and ddp.training:
            buffers = list(ddp.module.buffers())
            if buffers:
                _broadcast_coalesced(buffers, ddp.process_group, ddp._join_src)
        if step.sync:
            ddp._sync_gradients(shadow=True)

    def post_hook(self, is_last_joiner):
        self.ddp._sync_final_model(is_last_joiner)
        self.ddp._join_scale, self.ddp._join_src = None, 0


def _attach(out, callback):
    """out with the gradient-sync marker on each of its Tensors that needs a gradient."""
    if isinstance(out, Tensor):
        if not out.requires_grad:
            return out
        marked = _GradSync.apply(out)
        marked._ctx.after_backward = callback
        return marked
    if isinstance(out, (tuple, list)):
        return type(out)(_attach(o, callback) for o in out)
    if isinstance(out, dict):
        return {k: _attach(v, callback) for k, v in out.items()}
    return out


def _broadcast_coalesced(tensors, group=None, src=0):
    """The values of ``tensors`` on the group's rank ``src`` (rank 0 of the world by default) to
    every rank of the group: one broadcast per device and dtype."""
    groups = {}
    for t in tensors:
        groups.setdefault((device_of(t.data), t.data.dtype), []).append(t)
    for ts in groups.values():
        xp = get_array_module(ts[0].data)
        flat = xp.concatenate([t.data.reshape(-1) for t in ts])
        dist.broadcast(flat, group=group, group_src=src)
        off = 0
        for t in ts:
            t.data[...] = flat[off:off + t.data.size].reshape(t.data.shape)
            off += t.data.size


class _Bucket:
    def __init__(self, device, dtype):
        self.device, self.dtype = device, dtype
        self.params, self.offsets, self.size, self.flat = [], [], 0, None

    def add(self, p):
        self.params.append(p)
        self.offsets.append(self.size)
        self.size += p.data.size

    def allocate(self):
        host = np.zeros(self.size + len(self.params), dtype=self.dtype)
        self.flat = to_device(host, self.device)

    def pack(self):
        flags = np.zeros(len(self.params), dtype=self.dtype)
        for i, (p, off) in enumerate(zip(self.params, self.offsets)):
            view = self.flat[off:off + p.data.size].reshape(p.data.shape)
            if p.grad is None:
                view[...] = 0
            else:
                view[...] = p.grad.data
                flags[i] = 1
        self.flat[self.size:] = to_device(flags, self.device)  # one copy, not one per flag

    def unpack(self, scale):
        xp = get_array_module(self.flat)
        seen = to_numpy(self.flat[self.size:])  # how many ranks had each gradient
        for p, off, count in zip(self.params, self.offsets, seen):
            if count == 0:
                continue  # no rank used this parameter: its gradient stays None everywhere
            view = self.flat[off:off + p.data.size].reshape(p.data.shape)
            if p.grad is None:
                p.grad = Tensor(view * self.dtype.type(scale))
            else:
                xp.multiply(view, self.dtype.type(scale), out=p.grad.data)


class DataParallel(Module):
    """``torch.nn.DataParallel`` on one device. PyTorch's splits each batch across the GPUs of
    one process; minidl runs one GPU per process, so here the wrapped module runs the whole
    batch on its own device, which is what PyTorch's does with one device. The wrapped module
    is ``.module``, and the state dict's keys carry the ``module.`` prefix, as PyTorch's. More
    than one device in ``device_ids`` is refused: use DistributedDataParallel, one process
    per GPU."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: expected a Module, got {type(module).__name__}")
        devices = list(device_ids) if device_ids is not None else []
        if len(devices) > 1:
            raise ValueError(f"DataParallel: minidl runs one GPU per process, got device_ids "
                             f"{devices}; use nn.parallel.DistributedDataParallel with one "
                             "process per GPU (minidl.distributed)")
        self.module = module
        self.dim = dim
        self.device_ids = devices
        self.output_device = output_device

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)
