"""The hook-based reparametrisations of torch.nn.utils: weight_norm / remove_weight_norm and
spectral_norm / remove_spectral_norm (PyTorch's older API; the newer one is
``nn.utils.parametrizations``).

Each removes the parameter ``name`` and registers what it is computed from (``name_g`` and
``name_v``; or ``name_orig`` and the buffers ``name_u``, ``name_v``), then a forward pre-hook
recomputes ``module.<name>`` as a plain tensor before every call, differentiable in the new
parameters: the state_dict keys are PyTorch's."""
from __future__ import annotations

import warnings

import numpy as np

from ..backend import get_array_module
from ..tensor import Tensor, no_grad
from .module import Parameter


def _norm_except_dim(v, dim):
    """The 2-norm of ``v`` over every dim but ``dim`` (keeping dims), or over all (dim -1)."""
    if dim == -1:
        return (v * v).sum().sqrt()
    axes = tuple(i for i in range(v.ndim) if i != dim)
    if not axes:  # a 1-D v along its only dim: each entry its own norm (sum(dim=()) sums all)
        return (v * v).sqrt()
    return (v * v).sum(dim=axes, keepdim=True).sqrt()


def _hook_of(module, kind, name):
    for key, hook in (module.__dict__.get("_forward_pre_hooks") or {}).items():
        if isinstance(hook, kind) and hook.name == name:
            return key, hook
    return None, None


class WeightNorm:
    def __init__(self, name, dim):
        self.name, self.dim = name, -1 if dim is None else dim

    def compute_weight(self, module):
        g, v = getattr(module, self.name + "_g"), getattr(module, self.name + "_v")
        return v * (g / _norm_except_dim(v, self.dim))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))


def weight_norm(module, name="weight", dim=0):
    """Replace ``module.<name>`` by ``g * v / ||v||``: the norm is taken over every dim but
    ``dim`` (over all of it for dim None or -1); ``name_g`` holds the norms and ``name_v`` the
    direction, as PyTorch's (deprecated) torch.nn.utils.weight_norm, which warns likewise."""
    warnings.warn("`torch.nn.utils.weight_norm` is deprecated in favor of "
                  "`torch.nn.utils.parametrizations.weight_norm`.", FutureWarning, stacklevel=2)
    if _hook_of(module, WeightNorm, name)[1] is not None:
        raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
    weight = module._parameters.get(name)
    if weight is None:
        raise ValueError(f"weight_norm: {type(module).__name__} has no parameter {name!r}")
    fn = WeightNorm(name, dim)
    if fn.dim != -1:
        if not -weight.ndim <= fn.dim < weight.ndim:
            raise IndexError(f"weight_norm: dim {dim} is out of range for a {weight.ndim}-D "
                             f"{name}")
        fn.dim %= weight.ndim
    del module._parameters[name]
    with no_grad():
        g = _norm_except_dim(weight.detach(), fn.dim)
    module.register_parameter(name + "_g", Parameter(g.data.copy()))
    module.register_parameter(name + "_v", Parameter(weight.data))
    setattr(module, name, fn.compute_weight(module))
    module.register_forward_pre_hook(fn)
    return module


def remove_weight_norm(module, name="weight"):
    """Undo weight_norm: ``name`` is a Parameter again, holding the current weight."""
    key, fn = _hook_of(module, WeightNorm, name)
    if fn is None:
        raise ValueError(f"weight_norm of '{name}' not found in {module}")
    with no_grad():
        weight = fn.compute_weight(module)
    del module._forward_pre_hooks[key]
    module.__dict__.pop(name, None)
    del module._parameters[name + "_g"]
    del module._parameters[name + "_v"]
    module.register_parameter(name, Parameter(weight.data))
    return module


def _normalize(a, eps):
    xp = get_array_module(a)
    return a / xp.maximum(xp.sqrt((a * a).sum()), a.dtype.type(eps))


def _as_matrix(weight, dim):
    """A weight (a Tensor or an array) as a matrix with ``dim`` first, as spectral norm sees it
    (here and in parametrizations.spectral_norm)."""
    if dim != 0:
        perm = (dim,) + tuple(d for d in range(weight.ndim) if d != dim)
        weight = weight.permute(*perm) if isinstance(weight, Tensor) else weight.transpose(perm)
    return weight.reshape(weight.shape[0], -1)


