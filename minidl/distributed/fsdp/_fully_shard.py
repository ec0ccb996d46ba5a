"""fully_shard: torch's FSDP2 API, on the machinery of the FSDP1 units.

    for layer in model.layers:
        fully_shard(layer)                  # bottom-up: the blocks, then the root
    fully_shard(model)
    opt = optim.Adam(model.parameters(), lr=1e-3)    # the shards, under the original names
    F.cross_entropy(model(x), y).backward()          # x: this rank's share of the batch
    opt.step()

``fully_shard(module)`` shards the parameters of ``module`` that no fully_shard module below
it holds, each on its own: the parameter, flattened and padded to a multiple of the world size
(of the shard group: ``mesh=`` a 1-D DeviceMesh, or a 2-D one for HSDP, dim 0 replicate),
is cut in as many pieces, and this rank's piece (1-D) becomes the Parameter under the original
name (``layer.weight``), which ``parameters()``, the optimizer and ``state_dict()`` see (torch
holds a DTensor sharded on dim 0 there; minidl has no DTensor). The module keeps its place and
identity; its class becomes ``FSDP<Class>``, a subclass of FSDPModule and of its class.

Its forward all-gathers the pieces of all its parameters at once (one all_gather), shows the
whole parameters to its code (``self.weight`` during forward is the gathered one; outside
forward it is this rank's 1-D piece), and with ``reshard_after_forward=True`` frees them at the
end of the forward and gathers them again in backward, as FULL_SHARD does (see
fully_sharded_data_parallel: saved-tensor hooks keep tokens in place of the saved views); with
False the graph keeps them until the end of the backward pass, as SHARD_GRAD_OP; None (the
default, as torch 2.13's) frees all but the root's. The gradients are reduce-scattered,
averaged over the ranks, into the pieces' ``.grad`` once the backward pass has finished.

Not done here: ``nn.utils.clip_grad_norm_`` over the pieces computes this rank's norm only
(torch's DTensors make it the whole model's); a whole-model clipping for fully_shard modules
is not implemented (FullyShardedDataParallel.clip_grad_norm_ is, for FSDP1 units).

``state_dict()`` gives this rank's pieces under the original names (what torch's DTensors hold
locally), and ``load_state_dict`` takes them back on the same number of ranks (another number
of ranks is refused by the shapes: each value names its key). For the whole parameters, use
``FSDPModule.full_state_dict()`` / ``load_full_state_dict()`` (collectives: every rank calls).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ... import distributed as dist
from ...backend import device_of, get_array_module, to_numpy
from ...nn.module import Module, Parameter
from ...tensor import Tensor, no_grad
from .api import MixedPrecision, ShardingStrategy
from .fully_sharded_data_parallel import (FullyShardedDataParallel, _cast, _check_replicas,
                                          _check_unit_params, _Info)

__all__ = ["fully_shard", "FSDPModule", "MixedPrecisionPolicy", "OffloadPolicy",
           "CPUOffloadPolicy"]


@dataclass(frozen=True)
class MixedPrecisionPolicy:
    """``param_dtype``: the gathered parameters' dtype in forward and backward (the pieces the
    optimizer steps keep theirs); ``reduce_dtype``: the gradients' in the reduce-scatter
    (param_dtype when None); ``output_dtype``: floating outputs cast to it;
    ``cast_forward_inputs``: floating inputs cast to param_dtype."""
    param_dtype: object = None
    reduce_dtype: object = None
    output_dtype: object = None
    cast_forward_inputs: bool = True


@dataclass
class OffloadPolicy:
    """No offloading (the default)."""


@dataclass
class CPUOffloadPolicy(OffloadPolicy):
    pin_memory: bool = True


class _Owned(_Info):
    """An original parameter of a fully_shard module: its piece is the Parameter under its
    name; in forward its owners show the gathered parameter above it (the instance dict)."""

    def show(self, value=None):
        for m, attr in self.owners:
            if value is None:
                m.__dict__.pop(attr, None)
            else:
                m.__dict__[attr] = value


class _State(FullyShardedDataParallel):
    """The FSDP state of one fully_shard module: an FSDP1 unit (gather, views, hooks,
    reshard) whose flat buffer lays each parameter out whole (padded) and whose local shard is
    the parameters' pieces, one Parameter each. Not a submodule of anything."""

    def __init__(self, module, group, strategy, mp, path):
        Module.__init__(self)
        for name, value in (("process_group", group), ("sharding_strategy", strategy),
                            ("mixed_precision", mp), ("_ignored", set()), ("_has_parent", True),
                            ("_sync_grads", True), ("_full", None), ("_grad_full", None),
                            ("_summoned", None), ("_flat", None), ("_path", path),
                            ("_regathered", None), ("_swapped", {}), ("_recorded", 0),
                            ("_done", 0), ("_owner", module)):
            object.__setattr__(self, name, value)

    # the layout: parameter i is elements [offset, offset + padded_i) of the whole buffer, and
    # rank r holds [offset + r * chunk_i, offset + (r + 1) * chunk_i) of it, as its piece i
    def _setup(self, infos, params):
        n = self.world_size
        offset, chunks = 0, []
        for info in infos:
            info.offset = offset
            chunk = math.ceil(info.numel / n)
            chunks.append(chunk)
            offset += chunk * n
        object.__setattr__(self, "_infos", infos)
        object.__setattr__(self, "_chunks", chunks)
        object.__setattr__(self, "_padded", offset)
        object.__setattr__(self, "_numel", sum(i.numel for i in infos))
        r = self.rank
        pieces = []
        for info, p, chunk in zip(infos, params, chunks):
            xp = get_array_module(p.data)
            whole = xp.zeros(chunk * n, dtype=p.data.dtype)
            whole[:info.numel] = p.data.reshape(-1)
            piece = Parameter(whole[r * chunk:(r + 1) * chunk].copy(),
                              requires_grad=p.requires_grad)
            for m, attr in info.owners:
                m._parameters[attr] = piece
            pieces.append(piece)
        object.__setattr__(self, "_pieces_params", pieces)

    def _shards(self):
        return self.world_size, self.rank

    def _add_grad(self, index, g):
        if self._grad_full is None:
            mp = self.mixed_precision
            dtype = mp.reduce_dtype or mp.param_dtype or self._pieces_params[0].data.dtype
            self._grad_full = get_array_module(g).zeros(self._padded, dtype=dtype)
        super()._add_grad(index, g)

    def _local(self, arrays, dtype=None):
        """This rank's pieces, one after the other (cast to ``dtype``)."""
        xp = get_array_module(arrays[0])
        out = xp.concatenate([a.reshape(-1) for a in arrays])
        return out if dtype is None or out.dtype == dtype else out.astype(dtype)

    def _gather(self, dtype=None, shard=None):
        """The whole buffer in the parameters' layout (see _setup), from every rank's pieces
        (or from ``shard``: a gradient or optimizer state laid out as the pieces)."""
        local = self._local([p.data for p in self._pieces_params], dtype) if shard is None \
            else shard
        n = self.world_size
        xp = get_array_module(local)
        if n == 1:
            return local
        ranks = xp.empty(n * local.size, dtype=local.dtype)
        dist.all_gather_into_tensor(ranks, local, group=self.process_group)
        ranks = ranks.reshape(n, local.size)
        full = xp.empty(self._padded, dtype=local.dtype)
        start = 0
        for info, chunk in zip(self._infos, self._chunks):
            full[info.offset:info.offset + chunk * n] = ranks[:, start:start + chunk].reshape(-1)
            start += chunk
        return full

    def _reduce_grad(self, g):
        n = self.world_size
        xp = get_array_module(g)
        if n == 1:
            out = g
        else:  # rank r's pieces, one after the other, for each r: what reduce_scatter splits
            ranks = xp.concatenate([g[i.offset:i.offset + c * n].reshape(n, c)
                                    for i, c in zip(self._infos, self._chunks)], axis=1)
            out = xp.empty(ranks.shape[1], dtype=g.dtype)
            dist.reduce_scatter_tensor(out, ranks.reshape(-1), op="sum",
                                       group=self.process_group)
        n *= self._replicate(out)  # HSDP: summed over the replicas too
        out *= out.dtype.type(1.0 / n)
        start = 0
        for p, chunk in zip(self._pieces_params, self._chunks):
            piece = out[start:start + chunk].astype(p.data.dtype)
            start += chunk
            if p.grad is None:
                p.grad = Tensor(piece)
            else:
                p.grad.data += piece


