"""Whole-model entry points: ``quantize_dynamic`` (swap float layers for dynamically
quantized ones), and the stubs that mark where a float model's quantized region begins and
ends (QuantStub, DeQuantStub), as torch.ao.quantization's."""
from __future__ import annotations

import copy
import warnings

from ...nn.module import Module
from ._observed import _check_observed, _unused_functional
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
    """``model`` with its Linear, LSTM and GRU layers replaced by dynamically quantized ones
    (int8 weights, float activations), as torch's. ``qconfig_spec`` picks them: a set of
    module types and/or submodule names (each given the default dynamic qconfig), or a dict
    from those to a qconfig (None: leave it float); a name applies to that submodule and
    everything under it, a type to every module of it, and a module's own ``qconfig``
    attribute wins (torch's propagation). Default: every nn.Linear, nn.LSTM and nn.GRU. A
    name that is no submodule is refused. A copy unless ``inplace``."""
    from ... import nn
    from ..nn.quantized import dynamic as nnqd
    from .qconfig import default_dynamic_qconfig

    if dtype is not qint8:
        raise NotImplementedError(f"quantize_dynamic: only dtype minidl.qint8 is supported, got "
                                  f"{dtype}")
    from ..nn import quantized as nnq

    supported = {nn.Linear: nnqd.Linear, nn.LSTM: nnqd.LSTM, nn.GRU: nnqd.GRU,
                 nn.Embedding: nnq.Embedding, nn.EmbeddingBag: nnq.EmbeddingBag}
    if qconfig_spec is None:  # torch's default set: embeddings need a qconfig of their own
        qconfig_spec = {nn.Linear, nn.LSTM, nn.GRU}
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
    mapping = mapping or supported

    def holds_mapped(module):
        return any(type(m) in mapping for m in module.modules())

    # a type is quantized itself, or through the layers it holds (a container)
    unsupported = [t.__name__ for t in spec if isinstance(t, type) and spec[t] is not None
                   and t not in mapping and not any(holds_mapped(m) for m in model.modules()
                                                    if type(m) is t)]
    if unsupported:
        raise NotImplementedError(f"quantize_dynamic: no dynamic quantized form of {unsupported} "
                                  "here (Linear, LSTM, GRU, Embedding and EmbeddingBag only)")
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
    from ..nn import intrinsic as nni
    from ..nn import qat
    from ..nn.intrinsic import qat as nniqat

    return {nn.Linear: qat.Linear, nn.Conv1d: qat.Conv1d, nn.Conv2d: qat.Conv2d,
            nni.ConvBn1d: nniqat.ConvBn1d, nni.ConvBn2d: nniqat.ConvBn2d,
            nni.ConvBnReLU1d: nniqat.ConvBnReLU1d, nni.ConvBnReLU2d: nniqat.ConvBnReLU2d,
            nni.ConvReLU1d: nniqat.ConvReLU1d, nni.ConvReLU2d: nniqat.ConvReLU2d,
            nni.LinearReLU: nniqat.LinearReLU, nni.LinearBn1d: nniqat.LinearBn1d}


def _static_swaps():
    """convert's default mapping: float, QAT and fused modules -> quantized ones."""
    from ... import nn
    from ..nn import intrinsic as nni
    from ..nn import qat
    from ..nn import quantized as nnq
    from ..nn.intrinsic import qat as nniqat
    from ..nn.intrinsic import quantized as nniq

    return {QuantStub: nnq.Quantize, DeQuantStub: nnq.DeQuantize,
            nn.Linear: nnq.Linear, qat.Linear: nnq.Linear,
            nn.Conv1d: nnq.Conv1d, qat.Conv1d: nnq.Conv1d,
            nn.Conv2d: nnq.Conv2d, qat.Conv2d: nnq.Conv2d,
            nni.ConvReLU1d: nniq.ConvReLU1d, nniqat.ConvReLU1d: nniq.ConvReLU1d,
            nni.ConvReLU2d: nniq.ConvReLU2d, nniqat.ConvReLU2d: nniq.ConvReLU2d,
            nni.LinearReLU: nniq.LinearReLU, nniqat.LinearReLU: nniq.LinearReLU,
            nniqat.LinearBn1d: nnq.Linear,
            nniqat.ConvBn1d: nnq.Conv1d, nniqat.ConvBn2d: nnq.Conv2d,
            nniqat.ConvBnReLU1d: nniq.ConvReLU1d, nniqat.ConvBnReLU2d: nniq.ConvReLU2d,
            nn.ReLU: nnq.ReLU, nn.ReLU6: nnq.ReLU6, nn.Hardswish: nnq.Hardswish,
            nn.LeakyReLU: nnq.LeakyReLU, nn.ELU: nnq.ELU, nn.Dropout: nnq.Dropout,
            nn.BatchNorm2d: nnq.BatchNorm2d, nni.BNReLU2d: nniq.BNReLU2d,
            nn.BatchNorm3d: nnq.BatchNorm3d, nn.Conv3d: nnq.Conv3d,
            nn.Embedding: nnq.Embedding, nn.EmbeddingBag: nnq.EmbeddingBag,
            nn.ConvTranspose1d: nnq.ConvTranspose1d, nn.ConvTranspose2d: nnq.ConvTranspose2d,
            nn.LayerNorm: nnq.LayerNorm, nn.GroupNorm: nnq.GroupNorm,
            nn.InstanceNorm1d: nnq.InstanceNorm1d, nn.InstanceNorm2d: nnq.InstanceNorm2d,
            nnq.FloatFunctional: nnq.QFunctional}


