"""SyncBatchNorm: batch norm whose training statistics cover the whole batch of every rank of a
process group (torch.nn.SyncBatchNorm), for data-parallel training with small per-rank batches.

Forward, per channel: each rank's count, mean and sum of squared deviations (about its own
mean, so a large offset does not cancel), all-gathered and combined exactly (Chan's parallel
formula); backward: one all-reduce of the two per-channel sums the input gradient needs (of dy
and of dy * (x - mean)). The weight and bias gradients stay this rank's own, as torch's
(DistributedDataParallel averages them). Every rank of the group must run forward and backward.

Outside a process group, with one rank, or in eval mode it is BatchNorm.
"""
from __future__ import annotations

import numpy as np

from ..backend import generic, get_array_module
from ..backend.dtypes import channel_dtype
from ..tensor import Function
from .layers import _BatchNorm


class _SyncBatchNormFn(Function):
    def forward(self, x, *weight_bias, has_weight, has_bias, running_mean, running_var,
                momentum, eps, group):
        wb = list(weight_bias)
        w = wb.pop(0) if has_weight else None
        b = wb.pop(0) if has_bias else None
        from .. import distributed as dist

        xp = get_array_module(x)
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        local = x.size // c if c else 0
        acc = np.float64 if x.dtype == np.float64 else np.float32
        stats = xp.zeros((3, c), dtype=np.float64)  # count, mean, M2 in float64 (C numbers)
        if local:
            xa = x.astype(acc, copy=False)
            m = xa.mean(axis=axes)
            stats[0] = local
            stats[1] = m
            stats[2] = ((xa - m.reshape(shape)) ** 2).sum(axis=axes)
        world = dist.get_world_size(group)
        everyone = xp.empty((world, 3, c), dtype=np.float64)
        dist.all_gather_into_tensor(everyone, stats, group=group)
        counts, means, m2s = everyone[:, 0], everyone[:, 1], everyone[:, 2]
        total = counts.sum(axis=0)
        if float(total.min()) <= 1:
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel when "
                             f"training, got input size {tuple(x.shape)} on this rank and "
                             f"{int(total.min())} values per channel over all ranks")
        mean = (counts * means).sum(axis=0) / total
        m2 = (m2s + counts * (means - mean) ** 2).sum(axis=0)
        var = m2 / total
        if running_mean is not None:
            unbiased = m2 / xp.maximum(total - 1, 1)
            running_mean *= 1 - momentum
            running_mean += (momentum * mean).astype(running_mean.dtype)
            running_var *= 1 - momentum
            running_var += (momentum * unbiased).astype(running_var.dtype)
        pdt = channel_dtype(x.dtype)
        invstd = (1.0 / xp.sqrt(var + eps)).astype(pdt)
        mean = mean.astype(pdt)
        scale = invstd * w if w is not None else invstd
        shift = -mean * scale
        if b is not None:
            shift = shift + b
        self.has_weight, self.has_bias, self.group, self.eps = has_weight, has_bias, group, eps
        self.total = total.astype(pdt)
        self.save_for_backward(x, mean, invstd, w)
        return generic.channel_affine(x, scale.astype(pdt), shift.astype(pdt)).astype(
            x.dtype, copy=False)

    def backward(self, g):
        from .. import distributed as dist

        x, mean, invstd, w = self.saved
        xp = get_array_module(g)
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        pdt = invstd.dtype
        xmu = x.astype(pdt, copy=False) - mean.reshape(shape)
        ga = g.astype(pdt, copy=False)
        sums = xp.stack([ga.sum(axis=axes), (ga * xmu).sum(axis=axes)])
        grad_w = sums[1] * invstd if self.has_weight else None  # this rank's own, as torch's
        grad_b = sums[0].copy() if self.has_bias else None
        dist.all_reduce(sums, group=self.group)
        mean_dy, mean_dy_xmu = sums[0] / self.total, sums[1] / self.total
        a = invstd * w if w is not None else invstd
        gx = (ga - mean_dy.reshape(shape) - xmu * (invstd * invstd * mean_dy_xmu).reshape(shape)) \
            * a.reshape(shape)
        grads = [gx.astype(x.dtype, copy=False)]
        if self.has_weight:
            grads.append(grad_w)
        if self.has_bias:
            grads.append(grad_b)
        return tuple(grads)

    def graph_backward(self, g, out):
        """The same gradients as recorded ops, the statistics recomputed with differentiable
        all-reduces (distributed.nn), so a second backward reaches every rank's input."""
        from ..distributed.nn import all_reduce

        x, rest = self.inputs[0], list(self.inputs[1:])
        w = rest.pop(0) if self.has_weight else None
        b = rest.pop(0) if self.has_bias else None
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        n = float(self.total[0])

        def global_mean(t):
            return all_reduce(t.sum(dim=axes, keepdim=True), group=self.group) * (1.0 / n)

        xc = x - global_mean(x)
        rstd = (global_mean(xc * xc) + self.eps) ** -0.5
        xhat = xc * rstd
        gxhat = g * w.reshape(shape) if w is not None else g
        gx = None
        if x.requires_grad:
            gx = rstd * (gxhat - global_mean(gxhat) - xhat * global_mean(gxhat * xhat))
        grads = [gx]
        if w is not None:
            grads.append((g * xhat).sum(dim=axes) if w.requires_grad else None)
        if b is not None:
            grads.append(g.sum(dim=axes) if b.requires_grad else None)
        return tuple(grads)


class SyncBatchNorm(_BatchNorm):
    """``torch.nn.SyncBatchNorm(num_features, eps, momentum, affine, track_running_stats,
    process_group)``: input (N, C, ...) with at least 2 dims."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.process_group = process_group

    def _check_input(self, x):
        if x.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {x.ndim}D input)")

    def forward(self, input):
        from .. import distributed as dist

        self._check_input(input)
        training = self.training or not self.track_running_stats
        sync = (training and self.training and dist.is_initialized()
                and self.process_group is not dist.GroupMember.NON_GROUP_MEMBER
                and dist.get_world_size(self.process_group) > 1)
        if not sync:
            return self._forward(input, False)
        if input.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm: expected {self.num_features} channels in dim 1, "
                             f"got input of shape {tuple(input.shape)}")
        update = self.track_running_stats
        momentum = self.momentum
        if update:
            self.num_batches_tracked.data[...] += 1
            if momentum is None:  # cumulative average
                momentum = 1.0 / float(self.num_batches_tracked.data)
        inputs = [p for p in (self.weight, self.bias) if p is not None]
        return _SyncBatchNormFn.apply(
            input, *inputs, has_weight=self.weight is not None, has_bias=self.bias is not None,
            running_mean=self.running_mean.data if update else None,
            running_var=self.running_var.data if update else None,
            momentum=momentum, eps=self.eps, group=self.process_group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm*d layer replaced by a SyncBatchNorm that holds its
        parameters, running statistics and mode (a SyncBatchNorm too, as torch's: it then
        synchronises over ``process_group``)."""
        if isinstance(module, _BatchNorm):
            new = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group,
                      bias=getattr(module, "use_bias", True))
            if module.affine:
                new.weight = module.weight
                new.bias = module.bias
            if module.track_running_stats:
                new.running_mean = module.running_mean
                new.running_var = module.running_var
                new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = cls.convert_sync_batchnorm(child, process_group)
        return module


__all__ = ["SyncBatchNorm"]
