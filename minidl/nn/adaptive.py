"""AdaptiveLogSoftmaxWithLoss (Grave et al., "Efficient softmax approximation for GPUs"),
PyTorch's: the frequent classes (below cutoffs[0]) and one logit per tail cluster share a
head; each tail cluster has its own low-rank two-layer projection, of in_features //
div_value ** (i + 1) hidden units."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .. import functional as F
from ..ops import cat
from ..tensor import Tensor
from .layers import Linear, ModuleList, Sequential
from .module import Module

_ASMoutput = namedtuple("_ASMoutput", ["output", "loss"])


def _index(like, values):
    """Host indices as an int64 tensor on ``like``'s device."""
    return Tensor(np.asarray(values, dtype=np.int64), device=like.device)


def _rows(t, rows):
    return t.index_select(0, _index(t, rows))


class AdaptiveLogSoftmaxWithLoss(Module):
    _factory_kwargs = True

    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False):
        super().__init__()
        cutoffs = list(cutoffs)
        if len(cutoffs) == 0:
            raise ValueError("cutoffs should be a sequence of length larger than 0")
        if (cutoffs != sorted(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1
                or len(set(cutoffs)) != len(cutoffs) or any(int(c) != c for c in cutoffs)):
            raise ValueError("cutoffs should be a sequence of unique, positive integers sorted "
                             "in an increasing order, where each value is between 1 and "
                             f"n_classes-1 (got {cutoffs} for n_classes={n_classes})")
        self.in_features, self.n_classes = in_features, n_classes
        self.cutoffs = [int(c) for c in cutoffs] + [n_classes]
        self.div_value, self.head_bias = div_value, head_bias
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        self.head = Linear(in_features, self.head_size, bias=head_bias)
        self.tail = ModuleList()
        for i in range(self.n_clusters):
            hidden = int(in_features // (div_value ** (i + 1)))
            size = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tail.append(Sequential(Linear(in_features, hidden, bias=False),
                                        Linear(hidden, size, bias=False)))

    def reset_parameters(self):
        self.head.reset_parameters()
        for i2h, h2o in self.tail:
            i2h.reset_parameters()
            h2o.reset_parameters()

    def forward(self, input_, target_):
        """(output, loss): each row's log-probability of its target, and their negative mean."""
        if not isinstance(input_, Tensor) or not isinstance(target_, Tensor):
            raise TypeError("AdaptiveLogSoftmaxWithLoss: input and target must be Tensors")
        if target_.data.dtype.kind not in "iu":
            raise TypeError(f"AdaptiveLogSoftmaxWithLoss: target must hold class indices "
                            f"(an integer Tensor), got {target_.dtype}")
        if target_.ndim == 1:
            if input_.shape[0] != target_.shape[0]:
                raise RuntimeError("Input and target should have the same size in the batch "
                                   f"dimension (input {tuple(input_.shape)}, target "
                                   f"{tuple(target_.shape)}).")
            if input_.ndim != 2:
                raise RuntimeError("1D target tensor expects 2D input tensors, but found inputs "
                                   f"with size {tuple(input_.shape)}")
        elif target_.ndim == 0:
            if input_.ndim != 1:
                raise RuntimeError("0D target tensor expects 1D input tensors, but found inputs "
                                   f"with size {tuple(input_.shape)}")
        else:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        batched = target_.ndim > 0
        input = input_ if batched else input_.unsqueeze(0)
        target = np.asarray(target_.numpy()).reshape(-1).astype(np.int64)
        batch = target.shape[0]
        head_index = np.empty(batch, dtype=np.int64)
        bounds = [0] + self.cutoffs
        used, tail_rows, pieces = 0, [], []
        for i in range(len(bounds) - 1):
            rows = np.nonzero((target >= bounds[i]) & (target < bounds[i + 1]))[0]
            if rows.size == 0:
                continue
            if i == 0:
                head_index[rows] = target[rows]
            else:
                cluster = F.log_softmax(self.tail[i - 1](_rows(input, rows)), dim=1)
                local = _index(input, (target[rows] - bounds[i]).reshape(-1, 1))
                pieces.append(cluster.gather(1, local).squeeze(1))
                head_index[rows] = self.shortlist_size + i - 1
                tail_rows.append(rows)
            used += rows.size
        if used != batch:
            raise RuntimeError(f"Target values should be in [0, {self.n_classes - 1}], but "
                               f"values in range [{target.min()}, {target.max()}] were found. ")
        head_logprob = F.log_softmax(self.head(input), dim=1)
        output = head_logprob.gather(1, _index(input, head_index.reshape(-1, 1))).squeeze(1)
        if pieces:  # the tail rows' cluster log-probabilities, put back in batch order
            order = _index(input, np.concatenate(tail_rows))
            output = output + output.new_zeros(batch).index_add(0, order, cat(pieces))
        loss = (-output).mean()
        if not batched:
            output = output.squeeze(0)
        return _ASMoutput(output, loss)

    def _get_full_log_prob(self, input, head_output):
        head_logprob = F.log_softmax(head_output, dim=1)
        parts = [head_logprob[:, :self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster = F.log_softmax(self.tail[i](input), dim=1)
            parts.append(cluster + head_logprob[:, self.shortlist_size + i].unsqueeze(1))
        return cat(parts, dim=1)

    def _check_rows(self, name, input):
        if not isinstance(input, Tensor) or input.ndim != 2:
            raise ValueError(f"AdaptiveLogSoftmaxWithLoss.{name}: expected a 2-D input "
                             f"(N, in_features={self.in_features}), got shape "
                             f"{tuple(getattr(input, 'shape', ()))}")

    def log_prob(self, input):
        """(N, n_classes) log-probabilities of every class."""
        self._check_rows("log_prob", input)
        return self._get_full_log_prob(input, self.head(input))

    def predict(self, input):
        """The most likely class of each row: the head's, where that is a frequent class,
        else the argmax of the full distribution (as torch decides it)."""
        self._check_rows("predict", input)
        head_output = self.head(input)
        output = np.asarray(head_output.argmax(dim=1).numpy())
        outside = output >= self.shortlist_size
        if not outside.any():
            return _index(input, output)
        if outside.all():
            return self._get_full_log_prob(input, head_output).argmax(dim=1)
        rows = np.nonzero(outside)[0]
        full = self._get_full_log_prob(_rows(input, rows), _rows(head_output, rows))
        output[rows] = np.asarray(full.argmax(dim=1).numpy())
        return _index(input, output)