def _unobserved():
    """The mapped modules that need no observer: their output keeps its input's qparams."""
    from ... import nn

    return (DeQuantStub, nn.ReLU, nn.ReLU6, nn.Dropout)


def _observed_modules(model, targets):
    """(dotted name, module) of each submodule whose type is in ``targets`` and that has a
    qconfig, not looking inside them (a fused module's parts are not observed apart)."""
    def walk(module, prefix):
        for name, child in module._modules.items():
            if child is None:
                continue
            path = f"{prefix}{name}"
            if type(child) in targets:
                if getattr(child, "qconfig", None) is not None:
                    yield path, child
            elif name != "activation_post_process":
                yield from walk(child, path + ".")

    yield from walk(model, "")


def _special_act_post_process():
    """torch's fixed-qparams FakeQuantize for the outputs of the functions whose range is
    known, put on them in training mode (QAT)."""
    from ... import nn
    from .fake_quantize import (
        default_fixed_qparams_range_0to1_fake_quant, default_fixed_qparams_range_neg1to1_fake_quant,
    )

    return {nn.Hardsigmoid: default_fixed_qparams_range_0to1_fake_quant,
            nn.Sigmoid: default_fixed_qparams_range_0to1_fake_quant,
            nn.Softmax: default_fixed_qparams_range_0to1_fake_quant,
            nn.Tanh: default_fixed_qparams_range_neg1to1_fake_quant}


def _insert_observers(model, targets):
    from ...nn import Identity
    from ..nn.quantized import FloatFunctional

    special = _special_act_post_process()
    for _, mod in _observed_modules(model, tuple(special)):
        if mod.training and "activation_post_process" not in mod._modules:
            mod.activation_post_process = special[type(mod)]()
            mod.register_forward_hook(_observer_forward_hook)
    for _, mod in _observed_modules(model, targets):
        if isinstance(mod, FloatFunctional):  # its methods call activation_post_process
            if isinstance(mod.activation_post_process, Identity):
                mod.activation_post_process = mod.qconfig.activation()
        elif "activation_post_process" not in mod._modules:
            mod.activation_post_process = mod.qconfig.activation()
            mod.register_forward_hook(_observer_forward_hook)


def _check_fusable_for_ptq(model):
    from ... import nn
    from ..nn import intrinsic as nni
    from .qtensor import per_channel_affine, per_channel_affine_float_qparams, per_channel_symmetric

    for path, mod in model.named_modules():
        qconfig = getattr(mod, "qconfig", None)
        if type(mod) in (nn.ConvTranspose1d, nn.ConvTranspose2d) and qconfig is not None \
                and qconfig.weight().qscheme in (per_channel_affine, per_channel_symmetric,
                                                 per_channel_affine_float_qparams):
            raise AssertionError(f"Per channel weight observer is not supported yet for "
                                 f"ConvTranspose{{n}}d. ({path}: give it a qconfig whose weight "
                                 "observer is per tensor, e.g. default_weight_observer)")
        if type(mod) in (nni.ConvBn1d, nni.ConvBn2d, nni.ConvBnReLU1d, nni.ConvBnReLU2d,
                         nni.LinearBn1d) \
                and getattr(mod, "qconfig", None) is not None:
            raise ValueError(f"prepare: {path} is a {type(mod).__name__}, the fused form for "
                             "quantization-aware training (prepare_qat); for post-training "
                             "quantization fuse it with fuse_modules in eval mode, which folds "
                             "the batch norm into the convolution")