def _walk(module, prefix=""):
    """(name, module) of ``module`` and its descendants, not entering fully_shard modules."""
    yield prefix, module
    for name, child in module._modules.items():
        if child is not None and not isinstance(child, FSDPModule):
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)


class FSDPModule:
    """What fully_shard makes a module also be (its class becomes ``FSDP<Class>``)."""

    def forward(self, *args, **kwargs):
        state = self.__dict__["_fsdp_state"]
        if state._reshard_after_forward is None:  # torch's default: all but the root
            object.__setattr__(state, "sharding_strategy", ShardingStrategy.FULL_SHARD
                               if state._has_parent else ShardingStrategy.SHARD_GRAD_OP)
        mp = state.mixed_precision
        if mp.param_dtype is not None and state._cast_inputs:
            args, kwargs = _cast(args, mp.param_dtype), _cast(kwargs, mp.param_dtype)
        if state._infos:
            out = state._run_unit(lambda: super(FSDPModule, self).forward(*args, **kwargs),
                                  (args, kwargs), lambda i: state._pieces_params[i],
                                  state._pieces_params[0].requires_grad)
        else:
            out = super().forward(*args, **kwargs)
        if state._output_dtype is not None:
            out = _cast(out, state._output_dtype)
        return out

    def reshard(self):
        """Free the parameters gathered by unshard() (forward frees its own itself)."""
        self.__dict__["_fsdp_state"]._reshard()

    def unshard(self, async_op=False):
        """Gather the whole parameters and show them under their names (outside forward, no
        gradient through them) until reshard(); ``async_op`` gives a handle whose wait() does
        nothing (the gather is done on return)."""
        state = self.__dict__["_fsdp_state"]
        if state._infos and state._full is None:
            mp = state.mixed_precision
            state._full = state._gather(mp.param_dtype)
            for i, info in enumerate(state._infos):
                info.show(Tensor(state._view(i)))
        return _Done() if async_op else None

    def set_requires_gradient_sync(self, requires_gradient_sync, *, recurse=True):
        """False: backward passes sum the whole gradients locally (no collective), as no_sync;
        the first backward after it is set True again reduces everything summed."""
        for m in (self.modules() if recurse else [self]):
            if isinstance(m, FSDPModule):
                object.__setattr__(m.__dict__["_fsdp_state"], "_sync_grads",
                                   bool(requires_gradient_sync))

    def set_reshard_after_forward(self, reshard_after_forward, recurse=True):
        _check_reshard(reshard_after_forward)
        for m in (self.modules() if recurse else [self]):
            if isinstance(m, FSDPModule):
                _set_reshard(m.__dict__["_fsdp_state"], reshard_after_forward)

    def full_state_dict(self):
        """The whole model's state dict, whole parameters under their names (every rank
        takes part in the gathers and gets it)."""
        out = OrderedDict()
        with no_grad():
            for key, value in self.state_dict().items():
                out[key] = _whole(self, key, value)
        return out

    def load_full_state_dict(self, state_dict, strict=True):
        """The inverse of full_state_dict: each rank keeps its pieces of the whole values."""
        pieces = OrderedDict()
        for key, value in state_dict.items():
            pieces[key] = _piece_of(self, key, value)
        return self.load_state_dict(pieces, strict=strict)


