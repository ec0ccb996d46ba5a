"""Whole-model entry points: ``quantize_dynamic`` (swap float layers for dynamically
quantized ones), and the stubs that mark where a float model's quantized region begins and
ends (QuantStub, DeQuantStub), as torch.ao.quantization's."""
from __future__ import annotations

import copy
import warnings

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
    """``model`` with its Linear layers replaced by dynamically quantized ones, as torch's.
    ``qconfig_spec`` picks them: a set of module types and/or submodule names (each given the
    default dynamic qconfig), or a dict from those to a qconfig (None: leave it float); a
    name applies to that submodule and everything under it, a type to every module of it,
    and a module's own ``qconfig`` attribute wins (torch's propagation). Default: every
    nn.Linear. A name that is no submodule is refused. A copy unless ``inplace``."""
    from ... import nn
    from ..nn.quantized import dynamic as nnqd
    from .qconfig import default_dynamic_qconfig

    if dtype is not qint8:
        raise NotImplementedError(f"quantize_dynamic: only dtype minidl.qint8 is supported, got "
                                  f"{dtype}")
    if qconfig_spec is None:
        qconfig_spec = {nn.Linear}
    if isinstance(qconfig_spec, dict):
        spec = dict(qconfig_spec)
    else:
        try:
            spec = dict.fromkeys(qconfig_spec, default_dynamic_qconfig)
        except TypeError:
            raise TypeError(f"quantize_dynamic: qconfig_spec must be a set of module types and "
                            f"submodule names or a dict of them, got "
                            f"{type(qconfig_spec).__name__}") from None
    for key in spec:
        if not (isinstance(key, str) or isinstance(key, type) and issubclass(key, Module)):
            raise TypeError(f"quantize_dynamic: qconfig_spec keys must be module types or "
                            f"submodule names, got {key!r}")
    mapping = mapping or {nn.Linear: nnqd.Linear}

    def holds_mapped(module):
        return any(type(m) in mapping for m in module.modules())

    # a type is quantized itself, or through the Linear layers it holds (a container)
    unsupported = [t.__name__ for t in spec if isinstance(t, type) and spec[t] is not None
                   and t not in mapping and not any(holds_mapped(m) for m in model.modules()
                                                    if type(m) is t)]
    if unsupported:
        raise NotImplementedError(f"quantize_dynamic: no dynamic quantized form of {unsupported} "
                                  "here (Linear only)")
    names = dict(model.named_modules())
    unknown = [k for k in spec if isinstance(k, str) and k not in names]
    if unknown:
        raise ValueError(f"quantize_dynamic: qconfig_spec names {unknown}, which are not "
                         f"submodules of the model (it has {[n for n in names if n]})")
    if not inplace:
        model = copy.deepcopy(model)

    def qconfig_of(module, name, parent):
        qconfig = spec.get(type(module), parent)
        qconfig = spec.get(name, qconfig)
        return module.__dict__.get("qconfig", qconfig)

    def convert(child, qconfig):  # from_float reads the qconfig; the float module keeps its own
        had, old = "qconfig" in child.__dict__, child.__dict__.get("qconfig")
        child.qconfig = qconfig
        try:
            return mapping[type(child)].from_float(child)
        finally:
            if had:
                child.qconfig = old
            else:
                del child.qconfig

    def swap(module, prefix, parent):
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            full = f"{prefix}.{name}" if prefix else name
            qconfig = qconfig_of(child, full, parent)
            if type(child) in mapping and qconfig is not None:
                module._modules[name] = convert(child, qconfig)
            else:
                swap(child, full, qconfig)

    root = qconfig_of(model, "", None)
    if type(model) in mapping:
        return convert(model, root) if root is not None else model
    swap(model, "", root)
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


def _warn_without_qconfig(model):
    """prepare/prepare_qat with no qconfig anywhere change nothing: say so, as torch does."""
    if all(getattr(m, "qconfig", None) is None for m in model.modules()):
        warnings.warn("None of the submodule got qconfig applied. Make sure you passed correct "
                      "configuration through `qconfig_dict` or by assigning the `.qconfig` "
                      "attribute directly on submodules", stacklevel=3)


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
    _warn_without_qconfig(model)
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
    _warn_without_qconfig(model)
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
