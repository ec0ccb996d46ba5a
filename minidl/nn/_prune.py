"""``torch.nn.utils.prune`` (as ``minidl.nn.utils.prune``): pruning by masks.

Pruning ``module.weight`` moves the parameter to ``weight_orig``, adds a buffer ``weight_mask``
(1 keeps an entry, 0 prunes it), and makes ``weight`` an attribute recomputed as
``weight_orig * weight_mask`` by a forward pre-hook, so the pruned entries stay 0 and get no
gradient. Pruning the same tensor again prunes among the entries still kept (a
``PruningContainer`` combines the masks); ``remove`` makes the pruning permanent. The methods,
their amounts (an int: that many; a float: that fraction, rounded as Python rounds), the
state_dict keys and the errors are PyTorch's, so a pruned PyTorch state_dict loads.
"""
from __future__ import annotations

import numbers
from abc import ABC, abstractmethod

from .. import autograd
from ..ops import cat
from ..shape_ops import contiguous_format
from ..tensor import Tensor
from .module import Parameter

__all__ = ["BasePruningMethod", "PruningContainer", "Identity", "RandomUnstructured",
           "L1Unstructured", "RandomStructured", "LnStructured", "CustomFromMask", "identity",
           "random_unstructured", "l1_unstructured", "random_structured", "ln_structured",
           "global_unstructured", "custom_from_mask", "remove", "is_pruned"]


# ---- amounts ----------------------------------------------------------------------------------
def _check_amount(amount):
    if not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or (
            isinstance(amount, numbers.Integral) and amount < 0) or (
            not isinstance(amount, numbers.Integral) and not 0.0 <= float(amount) <= 1.0):
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or a "
                         "non-negative integer")


def _count(amount, size):
    """How many of ``size`` entries (or channels) to prune."""
    if isinstance(amount, numbers.Integral):
        if amount > size:
            raise ValueError(f"amount={amount} should be smaller than the number of parameters "
                             f"to prune={size}")
        return int(amount)
    return round(amount * size)


def _check_dim(t, dim):
    if t.ndim <= 1:
        raise ValueError("Structured pruning can only be applied to multidimensional tensors. "
                         f"Found tensor of shape {tuple(t.shape)} with {t.ndim} dims")
    if dim >= t.ndim or dim < -t.ndim:
        raise IndexError(f"Invalid index {dim} for tensor of size {tuple(t.shape)}")


def _pruning_hooks(module):
    hooks = module.__dict__.get("_forward_pre_hooks") or {}
    return [(k, h) for k, h in hooks.items() if isinstance(h, BasePruningMethod)]


