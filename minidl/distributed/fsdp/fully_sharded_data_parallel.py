"""FullyShardedDataParallel: each rank holds 1/world of the weights, gradients and optimizer state.

    dist.init_process_group(backend="mpi")                  # under mpiexec -n N
    model = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    opt = optim.Adam(model.parameters(), lr=1e-3)           # after wrapping: the shards
    F.cross_entropy(model(x), y).backward()                 # x: this rank's share of the batch
    opt.step()

Each unit (the root, and every module the auto-wrap policy picked, wrapped first) flattens the
parameters that no unit below it took into one flat buffer, padded to a multiple of the world
size, and keeps its rank's piece as its one Parameter (``_flat_param``, a FlatParameter): that
is what ``parameters()`` yields, so any optimizer steps the shards and its state is sharded.

A unit's forward all-gathers the flat buffer, shows slices of it to the wrapped modules as their
original parameters (``layer.weight`` during forward), runs the module, and drops them again.
The slices' gradients are summed into one flat gradient, which is reduce-scattered (averaged
over the ranks, as torch) into the shard's ``.grad`` once the backward pass has finished.

What is freed when:

- FULL_SHARD: the gathered buffer is freed at the end of the unit's forward, as torch's. The
  forward runs under saved-tensor hooks (autograd.graph.saved_tensors_hooks): a value an op
  saves for backward that views the buffer (a weight, its transpose or reshape) is kept as a
  token (its offset, shape and strides), and the Tensors of the graph on the buffer (the
  parameter views the ops hold as inputs) show a placeholder of their shape (NaN, one element
  broadcast) until backward. The first unpack in backward all-gathers the buffer again (once
  per unit and backward pass, also for a unit applied twice; the units in the order backward
  reaches them, which is the same on every rank), and the unit lets go of it once every value
  it saved is unpacked (the op then running holds its view until its backward is over). Saved
  values that view no unit's buffer go to the user's own saved-tensor hooks, if any. Kept
  anyway: what an op saves that is a copy of a weight rather than a view (bilinear saves its
  weight permuted and reshaped, a copy; a complex Linear its conjugate), and a view of the
  buffer returned by the unit's forward (the caller holds it). Under
  ``disable_saved_tensors_hooks`` the graph keeps the gathered buffer, as SHARD_GRAD_OP.
- SHARD_GRAD_OP: the graph keeps the gathered buffer (each forward's, for a unit applied
  twice) from the forward to the end of the backward pass; backward gathers nothing.
- NO_SHARD: the whole buffer is the parameter, on every rank; gradients are all-reduced, as
  DDP.
- HYBRID_SHARD / _HYBRID_SHARD_ZERO2 (HSDP): FULL_SHARD / SHARD_GRAD_OP within a shard group
  (a node's ranks), every shard group holding the whole model (replicas). The gradients are
  reduce-scattered in the shard group, then all-reduced across the replicate group (the ranks
  that hold the same shard), averaged over all of them:

      mesh = init_device_mesh("cpu", (2, 4), mesh_dim_names=("replicate", "shard"))
      model = FSDP(model, device_mesh=mesh, sharding_strategy=ShardingStrategy.HYBRID_SHARD)
      # or process_group=(shard_group, replicate_group); or neither: one node's ranks

After the backward pass every rank holds only its shards (and their gradients).

As in torch, every rank must run the same units in the same order (a unit that one rank's
forward skips makes the ranks' collectives differ: minidl's check then raises on every rank),
the optimizer must be built after wrapping, and gradients through the parameters are first
order only (``_ParamView``: no double backward through them).
"""
from __future__ import annotations

import contextlib
import math
import weakref
from collections import OrderedDict

import numpy as np

from ... import autograd as _ag
from ... import distributed as dist
from ...autograd import Function, root_array
from ...autograd.graph import saved_tensors_hooks
from ...backend import device_of, get_array_module, to_device, to_numpy
from ...backend.dtypes import is_differentiable, is_floating
from ...nn.module import Module, Parameter, StateDictKeyError
from ...nn.parallel import _broadcast_coalesced
from ...tensor import Tensor, is_grad_enabled
from .api import (BackwardPrefetch, CPUOffload, FullStateDictConfig,
                  LocalStateDictConfig, MixedPrecision, ShardedStateDictConfig, ShardingStrategy,
                  StateDictType)
from .wrap import _as_policy

__all__ = ["FullyShardedDataParallel", "FlatParameter"]

_WRAPPED = "_fsdp_wrapped_module"


def _clean(name):
    """A state-dict key without FSDP's own module levels: the plain model's key."""
    return name.replace(_WRAPPED + ".", "")


class FlatParameter(Parameter):
    """One FSDP unit's parameters, flattened and concatenated; this rank's shard of them."""


class _FlattenedParameter(Parameter):
    """An original parameter after wrapping: its values live in a unit's FlatParameter. An
    optimizer built before wrapping still holds these, and its step reads ``.grad``: refused
    with what to do instead."""

    @property
    def grad(self):
        raise RuntimeError(
            f"FullyShardedDataParallel: the optimizer holds parameter {self._fsdp_name!r} "
            f"(shape {self._fsdp_shape}) from before the model was wrapped; FSDP flattened it "
            "into its shards, so it has no gradient. Construct the optimizer after wrapping, "
            "from the FSDP model's parameters(): optim.SGD(fsdp_model.parameters(), ...)")

    @grad.setter
    def grad(self, value):
        if value is not None:
            raise RuntimeError(f"FullyShardedDataParallel: parameter {self._fsdp_name!r} was "
                               "flattened into an FSDP unit; it takes no gradient")


class _ParamView(Function):
    """One original parameter during a unit's forward: a slice of the gathered flat buffer.
    Its backward adds the gradient into the unit's flat gradient; the unit reduces that once
    the backward pass is over (its ``after_backward``). ``autograd.grad(out, inputs)`` with
    inputs that are not the shard leaves the gradients alone, as torch's."""

    def forward(self, flat, unit=None, index=0):
        self.unit, self.index = unit, index
        return unit._view(index)

    def backward(self, g):
        if _ag.input_needed(self, 0):  # not in autograd.grad(loss, inputs) without the shard
            self.unit._add_grad(self.index, g)
        return None


class _Info:
    """Where one original parameter lives: its name in the unit, shape, offset in the flat
    buffer, and the (module, attribute) pairs that hold it (more than one when tied)."""

    def __init__(self, fqn, shape, offset, owners):
        self.fqn, self.shape, self.offset, self.owners = fqn, tuple(shape), offset, owners
        self.numel = int(np.prod(self.shape, dtype=np.int64))
        self.placeholder = None  # what the owners show outside forward (set when flattened)

    def show(self, value=None):
        """Each owner's attribute: ``value`` (a slice of the gathered buffer, in forward), or
        the empty placeholder (as torch's freed parameters: ``layer.bias is not None`` still
        holds, and repr shows it)."""
        for m, attr in self.owners:
            m.__dict__[attr] = self.placeholder if value is None else value


# ---- FULL_SHARD: the gathered weights leave the graph between forward and backward ---------------
# Each FULL_SHARD unit's forward runs under saved-tensor hooks (_SavedWeights): what an op saves
# that views the unit's gathered flat buffer is kept as a _Token (where in the buffer it lies),
# and every Tensor the graph holds on that buffer (the parameter views, the saved views) gets a
# placeholder of its shape as its data once the forward is over, so the buffer is freed. The
# first unpack in backward gathers the flat buffer again (one all_gather per unit and backward
# pass, in the order the backward pass reaches the units: the same on every rank), shows the
# views again, and the unit lets go of it once every saved view is unpacked (or the backward
# pass ends).
_gathered = {}  # id of a FULL_SHARD unit's gathered buffer, during its forward -> the unit