class SpectralNorm:
    def __init__(self, name, n_power_iterations, dim, eps):
        self.name, self.n_power_iterations, self.dim, self.eps = (
            name, n_power_iterations, dim, eps)

    def _matrix(self, weight):
        return _as_matrix(weight, self.dim)

    def compute_weight(self, module, do_power_iteration):
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        if do_power_iteration:
            # u and v are updated in place (they are the buffers the state dict holds);
            # the weight's gradient treats them as constants, as in PyTorch
            w = self._matrix(weight.data)
            for _ in range(self.n_power_iterations):
                v.data[...] = _normalize(w.T @ u.data, self.eps)
                u.data[...] = _normalize(w @ v.data, self.eps)
        uc, vc = Tensor(u.data.copy()), Tensor(v.data.copy())
        sigma = (uc * (self._matrix(weight) @ vc)).sum()
        return weight / sigma

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module, module.training))


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Divide ``module.<name>`` by its largest singular value, estimated by power iteration
    (``n_power_iterations`` steps per forward in training mode; none in eval mode, where the
    stored ``name_u`` and ``name_v`` are used), as torch.nn.utils.spectral_norm. ``dim``
    defaults to 1 for transposed convolutions, else 0."""
    if _hook_of(module, SpectralNorm, name)[1] is not None:
        raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter "
                           f"{name}")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) \
            or n_power_iterations <= 0:
        raise ValueError("Expected n_power_iterations to be positive, but got "
                         f"n_power_iterations={n_power_iterations}")
    weight = module._parameters.get(name)
    if weight is None:
        raise ValueError(f"spectral_norm: {type(module).__name__} has no parameter {name!r}")
    if dim is None:
        dim = 1 if type(module).__name__.startswith("ConvTranspose") else 0
    if not -weight.ndim <= dim < max(weight.ndim, 1):
        raise IndexError(f"spectral_norm: dim {dim} is out of range for a {weight.ndim}-D "
                         f"{name}")
    fn = SpectralNorm(name, n_power_iterations, dim % max(weight.ndim, 1), eps)
    w = fn._matrix(weight.data)
    xp = get_array_module(w)
    h, wd = w.shape
    # torch's: normal_(0, 1) draws for u, then v (torch's numbers on the CPU generator)
    u = _normalize(xp.asarray(_normal_draw(h, w.dtype)), eps)
    v = _normalize(xp.asarray(_normal_draw(wd, w.dtype)), eps)
    del module._parameters[name]
    module.register_parameter(name + "_orig", weight)
    setattr(module, name, Tensor(weight.data))
    module.register_buffer(name + "_u", Tensor(u))
    module.register_buffer(name + "_v", Tensor(v))
    module.register_forward_pre_hook(fn)
    return module


def remove_spectral_norm(module, name="weight"):
    """Undo spectral_norm: ``name`` is a Parameter again holding the normalised weight (from
    the stored u and v, without a power-iteration step)."""
    key, fn = _hook_of(module, SpectralNorm, name)
    if fn is None:
        raise ValueError(f"spectral_norm of '{name}' not found in {module}")
    with no_grad():
        weight = fn.compute_weight(module, do_power_iteration=False)
    del module._forward_pre_hooks[key]
    module.__dict__.pop(name, None)
    del module._parameters[name + "_orig"]
    for suffix in ("_u", "_v"):
        del module._buffers[name + suffix]
        module.__dict__["_buffer_names"].discard(name + suffix)
    module.register_parameter(name, Parameter(weight.data))
    return module


__all__ = ["weight_norm", "remove_weight_norm", "spectral_norm", "remove_spectral_norm"]


def _normal_draw(n, dtype):
    """``n`` standard normals in ``dtype`` as torch's ``new_empty(n).normal_(0, 1)`` draws them."""
    from ..backend import default_generator, torch_random

    draw = np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.float32
    return torch_random.normal_array(default_generator, (int(n),), draw).astype(dtype)
