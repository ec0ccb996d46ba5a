"""The Optimizer base class (torch.optim.Optimizer's param groups, state dicts, step and
zero_grad) and the checks and helpers the optimizers share."""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import autograd, backend
from ..backend.sparse import SparseCOO
from ..backend import device_of, get_array_module, to_device
from ..backend.dtypes import is_floating, is_real_number
from ..tensor import Tensor, bump_version, enable_grad, no_grad


def _follow_device(state, param):
    """model.to(device) after some steps moves the parameters but not the optimizer's buffers
    (momentum, Adam's moments): move them after their parameter, once."""
    dev = device_of(param)
    for key, value in state.items():
        if hasattr(value, "shape") and device_of(value) != dev:
            state[key] = to_device(value, dev)


class _RealPairs:
    """A complex parameter as the optimizers' updates see it: ``data`` is its real pairs
    (..., 2), a view, so that the update's in-place writes reach the parameter."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def _fused(name, p, g, *buffers):
    """The backend's one-pass update ``name`` for this parameter, or None (then the numpy
    expressions run: a GPU would pay a kernel launch for each, the CPU a pass over memory). The
    kernel writes ``p`` and its state ``buffers`` (None: not made yet) in place as flat arrays,
    so all of them must be C-contiguous, and of a dtype the kernel set compiles for."""
    ks = backend.kernels(get_array_module(p))
    fast = getattr(ks, name, None)
    if fast is None or g.shape != p.shape:
        return None
    dtypes = getattr(ks, "fused_update_dtypes", None)
    if dtypes is not None and p.dtype not in dtypes:
        return None
    if not all(a.flags.c_contiguous for a in (p, *buffers) if a is not None):
        return None
    return fast


def _is_named(item):
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


def _as_param_list(params, where, groups_allowed=False):
    """A list of Tensors (or of group dicts) from an iterable of them; PyTorch's TypeErrors for
    the usual mistakes (a single Tensor iterates its rows, a set has no stable order)."""
    if isinstance(params, Tensor):
        raise TypeError(f"{where} should be an iterable of Tensors or dicts, but got a Tensor "
                        f"of shape {params.shape}; pass [tensor] or model.parameters()")
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{where} must be an ordered collection (a list, model.parameters()), "
                        "not a set: a set's order changes between runs")
    params = list(params)
    if groups_allowed and params and all(isinstance(p, dict) for p in params):
        return params
    if any(_is_named(p) for p in params):  # model.named_parameters(): (name, tensor) pairs
        if not all(_is_named(p) for p in params):
            raise ValueError(f"{where}: all optimizer params should be with/without names. Some "
                             "param names are missing")
        return params
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: item {i} is a {type(p).__name__}; an optimizer can only "
                            "optimize Tensors")
        if not p.is_leaf:
            raise ValueError(f"{where}: item {i} (shape {p.shape}) is not a leaf tensor (it was "
                             "computed from others); an optimizer can only optimize leaves")
    return params


def _count_changes(group):
    """The parameters were updated in place: a graph recorded before the step that saved one
    of them refuses its backward (PyTorch's version check), instead of using the new values."""
    for p in group["params"]:
        if p.grad is not None:
            bump_version(p)


def _check_finite(name, **values):
    for key, value in values.items():
        if isinstance(value, bool) or not is_real_number(value):
            raise TypeError(f"{name}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name}: {key} must be a finite number, got {value}")


def _short_repr(value):
    text = f"{type(value).__name__} {value!r}"
    return text if len(text) <= 80 else text[:77] + "..."


def _state_value(value, param, key, index, scalar_keys=(), shape=None):
    """A saved state entry as this parameter's array: same dtype (floats), device and shape
    (``shape`` where the entry has another: Adafactor's row and column means); ``step`` as an
    int and the keys in ``scalar_keys`` as floats."""
    if isinstance(value, Tensor):
        value = value.data
    if type(value) is SparseCOO:  # SGD's momentum buffer of a sparse gradient stays sparse
        if value.shape != tuple(param.shape):
            raise ValueError(f"load_state_dict: state {index} {key!r} has shape {value.shape}, "
                             f"expected {tuple(param.shape)}")
        return value.astype(param.data.dtype)  # a copy of the values; indices are not written
    if not hasattr(value, "__array__") and not isinstance(value, (int, float)):
        raise TypeError(f"load_state_dict: state {index} {key!r} is a {type(value).__name__}, "
                        "not an array")
    if device_of(value) != "cuda":
        value = np.asarray(value)  # numpy, a number, or anything with __array__ (torch tensors)
    if key == "step":
        step = float(to_device(value, "cpu").reshape(-1)[0]) if value.size == 1 else -1.0
        if not (step >= 0 and step == int(step)):
            raise ValueError(f"load_state_dict: state {index} 'step' must be a count, got {value}")
        return int(step)
    if key in scalar_keys:
        if value.size != 1:
            raise ValueError(f"load_state_dict: state {index} {key!r} must be a number, got an "
                             f"array of shape {tuple(value.shape)}")
        number = float(to_device(value, "cpu").reshape(-1)[0])
        if not math.isfinite(number):
            raise ValueError(f"load_state_dict: state {index} {key!r} must be finite, got "
                             f"{number}")
        return number
    want = tuple(param.shape) if shape is None else tuple(shape)
    if tuple(value.shape) != want:
        raise ValueError(f"load_state_dict: state {index} {key!r} has shape {tuple(value.shape)}, "
                         f"expected {want} for its parameter of shape {tuple(param.shape)}")
    value = to_device(value, device_of(param.data))
    xp = get_array_module(value)
    return xp.array(value, dtype=param.data.dtype if is_floating(value.dtype) else value.dtype)


_KERNEL_OPTIONS = ("foreach", "fused", "capturable", "differentiable")


def _kernel_options(foreach=None, **options):
    """PyTorch's choices of implementation that a group records (each optimizer passes the ones
    its torch counterpart takes): foreach is taken and changes nothing here; fused, capturable
    and differentiable may be off (None or False) only, which _check_kernel_options says."""
    return {"foreach": foreach, **options}


def _check_kernel_options(name, group):
    foreach = group.get("foreach")
    if foreach is not None and not isinstance(foreach, (bool, np.bool_)):
        raise TypeError(f"{name}: foreach must be None, True or False, got {foreach!r}")
    refused = {
        "fused": "PyTorch's fused kernels; minidl chooses its update kernels itself",
        "capturable": "CUDA graph capture",
        "differentiable": "autograd through the optimizer step",
    }
    for key, what in refused.items():
        value = group.get(key)
        if value is None or value is False:
            continue
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: {key} must be True or False, got {value!r}")
        raise ValueError(f"{name}: {key}=True ({what}) is not supported; leave {key} "
                         f"unset")


class _Required:
    """The default of a hyperparameter that has none (torch.optim.optimizer.required)."""

    def __repr__(self):
        return "<required parameter>"


_REQUIRED = _Required()

# what PyTorch's schedulers note in a group (OneCycleLR and CyclicLR), which its state dicts keep
_SCHEDULER_KEYS = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum",
                   "param_names")  # and the names of named_parameters(), as torch keeps them


