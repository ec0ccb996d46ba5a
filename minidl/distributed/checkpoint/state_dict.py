"""torch.distributed.checkpoint.state_dict: a model's and its optimizers' state dicts in one
form whatever the parallelism (a plain module, DistributedDataParallel, FullyShardedDataParallel
or fully_shard): parameters under their plain names (``0.weight``, no ``module.`` /
``_fsdp_wrapped_module.``), optimizer state keyed by those names.

With ``StateDictOptions(full_state_dict=False)`` (the default) a sharded parameter (FSDP) comes
as a FlatShard, this rank's piece (torch gives a DTensor): what ``save`` writes piece by piece
and ``load`` fills from any number of ranks' pieces. With ``full_state_dict=True`` every value
is whole (collectives: every rank calls); adding ``cpu_offload=True`` gives it to rank 0 only
(the others get an empty dict), as torch's."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...backend import to_numpy
from ...nn.module import Module
from ...tensor import Tensor
from .metadata import FlatShard

__all__ = ["StateDictOptions", "get_state_dict", "set_state_dict", "get_model_state_dict",
           "get_optimizer_state_dict", "set_model_state_dict", "set_optimizer_state_dict"]


@dataclass
class StateDictOptions:
    """torch's options. ``full_state_dict``: whole values instead of this rank's pieces;
    ``cpu_offload``: values on the host (with full_state_dict, on rank 0 only);
    ``ignore_frozen_params``: leave out parameters with requires_grad=False; ``strict``: what
    set_model_state_dict passes to load_state_dict; ``flatten_optimizer_state_dict``: the
    optimizer state dict as one level (``state.<fqn>.<key>``, ``param_groups.<fqn>.<key>``)."""
    full_state_dict: bool = False
    cpu_offload: bool = False
    ignore_frozen_params: bool = False
    keep_submodule_prefixes: bool = True
    strict: bool = True
    broadcast_from_rank0: bool = False
    flatten_optimizer_state_dict: bool = False
    dsd_fqn_modifiers: str = "_fqn_modifiers"


def _options(options, what):
    if options is None:
        return StateDictOptions()
    if not isinstance(options, StateDictOptions):
        raise TypeError(f"{what}: options must be a StateDictOptions, got "
                        f"{type(options).__name__}")
    if options.broadcast_from_rank0:
        raise NotImplementedError(f"{what}: broadcast_from_rank0=True is not implemented "
                                  "(every rank passes the whole state dict instead)")
    return options


def _optimizers(optimizers, what):
    from ...optim.optimizer import Optimizer
    if isinstance(optimizers, Optimizer):
        return [optimizers]
    try:
        out = list(optimizers)
    except TypeError:
        raise TypeError(f"{what}: optimizers must be an Optimizer or an iterable of them, got "
                        f"{type(optimizers).__name__}") from None
    for o in out:
        if not isinstance(o, Optimizer):
            raise TypeError(f"{what}: optimizers must be Optimizers, got {type(o).__name__}")
    return out


def _check_model(model, what):
    if not isinstance(model, Module):
        raise TypeError(f"{what}: model must be an nn.Module, got {type(model).__name__}")


# ---- which parallelism -------------------------------------------------------------------------
def _kind(model):
    """'fsdp1' (FullyShardedDataParallel root), 'fsdp2' (fully_shard modules) or 'plain'
    (a module, DistributedDataParallel)."""
    from ..fsdp import FSDPModule, FullyShardedDataParallel
    mods = list(model.modules())
    if any(isinstance(m, FSDPModule) for m in mods):
        return "fsdp2"
    if any(isinstance(m, FullyShardedDataParallel) for m in mods):
        if not isinstance(model, FullyShardedDataParallel):
            raise NotImplementedError("state_dict: FullyShardedDataParallel units below a "
                                      "module that is not one: wrap the root in "
                                      "FullyShardedDataParallel too")
        return "fsdp1"
    return "plain"


def _fsdp1_layout(model):
    """For a FullyShardedDataParallel root: key -> (unit, info, a, b, start): this rank's
    piece of the parameter ``key`` is elements [a, b) of its unit's shard, elements [start,
    start + b - a) of the parameter flattened."""
    from ..fsdp.fully_sharded_data_parallel import _clean
    out = {}
    for base, _, u in model._units():
        if u._flat is None:
            continue
        n, r = u._shards()
        lo_shard = r * (u._padded // n)
        for info, (a, b) in zip(u._infos, u._piece_bounds()):
            start = min(max(lo_shard + a - info.offset, 0), info.numel)
            out.setdefault(_clean(base + info.fqn), (u, info, a, b, start))
    return out


def _fsdp2_piece(model, key):
    """(info, chunk, start, valid) of the fully_shard parameter ``key`` on this rank, else
    None: its piece (``chunk`` elements, padded) holds elements [start, start + valid)."""
    from ..fsdp._fully_shard import _owner_of
    found = _owner_of(model, key)
    if found is None:
        return None
    state, info = found
    chunk = state._chunks[state._infos.index(info)]
    start = min(state.rank * chunk, info.numel)
    return info, chunk, start, max(0, min(chunk, info.numel - start))


def _offload(value, cpu):
    if cpu and isinstance(value, Tensor):
        return Tensor(to_numpy(value.data))
    return value


def _flat_of(value):
    arr = value.local.data if isinstance(value, FlatShard) else (
        value.data if isinstance(value, Tensor) else np.asarray(value))
    return to_numpy(arr).reshape(-1)


def _piece(value, key, shape, start, length):
    """Elements [start, start + length) of ``value`` flattened: a FlatShard at that place, or
    the whole tensor (shape ``shape``)."""
    if isinstance(value, FlatShard):
        if value.shape != tuple(shape):
            raise ValueError(f"set_state_dict: {key!r} has shape {value.shape}, the parameter "
                             f"{tuple(shape)}")
        if value.offset != start or value.local.data.size != length:
            raise ValueError(f"set_state_dict: {key!r} holds elements [{value.offset}, "
                             f"{value.offset + value.local.data.size}), this rank's piece is "
                             f"[{start}, {start + length}): load the checkpoint into the state "
                             "dict get_state_dict gives on this layout")
        return _flat_of(value)
    arr = value.data if isinstance(value, Tensor) else np.asarray(value)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"set_state_dict: {key!r} has shape {tuple(arr.shape)}, the parameter "
                         f"{tuple(shape)}")
    return to_numpy(arr).reshape(-1)[start:start + length]


# ---- the model -----------------------------------------------------------------------------
def get_model_state_dict(model, *, submodules=None, options=None):
    """The model's state dict under plain names (see the module docstring)."""
    what = "get_model_state_dict"
    _check_model(model, what)
    options = _options(options, what)
    if submodules is not None:
        raise NotImplementedError(f"{what}: submodules is not implemented (deprecated in torch)")
    kind = _kind(model)
    if kind == "fsdp1":
        from ..fsdp import FullStateDictConfig, FullyShardedDataParallel as FSDP, StateDictType
        if options.full_state_dict:
            config = FullStateDictConfig(offload_to_cpu=options.cpu_offload,
                                         rank0_only=options.cpu_offload)
            with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
                out = model.state_dict()
        else:
            with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
                out = model.state_dict()  # the sharded parameters as FlatShards already
    elif kind == "fsdp2":
        from ..fsdp._fully_shard import _whole
        out = model.state_dict()
        for key, value in list(out.items()):
            if options.full_state_dict:
                out[key] = _whole(model, key, value)
            else:
                found = _fsdp2_piece(model, key)
                if found is not None:
                    info, _, start, valid = found
                    out[key] = FlatShard(Tensor(value.data.reshape(-1)[:valid]), info.shape,
                                         start)
        if options.full_state_dict and options.cpu_offload and _rank() != 0:
            return {}
    else:
        out = model.state_dict()
        if options.full_state_dict and options.cpu_offload and _rank() != 0:
            return {}
    if options.ignore_frozen_params:
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        out = type(out)((k, v) for k, v in out.items() if k not in frozen)
    return type(out)((k, _offload(v, options.cpu_offload)) for k, v in out.items())