class _Done:
    def wait(self):
        return None


def _owner_of(root, key):
    """(state, info) of the sharded parameter named ``key`` in ``root``, else None: the
    fully_shard modules on the path from ``root`` to its module hold it."""
    parts = key.split(".")
    path, m = [root], root
    for name in parts[:-1]:
        m = m._modules.get(name)
        if m is None:
            return None
        path.append(m)
    for holder in reversed(path):
        state = holder.__dict__.get("_fsdp_state")
        if state is None:
            continue
        for info in state._infos:
            if any(o is m and a == parts[-1] for o, a in info.owners):
                return state, info
    return None


def _whole(root, key, value):
    found = _owner_of(root, key)
    if found is None:
        return Tensor(value.data.copy())
    state, info = found
    n = state.world_size
    xp = get_array_module(value.data)
    ranks = xp.empty(n * value.data.size, dtype=value.data.dtype)
    if n == 1:
        ranks[...] = value.data
    else:
        dist.all_gather_into_tensor(ranks, value.data, group=state.process_group)
    return Tensor(ranks[:info.numel].reshape(info.shape).copy())


def _piece_of(root, key, value):
    found = _owner_of(root, key)
    if found is None:
        return value
    state, info = found
    i = state._infos.index(info)
    arr = value.data if isinstance(value, Tensor) else np.asarray(value)
    if tuple(arr.shape) != info.shape:
        raise ValueError(f"load_full_state_dict: {key!r} has shape {tuple(arr.shape)}, the "
                         f"parameter {info.shape}")
    chunk, r = state._chunks[i], state.rank
    whole = np.zeros(chunk * state.world_size, dtype=to_numpy(arr).dtype)
    whole[:info.numel] = to_numpy(arr).reshape(-1)
    return Tensor(whole[r * chunk:(r + 1) * chunk].copy())


