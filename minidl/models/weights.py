"""Where model weights come from: a file path, or torchvision's names for its cached files.

Every builder (``resnet50(weights=...)``, ``mobilenet_v2(weights=...)``, ...) takes a
torchvision ``.pth``, a converted ``.npz``, a ``.safetensors`` file with torchvision's parameter
names, or one of torchvision's weights names for that architecture: ``"IMAGENET1K_V1"``,
``"IMAGENET1K_V2"``, ``"DEFAULT"`` (torchvision's best), or the enum's spelling
``"ResNet50_Weights.IMAGENET1K_V2"``. minidl downloads nothing: a name is looked up where
torchvision keeps the files it downloaded, ``$TORCH_HOME/hub/checkpoints`` (``TORCH_HOME``
defaults to ``~/.cache/torch``, or ``$XDG_CACHE_HOME/torch`` when that is set, as in torch.hub).
"""
from __future__ import annotations

import os
import re
import sys

__all__ = ["PRETRAINED", "WEIGHTS", "torch_home", "checkpoints_dir", "find_pretrained",
           "is_pretrained_name", "resolve_weights_path", "weight_names"]

_URL = "https://download.pytorch.org/models/"


def _w(title, enum, files, default=None):
    return {"title": title, "enum": enum, "files": files,
            "default": default or max(files)}  # torchvision's DEFAULT is its best (latest) weights