def _rank():
    from ... import distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def set_model_state_dict(model, model_state_dict, *, options=None):
    """Load ``model_state_dict`` (what get_model_state_dict gave, filled by load, or whole
    values) into the model; returns load_state_dict's (missing_keys, unexpected_keys)."""
    what = "set_model_state_dict"
    _check_model(model, what)
    options = _options(options, what)
    if not isinstance(model_state_dict, dict):
        raise TypeError(f"{what}: model_state_dict must be a dict, got "
                        f"{type(model_state_dict).__name__}")
    kind = _kind(model)
    sd = dict(model_state_dict)
    if kind == "fsdp1":
        from ..fsdp import FullyShardedDataParallel as FSDP, StateDictType
        if options.full_state_dict or not any(isinstance(v, FlatShard) for v in sd.values()):
            whole = {k: Tensor(_flat_of(v).reshape(v.shape)) if isinstance(v, FlatShard) else v
                     for k, v in sd.items()}
            with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT):
                return model.load_state_dict(whole, strict=options.strict)
        for key, (u, info, a, b, start) in _fsdp1_layout(model).items():
            if key in sd:
                sd[key] = Tensor(_piece(sd[key], key, info.shape, start, b - a))
        with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
            return model.load_state_dict(sd, strict=options.strict)
    if kind == "fsdp2":
        for key, value in sd.items():
            found = _fsdp2_piece(model, key)
            if found is None:
                continue
            info, chunk, start, valid = found
            piece = np.zeros(chunk, dtype=_flat_of(value).dtype)
            piece[:valid] = _piece(value, key, info.shape, start, valid)
            sd[key] = Tensor(piece)
        return model.load_state_dict(sd, strict=options.strict)
    sd = {k: Tensor(_flat_of(v).reshape(v.shape)) if isinstance(v, FlatShard) else v
          for k, v in sd.items()}
    return model.load_state_dict(sd, strict=options.strict)