class _Token:
    """A saved view of a unit's gathered flat buffer: element offset, shape, element strides."""
    __slots__ = ("unit", "offset", "shape", "strides")

    def __init__(self, unit, offset, shape, strides):
        self.unit, self.offset, self.shape, self.strides = unit, offset, shape, strides


class _Outer:
    """A saved value that the hooks active outside the unit (the user's) packed."""
    __slots__ = ("unpack", "packed")

    def __init__(self, unpack, packed):
        self.unpack, self.packed = unpack, packed


def _address(a):
    ptr = getattr(getattr(a, "data", None), "ptr", None)  # a CuPy array's device pointer
    return int(ptr) if ptr is not None else int(a.__array_interface__["data"][0])


def _rebuild(full, token):
    """The view ``token`` describes, on the flat buffer ``full``: a slice of it, reshaped and
    its axes permuted where that gives the strides (views of a parameter: reshapes, .T),
    else through as_strided."""
    shape, strides, offset = token.shape, token.strides, token.offset
    size = int(np.prod(shape, dtype=np.int64))
    order = sorted(range(len(shape)), key=lambda i: -strides[i])
    block = tuple(shape[i] for i in order)
    want, step = [], 1
    for d in reversed(block):
        want.append(step)
        step *= d
    if size == 0 or all(d == 1 or strides[i] == w
                        for i, d, w in zip(order, block, reversed(want))):
        inverse = [order.index(i) for i in range(len(shape))]
        return full[offset:offset + size].reshape(block).transpose(inverse)
    xp = get_array_module(full)
    item = full.dtype.itemsize
    return xp.lib.stride_tricks.as_strided(full[offset:], shape, [s * item for s in strides])


def _placeholder(like):
    """What a view of a freed buffer shows: NaN (0 for integers) of its shape and dtype, one
    element broadcast, so that a read of it by mistake cannot pass for the weights."""
    xp = get_array_module(like)
    fill = np.nan if is_differentiable(like.dtype) else 0  # floating (bfloat16 too), complex
    return xp.broadcast_to(xp.full((), fill, dtype=like.dtype), like.shape)


class _SavedWeights(saved_tensors_hooks):
    """The saved-tensor hooks of a FULL_SHARD unit's forward (see above). A saved value that
    views no unit's gathered buffer goes to the hooks active outside (save_on_cpu, the
    user's), or is kept as it is."""

    def __init__(self):
        self.outer = _ag._saved_hooks[-1] if _ag._saved_hooks else None
        super().__init__(self._pack, self._unpack)

    def _pack(self, t):
        unit = _gathered.get(id(root_array(t.data)))
        token = unit._token(t) if unit is not None else None
        if token is not None:
            unit._recorded += 1
            return token
        if self.outer is not None:
            return _Outer(self.outer[1], self.outer[0](t))
        return t

    @staticmethod
    def _unpack(packed):
        if isinstance(packed, _Token):
            return packed.unit._unpack(packed)
        if isinstance(packed, _Outer):
            return packed.unpack(packed.packed)
        return packed


def _unit_walk(module, stop=(), prefix=""):
    """(name, module) of ``module`` and its descendants, not entering FSDP units nor the
    modules in ``stop`` (ids: the units a plan will make)."""
    yield prefix, module
    for name, child in module._modules.items():
        if child is not None and not isinstance(child, FullyShardedDataParallel) \
                and id(child) not in stop:
            yield from _unit_walk(child, stop, f"{prefix}.{name}" if prefix else name)


def _nonwrapped_numel(module, stop=()):
    """What a policy sees: the parameters of ``module`` that no unit below it takes."""
    seen, n = set(), 0
    for _, m in _unit_walk(module, stop):
        for p in m._parameters.values():
            if p is not None and id(p) not in seen and not isinstance(p, FlatParameter):
                seen.add(id(p))
                n += p.data.size
    return n


def _plan(module, policy, ignored, path="", planned=None):
    """(path, module) of every unit that wrapping ``module`` with ``policy`` makes, children
    before their parents (the root not included): what _auto_wrap will do, without doing it."""
    planned = [] if planned is None else planned
    taken = {id(m) for _, m in planned}
    for name, child in module._modules.items():
        if child is None or isinstance(child, FullyShardedDataParallel) or id(child) in ignored:
            continue
        if not policy(module=child, recurse=True,
                      nonwrapped_numel=_nonwrapped_numel(child, taken)):
            continue
        _plan(child, policy, ignored, f"{path}{name}.", planned)
        taken = {id(m) for _, m in planned}
        if policy(module=child, recurse=False, nonwrapped_numel=_nonwrapped_numel(child, taken)):
            planned.append((f"{path}{name}.", child))
            taken.add(id(child))
    return planned


def _check_unit_params(params):
    """One unit's (name, parameter) pairs share a dtype, a device and requires_grad."""
    if not params:
        return
    if len({p.data.dtype for _, p in params}) > 1:
        named = ", ".join(f"{n} {p.data.dtype}" for n, p in params)
        raise ValueError(f"FullyShardedDataParallel: one unit flattens parameters of one dtype, "
                         f"got {named}; wrap the modules of each dtype apart")
    if len({device_of(p.data) for _, p in params}) > 1:
        named = ", ".join(f"{n} on {device_of(p.data)}" for n, p in params)
        raise ValueError(f"FullyShardedDataParallel: the parameters of one unit must be on one "
                         f"device, got {named}")
    if len({bool(p.requires_grad) for _, p in params}) > 1:
        frozen = [n for n, p in params if not p.requires_grad]
        raise ValueError(f"FullyShardedDataParallel: one unit's parameters must all require "
                         f"gradients or all be frozen, but {', '.join(frozen)} do not and the "
                         "others do; wrap the frozen modules in their own unit")


_HYBRID = (ShardingStrategy.HYBRID_SHARD, ShardingStrategy._HYBRID_SHARD_ZERO2)
_FREES_AFTER_FORWARD = (ShardingStrategy.FULL_SHARD, ShardingStrategy.HYBRID_SHARD)
_KEEPS_TO_BACKWARD = (ShardingStrategy.SHARD_GRAD_OP, ShardingStrategy._HYBRID_SHARD_ZERO2)


def _is_group(g):
    return g is None or isinstance(g, dist.ProcessGroup)