def _evaluate(closure):
    if closure is None:
        return None
    if not callable(closure):
        raise TypeError(f"step: closure must be a function that returns the loss, got "
                        f"{type(closure).__name__}")
    with enable_grad():
        return closure()


class _ParamState(dict):
    """Each parameter's state, kept by id(param); ``optimizer.state[p]`` with the parameter
    itself as the key works too, as PyTorch's state is keyed by parameter."""

    @staticmethod
    def _key(key):
        return id(key) if isinstance(key, Tensor) else key

    def __getitem__(self, key):
        return super().__getitem__(self._key(key))

    def __setitem__(self, key, value):
        super().__setitem__(self._key(key), value)

    def __delitem__(self, key):
        super().__delitem__(self._key(key))

    def __contains__(self, key):
        return super().__contains__(self._key(key))

    def get(self, key, default=None):
        return super().get(self._key(key), default)

    def setdefault(self, key, default=None):
        return super().setdefault(self._key(key), default)

    def pop(self, key, *default):
        return super().pop(self._key(key), *default)


def _with_hooks(step):
    """``step`` running the optimizer's step pre-hooks before it (a hook may return new
    (args, kwargs)) and its post-hooks after it, as torch.optim's does."""
    @functools.wraps(step)
    def hooked(self, *args, **kwargs):
        hook = autograd._profiler_hook
        if hook is not None:  # a profiler records: the step is one range, as in torch
            return hook.run(f"Optimizer.step#{type(self).__name__}.step", _run_step, self,
                            step, args, kwargs)
        return _run_step(self, step, args, kwargs)
    return hooked