# ---- the optimizers ----------------------------------------------------------------------------
def _init_optim_state(optim):
    """Give a fresh optimizer its state (as torch does before reading it): one step with zero
    gradients and learning rate 0, which leaves the parameters as they are. Not when it has
    state already, nor when a parameter has a gradient (that step would use it)."""
    params = [p for g in optim.param_groups for p in g["params"]]
    if any(optim.state.values()) or any(p.grad is not None for p in params):
        return
    for p in params:
        if p.requires_grad:
            p.grad = Tensor(p.data * 0)
    lrs = [g.get("lr") for g in optim.param_groups]
    try:
        for g in optim.param_groups:
            if "lr" in g:
                g["lr"] = 0.0
        optim.step()
    finally:
        for g, lr in zip(optim.param_groups, lrs):
            if lr is not None:
                g["lr"] = lr
        for p in params:
            p.grad = None


def _param_names(model, kind):
    """id(parameter the optimizer holds) -> [names]: one name, or for an FSDP unit's flat
    parameter the names of the parameters in it."""
    out = {}
    if kind == "fsdp1":
        for key, (u, info, a, b, start) in _fsdp1_layout(model).items():
            out.setdefault(id(u._flat), []).append(key)
    for name, p in model.named_parameters():
        out.setdefault(id(p), [name])
    return out


def _state_value(model, kind, layout, key, value, param, full):
    """One optimizer state entry of parameter ``key`` in get_optimizer_state_dict's form."""
    arr = value.data if isinstance(value, Tensor) else value
    if not hasattr(arr, "shape") or tuple(arr.shape) != tuple(param.data.shape) or not arr.size:
        return value
    if kind == "fsdp1" and key in layout:
        u, info, a, b, start = layout[key]
        return FlatShard(Tensor(to_numpy(arr)[a:b].copy()), info.shape, start)
    if kind == "fsdp2":
        found = _fsdp2_piece(model, key)
        if found is not None:
            if full:
                from ..fsdp._fully_shard import _whole
                return _whole(model, key, Tensor(arr))
            info, _, start, valid = found
            return FlatShard(Tensor(to_numpy(arr)[:valid].copy()), info.shape, start)
    return value


