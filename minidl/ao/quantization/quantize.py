"""Whole-model entry points: ``quantize_dynamic`` (swap float layers for dynamically
quantized ones), and the stubs that mark where a float model's quantized region begins and
ends (QuantStub, DeQuantStub), as torch.ao.quantization's."""
from __future__ import annotations

import copy

from ...nn.module import Module
from .qtensor import qint8


class QuantStub(Module):
    """Where quantization begins: an observer point while preparing, a Quantize after convert;
    the identity in a float model."""

    def __init__(self, qconfig=None):
        super().__init__()
        if qconfig is not None:
            self.qconfig = qconfig

    def forward(self, x):
        return x


class DeQuantStub(QuantStub):
    """Where quantization ends: a DeQuantize after convert; the identity in a float model."""


def quantize_dynamic(model, qconfig_spec=None, dtype=qint8, mapping=None, inplace=False):
    """``model`` with each of its submodules whose type is in ``qconfig_spec`` (a set of types;
    default {nn.Linear}) replaced by its dynamically quantized form (only Linear -> int8 here).
    A copy unless ``inplace``."""
    from ... import nn
    from ..nn.quantized import dynamic as nnqd

    if dtype is not qint8:
        raise NotImplementedError(f"quantize_dynamic: only dtype minidl.qint8 is supported, got "
                                  f"{dtype}")
    if qconfig_spec is None:
        qconfig_spec = {nn.Linear}
    if isinstance(qconfig_spec, dict):
        raise NotImplementedError("quantize_dynamic: a dict qconfig_spec is not supported; pass "
                                  "a set of module types")
    types = tuple(t for t in qconfig_spec if isinstance(t, type))
    unsupported = [t.__name__ for t in types if not issubclass(t, nn.Linear)]
    if unsupported:
        raise NotImplementedError(f"quantize_dynamic: no dynamic quantized form of {unsupported} "
                                  "here (Linear only)")
    mapping = mapping or {nn.Linear: nnqd.Linear}
    if not inplace:
        model = copy.deepcopy(model)

    def swap(module):
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            if type(child) in types and type(child) in mapping:
                module._modules[name] = mapping[type(child)].from_float(child)
            else:
                swap(child)

    if type(model) in types:
        return mapping[type(model)].from_float(model)
    swap(model)
    return model