# ---- methods ----------------------------------------------------------------------------------
class BasePruningMethod(ABC):
    """A way to compute a mask: subclasses define ``compute_mask(t, default_mask)`` and
    ``PRUNING_TYPE`` ('unstructured', 'structured' or 'global')."""

    PRUNING_TYPE = None
    _tensor_name = None

    def __call__(self, module, inputs):
        """The forward pre-hook: ``name`` recomputed from ``name_orig`` and ``name_mask``."""
        setattr(module, self._tensor_name, self.apply_mask(module))

    @abstractmethod
    def compute_mask(self, t, default_mask):
        """The new mask (a Tensor of t's shape) from importance scores ``t`` and the mask so
        far."""

    def apply_mask(self, module):
        name = self._tensor_name
        if name is None:
            raise AttributeError(f"Module {module} has to be pruned")
        return getattr(module, name + "_orig") * getattr(module, name + "_mask")

    @classmethod
    def apply(cls, module, name, *args, importance_scores=None, **kwargs):
        """Prune ``module``'s parameter ``name`` with this method (built from ``args`` and
        ``kwargs``), on top of any pruning it already has; returns the method (or the
        container that combines it with the earlier ones)."""
        found = [(k, h) for k, h in _pruning_hooks(module) if h._tensor_name == name]
        if len(found) > 1:
            raise RuntimeError(f"Avoid adding multiple pruning hooks to the same tensor {name} "
                               f"of module {module}. Use a PruningContainer.")
        old = found[0][1] if found else None
        method = cls(*args, **kwargs)
        method._tensor_name = name
        if old is not None:
            container = old if isinstance(old, PruningContainer) else PruningContainer(old)
            container.add_pruning_method(method)
            method = container
        orig = getattr(module, name)
        if importance_scores is not None:
            if tuple(importance_scores.shape) != tuple(orig.shape):
                raise ValueError(f"importance_scores should have the same shape as parameter "
                                 f"{name} of {module}")
        else:
            importance_scores = orig
        if old is None:
            if not isinstance(orig, Parameter):
                raise TypeError(f"prune: {name!r} of {type(module).__name__} must be a "
                                f"Parameter, got {type(orig).__name__}")
            module.register_parameter(name + "_orig", orig)
            del module._parameters[name]
            default_mask = _ones_like(orig)
        else:
            default_mask = getattr(module, name + "_mask").detach().clone(
                memory_format=contiguous_format)
        try:
            with autograd.no_grad():
                mask = method.compute_mask(importance_scores.detach(), default_mask=default_mask)
            module.register_buffer(name + "_mask", mask)
            setattr(module, name, method.apply_mask(module))
            if old is not None:
                del module._forward_pre_hooks[found[0][0]]
            module.register_forward_pre_hook(method)
        except Exception:
            if isinstance(old, PruningContainer):  # the container as it was before this call
                old._pruning_methods = old._pruning_methods[:-1]
            if old is None:  # put the parameter back as it was
                restored = module._parameters.pop(name + "_orig")
                module.__dict__.pop(name, None)
                module._buffers.pop(name + "_mask", None)
                module.register_parameter(name, restored)
            raise
        return method

    def prune(self, t, default_mask=None, importance_scores=None):
        """``t`` with this method's mask applied (t itself is not changed)."""
        if importance_scores is not None and tuple(importance_scores.shape) != tuple(t.shape):
            raise ValueError("importance_scores should have the same shape as tensor t")
        scores = importance_scores if importance_scores is not None else t
        mask = default_mask if default_mask is not None else _ones_like(t)
        with autograd.no_grad():
            mask = self.compute_mask(scores.detach(), default_mask=mask)
        return t * mask

    def remove(self, module):
        """Make the pruning permanent: ``name`` becomes a Parameter again, holding the pruned
        values, and ``name_orig``, ``name_mask`` and the hook go."""
        name = self._tensor_name
        if name is None:
            raise AttributeError(f"Module {module} has to be pruned before pruning can be "
                                 "removed")
        weight = self.apply_mask(module)
        module.__dict__.pop(name, None)
        orig = module._parameters.pop(name + "_orig")
        orig.data = weight.data
        module._buffers.pop(name + "_mask")
        module.__dict__.get("_buffer_names", set()).discard(name + "_mask")
        module.register_parameter(name, orig)


def _uniform(n, device):
    """``n`` draws uniform on [0, 1) from minidl's seeded generator, on ``device``."""
    from ..backend import generator_rng

    return Tensor(generator_rng(None, device, "prune").random(n))


def _ones_like(t):
    data = t.data
    from ..backend import get_array_module

    return Tensor(get_array_module(data).ones(data.shape, dtype=data.dtype))


def _flat_indices_set(mask, indices, value):
    flat = mask.data.reshape(-1)
    flat[indices.data] = value
    return mask


