"""Module: parameters and sub-modules registered by attribute assignment, as in PyTorch."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..backend import get_array_module, normalize_device, to_device
from ..backend.dtypes import as_dtype, is_floating
from ..tensor import Tensor, _is_dtype_like, bump_version


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True by default)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data,
                         requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration -----------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        params = self.__dict__["_parameters"]
        if name in params and value is not None and not isinstance(value, Parameter):
            # PyTorch refuses it too: the name would silently leave parameters() and state_dict()
            raise TypeError(f"cannot assign a {type(value).__name__} as parameter {name!r} of "
                            f"{type(self).__name__} (a Parameter or None expected); wrap it in "
                            "nn.Parameter(...), or write its values with .data or copy_()")
        if (name in self.__dict__.get("_buffer_names", ()) and value is not None
                and not isinstance(value, Tensor)):
            raise TypeError(f"cannot assign a {type(value).__name__} as buffer {name!r} of "
                            f"{type(self).__name__} (a Tensor or None expected)")
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, (Parameter, Module)) or name in self.__dict__.get("_buffer_names", ()):
            # a plain attribute of the same name would shadow the registered one forever
            self.__dict__.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffer_names", ()):
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        for store in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(store)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor):
        """A non-trainable tensor that is part of the state (BatchNorm's running stats)."""
        if "_buffer_names" not in self.__dict__:
            object.__setattr__(self, "_buffer_names", set())
        self._buffer_names.add(name)
        self._buffers[name] = tensor if tensor is None or isinstance(tensor, Tensor) else Tensor(tensor)

    def register_parameter(self, name, param):
        if param is None:
            self._parameters[name] = None
        elif not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got a "
                            f"{type(param).__name__}; wrap it in nn.Parameter(...)")
        else:
            self.__setattr__(name, param)

    def add_module(self, name, module):
        self._modules[str(name)] = module

    # ---- traversal --------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """Every module, this one first; as in PyTorch, a module shared by two parents comes
        once, under its first name (both with remove_duplicate=False, as state_dict lists)."""
        if isinstance(memo, str):  # named_modules("prefix"), the old positional form
            memo, prefix = None, memo
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        yield from ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_name, module in modules:
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix=""):
        for mod_name, module in self.named_modules(prefix=prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    # ---- state ------------------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers by dotted name (detached Tensors), in registration order."""
        out = OrderedDict()
        for mod_name, module in self.named_modules(remove_duplicate=False):
            prefix = f"{mod_name}." if mod_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    out[prefix + name] = p.detach()
            for name, b in module._buffers.items():
                if b is not None:
                    out[prefix + name] = b.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (numpy arrays or Tensors) into parameters and buffers, in place.

        Every missing, unexpected and mis-shaped key is listed in one error; nothing is
        changed unless everything fits (with strict=False, missing and unexpected keys are
        returned instead of raised, but shape mismatches still raise)."""
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of name -> array (a state_dict), "
                            f"got a {type(state_dict).__name__}")
        own = self.state_dict()
        targets = dict(self.named_parameters())
        targets.update(dict(self.named_buffers()))
        given = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")
                 or k in own}
        # PyTorch's BatchNorm counter is optional: converted checkpoints drop it
        missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in given if k not in own]
        mismatched = []
        for k in own:
            if k in given:
                shape = tuple(np.shape(given[k].data if isinstance(given[k], Tensor) else given[k]))
                if shape != own[k].shape:
                    mismatched.append(f"{k}: checkpoint {shape}, model {own[k].shape}")
        problems = []
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                             + " | ".join(problems))
        for k, value in given.items():
            if k in targets:
                t = targets[k]
                arr = to_device(value.data if isinstance(value, Tensor) else value, t.device)
                # copied into the tensor's own array, in its dtype (PyTorch's copy_): the
                # caller's array is never aliased, and tensors taken from state_dict() see it
                own_arr = t.data
                xp = get_array_module(own_arr)  # CuPy's arrays are always writeable
                if xp is not np or own_arr.flags.writeable:
                    xp.copyto(own_arr, arr, casting="unsafe")
                    bump_version(t)  # a graph that saved the old values refuses its backward
                else:
                    t.data = arr.astype(own_arr.dtype, copy=True)
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    # ---- modes and devices ------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None):
        """Move (or cast) every parameter and buffer in place, keeping the same objects so an
        optimizer made before the move still holds them."""
        if dtype is None and device is not None and _is_dtype_like(device):
            device, dtype = None, device  # model.to(minidl.bfloat16), as in torch
        if device is not None:
            device = normalize_device(device)
        dtype = None if dtype is None else as_dtype(dtype)
        for t in list(self.parameters()) + list(self.buffers()):
            if device is not None:
                t.data = to_device(t.data, device)
            if dtype is not None and is_floating(t.data.dtype):
                t.data = t.data.astype(dtype)
            if t.grad is not None and device is not None:
                t.grad = Tensor(to_device(t.grad.data, device))
        return self

    def cuda(self):
        return self.to("cuda")

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def zero_grad(self, set_to_none=True):
        """Drop the gradients (set_to_none=True, PyTorch's default) or zero them in place."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- calling ----------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        for a in args:
            if isinstance(a, np.ndarray):  # PyTorch refuses it too; here it would fail deep inside
                raise TypeError(f"{type(self).__name__}: the input is a numpy array of shape "
                                f"{a.shape}; make it a tensor first: minidl.tensor(array)")
        return self.forward(*args, **kwargs)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        children = list(self.named_children())
        if not children:
            return lines[0] + ")"
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"

