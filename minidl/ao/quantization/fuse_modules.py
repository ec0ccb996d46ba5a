"""``fuse_modules`` / ``fuse_modules_qat``: merge runs of modules (conv, batch norm, ReLU;
linear, ReLU) into the fused modules of ``minidl.ao.nn.intrinsic``, as torch's. The first
name of each list gets the fused module, the others an ``nn.Identity``.

For post-training quantization (``fuse_modules``, eval mode) a batch norm is folded into the
convolution before it (``nn.utils.fuse_conv_bn_eval``: its running statistics scale the
weight and shift the bias), so ``conv, bn, relu`` becomes a ConvReLU2d of the folded conv.
For QAT (``fuse_modules_qat``) they stay apart in a ConvBn2d / ConvBnReLU2d, which
``prepare_qat`` turns into the QAT module that trains the batch norm with the fake-quantized
folded weight."""
from __future__ import annotations

import copy


def _fusers(is_qat):
    from ... import nn
    from ...nn import _fusion as fusion
    from ..nn import intrinsic as nni

    def conv_bn(conv, bn, relu=None):
        fused_cls = {(nn.Conv1d, False): nni.ConvBn1d, (nn.Conv2d, False): nni.ConvBn2d,
                     (nn.Conv1d, True): nni.ConvBnReLU1d, (nn.Conv2d, True): nni.ConvBnReLU2d}
        if conv.training != bn.training:
            raise AssertionError("fuse_modules: Conv and BN both must be in the same mode (train "
                                 "or eval)")
        if is_qat:
            if bn.num_features != conv.out_channels:
                raise AssertionError(f"fuse_modules_qat: the batch norm has {bn.num_features} "
                                     f"features, the conv {conv.out_channels} output channels")
            if not (bn.affine and bn.track_running_stats):
                raise AssertionError("fuse_modules_qat: only an affine batch norm that tracks "
                                     "running statistics is supported")
            parts = (conv, bn) if relu is None else (conv, bn, relu)
            return fused_cls[(type(conv), relu is not None)](*parts)
        fused = fusion.fuse_conv_bn_eval(conv, bn)
        if relu is None:
            return fused
        return (nni.ConvReLU1d if type(conv) is nn.Conv1d else nni.ConvReLU2d)(fused, relu)

    def linear_bn(linear, bn):
        return fuse_linear_bn(is_qat, linear, bn)

    return {
        (nn.Conv1d, nn.BatchNorm1d): conv_bn,
        (nn.Conv2d, nn.BatchNorm2d): conv_bn,
        (nn.Conv1d, nn.BatchNorm1d, nn.ReLU): conv_bn,
        (nn.Conv2d, nn.BatchNorm2d, nn.ReLU): conv_bn,
        (nn.Conv1d, nn.ReLU): nni.ConvReLU1d,
        (nn.Conv2d, nn.ReLU): nni.ConvReLU2d,
        (nn.Linear, nn.ReLU): nni.LinearReLU,
        (nn.Linear, nn.BatchNorm1d): linear_bn,
        (nn.BatchNorm2d, nn.ReLU): nni.BNReLU2d,
        (nn.ConvTranspose1d, nn.BatchNorm1d): lambda c, b: fuse_convtranspose_bn(is_qat, c, b),
        (nn.ConvTranspose2d, nn.BatchNorm2d): lambda c, b: fuse_convtranspose_bn(is_qat, c, b),
    }


def fuse_linear_bn(is_qat, linear, bn):
    """Linear + BatchNorm1d, as torch's fuser method: for QAT a fused ``LinearBn1d`` (the two
    kept apart, for ``prepare_qat``); otherwise (eval mode) the Linear with the batch norm's
    running statistics folded into its weight and bias."""
    from ...nn import _fusion as fusion
    from ..nn import intrinsic as nni

    if linear.training != bn.training:
        raise AssertionError("Linear and BN both must be in the same mode (train or eval).")
    if is_qat:
        if bn.num_features != linear.out_features:
            raise AssertionError(f"fuse_linear_bn: the batch norm has {bn.num_features} "
                                 f"features, the Linear {linear.out_features} outputs "
                                 "(Output features of Linear must match num_features of "
                                 "BatchNorm1d)")
        if not bn.affine:
            raise AssertionError("Only support fusing BatchNorm1d with affine set to True")
        if not bn.track_running_stats:
            raise AssertionError("Only support fusing BatchNorm1d with tracking_running_stats "
                                 "set to True")
        return nni.LinearBn1d(linear, bn)
    return fusion.fuse_linear_bn_eval(linear, bn)


def fuse_convtranspose_bn(is_qat, convt, bn):
    """ConvTranspose + BatchNorm, as torch's fuser method: eval mode only (the batch norm
    folded into the transposed convolution's output channels, dim 1 of its weight)."""
    from ...nn import _fusion as fusion

    if convt.training != bn.training:
        raise AssertionError("ConvTranspose and BN both must be in the same mode (train or "
                             "eval).")
    if is_qat:
        raise NotImplementedError("Fusing ConvTranspose+BatchNorm not yet supported in QAT.")
    return fusion.fuse_conv_bn_eval(convt, bn, transpose=True)


