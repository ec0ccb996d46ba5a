"""Layers: thin Modules that hold parameters and call minidl.functional."""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from ..backend.dtypes import default_float
from .. import functional as F
from ..tensor import Tensor
from . import init
from ._functional import cross_entropy as CE
from ._functional.losses import _legacy_reduction
from .conv import Conv2d  # noqa: F401  (nn.Conv2d, with the other convolutions)
from .dropout import _DropoutNd
from .module import Module, Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d  # noqa: F401  (with the others)


class Linear(Module):
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=default_float()))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=default_float()))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # PyTorch's defaults: Kaiming-uniform(a=sqrt(5)) weights, U(-1/sqrt(fan_in), ..) bias
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class NonDynamicallyQuantizableLinear(Linear):
    """torch.nn.modules.linear's name for the Linear that MultiheadAttention projects with: a
    Linear in every way, except that dynamic quantisation (which swaps by exact type) leaves
    it alone, as the attention reads its weight and bias itself."""


class _NormBase(Module):
    """What torch's batch and instance normalisation layers share as a base class, so that
    ``isinstance(m, nn.modules.batchnorm._NormBase)`` answers as in PyTorch."""

    _version = 2  # torch's: a state dict's _metadata says so (num_batches_tracked is there)


class _BatchNorm(_NormBase):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.use_bias = bias
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=default_float()))
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = Parameter(np.zeros(num_features, dtype=default_float()))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=default_float()))
            self.register_buffer("running_var", np.ones(num_features, dtype=default_float()))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, input):
        return self._forward(input, False)

    def forward_relu(self, x):
        """``relu(self(x))`` as one fused op (see ``F.batch_norm_relu``); in two steps for an
        input that is not a Tensor (minidl.fx's tracer passes a Proxy: the graph then shows this
        module and a relu, as torchvision's models have them)."""
        if not isinstance(x, Tensor):
            return F.relu(self(x))
        return self._forward(x, True)

    def _forward(self, x, relu):
        self._check_input(x)
        # num_batches_tracked counts training batches, as in PyTorch; the batch-norm op adds
        # the 1 (on CUDA inside its per-channel kernel: no launch of its own)
        tracked = self.num_batches_tracked.data if self.training and self.track_running_stats \
            else None
        momentum = self.momentum
        if momentum is None:  # PyTorch's cumulative average: batch k weighs 1/k
            momentum = 1.0 / (int(tracked) + 1) if tracked is not None else 0.0
        return F._batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             self.training or not self.track_running_stats, momentum,
                             self.eps, relu, tracked)

    def _check_input(self, x):
        pass

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    def _check_input(self, x):
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2-D or 3-D input, got shape {x.shape}")


class BatchNorm2d(_BatchNorm):
    def _check_input(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: expected 4-D input (N, C, H, W), got shape {x.shape}")


class BatchNorm3d(_BatchNorm):
    def _check_input(self, x):
        if x.ndim != 5:
            raise ValueError(f"BatchNorm3d: expected 5-D input (N, C, D, H, W), got shape "
                             f"{x.shape}")


class LayerNorm(Module):
    """Normalises over the last dims (``normalized_shape``); weight ones and bias zeros of
    that shape, as PyTorch initialises them."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.normalized_shape = F._shape_tuple("LayerNorm", "normalized_shape", normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=default_float()))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype=default_float()))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table of ``num_embeddings`` rows of size ``embedding_dim``, drawn from N(0, 1)
    as in PyTorch; the row ``padding_idx`` starts at zero and gets no gradient."""
    _factory_kwargs = True  # device=, dtype= (Module.__init_subclass__)

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None:
            padding_idx = F._whole(padding_idx, "Embedding: padding_idx")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype=default_float()),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight has shape {tuple(_weight.shape)}, expected "
                                 f"({num_embeddings}, {embedding_dim})")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None,
                        norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        """An Embedding whose weight is a copy of the 2-D ``embeddings`` (frozen by default)."""
        if embeddings.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape "
                             f"{tuple(embeddings.shape)}")
        rows, dim = embeddings.shape
        data = embeddings.data if isinstance(embeddings, Tensor) else np.asarray(embeddings)
        return cls(rows, dim, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=data.copy(), _freeze=freeze)

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse:
            s += ", sparse=True"
        return s


