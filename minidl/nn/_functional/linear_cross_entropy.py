"""torch 2.13's linear_cross_entropy: cross entropy of ``linear(input, linear_weight)``,
with a (C, d_1, ..., d_K, in_features) weight for a K-dimensional loss. torch's chunked path
(``options``) computes the same loss without materialising all logits; here ``options`` is
accepted and checked, and the reference computation runs (the same values)."""
from __future__ import annotations

import dataclasses
import math

from ... import functional as _F
from ...tensor import Tensor
from .cross_entropy import cross_entropy


@dataclasses.dataclass(frozen=True)
class LinearCrossEntropyOptions:
    """torch.nn.LinearCrossEntropyOptions: how torch's chunked linear_cross_entropy splits the
    batch. minidl computes the reference form whatever these say; they are kept and checked
    so that code passing them runs unchanged."""
    allow_retain_graph: bool = False
    batch_chunk_size: int | None = None
    chunking_method: str | None = "auto"
    acc_policy: str = "auto"
    acc_dtype: object = None

    def __post_init__(self):
        if self.acc_policy not in {"auto", "accurate", "balanced", "compact"}:
            raise ValueError(f"invalid acc_policy: {self.acc_policy!r}")
        method = self.chunking_method
        if method is not None and method != "auto":
            name, sep, factor = method.partition(":")
            if name != "aspect_ratio" or (sep and not (factor.isdigit() and int(factor) >= 1)):
                raise ValueError(f"invalid chunking_method: {method!r}")
        if self.batch_chunk_size is not None and (
                isinstance(self.batch_chunk_size, bool) or not isinstance(self.batch_chunk_size,
                                                                          int)
                or self.batch_chunk_size < 1):
            raise ValueError(f"batch_chunk_size must be a positive int or None, got "
                             f"{self.batch_chunk_size!r}")


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         reduction="mean", ignore_index=None, label_smoothing=0.0,
                         options=None):
    """cross_entropy(linear(input, linear_weight, linear_bias) reshaped to (N, C, d_1, ...,
    d_K), target, ...): input (in_features) or (N, in_features); target class indices (),
    (N) or (N, d_1, ..., d_K), or class probabilities shaped as the logits."""
    for what, t in (("input", input), ("linear_weight", linear_weight), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"linear_cross_entropy: {what} must be a Tensor, got "
                            f"{type(t).__name__}")
    if options is not None and not isinstance(options, LinearCrossEntropyOptions):
        raise TypeError(f"linear_cross_entropy: options must be a LinearCrossEntropyOptions or "
                        f"None, got {type(options).__name__}")
    if input.ndim < 1 or input.ndim > 2:
        raise ValueError(f"expected input with dimensionality 1 or 2, got {input.ndim}")
    if linear_weight.ndim < 2:
        raise ValueError(f"expected linear_weight with dimensionality at least 2, got "
                         f"{linear_weight.ndim}")
    batch = tuple(input.shape[:-1])
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise ValueError("expected equal input and linear_weight last dimensions (in_features), "
                         f"got {in_features} and {linear_weight.shape[-1]}, respectively")
    classes = linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (classes,) + out_features:
        raise ValueError(f"expected linear_bias shape {(classes,) + out_features}, got "
                         f"{tuple(linear_bias.shape)}")
    if out_features and not batch:
        raise ValueError(f"K-dimensional loss defined by linear_weight shape "
                         f"{tuple(linear_weight.shape)} requires batched input, "
                         f"(N, {in_features}), got unbatched input with shape "
                         f"{tuple(input.shape)}")
    logits_shape = batch + (classes,) + out_features
    probabilities = tuple(target.shape) == logits_shape
    if probabilities and ignore_index is not None:
        raise ValueError("ignore_index cannot be specified when target contains probabilities")
    ignore_index = -100 if ignore_index is None else ignore_index
    size = math.prod(out_features) * classes
    w = linear_weight.reshape(size, in_features)
    b = None if linear_bias is None else linear_bias.reshape(size)
    logits = _F.linear(input, w, b).reshape(logits_shape)
    return cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)