def fuse_conv_bn(is_qat, conv, bn):
    """Conv + BatchNorm, as torch's fuser method: a fused ConvBn for QAT, else the conv
    with the batch norm folded in (eval mode)."""
    return _fusers(is_qat)[(type(conv), type(bn))](conv, bn)


def fuse_conv_bn_relu(is_qat, conv, bn, relu):
    """Conv + BatchNorm + ReLU, as torch's fuser method: a fused ConvBnReLU for QAT, else a
    ConvReLU of the folded conv (eval mode)."""
    return _fusers(is_qat)[(type(conv), type(bn), type(relu))](conv, bn, relu)


def _get(model, name, who):
    mod = model
    for part in name.split("."):
        child = mod._modules.get(part) if hasattr(mod, "_modules") else None
        if child is None:
            raise AttributeError(f"{who}: the model has no submodule {name!r} (no {part!r} in "
                                 f"{type(mod).__name__})")
        mod = child
    return mod


def _set(model, name, value):
    *path, last = name.split(".")
    mod = model
    for part in path:
        mod = mod._modules[part]
    mod._modules[last] = value


def _move_hooks(mods, fused):
    """As torch's: the first module's forward pre-hooks and the last one's forward hooks now
    run on the fused module (in their order), and leave the modules they were on. A batch
    norm folded in eval mode gives a copy of the conv or Linear, which has its hooks already:
    those copies are dropped, so that each hook runs once (torch keeps them: they run twice)."""
    for store, source, register in (
            ("_forward_pre_hooks", mods[0], fused.register_forward_pre_hook),
            ("_forward_hooks", mods[-1], fused.register_forward_hook)):
        hooks = source.__dict__.get(store)
        if not hooks:
            continue
        moved = list(hooks.values())
        hooks.clear()
        for part in fused.modules():  # copies of the source inside the fused module
            theirs = part.__dict__.get(store)
            for key in [k for k, h in (theirs or {}).items() if any(h is m for m in moved)]:
                del theirs[key]
        for hook in moved:
            register(hook)


def _fuse(model, modules_to_fuse, is_qat, inplace, who):
    from ... import nn

    if not modules_to_fuse:
        raise ValueError(f"{who}: modules_to_fuse is empty")
    if all(isinstance(m, str) for m in modules_to_fuse):
        modules_to_fuse = [modules_to_fuse]
    groups = [list(g) for g in modules_to_fuse]
    seen = set()
    for g in groups:
        if not all(isinstance(n, str) for n in g):
            raise TypeError(f"{who}: expected lists of submodule names, got {g!r}")
        for n in g:
            if n in seen:
                raise ValueError(f"{who}: {n!r} is in more than one list of modules to fuse")
            seen.add(n)
    if not inplace:
        model = copy.deepcopy(model)
    fusers = _fusers(is_qat)
    plan = []  # every group is checked and fused before the model changes
    for g in groups:
        mods = [_get(model, n, who) for n in g]
        types = tuple(type(m) for m in mods)
        fuser = fusers.get(types)
        if fuser is None:
            supported = ", ".join("(" + ", ".join(t.__name__ for t in k) + ")" for k in fusers)
            raise NotImplementedError(f"{who}: cannot fuse modules {g} of types "
                                      f"({', '.join(t.__name__ for t in types)}); supported: "
                                      f"{supported}")
        plan.append((g, mods, fuser(*mods), mods[0].training))
    for g, mods, fused, training in plan:
        _move_hooks(mods, fused)
        _set(model, g[0], fused)
        for n in g[1:]:
            identity = nn.Identity()
            identity.training = training
            _set(model, n, identity)
    return model


def fuse_modules(model, modules_to_fuse, inplace=False, fuser_func=None,
                 fuse_custom_config_dict=None):
    """Fuse each list of submodule names in ``modules_to_fuse`` (or the one list) for
    post-training quantization: (Conv, BN), (Conv, BN, ReLU), (Conv, ReLU), (Linear, ReLU),
    (Linear, BN); the model must be in eval mode where a batch norm is folded. A copy unless
    ``inplace``; nothing is changed when a list does not fit."""
    if fuser_func is not None or fuse_custom_config_dict is not None:
        raise NotImplementedError("fuse_modules: fuser_func and fuse_custom_config_dict are not "
                                  "supported here")
    return _fuse(model, modules_to_fuse, False, inplace, "fuse_modules")


def fuse_modules_qat(model, modules_to_fuse, inplace=False, fuser_func=None,
                     fuse_custom_config_dict=None):
    """``fuse_modules`` for quantization-aware training: (Conv, BN) and (Conv, BN, ReLU) stay
    apart inside ConvBn / ConvBnReLU modules (for ``prepare_qat``)."""
    if fuser_func is not None or fuse_custom_config_dict is not None:
        raise NotImplementedError("fuse_modules_qat: fuser_func and fuse_custom_config_dict are "
                                  "not supported here")
    return _fuse(model, modules_to_fuse, True, inplace, "fuse_modules_qat")