def _check_reshard(value):
    if value is not None and not isinstance(value, bool):
        raise NotImplementedError(f"fully_shard: reshard_after_forward must be True, False or "
                                  f"None (resharding to {value!r} ranks is not implemented)")


def _set_reshard(state, value):
    object.__setattr__(state, "_reshard_after_forward", value)
    if value is not None:
        object.__setattr__(state, "sharding_strategy", ShardingStrategy.FULL_SHARD if value
                           else ShardingStrategy.SHARD_GRAD_OP)


def _mesh_groups(mesh):
    """(shard group, replicate group or None) of fully_shard's ``mesh``: None, the world; a
    1-D mesh, its group; a 2-D mesh, HSDP: replicate along dim 0, shard along dim 1."""
    from ..device_mesh import DeviceMesh
    if mesh is None:
        return None, None
    if not isinstance(mesh, DeviceMesh):
        raise TypeError(f"fully_shard: mesh must be a DeviceMesh (init_device_mesh), got "
                        f"{type(mesh).__name__}")
    if mesh.ndim not in (1, 2):
        raise ValueError(f"fully_shard expects a 1D or 2D DeviceMesh but got a {mesh.ndim}-D "
                         f"mesh of shape {mesh.shape}: {mesh!r}")
    if mesh.get_coordinate() is None:
        raise ValueError(f"fully_shard: rank {dist.get_rank()} is not in mesh {mesh!r}")
    if mesh.ndim == 1:
        return mesh.get_group(), None
    return mesh.get_group(1), mesh.get_group(0)