def get_optimizer_state_dict(model, optimizers, *, submodules=None, options=None):
    """The optimizers' state dict keyed by parameter name (torch's form): ``state``: name ->
    {key: value}, ``param_groups``: the groups' hyperparameters with ``params`` the names. A
    fresh optimizer's state is made first (one step at learning rate 0), so that load has
    something to fill."""
    what = "get_optimizer_state_dict"
    _check_model(model, what)
    options = _options(options, what)
    optims = _optimizers(optimizers, what)
    kind = _kind(model)
    for o in optims:
        _init_optim_state(o)
    if kind == "fsdp1" and options.full_state_dict:
        from ..fsdp import FullyShardedDataParallel as FSDP
        state, groups = {}, []
        for o in optims:
            osd = FSDP.optim_state_dict(model, o)
            state.update(osd["state"])
            groups.extend(osd["param_groups"])
        out = {"state": state, "param_groups": groups}
        if options.cpu_offload and _rank() != 0:
            return {}
        return _flatten_osd(out) if options.flatten_optimizer_state_dict else out
    names = _param_names(model, kind)
    layout = _fsdp1_layout(model) if kind == "fsdp1" else {}
    state, groups = {}, []
    for o in optims:
        osd = o.state_dict()
        params = [p for g in o.param_groups for p in g["params"]]
        for saved in osd["param_groups"]:
            fqns = []
            for idx in saved["params"]:
                p = params[idx]
                if id(p) not in names:
                    raise ValueError(f"{what}: the optimizer holds a parameter (shape "
                                     f"{tuple(p.data.shape)}) that is not the model's")
                keys = names[id(p)]
                fqns.extend(keys)
                entry = osd["state"].get(idx)
                if entry is None:
                    continue
                for key in keys:
                    state[key] = {k: _offload(_state_value(model, kind, layout, key, v, p,
                                                           options.full_state_dict),
                                              options.cpu_offload)
                                  for k, v in entry.items()}
            groups.append({**{k: v for k, v in saved.items() if k != "params"},
                           "params": fqns})
    out = {"state": state, "param_groups": groups}
    if options.full_state_dict and options.cpu_offload and _rank() != 0:
        return {}
    return _flatten_osd(out) if options.flatten_optimizer_state_dict else out


def _flatten_osd(osd):
    out = {}
    for fqn, entry in osd["state"].items():
        for k, v in entry.items():
            out[f"state.{fqn}.{k}"] = v
    for g in osd["param_groups"]:
        for fqn in g["params"]:
            for k, v in g.items():
                if k != "params":
                    out[f"param_groups.{fqn}.{k}"] = v
    return out


def _unflatten_osd(flat, optims, names):
    """The nested form of a flattened optimizer state dict, for these optimizers."""
    state, groups = {}, []
    for key, v in flat.items():
        if key.startswith("state."):
            fqn, _, k = key[len("state."):].rpartition(".")
            state.setdefault(fqn, {})[k] = v
    for o in optims:
        for g in o.param_groups:
            fqns = [f for p in g["params"] for f in names.get(id(p), ())]
            hyper = {k: flat[f"param_groups.{fqns[0]}.{k}"] for k in g
                     if k != "params" and fqns and f"param_groups.{fqns[0]}.{k}" in flat}
            groups.append({**hyper, "params": fqns})
    return {"state": state, "param_groups": groups}