# arch -> torchvision's weights enum, its members' file names (the 8 hex digits are the start
# of the file's sha256) and which member DEFAULT names.
WEIGHTS = {
    "resnet18": _w("ResNet-18", "ResNet18_Weights", {"IMAGENET1K_V1": "resnet18-f37072fd.pth"}),
    "resnet34": _w("ResNet-34", "ResNet34_Weights", {"IMAGENET1K_V1": "resnet34-b627a593.pth"}),
    "resnet50": _w("ResNet-50", "ResNet50_Weights", {"IMAGENET1K_V1": "resnet50-0676ba61.pth",
                                                     "IMAGENET1K_V2": "resnet50-11ad3fa6.pth"}),
    "resnet101": _w("ResNet-101", "ResNet101_Weights", {"IMAGENET1K_V1": "resnet101-63fe2227.pth",
                                                        "IMAGENET1K_V2": "resnet101-cd907fc2.pth"}),
    "resnet152": _w("ResNet-152", "ResNet152_Weights", {"IMAGENET1K_V1": "resnet152-394f9c45.pth",
                                                        "IMAGENET1K_V2": "resnet152-f82ba261.pth"}),
    "resnext50_32x4d": _w("ResNeXt-50 32x4d", "ResNeXt50_32X4D_Weights",
                          {"IMAGENET1K_V1": "resnext50_32x4d-7cdf4587.pth",
                           "IMAGENET1K_V2": "resnext50_32x4d-1a0047aa.pth"}),
    "resnext101_32x8d": _w("ResNeXt-101 32x8d", "ResNeXt101_32X8D_Weights",
                           {"IMAGENET1K_V1": "resnext101_32x8d-8ba56ff5.pth",
                            "IMAGENET1K_V2": "resnext101_32x8d-110c445d.pth"}),
    "resnext101_64x4d": _w("ResNeXt-101 64x4d", "ResNeXt101_64X4D_Weights",
                           {"IMAGENET1K_V1": "resnext101_64x4d-173b62eb.pth"}),
    "wide_resnet50_2": _w("Wide ResNet-50-2", "Wide_ResNet50_2_Weights",
                          {"IMAGENET1K_V1": "wide_resnet50_2-95faca4d.pth",
                           "IMAGENET1K_V2": "wide_resnet50_2-9ba9bcbe.pth"}),
    "wide_resnet101_2": _w("Wide ResNet-101-2", "Wide_ResNet101_2_Weights",
                           {"IMAGENET1K_V1": "wide_resnet101_2-32ee1156.pth",
                            "IMAGENET1K_V2": "wide_resnet101_2-d733dc28.pth"}),
    "mobilenet_v2": _w("MobileNetV2", "MobileNet_V2_Weights",
                       {"IMAGENET1K_V1": "mobilenet_v2-b0353104.pth",
                        "IMAGENET1K_V2": "mobilenet_v2-7ebf99e0.pth"}),
    "mobilenet_v3_large": _w("MobileNetV3-Large", "MobileNet_V3_Large_Weights",
                             {"IMAGENET1K_V1": "mobilenet_v3_large-8738ca79.pth",
                              "IMAGENET1K_V2": "mobilenet_v3_large-5c1a4163.pth"}),
    "mobilenet_v3_small": _w("MobileNetV3-Small", "MobileNet_V3_Small_Weights",
                             {"IMAGENET1K_V1": "mobilenet_v3_small-047dcff4.pth"}),
    "efficientnet_b0": _w("EfficientNet-B0", "EfficientNet_B0_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b0_rwightman-7f5810bc.pth"}),
    "efficientnet_b1": _w("EfficientNet-B1", "EfficientNet_B1_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b1_rwightman-bac287d4.pth",
                           "IMAGENET1K_V2": "efficientnet_b1-c27df63c.pth"}),
    "efficientnet_b2": _w("EfficientNet-B2", "EfficientNet_B2_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b2_rwightman-c35c1473.pth"}),
    "efficientnet_b3": _w("EfficientNet-B3", "EfficientNet_B3_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b3_rwightman-b3899882.pth"}),
    "efficientnet_b4": _w("EfficientNet-B4", "EfficientNet_B4_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b4_rwightman-23ab8bcd.pth"}),
    "efficientnet_b5": _w("EfficientNet-B5", "EfficientNet_B5_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b5_lukemelas-1a07897c.pth"}),
    "efficientnet_b6": _w("EfficientNet-B6", "EfficientNet_B6_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b6_lukemelas-24a108a5.pth"}),
    "efficientnet_b7": _w("EfficientNet-B7", "EfficientNet_B7_Weights",
                          {"IMAGENET1K_V1": "efficientnet_b7_lukemelas-c5b4e57e.pth"}),
    "vgg11": _w("VGG-11", "VGG11_Weights", {"IMAGENET1K_V1": "vgg11-8a719046.pth"}),
    "vgg11_bn": _w("VGG-11-BN", "VGG11_BN_Weights", {"IMAGENET1K_V1": "vgg11_bn-6002323d.pth"}),
    "vgg13": _w("VGG-13", "VGG13_Weights", {"IMAGENET1K_V1": "vgg13-19584684.pth"}),
    "vgg13_bn": _w("VGG-13-BN", "VGG13_BN_Weights", {"IMAGENET1K_V1": "vgg13_bn-abd245e5.pth"}),
    # IMAGENET1K_FEATURES: the SSD authors' features; its classifier holds NaNs (torchvision's note)
    "vgg16": _w("VGG-16", "VGG16_Weights", {"IMAGENET1K_V1": "vgg16-397923af.pth",
                                            "IMAGENET1K_FEATURES": "vgg16_features-amdegroot-88682ab5.pth"},
                default="IMAGENET1K_V1"),
    "vgg16_bn": _w("VGG-16-BN", "VGG16_BN_Weights", {"IMAGENET1K_V1": "vgg16_bn-6c64b313.pth"}),
    "vgg19": _w("VGG-19", "VGG19_Weights", {"IMAGENET1K_V1": "vgg19-dcbb9e9d.pth"}),
    "vgg19_bn": _w("VGG-19-BN", "VGG19_BN_Weights", {"IMAGENET1K_V1": "vgg19_bn-c79401a0.pth"}),
    "alexnet": _w("AlexNet", "AlexNet_Weights", {"IMAGENET1K_V1": "alexnet-owt-7be5be79.pth"}),
    "squeezenet1_0": _w("SqueezeNet 1.0", "SqueezeNet1_0_Weights",
                        {"IMAGENET1K_V1": "squeezenet1_0-b66bff10.pth"}),
    "squeezenet1_1": _w("SqueezeNet 1.1", "SqueezeNet1_1_Weights",
                        {"IMAGENET1K_V1": "squeezenet1_1-b8a52dc0.pth"}),
    "densenet121": _w("DenseNet-121", "DenseNet121_Weights",
                      {"IMAGENET1K_V1": "densenet121-a639ec97.pth"}),
    "densenet161": _w("DenseNet-161", "DenseNet161_Weights",
                      {"IMAGENET1K_V1": "densenet161-8d451a50.pth"}),
    "densenet169": _w("DenseNet-169", "DenseNet169_Weights",
                      {"IMAGENET1K_V1": "densenet169-b2777c0a.pth"}),
    "densenet201": _w("DenseNet-201", "DenseNet201_Weights",
                      {"IMAGENET1K_V1": "densenet201-c1103571.pth"}),
    "convnext_tiny": _w("ConvNeXt-Tiny", "ConvNeXt_Tiny_Weights",
                        {"IMAGENET1K_V1": "convnext_tiny-983f1562.pth"}),
    "convnext_small": _w("ConvNeXt-Small", "ConvNeXt_Small_Weights",
                         {"IMAGENET1K_V1": "convnext_small-0c510722.pth"}),
    "shufflenet_v2_x0_5": _w("ShuffleNetV2 x0.5", "ShuffleNet_V2_X0_5_Weights",
                             {"IMAGENET1K_V1": "shufflenetv2_x0.5-f707e7126e.pth"}),
    "shufflenet_v2_x1_0": _w("ShuffleNetV2 x1.0", "ShuffleNet_V2_X1_0_Weights",
                             {"IMAGENET1K_V1": "shufflenetv2_x1-5666bf0f80.pth"}),
    "shufflenet_v2_x1_5": _w("ShuffleNetV2 x1.5", "ShuffleNet_V2_X1_5_Weights",
                             {"IMAGENET1K_V1": "shufflenetv2_x1_5-3c479a10.pth"}),
    "shufflenet_v2_x2_0": _w("ShuffleNetV2 x2.0", "ShuffleNet_V2_X2_0_Weights",
                             {"IMAGENET1K_V1": "shufflenetv2_x2_0-8be3c8ee.pth"}),
    "vit_b_16": _w("ViT-B/16", "ViT_B_16_Weights",
                   {"IMAGENET1K_V1": "vit_b_16-c867db91.pth",
                    "IMAGENET1K_SWAG_E2E_V1": "vit_b_16_swag-9ac1b537.pth",
                    "IMAGENET1K_SWAG_LINEAR_V1": "vit_b_16_lc_swag-4e70ced5.pth"},
                   default="IMAGENET1K_V1"),
    "vit_b_32": _w("ViT-B/32", "ViT_B_32_Weights", {"IMAGENET1K_V1": "vit_b_32-d86f8d99.pth"}),
    "vit_l_16": _w("ViT-L/16", "ViT_L_16_Weights",
                   {"IMAGENET1K_V1": "vit_l_16-852ce7e3.pth",
                    "IMAGENET1K_SWAG_E2E_V1": "vit_l_16_swag-4f3808c9.pth",
                    "IMAGENET1K_SWAG_LINEAR_V1": "vit_l_16_lc_swag-4d563306.pth"},
                   default="IMAGENET1K_V1"),
    "vit_l_32": _w("ViT-L/32", "ViT_L_32_Weights", {"IMAGENET1K_V1": "vit_l_32-c7638314.pth"}),
    "vit_h_14": _w("ViT-H/14", "ViT_H_14_Weights",
                   {"IMAGENET1K_SWAG_E2E_V1": "vit_h_14_swag-80465313.pth",
                    "IMAGENET1K_SWAG_LINEAR_V1": "vit_h_14_lc_swag-c1eb923e.pth"},
                   default="IMAGENET1K_SWAG_E2E_V1"),
    "convnext_base": _w("ConvNeXt-Base", "ConvNeXt_Base_Weights",
                        {"IMAGENET1K_V1": "convnext_base-6075fbad.pth"}),
    "convnext_large": _w("ConvNeXt-Large", "ConvNeXt_Large_Weights",
                         {"IMAGENET1K_V1": "convnext_large-ea097f82.pth"}),
    # RegNet: DEFAULT is IMAGENET1K_V2 (SWAG_E2E for the 128GF, which has only SWAG weights)
    "regnet_y_400mf": _w("RegNetY-400MF", "RegNet_Y_400MF_Weights",
                         {"IMAGENET1K_V1": "regnet_y_400mf-c65dace8.pth",
                          "IMAGENET1K_V2": "regnet_y_400mf-e6988f5f.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_y_800mf": _w("RegNetY-800MF", "RegNet_Y_800MF_Weights",
                         {"IMAGENET1K_V1": "regnet_y_800mf-1b27b58c.pth",
                          "IMAGENET1K_V2": "regnet_y_800mf-58fc7688.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_y_1_6gf": _w("RegNetY-1.6GF", "RegNet_Y_1_6GF_Weights",
                         {"IMAGENET1K_V1": "regnet_y_1_6gf-b11a554e.pth",
                          "IMAGENET1K_V2": "regnet_y_1_6gf-0d7bc02a.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_y_3_2gf": _w("RegNetY-3.2GF", "RegNet_Y_3_2GF_Weights",
                         {"IMAGENET1K_V1": "regnet_y_3_2gf-b5a9779c.pth",
                          "IMAGENET1K_V2": "regnet_y_3_2gf-9180c971.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_y_8gf": _w("RegNetY-8GF", "RegNet_Y_8GF_Weights",
                       {"IMAGENET1K_V1": "regnet_y_8gf-d0d0e4a8.pth",
                        "IMAGENET1K_V2": "regnet_y_8gf-dc2b1b54.pth"},
                       default="IMAGENET1K_V2"),
    "regnet_y_16gf": _w("RegNetY-16GF", "RegNet_Y_16GF_Weights",
                        {"IMAGENET1K_V1": "regnet_y_16gf-9e6ed7dd.pth",
                         "IMAGENET1K_V2": "regnet_y_16gf-3e4a00f9.pth",
                         "IMAGENET1K_SWAG_E2E_V1": "regnet_y_16gf_swag-43afe44d.pth",
                         "IMAGENET1K_SWAG_LINEAR_V1": "regnet_y_16gf_lc_swag-f3ec0043.pth"},
                        default="IMAGENET1K_V2"),
    "regnet_y_32gf": _w("RegNetY-32GF", "RegNet_Y_32GF_Weights",
                        {"IMAGENET1K_V1": "regnet_y_32gf-4dee3f7a.pth",
                         "IMAGENET1K_V2": "regnet_y_32gf-8db6d4b5.pth",
                         "IMAGENET1K_SWAG_E2E_V1": "regnet_y_32gf_swag-04fdfa75.pth",
                         "IMAGENET1K_SWAG_LINEAR_V1": "regnet_y_32gf_lc_swag-e1583746.pth"},
                        default="IMAGENET1K_V2"),
    "regnet_y_128gf": _w("RegNetY-128GF", "RegNet_Y_128GF_Weights",
                         {"IMAGENET1K_SWAG_E2E_V1": "regnet_y_128gf_swag-c8ce3e52.pth",
                          "IMAGENET1K_SWAG_LINEAR_V1": "regnet_y_128gf_lc_swag-cbe8ce12.pth"},
                         default="IMAGENET1K_SWAG_E2E_V1"),
    "regnet_x_400mf": _w("RegNetX-400MF", "RegNet_X_400MF_Weights",
                         {"IMAGENET1K_V1": "regnet_x_400mf-adf1edd5.pth",
                          "IMAGENET1K_V2": "regnet_x_400mf-62229a5f.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_x_800mf": _w("RegNetX-800MF", "RegNet_X_800MF_Weights",
                         {"IMAGENET1K_V1": "regnet_x_800mf-ad17e45c.pth",
                          "IMAGENET1K_V2": "regnet_x_800mf-94a99ebd.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_x_1_6gf": _w("RegNetX-1.6GF", "RegNet_X_1_6GF_Weights",
                         {"IMAGENET1K_V1": "regnet_x_1_6gf-e3633e7f.pth",
                          "IMAGENET1K_V2": "regnet_x_1_6gf-a12f2b72.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_x_3_2gf": _w("RegNetX-3.2GF", "RegNet_X_3_2GF_Weights",
                         {"IMAGENET1K_V1": "regnet_x_3_2gf-f342aeae.pth",
                          "IMAGENET1K_V2": "regnet_x_3_2gf-7071aa85.pth"},
                         default="IMAGENET1K_V2"),
    "regnet_x_8gf": _w("RegNetX-8GF", "RegNet_X_8GF_Weights",
                       {"IMAGENET1K_V1": "regnet_x_8gf-03ceed89.pth",
                        "IMAGENET1K_V2": "regnet_x_8gf-2b70d774.pth"},
                       default="IMAGENET1K_V2"),
    "regnet_x_16gf": _w("RegNetX-16GF", "RegNet_X_16GF_Weights",
                        {"IMAGENET1K_V1": "regnet_x_16gf-2007eb11.pth",
                         "IMAGENET1K_V2": "regnet_x_16gf-ba3796d7.pth"},
                        default="IMAGENET1K_V2"),
    "regnet_x_32gf": _w("RegNetX-32GF", "RegNet_X_32GF_Weights",
                        {"IMAGENET1K_V1": "regnet_x_32gf-9d47f8d0.pth",
                         "IMAGENET1K_V2": "regnet_x_32gf-6eb8fdc6.pth"},
                        default="IMAGENET1K_V2"),
    "mnasnet0_5": _w("MNASNet 0.5", "MNASNet0_5_Weights",
                     {"IMAGENET1K_V1": "mnasnet0.5_top1_67.823-3ffadce67e.pth"}),
    "mnasnet0_75": _w("MNASNet 0.75", "MNASNet0_75_Weights",
                      {"IMAGENET1K_V1": "mnasnet0_75-7090bc5f.pth"}),
    "mnasnet1_0": _w("MNASNet 1.0", "MNASNet1_0_Weights",
                     {"IMAGENET1K_V1": "mnasnet1.0_top1_73.512-f206786ef8.pth"}),
    "mnasnet1_3": _w("MNASNet 1.3", "MNASNet1_3_Weights", {"IMAGENET1K_V1": "mnasnet1_3-a4c69d6f.pth"}),
    "googlenet": _w("GoogLeNet", "GoogLeNet_Weights", {"IMAGENET1K_V1": "googlenet-1378be20.pth"}),
    "inception_v3": _w("Inception v3", "Inception_V3_Weights",
                       {"IMAGENET1K_V1": "inception_v3_google-0cc3c7bd.pth"}),
    "efficientnet_v2_s": _w("EfficientNetV2-S", "EfficientNet_V2_S_Weights",
                            {"IMAGENET1K_V1": "efficientnet_v2_s-dd5fe13b.pth"}),
    "efficientnet_v2_m": _w("EfficientNetV2-M", "EfficientNet_V2_M_Weights",
                            {"IMAGENET1K_V1": "efficientnet_v2_m-dc08266a.pth"}),
    "efficientnet_v2_l": _w("EfficientNetV2-L", "EfficientNet_V2_L_Weights",
                            {"IMAGENET1K_V1": "efficientnet_v2_l-59c71312.pth"}),
    "swin_t": _w("Swin-T", "Swin_T_Weights", {"IMAGENET1K_V1": "swin_t-704ceda3.pth"}),
    "swin_s": _w("Swin-S", "Swin_S_Weights", {"IMAGENET1K_V1": "swin_s-5e29d889.pth"}),
    "swin_b": _w("Swin-B", "Swin_B_Weights", {"IMAGENET1K_V1": "swin_b-68c6b09e.pth"}),
}

PRETRAINED = WEIGHTS["resnet50"]["files"]  # ResNet-50's names -> file names (kept for callers)


def weight_names(arch):
    """torchvision's weights names for ``arch`` ("IMAGENET1K_V1", ...), sorted."""
    return sorted(WEIGHTS[arch]["files"]) if arch in WEIGHTS else []


def torch_home():
    """torch.hub's cache root: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch."""
    if os.environ.get("TORCH_HOME"):
        return os.path.expanduser(os.environ["TORCH_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "torch")


def checkpoints_dir():
    return os.path.join(torch_home(), "hub", "checkpoints")


def _canonical(name, arch):
    """"imagenet1k_v2", "DEFAULT", "ResNet50_Weights.IMAGENET1K_V2" -> "IMAGENET1K_V2" (or None)."""
    entry = WEIGHTS.get(arch)
    if entry is None or not isinstance(name, str):
        return None
    upper = name.upper()
    prefix = entry["enum"].upper() + "."
    if upper.startswith(prefix):
        upper = upper[len(prefix):]
    if upper == "DEFAULT":
        upper = entry["default"]
    return upper if upper in entry["files"] else None


def is_pretrained_name(weights, arch="resnet50"):
    """True for one of ``arch``'s torchvision weights names (any case), or "DEFAULT"."""
    return isinstance(weights, str) and _canonical(weights, arch) is not None


_NAME = re.compile(r"(?i:DEFAULT|IMAGENET1K_\w+)|\w+_(?i:weights)\.[A-Z][A-Z0-9_]*")


def _looks_like_name(weights):
    """A torchvision weights name of some architecture (not a file that exists)."""
    return (isinstance(weights, str) and not os.path.exists(weights)
            and _NAME.fullmatch(weights) is not None)


def find_pretrained(name, announce=True, arch="resnet50"):
    """A torchvision weights name of ``arch`` -> the path of its cached file; a clear error when
    absent. ``announce`` prints one line to stderr naming the file used."""
    if arch not in WEIGHTS:
        raise ValueError(f"no torchvision weights are known for {arch!r}; pass a file path "
                         f"(known: {', '.join(sorted(WEIGHTS))})")
    entry = WEIGHTS[arch]
    title = entry["title"]
    key = _canonical(name, arch)
    if key is None:
        raise ValueError(f"unknown {title} weights name {name!r}; choose one of "
                         f"{', '.join(weight_names(arch))} (or DEFAULT, or "
                         f"{entry['enum']}.<name>), or pass a file path")
    folder = checkpoints_dir()
    fname = entry["files"][key]
    path = os.path.join(folder, fname)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{title} weights {key}: {fname} is not in {folder} (searched $TORCH_HOME/hub/checkpoints; "
            f"TORCH_HOME defaults to ~/.cache/torch). minidl downloads nothing. On a machine with a "
            f"network, fetch it with\n"
            f"  python -c \"import torchvision; torchvision.models.{arch}(weights='{key}')\"\n"
            f"or\n"
            f"  curl -L -o {fname} {_URL}{fname}\n"
            f"then copy {fname} into {folder} (or set TORCH_HOME, or pass the file's path)")
    if announce:
        print(f"{title} weights {key}: using {path}", file=sys.stderr, flush=True)
    return path


def resolve_weights_path(weights, announce=True, arch="resnet50"):
    """A weights name of ``arch`` or a path -> a path that exists (FileNotFoundError naming it
    otherwise; ValueError for a weights name ``arch`` does not have)."""
    if is_pretrained_name(weights, arch):
        return find_pretrained(weights, announce=announce, arch=arch)
    if _looks_like_name(weights):
        return find_pretrained(weights, announce=announce, arch=arch)  # raises, naming the choices
    path = os.fspath(weights)
    if os.path.isdir(path):
        raise IsADirectoryError(f"weights {path} is a directory; pass the weights file in it "
                                f"(a torchvision .pth, a converted .npz or a .safetensors file)")
    if not os.path.isfile(path):
        names = ", ".join(weight_names(arch)) or "none known"
        raise FileNotFoundError(
            f"weights file {path} does not exist (pass a torchvision .pth, a converted .npz, a "
            f".safetensors file, or one of {arch}'s weights names ({names}) to use "
            f"torchvision's cached download)")
    return path