class PruningContainer(BasePruningMethod):
    """Several pruning methods applied to one tensor in turn, each among the entries (or, for
    a structured one, the channels) the ones before it kept."""

    def __init__(self, *args):
        self._pruning_methods = ()
        if len(args) == 1 and not isinstance(args[0], BasePruningMethod) and hasattr(args[0], "__iter__"):
            args = tuple(args[0])
        for method in args:
            self.add_pruning_method(method)

    def add_pruning_method(self, method):
        if not isinstance(method, BasePruningMethod) and method is not None:
            raise TypeError(f"{type(method)} is not a BasePruningMethod subclass")
        if method is not None and self._tensor_name != method._tensor_name:
            if self._tensor_name is None:
                self._tensor_name = method._tensor_name
            else:
                raise ValueError("Can only add pruning methods acting on the parameter named "
                                 f"'{self._tensor_name}' to PruningContainer. Found "
                                 f"'{method._tensor_name}'")
        self._pruning_methods += (method,)

    def __len__(self):
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def __getitem__(self, idx):
        return self._pruning_methods[idx]

    def compute_mask(self, t, default_mask):
        method = self._pruning_methods[-1]
        new_mask = default_mask.to(t.dtype).clone(memory_format=contiguous_format)
        if method.PRUNING_TYPE == "unstructured":
            where = (default_mask == 1).data
        elif method.PRUNING_TYPE == "structured":
            if not hasattr(method, "dim"):
                raise AttributeError("Pruning methods of PRUNING_TYPE 'structured' need to have "
                                     "the attribute `dim` defined.")
            dim = method.dim % t.ndim
            other = tuple(d for d in range(t.ndim) if d != dim)
            keep = (default_mask.sum(dim=other) != 0).data
            where = (slice(None),) * dim + (keep,)
        elif method.PRUNING_TYPE == "global":
            where = (slice(None),) * t.ndim
        else:
            raise ValueError(f"Unrecognized PRUNING_TYPE {method.PRUNING_TYPE}")
        partial = method.compute_mask(Tensor(t.data[where]),
                                      default_mask=Tensor(default_mask.data[where]))
        new_mask.data[where] = partial.data.astype(new_mask.data.dtype)
        return new_mask


class Identity(BasePruningMethod):
    """Prunes nothing (a mask of ones)."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        return default_mask

    @classmethod
    def apply(cls, module, name):
        return super().apply(module, name)


class _Unstructured(BasePruningMethod):
    """Prunes ``amount`` single entries, those ``_drop(t, k)`` picks."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        _check_amount(amount)
        self.amount = amount

    def compute_mask(self, t, default_mask):
        k = _count(self.amount, t.numel())
        mask = default_mask.clone(memory_format=contiguous_format)
        if k:
            _flat_indices_set(mask, self._drop(t, k), 0)
        return mask


class RandomUnstructured(_Unstructured):
    """Prunes ``amount`` entries chosen at random (minidl's generator)."""

    @staticmethod
    def _drop(t, k):
        return _uniform(t.numel(), t.device).topk(k).indices

    @classmethod
    def apply(cls, module, name, amount):
        return super().apply(module, name, amount=amount)


class L1Unstructured(_Unstructured):
    """Prunes the ``amount`` entries of smallest absolute value (of the importance scores,
    where given), ties broken as torch.topk breaks them."""

    @staticmethod
    def _drop(t, k):
        return t.abs().reshape(-1).topk(k, largest=False).indices

    @classmethod
    def apply(cls, module, name, amount, importance_scores=None):
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


def _channel_mask(t, dim, keep):
    """Ones on the channels ``keep`` (indices or a bool array) along ``dim``, zeros elsewhere."""
    from ..backend import get_array_module

    data = t.data
    mask = get_array_module(data).zeros(data.shape, dtype=data.dtype)
    mask[(slice(None),) * (dim % t.ndim) + (keep,)] = 1
    return Tensor(mask)


