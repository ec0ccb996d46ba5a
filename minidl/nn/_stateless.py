"""functional_call: run a module with some of its parameters and buffers replaced by given
tensors (torch.func.functional_call; torch.nn.utils.stateless.functional_call is its
deprecated alias). The module is restored afterwards, exception or not; gradients flow to the
given tensors, not to the module's own."""
from __future__ import annotations

import warnings

from ..tensor import Tensor

__all__ = ["functional_call"]


def _tensor_names(module):
    """name -> (owner module, leaf name, store) for every parameter and buffer, shared ones
    under each of their names; and the groups of names that hold one tensor (tied)."""
    places, by_id = {}, {}
    for prefix, m in module.named_modules(remove_duplicate=False):
        for store in ("_parameters", "_buffers"):
            for name, t in m.__dict__[store].items():
                if t is None:
                    continue
                full = f"{prefix}.{name}" if prefix else name
                places[full] = (m, name, store)
                by_id.setdefault(id(t), []).append(full)
    return places, [names for names in by_id.values() if len(names) > 1]


def _merge(dicts):
    if isinstance(dicts, dict) or hasattr(dicts, "items"):
        return dict(dicts.items())
    dicts = list(dicts)
    seen, out = set(), {}
    repeated = []
    for d in dicts:
        for k, v in d.items():
            if k in seen:
                repeated.append(k)
            seen.add(k)
            out[k] = v
    if repeated:
        raise ValueError(f"{repeated} appeared in multiple dictionaries; behavior of functional "
                         "call is ambiguous")
    return out


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *,
                    tie_weights=True, strict=False):
    """``module(*args, **kwargs)`` with the tensors named in the dict(s) (dotted names, as in
    state_dict) standing in for the module's. With ``tie_weights`` a tensor shared under
    several names is replaced under all of them when one is given; ``strict`` requires every
    parameter and buffer to be given and no other name."""
    given = _merge(parameter_and_buffer_dicts)
    for k, v in given.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"functional_call: {k!r} must be a Tensor, got a {type(v).__name__}")
    places, tied = _tensor_names(module)
    if tie_weights:
        for names in tied:
            values = {id(given[n]): given[n] for n in names if n in given}
            if len(values) > 1:
                raise ValueError(f"functional_call got multiple values for keys "
                                 f"{sorted(n for n in names if n in given)}, which are tied. "
                                 "Consider using tie_weights=False")
            if values:
                value = next(iter(values.values()))
                for n in names:
                    given.setdefault(n, value)
    if strict:
        missing = [k for k in places if k not in given]
        unexpected = [k for k in given if k not in places]
        if missing or unexpected:
            lines = [f"Error(s) in reparametrizing for {type(module).__name__}:"]
            if unexpected:
                lines.append("\tUnexpected key(s): " + ", ".join(f"'{k}'" for k in unexpected)
                             + ".")
            if missing:
                lines.append("\tMissing key(s): " + ", ".join(f"'{k}'" for k in missing) + ".")
            raise RuntimeError("\n".join(lines))
    undo = []
    try:
        for name, value in given.items():
            if name in places:
                owner, leaf, store = places[name]
                table = owner.__dict__[store]
                undo.append((table, leaf, table[leaf]))
                table[leaf] = value  # bypasses the Parameter check: a stand-in for this call
            else:
                prefix, _, leaf = name.rpartition(".")
                owner = module
                for part in prefix.split(".") if prefix else ():
                    child = owner._modules.get(part)
                    if child is None:
                        raise AttributeError(f"{type(owner).__name__} has no attribute `{part}`")
                    owner = child
                had = leaf in owner.__dict__
                undo.append((owner.__dict__, leaf, owner.__dict__.get(leaf) if had else _MISSING))
                owner.__dict__[leaf] = value
        if args is None:
            args = ()
        elif not isinstance(args, tuple):
            args = (args,)
        return module(*args, **(kwargs or {}))
    finally:
        for table, leaf, old in reversed(undo):
            if old is _MISSING:
                table.pop(leaf, None)
            else:
                table[leaf] = old


_MISSING = object()


def _deprecated_functional_call(module, parameters_and_buffers, args=None, kwargs=None, *,
                                tie_weights=True, strict=False):
    warnings.warn("`torch.nn.utils.stateless.functional_call` is deprecated as of PyTorch 2.0 "
                  "and will be removed in a future version of PyTorch. Please use "
                  "`torch.func.functional_call` instead which is a drop-in replacement.",
                  FutureWarning, stacklevel=2)
    return functional_call(module, parameters_and_buffers, args, kwargs,
                           tie_weights=tie_weights, strict=strict)