class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return F.tanh(input)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        return F.elu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class SiLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.silu(input, self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class _AlongDim(Module):
    """Softmax's and LogSoftmax's shared argument (neither is the other's subclass, as in
    torch)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    def forward(self, input):
        return F.softmax(input, self.dim)


class LogSoftmax(_AlongDim):
    def forward(self, input):
        return F.log_softmax(input, self.dim)


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input; any constructor arguments are ignored (torch's, so that it can
    replace a layer in place: ``nn.Identity(54, unused_argument=0.1)``)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Dropout(_DropoutNd):
    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)


class _Loss(Module):
    """The base of the loss modules, as torch's: ``reduction`` from the legacy
    ``size_average``/``reduce`` pair or given."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = _legacy_reduction(size_average, reduce, reduction)


class _WeightedLoss(_Loss):
    """A loss with per-class weights, kept as a buffer (``.to()`` moves it), as torch's."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return CE.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                                reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return CE.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                           reduction=self.reduction)


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class BCELoss(_WeightedLoss):
    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                  pos_weight=self.pos_weight)


class L1Loss(_Loss):
    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class _Indexed(Module):
    """What Sequential and ModuleList share: children named 0, 1, 2, ... and list-like access
    (negative indices, slices, assignment, deletion, insertion renumber as in PyTorch)."""

    def _index(self, i):
        n = len(self._modules)
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"{type(self).__name__} indices must be integers or slices, got "
                            f"{type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"{type(self).__name__} index {i} is out of range for {n} modules")
        return list(self._modules)[i % n]

    def _renumber(self, modules):
        # the children are registered already: renamed in place, as torch's insert and del
        # do (no global module registration hook fires for a move)
        self._modules.clear()
        for k, m in enumerate(modules):
            self._modules[str(k)] = m

    def __getitem__(self, i):
        if isinstance(i, slice):
            # keep the original names, as PyTorch does, so a slice's state_dict keys still match
            return type(self)._from_named(list(self._modules.items())[i])
        return self._modules[self._index(i)]

    def __setitem__(self, i, module):
        self.add_module(self._index(i), module)

    def __delitem__(self, i):
        names = list(self._modules)[i] if isinstance(i, slice) else [self._index(i)]
        for name in names:
            del self._modules[name]
        self._renumber(list(self._modules.values()))  # 0..n-1 again, as PyTorch renumbers

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        mods = list(self._modules.values())
        n = len(mods)
        if not -n <= index <= n:
            raise IndexError(f"{type(self).__name__}.insert: index {index} is out of range for "
                             f"{n} modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.insert: {type(module).__name__} is not a "
                            f"Module subclass")
        mods.insert(index, module)
        self._renumber(mods)
        return self

    def pop(self, i=-1):
        module = self[i]
        del self[i]
        return module


class Sequential(_Indexed):
    """Runs its children in order; they are named 0, 1, 2, ... (or by an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    @classmethod
    def _from_named(cls, items):
        return cls(OrderedDict(items))

    def forward(self, input):
        for m in self._modules.values():
            input = m(input)
        return input


    def __add__(self, other):
        """A new Sequential of this one's layers then ``other``'s (the same module objects),
        as torch's."""
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but "
                             f"{type(other)} is given.")
        return Sequential(*self, *other)

    def __iadd__(self, other):
        """``seq += other``: ``other``'s layers appended to this Sequential itself."""
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but "
                             f"{type(other)} is given.")
        offset = len(self)
        for i, module in enumerate(list(other)):
            self.add_module(str(i + offset), module)
        return self


class ModuleList(_Indexed):
    """A list of modules whose parameters are the list's (``layers.0.weight``, ...)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    @classmethod
    def _from_named(cls, items):
        out = cls()
        for name, m in items:
            out.add_module(name, m)
        return out

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        """A new ModuleList of this one's modules then ``other``'s, as torch's."""
        return ModuleList(list(self) + list(other))


class ModuleDict(Module):
    """Sub-modules by name, in insertion order, registered like attributes (their parameters
    are the dict's, under ``name.``)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict: keys must be strings, got {type(key).__name__}")
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict: {key!r} must be a Module, got {type(module).__name__}")
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def clear(self):
        self._modules.clear()

    def update(self, modules):
        """Add (or replace) modules from a mapping or from (name, module) pairs."""
        if hasattr(modules, "items"):
            pairs = modules.items()
        else:
            pairs = []
            for i, pair in enumerate(modules):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ValueError(f"ModuleDict.update: element {i} should be a (name, "
                                     f"module) pair, got {pair!r}")
                pairs.append(pair)
        for key, module in pairs:
            self[key] = module