def _run_step(self, step, args, kwargs):
    """One step with the optimizer's step pre- and post-hooks around it."""
    self._opt_called = True  # a schedule stepped before any optimizer step warns
    for hook in list(self.__dict__.get("_step_pre_hooks", {}).values()):
        result = hook(self, args, kwargs)
        if result is not None:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(f"{type(self).__name__}: an optimizer step pre-hook must "
                                   f"return None or a tuple of (new_args, new_kwargs), but "
                                   f"got {result!r}")
            args, kwargs = result
    out = step(self, *args, **kwargs)
    for hook in list(self.__dict__.get("_step_post_hooks", {}).values()):
        hook(self, args, kwargs)
    return out


def _with_state_dict_hooks(state_dict):
    """``state_dict`` running the optimizer's state-dict pre-hooks (``hook(optimizer)``) before
    it and its post-hooks (``hook(optimizer, state_dict)``, whose result, where not None,
    replaces the state dict) after it; a subclass's call of its base's runs none again."""
    @functools.wraps(state_dict)
    def hooked(self):
        if self.__dict__.get("_in_state_dict"):
            return state_dict(self)
        for hook in list(self.__dict__.get("_state_dict_pre_hooks", {}).values()):
            hook(self)
        self._in_state_dict = True
        try:
            out = state_dict(self)
        finally:
            self._in_state_dict = False
        for hook in list(self.__dict__.get("_state_dict_post_hooks", {}).values()):
            result = hook(self, out)
            if result is not None:
                out = result
        return out
    return hooked


def _with_load_state_dict_hooks(load_state_dict):
    """``load_state_dict`` on a shallow copy of the state dict, after the load pre-hooks
    (``hook(optimizer, state_dict)``, whose result, where not None, is loaded instead) and
    before the load post-hooks (``hook(optimizer)``), as torch.optim's."""
    @functools.wraps(load_state_dict)
    def hooked(self, state_dict):
        if self.__dict__.get("_in_load_state_dict"):
            return load_state_dict(self, state_dict)
        if isinstance(state_dict, dict):
            state_dict = dict(state_dict)  # a hook may change it: the caller's stays as it was
        for hook in list(self.__dict__.get("_load_state_dict_pre_hooks", {}).values()):
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        self._in_load_state_dict = True
        try:
            out = load_state_dict(self, state_dict)
        finally:
            self._in_load_state_dict = False
        for hook in list(self.__dict__.get("_load_state_dict_post_hooks", {}).values()):
            hook(self)
        return out
    return hooked