def prepare_qat(model, mapping=None, inplace=False):
    """``model`` ready for quantization-aware training: each nn.Linear, nn.Conv1d/2d and fused
    module (fuse_modules_qat: ConvBn, ConvBnReLU, ConvReLU, LinearReLU) that has a qconfig
    (set on it or on a parent) becomes its QAT form (its weight fake-quantized; a batch norm
    folded into it), and its output, each QuantStub's, Hardswish's and FloatFunctional's get
    a FakeQuantize (``qconfig.activation``). ReLU gets none: max(x, 0) keeps a quantized
    input on its grid. The model must be in training mode, as in torch."""
    if not model.training:
        raise AssertionError("prepare_qat only works on models in training mode; call "
                             "model.train() first")
    from ... import nn
    from ..nn.quantized import FloatFunctional

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
    from ..nn import intrinsic as nni

    _insert_observers(model, tuple(mapping.values()) + (
        QuantStub, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.BatchNorm2d, nni.BNReLU2d, nn.BatchNorm3d,
        nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, FloatFunctional))
    return model


def prepare(model, inplace=False):
    """``model`` ready for post-training calibration: the outputs of each QuantStub,
    nn.Linear, nn.Conv1d/2d, fused ConvReLU/LinearReLU (fuse_modules), Hardswish and
    FloatFunctional that has a qconfig get an observer (``qconfig.activation``); run
    representative data through it, then ``convert``."""
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    _warn_without_qconfig(model)
    _check_fusable_for_ptq(model)
    targets = tuple(k for k in _static_swaps() if k not in _unobserved())
    _insert_observers(model, targets)
    return model


def _is_prepared(mod):
    from ...nn import Identity

    act = mod._modules.get("activation_post_process")
    return act is not None and not isinstance(act, Identity)


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
    ones: QuantStub -> Quantize, Linear / Conv1d / Conv2d (float, QAT, fused with a ReLU or,
    in QAT, a batch norm) -> their quantized forms, ReLU / ReLU6 -> quantized ReLU / ReLU6,
    Hardswish -> quantized Hardswish, FloatFunctional -> QFunctional, DeQuantStub ->
    DeQuantize, each with the scale and zero point its observer or FakeQuantize ended with.
    Modules that were not prepared stay as they are. Every observer is checked to have seen
    data before anything is swapped (RuntimeError naming the module). Call ``module.eval()``
    first, as in torch."""
    if not inplace:
        module = copy.deepcopy(module)
    mapping = mapping or _static_swaps()
    unobserved = _unobserved()
    swaps = []

    def collect(mod, prefix):
        for name, child in mod._modules.items():
            if child is None:
                continue
            target = mapping.get(type(child))
            ready = (getattr(child, "qconfig", None) is not None if type(child) in unobserved
                     else _is_prepared(child))
            if target is not None and ready:
                if type(child) not in unobserved and not _unused_functional(child):
                    _check_observed(child, prefix + name)
                swaps.append((mod, name, target))
            elif name != "activation_post_process":
                collect(child, f"{prefix}{name}.")

    collect(module, "")
    for parent, name, target in swaps:
        parent._modules[name] = target.from_float(parent._modules[name])
    _remove_observers(module)
    return module


def _remove_observers(module):
    """What convert leaves float loses its observer and the hook that ran it (torch's
    ``_remove_activation_post_process``): a QAT Sigmoid's fixed-qparams FakeQuantize, say,
    whose module now runs on quantized tensors."""
    from ..nn.quantized import FloatFunctional
    from ._learnable_fake_quantize import _LearnableFakeQuantize
    from .fake_quantize import FakeQuantize
    from .observer import ObserverBase

    for mod in module.modules():
        act = mod._modules.get("activation_post_process")
        if isinstance(act, (ObserverBase, FakeQuantize, _LearnableFakeQuantize)) \
                and not isinstance(mod, FloatFunctional):  # its methods call it
            del mod._modules["activation_post_process"]
            hooks = mod.__dict__.get("_forward_hooks") or {}
            for key in [k for k, h in hooks.items() if h is _observer_forward_hook]:
                del hooks[key]
