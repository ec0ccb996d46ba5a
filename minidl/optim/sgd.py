"""torch.optim.SGD."""
from __future__ import annotations

from .. import backend
from ..backend import get_array_module
from ..backend import sparse as _sparse
from .optimizer import Optimizer, _check_finite, _check_flags, _fused, _kernel_options


class SGD(Optimizer):
    """p -= lr * v, with v = momentum * v + (1 - dampening) * (grad + weight_decay * p)
    (the first step takes v = grad), and Nesterov's look-ahead g + momentum * v."""

    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize,
                                      **_kernel_options(foreach, differentiable=differentiable,
                                                        fused=fused)))

    def _check_group(self, group):
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        _check_finite("SGD", lr=lr, momentum=momentum, dampening=group["dampening"],
                      weight_decay=wd)
        if lr < 0 or momentum < 0 or wd < 0:
            raise ValueError(f"SGD: lr {lr}, momentum {momentum}, weight_decay {wd} "
                             "must be >= 0")
        if group["nesterov"] and (momentum <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        _check_flags("SGD", maximize=group.get("maximize", False))

    def _step_group(self, group):
        if not self._step_at_once(group):
            super()._step_group(group)

    def _step_at_once(self, group):
        """The whole group in one launch where the backend has a multi-tensor update (CUDA) and
        every parameter with a gradient already has its momentum buffer on its device; False
        (nothing changed) otherwise."""
        if not group["momentum"] or not group["params"] or group.get("maximize", False):
            return False
        first = group["params"][0].data
        many = getattr(backend.kernels(get_array_module(first)), "sgd_update_many", None)
        if many is None:
            return False
        params, grads, bufs = [], [], []
        array_type = type(first)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.get(id(p))
            buf = state.get("momentum_buffer") if state else None
            if buf is None or type(buf) is not array_type or type(p.data) is not array_type:
                return False
            params.append(p.data)
            grads.append(p.grad.data)
            bufs.append(buf)
        if not params:
            return True
        return many(params, grads, bufs, group["lr"], group["momentum"], group["dampening"],
                    group["weight_decay"], group["nesterov"])

    def _update(self, p, g, group, state):
        wd, mom = group["weight_decay"], group["momentum"]
        buf = state.get("momentum_buffer")
        fast = _fused("sgd_update", p.data, g, buf)
        if fast is not None:
            fast(p.data, g, state, group["lr"], mom, group["dampening"], wd, group["nesterov"])
            return
        if wd:
            g = g + wd * p.data
        if mom:
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= mom
                buf += (1 - group["dampening"]) * g
            g = g + mom * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g

    def _check_grad_layout(self, p, sparse, group):
        if sparse and group["weight_decay"]:  # torch cannot add the dense parameter to it
            raise RuntimeError(f"SGD: weight_decay with a sparse gradient (parameter of shape "
                               f"{tuple(p.shape)}): add(sparse, dense) is not supported. Use "
                               "add(dense, sparse) instead.")
        state = self.state.get(id(p)) or {}
        buf = state.get("momentum_buffer") if group["momentum"] else None
        if buf is None:
            return
        if not sparse and type(buf) is _sparse.SparseCOO:
            # the buffer made from sparse gradients cannot take a dense one, as torch's
            raise RuntimeError(f"SGD: the momentum buffer of the parameter of shape "
                               f"{tuple(p.shape)} is sparse (made from sparse gradients), and "
                               "this gradient is dense: add(sparse, dense) is not supported. "
                               "Use add(dense, sparse) instead.")
        if sparse and type(buf) is not _sparse.SparseCOO and group["nesterov"]:
            raise RuntimeError(f"SGD: Nesterov momentum with a sparse gradient and the dense "
                               f"momentum buffer of the parameter of shape {tuple(p.shape)}: "
                               "add(sparse, dense) is not supported. Use add(dense, sparse) "
                               "instead.")

    def _update_sparse(self, p, g, group, state):
        """A sparse gradient, as torch's SGD takes one: weight decay refused (see
        _check_grad_layout), the momentum buffer kept sparse (coalesced)."""
        self._check_grad_layout(p, True, group)
        mom = group["momentum"]
        if mom:
            buf = state.get("momentum_buffer")
            if buf is not None and type(buf) is not _sparse.SparseCOO:
                # a dense buffer (from dense gradients before) takes the sparse one, as
                # torch's buf.mul_(momentum).add_(grad): it stays dense
                buf *= mom
                _sparse.add_into(buf, g, 1 - group["dampening"])
                p.data -= group["lr"] * buf
                return
            if buf is None:
                buf = _sparse.coalesce(g.copy())
            else:
                buf = _sparse.coalesce(_sparse.add(
                    buf.with_values(buf.values * mom),
                    g.with_values(g.values * (1 - group["dampening"]))))
            state["momentum_buffer"] = buf
            g = _sparse.add(g, buf.with_values(buf.values * mom)) if group["nesterov"] else buf
        _sparse.add_into(p.data, g, -group["lr"])