def fully_shard(module, *, mesh=None, reshard_after_forward=None, shard_placement_fn=None,
                mp_policy=MixedPrecisionPolicy(), offload_policy=OffloadPolicy(),
                ignored_params=None, dp_mesh_dims=None):
    """torch.distributed.fsdp.fully_shard (FSDP2): shard ``module``'s parameters (those no
    fully_shard module below it holds) over the world, in place; returns ``module``, now an
    FSDPModule. Apply it to the blocks first, then to the root. ``mesh``: a 1-D DeviceMesh
    shards over its group instead; a 2-D one is HSDP, as torch: sharded along dim 1, replicated
    along dim 0 (the gradients reduce-scattered in the shard group, then all-reduced across the
    replicas, averaged over all). Give every fully_shard call of a model the same mesh. ``reshard_after_forward``:
    True frees the gathered parameters after forward (gathering again in backward), False
    keeps them to the end of backward, None (torch 2.13's default) is True but for the root
    (the outermost fully_shard module, known at its forward); an int, torch's resharding to
    a smaller group, is refused. ``ignored_params`` stay as they are (not sharded, not
    averaged). See the module docstring for what state_dict() gives."""
    if not isinstance(module, Module):
        raise TypeError(f"fully_shard: expected an nn.Module, got {type(module).__name__}")
    if isinstance(module, FSDPModule):
        raise ValueError(f"fully_shard: {type(module).__name__} is already fully_shard'ed")
    if not dist.is_initialized():
        raise RuntimeError("fully_shard: the default process group is not initialised; call "
                           "minidl.distributed.init_process_group() first (and launch with "
                           "mpiexec -n N)")
    if dp_mesh_dims is not None:
        raise NotImplementedError("fully_shard: dp_mesh_dims is not implemented; pass the data "
                                  "parallel mesh itself (1-D: shard, 2-D: replicate, shard)")
    shard_group, replicate_group = _mesh_groups(mesh)
    _check_reshard(reshard_after_forward)
    if shard_placement_fn is not None:
        raise NotImplementedError("fully_shard: shard_placement_fn is not implemented "
                                  "(every parameter is sharded flat, as dim 0)")
    if not isinstance(mp_policy, MixedPrecisionPolicy):
        raise TypeError(f"fully_shard: mp_policy must be a MixedPrecisionPolicy, got "
                        f"{type(mp_policy).__name__}")
    if offload_policy is not None and not isinstance(offload_policy, OffloadPolicy):
        raise TypeError(f"fully_shard: offload_policy must be an OffloadPolicy, got "
                        f"{type(offload_policy).__name__}")
    ignored = {id(p) for p in (ignored_params or ())}
    infos, params, by_id = [], [], {}
    for mod_name, m in _walk(module):
        for attr, p in m._parameters.items():
            if p is None or id(p) in ignored:
                continue
            if id(p) in by_id:
                infos[by_id[id(p)]].owners.append((m, attr))
                continue
            by_id[id(p)] = len(infos)
            infos.append(_Owned(f"{mod_name}.{attr}" if mod_name else attr, p.data.shape, 0,
                                [(m, attr)]))
            params.append(p)
    named = [(i.fqn, p) for i, p in zip(infos, params)]
    _check_unit_params(named)
    if isinstance(offload_policy, CPUOffloadPolicy) and any(
            device_of(p.data) != "cpu" for p in params):
        raise NotImplementedError("fully_shard: CPUOffloadPolicy for a CUDA module is not "
                                  "implemented")
    everyone = [None] * dist.get_world_size(shard_group)
    described = [(fqn, tuple(p.data.shape), str(p.data.dtype)) for fqn, p in named]
    dist.all_gather_object(everyone, described, group=shard_group)
    for rank, theirs in enumerate(everyone[1:], start=1):
        if theirs != everyone[0]:
            raise ValueError(f"fully_shard: ranks shard different modules: rank 0 has "
                             f"{everyone[0]}, rank {rank} {theirs}")
    if replicate_group is not None:
        _check_replicas(shard_group, replicate_group, "fully_shard")
    mp = MixedPrecision(param_dtype=mp_policy.param_dtype, reduce_dtype=mp_policy.reduce_dtype)
    state = _State(module, shard_group, ShardingStrategy.FULL_SHARD, mp,
                   type(module).__name__ + ".")
    object.__setattr__(state, "_inter_node_pg", replicate_group)
    object.__setattr__(state, "_device_mesh", mesh)
    _set_reshard(state, reshard_after_forward)
    object.__setattr__(state, "_has_parent", False)
    for m in module.modules():  # the fully_shard modules below: not the root
        if m is not module and isinstance(m, FSDPModule):
            object.__setattr__(m.__dict__["_fsdp_state"], "_has_parent", True)
    object.__setattr__(state, "_cast_inputs", mp_policy.cast_forward_inputs)
    object.__setattr__(state, "_output_dtype", mp_policy.output_dtype)
    state._setup(infos, params)
    object.__setattr__(module, "_fsdp_state", state)
    cls = type(module)
    if cls not in _CLASSES:  # one FSDP<Class> per class, as torch's
        _CLASSES[cls] = type(f"FSDP{cls.__name__}", (FSDPModule, cls), {})
    module.__class__ = _CLASSES[cls]
    return module


_CLASSES = {}