def _resolve_groups(process_group, device_mesh, strategy, what="FullyShardedDataParallel"):
    """(shard group, replicate group or None) from FSDP1's ``process_group`` /
    ``device_mesh`` arguments, as torch reads them: HYBRID_SHARD takes a (shard, replicate)
    tuple of groups, or a 2-D mesh (dim 0 replicate, dim 1 shard), or neither (the shard
    group is one node's ranks, see _node_groups); the other strategies a group or a 1-D mesh."""
    from ..device_mesh import DeviceMesh
    hybrid = strategy in _HYBRID
    if process_group is not None and device_mesh is not None:
        raise ValueError(f"{what}: cannot pass both process_group and device_mesh at the same "
                         "time; pass only one of them")
    if device_mesh is not None:
        if not isinstance(device_mesh, DeviceMesh):
            raise TypeError(f"{what}: device_mesh must be a DeviceMesh (init_device_mesh), got "
                            f"{type(device_mesh).__name__}")
        if device_mesh.get_coordinate() is None:
            raise ValueError(f"{what}: rank {dist.get_rank()} is not in device_mesh "
                             f"{device_mesh!r}")
        if hybrid:
            if device_mesh.ndim != 2:
                raise ValueError(f"{what}: {strategy.name} takes a 2-D device_mesh (dim 0 "
                                 f"replicate, dim 1 shard), got a {device_mesh.ndim}-D mesh of "
                                 f"shape {device_mesh.shape}")
            return device_mesh.get_group(1), device_mesh.get_group(0)
        if device_mesh.ndim != 1:
            raise ValueError(f"{what}: {strategy.name} takes a 1-D device_mesh (the ranks to "
                             f"shard over), got a {device_mesh.ndim}-D mesh of shape "
                             f"{device_mesh.shape}; a 2-D (replicate, shard) mesh is for "
                             "sharding_strategy=HYBRID_SHARD")
        return device_mesh.get_group(), None
    if not hybrid:
        if isinstance(process_group, (tuple, list)):
            raise ValueError(f"{what}: a (shard group, replicate group) pair as process_group "
                             f"is for HYBRID_SHARD or _HYBRID_SHARD_ZERO2, not {strategy.name}; "
                             "pass one process group")
        if not _is_group(process_group):
            raise TypeError(f"{what}: process_group must be a ProcessGroup (new_group) or None, "
                            f"got {type(process_group).__name__}")
        return process_group, None
    if process_group is None:
        return _node_groups()
    if not isinstance(process_group, (tuple, list)) or len(process_group) != 2 or \
            not all(isinstance(g, dist.ProcessGroup) or g is dist.GroupMember.NON_GROUP_MEMBER
                    for g in process_group):
        got = (f"a {type(process_group).__name__} of {len(process_group)}: "
               f"{[type(g).__name__ for g in process_group]}"
               if isinstance(process_group, (tuple, list)) else type(process_group).__name__)
        raise ValueError(f"{what}: {strategy.name} takes process_group=(shard group, replicate "
                         f"group), a tuple of two ProcessGroups, got {got}")
    for g, role in zip(process_group, ("shard", "replicate")):
        if g is dist.GroupMember.NON_GROUP_MEMBER:
            raise ValueError(f"{what}: this rank ({dist.get_rank()}) is not part of the {role} "
                             "group of process_group")
    return tuple(process_group)


def _node_groups():
    """HYBRID_SHARD's groups when none are given, as torch's: shard within a node (the ranks
    ``dist.new_subgroups()`` puts together: consecutive blocks of the ranks on one machine),
    replicate across nodes (rank i of every node). Under mpiexec on one machine the node is
    the whole world, so the shard group is the world and the replicate groups have one rank."""
    shard, _ = dist.new_subgroups()
    per_node, world = dist.get_world_size(shard), dist.get_world_size()
    replicate, _ = dist.new_subgroups_by_enumeration(
        [list(range(i, world, per_node)) for i in range(per_node)])
    return shard, replicate


def _check_replicas(shard_group, replicate_group, what="FullyShardedDataParallel"):
    """The ranks of a replicate group hold the same shard: the same shard-group size and the
    same rank in it (else averaging their gradients would mix different pieces)."""
    mine = (dist.get_world_size(shard_group), dist.get_rank(shard_group), dist.get_rank())
    everyone = [None] * dist.get_world_size(replicate_group)
    dist.all_gather_object(everyone, mine, group=replicate_group)
    for size, rank, world_rank in everyone:
        if (size, rank) != mine[:2]:
            raise ValueError(
                f"{what}: the replicate group holds ranks that do not hold the same shard: "
                f"world rank {mine[2]} is rank {mine[1]} of a shard group of {mine[0]}, world "
                f"rank {world_rank} rank {rank} of {size}; each replicate group must take one "
                "rank from each shard group, at the same place (a (replicate, shard) mesh's "
                "columns)")


def _device(device_id):
    if device_id is None:
        return None
    if isinstance(device_id, int):
        return "cuda"
    name = str(getattr(device_id, "type", device_id))
    return name.split(":")[0]


