"""ParameterList and ParameterDict: parameters held in a list or a dict, registered as the
container's own (state_dict keys ``plist.0``, ``pdict.name``), as PyTorch's."""
from __future__ import annotations

from ..tensor import Tensor
from .module import Module, Parameter, _global_parameter_registration_hooks, registered


def _as_parameter(where, value):
    if isinstance(value, Parameter):
        return value
    if isinstance(value, Tensor):  # PyTorch wraps a plain tensor too
        return Parameter(value)
    raise TypeError(f"{where}: expected a Parameter or a Tensor, got {type(value).__name__}")


def _describe(p):
    shape = "x".join(map(str, p.shape))
    return f"Parameter containing: [minidl.{p.dtype} of size {shape}]"


def _torch_style_repr(name, lines):
    """PyTorch's layout: one line inline, several indented on lines of their own."""
    if len(lines) == 1:
        return f"{name}({lines[0]})"
    if not lines:
        return f"{name}()"
    return f"{name}(\n  " + "\n  ".join(lines) + "\n)"


class ParameterList(Module):
    def __init__(self, values=None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def _index(self, idx):
        n = len(self)
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeError(f"ParameterList indices must be integers or slices, got "
                            f"{type(idx).__name__}")
        if not -n <= idx < n:
            raise IndexError(f"ParameterList index {idx} is out of range for {n} parameters")
        return idx % n

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList(list(self._parameters.values())[idx])
        return self._parameters[str(self._index(idx))]

    def __setitem__(self, idx, param):
        # in place: the list keeps its order (register_parameter would move it to the end)
        name = str(self._index(idx))
        param = _as_parameter("ParameterList.__setitem__", param)
        if param is not None:  # a Parameter goes through the registration hooks, as torch's
            param = registered(_global_parameter_registration_hooks, self, name, param)
        self._parameters[name] = param

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def __iadd__(self, parameters):
        return self.extend(parameters)

    def append(self, value):
        self.register_parameter(str(len(self)), _as_parameter("ParameterList.append", value))
        return self

    def extend(self, values):
        if isinstance(values, Tensor):
            raise TypeError("ParameterList.extend should be called with an iterable, but got a "
                            "Tensor")
        for v in values:
            self.append(v)
        return self

    def extra_repr(self):
        return "\n".join(f"  ({k}): {_describe(p)}" for k, p in self._parameters.items())

    def __repr__(self):
        return _torch_style_repr(type(self).__name__, self.extra_repr().split("\n")
                                 if len(self) else [])


class ParameterDict(Module):
    def __init__(self, parameters=None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key):
        return self._parameters[key]

    def __setitem__(self, key, value):
        if not isinstance(key, str):
            raise TypeError(f"ParameterDict: keys must be strings, got {type(key).__name__}")
        value = _as_parameter(f"ParameterDict[{key!r}]", value)
        if key in self._parameters:  # a replaced parameter keeps its place, as in PyTorch
            self._parameters[key] = value if value is None else registered(
                _global_parameter_registration_hooks, self, key, value)
        else:
            self.register_parameter(key, value)

    def __delitem__(self, key):
        del self._parameters[key]

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters)

    def __contains__(self, key):
        return key in self._parameters

    def keys(self):
        return self._parameters.keys()

    def values(self):
        return self._parameters.values()

    def items(self):
        return self._parameters.items()

    def get(self, key, default=None):
        return self._parameters.get(key, default)

    def pop(self, key):
        value = self[key]
        del self[key]
        return value

    def clear(self):
        self._parameters.clear()

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, parameters):
        """Add (or replace) parameters from a mapping or from (key, value) pairs."""
        if hasattr(parameters, "items"):
            pairs = list(parameters.items())
        else:
            pairs = []
            for i, pair in enumerate(parameters):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ValueError(f"ParameterDict.update: element {i} should be a (key, "
                                     f"value) pair, got {pair!r}")
                pairs.append(pair)
        for key, value in pairs:
            self[key] = value

    def extra_repr(self):
        return "\n".join(f"  ({k}): {_describe(p)}" for k, p in self._parameters.items())

    def __repr__(self):
        return _torch_style_repr(type(self).__name__, self.extra_repr().split("\n")
                                 if len(self) else [])


class Container(Module):
    """torch.nn.Container, deprecated: a Module holding the given modules as its children."""

    def __init__(self, **kwargs):
        import warnings

        warnings.warn("`nn.Container` is deprecated. All of its functionality is now "
                      "implemented in `nn.Module`. Subclass that instead.", FutureWarning,
                      stacklevel=2)
        super().__init__()
        for key, value in kwargs.items():
            self.add_module(key, value)
