"""SyncBatchNorm: batch norm whose training statistics are those of the whole batch across the
ranks of minidl.distributed (each rank's share summed with all_reduce), as torch's. Outside a
process group of more than one rank, and in eval mode, it is BatchNorm. torch runs the
synchronised form on GPUs only; minidl's collectives work on both devices, so it runs on the
CPU too (MPI). ``convert_sync_batchnorm`` swaps a model's BatchNorm*d layers for it."""
from __future__ import annotations

import numpy as np

from .. import distributed as dist
from ..backend import get_array_module
from ..functional import accumulation_dtype
from ..tensor import Function
from .layers import BatchNorm1d, BatchNorm2d, BatchNorm3d, _BatchNorm


def _reduced(xp, parts):
    """The sum over ranks of the arrays in ``parts``, in one collective."""
    flat = xp.concatenate([xp.asarray(p, dtype=np.float64).reshape(-1) for p in parts])
    dist.all_reduce(flat)
    out, at = [], 0
    for p in parts:
        n = int(np.prod(np.shape(p)))
        out.append(flat[at:at + n].reshape(np.shape(p)))
        at += n
    return out


class SyncBatchNormOp(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b with the mean and (biased) variance of every
    rank's batch together; the running statistics get the unbiased variance. Backward sums
    the per-channel sums of g and g * x_hat over the ranks (w's and b's gradients stay this
    rank's own, for DistributedDataParallel to average)."""

    def forward(self, x, weight=None, bias=None, *, running_mean, running_var, eps, momentum):
        xp = get_array_module(x)
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        acc = accumulation_dtype(x) or x.dtype
        xa = x.astype(acc, copy=False)
        local_n = x.size // c if c else 0
        total, count = _reduced(xp, [xa.sum(axis=axes), np.array([local_n])])
        n = float(count[0])
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {tuple(x.shape)} on this rank and {int(n)} values in all")
        mean = total / n
        centred = xa - mean.astype(acc).reshape(shape)
        (sq,) = _reduced(xp, [(centred * centred).sum(axis=axes)])
        var = sq / n
        invstd = 1.0 / xp.sqrt(var + eps)
        if running_mean is not None:
            running_mean[...] = ((1 - momentum) * running_mean + momentum * mean).astype(
                running_mean.dtype)
            running_var[...] = ((1 - momentum) * running_var
                                + momentum * var * (n / (n - 1))).astype(running_var.dtype)
        xhat = centred * invstd.astype(acc).reshape(shape)
        self.xhat, self.n, self.axes, self.shape = xhat, n, axes, shape
        self.invstd = invstd.astype(acc)
        self.w = None if weight is None else weight.astype(acc)
        self.has = (weight is not None, bias is not None)
        y = xhat
        if weight is not None:
            y = y * self.w.reshape(shape)
        if bias is not None:
            y = y + bias.astype(acc).reshape(shape)
        return y.astype(x.dtype, copy=False)

    def backward(self, g):
        xp = get_array_module(g)
        ga = g.astype(self.xhat.dtype, copy=False)
        sum_g = ga.sum(axis=self.axes)
        sum_gx = (ga * self.xhat).sum(axis=self.axes)
        all_g, all_gx = _reduced(xp, [sum_g, sum_gx])
        scale = self.invstd if self.w is None else self.invstd * self.w
        gx = (ga - (all_g / self.n).astype(ga.dtype).reshape(self.shape)
              - self.xhat * (all_gx / self.n).astype(ga.dtype).reshape(self.shape)) \
            * scale.reshape(self.shape)
        grads = [gx.astype(g.dtype, copy=False)]
        if self.has[0]:
            grads.append(sum_gx.astype(g.dtype, copy=False))
        if self.has[1]:
            grads.append(sum_g.astype(g.dtype, copy=False))
        return tuple(grads) if len(grads) > 1 else grads[0]


class SyncBatchNorm(_BatchNorm):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.process_group = process_group

    def _check_input(self, x):
        if x.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {x.ndim}D input)")
        if x.shape[1] == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

    def _forward(self, x, relu):
        self._check_input(x)
        sync = (self.training and dist.is_initialized() and dist.get_world_size() > 1)
        if not sync:
            return super()._forward(x, relu)
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.data[...] += 1
            if momentum is None:
                momentum = 1.0 / int(self.num_batches_tracked.data)
        tracked = self.track_running_stats
        args = [x] + [p for p in (self.weight, self.bias) if p is not None]
        if self.weight is None and self.bias is not None:
            raise ValueError("SyncBatchNorm: a bias without a weight is not supported when "
                             "synchronising")
        y = SyncBatchNormOp.apply(
            *args, running_mean=self.running_mean.data if tracked else None,
            running_var=self.running_var.data if tracked else None, eps=self.eps,
            momentum=momentum if momentum is not None else 0.0)
        return y.relu() if relu else y

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm1d/2d/3d (itself, or inside it) replaced by a
        SyncBatchNorm holding the same parameters and statistics."""
        out = module
        if isinstance(module, (BatchNorm1d, BatchNorm2d, BatchNorm3d)):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group, bias=module.bias is not None)
            if module.affine:
                out.weight = module.weight
                if module.bias is not None:
                    out.bias = module.bias
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                out._buffers[name] = module._buffers.get(name)
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return out