class FullyShardedDataParallel(Module):
    """``torch.distributed.fsdp.FullyShardedDataParallel``'s constructor (FSDP1).

    ``process_group``: shard over that group instead of the world (or ``device_mesh``, a 1-D
    DeviceMesh: over its group); ``sharding_strategy``: FULL_SHARD (default), SHARD_GRAD_OP,
    NO_SHARD, or HYBRID_SHARD / _HYBRID_SHARD_ZERO2 (FULL_SHARD / SHARD_GRAD_OP within a shard
    group, replicated across groups; see the module docstring), which take
    ``process_group=(shard_group, replicate_group)``, or a 2-D ``device_mesh`` (dim 0
    replicate, dim 1 shard), or neither: then, as torch, the shard group is the ranks of one
    node (``dist.new_subgroups()``: under mpiexec on one machine, the whole world, and the
    replicate groups one rank each). ``auto_wrap_policy``: see
    minidl.distributed.fsdp.wrap (a set of module classes also works); ``mixed_precision``:
    MixedPrecision(param_dtype, reduce_dtype, buffer_dtype); ``ignored_modules``: modules whose
    parameters stay as they are (not sharded, not averaged); ``device_id``: the module is moved
    there first; ``sync_module_states``: rank 0's parameters are broadcast before sharding
    (buffers always are). Accepted and changing nothing here: ``cpu_offload`` (CPU modules stay
    on the CPU; offloading a CUDA module's parameters is refused), ``backward_prefetch``,
    ``forward_prefetch``, ``limit_all_gathers`` (the gathers run in order, one at a time) and
    ``use_orig_params`` (``parameters()`` yields the flat shards either way; the state dicts
    and summon_full_params give the original names)."""

    _state_dict_type = StateDictType.FULL_STATE_DICT
    _state_dict_config = FullStateDictConfig()
    _inter_node_pg = None  # HYBRID_SHARD's replicate group

    def __init__(self, module, process_group=None, sharding_strategy=None, cpu_offload=None,
                 auto_wrap_policy=None, backward_prefetch=BackwardPrefetch.BACKWARD_PRE,
                 mixed_precision=None, ignored_modules=None, param_init_fn=None, device_id=None,
                 sync_module_states=False, forward_prefetch=False, limit_all_gathers=True,
                 use_orig_params=False, ignored_states=None, device_mesh=None, _path="",
                 _checked=False):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"FullyShardedDataParallel wraps an nn.Module, got "
                            f"{type(module).__name__}")
        if not dist.is_initialized():
            raise RuntimeError("FullyShardedDataParallel: the default process group is not "
                               "initialised; call minidl.distributed.init_process_group() first "
                               "(and launch with mpiexec -n N)")
        if process_group is dist.GroupMember.NON_GROUP_MEMBER:
            raise ValueError("FullyShardedDataParallel: this rank is not part of process_group")
        strategy = ShardingStrategy.FULL_SHARD if sharding_strategy is None else sharding_strategy
        if not isinstance(strategy, ShardingStrategy):
            raise TypeError(f"FullyShardedDataParallel: sharding_strategy must be a "
                            f"ShardingStrategy, got {sharding_strategy!r}")
        process_group, replicate_group = _resolve_groups(process_group, device_mesh, strategy)
        if param_init_fn is not None:
            raise NotImplementedError("FullyShardedDataParallel: param_init_fn (materialising a "
                                      "meta-device module) is not implemented; build the module "
                                      "with real parameters")
        if mixed_precision is not None and not isinstance(mixed_precision, MixedPrecision):
            raise TypeError(f"FullyShardedDataParallel: mixed_precision must be a "
                            f"MixedPrecision, got {type(mixed_precision).__name__}")
        if isinstance(cpu_offload, bool):
            cpu_offload = CPUOffload(cpu_offload)
        if ignored_states is not None:
            if ignored_modules is not None:
                raise ValueError("FullyShardedDataParallel: pass ignored_modules or "
                                 "ignored_states, not both")
            ignored_modules = [m for m in ignored_states if isinstance(m, Module)]
        device = _device(device_id)
        if device is not None:
            module.to(device)
        if cpu_offload is not None and cpu_offload.offload_params:
            if any(device_of(p.data) != "cpu" for p in module.parameters()):
                raise NotImplementedError("FullyShardedDataParallel: CPUOffload(offload_params="
                                          "True) for a CUDA module is not implemented")
        self.process_group = process_group  # the shard group (HYBRID: within a node)
        object.__setattr__(self, "_inter_node_pg", replicate_group)  # HYBRID: across nodes
        object.__setattr__(self, "_device_mesh", device_mesh)
        self.sharding_strategy = strategy
        self.mixed_precision = mixed_precision
        self.cpu_offload = cpu_offload or CPUOffload()
        self.backward_prefetch, self.forward_prefetch = backward_prefetch, forward_prefetch
        self.limit_all_gathers, self.use_orig_params = limit_all_gathers, use_orig_params
        self.compute_device = device
        ignored = list(ignored_modules or ())
        object.__setattr__(self, "_ignored", {id(m) for i in ignored for m in i.modules()})
        object.__setattr__(self, "_has_parent", False)
        object.__setattr__(self, "_sync_grads", True)
        object.__setattr__(self, "_full", None)        # the gathered flat buffer, in forward
        object.__setattr__(self, "_grad_full", None)   # the flat gradient being summed
        # FULL_SHARD between forward and backward (see _SavedWeights): the buffer gathered
        # again in backward, the Tensors shown a placeholder (id -> (weakref, _Token)), and the
        # saved views packed / unpacked since the last backward pass
        object.__setattr__(self, "_regathered", None)
        object.__setattr__(self, "_swapped", {})
        object.__setattr__(self, "_recorded", 0)
        object.__setattr__(self, "_done", 0)
        object.__setattr__(self, "_summoned", None)
        object.__setattr__(self, "_flat", None)
        object.__setattr__(self, "_path", _path)  # where the unit sits in the root: messages
        policy = _as_policy(auto_wrap_policy)
        if not _checked:  # every unit to be made checked first: bad input changes nothing
            units = _plan(module, policy, self._ignored) if policy is not None else []
            self._check_units(units + [("", module)])
            if replicate_group is not None:
                _check_replicas(process_group, replicate_group)
        if policy is not None:  # the units below share this one's groups (none made again)
            groups = process_group if replicate_group is None else (process_group,
                                                                   replicate_group)
            kwargs = dict(process_group=groups, sharding_strategy=strategy,
                          cpu_offload=cpu_offload, backward_prefetch=backward_prefetch,
                          mixed_precision=mixed_precision, ignored_modules=ignored_modules,
                          sync_module_states=sync_module_states,
                          forward_prefetch=forward_prefetch,
                          limit_all_gathers=limit_all_gathers, use_orig_params=use_orig_params,
                          _checked=True)
            self._auto_wrap(module, policy, kwargs, _path)
        self.add_module(_WRAPPED, module)
        for m in module.modules():
            if isinstance(m, FullyShardedDataParallel):
                object.__setattr__(m, "_has_parent", True)
        self._flatten(sync_module_states)

    # ---- wrapping ----------------------------------------------------------------------------
    def _auto_wrap(self, module, policy, kwargs, path):
        for name, child in list(module._modules.items()):
            where = f"{path}{name}."
            if child is None or isinstance(child, FullyShardedDataParallel) \
                    or id(child) in self._ignored:
                continue
            if not policy(module=child, recurse=True, nonwrapped_numel=_nonwrapped_numel(child)):
                continue
            self._auto_wrap(child, policy, kwargs, where)
            if policy(module=child, recurse=False, nonwrapped_numel=_nonwrapped_numel(child)):
                module._modules[name] = FullyShardedDataParallel(child, **kwargs, _path=where)

    @property
    def module(self):
        """The wrapped module."""
        return self._modules[_WRAPPED]

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            wrapped = self.__dict__["_modules"].get(_WRAPPED)
            if wrapped is None:
                raise
            return getattr(wrapped, name)

    def __getitem__(self, index):
        return self.module[index]

    @property
    def rank(self):
        return dist.get_rank(self.process_group)

    @property
    def world_size(self):
        return dist.get_world_size(self.process_group)

    def _shards(self):
        """(number of shards, this rank's shard index): (1, 0) for NO_SHARD."""
        if self.sharding_strategy is ShardingStrategy.NO_SHARD:
            return 1, 0
        return self.world_size, self.rank

    def _collect(self):
        """This unit's parameters: the ones of the wrapped module not in a unit below it nor
        in an ignored module, each once (a tied parameter keeps every owner)."""
        infos, by_id, params = [], {}, []
        for mod_name, m in _unit_walk(self.module):
            if id(m) in self._ignored:
                continue
            for attr, p in m._parameters.items():
                if p is None:
                    continue
                if id(p) in by_id:
                    infos[by_id[id(p)]].owners.append((m, attr))
                    continue
                by_id[id(p)] = len(infos)
                infos.append(_Info(f"{mod_name}.{attr}" if mod_name else attr, p.data.shape, 0,
                                   [(m, attr)]))
                params.append(p)
        return infos, params

    def _check_units(self, units):
        """Before anything is wrapped: each parameter in one unit only, one dtype, device and
        requires_grad per unit, and every rank wrapping the same parameters (one
        all_gather_object), so that a refusal leaves the module as it was."""
        taken = {id(m) for _, m in units}
        owner, described = {}, []
        for index, (path, unit) in enumerate(units):
            params = []
            for mod_name, m in _unit_walk(unit, taken - {id(unit)}):
                if id(m) in self._ignored:
                    continue
                for attr, p in m._parameters.items():
                    if p is None:
                        continue
                    fqn = path + (f"{mod_name}.{attr}" if mod_name else attr)
                    if isinstance(p, (_FlattenedParameter, FlatParameter)):
                        raise ValueError(
                            f"FullyShardedDataParallel: parameter {fqn!r} is already in another "
                            f"FSDP unit (flattened there as {getattr(p, '_fsdp_name', fqn)!r}); "
                            "a parameter can belong to one unit only: wrap the modules that "
                            "share it in one unit")
                    if id(p) in owner:
                        first, where = owner[id(p)]
                        if first != index:
                            raise ValueError(
                                f"FullyShardedDataParallel: parameter {fqn!r} is shared with "
                                f"{where!r}, which another FSDP unit takes; a parameter can "
                                "belong to one unit only: wrap the modules that share it in one "
                                "unit (or change the auto_wrap_policy)")
                        continue
                    owner[id(p)] = (index, fqn)
                    params.append((fqn, p))
            _check_unit_params(params)
            described += [(fqn, tuple(p.data.shape), str(p.data.dtype)) for fqn, p in params]
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, described, group=self.process_group)
        for rank, theirs in enumerate(everyone[1:], start=1):
            if theirs != everyone[0]:
                diff = next(((a, b) for a, b in zip(everyone[0], theirs) if a != b), None)
                detail = (f"rank 0 has {diff[0]} where rank {rank} has {diff[1]}" if diff else
                          f"rank 0 has {len(everyone[0])} parameters, rank {rank} "
                          f"{len(theirs)}")
                raise ValueError(f"FullyShardedDataParallel: ranks wrap different modules: "
                                 f"{detail}")

    def _flatten(self, sync_module_states):
        infos, params = self._collect()
        buffers = [b for name, m in _unit_walk(self.module) if id(m) not in self._ignored
                   for b in m._buffers.values() if b is not None]
        mp = self.mixed_precision
        if mp is not None and mp.buffer_dtype is not None:
            for b in buffers:
                if is_floating(b.data.dtype):
                    b.data = b.data.astype(mp.buffer_dtype)
        # rank 0's values in the shard group, then (HYBRID) the first replica's in the others
        groups = [self.process_group] + ([self._inter_node_pg] if self._inter_node_pg else [])
        for group in groups:
            if sync_module_states and params:
                _broadcast_coalesced(params, group)
            if buffers:  # BatchNorm's running statistics: rank 0's everywhere, as DDP
                _broadcast_coalesced(buffers, group)
        object.__setattr__(self, "_infos", infos)
        if not params:
            return
        xp = get_array_module(params[0].data)
        offset = 0
        for info in infos:
            info.offset = offset
            offset += info.numel
        n, r = self._shards()
        padded = math.ceil(offset / n) * n
        full = xp.zeros(padded, dtype=params[0].data.dtype)
        for info, p in zip(infos, params):
            full[info.offset:info.offset + info.numel] = p.data.reshape(-1)
        size = padded // n
        flat = FlatParameter(full[r * size:(r + 1) * size].copy(),
                             requires_grad=params[0].requires_grad)
        object.__setattr__(self, "_numel", offset)
        object.__setattr__(self, "_padded", padded)
        object.__setattr__(self, "_flat", flat)
        self._flat_param = flat
        for info, p in zip(infos, params):
            for m, attr in info.owners:
                m._parameters[attr] = None
            info.placeholder = Tensor(xp.empty((0,), dtype=p.data.dtype))
            info.show()
            p.__class__ = _FlattenedParameter
            p._fsdp_name, p._fsdp_shape = self._path + info.fqn, info.shape
            p.data = xp.empty((0,), dtype=p.data.dtype)  # the values now live in the shards

    # ---- gathering and reducing --------------------------------------------------------------
    def _gather(self, dtype=None, shard=None):
        """The whole flat buffer (padded), cast to ``dtype`` first if given: this rank's
        shard (or ``shard``, an array of its size: a gradient, optimizer state) gathered from
        every rank, or the shard itself for NO_SHARD."""
        shard = self._flat.data if shard is None else shard
        if dtype is not None and shard.dtype != dtype:
            shard = shard.astype(dtype)
        n, _ = self._shards()
        if n == 1:
            return shard
        xp = get_array_module(shard)
        full = xp.empty(self._padded, dtype=shard.dtype)
        dist.all_gather_into_tensor(full, shard, group=self.process_group)
        return full

    def _view(self, index):
        info = self._infos[index]
        return self._full[info.offset:info.offset + info.numel].reshape(info.shape)

    def _add_grad(self, index, g):
        info = self._infos[index]
        if self._grad_full is None:
            xp = get_array_module(g)
            mp = self.mixed_precision
            dtype = (mp.reduce_dtype or mp.param_dtype) if mp is not None else None
            self._grad_full = xp.zeros(self._padded, dtype=dtype or self._flat.data.dtype)
        self._grad_full[info.offset:info.offset + info.numel] += g.reshape(-1)

    def _post_backward(self):
        """Once per backward pass that reached this unit: the flat gradient, averaged over the
        ranks, into this rank's shard's ``.grad`` (under no_sync it keeps adding up here)."""
        if self.sharding_strategy in _KEEPS_TO_BACKWARD:
            self._reshard()
        self._drop_regathered()
        self._recorded = self._done = 0
        if self._grad_full is None or not self._sync_grads:
            return
        g, self._grad_full = self._grad_full, None
        self._reduce_grad(g)

    def _reduce_grad(self, g):
        """The flat gradient ``g`` (whole, padded), averaged over the ranks, into the shard's
        ``.grad``."""
        xp = get_array_module(g)
        world = self.world_size
        if self.sharding_strategy is ShardingStrategy.NO_SHARD:
            dist.all_reduce(g, op="sum", group=self.process_group)
            out = g
        else:
            out = xp.empty(self._padded // world, dtype=g.dtype)
            dist.reduce_scatter_tensor(out, g, op="sum", group=self.process_group)
            world *= self._replicate(out)
        out *= out.dtype.type(1.0 / world)
        flat = self._flat
        out = out.astype(flat.data.dtype, copy=False)
        if flat.grad is None:
            flat.grad = Tensor(out)
        else:
            flat.grad.data += out

    def _replicate(self, shard_grad):
        """HYBRID: sum this rank's reduced shard gradient over the replicas (the ranks that
        hold the same shard, one per shard group), in place; how many replicas there are."""
        group = self._inter_node_pg
        if group is None:
            return 1
        n = dist.get_world_size(group)
        if n > 1:
            dist.all_reduce(shard_grad, op="sum", group=group)
        return n

    def _reshard(self):
        if self._full is not None:
            _gathered.pop(id(root_array(self._full)), None)
        self._full = None
        for info in self._infos:
            info.show()

    def _token(self, t):
        """The _Token of ``t`` (a Tensor on this unit's gathered buffer) in this forward, and
        ``t`` noted to be shown a placeholder after it; None where its data is no view of the
        buffer's elements (another dtype)."""
        a, full = t.data, self._full
        item = full.dtype.itemsize
        start = _address(a) - _address(full)
        if a.dtype != full.dtype or start % item or any(s % item for s in a.strides):
            return None
        token = _Token(self, start // item, tuple(a.shape), tuple(s // item for s in a.strides))
        self._swapped[id(t)] = (weakref.ref(t), token)
        return token

    def _note_graph_views(self, out, inputs):
        """Note (_token) every Tensor on the gathered buffer in the graph of this forward's
        output (the parameter views, their reshapes, transposes and expansions that the ops
        hold as inputs), walking back to the forward's inputs; the output's own Tensors are
        not noted (the caller reads them)."""
        full = self._full
        returned = {id(t) for t in _tensors_in(out)}
        seen = {id(t) for t in _tensors_in(inputs)}
        stack = [t for t in _tensors_in(out) if id(t) not in seen]
        while stack:
            t = stack.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            if id(t) not in returned and root_array(t.data) is full:
                self._token(t)
            ctx = t._ctx
            if ctx is not None and not isinstance(ctx, _ParamView):
                stack.extend(x for x in ctx.inputs if id(x) not in seen)
        for t in _tensors_in(out):
            self._swapped.pop(id(t), None)

    def _show_swapped(self, full):
        """The Tensors noted by _token: views of ``full`` again, or placeholders (None)."""
        for key, (ref, token) in list(self._swapped.items()):
            t = ref()
            if t is None:
                del self._swapped[key]
            elif full is None:
                t.data = _placeholder(t.data)
            else:
                t.data = _rebuild(full, token)

    def _regather(self):
        """The flat buffer in backward: gathered at the first saved view unpacked, then kept
        until the unit is done with this backward pass."""
        if self._regathered is None:
            mp = self.mixed_precision
            self._regathered = self._gather(mp.param_dtype if mp is not None else None)
            self._show_swapped(self._regathered)
        return self._regathered

    def _drop_regathered(self):
        if self._regathered is not None:
            self._regathered = None
            self._show_swapped(None)

    def _unpack(self, token):
        """A saved view, on the buffer gathered again. Once every view saved in the forward
        passes since the last backward pass is unpacked, no op of this backward pass needs
        the buffer any more: the unit lets go of it (the op being run holds its view until
        its backward is over). The counts are the same on every rank (the same graph)."""
        view = _rebuild(self._regather(), token)
        self._done += 1
        if self._done == self._recorded:
            self._drop_regathered()
        return Tensor(view)

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        mp = self.mixed_precision
        if mp is not None and mp.param_dtype is not None and (
                mp.cast_forward_inputs or (mp.cast_root_forward_inputs and not self._has_parent)):
            args, kwargs = _cast(args, mp.param_dtype), _cast(kwargs, mp.param_dtype)
        if self._summoned is not None:
            raise RuntimeError("FullyShardedDataParallel: forward inside summon_full_params() is "
                               "not supported; leave the context first")
        flat = self._flat
        if flat is None:
            return self.module(*args, **kwargs)
        return self._run_unit(lambda: self.module(*args, **kwargs), (args, kwargs),
                              lambda i: flat, flat.requires_grad)

    def _run_unit(self, call, inputs, source, requires_grad):
        """Gather, show the parameter views (``_ParamView`` of ``source(i)``, the leaf its
        graph hangs from), run ``call()`` and reshard as the strategy says (see the module
        docstring): the forward of an FSDP1 unit and of a fully_shard module alike."""
        mp = self.mixed_precision
        self._drop_regathered()  # one left by a backward pass that ended early: stale after a step
        self._full = self._gather(mp.param_dtype if mp is not None else None)
        track = is_grad_enabled() and requires_grad
        # FULL_SHARD frees the gathered buffer after forward, and gathers it again in backward
        # (not where saved-tensor hooks are disabled: the graph then keeps it, as SHARD_GRAD_OP)
        free = track and self.sharding_strategy in _FREES_AFTER_FORWARD \
            and _ag._saved_hooks_disabled is None
        if free:
            _gathered[id(root_array(self._full))] = self
        for i, info in enumerate(self._infos):
            if track:
                view = _ParamView.apply(source(i), unit=self, index=i)
                view._ctx.after_backward = self._post_backward
                if free:
                    self._token(view)
            else:
                view = Tensor(self._view(i))
            info.show(view)
        keep = track and self.sharding_strategy in _KEEPS_TO_BACKWARD
        out = None
        try:
            with _SavedWeights() if free else contextlib.nullcontext():
                out = call()
            return out
        finally:
            if free:  # the graph's Tensors on the buffer: placeholders (not what is returned)
                self._note_graph_views(out, inputs)
                self._show_swapped(None)
            if not keep:
                self._reshard()

    # ---- gradient accumulation and clipping --------------------------------------------------
    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside sum the full gradients locally (no collective); the first
        backward after it reduces everything summed. Call it on the root."""
        units = [m for m in self.modules() if isinstance(m, FullyShardedDataParallel)]
        before = [u._sync_grads for u in units]
        for u in units:
            object.__setattr__(u, "_sync_grads", False)
        try:
            yield
        finally:
            for u, b in zip(units, before):
                object.__setattr__(u, "_sync_grads", b)

    def clip_grad_norm_(self, max_norm, norm_type=2.0):
        """Scale every shard's gradient so that the norm of the whole model's gradient (all
        ranks' shards as one vector) is at most ``max_norm``; returns that norm before
        clipping. Call it on the root, on every rank."""
        max_norm, p = float(max_norm), float(norm_type)
        if not p > 0:
            raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type!r}")
        sharded, local = [], []
        owner = {id(u._flat): u for u in self.modules()
                 if isinstance(u, FullyShardedDataParallel) and u._flat is not None}
        for param in self.parameters():
            if param.grad is None:
                continue
            u = owner.get(id(param))
            split = u is not None and u.sharding_strategy is not ShardingStrategy.NO_SHARD
            (sharded if split else local).append(param.grad.data)
        dtype = np.result_type(*[g.dtype for g in sharded + local]) if sharded + local \
            else np.float32

        def part(grads):
            if math.isinf(p):
                return max((float(abs(g).max()) for g in grads if g.size), default=0.0)
            return sum(float((abs(g.astype(np.float64)) ** p).sum()) for g in grads)

        both = np.array([part(sharded), part(local)], dtype=np.float64)
        mine = both[:1].copy()
        dist.all_reduce(mine, op="max" if math.isinf(p) else "sum", group=self.process_group)
        if math.isinf(p):
            total = max(mine[0], both[1])
        else:
            total = (mine[0] + both[1]) ** (1.0 / p)
        coef = max_norm / (total + 1e-6)
        if coef < 1:
            for g in sharded + local:
                g *= g.dtype.type(coef)
        return Tensor(np.asarray(total, dtype=dtype))

    # ---- full parameters ---------------------------------------------------------------------
    def _summon(self, with_grads=False):
        """The original parameters as Parameters again, holding the whole gathered values
        (shared between tied owners); the FlatParameter steps out of ``_parameters``."""
        if self._flat is None:
            object.__setattr__(self, "_summoned", ())
            return
        full = self._gather()
        gfull = None
        if with_grads and self._flat.grad is not None:
            gfull = self._gather(shard=self._flat.grad.data)
        summoned = []
        for info in self._infos:
            piece = full[info.offset:info.offset + info.numel].reshape(info.shape)
            p = Parameter(piece, requires_grad=self._flat.requires_grad)
            if gfull is not None:
                p.grad = Tensor(gfull[info.offset:info.offset + info.numel].reshape(info.shape))
            for m, attr in info.owners:
                m.__dict__.pop(attr, None)
                m._parameters[attr] = p
            summoned.append(p)
        self._parameters["_flat_param"] = None
        object.__setattr__(self, "_summoned", (full, summoned))

    def _unsummon(self, writeback):
        state, self._summoned = self._summoned, None
        if not state:
            return
        full, summoned = state
        if writeback:
            for info, p in zip(self._infos, summoned):
                full[info.offset:info.offset + info.numel] = to_device(
                    p.data, device_of(full)).reshape(-1)
            n, r = self._shards()
            size = self._padded // n
            self._flat.data[...] = full[r * size:(r + 1) * size]
        for info in self._infos:
            for m, attr in info.owners:
                m._parameters[attr] = None
            info.show()
        self._parameters["_flat_param"] = self._flat

    @staticmethod
    def fsdp_modules(module, root_only=False):
        """The FSDP units in ``module`` (itself included), or only the outermost ones."""
        units = [m for m in module.modules() if isinstance(m, FullyShardedDataParallel)]
        return [u for u in units if not u._has_parent or u is module] if root_only else units

    @staticmethod
    @contextlib.contextmanager
    def summon_full_params(module, recurse=True, writeback=True, rank0_only=False,
                           offload_to_cpu=False, with_grads=False):
        """Inside, every unit of ``module`` (only ``module`` itself with ``recurse=False``)
        shows its original parameters, whole, under their own names; with ``writeback`` what
        is changed in them goes back to the shards on leaving. ``rank0_only`` and
        ``offload_to_cpu`` are accepted (every rank gets the values, on their device)."""
        units = [m for m in module.modules() if isinstance(m, FullyShardedDataParallel)]
        if not recurse:
            if not isinstance(module, FullyShardedDataParallel):
                raise TypeError("summon_full_params(recurse=False) needs an FSDP module")
            units = [module]
        for u in units:
            if u._summoned is not None:
                raise RuntimeError("summon_full_params: already inside summon_full_params for "
                                   "this module")
        entered = []
        try:
            for u in units:
                u._summon(with_grads)
                entered.append(u)
            yield
        finally:
            for u in reversed(entered):
                u._unsummon(writeback)

    # ---- state dicts -------------------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def state_dict_type(module, state_dict_type, state_dict_config=None,
                        optim_state_dict_config=None):
        """Within it, ``state_dict()`` / ``load_state_dict()`` of ``module``'s FSDP units are of
        ``state_dict_type`` (StateDictType.FULL_STATE_DICT, SHARDED_STATE_DICT or
        LOCAL_STATE_DICT)."""
        units = [m for m in module.modules() if isinstance(m, FullyShardedDataParallel)]
        before = [(u.__dict__.get("_state_dict_type"), u.__dict__.get("_state_dict_config"))
                  for u in units]
        FullyShardedDataParallel.set_state_dict_type(module, state_dict_type, state_dict_config,
                                                     optim_state_dict_config)
        try:
            yield
        finally:
            for u, (t, c) in zip(units, before):
                for key, value in (("_state_dict_type", t), ("_state_dict_config", c)):
                    if value is None:
                        u.__dict__.pop(key, None)
                    else:
                        object.__setattr__(u, key, value)

    @staticmethod
    def set_state_dict_type(module, state_dict_type, state_dict_config=None,
                            optim_state_dict_config=None):
        if not isinstance(state_dict_type, StateDictType):
            raise TypeError(f"state_dict_type: expected a StateDictType, got "
                            f"{state_dict_type!r}")
        default = {StateDictType.FULL_STATE_DICT: FullStateDictConfig,
                   StateDictType.SHARDED_STATE_DICT: ShardedStateDictConfig,
                   StateDictType.LOCAL_STATE_DICT: LocalStateDictConfig}[state_dict_type]
        config = default() if state_dict_config is None else state_dict_config
        if not isinstance(config, default):
            raise TypeError(f"state_dict_type: {state_dict_type.name} takes a "
                            f"{default.__name__}, got {type(config).__name__}")
        for u in module.modules():
            if isinstance(u, FullyShardedDataParallel):
                object.__setattr__(u, "_state_dict_type", state_dict_type)
                object.__setattr__(u, "_state_dict_config", config)

    def _raw_state(self):
        """(wrapped key, tensor) of the parameters and persistent buffers, in order."""
        out = OrderedDict()
        for mod_name, m in self.named_modules(remove_duplicate=False):
            out.update(m._own_state(f"{mod_name}." if mod_name else "", False))
        return out

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """By the state-dict type (see state_dict_type): FULL_STATE_DICT, the plain model's
        keys and whole values (copies; every rank takes part in the gathers, and with
        ``rank0_only`` the others get an empty dict); SHARDED_STATE_DICT, the plain model's
        keys and this rank's flat piece of each sharded parameter as a
        ``checkpoint.FlatShard`` (the piece, the parameter's shape and where the piece starts:
        torch gives ShardedTensors / DTensors), so that ``dcp.save({"model":
        model.state_dict()})`` and ``dcp.load`` work on it as torch's (buffers whole);
        LOCAL_STATE_DICT, each unit's ``_flat_param`` shard (and the buffers)."""
        kind, config = self._state_dict_type, self._state_dict_config
        out = OrderedDict() if destination is None else destination
        offload = getattr(config, "offload_to_cpu", False)

        def put(key, t):
            arr = t.data if isinstance(t, Tensor) else t
            out[prefix + _clean(key)] = Tensor(to_numpy(arr).copy() if offload else arr.copy())

        if kind is StateDictType.FULL_STATE_DICT:
            with FullyShardedDataParallel.summon_full_params(self, writeback=False):
                state = self._raw_state()
            if getattr(config, "rank0_only", False) and self.rank != 0:
                return out
            for k, t in state.items():
                put(k, t)
            return out
        state = self._raw_state()
        if kind is StateDictType.LOCAL_STATE_DICT:
            for k, t in state.items():
                put(k, t)
            return out
        from ..checkpoint.metadata import FlatShard

        pieces = {}  # (module id, attribute) -> (key, piece, info, start), plain order below
        for base, _, u in self._units():
            if u._flat is not None:
                for info, piece, start in zip(u._infos, u._pieces(), u._piece_starts()):
                    for m, attr in info.owners:
                        pieces[(id(m), attr)] = (base + info.fqn, piece, info, start)
        for mod_name, m in self.named_modules(remove_duplicate=False):
            pre = f"{mod_name}." if mod_name else ""
            for attr, p in m._parameters.items():
                if (id(m), attr) in pieces:  # a FlatShard: the piece and its place (torch's
                    key, piece, info, start = pieces[(id(m), attr)]  # ShardedTensor / DTensor)
                    put(key, piece)
                    key = prefix + _clean(key)
                    out[key] = FlatShard(out[key], info.shape, start)
                elif p is not None and not isinstance(p, FlatParameter):
                    put(pre + attr, p)
            skip = m.__dict__.get("_non_persistent", ())
            for attr, b in m._buffers.items():
                if b is not None and attr not in skip:
                    put(pre + attr, b)
        return out

    def _units(self):
        """(clean key prefix of its parameters, clean key of its _flat_param, unit) for every
        unit here, in order."""
        out = []
        for name, m in self.named_modules():
            if isinstance(m, FullyShardedDataParallel):
                base = _clean(f"{name}.{_WRAPPED}." if name else f"{_WRAPPED}.")
                out.append((base, _clean(f"{name}._flat_param" if name else "_flat_param"), m))
        return out

    def _piece_bounds(self):
        """(start, stop) within this rank's shard of each original parameter's piece."""
        n, r = self._shards()
        size = self._padded // n
        lo_shard = r * size
        bounds = []
        for info in self._infos:
            lo = max(info.offset, lo_shard)
            hi = min(info.offset + info.numel, lo_shard + size)
            bounds.append((lo - lo_shard, max(hi, lo) - lo_shard))
        return bounds

    def _piece_starts(self):
        """Where in each original parameter (flattened) this rank's piece of it starts."""
        n, r = self._shards()
        lo_shard = r * (self._padded // n)
        return [min(max(lo_shard + a - info.offset, 0), info.numel)
                for info, (a, _) in zip(self._infos, self._piece_bounds())]

    def _pieces(self):
        data = self._flat.data
        return [data[a:b] for a, b in self._piece_bounds()]

    def load_state_dict(self, state_dict, strict=True):
        """What state_dict() of the same state-dict type returned. FULL_STATE_DICT: every rank
        passes the whole dict. SHARDED and LOCAL: each rank its own, saved with the same number
        of ranks (a different one is refused, naming the sizes that do not fit; a SHARDED
        state dict filled by ``dcp.load`` has been resharded to this run's pieces)."""
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of name -> array (a state_dict), "
                            f"got a {type(state_dict).__name__}")
        kind = self._state_dict_type
        if kind is StateDictType.FULL_STATE_DICT:
            with FullyShardedDataParallel.summon_full_params(self, writeback=True):
                return self._load_mapped(state_dict, strict)
        if kind is StateDictType.SHARDED_STATE_DICT:
            from ..checkpoint.metadata import FlatShard

            state_dict = OrderedDict(state_dict.items())
            for unit_name, key, u in self._units():
                if u._flat is None:
                    continue
                pieces = []
                for info, (a, b), start in zip(u._infos, u._piece_bounds(), u._piece_starts()):
                    name = unit_name + info.fqn
                    if name not in state_dict:
                        raise StateDictKeyError(f"Error(s) in loading state_dict for "
                                                f"FullyShardedDataParallel: missing keys: {name}")
                    value = state_dict.pop(name)
                    place = ""
                    if isinstance(value, FlatShard):  # what state_dict() gives: its place too
                        place = (f" (elements [{value.offset}, {value.offset + value.local.data.size})"
                                 f" of shape {value.shape})")
                        fits = value.shape == info.shape and value.offset == start
                        value = value.local
                    arr = value.data if isinstance(value, Tensor) else np.asarray(value)
                    if arr.size != b - a or (place and not fits):
                        raise ValueError(
                            f"FullyShardedDataParallel.load_state_dict (SHARDED_STATE_DICT): "
                            f"{name!r} holds {arr.size} elements{place} on rank {u.rank}, this "
                            f"rank's piece of it has {b - a} (elements [{start}, "
                            f"{start + b - a}) of shape {info.shape}): the state dict was "
                            f"saved with a different number of ranks (this run has "
                            f"{u._shards()[0]}) or another model; load it on as many ranks as "
                            "saved it, go through a FULL_STATE_DICT, or reshard it with "
                            "minidl.distributed.checkpoint (dcp.load into this model's "
                            "SHARDED state_dict())")
                    pieces.append((a, b, arr))
                shard = to_numpy(u._flat.data).copy()
                for a, b, arr in pieces:
                    shard[a:b] = to_numpy(arr).reshape(-1)
                state_dict[key] = shard
        else:
            for _, key, u in self._units():
                if u._flat is not None and key in state_dict:
                    value = state_dict[key]
                    size = int(np.prod(np.shape(value.data if isinstance(value, Tensor)
                                                else value)))
                    if size != u._flat.data.size:
                        raise ValueError(
                            f"FullyShardedDataParallel.load_state_dict (LOCAL_STATE_DICT): "
                            f"{key!r} holds {size} elements, this rank's shard {u._flat.data.size}"
                            f" ({u._numel} parameters over {u._shards()[0]} ranks): the state "
                            "dict was saved with a different number of ranks or another model; "
                            "load it on as many ranks as saved it, or go through a "
                            "FULL_STATE_DICT")
        return self._load_mapped(state_dict, strict)

    def _load_mapped(self, state_dict, strict):
        wrapped = {_clean(k): k for k in self._raw_state()}
        mapped = OrderedDict((wrapped.get(k, k), v) for k, v in state_dict.items())
        try:
            result = Module.load_state_dict(self, mapped, strict=strict)
        except StateDictKeyError as exc:
            raise StateDictKeyError(_clean(str(exc))) from None
        result.missing_keys[:] = [_clean(k) for k in result.missing_keys]
        result.unexpected_keys[:] = [_clean(k) for k in result.unexpected_keys]
        return result

    # ---- optimizer state ---------------------------------------------------------------------
    def _flat_owners(self):
        return {id(u._flat): (name, u) for name, _, u in self._units() if u._flat is not None}

    @staticmethod
    def optim_state_dict(model, optim, optim_state_dict=None, group=None):
        """``optim``'s state over the whole model, keyed by the original parameters' names
        (torch's FULL_STATE_DICT form): each state tensor gathered and cut back into the
        parameters' shapes, scalars (``step``) repeated per parameter. Every rank takes part
        and gets it."""
        owners = model._flat_owners()
        osd = optim.state_dict() if optim_state_dict is None else optim_state_dict
        params = [p for g in optim.param_groups for p in g["params"]]
        state, groups = {}, []
        for gi, saved in enumerate(osd["param_groups"]):
            names = []
            for idx in saved["params"]:
                p = params[idx]
                if id(p) not in owners:
                    raise ValueError("optim_state_dict: the optimizer holds a parameter that is "
                                     "no FSDP unit's shard of this model")
                unit_name, u = owners[id(p)]
                fqns = [unit_name + i.fqn for i in u._infos]
                names.extend(fqns)
                entry = osd["state"].get(idx)
                if entry is None:
                    continue
                per = {f: {} for f in fqns}
                for key, value in entry.items():
                    arr = value.data if isinstance(value, Tensor) else value
                    if hasattr(arr, "shape") and tuple(arr.shape) == tuple(p.data.shape) \
                            and arr.size:
                        full = to_numpy(u._gather(shard=to_device(arr, device_of(p.data))))
                        for i, f in zip(u._infos, fqns):
                            per[f][key] = Tensor(full[i.offset:i.offset + i.numel]
                                                 .reshape(i.shape).copy())
                    else:
                        for f in fqns:
                            per[f][key] = value
                state.update(per)
            groups.append({**{k: v for k, v in saved.items() if k != "params"},
                           "params": names})
        return {"state": state, "param_groups": groups}

    @staticmethod
    def optim_state_dict_to_load(model, optim, optim_state_dict, is_named_optimizer=False,
                                 load_directly=False, group=None):
        """What ``optim.load_state_dict`` takes, from what optim_state_dict returned (on the
        same or another number of ranks): each rank's share of every state tensor."""
        owners = model._flat_owners()
        if len(optim_state_dict["param_groups"]) != len(optim.param_groups):
            raise ValueError(f"optim_state_dict_to_load: the state dict has "
                             f"{len(optim_state_dict['param_groups'])} parameter groups, the "
                             f"optimizer {len(optim.param_groups)}")
        state, groups, index = {}, [], 0
        for gi, (saved, g) in enumerate(zip(optim_state_dict["param_groups"], optim.param_groups)):
            ids = []
            for p in g["params"]:
                if id(p) not in owners:
                    raise ValueError("optim_state_dict_to_load: the optimizer holds a parameter "
                                     "that is no FSDP unit's shard of this model")
                unit_name, u = owners[id(p)]
                fqns = [unit_name + i.fqn for i in u._infos]
                missing = [f for f in fqns if f not in saved["params"]]
                if missing:
                    raise ValueError(f"optim_state_dict_to_load: parameter group {gi} of the "
                                     f"state dict lacks {', '.join(missing)}")
                entries = [optim_state_dict["state"].get(f) for f in fqns]
                if all(e is not None for e in entries):
                    n, r = u._shards()
                    size = u._padded // n
                    out = {}
                    for key, value in entries[0].items():
                        arr = value.data if isinstance(value, Tensor) else value
                        if hasattr(arr, "shape") and tuple(arr.shape) == u._infos[0].shape \
                                and arr.size:
                            full = np.zeros(u._padded, dtype=to_numpy(arr).dtype)
                            for i, e in zip(u._infos, entries):
                                v = e[key]
                                full[i.offset:i.offset + i.numel] = to_numpy(
                                    v.data if isinstance(v, Tensor) else v).reshape(-1)
                            out[key] = Tensor(full[r * size:(r + 1) * size].copy())
                        else:
                            out[key] = value
                    state[index] = out
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in saved.items() if k != "params"}, "params": ids})
        result = {"state": state, "param_groups": groups}
        if load_directly:
            optim.load_state_dict(result)
        return result

    def extra_repr(self):
        return f"sharding_strategy={self.sharding_strategy.name}, world_size={self.world_size}"


def _tensors_in(obj):
    """The Tensors in a forward's output (nested tuples, lists, dicts)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors_in(o)


def _cast(obj, dtype):
    if isinstance(obj, Tensor):
        return obj.to(dtype) if is_floating(obj.data.dtype) and obj.data.dtype != dtype else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(o, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj

