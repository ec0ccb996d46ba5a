"""Auto-wrap policies for FullyShardedDataParallel (torch.distributed.fsdp.wrap's names).

A policy is called as ``policy(module=m, recurse=..., nonwrapped_numel=n)``: with
``recurse=True`` it says whether to look inside ``m`` for modules to wrap, with
``recurse=False`` whether to wrap ``m`` itself (its children are wrapped first, and ``n``
counts the parameters of ``m`` not already in a unit). Pass one bound with functools.partial:

    auto_wrap_policy=functools.partial(size_based_auto_wrap_policy, min_num_params=10_000)
    auto_wrap_policy=ModuleWrapPolicy({nn.Linear, nn.Conv2d})
"""
from __future__ import annotations

__all__ = ["always_wrap_policy", "size_based_auto_wrap_policy", "transformer_auto_wrap_policy",
           "lambda_auto_wrap_policy", "ModuleWrapPolicy"]


def always_wrap_policy(module, recurse, nonwrapped_numel=0, **kwargs) -> bool:
    """Wrap every module (each layer its own unit)."""
    return True


def size_based_auto_wrap_policy(module, recurse, nonwrapped_numel, min_num_params=int(1e8),
                                force_leaf_modules=None, exclude_wrap_modules=None) -> bool:
    """Wrap a module once it holds at least ``min_num_params`` parameters that no unit below it
    took. ``force_leaf_modules``: classes never looked into (default: none);
    ``exclude_wrap_modules``: classes never wrapped (default: ModuleList, ModuleDict, which
    have no forward of their own)."""
    from ...nn import ModuleDict, ModuleList

    leaf = tuple(force_leaf_modules or ())
    exclude = tuple(exclude_wrap_modules if exclude_wrap_modules is not None
                    else (ModuleList, ModuleDict))
    if recurse:
        return not (leaf and isinstance(module, leaf))
    return nonwrapped_numel >= min_num_params and not (exclude and isinstance(module, exclude))


def transformer_auto_wrap_policy(module, recurse, nonwrapped_numel, transformer_layer_cls) -> bool:
    """Wrap every instance of the classes in ``transformer_layer_cls`` (a set)."""
    if recurse:
        return True
    return isinstance(module, tuple(transformer_layer_cls))


def lambda_auto_wrap_policy(module, recurse, nonwrapped_numel, lambda_fn) -> bool:
    """Wrap the modules for which ``lambda_fn(module)`` is true."""
    if recurse:
        return True
    return bool(lambda_fn(module))


class ModuleWrapPolicy:
    """Wrap every instance of the given module classes: ``ModuleWrapPolicy({nn.Linear})``."""

    def __init__(self, module_classes):
        classes = set(module_classes)
        for c in classes:
            if not isinstance(c, type):
                raise TypeError(f"ModuleWrapPolicy: expected module classes, got {c!r}")
        self._module_classes = classes

    def __call__(self, module, recurse, *args, **kwargs) -> bool:
        if recurse:
            return True
        return isinstance(module, tuple(self._module_classes))

    def __repr__(self):
        names = sorted(c.__name__ for c in self._module_classes)
        return f"ModuleWrapPolicy({{{', '.join(names)}}})"


def _as_policy(policy):
    """A callable policy from what FullyShardedDataParallel takes: a callable, or a set / list /
    tuple of module classes (as ModuleWrapPolicy)."""
    if policy is None or callable(policy):
        return policy
    if isinstance(policy, (set, frozenset, list, tuple)):
        return ModuleWrapPolicy(policy)
    raise TypeError(f"FullyShardedDataParallel: auto_wrap_policy must be a callable policy "
                    f"(functools.partial(size_based_auto_wrap_policy, ...), ModuleWrapPolicy) "
                    f"or a set of module classes, got {type(policy).__name__}")