class RandomStructured(BasePruningMethod):
    """Prunes ``amount`` whole channels along ``dim``, chosen at random."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, dim=-1):
        _check_amount(amount)
        self.amount, self.dim = amount, dim

    def compute_mask(self, t, default_mask):
        _check_dim(t, self.dim)
        n = t.shape[self.dim]
        k = _count(self.amount, n)
        if k == 0:
            return default_mask
        prob = _uniform(n, t.device)
        threshold = prob.kthvalue(k).values
        return _channel_mask(t, self.dim, (prob > threshold).data) * default_mask.to(t.dtype)

    @classmethod
    def apply(cls, module, name, amount, dim=-1):
        return super().apply(module, name, amount=amount, dim=dim)


class LnStructured(BasePruningMethod):
    """Prunes the ``amount`` channels along ``dim`` of smallest L``n`` norm (n: a number,
    inf, -inf or 'fro')."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, n, dim=-1):
        _check_amount(amount)
        self.amount, self.n, self.dim = amount, n, dim

    def compute_mask(self, t, default_mask):
        from ..math_ops import norm

        _check_dim(t, self.dim)
        size = t.shape[self.dim]
        k = _count(self.amount, size)
        if k == 0:
            return default_mask
        dim = self.dim % t.ndim
        others = tuple(d for d in range(t.ndim) if d != dim)
        norms = norm(t, p=self.n, dim=others)
        keep = norms.topk(size - k, largest=True).indices
        return _channel_mask(t, dim, keep.data) * default_mask.to(t.dtype)

    @classmethod
    def apply(cls, module, name, amount, n, dim, importance_scores=None):
        return super().apply(module, name, amount=amount, n=n, dim=dim,
                             importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    """Prunes where a given mask is 0."""

    PRUNING_TYPE = "global"

    def __init__(self, mask):
        self.mask = mask

    def compute_mask(self, t, default_mask):
        if tuple(default_mask.shape) != tuple(self.mask.shape):
            raise ValueError(f"custom_from_mask: the mask has shape {tuple(self.mask.shape)}, "
                             f"the tensor {tuple(default_mask.shape)}")
        return default_mask * self.mask.to(default_mask.dtype)

    @classmethod
    def apply(cls, module, name, mask):
        return super().apply(module, name, mask=mask)


# ---- functions ----------------------------------------------------------------------------------
def identity(module, name):
    """Reparametrize ``name`` with a mask of ones (no entry pruned)."""
    Identity.apply(module, name)
    return module


def random_unstructured(module, name, amount):
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module, name, amount, importance_scores=None):
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module, name, amount, dim):
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(module, name, amount, n, dim, importance_scores=None):
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module, name, mask):
    CustomFromMask.apply(module, name, mask)
    return module


def global_unstructured(parameters, pruning_method, importance_scores=None, **kwargs):
    """Prune the (module, name) pairs of ``parameters`` together: the method (an unstructured
    one, such as L1Unstructured) sees all their entries as one vector, so a layer with larger
    weights keeps more of them."""
    if not hasattr(parameters, "__iter__") or isinstance(parameters, (str, Tensor)):
        raise TypeError("global_unstructured(): parameters is not an Iterable")
    parameters = tuple(parameters)
    importance_scores = importance_scores if importance_scores is not None else {}
    if not isinstance(importance_scores, dict):
        raise TypeError("global_unstructured(): importance_scores must be of type dict")
    method = pruning_method(**kwargs)
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError('Only "unstructured" PRUNING_TYPE supported for the `pruning_method`. '
                        f"Found method {pruning_method} of type {method.PRUNING_TYPE}")
    with autograd.no_grad():
        scores = cat([importance_scores.get((m, n), getattr(m, n)).detach().reshape(-1)
                      for m, n in parameters])
        default = cat([(getattr(m, n + "_mask") if hasattr(m, n + "_mask")
                        else _ones_like(getattr(m, n))).detach().reshape(-1).to(scores.dtype)
                       for m, n in parameters])
        method._tensor_name = "temp"
        container = PruningContainer(method)
        final = container.compute_mask(scores, default)
    start = 0
    for m, n in parameters:
        p = getattr(m, n)
        size = p.numel()
        custom_from_mask(m, n, mask=final[start:start + size].reshape(tuple(p.shape)))
        start += size


def remove(module, name):
    """Make the pruning of ``name`` permanent (see BasePruningMethod.remove)."""
    for k, hook in _pruning_hooks(module):
        if hook._tensor_name == name:
            hook.remove(module)
            del module._forward_pre_hooks[k]
            return module
    raise ValueError(f"Parameter '{name}' of module {module} has to be pruned before pruning "
                     "can be removed")


def is_pruned(module):
    """Whether ``module`` or any module inside it has a pruned parameter."""
    return any(_pruning_hooks(m) for m in module.modules())
