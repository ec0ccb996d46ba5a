"""Models: MLP and LeNet-5 for MNIST, torchvision's classification architectures (same module
names and state_dict layout, so converted torchvision weights load), and the weight converter.

``get_model(name, weights=None, **kwargs)`` and ``list_models()`` work as torchvision's."""
from .resnet import (BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101,
                     resnet152, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d,
                     wide_resnet50_2, wide_resnet101_2)
from .small import lenet5, mlp
from .mobilenet import MobileNetV2, MobileNetV3, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from .efficientnet import (EfficientNet, efficientnet_b0, efficientnet_b1, efficientnet_b2,
                           efficientnet_b3, efficientnet_b4, efficientnet_b5, efficientnet_b6,
                           efficientnet_b7, efficientnet_v2_l, efficientnet_v2_m, efficientnet_v2_s)
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from .alexnet import AlexNet, alexnet
from .squeezenet import SqueezeNet, squeezenet1_0, squeezenet1_1
from .densenet import DenseNet, densenet121, densenet161, densenet169, densenet201
from .shufflenetv2 import (ShuffleNetV2, shufflenet_v2_x0_5, shufflenet_v2_x1_0, shufflenet_v2_x1_5,
                           shufflenet_v2_x2_0)
from .vision_transformer import VisionTransformer, vit_b_16, vit_b_32, vit_h_14, vit_l_16, vit_l_32
from .convnext import ConvNeXt, convnext_base, convnext_large, convnext_small, convnext_tiny
from .regnet import (RegNet, regnet_x_1_6gf, regnet_x_3_2gf, regnet_x_8gf, regnet_x_16gf,
                     regnet_x_32gf, regnet_x_400mf, regnet_x_800mf, regnet_y_1_6gf,
                     regnet_y_3_2gf, regnet_y_8gf, regnet_y_16gf, regnet_y_32gf,
                     regnet_y_128gf, regnet_y_400mf, regnet_y_800mf)
from .mnasnet import MNASNet, mnasnet0_5, mnasnet0_75, mnasnet1_0, mnasnet1_3
from .googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from .inception import Inception3, InceptionOutputs, inception_v3
from .swin_transformer import SwinTransformer, swin_b, swin_s, swin_t

__all__ = ["mlp", "lenet5", "ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34",
           "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "get_model", "list_models",
           "get_model_builder", "get_model_weights",
           "MobileNetV2", "MobileNetV3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
           "EfficientNet", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
           "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
           "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
           "AlexNet", "alexnet", "SqueezeNet", "squeezenet1_0", "squeezenet1_1",
           "DenseNet", "densenet121", "densenet161", "densenet169", "densenet201",
           "ConvNeXt", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
           "ShuffleNetV2", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
           "shufflenet_v2_x2_0",
           "VisionTransformer", "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14",
           "RegNet", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf",
           "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf", "regnet_x_400mf", "regnet_x_800mf",
           "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf", "regnet_x_16gf", "regnet_x_32gf",
           "MNASNet", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
           "GoogLeNet", "GoogLeNetOutputs", "googlenet",
           "Inception3", "InceptionOutputs", "inception_v3",
           "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
           "SwinTransformer", "swin_t", "swin_s", "swin_b"]

_BUILDERS = {f.__name__: f for f in (
    resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d,
    resnext101_64x4d, wide_resnet50_2, wide_resnet101_2,
    mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small,
    efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4,
    efficientnet_b5, efficientnet_b6, efficientnet_b7,
    vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn, alexnet,
    squeezenet1_0, squeezenet1_1, densenet121, densenet161, densenet169, densenet201,
    convnext_tiny, convnext_small, convnext_base, convnext_large,
    shufflenet_v2_x0_5, shufflenet_v2_x1_0, shufflenet_v2_x1_5, shufflenet_v2_x2_0,
    vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14,
    regnet_y_400mf, regnet_y_800mf, regnet_y_1_6gf, regnet_y_3_2gf, regnet_y_8gf, regnet_y_16gf,
    regnet_y_32gf, regnet_y_128gf, regnet_x_400mf, regnet_x_800mf, regnet_x_1_6gf, regnet_x_3_2gf,
    regnet_x_8gf, regnet_x_16gf, regnet_x_32gf,
    mnasnet0_5, mnasnet0_75, mnasnet1_0, mnasnet1_3, googlenet, inception_v3,
    efficientnet_v2_s, efficientnet_v2_m, efficientnet_v2_l, swin_t, swin_s, swin_b)}


def list_models(module=None, include=None, exclude=None):
    """The names of the classification architectures, sorted, as torchvision's list_models;
    ``module`` keeps those built in that module (``minidl.models.vgg``), ``include``/``exclude``
    are fnmatch patterns (or lists of them)."""
    import fnmatch

    names = sorted(_BUILDERS)
    if module is not None:
        prefix = getattr(module, "__name__", str(module))
        names = [n for n in names if _BUILDERS[n].__module__ == prefix
                 or _BUILDERS[n].__module__.startswith(prefix + ".")]
    for arg, value in (("include", include), ("exclude", exclude)):
        if value is not None and not isinstance(value, (str, list, tuple, set)):
            raise TypeError(f"list_models: {arg} must be a pattern or a list of patterns, got "
                            f"{type(value).__name__}")
    if include is not None:
        pats = [include] if isinstance(include, str) else list(include)
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in pats)]
    if exclude is not None:
        pats = [exclude] if isinstance(exclude, str) else list(exclude)
        names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in pats)]
    return names


def get_model_builder(name):
    """The builder function of architecture ``name`` (case-insensitive)."""
    key = str(name).lower()
    if key not in _BUILDERS:
        raise ValueError(f"Unknown model {name}; choose one of {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[key]


def get_model(name, weights=None, **config):
    """Build architecture ``name`` with ``weights`` (path, weights name or None) and the
    builder's keyword arguments (``num_classes``, ...), as torchvision.models.get_model."""
    return get_model_builder(name)(weights=weights, **config)


def get_model_weights(name):
    """{weights name: checkpoint file name} of architecture ``name`` (torchvision returns the
    weights enum; minidl has no enums, so the names and files it resolves)."""
    from .weights import WEIGHTS

    get_model_builder(name)
    entry = WEIGHTS.get(str(name).lower())
    return dict(entry["files"]) if entry else {}