def set_optimizer_state_dict(model, optimizers, optim_state_dict, *, options=None):
    """Load what get_optimizer_state_dict gave (filled by load, or whole values) into the
    optimizers."""
    what = "set_optimizer_state_dict"
    _check_model(model, what)
    options = _options(options, what)
    optims = _optimizers(optimizers, what)
    if not isinstance(optim_state_dict, dict):
        raise TypeError(f"{what}: optim_state_dict must be a dict, got "
                        f"{type(optim_state_dict).__name__}")
    kind = _kind(model)
    names = _param_names(model, kind)
    layout = _fsdp1_layout(model) if kind == "fsdp1" else {}
    osd = optim_state_dict
    if "param_groups" not in osd and any(k.startswith("state.") or k.startswith("param_groups.")
                                         for k in osd):
        osd = _unflatten_osd(osd, optims, names)
    if "state" not in osd or "param_groups" not in osd:
        raise ValueError(f"{what}: expected a dict with 'state' and 'param_groups', as "
                         "get_optimizer_state_dict returns")
    saved_groups = list(osd["param_groups"])
    wanted = sum(len(o.param_groups) for o in optims)
    if len(saved_groups) != wanted:
        raise ValueError(f"{what}: the state dict has {len(saved_groups)} parameter groups, "
                         f"the optimizers {wanted}")
    at = 0
    for o in optims:
        state, groups, index = {}, [], 0
        for g in o.param_groups:
            saved = saved_groups[at]
            at += 1
            ids = []
            for p in g["params"]:
                keys = names.get(id(p))
                if keys is None:
                    raise ValueError(f"{what}: the optimizer holds a parameter (shape "
                                     f"{tuple(p.data.shape)}) that is not the model's")
                missing = [k for k in keys if k not in saved["params"]]
                if missing:
                    raise ValueError(f"{what}: parameter group {at - 1} of the state dict lacks "
                                     f"{', '.join(missing)}")
                entries = [osd["state"].get(k) for k in keys]
                if all(e is not None for e in entries):
                    state[index] = _to_optimizer(model, kind, layout, keys, entries, p)
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in saved.items() if k != "params"}, "params": ids})
        o.load_state_dict({"state": state, "param_groups": groups})


def _to_optimizer(model, kind, layout, keys, entries, param):
    """One parameter's optimizer state (index form) from its names' entries."""
    out = {}
    for k, value in entries[0].items():
        # a state tensor laid out as the parameter (not a scalar such as a 0-d ``step``)
        shaped = isinstance(value, FlatShard) or (
            isinstance(value, (Tensor, np.ndarray)) and np.ndim(_flat_of(value)) > 0
            and len(_shape(value)) > 0)
        if kind == "fsdp1" and keys[0] in layout and shaped and (
                isinstance(value, FlatShard) or tuple(_shape(value)) == layout[keys[0]][1].shape):
            flat = np.zeros(param.data.shape, dtype=_flat_of(value).dtype)
            for key, e in zip(keys, entries):
                u, info, a, b, start = layout[key]
                flat[a:b] = _piece(e[k], key, info.shape, start, b - a)
            out[k] = Tensor(flat)
        elif kind == "fsdp2" and shaped and _fsdp2_piece(model, keys[0]) is not None and (
                isinstance(value, FlatShard) or tuple(_shape(value)) != tuple(param.data.shape)):
            info, chunk, start, valid = _fsdp2_piece(model, keys[0])
            piece = np.zeros(chunk, dtype=_flat_of(value).dtype)
            piece[:valid] = _piece(value, keys[0], info.shape, start, valid)
            out[k] = Tensor(piece)
        elif isinstance(value, FlatShard):
            out[k] = Tensor(_flat_of(value).reshape(value.shape))
        else:
            out[k] = value
    return out


def _shape(value):
    return value.shape if isinstance(value, FlatShard) else np.shape(
        value.data if isinstance(value, Tensor) else value)


# ---- both ------------------------------------------------------------------------------------
def get_state_dict(model, optimizers, *, submodules=None, options=None):
    """(get_model_state_dict(model), get_optimizer_state_dict(model, optimizers))."""
    return (get_model_state_dict(model, submodules=submodules, options=options),
            get_optimizer_state_dict(model, optimizers, submodules=submodules, options=options))


def set_state_dict(model, optimizers, *, model_state_dict, optim_state_dict, options=None):
    """set_model_state_dict and set_optimizer_state_dict; returns the model's
    (missing_keys, unexpected_keys)."""
    result = set_model_state_dict(model, model_state_dict, options=options)
    set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
    return result
