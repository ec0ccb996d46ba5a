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


def _observer_forward_hook(module, args, output):
    return module.activation_post_process(output)


def propagate_qconfig_(module, qconfig_dict=None):
    """Give each submodule a ``qconfig``: its own, else its parent's (as torch's)."""
    def visit(mod, parent_qconfig):
        qconfig = mod.__dict__.get("qconfig", parent_qconfig)
        if qconfig is not None or "qconfig" in mod.__dict__:
            mod.qconfig = qconfig
        for child in mod._modules.values():
            if child is not None:
                visit(child, qconfig)

    visit(module, getattr(module, "qconfig", None))


def _qat_swaps():
    from ... import nn
    from ..nn import qat

    return {nn.Linear: qat.Linear}


def prepare_qat(model, mapping=None, inplace=False):
    """``model`` ready for quantization-aware training: each nn.Linear that has a qconfig
    (set on it or on a parent) becomes a qat.Linear (its weight fake-quantized), and its
    output and each QuantStub's get a FakeQuantize (``qconfig.activation``), run by a
    forward hook. ReLU gets none: max(x, 0) keeps a quantized input on its grid. The model
    must be in training mode, as in torch."""
    if not model.training:
        raise AssertionError("prepare_qat only works on models in training mode; call "
                             "model.train() first")
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    mapping = mapping or _qat_swaps()

    def swap(module):
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            if type(child) in mapping and getattr(child, "qconfig", None) is not None:
                module._modules[name] = mapping[type(child)].from_float(child)
            else:
                swap(child)

    swap(model)
    targets = tuple(mapping.values()) + (QuantStub,)
    for mod in model.modules():
        if (type(mod) in targets and getattr(mod, "qconfig", None) is not None
                and "activation_post_process" not in mod._modules):
            mod.activation_post_process = mod.qconfig.activation()
            mod.register_forward_hook(_observer_forward_hook)
    return model


def prepare(model, inplace=False):
    """``model`` ready for post-training calibration: the outputs of each QuantStub and
    nn.Linear that has a qconfig get an observer (``qconfig.activation``), run by a forward
    hook; run representative data through it, then ``convert``."""
    from ... import nn

    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    for mod in model.modules():
        if (type(mod) in (nn.Linear, QuantStub) and getattr(mod, "qconfig", None) is not None
                and "activation_post_process" not in mod._modules):
            mod.activation_post_process = mod.qconfig.activation()
            mod.register_forward_hook(_observer_forward_hook)
    return model


def quantize(model, run_fn, run_args, mapping=None, inplace=False):
    """Post-training static quantization in one call: prepare, ``run_fn(model, *run_args)``
    to calibrate, convert."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    prepare(model, inplace=True)
    run_fn(model, *run_args)
    return convert(model, mapping, inplace=True)


def convert(module, mapping=None, inplace=False):
    """The prepared (calibrated or trained) ``module`` with its modules swapped for quantized
    ones: QuantStub -> Quantize, qat.Linear or observed nn.Linear -> quantized Linear,
    ReLU -> quantized ReLU,
    DeQuantStub -> DeQuantize, each with the scale and zero point its FakeQuantize ended
    with. Call ``module.eval()`` first, as in torch."""
    from ... import nn
    from ..nn import qat
    from ..nn import quantized as nnq

    if not inplace:
        module = copy.deepcopy(module)
    mapping = mapping or {QuantStub: nnq.Quantize, DeQuantStub: nnq.DeQuantize,
                          qat.Linear: nnq.Linear, nn.Linear: nnq.Linear, nn.ReLU: nnq.ReLU}
    observed = (QuantStub, qat.Linear, nn.Linear)  # converted only where prepared

    def swap(mod):
        for name, child in list(mod._modules.items()):
            if child is None:
                continue
            target = mapping.get(type(child))
            if target is not None and (type(child) not in observed
                                       or "activation_post_process" in child._modules):
                mod._modules[name] = target.from_float(child)
            else:
                swap(child)

    swap(module)
    return module
