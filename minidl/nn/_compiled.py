"""What ``minidl.compile(module)`` returns: torch's ``OptimizedModule``, a module that holds the
compiled one as its sub-module ``_orig_mod`` and runs it (eagerly here: minidl has no graph
compiler). It is a wrapper and not the module itself because programs see the difference: its
``state_dict()`` keys start with ``_orig_mod.`` (the prefix nanoGPT and other training scripts
strip before loading a checkpoint into a plain model), and ``model._orig_mod`` is how they reach
the model that was compiled. Every other attribute, read or written, is the wrapped module's, as
in torch."""
from __future__ import annotations

from .module import Module


class OptimizedModule(Module):
    """``torch.compile(module)``'s result: forwards calls and attributes to ``_orig_mod``."""

    def __init__(self, mod):
        if not isinstance(mod, Module):
            raise TypeError(f"OptimizedModule wraps a Module, got {type(mod).__name__}")
        object.__setattr__(self, "_wrapping", True)  # Module.__init__'s training=True is ours
        super().__init__()
        self._modules["_orig_mod"] = mod
        object.__setattr__(self, "_wrapping", False)

    @property
    def training(self):
        return self._orig_mod.training

    @training.setter
    def training(self, value):
        if not self.__dict__.get("_wrapping", True):
            object.__setattr__(self._orig_mod, "training", value)

    def forward(self, *args, **kwargs):
        return self._orig_mod(*args, **kwargs)

    def __len__(self):
        if not hasattr(type(self._orig_mod), "__len__"):
            raise TypeError(f"{type(self._orig_mod).__name__} does not support len()")
        return len(self._orig_mod)

    def __getattr__(self, name):
        modules = self.__dict__.get("_modules")
        if modules is None or "_orig_mod" not in modules:  # while being built or copied
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        if name == "_orig_mod":
            return modules["_orig_mod"]
        return getattr(modules["_orig_mod"], name)

    def __setattr__(self, name, value):
        if hasattr(type(self), name) or name == "_orig_mod":
            return super().__setattr__(name, value)
        return setattr(self._orig_mod, name, value)

    def __delattr__(self, name):
        if hasattr(type(self), name) or name == "_orig_mod":
            return super().__delattr__(name)
        return delattr(self._orig_mod, name)

    def __dir__(self):
        own = list(self._orig_mod.__dir__())
        return own + [a for a in super().__dir__() if a not in own]