class Optimizer:
    """torch.optim.Optimizer: ``param_groups`` (dicts holding ``params`` and the
    hyperparameters, the constructor's ``defaults`` filling what a group leaves out),
    ``state`` (each parameter's buffers), ``step(closure=None)``, ``zero_grad``,
    ``add_param_group`` and PyTorch's state dicts."""

    _state_keys = ()  # the per-parameter state entries an optimizer of this kind keeps
    _scalar_state_keys = ()  # of those, the ones that are numbers, not arrays shaped as p

    def __init__(self, params, defaults):
        params = _as_param_list(params, "optimizer params", groups_allowed=True)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if isinstance(params[0], dict):
            groups = [dict(g) for g in params]
        else:
            groups = [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group):
        """Add a group of parameters (a dict with ``params`` and any hyperparameters that differ
        from the constructor's, which fill in the rest), e.g. layers unfrozen while training."""
        i = len(self.param_groups)
        if not isinstance(param_group, dict):
            raise TypeError(f"optimizer: parameter group {i} must be a dict, got "
                            f"{type(param_group).__name__}")
        g = dict(param_group)
        if "params" not in g:
            raise ValueError(f"optimizer: parameter group {i} has no 'params'")
        if isinstance(g["params"], Tensor):
            g["params"] = [g["params"]]  # as PyTorch does for a group's single tensor
        g["params"] = _as_param_list(g["params"], f"parameter group {i}'s params")
        if g["params"] and _is_named(g["params"][0]):
            g["param_names"] = [name for name, _ in g["params"]]
            g["params"] = _as_param_list([p for _, p in g["params"]],
                                         f"parameter group {i}'s params")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        for p in g["params"]:
            if id(p) in seen:
                raise ValueError(f"optimizer: a parameter of shape {p.shape} is listed more "
                                 "than once (it would be stepped twice); some parameters appear "
                                 "in more than one parameter group: list each once")
            seen.add(id(p))
        group = {**self.defaults, **g}
        missing = [k for k, v in group.items() if v is _REQUIRED]
        if missing:
            raise ValueError(f"optimizer: parameter group {i} didn't specify a value of "
                             f"required optimization parameter {missing[0]}")
        _check_kernel_options(type(self).__name__, group)
        self._check_group(group)
        self.param_groups.append(group)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:  # every optimizer's own step runs the hooks
            cls.step = _with_hooks(cls.__dict__["step"])
        if "state_dict" in cls.__dict__:
            cls.state_dict = _with_state_dict_hooks(cls.__dict__["state_dict"])
        if "load_state_dict" in cls.__dict__:
            cls.load_state_dict = _with_load_state_dict_hooks(cls.__dict__["load_state_dict"])

    def register_step_pre_hook(self, hook):
        """``hook(optimizer, args, kwargs)`` before each step; returning (args, kwargs) replaces
        step's arguments. Returns a handle whose remove() takes the hook out."""
        return self._add_step_hook("_step_pre_hooks", hook)

    def register_step_post_hook(self, hook):
        """``hook(optimizer, args, kwargs)`` after each step. Returns a removable handle."""
        return self._add_step_hook("_step_post_hooks", hook)

    def register_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer)`` before ``state_dict()`` builds the state dict. Returns a
        handle whose remove() takes the hook out; ``prepend`` runs it before those already
        there."""
        return self._add_step_hook("_state_dict_pre_hooks", hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict)`` after ``state_dict()`` built it; what it returns
        other than None is returned instead. Returns a removable handle."""
        return self._add_step_hook("_state_dict_post_hooks", hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict)`` before ``load_state_dict`` loads (a shallow copy of)
        the state dict; what it returns other than None is loaded instead. Returns a
        removable handle."""
        return self._add_step_hook("_load_state_dict_pre_hooks", hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer)`` after ``load_state_dict`` has loaded. Returns a removable
        handle."""
        return self._add_step_hook("_load_state_dict_post_hooks", hook, prepend)

    def _add_step_hook(self, store, hook, prepend=False):
        from ..nn.module import RemovableHandle

        if not callable(hook):
            raise TypeError(f"{type(self).__name__}: a hook must be callable, got a "
                            f"{type(hook).__name__}")
        hooks = self.__dict__.setdefault(store, {})
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        if prepend:  # the handle's id first, the others after it in their order
            for key in [k for k in hooks if k != handle.id]:
                hooks[key] = hooks.pop(key)
        return handle

    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        self._state = _ParamState(value)

    def __getstate__(self):
        """The state is kept by id(param), which a copy's parameters do not share: it travels
        keyed by the parameter objects themselves, so that copy.deepcopy((model, optimizer))
        and pickle give a copy whose state belongs to the copied parameters."""
        out = dict(self.__dict__)
        params = {id(p): p for group in self.param_groups for p in group["params"]}
        out["_state"] = [(params.get(key, key), value)
                         for key, value in dict.items(self.__dict__.get("_state", {}))]
        return out

    def __setstate__(self, state):
        state = dict(state)
        entries = state.pop("_state", [])
        self.__dict__.update(state)
        self.state = {}
        for key, value in entries:
            self.state[key] = value  # a parameter key becomes its (new) id

    def _check_group(self, group):
        pass

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join(lines + [")"])

    def zero_grad(self, set_to_none=True):
        """Drop the gradients (set_to_none=True, PyTorch's default) or zero them in place."""
        hook = autograd._profiler_hook
        if hook is not None:
            return hook.run(f"Optimizer.zero_grad#{type(self).__name__}.zero_grad",
                            self._zero_grad, set_to_none)
        self._zero_grad(set_to_none)

    def _zero_grad(self, set_to_none):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    if p.grad._ctx is not None:  # from backward(create_graph=True): cut its graph first
                        p.grad.detach_()
                    p.grad.requires_grad = False
                    p.grad.zero_()

    def step(self, closure=None):
        """One update of every parameter that has a gradient. ``closure`` (optional) clears
        the gradients, computes the loss, calls backward and returns the loss: it runs first,
        with gradients recorded even inside no_grad, and its loss is returned (None without)."""
        loss = _evaluate(closure)
        for group in self.param_groups:  # refused before any parameter moves (torch refuses
            for p in group["params"]:    # some of these part way through its loop)
                if p.grad is not None:
                    self._check_grad_layout(p, type(p.grad.data) is SparseCOO, group)
        with no_grad():
            for group in self.param_groups:
                self._step_group(group)
                _count_changes(group)
        return loss

    def _step_group(self, group):
        maximize = group.get("maximize", False)
        for p in group["params"]:
            if p.grad is not None:
                state = self.state.setdefault(id(p), {})
                if state:
                    _follow_device(state, p.data)
                g = p.grad.data
                if type(g) is SparseCOO:  # nn.Embedding(sparse=True), sparse.mm's input
                    self._update_sparse(p, -g if maximize else g, group, state)
                elif p.data.dtype.kind == "c":
                    self._update_complex(p, -g if maximize else g, group, state)
                else:
                    self._update(p, -g if maximize else g, group, state)

    def _update(self, p, g, group, state):
        raise NotImplementedError

    def _check_grad_layout(self, p, sparse, group):
        """Raise, before step changes anything, where this optimizer refuses ``p``'s gradient
        (sparse or dense) with ``group``'s options."""
        if sparse and type(self)._update_sparse is Optimizer._update_sparse:
            self._update_sparse(p, None, group, None)

    def _update_sparse(self, p, g, group, state):
        """The update for a sparse gradient (a backend.sparse.SparseCOO); an optimizer that
        takes them (SGD, SparseAdam, Adagrad, as torch's) defines it, the others refuse."""
        name = type(self).__name__
        hint = ", please consider SparseAdam instead" if name in ("Adam", "AdamW") else ""
        raise RuntimeError(f"{name} does not support sparse gradients{hint} (parameter of "
                           f"shape {tuple(p.shape)})")

    def _update_complex(self, p, g, group, state):
        """A complex parameter updated as PyTorch's optimizers update it: as its real pairs
        (view_as_real), so that an adaptive method keeps the moments of the real and imaginary
        parts apart (not the moments of the complex numbers, whose square g * g is not
        |g|^2). The state keeps complex arrays of the parameter's shape, as torch's state_dict
        shows them."""
        from ..complex_ops import real_pairs

        if not state and hasattr(self, "_init_state"):  # Adagrad's sum, made on first use
            self._init_state(p, group)
            state = self.state[id(p)]
        shape = p.data.shape
        pairs = {k: real_pairs(v) if hasattr(v, "shape") and v.dtype.kind == "c" and
                 v.shape == shape else v for k, v in state.items()}
        g = real_pairs(g.astype(p.data.dtype, copy=False))
        self._update(_RealPairs(real_pairs(p.data)), g, group, pairs)
        xp = get_array_module(p.data)
        for k, v in pairs.items():
            if hasattr(v, "shape") and v.dtype.kind == "f" and v.shape == shape + (2,):
                v = xp.ascontiguousarray(v).view(p.data.dtype).reshape(shape)
            state[k] = v

    def _state_shape(self, key, param):
        """The shape of state entry ``key`` of ``param`` (its own, unless an optimizer keeps
        another)."""
        return tuple(param.shape)

    def state_dict(self):
        """PyTorch's structure: ``state`` keyed by the parameter's index (counted across groups,
        in order; parameters without state yet are left out) and ``param_groups`` holding the
        hyperparameters with ``params`` as those indices. Arrays are copies, as Tensors."""
        state, groups, index = {}, [], 0
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                if self.state.get(id(p)):  # empty (SGD without momentum): left out, as torch
                    state[index] = {k: Tensor(v.copy()) if hasattr(v, "shape") else v
                                    for k, v in self.state[id(p)].items()}
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict()`` returned (or PyTorch's optimizer state_dict for the same
        parameters): hyperparameters per group and each parameter's state, cast to the
        parameter's dtype and moved to its device. Everything is checked before anything
        changes."""
        name = type(self).__name__
        if not (isinstance(state_dict, dict) and "state" in state_dict
                and "param_groups" in state_dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             "'param_groups', as state_dict() returns")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or not all(
                isinstance(g, dict) for g in saved_groups):
            raise TypeError(f"{name}.load_state_dict: 'param_groups' must be a list of dicts, got "
                            f"{_short_repr(saved_groups)}")
        if not isinstance(state_dict["state"], dict):
            raise TypeError(f"{name}.load_state_dict: 'state' must be a dict {{parameter index: "
                            f"{{name: value}}}}, got {_short_repr(state_dict['state'])}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} "
                             f"parameter groups, this optimizer {len(self.param_groups)}")
        by_index, new_groups = {}, []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            ids = list(saved.get("params", ()))
            if len(ids) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} holds {len(ids)} "
                                 f"parameters in the state dict, {len(group['params'])} here")
            by_index.update(zip((int(k) for k in ids), group["params"]))
            new_group = dict(group)
            for k, v in saved.items():
                if (k in group and k != "params") or k in _SCHEDULER_KEYS:
                    new_group[k] = v
                elif k not in group and v not in (None, False):
                    # PyTorch-only options (maximize, amsgrad, foreach, ...) are fine when off
                    raise ValueError(f"{name}.load_state_dict: option {k}={v!r} of group {i} "
                                     "is not supported here")
            for pair in ("betas", "etas", "step_sizes"):  # a JSON round trip makes them lists
                if isinstance(new_group.get(pair), list):
                    new_group[pair] = tuple(new_group[pair])
            _check_kernel_options(name, new_group)
            self._check_group(new_group)
            new_groups.append(new_group)
        new_state = {}
        for key, entries in state_dict["state"].items():
            try:
                param = by_index[int(key)]
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"{name}.load_state_dict: state for parameter {key!r}, which "
                                 "no parameter group lists") from None
            if not isinstance(entries, dict):
                raise TypeError(f"{name}.load_state_dict: state {key!r} must be a dict "
                                f"{{name: value}}, got {_short_repr(entries)}")
            unknown = set(entries) - set(self._state_keys)
            if unknown:
                raise ValueError(f"{name}.load_state_dict: state {key} holds {sorted(unknown)}; "
                                 f"a {name} keeps {list(self._state_keys)}")
            # PyTorch's SGD keeps momentum_buffer None until a buffer exists: no buffer here
            new_state[id(param)] = {k: _state_value(v, param, k, key, self._scalar_state_keys,
                                                    self._state_shape(k, param))
                                     for k, v in entries.items()
                                     if not (v is None and k == "momentum_buffer")}
        for group, new_group in zip(self.param_groups, new_groups):
            group.update(new_group)
        self.state = new_state



def _check_betas(name, betas):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        _check_finite(name, **{f"betas[{i}]": beta})
        if not 0 <= beta < 1:
            raise ValueError(f"{name}: betas[{i}] must be in [0, 1), got {beta}")


def _check_flags(name, **flags):
    for key, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: {key} must be True or False, got {value!r}")


def _check_non_negative(name, group, keys):
    for key in keys:
        if group[key] < 0:
            raise ValueError(f"{name}: {key} must be >= 0, got {group[key]}")


def _lerp_(a, b, weight):
    """a += weight * (b - a) in place, in the form torch.lerp_ takes on each side of weight 0.5
    (starting from the nearer end loses less to rounding). PyTorch's CPU kernel fuses the
    multiply-add that numpy rounds twice: in float32 the two agree to an ulp or so a step."""
    if weight < 0.5:
        a += weight * (b - a)
    else:
        a[...] = b - (b - a) * (1 - weight)



def _check_group_numbers(name, group, keys, flags=("maximize",)):
    """The usual checks of a group: each of ``keys`` a finite number >= 0, each of ``flags``
    True or False."""
    _check_finite(name, **{k: group[k] for k in keys})
    _check_non_negative(name, group, keys)
    _check_flags(name, **{k: group.get(k, False) for k in flags})


def _as_float32(x):
    """x rounded to float32: PyTorch keeps some scalar state (NAdam's mu_product, ASGD's eta
    and mu) in 0-d tensors of its default scalar dtype, float32, and steps with those values."""
    return float(np.float32(x))


Optimizer.step = _with_hooks(Optimizer.step)
Optimizer.state_dict = _with_state_dict_hooks(Optimizer.state_dict)
Optimizer.load_state_dict = _with_load_state_dict_hooks(Optimizer.load_state_dict)
